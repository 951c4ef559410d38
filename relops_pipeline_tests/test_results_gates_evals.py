"""Typed results of the gates and evals domains round-trip through their JSON (lib/results.py)."""

from __future__ import annotations

import datetime as dt
import json

from relops_pipeline.lib.evals.store import (
    EvalRunSummary,
    MetricSummary,
    Release,
    ReleaseRegistration,
    SuitesRecorded,
    SuiteVersionRecord,
)
from relops_pipeline.lib.gates.gate import GateOutcome, GateReports
from relops_pipeline.lib.gates.model import (
    CaseChange,
    GateResult,
    Interval,
    MetricEvidence,
    MustPassCase,
    RuleResult,
    Thresholds,
)
from relops_pipeline.lib.gates.service import EvalRunRef, GateRecord, ThresholdsInForce
from relops_pipeline.lib.results import from_json, to_json


def _round_trip(value):
    return from_json(type(value), json.loads(json.dumps(to_json(value))))


def _gate_result() -> GateResult:
    return GateResult(
        workflow="support-triage", version="v1.5.0", baseline_version="v1.4.0", decision="BLOCK",
        reasons=["fields_match regressed by 0.08"],
        rules=[RuleResult("regression:fields_match", "block", "regressed", {"estimate": -0.08, "low": -0.12}),
               RuleResult("must_pass", "pass", "every must-pass case passed")],
        metrics=[MetricEvidence("fields_match", Interval(0.8, 0.75, 0.85, 62), Interval(0.88, 0.84, 0.92, 62),
                                Interval(-0.08, -0.12, -0.04, 62), 0.02, 0.05, None, "regression"),
                 MetricEvidence("tone", Interval(0.9, None, None, 0), None, None, 0.02, 0.05, 0.7, "no_baseline", "n/a")],
        must_pass=[MustPassCase("refund-001", 1, 3, 0, 3, [True, False], "confirmed", "<out>", ["fields_match"])],
        flaky_cases=[CaseChange("login-001", None, 0.5)],
        newly_failing=[CaseChange("bug-001", 1.0, 0.0, "boom")],
        newly_passing=[],
        latency_ms={"p95": Interval(900.0, 850.0, 950.0, 186)},
        cost_usd={"mean_per_sample": Interval(None, None, None)},
        evidence={"candidate_eval_run_id": "ev-2", "seed": 7, "thresholds": {"version": 3}},
        diff={"known": True, "summary": ["model: a -> b"]},
    )


def test_a_gate_outcome_round_trips_through_json():
    outcome = GateOutcome(_gate_result(), GateReports("/r/g.md", "/r/g.html", "/r/g.json"), "## BLOCK", "gate-1",
                          "ev-2", None, "v3", 2)
    back = _round_trip(outcome)
    assert back == outcome
    assert isinstance(back.result.rules[0], RuleResult) and isinstance(back.result.latency_ms["p95"], Interval)
    assert back.result.metrics[1].baseline is None and isinstance(back.reports, GateReports)


def test_gate_bookkeeping_results_round_trip_through_json():
    th = ThresholdsInForce("support-triage--v1.5.0", "support-triage",
                           Thresholds(version=2, floors={"tone": 0.7}, metrics=["tone"], author="ana", reason="r"),
                           warning="the file differs")
    ref = EvalRunRef("ev-2", "v3", "abc", "runner:python", True, None, 3, 62, 186)
    record = GateRecord("gate-1", "BLOCK", _gate_result(), "/r/g.md", "/r/g.html", None, "run-1")
    for value in (th, ref, record):
        assert _round_trip(value) == value
    assert _round_trip(th).thresholds.allowed_for("tone") == th.thresholds.allowed_for("tone")


def test_the_stored_gate_result_is_its_json():
    """gate_decisions.result keeps to_json(result); the CLI rebuilds the GateResult with from_json."""
    result = _gate_result()
    assert to_json(result) == json.loads(json.dumps(result.as_dict()))
    assert from_json(GateResult, json.loads(json.dumps(to_json(result)))) == result


def test_eval_results_round_trip_through_json():
    suites = SuitesRecorded((SuiteVersionRecord("support-triage", "v1", 105, 12, "0123456789abcdef", "new"),
                             SuiteVersionRecord("support-triage", "v2", 106, 12, "fedcba9876543210", "unchanged")))
    release = Release("support-triage--v1.5.0", "support-triage", "v1.5.0", True, {"model": "gpt-4.1-mini"}, "h",
                      "releases/support-triage/v1.5.0.yaml", "v1.4.0", {"known": True, "summary": []}, "ana",
                      dt.datetime(2026, 11, 2, 9, 30, 1))
    unknown = Release("doc-qa--v2.0.0", "doc-qa", "v2.0.0", False, None, None, None, None, None, None,
                      dt.datetime(2026, 11, 2))
    summary = EvalRunSummary("ev-1", "support-triage--v1.5.0", "support-triage", "v1.5.0", "v2", "runner:python", 2, 5, 10,
                             2, 0.2, True, None, "run-1", {"fields_match": MetricSummary(0.7, 0.6, 10)}, 2, 1, 120.5,
                             300.0, 0.01)
    for value in (suites, ReleaseRegistration("new", release), ReleaseRegistration("unchanged", unknown), summary):
        assert _round_trip(value) == value
    assert suites.new == 1
    assert isinstance(_round_trip(release).registered_at, dt.datetime)
    assert isinstance(_round_trip(summary).metrics["fields_match"], MetricSummary)
    assert list(to_json(summary)["metrics"]["fields_match"]) == ["mean", "pass_rate", "n"]
