"""daily_signals from hand-made spans, with every expected value computed by hand."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from relops_pipeline.lib.schema import SPAN_COLUMNS
from relops_pipeline.lib.signals import REFUSAL_PATTERNS, compute_daily_signals, days_touched

D1 = dt.date(2025, 3, 10)
D2 = dt.date(2025, 3, 11)
D3 = dt.date(2025, 3, 12)
D4 = dt.date(2025, 3, 13)


def at(day: dt.date, h=10, m=0, s=0, us=0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, h, m, s, us)


_counter = iter(range(1_000_000))


def span(**kw) -> dict:
    """A warehouse spans row: SPAN_COLUMNS, NULL by default, with a few sensible defaults."""
    row = {name: None for name, _ in SPAN_COLUMNS}
    row.update(
        span_id=f"s{next(_counter)}",
        kind="other",
        status="ok",
        workflow="support",
        release="v1",
        release_known=True,
        start_time=at(D1),
        source_format="test",
        source_file="test.jsonl",
        ingest_batch_id="b1",
        ingested_at=at(D1, 23),
    )
    row.update(kw)
    if row["latency_ms"] is not None and row["end_time"] is None:
        row["end_time"] = row["start_time"] + dt.timedelta(milliseconds=row["latency_ms"])
    for col in ("online_scores", "attributes"):
        if isinstance(row[col], dict):
            row[col] = json.dumps(row[col])
    return row


def insert_spans(con, rows: list[dict]) -> None:
    cols = [name for name, _ in SPAN_COLUMNS]
    con.executemany(
        f"INSERT INTO spans ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
        [[r[c] for c in cols] for r in rows],
    )


def tiny_warehouse_rows() -> list[dict]:
    rows = []
    # (D1, support, v1): four traces.
    # T1: ok; root carries aggregated tokens that must not be summed again.
    rows += [
        span(trace_id="T1", span_id="r1", kind="agent", latency_ms=1000, input_tokens=120,
             output_tokens=20, cost_usd=0.5, feedback_score=1.0,
             online_scores={"helpfulness": 0.8, "toxicity": 0, "label": "good"}),
        span(trace_id="T1", parent_span_id="r1", kind="llm", latency_ms=400, input_tokens=100,
             output_tokens=20, cost_usd=0.01, finish_reason="stop",
             output_text="Paris is the capital of France."),
        # A tool's output that reads like a refusal is not an llm refusal.
        span(trace_id="T1", parent_span_id="r1", kind="tool", latency_ms=50,
             output_text="I can't assist with that request."),
    ]
    # T2: a failed tool call (error trace) and a content-filtered llm call (refusal).
    rows += [
        span(trace_id="T2", span_id="r2", kind="agent", latency_ms=3000, feedback_score=0.0,
             online_scores={"helpfulness": 0.4}),
        span(trace_id="T2", parent_span_id="r2", kind="llm", latency_ms=2500, input_tokens=200,
             output_tokens=0, cost_usd=None, finish_reason="content_filter", output_text=""),
        span(trace_id="T2", parent_span_id="r2", kind="tool", latency_ms=10, status="error",
             error_type="TimeoutError"),
    ]
    # T3: a refusal found by the phrase (typographic apostrophes).
    rows += [
        span(trace_id="T3", span_id="r3", kind="agent", latency_ms=2000),
        span(trace_id="T3", parent_span_id="r3", kind="llm", latency_ms=1500, input_tokens=50,
             output_tokens=30, cost_usd=0.02, finish_reason="stop",
             output_text="I\u2019m sorry, but I can\u2019t help with that."),
    ]
    # T4: its root is not in the warehouse: the llm span stands in for request latency.
    rows += [
        span(trace_id="T4", parent_span_id="gone", kind="llm", latency_ms=800, input_tokens=10,
             output_tokens=5, cost_usd=0.001, finish_reason="length",
             output_text="I cannot help but notice the question is ambiguous; here are both."),
    ]
    # (D1, support, v2): one trace, error on the root.
    rows += [
        span(trace_id="T5", span_id="r5", release="v2", kind="agent", latency_ms=500, status="error"),
        span(trace_id="T5", parent_span_id="r5", release="v2", kind="llm", latency_ms=300,
             input_tokens=10, output_tokens=10, finish_reason="stop", output_text="ok",
             ingest_batch_id="b2"),
    ]
    # (D1, search, v1): no llm call; starts in the last millisecond of D1.
    rows += [
        span(trace_id="T6", workflow="search", kind="retrieval", latency_ms=120,
             start_time=at(D1, 23, 59, 59, 999_000), ingest_batch_id="b2"),
    ]
    # (D2, support, v1): starts exactly at midnight.
    rows += [
        span(trace_id="T7", kind="llm", latency_ms=700, input_tokens=1, output_tokens=2,
             finish_reason="stop", output_text="I am unable to access that file.",
             start_time=at(D2, 0), ingest_batch_id="b2"),
    ]
    return rows


@pytest.fixture
def wh(wh):
    """conftest's empty warehouse with the tiny rows."""
    insert_spans(wh, tiny_warehouse_rows())
    return wh


def signals(con) -> dict[tuple, dict]:
    cur = con.execute("SELECT * FROM daily_signals ORDER BY day, workflow, release")
    names = [d[0] for d in cur.description]
    out = {}
    for values in cur.fetchall():
        row = dict(zip(names, values, strict=False))
        for col in ("finish_reasons", "online_scores"):
            row[col] = json.loads(row[col]) if row[col] is not None else None
        out[(row["day"], row["workflow"], row["release"])] = row
    return out


def test_hand_computed_values(wh):
    assert compute_daily_signals(wh, D1, D2) == 3
    got = signals(wh)
    assert set(got) == {(D1, "search", "v1"), (D1, "support", "v1"), (D1, "support", "v2")}

    a = got[(D1, "support", "v1")]
    assert (a["spans"], a["llm_calls"], a["traces"], a["errors"]) == (9, 4, 4, 1)
    assert a["error_rate"] == pytest.approx(1 / 4)  # one failed trace (T2) of four
    # Samples: roots 1000, 3000, 2000 and T4's llm span 800 -> sorted 800, 1000, 2000, 3000.
    assert a["latency_p50_ms"] == pytest.approx(1500)  # 1000 + 0.5 * 1000
    assert a["latency_p95_ms"] == pytest.approx(2850)  # pos 2.85: 2000 + 0.85 * 1000
    assert a["latency_p99_ms"] == pytest.approx(2970)
    assert (a["input_tokens"], a["output_tokens"]) == (360, 55)  # llm spans only
    assert a["cost_usd"] == pytest.approx(0.031)  # 0.01 + NULL + 0.02 + 0.001, root's 0.5 excluded
    assert a["finish_reasons"] == {"content_filter": 1, "length": 1, "stop": 2}
    assert a["refusals"] == 2  # T2 content_filter, T3 phrase; not T4's "cannot help but"
    assert a["refusal_rate"] == pytest.approx(0.5)
    assert a["feedback_n"] == 2 and a["feedback_mean"] == pytest.approx(0.5)
    assert a["online_scores"] == {"helpfulness": pytest.approx(0.6), "toxicity": 0}
    assert isinstance(a["computed_at"], dt.datetime)

    b = got[(D1, "support", "v2")]
    assert (b["spans"], b["llm_calls"], b["traces"], b["errors"]) == (2, 1, 1, 1)
    assert b["error_rate"] == 1.0
    assert b["latency_p50_ms"] == b["latency_p95_ms"] == b["latency_p99_ms"] == 500  # root only
    assert (b["input_tokens"], b["output_tokens"], b["cost_usd"]) == (10, 10, None)
    assert (b["refusals"], b["refusal_rate"]) == (0, 0.0)
    assert (b["feedback_n"], b["feedback_mean"]) == (0, None)
    assert b["online_scores"] == {}

    c = got[(D1, "search", "v1")]
    assert (c["spans"], c["llm_calls"], c["traces"], c["errors"], c["error_rate"]) == (1, 0, 1, 0, 0.0)
    assert c["latency_p50_ms"] == 120
    assert (c["input_tokens"], c["output_tokens"], c["cost_usd"]) == (None, None, None)
    assert c["finish_reasons"] == {}
    assert (c["refusals"], c["refusal_rate"]) == (0, None)


def test_day_boundaries_and_second_day(wh):
    assert compute_daily_signals(wh, D2, D3) == 1
    d2 = signals(wh)[(D2, "support", "v1")]
    assert (d2["spans"], d2["llm_calls"], d2["refusals"]) == (1, 1, 1)  # "I am unable to"
    # T7 is an llm span with no parent: it is its own root.
    assert d2["latency_p50_ms"] == 700
    assert compute_daily_signals(wh, D1, D3) == 4
    assert compute_daily_signals(wh, D2, D2) == 0


def test_idempotent(wh):
    def stable(con):
        return {k: {c: v for c, v in r.items() if c != "computed_at"} for k, r in signals(con).items()}

    assert compute_daily_signals(wh, D1, D3) == 4
    first = stable(wh)
    assert compute_daily_signals(wh, D1, D3) == 4
    assert wh.execute("SELECT count(*) FROM daily_signals").fetchone()[0] == 4
    assert stable(wh) == first


def test_day_without_spans_deletes_stale_rows(wh):
    stale = (
        "INSERT INTO daily_signals (day, workflow, release, spans, llm_calls, traces, errors, "
        "refusals, feedback_n, computed_at) VALUES (?, 'old', 'v0', 5, 0, 1, 0, 0, 0, ?)"
    )
    wh.execute(stale, [D3, at(D3)])
    wh.execute(stale, [D4, at(D4)])
    assert compute_daily_signals(wh, D3, D4) == 0
    days = [r[0] for r in wh.execute("SELECT day FROM daily_signals ORDER BY day").fetchall()]
    assert days == [D4]  # D3's stale row is gone, D4 (outside the range) untouched


def test_stale_group_replaced_when_spans_change(wh):
    compute_daily_signals(wh, D1, D2)
    wh.execute("DELETE FROM spans WHERE release = 'v2'")
    assert compute_daily_signals(wh, D1, D2) == 2
    assert (D1, "support", "v2") not in signals(wh)


def test_days_touched(wh):
    assert days_touched(wh, ["b1"]) == [D1]
    assert days_touched(wh, ["b2"]) == [D1, D2]
    assert days_touched(wh, ["b1", "b2"]) == [D1, D2]
    assert days_touched(wh, ["nope"]) == []
    assert days_touched(wh, []) == []


REFUSALS = [
    "I'm sorry, but I can't help with that.",
    "I\u2019m sorry, but I cannot do that.",
    "i am sorry, but i can not share this",
    "I cannot help with requests like this.",
    "I can't assist with that request.",
    "Sorry. I can\u2019t help you.",
    "I am unable to browse the internet.",
    "I'm unable to provide medical advice.",
]
NOT_REFUSALS = [
    "I cannot help but notice a typo.",
    "Here is the answer: 42.",
    "Sorry for the delay, here it is.",
    "The API is unable to parse dates before 1970.",
]


def test_refusal_patterns_agree_in_python_and_duckdb(wh):
    py = re.compile(REFUSAL_PATTERNS, re.IGNORECASE)
    texts = REFUSALS + NOT_REFUSALS
    sql = wh.execute(
        "SELECT regexp_matches(t, ?, 'i') FROM unnest(?::VARCHAR[]) WITH ORDINALITY AS u(t, i) ORDER BY i",
        [REFUSAL_PATTERNS, texts],
    ).fetchall()
    expected = [True] * len(REFUSALS) + [False] * len(NOT_REFUSALS)
    assert [bool(py.search(t)) for t in texts] == expected
    assert [r[0] for r in sql] == expected


def test_a_batch_without_its_record_still_makes_its_day_stale(tmp_path):
    """In a trace-store home, a run killed between the store's commit and the warehouse's record
    of its batches leaves spans whose batch has no ingest_batches row: their day is still found
    stale (from when the spans were ingested), so the heal and the next ingestion refresh it."""
    from relops_pipeline.lib.health import stale_days
    from relops_pipeline.lib.warehouse import open_warehouse

    with open_warehouse(tmp_path / "wh.duckdb") as wh:
        _one_unrecorded_span(wh)
        stale = stale_days(wh)
    [day] = stale
    assert (day.day, day.spans, day.last_ingested, day.signals_at) == (
        dt.date(2026, 11, 2), 1, dt.datetime(2026, 11, 3, 9), None)


def _one_unrecorded_span(wh) -> None:
    wh.execute(
        "INSERT INTO spans (trace_id, span_id, span_name, kind, workflow, release, start_time, ingest_batch_id, "
        "ingested_at, source_file) VALUES ('t', 's', 'chat', 'llm', 'w', 'v1', TIMESTAMP '2026-11-02 10:00:00', "
        "'unrecorded', TIMESTAMP '2026-11-03 09:00:00', 'f.jsonl')")
