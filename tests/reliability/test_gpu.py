"""Reliability on a GPU (skipped without CUDA and cupy): train on GPU and load
on CPU, mixed precision, seeded runs, long docs."""

import math

import pytest
import torch

from tests.helpers import run_script

try:
    import cupy  # noqa: F401

    HAS_CUPY = True
except ImportError:
    HAS_CUPY = False

requires_spacy_gpu = pytest.mark.skipif(
    not (torch.cuda.is_available() and HAS_CUPY),
    reason="needs a CUDA GPU and cupy (spacy.require_gpu)",
)


GPU_TRAIN_SCRIPT = """
import json, math, sys
import spacy
spacy.require_gpu()
from tests.helpers import fixture_examples, make_nlp, train
mixed = sys.argv[2] == "mixed"
nlp = make_nlp(mixed_precision=mixed)
examples = fixture_examples(nlp)
losses = train(nlp, examples, n_epochs=20)
texts = [eg.reference.text for eg in examples]
ents = [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in nlp.pipe(texts)]
gold = [spacy.training.Example(nlp.make_doc(eg.reference.text), eg.reference) for eg in examples]
scores = nlp.evaluate(gold)
nlp.to_disk(sys.argv[1])
print(json.dumps({"losses": losses, "ents": ents, "texts": texts, "f": scores["ents_f"]}))
"""


CPU_EVAL_SCRIPT = """
import json, sys
import spacy, torch
assert not torch.cuda.is_available()
from spacy.training import Example
from tests.helpers import fixture_examples
nlp = spacy.load(sys.argv[1])
examples = fixture_examples(nlp)
texts = [eg.reference.text for eg in examples]
ents = [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in nlp.pipe(texts)]
scores = nlp.evaluate([Example(nlp.make_doc(eg.reference.text), eg.reference) for eg in examples])
devices = sorted({str(p.device) for node in nlp.get_pipe("vanilla_ner").model.walk()
                  for shim in node.shims for p in shim._model.parameters()})
print(json.dumps({"ents": ents, "f": scores["ents_f"], "devices": devices}))
"""


@pytest.mark.gpu
@requires_spacy_gpu
def test_train_on_gpu_load_on_cpu(tmp_path):
    gpu = run_script(GPU_TRAIN_SCRIPT, str(tmp_path / "model"), "fp32", timeout=600)
    assert all(math.isfinite(x) for x in gpu["losses"])
    cpu = run_script(CPU_EVAL_SCRIPT, str(tmp_path / "model"), env={"CUDA_VISIBLE_DEVICES": ""})
    assert cpu["devices"] == ["cpu"]
    assert cpu["ents"] == gpu["ents"]
    assert cpu["f"] == gpu["f"]  # dev F1 change after the GPU->CPU round trip: 0


@pytest.mark.gpu
@requires_spacy_gpu
def test_mixed_precision_training_finite(tmp_path):
    out = run_script(GPU_TRAIN_SCRIPT, str(tmp_path / "model"), "mixed", timeout=600)
    assert all(math.isfinite(x) for x in out["losses"])
    assert out["losses"][-1] < out["losses"][0]
    cpu = run_script(CPU_EVAL_SCRIPT, str(tmp_path / "model"), env={"CUDA_VISIBLE_DEVICES": ""})
    assert cpu["devices"] == ["cpu"] and cpu["f"] > 0


@pytest.mark.gpu
@requires_spacy_gpu
def test_same_seed_twice_on_gpu_within_tolerance(tmp_path):
    # CUDA scatter-adds (the backward of the window gather) are not
    # deterministic, so GPU runs agree within a tolerance, not bit for bit.
    runs = [
        run_script(GPU_TRAIN_SCRIPT, str(tmp_path / f"model{i}"), "fp32", timeout=600)
        for i in range(2)
    ]
    for a, b in zip(runs[0]["losses"], runs[1]["losses"]):
        assert a == pytest.approx(b, rel=0.02)
    assert runs[0]["f"] == pytest.approx(runs[1]["f"], abs=0.02)


@pytest.mark.gpu
@requires_spacy_gpu
def test_long_docs_on_gpu(tmp_path):
    script = """
import json, sys
import spacy
spacy.require_gpu()
from tests.helpers import fixture_examples, make_nlp, train
nlp = make_nlp()
train(nlp, fixture_examples(nlp), n_epochs=3)
words = [eg.reference[i].text for eg in fixture_examples(nlp) for i in range(len(eg.reference))]
out = {}
for n in (511, 512, 513, 1024, 50000):
    doc = nlp(spacy.tokens.Doc(nlp.vocab, words=(words * (n // len(words) + 1))[:n]))
    out[n] = [len(doc), len(doc.ents)]
print(json.dumps(out))
"""
    out = run_script(script, timeout=600)
    assert {int(k): v[0] for k, v in out.items()} == {n: n for n in (511, 512, 513, 1024, 50000)}
