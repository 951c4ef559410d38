"""lib/drift: per-trace features from spans, drift configuration, versioned references, the
drift statistics (against Evidently's own DataDriftPreset), the HTML report and workspace."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from relops_pipeline.lib.drift.compute import (
    ALL_RELEASES,
    choose_method,
    column_sql,
    compute_drift,
    sample_frame,
    store_drift,
)
from relops_pipeline.lib.drift.config import DriftConfig, DriftConfigError
from relops_pipeline.lib.drift.features import compute_trace_features
from relops_pipeline.lib.drift.reference import SAMPLE_SEED, ensure_reference
from relops_pipeline.lib.schema import SPAN_COLUMNS

D0 = dt.date(2026, 3, 2)  # a Monday
TOPICS = ["billing", "login", "refund", "shipping"]
BASE_TOPIC_P = [0.4, 0.3, 0.2, 0.1]


# ---------------------------------------------------------------- synthetic traffic


def add_traffic(con, *, workflow="wf", release="v1", day0=D0, days=7, per_day=100, seed=0,
                topic_p=BASE_TOPIC_P, topics=TOPICS, chars_mean=900.0, scores=False):
    """Insert per_day traces a day into trace_features (one stationary population unless the
    arguments change)."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    idx = np.arange(n)
    day = [day0 + dt.timedelta(days=int(i // per_day)) for i in idx]
    chars = np.maximum(1, rng.normal(chars_mean, 150, n)).round()
    fb = np.where(rng.random(n) < 0.3, rng.choice([0.0, 1.0], n, p=[0.2, 0.8]), np.nan)
    df = pd.DataFrame({
        "day": day,
        "workflow": workflow,
        "release": release,
        "trace_id": [f"{workflow}-{release}-{seed}-{i}" for i in idx],
        "start_time": [dt.datetime.combine(d, dt.time()) + dt.timedelta(seconds=int(i % per_day) * 60)
                       for d, i in zip(day, idx, strict=False)],
        "spans": 3,
        "llm_calls": rng.choice([1, 2], n, p=[0.8, 0.2]),
        "latency_ms": rng.lognormal(7, 0.5, n),
        "input_tokens": rng.poisson(500, n),
        "output_tokens": rng.poisson(120, n),
        "cost_usd": rng.gamma(4, 0.0001, n),
        "input_chars": chars,
        "input_words": (chars / 5).round(),
        "output_chars": np.maximum(1, rng.normal(600, 100, n)).round(),
        "output_words": np.maximum(1, rng.normal(100, 15, n)).round(),
        "output_json_valid": rng.random(n) < 0.97,
        "is_error": rng.random(n) < 0.03,
        "is_refusal": rng.random(n) < 0.02,
        "finish_reason": rng.choice(["stop", "length"], n, p=[0.96, 0.04]),
        "model": "m1",
        "topic": rng.choice(topics, n, p=topic_p),
        "intent": None,
        "language": rng.choice(["en", "de", "fr"], n, p=[0.6, 0.25, 0.15]),
        "feedback": fb,
        "online_scores": [json.dumps({"groundedness": round(float(x), 4)}) for x in rng.beta(8, 2, n)] if scores else None,
    })
    con.register("new_traffic", df)
    cols = ", ".join(df.columns)
    con.execute(f"INSERT INTO trace_features ({cols}, computed_at) SELECT {cols}, now()::TIMESTAMP FROM new_traffic")
    con.unregister("new_traffic")
    return n


def cfg_for(**kw) -> DriftConfig:
    base = {"reference": {"start": D0.isoformat(), "end": (D0 + dt.timedelta(days=6)).isoformat()}}
    return DriftConfig.from_workflow({**base, **kw})


WEEK2 = (D0 + dt.timedelta(days=7), D0 + dt.timedelta(days=14))


# ---------------------------------------------------------------- features


def _span(**kw):
    row = {name: None for name, _ in SPAN_COLUMNS}
    row.update(status="unset", workflow="wf", release="v1", release_known=True, input_truncated=False,
               output_truncated=False, source_format="test", ingest_batch_id="b1")
    row.update(kw)
    if row["end_time"] is None:
        row["end_time"] = row["start_time"] + dt.timedelta(milliseconds=row["latency_ms"] or 0)
    return row


def _insert_spans(con, rows):
    names = [n for n, _ in SPAN_COLUMNS]
    con.executemany(
        f"INSERT INTO spans ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
        [[r[n] for n in names] for r in rows],
    )


def test_trace_features_from_hand_built_spans(wh):
    t = dt.datetime(2026, 3, 2, 10, 0, 0)
    msgs = json.dumps([
        {"role": "system", "content": "You are terse."},
        {"role": "user", "parts": [{"type": "text", "content": "hello world"}]},
    ])
    spans = [
        # A: agent root with topic/language; two llm calls; a failed tool call in between.
        _span(trace_id="A", span_id="a0", kind="agent", start_time=t, latency_ms=1500.0, feedback_score=1.0,
              attributes=json.dumps({"relops.topic": "billing", "relops.language": "en"})),
        _span(trace_id="A", span_id="a1", parent_span_id="a0", kind="llm", start_time=t + dt.timedelta(milliseconds=10),
              latency_ms=400.0, input_text=msgs, output_text='[{"tool_call":"lookup"}]', input_tokens=10,
              output_tokens=5, cost_usd=0.001, finish_reason="tool_calls", model="m1"),
        _span(trace_id="A", span_id="a2", parent_span_id="a0", kind="tool", start_time=t + dt.timedelta(milliseconds=500),
              latency_ms=100.0, status="error", input_text='{"order": 1}'),
        _span(trace_id="A", span_id="a3", parent_span_id="a0", kind="llm", start_time=t + dt.timedelta(milliseconds=700),
              latency_ms=600.0, input_text=msgs, output_text='{"a":1}', input_tokens=20, output_tokens=7,
              cost_usd=0.002, finish_reason="stop", model="m2", attributes=json.dumps({"relops.topic": "refund"})),
        # B: RAG chain: the user's question is the retrieval query, not the llm prompt.
        _span(trace_id="B", span_id="b0", kind="agent", start_time=t, latency_ms=900.0,
              output_text="Final answer text", online_scores=json.dumps({"groundedness": 0.7}),
              attributes=json.dumps({"language": "fr"})),
        _span(trace_id="B", span_id="b1", parent_span_id="b0", kind="retrieval", start_time=t + dt.timedelta(milliseconds=5),
              latency_ms=50.0, attributes=json.dumps({"gen_ai.retrieval.query.text": "How do I reset?"})),
        _span(trace_id="B", span_id="b2", parent_span_id="b0", kind="llm", start_time=t + dt.timedelta(milliseconds=60),
              latency_ms=800.0, input_text="Documentation excerpts: ... Question: How do I reset?",
              output_text="I'm sorry, but I can't help with that.", finish_reason="stop",
              online_scores=json.dumps({"groundedness": 0.5, "label": "x"}), attributes=json.dumps({"topic": "setup"})),
        # C: starts one second before midnight; its llm call runs after midnight. The root has
        # no latency, so the trace's extent is used.
        _span(trace_id="C", span_id="c0", kind="agent", start_time=dt.datetime(2026, 3, 2, 23, 59, 59),
              end_time=dt.datetime(2026, 3, 3, 0, 0, 5)),
        _span(trace_id="C", span_id="c1", parent_span_id="c0", kind="llm", start_time=dt.datetime(2026, 3, 3, 0, 0, 1),
              latency_ms=2000.0, input_text="plain prompt here", output_text="ok", finish_reason="stop"),
        # D: partial export without a root; the last call was filtered and produced nothing.
        _span(trace_id="D", span_id="d1", parent_span_id="missing", kind="llm", start_time=dt.datetime(2026, 3, 3, 8, 0, 0),
              latency_ms=1000.0, input_text="first", output_text="draft", finish_reason="stop"),
        _span(trace_id="D", span_id="d2", parent_span_id="missing", kind="llm", start_time=dt.datetime(2026, 3, 3, 8, 0, 2),
              latency_ms=1000.0, input_text="second", finish_reason="content_filter"),
    ]
    _insert_spans(wh, spans)

    assert compute_trace_features(wh, dt.date(2026, 3, 3), dt.date(2026, 3, 4)) == 1  # only D
    assert compute_trace_features(wh, dt.date(2026, 3, 2), dt.date(2026, 3, 4)) == 4
    assert compute_trace_features(wh, dt.date(2026, 3, 2), dt.date(2026, 3, 4)) == 4  # idempotent
    df = wh.execute("SELECT * FROM trace_features ORDER BY trace_id").df().set_index("trace_id")
    assert len(df) == 4

    a = df.loc["A"]
    assert (a.day, a.spans, a.llm_calls, a.latency_ms) == (pd.Timestamp("2026-03-02"), 4, 2, 1500.0)
    assert (a.input_tokens, a.output_tokens) == (30, 12) and a.cost_usd == pytest.approx(0.003)
    assert (a.input_chars, a.input_words) == (11, 2)  # "hello world": the user message only
    assert (a.output_chars, a.output_words, a.output_json_valid) == (7, 1, True)  # '{"a":1}'
    assert a.is_error and not a.is_refusal
    assert (a.finish_reason, a.model, a.topic, a.language, a.feedback) == ("stop", "m2", "billing", "en", 1.0)
    assert a.online_scores is None

    b = df.loc["B"]
    assert (b.input_chars, b.input_words) == (15, 4)  # "How do I reset?"
    assert (b.output_chars, b.output_words, b.output_json_valid) == (17, 3, False)  # the root's output
    assert b.is_refusal and not b.is_error
    assert (b.topic, b.language) == ("setup", "fr")
    assert json.loads(b.online_scores) == {"groundedness": pytest.approx(0.6)}
    assert np.isnan(b.feedback)

    c = df.loc["C"]
    assert c.day == pd.Timestamp("2026-03-02") and c.latency_ms == 6000.0 and c.llm_calls == 1
    assert (c.input_chars, c.output_chars) == (len("plain prompt here"), 2)

    d = df.loc["D"]
    assert d.latency_ms == 3000.0  # no root: first start to last end
    assert d.is_refusal and d.finish_reason == "content_filter"
    assert pd.isna(d.output_chars) and pd.isna(d.output_json_valid)
    assert d.input_chars == len("first")

    # Recomputing the second day alone leaves the first day's rows alone.
    assert compute_trace_features(wh, dt.date(2026, 3, 3), dt.date(2026, 3, 4)) == 1
    assert wh.execute("SELECT count(*) FROM trace_features").fetchone()[0] == 4


# ---------------------------------------------------------------- config


def test_config_defaults_and_errors_name_the_key():
    cfg = DriftConfig.from_workflow({})
    assert cfg.reference.kind == "first_days" and cfg.reference.days == 14
    assert cfg.critical == ("topic", "input_chars") and cfg.critical_severity == "ERROR"
    assert (cfg.drifted_share_warn, cfg.share_severity, cfg.sample_rows) == (0.5, "WARN", 50_000)
    assert cfg.threshold("latency_ms", "wasserstein") == 0.1
    # calibrated defaults (bench/drift_quality.py): p-values at 0.01, topic's Jensen-Shannon at 0.08
    assert cfg.threshold("topic", "chisquare") == 0.01 and cfg.threshold("topic", "jensenshannon") == 0.08

    cfg = DriftConfig.from_workflow({"reference": {"release": "wf@v2", "days": 7},
                                     "thresholds": {"wasserstein": 0.2, "topic": {"jensenshannon": 0.05}}})
    assert cfg.reference.kind == "release" and cfg.reference.release == "wf@v2"
    assert cfg.threshold("latency_ms", "wasserstein") == 0.2
    assert cfg.threshold("topic", "jensenshannon") == 0.05 and cfg.threshold("language", "jensenshannon") == 0.1
    assert cfg.threshold("input_chars", "ks") == 0.01  # setting one threshold keeps the other defaults

    bad = [
        ({"referense": {}}, "unknown keys referense"),
        ({"reference": {"start": "2026-01-10", "end": "2026-01-01"}}, "drift.reference.end"),
        ({"reference": {"start": "2026-01-01"}}, "drift.reference"),
        ({"reference": {"release": "v1", "days": 0}}, "drift.reference.days"),
        ({"critical": ["topik"]}, "drift.critical: unknown columns topik"),
        ({"critical_severity": "PANIC"}, "drift.critical_severity"),
        ({"drifted_share_warn": 1.5}, "drift.drifted_share_warn"),
        ({"thresholds": {"latency_ms": 0.2}}, "drift.thresholds.latency_ms"),
        ({"thresholds": {"ks": 1.5}}, "drift.thresholds.ks"),
        ({"thresholds": {"psi": 0.1}}, "drift.thresholds.psi"),
        ({"min_rows": "many"}, "drift.min_rows"),
        ({"columns": []}, "drift.columns"),
    ]
    for given, message in bad:
        with pytest.raises(DriftConfigError, match=message.replace(".", r"\.")):
            DriftConfig.from_workflow(given)


# ---------------------------------------------------------------- method choice


def test_method_choice_follows_evidentlys_defaults():
    from evidently.legacy.calculations.stattests.registry import _get_default_stattest
    from evidently.legacy.core import ColumnType

    rng = np.random.default_rng(1)
    cases = [
        ("num", rng.normal(size=800)),  # many values, small -> ks
        ("num", rng.normal(size=3000)),  # large -> wasserstein
        ("num", rng.integers(0, 4, 800).astype(float)),  # <= 5 values, small -> chisquare
        ("num", rng.integers(0, 2, 800).astype(float)),  # 2 values -> z
        ("num", rng.integers(0, 4, 3000).astype(float)),  # <= 5 values, large -> jensenshannon
        ("cat", rng.choice(list("abc"), 800)),
        ("cat", rng.choice(list("ab"), 800)),
        ("cat", rng.choice(list("abc"), 3000)),
    ]
    for col_type, values in cases:
        s = pd.Series(values)
        ours = choose_method(col_type, len(s), len(s), s.nunique())
        ct = ColumnType.Numerical if col_type == "num" else ColumnType.Categorical
        assert ours == _get_default_stattest(s, s, ct).name
    # A small current window against a large reference: a p-value, not a biased distance.
    assert choose_method("num", 50_000, 300, 100) == "ks"
    assert choose_method("cat", 50_000, 300, 8) == "chisquare"


# ---------------------------------------------------------------- references


def test_reference_is_built_once_reused_and_versioned(wh):
    add_traffic(wh, days=14, per_day=100)
    cfg = cfg_for(sample_rows=200)
    ref = ensure_reference(wh, "wf", cfg)
    assert ref.created and ref.complete
    assert (ref.window_start, ref.window_end) == (D0, D0 + dt.timedelta(days=7))
    assert (ref.rows_total, ref.rows_sampled) == (700, 200)
    sample = {r[0] for r in wh.execute("SELECT trace_id FROM drift_reference_rows WHERE reference_id = ?", [ref.reference_id]).fetchall()}
    assert len(sample) == 200
    days = wh.execute("SELECT count(DISTINCT day) FROM drift_reference_rows WHERE reference_id = ?", [ref.reference_id]).fetchone()[0]
    assert days == 7  # uniform over the window, not its first rows

    bottom_k = wh.execute(
        "SELECT trace_id FROM trace_features WHERE day < ? ORDER BY hash(trace_id, ?), trace_id LIMIT 200",
        [D0 + dt.timedelta(days=7), SAMPLE_SEED],
    ).fetchall()
    assert sample == {r[0] for r in bottom_k}  # the hash-bounded scan found the exact bottom-k

    again = ensure_reference(wh, "wf", cfg)
    assert again.reference_id == ref.reference_id and not again.created
    assert wh.execute("SELECT count(*) FROM drift_references").fetchone()[0] == 1

    # A complete reference is frozen: deleting its traces (retention) does not change it.
    wh.execute("DELETE FROM trace_features WHERE day < ?", [D0 + dt.timedelta(days=7)])
    assert ensure_reference(wh, "wf", cfg).reference_id == ref.reference_id

    # A changed definition is a new version; the old one stays.
    wider = cfg_for(sample_rows=200, reference={"start": D0.isoformat(), "end": (D0 + dt.timedelta(days=9)).isoformat()})
    v2 = ensure_reference(wh, "wf", wider)
    assert v2.created and v2.reference_id != ref.reference_id and v2.rows_total == 300  # days 7..9 remain
    assert wh.execute("SELECT count(*) FROM drift_references").fetchone()[0] == 2

    # The same data and definition in another warehouse give the same id and the same sample.
    wh.execute("DELETE FROM drift_reference_rows; DELETE FROM drift_references; DELETE FROM trace_features")
    add_traffic(wh, days=14, per_day=100)
    rebuilt = ensure_reference(wh, "wf", cfg)
    assert rebuilt.reference_id == ref.reference_id
    rows = wh.execute("SELECT trace_id FROM drift_reference_rows WHERE reference_id = ?", [ref.reference_id]).fetchall()
    assert {r[0] for r in rows} == sample


def test_window_sample_is_the_bottom_k_by_hash(wh):
    add_traffic(wh, days=7, per_day=100)
    where, params = "workflow = $workflow", {"workflow": "wf"}
    full = [r[0] for r in wh.execute(
        "SELECT trace_id FROM trace_features ORDER BY hash(trace_id, ?), trace_id LIMIT 150", [SAMPLE_SEED]).fetchall()]
    got = sample_frame(wh, "trace_id", where, params, rows=700, k=150)
    assert sorted(got.trace_id) == sorted(full)
    # A row count far above the truth makes the hash bound keep too few rows: the full sort runs.
    assert sorted(sample_frame(wh, "trace_id", where, params, rows=10**9, k=150).trace_id) == sorted(full)
    assert len(sample_frame(wh, "trace_id", where, params, rows=700, k=1000)) == 700


def test_provisional_and_release_references(wh):
    add_traffic(wh, days=2, per_day=60, release="v1")
    cfg = DriftConfig.from_workflow({"reference": {"first_days": 2}})
    first = ensure_reference(wh, "wf", cfg)
    assert not first.complete and first.rows_total == 120  # no later day yet: still open
    add_traffic(wh, day0=D0 + dt.timedelta(days=2), days=1, per_day=60, release="v2", seed=5)
    done = ensure_reference(wh, "wf", cfg)
    assert done.complete and done.reference_id != first.reference_id and done.rows_total == 120
    assert ensure_reference(wh, "wf", cfg).reference_id == done.reference_id

    add_traffic(wh, day0=D0 + dt.timedelta(days=3), days=3, per_day=60, release="v2", seed=6)
    rel = ensure_reference(wh, "wf", DriftConfig.from_workflow({"reference": {"release": "wf@v2", "days": 2}}))
    assert (rel.window_start, rel.window_end) == (D0 + dt.timedelta(days=2), D0 + dt.timedelta(days=4))
    assert rel.rows_total == 120 and rel.definition["release"] == "v2"
    assert ensure_reference(wh, "wf", DriftConfig.from_workflow({"reference": {"release": "v9", "days": 2}})) is None


# ---------------------------------------------------------------- drift


def _by_column(summary):
    return {c.column: c for c in summary.columns}


def test_stationary_large_windows_do_not_drift(wh):
    add_traffic(wh, days=7, per_day=300, seed=1)
    add_traffic(wh, day0=WEEK2[0], days=7, per_day=300, seed=2)
    [s] = compute_drift(wh, "wf", cfg_for(), *WEEK2, granularity="weekly", scopes=("workflow",))
    cols = _by_column(s)
    assert (s.status, s.severity, s.columns_drifted, s.release) == ("ok", None, 0, ALL_RELEASES)
    assert (s.cur_rows, s.ref_rows) == (2100, 2100)
    assert cols["latency_ms"].method == "wasserstein" and cols["topic"].method == "jensenshannon"
    assert cols["feedback"].method == "z"  # only ~630 rated requests: a p-value method
    assert "intent" not in cols  # no data in the reference: not a column
    assert s.columns_tested == len(cols) == 17

    # Windows above sample_rows: both sides are bounded samples, still no drift.
    [s] = compute_drift(wh, "wf", cfg_for(sample_rows=800), *WEEK2, granularity="weekly", scopes=("workflow",))
    assert s.sampled and s.cur_rows == 2100 and s.status == "ok"
    assert _by_column(s)["latency_ms"].cur_rows == 800 and _by_column(s)["latency_ms"].ref_rows == 800


def test_topic_shift_is_drift_at_both_sizes(wh):
    # Small windows (p-values): a 10-point move from billing to shipping.
    add_traffic(wh, days=7, per_day=100, seed=1)
    add_traffic(wh, day0=WEEK2[0], days=7, per_day=100, seed=2, topic_p=[0.3, 0.3, 0.2, 0.2])
    [s] = compute_drift(wh, "wf", cfg_for(), *WEEK2, granularity="weekly", scopes=("workflow",))
    topic = _by_column(s)["topic"]
    assert topic.method == "chisquare" and topic.drifted and topic.score < 1e-4
    assert s.status == "drift" and s.severity == "ERROR" and s.critical_drifted == ["topic"]
    assert not _by_column(s)["input_chars"].drifted

    # Large windows (distances): a new topic at 10 % of traffic.
    wh.execute("DELETE FROM trace_features")
    wh.execute("DELETE FROM drift_reference_rows; DELETE FROM drift_references")
    add_traffic(wh, days=7, per_day=300, seed=3)
    add_traffic(wh, day0=WEEK2[0], days=7, per_day=300, seed=4, topics=TOPICS + ["account-deletion"],
                topic_p=[0.36, 0.27, 0.18, 0.09, 0.10])
    [s] = compute_drift(wh, "wf", cfg_for(), *WEEK2, granularity="weekly", scopes=("workflow",))
    topic = _by_column(s)["topic"]
    assert topic.method == "jensenshannon" and topic.drifted and topic.score == pytest.approx(0.19, abs=0.03)
    assert s.critical_drifted == ["topic"] and s.columns_drifted == 1


def test_share_severity_releases_and_insufficient_windows(wh):
    add_traffic(wh, days=7, per_day=100, seed=1)
    add_traffic(wh, day0=WEEK2[0], days=7, per_day=90, seed=2, chars_mean=1300.0)
    add_traffic(wh, day0=WEEK2[0], days=1, per_day=20, seed=3, release="v2")
    cfg = cfg_for(critical=[], drifted_share_warn=0.05, min_rows=30)
    out = compute_drift(wh, "wf", cfg, *WEEK2, granularity="weekly")
    assert [s.release for s in out] == [ALL_RELEASES, "v1", "v2"]
    whole, v1, v2 = out
    assert whole.cur_rows == 650 and whole.dominant_release == "v1"
    # input_chars and input_words drift (2 of 17 > 5 %): no critical column, so WARN.
    assert (whole.status, whole.severity, whole.critical_drifted) == ("drift", "WARN", [])
    assert {c.column for c in whole.columns if c.drifted} >= {"input_chars", "input_words"}
    assert v1.cur_rows == 630 and v1.status == "drift"
    # 20 traces < min_rows: no verdict at all.
    assert (v2.status, v2.severity, v2.drifted_share, v2.columns_tested) == ("insufficient", None, None, 0)
    assert all(c.status == "insufficient" and c.method is None and c.drifted is None for c in v2.columns)
    # A column with too few values is insufficient while the others get a verdict.
    assert _by_column(v1)["feedback"].cur_rows > 30
    few = cfg_for(critical=[], min_rows=250)
    [s] = compute_drift(wh, "wf", few, *WEEK2, granularity="weekly", scopes=("workflow",))
    assert _by_column(s)["feedback"].status == "insufficient" and _by_column(s)["latency_ms"].status != "insufficient"

    # Stored: replaced, not duplicated, on a re-run.
    assert store_drift(wh, out, run_id="r1") == 3
    assert store_drift(wh, compute_drift(wh, "wf", cfg, *WEEK2, granularity="weekly"), run_id="r2") == 3
    rows = wh.execute("SELECT release, status, severity, dagster_run_id FROM drift_summaries ORDER BY release").fetchall()
    assert rows == [("*", "drift", "WARN", "r2"), ("v1", "drift", "WARN", "r2"),
                    ("v2", "insufficient", None, "r2")]
    assert wh.execute("SELECT count(*) FROM drift_results").fetchone()[0] == 3 * 17
    col = wh.execute("SELECT method, drifted, cur_rows, ref_rows FROM drift_results "
                     "WHERE release = '*' AND column_name = 'input_chars'").fetchone()
    assert col == ("ks", True, 630 + 20, 700)


def _preset_scores(cur, ref, columns):
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    num = [c for c in columns if pd.api.types.is_numeric_dtype(ref[c])]
    cat = [c for c in columns if c not in num]
    dd = DataDefinition(numerical_columns=num, categorical_columns=cat)
    snap = Report([DataDriftPreset(columns=columns)]).run(
        Dataset.from_pandas(cur[columns], data_definition=dd), Dataset.from_pandas(ref[columns], data_definition=dd))
    from evidently.legacy.calculations import stattests

    # An auto-chosen method is reported by its display name ("K-S p_value").
    names = {t.display_name: t.name for t in (stattests.ks_stat_test, stattests.chi_stat_test, stattests.z_stat_test,
                                                stattests.wasserstein_stat_test, stattests.jensenshannon_stat_test)}
    return {m["config"]["column"]: (names.get(m["config"]["method"], m["config"]["method"]), m["value"])
            for m in snap.dict()["metrics"] if m["config"]["type"].endswith(":ValueDrift")}


@pytest.mark.parametrize("per_day, methods", [(80, {"ks", "chisquare", "z"}), (250, {"wasserstein", "jensenshannon", "z"})])
def test_scores_equal_evidentlys_data_drift_preset(wh, per_day, methods):
    add_traffic(wh, days=7, per_day=per_day, seed=11, scores=True)
    add_traffic(wh, day0=WEEK2[0], days=7, per_day=per_day, seed=12, scores=True, topic_p=[0.35, 0.3, 0.2, 0.15])
    cfg = cfg_for()
    [s] = compute_drift(wh, "wf", cfg, *WEEK2, granularity="weekly", scopes=("workflow",))
    assert not s.sampled
    names = [c.column for c in s.columns]
    assert "score.groundedness" in names
    sel = ", ".join(column_sql(c) for c in names)
    cur = wh.execute(f"SELECT {sel} FROM trace_features WHERE day >= ? AND day < ?", list(WEEK2)).df()
    ref = wh.execute(f"SELECT {sel} FROM trace_features WHERE day < ?", [WEEK2[0]]).df()
    theirs = _preset_scores(cur, ref, names)
    assert {c.method for c in s.columns} == methods
    for c in s.columns:
        method, value = theirs[c.column]
        assert c.method == method, c.column
        assert c.score == pytest.approx(value, abs=1e-9), c.column


# ---------------------------------------------------------------- report and workspace


def test_report_is_self_contained_and_escapes_user_values(wh, tmp_path):
    from relops_pipeline.lib.drift.report import write_drift_report
    from relops_pipeline.lib.drift.workspace import add_snapshot

    evil = "</script><script>alert(1)</script>"
    add_traffic(wh, days=7, per_day=40, seed=1, topics=TOPICS[:3] + [evil], topic_p=BASE_TOPIC_P)
    add_traffic(wh, day0=WEEK2[0], days=7, per_day=40, seed=2, topics=TOPICS[:3] + [evil], topic_p=BASE_TOPIC_P)
    cfg = cfg_for(columns=["topic", "latency_ms", "llm_calls"])
    [s] = compute_drift(wh, "wf", cfg, *WEEK2, granularity="weekly", scopes=("workflow",), keep_samples=True)
    cur, ref = s.samples
    snaps = []
    path = write_drift_report(tmp_path / "r" / "week.html", cur, ref, columns=s.columns, name="wf week",
                              snapshots_out=snaps)
    text = path.read_text()
    assert evil not in text and "&lt;/script&gt;" in text
    assert "<script src=\"http" not in text and len(text) > 100_000
    assert [p.name for p in path.parent.iterdir()] == ["week.html"]  # no temp file left

    ws = tmp_path / "ws"
    first = add_snapshot(ws, "relops drift: wf", snaps[0])
    second = add_snapshot(ws, "relops drift: wf", snaps[0])  # the same week again replaces it
    from evidently.ui.workspace import Workspace

    w = Workspace(str(ws))
    [project] = w.search_project("relops drift: wf")
    assert [str(r) for r in w.list_runs(project.id)] == [second] and first != second


def test_run_drift_period_stores_weekly_and_rolling_with_reports(wh, tmp_path):
    from relops_pipeline.lib.drift.run import report_path, run_drift_period, workspace_dir
    from relops_pipeline.lib.home import Home

    home = Home(tmp_path / "home")
    home.workflows_dir.mkdir(parents=True)
    (home.workflows_dir / "wf.yaml").write_text(
        f"name: wf\ndrift:\n  reference: {{start: {D0}, end: {D0 + dt.timedelta(days=6)}}}\n  min_rows: 30\n")
    add_traffic(wh, days=7, per_day=60, seed=1)
    add_traffic(wh, day0=WEEK2[0], days=7, per_day=60, seed=2, topic_p=[0.2, 0.3, 0.2, 0.3])
    add_traffic(wh, workflow="unknown", day0=WEEK2[0], days=1, per_day=40, seed=3)  # not a workflow
    logs = []
    out = run_drift_period(wh, home, granularity="weekly", start=WEEK2[0], end=WEEK2[1], run_id="run-1",
                           reports=True, log=logs.append)
    assert [(o.workflow, o.release, o.status, o.severity) for o in out] == [
        ("wf", "*", "drift", "ERROR"), ("wf", "v1", "drift", "ERROR")]
    head = out[0]
    assert head.critical_drifted == ["topic"] and head.period_start == WEEK2[0]
    assert head.report_path == str(report_path(home, "wf", WEEK2[0])) and out[1].report_path is None
    assert all(o.samples is None for o in out)  # the frames are not returned: the summaries round-trip through JSON
    assert (workspace_dir(home) / "relops-snapshots.json").exists()
    assert any("drift report wf" in line for line in logs)
    stored = wh.execute("SELECT release, report_path, dagster_run_id FROM drift_summaries ORDER BY release").fetchall()
    assert stored == [("*", head.report_path, "run-1"), ("v1", None, "run-1")]

    rolling = run_drift_period(wh, home, granularity="rolling", start=WEEK2[0], end=WEEK2[0] + dt.timedelta(days=2),
                               window_days=7)
    windows = sorted({(o.period_start, o.period_end) for o in rolling})
    assert windows == [(WEEK2[0] - dt.timedelta(days=6), WEEK2[0] + dt.timedelta(days=1)),
                       (WEEK2[0] - dt.timedelta(days=5), WEEK2[0] + dt.timedelta(days=2))]
    assert wh.execute("SELECT count(*) FROM drift_summaries WHERE granularity = 'rolling'").fetchone()[0] == 4


def test_trace_features_in_buckets_equal_one_pass(wh, monkeypatch):
    """Computing the traces in many hash buckets (bounded memory) gives exactly the rows of one
    pass over all spans, traces crossing midnight and partial traces included."""
    import relops_pipeline.lib.drift.features as features

    rng = np.random.default_rng(3)
    t0 = dt.datetime(2026, 3, 2, 22, 0, 0)
    spans = []
    for i in range(60):
        start = t0 + dt.timedelta(minutes=int(rng.integers(0, 240)))
        root = f"r{i}"
        has_root = i % 7 != 0
        if has_root:
            spans.append(_span(trace_id=f"T{i}", span_id=root, kind="agent", start_time=start,
                               latency_ms=float(rng.integers(100, 5000)), output_text=f"answer {i}" if i % 3 else None,
                               attributes=json.dumps({"relops.topic": TOPICS[i % 4]})))
        for j in range(int(rng.integers(1, 4))):
            spans.append(_span(trace_id=f"T{i}", span_id=f"s{i}-{j}", parent_span_id=root if has_root else "gone",
                               kind="llm", start_time=start + dt.timedelta(seconds=j + 1),
                               latency_ms=float(rng.integers(10, 900)), input_text=f"question {i} {j}",
                               output_text=None if (i + j) % 5 == 0 else f"reply {j}", input_tokens=int(rng.integers(1, 99)),
                               status="error" if (i * j) % 11 == 3 else "unset", finish_reason="stop", model=f"m{j}",
                               online_scores=json.dumps({"g": float(j) / 3}) if i % 2 else None))
    _insert_spans(wh, spans)
    lo, hi = dt.date(2026, 3, 2), dt.date(2026, 3, 4)
    cols = "* EXCLUDE (computed_at)"
    assert compute_trace_features(wh, lo, hi) == 60
    one_pass = wh.execute(f"SELECT {cols} FROM trace_features ORDER BY workflow, trace_id").df()
    monkeypatch.setattr(features, "BUCKET_SPANS", 7)
    assert compute_trace_features(wh, lo, hi) == 60
    bucketed = wh.execute(f"SELECT {cols} FROM trace_features ORDER BY workflow, trace_id").df()
    pd.testing.assert_frame_equal(one_pass, bucketed)
    assert one_pass["day"].nunique() == 2  # some traces start after midnight


def test_trace_features_of_the_touched_traces_equal_a_whole_day_recompute(wh):
    """After a second batch adds spans to some traces of a day (and new traces), completes a span
    of an earlier batch and fills another's text by a GenAI event, recomputing only the traces
    those batches touched gives exactly the rows of a whole-day recompute, writing only theirs."""
    t0 = dt.datetime(2026, 3, 2, 9, 0, 0)
    first = [_span(trace_id=f"T{i}", span_id=f"a{i}", kind="llm", start_time=t0 + dt.timedelta(minutes=i),
                   latency_ms=100.0 + i, input_text=f"question {i}", output_text=f"answer {i}", input_tokens=i,
                   ingest_batch_id="b1") for i in range(40)]
    _insert_spans(wh, first)
    day, next_day = dt.date(2026, 3, 2), dt.date(2026, 3, 3)
    assert compute_trace_features(wh, day, next_day) == 40
    # b2: two more spans of T1 and T2 (one starting before T2's first, so T2's start moves), new traces T40..T44
    second = [_span(trace_id="T1", span_id="b1", kind="llm", start_time=t0 + dt.timedelta(minutes=30), latency_ms=50.0,
                    output_text="later answer", ingest_batch_id="b2"),
              _span(trace_id="T2", span_id="b2", kind="agent", start_time=t0 - dt.timedelta(minutes=5), latency_ms=9000.0,
                    output_text="root answer", ingest_batch_id="b2")]
    second += [_span(trace_id=f"T{i}", span_id=f"a{i}", kind="llm", start_time=t0 + dt.timedelta(minutes=i),
                     latency_ms=10.0, input_text=f"new {i}", ingest_batch_id="b2") for i in range(40, 45)]
    _insert_spans(wh, second)
    # b2 also completed T3's span (an update) and filled T4's output from an event
    wh.execute("UPDATE spans SET status = 'error' WHERE trace_id = 'T3'")
    wh.execute("INSERT INTO span_updates VALUES ('b2', 'T3', 'a3', ?, 'f', 1, 'completed', ?)", [t0, t0])
    wh.execute("UPDATE spans SET output_text = 'from an event, much longer than before' WHERE trace_id = 'T4'")
    wh.execute("INSERT INTO genai_events (trace_id, span_id, ingest_batch_id) VALUES ('T4', 'a4', 'b2')")

    assert compute_trace_features(wh, day, next_day, batch_ids=["b2"]) == 4 + 5  # T1..T4 and the new T40..T44
    cols = "* EXCLUDE (computed_at)"
    touched = wh.execute(f"SELECT {cols} FROM trace_features ORDER BY workflow, trace_id").df()
    assert wh.execute("SELECT count(DISTINCT computed_at) FROM trace_features").fetchone()[0] == 1  # the day is current
    assert compute_trace_features(wh, day, next_day) == 45
    whole = wh.execute(f"SELECT {cols} FROM trace_features ORDER BY workflow, trace_id").df()
    pd.testing.assert_frame_equal(touched, whole)
    assert whole.set_index("trace_id").loc["T2", "latency_ms"] == 9000.0  # the new root span decides
    assert compute_trace_features(wh, day, next_day, batch_ids=[]) == 0  # nothing touched: nothing rewritten
    assert wh.execute("SELECT count(*) FROM trace_features").fetchone()[0] == 45


def test_pending_batches_are_those_the_days_features_do_not_reflect(wh):
    """A day without features is computed whole (None); then only batches finished since its
    features were computed, and touching the window, are pending."""
    from relops_pipeline.lib.drift.features import pending_batches

    day = dt.date(2026, 3, 2)
    t = dt.datetime(2026, 3, 2, 9)

    def batch(batch_id: str, finished: dt.datetime, first: dt.datetime) -> None:
        wh.execute("INSERT INTO ingest_batches VALUES (?, 'f', 'otlp', 'sha', 1, 1, 1, 0, 0, 0, 0, ?, ?, NULL, ?, ?)",
                   [batch_id, first, first, finished, finished])

    _insert_spans(wh, [_span(trace_id="T0", span_id="a", kind="llm", start_time=t, latency_ms=1.0, ingest_batch_id="old")])
    batch("old", dt.datetime(2026, 3, 3), t)
    assert pending_batches(wh, day, day + dt.timedelta(days=1)) is None
    compute_trace_features(wh, day, day + dt.timedelta(days=1))
    computed = wh.execute("SELECT min(computed_at) FROM trace_features").fetchone()[0]
    batch("new", computed + dt.timedelta(seconds=1), t)
    batch("elsewhere", computed + dt.timedelta(seconds=1), t + dt.timedelta(days=5))
    assert pending_batches(wh, day, day + dt.timedelta(days=1)) == ["new"]


def test_rolling_windows_with_the_same_rows_share_their_tests(wh, tmp_path, monkeypatch):
    """One rolling run over the trailing week of one ingested day: the windows holding exactly
    the same days with traffic run their column tests once (DriftCache), and every stored
    result equals what each window computed on its own gives."""
    import relops_pipeline.lib.drift.compute as compute
    from relops_pipeline.lib.drift.run import run_drift_period
    from relops_pipeline.lib.home import Home

    home = Home(tmp_path / "home")
    home.workflows_dir.mkdir(parents=True)
    (home.workflows_dir / "wf.yaml").write_text(
        f"name: wf\ndrift:\n  reference: {{start: {D0}, end: {D0 + dt.timedelta(days=6)}}}\n  min_rows: 30\n")
    add_traffic(wh, days=7, per_day=60, seed=1)
    day = WEEK2[1] + dt.timedelta(days=3)  # its trailing weeks stay clear of the reference's days
    add_traffic(wh, day0=day, days=1, per_day=80, seed=2, topic_p=[0.2, 0.3, 0.2, 0.3])
    add_traffic(wh, release="v2", day0=day + dt.timedelta(days=2), days=1, per_day=50, seed=3)

    calls = []
    real = compute.drift_of_frames
    monkeypatch.setattr(compute, "drift_of_frames", lambda *a, **k: calls.append(1) or real(*a, **k))
    start, end = day, day + dt.timedelta(days=7)
    shared = run_drift_period(wh, home, granularity="rolling", start=start, end=end, window_days=7)
    assert len({(s.period_start, s.period_end) for s in shared}) == 7
    # Distinct row sets: {day} for both scopes of v1-only windows (one test: v1 holds them all),
    # then {day, day+2} for '*', v1 and v2 — 4 tests instead of 2 * 2 + 5 * 3 = 19.
    assert len(calls) == 4

    alone = []
    for w_start, w_end in sorted({(s.period_start, s.period_end) for s in shared}):
        cfg = DriftConfig.from_workflow({"reference": {"start": D0.isoformat(), "end": (D0 + dt.timedelta(days=6)).isoformat()},
                                         "min_rows": 30})
        alone += compute_drift(wh, "wf", cfg, w_start, w_end, granularity="rolling")
    key = lambda s: (s.period_start, s.release)  # noqa: E731
    assert len(alone) == len(shared) == 2 * 2 + 5 * 3
    for a, b in zip(sorted(alone, key=key), sorted(shared, key=key), strict=True):
        assert (a.status, a.severity, a.cur_rows, a.columns_drifted, a.drifted_share) == \
            (b.status, b.severity, b.cur_rows, b.columns_drifted, b.drifted_share)
        assert [(c.column, c.method, c.score, c.drifted) for c in a.columns] == \
            [(c.column, c.method, c.score, c.drifted) for c in b.columns]
