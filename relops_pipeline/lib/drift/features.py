"""Per-request features: one `trace_features` row per (workflow, trace), computed in DuckDB
from the warehouse `spans`.

A trace belongs to the UTC day of its first span's start. Computing days [start, end) scans
spans from start - 1 day (to see whether a trace began the day before) to end + 1 day (so a
trace crossing midnight is whole), and keeps the traces whose first span starts inside.

Column meanings:

- release: the root span's release (else the first span's).
- spans / llm_calls: all spans / spans with kind 'llm'.
- latency_ms: the root span's latency (parent_span_id NULL; the earliest root when there are
  several); without a root, max(end_time) - min(start_time) (the end times of spans flagged in
  `anomalies` left out). NULL when the root is flagged (it ends before it starts: clock skew)
  or every span is: the request still counts, it only leaves the latency statistics (drift and
  canary drop NULL values).
- input_tokens, output_tokens, cost_usd: sums over llm spans (NULL when nothing to sum).
- input_chars / input_words: the user's input, taken from the first of: the root span's
  input_text; else the earliest span among llm and retrieval spans that carries an input (an
  llm span's input_text; a retrieval span's input_text or its query attribute, see
  RETRIEVAL_QUERY_KEYS). Retrieval counts because in a RAG workflow the model's prompt holds
  the retrieved documents, so its length measures the release's top_k, not what the user
  asked. When that text is a JSON list of chat messages (or an object with `messages` or
  `prompt`), only the user messages' text parts count. Words are runs of non-space
  characters (Evidently's WordCount drops every non-ASCII letter, which undercounts most
  languages other than English).
- output_chars / output_words / output_json_valid: the final output: the root span's
  output_text, else the output_text of the last llm span (by start time; NULL when that call
  produced none, e.g. it failed). output_json_valid is true when that text is a JSON object
  or array (a bare JSON string or number in a plain-text answer is not "valid JSON output").
- is_error: any span has status 'error'. is_refusal: any llm span ends with finish_reason
  'content_filter' or its output matches lib.signals.REFUSAL_PATTERNS.
- finish_reason / model: of the last llm call (NULL when it has none).
- topic / intent / language: the first non-empty attribute among DEFAULT_DIMENSION_KEYS
  (ordered), preferring the root span, then the earliest span that has one.
- feedback: mean feedback_score over the trace's spans. online_scores: JSON {name: mean} of
  the numeric values of every span's online_scores (NULL when none).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from relops_pipeline.lib.signals import REFUSAL_PATTERNS
from relops_pipeline.lib.timeutil import utc_naive

# Ordered attribute keys per dimension: the first non-empty value wins. One place only.
DEFAULT_DIMENSION_KEYS: dict[str, tuple[str, ...]] = {
    "topic": (
        "relops.topic",
        "topic",
        "intent.topic",
        "ticket.topic",
        "metadata.topic",
        "ai.telemetry.metadata.topic",
        "langfuse.trace.metadata.topic",
    ),
    "intent": (
        "relops.intent",
        "intent",
        "intent.name",
        "user.intent",
        "metadata.intent",
        "ai.telemetry.metadata.intent",
        "langfuse.trace.metadata.intent",
    ),
    "language": (
        "relops.language",
        "language",
        "user.language",
        "request.language",
        "metadata.language",
        "ai.telemetry.metadata.language",
        "langfuse.trace.metadata.language",
    ),
}

# Traces are computed in buckets of hash(trace_id) holding about this many spans each: a trace
# stays whole in one bucket, and DuckDB's aggregation state (which keeps every span's input and
# output text until its trace is done) stays bounded however many spans the days hold.
# Measured on 1M one-span traces of one day: one pass peaked at 3.4 GB, buckets of 250k spans
# at 1.1 GB, of 100k at 0.7 GB and of 50k at 0.55 GB (each bucket rescans the days' spans, so
# smaller buckets cost time: 100k is the compromise).
BUCKET_SPANS = 100_000

# Restricts a query over spans or trace_features to the traces staged by _stage_touched_traces.
_TOUCHED = "AND trace_id IN (SELECT trace_id FROM touched_traces)"

# A retrieval span without input_text may carry the user's query in one of these attributes.
RETRIEVAL_QUERY_KEYS: tuple[str, ...] = ("gen_ai.retrieval.query.text", "retrieval.query", "query")


def _json_path(key: str) -> str:
    return '$."' + key.replace('"', '\\"') + '"'


def _first_attr_sql(keys: Sequence[str], attrs: str = "attributes") -> str:
    """SQL: the first non-empty value among `keys` of a flat JSON attribute object."""
    paths = ", ".join("'" + _json_path(k).replace("'", "''") + "'" for k in keys)
    return f"list_filter(json_extract_string({attrs}, [{paths}]), lambda x: x IS NOT NULL AND trim(x) <> '')[1]"


def _message_text_sql(m: str) -> str:
    """SQL: the text of one chat message (JSON): content string, content[].text or
    parts[].content of text parts."""
    return f"""CASE json_type({m}, '$.content')
        WHEN 'VARCHAR' THEN {m}->>'content'
        WHEN 'ARRAY' THEN array_to_string(list_filter(list_transform(json_extract({m}, '$.content[*]'),
            lambda p: CASE WHEN json_type(p) = 'VARCHAR' THEN p->>'$'
                      WHEN coalesce(p->>'type', 'text') IN ('text', 'input_text') THEN coalesce(p->>'text', p->>'content') END),
            lambda x: x IS NOT NULL), '\n')
        ELSE array_to_string(list_filter(list_transform(json_extract({m}, '$.parts[*]'),
            lambda p: CASE WHEN coalesce(p->>'type', 'text') = 'text' THEN coalesce(p->>'content', p->>'text') END),
            lambda x: x IS NOT NULL), '\n')
    END"""


def _user_text_sql(t: str) -> str:
    """SQL: the user's text of a prompt: the user messages' text when `t` is a JSON message
    list (or an object holding `messages` / `prompt`), else `t` itself."""

    def msgs(j: str) -> str:
        return f"""nullif(array_to_string(list_filter(list_transform(
            list_filter(json_extract({j}, '$[*]'), lambda m: coalesce(m->>'role', m->>'type', 'user') IN ('user', 'human')),
            lambda m: nullif({_message_text_sql("m")}, '')), lambda x: x IS NOT NULL), '\n'), '')"""

    return f"""(CASE
        WHEN {t} IS NULL THEN NULL
        WHEN NOT json_valid({t}) THEN {t}
        WHEN json_type({t}) = 'ARRAY' THEN coalesce({msgs(t)}, {t})
        WHEN json_type({t}) = 'OBJECT' AND json_type({t}, '$.messages') = 'ARRAY'
            THEN coalesce({msgs(f"json_extract({t}, '$.messages')")}, {t})
        WHEN json_type({t}) = 'OBJECT' AND json_type({t}, '$.prompt') = 'VARCHAR' THEN {t}->>'prompt'
        WHEN json_type({t}) = 'VARCHAR' THEN {t}->>'$'
        ELSE {t}
    END)"""


def _words_sql(x: str) -> str:
    return f"CASE WHEN {x} IS NULL THEN NULL ELSE len(regexp_extract_all({x}, '\\S+')) END"


def _features_sql(dimension_keys: Mapping[str, Sequence[str]], *, touched_only: bool = False) -> str:
    dims = ",\n        ".join(f"{_first_attr_sql(dimension_keys[d])} AS dim_{d}" for d in ("topic", "intent", "language"))
    query_attr = _first_attr_sql(RETRIEVAL_QUERY_KEYS)
    # Sort key preferring the root span, then the earliest span.
    root_first = "{'r': parent_span_id IS NOT NULL, 't': start_time}"
    return f"""
WITH s AS (
    SELECT
        coalesce(workflow, 'unknown') AS workflow, coalesce(release, 'unknown') AS release,
        trace_id, parent_span_id, kind, status, start_time, end_time, latency_ms,
        anomalies IS NOT NULL AS anomalous,
        input_tokens, output_tokens, cost_usd, finish_reason, model, feedback_score, online_scores,
        input_text, output_text,
        CASE WHEN kind = 'retrieval' THEN coalesce(input_text, {query_attr})
             WHEN kind = 'llm' THEN input_text END AS step_input,
        {dims}
    FROM spans
    WHERE start_time >= CAST($scan_lo AS TIMESTAMP) AND start_time < CAST($scan_hi AS TIMESTAMP)
      AND trace_id IS NOT NULL AND hash(trace_id) % $buckets = $bucket
      {_TOUCHED if touched_only else ""}
),
t AS (
    SELECT
        workflow, trace_id,
        min(start_time) AS start_time,
        arg_min(release, {root_first}) AS release,
        count(*) AS spans,
        count(*) FILTER (WHERE kind = 'llm') AS llm_calls,
        CASE WHEN arg_min_null(anomalous, start_time) FILTER (WHERE parent_span_id IS NULL) THEN NULL
        ELSE coalesce(
            arg_min(latency_ms, start_time) FILTER (WHERE parent_span_id IS NULL),
            date_diff('microsecond', min(start_time),
                      max(coalesce(end_time, start_time)) FILTER (WHERE NOT anomalous)) / 1000.0
        ) END AS latency_ms,
        sum(input_tokens) FILTER (WHERE kind = 'llm') AS input_tokens,
        sum(output_tokens) FILTER (WHERE kind = 'llm') AS output_tokens,
        sum(cost_usd) FILTER (WHERE kind = 'llm') AS cost_usd,
        coalesce(
            arg_min(input_text, start_time) FILTER (WHERE parent_span_id IS NULL),
            arg_min(step_input, start_time)
        ) AS user_input_raw,
        CASE WHEN bool_or(parent_span_id IS NULL AND output_text IS NOT NULL)
             THEN arg_min(output_text, start_time) FILTER (WHERE parent_span_id IS NULL)
             ELSE arg_max_null(output_text, start_time) FILTER (WHERE kind = 'llm') END AS final_output,
        bool_or(status = 'error') AS is_error,
        coalesce(bool_or(kind = 'llm' AND (
            finish_reason = 'content_filter'
            OR coalesce(regexp_matches(output_text, $refusal, 'i'), false)
        )), false) AS is_refusal,
        arg_max_null(finish_reason, start_time) FILTER (WHERE kind = 'llm') AS finish_reason,
        arg_max_null(model, start_time) FILTER (WHERE kind = 'llm') AS model,
        arg_min(dim_topic, {root_first}) AS topic,
        arg_min(dim_intent, {root_first}) AS intent,
        arg_min(dim_language, {root_first}) AS language,
        avg(feedback_score) AS feedback
    FROM s
    GROUP BY workflow, trace_id
    HAVING min(start_time) >= CAST($start AS TIMESTAMP) AND min(start_time) < CAST($end AS TIMESTAMP)
),
scores AS (
    SELECT workflow, trace_id, to_json(map(list(key ORDER BY key), list(mean ORDER BY key))) AS j
    FROM (
        SELECT s.workflow, s.trace_id, e.key, avg(CAST(e.value AS DOUBLE)) AS mean
        FROM s, json_each(s.online_scores) AS e
        WHERE s.online_scores IS NOT NULL AND e.type IN ('UBIGINT', 'BIGINT', 'DOUBLE')
        GROUP BY ALL
    ) GROUP BY workflow, trace_id
),
f AS (
    SELECT t.*, {_user_text_sql("t.user_input_raw")} AS user_input, scores.j AS online_scores
    FROM t LEFT JOIN scores USING (workflow, trace_id)
)
INSERT INTO trace_features (
    day, workflow, release, trace_id, start_time, spans, llm_calls, latency_ms, input_tokens,
    output_tokens, cost_usd, input_chars, input_words, output_chars, output_words,
    output_json_valid, is_error, is_refusal, finish_reason, model, topic, intent, language,
    feedback, online_scores, computed_at
)
SELECT
    CAST(start_time AS DATE), workflow, release, trace_id, start_time, spans, llm_calls,
    latency_ms, input_tokens, output_tokens, cost_usd,
    length(user_input), {_words_sql("user_input")},
    length(final_output), {_words_sql("final_output")},
    CASE WHEN final_output IS NULL THEN NULL
         WHEN json_valid(final_output) THEN json_type(final_output) IN ('OBJECT', 'ARRAY')
         ELSE false END,
    is_error, is_refusal, finish_reason, model,
    trim(topic), trim(intent), trim(language),
    feedback, online_scores, CAST($now AS TIMESTAMP)
FROM f
ORDER BY start_time, workflow, trace_id
"""


def compute_trace_features(
    con,
    start: dt.date,
    end: dt.date,
    *,
    dimension_keys: Mapping[str, Sequence[str]] | None = None,
    batch_ids: Sequence[str] | None = None,
) -> int:
    """Replace the `trace_features` rows of the days [start, end) and return how many were
    written (one per workflow and trace whose first span starts in the window).

    Idempotent: the days' rows are deleted and recomputed in one transaction (in buckets of
    traces of about BUCKET_SPANS spans each, so memory stays bounded); a day without
    traces ends with no rows. `dimension_keys` overrides DEFAULT_DIMENSION_KEYS per dimension
    (topic, intent, language). `con` must not be inside a transaction already.

    With `batch_ids` (the ingest batches just committed), only the traces those batches touched
    are replaced: traces with a span of theirs, a span they completed (span_updates) or a span
    whose text their GenAI events filled. Every span of such a trace is read, so its row equals
    what a whole-day recompute gives, and the cost follows what the batches touched, not what
    the days hold. The returned count is then the rows written for those traces; every row of
    the days gets the new computed_at, which means "the day's features reflect every batch
    finished before this time" (what lib/health.stale_days and `pending_batches` read).
    """
    if end <= start:
        return 0
    keys = {**DEFAULT_DIMENSION_KEYS, **{k: tuple(v) for k, v in (dimension_keys or {}).items()}}
    unknown = sorted(set(keys) - set(DEFAULT_DIMENSION_KEYS))
    if unknown:
        raise ValueError(f"dimension_keys: unknown dimensions {unknown} (known: topic, intent, language)")
    one_day = dt.timedelta(days=1)
    params = {
        "scan_lo": start - one_day,
        "scan_hi": end + one_day,
        "start": start,
        "end": end,
        "refusal": REFUSAL_PATTERNS,
        "now": utc_naive(),
    }
    touched_only = batch_ids is not None
    if touched_only:
        _stage_touched_traces(con, list(batch_ids or []))
    n_spans = con.execute(
        "SELECT count(*) FROM spans WHERE start_time >= CAST($scan_lo AS TIMESTAMP) "
        "AND start_time < CAST($scan_hi AS TIMESTAMP) AND trace_id IS NOT NULL"
        + (f" {_TOUCHED}" if touched_only else ""),
        {"scan_lo": params["scan_lo"], "scan_hi": params["scan_hi"]},
    ).fetchall()[0][0]
    buckets = max(1, -(-int(n_spans) // BUCKET_SPANS))
    sql = _features_sql(keys, touched_only=touched_only)
    written = 0
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM trace_features WHERE day >= ? AND day < ?"
                    + (f" {_TOUCHED}" if touched_only else ""), [start, end])
        for bucket in range(buckets):
            rows = con.execute(sql, {**params, "buckets": buckets, "bucket": bucket}).fetchall()
            written += int(rows[0][0]) if rows else 0
        if touched_only:
            con.execute("UPDATE trace_features SET computed_at = ? WHERE day >= ? AND day < ?", [params["now"], start, end])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        if touched_only:
            con.execute("DROP TABLE IF EXISTS touched_traces")
    return written


def pending_batches(con, start: dt.date, end: dt.date) -> list[str] | None:
    """The ingest batches the features of the days [start, end) do not reflect yet: batches
    finished at or after the days' oldest features row whose spans (or the spans their events
    and updates changed) start within a day of the window. None when the days have no features
    yet: then all of it is to compute."""
    oldest = con.execute("SELECT min(computed_at) FROM trace_features WHERE day >= ? AND day < ?", [start, end]).fetchone()[0]
    if oldest is None:
        return None
    one_day = dt.timedelta(days=1)
    rows = con.execute(
        "SELECT batch_id FROM ingest_batches WHERE finished_at >= ? AND min_start_time < ? AND max_start_time >= ? "
        "ORDER BY batch_id", [oldest, end + one_day, start - one_day]).fetchall()
    return [r[0] for r in rows]


def _stage_touched_traces(con, batch_ids: list[str]) -> None:
    """TEMP table touched_traces(trace_id): the traces the batches changed."""
    con.execute("CREATE OR REPLACE TEMP TABLE touched_batches (batch_id VARCHAR)")
    if batch_ids:
        con.executemany("INSERT INTO touched_batches VALUES (?)", [[b] for b in batch_ids])
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE touched_traces AS
        SELECT DISTINCT trace_id FROM (
            SELECT trace_id FROM spans WHERE ingest_batch_id IN (SELECT batch_id FROM touched_batches)
            UNION ALL
            SELECT trace_id FROM span_updates WHERE ingest_batch_id IN (SELECT batch_id FROM touched_batches)
            UNION ALL
            SELECT trace_id FROM genai_events WHERE ingest_batch_id IN (SELECT batch_id FROM touched_batches)
        ) WHERE trace_id IS NOT NULL
        """
    )
    con.execute("DROP TABLE touched_batches")
