#!/usr/bin/env python
"""int8 inference on CPU: dev F1 and tagging words/s of trained pipelines in float32 and with
`spacy-vanilla-ner.Int8Inference.v1`, side by side in one run.

    python benchmarks/int8.py --model transformer_vner=DIR --model cnn_vner=DIR2 --dev DEV.spacy
    python benchmarks/int8.py --runs benchmarks/runs/conll2003 \\
        --systems transformer_vner,cnn_vner --dev benchmarks/runs/conll2003/data/dev.spacy

Each `--model NAME=DIR` is a trained pipeline (repeat a NAME for several seeds); `--runs WORK_DIR
--systems A,B` takes `WORK_DIR/<system>/seed<N>/model-best` of a `benchmarks/conll2003.py`
run. Every pipeline is loaded as it is (float32) and, where it has a vanilla Transformer
encoder, once more with int8 inference (the load-time config of docs/reference.md). Each
variant tags `--dev` once for its F1, then the variants take turns at `nlp.pipe` over the dev
texts (`--batch-size`), round after round, until each has been timed for `--seconds`, so that
drift and load from other processes hit all alike.

Writes `--output` (JSON) and a markdown table next to it (`.md`): per system and dtype, dev
F1 and words/s (mean ± std over its pipelines), the paired F1 change of int8, and words/s
relative to the first system in float32.
"""

import argparse
import shlex
import sys
from pathlib import Path
from timeit import default_timer
from typing import Any, Dict, List, Optional, Sequence, Tuple

from vanilla_ner_experiments.inference import gold_preproc, pipe_inputs, read_docs, score
from vanilla_ner_experiments.machine import device_info, package_versions
from vanilla_ner_experiments.reports import mean_std, table, write_results

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--model", action="append", default=[], help="NAME=DIR, a trained pipeline (repeatable)"
    )
    p.add_argument("--runs", type=Path, default=None, help="Work dir of a conll2003.py run")
    p.add_argument("--systems", default=None, help="With --runs: comma-separated systems")
    p.add_argument("--dev", type=Path, required=True, help="Dev corpus (.spacy)")
    p.add_argument("--batch-size", type=int, default=256, help="nlp.pipe batch size")
    p.add_argument("--seconds", type=float, default=10.0, help="Timed seconds per variant")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "int8.json")
    args = p.parse_args(argv)
    if bool(args.runs) != bool(args.systems):
        p.error("--runs and --systems go together")
    if not args.model and not args.runs:
        p.error("give --model NAME=DIR (repeatable) or --runs WORK_DIR --systems A,B")
    if not args.dev.exists():
        p.error(f"--dev {args.dev} not found")
    if args.batch_size < 1 or args.threads < 1 or args.seconds <= 0:
        p.error("--batch-size, --threads and --seconds must be positive")
    return args


def pipelines(args: argparse.Namespace) -> List[Tuple[str, Path]]:
    """(system, pipeline dir) in the order given, checked to exist."""
    found = []
    for item in args.model:
        name, sep, path = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--model expects NAME=DIR, got {item!r}")
        found.append((name, Path(path)))
    if args.runs:
        for system in [s.strip() for s in args.systems.split(",") if s.strip()]:
            dirs = sorted((args.runs / system).glob("seed*/model-best"))
            if not dirs:
                where = args.runs / system
                raise SystemExit(f"no {where}/seed*/model-best: run conll2003.py first")
            found += [(system, d) for d in dirs]
    missing = [str(d) for _, d in found if not (d / "config.cfg").exists()]
    if missing:
        raise SystemExit(f"not a saved pipeline (no config.cfg): {', '.join(missing)}")
    return found


def has_vanilla_encoder(nlp: Any) -> bool:
    from spacy_vanilla_ner import set_inference_dtype

    try:
        set_inference_dtype(nlp, "float32")  # a no-op where it applies
    except ValueError:
        return False
    return True


def load_variants(found: List[Tuple[str, Path]], dev: Path) -> List[Dict[str, Any]]:
    import spacy

    from spacy_vanilla_ner.models.quantization import INT8_LOAD_CONFIG

    variants = []
    for system, path in found:
        plain = spacy.load(path)
        dtypes = ["float32", "int8"] if has_vanilla_encoder(plain) else ["float32"]
        for dtype in dtypes:
            nlp = plain if dtype == "float32" else spacy.load(path, config=INT8_LOAD_CONFIG)
            gold = read_docs(dev, nlp.vocab)
            keep = gold_preproc(nlp)
            variants.append(
                {
                    "system": system,
                    "path": str(path),
                    "dtype": dtype,
                    "nlp": nlp,
                    "gold": gold,
                    "keep_tokens": keep,
                    "texts": None if keep else pipe_inputs(nlp, gold, False),
                    "words": sum(len(d) for d in gold),
                    "seconds": 0.0,
                    "timed_words": 0,
                }
            )
    return variants


def run_pass(variant: Dict[str, Any], batch_size: int) -> Tuple[List[Any], float]:
    nlp = variant["nlp"]
    inputs = variant["texts"] or pipe_inputs(nlp, variant["gold"], True)
    started = default_timer()
    docs = list(nlp.pipe(inputs, batch_size=batch_size))
    return docs, default_timer() - started


def measure(variants: List[Dict[str, Any]], batch_size: int, seconds: float) -> None:
    for v in variants:  # the first pass: F1, and warm-up
        docs, _ = run_pass(v, batch_size)
        v["ents_f"] = score(docs, v["gold"])["ents_f"]
        print(f"{v['system']} {v['dtype']} {v['path']}: F1 {v['ents_f']:.4f}", flush=True)
    while min(v["seconds"] for v in variants) < seconds:
        for v in variants:
            _, took = run_pass(v, batch_size)
            v["seconds"] += took
            v["timed_words"] += v["words"]


def summarise(variants: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    rows: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    for v in variants:
        rows.setdefault((v["system"], v["dtype"]), []).append(v)
    fp32_f1 = {(v["system"], v["path"]): v["ents_f"] for v in variants if v["dtype"] == "float32"}
    out = []
    for (system, dtype), vs in rows.items():
        deltas = [v["ents_f"] - fp32_f1[(system, v["path"])] for v in vs]
        out.append(
            {
                "system": system,
                "dtype": dtype,
                "pipelines": [v["path"] for v in vs],
                "ents_f": mean_std([v["ents_f"] for v in vs]),
                "ents_f_change": mean_std(deltas) if dtype != "float32" else None,
                "wps": mean_std([v["timed_words"] / v["seconds"] for v in vs]),
                "per_pipeline": [
                    {
                        "path": v["path"],
                        "ents_f": v["ents_f"],
                        "wps": v["timed_words"] / v["seconds"],
                        "timed_seconds": v["seconds"],
                    }
                    for v in vs
                ],
            }
        )
    return out


def _stat(stat: Optional[Dict[str, Any]], scale: float, digits: int, sign: str = "") -> str:
    if stat is None:
        return "–"
    text = f"{stat['mean'] * scale:{sign},.{digits}f}"
    return text + (f" ± {stat['std'] * scale:,.{digits}f}" if stat["std"] else "")


def markdown(rows: List[Dict[str, Any]], meta: Dict[str, Any]) -> str:
    first = rows[0]["wps"]["mean"]
    lines = [
        [
            f"`{r['system']}`",
            r["dtype"],
            str(len(r["pipelines"])),
            _stat(r["ents_f"], 100, 2),
            _stat(r["ents_f_change"], 100, 2, "+"),
            _stat(r["wps"], 1, 0),
            f"{r['wps']['mean'] / first:.2f}×",
        ]
        for r in rows
    ]
    header = ["System", "inference", "pipelines", "dev F1", "F1 change", "words/s", "vs first"]
    return "\n".join(
        [
            "# int8 inference on CPU",
            "",
            f"`{meta['command']}`",
            "",
            f"{meta['device']}, {meta['torch_threads']} torch thread(s); dev `{meta['dev']}`, "
            f"nlp.pipe batch size {meta['batch_size']}, each variant timed for at least "
            f"{meta['seconds']:g} s in turns.",
            "",
            *table(header, lines),
            "",
        ]
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    import torch

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    found = pipelines(args)
    variants = load_variants(found, args.dev)
    measure(variants, args.batch_size, args.seconds)
    rows = summarise(variants)
    meta = {
        "script": "benchmarks/int8.py",
        "command": "python " + shlex.join(["benchmarks/int8.py", *argv]),
        "device": device_info(-1)["name"],
        "torch_threads": args.threads,
        "versions": package_versions(),
        "dev": str(args.dev),
        "batch_size": args.batch_size,
        "seconds": args.seconds,
        "quantized_engine": torch.backends.quantized.engine,
    }
    write_results(args.output, {"meta": meta, "rows": rows}, markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
