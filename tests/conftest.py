"""Fixtures shared by the tests; helpers are in `tests/helpers.py`."""

from pathlib import Path
from typing import List

import pytest
import spacy
from spacy.language import Language
from thinc.api import fix_random_seed

from spacy_vanilla_ner.convert import conll_to_docs
from tests.helpers import FIXTURE, fixture_examples, make_nlp, train


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def wikigold_100() -> Path:
    """100 WikiGold sentences (CC BY 4.0), CoNLL format."""
    return FIXTURE


@pytest.fixture(scope="session")
def trained_nlp() -> Language:
    """`vanilla_ner` (32 wide, 1 layer) trained briefly on the 100-sentence
    WikiGold fixture: good enough to predict entities on it. Shared by the
    whole session, so tests must not change its weights or labels."""
    nlp = make_nlp()
    examples = fixture_examples(nlp)
    train(nlp, examples, n_epochs=12)
    return nlp


@pytest.fixture(scope="session")
def trained_path(trained_nlp, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("reliability") / "model"
    trained_nlp.to_disk(path)
    return path


@pytest.fixture(scope="session")
def default_nlp() -> Language:
    """The default pipeline, `nlp.add_pipe("vanilla_ner")` with the shipped defaults (the
    recipe's model: NormDropout over hashed features, TransformerEncoder.v2, CRF), trained
    briefly on the 100-sentence WikiGold fixture. Shared by the session: tests must not
    change its weights or labels."""
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("vanilla_ner")
    train(nlp, fixture_examples(nlp), n_epochs=10)
    return nlp


@pytest.fixture(scope="session")
def default_path(default_nlp, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("default") / "model"
    default_nlp.to_disk(path)
    return path


@pytest.fixture(scope="session")
def dev_texts() -> List[str]:
    nlp = spacy.blank("en")
    return [doc.text for doc in conll_to_docs(FIXTURE, nlp.vocab)]
