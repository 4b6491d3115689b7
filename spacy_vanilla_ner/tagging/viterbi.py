"""Constrained Viterbi decoding: the best tag sequence that obeys the BILUO rules."""

from typing import List, Optional, Sequence

import numpy

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
        for i, path in zip(
            group,
            _viterbi_group([scores[i] for i in group], [is_space[i] for i in group], constraints),
        ):
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
