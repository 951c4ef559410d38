"""The trace store: spans (and GenAI events, rejects) in Delta Lake tables (delta-rs), partitioned
by day, under the home or on object storage through the S3 API; several writers append at once;
DuckDB queries them.

See store.py for the guarantees (idempotent per source, exactly once per identity)."""

from relops_pipeline.lib.tracestore.schema import (
    GENAI_EVENTS,
    PARTITION_COLUMN,
    SPAN_KEY,
    SPANS,
    TABLES,
    TRACE_REJECTS,
    UNDATED_DAY,
    TableSpec,
    arrow_schema,
    span_arrow_schema,
)
from relops_pipeline.lib.tracestore.store import AppendResult, MigrationResult, TraceStore, default_uri

__all__ = [
    "GENAI_EVENTS", "PARTITION_COLUMN", "SPANS", "SPAN_KEY", "TABLES", "TRACE_REJECTS", "UNDATED_DAY", "AppendResult",
    "MigrationResult", "TableSpec", "TraceStore", "arrow_schema", "default_uri", "span_arrow_schema",
]
