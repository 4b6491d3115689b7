"""`python -m spacy_vanilla_ner`: the package's command line (see `spacy_vanilla_ner.cli`)."""

from .cli import app

if __name__ == "__main__":
    app(prog_name="python -m spacy_vanilla_ner")
