"""Dagster wiring of drift: the weekly schedule's target week, the sensor that makes daily
drift follow new signals, and the drift assets with their checks on a real demo warehouse."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from relops_pipeline.defs.drift.assets import rolling_drift, weekly_drift
from relops_pipeline.defs.maintenance.jobs import weekly_cadence_schedule
from relops_pipeline.defs.resources import relops_resources
from relops_pipeline.lib.home import Home
from relops_pipeline.lib.warehouse import open_warehouse

UTC = dt.UTC


def _tick(when: dt.datetime) -> list[str]:
    with dg.instance_for_test() as instance:
        from relops_pipeline.definitions import defs

        ctx = dg.build_schedule_context(instance=instance, scheduled_execution_time=when, repository_def=defs.get_repository_def())
        result = weekly_cadence_schedule.evaluate_tick(ctx)
    assert all(r.job_name in (None, "weekly_cadence_job") for r in result.run_requests or [])
    return [r.partition_key for r in result.run_requests or []]


def test_weekly_cadence_runs_monday_morning_on_the_last_complete_week():
    assert weekly_cadence_schedule.cron_schedule == "0 6 * * 1"
    assert weekly_cadence_schedule.execution_timezone == "UTC"
    # Monday 2026-11-30 06:00 UTC: the week Monday 23 .. Sunday 29 has just ended.
    assert _tick(dt.datetime(2026, 11, 30, 6, 0, tzinfo=UTC)) == ["2026-11-23"]
    # A week later it moves on by exactly one week.
    assert _tick(dt.datetime(2026, 12, 7, 6, 0, tzinfo=UTC)) == ["2026-11-30"]


def test_rolling_drift_follows_every_day_whose_window_holds_new_signals():
    from relops_pipeline.defs.followups import after_features

    d = dt.date
    # New features for Nov 2..3 change the trailing-7-day windows ending Nov 2 .. Nov 9: one run.
    [drift] = after_features([(d(2026, 11, 2), d(2026, 11, 3)), (d(2026, 11, 5), d(2026, 11, 5))], [], source="t")
    assert drift.days == ("2026-11-02", "2026-11-11") and drift.assets == ("rolling_drift",)
    # Clamped to the partitions that exist (the last one is today), and at most max_drift_days.
    today = dt.datetime.now(UTC).date()
    [drift] = after_features([(today - dt.timedelta(days=1), today)], [], source="t")
    assert drift.days == ((today - dt.timedelta(days=1)).isoformat(), today.isoformat())
    [drift] = after_features([(d(2026, 1, 1), d(2026, 6, 30))], [], source="t", max_drift_days=90)
    assert drift.days == ("2026-04-08", "2026-07-06")
    assert after_features([(d(2023, 1, 1), d(2023, 1, 2))], [], source="t") == []


def test_a_days_drift_counts_as_refreshed_only_after_the_refreshes_of_its_week():
    """Another ingestion's drift run covers a day's drift only if it started once the features
    of every refreshed day in that day's trailing week were recomputed (drift_needs)."""
    from relops_pipeline.defs.followups import drift_needs

    d = dt.date
    refreshed = {d(2026, 11, 2): ("a", 100.0), d(2026, 11, 5): ("b", 200.0)}
    needs = drift_needs(refreshed, d(2026, 11, 1), d(2026, 11, 13))
    # Nov 1 holds neither; Nov 2..4 only Nov 2's refresh; Nov 5..8 both; Nov 9..11 only Nov 5's.
    assert d(2026, 11, 1) not in needs
    assert [needs[d(2026, 11, i)] for i in (2, 4, 5, 8, 9, 11)] == [100.0, 100.0, 200.0, 200.0, 200.0, 200.0]
    assert d(2026, 11, 12) not in needs and len(needs) == 10


# ---------------------------------------------------------------------------------------------
# The drift assets on a slice of the demo world: two reference weeks, a stationary week and the
# first drift week of support-triage (scale 0.15: about 450 traces per workflow and week).


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    from relops_pipeline.demo.traces import generate_demo_traces
    from relops_pipeline.lib.drift.features import compute_trace_features
    from relops_pipeline.lib.ingest import ingest_paths
    from relops_pipeline.lib.settings import load_settings

    home = Home.resolve(tmp_path_factory.mktemp("drift") / "home")
    home.init(example=True)
    generate_demo_traces(home.landing_dir / "demo", scale=0.15, days=[*range(0, 14), *range(28, 42)])
    with open_warehouse(home.warehouse_path) as con:
        ingest_paths(con, [home.landing_dir / "demo"], settings=load_settings(home.settings_file))
        compute_trace_features(con, dt.date(2026, 9, 28), dt.date(2026, 11, 9))
    return home


def _materialize(home, asset, key):
    resources = relops_resources(home.root)
    with dg.instance_for_test() as instance:
        result = dg.materialize([asset], partition_key=key, resources=resources, instance=instance)
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    return result.asset_materializations_for_node(asset.key.path[-1])[0].metadata, checks


@pytest.mark.slow  # the demo slice it runs on takes ~20 s to build
def test_weekly_drift_flags_the_drift_week_and_not_the_stationary_week(demo_home):
    meta, checks = _materialize(demo_home, weekly_drift, "2026-10-26")
    assert checks["critical_columns_stable"].passed and checks["drifted_share_within_limit"].passed
    assert "score/support-triage/topic" in meta  # a p-value at this size: ~450 traces per week

    meta, checks = _materialize(demo_home, weekly_drift, "2026-11-02")
    critical = checks["critical_columns_stable"]
    assert not critical.passed and critical.severity == dg.AssetCheckSeverity.ERROR
    failing = critical.metadata["failing"].value
    assert [f["workflow"] for f in failing] == ["support-triage"]
    assert "topic" in failing[0]["reason"] and "input_chars" in failing[0]["reason"]
    # Numeric metadata the UI plots over partitions, and the linked Evidently report.
    assert meta["score/support-triage/topic"].value < 0.05  # chi-square p-value
    assert 0 < meta["drifted_share/support-triage"].value <= 1
    url = meta["report/support-triage"].value  # a link relops serve opens: /reports/<path under the reports folder>
    assert url.startswith("http://127.0.0.1:4318/reports/drift/")
    report = str(demo_home.reports_dir / url.split("/reports/", 1)[1])
    with open(report, encoding="utf-8") as f:
        assert report.endswith(".html") and "<html" in f.read(2000).lower()
    with open_warehouse(demo_home.warehouse_path) as con:
        stored = con.execute(
            "SELECT status, severity FROM drift_summaries WHERE granularity = 'weekly' AND period_start = '2026-11-02' "
            "AND workflow = 'support-triage' AND release = '*'").fetchall()
    assert stored == [("drift", "ERROR")]


@pytest.mark.slow  # the demo slice it runs on takes ~20 s to build
def test_rolling_drift_of_a_day_uses_its_trailing_week(demo_home):
    meta, checks = _materialize(demo_home, rolling_drift, "2026-11-08")
    assert "2026-11-08 .. 2026-11-09" in meta["window"].value
    assert not checks["critical_columns_stable"].passed  # Nov 2..8 is all drift week
    meta, checks = _materialize(demo_home, rolling_drift, "2026-10-30")
    assert checks["critical_columns_stable"].passed
