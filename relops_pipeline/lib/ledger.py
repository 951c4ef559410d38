"""The tables commands act on, checked against the keyed event log.

What ships and what is live are decided from tables — `gate_decisions` (may this release go
out?), `registry_state` (what serves: the pointer is written from it), the versioned
configurations (`threshold_versions`, `alert_rule_versions`) and `rollbacks` — and every row
of them is written in the same transaction as an event of the log (lib/audit.py) that carries
the same facts. The event log is the source of truth: a row is believed only when it agrees
with its event, and that event verifies (hash and MAC under the audit key). So:

- an edited row (`UPDATE gate_decisions SET decision='SHIP'`, `UPDATE registry_state SET
  live=...`) disagrees with its event;
- a forged row together with a forged event fails the event's MAC (no key, no event);
- a deleted registry row, or a registry row left behind after newer events, disagrees with the
  newest rollout/rollback event of its workflow;
- a truncated log is caught by the anchor (`audit.anchor_problem`).

`registry_problem`, `gate_problem` and `approval_problem` are what commands call before they
act (rollout, rollback, pointer sync, approve); they return the reason not to believe the row,
and the caller raises `audit.TamperedError`. `disagreements` replays every table for `relops
audit verify` and names each row that disagrees.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import duckdb

from relops_pipeline.lib import audit

# Events that set a workflow's registry state: their payload carries `seq` and `after` (the
# routing part of the state, RegistryState.releases()).
KIND_REGISTRY_ADOPTED = "registry_adopted"
REGISTRY_KINDS = (audit.KIND_ROLLOUT, audit.KIND_ROLLBACK, KIND_REGISTRY_ADOPTED)
ROUTING = ("live", "canary", "canary_percent", "shadow", "stage", "last_known_good")


@dataclass(frozen=True)
class Disagreement:
    """One table row that the event log does not back."""

    table: str
    row: str  # the row's key, e.g. "doc-qa" or "gate-2026...-ab12cd34"
    event_seq: int | None
    problem: str

    def line(self) -> str:
        return f"{self.table} {self.row}: {self.problem}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _payload(event: dict[str, Any] | None) -> dict[str, Any]:
    payload = (event or {}).get("payload")
    return payload if isinstance(payload, dict) else {}


def _differences(expected: dict[str, Any], found: dict[str, Any], names: Iterable[str]) -> list[str]:
    return [f"{n} is {found.get(n)!r}, its event says {expected.get(n)!r}" for n in names
            if expected.get(n) != found.get(n)]


# ---------------------------------------------------------------------------------------------
# Registry state


def latest_registry_event_seq(con: duckdb.DuckDBPyConnection, workflow: str) -> int | None:
    row = con.execute(
        f"SELECT max(seq) FROM events WHERE workflow = ? AND kind IN ({', '.join('?' for _ in REGISTRY_KINDS)})",
        [workflow, *REGISTRY_KINDS],
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def registry_problem(con: duckdb.DuckDBPyConnection, workflow: str, state: Any) -> str | None:
    """Why the workflow's registry row (`state`, a RegistryState) is not to be believed, or None.

    It must name the newest rollout/rollback event of its workflow, that event must verify, and
    its seq and routing (live, canary, percent, shadow, stage, last known good) must be the
    event's `seq` and `after`. No row and no event: nothing recorded, nothing to disagree."""
    latest = latest_registry_event_seq(con, workflow)
    if state.seq == 0:
        if latest is None:
            return None
        return f"no registry row for {workflow}, but event {latest} set its state: the row was deleted"
    if latest is None:
        return f"registry row for {workflow} (seq {state.seq}) has no rollout or rollback event: it was written by hand"
    if state.event_seq != latest:
        return (f"registry row for {workflow} names event {state.event_seq}, but the newest rollout/rollback "
                f"event of {workflow} is {latest}: the row was edited or replaced")
    event, why = audit.check_event(con, latest)
    if why:
        return f"registry row for {workflow}: {why}"
    payload = _payload(event)
    after_value = payload.get("after")
    after: dict[str, Any] = after_value if isinstance(after_value, dict) else {}
    found = {"seq": state.seq, **state.releases()}
    diffs = _differences({"seq": payload.get("seq"), **after}, found, ("seq", *ROUTING))
    if diffs:
        return f"registry row for {workflow} disagrees with event {latest}: {'; '.join(diffs)}"
    return None


# ---------------------------------------------------------------------------------------------
# Gate decisions and approvals

GATE_FIELDS = ("release_key", "decision", "baseline_version", "suite_version", "thresholds_version",
               "candidate_eval_run_id", "baseline_eval_run_id")


def gate_problem(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> str | None:
    """Why a `gate_decisions` row (a dict with its columns) is not to be believed, or None: it
    must name a verifying `gate_decision` event with the same gate id, release, decision,
    baseline, suite and thresholds version."""
    gate_id = row.get("gate_id")
    event, why = audit.check_event(con, row.get("event_seq"))
    if why:
        return f"gate decision {gate_id}: {why}"
    assert event is not None
    if event["kind"] != audit.KIND_GATE_DECISION:
        return f"gate decision {gate_id} names event {event['seq']}, a {event['kind']} event"
    payload = _payload(event)
    expected = {**payload, "release_key": event["release_key"]}
    if payload.get("gate_id") != gate_id:
        return f"gate decision {gate_id} names event {event['seq']}, which records gate {payload.get('gate_id')}"
    diffs = _differences(expected, row, GATE_FIELDS)
    return f"gate decision {gate_id} disagrees with event {event['seq']}: {'; '.join(diffs)}" if diffs else None


def approval_problem(con: duckdb.DuckDBPyConnection, seqs: Iterable[int]) -> str | None:
    """Why one of the approval/override events at `seqs` is not to be believed, or None."""
    for seq in seqs:
        _event, why = audit.check_event(con, seq)
        if why:
            return f"approval: {why}"
    return None


# ---------------------------------------------------------------------------------------------
# Replaying every table


def _gate_disagreements(con: duckdb.DuckDBPyConnection) -> list[Disagreement]:
    cols = ("gate_id", *GATE_FIELDS, "event_seq")
    out = []
    rows = con.execute(f"SELECT {', '.join(cols)} FROM gate_decisions ORDER BY decided_at, gate_id").fetchall()
    named = set()
    for values in rows:
        row = dict(zip(cols, values, strict=True))
        named.add(row["event_seq"])
        problem = gate_problem(con, row)
        if problem:
            out.append(Disagreement("gate_decisions", row["gate_id"], row["event_seq"], problem))
    for seq, key, payload in con.execute(
        "SELECT seq, release_key, payload FROM events WHERE kind = ? ORDER BY seq", [audit.KIND_GATE_DECISION]
    ).fetchall():
        if seq not in named:
            gate_id = json.loads(payload).get("gate_id") if payload else None
            out.append(Disagreement("gate_decisions", str(gate_id), int(seq),
                                    f"event {seq} records gate {gate_id} of {key}, which has no row: it was deleted"))
    return out


def _registry_disagreements(con: duckdb.DuckDBPyConnection) -> list[Disagreement]:
    from relops_pipeline.lib.registry.state import RegistryState, get_state

    workflows = {r[0] for r in con.execute("SELECT workflow FROM registry_state").fetchall()}
    workflows |= {r[0] for r in con.execute(
        f"SELECT DISTINCT workflow FROM events WHERE workflow IS NOT NULL AND kind IN "
        f"({', '.join('?' for _ in REGISTRY_KINDS)})", list(REGISTRY_KINDS)).fetchall()}
    out = []
    for workflow in sorted(workflows):
        problem: str | None
        try:
            state = get_state(con, workflow)
        except (TypeError, ValueError) as exc:
            state, problem = RegistryState(workflow=workflow), f"unreadable registry row: {exc}"
        else:
            problem = registry_problem(con, workflow, state)
        if problem:
            out.append(Disagreement("registry_state", workflow, state.event_seq, problem))
    return out


def _rollback_disagreements(con: duckdb.DuckDBPyConnection) -> list[Disagreement]:
    out = []
    for rollback_id, workflow, source, target, performed, seq in con.execute(
        "SELECT rollback_id, workflow, from_release, to_release, performed, event_seq FROM rollbacks "
        "ORDER BY recorded_at, rollback_id"
    ).fetchall():
        event, why = audit.check_event(con, seq)
        if why:
            out.append(Disagreement("rollbacks", rollback_id, seq, why))
            continue
        payload = _payload(event)
        if not performed:  # a recommendation: its event names the rollback id only
            if payload.get("rollback_id") != rollback_id:
                out.append(Disagreement("rollbacks", rollback_id, seq, f"event {seq} records another rollback"))
            continue
        expected = {"rollback_id": payload.get("rollback_id"), "workflow": (event or {}).get("workflow"),
                    "from": payload.get("from"), "to": payload.get("to")}
        found = {"rollback_id": rollback_id, "workflow": workflow, "from": source, "to": target}
        diffs = _differences(expected, found, expected)
        if diffs:
            out.append(Disagreement("rollbacks", rollback_id, seq, f"disagrees with event {seq}: {'; '.join(diffs)}"))
    return out


def disagreements(con: duckdb.DuckDBPyConnection) -> list[Disagreement]:
    """Every row of gate_decisions, registry_state and rollbacks that the event log does not
    back (the versioned configurations are checked by their own `verify`, see `relops audit
    verify`)."""
    return _gate_disagreements(con) + _registry_disagreements(con) + _rollback_disagreements(con)
