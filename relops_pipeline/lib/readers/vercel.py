"""Reader for OpenTelemetry-JS `ReadableSpan` objects dumped to JSON (FORMAT "otel-js"), as the
Vercel AI SDK fixtures hold them.

A span: `{name, spanContext: {traceId, spanId}, parentSpanId | parentSpanContext.spanId,
kind, attributes: {flat map}, status: {code, message}, startTime: [sec, nanos],
endTime: [sec, nanos], events: [...], resource?: {attributes}}`. The file is a span, an array of
spans, or a wrapper object whose values hold spans (e.g. spans keyed by operation name); the
wrapper is walked and each span staged. Whatever is not a span is rejected with its JSON path;
a document holding no span at all (e.g. the fixtures' capture report) is one reject.
`source_line` is the 1-based index of the record in walk order.

Attributes are mapped by `attributes.map_attributes` (gen_ai.*, ai.*: model, provider,
tokens, finish reason, prompt and response text, kind from ai.operationId); workflow comes from
`ai.telemetry.functionId` through the usual workflow keys. Status code 2 -> error (error_type
from error.type, an `exception` event's exception.type, or the status message), 1 -> ok,
0 -> unset. The Vercel AI SDK writes no parent ids and no resource in these dumps, so an
`ai.generateText` span and its `ai.generateText.doGenerate` child arrive as separate traces.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from relops_pipeline.lib.readers.base import ReadContext, UnreadableInput, as_text, stage_rows, to_utc_naive
from relops_pipeline.lib.readers.otel_attributes import (
    compact_attributes,
    decode_json_text,
    kind_from_name,
    load_document,
    peek_head,
    span_row,
)

FORMAT = "otel-js"

_SPAN_KINDS = ("INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
_VECTOR_KEYS = ("ai.embedding", "ai.embeddings")
_MAX_DEPTH = 6


def sniff(head: bytes, path) -> bool:
    """JSON holding OTel-JS spans (`spanContext`), or the Vercel fixtures' capture report."""
    peek = peek_head(head)
    if peek.container is None or peek.trailing_data:
        return False
    if b'"spanContext"' in head or b'"_spanContext"' in head:
        return True
    return peek.container == "object" and {"captureDate", "attributeSummary"} <= set(peek.keys)


def _context(span: Mapping[str, Any]) -> Mapping[str, Any] | None:
    ctx = span.get("spanContext", span.get("_spanContext"))
    return ctx if isinstance(ctx, Mapping) else None


def is_span(value: Any) -> bool:
    """Whether a JSON value is an OTel-JS span (it has a spanContext object)."""
    return isinstance(value, Mapping) and _context(value) is not None


def _contains_span(value: Any, depth: int = 0) -> bool:
    if depth > _MAX_DEPTH:
        return False
    if is_span(value):
        return True
    if isinstance(value, list):
        return any(_contains_span(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return any(_contains_span(v, depth + 1) for v in value.values())
    return False


def _walk(value: Any, path: str, found: list[tuple[str, Any, bool]], depth: int = 0) -> None:
    """Collect (json path, value, is_span) in document order."""
    if is_span(value):
        found.append((path, value, True))
    elif isinstance(value, list) and depth <= _MAX_DEPTH:
        for i, v in enumerate(value):
            _walk(v, f"{path}[{i}]", found, depth + 1)
    elif isinstance(value, dict) and depth <= _MAX_DEPTH and _contains_span(value):
        for k, v in value.items():
            _walk(v, f"{path}.{k}", found, depth + 1)
    else:
        found.append((path, value, False))


def _resource_attrs(span: Mapping[str, Any]) -> dict:
    res = span.get("resource")
    if not isinstance(res, Mapping):
        return {}
    attrs = res.get("attributes", res.get("_attributes"))
    return dict(attrs) if isinstance(attrs, Mapping) else {}


def _status(span: Mapping[str, Any]) -> tuple[str, str | None]:
    st = span.get("status")
    code = st.get("code") if isinstance(st, Mapping) else st
    message = st.get("message") if isinstance(st, Mapping) else None
    text = str(code).upper() if code is not None else ""
    if code == 2 or text in ("2", "ERROR", "STATUS_CODE_ERROR"):
        return "error", message
    if code == 1 or text in ("1", "OK", "STATUS_CODE_OK"):
        return "ok", message
    return "unset", message


def _exception_type(span: Mapping[str, Any]) -> str | None:
    for ev in span.get("events") or []:
        if isinstance(ev, Mapping) and ev.get("name") == "exception":
            attrs = v if isinstance(v := ev.get("attributes"), Mapping) else {}
            if attrs.get("exception.type"):
                return str(attrs["exception.type"])
    return None


def _vector_summary(value: Any) -> str:
    """Embedding vectors are kilobytes of floats per span with no operational use: the
    attribute keeps their shape, not their values."""
    v = decode_json_text(value)
    if isinstance(v, list) and v and all(isinstance(x, (list, str)) for x in v):
        dims = {len(x) if isinstance(x, list) else len(decode_json_text(x) or []) for x in v}
        return f"[{len(v)} embedding vector(s) of {'/'.join(map(str, sorted(dims)))} floats omitted by relops]"
    if isinstance(v, list):
        return f"[embedding vector of {len(v)} floats omitted by relops]"
    return "[embedding omitted by relops]"


def _span_row(span: Mapping[str, Any], index: int, ctx: ReadContext) -> dict[str, Any] | str:
    """A staged row, or the reason the span is rejected."""
    sc = _context(span) or {}
    attrs = span.get("attributes", span.get("_attributes")) or {}
    if not isinstance(attrs, Mapping):
        return f"attributes is a {type(attrs).__name__}, not an object"
    trace_id, span_id = sc.get("traceId"), sc.get("spanId")
    missing = [n for n, v in (("traceId", trace_id), ("spanId", span_id)) if not v]
    if missing:
        return f"span without spanContext.{' and spanContext.'.join(missing)}"
    flat = {**_resource_attrs(span), **attrs}
    row = span_row(flat, ctx, FORMAT)
    if row["kind"] == "other":
        row["kind"] = kind_from_name(span.get("name"))
    status, message = _status(span)
    if status == "error" and not row["error_type"]:
        row["error_type"] = _exception_type(span) or (message or None)
    parent = span.get("parentSpanId")
    if not parent and isinstance(span.get("parentSpanContext"), Mapping):
        parent = span["parentSpanContext"].get("spanId")
    kind = span.get("kind")
    scope = span.get("instrumentationScope", span.get("instrumentationLibrary"))
    extra = {
        "otel.span.kind": _SPAN_KINDS[kind] if isinstance(kind, int) and 0 <= kind < len(_SPAN_KINDS) else kind,
        "otel.status_message": message,
        "otel.scope.name": scope.get("name") if isinstance(scope, Mapping) else None,
        "otel.scope.version": scope.get("version") if isinstance(scope, Mapping) else None,
        "otel.events": [ev.get("name") for ev in span.get("events") or [] if isinstance(ev, Mapping)] or None,
    }
    for key in _VECTOR_KEYS:
        if key in row["attributes"]:
            row["attributes"][key] = _vector_summary(row["attributes"][key])
    row.update(
        trace_id=as_text(trace_id),
        span_id=as_text(span_id),
        parent_span_id=as_text(parent) or None,
        span_name=as_text(span.get("name")),
        start_time=to_utc_naive(span.get("startTime")),
        end_time=to_utc_naive(span.get("endTime")),
        status=status,
        attributes=compact_attributes({**row["attributes"], **extra}),
        source_line=index,
    )
    return row


def read(con, ctx: ReadContext) -> None:
    """Stage every span found in the document; reject what is not a span (see the docstring)."""
    doc, rejects = load_document(ctx, "otel-js")
    if doc is None:
        stage_rows(con, [], rejects)
        return
    if not isinstance(doc, (dict, list)):
        raise UnreadableInput(f"{ctx.path}: not OTel-JS span JSON (a {type(doc).__name__})")
    rows: list[dict] = []
    if not _contains_span(doc):
        keys = ", ".join(list(doc)[:10]) if isinstance(doc, dict) else f"array of {len(doc)}"
        rejects.append({"source_line": 1, "raw": doc,
                        "reason": f"no OTel-JS span (spanContext) in this document ({keys}): not trace data"})
        stage_rows(con, rows, rejects)
        return
    found: list[tuple[str, Any, bool]] = []
    _walk(doc, "$", found)
    for index, (path, value, span) in enumerate(found, start=1):
        if not span:
            rejects.append({"source_line": index, "raw": value, "reason": f"{path}: not an OTel-JS span (no spanContext)"})
            continue
        result = _span_row(value, index, ctx)
        if isinstance(result, str):
            rejects.append({"source_line": index, "raw": value, "reason": f"{path}: {result}"})
        else:
            rows.append(result)
    stage_rows(con, rows, rejects)
