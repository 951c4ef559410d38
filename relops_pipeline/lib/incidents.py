"""Incidents: a production problem with a workflow's release, open until someone closes it.

Rows of `incidents` (warehouse migration 6); opening and closing are also events in the
hash-chained log (`incident_opened`, `incident_closed`). `links` is a JSON object of name ->
reference (report paths, the Dagster run, the alert id, the rollback id), merged when the same
incident is opened again; `links["traces"]` is a list of trace ids (examples of the problem:
later they become test cases), merged as a list without duplicates. `started_at` is when the
problem began (the first bad trace, the canary's start), `opened_at` when someone noticed.

Opening is idempotent per condition: while an incident with the same workflow, release, source
and title is open, `open_incident` returns it (created False) with the new links merged in, so
a retried job does not open a second one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import duckdb

from relops_pipeline.lib import audit
from relops_pipeline.lib.evals.model import release_key, validate_key
from relops_pipeline.lib.warehouse import fetch_one

KIND_INCIDENT_OPENED = "incident_opened"
KIND_INCIDENT_CLOSED = "incident_closed"
KIND_INCIDENT_LINKED = "incident_linked"
STATUSES = ("open", "closed")

COLUMNS = (
    "incident_id", "workflow", "release", "title", "status", "source", "opened_by", "opened_at", "closed_by",
    "closed_at", "resolution", "links", "started_at",
)
TRACES_KEY = "traces"


class IncidentError(ValueError):
    """An incident request is invalid (unknown id, already closed, missing text)."""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


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


def _merge_links(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """`new` wins per key, except `traces`: the union of both lists, old order first."""
    merged = {**old, **new}
    if TRACES_KEY in old or TRACES_KEY in new:
        seen: dict[str, None] = {}
        for value in (old.get(TRACES_KEY), new.get(TRACES_KEY)):
            for trace_id in _trace_list(value):
                seen.setdefault(trace_id, None)
        merged[TRACES_KEY] = list(seen)
    return merged


def _trace_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise IncidentError(f"links.traces: expected a list of trace ids, got {type(value).__name__}")
    out = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise IncidentError(f"links.traces: {item!r} is not a trace id")
        out.append(item.strip())
    return out


def _clean_links(links: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(_links(links), default=str))
    if TRACES_KEY in out:
        out = _merge_links({}, out)  # deduplicated, validated
    return out


def _row(values: tuple) -> dict[str, Any]:
    row = dict(zip(COLUMNS, values, strict=False))
    row["links"] = json.loads(row["links"]) if row["links"] else {}
    return row


def get_incident(con: duckdb.DuckDBPyConnection, incident_id: str) -> dict[str, Any] | None:
    """One incident, or None."""
    row = con.execute(f"SELECT {', '.join(COLUMNS)} FROM incidents WHERE incident_id = ?", [incident_id]).fetchone()
    return _row(row) if row else None


def _written_incident(con: duckdb.DuckDBPyConnection, incident_id: str) -> dict[str, Any]:
    """An incident this module has just written or checked (so it exists)."""
    row = get_incident(con, incident_id)
    assert row is not None, incident_id
    return row


def open_incident(
    con: duckdb.DuckDBPyConnection,
    workflow: str,
    release: str | None,
    title: str,
    source: str,
    opened_by: str,
    links: Mapping[str, Any] | None = None,
    *,
    started_at: datetime | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Open an incident (or return the open one for the same workflow, release, source and
    title, with `links` merged in). Returns the incident as stored plus `created`.

    `source`: what raised it (gate | canary | drift | manual | drill | review ...).
    `links["traces"]`: trace ids that show the problem (merged without duplicates).
    `started_at`: when the problem began (default: the opening time); joining an open incident
    with an earlier `started_at` moves it earlier. `now`: the opening time (default: the clock)."""
    workflow, title, source, opened_by = (_text("workflow", workflow), _text("title", title),
                                          _text("source", source), _text("opened_by", opened_by))
    try:
        validate_key("workflow", workflow)
        if release is not None:
            validate_key("version", release)
    except ValueError as exc:
        raise IncidentError(str(exc)) from None
    new_links = _clean_links(links)
    with audit.transaction(con):
        existing = con.execute(
            f"SELECT {', '.join(COLUMNS)} FROM incidents WHERE status = 'open' AND workflow = ? "
            "AND release IS NOT DISTINCT FROM ? AND source = ? AND title = ? ORDER BY opened_at LIMIT 1",
            [workflow, release, source, title],
        ).fetchone()
        if existing:
            row = _row(existing)
            merged = _merge_links(row["links"], new_links)
            earlier = started_at is not None and (row["started_at"] is None or started_at < row["started_at"])
            if merged != row["links"] or earlier:
                audit.append_event(
                    con, kind=KIND_INCIDENT_LINKED, actor=opened_by, reason=f"joined the open incident: {title}",
                    workflow=workflow, release_key=release_key(workflow, release) if release else None,
                    payload={"incident_id": row["incident_id"], "links": new_links,
                             "started_at": started_at.isoformat() if earlier and started_at is not None else None})
            if merged != row["links"]:
                con.execute("UPDATE incidents SET links = ? WHERE incident_id = ?",
                            [json.dumps(merged, sort_keys=True), row["incident_id"]])
                row["links"] = merged
            if earlier:
                con.execute("UPDATE incidents SET started_at = ? WHERE incident_id = ?", [started_at, row["incident_id"]])
                row["started_at"] = started_at
            return {**row, "created": False}
        now = now or _now()
        incident_id = f"inc-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        event = audit.append_event(
            con, kind=KIND_INCIDENT_OPENED, actor=opened_by, reason=title, workflow=workflow,
            release_key=release_key(workflow, release) if release else None,
            payload={"incident_id": incident_id, "source": source, "release": release, "links": new_links,
                     "started_at": started_at or now},
        )
        con.execute(
            f"INSERT INTO incidents ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})",
            [incident_id, workflow, release, title, "open", source, opened_by, now, None, None, None,
             json.dumps(new_links, sort_keys=True), started_at or now],
        )
    return {**_written_incident(con, incident_id), "created": True, "event_seq": event["seq"]}


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
    return _written_incident(con, incident_id)


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




def link_incident(
    con: duckdb.DuckDBPyConnection, incident_id: str, links: Mapping[str, Any], *, actor: str = "relops"
) -> dict[str, Any]:
    """Merge `links` into an incident (open or closed): `traces` lists are merged without
    duplicates, other keys replace. A change is an `incident_linked` event; linking what is
    already linked changes nothing. Returns the incident."""
    actor = _text("actor", actor)
    new_links = _clean_links(links)
    with audit.transaction(con):
        row = get_incident(con, incident_id)
        if row is None:
            raise IncidentError(f"no incident {incident_id!r}")
        merged = _merge_links(row["links"], new_links)
        if merged == row["links"]:
            return row
        added = [t for t in merged.get(TRACES_KEY, []) if t not in set(row["links"].get(TRACES_KEY, []))]
        audit.append_event(
            con, kind=KIND_INCIDENT_LINKED, actor=actor, reason=f"links added to {incident_id}",
            workflow=row["workflow"],
            release_key=release_key(row["workflow"], row["release"]) if row["release"] else None,
            payload={"incident_id": incident_id, "keys": sorted(k for k in new_links if k != TRACES_KEY),
                     "traces_added": added},
        )
        con.execute("UPDATE incidents SET links = ? WHERE incident_id = ?",
                    [json.dumps(merged, sort_keys=True), incident_id])
    return _written_incident(con, incident_id)


def trace_summaries(con: duckdb.DuckDBPyConnection, trace_ids: list[str]) -> dict[str, dict[str, Any]]:
    """What a person needs to judge each trace, from `spans` (and `trace_features` when computed):
    trace id -> {trace_id, workflow, release, start_time, latency_ms, input_text, output_text,
    status, finish_reason, error_type, is_refusal, topic, spans}. Input and output are the root
    span's when it carries text, else the first LLM span's input and the last LLM span's output
    (agent frameworks often put text only on the model call). `status` is 'error' when any span
    failed. Traces not in `spans` are absent from the result."""
    ids = list(dict.fromkeys(t for t in trace_ids if t))
    if not ids:
        return {}
    rows = con.execute(
        "SELECT trace_id, parent_span_id IS NULL AS is_root, kind, workflow, release, start_time, end_time, latency_ms, "
        "input_text, output_text, status, finish_reason, error_type FROM spans "
        "WHERE list_contains(?::VARCHAR[], trace_id) ORDER BY trace_id, start_time, span_id",
        [ids],
    ).fetchall()
    features = {
        r[0]: r[1:] for r in con.execute(
            "SELECT trace_id, is_refusal, topic, latency_ms FROM trace_features WHERE list_contains(?::VARCHAR[], trace_id)",
            [ids],
        ).fetchall()
    }
    spans: dict[str, list[tuple]] = {}
    for r in rows:
        spans.setdefault(r[0], []).append(r)
    out: dict[str, dict[str, Any]] = {}
    for trace_id in ids:
        group = spans.get(trace_id)
        if not group:
            continue
        root = next((s for s in group if s[1]), group[0])
        llm = [s for s in group if s[2] == "llm"]
        input_text = root[8] if root[8] is not None else next((s[8] for s in llm if s[8] is not None), None)
        output_text = root[9] if root[9] is not None else next((s[9] for s in reversed(llm) if s[9] is not None), None)
        ends = [s[6] for s in group if s[6] is not None]
        latency = root[7]
        if latency is None and ends:
            latency = (max(ends) - min(s[5] for s in group)).total_seconds() * 1000.0
        feat = features.get(trace_id)
        out[trace_id] = {
            "trace_id": trace_id,
            "workflow": root[3],
            "release": root[4],
            "start_time": min(s[5] for s in group),
            "latency_ms": feat[2] if feat and feat[2] is not None else latency,
            "input_text": input_text,
            "output_text": output_text,
            "status": "error" if any(s[10] == "error" for s in group) else root[10],
            "finish_reason": next((s[11] for s in reversed(llm) if s[11]), root[11]),
            "error_type": root[12] or next((s[12] for s in group if s[12]), None),
            "is_refusal": bool(feat[0]) if feat else None,
            "topic": feat[1] if feat else None,
            "spans": len(group),
        }
    return out


def incident_traces(con: duckdb.DuckDBPyConnection, incident_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """The incident's linked traces (links["traces"], in link order, the first `limit`) as
    `trace_summaries` rows; linked traces no longer in the warehouse are left out (see
    `show_incident`'s `traces_missing`)."""
    row = get_incident(con, incident_id)
    if row is None:
        raise IncidentError(f"no incident {incident_id!r}")
    ids = _trace_list(row["links"].get(TRACES_KEY))[: max(0, int(limit))]
    found = trace_summaries(con, ids)
    return [found[t] for t in ids if t in found]


def example_traces(
    con: duckdb.DuckDBPyConnection, workflow: str, release: str, start: datetime, end: datetime, *, limit: int = 20
) -> list[dict[str, Any]]:
    """Up to `limit` traces of `release` in [start, end) that show what went wrong, taken in turn
    from three lists so that no one kind crowds out the others: errors (earliest first),
    refusals, and the slowest of the rest. Each: {trace_id, why} (why: error | refusal | slow)."""
    base = "FROM trace_features WHERE workflow = ? AND release = ? AND start_time >= ? AND start_time < ?"
    params = [workflow, release, start, end]
    n = max(0, int(limit))
    lists = {
        "error": con.execute(f"SELECT trace_id {base} AND is_error ORDER BY start_time, trace_id LIMIT {n}", params).fetchall(),
        "refusal": con.execute(f"SELECT trace_id {base} AND is_refusal AND NOT is_error ORDER BY start_time, trace_id "
                               f"LIMIT {n}", params).fetchall(),
        "slow": con.execute(f"SELECT trace_id {base} AND NOT is_error AND NOT is_refusal AND latency_ms IS NOT NULL "
                            f"ORDER BY latency_ms DESC, trace_id LIMIT {n}", params).fetchall(),
    }
    picked: list[dict[str, Any]] = []
    for i in range(n):
        for why, rows in lists.items():
            if i < len(rows) and len(picked) < n:
                picked.append({"trace_id": rows[i][0], "why": why})
    return picked


def show_incident(con: duckdb.DuckDBPyConnection, incident_id: str, *, trace_limit: int = 50) -> dict[str, Any]:
    """An incident with what it is linked to: `alerts` (alert_outbox rows named in its links or
    by its rollbacks), `rollbacks` (rollbacks.incident_id), `labels` (trace_labels.incident_id),
    `traces` (incident_traces), `traces_linked` and `traces_missing` (linked but not in spans)."""
    row = get_incident(con, incident_id)
    if row is None:
        raise IncidentError(f"no incident {incident_id!r}")
    rb_cols = ("rollback_id", "from_release", "to_release", "trigger", "reason", "automatic", "performed",
               "flipped_at", "time_to_rollback_s", "alert_id", "actor", "recorded_at")
    rollbacks = [dict(zip(rb_cols, r, strict=False)) for r in con.execute(
        f"SELECT {', '.join(rb_cols)} FROM rollbacks WHERE incident_id = ? ORDER BY recorded_at", [incident_id]).fetchall()]
    candidates: list[str] = []
    for key, value in row["links"].items():
        if key == TRACES_KEY:
            continue
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str):
                candidates.append(v)
    candidates += [r["alert_id"] for r in rollbacks if r["alert_id"]]
    al_cols = ("alert_id", "kind", "severity", "title", "release", "status", "created_at")
    alerts = [dict(zip(al_cols, r, strict=False)) for r in con.execute(
        f"SELECT {', '.join(al_cols)} FROM alert_outbox WHERE list_contains(?::VARCHAR[], alert_id) ORDER BY created_at",
        [list(dict.fromkeys(candidates))]).fetchall()] if candidates else []
    lb_cols = ("label_id", "sample_id", "trace_id", "release", "label", "value", "note", "reviewer", "imported_at")
    labels = [dict(zip(lb_cols, r, strict=False)) for r in con.execute(
        f"SELECT {', '.join(lb_cols)} FROM trace_labels WHERE incident_id = ? ORDER BY imported_at, label_id",
        [incident_id]).fetchall()]
    linked = _trace_list(row["links"].get(TRACES_KEY))
    traces = incident_traces(con, incident_id, limit=trace_limit)
    present = fetch_one(con.execute("SELECT count(DISTINCT trace_id) FROM spans WHERE list_contains(?::VARCHAR[], trace_id)",
                                    [linked]))[0] if linked else 0
    return {**row, "alerts": alerts, "rollbacks": rollbacks, "labels": labels, "traces": traces,
            "traces_linked": len(linked), "traces_missing": len(linked) - present}
