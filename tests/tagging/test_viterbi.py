"""Constrained Viterbi, against brute force."""

import itertools
import math

import numpy

from spacy_vanilla_ner.tagging.biluo import Constraints, is_valid
from spacy_vanilla_ner.tagging.viterbi import viterbi, viterbi_batch

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
