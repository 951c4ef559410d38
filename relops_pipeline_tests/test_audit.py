"""The hash-chained event log: appends, round trips, and what verification detects."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

import pytest

from relops_pipeline.lib import audit
from relops_pipeline.lib.warehouse import open_warehouse


@pytest.fixture
def con(tmp_path):
    with open_warehouse(tmp_path / "w.duckdb") as c:
        yield c


def _fill(con, n=5):
    out = []
    for i in range(n):
        out.append(
            audit.append_event(
                con,
                kind=audit.KIND_GATE_DECISION if i % 2 == 0 else audit.KIND_APPROVAL,
                actor=f"user{i}",
                reason=f"reason {i}",
                workflow="support-triage" if i < 3 else "other-flow",
                release_key=f"support-triage--v{i}" if i < 3 else None,
                payload=None if i == 1 else {
                    "i": i, "z": [1.5, 1e-7, 12345678901234567890], "a": {"y": None, "x": "é<script>"}
                },
            )
        )
    return out


def test_append_builds_a_chain_from_genesis(con):
    assert audit.head(con) == (0, audit.GENESIS_HASH)
    events = _fill(con)
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert events[0]["prev_hash"] == "0" * 64
    for prev, cur in zip(events, events[1:], strict=False):
        assert cur["prev_hash"] == prev["hash"]
    assert len({e["event_id"] for e in events}) == 5
    assert audit.head(con) == (5, events[-1]["hash"])
    result = audit.verify_chain(con)
    assert result.ok and result.checked == 5 and result.problems == []
    assert result.head == (5, events[-1]["hash"])
    assert result.head_checked and result.notes == []  # checked against the anchor beside the warehouse
    assert "cannot be detected" in audit.verify_chain(con, use_anchor=False).notes[0]
    assert audit.verify_chain(con, expect_head=audit.head(con)).ok
    assert all(e["key_id"] and len(e["mac"]) == 64 for e in events)


def test_hash_is_sha256_of_documented_canonical_form(con):
    e = _fill(con, 1)[0]
    doc = {
        "seq": 1, "event_id": e["event_id"], "ts": e["ts"].isoformat(timespec="microseconds"),
        "actor": "user0", "kind": "gate_decision", "workflow": "support-triage",
        "release_key": "support-triage--v0", "reason": "reason 0",
        "payload": {"a": {"x": "é<script>", "y": None}, "i": 0, "z": [1.5, 1e-7, 12345678901234567890]},
        "prev_hash": "0" * 64,
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert e["hash"] == hashlib.sha256(text.encode()).hexdigest()


def test_rows_read_back_from_duckdb_verify(con):
    written = _fill(con)
    read = audit.list_events(con)
    assert [r["seq"] for r in read] == [1, 2, 3, 4, 5]
    for w, r in zip(written, read, strict=False):
        assert r == {c: w[c] for c in audit.COLUMNS}  # same values after the round trip (payload parsed, ts datetime)
        assert audit.event_hash(r) == r["hash"]
    # a timestamp whose microseconds are zero must still hash the same after a round trip
    con.execute("UPDATE events SET ts = TIMESTAMP '2024-01-01 10:00:00' WHERE seq = 5")
    row = audit.list_events(con)[-1]
    row_hash = audit.event_hash(row)
    assert audit.format_ts(row["ts"]) == "2024-01-01T10:00:00.000000"
    key = audit.load_key(con)
    con.execute("UPDATE events SET hash = ?, mac = ? WHERE seq = 5", [row_hash, key.mac(audit.canonical_bytes(row))])
    con.execute("UPDATE events SET hash = ? WHERE seq = 5", [row_hash])
    assert audit.verify_chain(con, use_anchor=False).ok  # (the anchor names the old hash of seq 5)


def test_payload_is_normalised_and_refuses_non_json(con):
    payload = {"when": datetime(2024, 5, 1, 12, 0), "s": {2, 1}}
    e = audit.append_event(con, kind="rollout", actor="a", reason="r", payload=payload)
    assert e["payload"] == {"when": "2024-05-01T12:00:00.000000", "s": [1, 2]}
    assert audit.list_events(con)[0]["payload"] == e["payload"]
    with pytest.raises(audit.AuditError, match="not JSON"):
        audit.append_event(con, kind="rollout", actor="a", reason="r", payload={"x": float("nan")})
    with pytest.raises(audit.AuditError, match="not JSON"):
        audit.append_event(con, kind="rollout", actor="a", reason="r", payload={"x": object()})
    with pytest.raises(audit.AuditError, match="actor"):
        audit.append_event(con, kind="rollout", actor=" ", reason="r")
    with pytest.raises(audit.AuditError, match="reason"):
        audit.append_event(con, kind="rollout", actor="a", reason="")
    with pytest.raises(audit.AuditError, match="kind"):
        audit.append_event(con, kind="Drop Table", actor="a", reason="r")
    assert audit.head(con)[0] == 1  # refused appends left nothing
    assert audit.verify_chain(con).ok


EDITS = {
    "seq": "99",
    "event_id": "'forged'",
    "ts": "ts + INTERVAL 1 SECOND",
    "actor": "'mallory'",
    "kind": "'override'",
    "workflow": "'other'",
    "release_key": "'support-triage--v9'",
    "reason": "reason || '!'",
    "payload": """'{"i": 42}'""",
    "prev_hash": "repeat('1', 64)",
    "hash": "repeat('f', 64)",
}


@pytest.mark.parametrize("column", audit.COLUMNS)
@pytest.mark.parametrize("seq", [1, 3, 5])
def test_editing_any_column_of_any_row_is_named(con, column, seq):
    _fill(con)
    assert set(EDITS) == set(audit.COLUMNS)
    con.execute(f"UPDATE events SET {column} = {EDITS[column]} WHERE seq = {seq}")
    result = audit.verify_chain(con)
    assert not result.ok
    if column == "seq":
        # renumbered to 99: its old place is a gap and the moved row fails its hash
        assert any(p.kind == "missing" and p.seq == seq for p in result.problems)
        assert any(p.kind == "edited" and p.seq == 99 for p in result.problems)
    else:
        assert any(p.kind == "edited" and p.seq == seq for p in result.problems), result.summary()
    if column == "hash" and seq < 5:
        assert any(p.kind == "broken_link" and p.seq == seq + 1 for p in result.problems)
    assert f"seq {seq}" in result.summary()


def test_payload_rewritten_with_same_content_in_other_key_order_still_verifies(con):
    _fill(con)
    same = '{"z": [1.5, 1e-07, 12345678901234567890], "i": 2, "a": {"y": null, "x": "é<script>"}}'
    con.execute("UPDATE events SET payload = ? WHERE seq = 3", [same])
    assert audit.verify_chain(con).ok  # the hash covers the JSON value, not its spelling


def test_deleting_a_middle_row_is_named(con):
    _fill(con)
    con.execute("DELETE FROM events WHERE seq = 3")
    result = audit.verify_chain(con)
    assert not result.ok and result.checked == 4
    kinds = {(p.kind, p.seq) for p in result.problems}
    assert ("missing", 3) in kinds and ("broken_link", 4) in kinds
    assert "seq 3: this row is missing" in result.summary()


def test_deleting_the_first_row_is_named(con):
    _fill(con)
    con.execute("DELETE FROM events WHERE seq = 1")
    result = audit.verify_chain(con)
    assert {(p.kind, p.seq) for p in result.problems} >= {("missing", 1), ("broken_link", 2)}


def test_swapping_two_rows_is_detected(con):
    _fill(con)
    con.execute("UPDATE events SET seq = -2 WHERE seq = 2")
    con.execute("UPDATE events SET seq = 2 WHERE seq = 3")
    con.execute("UPDATE events SET seq = 3 WHERE seq = -2")
    result = audit.verify_chain(con)
    assert not result.ok
    assert {2, 3} <= set(result.bad_seqs)


def test_deleting_the_last_row_is_detected_with_the_anchor_or_a_recorded_head(con):
    _fill(con)
    recorded = audit.head(con)
    assert audit.read_anchor(con) == audit.Anchor(*recorded, audit.read_anchor(con).mac)
    con.execute("DELETE FROM events WHERE seq = 5")
    assert audit.verify_chain(con, use_anchor=False).ok  # honest limit: a truncated chain is still a chain
    assert [(p.kind, p.seq) for p in audit.verify_chain(con).problems] == [("truncated", 5)]
    result = audit.verify_chain(con, expect_head=recorded, use_anchor=False)
    assert not result.ok
    assert [(p.kind, p.seq) for p in result.problems] == [("truncated", 5)]
    # appending after the truncation reuses seq 5 with another hash: still detected, and the
    # anchor does not move on from a row the log no longer holds
    audit.append_event(con, kind="rollback", actor="x", reason="y")
    result = audit.verify_chain(con, expect_head=recorded, use_anchor=False)
    assert [(p.kind, p.seq) for p in result.problems] == [("head_mismatch", 5)]
    _fill(con, 3)
    assert audit.read_anchor(con).hash == recorded[1]
    assert ("head_mismatch", 5) in [(p.kind, p.seq) for p in audit.verify_chain(con).problems]


def test_a_recomputed_rewrite_without_the_key_fails_its_macs_and_the_recorded_head(con):
    _fill(con)
    recorded = audit.head(con)
    # rewrite row 2 and recompute every hash after it, as someone with write access could
    rows = audit.list_events(con)
    rows[1]["actor"] = "mallory"
    prev = rows[0]["hash"]
    for r in rows[1:]:
        r["prev_hash"] = prev
        r["hash"] = audit.event_hash(r)
        prev = r["hash"]
        con.execute(
            "UPDATE events SET actor = ?, prev_hash = ?, hash = ? WHERE seq = ?",
            [r["actor"], r["prev_hash"], r["hash"], r["seq"]],
        )
    result = audit.verify_chain(con, use_anchor=False)
    assert [(p.kind, p.seq) for p in result.problems] == [("forged", s) for s in (2, 3, 4, 5)]
    result = audit.verify_chain(con, expect_head=recorded, use_anchor=False)
    assert ("head_mismatch", 5) in [(p.kind, p.seq) for p in result.problems]


def test_later_appends_keep_an_old_head_valid(con):
    _fill(con, 3)
    recorded = audit.head(con)
    _fill(con, 2)
    assert audit.verify_chain(con, expect_head=recorded).ok
    assert audit.verify_chain(con, expect_head=(0, audit.GENESIS_HASH)).ok


def test_appends_in_a_rolled_back_transaction_leave_nothing(con):
    _fill(con, 2)
    con.execute("BEGIN TRANSACTION")
    e3 = audit.append_event(con, kind="approval", actor="a", reason="r")
    e4 = audit.append_event(con, kind="approval", actor="a", reason="r")
    assert (e3["seq"], e4["seq"], e4["prev_hash"]) == (3, 4, e3["hash"])
    con.execute("ROLLBACK")
    assert audit.head(con)[0] == 2
    again = audit.append_event(con, kind="approval", actor="b", reason="r")
    assert again["seq"] == 3
    assert audit.verify_chain(con).ok


def test_appends_in_a_committed_caller_transaction_persist(con):
    con.execute("BEGIN TRANSACTION")
    assert audit.in_transaction(con)
    audit.append_event(con, kind="approval", actor="a", reason="r")
    con.execute("INSERT INTO events SELECT 2, 'x', now()::TIMESTAMP, 'a', 'k', NULL, NULL, 'r', NULL, '', '', NULL, NULL")
    con.execute("COMMIT")
    assert not audit.in_transaction(con)
    # the hand-made row 2 is caught
    assert audit.verify_chain(con).bad_seqs == [2]


def test_a_duplicate_seq_raises_instead_of_forking_the_chain(con, monkeypatch):
    audit.append_event(con, kind="approval", actor="a", reason="r")
    # as if another connection had appended between our read of the head and our insert
    monkeypatch.setattr(audit, "head", lambda c: (0, audit.GENESIS_HASH))
    with pytest.raises(Exception, match="(?i)duplicate|constraint"):
        audit.append_event(con, kind="approval", actor="b", reason="r")
    monkeypatch.undo()
    assert not audit.in_transaction(con)  # its own transaction was rolled back
    assert audit.head(con)[0] == 1 and audit.verify_chain(con).ok


def test_list_events_filters_and_limit(con):
    _fill(con)
    assert [e["seq"] for e in audit.list_events(con, workflow="support-triage")] == [1, 2, 3]
    assert [e["seq"] for e in audit.list_events(con, kind="approval")] == [2, 4]
    assert [e["seq"] for e in audit.list_events(con, release_key="support-triage--v2")] == [3]
    assert [e["seq"] for e in audit.list_events(con, workflow="support-triage", kind="gate_decision")] == [1, 3]
    assert [e["seq"] for e in audit.list_events(con, limit=2)] == [4, 5]
    assert audit.list_events(con, limit=0) == []
    assert audit.list_events(con, workflow="nope") == []
    e = audit.list_events(con, workflow="other-flow", limit=1)[0]
    assert e["actor"] == "user4" and e["payload"]["i"] == 4 and isinstance(e["ts"], datetime)


# ---------------------------------------------------------------------------------------------
# Keyed events: forgeries without the key


def _forge(con, **fields):
    """Append an event the way someone with the library or SQL but without the key could: a
    correct seq, link and SHA-256, and no (or a made-up) MAC."""
    seq, prev = audit.head(con)
    row = {"seq": seq + 1, "event_id": "f" * 32, "ts": datetime(2026, 1, 1), "actor": "owner", "kind": "override",
           "workflow": "support-triage", "release_key": "support-triage--v9", "reason": "ship it", "payload": None,
           "prev_hash": prev, **fields}
    row["hash"] = audit.event_hash(row)
    con.execute(f"INSERT INTO events ({', '.join(audit.COLUMNS + audit.KEY_COLUMNS)}) VALUES "
                f"({', '.join('?' for _ in audit.COLUMNS + audit.KEY_COLUMNS)})",
                [row.get(c) for c in audit.COLUMNS] + [row.get("key_id"), row.get("mac")])
    return row


def test_an_appended_forgery_without_the_key_fails_verification(con):
    _fill(con, 3)
    _forge(con)
    result = audit.verify_chain(con, use_anchor=False)
    assert [(p.kind, p.seq) for p in result.problems] == [("forged", 4)]
    assert audit.check_event(con, 4)[1] == "event 4 carries no MAC after keyed events: it was not written by relops"
    # with a key of the forger's own making (same key id even): the MAC does not verify
    mine = audit.AuditKey.from_secret(b"x" * 32)
    con.execute("DELETE FROM events WHERE seq = 4")
    row = _forge(con, key_id=audit.load_key(con).key_id)
    con.execute("UPDATE events SET mac = ? WHERE seq = 4", [mine.mac(audit.canonical_bytes(row))])
    assert [(p.kind, p.seq) for p in audit.verify_chain(con, use_anchor=False).problems] == [("forged", 4)]
    assert "no valid MAC" in audit.check_event(con, 4)[1]
    assert audit.check_event(con, 3) == (audit.list_events(con)[2], None)


def test_editing_the_mac_or_key_id_is_named(con):
    _fill(con, 3)
    con.execute("UPDATE events SET mac = repeat('0', 64) WHERE seq = 2")
    con.execute("UPDATE events SET key_id = 'other' WHERE seq = 3")
    assert [(p.kind, p.seq) for p in audit.verify_chain(con).problems] == [("forged", 2), ("forged", 3)]


def test_the_key_lives_outside_the_warehouse_private_and_is_never_silently_replaced(tmp_path, monkeypatch):
    monkeypatch.delenv(audit.KEY_FILE_ENV, raising=False)
    with open_warehouse(tmp_path / "w.duckdb") as con:
        _fill(con, 2)
        path = audit.key_path(con)
        assert path == tmp_path / "audit" / "audit.key" and (path.stat().st_mode & 0o777) == 0o600
        con.execute("CHECKPOINT")
        assert audit.load_key(con).secret.hex().encode() not in (tmp_path / "w.duckdb").read_bytes()
        path.rename(tmp_path / "elsewhere.key")
        audit._KEYS.clear()
        result = audit.verify_chain(con)
        assert [(p.kind, p.seq) for p in result.problems] == [("no_key", 1)]
        with pytest.raises(audit.AuditError, match="audit key .* is missing, but the event log is keyed"):
            audit.append_event(con, kind="approval", actor="a", reason="r")
        monkeypatch.setenv(audit.KEY_FILE_ENV, str(tmp_path / "elsewhere.key"))
        assert audit.verify_chain(con).ok
        audit.append_event(con, kind="approval", actor="a", reason="r")
        assert audit.verify_chain(con).ok


def test_an_edited_anchor_is_named(con):
    _fill(con, 3)
    path = audit.anchor_path(con)
    doc = json.loads(path.read_text())
    seq2 = audit.list_events(con)[1]
    path.write_text(json.dumps({**doc, "seq": 2, "hash": seq2["hash"]}))
    assert [p.kind for p in audit.verify_chain(con).problems] == ["anchor"]


def test_a_warehouse_in_memory_is_keyed_for_the_life_of_its_process():
    import duckdb

    from relops_pipeline.lib.warehouse import migrate

    con = duckdb.connect()
    migrate(con)
    _fill(con, 3)
    assert audit.key_path(con) is None and audit.verify_chain(con).ok
