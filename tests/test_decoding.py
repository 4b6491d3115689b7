"""Constrained Viterbi and the CRF, against brute force."""
import itertools
import math

import numpy
import pytest
from spacy.training import biluo_tags_to_spans

from spacy_vanilla_ner.decoding import (
    Constraints,
    crf_loss_and_gradient,
    is_valid,
    tag_names,
    tags_to_spans,
    viterbi,
    viterbi_batch,
)

N_LABELS = 2
K = 1 + 4 * N_LABELS


def path_score(tags, scores, constraints):
    total = constraints.start[tags[0]] + constraints.end[tags[-1]]
    total += sum(scores[t, tag] for t, tag in enumerate(tags))
    total += sum(constraints.trans[a, b] for a, b in zip(tags[:-1], tags[1:]))
    return total


def test_viterbi_is_the_best_valid_path():
    rng = numpy.random.default_rng(0)
    constraints = Constraints(N_LABELS)
    for _ in range(100):
        T = int(rng.integers(1, 5))
        scores = rng.normal(size=(T, K)) * 3
        space = rng.random(T) < 0.25
        best = max(
            (seq for seq in itertools.product(range(K), repeat=T) if is_valid(seq, N_LABELS, space)),
            key=lambda seq: sum(scores[t, s] for t, s in enumerate(seq)),
        )
        path = viterbi(scores, constraints, space)
        assert is_valid(path, N_LABELS, space)
        assert math.isclose(
            sum(scores[t, s] for t, s in enumerate(path)),
            sum(scores[t, s] for t, s in enumerate(best)),
            abs_tol=1e-9,
        )


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
    from spacy.lang.en import English

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


def test_ties_decode_to_outside():
    path = viterbi(numpy.zeros((4, K)), Constraints(N_LABELS))
    assert path.tolist() == [0, 0, 0, 0]


def test_batch_equals_single_and_handles_empty():
    rng = numpy.random.default_rng(1)
    constraints = Constraints(N_LABELS)
    docs = [rng.normal(size=(n, K)) for n in [0, 3, 1, 70, 7, 0]]
    batched = viterbi_batch(docs, constraints, max_cells=32)
    for doc, path in zip(docs, batched):
        assert path.tolist() == viterbi(doc, constraints).tolist()
    assert batched[0].shape == (0,)


def test_crf_loss_matches_brute_force_and_gradient():
    rng = numpy.random.default_rng(2)
    constraints = Constraints(
        N_LABELS, rng.normal(size=(K, K)) * 0.3, rng.normal(size=K) * 0.3, rng.normal(size=K) * 0.3
    )
    T = 4
    emissions = rng.normal(size=(T, K))
    gold = numpy.array([1, 3, -1, 0])  # B-A, L-A, missing, O
    loss, d_emissions, *_ = crf_loss_and_gradient(emissions, gold, constraints)

    def log_sum(values):
        top = max(values)
        return top + math.log(sum(math.exp(v - top) for v in values))

    valid = [seq for seq in itertools.product(range(K), repeat=T) if is_valid(seq, N_LABELS)]
    consistent = [seq for seq in valid if all(g < 0 or g == s for g, s in zip(gold, seq))]
    expected = log_sum([path_score(s, emissions, constraints) for s in valid]) - log_sum(
        [path_score(s, emissions, constraints) for s in consistent]
    )
    assert math.isclose(loss, expected, rel_tol=1e-7)
    numeric = numpy.zeros_like(emissions)
    for index in numpy.ndindex(*emissions.shape):
        shifted = emissions.copy()
        shifted[index] += 1e-6
        numeric[index] = (crf_loss_and_gradient(shifted, gold, constraints)[0] - loss) / 1e-6
    numpy.testing.assert_allclose(d_emissions, numeric, atol=1e-4)
    # Rows sum to zero: the gradient passes through log-softmax unchanged.
    numpy.testing.assert_allclose(d_emissions.sum(axis=1), 0.0, atol=1e-9)
