"""Why a vanilla Transformer NER model will not overfit: the harness of `scripts/diagnose.py`.

Every variant is trained on the same docs, in the same shuffled batches, for
the same number of steps, with the same optimizer (Adam, lr 1e-3, betas
(0.9, 0.999), eps 1e-8, no weight decay, no gradient clipping, no warmup) and
the same loss (cross entropy summed over the batch's real tokens, as the
`vanilla_ner` component computes it). Train entity F1 is measured every
`eval_every` steps on the whole training subset, with the package's
constrained BILUO decoder and exact span matching (as `spacy.scorer.get_ner_prf`).

Variants (names are fixed; `scripts/diagnose.py` runs them):

- `recipe`: the real package: `vanilla_ner` with `TransformerTok2Vec.v1`
  (pre-LN, rotary positions, key-padding mask, per-layer init), trained with
  `nlp.update`.
- `recipe_harness`: the same recipe rebuilt in plain PyTorch from
  `spacy_vanilla_ner.models.torch_encoder.TransformerEncoderModule`, with switches for the
  ablations (`diagnose_models`).
- `recipe_without_<fix>`: `recipe_harness` with one fix undone (see `FIXES`).
- `forum_setup`: the model of the forum question, in plain PyTorch.
- `spacy_bilstm`, `spacy_cnn`: spaCy's `TorchBiLSTMEncoder.v1` and
  `MaxoutWindowEncoder.v2` in place of the Transformer, under `vanilla_ner`.
"""

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy
import torch
import torch.nn.functional as F
from torch import nn

from spacy_vanilla_ner.tagging.biluo import (
    Constraints,
    floored_log,
    tag_id,
    tag_names,
    tags_to_spans,
)
from spacy_vanilla_ner.tagging.viterbi import viterbi_batch

from .diagnose_models import (
    FIXES,
    SPACY_MODEL_CONFIGS,
    ForumModel,
    RecipeHarness,
    TutorialPositionalEncoding,
    build_spacy_pipeline,
)
from .params import count_params

__all__ = [
    "FIXES",
    "SPACY_VARIANTS",
    "HARNESS_VARIANTS",
    "ALL_VARIANTS",
    "RunSettings",
    "RunResult",
    "Encoded",
    "encode_docs",
    "shuffled_batches",
    "span_prf",
    "decode_spans",
    "word_only_ents_f",
    "ForumModel",
    "RecipeHarness",
    "TutorialPositionalEncoding",
    "build_harness_model",
    "pad_batch",
    "train_harness",
    "train_spacy",
    "run_variant",
]

SPACY_VARIANTS = tuple(SPACY_MODEL_CONFIGS)
HARNESS_VARIANTS = (
    ("recipe_harness",) + tuple(f"recipe_without_{fix}" for fix in FIXES) + ("forum_setup",)
)
ALL_VARIANTS = ("recipe",) + HARNESS_VARIANTS + ("spacy_bilstm", "spacy_cnn")
# Token attributes of the recipe's MultiHashEmbed, in the same order.
EMBED_ATTRS = ("norm_", "prefix_", "suffix_", "shape_")


@dataclass
class RunSettings:
    """Settings shared by every variant of one comparison."""

    steps: int = 300
    batch_size: int = 16
    eval_every: int = 25
    learn_rate: float = 1e-3
    width: int = 128
    depth: int = 2
    n_heads: int = 4
    dropout: float = 0.1
    seed: int = 0
    device: str = "cpu"  # "cpu" or "cuda:N"


@dataclass
class RunResult:
    name: str
    n_sentences: int
    final_train_loss: float  # mean batch loss (summed over tokens) over the last eval interval
    final_train_loss_per_token: float
    train_ents_f: float  # at the last step
    best_train_ents_f: float
    steps_to_99: Optional[int]  # first evaluated step with train ents_f >= 0.99
    seconds: float
    steps: int
    n_params: int
    curve: Dict[str, List[float]] = field(default_factory=dict)

    def row(self) -> dict:
        row = asdict(self)
        row.pop("curve")
        return row


# ---------------------------------------------------------------------------
# Data


@dataclass
class Encoded:
    """Docs as integer arrays for the plain-PyTorch models (0 = padding)."""

    labels: List[str]
    words: List[numpy.ndarray]  # (T,) word ids, for the forum model's nn.Embedding
    feats: List[numpy.ndarray]  # (T, 4) NORM/PREFIX/SUFFIX/SHAPE ids, for the recipe's embedding
    tags: List[numpy.ndarray]  # (T,) gold BILUO tag ids
    is_space: List[numpy.ndarray]
    gold_spans: List[set]  # {(start, end, label)} per doc
    n_words: int
    n_feats: List[int]


def entity_labels(docs) -> List[str]:
    # Sorted, as `vanilla_ner` adds the labels it finds at initialize.
    return sorted({ent.label_ for doc in docs for ent in doc.ents})


def encode_docs(docs, labels: Optional[Sequence[str]] = None) -> Encoded:
    labels = list(labels) if labels is not None else entity_labels(docs)
    label_index = {label: i for i, label in enumerate(labels)}
    word_ids: Dict[str, int] = {}
    feat_ids: List[Dict[str, int]] = [{} for _ in EMBED_ATTRS]
    words, feats, tags, is_space, gold = [], [], [], [], []
    for doc in docs:
        words.append(
            numpy.array(
                [word_ids.setdefault(t.text, len(word_ids) + 1) for t in doc], dtype="int64"
            )
        )
        feats.append(
            numpy.array(
                [
                    [
                        ids.setdefault(getattr(t, attr), len(ids) + 1)
                        for attr, ids in zip(EMBED_ATTRS, feat_ids)
                    ]
                    for t in doc
                ],
                dtype="int64",
            ).reshape(len(doc), len(EMBED_ATTRS))
        )
        doc_tags = numpy.zeros((len(doc),), dtype="int64")
        for ent in doc.ents:
            i = label_index[ent.label_]
            if len(ent) == 1:
                doc_tags[ent.start] = tag_id("U", i)
            else:
                doc_tags[ent.start] = tag_id("B", i)
                doc_tags[ent.start + 1 : ent.end - 1] = tag_id("I", i)
                doc_tags[ent.end - 1] = tag_id("L", i)
        tags.append(doc_tags)
        is_space.append(numpy.array([t.is_space for t in doc], dtype=bool))
        gold.append({(e.start, e.end, e.label_) for e in doc.ents})
    return Encoded(
        labels=labels,
        words=words,
        feats=feats,
        tags=tags,
        is_space=is_space,
        gold_spans=gold,
        n_words=len(word_ids) + 1,
        n_feats=[len(ids) + 1 for ids in feat_ids],
    )


def shuffled_batches(n_docs: int, batch_size: int, seed: int) -> Iterator[List[int]]:
    """Endless batches of doc indices, reshuffled every epoch, like a
    `DataLoader(shuffle=True)`; the last batch of an epoch may be short."""
    rng = numpy.random.RandomState(seed)
    while True:
        order = rng.permutation(n_docs)
        for i in range(0, n_docs, batch_size):
            yield [int(j) for j in order[i : i + batch_size]]


def span_prf(gold: Sequence[set], predicted: Sequence[set]) -> Dict[str, float]:
    """Micro exact-span P/R/F over docs, as `spacy.scorer.get_ner_prf`."""
    tp = sum(len(g & p) for g, p in zip(gold, predicted))
    n_pred = sum(len(p) for p in predicted)
    n_gold = sum(len(g) for g in gold)
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    return {"ents_p": p, "ents_r": r, "ents_f": 2 * p * r / (p + r) if p + r else 0.0}


def decode_spans(
    log_probs: List[numpy.ndarray], is_space: List[numpy.ndarray], labels: Sequence[str]
) -> List[set]:
    """The `vanilla_ner` decoder: constrained Viterbi over BILUO, then spans."""
    paths = viterbi_batch(log_probs, Constraints(len(labels)), is_space)
    return [{(s, e, labels[label]) for s, e, label in tags_to_spans(tags)} for tags in paths]


def word_only_ents_f(data: Encoded) -> float:
    """Train F1 of a lookup table that gives each token the tag distribution
    of its word over the subset, decoded like the models. Roughly the best a
    model can do when a token's output depends on its own word only (no
    context from its sentence), as with attention across the batch."""
    n_tags = len(tag_names(data.labels))
    counts: Dict[int, numpy.ndarray] = {}
    for words, tags in zip(data.words, data.tags):
        for w, t in zip(words, tags):
            counts.setdefault(int(w), numpy.zeros((n_tags,)))[t] += 1
    log_probs = []
    for words in data.words:
        table = (
            numpy.stack([counts[int(w)] / counts[int(w)].sum() for w in words])
            if len(words)
            else numpy.zeros((0, n_tags))
        )
        log_probs.append(floored_log(table))
    return span_prf(data.gold_spans, decode_spans(log_probs, data.is_space, data.labels))["ents_f"]


def build_harness_model(name: str, data: Encoded, settings: RunSettings) -> nn.Module:
    n_tags = len(tag_names(data.labels))
    if name == "forum_setup":
        return ForumModel(data.n_words, n_tags, settings.width, settings.n_heads, settings.depth)
    if name == "recipe_harness":
        return RecipeHarness(data.n_feats, n_tags, settings)
    if name.startswith("recipe_without_"):
        return RecipeHarness(
            data.n_feats, n_tags, settings, without=[name[len("recipe_without_") :]]
        )
    raise ValueError(f"Unknown harness variant {name!r}; choose from {HARNESS_VARIANTS}.")


def pad_batch(data: Encoded, idx: Sequence[int], device: torch.device) -> Tuple[torch.Tensor, ...]:
    lengths = [len(data.words[i]) for i in idx]
    B, T = len(idx), max(max(lengths), 1)
    words = numpy.zeros((B, T), dtype="int64")
    feats = numpy.zeros((B, T, len(EMBED_ATTRS)), dtype="int64")
    tags = numpy.full((B, T), -100, dtype="int64")  # -100: F.cross_entropy's ignore_index
    for b, i in enumerate(idx):
        n = lengths[b]
        words[b, :n] = data.words[i]
        feats[b, :n] = data.feats[i]
        tags[b, :n] = data.tags[i]
    to = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    return to(words), to(feats), to(tags), to(tags != -100)


def harness_predict(
    model: nn.Module, data: Encoded, batch_size: int, device: torch.device
) -> List[set]:
    """Entities for every doc, batched in doc order (an unshuffled eval loader)."""
    model.eval()
    log_probs: List[numpy.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(data.words), batch_size):
            idx = list(range(start, min(start + batch_size, len(data.words))))
            words, feats, _, mask = pad_batch(data, idx, device)
            lp = F.log_softmax(model(words, feats, mask).float(), dim=-1).cpu().numpy()
            log_probs.extend(lp[b, : len(data.words[i])] for b, i in enumerate(idx))
    model.train()
    return decode_spans(log_probs, data.is_space, data.labels)


# ---------------------------------------------------------------------------
# Training loops


class _Curve:
    def __init__(self, name: str, n: int, settings: RunSettings, log: Callable[[str], None]):
        self.name, self.n, self.settings, self.log = name, n, settings, log
        self.steps: List[int] = []
        self.loss: List[float] = []
        self.loss_per_token: List[float] = []
        self.f: List[float] = []
        self._losses: List[float] = []
        self._tokens = 0
        self.start = time.perf_counter()

    def add(self, loss: float, n_tokens: int) -> None:
        self._losses.append(loss)
        self._tokens += n_tokens

    def due(self, step: int) -> bool:
        return step % self.settings.eval_every == 0 or step == self.settings.steps

    def evaluate(self, step: int, ents_f: float) -> None:
        self.steps.append(step)
        self.loss.append(float(numpy.mean(self._losses)) if self._losses else float("nan"))
        self.loss_per_token.append(sum(self._losses) / max(self._tokens, 1))
        self.f.append(ents_f)
        self._losses, self._tokens = [], 0
        self.log(
            f"  {self.name:<28} n={self.n:<5} step {step:>5}  loss {self.loss[-1]:>9.3f}  "
            f"train F1 {ents_f:.3f}  ({time.perf_counter() - self.start:.1f}s)"
        )

    def result(self, n_params: int) -> RunResult:
        reached = [s for s, f in zip(self.steps, self.f) if f >= 0.99]
        return RunResult(
            name=self.name,
            n_sentences=self.n,
            final_train_loss=self.loss[-1],
            final_train_loss_per_token=self.loss_per_token[-1],
            train_ents_f=self.f[-1],
            best_train_ents_f=max(self.f),
            steps_to_99=reached[0] if reached else None,
            seconds=round(time.perf_counter() - self.start, 2),
            steps=self.settings.steps,
            n_params=n_params,
            curve={"step": self.steps, "loss": self.loss, "train_ents_f": self.f},
        )


def train_harness(
    name: str, data: Encoded, settings: RunSettings, log: Callable[[str], None] = print
) -> RunResult:
    """Train one plain-PyTorch variant; returns its result with its curve."""
    from spacy.util import fix_random_seed

    fix_random_seed(settings.seed)
    device = torch.device(settings.device)
    model = build_harness_model(name, data, settings).to(device)
    model.train()
    optimizer = torch.optim.Adam(
        model.parameters(), lr=settings.learn_rate, betas=(0.9, 0.999), eps=1e-8
    )
    curve = _Curve(name, len(data.words), settings, log)
    batches = shuffled_batches(len(data.words), settings.batch_size, settings.seed)
    for step in range(1, settings.steps + 1):
        words, feats, tags, mask = pad_batch(data, next(batches), device)
        logits = model(words, feats, mask)
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            tags.reshape(-1),
            ignore_index=-100,
            reduction="sum",
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        curve.add(loss.detach().item(), int(mask.sum()))
        if curve.due(step):
            predicted = harness_predict(model, data, settings.batch_size, device)
            curve.evaluate(step, span_prf(data.gold_spans, predicted)["ents_f"])
    return curve.result(count_params(model))


def train_spacy(
    name: str, docs, settings: RunSettings, log: Callable[[str], None] = print
) -> RunResult:
    """Train a `vanilla_ner` pipeline with `nlp.update` on the same batches and
    optimizer as the harness (thinc's Adam with clipping, L2 and averaging off)."""
    from spacy.tokens import Doc
    from spacy.training import Example
    from spacy.util import fix_random_seed
    from thinc.api import Adam

    fix_random_seed(settings.seed)
    nlp = build_spacy_pipeline(name, settings)  # labels are read from the examples at initialize

    def blank(doc) -> Doc:
        return Doc(
            nlp.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc]
        )

    examples = [Example(blank(doc), doc) for doc in docs]
    nlp.initialize(lambda: examples)
    optimizer = Adam(
        settings.learn_rate,
        L2=0.0,
        grad_clip=0.0,
        use_averages=False,
        beta1=0.9,
        beta2=0.999,
        eps=1e-8,
    )
    gold = [{(e.start, e.end, e.label_) for e in doc.ents} for doc in docs]
    curve = _Curve(name, len(docs), settings, log)
    batches = shuffled_batches(len(docs), settings.batch_size, settings.seed)
    for step in range(1, settings.steps + 1):
        batch = [examples[i] for i in next(batches)]
        losses: Dict[str, float] = {}
        # drop=0: thinc-side dropout off; the torch encoders' dropout is a config value.
        nlp.update(batch, sgd=optimizer, drop=0.0, losses=losses)
        curve.add(losses["vanilla_ner"], sum(len(eg.predicted) for eg in batch))
        if curve.due(step):
            predicted = [
                {(e.start, e.end, e.label_) for e in doc.ents}
                for doc in nlp.pipe((blank(doc) for doc in docs), batch_size=settings.batch_size)
            ]
            curve.evaluate(step, span_prf(gold, predicted)["ents_f"])
    n_params = count_params(nlp.get_pipe("vanilla_ner").model)
    return curve.result(n_params)


def run_variant(
    name: str, docs, settings: RunSettings, log: Callable[[str], None] = print
) -> RunResult:
    if name in SPACY_VARIANTS:
        return train_spacy(name, docs, settings, log)
    return train_harness(name, encode_docs(docs), settings, log)
