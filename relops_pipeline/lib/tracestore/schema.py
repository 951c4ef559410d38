"""The store's Arrow schema, derived from the warehouse's SPAN_COLUMNS (lib/schema.py) so the two
cannot drift apart, plus the `day` partition column."""

from __future__ import annotations

import pyarrow as pa

from relops_pipeline.lib.schema import SPAN_COLUMNS

# A span's identity, as the loader deduplicates it (lib/ingest.py: ANTI JOIN on both).
SPAN_KEY = ("trace_id", "span_id")
# UTC day of start_time: one partition per day, so a day's computations read only that day.
PARTITION_COLUMN = "day"

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


def span_arrow_schema() -> pa.Schema:
    """SPAN_COLUMNS as Arrow fields, in order, then `day` (date32)."""
    fields = []
    for name, duck_type in SPAN_COLUMNS:
        if duck_type not in _ARROW_TYPES:
            raise ValueError(f"spans.{name}: no Arrow type for DuckDB type {duck_type}")
        fields.append(pa.field(name, _ARROW_TYPES[duck_type]))
    fields.append(pa.field(PARTITION_COLUMN, pa.date32()))
    return pa.schema(fields)


def json_columns() -> list[str]:
    """The spans columns that are JSON in the warehouse (stored as text here)."""
    return [name for name, duck_type in SPAN_COLUMNS if duck_type == "JSON"]
