"""The `python -m spacy_vanilla_ner.annotate` command line (typer, like `convert`)."""

from enum import Enum
from typing import Optional

import typer
from wasabi import msg

from .engine import annotate
from .inputs import AnnotateError

app = typer.Typer(add_completion=False)


class Engine(str, Enum):
    local = "local"
    ray = "ray"


class OutputFormat(str, Enum):
    jsonl = "jsonl"
    parquet = "parquet"


@app.command()
def main(
    model: str = typer.Argument(
        ..., metavar="MODEL", help="Pipeline directory or installed pipeline package"
    ),
    input_path: str = typer.Argument(
        ...,
        metavar="INPUT",
        help="JSONL (.jsonl/.ndjson/.json, .gz allowed), Parquet or .txt (one text per "
        "line) file; or a directory or quoted glob of them",
    ),
    output_path: str = typer.Argument(
        ...,
        metavar="OUTPUT",
        help=".jsonl/.json or .parquet file (replaced if it exists), or a new or empty "
        "directory for shards",
    ),
    engine: Engine = typer.Option(
        Engine.local, "--engine", "-e", help="local: nlp.pipe on this machine; ray: Ray Data"
    ),
    workers: int = typer.Option(
        1, "--workers", "-w", min=1, help="Processes (local: nlp.pipe n_process) or Ray actors"
    ),
    gpus_per_worker: float = typer.Option(
        0.0,
        "--gpus-per-worker",
        min=0.0,
        help="GPUs per Ray actor (0.5: two actors share a GPU); local: > 0 uses GPU 0",
    ),
    batch_size: int = typer.Option(
        256, "--batch-size", "-b", min=1, help="Texts per nlp.pipe batch and per Ray batch"
    ),
    text_key: str = typer.Option("text", "--text-key", help="Field or column with the text"),
    id_key: str = typer.Option(
        "id", "--id-key", help="Field or column with the id (the row number where missing)"
    ),
    address: Optional[str] = typer.Option(
        None,
        "--address",
        help="Ray cluster to join (e.g. auto, ray://host:10001); default: $RAY_ADDRESS if "
        "set (ray job submit sets it), else a local Ray",
    ),
    max_chars: Optional[int] = typer.Option(
        None,
        "--max-chars",
        min=0,
        help="Longer texts get an error row; default: the pipeline's nlp.max_length (1,000,000)",
    ),
    output_format: Optional[OutputFormat] = typer.Option(
        None, "--output-format", help="jsonl or parquet, for a directory OUTPUT (default parquet)"
    ),
    rows_per_file: int = typer.Option(
        100_000, "--rows-per-file", min=1, help="Rows per shard of a directory OUTPUT"
    ),
    preserve_order: bool = typer.Option(
        False,
        "--preserve-order",
        help="Ray: write rows in input order (slower; the local engine always keeps it)",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars"),
) -> None:
    """Annotate a corpus with a pipeline's entities: one output row per input row,
    with its id, entities [{start_char, end_char, label, text}] and error (null, or
    why the row has no entities)."""
    try:
        s = annotate(
            model,
            input_path,
            output_path,
            engine=engine.value,
            workers=workers,
            gpus_per_worker=gpus_per_worker,
            batch_size=batch_size,
            text_key=text_key,
            id_key=id_key,
            address=address,
            max_chars=max_chars,
            output_format=output_format.value if output_format else None,
            rows_per_file=rows_per_file,
            preserve_order=preserve_order,
            progress=progress,
        )
    except AnnotateError as e:
        msg.fail(str(e), exits=1)
    except OSError as e:
        msg.fail(f"Cannot annotate {input_path} to {output_path}: {e}", exits=1)
    seconds = s["seconds"]
    speed = s["rows"] / seconds if seconds > 0 else 0.0
    msg.good(
        f"Wrote {s['rows']:,} rows ({s['errors']:,} with an error) to {s['output']} "
        f"in {seconds:.1f} s ({speed:,.0f} docs/s, engine {s['engine']}, "
        f"{s['workers']} worker{'s' if s['workers'] != 1 else ''})"
    )
