"""RSS while streaming docs on CPU: the package's GELU vs torch's oneDNN GELU,
under glibc malloc settings, side by side in one run.

    python benchmarks/memory_retention.py [--n-docs 10000] [--model PATH]
        [--output benchmarks/results/memory_retention.json]

Trains a default `vanilla_ner` for 30 updates (about one epoch) on the shipped WikiGold train split
(unless --model is given), then streams the same --n-docs generated docs
(benchmarks/stress.py's generator, pathological docs included) once per setup,
each in a fresh process:

- package: the encoder as shipped (cpu_workarounds.GELU keeps GELU off oneDNN);
- torch nn.GELU: the encoder with `torch.nn.GELU`, which torch runs through
  oneDNN on CPU (what 0.1.0 development builds did);
- the same with ONEDNN_PRIMITIVE_CACHE_CAPACITY=0 (no per-shape primitive
  cache) and with MALLOC_MMAP_THRESHOLD_=1048576 (tensors >= 1 MiB mmapped).

Prints RSS growth per 1,000 docs after the first 2,000 (least-squares slope),
RSS after 1,000 docs and at the end, and docs/s; writes the JSON to --output.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).parent))
import stress  # noqa: E402

DEFAULT_OUTPUT = stress.REPO / "benchmarks" / "results" / "memory_retention.json"
SETUPS = [
    # (name, GELU implementation, extra environment)
    ("package", "package", {}),
    ("torch nn.GELU (oneDNN)", "torch", {}),
    (
        "torch nn.GELU, ONEDNN_PRIMITIVE_CACHE_CAPACITY=0",
        "torch",
        {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "0"},
    ),
    (
        "torch nn.GELU, MALLOC_MMAP_THRESHOLD_=1048576",
        "torch",
        {"MALLOC_MMAP_THRESHOLD_": "1048576"},
    ),
]


def worker(model: str, gelu: str, n_docs: int, batch_size: int) -> Dict:
    if gelu == "torch":
        import torch

        from spacy_vanilla_ner.models import torch_encoder

        # Only consulted when the pipeline is built, i.e. by spacy.load below.
        torch_encoder.ACTIVATIONS["gelu"] = torch.nn.GELU
    out = stress.worker_stream(model, n_docs, 0, False, batch_size)
    return {
        k: out[k]
        for k in (
            "docs",
            "exceptions",
            "seconds",
            "docs_per_second",
            "rss_mib",
            "rss_growth_mib_per_1000_docs",
        )
    }


def run_setup(model: Path, gelu: str, env: Dict[str, str], n_docs: int, batch_size: int) -> Dict:
    result = subprocess.run(
        [sys.executable, __file__, "--_worker", str(model), gelu, str(n_docs), str(batch_size)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=1800,
    )
    if result.returncode != 0:
        raise RuntimeError(f"worker ({gelu}, {env}) failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def print_table(rows: List[Dict]) -> None:
    header = ["setup", "RSS growth / 1k docs", "RSS at 1k docs", "RSS at end", "docs/s"]
    lines = [
        [
            row["setup"],
            f"{row['rss_growth_mib_per_1000_docs']:+.1f} MiB",
            f"{row['rss_mib'][0][1]:,.0f} MiB",
            f"{row['rss_mib'][-1][1]:,.0f} MiB",
            f"{row['docs_per_second']:.0f}",
        ]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header] + lines) for i in range(len(header))]
    for line in [header, ["-" * w for w in widths]] + lines:
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths)) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", type=Path, default=None, help="Trained pipeline; default: train one"
    )
    parser.add_argument("--n-docs", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--_worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._worker:
        model, gelu, n_docs, batch_size = args._worker
        print(json.dumps(worker(model, gelu, int(n_docs), int(batch_size))))
        return
    if args.n_docs < 4_000:
        parser.error("--n-docs must be at least 4000 (growth is fitted after the first 2,000 docs)")
    if args.model is not None and not (args.model / "config.cfg").exists():
        parser.error(
            f"--model {args.model} is not a saved pipeline (no config.cfg); "
            "leave it out to train one"
        )

    import spacy
    import torch

    start = time.time()
    report: Dict = {
        "command": "python " + " ".join([os.path.relpath(__file__, stress.REPO)] + sys.argv[1:]),
        "python": platform.python_version(),
        "glibc": "-".join(platform.libc_ver()),
        "versions": {"spacy": spacy.__version__, "torch": torch.__version__},
        "torch_threads": torch.get_num_threads(),
        "n_docs": args.n_docs,
        "batch_size": args.batch_size,
        "setups": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            model = Path(tmp) / "model"
            print("Training a vanilla_ner for 30 updates on the WikiGold train split...")
            report["model"] = {"path": None, "trained_here": stress.train_model(model, 30, 0)}
        else:
            report["model"] = {"path": str(model)}
        for name, gelu, env in SETUPS:
            print(f"Streaming {args.n_docs:,} docs: {name}...")
            row = run_setup(model, gelu, env, args.n_docs, args.batch_size)
            report["setups"].append({"setup": name, "gelu": gelu, "env": env, **row})
    report["total_seconds"] = round(time.time() - start, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf8")
    print()
    print_table(report["setups"])
    print(f"\nWrote {args.output}")


if __name__ == "__main__":
    main()
