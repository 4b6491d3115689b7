"""`spacy-vanilla-ner.NormDropout.v1`: a wrapper for the `embed` slot of `spacy.Tok2Vec.v2`
that, in training only, makes a share of the words look unseen.

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

The ids are set on copies of the docs with `Doc.from_array`, so the docs the pipeline
processes are not changed and no string is added to the vocab.
"""

from typing import Callable, List, Tuple

import numpy
from spacy.attrs import NORM
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model, chain
from thinc.types import Floats2d


@registry.architectures("spacy-vanilla-ner.NormDropout.v1")
def build_norm_dropout_v1(
    embed: Model[List[Doc], List[Floats2d]], rate: float
) -> Model[List[Doc], List[Floats2d]]:
    """The `embed` model, with the NORM of each token replaced by a random id with
    probability `rate` during training (see the module docstring).

    embed (Model[List[Doc], List[Floats2d]]): The embedding layer, e.g. spacy.MultiHashEmbed.v2.
    rate (float): Share of tokens whose NORM is randomised in each update, in [0, 1).
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(
            f"spacy-vanilla-ner.NormDropout.v1: rate must be in [0, 1), got {rate!r}; it is "
            "the share of tokens whose NORM is replaced by a random id in each update"
        )
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
