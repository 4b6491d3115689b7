"""Stress run: stream >= 10,000 generated docs (>= 5 % pathological) through a
trained `vanilla_ner` pipeline and report exceptions, memory and repairs.

Usage:

    python benchmarks/stress.py [--model PATH] [--n-docs 10000] [--seed 0]
        [--output benchmarks/results/stress.json]

Without --model, a small pipeline (the default `vanilla_ner` config: 128 wide,
2 layers) is trained for 5 epochs (--epochs) on the shipped WikiGold train split.

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
import random
import resource
import string
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
WIKIGOLD = REPO / "assets" / "wikigold"
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "stress.json"
SINGLE_DOC_SIZES = (512, 2_000, 50_000)

# Used when spaCy's own test suite (which has the full list) is not installed.
NAUGHTY_FALLBACK = [
    r",./;'[]\-=",
    r'<>?:"{}|_+',
    "\u00ad\u0600\u0601\u0602\u0603\u0604\u0605\u061c\u06dd\u070f\u180e\u200b\u200c\u200d\u200e\u200f\u202a",
    "\ufffe",
    "Ω≈ç√∫˜µ≤≥÷",
    "田中さんにあげて下さい",
    "٠١٢٣٤٥٦٧٨٩",
    "𝐓𝐡𝐞 𝐪𝐮𝐢𝐜𝐤 𝐛𝐫𝐨𝐰𝐧 𝐟𝐨𝐱",
    "<script>alert(123)</script>",
    "' OR 1=1 -- 1",
    "%d %s %x %n",
    "\u202eRTL override",
]
EMOJI = ["😀", "👩‍👩‍👧‍👦", "🇬🇧", "👍🏽", "🎉", "🤖", "❤️"]
RTL = ["مرحبا بكم في القاهرة", "שלום ירושלים", "\u202bعربي\u202c", "محمد صلاح"]
INVISIBLE = ["\x00", "\u200b", "\u200c", "\u200d", "\ufeff", "\u2060"]


def naughty_strings() -> List[str]:
    try:
        from spacy.tests.tokenizer.test_naughty_strings import NAUGHTY_STRINGS

        return list(NAUGHTY_STRINGS)
    except ImportError:
        return list(NAUGHTY_FALLBACK)


# --- memory -------------------------------------------------------------------------------

def _status_kib(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mib() -> float:
    """Current resident set size."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        kib = _status_kib("VmRSS")
        return kib / 1024 if kib is not None else float("nan")


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far."""
    kib = _status_kib("VmHWM")
    if kib is None:  # not Linux: ru_maxrss is bytes on macOS, KiB elsewhere
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if sys.platform == "darwin":
            kib /= 1024
    return kib / 1024


def slope_per_1000(points: List[Tuple[int, float]]) -> float:
    """Least-squares slope of (docs, MiB) points, in MiB per 1,000 docs."""
    n = len(points)
    if n < 2:
        return float("nan")
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    return 1000 * sxy / sxx


# --- data ---------------------------------------------------------------------------------

def wikigold_sentences(split: str) -> List[List[str]]:
    sentences, words = [], []
    for line in (WIKIGOLD / f"{split}.conll").read_text(encoding="utf8").splitlines():
        parts = line.split()
        if not parts:
            if words:
                sentences.append(words)
            words = []
        elif parts[0] != "-DOCSTART-":
            words.append(parts[0])
    if words:
        sentences.append(words)
    return sentences


def generate_docs(n_docs: int, seed: int) -> Iterator[Tuple[str, str]]:
    """Yield (kind, text): about 92 % WikiGold dev/test sentences (some with a
    unique ID token, as real streams have), the rest pathological."""
    rng = random.Random(seed)
    sentences = [" ".join(s) for s in wikigold_sentences("dev") + wikigold_sentences("test")]
    naughty = naughty_strings()

    def sentence() -> str:
        start = rng.randrange(len(sentences))
        return " ".join(sentences[start : start + rng.randint(1, 3)])

    def random_token(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
        return "".join(rng.choice(alphabet) for _ in range(n))

    kinds = ["empty", "whitespace", "long_token", "naughty", "unicode"]
    for i in range(n_docs):
        r = rng.random()
        if i % 500 == 499:
            # Very long: 3,000-8,000 tokens of running text.
            text, n = [], rng.randint(3_000, 8_000)
            while sum(len(t.split()) for t in text) < n:
                text.append(sentence())
            yield "very_long", " ".join(text)
        elif r < 0.075:
            kind = kinds[i % len(kinds)]
            if kind == "empty":
                yield kind, ""
            elif kind == "whitespace":
                yield kind, "".join(rng.choice(" \t\n\r\u00a0\u2003") for _ in range(rng.randint(1, 40)))
            elif kind == "long_token":
                token = rng.choice(
                    [
                        "https://example.com/?q=" + random_token(4_977),
                        random_token(5_000, string.ascii_letters + string.digits + "+/"),
                        "x" * 5_000,
                    ]
                )
                yield kind, rng.choice([token, f"{sentence()} {token} {sentence()}"])
            elif kind == "naughty":
                s = rng.choice(naughty)
                yield kind, rng.choice([s, f"{s} {sentence()} {s}"])
            else:
                words = sentence().split()
                for _ in range(rng.randint(1, 6)):
                    pos = rng.randint(0, len(words))
                    extra = rng.choice([rng.choice(EMOJI), rng.choice(RTL), rng.choice(INVISIBLE)])
                    if rng.random() < 0.5 and words:  # glued to a word
                        pos = min(pos, len(words) - 1)
                        words[pos] = words[pos] + extra
                    else:
                        words.insert(pos, extra)
                yield kind, " ".join(words)
        elif r < 0.35:
            yield "normal", f"{sentence()} (ref {random_token(10)})"
        else:
            yield "normal", sentence()


# --- model --------------------------------------------------------------------------------

def train_model(path: Path, epochs: int, seed: int) -> Dict:
    import spacy
    from spacy.training import Example
    from spacy.util import minibatch
    from thinc.api import fix_random_seed

    from spacy_vanilla_ner.convert import conll_to_docs

    fix_random_seed(seed)
    nlp = spacy.blank("en")
    nlp.add_pipe("vanilla_ner")
    train = [Example(nlp.make_doc(d.text), d) for d in conll_to_docs(WIKIGOLD / "train.conll", nlp.vocab)]
    dev = [Example(nlp.make_doc(d.text), d) for d in conll_to_docs(WIKIGOLD / "dev.conll", nlp.vocab)]
    optimizer = nlp.initialize(lambda: train)
    rng = random.Random(seed)
    start = time.time()
    for _ in range(epochs):
        rng.shuffle(train)
        for batch in minibatch(train, 32):
            nlp.update(batch, sgd=optimizer)
    seconds = time.time() - start
    scores = nlp.evaluate(dev)
    nlp.to_disk(path)
    return {"epochs": epochs, "train_seconds": round(seconds, 1), "dev_ents_f": round(scores["ents_f"], 4)}


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
    docs_iter = generate_docs(n_docs, seed)
    chunk = 1_000
    start = time.time()
    for offset in range(0, n_docs, chunk):
        items = [next(docs_iter) for _ in range(min(chunk, n_docs - offset))]
        texts = [text for _, text in items]
        try:
            if memory_zone:
                with nlp.memory_zone():
                    outputs = [(len(d), check_doc(d, t, labels), len(d.ents))
                               for d, t in zip(nlp.pipe(texts, batch_size=batch_size), texts)]
            else:
                outputs = [(len(d), check_doc(d, t, labels), len(d.ents))
                           for d, t in zip(nlp.pipe(texts, batch_size=batch_size), texts)]
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
        "string_store_growth_per_1000_docs": round(slope_per_1000(
            [p for p in strings_sizes if p[0] > 2_000]), 1),
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
        "cuda_max_allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
    }


def run_worker(args: List[str], timeout: float = 900) -> Dict:
    result = subprocess.run(
        [sys.executable, __file__, "--_worker", *args], capture_output=True, text=True, timeout=timeout
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
        ("outputs breaking an invariant", f"{plain['invalid_outputs']} / {zone['invalid_outputs']}"),
        ("pathological docs", f"{plain['pathological']:,} ({100 * plain['pathological'] / plain['docs']:.1f} %)"),
        ("  by kind", ", ".join(f"{k} {v}" for k, v in sorted(plain["kinds"].items()))),
        ("longest doc in stream", f"{plain['longest_doc']['tokens']:,} tokens / {plain['longest_doc']['chars']:,} chars"),
        ("throughput (plain)", f"{plain['docs_per_second']} docs/s ({plain['seconds']} s)"),
        ("invalid BILUO argmax repaired (n_repaired)", f"{plain['n_repaired']:,} docs"),
        ("RSS growth / 1k docs after 2k, plain", f"{plain['rss_growth_mib_per_1000_docs']:+.3f} MiB"),
        ("RSS growth / 1k docs after 2k, memory_zone", f"{zone['rss_growth_mib_per_1000_docs']:+.3f} MiB"),
        ("StringStore growth / 1k docs, plain / zone",
         f"{plain['string_store_growth_per_1000_docs']:+.0f} / {zone['string_store_growth_per_1000_docs']:+.0f} strings"),
    ]
    for single in report["single_docs"]:
        rows.append((
            f"one doc of {single['tokens']:,} tokens",
            f"peak RSS +{single['peak_rss_increase_mib']} MiB (total {single['peak_rss_mib']}), "
            f"tracemalloc peak {single['tracemalloc_peak_mib']} MiB, {single['seconds']} s"
            + (f", CUDA max {single['cuda_max_allocated_mib']} MiB" if single["cuda_max_allocated_mib"] else ""),
        ))
    width = max(len(name) for name, _ in rows)
    print(f"{'measure'.ljust(width)} | value")
    print(f"{'-' * width}-|-{'-' * 40}")
    for name, value in rows:
        print(f"{name.ljust(width)} | {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="Trained pipeline; default: train one")
    parser.add_argument("--n-docs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5, help="Training epochs when no --model is given")
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
        parser.error(f"--model {args.model} is not a saved pipeline (no config.cfg); leave it out to train one")
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
            print(f"Training a small vanilla_ner on {WIKIGOLD / 'train.conll'} ({args.epochs} epochs)...")
            report["model"] = {"path": None, "trained_here": train_model(model, args.epochs, args.seed)}
        else:
            model = args.model
            report["model"] = {"path": str(args.model)}
        print(f"Streaming {args.n_docs:,} docs (plain)...")
        report["stream"] = run_worker(["stream", str(model), str(args.n_docs), str(args.seed), "0", str(args.batch_size)])
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
