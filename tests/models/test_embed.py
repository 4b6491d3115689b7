"""`spacy-vanilla-ner.NormDropout.v1`: which features change in training, that inference and
the caller's docs are untouched, seeding, bad rates, and a pipeline that trains, saves and loads
with it in the `embed` slot."""

from typing import List, Optional

import numpy
import pytest
import spacy
from spacy.attrs import NORM, PREFIX, SHAPE, SUFFIX
from spacy.tokens import Doc
from spacy.util import fix_random_seed, registry
from thinc.api import Model

from spacy_vanilla_ner.models.embed import build_norm_dropout_v1
from tests.helpers import fixture_examples, tagger_model_with_encoder

FEATURES = [NORM, PREFIX, SUFFIX, SHAPE]
ROWS = (500, 100, 100, 100)
# spacy.MultiHashEmbed.v2, 16 wide.
EMBED = tagger_model_with_encoder(None, 16, rows=ROWS)["tok2vec"]["embed"]


@pytest.fixture(scope="module")
def docs():
    nlp = spacy.blank("en")
    return [nlp(t) for t in ("Ann Lee met the Anglo-Dutch firm Shell in Rotterdam .", "Hi", "")]


def spy() -> Model[List[Doc], List[Doc]]:
    """Passes the docs on and keeps the last ones it saw."""

    def forward(model, docs, is_train):
        model.attrs["seen"] = docs
        return docs, lambda d: []

    return Model("spy", forward, attrs={"seen": None})


def seen_by_embed(docs, rate, is_train):
    recorder = spy()
    model = build_norm_dropout_v1(recorder, rate)
    model(docs, is_train=is_train)
    return recorder.attrs["seen"]


def test_training_randomises_norm_only_and_leaves_the_docs_alone(docs):
    before = [d.to_array(FEATURES).copy() for d in docs]
    n_strings = len(docs[0].vocab.strings)
    fix_random_seed(0)
    seen = seen_by_embed(docs, 0.5, is_train=True)
    changed = 0
    for doc, copy, orig in zip(docs, seen, before):
        assert [t.text for t in copy] == [t.text for t in doc]
        feats = copy.to_array(FEATURES)
        assert (feats[:, 1:] == orig[:, 1:]).all()  # PREFIX, SUFFIX, SHAPE unchanged
        changed += int((feats[:, 0] != orig[:, 0]).sum())
        assert (doc.to_array(FEATURES) == orig).all()  # the caller's doc is not changed
    assert 0 < changed < sum(len(d) for d in docs)
    assert len(docs[0].vocab.strings) == n_strings


def test_rate_is_the_share_of_tokens_and_seeded(docs):
    fix_random_seed(1)
    shares = []
    for _ in range(200):
        copy = seen_by_embed(docs[:1], 0.2, is_train=True)[0]
        shares.append((copy.to_array([NORM]) != docs[0].to_array([NORM])).mean())
    assert 0.17 < numpy.mean(shares) < 0.23
    fix_random_seed(1)
    again = [seen_by_embed(docs[:1], 0.2, is_train=True)[0].to_array([NORM]) for _ in range(3)]
    fix_random_seed(1)
    first = [seen_by_embed(docs[:1], 0.2, is_train=True)[0].to_array([NORM]) for _ in range(3)]
    assert all((a == b).all() for a, b in zip(again, first))


@pytest.mark.parametrize("rate", [0.0, 0.5])
def test_inference_and_rate_zero_pass_the_docs_through(docs, rate):
    assert all(a is b for a, b in zip(seen_by_embed(docs, rate, is_train=False), docs))
    if rate == 0.0:
        assert all(a is b for a, b in zip(seen_by_embed(docs, rate, is_train=True), docs))


def test_prediction_equals_the_wrapped_embedding(docs):
    embed = registry.resolve({"e": EMBED})["e"]
    model = build_norm_dropout_v1(embed, 0.3)
    model.initialize(X=docs)
    for got, want in zip(model.predict(docs), embed.predict(docs)):
        numpy.testing.assert_array_equal(got, want)


def test_gradients_reach_the_embedding(docs):
    embed = registry.resolve({"e": EMBED})["e"]
    model = build_norm_dropout_v1(embed, 0.3)
    model.initialize(X=docs)
    out, backprop = model.begin_update(docs)
    backprop([model.ops.alloc2f(*o.shape) + 1 for o in out])
    grads = [node.get_grad(name) for node in embed.walk() for name in node.param_names]
    assert any(g is not None and float(abs(g).sum()) > 0 for g in grads)


@pytest.mark.parametrize("rate", [-0.1, 1.0, 2])
def test_bad_rates_are_named(rate):
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\)"):
        build_norm_dropout_v1(spy(), rate)


def trained_pipeline(rate: Optional[float], n_updates: int, drop: float = 0.1):
    """A small seeded `vanilla_ner` (hashed features, under NormDropout at `rate` unless
    None; encoder v2) after `n_updates` updates on 20 fixture sentences; and those examples."""
    fix_random_seed(0)
    encode = {"@architectures": "spacy-vanilla-ner.TransformerEncoder.v2", "width": 16}
    model = tagger_model_with_encoder({**encode, "depth": 1, "n_heads": 2}, 16, rows=ROWS)
    if rate is not None:
        embed = model["tok2vec"]["embed"]
        model["tok2vec"]["embed"] = {
            "@architectures": "spacy-vanilla-ner.NormDropout.v1",
            "rate": rate,
            "embed": embed,
        }
    nlp = spacy.blank("en")
    nlp.add_pipe("vanilla_ner", config={"model": model})
    examples = fixture_examples(nlp, limit=20)
    optimizer = nlp.initialize(lambda: examples)
    losses = {}
    for _ in range(n_updates):
        nlp.update(examples, sgd=optimizer, losses=losses, drop=drop)
    assert numpy.isfinite(losses["vanilla_ner"])
    return nlp, examples


def test_pipeline_trains_saves_and_loads_with_it(tmp_path):
    nlp, examples = trained_pipeline(0.2, n_updates=3, drop=0.5)
    # [training] dropout (spaCy's set_dropout_rate) does not reach the rate.
    rates = [
        n.attrs["norm_dropout_rate"]
        for n in nlp.get_pipe("vanilla_ner").model.walk()
        if n.name == "norm_dropout"
    ]
    assert rates == [0.2]
    texts = [eg.reference.text for eg in examples[:5]]
    nlp.to_disk(tmp_path / "model")
    loaded = spacy.load(tmp_path / "model")
    assert [d.to_json()["ents"] for d in nlp.pipe(texts)] == [
        d.to_json()["ents"] for d in loaded.pipe(texts)
    ]


def test_rate_zero_is_the_unwrapped_model_exactly():
    """Same seed, same updates: rate 0 trains and predicts as the plain embedding does (the
    wrapper has no weights and draws no random numbers)."""
    outputs = []
    for rate in (0.0, None):
        nlp, examples = trained_pipeline(rate, n_updates=2)
        docs = [nlp.make_doc(eg.reference.text) for eg in examples[:5]]
        outputs.append(nlp.get_pipe("vanilla_ner").model.predict(docs))
    for a, b in zip(*outputs):
        numpy.testing.assert_array_equal(a, b)
