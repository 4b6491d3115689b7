"""Reliability: empty and whitespace docs anywhere in a batch, 5,000-character
tokens, naughty strings, emoji, RTL, NUL and zero-width characters (one test or
a few per row of RELIABILITY.md; the mapping is in docs/reliability.md)."""

import math

import pytest
from spacy.tokens import Doc
from spacy.training import Example

from tests.helpers import (
    EDGE_TEXTS,
    assert_valid_ents,
    ents_of,
    fixture_examples,
    make_nlp,
    naughty_strings,
    train,
)

EMPTY_KINDS = ["empty-text", "empty-words", "whitespace"]


def make_empty(nlp, kind):
    if kind == "empty-text":
        return nlp.make_doc("")
    if kind == "empty-words":
        return Doc(nlp.vocab, words=[])
    return nlp.make_doc("  \n\t \n ")


@pytest.mark.parametrize("kind", EMPTY_KINDS)
@pytest.mark.parametrize("position", ["alone", "first", "middle", "last"])
def test_empty_and_whitespace_docs_in_batch(trained_nlp, dev_texts, kind, position):
    others = dev_texts[:4]
    expected = ents_of([trained_nlp(t) for t in others])
    docs = [trained_nlp.make_doc(t) for t in others]
    empty = make_empty(trained_nlp, kind)
    where = {"alone": None, "first": 0, "middle": 2, "last": len(docs)}[position]
    batch = [empty] if where is None else docs[:where] + [empty] + docs[where:]
    out = list(trained_nlp.pipe(batch, batch_size=16))
    empty_out = out[0 if where is None else where]
    assert len(empty_out.ents) == 0
    assert all(t.ent_iob_ in ("O", "") for t in empty_out)
    if where is not None:
        rest = out[:where] + out[where + 1 :]
        assert ents_of(rest) == expected
    assert trained_nlp("").ents == ()


def test_only_empty_docs(trained_nlp):
    docs = [trained_nlp.make_doc(""), Doc(trained_nlp.vocab, words=[]), trained_nlp.make_doc("   ")]
    assert [d.ents for d in trained_nlp.pipe(docs)] == [(), (), ()]


@pytest.mark.parametrize("text", EDGE_TEXTS, ids=range(len(EDGE_TEXTS)))
def test_edge_texts(trained_nlp, text):
    doc = trained_nlp(text)
    assert doc.text == text
    assert_valid_ents(doc)


def test_5000_char_tokens(trained_nlp):
    base64ish = "QUJD" * 1250
    url = "https://example.com/?q=" + "z" * 4977
    for token in (base64ish, url, "x" * 5000):
        doc = trained_nlp(f"Paris {token} London")
        assert any(len(t) >= 5000 for t in doc)
        assert_valid_ents(doc)
    # Alone, and in a batch with normal docs, output for the normal docs is unchanged.
    texts = ["John Smith lives in Paris .", "x" * 5000, "Google is in California ."]
    alone = ents_of([trained_nlp(t) for t in texts])
    assert ents_of(list(trained_nlp.pipe(texts))) == alone


def test_naughty_strings(trained_nlp):
    strings = naughty_strings()
    assert len(strings) >= 20
    # Alone and all together, and wrapped around an entity-like context.
    wrapped = [f"{s} John Smith visited {s} Paris {s}" for s in strings]
    for docs in (list(trained_nlp.pipe(strings)), list(trained_nlp.pipe(wrapped, batch_size=7))):
        for doc in docs:
            assert_valid_ents(doc)
    for s in strings[:10]:
        assert_valid_ents(trained_nlp(s))


def test_naughty_strings_in_training(dev_texts):
    # Training on pathological text (no entities) next to normal text: finite loss.
    nlp = make_nlp()
    examples = fixture_examples(nlp, limit=8)
    examples += [
        Example(nlp.make_doc(s), nlp.make_doc(s)) for s in naughty_strings()[:30] + EDGE_TEXTS
    ]
    losses = train(nlp, examples, n_epochs=2, batch_size=8)
    assert all(math.isfinite(loss) for loss in losses)
