"""Runs of a comparison: every system once per seed, each a fresh pipeline, trained under the
budget by `budget.train_config`, then its best checkpoint timed (`nlp.pipe` over dev) and,
with a test file, scored once on it. Used by `scripts/compare.py` and
`benchmarks/conll2003.py`; the benchmark runs each in a fresh process, `compare` in its own.
"""

import traceback
from dataclasses import dataclass, field
from pathlib import Path
from timeit import default_timer as timer
from typing import Any, Callable, Dict, List, Optional, Sequence

from .budget import Budget, train_config
from .memory import peak_rss_mib
from .systems import (
    REFERENCE_LABEL,
    SkipSystem,
    SystemSpec,
    check_available,
    device_overrides,
    reference_budget,
)


@dataclass
class RunSettings:
    """What every run of one comparison shares."""

    budget: Budget
    seeds: List[int]
    train: Path  # .spacy
    dev: Path  # .spacy
    out_dir: Path  # checkpoints: out_dir/<system>/seed<N>/model-best
    reference_steps: int = 500
    test: Optional[Path] = None
    eval_frequency: Optional[int] = None
    gpu_id: int = -1
    gpu_allocator: str = "auto"
    mixed_precision: bool = False
    transformer_model: str = "auto"
    infer_batch_size: int = 256
    infer_limit: Optional[int] = None
    cpu_infer: bool = True
    threads: Optional[int] = None
    profile: Sequence[str] = field(default_factory=tuple)  # systems to profile; "all"
    measure_rss: bool = True  # peak RSS is per run only with a process per run


def settings_from_args(args: Any, **specific: Any) -> RunSettings:
    """RunSettings from the options that `cli` adds to both scripts (budget,
    seeds, reference steps, evaluation frequency, device), plus each script's
    own (`specific`: corpora, output directory, inference settings)."""
    return RunSettings(
        budget=args.budget,
        seeds=args.seeds,
        reference_steps=args.reference_steps,
        eval_frequency=args.eval_frequency,
        gpu_id=args.gpu_id,
        gpu_allocator=args.gpu_allocator,
        mixed_precision=args.mixed_precision,
        transformer_model=args.transformer_model,
        **specific,
    )


@dataclass
class Run:
    spec: SystemSpec
    seed: int
    budget: Budget


def plan_runs(specs: Sequence[SystemSpec], settings: RunSettings) -> List[Any]:
    """One Run per system and seed; a pretrained reference runs once (first seed) on its steps
    budget. Systems that cannot run here: a reference gives a skipped row (dict) with the
    reason; any other system stops the command before training starts (SystemExit)."""
    planned: List[Any] = []
    for spec in specs:
        try:
            if spec.reference and settings.reference_steps <= 0:
                raise SkipSystem("--reference-steps 0")
            check_available(spec, settings.transformer_model)
        except SkipSystem as e:
            if not spec.reference:
                raise SystemExit(
                    f"Cannot run {spec.name}: {e}. Use --configs-dir, or NAME=CONFIG_PATH in "
                    "--systems."
                ) from None
            planned.append(base_row(spec, settings.seeds[0], None, "skipped", reason=str(e)))
            continue
        if spec.reference:
            planned.append(Run(spec, settings.seeds[0], reference_budget(settings.reference_steps)))
        else:
            planned.extend(Run(spec, seed, settings.budget) for seed in settings.seeds)
    return planned


def describe_plan(settings: RunSettings, specs: Sequence[SystemSpec]) -> str:
    """The budget line of a report: the budget, the seeds and the reference's budget."""
    text = f"{settings.budget.describe()} per run; seeds {', '.join(map(str, settings.seeds))}"
    references = [f"`{s.name}`" for s in specs if s.reference]
    if references and settings.reference_steps > 0:
        text += (
            f"; {', '.join(references)} ({REFERENCE_LABEL}): "
            f"{reference_budget(settings.reference_steps).describe()}, seed {settings.seeds[0]}"
        )
    return text + "."


def base_row(spec: SystemSpec, seed: int, budget: Optional[Budget], status: str, **extra):
    return {
        "system": spec.name,
        "label": spec.label,
        "config": str(spec.config),
        "seed": seed,
        "mode": budget.mode.value if budget else None,
        "status": status,
        **extra,
    }


def run_one(run: Run, settings: RunSettings, log: Callable[[str], None] = print):
    """Train one system with one seed, then time inference and score the test file."""
    import torch

    from .inference import score_file, time_inference

    started = timer()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    spec = run.spec
    overrides: Dict[str, Any] = {"paths.train": str(settings.train), "paths.dev": str(settings.dev)}
    if settings.eval_frequency:
        overrides["training.eval_frequency"] = settings.eval_frequency
    overrides.update(
        device_overrides(
            spec.config, settings.gpu_id, settings.gpu_allocator, settings.mixed_precision
        )
    )
    overrides.update(spec.overrides)
    out_dir = settings.out_dir / spec.name / f"seed{run.seed}"

    def tagged(line: str) -> None:
        log(f"[{spec.name} seed {run.seed}] {line}")

    row = base_row(spec, run.seed, run.budget, "ok", overrides=overrides)
    row.update(
        train_config(
            spec.config,
            run.budget,
            seed=run.seed,
            out_dir=out_dir,
            overrides=overrides,
            gpu_id=settings.gpu_id,
            log=tagged,
        )
    )
    model_dir = row["model_dir"]
    row["gpu_wps"] = row["cpu_wps"] = None
    profiled = spec.name in settings.profile or "all" in settings.profile
    devices = [settings.gpu_id] if settings.gpu_id >= 0 else []
    if settings.cpu_infer or settings.gpu_id < 0:
        devices.append(-1)
    for gpu_id in devices:
        device = "gpu" if gpu_id >= 0 else "cpu"
        timing = time_inference(
            model_dir,
            settings.dev,
            settings.infer_batch_size,
            gpu_id,
            settings.infer_limit,
            profile_to=out_dir / "profile.txt" if profiled and device == "cpu" else None,
        )
        row.update({f"{device}_wps": timing["wps"], f"{device}_infer": timing})
        tagged(
            f"{device.upper()} inference: {timing['wps']:,.0f} words/s, "
            f"dev F1 {100 * timing['ents_f']:.2f}"
        )
    if settings.test is not None:
        test = score_file(model_dir, settings.test, settings.infer_batch_size, settings.gpu_id)
        row.update({f"test_ents_{k}": test[f"ents_{k}"] for k in ("f", "p", "r", "per_type")})
        tagged(f"test F1 {100 * test['ents_f']:.2f}")
    row.update(
        torch_threads=torch.get_num_threads(),
        peak_rss_mb=peak_rss_mib() if settings.measure_rss else None,
        infer_batch_size=settings.infer_batch_size,
        total_seconds=round(timer() - started, 3),
    )
    return row


def run_all(
    planned: Sequence[Any],
    execute: Callable[[Run], Dict[str, Any]],
    on_row: Callable[[List[Dict[str, Any]]], None],
    log: Callable[[str], None] = print,
) -> List[Dict[str, Any]]:
    """Execute every planned run (skipped rows pass through); a failing run gives a failed
    row and does not stop the others. `on_row` gets all rows so far after each run, so that
    a long comparison that is cut off keeps its results."""
    rows: List[Dict[str, Any]] = []
    for item in planned:
        if isinstance(item, Run):
            log(f"=== {item.spec.name}, seed {item.seed}: {item.budget.describe()} ===")
            try:
                row = execute(item)
            except SkipSystem as e:
                row = base_row(item.spec, item.seed, item.budget, "skipped", reason=str(e))
            except Exception as e:  # one failing run must not lose the others' results
                traceback.print_exc()
                error = f"{type(e).__name__}: {e}"
                row = base_row(item.spec, item.seed, item.budget, "failed", error=error)
        else:
            row = item
            log(f"=== {row['system']}: skipped: {row['reason']} ===")
        rows.append(row)
        on_row(rows)
    return rows
