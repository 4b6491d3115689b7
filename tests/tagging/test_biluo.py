"""The BILUO rules: tag ids and names, validity, spans."""

import numpy
import pytest
from spacy.lang.en import English
from spacy.training import biluo_tags_to_spans

from spacy_vanilla_ner.tagging.biluo import (
    MIN_LOG_PROB,
    Constraints,
    floored_log,
    is_valid,
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


def test_floored_log():
    probs = numpy.array([[1.0, 0.5, 1e-30, 0.0, 1e-5000]])
    logs = floored_log(probs)
    assert numpy.isfinite(logs).all()
    assert logs[0, 0] == 0.0 and logs[0, 1] == pytest.approx(numpy.log(0.5))
    assert logs[0, 2] == pytest.approx(numpy.log(1e-30))
    assert logs[0, 3] == logs[0, 4] == MIN_LOG_PROB
