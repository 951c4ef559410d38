"""The weekly stability memo on a small hand-built warehouse.

World (week W = Mon 2026-11-16, previous week P = 2026-11-09; ops window 2026-11-16..2026-11-30):
- support: P: v1, 40 traces of 1000 ms, $0.001, 2 errors, 20 thumbs-up.
  W: v1 30 traces 1000 ms $0.001 (10 thumbs-up, groundedness 0.8); v2 (new, manifest model
  m-old -> m-new, no eval run) 30 traces 1500 ms $0.002, 3 errors (10 thumbs-down, groundedness
  0.6); a release named `<script>alert(1)</script>` with 2 traces of 500 ms and no cost.
  Weekly drift '*' on P and W with critical column topic (ok on 2026-11-02). Gate BLOCK of v2 in
  the window, overridden; another gate before the window. Review labels: 4 pass (one replacing
  an earlier fail) on v1, 1 fail on v2.
- qa: traffic only in P (40 traces). In the window: a failing canary v9 never rolled back, a
  rollback v8 -> v7 (42.5 s), an incident opened 11-17 still open (title with <script>), one
  opened 11-20 and closed 11-21, alerts: one followed by an incident (actionable), one noisy,
  one suppressed duplicate.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

import pytest

from relops_pipeline.lib.home import Home
from relops_pipeline.lib.memo import (
    build_memo,
    previous_memo,
    record_memo,
    render_html,
    render_markdown,
    write_memo,
)
from relops_pipeline.lib.warehouse import open_warehouse

W = date(2026, 11, 16)
P = date(2026, 11, 9)
OPS_FROM = datetime(2026, 11, 16)
OPS_TO = datetime(2026, 11, 30)
EVIL = "<script>alert(1)</script>"
TS = datetime(2026, 11, 27, 12, 0)

TF_COLS = ("day", "workflow", "release", "trace_id", "start_time", "spans", "llm_calls", "latency_ms", "cost_usd",
           "is_error", "is_refusal", "feedback", "online_scores", "computed_at")


def _traces(con, workflow, release, day, n, *, latency, cost, errors=0, feedback=None, n_feedback=0, scores=None):
    rows = []
    for i in range(n):
        rows.append((day, workflow, release, f"{workflow}-{release}-{day:%m%d}-{i}", datetime.combine(day, datetime.min.time())
                     + timedelta(minutes=i), 2, 1, latency, cost, i < errors, False,
                     feedback if i < n_feedback else None, json.dumps(scores) if scores else None, TS))
    con.executemany(f"INSERT INTO trace_features ({', '.join(TF_COLS)}) VALUES ({', '.join('?' for _ in TF_COLS)})",
                    rows)


def _insert(con, table, **values):
    cols = list(values)
    con.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
                [json.dumps(v) if isinstance(v, (dict, list)) else v for v in values.values()])


_seq = iter(range(1, 1000))


def _event(con, kind, workflow, release_key, ts, payload, actor="ana", reason="because"):
    seq = next(_seq)
    _insert(con, "events", seq=seq, event_id=f"e{seq}", ts=ts, actor=actor, kind=kind, workflow=workflow,
            release_key=release_key, reason=reason, payload=payload, prev_hash="0", hash=f"h{seq}")


@pytest.fixture
def con(tmp_path):
    with open_warehouse(tmp_path / "w.duckdb") as c:
        _world(c)
        yield c


def _world(con):
    d_p, d_w = P + timedelta(days=1), W + timedelta(days=1)
    _traces(con, "support", "v1", d_p, 40, latency=1000.0, cost=0.001, errors=2, feedback=1.0, n_feedback=20)
    _traces(con, "support", "v1", d_w, 30, latency=1000.0, cost=0.001, feedback=1.0, n_feedback=10,
            scores={"groundedness": 0.8, "label": "not a number"})
    _traces(con, "support", "v2", d_w, 30, latency=1500.0, cost=0.002, errors=3, feedback=0.0, n_feedback=10,
            scores={"groundedness": 0.6})
    _traces(con, "support", EVIL, d_w, 2, latency=500.0, cost=None)
    _traces(con, "qa", "v8", d_p, 40, latency=800.0, cost=0.001)

    _insert(con, "releases", release_key="support--v2", workflow="support", version="v2", manifest_known=True,
            diff={"known": True, "model": {"from": "m-old", "to": "m-new"}}, registered_at=TS)
    _insert(con, "eval_runs", eval_run_id="ev1", release_key="support--v1", workflow="support", version="v1",
            suite_version="v1", source="run", cases=10, samples=10, errors=0, valid=True, started_at=TS,
            finished_at=TS)

    for start, status, crit in ((date(2026, 11, 2), "ok", []), (P, "drift", ["topic"]), (W, "drift", ["topic"])):
        _insert(con, "drift_summaries", granularity="weekly", period_start=start, period_end=start + timedelta(7),
                workflow="support", release="*", status=status, severity="ERROR" if crit else None,
                columns_tested=10, columns_drifted=3 if crit else 0, drifted_share=0.3 if crit else 0.0,
                critical_drifted=crit, cur_rows=60, ref_rows=100, computed_at=TS)

    gate = {"release_key": "support--v2", "workflow": "support", "version": "v2", "result": {}}
    _insert(con, "gate_decisions", gate_id="g-in", decision="BLOCK", reasons=["contains regressed by 9 points"],
            decided_at=datetime(2026, 11, 17, 9), **gate)
    _insert(con, "gate_decisions", gate_id="g-before", decision="SHIP", reasons=["fine"],
            decided_at=datetime(2026, 11, 10, 9), **gate)
    _event(con, "override", "support", "support--v2", datetime(2026, 11, 17, 10),
           {"gate_id": "g-in", "decision": "BLOCK", "override": True}, actor="ana", reason="hotfix needed")
    _event(con, "rollout", "support", "support--v2", datetime(2026, 11, 17, 11),
           {"stage": "canary", "percent": 50.0, "after": {"live": "v1"}, "gate_decision": "BLOCK", "override": True})

    _insert(con, "canary_analyses", analysis_id="can-1", release_key="qa--v9", workflow="qa", canary="v9",
            baseline="v8", window_start=datetime(2026, 11, 20), window_end=datetime(2026, 11, 21), verdict="fail",
            score=40.0, consecutive_failures=2, result={"reasons": ["latency regressed"]},
            computed_at=datetime(2026, 11, 21, 1))
    _insert(con, "rollbacks", rollback_id="rb-1", workflow="qa", from_release="v8", to_release="v7", trigger="canary",
            reason="canary failed", automatic=True, performed=True, time_to_rollback_s=42.5, actor="relops",
            recorded_at=datetime(2026, 11, 22, 8))
    inc = {"workflow": "qa", "status": "open", "source": "manual", "opened_by": "li"}
    _insert(con, "incidents", incident_id="inc-old", release="v8", title=f"{EVIL} outage",
            opened_at=datetime(2026, 11, 17, 8), **inc)
    _insert(con, "incidents", incident_id="inc-closed", release="v8", title="slow answers",
            opened_at=datetime(2026, 11, 20, 8), closed_at=datetime(2026, 11, 21, 8), closed_by="li",
            resolution="fixed", **{**inc, "status": "closed"})
    alert = {"workflow": "qa", "severity": "warning", "kind": "signal.p95", "dedup_key": "p95"}
    _insert(con, "alert_outbox", alert_id="a-useful", title="p95 high", status="delivered",
            created_at=datetime(2026, 11, 19, 8), **alert)
    _insert(con, "alert_outbox", alert_id="a-noisy", title="p95 high", status="delivered",
            created_at=datetime(2026, 11, 24, 8), **alert)
    _insert(con, "alert_outbox", alert_id="a-dup", title="p95 high", status="suppressed", suppressed_by="a-noisy",
            created_at=datetime(2026, 11, 24, 9), **alert)

    label = {"workflow": "support", "name": "human_review", "reviewer": "rev"}
    day = d_w.strftime("%m%d")
    _insert(con, "trace_labels", label_id="l0-old", trace_id=f"support-v1-{day}-0", release="v1", label="fail",
            value=0.0, is_failure=True, imported_at=datetime(2026, 11, 23), **label)
    for i in range(4):
        _insert(con, "trace_labels", label_id=f"l{i}", trace_id=f"support-v1-{day}-{i}", release="v1", label="pass",
                value=1.0, is_failure=False, imported_at=datetime(2026, 11, 24), **label)
    _insert(con, "trace_labels", label_id="l9", trace_id=f"support-v2-{day}-0", release="v2", label="fail",
            value=0.0, is_failure=True, imported_at=datetime(2026, 11, 24), **label)


def _memo(con, **kw):
    return build_memo(con, W, ops_from=OPS_FROM, ops_to=OPS_TO, home=None, **kw)


def _wf(memo, name):
    return next(w for w in memo["workflows"] if w["workflow"] == name)


def test_signals_week_over_week(con):
    memo = _memo(con)
    assert memo["week"] == "2026-11-16" and memo["week_end"] == "2026-11-22" and memo["previous_week"] == "2026-11-09"
    s = _wf(memo, "support")["signals"]
    assert s["source"] == "trace_features"
    cur, prev, ch = s["week"], s["previous"], s["change"]
    assert (cur["traces"], cur["errors"], prev["traces"], prev["errors"]) == (62, 3, 40, 2)
    assert cur["error_rate"] == pytest.approx(3 / 62) and prev["error_rate"] == pytest.approx(0.05)
    # 2 x 500, 30 x 1000, 30 x 1500 ms: p50 at position 30.5 -> 1000, p95 at 57.95 -> 1500
    assert cur["latency_p50_ms"] == pytest.approx(1000.0) and cur["latency_p95_ms"] == pytest.approx(1500.0)
    assert prev["latency_p95_ms"] == pytest.approx(1000.0) and ch["latency_p95_ms"]["pct"] == pytest.approx(0.5)
    assert cur["cost_usd"] == pytest.approx(0.09) and cur["cost_per_trace"] == pytest.approx(0.09 / 62)
    assert (cur["feedback_n"], cur["feedback_mean"], prev["feedback_mean"]) == (20, pytest.approx(0.5), 1.0)
    assert ch["feedback_mean"]["delta"] == pytest.approx(-0.5)
    assert cur["online_scores"] == {"groundedness": {"mean": pytest.approx(0.7), "n": 60}}
    rel = {r["release"]: r for r in _wf(memo, "support")["releases"]}
    assert list(rel) == ["v1", "v2", EVIL]  # by traffic this week, then name
    v2 = rel["v2"]
    assert v2["first_seen_this_week"] and v2["previous"] is None
    assert (v2["week"]["traces"], v2["week"]["error_rate"], v2["week"]["latency_p95_ms"]) == (30, 0.1, 1500.0)
    assert v2["manifest_change"] == "model m-old → m-new"
    assert rel["v1"]["change"]["traces"]["pct"] == pytest.approx(-0.25)
    labels = _wf(memo, "support")["labels"]
    # the later "pass" replaces the earlier "fail" on trace 0
    assert (labels["n"], labels["pass"], labels["fail"]) == (5, 4, 1)
    assert labels["by_release"]["v2"]["fail"] == 1
    series = _wf(memo, "support")["series"]
    assert len(series["days"]) == 56 and series["days"][-1] == "2026-11-22"
    assert series["traces"][series["days"].index("2026-11-17")] == 62
    json.dumps(memo)  # JSON-ready


def test_drift_since(con):
    drift = _wf(_memo(con), "support")["drift"]
    assert drift["status"] == "drift" and drift["critical_drifted"] == ["topic"]
    assert drift["since"] == "2026-11-09" and drift["weeks"] == 2
    assert drift["message"] == "drift since the week of 2026-11-09 (2 weeks)"
    assert _wf(_memo(con), "qa")["drift"]["computed"] is False


def test_operations_in_window(con):
    memo = _memo(con)
    sup, qa = _wf(memo, "support"), _wf(memo, "qa")
    assert [g["gate_id"] for g in sup["gates"]] == ["g-in"]  # g-before was decided before the window
    assert sup["approvals"][0]["kind"] == "override" and sup["approvals"][0]["gate_id"] == "g-in"
    assert sup["rollouts"][0]["stage"] == "canary" and sup["rollouts"][0]["override"] is True
    assert qa["rollbacks"][0]["time_to_rollback_s"] == 42.5 and qa["rollbacks"][0]["from"] == "v8"
    inc = qa["incidents"]
    assert [i["incident_id"] for i in inc["opened"]] == ["inc-old", "inc-closed"]
    assert [i["incident_id"] for i in inc["closed"]] == ["inc-closed"]
    assert [i["incident_id"] for i in inc["open"]] == ["inc-old"]
    assert inc["open"][0]["age_days"] == pytest.approx(12 + 16 / 24)  # 11-17 08:00 to 11-30 00:00
    alerts = qa["alerts"]
    verdicts = {a["alert_id"]: a["verdict"] for a in alerts["items"]}
    assert verdicts == {"a-useful": "actionable", "a-noisy": "noisy", "a-dup": "suppressed"}
    assert (alerts["total"], alerts["noisy"], alerts["suppressed"]) == (3, 1, 1)
    assert alerts["by_status"] == {"delivered": 2, "suppressed": 1}
    assert memo["summary"]["blocked"] == 1 and memo["summary"]["rollbacks"] == 1
    assert memo["summary"]["blocked_releases"] == ["support v2"]
    md = render_markdown(memo)
    assert "1 gate decision(s), 1 BLOCK (support v2)" in md
    assert "qa v8 → v7 (canary, 42.5 s to roll back)" in md
    assert "support: drift since the week of 2026-11-09 (2 weeks)" in md


def test_fixes_ranked_with_evidence(con):
    fixes = _memo(con)["fixes"]
    order = [(f["rank"], f["rule"], f["workflow"], f["release"], f["severity"]) for f in fixes]
    assert order == [
        (1, "canary_failed", "qa", "v9", "critical"),
        (2, "workflow_regression", "support", None, "high"),  # feedback 1.00 -> 0.50: score min(1, 0.5 x 5)
        (3, "release_regression", "support", "v2", "high"),  # score 30/62 x 1.0 + 0.5 (not rolled back)
        (4, "drift_without_incident", "support", None, "high"),  # 0.5 + 0.1 x 2 weeks
        (5, "no_eval_evidence", "support", "v2", "high"),  # 30/62 of the traffic
        (6, "incident_open_too_long", "qa", "v8", "medium"),
        (7, "review_failures", "support", None, "medium"),
        (8, "no_eval_evidence", "support", EVIL, "medium"),
        (9, "noisy_alerts", "qa", None, "low"),
    ]
    reg = fixes[2]
    assert reg["score"] == pytest.approx(30 / 62 + 0.5, abs=1e-4)
    assert {r["metric"] for r in reg["evidence"]["regressions"]} == {"latency_p95_ms", "error_rate", "cost_per_trace"}
    assert "p95 latency +50 %" in reg["title"] and "m-old → m-new" in reg["detail"]
    assert "coincides with" in reg["detail"] and reg["evidence"]["baseline_release"] == "v1"
    wow = fixes[1]
    assert [r["metric"] for r in wow["evidence"]["regressions"]] == ["feedback_mean"]  # latency explained by v2
    assert "Coincides with traffic moving to v2 (share 0 % → 48 %" in wow["detail"]
    assert fixes[8]["evidence"]["alert_ids"] == ["a-noisy", "a-dup"]
    assert all(f["evidence"]["source"] for f in fixes)


def test_no_traffic(con, tmp_path):
    memo = _memo(con)
    qa = _wf(memo, "qa")
    assert qa["traffic"] is False and qa["traffic_previous"] is True
    assert "No traffic in the week of 2026-11-16 (40 traces the week before)" in render_markdown(memo)
    with open_warehouse(tmp_path / "empty.duckdb") as empty:
        quiet = build_memo(empty, date(2026, 12, 9), ops_from=datetime(2026, 12, 7), ops_to=datetime(2026, 12, 14))
    assert quiet["week"] == "2026-12-07" and quiet["no_traffic"] and quiet["workflows"] == [] and quiet["fixes"] == []
    md = render_markdown(quiet)
    assert "No traffic in the week of 2026-12-07" in md and "Nothing to fix" in md
    assert "No traffic in the week of 2026-12-07" in render_html(quiet)


def test_escaping(con):
    memo = _memo(con)
    md, page = render_markdown(memo), render_html(memo)
    for text in (md, page):
        assert "<script" not in text
        assert "&lt;script" in text  # the release name and the incident title, escaped
    assert page.count("&lt;script&gt;") >= 3  # release row, fix, incident title
    assert page.count("<svg") == 6 and "<circle" in page and "<rect" in page  # 3 charts per workflow
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page


def test_write_record_previous(con, tmp_path):
    home = Home(tmp_path / "home")
    memo = _memo(con)
    md_path, html_path = write_memo(home, memo)
    assert md_path == tmp_path / "home" / "reports" / "memos" / "2026-11-16.md"
    assert html_path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    md = md_path.read_text(encoding="utf-8")
    assert previous_memo(con, W + timedelta(days=7)) is None
    gen = datetime(2026, 11, 23, 6)
    memo_id = record_memo(con, memo, md, md_path, html_path, generated_at=gen, ops_from=OPS_FROM, ops_to=OPS_TO,
                          dagster_run_id="run-1")
    assert memo_id.startswith("memo-20261116-20261123T060000-")
    assert previous_memo(con, W) is None  # only earlier weeks count
    prev = previous_memo(con, date(2026, 11, 25))  # any day of the next week
    assert prev["memo_id"] == memo_id and prev["generated_at"] == gen and prev["week"] == W
    assert prev["memo"]["summary"] == json.loads(json.dumps(memo["summary"]))
    assert prev["report_md"] == md and prev["dagster_run_id"] == "run-1"


def test_week_normalised_and_empty_ops_window(con):
    assert build_memo(con, date(2026, 11, 19), ops_from=OPS_FROM, ops_to=OPS_TO)["week"] == "2026-11-16"
    with pytest.raises(ValueError, match="reversed"):
        build_memo(con, W, ops_from=OPS_TO, ops_to=OPS_FROM)
    empty_window = build_memo(con, W, ops_from=OPS_TO, ops_to=OPS_TO)  # nothing recorded: signals only
    assert _wf(empty_window, "support")["gates"] == [] and empty_window["summary"]["rollbacks"] == 0
    assert [w["workflow"] for w in empty_window["workflows"]] == ["qa", "support"]  # traffic this or last week


def test_daily_signals_fallback(tmp_path):
    with open_warehouse(tmp_path / "w.duckdb") as c:
        for day, rel, traces, p95 in ((W, "v1", 100, 1000.0), (W + timedelta(1), "v1", 300, 2000.0)):
            _insert(c, "daily_signals", day=day, workflow="lean", release=rel, spans=traces, llm_calls=traces,
                    traces=traces, errors=0, error_rate=0.01, latency_p95_ms=p95, cost_usd=1.0, refusals=2,
                    feedback_n=0, computed_at=TS)
        memo = build_memo(c, W, ops_from=OPS_FROM, ops_to=OPS_TO)
    s = memo["workflows"][0]["signals"]
    assert s["source"] == "daily_signals"
    assert s["week"]["traces"] == 400 and s["week"]["errors"] == 4
    assert s["week"]["latency_p95_ms"] == pytest.approx((100 * 1000 + 300 * 2000) / 400)  # traffic-weighted
    assert s["week"]["refusal_rate"] == pytest.approx(4 / 400)
    assert "traffic-weighted mean of daily quantiles" in render_markdown(memo)
