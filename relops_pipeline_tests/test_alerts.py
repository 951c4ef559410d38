"""The alert outbox and its sinks: at-least-once delivery through local HTTP receivers.

Receivers are http.server instances on 127.0.0.1 started here in threads; time is an injected
clock (`now=`), never a sleep.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from relops_pipeline.lib.alerts import (
    Alert,
    AlertError,
    build_sinks,
    cooldown_from_config,
    deliver_due,
    enqueue,
    format_alert_text,
    get_alert,
    list_alerts,
    retry_dead,
)
from relops_pipeline.lib.alerts.outbox import LEASE, in_transaction
from relops_pipeline.lib.alerts.sinks import FileSink, RetryPolicy, Sink, slack_message, verify_signature
from relops_pipeline.lib.warehouse import open_warehouse
from relops_pipeline.lib.workflows import DEFAULTS

T0 = datetime(2026, 11, 9, 6, 0, 0)
SECRET = "s3cret-for-tests"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # httpx honours proxy variables; loopback receivers must be reached directly.
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def con(tmp_path):
    with open_warehouse(tmp_path / "w.duckdb") as c:
        yield c


class Receiver:
    """A local HTTP endpoint: answers `fail_status` to the first `fail_first` POSTs (all of them
    when fail_first is None), then `ok_status`; records every request and checks the HMAC."""

    def __init__(self, *, fail_first: int | None = 0, fail_status: int = 500, ok_status: int = 200, secret: str | None = None):
        self.fail_first, self.fail_status, self.ok_status, self.secret = fail_first, fail_status, ok_status, secret
        self.requests: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                n = len(receiver.requests)
                signed = None
                if receiver.secret is not None:
                    # Computed here with the stdlib, independently of relops' own signing code.
                    expected = "sha256=" + hmac.new(receiver.secret.encode(), body, hashlib.sha256).hexdigest()
                    signed = hmac.compare_digest(expected, self.headers.get("X-Relops-Signature", ""))
                receiver.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body, "json": json.loads(body), "signed": signed}
                )
                failing = receiver.fail_first is None or n < receiver.fail_first
                status = receiver.fail_status if failing else receiver.ok_status
                reply = b"boom" if failing else b"ok"
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    started: list[Receiver] = []

    def start(**kw) -> Receiver:
        r = Receiver(**kw)
        started.append(r)
        return r

    yield start
    for r in started:
        r.close()


def _closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/hook"


def _alert(**kw) -> Alert:
    base = dict(
        kind="drift.weekly",
        severity="error",
        title="Input drift in support-triage",
        workflow="support-triage",
        release="*",
        summary="topic and input_chars drifted against the reference",
        evidence={"drifted_share": 0.625, "columns_drifted": 5, "topic_score": 0.3125, "cur_rows": 12345},
        links={"report": "reports/drift/support-triage/2026-11-02.html", "dagster run": "http://127.0.0.1:3000/runs/r-1"},
        runbook="docs/runbooks/drift.md",
        dagster_run_id="r-1",
    )
    base.update(kw)
    return Alert(**base)


RETRY = {"max_attempts": 3, "backoff_s": 30, "factor": 2}


# ---------------------------------------------------------------------------------------------
# Model and wording


def test_alert_normalises_severity_and_validates():
    a = _alert(severity="WARN")
    assert a.severity == "warning"
    assert a.dedup_key == "drift.weekly:support-triage:*"
    assert _alert(severity="ERROR").severity == "error"
    assert _alert(evidence={"score": float("nan")}).evidence == {"score": "nan"}
    with pytest.raises(AlertError, match="severity 'loud'"):
        _alert(severity="loud")
    with pytest.raises(AlertError, match="title"):
        _alert(title="  ")
    with pytest.raises(AlertError, match=r"evidence\['x'\]"):
        _alert(evidence={"x": object()})
    with pytest.raises(AlertError, match="kind"):
        _alert(kind="Drift Weekly")


def test_format_alert_text_says_what_where_evidence_links_runbook():
    text = format_alert_text(_alert(release="1.4.0").with_identity("alert-x", T0))
    assert text.splitlines() == [
        "[ERROR] Input drift in support-triage",
        "what: drift.weekly: topic and input_chars drifted against the reference",
        "where: workflow support-triage, release 1.4.0",
        "evidence: drifted_share=0.625, columns_drifted=5, topic_score=0.3125, cur_rows=12,345",
        "links:",
        "  report: reports/drift/support-triage/2026-11-02.html",
        "  dagster run: http://127.0.0.1:3000/runs/r-1",
        "runbook: docs/runbooks/drift.md",
        "dedup key drift.weekly:support-triage:1.4.0 · alert alert-x · dagster run r-1 · raised 2026-11-09T06:00:00Z",
    ]
    bare = format_alert_text(Alert(kind="ingest", severity="info", title="t"))
    assert "where: relops (no workflow)" in bare and "evidence: none recorded" in bare and "runbook: none configured" in bare


# ---------------------------------------------------------------------------------------------
# Outbox: commit first, transactions


def test_enqueue_commits_before_anything_is_sent(con, tmp_path, receiver, monkeypatch):
    hook = receiver(secret=SECRET)
    monkeypatch.setenv("RELOPS_WEBHOOK_SECRET", SECRET)
    sinks = build_sinks({"sinks": [{"type": "file"}, {"type": "webhook", "url": hook.url}]}, tmp_path / "alerts")
    rec = enqueue(con, _alert(), sinks, now=T0)
    assert rec.status == "pending" and rec.alert.created_at == T0
    assert [(d.sink, d.status, d.attempts, d.next_attempt_at) for d in rec.deliveries] == [
        ("file", "pending", 0, T0), ("webhook", "pending", 0, T0)]
    # A separate cursor has its own transaction context: it sees only committed rows.
    other = con.cursor()
    assert other.execute("SELECT status FROM alert_outbox").fetchall() == [("pending",)]
    assert other.execute("SELECT count(*) FROM alert_deliveries").fetchone() == (2,)
    assert hook.requests == [] and not (tmp_path / "alerts" / "alerts.jsonl").exists()


def test_enqueue_joins_an_open_transaction_and_deliver_due_refuses_one(con, tmp_path):
    sinks = build_sinks({"sinks": [{"type": "file"}]}, tmp_path / "alerts")
    assert not in_transaction(con)
    con.execute("BEGIN TRANSACTION")
    assert in_transaction(con)
    enqueue(con, _alert(), sinks, now=T0)
    with pytest.raises(AlertError, match="inside an open transaction"):
        deliver_due(con, sinks, now=T0)
    con.execute("ROLLBACK")  # the alert goes with the caller's rolled-back work
    assert con.execute("SELECT count(*) FROM alert_outbox").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM alert_deliveries").fetchone() == (0,)


# ---------------------------------------------------------------------------------------------
# Delivery: retries, backoff, dead letters


def test_sink_down_then_recovering_is_delivered_after_backoff(con, tmp_path, receiver, monkeypatch):
    hook = receiver(fail_first=2, secret=SECRET)
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    sinks = build_sinks(
        {"retry": {"max_attempts": 4, "backoff_s": 30, "factor": 2},
         "sinks": [{"type": "webhook", "url": hook.url, "secret_env": "HOOK_SECRET"}]},
        tmp_path / "alerts",
    )
    alert_id = enqueue(con, _alert(), sinks, now=T0).alert_id

    r1 = deliver_due(con, sinks, now=T0)
    assert [(a.outcome, a.attempt, a.next_attempt_at) for a in r1.attempts] == [("retry", 1, T0 + timedelta(seconds=30))]
    assert "HTTP 500: boom" in r1.attempts[0].error
    assert deliver_due(con, sinks, now=T0 + timedelta(seconds=29)).attempts == []  # not due yet
    r2 = deliver_due(con, sinks, now=T0 + timedelta(seconds=30))
    assert [(a.outcome, a.attempt, a.next_attempt_at) for a in r2.attempts] == [("retry", 2, T0 + timedelta(seconds=90))]
    assert get_alert(con, alert_id).status == "pending"
    r3 = deliver_due(con, sinks, now=T0 + timedelta(seconds=90))
    assert [(a.outcome, a.attempt) for a in r3.attempts] == [("delivered", 3)]

    rec = get_alert(con, alert_id)
    assert rec.status == "delivered"
    (d,) = rec.deliveries
    assert (d.status, d.attempts, d.delivered_at, d.next_attempt_at) == ("delivered", 3, T0 + timedelta(seconds=90), None)
    assert "attempt 2/4" in d.last_error  # the last failure stays visible
    # The receiver saw three identical, correctly signed bodies carrying the dedup identifiers.
    assert len(hook.requests) == 3 and all(r["signed"] for r in hook.requests)
    assert len({r["body"] for r in hook.requests}) == 1
    req = hook.requests[0]
    assert req["headers"]["X-Relops-Signature"].startswith("sha256=")
    assert req["headers"]["X-Relops-Alert-Id"] == alert_id
    assert req["headers"]["X-Relops-Dedup-Key"] == "drift.weekly:support-triage:*"
    assert req["json"]["alert_id"] == alert_id and req["json"]["evidence"]["drifted_share"] == 0.625
    assert req["json"]["text"] == format_alert_text(rec.alert)
    assert deliver_due(con, sinks, now=T0 + timedelta(days=1)).attempts == []


def test_wrong_secret_is_rejected_by_the_receiver(monkeypatch, receiver):
    hook = receiver(secret=SECRET)
    monkeypatch.setenv("RELOPS_WEBHOOK_SECRET", "not-the-secret")
    (sink,) = build_sinks({"sinks": [{"type": "webhook", "url": hook.url}]}, None)
    sink.send(_alert().with_identity("alert-1", T0))
    req = hook.requests[0]
    assert req["signed"] is False
    header = req["headers"]["X-Relops-Signature"]
    assert verify_signature("not-the-secret", req["body"], header)
    assert not verify_signature(SECRET, req["body"], header)
    assert not verify_signature("not-the-secret", req["body"] + b" ", header)


def test_sink_that_never_recovers_is_dead_and_listed(con, tmp_path, receiver, monkeypatch):
    hook = receiver(fail_first=None, fail_status=503)
    monkeypatch.setenv("RELOPS_WEBHOOK_SECRET", SECRET)
    sinks = build_sinks({"sinks": [{"type": "file"}, {"type": "webhook", "url": hook.url, **RETRY}]}, tmp_path / "alerts")
    alert_id = enqueue(con, _alert(), sinks, now=T0).alert_id

    first = deliver_due(con, sinks, now=T0)
    assert sorted((a.sink, a.outcome) for a in first.attempts) == [("file", "delivered"), ("webhook", "retry")]
    assert get_alert(con, alert_id).status == "pending"
    deliver_due(con, sinks, now=T0 + timedelta(seconds=30))
    last = deliver_due(con, sinks, now=T0 + timedelta(seconds=90))
    assert [(a.sink, a.attempt, a.outcome, a.next_attempt_at) for a in last.attempts] == [("webhook", 3, "dead", None)]

    (dead,) = list_alerts(con, status="dead")
    assert dead.alert_id == alert_id
    by_sink = {d.sink: d for d in dead.deliveries}
    assert by_sink["file"].status == "delivered"
    assert by_sink["webhook"].status == "dead" and by_sink["webhook"].attempts == 3
    assert by_sink["webhook"].last_error.startswith("attempt 3/3: webhook ") and "HTTP 503" in by_sink["webhook"].last_error
    assert list_alerts(con, status="pending") == [] and list_alerts(con, status="delivered") == []
    assert deliver_due(con, sinks, now=T0 + timedelta(days=7)).attempts == []  # dead letters are not retried
    assert len(hook.requests) == 3
    assert dead.to_dict()["deliveries"][1]["status"] == "dead"  # JSON-ready for `relops alerts --json`

    # Once the receiver recovers, an operator can requeue the dead letter.
    hook.fail_first = 0
    assert retry_dead(con, alert_id, now=T0 + timedelta(days=7)) == 1
    assert get_alert(con, alert_id).status == "pending"
    deliver_due(con, sinks, now=T0 + timedelta(days=7))
    assert get_alert(con, alert_id).status == "delivered"


def test_a_down_sink_does_not_block_the_others(con, tmp_path, receiver, monkeypatch):
    slack = receiver()
    monkeypatch.setenv("SLACK_URL", slack.url)
    monkeypatch.setenv("RELOPS_WEBHOOK_SECRET", SECRET)
    sinks = build_sinks(
        {"sinks": [
            {"type": "webhook", "url": _closed_port_url(), **RETRY},
            {"type": "slack", "url_env": "SLACK_URL"},
            {"type": "file"},
        ]},
        tmp_path / "alerts",
    )
    ids = [enqueue(con, _alert(dedup_key=f"k{i}"), sinks, now=T0).alert_id for i in range(2)]
    report = deliver_due(con, sinks, now=T0)
    outcomes = sorted((a.alert_id == ids[1], a.sink, a.outcome) for a in report.attempts)
    assert outcomes == [
        (False, "file", "delivered"), (False, "slack", "delivered"), (False, "webhook", "retry"),
        (True, "file", "delivered"), (True, "slack", "delivered"), (True, "webhook", "retry"),
    ]
    assert "cannot reach webhook" in report.retrying[0].error
    assert len(slack.requests) == 2
    lines = (tmp_path / "alerts" / "alerts.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["alert_id"] for x in lines) == sorted(ids)
    assert {r.status for r in list_alerts(con)} == {"pending"}  # the webhook is still owed


def test_missing_env_var_is_a_delivery_error_not_a_crash(con, tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE_SLACK_URL", raising=False)
    sinks = build_sinks({"sinks": [{"type": "slack", "url_env": "NOPE_SLACK_URL", "max_attempts": 2}]}, tmp_path)
    alert_id = enqueue(con, _alert(), sinks, now=T0).alert_id
    r = deliver_due(con, sinks, now=T0)
    assert r.attempts[0].outcome == "retry"
    assert "environment variable NOPE_SLACK_URL" in r.attempts[0].error
    r = deliver_due(con, sinks, now=T0 + timedelta(seconds=30))
    assert r.attempts[0].outcome == "dead"
    assert get_alert(con, alert_id).status == "dead"


def test_permanent_http_error_is_dead_at_once(con, tmp_path, receiver, monkeypatch):
    pd = receiver(fail_first=None, fail_status=400)
    monkeypatch.setenv("PD_KEY", "R0UTING")
    sinks = build_sinks({"sinks": [{"type": "pagerduty", "routing_key_env": "PD_KEY", "url": pd.url}]}, tmp_path)
    enqueue(con, _alert(), sinks, now=T0)
    (a,) = deliver_due(con, sinks, now=T0).attempts
    assert (a.outcome, a.attempt) == ("dead", 1)
    assert "HTTP 400" in a.error and "permanent error, not retried" in a.error


def test_a_sink_raising_an_unexpected_exception_is_a_failed_attempt(con):
    class Broken(Sink):
        type = "broken"

        def send(self, alert):
            raise ValueError("bug in a sink")

    sinks = [Broken(name="broken", retry=RetryPolicy(max_attempts=2, backoff_s=10))]
    enqueue(con, _alert(), sinks, now=T0)
    (a,) = deliver_due(con, sinks, now=T0).attempts
    assert a.outcome == "retry" and a.error == "attempt 1/2: ValueError: bug in a sink"


def test_crash_between_send_and_status_update_resends(con, tmp_path):
    """At least once: the process dies after the receiver got the alert but before the outcome
    was recorded; after the lease the alert is sent again, never lost."""

    class ProcessDied(BaseException):
        pass

    class CrashOnceAfterSend(FileSink):
        crashed = False

        def send(self, alert):
            super().send(alert)
            if not CrashOnceAfterSend.crashed:
                CrashOnceAfterSend.crashed = True
                raise ProcessDied()

    path = tmp_path / "alerts.jsonl"
    sinks = [CrashOnceAfterSend(name="file", path=path)]
    alert_id = enqueue(con, _alert(), sinks, now=T0).alert_id
    with pytest.raises(ProcessDied):
        deliver_due(con, sinks, now=T0)
    assert not in_transaction(con)  # the send ran outside any transaction
    (d,) = get_alert(con, alert_id).deliveries
    assert (d.status, d.attempts, d.next_attempt_at) == ("sending", 1, T0 + LEASE)

    assert deliver_due(con, sinks, now=T0 + LEASE - timedelta(seconds=1)).attempts == []  # still leased
    r = deliver_due(con, sinks, now=T0 + LEASE)
    assert r.interrupted == [(alert_id, "file")]
    assert [(a.outcome, a.attempt) for a in r.attempts] == [("delivered", 2)]
    assert get_alert(con, alert_id).status == "delivered"
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and lines[0] == lines[1]  # a duplicate receivers can drop by alert_id


def test_repeatedly_interrupted_delivery_ends_dead_with_unknown_outcome(con, tmp_path):
    sinks = [FileSink(name="file", path=tmp_path / "a.jsonl", retry=RetryPolicy(max_attempts=2))]
    alert_id = enqueue(con, _alert(), sinks, now=T0).alert_id
    # As left by processes that died mid-send five times (max_attempts 2 + allowance 3).
    con.execute("UPDATE alert_deliveries SET status = 'sending', attempts = 5, next_attempt_at = ?", [T0])
    (a,) = deliver_due(con, sinks, now=T0).attempts
    assert a.outcome == "dead" and "may or may not have reached file" in a.error
    assert get_alert(con, alert_id).status == "dead" and not (tmp_path / "a.jsonl").exists()


# ---------------------------------------------------------------------------------------------
# Dedup, cool-down, routing


def test_dedup_within_cooldown_is_suppressed_and_recorded(con, tmp_path):
    sinks = build_sinks({"sinks": [{"type": "file"}]}, tmp_path / "alerts")
    cooldown = cooldown_from_config({"cooldown_minutes": 360})
    first = enqueue(con, _alert(), sinks, now=T0, cooldown=cooldown)
    again = enqueue(con, _alert(), sinks, now=T0 + timedelta(hours=1), cooldown=cooldown)
    assert (again.status, again.suppressed_by, again.deliveries) == ("suppressed", first.alert_id, [])
    other_key = enqueue(con, _alert(dedup_key="drift.weekly:doc-qa:*"), sinks, now=T0 + timedelta(hours=1), cooldown=cooldown)
    assert other_key.status == "pending"
    escalated = enqueue(con, _alert(severity="critical"), sinks, now=T0 + timedelta(hours=2), cooldown=cooldown)
    assert escalated.status == "pending"  # an escalation is never swallowed
    # The window is anchored at the newest unsuppressed original (the escalation at T0+2h).
    assert enqueue(con, _alert(), sinks, now=T0 + timedelta(hours=7), cooldown=cooldown).suppressed_by == escalated.alert_id
    after = enqueue(con, _alert(), sinks, now=T0 + timedelta(hours=8, seconds=1), cooldown=cooldown)
    assert after.status == "pending"
    assert enqueue(con, _alert(), sinks, now=T0 + timedelta(hours=8, seconds=2), cooldown=0).status == "pending"

    suppressed = list_alerts(con, status="suppressed")
    assert len(suppressed) == 2
    assert con.execute(
        "SELECT count(*) FROM alert_deliveries WHERE alert_id IN (SELECT alert_id FROM alert_outbox WHERE status = 'suppressed')"
    ).fetchone() == (0,)
    assert len(list_alerts(con)) == 7  # nothing dropped


def test_a_dead_original_does_not_suppress_its_repeat(con, tmp_path):
    sinks = build_sinks({"sinks": [{"type": "slack", "url_env": "UNSET_FOR_TEST_X", "max_attempts": 1}]}, tmp_path)
    first = enqueue(con, _alert(), sinks, now=T0)
    deliver_due(con, sinks, now=T0)
    assert get_alert(con, first.alert_id).status == "dead"
    assert enqueue(con, _alert(), sinks, now=T0 + timedelta(minutes=5)).status == "pending"


def test_severity_routing(con, tmp_path, monkeypatch):
    sinks = build_sinks(
        {"sinks": [{"type": "file"}, {"type": "slack"}, {"type": "pagerduty"}, {"type": "log", "min_severity": "critical"}]},
        tmp_path / "alerts",
    )
    assert [s.min_severity for s in sinks] == ["info", "warning", "error", "critical"]  # type defaults

    def routed(sev, key):
        return [d.sink for d in enqueue(con, _alert(severity=sev, dedup_key=key), sinks, now=T0).deliveries]

    assert routed("info", "a") == ["file"]
    assert routed("warning", "b") == ["file", "slack"]
    assert routed("error", "c") == ["file", "pagerduty", "slack"]
    assert routed("critical", "d") == ["file", "log", "pagerduty", "slack"]
    only_pd = build_sinks({"sinks": [{"type": "pagerduty"}]}, None)
    rec = enqueue(con, _alert(severity="warning", dedup_key="e"), only_pd, now=T0)
    assert (rec.status, rec.deliveries) == ("unrouted", [])  # stored, not lost, not delivered


# ---------------------------------------------------------------------------------------------
# Sink payloads


def test_pagerduty_event_payload(con, tmp_path, receiver, monkeypatch):
    pd = receiver(ok_status=202)
    monkeypatch.setenv("PD_ROUTING", "R0UTINGKEY")
    sinks = build_sinks(
        {"sinks": [{"type": "pagerduty", "routing_key_env": "PD_ROUTING", "url": pd.url}]}, tmp_path)
    alert_id = enqueue(con, _alert(severity="critical"), sinks, now=T0).alert_id
    assert deliver_due(con, sinks, now=T0).delivered
    (req,) = pd.requests
    ev = req["json"]
    assert req["path"] == "/hook" and req["headers"]["Content-Type"] == "application/json"
    assert ev["routing_key"] == "R0UTINGKEY"
    assert ev["event_action"] == "trigger"
    assert ev["dedup_key"] == "drift.weekly:support-triage:*"
    p = ev["payload"]
    assert p["severity"] == "critical"
    assert p["summary"] == ("[CRITICAL] Input drift in support-triage — topic and input_chars drifted against the reference")
    assert (p["source"], p["component"], p["group"], p["class"]) == ("support-triage", "support-triage", "*", "drift.weekly")
    assert p["timestamp"] == "2026-11-09T06:00:00Z"
    assert p["custom_details"]["evidence"]["topic_score"] == 0.3125
    assert p["custom_details"]["alert_id"] == alert_id
    assert p["custom_details"]["runbook"] == "docs/runbooks/drift.md"
    # Only http(s) links are PagerDuty links; the report path stays in custom_details.
    assert ev["links"] == [{"href": "http://127.0.0.1:3000/runs/r-1", "text": "dagster run"}]
    assert p["custom_details"]["links"]["report"] == "reports/drift/support-triage/2026-11-02.html"


def test_pagerduty_default_url_and_severity_mapping():
    (pd,) = build_sinks({"sinks": [{"type": "pagerduty"}]}, None)
    assert pd.url == "https://events.pagerduty.com/v2/enqueue"
    assert pd.routing_key_env == "RELOPS_PAGERDUTY_ROUTING_KEY"
    from relops_pipeline.lib.alerts.sinks import pagerduty_event

    for sev in ("info", "warning", "error", "critical"):
        assert pagerduty_event(_alert(severity=sev), "k")["payload"]["severity"] == sev
    assert pagerduty_event(_alert(severity="WARN"), "k")["payload"]["severity"] == "warning"


def test_slack_message_has_text_and_escaped_blocks(con, tmp_path, receiver, monkeypatch):
    slack = receiver()
    monkeypatch.setenv("RELOPS_SLACK_WEBHOOK_URL", slack.url)
    sinks = build_sinks({"sinks": [{"type": "slack"}]}, tmp_path)
    alert = _alert(summary="a <script> & co", runbook="https://runbooks.example/drift")
    enqueue(con, alert, sinks, now=T0)
    assert deliver_due(con, sinks, now=T0).delivered
    msg = slack.requests[0]["json"]
    stored = list_alerts(con)[0].alert
    assert msg == slack_message(stored)
    assert msg["text"] == format_alert_text(stored)
    types = [b["type"] for b in msg["blocks"]]
    assert types[0] == "header" and types[-1] == "context"
    assert msg["blocks"][0]["text"]["text"] == "[ERROR] Input drift in support-triage"
    blob = json.dumps(msg["blocks"])
    assert "&lt;script&gt; &amp; co" in blob and "<script>" not in blob
    assert "<http://127.0.0.1:3000/runs/r-1|dagster run>" in blob
    assert "<https://runbooks.example/drift|runbook>" in blob
    assert "drifted_share: 0.625" in blob


def test_file_and_log_sinks_use_the_shared_wording(con, tmp_path, caplog):
    sinks = build_sinks(DEFAULTS["alerts"], tmp_path / "alerts")
    assert [(s.type, s.name) for s in sinks] == [("file", "file"), ("log", "log")]
    assert sinks[0].path == tmp_path / "alerts" / "alerts.jsonl"
    with caplog.at_level(logging.INFO, logger="relops.alerts"):
        enqueue(con, _alert(severity="warning"), sinks, now=T0)
        deliver_due(con, sinks, now=T0)
    stored = list_alerts(con)[0].alert
    (record,) = [r for r in caplog.records if r.name == "relops.alerts"]
    assert record.levelno == logging.WARNING and record.getMessage() == format_alert_text(stored)
    assert record.relops_alert["alert_id"] == stored.alert_id
    (line,) = (tmp_path / "alerts" / "alerts.jsonl").read_text().splitlines()
    doc = json.loads(line)
    assert doc["text"] == format_alert_text(stored)
    assert doc["severity"] == "warning" and doc["evidence"]["cur_rows"] == 12345 and doc["created_at"] == "2026-11-09T06:00:00Z"


# ---------------------------------------------------------------------------------------------
# Listing and scoping


def test_list_alerts_filters_and_scoped_delivery(con, tmp_path):
    a_sinks = build_sinks({"sinks": [{"type": "file", "path": "a.jsonl"}]}, tmp_path)
    b_sinks = build_sinks({"sinks": [{"type": "file", "path": "b.jsonl"}]}, tmp_path)
    a = enqueue(con, _alert(workflow="wf-a"), a_sinks, now=T0)
    b = enqueue(con, _alert(workflow="wf-b"), b_sinks, now=T0 + timedelta(seconds=1))
    assert [r.alert_id for r in list_alerts(con)] == [b.alert_id, a.alert_id]  # newest first
    assert [r.alert_id for r in list_alerts(con, workflow="wf-a")] == [a.alert_id]
    assert len(list_alerts(con, status=["pending", "dead"])) == 2
    with pytest.raises(AlertError, match="status 'lost'"):
        list_alerts(con, status="lost")

    # Mapping form: each workflow's alerts go to its own sinks; unlisted workflows are untouched.
    r = deliver_due(con, {"wf-a": a_sinks}, now=T0 + timedelta(seconds=1))
    assert [x.alert_id for x in r.delivered] == [a.alert_id]
    assert get_alert(con, b.alert_id).status == "pending"
    # A due delivery whose sink is not configured is reported and left pending (not dropped).
    r = deliver_due(con, build_sinks({"sinks": [{"type": "log"}]}, None), now=T0 + timedelta(seconds=1))
    assert r.attempts == [] and r.unconfigured == [(b.alert_id, "file")]
    r = deliver_due(con, b_sinks, now=T0 + timedelta(seconds=1), workflow="wf-b")
    assert [x.alert_id for x in r.delivered] == [b.alert_id]
    assert (tmp_path / "a.jsonl").exists() and (tmp_path / "b.jsonl").exists()


# ---------------------------------------------------------------------------------------------
# Configuration


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"sinks": [{"type": "sms"}]}, r"alerts.sinks\[0\].type: unknown sink type 'sms'"),
        ({"sinks": [{"type": "file", "pth": "x"}]}, r"alerts.sinks\[0\] \(file\): unknown key\(s\) pth"),
        ({"sinks": [{"type": "slack", "min_severity": "loud"}]}, r"alerts.sinks\[0\] \(slack\).min_severity"),
        ({"sinks": [{"type": "log"}, {"type": "log"}]}, r"alerts.sinks\[1\] \(log\).name: another sink"),
        ({"sinks": [{"type": "webhook"}]}, r"exactly one of url .* or url_env"),
        ({"sinks": [{"type": "webhook", "url": "ftp://x"}]}, r"alerts.sinks\[0\] \(webhook\).url: expected an http"),
        ({"sinks": [{"type": "slack", "url": "https://hooks.slack.com/x"}]}, r"URL is a secret"),
        ({"sinks": [{"type": "pagerduty", "routing_key_env": "not a name"}]}, r"routing_key_env: expected the NAME"),
        ({"sinks": [{"type": "log", "max_attempts": 0}]}, r"alerts.sinks\[0\] \(log\).max_attempts"),
        ({"sinks": [{"type": "log", "factor": 0.5}]}, r"\(log\).factor: expected a number >= 1"),
        ({"retry": {"backof_s": 1}}, r"alerts.retry: unknown key\(s\) backof_s"),
        ({"cooldown_minutes": -1}, r"alerts.cooldown_minutes"),
        ({"sink": []}, r"alerts: unknown key\(s\) sink"),
        ({"sinks": {"type": "file"}}, r"alerts.sinks: expected a list"),
        ({"sinks": [{"type": "file"}]}, r"relative and no home alerts folder"),
    ],
)
def test_build_sinks_rejects_bad_config_naming_the_key(cfg, message):
    with pytest.raises(AlertError, match=message):
        build_sinks(cfg, None)


def test_build_sinks_retry_defaults_and_overrides(tmp_path):
    file_sink, hook = build_sinks(
        {"retry": {"max_attempts": 5, "backoff_s": 10},
         "sinks": [{"type": "file", "path": str(tmp_path / "abs.jsonl")},
                   {"type": "webhook", "name": "ops-hook", "url_env": "OPS_HOOK_URL", "factor": 3, "timeout_s": 2}]},
        tmp_path / "alerts",
    )
    assert file_sink.path == tmp_path / "abs.jsonl"
    assert file_sink.retry == RetryPolicy(max_attempts=5, backoff_s=10.0, factor=2.0, max_backoff_s=3600.0)
    assert (hook.name, hook.url, hook.url_env, hook.timeout_s) == ("ops-hook", None, "OPS_HOOK_URL", 2.0)
    assert [hook.retry.delay_after(n).total_seconds() for n in (1, 2, 3)] == [10.0, 30.0, 90.0]
    assert RetryPolicy(backoff_s=1000, factor=10).delay_after(3) == timedelta(hours=1)  # capped
    assert cooldown_from_config({}) == timedelta(hours=6)
