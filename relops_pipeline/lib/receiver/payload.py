"""OTLP/HTTP request bodies to OTLP JSON, and the responses the OTLP specification asks for.

Protobuf bodies are decoded with opentelemetry-proto and converted by `to_otlp_json`: the
output of google.protobuf's MessageToDict (camelCase, int64 as strings, enums by name, bytes
base64) except trace/span ids, which are lower-case hex as OTLP JSON has them. It is about
twice as fast as MessageToDict (one converter cached per field descriptor, KeyValue/AnyValue
read directly; MessageToDict re-examines every field of every message), which matters: the
conversion is in the ack path. JSON bodies are taken as they are (ids already hex, or base64).
Spans (log records) without a valid trace id or span id are dropped and counted as rejected:
the response then carries a partial_success with the count and a message.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor  # type: ignore[import-untyped]
from google.protobuf.internal.type_checkers import ToShortestFloat  # type: ignore[import-untyped]
from google.protobuf.json_format import MessageToDict  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
TRACES, LOGS = "traces", "logs"
WORKFLOW_KEY = "relops.workflow"

# per signal: the export request's top-level list, its scope list, its item list, the item noun
_LAYOUT = {TRACES: ("resourceSpans", "scopeSpans", "spans"), LOGS: ("resourceLogs", "scopeLogs", "logRecords")}
_REQUESTS: dict[str, Any] = {TRACES: trace_service_pb2.ExportTraceServiceRequest, LOGS: logs_service_pb2.ExportLogsServiceRequest}
_RESPONSES: dict[str, Any] = {TRACES: trace_service_pb2.ExportTraceServiceResponse, LOGS: logs_service_pb2.ExportLogsServiceResponse}
_REJECTED_FIELD = {TRACES: "rejected_spans", LOGS: "rejected_log_records"}
_ID_HEX = {"traceId": 32, "spanId": 16}


class BadRequest(ValueError):
    """The body cannot be decoded (400)."""


class TooLarge(ValueError):
    """The body, once decompressed, is over the limit (413)."""


class UnsupportedMedia(ValueError):
    """A content type or encoding the receiver does not take (415)."""


@dataclass
class Decoded:
    """An export request as OTLP JSON: `doc` holds the accepted items only."""

    doc: dict[str, Any]
    accepted: int
    rejected: int
    message: str = ""


@dataclass
class Converted:
    """An export request ready to spool: its OTLP JSON line (None when no item was accepted) and
    the counts the response and the counters need (small and picklable: it comes back from a
    worker process)."""

    line: bytes | None
    accepted: int
    rejected: int
    message: str = ""


def convert(body: bytes, encoding: str | None, mtype: str, signal: str, workflow: str | None, limit: int) -> Converted:
    """Everything between reading a request's body and spooling it: decompress, decode, clean,
    one OTLP JSON line. Raises BadRequest / TooLarge / UnsupportedMedia."""
    if mtype not in (PROTOBUF, JSON):
        raise UnsupportedMedia(f"Content-Type {mtype or '(none)'!r} is not supported ({PROTOBUF} or {JSON})")
    body = decompress(body, encoding, limit)
    if mtype == PROTOBUF:
        return _protobuf_export(_parse(body, signal), signal, workflow)
    decoded = decode(body, mtype, signal, workflow)
    return Converted(dump(decoded) if decoded.accepted else None, decoded.accepted, decoded.rejected, decoded.message)


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type header, lower-case, without parameters."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body without its Content-Encoding (identity or gzip); TooLarge past `limit` bytes
    decompressed (a gzip bomb is never inflated whole)."""
    encoding = (encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise UnsupportedMedia(f"Content-Encoding {encoding!r} is not supported (gzip or identity)")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"invalid gzip body: {exc}") from None
    if len(out) > limit:
        raise TooLarge(f"the decompressed body is over {limit} bytes")
    if not inflater.eof:
        raise BadRequest("truncated gzip body")
    return out


def _hex_id(value: Any, size: int, from_base64: bool) -> str | None:
    """A trace/span id of a JSON body as lower-case hex of `size` digits, else None (missing or
    malformed): hex as OTLP JSON has it, or base64 (the reader takes those too)."""
    if not isinstance(value, str) or not value:
        return None
    if not from_base64 and _is_hex(value.lower(), size):
        return value.lower()
    try:
        value = base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        return None
    return value if _is_hex(value, size) else None


def _is_hex(value: str, size: int) -> bool:
    """`size` lower-case hex digits, not all zero (an all-zero id is invalid in OTLP)."""
    return len(value) == size and all(c in "0123456789abcdef" for c in value) and value.strip("0") != ""


def _pin(attributes: list | None, workflow: str) -> list:
    """`attributes` (OTLP JSON key/values) with relops.workflow set to `workflow`."""
    kept = [a for a in attributes or [] if not (isinstance(a, dict) and a.get("key") == WORKFLOW_KEY)]
    return [*kept, {"key": WORKFLOW_KEY, "value": {"stringValue": workflow}}]


def _clean(doc: dict[str, Any], signal: str, workflow: str | None) -> Decoded:
    """An OTLP JSON export: hex ids, items without valid ids dropped (counted), the workflow
    pinned; logs need no ids (a log record may stand outside any trace): theirs are only
    converted when present."""
    top, scopes_key, items_key = _LAYOUT[signal]
    accepted = rejected = 0
    resources = doc.get(top)
    if not isinstance(resources, list):
        raise BadRequest(f"not an OTLP {signal} export: no {top} list")
    for resource in resources:
        if not isinstance(resource, dict):
            raise BadRequest(f"{top}: expected objects")
        if workflow is not None:
            resource.setdefault("resource", {})["attributes"] = _pin(resource.get("resource", {}).get("attributes"), workflow)
        for scope in resource.get(scopes_key) or []:
            if not isinstance(scope, dict):
                raise BadRequest(f"{scopes_key}: expected objects")
            kept = []
            for item in scope.get(items_key) or []:
                if not isinstance(item, dict):
                    raise BadRequest(f"{items_key}: expected objects")
                ok = True
                for key in (("traceId", "spanId") if signal == TRACES else ()):
                    ident = _hex_id(item.get(key), _ID_HEX[key], False)
                    ok = ok and ident is not None
                    if ident is not None:
                        item[key] = ident
                for key in ("parentSpanId",) if signal == TRACES else ("traceId", "spanId"):
                    if item.get(key):
                        ident = _hex_id(item[key], _ID_HEX.get(key, 16), False)
                        if ident is None:
                            item.pop(key)
                        else:
                            item[key] = ident
                if not ok:
                    rejected += 1
                    continue
                if workflow is not None:
                    item["attributes"] = _pin(item.get("attributes"), workflow)
                kept.append(item)
            scope[items_key] = kept
            accepted += len(kept)
    return Decoded(doc, accepted, rejected, _rejected_message(signal, rejected))


def _rejected_message(signal: str, rejected: int) -> str:
    noun = "spans" if signal == TRACES else "log records"
    return f"{rejected} {noun} without a valid traceId/spanId were rejected" if rejected else ""


# --- protobuf to OTLP JSON text ----------------------------------------------------------------

_ID_MESSAGES = ("opentelemetry.proto.trace.v1.Span", "opentelemetry.proto.trace.v1.Span.Link",
                "opentelemetry.proto.logs.v1.LogRecord")
_ID_FIELDS = ("trace_id", "span_id", "parent_span_id")
_INT64 = (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64,
          FieldDescriptor.TYPE_SFIXED64, FieldDescriptor.TYPE_SINT64)
_PROTO_LAYOUT = {TRACES: ("resource_spans", "scope_spans", "spans"), LOGS: ("resource_logs", "scope_logs", "log_records")}
_LOG_IDS = (("trace_id", 16), ("span_id", 8))
_string = json.encoder.encode_basestring  # json.dumps(ensure_ascii=False) of one string (C)
_Text = Callable[[Any], str]
# field descriptor -> ('"jsonName":', the converter of one value to JSON text, repeated, field name)
_FIELDS: dict[Any, tuple[str, _Text, bool, str]] = {}


def to_otlp_json_text(message: Any, skip: tuple[str, ...] = (), replace: dict[str, _Text] | None = None,
                      add: dict[str, str] | None = None) -> str:
    """`message` as compact JSON text: what json.dumps(MessageToDict(message), ensure_ascii=False)
    gives (set fields only, JSON names, int64 as strings, enums by name, bytes base64,
    NaN/Infinity as strings), except the trace/span ids of spans, links and log records:
    lower-case hex (OTLP JSON). Fields named in `skip` are left out, those in `replace` are
    written by its function, `add` gives the JSON text of fields to write when they are not set."""
    parts = []
    for fd, value in message.ListFields():
        prefix, convert, repeated, name = _FIELDS.get(fd) or _field_spec(fd)
        if replace is not None and name in replace:
            parts.append(prefix + replace[name](value))
        elif skip and name in skip:
            continue
        elif repeated:
            parts.append(prefix + "[" + ",".join([convert(v) for v in value]) + "]")
        else:
            parts.append(prefix + convert(value))
    if add:
        written = {fd.name for fd, _ in message.ListFields()}
        fields = message.DESCRIPTOR.fields_by_name
        parts.extend(f'"{fields[name].json_name}":{text}' for name, text in add.items() if name not in written)
    return "{" + ",".join(parts) + "}"


def _key_value(kv: Any) -> str:
    """A KeyValue (most of a span: its attributes), without ListFields when it is the usual
    key + a set value (a set oneof member implies the value is present)."""
    key, value = kv.key, kv.value
    which = value.WhichOneof("value")
    if which is None or not key or kv.key_strindex:
        return to_otlp_json_text(kv)
    if which == "string_value":
        return '{"key":' + _string(key) + ',"value":{"stringValue":' + _string(value.string_value) + "}}"
    return '{"key":' + _string(key) + ',"value":' + _any_value(value) + "}"


def _any_value(value: Any) -> str:
    """An AnyValue: scalars directly, the rest (arrays, kvlists, bytes, unset) the general way."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return '{"stringValue":' + _string(value.string_value) + "}"
    if which == "int_value":
        return f'{{"intValue":"{value.int_value}"}}'
    if which == "bool_value":
        return '{"boolValue":true}' if value.bool_value else '{"boolValue":false}'
    if which == "double_value":
        return '{"doubleValue":' + _double(value.double_value) + "}"
    return to_otlp_json_text(value)


_MESSAGES: dict[str, _Text] = {"opentelemetry.proto.common.v1.KeyValue": _key_value, "opentelemetry.proto.common.v1.AnyValue": _any_value}


def _double(value: float) -> str:
    if math.isnan(value):
        return '"NaN"'
    if math.isinf(value):
        return '"Infinity"' if value > 0 else '"-Infinity"'
    return repr(value)


def _float(value: float) -> str:
    return _double(value) if math.isnan(value) or math.isinf(value) else repr(ToShortestFloat(value))


def _well_known(message: Any) -> str:
    return json.dumps(MessageToDict(message), separators=(",", ":"), ensure_ascii=False)


def _converter(fd: Any) -> _Text:
    """The JSON text of one value of field `fd` (MessageToDict's rules, ids as hex)."""
    kind = fd.type
    if kind in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
        # well-known types (Timestamp, Struct, wrappers...) have JSON forms of their own: not in
        # OTLP, left to MessageToDict should one appear
        name = fd.message_type.full_name
        return _well_known if name.startswith("google.protobuf.") else _MESSAGES.get(name, to_otlp_json_text)
    if kind == FieldDescriptor.TYPE_ENUM:
        names = {v.number: _string(v.name) for v in fd.enum_type.values}
        return lambda v: names.get(v) or str(v)
    if kind == FieldDescriptor.TYPE_BYTES:
        ids = fd.name in _ID_FIELDS and fd.containing_type is not None and fd.containing_type.full_name in _ID_MESSAGES
        return (lambda v: '"' + v.hex() + '"') if ids else (lambda v: '"' + base64.b64encode(v).decode("ascii") + '"')
    if kind in _INT64:
        return lambda v: f'"{v}"'
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return _double
    if kind == FieldDescriptor.TYPE_FLOAT:
        return _float
    if kind == FieldDescriptor.TYPE_STRING:
        return _string
    if kind == FieldDescriptor.TYPE_BOOL:
        return lambda v: "true" if v else "false"
    return str


def _field_spec(fd: Any) -> tuple[str, _Text, bool, str]:
    """('"jsonName":', converter, repeated, name) of a field descriptor, cached."""
    prefix = _string(f"[{fd.full_name}]" if fd.is_extension else fd.json_name) + ":"
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        value_of = _converter(fd.message_type.fields_by_name["value"])

        def as_map(entries: Any) -> str:
            return "{" + ",".join(_string(("true" if k else "false") if isinstance(k, bool) else str(k)) + ":" + value_of(entries[k])
                                  for k in entries) + "}"

        spec: tuple[str, _Text, bool, str] = (prefix, as_map, False, fd.name)
    else:
        spec = (prefix, _converter(fd), bool(fd.is_repeated), fd.name)
    _FIELDS[fd] = spec
    return spec


_SPAN = "opentelemetry.proto.trace.v1.Span"
# the Span fields _span_text writes, by field number (the order ListFields and MessageToDict use)
_SPAN_FIELDS = ("trace_id", "span_id", "trace_state", "parent_span_id", "name", "kind", "start_time_unix_nano",
                "end_time_unix_nano", "attributes", "dropped_attributes_count", "events", "dropped_events_count", "links",
                "dropped_links_count", "status", "flags")


def _span_text(span: Any, parent_ok: bool, pin: str | None) -> str:
    """A Span as to_otlp_json_text writes it (the same text), field by field without ListFields:
    spans are most of an export. Used only while Span has exactly the fields of _SPAN_FIELDS
    (checked against the descriptor at import, see _FAST_SPANS). `parent_ok` False leaves the
    parent id out; `pin` (a KeyValue's text) replaces relops.workflow in the attributes."""
    parts = ['"traceId":"' + span.trace_id.hex() + '","spanId":"' + span.span_id.hex() + '"']
    if span.trace_state:
        parts.append('"traceState":' + _string(span.trace_state))
    if parent_ok and span.parent_span_id:
        parts.append('"parentSpanId":"' + span.parent_span_id.hex() + '"')
    if span.name:
        parts.append('"name":' + _string(span.name))
    if span.kind:
        parts.append('"kind":' + _span_kind(span.kind))
    if span.start_time_unix_nano:
        parts.append(f'"startTimeUnixNano":"{span.start_time_unix_nano}"')
    if span.end_time_unix_nano:
        parts.append(f'"endTimeUnixNano":"{span.end_time_unix_nano}"')
    if pin is not None:
        parts.append('"attributes":' + _pinned(span.attributes, pin))
    elif span.attributes:
        parts.append('"attributes":[' + ",".join([_key_value(kv) for kv in span.attributes]) + "]")
    if span.dropped_attributes_count:
        parts.append(f'"droppedAttributesCount":{span.dropped_attributes_count}')
    if span.events:
        parts.append('"events":[' + ",".join([to_otlp_json_text(e) for e in span.events]) + "]")
    if span.dropped_events_count:
        parts.append(f'"droppedEventsCount":{span.dropped_events_count}')
    if span.links:
        parts.append('"links":[' + ",".join([to_otlp_json_text(link) for link in span.links]) + "]")
    if span.dropped_links_count:
        parts.append(f'"droppedLinksCount":{span.dropped_links_count}')
    if span.HasField("status"):
        parts.append('"status":' + to_otlp_json_text(span.status))
    if span.flags:
        parts.append(f'"flags":{span.flags}')
    return "{" + ",".join(parts) + "}"


def _id_ok(value: bytes, size: int) -> bool:
    """A valid OTLP id: `size` bytes, not all zero."""
    return len(value) == size and value.strip(b"\0") != b""


def _pinned(attributes: Any, pin: str) -> str:
    """An attribute list as JSON text, relops.workflow replaced by `pin` (the KeyValue's text)."""
    return "[" + ",".join([_key_value(kv) for kv in attributes if kv.key != WORKFLOW_KEY] + [pin]) + "]"


def _span_descriptor() -> Any:
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    return Span.DESCRIPTOR


_FAST_SPANS = tuple(f.name for f in sorted(_span_descriptor().fields, key=lambda f: f.number)) == _SPAN_FIELDS
_span_kind = _converter(_span_descriptor().fields_by_name["kind"])


def _protobuf_export(request: Any, signal: str, workflow: str | None) -> Converted:
    """A parsed export request as one OTLP JSON line, cleaned like `_clean` does JSON bodies:
    items without a valid trace/span id rejected (counted), invalid optional ids left out, the
    workflow pinned on every resource and item."""
    top, scopes, items = _PROTO_LAYOUT[signal]
    if not len(getattr(request, top)):
        raise BadRequest(f"not an OTLP {signal} export: no {_LAYOUT[signal][0]} list")
    counts = [0, 0]  # accepted, rejected
    pin = None if workflow is None else '{"key":' + _string(WORKFLOW_KEY) + ',"value":{"stringValue":' + _string(workflow) + "}}"
    pinning: dict[str, _Text] | None = None if pin is None else {"attributes": lambda a: _pinned(a, pin)}
    pin_add = None if pin is None else {"attributes": "[" + pin + "]"}

    def item_text(item: Any) -> str | None:
        if signal == TRACES:
            if not (_id_ok(item.trace_id, 16) and _id_ok(item.span_id, 8)):
                return None
            parent_ok = not item.parent_span_id or _id_ok(item.parent_span_id, 8)
            if _FAST_SPANS:
                return _span_text(item, parent_ok, pin)
            skip: tuple[str, ...] = () if parent_ok else ("parent_span_id",)
        else:
            skip = tuple(name for name, size in _LOG_IDS if getattr(item, name) and not _id_ok(getattr(item, name), size))
        return to_otlp_json_text(item, skip, pinning, pin_add)

    def items_text(values: Any) -> str:
        kept = [text for text in map(item_text, values) if text is not None]
        counts[0] += len(kept)
        counts[1] += len(values) - len(kept)
        return "[" + ",".join(kept) + "]"

    def scopes_text(values: Any) -> str:
        return "[" + ",".join([to_otlp_json_text(v, replace={items: items_text}) for v in values]) + "]"

    resource_replace: dict[str, _Text] = {scopes: scopes_text}
    if pin is not None:
        resource_replace["resource"] = lambda r: to_otlp_json_text(r, (), pinning, pin_add)
    resource_add = None if pin is None else {"resource": '{"attributes":[' + pin + "]}"}

    def resources_text(values: Any) -> str:
        return "[" + ",".join([to_otlp_json_text(v, (), resource_replace, resource_add) for v in values]) + "]"

    text = to_otlp_json_text(request, replace={top: resources_text})
    accepted, rejected = counts
    line = (text + "\n").encode("utf-8") if accepted else None
    return Converted(line, accepted, rejected, _rejected_message(signal, rejected))


def _parse(body: bytes, signal: str) -> Any:
    request = _REQUESTS[signal]()
    try:
        request.ParseFromString(body)
    except DecodeError as exc:
        raise BadRequest(f"invalid protobuf {request.DESCRIPTOR.name}: {exc}") from None
    return request


def decode(body: bytes, mtype: str, signal: str, workflow: str | None = None) -> Decoded:
    """An OTLP/HTTP JSON export body (already decompressed) as cleaned OTLP JSON."""
    if mtype != JSON:
        raise UnsupportedMedia(f"Content-Type {mtype or '(none)'!r} is not supported here ({JSON})")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest(f"invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest("invalid OTLP JSON: expected an object")
    try:
        return _clean(doc, signal, workflow)
    except (AttributeError, TypeError) as exc:  # a field of the wrong JSON type
        raise BadRequest(f"invalid OTLP JSON: {exc}") from None


def dump(decoded: Decoded) -> bytes:
    """The cleaned export as one compact JSON line (an OTLP JSON lines file of one line)."""
    return json.dumps(decoded.doc, separators=(",", ":"), ensure_ascii=False, check_circular=False).encode("utf-8") + b"\n"


def success(signal: str, mtype: str, done: Decoded | Converted) -> bytes:
    """The Export*ServiceResponse body, in the request's encoding; partial_success when items
    were rejected."""
    response = _RESPONSES[signal]()
    if done.rejected:
        setattr(response.partial_success, _REJECTED_FIELD[signal], done.rejected)
        response.partial_success.error_message = done.message
    if mtype == PROTOBUF:
        return response.SerializeToString()
    return json.dumps(MessageToDict(response)).encode("utf-8")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def status(code: int, message: str, mtype: str) -> tuple[bytes, str]:
    """An error body: a google.rpc.Status (gRPC `code`, message) in protobuf for protobuf
    requests (encoded here: two fields), JSON otherwise; with its Content-Type."""
    if mtype == PROTOBUF:
        text = message.encode("utf-8")
        return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text, PROTOBUF
    return json.dumps({"code": code, "message": message}).encode("utf-8"), JSON

