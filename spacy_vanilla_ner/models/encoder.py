"""Registered thinc builders for the encoder: TransformerEncoder.v1 and .v2 (the
`encode` slot of spacy.Tok2Vec.v2) and TransformerTok2Vec.v1 (hashed features +
encoder v1)."""

import contextlib
from dataclasses import MISSING, fields
from functools import partial
from io import BytesIO
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union, cast

import torch
from spacy.ml.models.tok2vec import MultiHashEmbed, build_Tok2Vec_model
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import (
    Model,
    Optimizer,
    PyTorchGradScaler,
    PyTorchShim,
    PyTorchWrapper_v2,
    torch2xp,
    xp2torch,
)
from thinc.types import Floats2d, FloatsXd

from .torch_encoder import EncoderConfig, TransformerEncoderModule
from .windowing import WindowConfig, WindowedEncoder, convert_inputs, convert_outputs


def _defaults(config_class) -> dict:
    return {f.name: f.default for f in fields(config_class) if f.default is not MISSING}


# Each default is stated once, on EncoderConfig (v2's) or WindowConfig; the builders'
# signatures read them from there, and spaCy fills configs from the signatures.
ENCODER = _defaults(EncoderConfig)
WINDOW = _defaults(WindowConfig)
# Where v1 differs from v2: no Maxout window sub-layer, no token dropout, a final
# LayerNorm. v1 does not take these settings; they are fixed.
ENCODER_V1 = {"window_size": None, "token_dropout": 0.0, "final_norm": True}


@registry.architectures("spacy-vanilla-ner.TransformerEncoder.v1")
def build_transformer_encoder_v1(
    width: int,
    depth: int,
    n_heads: int,
    *,
    ff_width: Optional[int] = ENCODER["ff_width"],
    dropout: float = ENCODER["dropout"],
    attention_dropout: float = ENCODER["attention_dropout"],
    activation: str = ENCODER["activation"],
    positions: str = ENCODER["positions"],
    norm_first: bool = ENCODER["norm_first"],
    max_length: int = ENCODER["max_length"],
    window_overlap: int = WINDOW["window_overlap"],
    max_batch_tokens: int = WINDOW["max_batch_tokens"],
    mixed_precision: bool = False,
    grad_scaler_config: Optional[dict] = None,
) -> Model[List[Floats2d], List[Floats2d]]:
    """The encoder of 0.1.0, kept for its pipelines: v2 without the Maxout window
    sub-layer and token dropout, and with a final LayerNorm (`ENCODER_V1`). For the
    `encode` slot of `spacy.Tok2Vec.v2`; input and output width are both `width`.

    width (int): Token vector width; the embedding layer must output this width.
    depth (int): Number of encoder layers.
    n_heads (int): Attention heads; must divide `width`.
    ff_width (Optional[int]): Hidden width of the feed-forward blocks. Defaults to 4 * width.
    dropout (float): Dropout on the input, the residual branches and the feed-forward
        hidden layer. A config value: thinc's `set_dropout_rate` does not reach torch.
    attention_dropout (float): Dropout on the attention probabilities.
    activation (str): Feed-forward activation: "gelu", "relu" or "silu".
    positions (str): "rotary" (relative, RoPE), "sinusoidal" or "learned" (absolute),
        or "none".
    norm_first (bool): Pre-LayerNorm (True, stable without warmup) or post-LayerNorm.
    max_length (int): Longest window in tokens. Longer docs are covered by overlapping
        windows; memory is bounded by the window, not the doc.
    window_overlap (int): Tokens shared by consecutive windows of a long doc.
    max_batch_tokens (int): Padded tokens run through the module at once; windows
        beyond that are run in further chunks.
    mixed_precision (bool): Run the forward pass under CUDA autocast (GPU only).
    grad_scaler_config (Optional[dict]): Arguments for thinc's `PyTorchGradScaler`;
        "enabled" defaults to `mixed_precision`.
    RETURNS (Model[List[Floats2d], List[Floats2d]]): The encoder.
    """
    return build_transformer_encoder_v2(
        width,
        depth,
        n_heads,
        ff_width=ff_width,
        dropout=dropout,
        attention_dropout=attention_dropout,
        activation=activation,
        positions=positions,
        norm_first=norm_first,
        max_length=max_length,
        **ENCODER_V1,
        window_overlap=window_overlap,
        max_batch_tokens=max_batch_tokens,
        mixed_precision=mixed_precision,
        grad_scaler_config=grad_scaler_config,
    )


@registry.architectures("spacy-vanilla-ner.TransformerEncoder.v2")
def build_transformer_encoder_v2(
    width: int,
    depth: int,
    n_heads: int,
    *,
    ff_width: Optional[int] = ENCODER["ff_width"],
    dropout: float = ENCODER["dropout"],
    attention_dropout: float = ENCODER["attention_dropout"],
    activation: str = ENCODER["activation"],
    positions: str = ENCODER["positions"],
    norm_first: bool = ENCODER["norm_first"],
    max_length: int = ENCODER["max_length"],
    window_size: Optional[int] = ENCODER["window_size"],
    maxout_pieces: int = ENCODER["maxout_pieces"],
    token_dropout: float = ENCODER["token_dropout"],
    final_norm: bool = ENCODER["final_norm"],
    window_overlap: int = WINDOW["window_overlap"],
    max_batch_tokens: int = WINDOW["max_batch_tokens"],
    mixed_precision: bool = False,
    grad_scaler_config: Optional[dict] = None,
) -> Model[List[Floats2d], List[Floats2d]]:
    """A Transformer encoder trained from scratch, for the `encode` slot of
    `spacy.Tok2Vec.v2` (where `spacy.MaxoutWindowEncoder.v2` and
    `spacy.TorchBiLSTMEncoder.v1` go); the encoder of the default recipe. Input and
    output width are both `width`. The arguments are those of v1, plus:

    window_size (Optional[int]): Neighbours on either side of each token in the Maxout
        window sub-layer that runs before self-attention in each block (the layer of
        `spacy.MaxoutWindowEncoder.v2`, with its meaning of `window_size`); null for none.
    maxout_pieces (int): Pieces of that Maxout layer.
    token_dropout (float): While training, zero a whole token vector at the encoder's
        input with this probability, so that the model learns to tag from context.
    final_norm (bool): With `norm_first`, close the residual stream with a LayerNorm
        (as v1 and GPT-2 do). Off by default: the tagger then sees the normalised input
        plus the blocks' outputs.
    RETURNS (Model[List[Floats2d], List[Floats2d]]): The encoder.
    """
    config = EncoderConfig(
        width=width,
        depth=depth,
        n_heads=n_heads,
        ff_width=ff_width,
        dropout=dropout,
        attention_dropout=attention_dropout,
        activation=activation,
        positions=positions,
        norm_first=norm_first,
        max_length=max_length,
        window_size=window_size,
        maxout_pieces=maxout_pieces,
        token_dropout=token_dropout,
        final_norm=final_norm,
    )
    windows = WindowConfig(max_length, window_overlap, max_batch_tokens)
    return _build_encoder(config, windows, mixed_precision, grad_scaler_config)


def _build_encoder(
    config: EncoderConfig,
    windows: WindowConfig,
    mixed_precision: bool,
    grad_scaler_config: Optional[dict],
) -> Model[List[Floats2d], List[Floats2d]]:
    grad_scaler_config = dict(grad_scaler_config or {})
    grad_scaler_config.setdefault("enabled", mixed_precision)
    module = WindowedEncoder(TransformerEncoderModule(config))
    grad_scaler = PyTorchGradScaler(**grad_scaler_config)
    torch_layer = PyTorchWrapper_v2(
        module,
        convert_inputs=partial(convert_inputs, windows=windows),
        convert_outputs=convert_outputs,
        mixed_precision=mixed_precision,
        grad_scaler=grad_scaler,
    )
    torch_layer.shims[0] = InPlaceUpdateShim(
        module,
        mixed_precision=mixed_precision,
        grad_scaler=grad_scaler,
        serialize_model=serialize_state,
    )
    return Model(
        "transformer_encoder",
        _encoder_forward,
        init=_encoder_init,
        layers=[torch_layer],
        dims={"nI": config.width, "nO": config.width},
    )


def serialize_state(module: torch.nn.Module) -> bytes:
    """`torch.save` of the module's state dict, each tensor in a storage of its own: the same
    bytes whether or not the parameters are views of the fused step's flat buffer (which
    `torch.save` would otherwise write as one shared storage)."""
    state = {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}
    filelike = BytesIO()
    torch.save(state, filelike)
    return filelike.getvalue()


class InPlaceUpdateShim(PyTorchShim):
    """thinc's `PyTorchShim` with a fused optimizer step that keeps the result in the
    parameters' own memory.

    Fused: the encoder's parameters and their gradients are views of two flat buffers, and
    the optimizer is called once per update on the whole buffer instead of once per tensor
    (36 tensors in the default encoder): `benchmarks/optimizer.py`. Adam, its L2 and its
    averages are elementwise, so one call computes what the per-tensor calls compute;
    gradient clipping, which thinc applies to each tensor's norm, is done here per tensor
    before the call (and the optimizer's own `grad_clip` is off for it), so training is the
    same as with thinc's shim up to float rounding (tests/models/test_inplace_update.py).

    In place: thinc's `finish_update` sets `param.data = xp2torch(new)` after each update.
    On CPU `new` is a numpy view of the previous `param.data`, so every update links one
    more tensor and numpy array per parameter into a chain that is never freed: a heap and
    garbage-collector load that grows over a long training run. thinc's optimizers update
    in place, so there is nothing to copy; an optimizer that returns new memory is copied in.

    The flat buffers are (re)made at an update whenever the parameters are not their views
    (the first update; after the module was moved to another device, copied or unpickled);
    they are not pickled."""

    _flat: Optional[Tuple["torch.Tensor", "torch.Tensor"]] = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_flat", None)
        return state

    def finish_update(self, optimizer: Optimizer) -> None:
        params = list(self._model.parameters())
        if (
            not params
            or not isinstance(optimizer, Optimizer)
            or any(p.grad is None for p in params)
        ):
            # Fusing relies on thinc's optimizer (its clipping and L2 settings, elementwise
            # updates); any other callable gets thinc's per-tensor calls.
            return self._finish_per_tensor(optimizer)
        flat, flat_grad = self._flat_buffers(params)
        if not self._grad_scaler.found_inf:  # skip the step if a gradient overflowed
            with torch.no_grad():
                if optimizer.L2 != 0 and not optimizer.L2_is_weight_decay:
                    flat_grad.add_(flat, alpha=optimizer.L2)  # as thinc does, before clipping
                if optimizer.grad_clip:
                    _clip_per_tensor([p.grad for p in params], optimizer.grad_clip)
            own = (optimizer.grad_clip, optimizer.L2)
            optimizer.grad_clip = 0.0
            if not optimizer.L2_is_weight_decay:
                optimizer.L2 = 0.0
            try:
                new, _ = optimizer(
                    (self.id, "flat"),
                    cast(FloatsXd, torch2xp(flat)),
                    cast(FloatsXd, torch2xp(flat_grad)),
                )
            finally:
                optimizer.grad_clip, optimizer.L2 = own
            updated = xp2torch(new, device=flat.device)
            if updated.data_ptr() != flat.data_ptr():
                with torch.no_grad():
                    flat.copy_(updated)
        flat_grad.zero_()
        self._grad_scaler.update()
        count_update(self._model)

    @contextlib.contextmanager
    def use_params(self, params: Dict[Any, Any]) -> Iterator[None]:
        """Swap in the optimizer's averaged weights, as `nlp.use_params(optimizer.averages)`
        does for spaCy's evaluation and checkpoints. thinc's `PyTorchShim.use_params` looks
        for keys that its own `finish_update` never writes, so with thinc's shim the
        averages never reached a torch encoder. Takes the fused step's key (one flat array)
        and the per-tensor keys."""
        module_params = list(self._model.named_parameters())
        flat = params.get((self.id, "flat"))
        values: Dict[str, Any] = {}
        if flat is not None and getattr(flat, "size", 0) == sum(
            p.numel() for _, p in module_params
        ):
            flat_t = xp2torch(flat, device=module_params[0][1].device)
            offset = 0
            for name, param in module_params:
                values[name] = flat_t[offset : offset + param.numel()].view_as(param)
                offset += param.numel()
        else:
            for name, param in module_params:
                if (self.id, name) in params:
                    values[name] = xp2torch(params[(self.id, name)], device=param.device)
        if not values:
            with super().use_params(params):  # thinc's own key form
                yield
            return
        backup = {name: param.detach().clone() for name, param in module_params if name in values}
        with torch.no_grad():
            for name, param in module_params:
                if name in values:
                    param.copy_(values[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, param in module_params:
                    if name in backup:
                        param.copy_(backup[name])

    def _finish_per_tensor(self, optimizer: Optimizer) -> None:
        for name, param in self._model.named_parameters():
            if param.grad is None:
                continue
            if not self._grad_scaler.found_inf:
                new, _ = optimizer(
                    (self.id, name),
                    cast(FloatsXd, torch2xp(param.data)),
                    cast(FloatsXd, torch2xp(param.grad)),
                )
                updated = xp2torch(new, device=param.device)
                if updated.data_ptr() != param.data_ptr():
                    with torch.no_grad():
                        param.copy_(updated)
            param.grad.zero_()
        self._grad_scaler.update()
        count_update(self._model)

    def _flat_buffers(
        self, params: List["torch.nn.Parameter"]
    ) -> Tuple["torch.Tensor", "torch.Tensor"]:
        """The flat parameter and gradient buffers, with the parameters (and gradients) made
        their views if they are not."""
        if self._flat is not None and _are_views(params, self._flat[0], self._flat[1]):
            return self._flat
        with torch.no_grad():
            flat = torch.cat([p.detach().reshape(-1) for p in params])
            flat_grad = torch.cat([p.grad.detach().reshape(-1) for p in params])
            offset = 0
            for p in params:
                n = p.numel()
                p.data = flat[offset : offset + n].view_as(p)
                p.grad = flat_grad[offset : offset + n].view_as(p)
                offset += n
        self._flat = (flat, flat_grad)
        return self._flat


def count_update(module: torch.nn.Module) -> None:
    """Count an optimizer step on `module` (`WindowedEncoder.updates`), which the int8 copy
    (`quantization.Int8Copy`) reads to know that the weights changed: thinc's optimizers
    write through numpy views, which torch's version counters do not see. (Bumping those
    counters instead breaks spaCy's training: `Language.update` steps the tok2vec before the
    listeners' backward pass has run through it.)"""
    module.updates = getattr(module, "updates", 0) + 1


def _are_views(params: List["torch.nn.Parameter"], flat, flat_grad) -> bool:
    offset = 0
    size = flat.element_size()
    for p in params:
        if (
            p.data_ptr() != flat.data_ptr() + offset * size
            or p.grad is None
            or p.grad.data_ptr() != flat_grad.data_ptr() + offset * size
            or not p.is_contiguous()
            or not p.grad.is_contiguous()
        ):
            return False
        offset += p.numel()
    return offset == flat.numel()


def _clip_per_tensor(grads: List["torch.Tensor"], threshold: float) -> None:
    """thinc's `clip_gradient` on each tensor, in two multi-tensor calls: a gradient whose
    norm is >= threshold is scaled to norm `threshold`, in place."""
    norms = torch.stack(torch._foreach_norm(grads))
    scale = torch.where(norms >= threshold, threshold / norms, torch.ones_like(norms))
    torch._foreach_mul_(grads, list(scale.unbind()))


def _check_width(model: Model, X: List[Floats2d]) -> None:
    # The docs' vectors come from one embedding layer, so they share its
    # width: the first doc tells.
    if X and (X[0].ndim != 2 or X[0].shape[1] != model.get_dim("nI")):
        raise ValueError(
            f"TransformerEncoder: expected token vectors of width {model.get_dim('nI')}, "
            f"got shape {tuple(X[0].shape)}. Set the embedding width (e.g. `width` of "
            f"spacy.MultiHashEmbed.v2) to the encoder's `width`."
        )


def _encoder_init(model: Model, X: Optional[List[Floats2d]] = None, Y=None) -> None:
    if X:
        _check_width(model, X)


def _encoder_forward(model: Model, X: List[Floats2d], is_train: bool):
    _check_width(model, X)
    lengths = [len(x) for x in X]
    if sum(lengths) == 0:
        # Nothing to attend over: return empty outputs without touching torch.
        width = model.get_dim("nO")
        return [model.ops.alloc2f(n, width) for n in lengths], lambda dY: [
            model.ops.alloc2f(n, width) for n in lengths
        ]
    return model.layers[0](X, is_train)


@registry.architectures("spacy-vanilla-ner.TransformerTok2Vec.v1")
def build_transformer_tok2vec_v1(
    width: int,
    depth: int,
    n_heads: int,
    *,
    attrs: Sequence[Union[str, int]] = ("NORM", "PREFIX", "SUFFIX", "SHAPE"),
    rows: Sequence[int] = (5000, 1000, 2500, 2500),
    include_static_vectors: bool = False,
    ff_width: Optional[int] = ENCODER["ff_width"],
    dropout: float = ENCODER["dropout"],
    attention_dropout: float = ENCODER["attention_dropout"],
    activation: str = ENCODER["activation"],
    positions: str = ENCODER["positions"],
    norm_first: bool = ENCODER["norm_first"],
    max_length: int = ENCODER["max_length"],
    window_overlap: int = WINDOW["window_overlap"],
    max_batch_tokens: int = WINDOW["max_batch_tokens"],
    mixed_precision: bool = False,
    grad_scaler_config: Optional[dict] = None,
) -> Model[List[Doc], List[Floats2d]]:
    """A complete tok2vec: spaCy's hashed features (`spacy.MultiHashEmbed.v2`)
    followed by `spacy-vanilla-ner.TransformerEncoder.v1`. The first three
    arguments and the encoder settings are as for the encoder.

    attrs (Sequence[Union[str, int]]): Token attributes to embed.
    rows (Sequence[int]): Hash-embedding rows per attribute.
    include_static_vectors (bool): Also use the pipeline's static vectors.
    RETURNS (Model[List[Doc], List[Floats2d]]): The tok2vec.
    """
    embed = MultiHashEmbed(
        width=width,
        attrs=list(attrs),
        rows=list(rows),
        include_static_vectors=include_static_vectors,
    )
    encode = build_transformer_encoder_v1(
        width,
        depth,
        n_heads,
        ff_width=ff_width,
        dropout=dropout,
        attention_dropout=attention_dropout,
        activation=activation,
        positions=positions,
        norm_first=norm_first,
        max_length=max_length,
        window_overlap=window_overlap,
        max_batch_tokens=max_batch_tokens,
        mixed_precision=mixed_precision,
        grad_scaler_config=grad_scaler_config,
    )
    return build_Tok2Vec_model(embed, encode)
