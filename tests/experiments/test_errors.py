"""The error breakdown (`vanilla_ner_experiments.errors`, `benchmarks/errors.py`): P/R/F over
seen and unseen entity forms, counted by hand, and the script end to end on the fixture."""

import importlib.util
import json

import pytest
import spacy
from spacy.tokens import Doc, DocBin, Span

from spacy_vanilla_ner.convert import conll_to_docs
from tests.helpers import FIXTURE, REPO
from vanilla_ner_experiments.errors import seen_unseen_prf, surface_forms


@pytest.fixture(scope="module")
def vocab():
    return spacy.blank("en").vocab


def doc(vocab, ents):
    words = "Ann met Bob in Paris and Rome .".split()
    d = Doc(vocab, words=words)
    d.ents = [Span(d, s, e, label=label) for s, e, label in ents]
    return d


def test_surface_forms_are_text_and_label(vocab):
    train = [doc(vocab, [(0, 1, "PER"), (4, 5, "LOC")]), doc(vocab, [(0, 1, "ORG")])]
    assert surface_forms(train) == {("Ann", "PER"), ("Paris", "LOC"), ("Ann", "ORG")}


def test_seen_and_unseen_partition_gold_and_predictions(vocab):
    seen = {("Ann", "PER"), ("Paris", "LOC")}
    # Gold: Ann PER (seen), Bob PER (unseen), Paris LOC (seen), Rome LOC (unseen).
    gold = [doc(vocab, [(0, 1, "PER"), (2, 3, "PER"), (4, 5, "LOC"), (6, 7, "LOC")])]
    # Predicted: Ann PER (seen, right), Bob ORG (unseen form, wrong), Paris LOC (seen, right),
    # "Rome ." LOC (unseen, wrong span).
    pred = [doc(vocab, [(0, 1, "PER"), (2, 3, "ORG"), (4, 5, "LOC"), (6, 8, "LOC")])]
    out = seen_unseen_prf(pred, gold, seen)
    assert out["all"]["gold"] == 4 and out["all"]["pred"] == 4
    assert out["all"]["ents_p"] == pytest.approx(0.5)
    assert out["all"]["ents_r"] == pytest.approx(0.5)
    assert out["seen"] == pytest.approx(
        {"ents_p": 1.0, "ents_r": 1.0, "ents_f": 1.0, "gold": 2, "pred": 2}
    )
    assert out["unseen"] == pytest.approx(
        {"ents_p": 0.0, "ents_r": 0.0, "ents_f": 0.0, "gold": 2, "pred": 2}
    )


def test_a_prediction_counts_for_the_form_it_predicts(vocab):
    # Gold "Ann" is PER (seen); the model says ORG, an unseen form: a seen miss and an unseen
    # false positive.
    seen = {("Ann", "PER")}
    out = seen_unseen_prf([doc(vocab, [(0, 1, "ORG")])], [doc(vocab, [(0, 1, "PER")])], seen)
    assert (out["seen"]["gold"], out["seen"]["pred"]) == (1, 0)
    assert (out["unseen"]["gold"], out["unseen"]["pred"]) == (0, 1)
    assert out["all"]["ents_f"] == 0.0


def test_mismatched_docs_are_refused(vocab):
    with pytest.raises(ValueError, match="1 predicted docs for 2"):
        seen_unseen_prf([doc(vocab, [])], [doc(vocab, [])] * 2, set())


def test_predictions_on_other_tokens_are_mapped_to_the_gold_tokens(vocab):
    gold = Doc(vocab, words=["The", "Anglo-Dutch", "firm"])
    gold.ents = [Span(gold, 1, 2, label="MISC")]
    pred = Doc(vocab, words=["The", "Anglo", "-", "Dutch", "firm"], spaces=[True] * 4 + [False])
    pred.ents = [Span(pred, 1, 4, label="MISC")]
    out = seen_unseen_prf([pred], [gold], {("Anglo-Dutch", "MISC")})
    assert out["seen"]["ents_f"] == 1.0 and out["unseen"]["pred"] == 0


def test_all_is_spacys_entity_score(trained_nlp, wikigold_100):
    from spacy.scorer import get_ner_prf
    from spacy.training import Example

    gold = conll_to_docs(wikigold_100, trained_nlp.vocab)[:40]
    pred = list(trained_nlp.pipe(d.text for d in gold))
    examples = [Example(p, g) for p, g in zip(pred, gold)]
    expected = get_ner_prf(examples)  # what the `ner_scorer` of spacy evaluate reports
    out = seen_unseen_prf(pred, gold, surface_forms(gold[:20]))["all"]
    assert out["ents_f"] == pytest.approx(expected["ents_f"])
    assert out["ents_p"] == pytest.approx(expected["ents_p"])
    assert out["ents_r"] == pytest.approx(expected["ents_r"])


def load_script():
    spec = importlib.util.spec_from_file_location("errors_script", REPO / "benchmarks/errors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_scores_a_saved_pipeline(trained_path, tmp_path, capsys):
    docs = conll_to_docs(FIXTURE, spacy.blank("en").vocab)
    DocBin(docs=docs[:80]).to_disk(tmp_path / "train.spacy")
    DocBin(docs=docs[80:]).to_disk(tmp_path / "dev.spacy")
    out = tmp_path / "errors.json"
    script = load_script()
    models = f"ours:0={trained_path},ours:1={trained_path}"
    args = ["--models", models, "--train", str(tmp_path / "train.spacy")]
    args += ["--dev", str(tmp_path / "dev.spacy"), "--train-limit", "30", "--output", str(out)]
    assert script.main(args) == 0
    data = json.loads(out.read_text(encoding="utf8"))
    row, again = data["rows"]
    assert row["system"] == "ours:0" and row["train_docs_scored"] == 30
    assert again["dev"] == row["dev"]
    (group,) = data["summary"]
    assert group["system"] == "ours" and group["n"] == 2
    assert group["dev F1"]["mean"] == pytest.approx(100 * row["dev"]["all"]["ents_f"])
    assert group["dev F1"]["std"] == 0.0
    dev = row["dev"]
    assert dev["seen"]["gold"] + dev["unseen"]["gold"] == dev["all"]["gold"]
    assert dev["all"]["gold"] == sum(len(d.ents) for d in docs[80:])
    # The fixture model was trained on all 100 sentences: it fits them.
    assert row["train"]["ents_f"] > 0.5
    printed = capsys.readouterr().out
    assert "| `ours:0` |" in printed and "| `ours` | 2 |" in printed
    assert out.with_suffix(".md").read_text(encoding="utf8").startswith("| System |")


@pytest.mark.parametrize(
    "models,message",
    [
        ("ours={nope}", "is not a saved pipeline"),
        ("ours={here}", "is not a saved pipeline"),
        ("ours={model},ours={model}", "'ours' is named twice"),
        ("{here}", "expected NAME=MODEL_DIR"),
    ],
)
def test_script_names_bad_models(tmp_path, capsys, models, message):
    script = load_script()
    (tmp_path / "t.spacy").write_bytes(b"")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.cfg").write_text("", encoding="utf8")
    models = models.format(nope=tmp_path / "nope", here=tmp_path, model=tmp_path / "model")
    with pytest.raises(SystemExit):
        script.parse_args(
            ["--models", models, "--train", str(tmp_path / "t.spacy")]
            + ["--dev", str(tmp_path / "t.spacy")]
        )
    assert message in capsys.readouterr().err


def test_two_predictions_on_one_gold_token_count_as_spacy_counts_them(vocab):
    from spacy.scorer import get_ner_prf
    from spacy.training import Example

    gold = Doc(vocab, words=["The", "Anglo-Dutch", "firm"])
    gold.ents = [Span(gold, 1, 2, label="MISC")]
    pred = Doc(vocab, words=["The", "Anglo", "-", "Dutch", "firm"], spaces=[True] * 4 + [False])
    pred.ents = [Span(pred, 1, 2, label="MISC"), Span(pred, 3, 4, label="MISC")]
    out = seen_unseen_prf([pred], [gold], set())["all"]
    assert (out["pred"], out["ents_p"], out["ents_r"]) == (2, 0.5, 1.0)
    assert out["ents_f"] == pytest.approx(get_ner_prf([Example(pred, gold)])["ents_f"])


def test_script_names_an_unreadable_corpus(trained_path, tmp_path):
    script = load_script()
    (tmp_path / "broken.spacy").write_bytes(b"not a docbin")
    args = ["--models", f"ours={trained_path}", "--train", str(tmp_path / "broken.spacy")]
    with pytest.raises(SystemExit, match="Could not read .*broken.spacy as a .spacy file"):
        script.main(args + ["--dev", str(tmp_path / "broken.spacy")])
