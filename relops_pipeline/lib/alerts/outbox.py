"""The alert outbox: every alert is stored first, then delivered to its sinks, at least once.

Tables (warehouse migration 5): `alert_outbox` (one row per alert) and `alert_deliveries` (one
row per alert and routed sink).

Alert status (alert_outbox.status):
- `pending`    — at least one delivery is still pending and none is dead;
- `delivered`  — every routed sink accepted it;
- `dead`       — at least one delivery was dead-lettered (others may still be pending or
                 delivered; their own rows say so);
- `suppressed` — the same dedup_key was raised within the cool-down; `suppressed_by` names the
                 original alert. Stored (nothing is lost) but not delivered;
- `unrouted`   — no configured sink takes alerts of this severity. Stored, not delivered.

Delivery status (alert_deliveries.status): `pending` (due at next_attempt_at) → `sending`
(claimed: an attempt is in flight) → `delivered` | `pending` again (failed; retried after
exponential backoff) | `dead` (the last attempt failed, or the sink answered with an error a
retry cannot change).

Delivery guarantee — at least once, nothing lost:
- `enqueue` commits the outbox row and its delivery rows before anything is sent (or joins the
  caller's open transaction so the alert commits atomically with the data that raised it;
  `deliver_due` refuses to run inside a transaction, so nothing uncommitted is ever sent).
- Each attempt is claimed in its own short transaction (status `sending`, attempts + 1,
  next_attempt_at = now + LEASE), then sent with no transaction open, then its outcome is
  recorded in a second short transaction. A process that dies between the send and the
  outcome leaves the row `sending`; once its lease expires the next `deliver_due` re-sends it
  (receivers dedupe by alert id / dedup_key). Repeated interruptions are bounded: a row
  interrupted past max_attempts + INTERRUPTED_ALLOWANCE attempts is dead-lettered with a
  message saying its outcome is unknown.
- Cool-down: the "original" is the newest non-suppressed alert with the same dedup_key raised
  within the cool-down whose status is pending or delivered. A dead or unrouted original does
  not suppress (its repeat gets a fresh chance), and an escalation (higher severity than the
  original) is never suppressed. The window is anchored at the original, so a condition that
  persists alerts again once per cool-down.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import duckdb

from relops_pipeline.lib.alerts.model import (
    SEVERITY_RANK,
    Alert,
    AlertError,
    AlertRecord,
    Delivery,
    iso_z,
    severity_at_least,
    utc_naive,
)
from relops_pipeline.lib.alerts.sinks import DEFAULT_COOLDOWN_MINUTES, DeliveryError, Sink
from relops_pipeline.lib.warehouse import fetch_one

ALERT_STATUSES = ("pending", "delivered", "dead", "suppressed", "unrouted")
DELIVERY_STATUSES = ("pending", "sending", "delivered", "dead")
DEFAULT_COOLDOWN = timedelta(minutes=DEFAULT_COOLDOWN_MINUTES)
# How long a claimed ('sending') delivery is left alone before it counts as interrupted. Far
# longer than any sink's timeout, so a slow send is never re-sent while still in flight.
LEASE = timedelta(minutes=5)
INTERRUPTED_ALLOWANCE = 3

_OUTBOX_COLS = (
    "alert_id", "dedup_key", "kind", "severity", "title", "workflow", "release", "summary", "evidence", "links",
    "runbook", "dagster_run_id", "status", "suppressed_by", "created_at",
)
_DELIVERY_COLS = (
    "alert_id", "sink", "sink_type", "status", "attempts", "next_attempt_at", "last_error", "delivered_at", "updated_at",
)

SinksArg = Sequence[Sink] | Mapping[str | None, Sequence[Sink]]
# A connection, or a factory of short-lived ones (`with connect() as con:`): given a factory,
# delivery holds the warehouse only while it reads or records, never during a send.
Connector = duckdb.DuckDBPyConnection | Callable[[], contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]]


def connector(con: Connector) -> Callable[[], contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]]:
    """A factory of connections: the factory itself, or one that lends the given connection."""
    if isinstance(con, duckdb.DuckDBPyConnection):
        return lambda: contextlib.nullcontext(con)
    return con


# ---------------------------------------------------------------------------------------------
# Transactions


def in_transaction(con: duckdb.DuckDBPyConnection) -> bool:
    """True when `con` has an explicit transaction open (BEGIN without COMMIT/ROLLBACK).

    DuckDB has no API for this, and a probing BEGIN would abort the caller's transaction.
    Every auto-commit statement runs in a new transaction, so two consecutive reads of
    current_transaction_id() differ outside a transaction and are equal inside one.
    """
    q = "SELECT current_transaction_id()"
    return fetch_one(con.execute(q))[0] == fetch_one(con.execute(q))[0]


@contextlib.contextmanager
def _transaction(con: duckdb.DuckDBPyConnection, *, join: bool = False) -> Iterator[None]:
    if join and in_transaction(con):
        yield
        return
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def _require_no_transaction(con: duckdb.DuckDBPyConnection, what: str) -> None:
    if in_transaction(con):
        raise AlertError(
            f"{what} must not run inside an open transaction: commit first (alerts are sent only "
            "once committed, and no transaction may stay open during network calls)"
        )


# ---------------------------------------------------------------------------------------------
# Enqueue


def _new_alert_id(now: datetime) -> str:
    return f"alert-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"


def _route(alert: Alert, sinks: Sequence[Sink]) -> list[Sink]:
    names = [s.name for s in sinks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise AlertError(f"sinks: names must be unique, repeated: {', '.join(dupes)}")
    # min_severity is set by Sink.__post_init__ (None there means the type's default)
    return [s for s in sinks if severity_at_least(alert.severity, s.min_severity or s.DEFAULT_MIN_SEVERITY)]


def _cooldown(value: timedelta | int | float | None) -> timedelta:
    if value is None:
        return DEFAULT_COOLDOWN
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(minutes=value)  # a number is minutes, as in alerts.cooldown_minutes
    raise AlertError(f"cooldown: expected a timedelta or minutes, got {value!r}")


def enqueue(
    con: duckdb.DuckDBPyConnection,
    alert: Alert,
    sinks: Sequence[Sink],
    now: datetime | None = None,
    cooldown: timedelta | int | float | None = DEFAULT_COOLDOWN,
) -> AlertRecord:
    """Store `alert` in the outbox with one pending delivery per sink whose min_severity it
    meets, and return the stored record (status pending, suppressed or unrouted).

    Nothing is sent here: call `deliver_due`. Committed before returning, unless the caller has
    a transaction open, in which case the rows join it (and commit or roll back with it).
    `cooldown`: a timedelta, or minutes; 0 disables suppression.
    """
    if not isinstance(alert, Alert):
        raise AlertError(f"enqueue: expected an Alert, got {type(alert).__name__}")
    now = utc_naive(now)
    window = _cooldown(cooldown)
    routed = _route(alert, list(sinks))
    alert_id = _new_alert_id(now)
    stored = alert.with_identity(alert_id, now)
    with _transaction(con, join=True):
        suppressed_by = None
        if window > timedelta(0):
            row = con.execute(
                "SELECT alert_id, severity FROM alert_outbox WHERE dedup_key = ? AND status IN ('pending', 'delivered') "
                "AND suppressed_by IS NULL AND created_at > ? AND created_at <= ? ORDER BY created_at DESC, alert_id DESC LIMIT 1",
                [stored.dedup_key, now - window, now],
            ).fetchone()
            if row is not None and SEVERITY_RANK[stored.severity] <= SEVERITY_RANK.get(row[1], 0):
                suppressed_by = row[0]
        status = "suppressed" if suppressed_by else ("pending" if routed else "unrouted")
        con.execute(
            f"INSERT INTO alert_outbox ({', '.join(_OUTBOX_COLS)}) VALUES ({', '.join('?' * len(_OUTBOX_COLS))})",
            [
                alert_id, stored.dedup_key, stored.kind, stored.severity, stored.title, stored.workflow, stored.release,
                stored.summary, json.dumps(stored.evidence, ensure_ascii=False), json.dumps(stored.links, ensure_ascii=False),
                stored.runbook, stored.dagster_run_id, status, suppressed_by, now,
            ],
        )
        if status == "pending":
            con.executemany(
                f"INSERT INTO alert_deliveries ({', '.join(_DELIVERY_COLS)}) VALUES (?, ?, ?, 'pending', 0, ?, NULL, NULL, ?)",
                [[alert_id, s.name, s.type, now, now] for s in routed],
            )
        record = get_alert(con, alert_id)
    assert record is not None
    return record


# ---------------------------------------------------------------------------------------------
# Reading


def _alert_from_row(row: Sequence[Any]) -> tuple[Alert, str, str | None]:
    d = dict(zip(_OUTBOX_COLS, row, strict=False))

    def js(v: Any) -> dict:
        return json.loads(v) if isinstance(v, str) else (v or {})

    alert = Alert(
        kind=d["kind"], severity=d["severity"], title=d["title"], workflow=d["workflow"], release=d["release"],
        summary=d["summary"] or "", evidence=js(d["evidence"]), links=js(d["links"]), runbook=d["runbook"],
        dedup_key=d["dedup_key"], dagster_run_id=d["dagster_run_id"], alert_id=d["alert_id"], created_at=d["created_at"],
    )
    return alert, d["status"], d["suppressed_by"]


def _deliveries(con: duckdb.DuckDBPyConnection, alert_ids: list[str]) -> dict[str, list[Delivery]]:
    out: dict[str, list[Delivery]] = {a: [] for a in alert_ids}
    if not alert_ids:
        return out
    rows = con.execute(
        f"SELECT {', '.join(_DELIVERY_COLS)} FROM alert_deliveries WHERE alert_id IN (SELECT unnest(?::VARCHAR[])) "
        "ORDER BY alert_id, sink",
        [alert_ids],
    ).fetchall()
    for r in rows:
        d = dict(zip(_DELIVERY_COLS, r, strict=False))
        out[d.pop("alert_id")].append(Delivery(**d))
    return out


def list_alerts(
    con: duckdb.DuckDBPyConnection,
    status: str | Iterable[str] | None = None,
    *,
    workflow: str | None = None,
    limit: int | None = None,
) -> list[AlertRecord]:
    """Stored alerts, newest first, with their deliveries; `status` filters (one or several of
    ALERT_STATUSES), `workflow` filters by workflow."""
    statuses = [status] if isinstance(status, str) else (list(status) if status is not None else None)
    for s in statuses or []:
        if s not in ALERT_STATUSES:
            raise AlertError(f"status {s!r}: expected one of {', '.join(ALERT_STATUSES)}")
    where: list[str] = []
    params: list[Any] = []
    if statuses is not None:
        where.append("status IN (SELECT unnest(?::VARCHAR[]))")
        params.append(statuses)
    if workflow is not None:
        where.append("workflow = ?")
        params.append(workflow)
    sql = f"SELECT {', '.join(_OUTBOX_COLS)} FROM alert_outbox"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY created_at DESC, alert_id DESC"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    rows = con.execute(sql, params).fetchall()
    parsed = [_alert_from_row(r) for r in rows]
    deliveries = _deliveries(con, [a.alert_id or "" for a, _, _ in parsed])
    return [AlertRecord(alert=a, status=s, suppressed_by=sb, deliveries=deliveries[a.alert_id or ""]) for a, s, sb in parsed]


def get_alert(con: duckdb.DuckDBPyConnection, alert_id: str) -> AlertRecord | None:
    """One stored alert with its deliveries, or None."""
    row = con.execute(f"SELECT {', '.join(_OUTBOX_COLS)} FROM alert_outbox WHERE alert_id = ?", [alert_id]).fetchone()
    if row is None:
        return None
    alert, status, suppressed_by = _alert_from_row(row)
    return AlertRecord(alert=alert, status=status, suppressed_by=suppressed_by, deliveries=_deliveries(con, [alert_id])[alert_id])


# ---------------------------------------------------------------------------------------------
# Delivery


@dataclass(frozen=True)
class DeliveryAttempt:
    """One attempt made by `deliver_due`. outcome: delivered | retry | dead."""

    alert_id: str
    sink: str
    sink_type: str
    attempt: int
    outcome: str
    error: str | None = None
    next_attempt_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "next_attempt_at": iso_z(self.next_attempt_at)}


@dataclass
class DeliveryReport:
    """What one `deliver_due` call did.

    attempts: every send tried, with its outcome. interrupted: deliveries found `sending` past
    their lease (an earlier process died mid-attempt; re-sent now or dead-lettered).
    unconfigured: due deliveries whose sink is not among the sinks given — left untouched
    (still pending), e.g. a sink removed from the workflow's config.
    """

    attempts: list[DeliveryAttempt] = field(default_factory=list)
    interrupted: list[tuple[str, str]] = field(default_factory=list)
    unconfigured: list[tuple[str, str]] = field(default_factory=list)

    def _by(self, outcome: str) -> list[DeliveryAttempt]:
        return [a for a in self.attempts if a.outcome == outcome]

    @property
    def delivered(self) -> list[DeliveryAttempt]:
        return self._by("delivered")

    @property
    def retrying(self) -> list[DeliveryAttempt]:
        return self._by("retry")

    @property
    def dead(self) -> list[DeliveryAttempt]:
        return self._by("dead")

    def to_dict(self) -> dict[str, Any]:
        return {
            "attempted": len(self.attempts),
            "delivered": len(self.delivered),
            "retrying": len(self.retrying),
            "dead": len(self.dead),
            "attempts": [a.to_dict() for a in self.attempts],
            "interrupted": [list(x) for x in self.interrupted],
            "unconfigured": [list(x) for x in self.unconfigured],
        }


def _refresh_alert_status(con: duckdb.DuckDBPyConnection, alert_id: str) -> None:
    statuses = {r[0] for r in con.execute("SELECT status FROM alert_deliveries WHERE alert_id = ?", [alert_id]).fetchall()}
    if not statuses:
        return
    new = "dead" if "dead" in statuses else ("delivered" if statuses == {"delivered"} else "pending")
    con.execute(
        "UPDATE alert_outbox SET status = ? WHERE alert_id = ? AND status NOT IN ('suppressed', 'unrouted')", [new, alert_id]
    )


def _sink_lookup(sinks: SinksArg) -> Callable[[str | None, str], Sink | None | bool]:
    """(workflow, sink name) -> the Sink; None when the workflow's sinks lack that name; False
    when the workflow is not covered at all (mapping form without that workflow)."""
    if isinstance(sinks, Mapping):
        table = {wf: {s.name: s for s in ss} for wf, ss in sinks.items()}

        def find(workflow: str | None, name: str) -> Sink | None | bool:
            if workflow not in table:
                return False
            return table[workflow].get(name)

        return find
    by_name = {s.name: s for s in sinks}
    return lambda workflow, name: by_name.get(name)


def deliver_due(
    con: Connector,
    sinks: SinksArg,
    now: datetime | None = None,
    *,
    workflow: str | None = None,
    limit: int | None = None,
) -> DeliveryReport:
    """Try every delivery that is due (pending with next_attempt_at <= now, or `sending` past
    its lease), oldest alert first; record each outcome and update the alerts' status.

    `sinks`: the configured sinks by name (a list, e.g. `build_sinks(wf.alerts, ...)`), or a
    mapping workflow -> list so one call serves several workflows (alerts of workflows missing
    from the mapping are not touched). `workflow`: only alerts of this workflow. `now`: an
    injected clock for tests (fixed for the whole call); default the real UTC clock, read at
    each step. A failing or slow sink does not stop the others: every due delivery is tried,
    each bounded by its sink's timeout. Refuses to run inside an open transaction. `con` may be a
    factory of connections (`Connector`): each read and each record then opens its own, and no
    connection is open while a sink is called.
    """
    connect = connector(con)
    with connect() as c:
        _require_no_transaction(c, "deliver_due")
    clock: Callable[[], datetime] = (lambda: utc_naive(now)) if now is not None else utc_naive
    lookup = _sink_lookup(sinks)
    report = DeliveryReport()
    t0 = clock()
    sql = (
        "SELECT d.alert_id, d.sink, d.sink_type, d.status, d.attempts, o.workflow FROM alert_deliveries d "
        "JOIN alert_outbox o USING (alert_id) WHERE d.status IN ('pending', 'sending') "
        "AND coalesce(d.next_attempt_at, TIMESTAMP '1970-01-01') <= ?"
    )
    params: list[Any] = [t0]
    if workflow is not None:
        sql += " AND o.workflow = ?"
        params.append(workflow)
    sql += " ORDER BY o.created_at, d.alert_id, d.sink"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    with connect() as c:
        due = c.execute(sql, params).fetchall()
    alerts: dict[str, Alert] = {}

    for alert_id, sink_name, sink_type, status, attempts, wf in due:
        sink = lookup(wf, sink_name)
        if sink is False:
            continue
        if sink is None:
            report.unconfigured.append((alert_id, sink_name))
            continue
        assert isinstance(sink, Sink)
        policy = sink.retry
        if status == "sending":
            report.interrupted.append((alert_id, sink_name))
            if attempts >= policy.max_attempts + INTERRUPTED_ALLOWANCE:
                t = clock()
                msg: str | None = (f"attempt {attempts} was interrupted (the process ended before its outcome was recorded) "
                       f"and {attempts} attempts exceed the limit: the alert may or may not have reached {sink_name}")
                with connect() as c, _transaction(c):
                    c.execute(
                        "UPDATE alert_deliveries SET status = 'dead', next_attempt_at = NULL, last_error = ?, updated_at = ? "
                        "WHERE alert_id = ? AND sink = ? AND status = 'sending'",
                        [msg, t, alert_id, sink_name],
                    )
                    _refresh_alert_status(c, alert_id)
                report.attempts.append(DeliveryAttempt(alert_id, sink_name, sink_type, attempts, "dead", msg))
                continue

        # Claim: its own committed transaction, so no transaction is open during the send.
        t = clock()
        with connect() as c:
            with _transaction(c):
                claimed = c.execute(
                    "UPDATE alert_deliveries SET status = 'sending', attempts = attempts + 1, next_attempt_at = ?, updated_at = ? "
                    "WHERE alert_id = ? AND sink = ? AND status = ? AND attempts = ? RETURNING attempts",
                    [t + LEASE, t, alert_id, sink_name, status, attempts],
                ).fetchall()
            if not claimed:
                continue  # another worker claimed it since we listed it
            attempt = int(claimed[0][0])
            if alert_id not in alerts:
                rec = get_alert(c, alert_id)
                assert rec is not None
                alerts[alert_id] = rec.alert

        error: str | None = None
        permanent = False
        try:
            sink.send(alerts[alert_id])
        except DeliveryError as exc:
            error, permanent = str(exc), exc.permanent
        except Exception as exc:  # a sink bug is a failed attempt, not a crash of the whole run
            error = f"{type(exc).__name__}: {exc}"

        t = clock()
        with connect() as c, _transaction(c):
            if error is None:
                c.execute(
                    "UPDATE alert_deliveries SET status = 'delivered', next_attempt_at = NULL, delivered_at = ?, updated_at = ? "
                    "WHERE alert_id = ? AND sink = ?",
                    [t, t, alert_id, sink_name],
                )
                outcome, next_at, msg = "delivered", None, None
            else:
                last = permanent or attempt >= policy.max_attempts
                why = "permanent error, not retried" if permanent and attempt < policy.max_attempts else None
                msg = f"attempt {attempt}/{policy.max_attempts}: {error}" + (f" ({why})" if why else "")
                next_at = None if last else t + policy.delay_after(attempt)
                outcome = "dead" if last else "retry"
                c.execute(
                    "UPDATE alert_deliveries SET status = ?, next_attempt_at = ?, last_error = ?, updated_at = ? "
                    "WHERE alert_id = ? AND sink = ?",
                    ["dead" if last else "pending", next_at, msg, t, alert_id, sink_name],
                )
            _refresh_alert_status(c, alert_id)
        report.attempts.append(DeliveryAttempt(alert_id, sink_name, sink_type, attempt, outcome, msg, next_at))
    return report


def retry_dead(
    con: duckdb.DuckDBPyConnection,
    alert_id: str | None = None,
    *,
    sink: str | None = None,
    now: datetime | None = None,
) -> int:
    """Give dead deliveries a fresh start (attempts 0, due now; last_error kept) — all of them,
    or one alert's, or one sink's; their alerts become pending again. Returns how many."""
    _require_no_transaction(con, "retry_dead")
    now = utc_naive(now)
    where, params = ["status = 'dead'"], []
    if alert_id is not None:
        where.append("alert_id = ?")
        params.append(alert_id)
    if sink is not None:
        where.append("sink = ?")
        params.append(sink)
    with _transaction(con):
        ids = [r[0] for r in con.execute(
            f"SELECT DISTINCT alert_id FROM alert_deliveries WHERE {' AND '.join(where)}", params).fetchall()]
        n = con.execute(
            f"UPDATE alert_deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ? "
            f"WHERE {' AND '.join(where)} RETURNING alert_id",
            [now, now, *params],
        ).fetchall()
        for a in ids:
            _refresh_alert_status(con, a)
    return len(n)
