"""The JSON and markdown reports of `compare` and the CoNLL benchmark.

Both write one row per system and seed (`rows`: the fields of `budget.train_config` and
`runner.run_one`, with `seed` and `mode`), the mean ± sample standard deviation over seeds per
system (`summary`), the budget rules (`budget.RULES`) and what the run was (`meta`: title,
script, command, device, versions, data). The markdown shows the summary side by side, the
runs, skipped or failed systems, the rules and the plots.
"""

import json
import math
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .budget import RULES

# (row key, column header, format) of the summary table; a column whose values are all
# missing (e.g. GPU columns on a CPU run) is left out.
METRICS: List[Tuple[str, str, str]] = [
    ("dev_ents_f", "Dev F1", "f1"),
    ("dev_ents_p", "P", "f1"),
    ("dev_ents_r", "R", "f1"),
    ("test_ents_f", "Test F1", "f1"),
    ("best_step", "best step", ",.0f"),
    ("steps", "steps", ",.0f"),
    ("epochs", "epochs", ".2f"),
    ("train_seconds_to_best", "train s to best", ",.0f"),
    ("train_seconds", "train s", ",.0f"),
    ("train_wps", "train w/s", ",.0f"),
    ("train_wps_median_interval", "train w/s (median interval)", ",.0f"),
    ("gpu_wps", "GPU infer w/s", ",.0f"),
    ("cpu_wps", "CPU infer w/s", ",.0f"),
    ("peak_gpu_mb", "peak GPU MB", ",.0f"),
    ("peak_rss_mb", "peak RSS MB", ",.0f"),
    ("n_params", "params", ",.0f"),
]
RUN_COLUMNS = ["dev_ents_f", "best_step", "steps", "train_seconds", "train_wps", "cpu_wps"]
COLUMN_NOTES = (
    "Columns: *train s* = seconds on the training clock (see the rules); *train s to best* = "
    "the same, up to the best evaluation; *train w/s* = words trained on per training second, "
    "overall; *median interval* = the median over the intervals between evaluations, robust to "
    "load from other processes; *infer w/s* = `nlp.pipe` over the dev docs with the best "
    "checkpoint, after one warm-up batch; *peak RSS* = peak resident memory of the process "
    "that trained and timed the run. Mean ± sample standard deviation over the runs (seeds) "
    "of a system; one value when it ran once."
)


def status(row: Dict[str, Any]) -> str:
    """ok, skipped or failed (rows of the earlier format have an `error` key when failed)."""
    return row.get("status") or ("failed" if row.get("error") else "ok")


def ok_rows(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [r for r in rows if status(r) == "ok"]


def mean_std(values: Sequence[Optional[float]]) -> Optional[Dict[str, Any]]:
    """Mean and sample standard deviation (None for one value) of the values not None."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return None
    std = statistics.stdev(present) if len(present) > 1 else None
    return {"mean": statistics.fmean(present), "std": std, "n": len(present)}


def summarize(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per system (in the order of the rows): its seeds, budget, and mean ± std of METRICS
    and of the dev F1 per entity type."""
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for row in ok_rows(rows):
        groups.setdefault(row["system"], []).append(row)
    summary = []
    for system, runs in groups.items():
        types = sorted({t for r in runs for t in (r.get("dev_ents_per_type") or {})})
        stopped: Dict[str, int] = {}
        for r in runs:
            stopped[r.get("stopped_by", "?")] = stopped.get(r.get("stopped_by", "?"), 0) + 1
        summary.append(
            {
                "system": system,
                "label": runs[0].get("label", ""),
                "seeds": [r.get("seed") for r in runs],
                "mode": runs[0].get("mode"),
                "budget": (runs[0].get("budget") or {}).get("description"),
                "stopped_by": stopped,
                "metrics": {key: mean_std([r.get(key) for r in runs]) for key, _, _ in METRICS},
                "dev_ents_per_type": {
                    t: mean_std(
                        [((r.get("dev_ents_per_type") or {}).get(t) or {}).get("f") for r in runs]
                    )
                    for t in types
                },
            }
        )
    return summary


def load(path: Path) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    """Rows and meta of a report JSON (also the earlier format: a list of rows)."""
    data = json.loads(Path(path).read_text(encoding="utf8"))
    if isinstance(data, list):
        first = next(iter(ok_rows(data)), data[0] if data else {})
        meta = {k: first.get(k) for k in ("command", "device", "versions", "torch_threads")}
        return data, meta
    return data["rows"], data.get("meta", {})


def json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj)}")


def write_json(path: Path, rows: Sequence[Dict[str, Any]], meta: Dict[str, Any]) -> None:
    data = {"meta": meta, "rules": RULES, "summary": summarize(rows), "rows": list(rows)}
    text = json.dumps(data, indent=1, default=json_default)
    Path(path).write_text(text + "\n", encoding="utf8")


def fmt(value: Optional[float], spec: str, scale: str = "percent") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if spec == "f1":
        return f"{100 * value:.2f}" if scale == "percent" else f"{value:.3f}"
    return format(value, spec)


def fmt_stat(stat: Optional[Dict[str, Any]], spec: str, scale: str) -> str:
    if stat is None:
        return "–"
    text = fmt(stat["mean"], spec, scale)
    if stat["std"]:  # None for one run; 0 (all runs equal) is shown as the value alone
        text += f" ± {fmt(stat['std'], spec, scale)}"
    return text


def system_cell(name: str, label: str) -> str:
    return f"`{name}` ({label})" if label else f"`{name}`"


def table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> List[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(cells) + " |" for cells in lines]


def summary_table(summary: List[Dict[str, Any]], scale: str) -> List[str]:
    keys = [m for m in METRICS if any(s["metrics"][m[0]] for s in summary)]
    header = ["System", "seeds"] + [h for _, h, _ in keys] + ["stopped by"]
    lines = []
    for s in summary:
        cells = [system_cell(s["system"], s["label"]), ", ".join(map(str, s["seeds"]))]
        cells += [fmt_stat(s["metrics"][k], spec, scale) for k, _, spec in keys]
        cells.append(", ".join(f"{k} ×{n}" if n > 1 else k for k, n in s["stopped_by"].items()))
        lines.append(cells)
    out = table(header, lines)
    types = sorted({t for s in summary for t in s["dev_ents_per_type"]})
    if types:
        per_type = [
            [system_cell(s["system"], s["label"])]
            + [fmt_stat(s["dev_ents_per_type"].get(t), "f1", scale) for t in types]
            for s in summary
        ]
        out += ["", "Dev F1 per entity type:", ""] + table(["System"] + types, per_type)
    return out


def runs_table(rows: Sequence[Dict[str, Any]], scale: str) -> List[str]:
    specs = {key: (header, spec) for key, header, spec in METRICS}
    keys = [k for k in RUN_COLUMNS if any(r.get(k) is not None for r in ok_rows(rows))]
    header = ["System", "seed", "budget"] + [specs[k][0] for k in keys] + ["stopped by"]
    lines = [
        [
            system_cell(r["system"], r.get("label", "")),
            str(r.get("seed")),
            (r.get("budget") or {}).get("description", "?"),
        ]
        + [fmt(r.get(k), specs[k][1], scale) for k in keys]
        + [str(r.get("stopped_by"))]
        for r in ok_rows(rows)
    ]
    return table(header, lines)


def seconds_to_reach(row: Dict[str, Any], target: float) -> Optional[float]:
    """Training seconds of the first evaluation of `row` whose dev F1 reaches `target`;
    None if none did."""
    for point in row.get("curve") or []:
        score = point.get("dev_ents_f")
        if score is not None and score >= target:
            return point.get("train_seconds")
    return None


def time_to_reach_table(rows: Sequence[Dict[str, Any]], scale: str) -> List[str]:
    """Training seconds each system needs to reach each system's best dev F1 (its mean over
    seeds): one row per system, one column per target. A cell is the mean over the seeds that
    reached the target, with how many did where not all, and the ratio to the target system's
    own time to its best."""
    summary = summarize(rows)
    by_system: Dict[str, List[Dict[str, Any]]] = {}
    for row in ok_rows(rows):
        by_system.setdefault(row["system"], []).append(row)
    targets = []
    for s in summary:
        best = s["metrics"]["dev_ents_f"]
        if best is not None:
            own = mean_std([seconds_to_reach(r, best["mean"]) for r in by_system[s["system"]]])
            targets.append((s["system"], best["mean"], own["mean"] if own else None))
    header = ["System"] + [
        f"to `{name}`'s best ({fmt(f1, 'f1', scale)})" for name, f1, _ in targets
    ]
    lines = []
    for s in summary:
        runs = by_system[s["system"]]
        cells = [system_cell(s["system"], s["label"])]
        for _, f1, own in targets:
            times = [t for t in (seconds_to_reach(r, f1) for r in runs) if t is not None]
            if not times:
                cells.append("not reached")
                continue
            text = f"{statistics.fmean(times):,.0f} s"
            if own:
                text += f" ({statistics.fmean(times) / own:.2f}×)"
            if len(times) < len(runs):
                text += f", {len(times)}/{len(runs)} seeds"
            cells.append(text)
        lines.append(cells)
    return table(header, lines)


def not_run(rows: Sequence[Dict[str, Any]]) -> List[str]:
    out = []
    for r in rows:
        if status(r) == "ok":
            continue
        why = r.get("reason") or (r.get("error") or "?").strip().splitlines()[-1][:300]
        out.append(
            f"- {system_cell(r['system'], r.get('label', ''))}, seed {r.get('seed')}: "
            f"{status(r)}: {why}"
        )
    return out


def markdown(rows: Sequence[Dict[str, Any]], meta: Dict[str, Any], plots: Sequence[str]) -> str:
    scale = meta.get("f1_scale", "percent")
    threads = meta.get("torch_threads")
    lines = [f"# {meta.get('title', 'NER comparison')}", ""]
    lines += [
        f"Written by `{meta.get('script', '?')}`. Device: **{meta.get('device', '?')}**"
        + (f" (torch threads: {threads})" if threads else "")
        + ".",
        "",
        f"Command: `{meta.get('command', '?')}`",
        "",
    ]
    versions = meta.get("versions") or {}
    if versions:
        lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + ".", ""]
    if meta.get("data"):
        lines += [f"Data: {meta['data']}", ""]
    if meta.get("budget"):
        lines += [f"Budget: {meta['budget']}", ""]
    summary = summarize(rows)
    lines += ["## Mean ± std over seeds", ""] + summary_table(summary, scale)
    if any(s["mode"] == "converged" for s in summary):
        lines += ["", "## Time to reach each system's best", ""]
        lines += [
            "Training seconds until the first evaluation at or above the column's dev F1 (a "
            "system's mean best over its seeds); in brackets, the ratio to the column system's "
            "own time to it.",
            "",
        ] + time_to_reach_table(rows, scale)
    lines += ["", "## Runs (one row per system and seed)", ""] + runs_table(rows, scale)
    skipped = not_run(rows)
    if skipped:
        lines += ["", "Not run:", ""] + skipped
    lines += ["", "## Rules (the same for every system)", ""]
    lines += [f"- **{name}**: {text}" for name, text in RULES.items()]
    lines += ["", COLUMN_NOTES]
    for plot in plots:
        lines += ["", f"![{plot}]({plot})"]
    return "\n".join(lines) + "\n"


def write_report(
    json_path: Path,
    rows: Sequence[Dict[str, Any]],
    meta: Dict[str, Any],
    plot: bool = True,
    write_rows: bool = True,
) -> List[Path]:
    """Write the JSON (unless not `write_rows`: a report rewritten from it), the markdown
    (`.md` next to it) and, with `plot`, the plots (`<stem>_f1_seconds.png`, `_f1_steps.png`,
    `_loss.png`). RETURNS: the files written."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    if write_rows:
        write_json(json_path, rows, meta)
    plots: List[Path] = []
    if plot:
        from .plots import write_curves

        plots = write_curves(rows, json_path.parent, json_path.stem, meta)
    md_path = json_path.with_suffix(".md")
    md_path.write_text(markdown(rows, meta, [p.name for p in plots]), encoding="utf8")
    return [json_path] * write_rows + [md_path, *plots]


def write_results(output: Path, payload: Dict[str, Any], report: str) -> None:
    """Write a benchmark's JSON (`output`) and its markdown report next to it (`.md`), print
    the report and where both went."""
    output.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(payload, indent=1, default=json_default)
    output.write_text(text + "\n", encoding="utf8")
    output.with_suffix(".md").write_text(report, encoding="utf8")
    print(report)
    print(f"Wrote {output} and {output.with_suffix('.md')}", flush=True)
