"""The normalised trace schema: one row per span, whatever format it came from.

Readers fill a staging table with STAGE_COLUMNS; the loader adds the batch-level columns
(capping text, computing cost, resolving `unknown`) and writes SPAN_COLUMNS to the warehouse.
"""

from __future__ import annotations

# (name, DuckDB type). Times are UTC, stored as naive TIMESTAMP.
STAGE_COLUMNS: list[tuple[str, str]] = [
    ("trace_id", "VARCHAR"),
    ("span_id", "VARCHAR"),
    ("parent_span_id", "VARCHAR"),
    ("span_name", "VARCHAR"),
    ("kind", "VARCHAR"),  # one of SPAN_KINDS
    ("workflow", "VARCHAR"),  # NULL -> 'unknown' in the loader
    ("release", "VARCHAR"),  # NULL -> 'unknown' in the loader
    ("model", "VARCHAR"),
    ("provider", "VARCHAR"),
    ("start_time", "TIMESTAMP"),
    ("end_time", "TIMESTAMP"),
    ("latency_ms", "DOUBLE"),  # NULL -> end - start in the loader
    ("input_tokens", "BIGINT"),
    ("output_tokens", "BIGINT"),
    ("cost_usd", "DOUBLE"),  # reported cost; NULL -> price table in the loader
    ("finish_reason", "VARCHAR"),  # first finish reason, lower case (stop, length, tool_calls, content_filter, ...)
    ("status", "VARCHAR"),  # ok | error | unset
    ("error_type", "VARCHAR"),
    ("input_text", "VARCHAR"),  # full text; the loader caps it
    ("output_text", "VARCHAR"),
    ("feedback_score", "DOUBLE"),  # user feedback in [0,1] when present (thumbs up = 1)
    ("online_scores", "JSON"),  # {"name": number} when present
    ("attributes", "JSON"),  # remaining attributes (resource + span), flat {"key": value}
    ("source_format", "VARCHAR"),
    ("source_line", "BIGINT"),  # 1-based line for line formats; record index for documents
]

# Columns of the warehouse `spans` table, in order.
SPAN_COLUMNS: list[tuple[str, str]] = [
    *[c for c in STAGE_COLUMNS if c[0] not in ("source_format", "source_line")],
    ("input_truncated", "BOOLEAN"),
    ("output_truncated", "BOOLEAN"),
    ("cost_source", "VARCHAR"),  # reported | computed | NULL (unknown)
    ("release_known", "BOOLEAN"),
    ("source_format", "VARCHAR"),
    ("source_file", "VARCHAR"),
    ("source_line", "BIGINT"),
    ("ingest_batch_id", "VARCHAR"),
    ("ingested_at", "TIMESTAMP"),
    # Added by migration 9 (an ALTER, so it comes last). What is wrong with a span that is kept
    # anyway: ANOMALY_END_BEFORE_START, ANOMALY_NEGATIVE_LATENCY; NULL when nothing is.
    ("anomalies", "VARCHAR[]"),
    # Added by migration 10: the messages with their roles, [{"role": ..., "content": text}, ...]
    # (NULL when the source sends no messages); input_text / output_text hold their plain text.
    ("input_messages", "JSON"),
    ("output_messages", "JSON"),
]

# SPAN_COLUMNS that later migrations added with ALTER TABLE (migration 1 must not create them).
SPAN_COLUMNS_ADDED = ("anomalies", "input_messages", "output_messages")

# A span that ends before it starts (clock skew between the hosts that stamped its start and
# end): kept, with latency_ms NULL, and listed by `relops rejects --anomalies`.
ANOMALY_END_BEFORE_START = "end_before_start"
# A span whose source reported a negative latency: kept, with latency_ms NULL.
ANOMALY_NEGATIVE_LATENCY = "negative_latency"


def span_anomalies_sql(start: str, end: str, latency: str) -> str:
    """SQL: the `anomalies` of a span (NULL when none) from the SQL expressions of its start and
    end time and of its latency (reported, else end - start)."""
    skewed = f"coalesce({end} < {start}, false)"
    found = (
        f"list_filter([CASE WHEN {skewed} THEN '{ANOMALY_END_BEFORE_START}' END, "
        f"CASE WHEN {latency} < 0 AND NOT {skewed} THEN '{ANOMALY_NEGATIVE_LATENCY}' END], lambda a: a IS NOT NULL)"
    )
    return f"(CASE WHEN {skewed} OR coalesce({latency} < 0, false) THEN {found} END)"


def span_latency_sql(start: str, end: str, latency: str) -> str:
    """SQL: the latency a span keeps: NULL for an anomalous one (see span_anomalies_sql)."""
    return f"(CASE WHEN coalesce({end} < {start}, false) OR coalesce({latency} < 0, false) THEN NULL ELSE {latency} END)"


REJECT_COLUMNS: list[tuple[str, str]] = [
    ("source_line", "BIGINT"),  # 1-based line or record index; NULL when the whole file is bad
    ("raw", "VARCHAR"),  # the raw text of the record (capped)
    ("reason", "VARCHAR"),
]

# agent covers agents and chains/workflows; embeddings and rerankers are llm calls.
# Legacy OTel GenAI conventions put prompts and completions in log records (events) linked to
# their span by trace and span id. Readers stage them here; the loader keeps them and fills
# the span's input/output text from them, whichever of span or events arrives first.
EVENT_COLUMNS: list[tuple[str, str]] = [
    ("trace_id", "VARCHAR"),
    ("span_id", "VARCHAR"),
    ("event_name", "VARCHAR"),  # gen_ai.user.message, gen_ai.system.message, gen_ai.choice, ...
    ("event_time", "TIMESTAMP"),
    ("role", "VARCHAR"),  # user | system | assistant | tool (choice -> assistant)
    ("content", "VARCHAR"),  # text content (JSON when structured)
    ("attributes", "JSON"),
    ("source_format", "VARCHAR"),
    ("source_line", "BIGINT"),
]

SPAN_KINDS = ("llm", "tool", "retrieval", "agent", "other")
UNKNOWN = "unknown"
RAW_REJECT_CAP = 16_384


def create_stage_tables_sql(prefix: str = "stage") -> str:
    """SQL creating the temp tables `<prefix>_spans`, `_rejects` and `_events` a reader fills."""
    spans = ", ".join(f'"{n}" {t}' for n, t in STAGE_COLUMNS)
    rejects = ", ".join(f'"{n}" {t}' for n, t in REJECT_COLUMNS)
    events = ", ".join(f'"{n}" {t}' for n, t in EVENT_COLUMNS)
    return (
        f"CREATE OR REPLACE TEMP TABLE {prefix}_spans ({spans});\n"
        f"CREATE OR REPLACE TEMP TABLE {prefix}_rejects ({rejects});\n"
        f"CREATE OR REPLACE TEMP TABLE {prefix}_events ({events});"
    )
