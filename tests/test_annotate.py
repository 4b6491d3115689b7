"""`python -m spacy_vanilla_ner.annotate`: bad rows kept, row counts, input formats,
the CLI, and the Ray engine run for real in local mode (one Ray session for the
module) against the local engine."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
import spacy
from spacy.language import Language
from spacy.tokens import Span
from typer.testing import CliRunner

from spacy_vanilla_ner.annotate import AnnotateError, annotate, annotate_rows, check_text
from spacy_vanilla_ner.annotate.cli import app
from spacy_vanilla_ner.annotate.core import entities_of

HUGE = "x" * (1 << 20)  # a 1 MB text: longer than spaCy's default nlp.max_length


def write_jsonl(path: Path, rows: List[Any]) -> Path:
    """Rows are dicts (written as JSON) or raw strings (written as they are)."""
    with open(path, "w", encoding="utf8") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def read_jsonl(path: Path) -> List[Dict[str, Any]]:
    with open(path, encoding="utf8") as f:
        return [json.loads(line) for line in f]


def read_output(path: Path) -> List[Dict[str, Any]]:
    """Rows of a .jsonl/.parquet file or of a directory of shards, in file order."""
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow not installed")

    files = sorted(p for p in Path(path).rglob("*") if p.is_file()) if path.is_dir() else [path]
    rows: List[Dict[str, Any]] = []
    for file in files:
        rows += pq.read_table(file).to_pylist() if file.suffix == ".parquet" else read_jsonl(file)
    return rows


def bad_rows(good: List[str]) -> List[Any]:
    """Good texts with every kind of bad row between them; line numbers are 1-based."""
    return [
        {"id": "a", "text": good[0]},
        {"id": "missing"},  # 2
        {"id": "null", "text": None},
        {"id": "number", "text": 42},
        {"id": "list", "text": ["a", "b"]},
        {"id": "empty", "text": ""},
        {"id": "blank", "text": " \n\t "},
        {"id": "huge", "text": HUGE},
        '{"id": "broken", "text": "no closing quote}',  # 9: malformed JSON
        "[1, 2, 3]",  # 10: not an object
        "",  # 11: blank line: not a row
        {"text": good[1]},  # 12: no id -> its row number, "11"
        {"id": 7, "text": good[2]},  # a number id -> "7"
        {"id": "surrogate", "text": "bad \ud800 text"},
        {"id": "z", "text": good[3]},
    ]


@pytest.fixture(scope="module")
def texts(dev_texts) -> List[str]:
    return dev_texts[:40]


@pytest.fixture(scope="module")
def nlp(trained_path) -> Language:
    return spacy.load(trained_path)


@pytest.fixture(scope="module")
def bad_jsonl(tmp_path_factory, texts) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("bad") / "bad.jsonl", bad_rows(texts))


@pytest.fixture(scope="module")
def local_bad_output(trained_path, bad_jsonl, tmp_path_factory) -> List[Dict[str, Any]]:
    out = tmp_path_factory.mktemp("local") / "out.jsonl"
    stats = annotate(str(trained_path), bad_jsonl, out, progress=False)
    rows = read_jsonl(out)
    assert stats["rows"] == len(rows)
    return rows


# The engine-neutral part ----------------------------------------------------------


@pytest.mark.parametrize(
    "value,error",
    [
        (None, "text is null"),
        (42, "not a string (got number)"),
        (True, "not a string (got boolean)"),
        ({"a": 1}, "not a string (got object)"),
        ("abcd", "too long: 4 characters, more than --max-chars 3"),
        ("a\ud800", "lone surrogate at character 1"),
    ],
)
def test_check_text_errors(value, error):
    text, message = check_text(value, max_chars=3)
    assert text is None and error in message


@pytest.mark.parametrize("value", ["", "  \n", "abc", "😀 ok"])
def test_check_text_accepts_empty_and_unicode(value):
    assert check_text(value) == (value, None)


@Language.component("first_token_org_or_boom")
def first_token_org_or_boom(doc):
    """Marks the first token as an ORG; raises on a text with BOOM."""
    if "BOOM" in doc.text:
        raise RuntimeError("boom")
    doc.ents = [Span(doc, 0, 1, label="ORG")]
    return doc


def test_failing_text_gets_error_and_the_stream_goes_on():
    nlp = spacy.blank("en")
    nlp.add_pipe("first_token_org_or_boom")
    rows = [(str(i), f"Acme {'BOOM' if i == 5 else 'ok'} {i}", None) for i in range(12)]
    out = list(annotate_rows(nlp, rows, batch_size=4))
    assert [r["id"] for r in out] == [str(i) for i in range(12)]
    assert out[5]["error"] == "pipeline failed on this text: RuntimeError: boom"
    assert out[5]["entities"] == []
    for r in out[:5] + out[6:]:
        assert r["error"] is None
        assert r["entities"] == [{"start_char": 0, "end_char": 4, "label": "ORG", "text": "Acme"}]


# The local engine -------------------------------------------------------------------


def test_bad_rows_are_kept_with_an_error(local_bad_output, bad_jsonl, texts):
    rows = {r["id"]: r for r in local_bad_output}
    assert len(local_bad_output) == 14  # 15 lines, one blank
    assert [r["id"] for r in local_bad_output] == [
        "a", "missing", "null", "number", "list", "empty", "blank", "huge",
        "8", "9", "11", "7", "surrogate", "z",
    ]  # fmt: skip
    for id_, error in [
        ("missing", "no 'text' field"),
        ("null", "text is null"),
        ("number", "text is not a string (got number)"),
        ("list", "text is not a string (got array)"),
        ("huge", "text too long: 1,048,576 characters, more than --max-chars 1,000,000"),
        ("8", f"malformed JSON line at {bad_jsonl}:9: "),
        ("9", f"{bad_jsonl}:10: expected a JSON object, got array"),
        ("surrogate", "text is not valid Unicode (lone surrogate at character 4)"),
    ]:
        assert error in rows[id_]["error"], id_
        assert rows[id_]["entities"] == []
    for id_ in ("empty", "blank"):
        assert rows[id_] == {"id": id_, "entities": [], "error": None}


def test_local_workers_keep_order_in_a_fresh_process(
    trained_path, bad_jsonl, local_bad_output, tmp_path
):
    # A fresh process, as a user runs it: `spacy.load` there has run parallel torch ops
    # before `nlp.pipe(n_process=2)` forks, which hangs a worker without the fork hook.
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "spacy_vanilla_ner.annotate", str(trained_path), str(bad_jsonl)]
    cmd += [str(out), "--workers", "2", "--batch-size", "3", "--no-progress"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_jsonl(out) == local_bad_output


def test_entities_are_those_of_nlp(local_bad_output, nlp, texts):
    rows = {r["id"]: r for r in local_bad_output}
    expected = [entities_of(doc) for doc in nlp.pipe(texts[:4])]
    assert [rows[i]["entities"] for i in ("a", "11", "7", "z")] == expected
    assert sum(len(e) for e in expected) > 0  # the trained fixture finds entities


def test_max_chars_lets_a_long_text_through(trained_path, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": "Paris " * 2000}])
    out = tmp_path / "out.jsonl"
    annotate(str(trained_path), path, out, max_chars=5000, progress=False)
    assert "more than --max-chars 5,000" in read_jsonl(out)[0]["error"]
    annotate(str(trained_path), path, out, max_chars=20_000, progress=False)
    assert read_jsonl(out)[0]["error"] is None


def test_formats_directory_and_row_numbers(trained_path, tmp_path, texts):
    pa = pytest.importorskip("pyarrow", reason="pyarrow not installed")
    import pyarrow.parquet as pq

    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    write_jsonl(data / "a.jsonl", [{"text": t} for t in texts[:3]])  # rows 0-2
    (data / "b.txt").write_text("\n".join(texts[3:5]) + "\n\n", encoding="utf8")  # 3-5
    pq.write_table(pa.table({"text": texts[6:8], "n": [1, 2]}), data / "sub" / "c.parquet")
    (data / "_SUCCESS").write_text("")  # marker files are skipped
    out = tmp_path / "out"
    stats = annotate(
        str(trained_path), data, out, output_format="jsonl", rows_per_file=4, progress=False
    )
    assert stats["rows"] == 8 and stats["files"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.jsonl", "part-00001.jsonl"]
    rows = read_output(out)
    assert [r["id"] for r in rows] == ["0", "1", "2", "3", "4", "5", "6", "7"]
    assert rows[5] == {"id": "5", "entities": [], "error": None}  # the empty .txt line
    # The same rows from a glob, to a Parquet file.
    out_parquet = tmp_path / "out.parquet"
    annotate(str(trained_path), str(data / "**" / "*.*"), out_parquet, progress=False)
    assert pq.read_table(out_parquet).to_pylist() == rows
    assert pq.read_schema(out_parquet).field("entities").type.value_type.names == [
        "start_char", "end_char", "label", "text",
    ]  # fmt: skip


def test_gzip_crlf_bom_and_bad_utf8_lines(trained_path, tmp_path, texts):
    import gzip

    raw = b"\xef\xbb\xbf" + texts[0].encode() + b"\r\n\xff\xfe bad\r\n" + texts[1].encode()
    with gzip.open(tmp_path / "in.txt.gz", "wb") as f:
        f.write(raw)  # no newline at the end: the last line is still a row
    out = tmp_path / "out.jsonl"
    annotate(str(trained_path), tmp_path / "in.txt.gz", out, progress=False)
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["0", "1", "2"]
    assert rows[1]["error"] == f"line {tmp_path}/in.txt.gz:2 is not valid UTF-8 (byte 0)"
    by_text = read_jsonl(write_and_annotate(trained_path, tmp_path, texts[:2]))
    assert [rows[0]["entities"], rows[2]["entities"]] == [r["entities"] for r in by_text]


def write_and_annotate(trained_path: Path, tmp_path: Path, texts: List[str]) -> Path:
    path = write_jsonl(tmp_path / "plain.jsonl", [{"text": t} for t in texts])
    annotate(str(trained_path), path, tmp_path / "plain.out.jsonl", progress=False)
    return tmp_path / "plain.out.jsonl"


def test_parquet_input_with_ids_and_missing_text_column(trained_path, tmp_path, texts):
    pa = pytest.importorskip("pyarrow", reason="pyarrow not installed")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"doc": [10, 11], "body": texts[:2]}), tmp_path / "in.parquet")
    out = tmp_path / "out.jsonl"
    annotate(
        str(trained_path), tmp_path / "in.parquet", out, text_key="body", id_key="doc",
        progress=False,
    )  # fmt: skip
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["10", "11"] and rows[0]["error"] is None
    annotate(str(trained_path), tmp_path / "in.parquet", out, progress=False)
    assert [r["error"] for r in read_jsonl(out)] == [
        f"no 'text' column in {tmp_path}/in.parquet"
    ] * 2


@pytest.mark.parametrize(
    "input_name,output_name,message",
    [
        ("in.csv", "out.jsonl", "cannot tell the format"),
        ("nope.jsonl", "out.jsonl", "no such file or directory"),
        ("empty", "out.jsonl", "no .jsonl, .json, .txt or .parquet files"),
        ("in.jsonl", "out.csv", "cannot write '.csv' files"),
        ("in.jsonl", "in.jsonl", "the output file is also an input file"),
        ("in.jsonl", "full", "the output directory is not empty"),
    ],
)
def test_bad_paths_fail_before_loading_the_model(tmp_path, input_name, output_name, message):
    write_jsonl(tmp_path / "in.jsonl", [{"text": "a"}])
    (tmp_path / "in.csv").write_text("text\na\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.jsonl").write_text("")
    with pytest.raises(AnnotateError, match=message):
        annotate("no-such-model", tmp_path / input_name, tmp_path / output_name)


def test_cli(trained_path, tmp_path, texts):
    pytest.importorskip("pyarrow", reason="pyarrow not installed")
    write_jsonl(tmp_path / "in.jsonl", [{"id": i, "text": t} for i, t in enumerate(texts[:5])])
    runner = CliRunner()
    args = [str(trained_path), str(tmp_path / "in.jsonl"), str(tmp_path / "out.parquet")]
    result = runner.invoke(app, [*args, "--batch-size", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "Wrote 5 rows (0 with an error)" in result.output
    result = runner.invoke(app, ["no-such-model", *args[1:], "--no-progress"])
    assert result.exit_code == 1 and "cannot load the pipeline 'no-such-model'" in result.output
    result = runner.invoke(app, [*args, "--engine", "spark"])
    assert result.exit_code == 2  # typer rejects the choice


def test_ray_engine_without_ray_fails_at_once(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(AnnotateError, match=r"pip install 'spacy-vanilla-ner\[ray\]'"):
        # Nothing is read: the input does not even exist.
        annotate("no-such-model", tmp_path / "nope.jsonl", tmp_path / "o.jsonl", engine="ray")


# The Ray engine, for real, in local mode ---------------------------------------------


def needs_ray():
    pytest.importorskip("ray", reason="Ray not installed: pip install -e '.[ray]'")
    pytest.importorskip("ray.data", reason="Ray Data not installed: pip install -e '.[ray]'")


@pytest.fixture(scope="module")
def ray_session():
    """One small local Ray for the module; each run below starts its own actors."""
    needs_ray()
    import ray

    # A busy machine can take more than Ray's 30 s default to start its agents.
    os.environ.setdefault("RAY_agent_register_timeout_ms", "120000")
    ray.init(
        num_cpus=3,  # 2 actors + the read tasks (logical CPUs, not cores)
        object_store_memory=80 * 1024**2,
        include_dashboard=False,
        log_to_driver=False,
    )
    yield ray
    ray.shutdown()


def test_actor_loads_the_pipeline_itself(trained_path, texts, nlp):
    needs_ray()
    import pyarrow as pa

    from spacy_vanilla_ner.annotate.ray_engine import NerActor

    # The actor gets the pipeline's path, never the pipeline (spaCy#13506).
    actor = NerActor(str(trained_path), batch_size=8, max_chars=None)
    batch = pa.table({"id": ["0", "1", "2"], "text": [texts[0], None, ""], "error": [None] * 3})
    out = actor(batch).to_pylist()
    assert out[0] == {"id": "0", "entities": entities_of(nlp(texts[0])), "error": None}
    assert out[1]["error"] == "text is null" and out[2] == {
        "id": "2",
        "entities": [],
        "error": None,
    }


def test_ray_equals_local_after_an_actor_dies(
    ray_session, trained_path, bad_jsonl, local_bad_output, tmp_path, monkeypatch
):
    marker = tmp_path / "crashed"
    monkeypatch.setenv("SPACY_VANILLA_NER_CRASH_ONCE", str(marker))  # see ray_engine.py
    out = tmp_path / "ray.parquet"
    stats = annotate(
        str(trained_path), bad_jsonl, out, engine="ray", workers=2, batch_size=4,
        preserve_order=True, progress=False,
    )  # fmt: skip
    assert marker.exists()  # an actor died on its first batch, was restarted, and retried it
    assert stats["rows"] == len(local_bad_output) == 14 and stats["errors"] == 8
    assert read_output(out) == local_bad_output  # same rows, same order, same entities


def test_ray_shards_number_rows_across_files(ray_session, trained_path, tmp_path, texts):
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "a.jsonl", [{"text": t} for t in texts[:20]])
    (data / "b.txt").write_text("\n".join(texts[20:]) + "\n", encoding="utf8")
    local = tmp_path / "local.jsonl"
    annotate(str(trained_path), data, local, progress=False)
    out = tmp_path / "ray"
    stats = annotate(
        str(trained_path), data, out, engine="ray", workers=1, batch_size=8,
        output_format="jsonl", progress=False,
    )  # fmt: skip
    rows = sorted(read_output(out), key=lambda r: int(r["id"]))
    assert stats["rows"] == len(rows) == len(texts)
    assert rows == read_jsonl(local)  # ids are row numbers over both files, as on local
