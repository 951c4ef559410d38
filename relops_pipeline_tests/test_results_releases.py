"""Typed results of the releases and drift domains round-trip through their JSON
(lib/results.py), and become the assets' and ops' metadata (defs/releases/metadata.py,
defs/drift/metadata.py) with the keys they have always had."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg

from relops_pipeline.defs.drift.metadata import drift_outcome, drift_result
from relops_pipeline.defs.releases.metadata import (
    canary_result,
    drill_fresh_result,
    drills_result,
    failure_output_metadata,
    rollback_registry_change,
    rollout_plan_result,
    runbooks_result,
    transition_output_metadata,
    transition_registry_change,
)
from relops_pipeline.lib.canary.model import CanaryResult, IntervalResult, MetricResult
from relops_pipeline.lib.canary.service import CanaryOutcome
from relops_pipeline.lib.drift.compute import ColumnDrift, DriftSummary
from relops_pipeline.lib.drills import DrillCheck, DrillResult, WorkflowDrill
from relops_pipeline.lib.home import Home
from relops_pipeline.lib.registry.respond import FailureHandled, FailureResponse
from relops_pipeline.lib.registry.rollout import RollbackRecommendation, TransitionResult
from relops_pipeline.lib.registry.state import RegistryState
from relops_pipeline.lib.results import from_json, to_json
from relops_pipeline.lib.runbook import RunbookWritten

T0 = dt.datetime(2026, 11, 20, 10, 0)


def _round_trip(value):
    return from_json(type(value), json.loads(json.dumps(to_json(value))))


def _summary(release: str = "*", **kw) -> DriftSummary:
    columns = [ColumnDrift("topic", "cat", "input", "chisquare", 0.001, 0.0025, True, "drift", 800, 450),
               ColumnDrift("input_chars", "num", "input", None, None, None, None, "insufficient", 0, 0)]
    base = dict(granularity="weekly", period_start=dt.date(2026, 11, 2), period_end=dt.date(2026, 11, 9),
                workflow="support-triage", release=release, status="drift", severity="ERROR", columns_tested=1,
                columns_drifted=1, drifted_share=1.0, critical_drifted=["topic"], cur_rows=450, ref_rows=900,
                reference_id="ref-1", columns=columns, critical_columns=["topic", "input_chars"],
                critical_severity="ERROR", share_severity="WARN", drifted_share_warn=0.5, dominant_release="v1.4.0",
                sampled=False, report_path="/h/reports/drift/support-triage/week-2026-11-02.html")
    return DriftSummary(**{**base, **kw})  # type: ignore[arg-type]


def _canary() -> CanaryOutcome:
    metric = MetricResult(name="latency_p95", column="latency_ms", kind="tail", direction="increase", critical=True,
                          classification="High", passed=False, bad=True, n_canary=300, n_baseline=1500,
                          canary_value=2100.0, baseline_value=1500.0, effect=0.4, low=0.2, high=0.6, tolerance=0.1,
                          effect_unit="ratio", p_value=0.001, level=0.99, details={"q": 0.95}, note="")
    interval = IntervalResult(index=0, start=T0, end=T0 + dt.timedelta(minutes=10), n_canary=300, n_baseline=1500,
                              verdict="fail", score=50.0, metrics=[metric], tests=2, vetoed_by=["latency_p95"],
                              reasons=["latency_p95 High"])
    result = CanaryResult(verdict="fail", score=50.0, consecutive_failures=2, failed_at=1, intervals=[interval, interval],
                          reasons=["2 consecutive failing intervals"], config={"consecutive_failure_limit": 2},
                          workflow="doc-qa", canary="v2.4.0", baseline="v2.3.0", window_start=T0,
                          window_end=T0 + dt.timedelta(minutes=20), looks=[interval, interval])
    return CanaryOutcome(analysis_id="canary-x", workflow="doc-qa", canary="v2.4.0", baseline="v2.3.0",
                         window=(T0, T0 + dt.timedelta(minutes=20)), intervals=2, result=result,
                         report_md="/h/reports/canary/doc-qa/v2.4.0/canary-x.md",
                         report_html="/h/reports/canary/doc-qa/v2.4.0/canary-x.html")


BEFORE = RegistryState("doc-qa", seq=2, live="v2.3.0", canary="v2.4.0", canary_percent=50.0, stage="canary",
                       last_known_good="v2.1.0", updated_by="li.wei", reason="canary", event_seq=7, updated_at=T0)
AFTER = RegistryState("doc-qa", seq=3, live="v2.3.0", stage="rolled_back", last_known_good="v2.1.0",
                      updated_by="relops", reason="canary failed", event_seq=9, updated_at=T0 + dt.timedelta(seconds=3))
ROLLBACK = TransitionResult(workflow="doc-qa", action="rollback", release="v2.4.0", before=BEFORE, after=AFTER,
                            event_seq=9, receipt={"deployer": "pointer_file", "pointer": "doc-qa.json", "seq": 3},
                            to_release="v2.3.0", rollback_id="rb-1", flipped_at=T0 + dt.timedelta(seconds=4),
                            time_to_rollback_s=4.2, message="doc-qa seq 3: live v2.3.0")
ROLLOUT = TransitionResult(workflow="doc-qa", action="canary", release="v2.4.0", before=AFTER, after=BEFORE,
                           event_seq=7, override=True, waived=("gate: doc-qa--v2.4.0 is BLOCK",))
RESPONSE = FailureResponse(decision="rollback", why="canary in canary: auto rollback", workflow="doc-qa",
                           release="v2.4.0", trigger="canary", rollback_id="rb-1", rollback=ROLLBACK,
                           incident_id="inc-1", alert_id="al-1", alert_status="delivered", time_to_rollback_s=4.2,
                           live_after="v2.3.0")
RECOMMENDED = FailureResponse(
    decision="alert_only", why="the policy forbids automatic rollback", workflow="support-triage", release="v1.4.0",
    trigger="drift", rollback_id="rb-2", incident_id="inc-2", alert_id="al-2", alert_status="pending",
    recommendation=RollbackRecommendation("rb-2", "support-triage", "v1.4.0", "live", "v1.3.0", 12),
    live_after="v1.4.0")
DRILL = DrillResult(drill_id="drill-1", workflow="doc-qa", passed=False, started_at=T0, finished_at=T0, duration_ms=None,
                    total_ms=12.5, from_release="v2.4.0", to_release=None,
                    checks=(DrillCheck("state_recorded", True, "registry seq 2"),
                            DrillCheck("rollback_target", False, "no last known good")), error=None)


def test_results_round_trip_through_json():
    values = [
        _summary(), _summary("v1.4.0", status="ok", severity=None, drifted_share=None, critical_drifted=[], report_path=None),
        _canary(), ROLLBACK, ROLLOUT, RESPONSE, RECOMMENDED,
        FailureResponse(decision="not_serving", why="v1.5.0 is not in the registry: nothing to roll back",
                        workflow="support-triage", release="v1.5.0", trigger="gate", alert_id="al-3",
                        alert_status="delivered", live_after="v1.4.0"),
        FailureHandled(RESPONSE),
        RunbookWritten("doc-qa", "/h/reports/runbooks/doc-qa.md", "abc123", "v2.3.0", None, "never"),
        DRILL, WorkflowDrill("doc-qa", DRILL), WorkflowDrill("support-triage", None),
    ]
    for value in values:
        assert _round_trip(value) == value, type(value).__name__


def test_failure_response_json_has_the_keys_the_cli_and_the_sensor_tests_read():
    doc = to_json(RESPONSE)
    assert {"decision", "why", "workflow", "release", "trigger", "rollback_id", "rollback", "incident_id", "alert_id",
            "alert_status", "time_to_rollback_s", "live_after"} <= set(doc)
    assert doc["rollback"]["to_release"] == "v2.3.0" and doc["rollback"]["after"]["seq"] == 3
    assert doc["rollback"]["flipped_at"] == "2026-11-20T10:00:04"
    rollout = to_json(ROLLOUT)
    assert rollout["waived"] == ["gate: doc-qa--v2.4.0 is BLOCK"] and rollout["after"]["canary_percent"] == 50.0


def _values(metadata):
    return {k: getattr(v, "value", v) for k, v in metadata.items()}


def test_drift_metadata_and_checks():
    insufficient = _summary(workflow="doc-qa", status="insufficient", severity=None, columns_tested=0, columns_drifted=0,
                            drifted_share=None, critical_drifted=[], report_path=None)
    meta, checks = drift_outcome([_summary(), _summary("v1.4.0"), insufficient], "weekly_drift")
    values = _values(meta)
    assert values["drifted_share/support-triage"] == 1.0 and values["columns_drifted/support-triage"] == 1
    assert values["traces/support-triage"] == 450 and values["score/support-triage/topic"] == 0.001
    assert "score/support-triage/input_chars" not in values  # no score: insufficient
    assert values["report/support-triage"].endswith("week-2026-11-02.html")
    assert values["insufficient_data"] == "doc-qa" and "2026-11-02 | support-triage | drift" in values["summary"].replace("\\", "")
    critical, share = checks
    assert (critical.check_name, critical.passed, critical.severity) == (
        "critical_columns_stable", False, dg.AssetCheckSeverity.ERROR)
    assert critical.metadata["failing"].value == [{
        "workflow": "support-triage", "release": "v1.4.0", "period_start": "2026-11-02", "severity": "ERROR",
        "reason": "critical columns drifted: topic"}]
    assert (share.passed, share.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert share.description == "support-triage: 1 of 1 columns drifted (share 1.00 > 0.50)"
    ok = drift_result([], "rolling_drift", T0, T0 + dt.timedelta(days=1))
    assert _values(ok.metadata) == {"summary": "no workflow had traces in this window",
                                    "window": "2026-11-20 .. 2026-11-21 (end exclusive)"}
    assert [c.passed for c in ok.check_results] == [True, True] and ok.check_results[0].description == "no drift"


def test_release_metadata(tmp_path):
    from dataclasses import replace

    home = Home(tmp_path / "h")
    report_dir = home.reports_dir / "canary" / "doc-qa" / "v2.4.0"
    report_dir.mkdir(parents=True)
    (report_dir / "canary-x.md").write_text("# canary report", encoding="utf-8")
    outcome = replace(_canary(), report_md=str(report_dir / "canary-x.md"), report_html=str(report_dir / "canary-x.html"))
    result = canary_result(outcome, "doc-qa--v2.4.0", home)
    assert _values(result.metadata) == {
        "verdict": "fail", "score": 50.0, "baseline": "v2.3.0", "intervals": 2, "looks": 2, "canary_requests": 300,
        "report_html": "http://127.0.0.1:4318/reports/canary/doc-qa/v2.4.0/canary-x.html",
        "report_md": "http://127.0.0.1:4318/reports/canary/doc-qa/v2.4.0/canary-x.md",
        "release_page": "http://127.0.0.1:4318/releases/doc-qa/v2.4.0",
        "report": "# canary report", "release_key": "doc-qa--v2.4.0"}
    [check] = result.check_results
    assert (check.check_name, check.passed, check.description) == (
        "canary_healthy", False, "doc-qa--v2.4.0: 2 consecutive failing intervals")
    assert _values(check.metadata) == {"verdict": "fail", "release_key": "doc-qa--v2.4.0", "consecutive_failures": 2,
                                       "failing_metrics": "latency_p95", "needs": "nothing: decided"}

    plan = rollout_plan_result({"stages": [{"stage": "canary", "traffic_percent": 10.0, "min_minutes": 30.0,
                                            "advance_when": "passes"}], "policy": {"auto_rollback": False}},
                               home, "doc-qa--v2.4.0")
    assert set(plan.metadata) == {"stages", "plan", "auto_rollback", "release_page"}
    assert plan.metadata["auto_rollback"].value is False

    runbooks = home.reports_dir / "runbooks"
    books = runbooks_result([RunbookWritten("doc-qa", str(runbooks / "doc-qa.md"), "h1", "v2.3.0", None, "ok"),
                             RunbookWritten("qa", str(runbooks / "qa.md"), "h2", None, None, "never")], home)
    assert set(books.metadata) == {"runbook/doc-qa", "runbook/qa", "workflows"}
    assert books.metadata["runbook/qa"].value == "http://127.0.0.1:4318/reports/runbooks/qa.md"
    assert books.data_version == dg.DataVersion("h1-h2")

    drills = drills_result([WorkflowDrill("doc-qa", DRILL), WorkflowDrill("qa", None)])
    assert _values(drills.metadata)["drill_ms/doc-qa"] == 0.0 and "drill_ms/qa" not in drills.metadata
    table = drills.metadata["drills"].value.replace("\\", "")  # markdown escapes removed
    assert "| doc-qa | FAIL | 0 | rollback_target |" in table and "| qa | n/a: never rolled out |" in table

    fresh = drill_fresh_result([{"workflow": "doc-qa", "ok": False, "status": "stale", "message": "drill again"},
                                {"workflow": "qa", "ok": True, "status": "ok", "message": "fine"}])
    assert not fresh.passed and fresh.description == "drill again"
    assert fresh.metadata["statuses"].value == {"doc-qa": "stale", "qa": "ok"}

    assert _values(rollback_registry_change(RESPONSE)) == {
        "action": "rollback", "trigger": "canary", "to": "v2.3.0", "live": "v2.3.0", "incident_id": "inc-1",
        "time_to_rollback_s": 4.2}
    assert _values(failure_output_metadata(FailureHandled(RESPONSE), release="v2.4.0")) == {
        "decision": "rollback", "workflow": "doc-qa", "release": "v2.4.0", "trigger": "canary",
        "time_to_rollback_s": 4.2, "incident_id": "inc-1"}
    assert _values(transition_registry_change(ROLLOUT, stage="canary", actor="li.wei")) == {
        "action": "canary", "live": "v2.3.0", "canary": "v2.4.0", "last_known_good": "v2.1.0", "seq": 2, "by": "li.wei",
        "override": True}
    assert _values(transition_output_metadata(ROLLOUT, release="v2.4.0", stage="canary")) == {
        "workflow": "doc-qa", "release": "v2.4.0", "stage": "canary", "live": "v2.3.0", "canary": "v2.4.0",
        "last_known_good": "v2.1.0", "seq": 2}
