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
from spacy_vanilla_ner.models.torch_encoder import (
    EncoderConfig,
    PackedLayout,
    RotaryPositions,
    TransformerEncoderModule,
)
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


def test_packed_layout_maps_and_neighbours_match_the_padded_grid():
    """`PackedLayout` for any mask (holes included): pack and pad invert each other, the
    positions are grid columns, and the neighbours are the cells beside each token in its
    row, padding and beyond either end read as row M (a zero vector)."""
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    layout = PackedLayout.from_mask(mask)
    B, T = mask.shape
    M = int(mask.sum())
    assert layout.shape == (B, T) and layout.n_tokens == M
    X = torch.randn(B, T, 3)
    packed = layout.pack(X)
    torch.testing.assert_close(packed, X[mask])
    torch.testing.assert_close(layout.pad(packed), X * mask[..., None])
    cells = [(b, t) for b in range(B) for t in range(T) if mask[b, t]]
    assert layout.positions.tolist() == [t for _, t in cells]
    row = {cell: i for i, cell in enumerate(cells)}
    for window_size in (0, 1, 2):
        expected = [
            [row.get((b, t + o), M) for o in range(-window_size, window_size + 1)] for b, t in cells
        ]
        assert layout.neighbours(window_size).tolist() == expected
    assert layout.attend[2].all() and not layout.attend[0, 0, 0, 3]  # empty row attends all


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rotary_rotates_each_pair_by_its_position(dtype):
    """The complex-number path (CPU float) is the rotation of RoFormer: pair (x[2i], x[2i+1])
    at position p turned by p * base^(-2i/D)."""
    torch.manual_seed(0)
    rotary = RotaryPositions(head_width=8, max_length=32)
    X = torch.randn(5, 3, 8, dtype=dtype)
    positions = torch.tensor([0, 1, 7, 30, 2])
    got = rotary(X, positions)
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, 8, 2, dtype=torch.float64) / 8))
    angle = positions.double()[:, None, None] * inv_freq  # (5, 1, 4)
    x1, x2 = X[..., 0::2].double(), X[..., 1::2].double()
    expected = torch.stack(
        (x1 * angle.cos() - x2 * angle.sin(), x1 * angle.sin() + x2 * angle.cos()), dim=-1
    ).flatten(-2)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)
    assert got.dtype == dtype
    # The real-arithmetic path (used for half precision on a GPU) computes the same.
    half = rotary(X.to(torch.bfloat16), positions)
    torch.testing.assert_close(half.double(), expected, atol=0.1, rtol=0.05)


def test_blocks_run_on_real_tokens_only():
    """Packed: the linear layers see one row per real token, however much padding the
    batch's grid has; only attention sees the grid."""
    module = TransformerEncoderModule(EncoderConfig(width=16, depth=2, n_heads=2))
    rows = []
    for layer in module.layers:
        for linear in (layer.attention.qkv, layer.ff_input, layer.maxout_window.maxout):
            linear.register_forward_hook(lambda mod, args, out: rows.append(args[0].shape[0]))
    mask = torch.zeros(4, 50, dtype=torch.bool)
    mask[0, :50] = True
    mask[1:, :3] = True
    module(torch.randn(4, 50, 16), mask)
    assert rows and set(rows) == {59}


def test_padded_and_packed_calls_agree():
    torch.manual_seed(0)
    module = TransformerEncoderModule(EncoderConfig(width=16, depth=2, n_heads=2))
    X = torch.randn(3, 7, 16)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2, 1:] = False
    layout = PackedLayout.from_mask(mask)
    padded = module(X, mask)
    packed = module(layout.pack(X), layout)
    torch.testing.assert_close(padded[mask], packed)
    assert (padded[~mask] == 0).all()
