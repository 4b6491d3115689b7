import numpy
import pytest
import spacy
import srsly
from spacy.tokens import Doc, DocBin, Span
from spacy.training import Example
from typer.testing import CliRunner

from spacy_vanilla_ner.convert import conll_to_docs
from spacy_vanilla_ner.debug_data import (
    analyze,
    app,
    check,
    debug_data,
    first_invalid,
    read_corpus,
)
from spacy_vanilla_ner.tagging import biluo
from tests.helpers import FIXTURE, REPO


@pytest.fixture(scope="module")
def nlp():
    return spacy.blank("en")


def make_doc(nlp, words, ents=(), spaces=None, sent_starts=None):
    doc = Doc(nlp.vocab, words=words, spaces=spaces, sent_starts=sent_starts)
    doc.ents = [Span(doc, start, end, label=label) for start, end, label in ents]
    return doc


def examples(nlp, docs):
    """As `spacy.training.Corpus` makes them: the gold doc re-tokenized from its text."""
    return [Example(nlp.make_doc(doc.text), doc) for doc in docs]


def problems(report):
    return {f.message: f.level for f in report.findings if f.level != "good"}


def save(path, docs):
    DocBin(docs=docs).to_disk(path)
    return str(path)


def run(*args):
    return CliRunner().invoke(app, [str(arg) for arg in args])


@pytest.fixture(scope="module")
def fixture_docs(nlp):
    return conll_to_docs(FIXTURE, nlp.vocab)


def test_fixture_corpus(nlp, fixture_docs, tmp_path):
    train = save(tmp_path / "train.spacy", fixture_docs[:80])
    dev = save(tmp_path / "dev.spacy", fixture_docs[80:])
    result = run(train, dev)
    assert result.exit_code == 0, result.output
    assert "train: 80 docs" in result.output and "LOC (" in result.output
    report = debug_data(examples(nlp, fixture_docs[:80]), examples(nlp, fixture_docs[80:]))
    assert report.count("error") == 0
    assert report.train.n_ents + report.dev.n_ents == 184  # as tests/test_convert.py
    # The 100-sentence fixture has fewer than 50 entities of each label.
    assert [level for message, level in problems(report).items()] == ["warning"]
    assert "few train entities" in next(iter(problems(report)))


def test_no_train_entities_is_an_error(nlp, tmp_path):
    docs = [make_doc(nlp, ["nothing", "here"]), make_doc(nlp, ["nor", "here"])]
    report = debug_data(examples(nlp, docs))
    assert problems(report) == {"train: no entities": "error"}
    result = run(save(tmp_path / "train.spacy", docs))
    assert result.exit_code == 1
    assert "train: no entities" in result.output


def test_empty_corpus_is_an_error(nlp, tmp_path):
    train = save(tmp_path / "train.spacy", [make_doc(nlp, ["Paris"], [(0, 1, "LOC")])])
    result = run(train, save(tmp_path / "dev.spacy", []))
    assert result.exit_code == 1
    assert "dev: no docs" in result.output


def test_unseen_dev_label_is_a_warning(nlp, tmp_path):
    train = [make_doc(nlp, ["Paris", "is", "big"], [(0, 1, "LOC")])]
    dev = [make_doc(nlp, ["Euro", "2024", "starts"], [(0, 2, "EVENT")])]
    report = debug_data(examples(nlp, train), examples(nlp, dev))
    found = problems(report)
    assert found["dev labels not in train, never predicted: EVENT (1)"] == "warning"
    assert report.count("error") == 0
    result = run(save(tmp_path / "t.spacy", train), save(tmp_path / "d.spacy", dev))
    assert result.exit_code == 0, result.output
    assert "EVENT (1)" in result.output


def test_dev_texts_in_train_and_dev_without_entities(nlp):
    train = [make_doc(nlp, ["Paris", "is", "big"], [(0, 1, "LOC")]), make_doc(nlp, ["no"])]
    dev = [make_doc(nlp, ["no"])]
    found = problems(debug_data(examples(nlp, train), examples(nlp, dev)))
    assert found["1 dev texts are also in train"] == "warning"
    assert found["dev: no entities, so its entity scores mean nothing"] == "warning"


def test_whitespace_entity_breaks_the_biluo_rules(nlp):
    # The entity starts on the whitespace token between "Visit" and "Paris".
    doc = make_doc(nlp, ["Visit", " ", "Paris"], [(1, 3, "LOC")], spaces=[True, False, False])
    stats = analyze(examples(nlp, [doc]), "train")
    assert stats.whitespace_ents == ["doc 0, tokens 1-2 ' Paris' (LOC)"]
    assert len(stats.invalid_biluo) == 1
    assert stats.invalid_biluo[0].startswith("doc 0, token 1 ' ': tag B-LOC")
    levels = sorted(problems(debug_data(examples(nlp, [doc]))).values())
    assert levels == ["error", "error", "warning"]  # + few entities of LOC


def test_entity_inside_a_token_is_lost_in_alignment(nlp):
    # Text "AcmeCorp rises": the tokenizer makes one token of "AcmeCorp", so the
    # gold entity "Acme" has no token boundary to end on.
    doc = make_doc(nlp, ["Acme", "Corp", "rises"], [(0, 1, "ORG")], spaces=[False, True, False])
    stats = analyze(examples(nlp, [doc]), "train")
    assert stats.lost_ents == ["doc 0, token 0 'Acme' (ORG)"]
    assert stats.misaligned_tokens == ["doc 0, token 0 'AcmeCorp' in the tokenizer's doc"]
    assert stats.n_missing == 1  # "AcmeCorp" has no gold tag after alignment
    assert stats.invalid_biluo == []
    found = problems(debug_data(examples(nlp, [doc])))
    assert "train: 1 entities do not fall on the tokenizer's token boundaries" in "\n".join(found)
    assert set(found.values()) == {"warning"}


def test_entity_across_sentences(nlp):
    words = ["in", "New", "York", "today"]
    doc = make_doc(nlp, words, [(1, 3, "LOC")], sent_starts=[True, False, True, False])
    stats = analyze([Example(doc.copy(), doc)], "train")
    assert stats.cross_sentence_ents == ["doc 0, tokens 1-2 'New York' (LOC)"]
    assert stats.invalid_biluo == []  # a rule of the data, not of the tag sequence


@pytest.mark.parametrize(
    "tags,is_space,expected",
    [
        (["B-PER", "L-PER", "O", "U-LOC"], None, None),
        ([], None, None),
        (["I-PER"], None, 0),
        (["B-PER"], None, 0),  # a doc cannot end inside an entity
        (["B-PER", "O"], None, 1),
        (["B-PER", "L-ORG"], None, 1),
        (["U-PER", "L-PER"], None, 1),
        # missing values: only transitions between known neighbours are checked
        (["B-PER", None, "L-PER"], None, None),
        (["-", "I-PER", "-"], None, None),
        (["O", "-", "U-PER", "I-PER"], None, 3),
        # whitespace tokens may be O or I only
        (["U-PER"], [True], 0),
        (["B-PER", "I-PER", "L-PER"], [False, True, False], None),
        (["O", "O", "B-PER", "L-PER"], [False, True, True, False], 2),
    ],
)
def test_first_invalid(tags, is_space, expected):
    assert first_invalid(tags, is_space or [False] * len(tags)) == expected


def test_first_invalid_agrees_with_the_biluo_rules():
    labels = ["LOC", "PER"]
    names = biluo.tag_names(labels)
    rng = numpy.random.default_rng(0)
    n_valid = 0
    for _ in range(2000):
        n = int(rng.integers(1, 6))
        ids = [int(i) for i in rng.integers(0, len(names), size=n)]
        is_space = [bool(s) for s in rng.random(n) < 0.15]
        valid = biluo.is_valid(ids, len(labels), is_space)
        n_valid += valid
        assert (first_invalid([names[i] for i in ids], is_space) is None) == valid, ids
    assert n_valid > 50  # both outcomes are exercised


def test_cli_with_a_config(fixture_docs, tmp_path):
    train = save(tmp_path / "train.spacy", fixture_docs[:80])
    dev = save(tmp_path / "dev.spacy", fixture_docs[80:])
    config = REPO / "configs" / "transformer_vner.cfg"
    result = run(config, "--paths.train", train, "--paths.dev", dev)
    assert result.exit_code == 0, result.output
    assert "train: 80 docs" in result.output and "dev: 20 docs" in result.output
    result = run(config)
    assert result.exit_code == 1
    assert "--paths.train" in result.output and "Traceback" not in result.output


def test_cli_bad_arguments(tmp_path):
    result = run(tmp_path / "nope.spacy")
    assert result.exit_code == 1 and "Not found" in result.output
    train = save(tmp_path / "train.spacy", [])
    result = run(train, tmp_path / "nope.spacy")
    assert result.exit_code == 1 and "Corpus not found" in result.output
    result = run(train, "--paths.train", train)
    assert result.exit_code == 1 and "overrides need a config" in result.output


def test_check_passes_clean_corpora(nlp):
    words = ["Paris"]
    train = analyze(examples(nlp, [make_doc(nlp, words, [(0, 1, "LOC")])] * 60), "train")
    dev = analyze(examples(nlp, [make_doc(nlp, ["Rome"], [(0, 1, "LOC")])]), "dev")
    findings = check(train, dev)
    assert {f.level for f in findings} == {"good"}


def test_project_command():
    project = srsly.read_yaml(REPO / "project.yml")
    command = next(c for c in project["commands"] if c["name"] == "debug-data")
    assert "python -m spacy_vanilla_ner debug-data" in command["script"][0]
    assert {"corpus/train.spacy", "corpus/dev.spacy"} <= set(command["deps"])


def fails_once(result, *expected):
    """Exit code 1, one error message with each of `expected`, and no checks."""
    text = " ".join(result.output.split())
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    for snippet in expected:
        assert snippet in text, text
    assert text.count("✘") == 1 and "checks passed" not in text and "Traceback" not in text
    return text


def test_cli_conll_file_says_convert_it(fixture_docs, tmp_path):
    train = save(tmp_path / "train.spacy", fixture_docs[:80])
    dev = save(tmp_path / "dev.spacy", fixture_docs[80:])
    convert_train = f"python -m spacy_vanilla_ner convert {FIXTURE} corpus/train.spacy"
    convert_dev = f"python -m spacy_vanilla_ner convert {FIXTURE} corpus/dev.spacy"
    fails_once(run(FIXTURE), str(FIXTURE), "not a spaCy DocBin", convert_train)
    fails_once(run(train, FIXTURE), convert_dev)
    config = REPO / "configs" / "transformer_vner.cfg"
    fails_once(run(config, "--paths.train", FIXTURE, "--paths.dev", dev), convert_train)
    fails_once(run(config, "--paths.train", train, "--paths.dev", FIXTURE), convert_dev)


def test_cli_directory_without_docbins(fixture_docs, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.conll").write_bytes(FIXTURE.read_bytes())
    fails_once(run(corpus), f"{corpus}: no .spacy files", "python -m spacy_vanilla_ner convert")
    save(corpus / "train.spacy", fixture_docs[:10])  # now with a .spacy file: read
    assert run(corpus).exit_code == 0


def test_cli_unreadable_or_misnamed_docbin(fixture_docs, tmp_path):
    broken = tmp_path / "broken.spacy"
    broken.write_bytes(FIXTURE.read_bytes())  # a CoNLL file named .spacy
    fails_once(run(broken), f"{broken} is not a readable spaCy DocBin")
    truncated = tmp_path / "truncated.spacy"
    truncated.write_bytes(DocBin(docs=fixture_docs).to_bytes()[:200])
    fails_once(run(truncated), f"{truncated} is not a readable spaCy DocBin")
    misnamed = tmp_path / "train.bin"
    misnamed.write_bytes(DocBin(docs=fixture_docs).to_bytes())
    fails_once(run(misnamed), "is a spaCy DocBin", f"rename it, e.g. to {tmp_path / 'train.spacy'}")


def test_read_corpus_refuses_a_conll_file(nlp):
    with pytest.raises(ValueError, match="spacy_vanilla_ner convert"):
        read_corpus(FIXTURE, nlp)
