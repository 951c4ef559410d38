"""The release registry: pointer files, rollout stages, rollbacks, policy, webhook deployer,
incidents, drills and the runbook."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import duckdb
import pytest

from relops_pipeline import registry as app
from relops_pipeline.lib import audit, warehouse
from relops_pipeline.lib.drills import drill_status, list_drills, run_drill
from relops_pipeline.lib.gates.service import approve
from relops_pipeline.lib.incidents import IncidentError, close_incident, list_incidents, open_incident
from relops_pipeline.lib.registry import (
    SIGNATURE_HEADER,
    DeployError,
    RegistryError,
    RegistryState,
    RolloutRefused,
    StalePointerError,
    WebhookDeployer,
    decide,
    get_state,
    history,
    link_rollback,
    list_rollbacks,
    parse_policy,
    record_recommendation,
    rollback,
    rollout_plan,
    sync_pointer,
    sync_pointer_at_home,
    transition,
    write_pointer,
)
from relops_pipeline.lib.registry import rollout as rollout_mod
from relops_pipeline.lib.runbook import render_runbook
from relops_pipeline.lib.warehouse import open_warehouse
from relops_pipeline_tests.procs import run, scaled

WF = "support-triage"


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@pytest.fixture
def con():
    c = duckdb.connect()
    warehouse.migrate(c)
    yield c
    c.close()


@pytest.fixture
def reg(tmp_path):
    return tmp_path / "registry"


def gate(con, version, decision="SHIP", workflow=WF):
    """A gate decision as the gate records it (the row release_state reads)."""
    key = f"{workflow}--{version}"
    gate_id = f"gate-{version}-{audit.head(con)[0] + 1}"
    seq = audit.append_event(con, kind=audit.KIND_GATE_DECISION, actor="relops-gate", reason=decision,
                             workflow=workflow, release_key=key, payload={"decision": decision, "gate_id": gate_id})["seq"]
    con.execute(
        "INSERT INTO gate_decisions (gate_id, release_key, workflow, version, decision, result, event_seq, decided_at) "
        "VALUES (?, ?, ?, ?, ?, '{}', ?, ?)",
        [gate_id, key, workflow, version, decision, seq, utcnow()],
    )


def go(con, reg, action, release, **kw):
    kw.setdefault("actor", "ana.lopez")
    kw.setdefault("reason", f"{action} {release}")
    return transition(con, reg, WF, action=action, release=release, **kw)


def live_v2_lkg_v1(con, reg):
    """v1 first (straight to full), then v2 through canary to full."""
    for v in ("v1", "v2", "v3"):
        gate(con, v)
    go(con, reg, "full", "v1")
    go(con, reg, "canary", "v2")
    go(con, reg, "full", "v2")


def count(con, sql, params=()):
    return con.execute(sql, list(params)).fetchone()[0]


# ---------------------------------------------------------------------------------------------
# The application-side reader


def test_importing_the_reader_loads_nothing_heavy():
    code = (
        "import sys, relops_pipeline.registry\n"
        "heavy = ('duckdb', 'dagster', 'pandas', 'numpy', 'pyarrow', 'httpx', 'yaml')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=scaled(60))
    assert out.stdout.strip() == "[]"


def test_read_pointer_from_home_or_registry_dir_and_rejects_bad_files(tmp_path):
    reg = tmp_path / "registry"
    write_pointer(reg, RegistryState(workflow=WF, seq=3, live="v2", canary="v3", canary_percent=10.0,
                                     stage="canary", last_known_good="v1", updated_at=utcnow()))
    for where in (tmp_path, reg):
        p = app.read_pointer(where, WF)
        assert (p.seq, p.live, p.canary, p.canary_percent, p.last_known_good, p.stage) == (3, "v2", "v3", 10.0, "v1", "canary")
        assert p.updated_at.tzinfo is not None
    with pytest.raises(app.PointerError, match="no pointer"):
        app.read_pointer(tmp_path, "doc-qa")
    with pytest.raises(app.PointerError, match="invalid workflow"):
        app.read_pointer(tmp_path, "../etc/passwd")
    (reg / "doc-qa.json").write_text('{"format": "relops.pointer/1", "workflow": "doc-qa", "se')
    with pytest.raises(app.PointerError, match="not JSON"):
        app.read_pointer(reg, "doc-qa")
    (reg / "doc-qa.json").write_text(json.dumps({"format": "relops.pointer/1", "workflow": WF, "seq": 1}))
    with pytest.raises(app.PointerError, match="expected 'doc-qa'"):
        app.read_pointer(reg, "doc-qa")


def test_choose_release_is_stable_proportional_and_nested_when_ramping():
    base = dict(workflow=WF, live="v2", canary="v3", shadow=None, last_known_good="v1", seq=4, updated_at=None)
    p10 = app.Pointer(canary_percent=10.0, **base)
    p50 = app.Pointer(canary_percent=50.0, **base)
    keys = [f"user-{i}" for i in range(20000)]
    at10 = {k for k in keys if app.choose_release(p10, k) == "v3"}
    at50 = {k for k in keys if app.choose_release(p50, k) == "v3"}
    assert 0.09 < len(at10) / len(keys) < 0.11
    assert 0.48 < len(at50) / len(keys) < 0.52
    assert at10 <= at50  # ramping keeps the canary's first users on it
    assert all(app.choose_release(p10, k) == app.choose_release(p10, k) for k in keys[:100])
    assert {app.choose_release(p10, k) for k in keys} == {"v2", "v3"}
    no_canary = app.Pointer(**{**base, "canary": None}, canary_percent=None)
    assert {app.choose_release(no_canary, k) for k in keys[:500]} == {"v2"}


def test_cached_pointer_rereads_only_after_a_replace(reg):
    st = RegistryState(workflow=WF, seq=1, live="v1", stage="full", updated_at=utcnow())
    write_pointer(reg, st)
    cached = app.CachedPointer(reg, WF)
    first = cached.get()
    assert cached.get() is first
    write_pointer(reg, st.next(live="v2", last_known_good="v1"))
    assert (cached.get().seq, cached.get().live) == (2, "v2")


# ---------------------------------------------------------------------------------------------
# Atomic, monotonic pointer writes


def test_a_reader_never_sees_a_partial_pointer_while_it_is_rewritten(reg):
    # A long reason makes each file several kB, so a torn write would be visible.
    base = RegistryState(workflow=WF, seq=1, live="v1", stage="full", reason="x" * 8000, updated_at=utcnow())
    write_pointer(reg, base)
    n, errors, seen = 250, [], []
    done = threading.Event()

    def reader():
        while not done.is_set():
            try:
                seen.append(app.read_pointer(reg, WF).seq)
            except Exception as exc:  # noqa: BLE001 - any failure is what the test looks for
                errors.append(repr(exc))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for seq in range(2, n + 1):
            write_pointer(reg, RegistryState(**{**base.__dict__, "seq": seq, "live": f"v{seq}"}))
    finally:
        done.set()
        t.join()
    assert errors == []
    assert len(seen) > 50
    assert seen == sorted(seen)  # never backwards
    assert app.read_pointer(reg, WF).seq == n
    assert sorted(p.name for p in reg.iterdir()) == [f".{WF}.lock", f"{WF}.json"]  # no temp files left
    assert (reg / f"{WF}.json").stat().st_mode & 0o777 == 0o644


def test_write_pointer_refuses_to_go_backwards_or_fork(reg):
    st = RegistryState(workflow=WF, seq=2, live="v2", updated_at=utcnow())
    write_pointer(reg, st)
    before = (reg / f"{WF}.json").read_bytes()
    with pytest.raises(StalePointerError, match="newer than seq 1"):
        write_pointer(reg, RegistryState(workflow=WF, seq=1, live="v1", updated_at=utcnow()))
    write_pointer(reg, st)  # the same state again: a no-op
    with pytest.raises(RegistryError, match="different content for the same seq 2"):
        write_pointer(reg, RegistryState(workflow=WF, seq=2, live="v9", updated_at=utcnow()))
    with pytest.raises(RegistryError, match="seq 0"):
        write_pointer(reg, RegistryState(workflow=WF))
    assert (reg / f"{WF}.json").read_bytes() == before


def test_every_change_increments_seq_and_links_state_event_and_pointer(con, reg):
    live_v2_lkg_v1(con, reg)
    go(con, reg, "shadow", "v3")
    go(con, reg, "canary", "v3", percent=5)
    r = go(con, reg, "ramp", "v3")
    assert r.after.canary_percent == 50.0  # the policy's default ramp share
    r = go(con, reg, "full", "v3")
    state = get_state(con, WF)
    assert state.seq == 7
    assert app.read_pointer(reg, WF).seq == 7
    events = [e for e in audit.list_events(con, workflow=WF) if e["kind"] == audit.KIND_ROLLOUT]
    assert [e["payload"]["seq"] for e in events] == [1, 2, 3, 4, 5, 6, 7]
    assert [e["payload"]["stage"] for e in events] == ["full", "canary", "full", "shadow", "canary", "ramp", "full"]
    assert state.event_seq == events[-1]["seq"]
    assert events[-1]["payload"]["after"] == state.releases()
    assert events[-1]["payload"]["before"]["canary"] == "v3"
    assert audit.verify_chain(con).ok


# ---------------------------------------------------------------------------------------------
# Rollout refusals and overrides


def test_rollout_without_a_releasable_gate_is_refused_and_recorded(con, reg):
    gate(con, "v1")
    go(con, reg, "full", "v1")
    pointer_before = (reg / f"{WF}.json").read_bytes()
    with pytest.raises(RolloutRefused, match="has no gate decision"):
        go(con, reg, "canary", "v2")
    gate(con, "v2", "BLOCK")
    with pytest.raises(RolloutRefused, match="is BLOCK"):
        go(con, reg, "canary", "v2")
    gate(con, "v3", "REVIEW")
    with pytest.raises(RolloutRefused, match="REVIEW without an approval"):
        go(con, reg, "canary", "v3")
    refused = [e for e in audit.list_events(con, workflow=WF) if e["kind"] == audit.KIND_REFUSED]
    assert [e["release_key"] for e in refused] == [f"{WF}--v2", f"{WF}--v2", f"{WF}--v3"]
    assert refused[1]["payload"]["gate_decision"] == "BLOCK" and refused[1]["payload"]["stage"] == "canary"
    assert get_state(con, WF).seq == 1
    assert (reg / f"{WF}.json").read_bytes() == pointer_before
    # An approved REVIEW may go out.
    approve(con, f"{WF}--v3", approvers=["ana.lopez"], by="ana.lopez", reason="reviewed the diffs")
    assert go(con, reg, "canary", "v3").after.canary == "v3"


def test_override_is_recorded_and_only_for_approvers(con, reg):
    gate(con, "v1")
    go(con, reg, "full", "v1")
    gate(con, "v2", "BLOCK")
    wf_cfg = SimpleNamespace(name=WF, rollout={}, approvers=["ana.lopez", "sam.okafor"])
    ownerless = SimpleNamespace(name=WF, rollout={}, approvers=[])
    with pytest.raises(RolloutRefused, match="approvers are nobody"):
        go(con, reg, "canary", "v2", override=True, policy=ownerless)
    with pytest.raises(RolloutRefused, match="mallory may not override"):
        go(con, reg, "canary", "v2", override=True, actor="mallory", policy=wf_cfg)
    assert get_state(con, WF).canary is None
    r = go(con, reg, "canary", "v2", override=True, actor="sam.okafor", reason="hotfix for outage", policy=wf_cfg)
    assert r.override and r.waived == (f"gate: {WF}--v2 is BLOCK",)
    event = audit.list_events(con, workflow=WF, kind=audit.KIND_ROLLOUT)[-1]
    assert event["actor"] == "sam.okafor" and event["payload"]["override"] is True
    assert event["payload"]["waived"] == [f"gate: {WF}--v2 is BLOCK"]
    assert event["payload"]["gate"]["decision"] == "BLOCK"


def test_stage_order_and_invalid_requests(con, reg):
    for v in ("v1", "v2", "v3"):
        gate(con, v)
    with pytest.raises(RegistryError, match="nothing is live yet"):
        go(con, reg, "canary", "v1")
    go(con, reg, "full", "v1")  # the first release goes straight to full
    with pytest.raises(RolloutRefused, match="has not been through canary before full"):
        go(con, reg, "full", "v2")
    with pytest.raises(RolloutRefused, match="has not been through canary before ramp"):
        go(con, reg, "ramp", "v2")
    with pytest.raises(RegistryError, match="already live"):
        go(con, reg, "canary", "v1")
    with pytest.raises(RegistryError, match=r"percent must be in \(0, 100\)"):
        go(con, reg, "canary", "v2", percent=100)
    with pytest.raises(RegistryError, match="applies to canary and ramp only"):
        go(con, reg, "shadow", "v2", percent=5)
    go(con, reg, "canary", "v2", percent=10)
    with pytest.raises(RegistryError, match="v2 is in canary: only one release rolls out at a time; promote it"):
        go(con, reg, "canary", "v3")
    with pytest.raises(RegistryError, match="already in canary at 10 %"):
        go(con, reg, "canary", "v2", percent=10)
    go(con, reg, "ramp", "v2", percent=30)
    with pytest.raises(RegistryError, match="is a rollback"):
        go(con, reg, "canary", "v2")
    with pytest.raises(RegistryError, match="not in this workflow's rollout stages"):
        go(con, reg, "shadow", "v2", policy={"stages": ["canary", "full"]})
    with pytest.raises(RegistryError, match="unknown action"):
        go(con, reg, "promote", "v2")
    con.execute("BEGIN TRANSACTION")
    with pytest.raises(RegistryError, match="outside an open transaction"):
        go(con, reg, "full", "v2")
    con.execute("ROLLBACK")
    # A skipped canary can be overridden, and the waiver is recorded.
    go(con, reg, "full", "v2")
    r = go(con, reg, "full", "v3", override=True, reason="emergency fix")
    assert r.waived == ("stage order: v3 has not been through canary before full",)
    assert get_state(con, WF).live == "v3"
    # A workflow without a canary stage promotes directly.
    gate(con, "v4")
    assert go(con, reg, "full", "v4", policy={"stages": ["full"]}).waived == ()


# ---------------------------------------------------------------------------------------------
# The last-known-good rule


def test_last_known_good_rule(con, reg):
    for v in ("v1", "v2", "v3", "v4"):
        gate(con, v)
    assert go(con, reg, "full", "v1").after.last_known_good is None  # nothing before the first release
    go(con, reg, "canary", "v2")
    assert get_state(con, WF).last_known_good is None  # canary changes neither live nor LKG
    assert go(con, reg, "full", "v2").after.last_known_good == "v1"
    go(con, reg, "canary", "v3")
    go(con, reg, "ramp", "v3")
    assert go(con, reg, "full", "v3").after.last_known_good == "v2"
    # Removing a candidate leaves live and LKG alone.
    go(con, reg, "canary", "v4")
    r = rollback(con, reg, WF, trigger="canary", reason="canary failed", actor="relops", automatic=True)
    assert (r.release, r.to_release, r.after.live, r.after.last_known_good) == ("v4", "v3", "v3", "v2")
    # Rolling back live uses the one vetted step back, which is then spent.
    r = rollback(con, reg, WF, trigger="manual", reason="v3 misbehaves", actor="ana.lopez", automatic=False)
    assert (r.release, r.after.live, r.after.last_known_good, r.after.stage) == ("v3", "v2", None, "rolled_back")
    with pytest.raises(RegistryError, match="no last known good release to roll back v2 to"):
        rollback(con, reg, WF, trigger="manual", reason="again", actor="ana.lopez", automatic=False)
    # An explicit target must have served before (or be releasable).
    gate(con, "v9", "BLOCK")
    with pytest.raises(RegistryError, match="v9 was never live"):
        rollback(con, reg, WF, to="v9", trigger="manual", reason="x", actor="ana.lopez", automatic=False)
    r = transition(con, reg, WF, action="rollback", release="v1", actor="ana.lopez", reason="back to v1")
    assert (r.after.live, r.after.last_known_good) == ("v1", None)
    assert app.read_pointer(reg, WF).live == "v1"
    # Promoting again makes the previous live the LKG.
    go(con, reg, "canary", "v4")
    assert go(con, reg, "full", "v4").after.last_known_good == "v1"


# ---------------------------------------------------------------------------------------------
# Rollback: the flip, time-to-rollback, idempotency, crashes


def test_automatic_rollback_flips_and_records_time_to_rollback(con, reg):
    live_v2_lkg_v1(con, reg)
    go(con, reg, "canary", "v3", percent=20)
    evaluated = datetime.now(timezone(timedelta(hours=2))) - timedelta(seconds=5)  # aware, not UTC
    r = rollback(con, reg, WF, trigger="canary", reason="p95 latency 1.6x baseline", actor="relops-sensor",
                 automatic=True, check_evaluated_at=evaluated, alert_id="al-1", incident_id="inc-1",
                 run_id="run-1", release="v3")
    assert r.performed and (r.release, r.to_release) == ("v3", "v2")
    p = app.read_pointer(reg, WF)
    assert (p.seq, p.live, p.canary, p.canary_percent, p.stage) == (5, "v2", None, None, "rolled_back")
    assert {app.choose_release(p, f"u{i}") for i in range(1000)} == {"v2"}
    [row] = list_rollbacks(con, WF)
    assert row["rollback_id"] == r.rollback_id
    assert (row["from_release"], row["to_release"], row["trigger"], row["automatic"], row["performed"]) == (
        "v3", "v2", "canary", True, True)
    assert (row["alert_id"], row["incident_id"], row["dagster_run_id"]) == ("al-1", "inc-1", "run-1")
    assert row["check_evaluated_at"] == evaluated.astimezone(UTC).replace(tzinfo=None)
    assert 5.0 <= row["time_to_rollback_s"] < 15.0
    assert row["time_to_rollback_s"] == pytest.approx((row["flipped_at"] - row["check_evaluated_at"]).total_seconds())
    event = audit.list_events(con, workflow=WF, kind=audit.KIND_ROLLBACK)[-1]
    assert event["seq"] == row["event_seq"] == get_state(con, WF).event_seq
    assert event["payload"]["from"] == "v3" and event["payload"]["automatic"] is True
    # A retried job about the same release changes nothing.
    again = rollback(con, reg, WF, trigger="canary", reason="retry", actor="relops-sensor", automatic=True,
                     release="v3")
    assert not again.performed and "no longer serves" in again.message
    assert get_state(con, WF).seq == 5 and len(list_rollbacks(con, WF)) == 1


def test_deploy_failure_leaves_the_record_ahead_and_sync_pointer_catches_up(con, reg):
    live_v2_lkg_v1(con, reg)

    class Down:
        name = "down"

        def deploy(self, registry_dir, state):
            raise DeployError("disk full")

    checked = utcnow() - timedelta(seconds=2)
    with pytest.raises(DeployError, match="disk full"):
        rollback(con, reg, WF, trigger="drift", reason="drift", actor="ana.lopez", automatic=False,
                 check_evaluated_at=checked, deployer=Down())
    assert get_state(con, WF).seq == 4 and get_state(con, WF).live == "v1"  # the record moved ...
    assert app.read_pointer(reg, WF).seq == 3 and app.read_pointer(reg, WF).live == "v2"  # ... the file did not
    [row] = list_rollbacks(con, WF)
    assert row["flipped_at"] is None and row["time_to_rollback_s"] is None
    out = sync_pointer(con, reg, WF)
    assert out["behind"] and out["pointer_seq_before"] == 3 and out["completed_rollbacks"] == [row["rollback_id"]]
    assert (app.read_pointer(reg, WF).seq, app.read_pointer(reg, WF).live) == (4, "v1")
    [row] = list_rollbacks(con, WF)
    assert row["flipped_at"] is not None and row["time_to_rollback_s"] >= 2.0
    again = sync_pointer(con, reg, WF)
    assert not again["behind"] and again["completed_rollbacks"] == []


def test_a_failure_inside_the_transaction_changes_nothing(con, reg, monkeypatch):
    live_v2_lkg_v1(con, reg)
    events_before = count(con, "SELECT count(*) FROM events")
    pointer_before = (reg / f"{WF}.json").read_bytes()

    def boom(con_, state):
        raise RuntimeError("crash between the event and the state")

    monkeypatch.setattr(rollout_mod, "put_state", boom)
    with pytest.raises(RuntimeError, match="crash"):
        rollback(con, reg, WF, trigger="manual", reason="x", actor="ana.lopez", automatic=False)
    assert get_state(con, WF).seq == 3
    assert count(con, "SELECT count(*) FROM events") == events_before
    assert count(con, "SELECT count(*) FROM rollbacks") == 0
    assert (reg / f"{WF}.json").read_bytes() == pointer_before


def test_recommendation_records_without_touching_the_registry(con, reg):
    live_v2_lkg_v1(con, reg)
    pointer_before = (reg / f"{WF}.json").read_bytes()
    out = record_recommendation(con, WF, release="v2", trigger="drift", reason="topic drift", actor="relops-sensor",
                                check_evaluated_at=utcnow(), alert_id="al-7")
    assert (out.serving_as, out.would_roll_back_to) == ("live", "v1")
    [row] = list_rollbacks(con, WF)
    assert (row["performed"], row["from_release"], row["to_release"], row["flipped_at"]) == (False, "v2", "v1", None)
    assert get_state(con, WF).seq == 3 and (reg / f"{WF}.json").read_bytes() == pointer_before
    assert audit.list_events(con, workflow=WF)[-1]["kind"] == "rollback_recommended"
    linked = link_rollback(con, out.rollback_id, incident_id="inc-3")
    assert (linked["alert_id"], linked["incident_id"]) == ("al-7", "inc-3")
    assert [e["kind"] for e in history(con, WF)] == ["rollout"] * 3 + ["rollback_recommended"]


def test_sync_pointer_at_home_opens_the_warehouse(tmp_path):
    with open_warehouse(tmp_path / "warehouse" / "relops.duckdb") as c:
        gate(c, "v1")
        transition(c, tmp_path / "elsewhere", WF, action="full", release="v1", actor="ana.lopez", reason="first")
    assert not (tmp_path / "registry" / f"{WF}.json").exists()
    out = sync_pointer_at_home(tmp_path, WF)
    assert out["deployed"] and out["seq"] == 1
    assert app.read_pointer(tmp_path, WF).live == "v1"


# ---------------------------------------------------------------------------------------------
# Policy


@pytest.mark.parametrize(
    "policy, trigger, where, expected",
    [
        ({}, "canary", "canary", "rollback"),
        ({}, "drift", "ramp", "rollback"),
        ({"auto_rollback": False}, "canary", "canary", "alert_only"),
        ({"auto_rollback_on": ["canary", "gate"]}, "gate", "canary", "rollback"),
        ({"auto_rollback_on": ["canary", "gate"]}, "drift", "canary", "alert_only"),
        ({}, "canary", "shadow", "alert_only"),
        ({}, "canary", "live", "alert_only"),
        ({}, "canary", "gone", "alert_only"),
        ({}, "canary", "nothing", "alert_only"),
    ],
)
def test_decide(policy, trigger, where, expected):
    base = dict(workflow=WF, seq=5, live="v2", last_known_good="v1")
    states = {
        "canary": RegistryState(**base, canary="v3", canary_percent=10.0, stage="canary"),
        "ramp": RegistryState(**base, canary="v3", canary_percent=50.0, stage="ramp"),
        "shadow": RegistryState(**base, shadow="v3", stage="shadow"),
        "live": RegistryState(**base, stage="full"),
        "gone": RegistryState(**base, stage="rolled_back"),
        "nothing": RegistryState(**base, stage="full"),
    }
    release = {"live": "v2", "nothing": None}.get(where, "v3")
    decision, why = decide(policy, states[where], trigger, release)
    assert decision == expected, why
    if where == "live":
        assert "human decision" in why
    if policy.get("auto_rollback") is False:
        assert "forbids automatic rollback" in why


def test_decide_reads_a_workflow_object_and_policy_validation_names_keys():
    wf = SimpleNamespace(name=WF, rollout={"auto_rollback": True, "auto_rollback_on": ["gate"]})
    st = RegistryState(workflow=WF, seq=2, live="v1", canary="v2", canary_percent=10.0, stage="canary")
    assert decide(wf, st, "canary")[0] == "alert_only"
    assert decide(wf, st, "gate")[0] == "rollback"
    with pytest.raises(RegistryError) as exc:
        parse_policy({"stages": ["canary", "shadow", "full"], "auto_rollback_on": ["canary", "vibes"],
                      "canary_percent": 0, "triggers": {"latency_p95_ratio": 0.9, "speed": 1}})
    msg = str(exc.value)
    for needle in ("rollout.stages", "rollout.auto_rollback_on", "rollout.canary_percent",
                   "rollout.triggers.latency_p95_ratio", "unknown key 'speed'"):
        assert needle in msg


def test_rollout_plan_from_policy_and_thresholds():
    wf = {"name": WF, "rollout": {"stages": ["canary", "ramp", "full"], "auto_rollback_on": ["canary"],
                                  "canary_percent": 5, "durations_minutes": {"canary": 30},
                                  "triggers": {"latency_p95_ratio": 1.3}}}
    plan = rollout_plan(wf, {"version": 3, "latency_p95_budget_ms": 2500, "cost_per_sample_budget_usd": None})
    assert [(s["stage"], s["traffic_percent"], s["min_minutes"]) for s in plan["stages"]] == [
        ("canary", 5.0, 30.0), ("ramp", 50.0, 240.0), ("full", 100.0, 0.0)]
    assert plan["min_total_minutes"] == 270.0 and plan["thresholds_version"] == 3
    by_metric = {t["metric"]: t for t in plan["triggers"]}
    assert by_metric["latency_p95_ratio"]["threshold"] == 1.3
    assert by_metric["latency_p95_ms"]["threshold"] == 2500.0
    assert "cost_usd_mean" not in by_metric  # no cost budget in the thresholds
    assert by_metric["latency_p95_ratio"]["action_in_canary_or_ramp"] == "rollback"
    assert by_metric["decision"]["action_in_canary_or_ramp"] == "alert_only"  # gate not in auto_rollback_on
    assert all(t["action_when_live"] == "alert_only" for t in plan["triggers"])
    json.dumps(plan)
    default = rollout_plan(SimpleNamespace(name=WF, rollout={"stages": ["shadow", "canary", "ramp", "full"]}))
    assert [s["traffic_percent"] for s in default["stages"]] == [0.0, 10.0, 50.0, 100.0]


# ---------------------------------------------------------------------------------------------
# Webhook deployer


class _Receiver(BaseHTTPRequestHandler):
    status = 204
    requests: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).requests.append((dict(self.headers), body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    handler = type("Receiver", (_Receiver,), {"requests": [], "status": 204})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}/deploy"
    server.shutdown()
    server.server_close()


def test_webhook_deployer_posts_the_pointer_with_a_verifiable_hmac(con, reg, receiver, monkeypatch):
    handler, url = receiver
    monkeypatch.setenv("RELOPS_TEST_DEPLOY_SECRET", "s3cret")
    gate(con, "v1")
    hook = WebhookDeployer(url, secret_env="RELOPS_TEST_DEPLOY_SECRET", attempts=1)
    r = transition(con, reg, WF, action="full", release="v1", actor="ana.lopez", reason="first", deployer=hook)
    [(headers, body)] = handler.requests
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers[SIGNATURE_HEADER], expected)
    assert headers[SIGNATURE_HEADER] != "sha256=" + hmac.new(b"other", body, hashlib.sha256).hexdigest()
    doc = json.loads(body)
    assert (doc["workflow"], doc["seq"], doc["live"]) == (WF, 1, "v1")
    assert headers["X-Relops-Seq"] == "1"
    assert r.receipt["status"] == 204 and app.read_pointer(reg, WF).seq == 1  # the file is written too
    # The deployer is also reachable from the workflow's rollout config.
    gate(con, "v2")
    policy = {"deployer": {"type": "webhook", "url": url, "secret_env": "RELOPS_TEST_DEPLOY_SECRET"}}
    transition(con, reg, WF, action="canary", release="v2", actor="ana.lopez", reason="c", policy=policy)
    assert json.loads(handler.requests[-1][1])["canary"] == "v2"


def test_webhook_deployer_failures_raise_after_recording(con, reg, receiver, monkeypatch):
    handler, url = receiver
    gate(con, "v1")
    monkeypatch.delenv("RELOPS_TEST_DEPLOY_SECRET", raising=False)
    hook = WebhookDeployer(url, secret_env="RELOPS_TEST_DEPLOY_SECRET", attempts=2, backoff_s=0)
    with pytest.raises(DeployError, match="RELOPS_TEST_DEPLOY_SECRET is not set"):
        transition(con, reg, WF, action="full", release="v1", actor="ana.lopez", reason="x", deployer=hook)
    assert handler.requests == [] and get_state(con, WF).seq == 1  # recorded, never sent unsigned
    monkeypatch.setenv("RELOPS_TEST_DEPLOY_SECRET", "s3cret")
    handler.status = 503
    with pytest.raises(DeployError, match="HTTP 503"):
        sync_pointer(con, reg, WF, deployer=hook)
    assert len(handler.requests) == 2  # retried
    handler.status = 403
    with pytest.raises(DeployError, match="HTTP 403"):
        sync_pointer(con, reg, WF, deployer=hook)
    assert len(handler.requests) == 3  # a refusal is not retried
    handler.status = 200
    assert sync_pointer(con, reg, WF, deployer=hook)["receipt"]["status"] == 200
    with pytest.raises(RegistryError, match="http"):
        WebhookDeployer("file:///etc/passwd")


# ---------------------------------------------------------------------------------------------
# Incidents


def test_incidents_open_once_merge_links_and_close(con):
    a = open_incident(con, WF, "v3", "canary failed: latency", "canary", "relops-sensor", {"report": "r/1.md"})
    assert a["created"] and a["status"] == "open" and a["links"] == {"report": "r/1.md"}
    b = open_incident(con, WF, "v3", "canary failed: latency", "canary", "relops-sensor", {"alert": "al-1"})
    assert not b["created"] and b["incident_id"] == a["incident_id"]
    assert b["links"] == {"report": "r/1.md", "alert": "al-1"}
    other = open_incident(con, WF, None, "drift on topic", "drift", "relops-sensor")
    assert other["created"] and other["release"] is None
    assert {i["incident_id"] for i in list_incidents(con, WF)} == {a["incident_id"], other["incident_id"]}
    closed = close_incident(con, a["incident_id"], closed_by="ana.lopez", resolution="rolled back to v2")
    assert closed["status"] == "closed" and closed["closed_by"] == "ana.lopez" and closed["closed_at"] is not None
    with pytest.raises(IncidentError, match="already closed"):
        close_incident(con, a["incident_id"], closed_by="ana.lopez", resolution="again")
    with pytest.raises(IncidentError, match="no incident"):
        close_incident(con, "inc-nope", closed_by="ana.lopez", resolution="x")
    assert [i["incident_id"] for i in list_incidents(con, WF)] == [other["incident_id"]]
    assert [i["incident_id"] for i in list_incidents(con, WF, status="closed")] == [a["incident_id"]]
    assert len(list_incidents(con, status=None)) == 2
    kinds = [e["kind"] for e in audit.list_events(con, workflow=WF)]
    # Joining the open incident with a new link is an event too.
    assert kinds == ["incident_opened", "incident_linked", "incident_opened", "incident_closed"]
    # A new incident for the same condition once the first is closed.
    assert open_incident(con, WF, "v3", "canary failed: latency", "canary", "relops-sensor")["created"]


# ---------------------------------------------------------------------------------------------
# Drills


def test_drill_rehearses_in_a_sandbox_and_records_the_result(con, reg, tmp_path):
    live_v2_lkg_v1(con, reg)
    pointer_before = (reg / f"{WF}.json").read_bytes()
    sandboxes = tmp_path / "sandboxes"
    sandboxes.mkdir()
    res = run_drill(con, reg, WF, actor="ana.lopez", run_id="run-9", sandbox_root=sandboxes)
    assert res.passed, res.checks
    assert (res.from_release, res.to_release) == ("v2", "v1")
    assert res.duration_ms is not None and 0 < res.duration_ms < 5000
    assert [c.name for c in res.checks] == [
        "state_recorded", "pointer_in_sync", "registry_backed_by_log", "rollback_target", "rollback_recorded",
        "pointer_flipped", "traffic_moved", "production_untouched"]
    # Production untouched, sandbox gone, nothing written to production's rollbacks.
    assert (reg / f"{WF}.json").read_bytes() == pointer_before
    assert get_state(con, WF).seq == 3 and list_rollbacks(con, WF) == []
    assert list(sandboxes.iterdir()) == []
    [row] = list_drills(con, WF)
    assert row["drill_id"] == res.drill_id and row["passed"] and row["dagster_run_id"] == "run-9"
    assert row["duration_ms"] == pytest.approx(res.duration_ms)
    assert row["detail"]["to"] == "v1"
    assert audit.list_events(con, workflow=WF)[-1]["kind"] == "drill"


def test_drill_fails_on_a_stale_pointer_or_nothing_to_roll_back_to(con, reg):
    gate(con, "v1")
    go(con, reg, "full", "v1")
    res = run_drill(con, reg, WF, actor="ana.lopez")
    assert not res.passed and res.failed_checks == ["rollback_target"]
    # the status says why in one line, and what to do next
    message = drill_status(con, WF)["message"]
    assert "no last known good release yet: a drill needs a release to roll back to; roll out a second release first" in message
    assert "\n" not in message
    gate(con, "v2")
    go(con, reg, "canary", "v2")
    os.remove(reg / f"{WF}.json")  # the application would read nothing
    res = run_drill(con, reg, WF, actor="ana.lopez")
    assert res.failed_checks == ["pointer_in_sync"]
    assert res.to_release == "v1"  # a canary rolls back to live
    assert not run_drill(con, reg, "doc-qa", actor="ana.lopez").passed


def test_drill_status_never_ok_stale_failed(con, reg):
    assert drill_status(con, WF)["status"] == "never"
    live_v2_lkg_v1(con, reg)
    res = run_drill(con, reg, WF, actor="ana.lopez")
    now = res.finished_at
    assert drill_status(con, WF, now + timedelta(days=34))["status"] == "ok"
    stale = drill_status(con, WF, now + timedelta(days=36))
    assert stale["status"] == "stale" and not stale["ok"] and "36 days" in stale["message"]
    assert drill_status(con, WF, now + timedelta(days=36), max_age_days=40)["status"] == "ok"
    os.remove(reg / f"{WF}.json")
    run_drill(con, reg, WF, actor="ana.lopez")
    failed = drill_status(con, WF, now + timedelta(days=1))
    assert failed["status"] == "failed" and f"rewrite it with relops sync {WF}" in failed["message"]
    assert failed["last_passed"]["drill_id"] == res.drill_id
    sync_pointer(con, reg, WF)
    assert run_drill(con, reg, WF, actor="ana.lopez").passed
    assert drill_status(con, WF)["status"] == "ok"


# ---------------------------------------------------------------------------------------------
# Runbook


def test_runbook_has_state_commands_verification_owner_and_drill(con, reg, tmp_path):
    live_v2_lkg_v1(con, reg)
    go(con, reg, "canary", "v3")
    run_drill(con, reg, WF, actor="ana.lopez")
    home = tmp_path / "my home"
    wf = SimpleNamespace(name=WF, owner="<b>ana</b>", delegates=["sam_[x](javascript:alert(1))"],
                         description="Tickets <script>alert(1)</script>", rollout={"auto_rollback_on": ["canary"]})
    state = get_state(con, WF)
    md = render_runbook(state, rollout_plan(wf), wf, drill_status(con, WF), home,
                        incidents=[open_incident(con, WF, "v3", "canary <i>failed</i>", "canary", "relops")])
    plain = md.replace("\\", "")  # markdown escapes removed
    assert "| live | v2 |" in md and "| last known good | v1 |" in md
    assert "| canary | v3 (canary, 10 % of requests) |" in plain
    assert f"relops --home '{home}' rollback {WF} --reason" in md
    assert f"relops --home '{home}' status {WF}" in md and f"relops --home '{home}' drill {WF}" in md
    assert "automatically on a failed canary check" in md
    assert "canary p95 latency above 1.2 x that of the live release" in plain
    assert "Status: **OK**" in md and "read back in" in md
    for raw in ("<b>", "<script>", "<i>"):
        assert raw not in md
    assert re.search(r"(?<!\\)\]\(javascript", md) is None and "\\](javascript" in md  # the link cannot form
    assert "&lt;b>ana&lt;/b>" in md
    # The verification SQL runs on the warehouse and shows traffic by release.
    sql = re.search(r"```sql\n(.*?)\n```", md, re.S).group(1)
    assert "&" not in sql
    now = utcnow()
    con.execute("CREATE TEMP TABLE s AS SELECT * FROM spans")
    rows = [("t1", "v2", now - timedelta(minutes=3)), ("t2", "v3", now - timedelta(minutes=5)),
            ("t3", "v1", now - timedelta(minutes=40))]
    for trace, release, start in rows:
        con.execute("INSERT INTO spans (trace_id, span_id, workflow, release, start_time, status, latency_ms) "
                    "VALUES (?, 's', ?, ?, ?, 'ok', 100)", [trace, WF, release, start])
    assert [r[0] for r in con.execute(sql).fetchall()] == ["v2", "v3"]


def test_runbook_without_state_or_last_known_good(con, reg):
    wf = {"name": WF, "owner": None, "delegates": []}
    md = render_runbook(None, rollout_plan({"name": WF, "rollout": {"auto_rollback": False}}), wf, None, None)
    assert "Nothing has been rolled out" in md and "**never** been drilled" in md
    assert "Automatic rollback is **off**" in md and "**none set**" in md
    assert "relops rollback" not in md and "relops drill support-triage" in md
    gate(con, "v1")
    go(con, reg, "full", "v1")
    md = render_runbook(get_state(con, WF), rollout_plan(wf), wf, drill_status(con, WF), reg.parent,
                        sync_command="{relops} sync {workflow}")
    assert f"rollback {WF} --to VERSION" in md
    assert f"relops --home {reg.parent} sync {WF}" in md
