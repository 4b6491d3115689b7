"""The BILUO rules, stated once: tag ids and names, which tags may follow
which, validity, spans, and the scores that make decoding obey the rules.

Tag ids: 0 is `O`; label i (0-based) has B, I, L, U at 1 + 4i .. 4 + 4i. So the
tag set grows at the end when a label is added, and ties decode to `O`.

Valid sequences: after O, L or U comes O, B or U; after B-X or I-X comes I-X
or L-X; a doc starts with O, B or U and ends with O, L or U. Whitespace
tokens may only be O or I, so no entity starts or ends on whitespace. Every
doc has at least one valid sequence (all O), so decoding never fails and
never needs to drop entities.
"""

from functools import lru_cache
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy

NEG_INF = -1e9  # finite, so that 0 * NEG_INF stays 0 in the CRF sums
MIN_LOG_PROB = -1e4  # floor for log(0): finite scores for decoding, the CRF and the loss
O_TAG = 0
MOVES = "BILU"


def floored_log(probs: numpy.ndarray) -> numpy.ndarray:
    """log(probs), with log(0) (and anything below) raised to MIN_LOG_PROB."""
    with numpy.errstate(divide="ignore"):
        return numpy.maximum(numpy.log(probs), MIN_LOG_PROB)


def tag_names(labels: Sequence[str]) -> List[str]:
    return ["O"] + [f"{move}-{label}" for label in labels for move in MOVES]


def tag_id(move: str, label_index: int) -> int:
    return 1 + 4 * label_index + MOVES.index(move)


@lru_cache(maxsize=64)
def transition_mask(n_labels: int) -> Tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """RETURNS: allowed[prev, next] (K, K), allowed_start (K,), allowed_end (K,), bool.
    Cached per label count, so the arrays are read-only."""
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
    for mask in (allowed, start, end):
        mask.flags.writeable = False
    return allowed, start, end


@lru_cache(maxsize=64)
def whitespace_mask(n_labels: int) -> numpy.ndarray:
    """RETURNS (numpy.ndarray): (K,) bool, the tags a whitespace token may take.
    Cached per label count, so the array is read-only."""
    mask = numpy.zeros((1 + 4 * n_labels,), dtype=bool)
    mask[O_TAG] = True
    mask[[tag_id("I", i) for i in range(n_labels)]] = True
    mask.flags.writeable = False
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

    def emissions(
        self, log_probs: numpy.ndarray, is_space: Optional[numpy.ndarray]
    ) -> numpy.ndarray:
        scores = numpy.asarray(log_probs, dtype="float64")
        if is_space is not None and is_space.any():
            scores = scores.copy()
            scores[is_space] += self.whitespace
        return scores


def is_valid(tags: Sequence[int], n_labels: int, is_space: Optional[Sequence[bool]] = None) -> bool:
    """Whether a tag-id sequence satisfies the BILUO rules (and the whitespace rule)."""
    tags = numpy.asarray(tags, dtype="int64")
    space = None if is_space is None else numpy.asarray(is_space, dtype=bool)
    return not invalid_docs(tags, numpy.array([len(tags)]), n_labels, space)[0]


def invalid_docs(
    tags: numpy.ndarray,
    lengths: numpy.ndarray,
    n_labels: int,
    is_space: Optional[numpy.ndarray] = None,
) -> numpy.ndarray:
    """`not is_valid` for many docs at once.

    tags (numpy.ndarray): (N,) int tag ids of all docs' tokens, doc after doc.
    lengths (numpy.ndarray): (D,) tokens per doc, summing to N.
    is_space (Optional[numpy.ndarray]): (N,) bool, True for whitespace tokens.
    RETURNS (numpy.ndarray): (D,) bool, True for each doc whose tags break a rule.
    """
    lengths = numpy.asarray(lengths, dtype="int64")
    D = len(lengths)
    if not len(tags):
        return numpy.zeros((D,), dtype=bool)
    allowed, start, end = transition_mask(n_labels)
    doc = numpy.repeat(numpy.arange(D), lengths)  # (N,) each token's doc
    firsts = (numpy.cumsum(lengths) - lengths)[lengths > 0]
    lasts = firsts + lengths[lengths > 0] - 1
    broken = numpy.zeros((len(tags),), dtype=bool)  # the token breaks a rule
    broken[firsts] |= ~start[tags[firsts]]
    broken[lasts] |= ~end[tags[lasts]]
    broken[1:] |= ~allowed[tags[:-1], tags[1:]] & (doc[1:] == doc[:-1])
    if is_space is not None:
        broken |= is_space & ~whitespace_mask(n_labels)[tags]
    return numpy.bincount(doc[broken], minlength=D) > 0


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


def spans_of_docs(
    tags: numpy.ndarray, lengths: numpy.ndarray, n_labels: int
) -> List[List[Tuple[int, int, int]]]:
    """`tags_to_spans` of each doc, for the tags of many docs at once.

    tags (numpy.ndarray): (N,) int tag ids of all docs' tokens, doc after doc.
    lengths (numpy.ndarray): (D,) tokens per doc, summing to N.
    RETURNS (List[List[Tuple[int, int, int]]]): (start, end, label index) per
        entity, per doc; start and end count from the doc's first token.
    """
    tags = numpy.asarray(tags, dtype="int64")
    lengths = numpy.asarray(lengths, dtype="int64")
    offsets = numpy.cumsum(lengths) - lengths
    invalid = invalid_docs(tags, lengths, n_labels)
    # In a valid sequence every entity opens with B or U and closes with L or U, in turn.
    move = (tags - 1) % 4
    entity = (tags != O_TAG) & ~numpy.repeat(invalid, lengths)
    opens = numpy.flatnonzero(entity & ((move == 0) | (move == 3)))
    closes = numpy.flatnonzero(entity & ((move == 2) | (move == 3)))
    doc = numpy.repeat(numpy.arange(len(lengths)), lengths)[opens]
    starts = (opens - offsets[doc]).tolist()
    ends = (closes + 1 - offsets[doc]).tolist()
    labels = ((tags[opens] - 1) // 4).tolist()
    bounds = numpy.searchsorted(doc, numpy.arange(len(lengths) + 1)).tolist()
    spans = [list(zip(starts[a:b], ends[a:b], labels[a:b])) for a, b in zip(bounds, bounds[1:])]
    for i in numpy.flatnonzero(invalid).tolist():
        spans[i] = tags_to_spans(tags[offsets[i] : offsets[i] + lengths[i]])
    return spans
