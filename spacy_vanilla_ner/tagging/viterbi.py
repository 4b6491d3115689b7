"""Constrained Viterbi decoding: the best tag sequence that obeys the BILUO rules."""

from typing import List, NamedTuple, Optional, Sequence

import numpy

from .batching import Flat, flatten, length_groups, split_rows
from .biluo import O_TAG, Constraints


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
    flat = flatten(scores, is_space, constraints)
    return split_rows(viterbi_flat(flat, constraints, max_cells), flat.lengths)


def viterbi_flat(flat: Flat, constraints: Constraints, max_cells: int = 1 << 16) -> numpy.ndarray:
    """`viterbi_batch` on scores that are already one array (`batching.joined`).

    RETURNS (numpy.ndarray): (N,) int tag ids of all tokens, doc after doc.
    """
    tags = numpy.zeros((len(flat.emissions),), dtype="int64")
    for group in length_groups(flat, numpy.flatnonzero(flat.lengths), max_cells):
        paths = _viterbi_group(group.pad(flat.emissions, None), group.n_active, constraints)
        tags[group.tokens] = paths[group.positions, group.rows]
    return tags


def _viterbi_group(
    emissions: numpy.ndarray, n_active: numpy.ndarray, constraints: Constraints
) -> numpy.ndarray:
    """Best paths of a padded, time-major batch, docs longest first.

    Only the transitions the BILUO rules allow are scored: O, B-X and U-X follow
    O, L-* or U-*, and I-X and L-X follow B-X or I-X. Every other transition
    scores NEG_INF, so it is never on a best path: skipping it gives the same
    paths with (1 + 2L)^2 + 4L candidates per token instead of (1 + 4L)^2.

    emissions (numpy.ndarray): (T, B, K) scores.
    n_active (numpy.ndarray): (T,) how many docs are longer than t.
    RETURNS (numpy.ndarray): (T, B) tag ids, meaningful up to each doc's length.
    """
    T, B, K = emissions.shape
    rules = _Rules.of(constraints)
    n_opens, n_closed = rules.opens_from_closed.shape
    # candidates[b, next, prev]: the max over the previous tag is over the last,
    # contiguous axis, and the winner is read by flat index, not fancy indexing.
    cells = numpy.arange(B * n_opens) * n_closed
    backpointers = numpy.empty((T, B, K), dtype="intp")  # read only where written
    best = constraints.start + emissions[0]  # (B, K); a finished doc keeps its own
    # The tags 1.. as (label, BILU): views, written through.
    best_bilu = best[:, 1:].reshape(B, -1, 4)
    pointers_bilu = backpointers[:, :, 1:].reshape(T, B, -1, 4)
    # (numpy reshapes a split of the last axis into a view; a copy would lose the writes.)
    assert numpy.may_share_memory(best_bilu, best)
    assert numpy.may_share_memory(pointers_bilu, backpointers)
    for t in range(1, T):
        n = n_active[t]
        now = best[:n]
        # O, B-X, U-X after O, L-* or U-*. argmax takes the first maximum, and
        # the tags are in id order: ties go to the lowest id, O.
        candidates = now[:, rules.closed][:, None, :] + rules.opens_from_closed
        winners = candidates.argmax(axis=2)  # (n, opens)
        scores = candidates.ravel()[winners.ravel() + cells[: n * n_opens]]
        # I-X, L-X after B-X (ties) or I-X.
        inside = best_bilu[:n, :, None, :2] + rules.inside_from_bi  # (n, label, [I, L], [B, I])
        from_i = inside[..., 1] > inside[..., 0]
        best_bilu[:n, :, 1:3] = numpy.maximum(inside[..., 0], inside[..., 1])
        pointers_bilu[t, :n, :, 1:3] = rules.b_tags + from_i
        now[:, rules.opens] = scores.reshape(n, n_opens)
        backpointers[t][:n, rules.opens] = rules.closed[winners]
        now += emissions[t, :n]
    last = (best + constraints.end).argmax(axis=1)  # (B,)
    # Backtrace every doc at once: docs ending at t start from their best last tag.
    paths = numpy.empty((T, B), dtype="int64")
    tags = last.copy()
    for t in range(T - 2, -1, -1):
        n = n_active[t + 1]
        tags[:n] = backpointers[t + 1, numpy.arange(n), tags[:n]]
        paths[t] = tags
    paths[T - 1] = last
    return paths


class _Rules(NamedTuple):
    """The allowed transitions of `Constraints` in the layout `_viterbi_group` reads."""

    closed: numpy.ndarray  # (1 + 2L,) O, L-*, U-*: the tags an entity may follow
    opens: numpy.ndarray  # (1 + 2L,) O, B-*, U-*: the tags that may follow them
    opens_from_closed: numpy.ndarray  # (opens, closed) transition scores, [next, prev]
    inside_from_bi: numpy.ndarray  # (L, [I, L], [B, I]) transition scores, [next, prev]
    b_tags: numpy.ndarray  # (L, 1) the id of B-X

    @classmethod
    def of(cls, constraints: Constraints) -> "_Rules":
        labels = numpy.arange((constraints.n_tags - 1) // 4)
        b_tags = 1 + 4 * labels  # then I, L, U at +1, +2, +3
        closed = numpy.sort(numpy.concatenate([[O_TAG], b_tags + 2, b_tags + 3]))
        opens = numpy.sort(numpy.concatenate([[O_TAG], b_tags, b_tags + 3]))
        trans = constraints.trans
        bi = numpy.stack([b_tags, b_tags + 1], axis=1)  # (L, 2) prev
        il = numpy.stack([b_tags + 1, b_tags + 2], axis=1)  # (L, 2) next
        return cls(
            closed,
            opens,
            numpy.ascontiguousarray(trans[numpy.ix_(closed, opens)].T),
            trans[bi[:, None, :], il[:, :, None]],
            b_tags[:, None],
        )
