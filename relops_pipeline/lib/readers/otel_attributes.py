"""Reader for a flat OTel-GenAI or OpenInference attribute map of one span (FORMAT "otel-attributes").

The file is one JSON object whose keys are span attribute names (`gen_ai.*`, `llm.*`,
`openinference.*`, `input.value`, `ai.*`, ...) and whose values are scalars or arrays, as in
the OpenInference `genai-*.json` fixtures; a JSON array of such objects is read as one span per
object. Such a map carries no trace or span id and no timestamps: ids are derived from a hash of
the file content and the record index (stable across re-reads) and the span is marked with
`"relops.synthetic_ids": true`; with no times in the map, start and end are the file's
modification time (`"relops.time_source": "file_mtime"`), so the span lands on a day.

OpenInference flattened messages (`llm.input_messages.N.message.role`, `...message.content`,
`...message.contents.M.message_content.text`, `...message.tool_calls.M.tool_call.function.name`)
and OpenLLMetry's (up to 0.54: `gen_ai.prompt.N.role` / `.content`, `gen_ai.completion.N.content`,
`...tool_calls.M.name` / `.arguments`) are rebuilt into messages: input_messages and their text
for `input_text`; `llm.output_messages.N...` / `gen_ai.completion.N...` give the assistant's
text for `output_text` (the messages as JSON when they hold tool calls only).

This module also holds the small helpers the JSON document readers (Langfuse, LangSmith,
DeepEval, OTel-JS) share: peeking at the top-level keys of a file head, loading a document with
rejects instead of exceptions, turning message-shaped values into prompt / assistant text, and
the finish reason found in a model response.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from relops_pipeline.lib.readers.attributes import map_attributes, used_key
from relops_pipeline.lib.readers.base import (
    ReadContext,
    UnreadableInput,
    as_text,
    first_finish_reason,
    resolve_release,
    resolve_workflow,
    stage_rows,
)

FORMAT = "otel-attributes"

# --------------------------------------------------------------------------------------------
# Helpers shared by the JSON document readers
# --------------------------------------------------------------------------------------------


@dataclass
class HeadPeek:
    """What the first bytes of a file say about its top-level JSON structure."""

    container: str | None = None  # "object" | "array" | None (not JSON-looking)
    keys: list[str] = field(default_factory=list)  # keys of the object (or of the array's first object)
    values: dict[str, Any] = field(default_factory=dict)  # values that fit in the head, by key
    trailing_data: bool = False  # a second top-level value follows (JSON lines, not a document)
    complete: bool = False  # the whole first top-level value fits in the head


_WS = " \t\r\n"


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def peek_head(head: bytes) -> HeadPeek:
    """Scan the top-level keys of a (possibly truncated) JSON document head."""
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    dec = json.JSONDecoder()
    i = _skip_ws(text, 0)
    peek = HeadPeek()
    if i >= len(text) or text[i] not in "[{":
        return peek
    start = i
    if text[i] == "[":
        peek.container = "array"
        i = _skip_ws(text, i + 1)
        if i >= len(text) or text[i] != "{":
            return peek
    else:
        peek.container = "object"
    i += 1
    while True:
        i = _skip_ws(text, i)
        if i >= len(text) or text[i] != '"':
            break
        try:
            key, i = dec.raw_decode(text, i)
        except ValueError:
            break
        i = _skip_ws(text, i)
        if i >= len(text) or text[i] != ":":
            break
        peek.keys.append(key)
        i = _skip_ws(text, i + 1)
        try:
            value, i = dec.raw_decode(text, i)
        except ValueError:
            break
        peek.values[key] = value
        i = _skip_ws(text, i)
        if i < len(text) and text[i] == ",":
            i += 1
            continue
        break
    try:
        _, end = dec.raw_decode(text, start)
    except ValueError:
        return peek
    peek.complete = True
    rest = text[end:].strip()
    peek.trailing_data = bool(rest)
    return peek


def load_document(ctx: ReadContext, fmt_label: str) -> tuple[Any, list[dict]]:
    """Parse the file as one JSON document.

    Returns (document, []) or (None, [reject]) when the bytes are not valid UTF-8 JSON: a
    corrupt file of the right kind is recorded as one reject with source_line NULL rather than
    an exception, so it lands in quarantine with its reason.
    """
    try:
        data = ctx.path.read_bytes()
    except OSError as exc:
        raise UnreadableInput(f"cannot read {ctx.path}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return None, [{"source_line": None, "raw": data[:16384].decode("utf-8", "replace"),
                       "reason": f"{fmt_label}: file is not valid UTF-8 ({exc.reason} at byte {exc.start})"}]
    try:
        return json.loads(text), []
    except json.JSONDecodeError as exc:
        return None, [{"source_line": None, "raw": text,
                       "reason": f"{fmt_label}: invalid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}"}]


def decode_json_text(value: Any, depth: int = 3) -> Any:
    """Values that are JSON text (an object, an array or a quoted string) decoded; others unchanged.

    Real exports nest JSON in strings, sometimes twice (Langfuse metadata, Vercel
    `ai.prompt.messages` = "\\"[{...}]\\""), so this unwraps up to `depth` levels.
    """
    while depth > 0 and isinstance(value, str):
        s = value.strip()
        if not s or s[0] not in '[{"' or s[-1] not in ']}"':
            return value
        try:
            value = json.loads(s)
        except ValueError:
            return value
        depth -= 1
    return value


def parse_loose(value: Any) -> Any:
    """JSON text or a Python-repr literal (Langfuse's trace.scores) decoded; else unchanged."""
    decoded = decode_json_text(value)
    if isinstance(decoded, str) and decoded.strip()[:1] in ("[", "{"):
        try:
            return ast.literal_eval(decoded.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return value
    return decoded


_ASSISTANT_ROLES = {"assistant", "ai", "model", "bot"}
_TEXT_PART_TYPES = {"text", "output_text", "input_text"}


def _part_texts(part: Any) -> list[str]:
    if isinstance(part, str):
        return [part]
    if not isinstance(part, Mapping):
        return []
    ptype = str(part.get("type") or part.get("block_type") or "text").lower()
    if ptype not in _TEXT_PART_TYPES:
        return []
    for key in ("text", "content"):
        if isinstance(part.get(key), str):
            return [part[key]]
    return []


def _texts(value: Any, depth: int = 0) -> list[str]:
    """Text pieces of a message-shaped value (OpenAI, Anthropic, Gemini, GenAI parts, LangChain)."""
    if depth > 8 or value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        items = value
        roles = [str(m.get("role", "")).lower() for m in value if isinstance(m, Mapping)]
        if any(r in _ASSISTANT_ROLES for r in roles):
            items = [m for m in value if isinstance(m, Mapping) and str(m.get("role", "")).lower() in _ASSISTANT_ROLES]
        out: list[str] = []
        for item in items:
            out.extend(_texts(item, depth + 1))
        return out
    if not isinstance(value, Mapping):
        return []
    if isinstance(value.get("choices"), list) and value["choices"]:
        c = value["choices"][0]
        if isinstance(c, Mapping):
            for key in ("message", "delta"):
                if isinstance(c.get(key), Mapping):
                    return _texts(c[key], depth + 1)
            if isinstance(c.get("text"), str):
                return [c["text"]]
        return []
    if isinstance(value.get("candidates"), list) and value["candidates"]:
        c = value["candidates"][0]
        return _texts(c.get("content"), depth + 1) if isinstance(c, Mapping) else []
    if isinstance(value.get("generations"), list) and value["generations"]:
        g = value["generations"][0]
        g = g[0] if isinstance(g, list) and g else g
        if isinstance(g, Mapping):
            return [g["text"]] if isinstance(g.get("text"), str) else _texts(g.get("message"), depth + 1)
        return []
    if isinstance(value.get("output"), list) and any(
        isinstance(o, Mapping) and o.get("type") == "message" for o in value["output"]
    ):
        return _texts([o for o in value["output"] if isinstance(o, Mapping) and o.get("type") == "message"], depth + 1)
    if isinstance(value.get("message"), Mapping):
        return _texts(value["message"], depth + 1)
    if isinstance(value.get("kwargs"), Mapping):
        return _texts(value["kwargs"], depth + 1)
    if isinstance(value.get("parts"), list):
        return [t for p in value["parts"] for t in _part_texts(p)]
    if isinstance(value.get("blocks"), list):
        return [t for p in value["blocks"] for t in _part_texts(p)]
    content = value.get("content")
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [t for p in content for t in _part_texts(p)]
    if isinstance(content, Mapping):
        return _texts(content, depth + 1)
    if isinstance(value.get("text"), str):
        return [value["text"]]
    return []


def message_text(value: Any) -> str | None:
    """The assistant's plain text in a message-shaped value (text parts joined), or None."""
    texts = [t for t in _texts(value) if t]
    return "\n".join(texts) if texts else None


def output_text_of(value: Any) -> str | None:
    """output_text convention: the assistant's plain text when it can be extracted, else
    compact JSON; a plain (non-JSON) string stays as given."""
    if value is None:
        return None
    decoded = decode_json_text(value)
    if decoded is None:
        return None
    if isinstance(decoded, str):
        return decoded
    if not isinstance(decoded, (list, dict)):
        return value if isinstance(value, str) else as_text(decoded)
    return message_text(decoded) or as_text(decoded)


def input_text_of(value: Any) -> str | None:
    """input_text convention: the prompt as given; structured prompts as compact JSON text."""
    if value is None:
        return None
    decoded = decode_json_text(value)
    if decoded is None:
        return None
    if isinstance(decoded, str):
        return decoded
    if isinstance(decoded, list):
        # Vercel's ai.values holds each embedded text JSON-encoded once more.
        decoded = [decode_json_text(x) if isinstance(x, str) else x for x in decoded]
    if isinstance(decoded, (list, dict)):
        return as_text(decoded) if decoded else None
    return value if isinstance(value, str) else as_text(decoded)


_FINISH_KEYS = ("finish_reason", "finishReason", "stop_reason", "stopReason")
# google.genai FinishReason enum values, as raw Vertex/Gemini responses serialise them.
_GEMINI_FINISH = {1: "stop", 2: "max_tokens", 3: "safety", 4: "recitation", 5: "other", 6: "blocklist",
                  7: "prohibited_content", 8: "spii", 9: "malformed_function_call"}


def finish_reason_of(value: Any, depth: int = 0) -> str | None:
    """The (first) finish reason a model response or output message list reports, lower case."""
    value = decode_json_text(value)
    if depth > 5 or value is None:
        return None
    if isinstance(value, list):
        for item in reversed(value):
            found = finish_reason_of(item, depth + 1) if isinstance(item, (dict, list)) else None
            if found:
                return found
        return None
    if not isinstance(value, Mapping):
        return None
    for key in _FINISH_KEYS:
        v = value.get(key)
        if isinstance(v, Mapping):  # LangSmith JS streams put the whole final chunk here
            found = finish_reason_of(v, depth + 1)
            if found:
                return found
        elif v not in (None, "", []):
            return first_finish_reason(v)
    if isinstance(value.get("choices"), list) and value["choices"]:
        return finish_reason_of(value["choices"][0], depth + 1)
    if isinstance(value.get("candidates"), list) and value["candidates"]:
        c = value["candidates"][0]
        if isinstance(c, Mapping):
            code = c.get("finish_reason", c.get("finishReason"))
            if isinstance(code, int) and not isinstance(code, bool):
                return _GEMINI_FINISH.get(code)
        return finish_reason_of(c, depth + 1)
    for key in ("response_metadata", "kwargs", "message", "generation_info"):
        if isinstance(value.get(key), Mapping):
            found = finish_reason_of(value[key], depth + 1)
            if found:
                return found
    return None


def text_from_attributes(attrs: Mapping[str, Any]) -> tuple[str | None, str | None, set[str]]:
    """(input_text, output_text, keys used) from the FIELD_KEYS text attributes of a flat map,
    with structured values decoded (output: the assistant's text when extractable)."""
    used: set[str] = set()
    k_in, k_out = used_key(attrs, "input_text"), used_key(attrs, "output_text")
    input_text = output_text = None
    if k_in:
        used.add(k_in)
        input_text = input_text_of(attrs[k_in])
    if k_out:
        used.add(k_out)
        output_text = output_text_of(attrs[k_out])
    return input_text, output_text, used


def flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects flattened to dotted keys (arrays and scalars kept as values)."""
    out: dict[str, Any] = {}
    for k, v in value.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def as_int(v: Any) -> int | None:
    """Token counts arrive as ints, floats (13.0) or strings ("13")."""
    if v is None or isinstance(v, bool):
        return None
    try:
        return int(round(float(v)))
    except (TypeError, ValueError, OverflowError):
        return None


def as_float(v: Any) -> float | None:
    """A number from a number or numeric string; None for anything else (booleans, NaN)."""
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f == f else None  # NaN is no number here


# Span names that say what a generic span is, for formats whose span type does not
# (Langfuse SPAN, DeepEval base): checked only when no attribute names the operation.
_AGENT_NAME = re.compile(r"agent|chain|workflow|graph|pipeline|orchestrat|invocation|runnable", re.I)
_TOOL_NAME = re.compile(r"^(execute_tool\b|running tool\b|function tool\b|tool[._:\s])", re.I)
_RETRIEVAL_NAME = re.compile(r"^_?retriev", re.I)


def kind_from_name(name: Any) -> str:
    """agent / tool / retrieval / other from a generic span's name."""
    if not isinstance(name, str) or not name:
        return "other"
    if _TOOL_NAME.search(name):
        return "tool"
    if _RETRIEVAL_NAME.search(name):
        return "retrieval"
    if _AGENT_NAME.search(name):
        return "agent"
    return "other"


_FEEDBACK_NAMES = {"user_feedback", "feedback", "thumbs", "thumbs_up", "thumb", "user_score", "user_rating"}


def is_feedback_name(name: Any) -> bool:
    """Whether a score name denotes end-user feedback (thumbs up/down) rather than an evaluator."""
    return isinstance(name, str) and re.sub(r"[\s\-]+", "_", name.strip().lower()) in _FEEDBACK_NAMES


def feedback_value(value: Any) -> float | None:
    """User feedback in [0, 1] (booleans: 1/0); values outside that range are not feedback."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    f = as_float(value)
    return f if f is not None and 0.0 <= f <= 1.0 else None


_ERROR_TYPE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|Timeout|Failure)\w*)")


def error_type_of(message: Any) -> str | None:
    """The exception type named at the start of an error message ("openai.RateLimitError: ...",
    "ValueError('x')"), else the message's first line (capped)."""
    if message is None or message == "":
        return None
    text = message if isinstance(message, str) else as_text(message) or ""
    m = _ERROR_TYPE.match(text)
    if m:
        return m.group(1)
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first[:200] or None


def synthetic_ids(content: bytes, index: int) -> tuple[str, str]:
    """(trace_id, span_id) derived from the file content and the record index: stable re-reads."""
    digest = hashlib.sha256(content + b"\x00" + str(index).encode()).hexdigest()
    return digest[:32], digest[32:48]


def compact_attributes(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Drop empty values (None, "", {}, []) that carry no information."""
    return {k: v for k, v in attrs.items() if v is not None and v != "" and v != {} and v != []}


def merged_scores(*maps: Mapping[str, Any] | None) -> dict[str, float] | None:
    """Numeric entries of score maps merged (later maps win), or None when there are none."""
    out: dict[str, float] = {}
    for m in maps:
        for k, v in (m or {}).items():
            f = as_float(v)
            if f is not None:
                out[str(k)] = f
    return out or None


# --------------------------------------------------------------------------------------------
# The otel-attributes reader
# --------------------------------------------------------------------------------------------

_ATTR_PREFIXES = (
    "gen_ai.",
    "llm.",
    "openinference.",
    "input.value",
    "output.value",
    "embedding.",
    "retrieval.",
    "ai.operationId",
    "ai.model.",
)


def _is_scalar_or_list(v: Any) -> bool:
    return not isinstance(v, dict)


def sniff(head: bytes, path) -> bool:
    """A single flat JSON object (or an array of them) keyed by GenAI / OpenInference attribute
    names, with scalar or array values only (no ids, no nested objects)."""
    peek = peek_head(head)
    if peek.container is None or peek.trailing_data or not peek.keys:
        return False
    if "spanContext" in peek.keys or "resourceSpans" in peek.keys or "resourceLogs" in peek.keys:
        return False
    if not any(k.startswith(_ATTR_PREFIXES) for k in peek.keys):
        return False
    return all(_is_scalar_or_list(v) for v in peek.values.values())


_MSG_KEY = re.compile(r"^llm\.(input|output)_messages\.(\d+)\.message\.(.+)$")
_INDEXED_KEY = re.compile(r"^gen_ai\.(prompt|completion)\.(\d+)\.(.+)$")  # OpenLLMetry up to 0.54
_CONTENT_KEY = re.compile(r"^contents\.(\d+)\.message_content\.(.+)$")
_TOOL_KEY = re.compile(r"^tool_calls\.(\d+)\.(?:tool_call\.)?(.+)$")


def _message_key(key: str) -> tuple[str, int, str] | None:
    """(side, index, rest) of a flattened message key, OpenInference or OpenLLMetry; else None."""
    m = _MSG_KEY.match(key)
    if m:
        return m.group(1), int(m.group(2)), m.group(3)
    m = _INDEXED_KEY.match(key)
    if m:
        return ("input" if m.group(1) == "prompt" else "output"), int(m.group(2)), m.group(3)
    return None


def unflatten_messages(attrs: Mapping[str, Any]) -> tuple[list[dict] | None, list[dict] | None, set[str]]:
    """Rebuild OpenInference `llm.input_messages.N.message.*` / `llm.output_messages.N.*` keys, and
    OpenLLMetry's `gen_ai.prompt.N.*` / `gen_ai.completion.N.*` (releases up to 0.54), into message
    lists: {"role", "content", "contents": [{"type", "text"}], "tool_calls": [{"id", "function":
    {"name", "arguments"}}], ...}."""
    found: dict[str, dict[int, dict]] = {"input": {}, "output": {}}
    used: set[str] = set()
    for key, value in attrs.items():
        parsed = _message_key(key)
        if parsed is None:
            continue
        used.add(key)
        side, n, rest = parsed
        msg = found[side].setdefault(n, {})
        cm, tm = _CONTENT_KEY.match(rest), _TOOL_KEY.match(rest)
        if cm:
            parts = msg.setdefault("_contents", {})
            parts.setdefault(int(cm.group(1)), {})[cm.group(2)] = value
        elif tm:
            calls = msg.setdefault("_tool_calls", {})
            call = calls.setdefault(int(tm.group(1)), {})
            sub = tm.group(2)
            if sub.startswith("function."):
                call.setdefault("function", {})[sub[len("function."):]] = value
            elif sub in ("name", "arguments"):  # OpenLLMetry: tool_calls.M.name / .arguments
                call.setdefault("function", {})[sub] = value
            else:
                call[sub] = value
        else:
            msg[rest] = value

    def build(side: str) -> list[dict] | None:
        if not found[side]:
            return None
        out = []
        for n in sorted(found[side]):
            msg = dict(found[side][n])
            contents = msg.pop("_contents", None)
            calls = msg.pop("_tool_calls", None)
            if contents:
                msg["contents"] = [contents[i] for i in sorted(contents)]
            if calls:
                msg["tool_calls"] = [calls[i] for i in sorted(calls)]
            out.append(msg)
        return out

    return build("input"), build("output"), used


def _messages_text(messages: list[dict]) -> str | None:
    texts: list[str] = []
    for msg in messages:
        if isinstance(msg.get("content"), str) and msg["content"]:
            texts.append(msg["content"])
        for part in msg.get("contents") or []:
            if str(part.get("type", "text")).lower() == "text" and isinstance(part.get("text"), str) and part["text"]:
                texts.append(part["text"])
    return "\n".join(texts) if texts else None


def span_row(attrs: Mapping[str, Any], ctx: ReadContext, fmt: str, pseudo: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Normalised fields of one flat attribute map (no ids or times): shared by the OTel-JS
    reader. `pseudo` are format fields (ids, status) the caller adds; they are not attributes."""
    mapped = map_attributes(attrs)
    in_msgs, out_msgs, used = unflatten_messages(attrs)
    input_text, output_text, text_keys = text_from_attributes(attrs)
    used |= text_keys
    # One shape for every source: the plain text of the messages, the roles in *_messages.
    input_messages, output_messages = mapped["input_messages"], mapped["output_messages"]
    if input_messages:
        input_text = mapped["input_text"]
    if output_messages and mapped["output_text"] is not None:
        output_text = mapped["output_text"]
    if in_msgs:
        # tool calls (their keys are not kept as attributes) stay with their message
        input_messages = [
            {"role": m.get("role"), "content": _messages_text([m]), **({"tool_calls": m["tool_calls"]} if m.get("tool_calls") else {})}
            for m in in_msgs
        ]
        input_text = _messages_text(in_msgs) or as_text(in_msgs)
    if out_msgs:
        output_messages = [{"role": m.get("role"), "content": _messages_text([m])} for m in out_msgs]
        output_text = _messages_text(out_msgs) or as_text(out_msgs)
    finish = mapped["finish_reason"]
    if finish is None:
        for key in ("gen_ai.output.messages", "gen_ai.completion", "output.value", "output"):
            if key in attrs:
                finish = finish_reason_of(attrs[key])
                if finish:
                    break
    remaining = {k: v for k, v in attrs.items() if k not in used}
    resolve_on = {**attrs, **(pseudo or {})}
    return {
        "kind": mapped["kind"],
        "workflow": resolve_workflow(resolve_on, ctx.settings),
        "release": resolve_release(resolve_on, ctx.settings),
        "model": as_text(mapped["model"]),
        "provider": as_text(mapped["provider"]),
        "input_tokens": mapped["input_tokens"],
        "output_tokens": mapped["output_tokens"],
        "cost_usd": mapped["cost_usd"],
        "finish_reason": finish,
        "error_type": as_text(mapped["error_type"]),
        "input_text": input_text,
        "output_text": output_text,
        "input_messages": input_messages,
        "output_messages": output_messages,
        "feedback_score": mapped["feedback_score"],
        "online_scores": mapped["online_scores"],
        "attributes": remaining,
        "source_format": fmt,
    }


def _span_name(attrs: Mapping[str, Any], row: Mapping[str, Any]) -> str | None:
    """The GenAI convention's span name "{operation} {model or tool}", else the OpenInference kind."""
    op = attrs.get("gen_ai.operation.name")
    if op:
        target = attrs.get("gen_ai.tool.name") or attrs.get("gen_ai.request.model") or row.get("model")
        return f"{op} {target}" if target else str(op)
    kind = attrs.get("openinference.span.kind")
    return str(kind) if kind else None


def read(con, ctx: ReadContext) -> None:
    """Stage one span per attribute map in the file (synthetic, content-derived ids)."""
    doc, rejects = load_document(ctx, "otel-attributes")
    if doc is None:
        stage_rows(con, [], rejects)
        return
    records = doc if isinstance(doc, list) else [doc]
    if isinstance(doc, dict) and not any(str(k).startswith(_ATTR_PREFIXES) for k in doc):
        raise UnreadableInput(f"{ctx.path}: not a flat OTel-GenAI / OpenInference attribute map")
    content = ctx.path.read_bytes()
    rows: list[dict] = []
    for index, rec in enumerate(records, start=1):
        if not isinstance(rec, dict):
            rejects.append({"source_line": index, "raw": rec,
                            "reason": f"record {index}: expected an attribute map (JSON object), got {type(rec).__name__}"})
            continue
        if not rec:
            rejects.append({"source_line": index, "raw": rec, "reason": f"record {index}: empty attribute map"})
            continue
        attrs = flatten(rec)
        # The upstream GenAI fixtures carry the raw request/response as plain `input`/`output`.
        fallback_in, fallback_out = attrs.get("input"), attrs.get("output")
        row = span_row(attrs, ctx, FORMAT)
        if row["input_text"] is None and fallback_in is not None:
            row["input_text"] = input_text_of(fallback_in)
            row["attributes"].pop("input", None)
        if row["output_text"] is None and fallback_out is not None:
            row["output_text"] = output_text_of(fallback_out)
            row["attributes"].pop("output", None)
        if row["finish_reason"] is None and fallback_out is not None:
            row["finish_reason"] = finish_reason_of(fallback_out)
        trace_id, span_id = synthetic_ids(content, index)
        exported_at = datetime.fromtimestamp(ctx.path.stat().st_mtime, tz=UTC).replace(tzinfo=None)
        row.update(
            trace_id=trace_id,
            span_id=span_id,
            span_name=_span_name(attrs, row),
            status="error" if row["error_type"] else "unset",
            source_line=index,
        )
        row["attributes"]["relops.synthetic_ids"] = True
        if row.get("start_time") is None:
            # A bare attribute map carries no time; the file's modification time (when the map was
            # exported) places the span on a day, and the attributes say where it came from.
            row["start_time"] = row["end_time"] = exported_at
            row["attributes"]["relops.time_source"] = "file_mtime"
        rows.append(row)
    stage_rows(con, rows, rejects)


__all__ = [
    "FORMAT",
    "HeadPeek",
    "as_float",
    "as_int",
    "compact_attributes",
    "decode_json_text",
    "error_type_of",
    "feedback_value",
    "finish_reason_of",
    "flatten",
    "input_text_of",
    "is_feedback_name",
    "kind_from_name",
    "load_document",
    "merged_scores",
    "message_text",
    "output_text_of",
    "parse_loose",
    "peek_head",
    "read",
    "sniff",
    "span_row",
    "synthetic_ids",
    "text_from_attributes",
    "unflatten_messages",
    "used_key",
]
