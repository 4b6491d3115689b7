"""Registered thinc builder for the per-token classifier: NERTagger.v1."""

from typing import Callable, Dict, List, Optional

from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import (
    Gelu,
    Maxout,
    Mish,
    Model,
    Relu,
    Softmax_v2,
    Swish,
    chain,
    with_array,
    zero_init,
)
from thinc.types import Floats2d

HIDDEN_LAYERS: Dict[str, Callable[..., Model]] = {
    "maxout": lambda nO, dropout: Maxout(nO, nP=3, dropout=dropout, normalize=True),
    "relu": lambda nO, dropout: Relu(nO, dropout=dropout, normalize=True),
    "gelu": lambda nO, dropout: Gelu(nO, dropout=dropout, normalize=True),
    "mish": lambda nO, dropout: Mish(nO, dropout=dropout, normalize=True),
    "swish": lambda nO, dropout: Swish(nO, dropout=dropout, normalize=True),
}


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
            "NERTagger: set hidden_width; it cannot be taken from a tok2vec without an "
            "`nO` dimension."
        )
    hidden = [HIDDEN_LAYERS[activation](width, dropout) for _ in range(hidden_depth)]
    output_layer = Softmax_v2(nO, width if hidden else t2v_width, init_W=zero_init)
    head = chain(*hidden, output_layer) if hidden else output_layer
    model = chain(tok2vec, with_array(head))
    model.set_ref("tok2vec", tok2vec)
    model.set_ref("softmax", output_layer)
    model.set_ref("output_layer", output_layer)
    return model
