"""The TransformerEncoder.v1 / TransformerTok2Vec.v1 thinc layers: shapes,
masking, positions, long docs, settings, serialization."""

import dataclasses
import inspect

import numpy
import pytest
import spacy
import torch
from thinc.api import fix_random_seed

from spacy_vanilla_ner.models.encoder import (
    ENCODER,
    ENCODER_V1,
    build_transformer_encoder_v1,
    build_transformer_encoder_v2,
    build_transformer_tok2vec_v1,
)
from spacy_vanilla_ner.models.torch_encoder import EncoderConfig
from spacy_vanilla_ner.models.windowing import WindowConfig
from tests.helpers import ENCODER_WIDTH, encoder_inputs, encoder_module, make_encoder


def test_shapes_and_gradients():
    model = make_encoder()
    X = encoder_inputs([3, 7, 1])
    Y, backprop = model.begin_update(X)
    assert [y.shape for y in Y] == [(n, ENCODER_WIDTH) for n in (3, 7, 1)]
    # Random dY: the final LayerNorm makes the gradient of sum(Y) zero.
    dX = backprop(encoder_inputs([3, 7, 1], seed=1))
    assert [dx.shape for dx in dX] == [x.shape for x in X]
    assert all(numpy.isfinite(dx).all() and numpy.abs(dx).sum() > 0 for dx in dX)


@pytest.mark.parametrize("positions", ["rotary", "sinusoidal", "learned", "none"])
@pytest.mark.parametrize("norm_first", [True, False])
def test_padding_does_not_leak(positions, norm_first):
    """A doc's output is the same alone or batched with a 300-token doc."""
    model = make_encoder(positions=positions, norm_first=norm_first)
    short, long = encoder_inputs([5, 300])
    alone = model.predict([short])[0]
    batched = model.predict([long, short])[1]
    assert numpy.abs(alone - batched).max() < 1e-3


def test_attention_stays_within_each_doc():
    """Changing one doc never changes another doc's output (no attention across
    the batch, as when batch-first data meets a time-major model)."""
    model = make_encoder()
    a, b = encoder_inputs([6, 6])
    before = model.predict([a, b])[0]
    after = model.predict([a, b * 10 + 3])[0]
    assert numpy.abs(before - after).max() < 1e-5
    # ...and the doc's own tokens do interact.
    changed = a.copy()
    changed[0] += (
        encoder_inputs([1], seed=2)[0][0] * 3
    )  # (a constant shift would vanish in LayerNorm)
    assert numpy.abs(model.predict([changed, b])[0][1:] - before[1:]).max() > 1e-3


@pytest.mark.parametrize("lengths", [[0], [0, 0], [0, 4, 0], [3, 0]])
def test_empty_docs(lengths):
    model = make_encoder()
    X = encoder_inputs(lengths)
    Y, backprop = model.begin_update(X)
    assert [y.shape for y in Y] == [(n, ENCODER_WIDTH) for n in lengths]
    assert all(numpy.isfinite(y).all() for y in Y)
    dX = backprop([numpy.ones_like(y) for y in Y])
    assert [dx.shape for dx in dX] == [(n, ENCODER_WIDTH) for n in lengths]
    assert all(numpy.isfinite(dx).all() for dx in dX)


def test_positions_carry_order():
    """With positions, reversing a doc changes each token's output; without
    any position scheme the encoder is order-blind (permutation equivariant)."""
    (x,) = encoder_inputs([8])
    for positions in ("rotary", "sinusoidal", "learned"):
        model = make_encoder(positions=positions)
        if positions == "learned":  # learned tables start near zero: make them matter
            module = encoder_module(model).encoder
            torch.nn.init.normal_(module.positions.embeddings.weight, std=1.0)
        y, y_rev = model.predict([x, x[::-1].copy()])
        assert numpy.abs(y - y_rev[::-1]).max() > 1e-3, positions
    model = make_encoder(positions="none")
    y, y_rev = model.predict([x, x[::-1].copy()])
    assert numpy.abs(y - y_rev[::-1]).max() < 1e-4


@pytest.mark.parametrize("n_tokens", [5000, 50000])
def test_long_docs(n_tokens):
    model = make_encoder(max_length=128, window_overlap=32, max_batch_tokens=2048)
    X = encoder_inputs([n_tokens, 3])
    Y = model.predict(X)
    assert Y[0].shape == (n_tokens, ENCODER_WIDTH) and numpy.isfinite(Y[0]).all()
    # Tokens in the middle of a window see the same context as a single window run.
    head = model.predict([X[0][:128]])[0]
    assert numpy.abs(Y[0][:40] - head[:40]).max() < 1e-4


def test_bytes_round_trip():
    model = make_encoder()
    X = encoder_inputs([4, 9])
    expected = model.predict(X)
    fix_random_seed(1)
    other = build_transformer_encoder_v1(ENCODER_WIDTH, 2, 4, dropout=0.0, attention_dropout=0.0)
    other.from_bytes(model.to_bytes())
    for a, b in zip(expected, other.predict(X)):
        numpy.testing.assert_allclose(a, b, atol=1e-6)


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
    base = dict(width=ENCODER_WIDTH, depth=1, n_heads=4)
    base.update(settings)
    with pytest.raises(ValueError, match=message):
        build_transformer_encoder_v1(**base)


def test_wrong_input_width_is_explained():
    model = make_encoder()
    with pytest.raises(ValueError, match="embedding width"):
        model.predict([numpy.zeros((3, ENCODER_WIDTH + 1), dtype="float32")])


def test_tok2vec_block():
    nlp = spacy.blank("en")
    model = build_transformer_tok2vec_v1(ENCODER_WIDTH, 1, 4)
    docs = [nlp("Hello world ."), nlp(""), nlp("Another one")]
    model.initialize(X=docs)
    Y = model.predict(docs)
    assert [y.shape for y in Y] == [(3, ENCODER_WIDTH), (0, ENCODER_WIDTH), (2, ENCODER_WIDTH)]


@pytest.mark.gpu
def test_gpu_long_doc_and_round_trip_to_cpu():
    from thinc.api import NumpyOps, use_ops

    X = encoder_inputs([50000, 3])
    with use_ops("cupy"):
        model = make_encoder(max_length=512)
        import cupy

        Y_gpu = model.predict([cupy.asarray(x) for x in X])
        data = model.to_bytes()
    with use_ops("numpy"):
        cpu_model = build_transformer_encoder_v1(
            ENCODER_WIDTH, 2, 4, dropout=0.0, attention_dropout=0.0
        )
        cpu_model.from_bytes(data)
        assert isinstance(cpu_model.ops, NumpyOps)
        Y_cpu = cpu_model.predict(X)
    numpy.testing.assert_allclose(cupy.asnumpy(Y_gpu[0]), Y_cpu[0], atol=1e-3)


# Settings that TransformerEncoder.v2 added; v1 fixes them (ENCODER_V1) or has no use for them.
V2_ONLY = ("window_size", "maxout_pieces", "token_dropout", "final_norm")


@pytest.mark.parametrize("builder", [build_transformer_encoder_v1, build_transformer_tok2vec_v1])
def test_builder_defaults_come_from_the_configs(builder):
    """Each default is stated once, on EncoderConfig / WindowConfig."""
    parameters = inspect.signature(builder).parameters
    for config_class in (EncoderConfig, WindowConfig):
        for field in dataclasses.fields(config_class):
            if field.default is not dataclasses.MISSING and field.name not in V2_ONLY:
                assert parameters[field.name].default == field.default, field.name
    assert not set(V2_ONLY) & set(parameters)


def test_v2_defaults_are_encoder_config_and_v1_states_its_differences():
    parameters = inspect.signature(build_transformer_encoder_v2).parameters
    for config_class in (EncoderConfig, WindowConfig):
        for field in dataclasses.fields(config_class):
            if field.default is not dataclasses.MISSING:
                assert parameters[field.name].default == field.default, field.name
    # v1 = v2 without the Maxout window sub-layer and token dropout, with a final
    # LayerNorm; maxout_pieces has no use without the sub-layer.
    assert ENCODER_V1 == {"window_size": None, "token_dropout": 0.0, "final_norm": True}
    assert set(ENCODER_V1) == set(V2_ONLY) - {"maxout_pieces"}
    assert ENCODER["window_size"] == 1 and ENCODER["final_norm"] is False


def test_encoder_config_checked_once(monkeypatch):
    calls = []
    check = EncoderConfig._check
    monkeypatch.setattr(EncoderConfig, "_check", lambda self: calls.append(1) or check(self))
    build_transformer_encoder_v1(ENCODER_WIDTH, 1, 4)
    assert len(calls) == 1


def test_v1_builders_keep_v1_modules():
    """v1 and TransformerTok2Vec.v1 build v1's module (final LayerNorm, no Maxout
    window sub-layer), whatever v2's defaults are: saved v1 pipelines must load."""
    for model in (make_encoder(), build_transformer_tok2vec_v1(ENCODER_WIDTH, 1, 4)):
        module = encoder_module(model).encoder
        assert isinstance(module.final_norm, torch.nn.LayerNorm)
        assert all(layer.maxout_window is None for layer in module.layers)
