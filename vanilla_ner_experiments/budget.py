"""Train a spaCy config under a budget, evaluate on dev, keep the best checkpoint, record curves.

The one training loop of `scripts/compare.py` and `benchmarks/conll2003.py`. It drives spaCy's
own generator, `spacy.training.loop.train_while_improving` (what `spacy train` runs, with the
config's optimizer, batcher, dropout, gradient accumulation and frozen or annotating
components), and adds the budget around it. The rules are the same for every system and every
mode; they are stated once, in `RULES`, and the reports print them:

- clock: training seconds only (dev evaluation and checkpoint saving are not on it);
- learning rate: the config's `warmup_linear` schedule runs over the budget;
- weights: every evaluation and the saved checkpoint use the same weights (thinc's averages
  when the optimizer keeps them);
- best checkpoint: the first evaluation to reach the best score (strictly greater replaces).

Budget modes (`Mode`):

- `seconds`: `seconds` of training on the clock (and at most `steps` updates if `steps` > 0);
- `steps`: `steps` updates;
- `converged`: until the dev score has not improved for `patience` evaluations, or until
  `seconds` of training (the cap), whichever comes first.

Whatever the mode, the loop stops after an update, never in the middle of one; if that update
was not evaluated, it is evaluated then, so the curve ends with the final weights.
"""

import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from timeit import default_timer
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from thinc.api import Config

from .params import count_params

RULES: Dict[str, str] = {
    "clock": "Training seconds only: the clock runs during updates and stops during dev "
    "evaluation and checkpoint saving. Loading the corpus and initialising the pipeline come "
    "before it starts; a config with [training] max_epochs = -1 reads the corpus again for "
    "every pass (so that its augmenter draws anew), and those reads are training time.",
    "learning rate": "The config's warmup_linear schedule runs over the budget: warmup over the "
    "same share of the budget as warmup_steps / total_steps in the config, then linear decay to "
    "0 at the end of the budget; over training seconds for a seconds budget (and for the "
    "converged mode's cap), over updates for a steps budget. A config without warmup_linear "
    "keeps its own schedule, over steps (the row's learn_rate_schedule says which).",
    "weights": "Every dev evaluation, the final one included, and the saved best checkpoint use "
    "the optimizer's averaged weights when it keeps them (use_averages = true), else the current "
    "weights.",
    "best checkpoint": "The first evaluation to reach the best dev score: a later evaluation "
    "replaces it only with a strictly greater score.",
}


class Mode(str, Enum):
    SECONDS = "seconds"
    STEPS = "steps"
    CONVERGED = "converged"


@dataclass(frozen=True)
class Budget:
    """What one run may spend.

    mode (Mode): seconds, steps or converged.
    seconds (float): the training seconds of a seconds budget; the cap of the converged mode.
    steps (int): the updates of a steps budget; an optional cap (0 = none) in seconds mode.
    patience (int): converged mode: evaluations without improvement before it stops.
    """

    mode: Mode
    seconds: float = 0.0
    steps: int = 0
    patience: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", Mode(self.mode))
        if self.seconds < 0 or self.steps < 0 or self.patience < 0:
            raise ValueError(f"budget values must not be negative: {self}")
        if self.mode == Mode.SECONDS and not self.seconds:
            raise ValueError("a seconds budget needs seconds > 0")
        if self.mode == Mode.STEPS and (not self.steps or self.seconds):
            raise ValueError("a steps budget needs steps > 0 (and no seconds)")
        if self.mode == Mode.CONVERGED and (not self.patience or not self.seconds):
            raise ValueError("the converged mode needs patience > 0 and a seconds cap > 0")

    def describe(self) -> str:
        if self.mode == Mode.STEPS:
            return f"{self.steps:,} updates"
        if self.mode == Mode.SECONDS:
            cap = f" (at most {self.steps:,} updates)" if self.steps else ""
            return f"{self.seconds:g} s of training{cap}"
        return (
            f"until dev F1 has not improved for {self.patience} evaluations, "
            f"at most {self.seconds:g} s of training"
        )

    def to_dict(self) -> Dict[str, Any]:
        return dict(asdict(self), mode=self.mode.value, description=self.describe())

    def progress(self, train_seconds: float, updates: int) -> float:
        """How much of the budget the learning-rate schedule has run through, in [0, 1]."""
        if self.mode == Mode.STEPS:
            return min(1.0, updates / self.steps)
        return min(1.0, train_seconds / self.seconds)

    def stop_reason(self, train_seconds: float, updates: int, evals_since_best: int) -> str:
        """Why to stop after this update ("" = go on)."""
        if self.mode == Mode.STEPS:
            return "steps" if updates >= self.steps else ""
        if self.mode == Mode.CONVERGED and evals_since_best >= self.patience:
            return "patience"
        if train_seconds >= self.seconds:
            return "seconds" if self.mode == Mode.SECONDS else "max_seconds"
        if self.steps and updates >= self.steps:
            return "max_steps"
        return ""


class Clock:
    """Training seconds: the wall time since `start()` minus what ran inside `paused()`."""

    def __init__(self, timer: Callable[[], float] = default_timer) -> None:
        self.timer = timer
        self.started: Optional[float] = None
        self.excluded = {"eval": 0.0, "save": 0.0}

    def start(self) -> None:
        self.started = self.timer()

    def wall(self) -> float:
        return 0.0 if self.started is None else self.timer() - self.started

    def train_seconds(self) -> float:
        return self.wall() - sum(self.excluded.values())

    @contextmanager
    def paused(self, what: str) -> Iterator[None]:
        started = self.timer()
        try:
            yield
        finally:
            self.excluded[what] += self.timer() - started


def warmup_linear_over_budget(peak: float, warmup_share: float) -> Callable[[float], float]:
    """The learning rate at a share `progress` of the budget: thinc's warmup_linear with
    total_steps as the budget (linear warmup to `peak`, then linear decay to 0)."""

    def learn_rate(progress: float) -> float:
        if progress < warmup_share:
            return peak * progress / warmup_share
        return peak * max(0.0, 1.0 - (progress - warmup_share) / max(1e-9, 1.0 - warmup_share))

    return learn_rate


def budget_schedule(learn_rate: Any) -> Tuple[Optional[Callable[[float], float]], str]:
    """The config's `[training.optimizer] learn_rate` (interpolated) as a function of the share
    of the budget spent. RETURNS: (function or None to keep the config's schedule, description).
    """
    if isinstance(learn_rate, (int, float)):
        return (lambda progress: float(learn_rate)), f"constant {learn_rate:g}"
    if isinstance(learn_rate, dict) and learn_rate.get("@schedules") == "warmup_linear.v1":
        peak = float(learn_rate["initial_rate"])
        share = min(1.0, int(learn_rate["warmup_steps"]) / max(1, int(learn_rate["total_steps"])))
        description = f"warmup_linear over the budget (peak {peak:g}, {share:.0%} warmup)"
        return warmup_linear_over_budget(peak, share), description
    return None, "the config's schedule, over steps"


@dataclass
class LoopResult:
    curve: List[Dict[str, Any]]
    best: Dict[str, Any]  # the best curve point, with "scores": all its dev scores
    updates: int
    words: int
    stopped_by: str


def run_loop(
    nlp: Any,
    T: Dict[str, Any],
    budget: Budget,
    examples: Sequence[Any],
    evaluate: Callable[[], Tuple[float, Dict[str, Any]]],
    save_best: Callable[[Dict[str, Any]], None],
    *,
    clock: Clock,
    learn_rate: Optional[Callable[[float], float]] = None,
    loss_key: Optional[str] = None,
    log: Callable[[str], None] = print,
    corpus: Optional[Callable[[Any], Any]] = None,
) -> LoopResult:
    """Train `nlp` under `budget` with spaCy's loop; the rules in `RULES`.

    T (dict): the resolved [training] section (optimizer, batcher, dropout, ...).
    examples: the training examples, loaded before the clock starts.
    corpus: the training corpus, read again for every pass (spaCy's `max_epochs = -1`, so
        that an augmenter draws anew); None: every pass shuffles `examples`.
    evaluate: a dev evaluation callback, as `create_evaluation_callback` makes.
    save_best (callable): saves the pipeline as the best checkpoint; gets the update's info.
    learn_rate: maps the share of the budget spent to a rate; None keeps the config's schedule.
    loss_key (str): the component whose loss the curve records.
    """
    from spacy.training.loop import create_train_batches, train_while_improving

    optimizer = T["optimizer"]
    if learn_rate is not None:
        optimizer.schedules.pop("learn_rate", None)
        optimizer.learn_rate = learn_rate(0.0)

    def timed_evaluate() -> Tuple[float, Dict[str, Any]]:
        with clock.paused("eval"):
            return evaluate()

    if corpus is None:
        batches = create_train_batches(nlp, lambda _nlp: list(examples), T["batcher"], 0)
    else:
        batches = create_train_batches(nlp, corpus, T["batcher"], -1)
    steps = train_while_improving(
        nlp,
        optimizer,
        batches,
        timed_evaluate,
        dropout=T["dropout"],
        eval_frequency=T["eval_frequency"],
        accumulate_gradient=T["accumulate_gradient"],
        patience=0,  # the budget decides when to stop
        max_steps=0,
        exclude=T["frozen_components"],
        annotating_components=T["annotating_components"],
        before_update=T["before_update"],
    )
    curve: List[Dict[str, Any]] = []
    best: Dict[str, Any] = {}
    evals_since_best = 0

    def record(info: Dict[str, Any], score: float, scores: Dict[str, Any]) -> None:
        nonlocal evals_since_best
        train_seconds = clock.train_seconds()
        words_before = curve[-1]["words"] if curve else 0
        loss = info["losses"].get(loss_key, 0.0) if loss_key else sum(info["losses"].values())
        point = {
            "step": info["step"],
            "epoch": info["epoch"],
            "words": info["words"],
            "train_seconds": round(train_seconds, 3),
            "seconds": round(train_seconds + clock.excluded["eval"], 3),
            "learn_rate": float(optimizer.learn_rate),
            "loss": float(loss),
            # Summed over the tokens (vanilla_ner) or transitions (ner) since the last evaluation.
            "loss_per_word": float(loss) / max(1, info["words"] - words_before),
            "losses": {k: float(v) for k, v in info["losses"].items()},
            "score": score,
            "dev_ents_f": scores.get("ents_f"),
            "dev_ents_p": scores.get("ents_p"),
            "dev_ents_r": scores.get("ents_r"),
        }
        curve.append(point)
        is_best = not best or score > best["score"]  # strict: the first best is kept
        if is_best:
            best.clear()
            best.update(point, scores=scores)
            evals_since_best = 0
            with clock.paused("save"), nlp.use_params(optimizer.averages):
                save_best(dict(info, score=score, other_scores=scores))
        else:
            evals_since_best += 1
        log(
            f"step {point['step']:>6}  epoch {point['epoch']:>3}  "
            f"train {point['train_seconds']:8.1f} s"
            f"  lr {point['learn_rate']:.2e}  loss/word {point['loss_per_word']:.4f}  dev F1 "
            f"{100 * (point['dev_ents_f'] or 0):5.2f}{'  *best*' if is_best else ''}"
        )

    clock.start()
    info: Dict[str, Any] = {}
    stopped_by = "data"  # the batches ran out (not with max_epochs = 0)
    for _batch, info, evaluated in steps:
        updates = info["step"] + 1
        if evaluated is not None:  # spaCy's own is_best (a tie counts) is not used
            record(info, info["score"], info["other_scores"])
        reason = budget.stop_reason(clock.train_seconds(), updates, evals_since_best)
        if reason:
            stopped_by = reason
            break
        if learn_rate is not None:
            optimizer.learn_rate = learn_rate(budget.progress(clock.train_seconds(), updates))
    if not info:
        raise RuntimeError("no update was made: the training corpus is empty?")
    if curve[-1]["step"] != info["step"]:
        # The budget ran out between evaluations: evaluate the final weights, as the others.
        with nlp.use_params(optimizer.averages):
            score, scores = timed_evaluate()
        record(info, score, scores)
    return LoopResult(curve, best, info["step"] + 1, info["words"], stopped_by)


def median_interval_wps(curve: List[Dict[str, Any]], min_seconds: float = 3.0) -> Optional[float]:
    """Median training words/s over the intervals between evaluations (of at least
    `min_seconds` of training): robust to a burst of load from other processes on a shared
    machine, unlike the overall average."""
    rates = sorted(
        (b["words"] - a["words"]) / (b["train_seconds"] - a["train_seconds"])
        for a, b in zip(curve, curve[1:])
        if b["train_seconds"] - a["train_seconds"] >= min_seconds
    )
    if not rates:
        return None
    mid = len(rates) // 2
    return rates[mid] if len(rates) % 2 else (rates[mid - 1] + rates[mid]) / 2


def seed_overrides(config: Config, seed: int) -> Dict[str, Any]:
    """Overrides that set the seed: `training.seed`, and `system.seed` where the config has it."""
    overrides: Dict[str, Any] = {"training.seed": seed}
    if "seed" in config.get("system", {}):
        overrides["system.seed"] = seed
    return overrides


def ner_component(nlp: Any) -> Optional[str]:
    """The NER component whose loss the curve records."""
    for name in nlp.pipe_names:
        if nlp.get_pipe_meta(name).factory in ("vanilla_ner", "ner", "beam_ner"):
            return name
    return None


def train_config(
    config: Union[Path, str, Config],
    budget: Budget,
    *,
    seed: int,
    out_dir: Path,
    overrides: Optional[Dict[str, Any]] = None,
    gpu_id: int = -1,
    wrap_evaluate: Optional[Callable[[Callable], Callable]] = None,
    clock: Optional[Clock] = None,
    log: Callable[[str], None] = print,
) -> Dict[str, Any]:
    """Train a config under `budget` with `seed`; save the best checkpoint to
    `out_dir/model-best`. RETURNS (dict): the training fields of a result row.

    overrides (dict): config overrides (corpora paths, eval_frequency, ...).
    wrap_evaluate: wraps the dev evaluation callback (tests use it to slow evaluation down).
    clock (Clock): the training clock (tests give one with a fake timer).
    """
    import torch
    from spacy.schemas import ConfigSchemaTraining
    from spacy.training.initialize import init_nlp
    from spacy.training.loop import (
        create_before_to_disk_callback,
        create_evaluation_callback,
        update_meta,
    )
    from spacy.util import load_config, load_config_from_str, registry, resolve_dot_names
    from thinc.api import fix_random_seed, require_cpu, require_gpu

    if gpu_id >= 0:
        require_gpu(gpu_id)
        torch.cuda.reset_peak_memory_stats()
    else:
        require_cpu()
    raw = config if isinstance(config, Config) else load_config(Path(config), interpolate=False)
    overrides = {**(overrides or {}), **seed_overrides(raw, seed)}
    # max_epochs = -1 (the corpus read again for every pass, for an augmenter) is kept;
    # anything else trains on the corpus read once, reshuffled for every pass.
    streaming = overrides.get("training.max_epochs", raw["training"].get("max_epochs")) == -1
    overrides.update({"training.patience": 0, "training.max_epochs": -1 if streaming else 0})
    config_obj = load_config_from_str(raw.to_str(), overrides=overrides, interpolate=False)
    started = default_timer()
    nlp = init_nlp(config_obj, use_gpu=gpu_id)
    init_seconds = default_timer() - started
    config_obj = nlp.config.interpolate()
    fix_random_seed(seed)
    T = registry.resolve(config_obj["training"], schema=ConfigSchemaTraining)
    train_corpus, dev_corpus = resolve_dot_names(config_obj, [T["train_corpus"], T["dev_corpus"]])
    learn_rate, schedule = budget_schedule(config_obj["training"]["optimizer"].get("learn_rate"))
    evaluate = create_evaluation_callback(nlp, dev_corpus, T["score_weights"])
    if wrap_evaluate is not None:
        evaluate = wrap_evaluate(evaluate)
    before_to_disk = create_before_to_disk_callback(T["before_to_disk"])
    best_dir = Path(out_dir) / "model-best"
    if best_dir.exists():
        shutil.rmtree(best_dir)
    best_dir.parent.mkdir(parents=True, exist_ok=True)

    def save_best(info: Dict[str, Any]) -> None:
        update_meta(T, nlp, info)
        if best_dir.exists():
            shutil.rmtree(best_dir)
        before_to_disk(nlp).to_disk(best_dir)

    n_params = count_params(nlp)
    log(
        f"{nlp.pipe_names}, {n_params:,} parameters, seed {seed}; budget {budget.describe()}, "
        f"eval every {T['eval_frequency']} steps; learning rate: {schedule}"
    )
    # Read once before the clock (also for streaming: to count a pass's words).
    examples = list(train_corpus(nlp))
    clock = clock or Clock()
    result = run_loop(
        nlp,
        T,
        budget,
        examples,
        evaluate,
        save_best,
        clock=clock,
        learn_rate=learn_rate,
        loss_key=ner_component(nlp),
        log=log,
        corpus=train_corpus if streaming else None,
    )
    train_seconds = clock.train_seconds()
    best, epoch_words = result.best, sum(len(eg) for eg in examples)
    scores = best["scores"]
    return {
        "seed": seed,
        "mode": budget.mode.value,
        "budget": budget.to_dict(),
        "overrides": overrides,
        # The config as trained (configs change over time; this row must not).
        "config_text": nlp.config.to_str(),
        "pipeline": nlp.pipe_names,
        "n_params": n_params,
        "learn_rate_schedule": schedule,
        "eval_frequency": T["eval_frequency"],
        "dev_ents_f": scores.get("ents_f"),
        "dev_ents_p": scores.get("ents_p"),
        "dev_ents_r": scores.get("ents_r"),
        "dev_ents_per_type": scores.get("ents_per_type"),
        "dev_score": best["score"],
        "best_step": best["step"],
        "seconds_to_best": best["seconds"],
        "train_seconds_to_best": best["train_seconds"],
        "steps": result.updates,
        "stopped_by": result.stopped_by,
        "words_trained": result.words,
        "epochs": round(result.words / max(1, epoch_words), 3),
        "train_words_per_epoch": epoch_words,
        "seconds": round(train_seconds + clock.excluded["eval"], 3),
        "train_seconds": round(train_seconds, 3),
        "eval_seconds": round(clock.excluded["eval"], 3),
        "save_seconds": round(clock.excluded["save"], 3),
        "n_evals": len(result.curve),
        "init_seconds": round(init_seconds, 3),
        "train_wps": result.words / max(train_seconds, 1e-9),
        "train_wps_median_interval": median_interval_wps(result.curve),
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if gpu_id >= 0 else None,
        "curve": result.curve,
        "model_dir": str(best_dir),
    }
