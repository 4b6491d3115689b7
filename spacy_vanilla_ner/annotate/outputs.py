"""Outputs of `annotate`: checking OUTPUT and writing output rows as JSONL or
Parquet, to one file or to shards in a directory."""

import json
import os
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from .inputs import AnnotateError, InputFile, is_data_file, lines

__all__ = [
    "OutputSpec",
    "RowWriter",
    "ShardWriter",
    "count_output",
    "open_writer",
    "output_schema",
    "output_spec",
]

OUTPUT_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
PARQUET_ROW_GROUP = 10_000


class OutputSpec(NamedTuple):
    path: Path
    format: str  # "jsonl" or "parquet"
    is_dir: bool


def output_spec(
    output: Path, output_format: Optional[str], inputs: Sequence[InputFile]
) -> OutputSpec:
    """Check OUTPUT: a `.jsonl`/`.json` or `.parquet` file (replaced if it exists),
    or a directory for shards (new or empty) in `output_format` (default Parquet)."""
    suffix = output.suffix.lower()
    if output.is_dir() or not suffix:
        if output.is_dir() and any(output.iterdir()):
            raise AnnotateError(f"{output}: the output directory is not empty")
        return OutputSpec(output, output_format or "parquet", True)
    fmt = OUTPUT_SUFFIXES.get(suffix)
    if fmt is None:
        raise AnnotateError(
            f"{output}: cannot write {suffix!r} files; use .jsonl, .json or .parquet, or a "
            f"directory for shards"
        )
    if output_format is not None and output_format != fmt:
        raise AnnotateError(f"{output}: --output-format {output_format} disagrees with {suffix}")
    if any(os.path.abspath(output) == f.path for f in inputs):
        raise AnnotateError(f"{output}: the output file is also an input file")
    return OutputSpec(output, fmt, False)


def output_schema() -> Any:
    import pyarrow as pa

    entity = pa.struct(
        [
            ("start_char", pa.int64()),
            ("end_char", pa.int64()),
            ("label", pa.string()),
            ("text", pa.string()),
        ]
    )
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("entities", pa.list_(entity), nullable=False),
            pa.field("error", pa.string()),
        ]
    )


def json_line(row: Dict[str, Any]) -> bytes:
    return (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")


class RowWriter:
    """Writes output rows to one file, under a temporary name until `close(ok=True)`
    renames it (so a crashed run never leaves a partial file that looks complete)."""

    def __init__(self, path: Path, fmt: str):
        self.path = Path(path)
        self.format = fmt
        self.rows = 0
        self.errors = 0
        self.files = [self.path]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._buffer: List[Dict[str, Any]] = []
        if fmt == "parquet":
            import pyarrow.parquet as pq

            self._schema = output_schema()
            self._parquet: Any = pq.ParquetWriter(str(self._tmp), self._schema)
        else:
            self._file = open(self._tmp, "wb")  # noqa: SIM115

    def write(self, row: Dict[str, Any]) -> None:
        self.rows += 1
        self.errors += row["error"] is not None
        if self.format == "jsonl":
            self._file.write(json_line(row))
            return
        self._buffer.append(row)
        if len(self._buffer) >= PARQUET_ROW_GROUP:
            self._flush()

    def write_table(self, table: Any) -> None:
        """Write a pyarrow Table of output rows (the Ray engine's blocks)."""
        if self.format == "jsonl":
            for row in table.to_pylist():
                self.write(row)
            return
        self._flush()
        self.rows += table.num_rows
        self.errors += table.num_rows - table.column("error").null_count
        self._parquet.write_table(table.cast(self._schema))

    def _flush(self) -> None:
        if self._buffer:
            import pyarrow as pa

            self._parquet.write_table(pa.Table.from_pylist(self._buffer, schema=self._schema))
            self._buffer = []

    def close(self, ok: bool = True) -> None:
        if self.format == "parquet":
            if ok:
                self._flush()
            self._parquet.close()
        else:
            self._file.close()
        if ok:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)


class ShardWriter:
    """Writes output rows to `part-00000.<format>`, ... in a directory, `rows_per_file`
    rows each."""

    def __init__(self, directory: Path, fmt: str, rows_per_file: int):
        self.directory = Path(directory)
        self.format = fmt
        self.rows_per_file = rows_per_file
        self.rows = 0
        self.errors = 0
        self.files: List[Path] = []
        self._current: Optional[RowWriter] = None

    def write(self, row: Dict[str, Any]) -> None:
        if self._current is None or self._current.rows >= self.rows_per_file:
            self._close_current(True)
            ext = "jsonl" if self.format == "jsonl" else "parquet"
            path = self.directory / f"part-{len(self.files):05d}.{ext}"
            self._current = RowWriter(path, self.format)
            self.files.append(path)
        self._current.write(row)
        self.rows += 1
        self.errors += row["error"] is not None

    def _close_current(self, ok: bool) -> None:
        if self._current is not None:
            self._current.close(ok)
            self._current = None

    def close(self, ok: bool = True) -> None:
        self._close_current(ok)
        if not ok:
            for path in self.files:
                path.unlink(missing_ok=True)
        elif not self.files:
            self.directory.mkdir(parents=True, exist_ok=True)


def open_writer(spec: OutputSpec, rows_per_file: int) -> Any:
    if spec.is_dir:
        return ShardWriter(spec.path, spec.format, rows_per_file)
    return RowWriter(spec.path, spec.format)


def count_output(directory: Path) -> Tuple[int, int, List[Path]]:
    """Rows and error rows in a directory of output shards (JSONL or Parquet)."""
    rows = errors = 0
    files = sorted(p for p in Path(directory).rglob("*") if is_data_file(str(p)))
    for path in files:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            column = pq.read_table(path, columns=["error"]).column("error")
            rows += len(column)
            errors += len(column) - column.null_count
        else:
            with open(path, "rb") as f:
                for line in lines(f):
                    if line.strip():
                        rows += 1
                        errors += json.loads(line).get("error") is not None
    return rows, errors, files
