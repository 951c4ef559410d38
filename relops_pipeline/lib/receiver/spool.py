"""The receiver's spool: `<landing>/received/<YYYY-MM-DD>/*.otlp.json` (OTLP JSON lines, one
line per acknowledged export request) and `*.langsmith.json` (the LangSmith API's `{post, patch}`
documents, one file per request).

Durability: a payload is written to a dot-prefixed temp file in its day folder (ingestion skips
any path with a part starting with "."), fsynced, renamed to its final name and the folder
fsynced; only then is the request acknowledged. A crash leaves at most temp files, which are
never ingested and are removed at the next start. Files are never rewritten, so ingestion
(relops ingest, the landing sensor) reads each one once; a span sent twice is a duplicate there.

Group commit (`commit`, the OTLP routes): one writer thread takes every request that is waiting,
writes their lines as ONE file with one fsync + rename + directory fsync, and only then releases
all their acks together. Under concurrent load that is one fsync for many requests instead of
one each; alone, a request waits for no one (the writer never waits for a batch to fill).

Back-pressure: the spool's size is the bytes of received files not ingested yet. The ingested
ones are read from the warehouse's ingest_batches (a read-only open that never waits: while a
run holds the warehouse the last answer is kept). Counters live in `received/.receiver.json`,
replaced atomically, and carry over restarts.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RECEIVED_DIR = "received"
STATE_FILE = ".receiver.json"
SUFFIX = ".otlp.json"
LANGSMITH_SUFFIX = ".langsmith.json"  # the LangSmith API's {post, patch} documents
SUFFIXES = (SUFFIX, LANGSMITH_SUFFIX)
GROUP_MAX_BYTES = 64 * 1024 * 1024  # one group-commit file holds up to this much (one request may be more)
COUNTERS = ("requests", "spans", "log_records", "langsmith_requests", "langsmith_runs", "rejected_items", "bytes", "files",
            "unauthorized_401", "too_large_413", "throttled_429", "bad_request_400", "unsupported_415")


def received_dir(landing: Path) -> Path:
    """Where the receiver spools inside a landing folder."""
    return landing / RECEIVED_DIR


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` as `path` whole or not at all: dot-prefixed temp file, fsync, rename,
    directory fsync."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_state(landing: Path) -> dict[str, Any]:
    """The receiver's state file (counters, where it last listened); {} when there is none."""
    try:
        state = json.loads((received_dir(landing) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


@dataclass
class _Waiting:
    """A request's payload waiting for the group-commit writer; `done` is set once it is durable
    (`path`) or failed (`error`)."""

    data: bytes
    done: threading.Event = field(default_factory=threading.Event)
    path: Path | None = None
    error: OSError | None = None


class Spool:
    """The received folder of one landing area: durable writes, spool size, counters."""

    def __init__(self, landing: Path, warehouse: Path | None = None):
        received_dir(landing).mkdir(parents=True, exist_ok=True)
        self.root = received_dir(landing).resolve()
        self.warehouse = warehouse
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}  # received files not known to be ingested: path -> bytes
        self._ingested: set[str] = set()
        self._recent: dict[str, int] = {}  # written since the current refresh began
        self.counters = {k: 0 for k in COUNTERS}
        previous = read_state(landing).get("counters") or {}
        self.counters.update({k: int(v) for k, v in previous.items() if k in COUNTERS and isinstance(v, int)})
        self.info: dict[str, Any] = {}
        self._dirty = True
        self.removed_temp = self._remove_temp_files()
        self._queue: deque[_Waiting] = deque()
        self._queued = threading.Condition()
        self._writer: threading.Thread | None = None
        self._closing = False
        self.refresh()

    def _remove_temp_files(self) -> int:
        """Temp files a crash left (never acknowledged, never ingested)."""
        n = 0
        for tmp in self.root.rglob(".*.tmp"):
            tmp.unlink(missing_ok=True)
            n += 1
        return n

    def count(self, **deltas: int) -> None:
        """Add to the counters (written to the state file by `save`)."""
        with self._lock:
            for k, v in deltas.items():
                self.counters[k] += v
            self._dirty = True

    def write(self, data: bytes | list[bytes], now: datetime | None = None, suffix: str = SUFFIX) -> Path:
        """Store one request's payload (or several requests' lines, as one file) durably;
        returns its final path (only then ack)."""
        now = now or datetime.now(UTC)
        day = self.root / now.strftime("%Y-%m-%d")
        if not day.is_dir():
            day.mkdir(parents=True, exist_ok=True)
            _fsync_dir(self.root)
        path = day / f"{now.strftime('%H%M%S%f')}-{uuid.uuid4().hex[:12]}{suffix}"
        if isinstance(data, list):
            data = b"".join(data)
        atomic_write(path, data)
        with self._lock:
            self._pending[str(path)] = self._recent[str(path)] = len(data)
            self.counters["files"] += 1
            self._dirty = True
        return path

    def commit(self, data: bytes) -> Path:
        """Store one request's OTLP JSON line(s) durably by group commit: returns once the file
        holding them (maybe with other requests' lines) is renamed and fsynced; OSError when it
        could not be written (the request is then not acknowledged)."""
        waiting = _Waiting(data)
        with self._queued:
            if self._closing:
                raise OSError("the receiver is stopping")
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_groups, name="relops-spool-writer", daemon=True)
                self._writer.start()
            self._queue.append(waiting)
            self._queued.notify()
        waiting.done.wait()
        if waiting.error is not None:
            raise waiting.error
        assert waiting.path is not None
        return waiting.path

    def _next_group(self) -> list[_Waiting] | None:
        """The requests waiting now (up to GROUP_MAX_BYTES, at least one); None once closed and empty."""
        with self._queued:
            while not self._queue:
                if self._closing:
                    return None
                self._queued.wait()
            group = [self._queue.popleft()]
            size = len(group[0].data)
            while self._queue and size + len(self._queue[0].data) <= GROUP_MAX_BYTES:
                group.append(self._queue.popleft())
                size += len(group[-1].data)
            return group

    def _write_groups(self) -> None:
        """The group-commit writer: one file (write, fsync, rename, directory fsync) per group of
        waiting requests, then every request of the group released."""
        while (group := self._next_group()) is not None:
            path: Path | None = None
            error: OSError | None = None
            try:
                path = self.write([w.data for w in group])
            except Exception as exc:  # any failure: every waiter must be released, with the reason
                error = exc if isinstance(exc, OSError) else OSError(f"cannot write the spool: {exc!r}")
            for w in group:
                w.path, w.error = path, error
                w.done.set()

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop the group-commit writer once what is queued is written."""
        with self._queued:
            self._closing = True
            self._queued.notify_all()
            writer = self._writer
        if writer is not None:
            writer.join(timeout_s)

    def pending_bytes(self) -> int:
        """Bytes received and not ingested yet (as of the last refresh, plus writes since)."""
        with self._lock:
            return sum(self._pending.values())

    def _ingested_files(self) -> set[str] | None:
        """source_file of ingest_batches under the received folder; None when the warehouse is
        held by a writer right now (DuckDB then refuses even a read-only open)."""
        if self.warehouse is None or not self.warehouse.exists():
            return set()
        import duckdb

        try:
            con = duckdb.connect(str(self.warehouse), read_only=True)
        except duckdb.Error:
            return None
        try:
            rows = con.execute("SELECT DISTINCT source_file FROM ingest_batches WHERE starts_with(source_file, ?)",
                               [str(self.root.resolve())]).fetchall()
        except duckdb.Error:
            return None
        finally:
            con.close()
        return {r[0] for r in rows}

    def refresh(self) -> None:
        """Re-read which received files exist and which are ingested."""
        with self._lock:
            self._recent = {}
        ingested = self._ingested_files()
        on_disk = {}
        for f in (f for sfx in SUFFIXES for f in self.root.rglob(f"*{sfx}")):
            if not any(p.startswith(".") for p in f.relative_to(self.root).parts):
                try:
                    on_disk[str(f.resolve())] = f.stat().st_size
                except FileNotFoundError:
                    continue
        with self._lock:
            if ingested is not None:
                self._ingested = ingested
            self._pending = {p: n for p, n in on_disk.items() if p not in self._ingested}
            self._pending.update(self._recent)
            self._dirty = True

    def save(self, extra: dict[str, Any] | None = None) -> None:
        """Write the state file atomically (counters, spool size, `extra`) when something changed."""
        with self._lock:
            if not self._dirty and not extra:
                return
            if extra:
                self.info.update(extra)
            state = {**self.info, "counters": dict(self.counters), "spool_bytes": sum(self._pending.values()),
                     "spool_files": len(self._pending), "updated_at": datetime.now(UTC).isoformat(timespec="seconds")}
            self._dirty = False
        atomic_write(self.root / STATE_FILE, json.dumps(state, indent=1).encode("utf-8"))

    def run_housekeeping(self, stop: threading.Event, every_s: float = 2.0) -> None:
        """Until `stop`: refresh the spool size and save the state every `every_s` seconds."""
        while not stop.wait(every_s):
            try:
                self.refresh()
                self.save()
            except OSError:
                time.sleep(every_s)
