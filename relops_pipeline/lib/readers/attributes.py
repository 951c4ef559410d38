"""Which span attributes fill which normalised field — one table for every reader.

OpenTelemetry GenAI (latest and legacy), OpenInference, the Vercel AI SDK and the Langfuse v5
SDK (`langfuse.observation.*`) name the same facts differently. FIELD_KEYS lists, per
normalised field, the attribute keys to try in order; JSON_MEMBER_KEYS the members of JSON-text
attributes tried after them (Langfuse sends usage and cost as JSON objects). The Python readers
use `map_attributes`; the SQL reader for OTLP builds its coalesce() expressions from the same
tables, so the two can never disagree.

Langfuse v5: `langfuse.observation.type` names the kind (generation -> llm);
`langfuse.observation.input` is a message list (or `{"messages": [...], "tools": [...]}` when
tools are passed) and `langfuse.observation.output` one message (or plain text for streams):
both become messages and plain text like the GenAI message lists (LANGFUSE_INPUT /
LANGFUSE_OUTPUT). `langfuse.observation.metadata.finish_reason` is JSON text ("\"stop\"").
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from relops_pipeline.lib.readers.base import as_text, first_finish_reason

FIELD_KEYS: dict[str, tuple[str, ...]] = {
    "model": (
        "gen_ai.response.model",
        "gen_ai.request.model",
        "llm.model_name",
        "ai.response.model",
        "ai.model.id",
        "embedding.model_name",
        "ls_model_name",
        "langfuse.observation.model.name",
    ),
    "provider": (
        "gen_ai.provider.name",
        "gen_ai.system",
        "llm.provider",
        "llm.system",
        "ai.model.provider",
        "ls_provider",
    ),
    "input_tokens": (
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.prompt_tokens",
        "llm.token_count.prompt",
        "ai.usage.inputTokens",
        "ai.usage.promptTokens",
        "ai.usage.tokens",  # Vercel embed spans: the tokens of the embedded text
    ),
    "output_tokens": (
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.token_count.completion",
        "ai.usage.outputTokens",
        "ai.usage.completionTokens",
    ),
    "cost_usd": ("gen_ai.usage.cost", "llm.cost.total", "relops.cost_usd"),
    "finish_reason": (
        "gen_ai.response.finish_reasons",
        "llm.finish_reason",
        "ai.response.finishReason",
        "langfuse.observation.metadata.finish_reason",
        "gen_ai.completion.0.finish_reason",  # OpenLLMetry up to 0.54
    ),
    "error_type": ("error.type", "exception.type"),
    "input_text": (
        "gen_ai.input.messages",
        "gen_ai.prompt",
        "input.value",
        "ai.prompt.messages",
        "ai.prompt",
        "gen_ai.tool.call.arguments",
        "ai.values",  # Vercel embedMany / embed: the embedded text
        "ai.value",
        "langfuse.observation.input",
    ),
    "output_text": (
        "gen_ai.output.messages",
        "gen_ai.completion",
        "output.value",
        "ai.response.text",
        "ai.response.object",
        "ai.response.toolCalls",
        "gen_ai.tool.call.result",
        "langfuse.observation.output",
    ),
    "feedback_score": ("relops.feedback", "user.feedback.score", "feedback.score"),
    "operation": (
        "gen_ai.operation.name",
        "openinference.span.kind",
        "ai.operationId",
        "langfuse.observation.type",
        "llm.request.type",  # OpenLLMetry up to 0.54
    ),
}

# Members of JSON-text attributes, per field, tried when no FIELD_KEYS key has a value:
# (attribute key, member names in order). Langfuse's usage_details are {"input", "output"} or,
# from its OpenAI integration, the OpenAI usage object as sent.
JSON_MEMBER_KEYS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "input_tokens": (("langfuse.observation.usage_details", ("input", "prompt_tokens", "input_tokens")),),
    "output_tokens": (("langfuse.observation.usage_details", ("output", "completion_tokens", "output_tokens")),),
    "cost_usd": (("langfuse.observation.cost_details", ("total",)),),
}

# Message lists: the input / output keys whose value is read as messages (roles kept in
# input_messages / output_messages, their text in input_text / output_text).
GENAI_INPUT, GENAI_OUTPUT = ("gen_ai.input.messages", "gen_ai.prompt"), ("gen_ai.output.messages", "gen_ai.completion")
LANGFUSE_INPUT, LANGFUSE_OUTPUT = "langfuse.observation.input", "langfuse.observation.output"

# Online scores: attributes under these prefixes become {"name": value}.
ONLINE_SCORE_PREFIXES = ("relops.score.", "eval.score.")

# gen_ai.operation.name / openinference.span.kind / Vercel operation -> normalised kind.
KIND_BY_OPERATION: dict[str, str] = {
    "chat": "llm",
    "text_completion": "llm",
    "completion": "llm",  # llm.request.type
    "rerank": "retrieval",
    "generate_content": "llm",
    "embeddings": "llm",
    "llm": "llm",
    "embedding": "llm",
    "reranker": "retrieval",
    "retriever": "retrieval",
    "retrieval": "retrieval",
    "execute_tool": "tool",
    "tool": "tool",
    "invoke_agent": "agent",
    "create_agent": "agent",
    "agent": "agent",
    "chain": "agent",
    "workflow": "agent",
    "ai.generatetext.dogenerate": "llm",
    "ai.streamtext.dostream": "llm",
    "ai.generateobject.dogenerate": "llm",
    "ai.streamobject.dostream": "llm",
    "ai.embed.doembed": "llm",
    "ai.embedmany.doembed": "llm",
    "ai.generatetext": "agent",
    "ai.streamtext": "agent",
    "ai.generateobject": "agent",
    "ai.streamobject": "agent",
    "ai.embed": "agent",
    "ai.embedmany": "agent",
    "ai.toolcall": "tool",
    "generation": "llm",  # langfuse.observation.type
}


# error.type as a Python class repr ("<class 'openai.NotFoundError'>", opentelemetry-util-genai
# 1.x): the class name is kept. The same pattern in SQL (regexp_replace) and Python.
CLASS_REPR_SQL = r"^<class '([^']+)'>$"
_CLASS_REPR = re.compile(CLASS_REPR_SQL)


def error_type_name(value: Any) -> Any:
    """error.type with a class repr reduced to the class name; other values unchanged."""
    if isinstance(value, str) and (m := _CLASS_REPR.match(value)):
        return m.group(1)
    return value


def kind_of(operation: Any) -> str:
    if operation is None:
        return "other"
    return KIND_BY_OPERATION.get(str(operation).strip().lower(), "other")


def _first(attrs: Mapping[str, Any], field: str) -> Any:
    for key in FIELD_KEYS[field]:
        v = attrs.get(key)
        if v is not None and v != "":
            return v
    return None


def _as_int(v: Any) -> int | None:
    try:
        return int(float(v)) if v is not None else None
    except (TypeError, ValueError):
        return None


def _as_float(v: Any) -> float | None:
    try:
        return float(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def _json_value(v: Any) -> Any:
    """JSON text (an array, an object or a quoted string) decoded; anything else unchanged."""
    if isinstance(v, str) and v.lstrip().startswith(("[", "{", '"')):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def _plain(v: Any) -> str | None:
    if v is None:
        return None
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


def _text_as_given(v: Any) -> str | None:
    """An attribute as text; JSON text with \\uXXXX escapes re-serialised compactly with real
    Unicode (like otlp._unescaped, so that a search finds it)."""
    text = as_text(v)
    if text and "\\u" in text and text.lstrip()[:1] in ("[", "{"):
        try:
            return json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":"))
        except ValueError:
            return text
    return text


def _parts_text(parts: list) -> str | None:
    """The text parts' contents joined by newlines; None when there is no text part."""
    texts = [p.get("content") for p in parts if isinstance(p, Mapping) and p.get("type") == "text" and p.get("content") is not None]
    return "\n".join(_plain(t) or "" for t in texts) if texts else None


def genai_messages(value: Any) -> list[dict[str, Any]] | None:
    """[{"role", "content": plain text}] of a GenAI message list (`[{"role", "parts": [...]}]` or
    `[{"role", "content"}]`, possibly as JSON text), like schema.messages_sql; None otherwise."""
    value = _json_value(value)
    if not isinstance(value, list):
        return None
    out = []
    for m in value:
        if not isinstance(m, Mapping):
            return None
        parts = m.get("parts")
        content = _parts_text(parts) if isinstance(parts, list) else _plain(m.get("content"))
        out.append({"role": m.get("role"), "content": content})
    return out


def system_messages(value: Any) -> list[dict[str, Any]]:
    """gen_ai.system_instructions as a one-message list with role system (empty when no text)."""
    value = _json_value(value)
    text = _parts_text(value) if isinstance(value, list) else _plain(value)
    return [{"role": "system", "content": text}] if text else []


def messages_text(msgs: list[dict[str, Any]] | None) -> str | None:
    """The messages' non-empty contents joined by newlines (schema.messages_text_sql); None when
    no message has content."""
    if not msgs or all(m.get("content") is None for m in msgs):
        return None
    return "\n".join(m["content"] for m in msgs if m.get("content"))


def _or(a: str | None, b: str | None) -> str | None:
    return a if a is not None else b


def used_key(attrs: Mapping[str, Any], field: str) -> str | None:
    """Which FIELD_KEYS key fills `field` in a flat attribute map (the first non-empty)."""
    for key in FIELD_KEYS[field]:
        v = attrs.get(key)
        if v is not None and v != "":
            return key
    return None


def _member(attrs: Mapping[str, Any], field: str) -> Any:
    """FIELD_KEYS' value for `field`, else the first JSON_MEMBER_KEYS member with a value."""
    found = _first(attrs, field)
    if found is not None:
        return found
    for key, members in JSON_MEMBER_KEYS.get(field, ()):
        doc = _json_value(attrs.get(key))
        if isinstance(doc, Mapping):
            for m in members:
                if doc.get(m) is not None and doc.get(m) != "":
                    return doc[m]
    return None


def langfuse_input_messages(value: Any) -> list[dict[str, Any]] | None:
    """Messages of `langfuse.observation.input`: a message list, or {"messages": [...], ...}."""
    value = _json_value(value)
    if isinstance(value, Mapping) and isinstance(value.get("messages"), list):
        value = value["messages"]
    return genai_messages(value) if isinstance(value, list) else None


def langfuse_output_messages(value: Any) -> list[dict[str, Any]] | None:
    """Messages of `langfuse.observation.output`: one message object, or a message list."""
    value = _json_value(value)
    if isinstance(value, Mapping) and "role" in value:
        value = [value]
    return genai_messages(value) if isinstance(value, list) else None


def map_attributes(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Normalised fields found in a flat attribute map (values already decoded from OTLP)."""
    scores = {
        k.split(".", 2)[-1]: _as_float(v)
        for k, v in attrs.items()
        if k.startswith(ONLINE_SCORE_PREFIXES) and _as_float(v) is not None
    }
    in_key, out_key = used_key(attrs, "input_text"), used_key(attrs, "output_text")
    in_msgs = out_msgs = None
    if in_key in GENAI_INPUT:
        in_msgs = (system_messages(attrs.get("gen_ai.system_instructions")) + (genai_messages(attrs[in_key]) or [])) or None
    elif in_key == LANGFUSE_INPUT:
        in_msgs = langfuse_input_messages(attrs[in_key])
    if out_key in GENAI_OUTPUT:
        out_msgs = genai_messages(attrs[out_key])
    elif out_key == LANGFUSE_OUTPUT:
        out_msgs = langfuse_output_messages(attrs[out_key])
    finish = first_finish_reason(_json_value(_first(attrs, "finish_reason")))
    if finish is None and out_key == "gen_ai.output.messages":
        outs = _json_value(attrs[out_key])
        if isinstance(outs, list) and outs and isinstance(outs[0], Mapping) and outs[0].get("finish_reason"):
            finish = str(outs[0]["finish_reason"]).lower()
    model = _first(attrs, "model")
    if model is None and isinstance(params := _json_value(attrs.get("llm.invocation_parameters")), Mapping):
        model = params.get("model") or None
    return {
        "model": model,
        "provider": _first(attrs, "provider"),
        "input_tokens": _as_int(_member(attrs, "input_tokens")),
        "output_tokens": _as_int(_member(attrs, "output_tokens")),
        "cost_usd": _as_float(_member(attrs, "cost_usd")),
        "finish_reason": finish,
        "error_type": error_type_name(_first(attrs, "error_type")),
        "input_text": _or(messages_text(in_msgs), _text_as_given(_first(attrs, "input_text"))),
        "output_text": _or(messages_text(out_msgs), _text_as_given(_first(attrs, "output_text"))),
        "input_messages": in_msgs,
        "output_messages": out_msgs,
        "feedback_score": _as_float(_first(attrs, "feedback_score")),
        "online_scores": scores or None,
        "kind": kind_of(_first(attrs, "operation")),
    }
