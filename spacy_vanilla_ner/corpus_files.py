"""Which files `spacy train` can read as a corpus, checked before reading them.

`spacy train` (and `spacy.training.Corpus`) reads a corpus from `.spacy` DocBins only: a
`.spacy` file, or every `.spacy` file under a directory. Anything else is skipped with a
warning, so a CoNLL file passed as a corpus reads as an empty corpus. The commands of this
package check their corpus paths here first and fail with one message that says what to do
(`convert` the file, rename it), and `convert` uses `is_docbin` to refuse a file that is
already a DocBin. Messages put each command to run on a line of its own: `fail` prints
them unwrapped.
"""

import sys
from pathlib import Path
from typing import Any, List, NoReturn, Union

from spacy.tokens import DocBin
from spacy.vocab import Vocab
from wasabi import msg

__all__ = [
    "DOCBIN_SUFFIX",
    "CorpusFileError",
    "corpus_files",
    "count_words",
    "fail",
    "has_docbin_content",
    "is_docbin",
    "read_docbin",
]

DOCBIN_SUFFIX = ".spacy"
CONVERT_COMMAND = "python -m spacy_vanilla_ner convert"


class CorpusFileError(ValueError):
    """A corpus path that `spacy train` cannot read; the message names the path and the fix."""


def has_docbin_content(path: Union[str, Path]) -> bool:
    """Whether a file holds a DocBin (zlib-compressed msgpack, as `DocBin.to_disk`
    writes it), whatever its name. Only a file that starts with a zlib header is read
    in full.

    path (Union[str, Path]): The file.
    RETURNS (bool): True if `DocBin().from_bytes` reads the file.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(2)
        # A zlib stream starts with CMF (deflate: low nibble 8) and FLG, CMF * 256 + FLG
        # a multiple of 31 (RFC 1950); text rarely does.
        if len(head) < 2 or head[0] & 0x0F != 8 or (head[0] * 256 + head[1]) % 31:
            return False
        DocBin().from_bytes(path.read_bytes())
    except Exception:  # OSError, zlib.error, msgpack's errors, a KeyError: not a DocBin
        return False
    return True


def is_docbin(path: Union[str, Path]) -> bool:
    """Whether a file is a spaCy DocBin: named `.spacy`, or with DocBin content.

    path (Union[str, Path]): The file.
    RETURNS (bool): Whether it is (or claims to be) a DocBin.
    """
    path = Path(path)
    return path.suffix == DOCBIN_SUFFIX or has_docbin_content(path)


def fail(message: Any) -> NoReturn:
    """Print an error as wasabi's `msg.fail` and exit with 1. The first line of the
    message is the title, wrapped as usual; the other lines (the commands to run) are
    printed as they are, so that no command is broken over two lines.

    message (Any): The error, e.g. a CorpusFileError.
    """
    first, *rest = str(message).split("\n")
    print()
    msg.fail(first)
    for line in rest:
        print(line)
    print()
    sys.exit(1)


def _docbins_under(directory: Path) -> List[Path]:
    # As spacy.training.corpus.walk_corpus: recursive, names starting with "." skipped.
    found: List[Path] = []
    todo = [directory]
    while todo:
        for child in todo.pop().iterdir():
            if child.name.startswith("."):
                continue
            if child.is_dir():
                todo.append(child)
            elif child.name.endswith(DOCBIN_SUFFIX):
                found.append(child)
    return sorted(found)


def corpus_files(path: Union[str, Path], role: str = "train") -> List[Path]:
    """The `.spacy` files that `spacy train` reads for a corpus path, or a
    CorpusFileError that says what to do instead.

    path (Union[str, Path]): A `.spacy` file, or a directory of them (searched
        recursively, as `spacy train` does).
    role (str): "train" or "dev": the corpus name in the suggested commands.
    RETURNS (List[Path]): The `.spacy` files, sorted. Raises CorpusFileError if the
        path does not exist, is a file that is not named `.spacy` (e.g. a CoNLL file:
        convert it; a DocBin by another name: rename it) or a directory without
        `.spacy` files. The files are not read: see `read_docbin`.
    """
    path = Path(path)
    if not path.exists():
        raise CorpusFileError(f"Corpus not found: {path}")
    if path.is_dir():
        files = _docbins_under(path)
        if not files:
            raise CorpusFileError(
                f"{path}: no .spacy files in this directory, and spaCy reads a corpus from "
                f".spacy DocBins only. If it holds CoNLL files, convert them first:"
                f"\n  {CONVERT_COMMAND} FILE corpus/{role}.spacy"
            )
        return files
    if path.suffix != DOCBIN_SUFFIX:
        if has_docbin_content(path):
            raise CorpusFileError(
                f"{path} is a spaCy DocBin, but spaCy reads only files named *.spacy: "
                f"rename it, e.g. to {path.with_suffix(DOCBIN_SUFFIX)}"
            )
        raise CorpusFileError(
            f"{path} is not a spaCy DocBin (.spacy file), and spaCy trains from DocBins "
            f"only. Convert it first:\n  {CONVERT_COMMAND} {path} corpus/{role}.spacy"
        )
    return [path]


def read_docbin(path: Union[str, Path]) -> DocBin:
    """Read a `.spacy` file.

    path (Union[str, Path]): The file.
    RETURNS (DocBin): Its docs. Raises CorpusFileError naming the file if it is not
        a readable DocBin (e.g. a CoNLL file named `.spacy`, or a truncated file).
    """
    path = Path(path)
    try:
        return DocBin().from_disk(path)
    except Exception as e:  # zlib, msgpack and key errors alike: never a traceback
        reason = str(e).split(". ")[0] or type(e).__name__  # spaCy's E1014 says more
        raise CorpusFileError(
            f"{path} is not a readable spaCy DocBin ({reason}). Write .spacy "
            f"files with DocBin.to_disk, or from a CoNLL file with:"
            f"\n  {CONVERT_COMMAND} FILE {path}"
        ) from None


def count_words(path: Union[str, Path], role: str = "train") -> int:
    """Count the words (tokens) of a corpus, as `spacy train` reads it.

    path (Union[str, Path]): A `.spacy` file or a directory of them.
    role (str): "train" or "dev", for the messages (see `corpus_files`).
    RETURNS (int): The number of tokens of all its docs. Raises CorpusFileError
        as `corpus_files` and `read_docbin`.
    """
    vocab = Vocab()
    return sum(
        len(doc) for file in corpus_files(path, role) for doc in read_docbin(file).get_docs(vocab)
    )
