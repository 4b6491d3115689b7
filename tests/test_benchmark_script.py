"""benchmarks/conll2003.py on the 100-sentence WikiGold fixture (as train, dev and test): one
run of one update in a child process (default suite), and end to end with a budget of 3 updates
and 2 seeds, each run in its own process: the JSON rows, the markdown report and the plots
(`-m slow`, about a minute on 2 cores)."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import FIXTURE, REPO

SCRIPT = REPO / "benchmarks" / "conll2003.py"
CONFIG = REPO / "configs" / "transformer_vner.cfg"

ROW_FIELDS = [
    "system",
    "seed",
    "mode",
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
        [sys.executable, str(SCRIPT)] + args,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
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
        "--systems", f"tiny={CONFIG}",
        "--set", "tiny:components.tok2vec.model.encode.depth=1",
        "--mode", "steps",
        "--steps", "3",
        "--eval-frequency", "2",
        "--seeds", "2",
        "--threads", "1",
        "--infer-batch-size", "8",
        "--profile", "tiny",
        "--work-dir", str(tmp / "work"),
        "--output", str(output),
    ]  # fmt: skip
    proc = _run(args, cwd=tmp)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return output, json.loads(output.read_text()), proc.stdout


@pytest.mark.slow
def test_rows_schema(run):
    _, data, _ = run
    rows = data["rows"]
    assert [(r["system"], r["seed"], r["mode"]) for r in rows] == [
        ("tiny", 0, "steps"),
        ("tiny", 1, "steps"),
    ]
    for row in rows:
        assert row["status"] == "ok"
        for key in ROW_FIELDS:
            assert key in row, key
        for key in ("dev_ents_f", "dev_ents_p", "dev_ents_r", "test_ents_f"):
            assert 0.0 <= row[key] <= 1.0
        assert row["gpu_wps"] is None and row["peak_gpu_mb"] is None  # CPU run
        assert row["cpu_wps"] > 0 and row["train_wps"] > 0 and row["peak_rss_mb"] > 0
        assert row["steps"] == 3 and row["stopped_by"] == "steps" and row["words_trained"] > 0
        assert 0 <= row["train_seconds_to_best"] <= row["train_seconds"] <= row["seconds"]
        assert row["device"] and row["versions"]["spacy"] and row["versions"]["spacy-vanilla-ner"]
        assert [p["step"] for p in row["curve"]] == [0, 2]
        for point in row["curve"]:
            for key in ("seconds", "train_seconds", "step", "dev_ents_f", "loss"):
                assert key in point
        best = max(p["dev_ents_f"] for p in row["curve"])
        assert row["dev_ents_f"] == pytest.approx(best)
        # The reloaded best checkpoint scores the same in the timed nlp.pipe run.
        assert row["cpu_infer"]["ents_f"] == pytest.approx(row["dev_ents_f"])
        # Words/s from the median of three timed passes.
        timing = row["cpu_infer"]
        assert len(timing["pass_seconds"]) == 3
        assert timing["seconds"] == sorted(timing["pass_seconds"])[1]
        assert timing["wps"] == pytest.approx(timing["words"] / timing["seconds"])
        assert row["data"]["train"]["words"] == row["data"]["dev"]["words"] > 0
        assert row["overrides"]["components.tok2vec.model.encode.depth"] == 1
        assert row["overrides"]["training.seed"] == row["seed"]
        assert "nlp.pipe total" in row["cpu_infer"]["profile"]
    assert rows[0]["curve"][0]["loss"] != rows[1]["curve"][0]["loss"]
    summary = data["summary"]
    assert [(s["system"], s["seeds"]) for s in summary] == [("tiny", [0, 1])]


@pytest.mark.slow
def test_report_files(run):
    output, data, stdout = run
    md = output.with_suffix(".md").read_text()
    assert "| `tiny` | 0, 1 |" in md and "## Rules" in md
    for suffix in ("f1_seconds", "f1_steps", "loss"):
        assert output.with_name(f"bench_{suffix}.png").stat().st_size > 1000
    assert "dev F1" in stdout  # progress lines during training
    # The report can be rewritten from the JSON alone.
    output.with_suffix(".md").unlink()
    proc = _run(["--report-only", "--output", str(output)], cwd=output.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert output.with_suffix(".md").read_text() == md


def test_one_run_in_a_child_process(tmp_path):
    output = tmp_path / "one.json"
    args = [
        "--train", str(FIXTURE), "--dev", str(FIXTURE), "--systems", f"tiny={CONFIG}",
        "--set", "tiny:components.tok2vec.model.encode.depth=1", "--mode", "steps",
        "--steps", "1", "--seeds", "5,", "--threads", "1", "--work-dir", str(tmp_path / "work"),
        "--output", str(output),
    ]  # fmt: skip
    proc = _run(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (row,) = json.loads(output.read_text())["rows"]
    assert (row["system"], row["seed"], row["mode"], row["steps"]) == ("tiny", 5, "steps", 1)
    assert all(key in row for key in ROW_FIELDS) and row["peak_rss_mb"] > 0
    assert (tmp_path / "work" / "tiny" / "seed5" / "model-best" / "meta.json").exists()
    assert "| `tiny` | 5 |" in output.with_suffix(".md").read_text()


def _module():
    spec = importlib.util.spec_from_file_location("conll2003_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_budget_options():
    module = _module()
    args = module.parse_args(["--mode", "converged", "--patience", "3", "--seeds", "0,4"])
    assert args.budget.mode.value == "converged" and args.budget.patience == 3
    assert args.budget.seconds == 1500 and args.seeds == [0, 4]
    args = module.parse_args(["--mode", "converged", "--max-seconds", "60"])
    assert args.budget.seconds == 60
    args = module.parse_args(["--mode", "seconds", "--seconds", "120", "--seeds", "3"])
    assert args.budget.describe() == "120 s of training" and args.seeds == [0, 1, 2]
    with pytest.raises(SystemExit):
        module.parse_args(["--mode", "steps"])  # no --steps


def test_bad_arguments(tmp_path):
    proc = _run(
        ["--systems", "nope", "--configs-dir", str(tmp_path), "--seconds", "1"], cwd=tmp_path
    )
    assert proc.returncode != 0
    assert "config not found" in proc.stderr


def test_gpu_id_without_cuda(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is available")
    args = [
        "--gpu-id",
        "0",
        "--train",
        str(FIXTURE),
        "--dev",
        str(FIXTURE),
        "--systems",
        "transformer_vner",
        "--seconds",
        "1",
        "--work-dir",
        str(tmp_path / "work"),
        "--output",
        str(tmp_path / "r.json"),
    ]
    proc = _run(args, cwd=tmp_path)
    assert proc.returncode != 0
    assert "no CUDA device" in proc.stderr


def test_resume_keeps_only_finished_runs_of_the_same_command(tmp_path, capsys):
    module = _module()
    output = tmp_path / "r.json"
    assert module.finished_runs(output, "python benchmarks/conll2003.py") == {}
    rows = [
        {"system": "a", "seed": 0, "status": "ok", "dev_ents_f": 1.0},
        {"system": "a", "seed": 1, "status": "failed"},
        {"system": "b", "seed": 0, "status": "skipped"},
    ]
    output.write_text(json.dumps({"meta": {"command": "cmd --seeds 2"}, "rows": rows}))
    assert module.finished_runs(output, "cmd --seeds 2") == {("a", 0): rows[0]}
    with pytest.raises(SystemExit) as err:
        module.finished_runs(output, "cmd --seeds 3")
    assert "different command" in str(err.value) and "cmd --seeds 2" in str(err.value)


@pytest.mark.slow
def test_resume_reruns_a_failed_run_and_keeps_the_others(tmp_path):
    output = tmp_path / "r.json"
    args = [
        "--train", str(FIXTURE), "--dev", str(FIXTURE), "--systems", f"tiny={CONFIG}",
        "--set", "tiny:components.tok2vec.model.encode.depth=1", "--mode", "steps",
        "--steps", "1", "--seeds", "2", "--threads", "1", "--no-cpu-infer",
        "--work-dir", str(tmp_path / "work"), "--output", str(output),
    ]  # fmt: skip
    proc = _run(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(output.read_text())
    first = report["rows"][0]
    report["rows"][1] = {"system": "tiny", "seed": 1, "status": "failed", "error": "cut off"}
    output.write_text(json.dumps(report))
    proc = _run(args + ["--resume"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Kept from" in proc.stdout and "tiny seed 0" in proc.stdout
    rows = json.loads(output.read_text())["rows"]
    assert rows[0] == first
    assert (rows[1]["seed"], rows[1]["status"], rows[1]["steps"]) == (1, "ok", 1)
    assert json.loads(output.read_text())["meta"]["command"] == report["meta"]["command"]
