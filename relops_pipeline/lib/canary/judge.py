"""Canary judgement, after Kayenta (per-metric classification, critical metrics, a score with
pass and marginal thresholds) and Argo Rollouts (minimum data, a consecutive-failure limit).

Per interval (`judge_interval`), for each configured metric:

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
measures. Measured (bench/canary_quality.py, 200 vs 1800 requests per interval): with the
median unchanged the rank test alone caught 0.2 % of such canaries within 6 intervals, with
the tail test 11.5 %; when everything slows by 20 % the rank test alone caught 98.5 % within 2
intervals and the tail test alone 7.4 %. So both run: the rank test for the common uniform
slowdown, the tail test so that a tail-only regression is detectable at all. It needs
traffic: about 1,600 canary requests per interval catch a tail-only 20 % p95 regression
within 2 intervals in ≥ 90 % of canaries; 200 do not.

Over intervals (`judge_canary`): the canary fails when `consecutive_failure_limit` conclusive
intervals in a row fail (inconclusive intervals are skipped: they neither count nor reset the
streak; a pass or marginal interval resets it). Otherwise the last conclusive interval
speaks: pass (with at least `min_intervals` conclusive intervals, else inconclusive), marginal
(a marginal interval, or a failing one still below the limit), or inconclusive when no
interval had enough data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np

from .config import DEFAULT_CONFIG, CanaryConfig, CanaryMetric
from .model import (
    CanaryInterval,
    CanaryResult,
    CanaryVerdict,
    Classification,
    IntervalResult,
    IntervalVerdict,
    MetricResult,
)
from .stats import exceedance_counts, midp_exact, newcombe, shift_test, z_for

__all__ = ["judge_interval", "judge_canary", "judge_metric", "effect_text", "tolerance_text"]


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


def _classify(m: CanaryMetric, effect: float, low: float, high: float, significant: bool) -> tuple[Classification, bool]:
    cls: Classification
    if significant and low > 0 and effect > m.tolerance:
        cls = "High"
    elif significant and high < 0 and effect < -m.tolerance:
        cls = "Low"
    else:
        cls = "Pass"
    bad = (cls == "High" and m.direction in ("increase", "either")) or (
        cls == "Low" and m.direction in ("decrease", "either")
    )
    return cls, bad


def effect_text(m: MetricResult) -> str:
    """A metric's effect and interval in words that fit its unit: "+20.3% [+9.1%, +32.4%]"
    (log scale), "+4.10 pt [...]" (rates and tail shares, percentage points), else numbers."""
    if m.effect is None:
        return "n/a"

    def fmt(v: float | None) -> str:
        if v is None or math.isnan(v):
            return "n/a"
        if math.isinf(v):
            return "+∞" if v > 0 else "−∞"
        if m.kind == "continuous" and m.details.get("scale") == "log":
            return f"{v:+.1%}"
        if m.kind in ("proportion", "tail"):
            return f"{v * 100:+.2f} pt"
        return f"{v:+.4g}"

    return f"{fmt(m.effect)} [{fmt(m.low)}, {fmt(m.high)}]"


def tolerance_text(m: MetricResult) -> str:
    """The tolerance in the same words as `effect_text`."""
    if m.kind == "continuous" and m.details.get("scale", "log") == "log":
        return f"{m.tolerance * 100:g}%"
    if m.kind in ("proportion", "tail"):
        return f"{m.tolerance * 100:g} pt"
    return f"{m.tolerance:g}"


class _MetricIdentity(TypedDict):
    """The fields of a MetricResult that come from its CanaryMetric."""

    name: str
    column: str
    kind: str
    direction: str
    critical: bool
    tolerance: float
    effect_unit: str


def judge_metric(m: CanaryMetric, canary: np.ndarray | None, baseline: np.ndarray | None, *,
                 min_points: int, alpha_per_test: float | None) -> MetricResult:
    """One metric's comparison. `alpha_per_test` None means NoData was already decided."""
    base = _MetricIdentity(name=m.name, column=m.column, kind=m.kind, direction=m.direction, critical=m.critical,
                           tolerance=float(m.tolerance), effect_unit=m.effect_unit)
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
        if m.kind == "proportion":
            kc, kb = int((canary != 0).sum()), int((baseline != 0).sum())
            cv, bv = kc / nc, kb / nb
        else:
            kc, kb, t = exceedance_counts(canary, baseline, m.quantile)
            cv, bv = float(np.quantile(canary, m.quantile)), float(np.quantile(baseline, m.quantile))
            details.update(threshold=t, canary_share=kc / nc, baseline_share=kb / nb,
                           p_ratio=(cv / bv) if bv else None)
        details.update(canary_events=kc, baseline_events=kb)
        effect = kc / nc - kb / nb
        low, high = newcombe(kc, nc, kb, nb, z)
        p = midp_exact(kc, nc, kb, nb)
    cls, bad = _classify(m, effect, low, high, p <= alpha_per_test)
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

    with_data = [r for r in results if r.classification != "NoData"]
    score = 100.0 * sum(1 for r in with_data if r.passed) / len(with_data) if with_data else None
    vetoed_by = [r.name for r in results if r.critical and r.bad]
    missing_critical = [r.name for r in results if r.critical and r.classification == "NoData"]
    reasons: list[str] = []
    for r in results:
        if r.bad:
            assert r.level is not None  # a bad metric was tested, so it has a level
            reasons.append(
                f"{'critical ' if r.critical else ''}metric {r.name} {r.classification}: {r.effect_unit} "
                f"{effect_text(r)}, tolerance {tolerance_text(r)}, p = {r.p_value:.3g} (level {1 - r.level:.3g})"
            )
    verdict: IntervalVerdict
    if vetoed_by:
        verdict = "fail"
        reasons.insert(0, f"critical metric(s) {', '.join(vetoed_by)} regressed")
    elif score is None:  # no metric with data
        verdict = "inconclusive"
        reasons.append(f"no metric had {cfg.min_points} values in both groups")
    elif missing_critical:
        verdict = "inconclusive"
        reasons.append(f"critical metric(s) without enough data: {', '.join(missing_critical)}")
    elif score >= cfg.pass_score:
        verdict = "pass"
    elif score >= cfg.marginal_score:
        verdict = "marginal"
        reasons.insert(0, f"score {score:.1f} below the pass score {cfg.pass_score:g}")
    else:
        verdict = "fail"
        reasons.insert(0, f"score {score:.1f} below the marginal score {cfg.marginal_score:g}")

    return IntervalResult(index=index, start=start, end=end, n_canary=_rows(canary_values),
                          n_baseline=_rows(baseline_values), verdict=verdict,
                          score=score, metrics=results, tests=tests, vetoed_by=vetoed_by, reasons=reasons)


def judge_canary(intervals: Sequence[IntervalResult | CanaryInterval], cfg: CanaryConfig = DEFAULT_CONFIG, *,
                 workflow: str | None = None, canary: str | None = None,
                 baseline: str | None = None) -> CanaryResult:
    """Judge a canary over its intervals, in time order. Items may be already-judged
    IntervalResults or raw CanaryIntervals (from `load_canary_intervals`), judged here.
    See the module docstring for the consecutive-failure rule and the verdicts."""
    judged: list[IntervalResult] = []
    for i, item in enumerate(intervals):
        if isinstance(item, CanaryInterval):
            judged.append(judge_interval(item.canary, item.baseline, cfg, start=item.start, end=item.end,
                                         index=item.index))
        elif isinstance(item, IntervalResult):
            judged.append(item)
        else:
            raise TypeError(f"interval {i}: expected IntervalResult or CanaryInterval, got {type(item).__name__}")

    limit = cfg.consecutive_failure_limit
    streak = 0
    failed_at: int | None = None
    last: IntervalResult | None = None
    conclusive = 0
    for pos, r in enumerate(judged):
        if r.verdict == "inconclusive":
            continue
        conclusive += 1
        last = r
        if r.verdict == "fail":
            streak += 1
            if streak >= limit:
                failed_at = pos
                break
        else:
            streak = 0

    reasons: list[str] = []
    verdict: CanaryVerdict
    decider: IntervalResult | None
    if failed_at is not None:
        verdict = "fail"
        decider = judged[failed_at]
        reasons.append(f"{streak} consecutive failing intervals (limit {limit}); last: interval "
                       f"{decider.index}")
        reasons += decider.reasons
    elif last is None:
        verdict, decider = "inconclusive", None
        reasons.append(f"no interval had enough data (at least {cfg.min_points} requests per group and every "
                       f"critical metric)" if judged else "no intervals")
    elif last.verdict == "fail":
        verdict, decider = "marginal", last
        reasons.append(f"the last interval failed ({streak} of {limit} consecutive failures needed to fail)")
        reasons += last.reasons
    elif last.verdict == "marginal":
        verdict, decider = "marginal", last
        reasons += last.reasons or [f"last interval marginal (score {last.score:.1f})"]
    elif conclusive < cfg.min_intervals:
        verdict, decider = "inconclusive", last
        reasons.append(f"{conclusive} conclusive interval(s); a pass needs {cfg.min_intervals}")
    else:
        verdict, decider = "pass", last
        reasons.append(f"{conclusive} conclusive interval(s); the last passed with score {last.score:.1f}")

    starts = [r.start for r in judged if r.start is not None]
    ends = [r.end for r in judged if r.end is not None]
    return CanaryResult(
        verdict=verdict,
        score=decider.score if decider is not None else None,
        consecutive_failures=streak,
        failed_at=failed_at,
        intervals=judged,
        reasons=reasons,
        config=cfg.as_dict(),
        workflow=workflow,
        canary=canary,
        baseline=baseline,
        window_start=min(starts) if starts else None,
        window_end=max(ends) if ends else None,
    )
