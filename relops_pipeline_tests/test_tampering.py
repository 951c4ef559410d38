"""Tampering with what ships and what is live: each case fails `relops audit verify` (exit 8,
naming the row or event) and blocks the action that would rely on it, changing nothing.

The starting point is real: gate decisions and rollouts recorded by the library into a home's
warehouse (keyed events, anchor beside the warehouse); the attacks are what someone with
direct SQL access, or the library without the audit key, can do."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from relops_pipeline.lib import audit
from relops_pipeline.lib.gates.service import approve, release_state
from relops_pipeline.lib.registry.rollout import rollback, transition
from relops_pipeline.lib.registry.state import get_state
from relops_pipeline.lib.warehouse import open_warehouse
from relops_pipeline.registry import pointer_file
from relops_pipeline_tests.conftest import run_cli

WF = "doc-qa"


def _gate(con, version: str, decision: str) -> None:
    """A gate decision as record_decision writes it: the event and its row in one transaction."""
    key = f"{WF}--{version}"
    gate_id = f"gate-{version}"
    with audit.transaction(con):
        seq = audit.append_event(con, kind=audit.KIND_GATE_DECISION, actor="relops-gate", reason=decision,
                                 workflow=WF, release_key=key, payload={"gate_id": gate_id, "decision": decision})["seq"]
        con.execute(
            "INSERT INTO gate_decisions (gate_id, release_key, workflow, version, decision, result, event_seq, "
            "decided_at) VALUES (?, ?, ?, ?, ?, '{}', ?, ?)",
            [gate_id, key, WF, version, decision, seq, dt.datetime(2026, 12, 1)],
        )


def _go(con, home, stage: str, version: str):
    return transition(con, home.registry_dir, WF, action=stage, release=version, actor="ana.lopez",
                      reason=f"{stage} {version}")


@pytest.fixture
def world(home):
    """doc-qa: v1 live, v2 in canary (both SHIP), v3 BLOCKed; pointer file in sync."""
    with open_warehouse(home.warehouse_path) as con:
        for version, decision in (("v1", "SHIP"), ("v2", "SHIP"), ("v3", "BLOCK")):
            _gate(con, version, decision)
        _go(con, home, "full", "v1")
        _go(con, home, "canary", "v2")
    return home


def _verify(capsys, home, *extra):
    code, out, _err = run_cli(capsys, home.root, "audit", "verify", "--json", *extra)
    return code, json.loads(out)


def _unchanged(home, before_seq: int, pointer: bytes) -> None:
    with open_warehouse(home.warehouse_path) as con:
        assert get_state(con, WF).seq == before_seq
    assert pointer_file(home.registry_dir, WF).read_bytes() == pointer


def test_an_untouched_world_verifies(world, capsys):
    code, doc = _verify(capsys, world)
    assert code == 0 and doc["ok"] and doc["head_checked"] and doc["checked"] == 5
    assert doc["table_rows"] == [] and doc["problems"] == []


def test_an_edited_gate_decision_fails_verification_and_blocks_the_rollout(world, capsys):
    pointer = pointer_file(world.registry_dir, WF).read_bytes()
    with open_warehouse(world.warehouse_path) as con:
        con.execute("UPDATE gate_decisions SET decision = 'SHIP' WHERE version = 'v3'")
        state = release_state(con, f"{WF}--v3")
        assert state["decision"] == "SHIP" and not state["releasable"]
        assert "decision is 'SHIP', its event says 'BLOCK'" in state["tampered"]
        with pytest.raises(audit.TamperedError, match="doc-qa--v3: gate decision gate-v3 disagrees with event 3"):
            _go(con, world, "canary", "v3")
    _unchanged(world, 2, pointer)
    code, doc = _verify(capsys, world)
    assert code == 8 and not doc["ok"]
    assert [(d["table"], d["row"], d["event_seq"]) for d in doc["table_rows"]] == [("gate_decisions", "gate-v3", 3)]
    assert doc["problems"] == []  # the log itself is intact: the row is what lies


def test_an_edited_registry_row_fails_verification_and_blocks_sync_and_rollback(world, capsys):
    pointer = pointer_file(world.registry_dir, WF).read_bytes()
    with open_warehouse(world.warehouse_path) as con:
        con.execute("UPDATE registry_state SET live = 'v3', canary = NULL, canary_percent = NULL, stage = 'full' "
                    "WHERE workflow = ?", [WF])
    code, _out, err = run_cli(capsys, world.root, "sync", WF)
    assert code == 8
    assert "refused: doc-qa: registry row for doc-qa disagrees with event 5: live is 'v3', its event says 'v1'" in err
    _unchanged(world, 2, pointer)  # the pointer was not rewritten from the edited row
    with open_warehouse(world.warehouse_path) as con, pytest.raises(audit.TamperedError, match="registry row"):
        rollback(con, world.registry_dir, WF, trigger="manual", reason="r", actor="ana.lopez", automatic=False)
    code, doc = _verify(capsys, world)
    assert code == 8
    assert [(d["table"], d["row"]) for d in doc["table_rows"]] == [("registry_state", WF)]


def test_a_deleted_registry_row_is_named(world, capsys):
    with open_warehouse(world.warehouse_path) as con:
        con.execute("DELETE FROM registry_state")
        with pytest.raises(audit.TamperedError, match="no registry row for doc-qa, but event 5 set its state"):
            _go(con, world, "full", "v2")
    assert _verify(capsys, world)[0] == 8


def _forged_override(con, version: str) -> None:
    """An owner override appended as someone with the library and SQL but not the key would:
    a correct seq, link and SHA-256."""
    seq, prev = audit.head(con)
    row = {"seq": seq + 1, "event_id": "e" * 32, "ts": dt.datetime(2026, 12, 2), "actor": "li.wei",
           "kind": audit.KIND_OVERRIDE, "workflow": WF, "release_key": f"{WF}--{version}", "reason": "ship it",
           "payload": {"gate_id": f"gate-{version}", "decision": "BLOCK", "override": True}, "prev_hash": prev}
    row["hash"] = audit.event_hash(row)
    con.execute(f"INSERT INTO events ({', '.join(audit.COLUMNS)}) VALUES ({', '.join('?' for _ in audit.COLUMNS)})",
                [json.dumps(row[c]) if c == "payload" else row[c] for c in audit.COLUMNS])


def test_an_appended_forged_override_fails_verification_and_ships_nothing(world, capsys):
    pointer = pointer_file(world.registry_dir, WF).read_bytes()
    with open_warehouse(world.warehouse_path) as con:
        _forged_override(con, "v3")
        state = release_state(con, f"{WF}--v3")
        assert state["overridden"] and not state["releasable"]
        assert state["tampered"] == "approval: event 6 carries no MAC after keyed events: it was not written by relops"
        with pytest.raises(audit.TamperedError, match="event 6 carries no MAC"):
            transition(con, world.registry_dir, WF, action="canary", release="v3", actor="li.wei", reason="go")
        with pytest.raises(audit.TamperedError):
            approve(con, f"{WF}--v3", approvers=["li.wei"], by="li.wei", reason="again", override=True)
    _unchanged(world, 2, pointer)
    code, doc = _verify(capsys, world)
    assert code == 8 and [(p["kind"], p["seq"]) for p in doc["problems"]] == [("forged", 6)]


def test_an_event_appended_with_the_library_under_another_key_is_a_forgery(world, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv(audit.KEY_FILE_ENV, str(tmp_path / "mallory.key"))
    with open_warehouse(world.warehouse_path) as con:
        with pytest.raises(audit.AuditError, match="the event log is keyed"):  # no quiet new key
            audit.append_event(con, kind=audit.KIND_OVERRIDE, actor="li.wei", reason="x", workflow=WF,
                               release_key=f"{WF}--v3")
        mallory = audit.AuditKey.from_secret(b"m" * 32)
        (tmp_path / "mallory.key").write_text(json.dumps({"key_id": mallory.key_id, "secret": (b"m" * 32).hex()}))
        audit.append_event(con, kind=audit.KIND_OVERRIDE, actor="li.wei", reason="x", workflow=WF,
                           release_key=f"{WF}--v3", payload={"gate_id": "gate-v3"})
    monkeypatch.delenv(audit.KEY_FILE_ENV)
    code, doc = _verify(capsys, world)
    # the forger's append also anchored its head under the forger's key: that anchor fails too
    assert code == 8 and [(p["kind"], p["seq"]) for p in doc["problems"]] == [("forged", 6), ("anchor", 6)]
    with open_warehouse(world.warehouse_path) as con:
        assert "no valid MAC" in release_state(con, f"{WF}--v3")["tampered"]


def test_a_deleted_tail_is_caught_by_the_anchor_and_by_an_exported_head(world, capsys, tmp_path):
    code, out, _ = run_cli(capsys, world.root, "audit", "head", "--json")
    exported = tmp_path / "head.json"
    exported.write_text(out)
    pointer = pointer_file(world.registry_dir, WF).read_bytes()
    # Undo the canary without trace: delete its event and put the row back as the event before says.
    with open_warehouse(world.warehouse_path) as con:
        con.execute("DELETE FROM events WHERE seq = 5")
        con.execute("UPDATE registry_state SET seq = 1, canary = NULL, canary_percent = NULL, stage = 'full', "
                    "event_seq = 4 WHERE workflow = ?", [WF])
        from relops_pipeline.lib import ledger

        assert ledger.registry_problem(con, WF, get_state(con, WF)) is None  # the row and the log agree...
        with pytest.raises(audit.TamperedError, match="the event log ends at seq 4, but seq 5 was anchored"):
            _go(con, world, "canary", "v2")  # ...but the log no longer reaches its anchor
    code, doc = _verify(capsys, world)
    assert code == 8 and [(p["kind"], p["seq"]) for p in doc["problems"]] == [("truncated", 5)]
    assert run_cli(capsys, world.root, "sync", WF)[0] == 8
    assert pointer_file(world.registry_dir, WF).read_bytes() == pointer
    # Whoever can also delete the anchor beside the warehouse is caught by the head kept elsewhere.
    (world.warehouse_path.parent / "audit" / "anchor.json").unlink()
    code, doc = _verify(capsys, world, "--expect-head", str(exported))
    assert code == 8 and [(p["kind"], p["seq"]) for p in doc["problems"]] == [("truncated", 5)]


def test_doctor_reports_tampering_and_fix_leaves_the_evidence(world, capsys):
    with open_warehouse(world.warehouse_path) as con:
        con.execute("UPDATE registry_state SET live = 'v3' WHERE workflow = ?", [WF])
    code, out, _ = run_cli(capsys, world.root, "doctor", "--fix")
    assert code == 7
    assert "event log: 1 problem (not repaired by --fix: see `relops audit verify`)" in out
    assert "registry_state doc-qa: registry row for doc-qa disagrees with event 5" in out
    with open_warehouse(world.warehouse_path) as con:
        assert get_state(con, WF).live == "v3"  # evidence kept for whoever investigates
