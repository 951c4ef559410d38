"""One bad span must not blind a day (issue 15, item 5).

A span that ends before it starts (clock skew between the hosts that stamped it) is kept with
latency NULL and flagged in `spans.anomalies`; the day's span-level checks judge shares: a few
such spans among thousands WARN with their count, more than the tolerated share (1 % by
default, `data_quality.max_violating_share`) is an ERROR that still blocks the day.

Before this change the 3 skewed spans among 2,000 made `times_ordered` fail as a blocking
ERROR: `relops ingest` exited 4 and the day had no signals, no features, no drift.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from relops_pipeline.lib.ingest import ingest_file
from relops_pipeline.lib.settings import SettingsError
from relops_pipeline.lib.signals import compute_daily_signals
from relops_pipeline.lib.traces_day import refresh_features, validate_window
from relops_pipeline.lib.validation import ERROR, WARN, load_max_violating_share, validate_spans
from relops_pipeline.lib.warehouse import MIGRATIONS, migrate, open_warehouse
from relops_pipeline_tests.conftest import run_cli

DAY = dt.date(2026, 3, 2)
T0 = dt.datetime(2026, 3, 2, 8, 0, 0)


def write_spans(path: Path, good: int, skewed: int, *, negative_latency: int = 0, t0: dt.datetime = T0,
                ids: str = "") -> Path:
    """`good` root spans of 1.2 s, then `skewed` roots whose end is 250 ms before their start,
    then `negative_latency` roots whose source reported latency_ms -5; one trace each, all on
    the day of `t0` (DAY); `ids` prefixes their ids."""
    lines = []
    for i in range(good + skewed + negative_latency):
        start = t0 + dt.timedelta(seconds=7 * i)
        end = start + dt.timedelta(milliseconds=1200)
        rec = {
            "trace_id": f"t{ids}{i:05d}",
            "span_id": f"s{ids}{i:05d}",
            "kind": "llm",
            "workflow": "support-triage",
            "release": "v1",
            "model": "gpt-4o-mini",
            "status": "ok",
            "input_tokens": 10,
            "output_tokens": 5,
        }
        if good <= i < good + skewed:
            end = start - dt.timedelta(milliseconds=250)
        elif i >= good + skewed:
            rec["latency_ms"] = -5
        rec["start_time"] = start.isoformat() + "Z"
        rec["end_time"] = end.isoformat() + "Z"
        lines.append(json.dumps(rec))
    path.write_text("\n".join(lines) + "\n")
    return path


def rule(result, name):
    return result.rule(name)


# --- the loader ---------------------------------------------------------------------------


def test_loader_keeps_a_span_ending_before_it_starts_with_latency_null_and_a_flag(tmp_path, wh):
    f = write_spans(tmp_path / "skew.jsonl", 2000, 3, negative_latency=1)
    r = ingest_file(wh, f, fmt="relops-jsonl")
    assert (r.read, r.accepted, r.rejected, r.duplicates) == (2004, 2004, 0, 0)
    assert r.anomalies == 4
    rows = wh.execute(
        "SELECT source_line, trace_id, latency_ms, anomalies FROM spans WHERE anomalies IS NOT NULL ORDER BY source_line"
    ).fetchall()
    assert rows == [
        (2001, "t02000", None, ["end_before_start"]),
        (2002, "t02001", None, ["end_before_start"]),
        (2003, "t02002", None, ["end_before_start"]),
        (2004, "t02003", None, ["negative_latency"]),
    ]
    assert wh.execute("SELECT count(*), min(latency_ms), max(latency_ms) FROM spans WHERE anomalies IS NULL").fetchone() == (
        2000,
        1200.0,
        1200.0,
    )
    assert wh.execute("SELECT count(*) FROM trace_rejects").fetchone()[0] == 0
    # Re-ingesting adds nothing and flags nothing twice.
    again = ingest_file(wh, f, fmt="relops-jsonl")
    assert (again.accepted, again.duplicates, again.anomalies) == (0, 2004, 0)


# --- the rules ----------------------------------------------------------------------------


def _frame(con):
    return con.execute("SELECT trace_id, span_id, workflow, release, release_known, start_time, end_time, latency_ms FROM spans").df()


def test_a_few_bad_spans_warn_with_their_count_and_do_not_block(tmp_path, wh):
    ingest_file(wh, write_spans(tmp_path / "few.jsonl", 2000, 3), fmt="relops-jsonl")
    result = validate_spans(_frame(wh))
    times = rule(result, "times_ordered")
    assert (times.passed, times.severity) == (False, WARN)
    assert times.observed["unexpected_count"] == 3 and times.observed["tolerated"] is True
    assert times.observed["violating_share"] == pytest.approx(3 / 2003)
    assert times.observed["max_violating_share"] == 0.01
    assert "3 spans violate" in times.description and "WARN" in times.description
    # The loader nulled their latency: no negative latency is left to count.
    assert rule(result, "latency_not_negative").passed
    assert result.passed and result.failed(ERROR) == []


def test_a_genuinely_broken_day_is_still_an_error(tmp_path, wh):
    ingest_file(wh, write_spans(tmp_path / "broken.jsonl", 700, 300), fmt="relops-jsonl")
    result = validate_spans(_frame(wh))
    times = rule(result, "times_ordered")
    assert (times.passed, times.severity) == (False, ERROR)
    assert times.observed["unexpected_count"] == 300 and "tolerated" not in times.observed
    assert "more than the tolerated" in times.description
    assert not result.passed and [r.name for r in result.failed(ERROR)] == ["times_ordered"]


def test_a_run_over_several_days_judges_each_day_on_its_own_share(tmp_path, wh):
    """One run validates a range of days (ingestion follow-ups, bridged ranges, backfills): a
    day with 5 % of its spans ending before they start is an ERROR even beside clean days that
    bring the window's share under 1 %; days each within the share still WARN."""
    later = T0 + dt.timedelta(days=3)
    ingest_file(wh, write_spans(tmp_path / "bad.jsonl", 95, 5), fmt="relops-jsonl")
    ingest_file(wh, write_spans(tmp_path / "clean.jsonl", 2000, 1, t0=later, ids="c"), fmt="relops-jsonl")
    start, end = dt.datetime.combine(DAY, dt.time()), dt.datetime.combine(later.date() + dt.timedelta(days=1), dt.time())
    assert 6 / 2101 < 0.01  # over the window, within the share

    result = validate_window(wh, start, end).validation
    times = rule(result, "times_ordered")
    assert (times.passed, times.severity) == (False, ERROR) and not result.passed
    assert times.observed["day"] == DAY.isoformat() and times.observed["unexpected_count"] == 5
    assert times.description.startswith(f"on {DAY.isoformat()}: ") and times.observed["window_unexpected_count"] == 6
    alone = rule(validate_window(wh, later.replace(hour=0), end).validation, "times_ordered")
    assert (alone.severity, alone.observed["unexpected_count"]) == (WARN, 1)
    # Within the share on every day: the window's WARN stands, with the window's count.
    lenient = rule(validate_window(wh, start, end, max_violating_share=0.06).validation, "times_ordered")
    assert (lenient.severity, lenient.observed["unexpected_count"], "day" in lenient.observed) == (WARN, 6, False)


def test_the_tolerated_share_is_a_boundary_and_configurable(tmp_path, wh):
    ingest_file(wh, write_spans(tmp_path / "edge.jsonl", 990, 10), fmt="relops-jsonl")
    df = _frame(wh)
    assert rule(validate_spans(df), "times_ordered").severity == WARN  # exactly 1 %: tolerated
    strict = validate_spans(df, max_violating_share=0.0)
    assert (rule(strict, "times_ordered").passed, rule(strict, "times_ordered").severity) == (False, ERROR)
    lenient = validate_spans(df, max_violating_share=0.05)
    assert rule(lenient, "times_ordered").severity == WARN and lenient.passed
    with pytest.raises(ValueError):
        validate_spans(df, max_violating_share=1.5)
    # A negative latency reported by a source (not nulled: a frame built by hand) is judged alike.
    df.loc[:4, "latency_ms"] = -1.0
    lat = rule(validate_spans(df), "latency_not_negative")
    assert (lat.passed, lat.severity, lat.observed["unexpected_count"]) == (False, WARN, 5)


def test_relops_yaml_sets_the_share_and_a_bad_value_is_an_error(tmp_path):
    cfg = tmp_path / "relops.yaml"
    assert load_max_violating_share(cfg) == 0.01  # no file: the default
    cfg.write_text("data_quality:\n  max_violating_share: 0.002\n")
    assert load_max_violating_share(cfg) == 0.002
    for bad in ("2", "'1%'", "true", "-0.1"):
        cfg.write_text(f"data_quality:\n  max_violating_share: {bad}\n")
        with pytest.raises(SettingsError, match="data_quality.max_violating_share"):
            load_max_violating_share(cfg)


# --- what follows: signals, features, the day's validation ----------------------------------


def test_signals_and_features_count_the_request_and_leave_it_out_of_latency(tmp_path, wh):
    ingest_file(wh, write_spans(tmp_path / "few.jsonl", 2000, 3), fmt="relops-jsonl")
    assert compute_daily_signals(wh, DAY, DAY + dt.timedelta(days=1)) == 1
    spans, traces, p50, p99 = wh.execute(
        "SELECT spans, traces, latency_p50_ms, latency_p99_ms FROM daily_signals WHERE day = ?", [DAY]
    ).fetchone()
    assert (spans, traces) == (2003, 2003)
    assert (p50, p99) == (1200.0, 1200.0)  # the 3 NULL latencies are not samples
    features = refresh_features(wh, DAY, DAY + dt.timedelta(days=1))
    assert features.traces == 2003
    skewed = wh.execute(
        "SELECT count(*), count(latency_ms) FROM trace_features WHERE trace_id IN ('t02000', 't02001', 't02002')"
    ).fetchone()
    assert skewed == (3, 0)
    assert wh.execute("SELECT min(latency_ms), max(latency_ms) FROM trace_features").fetchone() == (1200.0, 1200.0)
    v = validate_window(wh, T0.replace(hour=0), T0.replace(hour=0) + dt.timedelta(days=1))
    assert (v.spans, v.anomalous_spans, v.validation.passed) == (2003, 3, True)


def test_a_trace_without_root_never_gets_a_negative_latency_from_a_skewed_span(wh):
    cols = "trace_id, span_id, parent_span_id, kind, status, workflow, release, release_known, start_time, end_time, latency_ms, anomalies"
    wh.execute(
        f"INSERT INTO spans ({cols}) VALUES "
        "('a', '1', 'p', 'llm', 'ok', 'w', 'v1', true, '2026-03-02 08:00:00', '2026-03-02 07:59:59', NULL, ['end_before_start']),"
        "('b', '1', 'p', 'llm', 'ok', 'w', 'v1', true, '2026-03-02 09:00:00', '2026-03-02 09:00:02', 2000, NULL),"
        "('b', '2', 'p', 'llm', 'ok', 'w', 'v1', true, '2026-03-02 09:00:01', '2026-03-02 08:00:00', NULL, ['end_before_start'])"
    )
    refresh_features(wh, DAY, DAY + dt.timedelta(days=1))
    got = dict(wh.execute("SELECT trace_id, latency_ms FROM trace_features").fetchall())
    assert got == {"a": None, "b": 2000.0}


# --- an existing warehouse upgrades -----------------------------------------------------------


def test_migration_9_adds_anomalies_and_flags_the_skewed_spans_already_stored():
    con = duckdb.connect()
    migrate(con, [m for m in MIGRATIONS if m[0] < 9])
    assert "anomalies" not in [c[0] for c in con.execute("DESCRIBE spans").fetchall()]
    con.execute(
        "INSERT INTO spans (trace_id, span_id, start_time, end_time, latency_ms) VALUES "
        "('t1', 's1', '2026-03-02 08:00:00', '2026-03-02 08:00:01', 1000),"
        "('t2', 's2', '2026-03-02 08:00:01', '2026-03-02 08:00:00', -1000),"
        "('t3', 's3', '2026-03-02 08:00:00', '2026-03-02 08:00:01', -3)"
    )
    assert migrate(con) == [m[0] for m in MIGRATIONS if m[0] >= 9]
    rows = con.execute("SELECT trace_id, latency_ms, anomalies FROM spans ORDER BY trace_id").fetchall()
    assert rows == [("t1", 1000.0, None), ("t2", None, ["end_before_start"]), ("t3", None, ["negative_latency"])]
    # A fresh warehouse has the same columns in the same order as an upgraded one.
    fresh = duckdb.connect()
    migrate(fresh)
    assert fresh.execute("DESCRIBE spans").fetchall() == con.execute("DESCRIBE spans").fetchall()


# --- through Dagster and the CLI ------------------------------------------------------------


def test_the_days_checks_warn_and_signals_and_features_are_materialized(tmp_path, home, resources):
    from relops_pipeline.defs.ingest.assets import daily_signals, raw_traces, trace_features

    with open_warehouse(home.warehouse_path) as con:
        ingest_file(con, write_spans(tmp_path / "few.jsonl", 2000, 3), fmt="relops-jsonl")
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [raw_traces, daily_signals, trace_features], partition_key=DAY.isoformat(), resources=resources, instance=instance
        )
        assert result.success
        evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
        times = evals["times_ordered"]
        assert not times.passed and times.severity == dg.AssetCheckSeverity.WARN
        assert times.metadata["unexpected_count"].value == 3
        assert evals["latency_not_negative"].passed
        [mat] = result.asset_materializations_for_node("raw_traces")
        assert mat.metadata["anomalous_spans"].value == 3
    with open_warehouse(home.warehouse_path) as con:
        assert con.execute("SELECT sum(spans) FROM daily_signals WHERE day = ?", [DAY]).fetchone()[0] == 2003
        assert con.execute("SELECT count(*) FROM trace_features WHERE day = ?", [DAY]).fetchone()[0] == 2003


def test_relops_ingest_exits_0_with_a_few_skewed_spans_and_lists_them(tmp_path, home, capsys, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(home.root / "dagster"))
    f = write_spans(tmp_path / "few.jsonl", 2000, 3)
    code, out, err = run_cli(capsys, home.root, "ingest", str(f), "--format", "relops-jsonl", "--json")
    assert code == 0, out + err
    doc = json.loads(out)
    assert doc["totals"]["accepted"] == 2003 and doc["totals"]["anomalies"] == 3
    with open_warehouse(home.warehouse_path, read_only=True) as con:
        assert con.execute("SELECT sum(spans) FROM daily_signals WHERE day = ?", [DAY]).fetchone()[0] == 2003
        assert con.execute("SELECT count(*) FROM trace_features WHERE day = ?", [DAY]).fetchone()[0] == 2003

    code, out, err = run_cli(capsys, home.root, "rejects", "--anomalies", "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert listed["total"] == 3
    assert [(a["source_line"], a["trace_id"], a["span_id"], a["anomalies"], a["ends_before_start_ms"]) for a in listed["anomalies"]] == [
        (2001, "t02000", "s02000", ["end_before_start"], 250.0),
        (2002, "t02001", "s02001", ["end_before_start"], 250.0),
        (2003, "t02002", "s02002", ["end_before_start"], 250.0),
    ]
    assert all(a["source_file"].endswith("few.jsonl") for a in listed["anomalies"])
    code, out, _ = run_cli(capsys, home.root, "rejects", "--anomalies")
    assert code == 0
    assert out.splitlines()[0].startswith("3 spans kept with an anomaly")
    assert "few.jsonl:2001: trace t02000 span s02000 (support-triage@v1): ends 250 ms before it starts" in out
    # The quarantine itself is unchanged: nothing was rejected.
    code, out, _ = run_cli(capsys, home.root, "rejects", "--json")
    assert json.loads(out)["total"] == 0


def test_relops_ingest_still_blocks_a_day_with_30_percent_broken_spans(tmp_path, home, capsys, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(home.root / "dagster"))
    f = write_spans(tmp_path / "broken.jsonl", 700, 300)
    code, out, err = run_cli(capsys, home.root, "ingest", str(f), "--format", "relops-jsonl")
    assert code == 4, out + err
    assert "times_ordered" in out + err
