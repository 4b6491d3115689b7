"""The plots of the experiments: training curves of `compare` and the CoNLL benchmark, and the
diagnose harness's loss and train-F1 curves.

matplotlib (the `[plots]` extra) is imported when a plot is drawn, never at import time; the
scripts check for it before any work starts (`deps.require("plots")`).
"""

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .reports import mean_std, ok_rows
from .systems import REFERENCE_LABEL

# (file suffix, x key, y key, x label, y label)
CURVES = [
    (
        "f1_seconds",
        "train_seconds",
        "dev_ents_f",
        "training seconds (clock: evaluation excluded)",
        "dev entity F1",
    ),
    ("f1_steps", "step", "dev_ents_f", "optimizer steps", "dev entity F1"),
    ("loss", "step", "loss_per_word", "optimizer steps", "training loss per word (log)"),
]


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_curves(
    rows: Sequence[Dict[str, Any]], out_dir: Path, stem: str, meta: Dict[str, Any]
) -> List[Path]:
    """Dev F1 against training seconds and against steps, and the training loss, one colour
    per system and one line per seed (a star at each run's best checkpoint).
    RETURNS: the files written, `<stem>_<suffix>.png` in out_dir."""
    runs = [r for r in ok_rows(rows) if r.get("curve")]
    if not runs:
        return []
    plt = pyplot()
    scale = 100.0 if meta.get("f1_scale", "percent") == "percent" else 1.0
    systems = list(dict.fromkeys(r["system"] for r in runs))
    colors = {name: f"C{i % 10}" for i, name in enumerate(systems)}
    written = []
    for suffix, x_key, y_key, x_label, y_label in CURVES:
        fig, ax = plt.subplots(figsize=(8, 5))
        labelled = set()
        # A pretrained reference trains for far longer than a seconds budget: keep the axis to
        # the compared systems' and say in the legend where the reference ended.
        x_end = axis_end(runs, x_key) if x_key == "train_seconds" else None
        for r in runs:
            name = r["system"]
            factor = scale if y_key == "dev_ents_f" else 1.0
            xs = [p[x_key] for p in r["curve"]]
            ys = [factor * (p[y_key] or 0.0) for p in r["curve"]]
            label = None
            if name not in labelled:
                labelled.add(name)
                stat = mean_std([q["dev_ents_f"] for q in runs if q["system"] == name])
                std = f" ± {scale * stat['std']:.2f}" if stat and stat["std"] else ""
                label = f"{name} ({scale * stat['mean']:.2f}{std})" if stat else name
                if x_end is not None and xs and xs[-1] > x_end:
                    label += f", to {xs[-1]:,.0f} s, beyond the axis"
            ax.plot(
                xs,
                ys,
                color=colors[name],
                marker=".",
                markersize=3,
                lw=1.2,
                alpha=0.85,
                label=label,
            )
            if y_key == "dev_ents_f":
                best = next(p for p in r["curve"] if p["step"] == r["best_step"])
                ax.plot(
                    [best[x_key]],
                    [factor * (best[y_key] or 0.0)],
                    marker="*",
                    markersize=10,
                    color=colors[name],
                )
        if y_key == "loss_per_word":
            ax.set_yscale("log")
            ax.set_title(
                "Training loss (ner: transitions; vanilla_ner: tokens; not comparable "
                "across the two)",
                fontsize=8,
            )
        else:
            ax.set_ylim(0, scale)
            ax.set_title(f"{meta.get('title', '')}: {meta.get('budget', '')}"[:140], fontsize=8)
        if x_end is not None:
            ax.set_xlim(0, x_end)
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = Path(out_dir) / f"{stem}_{suffix}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def axis_end(runs: Sequence[Dict[str, Any]], x_key: str) -> Optional[float]:
    """The x-axis end for the compared systems when a pretrained reference ran longer than
    all of them; None (matplotlib's own) otherwise."""
    compared, references = [], []
    for r in runs:
        end = max(p[x_key] for p in r["curve"])
        (references if r.get("label") == REFERENCE_LABEL else compared).append(end)
    if not compared or not references or max(references) <= max(compared):
        return None
    return 1.04 * max(compared)


def diagnose_styles(fixes: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """Line styles of the diagnose variants: the recipe black, the forum setup red, spaCy's
    encoders dotted, one colour per ablation."""
    style: Dict[str, Dict[str, Any]] = {
        "recipe": dict(color="black", lw=2.2),
        "recipe_harness": dict(color="black", lw=1.4, ls="--"),
        "forum_setup": dict(color="red", lw=2.2),
        "spacy_bilstm": dict(color="tab:gray", lw=1.4, ls=":"),
        "spacy_cnn": dict(color="tab:brown", lw=1.4, ls=":"),
    }
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:olive", "tab:cyan"]
    for fix, color in zip(fixes, colors):
        style[f"recipe_without_{fix}"] = dict(color=color, lw=1.2)
    return style


def write_diagnose(
    results: Sequence[Any],
    sizes: Sequence[int],
    path: Path,
    settings: Dict[str, Any],
    fixes: Sequence[str],
) -> None:
    """Training loss and train entity F1 against steps, a column per subset size."""
    plt = pyplot()
    styles = diagnose_styles(fixes)
    fig, axes = plt.subplots(
        2, len(sizes), figsize=(6.5 * len(sizes), 8.5), squeeze=False, sharex="col"
    )
    for col, n in enumerate(sizes):
        ax_loss, ax_f = axes[0][col], axes[1][col]
        for r in results:
            if r.n_sentences != n:
                continue
            style = styles.get(r.name, {})
            ax_loss.plot(r.curve["step"], r.curve["loss"], label=r.name, **style)
            ax_f.plot(r.curve["step"], r.curve["train_ents_f"], label=r.name, **style)
        ax_loss.set_yscale("log")
        ax_loss.set_title(f"first {n} sentences")
        ax_loss.set_ylabel("training loss (CE summed over batch tokens)")
        ax_f.set_ylabel("train entity F1")
        ax_f.set_xlabel(f"optimizer steps (batch {settings['batch_size']} sentences)")
        ax_f.axhline(0.99, color="k", lw=0.5, ls="--")
        ax_f.set_ylim(0, 1.02)
        for ax in (ax_loss, ax_f):
            ax.grid(alpha=0.3)
    seen: Dict[str, Any] = {}
    for col in range(len(sizes)):
        handles, labels = axes[1][col].get_legend_handles_labels()
        for label, handle in zip(labels, handles):
            seen.setdefault(label, handle)
    fig.legend(seen.values(), seen.keys(), loc="lower center", ncol=4, fontsize=9, frameon=False)
    fig.suptitle(
        f"Same data, batches, steps and Adam (lr {settings['learn_rate']}, no warmup): "
        f"width {settings['width']}, depth {settings['depth']}, {settings['n_heads']} heads",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.08, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
