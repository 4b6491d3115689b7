"""Constrained Viterbi decoding: the best tag sequence that obeys the BILUO rules."""

from typing import List, Optional, Sequence

import numpy

from .batching import flatten, length_groups
from .biluo import Constraints


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
    tags = numpy.zeros((len(flat.emissions),), dtype="int64")
    for group in length_groups(flat, numpy.flatnonzero(flat.lengths), max_cells):
        paths = _viterbi_group(group.pad(flat.emissions, None), group.n_active, constraints)
        tags[group.tokens] = paths[group.positions, group.rows]
    return numpy.split(tags, numpy.cumsum(flat.lengths)[:-1]) if len(scores) else []


def _viterbi_group(
    emissions: numpy.ndarray, n_active: numpy.ndarray, constraints: Constraints
) -> numpy.ndarray:
    """Best paths of a padded, time-major batch, docs longest first.

    emissions (numpy.ndarray): (T, B, K) scores.
    n_active (numpy.ndarray): (T,) how many docs are longer than t.
    RETURNS (numpy.ndarray): (T, B) tag ids, meaningful up to each doc's length.
    """
    T, B, K = emissions.shape
    # candidates[b, next, prev]: the max over the previous tag is over the last,
    # contiguous axis, and the winner is read by flat index, not fancy indexing.
    trans_next_prev = numpy.ascontiguousarray(constraints.trans.T)
    cells = numpy.arange(B * K) * K
    backpointers = numpy.empty((T, B, K), dtype="intp")  # read only where written
    best = constraints.start + emissions[0]  # (B, K); a finished doc keeps its own
    for t in range(1, T):
        n = n_active[t]
        candidates = best[:n, None, :] + trans_next_prev  # (n, next, prev)
        # argmax takes the first maximum: ties go to the lowest id, O.
        pointers = candidates.argmax(axis=2)
        backpointers[t, :n] = pointers
        best[:n] = candidates.ravel()[pointers.ravel() + cells[: n * K]].reshape(n, K)
        best[:n] += emissions[t, :n]
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
