"""What a metric's comparison and a look's set of comparisons mean: the classification
(High / Low / Pass against the tolerance), the look's verdict (critical veto, score against
pass / marginal) and the words for effects and tolerances. Shared by the per-interval judge
(judge.py) and the sequential judge (sequential.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypedDict

from .config import CanaryConfig, CanaryMetric
from .model import Classification, IntervalVerdict, MetricResult
from .stats import midp_exact, newcombe

__all__ = ["classify", "metric_identity", "interval_verdict", "effect_text", "tolerance_text", "compare_counts"]


def classify(m: CanaryMetric, effect: float, low: float, high: float, significant: bool) -> tuple[Classification, bool]:
    """High/Low when significant, the interval clears 0 and the estimate is beyond the tolerance;
    `bad` when that is the metric's bad direction."""
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


def metric_identity(m: CanaryMetric) -> _MetricIdentity:
    """The fields of a MetricResult that come from its CanaryMetric."""
    return _MetricIdentity(name=m.name, column=m.column, kind=m.kind, direction=m.direction, critical=m.critical,
                           tolerance=float(m.tolerance), effect_unit=m.effect_unit)


def interval_verdict(results: Sequence[MetricResult], cfg: CanaryConfig
                     ) -> tuple[IntervalVerdict, float | None, list[str], list[str]]:
    """(verdict, score, vetoing metrics, reasons) from one look's metric results: fail when a
    critical metric is bad (veto); inconclusive without data for every critical metric; else by
    the score against pass_score / marginal_score."""
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
    return verdict, score, vetoed_by, reasons


def compare_counts(kc: int, nc: int, kb: int, nb: int, z: float, details: dict, *, threshold: float | None = None,
                   quantiles: tuple[float, float] | None = None) -> tuple[float, float, float, float]:
    """Events among the canary's and the baseline's requests compared (a rate, or the share above
    the pooled quantile `threshold` for the tail test): (difference of shares, Newcombe's interval
    at z, exact mid-p). The counts, and for the tail the threshold, shares and p-ratio of the
    groups' `quantiles`, go into `details`."""
    if threshold is not None and quantiles is not None:
        cv, bv = quantiles
        details.update(threshold=threshold, canary_share=kc / nc, baseline_share=kb / nb,
                       p_ratio=(cv / bv) if bv else None)
    details.update(canary_events=kc, baseline_events=kb)
    low, high = newcombe(kc, nc, kb, nb, z)
    return kc / nc - kb / nb, low, high, midp_exact(kc, nc, kb, nb)
