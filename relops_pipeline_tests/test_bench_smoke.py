"""Smoke tests for the drift benchmarks (bench/drift.py, bench/drift_quality.py) at tiny sizes:
the generator, both sides of the speed benchmark in-process, and one simulated world of the
quality benchmark."""

from __future__ import annotations

import duckdb
import pytest

from bench.drift import (
    SUPPORT_TOPICS,
    WORKFLOW,
    build_warehouse,
    child_evidently,
    child_reference,
    child_relops,
    insert_features,
)
from bench.drift_quality import CANDIDATES, Task, alerts, run_task, shifts
from relops_pipeline.lib.warehouse import migrate

pytestmark = pytest.mark.slow  # the benchmarks' smoke runs (Evidently, simulated worlds)

FEATURES = ("day, release, start_time, spans, llm_calls, latency_ms, input_tokens, output_tokens, cost_usd, "
            "input_chars, input_words, output_chars, output_words, output_json_valid, is_error, is_refusal, "
            "finish_reason, model, topic, language, feedback, online_scores")


@pytest.fixture
def con():
    c = duckdb.connect()
    migrate(c)
    yield c
    c.close()


def _rows(con, prefix: str) -> list[tuple]:
    return con.execute(
        f"SELECT {FEATURES} FROM trace_features WHERE trace_id LIKE ? ORDER BY CAST(split_part(trace_id, '-', 2) AS INT)",
        [prefix + "-%"],
    ).fetchall()


def test_generator_is_repeatable_and_seeds_are_independent(con):
    from datetime import date

    kw = dict(workflow="w", start=date(2026, 9, 28), days=7, rows=20_000)
    insert_features(con, seed=5, id_prefix="a", **kw)
    insert_features(con, seed=5, id_prefix="b", **kw)
    insert_features(con, seed=6, id_prefix="c", **kw)
    a, b, c = _rows(con, "a"), _rows(con, "b"), _rows(con, "c")
    assert len(a) == 20_000 and a == b
    same_topic = sum(x[18] == y[18] for x, y in zip(a, c, strict=False)) / len(a)
    # independent draws agree on the topic with probability sum(p^2) = 0.1816
    assert 0.16 < same_topic < 0.20
    shares = dict(con.execute(
        "SELECT topic, count(*) / 20000 FROM trace_features WHERE trace_id LIKE 'a-%' GROUP BY topic").fetchall())
    assert set(shares) == set(SUPPORT_TOPICS)
    for topic, p in SUPPORT_TOPICS.items():
        assert abs(shares[topic] - p) < 0.015, topic
    days = con.execute("SELECT min(day), max(day), count(DISTINCT day) FROM trace_features").fetchone()
    assert days == (date(2026, 9, 28), date(2026, 10, 4), 7)
    err, nulls = con.execute(
        "SELECT avg(is_error::INT), count(*) FILTER (WHERE is_error AND output_chars IS NOT NULL) FROM trace_features"
    ).fetchone()
    assert 0.01 < err < 0.02 and nulls == 0


def test_docqa_traffic_carries_an_online_score(con):
    from datetime import date

    insert_features(con, workflow="doc-qa", start=date(2026, 9, 28), days=1, rows=500, seed=1, kind="docqa")
    lo, hi, n = con.execute(
        "SELECT min(CAST(online_scores->>'groundedness' AS DOUBLE)), max(CAST(online_scores->>'groundedness' AS DOUBLE)), "
        "count(online_scores) FROM trace_features"
    ).fetchone()
    assert n == 500 and 0.0 <= lo < 0.8 < hi <= 1.0


def test_speed_bench_sides_agree_when_unsampled(tmp_path):
    """3000 rows per window: under sample_rows, so relops scores the full data and must equal
    the preset's scores; the drifted columns are the ones the generator drifts."""
    db = str(tmp_path / "bench.duckdb")
    gen = build_warehouse(tmp_path / "bench.duckdb", 3000)
    assert gen["rows"] == 6000
    args = (db, WORKFLOW, "2026-09-28", "2026-10-12")
    ref = child_reference(*args)
    assert ref["created"] and ref["rows_total"] == ref["rows_sampled"] == 3000
    rel = child_relops(*args, "2026-10-12", "2026-10-19")
    wf = rel["summaries"][0]
    assert wf["release"] == "*" and wf["cur_rows"] == 3000 and wf["reference_id"] == ref["reference_id"]
    assert {s["release"] for s in rel["summaries"][1:]} == {f"{WORKFLOW}@v1.3.0", f"{WORKFLOW}@v1.4.0"}
    assert (tmp_path / "weekly-report.html").stat().st_size > 100_000
    cols = {c["column"]: c for c in wf["columns"]}
    assert wf["severity"] == "ERROR"
    for name in ("topic", "input_chars", "model", "cost_usd"):
        assert cols[name]["drifted"], name
    for name in ("language", "output_chars", "is_error"):
        assert cols[name]["drifted"] is False, name
    spec = [{k: c[k] for k in ("column", "type", "method", "threshold")} for c in wf["columns"] if c["method"]]
    # feedback is on 15 % of the traces: under 1000 values, a p-value method
    assert {c["method"] for c in spec} == {"wasserstein", "jensenshannon", "z"}
    assert cols["feedback"]["method"] == "z"
    import json

    ev = child_evidently(*args, "2026-10-12", "2026-10-19", json.dumps(spec))
    assert ev["cur_rows"] == ev["ref_rows"] == 3000
    for c in spec:
        assert ev["scores"][c["column"]]["score"] == pytest.approx(cols[c["column"]]["score"], abs=1e-9), c["column"]


def test_quality_world_rejudging_matches_compute_drift():
    """A small world with a new topic: caught in its first week; and the bench's re-judging
    with the default thresholds written out reproduces compute_drift's own verdicts
    (including its Bonferroni division of p-value thresholds)."""
    shift = next(iter(shifts(SUPPORT_TOPICS)))
    for rows in (700, 1400):  # p-value methods, then distance methods
        world = run_task(Task("weekly", "support-triage", rows, 0, shift))
        windows = world["windows"]
        assert len(windows) == 3 and windows[0]["columns"]["topic"][3] is True
        explicit = {"ks": 0.05, "z": 0.05, "chisquare": 0.05, "wasserstein": 0.1, "jensenshannon": 0.1}
        for w in windows:
            assert alerts(w, {}) == bool(w["severity"]) == alerts(w, explicit)
    # distance thresholds no score reaches on the critical columns: no alert (the share rule
    # alone does not fire on a topic shift)
    silent = {"topic": {"jensenshannon": 2.0}, "input_chars": {"wasserstein": 1e9}}
    assert windows[0]["columns"]["topic"][0] == "jensenshannon"
    assert not any(alerts(w, silent) for w in windows)
    assert "defaults (Evidently's; p-values Bonferroni)" in CANDIDATES


def test_ingest_bench_both_line_shapes_at_a_tiny_size(tmp_path, capsys):
    """bench/ingest.py's files and its bare and core children at 250 spans: the 100-per-line
    file holds the same spans in 3 lines, and both sides count every span."""
    from bench.ingest import make_files, measure_bare, measure_core

    files = make_files(tmp_path, 250, [1, 100], second=False)
    one, hundred = files[1][0], files[100][0]
    assert one.read_bytes().count(b"\n") == 250
    assert hundred.read_bytes().count(b"\n") == 3
    for path in (one, hundred):
        assert measure_bare(path, tmp_path, 1)["rows"] == 250
        core = measure_core(path, tmp_path, 2, 1)
        assert (core["read"], core["rows"], core["rejected"], core["duplicates"]) == (250, 250, 0, 0)
        assert core["peak_rss_mb"] > 0


def test_ingest_bench_end_to_end_and_two_writers_at_a_tiny_size(tmp_path, capsys):
    """bench/ingest.py's whole run at 60 spans, 100 per line: `relops ingest` end to end and two
    writers (one home, two homes) all succeed and count every span of their files once."""
    from bench.ingest import main

    [res] = main(["--traces", "60", "--shapes", "100", "--workdir", str(tmp_path)])
    assert res["cli"]["ok"] and res["cli"]["accepted"] == 60
    for homes in (1, 2):
        two = res[f"cli_2w_{homes}h"]
        assert two["ok"], [x["stderr"][-500:] for x in two["runs"]]
        assert two["accepted"] == 120 and two["peak_rss_mb"] > 0
    out = capsys.readouterr().out
    assert "relops ingest (end to end)" in out and "2 writers, two homes" in out and "x one writer" in out


def test_small_files_bench_both_ways_accept_every_span(tmp_path, capsys):
    """bench/small_files.py at 6 files of 3 spans: normalised together and each alone, both
    ingest every file and every span, and the ratio is printed."""
    from bench.small_files import main

    res = main(["--files", "6", "--spans-per-file", "3", "--workdir", str(tmp_path)])
    assert (res["files"], res["spans"]) == (6, 18) and res["ratio"] > 0
    assert "x the speed of each alone" in capsys.readouterr().out


def test_ingest_memory_bench_names_every_step_of_the_ingestion_and_its_follow_ups(tmp_path, capsys):
    """bench/ingest_memory.py at 300 spans: `relops ingest` succeeds, and the steps of the
    ingestion and of its follow-ups are each listed with a time."""
    from bench.ingest_memory import main

    res = main(["--spans", "300", "--workdir", str(tmp_path)])
    assert res["accepted"] == 300 and res["peak_rss_mb"] > 0
    steps = {s["step"] for s in res["steps"]}
    assert {"ingest_chunk[chunk_0]", "raw_traces", "daily_signals", "trace_features", "rolling_drift"} <= steps
    assert "importing the Dagster definitions alone" in capsys.readouterr().out
