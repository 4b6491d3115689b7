"""`spacy-vanilla-ner.CharCNNEmbed.v1`: an `embed` layer for `spacy.Tok2Vec.v2` that adds a
character CNN over every character of each word beside a word-level embedding layer.

spaCy's `MultiHashEmbed` sees a word through four hashed features (NORM, PREFIX = the first
character, SUFFIX = the last three, SHAPE); a name never seen in training is then mostly its
unknown NORM row. A character CNN (Ma & Hovy 2016, https://arxiv.org/abs/1603.01354; Lample
et al. 2016 use a character BiLSTM) reads the whole spelling: each character of the word,
between a begin and an end marker, gets a hashed embedding of `char_width`; a convolution of
`2 * window_size + 1` characters with `filters` outputs runs over them (thinc's
`expand_window` and `Linear` on a `Ragged` per word, so windows never cross words), and the
maximum over the word's positions is its character vector. That vector is concatenated with
the wrapped layer's word vector and mixed to `width` by a Maxout with layer normalisation, as
`MultiHashEmbed` mixes its own features.

Words longer than `max_chars` characters keep their first and last `max_chars // 2`
characters. The character ids are built on the host once per batch (one lookup per distinct
word) and moved to the model's device in one transfer.
"""

from typing import Callable, List, Optional, Tuple

import numpy
from spacy.attrs import ORTH
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import (
    HashEmbed,
    Linear,
    Maxout,
    Model,
    Ragged,
    chain,
    concatenate,
    expand_window,
    reduce_max,
    with_array,
)
from thinc.types import Floats2d, Ints1d

# Unicode code points stop at 0x10FFFF < 2**21: the word markers cannot be characters.
BEGIN = 2**21
END = 2**21 + 1


@registry.architectures("spacy-vanilla-ner.CharCNNEmbed.v1")
def build_char_cnn_embed_v1(
    embed: Model[List[Doc], List[Floats2d]],
    width: int,
    char_width: int = 16,
    filters: int = 48,
    window_size: int = 1,
    rows: int = 1000,
    max_chars: int = 20,
) -> Model[List[Doc], List[Floats2d]]:
    """The vectors of `embed` and of a character CNN, concatenated per token and mixed to
    `width` (see the module docstring).

    embed (Model[List[Doc], List[Floats2d]]): The word-level embedding layer, e.g.
        spacy.MultiHashEmbed.v2; it may sit inside spacy-vanilla-ner.NormDropout.v2.
    width (int): The output width, the encoder's width.
    char_width (int): Width of the hashed character embeddings.
    filters (int): Outputs of the character convolution: the width of a word's character vector.
    window_size (int): Characters on each side in a convolution window (1: windows of 3).
    rows (int): Rows of the hashed character embedding table.
    max_chars (int): Longer words keep their first and last max_chars // 2 characters.
    """
    for name, value, low in (
        ("width", width, 1),
        ("char_width", char_width, 1),
        ("filters", filters, 1),
        ("window_size", window_size, 0),
        ("rows", rows, 1),
        ("max_chars", max_chars, 2),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(
                f"spacy-vanilla-ner.CharCNNEmbed.v1: {name} must be an integer >= {low}, "
                f"got {value!r}"
            )
    mixed = chain(
        concatenate(embed, char_cnn(char_width, filters, window_size, rows, max_chars)),
        with_array(Maxout(width, nP=3, dropout=0.0, normalize=True)),
    )
    # thinc's concatenate cannot take an empty batch; this outer layer passes one through.
    model: Model[List[Doc], List[Floats2d]] = Model(
        "char_cnn_embed",
        _passthrough_empty_forward,
        init=_passthrough_init,
        layers=[mixed],
        dims={"nO": width},
        refs={"embed": embed},
    )
    return model


def _passthrough_empty_forward(
    model: Model[List[Doc], List[Floats2d]], docs: List[Doc], is_train: bool
) -> Tuple[List[Floats2d], Callable]:
    if not docs:
        return [], lambda d_vectors: []
    return model.layers[0](docs, is_train)


def _passthrough_init(model: Model, X=None, Y=None) -> None:
    model.layers[0].initialize(X=X, Y=Y)


def char_cnn(
    char_width: int, filters: int, window_size: int, rows: int, max_chars: int
) -> Model[List[Doc], List[Floats2d]]:
    """Docs to one `filters`-wide vector per token: the maximum over the word's positions of
    a convolution over its hashed character embeddings."""
    conv: Model[Ragged, Floats2d] = chain(
        with_array(HashEmbed(char_width, rows, seed=21)),
        expand_window(window_size),
        with_array(Linear(filters)),
        reduce_max(),
    )
    model: Model[List[Doc], List[Floats2d]] = Model(
        "char_cnn",
        _char_cnn_forward,
        init=_char_cnn_init,
        layers=[conv],
        attrs={"max_chars": max_chars},
        dims={"nO": filters},
    )
    return model


def _char_cnn_init(
    model: Model[List[Doc], List[Floats2d]], X: Optional[List[Doc]] = None, Y=None
) -> None:
    conv = model.layers[0]
    Xr = _ragged_ids(model, X) if X is not None and sum(len(doc) for doc in X) else None
    conv.initialize(X=Xr)


def _ragged_ids(model: Model[List[Doc], List[Floats2d]], docs: List[Doc]) -> Ragged:
    ids, chars_per_token = char_ids(docs, model.attrs["max_chars"])
    return Ragged(model.ops.asarray(ids, dtype="uint64"), model.ops.asarray1i(chars_per_token))


def _char_cnn_forward(
    model: Model[List[Doc], List[Floats2d]], docs: List[Doc], is_train: bool
) -> Tuple[List[Floats2d], Callable]:
    conv = model.layers[0]
    lengths = [len(doc) for doc in docs]
    n_tokens = sum(lengths)
    if n_tokens == 0:
        nO = model.get_dim("nO")
        return [model.ops.alloc2f(n, nO) for n in lengths], lambda d_vectors: []
    Y, backprop_conv = conv(_ragged_ids(model, docs), is_train)
    ends = numpy.cumsum(lengths)[:-1].tolist()

    def backprop(d_vectors: List[Floats2d]) -> List[Doc]:
        backprop_conv(model.ops.xp.concatenate(d_vectors))
        return []

    return model.ops.xp.split(Y, ends), backprop


def char_ids(docs: List[Doc], max_chars: int) -> Tuple[numpy.ndarray, Ints1d]:
    """The character ids of every token of `docs`, flat (uint64: code points, with BEGIN and
    END around each word), and the number of ids per token. One string lookup per distinct
    word of the batch; the rest is vectorised."""
    orths = numpy.concatenate([doc.to_array(ORTH).reshape(-1) for doc in docs])
    unique, inverse = numpy.unique(orths, return_inverse=True)
    strings = docs[0].vocab.strings
    half = max_chars // 2
    word_ids = []
    for orth in unique.tolist():
        text = strings[orth]
        if len(text) > max_chars:
            text = text[:half] + text[-half:]
        word_ids.append([BEGIN, *map(ord, text), END])
    word_lengths = numpy.fromiter((len(w) for w in word_ids), dtype="int64", count=len(word_ids))
    word_starts = numpy.cumsum(word_lengths) - word_lengths
    flat_words = numpy.fromiter(
        (i for w in word_ids for i in w), dtype="uint64", count=int(word_lengths.sum())
    )
    token_lengths = word_lengths[inverse.reshape(-1)]
    token_starts = word_starts[inverse.reshape(-1)]
    out_starts = numpy.cumsum(token_lengths) - token_lengths
    index = numpy.arange(int(token_lengths.sum())) + numpy.repeat(
        token_starts - out_starts, token_lengths
    )
    return flat_words[index], token_lengths.astype("int32")
