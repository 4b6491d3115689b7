"""The linear-chain CRF: its batched torch loss against brute force, finite
differences and an independent numpy forward-backward (marginals)."""

import itertools
import math

import numpy
import pytest

from spacy_vanilla_ner.tagging.biluo import NEG_INF, Constraints, is_valid, tag_id
from spacy_vanilla_ner.tagging.crf import crf_loss_and_gradient

N_LABELS = 2
K = 1 + 4 * N_LABELS


def path_score(tags, scores, constraints):
    total = constraints.start[tags[0]] + constraints.end[tags[-1]]
    total += sum(scores[t, tag] for t, tag in enumerate(tags))
    total += sum(constraints.trans[a, b] for a, b in zip(tags[:-1], tags[1:]))
    return total


def random_constraints(rng, n_labels=N_LABELS, scale=0.3):
    k = 1 + 4 * n_labels
    return Constraints(
        n_labels,
        rng.normal(size=(k, k)) * scale,
        rng.normal(size=k) * scale,
        rng.normal(size=k) * scale,
    )


def test_crf_loss_matches_brute_force_and_gradient():
    rng = numpy.random.default_rng(2)
    constraints = random_constraints(rng)
    T = 4
    emissions = rng.normal(size=(T, K))
    gold = numpy.array([1, 3, -1, 0])  # B-A, L-A, missing, O
    result = crf_loss_and_gradient([emissions], [gold], constraints)

    def log_sum(values):
        top = max(values)
        return top + math.log(sum(math.exp(v - top) for v in values))

    valid = [seq for seq in itertools.product(range(K), repeat=T) if is_valid(seq, N_LABELS)]
    consistent = [seq for seq in valid if all(g < 0 or g == s for g, s in zip(gold, seq))]
    expected = log_sum([path_score(s, emissions, constraints) for s in valid]) - log_sum(
        [path_score(s, emissions, constraints) for s in consistent]
    )
    assert math.isclose(result.loss, expected, rel_tol=1e-7)
    numeric = numpy.zeros_like(emissions)
    for index in numpy.ndindex(*emissions.shape):
        shifted = emissions.copy()
        shifted[index] += 1e-6
        loss = crf_loss_and_gradient([shifted], [gold], constraints).loss
        numeric[index] = (loss - result.loss) / 1e-6
    d_emissions = result.d_emissions[0]
    numpy.testing.assert_allclose(d_emissions, numeric, atol=1e-4)
    # Rows sum to zero: the gradient passes through log-softmax unchanged.
    numpy.testing.assert_allclose(d_emissions.sum(axis=1), 0.0, atol=1e-9)


def test_transition_gradients_match_finite_differences():
    rng = numpy.random.default_rng(5)
    constraints = random_constraints(rng)
    docs = [rng.normal(size=(n, K)) for n in (5, 1, 3)]
    golds = [numpy.array([1, 3, 0, 5, 8]), numpy.array([0]), numpy.array([-1, 2, -1])]
    result = crf_loss_and_gradient(docs, golds, constraints)
    allowed = constraints.trans > NEG_INF / 2
    for name, grad in (
        ("trans", result.d_transitions),
        ("start", result.d_start),
        ("end", result.d_end),
    ):
        base = getattr(constraints, name)
        for index in numpy.ndindex(*base.shape):
            if name == "trans" and not allowed[index]:
                assert grad[index] == 0.0  # ruled-out transitions get no gradient
                continue
            shifted = base.copy()
            shifted[index] += 1e-6
            setattr(constraints, name, shifted)
            numeric = (crf_loss_and_gradient(docs, golds, constraints).loss - result.loss) / 1e-6
            setattr(constraints, name, base)
            assert grad[index] == pytest.approx(numeric, abs=1e-4), (name, index)


def _logsumexp(x, axis):
    top = x.max(axis=axis, keepdims=True)
    return (top + numpy.log(numpy.exp(x - top).sum(axis=axis, keepdims=True))).squeeze(axis)


def reference_marginals(emissions, constraints, allowed=None):
    """Forward-backward in log space, one doc (the package's former numpy CRF)."""
    T, k = emissions.shape
    if allowed is not None:
        emissions = numpy.where(allowed, emissions, NEG_INF)
    alpha, beta = numpy.zeros((T, k)), numpy.zeros((T, k))
    alpha[0] = constraints.start + emissions[0]
    for t in range(1, T):
        alpha[t] = _logsumexp(alpha[t - 1][:, None] + constraints.trans, axis=0) + emissions[t]
    beta[T - 1] = constraints.end
    for t in range(T - 2, -1, -1):
        beta[t] = _logsumexp(constraints.trans + (emissions[t + 1] + beta[t + 1])[None, :], axis=1)
    log_z = float(_logsumexp(alpha[T - 1] + constraints.end, axis=0))
    marginals = numpy.exp(alpha + beta - log_z)
    pairs = numpy.zeros((k, k))
    if T > 1:
        pair = (
            alpha[:-1, :, None]
            + constraints.trans[None]
            + (emissions[1:] + beta[1:])[:, None, :]
            - log_z
        )
        pairs = numpy.exp(pair).sum(axis=0)
    return log_z, marginals, pairs


def reference_loss(log_probs, gold, constraints, is_space):
    T, k = log_probs.shape
    emissions = constraints.emissions(log_probs, is_space)
    log_z, marginals, pairs = reference_marginals(emissions, constraints)
    allowed = numpy.ones((T, k), dtype=bool)
    known = gold >= 0
    allowed[known] = False
    allowed[known, gold[known]] = True
    log_z_gold, gold_marginals, gold_pairs = reference_marginals(emissions, constraints, allowed)
    if log_z_gold <= NEG_INF / 2:
        return 0.0, numpy.zeros((T, k)), numpy.zeros((k, k)), numpy.zeros(k), numpy.zeros(k)
    return (
        log_z - log_z_gold,
        marginals - gold_marginals,
        pairs - gold_pairs,
        marginals[0] - gold_marginals[0],
        marginals[-1] - gold_marginals[-1],
    )


def test_batch_matches_per_doc_forward_backward():
    """Padding, missing tags, whitespace, log(0) floors, length-1 docs and gold
    tags that break the rules (no valid path: no loss, no gradient)."""
    n_labels = 4
    k = 1 + 4 * n_labels
    rng = numpy.random.default_rng(0)
    constraints = random_constraints(rng, n_labels, scale=1.0)
    docs, golds, spaces = [], [], []
    for i in range(40):
        T = int(rng.integers(1, 40))
        scores = rng.normal(size=(T, k)) * 3
        scores -= numpy.log(numpy.exp(scores).sum(axis=1, keepdims=True))
        if i % 3 == 0:
            scores[:, 2] = -1e4  # a floored log(0)
        gold = numpy.zeros(T, dtype="int64")
        if T > 2:
            gold[1] = tag_id("U", 1)
        if i % 5 == 0:
            gold[: T // 2] = -1
        space = numpy.zeros(T, dtype=bool)
        if i % 7 == 0 and T > 3:
            space[3] = True
        if i == 4 and T > 2:
            gold[1] = tag_id("I", 0)  # I after O: invalid
        if i == 8 and T > 3:
            space[1] = True  # a U tag on whitespace: invalid
        docs.append(scores)
        golds.append(gold)
        spaces.append(space)
    expected = [reference_loss(x, g, constraints, s) for x, g, s in zip(docs, golds, spaces)]
    assert sum(e[0] == 0.0 for e in expected) >= 2  # the invalid docs are in the test
    result = crf_loss_and_gradient(docs, golds, constraints, spaces)
    assert result.loss == pytest.approx(sum(e[0] for e in expected), rel=1e-10)
    for got, want in zip(result.d_emissions, expected):
        numpy.testing.assert_allclose(got, want[1], atol=1e-9)
    numpy.testing.assert_allclose(result.d_transitions, sum(e[2] for e in expected), atol=1e-8)
    numpy.testing.assert_allclose(result.d_start, sum(e[3] for e in expected), atol=1e-9)
    numpy.testing.assert_allclose(result.d_end, sum(e[4] for e in expected), atol=1e-9)
