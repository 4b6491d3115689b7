"""The plain torch modules: masking, initialisation, position tables, GELU."""

import dataclasses

import numpy
import pytest
import torch

from spacy_vanilla_ner.models.cpu_workarounds import GELU
from spacy_vanilla_ner.models.encoder import (
    build_transformer_encoder_v1,
    build_transformer_encoder_v2,
)
from spacy_vanilla_ner.models.torch_encoder import EncoderConfig, TransformerEncoderModule
from tests.helpers import ENCODER_WIDTH, encoder_inputs, encoder_module, make_encoder


@pytest.mark.parametrize("positions", ["rotary", "sinusoidal", "learned", "none"])
@pytest.mark.parametrize("norm_first", [True, False])
def test_fully_masked_window_is_finite(positions, norm_first):
    torch.manual_seed(0)
    config = EncoderConfig(
        width=16,
        depth=2,
        n_heads=2,
        ff_width=32,
        positions=positions,
        norm_first=norm_first,
        max_length=8,
        dropout=0.1,
        attention_dropout=0.1,
    )
    module = TransformerEncoderModule(config)
    X = torch.randn(3, 8, 16, requires_grad=True)
    mask = torch.ones(3, 8, dtype=torch.bool)
    mask[1] = False  # an all-padding window
    mask[2, 3:] = False
    for train_mode in (True, False):
        module.train(train_mode)
        Y = module(X, mask)
        assert torch.isfinite(Y).all()
        assert (Y[1] == 0).all() and (Y[2, 3:] == 0).all()
    Y.sum().backward()
    assert torch.isfinite(X.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)


def test_layers_initialised_independently():
    model = make_encoder(depth=3)
    layers = encoder_module(model).encoder.layers
    weights = [layer.attention.qkv.weight.detach().numpy() for layer in layers]
    for i in range(len(weights)):
        for j in range(i + 1, len(weights)):
            assert not numpy.allclose(weights[i], weights[j])


def test_position_tables_not_saved():
    module = TransformerEncoderModule(
        EncoderConfig(width=ENCODER_WIDTH, depth=1, n_heads=4, ff_width=64, positions="sinusoidal")
    )
    assert not any("table" in key for key in module.state_dict())
    rotary = TransformerEncoderModule(
        EncoderConfig(width=ENCODER_WIDTH, depth=1, n_heads=4, ff_width=64)
    )
    assert not any(key.endswith(("cos", "sin")) for key in rotary.state_dict())


def test_gelu_matches_torch_gelu():
    X = torch.randn(3, 7, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(GELU(), (X,))
    X = torch.randn(5, 9, 32, requires_grad=True)
    Y = GELU()(X)
    (dX,) = torch.autograd.grad((Y * Y).sum(), X)
    X2 = X.detach().requires_grad_()
    Y2 = torch.nn.functional.gelu(X2)
    (dX2,) = torch.autograd.grad((Y2 * Y2).sum(), X2)
    assert torch.allclose(Y, Y2, atol=1e-6) and torch.allclose(dX, dX2, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(GELU()(X), Y2, atol=1e-6)


def test_gelu_leaves_global_torch_settings_alone(monkeypatch):
    """No process-wide switch (such as torch.backends.mkldnn.enabled) is flipped: threads
    sharing a pipeline would see it."""
    flips = []
    switch = property(lambda self: torch._C._get_mkldnn_enabled(), lambda self, v: flips.append(v))
    monkeypatch.setattr(type(torch.backends.mkldnn), "enabled", switch)
    X = torch.randn(4, 8, requires_grad=True)
    GELU()(X).sum().backward()
    with torch.no_grad():
        GELU()(X)
    assert flips == []


def _onednn_primitives_run(fn, capfd) -> int:
    """How many oneDNN primitives `fn` executes (oneDNN's verbose log)."""
    import ctypes

    capfd.readouterr()
    with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        fn()
    ctypes.CDLL(None).fflush(None)  # oneDNN logs through C stdio
    return capfd.readouterr().out.count("primitive,exec")


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_encoder_runs_no_onednn_primitives_on_cpu(capfd, version):
    # oneDNN caches one primitive per shape, which fragments glibc's heap when
    # docs stream by in ever new batch shapes (cpu_workarounds.GELU, and the v2
    # Maxout window sub-layer: torch_encoder.expand_window).
    X = torch.randn(4, 11, ENCODER_WIDTH)
    if not _onednn_primitives_run(lambda: torch.nn.GELU()(X), capfd):
        pytest.skip("this torch build does not run GELU through oneDNN")
    if version == "v1":
        model = make_encoder()
    else:
        model = build_transformer_encoder_v2(ENCODER_WIDTH, 2, 4, dropout=0.0)
        model.initialize()
        assert encoder_module(model).encoder.layers[0].maxout_window is not None

    def forward_backward():
        Y, backprop = model.begin_update(encoder_inputs([7, 30, 2]))
        backprop(Y)
        model.predict(encoder_inputs([13, 5]))

    assert _onednn_primitives_run(forward_backward, capfd) == 0


@pytest.mark.parametrize(
    "build", [build_transformer_encoder_v1, build_transformer_encoder_v2], ids=["v1", "v2"]
)
def test_heap_does_not_grow_with_varying_batch_shapes(build):
    """Batches of new shapes, as a stream of docs brings, must not leave freed
    memory stuck in glibc's heap, as when GELU or a convolution ran through oneDNN's
    per-shape primitive cache (see cpu_workarounds)."""
    from vanilla_ner_experiments.memory import mallinfo

    mallinfo2 = mallinfo()
    if mallinfo2 is None:
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")
    model = build(width=32, depth=1, n_heads=2, ff_width=64, max_length=256)
    model.initialize()
    rng = numpy.random.default_rng(0)

    def stream(n_batches):
        for _ in range(n_batches):
            lengths = rng.integers(1, 257, size=rng.integers(1, 33))
            model.predict([rng.random((n, 32), dtype="float32") for n in lengths])

    stream(100)  # warm-up
    heap_before = mallinfo2().arena
    stream(300)
    growth_mib = (mallinfo2().arena - heap_before) / 2**20
    assert growth_mib < 16, f"malloc's heap grew by {growth_mib:.1f} MiB over 300 batches"


def test_encoder_config_fills_ff_width_and_is_frozen():
    config = EncoderConfig(width=ENCODER_WIDTH, depth=1, n_heads=4)
    assert config.ff_width == 4 * ENCODER_WIDTH
    assert EncoderConfig(width=16, depth=1, n_heads=2, ff_width=24).ff_width == 24
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.width = 64  # checked on construction only, so it cannot change after
    with pytest.raises(ValueError, match="ff_width"):
        EncoderConfig(width=16, depth=1, n_heads=2, ff_width=0)
