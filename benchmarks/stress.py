"""Stress run: stream >= 10,000 generated docs (>= 5 % pathological) through a
trained `vanilla_ner` pipeline and report exceptions, memory and repairs.

Usage:

    python benchmarks/stress.py [--model PATH] [--n-docs 10000] [--seed 0]
        [--output benchmarks/results/stress.json]

Without --model, a small pipeline (the default `vanilla_ner` config: 128 wide,
2 layers) is trained for 150 updates of 1,000 words (--steps, about 5 epochs) on the
shipped WikiGold train split, with the experiments' budget loop
(`vanilla_ner_experiments.budget`).

Reported:
- docs processed, exceptions (must be 0), docs whose output broke an invariant
  (text changed, entity outside the text, overlapping, on whitespace), how many
  were pathological (empty, whitespace-only, 5,000-char tokens, naughty
  strings, emoji/RTL/NUL/zero-width, very long docs), the longest doc;
- peak memory for one doc of 512 / 2,000 / 50,000 tokens, each in a fresh
  process: the rise of peak RSS (VmHWM) above the RSS after loading and warm-up,
  tracemalloc's peak (Python and numpy allocations; torch's CPU allocator is not
  traced) and, on GPU, torch.cuda.max_memory_allocated;
- RSS growth per 1,000 docs after warm-up, streaming with and without
  `nlp.memory_zone()` (each in a fresh process; slope of a least-squares fit
  over the samples after the first 2,000 docs);
- invalid BILUO argmax sequences repaired by the decoder (`VanillaNER.n_repaired`).
"""

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from vanilla_ner_experiments.memory import peak_rss_mib, rss_mib, slope_per_1000
from vanilla_ner_experiments.stress_docs import generate_docs

REPO = Path(__file__).resolve().parents[1]
WIKIGOLD = REPO / "assets" / "wikigold"
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "stress.json"
SINGLE_DOC_SIZES = (512, 2_000, 50_000)


def wikigold_sentences(split: str) -> List[List[str]]:
    """The words of each sentence of a shipped WikiGold split (the package's CoNLL reader)."""
    from spacy_vanilla_ner.convert import read_conll_ner

    articles = read_conll_ner(WIKIGOLD / f"{split}.conll")
    return [words for article in articles for words, _tags in article]


def stream(n_docs: int, seed: int) -> Iterator[Tuple[str, str]]:
    """(kind, text) of the generated stream: WikiGold dev and test sentences and
    pathological docs."""
    sentences = [" ".join(s) for s in wikigold_sentences("dev") + wikigold_sentences("test")]
    return generate_docs(n_docs, seed, sentences)


# --- model --------------------------------------------------------------------------------


def train_model(path: Path, steps: int, seed: int) -> Dict:
    """Train the default `vanilla_ner` (128 wide, 2 layers) on the shipped WikiGold train split
    for `steps` updates with the experiments' budget loop, and save it to `path`."""
    import spacy
    from spacy.tokens import DocBin

    from spacy_vanilla_ner.convert import conll_to_docs
    from vanilla_ner_experiments.budget import Budget, Mode, train_config

    nlp = spacy.blank("en")
    nlp.add_pipe("vanilla_ner")
    work = path.parent / f"{path.name}-training"
    work.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev"):
        docs = conll_to_docs(WIKIGOLD / f"{split}.conll", nlp.vocab)
        DocBin(docs=docs).to_disk(work / f"{split}.spacy")
    overrides = {
        "paths.train": str(work / "train.spacy"),
        "paths.dev": str(work / "dev.spacy"),
        "training.batcher.size.start": 1000,  # batches of 1,000 words from the start
    }
    row = train_config(
        nlp.config,
        Budget(Mode.STEPS, steps=steps),
        seed=seed,
        out_dir=work,
        overrides=overrides,
        log=lambda line: print(line, flush=True),
    )
    if path.exists():
        shutil.rmtree(path)
    shutil.move(row["model_dir"], path)
    return {
        "steps": row["steps"],
        "epochs": row["epochs"],
        "train_seconds": round(row["train_seconds"], 1),
        "dev_ents_f": round(row["dev_ents_f"], 4),
    }


# --- workers (each runs in its own process) -------------------------------------------------


def check_doc(doc, text: str, labels) -> Optional[str]:
    """The invariants every output doc must keep; RETURNS a problem or None."""
    if doc.text != text:
        return "text changed"
    last_end = 0
    for ent in doc.ents:
        if not 0 <= ent.start_char < ent.end_char <= len(text):
            return "entity outside the text"
        if ent.start < last_end:
            return "overlapping entities"
        if doc[ent.start].is_space or doc[ent.end - 1].is_space:
            return "entity on whitespace"
        if ent.label_ not in labels:
            return f"unknown label {ent.label_}"
        last_end = ent.end
    return None


def worker_stream(model: str, n_docs: int, seed: int, memory_zone: bool, batch_size: int) -> Dict:
    import spacy

    nlp = spacy.load(model)
    ner = nlp.get_pipe("vanilla_ner")
    labels = set(ner.labels)
    errors: List[str] = []

    def on_error(name, component, docs, e):
        errors.append(f"{name}: {type(e).__name__}: {e}"[:300])

    nlp.set_error_handler(on_error)
    stats = {"docs": 0, "pathological": 0, "invalid_outputs": 0, "entities": 0}
    kinds: Dict[str, int] = {}
    longest = {"tokens": 0, "chars": 0}
    problems: List[str] = []
    samples: List[Tuple[int, float]] = []
    strings_sizes: List[Tuple[int, int]] = []
    docs_iter = stream(n_docs, seed)
    chunk = 1_000
    start = time.time()
    for offset in range(0, n_docs, chunk):
        items = [next(docs_iter) for _ in range(min(chunk, n_docs - offset))]
        texts = [text for _, text in items]
        try:
            if memory_zone:
                with nlp.memory_zone():
                    outputs = [
                        (len(d), check_doc(d, t, labels), len(d.ents))
                        for d, t in zip(nlp.pipe(texts, batch_size=batch_size), texts)
                    ]
            else:
                outputs = [
                    (len(d), check_doc(d, t, labels), len(d.ents))
                    for d, t in zip(nlp.pipe(texts, batch_size=batch_size), texts)
                ]
        except Exception as e:  # noqa: BLE001 - counted and reported, not hidden
            errors.append(f"{type(e).__name__}: {e}"[:300])
            continue
        for (kind, text), (n_tokens, problem, n_ents) in zip(items, outputs):
            stats["docs"] += 1
            stats["entities"] += n_ents
            kinds[kind] = kinds.get(kind, 0) + 1
            stats["pathological"] += kind != "normal"
            if problem:
                stats["invalid_outputs"] += 1
                problems.append(f"{kind}: {problem}")
            if n_tokens > longest["tokens"]:
                longest = {"tokens": n_tokens, "chars": len(text)}
        gc.collect()
        samples.append((stats["docs"], rss_mib()))
        strings_sizes.append((stats["docs"], len(nlp.vocab.strings)))
    seconds = time.time() - start
    after_warmup = [p for p in samples if p[0] > 2_000]
    return {
        **stats,
        "exceptions": len(errors),
        "exception_messages": errors[:10],
        "problems": problems[:10],
        "kinds": kinds,
        "longest_doc": longest,
        "n_repaired": ner.n_repaired,
        "seconds": round(seconds, 1),
        "docs_per_second": round(stats["docs"] / seconds, 1),
        "rss_mib": [(x, round(y, 1)) for x, y in samples],
        "rss_growth_mib_per_1000_docs": round(slope_per_1000(after_warmup), 3),
        "string_store_sizes": strings_sizes,
        "string_store_growth_per_1000_docs": round(
            slope_per_1000([p for p in strings_sizes if p[0] > 2_000]), 1
        ),
    }


def worker_single(model: str, n_tokens: int) -> Dict:
    import spacy
    import torch
    from spacy.tokens import Doc

    nlp = spacy.load(model)
    words = [w for s in wikigold_sentences("dev") for w in s]
    words = (words * (n_tokens // len(words) + 1))[:n_tokens]
    nlp(Doc(nlp.vocab, words=words[:50]))  # warm-up
    gc.collect()
    base = rss_mib()
    peak_before = peak_rss_mib()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    doc = Doc(nlp.vocab, words=words)
    tracemalloc.start()
    start = time.time()
    doc = nlp(doc)
    seconds = time.time() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = peak_rss_mib()
    return {
        "tokens": len(doc),
        "entities": len(doc.ents),
        "seconds": round(seconds, 2),
        "rss_after_load_mib": round(base, 1),
        "peak_rss_mib": round(peak, 1),
        "peak_rss_increase_mib": round(peak - max(base, peak_before), 1),
        "tracemalloc_peak_mib": round(traced_peak / 2**20, 1),
        "cuda_max_allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)
        if cuda
        else None,
    }


def run_worker(args: List[str], timeout: float = 900) -> Dict:
    result = subprocess.run(
        [sys.executable, __file__, "--_worker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- main ---------------------------------------------------------------------------------


def print_table(report: Dict) -> None:
    plain, zone = report["stream"], report["stream_memory_zone"]
    rows = [
        ("docs processed (plain / memory_zone)", f"{plain['docs']:,} / {zone['docs']:,}"),
        ("exceptions (plain / memory_zone)", f"{plain['exceptions']} / {zone['exceptions']}"),
        (
            "outputs breaking an invariant",
            f"{plain['invalid_outputs']} / {zone['invalid_outputs']}",
        ),
        (
            "pathological docs",
            f"{plain['pathological']:,} ({100 * plain['pathological'] / plain['docs']:.1f} %)",
        ),
        ("  by kind", ", ".join(f"{k} {v}" for k, v in sorted(plain["kinds"].items()))),
        (
            "longest doc in stream",
            f"{plain['longest_doc']['tokens']:,} tokens / {plain['longest_doc']['chars']:,} chars",
        ),
        ("throughput (plain)", f"{plain['docs_per_second']} docs/s ({plain['seconds']} s)"),
        ("invalid BILUO argmax repaired (n_repaired)", f"{plain['n_repaired']:,} docs"),
        (
            "RSS growth / 1k docs after 2k, plain",
            f"{plain['rss_growth_mib_per_1000_docs']:+.3f} MiB",
        ),
        (
            "RSS growth / 1k docs after 2k, memory_zone",
            f"{zone['rss_growth_mib_per_1000_docs']:+.3f} MiB",
        ),
        (
            "StringStore growth / 1k docs, plain / zone",
            f"{plain['string_store_growth_per_1000_docs']:+.0f} / "
            f"{zone['string_store_growth_per_1000_docs']:+.0f} strings",
        ),
    ]
    for single in report["single_docs"]:
        rows.append(
            (
                f"one doc of {single['tokens']:,} tokens",
                f"peak RSS +{single['peak_rss_increase_mib']} MiB "
                f"(total {single['peak_rss_mib']}), "
                f"tracemalloc peak {single['tracemalloc_peak_mib']} MiB, {single['seconds']} s"
                + (
                    f", CUDA max {single['cuda_max_allocated_mib']} MiB"
                    if single["cuda_max_allocated_mib"]
                    else ""
                ),
            )
        )
    width = max(len(name) for name, _ in rows)
    print(f"{'measure'.ljust(width)} | value")
    print(f"{'-' * width}-|-{'-' * 40}")
    for name, value in rows:
        print(f"{name.ljust(width)} | {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", type=Path, default=None, help="Trained pipeline; default: train one"
    )
    parser.add_argument("--n-docs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--steps", type=int, default=150, help="Training updates when no --model is given"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--_worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._worker:
        kind, *rest = args._worker
        if kind == "stream":
            model, n_docs, seed, zone, batch_size = rest
            out = worker_stream(model, int(n_docs), int(seed), zone == "1", int(batch_size))
        else:
            out = worker_single(rest[0], int(rest[1]))
        print(json.dumps(out))
        return

    if args.n_docs < 4_000:
        parser.error("--n-docs must be at least 4000 (growth is fitted after the first 2,000 docs)")
    if args.model is not None and not (args.model / "config.cfg").exists():
        parser.error(
            f"--model {args.model} is not a saved pipeline (no config.cfg); "
            "leave it out to train one"
        )
    start = time.time()
    report: Dict = {
        "command": "python " + " ".join([os.path.relpath(__file__, REPO)] + sys.argv[1:]),
        "python": platform.python_version(),
        "n_docs": args.n_docs,
        "seed": args.seed,
        "batch_size": args.batch_size,
    }
    import spacy
    import torch

    report["versions"] = {"spacy": spacy.__version__, "torch": torch.__version__}
    report["torch_threads"] = torch.get_num_threads()
    report["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            model = Path(tmp) / "model"
            print(
                f"Training a small vanilla_ner on {WIKIGOLD / 'train.conll'} "
                f"({args.steps} updates)..."
            )
            report["model"] = {
                "path": None,
                "trained_here": train_model(model, args.steps, args.seed),
            }
        else:
            model = args.model
            report["model"] = {"path": str(args.model)}
        print(f"Streaming {args.n_docs:,} docs (plain)...")
        report["stream"] = run_worker(
            ["stream", str(model), str(args.n_docs), str(args.seed), "0", str(args.batch_size)]
        )
        print(f"Streaming {args.n_docs:,} docs (inside nlp.memory_zone(), per 1,000 docs)...")
        report["stream_memory_zone"] = run_worker(
            ["stream", str(model), str(args.n_docs), str(args.seed), "1", str(args.batch_size)]
        )
        report["single_docs"] = []
        for n in SINGLE_DOC_SIZES:
            print(f"One doc of {n:,} tokens...")
            report["single_docs"].append(run_worker(["single", str(model), str(n)]))
    report["total_seconds"] = round(time.time() - start, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf8")
    print()
    print_table(report)
    print(f"\nWrote {args.output}")
    failed = report["stream"]["exceptions"] + report["stream_memory_zone"]["exceptions"]
    failed += report["stream"]["invalid_outputs"] + report["stream_memory_zone"]["invalid_outputs"]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
