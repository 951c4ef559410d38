"""Proposed changes, kept as drafts until a person accepts or rejects them.

The monthly maintenance assets (suite proposals from incidents, threshold ratchets, alert
calibration) never change anything themselves: each writes a row of `proposals` (warehouse
migration 7) — what it would change (`payload`), why (`evidence`, e.g. a backtest) and a
report — and a maintainer accepts it (`relops suite accept`, `relops thresholds accept`,
`relops alerts accept`). Accepting and rejecting are events in the hash-chained log with the
actor; the change itself (a new suite, thresholds or alert-rules version) is made by the
module that owns it, in the same transaction.

A proposal's id is derived from its content (`<kind>-<workflow>-<period>-<hash>`), so
re-running the asset with the same evidence finds the same draft instead of adding one; a
new draft of the same kind for the same workflow supersedes the older drafts, so at most one
draft per kind and workflow can be accepted (a superseded proposal whose evidence comes back
becomes the draft again). Every status change is an event.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import duckdb

from relops_pipeline.lib import audit
from relops_pipeline.lib.evals.model import validate_key

KINDS = ("suite", "thresholds", "alert_rules")
STATUSES = ("draft", "accepted", "rejected", "superseded")
KIND_PROPOSAL_ACCEPTED = "proposal_accepted"
KIND_PROPOSAL_REJECTED = "proposal_rejected"
KIND_PROPOSAL_STATUS = "proposal_status"

COLUMNS = (
    "proposal_id", "kind", "workflow", "period", "title", "status", "base_version", "payload", "evidence",
    "content_hash", "report_md", "report_path", "dagster_run_id", "created_at", "decided_by", "decided_at",
    "decision_reason", "result_version", "event_seq",
)


class ProposalError(ValueError):
    """A proposal request is invalid: unknown id, not a draft any more, missing actor."""


@dataclasses.dataclass(frozen=True)
class Proposal:
    """A proposal as recorded (a `proposals` row, payload and evidence decoded) and, as made by
    `create_proposal`, whether that call recorded it (`created`; False: the identical proposal
    already existed). What the monthly proposers (suite cases, threshold ratchet, alert
    calibration) return."""

    proposal_id: str
    kind: str
    workflow: str
    period: str
    title: str
    status: str
    base_version: str | None
    payload: dict[str, Any] | None
    evidence: dict[str, Any]
    content_hash: str
    report_md: str | None
    report_path: str | None
    dagster_run_id: str | None
    created_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_reason: str | None = None
    result_version: str | None = None
    event_seq: int | None = None
    created: bool = False

    @classmethod
    def from_row(cls, row: Mapping[str, Any], *, created: bool = False) -> Proposal:
        """The proposal of a get_proposal row."""
        return cls(**{k: row[k] for k in COLUMNS}, created=created)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _row(values: tuple) -> dict[str, Any]:
    row = dict(zip(COLUMNS, values, strict=False))
    for key in ("payload", "evidence"):
        row[key] = json.loads(row[key]) if row[key] else ({} if key == "evidence" else None)
    return row


def get_proposal(con: duckdb.DuckDBPyConnection, proposal_id: str) -> dict[str, Any] | None:
    """One proposal (payload and evidence decoded), or None."""
    rows = con.execute(f"SELECT {', '.join(COLUMNS)} FROM proposals WHERE proposal_id = ?", [proposal_id]).fetchall()
    return _row(rows[0]) if rows else None


def _written_proposal(con: duckdb.DuckDBPyConnection, proposal_id: str) -> dict[str, Any]:
    """A proposal this module has just written or checked (so it exists)."""
    row = get_proposal(con, proposal_id)
    assert row is not None, proposal_id
    return row


def require_draft(con: duckdb.DuckDBPyConnection, proposal_id: str, kind: str | None = None) -> dict[str, Any]:
    """The proposal, which must exist, be of `kind` (when given) and still be a draft."""
    row = get_proposal(con, proposal_id)
    if row is None:
        raise ProposalError(f"no proposal {proposal_id!r}: `relops proposals` lists them")
    if kind is not None and row["kind"] != kind:
        raise ProposalError(f"proposal {proposal_id} is a {row['kind']} proposal, not a {kind} proposal")
    if row["status"] != "draft":
        by = f" by {row['decided_by']}" if row["decided_by"] else ""
        raise ProposalError(f"proposal {proposal_id} is {row['status']}{by}: only a draft can be accepted or rejected")
    return row


def list_proposals(
    con: duckdb.DuckDBPyConnection,
    *,
    kind: str | None = None,
    workflow: str | None = None,
    status: str | None = None,
) -> list[dict[str, Any]]:
    """Proposals, newest first, optionally filtered."""
    where, params = [], []
    for name, value, allowed in (("kind", kind, KINDS), ("status", status, STATUSES), ("workflow", workflow, None)):
        if value is None:
            continue
        if allowed is not None and value not in allowed:
            raise ProposalError(f"{name} {value!r}: one of {', '.join(allowed)}")
        where.append(f"{name} = ?")
        params.append(value)
    sql = f"SELECT {', '.join(COLUMNS)} FROM proposals"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return [_row(r) for r in con.execute(sql + " ORDER BY created_at DESC, proposal_id", params).fetchall()]


def create_proposal(
    con: duckdb.DuckDBPyConnection,
    *,
    kind: str,
    workflow: str,
    period: str,
    title: str,
    payload: Mapping[str, Any],
    evidence: Mapping[str, Any] | None = None,
    base_version: str | None = None,
    report_md: str | None = None,
    report_path: str | None = None,
    dagster_run_id: str | None = None,
) -> Proposal:
    """Record a draft (or find the identical one); `created` says which.

    Identity is the content (kind, workflow, base version, payload): the same proposal made
    again — a re-run, a later month with the same evidence — is the existing row, whatever its
    status, so a rejected proposal is not proposed again. Older drafts of the same kind for the
    workflow become `superseded` when a different one is recorded."""
    if kind not in KINDS:
        raise ProposalError(f"kind {kind!r}: one of {', '.join(KINDS)}")
    validate_key("workflow", workflow)
    if not isinstance(title, str) or not title.strip():
        raise ProposalError("a proposal needs a title")
    digest = hashlib.sha256(_json({"kind": kind, "workflow": workflow, "base": base_version,
                                   "payload": payload}).encode()).hexdigest()
    with audit.transaction(con):
        same = con.execute(
            f"SELECT {', '.join(COLUMNS)} FROM proposals WHERE kind = ? AND workflow = ? AND content_hash = ? "
            "ORDER BY created_at DESC LIMIT 1", [kind, workflow, digest]).fetchall()
        if same:
            row = _row(same[0])
            if row["status"] == "superseded":  # the evidence came back to it: it is the live draft again
                _supersede_drafts(con, kind, workflow, by=row["proposal_id"])
                _set_status(con, row, "draft", f"proposed again: {row['title']}")
                row = _written_proposal(con, row["proposal_id"])
            return Proposal.from_row(row, created=False)
        proposal_id = f"{kind.replace('_', '-')}-{workflow}-{period}-{digest[:8]}"
        _supersede_drafts(con, kind, workflow, by=proposal_id)
        con.execute(
            f"INSERT INTO proposals ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})",
            [proposal_id, kind, workflow, period, title.strip(), "draft", base_version, _json(payload),
             _json(evidence or {}), digest, report_md, report_path, dagster_run_id, _now(), None, None, None, None,
             None],
        )
    return Proposal.from_row(_written_proposal(con, proposal_id), created=True)


def _set_status(con: duckdb.DuckDBPyConnection, row: dict[str, Any], status: str, reason: str) -> None:
    audit.append_event(con, kind=KIND_PROPOSAL_STATUS, actor="relops", reason=reason, workflow=row["workflow"],
                       payload={"proposal_id": row["proposal_id"], "from": row["status"], "to": status})
    con.execute("UPDATE proposals SET status = ? WHERE proposal_id = ?", [status, row["proposal_id"]])


def _supersede_drafts(con: duckdb.DuckDBPyConnection, kind: str, workflow: str, *, by: str) -> None:
    """At most one draft per kind and workflow: the others become superseded (each an event)."""
    for values in con.execute(f"SELECT {', '.join(COLUMNS)} FROM proposals WHERE kind = ? AND workflow = ? "
                              "AND status = 'draft' AND proposal_id <> ?", [kind, workflow, by]).fetchall():
        _set_status(con, _row(values), "superseded", f"superseded by {by}")


def _decide(con, proposal_id: str, *, status: str, kind_event: str, by: str, reason: str,
            kind: str | None, result_version: str | None) -> dict[str, Any]:
    if not isinstance(by, str) or not by.strip():
        raise ProposalError("accepting or rejecting a proposal needs who (--by NAME)")
    if not isinstance(reason, str) or not reason.strip():
        raise ProposalError("accepting or rejecting a proposal needs a reason")
    with audit.transaction(con):
        row = require_draft(con, proposal_id, kind)
        event = audit.append_event(
            con, kind=kind_event, actor=by.strip(), reason=reason.strip(), workflow=row["workflow"],
            payload={"proposal_id": proposal_id, "proposal_kind": row["kind"], "base_version": row["base_version"],
                     "result_version": result_version, "content_hash": row["content_hash"]},
        )
        con.execute(
            "UPDATE proposals SET status = ?, decided_by = ?, decided_at = ?, decision_reason = ?, "
            "result_version = ?, event_seq = ? WHERE proposal_id = ?",
            [status, by.strip(), _now(), reason.strip(), result_version, event["seq"], proposal_id],
        )
    return _written_proposal(con, proposal_id)


def mark_accepted(
    con: duckdb.DuckDBPyConnection,
    proposal_id: str,
    *,
    by: str,
    reason: str,
    result_version: str,
    kind: str | None = None,
) -> dict[str, Any]:
    """Mark a draft accepted with the version it produced, as a `proposal_accepted` event.
    Call it inside the transaction that makes the change, so both happen or neither does."""
    return _decide(con, proposal_id, status="accepted", kind_event=KIND_PROPOSAL_ACCEPTED, by=by, reason=reason,
                   kind=kind, result_version=result_version)


def reject_proposal(
    con: duckdb.DuckDBPyConnection, proposal_id: str, *, by: str, reason: str, kind: str | None = None
) -> dict[str, Any]:
    """Reject a draft, with who and why (a `proposal_rejected` event); nothing else changes."""
    return _decide(con, proposal_id, status="rejected", kind_event=KIND_PROPOSAL_REJECTED, by=by, reason=reason,
                   kind=kind, result_version=None)
