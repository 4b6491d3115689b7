import math
from collections import Counter

import pytest
import spacy
from spacy.tokens import DocBin
from spacy.training import iob_to_biluo
from typer.testing import CliRunner

from spacy_vanilla_ner.convert import (
    ConllFormatError,
    ConllFormatWarning,
    app,
    conll_to_docs,
    convert,
    read_conll_ner,
)
from tests.helpers import FIXTURE, REPO

WIKIGOLD = REPO / "assets" / "wikigold"
WIKIGOLD_SOURCE = REPO.parent / "shared" / "data" / "wikigold" / "wikigold.conll.txt"
CONLL2003 = REPO.parent / "shared" / "data" / "conll2003"

# (articles, sentences, tokens, LOC, ORG, PER, MISC), computed by scripts/split_wikigold.py
WIKIGOLD_COUNTS = {
    "train": (101, 1313, 30296, 758, 683, 669, 568),
    "dev": (22, 189, 4445, 118, 136, 117, 59),
    "test": (22, 194, 4266, 138, 79, 148, 85),
}
LABELS = ("LOC", "ORG", "PER", "MISC")


@pytest.fixture(scope="module")
def vocab():
    return spacy.blank("en").vocab


def stats(docs):
    labels = Counter(ent.label_ for doc in docs for ent in doc.ents)
    return {
        "sentences": sum(len(list(doc.sents)) for doc in docs),
        "tokens": sum(len(doc) for doc in docs),
        "entities": sum(labels.values()),
        **labels,
    }


def ents(docs):
    return [[(e.start, e.end, e.label_) for e in doc.ents] for doc in docs]


def write(path, articles):
    """Write articles of (words, tags) sentences in WikiGold layout."""
    lines = []
    for article in articles:
        for words, tags in article:
            lines.extend(f"{w} {t}" for w, t in zip(words, tags))
            lines.append("")
        lines.extend(["-DOCSTART- O", ""])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def io_to_iob2(tags):
    out, prev = [], "O"
    for tag in tags:
        if tag != "O" and (tag.startswith("B-") or tag[2:] != prev[2:] or prev == "O"):
            out.append("B-" + tag[2:])
        elif tag != "O":
            out.append("I-" + tag[2:])
        else:
            out.append("O")
        prev = tag
    return out


def retag(articles, fn):
    return [[(words, fn(tags)) for words, tags in article] for article in articles]


def test_fixture_counts(vocab, tmp_path):
    articles = read_conll_ner(FIXTURE)
    assert [len(a) for a in articles] == [6, 45, 15, 34]
    docs = conll_to_docs(FIXTURE, vocab)
    assert len(docs) == 100
    expected = {"sentences": 100, "tokens": 2583, "entities": 184}
    expected.update(LOC=55, ORG=47, PER=35, MISC=47)
    assert stats(docs) == expected
    # spaces: all True except the last token of each doc
    assert all(doc.text.count(" ") == len(doc) - 1 for doc in docs)
    # round trip through a DocBin written by `convert`
    out, counts = convert(FIXTURE, tmp_path / "sub" / "fixture.spacy", n_sents=10)
    assert counts == {"docs": 12, "sentences": 100, "tokens": 2583, "entities": 184}
    loaded = list(DocBin().from_disk(out).get_docs(vocab))
    assert stats(loaded) == expected
    assert ents(loaded) == ents(conll_to_docs(FIXTURE, vocab, n_sents=10))


@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_wikigold_split_counts(vocab, split):
    n_articles, n_sents, n_tokens, *per_label = WIKIGOLD_COUNTS[split]
    path = WIKIGOLD / f"{split}.conll"
    assert len(read_conll_ner(path)) == n_articles
    docs = conll_to_docs(path, vocab, n_sents=0)
    assert len(docs) == n_articles
    expected = {"sentences": n_sents, "tokens": n_tokens, "entities": sum(per_label)}
    expected.update(zip(LABELS, per_label))
    assert stats(docs) == expected


def test_wikigold_totals(vocab):
    totals = [sum(c[i] for c in WIKIGOLD_COUNTS.values()) for i in range(7)]
    assert totals == [145, 1696, 39007, 1014, 898, 934, 712]
    # the 39 '#' tokens are tokens, not comments
    n_hash = sum(
        words.count("#")
        for split in WIKIGOLD_COUNTS
        for article in read_conll_ner(WIKIGOLD / f"{split}.conll")
        for words, _ in article
    )
    assert n_hash == 39


def test_wikigold_split_is_reproducible():
    if not WIKIGOLD_SOURCE.exists():
        pytest.skip(f"WikiGold source not found at {WIKIGOLD_SOURCE}")
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "split_wikigold", REPO / "scripts" / "split_wikigold.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = WIKIGOLD_SOURCE.read_bytes().decode("utf-8")
    blocks = module.split_articles(text)
    assert len(blocks) == 145
    assignment = module.assign_splits(len(blocks))
    assert sorted(sum(assignment.values(), [])) == list(range(145))
    for name, indices in assignment.items():
        expected = "".join(blocks[i] for i in indices).encode("utf-8")
        assert (WIKIGOLD / f"{name}.conll").read_bytes() == expected


@pytest.mark.parametrize("n_sents", [2, 3, 7, 0])
def test_n_sents_never_crosses_articles(vocab, n_sents):
    articles = read_conll_ner(FIXTURE)
    docs = conll_to_docs(FIXTURE, vocab, n_sents=n_sents)
    size = lambda a: n_sents or len(a)  # noqa: E731
    assert len(docs) == sum(math.ceil(len(a) / size(a)) for a in articles)
    doc_iter = iter(docs)
    for article in articles:
        for start in range(0, len(article), size(article)):
            group = article[start : start + size(article)]
            doc = next(doc_iter)
            assert [s.text.split(" ") for s in doc.sents] == [words for words, _ in group]
            assert [t.is_sent_start for t in doc] == [
                i == 0 for words, _ in group for i in range(len(words))
            ]
    assert next(doc_iter, None) is None


def test_limit(vocab):
    assert len(conll_to_docs(FIXTURE, vocab, limit=7)) == 7
    assert len(conll_to_docs(FIXTURE, vocab, n_sents=0, limit=2)) == 2
    assert conll_to_docs(FIXTURE, vocab, limit=0) == []


def test_iob2_io_iob1_biluo_same_entities(vocab, tmp_path):
    articles = read_conll_ner(FIXTURE)  # IO (IOB1 without B-)
    iob2 = write(tmp_path / "iob2.conll", retag(articles, io_to_iob2))
    biluo = write(tmp_path / "biluo.conll", retag(articles, lambda t: iob_to_biluo(io_to_iob2(t))))
    assert any(t.startswith("B-") for a in read_conll_ner(iob2) for _, ts in a for t in ts)
    assert any(t.startswith("U-") for a in read_conll_ner(biluo) for _, ts in a for t in ts)
    expected = ents(conll_to_docs(FIXTURE, vocab))
    assert sum(len(e) for e in expected) == 184
    assert ents(conll_to_docs(iob2, vocab)) == expected
    assert ents(conll_to_docs(biluo, vocab)) == expected


def test_adjacent_entities_iob1_iob2_biluo(vocab, tmp_path):
    words = ["Alice", "Bob", "Smith", "met", "Acme", "Corp", "UN"]
    variants = {
        "iob1": ["I-PER", "B-PER", "I-PER", "O", "I-ORG", "I-ORG", "B-ORG"],
        "iob2": ["B-PER", "B-PER", "I-PER", "O", "B-ORG", "I-ORG", "B-ORG"],
        "biluo": ["U-PER", "B-PER", "L-PER", "O", "B-ORG", "L-ORG", "U-ORG"],
    }
    expected = [[(0, 1, "PER"), (1, 3, "PER"), (4, 6, "ORG"), (6, 7, "ORG")]]
    for name, tags in variants.items():
        path = write(tmp_path / f"{name}.conll", [[(words, tags)]])
        assert ents(conll_to_docs(path, vocab)) == expected, name


def test_conll2003_layout_docstart_before_article(vocab, tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(
        # invented text in the CoNLL-2003 layout (no CoNLL-2003 text in the repo)
        "-DOCSTART- -X- -X- O\n\nAcme NNP B-NP B-ORG\nwins VBZ B-VP O\n\n"
        "Jane NNP B-NP B-PER\nDoe NNP I-NP I-PER\n\n"
        "-DOCSTART- -X- -X- O\n\nOSLO NNP B-NP B-LOC\n"  # no trailing blank line
    )
    articles = read_conll_ner(path)
    assert articles == [
        [(["Acme", "wins"], ["B-ORG", "O"]), (["Jane", "Doe"], ["B-PER", "I-PER"])],
        [(["OSLO"], ["B-LOC"])],
    ]
    docs = conll_to_docs(path, vocab, n_sents=0)
    assert [doc.text for doc in docs] == ["Acme wins Jane Doe", "OSLO"]
    assert ents(docs) == [[(0, 1, "ORG"), (2, 4, "PER")], [(0, 1, "LOC")]]


@pytest.mark.parametrize(
    "content,line,snippet",
    [
        ("a O\nb X-PER\n", 2, "X-PER"),
        ("a O\n\nb B-\n", 3, "B-"),
        ("a O\nb\n", 2, "two columns"),
        # BILUO file (has U-): an I- after O cannot be converted
        ("a U-PER\nb O\nc I-PER\nd L-PER\n", 3, "I-PER"),
        # BILUO file: entity never closed
        ("a U-PER\n\nb B-ORG\nc O\n", 4, "'O'"),
        ("a U-PER\n\nb B-ORG\nc I-ORG\n", 4, "not closed"),
        ("a L-PER\n", 1, "L-PER"),
    ],
)
def test_bad_input_names_file_and_line(vocab, tmp_path, content, line, snippet):
    path = tmp_path / "bad.conll"
    path.write_text(content)
    with pytest.raises(ConllFormatError) as excinfo:
        conll_to_docs(path, vocab)
    message = str(excinfo.value)
    assert str(path) in message
    assert f"line {line}:" in message
    assert snippet in message
    assert excinfo.value.line == line
    assert isinstance(excinfo.value, ValueError)


@pytest.mark.parametrize("content", ["", "\n\n  \n", "-DOCSTART- O\n\n-DOCSTART- O\n"])
def test_empty_file(vocab, tmp_path, content):
    path = tmp_path / "empty.conll"
    path.write_text(content)
    with pytest.raises(ConllFormatError, match="empty|no sentences") as excinfo:
        read_conll_ner(path)
    assert str(path) in str(excinfo.value)
    with pytest.raises(ConllFormatError):
        conll_to_docs(path, vocab)


def test_missing_file(vocab, tmp_path):
    with pytest.raises(ConllFormatError, match="not found"):
        conll_to_docs(tmp_path / "nope.conll", vocab)


def test_cli(tmp_path):
    runner = CliRunner()
    out = tmp_path / "out.spacy"
    result = runner.invoke(app, [str(FIXTURE), str(out), "--n-sents", "5", "--limit", "4"])
    assert result.exit_code == 0, result.output
    assert "4 docs" in result.output and "16 sentences" in result.output  # 5+1+5+5
    assert len(DocBin().from_disk(out)) == 4
    bad = tmp_path / "bad.conll"
    bad.write_text("a O\nb X-PER\n")
    result = runner.invoke(app, [str(bad), str(out)])
    assert result.exit_code == 1
    assert "line 2" in result.output and "Traceback" not in result.output


def test_conll2003_counts(vocab):
    path = CONLL2003 / "train.txt"
    if not path.exists():
        pytest.skip(f"CoNLL-2003 not found at {path}")
    articles = read_conll_ner(path)
    assert len(articles) == 946
    docs = conll_to_docs(path, vocab, n_sents=0)
    # 14,987 in the shared task paper = 14,041 sentences + 946 -DOCSTART- lines
    assert stats(docs) == {
        "sentences": 14041,
        "tokens": 203621,
        "entities": 23499,
        "LOC": 7140,
        "ORG": 6321,
        "PER": 6600,
        "MISC": 3438,
    }
    assert not any(t.text == "-DOCSTART-" for doc in docs for t in doc)


@pytest.mark.parametrize(
    "blank",
    ["\ufeff", "\u200b", "\u200c\u200d", "\u2060", "\u00a0", " \ufeff\t", "\u00ad", "\u3000"],
)
def test_invisible_line_is_blank_and_warned(vocab, tmp_path, blank):
    # A real corpus file ended with a line holding only a stray BOM (U+FEFF); lines made
    # of whitespace-like or zero-width characters end a sentence like a blank line.
    path = tmp_path / "invisible.conll"
    path.write_text(f"Acme B-ORG\nwins O\n{blank}\nJane B-PER\n{blank}\n", encoding="utf-8")
    with pytest.warns(ConllFormatWarning) as record:
        docs = conll_to_docs(path, vocab)
    assert [doc.text for doc in docs] == ["Acme wins", "Jane"]
    assert ents(docs) == [[(0, 1, "ORG")], [(0, 1, "PER")]]
    message = str(record[0].message)
    assert str(path) in message and "lines 3, 5" in message


def test_stray_bom_at_line_start(vocab, tmp_path):
    # Two files concatenated: the second one's BOM sits at the start of a line.
    path = tmp_path / "cat.conll"
    text = "\ufeff-DOCSTART- O\n\nAcme B-ORG\n\n\ufeff-DOCSTART- O\n\n\ufeffOslo B-LOC\n"
    path.write_text(text, encoding="utf-8")
    with pytest.warns(ConllFormatWarning, match=r"lines 5, 7"):
        articles = read_conll_ner(path)
    assert articles == [[(["Acme"], ["B-ORG"])], [(["Oslo"], ["B-LOC"])]]


def test_plain_blank_lines_do_not_warn(vocab, tmp_path, recwarn):
    path = tmp_path / "plain.conll"
    path.write_text("Acme B-ORG\n  \t\nJane B-PER\n\r\n", encoding="utf-8")
    assert len(conll_to_docs(path, vocab)) == 2
    assert not [w for w in recwarn if issubclass(w.category, ConllFormatWarning)]


def test_only_invisible_lines_is_empty(tmp_path):
    path = tmp_path / "bom-only.conll"
    path.write_text("\ufeff\n\u200b\n", encoding="utf-8")
    with pytest.warns(ConllFormatWarning), pytest.raises(ConllFormatError, match="empty"):
        read_conll_ner(path)


def test_cli_shows_invisible_line_warning(tmp_path):
    path = tmp_path / "bom-tail.conll"
    path.write_text("Acme B-ORG\nwins O\n\ufeff\n", encoding="utf-8")
    result = CliRunner().invoke(app, [str(path), str(tmp_path / "out.spacy")])
    assert result.exit_code == 0, result.output
    assert "line 3" in result.output and "U+FEFF" in result.output
    assert "1 docs" in result.output


def test_docbin_input_is_refused(vocab, tmp_path):
    """A DocBin (e.g. exported from Prodigy) is found by its `.spacy` name or by its
    content, before it is read as text; text that merely starts like a zlib stream is
    still read as CoNLL."""
    docs = conll_to_docs(FIXTURE, vocab, limit=3)
    named = tmp_path / "train.spacy"
    DocBin(docs=docs).to_disk(named)
    exported = tmp_path / "export.bin"
    exported.write_bytes(named.read_bytes())
    for path in (named, exported):
        for read in (read_conll_ner, lambda p: conll_to_docs(p, vocab)):
            with pytest.raises(ConllFormatError, match="already a spaCy DocBin") as excinfo:
                read(path)
            assert excinfo.value.path == str(path) and excinfo.value.line is None
        with pytest.raises(ConllFormatError, match="nothing to convert"):
            convert(path, tmp_path / "out.spacy")
        assert not (tmp_path / "out.spacy").exists()
    # "x^" is a valid zlib header (0x78 0x5E), but the file is text
    looks_compressed = tmp_path / "x.conll"
    looks_compressed.write_text("x^ B-ORG\nwins O\n", encoding="utf-8")
    assert ents(conll_to_docs(looks_compressed, vocab)) == [[(0, 1, "ORG")]]


def test_cli_refuses_a_docbin_and_says_how_to_train(vocab, tmp_path):
    named = tmp_path / "train.spacy"
    DocBin(docs=conll_to_docs(FIXTURE, vocab, limit=3)).to_disk(named)
    result = CliRunner().invoke(app, [str(named), str(tmp_path / "out.spacy")])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "already a spaCy DocBin (.spacy), nothing to convert" in text
    assert f"python -m spacy_vanilla_ner debug-data {named} [DEV.spacy]" in text
    assert f"python -m spacy train config.cfg --output training --paths.train {named}" in text
    assert "init-config" in text and "Traceback" not in text
    exported = tmp_path / "export.bin"
    exported.write_bytes(named.read_bytes())
    result = CliRunner().invoke(app, [str(exported), str(tmp_path / "out.spacy")])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert f"rename it to {tmp_path / 'export.spacy'}" in text
    assert f"--paths.train {tmp_path / 'export.spacy'}" in text
