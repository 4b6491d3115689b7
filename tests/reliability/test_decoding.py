"""Reliability: forced-invalid BILUO argmax sequences are repaired and counted."""

import numpy
from spacy.training import biluo_tags_to_spans

from spacy_vanilla_ner.tagging.biluo import is_valid
from tests.helpers import assert_valid_ents, make_nlp


def test_forced_invalid_biluo_is_repaired(monkeypatch):
    nlp = make_nlp()
    ner = nlp.get_pipe("vanilla_ner")
    for label in ("ORG", "PER"):
        ner.add_label(label)
    nlp.initialize()
    names = ner.tag_names  # O, B-ORG, I-ORG, L-ORG, U-ORG, B-PER, I-PER, L-PER, U-PER
    ids = {name: i for i, name in enumerate(names)}
    forced = {
        "I first": ["I-ORG", "L-ORG", "O", "O", "O"],
        "B then O": ["B-PER", "O", "O", "U-ORG", "O"],
        "lone L": ["O", "O", "L-PER", "O", "O"],
        "label switch": ["B-PER", "I-ORG", "L-ORG", "O", "O"],
        "B at end": ["O", "O", "O", "O", "B-ORG"],
        "all I": ["I-PER", "I-PER", "I-PER", "I-PER", "I-PER"],
        "U on whitespace": ["U-ORG", "U-ORG", "U-ORG", "O", "O"],
        "valid": ["B-ORG", "L-ORG", "O", "U-PER", "O"],
    }
    docs = []
    for name in forced:
        if name == "U on whitespace":
            doc = nlp.make_doc("Acme  Inc c d")  # the double space is a whitespace token
            assert doc[1].is_space
        else:
            doc = nlp.make_doc("a b c d e")
        assert len(doc) == 5
        docs.append(doc)
    probs = []
    for tags in forced.values():
        p = numpy.full((5, len(names)), 0.02 / (len(names) - 1), dtype="f")
        for i, tag in enumerate(tags):
            p[i, ids[tag]] = 0.98
        probs.append(p)
    model_predict = type(ner.model).predict  # instances have no __dict__: patch the class

    def forced_predict(model, docs):
        if model is ner.model:
            return [probs[i] for i in range(len(docs))]
        return model_predict(model, docs)

    monkeypatch.setattr(type(ner.model), "predict", forced_predict)
    before = ner.n_repaired
    tag_ids = ner.predict(docs)
    assert ner.n_repaired - before == len(forced) - 1  # all but "valid"
    for doc, tags in zip(docs, tag_ids):
        space = [t.is_space for t in doc]
        assert is_valid(tags, 2, space)
        biluo_tags_to_spans(doc, [names[t] for t in tags])  # would raise E067 if invalid
    ner.set_annotations(docs, tag_ids)
    for doc in docs:
        assert_valid_ents(doc)
    valid_doc = docs[list(forced).index("valid")]
    assert [(e.start, e.end, e.label_) for e in valid_doc.ents] == [(0, 2, "ORG"), (3, 4, "PER")]


def test_n_repaired_counts_on_real_pipeline(trained_nlp, dev_texts):
    ner = trained_nlp.get_pipe("vanilla_ner")
    before = ner.n_repaired
    docs = list(trained_nlp.pipe(dev_texts))
    assert 0 <= ner.n_repaired - before <= len(docs)
    for doc in docs:
        assert_valid_ents(doc)
