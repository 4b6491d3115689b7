"""benchmarks/crf_speed.py: a tiny run writes the table and the JSON."""

import importlib.util
import json
import sys

from tests.helpers import REPO

SCRIPT = REPO / "benchmarks" / "crf_speed.py"


def test_tiny_run_writes_json(tmp_path, monkeypatch, capsys):
    # The script sets these when unset; set them here so that the test restores them.
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(name, "1")
    output = tmp_path / "crf_speed.json"
    args = ["--crf-docs", "5", "--viterbi-docs", "7", "--repeats", "2", "--labels", "3"]
    args += ["--output", str(output)]
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
    spec = importlib.util.spec_from_file_location("crf_speed_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import torch

    threads = torch.get_num_threads()
    try:
        module.main()  # sets torch to one thread where torch is loaded
    finally:
        torch.set_num_threads(threads)
    assert "viterbi_batch" in capsys.readouterr().out
    report = json.loads(output.read_text())
    assert report["meta"]["repeats"] == 2
    assert report["meta"]["labels"] == 3 and report["meta"]["tags"] == 13
    names = [row["name"] for row in report["results"]]
    assert names == [
        "crf_loss_and_gradient",
        "crf_loss_and_gradient, missing tags",
        "viterbi_batch",
    ]
    for row in report["results"]:
        assert row["docs"] == (7 if row["name"] == "viterbi_batch" else 5)
        assert row["ms_median"] > 0 and row["words_per_s"] > 0
