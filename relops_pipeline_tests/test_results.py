"""Typed results round-trip through their JSON (lib/results.py), nested dataclasses, tuples and dates included."""

from __future__ import annotations

import datetime as dt
import json

from relops_pipeline.lib.results import from_json, to_json
from relops_pipeline.lib.traces_day import DayValidation, FeaturesRefresh, ReleaseVolume, SignalsRefresh, WorkflowTraces
from relops_pipeline.lib.validation import RuleResult, SpanValidation


def _round_trip(value):
    return from_json(type(value), json.loads(json.dumps(to_json(value))))


def test_a_day_validation_round_trips_through_json():
    rule = RuleResult("times_ordered", "ERROR", False, {"unexpected_count": 1, "unexpected_percent": 0.5},
                      "no span ends before it starts", [{"trace_id": "t1"}], error=None)
    v = DayValidation(dt.datetime(2026, 11, 2), dt.datetime(2026, 11, 3), 200, 3, 1,
                      (ReleaseVolume("doc-qa", "v2.3.0", 197), ReleaseVolume("doc-qa", "unknown", 3)),
                      SpanValidation((rule,), element_count=200, duration_s=0.25))
    back = _round_trip(v)
    assert back == v and isinstance(back.by_release, tuple) and isinstance(back.validation.rules[0], RuleResult)
    assert isinstance(back.start, dt.datetime) and not back.validation.passed


def test_refresh_results_round_trip_through_json():
    s = SignalsRefresh(dt.date(2026, 11, 2), dt.date(2026, 11, 4), 6, 1200, 7, 0.42, 3100.0)
    f = FeaturesRefresh(dt.date(2026, 11, 2), dt.date(2026, 11, 4), 400, (WorkflowTraces("doc-qa", 400),))
    assert _round_trip(s) == s and _round_trip(f) == f
    assert to_json(s)["start"] == "2026-11-02"
