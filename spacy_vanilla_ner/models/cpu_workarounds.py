"""Torch ops written out by hand because the stock ones misbehave on CPU.

GELU. On CPU, torch runs float32 `F.gelu` through oneDNN, which keeps a cache of one
primitive per tensor shape. Batches of docs come in ever new shapes, so the cache keeps
allocating and evicting long-lived blocks, and glibc's malloc keeps the freed memory: a process
streaming docs grew by tens of MiB per 1,000 docs (pytorch/pytorch#98688;
`benchmarks/memory_retention.py` measures it). Switching oneDNN off around the call
(`torch.backends.mkldnn.enabled`) would avoid the cache, but that switch is process-wide, so a
pipeline shared by threads would flip it under another thread's forward pass. `gelu` below
computes the same function, exact GELU (within 1e-6 of `F.gelu`), from `torch.erf`, which has
no cache and no global state.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class _ErfGELU(torch.autograd.Function):
    # A Function rather than autograd over the expression: backward keeps only the input.
    # The ops work in place on one new tensor each: a chain of out-of-place ops allocated a
    # fresh activation-sized block per op, which cost several times the arithmetic.
    @staticmethod
    def forward(ctx, X: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(X)
        return _erf_gelu(X)

    @staticmethod
    def backward(ctx, dY: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (X,) = ctx.saved_tensors
        cdf = (X * _SQRT_HALF).erf_().add_(1.0).mul_(0.5)
        pdf = (X * X).mul_(-0.5).exp_().mul_(_INV_SQRT_2PI)
        return pdf.mul_(X).add_(cdf).mul_(dY)  # dY * (cdf + X * pdf)


def _erf_gelu(X: torch.Tensor) -> torch.Tensor:
    # 0.5 * X * (1 + erf(X / sqrt(2))), in place on one new tensor.
    return (X * _SQRT_HALF).erf_().add_(1.0).mul_(X).mul_(0.5)


def gelu(X: torch.Tensor) -> torch.Tensor:
    """Exact GELU, as `F.gelu`; on CPU computed from `erf` (see the module docstring)."""
    if X.device.type != "cpu":
        return F.gelu(X)
    if X.requires_grad and torch.is_grad_enabled():
        return _ErfGELU.apply(X)
    return _erf_gelu(X)


class GELU(nn.Module):
    """`nn.GELU` with `gelu` above: exact GELU without oneDNN on CPU."""

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return gelu(X)
