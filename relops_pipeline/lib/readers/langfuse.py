"""Reader for Langfuse trace exports (FORMAT "langfuse").

Shape: `{"trace": {...}, "observations": [...]}` as the Langfuse UI's "download trace" writes it
(and `GET /api/public/traces/{id}`, whose trace object carries `observations` inline), or a JSON
array of those. Every observation is one span; a trace without observations becomes one span
of its own (span id = trace id). `source_line` is the 1-based index of the observation in the
file, counted across traces.

Mapping:
- ids: observation.id / traceId (trace.id when absent) / parentObservationId.
- kind: GENERATION, EMBEDDING -> llm; TOOL -> tool; RETRIEVER -> retrieval; AGENT, CHAIN -> agent;
  EVENT, GUARDRAIL, EVALUATOR -> other; SPAN -> the operation its OTel attributes name
  (gen_ai.operation.name / openinference.span.kind / ai.operationId), else by name, else other.
- latency: observation.latency is documented in seconds, but newer exports write milliseconds;
  the unit is decided by comparing with endTime - startTime and noted as
  `langfuse.latency_unit` ("s" | "ms" | "inconsistent"; timestamps win when neither fits).
- metadata: a JSON string (or object) holding the original OTel `attributes`,
  `resourceAttributes` and `scope`; they become the span's flat attributes (span over
  resource), other metadata keys stay as they are.
- status: level ERROR -> error (error_type from error.type or statusMessage); other levels
  -> unset (Langfuse does not record an explicit OK).
- scores: numeric and boolean scores -> online_scores of their observation (trace-level scores
  -> the root observations); a user-feedback score in [0, 1] -> feedback_score; categorical
  scores -> attributes `langfuse.score.<name>`.
- workflow / release pseudo-attributes: langfuse.trace.name, langfuse.release (trace.release),
  langfuse.version (trace.version, else observation.version, else "promptName@promptVersion").
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

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
    decode_json_text,
    error_type_of,
    feedback_value,
    finish_reason_of,
    input_text_of,
    is_feedback_name,
    kind_from_name,
    load_document,
    merged_scores,
    output_text_of,
    parse_loose,
    peek_head,
    text_from_attributes,
)

FORMAT = "langfuse"

_TYPE_KIND = {
    "GENERATION": "llm",
    "EMBEDDING": "llm",
    "TOOL": "tool",
    "RETRIEVER": "retrieval",
    "AGENT": "agent",
    "CHAIN": "agent",
    "EVENT": "other",
    "GUARDRAIL": "other",
    "EVALUATOR": "other",
}
_METADATA_OTEL_KEYS = ("attributes", "resourceAttributes", "scope")


def sniff(head: bytes, path) -> bool:
    """`{"trace": {...}, "observations": [...]}` (or an array of them), or an API trace with
    inline observations."""
    peek = peek_head(head)
    if peek.container is None or peek.trailing_data:
        return False
    keys = set(peek.keys)
    if "trace" in keys and ("observations" in keys or b'"projectId"' in head or b'"parentObservationId"' in head):
        return True
    return "id" in keys and b'"parentObservationId"' in head and b'"projectId"' in head


def _is_export(entry: Any) -> bool:
    if not isinstance(entry, dict):
        return False
    if isinstance(entry.get("trace"), dict):
        return True
    return "id" in entry and "observations" in entry


def _split(entry: Any) -> tuple[dict | None, list | None, str | None]:
    """(trace, observations, problem) of one export entry."""
    if not isinstance(entry, dict):
        return None, None, f"expected a Langfuse trace export object, got {type(entry).__name__}"
    if isinstance(entry.get("trace"), dict):
        trace = entry["trace"]
        observations = entry.get("observations")
        if observations is None:
            observations = parse_loose(trace.get("observations"))
    elif "id" in entry and "observations" in entry:
        trace = entry
        observations = parse_loose(entry.get("observations"))
    else:
        return None, None, "no 'trace' object: not a Langfuse trace export"
    if observations is None:
        observations = []
    if not isinstance(observations, list):
        return trace, None, f"'observations' is a {type(observations).__name__}, not a list"
    return trace, observations, None


def _metadata(value: Any) -> tuple[dict, dict, dict, dict]:
    """(otel attributes, resource attributes, scope, other metadata) of a metadata value."""
    md = decode_json_text(value)
    if md is None or md == "":
        return {}, {}, {}, {}
    if not isinstance(md, dict):
        return {}, {}, {}, {"langfuse.metadata": md}
    attrs = v if isinstance(v := md.get("attributes"), dict) else {}
    resource = v if isinstance(v := md.get("resourceAttributes"), dict) else {}
    scope = v if isinstance(v := md.get("scope"), dict) else {}
    other = {k: v for k, v in md.items() if k not in _METADATA_OTEL_KEYS or not isinstance(v, dict)}
    return attrs, resource, scope, other


def _scope_attrs(scope: Mapping[str, Any]) -> dict:
    out = {}
    if scope.get("name"):
        out["otel.scope.name"] = scope["name"]
    if scope.get("version"):
        out["otel.scope.version"] = scope["version"]
    return out


def _latency(obs_latency: Any, start, end) -> tuple[float | None, str | None]:
    """(latency_ms, unit) of observation.latency, checked against the timestamps."""
    span_ms = (end - start).total_seconds() * 1000.0 if start is not None and end is not None else None
    lat = as_float(obs_latency)
    if lat is None:
        return span_ms, None
    if span_ms is None:
        return lat * 1000.0, "s"
    tolerance = max(2.0, 0.01 * abs(span_ms))
    if abs(lat * 1000.0 - span_ms) <= tolerance:
        return lat * 1000.0, "s"
    if abs(lat - span_ms) <= tolerance:
        return lat, "ms"
    return span_ms, "inconsistent"


def _scores(trace: Mapping[str, Any], entry: Mapping[str, Any]) -> list[dict]:
    raw = trace.get("scores")
    if raw is None and entry is not trace:
        raw = entry.get("scores")
    scores = parse_loose(raw)
    return [s for s in scores if isinstance(s, dict) and s.get("name")] if isinstance(scores, list) else []


def _usage(obs: Mapping[str, Any]) -> tuple[int | None, int | None, dict]:
    """(input, output, other usage keys) from usageDetails (or the older usage object)."""
    details = obs.get("usageDetails")
    if not isinstance(details, dict) or not details:
        details = v if isinstance(v := obs.get("usage"), dict) else None
    if details:
        inp = details.get("input", details.get("promptTokens", details.get("input_tokens")))
        out = details.get("output", details.get("completionTokens", details.get("output_tokens")))
        extra = {k: v for k, v in details.items()
                 if k not in ("input", "output", "promptTokens", "completionTokens", "input_tokens", "output_tokens")}
        return as_int(inp), as_int(out), extra
    if "usageDetails" not in obs and "usage" not in obs:
        # Only the derived totals exist: they are 0 for spans that never reported usage.
        inp, out = as_int(obs.get("inputUsage")), as_int(obs.get("outputUsage"))
        if inp or out:
            return inp, out, {}
    return None, None, {}


def _cost(obs: Mapping[str, Any]) -> float | None:
    """A positive reported cost; Langfuse writes 0 when it had no price, which is not a cost."""
    details = v if isinstance(v := obs.get("costDetails"), dict) else {}
    for v in (details.get("total"), obs.get("totalCost"), obs.get("calculatedTotalCost")):
        f = as_float(v)
        if f is not None and f > 0:
            return f
    return None


def _trace_pseudo(trace: Mapping[str, Any]) -> dict:
    return {
        "langfuse.trace.id": trace.get("id"),
        "langfuse.trace.name": trace.get("name"),
        "langfuse.release": trace.get("release"),
        "langfuse.environment": trace.get("environment"),
        "langfuse.user_id": trace.get("userId"),
        "langfuse.session_id": trace.get("sessionId"),
        "langfuse.tags": trace.get("tags") or None,
    }


def _observation_row(
    obs: Mapping[str, Any],
    trace: Mapping[str, Any],
    trace_flat: Mapping[str, Any],
    index: int,
    ctx: ReadContext,
) -> dict[str, Any]:
    otel, resource, scope, other = _metadata(obs.get("metadata"))
    flat: dict[str, Any] = {**trace_flat, **resource, **_scope_attrs(scope), **other, **otel}
    mapped = map_attributes(flat)
    start, end = to_utc_naive(obs.get("startTime")), to_utc_naive(obs.get("endTime"))
    latency_ms, unit = _latency(obs.get("latency"), start, end)
    inp, out, usage_extra = _usage(obs)
    obs_type = str(obs.get("type") or "").upper()
    level = str(obs.get("level") or "").upper()
    name = obs.get("name") or None
    # SPAN or an unknown type: what the OTel attributes say, else the name
    kind = _TYPE_KIND[obs_type] if obs_type in _TYPE_KIND else mapped["kind"] if mapped["kind"] != "other" else kind_from_name(name)
    prompt = None
    if obs.get("promptName") and obs.get("promptVersion") is not None:
        prompt = f"{obs['promptName']}@{obs['promptVersion']}"
    version = trace.get("version") or obs.get("version") or prompt
    attr_in, attr_out, text_keys = text_from_attributes(flat)
    input_text = input_text_of(obs.get("input")) or attr_in
    output_text = output_text_of(obs.get("output")) or attr_out
    pseudo = {
        "langfuse.version": version,
        "langfuse.observation.type": obs.get("type"),
        "langfuse.observation.version": obs.get("version"),
        "langfuse.level": obs.get("level"),
        "langfuse.status_message": obs.get("statusMessage"),
        "langfuse.prompt": prompt,
        "langfuse.model_parameters": obs.get("modelParameters") or None,
        "langfuse.completion_start_time": obs.get("completionStartTime"),
        "langfuse.time_to_first_token": obs.get("timeToFirstToken"),
        "langfuse.latency": obs.get("latency"),
        "langfuse.latency_unit": unit,
        "langfuse.tool_call_names": obs.get("toolCallNames") or None,
        **{f"langfuse.usage.{k}": v for k, v in usage_extra.items()},
    }
    cost_details = v if isinstance(v := obs.get("costDetails"), dict) else {}
    pseudo.update({f"langfuse.cost.{k}": v for k, v in cost_details.items()})
    attributes = compact_attributes({**{k: v for k, v in flat.items() if k not in text_keys}, **pseudo})
    resolve_on = {**flat, **pseudo}
    cost = _cost(obs)
    is_error = level == "ERROR"
    error_type = as_text(mapped["error_type"])
    if is_error and not error_type:
        error_type = error_type_of(obs.get("statusMessage"))
    return {
        "trace_id": as_text(obs.get("traceId") or trace.get("id")),
        "span_id": as_text(obs.get("id")),
        "parent_span_id": as_text(obs.get("parentObservationId")),
        "span_name": as_text(name),
        "kind": kind,
        "workflow": resolve_workflow(resolve_on, ctx.settings),
        "release": resolve_release(resolve_on, ctx.settings),
        "model": as_text(obs.get("model") or mapped["model"]),
        "provider": as_text(mapped["provider"]),
        "start_time": start,
        "end_time": end,
        "latency_ms": latency_ms,
        "input_tokens": inp if inp is not None else mapped["input_tokens"],
        "output_tokens": out if out is not None else mapped["output_tokens"],
        "cost_usd": cost if cost is not None else mapped["cost_usd"],
        "finish_reason": mapped["finish_reason"] or finish_reason_of(obs.get("output")),
        "status": "error" if is_error else "unset",
        "error_type": error_type,
        "input_text": input_text,
        "output_text": output_text,
        "feedback_score": mapped["feedback_score"],
        "online_scores": mapped["online_scores"],
        "attributes": attributes,
        "source_format": FORMAT,
        "source_line": index,
    }


def _trace_only_row(trace: Mapping[str, Any], trace_flat: Mapping[str, Any], index: int, ctx: ReadContext) -> dict:
    """A trace exported without observations is still a trace: one span of kind agent."""
    start = to_utc_naive(trace.get("timestamp"))
    lat = as_float(trace.get("latency"))
    end = start + timedelta(seconds=lat) if start is not None and lat is not None else None
    pseudo = {"langfuse.version": trace.get("version"), "langfuse.trace_only": True}
    resolve_on = {**trace_flat, **pseudo}
    return {
        "trace_id": as_text(trace.get("id")),
        "span_id": as_text(trace.get("id")),
        "span_name": as_text(trace.get("name")),
        "kind": "agent",
        "workflow": resolve_workflow(resolve_on, ctx.settings),
        "release": resolve_release(resolve_on, ctx.settings),
        "start_time": start,
        "end_time": end,
        "latency_ms": lat * 1000.0 if lat is not None else None,
        "status": "unset",
        "input_text": input_text_of(trace.get("input")),
        "output_text": output_text_of(trace.get("output")),
        "attributes": compact_attributes({**trace_flat, **pseudo}),
        "source_format": FORMAT,
        "source_line": index,
    }


def _apply_scores(rows: list[dict], scores: list[dict]) -> None:
    by_span = {r["span_id"]: r for r in rows}
    roots = [r for r in rows if not r.get("parent_span_id") or r["parent_span_id"] not in by_span]
    for s in scores:
        target_id = s.get("observationId")
        targets = [by_span[target_id]] if target_id in by_span else roots
        name = str(s["name"])
        data_type = str(s.get("dataType") or "").upper()
        value = s.get("value")
        for row in targets:
            if data_type == "CATEGORICAL" or (value is None and s.get("stringValue") is not None):
                row["attributes"][f"langfuse.score.{name}"] = s.get("stringValue", value)
                continue
            num = 1.0 if value is True else 0.0 if value is False else as_float(value)
            if num is None:
                row["attributes"][f"langfuse.score.{name}"] = value
                continue
            row["online_scores"] = merged_scores(row.get("online_scores"), {name: num})
            if is_feedback_name(name) and feedback_value(num) is not None:
                row["feedback_score"] = feedback_value(num)


def read(con, ctx: ReadContext) -> None:
    """Stage every observation of every trace in the file (see the module docstring)."""
    doc, rejects = load_document(ctx, "langfuse")
    if doc is None:
        stage_rows(con, [], rejects)
        return
    entries = doc if isinstance(doc, list) else [doc]
    if not any(_is_export(e) for e in entries) and entries:
        raise UnreadableInput(f"{ctx.path}: not a Langfuse trace export (no 'trace' with 'observations')")
    rows: list[dict] = []
    index = 0
    for entry in entries:
        trace, observations, problem = _split(entry)
        if problem:
            index += 1
            rejects.append({"source_line": index, "raw": entry, "reason": problem})
            continue
        assert trace is not None and observations is not None  # _split gives both when there is no problem
        # The trace's metadata repeats its root span's OTel attributes: only its resource
        # attributes and user metadata apply to every observation.
        _, t_resource, _, t_other = _metadata(trace.get("metadata"))
        trace_flat = compact_attributes({**t_resource, **t_other, **_trace_pseudo(trace)})
        trace_rows: list[dict] = []
        if not observations:
            index += 1
            trace_rows.append(_trace_only_row(trace, trace_flat, index, ctx))
        for obs in observations:
            index += 1
            if not isinstance(obs, dict):
                rejects.append({"source_line": index, "raw": obs,
                                "reason": f"observation is a {type(obs).__name__}, not an object"})
                continue
            missing = [k for k, v in (("id", obs.get("id")), ("traceId", obs.get("traceId") or trace.get("id"))) if not v]
            if missing:
                rejects.append({"source_line": index, "raw": obs,
                                "reason": f"observation without {' and '.join(missing)}"})
                continue
            trace_rows.append(_observation_row(obs, trace, trace_flat, index, ctx))
        _fill_root_io(trace_rows, trace)
        _apply_scores(trace_rows, _scores(trace, entry))
        rows.extend(trace_rows)
    stage_rows(con, rows, rejects)


def _fill_root_io(rows: list[dict], trace: Mapping[str, Any]) -> None:
    """A single root observation without input/output gets the trace's (Langfuse shows the
    trace I/O as the root's)."""
    ids = {r["span_id"] for r in rows}
    roots = [r for r in rows if not r.get("parent_span_id") or r["parent_span_id"] not in ids]
    if len(roots) != 1 or roots[0].get("attributes", {}).get("langfuse.trace_only"):
        return
    root = roots[0]
    if root.get("input_text") is None:
        root["input_text"] = input_text_of(trace.get("input"))
    if root.get("output_text") is None:
        root["output_text"] = output_text_of(trace.get("output"))
