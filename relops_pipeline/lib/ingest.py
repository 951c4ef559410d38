"""Ingest trace files into the warehouse with nothing lost.

Every input record ends as exactly one of: accepted (a new span or GenAI event), rejected
(kept in `trace_rejects` with file, line, raw text and reason) or duplicate (already in the
warehouse, or repeated within the file). `read = accepted + rejected + duplicates` holds for
every file and is checked before commit. A file is ingested in one transaction: all of it or
none of it. Ingesting the same file or span again adds nothing.

A span whose times are wrong but whose identity is whole (it ends before it starts: clock skew
between the hosts that stamped it; or its source reports a negative latency) is accepted, not
rejected: it is kept with latency_ms NULL and its `anomalies` flagged (schema.span_anomalies_sql),
counted per file (`anomalies`) and listed by `relops rejects --anomalies`. It still counts as a
request everywhere; it only leaves the latency statistics.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import duckdb

from relops_pipeline.lib.readers import detect_format, otlp, reader_for
from relops_pipeline.lib.readers.base import LoadContext, LoadResult, ReadContext, SourceSettings, UnreadableInput
from relops_pipeline.lib.schema import (
    DETAILS_EVENT,
    MESSAGE_TYPE,
    UNKNOWN,
    capped_messages_sql,
    create_stage_tables_sql,
    messages_over_cap_sql,
    messages_sql,
    messages_text_sql,
    span_anomalies_sql,
    span_latency_sql,
    system_messages_sql,
)
from relops_pipeline.lib.settings import IngestSettings
from relops_pipeline.lib.timeutil import utc_naive
from relops_pipeline.lib.warehouse import fetch_one

if TYPE_CHECKING:  # the store's modules import deltalake: only when a home uses it
    import pyarrow as pa

    from relops_pipeline.lib.tracestore.linked import TraceTables
    from relops_pipeline.lib.tracestore.store import AppendResult, TraceStore

# Files in a folder that are documentation or metadata, not traces.
SKIP_NAMES = ("LICENSE", "PROVENANCE", "README", "NOTICE")
SKIP_SUFFIXES = (".md", ".txt", ".yaml", ".yml", ".csv", ".py", ".toml", ".sha256")


class IngestError(Exception):
    """A path cannot be ingested at all (missing, unreadable, unknown format)."""


class AccountingError(RuntimeError):
    """The counts of a file do not add up: a bug, so the file's transaction is rolled back."""


@dataclass
class FileResult:
    path: str
    format: str
    read: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    unknown_release: int = 0
    # accepted spans kept with a flag (ends before it starts, negative latency): latency NULL
    anomalies: int = 0
    spans_accepted: int = 0
    events_accepted: int = 0
    batch_id: str | None = None
    min_start_time: datetime | None = None
    max_start_time: datetime | None = None

    def days(self) -> list[date]:
        if self.min_start_time is None or self.max_start_time is None:
            return []
        d0, d1 = self.min_start_time.date(), self.max_start_time.date()
        return [date.fromordinal(o) for o in range(d0.toordinal(), d1.toordinal() + 1)]

    def as_json(self) -> dict:
        out = asdict(self)
        for k in ("min_start_time", "max_start_time"):
            out[k] = out[k].isoformat() if out[k] else None
        return out


@dataclass
class IngestSummary:
    files: list[FileResult] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)  # {"path", "error"}
    skipped: list[str] = field(default_factory=list)  # documentation/metadata files in folders

    @property
    def totals(self) -> dict[str, int]:
        keys = ("read", "accepted", "rejected", "duplicates", "unknown_release", "anomalies")
        return {k: sum(getattr(f, k) for f in self.files) for k in keys}

    def days(self) -> list[date]:
        return sorted({d for f in self.files for d in f.days()})

    def as_json(self) -> dict:
        return {
            "files": [f.as_json() for f in self.files],
            "totals": self.totals,
            "errors": self.errors,
            "skipped": self.skipped,
        }


def expand_paths(paths: Iterable[Path | str]) -> tuple[list[Path], list[str], list[dict]]:
    """Files to ingest (folders walked recursively, sorted), skipped doc files, and errors."""
    files: list[Path] = []
    skipped: list[str] = []
    errors: list[dict] = []
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if not f.is_file() or any(part.startswith(".") for part in f.relative_to(p).parts):
                    continue
                if f.name.startswith(SKIP_NAMES) or f.name.startswith("_") or f.suffix.lower() in SKIP_SUFFIXES:
                    skipped.append(str(f))
                    continue
                files.append(f)
        elif p.is_file():
            files.append(p)
        else:
            errors.append({"path": str(p), "error": f"no such file or folder: {p}"})
    return files, skipped, errors


def chunk_files(files: Sequence[Path], max_bytes: int) -> list[list[Path]]:
    """Files in order, grouped into chunks of at most `max_bytes` (a larger file is a chunk of
    its own): ingestion takes the warehouse one chunk at a time, so a rollback waits for one
    chunk at most, never for a whole ingestion."""
    chunks: list[list[Path]] = []
    size = 0
    for f in files:
        n = f.stat().st_size if f.exists() else 0
        if not chunks or size + n > max_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append(f)
        size += n
    return chunks


def file_fingerprint(path: Path) -> str:
    """sha256 over size, the first and the last MiB: cheap on multi-GB files, and enough to tell
    a re-delivered file from an appended one (span-level dedup makes either safe)."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(1 << 20))
        if size > 2 << 20:
            fh.seek(-(1 << 20), os.SEEK_END)
            h.update(fh.read(1 << 20))
    return h.hexdigest()


def _stage_prices(con: duckdb.DuckDBPyConnection, settings: IngestSettings) -> None:
    con.execute("CREATE OR REPLACE TEMP TABLE stage_prices (model VARCHAR, input_per_mtok DOUBLE, output_per_mtok DOUBLE)")
    models = [r[0] for r in con.execute("SELECT DISTINCT model FROM stage_spans WHERE model IS NOT NULL").fetchall()]
    rows = []
    for m in models:
        price = settings.price_for(m)
        if price is not None:
            rows.append((m, price.input_per_mtok, price.output_per_mtok))
    if rows:
        con.executemany("INSERT INTO stage_prices VALUES (?, ?, ?)", rows)


def _count(con, sql: str, params=None) -> int:
    return int(con.execute(sql, params or []).fetchall()[0][0])


def _how_to_read(path: Path, settings: IngestSettings, fmt: str | None, landing_dir: Path | None) -> tuple[str, SourceSettings]:
    """The file's format and source settings: given, from its source rule, or detected."""
    rule = settings.source_for(path, landing_dir)
    fmt = fmt or (rule.format if rule and rule.format else None) or _detect(path)
    return fmt, rule.settings if rule else SourceSettings()


def _set_memory_limit(con: duckdb.DuckDBPyConnection, settings: IngestSettings) -> None:
    if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", settings.memory_limit):
        raise IngestError(f"invalid memory limit {settings.memory_limit!r}")
    con.execute(f"SET memory_limit = '{settings.memory_limit}'")


def ingest_file(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    *,
    settings: IngestSettings | None = None,
    fmt: str | None = None,
    landing_dir: Path | None = None,
    run_id: str | None = None,
    prestaged: int | None = None,
) -> FileResult:
    """Read one file and commit its spans, events and rejects in one transaction. `prestaged`:
    the file's index in a batch its reader normalised beforehand (see `ingest_paths`)."""
    settings = settings or IngestSettings()
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"no such file: {path}")
    fmt, source = _how_to_read(path, settings, fmt, landing_dir)
    try:
        reader = reader_for(fmt)
    except UnreadableInput as exc:
        raise IngestError(str(exc)) from None
    started = utc_naive()
    batch_id = f"{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"
    source_file = str(path.resolve())

    _set_memory_limit(con, settings)
    con.execute(create_stage_tables_sql())
    try:
        reader.read(con, ReadContext(path=path, settings=source, prestaged=prestaged))
    except UnreadableInput as exc:
        raise IngestError(str(exc)) from None
    _stage_prices(con, settings)
    cap = int(settings.text_cap)
    latency = "coalesce(s.latency_ms, date_diff('microsecond', s.start_time, s.end_time) / 1000.0)"
    fingerprint = file_fingerprint(path)

    con.execute("BEGIN TRANSACTION")
    try:
        staged = _count(con, "SELECT count(*) FROM stage_spans")
        staged_events = _count(con, "SELECT count(*) FROM stage_events")
        staged_rejects = _count(con, "SELECT count(*) FROM stage_rejects")

        # Spans missing their identity cannot be deduplicated or linked: rejects, with reason.
        con.execute(
            """
            INSERT INTO stage_rejects
            SELECT source_line, left(CAST(attributes AS VARCHAR), 16384),
                   'span without ' || CASE WHEN trace_id IS NULL OR trace_id = '' THEN 'trace id'
                                           WHEN span_id IS NULL OR span_id = '' THEN 'span id'
                                           ELSE 'start time' END
            FROM stage_spans WHERE trace_id IS NULL OR trace_id = '' OR span_id IS NULL OR span_id = '' OR start_time IS NULL
            """
        )
        before = _count(con, "SELECT count(*) FROM spans")
        # Which staged rows become spans is decided on the narrow keys alone (first of each
        # (trace_id, span_id) in the file, not already stored); the wide normalising projection
        # then runs once, for those rows only, straight into `spans` (no wide temp table).
        con.execute(
            f"""
            INSERT INTO spans BY NAME
            WITH ranked AS (
                SELECT rowid AS rid, trace_id, span_id,
                    row_number() OVER (PARTITION BY trace_id, span_id ORDER BY source_line, rowid) AS dup_rank
                FROM stage_spans
                WHERE trace_id IS NOT NULL AND trace_id <> '' AND span_id IS NOT NULL AND span_id <> ''
                  AND start_time IS NOT NULL
            ), keep AS (
                SELECT rid FROM ranked r
                ANTI JOIN spans x ON x.trace_id = r.trace_id AND x.span_id = r.span_id
                WHERE r.dup_rank = 1
            )
            SELECT s.* EXCLUDE (workflow, release, latency_ms, cost_usd, input_text, output_text, input_messages, output_messages),
                coalesce(nullif(s.workflow, ''), '{UNKNOWN}') AS workflow,
                -- "support-triage@v1.3.0" names the release v1.3.0 of workflow support-triage
                coalesce(nullif(CASE WHEN starts_with(s.release, s.workflow || '@')
                                     THEN substr(s.release, length(s.workflow) + 2) ELSE s.release END, ''),
                         '{UNKNOWN}') AS release,
                coalesce(nullif(CASE WHEN starts_with(s.release, s.workflow || '@')
                                     THEN substr(s.release, length(s.workflow) + 2) ELSE s.release END, ''),
                         '{UNKNOWN}') <> '{UNKNOWN}' AS release_known,
                -- A span that ends before it starts (clock skew) or reports a negative latency
                -- is kept, flagged, with latency NULL: one bad span must not blind its day.
                {span_latency_sql("s.start_time", "s.end_time", latency)} AS latency_ms,
                {span_anomalies_sql("s.start_time", "s.end_time", latency)} AS anomalies,
                coalesce(s.cost_usd, p.input_per_mtok * s.input_tokens / 1e6 + p.output_per_mtok * s.output_tokens / 1e6) AS cost_usd,
                CASE WHEN s.cost_usd IS NOT NULL THEN 'reported'
                     WHEN p.model IS NOT NULL AND (s.input_tokens IS NOT NULL OR s.output_tokens IS NOT NULL) THEN 'computed'
                     ELSE '{UNKNOWN}' END AS cost_source,
                left(s.input_text, {cap}) AS input_text,
                left(s.output_text, {cap}) AS output_text,
                {capped_messages_sql("s.input_messages", cap)} AS input_messages,
                {capped_messages_sql("s.output_messages", cap)} AS output_messages,
                coalesce(length(s.input_text) > {cap} OR {messages_over_cap_sql("s.input_messages", cap)}, false) AS input_truncated,
                coalesce(length(s.output_text) > {cap} OR {messages_over_cap_sql("s.output_messages", cap)}, false) AS output_truncated,
                ? AS source_file, ? AS ingest_batch_id, ? AS ingested_at
            FROM stage_spans s SEMI JOIN keep k ON k.rid = s.rowid
            LEFT JOIN stage_prices p ON p.model = s.model
            """,
            [source_file, batch_id, started],
        )
        spans_accepted = _count(con, "SELECT count(*) FROM spans") - before
        unknown_release, anomalies = fetch_one(
            con.execute(
                "SELECT count(*) FILTER (WHERE NOT release_known), count(*) FILTER (WHERE anomalies IS NOT NULL) "
                "FROM spans WHERE ingest_batch_id = ?",
                [batch_id],
            )
        )
        missing_ids = _count(con, "SELECT count(*) FROM stage_rejects") - staged_rejects
        span_dups = staged - missing_ids - spans_accepted
        # Records that complete spans of earlier files (LangSmith patches): the reader's hook.
        after_insert = getattr(reader, "after_insert", None)
        taken_over = (
            after_insert(con, LoadContext(batch_id, source_file, started, cap, settings.price_for))
            if after_insert is not None
            else LoadResult()
        )

        # GenAI events (legacy conventions' prompt/completion log records).
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE batch_events AS
            SELECT e.*, md5(to_json(struct_pack(t := e.trace_id, s := e.span_id, n := e.event_name,
                                                   ts := e.event_time, r := e.role, c := e.content))::VARCHAR) AS event_key
            FROM stage_events e
            """
        )
        before_events = _count(con, "SELECT count(*) FROM genai_events")
        con.execute(
            """
            INSERT INTO genai_events BY NAME
            SELECT b.* EXCLUDE (dup_rank), ? AS ingest_batch_id, ? AS source_file
            FROM (SELECT *, row_number() OVER (PARTITION BY event_key ORDER BY source_line) AS dup_rank FROM batch_events) b
            ANTI JOIN genai_events g ON g.event_key = b.event_key
            WHERE b.dup_rank = 1
            """,
            [batch_id, source_file],
        )
        events_accepted = _count(con, "SELECT count(*) FROM genai_events") - before_events
        event_dups = staged_events - events_accepted
        if staged_events or spans_accepted:
            _fill_text_from_events(con, batch_id, cap)

        # A record already quarantined from this file (same line, same text) is a duplicate.
        before_rejects = _count(con, "SELECT count(*) FROM trace_rejects")
        con.execute(
            "INSERT INTO trace_rejects SELECT ?, ?, ?, r.source_line, r.raw, r.reason, ? FROM stage_rejects r "
            "WHERE NOT EXISTS (SELECT 1 FROM trace_rejects t WHERE t.source_file = ? "
            "AND t.source_line IS NOT DISTINCT FROM r.source_line AND t.raw IS NOT DISTINCT FROM r.raw)",
            [batch_id, source_file, fmt, started, source_file],
        )
        rejected = _count(con, "SELECT count(*) FROM trace_rejects") - before_rejects
        reject_dups = _count(con, "SELECT count(*) FROM stage_rejects") - rejected
        read = staged + staged_events + staged_rejects + taken_over.read
        accepted = spans_accepted + events_accepted
        duplicates = span_dups + event_dups + reject_dups + taken_over.duplicates
        if read != accepted + rejected + duplicates or min(span_dups, event_dups) < 0:
            raise AccountingError(f"{path}: read {read} != accepted {accepted} + rejected {rejected} + duplicates {duplicates}")
        tmin, tmax = fetch_one(con.execute("SELECT min(start_time), max(start_time) FROM spans WHERE ingest_batch_id = ?", [batch_id]))
        # Events carry no day of their own, but filling a span's text changes its day's data;
        # so does completing a span of an earlier file (span_updates).
        emin, emax = fetch_one(
            con.execute(
                "SELECT min(s.start_time), max(s.start_time) FROM spans s "
                "SEMI JOIN batch_events e ON e.trace_id = s.trace_id AND e.span_id = s.span_id"
            )
        )
        umin, umax = fetch_one(
            con.execute("SELECT min(start_time), max(start_time) FROM span_updates WHERE ingest_batch_id = ?", [batch_id])
        )
        tmin = min((t for t in (tmin, emin, umin) if t is not None), default=None)
        tmax = max((t for t in (tmax, emax, umax) if t is not None), default=None)
        finished = utc_naive()
        con.execute(
            "INSERT INTO ingest_batches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                batch_id,
                source_file,
                fmt,
                fingerprint,
                path.stat().st_size,
                read,
                accepted,
                rejected,
                duplicates,
                unknown_release,
                events_accepted,
                tmin,
                tmax,
                run_id,
                started,
                finished,
            ],
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        for t in ("stage_spans", "stage_events", "stage_rejects", "stage_prices", "batch_events"):
            con.execute(f"DROP TABLE IF EXISTS {t}")
    return FileResult(
        path=str(path),
        format=fmt,
        read=read,
        accepted=accepted,
        rejected=rejected,
        duplicates=duplicates,
        unknown_release=int(unknown_release),
        anomalies=int(anomalies),
        spans_accepted=spans_accepted,
        events_accepted=events_accepted,
        batch_id=batch_id,
        min_start_time=tmin,
        max_start_time=tmax,
    )


def _sql_lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _fill_text_from_events(con: duckdb.DuckDBPyConnection, batch_id: str, cap: int) -> None:
    """Give spans without input/output text, messages or finish reason those of their events.

    Legacy GenAI events are one message each (gen_ai.choice: the output); a latest-conventions
    gen_ai.client.inference.operation.details record holds the whole call (its content is the
    JSON of its system instructions, input and output messages). input_text / output_text are
    the messages' plain text (schema.messages_text_sql). finish_reason: the details record's
    gen_ai.response.finish_reasons, else its output messages' finish_reason, else the
    gen_ai.choice event's.

    Runs for spans touched by this batch: new spans (events may have arrived earlier) and spans
    named by this batch's events (the spans may have arrived earlier).
    """

    def member(key: str) -> str:
        path = _sql_lit(f'$."{key}"')
        return (
            f"(CASE WHEN json_type(g.content, {path}) = 'VARCHAR' THEN json_extract_string(g.content, {path}) "
            f"ELSE CAST(json_extract(g.content, {path}) AS VARCHAR) END)"
        )

    details = f"g.event_name = {_sql_lit(DETAILS_EVENT)}"
    one = f"CAST([{{'role': g.role, 'content': g.content}}] AS {MESSAGE_TYPE})"
    out_raw = member("gen_ai.output.messages")
    # a details record whose output messages hold no text (tool calls only): its output as JSON,
    # as the span-attribute path keeps it
    out_json = f"CASE WHEN {details} THEN {out_raw} END"
    in_msgs = (
        f"CASE WHEN {details} THEN list_concat(coalesce({system_messages_sql(member('gen_ai.system_instructions'))}, []), "
        f"coalesce({messages_sql(member('gen_ai.input.messages'))}, [])) "
        f"WHEN g.event_name <> 'gen_ai.choice' THEN {one} END"
    )
    out_msgs = (
        f"CASE WHEN {details} THEN {messages_sql(out_raw)} "
        f"WHEN g.event_name = 'gen_ai.choice' "
        f"THEN CAST([{{'role': coalesce(g.role, 'assistant'), 'content': g.content}}] AS {MESSAGE_TYPE}) END"
    )
    reason = (
        f"nullif(lower(CASE WHEN {details} THEN coalesce("
        "json_extract_string(g.attributes, '$.\"gen_ai.response.finish_reasons\"[0]'), "
        "CASE WHEN json_type(g.attributes, '$.\"gen_ai.response.finish_reasons\"') = 'VARCHAR' "
        "THEN json_extract_string(g.attributes, '$.\"gen_ai.response.finish_reasons\"') END, "
        f"json_extract_string({out_raw}, '$[0].finish_reason')) "
        "WHEN g.event_name = 'gen_ai.choice' THEN json_extract_string(g.attributes, '$.\"log.body\".finish_reason') END), '')"
    )
    order = f"ORDER BY ({details}) DESC, g.event_time, g.source_line"
    con.execute(
        f"""
        UPDATE spans SET
            input_text = coalesce(spans.input_text, left(t.input_text, {cap})),
            input_truncated = CASE WHEN spans.input_text IS NULL THEN coalesce(length(t.input_text) > {cap}
                                        OR {messages_over_cap_sql('t.input_messages', cap)}, false)
                                   ELSE spans.input_truncated END,
            output_text = coalesce(spans.output_text, left(t.output_text, {cap})),
            output_truncated = CASE WHEN spans.output_text IS NULL THEN coalesce(length(t.output_text) > {cap}
                                         OR {messages_over_cap_sql('t.output_messages', cap)}, false)
                                    ELSE spans.output_truncated END,
            input_messages = coalesce(spans.input_messages, {capped_messages_sql("t.input_messages", cap)}),
            output_messages = coalesce(spans.output_messages, {capped_messages_sql("t.output_messages", cap)}),
            finish_reason = coalesce(spans.finish_reason, t.finish_reason)
        FROM (
            SELECT trace_id, span_id,
                {messages_text_sql('im')} AS input_text, coalesce({messages_text_sql('om')}, out_json) AS output_text,
                CASE WHEN len(im) > 0 THEN CAST(to_json(im) AS JSON) END AS input_messages,
                CASE WHEN len(om) > 0 THEN CAST(to_json(om) AS JSON) END AS output_messages,
                finish_reason
            FROM (
                SELECT g.trace_id, g.span_id,
                    flatten(list(m.im {order}) FILTER (WHERE m.im IS NOT NULL)) AS im,
                    flatten(list(m.om {order}) FILTER (WHERE m.om IS NOT NULL)) AS om,
                    (list(m.fr {order}) FILTER (WHERE m.fr IS NOT NULL))[1] AS finish_reason,
                    (list(m.oj {order}) FILTER (WHERE m.oj IS NOT NULL))[1] AS out_json
                FROM genai_events g,
                    LATERAL (SELECT {in_msgs} AS im, {out_msgs} AS om, {reason} AS fr, {out_json} AS oj) m
                SEMI JOIN (
                    SELECT trace_id, span_id FROM spans WHERE ingest_batch_id = ?
                    UNION SELECT trace_id, span_id FROM batch_events) k
                  ON k.trace_id = g.trace_id AND k.span_id = g.span_id
                GROUP BY g.trace_id, g.span_id
            )
        ) t
        WHERE spans.trace_id = t.trace_id AND spans.span_id = t.span_id
          AND {_INCOMPLETE.format(s="spans.")}
        """,
        [batch_id],
    )


def touched_days(con: duckdb.DuckDBPyConnection, batch_ids: Sequence[str]) -> list[date]:
    """The days whose spans these batches added or completed (events fill earlier spans' text;
    LangSmith patches complete earlier spans: span_updates)."""
    ids = [b for b in batch_ids if b]
    if not ids:
        return []
    rows = con.execute(
        "SELECT DISTINCT start_time::DATE FROM spans WHERE start_time IS NOT NULL AND ("
        " ingest_batch_id IN (SELECT unnest(?::VARCHAR[])) OR (trace_id, span_id) IN ("
        "  SELECT (trace_id, span_id) FROM genai_events WHERE ingest_batch_id IN (SELECT unnest(?::VARCHAR[])))"
        " OR (trace_id, span_id) IN ("
        "  SELECT (trace_id, span_id) FROM span_updates WHERE ingest_batch_id IN (SELECT unnest(?::VARCHAR[]))))"
        " ORDER BY 1",
        [ids, ids, ids],
    ).fetchall()
    return [r[0] for r in rows]


def spans_by_day(con: duckdb.DuckDBPyConnection, batch_ids: Sequence[str], days: Sequence[date]) -> dict[date, int]:
    """How many spans these batches added on each of `days` (a day only completed by events counts 0)."""
    ids = [b for b in batch_ids if b]
    counts = dict.fromkeys(days, 0)
    if ids and days:
        rows = con.execute(
            "SELECT start_time::DATE, count(*) FROM spans WHERE ingest_batch_id IN (SELECT unnest(?::VARCHAR[])) "
            "AND start_time IS NOT NULL GROUP BY 1",
            [ids],
        ).fetchall()
        counts.update({d: int(n) for d, n in rows if d in counts})
    return counts


def _detect(path: Path) -> str:
    try:
        return detect_format(path)
    except UnreadableInput as exc:
        raise IngestError(str(exc)) from None


def ingest_paths(
    con: duckdb.DuckDBPyConnection,
    paths: Iterable[Path | str],
    *,
    settings: IngestSettings | None = None,
    fmt: str | None = None,
    landing_dir: Path | None = None,
    run_id: str | None = None,
    progress: Callable[[FileResult], None] | None = None,
    before_reading: Callable[[str | None], None] | None = None,
) -> IngestSummary:
    """Ingest files and folders; a file that cannot be read is an error entry, the rest go on.
    `before_reading(format)` is called before each file, or group of files, is read.

    Runs of small OTLP JSON-lines files with the same source settings are normalised together
    first (readers.otlp.prestage: one statement instead of one per file, whose planning alone
    costs more than a small file's data); each file is still ingested, accounted and committed
    on its own, exactly as when read alone. Should the shared statement fail, the files are
    read one by one."""
    settings = settings or IngestSettings()
    files, skipped, errors = expand_paths(paths)
    summary = IngestSummary(errors=errors, skipped=skipped)
    for group, source, group_fmt in _prestage_groups(files, settings, fmt, landing_dir):
        if before_reading is not None:
            before_reading(group_fmt)
        index: dict[Path, int] = {}
        if len(group) > 1:
            try:
                _set_memory_limit(con, settings)
                otlp.prestage(con, group, source)
                index = {f: i for i, f in enumerate(group)}
            except Exception:  # noqa: BLE001 - each file is then read alone, and fails alone
                otlp.drop_prestaged(con)
        try:
            for f in group:
                try:
                    result = ingest_file(con, f, settings=settings, fmt=fmt, landing_dir=landing_dir, run_id=run_id,
                                         prestaged=index.get(f))
                except IngestError as exc:
                    summary.errors.append({"path": str(f), "error": str(exc)})
                    continue
                except Exception as exc:  # the file's transaction was rolled back; the other files go on
                    summary.errors.append({"path": str(f), "error": f"{type(exc).__name__}: {exc}"})
                    continue
                summary.files.append(result)
                if progress is not None:
                    progress(result)
        finally:
            if index:
                otlp.drop_prestaged(con)
    return summary


@dataclass
class StoreIngestion:
    """What `ingest_paths_to_store` did: the summary (counts after the store's deduplication),
    the ingest_batches rows to record in the warehouse, and the spans appended per day."""

    summary: IngestSummary
    batches: list[dict] = field(default_factory=list)
    spans_by_day: dict[str, int] = field(default_factory=dict)
    # span_updates rows (spans these files completed) to record in the warehouse with the batches
    span_updates: list[dict] = field(default_factory=list)


def ingest_paths_to_store(
    tables: TraceTables,
    paths: Iterable[Path | str],
    *,
    workdir: Path,
    settings: IngestSettings | None = None,
    fmt: str | None = None,
    landing_dir: Path | None = None,
    run_id: str | None = None,
    progress: Callable[[FileResult], None] | None = None,
) -> StoreIngestion:
    """Ingest files into the trace store (relops.yaml `trace_store:`), without the warehouse.

    The files are read exactly as `ingest_paths` reads them, into a scratch DuckDB file of their
    own under `workdir` (so several ingestions run at once: nothing here takes the warehouse),
    then each file's spans, GenAI events and rejects are appended to the store as one idempotent
    source per table (the sha256 of the file's bytes), all the files in one commit per table. Spans the store already holds are counted
    as duplicates, so `read = accepted + rejected + duplicates` still holds per file (checked),
    and a file whose source is already committed (a re-delivery, or a retry after a crash
    between the store's commit and the warehouse's record of the batch) adds nothing.

    The files' ingest_batches rows are returned for the caller to record in the warehouse (the
    control state stays there). GenAI events and their spans in different ingestions complete
    the spans as in the warehouse, in either order: events whose spans an earlier ingestion
    stored give completed copies, appended beside them (the store's views keep a span's most
    complete copy: `_complete_from_store`); spans whose events the store holds are filled before
    they are appended (`_complete_from_stored_events`). When another writer committed spans or
    events after these were read, or some of these rows were already stored, the spans are
    looked at again after the commit (`_complete_after_commit`); in the latter case, a stored
    run that this ingestion's own copy completes gets that copy (`_ended_here`), and the ends
    these files applied to a copy of a run the store held apply to the stored run
    (`_complete_langsmith_copies`). A LangSmith run's end completes a run an earlier ingestion
    stored (`_complete_langsmith_from_store`), and one another writer committed at the same
    moment, after the commit (`_complete_langsmith_after_commit`); a run these files post takes
    the ends the store keeps waiting for it as it is read (`_seed_waiting_ends`). Ends these
    files applied to a stored run that another writer also ended meanwhile are applied again
    over that writer's copy (`_reapply_over_racing_copies`)."""
    from relops_pipeline.lib.readers import langsmith
    from relops_pipeline.lib.tracestore.linked import LINKED_TABLES
    from relops_pipeline.lib.warehouse import migrate

    settings = settings or IngestSettings()
    workdir.mkdir(parents=True, exist_ok=True)
    _remove_dead_scratch(workdir)
    scratch = workdir / f".ingest-{os.getpid()}-{uuid.uuid4().hex}.duckdb"
    con = duckdb.connect(str(scratch))
    try:
        migrate(con)
        # The LangSmith ends these files apply to their runs, should a run turn out to be a
        # copy of one the store holds (_complete_langsmith_copies).
        _create_applied_log(con)
        seeded: list[bool] = []

        def seed_before_the_first_langsmith_file(group_fmt: str | None) -> None:
            if group_fmt == langsmith.FORMAT and not seeded:
                seeded.append(True)
                _seed_waiting_ends(con, tables)

        summary = ingest_paths(con, paths, settings=settings, fmt=fmt, landing_dir=landing_dir, run_id=run_id,
                               progress=progress, before_reading=seed_before_the_first_langsmith_file)
        if seeded:
            _unseed_waiting_ends(con)
        ends_applied = con.sql(f"SELECT * FROM {langsmith.APPLIED_LOG}").to_arrow_table()
        con.execute(f"DELETE FROM {langsmith.APPLIED_LOG}")
        out = StoreIngestion(summary)
        stores = {spec.name: tables.store(spec) for spec in LINKED_TABLES}
        sources = [_file_sha256(Path(r.path)) for r in summary.files]
        batch_ids = [r.batch_id or "" for r in summary.files]
        batch_digest = hashlib.sha256(",".join(sources).encode()).hexdigest()
        cap = int(settings.text_cap)
        # The versions the completions below read (or older; created first, so that creating a
        # table is not taken for another writer's commit): a commit by another writer after them
        # is looked at again once these files are committed (_complete_after_commit).
        read_versions = {name: stores[name].table().version() for name in ("spans", "genai_events", "trace_rejects")}
        ours: dict[str, set[int]] = {name: set() for name in read_versions}

        def append_corrections(kind: str, completed: pa.Table | None) -> int | None:
            """Append the copies `completed` as corrections; returns the version committing them."""
            # What the correction was made against: the store as read before these files'
            # commit, or after it (at least these files' latest commit).
            read = max(ours["spans"], default=read_versions["spans"])
            if completed is not None and completed.num_rows:
                # Corrections: the view keeps a span's most complete copy (schema.SPANS.keep_order).
                # Named by their content too: a retry that completes more is not taken for the
                # commit of a run that completed less before it died.
                # Ingested a microsecond before the copy it corrects, so that it wins when both
                # are as complete (a LangSmith run's later end: the same fields, other values).
                con.register("corrected", completed)
                try:
                    completed = con.sql("SELECT * REPLACE (ingested_at - INTERVAL 1 MICROSECOND AS ingested_at) "
                                        "FROM corrected").to_arrow_table()
                finally:
                    con.unregister("corrected")
                # The stamp is in the digest: the same end applied again over a later one is a
                # correction of its own (a patch that changes nothing adds none).
                source = f"{kind}:{batch_digest}:{_content_digest(con, completed)}"
                done = stores["spans"].append_many([(completed, source)], check_existing=False, batches=batch_ids,
                                                   read_version=read)
                ours["spans"].update(r.version for r in done if r.version is not None)
                for day in {t.date().isoformat() for t in completed["start_time"].to_pylist()}:
                    out.spans_by_day.setdefault(day, 0)
                return max((r.version for r in done if r.version is not None), default=None)
            return None

        def add_updates(updates: list[dict]) -> None:
            recorded = {_update_identity(u) for u in out.span_updates}
            out.span_updates += [u for u in updates if _update_identity(u) not in recorded]

        # These files' spans are appended completed by the events the store already holds; the
        # corrections are copies of stored spans these files' LangSmith ends or events complete.
        _complete_from_stored_events(con, tables, cap)
        committed = append_corrections("langsmith", _complete_langsmith_from_store(con, tables, summary, settings))
        # The LangSmith ends applied to runs the store held, with the version of the spans read
        # before they were (those applied after the commit read a later one; the copies committed
        # in between take their ends again, which changes nothing) and the version committing
        # them: another writer may have applied its own ends to those runs meanwhile.
        ends_on_stored = [EndsOnStored(read_versions["spans"], _applied_in_order(con), committed)]
        con.execute(f"DROP TABLE {langsmith.APPLIED_LOG}")
        append_corrections("completion", _complete_from_store(con, tables, cap))
        cur = con.execute("SELECT * FROM span_updates ORDER BY ALL")
        out.span_updates = [dict(zip([d[0] for d in cur.description], r, strict=True)) for r in cur.fetchall()]
        # After the whole call, so that completions by later files are in what is appended;
        # one commit per table for all the files (a commit costs ~0.1 s, whatever it holds).
        moved: dict[str, list[tuple[int, AppendResult]]] = {}
        for name, table in stores.items():
            counts = dict(con.execute(f"SELECT ingest_batch_id, count(*) FROM {name} GROUP BY 1").fetchall())
            # The loader keeps one span per (trace_id, span_id) and one event per key in a batch.
            appended = table.append_from(con, name, list(zip(batch_ids, sources, strict=True)), unique=name != "trace_rejects",
                                         read_version=read_versions[name])
            moved[name] = [(int(counts.get(b, 0)), a) for b, a in zip(batch_ids, appended, strict=True)]
            if name in ours:
                ours[name].update(a.version for a in appended if a.version is not None)
        raced_on = {name for name in ours if set(range(read_versions[name] + 1, stores[name].version() + 1)) - ours[name]}
        raced = bool(raced_on & {"spans", "genai_events"})
        # Rows of these files the store already held (files another writer also got, a retry
        # after a crash): what the completions above filled in them was not appended with them.
        held = [b for i, b in enumerate(batch_ids)
                if any(moved[name][i][1].skipped or moved[name][i][1].duplicates for name in ("spans", "genai_events"))]
        if held:
            # Runs the store holds unended that these files complete: a later file's patch, files
            # another writer got too (without the ends, committed meanwhile), or these very files
            # committed before by a run that died before it settled their ends.
            raced_batches = stores["spans"].batches_committed_after(read_versions["spans"])
            same_files = [b for i, b in enumerate(batch_ids) if moved["spans"][i][1].skipped]
            append_corrections("ended", _ended_here(
                con, tables, settings, held, same_files, raced_batches, scratch.with_name(scratch.name + ".ended.tmp")))
            # Ends these files applied to a run whose copy was not appended: the stored run takes them.
            done = _complete_langsmith_copies(
                con, tables, settings, batch_ids, ends_applied, scratch.with_name(scratch.name + ".copies.tmp"))
            committed = append_corrections("langsmith-copies", done.completed)
            add_updates(done.updates)
            ends_on_stored.append(EndsOnStored(read_versions["spans"], done.ends, committed))
        if raced_on:
            # A LangSmith run and its end (a patch kept waiting as a `pending:` reject) committed
            # by two writers at the same moment: neither saw the other's.
            done = _complete_langsmith_after_commit(
                con, tables, settings, batch_ids, read_versions["trace_rejects"], scratch.with_name(scratch.name + ".ls.tmp"))
            committed = append_corrections("langsmith-after", done.completed)
            add_updates(done.updates)
            ends_on_stored.append(EndsOnStored(read_versions["spans"], done.ends, committed))
        if raced or held:
            # Another writer committed spans or events after the completions above read the
            # store (its spans may be the ones these files' events complete, or its events the
            # ones that complete these files' spans, and it did not see these files either), or
            # these files' own completions went with rows not appended: looked at again from
            # what is now committed (whichever of two writers commits last does).
            append_corrections("recompletion", _complete_after_commit(
                con, tables, settings, batch_ids if raced else held, scratch.with_name(scratch.name + ".after.tmp")))
        # Last: whichever of two writers applying ends to one stored run commits last sees the
        # other's copy here, and applies its own ends over it.
        done = _reapply_over_racing_copies(con, tables, settings, ends_on_stored, ours["spans"],
                                           scratch.with_name(scratch.name + ".race.tmp"))
        append_corrections("langsmith-race", done.completed)
        add_updates(done.updates)
        for i, result in enumerate(summary.files):
            _count_store_duplicates(result, {name: m[i] for name, m in moved.items()})
            cur = con.execute("SELECT * FROM ingest_batches WHERE batch_id = ?", [result.batch_id])
            row = dict(zip([d[0] for d in cur.description], cur.fetchall()[0], strict=True))
            row.update(accepted=result.accepted, rejected=result.rejected, duplicates=result.duplicates,
                       events_accepted=result.events_accepted)
            result.min_start_time, result.max_start_time = row["min_start_time"], row["max_start_time"]
            out.batches.append(row)
            for day, n in moved["spans"][i][1].by_day.items():
                out.spans_by_day[day] = out.spans_by_day.get(day, 0) + n
            if moved["spans"][i][1].skipped:
                # Committed before, perhaps by a run killed before it recorded the batch or
                # refreshed the days: refresh them now (nothing is added to them).
                for (day,) in con.execute("SELECT DISTINCT CAST(start_time AS DATE) FROM spans WHERE ingest_batch_id = ? "
                                          "AND start_time IS NOT NULL", [result.batch_id]).fetchall():
                    out.spans_by_day.setdefault(day.isoformat(), 0)
        return out
    finally:
        con.close()
        for leftover in (scratch, scratch.with_name(scratch.name + ".wal")):
            leftover.unlink(missing_ok=True)


def _complete_langsmith_from_store(con: duckdb.DuckDBPyConnection, tables: TraceTables, summary: IngestSummary,
                                   settings: IngestSettings) -> pa.Table | None:
    """LangSmith runs whose start (post) and end (patch) arrive in different ingestions, as the
    SDK's separate requests usually do: completed in the store as a warehouse home completes
    them (lib/readers/langsmith.py), and returned as the completed copies of the stored spans
    (None: nothing to complete).

    A patch of these files whose run an earlier ingestion stored: the run is loaded from the
    store into the scratch `spans`, the patch applied to it (span_updates under the patch's
    batch) and the completed copy returned. The patch's `pending:` reject goes, and its file
    counts it as a duplicate instead, as in the warehouse.
    A run of these files whose patch an earlier ingestion kept as a `pending:` reject (the
    store's form of langsmith_pending) merged it as it was read (`_seed_waiting_ends`); the
    earlier reject stays, as the warehouse keeps its rejects."""
    from relops_pipeline.lib.readers import langsmith
    from relops_pipeline.lib.tracestore.schema import SPANS

    by_batch = {r.batch_id: r for r in summary.files if r.batch_id}
    if not _count(con, "SELECT count(*) FROM langsmith_pending"):
        return None
    try:
        received = utc_naive()  # after the new spans' ingestion, so the patches apply to them
        con.execute("CREATE OR REPLACE TEMP TABLE store_runs (trace_id VARCHAR, span_id VARCHAR)")
        spans = tables.store(SPANS)
        spans.register(con, "stored_spans")
        try:
            con.execute(
                "INSERT INTO store_runs SELECT DISTINCT s.trace_id, s.span_id FROM stored_spans s "
                "JOIN langsmith_pending p ON s.span_id = p.run_id AND (p.trace_id IS NULL OR s.trace_id = p.trace_id) "
                "ANTI JOIN spans x ON x.trace_id = s.trace_id AND x.span_id = s.span_id")
            con.execute("INSERT INTO spans BY NAME SELECT * FROM stored_spans SEMI JOIN store_runs USING (trace_id, span_id)")
        finally:
            spans.unregister(con, "stored_spans")
        con.execute("CREATE OR REPLACE TEMP TABLE store_runs_loaded AS SELECT * FROM spans SEMI JOIN store_runs "
                    "USING (trace_id, span_id)")
        cap = int(settings.text_cap)

        def load_for(batch_id: str | None) -> LoadContext:
            result = by_batch.get(batch_id) if batch_id else None
            return LoadContext(batch_id or "", result.path if result else "", received, cap, settings.price_for)

        # A stored run never took these files' patches, whatever the writers' clocks say of
        # when it was ingested (`apply_waiting` leaves a patch received before its run's
        # ingestion to the post's read): one shift for all a run's patches keeps their order.
        con.execute(
            "UPDATE langsmith_pending SET received_at = received_at + x.shift FROM ("
            "  SELECT p.run_id, max(s.ingested_at) - min(p.received_at) + INTERVAL 1 MICROSECOND AS shift "
            "  FROM langsmith_pending p JOIN (SELECT trace_id, span_id, ingested_at FROM spans "
            "                                SEMI JOIN store_runs USING (trace_id, span_id)) s "
            "  ON s.span_id = p.run_id AND (p.trace_id IS NULL OR s.trace_id = p.trace_id) "
            "  GROUP BY p.run_id HAVING min(p.received_at) <= max(s.ingested_at)) x "
            "WHERE langsmith_pending.run_id = x.run_id")
        applied = langsmith.apply_waiting(con, load_for)
        for batch_id, source_line, _trace_id, _span_id in applied:
            gone = con.execute(
                "DELETE FROM trace_rejects WHERE ingest_batch_id = ? AND source_line IS NOT DISTINCT FROM ? "
                "AND starts_with(reason, 'pending: ') RETURNING 1", [batch_id, source_line]).fetchall()
            if gone and batch_id in by_batch:
                by_batch[batch_id].rejected -= len(gone)
                by_batch[batch_id].duplicates += len(gone)
        _widen_batch_times(con, "SELECT ingest_batch_id AS b, min(start_time) AS lo, max(start_time) AS hi "
                                "FROM span_updates GROUP BY 1")
        # Only the copies the patches changed (a patch delivered again changes nothing).
        return con.sql("SELECT s.* FROM spans s JOIN store_runs_loaded l USING (trace_id, span_id, start_time) "
                       "SEMI JOIN span_updates u ON u.trace_id = s.trace_id AND u.span_id = s.span_id "
                       "WHERE s IS DISTINCT FROM l").to_arrow_table()
    finally:
        con.execute("DROP TABLE IF EXISTS store_runs_loaded")
        con.execute("DROP TABLE IF EXISTS store_runs")


def _seed_waiting_ends(con: duckdb.DuckDBPyConnection, tables: TraceTables) -> None:
    """The LangSmith ends the store keeps waiting for their run (`pending:` rejects), put where
    the warehouse keeps them (langsmith_pending), so that a run these files post merges them
    as it is read, before the ends these files bring, as in the warehouse. Received before
    anything of these files, whatever the writers' clocks say, in the order they were rejected;
    one of each end however often its file was ingested. Those no run of these files took go
    once these files are read (`_unseed_waiting_ends`)."""
    from relops_pipeline.lib.tracestore.schema import TRACE_REJECTS

    rejects = tables.store(TRACE_REJECTS)
    if not rejects.exists():
        return
    rejects.register(con, "stored_rejects")
    try:
        con.execute(
            "INSERT INTO langsmith_pending (run_id, trace_id, payload, source_file, source_line, ingest_batch_id, received_at) "
            f"SELECT {_PATCHED_RUN}, json_extract_string(raw, '$.trace_id'), raw, source_file, source_line, ingest_batch_id, "
            "TIMESTAMP '1970-01-01' + to_microseconds(row_number() OVER (ORDER BY rejected_at, source_file, source_line)) "
            f"FROM stored_rejects WHERE {_WAITING_PATCH} "
            f"QUALIFY row_number() OVER (PARTITION BY {_PATCHED_RUN}, source_file, source_line, raw ORDER BY rejected_at) = 1")
    finally:
        rejects.unregister(con, "stored_rejects")


def _unseed_waiting_ends(con: duckdb.DuckDBPyConnection) -> None:
    """After reading: an end the store kept waiting that these files brought again (the reader
    kept no second copy of it, as the warehouse keeps none of a patch still waiting) is these
    files' own, received when its file was read, also where a run took it (`APPLIED_LOG`). An
    end the store kept waiting may have been applied since (its reject stays): delivered again,
    the warehouse applies it to the run it holds, and so is it applied here. The store's other
    waiting ends leave the scratch."""
    from relops_pipeline.lib.readers import langsmith

    ours = ("(SELECT source_file, source_line, raw, min(ingest_batch_id) AS batch, min(rejected_at) AS at "
            "FROM trace_rejects WHERE starts_with(reason, 'pending: ') "
            "AND ingest_batch_id IN (SELECT batch_id FROM ingest_batches) GROUP BY ALL) r")
    for table, extra in (("langsmith_pending", ", received_at = r.at"), (langsmith.APPLIED_LOG, "")):
        con.execute(
            f"UPDATE {table} SET ingest_batch_id = r.batch{extra} FROM {ours} "
            f"WHERE {table}.ingest_batch_id NOT IN (SELECT batch_id FROM ingest_batches) "
            f"AND r.source_file = {table}.source_file AND r.source_line IS NOT DISTINCT FROM {table}.source_line "
            f"AND r.raw = {table}.payload::VARCHAR")
    con.execute("DELETE FROM langsmith_pending WHERE ingest_batch_id NOT IN (SELECT batch_id FROM ingest_batches)")


def _complete_from_stored_events(con: duckdb.DuckDBPyConnection, tables: TraceTables, cap: int) -> pa.Table | None:
    """These files' spans that GenAI events already in the store complete (a capture's log
    export ingested before its traces, or committed by another writer at the same moment): the
    events naming them are read from the store (the partitions of the spans' days and the days
    beside them, and the undated one) and fill their text, messages and finish reason as the
    warehouse fills a new span from its earlier events (except a field these files' own events
    filled already: the warehouse would merge both parts of such a split log export; see
    docs/production.md). Returns the spans this changed (None: none), as they now are in `con`."""
    from relops_pipeline.lib.tracestore.schema import GENAI_EVENTS, UNDATED_DAY

    events = tables.store(GENAI_EVENTS)
    if not events.exists():
        return None
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE loaded AS SELECT {_TEXT_FIELDS} FROM spans "
        "WHERE ingest_batch_id IN (SELECT batch_id FROM ingest_batches) "  # these files' spans, not loaded ones
        f"AND {_INCOMPLETE.format(s='')}")
    view = "stored_genai_events"
    try:
        span_days = [r[0] for r in con.execute("SELECT DISTINCT CAST(start_time AS DATE) FROM loaded").fetchall()]
        if not span_days:
            return None
        days = None if any(d is None for d in span_days) else sorted(
            _with_neighbours(span_days) | {UNDATED_DAY})
        events.register(con, view, days=days)
        try:
            added = con.execute(
                f"INSERT INTO genai_events BY NAME SELECT * REPLACE (? AS ingest_batch_id) FROM {view} e "
                "SEMI JOIN loaded l ON l.trace_id = e.trace_id AND l.span_id = e.span_id "
                "WHERE NOT EXISTS (SELECT 1 FROM genai_events g WHERE g.event_key = e.event_key)",
                [_STORED_EVENTS]).fetchall()[0][0]
        finally:
            events.unregister(con, view)
        if not added:
            return None
        try:
            con.execute("CREATE OR REPLACE TEMP TABLE batch_events AS SELECT trace_id, span_id FROM loaded")
            _fill_text_from_events(con, "", cap)  # no batch of its own: the spans batch_events names
        finally:
            # Read, not these files' own: they are not appended (nor counted) with them.
            con.execute("DELETE FROM genai_events WHERE ingest_batch_id = ?", [_STORED_EVENTS])
            con.execute("DROP TABLE IF EXISTS batch_events")
        return _changed_since_loaded(con)
    finally:
        con.execute("DROP TABLE IF EXISTS loaded")


def _complete_after_commit(con: duckdb.DuckDBPyConnection, tables: TraceTables, settings: IngestSettings,
                           batch_ids: Sequence[str], spill_to: Path) -> pa.Table | None:
    """After these files' commit: the spans the batches `batch_ids` hold or their events name,
    as the store now keeps them (each one's most complete copy), filled from every stored event
    that names them, as the warehouse fills a span from all its events. Returns the copies this
    completes further (None: none), to append as corrections; the batches get their times
    (their days are refreshed). Works on a connection of its own (spilling under `spill_to`),
    apart from the scratch rows."""
    from relops_pipeline.lib.tracestore.schema import GENAI_EVENTS, SPANS, UNDATED_DAY

    events = tables.store(GENAI_EVENTS)
    if not events.exists() or not batch_ids:
        return None
    [touched] = _of_batches(
        con, batch_ids,
        "SELECT ingest_batch_id, trace_id, span_id, CAST(start_time AS DATE) AS day FROM spans "
        "WHERE ingest_batch_id IN (SELECT b FROM after_batches) "
        "UNION SELECT ingest_batch_id, trace_id, span_id, CAST(event_time AS DATE) FROM genai_events "
        "WHERE ingest_batch_id IN (SELECT b FROM after_batches) AND trace_id IS NOT NULL AND span_id IS NOT NULL")
    if not touched.num_rows:
        return None
    r = _looking_connection(settings, spill_to)
    try:
        r.register("touched", touched)
        seen = [d for (d,) in r.execute("SELECT DISTINCT day FROM touched").fetchall()]
        days = None if any(d is None for d in seen) else sorted(
            _with_neighbours(seen))
        stored = tables.store(SPANS)
        stored.register(r, "stored_spans", days=days)
        try:
            # Only the spans with fields events fill still empty (a complete one has nothing to gain).
            r.execute("INSERT INTO spans BY NAME SELECT s.* FROM stored_spans s "
                      "SEMI JOIN touched t ON t.trace_id = s.trace_id AND t.span_id = s.span_id "
                      f"WHERE {_INCOMPLETE.format(s='s.')}")
        finally:
            stored.unregister(r, "stored_spans")
        span_days = [d for (d,) in r.execute("SELECT DISTINCT CAST(start_time AS DATE) FROM spans").fetchall()]
        if not span_days:
            return None
        events.register(r, "stored_events", days=sorted(
            _with_neighbours(span_days) | {UNDATED_DAY}))
        try:
            r.execute("INSERT INTO genai_events BY NAME SELECT e.* FROM stored_events e "
                      "SEMI JOIN spans s ON s.trace_id = e.trace_id AND s.span_id = e.span_id")
        finally:
            events.unregister(r, "stored_events")
        if not _count(r, "SELECT count(*) FROM genai_events"):
            return None
        r.execute(f"CREATE TEMP TABLE loaded AS SELECT {_TEXT_FIELDS} FROM spans")
        r.execute("CREATE TEMP TABLE batch_events AS SELECT trace_id, span_id FROM spans")
        _fill_text_from_events(r, "", int(settings.text_cap))
        completed = _changed_since_loaded(r)
    finally:
        r.close()
    if completed.num_rows:
        con.register("completed_now", completed)
        con.register("touched_now", touched)
        try:
            _widen_batch_times(con, "SELECT t.ingest_batch_id AS b, min(c.start_time) AS lo, max(c.start_time) AS hi "
                                    "FROM touched_now t JOIN completed_now c USING (trace_id, span_id) GROUP BY 1")
        finally:
            con.unregister("completed_now")
            con.unregister("touched_now")
    return completed


def _ended_here(con: duckdb.DuckDBPyConnection, tables: TraceTables, settings: IngestSettings,
                batch_ids: Sequence[str], same_files: Sequence[str], raced_batches: set[str] | None,
                spill_to: Path) -> pa.Table | None:
    """After these files' commit: the runs of the batches `batch_ids` that the store already
    held unended, in the one copy committed with them, where this ingestion's copy is that run
    completed: the same start (every field but those an end sets) with fewer fields missing.
    Returned, to append as corrections (the views keep a span's most complete copy), when it
    has an end and the stored copy came from a batch committed meanwhile (`raced_batches`;
    None: unknown, then none) or from the same file of these very files (`same_files`: their
    source was committed before, by a run that died before it settled them). A run ended or
    corrected since, or started otherwise, is left as it is (the warehouse would apply the
    patch to it: not done, docs/production.md). A later file's patch that this copy took goes
    to the stored run alone (`_complete_langsmith_copies`): the warehouse drops this copy with
    the end merged into it in its own file."""
    from relops_pipeline.lib.tracestore.schema import SPAN_MISSING, SPANS

    [ours] = _of_batches(
        con, batch_ids,
        f"SELECT trace_id, span_id, start_time, ingest_batch_id, source_file, {SPAN_MISSING.format(s='')} AS missing, "
        "end_time IS NOT NULL AS ended "
        "FROM spans s WHERE ingest_batch_id IN (SELECT b FROM after_batches)")
    if not ours.num_rows:
        return None
    same_start = " AND ".join(f'o."{c}" IS NOT DISTINCT FROM s."{c}"' for c, _ in SPANS.columns if c not in _NOT_OF_THE_START)
    r = _looking_connection(settings, spill_to)
    try:
        r.register("ours", ours)
        days = [d for (d,) in r.execute("SELECT DISTINCT CAST(start_time AS DATE) FROM ours").fetchall()]
        stored = tables.store(SPANS)
        stored.register(r, "stored_spans", days=days)
        try:
            r.execute(
                "CREATE TEMP TABLE ended_keys AS SELECT o.trace_id, o.span_id, o.start_time FROM ours o JOIN stored_spans s "
                "ON s.trace_id = o.trace_id AND s.span_id = o.span_id AND s.start_time = o.start_time "
                f"{_in_one_copy(stored, 'stored_spans')} "
                f"WHERE s.end_time IS NULL AND {SPAN_MISSING.format(s='s.')} > o.missing "
                "AND o.ended AND ((o.ingest_batch_id IN (SELECT unnest(?::VARCHAR[])) AND s.source_file = o.source_file) "
                "                 OR s.ingest_batch_id IN (SELECT unnest(?::VARCHAR[])))",
                [list(same_files), sorted(raced_batches or ())])
            keys = r.sql("SELECT * FROM ended_keys").to_arrow_table()
            if not keys.num_rows:
                return None
            con.register("ended_keys", keys)
            try:
                candidates = con.sql("SELECT * FROM spans SEMI JOIN ended_keys USING (trace_id, span_id, start_time)"
                                     ).to_arrow_table()
            finally:
                con.unregister("ended_keys")
            r.register("candidates", candidates)
            ended = r.sql(f"SELECT o.* FROM candidates o JOIN stored_spans s USING (trace_id, span_id, start_time) "
                          f"WHERE {same_start}").to_arrow_table()
        finally:
            stored.unregister(r, "stored_spans")
    finally:
        r.close()
    return ended if ended.num_rows else None


# What a run's end sets in its span (langsmith._apply_updates; merged with its start in one
# file, its metadata joins the attributes), and where a copy came from: not the run's start.
_NOT_OF_THE_START = frozenset({"attributes",
    "end_time", "latency_ms", "anomalies", "output_text", "output_truncated", "output_messages", "input_tokens",
    "output_tokens", "finish_reason", "model", "cost_usd", "cost_source", "status", "error_type",
    "ingest_batch_id", "ingested_at", "source_file", "source_line"})


def _complete_langsmith_after_commit(con: duckdb.DuckDBPyConnection, tables: TraceTables, settings: IngestSettings,
                                     batch_ids: Sequence[str], rejects_read: int, spill_to: Path) -> EndsApplied:
    """After these files' commit, when another writer committed in between: a LangSmith run and
    its end (a patch kept waiting as a `pending:` reject) that two writers committed at the
    same moment, each having read the store before the other's commit. The patches neither
    applied are those these batches kept waiting, and those another writer kept waiting in the
    commits after version `rejects_read` of the rejects (the one these files' completions
    read) that name these batches' runs: each is applied, in the order they were rejected, to
    its run as the store keeps it when that is still the one copy committed with the run (a run
    corrected since may hold a later end, which an earlier one applied now would undo), as the
    warehouse applies a patch to a run it already has; not a patch kept waiting by the
    ingestion that committed that copy (a reject stays when a later file of its ingestion
    brings the run, which merges the patch as it is read).
    Returns the copies this changes (None: none), to append as corrections, and their
    span_updates rows, one per span under the batch of these files that holds the run or its
    patch, so that this ingestion refreshes their days. The patches' rejects and counts stay as
    when a patch reaches the store before its run. Works on a connection of its own (spilling
    under `spill_to`)."""
    from relops_pipeline.lib.tracestore.schema import SPANS, TRACE_REJECTS

    rejects = tables.store(TRACE_REJECTS)
    runs, ours = _of_batches(
        con, batch_ids,
        "SELECT span_id AS run_id, ingest_batch_id, CAST(start_time AS DATE) AS day FROM spans "
        "WHERE source_format = 'langsmith' AND ingest_batch_id IN (SELECT b FROM after_batches)",
        f"SELECT {_PATCHED_RUN} AS run_id, json_extract_string(raw, '$.trace_id') AS trace_id, raw, source_file, "
        f"source_line, ingest_batch_id, rejected_at FROM trace_rejects WHERE {_WAITING_PATCH} "
        "AND ingest_batch_id IN (SELECT b FROM after_batches)")
    # None: a commit that does not name its batches (an older relops): every waiting patch for
    # these runs (one applied before changes nothing of a run still in its first copy, below).
    commits = rejects.commits_after(rejects_read) if runs.num_rows else []
    theirs = None if commits is None else {b for batches in commits for b in batches}
    if not ours.num_rows and theirs is not None and not theirs:
        return _NO_ENDS
    r = _looking_connection(settings, spill_to)
    try:
        # The batches of each ingestion (these files', and each commit's since): a patch that
        # waited in an ingestion that also brought its run was merged into that run as read.
        ingestions = [list(batch_ids), *(sorted(c) for c in commits or ())]
        r.execute("CREATE TEMP TABLE ingestions AS SELECT unnest(b) AS b, i FROM "
                  "(SELECT unnest(?::VARCHAR[][]) AS b, unnest(range(?)) AS i)", [ingestions, len(ingestions)])
        r.register("after_runs", runs)
        r.register("our_patches", ours)
        r.execute("CREATE TEMP TABLE waiting AS SELECT * FROM our_patches")
        if theirs is None or theirs:
            rejects.register(r, "stored_rejects")
            try:
                r.execute(
                    f"INSERT INTO waiting SELECT {_PATCHED_RUN}, json_extract_string(raw, '$.trace_id'), raw, source_file, "
                    f"source_line, ingest_batch_id, rejected_at FROM stored_rejects WHERE {_WAITING_PATCH} "
                    f"AND {_PATCHED_RUN} IN (SELECT run_id FROM after_runs) "
                    "AND ingest_batch_id NOT IN (SELECT unnest(?::VARCHAR[])) "
                    + ("" if theirs is None else "AND ingest_batch_id IN (SELECT unnest(?::VARCHAR[]))"),
                    [list(batch_ids)] + ([] if theirs is None else [sorted(theirs)]))
            finally:
                rejects.unregister(r, "stored_rejects")
        # Received after every copy it may apply to was ingested, whatever the writers' clocks
        # say (`apply_waiting` leaves a patch received before its run's copy to the post's read).
        r.execute(
            "INSERT INTO langsmith_pending (run_id, trace_id, payload, source_file, source_line, ingest_batch_id, received_at) "
            "SELECT run_id, trace_id, raw, source_file, source_line, ingest_batch_id, TIMESTAMP '9000-01-01' "
            "+ to_microseconds(row_number() OVER (ORDER BY rejected_at, source_file, source_line)) FROM waiting")
        if not _count(r, "SELECT count(*) FROM langsmith_pending"):
            return _NO_ENDS
        stored = tables.store(SPANS)
        stored.register(r, "stored_spans", days=_run_days(r))
        try:
            # Only a run the store holds in the one copy committed with it: a run corrected
            # since may have taken a later end, which these patches, applied now, would undo.
            r.execute("INSERT INTO spans BY NAME SELECT s.* FROM stored_spans s SEMI JOIN langsmith_pending p "
                      "ON s.span_id = p.run_id AND (p.trace_id IS NULL OR s.trace_id = p.trace_id) "
                      f"{_in_one_copy(stored, 'stored_spans')}")
        finally:
            stored.unregister(r, "stored_spans")
        # Not a patch that the run's copy took as it was read: one whose reject the ingestion
        # that committed that copy kept (a reject stays after its patch is applied).
        r.execute("DELETE FROM langsmith_pending p USING spans s, ingestions a, ingestions c "
                  "WHERE s.span_id = p.run_id AND (p.trace_id IS NULL OR s.trace_id = p.trace_id) "
                  "AND a.b = p.ingest_batch_id AND c.b = s.ingest_batch_id AND a.i = c.i")
        # Under the batch of these files naming the run (its own, or the one that kept its patch).
        return _apply_ends_to_loaded(
            con, r, settings, "SELECT run_id, min(b) AS b FROM (SELECT run_id, ingest_batch_id AS b FROM after_runs "
                              "UNION ALL SELECT run_id, ingest_batch_id FROM our_patches) GROUP BY 1")
    finally:
        r.close()


def _complete_langsmith_copies(con: duckdb.DuckDBPyConnection, tables: TraceTables, settings: IngestSettings,
                               batch_ids: Sequence[str], ends: pa.Table, spill_to: Path) -> EndsApplied:
    """After these files' commit: the LangSmith ends (patches) these files applied to a run of
    theirs whose copy the store did not take, because it already held the run (a copy of its
    start delivered again, or committed by another writer first). The warehouse drops such a
    copy and applies the ends to the run it holds; so is each end applied here, in the order
    the ends came, to the run as the store keeps it. `ends` are the patches the files' reading
    recorded (langsmith.APPLIED_LOG), under their batch. Returns the copies this changes (None:
    none), to append as corrections, and their span_updates rows, one per span under the batch
    of its first end, so that this ingestion refreshes their days. An end merged into its start
    in one file is not among them: the warehouse drops it with the copy too. Works on a
    connection of its own (spilling under `spill_to`)."""
    from relops_pipeline.lib.tracestore.schema import SPANS

    if not ends.num_rows:
        return _NO_ENDS
    r = _looking_connection(settings, spill_to)
    try:
        r.register("ends", ends)
        days = sorted(_with_neighbours(d for (d,) in r.execute("SELECT DISTINCT CAST(start_time AS DATE) FROM ends "
                                                                 "WHERE start_time IS NOT NULL").fetchall()))
        stored = tables.store(SPANS)
        stored.register(r, "stored_spans", days=days)
        try:
            # The runs of which the store holds no copy of these batches (nor a correction of
            # one): the copies the store took already hold their ends.
            r.execute(
                "INSERT INTO spans BY NAME SELECT s.* FROM stored_spans s "
                "SEMI JOIN ends e ON e.trace_id = s.trace_id AND e.span_id = s.span_id "
                f"ANTI JOIN (SELECT trace_id, span_id FROM {stored.raw_view('stored_spans')} "
                "           WHERE ingest_batch_id IN (SELECT unnest(?::VARCHAR[]))) o "
                "ON o.trace_id = s.trace_id AND o.span_id = s.span_id", [list(batch_ids)])
        finally:
            stored.unregister(r, "stored_spans")
        # Received after the stored copies were ingested, whatever the writers' clocks say, in the
        # order the files and their lines came.
        r.execute(
            "INSERT INTO langsmith_pending (run_id, trace_id, payload, source_file, source_line, ingest_batch_id, received_at) "
            "SELECT e.span_id, e.trace_id, e.payload, e.source_file, e.source_line, e.ingest_batch_id, TIMESTAMP '9000-01-01' "
            "+ to_microseconds(row_number() OVER (ORDER BY b.i, e.source_line)) "
            "FROM ends e JOIN (SELECT unnest(?::VARCHAR[]) AS b, unnest(range(?)) AS i) b ON b.b = e.ingest_batch_id "
            "SEMI JOIN spans s ON s.trace_id = e.trace_id AND s.span_id = e.span_id", [list(batch_ids), len(batch_ids)])
        if not _count(r, "SELECT count(*) FROM langsmith_pending"):
            return _NO_ENDS
        return _apply_ends_to_loaded(con, r, settings, "SELECT run_id, ingest_batch_id AS b FROM langsmith_pending "
                                                       "QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY received_at) = 1")
    finally:
        r.close()


def _apply_ends_to_loaded(con: duckdb.DuckDBPyConnection, r: duckdb.DuckDBPyConnection, settings: IngestSettings,
                          run_batches_sql: str, *, changed_only: bool = True) -> EndsApplied:
    """Apply the LangSmith ends waiting in `langsmith_pending` on the looking connection `r` to
    the stored runs loaded into its `spans`. Returns the copies this changes (None: none; with
    `changed_only` False, every loaded copy), their span_updates rows, one per span, under the
    batch that `run_batches_sql` ((run_id, b) rows) names for its run, and the ends applied; the
    batches of `con` get their times."""
    from relops_pipeline.lib.readers import langsmith

    r.execute("CREATE TEMP TABLE ls_loaded AS SELECT * FROM spans")
    batches = r.sql(run_batches_sql).to_arrow_table()
    cap, received = int(settings.text_cap), utc_naive()
    _create_applied_log(r)
    langsmith.apply_waiting(r, lambda batch: LoadContext(batch or "", "", received, cap, settings.price_for))
    ends = _applied_in_order(r)
    completed = r.sql("SELECT s.* FROM spans s JOIN ls_loaded l USING (trace_id, span_id, start_time)"
                      + (" WHERE s IS DISTINCT FROM l" if changed_only else "")).to_arrow_table()
    if not completed.num_rows:
        return EndsApplied(None, [], ends)
    r.register("completed_now", completed)
    r.register("run_batches", batches)
    cur = r.execute(
        "SELECT * REPLACE (k.b AS ingest_batch_id) FROM span_updates u JOIN run_batches k ON k.run_id = u.span_id "
        "SEMI JOIN completed_now c USING (trace_id, span_id) "
        "QUALIFY row_number() OVER (PARTITION BY u.trace_id, u.span_id ORDER BY u.source_file, u.source_line) = 1 "
        "ORDER BY ALL")
    updates = [dict(zip([d[0] for d in cur.description], row, strict=True)) for row in cur.fetchall()]
    _widen_batch_times(con, "SELECT unnest(?::VARCHAR[]) AS b, unnest(?::TIMESTAMP[]) AS lo, unnest(?::TIMESTAMP[]) AS hi",
                       [[u["ingest_batch_id"] for u in updates], [u["start_time"] for u in updates],
                        [u["start_time"] for u in updates]])
    return EndsApplied(completed, updates, ends)


def _reapply_over_racing_copies(con: duckdb.DuckDBPyConnection, tables: TraceTables, settings: IngestSettings,
                                ends_on_stored: Sequence[EndsOnStored], own_versions: set[int],
                                spill_to: Path) -> EndsApplied:
    """After all these files' commits: the LangSmith ends these files applied to runs the store
    held (`ends_on_stored`: each with the spans version it was applied to, in the order applied),
    applied again over the copies of those runs that another writer committed since that
    version (not these files' commits, `own_versions`).

    Two writers that each apply an end to one stored run at the same moment each append a copy
    with their own end, and the view keeps one: the other end would be lost, where the warehouse
    applies both, one ingestion after the other. Whichever writer commits last sees the other's
    copy here and appends that copy with its own ends applied over it (ingested a microsecond
    before the run's first copy, so that it wins in the views); when each sees the other's, both do, and the views
    keep one of the two, each an order the warehouse could have ingested them in. Returns the
    copies this changes (None: none) and their span_updates rows, under the batch of the run's
    first end. Works on a connection of its own (spilling under `spill_to`)."""
    from relops_pipeline.lib.tracestore.schema import SPANS

    groups = [(g.read_version, g.ends) for g in ends_on_stored if g.ends is not None and g.ends.num_rows]
    if not groups:
        return _NO_ENDS
    stored = tables.store(SPANS)
    since = min(version for version, _ in groups)
    if not set(range(since + 1, stored.version() + 1)) - own_versions:
        return _NO_ENDS
    reads = stored.versions_read_after(since)
    r = _looking_connection(settings, spill_to)
    try:
        for i, g in enumerate(g for g in ends_on_stored if g.ends is not None and g.ends.num_rows):
            r.register("group_ends", g.ends)
            r.execute(f"{'CREATE TEMP TABLE ends AS' if i == 0 else 'INSERT INTO ends'} "
                      f"SELECT *, {i} AS grp, ?::BIGINT AS committed FROM group_ends", [g.committed])
            r.unregister("group_ends")
        # Per run, the first version that committed these ends over it (NULL: none changed it).
        r.execute("CREATE TEMP TABLE run_committed AS SELECT trace_id, span_id, start_time, min(committed) AS committed "
                  "FROM ends GROUP BY ALL")
        r.execute("CREATE TEMP TABLE racing AS SELECT * FROM spans LIMIT 0")
        for (committed,) in r.execute("SELECT DISTINCT committed FROM run_committed").fetchall():
            # Not a copy whose writer read the store once these ends were committed over the
            # run: it was made over them (applying them again would put them after its end).
            saw_ours = set() if committed is None else {v for v, read in reads.items() if read is not None and read >= committed}
            days = [d for (d,) in r.execute("SELECT DISTINCT CAST(start_time AS DATE) FROM run_committed "
                                            "WHERE committed IS NOT DISTINCT FROM ?", [committed]).fetchall()]
            stored.register_added_after(r, "racing_spans", since, not_by=own_versions | saw_ours, days=days)
            try:
                # Per run, the most complete of the other writers' copies, as the views order them
                # (committed after the earliest version these ends were applied to: one the ends
                # were applied to already takes them again, which changes nothing).
                r.execute(
                    "INSERT INTO racing BY NAME SELECT s.* FROM racing_spans s SEMI JOIN run_committed c "
                    "ON c.trace_id = s.trace_id AND c.span_id = s.span_id AND c.start_time = s.start_time "
                    "AND c.committed IS NOT DISTINCT FROM ? "
                    f"QUALIFY row_number() OVER (PARTITION BY trace_id, span_id, start_time ORDER BY {SPANS.keep_order}) = 1",
                    [committed])
            finally:
                stored.unregister(r, "racing_spans")
        if not _count(r, "SELECT count(*) FROM racing"):
            return _NO_ENDS
        r.execute("INSERT INTO spans BY NAME SELECT * FROM racing SEMI JOIN ends USING (trace_id, span_id, start_time)")
        # Ingested when the run's first copy was (the appended copy takes a microsecond less):
        # the other writer's copy may have been ingested after this writer's, which the views
        # would keep otherwise, being as complete.
        stored.register(r, "every_copy", days=[d for (d,) in r.execute(
            "SELECT DISTINCT CAST(start_time AS DATE) FROM racing").fetchall()])
        try:
            r.execute(f"UPDATE spans SET ingested_at = c.first FROM (SELECT trace_id, span_id, start_time, "
                      f"min(ingested_at) AS first FROM {stored.raw_view('every_copy')} GROUP BY ALL) c "
                      "WHERE c.trace_id = spans.trace_id AND c.span_id = spans.span_id AND c.start_time = spans.start_time "
                      "AND c.first < spans.ingested_at")
        finally:
            stored.unregister(r, "every_copy")
        r.execute(
            "INSERT INTO langsmith_pending (run_id, trace_id, payload, source_file, source_line, ingest_batch_id, received_at) "
            "SELECT span_id, trace_id, payload, source_file, source_line, ingest_batch_id, TIMESTAMP '9000-01-01' "
            "+ to_microseconds(row_number() OVER (ORDER BY grp, seq)) FROM ends "
            "SEMI JOIN spans USING (trace_id, span_id, start_time)")
        if not _count(r, "SELECT count(*) FROM langsmith_pending"):
            return _NO_ENDS
        # Also a copy these ends do not change (the other writer's holds them already): the
        # views would otherwise keep whichever of its copy and this writer's sorts first.
        done = _apply_ends_to_loaded(con, r, settings, "SELECT span_id AS run_id, ingest_batch_id AS b FROM ends "
                                                       "QUALIFY row_number() OVER (PARTITION BY span_id ORDER BY grp, seq) = 1",
                                     changed_only=False)
        if done.completed is None:
            return done
        # And up to a millisecond earlier by what the ends set: two writers re-applying at once
        # (each over the other's copy, from the same first copy) stamp theirs apart, so that the
        # views keep the same one of them whichever reads (unless the two hashes agree).
        r.register("reapplied", done.completed)
        try:
            return done._replace(completed=r.sql(
                "SELECT * REPLACE (ingested_at - to_microseconds(CAST(hash(end_time, output_text, output_messages, status, "
                "error_type, finish_reason, model, input_tokens, output_tokens, cost_usd) % 1000 AS BIGINT)) AS ingested_at) "
                "FROM reapplied").to_arrow_table())
        finally:
            r.unregister("reapplied")
    finally:
        r.close()


class EndsOnStored(NamedTuple):
    """LangSmith ends an ingestion applied to runs the store held: the version of the spans read
    before, the ends (`_applied_in_order`; None: none) and the version committing the copies they
    changed (None: none changed)."""

    read_version: int
    ends: pa.Table | None
    committed: int | None


class EndsApplied(NamedTuple):
    """LangSmith ends applied to runs as the store keeps them: the copies they changed (None:
    none), those copies' span_updates rows, and the ends applied (`_applied_in_order`)."""

    completed: pa.Table | None
    updates: list[dict]
    ends: pa.Table | None


def _create_applied_log(con: duckdb.DuckDBPyConnection) -> None:
    """The table in which the LangSmith reader records the ends it applies (langsmith.APPLIED_LOG)."""
    from relops_pipeline.lib.readers import langsmith

    con.execute(f"CREATE TEMP TABLE {langsmith.APPLIED_LOG} (ingest_batch_id VARCHAR, trace_id VARCHAR, "
                "span_id VARCHAR, start_time TIMESTAMP, payload VARCHAR, source_file VARCHAR, source_line BIGINT)")


def _applied_in_order(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """The ends recorded in langsmith.APPLIED_LOG, numbered (`seq`) in the order they were applied."""
    from relops_pipeline.lib.readers import langsmith

    return con.sql(f"SELECT *, row_number() OVER (ORDER BY rowid) AS seq FROM {langsmith.APPLIED_LOG}").to_arrow_table()


_NO_ENDS = EndsApplied(None, [], None)


def _run_days(r: duckdb.DuckDBPyConnection) -> list[date] | None:
    """The day partitions that can hold the runs `langsmith_pending` names: those of the runs
    these batches hold, and around each waiting patch's end (a run ends within a day of its
    start); None (every day) when a patch has no time."""
    days = {d for (d,) in r.execute("SELECT DISTINCT day FROM after_runs WHERE run_id IN "
                                    "(SELECT run_id FROM langsmith_pending)").fetchall()}
    around = _patch_days(p for (p,) in r.execute("SELECT payload FROM langsmith_pending WHERE run_id NOT IN "
                                                 "(SELECT run_id FROM after_runs)").fetchall())
    return None if around is None else sorted(days | around)


def _patch_days(payloads: Iterable[str]) -> set[date] | None:
    """The days around each LangSmith patch's end (a run ends within a day of its start): where
    its run can be stored; None (every day) when a patch has no time."""
    from relops_pipeline.lib.readers.base import to_utc_naive

    days: set[date] = set()
    for payload in payloads:
        patch = json.loads(payload)
        try:
            when = to_utc_naive(patch.get("end_time") or patch.get("start_time"))
        except (TypeError, ValueError):
            when = None
        if when is None:
            return None
        days |= _with_neighbours([when.date()])
    return days


# A LangSmith patch an ingestion kept waiting for its run, and the run it names (trace_rejects).
_WAITING_PATCH = "source_format = 'langsmith' AND starts_with(reason, 'pending: ') AND json_valid(raw)"
_PATCHED_RUN = "json_extract_string(raw, '$.id')"


def _update_identity(update: dict) -> tuple:
    return tuple(update[k] for k in ("ingest_batch_id", "trace_id", "span_id", "source_file", "source_line"))


def _in_one_copy(stored: TraceStore, view: str) -> str:
    """A join keeping the spans `s` that the store holds in one copy, the one committed with
    them (none corrected since), counted on every copy the view `view` reads."""
    return (f"SEMI JOIN (SELECT trace_id, span_id FROM {stored.raw_view(view)} GROUP BY ALL HAVING count(*) = 1) c "
            "ON c.trace_id = s.trace_id AND c.span_id = s.span_id")


def _of_batches(con: duckdb.DuckDBPyConnection, batch_ids: Sequence[str], *queries: str) -> list[pa.Table]:
    """The rows of each query on `con`, in which `after_batches (b)` names the batches `batch_ids`."""
    con.execute("CREATE OR REPLACE TEMP TABLE after_batches AS SELECT unnest(?::VARCHAR[]) AS b", [list(batch_ids)])
    try:
        return [con.sql(q).to_arrow_table() for q in queries]
    finally:
        con.execute("DROP TABLE after_batches")


def _widen_batch_times(con: duckdb.DuckDBPyConnection, times_sql: str, params: list | None = None) -> None:
    """Widen the batches' min/max start times to the (b, lo, hi) rows of `times_sql`: the days of
    spans a batch completed are refreshed with its own."""
    con.execute(
        "UPDATE ingest_batches SET min_start_time = least(coalesce(min_start_time, x.lo), x.lo), "
        f"max_start_time = greatest(coalesce(max_start_time, x.hi), x.hi) FROM ({times_sql}) x WHERE batch_id = x.b",
        params or [])


def _looking_connection(settings: IngestSettings, spill_to: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the warehouse's tables, for a second look after the commit:
    within the ingestion's memory limit, spilling under `spill_to`."""
    from relops_pipeline.lib.warehouse import migrate

    r = duckdb.connect()
    try:
        _set_memory_limit(r, settings)
        r.execute(f"SET temp_directory = {_sql_lit(str(spill_to))}")
        migrate(r)
    except BaseException:
        r.close()
        raise
    return r


def _content_digest(con: duckdb.DuckDBPyConnection, rows: pa.Table) -> str:
    """A digest of the rows' content, whatever their order: their count and the xor of their
    hashes (streamed: a correction of a million spans is not built into one string)."""
    con.register("digested_rows", rows)
    try:
        n, digest = con.execute("SELECT count(*), bit_xor(hash(d)) FROM digested_rows d").fetchall()[0]
        return f"{n}-{digest:016x}" if n else "0"
    finally:
        con.unregister("digested_rows")


def _with_neighbours(days: Iterable[date]) -> set[date]:
    """The days and the day before and after each: an event is stamped within its call, so its
    span started at most a day earlier or later."""
    return {date.fromordinal(d.toordinal() + k) for d in days for k in (-1, 0, 1)}


# A span with a field GenAI events fill still empty (`s`: the spans' alias).
_INCOMPLETE = ("({s}input_text IS NULL OR {s}output_text IS NULL OR {s}input_messages IS NULL "
               "OR {s}output_messages IS NULL OR {s}finish_reason IS NULL)")

# The batch id GenAI events read back from the store carry while they fill these files' spans.
_STORED_EVENTS = "stored-genai-events"
# What GenAI events fill in a span, as kept in `loaded` before they do (_changed_since_loaded).
_TEXT_FIELDS = ("trace_id, span_id, start_time, input_text, output_text, CAST(input_messages AS VARCHAR) AS im, "
                "CAST(output_messages AS VARCHAR) AS om, finish_reason")


def _changed_since_loaded(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """The spans whose text, messages or finish reason differ from what `loaded` kept of them."""
    return con.sql(
        "SELECT s.* FROM spans s JOIN loaded l USING (trace_id, span_id, start_time) "
        "WHERE s.input_text IS DISTINCT FROM l.input_text OR s.output_text IS DISTINCT FROM l.output_text "
        "OR CAST(s.input_messages AS VARCHAR) IS DISTINCT FROM l.im OR CAST(s.output_messages AS VARCHAR) IS DISTINCT FROM l.om "
        "OR s.finish_reason IS DISTINCT FROM l.finish_reason").to_arrow_table()


def _complete_from_store(con: duckdb.DuckDBPyConnection, tables: TraceTables, cap: int) -> pa.Table | None:
    """Spans an earlier ingestion stored that these files' GenAI events complete (a capture's
    log export arriving after its traces): loaded from the store into `con`, their text,
    messages and finish reason filled from the events exactly as the warehouse fills them,
    and returned as the completed copies (None: no event names a stored span). The batches
    whose events named them get those spans' times, so their days are refreshed."""
    from relops_pipeline.lib.tracestore.schema import SPANS

    con.execute(
        "CREATE OR REPLACE TEMP TABLE batch_events AS SELECT DISTINCT trace_id, span_id FROM genai_events e "
        "WHERE trace_id IS NOT NULL AND span_id IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM spans s WHERE s.trace_id = e.trace_id AND s.span_id = e.span_id)")
    try:
        if not _count(con, "SELECT count(*) FROM batch_events"):
            return None
        event_days = [r[0] for r in con.execute(
            "SELECT DISTINCT CAST(event_time AS DATE) FROM genai_events SEMI JOIN batch_events USING (trace_id, span_id)"
        ).fetchall()]
        days = None if any(d is None for d in event_days) else sorted(
            _with_neighbours(event_days))
        tables.store(SPANS).register(con, "stored_spans", days=days)
        try:
            con.execute("INSERT INTO spans BY NAME SELECT * FROM stored_spans SEMI JOIN batch_events USING (trace_id, span_id)")
        finally:
            tables.store(SPANS).unregister(con, "stored_spans")
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE loaded AS SELECT {_TEXT_FIELDS} "
            "FROM spans SEMI JOIN batch_events USING (trace_id, span_id)")
        if not _count(con, "SELECT count(*) FROM loaded"):
            return None
        _fill_text_from_events(con, "", cap)  # no batch of its own: the spans batch_events names
        _widen_batch_times(con, "SELECT e.ingest_batch_id AS b, min(l.start_time) AS lo, max(l.start_time) AS hi "
                                "FROM genai_events e JOIN loaded l USING (trace_id, span_id) GROUP BY 1")
        return _changed_since_loaded(con)
    finally:
        con.execute("DROP TABLE IF EXISTS batch_events")
        con.execute("DROP TABLE IF EXISTS loaded")


def _remove_dead_scratch(workdir: Path) -> None:
    """Delete the scratch files of ingestions that were killed (their process is gone); those of
    running ones (several ingest at once) stay."""
    for leftover in workdir.glob(".ingest-*.duckdb*"):
        try:
            pid = int(leftover.name.split("-")[1])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError):
            leftover.unlink(missing_ok=True)
        except PermissionError:
            continue  # alive, someone else's


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _count_store_duplicates(result: FileResult, moved: dict[str, tuple[int, AppendResult]]) -> None:
    """Move what the store already held from accepted (or rejected) to duplicates, and check
    that the file's records still add up."""
    span_dups = moved["spans"][0] - moved["spans"][1].appended
    event_dups = moved["genai_events"][0] - moved["genai_events"][1].appended
    reject_dups = moved["trace_rejects"][0] - moved["trace_rejects"][1].appended
    result.spans_accepted -= span_dups
    result.events_accepted -= event_dups
    result.accepted -= span_dups + event_dups
    result.rejected -= reject_dups
    result.duplicates += span_dups + event_dups + reject_dups
    if moved["spans"][1].appended == 0:
        result.unknown_release = result.anomalies = 0
    if result.read != result.accepted + result.rejected + result.duplicates or min(result.accepted, result.rejected) < 0:
        raise AccountingError(f"{result.path}: read {result.read} != accepted {result.accepted} + rejected "
                              f"{result.rejected} + duplicates {result.duplicates} after the trace store's commit")


def _prestage_groups(files: Sequence[Path], settings: IngestSettings, fmt: str | None,
                     landing_dir: Path | None) -> Iterable[tuple[list[Path], SourceSettings, str | None]]:
    """The files in order, consecutive small OTLP JSON-lines files with equal source settings
    grouped (up to PRESTAGE_BATCH_BYTES); every other file alone. With each group, its format
    (None: unknown, the file's ingestion says why)."""
    group: list[Path] = []
    group_source, group_bytes = SourceSettings(), 0
    for f in files:
        try:
            found_fmt, source = _how_to_read(f, settings, fmt, landing_dir)
            size = f.stat().st_size
        except (OSError, IngestError):  # ingest_file says why
            found_fmt, source, size = None, SourceSettings(), 0
        small = found_fmt == otlp.FORMAT and otlp.can_prestage(f)
        if group and (not small or source != group_source or group_bytes + size > otlp.PRESTAGE_BATCH_BYTES):
            yield group, group_source, otlp.FORMAT
            group, group_bytes = [], 0
        if not small:
            yield [f], source, found_fmt
            continue
        group.append(f)
        group_source, group_bytes = source, group_bytes + size
    if group:
        yield group, group_source, otlp.FORMAT
