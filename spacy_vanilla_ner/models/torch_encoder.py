"""The Transformer encoder as plain PyTorch modules (no spaCy or thinc imports).

Read top-down: the settings (`EncoderConfig`), positions, self-attention, the Maxout window
sub-layer, one block (`EncoderLayer`), the stack (`TransformerEncoderModule`).

Shapes: B = windows in a batch, T = window length (padded), C = width, H = attention heads,
D = C // H, M = real tokens in the batch. Padded tensors are batch-first, (B, T, C); the thinc
side (`windowing.py`) builds the batch from a list of docs, so there is no time-major `Padded`
to mix up here.

Packed: every layer but attention works on each token alone, so the blocks run on the (M, C)
matrix of real tokens (`PackedLayout`), and only attention pads them into (B, T) windows and
back. Padded to the longest window of a batch, CoNLL-2003's sentences (dev in batches of 256
texts, train in batches of 1,000 words) held 3.2 times as many rows as tokens, and every linear
layer, norm and activation paid for them; attention's grid, with windows grouped by length
(`windowing.build_window_batch`), holds 1.4 times as many.

Training or inference is an argument of `forward` (`train`), and nothing here reads
`nn.Module.training`: thinc's `PyTorchShim` switches the module to `eval()` and back to
`train()` around every prediction, so with a pipeline shared by threads one thread's switch
would turn dropout on inside another thread's forward pass.
"""

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple, Union

import numpy
import torch
import torch.nn.functional as F
from torch import nn

from .cpu_workarounds import GELU

POSITION_SCHEMES = ("sinusoidal", "learned", "rotary", "none")
ACTIVATIONS = {"gelu": GELU, "relu": nn.ReLU, "silu": nn.SiLU}


@dataclass(frozen=True)
class EncoderConfig:
    """The encoder's settings, and the one place where their defaults are stated:
    the registered builders (`models/encoder.py`) take theirs from here, and spaCy fills
    configs from the builders' signatures. The defaults are those of
    `TransformerEncoder.v2`; v1 differs in three (`ENCODER_V1` in `models/encoder.py`).

    Checked once, on construction: an `EncoderConfig` that exists is valid.
    `ff_width=None` means 4 * width.
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
    # Neighbours on either side of a token in the Maxout window sub-layer of each block,
    # as `window_size` of spacy.MaxoutWindowEncoder.v2; None: no such sub-layer.
    window_size: Optional[int] = 1
    # Pieces of that Maxout layer (as `maxout_pieces` of spacy.MaxoutWindowEncoder.v2).
    maxout_pieces: int = 3
    # Probability of zeroing a whole token vector at the input while training.
    token_dropout: float = 0.1
    # Pre-LN only: close the residual stream with a LayerNorm before the output.
    final_norm: bool = False

    def __post_init__(self) -> None:
        if self.ff_width is None and isinstance(self.width, int):
            object.__setattr__(self, "ff_width", 4 * self.width)  # frozen: set it this way
        self._check()

    def _check(self) -> None:
        def fail(msg: str) -> None:
            raise ValueError(f"TransformerEncoder: {msg}")

        def is_int(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        for name in ("width", "depth", "n_heads", "ff_width", "max_length", "maxout_pieces"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
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
        if self.window_size is not None and (not is_int(self.window_size) or self.window_size < 0):
            fail(
                f"window_size must be null (no Maxout window sub-layer) or an integer >= 0, "
                f"got {self.window_size!r}; e.g. window_size = 1 (one neighbour on either side)."
            )
        for name in ("norm_first", "final_norm"):
            if not isinstance(getattr(self, name), bool):
                fail(f"{name} must be true or false, got {getattr(self, name)!r}.")
        for name in ("dropout", "attention_dropout", "token_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                fail(f"{name} must be in [0, 1), got {getattr(self, name)!r}.")


def _largest_divisor(width: int, below: int) -> int:
    return max(h for h in range(1, below + 1) if width % h == 0)


def packed_layout_arrays(mask: numpy.ndarray) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """For a (B, T) bool mask, the two index arrays of a `PackedLayout`, in numpy:
    `index` (M,), the row in the flattened (B * T) grid of each real token, in row-major order;
    `pad_index` (B, T), the packed row of each grid cell, M where the cell is padding."""
    index = numpy.flatnonzero(mask).astype("int64")
    pad_index = numpy.full(mask.size, index.size, dtype="int64")
    pad_index[index] = numpy.arange(index.size, dtype="int64")
    return index, pad_index.reshape(mask.shape)


class PackedLayout:
    """Where the real tokens of a (B, T) batch of windows sit: the map between the packed
    (M, C) token matrix that the encoder's blocks run on and the padded (B, T, C) grid that
    attention needs. A token's position (for positional encodings) and its neighbours (for the
    Maxout window) are its column and the cells beside it in the grid, as they would be in a
    padded tensor; padding cells read as zero vectors.

    Made per batch (`from_mask`, or by `windowing.build_window_batch` from numpy arrays), used
    by one forward pass; nothing here is a parameter.
    """

    def __init__(self, index: torch.Tensor, pad_index: torch.Tensor):
        self.index = index  # (M,) row of each token in the flattened grid
        self.pad_index = pad_index  # (B, T) packed row of each cell; M for padding
        self.mask = pad_index < index.shape[0]  # (B, T) bool
        # A window with no real token would make its attention rows fully masked (softmax
        # over nothing is NaN); such rows attend to every position instead. They hold no token.
        empty = ~self.mask.any(dim=1, keepdim=True)
        self.attend = (self.mask | empty)[:, None, None, :]  # (B, 1, 1, T)
        self.positions = index % pad_index.shape[1]  # (M,) column of each token
        self._neighbours: Dict[int, torch.Tensor] = {}

    @classmethod
    def from_mask(cls, mask: torch.Tensor) -> "PackedLayout":
        """The layout of a (B, T) bool mask, True for real tokens (any cells, not only a
        prefix of each row)."""
        index, pad_index = packed_layout_arrays(mask.detach().cpu().numpy().astype(bool))
        device = mask.device
        return cls(torch.from_numpy(index).to(device), torch.from_numpy(pad_index).to(device))

    @property
    def shape(self) -> Tuple[int, int]:
        """(B, T): the padded grid's shape."""
        return (self.pad_index.shape[0], self.pad_index.shape[1])

    @property
    def n_tokens(self) -> int:
        return self.index.shape[0]

    def pack(self, X: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) padded -> (M, C) real tokens, C the product of the trailing sizes."""
        B, T = self.shape
        return X.reshape(B * T, -1).index_select(0, self.index)

    def pad(self, X: torch.Tensor) -> torch.Tensor:
        """(M, C) real tokens -> (B, T, C), zeros at padding."""
        B, T = self.shape
        grid = X.new_zeros((B * T, X.shape[-1])).index_copy_(0, self.index, X)  # no 2nd copy
        return grid.view(B, T, X.shape[-1])

    def neighbours(self, window_size: int) -> torch.Tensor:
        """(M, 2 * window_size + 1): the packed rows of the cells from `window_size` before
        each token to `window_size` after it in its grid row; M where the cell is padding or
        beyond either end. Made once per window size and batch."""
        if window_size not in self._neighbours:
            B, T = self.shape
            M = self.n_tokens
            grid = F.pad(self.pad_index, (window_size, window_size), value=M)
            cells = [grid[:, i : i + T].reshape(-1) for i in range(2 * window_size + 1)]
            self._neighbours[window_size] = torch.stack(cells, dim=1).index_select(0, self.index)
        return self._neighbours[window_size]


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

    def forward(self, X: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        # X: (M, C) tokens; positions: (M,) each token's place in its window (the T axis of
        # the padded grid, never B).
        return X + self.table.index_select(0, positions).to(X.dtype)


class LearnedPositions(nn.Module):
    """Trained absolute position embeddings, added to the input."""

    def __init__(self, width: int, max_length: int):
        super().__init__()
        self.embeddings = nn.Embedding(max_length, width)
        nn.init.normal_(self.embeddings.weight, std=0.02)

    def forward(self, X: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return X + self.embeddings(positions).to(X.dtype)


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

    def forward(self, X: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """X: (M, n, D), n heads' vectors of each token; positions: (M,). Rotates each
        (even, odd) pair of a vector by its position's angle."""
        cos = self.cos.index_select(0, positions)[:, None, :]  # (M, 1, D/2)
        sin = self.sin.index_select(0, positions)[:, None, :]
        pairs = X.unflatten(-1, (-1, 2))  # (M, n, D/2, 2): a view
        if X.dtype in (torch.float32, torch.float64) and X.device.type == "cpu":
            # The pair as a complex number, times cos + i sin: one vectorised op, where the
            # arithmetic below reads strided halves in eight.
            rotated = torch.view_as_complex(pairs) * torch.complex(cos, sin).to(
                torch.complex128 if X.dtype == torch.float64 else torch.complex64
            )
            return torch.view_as_real(rotated).flatten(-2)
        x1, x2 = pairs[..., 0], pairs[..., 1]
        cos, sin = cos.to(X.dtype), sin.to(X.dtype)
        return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


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

    def forward(self, X: torch.Tensor, layout: PackedLayout, train: bool) -> torch.Tensor:
        # X: (M, C) tokens; attention runs on them padded into the layout's (B, T) windows.
        M, C = X.shape
        B, T = layout.shape
        H = self.n_heads
        qkv = self.qkv(X)  # (M, 3C)
        if self._rotary:
            qk = self._rotary[0](qkv[:, : 2 * C].view(M, 2 * H, C // H), layout.positions)
            qkv = torch.cat((qk.view(M, 2 * C), qkv[:, 2 * C :]), dim=1)
        q, k, v = layout.pad(qkv).view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4)
        Y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=layout.attend, dropout_p=self.attention_dropout if train else 0.0
        )  # (B, H, T, D)
        return self.output(layout.pack(Y.transpose(1, 2)))


def expand_window(X: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """Each token with its neighbours, concatenated, as thinc's `expand_window`: (M, C) ->
    (M, K * C) for `neighbours` (M, K) from `PackedLayout.neighbours` (row M: a zero vector,
    for padding and beyond either end). out[m, i*C:(i+1)*C] = X[neighbours[m, i]].

    A layer over these windows is a convolution computed as one matrix product. `nn.Conv1d`
    would run through oneDNN on CPU, whose per-shape primitive cache fragments the heap
    (see `cpu_workarounds`); a plain matmul has no such cache.
    """
    M, C = X.shape
    padded = torch.cat((X, X.new_zeros((1, C))))
    return padded.index_select(0, neighbours.reshape(-1)).view(M, -1)


class MaxoutWindow(nn.Module):
    """The layer of spaCy's CNN (`spacy.MaxoutWindowEncoder.v2`: `expand_window >>
    Maxout(normalize=True)`): each token and its `window_size` neighbours on either side,
    concatenated, through a Maxout layer of `maxout_pieces` pieces and a LayerNorm. Used as a
    residual sub-layer before attention in each block: a bias towards local context, which
    attention alone learns slowly from little data.

    The LayerNorm at the output makes the branch add features of unit scale from the first
    update, whatever the initialisation of the Maxout (torch's default for `nn.Linear`).

    Cells beyond a window's tokens read as zeros, so a doc's last tokens see the same zeros
    whether the doc is alone or padded in a batch.
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        assert config.window_size is not None
        self.window_size = config.window_size
        self.pieces = config.maxout_pieces
        n_inputs = (2 * config.window_size + 1) * config.width
        self.maxout = nn.Linear(n_inputs, config.maxout_pieces * config.width)
        self.norm = nn.LayerNorm(config.width)

    def forward(self, X: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
        # X: (M, C) tokens.
        M, C = X.shape
        H = self.maxout(expand_window(X, layout.neighbours(self.window_size)))  # (M, C * pieces)
        return self.norm(H.view(M, C, self.pieces).amax(dim=-1))


class EncoderLayer(nn.Module):
    """One block: [Maxout window], self-attention, feed-forward; each a residual sub-layer
    with its own LayerNorm, before the sub-layer (pre-LN) or after the sum (post-LN)."""

    def __init__(self, config: EncoderConfig, rotary: Optional[RotaryPositions]):
        super().__init__()
        self.norm_first = config.norm_first
        self.dropout = config.dropout
        # None without the sub-layer, so v1 models keep the state dict of 0.1.0.
        has_window = config.window_size is not None
        self.maxout_window = MaxoutWindow(config) if has_window else None
        self.maxout_window_norm = nn.LayerNorm(config.width) if has_window else None
        self.attention = SelfAttention(config, rotary)
        self.attention_norm = nn.LayerNorm(config.width)
        self.ff_input = nn.Linear(config.width, config.ff_width)
        self.activation = ACTIVATIONS[config.activation]()
        self.ff_output = nn.Linear(config.ff_width, config.width)
        self.ff_norm = nn.LayerNorm(config.width)

    def residual(
        self,
        X: torch.Tensor,
        norm: nn.LayerNorm,
        sublayer: Callable[[torch.Tensor], torch.Tensor],
        train: bool,
    ) -> torch.Tensor:
        """X + sublayer(X), with dropout on the branch and the norm where the scheme puts it:
        pre-LN (Xiong et al. 2020, https://arxiv.org/abs/2002.04745) keeps the residual
        stream unnormalised and trains without warmup; post-LN (Vaswani et al.) normalises
        the sum."""
        if self.norm_first:
            return X + F.dropout(sublayer(norm(X)), self.dropout, train)
        return norm(X + F.dropout(sublayer(X), self.dropout, train))

    def feed_forward(self, X: torch.Tensor, train: bool) -> torch.Tensor:
        H = F.dropout(self.activation(self.ff_input(X)), self.dropout, train)
        return self.ff_output(H)

    def forward(self, X: torch.Tensor, layout: PackedLayout, train: bool) -> torch.Tensor:
        # X: (M, C) tokens.
        if self.maxout_window is not None and self.maxout_window_norm is not None:
            window = self.maxout_window
            X = self.residual(X, self.maxout_window_norm, lambda H: window(H, layout), train)
        X = self.residual(X, self.attention_norm, lambda H: self.attention(H, layout, train), train)
        return self.residual(X, self.ff_norm, lambda H: self.feed_forward(H, train), train)


class TransformerEncoderModule(nn.Module):
    """A stack of encoder layers over padded windows with a padding mask.

    Unlike `nn.TransformerEncoder`, which deep-copies one layer (so every layer starts from
    the same weights), each layer here is built and initialised on its own.
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
        self.layers = nn.ModuleList(EncoderLayer(config, rotary) for _ in range(config.depth))
        # Pre-LN leaves the residual stream unnormalised, and GPT-2 closes it with a norm.
        # Without it (final_norm = false) the tagger sees the normalised input plus the
        # blocks' outputs, which a per-token classifier learns from faster.
        self.final_norm = (
            nn.LayerNorm(config.width) if config.norm_first and config.final_norm else nn.Identity()
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # GPT-2 style (https://github.com/karpathy/nanoGPT/blob/master/model.py): N(0, 0.02),
        # with the projections that write into the residual stream scaled down by
        # sqrt(2 * depth) so that its variance does not grow with depth.
        residual_std = 0.02 / math.sqrt(2 * self.config.depth)
        for layer in self.layers:
            for linear in (layer.attention.qkv, layer.ff_input):
                nn.init.normal_(linear.weight, std=0.02)
                nn.init.zeros_(linear.bias)
            for linear in (layer.attention.output, layer.ff_output):
                nn.init.normal_(linear.weight, std=residual_std)
                nn.init.zeros_(linear.bias)

    def forward(
        self, X: torch.Tensor, mask: Union[torch.Tensor, PackedLayout], train: bool = False
    ) -> torch.Tensor:
        """Padded: X (B, T, C) windows of token vectors and mask (B, T) bool, True for real
        tokens; RETURNS (B, T, C), zero at padding. Packed (what `WindowedEncoder` runs):
        X (M, C) real tokens and mask a `PackedLayout` of their windows; RETURNS (M, C). The
        same computation either way.
        train (bool): Apply dropout and token dropout (training); False for inference.
        """
        if isinstance(mask, PackedLayout):
            return self._forward_packed(X, mask, train)
        layout = PackedLayout.from_mask(mask)
        return layout.pad(self._forward_packed(layout.pack(X), layout, train))

    def _forward_packed(self, X: torch.Tensor, layout: PackedLayout, train: bool) -> torch.Tensor:
        if layout.shape[1] > self.config.max_length:
            raise ValueError(
                f"TransformerEncoder: window of {layout.shape[1]} tokens exceeds "
                f"max_length={self.config.max_length}."
            )
        if train and self.config.token_dropout > 0:
            # Token dropout: whole token vectors zeroed, no rescaling, so that the model
            # learns to tag from context when a word is unknown.
            keep = torch.rand(X.shape[0], device=X.device) >= self.config.token_dropout
            X = X * keep[:, None].to(X.dtype)
        if isinstance(self.positions, (SinusoidalPositions, LearnedPositions)):
            X = self.positions(X, layout.positions)
        X = F.dropout(X, self.config.dropout, train)
        for layer in self.layers:
            X = layer(X, layout, train)
        return self.final_norm(X)
