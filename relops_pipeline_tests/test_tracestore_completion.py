"""GenAI events and their spans arriving apart in a home whose traces live in the trace store:
in either order, in two writers committing at the same moment, in files both writers get, and
after a writer died between its commit and its second look, the spans end with the text,
messages and finish reason a warehouse home gives them (lib/ingest.py `_complete_from_store`,
`_complete_from_stored_events`, `_complete_after_commit`)."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import pytest

from relops_pipeline.defs.resources import relops_resources
from relops_pipeline.lib.home import Home
from relops_pipeline_tests.conftest import run_cli
from relops_pipeline_tests.test_tracestore_ingest import OTEL, _contents, _use_store


@pytest.mark.parametrize("first", ["traces", "logs"])
def test_events_arriving_apart_from_their_spans_complete_them_as_in_the_warehouse(tmp_path, capsys, first):
    """A capture's traces in one ingestion, its log export (GenAI events with the messages) in
    another, in either order (the SDK's exporters flush apart): the store's spans get the text,
    messages and finish reason the warehouse's get."""
    captures = sorted(p.name.split(".")[0] for p in OTEL.glob("*.legacy_semconv.logs.jsonl"))[:10]
    for step in ("traces", "logs"):
        (tmp_path / step).mkdir()
        for c in captures:
            shutil.copy2(OTEL / f"{c}.legacy_semconv.{step}.jsonl", tmp_path / step)
    contents = {}
    for name, store in (("warehouse", False), ("store", True)):
        h = Home.resolve(tmp_path / name)
        h.init(example=True)
        if store:
            _use_store(h)
        for step in ("traces", "logs") if first == "traces" else ("logs", "traces"):
            code, _, err = run_cli(capsys, h.root, "ingest", str(tmp_path / step))
            assert code == 0, err
        contents[name] = _contents(h.root)
    got, want = contents["store"], contents["warehouse"]
    assert got == want
    with relops_resources(tmp_path / "store")["warehouse"].get_connection() as con:
        filled = con.execute("SELECT count(*) FROM spans WHERE input_text IS NOT NULL").fetchall()[0][0]
    assert filled >= 3, "the log exports should give the spans their text"

    from relops_pipeline.lib.settings import load_settings
    from relops_pipeline.lib.tracestore.linked import TraceTables
    from relops_pipeline.lib.tracestore.schema import SPANS

    spans = TraceTables(load_settings(Home.resolve(tmp_path / "store").settings_file).trace_store).store(SPANS)
    if first == "traces":  # the completed copies were appended beside the first ones; compaction keeps them
        assert spans.compact() >= 3
    else:  # the spans were completed before their first commit: no second copy
        assert spans.compact() == 0
    assert _contents(tmp_path / "store") == got


def _split_capture_files() -> dict[str, list[Path]]:
    """Ten captures' traces, their log exports (GenAI events with the messages), and both."""
    captures = sorted(p.name.split(".")[0] for p in OTEL.glob("*.legacy_semconv.logs.jsonl"))[:10]
    files = {step: [OTEL / f"{c}.legacy_semconv.{step}.jsonl" for c in captures] for step in ("traces", "logs")}
    return {**files, "traces+logs": files["traces"] + files["logs"]}


_TEXTS = ("SELECT trace_id, span_id, input_text, output_text, CAST(input_messages AS VARCHAR), "
          "CAST(output_messages AS VARCHAR), finish_reason FROM spans ORDER BY ALL")


@functools.cache
def _in_a_warehouse(files: tuple[Path, ...], query: str) -> list[tuple]:
    """`query`'s rows in a warehouse that ingested the fixture `files` in one go (computed once
    per worker: several tests compare with the same files)."""
    import duckdb

    from relops_pipeline.lib.ingest import ingest_paths
    from relops_pipeline.lib.warehouse import migrate

    wh = duckdb.connect()
    migrate(wh)
    ingest_paths(wh, files)
    return wh.execute(query).fetchall()


def _texts_as_in_the_warehouse(tables, files: list[Path]) -> None:
    """The store's spans have the text, messages and finish reason a warehouse that ingested
    `files` in one go gives them."""
    import duckdb

    store = duckdb.connect()
    tables.attach(store)
    want = _in_a_warehouse(tuple(files), _TEXTS)
    assert sum(1 for r in want if r[2] is not None) >= 3, "the log exports should give the spans their text"
    assert store.execute(_TEXTS).fetchall() == want


@pytest.mark.parametrize(("this", "other"), [("logs", "traces"), ("traces", "logs"), ("traces+logs", "traces")])
def test_events_and_their_spans_committed_at_once_by_two_writers_complete_the_spans(tmp_path, monkeypatch, this, other):
    """Two writers, one with a capture's traces and one with its log export (or the traces
    too: files both get): the other writer commits after this one read the store and before
    this one commits, so neither saw the other's rows when completing spans. Whichever commits
    last looks again: the store's spans end as the warehouse's and the days are refreshed."""
    from relops_pipeline.lib.ingest import ingest_paths_to_store
    from relops_pipeline.lib.settings import TraceStoreSettings
    from relops_pipeline.lib.tracestore.linked import TraceTables
    from relops_pipeline.lib.tracestore.store import TraceStore

    files = _split_capture_files()
    tables = TraceTables(TraceStoreSettings(uri=str(tmp_path / "store")))
    append_from, raced = TraceStore.append_from, []

    def commit_of_the_other_writer_first(self, *args, **kwargs):
        if not raced:  # this writer's first commit: the other writer reads and commits just before it
            raced.append(other)
            ingest_paths_to_store(tables, files[other], workdir=tmp_path / "other")
        return append_from(self, *args, **kwargs)

    monkeypatch.setattr(TraceStore, "append_from", commit_of_the_other_writer_first)
    done = ingest_paths_to_store(tables, files[this], workdir=tmp_path / "this")
    monkeypatch.undo()
    assert raced, "the other writer did not run in between"
    _texts_as_in_the_warehouse(tables, files["traces+logs"])
    # The completed spans' days are refreshed by the writer that completed them.
    assert {d.isoformat() for d in _span_days(files["traces"])} <= set(done.spans_by_day)


def _span_days(files: list[Path]) -> set:
    return {d for (d,) in _in_a_warehouse(tuple(files), "SELECT DISTINCT CAST(start_time AS DATE) FROM spans")}


def test_a_writer_that_died_before_looking_again_completes_the_spans_when_retried(tmp_path, monkeypatch):
    """The logs' writer commits while the traces' writer is between its read and its commit;
    the traces' writer dies after its commit, before it looks again. Its retry (the same files,
    all already committed) completes the spans."""
    import relops_pipeline.lib.ingest as ingest
    from relops_pipeline.lib.settings import TraceStoreSettings
    from relops_pipeline.lib.tracestore.linked import TraceTables
    from relops_pipeline.lib.tracestore.store import TraceStore

    files = _split_capture_files()
    tables = TraceTables(TraceStoreSettings(uri=str(tmp_path / "store")))
    append_from, raced = TraceStore.append_from, []

    def commit_of_the_other_writer_first(self, *args, **kwargs):
        if not raced:
            raced.append(1)
            ingest.ingest_paths_to_store(tables, files["logs"], workdir=tmp_path / "other")
        return append_from(self, *args, **kwargs)

    def died(*args, **kwargs):
        raise KeyboardInterrupt("killed before looking again")

    monkeypatch.setattr(TraceStore, "append_from", commit_of_the_other_writer_first)
    monkeypatch.setattr(ingest, "_complete_after_commit", died)
    with pytest.raises(KeyboardInterrupt):
        ingest.ingest_paths_to_store(tables, files["traces"], workdir=tmp_path / "this")
    monkeypatch.undo()
    with pytest.raises(AssertionError):  # the crash left the spans without their text
        _texts_as_in_the_warehouse(tables, files["traces+logs"])
    again = ingest.ingest_paths_to_store(tables, files["traces"], workdir=tmp_path / "retry")
    assert sum(f.accepted for f in again.summary.files) == 0  # all committed before: nothing added
    _texts_as_in_the_warehouse(tables, files["traces+logs"])
