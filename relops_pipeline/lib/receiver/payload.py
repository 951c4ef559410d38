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
    dump. Raises BadRequest / TooLarge / UnsupportedMedia."""
    decoded = decode(decompress(body, encoding, limit), mtype, signal, workflow)
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


def _converted_id(value: Any, size: int, from_base64: bool = False) -> str | None:
    """A trace/span id that `to_otlp_json` made from bytes (always hex): valid when it has
    `size` digits and is not all zero."""
    return value if isinstance(value, str) and len(value) == size and value.strip("0") else None


def _is_hex(value: str, size: int) -> bool:
    """`size` lower-case hex digits, not all zero (an all-zero id is invalid in OTLP)."""
    return len(value) == size and all(c in "0123456789abcdef" for c in value) and value.strip("0") != ""


def _pin(attributes: list | None, workflow: str) -> list:
    """`attributes` (OTLP JSON key/values) with relops.workflow set to `workflow`."""
    kept = [a for a in attributes or [] if not (isinstance(a, dict) and a.get("key") == WORKFLOW_KEY)]
    return [*kept, {"key": WORKFLOW_KEY, "value": {"stringValue": workflow}}]


def _clean(doc: dict[str, Any], signal: str, from_protobuf: bool, workflow: str | None) -> Decoded:
    """Hex ids, items without valid ids dropped (counted), the workflow pinned; logs need no
    ids (a log record may stand outside any trace): theirs are only converted when present."""
    top, scopes_key, items_key = _LAYOUT[signal]
    check = _converted_id if from_protobuf else _hex_id
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
                    ident = check(item.get(key), _ID_HEX[key], False)
                    ok = ok and ident is not None
                    if ident is not None:
                        item[key] = ident
                for key in ("parentSpanId",) if signal == TRACES else ("traceId", "spanId"):
                    if item.get(key):
                        ident = check(item[key], _ID_HEX.get(key, 16), False)
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
    noun = "spans" if signal == TRACES else "log records"
    message = f"{rejected} {noun} without a valid traceId/spanId were rejected" if rejected else ""
    return Decoded(doc, accepted, rejected, message)


# --- protobuf to OTLP JSON ---------------------------------------------------------------------

_ID_MESSAGES = ("opentelemetry.proto.trace.v1.Span", "opentelemetry.proto.trace.v1.Span.Link",
                "opentelemetry.proto.logs.v1.LogRecord")
_ID_FIELDS = ("trace_id", "span_id", "parent_span_id")
_INT64 = (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64,
          FieldDescriptor.TYPE_SFIXED64, FieldDescriptor.TYPE_SINT64)
# field descriptor -> (JSON name, value converter, repeated)
_FIELDS: dict[Any, tuple[str, Callable[[Any], Any], bool]] = {}


def to_otlp_json(message: Any) -> dict[str, Any]:
    """`message` as MessageToDict has it (set fields only, JSON names, int64 as strings, enums by
    name, bytes base64, NaN/Infinity as strings), with the trace/span ids of spans, links and log
    records as lower-case hex (OTLP JSON)."""
    out = {}
    for fd, value in message.ListFields():
        name, convert, repeated = _FIELDS.get(fd) or _field_spec(fd)
        out[name] = [convert(v) for v in value] if repeated else convert(value)
    return out


def _key_value(kv: Any) -> dict[str, Any]:
    """A KeyValue (most of a span: its attributes), without ListFields when it is the usual
    key + value."""
    if not kv.key or kv.key_strindex or not kv.HasField("value"):
        return to_otlp_json(kv)
    return {"key": kv.key, "value": _any_value(kv.value)}


def _any_value(value: Any) -> dict[str, Any]:
    """An AnyValue: scalars directly, the rest (arrays, kvlists, bytes, unset) the general way."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return {"stringValue": value.string_value}
    if which == "int_value":
        return {"intValue": str(value.int_value)}
    if which == "bool_value":
        return {"boolValue": value.bool_value}
    if which == "double_value":
        return {"doubleValue": _double(value.double_value)}
    return to_otlp_json(value)


_MESSAGES: dict[str, Callable[[Any], dict[str, Any]]] = {
    "opentelemetry.proto.common.v1.KeyValue": _key_value, "opentelemetry.proto.common.v1.AnyValue": _any_value}


def _double(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _float(value: float) -> float | str:
    special = _double(value)
    return special if isinstance(special, str) else ToShortestFloat(value)


def _base64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _identity(value: Any) -> Any:
    return value


def _converter(fd: Any) -> Callable[[Any], Any]:
    """The converter of one value of field `fd` (MessageToDict's rules, ids as hex)."""
    kind = fd.type
    if kind in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
        # well-known types (Timestamp, Struct, wrappers...) have JSON forms of their own: not in
        # OTLP, left to MessageToDict should one appear
        name = fd.message_type.full_name
        return MessageToDict if name.startswith("google.protobuf.") else _MESSAGES.get(name, to_otlp_json)
    if kind == FieldDescriptor.TYPE_ENUM:
        names = {v.number: v.name for v in fd.enum_type.values}
        return lambda v: names.get(v, v)
    if kind == FieldDescriptor.TYPE_BYTES:
        ids = fd.name in _ID_FIELDS and fd.containing_type is not None and fd.containing_type.full_name in _ID_MESSAGES
        return bytes.hex if ids else _base64
    if kind in _INT64:
        return str
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return _double
    if kind == FieldDescriptor.TYPE_FLOAT:
        return _float
    return _identity


def _field_spec(fd: Any) -> tuple[str, Callable[[Any], Any], bool]:
    """(JSON name, converter, repeated) of a field descriptor, cached."""
    name = f"[{fd.full_name}]" if fd.is_extension else fd.json_name
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        value_of = _converter(fd.message_type.fields_by_name["value"])

        def as_map(entries: Any) -> dict[str, Any]:
            return {("true" if k else "false") if isinstance(k, bool) else str(k): value_of(entries[k]) for k in entries}

        spec: tuple[str, Callable[[Any], Any], bool] = (name, as_map, False)
    else:
        spec = (name, _converter(fd), bool(fd.is_repeated))
    _FIELDS[fd] = spec
    return spec


def decode(body: bytes, mtype: str, signal: str, workflow: str | None = None) -> Decoded:
    """An OTLP/HTTP export body (already decompressed) as cleaned OTLP JSON."""
    if mtype == PROTOBUF:
        request = _REQUESTS[signal]()
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise BadRequest(f"invalid protobuf {request.DESCRIPTOR.name}: {exc}") from None
        return _clean(to_otlp_json(request), signal, True, workflow)
    if mtype == JSON:
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise BadRequest(f"invalid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise BadRequest("invalid OTLP JSON: expected an object")
        try:
            return _clean(doc, signal, False, workflow)
        except (AttributeError, TypeError) as exc:  # a field of the wrong JSON type
            raise BadRequest(f"invalid OTLP JSON: {exc}") from None
    raise UnsupportedMedia(f"Content-Type {mtype or '(none)'!r} is not supported ({PROTOBUF} or {JSON})")


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

