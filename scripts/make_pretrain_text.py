"""Write the raw text of an NER corpus as JSONL for `spacy pretrain`.

Usage (from the repository root):

    python scripts/make_pretrain_text.py INPUT OUTPUT [--n-sents N]

INPUT is a `.spacy` DocBin (e.g. `corpus/train.spacy`, made by the `convert`
project command) or a CoNLL-style NER file (anything else; read with
`spacy_vanilla_ner.convert`, `--n-sents` sentences per doc as there). OUTPUT
gets one line `{"text": ...}` per non-empty doc, which is what
`spacy.JsonlCorpus.v1` (`[corpora.pretrain]` in configs/transformer_vner.cfg)
reads. The entity annotation is dropped: pretraining only sees the text.

The text is the tokens joined as in the doc (for a CoNLL file, by single
spaces), so `spacy pretrain` re-tokenizes it with the pipeline's tokenizer, as
it would any raw text you give it instead.
"""

from pathlib import Path
from typing import Iterator, List

import spacy
import srsly
import typer
from spacy.tokens import Doc, DocBin
from wasabi import msg

from spacy_vanilla_ner.convert import conll_to_docs


def read_docs(path: Path, n_sents: int = 1) -> List[Doc]:
    """The docs of a `.spacy` file, or of a CoNLL-style file converted with
    `n_sents` sentences per doc (ignored for `.spacy`, whose docs are kept)."""
    vocab = spacy.blank("en").vocab
    if path.suffix == ".spacy":
        return list(DocBin().from_disk(path).get_docs(vocab))
    return conll_to_docs(path, vocab, n_sents=n_sents)


def pretrain_records(docs: List[Doc]) -> Iterator[dict]:
    """One `{"text": ...}` record per doc with any non-whitespace text."""
    for doc in docs:
        if doc.text.strip():
            yield {"text": doc.text}


def make_pretrain_text(input_path: Path, output_path: Path, n_sents: int = 1) -> int:
    """Write the JSONL and return the number of lines written."""
    records = list(pretrain_records(read_docs(input_path, n_sents=n_sents)))
    if not records:
        raise ValueError(f"{input_path} has no text to write")
    output_path.parent.mkdir(parents=True, exist_ok=True)
    srsly.write_jsonl(output_path, records)
    return len(records)


def main(
    input_path: Path = typer.Argument(..., help=".spacy file or CoNLL-style NER file"),
    output_path: Path = typer.Argument(..., help="JSONL file to write"),
    n_sents: int = typer.Option(
        1, "--n-sents", "-n", min=0, help="CoNLL input: sentences per doc (0 = per article)"
    ),
) -> None:
    """Write the raw text of INPUT_PATH as JSONL {"text": ...}, one line per doc."""
    if not input_path.is_file():
        msg.fail(f"No such file: {input_path}", exits=1)
    try:
        n = make_pretrain_text(input_path, output_path, n_sents=n_sents)
    except ValueError as e:
        msg.fail(str(e), exits=1)
    msg.good(f"Wrote {n:,} texts to {output_path}")


if __name__ == "__main__":
    typer.run(main)
