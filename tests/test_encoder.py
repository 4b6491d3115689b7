"""The TransformerEncoder layer: shapes, masking, windows, init, serialization."""
import numpy
import pytest
import spacy
import torch
from thinc.api import fix_random_seed

from spacy_vanilla_ner.architectures import build_transformer_encoder_v1, build_transformer_tok2vec_v1
from spacy_vanilla_ner.layers import build_window_batch, plan_windows
from spacy_vanilla_ner.torch_modules import GELU, EncoderConfig, TransformerEncoderModule

WIDTH = 32


def make_encoder(**kwargs):
    """A small encoder with weights large enough that tokens clearly interact
    (at the GPT-2 style init, attention barely moves the residual stream)."""
    fix_random_seed(0)
    settings = dict(width=WIDTH, depth=2, n_heads=4, dropout=0.0, attention_dropout=0.0)
    settings.update(kwargs)
    model = build_transformer_encoder_v1(**settings)
    model.initialize()
    with torch.no_grad():
        for module in torch_module(model).modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.normal_(module.weight, std=0.3)
    return model


def torch_module(model):
    return model.layers[0].shims[0]._model.encoder


def inputs(lengths, seed=0):
    rng = numpy.random.default_rng(seed)
    return [rng.normal(size=(n, WIDTH)).astype("float32") for n in lengths]


def test_shapes_and_gradients():
    model = make_encoder()
    X = inputs([3, 7, 1])
    Y, backprop = model.begin_update(X)
    assert [y.shape for y in Y] == [(3, WIDTH), (7, WIDTH), (1, WIDTH)]
    # Random dY: the final LayerNorm makes the gradient of sum(Y) zero.
    dX = backprop(inputs([3, 7, 1], seed=1))
    assert [dx.shape for dx in dX] == [x.shape for x in X]
    assert all(numpy.isfinite(dx).all() and numpy.abs(dx).sum() > 0 for dx in dX)


@pytest.mark.parametrize("positions", ["rotary", "sinusoidal", "learned", "none"])
@pytest.mark.parametrize("norm_first", [True, False])
def test_padding_does_not_leak(positions, norm_first):
    """A doc's output is the same alone or batched with a 300-token doc."""
    model = make_encoder(positions=positions, norm_first=norm_first)
    short, long = inputs([5, 300])
    alone = model.predict([short])[0]
    batched = model.predict([long, short])[1]
    assert numpy.abs(alone - batched).max() < 1e-3


def test_attention_stays_within_each_doc():
    """Changing one doc never changes another doc's output (no attention across
    the batch, as when batch-first data meets a time-major model)."""
    model = make_encoder()
    a, b = inputs([6, 6])
    before = model.predict([a, b])[0]
    after = model.predict([a, b * 10 + 3])[0]
    assert numpy.abs(before - after).max() < 1e-5
    # ...and the doc's own tokens do interact.
    changed = a.copy()
    changed[0] += inputs([1], seed=2)[0][0] * 3  # (a constant shift would vanish in LayerNorm)
    assert numpy.abs(model.predict([changed, b])[0][1:] - before[1:]).max() > 1e-3


@pytest.mark.parametrize("lengths", [[0], [0, 0], [0, 4, 0], [3, 0]])
def test_empty_docs(lengths):
    model = make_encoder()
    X = inputs(lengths)
    Y, backprop = model.begin_update(X)
    assert [y.shape for y in Y] == [(n, WIDTH) for n in lengths]
    assert all(numpy.isfinite(y).all() for y in Y)
    dX = backprop([numpy.ones_like(y) for y in Y])
    assert [dx.shape for dx in dX] == [(n, WIDTH) for n in lengths]
    assert all(numpy.isfinite(dx).all() for dx in dX)


def test_fully_masked_window_is_finite():
    module = TransformerEncoderModule(EncoderConfig(width=WIDTH, depth=2, n_heads=4, ff_width=64))
    X = torch.randn(2, 5, WIDTH, requires_grad=True)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[1, :3] = True
    Y = module(X, mask)
    Y.sum().backward()
    assert torch.isfinite(Y).all() and torch.isfinite(X.grad).all()
    assert (Y[0] == 0).all()


def test_positions_carry_order():
    """With positions, reversing a doc changes each token's output; without
    any position scheme the encoder is order-blind (permutation equivariant)."""
    (x,) = inputs([8])
    for positions in ("rotary", "sinusoidal", "learned"):
        model = make_encoder(positions=positions)
        if positions == "learned":  # learned tables start near zero: make them matter
            module = torch_module(model)
            torch.nn.init.normal_(module.positions.embeddings.weight, std=1.0)
        y, y_rev = model.predict([x, x[::-1].copy()])
        assert numpy.abs(y - y_rev[::-1]).max() > 1e-3, positions
    model = make_encoder(positions="none")
    y, y_rev = model.predict([x, x[::-1].copy()])
    assert numpy.abs(y - y_rev[::-1]).max() < 1e-4


def test_layers_initialised_independently():
    model = make_encoder(depth=3)
    layers = torch_module(model).layers
    weights = [layer.attention.qkv.weight.detach().numpy() for layer in layers]
    for i in range(len(weights)):
        for j in range(i + 1, len(weights)):
            assert not numpy.allclose(weights[i], weights[j])


def test_plan_windows_tiles_doc():
    for length in [0, 1, 16, 17, 40, 100, 513]:
        windows = plan_windows(length, max_length=16, overlap=4)
        owned = [i for _, _, s, e in windows for i in range(s, e)]
        assert owned == list(range(length))
        for start, end, own_start, own_end in windows:
            assert 0 <= start <= own_start <= own_end <= end <= length
            assert end - start <= 16


def test_window_batches_are_bounded():
    batch = build_window_batch([5000, 20, 0, 700], 512, 128, 4096, torch.device("cpu"))
    for gather, mask in batch.chunks:
        assert gather.shape[1] <= 512
        assert gather.numel() <= 4096
    assert batch.output_index.shape == (5720,)
    assert len(set(batch.output_index.tolist())) == 5720


@pytest.mark.parametrize("n_tokens", [5000, 50000])
def test_long_docs(n_tokens):
    model = make_encoder(max_length=128, window_overlap=32, max_batch_tokens=2048)
    X = inputs([n_tokens, 3])
    Y = model.predict(X)
    assert Y[0].shape == (n_tokens, WIDTH) and numpy.isfinite(Y[0]).all()
    # Tokens in the middle of a window see the same context as a single window run.
    head = model.predict([X[0][:128]])[0]
    assert numpy.abs(Y[0][:40] - head[:40]).max() < 1e-4


def test_bytes_round_trip():
    model = make_encoder()
    X = inputs([4, 9])
    expected = model.predict(X)
    fix_random_seed(1)
    other = build_transformer_encoder_v1(WIDTH, 2, 4, dropout=0.0, attention_dropout=0.0)
    other.from_bytes(model.to_bytes())
    for a, b in zip(expected, other.predict(X)):
        numpy.testing.assert_allclose(a, b, atol=1e-6)


def test_position_tables_not_saved():
    module = TransformerEncoderModule(
        EncoderConfig(width=WIDTH, depth=1, n_heads=4, ff_width=64, positions="sinusoidal")
    )
    assert not any("table" in key for key in module.state_dict())
    rotary = TransformerEncoderModule(EncoderConfig(width=WIDTH, depth=1, n_heads=4, ff_width=64))
    assert not any(key.endswith(("cos", "sin")) for key in rotary.state_dict())


@pytest.mark.parametrize(
    "settings,message",
    [
        (dict(width=30, n_heads=4), "divisible"),
        (dict(positions="alibi"), "positions"),
        (dict(activation="tanh"), "activation"),
        (dict(width=36, n_heads=12), "even head width"),
        (dict(window_overlap=400), "window_overlap"),
        (dict(dropout=1.0), "dropout"),
    ],
)
def test_bad_settings_raise(settings, message):
    base = dict(width=WIDTH, depth=1, n_heads=4)
    base.update(settings)
    with pytest.raises(ValueError, match=message):
        build_transformer_encoder_v1(**base)


def test_wrong_input_width_is_explained():
    model = make_encoder()
    with pytest.raises(ValueError, match="embedding width"):
        model.predict([numpy.zeros((3, WIDTH + 1), dtype="float32")])


def test_tok2vec_block():
    nlp = spacy.blank("en")
    model = build_transformer_tok2vec_v1(WIDTH, 1, 4)
    docs = [nlp("Hello world ."), nlp(""), nlp("Another one")]
    model.initialize(X=docs)
    Y = model.predict(docs)
    assert [y.shape for y in Y] == [(3, WIDTH), (0, WIDTH), (2, WIDTH)]


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
    assert torch.backends.mkldnn.enabled  # the global setting is restored


def _onednn_primitives_run(fn, capfd) -> int:
    """How many oneDNN primitives `fn` executes (oneDNN's verbose log)."""
    import ctypes

    capfd.readouterr()
    with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        fn()
    ctypes.CDLL(None).fflush(None)  # oneDNN logs through C stdio
    return capfd.readouterr().out.count("primitive,exec")


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")
def test_encoder_runs_no_onednn_primitives_on_cpu(capfd):
    # oneDNN caches one primitive per shape, which fragments glibc's heap when
    # docs stream by in ever new batch shapes (torch_modules.GELU).
    X = torch.randn(4, 11, WIDTH)
    if not _onednn_primitives_run(lambda: torch.nn.GELU()(X), capfd):
        pytest.skip("this torch build does not run GELU through oneDNN")
    model = make_encoder()

    def forward_backward():
        Y, backprop = model.begin_update(inputs([7, 30, 2]))
        backprop(Y)
        model.predict(inputs([13, 5]))

    assert _onednn_primitives_run(forward_backward, capfd) == 0


@pytest.mark.gpu
def test_gpu_long_doc_and_round_trip_to_cpu():
    from thinc.api import NumpyOps, use_ops

    X = inputs([50000, 3])
    with use_ops("cupy"):
        model = make_encoder(max_length=512)
        import cupy

        Y_gpu = model.predict([cupy.asarray(x) for x in X])
        data = model.to_bytes()
    with use_ops("numpy"):
        cpu_model = build_transformer_encoder_v1(WIDTH, 2, 4, dropout=0.0, attention_dropout=0.0)
        cpu_model.from_bytes(data)
        assert isinstance(cpu_model.ops, NumpyOps)
        Y_cpu = cpu_model.predict(X)
    numpy.testing.assert_allclose(cupy.asnumpy(Y_gpu[0]), Y_cpu[0], atol=1e-3)
