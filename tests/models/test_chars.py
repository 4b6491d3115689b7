"""`spacy-vanilla-ner.CharCNNEmbed.v1`: the character ids it reads, that windows stay inside
a word, shapes for empty docs and batches, gradients, NormDropout.v2 around it, bad settings,
and a pipeline that trains, saves, loads and pickles with it."""

import pickle

import numpy
import pytest
import spacy
from spacy.attrs import NORM
from spacy.util import fix_random_seed, registry

from spacy_vanilla_ner.models.chars import BEGIN, END, build_char_cnn_embed_v1, char_ids
from tests.helpers import fixture_examples, tagger_model_with_encoder

WIDTH = 16
ROWS = (500, 100, 100, 100)


def embed_config(**settings):
    word = tagger_model_with_encoder(None, WIDTH, rows=ROWS)["tok2vec"]["embed"]
    return {
        "@architectures": "spacy-vanilla-ner.CharCNNEmbed.v1",
        "width": WIDTH,
        "embed": word,
        **settings,
    }


def build(**settings):
    return registry.resolve({"m": embed_config(**settings)})["m"]


@pytest.fixture(scope="module")
def nlp():
    return spacy.blank("en")


def test_char_ids_are_code_points_between_markers(nlp):
    docs = [nlp("Zoë hi"), nlp(""), nlp("hi")]
    ids, lengths = char_ids(docs, max_chars=20)
    assert lengths.tolist() == [5, 4, 4]
    expected = [BEGIN, ord("Z"), ord("o"), ord("ë"), END, BEGIN, ord("h"), ord("i"), END]
    assert ids.tolist() == expected + [BEGIN, ord("h"), ord("i"), END]


def test_long_words_keep_their_first_and_last_characters(nlp):
    word = "Supercalifragilistic"  # 20 characters
    ids, lengths = char_ids([nlp(word + "expialidocious")], max_chars=10)
    assert lengths.tolist() == [12]
    assert "".join(map(chr, ids[1:-1].tolist())) == "Supercious"


def test_a_word_vector_depends_on_its_own_characters_only(nlp):
    """The convolution windows stop at word boundaries: a word's vector is the same whatever
    its neighbours are."""
    fix_random_seed(0)
    model = next(n for n in build().walk() if n.name == "char_cnn")
    docs = [nlp("Rotterdam"), nlp("Shell Rotterdam Zürich")]
    model.initialize(X=docs)
    alone, together = model.predict(docs)
    numpy.testing.assert_allclose(alone[0], together[1], rtol=1e-6, atol=1e-6)
    assert not numpy.allclose(together[0], together[1])


def test_shapes_with_empty_docs_and_batches(nlp):
    fix_random_seed(0)
    model = build()
    docs = [nlp("Ann Lee met Shell ."), nlp(""), nlp("Hi")]
    model.initialize(X=docs)
    Y, backprop = model(docs, is_train=True)
    assert [y.shape for y in Y] == [(5, WIDTH), (0, WIDTH), (1, WIDTH)]
    backprop([numpy.ones_like(y) for y in Y])
    assert model.predict([nlp("")])[0].shape == (0, WIDTH)
    assert model.predict([]) == []


def test_gradients_reach_the_character_embeddings(nlp):
    fix_random_seed(0)
    model = build()
    docs = [nlp("Ann Lee met Shell in Rotterdam .")]
    model.initialize(X=docs)
    Y, backprop = model(docs, is_train=True)
    backprop([numpy.ones_like(y) for y in Y])
    char_table = [n for n in model.walk() if n.name == "hashembed"][-1]
    assert char_table.get_dim("nO") == 16
    assert numpy.abs(char_table.get_grad("E")).sum() > 0


def test_norm_dropout_v2_wraps_it_and_leaves_the_characters(nlp):
    """NormDropout.v2 finds MultiHashEmbed's extractor inside; the character ids (from the
    text) are not touched, so an unseen NORM still has its spelling."""
    model = registry.resolve(
        {
            "m": {
                "@architectures": "spacy-vanilla-ner.NormDropout.v2",
                "rate": 0.5,
                "embed": embed_config(),
            }
        }
    )["m"]
    names = [n.name for n in model.walk()]
    assert "norm_dropout" in names and "char_cnn" in names
    docs = [nlp("Ann Lee met Shell in Rotterdam .")]
    model.initialize(X=docs)
    before = docs[0].to_array([NORM]).copy()
    model(docs, is_train=True)
    assert (docs[0].to_array([NORM]) == before).all()


@pytest.mark.parametrize(
    "setting,value",
    [("filters", 0), ("char_width", -1), ("window_size", -1), ("max_chars", 1), ("rows", 2.5)],
)
def test_bad_settings_are_named(setting, value):
    with pytest.raises(ValueError, match=rf"CharCNNEmbed.v1: {setting} must be an integer"):
        build_char_cnn_embed_v1(build().get_ref("embed"), WIDTH, **{setting: value})


def test_pipeline_trains_saves_loads_and_pickles(tmp_path):
    fix_random_seed(0)
    encode = {
        "@architectures": "spacy-vanilla-ner.TransformerEncoder.v2",
        "width": WIDTH,
        "depth": 1,
        "n_heads": 2,
    }
    model = tagger_model_with_encoder(encode, WIDTH, rows=ROWS)
    model["tok2vec"]["embed"] = embed_config(filters=8, char_width=8)
    nlp = spacy.blank("en")
    nlp.add_pipe("vanilla_ner", config={"model": model})
    examples = fixture_examples(nlp, limit=20)
    optimizer = nlp.initialize(lambda: examples)
    losses = {}
    for _ in range(3):
        nlp.update(examples, sgd=optimizer, losses=losses)
    assert numpy.isfinite(losses["vanilla_ner"])
    texts = [eg.reference.text for eg in examples[:5]] + ["Zürich-based Ωmega Corp ."]
    ents = [d.to_json()["ents"] for d in nlp.pipe(texts)]
    nlp.to_disk(tmp_path / "model")
    assert [d.to_json()["ents"] for d in spacy.load(tmp_path / "model").pipe(texts)] == ents
    assert [d.to_json()["ents"] for d in pickle.loads(pickle.dumps(nlp)).pipe(texts)] == ents
