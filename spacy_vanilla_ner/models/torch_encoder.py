"""The Transformer encoder as plain PyTorch modules (no spaCy or thinc imports).

Shapes: B = windows in a batch, T = window length (padded), C = width,
H = attention heads, D = C // H. Tensors are batch-first, (B, T, C); the
thinc side (`windowing.py`) builds them from a list of docs, so there is no
time-major `Padded` to mix up here.
"""

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

POSITION_SCHEMES = ("sinusoidal", "learned", "rotary", "none")


@contextmanager
def _onednn_disabled() -> Iterator[None]:
    # The switch is process-wide: an op another thread runs meanwhile uses
    # torch's own kernel too (same result, perhaps slower), never a wrong one.
    enabled = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = enabled


class _NativeGELUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, X: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(X)
        with _onednn_disabled():
            return F.gelu(X)

    @staticmethod
    def backward(ctx, dY: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (X,) = ctx.saved_tensors
        with _onednn_disabled():
            return torch.ops.aten.gelu_backward(dY, X)


class GELU(nn.Module):
    """Exact GELU, as `nn.GELU`, but on CPU computed by torch's own kernel.

    For float32 CPU tensors torch runs GELU through oneDNN, which caches one
    primitive per tensor shape (up to 1,024). Batches of docs bring ever new
    shapes, so the cache keeps allocating and evicting long-lived blocks, and
    under glibc's malloc these fragment the heap: a process streaming docs grew
    by ~50 MiB per 1,000 docs, almost all of it freed memory that malloc kept
    (benchmarks/memory_retention.py; pytorch/pytorch#98688). torch's kernel
    computes the same function (|Δ| < 1e-6) without a cache.
    """

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        if X.device.type != "cpu":
            return F.gelu(X)
        if X.requires_grad and torch.is_grad_enabled():
            return _NativeGELUFunction.apply(X)
        with _onednn_disabled():
            return F.gelu(X)


ACTIVATIONS = {"gelu": GELU, "relu": nn.ReLU, "silu": nn.SiLU}


@dataclass(frozen=True)
class EncoderConfig:
    """The encoder's settings, and the one place where their defaults are
    stated: the registered builders (`models/encoder.py`) take theirs from
    here, and spaCy fills configs from the builders' signatures.

    Checked once, on construction: an `EncoderConfig` that exists is valid.
    `ff_width=None` means 4 * width. The defaults are those of
    TransformerEncoder.v1 (no local sub-layer, no token dropout, a final
    LayerNorm); v2 changes three of
    them (`ENCODER_V2_DEFAULTS` in `models/encoder.py`).
    """

    width: int
    depth: int
    n_heads: int
    ff_width: Optional[int] = None
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation: str = "gelu"
    positions: str = "rotary"
    norm_first: bool = True
    max_length: int = 512
    # Tokens in the window of the local Maxout sub-layer in each block (odd; 0 = none).
    conv_kernel: int = 0
    # Pieces of that Maxout layer (as spaCy's MaxoutWindowEncoder's maxout_pieces).
    maxout_pieces: int = 3
    # Probability of zeroing a whole token vector at the input while training.
    token_dropout: float = 0.0
    # Pre-LN only: close the residual stream with a LayerNorm before the output.
    final_norm: bool = True

    def __post_init__(self) -> None:
        if self.ff_width is None and isinstance(self.width, int):
            object.__setattr__(self, "ff_width", 4 * self.width)  # frozen: set it this way
        self._check()

    def _check(self) -> None:
        def fail(msg: str) -> None:
            raise ValueError(f"TransformerEncoder: {msg}")

        for name in ("width", "depth", "n_heads", "ff_width", "max_length", "maxout_pieces"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                fail(f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        if self.width % self.n_heads:
            fail(
                f"width ({self.width}) must be divisible by n_heads ({self.n_heads}); "
                f"e.g. use n_heads = {_largest_divisor(self.width, self.n_heads)}."
            )
        if self.positions not in POSITION_SCHEMES:
            fail(f"positions must be one of {POSITION_SCHEMES}, got {self.positions!r}.")
        if self.positions == "rotary" and (self.width // self.n_heads) % 2:
            fail(
                f"rotary positions need an even head width, but width / n_heads = "
                f"{self.width // self.n_heads}. Change width or n_heads."
            )
        if self.activation not in ACTIVATIONS:
            fail(f"activation must be one of {tuple(ACTIVATIONS)}, got {self.activation!r}.")
        if (
            not isinstance(self.conv_kernel, int)
            or self.conv_kernel < 0
            or (self.conv_kernel and self.conv_kernel % 2 == 0)
        ):
            fail(
                f"conv_kernel must be 0 (no local sub-layer) or an odd positive integer, "
                f"got {self.conv_kernel!r}; e.g. conv_kernel = 3."
            )
        for name in ("norm_first", "final_norm"):
            if not isinstance(getattr(self, name), bool):
                fail(f"{name} must be true or false, got {getattr(self, name)!r}.")
        for name in ("dropout", "attention_dropout", "token_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                fail(f"{name} must be in [0, 1), got {getattr(self, name)!r}.")


def _largest_divisor(width: int, below: int) -> int:
    return max(h for h in range(1, below + 1) if width % h == 0)


class SinusoidalPositions(nn.Module):
    """Fixed sin/cos absolute positions (Vaswani et al.), added to the input."""

    def __init__(self, width: int, max_length: int):
        super().__init__()
        position = torch.arange(max_length, dtype=torch.float32)[:, None]
        freq = torch.exp(
            torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width)
        )
        table = torch.zeros(max_length, width)
        table[:, 0::2] = torch.sin(position * freq)
        table[:, 1::2] = torch.cos(position * freq)[:, : width // 2]
        # Recomputed on load: saving it would only bloat the model and break
        # loading when max_length changes.
        self.register_buffer("table", table, persistent=False)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        # X: (B, T, C); positions run along T, the token axis, never along B.
        return X + self.table[: X.shape[1]].to(X.dtype)


class LearnedPositions(nn.Module):
    """Trained absolute position embeddings, added to the input."""

    def __init__(self, width: int, max_length: int):
        super().__init__()
        self.embeddings = nn.Embedding(max_length, width)
        nn.init.normal_(self.embeddings.weight, std=0.02)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return X + self.embeddings.weight[: X.shape[1]].to(X.dtype)


class RotaryPositions(nn.Module):
    """Rotary position embeddings (Su et al., RoFormer) applied to queries and
    keys: attention scores then depend on relative offsets, with direction."""

    def __init__(self, head_width: int, max_length: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (
            base ** (torch.arange(0, head_width, 2, dtype=torch.float32) / head_width)
        )
        angles = torch.arange(max_length, dtype=torch.float32)[:, None] * inv_freq[None, :]
        self.register_buffer("cos", angles.cos(), persistent=False)  # (max_length, D/2)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        # X: (B, H, T, D); rotate each (even, odd) pair by its position's angle.
        T = X.shape[2]
        cos = self.cos[:T].to(X.dtype)
        sin = self.sin[:T].to(X.dtype)
        x1, x2 = X[..., 0::2], X[..., 1::2]
        rotated = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
        return rotated.flatten(-2)


class SelfAttention(nn.Module):
    def __init__(self, config: EncoderConfig, rotary: Optional[RotaryPositions]):
        super().__init__()
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.width, 3 * config.width)
        self.output = nn.Linear(config.width, config.width)
        self.attention_dropout = config.attention_dropout
        # One RotaryPositions is shared by all layers and registered once, as
        # TransformerEncoderModule.rotary (so `.to(device)` moves its tables).
        # A plain list keeps it from being registered again under every layer;
        # either way it adds nothing to the state dict (non-persistent buffers).
        self._rotary = [rotary] if rotary is not None else []

    def forward(self, X: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
        # X: (B, T, C); attend: (B, 1, 1, T) bool, True = key is a real token.
        B, T, C = X.shape
        q, k, v = self.qkv(X).view(B, T, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)
        if self._rotary:
            q, k = self._rotary[0](q), self._rotary[0](k)
        Y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attend, dropout_p=self.attention_dropout if self.training else 0.0
        )  # (B, H, T, D)
        return self.output(Y.transpose(1, 2).reshape(B, T, C))


def token_windows(X: torch.Tensor, k: int) -> torch.Tensor:
    """Each token's window of k rows, concatenated: (B, T, C) -> (B, T, k*C),
    with zeros beyond either end. windows[b, t, i*C:(i+1)*C] = X[b, t + i - k // 2].

    A layer over these windows is a convolution of kernel k computed as one
    matrix product. On CPU, torch runs `nn.Conv1d` through oneDNN, which caches
    one primitive per input shape: a stream of batches of ever new shapes then
    fragments glibc's heap (as for GELU, above). A plain matmul has no such cache.
    """
    half = k // 2
    T = X.shape[1]
    P = F.pad(X, (0, 0, half, half))
    return torch.cat([P[:, i : i + T] for i in range(k)], dim=-1)


class LocalMaxout(nn.Module):
    """A bias towards local context: each token and its `conv_kernel // 2`
    neighbours on either side, concatenated, through a Maxout layer of
    `maxout_pieces` pieces and a LayerNorm. This is the layer of spaCy's CNN
    (`MaxoutWindowEncoder`: `expand_window >> Maxout(normalize=True)`), here as
    a residual sub-layer before attention in each block.

    The LayerNorm at its output matters: the branch adds features of unit scale
    from the first update, where an unnormalised branch (a convolution with
    GELU and an output projection) starts near zero and learns far slower
    (docs/benchmarks.md). The Maxout keeps torch's default `nn.Linear`
    initialisation; the LayerNorm makes the branch's scale independent of it.

    Padding rows are zeroed before the windows are taken, so a doc's last tokens
    see the same zeros whether the doc is alone or padded in a batch, and a
    doc's outputs do not depend on its batch-mates.
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.kernel = config.conv_kernel
        self.pieces = config.maxout_pieces
        self.maxout = nn.Linear(
            config.conv_kernel * config.width, config.maxout_pieces * config.width
        )
        self.norm = nn.LayerNorm(config.width)

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # X: (B, T, C); mask: (B, T) bool.
        B, T, C = X.shape
        X = X * mask[..., None].to(X.dtype)
        H = self.maxout(token_windows(X, self.kernel))  # (B, T, C * pieces)
        return self.norm(H.view(B, T, C, self.pieces).amax(dim=-1))


class EncoderLayer(nn.Module):
    """One block: [local Maxout window], self-attention, feed-forward; each a
    residual sub-layer with its own LayerNorm (pre- or post-LN)."""

    def __init__(self, config: EncoderConfig, rotary: Optional[RotaryPositions]):
        super().__init__()
        self.norm_first = config.norm_first
        # None when conv_kernel = 0, so v1 models have the same state dict as before.
        self.conv = LocalMaxout(config) if config.conv_kernel else None
        self.conv_norm = nn.LayerNorm(config.width) if config.conv_kernel else None
        self.attention = SelfAttention(config, rotary)
        self.attention_norm = nn.LayerNorm(config.width)
        self.ff_input = nn.Linear(config.width, config.ff_width)
        self.activation = ACTIVATIONS[config.activation]()
        self.ff_output = nn.Linear(config.ff_width, config.width)
        self.ff_norm = nn.LayerNorm(config.width)
        self.dropout = nn.Dropout(config.dropout)

    def feed_forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.ff_output(self.dropout(self.activation(self.ff_input(X))))

    def forward(self, X: torch.Tensor, attend: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.conv is not None and self.conv_norm is not None:
            if self.norm_first:
                X = X + self.dropout(self.conv(self.conv_norm(X), mask))
            else:
                X = self.conv_norm(X + self.dropout(self.conv(X, mask)))
        if self.norm_first:
            X = X + self.dropout(self.attention(self.attention_norm(X), attend))
            X = X + self.dropout(self.feed_forward(self.ff_norm(X)))
        else:
            X = self.attention_norm(X + self.dropout(self.attention(X, attend)))
            X = self.ff_norm(X + self.dropout(self.feed_forward(X)))
        return X


class TransformerEncoderModule(nn.Module):
    """A stack of encoder layers over padded windows with a padding mask.

    Unlike `nn.TransformerEncoder`, which deep-copies one layer (so every layer
    starts from the same weights), each layer here is built and initialised on
    its own.
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        head_width = config.width // config.n_heads
        rotary = (
            RotaryPositions(head_width, config.max_length) if config.positions == "rotary" else None
        )
        if config.positions == "sinusoidal":
            self.positions: nn.Module = SinusoidalPositions(config.width, config.max_length)
        elif config.positions == "learned":
            self.positions = LearnedPositions(config.width, config.max_length)
        else:
            self.positions = nn.Identity()
        self.rotary = rotary  # registered once here (it holds no parameters)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(EncoderLayer(config, rotary) for _ in range(config.depth))
        # Pre-LN leaves the residual stream unnormalised; GPT-2 closes it with a
        # norm. For tagging, v2 leaves it open: the tagger then sees the sum of
        # the (normalised) input and the blocks' outputs, which learned much
        # faster per update on CoNLL-2003 (docs/benchmarks.md).
        self.final_norm = (
            nn.LayerNorm(config.width) if config.norm_first and config.final_norm else nn.Identity()
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # GPT-2 style: N(0, 0.02), with the projections that write into the
        # residual stream scaled down by sqrt(2 * depth) so its variance does
        # not grow with depth.
        residual_std = 0.02 / math.sqrt(2 * self.config.depth)
        for layer in self.layers:
            for linear in (layer.attention.qkv, layer.ff_input):
                nn.init.normal_(linear.weight, std=0.02)
                nn.init.zeros_(linear.bias)
            for linear in (layer.attention.output, layer.ff_output):
                nn.init.normal_(linear.weight, std=residual_std)
                nn.init.zeros_(linear.bias)

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """X (torch.Tensor): (B, T, C) windows of token vectors.
        mask (torch.Tensor): (B, T) bool, True for real tokens.
        RETURNS (torch.Tensor): (B, T, C); rows at padding positions are zero.
        """
        if X.shape[1] > self.config.max_length:
            raise ValueError(
                f"TransformerEncoder: window of {X.shape[1]} tokens exceeds "
                f"max_length={self.config.max_length}."
            )
        # A window with no real token would make every attention row fully
        # masked, and softmax over nothing is NaN: let such rows attend to all
        # positions instead. Their outputs are zeroed below and never used.
        empty = ~mask.any(dim=1, keepdim=True)
        attend = (mask | empty)[:, None, None, :]  # (B, 1, 1, T)
        if self.training and self.config.token_dropout > 0:
            # Word dropout on the token vectors: whole tokens, no rescaling, so
            # that the model learns to tag from context when a word is unknown.
            keep = torch.rand(X.shape[:2], device=X.device) >= self.config.token_dropout
            X = X * keep[..., None].to(X.dtype)
        X = self.dropout(self.positions(X))
        for layer in self.layers:
            X = layer(X, attend, mask)
        X = self.final_norm(X)
        return X * mask[..., None].to(X.dtype)
