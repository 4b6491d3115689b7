"""Reliability: bytes and disk round trips, and loading in a fresh process (pickle of the
default pipeline: test_default_pipeline.py)."""

import json

import spacy

from tests.helpers import ents_of, make_nlp, run_script


def test_bytes_round_trip_identical(trained_nlp, dev_texts):
    data = trained_nlp.to_bytes()
    nlp2 = make_nlp()
    nlp2.from_bytes(data)
    assert ents_of(list(nlp2.pipe(dev_texts))) == ents_of(list(trained_nlp.pipe(dev_texts)))
    assert nlp2.to_bytes() == data
    assert nlp2.get_pipe("vanilla_ner").labels == trained_nlp.get_pipe("vanilla_ner").labels


def test_disk_round_trip_identical(trained_nlp, trained_path, dev_texts, tmp_path):
    nlp2 = spacy.load(trained_path)
    assert ents_of(list(nlp2.pipe(dev_texts))) == ents_of(list(trained_nlp.pipe(dev_texts)))
    nlp2.to_disk(tmp_path / "again")
    for name in ("model", "cfg"):
        assert (tmp_path / "again" / "vanilla_ner" / name).read_bytes() == (
            trained_path / "vanilla_ner" / name
        ).read_bytes()
    # The vocab aside: the session's `trained_nlp` gains strings as other tests
    # run new text through it.
    assert nlp2.to_bytes(exclude=["vocab"]) == trained_nlp.to_bytes(exclude=["vocab"])


LOAD_SCRIPT = """
import json, sys
import spacy
nlp = spacy.load(sys.argv[1])
texts = json.load(open(sys.argv[2], encoding="utf8"))
ents = [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in nlp.pipe(texts)]
import torch
devices = sorted({str(p.device) for node in nlp.get_pipe("vanilla_ner").model.walk()
                  for shim in node.shims for p in shim._model.parameters()})
print(json.dumps({"ents": ents, "devices": devices, "cuda": torch.cuda.is_available()}))
"""


def test_spacy_load_in_fresh_process(trained_nlp, trained_path, dev_texts, tmp_path):
    texts_path = tmp_path / "texts.json"
    texts_path.write_text(json.dumps(dev_texts), encoding="utf8")
    out = run_script(LOAD_SCRIPT, str(trained_path), str(texts_path))
    expected = ents_of(list(trained_nlp.pipe(dev_texts)))
    assert [[tuple(e) for e in doc] for doc in out["ents"]] == expected
