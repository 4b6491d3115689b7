"""Registered model builders: the encoder, a one-block tok2vec and the tagger."""
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Union

from spacy.ml.models.tok2vec import MultiHashEmbed, build_Tok2Vec_model
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import (
    Gelu,
    Maxout,
    Mish,
    Model,
    PyTorchGradScaler,
    PyTorchWrapper_v2,
    Relu,
    Softmax_v2,
    Swish,
    chain,
    with_array,
    zero_init,
)
from thinc.types import Floats2d

from .layers import WindowedEncoder, convert_inputs, convert_outputs
from .torch_modules import EncoderConfig, TransformerEncoderModule

HIDDEN_LAYERS: Dict[str, Callable[..., Model]] = {
    "maxout": lambda nO, dropout: Maxout(nO, nP=3, dropout=dropout, normalize=True),
    "relu": lambda nO, dropout: Relu(nO, dropout=dropout, normalize=True),
    "gelu": lambda nO, dropout: Gelu(nO, dropout=dropout, normalize=True),
    "mish": lambda nO, dropout: Mish(nO, dropout=dropout, normalize=True),
    "swish": lambda nO, dropout: Swish(nO, dropout=dropout, normalize=True),
}


@registry.architectures("spacy-vanilla-ner.TransformerEncoder.v1")
def build_transformer_encoder_v1(
    width: int,
    depth: int,
    n_heads: int,
    *,
    ff_width: Optional[int] = None,
    dropout: float = 0.1,
    attention_dropout: float = 0.1,
    activation: str = "gelu",
    positions: str = "rotary",
    norm_first: bool = True,
    max_length: int = 512,
    window_overlap: int = 128,
    max_batch_tokens: int = 16384,
    mixed_precision: bool = False,
    grad_scaler_config: Optional[dict] = None,
) -> Model[List[Floats2d], List[Floats2d]]:
    """A Transformer encoder trained from scratch, for the `encode` slot of
    `spacy.Tok2Vec.v2` (where `spacy.MaxoutWindowEncoder.v2` and
    `spacy.TorchBiLSTMEncoder.v1` go). Input and output width are both `width`.

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
    config = EncoderConfig(
        width=width,
        depth=depth,
        n_heads=n_heads,
        ff_width=ff_width if ff_width is not None else 4 * width,
        dropout=dropout,
        attention_dropout=attention_dropout,
        activation=activation,
        positions=positions,
        norm_first=norm_first,
        max_length=max_length,
    )
    config.validate()
    if not 0 <= window_overlap <= max_length // 2:
        raise ValueError(
            f"TransformerEncoder: window_overlap must be between 0 and max_length / 2 "
            f"({max_length // 2}), got {window_overlap}."
        )
    if max_batch_tokens < 1:
        raise ValueError(f"TransformerEncoder: max_batch_tokens must be positive, got {max_batch_tokens}.")
    grad_scaler_config = dict(grad_scaler_config or {})
    grad_scaler_config.setdefault("enabled", mixed_precision)
    torch_layer = PyTorchWrapper_v2(
        WindowedEncoder(TransformerEncoderModule(config)),
        convert_inputs=partial(
            convert_inputs,
            max_length=max_length,
            window_overlap=window_overlap,
            max_batch_tokens=max_batch_tokens,
        ),
        convert_outputs=convert_outputs,
        mixed_precision=mixed_precision,
        grad_scaler=PyTorchGradScaler(**grad_scaler_config),
    )
    return Model(
        "transformer_encoder",
        _encoder_forward,
        init=_encoder_init,
        layers=[torch_layer],
        dims={"nI": width, "nO": width},
        attrs={"receptive_field": max_length},
    )


def _check_width(model: Model, X: List[Floats2d]) -> None:
    for x in X:
        if x.ndim != 2 or x.shape[1] != model.get_dim("nI"):
            raise ValueError(
                f"TransformerEncoder: expected token vectors of width {model.get_dim('nI')}, "
                f"got shape {tuple(x.shape)}. Set the embedding width (e.g. `width` of "
                f"spacy.MultiHashEmbed.v2) to the encoder's `width`."
            )
        return  # docs share one width; checking the first is enough


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
    ff_width: Optional[int] = None,
    dropout: float = 0.1,
    attention_dropout: float = 0.1,
    activation: str = "gelu",
    positions: str = "rotary",
    norm_first: bool = True,
    max_length: int = 512,
    window_overlap: int = 128,
    max_batch_tokens: int = 16384,
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


@registry.architectures("spacy-vanilla-ner.NERTagger.v1")
def build_ner_tagger_v1(
    tok2vec: Model[List[Doc], List[Floats2d]],
    hidden_width: Optional[int] = None,
    hidden_depth: int = 0,
    dropout: float = 0.0,
    activation: str = "maxout",
    nO: Optional[int] = None,
) -> Model[List[Doc], List[Floats2d]]:
    """A per-token classifier: tok2vec -> hidden layers -> softmax. The model of
    the `vanilla_ner` component (one class per BILUO tag), and usable as the
    model of spaCy's `tagger`.

    tok2vec (Model[List[Doc], List[Floats2d]]): Any tok2vec or listener.
    hidden_width (Optional[int]): Width of the hidden layers; defaults to the tok2vec width.
    hidden_depth (int): Number of hidden layers between tok2vec and softmax.
    dropout (float): Dropout after each hidden layer.
    activation (str): "maxout", "relu", "gelu", "mish" or "swish".
    nO (Optional[int]): Number of classes; inferred at initialize.
    RETURNS (Model[List[Doc], List[Floats2d]]): Per-token class probabilities.
    """
    if activation not in HIDDEN_LAYERS:
        raise ValueError(
            f"NERTagger: activation must be one of {tuple(HIDDEN_LAYERS)}, got {activation!r}."
        )
    if hidden_depth < 0:
        raise ValueError(f"NERTagger: hidden_depth must be >= 0, got {hidden_depth}.")
    t2v_width = tok2vec.get_dim("nO") if tok2vec.has_dim("nO") else None
    width = hidden_width or t2v_width
    if hidden_depth and width is None:
        raise ValueError(
            "NERTagger: set hidden_width; it cannot be taken from a tok2vec without an `nO` dimension."
        )
    hidden = [HIDDEN_LAYERS[activation](width, dropout) for _ in range(hidden_depth)]
    output_layer = Softmax_v2(nO, width if hidden else t2v_width, init_W=zero_init)
    head = chain(*hidden, output_layer) if hidden else output_layer
    model = chain(tok2vec, with_array(head))
    model.set_ref("tok2vec", tok2vec)
    model.set_ref("softmax", output_layer)
    model.set_ref("output_layer", output_layer)
    return model
