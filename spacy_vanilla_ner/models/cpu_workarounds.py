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
    # A Function rather than plain autograd over the expression: backward
    # keeps only the input, not the intermediate tensors.
    @staticmethod
    def forward(ctx, X: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(X)
        return _erf_gelu(X)

    @staticmethod
    def backward(ctx, dY: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (X,) = ctx.saved_tensors
        cdf = 0.5 * (1.0 + torch.erf(X * _SQRT_HALF))
        pdf = torch.exp(-0.5 * X * X) * _INV_SQRT_2PI
        return dY * (cdf + X * pdf)


def _erf_gelu(X: torch.Tensor) -> torch.Tensor:
    return 0.5 * X * (1.0 + torch.erf(X * _SQRT_HALF))


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
