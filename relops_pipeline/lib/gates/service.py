"""The gate's bookkeeping: which runs are compared, recording decisions and approvals.

Every decision, approval, override and refused attempt is an event in the hash-chained log
(relops_pipeline/lib/audit.py); `gate_decisions` keeps the full evidence of each decision.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import TYPE_CHECKING, Any

import duckdb

from relops_pipeline.lib import audit, ledger
from relops_pipeline.lib.evals.model import release_key, split_release_key
from relops_pipeline.lib.gates.model import GateResult, Thresholds
from relops_pipeline.lib.timeutil import utc_naive

if TYPE_CHECKING:
    from relops_pipeline.lib.workflows import Workflow


class GateError(ValueError):
    """The gate cannot be evaluated or the request is refused; the message says why."""


@dataclasses.dataclass(frozen=True)
class ThresholdsInForce:
    """The thresholds version a release is held to, as recorded for it (with the warning when
    the workflow file's `thresholds:` block differs from the recorded version)."""

    release_key: str
    workflow: str
    thresholds: Thresholds
    warning: str | None = None


@dataclasses.dataclass(frozen=True)
class EvalRunRef:
    """An eval run as the gate picks it: which suite version, source, validity and size."""

    eval_run_id: str
    suite_version: str
    suite_hash: str | None
    source: str
    valid: bool
    invalid_reason: str | None
    samples_per_case: int | None
    cases: int
    samples: int
    errors: int = 0


@dataclasses.dataclass(frozen=True)
class GateRecord:
    """A recorded gate decision: its result (rebuilt from the stored JSON) and report files."""

    gate_id: str
    decision: str
    result: GateResult
    report_md: str | None
    report_html: str | None
    report_json: str | None
    dagster_run_id: str | None


def record_thresholds_in_force(con: duckdb.DuckDBPyConnection, key: str, wf: Workflow, *, dagster_run_id: str | None) -> ThresholdsInForce:
    """Seed the workflow file's thresholds (once) and record the version in force for the release."""
    from relops_pipeline.lib.gates.thresholds import current_thresholds, seed_from_workflow_config

    warning = seed_from_workflow_config(con, wf.name, wf.thresholds, wf.owner, where=f"{wf.path}: thresholds")
    th = current_thresholds(con, wf.name)
    con.execute(
        "INSERT INTO release_thresholds VALUES (?, ?, ?, ?, ?)",
        [key, wf.name, th.version, dagster_run_id, utc_naive()],
    )
    return ThresholdsInForce(key, wf.name, th, warning)


def thresholds_in_force(con: duckdb.DuckDBPyConnection, key: str, workflow: str) -> Thresholds:
    """The version last recorded for the release; the workflow's current one when none was."""
    from relops_pipeline.lib.gates.thresholds import current_thresholds, thresholds_at

    row = con.execute(
        "SELECT thresholds_version FROM release_thresholds WHERE release_key = ? ORDER BY recorded_at DESC LIMIT 1", [key]
    ).fetchall()
    return thresholds_at(con, workflow, row[0][0]) if row else current_thresholds(con, workflow)


def latest_gate_decision(con: duckdb.DuckDBPyConnection, key: str, dagster_run_id: str | None = None) -> GateRecord | None:
    """The release's latest gate decision (of that Dagster run, when given), or None."""
    from relops_pipeline.lib.results import from_json

    sql = "SELECT gate_id, decision, result, report_md, report_html, report_json, dagster_run_id FROM gate_decisions WHERE release_key = ?"
    params = [key]
    if dagster_run_id:
        sql += " AND dagster_run_id = ?"
        params.append(dagster_run_id)
    row = con.execute(sql + " ORDER BY decided_at DESC LIMIT 1", params).fetchall()
    if not row:
        return None
    gate_id, decision, result, md, html, js, run_id = row[0]
    return GateRecord(gate_id, decision, from_json(GateResult, json.loads(result)), md, html, js, run_id)


def latest_eval_run(
    con: duckdb.DuckDBPyConnection, key: str, suite_version: str | None = None, *, valid_only: bool = False
) -> EvalRunRef | None:
    """The newest eval run of a release (on a suite version, when given; valid ones only, when asked)."""
    sql = (
        "SELECT eval_run_id, suite_version, suite_hash, source, valid, invalid_reason, samples_per_case, cases, samples, "
        "coalesce(errors, 0) FROM eval_runs WHERE release_key = ?"
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
    return EvalRunRef(*row[0])


def release_state(con: duckdb.DuckDBPyConnection, key: str) -> dict[str, Any]:
    """The latest gate decision of a release and whether it was approved or overridden since."""
    cols = ("gate_id", *ledger.GATE_FIELDS, "event_seq", "decided_at")
    rows = con.execute(
        f"SELECT {', '.join(cols)} FROM gate_decisions WHERE release_key = ? ORDER BY decided_at DESC LIMIT 1",
        [key],
    ).fetchall()
    newest_event = con.execute("SELECT max(seq) FROM events WHERE release_key = ? AND kind = ?", [key, audit.KIND_GATE_DECISION]).fetchone()
    newest = newest_event[0] if newest_event else None
    if not rows:
        tampered = f"gate decision event {newest} of {key} has no row: it was deleted" if newest is not None else None
        return {
            "release_key": key,
            "decision": None,
            "approved": False,
            "overridden": False,
            "gate_id": None,
            "releasable": False,
            "tampered": tampered,
        }
    row = dict(zip(cols, rows[0], strict=True))
    gate_id, decision, decided_at, seq = row["gate_id"], row["decision"], row["decided_at"], row["event_seq"]
    approvals = con.execute(
        "SELECT kind, actor, reason, ts, seq FROM events WHERE release_key = ? AND kind IN (?, ?) AND seq > ? ORDER BY seq",
        [key, audit.KIND_APPROVAL, audit.KIND_OVERRIDE, seq or 0],
    ).fetchall()
    # What ships is decided from this row and these events: believe them only when the keyed
    # log backs them (an edited decision, a forged approval, a newer decision's row deleted).
    tampered = (
        ledger.gate_problem(con, row)
        or ledger.approval_problem(con, [a[4] for a in approvals])
        or (
            f"the newest gate decision event of {key} is {newest}, but its row names event {seq}: a newer decision's row was deleted"
            if newest is not None and newest != seq
            else None
        )
    )
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
        # may it go out? SHIP, an approved REVIEW, or an overridden BLOCK — backed by the log
        "releasable": tampered is None
        and (decision == "SHIP" or (decision == "REVIEW" and approved) or (decision == "BLOCK" and overridden)),
        "tampered": tampered,
    }


def _invalid_summary(con: duckdb.DuckDBPyConnection, gate_id: str | None) -> str:
    """Why an INVALID gate's evidence is invalid, in one line: the reason and the top error cause."""
    row = con.execute("SELECT result FROM gate_decisions WHERE gate_id = ?", [gate_id]).fetchone()
    try:
        errors = (json.loads(row[0]).get("evidence") or {}).get("candidate_errors") or {} if row and row[0] else {}
    except (ValueError, AttributeError):
        errors = {}
    parts = [str(errors["invalid_reason"])] if errors.get("invalid_reason") else []
    top = (errors.get("top_causes") or [None])[0]
    if isinstance(top, dict):
        parts.append(f"{top.get('count')} of {top.get('samples')} samples: {top.get('cause')}")
    return "; ".join(parts) or "the candidate's eval run is invalid"


def invalid_run_since(con: duckdb.DuckDBPyConnection, key: str, since: str | None) -> tuple[str, str | None] | None:
    """(run id, invalid reason) of the release's newest eval run when it is invalid and finished
    after `since` (an ISO timestamp, the decision's); None otherwise."""
    if since is None:
        return None
    row = con.execute(
        "SELECT eval_run_id, valid, invalid_reason, finished_at > ?::TIMESTAMP FROM eval_runs WHERE release_key = ? "
        "ORDER BY finished_at DESC LIMIT 1",
        [since, key],
    ).fetchone()
    if row is None or row[1] or not row[3]:
        return None
    return row[0], row[2]


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
    from relops_pipeline.lib.results import to_json

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
                gate_id,
                key,
                result.workflow,
                result.version,
                result.decision,
                result.baseline_version,
                candidate_run,
                baseline_run,
                suite_version,
                thresholds_version,
                json.dumps(result.reasons),
                json.dumps(to_json(result), default=str),
                reports.get("md"),
                reports.get("html"),
                reports.get("json"),
                event["seq"],
                dagster_run_id,
                utc_naive(),
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
    recorded all the same. Invalid evidence (an INVALID gate, or an invalid eval run of the
    release newer than its decision) is never approved nor overridden: there is nothing to judge
    until the evals are re-run.
    """
    workflow, _version = split_release_key(key)
    if not by or not reason or not reason.strip():
        raise GateError("an approval needs --by NAME and --reason TEXT")
    state = release_state(con, key)
    if state["tampered"]:
        raise audit.TamperedError(f"{key}: {state['tampered']}; nothing was recorded (see `relops audit verify`)")

    def refuse(why: str) -> None:
        audit.append_event(
            con,
            kind=audit.KIND_REFUSED,
            actor=by,
            reason=f"{why} (asked: {reason})",
            workflow=workflow,
            release_key=key,
            payload={"request": "override" if override else "approve", "decision": state["decision"]},
        )
        raise GateError(why)

    if by not in approvers:
        refuse(f"{by} may not approve {key}: approvers are {', '.join(approvers) or 'nobody (set an owner)'}")
    decision = state["decision"]
    if decision is None:
        refuse(f"{key} has no gate decision yet: run `relops gate {workflow} {_version}` first")
    if decision == "INVALID":
        refuse(
            f"{key}'s evidence is invalid ({_invalid_summary(con, state['gate_id'])}), so there is no decision to "
            f"{'override' if override else 'approve'}: fix the cause, re-run the evals "
            f"(`relops eval {workflow} {_version}`) and the gate (`relops gate {workflow} {_version}`)"
        )
    newer = invalid_run_since(con, key, state["decided_at"])
    if newer is not None:
        refuse(
            f"{key}'s newest eval run {newer[0]} is invalid ({newer[1] or 'no reason recorded'}) and newer than its "
            f"gate decision: re-run the evals and the gate before anyone approves it"
        )
    if decision == "SHIP":
        refuse(f"{key} already SHIPs: nothing to approve")
    if decision == "BLOCK" and not override:
        refuse(f"{key} is BLOCKed: only an explicit --override can ship it, and it is recorded as such")
    kind = audit.KIND_OVERRIDE if decision == "BLOCK" else audit.KIND_APPROVAL
    event = audit.append_event(
        con,
        kind=kind,
        actor=by,
        reason=reason,
        workflow=workflow,
        release_key=key,
        payload={"gate_id": state["gate_id"], "decision": decision, "override": decision == "BLOCK"},
    )
    return {"release_key": key, "kind": kind, "decision": decision, "by": by, "event_seq": event["seq"]}
