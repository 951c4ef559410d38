"""OTLP/JSON traces and logs (OpenTelemetry collector file exporter, OTLP/HTTP JSON bodies).

Layouts
- JSON lines (collector file exporter): every line is one export request, `{"resourceSpans":
  [...]}` or `{"resourceLogs": [...]}`; a file may mix them, a line may hold many spans.
  source_line is the 1-based line number (blank lines count as lines but are not records);
  the spans of one line share it.
- One JSON document (an OTLP/HTTP request body, usually pretty-printed over many lines), or
  several concatenated. Chosen when the first non-blank line is not a JSON value by itself
  (and no later line in the first 64 KiB is a whole OTLP export, which would make the file
  JSON lines with a broken first line). Read with `read_json(format='unstructured',
  records=false)`, one row per document; source_line is then the 1-based index of the span
  (of the log record, for events) in document order across the file; a document-level reject
  carries the document's index. A file that is not valid JSON as a whole gives one reject with
  source_line NULL.

How lines are read. Everything per record runs in DuckDB SQL; Python only finds line ends.
- Lines come from a numpy newline index over 4 MiB chunks, handed to DuckDB as a stream of
  Arrow batches (line_no, raw bytes) whose values point into the chunk (no Python object per
  line). Lines are split on LF only; CR is JSON whitespace. `read_csv` (STACK_NOTES) was measured
  and not used: `WITH ORDINALITY` numbers lines correctly but makes the whole pipeline
  single-threaded (2x slower here); the CSV scanner also splits lines at a lone CR, and with
  DuckDB 2.0.1 lines longer than its buffer vanish from the scan without a reject.
- SQL decodes the bytes (invalid UTF-8 -> reject), parses each line once with
  `TRY(from_json(line, <explicit OTLP structure>))` (json_valid is consulted only for lines that
  did not parse, to tell invalid JSON from non-OTLP JSON), unnests resourceSpans ->
  scopeSpans -> spans, and one INSERT writes stage_spans. Rows that are not spans (rejects, log
  exports, blank lines) travel through the same INSERT as marker rows (private source_format
  values) and are moved afterwards: rejects to stage_rejects; log exports go through a second
  SQL pass that stages their log records in stage_events. Attribute lists are turned into a
  few primitive lists with lambdas (keys, texts, JSON pairs); per resource, not per span.

Mapping
- Fields come from FIELD_KEYS (attributes.py): per field, the first key with a non-empty value,
  looked up in the span's attributes and then its resource's; then the JSON_MEMBER_KEYS members
  (Langfuse's `langfuse.observation.usage_details` / `cost_details` JSON). Message lists
  (gen_ai.input/output.messages, legacy gen_ai.prompt/completion, OpenInference
  llm.*_messages.N.*, Langfuse's langfuse.observation.input/output) become input_messages /
  output_messages and their plain text input_text / output_text. kind comes from the operation
  attribute through KIND_BY_OPERATION (the OTLP span kind is not the GenAI kind). status:
  status.code 2 -> error, 1 -> ok, else unset (proto enum names accepted). error_type:
  error.type / exception.type (a Python class repr "<class 'openai.NotFoundError'>", as
  opentelemetry-util-genai 1.x writes it, becomes "openai.NotFoundError"), then an `exception` span event's type, then (on error) the
  status message. input_text: the attribute as given (JSON text for message lists).
  output_text: the text parts of gen_ai.output.messages joined by newlines; with no text part
  (tool calls only) or for other keys, the attribute as given. latency_ms stays NULL.
- workflow / release: ctx.settings.workflow_keys / release_keys in order, like
  base.resolve_workflow: empty values are skipped, a `service.name` starting with
  "unknown_service" is no workflow, default_workflow last.
- attributes: the span's attributes merged over its resource's (span wins), minus the keys that
  fill a column (every FIELD_KEYS key except the operation keys) and online-score keys, plus
  `otel.scope.name`, `otel.scope.version`, `otel.span.kind`, `otel.status_description`.
  AnyValues become plain JSON: intValue strings become numbers; arrays/kvlists are decoded one
  level deep (OTel span attributes are scalars or arrays of scalars), deeper values stay as
  their OTLP JSON. online_scores: {"name": number} from attributes under ONLINE_SCORE_PREFIXES.
- Log records (legacy GenAI events and any other log record) become stage_events rows:
  event_name from eventName (or the event.name attribute), event_time from timeUnixNano (else
  observedTimeUnixNano), role from the event name (gen_ai.choice -> assistant) or the body's
  role, content = the body's content (gen_ai.choice: message.content) as text, else (absent or
  JSON null, as in a choice holding only tool calls) the whole body as JSON (bodies are decoded
  at any depth, set-based); attributes = log attributes over resource attributes, plus
  `otel.scope.name`, `log.severity_text`, `log.severity_number` and `log.body` (the decoded
  body) when the body is structured.
- Rejects (reason, 1-based line, raw text capped at RAW_REJECT_CAP): invalid UTF-8, lines longer
  than MAX_LINE_BYTES, invalid JSON, JSON that is not an OTLP export, exports with neither
  spans nor log records, spans without traceId/spanId (raw = that span), present but
  unparseable timestamps (spans and log records). Ids are lower-case hex; base64 ids (24 chars
  ending "==", 12 ending "=") are converted.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from relops_pipeline.lib.readers.attributes import (
    CLASS_REPR_SQL,
    FIELD_KEYS,
    GENAI_INPUT,
    GENAI_OUTPUT,
    JSON_MEMBER_KEYS,
    KIND_BY_OPERATION,
    LANGFUSE_INPUT,
    LANGFUSE_OUTPUT,
    ONLINE_SCORE_PREFIXES,
)
from relops_pipeline.lib.readers.base import PLACEHOLDER_SERVICE_PREFIX, ReadContext, SourceSettings, UnreadableInput
from relops_pipeline.lib.schema import (
    DETAILS_EVENT,
    EVENT_COLUMNS,
    MESSAGE_TYPE,
    RAW_REJECT_CAP,
    create_stage_tables_sql,
    messages_sql,
    messages_text_sql,
    system_messages_sql,
)

FORMAT = "otlp"

MAX_LINE_BYTES = 64 * 1024 * 1024  # longer lines are rejects
# Bytes read per Arrow batch of lines. DuckDB hands whole batches to its threads, so a file of
# one batch is parsed by one core: 4 MiB lets a file of 8 MiB and more use both cores.
CHUNK_BYTES = 4 * 1024 * 1024

_MARK_REJECT = "\x01otlp:reject"
_MARK_LOGS = "\x01otlp:logs"
_MARK_BLANK = "\x01otlp:blank"

# --- OTLP JSON structures for from_json ---------------------------------------------------
# arrayValue / kvlistValue stay JSON text here; they are decoded one level deep for span and
# log attributes (OTel attribute values are scalars or arrays of scalars) and fully for bodies.
_AV = {
    "stringValue": "VARCHAR",
    "intValue": "VARCHAR",  # int64 is a JSON string in OTLP (numbers are accepted too)
    "doubleValue": "DOUBLE",
    "boolValue": "BOOLEAN",
    "bytesValue": "VARCHAR",
    "arrayValue": "JSON",
    "kvlistValue": "JSON",
}
_KV = [{"key": "VARCHAR", "value": _AV}]
_SCOPE = {"name": "VARCHAR", "version": "VARCHAR"}
_SPAN = {
    "traceId": "VARCHAR",
    "spanId": "VARCHAR",
    "parentSpanId": "VARCHAR",
    "name": "VARCHAR",
    "kind": "VARCHAR",
    "startTimeUnixNano": "VARCHAR",
    "endTimeUnixNano": "VARCHAR",
    "attributes": _KV,
    "status": {"code": "VARCHAR", "message": "VARCHAR"},
    "events": [{"name": "VARCHAR", "attributes": _KV}],
}
_SPAN_DOC = {
    "resourceSpans": [{"resource": {"attributes": _KV}, "scopeSpans": [{"scope": _SCOPE, "spans": [_SPAN]}]}],
    "resourceLogs": "JSON",
}
_LOG = {
    "timeUnixNano": "VARCHAR",
    "observedTimeUnixNano": "VARCHAR",
    "severityNumber": "VARCHAR",
    "severityText": "VARCHAR",
    "eventName": "VARCHAR",
    "body": "JSON",
    "attributes": _KV,
    "traceId": "VARCHAR",
    "spanId": "VARCHAR",
}
_LOG_DOC = {
    "resourceLogs": [{"resource": {"attributes": _KV}, "scopeLogs": [{"scope": _SCOPE, "logRecords": [_LOG]}]}],
}
_ARRAY_SPEC = {"values": [_AV]}
_KVLIST_SPEC = {"values": [{"key": "VARCHAR", "value": _AV}]}
_CHILDREN_SPEC = {"kvlistValue": {"values": [{"key": "VARCHAR", "value": "JSON"}]}, "arrayValue": {"values": ["JSON"]}}

_EVENT_ROLES = {
    "gen_ai.user.message": "user",
    "gen_ai.system.message": "system",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
    "gen_ai.choice": "assistant",
}
# Latest GenAI conventions, events only: the attributes of a DETAILS_EVENT record holding its messages.
DETAILS_MESSAGE_KEYS = ("gen_ai.system_instructions", "gen_ai.input.messages", "gen_ai.output.messages")
_SPAN_KIND_NAMES = {"1": "internal", "2": "server", "3": "client", "4": "producer", "5": "consumer"}

# Keys whose value fills a column; they are left out of the `attributes` JSON. The operation
# keys stay (kind is coarser than e.g. chat vs embeddings).
_COLUMN_FIELDS = tuple(f for f in FIELD_KEYS if f != "operation")


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _spec(obj) -> str:
    return _lit(json.dumps(obj, separators=(",", ":")))


# --- SQL expression builders ----------------------------------------------------------------
def _norm_id(x: str) -> str:
    """Lower-case hex id; base64 ids (16/8 bytes) converted; '' -> NULL."""
    return (
        f"(CASE WHEN {x} IS NULL OR {x} = '' THEN NULL "
        f"WHEN (length({x}) = 24 AND ends_with({x}, '==')) OR (length({x}) = 12 AND ends_with({x}, '=')) "
        f"THEN coalesce(lower(hex(TRY(from_base64({x})))), lower({x})) ELSE lower({x}) END)"
    )


def _ns(x: str) -> str:
    """Nanoseconds since the epoch from a *UnixNano string/number; NULL when absent or 0."""
    return (
        f"(CASE WHEN {x} IS NULL OR {x} IN ('', '0') THEN NULL "
        f"ELSE coalesce(TRY_CAST({x} AS BIGINT), TRY_CAST(TRY_CAST({x} AS DOUBLE) AS BIGINT)) END)"
    )


def _bad_ts(x: str, ns: str) -> str:
    return f"({x} IS NOT NULL AND {x} NOT IN ('', '0') AND ({ns} IS NULL OR {ns} < 0))"


def _ts(ns: str) -> str:
    return f"make_timestamp({ns} // 1000)"


def _av_text(v: str) -> str:
    """Scalar text of a typed AnyValue struct (NULL for arrays/kvlists/empty)."""
    return (
        f"coalesce({v}.stringValue, {v}.intValue, CAST({v}.doubleValue AS VARCHAR), "
        f"CAST({v}.boolValue AS VARCHAR), {v}.bytesValue)"
    )


def _scalar_json(v: str) -> str:
    """JSON text of a typed AnyValue struct; a nested container stays raw OTLP JSON."""
    return (
        f"CAST(CASE WHEN {v}.stringValue IS NOT NULL THEN to_json({v}.stringValue) "
        f"WHEN {v}.intValue IS NOT NULL THEN coalesce(CAST(TRY_CAST({v}.intValue AS HUGEINT) AS VARCHAR), to_json({v}.intValue)) "
        f"WHEN {v}.doubleValue IS NOT NULL THEN (CASE WHEN isfinite({v}.doubleValue) THEN to_json({v}.doubleValue) "
        f"ELSE to_json(CAST({v}.doubleValue AS VARCHAR)) END) "
        f"WHEN {v}.boolValue IS NOT NULL THEN CAST({v}.boolValue AS VARCHAR) "
        f"WHEN {v}.arrayValue IS NOT NULL THEN '{{\"arrayValue\":' || {v}.arrayValue || '}}' "
        f"WHEN {v}.kvlistValue IS NOT NULL THEN '{{\"kvlistValue\":' || {v}.kvlistValue || '}}' "
        f"WHEN {v}.bytesValue IS NOT NULL THEN to_json({v}.bytesValue) ELSE 'null' END AS VARCHAR)"
    )


def _typed_av_json(v: str) -> str:
    """Plain JSON text of a typed AnyValue struct, arrays/kvlists decoded one level deep."""
    arr = (
        f"coalesce(array_to_string(list_transform(from_json({v}.arrayValue, {_spec(_ARRAY_SPEC)}).values, "
        f"lambda ae: {_scalar_json('ae')}), ','), '')"
    )
    kvl = (
        f"coalesce(array_to_string(list_transform(from_json({v}.kvlistValue, {_spec(_KVLIST_SPEC)}).values, "
        f"lambda ke: CAST(to_json(coalesce(ke.key, '')) AS VARCHAR) || ':' || {_scalar_json('ke.value')}), ','), '')"
    )
    return (
        f"(CASE WHEN {v}.arrayValue IS NOT NULL THEN '[' || {arr} || ']' "
        f"WHEN {v}.kvlistValue IS NOT NULL THEN '{{' || {kvl} || '}}' ELSE {_scalar_json(v)} END)"
    )


def _kind_case(op: str) -> str:
    whens = " ".join(f"WHEN {_lit(k)} THEN {_lit(v)}" for k, v in KIND_BY_OPERATION.items())
    return f"(CASE lower(trim({op})) {whens} ELSE 'other' END)"


def _score_filter(var: str = "a", field: str = "k") -> str:
    return "(" + " OR ".join(f"starts_with({var}.{field}, {_lit(p)})" for p in ONLINE_SCORE_PREFIXES) + ")"


def _resolve(keys: tuple[str, ...], default: str | None) -> str:
    """First non-empty value among `keys` (mirrors base.resolve_workflow / resolve_release): a
    `service.name` starting with PLACEHOLDER_SERVICE_PREFIX names no workflow."""
    terms = []
    for key in keys:
        if key == "service.name":
            terms.append(
                f"CASE WHEN starts_with(service_name, {_lit(PLACEHOLDER_SERVICE_PREFIX)}) THEN NULL ELSE service_name END"
            )
        else:
            terms.append(_get(key))
    if default is not None:
        terms.append(_lit(default))
    return "coalesce(" + ", ".join(terms) + ")" if terms else "NULL::VARCHAR"


def _indexed_messages(prefix: str, middle: str = ".message.") -> str:
    """Flattened messages as MESSAGE_TYPE: OpenInference `<prefix>N.message.role`,
    `...message.content`, else the `...message.contents.M.message_content.text` parts joined by
    newlines; OpenLLMetry (releases up to 0.54) `gen_ai.prompt.N.role` / `.content` (middle ".").
    NULL when the span has none (the lambdas run only for spans that have such keys)."""
    p = _lit(prefix)
    n = (
        f"list_max(list_transform(list_filter(sk, lambda k: starts_with(k, {p})), "
        f"lambda k: TRY_CAST(split_part(substr(k, {len(prefix) + 1}), '.', 1) AS INTEGER)))"
    )
    base = f"{p} || oi || {_lit(middle)}"
    parts = (
        f"nullif(array_to_string(list_transform(list_filter(range(1, len(sk) + 1), lambda j: starts_with(sk[j], {base} || 'contents.') "
        f"AND ends_with(sk[j], '.message_content.text')), lambda j: st[j]), chr(10)), '')"
    )
    msgs = (
        f"list_transform(range(0, coalesce({n}, -1) + 1), lambda oi: {{'role': st[list_position(sk, {base} || 'role')], "
        f"'content': coalesce(st[list_position(sk, {base} || 'content')], {parts})}})"
    )
    return f"(CASE WHEN contains(keys_text, {p}) THEN CAST({msgs} AS {MESSAGE_TYPE}) END)"


def _indexed_tool_calls(prefix: str) -> str:
    """OpenLLMetry's `<prefix>N.tool_calls.M.name` / `.arguments` as a JSON list of {name,
    arguments} (the output's text when the messages hold none); NULL without such keys."""
    p = _lit(prefix)
    calls = (
        f"list_transform(list_filter(range(1, len(sk) + 1), lambda j: starts_with(sk[j], {p}) AND contains(sk[j], '.tool_calls.') "
        f"AND ends_with(sk[j], '.name')), lambda j: {{'name': st[j], 'arguments': st[list_position(sk, left(sk[j], -5) || '.arguments')]}})"
    )
    return f"(CASE WHEN contains(keys_text, {p}) AND contains(keys_text, '.tool_calls.') THEN CAST(to_json({calls}) AS VARCHAR) END)"


def _unescaped(text: str) -> str:
    """A text kept as JSON (a request, tool arguments) with its \\uXXXX escapes decoded (real
    Unicode, so that a search finds it); other text as it is."""
    return (
        f"(CASE WHEN contains({text}, '\\u') AND (starts_with(ltrim({text}), '[') OR starts_with(ltrim({text}), '{{')) "
        f"THEN coalesce(CAST(TRY(json({text})) AS VARCHAR), {text}) ELSE {text} END)"
    )


def _finish_reason(fr: str) -> str:
    """First finish reason, lower case, from the column `fr` (array attribute, JSON array string,
    JSON string as Langfuse's metadata holds it, or plain string)."""
    return (
        f"nullif(lower(CASE "
        f"WHEN starts_with({fr}, {_CONTAINER}) THEN "
        f"coalesce(TRY(json_extract_string(substr({fr}, 2), '$.arrayValue.values[0].stringValue')), "
        f"TRY(json_extract_string(substr({fr}, 2), '$.arrayValue.values[0].intValue'))) "
        f"WHEN starts_with(ltrim({fr}), '[') AND json_valid({fr}) THEN json_extract_string({fr}, '$[0]') "
        f"WHEN starts_with({fr}, '\"') AND json_valid({fr}) THEN json_extract_string({fr}, '$') "
        f"ELSE {fr} END), '')"
    )


def _record_index(pos: str) -> str:
    """Document mode: 1-based index of the record in document order (NULL-`it` rows keep the doc index)."""
    return (
        f"CASE WHEN it IS NULL THEN line_no ELSE "
        f"count(it) OVER (ORDER BY line_no, {pos} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) END"
    )


_CONTAINER = "chr(2)"  # marks an array/kvlist value (its AnyValue JSON follows) in texts and pairs


def _value_expr(a: str) -> str:
    """Text of attribute `a` for lookups: scalars as text (NULL when empty); an array/kvlist as
    chr(2) || its AnyValue JSON (decoded only when a field actually uses it)."""
    return (
        f"CASE WHEN {a}.value.arrayValue IS NOT NULL THEN {_CONTAINER} || '{{\"arrayValue\":' || {a}.value.arrayValue || '}}' "
        f"WHEN {a}.value.kvlistValue IS NOT NULL THEN {_CONTAINER} || '{{\"kvlistValue\":' || {a}.value.kvlistValue || '}}' "
        f"ELSE nullif({_av_text(f'{a}.value')}, '') END"
    )


def _pair_expr(a: str, excluded_list: str) -> str:
    """'"key":value' JSON pair of attribute `a`; NULL for keys that fill a column or are online
    scores. Arrays/kvlists come out as '"key":' || chr(2) || AnyValue JSON and are decoded by
    _fix_pairs, so that this lambda holds no nested lambda (those make it much slower)."""
    value = (
        f"CASE WHEN {a}.value.arrayValue IS NOT NULL THEN {_CONTAINER} || '{{\"arrayValue\":' || {a}.value.arrayValue || '}}' "
        f"WHEN {a}.value.kvlistValue IS NOT NULL THEN {_CONTAINER} || '{{\"kvlistValue\":' || {a}.value.kvlistValue || '}}' "
        f"ELSE {_scalar_json(f'{a}.value')} END"
    )
    return (
        f"CASE WHEN list_contains({excluded_list}, {a}.key) OR {_score_filter(a, 'key')} THEN NULL "
        f"ELSE CAST(to_json({a}.key) AS VARCHAR) || ':' || {value} END"
    )


def _fix_pairs(pairs: str, joined: str) -> str:
    """The joined pairs; when some hold an array/kvlist (rare), re-join with those decoded."""
    fixed = (
        f"list_transform({pairs}, lambda fp: CASE WHEN contains(fp, {_CONTAINER}) THEN split_part(fp, {_CONTAINER}, 1) || "
        f"coalesce(list_transform([TRY(from_json(split_part(fp, {_CONTAINER}, 2), {_spec(_AV)}))], lambda cv: {_typed_av_json('cv')})[1], "
        f"to_json(split_part(fp, {_CONTAINER}, 2))) ELSE fp END)"
    )
    return f"(CASE WHEN contains({joined}, {_CONTAINER}) THEN array_to_string({fixed}, ',') ELSE {joined} END)"


def _online_scores_from_lists() -> str:
    """{"name": number} for online-score attributes (name as in map_attributes), NULL when none
    (the lambdas only run for spans whose span or resource keys mention a score prefix)."""
    num = "TRY_CAST(list_concat(st, rt)[i] AS DOUBLE)"
    cond = " OR ".join(f"starts_with(k, {_lit(p)})" for p in ONLINE_SCORE_PREFIXES)
    pairs = (
        f"list_filter(list_transform(list_concat(sk, rk), lambda k, i: CASE WHEN ({cond}) AND isfinite({num}) THEN "
        f"CAST(to_json(array_to_string(string_split(k, '.')[3:], '.')) AS VARCHAR) || ':' || CAST(to_json({num}) AS VARCHAR) END), "
        f"lambda x: x IS NOT NULL)"
    )
    guard = " OR ".join(f"contains(keys_text, {_lit(p)})" for p in ONLINE_SCORE_PREFIXES)
    return f"CASE WHEN {guard} THEN nullif('{{' || array_to_string({pairs}, ',') || '}}', '{{}}') END"


def _value_text(v: str) -> str:
    """A looked-up attribute as text: array/kvlist values decoded to JSON."""
    return (
        f"(CASE WHEN starts_with({v}, {_CONTAINER}) THEN "
        f"coalesce(list_transform([TRY(from_json(substr({v}, 2), {_spec(_AV)}))], lambda cv: {_typed_av_json('cv')})[1], substr({v}, 2)) "
        f"ELSE {v} END)"
    )


def _get(key: str) -> str:
    """The span's value for `key`, else its resource's (an empty span value does not hide it)."""
    return f"coalesce(st[list_position(sk, {_lit(key)})], rt[list_position(rk, {_lit(key)})])"


def _lookup(field: str) -> str:
    """The field's value: its FIELD_KEYS in order, then the JSON_MEMBER_KEYS members."""
    terms = [_get(k) for k in FIELD_KEYS[field]]
    for key, members in JSON_MEMBER_KEYS.get(field, ()):
        terms += [f"nullif(TRY(json_extract_string({_get(key)}, {_lit('$.' + m)})), '')" for m in members]
    return "coalesce(" + ", ".join(terms) + ")"


def _in_list(col: str, keys) -> str:
    return f"{col} IN (" + ", ".join(_lit(k) for k in keys) + ")"


def _first_key(keys) -> str:
    whens = " ".join(f"WHEN {_get(k)} IS NOT NULL THEN {_lit(k)}" for k in keys)
    return f"(CASE {whens} END)"


def _span_insert_sql(lines_sql: str, settings: SourceSettings, doc_mode: bool) -> str:
    """One INSERT: every line becomes staged spans or marker rows (rejects, logs, blank).
    `lines_sql` yields (line_no BIGINT, raw BLOB)."""
    max_bytes = 2**62 if doc_mode else MAX_LINE_BYTES
    v = {f: _lookup(f) for f in FIELD_KEYS}
    excluded = sorted({k for f in _COLUMN_FIELDS for k in FIELD_KEYS[f]})
    excluded_list = "[" + ", ".join(_lit(k) for k in excluded) + "]"
    kind_name = "CASE " + " ".join(f"WHEN sk_code = {_lit(c)} THEN {_lit(json.dumps(n))}" for c, n in _SPAN_KIND_NAMES.items())
    kind_name += " WHEN sk_code IS NULL OR sk_code IN ('0', 'SPAN_KIND_UNSPECIFIED') THEN NULL"
    kind_name += " ELSE CAST(to_json(lower(replace(sk_code, 'SPAN_KIND_', ''))) AS VARCHAR) END"
    scope_json = (
        "concat_ws(',', CASE WHEN ss.scope.name <> '' THEN '\"otel.scope.name\":' || CAST(to_json(ss.scope.name) AS VARCHAR) END, "
        "CASE WHEN ss.scope.version <> '' THEN '\"otel.scope.version\":' || CAST(to_json(ss.scope.version) AS VARCHAR) END)"
    )
    extras = [
        ("otel.span.kind", kind_name),
        ("otel.status_description", "CASE WHEN sp.status.message <> '' THEN CAST(to_json(sp.status.message) AS VARCHAR) END"),
    ]
    # Resource pairs whose key the span also has are dropped (span wins); that needs a lambda,
    # so only when the key sets overlap.
    res_pairs = (
        "CASE WHEN list_has_any(sk, rk) THEN list_filter(rp, lambda x, i: NOT list_contains(sk, rk[i])) ELSE rp END"
    )
    attributes = (
        f"'{{' || concat_ws(',', nullif({_fix_pairs('spp', 'spj')}, ''), nullif({_fix_pairs('rpe', 'rpj')}, ''), "
        + ", ".join(f"{_lit(json.dumps(key) + ':')} || {expr}" for key, expr in extras)
        + ", nullif(scope_json, '')) || '}'"
    )
    exception_type = (
        "CASE WHEN len(sp.events) > 0 THEN flatten(list_transform(list_filter(sp.events, lambda ev: ev.name = 'exception'), "
        "lambda ev: list_filter(ev.attributes, lambda x: x.key = 'exception.type' AND x.value.stringValue <> '')))[1].value.stringValue END"
    )
    is_error = "sp.status.code IN ('2', 'STATUS_CODE_ERROR')"
    reason = f"""CASE
        WHEN d_state = 'blank' THEN NULL
        WHEN line_row THEN CASE d_state
            WHEN 'invalid' THEN 'invalid JSON'
            WHEN 'too_long' THEN 'line longer than {MAX_LINE_BYTES} bytes'
            WHEN 'bad_utf8' THEN 'invalid UTF-8'
            WHEN 'not_otlp' THEN 'not an OTLP export: no resourceSpans/resourceLogs'
            ELSE CASE WHEN has_logs THEN NULL ELSE 'OTLP export without spans or log records' END END
        WHEN trace_id IS NULL THEN 'span without traceId'
        WHEN span_id IS NULL THEN 'span without spanId'
        WHEN {_bad_ts('sp.startTimeUnixNano', 'start_ns')}
            THEN 'unparseable timestamp: startTimeUnixNano=' || left(sp.startTimeUnixNano, 100)
        WHEN {_bad_ts('sp.endTimeUnixNano', 'end_ns')}
            THEN 'unparseable timestamp: endTimeUnixNano=' || left(sp.endTimeUnixNano, 100)
    END"""
    span_path = "'$.resourceSpans[' || (ri - 1) || '].scopeSpans[' || (si - 1) || '].spans[' || (pi - 1) || ']'"
    if doc_mode:
        source_line = (
            "CASE WHEN line_row THEN line_no ELSE count(sp) OVER (ORDER BY line_no, ri, si, pi "
            "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) END"
        )
    else:
        source_line = "line_no"
    # Lines without spans are rare: count spans with lambdas only when the first scope is empty.
    n_spans = (
        "CASE WHEN len(d.resourceSpans[1].scopeSpans[1].spans) > 0 THEN 1 ELSE "
        "list_sum(list_transform(d.resourceSpans, lambda rs: list_sum(list_transform(rs.scopeSpans, lambda ss: len(ss.spans))))) END"
    )
    # Langfuse: the input is a message list or {"messages": [...], "tools": [...]}; the output one
    # message object (or plain text, which stays output_text as it is)
    langfuse_in = (
        "(CASE WHEN starts_with(ltrim(in_raw), '{') THEN CAST(TRY(json_extract(in_raw, '$.messages')) AS VARCHAR) "
        "ELSE in_raw END)"
    )
    langfuse_out = (
        "(CASE WHEN starts_with(ltrim(out_raw), '{') AND coalesce(TRY(json_exists(out_raw, '$.role')), false) "
        "THEN '[' || out_raw || ']' ELSE out_raw END)"
    )
    span_attrs = "coalesce(sp.attributes, [])"
    res_attrs = "coalesce(rs.resource.attributes, [])"
    return f"""
INSERT INTO stage_spans BY NAME
WITH decoded AS (
    SELECT line_no, raw, CASE WHEN octet_length(raw) <= {max_bytes} THEN TRY(decode(raw)) END AS line
    FROM ({lines_sql})
), src AS (
    SELECT line_no, raw, line, TRY(from_json(line, {_spec(_SPAN_DOC)})) AS d FROM decoded
), classified AS (
    SELECT line_no, raw, line, d, has_logs, d_state, coalesce(n_spans, 0) > 0 AS has_spans,
        d_state <> 'otlp' OR has_logs OR coalesce(n_spans, 0) = 0 AS needs_line_row
    FROM (
        SELECT line_no, raw, line, d, d.resourceLogs IS NOT NULL AS has_logs, {n_spans} AS n_spans,
            CASE WHEN line IS NULL THEN (CASE WHEN octet_length(raw) > {max_bytes} THEN 'too_long' ELSE 'bad_utf8' END)
                 WHEN d IS NULL THEN (CASE WHEN regexp_full_match(line, '\\s*') THEN 'blank'
                                           WHEN json_valid(line) THEN 'not_otlp' ELSE 'invalid' END)
                 WHEN d.resourceSpans IS NULL AND d.resourceLogs IS NULL THEN 'not_otlp'
                 ELSE 'otlp' END AS d_state
        FROM src)
), level1 AS (
    SELECT line_no, raw, line, has_logs, d_state, has_spans, needs_line_row, len(l1) AS n1,
        UNNEST(l1) AS rs, UNNEST(range(1, len(l1) + 1)) AS ri
    FROM (SELECT *, CASE WHEN needs_line_row THEN list_concat(coalesce(d.resourceSpans, []), [NULL])
                         ELSE d.resourceSpans END AS l1
          FROM classified)
), resources AS (
    -- Per resource, not per span: its keys, texts and JSON pairs.
    SELECT *, needs_line_row AND ri = n1 AS line_row,
        list_transform({res_attrs}, lambda a: a.key) AS rk,
        list_transform({res_attrs}, lambda a: {_value_expr('a')}) AS rt,
        list_transform({res_attrs}, lambda a: {_pair_expr('a', excluded_list)}) AS rp
    FROM level1
), level2 AS (
    SELECT line_no, raw, line, has_logs, d_state, has_spans, line_row, ri, rk, rt, rp, array_to_string(rk, ' ') AS rkj,
        UNNEST(l2) AS ss, UNNEST(range(1, len(l2) + 1)) AS si
    FROM (SELECT *, CASE WHEN line_row THEN [NULL] ELSE rs.scopeSpans END AS l2 FROM resources)
), level3 AS (
    SELECT line_no, raw, line, has_logs, d_state, has_spans, line_row, ri, si, rk, rt, rp, rkj, {scope_json} AS scope_json,
        UNNEST(l3) AS sp, UNNEST(range(1, len(l3) + 1)) AS pi
    FROM (SELECT *, CASE WHEN line_row THEN [NULL] ELSE ss.spans END AS l3 FROM level2)
), listed AS (
    SELECT *,
        list_transform({span_attrs}, lambda a: a.key) AS sk,
        list_transform({span_attrs}, lambda a: {_value_expr('a')}) AS st,
        list_transform({span_attrs}, lambda a: {_pair_expr('a', excluded_list)}) AS spp,
        {_norm_id('sp.traceId')} AS trace_id, {_norm_id('sp.spanId')} AS span_id,
        {_ns('sp.startTimeUnixNano')} AS start_ns, {_ns('sp.endTimeUnixNano')} AS end_ns,
        CAST(sp.kind AS VARCHAR) AS sk_code
    FROM level3
    WHERE sp IS NOT NULL OR line_row
), fields AS (
    SELECT *, {reason} AS reject_reason,
        {", ".join(f"{v[f]} AS f_{f}" for f in FIELD_KEYS)},
        {_first_key(FIELD_KEYS['output_text'])} AS out_key,
        {_first_key(FIELD_KEYS['input_text'])} AS in_key,
        {_get('gen_ai.system_instructions')} AS f_system,
        {_get('service.name')} AS service_name,
        array_to_string(sk, ' ') || ' ' || rkj AS keys_text,
        array_to_string(spp, ',') AS spj,
        {res_pairs} AS rpe
    FROM listed
), texts AS (
    SELECT *, {_value_text('f_input_text')} AS in_raw, {_value_text('f_output_text')} AS out_raw,
        array_to_string(rpe, ',') AS rpj
    FROM fields
), typed AS (
    -- GenAI message lists (gen_ai.input.messages / output.messages, legacy gen_ai.prompt /
    -- completion) as messages; their text is input_text / output_text
    SELECT *,
        CASE WHEN {_in_list('in_key', GENAI_INPUT)} THEN
            nullif(list_concat(coalesce({system_messages_sql(_value_text('f_system'))}, []),
                               coalesce({messages_sql('in_raw')}, [])), [])
             WHEN in_key = {_lit(LANGFUSE_INPUT)} THEN {messages_sql(langfuse_in)}
             ELSE coalesce(nullif({_indexed_messages('llm.input_messages.')}, []),
                           nullif({_indexed_messages('gen_ai.prompt.', '.')}, [])) END AS in_msgs,
        CASE WHEN {_in_list('out_key', GENAI_OUTPUT)} THEN {messages_sql('out_raw')}
             WHEN out_key = {_lit(LANGFUSE_OUTPUT)} THEN {messages_sql(langfuse_out)}
             ELSE coalesce(nullif({_indexed_messages('llm.output_messages.')}, []),
                           nullif({_indexed_messages('gen_ai.completion.', '.')}, [])) END AS out_msgs
    FROM texts
)
SELECT
    trace_id,
    span_id,
    {_norm_id("nullif(sp.parentSpanId, '')")} AS parent_span_id,
    sp.name AS span_name,
    CASE WHEN line_row THEN (CASE WHEN has_spans THEN 'has_spans' END)
         ELSE {_kind_case('f_operation')} END AS kind,
    {_resolve(settings.workflow_keys, settings.default_workflow)} AS workflow,
    {_resolve(settings.release_keys, None)} AS release,
    coalesce({_value_text('f_model')},
             nullif(TRY(json_extract_string({_get('llm.invocation_parameters')}, '$.model')), '')) AS model,
    {_value_text('f_provider')} AS provider,
    {_ts('start_ns')} AS start_time,
    {_ts('end_ns')} AS end_time,
    NULL::DOUBLE AS latency_ms,
    TRY_CAST(trunc(TRY_CAST(f_input_tokens AS DOUBLE)) AS BIGINT) AS input_tokens,
    TRY_CAST(trunc(TRY_CAST(f_output_tokens AS DOUBLE)) AS BIGINT) AS output_tokens,
    TRY_CAST(f_cost_usd AS DOUBLE) AS cost_usd,
    coalesce({_finish_reason('f_finish_reason')},
             CASE WHEN out_key = 'gen_ai.output.messages'
                  THEN nullif(lower(TRY(json_extract_string(out_raw, '$[0].finish_reason'))), '') END)
        AS finish_reason,
    CASE WHEN reject_reason IS NOT NULL THEN reject_reason
         WHEN {is_error} THEN 'error'
         WHEN sp.status.code IN ('1', 'STATUS_CODE_OK') THEN 'ok' ELSE 'unset' END AS status,
    coalesce(regexp_replace({_value_text('f_error_type')}, {_lit(CLASS_REPR_SQL)}, '\\1'), {exception_type},
             CASE WHEN {is_error} THEN nullif(sp.status.message, '') END) AS error_type,
    CASE WHEN d_state = 'blank' THEN NULL
         WHEN line_row THEN (CASE WHEN reject_reason IS NULL THEN line
                                  WHEN line IS NULL THEN rtrim(coalesce(TRY(decode(raw[1:{RAW_REJECT_CAP}])), \
regexp_replace(CAST(raw[1:{RAW_REJECT_CAP}] AS VARCHAR), '(\\\\x0D)?\\\\x0A$', '')), chr(13) || chr(10))
                                  ELSE left(rtrim(line, chr(13) || chr(10)), {RAW_REJECT_CAP}) END)
         WHEN reject_reason IS NOT NULL
            THEN left(coalesce(CAST(json_extract(line, {span_path}) AS VARCHAR), line), {RAW_REJECT_CAP})
         ELSE {_unescaped(f"coalesce({messages_text_sql('in_msgs')}, in_raw)")} END AS input_text,
    {_unescaped(f"coalesce({messages_text_sql('out_msgs')}, out_raw, {_indexed_tool_calls('gen_ai.completion.')})")} AS output_text,
    CASE WHEN len(in_msgs) > 0 THEN CAST(to_json(in_msgs) AS JSON) END AS input_messages,
    CASE WHEN len(out_msgs) > 0 THEN CAST(to_json(out_msgs) AS JSON) END AS output_messages,
    TRY_CAST(f_feedback_score AS DOUBLE) AS feedback_score,
    {_online_scores_from_lists()} AS online_scores,
    CASE WHEN line_row THEN NULL ELSE {attributes} END AS attributes,
    CASE WHEN d_state = 'blank' THEN {_lit(_MARK_BLANK)}
         WHEN reject_reason IS NOT NULL THEN {_lit(_MARK_REJECT)}
         WHEN line_row THEN {_lit(_MARK_LOGS)}
         ELSE {_lit(FORMAT)} END AS source_format,
    {source_line} AS source_line
FROM typed
"""


def _log_items_sql(markers_sql: str, table: str, doc_mode: bool) -> str:
    """Unnest the log records of the log-export marker rows into temp table `table`, with the
    reject reason of each (and its raw text, only then)."""
    recs = (
        "coalesce(flatten(list_transform(d.resourceLogs, lambda rl, ri: flatten(list_transform(rl.scopeLogs, "
        "lambda sl, si: list_transform(sl.logRecords, lambda lr, li: {'ra': rl.resource.attributes, 'sc': sl.scope, "
        "'lr': lr, 'pos': [ri, si, li]}))))), [])"
    )
    source_line = _record_index("it.pos") if doc_mode else "line_no"
    t_ns, o_ns = _ns("it.lr.timeUnixNano"), _ns("it.lr.observedTimeUnixNano")
    bad_time = f"({_bad_ts('it.lr.timeUnixNano', t_ns)} OR {_bad_ts('it.lr.observedTimeUnixNano', o_ns)})"
    log_path = (
        "'$.resourceLogs[' || (it.pos[1] - 1) || '].scopeLogs[' || (it.pos[2] - 1) || '].logRecords[' || (it.pos[3] - 1) || ']'"
    )
    # Latest GenAI conventions, events only: the messages are in the attributes of a
    # gen_ai.client.inference.operation.details record (its body is empty). They become its
    # body, a kvlist of those attributes, decoded at any depth like any body.
    msg_keys = "[" + ", ".join(_lit(k) for k in DETAILS_MESSAGE_KEYS) + "]"
    details = (
        f"(it IS NOT NULL AND coalesce(nullif(it.lr.eventName, ''), list_filter(coalesce(it.lr.attributes, []), "
        f"lambda a: a.key = 'event.name')[1].value.stringValue) = {_lit(DETAILS_EVENT)} "
        f"AND len(list_filter(coalesce(it.lr.attributes, []), lambda a: list_contains({msg_keys}, a.key))) > 0)"
    )
    details_body = (
        "'{\"kvlistValue\":{\"values\":[' || array_to_string(list_transform(list_filter(it.lr.attributes, "
        f"lambda a: list_contains({msg_keys}, a.key)), lambda a: '{{\"key\":' || CAST(to_json(a.key) AS VARCHAR) || "
        "',\"value\":' || CAST(to_json(a.value) AS VARCHAR) || '}'), ',') || ']}}'"
    )
    return f"""
CREATE OR REPLACE TEMP TABLE {table} AS
WITH src AS (
    SELECT line_no, line, has_spans, TRY(from_json(line, {_spec(_LOG_DOC)})) AS d FROM ({markers_sql})
), recs AS (
    SELECT line_no, line, has_spans, {recs} AS recs FROM src
), items AS (
    SELECT line_no, line, has_spans, UNNEST(CASE WHEN len(recs) = 0 THEN [NULL] ELSE recs END) AS it FROM recs
), judged AS (
    SELECT *, CASE WHEN it IS NULL THEN 'OTLP export without spans or log records'
                   WHEN {bad_time} THEN 'unparseable timestamp: timeUnixNano=' || coalesce(left(it.lr.timeUnixNano, 100), '')
                        || ' observedTimeUnixNano=' || coalesce(left(it.lr.observedTimeUnixNano, 100), '') END AS reject_reason
    FROM items WHERE it IS NOT NULL OR NOT has_spans
), bodied AS (
    SELECT *, CASE WHEN details THEN {details_body} ELSE it.lr.body END AS body_av FROM (SELECT *, {details} AS details FROM judged)
)
SELECT {source_line} AS source_line, it, reject_reason, details,
    CASE WHEN reject_reason IS NULL THEN NULL
         WHEN it IS NULL THEN left(rtrim(line, chr(13) || chr(10)), {RAW_REJECT_CAP})
         ELSE left(coalesce(CAST(json_extract(line, {log_path}) AS VARCHAR), line), {RAW_REJECT_CAP}) END AS raw,
    {_ts(f'coalesce({t_ns}, {o_ns})')} AS event_time,
    body_av,
    -- bodies holding a container inside a container need the full decoder
    details OR len(regexp_extract_all(CAST(body_av AS VARCHAR), '"(?:kvlistValue|arrayValue)"')) > 1 AS nested_body
FROM bodied
"""


def _decode_bodies_sql(items: str, table: str) -> str:
    """Log bodies (AnyValue, any depth) -> plain JSON text, set-based: the tree is exploded with
    a recursive CTE and written back as tokens in document order (no nested lambdas, whose
    binding cost grows exponentially with depth in DuckDB)."""
    children = _spec(_CHILDREN_SPEC)
    return f"""
CREATE OR REPLACE TEMP TABLE {table} AS
WITH RECURSIVE nodes(root, path, has_key, key, v) AS (
    SELECT rowid, []::INTEGER[], false, NULL::VARCHAR, body_av FROM {items} WHERE nested_body
    UNION ALL
    SELECT n.root, list_append(n.path, CAST(c.ord AS INTEGER)), c.x.has_key, c.x.key, c.x.v
    FROM nodes n, unnest(list_concat(
        coalesce(list_transform(from_json(n.v, {children}).kvlistValue.values,
                                lambda kv: {{'has_key': true, 'key': coalesce(kv.key, ''), 'v': kv.value}}), []),
        coalesce(list_transform(from_json(n.v, {children}).arrayValue.values,
                                lambda el: {{'has_key': false, 'key': NULL::VARCHAR, 'v': el}}), [])
    )) WITH ORDINALITY AS c(x, ord)
), typed AS (
    SELECT root, path, has_key, key, from_json(v, {_spec(_AV)}) AS p FROM nodes
), tokens AS (
    SELECT root, path AS sk,
        CASE WHEN path[-1] > 1 THEN ',' ELSE '' END
        || CASE WHEN has_key THEN CAST(to_json(key) AS VARCHAR) || ':' ELSE '' END
        || CASE WHEN p.kvlistValue IS NOT NULL THEN '{{' WHEN p.arrayValue IS NOT NULL THEN '['
                ELSE {_scalar_json('p')} END AS tok
    FROM typed
    UNION ALL
    SELECT root, list_append(path, 2147483647), CASE WHEN p.kvlistValue IS NOT NULL THEN '}}' ELSE ']' END
    FROM typed WHERE p.kvlistValue IS NOT NULL OR p.arrayValue IS NOT NULL
)
SELECT root, nullif(string_agg(tok, '' ORDER BY sk), 'null') AS body FROM tokens GROUP BY root
"""


def _events_sql(items: str, bodies: str, table: str) -> str:
    """Event rows (and their reject reasons) from the unnested log records and decoded bodies."""
    roles = " ".join(f"WHEN {_lit(k)} THEN {_lit(v)}" for k, v in _EVENT_ROLES.items())
    extras = [
        ("otel.scope.name", "CAST(to_json(nullif(it.sc.name, '')) AS VARCHAR)"),
        ("log.severity_text", "CAST(to_json(nullif(it.lr.severityText, '')) AS VARCHAR)"),
        ("log.severity_number", "CAST(TRY_CAST(it.lr.severityNumber AS INTEGER) AS VARCHAR)"),
        ("log.body", "CASE WHEN NOT details AND (starts_with(body, '{') OR starts_with(body, '[')) THEN body END"),
    ]
    res_pairs = "CASE WHEN list_has_any(sk, rk) THEN list_filter(rp, lambda x, i: NOT list_contains(sk, rk[i])) ELSE rp END"
    attributes = (
        f"'{{' || concat_ws(',', nullif({_fix_pairs('spp', 'array_to_string(spp, chr(44))')}, ''), "
        f"nullif({_fix_pairs('rpe', 'array_to_string(rpe, chr(44))')}, ''), "
        + ", ".join(f"CASE WHEN {expr} IS NOT NULL THEN {_lit(json.dumps(key) + ':')} || {expr} END" for key, expr in extras)
        + ") || '}'"
    )
    # a details record's messages are its content (decoded); they are not repeated as attributes
    no_exclusions = "[]::VARCHAR[]"
    msg_keys = "[" + ", ".join(_lit(k) for k in DETAILS_MESSAGE_KEYS) + "]"
    log_exclusions = f"(CASE WHEN i.details THEN {msg_keys} ELSE {no_exclusions} END)"
    flat_body = f"nullif(list_transform([from_json(i.body_av, {_spec(_AV)})], lambda bv: {_typed_av_json('bv')})[1], 'null')"

    def member(path: str) -> str:
        return (
            f"(CASE WHEN json_type(body, {_lit(path)}) = 'VARCHAR' THEN json_extract_string(body, {_lit(path)}) "
            f"ELSE CAST(json_extract(body, {_lit(path)}) AS VARCHAR) END)"
        )

    return f"""
CREATE OR REPLACE TEMP TABLE {table} AS
WITH joined AS (
    SELECT i.source_line, i.it, i.reject_reason, i.raw, i.event_time, i.details,
        CASE WHEN i.nested_body THEN b.body ELSE {flat_body} END AS body,
        list_transform(coalesce(i.it.lr.attributes, []), lambda a: a.key) AS sk,
        list_transform(coalesce(i.it.lr.attributes, []), lambda a: {_value_expr('a')}) AS st,
        list_transform(coalesce(i.it.lr.attributes, []), lambda a: {_pair_expr('a', log_exclusions)}) AS spp,
        list_transform(coalesce(i.it.ra, []), lambda a: a.key) AS rk,
        list_transform(coalesce(i.it.ra, []), lambda a: {_value_expr('a')}) AS rt,
        list_transform(coalesce(i.it.ra, []), lambda a: {_pair_expr('a', no_exclusions)}) AS rp
    FROM {items} i LEFT JOIN {bodies} b ON b.root = i.rowid
), named AS (
    SELECT *, {res_pairs} AS rpe,
        coalesce(nullif(it.lr.eventName, ''), {_get('event.name')}) AS event_name,
        json_type(body) = 'OBJECT' AS body_is_object
    FROM joined
)
SELECT
    {_norm_id('it.lr.traceId')} AS trace_id,
    {_norm_id('it.lr.spanId')} AS span_id,
    event_name,
    CASE WHEN reject_reason IS NULL THEN event_time END AS event_time,
    coalesce(CASE event_name {roles} END,
             CASE WHEN body_is_object THEN coalesce(json_extract_string(body, '$.role'), \
json_extract_string(body, '$.message.role')) END) AS role,
    CASE WHEN json_type(body) = 'VARCHAR' THEN json_extract_string(body, '$')
         WHEN body_is_object AND coalesce(json_type(body, '$.content'), 'NULL') <> 'NULL' THEN {member('$.content')}
         WHEN body_is_object AND coalesce(json_type(body, '$.message.content'), 'NULL') <> 'NULL'
            THEN {member('$.message.content')}
         ELSE body END AS content,
    CASE WHEN it IS NULL THEN NULL ELSE {attributes} END AS attributes,
    {_lit(FORMAT)} AS source_format,
    source_line,
    reject_reason,
    raw
FROM named
"""


# --- file layout and line sources -----------------------------------------------------------
_FIRST_KEY = re.compile(rb'^\{\s*"(resourceSpans|resourceLogs)"\s*:')
_NEAR_TOP = re.compile(rb'"(resourceSpans|resourceLogs)"\s*:\s*\[')


def _strip_head(head: bytes) -> bytes:
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    return head.lstrip()


def sniff(head: bytes, path: Path) -> bool:
    """An OTLP/JSON export: the first object's first key is resourceSpans/resourceLogs, or a
    document starting with '{' names one of them as an array-valued key near the top."""
    text = _strip_head(head)
    if not text.startswith(b"{"):
        return False
    if _FIRST_KEY.match(text):
        return True
    return _NEAR_TOP.search(text[:4096]) is not None


def _is_otlp_object(line: bytes) -> bool:
    try:
        obj = json.loads(line)
    except ValueError:
        return False
    return isinstance(obj, dict) and ("resourceSpans" in obj or "resourceLogs" in obj)


def _layout(path: Path) -> str:
    """'lines' (JSON lines) or 'document' (one or more multi-line JSON documents)."""
    with open(path, "rb") as fh:
        head = fh.read(64 * 1024)
    text = _strip_head(head)
    if not text.startswith(b"{"):
        return "lines"
    lines = text.split(b"\n")
    complete = lines if len(head) < 64 * 1024 else lines[:-1]
    if not complete:
        return "lines"  # the first line alone is longer than the head: a JSON line
    try:
        json.loads(complete[0])
        return "lines"
    except ValueError:
        pass
    if any(_is_otlp_object(line) for line in complete[1:] if line.strip()):
        return "lines"  # a JSON-lines file whose first line is broken
    return "document"


def _line_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """Split the file on LF into Arrow batches (line_no, raw) without a Python object per line:
    numpy finds the newlines and each batch's binary values point into the chunk just read
    (terminator included; CR and LF are JSON whitespace). A line longer than MAX_LINE_BYTES
    that does not fit a chunk is cut to MAX_LINE_BYTES + 1 bytes (the SQL rejects it by its
    length) and the rest of it is skipped, so memory stays bounded."""
    line_no = 0
    carry = b""  # the unfinished line at the end of the previous chunk
    skipping = False  # inside the remainder of a line that was cut

    def batch(buf, begin: int, ends):
        nonlocal line_no
        offsets = np.empty(len(ends) + 1, np.int32)
        offsets[0] = begin
        offsets[1:] = ends
        raw = pa.Array.from_buffers(pa.binary(), len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(buf)])
        nos = pa.array(np.arange(line_no + 1, line_no + len(ends) + 1, dtype=np.int64))
        line_no += len(ends)
        return pa.RecordBatch.from_arrays([nos, raw], names=["line_no", "raw"])

    with open(path, "rb", buffering=0) as fh:
        while True:
            # a long unfinished line reads up to 16 MiB more at a time (not quadratic copying)
            buf = bytearray(len(carry) + max(CHUNK_BYTES, min(len(carry), 16 * 1024 * 1024)))
            buf[: len(carry)] = carry
            got = fh.readinto(memoryview(buf)[len(carry) :]) or 0
            n = len(carry) + got
            ends = np.flatnonzero(np.frombuffer(buf, np.uint8, n) == 10) + 1
            begin = 0
            if skipping:
                if not len(ends):
                    carry = b""
                    if not got:
                        return
                    continue
                begin, ends, skipping = int(ends[0]), ends[1:], False
            if not got and begin < n and (not len(ends) or ends[-1] != n):
                ends = np.append(ends, n)  # the last line has no terminator
            if len(ends):
                yield batch(buf, begin, ends)
                begin = int(ends[-1])
            if not got:
                return
            carry = bytes(buf[begin:n])
            if len(carry) > MAX_LINE_BYTES:
                cut = bytearray(carry[: MAX_LINE_BYTES + 1])
                yield batch(cut, 0, np.array([len(cut)]))
                carry, skipping = b"", True


_LINE_SCHEMA = pa.schema([("line_no", pa.int64()), ("raw", pa.binary())])


# --- staging passes -------------------------------------------------------------------------
class _Run:
    """State of one read(): the rows it appended to stage_spans start at rowid `start`."""

    def __init__(self, con, ctx: ReadContext):
        self.con = con
        self.ctx = ctx
        self.path = Path(ctx.path)
        self.uid = f"otlp_{threading.get_ident()}_{id(self)}"
        self.start = con.execute("SELECT coalesce(max(rowid) + 1, 0) FROM stage_spans").fetchall()[0][0]

    def ours(self) -> str:
        return f"rowid >= {self.start}"

    def insert_spans(self, lines_sql: str, doc_mode: bool) -> None:
        self.con.execute(_span_insert_sql(lines_sql, self.ctx.settings, doc_mode))

    def drop_ours(self) -> None:
        self.con.execute(f"DELETE FROM stage_spans WHERE {self.ours()}")

    def finish(self, doc_mode: bool) -> None:
        """Move marker rows: rejects to stage_rejects, log exports to stage_events."""
        con = self.con
        con.execute(
            f"INSERT INTO stage_rejects (source_line, raw, reason) SELECT source_line, input_text, status "
            f"FROM stage_spans WHERE {self.ours()} AND source_format = {_lit(_MARK_REJECT)}"
        )
        _stage_logs(con, self.ours(), self.uid, doc_mode, "stage")
        con.execute(
            f"DELETE FROM stage_spans WHERE {self.ours()} AND source_format IN "
            f"({_lit(_MARK_REJECT)}, {_lit(_MARK_LOGS)}, {_lit(_MARK_BLANK)})"
        )


def _stage_logs(con, ours: str, uid: str, doc_mode: bool, into: str) -> None:
    """The log records of the log-export marker rows of stage_spans (`ours`: which rows) into
    `<into>_events`, and their rejects into `<into>_rejects`."""
    has_logs = con.execute(
        f"SELECT count(*) FROM stage_spans WHERE {ours} AND source_format = {_lit(_MARK_LOGS)}"
    ).fetchall()[0][0]
    if not has_logs:
        return
    items, bodies, events = (f"{uid}_{s}" for s in ("log_items", "log_bodies", "events"))
    markers = (
        f"SELECT source_line AS line_no, input_text AS line, coalesce(kind = 'has_spans', false) AS has_spans "
        f"FROM stage_spans WHERE {ours} AND source_format = {_lit(_MARK_LOGS)}"
    )
    try:
        con.execute(_log_items_sql(markers, items, doc_mode))
        con.execute(_decode_bodies_sql(items, bodies))
        con.execute(_events_sql(items, bodies, events))
        ev_cols = ", ".join(f'"{n}"' for n, _ in EVENT_COLUMNS)
        con.execute(f"INSERT INTO {into}_events ({ev_cols}) SELECT {ev_cols} FROM {events} WHERE reject_reason IS NULL")
        con.execute(
            f"INSERT INTO {into}_rejects (source_line, raw, reason) SELECT source_line, raw, reject_reason "
            f"FROM {events} WHERE reject_reason IS NOT NULL"
        )
    finally:
        for t in (items, bodies, events):
            con.execute(f"DROP TABLE IF EXISTS {t}")


def _read_lines(run: _Run) -> None:
    name = f"{run.uid}_lines"
    reader = pa.RecordBatchReader.from_batches(_LINE_SCHEMA, _line_batches(run.path))
    run.con.register(name, reader)
    try:
        run.insert_spans(f"SELECT line_no, raw FROM {name}", doc_mode=False)
    finally:
        run.con.unregister(name)


def _read_documents(run: _Run) -> None:
    con = run.con
    size = run.path.stat().st_size
    lines_sql = (
        f"SELECT o AS line_no, encode(CAST(json AS VARCHAR)) AS raw FROM read_json({_lit(str(run.path))}, "
        f"format='unstructured', records=false, columns={{'json': 'JSON'}}, "
        f"maximum_object_size={max(size + 1, 16 * 1024 * 1024)}) WITH ORDINALITY AS docs(json, o)"
    )
    try:
        run.insert_spans(lines_sql, doc_mode=True)
    except duckdb.InvalidInputException as exc:  # read_json: the file is not valid JSON as a whole
        run.drop_ours()
        with open(run.path, "rb") as fh:
            raw = fh.read(RAW_REJECT_CAP * 4).decode("utf-8", "replace")[:RAW_REJECT_CAP]
        message = str(exc).splitlines()[0][:300]
        con.execute(
            "INSERT INTO stage_rejects (source_line, raw, reason) VALUES (NULL, ?, ?)",
            [raw, f"invalid JSON document: {message}"],
        )


# --- many small files ------------------------------------------------------------------------
# Binding and optimising the normalising INSERT costs DuckDB ~0.2-0.4 s whatever the input's
# size (it is ~85 kB of SQL; a prepared statement is re-planned as well): the price of a file
# exported per batch, hundreds of times over. Small JSON-lines files sharing their source
# settings are therefore normalised together, in one statement, each file's lines numbered
# from FILE_STRIDE * (its index) + 1; each file's rows are then taken out in its own read()
# (the source line restored), and ingested, accounted and committed on its own as before.
PRESTAGE_FILE_BYTES = 1024 * 1024  # larger files cost more to normalise than to plan
PRESTAGE_BATCH_BYTES = 32 * 1024 * 1024
PRESTAGED = "otlp_prestaged"
FILE_STRIDE = 2**32  # a file under PRESTAGE_FILE_BYTES has fewer lines than this


def can_prestage(path: Path) -> bool:
    """A JSON-lines file small enough to be normalised together with others."""
    try:
        return path.stat().st_size <= PRESTAGE_FILE_BYTES and _layout(path) == "lines"
    except OSError:
        return False


def prestage(con, paths: list[Path], settings: SourceSettings) -> None:
    """Normalise the lines of `paths` in one statement into temp table PRESTAGED; the file at
    index i is then read by `read(con, ReadContext(paths[i], settings, prestaged=i))`. Raises
    whatever the statement raises (the caller then reads the files one by one)."""
    batches = []
    for i, path in enumerate(paths):
        for b in _line_batches(path):
            shifted = pc.add(b.column(0), pa.scalar(i * FILE_STRIDE, pa.int64()))
            batches.append(pa.RecordBatch.from_arrays([shifted, b.column(1)], schema=_LINE_SCHEMA))
    name = f"otlp_prestage_{threading.get_ident()}_lines"
    con.execute(create_stage_tables_sql(PRESTAGED))
    con.execute(create_stage_tables_sql())  # the INSERT writes stage_spans; moved below
    old_order = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0]
    con.execute("SET preserve_insertion_order = false")
    con.register(name, pa.Table.from_batches(batches, schema=_LINE_SCHEMA))
    try:
        con.execute(_span_insert_sql(f"SELECT line_no, raw FROM {name}", settings, doc_mode=False))
        # The log exports' records too, in one pass; their markers are then done with.
        _stage_logs(con, "true", f"otlp_prestage_{threading.get_ident()}", False, PRESTAGED)
        con.execute(f"INSERT INTO {PRESTAGED}_spans SELECT * FROM stage_spans WHERE source_format IS DISTINCT FROM {_lit(_MARK_LOGS)}")
    finally:
        con.unregister(name)
        con.execute(f"SET preserve_insertion_order = {'true' if old_order else 'false'}")
        con.execute("DROP TABLE IF EXISTS stage_spans")


def drop_prestaged(con) -> None:
    for t in ("spans", "rejects", "events"):
        con.execute(f"DROP TABLE IF EXISTS {PRESTAGED}_{t}")


def _take_prestaged(run: _Run, index: int) -> None:
    lo = index * FILE_STRIDE
    for table in ("spans", "events", "rejects"):
        run.con.execute(
            f"INSERT INTO stage_{table} SELECT * REPLACE (source_line - {lo} AS source_line) FROM {PRESTAGED}_{table} "
            f"WHERE source_line > {lo} AND source_line < {lo + FILE_STRIDE}"
        )


def read(con, ctx: ReadContext) -> None:
    """Stage the spans, log records and rejects of an OTLP/JSON file (see the module docstring)."""
    path = Path(ctx.path)
    if ctx.prestaged is not None:  # normalised already, with other small files (prestage)
        run = _Run(con, ctx)
        try:
            _take_prestaged(run, ctx.prestaged)
            run.finish(doc_mode=False)
        except BaseException:
            run.drop_ours()
            raise
        return
    if not path.is_file():
        raise UnreadableInput(f"cannot read {path}: not a file")
    try:
        layout = _layout(path)
    except OSError as exc:
        raise UnreadableInput(f"cannot read {path}: {exc.strerror or exc}") from exc
    old_order = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0]
    con.execute("SET preserve_insertion_order = false")
    run = _Run(con, ctx)
    try:
        if layout == "document":
            _read_documents(run)
            run.finish(doc_mode=True)
        else:
            _read_lines(run)
            run.finish(doc_mode=False)
    except BaseException:
        run.drop_ours()
        raise
    finally:
        con.execute(f"SET preserve_insertion_order = {'true' if old_order else 'false'}")
