"""`spacy-vanilla-ner.NormDropout.v1`, `.v2` and `.v3`: wrappers for the `embed` slot of
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
can also make other hashed features (PREFIX, SUFFIX, SHAPE) unseen. v3 adds a rate of its own
for singletons, the feature values that occur once in the training corpus, counted before
training by the `spacy-vanilla-ner.CountSingletons.v1` callback.
"""

import warnings
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy
from spacy.attrs import IDS, NORM, intify_attr
from spacy.language import Language
from spacy.tokens import Doc
from spacy.util import logger, registry, resolve_dot_names
from thinc.api import Model, chain
from thinc.types import Floats2d, Ints2d

EXTRACTOR = "extract_features"  # the name of spaCy's FeatureExtractor layers
IDS_TO_NAMES = {v: k for k, v in IDS.items()}


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
    return _wrap_extractors("v2", embed, rate, attrs, None)


@registry.architectures("spacy-vanilla-ner.NormDropout.v3")
def build_norm_dropout_v3(
    embed: Model[List[Doc], List[Floats2d]],
    rate: float,
    attrs: Sequence[Union[str, int]] = ("NORM",),
    singleton_rate: Optional[float] = None,
) -> Model[List[Doc], List[Floats2d]]:
    """v2, with a rate of its own for singletons: feature values that occur once in the
    training corpus, the words most like those never seen (Lample et al. 2016 replaced
    singletons by the unknown word with probability 0.5, and nothing else).

    The counts come from the training corpus before the pipeline is initialized: add
    `[initialize.before_init] @callbacks = "spacy-vanilla-ner.CountSingletons.v1"` to the
    config (or call `count_singletons(nlp, docs)`). They are saved with the model, so training
    a loaded pipeline further keeps them. Without counts, training warns and uses `rate` for
    every token. With singleton_rate = null it is v2.

    embed (Model[List[Doc], List[Floats2d]]): The embedding layer, e.g. spacy.MultiHashEmbed.v2.
    rate (float): Share of tokens, other than singletons, whose ids are randomised in each
        update, per feature, in [0, 1); 0 randomises singletons only.
    attrs (Sequence[str]): The features made unseen, each drawn independently, and each with
        its own singletons (a PREFIX occurring once, for PREFIX).
    singleton_rate (Optional[float]): The rate for singletons, in [0, 1), e.g. 0.5; null: `rate`.
    """
    if singleton_rate is not None:
        _check_rate("v3", singleton_rate, "singleton_rate")
    return _wrap_extractors("v3", embed, rate, attrs, singleton_rate)


def _wrap_extractors(
    version: str,
    embed: Model[List[Doc], List[Floats2d]],
    rate: float,
    attrs: Sequence[Union[str, int]],
    singleton_rate: Optional[float],
) -> Model[List[Doc], List[Floats2d]]:
    """`embed` with a `feature_dropout` layer behind each FeatureExtractor that reads `attrs`."""
    _check_rate(version, rate)
    wanted = [intify_attr(a) for a in attrs]
    if not wanted or None in wanted:
        raise ValueError(
            f"spacy-vanilla-ner.NormDropout.{version}: attrs must name token attributes, such as "
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
        if singleton_rate is None:
            layer = feature_dropout(rate, columns)
        else:
            layer = feature_dropout(rate, columns, [read[i] for i in columns], singleton_rate)
        wrapped = chain(node, layer)
        if node is embed:
            embed = wrapped
        else:
            embed.replace_node(node, wrapped)
    if not found:
        raise ValueError(
            f"spacy-vanilla-ner.NormDropout.{version}: the embed layer has no spaCy "
            f"FeatureExtractor that reads {list(attrs)}; wrap spacy.MultiHashEmbed.v2 or "
            "spacy.CharacterEmbed.v2 with these attributes, or use NormDropout.v1, which works "
            "on the docs and so with any embed layer (for NORM only)"
        )
    return embed


def feature_dropout(
    rate: float,
    columns: List[int],
    column_attrs: Optional[List[int]] = None,
    singleton_rate: Optional[float] = None,
) -> Model[List[Ints2d], List[Ints2d]]:
    """Replaces, in training, the ids in `columns` of each token's feature row by random ids
    with probability `rate`, each column drawn independently; with `singleton_rate`, ids that
    are singletons of their column's attribute (`column_attrs`, counted by
    `count_singletons`) with that probability instead."""
    # Not "dropout_rate": spaCy's set_dropout_rate would overwrite it with [training] dropout.
    attrs = {"norm_dropout_rate": rate, "norm_dropout_columns": list(columns)}
    if singleton_rate is not None:
        if column_attrs is None or len(column_attrs) != len(columns):
            raise ValueError("feature_dropout: singleton_rate needs the attribute of each column")
        # "norm_dropout_singletons", the singletons of each column as sorted uint64 arrays, is
        # set by count_singletons. Absent until then, not None: loading weights saved before
        # the counts (e.g. `spacy pretrain`'s, through init_tok2vec) then leaves them alone.
        attrs.update(
            norm_dropout_singleton_rate=singleton_rate,
            norm_dropout_attrs=[int(a) for a in column_attrs],
        )
    return Model("norm_dropout", _forward_features, attrs=attrs)


def _forward_features(
    model: Model[List[Ints2d], List[Ints2d]], features: List[Ints2d], is_train: bool
) -> Tuple[List[Ints2d], Callable]:
    rate = model.attrs["norm_dropout_rate"]
    singleton_rate = model.attrs.get("norm_dropout_singleton_rate")
    lengths = [len(f) for f in features]
    n = sum(lengths)
    if not is_train or n == 0 or (rate <= 0.0 and not singleton_rate):
        return features, lambda d_features: []
    xp = model.ops.xp
    columns = model.attrs["norm_dropout_columns"]
    flat = xp.concatenate(features) if len(features) > 1 else features[0].copy()
    threshold: Union[float, numpy.ndarray] = rate
    if singleton_rate is not None:
        threshold = _singleton_rates(model, flat, rate, singleton_rate)
    # One draw for the batch, on the host (numpy's global generator, seeded by spaCy's
    # fix_random_seed), and one transfer of the result: nothing per doc.
    drop = numpy.random.random((n, len(columns))) < threshold
    rows, cols = numpy.nonzero(drop)
    if not len(rows):
        return features, lambda d_features: []
    ids = numpy.random.randint(1, 2**63, size=len(rows), dtype=numpy.uint64)
    flat[xp.asarray(rows), xp.asarray(numpy.asarray(columns)[cols])] = xp.asarray(ids)
    ends = numpy.cumsum(lengths)[:-1].tolist()
    return xp.split(flat, ends), lambda d_features: []


def _singleton_rates(
    model: Model, flat: Ints2d, rate: float, singleton_rate: float
) -> Union[float, numpy.ndarray]:
    """(n, columns) rates: `singleton_rate` where the id is a singleton of its column."""
    singletons = model.attrs.get("norm_dropout_singletons")
    if singletons is None:
        warnings.warn(
            "spacy-vanilla-ner.NormDropout.v3: singleton_rate is set but the layer has no "
            "singleton counts, so every token gets `rate`. Count them before training: add "
            '[initialize.before_init] @callbacks = "spacy-vanilla-ner.CountSingletons.v1" to '
            "the config, or call spacy_vanilla_ner.models.embed.count_singletons(nlp, docs)",
            stacklevel=2,
        )
        return rate
    values = model.ops.to_numpy(flat[:, model.attrs["norm_dropout_columns"]])  # one transfer
    rates = numpy.full(values.shape, rate)
    for j, column_singletons in enumerate(singletons):
        rates[numpy.isin(values[:, j], column_singletons), j] = singleton_rate
    return rates


def singleton_layers(nlp: Language) -> List[Model]:
    """The NormDropout.v3 layers with a singleton_rate in the pipeline's components."""
    found: List[Model] = []
    for _, component in nlp.components:
        model = getattr(component, "model", None)
        if not isinstance(model, Model):
            continue
        for node in model.walk():
            if node.name == "norm_dropout" and "norm_dropout_singleton_rate" in node.attrs:
                if all(node is not seen for seen in found):
                    found.append(node)
    return found


def count_singletons(nlp: Language, docs: Iterable[Doc]) -> Dict[str, int]:
    """Count the feature values of `docs` (the training corpus, as the model sees it) and give
    every NormDropout.v3 layer with a singleton_rate the values that occur exactly once.

    RETURNS (Dict[str, int]): The number of singletons per attribute name.
    """
    layers = singleton_layers(nlp)
    if not layers:
        raise ValueError(
            "count_singletons: the pipeline has no spacy-vanilla-ner.NormDropout.v3 layer with "
            "a singleton_rate; set singleton_rate in its embed block, or remove the "
            "spacy-vanilla-ner.CountSingletons.v1 callback"
        )
    attrs = sorted({a for layer in layers for a in layer.attrs["norm_dropout_attrs"]})
    arrays = [doc.to_array(attrs).reshape(len(doc), len(attrs)) for doc in docs if len(doc)]
    if not arrays:
        raise ValueError(
            "count_singletons: the training corpus has no tokens; check [paths] train and "
            "[corpora] train"
        )
    values = numpy.concatenate(arrays).astype(numpy.uint64)
    singletons = {}
    for j, attr in enumerate(attrs):
        unique, counts = numpy.unique(values[:, j], return_counts=True)
        singletons[attr] = unique[counts == 1]
    for layer in layers:
        layer.attrs["norm_dropout_singletons"] = [
            singletons[a] for a in layer.attrs["norm_dropout_attrs"]
        ]
    return {IDS_TO_NAMES[a]: len(singletons[a]) for a in attrs}


@registry.callbacks("spacy-vanilla-ner.CountSingletons.v1")
def make_count_singletons() -> Callable[[Language], Language]:
    """For `[initialize.before_init]`: counts the feature values of the training corpus (the
    config's `[training] train_corpus`, read as `spacy train` reads it) for the pipeline's
    NormDropout.v3 layers with a singleton_rate."""
    return _count_training_singletons


def _count_training_singletons(nlp: Language) -> Language:
    config = nlp.config.interpolate()
    dot_name = config["training"]["train_corpus"]
    (corpus,) = resolve_dot_names(config, [dot_name])
    counts = count_singletons(nlp, (eg.predicted for eg in corpus(nlp)))
    # spaCy's logger: `spacy train --verbose` shows it among its initialization messages.
    logger.info(
        "NormDropout.v3 singletons in %s: %s",
        dot_name,
        ", ".join(f"{name} {n:,}" for name, n in counts.items()),
    )
    return nlp


def _check_rate(version: str, rate: float, name: str = "rate") -> None:
    if not 0.0 <= rate < 1.0:
        raise ValueError(
            f"spacy-vanilla-ner.NormDropout.{version}: {name} must be in [0, 1), got {rate!r}; it "
            "is the share of tokens whose feature ids are replaced by random ids in each update"
        )
