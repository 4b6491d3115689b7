"""The engine-neutral part of `annotate`: rows in, entity rows out.

Both engines call `annotate_rows` (the Ray actors through `annotate_batch`), so the
checks on each text, the entity format and the handling of a failing batch are the
same on one machine and on a cluster.
"""

from collections import deque
from typing import Any, Deque, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from spacy.language import Language
from spacy.tokens import Doc

__all__ = [
    "OUTPUT_COLUMNS",
    "Row",
    "annotate_batch",
    "annotate_rows",
    "check_text",
    "entities_of",
    "json_type",
]

# One row into the engine: (id, text, error). `text` is None when `error` says why.
Row = Tuple[str, Optional[str], Optional[str]]
OUTPUT_COLUMNS = ("id", "entities", "error")


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    if value is None:
        return "null"
    return type(value).__name__


def check_text(value: Any, max_chars: Optional[int] = None) -> Tuple[Optional[str], Optional[str]]:
    """Check one input text.

    value (Any): The value of the text field.
    max_chars (Optional[int]): The longest text to annotate; None for no limit.
    RETURNS (Tuple[Optional[str], Optional[str]]): `(text, None)` for a text to
        annotate (empty and whitespace-only texts included: they have no entities),
        or `(None, message)` for a null, a non-string, a text longer than
        `max_chars` or a string that is not valid Unicode (a lone surrogate, which
        JSON's `\\ud800` escapes can produce).
    """
    if value is None:
        return None, "text is null"
    if not isinstance(value, str):
        return None, f"text is not a string (got {json_type(value)})"
    if max_chars is not None and len(value) > max_chars:
        return None, (
            f"text too long: {len(value):,} characters, more than --max-chars {max_chars:,}"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        return None, f"text is not valid Unicode (lone surrogate at character {e.start})"
    return value, None


def entities_of(doc: Doc) -> List[Dict[str, Any]]:
    """`doc.ents` as `[{start_char, end_char, label, text}]`, offsets into `doc.text`."""
    return [
        {"start_char": e.start_char, "end_char": e.end_char, "label": e.label_, "text": e.text}
        for e in doc.ents
    ]


def _error_row(id_: str, error: str) -> Dict[str, Any]:
    return {"id": id_, "entities": [], "error": error}


def annotate_rows(
    nlp: Language,
    rows: Iterable[Row],
    *,
    batch_size: int = 256,
    n_process: int = 1,
    max_chars: Optional[int] = None,
) -> Iterator[Dict[str, Any]]:
    """Annotate rows with `nlp.pipe`: exactly one output row per input row, in order.

    nlp (Language): The pipeline.
    rows (Iterable[Row]): `(id, text, error)` triples; a row that arrives with an
        error (e.g. a malformed input line) is passed through with no entities.
    batch_size (int): `nlp.pipe`'s batch size.
    n_process (int): `nlp.pipe`'s number of processes.
    max_chars (Optional[int]): Texts longer than this get an error instead of
        entities. Defaults to `nlp.max_length`; a larger value raises
        `nlp.max_length` to match.
    RETURNS (Iterator[Dict[str, Any]]): `{"id", "entities", "error"}` per row.

    Rows that fail `check_text` go through the pipeline as "" (so that the output
    stays in step with the input) and come out with their error. If the pipeline
    raises on a batch, the rows it had taken but not returned are run again one
    at a time in this process: the text that raises gets the exception as its
    error, the others their entities, and the stream then goes on.
    """
    if max_chars is None:
        max_chars = nlp.max_length
    elif max_chars > nlp.max_length:
        nlp.max_length = max_chars
    source = iter(rows)
    pending: Deque[Tuple[str, Optional[str], Optional[str]]] = deque()

    def texts() -> Iterator[str]:
        for id_, text, error in source:
            if error is None:
                text, error = check_text(text, max_chars)
            pending.append((id_, text, error))
            yield "" if error is not None else text  # type: ignore[misc]

    while True:
        try:
            for doc in nlp.pipe(texts(), batch_size=batch_size, n_process=n_process):
                id_, _, error = pending.popleft()
                if error is not None:
                    yield _error_row(id_, error)
                else:
                    yield {"id": id_, "entities": entities_of(doc), "error": None}
            return
        except Exception:
            if not pending:  # not caused by a text: nothing to retry
                raise
        stuck = list(pending)
        pending.clear()
        for id_, text, error in stuck:
            if error is not None:
                yield _error_row(id_, error)
                continue
            try:
                doc = nlp(text)  # type: ignore[arg-type]
            except Exception as e:
                yield _error_row(id_, f"pipeline failed on this text: {type(e).__name__}: {e}")
            else:
                yield {"id": id_, "entities": entities_of(doc), "error": None}


def annotate_batch(
    nlp: Language,
    batch: Mapping[str, Sequence[Any]],
    *,
    batch_size: int = 256,
    max_chars: Optional[int] = None,
) -> Dict[str, List[Any]]:
    """`annotate_rows` on columns, in one process (what a Ray actor runs per batch).

    batch (Mapping[str, Sequence[Any]]): Columns `id`, `text` and `error`.
    RETURNS (Dict[str, List[Any]]): Columns `id`, `entities` and `error`, one value
        per input row, in order.
    """
    rows = zip(batch["id"], batch["text"], batch["error"])
    out: Dict[str, List[Any]] = {name: [] for name in OUTPUT_COLUMNS}
    for row in annotate_rows(nlp, rows, batch_size=batch_size, max_chars=max_chars):
        for name in OUTPUT_COLUMNS:
            out[name].append(row[name])
    return out
