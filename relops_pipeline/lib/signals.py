"""Daily business signals per workflow and release, computed in DuckDB from warehouse `spans`.

One `daily_signals` row per day × workflow × release, from the spans whose start_time (naive
UTC) falls on that day. Definitions:

- spans: all spans; llm_calls: spans with kind 'llm'; traces: distinct trace_id.
- errors: spans with status 'error' (a count of SPANS).
- error_rate: failed TRACES / traces, where a trace fails when any of its spans in the group
  has status 'error'. A request with one failed tool call is a failed request to its user;
  a per-span rate would shrink as traces get more spans.
- latency_p50/p95/p99_ms: exact quantiles (quantile_cont) of request latency, one sample per
  ROOT span (parent_span_id NULL). A trace with no root span in the group (its root started
  on another day, or the export was partial) contributes the latencies of its llm spans
  instead, so a day never loses its slow partial traces. A span kept with latency NULL (it
  ends before it starts: clock skew, flagged in `anomalies`) counts in spans, traces, errors
  and everything else, but gives no latency sample.
- input_tokens, output_tokens, cost_usd: sums over llm spans only, ignoring NULLs (NULL when
  there is nothing to sum). Agent/chain spans often repeat their children's totals; summing
  them too would double count.
- finish_reasons: JSON {reason: count} over llm spans with a finish reason ({} when none).
- refusals: llm spans whose finish_reason is 'content_filter' or whose output_text matches
  REFUSAL_PATTERNS (case-insensitive); refusal_rate = refusals / llm_calls (NULL without llm
  calls).
- feedback_n / feedback_mean: count and mean of feedback_score over all spans that have one.
- online_scores: JSON {name: mean} over the numeric values of every span's online_scores
  object ({} when none); non-numeric values are ignored.
- computed_at: UTC time of the computation.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from relops_pipeline.lib.timeutil import utc_naive

# Refusal phrases, matched anywhere in the output (RE2 syntax for DuckDB, also valid for
# Python `re`). Kept specific ("I cannot help with/you", not "I cannot help") to avoid
# "I cannot help but notice".
REFUSAL_PATTERNS = (
    r"I(?:'|’| a)?m sorry, but I (?:can(?:'|’|no)?t|can not|won(?:'|’)t|am not able to|am unable to)"
    r"|I (?:cannot|can(?:'|’)t|can not|won(?:'|’)t|will not) (?:help|assist)(?: you)? with"
    r"|I (?:cannot|can(?:'|’)t|can not) (?:help|assist) you\b"
    r"|I (?:cannot|can(?:'|’)t|can not) (?:comply|fulfill|provide that)"
    r"|I(?:'|’)m (?:unable|not able) to (?:help|assist|comply|provide)"
    r"|I am (?:unable|not able) to"
)

_SIGNALS_SQL = """
WITH s AS (
    SELECT
        CAST(start_time AS DATE) AS day,
        coalesce(workflow, 'unknown') AS wf,
        coalesce(release, 'unknown') AS rel,
        trace_id, parent_span_id, kind, status, latency_ms, input_tokens, output_tokens,
        cost_usd, finish_reason, output_text, feedback_score, online_scores
    FROM spans
    WHERE start_time >= CAST($start AS TIMESTAMP) AND start_time < CAST($end AS TIMESTAMP)
),
per_trace AS (
    SELECT day, wf, rel, trace_id,
           bool_or(parent_span_id IS NULL) AS has_root,
           bool_or(status = 'error') AS failed
    FROM s GROUP BY day, wf, rel, trace_id
),
latency AS (
    SELECT s.day, s.wf, s.rel, quantile_cont(s.latency_ms, [0.5, 0.95, 0.99]) AS q
    FROM s JOIN per_trace t USING (day, wf, rel, trace_id)
    WHERE (t.has_root AND s.parent_span_id IS NULL) OR (NOT t.has_root AND s.kind = 'llm')
    GROUP BY s.day, s.wf, s.rel
),
trace_stats AS (
    SELECT day, wf, rel, count(*) FILTER (WHERE failed) AS failed_traces
    FROM per_trace GROUP BY day, wf, rel
),
reasons AS (
    SELECT day, wf, rel,
           to_json(map(list(finish_reason ORDER BY finish_reason), list(n ORDER BY finish_reason))) AS j
    FROM (
        SELECT day, wf, rel, finish_reason, count(*) AS n
        FROM s WHERE kind = 'llm' AND finish_reason IS NOT NULL
        GROUP BY day, wf, rel, finish_reason
    ) GROUP BY day, wf, rel
),
scores AS (
    SELECT day, wf, rel, to_json(map(list(key ORDER BY key), list(mean ORDER BY key))) AS j
    FROM (
        SELECT s.day, s.wf, s.rel, e.key, avg(CAST(e.value AS DOUBLE)) AS mean
        FROM s, json_each(s.online_scores) AS e
        WHERE s.online_scores IS NOT NULL AND e.type IN ('UBIGINT', 'BIGINT', 'DOUBLE')
        GROUP BY s.day, s.wf, s.rel, e.key
    ) GROUP BY day, wf, rel
),
base AS (
    SELECT day, wf, rel,
           count(*) AS spans,
           count(*) FILTER (WHERE kind = 'llm') AS llm_calls,
           count(DISTINCT trace_id) AS traces,
           count(*) FILTER (WHERE status = 'error') AS errors,
           sum(input_tokens) FILTER (WHERE kind = 'llm') AS input_tokens,
           sum(output_tokens) FILTER (WHERE kind = 'llm') AS output_tokens,
           sum(cost_usd) FILTER (WHERE kind = 'llm') AS cost_usd,
           count(*) FILTER (WHERE kind = 'llm' AND (
               finish_reason = 'content_filter'
               OR coalesce(regexp_matches(output_text, $refusal, 'i'), false)
           )) AS refusals,
           count(feedback_score) AS feedback_n,
           avg(feedback_score) AS feedback_mean
    FROM s GROUP BY day, wf, rel
)
INSERT INTO daily_signals (
    day, workflow, release, spans, llm_calls, traces, errors, error_rate,
    latency_p50_ms, latency_p95_ms, latency_p99_ms, input_tokens, output_tokens, cost_usd,
    finish_reasons, refusals, refusal_rate, feedback_n, feedback_mean, online_scores, computed_at
)
SELECT
    b.day, b.wf, b.rel, b.spans, b.llm_calls, b.traces, b.errors,
    t.failed_traces / b.traces,
    l.q[1], l.q[2], l.q[3],
    b.input_tokens, b.output_tokens, b.cost_usd,
    coalesce(r.j, '{}'::JSON),
    b.refusals,
    CASE WHEN b.llm_calls > 0 THEN b.refusals / b.llm_calls END,
    b.feedback_n, b.feedback_mean,
    coalesce(o.j, '{}'::JSON),
    CAST($now AS TIMESTAMP)
FROM base b
JOIN trace_stats t USING (day, wf, rel)
LEFT JOIN latency l USING (day, wf, rel)
LEFT JOIN reasons r USING (day, wf, rel)
LEFT JOIN scores o USING (day, wf, rel)
ORDER BY b.day, b.wf, b.rel
"""


def compute_daily_signals(con, start_day: dt.date, end_day: dt.date) -> int:
    """Recompute `daily_signals` for the days in [start_day, end_day) and return the number
    of rows written.

    The days' old rows are deleted and the new ones inserted in one transaction, so a re-run
    gives the same rows (up to computed_at) and a day without spans ends with no rows.
    `con` must not be inside a transaction already.
    """
    if end_day <= start_day:
        return 0
    now = utc_naive()
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM daily_signals WHERE day >= ? AND day < ?", [start_day, end_day])
        row = con.execute(
            _SIGNALS_SQL,
            {"start": start_day, "end": end_day, "refusal": REFUSAL_PATTERNS, "now": now},
        ).fetchone()
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return int(row[0]) if row else 0


def days_touched(con, batch_ids: Sequence[str]) -> list[dt.date]:
    """The UTC days, ascending, on which spans of the given ingest batches start."""
    ids = list(batch_ids)
    if not ids:
        return []
    rows = con.execute(
        "SELECT DISTINCT CAST(start_time AS DATE) AS day FROM spans "
        "WHERE ingest_batch_id IN (SELECT unnest(?::VARCHAR[])) AND start_time IS NOT NULL "
        "ORDER BY day",
        [ids],
    ).fetchall()
    return [r[0] for r in rows]
