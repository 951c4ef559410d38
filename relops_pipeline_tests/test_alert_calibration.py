"""Signal alert rules (lib/alerts/rules.py) and their calibration (lib/alerts/calibration.py),
on small hand-built warehouses."""

import json
from datetime import date, datetime, timedelta

import pytest

from relops_pipeline.lib import audit
from relops_pipeline.lib.alerts.calibration import (
    accept_alert_calibration,
    calibrate,
    problem_windows,
    propose_alert_calibration,
    render_calibration_markdown,
)
from relops_pipeline.lib.alerts.rules import (
    AlertRules,
    RulesError,
    current_alert_rules,
    day_signals,
    evaluate_rules,
    fire_rules,
    parse_rules,
    record_alert_rules,
    seed_alert_rules,
    verify_alert_rules,
)
from relops_pipeline.lib.home import Home
from relops_pipeline.lib.incidents import open_incident
from relops_pipeline.lib.proposals import store
from relops_pipeline.lib.warehouse import open_warehouse

WF = "support-triage"
START = date(2026, 9, 28)
NOW = datetime(2026, 11, 27, 12, 0)


@pytest.fixture
def con(tmp_path):
    with open_warehouse(tmp_path / "warehouse" / "relops.duckdb") as c:
        yield c


def add_signals(con, day, release="v1", *, traces=100, error_rate=0.01, refusals=1, llm_calls=None, feedback_n=20,
                feedback_mean=0.8, cost=0.05, p95=2000.0, length=1, online=None, workflow=WF):
    llm_calls = traces if llm_calls is None else llm_calls
    con.execute(
        "INSERT INTO daily_signals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [day, workflow, release, traces * 2, llm_calls, traces, round(error_rate * traces), error_rate,
         p95 / 2, p95, p95 * 1.5, 1000, 500, cost, json.dumps({"stop": llm_calls - length, "length": length}),
         refusals, refusals / llm_calls if llm_calls else None, feedback_n, feedback_mean,
         json.dumps(online or {}), NOW])


# 60 days of history; error rate 0.025 most days, 0.035 on every 5th day (12 noise days, no
# incident), 0.05 on the two days of a real incident (days 40-41), 0.045 once (day 20).
NOISY = {d: 0.035 for d in range(0, 60, 5)}
NOISY.update({20: 0.045, 40: 0.05, 41: 0.05})
RULES = [
    {"name": "error-rate", "signal": "error_rate", "above": 0.03, "min_traces": 50},
    {"name": "p95-latency", "signal": "latency_p95_ms", "above": 2500, "min_traces": 50, "severity": "error"},
]


def build_history(con, *, incident=True):
    for i in range(60):
        add_signals(con, START + timedelta(days=i), error_rate=NOISY.get(i, 0.025))
    if incident:
        open_incident(con, WF, "v1", "errors after the v1 config change", "manual", "ana.lopez",
                      started_at=datetime.combine(START + timedelta(days=40), datetime.min.time()) + timedelta(hours=10),
                      now=NOW)
    record_alert_rules(con, WF, RULES, author="ana.lopez", reason="first rules")


# ---------------------------------------------------------------------------------------------
# Parsing


def test_parse_rules_accepts_the_block_and_fills_defaults():
    rules = parse_rules({"sinks": [{"type": "file"}], "rules": RULES + [
        {"name": "canary-refusals", "signal": "refusal_rate", "above": 0.04, "per_release": True},
        {"name": "grounded", "signal": "online_scores.groundedness", "below": 0.7}]}, "wf.yaml: alerts")
    assert [r.name for r in rules] == ["error-rate", "p95-latency", "canary-refusals", "grounded"]
    er = rules[0]
    assert (er.direction, er.threshold, er.min_traces, er.min_feedback, er.severity, er.per_release) == (
        "above", 0.03, 50, 0, "warning", False)
    assert rules[1].severity == "error" and rules[2].per_release and rules[2].min_traces == 30
    assert rules[3].direction == "below" and rules[3].breaches(0.69) and not rules[3].breaches(0.7)
    assert parse_rules({"sinks": []}, "x") == [] and parse_rules(None, "x") == []


def test_parse_rules_reports_every_problem_naming_the_key():
    with pytest.raises(RulesError) as exc:
        parse_rules({"rules": [
            {"name": "a", "signal": "error_rate", "above": 0.1, "treshold": 3},
            {"name": "b", "signal": "latency_p59_ms", "above": 1},
            {"name": "c", "signal": "error_rate", "above": 0.1, "below": 0.01},
            {"name": "d", "signal": "error_rate", "above": "high", "severity": "loud", "min_traces": 0},
            {"name": "a", "signal": "traces", "below": 10},
        ]}, "workflows/x.yaml: alerts")
    msg = str(exc.value)
    assert "alerts.rules[0] (a): unknown key 'treshold'" in msg
    assert "rules[1] (b): signal: 'latency_p59_ms' is not a signal (did you mean 'latency_p" in msg
    assert "rules[2] (c): expected exactly one of above / below, got above and below" in msg
    assert "rules[3] (d): above: expected a number" in msg and "rules[3] (d): severity" in msg
    assert "min_traces: expected an integer >= 1, got 0" in msg
    assert "repeated: a" in msg
    with pytest.raises(RulesError, match="expected a list of rules"):
        parse_rules({"rules": {"name": "a"}}, "x")


# ---------------------------------------------------------------------------------------------
# Versions


def test_versions_seed_record_warn_and_verify(con):
    assert current_alert_rules(con, WF).version == 0
    assert seed_alert_rules(con, WF, {"rules": RULES}, "ana.lopez") is None
    v1 = current_alert_rules(con, WF)
    assert (v1.version, v1.author, [r.name for r in v1.rules]) == (1, "ana.lopez", ["error-rate", "p95-latency"])
    # Same rules again: no new version.
    assert record_alert_rules(con, WF, RULES, author="sam", reason="again").version == 1
    changed = [dict(RULES[0], above=0.05), RULES[1]]
    warning = seed_alert_rules(con, WF, {"rules": changed}, "ana.lopez", where="wf.yaml: alerts")
    assert "differs from the recorded alert rules version 1" in warning and "error-rate" in warning
    assert "p95-latency" not in warning.split(" in ")[1].split(";")[0]
    assert current_alert_rules(con, WF).version == 1  # the file never overrides the record
    v2 = record_alert_rules(con, WF, changed, author="sam", reason="quieter")
    assert v2.version == 2 and current_alert_rules(con, WF).by_name("error-rate").threshold == 0.05
    events = audit.list_events(con, workflow=WF, kind="alert_rules_version")
    assert [(e["actor"], e["payload"]["version"]) for e in events] == [("ana.lopez", 1), ("sam", 2)]
    assert verify_alert_rules(con) == []
    con.execute("UPDATE alert_rule_versions SET config_hash = 'x' WHERE version = 1")
    assert any("v1" in p for p in verify_alert_rules(con))
    with pytest.raises(RulesError, match="non-empty author"):
        record_alert_rules(con, WF, RULES, author=" ", reason="r")


# ---------------------------------------------------------------------------------------------
# Signals and evaluation


def test_day_signals_combine_releases_exactly_and_flag_the_latency_fallback(con):
    d = date(2026, 11, 10)
    add_signals(con, d, "v1", traces=300, error_rate=0.01, refusals=3, feedback_n=30, feedback_mean=0.8, p95=2000,
                length=3, online={"groundedness": 0.9})
    add_signals(con, d, "v2", traces=100, error_rate=0.05, refusals=7, feedback_n=10, feedback_mean=0.4, p95=4000,
                length=10, online={"groundedness": 0.5})
    sig = day_signals(con, WF, d, d + timedelta(days=1))[d]
    wf = sig["workflow"]
    assert wf["traces"] == 400
    assert wf["error_rate"] == pytest.approx((3 + 5) / 400)
    assert wf["refusal_rate"] == pytest.approx(10 / 400)
    assert wf["truncation_rate"] == pytest.approx(13 / 400)
    assert wf["feedback_mean"] == pytest.approx((24 + 4) / 40) and wf["feedback_n"] == 40
    assert wf["latency_p95_ms"] == pytest.approx((2000 * 300 + 4000 * 100) / 400)
    assert wf["latency_source"] == "daily_signals (weighted)"
    assert wf["online_scores.groundedness"] == pytest.approx(0.8)
    assert sig["releases"]["v2"]["refusal_rate"] == pytest.approx(0.07)
    # With trace_features for the day, the workflow's quantiles are exact over its traces.
    for i in range(1, 101):
        con.execute("INSERT INTO trace_features (day, workflow, release, trace_id, start_time, spans, llm_calls, "
                    "latency_ms, is_error, is_refusal, computed_at) VALUES (?, ?, 'v1', ?, ?, 1, 1, ?, false, false, ?)",
                    [d, WF, f"t{i}", datetime(2026, 11, 10, 12), float(i), NOW])
    wf = day_signals(con, WF, d, d + timedelta(days=1))[d]["workflow"]
    assert wf["latency_source"] == "trace_features" and wf["latency_p95_ms"] == pytest.approx(95.05)


def test_per_release_rule_catches_a_small_canary_the_aggregate_misses(con):
    d = date(2026, 11, 10)
    add_signals(con, d, "v1", traces=500, length=5)
    add_signals(con, d, "v2", traces=40, length=4)      # 10 % truncated, but only 40 traces
    add_signals(con, d, "unknown", traces=5, length=5)  # 100 %, too few traces to judge
    rules = parse_rules([
        {"name": "trunc-all", "signal": "truncation_rate", "above": 0.05},
        {"name": "trunc-release", "signal": "truncation_rate", "above": 0.05, "per_release": True},
    ], "x")
    fired = evaluate_rules(con, WF, rules, d)
    assert [f.rule for f in fired] == ["trunc-release"]
    f = fired[0]
    assert (f.release, f.value, f.traces) == ("v2", pytest.approx(0.1), 40)
    assert [r.release for r in f.releases] == ["v2"]
    assert evaluate_rules(con, WF, rules, d + timedelta(days=1)) == []  # no signals: nothing fires


def test_fire_rules_seeds_records_once_and_raises_one_alert_per_firing(con, tmp_path):
    home = Home(tmp_path / "home")
    (home.root / "workflows").mkdir(parents=True)
    (home.root / "workflows" / f"{WF}.yaml").write_text(
        f"name: {WF}\nowner: ana.lopez\nalerts:\n  sinks: [{{type: file}}]\n  rules:\n"
        "    - {name: error-rate, signal: error_rate, above: 0.03, min_traces: 50}\n"
        "    - {name: p95-latency, signal: latency_p95_ms, above: 2500, min_traces: 50, severity: error}\n")
    d = date(2026, 11, 10)
    add_signals(con, d, error_rate=0.04, p95=3000)
    out = fire_rules(con, home, WF, d, dagster_run_id="run-1", now=NOW)
    assert current_alert_rules(con, WF).author == "ana.lopez"  # seeded from the file
    assert sorted((f.rule, f.new, f.rules_version) for f in out) == [
        ("error-rate", True, 1), ("p95-latency", True, 1)]
    alerts = con.execute("SELECT kind, severity, dedup_key, release FROM alert_outbox ORDER BY kind").fetchall()
    assert alerts == [("signal.error-rate", "warning", f"signal.error-rate:{WF}:2026-11-10", "*"),
                      ("signal.p95-latency", "error", f"signal.p95-latency:{WF}:2026-11-10", "*")]
    again = fire_rules(con, home, WF, d, dagster_run_id="run-2", now=NOW)
    assert [f.new for f in again] == [False, False]
    assert {f.alert_id for f in again} == {f.alert_id for f in out}
    assert con.execute("SELECT count(*) FROM alert_outbox").fetchone()[0] == 2
    rows = con.execute("SELECT rule, value, threshold, traces, dagster_run_id FROM rule_firings ORDER BY rule").fetchall()
    assert rows == [("error-rate", 0.04, 0.03, 100, "run-1"), ("p95-latency", 3000.0, 2500.0, 100, "run-1")]
    # Recorded without an alert (an old day), the alert follows when a later run raises alerts.
    d2 = d + timedelta(days=1)
    add_signals(con, d2, error_rate=0.04)
    assert fire_rules(con, home, WF, d2, now=NOW, raise_alerts=False)[0].alert_id is None
    assert fire_rules(con, home, WF, d2, now=NOW)[0].alert_id is not None
    assert con.execute("SELECT count(*) FROM alert_outbox").fetchone()[0] == 3


# ---------------------------------------------------------------------------------------------
# Calibration


def test_calibration_brings_a_noisy_rule_within_budget_and_keeps_the_incident(con):
    build_history(con)
    cal = calibrate(con, WF, start=START, end=START + timedelta(days=60), budget_per_month=1.0)
    assert cal["days"] == 60 and len(cal["problems"]) == 1
    [inc] = cal["problems"]
    assert inc["window_from"] == "2026-11-04T10:00:00" and inc["window_to"] == "2026-11-10T10:00:00"
    er = next(r for r in cal["rules"] if r["name"] == "error-rate")
    b = er["before"]
    # Fired: every 5th day (12 days: 0.035, day 20 at 0.045, day 40 at 0.05) and day 41 (0.05);
    # useful: days 40-41, inside the incident's window (day 37 10:00 .. day 43 10:00).
    assert (b["firings"], b["useful"], b["noise"]) == (13, 2, 11)
    assert b["noise_per_month"] == pytest.approx(5.5)
    assert b["caught"] == [inc["id"]]
    assert er["status"] == "proposed" and er["proposed_threshold"] == 0.04
    a = er["after"]
    assert (a["firings"], a["useful"], a["noise"], a["noise_per_month"]) == (3, 2, 1, 0.5)
    assert [x["day"] for x in a["useful_days"]] == ["2026-11-07", "2026-11-08"]
    assert a["caught"] == [inc["id"]] and cal["caught_after"] == [inc["id"]]
    p95 = next(r for r in cal["rules"] if r["name"] == "p95-latency")
    assert p95["status"] == "within_budget" and p95["before"]["firings"] == 0
    assert cal["changed"] and cal["proposed_rules"][0]["above"] == 0.04
    md = render_calibration_markdown(cal)
    # The report shows the alerts per rule before and after on the history: fired, useful, noise, per month.
    assert "| error-rate | error_rate above 0.03 | above 0.04 | proposed | 13 | 2 | 11 | 5.5 | 3 | 2 | 1 | 0.5 |" in md


def test_propose_changes_nothing_until_accepted_then_records_a_version(con):
    build_history(con)
    p = propose_alert_calibration(con, WF, period="2026-11", now=NOW)
    assert p.created and p.kind == "alert_rules" and p.status == "draft" and p.base_version == "1"
    assert p.payload["rules"][0]["above"] == 0.04 and p.payload["rules"][1]["above"] == 2500
    assert "error-rate above 0.03 -> 0.04" in p.title
    assert current_alert_rules(con, WF).by_name("error-rate").threshold == 0.03  # nothing changed yet
    assert propose_alert_calibration(con, WF, period="2026-11", now=NOW).proposal_id == p.proposal_id
    out = accept_alert_calibration(con, p.proposal_id, by="sam.okafor", reason="fewer pages")
    assert out["version"] == 2
    now_rules = current_alert_rules(con, WF)
    assert (now_rules.version, now_rules.author) == (2, "sam.okafor")
    assert now_rules.by_name("error-rate").threshold == 0.04
    row = store.get_proposal(con, p.proposal_id)
    assert (row["status"], row["decided_by"], row["result_version"]) == ("accepted", "sam.okafor", "2")
    [ev] = audit.list_events(con, workflow=WF, kind=store.KIND_PROPOSAL_ACCEPTED)
    assert ev["actor"] == "sam.okafor" and ev["payload"]["proposal_id"] == p.proposal_id
    with pytest.raises(store.ProposalError, match="is accepted"):
        accept_alert_calibration(con, p.proposal_id, by="sam.okafor")
    # Within budget now: nothing more to propose.
    assert propose_alert_calibration(con, WF, period="2026-12", now=NOW) is None


def test_accept_refuses_when_the_rules_moved_since_the_proposal(con):
    build_history(con)
    p = propose_alert_calibration(con, WF, period="2026-11", now=NOW)
    record_alert_rules(con, WF, RULES[1:], author="li.wei", reason="drop error-rate")
    with pytest.raises(store.ProposalError, match="re-run the calibration"):
        accept_alert_calibration(con, p.proposal_id, by="sam.okafor")
    assert current_alert_rules(con, WF).version == 2
    assert store.get_proposal(con, p.proposal_id)["status"] == "draft"


def test_calibration_says_so_when_no_threshold_keeps_the_incident_quietly(con):
    for i in range(60):
        add_signals(con, START + timedelta(days=i), error_rate=0.06 if i % 3 == 0 else 0.01)
    add_signals(con, START + timedelta(days=45), "v2", error_rate=0.04)  # the incident day: mild
    open_incident(con, WF, "v2", "bad v2", "manual", "ana.lopez", started_at=datetime(2026, 11, 12, 10), now=NOW)
    rules = AlertRules(parse_rules(RULES[:1], "x"), version=1)
    cal = calibrate(con, WF, start=START, end=START + timedelta(days=60), rules=rules)
    [er] = [r for r in cal["rules"] if r["name"] == "error-rate"]
    assert er["status"] == "impossible" and er["proposed_threshold"] is None
    assert er["after"] == er["before"] and not cal["changed"]
    assert "no threshold brings noise within 1 per month" in er["note"]


def test_problems_include_unlinked_rollbacks_and_drift_is_counted(con):
    build_history(con, incident=False)
    con.execute("INSERT INTO rollbacks (rollback_id, workflow, from_release, to_release, trigger, reason, automatic, "
                "performed, flipped_at, actor, recorded_at) VALUES ('rb-1', ?, 'v1', 'v0', 'manual', 'r', false, true, "
                "TIMESTAMP '2026-11-08 09:00:00', 'sam', TIMESTAMP '2026-11-08 09:00:00')", [WF])
    for d in (date(2026, 11, 6), date(2026, 11, 20)):
        con.execute("INSERT INTO drift_summaries (granularity, period_start, period_end, workflow, release, status, "
                    "severity, columns_tested, columns_drifted, cur_rows, ref_rows, computed_at) VALUES ('rolling', ?, ?, "
                    "?, '*', 'drift', 'ERROR', 5, 2, 100, 100, ?)", [d - timedelta(days=6), d + timedelta(days=1), WF, NOW])
    probs = problem_windows(con, WF, start=START, end=START + timedelta(days=60))
    assert [(p["id"], p["kind"]) for p in probs] == [("rb-1", "rollback")]
    cal = calibrate(con, WF, start=START, end=START + timedelta(days=60))
    assert cal["drift"]["drifted_days"] == 2 and cal["drift"]["useful"] == 1 and cal["drift"]["noise"] == 1
    er = next(r for r in cal["rules"] if r["name"] == "error-rate")
    assert er["before"]["caught"] == ["rb-1"]


def test_report_escapes_titles(con):
    build_history(con, incident=False)
    open_incident(con, WF, "v1", "<script>alert(1)</script>", "manual", "ana.lopez",
                  started_at=datetime(2026, 11, 7, 10), now=NOW)
    md = render_calibration_markdown(calibrate(con, WF, start=START, end=START + timedelta(days=60)))
    assert "<script>" not in md and "&lt;script>" in md
