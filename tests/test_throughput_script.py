"""benchmarks/throughput.py: the stage timer (exclusive seconds, with a fake clock), the
patches it puts on a pipeline and takes off again, the host-only config, and the script on the
100-sentence WikiGold fixture with 2 + 2 timed updates and 1 + 1 inference passes, with the
default encoder and with --host-only (each in a fresh process, about 10 s each on 2 cores)."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import FIXTURE, REPO

SCRIPT = REPO / "benchmarks" / "throughput.py"
CONFIG = REPO / "configs" / "transformer_vner.cfg"
ROW_FIELDS = [
    "system",
    "config",
    "host_only",
    "overrides",
    "pipeline",
    "n_params",
    "train",
    "infer",
]
PART_FIELDS = ["runs", "words", "seconds", "wps", "instrumented", "instrumentation_overhead"]


def _module():
    spec = importlib.util.spec_from_file_location("throughput_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _run_ok(tmp_path, *extra):
    output = tmp_path / "results" / "throughput.json"
    args = [
        "--train", str(FIXTURE), "--dev", str(FIXTURE),
        "--systems", f"tiny={CONFIG}",
        "--set", "tiny:components.tok2vec.model.encode.depth=1",
        "--warmup-steps", "1", "--train-steps", "2", "--infer-seconds", "0",
        "--threads", "1",
        "--work-dir", str(tmp_path / "work"), "--output", str(output), *extra,
    ]  # fmt: skip
    proc = _run(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return output, json.loads(output.read_text()), proc.stdout


def _check_part(part, stages):
    timed = part["instrumented"]
    assert part["words"] > 0 and part["seconds"] > 0 and part["wps"] > 0
    assert timed["words"] > 0 and timed["seconds"] > 0 and timed["timed_regions"] > 0
    assert list(timed["stages"])[-1] == "rest"
    assert set(stages) <= set(timed["stages"])
    named = {k: v for k, v in timed["stages"].items() if k != "rest"}
    assert all(v >= 0 for v in timed["stages"].values()), timed["stages"]
    assert sum(named.values()) <= timed["seconds"]
    assert sum(timed["stages"].values()) == pytest.approx(timed["seconds"])


def test_stage_timer_counts_each_second_once():
    module = _module()
    ticks = iter(range(100))
    timer = module.StageTimer(clock=lambda: float(next(ticks)))
    with timer.stage("outer"):  # t=0
        with timer.stage("inner"):  # 1..2
            pass
        with timer.stage("outer"):  # 3..4, nested in itself
            pass
        with timer.stage("inner"):  # 5..8
            with timer.stage("deep"):  # 6..7
                pass
    # t=9 closes outer: outer ran 0-1, 2-3, 3-4, 4-5, 8-9; inner 1-2, 5-6, 7-8; deep 6-7.
    assert timer.seconds == {"outer": 5.0, "inner": 3.0, "deep": 1.0}
    assert timer.regions == 5
    step = module.breakdown(timer, total=12.0, stages=["inner", "outer", "rest"])
    assert list(step) == ["inner", "outer", "deep", "rest"] and step["rest"] == 3.0


def test_timed_forward_times_forward_and_backward():
    module = _module()
    ticks = iter(range(100))
    timer = module.StageTimer(clock=lambda: float(next(ticks)))

    def forward(model, X, is_train):
        return X + 1, lambda dY: dY * 2

    wrapped = timer.timed_forward("fwd", "bwd", forward)
    Y, backprop = wrapped(None, 1, is_train=True)
    assert (Y, backprop(3)) == (2, 6)
    assert timer.seconds == {"fwd": 1.0, "bwd": 1.0}


def test_patches_are_taken_off():
    from thinc.api import Linear, Optimizer

    module = _module()

    class Pipe:
        def predict(self, docs):
            return "predicted"

    pipe, layer = Pipe(), Linear(2, 2)
    forward, step = layer._func, Optimizer.step_schedules
    with module._patched(pipe, "predict", lambda docs: "patched"):
        with module._patched(layer, "_func", "f"), module._patched(Optimizer, "step_schedules", 1):
            assert (pipe.predict([]), layer._func, Optimizer.step_schedules) == ("patched", "f", 1)
    assert "predict" not in vars(pipe) and pipe.predict([]) == "predicted"
    assert layer._func is forward and Optimizer.step_schedules is step


def test_host_only_config():
    from spacy.util import load_config

    module = _module()
    config = module.host_only_config(load_config(CONFIG, interpolate=False))
    model = config["components"]["tok2vec"]["model"]
    assert model["encode"] == {"@architectures": module.PASS_THROUGH, "width": 8}
    assert model["embed"]["embed"]["width"] == 8
    assert config["components"]["vanilla_ner"]["model"]["tok2vec"]["width"] == 8


def test_throughput_script(tmp_path):
    output, data, stdout = _run_ok(tmp_path)
    meta = data["meta"]
    assert meta["torch_threads"] == 1 and meta["versions"]["spacy"] and meta["device"]
    assert meta["settings"]["train_steps"] == 2 and not meta["settings"]["host_only"]
    assert "benchmarks/throughput.py" in meta["command"]
    (row,) = data["rows"]
    assert all(key in row for key in ROW_FIELDS)
    assert row["system"] == "tiny" and row["pipeline"] == ["tok2vec", "vanilla_ner"]
    assert row["overrides"]["components.tok2vec.model.encode.depth"] == 1
    for part in ("train", "infer"):
        assert all(key in row[part] for key in PART_FIELDS)
    assert row["train"]["runs"] == row["train"]["instrumented"]["runs"] == 2
    assert row["infer"]["runs"] == row["infer"]["instrumented"]["runs"] == 1
    assert row["infer"]["docs_per_pass"] == 100
    _check_part(row["train"], ["encoder_forward", "encoder_backward", "loss", "optimizer"])
    _check_part(row["infer"], ["tokenizer", "encoder_forward", "decoding_viterbi"])
    for part, stage in (("train", "loss"), ("infer", "decoding_viterbi")):
        assert row[part]["instrumented"]["stages"][stage] > 0
    md = output.with_suffix(".md").read_text()
    assert "## Training: where the time goes" in md and "| encoder forward |" in md
    assert md in stdout


def test_host_only(tmp_path):
    _, data, _ = _run_ok(tmp_path, "--host-only")
    assert data["meta"]["settings"]["host_only"]
    (row,) = data["rows"]
    assert row["host_only"] and row["n_params"] < 200_000
    assert "components.tok2vec.model.encode.depth" not in row["overrides"]  # ignored
    _check_part(row["train"], ["featurisation_forward", "loss"])
    _check_part(row["infer"], ["decoding_viterbi"])
    stages = row["infer"]["instrumented"]["stages"]
    assert stages["encoder_forward"] < stages["decoding_viterbi"]


def test_gpu_id_without_cuda(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is available")
    proc = _run(["--gpu-id", "0", "--output", str(tmp_path / "r.json")], cwd=tmp_path)
    assert proc.returncode != 0 and "no CUDA device" in proc.stderr
