"""`python -m spacy_vanilla_ner.annotate MODEL INPUT OUTPUT`: annotate a corpus with a
pipeline's entities, on this machine (`nlp.pipe`) or on a Ray cluster (Ray Data).

Ray is imported only for `--engine ray` (`pip install 'spacy-vanilla-ner[ray]'`).
See docs/scale-out.md.
"""

from .core import OUTPUT_COLUMNS, annotate_batch, annotate_rows, check_text, entities_of
from .engine import ENGINES, annotate, require_ray
from .inputs import AnnotateError, find_inputs

__all__ = [
    "OUTPUT_COLUMNS",
    "ENGINES",
    "AnnotateError",
    "annotate",
    "annotate_batch",
    "annotate_rows",
    "check_text",
    "entities_of",
    "find_inputs",
    "require_ray",
]
