"""Convert CoNLL-style NER text files to spaCy `.spacy` DocBins.

Usage:

    python -m spacy_vanilla_ner convert INPUT OUTPUT [--n-sents N] [--limit N]

(or `python -m spacy_vanilla_ner.convert ...`).

The input is one token per line with whitespace-separated columns: the FIRST
column is the word and the LAST column is the NER tag, anything in between
(e.g. the POS and chunk columns of CoNLL-2003) is ignored. A blank line ends a
sentence. A line whose first column is `-DOCSTART-` is an article boundary,
wherever it appears: CoNLL-2003 puts it before each article, WikiGold after
each article. Tags may be IOB1, IOB2, IO or BILUO (a file that contains any
`L-` or `U-` tag is read as BILUO and must be valid BILUO; any other file is
read as IOB/IO and converted with `spacy.training.iob_to_biluo`, so an `I-`
after `O` or after another type starts an entity).

A line made only of whitespace and invisible format characters (a stray byte
order mark U+FEFF, zero-width spaces U+200B..U+200D, U+2060, a no-break space,
...) counts as blank, and a byte order mark at the start of a line is dropped;
both are reported with a `ConllFormatWarning` naming the file and lines.

A file that is already a spaCy DocBin (named `.spacy`, or zlib-compressed msgpack
that `DocBin().from_bytes` reads, e.g. exported from Prodigy) is refused with a
`ConllFormatError` that says how to train from it.
"""

import re
import unicodedata
import warnings
from pathlib import Path
from typing import Iterable, List, NamedTuple, Optional, Set, Tuple, Union

import spacy
import typer
from spacy.tokens import Doc, DocBin
from spacy.training import biluo_tags_to_spans, iob_to_biluo
from spacy.vocab import Vocab
from wasabi import msg

from .corpus_files import DOCBIN_SUFFIX, fail, is_docbin

DOCSTART = "-DOCSTART-"
TAG_RE = re.compile(r"^(?:O|[BILU]-\S+)$")
BOM = "\ufeff"
_ASCII_SPACE = frozenset(" \t\r\n\f\v")
_MAX_LINES_SHOWN = 10

__all__ = [
    "ConllFormatError",
    "ConllFormatWarning",
    "read_conll_ner",
    "conll_to_docs",
    "convert",
]


class ConllFormatError(ValueError):
    """Malformed input; the message names the file and, where it applies, the line."""

    def __init__(self, path: Union[str, Path], message: str, line: Optional[int] = None):
        self.path = str(path)
        self.line = line
        where = self.path if line is None else f"{self.path}, line {line}"
        super().__init__(f"{where}: {message}")


class ConllFormatWarning(UserWarning):
    """Input read with a repair (e.g. a line of invisible characters read as blank);
    the message names the file and the lines."""

    def __init__(self, path: Union[str, Path], lines: List[int], message: str):
        self.path = str(path)
        self.lines = list(lines)
        shown = ", ".join(str(n) for n in lines[:_MAX_LINES_SHOWN])
        if len(lines) > _MAX_LINES_SHOWN:
            shown += f", ... ({len(lines)} lines)"
        where = f"line {shown}" if len(lines) == 1 else f"lines {shown}"
        super().__init__(f"{self.path}, {where}: {message}")


def _is_blank(line: str) -> bool:
    """Whether a line shows nothing: only whitespace (str.isspace, which includes
    the no-break and ideographic spaces) and invisible format characters (category
    Cf: U+FEFF, U+200B..U+200D, U+2060, soft hyphen, direction marks)."""
    return all(ch.isspace() or unicodedata.category(ch) == "Cf" for ch in line)


def _codepoints(chars: Iterable[str]) -> str:
    return ", ".join(f"U+{ord(ch):04X}" for ch in sorted(set(chars)))


class _Sentence(NamedTuple):
    words: List[str]
    tags: List[str]  # as read from the file
    lines: List[int]  # 1-based line number of each token


def _read(path: Union[str, Path]) -> List[List[_Sentence]]:
    """Read a file into articles of sentences, with line numbers; tags are checked
    for their form (O or B-/I-/L-/U- + label) but not yet as a sequence."""
    path = Path(path)
    if not path.exists():
        raise ConllFormatError(path, "file not found")
    if path.is_dir():
        raise ConllFormatError(path, "is a directory, expected a CoNLL file")
    if is_docbin(path):
        raise ConllFormatError(path, _already_docbin(path))
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConllFormatError(path, f"not valid UTF-8 ({e})") from None
    articles: List[List[_Sentence]] = []
    article: List[_Sentence] = []
    sent = _Sentence([], [], [])

    def end_sentence() -> None:
        nonlocal sent
        if sent.words:
            article.append(sent)
            sent = _Sentence([], [], [])

    def end_article() -> None:
        nonlocal article
        end_sentence()
        if article:
            articles.append(article)
            article = []

    invisible_lines: List[int] = []
    invisible_chars: Set[str] = set()
    bom_lines: List[int] = []
    # read_text() turned \r\n and \r into \n; split on \n only, so that line numbers
    # are an editor's even where a line holds U+2028 or U+0085.
    for line_no, raw in enumerate(text.split("\n"), start=1):
        if _is_blank(raw):
            unusual = [ch for ch in raw if ch not in _ASCII_SPACE]
            if unusual:
                invisible_lines.append(line_no)
                invisible_chars.update(unusual)
            end_sentence()
            continue
        line = raw.lstrip(BOM)  # a BOM starting a line is left over from joining files
        if len(line) < len(raw):
            bom_lines.append(line_no)
        fields = line.split()
        if fields[0] == DOCSTART:
            end_article()
        elif len(fields) < 2:
            raise ConllFormatError(
                path,
                f"expected at least two columns (word ... NER tag), got {line.strip()!r}",
                line_no,
            )
        else:
            tag = fields[-1]
            if not TAG_RE.match(tag):
                raise ConllFormatError(
                    path,
                    f"malformed NER tag {tag!r} (expected 'O' or B-/I-/L-/U- "
                    f"followed by a label, e.g. 'B-PER')",
                    line_no,
                )
            sent.words.append(fields[0])
            sent.tags.append(tag)
            sent.lines.append(line_no)
    end_article()
    if bom_lines:
        warnings.warn(
            ConllFormatWarning(
                path, bom_lines, "a byte order mark (U+FEFF) starts the line; ignored"
            ),
            stacklevel=3,
        )
    if invisible_lines:
        warnings.warn(
            ConllFormatWarning(
                path,
                invisible_lines,
                f"only whitespace or invisible characters ({_codepoints(invisible_chars)})"
                f"; read as a blank line",
            ),
            stacklevel=3,
        )
    if not articles:
        if all(_is_blank(line) for line in text.split("\n")):
            raise ConllFormatError(path, "file is empty")
        raise ConllFormatError(path, "no sentences found (only -DOCSTART- lines?)")
    return articles


def _already_docbin(path: Path) -> str:
    """What to do with a DocBin passed as a CoNLL file (e.g. exported from Prodigy)."""
    train = path.with_suffix(DOCBIN_SUFFIX)
    rename = ""
    if path.suffix != DOCBIN_SUFFIX:  # found by its content; spaCy reads *.spacy only
        rename = f"\n  rename it to {train} (spaCy reads only files named *.spacy)"
    return (
        f"already a spaCy DocBin (.spacy), nothing to convert. To train from it:{rename}"
        f"\n  python -m spacy_vanilla_ner init-config config.cfg --train {train}"
        f"\n  python -m spacy_vanilla_ner debug-data {train} [DEV.spacy]"
        f"\n  python -m spacy train config.cfg --output training --paths.train {train} "
        f"--paths.dev DEV.spacy"
    )


def _check_biluo(path: Union[str, Path], sent: _Sentence) -> None:
    """Raise a ConllFormatError at the first token where the BILUO sequence breaks."""
    open_label: Optional[str] = None
    for tag, line_no in zip(sent.tags, sent.lines):
        prefix, label = (tag[0], tag[2:]) if tag != "O" else ("O", "")
        if open_label is not None:
            if prefix in "IL" and label == open_label:
                open_label = None if prefix == "L" else open_label
                continue
            raise ConllFormatError(
                path,
                f"BILUO tag {tag!r} where I-{open_label} or L-{open_label} was expected "
                f"(the entity opened with B-{open_label} is not closed); this file is "
                f"read as BILUO because it contains L- or U- tags",
                line_no,
            )
        if prefix in "IL":
            raise ConllFormatError(
                path,
                f"BILUO tag {tag!r} with no entity open (an entity must start with "
                f"B- or U-); this file is read as BILUO because it contains L- or U- tags",
                line_no,
            )
        if prefix == "B":
            open_label = label
    if open_label is not None:
        raise ConllFormatError(
            path,
            f"entity B-{open_label} is not closed with L-{open_label} before the end "
            f"of the sentence; this file is read as BILUO because it contains L- or U- tags",
            sent.lines[-1],
        )


def _to_biluo(path: Union[str, Path], sent: _Sentence, is_biluo: bool) -> List[str]:
    if is_biluo:
        _check_biluo(path, sent)
        return list(sent.tags)
    try:
        biluo = iob_to_biluo(sent.tags)
    except Exception as e:  # should not happen after the tag check; never leak it raw
        raise ConllFormatError(
            path, f"cannot convert the IOB tags of this sentence to BILUO ({e})", sent.lines[0]
        ) from None
    if len(biluo) != len(sent.tags):
        raise ConllFormatError(
            path, "cannot convert the IOB tags of this sentence to BILUO", sent.lines[0]
        )
    return biluo


def read_conll_ner(path: Union[str, Path]) -> List[List[Tuple[List[str], List[str]]]]:
    """Read a CoNLL-style NER file (WikiGold, CoNLL-2003 or similar).

    path (Union[str, Path]): The file to read. The first column of a line is the
        word, the last column the NER tag; blank lines end sentences and a
        `-DOCSTART-` line is an article boundary.
    RETURNS (List[List[Tuple[List[str], List[str]]]]): The articles, each a list
        of sentences, each a `(words, tags)` pair with the tags as in the file.
        Raises ConllFormatError (a ValueError) naming the file and line for
        malformed input or an empty file, and for a file that is already a spaCy
        DocBin (named `.spacy`, or with DocBin content).
    """
    return [[(s.words, s.tags) for s in article] for article in _read(path)]


def conll_to_docs(
    path: Union[str, Path],
    vocab: Vocab,
    n_sents: int = 1,
    limit: Optional[int] = None,
) -> List[Doc]:
    """Convert a CoNLL-style NER file to Doc objects with gold entities.

    path (Union[str, Path]): The file to convert (see `read_conll_ner`). Tags may
        be IOB1, IOB2, IO or BILUO.
    vocab (Vocab): The vocab for the docs, e.g. `spacy.blank("en").vocab`.
    n_sents (int): Sentences per doc: 1 for one doc per sentence, N > 1 for up to
        N consecutive sentences of one article per doc (never across an article
        boundary), 0 for one doc per article. Defaults to 1.
    limit (Optional[int]): Stop after this many docs. Defaults to None (no limit).
    RETURNS (List[Doc]): The docs, with `doc.ents` set from the tags (tokens
        outside entities are `O`) and `token.is_sent_start` set on every token.
        Raises ConllFormatError (a ValueError) naming the file and line for
        malformed input, and for a file that is already a spaCy DocBin.
    """
    if n_sents < 0:
        raise ValueError(f"n_sents must be >= 0, got {n_sents}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    articles = _read(path)
    is_biluo = any(tag[0] in "LU" for article in articles for sent in article for tag in sent.tags)
    docs: List[Doc] = []
    for article in articles:
        size = n_sents if n_sents > 0 else len(article)
        for start in range(0, len(article), size):
            if limit is not None and len(docs) >= limit:
                return docs
            group = article[start : start + size]
            words: List[str] = []
            sent_starts: List[bool] = []
            biluo: List[str] = []
            for sent in group:
                words.extend(sent.words)
                sent_starts.extend([True] + [False] * (len(sent.words) - 1))
                biluo.extend(_to_biluo(path, sent, is_biluo))
            spaces = [True] * len(words)
            spaces[-1] = False
            doc = Doc(vocab, words=words, spaces=spaces, sent_starts=sent_starts)
            doc.ents = biluo_tags_to_spans(doc, biluo)
            docs.append(doc)
    return docs


def _sentence_count(docs: Iterable[Doc]) -> int:
    return sum(sum(1 for token in doc if token.is_sent_start) for doc in docs)


def convert(
    input_path: Union[str, Path],
    output_path: Union[str, Path],
    n_sents: int = 1,
    limit: Optional[int] = None,
) -> Tuple[Path, dict]:
    """Convert a CoNLL-style NER file and save it as a `.spacy` DocBin.

    input_path (Union[str, Path]): The CoNLL-style file to convert.
    output_path (Union[str, Path]): The `.spacy` file to write, or an existing
        directory to write `<input stem>.spacy` into. Parent folders are created.
    n_sents (int): Sentences per doc, see `conll_to_docs`. Defaults to 1.
    limit (Optional[int]): Stop after this many docs. Defaults to None.
    RETURNS (Tuple[Path, dict]): The path written and counts: docs, sentences,
        tokens, entities.
    """
    input_path = Path(input_path)
    output_path = Path(output_path)
    docs = conll_to_docs(input_path, spacy.blank("en").vocab, n_sents=n_sents, limit=limit)
    if output_path.is_dir():
        output_path = output_path / f"{input_path.stem}.spacy"
    output_path.parent.mkdir(parents=True, exist_ok=True)
    DocBin(docs=docs, store_user_data=False).to_disk(output_path)
    counts = {
        "docs": len(docs),
        "sentences": _sentence_count(docs),
        "tokens": sum(len(doc) for doc in docs),
        "entities": sum(len(doc.ents) for doc in docs),
    }
    return output_path, counts


app = typer.Typer(add_completion=False)


@app.command()
def main(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="CoNLL-style NER file to convert"),
    output_path: Path = typer.Argument(
        ..., metavar="OUTPUT", help="Output .spacy file, or an existing directory"
    ),
    n_sents: int = typer.Option(
        1,
        "--n-sents",
        "-n",
        min=0,
        help="Sentences per doc: 1 = one doc per sentence, 0 = one doc per article",
    ),
    limit: Optional[int] = typer.Option(
        None, "--limit", min=0, help="Maximum number of docs to write"
    ),
) -> None:
    """Convert a CoNLL-style NER file (WikiGold, CoNLL-2003; IOB1, IOB2, IO or
    BILUO tags) to a spaCy .spacy DocBin."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConllFormatWarning)
        try:
            written, c = convert(input_path, output_path, n_sents=n_sents, limit=limit)
        except (ValueError, OSError) as e:
            error: Optional[Exception] = e
        else:
            error = None
    for w in caught:
        if issubclass(w.category, ConllFormatWarning):
            msg.warn(str(w.message))
        else:  # someone else's warning: show it as Python would have
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if isinstance(error, ValueError):
        fail(error)
    if error is not None:
        msg.fail(f"Cannot convert {input_path} to {output_path}: {error}", exits=1)
    msg.good(
        f"Saved {c['docs']:,} docs ({c['sentences']:,} sentences, {c['tokens']:,} "
        f"tokens, {c['entities']:,} entities) to {written}"
    )


if __name__ == "__main__":
    app()
