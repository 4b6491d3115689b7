"""A linear-chain CRF over BILUO tags: its loss and gradients for a batch of
docs (numpy forward-backward, in closed form), and the thinc layer that holds
the learned transition scores."""

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy
from thinc.api import Model
from thinc.types import Floats2d

from .batching import Flat, flatten, length_groups, split_rows
from .biluo import NEG_INF, Constraints

TINY = 1e-300  # float64: added to normalisers, so that a dead row stays at 0 rather than NaN
# A normaliser below this may have lost precision to underflow (the paths run
# through tags that the forward or backward scores had all but ruled out, such
# as log(0) floors): those rows are redone in log space, which is exact.
UNDERFLOW = 1e-150


@dataclass
class CRFGradient:
    """The CRF loss of a batch and its gradients (summed over the docs)."""

    loss: float
    d_emissions: List[numpy.ndarray]  # (T_i, K) per doc
    d_transitions: numpy.ndarray  # (K, K)
    d_start: numpy.ndarray  # (K,)
    d_end: numpy.ndarray  # (K,)


@dataclass
class _Marginals:
    """What one forward-backward pass gives for the rows of a padded batch."""

    log_z: numpy.ndarray  # (R,) log partition
    ok: numpy.ndarray  # (R,) bool: the row has a valid path (scaled: and no underflow)
    tags: numpy.ndarray  # (T, R, K) marginal probability of each tag at each position
    # (R,) weights -> (K, K) weighted sum over the rows of the expected transition counts
    pair_counts: Callable[[numpy.ndarray], numpy.ndarray]


class _Chain:
    """The transition, start and end scores, as factors (exp) for the scaled
    pass and as log scores, -inf where ruled out, for the log-space pass."""

    def __init__(self, constraints: Constraints):
        self.step = numpy.exp(constraints.trans)  # NEG_INF -> 0: ruled out
        self.step_t = numpy.ascontiguousarray(self.step.T)
        self.start = numpy.exp(constraints.start)
        self.end = numpy.exp(constraints.end)
        self.log_trans = numpy.where(self.step > 0, constraints.trans, -numpy.inf)
        self.log_start = numpy.where(self.start > 0, constraints.start, -numpy.inf)
        self.log_end = numpy.where(self.end > 0, constraints.end, -numpy.inf)


def _shifted_probs(emissions: numpy.ndarray) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """exp(scores - shift), shift the maximum over the tags of each token.
    Tags scored NEG_INF are impossible, not merely unlikely: probability 0
    whatever the shift (a token may have nothing but NEG_INF, then shift 0).

    emissions (numpy.ndarray): (..., K) scores.
    RETURNS (Tuple[numpy.ndarray, numpy.ndarray]): probs (..., K), shift (...).
    """
    masked = numpy.where(emissions > NEG_INF / 2, emissions, -numpy.inf)
    shift = masked.max(axis=-1)
    shift[~numpy.isfinite(shift)] = 0.0
    return numpy.exp(masked - shift[..., None]), shift


def _marginals_scaled(
    probs: numpy.ndarray, shift: numpy.ndarray, lengths: numpy.ndarray, chain: _Chain
) -> _Marginals:
    """Forward-backward over a padded, time-major batch in probability space,
    one (R, K) x (K, K) matmul per position and direction, over the rows still
    going at that position (rows longest first). Each token's scores are
    shifted by their maximum (`_shifted_probs`); the forward and backward
    vectors are renormalised to sum 1 at every step, the forward normalisers
    giving log Z, and the marginals are normalised per position rather than
    divided by Z, so nothing grows or shrinks with the length. Rows whose
    normalisers come near underflow are marked not ok, for `_marginals_log`.

    probs (numpy.ndarray): (T, R, K) shifted probabilities; padding is not read.
    shift (numpy.ndarray): (T, R) the shifts, 0 for padding.
    lengths (numpy.ndarray): (R,) row lengths, at least 1, non-increasing.
    """
    T, R, K = probs.shape
    n_active = (lengths[None, :] > numpy.arange(T)[:, None]).sum(axis=1)  # (T,)
    # alpha: the forward vector, rows summing to 1 (0 where no path is left).
    alpha = numpy.zeros((T, R, K))
    norms = numpy.ones((T, R))
    numpy.multiply(chain.start, probs[0], out=alpha[0])
    for t in range(T):
        n = n_active[t]
        if t:
            numpy.dot(alpha[t - 1, :n], chain.step, out=alpha[t, :n])
            alpha[t, :n] *= probs[t, :n]
        total = alpha[t, :n].sum(axis=1)
        norms[t, :n] = total
        alpha[t, :n] /= (total + TINY)[:, None]
    # beta: the backward vector, rows summing to 1; emitted[t] = probs[t] *
    # beta[t], what the step into position t is multiplied by.
    beta = numpy.zeros((T, R, K))
    emitted = numpy.zeros((T, R, K))
    for t in range(T - 1, -1, -1):
        n, going_on = n_active[t], n_active[t + 1] if t + 1 < T else 0
        if going_on:
            numpy.multiply(
                probs[t + 1, :going_on], beta[t + 1, :going_on], out=emitted[t + 1, :going_on]
            )
            numpy.dot(emitted[t + 1, :going_on], chain.step_t, out=beta[t, :going_on])
            beta[t, :going_on] /= (beta[t, :going_on].sum(axis=1) + TINY)[:, None]
        beta[t, going_on:n] = chain.end  # the rows whose last token is t

    last = lengths - 1
    z_scaled = alpha[last, numpy.arange(R)] @ chain.end
    with numpy.errstate(divide="ignore"):
        log_z = numpy.log(norms).sum(axis=0) + shift.sum(axis=0) + numpy.log(z_scaled)
    tags = numpy.multiply(beta, alpha, out=beta)  # beta is not needed any more
    tag_norms = tags.sum(axis=2)  # (T, R); 0 for padding
    tags /= (tag_norms + TINY)[:, :, None]
    active = numpy.arange(T)[:, None] < lengths[None, :]  # (T, R)
    ok = numpy.isfinite(log_z) & (z_scaled >= UNDERFLOW) & (norms.min(axis=0) >= UNDERFLOW)
    ok &= numpy.where(active, tag_norms, 1.0).min(axis=0) >= UNDERFLOW

    def pair_counts(weight: numpy.ndarray) -> numpy.ndarray:
        # Pair (t-1, t): alpha[t-1, i] step[i, j] emitted[t, j], which sums to
        # norms[t] * tag_norms[t] over (i, j); emitted is 0 for padding.
        scale = numpy.where(active[1:], weight / (norms[1:] * tag_norms[1:] + TINY), 0.0)
        before = (alpha[:-1] * scale[:, :, None]).reshape(-1, K)
        return chain.step * (before.T @ emitted[1:].reshape(-1, K))

    return _Marginals(log_z, ok, tags, pair_counts)


def _logsumexp(x: numpy.ndarray, axis: int) -> numpy.ndarray:
    """log(sum(exp(x))) along `axis`; -inf where all of x is -inf."""
    top = x.max(axis=axis, keepdims=True)
    top[~numpy.isfinite(top)] = 0.0
    with numpy.errstate(divide="ignore"):
        return numpy.log(numpy.exp(x - top).sum(axis=axis)) + numpy.squeeze(top, axis)


def _marginals_log(emissions: numpy.ndarray, lengths: numpy.ndarray, chain: _Chain) -> _Marginals:
    """Forward-backward in log space, with a (R, K, K) logsumexp per position
    and direction: slower than `_marginals_scaled`, but exact where the mass of
    the valid paths lies in tags whose scores are thousands below the best
    (e.g. log(0) floors that the gold path runs through).

    emissions (numpy.ndarray): (T, R, K) scores; NEG_INF rules a tag out, and
        padding is NEG_INF.
    lengths (numpy.ndarray): (R,) row lengths, at least 1.
    """
    T, R, K = emissions.shape
    scores = numpy.where(emissions > NEG_INF / 2, emissions, -numpy.inf)
    last = lengths - 1
    alpha = numpy.empty((T, R, K))
    alpha[0] = chain.log_start + scores[0]
    for t in range(1, T):
        alpha[t] = _logsumexp(alpha[t - 1][:, :, None] + chain.log_trans, axis=1) + scores[t]
    beta = numpy.empty((T, R, K))
    beta[T - 1] = numpy.where((last == T - 1)[:, None], chain.log_end, -numpy.inf)
    for t in range(T - 2, -1, -1):
        following = _logsumexp(chain.log_trans + (scores[t + 1] + beta[t + 1])[:, None, :], axis=2)
        beta[t] = numpy.where((last == t)[:, None], chain.log_end, following)
    log_z = _logsumexp(alpha[last, numpy.arange(R)] + chain.log_end, axis=1)
    ok = log_z > -numpy.inf
    norm = numpy.where(ok, log_z, numpy.inf)  # no valid path: marginals 0
    tags = numpy.exp(alpha + beta - norm[:, None])
    pairs = numpy.exp(
        alpha[:-1, :, :, None]
        + chain.log_trans
        + (scores[1:] + beta[1:])[:, :, None, :]
        - norm[:, None, None]
    ).sum(axis=0)  # (R, K, K)
    return _Marginals(log_z, ok, tags, lambda weight: numpy.tensordot(weight, pairs, axes=1))


def _gold_paths(
    flat: Flat, gold: numpy.ndarray, constraints: Constraints, chain: _Chain
) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """Score and validity of each doc's gold path, by lookup, for every token at
    once (meaningful only for docs whose gold is complete).

    RETURNS (Tuple[numpy.ndarray, numpy.ndarray]): (D,) path scores, (D,) bool valid.
    """
    D = len(flat.lengths)
    tag = numpy.maximum(gold, 0)
    doc = numpy.repeat(numpy.arange(D), flat.lengths)
    emitted = flat.emissions[numpy.arange(len(tag)), tag]
    within = doc[1:] == doc[:-1]  # (N-1,) pairs of tokens in the same doc
    prev, following = tag[:-1][within], tag[1:][within]
    # (An empty doc reads some other token here; it is never scored.)
    first = tag[numpy.minimum(flat.offsets, len(tag) - 1)]
    final = tag[numpy.maximum(flat.offsets + flat.lengths - 1, 0)]
    score = (
        numpy.bincount(doc, weights=emitted, minlength=D)
        + numpy.bincount(doc[1:][within], weights=constraints.trans[prev, following], minlength=D)
        + constraints.start[first]
        + constraints.end[final]
    )
    broken = numpy.bincount(doc, weights=emitted <= NEG_INF / 2, minlength=D)
    broken += numpy.bincount(doc[1:][within], weights=chain.step[prev, following] == 0, minlength=D)
    valid = (broken == 0) & (chain.start[first] > 0) & (chain.end[final] > 0)
    return score, valid


def crf_loss_and_gradient(
    log_probs: Sequence[numpy.ndarray],
    golds: Sequence[numpy.ndarray],
    constraints: Constraints,
    is_space: Optional[Sequence[Optional[numpy.ndarray]]] = None,
    max_cells: int = 1 << 16,
) -> CRFGradient:
    """Negative log-likelihood of the gold tags under the CRF, for a batch of
    docs, with its gradients in closed form: the expected tag and transition
    counts under the model (forward-backward, numpy float64, vectorised over
    docs of similar length) minus the gold counts. Tested against brute force,
    finite differences and the former torch-autograd implementation in
    tests/tagging/.

    A doc whose gold is complete is scored by lookup, its gold counts are
    one-hot. Missing gold tags (-1) are marginalised over: such a doc's gold
    part is the partition over the paths that agree with its known tags, and
    its gold counts are expected counts under them, so a doc with some missing
    tokens is trained only on what is known. A doc whose gold tags break the
    BILUO rules (e.g. an entity starting on whitespace) has no valid path: it
    adds nothing to the loss or the gradients.

    log_probs (Sequence[numpy.ndarray]): (T_i, K) emission scores per doc (an
        empty doc adds nothing).
    golds (Sequence[numpy.ndarray]): (T_i,) tag ids per doc, -1 for missing.
    is_space (Optional[Sequence[Optional[numpy.ndarray]]]): (T_i,) bool per doc.
    max_cells (int): At most this many padded tokens per forward-backward batch.
    RETURNS (CRFGradient): The summed loss, d_emissions per doc and the
        gradients of the transition, start and end scores.
    """
    K = constraints.n_tags
    flat = flatten(log_probs, is_space, constraints)
    D, N = len(flat.lengths), len(flat.emissions)
    if not numpy.isfinite(flat.emissions).all() or not N:
        # NaN or inf scores: report a NaN loss (the component raises on it)
        # rather than treating the tags as ruled out. No tokens: loss 0.
        fill = float("nan") if N else 0.0
        return CRFGradient(
            loss=fill,
            d_emissions=[numpy.full((n, K), fill) for n in flat.lengths],
            d_transitions=numpy.full((K, K), fill),
            d_start=numpy.full((K,), fill),
            d_end=numpy.full((K,), fill),
        )
    gold = (
        numpy.concatenate([numpy.asarray(g, dtype="int64") for g in golds])
        if D
        else numpy.zeros((0,), dtype="int64")
    )
    chain = _Chain(constraints)
    doc = numpy.repeat(numpy.arange(D), flat.lengths)  # (N,) each token's doc
    complete = numpy.bincount(doc[gold < 0], minlength=D) == 0
    gold_score, gold_valid = _gold_paths(flat, gold, constraints, chain)
    # Rows: each doc's full partition (rows 0..D-1), then the constrained
    # partition of each doc with missing tags (rows D..), where only the gold
    # tag is possible at the known positions.
    partial = numpy.flatnonzero(~complete)
    partial_tokens = numpy.flatnonzero(~complete[doc])
    known = gold[partial_tokens]
    keep = (known < 0)[:, None] | (known[:, None] == numpy.arange(K))
    partial_lengths = flat.lengths[partial]
    rows = Flat(
        numpy.concatenate(
            [flat.emissions, numpy.where(keep, flat.emissions[partial_tokens], NEG_INF)]
        ),
        numpy.concatenate([flat.lengths, partial_lengths]),
        numpy.concatenate(
            [flat.offsets, N + numpy.cumsum(partial_lengths) - partial_lengths]
        ).astype("int64"),
    )
    # A complete gold path that breaks the rules: nothing to compute for the doc.
    wanted = flat.lengths > 0
    wanted[complete] &= gold_valid[complete]
    wanted_rows = numpy.concatenate([numpy.flatnonzero(wanted), D + numpy.arange(len(partial))])

    probs, shift = _shifted_probs(rows.emissions)
    log_z = numpy.zeros((len(rows.lengths),))
    ok = numpy.zeros((len(rows.lengths),), dtype=bool)
    tags = numpy.zeros_like(rows.emissions)  # marginals, per row token
    passes = []
    for group in length_groups(rows, wanted_rows, max_cells):
        marginals = _marginals_scaled(
            group.pad(probs, None), group.pad(shift, 0.0), group.lengths, chain
        )
        scaled_ok = marginals.ok.copy()
        passes.append((group.docs, marginals.pair_counts, scaled_ok))
        redo = numpy.flatnonzero(~scaled_ok)
        if len(redo):
            emissions = group.pad(rows.emissions, NEG_INF)[:, redo]
            exact = _marginals_log(emissions, group.lengths[redo], chain)
            marginals.log_z[redo] = exact.log_z
            marginals.ok[redo] = exact.ok
            marginals.tags[:, redo] = exact.tags
            passes.append((group.docs[redo], exact.pair_counts, exact.ok))
        log_z[group.docs] = marginals.log_z
        ok[group.docs] = marginals.ok
        tags[group.tokens] = marginals.tags[group.positions, group.rows]

    # A doc counts if its partitions have a valid path (a complete doc's gold
    # path was checked by lookup, so its full partition has one too); its gold
    # part enters with a minus.
    valid = wanted & ok[:D]
    valid[partial] &= ok[D:]
    weight = numpy.concatenate([valid, valid[partial]]) * 1.0
    weight[D:] *= -1.0
    nll = numpy.where(valid, log_z[:D], 0.0)
    nll[partial] += weight[D:] * numpy.where(valid[partial], log_z[D:], 0.0)
    token_weight = weight[numpy.repeat(numpy.arange(len(rows.lengths)), rows.lengths)]
    tags *= token_weight[:, None]
    d_start = tags[rows.offsets[wanted_rows]].sum(axis=0)
    d_end = tags[(rows.offsets + rows.lengths - 1)[wanted_rows]].sum(axis=0)
    d_emissions = tags[:N]
    d_emissions[partial_tokens] += tags[N:]
    d_transitions = numpy.zeros((K, K))
    for row_ids, pair_counts, counted in passes:
        d_transitions += pair_counts(weight[row_ids] * counted)
    # The gold part of the complete docs: the path's score, one-hot counts.
    scored = valid & complete
    nll[scored] -= gold_score[scored]
    on_path = scored[doc]
    tokens = numpy.flatnonzero(on_path)
    d_emissions[tokens, gold[tokens]] -= 1.0
    pairs = numpy.flatnonzero(on_path[1:] & (doc[1:] == doc[:-1]))
    d_transitions -= numpy.bincount(gold[pairs] * K + gold[pairs + 1], minlength=K * K).reshape(
        K, K
    )
    d_start -= numpy.bincount(gold[flat.offsets[scored]], minlength=K)
    d_end -= numpy.bincount(gold[(flat.offsets + flat.lengths - 1)[scored]], minlength=K)
    return CRFGradient(
        loss=float(nll.sum()),
        d_emissions=split_rows(d_emissions, flat.lengths),
        d_transitions=d_transitions,
        d_start=d_start,
        d_end=d_end,
    )


def build_crf_layer() -> Model[List[Floats2d], List[Floats2d]]:
    """The CRF's transition scores, as a thinc layer so that they are trained by
    the optimizer and saved with the model. Its forward pass is the identity:
    the component uses the scores in its loss and decoder."""
    return Model(
        "vanilla_ner_crf",
        _crf_forward,
        init=_init_crf,
        dims={"nO": None},
        params={"transitions": None, "start": None, "end": None},
    )


def _crf_forward(
    model: Model, X: List[Floats2d], is_train: bool
) -> Tuple[List[Floats2d], Callable[[List[Floats2d]], List[Floats2d]]]:
    # A module-level function, not a lambda, so that pipelines pickle.
    return X, _identity


def _identity(dY: List[Floats2d]) -> List[Floats2d]:
    return dY


def _init_crf(model: Model, X=None, Y=None) -> None:
    n = model.get_dim("nO")
    model.set_param("transitions", model.ops.alloc2f(n, n))
    model.set_param("start", model.ops.alloc1f(n))
    model.set_param("end", model.ops.alloc1f(n))
