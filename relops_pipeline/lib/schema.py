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
    # The messages with their roles, [{"role": ..., "content": plain text}, ...] (NULL when the
    # source sends no messages); input_text / output_text hold their plain text.
    ("input_messages", "JSON"),
    ("output_messages", "JSON"),
]
_MESSAGE_COLUMNS = ("input_messages", "output_messages")

# Columns of the warehouse `spans` table, in order.
SPAN_COLUMNS: list[tuple[str, str]] = [
    *[c for c in STAGE_COLUMNS if c[0] not in ("source_format", "source_line", *_MESSAGE_COLUMNS)],
    ("input_truncated", "BOOLEAN"),
    ("output_truncated", "BOOLEAN"),
    ("cost_source", "VARCHAR"),  # reported | computed | unknown
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

# Latest GenAI conventions with events only: one log record per call whose attributes hold its
# messages (gen_ai.input.messages, gen_ai.output.messages, gen_ai.system_instructions); the
# OTLP reader stages their decoded JSON as the event's content.
DETAILS_EVENT = "gen_ai.client.inference.operation.details"

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


# --- messages: one normalised shape for every source -------------------------------------------
# A message list as [{"role": ..., "content": plain text}] (LIST(STRUCT)); input_text / output_text
# are the contents joined by newlines (roles are not mixed into the text).
MESSAGE_TYPE = "STRUCT(role VARCHAR, content VARCHAR)[]"
_MESSAGES_SPEC = '[{"role":"VARCHAR","content":"JSON","parts":[{"type":"VARCHAR","content":"JSON"}]}]'
_PARTS_SPEC = '[{"type":"VARCHAR","content":"JSON"}]'


def _json_text_sql(j: str) -> str:
    """Plain text of a JSON value: a string unquoted (escapes decoded), else its JSON text."""
    return (
        f"(CASE WHEN {j} IS NULL OR json_type({j}) = 'NULL' THEN NULL "
        f"WHEN json_type({j}) = 'VARCHAR' THEN json_extract_string({j}, '$') ELSE CAST({j} AS VARCHAR) END)"
    )


def _parts_text_sql(parts: str) -> str:
    """The text parts' contents of a GenAI parts list, joined by newlines ('' when none)."""
    return (
        f"array_to_string(list_transform(list_filter({parts}, lambda p: p.type = 'text' AND p.content IS NOT NULL), "
        f"lambda p: {_json_text_sql('p.content')}), chr(10))"
    )


def messages_sql(raw: str) -> str:
    """SQL: the messages (MESSAGE_TYPE) of the JSON text `raw` holding a message list, GenAI
    `[{"role", "parts": [{"type": "text", "content"}]}]` or `[{"role", "content"}]`; NULL when
    `raw` is no such list. A message without a text part (tool calls only) has content NULL."""
    msgs = f"TRY(from_json({raw}, '{_MESSAGES_SPEC}'))"
    content = (
        f"CASE WHEN m.parts IS NOT NULL THEN (CASE WHEN len(list_filter(m.parts, lambda p: p.type = 'text')) > 0 "
        f"THEN {_parts_text_sql('m.parts')} END) "
        f"ELSE {_json_text_sql('m.content')} END"
    )
    return (
        f"(CASE WHEN starts_with(ltrim({raw}), '[') THEN "
        f"CAST(list_transform({msgs}, lambda m: {{'role': m.role, 'content': {content}}}) AS {MESSAGE_TYPE}) END)"
    )


def system_messages_sql(raw: str) -> str:
    """SQL: gen_ai.system_instructions (JSON text: a parts list, or a string) as a one-message
    list with role system; NULL when absent or without text."""
    parts = f"TRY(from_json({raw}, '{_PARTS_SPEC}'))"
    text = f"CASE WHEN starts_with(ltrim({raw}), '[') THEN nullif({_parts_text_sql(parts)}, '') ELSE nullif({raw}, '') END"
    return f"(CASE WHEN ({text}) IS NOT NULL THEN CAST([{{'role': 'system', 'content': {text}}}] AS {MESSAGE_TYPE}) END)"


def capped_messages_sql(col: str, cap: int) -> str:
    """SQL: a messages JSON column kept whole while its JSON is at most 2 x `cap` characters;
    longer, every message stays (role and order) with its content cut to an equal share of
    `cap` (at least 64 characters), so a huge prompt cannot make a span row unbounded. The
    caller flags the span truncated (messages_over_cap_sql)."""
    msgs = f"from_json({col}, '[{{\"role\":\"VARCHAR\",\"content\":\"VARCHAR\"}}]')"
    share = f"CAST(greatest({int(cap)} // greatest(json_array_length({col}), 1), 64) AS BIGINT)"
    return (
        f"(CASE WHEN {col} IS NULL OR {messages_over_cap_sql(col, cap)} IS NOT TRUE THEN {col} "
        f"ELSE CAST(to_json(list_transform({msgs}, lambda capped_msg: {{'role': capped_msg.role, "
        f"'content': left(capped_msg.content, {share})}})) AS JSON) END)"
    )


def messages_over_cap_sql(col: str, cap: int) -> str:
    """SQL: whether a messages JSON column is longer than capped_messages_sql keeps whole."""
    return f"(length(CAST({col} AS VARCHAR)) > {2 * int(cap)})"


def messages_text_sql(msgs: str) -> str:
    """SQL: the plain text of messages (MESSAGE_TYPE): their non-empty contents joined by
    newlines; NULL when no message has content (tool calls only: the caller keeps the JSON)."""
    return (
        f"(CASE WHEN len(list_filter({msgs}, lambda m: m.content IS NOT NULL)) > 0 THEN "
        f"array_to_string(list_transform(list_filter({msgs}, lambda m: m.content <> ''), lambda m: m.content), chr(10)) END)"
    )
