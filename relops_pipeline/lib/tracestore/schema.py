"""The store's tables: their Arrow schemas, derived from the warehouse's column lists
(lib/schema.py, lib/warehouse.py) so the two cannot drift apart, plus the `day` partition column;
each table's identity key, the time its day comes from, and which copy of a row reads keep."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import pyarrow as pa

from relops_pipeline.lib.schema import EVENT_COLUMNS, SPAN_COLUMNS

# A span's identity, as the loader deduplicates it (lib/ingest.py: ANTI JOIN on both).
SPAN_KEY = ("trace_id", "span_id")
# UTC day of start_time: one partition per day, so a day's computations read only that day.
PARTITION_COLUMN = "day"
# The partition of rows without a time: the Unix epoch, which is what OTLP's 0 ("unknown") means.
UNDATED_DAY = date(1970, 1, 1)

# JSON is stored as its text (Delta has no JSON type); the view casts it back.
_ARROW_TYPES: dict[str, pa.DataType] = {
    "VARCHAR": pa.string(),
    "JSON": pa.string(),
    "TIMESTAMP": pa.timestamp("us"),
    "DOUBLE": pa.float64(),
    "BIGINT": pa.int64(),
    "BOOLEAN": pa.bool_(),
    "VARCHAR[]": pa.list_(pa.string()),
}


@dataclass(frozen=True)
class TableSpec:
    """One table of the store: the warehouse table it mirrors (`name`, `columns` in order), the
    key that identifies a row (a row is counted once per key), the column whose UTC day is its
    partition, the columns a row must have (else it is refused), and the order that picks the
    copy reads keep when a key has several (first wins)."""

    name: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]
    time_column: str
    required: tuple[str, ...]
    keep_order: str

    def day_sql(self, prefix: str = "") -> str:
        """The SQL giving a row's day partition: the UTC day of its time column; a row without a
        time (only a GenAI event can lack one: an OTLP log record with neither timeUnixNano nor
        observedTimeUnixNano) goes to UNDATED_DAY, the day OTLP's "time unknown" (0) stands for."""
        return f"coalesce(CAST({prefix}{self.time_column} AS DATE), DATE '{UNDATED_DAY.isoformat()}')"


# A span's copies are kept most complete first: a copy completed by GenAI events or by a
# LangSmith run's end that arrived in a later ingestion (lib/ingest._complete_from_store,
# _complete_langsmith_from_store) wins over the copy it completes; among equally complete
# copies, the first ingested.
# How much of a span a copy lacks: the fields events or a run's end fill (`{s}`: the spans' alias).
SPAN_MISSING = ("({s}input_text IS NULL)::INT + ({s}output_text IS NULL)::INT + ({s}input_messages IS NULL)::INT"
                " + ({s}output_messages IS NULL)::INT + ({s}finish_reason IS NULL)::INT"
                " + ({s}end_time IS NULL)::INT + (coalesce({s}status, 'unset') = 'unset')::INT")
SPANS = TableSpec(
    "spans", tuple(SPAN_COLUMNS), SPAN_KEY, "start_time", (*SPAN_KEY, "start_time"),
    SPAN_MISSING.format(s="") + ", ingested_at NULLS LAST, ingest_batch_id NULLS LAST, source_file NULLS LAST, "
    "source_line NULLS LAST",
)
# genai_events as lib/warehouse.py creates it; event_key is the loader's hash of the event.
GENAI_EVENTS = TableSpec(
    "genai_events",
    (*EVENT_COLUMNS, ("event_key", "VARCHAR"), ("ingest_batch_id", "VARCHAR"), ("source_file", "VARCHAR")),
    ("event_key",), "event_time", ("event_key",),
    "ingest_batch_id NULLS LAST, source_file NULLS LAST, source_line NULLS LAST",
)
# trace_rejects as lib/warehouse.py creates it: a reject is one line of one batch.
TRACE_REJECTS = TableSpec(
    "trace_rejects",
    (("ingest_batch_id", "VARCHAR"), ("source_file", "VARCHAR"), ("source_format", "VARCHAR"),
     ("source_line", "BIGINT"), ("raw", "VARCHAR"), ("reason", "VARCHAR"), ("rejected_at", "TIMESTAMP")),
    ("ingest_batch_id", "source_file", "source_line", "reason"), "rejected_at",
    ("ingest_batch_id", "source_file", "reason", "rejected_at"), "rejected_at NULLS LAST",
)
TABLES = (SPANS, GENAI_EVENTS, TRACE_REJECTS)


def arrow_schema(spec: TableSpec) -> pa.Schema:
    """The table's columns as Arrow fields, in order, then `day` (date32)."""
    fields = []
    for name, duck_type in spec.columns:
        if duck_type not in _ARROW_TYPES:
            raise ValueError(f"{spec.name}.{name}: no Arrow type for DuckDB type {duck_type}")
        fields.append(pa.field(name, _ARROW_TYPES[duck_type]))
    fields.append(pa.field(PARTITION_COLUMN, pa.date32()))
    return pa.schema(fields)


def span_arrow_schema() -> pa.Schema:
    """SPAN_COLUMNS as Arrow fields, in order, then `day` (date32)."""
    fields = []
    for name, duck_type in SPAN_COLUMNS:
        if duck_type not in _ARROW_TYPES:
            raise ValueError(f"spans.{name}: no Arrow type for DuckDB type {duck_type}")
        fields.append(pa.field(name, _ARROW_TYPES[duck_type]))
    fields.append(pa.field(PARTITION_COLUMN, pa.date32()))
    return pa.schema(fields)


def json_columns(spec: TableSpec = SPANS) -> list[str]:
    """The table's columns that are JSON in the warehouse (stored as text here)."""
    return [name for name, duck_type in spec.columns if duck_type == "JSON"]
