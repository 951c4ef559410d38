"""A home whose traces live in the trace store (relops.yaml `trace_store:`): `relops ingest`
appends spans, GenAI events and rejects to Delta tables instead of the warehouse, the warehouse
keeps the control state (ingest_batches), and every computation reads the store through views
named like the warehouse tables — with exactly the results of a home that keeps them in the
warehouse. Several ingestions write at once; a home is upgraded with nothing lost."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from relops_pipeline.cli.ingest import FOLLOWUPS_LOCK
from relops_pipeline.defs.resources import relops_resources
from relops_pipeline.lib.home import Home
from relops_pipeline.lib.settings import SettingsError, load_settings
from relops_pipeline_tests.conftest import FIXTURES, run_cli
from relops_pipeline_tests.procs import popen, reap, scaled
from relops_pipeline_tests.test_ingest_small_files import _small_files

LANGFUSE = FIXTURES / "langfuse"
OTEL = FIXTURES / "otel_genai_openai_v2" / "per_test"


def _use_store(home: Home) -> None:
    with open(home.settings_file, "a") as fh:
        fh.write("\ntrace_store: true\n")


def _traces(folder: Path) -> Path:
    """Small OTLP files (with log exports and bad lines), OpenInference and Langfuse documents,
    and the LangSmith SDK's runs with their starts (posts) and ends (patches) in two files
    (every store commit costs ~0.1 s: a few of each)."""
    from relops_pipeline_tests.test_langsmith_runs import runs_of

    _small_files(folder, tests=3)
    (folder / "langfuse").mkdir()
    for doc in sorted(LANGFUSE.glob("*.json"))[:8]:
        shutil.copy2(doc, folder / "langfuse" / doc.name)
    (folder / "langsmith").mkdir()
    runs = [runs_of(n) for n in (2, 3, 4)]
    # Named so that the posts are read first when both files are in one ingestion.
    (folder / "langsmith" / "1-post.json").write_text(json.dumps({"post": [r for run in runs for r in run["post"]]}))
    (folder / "langsmith" / "2-patch.json").write_text(json.dumps({"patch": [r for run in runs for r in run.get("patch", [])]}))
    return folder


def _contents(root: Path, *, span_origin: bool = True) -> dict:
    """What a home's computations see: spans, events, rejects, daily signals, features, batches.
    `span_origin=False`: not which line of which file a span was read from (a span in two
    files is kept from the one ingested first)."""
    origin = "source_file, ingest_batch_id, ingested_at" + ("" if span_origin else ", source_line")
    with relops_resources(root)["warehouse"].get_connection() as con:
        return {
            "spans": con.execute(f"SELECT * EXCLUDE ({origin}) FROM spans "
                                 "ORDER BY trace_id, span_id").fetchall(),
            "events": con.execute("SELECT * EXCLUDE (source_file, ingest_batch_id) FROM genai_events "
                                  "ORDER BY event_key").fetchall(),
            "rejects": con.execute("SELECT regexp_extract(source_file, '[^/]+$'), source_line, raw, reason "
                                   "FROM trace_rejects ORDER BY ALL").fetchall(),
            # Sums of floats in another row order differ in the last bits: compared to 12 digits.
            "signals": [tuple(float(f"{v:.12g}") if isinstance(v, float) else v for v in row) for row in con.execute(
                "SELECT * EXCLUDE (computed_at) FROM daily_signals ORDER BY ALL").fetchall()],
            "features": con.execute("SELECT count(*), count(DISTINCT trace_id) FROM trace_features").fetchall(),
            "batches": con.execute("SELECT count(*), sum(records_read), sum(accepted), sum(rejected), sum(duplicates) "
                                   "FROM ingest_batches").fetchall(),
        }


def _warehouse_rows(root: Path) -> list[int]:
    import duckdb

    con = duckdb.connect(str(Home.resolve(root).warehouse_path), read_only=True)
    try:
        return [con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in ("spans", "genai_events", "trace_rejects")]
    finally:
        con.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Home, dict]:
    """The traces, a warehouse home that ingested them (what a store home must equal) and what
    `relops ingest --json` said: made once for the tests of this module, which only read it."""
    from relops_pipeline.cli import main

    root = tmp_path_factory.mktemp("reference")
    traces = _traces(root / "traces")
    home = Home.resolve(root / "home")
    home.init(example=True)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--home", str(home.root), "ingest", str(traces), "--json"]) == 0
    return traces, home, json.loads(out.getvalue())


def test_a_home_with_the_trace_store_computes_exactly_what_the_warehouse_home_does(tmp_path, capsys, reference):
    traces, wh, wh_out = reference
    st = Home.resolve(tmp_path / "store")
    st.init(example=True)
    _use_store(st)
    code, out, err = run_cli(capsys, st.root, "ingest", str(traces), "--json")
    assert code == 0, err
    st_out = json.loads(out)

    assert st_out["totals"] == wh_out["totals"]
    assert st_out["totals"]["rejected"] > 0 and st_out["totals"]["accepted"] > 50
    for f in st_out["files"]:
        assert f["read"] == f["accepted"] + f["rejected"] + f["duplicates"], f
    got, want = _contents(st.root), _contents(wh.root)
    assert got == want
    assert len(got["spans"]) > 50 and got["events"] and got["signals"]
    # The spans are in the Delta tables, not in the warehouse, which records the batches.
    assert _warehouse_rows(st.root) == [0, 0, 0]
    assert (st.root / "tracestore" / "spans" / "_delta_log").is_dir()

    # Ingesting the same files again adds nothing: every record a duplicate, counts unchanged.
    code, out, err = run_cli(capsys, st.root, "ingest", str(traces), "--json")
    assert code == 0, err
    again = json.loads(out)["totals"]
    assert (again["accepted"], again["rejected"]) == (0, 0)
    assert again["duplicates"] == again["read"] == st_out["totals"]["read"]
    after = _contents(st.root)
    assert {k: v for k, v in after.items() if k != "batches"} == {k: v for k, v in got.items() if k != "batches"}


def test_two_ingestions_write_the_store_at_once_and_each_span_counts_once(tmp_path, reference):
    """Two `relops ingest` processes into one home, with overlapping files (the same files under
    other names, and files both get): the store holds each span once for every query."""
    traces, reference_home, _ = reference
    # A capture's traces and its log export (GenAI events filling the spans' text) may go to
    # different writers: whichever commits last completes the other's spans.
    first, second = tmp_path / "first", tmp_path / "second"
    for i, f in enumerate(sorted(p for p in traces.rglob("*") if p.is_file())):
        for dest in ([first] if i % 3 == 0 else [second] if i % 3 == 1 else [first, second]):
            target = dest / f.relative_to(traces)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)  # with its mtime: a document without times is dated by it

    home = Home.resolve(tmp_path / "home")
    home.init(example=True)
    _use_store(home)
    # The follow-ups' turn is held here until both ingestions have committed: then the first
    # writer's follow-ups refresh the days of both, and the second finds nothing left to do.
    home.dagster_home.mkdir(parents=True, exist_ok=True)
    turn = open(home.dagster_home / FOLLOWUPS_LOCK, "w")  # noqa: SIM115 -- closed when both have committed
    fcntl.flock(turn, fcntl.LOCK_EX)
    # The instance's storage is created before the writers start: this test's own polling opens
    # it without the CLI's creation lock, and three processes creating it at once race in
    # Dagster's schema migrations (two heads in `alembic_version`, seen once on CI).
    assert _runs(home, "ingest_traces_to_store_job", dg.DagsterRunStatus.SUCCESS) == []
    writers = [popen([sys.executable, "-m", "relops_pipeline.cli", "--home", str(home.root), "ingest", str(d), "--json"],
                     stdout=-1, stderr=-1, text=True) for d in (first, second)]
    outputs = []
    try:
        deadline = time.monotonic() + scaled(300)
        while len(_runs(home, "ingest_traces_to_store_job", dg.DagsterRunStatus.SUCCESS)) < 2:
            assert all(w.poll() is None for w in writers) and time.monotonic() < deadline, "the ingestions did not commit"
            time.sleep(0.2)
        turn.close()
        for w in writers:
            out, err = w.communicate(timeout=scaled(300))
            assert w.returncode == 0, err[-3000:]
            outputs.append(json.loads(out))
    finally:
        turn.close()
        for w in writers:
            reap(w)
    for out in outputs:
        for f in out["files"]:
            assert f["read"] == f["accepted"] + f["rejected"] + f["duplicates"], f
    got, want = _contents(home.root, span_origin=False), _contents(reference_home.root, span_origin=False)
    for key in ("spans", "events", "signals", "features"):
        assert got[key] == want[key], key
    assert _warehouse_rows(home.root) == [0, 0, 0]
    # One pass of follow-ups for both: the other writer's runs are named, none ran twice.
    ran, covered = sorted((o for o in outputs), key=lambda o: len(o["covered_by"]))
    assert not ran["covered_by"] and ran["signals_run_ids"] and ran["drift_run_ids"]
    # (The first writer refreshed the second's days as days left stale by another ingestion.)
    assert covered["covered_by"] and set(covered["covered_by"]) <= set(ran["signals_run_ids"]) | set(ran["drift_run_ids"])
    assert covered["signals_run_ids"] and set(covered["signals_run_ids"]) <= set(ran["signals_run_ids"])
    followups = _runs(home, "__ASSET_JOB", dg.DagsterRunStatus.SUCCESS)
    assert sorted(r.run_id for r in followups) == sorted(ran["signals_run_ids"] + ran["drift_run_ids"])


def _runs(home: Home, job: str, status) -> list:
    with dg.DagsterInstance.from_config(str(home.dagster_home)) as instance:
        return [r for r in instance.get_runs(dg.RunsFilter(job_name=job, statuses=[status]))]


def test_an_ingestion_killed_while_reading_or_after_its_commit_loses_and_duplicates_nothing(tmp_path, capsys, reference):
    """SIGKILL `relops ingest` into a store home while it reads its files, and again just after
    the store committed its spans (before the warehouse recorded the batches and before any
    follow-up ran); the next `relops ingest` of the same files leaves exactly what one clean
    ingestion leaves, signals and features included, and no scratch file behind."""
    traces, reference_home, _ = reference
    want = _contents(reference_home.root, span_origin=False)

    for phase in ("reading", "committed"):
        home = Home.resolve(tmp_path / phase)
        home.init(example=True)
        _use_store(home)
        scratch = home.warehouse_path.parent / "ingest-scratch"
        first_commit = home.root / "tracestore" / "spans" / "_delta_log" / f"{1:020d}.json"
        proc = popen([sys.executable, "-m", "relops_pipeline.cli", "--home", str(home.root), "ingest", str(traces)],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + scaled(180)
            while time.monotonic() < deadline and proc.poll() is None:
                if (phase == "reading" and any(scratch.glob(".ingest-*.duckdb"))) or (
                        phase == "committed" and first_commit.exists()):
                    break
                time.sleep(0.02)
            assert proc.poll() is None, f"the ingestion ended before it could be killed while {phase}"
        finally:
            reap(proc, sig=signal.SIGKILL)
        assert (first_commit.exists()) == (phase == "committed")

        code, out, err = run_cli(capsys, home.root, "ingest", str(traces), "--json")
        assert code == 0, err
        for f in json.loads(out)["files"]:
            assert f["read"] == f["accepted"] + f["rejected"] + f["duplicates"], f
        got = _contents(home.root, span_origin=False)
        for key in ("spans", "events", "rejects", "signals", "features"):
            assert got[key] == want[key], (phase, key)
        assert not list(scratch.glob(".ingest-*")), "the killed ingestion's scratch file is left behind"


def test_upgrading_a_home_moves_its_traces_into_the_store_with_nothing_lost(tmp_path, capsys, home, reference):
    traces, reference_home, _ = reference
    code, _, err = run_cli(capsys, home.root, "ingest", str(traces / "oi"), str(traces / "otel"))
    assert code == 0, err
    before = _contents(home.root)
    rows_before = _warehouse_rows(home.root)
    assert rows_before[0] > 0 and rows_before[2] > 0

    _use_store(home)
    code, out, err = run_cli(capsys, home.root, "ingest", str(traces / "langfuse"), str(traces / "langsmith"), "--json")
    assert code == 0, err
    assert _warehouse_rows(home.root) == [0, 0, 0]
    after = _contents(home.root)
    assert set(before["spans"]) <= set(after["spans"])
    assert set(before["events"]) <= set(after["events"]) and set(before["rejects"]) == set(after["rejects"])
    assert len(after["spans"]) == len(before["spans"]) + json.loads(out)["totals"]["accepted"] - sum(
        f["events_accepted"] for f in json.loads(out)["files"])

    # The same as the home that ingested everything into the warehouse.
    want = _contents(reference_home.root)
    for key in ("spans", "events", "rejects", "signals", "features"):
        assert after[key] == want[key], key


_UNTIMED_LOG = {"resourceLogs": [{"resource": {"attributes": [
    {"key": "service.name", "value": {"stringValue": "support-triage"}}]}, "scopeLogs": [{"logRecords": [
        {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
         "eventName": "gen_ai.user.message",
         "body": {"kvlistValue": {"values": [{"key": "content", "value": {"stringValue": "where is my order?"}}]}}}]}]}]}


def test_an_event_without_a_time_is_kept_by_a_store_home_and_moves_with_the_upgrade(tmp_path, capsys):
    """An OTLP log record with neither timeUnixNano nor observedTimeUnixNano: a warehouse home
    keeps it with no event_time; a store home keeps it too (in the undated partition; the
    ingestion run failed on it before), counts it once when it comes again, and a warehouse
    home holding one is upgraded to the store with nothing lost."""
    untimed = tmp_path / "untimed.otlp.jsonl"
    untimed.write_text(json.dumps(_UNTIMED_LOG) + "\n")
    again = tmp_path / "again" / "untimed-again.otlp.jsonl"
    again.parent.mkdir()
    again.write_text(json.dumps(_UNTIMED_LOG) + "\n\n")  # other bytes: not a re-delivery of the file
    contents = {}
    for name in ("warehouse", "store", "upgraded"):
        h = Home.resolve(tmp_path / name)
        h.init(example=True)
        if name == "store":
            _use_store(h)
        code, out, err = run_cli(capsys, h.root, "ingest", str(untimed), "--json")
        assert code == 0, err
        assert json.loads(out)["totals"]["accepted"] == 1
        if name == "upgraded":
            _use_store(h)  # the next ingestion moves the warehouse's traces into the store
        marker = h.warehouse_path.parent / ".traces-moved-to-store"
        assert marker.is_file() == (name == "store")  # written by a store ingestion, once it moved any
        code, out, err = run_cli(capsys, h.root, "ingest", str(again), "--json")
        assert code == 0, err
        assert json.loads(out)["totals"]["duplicates"] == 1, out
        assert marker.is_file() == (name != "warehouse")
        if name != "warehouse":
            assert marker.read_text() == load_settings(h.settings_file).trace_store.uri
        contents[name] = _contents(h.root)
        assert [e[3] for e in contents[name]["events"]] == [None]  # event_time
    assert contents["store"]["events"] == contents["warehouse"]["events"] == contents["upgraded"]["events"]
    assert _warehouse_rows(tmp_path / "upgraded") == [0, 0, 0]

    # Back to the warehouse: its first ingestion removes the marker, so that switching to the
    # store again moves what the warehouse gathered meanwhile before anything is appended.
    h = Home.resolve(tmp_path / "upgraded")
    h.settings_file.write_text(h.settings_file.read_text().replace("\ntrace_store: true\n", "\n"))
    code, _, err = run_cli(capsys, h.root, "ingest", str(untimed))
    assert code == 0, err
    assert not (h.warehouse_path.parent / ".traces-moved-to-store").exists()


def test_the_trace_store_setting(tmp_path):
    settings = tmp_path / "relops.yaml"
    settings.write_text("trace_store: true\n")
    assert load_settings(settings).trace_store.uri == str(tmp_path.resolve() / "tracestore")
    settings.write_text("trace_store:\n  uri: s3://bucket/traces\n  storage_options: {AWS_REGION: eu-west-1}\n")
    store = load_settings(settings).trace_store
    assert (store.table_uri("spans"), store.storage_options) == ("s3://bucket/traces/spans", {"AWS_REGION": "eu-west-1"})
    settings.write_text("ingest: {}\n")
    assert load_settings(settings).trace_store is None
    assert load_settings(settings).coalesce_wait_s == 30
    settings.write_text("ingest: {coalesce_wait_s: 0}\n")
    assert load_settings(settings).coalesce_wait_s == 0
    for bad in ("-1", "soon", "86400"):
        settings.write_text(f"ingest: {{coalesce_wait_s: {bad}}}\n")
        with pytest.raises(SettingsError, match="ingest.coalesce_wait_s"):
            load_settings(settings)
    for bad, says in (("trace_store: 5\n", "expected true or a mapping"), ("trace_store: {url: x}\n", r"unknown key\(s\) url")):
        settings.write_text(bad)
        with pytest.raises(SettingsError, match=says):
            load_settings(settings)


def test_the_warehouse_ingestion_job_refuses_a_store_home(tmp_path, home, resources):
    import dagster as dg

    from relops_pipeline.defs.ingest.jobs import ingest_traces_job

    _use_store(home)
    (tmp_path / "t.jsonl").write_text("")
    with dg.instance_for_test() as instance:
        job = dg.Definitions(jobs=[ingest_traces_job], resources=resources).resolve_job_def("ingest_traces_job")
        result = job.execute_in_process(
            run_config={"ops": {"plan_ingest_chunks": {"config": {"paths": [str(tmp_path / "t.jsonl")]}}}},
            instance=instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "keeps its traces in the trace store" in failure.step_failure_data.error.message


@pytest.mark.parametrize("post_first", [True, False], ids=["post-then-patch", "patch-then-post"])
def test_langsmith_runs_split_across_ingestions_complete_in_the_store_as_in_the_warehouse(tmp_path, post_first):
    """The LangSmith SDK sends a run's start (post) and its end (patch) in separate requests, so
    they often land in different ingestions, in either order. A store home completes the run as
    a warehouse home does: the same spans (end time, latency, output, tokens, cost, status), the
    same count per file (an applied patch is a duplicate, a waiting one a `pending:` reject) and
    the same span_updates to recompute the day's features."""
    import duckdb

    from relops_pipeline.lib.ingest import ingest_file, ingest_paths_to_store
    from relops_pipeline.lib.settings import IngestSettings, Price, TraceStoreSettings
    from relops_pipeline.lib.tracestore.linked import TraceTables
    from relops_pipeline.lib.warehouse import migrate
    from relops_pipeline_tests.test_langsmith_runs import runs_of

    settings = IngestSettings(prices={"gpt-4o-mini": Price(input_per_mtok=0.15, output_per_mtok=0.6)})
    runs = [runs_of(n) for n in (2, 3, 4)]  # the SDK's requests: 4 runs, 2 of them ending with an error
    post, patch = tmp_path / "post.json", tmp_path / "patch.json"
    post.write_text(json.dumps({"post": [r for run in runs for r in run["post"]], "patch": []}))
    patch.write_text(json.dumps({"post": [], "patch": [r for run in runs for r in run.get("patch", [])]}))
    files = [post, patch] if post_first else [patch, post]

    wh = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    migrate(wh)
    by_warehouse = [ingest_file(wh, f, settings=settings) for f in files]
    tables = TraceTables(TraceStoreSettings(uri=str(tmp_path / "store")))
    by_store = [ingest_paths_to_store(tables, [f], workdir=tmp_path / "scratch", settings=settings) for f in files]

    def counts(r) -> tuple:
        return r.read, r.accepted, r.rejected, r.duplicates

    assert [counts(r) for r in by_warehouse] == [counts(s.summary.files[0]) for s in by_store]
    # The case is what it says: four patches applied to stored runs, or kept waiting for them.
    assert counts(by_warehouse[1 if post_first else 0]) == ((4, 0, 0, 4) if post_first else (4, 0, 4, 0))
    store = duckdb.connect()
    tables.attach(store)
    # A patch that waited for its post: the warehouse merges it into the post as it reads it,
    # so the run's attributes also gain the patch's metadata (usage_metadata); the store applies
    # it to the span as the warehouse applies a patch to a run already ingested, which leaves
    # the attributes as posted. Every other column is the same.
    content = ("SELECT * EXCLUDE (ingest_batch_id, ingested_at, attributes), CAST(attributes AS VARCHAR) "
               "FROM spans ORDER BY trace_id, span_id")
    spans = wh.execute(content).fetchall()
    stored = store.execute(content).fetchall()
    assert [s[:-1] for s in stored] == [s[:-1] for s in spans]
    for (*_, by_store_attrs), (*_, by_warehouse_attrs) in zip(stored, spans, strict=True):
        ours, theirs = json.loads(by_store_attrs), json.loads(by_warehouse_attrs)
        assert ours == theirs if post_first else ours.items() <= theirs.items()
    done = {r[0]: r[1:] for r in wh.execute("SELECT span_name, status, output_text, end_time IS NOT NULL FROM spans").fetchall()}
    assert done["answer"] == ("ok", "Paris.", True) and done["failing"][0] == "error" and done["chat"][2]
    updates = "SELECT trace_id, span_id, start_time, source_file, source_line, reason FROM span_updates ORDER BY ALL"
    recorded = [tuple(u[k] for k in ("trace_id", "span_id", "start_time", "source_file", "source_line", "reason"))
                for s in by_store for u in s.span_updates]
    assert sorted(recorded) == wh.execute(updates).fetchall()
    # The completed run's day is refreshed by the ingestion that completed it.
    day = wh.execute("SELECT min(start_time)::DATE FROM spans").fetchall()[0][0]
    assert day.isoformat() in by_store[1].spans_by_day
    rejects = "SELECT regexp_extract(source_file, '[^/]+$'), source_line, reason FROM trace_rejects ORDER BY ALL"
    assert store.execute(rejects).fetchall() == wh.execute(rejects).fetchall()


def test_a_langsmith_run_ended_in_a_later_relops_ingest_is_complete_in_a_store_home(tmp_path, capsys):
    """Through `relops ingest` and its Dagster runs: a store home that gets a run's post in one
    ingestion and its patch in the next records the patches' span_updates in the warehouse and
    computes the same spans, signals and features as a warehouse home."""
    from relops_pipeline_tests.test_langsmith_runs import runs_of

    runs = [runs_of(n) for n in (2, 3, 4)]
    (tmp_path / "post.json").write_text(json.dumps({"post": [r for run in runs for r in run["post"]], "patch": []}))
    (tmp_path / "patch.json").write_text(json.dumps({"post": [], "patch": [r for run in runs for r in run.get("patch", [])]}))
    contents, updates = {}, {}
    for name, store in (("warehouse", False), ("store", True)):
        h = Home.resolve(tmp_path / name)
        h.init(example=True)
        if store:
            _use_store(h)
        for step in ("post", "patch"):
            code, _, err = run_cli(capsys, h.root, "ingest", str(tmp_path / f"{step}.json"))
            assert code == 0, err
        contents[name] = _contents(h.root)
        with relops_resources(h.root)["warehouse"].get_connection() as con:
            updates[name] = con.execute("SELECT trace_id, span_id, source_line, reason FROM span_updates ORDER BY ALL").fetchall()
    assert contents["store"] == contents["warehouse"]
    assert len(updates["store"]) == 4 and updates["store"] == updates["warehouse"]
