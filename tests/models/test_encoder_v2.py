"""TransformerEncoder.v2: the Maxout window sub-layer, token dropout and no final LayerNorm."""

import numpy
import pytest
import spacy
import torch
from thinc.api import fix_random_seed

from spacy_vanilla_ner.models.encoder import build_transformer_encoder_v2
from spacy_vanilla_ner.models.torch_encoder import (
    EncoderConfig,
    MaxoutWindow,
    PackedLayout,
    TransformerEncoderModule,
)
from tests.helpers import ENCODER_WIDTH, encoder_inputs, encoder_module, fixture_examples, train


def make_module(**kwargs):
    fix_random_seed(0)
    settings = dict(width=16, depth=2, n_heads=2, dropout=0.0, attention_dropout=0.0)
    settings.update(kwargs)
    module = TransformerEncoderModule(EncoderConfig(**settings))
    with torch.no_grad():  # weights large enough that the Maxout window matters
        for p in module.parameters():
            if p.dim() > 1:
                torch.nn.init.normal_(p, std=0.3)
    return module


def reference_maxout_window(layer, X, mask):
    """MaxoutWindow written out token by token: zero the padding, concatenate
    each token's window (zeros beyond either end), Maxout, LayerNorm."""
    B, T, C = X.shape
    half = layer.window_size
    k = 2 * half + 1
    X = X * mask[..., None].to(X.dtype)
    rows = []
    for b in range(B):
        for t in range(T):
            window = [
                X[b, j] if 0 <= j < T else X.new_zeros(C) for j in range(t - half, t + half + 1)
            ]
            assert len(window) == k
            pieces = layer.maxout(torch.cat(window)).view(C, layer.pieces)
            rows.append(layer.norm(pieces.amax(dim=-1)))
    return torch.stack(rows).view(B, T, C)


def run_maxout_window(layer, X, mask):
    """The layer on the real tokens of a padded batch, returned padded (zeros at padding)."""
    layout = PackedLayout.from_mask(mask)
    return layout.pad(layer(layout.pack(X), layout))


@pytest.mark.parametrize("window_size,pieces", [(0, 1), (1, 3), (2, 2), (3, 3)])
@pytest.mark.parametrize("shape", [(3, 9, 16), (1, 1, 16), (2, 2, 8)])
def test_maxout_window_matches_token_by_token_reference_with_gradients(window_size, pieces, shape):
    """The windowed matmul over packed tokens is the layer it claims to be: same outputs and
    same gradients for the input and every parameter as the token-by-token reference over the
    padded batch (also for docs shorter than the window, and with padding)."""
    torch.manual_seed(window_size)
    B, T, C = shape
    layer = MaxoutWindow(
        EncoderConfig(width=C, depth=1, n_heads=2, window_size=window_size, maxout_pieces=pieces)
    ).double()
    X = torch.randn(B, T, C, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, T // 2 + 1 :] = False
    # Only real tokens have outputs; the reference's padding rows are not compared.
    dY = torch.randn(B, T, C, dtype=torch.float64) * mask[..., None]
    inputs = (X, *layer.parameters())
    got = run_maxout_window(layer, X, mask)
    expected = reference_maxout_window(layer, X, mask) * mask[..., None]
    torch.testing.assert_close(got, expected)
    for g, e in zip(
        torch.autograd.grad(got, inputs, dY), torch.autograd.grad(expected, inputs, dY)
    ):
        torch.testing.assert_close(g, e)


def test_maxout_window_gradcheck():
    torch.manual_seed(0)
    layer = MaxoutWindow(EncoderConfig(width=4, depth=1, n_heads=2, window_size=1)).double()
    X = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda x: run_maxout_window(layer, x, mask), (X,))


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("window_size", [1, 2])
def test_doc_output_does_not_depend_on_batch_mates(norm_first, window_size):
    module = make_module(window_size=window_size, norm_first=norm_first)
    X = torch.randn(3, 9, 16)
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2, 1:] = False
    Y = module(X, mask)
    for b, n in ((1, 4), (2, 1)):
        alone = module(X[b : b + 1, :n], mask[b : b + 1, :n])[0]
        torch.testing.assert_close(Y[b, :n], alone, atol=1e-5, rtol=1e-5)
    assert (Y[1, 4:] == 0).all()  # padding rows are zero


def test_maxout_window_reaches_neighbours_only():
    """The Maxout window alone (attention's output zeroed, no positions): changing
    token 0 changes tokens 0 and 1 (window_size 1), and nothing further away."""
    module = make_module(window_size=1, depth=1, positions="none")
    with torch.no_grad():
        module.layers[0].attention.output.weight.zero_()
        module.layers[0].attention.output.bias.zero_()
    X = torch.randn(1, 8, 16)
    mask = torch.ones(1, 8, dtype=torch.bool)
    Y = module(X, mask)
    X2 = X.clone()
    X2[0, 0] += torch.randn(16)  # not a constant shift, which LayerNorm removes
    changed = (module(X2, mask) - Y).abs().amax(dim=-1)[0]
    assert changed[:2].min() > 1e-4
    assert changed[2:].max() == 0


def test_token_dropout_only_while_training():
    module = make_module(window_size=1, token_dropout=0.5)
    X = torch.randn(2, 12, 16)
    mask = torch.ones(2, 12, dtype=torch.bool)
    torch.testing.assert_close(module(X, mask), module(X, mask))  # inference: deterministic
    torch.manual_seed(0)
    first = module(X, mask, train=True)
    torch.manual_seed(1)
    assert not torch.allclose(first, module(X, mask, train=True))
    # A token dropped at the input behaves as a zero vector.
    torch.manual_seed(0)
    keep = torch.rand(X.shape[:2]) >= 0.5
    torch.manual_seed(0)
    dropped = module(X, mask, train=True)
    torch.testing.assert_close(
        dropped.detach(), module(X * keep[..., None], mask), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("module_mode", ["train", "eval"])
def test_dropout_follows_the_train_argument_not_the_module_mode(module_mode):
    """thinc's PyTorchShim switches the module between train() and eval() around every
    call, which threads sharing a pipeline would see: only the `train` argument counts."""
    module = make_module(window_size=1, dropout=0.5, attention_dropout=0.5, token_dropout=0.5)
    getattr(module, module_mode)()
    X = torch.randn(2, 12, 16)
    mask = torch.ones(2, 12, dtype=torch.bool)
    torch.testing.assert_close(module(X, mask), module(X, mask, train=False))
    torch.testing.assert_close(module(X, mask), module(X, mask))
    assert not torch.allclose(module(X, mask, train=True), module(X, mask, train=True))


def test_v1_settings_build_v1_state_dict():
    """window_size = None adds no parameters: v1 models load as before."""
    v1 = make_module(window_size=None)
    v2 = make_module(window_size=1)
    assert set(v1.state_dict()) < set(v2.state_dict())
    extra = set(v2.state_dict()) - set(v1.state_dict())
    assert all(".maxout_window" in key for key in extra)


@pytest.mark.parametrize("window_size", [-1, 1.5, True, "1"])
def test_bad_window_size_is_explained(window_size):
    with pytest.raises(ValueError, match="window_size must be null"):
        EncoderConfig(width=16, depth=1, n_heads=2, window_size=window_size)


def test_bad_token_dropout_is_explained():
    with pytest.raises(ValueError, match="token_dropout must be in"):
        EncoderConfig(width=16, depth=1, n_heads=2, token_dropout=1.0)


def test_v2_builder_batches_like_single_docs():
    fix_random_seed(0)
    model = build_transformer_encoder_v2(ENCODER_WIDTH, 2, 4, dropout=0.0, attention_dropout=0.0)
    model.initialize()
    X = encoder_inputs([5, 1, 30, 0])
    together = model.predict(X)
    for x, y in zip(X, together):
        numpy.testing.assert_allclose(model.predict([x])[0], y, atol=1e-5)
    module = encoder_module(model).encoder
    assert module.layers[0].maxout_window is not None


def test_default_vanilla_ner_uses_v2_and_learns():
    """The component's default model is the recipe (encoder v2, CRF): it fits a
    handful of WikiGold sentences and survives a bytes round trip."""
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("vanilla_ner")
    encode = nlp.config["components"]["vanilla_ner"]["model"]["tok2vec"]["encode"]
    assert encode["@architectures"] == "spacy-vanilla-ner.TransformerEncoder.v2"
    assert nlp.config["components"]["vanilla_ner"]["crf"] is True
    examples = fixture_examples(nlp, limit=20)
    losses = train(nlp, examples, n_epochs=8, batch_size=10)
    assert losses[-1] < 0.5 * losses[0]
    texts = [eg.reference.text for eg in examples[:5]]
    before = [[(e.start, e.end, e.label_) for e in doc.ents] for doc in nlp.pipe(texts)]
    nlp2 = spacy.blank("en")
    nlp2.add_pipe("vanilla_ner")
    nlp2.from_bytes(nlp.to_bytes())
    after = [[(e.start, e.end, e.label_) for e in doc.ents] for doc in nlp2.pipe(texts)]
    assert before == after


def test_final_norm_option():
    """v2 leaves the pre-LN residual stream open (no final LayerNorm): its
    outputs are then not normalised per token; final_norm = true closes it as v1."""
    X = torch.randn(2, 6, 16)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 3:] = False
    closed = make_module(window_size=1, final_norm=True)
    open_ = make_module(window_size=1, final_norm=False)
    assert set(closed.state_dict()) - set(open_.state_dict()) == {
        "final_norm.weight",
        "final_norm.bias",
    }
    Y = closed(X, mask)
    torch.testing.assert_close(Y[0].mean(-1), torch.zeros(6), atol=1e-5, rtol=0)
    Y_open = open_(X, mask)
    assert Y_open[0].mean(-1).abs().max() > 1e-3
    assert (Y_open[1, 3:] == 0).all()


def test_bad_final_norm_is_explained():
    with pytest.raises(ValueError, match="final_norm must be true or false"):
        EncoderConfig(width=16, depth=1, n_heads=2, final_norm="no")


def test_bad_maxout_pieces_is_explained():
    with pytest.raises(ValueError, match="maxout_pieces must be a positive integer"):
        EncoderConfig(width=16, depth=1, n_heads=2, window_size=1, maxout_pieces=0)
