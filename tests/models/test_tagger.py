"""NERTagger.v1 beyond vanilla_ner: as the model of spaCy's built-in tagger."""

from spacy.util import load_model_from_config
from thinc.api import Config

from tests.helpers import fit_pos_tags


def test_tagger_architecture_fits_pos_tags():
    """NERTagger.v1 as the model of spaCy's built-in tagger."""
    config = Config().from_str(
        """
        [nlp]
        lang = "en"
        pipeline = ["tagger"]

        [components]

        [components.tagger]
        factory = "tagger"

        [components.tagger.model]
        @architectures = "spacy-vanilla-ner.NERTagger.v1"
        nO = null

        [components.tagger.model.tok2vec]
        @architectures = "spacy-vanilla-ner.TransformerTok2Vec.v1"
        width = 32
        depth = 1
        n_heads = 2
        """
    )
    nlp = load_model_from_config(config, auto_fill=True)
    fit_pos_tags(nlp)
