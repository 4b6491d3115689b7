"""`spacy-vanilla-ner.NormDropout.v1`, `.v2` and `.v3`: which features change in training, that
inference and the caller's docs are untouched, seeding, bad rates and settings, where v2 puts
itself, v3's singletons (counted by the CountSingletons.v1 callback, saved with the model), and
a pipeline that trains, saves and loads with each in the `embed` slot."""

from typing import List, Optional

import numpy
import pytest
import spacy
from spacy.attrs import NORM, PREFIX, SHAPE, SUFFIX
from spacy.ml.featureextractor import FeatureExtractor
from spacy.tokens import Doc
from spacy.util import fix_random_seed, registry
from thinc.api import Adam, Model

from spacy_vanilla_ner.models.embed import (
    build_norm_dropout_v1,
    build_norm_dropout_v2,
    build_norm_dropout_v3,
    count_singletons,
    feature_dropout,
)
from tests.helpers import REPO, fixture_examples, tagger_model_with_encoder

FEATURES = [NORM, PREFIX, SUFFIX, SHAPE]
ROWS = (500, 100, 100, 100)
# spacy.MultiHashEmbed.v2, 16 wide.
EMBED = tagger_model_with_encoder(None, 16, rows=ROWS)["tok2vec"]["embed"]
# v3 without a singleton_rate is v2: every test of both runs on it too.
BUILDERS = {"v1": build_norm_dropout_v1, "v2": build_norm_dropout_v2, "v3": build_norm_dropout_v3}


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


@pytest.mark.parametrize("version", BUILDERS)
def test_prediction_equals_the_wrapped_embedding(docs, version):
    embed = registry.resolve({"e": EMBED})["e"]
    embed.initialize(X=docs)
    want = embed.predict(docs)
    model = BUILDERS[version](embed, 0.3)  # v2 changes `embed` itself: predict first
    for got, expected in zip(model.predict(docs), want):
        numpy.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("version", BUILDERS)
def test_gradients_reach_the_embedding(docs, version):
    embed = registry.resolve({"e": EMBED})["e"]
    model = BUILDERS[version](embed, 0.3)
    model.initialize(X=docs)
    out, backprop = model.begin_update(docs)
    backprop([model.ops.alloc2f(*o.shape) + 1 for o in out])
    grads = [node.get_grad(name) for node in embed.walk() for name in node.param_names]
    assert any(g is not None and float(abs(g).sum()) > 0 for g in grads)


@pytest.mark.parametrize("version", BUILDERS)
@pytest.mark.parametrize("rate", [-0.1, 1.0, 2])
def test_bad_rates_are_named(rate, version):
    embed = registry.resolve({"e": EMBED})["e"]
    with pytest.raises(ValueError, match=rf"NormDropout.{version}: rate must be in \[0, 1\)"):
        BUILDERS[version](embed, rate)


def trained_pipeline(
    rate: Optional[float],
    n_updates: int,
    drop: float = 0.1,
    version: str = "v1",
    **settings,
):
    """A small seeded `vanilla_ner` (hashed features, under NormDropout `version` at `rate`
    unless None, with `settings`; encoder v2) after `n_updates` updates on 20 fixture
    sentences; and those examples."""
    fix_random_seed(0)
    encode = {"@architectures": "spacy-vanilla-ner.TransformerEncoder.v2", "width": 16}
    model = tagger_model_with_encoder({**encode, "depth": 1, "n_heads": 2}, 16, rows=ROWS)
    if rate is not None:
        embed = model["tok2vec"]["embed"]
        model["tok2vec"]["embed"] = {
            "@architectures": f"spacy-vanilla-ner.NormDropout.{version}",
            "rate": rate,
            "embed": embed,
            **settings,
        }
    nlp = spacy.blank("en")
    nlp.add_pipe("vanilla_ner", config={"model": model})
    examples = fixture_examples(nlp, limit=20)
    optimizer = nlp.initialize(lambda: examples)
    losses = {}
    for _ in range(n_updates):
        nlp.update(examples, sgd=optimizer, losses=losses, drop=drop)
    assert n_updates == 0 or numpy.isfinite(losses["vanilla_ner"])
    return nlp, examples


@pytest.mark.parametrize("version", BUILDERS)
def test_pipeline_trains_saves_and_loads_with_it(tmp_path, version):
    nlp, examples = trained_pipeline(0.2, n_updates=3, drop=0.5, version=version)
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


@pytest.mark.parametrize("version", BUILDERS)
def test_rate_zero_is_the_unwrapped_model_exactly(version):
    """Same seed, same updates: rate 0 trains and predicts as the plain embedding does (the
    wrapper has no weights and draws no random numbers)."""
    outputs = []
    for rate in (0.0, None):
        nlp, examples = trained_pipeline(rate, n_updates=2, version=version)
        docs = [nlp.make_doc(eg.reference.text) for eg in examples[:5]]
        outputs.append(nlp.get_pipe("vanilla_ner").model.predict(docs))
    for a, b in zip(*outputs):
        numpy.testing.assert_array_equal(a, b)


# --- v2: on the extracted feature ids ---------------------------------------------------------


def extracted(docs):
    return FeatureExtractor(FEATURES)(docs, is_train=False)[0]


@pytest.mark.parametrize("columns", [[0], [1, 3], [0, 1, 2, 3]])
def test_v2_changes_only_the_named_columns_and_not_its_input(docs, columns):
    features = extracted(docs)
    before = [f.copy() for f in features]
    fix_random_seed(0)
    out, backprop = feature_dropout(0.5, columns)(features, is_train=True)
    assert backprop(out) == []
    assert [len(o) for o in out] == [len(d) for d in docs]
    others = [c for c in range(len(FEATURES)) if c not in columns]
    changed = numpy.concatenate([o != b for o, b in zip(out, before)])
    assert not changed[:, others].any()
    assert changed[:, columns].any() and not changed[:, columns].all()
    assert all((f == b).all() for f, b in zip(features, before))  # not changed in place


def test_v2_rate_is_the_share_per_column_and_seeded(docs):
    features = extracted(docs[:1])
    model = feature_dropout(0.2, [0, 2])
    fix_random_seed(1)
    shares = [
        (model(features, is_train=True)[0][0] != features[0])[:, [0, 2]].mean(axis=0)
        for _ in range(300)
    ]
    assert numpy.allclose(numpy.mean(shares, axis=0), 0.2, atol=0.03)
    runs = []
    for _ in range(2):
        fix_random_seed(3)
        runs.append([model(features, is_train=True)[0][0] for _ in range(3)])
    assert all((a == b).all() for a, b in zip(*runs))


@pytest.mark.parametrize("rate", [0.0, 0.5])
def test_v2_inference_and_rate_zero_pass_the_features_through(docs, rate):
    features = extracted(docs)
    assert feature_dropout(rate, [0])(features, is_train=False)[0] is features
    if rate == 0.0:
        assert feature_dropout(rate, [0])(features, is_train=True)[0] is features


def test_v2_handles_empty_batches_and_docs(docs):
    model = feature_dropout(0.5, [0])
    assert model([], is_train=True)[0] == []
    empty = extracted(docs[2:])  # one empty doc
    assert [len(f) for f in model(empty, is_train=True)[0]] == [0]


@pytest.mark.parametrize(
    "attrs,columns", [(["NORM"], [0]), (["SHAPE", "PREFIX"], [1, 3]), (FEATURES, [0, 1, 2, 3])]
)
def test_v2_follows_the_feature_extractor(attrs, columns):
    model = build_norm_dropout_v2(registry.resolve({"e": EMBED})["e"], 0.1, attrs)
    layers = [n for n in model.walk() if n.name == "norm_dropout"]
    assert [n.attrs["norm_dropout_columns"] for n in layers] == [columns]
    chains = [n for n in model.walk() if n.layers[-1:] == layers]
    assert [c.layers[0].name for c in chains] == ["extract_features"]


def test_v2_wraps_character_embed():
    embed = {
        "@architectures": "spacy.CharacterEmbed.v2",
        "feature": "NORM",
        "width": 16,
        "rows": 100,
        "nM": 8,
        "nC": 4,
        "include_static_vectors": False,
    }
    model = build_norm_dropout_v2(registry.resolve({"e": embed})["e"], 0.1)
    assert [n.attrs["norm_dropout_columns"] for n in model.walk() if n.name == "norm_dropout"] == [
        [0]
    ]


def test_v2_names_an_embed_layer_it_cannot_wrap():
    with pytest.raises(ValueError, match="no spaCy FeatureExtractor that reads.*NormDropout.v1"):
        build_norm_dropout_v2(spy(), 0.1)
    embed = registry.resolve({"e": EMBED})["e"]
    with pytest.raises(ValueError, match="no spaCy FeatureExtractor that reads.*LEMMA"):
        build_norm_dropout_v2(embed, 0.1, ["LEMMA"])
    with pytest.raises(ValueError, match="attrs must name token attributes"):
        build_norm_dropout_v2(embed, 0.1, ["NORMS"])


# --- v3: singletons ---------------------------------------------------------------------------


def norm_layers(nlp):
    return [n for n in nlp.get_pipe("vanilla_ner").model.walk() if n.name == "norm_dropout"]


def test_v3_gives_singletons_their_own_rate(docs):
    features = extracted(docs[:1])
    norms = features[0][:, 0]
    model = feature_dropout(0.0, [0, 3], [NORM, SHAPE], singleton_rate=0.5)
    chosen = norms[[0, 2, 5]]  # "Ann", "met", "Anglo"
    model.attrs["norm_dropout_singletons"] = [numpy.sort(chosen), numpy.zeros((0,), "uint64")]
    fix_random_seed(0)
    changed = numpy.mean(
        [(model(features, is_train=True)[0][0] != features[0]) for _ in range(400)], axis=0
    )
    is_singleton = numpy.isin(norms, chosen)
    assert numpy.allclose(changed[is_singleton, 0], 0.5, atol=0.1)
    assert not changed[~is_singleton, 0].any()  # rate 0 for the others
    assert not changed[:, [1, 2, 3]].any()  # SHAPE has no singletons; 1 and 2 not named
    # With a rate for the others, they are drawn at that rate.
    model.attrs["norm_dropout_rate"] = 0.1
    changed = numpy.mean(
        [(model(features, is_train=True)[0][0] != features[0]) for _ in range(400)], axis=0
    )
    assert numpy.allclose(changed[~is_singleton, 0].mean(), 0.1, atol=0.04)
    assert numpy.allclose(changed[:, 3].mean(), 0.1, atol=0.04)


def test_v3_without_counts_warns_and_uses_the_rate(docs):
    features = extracted(docs[:1])
    model = feature_dropout(0.5, [0], [NORM], singleton_rate=0.9)
    fix_random_seed(0)
    with pytest.warns(UserWarning, match="no singleton counts.*CountSingletons.v1"):
        out = model(features, is_train=True)[0][0]
    fix_random_seed(0)
    want = feature_dropout(0.5, [0])(features, is_train=True)[0][0]
    numpy.testing.assert_array_equal(out, want)


def test_v3_counts_survive_loading_weights_saved_before_counting(docs):
    """init_tok2vec loads `spacy pretrain` weights (saved before any count) with from_bytes
    after [initialize.before_init] has counted: the counts must stay."""
    uncounted = feature_dropout(0.1, [0], [NORM], singleton_rate=0.5)
    counted = feature_dropout(0.1, [0], [NORM], singleton_rate=0.5)
    counted.attrs["norm_dropout_singletons"] = [numpy.array([3, 7], dtype="uint64")]
    counted.from_bytes(uncounted.to_bytes())
    numpy.testing.assert_array_equal(counted.attrs["norm_dropout_singletons"][0], [3, 7])
    # And counted weights carry their counts.
    uncounted.from_bytes(counted.to_bytes())
    numpy.testing.assert_array_equal(uncounted.attrs["norm_dropout_singletons"][0], [3, 7])


def test_v3_rejects_a_bad_singleton_rate():
    embed = registry.resolve({"e": EMBED})["e"]
    with pytest.raises(ValueError, match=r"NormDropout.v3: singleton_rate must be in \[0, 1\)"):
        build_norm_dropout_v3(embed, 0.1, singleton_rate=1.0)


def test_count_singletons_counts_the_corpus_per_attribute():
    nlp, examples = trained_pipeline(
        0.0, n_updates=0, version="v3", attrs=["NORM", "SHAPE"], singleton_rate=0.5
    )
    docs = [eg.predicted for eg in examples]
    counts = count_singletons(nlp, docs)
    values = numpy.concatenate([d.to_array([NORM, SHAPE]) for d in docs])
    want = {}
    for j, name in enumerate(["NORM", "SHAPE"]):
        unique, n = numpy.unique(values[:, j], return_counts=True)
        want[name] = unique[n == 1]
    assert counts == {name: len(v) for name, v in want.items()} and counts["NORM"] > 50
    (layer,) = norm_layers(nlp)
    assert layer.attrs["norm_dropout_columns"] == [0, 3]
    for got, name in zip(layer.attrs["norm_dropout_singletons"], ["NORM", "SHAPE"]):
        numpy.testing.assert_array_equal(got, want[name])


def test_count_singletons_names_a_pipeline_without_v3_singletons():
    nlp, examples = trained_pipeline(0.1, n_updates=0, version="v3")  # no singleton_rate
    with pytest.raises(ValueError, match="no spacy-vanilla-ner.NormDropout.v3 layer with"):
        count_singletons(nlp, [eg.predicted for eg in examples])
    nlp, _ = trained_pipeline(0.1, n_updates=0, version="v3", singleton_rate=0.5)
    with pytest.raises(ValueError, match="training corpus has no tokens"):
        count_singletons(nlp, [nlp.make_doc("")])


def test_callback_counts_the_training_corpus_and_the_counts_are_saved(tmp_path, wikigold_100):
    """`spacy train`'s initialization with the callback in [initialize.before_init], the shipped
    config switched to v3: the layer has the training corpus's singletons, they survive
    to_disk/load, and training uses them without a warning."""
    import warnings

    from spacy.tokens import DocBin
    from spacy.training.initialize import init_nlp
    from spacy.util import load_config

    from spacy_vanilla_ner.convert import convert

    convert(wikigold_100, tmp_path / "train.spacy")
    config = load_config(
        REPO / "configs" / "transformer_vner.cfg",
        overrides={
            "paths.train": str(tmp_path / "train.spacy"),
            "paths.dev": str(tmp_path / "train.spacy"),
            "components.tok2vec.model.embed.@architectures": "spacy-vanilla-ner.NormDropout.v3",
            "components.tok2vec.model.embed.singleton_rate": 0.5,
            "initialize.before_init": {"@callbacks": "spacy-vanilla-ner.CountSingletons.v1"},
        },
        interpolate=False,
    )
    nlp = init_nlp(config)
    (layer,) = [n for n in nlp.get_pipe("tok2vec").model.walk() if n.name == "norm_dropout"]
    (singletons,) = layer.attrs["norm_dropout_singletons"]
    # As the model sees the corpus: the gold docs' text through the pipeline's tokenizer.
    gold = DocBin().from_disk(tmp_path / "train.spacy").get_docs(nlp.vocab)
    norms = numpy.concatenate([nlp.make_doc(d.text).to_array([NORM]) for d in gold])
    unique, n = numpy.unique(norms, return_counts=True)
    numpy.testing.assert_array_equal(singletons, unique[n == 1])
    nlp.to_disk(tmp_path / "model")
    loaded = spacy.load(tmp_path / "model")
    (loaded_layer,) = [
        n for n in loaded.get_pipe("tok2vec").model.walk() if n.name == "norm_dropout"
    ]
    numpy.testing.assert_array_equal(loaded_layer.attrs["norm_dropout_singletons"][0], singletons)
    examples = fixture_examples(loaded, limit=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded.update(examples, sgd=Adam(0.001))
