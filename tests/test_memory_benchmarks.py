"""benchmarks/stress.py and benchmarks/memory_retention.py: argument checks
(default suite) and an end-to-end run of each at their minimum size (`-m slow`,
~3 min on 2 cores)."""

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.helpers import REPO

STRESS = REPO / "benchmarks" / "stress.py"
RETENTION = REPO / "benchmarks" / "memory_retention.py"


def _run(script, *args):
    return subprocess.run(
        [sys.executable, str(script), *map(str, args)], capture_output=True, text=True
    )


@pytest.mark.parametrize("script", [STRESS, RETENTION])
def test_too_few_docs_is_refused(script, tmp_path):
    result = _run(script, "--n-docs", 100, "--output", tmp_path / "out.json")
    assert result.returncode == 2
    assert "--n-docs must be at least 4000" in result.stderr
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("script", [STRESS, RETENTION])
def test_missing_model_is_refused(script, tmp_path):
    result = _run(script, "--model", tmp_path / "nowhere", "--output", tmp_path / "out.json")
    assert result.returncode == 2
    assert "is not a saved pipeline" in result.stderr
    assert not (tmp_path / "out.json").exists()


def load_stress():
    spec = importlib.util.spec_from_file_location("stress_benchmark", STRESS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stress_reads_wikigold_with_the_package_reader():
    sentences = load_stress().wikigold_sentences("dev")
    assert len(sentences) == 189 and all(sentences)
    assert "-DOCSTART-" not in {w for s in sentences for w in s}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("memory") / "model"
    load_stress().train_model(path, 30, 0)
    return path


@pytest.mark.slow
def test_stress_run(model, tmp_path):
    output = tmp_path / "stress.json"
    result = _run(STRESS, "--model", model, "--n-docs", 4000, "--output", output)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(output.read_text())
    for stream in (report["stream"], report["stream_memory_zone"]):
        assert (
            stream["docs"] == 4000 and stream["exceptions"] == 0 and stream["invalid_outputs"] == 0
        )
        assert stream["pathological"] >= 200
        assert len(stream["rss_mib"]) == 4
    assert [s["tokens"] for s in report["single_docs"]] == [512, 2000, 50000]
    assert "exceptions (plain / memory_zone)" in result.stdout


@pytest.mark.slow
def test_memory_retention_run(model, tmp_path):
    output = tmp_path / "retention.json"
    result = _run(RETENTION, "--model", model, "--n-docs", 6000, "--output", output)
    assert result.returncode == 0, result.stderr[-2000:]
    setups = {row["setup"]: row for row in json.loads(output.read_text())["setups"]}
    assert len(setups) == 4 and all(row["exceptions"] == 0 for row in setups.values())

    def growth(name):  # RSS from 1,000 docs to the end; samples swing by ~50 MiB
        rss = setups[name]["rss_mib"]
        return rss[-1][1] - rss[0][1]

    # benchmarks/results/memory_retention.json, 1k -> 6k docs: package +46 MiB, oneDNN +449 MiB.
    assert growth("package") < 150
    if sys.platform.startswith("linux"):  # the growth is glibc's
        assert growth("torch nn.GELU (oneDNN)") > growth("package") + 150
    assert "| package" in result.stdout
