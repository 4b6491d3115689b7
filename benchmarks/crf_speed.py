"""Speed of the CRF loss and gradient and of Viterbi decoding, on one thread:
milliseconds per call and words per second, on random batches shaped like
CoNLL-2003 sentences (4 labels, K = 17 tags; --labels 18 for OntoNotes' K = 73).

Usage:

    python benchmarks/crf_speed.py [--crf-docs 48] [--viterbi-docs 256] [--labels 4]
        [--repeats 50] [--seed 0] [--output benchmarks/results/crf_speed.json]

Timed, on the same batches every run (fixed seed):
- `crf_loss_and_gradient` on --crf-docs docs with complete gold tags (one
  training update's CRF work), and on the same docs with a quarter of them
  missing half their gold tags (those need the constrained partition too);
- `viterbi_batch` on --viterbi-docs docs (one `nlp.pipe` batch).

Sentence lengths are drawn from a gamma distribution (mean about 14 tokens,
clipped to 1..60); scores are log-softmax of random logits, transitions random.
Each call is timed --repeats times after two warm-up calls; the table gives the
median and the fastest. The BLAS and torch thread counts are set to 1, so the
numbers measure the host cost of the code, not the cores.
"""
# ruff: noqa: E402 (the thread counts are set before numpy loads BLAS)

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy

from spacy_vanilla_ner.tagging.biluo import Constraints, transition_mask
from spacy_vanilla_ner.tagging.crf import crf_loss_and_gradient
from spacy_vanilla_ner.tagging.viterbi import viterbi_batch
from vanilla_ner_experiments.machine import cpu_name, n_cpus, package_versions

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "crf_speed.json"


def sentence_lengths(rng: numpy.random.Generator, n: int) -> numpy.ndarray:
    return numpy.clip(numpy.round(rng.gamma(2.0, 7.0, size=n)), 1, 60).astype(int)


def log_softmax_scores(rng: numpy.random.Generator, n: int, k: int) -> numpy.ndarray:
    logits = rng.normal(size=(n, k)) * 3
    return logits - numpy.log(numpy.exp(logits).sum(axis=1, keepdims=True))


def valid_tags(rng: numpy.random.Generator, n: int, n_labels: int) -> numpy.ndarray:
    """A random tag sequence that obeys the BILUO rules."""
    allowed, allowed_start, allowed_end = transition_mask(n_labels)
    while True:
        tags = [int(rng.choice(numpy.flatnonzero(allowed_start)))]
        for _ in range(n - 1):
            tags.append(int(rng.choice(numpy.flatnonzero(allowed[tags[-1]]))))
        if allowed_end[tags[-1]]:
            return numpy.array(tags, dtype="int64")


def time_calls(call: Callable[[], object], repeats: int) -> List[float]:
    for _ in range(2):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crf-docs", type=int, default=48)
    parser.add_argument("--viterbi-docs", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--labels", type=int, default=4, help="entity labels (K = 1 + 4 labels)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    if args.labels < 1:
        parser.error("--labels must be at least 1")
    if "torch" in sys.modules:  # an implementation that runs on torch: one thread too
        sys.modules["torch"].set_num_threads(1)

    rng = numpy.random.default_rng(args.seed)
    k = 1 + 4 * args.labels
    constraints = Constraints(
        args.labels,
        rng.normal(size=(k, k)) * 0.3,
        rng.normal(size=k) * 0.3,
        rng.normal(size=k) * 0.3,
    )
    crf_lengths = sentence_lengths(rng, args.crf_docs)
    crf_scores = [log_softmax_scores(rng, n, k) for n in crf_lengths]
    golds = [valid_tags(rng, n, args.labels) for n in crf_lengths]
    partial = [gold.copy() for gold in golds]
    for gold in partial[::4]:
        gold[rng.random(len(gold)) < 0.5] = -1
    viterbi_lengths = sentence_lengths(rng, args.viterbi_docs)
    viterbi_scores = [log_softmax_scores(rng, n, k) for n in viterbi_lengths]

    cases: Dict[str, tuple] = {
        "crf_loss_and_gradient": (
            lambda: crf_loss_and_gradient(crf_scores, golds, constraints),
            crf_lengths,
        ),
        "crf_loss_and_gradient, missing tags": (
            lambda: crf_loss_and_gradient(crf_scores, partial, constraints),
            crf_lengths,
        ),
        "viterbi_batch": (lambda: viterbi_batch(viterbi_scores, constraints), viterbi_lengths),
    }
    rows = []
    for name, (call, lengths) in cases.items():
        times = time_calls(call, args.repeats)
        median = statistics.median(times)
        rows.append(
            {
                "name": name,
                "docs": len(lengths),
                "words": int(lengths.sum()),
                "longest": int(lengths.max()),
                "ms_median": median * 1000,
                "ms_min": min(times) * 1000,
                "words_per_s": lengths.sum() / median,
            }
        )
    print(
        f"{'call':38} {'docs':>5} {'words':>6} {'ms (median)':>12} {'ms (min)':>9} {'words/s':>10}"
    )
    for row in rows:
        print(
            f"{row['name']:38} {row['docs']:5d} {row['words']:6d} {row['ms_median']:12.2f} "
            f"{row['ms_min']:9.2f} {row['words_per_s']:10.0f}"
        )
    meta = {
        "command": "python " + " ".join(sys.argv),
        "repeats": args.repeats,
        "seed": args.seed,
        "labels": args.labels,
        "tags": k,
        "cpu": cpu_name(),
        "cpu_count": n_cpus(),
        "load_average": os.getloadavg()[0],
        "versions": package_versions(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"meta": meta, "results": rows}, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
