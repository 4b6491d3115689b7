"""End-to-end check of benchmarks/conll2003.py on the 100-sentence WikiGold
fixture (as train and dev), with a budget of a few seconds: the JSON rows, the
markdown report and the plot."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "conll2003.py"
FIXTURE = REPO / "tests" / "fixtures" / "wikigold-100.conll"
CONFIG = REPO / "configs" / "transformer_vner.cfg"

ROW_FIELDS = [
    "system",
    "dev_ents_f",
    "dev_ents_p",
    "dev_ents_r",
    "dev_ents_per_type",
    "seconds_to_best",
    "train_seconds_to_best",
    "best_step",
    "steps",
    "train_wps",
    "gpu_wps",
    "cpu_wps",
    "peak_gpu_mb",
    "peak_rss_mb",
    "device",
    "versions",
    "curve",
    "command",
]


def _run(args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, str(SCRIPT)] + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if not CONFIG.exists():
        pytest.skip(f"{CONFIG} is missing")
    tmp = tmp_path_factory.mktemp("bench")
    output = tmp / "results" / "bench.json"
    args = [
        "--train", str(FIXTURE),
        "--dev", str(FIXTURE),
        "--test", str(FIXTURE),
        "--systems", f"transformer_vner,tiny={CONFIG}",
        # A smaller second system, to check per-system overrides.
        "--set", "tiny:components.tok2vec.model.encode.depth=1",
        "--seconds", "3",
        "--eval-frequency", "4",
        "--threads", "1",
        "--infer-batch-size", "8",
        "--profile", "tiny",
        "--work-dir", str(tmp / "work"),
        "--output", str(output),
    ]
    proc = _run(args, cwd=tmp)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return output, json.loads(output.read_text()), proc.stdout


def test_rows_schema(run):
    _, rows, _ = run
    assert [r["system"] for r in rows] == ["transformer_vner", "tiny"]
    for row in rows:
        assert "error" not in row
        for key in ROW_FIELDS:
            assert key in row, key
        for key in ("dev_ents_f", "dev_ents_p", "dev_ents_r", "test_ents_f"):
            assert 0.0 <= row[key] <= 1.0
        assert row["gpu_wps"] is None and row["peak_gpu_mb"] is None  # CPU run
        assert row["cpu_wps"] > 0 and row["train_wps"] > 0 and row["peak_rss_mb"] > 0
        assert row["steps"] >= 1 and row["words_trained"] > 0
        assert 0 <= row["seconds_to_best"] <= row["seconds"]
        assert row["train_seconds_to_best"] <= row["seconds_to_best"]
        assert row["device"] and row["versions"]["spacy"] and row["versions"]["spacy-vanilla-ner"]
        assert row["curve"], "no evaluation recorded"
        steps = [p["step"] for p in row["curve"]]
        assert steps == sorted(steps) and steps[0] == 0
        for point in row["curve"]:
            for key in ("seconds", "train_seconds", "step", "dev_ents_f", "loss"):
                assert key in point
        best = max(p["dev_ents_f"] for p in row["curve"])
        assert row["dev_ents_f"] == pytest.approx(best)
        # The reloaded best checkpoint scores the same in the timed nlp.pipe run.
        assert row["cpu_infer"]["ents_f"] == pytest.approx(row["dev_ents_f"])
        assert row["data"]["train"]["words"] == row["data"]["dev"]["words"] > 0
    assert rows[1]["overrides"]["components.tok2vec.model.encode.depth"] == 1
    assert rows[1]["n_params"] < rows[0]["n_params"]
    assert "nlp.pipe total" in rows[1]["cpu_infer"]["profile"]


def test_report_files(run):
    output, rows, stdout = run
    md = output.with_suffix(".md").read_text()
    assert "| `transformer_vner` |" in md and "| `tiny` |" in md
    assert output.with_name("bench_f1_seconds.png").stat().st_size > 1000
    assert "dev F1" in stdout  # progress lines during training
    # The report can be rewritten from the JSON alone.
    output.with_suffix(".md").unlink()
    proc = _run(["--report-only", "--output", str(output)], cwd=output.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert output.with_suffix(".md").read_text() == md


def test_bad_arguments(tmp_path):
    proc = _run(["--systems", "nope", "--configs-dir", str(tmp_path), "--seconds", "1"], cwd=tmp_path)
    assert proc.returncode != 0
    assert "config not found" in proc.stderr


def test_gpu_id_without_cuda(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is available")
    args = ["--gpu-id", "0", "--train", str(FIXTURE), "--dev", str(FIXTURE), "--systems", "transformer_vner",
            "--seconds", "1", "--work-dir", str(tmp_path / "work"), "--output", str(tmp_path / "r.json")]
    proc = _run(args, cwd=tmp_path)
    assert proc.returncode != 0
    assert "no CUDA device" in proc.stderr
