"""Typed results of the maintenance and alerts domains round-trip through their JSON
(lib/results.py), and become the assets' metadata (defs/maintenance/metadata.py,
defs/alerts/metadata.py) with the keys the assets have always had."""

from __future__ import annotations

import datetime as dt
import json

from relops_pipeline.lib.alerts.rules import BreachingRelease, Firing, RuleFiring, SignalRuleAlerts
from relops_pipeline.lib.cadence import (
    MemoWritten,
    ProposalOutcome,
    ProposalsMade,
    ReadinessReviewed,
    ReadinessReviews,
    ReviewSampleDrawn,
    ReviewStratum,
    WorkflowHeadline,
)
from relops_pipeline.lib.results import from_json, to_json

MEMO = MemoWritten(
    week=dt.date(2026, 11, 16), memo_id="memo-20261116-x", markdown="# memo", md_path="/h/reports/memos/2026-11-16.md",
    html_path="/h/reports/memos/2026-11-16.html", ops_from=dt.datetime(2026, 11, 16), ops_to=dt.datetime(2026, 11, 23, 6),
    recommendations=2,
    headlines=(WorkflowHeadline("doc-qa", traces=1200.0, error_rate=0.01, latency_p95_ms=2100.0, cost_per_trace_usd=0.002),
               WorkflowHeadline("support-triage")),
    memo={"week": "2026-11-16", "summary": {"traces": 1200}, "workflows": []},
)
REVIEW = ReviewSampleDrawn(week=dt.date(2026, 11, 16), traces=3, sheet_csv="/h/reports/review/r.csv", sheet_html="/h/reports/review/r.html",
                           strata=(ReviewStratum("doc-qa", "v2.3.0", 2), ReviewStratum("doc-qa", "unknown", 1)))
PROPOSALS = ProposalsMade("suite", (
    ProposalOutcome("doc-qa", "suite-doc-qa-2026-11-ab12cd34", "3 cases from incidents", "draft", True, "/h/reports/proposals/p.md"),
    ProposalOutcome("support-triage"),
))
READINESS = ReadinessReviews((ReadinessReviewed(
    workflow="doc-qa", status="gaps", review_id="rdy-doc-qa-x", report_path="/h/reports/readiness/doc-qa.md", markdown="# r",
    gaps=("owner", "alert rules"), result={"workflow": "doc-qa", "status": "gaps", "checks": []}),))
FIRING = Firing(workflow="doc-qa", rule="trunc", signal="truncation_rate", day=dt.date(2026, 11, 10), value=0.1,
                threshold=0.05, direction="above", traces=40, feedback_n=0, severity="warning", release="v2",
                releases=(BreachingRelease("v2", 0.1, 40),))
ALERTS = SignalRuleAlerts(days=(dt.date(2026, 11, 10), dt.date(2026, 11, 11)),
                          firings=(RuleFiring(FIRING, 1, "al-1", True), RuleFiring(FIRING, 1, None, False)),
                          warnings=("workflows/doc-qa.yaml: alerts.rules differs",))


def _round_trip(value):
    return from_json(type(value), json.loads(json.dumps(to_json(value))))


def test_cadence_results_round_trip_through_json():
    for value in (MEMO, REVIEW, PROPOSALS, READINESS):
        assert _round_trip(value) == value
    back = _round_trip(MEMO)
    assert isinstance(back.headlines[0], WorkflowHeadline) and isinstance(back.ops_from, dt.datetime)
    assert to_json(REVIEW)["strata"][0] == {"workflow": "doc-qa", "release": "v2.3.0", "traces": 2}
    assert PROPOSALS.drafts == 1 and not PROPOSALS.outcomes[1].proposed


def test_alert_results_round_trip_through_json():
    back = _round_trip(ALERTS)
    assert back == ALERTS and isinstance(back.firings[0].firing.releases[0], BreachingRelease)
    assert back.firings[0].day == dt.date(2026, 11, 10) and ALERTS.alerts_sent == 1
    assert FIRING.to_dict()["releases"] == [{"release": "v2", "value": 0.1, "traces": 40}]


def test_metadata_keeps_the_assets_keys():
    from relops_pipeline.defs.alerts.metadata import signal_rule_alerts_result
    from relops_pipeline.defs.maintenance.metadata import (
        proposals_result,
        readiness_report_result,
        review_sample_result,
        stability_memo_result,
    )

    memo = stability_memo_result(MEMO).metadata
    assert set(memo) == {"memo_md", "memo_html", "memo", "ops_window", "recommendations", "traces/doc-qa",
                         "error_rate/doc-qa", "latency_p95_ms/doc-qa", "cost_per_trace_usd/doc-qa"}
    assert memo["ops_window"] == "2026-11-16 00:00 .. 2026-11-23 06:00 UTC"
    assert memo["recommendations"].value == 2 and memo["error_rate/doc-qa"].value == 0.01
    assert memo["memo_html"].value == "http://127.0.0.1:4318/reports/memos/2026-11-16.html"  # a link relops serve opens
    review = review_sample_result(REVIEW).metadata
    assert review["traces"].value == 3 and "| doc-qa | v2.3.0 | 2 |" in review["strata"].value
    empty = review_sample_result(ReviewSampleDrawn(dt.date(2026, 11, 16), 0, "/h/reports/c", "/h/reports/h", ())).metadata
    assert empty["strata"].value == "no traffic this week"
    props = proposals_result(PROPOSALS).metadata
    assert list(props) == ["report/doc-qa", "proposals", "drafts"] and props["drafts"].value == 1
    assert "nothing to propose" in props["proposals"].value
    ready = readiness_report_result(READINESS).metadata
    assert list(ready) == ["report/doc-qa", "gaps/doc-qa", "workflows"] and ready["gaps/doc-qa"].value == 2
    fired = signal_rule_alerts_result(ALERTS).metadata
    assert (fired["firings"].value, fired["alerts_sent"].value) == (2, 1)
    assert "| al-1 |" in fired["fired"].value
    assert signal_rule_alerts_result(SignalRuleAlerts((), ())).metadata["fired"].value == "no rule fired"


def test_a_proposal_round_trips_and_a_stored_row_still_loads(tmp_path):
    from relops_pipeline.lib.proposals.store import Proposal, create_proposal, get_proposal
    from relops_pipeline.lib.warehouse import open_warehouse

    with open_warehouse(tmp_path / "w.duckdb") as con:
        made = create_proposal(con, kind="thresholds", workflow="doc-qa", period="2026-11", title="ratchet doc-qa",
                               payload={"config": {"floors": {"similarity": 0.9}}}, evidence={"releases": ["v1"]},
                               base_version="1")
        again = create_proposal(con, kind="thresholds", workflow="doc-qa", period="2026-11", title="ratchet doc-qa",
                                payload={"config": {"floors": {"similarity": 0.9}}}, base_version="1")
        row = get_proposal(con, made.proposal_id)
    assert isinstance(made, Proposal) and made.created and not again.created
    assert Proposal.from_row(row, created=True) == made and again.proposal_id == made.proposal_id
    assert _round_trip(made) == made and isinstance(_round_trip(made).created_at, dt.datetime)
    assert made.payload == {"config": {"floors": {"similarity": 0.9}}} and made.status == "draft"
