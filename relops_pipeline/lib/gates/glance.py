"""A release's gate decision at a glance: the status a release manager reads in the UI (SHIP,
REVIEW waiting, REVIEW approved, BLOCK, BLOCK overridden) and whether it passes, warns or
errors. Pure: the Dagster side (defs/gates) turns it into the `gate_decision` check result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from relops_pipeline.lib.evals.model import split_release_key

PASS, WARN, ERROR = "pass", "warn", "error"


@dataclass(frozen=True)
class DecisionGlance:
    release_key: str
    suite_version: str
    decision: str  # SHIP | REVIEW | BLOCK, as the gate decided
    status: str  # SHIP | REVIEW | REVIEW approved | BLOCK | BLOCK overridden
    outcome: str  # pass | warn | error
    by: str | None  # who approved or overrode
    reason: str | None
    description: str


def glance(release_key: str, suite_version: str | None, decision: str, *, approved: bool = False,
           overridden: bool = False, by: str | None = None, reason: str | None = None) -> DecisionGlance:
    """SHIP and an approved REVIEW pass; a REVIEW waiting for an approver and an overridden
    BLOCK warn (the override ships against failed evidence: it stays visible); a BLOCK errors."""
    workflow, version = split_release_key(release_key)
    suite = suite_version or "none"
    where = f"{release_key} on suite {suite}"
    if decision == "SHIP":
        status, outcome, text = "SHIP", PASS, f"SHIP: {where}"
    elif decision == "REVIEW" and approved:
        status, outcome, text = "REVIEW approved", PASS, f"REVIEW approved by {by}: {where} ({reason})"
    elif decision == "REVIEW":
        status, outcome = "REVIEW", WARN
        text = (f"REVIEW: {where} waits for an owner's approval "
                f"(relops approve {workflow} {version} --by NAME --reason TEXT)")
    elif decision == "BLOCK" and overridden:
        status, outcome, text = "BLOCK overridden", WARN, f"BLOCK overridden by {by}: {where} ({reason})"
    else:
        status, outcome, text = decision, ERROR, f"{decision}: {where}"
    return DecisionGlance(release_key, suite, decision, status, outcome, by if (approved or overridden) else None,
                          reason if (approved or overridden) else None, text)


def glance_of_state(state: Mapping[str, Any], suite_version: str | None) -> DecisionGlance | None:
    """The glance of lib/gates/service.release_state (None without a decision)."""
    if not state.get("decision"):
        return None
    return glance(state["release_key"], suite_version, state["decision"], approved=bool(state.get("approved")),
                  overridden=bool(state.get("overridden")), by=state.get("approved_by"),
                  reason=state.get("approval_reason"))


@dataclass(frozen=True)
class ApprovalEvent:
    """An approval, override or refusal of a release as the audit log recorded it."""

    seq: int
    kind: str  # approval | override | refused
    actor: str
    reason: str
    release_key: str
    ts: str  # ISO 8601 UTC


def approval_events_since(con: Any, after_seq: int, *, limit: int = 200) -> list[ApprovalEvent]:
    """The audit log's approvals, overrides and refusals of a release after event `after_seq`,
    oldest first (lib/audit.py keeps them; this only reads)."""
    from relops_pipeline.lib import audit

    rows = con.execute(
        "SELECT seq, kind, actor, reason, release_key, ts FROM events WHERE seq > ? AND release_key IS NOT NULL "
        "AND kind IN (?, ?, ?) ORDER BY seq LIMIT ?",
        [after_seq, audit.KIND_APPROVAL, audit.KIND_OVERRIDE, audit.KIND_REFUSED, limit]).fetchall()
    return [ApprovalEvent(int(seq), kind, actor, reason, key, ts.isoformat() if hasattr(ts, "isoformat") else str(ts))
            for seq, kind, actor, reason, key, ts in rows]


def latest_gate_suite(con: Any, release_key: str) -> str | None:
    """The suite version of the release's latest gate decision."""
    row = con.execute("SELECT suite_version FROM gate_decisions WHERE release_key = ? ORDER BY decided_at DESC LIMIT 1",
                      [release_key]).fetchone()
    return row[0] if row else None
