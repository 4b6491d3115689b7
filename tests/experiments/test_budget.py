"""The budget loop (vanilla_ner_experiments/budget.py) on a tiny corpus: steps, seconds and
converged modes, the best checkpoint (strict tie-break), the curves, the learning rate over the
budget, and evaluation time kept off the clock (with a fake slow evaluator)."""

import json
import time
from pathlib import Path

import pytest
import spacy
from spacy.tokens import DocBin
from thinc.api import Config

from spacy_vanilla_ner.convert import conll_to_docs
from tests.helpers import FIXTURE, REPO
from vanilla_ner_experiments.budget import (
    RULES,
    Budget,
    Clock,
    Mode,
    budget_schedule,
    seed_overrides,
    train_config,
    warmup_linear_over_budget,
)

CONFIG = REPO / "configs" / "transformer_vner.cfg"
PEAK_RATE = Config().from_disk(CONFIG)["training"]["optimizer"]["learn_rate"]["initial_rate"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The 100-sentence fixture as train, its first 10 sentences as dev."""
    path = tmp_path_factory.mktemp("budget")
    docs = conll_to_docs(FIXTURE, spacy.blank("en").vocab)
    DocBin(docs=docs).to_disk(path / "train.spacy")
    DocBin(docs=docs[:10]).to_disk(path / "dev.spacy")
    return path


def train(corpus, tmp_path, budget, eval_frequency=1, extra=None, **kwargs):
    """A small Transformer (width 32, one layer) on batches of ~300 words."""
    overrides = {
        "paths.train": str(corpus / "train.spacy"),
        "paths.dev": str(corpus / "dev.spacy"),
        "components.tok2vec.model.encode.width": 32,
        "components.tok2vec.model.encode.depth": 1,
        "components.tok2vec.model.encode.ff_width": 64,
        "components.tok2vec.model.encode.n_heads": 2,
        "training.batcher.size.rate": 300,
        "training.eval_frequency": eval_frequency,
        **(extra or {}),
    }
    kwargs.setdefault("log", lambda line: None)
    return train_config(CONFIG, budget, seed=0, out_dir=tmp_path, overrides=overrides, **kwargs)


def scripted(scores):
    """A fake dev evaluation that returns the given scores in turn (then the last one)."""
    calls = []

    def wrap(_real_evaluate):
        def evaluate():
            score = scores[min(len(calls), len(scores) - 1)]
            calls.append(score)
            return score, {"ents_f": score, "ents_p": score, "ents_r": score}

        return evaluate

    return wrap


def test_steps_budget_curve_best_checkpoint_and_schedule(corpus, tmp_path):
    row = train(corpus, tmp_path, Budget(Mode.STEPS, steps=5), eval_frequency=2)
    assert row["mode"] == "steps" and row["seed"] == 0 and row["stopped_by"] == "steps"
    assert row["steps"] == 5
    # Evaluated every 2 updates; the 5th update (step 4) is an evaluation step.
    assert [p["step"] for p in row["curve"]] == [0, 2, 4]
    for point in row["curve"]:
        for key in ("train_seconds", "seconds", "words", "loss", "learn_rate", "dev_ents_f"):
            assert key in point
    best = max(row["curve"], key=lambda p: p["score"])
    assert row["best_step"] == best["step"] and row["dev_ents_f"] == best["dev_ents_f"]
    assert (Path(row["model_dir"]) / "config.cfg").exists()
    # warmup_linear over the 5-update budget: 10 % warmup, 0 at the end.
    schedule = warmup_linear_over_budget(PEAK_RATE, 0.1)
    for point in row["curve"]:
        assert point["learn_rate"] == pytest.approx(schedule(point["step"] / 5))
    assert row["learn_rate_schedule"].startswith("warmup_linear over the budget")
    assert 0.0 <= row["dev_ents_f"] <= 1.0 and row["n_params"] > 0


def test_final_weights_are_evaluated(corpus, tmp_path):
    row = train(corpus, tmp_path, Budget(Mode.STEPS, steps=4), eval_frequency=2)
    assert [p["step"] for p in row["curve"]] == [0, 2, 3]  # step 3: the final evaluation


def test_first_best_checkpoint_is_kept(corpus, tmp_path):
    # spaCy's own loop takes a later tie as best (>=); the rule here is strictly greater.
    row = train(
        corpus, tmp_path, Budget(Mode.STEPS, steps=4), wrap_evaluate=scripted([0.2, 0.5, 0.5, 0.1])
    )
    assert [p["score"] for p in row["curve"]] == [0.2, 0.5, 0.5, 0.1]
    assert row["best_step"] == 1 and row["dev_ents_f"] == 0.5
    assert row["train_seconds_to_best"] == row["curve"][1]["train_seconds"]
    meta = json.loads((Path(row["model_dir"]) / "meta.json").read_text())
    # The saved checkpoint is that of step 1 (the loss since the evaluation before it).
    assert meta["performance"]["vanilla_ner_loss"] == pytest.approx(row["curve"][1]["loss"])


def test_evaluation_is_off_the_clock(corpus, tmp_path):
    """A fake clock: every reading advances 0.05 s, and each evaluation 100 s. With
    evaluation on the clock, a 1 s budget would stop after the first evaluation."""
    now = [0.0]

    def timer():
        now[0] += 0.05
        return now[0]

    def slow(evaluate):
        def slow_evaluate():
            now[0] += 100.0
            return evaluate()

        return slow_evaluate

    clock = Clock(timer=timer)
    row = train(
        corpus, tmp_path, Budget(Mode.SECONDS, seconds=1.0), wrap_evaluate=slow, clock=clock
    )
    assert row["stopped_by"] == "seconds"
    assert row["n_evals"] > 2
    assert row["eval_seconds"] >= 100.0 * row["n_evals"]
    assert 1.0 <= row["train_seconds"] < 1.5
    assert row["seconds"] == pytest.approx(row["train_seconds"] + row["eval_seconds"], abs=0.01)
    # The learning rate ran over the seconds of the budget: near 0 at the end.
    assert row["curve"][-1]["learn_rate"] < 0.3 * PEAK_RATE


def test_real_evaluation_time_is_excluded(corpus, tmp_path):
    def sleepy(evaluate):
        def sleepy_evaluate():
            time.sleep(0.2)
            return evaluate()

        return sleepy_evaluate

    started = time.perf_counter()
    row = train(corpus, tmp_path, Budget(Mode.STEPS, steps=3), wrap_evaluate=sleepy)
    wall = time.perf_counter() - started
    assert row["eval_seconds"] >= 0.2 * 3
    assert row["train_seconds"] <= wall - row["eval_seconds"]
    for a, b in zip(row["curve"], row["curve"][1:]):
        # The sleep is in `seconds` (training + evaluation), not in `train_seconds`.
        spent_evaluating = (b["seconds"] - a["seconds"]) - (b["train_seconds"] - a["train_seconds"])
        assert spent_evaluating >= 0.2 - 1e-3


def test_max_epochs_minus_one_reads_the_corpus_for_every_pass(corpus, tmp_path, monkeypatch):
    """With max_epochs = -1 (so that an augmenter draws anew) the loop reads the training corpus
    again for every pass; otherwise it reads it once. 12 updates of ~300 words make more than
    one pass over the corpus; spaCy's initialisation reads it too, the same in both runs."""
    from spacy.training.corpus import Corpus

    reads = []
    real = Corpus.__call__

    def counting(self, nlp):
        if self.path.name == "train.spacy":
            reads.append(1)
        return real(self, nlp)

    monkeypatch.setattr(Corpus, "__call__", counting)
    counts, rows = {}, {}
    for max_epochs in (0, -1):
        reads.clear()
        rows[max_epochs] = train(
            corpus,
            tmp_path / str(max_epochs),
            Budget(Mode.STEPS, steps=12),
            eval_frequency=12,
            extra={"training.max_epochs": max_epochs},
        )
        counts[max_epochs] = len(reads)
    passes = rows[-1]["curve"][-1]["epoch"] + 1
    assert passes >= 2 and rows[-1]["steps"] == rows[0]["steps"] == 12
    assert counts[-1] - counts[0] == passes


def test_converged_stops_on_patience(corpus, tmp_path):
    budget = Budget(Mode.CONVERGED, seconds=600, patience=2)
    row = train(corpus, tmp_path, budget, wrap_evaluate=scripted([0.1, 0.3, 0.2, 0.3, 0.25]))
    # Best at step 1; steps 2 and 3 do not improve on it (a tie is no improvement).
    assert [p["step"] for p in row["curve"]] == [0, 1, 2, 3]
    assert row["stopped_by"] == "patience" and row["best_step"] == 1
    assert row["mode"] == "converged"


def test_converged_stops_at_the_cap(corpus, tmp_path):
    now = [0.0]

    def timer():
        now[0] += 0.1
        return now[0]

    budget = Budget(Mode.CONVERGED, seconds=1.0, patience=100)
    row = train(
        corpus,
        tmp_path,
        budget,
        wrap_evaluate=scripted([0.1 * i for i in range(50)]),
        clock=Clock(timer=timer),
    )
    assert row["stopped_by"] == "max_seconds"


def test_budget_validation_and_description():
    with pytest.raises(ValueError):
        Budget(Mode.SECONDS)
    with pytest.raises(ValueError):
        Budget(Mode.STEPS, steps=0)
    with pytest.raises(ValueError):
        Budget(Mode.CONVERGED, seconds=100)  # no patience
    assert Budget("seconds", seconds=90).describe() == "90 s of training"
    assert Budget(Mode.STEPS, steps=1500).describe() == "1,500 updates"
    assert "5 evaluations" in Budget(Mode.CONVERGED, seconds=1500, patience=5).describe()
    assert Budget(Mode.SECONDS, seconds=10, steps=3).stop_reason(1.0, 3, 0) == "max_steps"
    assert Budget(Mode.STEPS, steps=10).progress(99.0, 5) == 0.5
    assert set(RULES) == {"clock", "learning rate", "weights", "best checkpoint"}


def test_budget_schedule():
    schedule, text = budget_schedule(
        {
            "@schedules": "warmup_linear.v1",
            "initial_rate": 0.002,
            "warmup_steps": 150,
            "total_steps": 1500,
        }
    )
    assert "10% warmup" in text
    assert schedule(0.0) == 0.0 and schedule(0.05) == pytest.approx(0.001)
    assert schedule(0.1) == pytest.approx(0.002) and schedule(1.0) == 0.0
    constant, _ = budget_schedule(0.01)
    assert constant(0.7) == 0.01
    assert budget_schedule({"@schedules": "compounding.v1"})[0] is None


def test_clock_excludes_paused_time():
    now = [0.0]
    clock = Clock(timer=lambda: now[0])
    clock.start()
    now[0] = 2.0
    with clock.paused("eval"):
        now[0] = 5.0
    with clock.paused("save"):
        now[0] = 6.0
    now[0] = 7.0
    assert clock.wall() == 7.0 and clock.train_seconds() == 3.0
    assert clock.excluded == {"eval": 3.0, "save": 1.0}


def test_seed_overrides():
    assert seed_overrides(Config({"system": {"seed": 0}, "training": {}}), 3) == {
        "training.seed": 3,
        "system.seed": 3,
    }
    assert seed_overrides(Config({"training": {"seed": 0}}), 2) == {"training.seed": 2}
