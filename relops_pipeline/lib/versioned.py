"""Versioned configurations: a workflow's configuration kept as a sequence of recorded versions.

A versioned configuration (the gate thresholds of lib/gates/thresholds.py, the signal alert
rules of lib/alerts/rules.py) is, per workflow, a sequence of versions 1, 2, 3, ... in its own
warehouse table. A version is immutable once recorded and complete (it is the whole
configuration, not a change to the previous one); it carries the author and the reason of the
change and the time it was recorded. Its configuration is stored as canonical JSON next to its
SHA-256 (`config_hash`), checked on every read, and every version is also an event (of the
configuration's own kind) in the hash-chained event log (relops_pipeline.lib.audit): the row
names the event's seq and the event carries the version and the hash, so `verify` ties the
table to the chain. Version 0 means "never recorded": the configuration's built-in default.

The workflow file can seed version 1 (author: the workflow's owner); after that the file is
not a source of truth, and the module that owns the configuration warns when it differs.

`VersionedConfig` holds the mechanism, parameterised by the table, the event kind, the words
used in messages and the configuration's parse / config functions. The table has the columns
of ROW_COLUMNS (created by the warehouse migrations, lib/warehouse.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

import duckdb

from relops_pipeline.lib import audit
from relops_pipeline.lib.evals.model import validate_key

NO_OWNER_AUTHOR = "workflow configuration (no owner set)"

# Columns of a versions table; event_seq is the seq of the version's event.
ROW_COLUMNS = ("workflow", "version", "config", "config_hash", "author", "reason", "created_at", "event_seq")


class Versioned(Protocol):
    """What a versioned configuration's value carries: its version, author and reason."""

    version: int
    author: str | None
    reason: str | None


# The value a version reads as: any object with settable `version`, `author` and `reason`.
T = TypeVar("T", bound=Versioned)


def canonical_json(config: Mapping[str, Any]) -> str:
    """The configuration's canonical JSON (sorted keys, compact, no NaN): what a version stores."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the configuration's canonical JSON (sorted keys, compact)."""
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class VersionedConfig(Generic[T]):
    """The versions of one kind of configuration.

    - table: the versions table (columns ROW_COLUMNS), e.g. "threshold_versions".
    - event_kind: the kind of each version's event, e.g. "thresholds_version".
    - label: how messages name a version, e.g. "threshold version" ("threshold version
      doc-qa v2 ...", "no threshold version 3 for workflow 'doc-qa'").
    - subject: what the versions are of, e.g. "thresholds" ("thresholds for workflow doc-qa"
      is where a recorded value's parse errors point).
    - change: how the author/reason errors name a change, e.g. "a threshold change".
    - error: the exception raised (a ValueError subclass of the owning module).
    - parse(raw, where): validate a raw configuration (a stored config, or what the caller
      records) into the value; raises `error` naming `where`.
    - config_of(value): the value's configuration as stored (a JSON-able mapping).
    - empty(): the value of version 0 (nothing recorded).
    - seed_reason: the reason of a version 1 seeded from the workflow file.
    - list_versions_when_missing: whether `at` names the recorded versions when asked for one
      that does not exist.
    """

    table: str
    event_kind: str
    label: str
    subject: str
    change: str
    error: type[ValueError]
    parse: Callable[[Any, str], T]
    config_of: Callable[[T], dict[str, Any]]
    empty: Callable[[], T]
    seed_reason: str
    list_versions_when_missing: bool = False

    # -----------------------------------------------------------------------------------------
    # Reading

    def rows(
        self, con: duckdb.DuckDBPyConnection, workflow: str, version: int | None = None, latest: bool = False
    ) -> list[dict[str, Any]]:
        """The workflow's rows (all, one version, or the latest), oldest first, each config
        parsed from JSON; raises `error` when a row's config does not match its config_hash."""
        sql = f"SELECT {', '.join(ROW_COLUMNS)} FROM {self.table} WHERE workflow = ?"
        params: list[Any] = [workflow]
        if version is not None:
            sql += " AND version = ?"
            params.append(int(version))
        sql += " ORDER BY version DESC LIMIT 1" if latest else " ORDER BY version"
        out = []
        for values in con.execute(sql, params).fetchall():
            row = dict(zip(ROW_COLUMNS, values, strict=False))
            stored = json.loads(row["config"])
            if config_hash(stored) != row["config_hash"]:
                raise self.error(
                    f"{self.label} {workflow} v{row['version']} does not match its config_hash: the row was "
                    f"edited after it was recorded; run `relops audit verify`"
                )
            problem = self.event_problem(con, row)
            if problem:
                raise audit.TamperedError(f"{self.label} {workflow} v{row['version']}: {problem}; "
                                          "run `relops audit verify`")
            row["config"] = stored
            out.append(row)
        return out

    def event_problem(self, con: duckdb.DuckDBPyConnection, row: Mapping[str, Any]) -> str | None:
        """Why a row is not backed by the keyed event log (its event fails verification, or
        records another workflow, version or config_hash), or None."""
        event, why = audit.check_event(con, row["event_seq"])
        if why:
            return why
        assert event is not None
        payload = event.get("payload") or {}
        if (event["kind"] != self.event_kind or event["workflow"] != row["workflow"]
                or payload.get("version") != row["version"] or payload.get("config_hash") != row["config_hash"]):
            return f"does not match its event at seq {row['event_seq']} (edited after it was recorded)"
        return None

    def load(self, row: dict[str, Any]) -> T:
        """The value of a row from `rows`, with its version, author and reason."""
        value = self.parse(row["config"], f"{self.table} {row['workflow']} v{row['version']}")
        value.version = int(row["version"])
        value.author = row["author"]
        value.reason = row["reason"]
        return value

    def current(self, con: duckdb.DuckDBPyConnection, workflow: str) -> T:
        """The latest recorded version; `empty()` (version 0) when none was recorded."""
        rows = self.rows(con, workflow, latest=True)
        return self.load(rows[0]) if rows else self.empty()

    def at(self, con: duckdb.DuckDBPyConnection, workflow: str, version: int) -> T:
        """A given version (0: `empty()`); raises `error` when it was never recorded."""
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise self.error(f"{self.label} must be an integer >= 0, got {version!r}")
        if version == 0:
            return self.empty()
        rows = self.rows(con, workflow, version=version)
        if not rows:
            message = f"no {self.label} {version} for workflow {workflow!r}"
            if self.list_versions_when_missing:
                have = [r["version"] for r in self.rows(con, workflow)]
                known = (f"recorded versions: {', '.join(map(str, have))}" if have
                         else "none recorded (version 0 is the defaults)")
                message += f"; {known}"
            raise self.error(message)
        return self.load(rows[0])

    def history(self, con: duckdb.DuckDBPyConnection, workflow: str) -> list[dict[str, Any]]:
        """Every recorded version, oldest first: version, config, config_hash, author, reason,
        created_at (naive UTC), event_seq."""
        return [{k: r[k] for k in ROW_COLUMNS if k != "workflow"} for r in self.rows(con, workflow)]

    # -----------------------------------------------------------------------------------------
    # Recording

    def _nonempty(self, name: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(f"{self.change} needs a non-empty {name} (who made it and why)")
        return value.strip()

    def record(
        self,
        con: duckdb.DuckDBPyConnection,
        workflow: str,
        raw: Any,
        *,
        author: str,
        reason: str,
        now: datetime | None = None,
    ) -> T:
        """Record `raw` (parsed with `parse`) as the workflow's next version (latest + 1), with
        an event in the log, in one transaction (the caller's, when one is open). Identical
        configuration to the latest version is a no-op that returns the latest. `now` (naive
        UTC) is the row's created_at; default the current time."""
        try:
            validate_key("workflow", workflow)
        except ValueError as exc:
            raise self.error(str(exc)) from None
        author = self._nonempty("author", author)
        reason = self._nonempty("reason", reason)
        new = self.parse(raw, f"{self.subject} for workflow {workflow}")
        config = self.config_of(new)
        with audit.transaction(con):
            latest = self.current(con, workflow)
            if latest.version > 0 and self.config_of(latest) == config:
                return latest
            version = latest.version + 1
            digest = config_hash(config)
            event = audit.append_event(
                con,
                kind=self.event_kind,
                actor=author,
                reason=reason,
                workflow=workflow,
                payload={"version": version, "previous_version": latest.version, "config_hash": digest,
                         "config": config},
            )
            con.execute(
                f"INSERT INTO {self.table} ({', '.join(ROW_COLUMNS)}) VALUES ({', '.join('?' for _ in ROW_COLUMNS)})",
                [workflow, version, canonical_json(config), digest, author, reason,
                 now or datetime.now(UTC).replace(tzinfo=None), event["seq"]],
            )
        new.version, new.author, new.reason = version, author, reason
        return new

    def seed(self, con: duckdb.DuckDBPyConnection, workflow: str, raw: Any, owner: str | None) -> T | None:
        """Seed version 1 from the workflow file: when nothing is recorded yet, record `raw`
        (author the owner, or NO_OWNER_AUTHOR; reason `seed_reason`) and return None;
        otherwise change nothing and return the latest version, for the caller to compare
        with the file and warn."""
        latest = self.current(con, workflow)
        if latest.version == 0:
            author = owner.strip() if isinstance(owner, str) and owner.strip() else NO_OWNER_AUTHOR
            self.record(con, workflow, raw, author=author, reason=self.seed_reason)
            return None
        return latest

    # -----------------------------------------------------------------------------------------
    # Verifying

    def verify(self, con: duckdb.DuckDBPyConnection) -> list[str]:
        """Cross-check every recorded version against the event log: its config must match its
        config_hash, and the event it names must verify (hash and MAC) and be an `event_kind`
        event for the same workflow and version carrying the same config_hash. Returns the problems (empty: consistent)."""
        problems: list[str] = []
        rows = con.execute(
            "SELECT t.workflow, t.version, t.config, t.config_hash, t.event_seq, e.kind "
            f"FROM {self.table} t LEFT JOIN events e ON e.seq = t.event_seq ORDER BY t.workflow, t.version"
        ).fetchall()
        for workflow, version, config, digest, event_seq, e_kind in rows:
            name = f"{self.label} {workflow} v{version}"
            try:
                stored_hash = config_hash(json.loads(config))
            except ValueError:
                stored_hash = None
            if stored_hash != digest:
                problems.append(f"{name}: config does not match its config_hash (edited after it was recorded)")
            if event_seq is None or e_kind is None:
                problems.append(f"{name}: its event (seq {event_seq}) is missing from the event log")
                continue
            problem = self.event_problem(
                con, {"workflow": workflow, "version": version, "config_hash": digest, "event_seq": event_seq})
            if problem:
                problems.append(f"{name}: {problem}")
        return problems
