"""Inputs of `annotate`: finding the input files and reading their rows, with row
numbers, from JSONL, `.txt` and Parquet.

The row readers take a binary file object, so that the local engine (a plain
`open`) and the Ray read tasks (an Arrow stream) share them.
"""

import glob
import gzip
import json
import os
from typing import IO, Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from .core import Row, check_text, json_type

__all__ = [
    "AnnotateError",
    "InputFile",
    "count_rows",
    "find_inputs",
    "is_data_file",
    "iter_rows",
    "lines",
    "normalize_id",
    "read_file_rows",
]

# Suffix (after an optional .gz for the line formats) -> format.
INPUT_SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",  # JSON Lines, as Ray's write_json writes them
    ".txt": "txt",
    ".parquet": "parquet",
}
READ_CHUNK = 1 << 20


class AnnotateError(ValueError):
    """A problem with the command's inputs, outputs or options; the message says which."""


class InputFile(NamedTuple):
    path: str  # absolute
    format: str  # "jsonl", "txt" or "parquet"
    gzip: bool


def _input_file(path: str) -> Optional[InputFile]:
    name = os.path.basename(path).lower()
    is_gz = name.endswith(".gz")
    stem = name[:-3] if is_gz else name
    fmt = INPUT_SUFFIXES.get(os.path.splitext(stem)[1])
    if fmt is None or (is_gz and fmt == "parquet"):
        return None
    return InputFile(os.path.abspath(path), fmt, is_gz)


def is_data_file(path: str) -> bool:
    # Skip hidden and marker files (.crc, _SUCCESS, _metadata) in output folders.
    return os.path.isfile(path) and not os.path.basename(path).startswith((".", "_"))


def find_inputs(spec: str) -> List[InputFile]:
    """The input files of INPUT, in the order their rows are numbered.

    spec (str): A JSONL (`.jsonl`, `.ndjson`, `.json`), Parquet or `.txt` file; a
        directory (searched recursively); or a glob such as `data/*.jsonl`. The
        line formats may be gzipped (`.jsonl.gz`, `.txt.gz`).
    RETURNS (List[InputFile]): The files, sorted by path for a directory or glob.
    """
    if any(c in spec for c in "*?["):
        paths = sorted(p for p in glob.glob(spec, recursive=True) if is_data_file(p))
        where = f"the pattern {spec!r}"
    elif os.path.isdir(spec):
        paths = sorted(
            os.path.join(root, name)
            for root, dirs, names in os.walk(spec)
            for name in names
            if is_data_file(os.path.join(root, name))
        )
        where = f"the directory {spec}"
    elif os.path.isfile(spec):
        found = _input_file(spec)
        if found is None:
            raise AnnotateError(
                f"{spec}: cannot tell the format from the name; expected .jsonl, .ndjson, "
                f".json (JSON Lines), .txt (one text per line) or .parquet"
            )
        return [found]
    else:
        raise AnnotateError(f"{spec}: no such file or directory")
    files = [f for f in map(_input_file, paths) if f is not None]
    if not files:
        raise AnnotateError(f"no .jsonl, .json, .txt or .parquet files in {where}")
    return files


def normalize_id(value: Any) -> Optional[str]:
    """An input id as the string written to the output (None for a missing id):
    strings as they are, anything else as its JSON text (17 -> "17")."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    except ValueError:  # e.g. a circular structure: cannot happen from JSON or Arrow
        return str(value)


def lines(f: IO[bytes]) -> Iterator[bytes]:
    """The lines of a binary stream without their b"\\n", read in 1 MB chunks (the
    file is never held in memory, only the current line)."""
    partial: List[bytes] = []
    while True:
        chunk = f.read(READ_CHUNK)
        if not chunk:
            break
        parts = chunk.split(b"\n")
        if len(parts) == 1:
            partial.append(chunk)
            continue
        partial.append(parts[0])
        yield b"".join(partial)
        yield from parts[1:-1]
        partial = [parts[-1]] if parts[-1] else []
    if partial:
        yield b"".join(partial)


# (index of the row in its file, id or None, text or None, error or None)
FileRow = Tuple[int, Optional[str], Optional[str], Optional[str]]


def _text_of(obj: Dict[str, Any], text_key: str) -> Tuple[Optional[str], Optional[str]]:
    if text_key not in obj:
        return None, f"no {text_key!r} field"
    return check_text(obj[text_key])


def _jsonl_rows(f: IO[bytes], where: str, text_key: str, id_key: str) -> Iterator[FileRow]:
    for i, raw in enumerate(lines(f)):
        line = raw[3:] if i == 0 and raw.startswith(b"\xef\xbb\xbf") else raw  # BOM
        if not line.strip():
            continue  # a blank line is not a row (its number is skipped)
        try:
            obj = json.loads(line)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
            reason = e.msg if isinstance(e, json.JSONDecodeError) else "not valid UTF-8"
            yield i, None, None, f"malformed JSON line at {where}:{i + 1}: {reason}"
            continue
        if not isinstance(obj, dict):
            error = f"{where}:{i + 1}: expected a JSON object, got {json_type(obj)}"
            yield i, None, None, error
            continue
        text, error = _text_of(obj, text_key)
        yield i, normalize_id(obj.get(id_key)), text, error


def _txt_rows(f: IO[bytes], where: str) -> Iterator[FileRow]:
    for i, raw in enumerate(lines(f)):
        line = raw[3:] if i == 0 and raw.startswith(b"\xef\xbb\xbf") else raw
        try:
            yield i, None, line.decode("utf-8").removesuffix("\r"), None
        except UnicodeDecodeError as e:
            yield i, None, None, f"line {where}:{i + 1} is not valid UTF-8 (byte {e.start})"


def _parquet_rows(f: Any, where: str, text_key: str, id_key: str) -> Iterator[FileRow]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(f)
    names = set(pf.schema_arrow.names)
    columns = [c for c in (text_key, id_key) if c in names]
    if not columns:
        for i in range(pf.metadata.num_rows):
            yield i, None, None, f"no {text_key!r} column in {where}"
        return
    i = 0
    for batch in pf.iter_batches(batch_size=4096, columns=columns):
        data = batch.to_pydict()
        n = batch.num_rows
        ids = data.get(id_key, [None] * n)
        texts = data.get(text_key)
        for j in range(n):
            if texts is None:
                text, error = None, f"no {text_key!r} column in {where}"
            else:
                text, error = check_text(texts[j])
            yield i, normalize_id(ids[j]), text, error
            i += 1


def read_file_rows(
    f: IO[bytes], fmt: str, where: str, text_key: str, id_key: str
) -> Iterator[FileRow]:
    """The rows of one open input file (binary; random access for Parquet).

    where (str): The file's name in error messages (`where:line`).
    RETURNS (Iterator[FileRow]): `(index, id, text, error)` per row. `index` is the
        0-based line number for the line formats (blank JSONL lines are skipped, so
        their numbers never appear) and the row index for Parquet.
    """
    if fmt == "jsonl":
        return _jsonl_rows(f, where, text_key, id_key)
    if fmt == "txt":
        return _txt_rows(f, where)
    if fmt == "parquet":
        return _parquet_rows(f, where, text_key, id_key)
    raise ValueError(f"unknown input format {fmt!r}")


def open_input(file: InputFile) -> IO[bytes]:
    return gzip.open(file.path, "rb") if file.gzip else open(file.path, "rb")  # noqa: SIM115


def count_rows(file: InputFile) -> int:
    """How many row numbers a file takes: its lines (blank ones included) for the
    line formats, its rows for Parquet. Used to number the rows of several files."""
    if file.format == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(file.path).metadata.num_rows
    n, last = 0, b"\n"
    with open_input(file) as f:
        while True:
            chunk = f.read(READ_CHUNK)
            if not chunk:
                break
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def iter_rows(files: Sequence[InputFile], text_key: str, id_key: str) -> Iterator[Row]:
    """All input rows as `(id, text, error)`, a missing id replaced by the row's
    number counted over all files in order."""
    offset = 0
    for k, file in enumerate(files):
        with open_input(file) as f:
            for index, id_, text, error in read_file_rows(
                f, file.format, file.path, text_key, id_key
            ):
                yield (id_ if id_ is not None else str(offset + index)), text, error
        if k + 1 < len(files):
            offset += count_rows(file)
