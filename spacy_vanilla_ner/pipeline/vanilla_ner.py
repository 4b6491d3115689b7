"""The `vanilla_ner` component: per-token BILUO tagging that writes `doc.ents`."""

import hashlib
import warnings
import weakref
from itertools import islice
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import numpy
from spacy.attrs import ENT_IOB, ENT_TYPE, IS_SPACE, ORTH, SPACY
from spacy.errors import Errors
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc, Span
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Config, Model, chain
from thinc.types import Floats2d, Ints1d

from ..tagging.batching import joined, split_rows
from ..tagging.biluo import (
    O_TAG,
    Constraints,
    floored_log,
    invalid_docs,
    spans_of_docs,
    tag_id,
    tag_names,
)
from ..tagging.crf import build_crf_layer, crf_loss_and_gradient
from ..tagging.viterbi import viterbi_flat

# The default model: the recipe of configs/transformer_vner.cfg (hashed
# features under NormDropout, TransformerEncoder.v2, CRF; docs/reference.md). Every other setting
# is left to the builders' signatures, which spaCy fills in.
DEFAULT_CONFIG_STR = """
[model]
@architectures = "spacy-vanilla-ner.NERTagger.v1"

[model.tok2vec]
@architectures = "spacy.Tok2Vec.v2"

[model.tok2vec.embed]
@architectures = "spacy-vanilla-ner.NormDropout.v2"
rate = 0.1

[model.tok2vec.embed.embed]
@architectures = "spacy-vanilla-ner.MultiHashEmbed.v1"
width = 96
attrs = ["NORM", "PREFIX", "SUFFIX", "SHAPE"]
rows = [5000, 1000, 2500, 2500]
include_static_vectors = false

[model.tok2vec.encode]
@architectures = "spacy-vanilla-ner.TransformerEncoder.v2"
width = 96
depth = 2
n_heads = 4
ff_width = 384
dropout = 0.1
"""
DEFAULT_MODEL = Config().from_str(DEFAULT_CONFIG_STR)["model"]


@Language.factory(
    "vanilla_ner",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type"],
    default_config={
        "model": DEFAULT_MODEL,
        "crf": True,
        "label_smoothing": 0.0,
        "scorer": {"@scorers": "spacy.ner_scorer.v1"},
    },
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_vanilla_ner(
    nlp: Language,
    name: str,
    model: Model[List[Doc], List[Floats2d]],
    crf: bool,
    label_smoothing: float,
    scorer: Optional[Callable],
) -> "VanillaNER":
    """Create a `vanilla_ner` component: a tagger over BILUO tags whose output is
    decoded into valid, non-overlapping entities.

    model (Model[List[Doc], List[Floats2d]]): Per-token tag probabilities, e.g.
        `spacy-vanilla-ner.NERTagger.v1`; `nO` is set at initialize.
    crf (bool): Train and decode with a linear-chain CRF (learned transition
        scores) instead of constrained Viterbi over the softmax alone.
    label_smoothing (float): Label smoothing for the softmax loss (ignored with crf).
    scorer (Optional[Callable]): Scoring method; `spacy.ner_scorer.v1` by default.
    """
    return VanillaNER(
        nlp.vocab, model, name, crf=crf, label_smoothing=label_smoothing, scorer=scorer
    )


class VanillaNER(TrainablePipe):
    """Named entities from per-token BILUO tags, decoded under the BILUO rules."""

    def __init__(
        self,
        vocab: Vocab,
        model: Model,
        name: str = "vanilla_ner",
        *,
        crf: bool = True,
        label_smoothing: float = 0.0,
        scorer: Optional[Callable] = None,
    ) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"[{name}] label_smoothing must be in [0, 1), got {label_smoothing}.")
        if crf:
            wrapped = chain(model, build_crf_layer())
            for ref in model.ref_names:
                wrapped.set_ref(ref, model.get_ref(ref))
            wrapped.set_ref("crf", wrapped.layers[-1])
            model = wrapped
        if not model.has_ref("output_layer"):
            raise ValueError(
                f"[{name}] the model needs an 'output_layer' reference to its softmax, as "
                f"spacy-vanilla-ner.NERTagger.v1 and spaCy's tagger models have."
            )
        self.vocab = vocab
        self.model = model
        self.name = name
        self.cfg: Dict = {"labels": [], "crf": crf, "label_smoothing": label_smoothing}
        self.scorer = scorer
        # Docs whose highest-scoring tags per token broke the BILUO rules and
        # were repaired by the decoder (a diagnostic; not saved).
        self.n_repaired = 0

    @property
    def labels(self) -> Tuple[str, ...]:
        return tuple(self.cfg["labels"])

    @property
    def label_data(self) -> List[str]:
        return list(self.labels)

    @property
    def tag_names(self) -> List[str]:
        return tag_names(self.labels)

    @property
    def _is_initialized(self) -> bool:
        output_layer = self.model.get_ref("output_layer")
        return output_layer.has_param("W") and output_layer.get_param("W") is not None

    def add_label(self, label: str) -> int:
        """Add an entity label; a trained model keeps what it learned for the others.

        RETURNS (int): 0 if the label was already present, else 1.
        """
        if (
            not isinstance(label, str)
            or not label
            or label == "O"
            or any(c.isspace() for c in label)
        ):
            raise ValueError(
                f"[{self.name}] invalid entity label {label!r}: use a non-empty string "
                f"without whitespace, other than 'O'."
            )
        if label in self.labels:
            return 0
        self.cfg["labels"].append(label)
        self.vocab.strings.add(label)
        self._resize(len(self.tag_names))
        return 1

    def _resize(self, n_tags: int) -> None:
        # Tags of a new label are appended, so old rows keep their meaning.
        if self.model.has_ref("crf"):
            crf = self.model.get_ref("crf")
            if crf.has_param("transitions"):
                crf, old_params = self._replace_layer(crf, n_tags)
                for name in ("transitions", "start", "end"):
                    old = old_params[name]
                    new = (
                        crf.ops.alloc2f(n_tags, n_tags)
                        if name == "transitions"
                        else crf.ops.alloc1f(n_tags)
                    )
                    new[tuple(slice(0, n) for n in old.shape)] = old
                    crf.set_param(name, new)
            else:
                crf.set_dim("nO", n_tags, force=True)
        output_layer = self.model.get_ref("output_layer")
        if self._is_initialized:
            output_layer, old_params = self._replace_layer(output_layer, n_tags)
            for name in ("W", "b"):
                old = old_params[name]
                new = output_layer.ops.alloc((n_tags,) + old.shape[1:], dtype=old.dtype)
                new[: old.shape[0]] = old
                output_layer.set_param(name, new)
        elif output_layer.has_dim("nO"):
            output_layer.set_dim("nO", n_tags, force=True)
        else:
            return  # nO is set at initialize
        # Layers whose output is the tags (the chains around the softmax).
        heads = {self.model.get_ref("output_layer").id}
        if self.model.has_ref("crf"):
            heads.add(self.model.get_ref("crf").id)

        def outputs_tags(node: Model) -> bool:
            return node.id in heads or (bool(node.layers) and outputs_tags(node.layers[-1]))

        for node in self.model.walk():
            if outputs_tags(node) and node.has_dim("nO"):
                node.set_dim("nO", n_tags, force=True)

    def _replace_layer(self, old: Model, n_tags: int) -> Tuple[Model, Dict[str, Floats2d]]:
        """A fresh copy of a parameterised layer with nO = n_tags, swapped in
        for `old` everywhere. RETURNS the new layer and the old layer's parameters.

        A new layer rather than new arrays in the old one: thinc refuses to
        change a dimension of a layer that has parameters, and the optimizer
        keys its state (Adam moments, averages) by layer id, so a new id starts
        that state afresh at the new shape. thinc has no public accessor for a
        layer's forward function, hence `old._func`; thinc's own
        `resize_linear_weighted` (thinc.layers.resizable) copies a layer the
        same way. The swap itself uses the public `Model.replace_node`.
        """
        dims = {name: old.maybe_get_dim(name) for name in old.dim_names}
        dims["nO"] = n_tags
        new = Model(
            old.name,
            old._func,
            init=old.init,
            dims=dims,
            params={name: None for name in old.param_names},
            attrs=dict(old.attrs),
        )
        old_params = {name: old.get_param(name) for name in old.param_names}
        self.model.replace_node(old, new)
        return new, old_params

    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]],
        *,
        nlp: Optional[Language] = None,
        labels: Optional[Sequence[str]] = None,
    ) -> None:
        """Set the labels (given, or read from the examples' entities) and
        initialize the model.

        get_examples (Callable[[], Iterable[Example]]): Returns gold-standard examples.
        nlp (Optional[Language]): The pipeline.
        labels (Optional[Sequence[str]]): Entity labels, e.g. from `spacy init labels`.
        """
        validate_get_examples(get_examples, f"{type(self).__name__}.initialize")
        examples = list(get_examples())
        if labels is not None:
            for label in labels:
                self.add_label(label)
        else:
            found = sorted({ent.label_ for eg in examples for ent in eg.reference.ents})
            for label in found:
                self.add_label(label)
        if not self.labels:
            raise ValueError(
                f"[{self.name}] no entity labels: the training examples have no entities "
                f"and no labels were given. Pass labels (e.g. [initialize.components."
                f"{self.name}] labels = ...) or train on data with entities."
            )
        n_tags = len(self.tag_names)
        output_layer = self.model.get_ref("output_layer")
        if output_layer.has_dim("nO") and output_layer.get_dim("nO") != n_tags:
            raise ValueError(
                f"[{self.name}] the model's nO is {output_layer.get_dim('nO')}, but "
                f"{len(self.labels)} labels need {n_tags} BILUO tags. Set nO = null in the "
                f"model config so it is inferred."
            )
        output_layer.set_dim("nO", n_tags)
        if self.model.has_ref("crf"):
            self.model.get_ref("crf").set_dim("nO", n_tags, force=True)
        doc_sample = [eg.predicted for eg in islice(examples, 10)]
        if not doc_sample:
            doc_sample = [Doc(self.vocab, words=["hello", "world"])]
        self.model.initialize(X=doc_sample)

    def predict(self, docs: Iterable[Doc]) -> List[Ints1d]:
        """Best valid BILUO tag ids per token.

        RETURNS (List[Ints1d]): One array of tag ids per doc.
        """
        docs = list(docs)
        if not self._is_initialized or not self.labels:
            raise ValueError(
                f"{Errors.E109.format(name=self.name)} The component has no trained model: "
                f"train it (`spacy train`, or `nlp.initialize()` and `nlp.update()`), or load "
                f"a trained pipeline with `spacy.load()`."
            )
        if not any(len(doc) for doc in docs):
            return [numpy.zeros((len(doc),), dtype="int64") for doc in docs]
        scores = self.model.predict(docs)
        log_probs, lengths = self._log_probs(scores)
        is_space = _space_mask(docs)
        constraints = self._constraints()
        tags = viterbi_flat(joined(log_probs, lengths, is_space, constraints), constraints)
        argmax = log_probs.argmax(axis=1)
        self.n_repaired += int(invalid_docs(argmax, lengths, len(self.labels), is_space).sum())
        return split_rows(tags, lengths)

    def _log_probs(self, scores: List[Floats2d]) -> Tuple[numpy.ndarray, numpy.ndarray]:
        """The floored log of the model's probabilities for all docs as one (N, K) array
        (one copy from the device), and the tokens per doc."""
        lengths = numpy.array([len(s) for s in scores], dtype="int64")
        n_tags = len(self.tag_names)
        nonempty = [s for s in scores if len(s)]
        if not nonempty:
            return numpy.zeros((0, n_tags)), lengths
        return floored_log(self.model.ops.to_numpy(self.model.ops.flatten(nonempty))), lengths

    def _constraints(self) -> Constraints:
        n_labels = len(self.labels)
        if self.cfg["crf"]:
            crf = self.model.get_ref("crf")
            to_numpy = self.model.ops.to_numpy
            return Constraints(
                n_labels,
                to_numpy(crf.get_param("transitions")),
                to_numpy(crf.get_param("start")),
                to_numpy(crf.get_param("end")),
            )
        return Constraints(n_labels)

    def set_annotations(self, docs: Iterable[Doc], tag_ids: List[Ints1d]) -> None:
        """Write the decoded entities to `doc.ents`. Entities already on the doc
        (e.g. from an entity_ruler) are kept; predictions overlapping them are not added.
        """
        docs = list(docs)
        tag_ids = [numpy.asarray(tags, dtype="int64").reshape(-1) for tags in tag_ids]
        if len(tag_ids) != len(docs) or any(len(t) != len(d) for t, d in zip(tag_ids, docs)):
            raise ValueError(
                f"[{self.name}] set_annotations needs one tag id per token of each doc: got "
                f"{len(tag_ids)} arrays of {[len(t) for t in tag_ids][:10]} tags for {len(docs)} "
                f"docs of {[len(d) for d in docs][:10]} tokens (first 10 shown)"
            )
        if not docs:
            return
        strings = self.vocab.strings
        labels = [strings.add(label) for label in self.labels]
        lengths = numpy.array([len(doc) for doc in docs], dtype="int64")
        all_tags = numpy.concatenate(tag_ids)
        n_tags = len(self.tag_names)
        if len(all_tags) and not 0 <= all_tags.min() <= all_tags.max() < n_tags:
            raise ValueError(
                f"[{self.name}] set_annotations got tag ids outside 0..{n_tags - 1} (the "
                f"component's {n_tags} BILUO tags): from {all_tags.min()} to {all_tags.max()}"
            )
        spans = spans_of_docs(all_tags, lengths, len(self.labels))
        for doc, doc_spans in zip(docs, spans):
            preset = list(doc.ents)
            if preset:
                taken = numpy.zeros((len(doc),), dtype=bool)
                for ent in preset:
                    taken[ent.start : ent.end] = True
                doc_spans = [span for span in doc_spans if not taken[span[0] : span[1]].any()]
            predicted = [Span(doc, start, end, label=labels[i]) for start, end, i in doc_spans]
            doc.set_ents(preset + predicted, default="outside")

    def get_loss(
        self, examples: Iterable[Example], scores: List[Floats2d]
    ) -> Tuple[float, List[Floats2d]]:
        """Cross-entropy (or CRF negative log-likelihood) of the gold BILUO tags.
        Tokens with no gold tag (missing or misaligned annotation, unknown
        labels) do not contribute.

        RETURNS (Tuple[float, List[Floats2d]]): The loss and the gradient of the scores.
        """
        examples = list(examples)
        validate_examples(examples, f"{type(self).__name__}.get_loss")
        golds = self._gold_tags(examples)
        if self.cfg["crf"]:
            loss, d_scores = self._crf_loss(scores, golds, examples)
        else:
            loss, d_scores = self._softmax_loss(scores, golds)
        if not numpy.isfinite(loss):
            raise ValueError(
                f"[{self.name}] the loss is {loss}: training diverged. Lower the learning "
                f"rate, add warmup or gradient clipping, or for mixed precision enable the "
                f"grad scaler (grad_scaler_config)."
            )
        return loss, [self.model.ops.asarray2f(d) for d in d_scores]

    def _gold_tags(self, examples: Sequence[Example]) -> List[numpy.ndarray]:
        """Gold tag ids of each example's predicted tokens, -1 where unknown. Where both docs
        have the same tokens (the usual case in training), read from the references' arrays,
        for the whole batch at once; else through spaCy's alignment
        (`Example.get_aligned_ner`). Both give the same tags (tests/pipeline/test_gold_tags.py)."""
        golds: List[numpy.ndarray] = [numpy.zeros((0,), dtype="int64")] * len(examples)
        same = []
        for i, eg in enumerate(examples):
            if eg.reference.has_annotation("ENT_IOB") and _same_tokens(eg.predicted, eg.reference):
                same.append(i)
            else:
                golds[i] = self._cached_aligned_gold_tags(eg)
        if same:
            unknown: Set[int] = set()
            tags = _biluo_ids([examples[i].reference for i in same], self._label_ids(), unknown)
            for i, doc_tags in zip(same, tags):
                golds[i] = doc_tags
            if unknown:  # the label strings are in the references' vocab
                strings = examples[same[0]].reference.vocab.strings
                self._warn_unknown_labels(strings[h] if h in strings else str(h) for h in unknown)
        return golds

    def _cached_aligned_gold_tags(self, eg: Example) -> numpy.ndarray:
        """`_aligned_gold_tags`, remembered across updates: spaCy's alignment costs about 10×
        the key, and `Language.update` copies the examples, so the key is their content (the
        predicted tokens, the reference's tokens and entities) and the component's labels.
        At most GOLD_CACHE_SIZE examples are kept; the arrays are read-only."""
        labels, cache = _GOLD_CACHES.get(self, (None, {}))
        if labels != self.labels or len(cache) >= GOLD_CACHE_SIZE:
            labels, cache = self.labels, {}
            _GOLD_CACHES[self] = (labels, cache)
        key = _alignment_key(eg)
        gold = cache.get(key)
        if gold is None:
            gold = self._aligned_gold_tags(eg)
            gold.setflags(write=False)
            cache[key] = gold
        return gold

    def _aligned_gold_tags(self, eg: Example) -> numpy.ndarray:
        gold = numpy.full((len(eg.predicted),), -1, dtype="int64")
        aligned = eg.get_aligned_ner()
        if aligned is None:
            return gold
        label_index = {label: i for i, label in enumerate(self.labels)}
        unknown = set()
        for i, tag in enumerate(aligned):
            if tag == "O":
                gold[i] = 0
            elif tag and len(tag) > 2 and tag[1] == "-":
                if tag[2:] in label_index:
                    gold[i] = tag_id(tag[0], label_index[tag[2:]])
                else:
                    unknown.add(tag[2:])
            # None (misaligned), "-" / "" (missing) and unknown labels stay -1.
        self._warn_unknown_labels(unknown)
        return gold

    def _warn_unknown_labels(self, unknown: Iterable[str]) -> None:
        """Warn that gold entities of these labels are treated as missing annotation."""
        for label in sorted(unknown):
            # Once per label (Python shows a repeated warning once).
            warnings.warn(
                f"[{self.name}] the training data has entities labelled {label!r}, which is "
                f"not among the component's labels {list(self.labels)}: they are treated as "
                "missing annotation. The labels are read at initialization (with [training] "
                "max_epochs = -1, from the first 100 examples only); list them all in "
                f"[initialize.components.{self.name}] labels, e.g. with `spacy init labels`.",
                stacklevel=3,
            )

    def _label_ids(self) -> Dict[int, int]:
        """Label index by the label's string hash (ENT_TYPE)."""
        strings = self.vocab.strings
        return {strings[label]: i for i, label in enumerate(self.labels)}

    def _softmax_loss(self, scores: List[Floats2d], golds: List[numpy.ndarray]):
        smoothing = self.cfg["label_smoothing"]
        loss = 0.0
        d_scores = []
        for probs, gold in zip(scores, golds):
            probs = self.model.ops.to_numpy(probs)
            n_tags = probs.shape[1] if probs.ndim == 2 else len(self.tag_names)
            known = gold >= 0
            target = numpy.zeros((len(gold), n_tags), dtype="float32")
            target[known, gold[known]] = 1.0
            if smoothing:
                target[known] = target[known] * (1 - smoothing) + smoothing / n_tags
            d = numpy.where(known[:, None], probs - target, 0.0).astype("float32")
            loss += float(-(target[known] * floored_log(probs[known])).sum())
            d_scores.append(d)
        return loss, d_scores

    def _crf_loss(
        self, scores: List[Floats2d], golds: List[numpy.ndarray], examples: List[Example]
    ):
        constraints = self._constraints()
        n_tags = constraints.n_tags
        d_scores = [numpy.zeros((0, n_tags), dtype="float32") for _ in golds]
        nonempty = [i for i, gold in enumerate(golds) if len(gold)]
        if not nonempty:
            return 0.0, d_scores
        log_probs, lengths = self._log_probs([scores[i] for i in nonempty])
        result = crf_loss_and_gradient(
            split_rows(log_probs, lengths),
            [golds[i] for i in nonempty],
            constraints,
            split_rows(_space_mask([examples[i].predicted for i in nonempty]), lengths),
        )
        for i, d_em in zip(nonempty, result.d_emissions):
            # The emissions are log-softmax outputs and each row of d_em sums
            # to zero, so d_em is also the gradient of the softmax's logits,
            # which is what Softmax_v2's backward pass expects.
            d_scores[i] = d_em.astype("float32")
        crf = self.model.get_ref("crf")
        crf.inc_grad("transitions", crf.ops.asarray2f(result.d_transitions))
        crf.inc_grad("start", crf.ops.asarray1f(result.d_start))
        crf.inc_grad("end", crf.ops.asarray1f(result.d_end))
        loss = result.loss
        return loss, d_scores


# Aligned gold tags per component, kept outside it so that pickles and copies of a pipeline
# do not carry them: {component: (its labels, {alignment key: gold tag ids})}.
_GOLD_CACHES: "weakref.WeakKeyDictionary[VanillaNER, Tuple[Tuple[str, ...], Dict]]" = (
    weakref.WeakKeyDictionary()
)
GOLD_CACHE_SIZE = 200_000


def _alignment_key(eg: Example) -> bytes:
    """What spaCy's `get_aligned_ner` reads: the predicted tokens, and the reference's tokens
    and entities (as hashes), digested."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(eg.predicted.to_array([ORTH, SPACY]).tobytes())
    digest.update(b"|")
    digest.update(eg.reference.to_array([ORTH, SPACY, ENT_IOB, ENT_TYPE]).tobytes())
    return digest.digest()


def _same_tokens(predicted: Doc, reference: Doc) -> bool:
    """Whether the two docs have the same tokens (texts and trailing spaces), so that the
    alignment between them is the identity."""
    if len(predicted) != len(reference):
        return False
    attrs = [ORTH, SPACY]
    return bool(numpy.array_equal(predicted.to_array(attrs), reference.to_array(attrs)))


def _biluo_ids(
    docs: Sequence[Doc], label_ids: Dict[int, int], unknown: Optional[Set[int]] = None
) -> List[numpy.ndarray]:
    """The BILUO tag id of each token of each doc from its entity annotation, as spaCy's
    `Example.get_aligned_ner` gives it for identical tokens: missing annotation is -1, except
    on whitespace (O); an entity whose label the component does not know is -1. One pass over
    the concatenated tokens of all docs. `unknown` (a set), if given, gets the hashes of the
    entity labels not in `label_ids`."""
    lengths = [len(doc) for doc in docs]
    if not sum(lengths):
        return [numpy.zeros((0,), dtype="int64") for _ in docs]
    arrays = [doc.to_array([ENT_IOB, IS_SPACE, ENT_TYPE]) for doc in docs if len(doc)]
    iob, is_space, ent_type = numpy.concatenate(arrays).T
    inside = iob == 1
    # The next token continues the same entity (never across the end of a doc).
    ends = numpy.cumsum(lengths) - 1
    continues = numpy.append(inside[1:], False)
    continues[ends[numpy.array(lengths) > 0]] = False
    # MOVES is "BILU": B 0, I 1, L 2, U 3; -1 outside entities.
    move = numpy.where(iob == 3, numpy.where(continues, 0, 3), -1)
    move = numpy.where(inside, numpy.where(continues, 1, 2), move)
    hashes, where = numpy.unique(ent_type, return_inverse=True)
    label_of_hash = numpy.array([label_ids.get(int(h), -1) for h in hashes], dtype="int64")
    if unknown is not None:
        unknown.update(int(h) for h, i in zip(hashes, label_of_hash) if h != 0 and i < 0)
    label = label_of_hash[where]
    gold = numpy.where((move >= 0) & (label >= 0), 1 + 4 * label + move, -1)
    gold[(iob == 2) | ((iob == 0) & (is_space != 0))] = O_TAG
    return split_rows(gold, lengths)


def _space_mask(docs: Sequence[Doc]) -> numpy.ndarray:
    """(N,) bool: which tokens of the docs, doc after doc, are whitespace."""
    masks = [doc.to_array(IS_SPACE) for doc in docs if len(doc)]
    return numpy.concatenate(masks).astype(bool) if masks else numpy.zeros((0,), dtype=bool)
