"""`spacy-vanilla-ner.MultiHashEmbed.v1`: spaCy's `spacy.MultiHashEmbed.v2`, the same layers
and weights, with its mixing layer computed by torch.

`MultiHashEmbed` looks up each token's hashed features (NORM, PREFIX, SUFFIX, SHAPE), joins
the rows and mixes them to `width` with a Maxout layer (3 pieces) and a LayerNorm. thinc runs
that mixing layer with its own single-threaded numpy kernels, where it is a large part of the
embedding's cost, and the embedding a large part of a CPU pipeline's (docs/results.md).
This architecture builds the very same model with spaCy's function, then gives the Maxout and
LayerNorm nodes forward and backward passes that call torch (its matrix multiply and its
threads, `torch.set_num_threads`) on the same parameters. The model tree, the parameter names
and shapes, and so the saved weights are those of `spacy.MultiHashEmbed.v2`: weights trained or
pretrained with one load into the other. The outputs agree within float rounding.
"""

from typing import Callable, List, Tuple, Union

import numpy
import torch
from spacy.ml.models.tok2vec import MultiHashEmbed
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model
from thinc.types import Floats2d
from thinc.util import torch2xp, xp2torch

from .windowing import register_fork_hook

LN_EPSILON = 1e-08  # thinc's LayerNorm adds it to the variance


@registry.architectures("spacy-vanilla-ner.MultiHashEmbed.v1")
def build_multi_hash_embed(
    width: int,
    attrs: List[Union[str, int]],
    rows: List[int],
    include_static_vectors: bool,
) -> Model[List[Doc], List[Floats2d]]:
    """`spacy.MultiHashEmbed.v2` with its Maxout and LayerNorm run by torch. The arguments
    are spaCy's (https://spacy.io/api/architectures#MultiHashEmbed).

    width (int): The output width; the encoder's width.
    attrs (List[Union[str, int]]): The token attributes to embed, one hash table each.
    rows (List[int]): Rows per table, one per attribute.
    include_static_vectors (bool): Also use the pipeline's static vectors.
    RETURNS (Model[List[Doc], List[Floats2d]]): The embedding layer.
    """
    model = MultiHashEmbed(
        width=width, attrs=attrs, rows=rows, include_static_vectors=include_static_vectors
    )
    return with_torch_mixing(model)


def with_torch_mixing(model: Model) -> Model:
    """`model` with the forward pass of each thinc Maxout and LayerNorm node in it replaced by
    the torch one below; nothing else changes. Like the encoder, it makes processes forked
    from this one run torch on one thread (`register_fork_hook`), so that `nlp.pipe(n_process=2)`
    works without our encoder in the pipeline. RETURNS (Model): `model`."""
    register_fork_hook()
    replaced = 0
    for node in model.walk():
        if node.name == "maxout" and node._func is not _maxout_forward:
            node._func = _maxout_forward
            replaced += 1
        elif node.name == "layernorm" and node._func is not _layernorm_forward:
            node._func = _layernorm_forward
            replaced += 1
    if not replaced:
        raise ValueError(
            "with_torch_mixing: the model has no thinc Maxout or LayerNorm layer to run with "
            "torch (expected spaCy's MultiHashEmbed)"
        )
    return model


def _to_torch(X: numpy.ndarray) -> torch.Tensor:
    return torch.from_numpy(X) if isinstance(X, numpy.ndarray) else xp2torch(X)


def _maxout_forward(model: Model, X: Floats2d, is_train: bool) -> Tuple[Floats2d, Callable]:
    """thinc's Maxout forward pass (`thinc.layers.maxout.forward`) in torch: the same
    parameters and the same maximum; the backward pass gives the gradient to the piece that
    won (on ties the first, as in thinc)."""
    register_fork_hook()  # for a model that was unpickled; a flag check after the first call
    nO, nP, nI = model.get_dim("nO"), model.get_dim("nP"), model.get_dim("nI")
    W = _to_torch(model.get_param("W")).reshape(nO * nP, nI)
    b = _to_torch(model.get_param("b")).reshape(nO * nP)
    Xt = _to_torch(X)
    with torch.no_grad():
        Z = torch.nn.functional.linear(Xt, W, b).view(-1, nO, nP)
        best, which = Z.max(dim=2)  # on ties the first piece, as thinc's maxout
    ops = model.ops

    def backprop(d_best: Floats2d) -> Floats2d:
        with torch.no_grad():
            dZ = torch.zeros_like(Z)
            dZ.scatter_(2, which.unsqueeze(2), _to_torch(d_best).unsqueeze(2))
            dY = dZ.view(-1, nO * nP)
            model.inc_grad("b", torch2xp(dY.sum(dim=0).view(nO, nP), ops=ops))
            model.inc_grad("W", torch2xp((dY.t() @ Xt).view(nO, nP, nI), ops=ops))
            return torch2xp(dY @ W, ops=ops)

    return torch2xp(best, ops=ops), backprop


def _layernorm_forward(model: Model, X: Floats2d, is_train: bool) -> Tuple[Floats2d, Callable]:
    """thinc's LayerNorm forward pass (`thinc.layers.layernorm.forward`) in torch: over each
    row, (X - mean) / sqrt(var + 1e-8) * G + b, and its backward pass, one torch op each."""
    G = _to_torch(model.get_param("G"))
    b = _to_torch(model.get_param("b"))
    Xt = _to_torch(X)
    ops = model.ops
    shape = [Xt.shape[1]]
    with torch.no_grad():
        Y, mean, rstd = torch.native_layer_norm(Xt, shape, G, b, LN_EPSILON)

    def backprop(dY: Floats2d) -> Floats2d:
        with torch.no_grad():
            dX, dG, db = torch.ops.aten.native_layer_norm_backward(
                _to_torch(dY), Xt, shape, mean, rstd, G, b, [True, True, True]
            )
            model.inc_grad("b", torch2xp(db, ops=ops))
            model.inc_grad("G", torch2xp(dG, ops=ops))
            return torch2xp(dX, ops=ops)

    return torch2xp(Y, ops=ops), backprop
