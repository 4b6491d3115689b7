"""benchmarks/training_memory.py, benchmarks/int8.py and benchmarks/optimizer.py on small
inputs (each in a fresh process, a few seconds each): what they write, their verdicts and their
argument errors."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import spacy
from spacy.tokens import DocBin

from spacy_vanilla_ner.convert import conll_to_docs
from tests.helpers import FIXTURE, REPO, fixture_examples

CONFIG = REPO / "configs" / "transformer_vner.cfg"


def _module(name):
    spec = importlib.util.spec_from_file_location(f"{name}_script", REPO / "benchmarks" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(script, args, cwd, timeout=300):
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        cwd=cwd,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_training_memory_writes_points_and_a_verdict(tmp_path):
    output = tmp_path / "memory.json"
    args = [
        "--train", str(FIXTURE), "--dev", str(FIXTURE),
        "--systems", f"tiny={CONFIG}",
        "--set", "tiny:components.tok2vec.model.encode.depth=1",
        "--set", "training.batcher.size=200",
        "--steps", "4", "--every", "2", "--reference-step", "2", "--eval-frequency", "2",
        "--work-dir", str(tmp_path / "work"), "--output", str(output),
    ]  # fmt: skip
    proc = _run("training_memory.py", args, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(output.read_text())
    (row,) = report["rows"]
    assert [p["step"] for p in row["points"]] == [0, 2, 4]
    assert all(p["rss_mib"] > 0 and p["peak_rss_mib"] >= p["rss_mib"] for p in row["points"])
    assert [e["step"] for e in row["evaluations"]] == [2, 4]
    verdict = row["verdict"]
    assert verdict["reference_step"] == 2 and verdict["last_step"] == 4
    assert verdict["rss_ratio"] == pytest.approx(
        verdict["rss_at_last_mib"] / verdict["rss_at_reference_mib"]
    )
    assert 0 < verdict["words_per_update"] <= 240
    assert "| `tiny` |" in output.with_suffix(".md").read_text()


def test_training_memory_verdict_and_arguments():
    module = _module("training_memory.py")
    points = [{"step": s, "rss_mib": 100 + s / 100, "peak_rss_mib": 200, "strings": 5 + s}
              for s in range(0, 5001, 500)]  # fmt: skip
    verdict = module.verdict({"points": points, "words": 5000 * 10}, 2000)
    assert verdict["rss_at_reference_mib"] == 120 and verdict["rss_at_last_mib"] == 150
    assert verdict["growth_mib_per_1000_updates"] == pytest.approx(10.0)
    assert verdict["strings_growth"] == 3000 and verdict["words_per_update"] == 10
    with pytest.raises(SystemExit):
        module.parse_args(["--steps", "100", "--reference-step", "100"])


@pytest.fixture
def dev_spacy(tmp_path):
    nlp = spacy.blank("en")
    path = tmp_path / "dev.spacy"
    DocBin(docs=conll_to_docs(FIXTURE, nlp.vocab)).to_disk(path)
    return path


def test_int8_compares_float32_int8_and_a_pipeline_without_the_encoder(
    default_path, dev_spacy, tmp_path
):
    nlp = spacy.blank("en")
    nlp.add_pipe("ner")
    nlp.initialize(lambda: fixture_examples(nlp))
    nlp.to_disk(tmp_path / "spacy_ner")
    output = tmp_path / "int8.json"
    args = [
        "--model", f"ours={default_path}", "--model", f"spacy_ner={tmp_path / 'spacy_ner'}",
        "--dev", str(dev_spacy), "--seconds", "0.01", "--output", str(output),
    ]  # fmt: skip
    proc = _run("int8.py", args, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(output.read_text())["rows"]
    assert [(r["system"], r["dtype"]) for r in rows] == [
        ("ours", "float32"),
        ("ours", "int8"),
        ("spacy_ner", "float32"),
    ]
    assert rows[0]["ents_f"]["mean"] > 0.3  # the trained default finds entities
    change = rows[1]["ents_f"]["mean"] - rows[0]["ents_f"]["mean"]
    assert rows[1]["ents_f_change"]["mean"] == pytest.approx(change)
    assert rows[0]["ents_f_change"] is None
    assert all(r["wps"]["mean"] > 0 for r in rows)


def test_int8_names_what_is_missing(tmp_path, dev_spacy):
    proc = _run("int8.py", ["--model", f"x={tmp_path}", "--dev", str(dev_spacy)], tmp_path)
    assert proc.returncode != 0 and "not a saved pipeline" in proc.stderr
    proc = _run("int8.py", ["--runs", str(tmp_path), "--dev", str(dev_spacy)], tmp_path)
    assert proc.returncode != 0 and "--runs and --systems go together" in proc.stderr


def test_optimizer_times_each_way(tmp_path):
    output = tmp_path / "optimizer.json"
    proc = _run("optimizer.py", ["--repeats", "10", "--output", str(output)], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(output.read_text())
    ways = [r["way"] for r in report["rows"]]
    assert ways[:2] == ["thinc per-tensor", "thinc fused (the encoder's shim)"]
    assert report["meta"]["n_tensors"] == 36
