#!/usr/bin/env python
"""Does memory stay flat while a pipeline trains? RSS (and glibc's heap) every few updates of
spaCy's own training loop, for several configs, each in a fresh process.

    python benchmarks/training_memory.py --systems transformer_vner,cnn_vner --steps 20000
    python benchmarks/training_memory.py --train TRAIN.conll --dev DEV.conll --n-sents 1

For each system (`--systems NAME` is `configs/NAME.cfg`, `NAME=PATH` any config), in a process of
its own: initializes the pipeline as `spacy train` does, then makes `--steps` updates with
spaCy's loop (the config's batcher, dropout and optimizer; epochs repeat), evaluating on
`--dev` every `--eval-frequency` updates as `spacy train` does. Every `--every` updates it
records the resident set size, its peak so far, the bytes glibc's malloc holds in use and free
(`mallinfo2`, where the C library has it), the strings in the vocab and the Python objects the
garbage collector tracks.

The verdict per system: RSS after `--steps` updates over RSS after `--reference-step` (2,000 by
default), and the growth per 1,000 updates after it (least-squares slope). Writes `--output`
(JSON) and a markdown table next to it (`.md`), and prints the table.
"""

import argparse
import gc
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).parent))
import throughput  # noqa: E402

from vanilla_ner_experiments import cli  # noqa: E402
from vanilla_ner_experiments.machine import device_info, package_versions  # noqa: E402
from vanilla_ner_experiments.memory import (  # noqa: E402
    mallinfo,
    peak_rss_mib,
    rss_mib,
    slope_per_1000,
)
from vanilla_ner_experiments.reports import table, write_results  # noqa: E402
from vanilla_ner_experiments.systems import parse_systems  # noqa: E402

REPO = throughput.REPO
DEFAULT_SYSTEMS = ["transformer_vner", "cnn_vner"]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--train", type=Path, default=throughput.WIKIGOLD / "train.conll")
    p.add_argument("--dev", type=Path, default=throughput.WIKIGOLD / "dev.conll")
    p.add_argument(
        "--n-sents", type=int, default=1, help="CoNLL input: sentences per doc (0 = per article)"
    )
    cli.add_system_arguments(p, DEFAULT_SYSTEMS, REPO / "configs")
    p.add_argument("--seed", type=int, default=0, help="training.seed (and system.seed)")
    p.add_argument("--steps", type=int, default=20_000, help="Updates per system")
    p.add_argument("--every", type=int, default=250, help="Record memory every N updates")
    p.add_argument(
        "--reference-step",
        type=int,
        default=2_000,
        help="The verdict compares RSS at --steps with RSS at this update",
    )
    p.add_argument(
        "--eval-frequency",
        type=int,
        default=1_000,
        help="Evaluate on --dev every N updates, as spacy train does (0: never)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="Systems trained at the same time, each in its process (memory does not depend "
        "on it; speed does)",
    )
    cli.add_device_arguments(p, transformer_model=False)
    p.add_argument(
        "--work-dir",
        type=Path,
        default=REPO / "benchmarks" / "runs" / "training_memory",
        help="Converted corpora (not committed)",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=REPO / "benchmarks" / "results" / "training_memory.json",
        help="JSON results; the .md is written next to it",
    )
    p.add_argument("--_child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if min(args.steps, args.every, args.threads, args.jobs) < 1:
        p.error("--steps, --every, --threads and --jobs must be positive")
    if not 0 < args.reference_step < args.steps:
        p.error("--reference-step must be between 0 and --steps")
    if args.eval_frequency < 0 or args.n_sents < 0:
        p.error("--eval-frequency and --n-sents must not be negative")
    args.host_only = False  # read by throughput.init_pipeline
    cli.device_settings(args)
    return args


def sample(step: int, started: float, nlp: Any, mallinfo: Any) -> Dict[str, Any]:
    point = {
        "step": step,
        "seconds": round(time.perf_counter() - started, 1),
        "rss_mib": round(rss_mib(), 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "strings": len(nlp.vocab.strings),
        "gc_objects": len(gc.get_objects()),
    }
    if mallinfo is not None:
        info = mallinfo()
        # In use by malloc's callers; free but kept in the heap; mmapped chunks (large blocks).
        point["malloc_in_use_mib"] = round((info.uordblks + info.hblkhd) / 2**20, 1)
        point["malloc_free_mib"] = round(info.fordblks / 2**20, 1)
        point["malloc_mmapped_mib"] = round(info.hblkhd / 2**20, 1)
    return point


def child(args: argparse.Namespace) -> Dict[str, Any]:
    """One system: train for --steps updates, sampling memory. RETURNS (dict): its row."""
    import torch
    from spacy.util import resolve_dot_names

    torch.set_num_threads(args.threads)
    spec = parse_systems(args.systems, args.configs_dir, args.overrides)[args._child]
    paths = {"train": args.train, "dev": args.dev}
    nlp, T, overrides = throughput.init_pipeline(spec, args, paths)
    (dev_corpus,) = resolve_dot_names(nlp.config.interpolate(), [T["dev_corpus"]])
    dev = list(dev_corpus(nlp)) if args.eval_frequency else []
    malloc_state = mallinfo()
    loop = throughput.training_loop(nlp, T)
    started = time.perf_counter()
    points = [sample(0, started, nlp, malloc_state)]
    words, evaluations = 0, []
    for step in range(1, args.steps + 1):
        batch, _info, _ = next(loop)
        words += sum(len(eg) for eg in batch)
        if args.eval_frequency and step % args.eval_frequency == 0:
            scores = nlp.evaluate(dev)
            evaluations.append({"step": step, "ents_f": scores.get("ents_f")})
        if step % args.every == 0:
            points.append(sample(step, started, nlp, malloc_state))
            print(
                f"[{spec.name}] step {step:,}: RSS {points[-1]['rss_mib']:,.0f} MiB",
                file=sys.stderr,
                flush=True,
            )
    return {
        "system": spec.name,
        "config": str(spec.config),
        "overrides": overrides,
        "words": words,
        "points": points,
        "evaluations": evaluations,
    }


def verdict(row: Dict[str, Any], reference_step: int) -> Dict[str, Any]:
    points = row["points"]
    ref = min(points, key=lambda p: abs(p["step"] - reference_step))
    last = points[-1]
    after = [(p["step"], p["rss_mib"]) for p in points if p["step"] >= ref["step"]]
    return {
        "reference_step": ref["step"],
        "rss_at_reference_mib": ref["rss_mib"],
        "last_step": last["step"],
        "rss_at_last_mib": last["rss_mib"],
        "rss_ratio": last["rss_mib"] / ref["rss_mib"],
        "growth_mib_per_1000_updates": slope_per_1000(after),
        "peak_rss_mib": last["peak_rss_mib"],
        "strings_growth": last["strings"] - ref["strings"],
        "words_per_update": row["words"] / last["step"],
    }


def markdown(rows: List[Dict[str, Any]], meta: Dict[str, Any]) -> str:
    header = [
        "System",
        "RSS at ref. update",
        "RSS at last update",
        "ratio",
        "growth / 1k updates",
        "peak RSS",
        "new strings",
        "words / update",
    ]
    lines = [
        [
            f"`{r['system']}`",
            f"{v['rss_at_reference_mib']:,.0f} MiB (update {v['reference_step']:,})",
            f"{v['rss_at_last_mib']:,.0f} MiB (update {v['last_step']:,})",
            f"{v['rss_ratio']:.3f}",
            f"{v['growth_mib_per_1000_updates']:+.1f} MiB",
            f"{v['peak_rss_mib']:,.0f} MiB",
            f"{v['strings_growth']:,}",
            f"{v['words_per_update']:,.0f}",
        ]
        for r in rows
        for v in [r["verdict"]]
    ]
    return "\n".join(
        [
            "# Training memory",
            "",
            f"`{meta['command']}`",
            "",
            f"{meta['device']}, {meta['torch_threads']} torch thread(s). {meta['data']}",
            "",
            *table(header, lines),
            "",
        ]
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args._child is not None:
        print(json.dumps(child(args)))
        return 0
    specs = parse_systems(args.systems, args.configs_dir, args.overrides)
    for spec in specs:
        if not spec.config.exists():
            raise SystemExit(f"config not found: {spec.config}")
    paths, data = throughput.corpus_paths(args)
    rows: List[Dict[str, Any]] = []
    running: List[Any] = []
    for i, spec in enumerate(specs):
        print(f"[{spec.name}] {args.steps:,} updates in a fresh process...", flush=True)
        command = [sys.executable, __file__, *argv, "--train", str(paths["train"])]
        command += ["--dev", str(paths["dev"]), "--_child", str(i)]
        running.append((spec, subprocess.Popen(command, stdout=subprocess.PIPE, text=True)))
        if len(running) >= args.jobs or i == len(specs) - 1:
            for spec_done, process in running:
                out, _ = process.communicate()
                if process.returncode != 0:
                    raise SystemExit(
                        f"[{spec_done.name}] failed (exit {process.returncode}); see its stderr"
                    )
                row = json.loads(out.strip().splitlines()[-1])
                row["verdict"] = verdict(row, args.reference_step)
                rows.append(row)
            running = []
    device = device_info(args.gpu_id)
    meta = {
        "script": "benchmarks/training_memory.py",
        "command": "python " + shlex.join(["benchmarks/training_memory.py", *argv]),
        "device": device["name"],
        "torch_threads": args.threads,
        "versions": package_versions(),
        "data": data,
        "settings": {
            k: getattr(args, k)
            for k in (
                "seed",
                "steps",
                "every",
                "reference_step",
                "eval_frequency",
                "n_sents",
                "jobs",
                "overrides",
            )
        },
    }
    write_results(args.output, {"meta": meta, "rows": rows}, markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
