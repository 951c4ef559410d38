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
tokens, error) in different requests, so in different spooled files. On a warehouse connection
(it has `spans` and `langsmith_pending`) a patch whose post is not in this payload is staged in
`stage_langsmith_patches`, and the loader's `after_insert` hook (inside the file's transaction)
- applies it to the span already ingested for that run (end_time, latency_ms, anomalies,
  output_text and output_messages, tokens, finish_reason, response model, status, error_type,
  reported cost, else the cost computed from the configured prices as at ingestion) and counts
  it as a duplicate of that span (it adds no span); the span is recorded in `span_updates` with
  this file's batch id, so its day's follow-ups are recomputed;
- else keeps it waiting in `langsmith_pending` (one row per patch record, kept once however
  often its file is ingested) and stages a reject whose reason starts with `pending:` (so the
  file's `rejected` count and `relops rejects` show it; never dropped).
A later payload posting the run merges the waiting patches into it when it is read, and the
hook then deletes them; waiting patches whose run reached `spans` some other way are applied
by the next LangSmith file's hook. `pending_patches(con)` counts the patches still waiting.
A connection with an `APPLIED_LOG` table (a trace store ingestion's scratch) also records there
every patch merged into or applied to a span, for the store to apply to its own copy of a run
it already holds.
Everything commits or rolls back with the file. On a bare staging connection (no warehouse
tables) a patch without its post in the payload is rejected.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from relops_pipeline.lib.readers.attributes import genai_messages, map_attributes, messages_text
from relops_pipeline.lib.readers.base import (
    LoadContext,
    LoadResult,
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
from relops_pipeline.lib.schema import capped_messages_sql, messages_over_cap_sql, span_anomalies_sql, span_latency_sql

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


def _input_messages(inputs: Any) -> list[dict[str, Any]] | None:
    """The chat messages of a run's inputs (`inputs.messages`: OpenAI-style, or LangChain's
    batch of lists), as [{"role", "content": plain text}]."""
    if not isinstance(inputs, dict):
        return None
    msgs = inputs.get("messages")
    if isinstance(msgs, list) and msgs and all(isinstance(m, list) for m in msgs):
        msgs = [m for batch in msgs for m in batch]
    return genai_messages(msgs) if isinstance(msgs, list) and msgs else None


def _output_messages(outputs: Any) -> list[dict[str, Any]] | None:
    """The messages of a run's outputs: OpenAI `choices[].message`, else LangChain
    `generations[][].text` (as the assistant's)."""
    if not isinstance(outputs, dict):
        return None
    choices = outputs.get("choices")
    if isinstance(choices, list):
        msgs = [c["message"] for c in choices if isinstance(c, dict) and isinstance(c.get("message"), dict)]
        return genai_messages(msgs) if msgs else None
    generations = outputs.get("generations")
    if isinstance(generations, list):
        out = []
        for g in (g for batch in generations for g in (batch if isinstance(batch, list) else [batch])):
            if isinstance(g, dict) and isinstance(g.get("text"), str):
                out.append({"role": "assistant", "content": g["text"]})
        return out or None
    return None


def _input_text(inputs: Any, messages: list[dict[str, Any]] | None) -> str | None:
    if messages:
        return messages_text(messages)
    if isinstance(inputs, dict) and (set(inputs) == {"input"} or set(inputs) == {"prompt"}):
        return input_text_of(next(iter(inputs.values())))
    return input_text_of(inputs)


def _output_text(outputs: Any, messages: list[dict[str, Any]] | None) -> str | None:
    if messages:
        return messages_text(messages)
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
    in_msgs, out_msgs = _input_messages(inputs), _output_messages(outputs)
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
        "input_text": _input_text(inputs, in_msgs),
        "output_text": _output_text(outputs, out_msgs) if outputs else None,
        "input_messages": in_msgs,
        "output_messages": out_msgs,
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
    warehouse = _has_warehouse(con)
    if warehouse:
        # Always (re)created, so a table left by a file whose load failed is never applied.
        con.execute(f"CREATE OR REPLACE TEMP TABLE {PATCH_STAGE} (source_line BIGINT, run_id VARCHAR, trace_id VARCHAR, payload VARCHAR)")
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
    orphans: list[tuple[int, str, Any, str]] = []
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
            payload = json.dumps({**patch, "id": run_id}, ensure_ascii=False, sort_keys=True, default=str)
            orphans.append((index, run_id, as_text(patch.get("trace_id")), payload))
        else:
            rejects.append({"source_line": index, "raw": patch,
                            "reason": f"patch for run {run_id or '(no id)'} has no matching post in this payload"})
    if orphans:
        con.executemany(f"INSERT INTO {PATCH_STAGE} VALUES (?, ?, ?, ?)", orphans)
    rows = []
    for run_id, (index, run) in runs.items():
        if not run.get("trace_id"):
            rejects.append({"source_line": index, "raw": run, "reason": f"run {run_id} without trace_id"})
            continue
        rows.append(_run_row(run, index, ctx))
    stage_rows(con, rows, rejects)


PATCH_STAGE = "stage_langsmith_patches"  # this file's patches whose post is not in it


def after_insert(con, load: LoadContext) -> LoadResult:
    """Inside the file's transaction, once its spans are in: settle waiting patches whose run
    has arrived, and apply this file's patches to the spans they complete or keep them waiting
    (see the module docstring)."""
    exists = con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name = ?", [PATCH_STAGE]).fetchone()[0]
    if not exists:
        return LoadResult()
    staged = con.execute(f"SELECT source_line, run_id, trace_id, payload FROM {PATCH_STAGE} ORDER BY source_line").fetchall()
    con.execute(f"DROP TABLE {PATCH_STAGE}")
    updates: dict[tuple[str, str], _SpanUpdate] = {}

    for _batch, w_trace, w_span, w_start, w_payload, w_file, w_line in _settle_waiting(con):
        updates.setdefault((w_trace, w_span), _SpanUpdate(w_start, w_file, w_line)).add(json.loads(w_payload))

    applied = 0
    taken: list[tuple] = []  # for APPLIED_LOG
    by_run: dict[str, list[tuple[int, Any, str]]] = {}
    for source_line, run_id, trace_id, payload in staged:
        by_run.setdefault(run_id, []).append((source_line, trace_id, payload))
    run_traces = {run_id: next((t for _, t, _ in records if t), None) for run_id, records in by_run.items()}
    spans = _ingested_spans(con, run_traces)
    for run_id, records in by_run.items():
        trace_id = run_traces[run_id]
        span = spans.get(run_id)
        for source_line, _, payload in records:
            if span is not None:
                updates.setdefault(span[:2], _SpanUpdate(span[2], load.source_file, source_line)).add(json.loads(payload))
                taken.append((load.batch_id, *span, payload, load.source_file, source_line))
                applied += 1
                continue
            con.execute(
                "INSERT INTO langsmith_pending (run_id, trace_id, payload, source_file, source_line, ingest_batch_id, received_at) "
                "SELECT ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM langsmith_pending "
                "WHERE run_id = ? AND source_file = ? AND source_line IS NOT DISTINCT FROM ? AND payload::VARCHAR = ?)",
                [run_id, trace_id, payload, load.source_file, source_line, load.batch_id, load.started,
                 run_id, load.source_file, source_line, payload],
            )
            con.execute(
                "INSERT INTO stage_rejects VALUES (?, ?, ?)",
                [source_line, payload, f"pending: patch for run {run_id} waits for its post "
                                       "(kept in langsmith_pending, merged when the post is ingested)"],
            )
    _record_applied(con, taken)
    if updates:
        _apply_updates(con, load, updates)
    return LoadResult(read=len(staged), duplicates=applied)


def _settle_waiting(con) -> list[tuple[str | None, str, str, Any, str, str, int | None]]:
    """Waiting patches whose run is now in `spans`, deleted from langsmith_pending; returned
    (the batch that received it, trace_id, span_id, start_time, payload, source_file,
    source_line) for those still to apply, in arrival order. Those received before their span
    was ingested were merged into it when its post was read; the others (the run came another
    way) apply now."""
    waiting = con.execute(
        "SELECT p.rowid, s.ingested_at < p.received_at, p.ingest_batch_id, s.trace_id, s.span_id, s.start_time, p.payload, "
        "p.source_file, p.source_line "
        "FROM langsmith_pending p JOIN spans s ON s.span_id = p.run_id AND (p.trace_id IS NULL OR s.trace_id = p.trace_id) "
        "ORDER BY p.received_at, p.source_file, p.source_line"
    ).fetchall()
    if waiting:
        con.execute("DELETE FROM langsmith_pending WHERE rowid IN (SELECT unnest(?::BIGINT[]))", [[w[0] for w in waiting]])
        _record_applied(con, [(w[2], w[3], w[4], w[5], w[6], w[7], w[8]) for w in waiting])
    return [tuple(w[2:]) for w in waiting if w[1]]


APPLIED_LOG = "langsmith_applied"  # on a trace store's scratch connection: the patches its spans took


def _record_applied(con, rows: list[tuple]) -> None:
    """Record (batch, trace_id, span_id, start_time, payload, source_file, source_line) of the
    patches merged into or applied to spans, when the connection keeps such a log (a trace
    store ingestion: a span these files hold may turn out to be a copy of one the store holds,
    which then takes these patches; lib/ingest.py)."""
    if rows and con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [APPLIED_LOG]).fetchone()[0]:
        columns = [list(c) for c in zip(*rows, strict=True)]
        con.execute(f"INSERT INTO {APPLIED_LOG} SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), "
                    "unnest(?::TIMESTAMP[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::BIGINT[])", columns)


def apply_waiting(con, load_for: Callable[[str | None], LoadContext]) -> list[tuple[str | None, int | None, str, str]]:
    """Apply the waiting patches whose run is in `spans` now, as the next file's hook would:
    each to its span, recorded in span_updates under the batch that received the patch
    (`load_for(batch_id)` gives its load). For a trace store ingestion, which loads the runs
    an earlier ingestion stored into its scratch `spans` first (lib/ingest.py). Returns
    (batch, source_line, trace_id, span_id) per patch applied."""
    by_batch: dict[str | None, dict[tuple[str, str], _SpanUpdate]] = {}
    applied = []
    for batch, trace_id, span_id, start, payload, source_file, source_line in _settle_waiting(con):
        by_batch.setdefault(batch, {}).setdefault((trace_id, span_id), _SpanUpdate(start, source_file, source_line)).add(
            json.loads(payload))
        applied.append((batch, source_line, trace_id, span_id))
    for batch, updates in by_batch.items():
        _apply_updates(con, load_for(batch), updates)
    return applied


class _SpanUpdate:
    """The patches for one ingested span, merged in arrival order."""

    def __init__(self, start_time: Any, source_file: str, source_line: int | None):
        self.start_time, self.source_file, self.source_line = start_time, source_file, source_line
        self.patch: dict = {}

    def add(self, patch: dict) -> None:
        self.patch = _merge(self.patch, patch)


def _ingested_spans(con, run_traces: Mapping[str, Any]) -> dict[str, tuple[str, str, Any]]:
    """The span ingested for each run (of the trace given, if any; the earliest start): one
    query for all the runs, not one per run."""
    if not run_traces:
        return {}
    rows = con.execute(
        "SELECT r.run_id, s.trace_id, s.span_id, s.start_time FROM "
        "(SELECT unnest(?::VARCHAR[]) AS run_id, unnest(?::VARCHAR[]) AS trace_id) r "
        "JOIN spans s ON s.span_id = r.run_id AND (r.trace_id IS NULL OR s.trace_id = r.trace_id) "
        "QUALIFY row_number() OVER (PARTITION BY r.run_id ORDER BY s.start_time) = 1",
        [list(run_traces), [as_text(t) for t in run_traces.values()]],
    ).fetchall()
    return {run_id: (trace_id, span_id, start) for run_id, trace_id, span_id, start in rows}


_UPDATE_COLUMNS = (
    "trace_id VARCHAR, span_id VARCHAR, start_time TIMESTAMP, end_time TIMESTAMP, output_text VARCHAR, output_messages JSON, "
    "input_tokens BIGINT, output_tokens BIGINT, finish_reason VARCHAR, model VARCHAR, cost_usd DOUBLE, is_error BOOLEAN, "
    "error_type VARCHAR, source_file VARCHAR, source_line BIGINT"
)


def _apply_updates(con, load: LoadContext, updates: Mapping[tuple[str, str], _SpanUpdate]) -> None:
    """Update ingested spans with what their patches report (only the fields the patches have),
    set-wise, and record them in span_updates."""
    rows = []
    ctx = ReadContext(path=None)  # type: ignore[arg-type]
    for (trace_id, span_id), update in updates.items():
        patch = update.patch
        row = _run_row({**patch, "start_time": update.start_time}, 0, ctx)
        outputs = patch.get("outputs") if isinstance(patch.get("outputs"), dict) else None
        out_msgs = row["output_messages"] if outputs else None
        rows.append((
            trace_id, span_id, update.start_time, row["end_time"], row["output_text"] if outputs else None,
            json.dumps(out_msgs, ensure_ascii=False) if out_msgs else None,
            row["input_tokens"], row["output_tokens"], row["finish_reason"], (outputs or {}).get("model"), row["cost_usd"],
            bool(patch.get("error")), row["error_type"], update.source_file, update.source_line,
        ))
    con.execute(f"CREATE OR REPLACE TEMP TABLE langsmith_patched ({_UPDATE_COLUMNS})")
    # One statement for all the rows, a list per column (executemany costs ~1 ms a row).
    types = [c.strip().rsplit(" ", 1)[1] for c in _UPDATE_COLUMNS.split(",")]
    con.execute(f"INSERT INTO langsmith_patched SELECT {', '.join(f'unnest(?::{t}[])' for t in types)}",
                [list(c) for c in zip(*rows, strict=True)])
    # Priced as the model the span will have: the patch's response model, else the span's.
    con.execute(
        "CREATE OR REPLACE TEMP TABLE langsmith_updates AS SELECT u.*, coalesce(u.model, s.model) AS priced_model "
        "FROM langsmith_patched u JOIN spans s USING (trace_id, span_id)"
    )
    con.execute("DROP TABLE langsmith_patched")
    models = [r[0] for r in con.execute("SELECT DISTINCT priced_model FROM langsmith_updates WHERE priced_model IS NOT NULL").fetchall()]
    prices = [(m, p.input_per_mtok, p.output_per_mtok) for m in models if (p := load.price_for(m)) is not None]
    con.execute("CREATE OR REPLACE TEMP TABLE langsmith_update_prices (model VARCHAR, input_per_mtok DOUBLE, output_per_mtok DOUBLE)")
    if prices:
        con.executemany("INSERT INTO langsmith_update_prices VALUES (?, ?, ?)", prices)
    cap = int(load.text_cap)
    latency = "date_diff('microsecond', spans.start_time, u.end_time) / 1000.0"
    inp, outp = "coalesce(u.input_tokens, spans.input_tokens)", "coalesce(u.output_tokens, spans.output_tokens)"
    computed = f"p.input_per_mtok * {inp} / 1e6 + p.output_per_mtok * {outp} / 1e6"
    keeps_cost = "u.cost_usd IS NULL AND (spans.cost_source = 'reported' OR p.model IS NULL OR " + f"({computed}) IS NULL)"
    con.execute(
        f"""
        UPDATE spans SET
            end_time = coalesce(u.end_time, spans.end_time),
            latency_ms = CASE WHEN u.end_time IS NULL THEN spans.latency_ms
                              ELSE {span_latency_sql("spans.start_time", "u.end_time", latency)} END,
            anomalies = CASE WHEN u.end_time IS NULL THEN spans.anomalies
                             ELSE {span_anomalies_sql("spans.start_time", "u.end_time", latency)} END,
            output_text = coalesce(left(u.output_text, {cap}), spans.output_text),
            output_truncated = CASE WHEN u.output_text IS NULL AND u.output_messages IS NULL THEN spans.output_truncated
                                    ELSE coalesce(length(u.output_text) > {cap} OR {messages_over_cap_sql("u.output_messages", cap)},
                                                  false) END,
            output_messages = coalesce({capped_messages_sql("u.output_messages", cap)}, spans.output_messages),
            input_tokens = {inp},
            output_tokens = {outp},
            finish_reason = coalesce(u.finish_reason, spans.finish_reason),
            model = coalesce(u.model, spans.model),
            cost_usd = CASE WHEN u.cost_usd IS NOT NULL THEN u.cost_usd WHEN {keeps_cost} THEN spans.cost_usd ELSE {computed} END,
            cost_source = CASE WHEN u.cost_usd IS NOT NULL THEN 'reported' WHEN {keeps_cost} THEN spans.cost_source ELSE 'computed' END,
            status = CASE WHEN u.is_error THEN 'error' WHEN u.end_time IS NOT NULL AND spans.status = 'unset' THEN 'ok'
                          ELSE spans.status END,
            error_type = coalesce(u.error_type, spans.error_type)
        FROM langsmith_updates u LEFT JOIN langsmith_update_prices p ON p.model = u.priced_model
        WHERE spans.trace_id = u.trace_id AND spans.span_id = u.span_id
        """
    )
    con.execute(
        "INSERT INTO span_updates SELECT ?, trace_id, span_id, start_time, source_file, source_line, 'langsmith patch', ? "
        "FROM langsmith_updates",
        [load.batch_id, load.started],
    )
    con.execute("DROP TABLE langsmith_updates")
    con.execute("DROP TABLE langsmith_update_prices")
