"""Pipelines saved by version 0.1.0 (tests/fixtures/models) load with the
current code and predict the same tags and entities."""

import json

import pytest
import spacy

from tests.helpers import REPO

MODELS = REPO / "tests" / "fixtures" / "models"


@pytest.mark.parametrize("name", ["vanilla-ner-0.1.0", "vanilla-ner-0.1.0-crf"])
def test_saved_pipeline_predicts_the_same(name):
    path = MODELS / name
    expected = json.loads((path / "expected.json").read_text(encoding="utf8"))
    # The fixture keeps the component only: the tokenizer comes from the config.
    nlp = spacy.load(path, exclude=["tokenizer", "vocab"])
    ner = nlp.get_pipe("vanilla_ner")
    assert ner.labels == ("LOC", "MISC", "ORG", "PER")
    texts = expected["texts"]
    tags = ner.predict([nlp.make_doc(text) for text in texts])
    assert [t.tolist() for t in tags] == expected["tags"]
    ents = [[[e.start_char, e.end_char, e.label_] for e in doc.ents] for doc in nlp.pipe(texts)]
    assert ents == expected["ents"]
    assert sum(len(e) for e in ents) > 10
    # Saved again by the current code, it loads and predicts the same.
    again = spacy.blank("en").from_config(nlp.config)
    again.from_bytes(nlp.to_bytes())
    assert [
        t.tolist()
        for t in again.get_pipe("vanilla_ner").predict([again.make_doc(text) for text in texts])
    ] == expected["tags"]
