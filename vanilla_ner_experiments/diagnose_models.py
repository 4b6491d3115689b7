"""The models of the diagnose harness. Plain PyTorch: the forum question's tagger, the
tutorial's positional encoding, and the package's recipe rebuilt with switches that undo one
fix each (`FIXES`). spaCy: `vanilla_ner` over the recipe's tok2vec or spaCy's BiLSTM or CNN
(`SPACY_MODEL_CONFIGS`). Used by `vanilla_ner_experiments.diagnose`."""

import copy
import math
import warnings
from typing import Any, Dict, Sequence

import torch
from torch import nn

from spacy_vanilla_ner.models.torch_encoder import EncoderConfig, TransformerEncoderModule

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
            self.encoder = nn.TransformerEncoder(
                nn.TransformerEncoderLayer(d_model, n_heads), depth
            )
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

    def __init__(
        self, n_feats: Sequence[int], n_tags: int, settings: Any, without: Sequence[str] = ()
    ):
        super().__init__()
        unknown = set(without) - set(FIXES)
        if unknown:
            raise ValueError(f"Unknown fixes {sorted(unknown)}; choose from {list(FIXES)}.")
        self.without = frozenset(without)
        width = settings.width
        self.embed = HarnessEmbed(n_feats, width, normalize="embed_scale" not in self.without)
        self.batch_positions = (
            TutorialPositionalEncoding(width, dropout=0.0) if "positions" in self.without else None
        )
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
        X = self.embed(feats) * mask[..., None].to(
            torch.float32
        )  # padding rows are zero, as in layers.py
        if self.batch_positions is not None:
            X = self.batch_positions(X)  # pe[:B]: one offset per doc, none per token
        attend = torch.ones_like(mask) if "mask" in self.without else mask
        if "time_major" in self.without:
            # The model takes (B', T', C) = our (T, B, C): it attends across docs.
            Y = self.encoder(X.transpose(0, 1), attend.transpose(0, 1)).transpose(0, 1)
        else:
            Y = self.encoder(X, attend)
        return self.output(Y)  # (B, T, n_tags)


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


def build_spacy_pipeline(name: str, settings: Any) -> Any:
    """A blank English pipeline with `vanilla_ner` over the variant's tok2vec."""
    import spacy
    from thinc.api import Config

    if name not in SPACY_MODEL_CONFIGS:
        raise ValueError(
            f"Unknown spaCy variant {name!r}; choose from {list(SPACY_MODEL_CONFIGS)}."
        )
    cfg = Config().from_str(
        SPACY_MODEL_CONFIGS[name].format(
            width=settings.width,
            depth=settings.depth,
            n_heads=settings.n_heads,
            dropout=settings.dropout,
        )
    )
    nlp = spacy.blank("en")
    nlp.add_pipe("vanilla_ner", config={"model": cfg["model"]})
    return nlp
