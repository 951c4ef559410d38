"""The gate's bookkeeping: which runs are compared, recording decisions and approvals.

Every decision, approval, override and refused attempt is an event in the hash-chained log
(relops_pipeline/lib/audit.py); `gate_decisions` keeps the full evidence of each decision.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import duckdb

from relops_pipeline.lib import audit
from relops_pipeline.lib.evals.model import release_key, split_release_key
from relops_pipeline.lib.gates.model import GateResult
from relops_pipeline.lib.timeutil import utc_naive


class GateError(ValueError):
    """The gate cannot be evaluated or the request is refused; the message says why."""


def latest_eval_run(
    con: duckdb.DuckDBPyConnection, key: str, suite_version: str | None = None, *, valid_only: bool = False
) -> dict | None:
    """The newest eval run of a release (on a suite version, when given; valid ones only, when asked)."""
    sql = (
        "SELECT eval_run_id, suite_version, suite_hash, source, valid, invalid_reason, samples_per_case, cases, samples "
        "FROM eval_runs WHERE release_key = ?"
    )
    params: list[Any] = [key]
    if suite_version:
        sql += " AND suite_version = ?"
        params.append(suite_version)
    if valid_only:
        sql += " AND valid"
    row = con.execute(sql + " ORDER BY finished_at DESC LIMIT 1", params).fetchall()
    if not row:
        return None
    cols = ("eval_run_id", "suite_version", "suite_hash", "source", "valid", "invalid_reason", "samples_per_case", "cases", "samples")
    return dict(zip(cols, row[0], strict=False))


def release_state(con: duckdb.DuckDBPyConnection, key: str) -> dict[str, Any]:
    """The latest gate decision of a release and whether it was approved or overridden since."""
    row = con.execute(
        "SELECT gate_id, decision, decided_at, event_seq FROM gate_decisions WHERE release_key = ? "
        "ORDER BY decided_at DESC LIMIT 1",
        [key],
    ).fetchall()
    if not row:
        return {"release_key": key, "decision": None, "approved": False, "overridden": False, "gate_id": None}
    gate_id, decision, decided_at, seq = row[0]
    approvals = con.execute(
        "SELECT kind, actor, reason, ts FROM events WHERE release_key = ? AND kind IN (?, ?) AND seq > ? ORDER BY seq",
        [key, audit.KIND_APPROVAL, audit.KIND_OVERRIDE, seq or 0],
    ).fetchall()
    approved = any(k == audit.KIND_APPROVAL for k, *_ in approvals)
    overridden = any(k == audit.KIND_OVERRIDE for k, *_ in approvals)
    last = approvals[-1] if approvals else None
    return {
        "release_key": key,
        "decision": decision,
        "gate_id": gate_id,
        "decided_at": decided_at.isoformat(),
        "approved": approved,
        "overridden": overridden,
        "approved_by": last[1] if last else None,
        "approval_reason": last[2] if last else None,
        # may it go out? SHIP, an approved REVIEW, or an overridden BLOCK
        "releasable": decision == "SHIP" or (decision == "REVIEW" and approved) or (decision == "BLOCK" and overridden),
    }


def default_baseline(con: duckdb.DuckDBPyConnection, workflow: str, key: str, live_version: str | None = None) -> str | None:
    """The version to compare against: the live release when known, else the newest other
    release of the workflow that was releasable (SHIP or approved), registered before this one."""
    if live_version and release_key(workflow, live_version) != key:
        return live_version
    rows = con.execute(
        "SELECT r.release_key, r.version FROM releases r WHERE r.workflow = ? AND r.release_key <> ? "
        "AND r.registered_at <= coalesce((SELECT registered_at FROM releases WHERE release_key = ?), now()::TIMESTAMP) "
        "ORDER BY r.registered_at DESC, r.release_key DESC",
        [workflow, key, key],
    ).fetchall()
    for other_key, version in rows:
        if release_state(con, other_key).get("releasable"):
            return version
    return None


def record_decision(
    con: duckdb.DuckDBPyConnection,
    result: GateResult,
    *,
    reports: dict[str, str],
    candidate_run: str | None,
    baseline_run: str | None,
    suite_version: str | None,
    thresholds_version: int | None,
    dagster_run_id: str | None,
    actor: str = "relops-gate",
) -> dict[str, Any]:
    """Append the decision to the event log and keep its evidence, in one transaction."""
    key = release_key(result.workflow, result.version)
    gate_id = f"gate-{utc_naive():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    with audit.transaction(con):
        event = audit.append_event(
            con,
            kind=audit.KIND_GATE_DECISION,
            actor=actor,
            reason="; ".join(result.reasons)[:2000] or result.decision,
            workflow=result.workflow,
            release_key=key,
            payload={
                "gate_id": gate_id,
                "decision": result.decision,
                "baseline_version": result.baseline_version,
                "candidate_eval_run_id": candidate_run,
                "baseline_eval_run_id": baseline_run,
                "suite_version": suite_version,
                "thresholds_version": thresholds_version,
            },
        )
        con.execute(
            "INSERT INTO gate_decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                gate_id, key, result.workflow, result.version, result.decision, result.baseline_version, candidate_run,
                baseline_run, suite_version, thresholds_version, json.dumps(result.reasons),
                json.dumps(result.as_dict(), default=str), reports.get("md"), reports.get("html"), reports.get("json"),
                event["seq"], dagster_run_id, utc_naive(),
            ],
        )
    return {"gate_id": gate_id, "event_seq": event["seq"]}


def approve(
    con: duckdb.DuckDBPyConnection,
    key: str,
    *,
    approvers: list[str],
    by: str,
    reason: str,
    override: bool = False,
) -> dict[str, Any]:
    """Turn a REVIEW into an approved ship, or override a BLOCK (with override=True).

    Only the workflow's owner and delegates may; anyone else is refused, and the attempt is
    recorded all the same.
    """
    workflow, _version = split_release_key(key)
    if not by or not reason or not reason.strip():
        raise GateError("an approval needs --by NAME and --reason TEXT")
    state = release_state(con, key)

    def refuse(why: str) -> None:
        audit.append_event(
            con, kind=audit.KIND_REFUSED, actor=by, reason=f"{why} (asked: {reason})", workflow=workflow,
            release_key=key, payload={"request": "override" if override else "approve", "decision": state["decision"]},
        )
        raise GateError(why)

    if by not in approvers:
        refuse(f"{by} may not approve {key}: approvers are {', '.join(approvers) or 'nobody (set an owner)'}")
    decision = state["decision"]
    if decision is None:
        refuse(f"{key} has no gate decision yet: run `relops gate {workflow} {_version}` first")
    if decision == "SHIP":
        refuse(f"{key} already SHIPs: nothing to approve")
    if decision == "BLOCK" and not override:
        refuse(f"{key} is BLOCKed: only an explicit --override can ship it, and it is recorded as such")
    kind = audit.KIND_OVERRIDE if decision == "BLOCK" else audit.KIND_APPROVAL
    event = audit.append_event(
        con, kind=kind, actor=by, reason=reason, workflow=workflow, release_key=key,
        payload={"gate_id": state["gate_id"], "decision": decision, "override": decision == "BLOCK"},
    )
    return {"release_key": key, "kind": kind, "decision": decision, "by": by, "event_seq": event["seq"]}
