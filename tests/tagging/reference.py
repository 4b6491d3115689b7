"""The CRF loss and the Viterbi decoder as they were before they were
vectorised (commit 936a1c6): torch autograd over the scaled forward algorithm,
and a per-doc Python backtrace. Kept here, not in the package, as references
for the equivalence tests; the CRFGradient they return is the package's.

One known difference: where all the valid paths of a partition (full, or
gold with missing tags) run through scores some 700 below the best of their
position (log(0) floors), the scaled forward here underflows, losing the
partition or dropping the doc; the package redoes those docs in log space.
Tests compare such cases with brute force or an exact log-space reference.
Also: random learned constraints for the tagging tests."""

from typing import List, Optional, Sequence, Tuple

import numpy
import torch
import torch.nn.functional as F

from spacy_vanilla_ner.tagging.biluo import NEG_INF, Constraints
from spacy_vanilla_ner.tagging.crf import CRFGradient

TINY = 1e-300


def _log_partition(
    emissions: torch.Tensor,
    lengths: torch.Tensor,
    trans: torch.Tensor,
    start: torch.Tensor,
    end: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The forward algorithm over a padded batch, in probability space with the
    scores rescaled at every step: one (B, K) x (K, K) matmul per token, instead
    of a (B, K, K) logsumexp.

    emissions (torch.Tensor): (B, T, K) scores; NEG_INF rules a tag out.
    lengths (torch.Tensor): (B,) doc lengths, at least 1.
    RETURNS (Tuple[torch.Tensor, torch.Tensor]): log Z (B,), and (B,) bool: whether
        the doc has any valid path (where not, its log Z is meaningless).
    """
    B, T, K = emissions.shape
    # Tags scored NEG_INF are impossible, not merely unlikely: keep them at
    # probability 0 whatever the shift (a row may hold nothing but NEG_INF).
    possible = emissions > NEG_INF / 2
    shift = emissions.detach().masked_fill(~possible, float("-inf")).amax(dim=2, keepdim=True)
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))  # (B, T, 1)
    probs = torch.where(possible, torch.exp(emissions - shift), torch.zeros_like(emissions))
    step_matrix = torch.exp(trans)  # NEG_INF transitions -> 0
    alpha = torch.exp(start)[None, :] * probs[:, 0]  # (B, K)
    log_scale = shift[:, 0, 0]
    alive = torch.ones(B, dtype=torch.bool, device=emissions.device)
    for t in range(1, T):
        total = alpha.sum(dim=1, keepdim=True)
        alive = alive & (total[:, 0] > 0)
        total = total.clamp_min(TINY)
        active = t < lengths
        following = ((alpha / total) @ step_matrix) * probs[:, t]
        log_scale = torch.where(
            active, log_scale + torch.log(total[:, 0]) + shift[:, t, 0], log_scale
        )
        alpha = torch.where(active[:, None], following, alpha)
    total = (alpha * torch.exp(end)[None, :]).sum(dim=1)
    alive = alive & (total > 0)
    return log_scale + torch.log(total.clamp_min(TINY)), alive


def reference_crf_loss_and_gradient(*args, **kwargs) -> CRFGradient:
    """`_former_crf_loss_and_gradient` on one torch thread: its thousands of
    tiny ops only slow down when threads contend for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _former_crf_loss_and_gradient(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


def _former_crf_loss_and_gradient(
    log_probs: Sequence[numpy.ndarray],
    golds: Sequence[numpy.ndarray],
    constraints: Constraints,
    is_space: Optional[Sequence[Optional[numpy.ndarray]]] = None,
) -> CRFGradient:
    """Negative log-likelihood of the gold tags under the CRF, for a batch of
    docs, with its gradients (torch autograd over the forward algorithm, in
    float64 on the CPU; tested against forward-backward marginals and brute
    force in tests/tagging/test_crf.py).

    Missing gold tags (-1) are marginalised over, so a doc with some missing
    tokens is trained only on what is known. A doc whose gold tags break the
    BILUO rules (e.g. an entity starting on whitespace) has no valid path: it
    adds nothing to the loss or the gradients.

    log_probs (Sequence[numpy.ndarray]): (T_i, K) emission scores per doc, T_i >= 1.
    golds (Sequence[numpy.ndarray]): (T_i,) tag ids per doc, -1 for missing.
    is_space (Optional[Sequence[Optional[numpy.ndarray]]]): (T_i,) bool per doc.
    RETURNS (CRFGradient): The summed loss, d_emissions per doc and the
        gradients of the transition, start and end scores.
    """
    K = constraints.n_tags
    lengths = [len(scores) for scores in log_probs]
    if not all(numpy.isfinite(scores).all() for scores in log_probs):
        # NaN or inf scores: report a NaN loss (the component raises on it)
        # rather than treating the tags as ruled out.
        nan = float("nan")
        return CRFGradient(
            loss=nan,
            d_emissions=[numpy.full((n, K), nan) for n in lengths],
            d_transitions=numpy.full((K, K), nan),
            d_start=numpy.full((K,), nan),
            d_end=numpy.full((K,), nan),
        )
    if is_space is None:
        is_space = [None] * len(log_probs)
    B, T = len(lengths), max(lengths)
    emissions = numpy.zeros((B, T, K))
    gold = numpy.full((B, T), -1, dtype="int64")
    for b, (scores, doc_gold, space) in enumerate(zip(log_probs, golds, is_space)):
        emissions[b, : len(scores)] = constraints.emissions(scores, space)
        gold[b, : len(doc_gold)] = doc_gold
    with torch.enable_grad():
        em = torch.from_numpy(emissions).requires_grad_()
        trans, start, end = (
            torch.from_numpy(numpy.array(x, dtype="float64")).requires_grad_()
            for x in (constraints.trans, constraints.start, constraints.end)
        )
        lengths_t = torch.tensor(lengths)
        gold_t = torch.from_numpy(gold)
        # Each token may take its gold tag, or any tag where the gold is missing.
        keep = (gold_t < 0)[..., None] | F.one_hot(gold_t.clamp(min=0), K).bool()
        log_z, _ = _log_partition(em, lengths_t, trans, start, end)
        log_z_gold, valid = _log_partition(
            em.masked_fill(~keep, NEG_INF), lengths_t, trans, start, end
        )
        nll = torch.where(valid, log_z - log_z_gold, torch.zeros_like(log_z))
        loss = nll.sum()
        # No valid gold path in any doc: the loss is a constant 0, no gradient.
        grads = (
            torch.autograd.grad(loss, (em, trans, start, end), allow_unused=True)
            if loss.requires_grad
            else (None, None, None, None)
        )
    d_em, d_trans, d_start, d_end = (
        numpy.zeros(tuple(x.shape)) if g is None else g.numpy()
        for g, x in zip(grads, (em, trans, start, end))
    )
    return CRFGradient(
        loss=float(loss.detach()),
        d_emissions=[d_em[b, :n] for b, n in enumerate(lengths)],
        d_transitions=d_trans,
        d_start=d_start,
        d_end=d_end,
    )


def reference_viterbi_batch(
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


def random_constraints(rng, n_labels, scale=0.3):
    """BILUO constraints with random learned transition, start and end scores."""
    k = 1 + 4 * n_labels
    return Constraints(
        n_labels,
        rng.normal(size=(k, k)) * scale,
        rng.normal(size=k) * scale,
        rng.normal(size=k) * scale,
    )
