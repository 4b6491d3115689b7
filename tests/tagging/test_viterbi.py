"""Constrained Viterbi, against brute force and the former per-doc backtrace."""

import itertools
import math

import numpy
import pytest

from spacy_vanilla_ner.tagging.biluo import MIN_LOG_PROB, Constraints, is_valid
from spacy_vanilla_ner.tagging.viterbi import viterbi, viterbi_batch
from tests.tagging.reference import random_constraints, reference_viterbi_batch

N_LABELS = 2
K = 1 + 4 * N_LABELS


def test_viterbi_is_the_best_valid_path():
    rng = numpy.random.default_rng(0)
    constraints = Constraints(N_LABELS)
    for _ in range(100):
        T = int(rng.integers(1, 5))
        scores = rng.normal(size=(T, K)) * 3
        space = rng.random(T) < 0.25
        best = max(
            (
                seq
                for seq in itertools.product(range(K), repeat=T)
                if is_valid(seq, N_LABELS, space)
            ),
            key=lambda seq: sum(scores[t, s] for t, s in enumerate(seq)),
        )
        path = viterbi(scores, constraints, space)
        assert is_valid(path, N_LABELS, space)
        assert math.isclose(
            sum(scores[t, s] for t, s in enumerate(path)),
            sum(scores[t, s] for t, s in enumerate(best)),
            abs_tol=1e-9,
        )


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


def path_score(tags, scores, constraints):
    total = constraints.start[tags[0]] + constraints.end[tags[-1]]
    total += sum(scores[t, tag] for t, tag in enumerate(tags))
    return total + sum(constraints.trans[a, b] for a, b in zip(tags[:-1], tags[1:]))


def test_best_valid_path_with_learned_transitions():
    rng = numpy.random.default_rng(2)
    for _ in range(40):
        constraints = random_constraints(rng, N_LABELS, scale=0.5)
        T = int(rng.integers(1, 5))
        scores = rng.normal(size=(T, K)) * 2
        space = rng.random(T) < 0.25
        best = max(
            path_score(seq, scores, constraints)
            for seq in itertools.product(range(K), repeat=T)
            if is_valid(seq, N_LABELS, space)
        )
        path = viterbi(scores, constraints, space)
        assert is_valid(path, N_LABELS, space)
        assert math.isclose(path_score(path, scores, constraints), best, abs_tol=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_matches_former_decoder(seed):
    """Against the former per-doc backtrace (tests/tagging/reference.py), tag
    for tag: scores on a coarse grid so that many paths tie, empty and
    whitespace-only docs, log(0) floors, docs of very different lengths, and
    groups of every size."""
    rng = numpy.random.default_rng(seed)
    for case in range(25):
        n_labels = int(rng.choice([1, 2, 4]))
        k = 1 + 4 * n_labels
        if case % 3:
            constraints = random_constraints(rng, n_labels, scale=0.5)
            constraints.trans = numpy.round(constraints.trans * 2) / 2  # ties here too
        else:
            constraints = Constraints(n_labels)
        docs, spaces = [], []
        for _ in range(int(rng.integers(1, 30))):
            T = int(rng.choice([0, 1, 2, int(rng.integers(3, 20)), int(rng.integers(20, 90))]))
            scores = rng.integers(-3, 1, size=(T, k)) * 0.5
            scores[rng.random((T, k)) < 0.05] = MIN_LOG_PROB
            docs.append(scores)
            spaces.append(rng.random(T) < (1.0 if rng.random() < 0.1 else 0.2))
        max_cells = int(rng.choice([1 << 16, 1, 40, 200]))
        got = viterbi_batch(docs, constraints, spaces, max_cells=max_cells)
        want = reference_viterbi_batch(docs, constraints, spaces)
        assert len(got) == len(want)
        for path, expected in zip(got, want):
            assert path.dtype == expected.dtype and path.shape == expected.shape
            assert path.tolist() == expected.tolist()
