"""The service entry points behind the daily traces assets: validate a window of days, refresh
its daily signals, refresh its per-request features. Each returns a typed result that the
Dagster layer turns into metadata (defs/ingest/metadata.py) and that round-trips through JSON
(lib/results.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import duckdb

from relops_pipeline.lib.settings import TraceStoreSettings
from relops_pipeline.lib.validation import SpanValidation


@dataclasses.dataclass(frozen=True)
class ReleaseVolume:
    workflow: str
    release: str
    spans: int


@dataclasses.dataclass(frozen=True)
class DayValidation:
    """The spans of a window of days, validated."""

    start: dt.datetime
    end: dt.datetime  # exclusive
    spans: int
    unknown_release_spans: int
    rejects_in_overlapping_batches: int
    by_release: tuple[ReleaseVolume, ...]
    validation: SpanValidation
    # spans kept with a flag (ends before it starts, negative latency; latency NULL)
    anomalous_spans: int = 0


@dataclasses.dataclass(frozen=True)
class SignalsRefresh:
    """Daily signals recomputed for a window of days."""

    start: dt.date
    end: dt.date  # exclusive
    rows: int
    spans: int
    errors: int
    cost_usd: float
    max_latency_p95_ms: float


@dataclasses.dataclass(frozen=True)
class WorkflowTraces:
    workflow: str
    traces: int


@dataclasses.dataclass(frozen=True)
class FeaturesRefresh:
    """Per-request features recomputed for a window of days."""

    start: dt.date
    end: dt.date  # exclusive
    traces: int  # rows of the days after the refresh
    by_workflow: tuple[WorkflowTraces, ...]
    recomputed: int | None = None  # rows computed by this refresh (None: not counted)
    batches: int | None = None  # ingest batches it caught up with (None: the days were recomputed whole)


# A large window is validated in frames of about this many spans (partitioned by trace_id), so
# its spans are never all in pandas at once.
VALIDATION_FRAME_ROWS = 250_000


def days_with_spans(con: duckdb.DuckDBPyConnection, windows: list[tuple[dt.date, dt.date]]) -> set[dt.date]:
    """The days within the (first, last) windows that hold at least one span (a home that keeps
    its spans in the trace store: `stored_days_with_spans`, which reads no data file)."""
    if not windows:
        return set()
    where = " OR ".join("(start_time >= ? AND start_time < ?)" for _ in windows)
    params = [b for lo, hi in windows for b in (lo, hi + dt.timedelta(days=1))]
    return {r[0] for r in con.execute(f"SELECT DISTINCT CAST(start_time AS DATE) FROM spans WHERE {where}", params).fetchall()}


def stored_days_with_spans(store: TraceStoreSettings, windows: list[tuple[dt.date, dt.date]]) -> set[dt.date]:
    """`days_with_spans` of a home that keeps its spans in the trace store, from the spans
    table's list of day partitions (its log), without opening the warehouse or a data file."""
    from relops_pipeline.lib.tracestore.linked import TraceTables
    from relops_pipeline.lib.tracestore.schema import SPANS

    spans = TraceTables(store).store(SPANS)
    if not windows or not spans.exists():
        return set()
    return {d for d in spans.days() if any(lo <= d <= hi for lo, hi in windows)}


def validate_window(
    con: duckdb.DuckDBPyConnection,
    start: dt.datetime,
    end: dt.datetime,
    *,
    max_violating_share: float | None = None,
) -> DayValidation:
    """Validate the spans that start in [start, end) (Great Expectations rules) and count them.
    `max_violating_share`: the share of spans a proportionate rule tolerates as a WARN
    (lib/validation.py; None: DEFAULT_MAX_VIOLATING_SHARE)."""
    from relops_pipeline.lib.validation import DEFAULT_MAX_VIOLATING_SHARE, validate_spans

    window = "start_time >= ? AND start_time < ?"
    total = int(con.execute(f"SELECT count(*) FROM spans WHERE {window}", [start, end]).fetchall()[0][0])
    buckets = max(1, -(-total // VALIDATION_FRAME_ROWS))
    counted = {"unknown_release": 0, "anomalous": 0}

    def frames():
        # Partitioned by trace_id: both rows of a duplicated (trace_id, span_id) share a frame.
        for bucket in range(buckets):
            df = con.execute(
                "SELECT trace_id, span_id, workflow, release, release_known, start_time, end_time, latency_ms, "
                f"anomalies IS NOT NULL AS anomalous FROM spans WHERE {window} "
                "AND coalesce(hash(trace_id), 0) % ? = ?",
                [start, end, buckets, bucket],
            ).df()
            counted["unknown_release"] += int((~df["release_known"].astype(bool)).sum()) if len(df) else 0
            counted["anomalous"] += int(df["anomalous"].sum()) if len(df) else 0
            yield df.drop(columns=["anomalous"])

    share = DEFAULT_MAX_VIOLATING_SHARE if max_violating_share is None else max_violating_share
    validation = validate_spans(frames(), max_violating_share=share)
    if end - start > dt.timedelta(days=1):
        validation = _judged_day_by_day(con, start, end, validation, share)
    by_release = con.execute(
        f"SELECT workflow, release, count(*) AS spans FROM spans WHERE {window} "
        "GROUP BY ALL ORDER BY workflow, release",
        [start, end],
    ).fetchall()
    rejects = con.execute(
        "SELECT count(*) FROM trace_rejects r JOIN ingest_batches b ON b.batch_id = r.ingest_batch_id "
        "WHERE b.min_start_time < ? AND b.max_start_time >= ?",
        [end, start],
    ).fetchall()[0][0]
    return DayValidation(
        start=start,
        end=end,
        spans=validation.element_count,
        unknown_release_spans=counted["unknown_release"],
        rejects_in_overlapping_batches=int(rejects),
        by_release=tuple(ReleaseVolume(w, r, int(n)) for w, r, n in by_release),
        validation=validation,
        anomalous_spans=counted["anomalous"],
    )


# The proportionate rules' violations and the spans each one checks (lib/validation.py), per day.
_SHARES_BY_DAY = """
    SELECT CAST(start_time AS DATE) AS day,
        count(*) FILTER (WHERE end_time < start_time), count(*) FILTER (WHERE end_time IS NOT NULL),
        count(*) FILTER (WHERE latency_ms < 0), count(latency_ms)
    FROM spans WHERE start_time >= ? AND start_time < ? GROUP BY 1 ORDER BY 1"""


def _judged_day_by_day(con: duckdb.DuckDBPyConnection, start: dt.datetime, end: dt.datetime,
                       validation: SpanValidation, share: float) -> SpanValidation:
    """A window of several days (one run over a range of days) judged as each day alone would
    be: a proportionate rule tolerated over the window (violations within the share) is an
    ERROR when one of its days is over the share, so a broken day is not hidden by clean days
    around it. Days over the share by count are validated again alone (Great Expectations
    judges); the rule takes the earliest failing day's result, named in `observed["day"]`
    (the window's count in `observed["window_unexpected_count"]`)."""
    from relops_pipeline.lib.validation import ERROR, PROPORTIONATE_RULES, RuleResult

    tolerated = {r.name for r in validation.rules if r.name in PROPORTIONATE_RULES and not r.passed and r.severity != ERROR}
    if not tolerated:
        return validation
    over: dict[str, list[dt.date]] = {name: [] for name in tolerated}
    for day, skewed, timed, negative, with_latency in con.execute(_SHARES_BY_DAY, [start, end]).fetchall():
        for name, bad, checked in (("times_ordered", skewed, timed), ("latency_not_negative", negative, with_latency)):
            if name in over and checked and bad / checked > share:
                over[name].append(day)
    worst: dict[str, RuleResult] = {}
    for day in sorted({d for days in over.values() for d in days}):
        alone = validate_window(con, dt.datetime.combine(day, dt.time()), dt.datetime.combine(day + dt.timedelta(days=1), dt.time()),
                                max_violating_share=share).validation
        for name in over:
            rule = alone.rule(name)
            if name not in worst and not rule.passed and rule.severity == ERROR:
                window = validation.rule(name).observed.get("unexpected_count")
                worst[name] = dataclasses.replace(
                    rule, observed={**rule.observed, "day": day.isoformat(), "window_unexpected_count": window},
                    description=f"on {day.isoformat()}: {rule.description}")
        if worst.keys() == over.keys():
            break
    if not worst:
        return validation
    rules = tuple(worst.get(r.name, r) for r in validation.rules)
    return dataclasses.replace(validation, rules=rules)


def refresh_signals(con: duckdb.DuckDBPyConnection, start: dt.date, end: dt.date) -> SignalsRefresh:
    """Recompute the daily signals of [start, end) and total them."""
    from relops_pipeline.lib.signals import compute_daily_signals

    rows = compute_daily_signals(con, start, end)
    spans, errors, cost, p95 = con.execute(
        "SELECT coalesce(sum(spans), 0), coalesce(sum(errors), 0), coalesce(sum(cost_usd), 0), "
        "max(latency_p95_ms) FROM daily_signals WHERE day >= ? AND day < ?",
        [start, end],
    ).fetchall()[0]
    return SignalsRefresh(start, end, rows, int(spans), int(errors), float(cost), float(p95 or 0.0))


def refresh_features(con: duckdb.DuckDBPyConnection, start: dt.date, end: dt.date, *,
                     incremental: bool = False) -> FeaturesRefresh:
    """Recompute the per-request features of [start, end) and count them per workflow.
    Incremental: only the traces of the batches the days' features do not reflect yet
    (lib/drift/features.pending_batches); the days whole when they have no features yet."""
    from relops_pipeline.lib.drift.features import compute_trace_features, pending_batches

    batches = pending_batches(con, start, end) if incremental else None
    recomputed = compute_trace_features(con, start, end, batch_ids=batches)
    by_wf = con.execute(
        "SELECT workflow, count(*) FROM trace_features WHERE day >= ? AND day < ? GROUP BY ALL ORDER BY ALL",
        [start, end],
    ).fetchall()
    traces = sum(int(n) for _, n in by_wf)
    return FeaturesRefresh(start, end, int(traces), tuple(WorkflowTraces(w, int(n)) for w, n in by_wf),
                           recomputed=int(recomputed), batches=None if batches is None else len(batches))
