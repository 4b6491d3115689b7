"""Reports (vanilla_ner_experiments/reports.py), seeds and the plan of runs: one row per system
and seed, mean ± std per system, and what is skipped and why."""

import argparse
import json

import pytest

from tests.helpers import REPO
from vanilla_ner_experiments import reports
from vanilla_ner_experiments.budget import RULES, Budget, Mode
from vanilla_ner_experiments.cli import parse_seeds
from vanilla_ner_experiments.runner import Run, RunSettings, plan_runs
from vanilla_ner_experiments.systems import REFERENCE_LABEL, SystemSpec, parse_systems


def row(system, seed, f, steps, label="", **extra):
    budget = Budget(Mode.SECONDS, seconds=90)
    return {
        "system": system,
        "label": label,
        "seed": seed,
        "mode": "seconds",
        "status": "ok",
        "budget": budget.to_dict(),
        "dev_ents_f": f,
        "dev_ents_p": f,
        "dev_ents_r": f,
        "dev_ents_per_type": {"PER": {"p": f, "r": f, "f": f}},
        "best_step": steps,
        "steps": steps,
        "stopped_by": "seconds",
        "n_params": 1000,
        **extra,
    }


ROWS = [
    row("ours", 0, 0.50, 100),
    row("ours", 1, 0.60, 120),
    row("ours", 2, 0.70, 140),
    row("cnn", 0, 0.40, 90),
    {
        "system": "minilm",
        "label": REFERENCE_LABEL,
        "seed": 0,
        "mode": None,
        "status": "skipped",
        "reason": "the transformer model is not available",
    },
    {
        "system": "broken",
        "label": "",
        "seed": 1,
        "mode": "seconds",
        "status": "failed",
        "error": "Traceback...\nRuntimeError: boom",
    },
]


def test_mean_std():
    stat = reports.mean_std([0.5, 0.6, 0.7, None])
    assert stat["mean"] == pytest.approx(0.6) and stat["n"] == 3
    assert stat["std"] == pytest.approx(0.1)  # sample standard deviation
    assert reports.mean_std([0.4])["std"] is None
    assert reports.mean_std([None]) is None


def test_summary_per_system():
    summary = {s["system"]: s for s in reports.summarize(ROWS)}
    assert set(summary) == {"ours", "cnn"}  # skipped and failed runs are not averaged
    ours = summary["ours"]
    assert ours["seeds"] == [0, 1, 2] and ours["mode"] == "seconds"
    assert ours["metrics"]["dev_ents_f"]["mean"] == pytest.approx(0.6)
    assert ours["metrics"]["steps"]["std"] == pytest.approx(20.0)
    assert ours["dev_ents_per_type"]["PER"]["mean"] == pytest.approx(0.6)
    assert ours["stopped_by"] == {"seconds": 3}
    assert summary["cnn"]["metrics"]["dev_ents_f"]["std"] is None


def test_markdown_and_json(tmp_path):
    meta = {"title": "T", "script": "x.py", "command": "python x.py", "f1_scale": "fraction"}
    written = reports.write_report(tmp_path / "r.json", ROWS, meta, plot=False)
    assert [p.name for p in written] == ["r.json", "r.md"]
    md = (tmp_path / "r.md").read_text()
    assert "| `ours` | 0, 1, 2 | 0.600 ± 0.100 |" in md
    assert "| `cnn` | 0 | 0.400 |" in md
    assert f"`minilm` ({REFERENCE_LABEL}), seed 0: skipped: the transformer model" in md
    assert "`broken`, seed 1: failed: RuntimeError: boom" in md
    for text in RULES.values():
        assert text in md
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["rules"] == RULES and len(data["rows"]) == len(ROWS)
    assert [r["seed"] for r in data["rows"] if r["system"] == "ours"] == [0, 1, 2]
    assert data["summary"][0]["metrics"]["dev_ents_f"]["mean"] == pytest.approx(0.6)
    assert reports.load(tmp_path / "r.json") == (data["rows"], meta)


def test_earlier_json_format_loads(tmp_path):
    """Benchmark results written before seeds: a list of rows, `error` for failures."""
    old = [
        dict(row("ours", 0, 0.8, 10), command="python b.py", device="CPU"),
        {"system": "x", "error": "boom"},
    ]
    for r in old:
        r.pop("status", None)
    (tmp_path / "old.json").write_text(json.dumps(old))
    rows, meta = reports.load(tmp_path / "old.json")
    assert meta["command"] == "python b.py" and meta["device"] == "CPU"
    assert [reports.status(r) for r in rows] == ["ok", "failed"]
    assert "80.00" in reports.markdown(rows, meta, [])


def test_parse_seeds():
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("7,") == [7]
    for bad in ("0", "a", "1,1", "-1,"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_seeds(bad)


def test_plan_runs_one_per_seed_reference_once(tmp_path, monkeypatch):
    from vanilla_ner_experiments import systems

    monkeypatch.setattr(systems, "find_minilm", lambda: None)
    specs = parse_systems(
        "transformer_vner,cnn_ner,minilm_ner",
        REPO / "configs",
        ["minilm_ner:paths.transformer_model=/nowhere", "cnn_ner:training.dropout=0.2"],
    )
    assert specs[1].overrides == {"training.dropout": 0.2}
    assert [s.reference for s in specs] == [False, False, True]
    budget = Budget(Mode.SECONDS, seconds=90)
    settings = RunSettings(
        budget=budget, seeds=[0, 1, 2], train=tmp_path, dev=tmp_path, out_dir=tmp_path
    )
    planned = plan_runs(specs, settings)
    runs = [(p.spec.name, p.seed, p.budget) for p in planned if isinstance(p, Run)]
    assert runs[:6] == [
        (name, seed, budget) for name in ("transformer_vner", "cnn_ner") for seed in (0, 1, 2)
    ]
    skipped = [p for p in planned if not isinstance(p, Run)]
    if runs[6:]:  # the MiniLM model is there: a steps budget, first seed only
        assert runs[6:] == [("minilm_ner", 0, Budget(Mode.STEPS, steps=500))]
    else:  # spacy-transformers or the model is missing: skipped with the reason
        assert skipped[0]["status"] == "skipped" and skipped[0]["label"] == REFERENCE_LABEL
        assert "cannot import" in skipped[0]["reason"] or "link-minilm" in skipped[0]["reason"]
    settings.reference_steps = 0
    assert plan_runs(specs[2:], settings)[0]["reason"] == "--reference-steps 0"


def test_unknown_system_stops_before_training(tmp_path):
    settings = RunSettings(
        budget=Budget(Mode.STEPS, steps=1),
        seeds=[0],
        train=tmp_path,
        dev=tmp_path,
        out_dir=tmp_path,
    )
    with pytest.raises(SystemExit, match="config not found"):
        plan_runs([SystemSpec("nope", tmp_path / "nope.cfg")], settings)


def curve(*points):
    return [{"train_seconds": t, "dev_ents_f": f} for t, f in points]


def test_time_to_reach_each_systems_best(tmp_path):
    """Converged runs: seconds until a system first reaches each system's mean best."""
    rows = [
        row("ours", 0, 0.90, 10, mode="converged", curve=curve((10, 0.5), (20, 0.85), (40, 0.9))),
        row("ours", 1, 0.90, 10, mode="converged", curve=curve((10, 0.6), (30, 0.88), (50, 0.9))),
        row("cnn", 0, 0.88, 10, mode="converged", curve=curve((10, 0.8), (60, 0.88))),
    ]
    assert reports.seconds_to_reach(rows[0], 0.85) == 20
    assert reports.seconds_to_reach(rows[2], 0.89) is None
    lines = reports.time_to_reach_table(rows, "fraction")
    assert lines[0] == "| System | to `ours`'s best (0.900) | to `cnn`'s best (0.880) |"
    # ours reaches its own best at 40 and 50 s (mean 45), the CNN's 0.88 at 40 and 30 s.
    assert lines[2] == "| `ours` | 45 s (1.00×) | 35 s (0.58×) |"
    assert lines[3] == "| `cnn` | not reached | 60 s (1.00×) |"
    meta = {"title": "T", "f1_scale": "fraction"}
    reports.write_report(tmp_path / "r.json", rows, meta, plot=False)
    assert "## Time to reach each system's best" in (tmp_path / "r.md").read_text()
    reports.write_report(tmp_path / "s.json", ROWS, meta, plot=False)
    assert "Time to reach" not in (tmp_path / "s.md").read_text()  # not in a seconds run


def test_seconds_axis_stops_where_the_compared_systems_stop():
    from vanilla_ner_experiments.plots import axis_end

    def run(label, seconds):
        return {"label": label, "curve": [{"train_seconds": 0.0}, {"train_seconds": seconds}]}

    compared = [run("", 100.0), run("", 120.0)]
    assert axis_end(compared + [run(REFERENCE_LABEL, 3000.0)], "train_seconds") == pytest.approx(
        124.8
    )
    assert axis_end(compared, "train_seconds") is None  # no reference: matplotlib's own
    assert axis_end(compared + [run(REFERENCE_LABEL, 50.0)], "train_seconds") is None
    assert axis_end([run(REFERENCE_LABEL, 3000.0)], "train_seconds") is None
