"""The diagnostic harness (vanilla_ner_experiments/diagnose.py) and its CLI
(scripts/diagnose.py): the output schema, and that each simulated bug really
does what its name says while the recipe does not."""

import importlib.util
import json
import sys

import pytest
import spacy
import torch
from spacy.scorer import get_ner_prf
from spacy.tokens import Doc
from spacy.training import Example
from typer.testing import CliRunner

from spacy_vanilla_ner.convert import conll_to_docs
from tests.helpers import FIXTURE, REPO
from vanilla_ner_experiments.diagnose import (
    FIXES,
    ForumModel,
    RecipeHarness,
    RunSettings,
    TutorialPositionalEncoding,
    encode_docs,
    pad_batch,
    shuffled_batches,
    span_prf,
    word_only_ents_f,
)

ROW_KEYS = {"name", "n_sentences", "final_train_loss", "train_ents_f", "steps_to_99", "seconds"}


@pytest.fixture(scope="module")
def docs():
    return conll_to_docs(FIXTURE, spacy.blank("en").vocab, limit=40)


@pytest.fixture(scope="module")
def data(docs):
    return encode_docs(docs)


@pytest.fixture(scope="module")
def diagnose_app():
    spec = importlib.util.spec_from_file_location(
        "diagnose_script", REPO / "scripts" / "diagnose.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


def test_cli_writes_rows_curves_and_plot(tmp_path, diagnose_app):
    variants = "recipe,forum_setup,recipe_without_time_major"
    result = CliRunner().invoke(
        diagnose_app,
        [
            "--train",
            str(FIXTURE),
            "--output",
            str(tmp_path),
            "--gpu-id",
            "-1",
            "--sizes",
            "12,20",
            "--steps",
            "4",
            "--eval-every",
            "2",
            "--seed",
            "0",
            "--batch-size",
            "4",
            "--width",
            "32",
            "--heads",
            "2",
            "--depth",
            "1",
            "--variants",
            variants,
            "--large-variants",
            "recipe_harness,spacy_cnn",
            "--full-up-to",
            "12",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "diagnose.json").read_text())
    payload = json.loads((tmp_path / "diagnose_curves.json").read_text())
    assert isinstance(rows, list)
    assert [(r["name"], r["n_sentences"]) for r in rows] == [
        ("recipe", 12),
        ("forum_setup", 12),
        ("recipe_without_time_major", 12),
        ("recipe_harness", 20),
        ("spacy_cnn", 20),
    ]
    for row in rows:
        assert ROW_KEYS <= set(row)
        assert row["final_train_loss"] > 0
        assert 0.0 <= row["train_ents_f"] <= 1.0
        assert row["steps_to_99"] is None or isinstance(row["steps_to_99"], int)
    for curve, row in zip(payload["curves"], rows):
        assert (curve["name"], curve["n_sentences"]) == (row["name"], row["n_sentences"])
        assert curve["step"] == [2, 4]
        assert len(curve["loss"]) == len(curve["train_ents_f"]) == 2
    assert payload["settings"]["steps"] == [4, 4]
    assert set(payload["settings"]["word_only_train_ents_f"]) == {"12", "20"}
    assert (tmp_path / "diagnose.png").stat().st_size > 0
    assert "| recipe_harness" in result.output  # the table is printed


def test_cli_rejects_unknown_variant(tmp_path, diagnose_app):
    result = CliRunner().invoke(
        diagnose_app,
        ["--train", str(FIXTURE), "--output", str(tmp_path), "--variants", "recipe,nope"],
    )
    assert result.exit_code != 0
    assert "nope" in result.output


def test_cli_without_matplotlib_fails_before_training(tmp_path, diagnose_app, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = CliRunner().invoke(
        diagnose_app, ["--train", str(FIXTURE), "--output", str(tmp_path), "--sizes", "12"]
    )
    assert result.exit_code == 1
    assert "pip install 'spacy-vanilla-ner[plots]'" in result.output
    assert "== first" not in result.output  # no variant was trained
    assert not (tmp_path / "diagnose.json").exists()


def _outputs_of_first_doc(model, data, batch):
    model.eval()
    with torch.no_grad():
        words, feats, _, mask = pad_batch(data, batch, torch.device("cpu"))
        return model(words, feats, mask)[0, : len(data.words[batch[0]])]


def _harness(data, without=()):
    torch.manual_seed(0)
    settings = RunSettings(width=32, depth=2, n_heads=2)
    model = RecipeHarness(data.n_feats, 17, settings, without=without)
    # Zero-initialised in the recipe; made visible here.
    torch.nn.init.normal_(model.output.weight)
    return model


def _two_batches(data):
    """Doc 0 with a short batch-mate, then with two other, longer ones."""
    lengths = [len(w) for w in data.words]
    short = min(range(1, len(lengths)), key=lambda i: lengths[i])
    longer = sorted(range(1, len(lengths)), key=lambda i: -lengths[i])[:2]
    assert lengths[short] < lengths[0] < lengths[longer[0]]
    return [0, short], [0] + longer


def test_recipe_output_does_not_depend_on_batch_mates(data):
    model = _harness(data)
    first, second = _two_batches(data)
    alone = _outputs_of_first_doc(model, data, [0])
    assert torch.allclose(_outputs_of_first_doc(model, data, first), alone, atol=1e-5)
    assert torch.allclose(_outputs_of_first_doc(model, data, second), alone, atol=1e-5)


@pytest.mark.parametrize("fix", ["time_major", "mask"])
def test_removed_fix_makes_output_depend_on_batch(data, fix):
    model = _harness(data, without=[fix])
    first, second = _two_batches(data)
    a = _outputs_of_first_doc(model, data, first)
    b = _outputs_of_first_doc(model, data, second)
    assert not torch.allclose(a, b, atol=1e-3)


def test_batch_indexed_positions_depend_on_slot_in_batch(data):
    # The tutorial table indexed by the batch axis gives a doc a different
    # offset depending on where the shuffle put it in its batch.
    model = _harness(data, without=["positions"])
    model.eval()
    n = len(data.words[0])
    with torch.no_grad():
        words, feats, _, mask = pad_batch(data, [0, 1], torch.device("cpu"))
        first = model(words, feats, mask)[0, :n]
        words, feats, _, mask = pad_batch(data, [1, 0], torch.device("cpu"))
        second = model(words, feats, mask)[1, :n]
    assert not torch.allclose(first, second, atol=1e-3)
    recipe = _harness(data)
    recipe.eval()
    with torch.no_grad():
        words, feats, _, mask = pad_batch(data, [0, 1], torch.device("cpu"))
        first = recipe(words, feats, mask)[0, :n]
        words, feats, _, mask = pad_batch(data, [1, 0], torch.device("cpu"))
        second = recipe(words, feats, mask)[1, :n]
    assert torch.allclose(first, second, atol=1e-5)


def test_time_major_bug_attends_across_docs_not_tokens(data):
    # With attention across the batch, token t of doc 0 only sees token t of
    # the other docs: changing doc 0's other tokens leaves it unchanged.
    model = _harness(data, without=["time_major"])
    model.eval()
    words, feats, _, mask = pad_batch(data, [0, 1, 2], torch.device("cpu"))
    with torch.no_grad():
        before = model(words, feats, mask)
        feats2 = feats.clone()
        feats2[0, 1:] = feats[1, 1:]  # rewrite all but the first token of doc 0
        after = model(words, feats2, mask)
    assert torch.allclose(before[0, 0], after[0, 0], atol=1e-5)
    # ... while the other docs' token 1 sees doc 0's new token 1.
    assert not torch.allclose(before[1, 1], after[1, 1], atol=1e-3)
    recipe = _harness(data)
    recipe.eval()
    with torch.no_grad():
        assert not torch.allclose(
            recipe(words, feats, mask)[0, 0], recipe(words, feats2, mask)[0, 0], atol=1e-3
        )


def test_forum_model_mixes_docs(data):
    torch.manual_seed(0)
    model = ForumModel(data.n_words, 17, d_model=32, n_heads=2, depth=2)
    first, second = _two_batches(data)
    a = _outputs_of_first_doc(model, data, first)
    b = _outputs_of_first_doc(model, data, second)
    assert not torch.allclose(a, b, atol=1e-3)


def test_tutorial_positions_index_the_batch():
    pe = TutorialPositionalEncoding(8, dropout=0.0)
    X = torch.zeros(3, 5, 8)  # batch-first (B, T, C)
    Y = pe(X)
    assert torch.equal(Y[:, 0], Y[:, 4])  # no token position
    assert not torch.equal(Y[0], Y[1])  # a different offset per doc


def test_cloned_init_copies_layers(data):
    model = _harness(data, without=["init"])
    a, b = model.encoder.layers
    assert torch.equal(a.attention.qkv.weight, b.attention.qkv.weight)
    recipe = _harness(data)
    a, b = recipe.encoder.layers
    assert not torch.equal(a.attention.qkv.weight, b.attention.qkv.weight)


def test_every_fix_builds(data):
    for fix in FIXES:
        _harness(data, without=[fix])
    with pytest.raises(ValueError):
        _harness(data, without=["nope"])


def test_batches_reshuffle_every_epoch():
    batches = shuffled_batches(10, 4, seed=0)
    epoch1 = [next(batches) for _ in range(3)]
    epoch2 = [next(batches) for _ in range(3)]
    assert sorted(sum(epoch1, [])) == sorted(sum(epoch2, [])) == list(range(10))
    assert epoch1 != epoch2
    assert [len(b) for b in epoch1] == [4, 4, 2]


def test_span_prf_matches_spacy_scorer(docs):
    vocab = docs[0].vocab
    examples, gold, predicted = [], [], []
    for i, doc in enumerate(docs[:20]):
        pred = Doc(vocab, words=[t.text for t in doc])
        ents = list(doc.ents)
        if i % 3 == 0:
            ents = ents[1:]  # a miss
        if i % 4 == 0 and len(doc) > 2 and not doc.ents:
            ents = [spacy.tokens.Span(pred, 0, 1, label="PER")]  # a false positive
        pred.ents = [spacy.tokens.Span(pred, e.start, e.end, label=e.label_) for e in ents]
        examples.append(Example(pred, doc))
        gold.append({(e.start, e.end, e.label_) for e in doc.ents})
        predicted.append({(e.start, e.end, e.label_) for e in pred.ents})
    ours = span_prf(gold, predicted)
    theirs = get_ner_prf(examples)
    assert ours["ents_f"] == pytest.approx(theirs["ents_f"])
    assert ours["ents_p"] == pytest.approx(theirs["ents_p"])
    assert 0 < ours["ents_f"] < 1


def test_word_only_lookup_cannot_use_context(data):
    # Perfect on one sentence, below 1 once a word takes different tags in context.
    vocab = spacy.blank("en").vocab
    assert word_only_ents_f(encode_docs(conll_to_docs(FIXTURE, vocab, limit=1))) == 1.0
    assert 0.5 < word_only_ents_f(encode_docs(conll_to_docs(FIXTURE, vocab))) < 1.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_harness_runs_on_gpu(docs):
    from vanilla_ner_experiments.diagnose import run_variant

    settings = RunSettings(steps=2, eval_every=2, width=32, n_heads=2, depth=1, device="cuda:0")
    for name in ("recipe_harness", "forum_setup"):
        result = run_variant(name, docs[:8], settings, log=lambda line: None)
        assert result.curve["step"] == [2]
