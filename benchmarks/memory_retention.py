"""RSS growth while streaming docs, to compare glibc malloc settings.

Run it once per environment, e.g.:

    python benchmarks/memory_retention.py
    MALLOC_MMAP_THRESHOLD_=1048576 python benchmarks/memory_retention.py

Trains a 1-epoch default `vanilla_ner` on the shipped WikiGold train split
(cached in --model), streams --n-docs generated docs (benchmarks/stress.py's
generator, pathological docs included) and prints RSS growth per 1,000 docs
after the first 2,000, RSS samples and docs/s as one JSON line.
"""
import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import stress  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", type=Path, default=Path("/tmp/spacy-vanilla-ner-memory-model"))
parser.add_argument("--n-docs", type=int, default=6000)
parser.add_argument("--batch-size", type=int, default=64)
args = parser.parse_args()
if not args.model.exists():
    stress.train_model(args.model, 1, 0)
out = stress.worker_stream(str(args.model), args.n_docs, 0, False, args.batch_size)
print(
    json.dumps(
        {
            "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
            "rss_growth_mib_per_1000_docs": out["rss_growth_mib_per_1000_docs"],
            "rss_mib": out["rss_mib"],
            "docs_per_second": out.get("docs_per_second"),
            "exceptions": out["exceptions"],
        }
    )
)
