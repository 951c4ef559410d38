"""The trace store: spans in a Delta Lake table (delta-rs), partitioned by day, under the home or
on object storage through the S3 API; several writers append at once; DuckDB queries it.

See store.py for the guarantees (idempotent per source, exactly once per span identity)."""

from relops_pipeline.lib.tracestore.schema import PARTITION_COLUMN, SPAN_KEY, span_arrow_schema
from relops_pipeline.lib.tracestore.store import AppendResult, MigrationResult, TraceStore, default_uri

__all__ = ["PARTITION_COLUMN", "SPAN_KEY", "AppendResult", "MigrationResult", "TraceStore", "default_uri", "span_arrow_schema"]
