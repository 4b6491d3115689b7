from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def wikigold_100() -> Path:
    """100 WikiGold sentences (CC BY 4.0), CoNLL format."""
    return FIXTURES / "wikigold-100.conll"


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


POS_DATA = [("I like green eggs", ["N", "V", "J", "N"]), ("Eat blue ham", ["V", "J", "N"])]


def fit_pos_tags(nlp, steps=60):
    """Train a pipeline's `tagger` on two tagged sentences (as spaCy's own
    tagger tests do); check that the loss falls and the tags are learned."""
    from spacy.training import Example
    from thinc.api import fix_random_seed

    examples = [Example.from_dict(nlp.make_doc(t), {"tags": tags}) for t, tags in POS_DATA]
    fix_random_seed(0)
    optimizer = nlp.initialize(lambda: examples)
    history = []
    for _ in range(steps):
        losses = {}
        nlp.update(examples, sgd=optimizer, losses=losses)
        history.append(losses["tagger"])
    assert history[-1] < 0.05 * history[0]
    assert [t.tag_ for t in nlp("I like blue eggs")] == ["N", "V", "J", "N"]


def tagger_model_with_encoder(encode, width, attrs=("NORM", "PREFIX", "SUFFIX", "SHAPE"), rows=(5000, 1000, 2500, 2500)):
    """A NERTagger.v1 config over spacy.Tok2Vec.v2 with hashed features and the
    given `encode` block: the one place a test swaps encoders."""
    return {
        "@architectures": "spacy-vanilla-ner.NERTagger.v1",
        "tok2vec": {
            "@architectures": "spacy.Tok2Vec.v2",
            "embed": {
                "@architectures": "spacy.MultiHashEmbed.v2",
                "width": width,
                "attrs": list(attrs),
                "rows": list(rows),
                "include_static_vectors": False,
            },
            "encode": encode,
        },
    }
