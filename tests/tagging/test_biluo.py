"""The BILUO rules: tag ids and names, validity, spans."""

import numpy
import pytest
from spacy.lang.en import English
from spacy.training import biluo_tags_to_spans

from spacy_vanilla_ner.tagging.biluo import (
    MIN_LOG_PROB,
    Constraints,
    floored_log,
    invalid_docs,
    is_valid,
    spans_of_docs,
    tag_names,
    tags_to_spans,
)
from spacy_vanilla_ner.tagging.viterbi import viterbi

N_LABELS = 2
K = 1 + 4 * N_LABELS


@pytest.mark.parametrize(
    "argmax_tags",
    [
        ["I-A", "L-A"],  # I first
        ["B-A", "O"],  # B then O
        ["O", "L-B", "O"],  # lone L
        ["B-A", "I-B", "L-B"],  # label switch
        ["U-A", "I-A", "I-A"],
    ],
)
def test_invalid_argmax_is_repaired(argmax_tags):
    names = tag_names(["A", "B"])
    scores = numpy.full((len(argmax_tags), K), -5.0)
    for t, tag in enumerate(argmax_tags):
        scores[t, names.index(tag)] = -0.1
    path = viterbi(scores, Constraints(N_LABELS))
    assert is_valid(path, N_LABELS)
    assert not is_valid([names.index(t) for t in argmax_tags], N_LABELS)
    # spaCy's converter accepts the result (no E067).

    doc = English()(" ".join(f"w{i}" for i in range(len(argmax_tags))))
    spans = biluo_tags_to_spans(doc, [names[i] for i in path])
    assert [(s.start, s.end) for s in spans] == [(s, e) for s, e, _ in tags_to_spans(path)]


def test_whitespace_never_bounds_an_entity():
    names = tag_names(["A", "B"])
    scores = numpy.full((3, K), -5.0)
    scores[0, names.index("U-A")] = 0.0
    scores[1, names.index("U-A")] = 0.0  # the whitespace token wants to be an entity
    scores[2, names.index("O")] = 0.0
    path = viterbi(scores, Constraints(N_LABELS), numpy.array([False, True, False]))
    assert names[path[1]] in ("O",) or names[path[1]].startswith("I-")


def reference_is_valid(tags, n_labels, is_space):
    """The rules of tagging/biluo.py's docstring, one token at a time."""
    names = tag_names([str(i) for i in range(n_labels)])
    prev = "O"
    for tag, space in zip(tags, is_space):
        name = names[tag]
        if space and not (name == "O" or name.startswith("I-")):
            return False
        if prev[0] in "BI":
            if name[0] not in "IL" or name[2:] != prev[2:]:
                return False
        elif name[0] not in "OBU":
            return False
        prev = name
    return prev[0] in "OLU"


def test_is_valid_follows_the_rules():
    rng = numpy.random.default_rng(3)
    for _ in range(2000):
        T = int(rng.integers(0, 6))
        tags = rng.integers(0, K, size=T)
        space = rng.random(T) < 0.2
        assert is_valid(tags, N_LABELS, space) == reference_is_valid(tags, N_LABELS, space)
        assert is_valid(tags.tolist(), N_LABELS) == reference_is_valid(tags, N_LABELS, [False] * T)


def _random_docs(rng, n_docs):
    """Tag sequences of 0-7 tokens, about half of them valid (decoded from random scores),
    and whitespace flags, concatenated: (tags, lengths, space)."""
    docs, spaces = [], []
    for _ in range(n_docs):
        T = int(rng.integers(0, 8))
        space = rng.random(T) < 0.15
        if rng.random() < 0.5:
            tags = viterbi(rng.normal(size=(T, K)), Constraints(N_LABELS), space)
        else:
            tags = rng.integers(0, K, size=T)
        docs.append(tags)
        spaces.append(space)
    lengths = numpy.array([len(d) for d in docs])
    return docs, numpy.concatenate(docs).astype("int64"), lengths, numpy.concatenate(spaces)


def test_invalid_docs_is_is_valid_per_doc():
    """One vectorised pass over many docs gives each doc's verdict, docs never leaking
    into each other (an entity open at the end of one doc, empty docs)."""
    rng = numpy.random.default_rng(5)
    docs, tags, lengths, space = _random_docs(rng, 400)
    offsets = numpy.cumsum(lengths) - lengths
    want_space = [
        not reference_is_valid(d, N_LABELS, space[o : o + len(d)]) for d, o in zip(docs, offsets)
    ]
    want_plain = [not reference_is_valid(d, N_LABELS, [False] * len(d)) for d in docs]
    assert 0 < sum(want_space) < len(docs)
    assert invalid_docs(tags, lengths, N_LABELS, space).tolist() == want_space
    assert invalid_docs(tags, lengths, N_LABELS).tolist() == want_plain
    names = tag_names(["A", "B"])
    b_a, l_a = names.index("B-A"), names.index("L-A")
    # B-A ending one doc and L-A starting the next: both invalid, though the pair is allowed.
    assert invalid_docs(numpy.array([b_a, l_a]), numpy.array([1, 1]), N_LABELS).tolist() == [
        True,
        True,
    ]
    assert invalid_docs(numpy.zeros((0,), "int64"), numpy.array([0, 0]), N_LABELS).tolist() == [
        False,
        False,
    ]


def test_spans_of_docs_is_tags_to_spans_per_doc():
    rng = numpy.random.default_rng(6)
    docs, tags, lengths, _ = _random_docs(rng, 400)
    got = spans_of_docs(tags, lengths, N_LABELS)
    assert got == [tags_to_spans(d) for d in docs]
    assert sum(len(spans) for spans in got) > 100
    assert spans_of_docs(numpy.zeros((0,), "int64"), numpy.array([], "int64"), N_LABELS) == []


def test_floored_log():
    probs = numpy.array([[1.0, 0.5, 1e-30, 0.0, 1e-5000]])
    logs = floored_log(probs)
    assert numpy.isfinite(logs).all()
    assert logs[0, 0] == 0.0 and logs[0, 1] == pytest.approx(numpy.log(0.5))
    assert logs[0, 2] == pytest.approx(numpy.log(1e-30))
    assert logs[0, 3] == logs[0, 4] == MIN_LOG_PROB
