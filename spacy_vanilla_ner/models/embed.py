"""`spacy-vanilla-ner.NormDropout.v1` and `.v2`: wrappers for the `embed` slot of
`spacy.Tok2Vec.v2` that, in training only, make a share of the words look unseen.

With probability `rate` per token and per update, the token's NORM is replaced by a random
64-bit id before the wrapped embedding layer reads its features, so every hashed table keyed on
NORM (`MultiHashEmbed`'s first feature, `CharacterEmbed`'s word part) returns rows unrelated to
the word, as for a word that never occurred in training; the token's text, and with it its
PREFIX, SUFFIX and SHAPE features, stay as they are. Most errors of a trained NER model are on
names it never saw in training; this trains the model to tag such words from their spelling and
context, as Lample et al. (2016, https://arxiv.org/abs/1603.01360) did by replacing singletons
with an unknown-word embedding. Unlike token dropout in the encoder (`token_dropout`), which
zeroes a token's whole vector, only the word identity goes. Inference is unchanged (the docs
pass through).

v1 sets the ids on copies of the docs (`Doc.from_array`), so the docs the pipeline processes
are not changed and no string is added to the vocab. v2 (`spacy-vanilla-ner.NormDropout.v2`)
does the same on the feature ids the wrapped layer extracts: it puts itself behind spaCy's
`FeatureExtractor` inside the embedding layer, draws once per batch and copies no doc, and it
can also make other hashed features (PREFIX, SUFFIX, SHAPE) unseen.
"""

from typing import Callable, List, Sequence, Tuple, Union

import numpy
from spacy.attrs import NORM, intify_attr
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model, chain
from thinc.types import Floats2d, Ints2d

EXTRACTOR = "extract_features"  # the name of spaCy's FeatureExtractor layers


@registry.architectures("spacy-vanilla-ner.NormDropout.v1")
def build_norm_dropout_v1(
    embed: Model[List[Doc], List[Floats2d]], rate: float
) -> Model[List[Doc], List[Floats2d]]:
    """The `embed` model, with the NORM of each token replaced by a random id with
    probability `rate` during training (see the module docstring).

    embed (Model[List[Doc], List[Floats2d]]): The embedding layer, e.g. spacy.MultiHashEmbed.v2.
    rate (float): Share of tokens whose NORM is randomised in each update, in [0, 1).
    """
    _check_rate("v1", rate)
    model = chain(norm_dropout(rate), embed)
    model.set_ref("embed", embed)
    return model


def norm_dropout(rate: float) -> Model[List[Doc], List[Doc]]:
    # Not "dropout_rate": spaCy's set_dropout_rate would overwrite it with [training] dropout.
    return Model("norm_dropout", _forward, attrs={"norm_dropout_rate": rate})


def _forward(
    model: Model[List[Doc], List[Doc]], docs: List[Doc], is_train: bool
) -> Tuple[List[Doc], Callable]:
    rate = model.attrs["norm_dropout_rate"]
    if is_train and rate > 0.0:
        docs = [_randomise_norms(doc, rate) for doc in docs]
    return docs, lambda d_docs: []


def _randomise_norms(doc: Doc, rate: float) -> Doc:
    # numpy's global generator: spaCy's fix_random_seed seeds it.
    drop = numpy.random.random(len(doc)) < rate
    if not drop.any():
        return doc
    norms = doc.to_array([NORM])
    norms[drop] = numpy.random.randint(1, 2**63, size=int(drop.sum()), dtype=numpy.uint64)
    copy = doc.copy()
    copy.from_array([NORM], norms)
    return copy


@registry.architectures("spacy-vanilla-ner.NormDropout.v2")
def build_norm_dropout_v2(
    embed: Model[List[Doc], List[Floats2d]],
    rate: float,
    attrs: Sequence[Union[str, int]] = ("NORM",),
) -> Model[List[Doc], List[Floats2d]]:
    """The `embed` model, with the feature ids of `attrs` replaced by random ids with
    probability `rate` per token, feature and update, during training.

    Unlike v1 it copies no doc: it follows every spaCy `FeatureExtractor` inside `embed` that
    reads one of `attrs` (spacy.MultiHashEmbed.v2 has one; spacy.CharacterEmbed.v2 one for its
    word feature) and changes the extracted ids, one batch at a time. With attrs = ["NORM"] it
    trains the model v1 trains, from other random draws.

    embed (Model[List[Doc], List[Floats2d]]): The embedding layer, e.g. spacy.MultiHashEmbed.v2.
    rate (float): Share of tokens whose ids are randomised in each update, per feature, in [0, 1).
    attrs (Sequence[str]): The features made unseen, e.g. ["NORM"] or ["NORM", "PREFIX",
        "SUFFIX", "SHAPE"]; each is drawn independently.
    """
    _check_rate("v2", rate)
    wanted = [intify_attr(a) for a in attrs]
    if not wanted or None in wanted:
        raise ValueError(
            f"spacy-vanilla-ner.NormDropout.v2: attrs must name token attributes, such as "
            f'["NORM"] or ["NORM", "PREFIX", "SUFFIX", "SHAPE"]; got {list(attrs)!r}'
        )
    found = 0
    for node in list(embed.walk()):
        if node.name != EXTRACTOR:
            continue
        read = [intify_attr(c) for c in node.attrs["columns"]]
        columns = [i for i, attr in enumerate(read) if attr in wanted]
        if not columns:
            continue
        found += 1
        wrapped = chain(node, feature_dropout(rate, columns))
        if node is embed:
            embed = wrapped
        else:
            embed.replace_node(node, wrapped)
    if not found:
        raise ValueError(
            "spacy-vanilla-ner.NormDropout.v2: the embed layer has no spaCy FeatureExtractor "
            f"that reads {list(attrs)}; wrap spacy.MultiHashEmbed.v2 or "
            "spacy.CharacterEmbed.v2 with these attributes, or use NormDropout.v1, which works "
            "on the docs and so with any embed layer (for NORM only)"
        )
    return embed


def feature_dropout(rate: float, columns: List[int]) -> Model[List[Ints2d], List[Ints2d]]:
    """Replaces, in training, the ids in `columns` of each token's feature row by random ids
    with probability `rate`, each column drawn independently."""
    # Not "dropout_rate": spaCy's set_dropout_rate would overwrite it with [training] dropout.
    return Model(
        "norm_dropout",
        _forward_features,
        attrs={"norm_dropout_rate": rate, "norm_dropout_columns": list(columns)},
    )


def _forward_features(
    model: Model[List[Ints2d], List[Ints2d]], features: List[Ints2d], is_train: bool
) -> Tuple[List[Ints2d], Callable]:
    rate = model.attrs["norm_dropout_rate"]
    lengths = [len(f) for f in features]
    n = sum(lengths)
    if not is_train or rate <= 0.0 or n == 0:
        return features, lambda d_features: []
    xp = model.ops.xp
    columns = model.attrs["norm_dropout_columns"]
    # One draw for the batch, on the host (numpy's global generator, seeded by spaCy's
    # fix_random_seed), and one transfer of the result: nothing per doc.
    drop = numpy.random.random((n, len(columns))) < rate
    rows, cols = numpy.nonzero(drop)
    if not len(rows):
        return features, lambda d_features: []
    ids = numpy.random.randint(1, 2**63, size=len(rows), dtype=numpy.uint64)
    flat = xp.concatenate(features) if len(features) > 1 else features[0].copy()
    flat[xp.asarray(rows), xp.asarray(numpy.asarray(columns)[cols])] = xp.asarray(ids)
    ends = numpy.cumsum(lengths)[:-1].tolist()
    return xp.split(flat, ends), lambda d_features: []


def _check_rate(version: str, rate: float) -> None:
    if not 0.0 <= rate < 1.0:
        raise ValueError(
            f"spacy-vanilla-ner.NormDropout.{version}: rate must be in [0, 1), got {rate!r}; it "
            "is the share of tokens whose feature ids are replaced by random ids in each update"
        )
