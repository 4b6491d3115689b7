"""Throughput and memory of `python -m spacy_vanilla_ner.annotate`: the local engine
with 1 and 2 workers and the Ray engine with 1 and 2 actors, on the same docs.

    python benchmarks/annotate.py --model PIPELINE [--n-docs 20000] [--batch-size 256]
        [--runs local:1,local:1:1,local:2,ray:1,ray:2]
        [--output benchmarks/results/annotate.json]

The docs are the WikiGold sentences of assets/wikigold/ (train, dev and test), cycled
in order to --n-docs and written once as JSONL with ids. Each run is a fresh
process that calls `annotate()` on them with a JSONL file output. A run is
`engine:workers`, or `local:1:THREADS` for one local worker on THREADS torch threads
(`local:1` keeps torch's default, all cores, as `annotate` does; local workers forked
by `nlp.pipe` and Ray actors run one thread each). Each run reports:

- docs/s: steady throughput, the docs after the first output divided by the time
  after it (on Ray a few batches are already in flight at that point, so use
  enough docs that they do not matter); "overall" is all docs over the whole run
  after loading the pipeline (local) or `ray.init` (ray);
- start-up: loading the pipeline (local) or `ray.init` (ray), and then the time to
  the first output (local: forking the workers; ray: starting the actors, each of
  which loads the pipeline, and their first batch), reported apart from docs/s;
- peak RSS per worker: the high-water mark (VmHWM) of each worker process, i.e. the
  run's own process for local:1, the `nlp.pipe` processes for local:N and the Ray
  actor processes for ray (polled from /proc every 0.2 s), and of the driver.

All runs must write the same entities (checked). Linux only (/proc). Run it alone
on the machine: `flock /tmp/cpu.lock python benchmarks/annotate.py ...`.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "annotate.json"
SPLITS = ("train", "dev", "test")


def build_docs(path: Path, n_docs: int) -> int:
    """Write --n-docs WikiGold sentences (cycled) as JSONL; RETURNS the distinct count."""
    import spacy

    from spacy_vanilla_ner.convert import conll_to_docs

    vocab = spacy.blank("en").vocab
    texts = [
        doc.text
        for split in SPLITS
        for doc in conll_to_docs(REPO / "assets" / "wikigold" / f"{split}.conll", vocab)
    ]
    with open(path, "w", encoding="utf8") as f:
        for i in range(n_docs):
            f.write(json.dumps({"id": f"doc{i}", "text": texts[i % len(texts)]}) + "\n")
    return len(texts)


def _vm_hwm_mib(pid: int) -> Optional[float]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf8", "replace")
    except OSError:
        return ""


def _ppid(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


class WorkerPeaks(threading.Thread):
    """Polls the high-water RSS of this run's worker processes: the `nlp.pipe`
    processes forked by this process (local), or the Ray actor processes running
    `MapWorker(MapBatches(NerActor))` under the Ray started by this process (ray)."""

    def __init__(self, engine: str):
        super().__init__(daemon=True)
        self.engine = engine
        self.peaks: Dict[int, float] = {}
        self.done = threading.Event()

    def is_worker(self, pid: int) -> bool:
        if self.engine == "local":
            return _ppid(pid) == os.getpid()
        if "NerActor" not in _cmdline(pid):
            return False
        # Ray's workers are children of the raylet, a child of this process; actors
        # of another Ray on the machine are not this run's.
        for _ in range(4):
            pid = _ppid(pid) or 0
            if pid == os.getpid():
                return True
        return False

    def run(self) -> None:
        while not self.done.wait(0.2):
            for name in os.listdir("/proc"):
                if name.isdigit() and self.is_worker(int(name)):
                    hwm = _vm_hwm_mib(int(name))
                    if hwm is not None:
                        self.peaks[int(name)] = max(hwm, self.peaks.get(int(name), 0.0))


def child(args: argparse.Namespace) -> None:
    """One run in this fresh process; prints its result as JSON."""
    import torch

    from spacy_vanilla_ner.annotate import annotate

    engine, workers, *thread_count = args.run.split(":")
    if thread_count:
        torch.set_num_threads(int(thread_count[0]))
    poller = WorkerPeaks(engine)
    poller.start()
    stats = annotate(
        args.model,
        args.docs,
        args.out,
        engine=engine,
        workers=int(workers),
        batch_size=args.batch_size,
        progress=False,
    )
    poller.done.set()
    poller.join()
    driver_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if engine == "local" and int(workers) == 1:
        worker_peaks = [driver_peak]
        threads = torch.get_num_threads()
    else:
        worker_peaks = sorted(poller.peaks.values())
        threads = 1  # the package's fork hook (local) and the actors set one thread
    stats.update(
        run=args.run,
        worker_peak_rss_mib=worker_peaks,
        driver_peak_rss_mib=driver_peak,
        torch_threads_per_worker=threads,
    )
    print(json.dumps(stats))


def steady_rate(s: Dict[str, Any]) -> float:
    rows = s["rows"] - s.get("first_output_rows", 0)
    seconds = s["seconds"] - (s["first_output_seconds"] or 0.0)
    return rows / seconds if seconds > 0 else 0.0


def entities_by_id(path: Path) -> Dict[str, Any]:
    with open(path, encoding="utf8") as f:
        return {row["id"]: (row["entities"], row["error"]) for row in map(json.loads, f)}


def markdown(results: List[Dict[str, Any]], meta: Dict[str, Any]) -> str:
    from vanilla_ner_experiments.reports import table

    base = next((r for r in results if r["run"] == "local:1"), results[0])
    lines = []
    for r in results:
        peaks = r["worker_peak_rss_mib"]
        per_worker = f"{max(peaks):,.0f}" if peaks else "n/a"
        startup = r.get("load_seconds", 0.0) + r.get("ray_init_seconds", 0.0)
        lines.append(
            [
                f"`{r['run']}`",
                str(r["torch_threads_per_worker"]),
                f"{r['docs_per_s']:,.0f}",
                f"{r['docs_per_s'] / base['docs_per_s']:.2f}×",
                f"{r['rows'] / r['seconds']:,.0f}",
                f"{startup:.1f}",
                f"{r['first_output_seconds']:.1f}",
                per_worker,
                f"{r['driver_peak_rss_mib']:,.0f}",
            ]
        )
    header = [
        "run",
        "torch threads / worker",
        "docs/s (steady)",
        "vs local:1",
        "docs/s (overall)",
        "load / ray.init s",
        "to first output s",
        "peak RSS / worker MiB",
        "driver peak RSS MiB",
    ]
    out = table(header, lines)
    return "\n".join(
        [
            f"{meta['n_docs']:,} docs ({meta['distinct_docs']:,} distinct WikiGold sentences), "
            f"batch size {meta['batch_size']}, {meta['cpu']} ({meta['cpu_count']} CPUs), "
            f"model `{meta['model']}`; 1-minute load average {meta['load_average_before']:.1f} "
            f"before the runs, {meta['load_average_after']:.1f} after.",
            "",
            *out,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="A saved pipeline directory")
    parser.add_argument("--n-docs", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--runs", default="local:1,local:1:1,local:2,ray:1,ray:2")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--docs", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        child(args)
        return
    if not (Path(args.model) / "config.cfg").is_file():
        parser.error(
            f"--model {args.model} is not a saved pipeline (no config.cfg); train one, e.g. "
            f"python -m spacy train configs/transformer_vner.cfg --paths.train "
            f"corpus/train.spacy --paths.dev corpus/dev.spacy --training.max_steps 200 "
            f"-o /tmp/annot_model, and pass /tmp/annot_model/model-last"
        )
    runs = args.runs.split(",")
    for run in runs:
        engine, *rest = run.split(":")
        ok = engine in ("local", "ray") and 1 <= len(rest) <= 2 and all(x.isdigit() for x in rest)
        if not ok or (len(rest) == 2 and run[:8] != "local:1:"):
            parser.error(f"--runs: expected engine:workers (ray:2) or local:1:THREADS, got {run!r}")
    from vanilla_ner_experiments.machine import cpu_name, n_cpus, package_versions

    results = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs.jsonl"
        distinct = build_docs(docs, args.n_docs)
        outputs = {}
        for run in runs:
            outputs[run] = Path(tmp) / f"{run.replace(':', '_')}.jsonl"
            cmd = [sys.executable, __file__, "--_child", "--model", args.model]
            cmd += ["--batch-size", str(args.batch_size), "--run", run]
            cmd += ["--docs", str(docs), "--out", str(outputs[run])]
            print(f"{run} ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            if proc.returncode != 0:
                sys.exit(f"{run} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            result["docs_per_s"] = steady_rate(result)
            result["process_seconds"] = time.perf_counter() - t0
            results.append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)
        reference = entities_by_id(outputs[runs[0]])
        assert len(reference) == args.n_docs
        for run in runs[1:]:
            assert entities_by_id(outputs[run]) == reference, f"{run} differs from {runs[0]}"
    versions = package_versions()
    for name in ("ray", "pyarrow"):
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:
            versions[name] = None
    meta = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "n_docs": args.n_docs,
        "distinct_docs": distinct,
        "batch_size": args.batch_size,
        "model": args.model,
        "cpu": cpu_name(),
        "cpu_count": n_cpus(),
        "versions": versions,
        "same_entities_in_all_runs": True,
        # Other processes on the machine during the run (1-minute load average).
        "load_average_before": load_before[0],
        "load_average_after": os.getloadavg()[0],
    }
    report = markdown(results, meta)
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps({"meta": meta, "runs": results, "markdown": report}, indent=1) + "\n",
        encoding="utf8",
    )
    print(f"\nWrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
