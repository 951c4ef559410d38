"""The event log: one append-only, hash-chained record of every state change.

Gate decisions, approvals, overrides, refused attempts, threshold versions, suite versions,
rollouts and rollbacks are all rows of one table, `events`, in the warehouse. Each row carries
`seq` (1, 2, 3, ... without gaps), when (`ts`, naive UTC), who (`actor`), what (`kind`,
`workflow`, `release_key`, `payload`) and why (`reason`), plus `prev_hash` (the previous row's
`hash`; 64 zeros for the first row) and `hash`, the SHA-256 of a canonical serialisation of all
the other columns including `prev_hash` (see `canonical_bytes`). Rows are only ever inserted.

What `verify_chain` detects, from the table alone:
- a row edited in place (any column, including `hash` and `prev_hash`): its hash no longer
  matches its contents, and an edited `hash` also breaks the next row's link;
- a row deleted from the middle: a gap in `seq` and a broken `prev_hash` link at the next row;
- rows renumbered, reordered or inserted: `seq` is inside the hash and each row names its
  predecessor's hash, so the moved rows fail.

What it cannot detect from the table alone, said plainly:
- rows removed from the end (truncation): the shorter log is still a valid chain;
- a rewrite by someone with write access to the warehouse who recomputes every hash after
  their change: the hashes are not a signature, and there is no secret.
Both are caught by recording the head elsewhere: `head(con)` returns `(seq, hash)` of the last
row; keep it outside the warehouse (a CI artefact, a ticket, a chat message, a second machine),
and later `verify_chain(con, expect_head=(seq, hash))` fails unless the row at that seq still
exists with that hash — which holds only if no row up to it was removed or rewritten.

Concurrency: the DuckDB warehouse has one read-write process at a time (every other process
waits for its lock, and warehouse-writing Dagster assets share a pool of size 1), so the read of
the last row and the insert in `append_event` cannot interleave with another writer. Two
connections inside one process would race only inside their own transactions, and then the
primary key on `seq` makes the second commit fail rather than fork the chain.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import UTC, date, datetime
from pathlib import PurePath
from typing import Any

import duckdb

from relops_pipeline.lib.warehouse import fetch_one

GENESIS_HASH = "0" * 64

# DDL for the warehouse migration that adds the event log (the lead adds it to warehouse.py).
# The table is created by warehouse migration 3 (relops_pipeline/lib/warehouse.py).

COLUMNS = (
    "seq", "event_id", "ts", "actor", "kind", "workflow", "release_key", "reason", "payload", "prev_hash", "hash",
)

# Kinds in use (not enforced: later features add their own; a kind is lower-case words joined
# by '_' or '.').
KIND_GATE_DECISION = "gate_decision"
KIND_APPROVAL = "approval"
KIND_OVERRIDE = "override"
KIND_REFUSED = "refused"
KIND_THRESHOLDS_VERSION = "thresholds_version"
KIND_SUITE_VERSION = "suite_version"
KIND_ROLLOUT = "rollout"
KIND_ROLLBACK = "rollback"

_KIND_RE = re.compile(r"^[a-z][a-z0-9_.]{0,62}\Z")


class AuditError(ValueError):
    """An event cannot be recorded as given (missing actor or reason, payload not JSON, ...)."""


# ---------------------------------------------------------------------------------------------
# Canonical form and hashing


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    raise TypeError(f"payload value of type {type(value).__name__} is not JSON-serialisable")


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def normalise_payload(payload: Any) -> dict | None:
    """The payload as it will read back from the warehouse: plain JSON types only (datetimes
    become ISO strings, sets sorted lists, dataclasses dicts). NaN/inf are refused: they are not
    JSON."""
    if payload is None:
        return None
    if not isinstance(payload, dict):
        raise AuditError(f"payload must be a mapping or None, got {type(payload).__name__}")
    try:
        return json.loads(json.dumps(payload, default=_json_default, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise AuditError(f"payload is not JSON: {exc}") from None


def format_ts(ts: datetime) -> str:
    """A timestamp as ISO 8601 with microseconds always present (isoformat() drops them when
    they are zero, which would change the hash of a row depending on the clock)."""
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC).replace(tzinfo=None)
    return ts.isoformat(timespec="microseconds")


def canonical_bytes(row: dict[str, Any]) -> bytes:
    """The bytes that `hash` covers: a JSON object with sorted keys of every column except
    `hash` (seq as an integer, ts as ISO 8601 with microseconds, payload as a JSON value with
    sorted keys, NULL as null), compact separators, UTF-8. Stable across a DuckDB round trip."""
    payload = row.get("payload")
    if isinstance(payload, str):
        payload = json.loads(payload)
    doc = {
        "seq": int(row["seq"]),
        "event_id": row["event_id"],
        "ts": format_ts(row["ts"]) if isinstance(row["ts"], datetime) else row["ts"],
        "actor": row["actor"],
        "kind": row["kind"],
        "workflow": row.get("workflow"),
        "release_key": row.get("release_key"),
        "reason": row["reason"],
        "payload": payload,
        "prev_hash": row["prev_hash"],
    }
    return _canonical_json(doc).encode("utf-8")


def event_hash(row: dict[str, Any]) -> str:
    """SHA-256 (hex) of `canonical_bytes(row)`."""
    return hashlib.sha256(canonical_bytes(row)).hexdigest()


# ---------------------------------------------------------------------------------------------
# Transactions


def in_transaction(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the connection is inside an explicit transaction (BEGIN without COMMIT yet).

    DuckDB has no flag for it, and a nested BEGIN aborts the caller's transaction; but inside a
    transaction every statement sees the same transaction id, while in autocommit mode each
    statement gets a new one."""
    first = fetch_one(con.execute("SELECT txid_current()"))[0]
    second = fetch_one(con.execute("SELECT txid_current()"))[0]
    return first == second


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """Run the block in a transaction: the caller's when one is open (the caller then decides
    commit or rollback), otherwise a new one committed at the end or rolled back on error."""
    if in_transaction(con):
        yield con
        return
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


# ---------------------------------------------------------------------------------------------
# Writing and reading


def _required(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise AuditError(f"an event needs a non-empty {name}")
    return value.strip()


def _optional(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise AuditError(f"{name} must be a non-empty string or None, got {value!r}")
    return value


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def head(con: duckdb.DuckDBPyConnection) -> tuple[int, str]:
    """(seq, hash) of the last event; (0, 64 zeros) for an empty log. Record it outside the
    warehouse and pass it to `verify_chain(expect_head=...)` later to detect truncation."""
    row = con.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    return (0, GENESIS_HASH) if row is None else (int(row[0]), row[1])


def append_event(
    con: duckdb.DuckDBPyConnection,
    *,
    kind: str,
    actor: str,
    reason: str,
    workflow: str | None = None,
    release_key: str | None = None,
    payload: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Append one event and return it as stored (seq, event_id, ts, ..., prev_hash, hash).

    Reads the last row, hashes the new row onto it and inserts it. Inside a caller's open
    transaction it joins that transaction (a rollback removes the event with the caller's other
    changes); otherwise it runs in its own. No race: the warehouse has one writer at a time
    (see the module docstring), and the primary key on `seq` refuses a duplicate."""
    kind = _required("kind", kind)
    if not _KIND_RE.match(kind):
        raise AuditError(f"invalid event kind {kind!r}: lower-case letters, digits, '_' and '.'")
    row: dict[str, Any] = {
        "event_id": uuid.uuid4().hex,
        "ts": _now(),
        "actor": _required("actor", actor),
        "kind": kind,
        "workflow": _optional("workflow", workflow),
        "release_key": _optional("release_key", release_key),
        "reason": _required("reason", reason),
        "payload": normalise_payload(payload),
    }
    with transaction(con):
        last_seq, last_hash = head(con)
        row["seq"] = last_seq + 1
        row["prev_hash"] = last_hash
        row["hash"] = event_hash(row)
        con.execute(
            f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})",
            [
                _canonical_json(row[c]) if c == "payload" and row[c] is not None else row[c]
                for c in COLUMNS
            ],
        )
    return {c: row[c] for c in COLUMNS}


def _row_dict(values: tuple) -> dict[str, Any]:
    row = dict(zip(COLUMNS, values, strict=False))
    if row["payload"] is not None:
        row["payload"] = json.loads(row["payload"])
    return row


def list_events(
    con: duckdb.DuckDBPyConnection,
    *,
    workflow: str | None = None,
    release_key: str | None = None,
    kind: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Events matching every filter given, oldest first; with `limit`, the newest `limit` of
    them (still oldest first). Payloads are parsed JSON."""
    where, params = [], []
    for col, value in (("workflow", workflow), ("release_key", release_key), ("kind", kind)):
        if value is not None:
            where.append(f"{col} = ?")
            params.append(value)
    sql = f"SELECT {', '.join(COLUMNS)} FROM events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY seq DESC"
    if limit is not None:
        if int(limit) < 0:
            raise ValueError("limit must be >= 0")
        sql += f" LIMIT {int(limit)}"
    rows = [_row_dict(r) for r in con.execute(sql, params).fetchall()]
    rows.reverse()
    return rows


# ---------------------------------------------------------------------------------------------
# Verification


@dataclass
class Problem:
    seq: int  # the row the problem is at (for a gap: the first missing seq)
    kind: str  # edited | missing | broken_link | duplicate | bad_seq | truncated | head_mismatch
    message: str


@dataclass
class VerifyResult:
    ok: bool
    checked: int  # rows read
    head: tuple[int, str]  # (seq, hash) of the last row as found
    problems: list[Problem] = field(default_factory=list)
    head_checked: bool = False  # True when an expected head was given and checked
    notes: list[str] = field(default_factory=list)

    @property
    def bad_seqs(self) -> list[int]:
        """The seqs named by problems, sorted, without repeats."""
        return sorted({p.seq for p in self.problems})

    def summary(self) -> str:
        """A few lines for the command line."""
        seq, digest = self.head
        if self.ok:
            lines = [f"event log OK: {self.checked} events, head seq {seq} hash {digest}"]
        else:
            lines = [f"event log FAILED: {len(self.problems)} problem(s) in {self.checked} events"]
            lines += [f"  seq {p.seq}: {p.message}" for p in self.problems]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify_chain(
    con: duckdb.DuckDBPyConnection, *, expect_head: tuple[int, str] | None = None
) -> VerifyResult:
    """Recompute every row's hash and link, in seq order, and report each problem with its seq.

    Detects edited rows, deleted rows (except at the end), renumbered, reordered or inserted
    rows. Truncation of the newest rows, or a complete rewrite with recomputed hashes, is
    detected only with `expect_head=(seq, hash)` recorded earlier by `head()` outside the
    warehouse: the row at that seq must still exist with that hash."""
    problems: list[Problem] = []

    def add(seq: int, kind: str, message: str) -> None:
        problems.append(Problem(seq, kind, message))

    prev_seq, prev_hash = 0, GENESIS_HASH
    checked = 0
    head_found: str | None = None
    cur = con.execute(f"SELECT {', '.join(COLUMNS)} FROM events ORDER BY seq, event_id")
    while batch := cur.fetchmany(10_000):
        for values in batch:
            row = dict(zip(COLUMNS, values, strict=False))  # payload stays text: canonical_bytes parses it
            checked += 1
            seq = int(row["seq"])
            if seq == prev_seq and checked > 1:
                add(seq, "duplicate", f"a second row with seq {seq} (event {row['event_id']}): rows were inserted")
            elif seq < 1:
                add(seq, "bad_seq", f"seq {seq} is below 1: rows were renumbered")
            elif seq > prev_seq + 1:
                what = "this row is" if seq == prev_seq + 2 else f"rows {prev_seq + 1}..{seq - 1} are"
                add(prev_seq + 1, "missing", f"{what} missing (deleted or renumbered); the next row present is "
                    f"seq {seq}")
            if row["prev_hash"] != prev_hash:
                what = "the start of the log" if checked == 1 else f"seq {prev_seq}"
                add(seq, "broken_link", f"prev_hash does not match the hash of {what}: a row before it was deleted, "
                    "inserted or reordered, or that row's hash was changed")
            try:
                recomputed = event_hash(row)
            except (TypeError, ValueError, KeyError, AttributeError) as exc:
                recomputed = f"<unhashable: {exc}>"
            if recomputed != row["hash"]:
                add(seq, "edited", "contents do not match the row's hash: the row was edited (or renumbered) after "
                    "it was written")
            if expect_head is not None and seq == int(expect_head[0]):
                head_found = row["hash"]
            prev_seq, prev_hash = seq, row["hash"]
    found_head = (prev_seq, prev_hash)

    notes: list[str] = []
    if expect_head is not None:
        want_seq, want_hash = int(expect_head[0]), str(expect_head[1])
        if want_seq == 0:
            if want_hash != GENESIS_HASH:
                add(0, "head_mismatch", "an expected head at seq 0 must have the genesis hash (64 zeros)")
        elif head_found is None:
            add(want_seq, "truncated", f"the recorded head seq {want_seq} is not in the log (it ends at seq "
                f"{prev_seq}): events were removed from the end")
        elif head_found != want_hash:
            add(want_seq, "head_mismatch", f"the row at seq {want_seq} has hash {head_found}, the recorded head says "
                f"{want_hash}: the log was rewritten at or before seq {want_seq}")
    else:
        notes.append(
            "without a head recorded elsewhere (expect_head), removal of the newest events or a rewrite with "
            "recomputed hashes cannot be detected"
        )
    return VerifyResult(
        ok=not problems, checked=checked, head=found_head, problems=problems,
        head_checked=expect_head is not None, notes=notes,
    )
