"""Reader for DeepEval / Confident AI trace documents (FORMAT "deepeval").

Shape: a trace `{uuid, name, startTime, endTime, status, environment, threadId, userId, tags,
metadata, input, output, baseSpans[], agentSpans[], llmSpans[], retrieverSpans[], toolSpans[]}`,
a JSON array of traces, or a DeepEval test run `{testCases: [{name, input, actualOutput,
success, metricsData[], trace?}], conversationalTestCases: [...], ...}` whose test cases carry
their trace. Every span of every group is one staged span; a trace without spans becomes one
span of its own (span id = trace uuid, kind agent). A test case without a trace holds eval
results only, no span: it is rejected with that reason. `source_line` is the 1-based index of
the record (span, or test case without trace) in the file.

Mapping: span type llm -> llm, agent -> agent, tool -> tool, retriever -> retrieval, base ->
by name (agent / tool / retrieval), else other. trace_id = trace uuid (span.traceUuid when
given); parent = parentUuid. status SUCCESS -> ok, ERRORED -> error (error_type from the
span's `error` message). Tokens: inputTokenCount / outputTokenCount (floats in real files).
cost_usd = costPerInputToken x input tokens + costPerOutputToken x output tokens when both are
reported. metricsData scores -> online_scores of their span (trace-level metrics -> the root
spans; a test case's metrics when its trace has none). workflow pseudo-attribute:
`deepeval.name` (trace name); release: `deepeval.prompt_version` ("promptAlias@promptVersion"
of the span's prompt, else of the trace's first prompted span).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeGuard

from relops_pipeline.lib.readers.attributes import map_attributes
from relops_pipeline.lib.readers.base import (
    ReadContext,
    UnreadableInput,
    as_text,
    resolve_release,
    resolve_workflow,
    stage_rows,
    to_utc_naive,
)
from relops_pipeline.lib.readers.otel_attributes import (
    as_float,
    as_int,
    compact_attributes,
    error_type_of,
    feedback_value,
    finish_reason_of,
    flatten,
    input_text_of,
    is_feedback_name,
    kind_from_name,
    load_document,
    merged_scores,
    output_text_of,
    peek_head,
)

FORMAT = "deepeval"

SPAN_GROUPS = ("baseSpans", "agentSpans", "llmSpans", "retrieverSpans", "toolSpans")
_TYPE_KIND = {"llm": "llm", "agent": "agent", "tool": "tool", "retriever": "retrieval"}
_GROUP_KIND = {"agentSpans": "agent", "llmSpans": "llm", "retrieverSpans": "retrieval", "toolSpans": "tool"}
_TEST_RUN_KEYS = ("testCases", "conversationalTestCases")
# Span fields that become normalised columns; the rest go to attributes as deepeval.<field>.
_SPAN_FIELDS = {
    "uuid", "parentUuid", "traceUuid", "name", "type", "status", "startTime", "endTime", "input",
    "output", "metadata", "model", "provider", "inputTokenCount", "outputTokenCount", "error",
    "metricsData", "costPerInputToken", "costPerOutputToken",
}


def sniff(head: bytes, path) -> bool:
    """A trace with span groups (baseSpans, llmSpans, ...), an array of them, or a test run."""
    peek = peek_head(head)
    if peek.container is None or peek.trailing_data:
        return False
    keys = set(peek.keys)
    if keys & set(SPAN_GROUPS):
        return True
    if "uuid" in keys and any(f'"{g}"'.encode() in head for g in SPAN_GROUPS):
        return True
    return peek.container == "object" and bool(keys & set(_TEST_RUN_KEYS))


def _is_trace(obj: Any) -> TypeGuard[dict[str, Any]]:
    return isinstance(obj, dict) and any(g in obj for g in SPAN_GROUPS)


def _metrics(value: Any) -> tuple[dict[str, float] | None, float | None]:
    """(online scores, user feedback) of a metricsData list."""
    scores: dict[str, float] = {}
    feedback = None
    for m in value or []:
        if not isinstance(m, dict) or not m.get("name"):
            continue
        score = as_float(m.get("score"))
        if score is None:
            continue
        scores[str(m["name"])] = score
        if is_feedback_name(m["name"]) and feedback_value(score) is not None:
            feedback = feedback_value(score)
    return scores or None, feedback


def _prompt_version(span: Mapping[str, Any]) -> str | None:
    version = span.get("promptVersion")
    if version in (None, ""):
        return None
    alias = span.get("promptAlias")
    return f"{alias}@{version}" if alias else str(version)


def _cost(span: Mapping[str, Any], inp: int | None, out: int | None) -> float | None:
    per_in, per_out = as_float(span.get("costPerInputToken")), as_float(span.get("costPerOutputToken"))
    if per_in is None or per_out is None or inp is None or out is None:
        return None
    return per_in * inp + per_out * out


def _span_row(
    span: Mapping[str, Any],
    group: str,
    trace: Mapping[str, Any],
    trace_flat: Mapping[str, Any],
    trace_prompt: str | None,
    index: int,
    ctx: ReadContext,
) -> dict[str, Any]:
    md = span.get("metadata")
    md_flat = flatten(md) if isinstance(md, dict) else ({"deepeval.metadata": md} if md is not None else {})
    extras = {f"deepeval.{k}": v for k, v in span.items() if k not in _SPAN_FIELDS}
    flat = {**trace_flat, **md_flat}
    mapped = map_attributes(flat)
    span_type = str(span.get("type") or "").lower()
    kind = None if span_type == "base" else (_TYPE_KIND.get(span_type) or _GROUP_KIND.get(group))
    if not kind:
        kind = mapped["kind"] if mapped["kind"] != "other" else kind_from_name(span.get("name"))
    inp, out = as_int(span.get("inputTokenCount")), as_int(span.get("outputTokenCount"))
    status = str(span.get("status") or "").upper()
    error = span.get("error")
    is_error = status in ("ERRORED", "ERROR", "FAILED") or bool(error)
    scores, feedback = _metrics(span.get("metricsData"))
    pseudo = {
        "deepeval.prompt_version": _prompt_version(span) or trace_prompt,
        "deepeval.span_type": span.get("type"),
        "deepeval.status": span.get("status"),
        "deepeval.error": error,
        "deepeval.cost_per_input_token": span.get("costPerInputToken"),
        "deepeval.cost_per_output_token": span.get("costPerOutputToken"),
        **extras,
    }
    resolve_on = {**flat, **pseudo}
    return {
        "trace_id": as_text(trace.get("uuid") or span.get("traceUuid")),
        "span_id": as_text(span.get("uuid")),
        "parent_span_id": as_text(span.get("parentUuid")),
        "span_name": as_text(span.get("name")),
        "kind": kind,
        "workflow": resolve_workflow(resolve_on, ctx.settings),
        "release": resolve_release(resolve_on, ctx.settings),
        "model": as_text(span.get("model") or mapped["model"]),
        "provider": as_text(span.get("provider") or mapped["provider"]),
        "start_time": to_utc_naive(span.get("startTime")),
        "end_time": to_utc_naive(span.get("endTime")),
        "input_tokens": inp if inp is not None else mapped["input_tokens"],
        "output_tokens": out if out is not None else mapped["output_tokens"],
        "cost_usd": _cost(span, inp, out),
        "finish_reason": mapped["finish_reason"] or finish_reason_of(md) or finish_reason_of(span.get("output")),
        "status": "error" if is_error else ("ok" if status == "SUCCESS" else "unset"),
        "error_type": (as_text(mapped["error_type"]) or error_type_of(error)) if is_error else None,
        "input_text": input_text_of(span.get("input")),
        "output_text": output_text_of(span.get("output")),
        "feedback_score": feedback if feedback is not None else mapped["feedback_score"],
        "online_scores": merged_scores(mapped["online_scores"], scores),
        "attributes": compact_attributes({**flat, **pseudo}),
        "source_format": FORMAT,
        "source_line": index,
    }


def _trace_flat(trace: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    md = trace.get("metadata")
    md_flat = flatten(md) if isinstance(md, dict) else ({"deepeval.metadata": md} if md is not None else {})
    return compact_attributes({
        **md_flat,
        "deepeval.trace_uuid": trace.get("uuid"),
        "deepeval.name": trace.get("name"),
        "deepeval.environment": trace.get("environment"),
        "deepeval.thread_id": trace.get("threadId"),
        "deepeval.user_id": trace.get("userId"),
        "deepeval.tags": trace.get("tags") or None,
        "deepeval.trace_status": trace.get("status"),
        **(extra or {}),
    })


def _read_trace(
    trace: Mapping[str, Any],
    index: int,
    ctx: ReadContext,
    rows: list[dict],
    rejects: list[dict],
    extra: Mapping[str, Any] | None = None,
    fallback_metrics: Any = None,
) -> int:
    """Stage the spans of one trace; returns the last record index used."""
    trace_flat = _trace_flat(trace, extra)
    spans: list[tuple[str, Any]] = [(g, s) for g in SPAN_GROUPS for s in (trace.get(g) or [])]
    for g in SPAN_GROUPS:
        if trace.get(g) is not None and not isinstance(trace.get(g), list):
            index += 1
            rejects.append({"source_line": index, "raw": trace.get(g), "reason": f"'{g}' is not a list of spans"})
            spans = [(gg, s) for gg, s in spans if gg != g]
    trace_prompt = next((_prompt_version(s) for _, s in spans if isinstance(s, dict) and _prompt_version(s)), None)
    trace_rows: list[dict] = []
    if not spans:
        index += 1
        if not trace.get("uuid"):
            rejects.append({"source_line": index, "raw": trace, "reason": "trace without uuid and without spans"})
            return index
        trace_rows.append(_trace_only_row(trace, trace_flat, index, ctx))
    for group, span in spans:
        index += 1
        if not isinstance(span, dict):
            rejects.append({"source_line": index, "raw": span, "reason": f"{group} entry is a {type(span).__name__}, not a span object"})
            continue
        missing = [n for n, v in (("uuid", span.get("uuid")), ("trace uuid", trace.get("uuid") or span.get("traceUuid"))) if not v]
        if missing:
            rejects.append({"source_line": index, "raw": span, "reason": f"span without {' and '.join(missing)}"})
            continue
        trace_rows.append(_span_row(span, group, trace, trace_flat, trace_prompt, index, ctx))
    scores, feedback = _metrics(trace.get("metricsData") or fallback_metrics)
    if scores:
        ids = {r["span_id"] for r in trace_rows}
        for row in trace_rows:
            if not row.get("parent_span_id") or row["parent_span_id"] not in ids:
                row["online_scores"] = merged_scores(scores, row.get("online_scores"))
                if feedback is not None and row.get("feedback_score") is None:
                    row["feedback_score"] = feedback
    rows.extend(trace_rows)
    return index


def _trace_only_row(trace: Mapping[str, Any], trace_flat: Mapping[str, Any], index: int, ctx: ReadContext) -> dict:
    status = str(trace.get("status") or "").upper()
    pseudo = {"deepeval.trace_only": True}
    resolve_on = {**trace_flat, **pseudo}
    return {
        "trace_id": as_text(trace.get("uuid")),
        "span_id": as_text(trace.get("uuid")),
        "span_name": as_text(trace.get("name")),
        "kind": "agent",
        "workflow": resolve_workflow(resolve_on, ctx.settings),
        "release": resolve_release(resolve_on, ctx.settings),
        "start_time": to_utc_naive(trace.get("startTime")),
        "end_time": to_utc_naive(trace.get("endTime")),
        "status": "error" if status == "ERRORED" else ("ok" if status == "SUCCESS" else "unset"),
        "input_text": input_text_of(trace.get("input")),
        "output_text": output_text_of(trace.get("output")),
        "attributes": compact_attributes({**trace_flat, **pseudo}),
        "source_format": FORMAT,
        "source_line": index,
    }


def _test_cases(doc: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    for key in _TEST_RUN_KEYS:
        for case in doc.get(key) or []:
            yield key, case


def read(con, ctx: ReadContext) -> None:
    """Stage every span of every trace in the file (see the module docstring)."""
    doc, rejects = load_document(ctx, "deepeval")
    if doc is None:
        stage_rows(con, [], rejects)
        return
    rows: list[dict] = []
    index = 0
    if isinstance(doc, dict) and any(k in doc for k in _TEST_RUN_KEYS):
        for key, case in _test_cases(doc):
            trace = case.get("trace") if isinstance(case, dict) else None
            if not _is_trace(trace):
                index += 1
                what = "conversational test case" if key == "conversationalTestCases" else "test case"
                rejects.append({"source_line": index, "raw": case,
                                "reason": f"{what} without a trace: eval results only, no spans to stage"})
                continue
            extra = {
                "deepeval.test_case.name": case.get("name"),
                "deepeval.test_case.success": case.get("success"),
            }
            index = _read_trace(trace, index, ctx, rows, rejects, extra, case.get("metricsData"))
        stage_rows(con, rows, rejects)
        return
    traces = doc if isinstance(doc, list) else [doc]
    if not any(_is_trace(t) for t in traces) and traces:
        raise UnreadableInput(f"{ctx.path}: not a DeepEval trace (no baseSpans / llmSpans / ... groups)")
    for trace in traces:
        if not _is_trace(trace):
            index += 1
            rejects.append({"source_line": index, "raw": trace, "reason": "not a DeepEval trace object (no span groups)"})
            continue
        index = _read_trace(trace, index, ctx, rows, rejects)
    stage_rows(con, rows, rejects)
