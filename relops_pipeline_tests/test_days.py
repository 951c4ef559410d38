"""Ranges of touched days (lib/days.py): grouping, and bridging the empty gaps between them."""

from __future__ import annotations

import datetime as dt

from relops_pipeline.lib.days import bridged, day_ranges, gaps

D = dt.date(2026, 3, 1)


def day(k: int) -> dt.date:
    return D + dt.timedelta(days=k)


def test_consecutive_days_form_ranges():
    assert day_ranges([day(3), day(0), day(1), day(1), day(9)]) == [(day(0), day(1)), (day(3), day(3)), (day(9), day(9))]


def test_an_empty_gap_up_to_the_limit_is_bridged_and_a_gap_with_spans_is_not():
    ranges = day_ranges([day(0), day(1), day(4), day(20), day(60)])  # gaps of 2, 15 and 39 days
    assert gaps(ranges, 30) == [(day(2), day(3)), (day(5), day(19))]
    # Nothing between them: the first three ranges become one run; 39 days is too far.
    assert bridged(ranges, [], 30) == [(day(0), day(20)), (day(60), day(60))]
    # A day with spans in a gap keeps the ranges on either side of it apart.
    assert bridged(ranges, [day(10)], 30) == [(day(0), day(4)), (day(20), day(20)), (day(60), day(60))]
    assert bridged(ranges, [day(3)], 30) == [(day(0), day(1)), (day(4), day(20)), (day(60), day(60))]
    # The limit is the gap's length in days, inclusive.
    assert bridged(ranges, [], 15) == [(day(0), day(20)), (day(60), day(60))]
    assert bridged(ranges, [], 14) == [(day(0), day(4)), (day(20), day(20)), (day(60), day(60))]
    assert bridged(ranges, [], 0) == ranges
    assert bridged([], [], 30) == [] and gaps([], 30) == []


def test_the_days_of_the_gaps_that_hold_spans(wh):
    from relops_pipeline.lib.traces_day import days_with_spans

    for k, hour in ((2, 0), (3, 23), (10, 12)):
        wh.execute("INSERT INTO spans (trace_id, span_id, start_time) VALUES (?, ?, ?)",
                   [f"t{k}", f"s{k}", dt.datetime.combine(day(k), dt.time(hour, 59, 59))])
    assert days_with_spans(wh, [(day(1), day(3)), (day(5), day(9))]) == {day(2), day(3)}  # the end day included
    assert days_with_spans(wh, [(day(4), day(9)), (day(11), day(12))]) == set()
    assert days_with_spans(wh, []) == set()


def test_a_store_homes_days_with_spans_come_from_its_partition_list(tmp_path):
    """The same days as the query over the spans, from the Delta log alone (no data file read)."""
    import duckdb
    import pyarrow as pa

    from relops_pipeline.lib.settings import TraceStoreSettings
    from relops_pipeline.lib.traces_day import days_with_spans, stored_days_with_spans
    from relops_pipeline.lib.tracestore.linked import TraceTables
    from relops_pipeline.lib.tracestore.schema import SPANS

    settings = TraceStoreSettings(uri=str(tmp_path / "store"))
    windows = [(day(1), day(3)), (day(5), day(9)), (day(11), day(12))]
    assert stored_days_with_spans(settings, windows) == set()  # no table yet (and none created)
    assert not TraceTables(settings).store(SPANS).exists()
    starts = [dt.datetime.combine(day(k), dt.time(hour, 59, 59)) for k, hour in ((2, 0), (3, 23), (10, 12), (12, 1))]
    TraceTables(settings).store(SPANS).append(pa.table({
        "trace_id": [f"t{i}" for i in range(4)], "span_id": [f"s{i}" for i in range(4)], "start_time": starts,
        "workflow": ["w"] * 4, "release": ["r"] * 4}), "source-1")
    con = duckdb.connect()
    TraceTables(settings).attach(con)
    assert stored_days_with_spans(settings, windows) == days_with_spans(con, windows) == {day(2), day(3), day(12)}
    assert stored_days_with_spans(settings, []) == set()
