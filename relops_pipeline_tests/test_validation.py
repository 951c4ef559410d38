"""Great Expectations rules on span batches: GX must really evaluate (good passes, bad fails
with exact counts) and its hidden exceptions must surface as failures."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from relops_pipeline.lib import validation
from relops_pipeline.lib.schema import SPAN_COLUMNS
from relops_pipeline.lib.validation import ERROR, VALIDATION_COLUMNS, WARN, spans_frame, validate_spans
from relops_pipeline.lib.warehouse import open_warehouse

T0 = dt.datetime(2025, 3, 10, 8, 0, 0)
RULES = {
    "keys_not_null": ERROR,
    "span_ids_unique": ERROR,
    "times_ordered": ERROR,
    "latency_not_negative": ERROR,
    "unknown_release_share": WARN,
    "latency_in_range": WARN,
}


def good_frame(n: int = 100) -> pd.DataFrame:
    start = [T0 + dt.timedelta(seconds=i) for i in range(n)]
    return pd.DataFrame(
        {
            "trace_id": [f"t{i // 4}" for i in range(n)],
            "span_id": [f"s{i}" for i in range(n)],
            "start_time": start,
            "end_time": [s + dt.timedelta(seconds=1) for s in start],
            "latency_ms": [1000.0] * n,
            "release": ["v1"] * n,
            "release_known": [True] * n,
            "workflow": ["support"] * n,
        }
    )


def bad_frame() -> pd.DataFrame:
    df = good_frame(100)
    df.loc[[10, 11, 12], "span_id"] = None  # 3 null span ids
    df.loc[[20, 21], ["trace_id", "span_id"]] = df.loc[[30, 31], ["trace_id", "span_id"]].to_numpy()  # 2 dup pairs
    df.loc[40:43, "end_time"] = df.loc[40:43, "start_time"] - pd.Timedelta(seconds=5)  # 4 reversed times
    df.loc[50:59, ["release", "release_known"]] = ["unknown", False]  # 10 unknown releases
    df.loc[70, "latency_ms"] = 10 * 3600 * 1000.0  # one 10-hour span
    df.loc[70, "end_time"] = df.loc[70, "start_time"] + pd.Timedelta(hours=10)
    return df


def summary(result) -> dict[str, tuple[bool, int]]:
    return {r.name: (r.passed, r.observed.get("unexpected_count")) for r in result.rules}


def test_good_batch_passes_every_rule():
    result = validate_spans(good_frame())
    assert {r.name: r.severity for r in result.rules} == RULES
    assert result.passed and result.failed() == []
    for r in result.rules:
        assert r.observed["element_count"] == 100, r
        assert r.observed["unexpected_count"] == 0 and r.error is None
        assert r.description
    assert result.rule("unknown_release_share").observed["unknown_share"] == 0.0


def test_bad_batch_fails_the_right_rules_with_exact_counts():
    result = validate_spans(bad_frame())
    assert summary(result) == {
        "keys_not_null": (False, 3),
        "span_ids_unique": (False, 4),  # GX counts both rows of each duplicated pair
        "times_ordered": (False, 4),
        "latency_not_negative": (True, 0),
        "unknown_release_share": (False, 10),
        "latency_in_range": (False, 1),
    }
    assert not result.passed
    assert [r.name for r in result.failed(ERROR)] == ["keys_not_null", "span_ids_unique", "times_ordered"]
    assert [r.name for r in result.failed(WARN)] == ["unknown_release_share", "latency_in_range"]
    assert all(r.error is None for r in result.rules)

    keys = result.rule("keys_not_null")
    assert keys.observed["null_count.span_id"] == 3 and keys.observed["null_count.trace_id"] == 0
    assert keys.unexpected_examples == ["span_id: 3 null"]
    assert result.rule("unknown_release_share").observed["unknown_share"] == pytest.approx(0.10)
    assert result.rule("latency_in_range").unexpected_examples == [36_000_000.0]
    dup_examples = result.rule("span_ids_unique").unexpected_examples
    assert {(e["trace_id"], e["span_id"]) for e in dup_examples} == {("t7", "s30"), ("t7", "s31")}
    ordered = result.rule("times_ordered").unexpected_examples
    assert len(ordered) == 4 and ordered[0][0] < ordered[0][1]  # [end_time, start_time]


def test_thresholds_are_parameters():
    df = bad_frame()
    relaxed = validate_spans(df, latency_max_ms=11 * 3600 * 1000, unknown_release_max_share=0.10)
    assert relaxed.rule("unknown_release_share").passed  # exactly 10% is allowed
    assert relaxed.rule("latency_in_range").passed
    strict = validate_spans(df, unknown_release_max_share=0.09)
    assert not strict.rule("unknown_release_share").passed
    # A share exactly at a limit that is not representable in binary (59/1000 vs 0.059).
    df59 = good_frame(1000)
    df59.loc[:58, "release_known"] = False
    assert validate_spans(df59, unknown_release_max_share=0.059).rule("unknown_release_share").passed
    assert not validate_spans(df59, unknown_release_max_share=0.058).rule("unknown_release_share").passed
    with pytest.raises(ValueError):
        validate_spans(df, unknown_release_max_share=1.5)


def test_negative_latency_is_an_error():
    df = good_frame()
    df.loc[[5, 6], "latency_ms"] = -3.0
    result = validate_spans(df)
    assert summary(result)["latency_not_negative"] == (False, 2)
    assert summary(result)["latency_in_range"] == (False, 2)  # 2% out of range > 0.1%
    assert [r.name for r in result.failed(ERROR)] == ["latency_not_negative"]


def test_empty_batch_passes_with_zero_elements():
    result = validate_spans(good_frame(0))
    assert result.passed and result.failed() == []
    for r in result.rules:
        assert r.observed["element_count"] == 0 and r.observed["empty_batch"] is True
        assert "empty batch" in r.description


def test_gx_exception_info_surfaces_as_failure():
    result = validate_spans(good_frame().drop(columns=["latency_ms"]))
    failed = {r.name: r for r in result.failed()}
    assert set(failed) == {"latency_not_negative", "latency_in_range"}
    for r in failed.values():
        assert "latency_ms" in r.error and "does not exist" in r.error
        assert "NOT EVALUATED" in r.description
    assert not result.passed
    # The frame's other columns are still really checked.
    bad = bad_frame().drop(columns=["latency_ms"])
    assert summary(validate_spans(bad))["times_ordered"] == (False, 4)


def test_gx_crash_fails_every_rule(monkeypatch):
    def boom():
        raise RuntimeError("context unavailable")

    monkeypatch.setattr(validation, "_context", boom)
    result = validate_spans(good_frame())
    assert len(result.failed()) == len(RULES)
    assert all("context unavailable" in r.error for r in result.rules)


def test_frame_from_warehouse(tmp_path):
    cols = [name for name, _ in SPAN_COLUMNS]
    rows = []
    for batch, (trace, span, latency) in [("b1", ("t1", "a", 10.0)), ("b1", ("t1", "b", 20.0)), ("b2", ("t2", "a", -1.0))]:
        row = dict.fromkeys(cols)
        row.update(
            trace_id=trace, span_id=span, workflow="w", release="unknown", release_known=False,
            start_time=T0, end_time=T0 + dt.timedelta(milliseconds=max(latency, 0)), latency_ms=latency,
            ingest_batch_id=batch, kind="llm", status="ok",
        )
        rows.append([row[c] for c in cols])
    with open_warehouse(tmp_path / "w.duckdb") as con:
        con.executemany(f"INSERT INTO spans VALUES ({', '.join('?' for _ in cols)})", rows)
        df = spans_frame(con, batch_ids=["b1"])
        assert list(df.columns) == list(VALIDATION_COLUMNS) and len(df) == 2
        result = validate_spans(df)
        assert not result.failed(ERROR)
        assert summary(result)["unknown_release_share"] == (False, 2)
        everything = validate_spans(spans_frame(con))
        assert summary(everything)["latency_not_negative"] == (False, 1)
        assert len(spans_frame(con, batch_ids=[])) == 0


@pytest.mark.parametrize(("share", "times_ordered"), [(0.01, ERROR), (0.05, WARN)])
def test_frames_partitioned_by_trace_judge_like_one_frame(share, times_ordered):
    """A batch validated as several frames (partitioned by trace_id, as validate_window does
    for a large day) gives the rules, counts, shares and verdicts of one frame: the counts are
    summed and `mostly` is judged on the whole batch, not per frame. The 4 reversed spans of
    100 (4 %) all sit in trace t10, so their frame of 24 spans alone (17 %) would be an ERROR
    at 5 %, where the batch is a tolerated WARN."""
    df = bad_frame()
    trace_no = df["trace_id"].str[1:].astype(int)
    frames = [df[trace_no % 4 == b] for b in range(4)]
    assert sum(len(f) for f in frames) == len(df) and len(frames[10 % 4]) == 24
    whole = validate_spans(df, max_violating_share=share)
    split = validate_spans(iter(frames), max_violating_share=share)
    assert split.element_count == whole.element_count == 100
    for one, many in zip(whole.rules, split.rules, strict=True):
        assert (one.name, one.passed, one.severity, one.error) == (many.name, many.passed, many.severity, many.error)
        assert one.observed == pytest.approx(many.observed), one.name
        assert len(many.unexpected_examples) == len(one.unexpected_examples), one.name
    ordered = split.rule("times_ordered")
    assert (ordered.passed, ordered.severity, ordered.observed["unexpected_count"]) == (False, times_ordered, 4)
    assert split.rule("span_ids_unique").observed["unexpected_count"] == 4  # both rows of 2 pairs, across frames' sums
    alone = validate_spans(frames[10 % 4], max_violating_share=share).rule("times_ordered")
    assert alone.severity == ERROR  # judged per frame, the same spans would block the day


def test_no_frames_is_an_empty_batch():
    result = validate_spans(iter([]))
    assert result.passed and result.element_count == 0
    assert all(r.observed["element_count"] == 0 for r in result.rules)


def test_a_window_validated_in_frames_equals_one_frame(tmp_path, monkeypatch):
    """validate_window over the warehouse: with frames of at most 30 spans (hash buckets of
    trace_id, so 100 spans make 4 frames) the day's validation, its unknown-release and
    anomalous counts are those of one frame."""
    from relops_pipeline.lib import traces_day

    cols = [name for name, _ in SPAN_COLUMNS]
    rows = []
    for r in bad_frame().dropna(subset=["span_id"]).itertuples(index=False):
        row = dict.fromkeys(cols)
        row.update(trace_id=r.trace_id, span_id=r.span_id, workflow=r.workflow, release=r.release,
                   release_known=bool(r.release_known), start_time=r.start_time, end_time=r.end_time,
                   latency_ms=r.latency_ms, ingest_batch_id="b1", kind="llm", status="ok",
                   anomalies='["clock_skew"]' if r.end_time < r.start_time else None)
        rows.append([row[c] for c in cols])
    day = (T0.replace(hour=0), T0.replace(hour=0) + dt.timedelta(days=1))
    with open_warehouse(tmp_path / "w.duckdb") as con:
        con.executemany(f"INSERT INTO spans VALUES ({', '.join('?' for _ in cols)})", rows)
        one = traces_day.validate_window(con, *day)
        monkeypatch.setattr(traces_day, "VALIDATION_FRAME_ROWS", 30)
        framed = traces_day.validate_window(con, *day)
    assert (one.spans, one.unknown_release_spans, one.anomalous_spans) == (97, 10, 4)
    assert (framed.spans, framed.unknown_release_spans, framed.anomalous_spans) == (97, 10, 4)
    assert summary(framed.validation) == summary(one.validation)
    assert summary(one.validation)["span_ids_unique"] == (False, 4)
    for a, b in zip(one.validation.rules, framed.validation.rules, strict=True):
        assert (a.passed, a.severity) == (b.passed, b.severity) and a.observed == pytest.approx(b.observed), a.name
