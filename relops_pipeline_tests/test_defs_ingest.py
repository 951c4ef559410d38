"""Dagster wiring of ingestion: the ops, assets and checks on an ephemeral instance, and the
sensors evaluated with build_sensor_context."""

from __future__ import annotations

import os
import shutil
import time

import dagster as dg
import pytest

from relops_pipeline.defs.ingest.assets import daily_signals, raw_traces, trace_features, trace_signals_job
from relops_pipeline.defs.ingest.jobs import DAY_RANGES_TAG, ingest_traces_job
from relops_pipeline.defs.ingest.sensors import ingested_days_sensor, landing_sensor
from relops_pipeline.defs.resources import relops_resources
from relops_pipeline.lib.home import Home
from relops_pipeline.lib.warehouse import open_warehouse
from relops_pipeline_tests.conftest import FIXTURES

LATEST = FIXTURES / "otel_genai_openai_v2" / "ALL.latest_experimental.traces.jsonl"


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = Home.resolve(tmp_path / "home")
    h.init()
    monkeypatch.setenv("RELOPS_HOME", str(h.root))
    return h


@pytest.fixture
def resources(home):
    return relops_resources(home.root)


def test_ingest_job_tags_days_and_reports_counts(home, resources):
    with dg.instance_for_test() as instance:
        result = dg.Definitions(jobs=[ingest_traces_job], resources=resources).resolve_job_def("ingest_traces_job").execute_in_process(
            run_config={"ops": {"ingest_trace_files": {"config": {"paths": [str(LATEST)]}}}}, instance=instance
        )
        assert result.success
        out = result.output_for_node("ingest_trace_files")
        assert out["totals"]["accepted"] == 72
        tags = instance.get_run_by_id(result.run_id).tags
        assert out["day_ranges"] and tags[DAY_RANGES_TAG].count("..") == len(out["day_ranges"])


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


def test_signals_job_runs_a_range_of_days_in_one_run(home, resources):
    with open_warehouse(home.warehouse_path) as con:
        from relops_pipeline.lib.ingest import ingest_file

        ingest_file(con, LATEST)
        days = [d.isoformat() for d in con.execute("SELECT DISTINCT start_time::DATE FROM spans ORDER BY 1").fetchall() for d in d]
    with dg.instance_for_test() as instance:
        from relops_pipeline.defs.alerts.assets import signal_rule_alerts

        job = dg.Definitions(assets=[raw_traces, daily_signals, trace_features, signal_rule_alerts], jobs=[trace_signals_job],
                             resources=resources).resolve_job_def("trace_signals_job")
        result = job.execute_in_process(
            instance=instance,
            tags={"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]},
        )
        assert result.success
        # One run materialized every day in the range twice over is idempotent.
        job.execute_in_process(
            instance=instance,
            tags={"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]},
        )
    with open_warehouse(home.warehouse_path) as con:
        rows = con.execute("SELECT count(*), sum(spans) FROM daily_signals").fetchone()
        total = con.execute("SELECT count(*) FROM spans").fetchone()[0]
    assert rows[1] == total


def test_landing_sensor_requests_new_settled_files_once(home, monkeypatch):
    monkeypatch.setenv("RELOPS_LANDING_SETTLE_S", "0")
    dst = home.landing_dir / "collector"
    dst.mkdir(parents=True)
    shutil.copy(LATEST, dst / "a.jsonl")
    (dst / "README.md").write_text("not a trace file")
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance)
        result = landing_sensor(ctx)
        assert len(result.run_requests) == 1
        paths = result.run_requests[0].run_config["ops"]["ingest_trace_files"]["config"]["paths"]
        assert paths == [str(dst / "a.jsonl")]
        ctx2 = dg.build_sensor_context(instance=instance, cursor=result.cursor)
        assert isinstance(landing_sensor(ctx2), dg.SkipReason)  # ticking again: nothing new
        # A re-delivered (changed) file is picked up again; span dedup keeps that safe.
        with open(dst / "a.jsonl", "a") as fh:
            fh.write(LATEST.read_text().splitlines()[0] + "\n")
        os.utime(dst / "a.jsonl", (time.time() - 10, time.time() - 10))
        result3 = landing_sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor))
        assert len(result3.run_requests) == 1


def test_landing_sensor_waits_for_files_to_settle(home, monkeypatch):
    monkeypatch.setenv("RELOPS_LANDING_SETTLE_S", "3600")
    shutil.copy(LATEST, home.landing_dir / "fresh.jsonl")
    with dg.instance_for_test() as instance:
        assert isinstance(landing_sensor(dg.build_sensor_context(instance=instance)), dg.SkipReason)


def test_ingested_days_sensor_requests_the_touched_range(home):
    with dg.instance_for_test() as instance:
        run = instance.create_run_for_job(
            ingest_traces_job, run_config={"ops": {"ingest_trace_files": {"config": {"paths": []}}}},
            tags={DAY_RANGES_TAG: "2026-10-01..2026-10-03,2026-10-09..2026-10-09"},
        )
        ctx = dg.build_run_status_sensor_context(
            sensor_name="ingested_days_sensor", dagster_instance=instance, dagster_run=run,
            dagster_event=_success_event(run),
        )
        reqs = ingested_days_sensor(ctx)
        assert [(r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"]) for r in reqs] == [
            ("2026-10-01", "2026-10-03"), ("2026-10-09", "2026-10-09")]


def _success_event(run):
    return dg.DagsterEvent(
        event_type_value=dg.DagsterEventType.RUN_SUCCESS.value, job_name=run.job_name, message="ok"
    )
