"""Canary analysis configuration: which metrics are compared, how, and how a verdict is reached.

A metric (`CanaryMetric`) reads one column of `trace_features` (one row per production request)
and is compared between the canary and the baseline in each interval by one of three tests:

- ``continuous``: Mann-Whitney U with the Hodges-Lehmann shift and its interval (latency,
  cost, tokens). On the ``log`` scale (the default) the effect is a ratio of typical values
  minus 1 (0.2 = 20 % higher); on the ``linear`` scale it is a difference in the column's units.
- ``proportion``: two rates compared (error rate, refusal rate): the conditional exact test
  (mid-p) decides, Newcombe's interval on the rate difference shows the effect; a non-zero
  value counts as an event.
- ``tail``: the same comparison on the share of requests above the pooled
  `quantile` (default 0.95) of both groups: a test of the p95 itself. A rank test answers
  "does the canary tend to be slower?"; it barely moves when only the slowest few percent get
  slower, which is exactly what a p95 regression can be (see judge.py and
  bench/canary_quality.py for the numbers). The effect is the difference of those shares.

`direction` is the bad direction: ``increase`` (the default: latency, errors, cost),
``decrease`` (feedback) or ``either``. A deviation is only High/Low when it is significant
AND its point estimate is beyond `tolerance` (the effect size worth acting on, in the
effect's units above). A `critical` metric that deviates in its bad direction fails the
interval whatever the score (a veto, as in Kayenta).

`margin` is the regression the canary must rule out to pass (the bad-side bound of its
interval within it: "no worse than"); `weight` its share of the error budget (sequential.py).

Defaults and why (bench/canary_quality.py measures them at 25, 250, 2,500 and 25,000 requests
per hour with a 10 % canary, Poisson traffic, a look every 10 minutes for 24 hours):
- judged sequentially over the growing window from the canary's start (sequential.py), at
  confidence 0.98 family-wise over every metric AND every look: measured A/A false rollbacks
  over 24 h 0.2 % at 25/h and 0.0 % at 250, 2,500 and 25,000/h (target ≤ 1 %);
- weights (latency 4; p95 tail, errors and refusals 2 each; cost and tokens 1 each) spend the
  budget where regressions are common and cheap to catch: a uniform 20 % slowdown at 2,500/h is
  caught within 1 hour in 99 %; at 250/h a canary 45 % slower with 6x the errors within 4 hours
  in 100 % (median 1.5 h);
- tolerances: latency typical value 5 % and latency p95 1 point of share above the p95 (≈ a 6 %
  higher p95), error rate 0.5 points and refusal rate 1 point: critical — user-visible
  failures and the latency SLO; cost and output tokens 10 %: scored, not critical, because a
  release may change them on purpose. Tolerances keep a busy canary from rolling back for a
  change too small to matter;
- margins (what a pass must rule out): latency 20 %, p95 share 4 points, errors 2 points,
  refusals 3 points, cost and tokens 25 %. A healthy canary passes in a median 0.7 h at
  25,000/h and 5.2 h at 2,500/h; at 250/h and below a day is rarely enough to rule a 20 %
  regression out, so it stays inconclusive (promotion then needs --override) — by design:
  "no evidence of harm" is not evidence of safety;
- pass score 95, marginal 75 (Kayenta's usual pair: with 6 metrics one non-critical
  deviation is marginal, two fail); min 30 requests per group since the start (below that a
  metric is NoData); a look every 10 minutes; fail at the first failing look
  (consecutive_failure_limit 1: the sequential boundary already pays for looking again, so a
  second failing look would only delay the rollback); a pass needs 2 looks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

Kind = Literal["continuous", "proportion", "tail"]
Direction = Literal["increase", "decrease", "either"]

KINDS = ("continuous", "proportion", "tail")
DIRECTIONS = ("increase", "decrease", "either")
SCALES = ("log", "linear")

# trace_features columns a metric may read (numeric or boolean, one value per request).
FEATURE_COLUMNS = (
    "latency_ms",
    "cost_usd",
    "input_tokens",
    "output_tokens",
    "input_chars",
    "input_words",
    "output_chars",
    "output_words",
    "spans",
    "llm_calls",
    "is_error",
    "is_refusal",
    "output_json_valid",
    "feedback",
)


class CanaryConfigError(ValueError):
    """A canary configuration is invalid."""


@dataclass(frozen=True)
class CanaryMetric:
    """One compared metric (see the module docstring)."""

    name: str
    column: str
    kind: Kind = "continuous"
    direction: Direction = "increase"
    tolerance: float = 0.0
    critical: bool = False
    quantile: float = 0.95  # tail only
    scale: Literal["log", "linear"] = "log"  # continuous only
    margin: float | None = None  # the regression a pass must rule out (critical metrics); default 4 × tolerance
    weight: float = 1.0  # its share of the sequential test's α (weighted Bonferroni): α · weight / Σ weights

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise CanaryConfigError("a canary metric needs a name")
        if self.column not in FEATURE_COLUMNS:
            raise CanaryConfigError(
                f"metric {self.name!r}: unknown column {self.column!r} (known: {', '.join(FEATURE_COLUMNS)})"
            )
        if self.kind not in KINDS:
            raise CanaryConfigError(f"metric {self.name!r}: kind must be one of {', '.join(KINDS)}")
        if self.direction not in DIRECTIONS:
            raise CanaryConfigError(f"metric {self.name!r}: direction must be one of {', '.join(DIRECTIONS)}")
        if self.scale not in SCALES:
            raise CanaryConfigError(f"metric {self.name!r}: scale must be one of {', '.join(SCALES)}")
        if not (isinstance(self.tolerance, (int, float)) and math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise CanaryConfigError(f"metric {self.name!r}: tolerance must be a number >= 0")
        if not 0.5 <= self.quantile < 1:
            raise CanaryConfigError(f"metric {self.name!r}: quantile must be in [0.5, 1)")
        if not (isinstance(self.weight, (int, float)) and not isinstance(self.weight, bool)
                and math.isfinite(self.weight) and self.weight > 0):
            raise CanaryConfigError(f"metric {self.name!r}: weight must be a number > 0")
        if self.margin is None:
            object.__setattr__(self, "margin", max(4 * self.tolerance, 0.01))
        margin = self.margin
        if not (isinstance(margin, (int, float)) and not isinstance(margin, bool) and math.isfinite(margin)
                and margin > self.tolerance):
            raise CanaryConfigError(f"metric {self.name!r}: margin must be a number above the tolerance "
                                    f"{self.tolerance:g}")
        if self.direction != "increase" and self.kind == "continuous" and self.scale == "log" and margin >= 1:
            raise CanaryConfigError(f"metric {self.name!r}: on the log scale a decrease margin must be below 1")

    @property
    def pass_margin(self) -> float:
        """The margin as a number (set from the tolerance when not given)."""
        return float(self.margin if self.margin is not None else max(4 * self.tolerance, 0.01))

    @property
    def effect_unit(self) -> str:
        """What the metric's effect and tolerance measure."""
        if self.kind == "continuous":
            return "typical-value change" if self.scale == "log" else "shift"
        if self.kind == "proportion":
            return "rate difference"
        return f"difference in share above the pooled p{self.quantile * 100:g}"


DEFAULT_METRICS: tuple[CanaryMetric, ...] = (
    CanaryMetric("latency", "latency_ms", "continuous", "increase", 0.05, critical=True, margin=0.20, weight=4),
    CanaryMetric("latency_p95", "latency_ms", "tail", "increase", 0.01, critical=True, quantile=0.95, margin=0.04,
                 weight=2),
    CanaryMetric("error_rate", "is_error", "proportion", "increase", 0.005, critical=True, margin=0.02, weight=2),
    CanaryMetric("refusal_rate", "is_refusal", "proportion", "increase", 0.01, critical=True, margin=0.03,
                 weight=2),
    CanaryMetric("cost", "cost_usd", "continuous", "increase", 0.10, margin=0.25),
    CanaryMetric("output_tokens", "output_tokens", "continuous", "increase", 0.10, margin=0.25),
)


@dataclass(frozen=True)
class CanaryConfig:
    """How a canary is judged (see the module docstring for the defaults and why)."""

    metrics: tuple[CanaryMetric, ...] = DEFAULT_METRICS
    confidence: float = 0.98  # family-wise over the metrics and every look of the canary (sequential)
    pass_score: float = 95.0
    marginal_score: float = 75.0
    min_points: int = 30  # per group since the canary's start, per metric; below: NoData
    consecutive_failure_limit: int = 1  # failing looks in a row that fail the canary
    interval_minutes: int = 10  # how often the growing window is judged (a look)
    min_intervals: int = 2  # looks needed before a pass
    mixture_scale: float = 0.25  # τ of the sequential test, in standard deviations (sequential.py)

    def __post_init__(self) -> None:
        if not self.metrics:
            raise CanaryConfigError("a canary configuration needs at least one metric")
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise CanaryConfigError(f"metric names must be unique: {names}")
        if not 0.5 <= self.confidence < 1:
            raise CanaryConfigError("confidence must be in [0.5, 1)")
        if not 0 <= self.marginal_score <= self.pass_score <= 100:
            raise CanaryConfigError("need 0 <= marginal_score <= pass_score <= 100")
        for key in ("min_points", "consecutive_failure_limit", "interval_minutes", "min_intervals"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise CanaryConfigError(f"{key} must be an integer >= 1")
        if self.min_points < 2:
            raise CanaryConfigError("min_points must be at least 2")
        if not (isinstance(self.mixture_scale, (int, float)) and 0 < self.mixture_scale <= 5):
            raise CanaryConfigError("mixture_scale must be in (0, 5]")

    def metric(self, name: str) -> CanaryMetric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(name)

    def with_metrics(self, *names: str) -> CanaryConfig:
        """The same configuration restricted to the named metrics (in that order)."""
        return replace(self, metrics=tuple(self.metric(n) for n in names))

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; `CanaryConfig.from_dict(cfg.as_dict()) == cfg`."""
        d = asdict(self)
        d["metrics"] = [asdict(m) for m in self.metrics]
        return d

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any] | None) -> CanaryConfig:
        """A configuration from a mapping (e.g. a workflow file's `rollout: canary:` section).
        Missing keys take the defaults; `metrics`, when given, replaces the default list whole
        (each entry a mapping with CanaryMetric's fields). Unknown keys are refused."""
        doc = dict(doc or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise CanaryConfigError(f"unknown canary keys {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        if "metrics" in doc:
            raw = doc["metrics"]
            if not isinstance(raw, (list, tuple)) or not raw:
                raise CanaryConfigError("metrics: expected a non-empty list of mappings")
            metric_keys = {f.name for f in fields(CanaryMetric)}
            metrics = []
            for i, m in enumerate(raw):
                if not isinstance(m, Mapping):
                    raise CanaryConfigError(f"metrics[{i}]: expected a mapping")
                bad = sorted(set(m) - metric_keys)
                if bad:
                    raise CanaryConfigError(f"metrics[{i}]: unknown keys {', '.join(bad)}")
                try:
                    metrics.append(CanaryMetric(**m))
                except TypeError as exc:
                    raise CanaryConfigError(f"metrics[{i}]: {exc}") from None
            doc["metrics"] = tuple(metrics)
        try:
            return cls(**doc)
        except TypeError as exc:
            raise CanaryConfigError(str(exc)) from None


DEFAULT_CONFIG = CanaryConfig()

__all__ = [
    "CanaryConfig",
    "CanaryConfigError",
    "CanaryMetric",
    "DEFAULT_CONFIG",
    "DEFAULT_METRICS",
    "FEATURE_COLUMNS",
]
