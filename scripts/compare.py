"""Train and evaluate several NER systems on the same data under the same budget, once per seed.

Usage (see `spacy project run compare`):

    python scripts/compare.py --systems transformer_vner,cnn_ner \\
        --train corpus/train.spacy --dev corpus/dev.spacy \\
        --mode seconds --seconds 90 --seeds 3 --eval-frequency 50 --output metrics

Each system is a config in configs/ (`configs/<system>.cfg`, or NAME=PATH). Every run trains a
fresh pipeline with `vanilla_ner_experiments.budget` (spaCy's own loop under a budget: seconds,
steps or converged; the rules, printed in the report, are `budget.RULES`), keeps the best
checkpoint on dev (--training-dir/<system>/seed<N>/model-best) and times `nlp.pipe` over dev
with it. A pretrained system (configs/minilm_ner.cfg, spacy-transformers) is a reference: it
gets --reference-steps updates instead of the budget, and is skipped, with the reason in the
report, where spacy-transformers or its model is missing.

Writes, in --output:
  compare.json               one row per system and seed (scores of the best checkpoint, the
                             curve of every evaluation, speed, seed, mode), the mean ± std per
                             system, the rules and the settings
  compare.md                 the same as tables
  compare_f1_seconds.png     dev entity F1 against training seconds
  compare_f1_steps.png       dev entity F1 against optimizer steps
  compare_loss.png           training loss per word against steps
"""

import argparse
import datetime
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from vanilla_ner_experiments import cli, deps, reports
from vanilla_ner_experiments.machine import device_info, package_versions
from vanilla_ner_experiments.runner import (
    describe_plan,
    plan_runs,
    run_all,
    run_one,
    settings_from_args,
)
from vanilla_ner_experiments.systems import parse_systems

REPO = Path(__file__).resolve().parent.parent
ALL_SYSTEMS = [
    "transformer_vner",
    "transformer_ner",
    "cnn_ner",
    "bilstm_ner",
    "cnn_vner",
    "bilstm_vner",
    "minilm_ner",
]


def log(text: str) -> None:
    print(text, flush=True)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    cli.add_system_arguments(p, ALL_SYSTEMS, REPO / "configs")
    p.add_argument("--train", type=Path, default=REPO / "corpus" / "train.spacy")
    p.add_argument("--dev", type=Path, default=REPO / "corpus" / "dev.spacy")
    cli.add_budget_arguments(p, seconds=90.0)
    p.add_argument("--output", type=Path, default=REPO / "metrics")
    p.add_argument("--training-dir", type=Path, default=REPO / "training" / "compare")
    cli.add_device_arguments(p)
    args = p.parse_args(argv)
    args.budget = cli.budget_from_args(p, args)
    cli.device_settings(args)
    for path in (args.train, args.dev):
        if not path.exists():
            p.error(f"{path} not found: run `spacy project run convert` first")
    return args


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    deps.require("plots", what="scripts/compare.py")
    device = device_info(args.gpu_id)
    settings = settings_from_args(
        args,
        train=args.train,
        dev=args.dev,
        out_dir=args.training_dir,
        cpu_infer=args.gpu_id < 0,
        measure_rss=False,  # one process for all runs: its peak RSS is no run's own
    )
    specs = parse_systems(args.systems, args.configs_dir, args.overrides)
    planned = plan_runs(specs, settings)
    command = sys.argv if argv is None else ["scripts/compare.py", *argv]
    meta = {
        "title": "Same data, same budget",
        "script": "scripts/compare.py",
        "command": "python " + " ".join(shlex.quote(a) for a in command),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": device["name"],
        "torch_threads": device["torch_threads"],
        "versions": package_versions(),
        "data": f"train `{args.train}`, dev `{args.dev}` (dev scores: model selection and report).",
        "budget": describe_plan(settings, specs),
        "f1_scale": "fraction",
    }
    args.output.mkdir(parents=True, exist_ok=True)
    json_path = args.output / "compare.json"
    rows = run_all(
        planned,
        lambda run: run_one(run, settings, log=log),
        # Write after each run so that partial results survive an interruption.
        lambda rows: reports.write_report(json_path, rows, meta, plot=False),
        log=log,
    )
    written = reports.write_report(json_path, rows, meta)
    log(json_path.with_suffix(".md").read_text(encoding="utf8"))
    for path in written:
        log(f"wrote {path}")
    return {"meta": meta, "rows": rows, "summary": reports.summarize(rows)}


if __name__ == "__main__":
    main()
