"""The release pointer, as a serving application reads it. Standard library only.

relops keeps one JSON file per workflow, `<home>/registry/<workflow>.json`, saying which
release serves the workflow's traffic. relops writes it atomically (a temporary file in the same
folder, fsync, rename), so a reader sees either the previous complete file or the next one,
never a partial one; `seq` increases by one with every change. A serving application reads this
file, never the warehouse (DuckDB locks the warehouse file against other processes). Importing
this module imports nothing heavy (no duckdb, dagster or pandas).

    from relops_pipeline.registry import read_pointer, choose_release

    pointer = read_pointer("/srv/relops-home", "support-triage")   # a home or its registry/ folder
    release = choose_release(pointer, request_key=user_id)          # "v1.4.0" for ~10 % of users
    if pointer.shadow:
        ...  # optionally mirror the request to pointer.shadow; never show its answer

Reading on every request is cheap (one small file); `CachedPointer` re-reads only when the file
was replaced.

The file (format "relops.pointer/1"): {"format", "workflow", "seq", "live", "canary",
"canary_percent", "shadow", "stage", "last_known_good", "updated_at", "updated_by", "reason",
"event_seq"}. `live` serves the traffic that is not the canary's; `canary` (when set) serves
`canary_percent` % of requests (the canary and ramp stages); `shadow` receives mirrored requests
whose answers are discarded; `last_known_good` is the release a rollback of `live` goes to.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

POINTER_FORMAT = "relops.pointer/1"
REGISTRY_DIRNAME = "registry"

# The same rule as relops_pipeline.lib.evals.model.validate_key (repeated here to stay light):
# names reach file paths, so nothing but these characters.
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}\Z")


class PointerError(ValueError):
    """A pointer file is missing, unreadable or not a relops pointer."""


@dataclass(frozen=True)
class Pointer:
    """One workflow's release pointer. `updated_at` is an aware UTC datetime."""

    workflow: str
    live: str | None
    canary: str | None
    canary_percent: float | None
    shadow: str | None
    last_known_good: str | None
    seq: int
    updated_at: datetime | None
    stage: str | None = None


def _check_name(kind: str, value: Any) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value) or "--" in value or value.endswith("-"):
        raise PointerError(f"invalid {kind} {value!r}")
    return value


def pointer_file(registry_dir: str | os.PathLike, workflow: str) -> Path:
    """Where a workflow's pointer lives inside a registry folder."""
    return Path(registry_dir) / f"{_check_name('workflow', workflow)}.json"


def _locate(home_or_registry_dir: str | os.PathLike, workflow: str) -> Path:
    base = Path(home_or_registry_dir)
    direct = pointer_file(base, workflow)
    if direct.exists():
        return direct
    nested = pointer_file(base / REGISTRY_DIRNAME, workflow)
    if nested.exists():
        return nested
    raise PointerError(f"no pointer for workflow {workflow!r} in {base} (nor in {base / REGISTRY_DIRNAME})")


def parse_pointer(data: bytes | str, workflow: str | None = None) -> Pointer:
    """A pointer from the file's bytes; raises PointerError when it is not a valid pointer
    (or names another workflow than `workflow`)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PointerError(f"pointer is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != POINTER_FORMAT:
        raise PointerError(f"not a relops pointer (format {POINTER_FORMAT!r} expected)")
    name = _check_name("workflow", doc.get("workflow"))
    if workflow is not None and name != workflow:
        raise PointerError(f"pointer names workflow {name!r}, expected {workflow!r}")
    seq = doc.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise PointerError(f"pointer seq {seq!r}: expected an integer >= 0")
    releases = {}
    for field in ("live", "canary", "shadow", "last_known_good"):
        value = doc.get(field)
        releases[field] = None if value is None else _check_name(field, value)
    percent = doc.get("canary_percent")
    if percent is not None:
        if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 <= percent <= 100:
            raise PointerError(f"canary_percent {percent!r}: expected a number in [0, 100]")
        percent = float(percent)
    updated_at = doc.get("updated_at")
    try:
        updated = datetime.fromisoformat(updated_at) if isinstance(updated_at, str) else None
    except ValueError:
        raise PointerError(f"updated_at {updated_at!r} is not an ISO 8601 time") from None
    stage = doc.get("stage")
    return Pointer(
        workflow=name,
        seq=seq,
        canary_percent=percent,
        updated_at=updated,
        stage=stage if isinstance(stage, str) else None,
        **releases,
    )


def read_pointer(home_or_registry_dir: str | os.PathLike, workflow: str) -> Pointer:
    """Read a workflow's pointer from a relops home (its `registry/` folder) or from the
    registry folder itself. Raises PointerError when there is none or it is invalid."""
    path = _locate(home_or_registry_dir, workflow)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PointerError(f"cannot read {path}: {exc}") from None
    return parse_pointer(data, workflow)


def bucket(pointer: Pointer, request_key: str) -> float:
    """The request's stable position in [0, 100): SHA-256 of workflow, canary release and key.

    Salting with the canary release gives each canary its own slice of users, and for one
    canary the slices are nested: raising the share from 10 % to 50 % keeps the first 10 %."""
    salt = f"{pointer.workflow}\x1f{pointer.canary or ''}\x1f{request_key}".encode()
    return int.from_bytes(hashlib.sha256(salt).digest()[:8], "big") % 1_000_000 / 10_000


def choose_release(pointer: Pointer, request_key: str) -> str | None:
    """The release that should answer this request: the canary for a stable `canary_percent` %
    share of request keys (use a user or session id so a user sees one release), else live.
    None when nothing is deployed."""
    if pointer.canary and pointer.canary_percent and bucket(pointer, str(request_key)) < pointer.canary_percent:
        return pointer.canary
    return pointer.live if pointer.live else pointer.canary


class CachedPointer:
    """A pointer that re-reads its file only when the file was replaced (inode, size or mtime
    changed): cheap enough to call `get()` on every request."""

    def __init__(self, home_or_registry_dir: str | os.PathLike, workflow: str):
        self.workflow = workflow
        self.path = _locate(home_or_registry_dir, workflow)
        self._stamp: tuple[int, int, int] | None = None
        self._pointer: Pointer | None = None

    def get(self) -> Pointer:
        """The current pointer (the last good one read if the file cannot be read now)."""
        try:
            st = os.stat(self.path)
        except OSError:
            if self._pointer is not None:
                return self._pointer
            raise PointerError(f"no pointer at {self.path}") from None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self._stamp or self._pointer is None:
            self._pointer = parse_pointer(self.path.read_bytes(), self.workflow)
            self._stamp = stamp
        return self._pointer
