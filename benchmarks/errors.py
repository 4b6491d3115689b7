#!/usr/bin/env python
"""Where trained NER pipelines go wrong: how well each fits its training data, and its dev
F1 on entities seen in training against unseen ones, side by side in one run.

    python benchmarks/errors.py \\
        --models ours=benchmarks/runs/X/transformer_vner/seed0/model-best,cnn=... \\
        --train benchmarks/runs/X/data/train.spacy --dev benchmarks/runs/X/data/dev.spacy \\
        --output benchmarks/results/errors.json

For each checkpoint: exact-span P/R/F (spaCy's NER scorer) on the first `--train-limit`
training docs, with the model in inference mode (dropout off): how far it fits its training
set; and on dev, over all entities and apart for those whose (text, label) is an entity of the
training set ("seen") and those it is not ("unseen"), as in Augenstein et al. 2017. A gold entity
counts for its own form, a prediction for the form it predicts. The pipeline gets what the
benchmark's evaluation gives it (the text, or the gold tokens where the config's dev corpus has
`gold_preproc = true`), and predictions are mapped onto the gold tokens as spaCy's scorer does,
so dev "all" is the benchmark's dev F1. Prints a markdown table and writes the JSON (and the
table as .md) to --output.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from vanilla_ner_experiments.errors import seen_unseen_prf, surface_forms
from vanilla_ner_experiments.inference import gold_preproc, load, pipe_inputs, read_docs
from vanilla_ner_experiments.machine import package_versions
from vanilla_ner_experiments.reports import mean_std

# (label, where in a row): the columns of the tables.
COLUMNS = [
    ("train F1 (fit)", ("train",)),
    ("dev F1", ("dev", "all")),
    ("dev seen F1", ("dev", "seen")),
    ("dev unseen F1", ("dev", "unseen")),
]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--models",
        required=True,
        help="Comma-separated NAME=MODEL_DIR (a saved pipeline, e.g. a model-best); name "
        "seeds of one system SYSTEM:SEED to get their mean ± std as well",
    )
    p.add_argument("--train", type=Path, required=True, help="Training docs (.spacy)")
    p.add_argument("--dev", type=Path, required=True, help="Dev docs (.spacy)")
    p.add_argument(
        "--train-limit",
        type=int,
        default=3000,
        help="Score the fit on the first N training docs (all of them go into 'seen')",
    )
    p.add_argument("--batch-size", type=int, default=256, help="nlp.pipe batch size (docs)")
    p.add_argument("--output", type=Path, default=None, help="JSON results (.md next to it)")
    args = p.parse_args(argv)
    models = {}
    for item in (m.strip() for m in args.models.split(",") if m.strip()):
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            p.error(f"--models: expected NAME=MODEL_DIR, got {item!r}")
        if name in models:
            p.error(f"--models: {name!r} is named twice")
        if not (Path(path) / "config.cfg").is_file():
            p.error(
                f"--models: {path} is not a saved pipeline (no config.cfg); give e.g. a model-best"
            )
        models[name] = Path(path)
    args.models = models
    for flag, path in (("--train", args.train), ("--dev", args.dev)):
        if not path.is_file():
            p.error(f"{flag}: {path} does not exist (a .spacy file, e.g. from the benchmark)")
    if args.train_limit < 1:
        p.error("--train-limit must be >= 1")
    return args


def predict(nlp: Any, gold: List[Any], batch_size: int) -> List[Any]:
    inputs = pipe_inputs(nlp, gold, keep_tokens=gold_preproc(nlp))
    return list(nlp.pipe(inputs, batch_size=batch_size))


def analyse(name: str, model_dir: Path, args: argparse.Namespace) -> Dict[str, Any]:
    nlp = load(model_dir, gpu_id=-1)
    train, dev = (_read(path, nlp.vocab) for path in (args.train, args.dev))
    fit = train[: args.train_limit]
    return {
        "system": name,
        "model": str(model_dir),
        "train_docs_scored": len(fit),
        "train": seen_unseen_prf(predict(nlp, fit, args.batch_size), fit, set())["all"],
        "dev": seen_unseen_prf(predict(nlp, dev, args.batch_size), dev, surface_forms(train)),
    }


def _read(path: Path, vocab: Any) -> List[Any]:
    try:
        return read_docs(path, vocab)
    except Exception as err:  # msgpack/zlib errors differ by how a file is broken
        sys.exit(f"Could not read {path} as a .spacy file (a DocBin): {err}")


def _f1(row: Dict[str, Any], where: Sequence[str]) -> float:
    part = row
    for key in where:
        part = part[key]
    return 100 * part["ents_f"]


def table(rows: List[Dict[str, Any]]) -> str:
    head = "| System | " + " | ".join(label for label, _ in COLUMNS) + " | unseen P / R |"
    lines = [head, "|---|" + "---:|" * (len(COLUMNS) + 1)]
    for r in rows:
        dev = r["dev"]
        cells = [f"{_f1(r, where):.2f}" for _, where in COLUMNS]
        cells[2] += f" ({dev['seen']['gold']})"
        cells[3] += f" ({dev['unseen']['gold']})"
        unseen = f"{100 * dev['unseen']['ents_p']:.2f} / {100 * dev['unseen']['ents_r']:.2f}"
        lines.append(f"| `{r['system']}` | " + " | ".join(cells) + f" | {unseen} |")
    n = rows[0]["train_docs_scored"] if rows else 0
    lines.append("")
    lines.append(
        f"Train F1 on the first {n} training docs, dropout off. In brackets: gold entities; "
        "'seen' = its (text, label) is an entity in the training set."
    )
    return "\n".join(lines)


def summary(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Mean ± std per system over the rows named SYSTEM:SEED (systems with 2+ rows)."""
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["system"].rpartition(":")[0] or r["system"], []).append(r)
    return [
        {
            "system": system,
            "n": len(runs),
            **{label: mean_std([_f1(r, where) for r in runs]) for label, where in COLUMNS},
        }
        for system, runs in groups.items()
        if len(runs) > 1
    ]


def summary_table(groups: List[Dict[str, Any]]) -> str:
    def cell(ms: Dict[str, Any]) -> str:
        return f"{ms['mean']:.2f} ± {ms['std']:.2f}"

    lines = [
        "| System (mean ± std) | runs | " + " | ".join(label for label, _ in COLUMNS) + " |",
        "|---|---:|" + "---:|" * len(COLUMNS),
    ]
    for g in groups:
        cells = " | ".join(cell(g[label]) for label, _ in COLUMNS)
        lines.append(f"| `{g['system']}` | {g['n']} | {cells} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    rows = []
    for name, model_dir in args.models.items():
        print(f"[{name}] scoring {model_dir}", file=sys.stderr, flush=True)
        rows.append(analyse(name, model_dir, args))
    groups = summary(rows)
    md = table(rows) + ("\n\n" + summary_table(groups) if groups else "")
    print(md)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        out = {
            "command": " ".join(sys.argv),
            "train": str(args.train),
            "dev": str(args.dev),
            "packages": package_versions(),
            "rows": rows,
            "summary": groups,
        }
        args.output.write_text(json.dumps(out, indent=2) + "\n", encoding="utf8")
        args.output.with_suffix(".md").write_text(md + "\n", encoding="utf8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
