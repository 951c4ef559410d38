"""Which span attributes fill which normalised field — one table for every reader.

OpenTelemetry GenAI (latest and legacy), OpenInference and the Vercel AI SDK name the same
facts differently. FIELD_KEYS lists, per normalised field, the attribute keys to try in
order. The Python readers use `map_attributes`; the SQL reader for OTLP builds its
coalesce() expressions from the same table, so the two can never disagree.
"""

from __future__ import annotations

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


def map_attributes(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Normalised fields found in a flat attribute map (values already decoded from OTLP)."""
    scores = {
        k.split(".", 2)[-1]: _as_float(v)
        for k, v in attrs.items()
        if k.startswith(ONLINE_SCORE_PREFIXES) and _as_float(v) is not None
    }
    return {
        "model": _first(attrs, "model"),
        "provider": _first(attrs, "provider"),
        "input_tokens": _as_int(_first(attrs, "input_tokens")),
        "output_tokens": _as_int(_first(attrs, "output_tokens")),
        "cost_usd": _as_float(_first(attrs, "cost_usd")),
        "finish_reason": first_finish_reason(_first(attrs, "finish_reason")),
        "error_type": _first(attrs, "error_type"),
        "input_text": as_text(_first(attrs, "input_text")),
        "output_text": as_text(_first(attrs, "output_text")),
        "feedback_score": _as_float(_first(attrs, "feedback_score")),
        "online_scores": scores or None,
        "kind": kind_of(_first(attrs, "operation")),
    }
