"""What every trace reader shares: its context, how it stages rows, and how it finds the
workflow and release of a span.

A reader is a function `read(con, ctx) -> None` that fills the temp tables `stage_spans`
(schema.STAGE_COLUMNS) and `stage_rejects` (schema.REJECT_COLUMNS), which already exist on
`con`. It must account for every record of the file: each one is a staged span or a staged
reject with a reason. It never writes the warehouse's own tables and never commits.
A reader raises `UnreadableInput` only when the file as a whole cannot be read (not found,
not the format it was asked to read); a bad record is a reject, not an exception.

A reader whose records can complete spans of EARLIER files (LangSmith: a run's end arrives in
a later request than its start) also defines `after_insert(con, load: LoadContext) ->
LoadResult`: the loader calls it inside the file's transaction, after the file's new spans are
in `spans` and before its rejects are kept. It accounts for the records it took over (in
`LoadResult`; its rejects go to `stage_rejects`), may update spans and its own tables, and
records every span it changed in `span_updates` (so the changed days are recomputed). Whatever
it writes commits or rolls back with the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from relops_pipeline.lib.schema import RAW_REJECT_CAP, REJECT_COLUMNS, STAGE_COLUMNS
from relops_pipeline.lib.timeutil import utc_naive

# Where a span's workflow and release are found, in order of preference. Keys are looked up
# in a flat map of the span's attributes merged over its resource attributes, plus the
# pseudo-attributes readers add for fields that are not attributes in their format
# (`langfuse.release`, `langfuse.version`, `langfuse.trace.name`, `langsmith.project`,
# `langsmith.revision_id`, `deepeval.name`, ...).
DEFAULT_WORKFLOW_KEYS = (
    "relops.workflow",
    "service.name",
    "ai.telemetry.functionId",
    "langfuse.trace.name",
    "langsmith.project",
    "deepeval.name",
)
DEFAULT_RELEASE_KEYS = (
    "relops.release",
    "service.version",
    "llm.prompt_template.version",
    "langfuse.release",
    "langfuse.version",
    "langsmith.revision_id",
    "deepeval.prompt_version",
)
# Values that name no workflow at all (OTel SDK defaults).
PLACEHOLDER_SERVICE_PREFIX = "unknown_service"


class UnreadableInput(Exception):
    """The file as a whole cannot be read as the requested format."""


@dataclass(frozen=True)
class SourceSettings:
    """How to read one source: where workflow and release come from, and defaults."""

    workflow_keys: tuple[str, ...] = DEFAULT_WORKFLOW_KEYS
    release_keys: tuple[str, ...] = DEFAULT_RELEASE_KEYS
    default_workflow: str | None = None  # used when no key matches

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any] | None) -> SourceSettings:
        m = m or {}
        return cls(
            workflow_keys=tuple(m.get("workflow_keys") or DEFAULT_WORKFLOW_KEYS),
            release_keys=tuple(m.get("release_keys") or DEFAULT_RELEASE_KEYS),
            default_workflow=m.get("default_workflow"),
        )


@dataclass(frozen=True)
class LoadContext:
    """What a reader's `after_insert` hook knows of the file's load (see the module docstring)."""

    batch_id: str
    source_file: str
    started: datetime
    text_cap: int
    # configured price of a model name (settings.Price: input_per_mtok, output_per_mtok) or None
    price_for: Callable[[str | None], Any]


@dataclass
class LoadResult:
    """The records an `after_insert` hook accounted for: `read` of them, `duplicates` merged into
    spans already in the warehouse; the rest it staged as rejects (with their reasons)."""

    read: int = 0
    duplicates: int = 0


@dataclass
class ReadContext:
    path: Path
    settings: SourceSettings = field(default_factory=SourceSettings)
    # The file's index in a batch of small files its reader normalised together beforehand
    # (otlp.prestage); None: read the file itself.
    prestaged: int | None = None


def resolve_workflow(attrs: Mapping[str, Any], settings: SourceSettings) -> str | None:
    for key in settings.workflow_keys:
        value = attrs.get(key)
        if value is None or value == "":
            continue
        value = str(value)
        if key == "service.name" and value.startswith(PLACEHOLDER_SERVICE_PREFIX):
            continue
        return value
    return settings.default_workflow


def resolve_release(attrs: Mapping[str, Any], settings: SourceSettings) -> str | None:
    for key in settings.release_keys:
        value = attrs.get(key)
        if value is not None and value != "":
            return str(value)
    return None


def to_utc_naive(value: Any) -> datetime | None:
    """Parse the time forms real exports use into a naive UTC datetime.

    Accepts ISO 8601 strings (with Z, offsets or none = UTC), epoch numbers (seconds,
    milliseconds, microseconds or nanoseconds, guessed from magnitude; also as strings),
    and [seconds, nanos] pairs (OTel-JS hrtime).
    """
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) and len(value) == 2:
        secs, nanos = value
        return datetime.fromtimestamp(int(secs) + int(nanos) / 1e9, tz=UTC).replace(tzinfo=None)
    if isinstance(value, str):
        s = value.strip()
        if s.lstrip("-").isdigit():
            value = int(s)
        else:
            try:
                dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
            except ValueError:
                return None
            return utc_naive(dt)
    if isinstance(value, (int, float)):
        v = float(value)
        if v > 1e17:
            v /= 1e9
        elif v > 1e14:
            v /= 1e6
        elif v > 1e11:
            v /= 1e3
        return datetime.fromtimestamp(v, tz=UTC).replace(tzinfo=None)
    return None


def first_finish_reason(value: Any) -> str | None:
    """Finish reasons come as a string, an array, or a JSON array in a string."""
    if value is None:
        return None
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("["):
            try:
                value = json.loads(s)
            except ValueError:
                return s.lower() or None
        else:
            return s.lower() or None
    if isinstance(value, (list, tuple)):
        return first_finish_reason(value[0]) if value else None
    return str(value).lower()


def as_text(value: Any) -> str | None:
    """Message content to text: strings stay, anything else becomes compact JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def raw_for_reject(raw: Any) -> str:
    text = raw if isinstance(raw, str) else as_text(raw) or ""
    return text[:RAW_REJECT_CAP]


_STAGE_SCHEMA = pa.schema(
    [
        (
            name,
            {
                "VARCHAR": pa.string(),
                "JSON": pa.string(),
                "TIMESTAMP": pa.timestamp("us"),
                "DOUBLE": pa.float64(),
                "BIGINT": pa.int64(),
            }[typ],
        )
        for name, typ in STAGE_COLUMNS
    ]
)
_REJECT_SCHEMA = pa.schema([("source_line", pa.int64()), ("raw", pa.string()), ("reason", pa.string())])


def stage_rows(con, rows: Iterable[Mapping[str, Any]], rejects: Iterable[Mapping[str, Any]] = ()) -> None:
    """Append Python rows to `stage_spans` / `stage_rejects` (for readers written in Python).

    Each row is a mapping of STAGE_COLUMNS names (missing keys are NULL); `online_scores` and
    `attributes` may be dicts and are serialised to JSON here.
    """
    rows = list(rows)
    if rows:
        cols: dict[str, list] = {name: [] for name, _ in STAGE_COLUMNS}
        for row in rows:
            for name, typ in STAGE_COLUMNS:
                v = row.get(name)
                if typ == "JSON" and v is not None and not isinstance(v, str):
                    v = json.dumps(v, ensure_ascii=False, default=str)
                cols[name].append(v)
        con.complete()  # DuckDB 2.0 refuses register() while a fetchone() result is open
        con.register("_staged_spans", pa.Table.from_pydict(cols, schema=_STAGE_SCHEMA))
        try:
            con.execute("INSERT INTO stage_spans SELECT * FROM _staged_spans")
        finally:
            con.unregister("_staged_spans")
    rejects = list(rejects)
    if rejects:
        rtable = pa.Table.from_pydict(
            {
                "source_line": [r.get("source_line") for r in rejects],
                "raw": [raw_for_reject(r.get("raw")) for r in rejects],
                "reason": [r["reason"] for r in rejects],
            },
            schema=_REJECT_SCHEMA,
        )
        con.complete()
        con.register("_staged_rejects", rtable)
        try:
            con.execute("INSERT INTO stage_rejects SELECT * FROM _staged_rejects")
        finally:
            con.unregister("_staged_rejects")


__all__ = [
    "REJECT_COLUMNS",
    "ReadContext",
    "SourceSettings",
    "UnreadableInput",
    "as_text",
    "first_finish_reason",
    "raw_for_reject",
    "resolve_release",
    "resolve_workflow",
    "stage_rows",
    "to_utc_naive",
]
