"""The Ray engine of `annotate`: read with Ray Data, annotate in a pool of actors that
each load the pipeline themselves, write with Ray Data (or stream to one file).

Imported only for `--engine ray`, after `require_ray()` has checked that Ray is
installed: this module imports Ray at the top.
"""

import os
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence

import pyarrow as pa
import ray
from ray.data import ActorPoolStrategy
from ray.data.datasource import FileBasedDatasource

from .core import annotate_batch
from .inputs import InputFile, count_rows, read_file_rows
from .outputs import OutputSpec, RowWriter, count_output, output_schema

__all__ = ["RowsDatasource", "NerActor", "run_ray", "start_ray"]

# An actor that dies (killed, out of memory, a crash in native code) is restarted
# up to this many times, and the batch it was working on is retried on it.
MAX_RESTARTS = 3
MAX_TASK_RETRIES = 3
# Object store of a Ray started here (not of a cluster joined with --address). Ray
# Data streams with backpressure, so this bounds memory, not the corpus size.
LOCAL_OBJECT_STORE_BYTES = 512 * 1024**2
INPUT_BLOCK_ROWS = 1024
# Ray Data's blocks while annotating (its default is 128 MiB, hundreds of thousands of
# short texts). Small blocks: an actor that dies loses one block of work, the work
# spreads evenly over the actors to the end, and the first rows come out early. An
# actor still gets at least --batch-size rows per call (Ray bundles small blocks).
BLOCK_BYTES = 256 * 1024
# Test hook (documented in docs/scale-out.md): when set to a file path, the first
# actor to take a batch creates that file and exits hard, once, to prove that a
# dead actor is restarted and its batch retried.
CRASH_ONCE_ENV = "SPACY_VANILLA_NER_CRASH_ONCE"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def input_schema() -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("text", pa.string()),
            pa.field("error", pa.string()),
        ]
    )


class RowsDatasource(FileBasedDatasource):
    """JSONL, `.txt` and Parquet files as rows `id`, `text`, `error`, read by the
    same code as the local engine, one streaming read per file.

    Ray's own `read_json` / `read_text` / `read_parquet` cannot be used as they
    are: they fail a whole file on one malformed line, infer a column type from
    the data (a number where the text should be breaks the file), read `.txt`
    files whole, and do not give row numbers, which a row without an id needs.
    """

    def __init__(
        self,
        files: Sequence[InputFile],
        offsets: Dict[str, int],
        text_key: str,
        id_key: str,
    ):
        super().__init__([f.path for f in files])
        self._formats = {f.path: f.format for f in files}
        self._offsets = dict(offsets)
        self._text_key = text_key
        self._id_key = id_key

    def _format(self, path: str) -> str:
        return self._formats.get(path) or self._formats[os.path.abspath(path)]

    def _open_input_source(self, filesystem: Any, path: str, **open_args: Any) -> Any:
        if self._format(path) == "parquet":  # the footer needs random access
            return filesystem.open_input_file(path)
        return super()._open_input_source(filesystem, path, **open_args)

    def _read_stream(self, f: Any, path: str) -> Iterator[pa.Table]:
        offset = self._offsets.get(path, self._offsets.get(os.path.abspath(path), 0))
        rows = read_file_rows(f, self._format(path), path, self._text_key, self._id_key)
        columns: Dict[str, List[Any]] = {"id": [], "text": [], "error": []}
        for index, id_, text, error in rows:
            columns["id"].append(id_ if id_ is not None else str(offset + index))
            columns["text"].append(text)
            columns["error"].append(error)
            if len(columns["id"]) >= INPUT_BLOCK_ROWS:
                yield pa.Table.from_pydict(columns, schema=input_schema())
                columns = {"id": [], "text": [], "error": []}
        if columns["id"]:
            yield pa.Table.from_pydict(columns, schema=input_schema())


def _claim_once(marker: str) -> bool:
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


class NerActor:
    """One Ray actor: loads the pipeline in its own process (a pipeline sent through
    the object store fails with "buffer source array is read-only", spaCy#13506)
    and annotates batches with `annotate_batch`, on one torch thread."""

    def __init__(
        self,
        model: str,
        batch_size: int,
        max_chars: Optional[int],
        use_gpu: bool = False,
        crash_once: Optional[str] = None,
    ):
        import spacy
        import torch

        import spacy_vanilla_ner  # noqa: F401  (registers the factories without entry points)

        torch.set_num_threads(1)
        if use_gpu:
            spacy.require_gpu(0)  # Ray sets CUDA_VISIBLE_DEVICES to this actor's GPU
        self.nlp = spacy.load(model)
        self.batch_size = batch_size
        self.max_chars = max_chars
        self.crash_once = crash_once

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.crash_once and _claim_once(self.crash_once):
            os._exit(1)  # test hook, see CRASH_ONCE_ENV
        out = annotate_batch(
            self.nlp, batch.to_pydict(), batch_size=self.batch_size, max_chars=self.max_chars
        )
        return pa.Table.from_pydict(out, schema=output_schema())


def start_ray(address: Optional[str], workers: int) -> bool:
    """Connect to Ray: the cluster at `address` (or $RAY_ADDRESS, as `ray job submit`
    sets it), else a local Ray with a capped object store. RETURNS: whether Ray was
    started here (and should be shut down after the run)."""
    if ray.is_initialized():
        return False
    if address is None and "RAY_ADDRESS" not in os.environ:
        # A busy machine can take more than Ray's default 30 s to start its agents.
        os.environ.setdefault("RAY_agent_register_timeout_ms", "120000")
        ray.init(
            # Logical CPUs: one per actor plus one for the read tasks, so that
            # `--workers` equal to the core count cannot starve the reads.
            num_cpus=max(os.cpu_count() or 1, workers + 1),
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            include_dashboard=False,
        )
    else:
        ray.init(address=address)
    return True


def run_ray(
    model: str,
    files: Sequence[InputFile],
    output: OutputSpec,
    *,
    workers: int,
    gpus_per_worker: float,
    batch_size: int,
    text_key: str,
    id_key: str,
    address: Optional[str],
    max_chars: Optional[int],
    rows_per_file: int,
    preserve_order: bool,
    progress: bool = True,
) -> Dict[str, Any]:
    """Run the annotation on Ray. RETURNS (Dict[str, Any]): counts and timings."""
    t0 = time.perf_counter()
    started = start_ray(address, workers)
    ray_init_seconds = time.perf_counter() - t0
    offsets: Dict[str, int] = {}
    if len(files) > 1:  # rows are numbered across files: count the rows before each
        total = 0
        for file in files:
            offsets[file.path] = total
            total += count_rows(file)
    context = ray.data.DataContext.get_current()
    old = (
        context.execution_options.preserve_order,
        context.enable_progress_bars,
        context.target_max_block_size,
    )
    context.execution_options.preserve_order = preserve_order
    context.enable_progress_bars = progress
    context.target_max_block_size = BLOCK_BYTES
    stats: Dict[str, Any] = {"ray_init_seconds": ray_init_seconds, "first_output_seconds": None}
    try:
        t1 = time.perf_counter()
        ds = ray.data.read_datasource(RowsDatasource(files, offsets, text_key, id_key))
        ds = ds.map_batches(
            NerActor,
            fn_constructor_kwargs={
                "model": model,
                "batch_size": batch_size,
                "max_chars": max_chars,
                "use_gpu": gpus_per_worker > 0,
                "crash_once": os.environ.get(CRASH_ONCE_ENV) or None,
            },
            compute=ActorPoolStrategy(size=workers),
            batch_size=batch_size,
            batch_format="pyarrow",
            num_cpus=1,
            num_gpus=gpus_per_worker or None,
            max_restarts=MAX_RESTARTS,
            max_task_retries=MAX_TASK_RETRIES,
            runtime_env={"env_vars": ONE_THREAD},
        )
        if output.is_dir:
            if output.format == "parquet":
                ds.write_parquet(str(output.path), min_rows_per_file=rows_per_file)
            else:
                ds.write_json(str(output.path), min_rows_per_file=rows_per_file, force_ascii=False)
            rows, errors, written = count_output(output.path)
            stats.update(rows=rows, errors=errors, files=len(written))
        else:
            writer = RowWriter(output.path, output.format)
            ok = False
            try:
                for table in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                    if stats["first_output_seconds"] is None:
                        stats["first_output_seconds"] = time.perf_counter() - t1
                        stats["first_output_rows"] = table.num_rows
                    writer.write_table(table)
                ok = True
            finally:
                writer.close(ok)
            stats.update(rows=writer.rows, errors=writer.errors, files=1)
        stats["seconds"] = time.perf_counter() - t1
    finally:
        (
            context.execution_options.preserve_order,
            context.enable_progress_bars,
            context.target_max_block_size,
        ) = old
        if started:
            ray.shutdown()
    return stats
