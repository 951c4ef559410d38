"""Registry state: one row per workflow in `registry_state`, and its pointer file.

The warehouse row is the record; the pointer file (`<registry_dir>/<workflow>.json`, read by
serving applications through `relops_pipeline.registry`) is derived from it and can always be
re-derived (`sync_pointer`). `write_pointer` is atomic and never moves a pointer backwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

# Re-exported: registry/rollout.py imports utc_naive from here.
from relops_pipeline.lib.timeutil import utc_naive as utc_naive  # noqa: F401
from relops_pipeline.registry import POINTER_FORMAT, PointerError, parse_pointer, pointer_file

try:  # POSIX: serialise compare-and-replace of one pointer between processes
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

STAGES = ("shadow", "canary", "ramp", "full")
IN_FLIGHT = ("shadow", "canary", "ramp")  # a candidate is being rolled out
ROLLED_BACK = "rolled_back"

STATE_COLUMNS = (
    "workflow", "seq", "live", "canary", "canary_percent", "shadow", "stage", "last_known_good",
    "updated_by", "reason", "event_seq", "updated_at",
)


class RegistryError(ValueError):
    """A registry request is invalid or cannot be carried out; the message says why."""


class StalePointerError(RegistryError):
    """The pointer on disk is newer than the state being written (it never goes backwards)."""


@dataclass(frozen=True)
class RegistryState:
    """A workflow's release state. seq 0 means nothing was ever recorded.

    stage: shadow | canary | ramp (a candidate in flight: `shadow` or `canary` names it),
    full (the last rollout completed), rolled_back (the last change was a rollback), or None."""

    workflow: str
    seq: int = 0
    live: str | None = None
    canary: str | None = None
    canary_percent: float | None = None
    shadow: str | None = None
    stage: str | None = None
    last_known_good: str | None = None
    updated_by: str | None = None
    reason: str | None = None
    event_seq: int | None = None
    updated_at: datetime | None = None

    @property
    def candidate(self) -> str | None:
        """The release being rolled out (in shadow, canary or ramp), if any."""
        if self.stage in ("canary", "ramp"):
            return self.canary
        if self.stage == "shadow":
            return self.shadow
        return None

    def stage_of(self, release: str) -> str | None:
        """Where `release` is now: shadow | canary | ramp | live | None."""
        if release and release == self.candidate:
            return self.stage
        if release and release == self.live:
            return "live"
        return None

    def releases(self) -> dict[str, Any]:
        """The routing part (what a pointer says), for event payloads and comparisons."""
        return {
            "live": self.live, "canary": self.canary, "canary_percent": self.canary_percent,
            "shadow": self.shadow, "stage": self.stage, "last_known_good": self.last_known_good,
        }

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["updated_at"] = self.updated_at.isoformat() if self.updated_at else None
        return d

    def next(self, **changes: Any) -> RegistryState:
        return replace(self, seq=self.seq + 1, **changes)


def get_state(con: duckdb.DuckDBPyConnection, workflow: str) -> RegistryState:
    """The workflow's current state (seq 0 and nothing set when never recorded)."""
    row = con.execute(
        f"SELECT {', '.join(STATE_COLUMNS)} FROM registry_state WHERE workflow = ?", [workflow]
    ).fetchone()
    if row is None:
        return RegistryState(workflow=workflow)
    return RegistryState(**dict(zip(STATE_COLUMNS, row, strict=False)))


def list_states(con: duckdb.DuckDBPyConnection) -> list[RegistryState]:
    """Every workflow's state, by workflow name."""
    rows = con.execute(f"SELECT {', '.join(STATE_COLUMNS)} FROM registry_state ORDER BY workflow").fetchall()
    return [RegistryState(**dict(zip(STATE_COLUMNS, r, strict=False))) for r in rows]


def put_state(con: duckdb.DuckDBPyConnection, state: RegistryState) -> None:
    """Insert or replace the workflow's row (callers hold a transaction)."""
    con.execute(
        f"INSERT OR REPLACE INTO registry_state ({', '.join(STATE_COLUMNS)}) "
        f"VALUES ({', '.join('?' for _ in STATE_COLUMNS)})",
        [getattr(state, c) for c in STATE_COLUMNS],
    )


# ---------------------------------------------------------------------------------------------
# The pointer file


def pointer_doc(state: RegistryState) -> dict[str, Any]:
    """The pointer file's content for a state (see relops_pipeline.registry)."""
    updated = state.updated_at
    return {
        "format": POINTER_FORMAT,
        "workflow": state.workflow,
        "seq": int(state.seq),
        "live": state.live,
        "canary": state.canary,
        "canary_percent": state.canary_percent,
        "shadow": state.shadow,
        "stage": state.stage,
        "last_known_good": state.last_known_good,
        "updated_at": updated.replace(tzinfo=UTC).isoformat() if updated else None,
        "updated_by": state.updated_by,
        "reason": state.reason,
        "event_seq": state.event_seq,
    }


def pointer_bytes(state: RegistryState) -> bytes:
    return (json.dumps(pointer_doc(state), indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


@contextlib.contextmanager
def _locked(registry_dir: Path, workflow: str) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(registry_dir / f".{workflow}.lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def pointer_seq_on_disk(registry_dir: str | os.PathLike, workflow: str) -> int | None:
    """The seq of the pointer file as it is now (None when there is none or it is unreadable)."""
    path = pointer_file(registry_dir, workflow)
    try:
        return parse_pointer(path.read_bytes(), workflow).seq
    except (OSError, PointerError):
        return None


def write_pointer(registry_dir: str | os.PathLike, state: RegistryState) -> Path:
    """Write the state's pointer atomically and return its path.

    A temporary file in the same folder is written, fsynced, made world-readable and renamed
    over the pointer (os.replace), then the folder is fsynced: a reader sees the old file or
    the new one, never a partial one, and the new one survives a power cut once this returns.
    Under a lock file, the seq on disk is compared first: a lower seq is refused
    (StalePointerError), the same seq with the same content is a no-op, the same seq with other
    content is refused (two different states cannot share a seq)."""
    if state.seq < 1:
        raise RegistryError(f"{state.workflow}: nothing recorded yet (seq 0): no pointer to write")
    directory = Path(registry_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = pointer_file(directory, state.workflow)
    data = pointer_bytes(state)
    with _locked(directory, state.workflow):
        try:
            current = path.read_bytes()
        except FileNotFoundError:
            current = None
        if current is not None:
            try:
                on_disk = parse_pointer(current, state.workflow).seq
            except PointerError:
                on_disk = None  # not ours or damaged: the record wins
            if on_disk is not None and on_disk > state.seq:
                raise StalePointerError(
                    f"{path} is at seq {on_disk}, newer than seq {state.seq}: not moving the pointer backwards"
                )
            if on_disk == state.seq:
                if current == data:
                    return path
                raise RegistryError(f"{path} holds different content for the same seq {state.seq}")
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{state.workflow}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; the serving application must read it
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(directory)
    return path
