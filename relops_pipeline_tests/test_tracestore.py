"""The trace store (lib/tracestore): a Delta table of spans on the local FS and on a real S3 API
(moto's server, started here on 127.0.0.1 and reaped after): append and query, idempotent
sources, two concurrent writer processes with overlapping files counted exactly once, a writer
killed with SIGKILL between writing its data files and committing, migration from a warehouse.

Run as `python -m relops_pipeline_tests.test_tracestore writer URI OPTIONS_JSON START_AT PLAN_JSON`
it is the writer child the concurrency tests start."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from relops_pipeline.lib.tracestore import GENAI_EVENTS, TRACE_REJECTS, UNDATED_DAY, TraceStore, default_uri
from relops_pipeline_tests.procs import popen, reap, scaled

BASE = datetime(2026, 11, 2)


def make_spans(lo: int, hi: int, *, days: int = 3, text: int = 0) -> pa.Table:
    """Spans lo..hi-1 (identity t<i//4>/s<i>), spread over `days` UTC days; `text` characters of
    input text each (distinct per span, so files are not trivially compressed)."""
    ids = range(lo, hi)
    n = hi - lo
    return pa.table({
        "trace_id": [f"t{i // 4}" for i in ids],
        "span_id": [f"s{i}" for i in ids],
        "span_name": ["chat"] * n,
        "kind": ["llm"] * n,
        "workflow": ["support"] * n,
        "release": ["v1"] * n,
        "start_time": [BASE + timedelta(days=i % days, seconds=i % 80_000) for i in ids],
        "latency_ms": [float(i % 900) for i in ids],
        "input_text": [(f"{i:08d}" * (text // 8 + 1))[:text] if text else "hi" for i in ids],
        "attributes": ['{"k": 1}'] * n,
        "source_line": [i - lo + 1 for i in ids],
        "ingested_at": [BASE] * n,
    })


def count(store: TraceStore, days=None) -> tuple[int, int]:
    """(rows, distinct identities) a DuckDB query through the store's view sees."""
    con = duckdb.connect()
    store.register(con, days=days)
    rows, distinct = con.execute("SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans_store").fetchall()[0]
    con.close()
    return rows, distinct


# --- S3: moto's server ------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    """A real S3 API on 127.0.0.1 (moto in server mode), for the module; reaped after."""
    pytest.importorskip("moto")
    port = _free_port()
    proc = popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + scaled(30)
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        reap(proc)


def _s3_options(endpoint: str) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}


def _s3_client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                        region_name="us-east-1")


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> TraceStore:
    """An empty store on the local FS (under a home) or in a fresh bucket on the S3 server."""
    if request.param == "local":
        return TraceStore(default_uri(tmp_path / "home"))
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"relops-{uuid.uuid4().hex[:12]}"
    _s3_client(endpoint).create_bucket(Bucket=bucket)
    return TraceStore(f"s3://{bucket}/traces", _s3_options(endpoint))


def _data_files(store: TraceStore) -> set[str]:
    """Every parquet file under the table, referenced by a version or not."""
    if store.is_local:
        return {str(p) for p in Path(store.uri).rglob("*.parquet")}
    endpoint = store.storage_options["AWS_ENDPOINT_URL"]
    bucket, _, prefix = store.uri.removeprefix("s3://").partition("/")
    pages = _s3_client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    return {f"s3://{bucket}/{o['Key']}" for page in pages for o in page.get("Contents", []) if o["Key"].endswith(".parquet")}


def _writer(store: TraceStore, start_at: float, plan: list[tuple[int, int, str]]) -> subprocess.Popen:
    argv = [sys.executable, "-m", "relops_pipeline_tests.test_tracestore", "writer", store.uri,
            json.dumps(store.storage_options), str(start_at), json.dumps(plan)]
    return popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _writer_main(uri: str, options: str, start_at: str, plan: str) -> None:
    store = TraceStore(uri, json.loads(options))
    store.table()
    while time.time() < float(start_at):
        time.sleep(0.002)
    for lo, hi, source in json.loads(plan):
        days, text = int(os.environ.get("TRACESTORE_TEST_DAYS", "3")), int(os.environ.get("TRACESTORE_TEST_TEXT", "0"))
        spans = make_spans(lo, hi, days=days, text=text)
        r = store.append(spans, source)
        print(json.dumps({"source": source, "appended": r.appended, "duplicates": r.duplicates, "skipped": r.skipped}), flush=True)


# --- tests ------------------------------------------------------------------------------------
def test_many_sources_in_one_commit_each_idempotent(store):
    """append_many: one table version for several sources, each counted as `append` would."""
    store.append(make_spans(0, 100), "earlier")
    version = store.table().version()
    results = store.append_many([
        (make_spans(50, 200), "a"),     # half of it already stored by "earlier"
        (make_spans(200, 260), "b"),
        (make_spans(200, 260), "b"),    # the same source twice in one call: once
        (make_spans(0, 100), "earlier"),  # committed before: skipped
        (make_spans(260, 260), "empty"),
    ])
    assert [(r.source_id, r.appended, r.duplicates, r.skipped) for r in results] == [
        ("a", 100, 50, False), ("b", 60, 0, False), ("b", 0, 60, True), ("earlier", 0, 100, True), ("empty", 0, 0, False)]
    assert store.table().version() == version + 1 == results[0].version
    assert sum(results[0].by_day.values()) == 100 and sum(results[1].by_day.values()) == 60
    assert count(store) == (260, 260)
    assert all(r.skipped for r in store.append_many([(make_spans(50, 200), "a"), (make_spans(200, 260), "b")]))
    assert store.table().version() == version + 1


def test_append_from_duckdb_streams_each_batch_as_its_source(store):
    """append_from: the rows of several ingest batches of a DuckDB table, one commit, each batch
    its own source, counted as append_many counts them; the same results whatever the batch size."""
    con = duckdb.connect()
    parts = [("b1", make_spans(50, 200)), ("b2", make_spans(200, 260)), ("b3", make_spans(0, 100)),
             ("b4", pa.concat_tables([make_spans(300, 400), make_spans(390, 400)]))]  # repeats inside b4
    con.register("parts", pa.concat_tables(
        [t.append_column("ingest_batch_id", pa.array([b] * t.num_rows)) for b, t in parts]))
    con.execute("CREATE TABLE staged AS SELECT * FROM parts")
    store.append(make_spans(0, 100), "earlier")
    version = store.table().version()
    results = store.append_from(con, "staged", [("b1", "a"), ("b2", "b"), ("b2", "b"), ("b3", "earlier"), ("b4", "d"),
                                                ("none", "empty")], batch_rows=7)
    assert [(r.source_id, r.rows, r.appended, r.duplicates, r.skipped) for r in results] == [
        ("a", 150, 100, 50, False), ("b", 60, 60, 0, False), ("b", 60, 0, 60, True), ("earlier", 100, 0, 100, True),
        ("d", 100, 100, 0, False), ("empty", 0, 0, 0, False)]
    assert store.table().version() == version + 1 == results[0].version
    assert count(store) == (360, 360)
    assert all(r.skipped for r in store.append_from(con, "staged", [("b1", "a"), ("b4", "d")]))
    con.execute("INSERT INTO staged BY NAME SELECT 'b5' AS ingest_batch_id, * EXCLUDE (ingest_batch_id, trace_id) "
                "REPLACE (NULL AS start_time) FROM staged LIMIT 1")
    with pytest.raises(ValueError, match="without"):
        store.append_from(con, "staged", [("b5", "bad")])


def test_local_appends_written_by_duckdb_race_to_commit_and_read_back_exactly(tmp_path, monkeypatch):
    """A local table's append_from has DuckDB write the Parquet files and delta-rs commit them.
    Two writers (threads) holding the same source reach the commit together: exactly one commits
    it, the other's commit fails, its files are deleted and its retry skips. What was written
    reads back equal to the staged rows, through DuckDB's view and through delta-rs' own reader,
    in row groups of at most ROW_GROUP_ROWS; no file outside the snapshot is left on disk. The
    home sits under a folder named like a column (`kind=retrieval`): what DuckDB reads is the
    files' own values, not the path's."""
    import threading

    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    from relops_pipeline.lib.tracestore.store import ROW_GROUP_ROWS

    store = TraceStore(default_uri(tmp_path / "kind=retrieval" / "home"))
    staged = make_spans(0, 2 * ROW_GROUP_ROWS + 10, days=2, text=40)
    store.table()
    barrier = threading.Barrier(2, timeout=scaled(60))
    commit = DeltaTable.create_write_transaction

    def together(self, *args, **kwargs):
        barrier.wait()
        return commit(self, *args, **kwargs)

    monkeypatch.setattr(DeltaTable, "create_write_transaction", together)
    results: list = []

    def write() -> None:
        con = duckdb.connect()
        con.register("parts", staged.append_column("ingest_batch_id", pa.array(["b"] * staged.num_rows)))
        con.execute("CREATE TABLE staged AS SELECT * FROM parts")
        results.append(store.append_from(con, "staged", [("b", "same-file")], unique=True)[0])

    threads = [threading.Thread(target=write) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=scaled(120))
    monkeypatch.undo()
    assert sorted((r.appended, r.skipped) for r in results) == [(0, True), (staged.num_rows, False)]
    dt = store.table()
    assert dt.version() == 1  # created, then one commit
    live = {Path(f) for f in dt.file_uris()}
    assert {p for p in Path(store.uri).rglob("*.parquet")} == live
    groups = [pq.ParquetFile(f).metadata for f in live]
    assert all(m.num_row_groups >= 2 and max(m.row_group(i).num_rows for i in range(m.num_row_groups)) <= ROW_GROUP_ROWS
               for m in groups)
    con = duckdb.connect()
    con.register("staged", staged)
    store.register(con)
    cols = ", ".join(staged.schema.names)
    assert con.execute(f"SELECT count(*) FROM (SELECT {cols} FROM staged EXCEPT ALL SELECT {cols} FROM spans_store)"
                       ).fetchall()[0][0] == 0
    by_delta = dt.to_pyarrow_dataset().to_table(columns=staged.schema.names).sort_by("span_id")
    assert by_delta.cast(staged.schema).equals(staged.sort_by("span_id"))


def test_append_query_idempotent_and_day_partitions(store):
    first = store.append(make_spans(0, 300), "file-a")
    assert (first.appended, first.duplicates, first.skipped) == (300, 0, False)
    again = store.append(make_spans(0, 300), "file-a")
    assert again.skipped and again.appended == 0
    # An overlapping file (re-delivered half of a) adds only its new spans; repeats inside it
    # count once.
    overlap = store.append(pa.concat_tables([make_spans(150, 450), make_spans(440, 450)]), "file-b")
    assert (overlap.rows, overlap.appended, overlap.duplicates) == (300, 150, 150)
    assert count(store) == (450, 450)

    con = duckdb.connect()
    store.register(con, "day1", days=[BASE.date() + timedelta(days=1)])
    rows, first_day, last_day = con.execute("SELECT count(*), min(start_time)::DATE, max(start_time)::DATE FROM day1").fetchall()[0]
    assert rows == 150 and first_day == last_day == BASE.date() + timedelta(days=1)
    # The view has the warehouse's spans columns, JSON typed as JSON.
    store.register(con)
    wh = duckdb.connect()
    from relops_pipeline.lib import warehouse

    warehouse.migrate(wh)
    assert con.sql("DESCRIBE spans_store").fetchall() == wh.sql("DESCRIBE spans").fetchall()
    assert con.execute("SELECT attributes.k FROM spans_store LIMIT 1").fetchall()[0] == ("1",)
    assert store.days() == [BASE.date() + timedelta(days=d) for d in range(3)]


def test_what_other_writers_committed_since_a_version_reads_only_their_files(store):
    """register_added_after: the rows the commits after a version added, less a writer's own
    commits (how the last of two writers finds the copies the other committed meanwhile)."""
    store.append(make_spans(0, 10), "before")
    read = store.version()
    own = store.append(make_spans(10, 20), "own")
    store.append(make_spans(20, 30), "theirs")
    # Copies of rows committed before (a correction, say): another writer's too.
    store.append_many([(make_spans(5, 8), "a-copy")], check_existing=False)
    con = duckdb.connect()
    assert store.register_added_after(con, "others", read, not_by={own.version})
    assert con.sql("SELECT count(*), count(DISTINCT span_id) FROM others").fetchall() == [(13, 13)]
    store.register(con, "every_row")
    assert con.sql("DESCRIBE others").fetchall() == con.sql("DESCRIBE every_row").fetchall()
    day = BASE.date() + timedelta(days=1)
    assert store.register_added_after(con, "one_day", read, not_by={own.version}, days=[day])
    assert con.execute("SELECT count(*), count(*) FILTER (start_time::DATE <> ?) FROM one_day", [day]).fetchall() == [(4, 0)]
    assert not store.register_added_after(con, "none", store.version())
    assert con.sql("SELECT count(*) FROM none").fetchall() == [(0,)]


def test_a_day_reads_only_its_partition(tmp_path):
    """Partition pruning: with one day's data files of the other days deleted from disk, a view
    restricted to that day still reads (it never opens them) while the whole table cannot."""
    store = TraceStore(default_uri(tmp_path / "home"))
    store.append(make_spans(0, 600), "a")
    store.append(make_spans(600, 1200), "b")
    day = BASE.date() + timedelta(days=1)
    files = sorted(Path(store.uri).rglob("*.parquet"))
    assert {p.parent.name for p in files} == {f"day={BASE.date() + timedelta(days=d)}" for d in range(3)}
    for p in files:
        if p.parent.name != f"day={day}":
            p.unlink()
    assert count(store, days=[day]) == (400, 400)
    assert count(store, days=[]) == (0, 0)
    con = duckdb.connect()
    with pytest.raises(duckdb.Error):  # on registering (the check for copies) or on reading
        store.register(con)
        con.execute("SELECT count(*) FROM spans_store").fetchall()


def test_blind_append_is_counted_once_and_compaction_removes_the_copies(tmp_path):
    """check_existing=False (no anti-join against the day's identities, the writer mode whose
    cost does not grow with the partition): overlapping sources store copies, the view counts
    each span once, compact() leaves one copy on disk."""
    store = TraceStore(default_uri(tmp_path / "home"))
    assert store.append(make_spans(0, 500), "a", check_existing=False).appended == 500
    assert store.append(make_spans(250, 750), "b", check_existing=False).appended == 500
    assert store.append(make_spans(250, 750), "b", check_existing=False).skipped
    assert count(store) == (750, 750)
    assert store.compact() == 250
    raw = duckdb.connect()
    raw.register("raw", store.table().to_pyarrow_dataset())
    assert raw.execute("SELECT count(*) FROM raw").fetchall()[0] == (750,)
    assert count(store) == (750, 750)


def test_a_view_rescans_for_copies_only_the_days_whose_files_changed(tmp_path, monkeypatch):
    """Whether a day holds copies (so its view must deduplicate) is kept per day with a digest
    of the day's files: a new connection rescans only the days an append or a compaction
    changed, and the counts stay exact throughout; a damaged cache is rebuilt."""
    store = TraceStore(default_uri(tmp_path / "home"))
    scanned: list[list[str]] = []
    real = TraceStore._count_copies

    def spy(self, con, raw, days):
        scanned.append(list(days))
        return real(self, con, raw, days)

    monkeypatch.setattr(TraceStore, "_count_copies", spy)
    days = [(BASE.date() + timedelta(days=d)).isoformat() for d in range(3)]

    def view() -> tuple[tuple[int, int], bool]:
        con = duckdb.connect()
        store.register(con)
        rows = con.execute("SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans_store").fetchall()[0]
        deduplicates = "QUALIFY" in con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'spans_store'").fetchall()[0][0]
        con.close()
        return rows, deduplicates

    store.append(make_spans(0, 600), "a")
    assert view() == ((600, 600), False) and scanned == [days]
    assert view() == ((600, 600), False) and scanned == [days]  # nothing changed: no scan
    # 200 copies on the first day only (a blind append of the same spans).
    store.append(make_spans(0, 600).take(list(range(0, 600, 3))), "b", check_existing=False)
    assert view() == ((600, 600), True) and scanned[1:] == [days[:1]]
    assert store.compact() == 200
    assert view() == ((600, 600), False) and scanned[2:] == [days[:1]]
    store.vacuum(retention_hours=0)
    assert view() == ((600, 600), False) and len(scanned) == 3
    (Path(store.uri) / "_relops_copies.json").write_text("{not json")
    assert view() == ((600, 600), False) and scanned[3:] == [days]


def test_span_without_identity_is_refused(tmp_path):
    store = TraceStore(tmp_path / "ts")
    bad = make_spans(0, 3).set_column(1, "span_id", pa.array(["s0", None, "s2"]))
    with pytest.raises(ValueError, match="without trace_id, span_id, start_time"):
        store.append(bad, "bad")


@pytest.mark.timeout(300)
def test_two_concurrent_writers_with_overlapping_files_count_each_span_once(store):
    """Two writer processes, started at the same instant, append overlapping files (and one
    identical file); a DuckDB query through the view counts each of the 9,000 spans once, and
    compact() then leaves exactly one copy on disk."""
    store.table()
    start_at = time.time() + scaled(3)
    plans = [
        [(0, 3000, "a1"), (3000, 6000, "a2"), (7000, 9000, "same-file")],
        [(1500, 4500, "b1"), (4500, 7500, "b2"), (7000, 9000, "same-file")],
    ]
    procs = [_writer(store, start_at, plan) for plan in plans]
    try:
        outs = [p.communicate(timeout=scaled(180)) for p in procs]
    finally:
        for p in procs:
            reap(p)
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    results = [json.loads(line) for out, _ in outs for line in out.splitlines()]
    same = [r for r in results if r["source"] == "same-file"]
    # The identical file is committed by exactly one writer: the other skips it (or, if it came
    # second, finds all its spans present).
    assert sum(r["appended"] for r in same) <= 2000
    # No commit was lost to a concurrent one (a log version overwritten would drop a source):
    # every source is recorded in the log.
    dt = store.table()
    assert all(store.committed(r["source"], dt) for r in results)
    assert count(store) == (9000, 9000)
    raw = duckdb.connect()
    raw.register("raw", store.table().to_pyarrow_dataset())
    physical = raw.execute("SELECT count(*) FROM raw").fetchall()[0][0]
    assert physical >= 9000
    assert store.compact() == physical - 9000
    raw.register("raw", store.table().to_pyarrow_dataset())
    assert raw.execute("SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM raw").fetchall()[0] == (9000, 9000)
    assert count(store) == (9000, 9000)


@pytest.mark.timeout(600)
def test_writer_killed_mid_commit_leaves_the_table_consistent_and_a_retry_completes(store, monkeypatch):
    """SIGKILL a writer as soon as its first data file exists, before its commit: no reader sees
    its rows, the files it left are orphans, and the same source appended again commits once."""
    store.append(make_spans(0, 100), "before")
    expected = 100
    monkeypatch.setenv("TRACESTORE_TEST_TEXT", "400")
    monkeypatch.setenv("TRACESTORE_TEST_DAYS", "40")
    # 40 days x 1,500 spans: delta-rs writes the partitions' files one after another, and the
    # commit comes after the last one. On S3 the uploads end close together, and a listing of
    # the bucket under load can see the first file only after the commit: such a kill proves
    # only that a whole commit stays whole, and the next attempt (a new source) tries again.
    for attempt in range(3):
        lo, source = 1000 + attempt * 100_000, f"big-{attempt}"
        version, before_files = store.table().version(), _data_files(store)
        proc = _writer(store, time.time(), [(lo, lo + 60_000, source)])
        killed_before_commit = False
        try:
            deadline = time.monotonic() + scaled(120)
            while time.monotonic() < deadline and proc.poll() is None:
                if _data_files(store) - before_files:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=scaled(10))
                    killed_before_commit = store.table().version() == version
                    break
                time.sleep(0.002)
        finally:
            reap(proc)
        if killed_before_commit:
            break
        assert store.committed(source, store.table()), proc.stderr.read() if proc.stderr else ""
        expected += 60_000
        assert count(store) == (expected, expected)  # all of it, once
    # The window is wide locally; on S3 three misses in a row mean the assumption broke.
    assert killed_before_commit, "every writer committed before its first data file was seen"
    dt = store.table()
    assert dt.version() == version and not store.committed(source, dt)
    referenced = {u.removeprefix("file://") for u in dt.file_uris()}
    orphans = _data_files(store) - before_files
    assert orphans and not orphans & referenced
    assert count(store) == (expected, expected)
    # The retry (a new writer, the same source) completes; the orphans are never read.
    retried = store.append(make_spans(lo, lo + 60_000, days=40, text=400), source)
    assert not retried.skipped and retried.appended == 60_000
    expected += 60_000
    assert count(store) == (expected, expected)
    store.vacuum(retention_hours=0)
    assert not (_data_files(store) & orphans)
    assert count(store) == (expected, expected)


def test_migrate_from_warehouse_moves_every_span(wh, store):
    from relops_pipeline.lib.tracestore.store import MigrationResult

    spans = make_spans(0, 1234, days=5)
    wh.register("incoming", spans)
    wh.execute("INSERT INTO spans BY NAME SELECT * FROM incoming")
    n = wh.execute("SELECT count(*) FROM spans").fetchall()[0][0]
    assert n == 1234
    result = store.migrate_from_warehouse(wh)
    assert result == MigrationResult(warehouse_spans=n, appended=n, already_in_store=0, store_spans=n)
    assert count(store) == (n, n)
    # Every column survives: the store's view equals the warehouse table, row for row.
    store.register(wh, "migrated")
    assert wh.execute("SELECT count(*) FROM (SELECT * FROM spans EXCEPT SELECT * FROM migrated)").fetchall()[0] == (0,)
    assert wh.execute("SELECT count(*) FROM (SELECT * FROM migrated EXCEPT SELECT * FROM spans)").fetchall()[0] == (0,)
    # Run again (an interrupted upgrade resumed): nothing added, nothing lost.
    again = store.migrate_from_warehouse(wh)
    assert again.appended == 0 and again.store_spans == n


def test_genai_events_and_rejects_in_the_store_and_migrated(wh, store):
    """GenAI events (identity event_key) and rejects (identity batch, file, line, reason) live in
    their own tables beside the spans: overlapping sources counted once, and the warehouse's
    rows migrated with nothing lost (count and key equality both ways). Events without a time
    (an OTLP log record with neither timestamp) are kept, in the UNDATED_DAY partition."""
    events = TraceStore(store.uri + "_events", store.storage_options, spec=GENAI_EVENTS)
    rejects = TraceStore(store.uri + "_rejects", store.storage_options, spec=TRACE_REJECTS)
    n = 900

    def event_rows(lo: int, hi: int) -> pa.Table:
        return pa.table({
            "trace_id": [f"t{i // 4}" for i in range(lo, hi)], "span_id": [f"s{i}" for i in range(lo, hi)],
            "event_name": ["gen_ai.user.message"] * (hi - lo),
            "event_time": [None if i % 50 == 7 else BASE + timedelta(days=i % 3, seconds=i) for i in range(lo, hi)],
            "role": ["user"] * (hi - lo), "content": [f"question {i}" for i in range(lo, hi)],
            "attributes": ['{"a": 1}'] * (hi - lo), "source_line": list(range(1, hi - lo + 1)),
            "event_key": [f"k{i}" for i in range(lo, hi)], "ingest_batch_id": [f"b{lo}"] * (hi - lo),
        })

    def reject_rows(batch: str, lines: range) -> pa.Table:
        return pa.table({
            "ingest_batch_id": [batch] * len(lines), "source_file": ["/landing/x.jsonl"] * len(lines),
            "source_line": [None if i == 0 else i for i in lines], "raw": ["{not json"] * len(lines),
            "reason": ["invalid JSON"] * len(lines), "rejected_at": [BASE + timedelta(days=i % 2) for i in lines],
        })

    events.append(event_rows(0, 600), "e1", check_existing=False)
    events.append(event_rows(300, n), "e2", check_existing=False)
    con = duckdb.connect()
    events.register(con)
    assert con.execute("SELECT count(*), count(DISTINCT event_key) FROM genai_events_store").fetchall()[0] == (n, n)
    undated = sum(1 for i in range(n) if i % 50 == 7)
    assert events.days()[0] == UNDATED_DAY
    assert con.execute("SELECT count(*) FROM genai_events_store WHERE event_time IS NULL").fetchall()[0] == (undated,)
    rejects.append(reject_rows("b1", range(0, 50)), "r1")
    rejects.append(reject_rows("b1", range(0, 50)), "r1-again")  # the same rejects, another source id
    rejects.register(con)
    assert con.execute("SELECT count(*) FROM trace_rejects_store").fetchall()[0] == (50,)

    # Migration of the warehouse's events and rejects into fresh tables.
    wh.register("ev", event_rows(0, n))
    wh.execute("INSERT INTO genai_events BY NAME SELECT * FROM ev")
    wh.register("rj", pa.concat_tables([reject_rows("b1", range(0, 50)), reject_rows("b2", range(5, 30))]))
    wh.execute("INSERT INTO trace_rejects BY NAME SELECT * FROM rj")
    for spec, expected in ((GENAI_EVENTS, n), (TRACE_REJECTS, 75)):
        target = TraceStore(f"{store.uri}_migrated_{spec.name}", store.storage_options, spec=spec)
        result = target.migrate_from_warehouse(wh)
        assert result.warehouse_spans == result.store_spans == result.appended == expected
        assert target.migrate_from_warehouse(wh).appended == 0  # run again: nothing added
        target.register(wh, "m")
        for a, b in (("m", spec.name), (spec.name, "m")):
            assert wh.execute(f"SELECT count(*) FROM (SELECT * FROM {a} EXCEPT SELECT * FROM {b})").fetchall()[0] == (0,)
        target.unregister(wh, "m")

    # The home went back to its warehouse for a while (its moved rows deleted there), then to the
    # store again: the new rows of days moved before (the undated one among them) move too.
    target = TraceStore(f"{store.uri}_migrated_{GENAI_EVENTS.name}", store.storage_options, spec=GENAI_EVENTS)
    wh.execute("DELETE FROM genai_events")
    later = event_rows(n, n + 60)  # 60 events: one undated (i % 50 == 7), the rest on days moved before
    wh.register("later", later)
    wh.execute("INSERT INTO genai_events BY NAME SELECT * FROM later")
    result = target.migrate_from_warehouse(wh)
    assert (result.appended, result.already_in_store, result.store_spans) == (60, 0, n + 60)


if __name__ == "__main__" and sys.argv[1:2] == ["writer"]:
    _writer_main(*sys.argv[2:6])
