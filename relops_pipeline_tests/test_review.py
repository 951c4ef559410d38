"""The weekly review sample and its labels, incidents with started_at and trace links, and the
canary rollback linking example traces to its incident."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
from collections import Counter

import pytest

from relops_pipeline.lib.incidents import (
    IncidentError,
    example_traces,
    get_incident,
    incident_traces,
    link_incident,
    open_incident,
    show_incident,
)
from relops_pipeline.lib.review import (
    ReviewImportError,
    draw_review_sample,
    guard_cell,
    import_review_labels,
    sample_id,
    select_review_sample,
    unguard_cell,
    write_review_sheet,
)

WEEK = dt.date(2026, 11, 16)  # a Monday
T0 = dt.datetime(2026, 11, 16, 8, 0)
NOW = dt.datetime(2026, 11, 24, 9, 0)
QUESTION = "Question: how do I rotate the webhook secret?"


def add_trace(con, trace_id, workflow, release, start, *, topic="billing", error=False, refusal=False, feedback=None,
              latency=800.0, input_text="hello", output_text="hi", error_type=None):
    """One trace as ingest and the features job leave it: a root agent span without text, an
    LLM span with the messages, and its trace_features row."""
    con.execute(
        "INSERT INTO spans (trace_id, span_id, parent_span_id, span_name, kind, workflow, release, start_time, end_time, "
        "latency_ms, status, error_type) VALUES (?, ?, NULL, 'agent', 'agent', ?, ?, ?, ?, ?, ?, ?)",
        [trace_id, trace_id[:8] + "r", workflow, release, start, start + dt.timedelta(milliseconds=latency), latency,
         "error" if error else "unset", error_type])
    con.execute(
        "INSERT INTO spans (trace_id, span_id, parent_span_id, span_name, kind, workflow, release, start_time, end_time, "
        "latency_ms, status, finish_reason, input_text, output_text) VALUES (?, ?, ?, 'chat', 'llm', ?, ?, ?, ?, ?, 'unset', "
        "'stop', ?, ?)",
        [trace_id, trace_id[:8] + "l", trace_id[:8] + "r", workflow, release, start + dt.timedelta(milliseconds=5),
         start + dt.timedelta(milliseconds=latency - 5), latency - 10, input_text, output_text])
    con.execute(
        "INSERT INTO trace_features (day, workflow, release, trace_id, start_time, spans, llm_calls, latency_ms, is_error, "
        "is_refusal, topic, feedback, computed_at) VALUES (?, ?, ?, ?, ?, 2, 1, ?, ?, ?, ?, ?, ?)",
        [start.date(), workflow, release, trace_id, start, latency, error, refusal, topic, feedback, NOW])


def build_week(con):
    """support-triage: v1.4.0 with 200 traces (10 errors, 6 refusals, 4 thumbs-down) over 4
    topics and a canary v1.5.0 with 5; doc-qa: 30 traces of v2.3.0; plus traces of the weeks
    before and after, which must never be sampled."""
    topics = ["billing", "login", "refund", "shipping"]
    for i in range(200):
        add_trace(con, f"st-{i:04d}", "support-triage", "v1.4.0", T0 + dt.timedelta(minutes=45 * i),
                  topic=topics[i % 4], error=i % 20 == 3, refusal=i % 33 == 5, feedback=0.0 if i % 50 == 7 else None,
                  error_type="RateLimitError" if i % 20 == 3 else None)
    for i in range(5):
        add_trace(con, f"st-canary-{i}", "support-triage", "v1.5.0", T0 + dt.timedelta(days=5, minutes=i))
    for i in range(30):
        add_trace(con, f"dq-{i:04d}", "doc-qa", "v2.3.0", T0 + dt.timedelta(hours=5 * i), topic="api")
    add_trace(con, "st-before", "support-triage", "v1.4.0", T0 - dt.timedelta(minutes=1))
    add_trace(con, "st-after", "support-triage", "v1.4.0", T0 + dt.timedelta(days=7))


# ---------------------------------------------------------------------------------------------
# Sample


def test_sample_is_stratified_deterministic_and_recorded_once(wh_con):
    build_week(wh_con)
    drawn = draw_review_sample(wh_con, WEEK, size=20, seed=0)
    assert len(drawn) == 20 and len({s["trace_id"] for s in drawn}) == 20
    assert not {"st-before", "st-after"} & {s["trace_id"] for s in drawn}
    cells = Counter((s["workflow"], s["release"]) for s in drawn)
    # Workflows: 10 split evenly (5 each), 10 by traffic (205 vs 30 -> 9 and 1): 14 and 6.
    assert cells[("doc-qa", "v2.3.0")] == 6
    # The canary gets its floor of 2 out of support-triage's 14 despite 5 traces against 200.
    assert cells[("support-triage", "v1.5.0")] == 2 and cells[("support-triage", "v1.4.0")] == 12
    v14 = [s for s in drawn if s["release"] == "v1.4.0"]
    # ceil(12 * 0.25) = 3 oversampled flagged traces, in turn error, refusal, negative feedback.
    assert Counter(s["stratum"] for s in v14) == {"random": 9, "oversampled: error": 1, "oversampled: refusal": 1,
                                                   "oversampled: negative_feedback": 1}
    assert {s["topic"] for s in v14 if s["stratum"] == "random"} == {"billing", "login", "refund", "shipping"}
    expected_id = "rv-20261116-" + hashlib.sha256(drawn[0]["trace_id"].encode()).hexdigest()[:8]
    assert drawn[0]["sample_id"] == expected_id == sample_id(dt.date(2026, 11, 19), drawn[0]["trace_id"])
    assert draw_review_sample(wh_con, WEEK + dt.timedelta(days=3), size=20, seed=0) == drawn  # any day of the week
    assert {s["trace_id"] for s in draw_review_sample(wh_con, WEEK, size=20, seed=1)} != {s["trace_id"] for s in drawn}

    first = select_review_sample(wh_con, WEEK, size=20, seed=0, now=NOW)
    assert [s["sample_id"] for s in first] == [s["sample_id"] for s in drawn]
    again = select_review_sample(wh_con, WEEK, size=40, seed=7, now=NOW)  # the week is already sampled
    assert sorted(s["sample_id"] for s in again) == sorted(s["sample_id"] for s in drawn)
    assert wh_con.execute("SELECT count(*), count(DISTINCT sample_id) FROM review_samples").fetchone() == (20, 20)
    assert select_review_sample(wh_con, WEEK - dt.timedelta(days=14)) == []  # a week without traffic


def test_review_sheet_quotes_guards_truncates_and_escapes(wh_con, tmp_path):
    long_input = json.dumps([{"role": "user", "parts": [{"type": "text", "content": "x" * 5000 + " " + QUESTION}]}])
    add_trace(wh_con, "t-formula", "support-triage", "v1.4.0", T0, input_text=long_input,
              output_text="=HYPERLINK(\"http://evil\",\"click\") <script>alert(1)</script>")
    add_trace(wh_con, "t-plain", "support-triage", "v1.4.0", T0 + dt.timedelta(hours=1), input_text="-1 refund please",
              output_text="Sure, é ü ✓")
    samples = select_review_sample(wh_con, WEEK, now=NOW)
    home = type("H", (), {"reports_dir": tmp_path / "reports"})()
    csv_path, html_path = write_review_sheet(wh_con, home, WEEK + dt.timedelta(days=2), samples)
    assert csv_path == tmp_path / "reports" / "review" / "2026-11-16.csv" and html_path.suffix == ".html"
    raw = csv_path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf\"sample_id\",")  # BOM, quoted header
    with csv_path.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["sample_id", "workflow", "release", "topic", "trace_id", "start_time", "input", "output",
                             "stratum", "label", "score", "failure_type", "note", "reviewer"]
    by_trace = {r["trace_id"]: r for r in rows}
    bad = by_trace["t-formula"]
    assert bad["output"].startswith("'=HYPERLINK(")
    assert bad["input"].startswith("user: xxx") and bad["input"].endswith(QUESTION)  # the question survives the cut
    assert "[truncated: 3,052 of 5,052 characters cut here]" in bad["input"] and len(bad["input"]) < 2100
    assert by_trace["t-plain"]["input"] == "'-1 refund please" and by_trace["t-plain"]["output"] == "Sure, é ü ✓"
    assert all(r[k] == "" for r in rows for k in ("label", "score", "failure_type", "note", "reviewer"))
    page = html_path.read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert wh_con.execute("SELECT DISTINCT sheet FROM review_samples").fetchall() == [(str(csv_path),)]

    # A reviewer started labelling: writing the week's sheet again never overwrites their work.
    labelled = raw.replace(b'"","","","",""', b'"pass","","","","sam"', 1)
    assert labelled != raw
    csv_path.write_bytes(labelled)
    write_review_sheet(wh_con, home, WEEK, samples)
    assert csv_path.read_bytes() == labelled
    # Guarded cells come back as the reviewer meant them (tab and CR guards included).
    for text in ("=1+1", "-1 refund", "@me", "\tindented", "plain"):
        assert unguard_cell(guard_cell(text)) == text.strip()


# ---------------------------------------------------------------------------------------------
# Labels


def _labelled(path, samples, labels, *, delimiter=","):
    """A filled-in sheet: labels = {trace_id: {column: value}}; other rows left blank."""
    cols = ["sample_id", "trace_id", "label", "score", "failure_type", "note", "reviewer"]
    with path.open("w", encoding="utf-8-sig", newline="") as f:
        w = csv.writer(f, delimiter=delimiter, quoting=csv.QUOTE_ALL)
        w.writerow(cols)
        for s in samples:
            filled = labels.get(s["trace_id"], {})
            w.writerow([filled.get("sample_id", s["sample_id"]), s["trace_id"], *(filled.get(c, "") for c in cols[2:])])
    return path


def _small_world(con):
    for i in range(3):
        add_trace(con, f"st-{i}", "support-triage", "v1.4.0", T0 + dt.timedelta(hours=i), topic=["billing", "login", "refund"][i])
    add_trace(con, "dq-0", "doc-qa", "v2.3.0", T0 + dt.timedelta(hours=5), topic="api")
    add_trace(con, "dq-1", "doc-qa", "v2.3.0", T0 + dt.timedelta(hours=6), topic="api")
    return select_review_sample(con, WEEK, now=NOW)


def test_import_checks_every_row_first_and_writes_nothing_on_any_problem(wh_con, tmp_path):
    samples = _small_world(wh_con)
    path = _labelled(tmp_path / "bad.csv", samples, {
        "st-0": {"label": "pass", "reviewer": "ana"},  # fine
        "st-1": {"label": "broken", "reviewer": "ana"},
        "st-2": {"label": "fail", "score": "1.5", "reviewer": "ana"},
        "dq-0": {"label": "pass"},  # no reviewer, no default
        "dq-1": {"sample_id": "rv-20261116-deadbeef", "label": "pass", "reviewer": "ana"},
    })
    order = {s["trace_id"]: i + 2 for i, s in enumerate(samples)}  # header is line 1
    with pytest.raises(ReviewImportError) as err:
        import_review_labels(wh_con, path, now=NOW)
    problems = err.value.problems
    assert problems == [
        f"line {order['dq-0']}: no reviewer (the reviewer cell is empty and no default reviewer was given)",
        f"line {order['dq-1']}: unknown sample_id 'rv-20261116-deadbeef' (not in any recorded review sample)",
        f"line {order['st-1']}: label 'broken' is not one of pass, fail, unsure",
        f"line {order['st-2']}: score '1.5' is outside 0..1",
    ]
    assert wh_con.execute("SELECT count(*) FROM trace_labels").fetchone() == (0,)
    assert wh_con.execute("SELECT count(*) FROM incidents").fetchone() == (0,)
    # The same sheet saved by a spreadsheet in a ';' locale, with a default reviewer, loads.
    ok = _labelled(tmp_path / "ok.csv", samples, {"st-0": {"label": "PASS ", "score": "0,75"}}, delimiter=";")
    out = import_review_labels(wh_con, ok, reviewer_default="bo", now=NOW)
    assert (out["written"], out["skipped_blank"], out["by_label"]) == (1, 4, {"pass": 1})
    assert wh_con.execute("SELECT value, label, reviewer, is_failure FROM trace_labels").fetchall() == [(0.75, "pass", "bo", False)]


def test_labels_are_idempotent_latest_wins_and_failures_open_one_incident_per_release(wh_con, tmp_path):
    samples = _small_world(wh_con)
    labels = {
        "st-0": {"label": "fail", "failure_type": "wrong_category", "note": "=1+1 billing, not login", "reviewer": "ana"},
        "st-2": {"label": "fail", "score": "0.2", "reviewer": "ana"},
        "st-1": {"label": "pass", "reviewer": "ana"},
        "dq-0": {"label": "fail", "reviewer": "bo"},
    }
    path = _labelled(tmp_path / "week.csv", samples, labels)
    out = import_review_labels(wh_con, path, now=NOW)
    assert (out["written"], out["unchanged"], out["skipped_blank"], out["failures"]) == (4, 0, 1, 3)
    assert {(i["workflow"], i["release"], i["traces"], i["created"]) for i in out["incidents"]} == {
        ("doc-qa", "v2.3.0", 1, True), ("support-triage", "v1.4.0", 2, True)}
    rows = wh_con.execute("SELECT trace_id, value, label, is_failure, failure_type, note, incident_id IS NOT NULL "
                       "FROM trace_labels WHERE name = 'human_review' ORDER BY trace_id").fetchall()
    assert rows == [("dq-0", 0.0, "fail", True, None, None, True),
                    ("st-0", 0.0, "fail", True, "wrong_category", "=1+1 billing, not login", True),
                    ("st-1", 1.0, "pass", False, None, None, False), ("st-2", 0.2, "fail", True, None, None, True)]
    st_inc = next(i for i in out["incidents"] if i["workflow"] == "support-triage")["incident_id"]
    inc = get_incident(wh_con, st_inc)
    assert inc["source"] == "review" and inc["opened_by"] == "ana" and inc["opened_at"] == NOW
    assert inc["links"]["traces"] == ["st-0", "st-2"] and inc["started_at"] == T0  # st-0 began the problem
    events = wh_con.execute("SELECT count(*) FROM events").fetchone()[0]

    again = import_review_labels(wh_con, path, now=NOW + dt.timedelta(hours=1))
    assert (again["written"], again["unchanged"], again["incidents"]) == (0, 4, [])
    assert wh_con.execute("SELECT count(*) FROM trace_labels").fetchone() == (4,)
    assert wh_con.execute("SELECT count(*) FROM events").fetchone()[0] == events

    labels["st-1"] = {"label": "fail", "reviewer": "ana", "note": "missed the refund"}  # changed its mind
    changed = import_review_labels(wh_con, _labelled(tmp_path / "week2.csv", samples, labels), now=NOW + dt.timedelta(hours=2))
    assert (changed["written"], changed["unchanged"]) == (1, 3)
    [joined] = changed["incidents"]
    assert joined["incident_id"] == st_inc and not joined["created"]
    assert get_incident(wh_con, st_inc)["links"]["traces"] == ["st-0", "st-2", "st-1"]
    latest = wh_con.execute("SELECT label FROM trace_labels WHERE trace_id = 'st-1' ORDER BY imported_at DESC").fetchall()
    assert latest == [("fail",), ("pass",)]
    shown = show_incident(wh_con, st_inc)
    assert sorted(lb["trace_id"] for lb in shown["labels"]) == ["st-0", "st-1", "st-2"]
    # Opening incidents is optional.
    labels["dq-1"] = {"label": "fail", "reviewer": "bo"}
    quiet = import_review_labels(wh_con, _labelled(tmp_path / "w3.csv", samples, labels), open_incidents=False, now=NOW)
    assert quiet["failures"] == 1 and quiet["incidents"] == []


# ---------------------------------------------------------------------------------------------
# Incidents


def test_incident_started_at_trace_links_traces_and_show(wh_con):
    add_trace(wh_con, "t-err", "doc-qa", "v2.4.0", T0, error=True, error_type="VectorStoreTimeout",
              input_text="what is SSO?", output_text=None)
    add_trace(wh_con, "t-ok", "doc-qa", "v2.4.0", T0 + dt.timedelta(minutes=3), input_text="q2", output_text="a2")
    plain = open_incident(wh_con, "doc-qa", None, "by hand", "manual", "ana", now=NOW)
    assert plain["started_at"] == plain["opened_at"] == NOW and plain["links"] == {}
    inc = open_incident(wh_con, "doc-qa", "v2.4.0", "slow answers", "manual", "ana",
                        links={"traces": ["t-err", "t-err", "t-gone"], "alert": "al-1"}, started_at=T0 + dt.timedelta(hours=1))
    assert inc["links"]["traces"] == ["t-err", "t-gone"]
    joined = open_incident(wh_con, "doc-qa", "v2.4.0", "slow answers", "manual", "bo", links={"traces": ["t-ok", "t-err"]},
                           started_at=T0)
    assert not joined["created"] and joined["links"]["traces"] == ["t-err", "t-gone", "t-ok"] and joined["started_at"] == T0
    events = wh_con.execute("SELECT count(*) FROM events").fetchone()[0]
    assert link_incident(wh_con, inc["incident_id"], {"traces": ["t-ok"]})["links"] == joined["links"]
    assert wh_con.execute("SELECT count(*) FROM events").fetchone()[0] == events  # nothing new, no event
    link_incident(wh_con, inc["incident_id"], {"traces": ["t-new"], "ticket": "OPS-12"}, actor="bo")
    kind, payload = wh_con.execute("SELECT kind, payload FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    assert kind == "incident_linked" and json.loads(payload)["traces_added"] == ["t-new"]
    with pytest.raises(IncidentError, match="no incident"):
        link_incident(wh_con, "inc-nope", {"traces": ["x"]})
    with pytest.raises(IncidentError, match="trace id"):
        link_incident(wh_con, inc["incident_id"], {"traces": [""]})

    traces = incident_traces(wh_con, inc["incident_id"])
    assert [t["trace_id"] for t in traces] == ["t-err", "t-ok"]  # t-gone and t-new are not in spans
    err = traces[0]
    assert (err["status"], err["error_type"], err["input_text"], err["output_text"], err["release"]) == (
        "error", "VectorStoreTimeout", "what is SSO?", None, "v2.4.0")
    assert traces[1]["output_text"] == "a2" and traces[1]["finish_reason"] == "stop"
    assert traces[1]["start_time"] == T0 + dt.timedelta(minutes=3)
    assert len(incident_traces(wh_con, inc["incident_id"], limit=1)) == 1

    wh_con.execute("INSERT INTO alert_outbox (alert_id, dedup_key, kind, severity, title, workflow, status, created_at) VALUES "
                "('al-1', 'k1', 'canary.rollback', 'error', 't1', 'doc-qa', 'delivered', ?), "
                "('al-2', 'k2', 'canary.rollback', 'error', 't2', 'doc-qa', 'delivered', ?), "
                "('al-3', 'k3', 'other', 'info', 't3', 'doc-qa', 'delivered', ?)", [NOW, NOW, NOW])
    wh_con.execute("INSERT INTO rollbacks (rollback_id, workflow, from_release, to_release, trigger, reason, automatic, performed, "
                "alert_id, incident_id, actor, recorded_at) VALUES ('rb-1', 'doc-qa', 'v2.4.0', 'v2.3.0', 'canary', 'r', true, "
                "true, 'al-2', ?, 'relops', ?)", [inc["incident_id"], NOW])
    shown = show_incident(wh_con, inc["incident_id"])
    assert [a["alert_id"] for a in shown["alerts"]] == ["al-1", "al-2"]
    assert [r["rollback_id"] for r in shown["rollbacks"]] == ["rb-1"]
    assert (shown["traces_linked"], shown["traces_missing"], len(shown["traces"])) == (4, 2, 2)
    assert shown["links"]["ticket"] == "OPS-12"


def test_canary_rollback_links_example_traces_of_the_canary_window(home):
    from relops_pipeline.lib.registry.respond import respond_to_failure
    from relops_pipeline.lib.registry.rollout import adopt_state
    from relops_pipeline.lib.registry.state import RegistryState, write_pointer
    from relops_pipeline.lib.warehouse import open_warehouse
    from relops_pipeline.lib.workflows import load_workflow

    start = dt.datetime(2026, 11, 20, 10, 0)
    with open_warehouse(home.warehouse_path) as c:
        state = RegistryState("doc-qa", seq=2, live="v2.3.0", canary="v2.4.0", canary_percent=50.0, stage="canary",
                              last_known_good="v2.3.0", updated_by="li.wei", reason="canary", updated_at=start)
        state = adopt_state(c, state, actor="relops-tests", reason="starting point")
        write_pointer(home.registry_dir, state)
        for i in range(30):  # 8 errors, 8 refusals, 14 ok of which the slowest are picked
            add_trace(c, f"cn-{i:02d}", "doc-qa", "v2.4.0", start + dt.timedelta(minutes=i), error=i < 8,
                      refusal=8 <= i < 16, latency=1000.0 + 100 * i)
        add_trace(c, "cn-late", "doc-qa", "v2.4.0", start + dt.timedelta(hours=5), error=True)  # after the window
        add_trace(c, "live-0", "doc-qa", "v2.3.0", start, error=True)  # another release
        c.execute("INSERT INTO canary_analyses (analysis_id, release_key, workflow, canary, baseline, window_start, "
                  "window_end, verdict, consecutive_failures, result, computed_at) VALUES ('ca-1', 'doc-qa--v2.4.0', "
                  "'doc-qa', 'v2.4.0', 'v2.3.0', ?, ?, 'fail', 2, '{}', ?)",
                  [start, start + dt.timedelta(hours=1), NOW])
        assert [e["why"] for e in example_traces(c, "doc-qa", "v2.4.0", start, start + dt.timedelta(hours=1), limit=5)] == [
            "error", "refusal", "slow", "error", "refusal"]
        out = respond_to_failure(c, home, load_workflow(home.workflows_dir, "doc-qa"), release="v2.4.0", trigger="canary",
                                 reason="canary failed: latency")
        assert out.decision == "rollback"
        inc = get_incident(c, out.incident_id)
    traces = inc["links"]["traces"]
    assert len(traces) == 20 and inc["started_at"] == start
    assert traces[:3] == ["cn-00", "cn-08", "cn-29"]  # first error, first refusal, slowest ok trace
    # 20 taken in turn: 7 errors, 7 refusals, the 6 slowest of the rest.
    assert set(traces) == {f"cn-{i:02d}" for i in [*range(7), *range(8, 15), *range(24, 30)]}
    assert "cn-late" not in traces and "live-0" not in traces
