"""The component's gold tags: read from the reference's arrays where the predicted doc has the
same tokens, they must equal what spaCy's alignment (`Example.get_aligned_ner`) gives."""

import random

import numpy
import pytest
import spacy
from spacy.tokens import Doc
from spacy.training import Example

from spacy_vanilla_ner.pipeline.vanilla_ner import _same_tokens
from spacy_vanilla_ner.tagging.biluo import tag_names
from tests.helpers import fixture_examples

LABELS = ("LOC", "MISC", "ORG", "PER")
# The component is not told about PER (see `ner`); that it warns is tested in test_vanilla_ner.
pytestmark = pytest.mark.filterwarnings("ignore:.*entities labelled 'PER':UserWarning")


def aligned_ids(ner, eg):
    """The reference: spaCy's aligned BILUO strings, as tag ids (-1: unknown)."""
    names = tag_names(ner.labels)
    aligned = eg.get_aligned_ner()
    return numpy.array([names.index(t) if t in names else -1 for t in aligned], dtype="int64")


@pytest.fixture
def ner():
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("vanilla_ner")
    for label in LABELS[:3]:  # PER stays unknown to the component
        ner.add_label(label)
    return ner


def random_doc(vocab, rng):
    n = rng.randint(0, 12)
    words = [rng.choice(["a", "Bo", "x1", " ", "\n", "-", "Ümit"]) for _ in range(n)]
    spaces = [rng.random() < 0.6 for _ in range(n)]
    ents, inside = [], None
    for _ in range(n):
        r = rng.random()
        if inside is not None and r < 0.4:
            ents.append(f"I-{inside}")
            continue
        inside = None
        if r < 0.6:
            inside = rng.choice(LABELS)
            ents.append(f"B-{inside}")
        elif r < 0.85:
            ents.append("O")
        else:
            ents.append(None)  # missing annotation
    return Doc(vocab, words=words, spaces=spaces, ents=ents)


def test_same_tokens_gives_the_tags_of_spacys_alignment(ner):
    rng = random.Random(0)
    examples = []
    for _ in range(400):
        reference = random_doc(ner.vocab, rng)
        predicted = Doc(ner.vocab, words=[t.text for t in reference],
                        spaces=[bool(t.whitespace_) for t in reference])  # fmt: skip
        examples.append(Example(predicted, reference))
        assert _same_tokens(predicted, reference)
    golds = ner._gold_tags(examples)  # one batch: doc boundaries inside the arrays
    for eg, gold in zip(examples, golds):
        numpy.testing.assert_array_equal(gold, aligned_ids(ner, eg))
    assert sum(int((gold > 0).any()) for gold in golds) > 100  # known labels were there
    for eg, gold in zip(examples[:50], golds):  # the same one example at a time
        numpy.testing.assert_array_equal(ner._gold_tags([eg])[0], gold)


def test_fixture_examples_both_paths_in_one_batch(ner):
    nlp = spacy.blank("en")
    batch = []
    for eg in fixture_examples(nlp):
        # The reference's own tokens (the fast path) and spaCy's tokenizer on its text
        # (different tokens in some sentences: the alignment path).
        for predicted in (eg.reference.copy(), nlp.make_doc(eg.reference.text)):
            predicted.ents = []
            batch.append(Example(predicted, eg.reference))
    same = [_same_tokens(eg.predicted, eg.reference) for eg in batch]
    assert sum(same) >= len(batch) // 2 and not all(same)
    for eg, gold in zip(batch, ner._gold_tags(batch)):
        numpy.testing.assert_array_equal(gold, aligned_ids(ner, eg))


def test_no_entity_annotation_is_all_unknown(ner):
    doc = Doc(ner.vocab, words=["a", "b"])
    empty = Doc(ner.vocab, words=[])
    golds = ner._gold_tags([Example(doc.copy(), doc), Example(empty.copy(), empty)])
    numpy.testing.assert_array_equal(golds[0], [-1, -1])
    assert golds[1].shape == (0,)


def different_tokens(ner, rng, n):
    """Examples whose predicted tokens differ from the reference's (the alignment path)."""
    tokenizer = spacy.blank("en", vocab=ner.vocab).tokenizer
    examples = []
    while len(examples) < n:
        reference = random_doc(ner.vocab, rng)
        predicted = tokenizer(reference.text)
        if not _same_tokens(predicted, reference):
            examples.append(Example(predicted, reference))
    return examples


def test_aligned_tags_are_remembered_across_copies(ner, monkeypatch):
    """`Language.update` copies the examples: the second epoch finds the tags of the first,
    equal to spaCy's alignment, and a change of labels or annotation is not mistaken."""
    examples = different_tokens(ner, random.Random(1), 200)
    first = ner._gold_tags(examples)
    calls = []
    aligned = type(ner)._aligned_gold_tags
    monkeypatch.setattr(
        type(ner), "_aligned_gold_tags", lambda self, eg: calls.append(1) or aligned(self, eg)
    )
    again = ner._gold_tags([eg.copy() for eg in examples])
    assert calls == []
    for eg, a, b in zip(examples, first, again):
        numpy.testing.assert_array_equal(a, aligned_ids(ner, eg))
        numpy.testing.assert_array_equal(b, a)
        assert not b.flags.writeable
    # Other entities on the same tokens: a new key.
    eg = next(eg for eg in examples if eg.reference.ents)
    reference = eg.reference.copy()
    reference.ents = []
    changed = Example(eg.predicted.copy(), reference)
    numpy.testing.assert_array_equal(ner._gold_tags([changed])[0], aligned_ids(ner, changed))
    assert calls == [1]
    # A new label: everything is aligned again, with the new tag ids.
    ner.add_label("PER")
    for eg, gold in zip(examples, ner._gold_tags(examples)):
        numpy.testing.assert_array_equal(gold, aligned_ids(ner, eg))
    assert len(calls) == 1 + len(examples)


def test_the_remembered_tags_are_not_pickled(ner):
    import pickle

    from spacy_vanilla_ner.pipeline import vanilla_ner

    ner._gold_tags(different_tokens(ner, random.Random(2), 20))
    assert len(vanilla_ner._GOLD_CACHES[ner][1]) == 20
    copy = pickle.loads(pickle.dumps(ner))
    assert copy not in vanilla_ner._GOLD_CACHES
