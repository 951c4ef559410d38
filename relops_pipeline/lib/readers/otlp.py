"""OTLP/JSON traces and logs (OpenTelemetry collector file exporter, OTLP/HTTP JSON bodies).

Layouts
- JSON lines (collector file exporter): every line is one export request, `{"resourceSpans":
  [...]}` or `{"resourceLogs": [...]}`; a file may mix them. source_line is the 1-based line
  number in the file (blank lines count as lines but are not records). A line holding several
  spans gives several rows with the same source_line.
- One JSON document (an OTLP/HTTP request body, usually pretty-printed over many lines), or
  several such documents concatenated. Chosen when the first non-blank line of the file is not a
  JSON value on its own. The documents are read with `read_json(format='unstructured',
  records=false)`; source_line is then the 1-based index of the span (of the log record, for
  events) in document order across the file, and a document-level reject carries the
  document's 1-based index. A document that is not valid JSON makes one reject for the whole
  file (source_line NULL).

How lines are read (performance is the point; everything runs in DuckDB SQL)
- `read_csv` stages raw lines as text (one VARCHAR column, a delimiter byte that cannot occur
  in valid JSON, no quoting) `WITH ORDINALITY`, which numbers the rows in file order also on a
  multi-threaded scan. `new_line='\\r\\n'` with `strict_mode=false` makes LF, CRLF and mixed
  files give one row per line. Lines DuckDB cannot scan (invalid UTF-8, longer than
  MAX_LINE_BYTES) are skipped by the scan and recorded by `store_rejects`; they become rejects
  and the line numbers of the rows after them are corrected.
- A parallel newline count (numpy) checks the scan: the CSV scanner also splits at a lone CR
  and silently loses lines longer than its buffer (DuckDB 2.0.1). When the counts disagree, or
  the file holds a lone CR, the file is re-read on the exact path: Python splits lines on LF and
  hands them to the same SQL in Arrow batches.
- Each line is parsed once with `TRY(from_json(line, <explicit OTLP structure>))`; failures are
  `invalid JSON` rejects (json_valid is only consulted for lines that did not parse). Spans are
  unnested from resourceSpans -> scopeSpans -> spans in one projection, and one INSERT writes
  stage_spans. Lines that are not spans travel through the same INSERT as marker rows (private
  source_format values) and are moved afterwards: rejects to stage_rejects, log exports to a
  second SQL pass that stages their log records in stage_events.

Mapping
- Fields come from FIELD_KEYS (attributes.py): the SQL coalesces the first non-empty attribute
  of each field's keys over the span attributes merged over the resource attributes (span
  wins). kind comes from the operation attribute through KIND_BY_OPERATION (the OTLP span kind
  is not the GenAI kind). status: status.code 2 -> error, 1 -> ok, else unset; error_type:
  error.type / exception.type, then the type of an `exception` span event, then (on error) the
  status message. output_text: the text parts of gen_ai.output.messages joined by a newline
  when there are any; otherwise the attribute as given.
- workflow / release: ctx.settings.workflow_keys / release_keys in order, like
  base.resolve_workflow: empty values are skipped, `service.name` starting with
  "unknown_service" is no workflow, default_workflow last.
- attributes: the span's attributes merged over its resource attributes, minus the keys that
  fill a column (every key of FIELD_KEYS except the operation keys) and the online-score keys,
  plus `otel.scope.name`, `otel.scope.version`, `otel.span.kind` and `otel.status_description`.
  AnyValues are decoded to plain JSON (intValue strings become numbers; nested values to a
  depth of ANY_VALUE_DEPTH, deeper ones are kept as their raw OTLP JSON).
- Log records (legacy GenAI events and any other log) become stage_events rows: event_name
  from eventName (or the event.name attribute), role from the event name (gen_ai.choice ->
  assistant) or the body's role, content = the body's content (choice: message.content) as
  text, else the decoded body as JSON; attributes = log attributes over resource attributes,
  plus `otel.scope.name`, severity, and `log.body` (the decoded body) when the body is
  structured.
- Rejects: invalid JSON lines, valid JSON that is not an OTLP export, exports with neither
  spans nor log records, spans without traceId/spanId, present but unparseable timestamps
  (spans and log records), lines DuckDB cannot scan. raw is capped at RAW_REJECT_CAP. Ids are
  lower-case hex; base64 ids (24 chars ending "==" / 12 ending "=") are converted.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Iterator

from relops_pipeline.lib.readers.attributes import FIELD_KEYS, KIND_BY_OPERATION, ONLINE_SCORE_PREFIXES
from relops_pipeline.lib.readers.base import PLACEHOLDER_SERVICE_PREFIX, ReadContext, SourceSettings, UnreadableInput
from relops_pipeline.lib.schema import EVENT_COLUMNS, RAW_REJECT_CAP

FORMAT = "otlp"

MAX_LINE_BYTES = 8 * 1024 * 1024  # longer lines are rejects
# DuckDB's CSV buffer must be larger than the longest line it reports as too long; lines longer
# than the buffer vanish from the scan (caught by the newline count -> exact path).
CSV_BUFFER_BYTES = 32 * 1024 * 1024
PY_BATCH_BYTES = 64 * 1024 * 1024  # exact path: text per Arrow batch

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
_OUTPUT_MESSAGES_SPEC = [{"parts": [{"type": "VARCHAR", "content": "VARCHAR"}]}]

_EVENT_ROLES = {
    "gen_ai.user.message": "user",
    "gen_ai.system.message": "system",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
    "gen_ai.choice": "assistant",
}
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


def _norm_attrs(lst: str) -> str:
    """KV list -> list of {k, t (scalar text), j (raw array/kvlist JSON), v (typed value)}."""
    return (
        f"list_transform({lst}, lambda a: {{'k': a.key, 't': {_av_text('a.value')}, "
        f"'j': coalesce(a.value.arrayValue, a.value.kvlistValue), 'v': a.value}})"
    )


def _json_object(pairs: str, extras: list[tuple[str, str]]) -> str:
    """'{...}' from a list of normalised attributes plus (key, JSON text expression) extras."""
    parts = [f"array_to_string(list_transform({pairs}, lambda a: CAST(to_json(a.k) AS VARCHAR) || ':' || {_typed_av_json('a.v')}), ',')"]
    for key, expr in extras:
        parts.append(f"CASE WHEN {expr} IS NOT NULL THEN {_lit(json.dumps(key) + ':')} || {expr} END")
    joined = "concat_ws(',', " + ", ".join(f"nullif({p}, '')" for p in parts) + ")"
    return f"'{{' || coalesce({joined}, '') || '}}'"


def _kind_case(op: str) -> str:
    whens = " ".join(f"WHEN {_lit(k)} THEN {_lit(v)}" for k, v in KIND_BY_OPERATION.items())
    return f"(CASE lower(trim({op})) {whens} ELSE 'other' END)"


def _score_filter(var: str = "a", field: str = "k") -> str:
    return "(" + " OR ".join(f"starts_with({var}.{field}, {_lit(p)})" for p in ONLINE_SCORE_PREFIXES) + ")"


def _online_scores(ne: str) -> str:
    """{"name": number} from the online-score attributes (name as in map_attributes); NULL when none."""
    num = "TRY_CAST(coalesce(a.t, '') AS DOUBLE)"
    scored = f"list_filter({ne}, lambda a: {_score_filter()} AND isfinite({num}))"
    body = (
        f"array_to_string(list_transform({scored}, lambda a: "
        f"CAST(to_json(array_to_string(string_split(a.k, '.')[3:], '.')) AS VARCHAR) || ':' || CAST(to_json({num}) AS VARCHAR)), ',')"
    )
    return f"CASE WHEN {body} <> '' THEN '{{' || {body} || '}}' END"


def _resolve(keys: tuple[str, ...], default: str | None, placeholder_key: str | None) -> str:
    """First non-empty value among `keys` (mirrors base.resolve_workflow / resolve_release)."""
    terms = []
    for key in keys:
        t = f"ts[list_position(ks, {_lit(key)})]"
        if key == placeholder_key:
            t = f"list_filter([{t}], lambda w: NOT starts_with(w, {_lit(PLACEHOLDER_SERVICE_PREFIX)}))[1]"
        terms.append(t)
    if default is not None:
        terms.append(_lit(default))
    return "coalesce(" + ", ".join(terms) + ")" if terms else "NULL::VARCHAR"


def _container_text(js: str) -> str:
    """Plain JSON of an array/kvlist attribute kept as AnyValue JSON (NULL for scalars)."""
    return f"(CASE WHEN {js} IS NOT NULL THEN list_transform([from_json({js}, {_spec(_AV)})], lambda cv: {_typed_av_json('cv')})[1] END)"


def _output_text(key: str, raw: str) -> str:
    """Assistant text from gen_ai.output.messages text parts; the value as given otherwise."""
    msgs = f"TRY(from_json({raw}, {_spec(_OUTPUT_MESSAGES_SPEC)}))"
    texts = (
        f"array_to_string(flatten(list_transform({msgs}, lambda m: list_transform("
        f"list_filter(m.parts, lambda p: p.type = 'text' AND p.content IS NOT NULL), lambda p: p.content))), chr(10))"
    )
    return (
        f"(CASE WHEN {key} = 'gen_ai.output.messages' AND starts_with(ltrim({raw}), '[') "
        f"THEN coalesce(nullif({texts}, ''), {raw}) ELSE {raw} END)"
    )


def _finish_reason(text: str, container: str) -> str:
    """First finish reason, lower case (array attribute, JSON array string or plain string)."""
    first_of_array = (
        f"coalesce(json_extract_string({container}, '$.arrayValue.values[0].stringValue'), "
        f"json_extract_string({container}, '$.arrayValue.values[0].intValue'))"
    )
    from_string = (
        f"(CASE WHEN starts_with(ltrim({text}), '[') THEN (CASE WHEN json_valid({text}) "
        f"THEN json_extract_string({text}, '$[0]') ELSE {text} END) ELSE {text} END)"
    )
    return f"nullif(lower(CASE WHEN {container} IS NOT NULL THEN {first_of_array} ELSE {from_string} END), '')"


def _record_index(pos: str) -> str:
    """Document mode: 1-based index of the record in document order (NULL-`it` rows keep the doc index)."""
    return (
        f"CASE WHEN it IS NULL THEN line_no ELSE "
        f"count(it) OVER (ORDER BY line_no, {pos} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) END"
    )


def _lines_from_csv(path: str, rejects_table: str, rejects_scan: str) -> str:
    return (
        f"SELECT o AS line_no, line FROM read_csv({_lit(path)}, columns={{'line': 'VARCHAR'}}, "
        f"delim=chr(1), quote='', escape='', header=false, auto_detect=false, new_line='\\r\\n', "
        f"strict_mode=false, max_line_size={MAX_LINE_BYTES}, buffer_size={CSV_BUFFER_BYTES}, "
        f"store_rejects=true, rejects_table={_lit(rejects_table)}, rejects_scan={_lit(rejects_scan)}) "
        f"WITH ORDINALITY AS csv_lines(line, o)"
    )


def _attr_lists(span_attrs: str, resource_attrs: str, excluded_list: str) -> str:
    """Parallel primitive lists over a span's attributes followed by its resource's (list
    element access on primitive lists is cheap; on struct lists it is not): ks (key, NULL when
    the value is empty), ts (scalar text), js (array/kvlist as AnyValue JSON), ka (every key),
    pj ('"key":value' pair, NULL for keys that fill a column), sj (online-score pairs)."""

    def both(expr: str) -> str:
        return (
            f"list_concat(list_transform(coalesce({span_attrs}, []), lambda a: {expr}), "
            f"list_transform(coalesce({resource_attrs}, []), lambda a: {expr}))"
        )

    text = _av_text("a.value")
    container = (
        "CASE WHEN a.value.arrayValue IS NOT NULL THEN '{\"arrayValue\":' || a.value.arrayValue || '}' "
        "WHEN a.value.kvlistValue IS NOT NULL THEN '{\"kvlistValue\":' || a.value.kvlistValue || '}' END"
    )
    nonempty = f"(a.value.arrayValue IS NOT NULL OR a.value.kvlistValue IS NOT NULL OR {text} <> '')"
    pair = (
        f"CASE WHEN list_contains({excluded_list}, a.key) OR {_score_filter('a', 'key')} THEN NULL "
        f"ELSE CAST(to_json(a.key) AS VARCHAR) || ':' || {_typed_av_json('a.value')} END"
    )
    score_num = f"TRY_CAST(coalesce({text}, '') AS DOUBLE)"
    score = (
        f"CASE WHEN {_score_filter('a', 'key')} AND isfinite({score_num}) THEN "
        f"CAST(to_json(array_to_string(string_split(a.key, '.')[3:], '.')) AS VARCHAR) || ':' "
        f"|| CAST(to_json({score_num}) AS VARCHAR) END"
    )
    return (
        f"{both(f'CASE WHEN {nonempty} THEN a.key END')} AS ks, {both(text)} AS ts, {both(container)} AS js, "
        f"{both('a.key')} AS ka, {both(pair)} AS pj, {both(score)} AS sj"
    )


def _span_insert_sql(lines_sql: str, settings: SourceSettings, doc_mode: bool) -> str:
    """One INSERT: every line becomes staged spans or marker rows (rejects, logs, blank)."""
    field_idx = []
    for field, keys in FIELD_KEYS.items():
        pos = ", ".join(f"list_position(ks, {_lit(k)})" for k in keys)
        field_idx.append(f"coalesce({pos}) AS i_{field}")
    t = {f: f"ts[i_{f}]" for f in FIELD_KEYS}
    j = {f: f"js[i_{f}]" for f in FIELD_KEYS}
    excluded = sorted({k for f in _COLUMN_FIELDS for k in FIELD_KEYS[f]})
    excluded_list = "[" + ", ".join(_lit(k) for k in excluded) + "]"
    kind_name = "CASE " + " ".join(f"WHEN sk = {_lit(c)} THEN {_lit(n)}" for c, n in _SPAN_KIND_NAMES.items())
    kind_name += " ELSE lower(replace(sk, 'SPAN_KIND_', '')) END"
    extras = [
        ("otel.scope.name", "CAST(to_json(nullif(sc.name, '')) AS VARCHAR)"),
        ("otel.scope.version", "CAST(to_json(nullif(sc.version, '')) AS VARCHAR)"),
        (
            "otel.span.kind",
            f"CAST(to_json(CASE WHEN sk IS NULL OR sk IN ('0', 'SPAN_KIND_UNSPECIFIED') THEN NULL ELSE {kind_name} END) AS VARCHAR)",
        ),
        ("otel.status_description", "CAST(to_json(nullif(sp.status.message, '')) AS VARCHAR)"),
    ]
    pairs = "array_to_string(list_filter(pj, lambda x, i: x IS NOT NULL AND list_position(ka, ka[i]) = i), ',')"
    attributes = (
        "'{' || concat_ws(',', nullif(" + pairs + ", ''), "
        + ", ".join(f"CASE WHEN {expr} IS NOT NULL THEN {_lit(json.dumps(key) + ':')} || {expr} END" for key, expr in extras)
        + ") || '}'"
    )
    online = "nullif('{' || array_to_string(list_filter(sj, lambda x: x IS NOT NULL), ',') || '}', '{}')"
    exception_type = (
        "list_filter(flatten(list_transform(list_filter(sp.events, lambda ev: ev.name = 'exception'), "
        "lambda ev: list_filter(ev.attributes, lambda x: x.key = 'exception.type' AND x.value.stringValue <> ''))), "
        "lambda x: true)[1].value.stringValue"
    )
    is_error = "sp.status.code IN ('2', 'STATUS_CODE_ERROR')"
    reason = f"""CASE
        WHEN d_state = 'blank' THEN NULL
        WHEN line_row THEN CASE d_state
            WHEN 'invalid' THEN 'invalid JSON'
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
    n_spans = (
        "list_sum(list_transform(d.resourceSpans, lambda rs: list_sum(list_transform(rs.scopeSpans, lambda ss: len(ss.spans)))))"
    )
    return f"""
INSERT INTO stage_spans BY NAME
WITH src AS (
    SELECT line_no, line, TRY(from_json(line, {_spec(_SPAN_DOC)})) AS d FROM ({lines_sql})
), classified AS (
    SELECT line_no, line, d, has_logs, d_state, coalesce(n_spans, 0) > 0 AS has_spans,
        d_state <> 'otlp' OR has_logs OR coalesce(n_spans, 0) = 0 AS needs_line_row
    FROM (
        SELECT line_no, line, d, d.resourceLogs IS NOT NULL AS has_logs, {n_spans} AS n_spans,
            CASE WHEN d IS NULL THEN (CASE WHEN line IS NULL OR regexp_full_match(line, '\\s*') THEN 'blank'
                                           WHEN json_valid(line) THEN 'not_otlp' ELSE 'invalid' END)
                 WHEN d.resourceSpans IS NULL AND d.resourceLogs IS NULL THEN 'not_otlp'
                 ELSE 'otlp' END AS d_state
        FROM src)
), level1 AS (
    SELECT line_no, line, has_logs, d_state, has_spans, needs_line_row, len(l1) AS n1,
        UNNEST(l1) AS rs, UNNEST(range(1, len(l1) + 1)) AS ri
    FROM (SELECT *, CASE WHEN needs_line_row THEN list_concat(coalesce(d.resourceSpans, []), [NULL])
                         ELSE d.resourceSpans END AS l1
          FROM classified)
), level2 AS (
    SELECT line_no, line, has_logs, d_state, has_spans, line_row, ri, rs.resource.attributes AS ra,
        UNNEST(l2) AS ss, UNNEST(range(1, len(l2) + 1)) AS si
    FROM (SELECT *, needs_line_row AND ri = n1 AS line_row,
                 CASE WHEN needs_line_row AND ri = n1 THEN [NULL] ELSE rs.scopeSpans END AS l2 FROM level1)
), level3 AS (
    SELECT line_no, line, has_logs, d_state, has_spans, line_row, ri, si, ra, ss.scope AS sc,
        UNNEST(l3) AS sp, UNNEST(range(1, len(l3) + 1)) AS pi
    FROM (SELECT *, CASE WHEN line_row THEN [NULL] ELSE ss.spans END AS l3 FROM level2)
), listed AS (
    SELECT *, {_attr_lists('sp.attributes', 'ra', excluded_list)},
        {_norm_id('sp.traceId')} AS trace_id, {_norm_id('sp.spanId')} AS span_id,
        {_ns('sp.startTimeUnixNano')} AS start_ns, {_ns('sp.endTimeUnixNano')} AS end_ns,
        CAST(sp.kind AS VARCHAR) AS sk
    FROM level3
), located AS (
    SELECT *, {", ".join(field_idx)} FROM listed
), fields AS (
    SELECT *, {reason} AS reject_reason,
        coalesce({t['input_text']}, {_container_text(j['input_text'])}) AS in_raw,
        coalesce({t['output_text']}, {_container_text(j['output_text'])}) AS out_raw
    FROM located
)
SELECT
    trace_id,
    span_id,
    {_norm_id("nullif(sp.parentSpanId, '')")} AS parent_span_id,
    sp.name AS span_name,
    CASE WHEN line_row THEN (CASE WHEN has_spans THEN 'has_spans' END)
         ELSE {_kind_case(t['operation'])} END AS kind,
    {_resolve(settings.workflow_keys, settings.default_workflow, 'service.name')} AS workflow,
    {_resolve(settings.release_keys, None, None)} AS release,
    {t['model']} AS model,
    {t['provider']} AS provider,
    {_ts('start_ns')} AS start_time,
    {_ts('end_ns')} AS end_time,
    NULL::DOUBLE AS latency_ms,
    TRY_CAST(trunc(TRY_CAST({t['input_tokens']} AS DOUBLE)) AS BIGINT) AS input_tokens,
    TRY_CAST(trunc(TRY_CAST({t['output_tokens']} AS DOUBLE)) AS BIGINT) AS output_tokens,
    TRY_CAST({t['cost_usd']} AS DOUBLE) AS cost_usd,
    {_finish_reason(t['finish_reason'], j['finish_reason'])} AS finish_reason,
    CASE WHEN reject_reason IS NOT NULL THEN reject_reason
         WHEN {is_error} THEN 'error'
         WHEN sp.status.code IN ('1', 'STATUS_CODE_OK') THEN 'ok' ELSE 'unset' END AS status,
    coalesce({t['error_type']}, {exception_type},
             CASE WHEN {is_error} THEN nullif(sp.status.message, '') END) AS error_type,
    CASE WHEN d_state = 'blank' THEN NULL
         WHEN line_row THEN (CASE WHEN reject_reason IS NULL THEN line ELSE left(line, {RAW_REJECT_CAP}) END)
         WHEN reject_reason IS NOT NULL
            THEN left(coalesce(CAST(json_extract(line, {span_path}) AS VARCHAR), line), {RAW_REJECT_CAP})
         ELSE in_raw END AS input_text,
    {_output_text("ks[i_output_text]", 'out_raw')} AS output_text,
    TRY_CAST({t['feedback_score']} AS DOUBLE) AS feedback_score,
    {online} AS online_scores,
    CASE WHEN line_row THEN NULL ELSE {attributes} END AS attributes,
    CASE WHEN d_state = 'blank' THEN {_lit(_MARK_BLANK)}
         WHEN reject_reason IS NOT NULL THEN {_lit(_MARK_REJECT)}
         WHEN line_row THEN {_lit(_MARK_LOGS)}
         ELSE {_lit(FORMAT)} END AS source_format,
    {source_line} AS source_line
FROM fields
WHERE sp IS NOT NULL OR line_row
"""


def _log_items_sql(markers_sql: str, table: str, doc_mode: bool) -> str:
    """Unnest the log records of the log-export marker rows into temp table `table`."""
    recs = (
        "coalesce(flatten(list_transform(d.resourceLogs, lambda rl, ri: flatten(list_transform(rl.scopeLogs, "
        "lambda sl, si: list_transform(sl.logRecords, lambda lr, li: {'ra': rl.resource.attributes, 'sc': sl.scope, "
        "'lr': lr, 'pos': [ri, si, li]}))))), [])"
    )
    source_line = _record_index("it.pos") if doc_mode else "line_no"
    return f"""
CREATE OR REPLACE TEMP TABLE {table} AS
WITH src AS (
    SELECT line_no, line, has_spans, TRY(from_json(line, {_spec(_LOG_DOC)})) AS d FROM ({markers_sql})
), recs AS (
    SELECT line_no, line, has_spans, {recs} AS recs FROM src
), items AS (
    SELECT line_no, line, has_spans, UNNEST(CASE WHEN len(recs) = 0 THEN [NULL] ELSE recs END) AS it FROM recs
)
SELECT {source_line} AS source_line, line, it FROM items WHERE it IS NOT NULL OR NOT has_spans
"""


def _decode_bodies_sql(items: str, table: str) -> str:
    """Log bodies (AnyValue, any depth) -> plain JSON text, set-based: the tree is exploded with
    a recursive CTE and written back as tokens in document order (no nested lambdas, whose
    binding cost grows exponentially with depth in DuckDB)."""
    children = _spec(_CHILDREN_SPEC)
    return f"""
CREATE OR REPLACE TEMP TABLE {table} AS
WITH RECURSIVE nodes(root, path, has_key, key, v) AS (
    SELECT rowid, []::INTEGER[], false, NULL::VARCHAR, it.lr.body FROM {items} WHERE it.lr.body IS NOT NULL
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
        ("log.body", "CASE WHEN starts_with(body, '{') OR starts_with(body, '[') THEN body END"),
    ]
    rest = "list_filter(n, lambda a, i: list_position(ka, a.k) = i)"
    t_ns, o_ns = _ns("it.lr.timeUnixNano"), _ns("it.lr.observedTimeUnixNano")
    bad_time = f"({_bad_ts('it.lr.timeUnixNano', t_ns)} OR {_bad_ts('it.lr.observedTimeUnixNano', o_ns)})"
    log_path = (
        "'$.resourceLogs[' || (it.pos[1] - 1) || '].scopeLogs[' || (it.pos[2] - 1) || '].logRecords[' || (it.pos[3] - 1) || ']'"
    )

    def member(path: str) -> str:
        return (
            f"(CASE WHEN json_type(body, {_lit(path)}) = 'VARCHAR' THEN json_extract_string(body, {_lit(path)}) "
            f"ELSE CAST(json_extract(body, {_lit(path)}) AS VARCHAR) END)"
        )

    return f"""
CREATE OR REPLACE TEMP TABLE {table} AS
WITH joined AS (
    SELECT i.source_line, i.line, i.it, b.body,
        {_norm_attrs("list_concat(coalesce(i.it.lr.attributes, []), coalesce(i.it.ra, []))")} AS n
    FROM {items} i LEFT JOIN {bodies} b ON b.root = i.rowid
), named AS (
    SELECT *, list_transform(n, lambda a: a.k) AS ka,
        coalesce(nullif(it.lr.eventName, ''), list_filter(n, lambda a: a.k = 'event.name' AND a.t <> '')[1].t) AS event_name,
        json_type(body) = 'OBJECT' AS body_is_object
    FROM joined
)
SELECT
    {_norm_id('it.lr.traceId')} AS trace_id,
    {_norm_id('it.lr.spanId')} AS span_id,
    event_name,
    CASE WHEN NOT {bad_time} THEN {_ts(f'coalesce({t_ns}, {o_ns})')} END AS event_time,
    coalesce(CASE event_name {roles} END,
             CASE WHEN body_is_object THEN coalesce(json_extract_string(body, '$.role'), json_extract_string(body, '$.message.role')) END) AS role,
    CASE WHEN json_type(body) = 'VARCHAR' THEN json_extract_string(body, '$')
         WHEN body_is_object AND json_exists(body, '$.content') THEN {member('$.content')}
         WHEN body_is_object AND json_exists(body, '$.message.content') THEN {member('$.message.content')}
         ELSE body END AS content,
    CASE WHEN it IS NULL THEN NULL ELSE {_json_object(rest, extras)} END AS attributes,
    {_lit(FORMAT)} AS source_format,
    source_line,
    CASE WHEN it IS NULL THEN 'OTLP export without spans or log records'
         WHEN {bad_time} THEN 'unparseable timestamp: timeUnixNano=' || coalesce(left(it.lr.timeUnixNano, 100), '')
              || ' observedTimeUnixNano=' || coalesce(left(it.lr.observedTimeUnixNano, 100), '') END AS reject_reason,
    CASE WHEN it IS NULL THEN left(line, {RAW_REJECT_CAP})
         ELSE left(coalesce(CAST(json_extract(line, {log_path}) AS VARCHAR), line), {RAW_REJECT_CAP}) END AS raw
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


def _count_newlines(path: Path, out: dict) -> None:
    """Count LF and lone CR bytes (runs in a thread beside the CSV scan)."""
    import numpy as np

    n_lf = n_cr = n_crlf = 0
    last = b""
    prev_cr = False
    size = 0
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(16 * 1024 * 1024)
        while True:
            k = fh.readinto(buf)
            if not k:
                break
            size += k
            a = np.frombuffer(buf, np.uint8, k)
            n_lf += int(np.count_nonzero(a == 10))
            cr = int(np.count_nonzero(a == 13))
            if cr or prev_cr:
                n_cr += cr
                n_crlf += int(np.count_nonzero((a[:-1] == 13) & (a[1:] == 10)))
                if prev_cr and a[0] == 10:
                    n_crlf += 1
            prev_cr = bool(a[k - 1] == 13)
            last = bytes(a[k - 1 : k])
    out["lines"] = n_lf + (1 if size and last != b"\n" else 0)
    out["lone_cr"] = n_cr - n_crlf


def _py_line_batches(path: Path) -> Iterator[tuple[list[int], list[str], list[tuple[int, str, str]]]]:
    """Exact line splitting in Python: (line numbers, texts, rejects) per batch of ~PY_BATCH_BYTES."""
    line_no = 0
    carry = b""
    too_long = False
    with open(path, "rb") as fh:
        first = True
        while True:
            chunk = fh.read(PY_BATCH_BYTES)
            if first and chunk.startswith(b"\xef\xbb\xbf"):
                chunk = chunk[3:]
            first = False
            eof = not chunk
            if eof:
                if not carry and not too_long:
                    return
                parts, carry_next = [carry], b""
            else:
                parts = (carry + chunk).split(b"\n")
                carry_next = parts.pop()
            nos: list[int] = []
            texts: list[str] = []
            rejects: list[tuple[int, str, str]] = []
            for i, raw in enumerate(parts):
                line_no += 1
                if raw.endswith(b"\r"):
                    raw = raw[:-1]
                if too_long and i == 0:
                    too_long = False
                    rejects.append((line_no, raw[:RAW_REJECT_CAP].decode("utf-8", "replace"), f"line longer than {MAX_LINE_BYTES} bytes"))
                    continue
                if len(raw) > MAX_LINE_BYTES:
                    rejects.append((line_no, raw[:RAW_REJECT_CAP].decode("utf-8", "replace"), f"line longer than {MAX_LINE_BYTES} bytes"))
                    continue
                try:
                    texts.append(raw.decode("utf-8"))
                    nos.append(line_no)
                except UnicodeDecodeError:
                    rejects.append((line_no, raw[:RAW_REJECT_CAP].decode("utf-8", "replace"), "invalid UTF-8"))
            if len(carry_next) > MAX_LINE_BYTES:
                carry_next = carry_next[:RAW_REJECT_CAP]
                too_long = True
            carry = carry_next
            yield nos, texts, rejects
            if eof:
                return


# --- staging passes -------------------------------------------------------------------------
def _csv_reason(error_type: str) -> str:
    if error_type == "INVALID ENCODING":
        return "invalid UTF-8"
    if error_type == "LINE SIZE OVER MAXIMUM":
        return f"line longer than {MAX_LINE_BYTES} bytes"
    return f"unreadable line ({error_type.lower()})"


class _Run:
    """State of one read(): the rows it appended to stage_spans start at rowid `start`."""

    def __init__(self, con, ctx: ReadContext):
        self.con = con
        self.ctx = ctx
        self.path = Path(ctx.path)
        self.uid = f"otlp_{threading.get_ident()}_{id(self)}"
        self.start = con.execute("SELECT coalesce(max(rowid) + 1, 0) FROM stage_spans").fetchone()[0]

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
        has_logs = con.execute(
            f"SELECT count(*) FROM stage_spans WHERE {self.ours()} AND source_format = {_lit(_MARK_LOGS)}"
        ).fetchone()[0]
        if has_logs:
            items, bodies, events = (f"{self.uid}_{s}" for s in ("log_items", "log_bodies", "events"))
            markers = (
                f"SELECT source_line AS line_no, input_text AS line, coalesce(kind = 'has_spans', false) AS has_spans "
                f"FROM stage_spans WHERE {self.ours()} AND source_format = {_lit(_MARK_LOGS)}"
            )
            try:
                con.execute(_log_items_sql(markers, items, doc_mode))
                con.execute(_decode_bodies_sql(items, bodies))
                con.execute(_events_sql(items, bodies, events))
                ev_cols = ", ".join(f'"{n}"' for n, _ in EVENT_COLUMNS)
                con.execute(f"INSERT INTO stage_events ({ev_cols}) SELECT {ev_cols} FROM {events} WHERE reject_reason IS NULL")
                con.execute(
                    f"INSERT INTO stage_rejects (source_line, raw, reason) SELECT source_line, raw, reject_reason "
                    f"FROM {events} WHERE reject_reason IS NOT NULL"
                )
            finally:
                for t in (items, bodies, events):
                    con.execute(f"DROP TABLE IF EXISTS {t}")
        con.execute(
            f"DELETE FROM stage_spans WHERE {self.ours()} AND source_format IN "
            f"({_lit(_MARK_REJECT)}, {_lit(_MARK_LOGS)}, {_lit(_MARK_BLANK)})"
        )


def _read_csv_lines(run: _Run) -> bool:
    """Fast path. False when the scan does not account for every line (caller re-reads)."""
    con = run.con
    counts: dict = {}
    counter = threading.Thread(target=_count_newlines, args=(run.path, counts), daemon=True)
    counter.start()
    rj, rs = f"{run.uid}_csv_rejects", f"{run.uid}_csv_scans"
    try:
        run.insert_spans(_lines_from_csv(str(run.path), rj, rs), doc_mode=False)
        counter.join()
        scanned = con.execute(f"SELECT coalesce(max(source_line), 0) FROM stage_spans WHERE {run.ours()}").fetchone()[0]
        bad = con.execute(
            f"SELECT line, any_value(error_type), any_value(csv_line) FROM {rj} GROUP BY line ORDER BY line"
        ).fetchall()
        if counts.get("lone_cr") or scanned + len(bad) != counts.get("lines"):
            run.drop_ours()
            return False
        if bad:
            # Rows after a skipped line were numbered without it: shift them.
            shifts = ", ".join(f"({line - j})" for j, (line, _, _) in enumerate(bad, 1))
            con.execute(
                f"UPDATE stage_spans SET source_line = source_line + "
                f"(SELECT count(*) FROM (VALUES {shifts}) s(x) WHERE s.x < stage_spans.source_line) WHERE {run.ours()}"
            )
            con.executemany(
                "INSERT INTO stage_rejects (source_line, raw, reason) VALUES (?, ?, ?)",
                [
                    (line, (raw or "")[:RAW_REJECT_CAP], _csv_reason(err))
                    for line, err, raw in bad
                ],
            )
        return True
    finally:
        counter.join()
        con.execute(f"DROP TABLE IF EXISTS {rj}")
        con.execute(f"DROP TABLE IF EXISTS {rs}")


def _read_py_lines(run: _Run) -> None:
    """Exact path: Python splits lines, the same SQL stages each Arrow batch."""
    import pyarrow as pa

    con = run.con
    name = f"{run.uid}_batch"
    for nos, texts, rejects in _py_line_batches(run.path):
        if nos:
            batch = pa.table({"line_no": pa.array(nos, pa.int64()), "line": pa.array(texts, pa.string())})
            con.register(name, batch)
            try:
                run.insert_spans(f"SELECT line_no, line FROM {name}", doc_mode=False)
            finally:
                con.unregister(name)
        if rejects:
            con.executemany("INSERT INTO stage_rejects (source_line, raw, reason) VALUES (?, ?, ?)", rejects)


def _read_documents(run: _Run) -> None:
    con = run.con
    size = run.path.stat().st_size
    lines_sql = (
        f"SELECT o AS line_no, CAST(json AS VARCHAR) AS line FROM read_json({_lit(str(run.path))}, "
        f"format='unstructured', records=false, columns={{'json': 'JSON'}}, maximum_object_size={max(size + 1, 16 * 1024 * 1024)}) "
        f"WITH ORDINALITY AS docs(json, o)"
    )
    try:
        run.insert_spans(lines_sql, doc_mode=True)
    except Exception as exc:  # duckdb.Error subclasses: the file is not valid JSON as a whole
        import duckdb

        if not isinstance(exc, duckdb.Error):
            raise
        run.drop_ours()
        with open(run.path, "rb") as fh:
            raw = fh.read(RAW_REJECT_CAP * 4).decode("utf-8", "replace")[:RAW_REJECT_CAP]
        message = str(exc).splitlines()[0][:300]
        con.execute(
            "INSERT INTO stage_rejects (source_line, raw, reason) VALUES (NULL, ?, ?)",
            [raw, f"invalid JSON document: {message}"],
        )


def read(con, ctx: ReadContext) -> None:
    """Stage the spans, log records and rejects of an OTLP/JSON file (see the module docstring)."""
    path = Path(ctx.path)
    if not path.is_file():
        raise UnreadableInput(f"cannot read {path}: not a file")
    old_order = con.execute("SELECT current_setting('preserve_insertion_order')").fetchone()[0]
    con.execute("SET preserve_insertion_order = false")
    run = _Run(con, ctx)
    try:
        if _layout(path) == "document":
            _read_documents(run)
            run.finish(doc_mode=True)
        else:
            if not _read_csv_lines(run):
                _read_py_lines(run)
            run.finish(doc_mode=False)
    except BaseException:
        run.drop_ours()
        raise
    finally:
        con.execute(f"SET preserve_insertion_order = {'true' if old_order else 'false'}")
