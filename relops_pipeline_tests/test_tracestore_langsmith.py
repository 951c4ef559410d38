"""LangSmith runs in a home whose traces live in the trace store: a run's start (post) and its
ends (patches) arrive in separate requests, so in different files, ingestions and writers, and
the SDK sends some again. However they arrive (in turn, committed at once by two writers, from
hosts whose clocks differ, with copies of a start the store holds), the store's run ends as a
warehouse home ends it when it ingests the same files in the order the commits happened
(lib/ingest.py `_complete_langsmith_from_store`, `_seed_waiting_ends`, `_ended_here`,
`_complete_langsmith_copies`, `_complete_langsmith_after_commit`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.parametrize(("this", "other", "dies"), [("patch", "post", False), ("post", "patch", False),
                                                     ("post", "patch", True)])
def test_a_langsmith_run_and_its_end_committed_at_once_by_two_writers_complete_the_run(
        tmp_path, monkeypatch, this, other, dies):
    """The LangSmith SDK's requests: a run's start (post) with one writer, its end (patch) with
    another, the other committing after this one read the store and before this one commits.
    Neither sees the other's: the patch is kept waiting (a `pending:` reject) and the run is
    stored unended. Whichever commits last applies the patch: the runs end as a warehouse
    ends them, the patch's file counts as when its run came later, and the span_updates and
    days to refresh go with the writer that applied it. A writer that died after its commit,
    before it looked again, does it when retried."""
    import duckdb

    import relops_pipeline.lib.ingest as ingest
    from relops_pipeline.lib.ingest import ingest_file, ingest_paths_to_store
    from relops_pipeline.lib.settings import IngestSettings, Price, TraceStoreSettings
    from relops_pipeline.lib.tracestore.linked import TraceTables
    from relops_pipeline.lib.tracestore.store import TraceStore
    from relops_pipeline.lib.warehouse import migrate
    from relops_pipeline_tests.test_langsmith_runs import runs_of

    settings = IngestSettings(prices={"gpt-4o-mini": Price(input_per_mtok=0.15, output_per_mtok=0.6)})
    runs = [runs_of(n) for n in (2, 3, 4)]
    files = {"post": tmp_path / "post.json", "patch": tmp_path / "patch.json"}
    files["post"].write_text(json.dumps({"post": [r for run in runs for r in run["post"]], "patch": []}))
    files["patch"].write_text(json.dumps({"post": [], "patch": [r for run in runs for r in run.get("patch", [])]}))
    tables = TraceTables(TraceStoreSettings(uri=str(tmp_path / "store")))
    append_from, raced = TraceStore.append_from, []

    def commit_of_the_other_writer_first(self, *args, **kwargs):
        if not raced:
            raced.append(None)  # before: the other writer's own commits go straight through
            raced[0] = ingest_paths_to_store(tables, [files[other]], workdir=tmp_path / "other", settings=settings)
        return append_from(self, *args, **kwargs)

    def died(*args, **kwargs):
        raise KeyboardInterrupt("killed before looking again")

    monkeypatch.setattr(TraceStore, "append_from", commit_of_the_other_writer_first)
    if dies:
        monkeypatch.setattr(ingest, "_complete_langsmith_after_commit", died)
        with pytest.raises(KeyboardInterrupt):
            ingest_paths_to_store(tables, [files[this]], workdir=tmp_path / "this", settings=settings)
        monkeypatch.undo()
        done = ingest_paths_to_store(tables, [files[this]], workdir=tmp_path / "retry", settings=settings)
    else:
        done = ingest_paths_to_store(tables, [files[this]], workdir=tmp_path / "this", settings=settings)
    monkeypatch.undo()
    assert raced, "the other writer did not run in between"
    by = {this: done, other: raced[0]}

    wh = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    migrate(wh)
    by_warehouse = [ingest_file(wh, files[name], settings=settings) for name in ("patch", "post")]
    counts = [(f.read, f.accepted, f.rejected, f.duplicates) for f in by_warehouse]
    assert counts == [(4, 0, 4, 0), (4, 4, 0, 0)]  # the patches waited, as here
    if dies:  # the retry's runs were all committed before
        counts[1] = (4, 0, 0, 4)
    assert [(f.read, f.accepted, f.rejected, f.duplicates) for name in ("patch", "post")
            for f in by[name].summary.files] == counts
    content = ("SELECT * EXCLUDE (ingest_batch_id, ingested_at, attributes) FROM spans ORDER BY trace_id, span_id")
    store = duckdb.connect()
    tables.attach(store)
    stored = store.execute(content).fetchall()
    assert stored == wh.execute(content).fetchall()
    assert store.execute("SELECT count(*) FROM spans WHERE end_time IS NULL").fetchall()[0][0] == 0
    # The writer that applied the patches records them for this day's features, under its batch
    # (the retry applied them to its runs before its commit, as new runs: their batch is new).
    updates = [(u["trace_id"], u["span_id"], u["source_line"], u["reason"], u["ingest_batch_id"]) for u in done.span_updates]
    batch = done.summary.files[0].batch_id
    assert sorted(updates) == ([] if dies else sorted((t, s, line, "langsmith patch", batch) for t, s, line in wh.execute(
        "SELECT s.trace_id, s.span_id, r.source_line FROM spans s JOIN trace_rejects r "
        "ON json_extract_string(r.raw, '$.id') = s.span_id").fetchall()))
    day = wh.execute("SELECT min(start_time)::DATE FROM spans").fetchall()[0][0]
    assert day.isoformat() in done.spans_by_day
    assert done.batches[0]["min_start_time"] is not None


def test_a_run_both_writers_get_keeps_the_copy_with_its_end(tmp_path, monkeypatch):
    """Overlapping files: one writer gets a request with the runs' starts and ends (posts and
    patches in one file), the other the starts alone, and commits first, between this one's
    read and its commit. The store held the unended copies; this writer's ended copies are
    appended after its commit, so that the store's spans are the warehouse's."""
    import duckdb

    from relops_pipeline.lib.ingest import ingest_file, ingest_paths_to_store
    from relops_pipeline.lib.settings import TraceStoreSettings
    from relops_pipeline.lib.tracestore.linked import TraceTables
    from relops_pipeline.lib.tracestore.store import TraceStore
    from relops_pipeline.lib.warehouse import migrate
    from relops_pipeline_tests.test_langsmith_runs import runs_of

    runs = [runs_of(n) for n in (2, 3, 4)]
    posts, patches = [r for run in runs for r in run["post"]], [r for run in runs for r in run.get("patch", [])]
    (tmp_path / "both.json").write_text(json.dumps({"post": posts, "patch": patches}))
    (tmp_path / "post.json").write_text(json.dumps({"post": posts}))
    tables = TraceTables(TraceStoreSettings(uri=str(tmp_path / "store")))
    append_from, raced = TraceStore.append_from, []

    def commit_of_the_other_writer_first(self, *args, **kwargs):
        if not raced:
            raced.append(None)  # before: the other writer's own commits go straight through
            raced[0] = ingest_paths_to_store(tables, [tmp_path / "post.json"], workdir=tmp_path / "other")
        return append_from(self, *args, **kwargs)

    monkeypatch.setattr(TraceStore, "append_from", commit_of_the_other_writer_first)
    done = ingest_paths_to_store(tables, [tmp_path / "both.json"], workdir=tmp_path / "this")
    monkeypatch.undo()
    assert raced and raced[0] is not None, "the other writer did not commit in between"
    f = done.summary.files[0]
    assert f.read == f.accepted + f.rejected + f.duplicates and f.duplicates >= 4  # the runs were stored before

    wh = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    migrate(wh)
    ingest_file(wh, tmp_path / "both.json")
    content = ("SELECT * EXCLUDE (ingest_batch_id, ingested_at, source_file, source_line) FROM spans "
               "ORDER BY trace_id, span_id")
    store = duckdb.connect()
    tables.attach(store)
    assert store.execute(content).fetchall() == wh.execute(content).fetchall()
    assert store.execute("SELECT count(*) FROM spans WHERE end_time IS NULL").fetchall()[0][0] == 0
    day = wh.execute("SELECT min(start_time)::DATE FROM spans").fetchall()[0][0]
    assert day.isoformat() in done.spans_by_day


def _langsmith_files(tmp_path: Path) -> dict[str, Path]:
    """The LangSmith SDK's requests for four runs: their starts (posts) and their ends (patches)."""
    from relops_pipeline_tests.test_langsmith_runs import runs_of

    runs = [runs_of(n) for n in (2, 3, 4)]
    files = {"post": tmp_path / "post.json", "patch": tmp_path / "patch.json"}
    files["post"].write_text(json.dumps({"post": [r for run in runs for r in run["post"]], "patch": []}))
    files["patch"].write_text(json.dumps({"post": [], "patch": [r for run in runs for r in run.get("patch", [])]}))
    return files


@pytest.mark.parametrize("raced", [False, True], ids=["in-turn", "at-once"])
def test_a_langsmith_run_stored_by_a_writer_whose_clock_is_ahead_takes_its_end(tmp_path, monkeypatch, raced):
    """The run's start is ingested on a host whose clock is 30 s ahead, its end on another,
    either after it or committing at the same moment: the end is applied all the same (a
    patch is not taken for one merged into its run when it was read because of the clocks)."""
    from datetime import timedelta

    import duckdb

    import relops_pipeline.lib.ingest as ingest
    from relops_pipeline.lib.settings import TraceStoreSettings
    from relops_pipeline.lib.tracestore.linked import TraceTables
    from relops_pipeline.lib.tracestore.store import TraceStore

    files = _langsmith_files(tmp_path)
    tables = TraceTables(TraceStoreSettings(uri=str(tmp_path / "store")))
    now = ingest.utc_naive

    def post_writer_ahead() -> None:
        monkeypatch.setattr(ingest, "utc_naive", lambda: now() + timedelta(seconds=30))
        try:
            ingest.ingest_paths_to_store(tables, [files["post"]], workdir=tmp_path / "post")
        finally:
            monkeypatch.setattr(ingest, "utc_naive", now)

    if raced:
        append_from, ran = TraceStore.append_from, []

        def commit_of_the_other_writer_first(self, *args, **kwargs):
            if not ran:
                ran.append(1)
                post_writer_ahead()
            return append_from(self, *args, **kwargs)

        monkeypatch.setattr(TraceStore, "append_from", commit_of_the_other_writer_first)
    else:
        post_writer_ahead()
    done = ingest.ingest_paths_to_store(tables, [files["patch"]], workdir=tmp_path / "patch")
    monkeypatch.undo()
    store = duckdb.connect()
    tables.attach(store)
    assert store.execute("SELECT count(*), count(end_time) FROM spans").fetchall() == [(4, 4)]
    assert len(done.span_updates) == 4


# One LangSmith run: its start, a first end (P1), a later end that fails (P2), an error end
# without outputs (P2E); the warehouse ends with the values of the last end it applied.
_RUN = {"id": "run-1", "trace_id": "run-1", "name": "answer", "run_type": "chain",
        "start_time": "2026-12-06T01:00:00+00:00", "inputs": {"question": "q"},
        "dotted_order": "20261206T010000000000Zrun-1"}
_P1 = {"id": "run-1", "trace_id": "run-1", "end_time": "2026-12-06T01:00:01+00:00", "outputs": {"answer": "first"}}
_P2 = {"id": "run-1", "trace_id": "run-1", "end_time": "2026-12-06T01:00:05+00:00", "outputs": {"answer": "second"},
       "error": "boom"}
_P2E = {"id": "run-1", "trace_id": "run-1", "end_time": "2026-12-06T01:00:05+00:00", "error": "boom"}
_DOCS = {"post": {"post": [_RUN]}, "p1": {"patch": [_P1]}, "p2": {"patch": [_P2]}, "p2e": {"patch": [_P2E]},
         "both": {"post": [_RUN], "patch": [_P1]}, "z-p1": {"patch": [_P1]}, "a-p2": {"patch": [_P2]},
         "other": {"patch": [{"id": "run-9", "trace_id": "run-9"}]}}


def _run_files(tmp_path: Path) -> dict[str, Path]:
    """Each of _DOCS in a file; NAME' is the same request in a file of other bytes elsewhere (a
    copy the SDK sent again: another source)."""
    files = {}
    for name, doc in _DOCS.items():
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(doc))
        files[f"{name}'"] = tmp_path / "again" / f"{name}.json"
        files[f"{name}'"].parent.mkdir(exist_ok=True)
        files[f"{name}'"].write_text(json.dumps(doc) + "\n")
    return files


def _as_in_the_warehouse(tmp_path: Path, tables, ingestions: list[list[Path]]) -> None:
    """The store's run is the one a warehouse gives when it ingests `ingestions` one after
    another, and the copy the views keep is the only one first in their order."""
    import duckdb

    from relops_pipeline.lib.ingest import ingest_paths
    from relops_pipeline.lib.tracestore.schema import SPANS
    from relops_pipeline.lib.warehouse import migrate

    wh = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    migrate(wh)
    for files in ingestions:
        ingest_paths(wh, files)
    content = "SELECT end_time, output_text, status, error_type FROM spans ORDER BY ALL"
    store = duckdb.connect()
    tables.attach(store)
    assert store.execute(content).fetchall() == wh.execute(content).fetchall()
    store.register("copies", tables.store(SPANS).table().to_pyarrow_table())
    assert store.execute(f"SELECT max(n) FROM (SELECT count(*) AS n FROM (SELECT trace_id, span_id, rank() OVER "
                         f"(PARTITION BY trace_id, span_id ORDER BY {SPANS.keep_order}) AS r FROM copies) "
                         "WHERE r = 1 GROUP BY trace_id, span_id)").fetchall() == [(1,)]


def _another_writer_commits_first(monkeypatch, tables, files: list[Path], workdir: Path, *,
                                  before_corrections: bool = False, then=None) -> list:
    """The next commit of the files' spans waits for another writer's ingestion of `files` (it
    read the store before, and commits after it), and `then()` if given; with
    `before_corrections`, the next commit of any kind (a correction of a stored run comes
    before the files' spans)."""
    from relops_pipeline.lib.ingest import ingest_paths_to_store
    from relops_pipeline.lib.tracestore.store import TraceStore

    ran: list = []

    def the_other_writer_first(commit):
        def commit_after_the_other_writer(self, *args, **kwargs):
            if not ran:
                ran.append(None)  # before: the other writer's own commits go straight through
                ran[0] = ingest_paths_to_store(tables, files, workdir=workdir)
                if then is not None:
                    then()
            return commit(self, *args, **kwargs)
        return commit_after_the_other_writer

    monkeypatch.setattr(TraceStore, "append_from", the_other_writer_first(TraceStore.append_from))
    if before_corrections:
        monkeypatch.setattr(TraceStore, "append_many", the_other_writer_first(TraceStore.append_many))
    return ran


@pytest.mark.parametrize("commits_named", [True, False], ids=["named", "unnamed"])
def test_an_end_applied_before_is_not_applied_again_over_a_later_one(tmp_path, monkeypatch, commits_named):
    """P1 waits for the start; the start comes and takes it; P2 completes the stored run; then
    the start is delivered again while another writer commits (its commit naming its batches,
    or not, as an older relops's). Nothing applies P1 again over P2."""
    from relops_pipeline.lib.ingest import ingest_paths_to_store
    from relops_pipeline.lib.settings import TraceStoreSettings
    from relops_pipeline.lib.tracestore.linked import TraceTables
    from relops_pipeline.lib.tracestore.store import TraceStore

    files = _run_files(tmp_path)
    tables = TraceTables(TraceStoreSettings(uri=str(tmp_path / "store")))
    for i, name in enumerate(("p1", "post", "p2")):
        ingest_paths_to_store(tables, [files[name]], workdir=tmp_path / f"w{i}")
    if not commits_named:
        monkeypatch.setattr(TraceStore, "batches_committed_after", lambda self, version: None)
    ran = _another_writer_commits_first(monkeypatch, tables, [files["other"]], tmp_path / "other")
    again = ingest_paths_to_store(tables, [files["post"]], workdir=tmp_path / "again")
    monkeypatch.undo()
    assert ran and again.span_updates == []
    _as_in_the_warehouse(tmp_path, tables, [[files[n]] for n in ("p1", "post", "p2", "post")])


def test_a_missed_end_is_not_applied_over_a_later_one_that_came_in_between(tmp_path, monkeypatch):
    """The start's writer misses P1 (another writer keeps it waiting at the same moment); P2
    completes the stored run after the start's commit and before its writer looks again. That
    look leaves the run ended by P2, as the warehouse (P1, start, P2) does."""
    import relops_pipeline.lib.ingest as ingest
    from relops_pipeline.lib.settings import TraceStoreSettings
    from relops_pipeline.lib.tracestore.linked import TraceTables

    files = _run_files(tmp_path)
    tables = TraceTables(TraceStoreSettings(uri=str(tmp_path / "store")))
    ran = _another_writer_commits_first(monkeypatch, tables, [files["p1"]], tmp_path / "p1")
    look = ingest._complete_langsmith_after_commit

    def p2_lands_first(*args, **kwargs):
        ingest.ingest_paths_to_store(tables, [files["p2"]], workdir=tmp_path / "p2")
        return look(*args, **kwargs)

    monkeypatch.setattr(ingest, "_complete_langsmith_after_commit", p2_lands_first)
    ingest.ingest_paths_to_store(tables, [files["post"]], workdir=tmp_path / "post")
    monkeypatch.undo()
    assert ran
    _as_in_the_warehouse(tmp_path, tables, [[files[n]] for n in ("p1", "post", "p2")])


@pytest.mark.parametrize("order", [("post", "p2e", "both"), ("post", "both")])
def test_a_start_delivered_again_with_an_end_is_dropped_as_the_warehouse_drops_it(tmp_path, order):
    """A file holding the run's start and an end, after the start alone (and, first case, after
    an error end): its start is a duplicate, and the warehouse drops it with the end merged
    into it; the store keeps what the warehouse keeps (not the file's copy over the stored
    error, nor an end the warehouse does not have)."""
    from relops_pipeline.lib.ingest import ingest_paths_to_store
    from relops_pipeline.lib.settings import TraceStoreSettings
    from relops_pipeline.lib.tracestore.linked import TraceTables

    files = _run_files(tmp_path)
    tables = TraceTables(TraceStoreSettings(uri=str(tmp_path / "store")))
    for i, name in enumerate(order):
        ingest_paths_to_store(tables, [files[name]], workdir=tmp_path / f"w{i}")
    _as_in_the_warehouse(tmp_path, tables, [[files[n]] for n in order])


def test_an_end_delivered_again_adds_no_copy(tmp_path):
    """The file of P1 delivered four times after its run: one completed copy, one commit."""
    from relops_pipeline.lib.ingest import ingest_paths_to_store
    from relops_pipeline.lib.settings import TraceStoreSettings
    from relops_pipeline.lib.tracestore.linked import TraceTables
    from relops_pipeline.lib.tracestore.schema import SPANS

    files = _run_files(tmp_path)
    tables = TraceTables(TraceStoreSettings(uri=str(tmp_path / "store")))
    ingest_paths_to_store(tables, [files["post"]], workdir=tmp_path / "w0")
    versions = []
    for i in range(4):
        done = ingest_paths_to_store(tables, [files["p1"]], workdir=tmp_path / f"w{i + 1}")
        f = done.summary.files[0]
        assert (f.read, f.accepted, f.rejected, f.duplicates) == (1, 0, 0, 1)
        versions.append(tables.store(SPANS).version())
    assert tables.store(SPANS).table().to_pyarrow_table().num_rows == 2
    assert len(set(versions)) == 1
    _as_in_the_warehouse(tmp_path, tables, [[files["post"]], [files["p1"]]])


def test_ends_waiting_for_a_run_stored_by_a_host_ahead_keep_their_order(tmp_path, monkeypatch):
    """The start stored by a host whose clock is 30 s ahead; then one ingestion of P1's file and
    P2's (named so that P2's sorts first): the ends apply in the order they came, as the
    warehouse applies them."""
    from datetime import timedelta

    import relops_pipeline.lib.ingest as ingest
    from relops_pipeline.lib.settings import TraceStoreSettings
    from relops_pipeline.lib.tracestore.linked import TraceTables

    files = _run_files(tmp_path)
    tables = TraceTables(TraceStoreSettings(uri=str(tmp_path / "store")))
    now = ingest.utc_naive
    monkeypatch.setattr(ingest, "utc_naive", lambda: now() + timedelta(seconds=30))
    ingest.ingest_paths_to_store(tables, [files["post"]], workdir=tmp_path / "w0")
    monkeypatch.undo()
    ingest.ingest_paths_to_store(tables, [files["z-p1"], files["a-p2"]], workdir=tmp_path / "w1")
    _as_in_the_warehouse(tmp_path, tables, [[files["post"]], [files["z-p1"], files["a-p2"]]])


_POSTED_ENDED = {**_RUN, "end_time": "2026-12-06T01:00:00.500000+00:00", "outputs": {"answer": "posted"}}
_RUN2 = {**_RUN, "id": "run-2", "trace_id": "run-2", "dotted_order": "20261206T010000000000Zrun-2"}
_PARTIAL = {"id": "run-1", "trace_id": "run-1", "outputs": {"answer": "partial"}}
_P2_OK = {"id": "run-1", "trace_id": "run-1", "end_time": "2026-12-06T01:00:05+00:00", "outputs": {"answer": "second"}}
_DOCS.update({"posted-ended": {"post": [_POSTED_ENDED]}, "both-and-run-2": {"post": [_RUN, _RUN2], "patch": [_P1]},
              "partial": {"patch": [_PARTIAL]}, "p2-ok": {"patch": [_P2_OK]}})


_P3 = {"id": "run-1", "trace_id": "run-1", "end_time": "2026-12-06T01:00:09+00:00", "outputs": {"answer": "third"}}
_DOCS.update({"p3": {"patch": [_P3]}, "post-p3": {"post": [_RUN], "patch": [_P3]}, "p1p2": {"patch": [_P1, _P2]},
              "bare": {"post": [{k: v for k, v in _RUN.items() if k != "inputs"}]}})


@pytest.mark.parametrize("ingestions", [
    (("p2",), ("post-p3",)),                  # an end waiting in the store, then the start with a later end
    (("p1p2",), ("post", "p1'")),             # two waiting, then the start and the first end again
    (("p1", "partial", "p1'"), ("bare",)),    # three waiting from one ingestion, in the order they came
    (("partial", "post-p3"), ("p2", "partial")),  # an end merged before (its reject stays), delivered again
], ids=["waiting-then-start-with-end", "waiting-then-start-and-end-again", "waiting-in-order", "merged-end-again"])
def test_ends_waiting_in_the_store_apply_as_in_the_warehouse(tmp_path, ingestions):
    """Ends kept waiting for their run, one ingestion after another: a start merges the store's
    waiting ends as it is read, before the ends its own ingestion brings, in the order they
    came (as the warehouse merges its langsmith_pending); an end merged before is not taken
    for a waiting one when its file comes again."""
    from relops_pipeline.lib.ingest import ingest_paths_to_store
    from relops_pipeline.lib.settings import TraceStoreSettings
    from relops_pipeline.lib.tracestore.linked import TraceTables

    files = _run_files(tmp_path)
    tables = TraceTables(TraceStoreSettings(uri=str(tmp_path / "store")))
    for i, names in enumerate(ingestions):
        ingest_paths_to_store(tables, [files[n] for n in names], workdir=tmp_path / f"w{i}")
    _as_in_the_warehouse(tmp_path, tables, [[files[n] for n in names] for names in ingestions])


@pytest.mark.parametrize(("before", "this", "other", "named"), [
    ((), "posted-ended", "p1", True),   # a start posted already ended, its end with the other writer
    (("p1",), "post", "p2", True),      # the start takes a waiting end before its commit; a later end races it
    (("post",), "both", "partial", True),  # an end without an end time corrects the stored run meanwhile
    ((), "post", "p1", False),          # the other writer's commit does not name its batches (an older relops)
], ids=["posted-ended", "ended-at-commit", "corrected-meanwhile", "unnamed-commit"])
def test_a_run_racing_its_ends_ends_as_in_the_warehouse(tmp_path, monkeypatch, before, this, other, named):
    """Races the first rules missed: the store's run is the warehouse's (ingesting the files in
    the order the commits happened)."""
    from relops_pipeline.lib.ingest import ingest_paths_to_store
    from relops_pipeline.lib.settings import TraceStoreSettings
    from relops_pipeline.lib.tracestore.linked import TraceTables
    from relops_pipeline.lib.tracestore.store import TraceStore

    files = _run_files(tmp_path)
    tables = TraceTables(TraceStoreSettings(uri=str(tmp_path / "store")))
    for i, name in enumerate(before):
        ingest_paths_to_store(tables, [files[name]], workdir=tmp_path / f"w{i}")
    if not named:
        monkeypatch.setattr(TraceStore, "batches_committed_after", lambda self, version: None)
    ran = _another_writer_commits_first(monkeypatch, tables, [files[other]], tmp_path / "other")
    ingest_paths_to_store(tables, [files[this]], workdir=tmp_path / "this")
    monkeypatch.undo()
    assert ran
    _as_in_the_warehouse(tmp_path, tables, [[files[n]] for n in (*before, other, this)])


@pytest.mark.parametrize(("before", "this", "other"), [
    (("post",), "p1", ("p2",)),                  # two ends of one stored run, at once
    (("post",), "p2e", ("p1",)),                 # an error end without outputs, and one with them
    (("both",), "partial'", ("p2", "partial")),  # the other writer's copy holds this end already
    (("post",), "p1", ("post-p3", "p2")),        # the other's copy, of a start it got again, ingested later
], ids=["two-ends", "error-and-outputs", "holds-it-already", "ingested-later"])
def test_two_writers_ending_one_stored_run_at_once_both_ends_apply(tmp_path, monkeypatch, before, this, other):
    """Two writers each apply their end to a run the store holds, each before the other's
    commit. The one that commits last applies its end again over the other's copy, so the run
    ends as in a warehouse that ingested the other's files first. Before, each appended a copy
    with its own end and the views kept one: the other end was lost."""
    from relops_pipeline.lib.ingest import ingest_paths_to_store
    from relops_pipeline.lib.settings import TraceStoreSettings
    from relops_pipeline.lib.tracestore.linked import TraceTables

    files = _run_files(tmp_path)
    tables = TraceTables(TraceStoreSettings(uri=str(tmp_path / "store")))
    for i, name in enumerate(before):
        ingest_paths_to_store(tables, [files[name]], workdir=tmp_path / f"w{i}")
    ran = _another_writer_commits_first(monkeypatch, tables, [files[n] for n in other], tmp_path / "other",
                                        before_corrections=True)
    done = ingest_paths_to_store(tables, [files[this]], workdir=tmp_path / "this")
    monkeypatch.undo()
    assert ran and ran[0] is not None
    assert {u["span_id"] for u in done.span_updates} == {"run-1"}
    _as_in_the_warehouse(tmp_path, tables, [[files[n] for n in before], [files[n] for n in other], [files[this]]])


def _another_writer_after_this_ends_commit(monkeypatch, tables, files: list[Path], workdir: Path) -> list:
    """Right after this ingestion commits the ends it applied to stored runs, another writer
    ingests `files` (it reads the store with those ends in it) and commits."""
    from relops_pipeline.lib.ingest import ingest_paths_to_store
    from relops_pipeline.lib.tracestore.store import TraceStore

    append_many, ran = TraceStore.append_many, []

    def the_other_writer_after_this_end(self, sources, *args, **kwargs):
        done = append_many(self, sources, *args, **kwargs)
        if not ran and any(source.startswith("langsmith:") for _, source in sources):
            ran.append(None)  # before: the other writer's own commits go straight through
            ran[0] = ingest_paths_to_store(tables, files, workdir=workdir)
        return done

    monkeypatch.setattr(TraceStore, "append_many", the_other_writer_after_this_end)
    return ran


def test_an_end_applied_by_a_writer_that_saw_this_ones_stays_last(tmp_path, monkeypatch):
    """This ingestion commits P1 over the stored run; another writer then reads the store (P1
    is in it), applies P2 and commits, all before this ingestion's last commit. P2 came after
    P1 and stays the run's last end, as in the warehouse (post, p1, p2): this writer does not
    apply P1 again over the copy made over its own."""
    from relops_pipeline.lib.ingest import ingest_paths_to_store
    from relops_pipeline.lib.settings import TraceStoreSettings
    from relops_pipeline.lib.tracestore.linked import TraceTables

    files = _run_files(tmp_path)
    tables = TraceTables(TraceStoreSettings(uri=str(tmp_path / "store")))
    ingest_paths_to_store(tables, [files["post"]], workdir=tmp_path / "w0")
    ran = _another_writer_after_this_ends_commit(monkeypatch, tables, [files["p2"]], tmp_path / "other")
    ingest_paths_to_store(tables, [files["p1"]], workdir=tmp_path / "this")
    monkeypatch.undo()
    assert ran
    _as_in_the_warehouse(tmp_path, tables, [[files[n]] for n in ("post", "p1", "p2")])


def test_a_writer_that_saw_the_first_of_this_ones_commits_keeps_its_later_end(tmp_path, monkeypatch):
    """As above, this ingestion also holds run-3's start, whose end the other writer keeps
    waiting: this ingestion applies it after its own commit, a second commit of ends. The other
    writer read the first (P1 over run-1) before applying P2: P2 stays run-1's last end, as in
    the warehouse (post, then this file, then the other's)."""
    from relops_pipeline.lib.ingest import ingest_paths_to_store
    from relops_pipeline.lib.settings import TraceStoreSettings
    from relops_pipeline.lib.tracestore.linked import TraceTables

    files = _run_files(tmp_path)
    run3 = {**_RUN, "id": "run-3", "trace_id": "run-3", "dotted_order": "20261206T010000000000Zrun-3"}
    end3 = {"id": "run-3", "trace_id": "run-3", "end_time": "2026-12-06T01:00:02+00:00", "outputs": {"answer": "r3"}}
    (this := tmp_path / "p1-post3.json").write_text(json.dumps({"post": [run3], "patch": [_P1]}))
    (other := tmp_path / "p2-end3.json").write_text(json.dumps({"patch": [_P2, end3]}))
    tables = TraceTables(TraceStoreSettings(uri=str(tmp_path / "store")))
    ingest_paths_to_store(tables, [files["post"]], workdir=tmp_path / "w0")
    ran = _another_writer_after_this_ends_commit(monkeypatch, tables, [other], tmp_path / "other")
    ingest_paths_to_store(tables, [this], workdir=tmp_path / "this")
    monkeypatch.undo()
    assert ran
    _as_in_the_warehouse(tmp_path, tables, [[files["post"]], [this], [other]])


@pytest.mark.parametrize("vacuumed", [False, True], ids=["", "a-vacuum-in-between"])
def test_an_end_merged_in_the_other_writers_ingestion_is_not_applied_again(tmp_path, monkeypatch, vacuumed):
    """The other writer's ingestion holds P2 and then the run's start with P1 (P2 waits, then
    merges into the start as it is read; its reject stays); this one holds the bare start and
    reads the store before that commit. Its look after the commit took P2 for an end still
    waiting and applied it over P1; the warehouse (the other's files, then these) ends the run
    with P1. Also when an operator's vacuum of the rejects (its commits name no batches) came
    in between."""
    import shutil

    from relops_pipeline.lib.ingest import ingest_paths_to_store
    from relops_pipeline.lib.settings import TraceStoreSettings
    from relops_pipeline.lib.tracestore.linked import TraceTables
    from relops_pipeline.lib.tracestore.schema import TRACE_REJECTS

    files = _run_files(tmp_path)
    tables = TraceTables(TraceStoreSettings(uri=str(tmp_path / "store")))

    def vacuum_an_orphan() -> None:
        rejects = tables.store(TRACE_REJECTS)
        written = next((tmp_path / "store" / "trace_rejects").rglob("*.parquet"))
        shutil.copy(written, written.with_name("orphan.parquet"))  # as a writer killed before its commit leaves
        assert rejects.vacuum(retention_hours=0)

    ran = _another_writer_commits_first(monkeypatch, tables, [files["p2"], files["both"]], tmp_path / "other",
                                        then=vacuum_an_orphan if vacuumed else None)
    ingest_paths_to_store(tables, [files["bare"]], workdir=tmp_path / "this")
    monkeypatch.undo()
    assert ran and ran[0] is not None
    _as_in_the_warehouse(tmp_path, tables, [[files["p2"], files["both"]], [files["bare"]]])


def test_a_file_delivered_again_does_not_end_a_run_another_file_stored(tmp_path):
    """A file with run-1's start and end and a new run-2, after run-1's start alone: the
    warehouse drops run-1's duplicate (with its end), and so does the store, also when the
    file is delivered again (its source committed before: not a retry of the run's own file)."""
    from relops_pipeline.lib.ingest import ingest_paths_to_store
    from relops_pipeline.lib.settings import TraceStoreSettings
    from relops_pipeline.lib.tracestore.linked import TraceTables

    files = _run_files(tmp_path)
    tables = TraceTables(TraceStoreSettings(uri=str(tmp_path / "store")))
    order = ("post", "both-and-run-2", "both-and-run-2")
    for i, name in enumerate(order):
        ingest_paths_to_store(tables, [files[name]], workdir=tmp_path / f"w{i}")
    _as_in_the_warehouse(tmp_path, tables, [[files[n]] for n in order])


def test_an_earlier_end_delivered_again_after_a_later_one_applies_again_as_in_the_warehouse(tmp_path):
    """Start, P1, P2 (no error), then P1's file again: the warehouse applies P1 again; the
    store's copy of that is a correction of its own, not taken for P1's first one."""
    from relops_pipeline.lib.ingest import ingest_paths_to_store
    from relops_pipeline.lib.settings import TraceStoreSettings
    from relops_pipeline.lib.tracestore.linked import TraceTables

    files = _run_files(tmp_path)
    tables = TraceTables(TraceStoreSettings(uri=str(tmp_path / "store")))
    order = ("post", "p1", "p2-ok", "p1")
    for i, name in enumerate(order):
        ingest_paths_to_store(tables, [files[name]], workdir=tmp_path / f"w{i}")
    _as_in_the_warehouse(tmp_path, tables, [[files[n]] for n in order])


@pytest.mark.parametrize("end", ["p1", "partial"])
def test_a_start_stored_before_takes_the_end_of_a_later_file_in_an_ingestion_of_its_copy(tmp_path, end):
    """The start stored by one ingestion; then one ingestion of a copy of the start and, in a
    later file, its end (with an end time, or outputs alone): the copy is a duplicate, and its
    end applies to the stored run, as the warehouse applies it."""
    from relops_pipeline.lib.ingest import ingest_paths_to_store
    from relops_pipeline.lib.settings import TraceStoreSettings
    from relops_pipeline.lib.tracestore.linked import TraceTables

    files = _run_files(tmp_path)
    copy = tmp_path / "copy" / "post.json"
    copy.parent.mkdir()
    copy.write_bytes(files["post"].read_bytes() + b"\n")  # other bytes: another source
    tables = TraceTables(TraceStoreSettings(uri=str(tmp_path / "store")))
    ingest_paths_to_store(tables, [files["post"]], workdir=tmp_path / "w0")
    ingest_paths_to_store(tables, [copy, files[end]], workdir=tmp_path / "w1")
    _as_in_the_warehouse(tmp_path, tables, [[files["post"]], [copy, files[end]]])


@pytest.mark.parametrize("ingestions", [
    (("post",), ("p1",), ("copy", "p2")),           # ended before; the copy and a later end together
    (("post",), ("p2",), ("copy", "p1")),           # the same, the ends the other way round
    (("post",), ("p1", "copy")),                    # the end before the copy, in one ingestion
    (("post",), ("p1",), ("p2", "copy")),           # a later end before the copy of a run ended before
    (("post",), ("copy", "p1"), ("copy", "p2")),    # the copy's file again (its source committed before)
    (("post",), ("bare", "p1")),                    # a copy that starts otherwise (no inputs)
    (("post",), ("bare", "p1"), ("copy", "p2")),    # both, one after the other
    (("p3", "post"), ("p1", "p3", "copy")),         # an end merged before (its reject stays), again with a copy
    (("post",), ("post-p3", "partial")),            # a copy posted with its end, then a later file's end
], ids=["ended-copy-later-end", "ended-copy-earlier-end", "end-then-copy", "end-then-copy-of-ended",
        "same-copy-again", "copy-starting-otherwise", "both", "merged-end-again-with-copy", "copy-posted-ended"])
def test_an_end_that_comes_with_a_copy_of_a_stored_run_applies_to_the_stored_run(tmp_path, ingestions):
    """The start stored by one ingestion; later ingestions each hold a copy of that start (a
    duplicate) and an end of the run, in either order, the run ended or not before: the
    warehouse drops the copy and applies the end to the run it holds, and so does the store
    (the store's run keeps its inputs, and ends as the warehouse's)."""
    import duckdb

    from relops_pipeline.lib.ingest import ingest_paths_to_store
    from relops_pipeline.lib.settings import TraceStoreSettings
    from relops_pipeline.lib.tracestore.linked import TraceTables

    files = _run_files(tmp_path)
    files["copy"] = files["post'"]
    tables = TraceTables(TraceStoreSettings(uri=str(tmp_path / "store")))
    for i, names in enumerate(ingestions):
        ingest_paths_to_store(tables, [files[n] for n in names], workdir=tmp_path / f"w{i}")
    _as_in_the_warehouse(tmp_path, tables, [[files[n] for n in names] for names in ingestions])
    store = duckdb.connect()
    tables.attach(store)
    assert store.execute("SELECT input_text FROM spans").fetchall() == [('{"question":"q"}',)]
