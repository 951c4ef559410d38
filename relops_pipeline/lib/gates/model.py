"""The gate's data model: thresholds in force, the evidence per metric, rules and the decision.

Plain dataclasses shared by the statistics (stats.py), the decision (decision.py) and the
reports (report.py). Everything is JSON-serialisable through `as_dict()`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

# INVALID is not a decision: the candidate's eval run is invalid (e.g. most samples errored), so
# nothing can be decided; it is recorded so that nobody approves or overrides it.
Decision = Literal["SHIP", "BLOCK", "REVIEW", "INVALID"]
Outcome = Literal["pass", "block", "review", "error"]  # error: only run:valid, on an invalid run

DEFAULT_ALLOWED_REGRESSION = 0.02
DEFAULT_TOLERATED_REGRESSION = 0.05


@dataclass
class Thresholds:
    """A workflow's gate configuration, as one version."""

    version: int = 0  # 0: the built-in defaults, never recorded
    confidence: float = 0.95
    # metric -> largest regression vs the baseline that is acceptable; "*" is the default for
    # every metric in [0,1]. BLOCK needs a significant regression whose estimate exceeds it.
    allowed_regression: dict[str, float] = field(default_factory=lambda: {"*": DEFAULT_ALLOWED_REGRESSION})
    # SHIP needs the paired difference's interval lower bound above -tolerated_regression.
    tolerated_regression: float = DEFAULT_TOLERATED_REGRESSION
    floors: dict[str, float] = field(default_factory=dict)  # metric -> absolute floor on the candidate mean
    must_pass: Literal["all_samples"] = "all_samples"  # pass^k: every sample of every must-pass case
    latency_p95_budget_ms: float | None = None
    cost_per_sample_budget_usd: float | None = None
    min_cases: int = 30  # minimum evidence for a SHIP
    min_samples_per_case: int = 1
    resamples: int = 5  # extra samples for a must-pass case that newly fails, where a runner exists
    metrics: list[str] | None = None  # metrics that gate; None: every metric in both runs
    author: str | None = None
    reason: str | None = None

    def allowed_for(self, metric: str) -> float:
        return float(self.allowed_regression.get(metric, self.allowed_regression.get("*", DEFAULT_ALLOWED_REGRESSION)))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Interval:
    estimate: float | None
    low: float | None
    high: float | None
    n: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MetricEvidence:
    metric: str
    candidate: Interval  # candidate mean, CI from a bootstrap over cases
    baseline: Interval | None  # baseline mean on the same suite version (None: no baseline)
    delta: Interval | None  # paired difference candidate - baseline on the cases both ran
    allowed_regression: float
    tolerated_regression: float
    floor: float | None
    verdict: str  # ok | regression | inconclusive | floor_missed | floor_unclear | no_baseline
    note: str = ""


@dataclass
class RuleResult:
    rule: str  # stable id, e.g. "regression:fields_match", "must_pass", "evidence:min_cases"
    outcome: Outcome
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class MustPassCase:
    case_id: str
    candidate_failed: int  # failed samples in the candidate run
    candidate_samples: int
    baseline_failed: int | None  # None: the baseline did not run this case
    baseline_samples: int | None
    resamples: list[bool] = field(default_factory=list)  # pass/fail of the extra samples
    verdict: str = ""  # confirmed | flaky_in_candidate | flaky_in_baseline | failing_in_baseline | not_resampled
    example_output: str | None = None  # a failing output (from a model: escape it)
    failed_metrics: list[str] = field(default_factory=list)


@dataclass
class CaseChange:
    case_id: str
    baseline_pass_rate: float | None
    candidate_pass_rate: float
    example_output: str | None = None


@dataclass
class GateResult:
    workflow: str
    version: str
    baseline_version: str | None
    decision: Decision
    reasons: list[str]
    rules: list[RuleResult]
    metrics: list[MetricEvidence]
    must_pass: list[MustPassCase]
    flaky_cases: list[CaseChange]  # mixed results across samples in the candidate
    newly_failing: list[CaseChange]
    newly_passing: list[CaseChange]
    latency_ms: dict[str, Interval]  # "p50", "p95" for the candidate (and "baseline_p95")
    cost_usd: dict[str, Interval]  # "mean_per_sample", ...
    evidence: dict[str, Any]  # run ids, suite version, thresholds version, counts, seed, n_boot
    diff: dict[str, Any] | None = None  # what changed (manifest diff), None: unknown

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
