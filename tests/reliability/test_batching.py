"""Reliability: batch composition, padding and memory zones (several processes:
test_default_pipeline.py)."""

import numpy
from spacy.tokens import Doc

from tests.helpers import ents_of, words_doc


def test_same_entities_for_batch_sizes_1_2_128(trained_nlp, dev_texts):
    vocab = trained_nlp.vocab
    docs = [words_doc(vocab, n, seed=i) for i, n in enumerate([0, 1, 700, 3, 0])]
    docs += [trained_nlp.make_doc(t) for t in dev_texts[:20]]
    docs += [words_doc(vocab, n, seed=10 + i) for i, n in enumerate([0, 1, 700, 3, 0])]
    results = {}
    for batch_size in (1, 2, 128):
        copies = [Doc(vocab).from_bytes(d.to_bytes()) for d in docs]
        results[batch_size] = ents_of(list(trained_nlp.pipe(copies, batch_size=batch_size)))
    assert results[1] == results[2] == results[128]
    assert sum(len(e) for e in results[1]) > 10


def test_scores_do_not_depend_on_padding(trained_nlp):
    model = trained_nlp.get_pipe("vanilla_ner").model
    vocab = trained_nlp.vocab
    docs = [words_doc(vocab, n, seed=i) for i, n in enumerate([0, 1, 700, 3, 0])]
    together = model.predict(docs)
    for doc, scores in zip(docs, together):
        alone = model.predict([doc])[0]
        numpy.testing.assert_allclose(scores, alone, atol=1e-5)


def test_memory_zone(trained_nlp, dev_texts):
    expected = ents_of(list(trained_nlp.pipe(dev_texts)))
    n_strings = len(trained_nlp.vocab.strings)
    for _ in range(2):
        with trained_nlp.memory_zone():
            got = ents_of(list(trained_nlp.pipe(dev_texts + ["brandnewword" * 3, ""])))
        assert got[: len(dev_texts)] == expected
    assert len(trained_nlp.vocab.strings) <= n_strings + 1
    # Labels survive the zone.
    assert ents_of([trained_nlp(dev_texts[0])]) == expected[:1]
