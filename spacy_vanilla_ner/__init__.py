"""A from-scratch Transformer encoder and a BILUO tagging NER component for spaCy."""

# Importing these registers the architectures and the `vanilla_ner` factory; they are
# also registered through entry points, so configs and `spacy.load` need no import.
from .about import __version__
from .models.embed import (
    build_norm_dropout_v1,
    build_norm_dropout_v2,
    build_norm_dropout_v3,
    count_singletons,
    make_count_singletons,
)
from .models.encoder import (
    build_transformer_encoder_v1,
    build_transformer_encoder_v2,
    build_transformer_tok2vec_v1,
)
from .models.hash_embed import build_multi_hash_embed
from .models.quantization import make_int8_inference, set_inference_dtype
from .models.tagger import build_ner_tagger_v1
from .pipeline.vanilla_ner import DEFAULT_CONFIG_STR, VanillaNER, make_vanilla_ner

__all__ = [
    "__version__",
    "build_transformer_encoder_v2",
    "build_transformer_encoder_v1",
    "build_transformer_tok2vec_v1",
    "build_ner_tagger_v1",
    "build_norm_dropout_v1",
    "build_norm_dropout_v2",
    "build_norm_dropout_v3",
    "build_multi_hash_embed",
    "count_singletons",
    "make_count_singletons",
    "make_int8_inference",
    "set_inference_dtype",
    "VanillaNER",
    "make_vanilla_ner",
    "DEFAULT_CONFIG_STR",
]
