#!/usr/bin/env python
"""The commands a user runs on their own data, measured: dev F1, wall time and memory of each
recipe, run exactly as the README gives them, once per seed.

    python benchmarks/recipes.py --corpus wikigold --seeds 3
    python benchmarks/recipes.py --corpus conll2003 --recipes ours --seeds 1

For each corpus (`wikigold`: the shipped split; `conll2003`: `--data-dir`, by default
`../shared/data/conll2003`, never committed) the script runs, each in a fresh process:

1. `python -m spacy_vanilla_ner convert FILE corpus/{train,dev}.spacy` (one sentence per doc);
2. writes each recipe's config:
   - `ours`: `python -m spacy_vanilla_ner init-config ours.cfg --train corpus/train.spacy`
     (the package's recipe, training length scaled to the corpus);
   - `spacy_ner`: `python -m spacy init config spacy_ner.cfg --lang en --pipeline ner`
     (spaCy's CNN and transition-based `ner`, spaCy's training settings);
   - `spacy_ner_swap`: that config with only its `encode` block replaced by
     `spacy-vanilla-ner.TransformerEncoder.v2` (width 96, depth 2, 4 heads): what a bare
     encoder swap gives;
   - `spacy_vanilla_ner`: `python -m spacy init config vanilla_ner.cfg --lang en --pipeline
     vanilla_ner` (the component's default model with spaCy's training settings);
3. `python -m spacy_vanilla_ner debug-data CONFIG --paths.train ... --paths.dev ...`;
4. `python -m spacy train CONFIG --output DIR --paths.train ... --paths.dev ...` (seeds other
   than 0 add `--system.seed N`; nothing else is overridden), timed from start to exit;
5. `python -m spacy evaluate DIR/model-best corpus/dev.spacy --output scores.json`.

Writes `--output` (JSON: one row per corpus, recipe and seed, and the mean ± std per recipe)
and a markdown table next to it, and prints the table. Work files go to `--work-dir`
(gitignored `benchmarks/runs/` by default).
"""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from vanilla_ner_experiments.machine import device_info, package_versions
from vanilla_ner_experiments.reports import fmt_stat, json_default, mean_std, table

REPO = Path(__file__).resolve().parent.parent
CORPORA = {
    "wikigold": (REPO / "assets" / "wikigold" / "train.conll", REPO / "assets/wikigold/dev.conll"),
    "conll2003": ("train.txt", "valid.txt"),  # under --data-dir
}
RECIPES = ["ours", "spacy_ner", "spacy_ner_swap", "spacy_vanilla_ner"]
PY = [sys.executable, "-m"]
# The README's encoder swap: the `encode` block of `spacy init config -p ner`, replaced.
SWAP_BLOCK = """[components.tok2vec.model.encode]
@architectures = "spacy-vanilla-ner.TransformerEncoder.v2"
width = 96
depth = 2
n_heads = 4
"""


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--corpus", choices=sorted(CORPORA), required=True)
    p.add_argument(
        "--data-dir",
        type=Path,
        default=REPO.parent / "shared" / "data" / "conll2003",
        help="Folder with CoNLL-2003 train.txt and valid.txt (for --corpus conll2003)",
    )
    p.add_argument("--recipes", default=",".join(RECIPES), help=f"Comma-separated: {RECIPES}")
    p.add_argument("--seeds", type=int, default=3, help="Seeds 0..N-1 per recipe")
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--output", type=Path, default=None, help="JSON results (and .md beside)")
    p.add_argument(
        "--report-only", action="store_true", help="Only rewrite the .md from the JSON at --output"
    )
    args = p.parse_args(argv)
    args.recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = set(args.recipes) - set(RECIPES)
    if unknown:
        p.error(f"unknown recipes {sorted(unknown)}; choose from {RECIPES}")
    if args.seeds < 1:
        p.error("--seeds must be at least 1")
    if args.corpus == "conll2003":
        missing = [n for n in CORPORA["conll2003"] if not (args.data_dir / n).exists()]
        if missing:
            p.error(f"{missing} not found in --data-dir {args.data_dir}")
    args.work_dir = args.work_dir or REPO / "benchmarks" / "runs" / f"recipes_{args.corpus}"
    args.output = args.output or REPO / "benchmarks" / "results" / f"recipes_{args.corpus}.json"
    return args


def run(cmd: List[str], log: Path) -> Dict[str, Any]:
    """Run `cmd`, its output to `log`; RETURNS wall seconds and the peak RSS of its process."""
    start = time.perf_counter()
    with log.open("w", encoding="utf8") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf8")[-3000:]
        raise RuntimeError(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{tail}")
    return {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024}


def write_config(recipe: str, path: Path, train: Path, log: Path) -> List[str]:
    """Write the recipe's config to `path`; RETURNS the command a user runs for it."""
    if recipe == "ours":
        cmd = [*PY, "spacy_vanilla_ner", "init-config", str(path), "--train", str(train)]
    else:
        pipeline = "vanilla_ner" if recipe == "spacy_vanilla_ner" else "ner"
        cmd = [*PY, "spacy", "init", "config", str(path), "--lang", "en", "--pipeline", pipeline]
    run(cmd, log)
    if recipe == "spacy_ner_swap":
        text = path.read_text(encoding="utf8")
        block = re.compile(r"\[components\.tok2vec\.model\.encode\]\n(?:[^\[\n].*\n|\n)*")
        if not block.search(text):
            raise RuntimeError(f"no [components.tok2vec.model.encode] block in {path}")
        path.write_text(block.sub(SWAP_BLOCK + "\n", text, count=1), encoding="utf8")
    return cmd


def one_run(args, recipe: str, seed: int, corpus: Dict[str, Path], config: Path) -> Dict:
    out = args.work_dir / recipe / f"seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    paths = ["--paths.train", str(corpus["train"]), "--paths.dev", str(corpus["dev"])]
    seed_override = ["--system.seed", str(seed)] if seed else []
    train_cmd = [*PY, "spacy", "train", str(config), "--output", str(out), *paths]
    train_cmd += seed_override
    print(f"[{recipe} seed {seed}] {shlex.join(train_cmd)}", flush=True)
    trained = run(train_cmd, out / "train.log")
    scores_path = out / "scores.json"
    eval_cmd = [*PY, "spacy", "evaluate", str(out / "model-best"), str(corpus["dev"])]
    eval_cmd += ["--output", str(scores_path)]
    run(eval_cmd, out / "evaluate.log")
    scores = json.loads(scores_path.read_text(encoding="utf8"))
    log_text = (out / "train.log").read_text(encoding="utf8")
    # spaCy's console logger: one table row per evaluation, "E  #  LOSS ... SCORE"; the
    # last evaluated step (spaCy evaluates every eval_frequency steps, not at the last one).
    steps = [int(m.group(1)) for m in re.finditer(r"^\s*\d+\s+(\d+)\s", log_text, re.M)]
    row = {
        "corpus": args.corpus,
        "recipe": recipe,
        "seed": seed,
        "train_command": shlex.join(train_cmd),
        "dev_ents_f": scores.get("ents_f"),
        "dev_ents_p": scores.get("ents_p"),
        "dev_ents_r": scores.get("ents_r"),
        "dev_ents_per_type": scores.get("ents_per_type"),
        "eval_words_per_second": scores.get("speed"),
        "train_seconds": trained["seconds"],
        "train_peak_rss_mb": trained["peak_rss_mb"],
        "steps": max(steps) if steps else None,
    }
    print(
        f"[{recipe} seed {seed}] dev F1 {100 * (row['dev_ents_f'] or 0):.2f}, "
        f"{row['train_seconds']:.0f} s, {row['steps']} steps",
        flush=True,
    )
    return row


def markdown(rows: List[Dict], meta: Dict) -> str:
    lines = [
        f"# The README's commands on {meta['corpus']}, measured",
        "",
        f"Written by `benchmarks/recipes.py`. Device: **{meta['device']['name']}**.",
        "",
        f"Command: `{meta['command']}`",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v) + ".",
        "",
        "Per recipe: the command that wrote its config, then `spacy train` as the README "
        "gives it (seeds other than 0 add `--system.seed N`), `spacy evaluate` of "
        "`model-best` on dev. Wall time is `spacy train` from start to exit (dev evaluations "
        "included); peak RSS is that process's. Mean ± sample std over seeds.",
        "",
    ]
    header = ["Recipe", "config written by", "seeds", "dev F1", "P", "R", "last evaluated step"]
    header += ["train wall s", "peak RSS MB", "evaluate words/s"]
    body = []
    for recipe, config_cmd in meta["config_commands"].items():
        runs = [r for r in rows if r["recipe"] == recipe]
        if not runs:
            continue

        def stat(key, spec, scale="raw", runs=runs):
            return fmt_stat(mean_std([r.get(key) for r in runs]), spec, scale)

        body.append(
            [
                f"`{recipe}`",
                f"`{config_cmd}`",
                ", ".join(str(r["seed"]) for r in runs),
                stat("dev_ents_f", "f1", "percent"),
                stat("dev_ents_p", "f1", "percent"),
                stat("dev_ents_r", "f1", "percent"),
                stat("steps", ",.0f"),
                stat("train_seconds", ",.0f"),
                stat("train_peak_rss_mb", ",.0f"),
                stat("eval_words_per_second", ",.0f"),
            ]
        )
    lines += table(header, body)
    lines += ["", "Runs:", ""]
    lines += table(
        ["Recipe", "seed", "dev F1", "last evaluated step", "train wall s"],
        [
            [
                f"`{r['recipe']}`",
                str(r["seed"]),
                f"{100 * r['dev_ents_f']:.2f}",
                str(r["steps"]),
                f"{r['train_seconds']:,.0f}",
            ]
            for r in rows
        ],
    )
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    if args.report_only:
        data = json.loads(args.output.read_text(encoding="utf8"))
        report = markdown(data["rows"], data["meta"])
        args.output.with_suffix(".md").write_text(report, encoding="utf8")
        print(report)
        return
    args.work_dir.mkdir(parents=True, exist_ok=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    names = CORPORA[args.corpus]
    sources = [Path(n) if Path(n).is_absolute() else args.data_dir / n for n in names]
    corpus = {"train": args.work_dir / "corpus" / "train.spacy"}
    corpus["dev"] = args.work_dir / "corpus" / "dev.spacy"
    for source, split in zip(sources, ("train", "dev")):
        convert = [*PY, "spacy_vanilla_ner", "convert", str(source), str(corpus[split])]
        run(convert, args.work_dir / f"convert_{split}.log")
    meta: Dict[str, Any] = {
        "corpus": args.corpus,
        "command": shlex.join(["python", *[a for a in sys.argv if a]]),
        "device": device_info(-1),
        "versions": package_versions(),
        "config_commands": {},
    }
    rows: List[Dict] = []
    for recipe in args.recipes:
        config = args.work_dir / recipe / "config.cfg"
        config.parent.mkdir(parents=True, exist_ok=True)
        cmd = write_config(recipe, config, corpus["train"], args.work_dir / recipe / "config.log")
        shown = shlex.join(["python", *cmd[1:]]).replace(str(args.work_dir) + "/", "")
        meta["config_commands"][recipe] = shown + (" + the encode swap" if "swap" in recipe else "")
        debug = [*PY, "spacy_vanilla_ner", "debug-data", str(config)]
        debug += ["--paths.train", str(corpus["train"]), "--paths.dev", str(corpus["dev"])]
        run(debug, args.work_dir / recipe / "debug_data.log")
        for seed in range(args.seeds):
            rows.append(one_run(args, recipe, seed, corpus, config))
            summary = {
                r: mean_std([row["dev_ents_f"] for row in rows if row["recipe"] == r])
                for r in args.recipes
            }
            data = {"meta": meta, "summary": summary, "rows": rows}
            text = json.dumps(data, indent=1, default=json_default)
            args.output.write_text(text + "\n", encoding="utf8")
            report = markdown(rows, meta)
            args.output.with_suffix(".md").write_text(report, encoding="utf8")
    print(report)


if __name__ == "__main__":
    main()
