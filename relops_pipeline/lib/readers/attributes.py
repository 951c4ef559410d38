"""Which span attributes fill which normalised field — one table for every reader.

OpenTelemetry GenAI (latest and legacy), OpenInference and the Vercel AI SDK name the same
facts differently. FIELD_KEYS lists, per normalised field, the attribute keys to try in
order. The Python readers use `map_attributes`; the SQL reader for OTLP builds its
coalesce() expressions from the same table, so the two can never disagree.
"""

from __future__ import annotations

import json
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
    ),
    "output_text": (
        "gen_ai.output.messages",
        "gen_ai.completion",
        "output.value",
        "ai.response.text",
        "ai.response.object",
        "ai.response.toolCalls",
        "gen_ai.tool.call.result",
    ),
    "feedback_score": ("relops.feedback", "user.feedback.score", "feedback.score"),
    "operation": ("gen_ai.operation.name", "openinference.span.kind", "ai.operationId"),
}

# Online scores: attributes under these prefixes become {"name": value}.
ONLINE_SCORE_PREFIXES = ("relops.score.", "eval.score.")

# gen_ai.operation.name / openinference.span.kind / Vercel operation -> normalised kind.
KIND_BY_OPERATION: dict[str, str] = {
    "chat": "llm",
    "text_completion": "llm",
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
}


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
    if isinstance(v, str) and v.lstrip().startswith(("[", "{")):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def _plain(v: Any) -> str | None:
    if v is None:
        return None
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


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


def map_attributes(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Normalised fields found in a flat attribute map (values already decoded from OTLP)."""
    scores = {
        k.split(".", 2)[-1]: _as_float(v)
        for k, v in attrs.items()
        if k.startswith(ONLINE_SCORE_PREFIXES) and _as_float(v) is not None
    }
    in_key, out_key = used_key(attrs, "input_text"), used_key(attrs, "output_text")
    in_msgs = out_msgs = None
    if in_key in ("gen_ai.input.messages", "gen_ai.prompt"):
        in_msgs = (system_messages(attrs.get("gen_ai.system_instructions")) + (genai_messages(attrs[in_key]) or [])) or None
    if out_key in ("gen_ai.output.messages", "gen_ai.completion"):
        out_msgs = genai_messages(attrs[out_key])
    finish = first_finish_reason(_first(attrs, "finish_reason"))
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
        "input_tokens": _as_int(_first(attrs, "input_tokens")),
        "output_tokens": _as_int(_first(attrs, "output_tokens")),
        "cost_usd": _as_float(_first(attrs, "cost_usd")),
        "finish_reason": finish,
        "error_type": _first(attrs, "error_type"),
        "input_text": _or(messages_text(in_msgs), as_text(_first(attrs, "input_text"))),
        "output_text": _or(messages_text(out_msgs), as_text(_first(attrs, "output_text"))),
        "input_messages": in_msgs,
        "output_messages": out_msgs,
        "feedback_score": _as_float(_first(attrs, "feedback_score")),
        "online_scores": scores or None,
        "kind": kind_of(_first(attrs, "operation")),
    }
