"""A linear-chain CRF over BILUO tags: its loss and gradients for a batch of
docs (torch, batched), and the thinc layer that holds the learned transition
scores."""

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy
import torch
import torch.nn.functional as F
from thinc.api import Model
from thinc.types import Floats2d

from .biluo import NEG_INF, Constraints

TINY = 1e-300  # float64: a floor for the normaliser of a doc with no valid path


@dataclass
class CRFGradient:
    """The CRF loss of a batch and its gradients (summed over the docs)."""

    loss: float
    d_emissions: List[numpy.ndarray]  # (T_i, K) per doc
    d_transitions: numpy.ndarray  # (K, K)
    d_start: numpy.ndarray  # (K,)
    d_end: numpy.ndarray  # (K,)


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


def crf_loss_and_gradient(
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
