"""Reader for LangSmith run ingestion payloads (FORMAT "langsmith").

Shape: `{"post": [run, ...], "patch": [run, ...]}`, what the LangSmith SDKs send to the runs
batch endpoint. A post creates a run (id, trace_id, dotted_order, parent_run_id, name, run_type,
start_time, inputs, extra.metadata, session_name, tags); a patch completes it (end_time,
outputs, error, events). Patches merge into their post by run id; JS SDK patches carry no `id`,
so the id is taken from the last segment of `dotted_order` (`<timestamp>Z<run id>`). Nested
`child_runs` of a post are read as runs of their own. One run = one span. `source_line` is the
1-based index of the record in the file, posts first, then patches.

Mapping: run_type llm / embedding -> llm, chain -> agent, tool -> tool, retriever -> retrieval,
others -> other. Times are ISO strings (Python SDK) or epoch milliseconds (JS SDK). Model: the
response's `outputs.model`, else extra.metadata.ls_model_name, else inputs.model; provider:
ls_provider. Tokens: outputs.usage_metadata, else OpenAI `outputs.usage`, else the run's own
prompt_tokens / completion_tokens (export shape). An `error` makes the span an error; a run
with an end time and no error is ok, without an end time unset. workflow pseudo-attribute:
`langsmith.project` (session_name); release: `langsmith.revision_id` (extra.metadata.revision_id).
`feedback_stats` (export shape) become online_scores (their averages).

A patch whose run has no post in the same payload is rejected: the run was created in another
payload and a partial span would duplicate it.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    error_type_of,
    feedback_value,
    finish_reason_of,
    input_text_of,
    is_feedback_name,
    load_document,
    merged_scores,
    output_text_of,
    peek_head,
)

FORMAT = "langsmith"

_RUN_TYPE_KIND = {
    "llm": "llm",
    "embedding": "llm",
    "chain": "agent",
    "tool": "tool",
    "retriever": "retrieval",
    "prompt": "other",
    "parser": "other",
}


def sniff(head: bytes, path) -> bool:
    """A JSON object whose first key is `post` or `patch` and whose runs look like LangSmith's."""
    peek = peek_head(head)
    if peek.container != "object" or peek.trailing_data or not peek.keys:
        return False
    if peek.keys[0] not in ("post", "patch"):
        return False
    return any(tok in head for tok in (b'"dotted_order"', b'"run_type"', b'"trace_id"'))


def _run_id_from_dotted_order(dotted: Any) -> str | None:
    if not isinstance(dotted, str) or "Z" not in dotted:
        return None
    last = dotted.split(".")[-1]
    return last.split("Z", 1)[1] or None


def _parent_from_dotted_order(dotted: Any) -> str | None:
    if not isinstance(dotted, str):
        return None
    segments = dotted.split(".")
    if len(segments) < 2 or "Z" not in segments[-2]:
        return None
    return segments[-2].split("Z", 1)[1] or None


def _flatten_posts(posts: list, start_index: int) -> list[tuple[int, Any]]:
    """(record index, run) for posts and their nested child_runs, depth first."""
    out: list[tuple[int, Any]] = []
    index = start_index

    def visit(run: Any) -> None:
        nonlocal index
        index += 1
        out.append((index, run))
        if isinstance(run, dict):
            for child in run.get("child_runs") or []:
                visit(child)

    for run in posts:
        visit(run)
    return out


def _merge(post: dict, patch: Mapping[str, Any]) -> dict:
    merged = dict(post)
    for k, v in patch.items():
        if v is None or v == {} or v == []:
            continue
        if k == "extra" and isinstance(v, dict) and isinstance(merged.get("extra"), dict):
            extra = dict(merged["extra"])
            for ek, ev in v.items():
                if isinstance(ev, dict) and isinstance(extra.get(ek), dict):
                    extra[ek] = {**extra[ek], **ev}
                else:
                    extra[ek] = ev
            merged["extra"] = extra
        else:
            merged[k] = v
    return merged


def _tokens(run: Mapping[str, Any]) -> tuple[int | None, int | None]:
    outputs = v if isinstance(v := run.get("outputs"), dict) else {}
    um = outputs.get("usage_metadata")
    if isinstance(um, dict):
        return as_int(um.get("input_tokens")), as_int(um.get("output_tokens"))
    usage = outputs.get("usage")
    if isinstance(usage, dict):
        return (as_int(usage.get("prompt_tokens", usage.get("input_tokens"))),
                as_int(usage.get("completion_tokens", usage.get("output_tokens"))))
    return as_int(run.get("prompt_tokens")), as_int(run.get("completion_tokens"))


def _first_token_ms(run: Mapping[str, Any], start) -> float | None:
    for ev in run.get("events") or []:
        if isinstance(ev, dict) and ev.get("name") == "new_token":
            t = to_utc_naive(ev.get("time"))
            if t is not None and start is not None:
                return (t - start).total_seconds() * 1000.0
            return None
    return None


def _input_text(inputs: Any) -> str | None:
    if isinstance(inputs, dict):
        if "messages" in inputs:
            return input_text_of(inputs["messages"])
        if set(inputs) == {"input"} or set(inputs) == {"prompt"}:
            return input_text_of(next(iter(inputs.values())))
    return input_text_of(inputs)


def _output_text(outputs: Any) -> str | None:
    if isinstance(outputs, dict) and set(outputs) == {"output"}:
        return output_text_of(outputs["output"])
    return output_text_of(outputs)


def _run_row(run: Mapping[str, Any], index: int, ctx: ReadContext) -> dict[str, Any]:
    extra = v if isinstance(v := run.get("extra"), dict) else {}
    metadata = v if isinstance(v := extra.get("metadata"), dict) else {}
    runtime = v if isinstance(v := extra.get("runtime"), dict) else {}
    outputs = v if isinstance(v := run.get("outputs"), dict) else {}
    inputs = run.get("inputs")
    start, end = to_utc_naive(run.get("start_time")), to_utc_naive(run.get("end_time"))
    genai = {
        "gen_ai.response.model": outputs.get("model"),
        "gen_ai.request.model": metadata.get("ls_model_name")
        or (inputs.get("model") if isinstance(inputs, dict) else None),
        "gen_ai.provider.name": metadata.get("ls_provider"),
    }
    mapped = map_attributes({**metadata, **{k: v for k, v in genai.items() if v}})
    inp, out = _tokens(run)
    run_type = str(run.get("run_type") or "").lower()
    pseudo = {
        "langsmith.project": run.get("session_name") or run.get("project_name"),
        "langsmith.revision_id": metadata.get("revision_id"),
        "langsmith.run_type": run.get("run_type"),
        "langsmith.dotted_order": run.get("dotted_order"),
        "langsmith.tags": run.get("tags") or None,
        "langsmith.reference_example_id": run.get("reference_example_id"),
        "langsmith.response_id": outputs.get("id"),
        "langsmith.events": len(run.get("events") or []) or None,
        "langsmith.time_to_first_token_ms": _first_token_ms(run, start),
        **{f"langsmith.runtime.{k}": v for k, v in runtime.items()},
    }
    scores: dict[str, float] = {}
    feedback = None
    stats = run.get("feedback_stats")
    if isinstance(stats, dict):
        for key, stat in stats.items():
            avg = as_float(stat.get("avg")) if isinstance(stat, dict) else as_float(stat)
            if avg is None:
                continue
            scores[str(key)] = avg
            if is_feedback_name(key) and feedback_value(avg) is not None:
                feedback = feedback_value(avg)
    error = run.get("error")
    resolve_on = {**metadata, **pseudo}
    return {
        "trace_id": as_text(run.get("trace_id")),
        "span_id": as_text(run.get("id")),
        "parent_span_id": as_text(run.get("parent_run_id") or _parent_from_dotted_order(run.get("dotted_order"))),
        "span_name": as_text(run.get("name")),
        "kind": _RUN_TYPE_KIND.get(run_type, "other"),
        "workflow": resolve_workflow(resolve_on, ctx.settings),
        "release": resolve_release(resolve_on, ctx.settings),
        "model": as_text(mapped["model"]),
        "provider": as_text(mapped["provider"]),
        "start_time": start,
        "end_time": end,
        "input_tokens": inp,
        "output_tokens": out,
        "cost_usd": as_float(run.get("total_cost")),
        "finish_reason": finish_reason_of(outputs),
        "status": "error" if error else ("ok" if end is not None else "unset"),
        "error_type": error_type_of(error) if error else None,
        "input_text": _input_text(inputs),
        "output_text": _output_text(outputs) if outputs else None,
        "feedback_score": feedback,
        "online_scores": merged_scores(scores),
        "attributes": compact_attributes({**metadata, **pseudo}),
        "source_format": FORMAT,
        "source_line": index,
    }


def read(con, ctx: ReadContext) -> None:
    """Stage one span per run; patches merged into their posts (see the module docstring)."""
    doc, rejects = load_document(ctx, "langsmith")
    if doc is None:
        stage_rows(con, [], rejects)
        return
    if not isinstance(doc, dict) or not ({"post", "patch"} & set(doc)):
        raise UnreadableInput(f"{ctx.path}: not a LangSmith run payload (no 'post' / 'patch' lists)")
    posts, patches = doc.get("post") or [], doc.get("patch") or []
    for name, value in (("post", posts), ("patch", patches)):
        if not isinstance(value, list):
            raise UnreadableInput(f"{ctx.path}: LangSmith '{name}' is a {type(value).__name__}, not a list")
    post_records = _flatten_posts(posts, 0)
    runs: dict[str, tuple[int, dict]] = {}
    for index, run in post_records:
        if not isinstance(run, dict):
            rejects.append({"source_line": index, "raw": run, "reason": f"run is a {type(run).__name__}, not an object"})
            continue
        run_id = run.get("id") or _run_id_from_dotted_order(run.get("dotted_order"))
        if not run_id:
            rejects.append({"source_line": index, "raw": run, "reason": "run without id (and no dotted_order)"})
            continue
        if run_id in runs:
            # The same run posted twice: the later post updates the earlier one, like a patch.
            runs[run_id] = (runs[run_id][0], _merge(runs[run_id][1], run))
            continue
        runs[run_id] = (index, {**run, "id": run_id})
    offset = len(post_records)
    for i, patch in enumerate(patches, start=1):
        index = offset + i
        if not isinstance(patch, dict):
            rejects.append({"source_line": index, "raw": patch, "reason": f"patch is a {type(patch).__name__}, not an object"})
            continue
        run_id = patch.get("id") or _run_id_from_dotted_order(patch.get("dotted_order"))
        if not run_id or run_id not in runs:
            rejects.append({"source_line": index, "raw": patch,
                            "reason": f"patch for run {run_id or '(no id)'} has no matching post in this payload"})
            continue
        post_index, post = runs[run_id]
        runs[run_id] = (post_index, _merge(post, patch))
    rows = []
    for run_id, (index, run) in runs.items():
        if not run.get("trace_id"):
            rejects.append({"source_line": index, "raw": run, "reason": f"run {run_id} without trace_id"})
            continue
        rows.append(_run_row(run, index, ctx))
    stage_rows(con, rows, rejects)
