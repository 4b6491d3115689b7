"""Registered thinc builders for the encoder: TransformerEncoder.v1 and .v2 (the
`encode` slot of spacy.Tok2Vec.v2) and TransformerTok2Vec.v1 (hashed features +
encoder v1)."""

from dataclasses import MISSING, fields
from functools import partial
from typing import List, Optional, Sequence, Union

from spacy.ml.models.tok2vec import MultiHashEmbed, build_Tok2Vec_model
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model, PyTorchGradScaler, PyTorchWrapper_v2
from thinc.types import Floats2d

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
    torch_layer = PyTorchWrapper_v2(
        WindowedEncoder(TransformerEncoderModule(config)),
        convert_inputs=partial(convert_inputs, windows=windows),
        convert_outputs=convert_outputs,
        mixed_precision=mixed_precision,
        grad_scaler=PyTorchGradScaler(**grad_scaler_config),
    )
    return Model(
        "transformer_encoder",
        _encoder_forward,
        init=_encoder_init,
        layers=[torch_layer],
        dims={"nI": config.width, "nO": config.width},
    )


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
