"""The event log: one append-only, hash-chained, keyed record of every state change.

Gate decisions, approvals, overrides, refused attempts, threshold versions, suite versions,
rollouts and rollbacks are all rows of one table, `events`, in the warehouse. Each row carries
`seq` (1, 2, 3, ... without gaps), when (`ts`, naive UTC), who (`actor`), what (`kind`,
`workflow`, `release_key`, `payload`) and why (`reason`), plus `prev_hash` (the previous row's
`hash`; 64 zeros for the first row) and `hash`, the SHA-256 of a canonical serialisation of all
the other columns including `prev_hash` (see `canonical_bytes`), and `mac`, an HMAC-SHA256 of
the same bytes under the **audit key** (`key_id` names the key). Rows are only ever inserted.

The audit key lives outside the warehouse: `$RELOPS_AUDIT_KEY_FILE`, else `audit/audit.key`
beside the warehouse file (created, mode 0600, with the first keyed event). Whoever can write
the warehouse but cannot read the key cannot forge an event: a row appended or rewritten with
the library or with SQL has no valid MAC. Put the key where the warehouse's other writers cannot
read it (a secret mount, another user's file) for that to hold against them too.

What `verify_chain` detects:
- a row edited in place (any column): its hash no longer matches, nor does its MAC;
- a row deleted from the middle: a gap in `seq` and a broken `prev_hash` link at the next row;
- rows renumbered, reordered or inserted: `seq` is inside the hash and each row names its
  predecessor's hash, so the moved rows fail;
- a row appended or rewritten without the key, even with every hash recomputed: its MAC fails
  (a row without a MAC after keyed rows is a forgery too);
- rows removed from the end (truncation), against an **anchor**: after each committed event the
  head `(seq, hash)` is written, with its MAC, to `$RELOPS_AUDIT_ANCHOR_FILE`, else
  `audit/anchor.json` beside the warehouse (never moved backwards, and never past a chain that
  no longer holds the anchored row). `relops audit head` prints the head to keep elsewhere too
  (a CI artefact, a ticket, a second machine) for `verify_chain(expect_head=...)`.

Events written before keying (warehouses older than migration 8) are hash-chained only; they
are counted in a note, and a forgery among them is detectable only by an exported head.

Concurrency: the DuckDB warehouse has one read-write process at a time (every other process
waits for its lock, and warehouse-writing Dagster assets share a pool of size 1), so the read of
the last row and the insert in `append_event` cannot interleave with another writer. Two
connections inside one process would race only inside their own transactions, and then the
primary key on `seq` makes the second commit fail rather than fork the chain.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import UTC, date, datetime
from pathlib import Path, PurePath
from typing import Any

import duckdb

from relops_pipeline.lib.warehouse import fetch_one

GENESIS_HASH = "0" * 64

# DDL for the warehouse migration that adds the event log (the lead adds it to warehouse.py).
# The table is created by warehouse migration 3 (relops_pipeline/lib/warehouse.py).

COLUMNS = (
    "seq", "event_id", "ts", "actor", "kind", "workflow", "release_key", "reason", "payload", "prev_hash", "hash",
)
KEY_COLUMNS = ("key_id", "mac")  # not covered by `hash`: the MAC is over the same bytes
KEY_FILE_ENV = "RELOPS_AUDIT_KEY_FILE"
ANCHOR_FILE_ENV = "RELOPS_AUDIT_ANCHOR_FILE"

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


class TamperedError(AuditError):
    """What a command was about to act on disagrees with the keyed event log (a table row edited,
    an event forged, the log truncated). Nothing was changed; `relops audit verify` lists it."""


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
# The audit key and the anchor (both outside the warehouse)


@dataclass(frozen=True)
class AuditKey:
    """An HMAC key: `key_id` (the first 16 hex digits of the secret's SHA-256) names it in rows."""

    key_id: str
    secret: bytes = field(repr=False)

    @classmethod
    def from_secret(cls, secret: bytes) -> AuditKey:
        return cls(hashlib.sha256(secret).hexdigest()[:16], secret)

    def mac(self, data: bytes) -> str:
        return hmac.new(self.secret, data, hashlib.sha256).hexdigest()

    def verifies(self, data: bytes, mac: str | None) -> bool:
        return mac is not None and hmac.compare_digest(self.mac(data), mac)


# A warehouse in memory (a drill's sandbox, a unit test) lives and dies with its process: so does its key.
_MEMORY_KEY = AuditKey.from_secret(os.urandom(32))
_KEYS: dict[Path, AuditKey] = {}


def database_path(con: duckdb.DuckDBPyConnection) -> Path | None:
    """The warehouse file behind the connection (None in memory)."""
    row = con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()
    return Path(row[0]) if row and row[0] else None


def _beside_warehouse(con: duckdb.DuckDBPyConnection, env: str, name: str) -> Path | None:
    if os.environ.get(env):
        return Path(os.environ[env])
    db = database_path(con)
    return None if db is None else db.parent / "audit" / name


def key_path(con: duckdb.DuckDBPyConnection) -> Path | None:
    """Where the connection's audit key is kept: $RELOPS_AUDIT_KEY_FILE, else
    `audit/audit.key` beside the warehouse file; None for a warehouse in memory."""
    return _beside_warehouse(con, KEY_FILE_ENV, "audit.key")


def anchor_path(con: duckdb.DuckDBPyConnection) -> Path | None:
    """Where the head is anchored: $RELOPS_AUDIT_ANCHOR_FILE, else `audit/anchor.json` beside
    the warehouse file; None for a warehouse in memory."""
    return _beside_warehouse(con, ANCHOR_FILE_ENV, "anchor.json")


def _read_key(path: Path) -> AuditKey:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        key = AuditKey.from_secret(bytes.fromhex(doc["secret"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AuditError(f"the audit key {path} is unreadable: {exc}") from None
    if doc.get("key_id") not in (None, key.key_id):
        raise AuditError(f"the audit key {path} is damaged: its key_id does not match its secret")
    return key


def _write_private(path: Path, data: bytes) -> None:
    """Create `path` readable by its owner only; FileExistsError when it exists."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _first_keyed(con: duckdb.DuckDBPyConnection) -> tuple[int, str] | None:
    row = con.execute("SELECT seq, key_id FROM events WHERE mac IS NOT NULL ORDER BY seq LIMIT 1").fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


def load_key(con: duckdb.DuckDBPyConnection, *, create: bool = False) -> AuditKey | None:
    """The audit key of the connection's warehouse; None when it has none yet (and `create` is
    False). With `create`, a missing key is made — unless events were already keyed, when a new
    key would disown them: then AuditError says to restore the key file."""
    path = key_path(con)
    if path is None:
        return _MEMORY_KEY
    if path in _KEYS and path.exists():
        return _KEYS[path]
    if path.exists():
        _KEYS[path] = _read_key(path)
        return _KEYS[path]
    if not create:
        return None
    keyed = _first_keyed(con)
    if keyed is not None:
        raise AuditError(f"the audit key {path} is missing, but the event log is keyed (from seq {keyed[0]}, key "
                         f"{keyed[1]}): restore the key file (or point {KEY_FILE_ENV} at it); nothing was recorded")
    secret = os.urandom(32)
    key = AuditKey.from_secret(secret)
    doc = {"key_id": key.key_id, "secret": secret.hex(), "created_at": format_ts(_now()),
           "about": "relops audit key: HMAC-SHA256 of every event. Keep it secret and keep it: without it the "
                    "event log cannot be verified or extended."}
    with contextlib.suppress(FileExistsError):  # another process made it first
        _write_private(path, (json.dumps(doc, indent=2) + "\n").encode())
    _KEYS[path] = _read_key(path)
    return _KEYS[path]


def _anchor_bytes(seq: int, digest: str) -> bytes:
    return f"relops-anchor:{int(seq)}:{digest}".encode()


@dataclass(frozen=True)
class Anchor:
    """A head recorded outside the warehouse: the log must still hold row `seq` with `hash`."""

    seq: int
    hash: str
    mac: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_anchor(con: duckdb.DuckDBPyConnection) -> Anchor | None:
    """The anchored head, or None when there is none yet. AuditError when it is unreadable."""
    path = anchor_path(con)
    if path is None or not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return Anchor(int(doc["seq"]), str(doc["hash"]), doc.get("mac"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AuditError(f"the audit anchor {path} is unreadable: {exc}") from None


def _hash_at(con: duckdb.DuckDBPyConnection, seq: int) -> str | None:
    row = con.execute("SELECT hash FROM events WHERE seq = ?", [seq]).fetchone()
    return None if row is None else str(row[0])


def anchor_problem(con: duckdb.DuckDBPyConnection) -> str | None:
    """Why the log does not reach its anchor (truncated or rewritten, or the anchor edited), or
    None. Cheap (two lookups): what commands check before acting on the log's tables."""
    try:
        anchor = read_anchor(con)
    except AuditError as exc:
        return str(exc)
    if anchor is None or anchor.seq == 0:
        return None
    key = load_key(con)
    if key is not None and not key.verifies(_anchor_bytes(anchor.seq, anchor.hash), anchor.mac):
        return f"the audit anchor {anchor_path(con)} has no valid MAC: it was edited"
    found = _hash_at(con, anchor.seq)
    if found is None:
        return (f"the event log ends at seq {head(con)[0]}, but seq {anchor.seq} was anchored: events were removed "
                "from the end")
    if found != anchor.hash:
        return f"event {anchor.seq} is not the one anchored: the log was rewritten at or before it"
    return None


def advance_anchor(con: duckdb.DuckDBPyConnection) -> Anchor | None:
    """Anchor the current head (after a commit). Never moves backwards, and never moves on from
    an anchor the log no longer holds (that evidence of truncation or rewrite is kept for
    `verify_chain`). Returns the anchor in force."""
    path = anchor_path(con)
    if path is None:
        return None
    try:
        current = read_anchor(con)
    except AuditError:
        return None  # leave a damaged anchor for verification to report
    seq, digest = head(con)
    if current is not None and (seq <= current.seq or _hash_at(con, current.seq) != current.hash):
        return current
    key = load_key(con)
    anchor = Anchor(seq, digest, key.mac(_anchor_bytes(seq, digest)) if key else None)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**anchor.as_dict(), "written_at": format_ts(_now())}) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return anchor


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
        _APPENDED.discard(id(con))
        raise
    con.execute("COMMIT")
    if id(con) in _APPENDED:
        _APPENDED.discard(id(con))
        advance_anchor(con)


# Connections (by id) that appended an event in the open transaction: its commit anchors the head.
_APPENDED: set[int] = set()


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
        key = load_key(con, create=True)
        assert key is not None  # create=True makes one or raises
        last_seq, last_hash = head(con)
        row["seq"] = last_seq + 1
        row["prev_hash"] = last_hash
        row["hash"] = event_hash(row)
        row["key_id"], row["mac"] = key.key_id, key.mac(canonical_bytes(row))
        columns = COLUMNS + KEY_COLUMNS
        con.execute(
            f"INSERT INTO events ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
            [
                _canonical_json(row[c]) if c == "payload" and row[c] is not None else row[c]
                for c in columns
            ],
        )
        _APPENDED.add(id(con))
    return {c: row[c] for c in COLUMNS + KEY_COLUMNS}


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
    kind: str  # edited | missing | broken_link | duplicate | bad_seq | forged | no_key | truncated | head_mismatch | anchor
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


def _key_for_verification(con: duckdb.DuckDBPyConnection) -> tuple[AuditKey | None, str | None]:
    try:
        return load_key(con), None
    except AuditError as exc:
        return None, str(exc)


def check_event(con: duckdb.DuckDBPyConnection, seq: int | None) -> tuple[dict[str, Any] | None, str | None]:
    """One event, checked on its own: (the event with a parsed payload, None) when its hash
    matches its contents and its MAC verifies under the audit key; (the event or None, why not)
    otherwise. What commands call before acting on a row that names the event."""
    if seq is None:
        return None, "it names no event"
    values = con.execute(
        f"SELECT {', '.join(COLUMNS + KEY_COLUMNS)} FROM events WHERE seq = ?", [int(seq)]
    ).fetchone()
    if values is None:
        return None, f"event {seq} is not in the log"
    row = dict(zip(COLUMNS + KEY_COLUMNS, values, strict=True))
    event = _row_dict(values[: len(COLUMNS)])
    if event_hash(row) != row["hash"]:
        return event, f"event {seq} was edited after it was written (its hash does not match)"
    key, problem = _key_for_verification(con)
    if row["mac"] is None:
        first = _first_keyed(con)
        if first is not None and first[0] < int(seq):
            return event, f"event {seq} carries no MAC after keyed events: it was not written by relops"
        return event, None  # written before keying (hash-chained only)
    if key is None:
        return event, problem or f"the audit key is missing ({key_path(con)}): event {seq} cannot be verified"
    if row["key_id"] != key.key_id or not key.verifies(canonical_bytes(row), row["mac"]):
        return event, f"event {seq} has no valid MAC under the audit key: it was forged or rewritten"
    return event, None


def verify_chain(
    con: duckdb.DuckDBPyConnection, *, expect_head: tuple[int, str] | None = None, use_anchor: bool = True,
) -> VerifyResult:
    """Recompute every row's hash, link and MAC, in seq order, and report each problem with its
    seq; then check the head against `expect_head` (recorded elsewhere by `head()`) and the
    anchor beside the warehouse (`use_anchor`).

    Detects edited rows, deleted rows, renumbered, reordered or inserted rows, rows forged or
    rewritten without the audit key, and — against a recorded head or the anchor — rows removed
    from the end."""
    problems: list[Problem] = []

    def add(seq: int, kind: str, message: str) -> None:
        problems.append(Problem(seq, kind, message))

    key, key_problem = _key_for_verification(con)
    prev_seq, prev_hash = 0, GENESIS_HASH
    checked = unkeyed_legacy = 0
    keyed_from: int | None = None
    heads: dict[int, str] = {}
    wanted = {int(expect_head[0])} if expect_head is not None else set()
    anchor: Anchor | None = None
    if use_anchor:
        try:
            anchor = read_anchor(con)
        except AuditError as exc:
            add(0, "anchor", str(exc))
    if anchor is not None:
        wanted.add(anchor.seq)
    columns = COLUMNS + KEY_COLUMNS
    cur = con.execute(f"SELECT {', '.join(columns)} FROM events ORDER BY seq, event_id")
    while batch := cur.fetchmany(10_000):
        for values in batch:
            row = dict(zip(columns, values, strict=True))  # payload stays text: canonical_bytes parses it
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
                data: bytes | None = canonical_bytes(row)
                recomputed = hashlib.sha256(data).hexdigest() if data is not None else ""
            except (TypeError, ValueError, KeyError, AttributeError) as exc:
                data, recomputed = None, f"<unhashable: {exc}>"
            if recomputed != row["hash"]:
                add(seq, "edited", "contents do not match the row's hash: the row was edited (or renumbered) after "
                    "it was written")
            if row["mac"] is None:
                if keyed_from is None:
                    unkeyed_legacy += 1
                else:
                    add(seq, "forged", "no MAC after keyed events: this row was not written by relops (forged)")
            else:
                keyed_from = seq if keyed_from is None else keyed_from
                if key is None:
                    if keyed_from == seq:
                        add(seq, "no_key", key_problem or f"the audit key is missing ({key_path(con)}): the keyed "
                            f"events from seq {seq} on cannot be verified; restore it")
                elif row["key_id"] != key.key_id or data is None or not key.verifies(data, row["mac"]):
                    add(seq, "forged", "the MAC does not verify under the audit key: this row was forged, or "
                        "rewritten with recomputed hashes")
            if seq in wanted:
                heads[seq] = row["hash"]
            prev_seq, prev_hash = seq, row["hash"]
    found_head = (prev_seq, prev_hash)

    def check_head(want_seq: int, want_hash: str, recorded: str) -> None:
        if want_seq == 0:
            if want_hash != GENESIS_HASH:
                add(0, "head_mismatch", f"{recorded} at seq 0 must have the genesis hash (64 zeros)")
        elif want_seq not in heads:
            add(want_seq, "truncated", f"{recorded} seq {want_seq} is not in the log (it ends at seq {prev_seq}): "
                "events were removed from the end")
        elif heads[want_seq] != want_hash:
            add(want_seq, "head_mismatch", f"the row at seq {want_seq} has hash {heads[want_seq]}, {recorded} says "
                f"{want_hash}: the log was rewritten at or before seq {want_seq}")

    notes: list[str] = []
    if expect_head is not None:
        check_head(int(expect_head[0]), str(expect_head[1]), "the recorded head")
    if anchor is not None:
        if key is not None and not key.verifies(_anchor_bytes(anchor.seq, anchor.hash), anchor.mac):
            add(anchor.seq, "anchor", f"the anchor {anchor_path(con)} has no valid MAC: it was edited")
        else:
            check_head(anchor.seq, anchor.hash, f"the anchor ({anchor_path(con)})")
    if expect_head is None and anchor is None:
        notes.append(
            "no anchored or recorded head: removal of the newest events cannot be detected"
        )
    if unkeyed_legacy:
        notes.append(f"{unkeyed_legacy} event(s) written before keying are hash-chained only")
    return VerifyResult(
        ok=not problems, checked=checked, head=found_head, problems=problems,
        head_checked=expect_head is not None or anchor is not None, notes=notes,
    )
