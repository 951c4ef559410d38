"""Sequential canary judgement: the evidence grows from the canary's start, and looking again at
every interval does not inflate false rollbacks.

Why: a per-interval judgement needs enough requests in every interval (min_points per group),
so a low-traffic canary (250 requests per hour with a 10 % canary is ~4 canary requests per
10-minute interval) never decides, however bad it is. Judging the whole window since the
canary's start (Kayenta's default "growing" lookback) collects the evidence; but testing the
growing window again every interval at a fixed level would, over a day of looks, roll back a
healthy canary far more often than the level says. So every look uses a boundary valid under
continuous monitoring.

The boundary: the normal-mixture sequential probability ratio test (Robbins 1970; the mSPRT
of Johari et al. 2017, the "always-valid p-values" behind Optimizely's and Eppo's sequential
tests). For an effect estimate θ̂ with variance V, the likelihood ratio of "effect θ" against
"no effect", averaged over θ ~ N(0, τ²), is

    Λ = sqrt(V / (V + τ²)) · exp(θ̂² τ² / (2 V (V + τ²)))

and under "no difference" P(Λ ever reaches 1/α) ≤ α (Ville's inequality), whatever the number
or timing of the looks. In z units (Z = θ̂/√V, r = τ²/V) Λ ≥ 1/α is |Z| ≥ z*, with

    z*² = (1 + 1/r) · (2 ln(1/α) + ln(1 + r)).

We use standardized effects, so r = τ² · n_eff with n_eff = n_c·n_b / (n_c + n_b) and τ the
`mixture_scale` (0.25 standard deviations: the size of regression a canary exists to catch;
z* is within 2 % of its minimum for n_eff between 80 and 900, where decisions happen at
250–2,500 requests per hour). Each metric's test then runs at the two-sided nominal level
α_look = 2·(1 − Φ(z*)) that this boundary implies at the current evidence: Mann-Whitney's z for
continuous metrics, the exact mid-p test for rates and tail shares (which is better calibrated
than the normal approximation for rare events), and each metric's interval is computed at z*
(the Moses interval by inverting the rank test; Newcombe's for differences of rates) — an
always-valid confidence interval, so a verdict never contradicts the interval shown.

Why not alpha spending (O'Brien-Fleming, Pocock): it needs the canary's planned length or
maximum sample in advance, and a canary runs until someone promotes it or it fails; with an
open-ended horizon a spending function must give up early looks or late ones. The mixture
boundary needs no horizon and costs ~1 z-unit over a single fixed-size test at its best
(z* ≈ 3.9 against 3.0 for one look at the same level).

Family: α = 1 − confidence over every look of the canary and every configured metric, split by
weighted Bonferroni (α · weight / Σ weights per metric). The default weights spend a third of α
on the latency rank test, which catches the most common regression (a slower release), a sixth
each on the p95 tail, errors and refusals, and a twelfth each on cost and tokens (which only
fail a canary in pairs). The boundary is two-sided; a rollback needs a
crossing in a metric's bad direction, so under "no difference" the false rollback rate is
about half of α (measured: bench/canary_quality.py).

Pass: a canary passes when nothing failed and every critical metric's interval rules out a
regression of its `margin` (the bound on its bad side lies within the margin) — evidence of
"no worse than", not the absence of evidence. Until then it is inconclusive and the judge says
how many more canary requests (and at the current rate how long) a decision is expected to
need: the interval narrows with the square root of the evidence, so from the current estimate
and interval the n_eff at which either the bad-side bound reaches the margin (pass) or the
interval clears 0 with the estimate beyond the tolerance (fail) is solved, taking z*'s slow
growth into account.

Cost: every look updates Mann-Whitney's U and the tie correction incrementally (new values
against the sorted values so far: O(new · log n) plus an O(n) merge), so a day of looks over
600,000 requests costs seconds, not the minutes a fresh rank test per look would; the
Hodges-Lehmann estimate and interval are computed only where a verdict or the report needs
them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from scipy import stats as sps

from .config import CanaryConfig, CanaryMetric
from .model import CanaryInterval, IntervalResult, MetricResult
from .stats import hodges_lehmann
from .verdict import classify, compare_counts, interval_verdict, metric_identity

__all__ = ["boundary_z", "look_alpha", "SequentialCanary", "Needs"]


def boundary_z(n_eff: float, alpha: float, tau: float) -> float:
    """The normal-mixture boundary z* at evidence `n_eff` (see the module docstring)."""
    r = tau * tau * n_eff
    if r <= 0:
        return math.inf
    return math.sqrt((1.0 + 1.0 / r) * (2.0 * math.log(1.0 / alpha) + math.log1p(r)))


def look_alpha(z: float) -> float:
    """The two-sided nominal level of a test at boundary z."""
    return float(2.0 * sps.norm.sf(z)) if math.isfinite(z) else 0.0


def _n_eff(n1: int, n2: int) -> float:
    return n1 * n2 / (n1 + n2) if n1 and n2 else 0.0


def _merged(a: np.ndarray, b_sorted: np.ndarray) -> np.ndarray:
    if not len(b_sorted):
        return a
    return np.insert(a, np.searchsorted(a, b_sorted), b_sorted)


class _Column:
    """One trace_features column of both groups since the canary's start: the finite values,
    sorted, with Mann-Whitney's U of canary against baseline and the tie term Σ(t³ − t) of the
    pooled values, updated per batch."""

    def __init__(self) -> None:
        self.x = np.empty(0)  # canary, sorted
        self.y = np.empty(0)  # baseline, sorted
        self.u = 0.0
        self.ties = 0.0
        self.nonzero_x = 0
        self.nonzero_y = 0

    def add(self, xn: np.ndarray, yn: np.ndarray) -> None:
        xn = np.sort(xn[np.isfinite(xn)])
        yn = np.sort(yn[np.isfinite(yn)])
        if len(xn) or len(yn):
            vals, m = np.unique(np.concatenate([xn, yn]), return_counts=True)
            t = ((np.searchsorted(self.x, vals, "right") - np.searchsorted(self.x, vals, "left"))
                 + (np.searchsorted(self.y, vals, "right") - np.searchsorted(self.y, vals, "left"))).astype(float)
            tm = t + m
            self.ties += float((tm ** 3 - tm).sum() - (t ** 3 - t).sum())
        y_all = _merged(self.y, yn)
        if len(xn):  # new canary values against every baseline value
            lt = np.searchsorted(y_all, xn, "left")
            le = np.searchsorted(y_all, xn, "right")
            self.u += float(lt.sum()) + 0.5 * float((le - lt).sum())
        if len(yn) and len(self.x):  # earlier canary values against the new baseline values
            le = np.searchsorted(self.x, yn, "right")
            lt = np.searchsorted(self.x, yn, "left")
            self.u += float((len(self.x) - le).sum()) + 0.5 * float((le - lt).sum())
        self.x = _merged(self.x, xn)
        self.y = y_all
        self.nonzero_x += int((xn != 0).sum())
        self.nonzero_y += int((yn != 0).sum())

    def sd_u(self) -> float:
        n1, n2 = len(self.x), len(self.y)
        n = n1 + n2
        tie = self.ties / (n * (n - 1)) if n > 1 else 0.0
        return math.sqrt(max(n1 * n2 / 12.0 * ((n + 1) - tie), 0.0))

    def z(self) -> float:
        """Mann-Whitney's signed z (continuity-corrected), positive when the canary is higher."""
        n1, n2 = len(self.x), len(self.y)
        sd = self.sd_u()
        if sd == 0:
            return 0.0
        d = self.u - n1 * n2 / 2.0
        return math.copysign(max(abs(d) - 0.5, 0.0), d) / sd

    def shifted_z(self, xs: np.ndarray, ys: np.ndarray, shift: float) -> float:
        """Mann-Whitney's z of (xs − shift) against ys (xs, ys sorted, on the test's scale):
        the test of "the shift is `shift`", by which the rank interval is inverted."""
        lt = np.searchsorted(ys, xs - shift, "left")
        le = np.searchsorted(ys, xs - shift, "right")
        u = float(lt.sum()) + 0.5 * float((le - lt).sum())
        sd = self.sd_u()
        if sd == 0:
            return 0.0
        d = u - len(xs) * len(ys) / 2.0
        return math.copysign(max(abs(d) - 0.5, 0.0), d) / sd

    def pooled_quantile(self, q: float) -> float:
        """np.quantile of the pooled values (linear interpolation), from the two sorted arrays."""
        n = len(self.x) + len(self.y)
        h = (n - 1) * q
        lo = math.floor(h)
        a = self._kth(lo)
        if h == lo:
            return a
        return a + (h - lo) * (self._kth(lo + 1) - a)

    def _kth(self, k: int) -> float:
        """The k-th smallest (0-based) of the pooled values."""
        a, b = self.x, self.y
        lo, hi = max(0, k + 1 - len(b)), min(k + 1, len(a))
        while lo < hi:  # i values from a, k + 1 − i from b
            i = (lo + hi) // 2
            if a[i] < b[k - i]:
                lo = i + 1
            else:
                hi = i
        i = lo
        cands = []
        if i > 0:
            cands.append(a[i - 1])
        if k + 1 - i > 0:
            cands.append(b[k - i])
        return float(max(cands))


@dataclass
class Needs:
    """What an inconclusive canary still needs: about `canary_requests` more canary requests
    (`hours` at the current canary rate); None when no decision is in sight (e.g. the estimate
    sits between the tolerance and the margin and moves neither way with more data)."""

    canary_requests: int | None
    hours: float | None
    canary_rate_per_hour: float | None
    by_metric: dict[str, int | None] = field(default_factory=dict)
    # Every pending metric still lacks min_points values: the count is what the first
    # judgement needs, a lower bound on what a decision needs.
    before_first_judgement: bool = False

    def text(self) -> str:
        if self.canary_requests is None:
            return "no decision in sight at this effect size: promote with --override or roll back"
        when = f" (about {_hours(self.hours)} at the current {self.canary_rate_per_hour:.3g} canary requests per hour)" \
            if self.hours is not None and self.canary_rate_per_hour else ""
        if self.before_first_judgement:
            return f"the first judgement needs at least {self.canary_requests:,} more canary requests{when}"
        return f"a decision needs about {self.canary_requests:,} more canary requests{when}"


def _hours(h: float | None) -> str:
    if h is None:
        return "?"
    if h < 1:
        return f"{max(h * 60, 1):.0f} min"
    return f"{h:.1f} h" if h < 48 else f"{h / 24:.1f} days"


class SequentialCanary:
    """Accumulates a canary's intervals in time order and judges the growing window at each
    look (`add`). `detail=True` on a look also computes every metric's estimate and always-valid
    interval (the report's view, and what `needs` is solved from)."""

    def __init__(self, cfg: CanaryConfig):
        self.cfg = cfg
        total = sum(m.weight for m in cfg.metrics)
        self.alphas = {m.name: (1.0 - cfg.confidence) * m.weight / total for m in cfg.metrics}
        self.columns: dict[str, _Column] = {m.column: _Column() for m in cfg.metrics}
        self.looks = 0
        self.start: datetime | None = None
        self.n_canary = 0
        self.n_baseline = 0

    def add(self, interval: CanaryInterval, *, detail: bool = False) -> IntervalResult:
        if self.start is None:
            self.start = interval.start
        for col, acc in self.columns.items():
            nan = np.empty(0)
            acc.add(np.asarray(interval.canary.get(col, nan), dtype=float),
                    np.asarray(interval.baseline.get(col, nan), dtype=float))
        self.n_canary += interval.n_canary
        self.n_baseline += interval.n_baseline
        index = self.looks
        self.looks += 1
        return self.judge(index=index, end=interval.end, detail=detail)

    def judge(self, *, index: int, end: datetime | None, detail: bool) -> IntervalResult:
        """The look at the window so far: every metric tested at its sequential level."""
        results = [self._metric(m, detail) for m in self.cfg.metrics]
        verdict, score, vetoed, reasons = interval_verdict(results, self.cfg)
        tests = sum(1 for r in results if r.classification != "NoData")
        return IntervalResult(index=index, start=self.start, end=end, n_canary=self.n_canary,
                              n_baseline=self.n_baseline, verdict=verdict, score=score, metrics=results, tests=tests,
                              vetoed_by=vetoed, reasons=reasons)

    # ---------------------------------------------------------------- one metric at a look

    def _metric(self, m: CanaryMetric, detail: bool) -> MetricResult:
        acc = self.columns[m.column]
        nc, nb = len(acc.x), len(acc.y)
        base = metric_identity(m)
        if nc < self.cfg.min_points or nb < self.cfg.min_points:
            return MetricResult(**base, classification="NoData", passed=None, bad=False, n_canary=nc, n_baseline=nb,
                                note=f"fewer than {self.cfg.min_points} values in a group since the start "
                                     f"(canary {nc}, baseline {nb})")
        z_star = boundary_z(_n_eff(nc, nb), self.alphas[m.name], self.cfg.mixture_scale)
        a_look = look_alpha(z_star)
        details: dict[str, Any] = {"z_boundary": z_star, "sequential": True}
        note = ""
        if m.kind == "continuous":
            z = acc.z()
            p = look_alpha(abs(z))
            significant = abs(z) >= z_star
            xs, ys, scale, note = _scaled(acc, m)
            details.update(scale=scale, u=acc.u, z=z)
            cv, bv = float(np.median(acc.x)), float(np.median(acc.y))
            effect = low = high = math.nan
            if significant or detail:
                est, lo, hi = hodges_lehmann(xs, ys, z_star, acc.sd_u())
                if scale == "log":
                    effect, low, high = math.expm1(est), math.expm1(lo), math.expm1(hi)
                else:
                    effect, low, high = est, lo, hi
            cls, bad = classify(m, effect, low, high, significant) if significant else ("Pass", False)
            margin_ok = self._margin_ok_rank(m, acc, xs, ys, scale, z_star)
        else:
            t: float | None = None
            if m.kind == "proportion":
                kc, kb = acc.nonzero_x, acc.nonzero_y
                cv, bv = kc / nc, kb / nb
            else:
                t = acc.pooled_quantile(m.quantile)
                kc = int(nc - np.searchsorted(acc.x, t, "right"))
                kb = int(nb - np.searchsorted(acc.y, t, "right"))
                cv, bv = _sorted_quantile(acc.x, m.quantile), _sorted_quantile(acc.y, m.quantile)
            effect, low, high, p = compare_counts(kc, nc, kb, nb, z_star, details, threshold=t, quantiles=(cv, bv))
            cls, bad = classify(m, effect, low, high, p <= a_look)
            margin_ok = _margin_ok_interval(m, low, high)
        details["margin_ok"] = margin_ok
        return MetricResult(**base, classification=cls, passed=not bad, bad=bad, n_canary=nc, n_baseline=nb,
                            canary_value=cv, baseline_value=bv, effect=effect, low=low, high=high, p_value=p,
                            level=1.0 - a_look, details=details, note=note)

    def _margin_ok_rank(self, m: CanaryMetric, acc: _Column, xs: np.ndarray, ys: np.ndarray, scale: str,
                        z_star: float) -> bool:
        """Does the rank interval at z* exclude a regression of `margin` on the bad side? By
        test inversion: the test of "shift = margin" rejects in the canary's favour."""
        checks = []
        if m.direction in ("increase", "either"):
            shift = math.log1p(m.pass_margin) if scale == "log" else m.pass_margin
            checks.append(acc.shifted_z(xs, ys, shift) <= -z_star)
        if m.direction in ("decrease", "either"):
            shift = math.log1p(-m.pass_margin) if scale == "log" and m.pass_margin < 1 else -m.pass_margin
            if scale == "log" and m.pass_margin >= 1:
                checks.append(False)
            else:
                checks.append(acc.shifted_z(xs, ys, shift) >= z_star)
        return all(checks)

    # ---------------------------------------------------------------- what a decision needs

    def needs(self, look: IntervalResult) -> Needs:
        """How many more canary requests the pending critical metrics need (see the module
        docstring); the largest of them, since every critical metric must be resolved."""
        rate = None
        if self.start is not None and look.end is not None:
            hours = (look.end - self.start).total_seconds() / 3600.0
            rate = self.n_canary / hours if hours > 0 else None
        by: dict[str, int | None] = {}
        nodata = 0
        for r in look.metrics:
            if not r.critical or r.bad:
                continue
            if r.classification == "NoData":
                by[r.name] = max(self.cfg.min_points - r.n_canary, 1)
                nodata += 1
                continue
            if r.details.get("margin_ok"):
                continue
            by[r.name] = _more_needed(self.cfg.metric(r.name), r, self.alphas[r.name], self.cfg.mixture_scale)
        pending = list(by.values())
        more = None if not pending or any(v is None for v in pending) else max(v for v in pending if v is not None)
        if not pending:
            more = 0
        hours_needed = more / rate if more is not None and rate else None
        return Needs(canary_requests=more, hours=hours_needed, canary_rate_per_hour=rate, by_metric=by,
                     before_first_judgement=bool(by) and nodata == len(by))


def _scaled(acc: _Column, m: CanaryMetric) -> tuple[np.ndarray, np.ndarray, str, str]:
    """The sorted values on the metric's scale (log: values <= 0 floored below every positive
    value, which leaves the ranks as they are)."""
    if m.scale != "log":
        return acc.x, acc.y, "linear", ""
    first_pos = [a[np.searchsorted(a, 0.0, "right")] for a in (acc.x, acc.y) if np.searchsorted(a, 0.0, "right") < len(a)]
    if not first_pos:
        return acc.x, acc.y, "linear", "no positive values: compared on the linear scale"
    floor = 0.5 * float(min(first_pos))
    note = ""
    if (len(acc.x) and acc.x[0] <= 0) or (len(acc.y) and acc.y[0] <= 0):
        note = f"values <= 0 set to {floor:.4g} for the log scale (ranks unchanged)"
    return np.log(np.maximum(acc.x, floor)), np.log(np.maximum(acc.y, floor)), "log", note


def _sorted_quantile(a: np.ndarray, q: float) -> float:
    h = (len(a) - 1) * q
    lo = math.floor(h)
    if lo + 1 >= len(a):
        return float(a[-1])
    return float(a[lo] + (h - lo) * (a[lo + 1] - a[lo]))


def _margin_ok_interval(m: CanaryMetric, low: float, high: float) -> bool:
    ok = True
    if m.direction in ("increase", "either"):
        ok = ok and high <= m.pass_margin
    if m.direction in ("decrease", "either"):
        ok = ok and low >= -m.pass_margin
    return bool(ok)


def _more_needed(m: CanaryMetric, r: MetricResult, alpha: float, tau: float) -> int | None:
    """More canary requests for this metric to decide either way, from its estimate and
    interval at the current look (the interval's half-width shrinks as 1/√n_eff)."""
    if r.effect is None or r.low is None or r.high is None or not all(
            math.isfinite(v) for v in (r.effect, r.low, r.high)):
        return None
    log = r.kind == "continuous" and r.details.get("scale") == "log"

    def sc(v: float) -> float:
        return math.log1p(v) if log else v

    e, lo, hi = sc(r.effect), sc(r.low), sc(r.high)
    nc, nb = r.n_canary, r.n_baseline
    n_eff = _n_eff(nc, nb)
    z_now = boundary_z(n_eff, alpha, tau)
    se = (hi - lo) / (2 * z_now) if z_now > 0 else math.inf
    if not (se > 0 and math.isfinite(se)):
        return None
    increase = m.direction in ("increase", "either")
    e_bad = e if increase else -e  # the estimate measured in the bad direction
    margin = sc(m.pass_margin) if increase else (-math.log1p(-m.pass_margin) if log else m.pass_margin)
    tol = sc(m.tolerance) if increase else (-math.log1p(-m.tolerance) if log else m.tolerance)
    distances = []  # to each reachable decision, in standard errors at today's evidence
    if e_bad < margin:  # pass: the bad-side bound reaches the margin
        distances.append((margin - e_bad) / se)
    if e_bad > max(tol, 0.0):  # fail: the interval clears 0 (the estimate is already past the tolerance)
        distances.append(e_bad / se)
    best = math.inf
    for d in distances:  # the distance grows as √n_eff; z* grows slowly with n_eff: iterate
        n_new = n_eff
        for _ in range(30):
            n_new = n_eff * (boundary_z(n_new, alpha, tau) / d) ** 2
        best = min(best, n_new)
    if not math.isfinite(best) or best > 1e12:
        return None
    rho = nb / nc  # baseline per canary request, kept as it is
    canary_needed = best * (1 + rho) / rho
    return max(int(math.ceil(canary_needed - nc)), 0)
