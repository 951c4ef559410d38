"""Canary judgement, after Kayenta (per-metric classification, critical metrics, a score with
pass and marginal thresholds) and Argo Rollouts (minimum data, a consecutive-failure limit).

Per interval (`judge_interval`, the report's descriptive per-interval view), for each configured metric:

1. NoData when either group has fewer than `min_points` non-NULL values.
2. The test of its kind (config.py): Mann-Whitney U with the Hodges-Lehmann shift and its
   Moses interval (continuous); for proportions and the tail, the conditional exact test
   (hypergeometric mid-p) decides and Newcombe's interval on the difference describes the
   effect (Newcombe alone is too liberal for rare events in unequal groups: stats.py).
3. Multiple comparisons: the m metrics with data in the interval form one family; each test
   and interval runs at α/m (Bonferroni, α = 1 − confidence), so an A/A interval marks any
   metric High or Low with probability at most about α. Bonferroni rather than Holm because
   every metric's interval is shown and should be the interval its verdict came from; with
   one metric regressing (the usual case) Holm's first step is Bonferroni anyway.
4. High when the test is significant at α/m, the interval lies above 0 and the point estimate
   exceeds the tolerance; Low the mirror image; otherwise Pass (so a verdict never contradicts
   the interval shown). High/Low in the metric's bad direction is "bad": the metric does not
   pass. A deviation in the harmless direction (faster, cheaper) passes.

The interval's verdict: fail when a critical metric is bad (veto); inconclusive when no
metric has data, or some critical metric has none; otherwise pass / marginal / fail by the score
(share of passing metrics among those with data, × 100) against pass_score / marginal_score.

Why a tail test next to the rank test: a p95 regression can leave the median alone (a slow
path for a few percent of requests, a wider spread). Mann-Whitney's power depends on
P(canary > baseline) − ½, which such a change hardly moves; the share above the baseline's
p95 moves from 5 % to about 8 % for a 20 % higher p95, and that is what the tail test
measures. Measured with this per-interval judge (the first bench/canary_quality.py, 200 vs 1800
requests per interval): with the
median unchanged the rank test alone caught 0.2 % of such canaries within 6 intervals, with
the tail test 11.5 %; when everything slows by 20 % the rank test alone caught 98.5 % within 2
intervals and the tail test alone 7.4 %. So both run: the rank test for the common uniform
slowdown, the tail test so that a tail-only regression is detectable at all. It needs
traffic: about 1,600 canary requests per interval catch a tail-only 20 % p95 regression
within 2 intervals in ≥ 90 % of canaries; 200 do not.

Over intervals (`judge_canary`): the decision is sequential (sequential.py): at every
interval's end the whole window since the canary's start is judged, every metric at the level
of the always-valid mixture boundary, so that looking every 10 minutes for a day does not
inflate false rollbacks. The canary fails at the first run of `consecutive_failure_limit`
failing looks (default 1); passes when nothing deviates and every critical metric's interval
rules out a regression of its margin (after `min_intervals` looks); is marginal after a
marginal look; and is otherwise inconclusive, with what a decision still needs (more canary
requests, and hours at the current rate). Each interval judged on its own (`judge_interval`,
at 1 − confidence per interval) stays in the result as a descriptive view for the report; it
decides nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .config import DEFAULT_CONFIG, CanaryConfig, CanaryMetric
from .model import (
    CanaryInterval,
    CanaryResult,
    CanaryVerdict,
    IntervalResult,
    MetricResult,
)
from .sequential import SequentialCanary
from .stats import exceedance_counts, shift_test, z_for
from .verdict import classify, compare_counts, effect_text, interval_verdict, metric_identity, tolerance_text

__all__ = ["judge_interval", "judge_canary", "judge_metric", "effect_text", "tolerance_text", "interval_verdict",
           "classify", "shows_pass", "conclude"]


def _to_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):  # None, pandas NA
        return math.nan


def _values(data: Any, column: str) -> np.ndarray | None:
    """The column's finite values as float64 (NULL/NaN dropped), or None if there is no column."""
    try:
        raw = data[column]
    except (KeyError, IndexError, TypeError):
        return None
    arr = np.asarray(raw)
    arr = np.array([_to_float(v) for v in arr.ravel().tolist()], dtype=float) if arr.dtype == object else arr.astype(float).ravel()
    return arr[np.isfinite(arr)]


def _rows(data: Any) -> int:
    """Requests in a group: a DataFrame's rows, or the longest column of a mapping."""
    shape = getattr(data, "shape", None)
    if shape:
        return int(shape[0])
    if isinstance(data, Mapping):
        return max((len(np.asarray(v).ravel()) for v in data.values()), default=0)
    return 0


def judge_metric(m: CanaryMetric, canary: np.ndarray | None, baseline: np.ndarray | None, *,
                 min_points: int, alpha_per_test: float | None) -> MetricResult:
    """One metric's comparison. `alpha_per_test` None means NoData was already decided."""
    base = metric_identity(m)
    nc = 0 if canary is None else len(canary)
    nb = 0 if baseline is None else len(baseline)
    if canary is None or baseline is None:
        return MetricResult(**base, classification="NoData", passed=None, bad=False, n_canary=nc, n_baseline=nb,
                            note=f"no column {m.column!r} in the data")
    if nc < min_points or nb < min_points or alpha_per_test is None:
        return MetricResult(**base, classification="NoData", passed=None, bad=False, n_canary=nc, n_baseline=nb,
                            note=f"fewer than {min_points} values in a group (canary {nc}, baseline {nb})")
    level = 1.0 - alpha_per_test
    z = z_for(level)
    details: dict[str, Any] = {}
    note = ""
    if m.kind == "continuous":
        x, y = canary, baseline
        scale = m.scale
        if scale == "log":
            pooled = np.concatenate([x, y])
            positive = pooled[pooled > 0]
            if len(positive) == 0:
                scale = "linear"
                note = "no positive values: compared on the linear scale"
            else:
                # Values <= 0 (a zero cost) share one floor below every positive value: the
                # ranks, and so the test, are unchanged; only the effect's scale is log.
                floor = 0.5 * float(positive.min())
                x, y = np.log(np.maximum(x, floor)), np.log(np.maximum(y, floor))
                if (pooled <= 0).any():
                    note = f"values <= 0 set to {floor:.4g} for the log scale (ranks unchanged)"
        r = shift_test(x, y, z)
        if scale == "log":
            effect, low, high = math.expm1(r.estimate), math.expm1(r.low), math.expm1(r.high)
        else:
            effect, low, high = r.estimate, r.low, r.high
        details["scale"] = scale
        details["u"] = r.u
        cv, bv, p = float(np.median(canary)), float(np.median(baseline)), r.p_value
    else:
        t: float | None = None
        if m.kind == "proportion":
            kc, kb = int((canary != 0).sum()), int((baseline != 0).sum())
            cv, bv = kc / nc, kb / nb
        else:
            kc, kb, t = exceedance_counts(canary, baseline, m.quantile)
            cv, bv = float(np.quantile(canary, m.quantile)), float(np.quantile(baseline, m.quantile))
        effect, low, high, p = compare_counts(kc, nc, kb, nb, z, details, threshold=t, quantiles=(cv, bv))
    cls, bad = classify(m, effect, low, high, p <= alpha_per_test)
    return MetricResult(**base, classification=cls, passed=not bad, bad=bad, n_canary=nc, n_baseline=nb,
                        canary_value=cv, baseline_value=bv, effect=effect, low=low, high=high, p_value=p,
                        level=level, details=details, note=note)


def judge_interval(canary_values: Mapping[str, Sequence] | Any, baseline_values: Mapping[str, Sequence] | Any,
                   cfg: CanaryConfig = DEFAULT_CONFIG, *, start=None, end=None, index: int = 0) -> IntervalResult:
    """Judge one interval: `canary_values` and `baseline_values` map a trace_features column
    to that group's values in the interval (a dict of sequences or a pandas DataFrame; NULL
    and NaN values are dropped per metric). Returns the per-metric classifications, the
    score and the interval's verdict (see the module docstring)."""
    cols: dict[str, tuple[np.ndarray | None, np.ndarray | None]] = {}
    for m in cfg.metrics:
        if m.column not in cols:
            cols[m.column] = (_values(canary_values, m.column), _values(baseline_values, m.column))

    def has_data(m: CanaryMetric) -> bool:
        c, b = cols[m.column]
        return c is not None and b is not None and len(c) >= cfg.min_points and len(b) >= cfg.min_points

    tests = sum(1 for m in cfg.metrics if has_data(m))
    alpha = (1.0 - cfg.confidence) / tests if tests else None
    results = [judge_metric(m, *cols[m.column], min_points=cfg.min_points,
                            alpha_per_test=alpha if has_data(m) else None) for m in cfg.metrics]

    verdict, score, vetoed_by, reasons = interval_verdict(results, cfg)
    return IntervalResult(index=index, start=start, end=end, n_canary=_rows(canary_values),
                          n_baseline=_rows(baseline_values), verdict=verdict,
                          score=score, metrics=results, tests=tests, vetoed_by=vetoed_by, reasons=reasons)


def judge_canary(intervals: Sequence[CanaryInterval], cfg: CanaryConfig = DEFAULT_CONFIG, *,
                 workflow: str | None = None, canary: str | None = None, baseline: str | None = None,
                 per_interval: bool = True) -> CanaryResult:
    """Judge a canary over its intervals (raw CanaryIntervals from `load_canary_intervals`, in
    time order): the growing window from the canary's start is judged at every interval's end
    with the sequential test (sequential.py), the canary failing at the first run of
    `consecutive_failure_limit` failing looks. With `per_interval`, each interval is also judged
    on its own (a descriptive view for the report; it decides nothing)."""
    raw = list(intervals)
    for i, item in enumerate(raw):
        if not isinstance(item, CanaryInterval):
            raise TypeError(f"interval {i}: expected a CanaryInterval, got {type(item).__name__}")
    view = [judge_interval(iv.canary, iv.baseline, cfg, start=iv.start, end=iv.end, index=iv.index)
            for iv in raw] if per_interval else []

    seq = SequentialCanary(cfg)
    looks: list[IntervalResult] = []
    limit = cfg.consecutive_failure_limit
    streak = 0
    failed_at: int | None = None
    for pos, iv in enumerate(raw):
        look = seq.add(iv, detail=pos == len(raw) - 1)
        looks.append(look)
        if look.verdict == "fail":
            streak += 1
            if streak >= limit:
                failed_at = pos
                break
        elif look.verdict != "inconclusive":
            streak = 0
    if failed_at is not None and failed_at < len(raw) - 1:  # the report shows the deciding look in full
        looks[failed_at] = seq.judge(index=looks[failed_at].index, end=looks[failed_at].end, detail=True)
    return conclude(looks, seq, cfg, failed_at=failed_at, streak=streak, view=view, workflow=workflow,
                    canary=canary, baseline=baseline)


def pending_metrics(look: IntervalResult) -> list[str]:
    """The critical metrics whose interval does not yet rule out a regression of their margin."""
    return [m.name for m in look.metrics if m.critical and not m.details.get("margin_ok")]


def shows_pass(look: IntervalResult, looks: int, cfg: CanaryConfig) -> bool:
    """Does this look (the `looks`-th) pass the canary? Nothing deviates, every critical metric
    rules out a regression of its margin, and there have been `min_intervals` looks."""
    return look.verdict == "pass" and not pending_metrics(look) and looks >= cfg.min_intervals


def conclude(looks: list[IntervalResult], seq: Any, cfg: CanaryConfig, *, failed_at: int | None, streak: int,
             view: list[IntervalResult], workflow: str | None = None, canary: str | None = None,
             baseline: str | None = None) -> CanaryResult:
    """The canary's verdict from its looks so far: fail (a failing run reached the limit),
    marginal, pass (every critical metric rules out a regression of its margin, after
    `min_intervals` looks) or inconclusive, with what a decision still needs."""
    limit = cfg.consecutive_failure_limit
    reasons: list[str] = []
    verdict: CanaryVerdict
    needs = None
    last = looks[-1] if looks else None
    if failed_at is not None:
        verdict, decider = "fail", looks[failed_at]
        reasons.append(f"failed at look {decider.index} ({decider.n_canary} canary and {decider.n_baseline} baseline "
                       f"requests since the start)" + (f", {streak} failing looks in a row" if limit > 1 else ""))
        reasons += decider.reasons
    elif last is None:
        verdict, decider = "inconclusive", None
        reasons.append("no intervals")
    elif last.verdict == "fail":
        verdict, decider = "marginal", last
        reasons.append(f"the last look failed ({streak} of {limit} failing looks in a row needed to fail)")
        reasons += last.reasons
    elif last.verdict == "marginal":
        verdict, decider = "marginal", last
        reasons += last.reasons or [f"last look marginal (score {last.score:.1f})"]
    else:
        decider = last
        pending = pending_metrics(last)
        if shows_pass(last, len(looks), cfg):
            verdict = "pass"
            reasons.append(f"no regression after {len(looks)} look(s) ({last.n_canary} canary requests): every "
                           f"critical metric's interval rules out a regression of its margin")
        else:
            verdict = "inconclusive"
            needs = seq.needs(last)
            if last.verdict == "inconclusive":
                reasons += last.reasons
            if pending:
                reasons.append(f"not yet shown within their margins: {', '.join(pending)}")
            elif len(looks) < cfg.min_intervals:
                reasons.append(f"{len(looks)} look(s); a pass needs {cfg.min_intervals}")
            reasons.append(needs.text())
    starts = [r.start for r in looks if r.start is not None]
    ends = [r.end for r in looks if r.end is not None]
    return CanaryResult(
        verdict=verdict,
        score=decider.score if decider is not None else None,
        consecutive_failures=streak,
        failed_at=failed_at,
        intervals=view,
        reasons=reasons,
        config=cfg.as_dict(),
        workflow=workflow,
        canary=canary,
        baseline=baseline,
        window_start=min(starts) if starts else None,
        window_end=max(ends) if ends else None,
        looks=looks,
        needs=None if needs is None else {"canary_requests": needs.canary_requests, "hours": needs.hours,
                                          "canary_rate_per_hour": needs.canary_rate_per_hour,
                                          "by_metric": needs.by_metric,
                                          "before_first_judgement": needs.before_first_judgement, "text": needs.text()},
    )
