"""BILUO tag sets, constrained Viterbi decoding and a linear-chain CRF, in numpy.

Tag ids: 0 is `O`; label i (0-based) has B, I, L, U at 1 + 4i .. 4 + 4i. So the
tag set grows at the end when a label is added, and ties decode to `O`.

Valid sequences: after O, L or U comes O, B or U; after B-X or I-X comes I-X
or L-X; a doc starts with O, B or U and ends with O, L or U. Whitespace
tokens may only be O or I, so no entity starts or ends on whitespace. Every
doc has at least one valid sequence (all O), so decoding never fails and
never needs to drop entities.
"""
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy

NEG_INF = -1e9  # finite, so that 0 * NEG_INF stays 0 in the CRF sums
O_TAG = 0
MOVES = "BILU"


def tag_names(labels: Sequence[str]) -> List[str]:
    return ["O"] + [f"{move}-{label}" for label in labels for move in MOVES]


def tag_id(move: str, label_index: int) -> int:
    return 1 + 4 * label_index + MOVES.index(move)


def transition_mask(n_labels: int) -> Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """RETURNS: allowed[prev, next] (K, K), allowed_start (K,), allowed_end (K,), bool."""
    K = 1 + 4 * n_labels
    allowed = numpy.zeros((K, K), dtype=bool)
    opens = [O_TAG] + [tag_id(m, i) for i in range(n_labels) for m in "BU"]
    closed = [O_TAG] + [tag_id(m, i) for i in range(n_labels) for m in "LU"]
    for prev in closed:
        allowed[prev, opens] = True
    for i in range(n_labels):
        for prev in (tag_id("B", i), tag_id("I", i)):
            allowed[prev, [tag_id("I", i), tag_id("L", i)]] = True
    start = numpy.zeros((K,), dtype=bool)
    start[opens] = True
    end = numpy.zeros((K,), dtype=bool)
    end[closed] = True
    return allowed, start, end


def whitespace_mask(n_labels: int) -> numpy.ndarray:
    """RETURNS (numpy.ndarray): (K,) bool, the tags a whitespace token may take."""
    mask = numpy.zeros((1 + 4 * n_labels,), dtype=bool)
    mask[O_TAG] = True
    mask[[tag_id("I", i) for i in range(n_labels)]] = True
    return mask


class Constraints:
    """Transition scores for a label set: 0 where allowed, NEG_INF where not,
    plus learned CRF scores when given."""

    def __init__(
        self,
        n_labels: int,
        transitions: Optional[numpy.ndarray] = None,
        start: Optional[numpy.ndarray] = None,
        end: Optional[numpy.ndarray] = None,
    ):
        allowed, allowed_start, allowed_end = transition_mask(n_labels)
        self.n_tags = 1 + 4 * n_labels
        self.trans = numpy.where(allowed, 0.0, NEG_INF)
        self.start = numpy.where(allowed_start, 0.0, NEG_INF)
        self.end = numpy.where(allowed_end, 0.0, NEG_INF)
        if transitions is not None:
            self.trans = self.trans + transitions
            self.start = self.start + start
            self.end = self.end + end
        self.whitespace = numpy.where(whitespace_mask(n_labels), 0.0, NEG_INF)

    def emissions(self, log_probs: numpy.ndarray, is_space: Optional[numpy.ndarray]) -> numpy.ndarray:
        scores = numpy.asarray(log_probs, dtype="float64")
        if is_space is not None and is_space.any():
            scores = scores.copy()
            scores[is_space] += self.whitespace
        return scores


def viterbi(
    scores: numpy.ndarray, constraints: Constraints, is_space: Optional[numpy.ndarray] = None
) -> numpy.ndarray:
    """Best valid tag sequence for one doc.

    scores (numpy.ndarray): (T, K) per-token tag scores (log-probabilities).
    is_space (Optional[numpy.ndarray]): (T,) bool, True for whitespace tokens.
    RETURNS (numpy.ndarray): (T,) int tag ids.
    """
    return viterbi_batch([scores], constraints, [is_space])[0]


def viterbi_batch(
    scores: Sequence[numpy.ndarray],
    constraints: Constraints,
    is_space: Optional[Sequence[Optional[numpy.ndarray]]] = None,
    max_cells: int = 1 << 16,
) -> List[numpy.ndarray]:
    """Best valid tag sequence for each doc, vectorised over docs of similar
    length (at most `max_cells` padded tokens at once, so one long doc does not
    make the whole batch pad to its length).

    scores (Sequence[numpy.ndarray]): (T_i, K) scores per doc.
    is_space (Optional[Sequence[Optional[numpy.ndarray]]]): (T_i,) bool per doc.
    RETURNS (List[numpy.ndarray]): (T_i,) int tag ids per doc.
    """
    if is_space is None:
        is_space = [None] * len(scores)
    paths: List[numpy.ndarray] = [numpy.zeros((0,), dtype="int64")] * len(scores)
    order = sorted((i for i in range(len(scores)) if len(scores[i])), key=lambda i: len(scores[i]))
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end - start + 1) * len(scores[order[end]]) <= max_cells:
            end += 1
        group = order[start:end]
        for i, path in zip(group, _viterbi_group([scores[i] for i in group], [is_space[i] for i in group], constraints)):
            paths[i] = path
        start = end
    return paths


def _viterbi_group(
    scores: List[numpy.ndarray], is_space: List[Optional[numpy.ndarray]], constraints: Constraints
) -> List[numpy.ndarray]:
    B, K = len(scores), constraints.n_tags
    lengths = numpy.array([len(s) for s in scores])
    T = int(lengths.max())
    emissions = numpy.zeros((B, T, K))
    for b, (s, space) in enumerate(zip(scores, is_space)):
        emissions[b, : len(s)] = constraints.emissions(s, space)
    backpointers = numpy.zeros((B, T, K), dtype="int32")
    best = constraints.start + emissions[:, 0]  # (B, K)
    columns = numpy.arange(K)
    for t in range(1, T):
        candidates = best[:, :, None] + constraints.trans  # (B, prev, next)
        # argmax takes the first maximum: ties go to the lowest id, O.
        pointers = candidates.argmax(axis=1)  # (B, next)
        step = candidates[numpy.arange(B)[:, None], pointers, columns] + emissions[:, t]
        active = (t < lengths)[:, None]
        best = numpy.where(active, step, best)
        backpointers[:, t] = pointers
    best = best + constraints.end
    paths = []
    for b in range(B):
        path = numpy.zeros((lengths[b],), dtype="int64")
        path[-1] = best[b].argmax()
        pointers = backpointers[b]
        for t in range(lengths[b] - 1, 0, -1):
            path[t - 1] = pointers[t, path[t]]
        paths.append(path)
    return paths


def is_valid(tags: Sequence[int], n_labels: int, is_space: Optional[Sequence[bool]] = None) -> bool:
    """Whether a tag-id sequence satisfies the BILUO rules (and the whitespace rule)."""
    if len(tags) == 0:
        return True
    allowed, start, end = transition_mask(n_labels)
    if not (start[tags[0]] and end[tags[-1]]):
        return False
    if any(not allowed[a, b] for a, b in zip(tags[:-1], tags[1:])):
        return False
    if is_space is not None:
        ws = whitespace_mask(n_labels)
        if any(space and not ws[tag] for space, tag in zip(is_space, tags)):
            return False
    return True


def tags_to_spans(tags: Iterable[int]) -> List[Tuple[int, int, int]]:
    """(start, end, label index) for each entity in a valid tag-id sequence."""
    spans = []
    start = None
    for i, tag in enumerate(tags):
        if tag == O_TAG:
            continue
        label, move = divmod(int(tag) - 1, 4)
        if MOVES[move] == "U":
            spans.append((i, i + 1, label))
        elif MOVES[move] == "B":
            start = i
        elif MOVES[move] == "L" and start is not None:
            spans.append((start, i + 1, label))
            start = None
    return spans


def _logsumexp(x: numpy.ndarray, axis: int) -> numpy.ndarray:
    top = x.max(axis=axis, keepdims=True)
    return (top + numpy.log(numpy.exp(x - top).sum(axis=axis, keepdims=True))).squeeze(axis)


def crf_marginals(
    emissions: numpy.ndarray, constraints: Constraints, allowed: Optional[numpy.ndarray] = None
) -> Tuple[float, numpy.ndarray, numpy.ndarray]:
    """Forward-backward over the valid sequences of a linear-chain CRF.

    emissions (numpy.ndarray): (T, K) emission scores, whitespace rule applied.
    allowed (Optional[numpy.ndarray]): (T, K) bool, restricts each token's tags
        (the gold tag, or all tags where the gold is missing).
    RETURNS (Tuple[float, numpy.ndarray, numpy.ndarray]): log partition, (T, K)
        tag marginals and (K, K) expected transition counts.
    """
    T, K = emissions.shape
    if allowed is not None:
        emissions = numpy.where(allowed, emissions, NEG_INF)
    alpha = numpy.zeros((T, K))
    beta = numpy.zeros((T, K))
    alpha[0] = constraints.start + emissions[0]
    for t in range(1, T):
        alpha[t] = _logsumexp(alpha[t - 1][:, None] + constraints.trans, axis=0) + emissions[t]
    beta[T - 1] = constraints.end
    for t in range(T - 2, -1, -1):
        beta[t] = _logsumexp(constraints.trans + (emissions[t + 1] + beta[t + 1])[None, :], axis=1)
    log_z = float(_logsumexp(alpha[T - 1] + constraints.end, axis=0))
    marginals = numpy.exp(alpha + beta - log_z)
    if T > 1:
        pair = (
            alpha[:-1, :, None]
            + constraints.trans[None, :, :]
            + (emissions[1:] + beta[1:])[:, None, :]
            - log_z
        )
        pair_counts = numpy.exp(pair).sum(axis=0)
    else:
        pair_counts = numpy.zeros((K, K))
    return log_z, marginals, pair_counts


def crf_loss_and_gradient(
    log_probs: numpy.ndarray,
    gold: numpy.ndarray,
    constraints: Constraints,
    is_space: Optional[numpy.ndarray] = None,
) -> Tuple[float, numpy.ndarray, numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """Negative log-likelihood of the gold tags under the CRF, for one doc.

    Missing gold tags (-1) are marginalised over, so a doc with some missing
    tokens is trained only on what is known.

    log_probs (numpy.ndarray): (T, K) emission scores.
    gold (numpy.ndarray): (T,) tag ids, -1 for missing.
    RETURNS: loss, d_emissions (T, K), d_transitions (K, K), d_start (K,), d_end (K,).
    """
    T, K = log_probs.shape
    emissions = constraints.emissions(log_probs, is_space)
    log_z, marginals, pairs = crf_marginals(emissions, constraints)
    allowed = numpy.ones((T, K), dtype=bool)
    known = gold >= 0
    allowed[known] = False
    allowed[known, gold[known]] = True
    log_z_gold, gold_marginals, gold_pairs = crf_marginals(emissions, constraints, allowed)
    if log_z_gold <= NEG_INF / 2:
        # The gold sequence breaks the BILUO rules (e.g. an entity starting on
        # whitespace): no valid path, so no signal from this doc.
        zeros = numpy.zeros((K,))
        return 0.0, numpy.zeros((T, K)), numpy.zeros((K, K)), zeros, zeros.copy()
    d_emissions = marginals - gold_marginals
    d_trans = pairs - gold_pairs
    d_start = marginals[0] - gold_marginals[0]
    d_end = marginals[-1] - gold_marginals[-1]
    return log_z - log_z_gold, d_emissions, d_trans, d_start, d_end
