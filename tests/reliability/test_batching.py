"""Reliability: batch composition, padding, several processes and memory zones."""

import json

import numpy
import pytest
from spacy.tokens import Doc

from tests.helpers import ents_of, run_script, words_doc


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


MULTIPROCESS_SCRIPT = """
import json, multiprocessing, sys

def main():
    method, path, texts_path = sys.argv[1:4]
    multiprocessing.set_start_method(method, force=True)
    import spacy
    nlp = spacy.load(path)
    texts = json.load(open(texts_path, encoding="utf8"))
    # Serial first, so torch's thread pools exist before the fork (spaCy #6662).
    serial = [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in nlp.pipe(texts)]
    parallel = [[(e.start_char, e.end_char, e.label_) for e in d.ents]
                for d in nlp.pipe(texts, n_process=2, batch_size=10)]
    print(json.dumps({"serial": serial, "parallel": parallel}))

if __name__ == "__main__":
    main()
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pipe_n_process_2_equals_serial(trained_path, dev_texts, tmp_path, method):
    texts = dev_texts[:40] + ["", "   ", "x" * 5000, "😀 Emma Watson in London"]
    texts_path = tmp_path / "texts.json"
    texts_path.write_text(json.dumps(texts), encoding="utf8")
    out = run_script(
        MULTIPROCESS_SCRIPT,
        method,
        str(trained_path),
        str(texts_path),
        env={"OMP_NUM_THREADS": "2"},
        timeout=120,
    )
    assert out["parallel"] == out["serial"]
    assert sum(len(e) for e in out["serial"]) > 10


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
