"""Why a vanilla Transformer NER model will not overfit: a training harness.

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
  `torch_modules.TransformerEncoderModule`, with switches for the ablations.
- `recipe_without_<fix>`: `recipe_harness` with one fix undone (see `FIXES`).
- `forum_setup`: the model of the forum question, in plain PyTorch.
- `spacy_bilstm`, `spacy_cnn`: spaCy's `TorchBiLSTMEncoder.v1` and
  `MaxoutWindowEncoder.v2` in place of the Transformer, under `vanilla_ner`.
"""
import copy
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy
import torch
import torch.nn.functional as F
from torch import nn

from .decoding import Constraints, tag_id, tag_names, tags_to_spans, viterbi_batch
from .torch_modules import EncoderConfig, TransformerEncoderModule

# What each ablation undoes. Keys are the `<fix>` of `recipe_without_<fix>`.
FIXES: Dict[str, str] = {
    "time_major": "batch-first (B, T, C) data fed to a time-major model: attention runs "
    "across the docs of the batch, not along the tokens of a doc",
    "mask": "no key-padding mask: real tokens attend to the padding of their batch",
    "pre_ln": "post-LayerNorm layers (as nn.TransformerEncoderLayer's default), no warmup",
    "embed_scale": "token vectors enter the encoder at the hash tables' init scale "
    "(uniform(-0.1, 0.1), RMS ~0.06) instead of layer-normalised (RMS 1)",
    "init": "every layer starts as a copy of the first (as nn.TransformerEncoder clones its layer)",
    "positions": "the PyTorch tutorial's PositionalEncoding indexed by dimension 0, which "
    "is the batch for batch-first data: no token order, a per-doc offset instead",
}
SPACY_VARIANTS = ("recipe", "spacy_bilstm", "spacy_cnn")
HARNESS_VARIANTS = ("recipe_harness",) + tuple(f"recipe_without_{fix}" for fix in FIXES) + ("forum_setup",)
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
        words.append(numpy.array([word_ids.setdefault(t.text, len(word_ids) + 1) for t in doc], dtype="int64"))
        feats.append(
            numpy.array(
                [[ids.setdefault(getattr(t, attr), len(ids) + 1) for attr, ids in zip(EMBED_ATTRS, feat_ids)] for t in doc],
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


def decode_spans(log_probs: List[numpy.ndarray], is_space: List[numpy.ndarray], labels: Sequence[str]) -> List[set]:
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
        table = numpy.stack([counts[int(w)] / counts[int(w)].sum() for w in words]) if len(words) else numpy.zeros((0, n_tags))
        with numpy.errstate(divide="ignore"):
            log_probs.append(numpy.maximum(numpy.log(table), -1e4))
    return span_prf(data.gold_spans, decode_spans(log_probs, data.is_space, data.labels))["ents_f"]


# ---------------------------------------------------------------------------
# Plain-PyTorch models


class TutorialPositionalEncoding(nn.Module):
    """The PyTorch tutorial's `PositionalEncoding`, verbatim in behaviour: a
    (max_len, 1, d_model) table for time-major input, indexed `pe[:x.size(0)]`.
    Given batch-first (B, T, C) input, x.size(0) is the batch: each doc gets
    one constant vector (that of its slot in the batch) on every token."""

    def __init__(self, d_model: int, dropout: float = 0.1, max_len: int = 5000):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        position = torch.arange(max_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, 1, d_model)
        pe[:, 0, 0::2] = torch.sin(position * div_term)
        pe[:, 0, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pe[: x.size(0)]
        return self.dropout(x)


class ForumModel(nn.Module):
    """The forum question's tagger: unscaled nn.Embedding word vectors, the
    tutorial's PositionalEncoding, a default nn.TransformerEncoder (post-LN,
    ReLU, dim_feedforward=2048, dropout 0.1, batch_first=False, one layer
    deep-copied `depth` times) fed batch-first data with no padding mask, then
    two Linear layers to per-token tag logits."""

    def __init__(self, n_words: int, n_tags: int, d_model: int, n_heads: int, depth: int):
        super().__init__()
        self.embedding = nn.Embedding(n_words, d_model, padding_idx=0)
        self.positions = TutorialPositionalEncoding(d_model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "enable_nested_tensor is True, but ..."
            self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(d_model, n_heads), depth)
        self.hidden = nn.Linear(d_model, d_model)
        self.output = nn.Linear(d_model, n_tags)

    def forward(self, words: torch.Tensor, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embedding(words)  # (B, T, C), used as if it were (T, B, C)
        x = self.positions(x)
        x = self.encoder(x)  # no src_key_padding_mask
        return self.output(torch.relu(self.hidden(x)))  # (B, T, n_tags)


class HarnessEmbed(nn.Module):
    """spaCy's MultiHashEmbed in plain PyTorch: one table per attribute
    (NORM, PREFIX, SUFFIX, SHAPE) initialised uniform(-0.1, 0.1) as thinc's
    HashEmbed, concatenated, then Maxout (3 pieces) and LayerNorm. Exact ids
    instead of hashing: on a training set the two see the same distinctions."""

    def __init__(self, n_feats: Sequence[int], width: int, normalize: bool = True):
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(n, width) for n in n_feats)
        for table in self.tables:
            nn.init.uniform_(table.weight, -0.1, 0.1)
        self.width = width
        self.maxout = nn.Linear(width * len(n_feats), width * 3)
        self.norm = nn.LayerNorm(width) if normalize else nn.Identity()

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        X = torch.cat([table(feats[..., i]) for i, table in enumerate(self.tables)], dim=-1)
        X = self.maxout(X).view(*X.shape[:-1], self.width, 3).amax(dim=-1)
        return self.norm(X)


class RecipeHarness(nn.Module):
    """The recipe (HarnessEmbed -> TransformerEncoderModule -> zero-initialised
    softmax layer) with switches that undo one fix each (see `FIXES`)."""

    def __init__(self, n_feats: Sequence[int], n_tags: int, settings: RunSettings, without: Sequence[str] = ()):
        super().__init__()
        unknown = set(without) - set(FIXES)
        if unknown:
            raise ValueError(f"Unknown fixes {sorted(unknown)}; choose from {list(FIXES)}.")
        self.without = frozenset(without)
        width = settings.width
        self.embed = HarnessEmbed(n_feats, width, normalize="embed_scale" not in self.without)
        self.batch_positions = TutorialPositionalEncoding(width, dropout=0.0) if "positions" in self.without else None
        self.encoder = TransformerEncoderModule(
            EncoderConfig(
                width=width,
                depth=settings.depth,
                n_heads=settings.n_heads,
                ff_width=4 * width,
                dropout=settings.dropout,
                attention_dropout=settings.dropout,
                activation="gelu",
                positions="none" if "positions" in self.without else "rotary",
                norm_first="pre_ln" not in self.without,
                max_length=512,
            )
        )
        if "init" in self.without:
            first = self.encoder.layers[0].state_dict()
            for layer in self.encoder.layers[1:]:
                layer.load_state_dict(copy.deepcopy(first))
        self.output = nn.Linear(width, n_tags)
        nn.init.zeros_(self.output.weight)  # Softmax_v2(init_W=zero_init)
        nn.init.zeros_(self.output.bias)

    def forward(self, words: torch.Tensor, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # words, mask: (B, T); feats: (B, T, 4)
        X = self.embed(feats) * mask[..., None].to(torch.float32)  # padding rows are zero, as in layers.py
        if self.batch_positions is not None:
            X = self.batch_positions(X)  # pe[:B]: one offset per doc, none per token
        attend = torch.ones_like(mask) if "mask" in self.without else mask
        if "time_major" in self.without:
            # The model takes (B', T', C) = our (T, B, C): it attends across docs.
            Y = self.encoder(X.transpose(0, 1), attend.transpose(0, 1)).transpose(0, 1)
        else:
            Y = self.encoder(X, attend)
        return self.output(Y)  # (B, T, n_tags)


def build_harness_model(name: str, data: Encoded, settings: RunSettings) -> nn.Module:
    n_tags = len(tag_names(data.labels))
    if name == "forum_setup":
        return ForumModel(data.n_words, n_tags, settings.width, settings.n_heads, settings.depth)
    if name == "recipe_harness":
        return RecipeHarness(data.n_feats, n_tags, settings)
    if name.startswith("recipe_without_"):
        return RecipeHarness(data.n_feats, n_tags, settings, without=[name[len("recipe_without_") :]])
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


def harness_predict(model: nn.Module, data: Encoded, batch_size: int, device: torch.device) -> List[set]:
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
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learn_rate, betas=(0.9, 0.999), eps=1e-8)
    curve = _Curve(name, len(data.words), settings, log)
    batches = shuffled_batches(len(data.words), settings.batch_size, settings.seed)
    for step in range(1, settings.steps + 1):
        words, feats, tags, mask = pad_batch(data, next(batches), device)
        logits = model(words, feats, mask)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tags.reshape(-1), ignore_index=-100, reduction="sum")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        curve.add(loss.detach().item(), int(mask.sum()))
        if curve.due(step):
            predicted = harness_predict(model, data, settings.batch_size, device)
            curve.evaluate(step, span_prf(data.gold_spans, predicted)["ents_f"])
    return curve.result(sum(p.numel() for p in model.parameters()))


# spaCy's encoders get the same hashed features (spacy.MultiHashEmbed.v2) as
# TransformerTok2Vec; only the encode block differs.
_SPACY_TOK2VEC = """
[model]
@architectures = "spacy-vanilla-ner.NERTagger.v1"
[model.tok2vec]
@architectures = "spacy.Tok2Vec.v2"
[model.tok2vec.embed]
@architectures = "spacy.MultiHashEmbed.v2"
width = {width}
attrs = ["NORM", "PREFIX", "SUFFIX", "SHAPE"]
rows = [5000, 1000, 2500, 2500]
include_static_vectors = false
[model.tok2vec.encode]
"""

SPACY_MODEL_CONFIGS = {
    "recipe": """
[model]
@architectures = "spacy-vanilla-ner.NERTagger.v1"
[model.tok2vec]
@architectures = "spacy-vanilla-ner.TransformerTok2Vec.v1"
width = {width}
depth = {depth}
n_heads = {n_heads}
dropout = {dropout}
attention_dropout = {dropout}
positions = "rotary"
norm_first = true
""",
    "spacy_bilstm": _SPACY_TOK2VEC
    + """@architectures = "spacy.TorchBiLSTMEncoder.v1"
width = {width}
depth = {depth}
dropout = {dropout}
""",
    "spacy_cnn": _SPACY_TOK2VEC
    + """@architectures = "spacy.MaxoutWindowEncoder.v2"
width = {width}
depth = 4
window_size = 1
maxout_pieces = 3
""",
}


def build_spacy_pipeline(name: str, settings: RunSettings):
    import spacy
    from thinc.api import Config

    if name not in SPACY_MODEL_CONFIGS:
        raise ValueError(f"Unknown spaCy variant {name!r}; choose from {SPACY_VARIANTS}.")
    cfg = Config().from_str(
        SPACY_MODEL_CONFIGS[name].format(
            width=settings.width, depth=settings.depth, n_heads=settings.n_heads, dropout=settings.dropout
        )
    )
    nlp = spacy.blank("en")
    nlp.add_pipe("vanilla_ner", config={"model": cfg["model"]})
    return nlp


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
        return Doc(nlp.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc])

    examples = [Example(blank(doc), doc) for doc in docs]
    nlp.initialize(lambda: examples)
    optimizer = Adam(settings.learn_rate, L2=0.0, grad_clip=0.0, use_averages=False, beta1=0.9, beta2=0.999, eps=1e-8)
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
    n_params = sum(
        int(numpy.prod(node.get_param(p).shape)) for node in nlp.get_pipe("vanilla_ner").model.walk()
        for p in node.param_names if node.has_param(p)
    ) + sum(
        p.numel()
        for node in nlp.get_pipe("vanilla_ner").model.walk()
        if hasattr(node, "shims")
        for shim in node.shims
        if hasattr(shim, "_model") and isinstance(shim._model, nn.Module)
        for p in shim._model.parameters()
    )
    return curve.result(n_params)


def run_variant(name: str, docs, settings: RunSettings, log: Callable[[str], None] = print) -> RunResult:
    if name in SPACY_VARIANTS:
        return train_spacy(name, docs, settings, log)
    return train_harness(name, encode_docs(docs), settings, log)
