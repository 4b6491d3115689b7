"""The linear-chain CRF: its loss and gradients against brute force, finite
differences, an independent log-space forward-backward (marginals) and the
former torch-autograd implementation (tests/tagging/reference.py)."""

import itertools
import math

import numpy
import pytest

from spacy_vanilla_ner.tagging.biluo import (
    MIN_LOG_PROB,
    NEG_INF,
    Constraints,
    is_valid,
    tag_id,
    transition_mask,
)
from spacy_vanilla_ner.tagging.crf import CRFGradient, crf_loss_and_gradient
from tests.tagging.reference import random_constraints, reference_crf_loss_and_gradient

N_LABELS = 2
K = 1 + 4 * N_LABELS


def path_score(tags, scores, constraints):
    total = constraints.start[tags[0]] + constraints.end[tags[-1]]
    total += sum(scores[t, tag] for t, tag in enumerate(tags))
    total += sum(constraints.trans[a, b] for a, b in zip(tags[:-1], tags[1:]))
    return total


def test_crf_loss_matches_brute_force_and_gradient():
    rng = numpy.random.default_rng(2)
    constraints = random_constraints(rng, N_LABELS)
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
    constraints = random_constraints(rng, N_LABELS)
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


# The vectorised loss against the former torch-autograd one (tests/tagging/reference.py).


def random_gold(rng, T, n_labels):
    """A valid BILUO tag sequence of length T (a random walk over the allowed moves)."""
    allowed, allowed_start, allowed_end = transition_mask(n_labels)
    while True:
        tags = [int(rng.choice(numpy.flatnonzero(allowed_start)))]
        for _ in range(T - 1):
            tags.append(int(rng.choice(numpy.flatnonzero(allowed[tags[-1]]))))
        if allowed_end[tags[-1]]:
            return numpy.array(tags, dtype="int64")


def random_batch(rng, n_docs, n_labels, max_len=60, scattered_floors=False):
    """Docs as the component sees them: log-softmax scores with some log(0)
    floors, gold tags with missing stretches, whitespace tokens, and a few gold
    sequences that break the rules (tag on whitespace, I after O).

    Floors are a whole tag ruled out in a doc whose gold is complete, or with
    `scattered_floors`, a fifth of the scores in any doc, so that some valid
    paths (gold or all of them) run through floors only."""
    k = 1 + 4 * n_labels
    docs, golds, spaces = [], [], []
    for i in range(n_docs):
        T = int(rng.integers(1, max_len + 1)) if i % 6 else 1
        scores = rng.normal(size=(T, k)) * 3
        scores -= numpy.log(numpy.exp(scores).sum(axis=1, keepdims=True))
        if scattered_floors and i % 2:
            scores[rng.random((T, k)) < 0.2] = MIN_LOG_PROB
        elif i % 4 == 1 and i % 5 not in (2, 4):
            scores[:, rng.integers(k)] = MIN_LOG_PROB  # in docs with complete gold
        gold = random_gold(rng, T, n_labels)
        space = numpy.zeros(T, dtype=bool)
        if i % 3 == 0:
            space = (gold == 0) & (rng.random(T) < 0.3)
        if i % 5 == 2:
            gold[rng.random(T) < 0.5] = -1
        if i % 5 == 4:
            gold[:] = -1
        if i % 11 == 3 and T > 2:
            space[1] = True
            gold[1] = tag_id("U", 0)  # an entity on whitespace
        if i % 13 == 5 and T > 3:
            gold[1], gold[2] = 0, tag_id("I", 0)  # I after O
        docs.append(scores)
        golds.append(gold)
        spaces.append(space if space.any() or i % 2 else None)
    return docs, golds, spaces


def exact_result(docs, golds, constraints, spaces):
    """Loss and gradients summed from the per-doc log-space forward-backward
    (`reference_loss`), exact whatever the floors."""
    per_doc = [
        reference_loss(x, g, constraints, numpy.zeros(len(x), bool) if s is None else s)
        for x, g, s in zip(docs, golds, spaces)
    ]
    return CRFGradient(
        loss=sum(e[0] for e in per_doc),
        d_emissions=[e[1] for e in per_doc],
        d_transitions=sum(e[2] for e in per_doc),
        d_start=sum(e[3] for e in per_doc),
        d_end=sum(e[4] for e in per_doc),
    )


def assert_same_result(got, want, rtol=1e-8):
    scale = max(1.0, max(numpy.abs(d).max(initial=0.0) for d in want.d_emissions))
    assert got.loss == pytest.approx(want.loss, rel=rtol, abs=1e-12)
    assert len(got.d_emissions) == len(want.d_emissions)
    for g, w in zip(got.d_emissions, want.d_emissions):
        assert g.shape == w.shape
        numpy.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * scale)
    for name in ("d_transitions", "d_start", "d_end"):
        want_grad = getattr(want, name)
        numpy.testing.assert_allclose(
            getattr(got, name),
            want_grad,
            rtol=rtol,
            atol=rtol * max(1.0, numpy.abs(want_grad).max()),
            err_msg=name,
        )


@pytest.mark.parametrize("seed", range(6))
def test_matches_former_implementation(seed):
    rng = numpy.random.default_rng(seed)
    n_labels = 4
    constraints = random_constraints(rng, n_labels, scale=1.0)
    docs, golds, spaces = random_batch(rng, 48, n_labels)
    want = reference_crf_loss_and_gradient(docs, golds, constraints, spaces)
    assert want.loss > 0
    for max_cells in (1 << 16, 150):  # one padded batch; groups of similar length
        got = crf_loss_and_gradient(docs, golds, constraints, spaces, max_cells=max_cells)
        assert_same_result(got, want)


def test_docs_without_a_valid_path_add_nothing():
    """Gold that breaks the rules (complete or with missing tags), a row with
    every tag ruled out, an empty doc, and a batch of nothing else: loss 0,
    gradients 0."""
    rng = numpy.random.default_rng(3)
    constraints = random_constraints(rng, N_LABELS)
    ruled_out = rng.normal(size=(4, K))
    ruled_out[2] = NEG_INF
    docs = [rng.normal(size=(3, K)), rng.normal(size=(3, K)), ruled_out, numpy.zeros((0, K))]
    golds = [
        numpy.array([0, 2, 3]),
        numpy.array([-1, 0, tag_id("L", 0)]),
        numpy.full(4, -1),
        numpy.zeros(0, dtype="int64"),
    ]
    spaces = [None, numpy.array([False, True, False]), None, None]
    for result in (
        crf_loss_and_gradient(docs, golds, constraints, spaces),
        reference_crf_loss_and_gradient(docs, golds, constraints, spaces),
    ):
        assert result.loss == 0.0
        for grad in [*result.d_emissions, result.d_transitions, result.d_start, result.d_end]:
            assert not grad.any()
    # Next to a valid doc, they change nothing.
    valid = rng.normal(size=(5, K))
    valid_gold = numpy.array([1, 2, 3, 0, -1])
    alone = crf_loss_and_gradient([valid], [valid_gold], constraints)
    mixed = crf_loss_and_gradient(
        [valid, *docs], [valid_gold, *golds], constraints, [None, *spaces]
    )
    assert_same_result(
        mixed,
        reference_crf_loss_and_gradient(
            [valid, *docs], [valid_gold, *golds], constraints, [None, *spaces]
        ),
    )
    assert [d.shape for d in mixed.d_emissions] == [(5, K), (3, K), (3, K), (4, K), (0, K)]
    assert mixed.loss == pytest.approx(alone.loss, rel=1e-12)
    numpy.testing.assert_allclose(mixed.d_emissions[0], alone.d_emissions[0], atol=1e-12)
    numpy.testing.assert_allclose(mixed.d_transitions, alone.d_transitions, atol=1e-12)


def test_no_tokens():
    constraints = Constraints(N_LABELS)
    assert crf_loss_and_gradient([], [], constraints).loss == 0.0
    result = crf_loss_and_gradient([numpy.zeros((0, K))], [numpy.zeros(0, "int64")], constraints)
    assert result.loss == 0.0 and result.d_emissions[0].shape == (0, K)
    assert not result.d_transitions.any()


@pytest.mark.parametrize("seed", range(3))
def test_matches_exact_forward_backward_through_floors(seed):
    """Scattered log(0) floors: some gold paths (or all valid paths) run
    through them, and their mass is below what a scaled pass holds. Those docs
    are redone in log space; the former implementation got them wrong (it
    dropped the doc or lost the partition), so this compares with the exact
    per-doc reference instead."""
    rng = numpy.random.default_rng(100 + seed)
    n_labels = 4
    constraints = random_constraints(rng, n_labels, scale=1.0)
    docs, golds, spaces = random_batch(rng, 32, n_labels, scattered_floors=True)
    want = exact_result(docs, golds, constraints, spaces)
    for max_cells in (1 << 16, 150):
        assert_same_result(
            crf_loss_and_gradient(docs, golds, constraints, spaces, max_cells=max_cells), want
        )


def test_long_doc_is_finite_and_exact():
    """A 2,000-token doc (missing tags in the middle) next to short ones, in a
    padded group of its own or with all of them: as the exact log-space
    reference and the former implementation."""
    rng = numpy.random.default_rng(4)
    n_labels = 4
    constraints = random_constraints(rng, n_labels, scale=1.0)
    docs, golds, spaces = random_batch(rng, 6, n_labels)
    T = 2000
    scores = rng.normal(size=(T, 1 + 4 * n_labels)) * 4
    scores -= numpy.log(numpy.exp(scores).sum(axis=1, keepdims=True))
    gold = random_gold(rng, T, n_labels)
    gold[500:700] = -1
    docs, golds, spaces = [*docs, scores], [*golds, gold], [*spaces, None]
    want = exact_result(docs, golds, constraints, spaces)
    for max_cells in (1 << 16, 4000):
        got = crf_loss_and_gradient(docs, golds, constraints, spaces, max_cells=max_cells)
        assert numpy.isfinite(got.loss) and got.loss > 1000
        assert all(numpy.isfinite(d).all() for d in got.d_emissions)
        numpy.testing.assert_allclose(got.d_emissions[-1].sum(axis=1), 0.0, atol=1e-9)
        assert_same_result(got, want)
    assert_same_result(got, reference_crf_loss_and_gradient(docs, golds, constraints, spaces))


def test_non_finite_scores_give_nan():
    constraints = Constraints(N_LABELS)
    scores = numpy.zeros((3, K))
    scores[1, 2] = numpy.nan
    result = crf_loss_and_gradient(
        [numpy.zeros((2, K)), scores],
        [numpy.zeros(2, "int64"), numpy.zeros(3, "int64")],
        constraints,
    )
    assert math.isnan(result.loss)
    assert [d.shape for d in result.d_emissions] == [(2, K), (3, K)]
    assert all(
        numpy.isnan(g).all()
        for g in [*result.d_emissions, result.d_transitions, result.d_start, result.d_end]
    )


def test_gradients_match_finite_differences_across_groups():
    """Directional derivatives of the loss, for a batch cut into several
    padded groups, with missing tags, whitespace and an invalid doc."""
    rng = numpy.random.default_rng(7)
    n_labels = 2
    constraints = random_constraints(rng, n_labels, scale=0.5)
    docs, golds, spaces = random_batch(rng, 14, n_labels, max_len=12)

    def loss(docs, constraints):
        return crf_loss_and_gradient(docs, golds, constraints, spaces, max_cells=20).loss

    result = crf_loss_and_gradient(docs, golds, constraints, spaces, max_cells=20)
    h = 1e-5
    for _ in range(4):
        direction = [rng.normal(size=d.shape) for d in docs]
        plus = [d + h * v for d, v in zip(docs, direction)]
        minus = [d - h * v for d, v in zip(docs, direction)]
        numeric = (loss(plus, constraints) - loss(minus, constraints)) / (2 * h)
        analytic = sum((g * v).sum() for g, v in zip(result.d_emissions, direction))
        assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-6)
    for name, grad in (
        ("trans", result.d_transitions),
        ("start", result.d_start),
        ("end", result.d_end),
    ):
        base = getattr(constraints, name)
        direction = rng.normal(size=base.shape) * (base > NEG_INF / 2)
        values = []
        for sign in (1, -1):
            setattr(constraints, name, base + sign * h * direction)
            values.append(loss(docs, constraints))
        setattr(constraints, name, base)
        numeric = (values[0] - values[1]) / (2 * h)
        assert (grad * direction).sum() == pytest.approx(numeric, rel=1e-6, abs=1e-6), name


@pytest.mark.parametrize("floor", [MIN_LOG_PROB, -740.0, -300.0])
@pytest.mark.parametrize("gold", [[0, tag_id("U", 0), 0], [-1, tag_id("L", 0), -1]])
def test_paths_through_floored_scores_are_exact(floor, gold):
    """Every valid path runs through a floored score (the model rules out what
    the gold needs): the partition (complete gold) or the gold partition
    (missing tags) is exp(floor)-small, below what a scaled pass holds exactly
    (log(0) floors underflow to 0, -740 to a subnormal). Loss and gradients
    stay those of brute force. The former implementation, with log(0) floors,
    reported a loss of ~8,600 (brute force: 1.57) for the first gold and
    dropped the doc for the second; with -740 it was 0.2 % off."""
    n_labels = 1
    k = 1 + 4 * n_labels
    constraints = Constraints(n_labels)
    scores = numpy.full((3, k), floor)
    scores[0, 0] = 0.0  # O, sure
    scores[1, tag_id("L", 0)] = 0.0  # L, sure: no valid path without a floor
    scores[2, 0] = -0.5
    scores[2, tag_id("U", 0)] = -1.0
    gold = numpy.array(gold)
    result = crf_loss_and_gradient([scores], [gold], constraints)

    def marginals(paths):
        path_scores = numpy.array([path_score(s, scores, constraints) for s in paths])
        top = path_scores.max()
        probs = numpy.exp(path_scores - top)
        tags = numpy.zeros((3, k))
        for p, s in zip(probs / probs.sum(), paths):
            tags[numpy.arange(3), s] += p
        return top + math.log(probs.sum()), tags

    valid = [s for s in itertools.product(range(k), repeat=3) if is_valid(s, n_labels)]
    log_z, expected = marginals(valid)
    log_z_gold, gold_tags = marginals(
        [s for s in valid if all(g < 0 or g == t for g, t in zip(gold, s))]
    )
    assert result.loss == pytest.approx(log_z - log_z_gold, rel=1e-10)
    numpy.testing.assert_allclose(result.d_emissions[0], expected - gold_tags, atol=1e-10)
