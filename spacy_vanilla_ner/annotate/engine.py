"""`annotate()`: check everything that can be checked up front, then run the local
engine (`nlp.pipe` with `n_process`) or the Ray engine (`ray_engine.run_ray`)."""

import time
from pathlib import Path
from typing import Any, Dict, Optional, Union

from .core import annotate_rows
from .inputs import AnnotateError, find_inputs, iter_rows
from .outputs import open_writer, output_spec

__all__ = ["ENGINES", "RAY_INSTALL", "annotate", "require_ray", "run_local"]

ENGINES = ("local", "ray")
RAY_INSTALL = "pip install 'spacy-vanilla-ner[ray]'"


def require_ray() -> None:
    """Raise AnnotateError with the install line unless Ray Data and pyarrow import."""
    try:
        import pyarrow  # noqa: F401
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as e:
        raise AnnotateError(
            f"--engine ray needs Ray Data and pyarrow ({e}); install them with: {RAY_INSTALL}"
        ) from None


def _require_pyarrow(why: str) -> None:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise AnnotateError(f"{why} needs pyarrow; install it with: {RAY_INSTALL}") from None


def _load(model: str, use_gpu: bool) -> Any:
    import spacy

    import spacy_vanilla_ner  # noqa: F401  (registers the factories without entry points)

    if use_gpu:
        try:
            spacy.require_gpu(0)
        except Exception as e:
            raise AnnotateError(f"--gpus-per-worker > 0 but no usable GPU: {e}") from None
    try:
        return spacy.load(model)
    except Exception as e:
        raise AnnotateError(f"cannot load the pipeline {model!r}: {e}") from None


def _check_model_exists(model: str) -> None:
    from spacy.util import is_package

    if not Path(model).exists() and not is_package(model):
        raise AnnotateError(
            f"pipeline {model!r} not found: not a directory here and not an installed "
            f"package (on a cluster it must be a path every node can read, e.g. inside "
            f"--working-dir, or a package installed on every node)"
        )
    if Path(model).exists() and not (Path(model) / "config.cfg").is_file():
        raise AnnotateError(f"{model}: not a saved spaCy pipeline (no config.cfg)")


def run_local(
    nlp: Any,
    files: Any,
    output: Any,
    *,
    workers: int,
    batch_size: int,
    text_key: str,
    id_key: str,
    max_chars: Optional[int],
    rows_per_file: int,
    progress: bool,
) -> Dict[str, Any]:
    """Annotate on this machine, streaming: rows are read, annotated and written as
    they go, in input order. RETURNS (Dict[str, Any]): counts and timings."""
    from tqdm import tqdm

    if workers > 1:
        # One torch thread in each forked worker (spaCy#6662). The encoder registers
        # this hook on its first forward pass, but loading the pipeline has already
        # run parallel torch ops here, and a worker forked after them hangs in its
        # first one unless the hook is in place before `nlp.pipe` forks.
        from spacy_vanilla_ner.models.windowing import register_fork_hook

        register_fork_hook()
    writer = open_writer(output, rows_per_file)
    stats: Dict[str, Any] = {"first_output_seconds": None}
    ok = False
    t0 = time.perf_counter()
    try:
        rows = iter_rows(files, text_key, id_key)
        out = annotate_rows(
            nlp, rows, batch_size=batch_size, n_process=workers, max_chars=max_chars
        )
        with tqdm(out, unit="docs", disable=not progress, mininterval=1.0) as bar:
            for row in bar:
                if stats["first_output_seconds"] is None:
                    stats["first_output_seconds"] = time.perf_counter() - t0
                    stats["first_output_rows"] = 1
                writer.write(row)
        ok = True
    finally:
        writer.close(ok)
    stats["seconds"] = time.perf_counter() - t0
    stats.update(rows=writer.rows, errors=writer.errors, files=len(writer.files))
    return stats


def annotate(
    model: str,
    input_path: Union[str, Path],
    output_path: Union[str, Path],
    *,
    engine: str = "local",
    workers: int = 1,
    gpus_per_worker: float = 0.0,
    batch_size: int = 256,
    text_key: str = "text",
    id_key: str = "id",
    address: Optional[str] = None,
    max_chars: Optional[int] = None,
    output_format: Optional[str] = None,
    rows_per_file: int = 100_000,
    preserve_order: bool = False,
    progress: bool = True,
) -> Dict[str, Any]:
    """Annotate every row of INPUT with a pipeline's entities and write them to OUTPUT.

    model (str): A pipeline directory or an installed pipeline package.
    input_path (Union[str, Path]): A JSONL / Parquet / `.txt` file, a directory of
        them or a glob (see `io.find_inputs`).
    output_path (Union[str, Path]): A `.jsonl`/`.json` or `.parquet` file, or a
        directory for shards.
    engine (str): "local" (`nlp.pipe` with `n_process=workers`) or "ray" (Ray Data,
        `workers` actors).
    workers (int): Processes (local) or actors (ray).
    gpus_per_worker (float): GPUs per Ray actor, fractions allowed; on the local
        engine any value > 0 runs the one worker on GPU 0.
    batch_size (int): Texts per `nlp.pipe` batch and rows per Ray batch.
    text_key, id_key (str): The fields (columns) with the text and the id.
    address (Optional[str]): A Ray cluster to join (else $RAY_ADDRESS, else a local
        Ray).
    max_chars (Optional[int]): Longer texts get an error row instead of entities.
        Defaults to the pipeline's `nlp.max_length` (spaCy's default: 1,000,000).
    output_format (Optional[str]): "jsonl" or "parquet" for a directory OUTPUT
        (default parquet); must agree with a file OUTPUT's suffix.
    rows_per_file (int): Rows per shard for a directory OUTPUT (a minimum on Ray).
    preserve_order (bool): Ray only: keep input order (the local engine always does).
    progress (bool): Show a progress bar (local) / Ray's progress bars.
    RETURNS (Dict[str, Any]): rows, errors, files written, and timings in seconds:
        `load_seconds` (pipeline load, local) or `ray_init_seconds` (ray),
        `first_output_seconds` and `seconds` (from the start of the run).
    """
    if engine not in ENGINES:
        raise AnnotateError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "ray":
        require_ray()  # before reading anything
    if workers < 1 or batch_size < 1 or rows_per_file < 1:
        raise AnnotateError("--workers, --batch-size and --rows-per-file must be >= 1")
    if gpus_per_worker < 0:
        raise AnnotateError(f"--gpus-per-worker must be >= 0, got {gpus_per_worker}")
    if engine == "local" and gpus_per_worker > 0 and workers > 1:
        raise AnnotateError(
            "the local engine runs one worker on a GPU; use --engine ray for several GPU workers"
        )
    if max_chars is not None and max_chars < 0:
        raise AnnotateError(f"--max-chars must be >= 0, got {max_chars}")
    if output_format not in (None, "jsonl", "parquet"):
        raise AnnotateError(f"--output-format must be jsonl or parquet, got {output_format!r}")
    files = find_inputs(str(input_path))
    output = output_spec(Path(output_path), output_format, files)
    if output.format == "parquet" or any(f.format == "parquet" for f in files):
        _require_pyarrow("reading or writing Parquet")
    if engine == "ray":
        from .ray_engine import run_ray

        _check_model_exists(model)
        stats = run_ray(
            model,
            files,
            output,
            workers=workers,
            gpus_per_worker=gpus_per_worker,
            batch_size=batch_size,
            text_key=text_key,
            id_key=id_key,
            address=address,
            max_chars=max_chars,
            rows_per_file=rows_per_file,
            preserve_order=preserve_order,
            progress=progress,
        )
    else:
        t0 = time.perf_counter()
        nlp = _load(model, gpus_per_worker > 0)
        load_seconds = time.perf_counter() - t0
        stats = run_local(
            nlp,
            files,
            output,
            workers=workers,
            batch_size=batch_size,
            text_key=text_key,
            id_key=id_key,
            max_chars=max_chars,
            rows_per_file=rows_per_file,
            progress=progress,
        )
        stats["load_seconds"] = load_seconds
    stats.update(engine=engine, workers=workers, output=str(output.path), inputs=len(files))
    return stats
