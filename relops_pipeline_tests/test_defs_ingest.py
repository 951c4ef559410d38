"""Dagster wiring of ingestion: the ops, assets and checks on an ephemeral instance, and the
sensors evaluated with build_sensor_context."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time

import dagster as dg

from relops_pipeline.defs.followups import INGESTED_METADATA_KEY, SIGNALS_ASSETS, after_ingestion
from relops_pipeline.defs.ingest.assets import daily_signals, raw_traces
from relops_pipeline.defs.ingest.jobs import ingest_traces_job
from relops_pipeline.defs.ingest.sensors import followups_sensor, landing_sensor
from relops_pipeline.defs.resources import WarehouseResource
from relops_pipeline.lib.warehouse import open_warehouse
from relops_pipeline_tests.conftest import FIXTURES

LATEST = FIXTURES / "otel_genai_openai_v2" / "ALL.latest_experimental.traces.jsonl"


def _evaluate(sensor, instance, cursor, resources):
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        return sensor(context)


def _ingest(resources, instance, path=LATEST):
    job = dg.Definitions(jobs=[ingest_traces_job], resources=resources).resolve_job_def("ingest_traces_job")
    result = job.execute_in_process(run_config={"ops": {"plan_ingest_chunks": {"config": {"paths": [str(path)]}}}},
                                    instance=instance)
    assert result.success
    return result


def test_ingest_job_reports_the_days_it_touched_as_raw_traces_materializations(home, resources):
    with dg.instance_for_test() as instance:
        result = _ingest(resources, instance)
        out = result.output_for_node("report_ingestion")
        assert out["totals"]["accepted"] == 72
        mats = [m for m in result.asset_materializations_for_node("report_ingestion") if m.asset_key == dg.AssetKey("raw_traces")]
        days = [[a, b] for a, b in out["day_ranges"]]
        assert sorted(m.partition for m in mats) == sorted({d for r in days for d in r})
        assert sum(m.metadata[INGESTED_METADATA_KEY].value for m in mats) == 72


def test_raw_traces_checks_and_daily_signals_for_a_day(home, resources):
    with open_warehouse(home.warehouse_path) as con:
        from relops_pipeline.lib.ingest import ingest_file

        r = ingest_file(con, LATEST)
    day = r.min_start_time.date().isoformat()
    with dg.instance_for_test() as instance:
        result = dg.materialize([raw_traces, daily_signals], partition_key=day, resources=resources, instance=instance)
        assert result.success
        evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert set(evals) == {"keys_not_null", "span_ids_unique", "times_ordered", "latency_not_negative",
                              "unknown_release_share", "latency_in_range"}
        assert evals["span_ids_unique"].passed
        # Every fixture span has no release (the SDK sets no service.version): the WARN check says so.
        assert not evals["unknown_release_share"].passed
        mats = result.asset_materializations_for_node("raw_traces")
        assert mats[0].metadata["spans"].value == r.spans_accepted
    with open_warehouse(home.warehouse_path) as con:
        n = con.execute("SELECT sum(spans) FROM daily_signals WHERE day = ?", [day]).fetchone()[0]
    assert n == r.spans_accepted


def _definitions(resources):
    from relops_pipeline.definitions import defs

    return dg.Definitions(assets=list(defs.assets), resources=resources)


def test_the_planned_signals_run_covers_a_range_of_days_in_one_run(home, resources):
    with open_warehouse(home.warehouse_path) as con:
        from relops_pipeline.lib.ingest import ingest_file

        ingest_file(con, LATEST)
        days = [r[0] for r in con.execute("SELECT DISTINCT start_time::DATE FROM spans ORDER BY 1").fetchall()]
    [followup] = after_ingestion(days, source="test")
    assert followup.days == (days[0].isoformat(), days[-1].isoformat()) and followup.assets == SIGNALS_ASSETS
    with dg.instance_for_test() as instance:
        job = _definitions(resources).resolve_implicit_global_asset_job_def()
        for _ in range(2):  # one run over every day in the range; twice over is idempotent
            result = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey(a) for a in followup.assets],
                                            tags=followup.run_tags)
            assert result.success
            assert len(result.asset_materializations_for_node("daily_signals")) == len(days)
    with open_warehouse(home.warehouse_path) as con:
        rows = con.execute("SELECT count(*), sum(spans) FROM daily_signals").fetchone()
        total = con.execute("SELECT count(*) FROM spans").fetchone()[0]
    assert rows[1] == total


def test_landing_sensor_requests_new_settled_files_once(home, resources, monkeypatch):
    monkeypatch.setenv("RELOPS_LANDING_SETTLE_S", "0")
    dst = home.landing_dir / "collector"
    dst.mkdir(parents=True)
    shutil.copy(LATEST, dst / "a.jsonl")
    (dst / "README.md").write_text("not a trace file")
    with dg.instance_for_test() as instance:
        result = _evaluate(landing_sensor, instance, None, resources)
        assert len(result.run_requests) == 1
        paths = result.run_requests[0].run_config["ops"]["plan_ingest_chunks"]["config"]["paths"]
        assert paths == [str(dst / "a.jsonl")]
        assert isinstance(_evaluate(landing_sensor, instance, result.cursor, resources), dg.SkipReason)  # ticking again: nothing new
        # A re-delivered (changed) file is picked up again; span dedup keeps that safe.
        with open(dst / "a.jsonl", "a") as fh:
            fh.write(LATEST.read_text().splitlines()[0] + "\n")
        os.utime(dst / "a.jsonl", (time.time() - 10, time.time() - 10))
        result3 = _evaluate(landing_sensor, instance, result.cursor, resources)
        assert len(result3.run_requests) == 1


def test_landing_sensor_waits_for_files_to_settle(home, resources, monkeypatch):
    monkeypatch.setenv("RELOPS_LANDING_SETTLE_S", "3600")
    shutil.copy(LATEST, home.landing_dir / "fresh.jsonl")
    with dg.instance_for_test() as instance:
        assert isinstance(_evaluate(landing_sensor, instance, None, resources), dg.SkipReason)


def test_followups_sensor_plans_signals_after_ingestion_then_drift_and_canaries_after_features(home, resources):
    from relops_pipeline.lib.registry.rollout import adopt_state
    from relops_pipeline.lib.registry.state import RegistryState

    def tick(instance, cursor):
        result = _evaluate(followups_sensor, instance, cursor, resources)
        return result.run_requests or [], result.cursor

    with dg.instance_for_test() as instance:
        requests, cursor = tick(instance, None)
        assert requests == []  # the first tick only starts the cursor
        out = _ingest(resources, instance).output_for_node("report_ingestion")
        requests, cursor = tick(instance, cursor)
        ranges = [(r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"]) for r in requests]
        assert ranges == [tuple(r) for r in out["day_ranges"]]
        assert all(r.asset_selection == [dg.AssetKey(a) for a in SIGNALS_ASSETS] for r in requests)
        assert tick(instance, cursor)[0] == []  # nothing new: nothing asked twice
        with open_warehouse(home.warehouse_path) as con:
            canary = RegistryState("doc-qa", seq=2, live="v2.3.0", canary="v2.4.0", canary_percent=10.0,
                                   stage="canary", updated_by="li.wei", reason="canary",
                                   updated_at=dt.datetime(2026, 11, 20, 9, 0))
            adopt_state(con, canary, actor="relops-tests", reason="starting point")
        job = _definitions(resources).resolve_implicit_global_asset_job_def()
        for r in requests:
            assert job.execute_in_process(instance=instance, asset_selection=r.asset_selection, tags=r.tags).success
        requests, cursor = tick(instance, cursor)
        # The validation's own raw_traces materializations are not new ingestions.
        kinds = sorted((r.asset_selection[0].to_user_string(), r.partition_key) for r in requests)
        assert kinds == [("canary_analysis", "doc-qa--v2.4.0"), ("rolling_drift", None)]
        [drift] = [r for r in requests if r.partition_key is None]
        last = max(b for _, b in out["day_ranges"])
        assert drift.tags["dagster/asset_partition_range_start"] == min(a for a, _ in out["day_ranges"])
        assert drift.tags["dagster/asset_partition_range_end"] >= last  # the days whose week holds the new ones
        assert tick(instance, cursor)[0] == []


def test_followups_sensor_leaves_days_to_runs_that_have_not_read_them_yet(home, resources):
    """A new ingestion of days that a follow-up run will read anyway (not started yet, or
    started but still waiting for the warehouse before its first step) asks for no second run
    of them; a run that has begun a step has read already and covers nothing. Likewise for the
    drift."""
    from relops_pipeline.defs.followups import ROLLING_DRIFT_ASSETS, days_not_read_yet, traces_followup_job

    with dg.instance_for_test() as instance:
        cursor = _evaluate(followups_sensor, instance, None, resources).cursor
        [(a, b)] = _ingest(resources, instance).output_for_node("report_ingestion")["day_ranges"]
        job = dg.Definitions(jobs=[traces_followup_job], assets=list(_definitions(resources).assets),
                             resources=resources).resolve_job_def(traces_followup_job.name)

        def run_over(first: str, last: str, status, assets=SIGNALS_ASSETS) -> dg.DagsterRun:
            return instance.create_run_for_job(
                job, status=status, asset_selection=frozenset(dg.AssetKey(a) for a in assets),
                tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last})

        def signals_ranges() -> list[tuple[str, str]]:
            result = _evaluate(followups_sensor, instance, cursor, resources)
            return [(r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
                    for r in result.run_requests or []]

        waiting = run_over(a, b, dg.DagsterRunStatus.NOT_STARTED)
        assert set(days_not_read_yet(instance, SIGNALS_ASSETS).values()) == {waiting.run_id}
        assert signals_ranges() == []
        instance.report_run_canceled(waiting)
        assert signals_ranges() == [(a, b)]

        # Started: waiting for the warehouse it still covers; once a step began it does not.
        started = run_over(a, b, dg.DagsterRunStatus.STARTED)
        assert signals_ranges() == []
        instance.report_dagster_event(dg.DagsterEvent(dg.DagsterEventType.STEP_START.value, job_name=job.name,
                                                      step_key="raw_traces"), run_id=started.run_id)
        assert days_not_read_yet(instance, SIGNALS_ASSETS) == {}
        assert signals_ranges() == [(a, b)]
        # A re-execution of a run's failed steps keeps its selection and tags but refreshes only
        # those steps: it covers nothing.
        instance.create_run_for_job(
            job, status=dg.DagsterRunStatus.NOT_STARTED, asset_selection=frozenset(dg.AssetKey(k) for k in SIGNALS_ASSETS),
            tags={"dagster/asset_partition_range_start": a, "dagster/asset_partition_range_end": b,
                  "dagster/parent_run_id": started.run_id})
        assert days_not_read_yet(instance, SIGNALS_ASSETS) == {}
        # A drift run over the days is left to one that has not started.
        drift = run_over(a, b, dg.DagsterRunStatus.NOT_STARTED, ROLLING_DRIFT_ASSETS)
        assert days_not_read_yet(instance, ROLLING_DRIFT_ASSETS)[dt.date.fromisoformat(a)] == drift.run_id


def _spans_on(path, days: list[dt.date], tag: str):
    """A relops-jsonl file of one span at noon on each of `days` (ids prefixed by `tag`)."""
    path.write_text("".join(json.dumps({
        "trace_id": f"{tag}{i}", "span_id": f"{tag}{i}", "workflow": "doc-qa", "release": "v2.3.0", "kind": "llm",
        "start_time": f"{d.isoformat()}T12:00:00Z", "end_time": f"{d.isoformat()}T12:00:01Z"}) + "\n"
        for i, d in enumerate(days)))
    return path


def test_followups_sensor_gives_ranges_with_only_empty_days_between_them_one_run(home, resources, tmp_path):
    """As `relops ingest` does (defs/followups.bridge_gaps): days 4 days apart with nothing
    between them are refreshed by one run, 25 days apart by two; a day between them that holds
    spans keeps them apart."""
    d0 = dt.date.today() - dt.timedelta(days=40)  # within the daily partitions, which end today
    day = [d0 + dt.timedelta(days=k) for k in range(40)]

    def ranges(instance, cursor, path):
        job = dg.Definitions(jobs=[ingest_traces_job], resources=resources).resolve_job_def("ingest_traces_job")
        assert job.execute_in_process(
            run_config={"ops": {"plan_ingest_chunks": {"config": {"paths": [str(path)], "format": "relops-jsonl"}}}},
            instance=instance).success
        result = _evaluate(followups_sensor, instance, cursor, resources)
        return sorted((r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
                      for r in result.run_requests), result.cursor

    with dg.instance_for_test() as instance:
        cursor = _evaluate(followups_sensor, instance, None, resources).cursor
        got, cursor = ranges(instance, cursor, _spans_on(tmp_path / "a.jsonl", [day[0], day[5], day[30]], "a"))
        assert got == [(day[0].isoformat(), day[5].isoformat()), (day[30].isoformat(), day[30].isoformat())]
        got, cursor = ranges(instance, cursor, _spans_on(tmp_path / "b.jsonl", [day[2]], "b"))
        assert got == [(day[2].isoformat(), day[2].isoformat())]
        got, cursor = ranges(instance, cursor, _spans_on(tmp_path / "c.jsonl", [day[0], day[5]], "c"))
        assert got == [(day[0].isoformat(), day[0].isoformat()), (day[5].isoformat(), day[5].isoformat())]


def test_followups_sensor_heals_days_a_crash_left_without_signals(home, resources, monkeypatch):
    """Spans committed, then the process died before the follow-ups: the sensor finds the days
    from the data and asks for their signals once."""
    import importlib

    from relops_pipeline.lib.ingest import ingest_file

    # (the package's `sensors` attribute is its list of sensors: the module, by its name)
    monkeypatch.setattr(importlib.import_module("relops_pipeline.defs.ingest.sensors"), "HEAL_AFTER_S", 0)
    with open_warehouse(home.warehouse_path) as con:
        ingest_file(con, LATEST)  # committed; no follow-up ran
        days = sorted({r[0].isoformat() for r in con.execute("SELECT DISTINCT start_time::DATE FROM spans").fetchall()})
    with dg.instance_for_test() as instance:
        cursor = _evaluate(followups_sensor, instance, None, resources).cursor
        result = _evaluate(followups_sensor, instance, cursor, resources)
        [heal] = result.run_requests
        assert (heal.tags["dagster/asset_partition_range_start"], heal.tags["dagster/asset_partition_range_end"]) == (
            days[0], days[-1])
        assert heal.run_key.startswith("signals-heal-")
        # Not asked again before HEAL_EVERY_S; then the same stale state gives the same run key.
        assert _evaluate(followups_sensor, instance, result.cursor, resources).run_requests == []
        again = json.loads(result.cursor) | {"healed_at": 0}
        assert [r.run_key for r in _evaluate(followups_sensor, instance, json.dumps(again), resources).run_requests] == [
            heal.run_key]


def test_ingestion_takes_the_warehouse_chunk_by_chunk_with_exact_totals(home, resources, tmp_path):
    from relops_pipeline.lib.ingest import chunk_files

    files = []
    for i, src in enumerate(sorted((FIXTURES / "otel_genai_openai_v2").glob("*.jsonl"))[:3]):
        dst = tmp_path / f"f{i}.jsonl"
        dst.write_bytes(src.read_bytes())
        files.append(dst)
    sizes = [f.stat().st_size for f in files]
    assert len(chunk_files(files, max(sizes))) >= 2
    assert chunk_files(files, sum(sizes)) == [files] and chunk_files([], 10) == []
    with dg.instance_for_test() as instance:
        job = dg.Definitions(jobs=[ingest_traces_job], resources=resources).resolve_job_def("ingest_traces_job")
        result = job.execute_in_process(instance=instance, run_config={"ops": {"plan_ingest_chunks": {"config": {
            "paths": [str(tmp_path)], "chunk_mb": max(sizes) / (1024 * 1024)}}}})
        assert result.success
        steps = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
        assert len([s for s in steps if s.startswith("ingest_chunk[")]) >= 2  # one step (one pool claim) per chunk
        out = result.output_for_node("report_ingestion")
    with open_warehouse(home.warehouse_path) as con:
        spans = con.execute("SELECT count(*) FROM spans").fetchall()[0][0]
        events = con.execute("SELECT count(*) FROM genai_events").fetchall()[0][0]
    t = out["totals"]
    assert len(out["files"]) == 3 and t["read"] == t["accepted"] + t["rejected"] + t["duplicates"]
    assert t["accepted"] == spans + events


def test_every_runs_warehouse_connection_is_bounded_by_the_homes_memory_limit(home, resources):
    """Follow-ups scan whole days; their connections spill past `ingest.memory_limit` instead of
    keeping what they scanned cached (up to 80% of the machine by DuckDB's default)."""

    @dg.asset
    def reads_its_limit(warehouse: WarehouseResource) -> str:
        with warehouse.get_connection() as con:
            return con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]

    def limit() -> str:
        with dg.instance_for_test() as instance:
            result = dg.materialize([reads_its_limit], resources=resources, instance=instance)
            return result.output_for_node("reads_its_limit")

    assert limit() == "953.6 MiB"  # the default, 1GB
    text = home.settings_file.read_text()
    assert "  memory_limit: 1GB\n" in text
    home.settings_file.write_text(text.replace("  memory_limit: 1GB\n", "  memory_limit: 512MB\n"))
    assert limit() == "488.2 MiB"


def test_closing_a_runs_connection_frees_the_cycles_its_step_left(resources):
    """What a step leaves in reference cycles (pandas and Great Expectations objects do) is
    collected when it closes its warehouse connection, not at some later collection, so the
    next step's peak does not stack on it; a step that left the process within
    COLLECT_GROWTH_MB of its size after the last collection is not worth a full collection
    (~0.2 s: it walks every object of the process) and leaves its small cycles to the next."""
    import gc
    import weakref

    from relops_pipeline.lib import warehouse

    class Frame:
        pass

    def step(payload_mb: int) -> weakref.ref:
        with resources["warehouse"].get_connection():
            left = Frame()
            left.self = left  # a cycle: reference counting alone never frees it
            left.payload = b"x" * (payload_mb * 2**20)  # touched: resident
            alive = weakref.ref(left)
            del left
            assert alive() is not None
        return alive

    gc.disable()  # no collection of its own may happen in between
    try:
        gc.collect()
        warehouse._rss_after_collect[:] = [warehouse._rss_mb()]  # not what earlier tests left
        big = step(int(warehouse.COLLECT_GROWTH_MB * 2))
        assert big() is None
        small = step(1)
        assert small() is not None, "a small step should not pay for a full collection"
        bigger = step(int(warehouse.COLLECT_GROWTH_MB * 2))
        assert bigger() is None and small() is None  # the next large step collects both
    finally:
        gc.enable()


def test_followups_sensor_of_a_store_home_reads_occupied_days_from_the_store(home, resources, monkeypatch):
    """A store home's gap days come from the spans table's partitions (no warehouse); a store
    that cannot be read means no bridging (a run per range), not a failed tick."""
    import pyarrow as pa

    import relops_pipeline.lib.traces_day as traces_day
    from relops_pipeline.defs.ingest.sensors import _occupied_gaps
    from relops_pipeline.lib.settings import load_settings
    from relops_pipeline.lib.tracestore.linked import TraceTables
    from relops_pipeline.lib.tracestore.schema import SPANS

    d0 = dt.date.today() - dt.timedelta(days=40)
    day = [d0 + dt.timedelta(days=k) for k in range(10)]
    with open(home.settings_file, "a") as fh:
        fh.write("\ntrace_store: true\n")
    TraceTables(load_settings(home.settings_file).trace_store).store(SPANS).append(pa.table({
        "trace_id": ["t"], "span_id": ["s"], "start_time": [dt.datetime.combine(day[3], dt.time(12))],
        "workflow": ["w"], "release": ["r"]}), "source-1")
    home.warehouse_path.unlink(missing_ok=True)  # not needed: the store's log answers
    with dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), resources=resources) as context:
        assert _occupied_gaps(context, resources["warehouse"], [day[0], day[6]]) == {day[3]}
        assert _occupied_gaps(context, resources["warehouse"], [day[0], day[1]]) is None  # no gap

        def unreachable(*args):
            raise OSError("the object store is unreachable")

        monkeypatch.setattr(traces_day, "stored_days_with_spans", unreachable)
        assert _occupied_gaps(context, resources["warehouse"], [day[0], day[6]]) is None
