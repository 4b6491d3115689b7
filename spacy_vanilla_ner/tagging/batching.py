"""Docs of different lengths as padded, time-major (T, B, K) batches, for the
CRF and the decoder: docs sorted by length and cut into groups of at most
`max_cells` padded tokens, so that one long doc does not make the whole batch
pad to it. Within a group the docs go from the longest to the shortest, so the
docs still going at position t are the first `Group.n_active[t]` rows: a step
works on that prefix, and nothing is computed for padding."""

from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence

import numpy

from .biluo import Constraints


@dataclass
class Flat:
    """The emission scores of a batch of docs, concatenated along the tokens."""

    emissions: numpy.ndarray  # (N, K) float64, whitespace rule applied
    lengths: numpy.ndarray  # (D,) tokens per doc
    offsets: numpy.ndarray  # (D,) index of each doc's first token in `emissions`


@dataclass
class Group:
    """Some docs of similar length, padded to the longest."""

    docs: numpy.ndarray  # (B,) doc indices, longest first
    lengths: numpy.ndarray  # (B,) non-increasing
    n_active: numpy.ndarray  # (T,) how many docs are longer than t
    rows: numpy.ndarray  # (n,) padded row of each of the group's tokens
    positions: numpy.ndarray  # (n,) position in its doc of each token
    tokens: numpy.ndarray  # (n,) index of each token in Flat.emissions

    def pad(self, values: numpy.ndarray, fill: Optional[float]) -> numpy.ndarray:
        """(T, B, ...) from per-token `values` (N, ...) indexed like Flat.emissions:
        time-major, so that the step at position t is a contiguous (B, ...) block.
        With `fill` None, the padding is left uninitialised (for steps that
        only read the active prefix)."""
        shape = (int(self.lengths[0]), len(self.docs), *values.shape[1:])
        if fill is None:
            padded = numpy.empty(shape, values.dtype)
        else:
            padded = numpy.full(shape, fill, values.dtype)
        padded[self.positions, self.rows] = values[self.tokens]
        return padded


def flatten(
    scores: Sequence[numpy.ndarray],
    is_space: Optional[Sequence[Optional[numpy.ndarray]]],
    constraints: Constraints,
) -> Flat:
    """One (N, K) array of scores for all tokens, with `Constraints.emissions`
    applied once to the whole batch rather than doc by doc."""
    K = constraints.n_tags
    lengths = numpy.array([len(s) for s in scores], dtype="int64")
    if not len(scores) or not lengths.sum():
        return joined(numpy.zeros((0, K)), lengths, None, constraints)
    scores = numpy.concatenate([numpy.asarray(s, dtype="float64").reshape(-1, K) for s in scores])
    space = None
    if is_space is not None and any(s is not None for s in is_space):
        space = numpy.concatenate(
            [
                numpy.zeros((n,), dtype=bool) if s is None else numpy.asarray(s, dtype=bool)
                for s, n in zip(is_space, lengths)
            ]
        )
    return joined(scores, lengths, space, constraints)


def joined(
    scores: numpy.ndarray,
    lengths: numpy.ndarray,
    is_space: Optional[numpy.ndarray],
    constraints: Constraints,
) -> Flat:
    """`flatten` for scores that are already one array.

    scores (numpy.ndarray): (N, K) the scores of all docs' tokens, doc after doc.
    lengths (numpy.ndarray): (D,) tokens per doc, summing to N.
    is_space (Optional[numpy.ndarray]): (N,) bool, True for whitespace tokens.
    """
    lengths = numpy.asarray(lengths, dtype="int64")
    n_tokens = int(lengths.sum())
    if len(scores) != n_tokens:
        raise ValueError(f"{len(scores)} rows of scores for docs of {n_tokens} tokens in all")
    if is_space is not None and len(is_space) != n_tokens:
        raise ValueError(f"{len(is_space)} whitespace flags for docs of {n_tokens} tokens in all")
    offsets = numpy.cumsum(lengths) - lengths
    scores = numpy.asarray(scores, dtype="float64").reshape(-1, constraints.n_tags)
    return Flat(constraints.emissions(scores, is_space), lengths, offsets)


def split_rows(values: numpy.ndarray, lengths: Sequence[int]) -> List[numpy.ndarray]:
    """`values` (N, ...) cut into consecutive pieces of `lengths` rows: views, as
    `numpy.split` gives them, without its cost per piece."""
    ends = numpy.cumsum(lengths).tolist()
    return [values[end - n : end] for end, n in zip(ends, numpy.asarray(lengths).tolist())]


def length_groups(flat: Flat, docs: Sequence[int], max_cells: int) -> Iterator[Group]:
    """`docs` (none empty) sorted by length, longest first, and cut into groups
    of at most `max_cells` padded tokens (a longer doc is a group of its own)."""
    docs = numpy.asarray(docs, dtype="int64")
    order = docs[numpy.argsort(-flat.lengths[docs], kind="stable")]
    start = 0
    while start < len(order):
        # The first doc of a group is its longest: the group pads to it.
        size = max(1, max_cells // int(flat.lengths[order[start]]))
        yield _group(flat, order[start : start + size])
        start += size


def _group(flat: Flat, index: numpy.ndarray) -> Group:
    lengths = flat.lengths[index]
    rows = numpy.repeat(numpy.arange(len(index)), lengths)
    # Position of each token in its doc: its index in the group minus its doc's start.
    starts = numpy.concatenate([[0], numpy.cumsum(lengths)[:-1]])
    positions = numpy.arange(int(lengths.sum())) - starts[rows]
    n_active = numpy.bincount(lengths, minlength=int(lengths[0]) + 1)[::-1].cumsum()[::-1][1:]
    return Group(index, lengths, n_active, rows, positions, flat.offsets[index][rows] + positions)
