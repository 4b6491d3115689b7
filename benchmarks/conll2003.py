#!/usr/bin/env python
"""CoNLL-2003 NER benchmark: train several spaCy pipelines under the same budget, once per
seed, and record accuracy, speed and memory side by side in one run.

    python benchmarks/conll2003.py --mode seconds --seconds 120 --seeds 3
    python benchmarks/conll2003.py --mode converged --patience 5 --max-seconds 1500

The script

1. converts `--train` / `--dev` (and `--test`) CoNLL files (IOB tags) to `.spacy` files with
   `spacy_vanilla_ner.convert.conll_to_docs`, `--n-sents` sentences of one article per doc,
   into `--work-dir` (gitignored);
2. trains each system (`configs/<system>.cfg`) once per seed with
   `vanilla_ner_experiments.budget` (spaCy's own loop under the budget: `--mode seconds`,
   `steps` or `converged`; the rules, stated in the report, are `budget.RULES`: the clock
   counts training seconds only, the learning rate runs over the budget), evaluating on dev and
   keeping the best checkpoint (`<work-dir>/<system>/seed<N>/model-best`);
3. reloads the best checkpoint and times `nlp.pipe` over the dev docs, on the GPU (with
   `--gpu-id`) and on the CPU, with the same batch size: after a warm-up batch, three timed
   passes, of which the median gives the words/s;
4. with `--test`, scores the best checkpoint once on the test file.

A pretrained system (spacy-transformers, e.g. `minilm_ner`) is a reference: it trains for
`--reference-steps` updates with the first seed, and is skipped, with the reason in the report,
where spacy-transformers or its model is missing.

Each run (system and seed) is a fresh process, so that peak CPU RSS and peak GPU memory are its
own and a failure does not stop the others. Outputs: `--output` (JSON: one row per system and
seed, the mean ± std per system, the rules), and next to it a markdown report (`.md`) and plots
of dev F1 against training seconds and steps and of the loss (`_f1_seconds.png`,
`_f1_steps.png`, `_loss.png`).
"""

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from vanilla_ner_experiments import cli, deps, reports
from vanilla_ner_experiments.conll import convert_corpora
from vanilla_ner_experiments.machine import device_info, package_versions
from vanilla_ner_experiments.runner import (
    Run,
    RunSettings,
    describe_plan,
    plan_runs,
    run_all,
    run_one,
    settings_from_args,
)
from vanilla_ner_experiments.systems import parse_systems

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "conll2003"
DEFAULT_SYSTEMS = [
    "transformer_vner",
    "transformer_ner",
    "cnn_vner",
    "cnn_ner",
    "bilstm_ner",
    "minilm_ner",
]
# The fields every successful row has (checked before a row is written).
ROW_FIELDS = [
    "system",
    "seed",
    "mode",
    "config",
    "dev_ents_f",
    "dev_ents_p",
    "dev_ents_r",
    "dev_ents_per_type",
    "seconds_to_best",
    "train_seconds_to_best",
    "best_step",
    "steps",
    "words_trained",
    "epochs",
    "seconds",
    "train_seconds",
    "eval_seconds",
    "train_wps",
    "gpu_wps",
    "cpu_wps",
    "peak_gpu_mb",
    "peak_rss_mb",
    "device",
    "curve",
]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--train", type=Path, default=DEFAULT_DATA / "train.txt", help="CoNLL training file"
    )
    p.add_argument(
        "--dev",
        type=Path,
        default=DEFAULT_DATA / "valid.txt",
        help="CoNLL dev file (model selection)",
    )
    p.add_argument(
        "--test",
        type=Path,
        default=None,
        help="CoNLL test file, scored once with each best checkpoint",
    )
    cli.add_system_arguments(p, DEFAULT_SYSTEMS, REPO / "configs")
    cli.add_budget_arguments(p, seconds=450.0)
    p.add_argument(
        "--n-sents", type=int, default=10, help="Sentences per doc (0 = one doc per article)"
    )
    p.add_argument("--limit", type=int, default=None, help="Use only the first N training docs")
    p.add_argument("--dev-limit", type=int, default=None, help="Use only the first N dev docs")
    cli.add_device_arguments(p)
    p.add_argument(
        "--infer-batch-size", type=int, default=256, help="nlp.pipe batch size (docs), GPU and CPU"
    )
    p.add_argument(
        "--infer-limit", type=int, default=None, help="Time inference on the first N dev docs only"
    )
    p.add_argument("--no-cpu-infer", action="store_true", help="Skip the CPU inference timing")
    p.add_argument(
        "--profile",
        default="",
        metavar="SYSTEMS",
        help="Comma-separated systems (or 'all') to cProfile nlp.pipe on the CPU for, "
        "after the timed run; writes <work-dir>/<system>/seed<N>/profile.txt",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads for the CPU (default: torch's)",
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        default=REPO / "benchmarks" / "runs" / "conll2003",
        help="Converted data and checkpoints (not committed)",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=REPO / "benchmarks" / "results" / "conll2003.json",
        help="JSON results; .md and the .png plots are written next to it",
    )
    p.add_argument("--title", default="CoNLL-2003 benchmark", help="Title of the markdown report")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="Only rewrite the .md and .png from an existing --output JSON",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="Keep the finished runs of an --output written by the same command (a run "
        "that was cut off or failed); run only the others",
    )
    p.add_argument(
        "--no-isolate",
        action="store_true",
        help="Run every run in this process (peak memory is then cumulative)",
    )
    # Internal: one run in a child process.
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_seed", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--_row-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.report_only:
        args.budget = cli.budget_from_args(p, args)
    if args.n_sents < 0:
        p.error("--n-sents must be >= 0")
    cli.device_settings(args)
    return args


def run_settings(args: argparse.Namespace, data: Optional[Dict[str, Any]]) -> RunSettings:
    """The settings of every run; the corpora are the converted files of `data` (None: the
    CoNLL files, to check the systems before the conversion)."""
    paths = {"train": args.train, "dev": args.dev, "test": args.test}
    if data is not None:
        paths = {k: Path(data[k]["spacy"]) if k in data else None for k in paths}
    return settings_from_args(
        args,
        train=paths["train"],
        dev=paths["dev"],
        test=paths["test"],
        out_dir=args.work_dir,
        infer_batch_size=args.infer_batch_size,
        infer_limit=args.infer_limit,
        cpu_infer=not args.no_cpu_infer,
        threads=args.threads,
        profile=[s.strip() for s in args.profile.split(",") if s.strip()],
    )


def data_line(data: Dict[str, Any]) -> str:
    def split(name: str) -> str:
        info = data.get(name) or {}
        limit = f" (first {info['limit']} docs)" if info.get("limit") else ""
        return f"{name} {info.get('docs', 0):,} docs / {info.get('words', 0):,} words{limit}"

    per_doc = data.get("n_sents")
    per_doc = "one doc per article" if per_doc == 0 else f"{per_doc} sentences per doc"
    return ", ".join(split(s) for s in ("train", "dev", "test") if s in data) + f"; {per_doc}."


def child_main(args: argparse.Namespace) -> int:
    """One run (system --_child, seed --_seed) in this process; the row goes to --_row-out."""
    state = json.loads((args.work_dir / "state.json").read_text(encoding="utf8"))
    settings = run_settings(args, state["data"])
    specs = parse_systems(args.systems, args.configs_dir, args.overrides)
    planned = plan_runs([s for s in specs if s.name == args._child], settings)
    run = next(r for r in planned if isinstance(r, Run) and r.seed == args._seed)
    row = run_one(run, settings)
    args._row_out.write_text(json.dumps(row, default=reports.json_default), encoding="utf8")
    return 0


def run_child(run: Run, argv: List[str]) -> Dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        row_out = Path(tmp) / "row.json"
        internal = ["--_child", run.spec.name, "--_seed", str(run.seed), "--_row-out", str(row_out)]
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv, *internal])
        if proc.returncode != 0 or not row_out.exists():
            raise RuntimeError(
                f"the subprocess of {run.spec.name} seed {run.seed} exited with "
                f"code {proc.returncode}"
            )
        return json.loads(row_out.read_text(encoding="utf8"))


def finished_runs(output: Path, command: str) -> Dict[Tuple[str, int], Dict[str, Any]]:
    """The finished rows of an earlier `output`, by (system, seed), for --resume; the earlier
    run must have been the same command, or its rows would not be comparable."""
    if not output.exists():
        print(f"--resume: {output} does not exist yet; running everything", flush=True)
        return {}
    rows, meta = reports.load(output)
    if meta.get("command") != command:
        sys.exit(
            f"--resume: {output} was written by a different command:\n  {meta.get('command')}\n"
            f"this one is:\n  {command}\nRun the same command with --resume, or choose "
            "another --output."
        )
    return {(r["system"], r["seed"]): r for r in rows if r.get("status") == "ok"}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args._child:
        return child_main(args)
    deps.require("plots", what="benchmarks/conll2003.py")
    if args.report_only:
        rows, meta = reports.load(args.output)
        meta.setdefault("title", args.title)
        meta.setdefault("script", "benchmarks/conll2003.py")
        for path in reports.write_report(args.output, rows, meta, write_rows=False):
            print(f"Wrote {path}", flush=True)
        return 0
    specs = parse_systems(args.systems, args.configs_dir, args.overrides)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    device = device_info(args.gpu_id)
    versions = package_versions()
    print(f"Device: {device['name']}; versions: {versions}", flush=True)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    splits = [
        ("train", args.train, args.limit),
        ("dev", args.dev, args.dev_limit),
        ("test", args.test, None),
    ]
    plan_runs(specs, run_settings(args, None))  # a typo in --systems must not wait for the data
    data = convert_corpora(splits, args.work_dir / "data", args.n_sents)
    (args.work_dir / "state.json").write_text(json.dumps({"data": data}), encoding="utf8")
    settings = run_settings(args, data)
    shown = [a for a in argv if a != "--resume"]
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/conll2003.py", *shown])
    kept = finished_runs(args.output, command) if args.resume else {}
    meta = {
        "title": args.title,
        "script": "benchmarks/conll2003.py",
        "command": command,
        "device": device["name"],
        "torch_threads": device["torch_threads"],
        "versions": versions,
        "data": data_line(data),
        "budget": describe_plan(settings, specs),
        "f1_scale": "percent",
    }

    def execute(run: Run) -> Dict[str, Any]:
        if (run.spec.name, run.seed) in kept:
            print(f"Kept from {args.output}: {run.spec.name} seed {run.seed}", flush=True)
            return kept[(run.spec.name, run.seed)]
        row = run_one(run, settings) if args.no_isolate else run_child(run, argv)
        row.update(
            command=command, device=device["name"], device_info=device, versions=versions, data=data
        )
        absent = [k for k in ROW_FIELDS if k not in row]
        if absent:
            raise RuntimeError(f"internal: row without {absent}")
        return row

    rows = run_all(
        plan_runs(specs, settings),
        execute,
        lambda rows: reports.write_report(args.output, rows, meta, plot=False),
    )
    for path in reports.write_report(args.output, rows, meta):
        print(f"Wrote {path}", flush=True)
    failed = [f"{r['system']} seed {r['seed']}" for r in rows if r["status"] == "failed"]
    if failed:
        print(f"Failed: {failed}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
