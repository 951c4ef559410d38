"""The canary's data model: the values of one interval, and the results per metric, per
interval and for the whole canary. Plain dataclasses; `as_dict()` gives JSON-ready dicts
(non-finite floats become None, datetimes ISO strings)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np

Classification = Literal["Pass", "High", "Low", "NoData"]
IntervalVerdict = Literal["pass", "marginal", "fail", "inconclusive"]
CanaryVerdict = Literal["pass", "marginal", "fail", "inconclusive"]


def plain(obj: Any) -> Any:
    """JSON-ready copy: dataclasses as dicts in field order, NaN/inf as None, datetimes as ISO
    text, numpy scalars and arrays as Python values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [plain(v) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        return plain(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, datetime):
        return obj.isoformat()
    return obj


@dataclass
class CanaryInterval:
    """The raw values of one interval: column -> values, for each group (NULLs as NaN)."""

    start: datetime | None
    end: datetime | None
    canary: dict[str, np.ndarray]
    baseline: dict[str, np.ndarray]
    index: int = 0

    @property
    def n_canary(self) -> int:
        return max((len(v) for v in self.canary.values()), default=0)

    @property
    def n_baseline(self) -> int:
        return max((len(v) for v in self.baseline.values()), default=0)


@dataclass
class MetricResult:
    """One metric in one interval. `effect` is in the metric's effect unit (see
    CanaryMetric.effect_unit); `low`/`high` its interval at `level`."""

    name: str
    column: str
    kind: str
    direction: str
    critical: bool
    classification: Classification
    passed: bool | None  # None for NoData
    bad: bool  # High/Low in the metric's bad direction
    n_canary: int
    n_baseline: int
    canary_value: float | None = None  # median (continuous), rate (proportion), q-quantile (tail)
    baseline_value: float | None = None
    effect: float | None = None
    low: float | None = None
    high: float | None = None
    tolerance: float = 0.0
    effect_unit: str = ""
    p_value: float | None = None
    level: float | None = None  # confidence of the interval (1 − α/m)
    details: dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass
class IntervalResult:
    """The judgement of one interval."""

    index: int
    start: datetime | None
    end: datetime | None
    n_canary: int
    n_baseline: int
    verdict: IntervalVerdict
    score: float | None  # share of passing metrics among those with data, × 100
    metrics: list[MetricResult]
    tests: int  # metrics with data: the Bonferroni family size
    vetoed_by: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def metric(self, name: str) -> MetricResult:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        return plain(self)


@dataclass
class CanaryResult:
    """The judgement of a canary over its intervals."""

    verdict: CanaryVerdict
    score: float | None  # of the deciding interval (the failing one, else the last conclusive)
    consecutive_failures: int  # the failing streak of looks when it decided (or at the end)
    failed_at: int | None  # position in `looks` where the streak reached the limit
    intervals: list[IntervalResult]  # each interval judged alone: descriptive
    reasons: list[str]
    config: dict[str, Any]
    workflow: str | None = None
    canary: str | None = None
    baseline: str | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    # The growing window judged at each look (the decision); `intervals` is the per-interval view.
    looks: list[IntervalResult] = field(default_factory=list)
    # An inconclusive canary: more canary requests needed, hours at the current rate, per metric.
    needs: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (what goes into canary_analyses.result)."""
        return plain(self)
