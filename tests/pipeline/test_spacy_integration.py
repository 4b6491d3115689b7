"""Our encoder in configs made by `spacy init config`, with only `encode` swapped."""

import numpy
import pytest
import spacy
from spacy.cli.evaluate import evaluate
from spacy.cli.init_config import init_config
from spacy.cli.train import train
from spacy.tokens import DocBin
from spacy.training import Example
from spacy.util import load_model_from_config, make_tempdir
from thinc.api import fix_random_seed

from spacy_vanilla_ner.convert import conll_to_docs
from tests.helpers import fit_pos_tags, tagger_model_with_encoder


def swapped_config(pipeline):
    config = init_config(lang="en", pipeline=pipeline, optimize="efficiency", gpu=False)
    encode = config["components"]["tok2vec"]["model"]["encode"]
    width = encode["width"]
    config["components"]["tok2vec"]["model"]["encode"] = {
        "@architectures": "spacy-vanilla-ner.TransformerEncoder.v1",
        "width": width,
        "depth": 2,
        "n_heads": 4,
    }
    return config


def ents(doc):
    return [(e.start, e.end, e.label_) for e in doc.ents]


def test_init_config_ner_with_swapped_encoder_trains_and_round_trips(wikigold_100):
    config = swapped_config(["ner"])
    assert (
        config["components"]["ner"]["model"]["tok2vec"]["@architectures"]
        == "spacy.Tok2VecListener.v1"
    )
    nlp = spacy.blank("en")
    docs = list(conll_to_docs(wikigold_100, nlp.vocab, limit=40))
    with make_tempdir() as tmp:
        DocBin(docs=docs[:30]).to_disk(tmp / "train.spacy")
        DocBin(docs=docs[30:]).to_disk(tmp / "dev.spacy")
        config.to_disk(tmp / "config.cfg")
        train(
            tmp / "config.cfg",
            tmp / "out",
            overrides={
                "paths.train": str(tmp / "train.spacy"),
                "paths.dev": str(tmp / "dev.spacy"),
                "training.max_steps": 30,
                "training.eval_frequency": 15,
            },
        )
        scores = evaluate(str(tmp / "out" / "model-last"), tmp / "dev.spacy")
        assert "ents_f" in scores
        trained = spacy.load(tmp / "out" / "model-last")
        texts = [doc.text for doc in docs[30:]]
        expected = [ents(d) for d in trained.pipe(texts)]
        trained.to_disk(tmp / "copy")
        reloaded = spacy.load(tmp / "copy")
        assert [ents(d) for d in reloaded.pipe(texts)] == expected
        from_bytes = spacy.blank("en").from_config(trained.config)
        from_bytes.from_bytes(trained.to_bytes())
        assert [ents(d) for d in from_bytes.pipe(texts)] == expected


def test_init_config_tagger_with_swapped_encoder():
    config = swapped_config(["tagger"])
    nlp = load_model_from_config(config, auto_fill=True, validate=True)
    fit_pos_tags(nlp)
    with make_tempdir() as tmp:
        nlp.to_disk(tmp)
        loaded = spacy.load(tmp)
        assert [t.tag_ for t in loaded("I like blue eggs")] == ["N", "V", "J", "N"]
        a = nlp("Eat green eggs").tensor
        b = loaded("Eat green eggs").tensor
        numpy.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize(
    "encode",
    [
        {
            "@architectures": "spacy.MaxoutWindowEncoder.v2",
            "width": 64,
            "depth": 2,
            "window_size": 1,
            "maxout_pieces": 3,
        },
        {"@architectures": "spacy.TorchBiLSTMEncoder.v1", "width": 64, "depth": 1, "dropout": 0.0},
        {
            "@architectures": "spacy-vanilla-ner.TransformerEncoder.v1",
            "width": 64,
            "depth": 1,
            "n_heads": 4,
        },
    ],
    ids=["cnn", "bilstm", "transformer"],
)
def test_vanilla_ner_with_any_encoder(encode):
    """The encoders swap by one block, under vanilla_ner too."""
    nlp = spacy.blank("en")
    model = tagger_model_with_encoder(encode, 64, attrs=("NORM", "SHAPE"), rows=(1000, 100))
    nlp.add_pipe("vanilla_ner", config={"model": model})
    example = Example.from_dict(
        nlp.make_doc("Ahmed lives in Paris"), {"entities": [(0, 5, "PER"), (15, 20, "LOC")]}
    )
    fix_random_seed(0)
    optimizer = nlp.initialize(lambda: [example])
    for _ in range(30):
        nlp.update([example], sgd=optimizer)
    assert ents(nlp("Ahmed lives in Paris")) == [(0, 1, "PER"), (3, 4, "LOC")]
