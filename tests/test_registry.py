"""Names resolve through entry points, without importing the package."""
import subprocess
import sys
import textwrap

import pytest

NAMES = [
    "spacy-vanilla-ner.TransformerEncoder.v1",
    "spacy-vanilla-ner.TransformerTok2Vec.v1",
    "spacy-vanilla-ner.NERTagger.v1",
]


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
