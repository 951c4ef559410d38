"""Readiness review: a well-configured workflow is ready; a bare one lists its gaps by risk."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

import pytest
import yaml

from relops_pipeline.lib.gates.thresholds import record_thresholds
from relops_pipeline.lib.home import Home
from relops_pipeline.lib.readiness import (
    latest_readiness,
    readiness_path,
    record_readiness,
    render_readiness_markdown,
    review_readiness,
    write_readiness,
)
from relops_pipeline.lib.registry.rollout import adopt_state
from relops_pipeline.lib.registry.state import RegistryState, write_pointer
from relops_pipeline.lib.workflows import WorkflowError

NOW = datetime(2026, 11, 27, 12, 0)
GOOD = "good"


def _workflow_file(home: Home, name: str, doc: dict) -> None:
    home.workflows_dir.mkdir(parents=True, exist_ok=True)
    (home.workflows_dir / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, **doc}, sort_keys=False))


def _suite(home: Home, name: str, cases: int, must_pass: int) -> None:
    folder = home.root / "suites" / name
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"workflow": name, "version": "v1", "changelog": ["v1: curated"], "cases": [
        {"id": f"c-{i:03d}", "input": {"vars": {"q": f"question {i}"}}, "expected": {"contains": ["answer"]},
         "must_pass": i < must_pass} for i in range(cases)]}
    (folder / "v1.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def _spans(con, name: str, n_known: int, n_unknown: int = 0, *, release: str = "v2", prefix: str = "") -> None:
    rows = []
    for i in range(n_known + n_unknown):
        known = i < n_known
        t = NOW - timedelta(days=1, minutes=i)
        rows.append((f"{prefix}{name}-t{i}", f"{prefix}{name}-s{i}", "llm", name, release if known else "unknown", t,
                     t + timedelta(seconds=1), "ok", known))
    con.executemany("INSERT INTO spans (trace_id, span_id, kind, workflow, release, start_time, end_time, status, "
                    "release_known) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def _eval_run(con, name: str, version: str, means: dict[str, float], cases: int = 30) -> None:
    con.execute("INSERT INTO eval_runs (eval_run_id, release_key, workflow, version, suite_version, source, cases, "
                "samples, errors, valid, started_at, finished_at) VALUES (?, ?, ?, ?, 'v1', 'test', ?, ?, 0, true, ?, ?)",
                [f"run-{name}-{version}", f"{name}--{version}", name, version, cases, cases,
                 NOW - timedelta(days=2), NOW - timedelta(days=2)])
    for metric, mean in means.items():
        # half the cases at mean-0.05, half at mean+0.05: the run's mean is exactly `mean`
        for i in range(cases):
            score = mean - 0.05 if i % 2 else mean + 0.05
            con.execute("INSERT INTO eval_scores VALUES (?, ?, 0, ?, ?, ?, NULL)",
                        [f"run-{name}-{version}", f"c-{i:03d}", metric, score, score >= 0.5])


def _drill(con, name: str, finished: datetime, passed: bool = True) -> None:
    detail = {"checks": [{"name": "pointer_flipped", "ok": passed}]}
    con.execute("INSERT INTO drills VALUES (?, ?, ?, ?, ?, 12.0, ?, NULL)",
                [f"drill-{finished:%Y%m%d%H%M}", name, finished - timedelta(seconds=1), finished, passed,
                 json.dumps(detail)])


def _good_world(con, home: Home, *, floors: bool = True) -> None:
    _workflow_file(home, GOOD, {
        "owner": "ana", "delegates": ["sam"],
        "drift": {"reference": {"start": "2026-09-28", "end": "2026-10-11"}},
        "alerts": {"sinks": [{"type": "file"}, {"type": "pagerduty", "routing_key_env": "PD_KEY",
                                                "min_severity": "error"}],
                   "rules": [{"name": "error-rate", "signal": "error_rate", "above": 0.03}]},
    })
    _suite(home, GOOD, cases=30, must_pass=3)
    record_thresholds(con, GOOD, {"metrics": ["contains"], **({"floors": {"contains": 0.8}} if floors else {})},
                      author="ana", reason="initial")
    state = RegistryState(workflow=GOOD, seq=2, live="v2", stage="full", last_known_good="v1", updated_by="ana",
                          updated_at=NOW - timedelta(days=5))
    state = adopt_state(con, state, actor="relops-tests", reason="starting point")
    write_pointer(home.registry_dir, state)
    _drill(con, GOOD, NOW - timedelta(days=3))
    _eval_run(con, GOOD, "v2", {"contains": 0.9})
    _spans(con, GOOD, 200, 1)
    con.execute("INSERT INTO stability_memos VALUES ('memo-1', DATE '2026-11-16', ?, ?, ?, ?, NULL, NULL, NULL, NULL)",
                [NOW - timedelta(days=2), NOW - timedelta(days=9), NOW - timedelta(days=2),
                 json.dumps({"workflows": [{"workflow": GOOD}]})])
    con.execute("INSERT INTO trace_labels (label_id, sample_id, trace_id, workflow, release, name, value, label, "
                "is_failure, reviewer, imported_at) VALUES ('l1', 'rv-1', 'good-t1', ?, 'v2', 'human_review', 1, "
                "'pass', false, 'sam', ?)", [GOOD, NOW - timedelta(days=3)])


def _by_id(result: dict) -> dict[str, dict]:
    return {c["id"]: c for c in result["checks"]}


def test_well_configured_workflow_is_ready(wh_con, tmp_path):
    home = Home(tmp_path / "home")
    _good_world(wh_con, home)
    result = review_readiness(wh_con, home, GOOD, now=NOW)
    not_ok = [(c["id"], c["status"], c["summary"]) for c in result["checks"] if c["status"] != "ok"]
    assert not_ok == []
    assert result["status"] == "ready" and result["ready"] is True
    assert result["counts"] == {"ok": 19, "gap": 0, "risk": 0}
    assert result["plan"] == []
    checks = _by_id(result)
    tel = checks["telemetry.release_ids"]["evidence"]
    assert (tel["traces"], tel["traces_without_release"], tel["spans_without_release"]) == (201, 1, 1)
    assert tel["trace_share"] == pytest.approx(1 / 201)
    assert checks["suite.must_pass"]["evidence"]["must_pass_cases"] == 3
    assert checks["suite.live_eval"]["evidence"]["eval_run_id"] == "run-good-v2"
    assert checks["gates.floors"]["evidence"]["floors"] == {"contains": 0.8}
    assert checks["rollout.registry"]["evidence"]["rollback_target"] == "v1"
    assert checks["alerts.sinks"]["summary"] == "alerts reach pagerduty (pagerduty, min error)"
    json.dumps(result)  # JSON-ready
    md = render_readiness_markdown(result)
    assert "ready: no gaps" in md and "Nothing to do" in md
    # the review reads only
    assert wh_con.execute("SELECT count(*) FROM readiness_reviews").fetchone()[0] == 0


def test_bare_workflow_lists_its_gaps_in_risk_order(wh_con, tmp_path):
    home = Home(tmp_path / "home")
    _workflow_file(home, "bare", {})
    result = review_readiness(wh_con, home, "bare", now=NOW)
    status = {c["id"]: c["status"] for c in result["checks"]}
    assert status == {
        "config.file": "ok",
        "suite.files": "risk", "suite.min_cases": "gap", "suite.must_pass": "risk", "suite.live_eval": "gap",
        "telemetry.traces": "risk", "telemetry.release_ids": "gap",
        "rollout.policy": "ok", "rollout.registry": "risk", "rollout.drill": "risk",
        "ownership.owner": "risk", "ownership.delegates": "gap",
        "gates.thresholds": "gap", "gates.floors": "gap",
        "alerts.sinks": "gap", "alerts.rules": "gap",
        "cadence.memo": "gap", "cadence.review": "gap", "cadence.drift_reference": "gap",
    }
    assert result["status"] == "at_risk"
    assert result["counts"] == {"ok": 2, "gap": 11, "risk": 6}
    plan = [(s["week"], s["status"], s["check"]) for s in result["plan"]]
    assert plan == [
        (1, "risk", "suite.files"), (1, "risk", "suite.must_pass"), (1, "risk", "telemetry.traces"),
        (1, "risk", "rollout.registry"), (1, "risk", "rollout.drill"), (1, "risk", "ownership.owner"),
        (1, "gap", "suite.min_cases"), (1, "gap", "suite.live_eval"), (1, "gap", "ownership.delegates"),
        (2, "gap", "telemetry.release_ids"),
        (3, "gap", "gates.thresholds"), (3, "gap", "gates.floors"), (3, "gap", "alerts.sinks"),
        (3, "gap", "alerts.rules"),
        (4, "gap", "cadence.memo"), (4, "gap", "cadence.review"), (4, "gap", "cadence.drift_reference"),
    ]
    assert [s["step"] for s in result["plan"]] == list(range(1, 18))
    steps = {s["check"]: s for s in result["plan"]}
    assert "relops drill bare" in steps["rollout.drill"]["commands"]
    assert any("owner: NAME" in c for c in steps["ownership.owner"]["commands"])
    assert any(c.startswith("relops thresholds set bare ") for c in steps["gates.thresholds"]["commands"])
    assert "relops suite validate suites/bare" in steps["suite.files"]["commands"]
    md = render_readiness_markdown(result)
    assert md.index("### Week 1") < md.index("### Week 2") < md.index("### Week 3") < md.index("### Week 4")
    assert "at risk" in md and "relops drill bare" in md


def test_unknown_release_share_of_one_percent_is_a_gap(wh_con, tmp_path):
    home = Home(tmp_path / "home")
    _good_world(wh_con, home)
    _spans(wh_con, GOOD, 0, 2, prefix="more-")  # 3 of 203 traces without a release: 1.48 %
    # old spans outside the window do not count
    wh_con.execute("INSERT INTO spans (trace_id, span_id, workflow, release, start_time, release_known) VALUES "
                "('old', 'old', ?, 'unknown', ?, false)", [GOOD, NOW - timedelta(days=40)])
    result = review_readiness(wh_con, home, GOOD, now=NOW)
    check = _by_id(result)["telemetry.release_ids"]
    assert check["status"] == "gap"
    ev = check["evidence"]
    assert (ev["traces"], ev["traces_without_release"]) == (203, 3)
    assert ev["home_spans_without_release"] == 4
    assert "3 of 203 traces (1.5%)" in check["summary"]
    assert result["status"] == "gaps"
    assert [s["check"] for s in result["plan"]] == ["telemetry.release_ids"]
    assert result["plan"][0]["week"] == 2


def test_missing_floors_suggest_values_from_the_serving_release(wh_con, tmp_path):
    home = Home(tmp_path / "home")
    _good_world(wh_con, home, floors=False)
    check = _by_id(review_readiness(wh_con, home, GOOD, now=NOW))["gates.floors"]
    assert check["status"] == "gap"
    assert check["evidence"]["missing"] == ["contains"]
    assert check["evidence"]["suggested_floors"] == {"contains": 0.85}
    assert "thresholds.yaml: floors: {contains: 0.85}" in check["commands"]


@pytest.mark.parametrize("age_days, passed, expected", [(3, True, "ok"), (40, True, "gap"), (1, False, "risk")])
def test_drill_age_and_outcome(wh_con, tmp_path, age_days, passed, expected):
    home = Home(tmp_path / "home")
    _good_world(wh_con, home)
    wh_con.execute("DELETE FROM drills")
    _drill(wh_con, GOOD, NOW - timedelta(days=age_days), passed=passed)
    check = _by_id(review_readiness(wh_con, home, GOOD, now=NOW))["rollout.drill"]
    assert check["status"] == expected
    assert check["evidence"]["drill_status"] == {"ok": "ok", "gap": "stale", "risk": "failed"}[expected]


def test_pointer_behind_and_memo_of_other_workflows(wh_con, tmp_path):
    home = Home(tmp_path / "home")
    _good_world(wh_con, home)
    wh_con.execute("UPDATE registry_state SET seq = 3")
    wh_con.execute("UPDATE stability_memos SET memo = ?", [json.dumps({"workflows": [{"workflow": "other"}]})])
    checks = _by_id(review_readiness(wh_con, home, GOOD, now=NOW))
    assert checks["rollout.registry"]["status"] == "risk"
    assert checks["rollout.registry"]["commands"] == [f"relops sync {GOOD}"]
    assert checks["cadence.memo"]["status"] == "gap"
    assert checks["cadence.memo"]["evidence"]["memos_in_window"] == 1


def test_no_workflow_file_and_canary_less_policy(wh_con, tmp_path):
    home = Home(tmp_path / "home")
    result = review_readiness(wh_con, home, "ghost", now=NOW)
    check = _by_id(result)["config.file"]
    assert check["status"] == "risk"
    assert check["commands"] == ["relops workflow add ghost --owner NAME"]
    assert result["plan"][0]["check"] == "config.file"

    _workflow_file(home, "fast", {"owner": "ana", "rollout": {"stages": ["full"]}})
    checks = _by_id(review_readiness(wh_con, home, "fast", now=NOW))
    assert checks["rollout.policy"]["status"] == "risk" and "no canary" in checks["rollout.policy"]["summary"]
    assert checks["alerts.rules"]["status"] == "gap" and checks["alerts.rules"]["name"] == "Signal alert rules"

    # Invalid alert rules make the workflow file invalid: the error names the rule's key.
    _workflow_file(home, "bad", {"owner": "ana", "alerts": {"rules": [{"name": "x", "signal": "no_such_signal", "above": 1}]}})
    with pytest.raises(WorkflowError, match="signal"):
        review_readiness(wh_con, home, "bad", now=NOW)


def test_markdown_escapes_names_from_configuration(wh_con, tmp_path):
    home = Home(tmp_path / "home")
    _workflow_file(home, "esc", {"owner": "<script>alert(1)</script>", "delegates": ["*bold* [x](javascript:1)"]})
    md = render_readiness_markdown(review_readiness(wh_con, home, "esc", now=NOW))
    assert "<script>" not in md and re.search(r"(?<!\\)\]\(javascript", md) is None
    assert "&lt;script>" in md


def test_record_and_write_the_review(wh_con, tmp_path):
    home = Home(tmp_path / "home")
    _workflow_file(home, "bare", {})
    result = review_readiness(wh_con, home, "bare", now=NOW)
    md = render_readiness_markdown(result)
    path = write_readiness(home, result, md)
    assert path == readiness_path(home, "bare") == home.root / "reports" / "readiness" / "bare.md"
    assert path.read_text() == md
    rid = record_readiness(wh_con, result, md, path, "run-1")
    assert record_readiness(wh_con, result, md, path, "run-1") == rid  # same review: no second row
    assert rid.startswith("rdy-bare-20261127T120000-")
    row = wh_con.execute("SELECT workflow, status, report_path, dagster_run_id, reviewed_at FROM readiness_reviews").fetchall()
    assert row == [("bare", "at_risk", str(path), "run-1", NOW)]
    latest = latest_readiness(wh_con, "bare")
    assert latest["review_id"] == rid and latest["result"]["counts"] == result["counts"]
    assert latest_readiness(wh_con, "nobody") is None


def test_bad_arguments(wh_con, tmp_path):
    home = Home(tmp_path / "home")
    with pytest.raises(ValueError):
        review_readiness(wh_con, home, "../etc", now=NOW)
    with pytest.raises(ValueError):
        review_readiness(wh_con, home, "bare", now=NOW, days=0)
