"""Why a vanilla Transformer NER model won't overfit: train the package's
recipe, the forum question's setup, the recipe with one fix removed at a time
and spaCy's BiLSTM and CNN encoders on the same small subsets of a CoNLL file,
with the same batches, steps and optimizer, and compare loss and train F1.

Usage (from the repository root):

    python scripts/diagnose.py --train assets/wikigold/train.conll --output metrics --gpu-id -1
    python scripts/diagnose.py ... --sizes 100,1000 --steps 300,1500 --seed 0

Writes OUTPUT/diagnose.json (the table: a list of rows, one per variant and
subset size), OUTPUT/diagnose_curves.json (settings and per-evaluation curves),
both rewritten after every run so an interrupted run keeps what it finished,
and OUTPUT/diagnose.png (training loss and train entity F1 against steps, a
column per subset size).
The harness is `vanilla_ner_experiments.diagnose`; the findings are in
docs/why-vanilla-transformers-fail.md. The plot needs matplotlib (the `[plots]` extra),
checked before any training starts.
"""

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from vanilla_ner_experiments import deps
from vanilla_ner_experiments.diagnose import (
    ALL_VARIANTS,
    FIXES,
    RunResult,
    RunSettings,
    encode_docs,
    run_variant,
    word_only_ents_f,
)
from vanilla_ner_experiments.plots import write_diagnose

# Sizes above FULL_UP_TO run only these variants by default (CPU budget: the
# whole default run must fit in 10 minutes on 2 cores).
DEFAULT_LARGE_VARIANTS = (
    "recipe",
    "forum_setup",
    "recipe_without_time_major",
    "recipe_without_positions",
    "recipe_without_embed_scale",
    "spacy_bilstm",
)
app = typer.Typer(add_completion=False)


def _int_list(value: str, what: str) -> List[int]:
    try:
        items = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"{what} must be comma-separated integers, got {value!r}"
        ) from None
    if not items or any(v < 1 for v in items):
        raise typer.BadParameter(f"{what} must be positive integers, got {value!r}")
    return items


def _names(value: str, what: str) -> List[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in ALL_VARIANTS]
    if unknown:
        raise typer.BadParameter(f"unknown {what} {unknown}; choose from {list(ALL_VARIANTS)}")
    return names


def format_row(row: dict) -> str:
    steps = "-" if row["steps_to_99"] is None else str(row["steps_to_99"])
    return (
        f"| {row['name']:<28} | {row['n_sentences']:>5} | {row['final_train_loss']:>10.2f} | "
        f"{row['train_ents_f']:>6.3f} | {row['best_train_ents_f']:>6.3f} | {steps:>11} | "
        f"{row['seconds']:>7.1f} |"
    )


TABLE_HEADER = (
    "| variant                      |     n | final loss | F1     | best F1 | steps to 99 "
    "| seconds |\n"
    "|------------------------------|------:|-----------:|-------:|--------:|------------:"
    "|--------:|"
)


@app.command()
def main(
    train: Path = typer.Option(
        ...,
        "--train",
        exists=True,
        dir_okay=False,
        help="CoNLL-style NER file (WikiGold, CoNLL-2003)",
    ),
    output: Path = typer.Option(
        Path("metrics"), "--output", help="Folder for diagnose.json and diagnose.png"
    ),
    gpu_id: int = typer.Option(-1, "--gpu-id", help="GPU id, or -1 for CPU"),
    sizes: str = typer.Option(
        "100,1000", "--sizes", help="Subset sizes: the first N sentences of --train"
    ),
    steps: Optional[str] = typer.Option(
        None,
        "--steps",
        help="Optimizer steps: one number for every size, or one per size. "
        "Default: 300 for <= 100 sentences, 1500 above",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for init, dropout and the batch order"),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Sentences per batch"),
    eval_every: Optional[int] = typer.Option(
        None,
        "--eval-every",
        min=1,
        help="Steps between train-F1 evaluations. Default: steps / 12, a multiple of 25",
    ),
    width: int = typer.Option(64, "--width", min=8),
    depth: int = typer.Option(2, "--depth", min=1),
    n_heads: int = typer.Option(4, "--heads", min=1),
    learn_rate: float = typer.Option(1e-3, "--learn-rate"),
    variants: str = typer.Option(
        ",".join(ALL_VARIANTS), "--variants", help="Variants for sizes <= --full-up-to"
    ),
    large_variants: str = typer.Option(
        ",".join(DEFAULT_LARGE_VARIANTS),
        "--large-variants",
        help="Variants for sizes > --full-up-to",
    ),
    full_up_to: int = typer.Option(100, "--full-up-to", help="Largest size that runs --variants"),
) -> None:
    """Train each variant on the first N sentences and compare how far and how
    fast it fits its training data."""
    deps.require("plots", what="scripts/diagnose.py")
    import spacy
    import torch

    from spacy_vanilla_ner.convert import conll_to_docs

    size_list = _int_list(sizes, "--sizes")
    if steps is None:
        step_list = [300 if n <= 100 else 1500 for n in size_list]
    else:
        step_list = _int_list(steps, "--steps")
        if len(step_list) == 1:
            step_list = step_list * len(size_list)
        elif len(step_list) != len(size_list):
            raise typer.BadParameter(f"--steps needs 1 or {len(size_list)} values, got {steps!r}")
    small_names, large_names = _names(variants, "variants"), _names(large_variants, "variants")
    if gpu_id >= 0:
        if not torch.cuda.is_available():
            typer.echo(f"--gpu-id {gpu_id}: CUDA is not available to torch", err=True)
            raise typer.Exit(1)
        spacy.require_gpu(gpu_id)  # thinc ops for the spaCy variants
        device = f"cuda:{gpu_id}"
    else:
        device = "cpu"
    docs_all = conll_to_docs(train, spacy.blank("en").vocab, n_sents=1, limit=max(size_list))
    if len(docs_all) < max(size_list):
        typer.echo(
            f"{train} has only {len(docs_all)} sentences; sizes above that use all of them",
            err=True,
        )
    output.mkdir(parents=True, exist_ok=True)
    json_path, png_path = output / "diagnose.json", output / "diagnose.png"
    curves_path = output / "diagnose_curves.json"
    eval_list = [eval_every or max(25, n_steps // 12 // 25 * 25) for n_steps in step_list]
    base = RunSettings(
        batch_size=batch_size,
        learn_rate=learn_rate,
        width=width,
        depth=depth,
        n_heads=n_heads,
        seed=seed,
        device=device,
    )
    meta = {
        "command": " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
        "train": str(train),
        "sizes": size_list,
        "steps": step_list,
        "variants": {str(n): (small_names if n <= full_up_to else large_names) for n in size_list},
        "batch_size": batch_size,
        "eval_every": eval_list,
        "learn_rate": learn_rate,
        "optimizer": "Adam(lr, betas=(0.9, 0.999), eps=1e-8), no weight decay, no clipping, "
        "no warmup "
        "(torch.optim.Adam for the harness, thinc Adam for the spaCy pipelines)",
        "width": width,
        "depth": depth,
        "n_heads": n_heads,
        "dropout": base.dropout,
        "seed": seed,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "spacy": spacy.__version__,
        "word_only_train_ents_f": {},
    }
    results: List[RunResult] = []
    started = time.perf_counter()

    def save() -> None:
        meta["total_seconds"] = round(time.perf_counter() - started, 1)
        # diagnose.json is the table (a list of rows); the settings and the
        # per-evaluation curves behind the plot go to diagnose_curves.json.
        rows = [r.row() for r in results]
        curves = {
            "settings": meta,
            "curves": [{"name": r.name, "n_sentences": r.n_sentences, **r.curve} for r in results],
        }
        json_path.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf8")
        curves_path.write_text(json.dumps(curves, indent=2) + "\n", encoding="utf8")

    for n, n_steps, n_eval in zip(size_list, step_list, eval_list):
        docs = docs_all[:n]
        names = small_names if n <= full_up_to else large_names
        settings = RunSettings(**{**base.__dict__, "steps": n_steps, "eval_every": n_eval})
        typer.echo(
            f"\n== first {len(docs)} sentences: {n_steps} steps of {batch_size}, "
            f"{len(names)} variants =="
        )
        word_only = word_only_ents_f(encode_docs(docs))
        meta["word_only_train_ents_f"][str(n)] = word_only
        typer.echo(
            "A lookup table of each word's tags (no sentence context) scores train F1 "
            f"{word_only:.3f}."
        )
        typer.echo(TABLE_HEADER)
        for name in names:
            result = run_variant(name, docs, settings, log=lambda line: typer.echo(line))
            results.append(result)
            typer.echo(format_row(result.row()))
            save()
    save()
    write_diagnose(results, size_list, png_path, meta, list(FIXES))
    typer.echo(f"\n{TABLE_HEADER}")
    for r in results:
        typer.echo(format_row(r.row()))
    typer.echo(
        f"\nTotal {meta['total_seconds']:.0f}s on {device} "
        f"({meta['torch_threads']} torch threads). "
        f"Wrote {json_path} and {png_path}"
    )


if __name__ == "__main__":
    app()
