"""The pieces behind a release's decision at a glance (lib/gates/glance.py, lib/rounding.py,
defs/links.py, defs/gates/metadata.py): the status and severity of each decision, the audit
events the approvals sensor reads, numbers rounded to what they mean, report links as URLs."""

from __future__ import annotations

import math
from pathlib import Path

import dagster as dg
import pytest

from relops_pipeline.defs.gates.metadata import approval_asset_event
from relops_pipeline.defs.links import home_of_report, release_link, report_link
from relops_pipeline.lib import audit, rounding
from relops_pipeline.lib.gates.glance import ERROR, PASS, WARN, ApprovalEvent, approval_events_since, glance, glance_of_state
from relops_pipeline.lib.home import Home

KEY = "doc-qa--v2.4.0"


@pytest.mark.parametrize(("decision", "approved", "overridden", "status", "outcome"), [
    ("SHIP", False, False, "SHIP", PASS),
    ("REVIEW", False, False, "REVIEW", WARN),
    ("REVIEW", True, False, "REVIEW approved", PASS),
    ("BLOCK", False, False, "BLOCK", ERROR),
    ("BLOCK", False, True, "BLOCK overridden", WARN),
    ("INVALID", False, False, "INVALID", ERROR),
])
def test_each_decision_has_its_own_status_and_outcome(decision, approved, overridden, status, outcome):
    g = glance(KEY, "v3", decision, approved=approved, overridden=overridden, by="ana", reason="checked by hand")
    assert (g.status, g.outcome, g.decision) == (status, outcome, decision)
    assert g.description.startswith(status) and f"{KEY} on suite v3" in g.description
    assert (g.by, g.reason) == (("ana", "checked by hand") if approved or overridden else (None, None))


def test_a_waiting_review_says_how_to_approve_and_a_missing_suite_is_named():
    g = glance(KEY, None, "REVIEW")
    assert "relops approve doc-qa v2.4.0 --by NAME --reason TEXT" in g.description
    assert g.suite_version == "none" and "on suite none" in g.description


def test_glance_of_state_reads_the_release_state():
    assert glance_of_state({"release_key": KEY, "decision": None}, "v3") is None
    g = glance_of_state({"release_key": KEY, "decision": "BLOCK", "approved": False, "overridden": True,
                         "approved_by": "sam", "approval_reason": "hotfix"}, "v3")
    assert g is not None and (g.status, g.by, g.reason) == ("BLOCK overridden", "sam", "hotfix")


def test_approval_events_since_reads_only_approvals_overrides_and_refusals_of_a_release(wh_con):
    audit.append_event(wh_con, kind=audit.KIND_GATE_DECISION, actor="relops", reason="BLOCK", release_key=KEY)
    first = audit.append_event(wh_con, kind=audit.KIND_REFUSED, actor="mallory", reason="may not override",
                               release_key=KEY)
    audit.append_event(wh_con, kind=audit.KIND_OVERRIDE, actor="sam", reason="hotfix", release_key=KEY)
    audit.append_event(wh_con, kind=audit.KIND_REFUSED, actor="eve", reason="no release named")  # no release
    events = approval_events_since(wh_con, 0)
    assert [(e.kind, e.actor, e.release_key) for e in events] == [("refused", "mallory", KEY), ("override", "sam", KEY)]
    assert events[0].seq == first["seq"] and "T" in events[0].ts
    assert [e.kind for e in approval_events_since(wh_con, first["seq"])] == ["override"]
    assert approval_events_since(wh_con, events[-1].seq) == []


def test_approval_events_become_materializations_and_refusals_observations(tmp_path):
    home = Home(tmp_path)
    approved = approval_asset_event(ApprovalEvent(7, "approval", "ana", "reviewed", KEY, "2026-11-20T10:00:00"), home)
    assert isinstance(approved, dg.AssetMaterialization) and approved.partition == KEY
    assert approved.description == f"{KEY} approved by ana: reviewed"
    assert approved.metadata["release_page"].value == "http://127.0.0.1:4318/releases/doc-qa/v2.4.0"
    assert approved.metadata["audit_seq"].value == 7
    refused = approval_asset_event(ApprovalEvent(8, "refused", "mallory", "may not", KEY, "2026-11-20T10:01:00"), home)
    assert isinstance(refused, dg.AssetObservation) and refused.description == f"{KEY} refused by mallory: may not"


def test_numbers_are_rounded_to_what_they_mean():
    assert rounding.rate(-0.0009523809523809538) == -0.0009524
    assert rounding.rate(0.123456) == 0.1235 and rounding.rate(0.0) == 0.0 and math.isnan(rounding.rate(float("nan")))
    assert rounding.ms(1234.567) == 1235.0 and rounding.seconds(4.20001234) == 4.2 and rounding.usd(0.0012345678) == 0.001235
    assert rounding.by_name("latency_p95_ms", 2100.44) == 2100.0
    assert rounding.by_name("cost_per_trace_usd", 0.00212345) == 0.002123
    assert rounding.by_name("time_to_rollback_s", 4.20049) == 4.2
    assert rounding.by_name("accuracy", 0.912345) == 0.9123


def test_report_links_are_urls_under_the_served_reports(tmp_path):
    home = Home(tmp_path / "home")
    report = home.reports_dir / "gates" / "doc-qa" / "v2.4.0 #1.html"
    assert home_of_report(report) == home
    assert report_link(report).value == "http://127.0.0.1:4318/reports/gates/doc-qa/v2.4.0%20%231.html"
    home.root.mkdir(parents=True)
    home.settings_file.write_text("serve:\n  public_url: https://relops.example.com/\n")
    assert report_link(report, home).value == "https://relops.example.com/reports/gates/doc-qa/v2.4.0%20%231.html"
    assert release_link(home, KEY).value == "https://relops.example.com/releases/doc-qa/v2.4.0"
    # a file outside the reports folder is not served: it stays a path rather than a broken link
    outside = report_link(Path(tmp_path / "elsewhere.md"))
    assert isinstance(outside, dg.PathMetadataValue)
