"""Names resolve through entry points, without importing the package."""

import subprocess
import sys
import textwrap

import pytest

NAMES = [
    "spacy-vanilla-ner.TransformerEncoder.v1",
    "spacy-vanilla-ner.TransformerEncoder.v2",
    "spacy-vanilla-ner.TransformerTok2Vec.v1",
    "spacy-vanilla-ner.NERTagger.v1",
    "spacy-vanilla-ner.NormDropout.v1",
    "spacy-vanilla-ner.NormDropout.v2",
    "spacy-vanilla-ner.NormDropout.v3",
    "spacy-vanilla-ner.MultiHashEmbed.v1",
]
CALLBACKS = ["spacy-vanilla-ner.Int8Inference.v1", "spacy-vanilla-ner.CountSingletons.v1"]


def run_fresh(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_entry_points_resolve_without_import():
    out = run_fresh(
        f"""
        import sys
        import spacy
        assert "spacy_vanilla_ner" not in sys.modules
        for name in {NAMES!r}:
            assert callable(spacy.registry.architectures.get(name)), name
        for name in {CALLBACKS!r}:
            assert callable(spacy.registry.callbacks.get(name)), name
        nlp = spacy.blank("en")
        ner = nlp.add_pipe("vanilla_ner")
        print(type(ner).__name__)
        """
    )
    assert out.strip() == "VanillaNER"


@pytest.mark.parametrize("name", NAMES)
def test_names_in_registry(name):
    import spacy

    assert spacy.registry.architectures.get(name) is not None


def test_import_is_light():
    """Importing the package registers its names and nothing else: no
    experiment code, no matplotlib, and no fork hook until an encoder is built."""
    out = run_fresh(
        """
        import sys
        import spacy_vanilla_ner
        from spacy_vanilla_ner.models import windowing
        heavy = {"matplotlib", "vanilla_ner_experiments", "ray"} & set(sys.modules)
        print(sorted(heavy), windowing._fork_hook_registered)
        model = spacy_vanilla_ner.build_transformer_encoder_v2(16, 1, 2)
        print(windowing._fork_hook_registered)
        """
    )
    assert out.split("\n")[:2] == ["[] False", "True"]


def test_package_exports_the_default_encoder():
    """The package exports the encoder the default recipe uses."""
    import spacy

    import spacy_vanilla_ner

    nlp = spacy.blank("en")
    nlp.add_pipe("vanilla_ner")
    encode = nlp.config["components"]["vanilla_ner"]["model"]["tok2vec"]["encode"]
    name = encode["@architectures"]
    assert spacy.registry.architectures.get(name) is spacy_vanilla_ner.build_transformer_encoder_v2
    assert "build_transformer_encoder_v2" in spacy_vanilla_ner.__all__
