"""Incidents: a production problem with a workflow's release, open until someone closes it.

Rows of `incidents` (warehouse migration 6); opening and closing are also events in the
hash-chained log (`incident_opened`, `incident_closed`). `links` is a JSON object of name ->
reference (report paths, the Dagster run, the alert id, the rollback id), merged when the same
incident is opened again.

Opening is idempotent per condition: while an incident with the same workflow, release, source
and title is open, `open_incident` returns it (created False) with the new links merged in, so
a retried job does not open a second one.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any, Mapping

import duckdb

from relops_pipeline.lib import audit
from relops_pipeline.lib.evals.model import release_key, validate_key

KIND_INCIDENT_OPENED = "incident_opened"
KIND_INCIDENT_CLOSED = "incident_closed"
STATUSES = ("open", "closed")

COLUMNS = (
    "incident_id", "workflow", "release", "title", "status", "source", "opened_by", "opened_at", "closed_by",
    "closed_at", "resolution", "links",
)


class IncidentError(ValueError):
    """An incident request is invalid (unknown id, already closed, missing text)."""


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise IncidentError(f"an incident needs a non-empty {name}")
    return value.strip()


def _links(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return {str(i): v for i, v in enumerate(value) if v is not None}
    raise IncidentError(f"links: expected a mapping of name: reference, got {type(value).__name__}")


def _row(values: tuple) -> dict[str, Any]:
    row = dict(zip(COLUMNS, values))
    row["links"] = json.loads(row["links"]) if row["links"] else {}
    return row


def get_incident(con: duckdb.DuckDBPyConnection, incident_id: str) -> dict[str, Any] | None:
    """One incident, or None."""
    row = con.execute(f"SELECT {', '.join(COLUMNS)} FROM incidents WHERE incident_id = ?", [incident_id]).fetchone()
    return _row(row) if row else None


def open_incident(
    con: duckdb.DuckDBPyConnection,
    workflow: str,
    release: str | None,
    title: str,
    source: str,
    opened_by: str,
    links: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Open an incident (or return the open one for the same workflow, release, source and
    title, with `links` merged in). Returns the incident as stored plus `created`.

    `source`: what raised it (gate | canary | drift | manual | drill ...)."""
    workflow, title, source, opened_by = (_text("workflow", workflow), _text("title", title),
                                          _text("source", source), _text("opened_by", opened_by))
    try:
        validate_key("workflow", workflow)
        if release is not None:
            validate_key("version", release)
    except ValueError as exc:
        raise IncidentError(str(exc)) from None
    new_links = json.loads(json.dumps(_links(links), default=str))
    with audit.transaction(con):
        existing = con.execute(
            f"SELECT {', '.join(COLUMNS)} FROM incidents WHERE status = 'open' AND workflow = ? "
            "AND release IS NOT DISTINCT FROM ? AND source = ? AND title = ? ORDER BY opened_at LIMIT 1",
            [workflow, release, source, title],
        ).fetchone()
        if existing:
            row = _row(existing)
            merged = {**row["links"], **new_links}
            if merged != row["links"]:
                con.execute("UPDATE incidents SET links = ? WHERE incident_id = ?",
                            [json.dumps(merged, sort_keys=True), row["incident_id"]])
                row["links"] = merged
            return {**row, "created": False}
        now = _now()
        incident_id = f"inc-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        event = audit.append_event(
            con, kind=KIND_INCIDENT_OPENED, actor=opened_by, reason=title, workflow=workflow,
            release_key=release_key(workflow, release) if release else None,
            payload={"incident_id": incident_id, "source": source, "release": release, "links": new_links},
        )
        con.execute(
            f"INSERT INTO incidents ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})",
            [incident_id, workflow, release, title, "open", source, opened_by, now, None, None, None,
             json.dumps(new_links, sort_keys=True)],
        )
    return {**get_incident(con, incident_id), "created": True, "event_seq": event["seq"]}


def close_incident(
    con: duckdb.DuckDBPyConnection, incident_id: str, *, closed_by: str, resolution: str
) -> dict[str, Any]:
    """Close an open incident with who and how; refuses an unknown or already closed one."""
    closed_by, resolution = _text("closed_by", closed_by), _text("resolution", resolution)
    with audit.transaction(con):
        row = get_incident(con, incident_id)
        if row is None:
            raise IncidentError(f"no incident {incident_id!r}")
        if row["status"] != "open":
            raise IncidentError(f"incident {incident_id} is already closed (by {row['closed_by']} at "
                                f"{row['closed_at']:%Y-%m-%d %H:%M} UTC)")
        now = _now()
        audit.append_event(
            con, kind=KIND_INCIDENT_CLOSED, actor=closed_by, reason=resolution, workflow=row["workflow"],
            release_key=release_key(row["workflow"], row["release"]) if row["release"] else None,
            payload={"incident_id": incident_id},
        )
        con.execute(
            "UPDATE incidents SET status = 'closed', closed_by = ?, closed_at = ?, resolution = ? WHERE incident_id = ?",
            [closed_by, now, resolution, incident_id],
        )
    return get_incident(con, incident_id)


def list_incidents(
    con: duckdb.DuckDBPyConnection,
    workflow: str | None = None,
    *,
    status: str | None = "open",
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Incidents, newest first: open ones by default; `status=None` for all."""
    if status is not None and status not in STATUSES:
        raise IncidentError(f"status {status!r}: one of {', '.join(STATUSES)} or None")
    where, params = [], []
    if workflow is not None:
        where.append("workflow = ?")
        params.append(workflow)
    if status is not None:
        where.append("status = ?")
        params.append(status)
    sql = f"SELECT {', '.join(COLUMNS)} FROM incidents"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY opened_at DESC, incident_id DESC"
    if limit is not None:
        sql += f" LIMIT {max(0, int(limit))}"
    return [_row(r) for r in con.execute(sql, params).fetchall()]
