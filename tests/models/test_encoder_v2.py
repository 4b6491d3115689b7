"""TransformerEncoder.v2: the local Maxout sub-layer and word dropout."""

import numpy
import pytest
import spacy
import torch
from thinc.api import fix_random_seed

from spacy_vanilla_ner.models.encoder import build_transformer_encoder_v2
from spacy_vanilla_ner.models.torch_encoder import (
    EncoderConfig,
    LocalMaxout,
    TransformerEncoderModule,
)
from tests.helpers import ENCODER_WIDTH, encoder_inputs, encoder_module, fixture_examples, train


def make_module(**kwargs):
    fix_random_seed(0)
    settings = dict(width=16, depth=2, n_heads=2, dropout=0.0, attention_dropout=0.0)
    settings.update(kwargs)
    module = TransformerEncoderModule(EncoderConfig(**settings))
    with torch.no_grad():  # weights large enough that the convolution matters
        for p in module.parameters():
            if p.dim() > 1:
                torch.nn.init.normal_(p, std=0.3)
    return module.eval()


def reference_local_maxout(layer, X, mask):
    """LocalMaxout written out token by token: zero the padding, concatenate
    each token's window (zeros beyond either end), Maxout, LayerNorm."""
    B, T, C = X.shape
    k, half = layer.kernel, layer.kernel // 2
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


@pytest.mark.parametrize("kernel,pieces", [(1, 1), (3, 3), (5, 2), (7, 3)])
@pytest.mark.parametrize("shape", [(3, 9, 16), (1, 1, 16), (2, 2, 8)])
def test_local_maxout_matches_token_by_token_reference_with_gradients(kernel, pieces, shape):
    """The windowed matmul is the layer it claims to be: same outputs and same
    gradients for the input and every parameter as the token-by-token reference
    (also for docs shorter than the window, and with padding)."""
    torch.manual_seed(kernel)
    B, T, C = shape
    layer = LocalMaxout(
        EncoderConfig(width=C, depth=1, n_heads=2, conv_kernel=kernel, maxout_pieces=pieces)
    ).double()
    X = torch.randn(B, T, C, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, T // 2 + 1 :] = False
    dY = torch.randn(B, T, C, dtype=torch.float64)
    inputs = (X, *layer.parameters())
    got = layer(X, mask)
    expected = reference_local_maxout(layer, X, mask)
    torch.testing.assert_close(got, expected)
    for g, e in zip(
        torch.autograd.grad(got, inputs, dY), torch.autograd.grad(expected, inputs, dY)
    ):
        torch.testing.assert_close(g, e)


def test_local_maxout_gradcheck():
    torch.manual_seed(0)
    layer = LocalMaxout(EncoderConfig(width=4, depth=1, n_heads=2, conv_kernel=3)).double()
    X = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda x: layer(x, mask), (X,))


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("kernel", [3, 5])
def test_doc_output_does_not_depend_on_batch_mates(norm_first, kernel):
    module = make_module(conv_kernel=kernel, norm_first=norm_first)
    X = torch.randn(3, 9, 16)
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2, 1:] = False
    Y = module(X, mask)
    for b, n in ((1, 4), (2, 1)):
        alone = module(X[b : b + 1, :n], mask[b : b + 1, :n])[0]
        torch.testing.assert_close(Y[b, :n], alone, atol=1e-5, rtol=1e-5)
    assert (Y[1, 4:] == 0).all()  # padding rows are zero


def test_convolution_reaches_neighbours_only():
    """The convolution alone (attention's output zeroed, no positions): changing
    token 0 changes tokens 0 and 1 (kernel 3), and nothing further away."""
    module = make_module(conv_kernel=3, depth=1, positions="none")
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
    module = make_module(conv_kernel=3, token_dropout=0.5)
    X = torch.randn(2, 12, 16)
    mask = torch.ones(2, 12, dtype=torch.bool)
    torch.testing.assert_close(module(X, mask), module(X, mask))  # eval: deterministic
    module.train()
    torch.manual_seed(0)
    first = module(X, mask)
    torch.manual_seed(1)
    assert not torch.allclose(first, module(X, mask))
    # A token dropped at the input behaves as a zero vector.
    torch.manual_seed(0)
    keep = torch.rand(X.shape[:2]) >= 0.5
    torch.manual_seed(0)
    dropped = module(X, mask)
    module.eval()
    torch.testing.assert_close(
        dropped.detach(), module(X * keep[..., None], mask), atol=1e-5, rtol=1e-5
    )


def test_v1_settings_build_v1_state_dict():
    """conv_kernel = 0 adds no parameters: v1 models load as before."""
    v1 = make_module()
    v2 = make_module(conv_kernel=3)
    assert set(v1.state_dict()) < set(v2.state_dict())
    extra = set(v2.state_dict()) - set(v1.state_dict())
    assert all(".conv" in key for key in extra)


@pytest.mark.parametrize("kernel", [2, -1, 1.5])
def test_bad_conv_kernel_is_explained(kernel):
    with pytest.raises(ValueError, match="conv_kernel must be 0"):
        EncoderConfig(width=16, depth=1, n_heads=2, conv_kernel=kernel)


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
    assert module.layers[0].conv is not None


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
    closed = make_module(conv_kernel=3, final_norm=True)
    open_ = make_module(conv_kernel=3, final_norm=False)
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
        EncoderConfig(width=16, depth=1, n_heads=2, conv_kernel=3, maxout_pieces=0)
