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

Runs across payloads. The SDK sends a run's start (post) and its end (patch: end_time, outputs,
tokens, error) in different requests, so in different spooled files. When `con` is a warehouse
connection (it has `spans` and `langsmith_pending`), a patch whose post is not in this payload:
- updates the span already ingested for that run (end_time, latency_ms, anomalies, output_text,
  tokens, finish_reason, response model, status, error_type, reported cost) and is staged as a
  duplicate of that span (it adds no span);
- else waits in `langsmith_pending` (one row per patch record, kept once however often its file
  is ingested) and is staged as a reject whose reason starts with `pending:` (so the file's
  `rejected` count and `relops rejects` show it; never dropped). A later payload posting the
  run merges the waiting patches into it; at the start of every LangSmith read, waiting patches
  whose run is in `spans` are applied to it and deleted (`settle_pending`). `pending_patches(con)`
  counts the patches still waiting for their run.
These writes are committed by the reader in its own transaction before the loader's (they are
idempotent: applying a patch twice changes nothing), and a waiting patch is only deleted once
its run is in `spans`, so a loader rollback loses nothing. On a bare staging connection (no
warehouse tables) a patch without its post in the payload is rejected.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from relops_pipeline.lib.audit import transaction
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
from relops_pipeline.lib.schema import span_anomalies_sql, span_latency_sql
from relops_pipeline.lib.settings import DEFAULT_TEXT_CAP
from relops_pipeline.lib.timeutil import utc_naive

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
    extra = v if isinstance(v := run.get("extra"), dict) else {}
    meta_um = (extra.get("metadata") or {}).get("usage_metadata") if isinstance(extra.get("metadata"), dict) else None
    if isinstance(meta_um, dict):  # the Python SDK also copies usage_metadata into extra.metadata
        return as_int(meta_um.get("input_tokens")), as_int(meta_um.get("output_tokens"))
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


def _run_id(run: Mapping[str, Any]) -> str | None:
    value = run.get("id") or _run_id_from_dotted_order(run.get("dotted_order"))
    return str(value) if value else None


def _has_warehouse(con) -> bool:
    names = {r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE NOT temporary AND table_name IN ('spans', 'langsmith_pending')"
    ).fetchall()}
    return names == {"spans", "langsmith_pending"}


def _apply_patch(con, span: tuple[str, str, Any], patch: Mapping[str, Any], ctx: ReadContext) -> None:
    """Update an ingested span with what a patch reports (only the fields the patch has)."""
    trace_id, span_id, start = span
    row = _run_row({**patch, "start_time": start}, 0, ctx)
    end = row["end_time"]
    error = patch.get("error")
    out = row["output_text"] if patch.get("outputs") else None
    response_model = (patch.get("outputs") or {}).get("model") if isinstance(patch.get("outputs"), dict) else None
    latency = "date_diff('microsecond', start_time, $end) / 1000.0"
    cap = DEFAULT_TEXT_CAP
    con.execute(
        f"""
        UPDATE spans SET
            end_time = coalesce($end, end_time),
            latency_ms = CASE WHEN $end IS NULL THEN latency_ms ELSE {span_latency_sql("start_time", "$end", latency)} END,
            anomalies = CASE WHEN $end IS NULL THEN anomalies ELSE {span_anomalies_sql("start_time", "$end", latency)} END,
            output_text = coalesce(left($out, {cap}), output_text),
            output_truncated = CASE WHEN $out IS NULL THEN output_truncated ELSE length($out) > {cap} END,
            input_tokens = coalesce($inp, input_tokens),
            output_tokens = coalesce($outp, output_tokens),
            finish_reason = coalesce($finish, finish_reason),
            model = coalesce($model, model),
            cost_usd = coalesce($cost, cost_usd),
            cost_source = CASE WHEN $cost IS NOT NULL THEN 'reported' ELSE cost_source END,
            status = CASE WHEN $error THEN 'error' WHEN $end IS NOT NULL AND status = 'unset' THEN 'ok' ELSE status END,
            error_type = coalesce($error_type, error_type)
        WHERE trace_id = $trace_id AND span_id = $span_id
        """,
        {
            "end": end, "out": out, "inp": row["input_tokens"], "outp": row["output_tokens"],
            "finish": row["finish_reason"], "model": response_model, "cost": row["cost_usd"],
            "error": bool(error), "error_type": row["error_type"], "trace_id": trace_id, "span_id": span_id,
        },
    )


def _ingested_span(con, run_id: str, trace_id: Any) -> tuple[str, str, Any] | None:
    row = con.execute(
        "SELECT trace_id, span_id, start_time FROM spans WHERE span_id = ? AND (? IS NULL OR trace_id = ?) "
        "ORDER BY start_time LIMIT 1",
        [run_id, as_text(trace_id), as_text(trace_id)],
    ).fetchone()
    return (row[0], row[1], row[2]) if row else None


def settle_pending(con, ctx: ReadContext | None = None) -> int:
    """Settle waiting patches whose run is now in `spans`: apply those the span does not have
    yet, delete them all; how many were settled."""
    ctx = ctx or ReadContext(path=None)  # type: ignore[arg-type]
    with transaction(con):
        # A span ingested after the patch was received had it merged in when its post was read.
        waiting = con.execute(
            "SELECT p.rowid, s.trace_id, s.span_id, s.start_time, p.payload, s.ingested_at < p.received_at "
            "FROM langsmith_pending p "
            "JOIN spans s ON s.span_id = p.run_id AND (p.trace_id IS NULL OR s.trace_id = p.trace_id) "
            "ORDER BY p.received_at, p.source_file, p.source_line"
        ).fetchall()
        for _, trace_id, span_id, start, payload, not_merged in waiting:
            if not_merged:
                _apply_patch(con, (trace_id, span_id, start), json.loads(payload), ctx)
        if waiting:
            con.execute("DELETE FROM langsmith_pending WHERE rowid IN (SELECT unnest(?::BIGINT[]))", [[w[0] for w in waiting]])
    return len(waiting)


def pending_patches(con) -> int:
    """Patches still waiting for their run (not yet in `spans`)."""
    return int(con.execute(
        "SELECT count(*) FROM langsmith_pending p WHERE NOT EXISTS (SELECT 1 FROM spans s "
        "WHERE s.span_id = p.run_id AND (p.trace_id IS NULL OR s.trace_id = p.trace_id))"
    ).fetchone()[0])


def _pending_for(con, run_ids: list[str]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    if not run_ids:
        return out
    rows = con.execute(
        "SELECT run_id, payload FROM langsmith_pending WHERE run_id IN (SELECT unnest(?::VARCHAR[])) "
        "ORDER BY received_at, source_file, source_line",
        [run_ids],
    ).fetchall()
    for run_id, payload in rows:
        out.setdefault(run_id, []).append(json.loads(payload))
    return out


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
    warehouse = _has_warehouse(con)
    if warehouse:
        settle_pending(con, ctx)
    post_records = _flatten_posts(posts, 0)
    runs: dict[str, tuple[int, dict]] = {}
    for index, run in post_records:
        if not isinstance(run, dict):
            rejects.append({"source_line": index, "raw": run, "reason": f"run is a {type(run).__name__}, not an object"})
            continue
        run_id = _run_id(run)
        if not run_id:
            rejects.append({"source_line": index, "raw": run, "reason": "run without id (and no dotted_order)"})
            continue
        if run_id in runs:
            # The same run posted twice: the later post updates the earlier one, like a patch.
            runs[run_id] = (runs[run_id][0], _merge(runs[run_id][1], run))
            continue
        runs[run_id] = (index, {**run, "id": run_id})
    if warehouse:
        # Patches that arrived before their post (in earlier files) complete it now.
        for run_id, waiting in _pending_for(con, list(runs)).items():
            for patch in waiting:
                runs[run_id] = (runs[run_id][0], _merge(runs[run_id][1], patch))
    offset = len(post_records)
    orphans: dict[str, list[tuple[int, dict]]] = {}
    for i, patch in enumerate(patches, start=1):
        index = offset + i
        if not isinstance(patch, dict):
            rejects.append({"source_line": index, "raw": patch, "reason": f"patch is a {type(patch).__name__}, not an object"})
            continue
        run_id = _run_id(patch)
        if run_id and run_id in runs:
            post_index, post = runs[run_id]
            runs[run_id] = (post_index, _merge(post, patch))
        elif run_id and warehouse:
            orphans.setdefault(run_id, []).append((index, patch))
        else:
            rejects.append({"source_line": index, "raw": patch,
                            "reason": f"patch for run {run_id or '(no id)'} has no matching post in this payload"})
    rows = []
    if orphans:
        rows.extend(_place_orphans(con, ctx, orphans, rejects))
    for run_id, (index, run) in runs.items():
        if not run.get("trace_id"):
            rejects.append({"source_line": index, "raw": run, "reason": f"run {run_id} without trace_id"})
            continue
        rows.append(_run_row(run, index, ctx))
    stage_rows(con, rows, rejects)


def _place_orphans(con, ctx: ReadContext, orphans: dict[str, list[tuple[int, dict]]], rejects: list) -> list[dict]:
    """Patches without their post in this payload: applied to the ingested span (staged as its
    duplicate), or kept in langsmith_pending (staged as a `pending:` reject)."""
    rows: list[dict] = []
    source_file = str(ctx.path.resolve())
    now = utc_naive()
    with transaction(con):
        for run_id, records in orphans.items():
            trace_id = next((p.get("trace_id") for _, p in records if p.get("trace_id")), None)
            span = _ingested_span(con, run_id, trace_id)
            for index, patch in records:
                if span is not None:
                    _apply_patch(con, span, patch, ctx)
                    rows.append({"trace_id": span[0], "span_id": span[1], "start_time": span[2],
                                 "source_format": FORMAT, "source_line": index})
                    continue
                payload = json.dumps({**patch, "id": run_id}, ensure_ascii=False, sort_keys=True, default=str)
                con.execute(
                    "INSERT INTO langsmith_pending (run_id, trace_id, payload, source_file, source_line, ingest_batch_id, received_at) "
                    "SELECT ?, ?, ?, ?, ?, NULL, ? WHERE NOT EXISTS (SELECT 1 FROM langsmith_pending "
                    "WHERE run_id = ? AND source_file = ? AND source_line IS NOT DISTINCT FROM ? AND payload::VARCHAR = ?)",
                    [run_id, as_text(trace_id), payload, source_file, index, now, run_id, source_file, index, payload],
                )
                rejects.append({"source_line": index, "raw": patch,
                                "reason": f"pending: patch for run {run_id} waits for its post "
                                          "(kept in langsmith_pending, merged when the post is ingested)"})
    return rows
