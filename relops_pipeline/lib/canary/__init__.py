"""Canary judgement: compare a canary release's production requests with the baseline's in the
same time window, interval by interval (Kayenta / Argo Rollouts style). Pure domain logic
(numpy, scipy); no dagster.

    intervals = load_canary_intervals(con, "support-triage", "support-triage@v7", None, start, end, 10)
    result = judge_canary(intervals, CanaryConfig.from_dict(workflow.rollout.get("canary")),
                          workflow="support-triage", canary="support-triage@v7", baseline=None)
    render_markdown(result); render_html(result); result.as_dict()
"""

from .config import DEFAULT_CONFIG, DEFAULT_METRICS, CanaryConfig, CanaryConfigError, CanaryMetric
from .judge import judge_canary, judge_interval
from .load import load_canary_intervals
from .model import CanaryInterval, CanaryResult, IntervalResult, MetricResult
from .report import render_html, render_json, render_markdown

__all__ = [
    "CanaryConfig",
    "CanaryConfigError",
    "CanaryInterval",
    "CanaryMetric",
    "CanaryResult",
    "DEFAULT_CONFIG",
    "DEFAULT_METRICS",
    "IntervalResult",
    "MetricResult",
    "judge_canary",
    "judge_interval",
    "load_canary_intervals",
    "render_html",
    "render_json",
    "render_markdown",
]
