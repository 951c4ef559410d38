"""What a crash can leave behind in the warehouse, found from the data itself: days whose derived
data (daily signals, per-request features) is missing or older than the spans an ingestion
committed for them, and pointer files behind the registry's state."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import duckdb


@dataclasses.dataclass(frozen=True)
class StaleDay:
    """A day whose spans changed after its derived data was computed (or that has none)."""

    day: dt.date
    spans: int
    last_ingested: dt.datetime
    signals_at: dt.datetime | None
    features_at: dt.datetime | None

    @property
    def why(self) -> str:
        if self.signals_at is None:
            return f"no daily signals{' nor features' if self.features_at is None else ''} for its {self.spans} spans"
        if self.features_at is None:
            return f"no per-request features for its {self.spans} spans"
        return f"spans ingested at {self.last_ingested:%Y-%m-%d %H:%M:%S} after its derived data was computed"


@dataclasses.dataclass(frozen=True)
class PointerBehind:
    """A pointer file whose seq is behind the registry's state (a deploy that did not finish)."""

    workflow: str
    registry_seq: int
    pointer_seq: int | None


def stale_days(con: duckdb.DuckDBPyConnection) -> list[StaleDay]:
    """Days whose daily signals or per-request features are missing, or were computed before the
    last ingestion that added spans (or completed them with events) on that day."""
    rows = con.execute("""
        WITH touched AS (
            SELECT s.start_time::DATE AS day, s.ingest_batch_id AS batch_id, count(*) AS spans,
                   max(s.ingested_at) AS ingested_at
            FROM spans s WHERE s.start_time IS NOT NULL GROUP BY ALL
            UNION ALL
            SELECT DISTINCT s.start_time::DATE, e.ingest_batch_id, 0, NULL
            FROM genai_events e JOIN spans s USING (trace_id, span_id) WHERE s.start_time IS NOT NULL
        ), days AS (
            -- A batch without its record (in the trace store: a run killed between the store's
            -- commit and the warehouse's record) counts from when its spans were ingested.
            SELECT t.day, sum(t.spans) AS spans, max(coalesce(b.finished_at, t.ingested_at)) AS last_ingested
            FROM touched t LEFT JOIN ingest_batches b ON b.batch_id = t.batch_id GROUP BY t.day
            HAVING max(coalesce(b.finished_at, t.ingested_at)) IS NOT NULL
        ), starts AS (  -- features are per trace, on the day its first span starts
            SELECT DISTINCT first_start::DATE AS day
            FROM (SELECT min(start_time) AS first_start FROM spans WHERE start_time IS NOT NULL GROUP BY trace_id)
        ), signals AS (SELECT day, min(computed_at) AS at FROM daily_signals GROUP BY day),
        features AS (SELECT day, min(computed_at) AS at FROM trace_features GROUP BY day)
        SELECT d.day, d.spans, d.last_ingested, s.at, f.at
        FROM days d LEFT JOIN signals s USING (day) LEFT JOIN features f USING (day)
        WHERE s.at IS NULL OR s.at < d.last_ingested OR f.at < d.last_ingested
           OR (f.at IS NULL AND d.day IN (SELECT day FROM starts))
        ORDER BY d.day
    """).fetchall()
    return [StaleDay(day, int(spans), last, sig, feat) for day, spans, last, sig, feat in rows]


def pointers_behind(con: duckdb.DuckDBPyConnection, registry_dir: str | Path) -> list[PointerBehind]:
    """Workflows whose pointer file is missing or older than the registry's state."""
    from relops_pipeline.lib.registry.state import list_states, pointer_seq_on_disk

    out = []
    for state in list_states(con):
        on_disk = pointer_seq_on_disk(registry_dir, state.workflow)
        if state.seq > 0 and (on_disk is None or on_disk < state.seq):
            out.append(PointerBehind(state.workflow, state.seq, on_disk))
    return out
