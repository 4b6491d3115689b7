"""thinc glue for the torch encoder: cut docs into windows, batch the windows,
run the module, and put each token's output back in its doc.

A doc longer than `max_length` is covered by overlapping windows; each token
takes its output from the window in which it sits furthest from an edge that
cuts the doc, so tokens near a window edge still see context on both sides.
Windows are run in chunks of at most `max_batch_tokens` padded tokens, so
memory is bounded by the window size, not by the length of the longest doc.
Within a chunk the encoder runs on the real tokens only (packed); the chunks
group windows of similar length, which keeps the padding that attention needs
small.
"""

import os
import warnings
from dataclasses import dataclass
from typing import Callable, List, Tuple

import numpy
import torch
from thinc.api import ArgsKwargs, Model, torch2xp, xp2torch
from thinc.types import Floats2d

from .quantization import Int8Copy
from .torch_encoder import PackedLayout, TransformerEncoderModule, packed_layout_arrays

_fork_hook_registered = False


def register_fork_hook() -> None:
    """Make every process forked from this one run torch with one intra-op
    thread. Called when a `WindowedEncoder` is built (so `spacy.load` followed
    by `nlp.pipe(n_process=2)` forks with the hook in place) and again in its
    forward pass (for an encoder that was unpickled); importing the package
    changes nothing.

    Why: GNU OpenMP is not fork-safe. A process forked after its parent ran a
    parallel torch op hangs in its own first one (spaCy #6662), e.g. the
    workers of `nlp.pipe(n_process=2)` on Linux. One intra-op thread, as in
    torch's DataLoader workers, keeps the child out of OpenMP.

    Idempotent: `os.register_at_fork` cannot unregister, so the hook is
    registered at most once per process (a flag here); running it twice would
    be harmless anyway. Does nothing where there is no fork (Windows).
    """
    global _fork_hook_registered
    if _fork_hook_registered or not hasattr(os, "register_at_fork"):
        return
    os.register_at_fork(after_in_child=_one_thread_after_fork)
    _fork_hook_registered = True


def _one_thread_after_fork() -> None:
    torch.set_num_threads(1)


@dataclass(frozen=True)
class WindowConfig:
    """How docs are cut into windows and batched, and the one place where the
    defaults of `window_overlap` and `max_batch_tokens` are stated (the
    builders take theirs from here). `max_length` is the encoder's
    (`EncoderConfig.max_length`). Checked once, on construction.
    """

    max_length: int
    window_overlap: int = 128
    max_batch_tokens: int = 16384

    def __post_init__(self) -> None:
        if not 0 <= self.window_overlap <= self.max_length // 2:
            raise ValueError(
                f"TransformerEncoder: window_overlap must be between 0 and max_length / 2 "
                f"({self.max_length // 2}), got {self.window_overlap}."
            )
        if self.max_batch_tokens < 1:
            raise ValueError(
                f"TransformerEncoder: max_batch_tokens must be positive, "
                f"got {self.max_batch_tokens}."
            )


# How `build_window_batch` groups windows into chunks (see there).
CHUNK_SPREAD = 2
SHORT_WINDOW = 8


def plan_windows(length: int, max_length: int, overlap: int) -> List[Tuple[int, int, int, int]]:
    """Cover tokens [0, length) with windows of at most `max_length` tokens.

    RETURNS (List[Tuple[int, int, int, int]]): (start, end, own_start, own_end)
        per window: the window spans [start, end) and supplies the outputs of
        the tokens in [own_start, own_end). The owned ranges tile [0, length).
    """
    if length <= max_length:
        return [(0, length, 0, length)] if length else []
    stride = max_length - overlap
    starts = list(range(0, length - max_length, stride)) + [length - max_length]
    windows = []
    for i, start in enumerate(starts):
        end = start + max_length
        # Hand over in the middle of the overlap with the next window.
        own_start = 0 if i == 0 else windows[-1][3]
        own_end = length if i == len(starts) - 1 else (starts[i + 1] + end) // 2
        windows.append((start, end, own_start, own_end))
    return windows


@dataclass
class WindowChunk:
    """Windows run through the module at once: their tokens, packed, and where they sit."""

    tokens: torch.Tensor  # (M,) row in the flat (N, C) input of each packed token
    layout: PackedLayout  # the (B, T) grid of the windows

    @property
    def shape(self) -> Tuple[int, int]:
        return self.layout.shape


@dataclass
class WindowBatch:
    """Index tensors that cut the flat (N, C) token matrix into chunks of windows and put
    the outputs back. Built in numpy, moved to the input's device once."""

    chunks: List[WindowChunk]
    output_index: torch.Tensor  # (N,) row of each token in the concatenated chunk outputs


def build_window_batch(
    lengths: List[int], max_length: int, overlap: int, max_batch_tokens: int, device: torch.device
) -> WindowBatch:
    # Per window: (doc offset + start, size, doc offset + own_start, own size,
    # own offset in the window).
    windows = []
    offset = 0
    for length in lengths:
        for start, end, own_start, own_end in plan_windows(length, max_length, overlap):
            windows.append(
                (
                    offset + start,
                    end - start,
                    offset + own_start,
                    own_end - own_start,
                    own_start - start,
                )
            )
        offset += length
    # Sort by size so that chunks hold windows of similar length (little padding).
    windows.sort(key=lambda w: w[1])
    output_index = numpy.zeros((offset,), dtype="int64")
    planned = []  # per chunk: tokens (M,), index (M,), pad_index (B, T), in numpy
    row = 0  # row in the concatenated packed outputs of the chunks
    i = 0
    while i < len(windows):
        # Windows are sorted by size, so windows[j] sets T once it is added. A chunk holds
        # windows of at most twice the size of its first (or up to SHORT_WINDOW tokens):
        # attention runs on the padded grid, and the rest of the encoder costs little per chunk.
        j = i + 1
        longest = max(CHUNK_SPREAD * windows[i][1], SHORT_WINDOW)
        while (
            j < len(windows)
            and (j - i + 1) * windows[j][1] <= max_batch_tokens
            and windows[j][1] <= longest
        ):
            j += 1
        group = windows[i:j]
        T = group[-1][1]
        gather = numpy.zeros((len(group), T), dtype="int64")
        mask = numpy.zeros((len(group), T), dtype=bool)
        for b, (start, size, _, _, _) in enumerate(group):
            gather[b, :size] = numpy.arange(start, start + size)
            mask[b, :size] = True
        index, pad_index = packed_layout_arrays(mask)
        for b, (_, _, own_start, own_size, own_offset) in enumerate(group):
            packed = pad_index[b, own_offset : own_offset + own_size]
            output_index[own_start : own_start + own_size] = row + packed
        planned.append((gather.reshape(-1)[index], index, pad_index))
        row += index.size
        i = j
    # One host-to-device copy for the whole batch; the chunks' tensors are views of it.
    arrays = [a for chunk in planned for a in chunk] + [output_index]
    on_device = torch.from_numpy(numpy.concatenate([a.reshape(-1) for a in arrays])).to(device)
    views = on_device.split([a.size for a in arrays])
    chunks = []
    for c, (_, _, pad_index) in enumerate(planned):
        tokens, index, grid = views[3 * c : 3 * c + 3]
        layout = PackedLayout(index, grid.view(pad_index.shape))
        chunks.append(WindowChunk(tokens=tokens, layout=layout))
    return WindowBatch(chunks=chunks, output_index=views[-1])


class WindowedEncoder(torch.nn.Module):
    """Run a `TransformerEncoderModule` over the windows of a `WindowBatch`.

    Takes and returns flat (N, C) token matrices, which is what the thinc side
    has; the padded windows only exist inside this forward pass.
    """

    def __init__(self, encoder: TransformerEncoderModule):
        super().__init__()
        self.encoder = encoder
        # "int8": predict on CPU with an int8 copy of the encoder (models/quantization.py).
        # A plain attribute: not in the state dict, so saved pipelines are unchanged.
        self.inference_dtype = "float32"
        self._int8 = Int8Copy()
        self.updates = 0  # optimizer steps taken (`encoder.count_update`), for the int8 copy
        register_fork_hook()

    def __getstate__(self) -> dict:
        # The int8 copy (and its lock) is not pickled; it is remade where it is used.
        state = super().__getstate__()  # nn.Module's: a copy of __dict__
        state.pop("_int8", None)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("inference_dtype", "float32")
        self.__dict__.setdefault("updates", 0)
        self._int8 = Int8Copy()

    def predictor(self, X: torch.Tensor, train: bool) -> torch.nn.Module:
        """The module that runs this pass: the encoder, or for CPU prediction with
        `inference_dtype = "int8"` its int8 copy."""
        if train or self.inference_dtype != "int8":
            return self.encoder
        if X.device.type != "cpu":
            if not getattr(self, "_warned_device", False):
                self._warned_device = True
                warnings.warn(
                    f"int8 inference applies on CPU only; the encoder on {X.device} predicts "
                    "in its own precision",
                    stacklevel=2,
                )
            return self.encoder
        return self._int8.get(self.encoder, self.updates)

    def forward(self, X: torch.Tensor, *, batch: WindowBatch, train: bool = False) -> torch.Tensor:
        register_fork_hook()  # a flag check after the first call
        encoder = self.predictor(X, train)
        # X: (N, C). Each chunk runs packed: its windows' tokens (a token in two overlapping
        # windows twice), padded only inside attention.
        outputs = [encoder(X.index_select(0, c.tokens), c.layout, train) for c in batch.chunks]
        # Under autocast the encoder may return half precision; thinc wants float32.
        return torch.cat(outputs).index_select(0, batch.output_index).float()  # (N, C)


def convert_inputs(
    model: Model,
    X: List[Floats2d],
    is_train: bool,
    *,
    windows: WindowConfig,
) -> Tuple[ArgsKwargs, Callable[[ArgsKwargs], List[Floats2d]]]:
    """Flatten the docs and plan their windows. The window settings are bound
    from the config (functools.partial), not stored as model attrs, so a
    loaded model uses the settings of the config it is loaded with. Whether
    dropout applies is passed to the module as an argument (`train`), never
    through the module's shared train/eval state."""
    lengths = [len(x) for x in X]
    Xt = xp2torch(model.ops.flatten(X), requires_grad=is_train)
    batch = build_window_batch(
        lengths, windows.max_length, windows.window_overlap, windows.max_batch_tokens, Xt.device
    )

    def convert_for_backprop(d_inputs: ArgsKwargs) -> List[Floats2d]:
        return model.ops.unflatten(torch2xp(d_inputs.args[0]), lengths)

    return ArgsKwargs(args=(Xt,), kwargs={"batch": batch, "train": is_train}), convert_for_backprop


def convert_outputs(
    model: Model, inputs_outputs: Tuple[List[Floats2d], torch.Tensor], is_train: bool
) -> Tuple[List[Floats2d], Callable[[List[Floats2d]], ArgsKwargs]]:
    X, Yt = inputs_outputs
    lengths = [len(x) for x in X]
    Y = model.ops.unflatten(torch2xp(Yt), lengths)

    def convert_for_torch_backward(dY: List[Floats2d]) -> ArgsKwargs:
        dYt = xp2torch(model.ops.flatten(dY))
        return ArgsKwargs(args=(Yt,), kwargs={"grad_tensors": dYt})

    return Y, convert_for_torch_backward
