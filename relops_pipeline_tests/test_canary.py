"""Canary judgement: the statistics (checked against published and hand-computed values), the
per-interval classification and verdict, the sequential judge over the growing window (a
low-traffic canary decides, an A/A canary does not roll back, an undecided one says what it
needs), the consecutive-failure rule, loading intervals from a hand-built trace_features table,
and the reports' escaping."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta, timezone
from html.parser import HTMLParser

import duckdb
import numpy as np
import pandas as pd
import pytest

from relops_pipeline.lib.canary import (
    DEFAULT_CONFIG,
    CanaryConfig,
    CanaryConfigError,
    CanaryInterval,
    CanaryMetric,
    IntervalResult,
    judge_canary,
    judge_interval,
    load_canary_intervals,
    render_html,
    render_json,
    render_markdown,
)
from relops_pipeline.lib.canary import judge as judge_module
from relops_pipeline.lib.canary.config import FEATURE_COLUMNS
from relops_pipeline.lib.canary.sequential import Needs, SequentialCanary, _Column, boundary_z, look_alpha
from relops_pipeline.lib.canary.stats import exceedance_counts, midp_exact, newcombe, shift_test, wilson, z_for
from relops_pipeline.lib.warehouse import migrate

XSS = "<script>alert(1)</script>"


def _group(rng: np.random.Generator, n: int, *, latency_scale: float = 1.0, error_rate: float = 0.01,
           refusal_rate: float = 0.02, tail_boost: float = 0.0) -> dict[str, np.ndarray]:
    """One group's requests: log-normal latency (median 1200 ms) with a 4 % slow tail, errors,
    refusals, output tokens (0 for errors) and cost. `tail_boost`: this share of requests
    (the slowest ones) is made twice as slow, leaving the median alone."""
    slow = rng.random(n) < 0.04
    lat = np.where(slow, rng.lognormal(np.log(3600), 0.6, n), rng.lognormal(np.log(1200), 0.45, n)) * latency_scale
    if tail_boost:
        cut = np.quantile(lat, 1 - tail_boost)
        lat = np.where(lat > cut, lat * 2.0, lat)
    err = rng.random(n) < error_rate
    tokens = np.where(err, 0.0, np.round(rng.lognormal(np.log(250), 0.6, n)))
    return {
        "latency_ms": lat,
        "is_error": err,
        "is_refusal": rng.random(n) < refusal_rate,
        "output_tokens": tokens,
        "cost_usd": np.where(err, 0.0, 0.002 + tokens * 8e-6),
    }


# ---------------------------------------------------------------- statistics


def test_wilson_and_newcombe_match_published_values():
    z = z_for(0.95)
    assert z == pytest.approx(1.959964, abs=1e-6)
    # Newcombe (1998), Statistics in Medicine 17:857: 81/263 -> Wilson 0.2553 to 0.3662;
    # 56/70 − 48/80 -> method 10 (hybrid score) 0.0524 to 0.3339.
    lo, hi = wilson(81, 263, z)
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)
    lo, hi = newcombe(56, 70, 48, 80, z)
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)
    # By hand: 5/10 at z = 1.96: centre (0.5 + 0.19208)/1.38416 = 0.5,
    # half = 1.96/1.38416 · sqrt(0.025 + 3.8416/400) = 0.263411.
    lo, hi = wilson(5, 10, 1.96)
    assert lo == pytest.approx(0.5 - 0.263411, abs=1e-6) and hi == pytest.approx(0.5 + 0.263411, abs=1e-6)
    assert wilson(0, 20, 1.96)[0] == 0.0


def test_midp_exact_on_known_counts():
    # 3/5 vs 0/5: 3 events among 10, hypergeometric P(X = 3) = C(5,3)·C(5,0)/C(10,3) = 10/120;
    # nothing more extreme, so the one-sided mid-p is ½·(1/12) and the two-sided 1/12.
    assert midp_exact(3, 5, 0, 5) == pytest.approx(1 / 12, abs=1e-12)
    # 2/4 vs 0/4: P(X = 2) = C(4,2)/C(8,2) = 6/28 -> two-sided mid-p 6/28.
    assert midp_exact(2, 4, 0, 4) == pytest.approx(6 / 28, abs=1e-12)
    assert midp_exact(0, 4, 2, 4) == pytest.approx(6 / 28, abs=1e-12)  # symmetric
    assert midp_exact(0, 50, 0, 500) == 1.0  # no events: no evidence
    assert 0.9 < midp_exact(5, 50, 50, 500) < 1.0  # equal rates: mid-p just below 1


def test_rate_verdict_needs_the_exact_test_not_only_newcombe():
    # 2/50 vs 2/450: Newcombe's 95 % interval just excludes 0, but the exact test does not
    # reject: mid-p = P(X ≥ 3) + ½·P(X = 2) for X ~ Hypergeometric(500 requests, 4 errors, 50
    # drawn) = 0.0551 > 0.05. Rare events in unequal groups are where Newcombe is too liberal.
    def pmf(x):
        return math.comb(4, x) * math.comb(496, 50 - x) / math.comb(500, 50)

    expected = 2 * (pmf(3) + pmf(4) + 0.5 * pmf(2))
    assert expected == pytest.approx(0.0551, abs=1e-4)
    cfg = CanaryConfig(metrics=(CanaryMetric("errors", "is_error", "proportion", critical=True),))
    r = judge_interval({"is_error": [1] * 2 + [0] * 48}, {"is_error": [1] * 2 + [0] * 448}, cfg)
    m = r.metric("errors")
    assert m.low > 0 and m.p_value == pytest.approx(expected, rel=1e-9)
    assert m.classification == "Pass" and r.verdict == "pass"
    assert m.canary_value == 0.04 and m.effect == pytest.approx(0.04 - 2 / 450)


def test_shift_test_hand_values_and_brute_force():
    # [1,2,3] vs [4,5,6]: U = 0, E[U] = 4.5, sd = sqrt(3·3·7/12) = 2.2913,
    # z = (4.5 − 0.5)/2.2913 = 1.7457 -> p = 0.0809; HL = median of the 9 differences = −3.
    r = shift_test(np.array([1.0, 2, 3]), np.array([4.0, 5, 6]), 1.96)
    assert r.u == 0 and r.estimate == -3.0
    assert r.p_value == pytest.approx(0.08086, abs=1e-4)
    assert math.isinf(r.low) and math.isinf(r.high)  # 3 vs 3 is too few for a 95 % interval
    # x = 5..14, y = 0..9: differences 5 + m, m = i − j, with 10 − |m| pairs each. At z = 1:
    # sd = sqrt(100·21/12) = 13.229, k = floor(50 − 0.5 − 13.229) + 1 = 37; the 37th smallest
    # difference is 4 (cumulative counts 1,3,6,10,15,21,28,36,45 for m = −9..−1), the 64th is 6.
    r = shift_test(np.arange(10.0) + 5, np.arange(10.0), 1.0)
    assert (r.estimate, r.low, r.high) == (5.0, 4.0, 6.0)
    rng = np.random.default_rng(3)
    x, y = np.round(rng.lognormal(0.2, 0.5, 73), 1), np.round(rng.lognormal(0, 0.5, 151), 1)
    d = np.sort((x[:, None] - y[None, :]).ravel())
    r = shift_test(x, y, 1.96)
    assert r.estimate == pytest.approx(0.5 * (d[len(d) // 2 - 1] + d[len(d) // 2]))
    assert r.low in d and r.high in d and r.low < r.estimate < r.high


def test_exceedance_counts_use_the_pooled_quantile():
    x = np.arange(10.0)  # 0..9
    y = np.arange(10.0) + 10  # 10..19
    kx, ky, t = exceedance_counts(x, y, 0.75)
    assert t == pytest.approx(np.quantile(np.arange(20.0), 0.75))  # 14.25
    assert (kx, ky) == (0, 5)


# ---------------------------------------------------------------- one interval


def test_aa_interval_passes():
    rng = np.random.default_rng(11)
    r = judge_interval(_group(rng, 400), _group(rng, 2000))
    assert r.verdict == "pass" and r.score == 100.0
    assert {m.classification for m in r.metrics} == {"Pass"}
    assert r.tests == len(DEFAULT_CONFIG.metrics) and r.n_canary == 400 and r.n_baseline == 2000
    alpha = 1 - DEFAULT_CONFIG.confidence
    assert all(m.level == pytest.approx(1 - alpha / r.tests) for m in r.metrics)  # Bonferroni


def test_aa_false_failures_are_rare():
    fails = 0
    for seed in range(40):
        rng = np.random.default_rng([seed, 1])
        fails += judge_interval(_group(rng, 200), _group(rng, 1800)).verdict == "fail"
    assert fails <= 2  # per-interval family-wise level 2 %, and only critical High counts


def test_latency_regression_fails_with_latency_high():
    rng = np.random.default_rng(5)
    r = judge_interval(_group(rng, 300, latency_scale=1.5), _group(rng, 1500))
    lat = r.metric("latency")
    assert lat.classification == "High" and lat.bad and not lat.passed
    assert lat.effect == pytest.approx(0.5, abs=0.15) and lat.low > 0
    assert r.verdict == "fail" and "latency" in r.vetoed_by
    assert r.metric("error_rate").classification == "Pass"
    assert r.metric("cost").classification == "Pass"


def test_error_rate_regression_is_high_on_the_right_metric():
    rng = np.random.default_rng(6)
    r = judge_interval(_group(rng, 400, error_rate=0.08), _group(rng, 2000, error_rate=0.01))
    err = r.metric("error_rate")
    assert err.classification == "High" and err.bad
    assert err.details["canary_events"] == round(err.canary_value * 400)
    assert r.verdict == "fail" and r.vetoed_by == ["error_rate"]


def test_faster_canary_is_low_and_passes():
    rng = np.random.default_rng(7)
    r = judge_interval(_group(rng, 400, latency_scale=0.7), _group(rng, 2000))
    lat = r.metric("latency")
    assert lat.classification == "Low" and not lat.bad and lat.passed
    assert r.verdict == "pass"


def test_tail_regression_is_caught_by_the_tail_test_not_the_rank_test():
    # The slowest 8 % of canary requests take twice as long; the median does not move.
    rng = np.random.default_rng(8)
    canary, baseline = _group(rng, 2000, tail_boost=0.08), _group(rng, 2000)
    assert np.median(canary["latency_ms"]) == pytest.approx(np.median(baseline["latency_ms"]), rel=0.06)
    r = judge_interval(canary, baseline)
    assert r.metric("latency").classification == "Pass"
    tail = r.metric("latency_p95")
    assert tail.classification == "High" and tail.bad
    assert tail.details["canary_share"] > 2 * tail.details["baseline_share"]
    assert tail.canary_value > 1.3 * tail.baseline_value  # the p95s themselves
    assert r.verdict == "fail" and r.vetoed_by == ["latency_p95"]


def test_tolerance_keeps_a_small_significant_change_passing():
    rng = np.random.default_rng(9)
    canary, baseline = _group(rng, 20000, latency_scale=1.03), _group(rng, 20000)
    r = judge_interval(canary, baseline, DEFAULT_CONFIG.with_metrics("latency"))
    lat = r.metric("latency")
    assert lat.low > 0 and lat.p_value < 1e-4  # significant...
    assert lat.effect < 0.05 and lat.classification == "Pass"  # ...but within the 5 % tolerance
    strict = CanaryConfig(metrics=(CanaryMetric("latency", "latency_ms", tolerance=0.0, critical=True),))
    assert judge_interval(canary, baseline, strict).metric("latency").classification == "High"


def test_nodata_below_min_points_and_inconclusive():
    rng = np.random.default_rng(10)
    assert DEFAULT_CONFIG.min_points == 30
    r = judge_interval(_group(rng, 29), _group(rng, 1000))
    assert {m.classification for m in r.metrics} == {"NoData"}
    assert r.verdict == "inconclusive" and r.score is None and r.tests == 0
    assert "29" in r.metrics[0].note
    # NULLs do not count as points: 45 rows of which 20 have no latency.
    canary = _group(rng, 45)
    canary["latency_ms"] = np.where(np.arange(45) < 20, np.nan, canary["latency_ms"])
    r = judge_interval(canary, _group(rng, 1000))
    assert r.metric("latency").classification == "NoData" and r.metric("latency").n_canary == 25
    assert r.metric("error_rate").classification != "NoData"
    assert r.verdict == "inconclusive"  # a critical metric has no data
    # Over intervals the evidence accumulates: 3 x 5 canary requests are still too few.
    result = judge_canary(_traffic(rng, [5, 5, 5], [200, 200, 200]))
    assert result.verdict == "inconclusive" and [look.n_canary for look in result.looks] == [5, 10, 15]
    assert result.needs is not None and result.needs["canary_requests"] == 15  # 30 - 15 for every critical metric
    assert result.needs["before_first_judgement"] and result.needs["text"].startswith(
        "the first judgement needs at least 15 more canary requests (about 30 min at the current 30 canary requests")


def test_missing_critical_column_is_inconclusive_unless_another_critical_metric_vetoes():
    rng = np.random.default_rng(12)
    canary, baseline = _group(rng, 300), _group(rng, 1500)
    del canary["is_refusal"], baseline["is_refusal"]
    r = judge_interval(canary, baseline)
    assert r.metric("refusal_rate").classification == "NoData" and "no column" in r.metric("refusal_rate").note
    assert r.verdict == "inconclusive" and r.tests == len(DEFAULT_CONFIG.metrics) - 1
    slow = _group(rng, 300, latency_scale=1.6)
    del slow["is_refusal"]
    assert judge_interval(slow, baseline).verdict == "fail"


def test_critical_veto_and_score_thresholds():
    rng = np.random.default_rng(13)
    canary, baseline = _group(rng, 400, latency_scale=1.5), _group(rng, 2000)
    six = DEFAULT_CONFIG
    r = judge_interval(canary, baseline, six)
    assert r.score == pytest.approx(100 * 4 / 6)  # latency and latency_p95 both High
    soft = CanaryConfig(metrics=tuple(
        CanaryMetric(m.name, m.column, m.kind, m.direction, m.tolerance, critical=False, quantile=m.quantile)
        for m in six.metrics))
    assert judge_interval(canary, baseline, soft).verdict == "fail"  # 66.7 < marginal 75, by score
    only_rank = soft.with_metrics("latency", "error_rate", "refusal_rate", "cost", "output_tokens")
    r = judge_interval(canary, baseline, only_rank)
    assert r.score == pytest.approx(80.0) and r.verdict == "marginal" and not r.vetoed_by
    veto = CanaryConfig(metrics=tuple(
        CanaryMetric(m.name, m.column, m.kind, m.direction, m.tolerance, critical=m.name == "latency")
        for m in only_rank.metrics))
    r = judge_interval(canary, baseline, veto)
    assert r.score == pytest.approx(80.0) and r.verdict == "fail" and r.vetoed_by == ["latency"]


def test_decrease_direction_metric():
    rng = np.random.default_rng(14)
    cfg = CanaryConfig(metrics=(CanaryMetric("feedback", "feedback", "continuous", "decrease", 0.05,
                                             critical=True, scale="linear"),))
    base = {"feedback": rng.normal(0.8, 0.1, 500)}
    worse = {"feedback": rng.normal(0.6, 0.1, 500)}
    better = {"feedback": rng.normal(1.0, 0.1, 500)}
    r = judge_interval(worse, base, cfg)
    m = r.metric("feedback")
    assert m.classification == "Low" and m.bad and r.verdict == "fail"
    assert m.effect == pytest.approx(-0.2, abs=0.03) and m.details["scale"] == "linear"
    r = judge_interval(better, base, cfg)
    assert r.metric("feedback").classification == "High" and r.verdict == "pass"


# ---------------------------------------------------------------- over intervals


def _iv(i: int, verdict: str, score: float | None = None) -> IntervalResult:
    score = {"pass": 100.0, "marginal": 80.0, "fail": 50.0, "inconclusive": None}[verdict] if score is None else score
    return IntervalResult(index=i, start=None, end=None, n_canary=200 * (i + 1), n_baseline=1800 * (i + 1),
                          verdict=verdict, score=score, metrics=[], tests=6, reasons=[f"look {i} {verdict}"])


def _scripted(monkeypatch, verdicts: list[str], cfg: CanaryConfig) -> object:
    """judge_canary with looks whose verdicts are scripted (the rule over looks, not the statistics)."""

    class Scripted(SequentialCanary):
        def add(self, interval, *, detail=False):
            self.looks += 1
            return _iv(interval.index, verdicts[interval.index])

        def judge(self, *, index, end, detail):
            return _iv(index, verdicts[index])

        def needs(self, look):
            return Needs(canary_requests=123, hours=2.0, canary_rate_per_hour=61.5)

    monkeypatch.setattr(judge_module, "SequentialCanary", Scripted)
    empty = {"latency_ms": np.empty(0)}
    return judge_canary([CanaryInterval(start=None, end=None, index=i, canary=empty, baseline=empty)
                         for i in range(len(verdicts))], cfg, per_interval=False)


@pytest.mark.parametrize("verdicts, expected, failed_at", [
    (["fail"], "fail", 0),  # the default: the first failing look (its level already covers every look)
    (["pass", "fail", "pass"], "fail", 1),  # decided at the failure: later looks are not taken
    (["inconclusive", "fail"], "fail", 1),
    (["pass"], "inconclusive", None),  # a pass needs min_intervals (2) looks
    (["pass", "pass"], "pass", None),
    (["pass", "marginal"], "marginal", None),
    (["inconclusive", "inconclusive"], "inconclusive", None),
    ([], "inconclusive", None),
])
def test_failure_rule_over_looks(monkeypatch, verdicts, expected, failed_at):
    result = _scripted(monkeypatch, verdicts, DEFAULT_CONFIG)
    assert (result.verdict, result.failed_at) == (expected, failed_at)
    if expected == "fail":
        assert result.consecutive_failures == 1 and result.score == 50.0
        assert len(result.looks) == failed_at + 1
    if expected == "inconclusive" and verdicts:
        assert result.needs["canary_requests"] == 123 and "123 more canary requests" in result.needs["text"]
        assert "about 2.0 h" in result.needs["text"] and result.needs["text"] in result.reasons


@pytest.mark.parametrize("verdicts, expected, failed_at", [
    (["fail"], "marginal", None),  # one failing look does not roll back with a limit of 2
    (["fail", "fail"], "fail", 1),
    (["fail", "pass", "fail", "pass"], "pass", None),  # never two in a row
    (["pass", "fail", "marginal", "fail"], "marginal", None),
    (["pass", "fail", "fail", "pass"], "fail", 2),  # decided at the second failure
    (["fail", "inconclusive", "fail"], "fail", 2),  # a data gap neither counts nor resets
    (["fail", "marginal", "fail"], "marginal", None),
])
def test_consecutive_failure_limit_is_configurable(monkeypatch, verdicts, expected, failed_at):
    two = CanaryConfig(consecutive_failure_limit=2)
    result = _scripted(monkeypatch, verdicts, two)
    assert (result.verdict, result.failed_at) == (expected, failed_at)
    if expected == "fail":
        assert result.consecutive_failures == 2


def test_judge_canary_judges_raw_intervals():
    rng = np.random.default_rng(15)
    t0 = datetime(2025, 3, 1, 12, 0)
    raw = [CanaryInterval(start=t0 + timedelta(minutes=10 * i), end=t0 + timedelta(minutes=10 * (i + 1)), index=i,
                          canary=_group(rng, 300, latency_scale=1.5), baseline=_group(rng, 1500)) for i in range(3)]
    r = judge_canary(raw, workflow="wf", canary="wf@v2", baseline="wf@v1")
    assert r.verdict == "fail" and r.failed_at == 0 and len(r.looks) == 1  # the first look decides
    assert r.looks[0].metric("latency").bad and r.looks[0].metric("latency").details["margin_ok"] is False
    assert r.window_start == t0 and r.window_end == t0 + timedelta(minutes=10)
    assert len(r.intervals) == 3  # the per-interval view covers every interval
    doc = json.loads(json.dumps(r.as_dict(), allow_nan=False))
    assert doc["verdict"] == "fail" and doc["intervals"][1]["metrics"][0]["classification"] == "High"
    assert doc["looks"][0]["metrics"][0]["classification"] == "High"
    assert doc["window_start"] == "2025-03-01T12:00:00" and doc["config"]["consecutive_failure_limit"] == 1
    with pytest.raises(TypeError, match="expected a CanaryInterval"):
        judge_canary([r.intervals[0]])


# ---------------------------------------------------------------- the sequential judge


def _traffic(rng: np.random.Generator, canary_counts, baseline_counts, *, start=datetime(2025, 3, 1, 12, 0),
             minutes: int = 10, **canary_kw) -> list[CanaryInterval]:
    """Raw intervals with the given request counts per group; `canary_kw` changes the canary."""
    return [CanaryInterval(start=start + timedelta(minutes=minutes * i), end=start + timedelta(minutes=minutes * (i + 1)),
                           index=i, canary=_group(rng, int(nc), **canary_kw), baseline=_group(rng, int(nb)))
            for i, (nc, nb) in enumerate(zip(canary_counts, baseline_counts, strict=True))]


def _poisson(rng: np.random.Generator, per_hour: float, share: float, hours: float, **canary_kw) -> list[CanaryInterval]:
    looks = int(hours * 6)
    return _traffic(rng, rng.poisson(per_hour * share / 6, looks), rng.poisson(per_hour * (1 - share) / 6, looks),
                    **canary_kw)


def test_boundary_matches_the_mixture_formula_and_grows_slowly():
    # z*^2 = (1 + 1/r)(2 ln(1/alpha) + ln(1 + r)), r = tau^2 n_eff: at n_eff 400, tau 0.25, alpha 0.01,
    # r = 25 and z*^2 = 1.04 * (9.21034 + 3.25810) = 12.96718.
    assert boundary_z(400, 0.01, 0.25) == pytest.approx(math.sqrt(1.04 * (2 * math.log(100) + math.log(26))), rel=1e-12)
    assert boundary_z(0, 0.01, 0.25) == math.inf and look_alpha(math.inf) == 0.0
    zs = [boundary_z(n, 0.01, 0.25) for n in (80, 300, 900)]
    assert max(zs) / min(zs) < 1.03  # flat where decisions happen (the module docstring's claim)
    assert look_alpha(1.959964) == pytest.approx(0.05, abs=1e-6)


def test_incremental_rank_statistics_match_scipy():
    from scipy.stats import mannwhitneyu, rankdata, tiecorrect

    rng = np.random.default_rng(21)
    col = _Column()
    xs, ys = [], []
    for _ in range(7):
        x, y = np.round(rng.lognormal(0.1, 0.5, rng.integers(0, 40)), 1), np.round(rng.lognormal(0, 0.5, 90), 1)
        col.add(x, y)
        xs.append(x)
        ys.append(y)
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert col.u == mannwhitneyu(x, y).statistic
    n = len(x) + len(y)
    assert 1 - col.ties / (n ** 3 - n) == pytest.approx(tiecorrect(rankdata(np.concatenate([x, y]))), rel=1e-12)
    p = mannwhitneyu(x, y, method="asymptotic", use_continuity=True).pvalue
    assert look_alpha(abs(col.z())) == pytest.approx(p, rel=1e-9)
    assert col.pooled_quantile(0.95) == pytest.approx(np.quantile(np.concatenate([x, y]), 0.95))


def test_low_traffic_canary_decides_within_hours():
    # Issue 15: ~250 requests per hour with a 15 % canary gives ~6 canary requests per 10-minute
    # interval; a canary 45 % slower with 6x the error rate stayed "inconclusive" for ever.
    rng = np.random.default_rng(31)
    ivs = _poisson(rng, 250, 0.15, 4, latency_scale=1.45, error_rate=0.06)
    per_interval_policy = CanaryConfig(min_points=50)  # the old default judged each interval alone
    assert {judge_interval(iv.canary, iv.baseline, per_interval_policy).verdict for iv in ivs} == {"inconclusive"}
    result = judge_canary(ivs)
    assert result.verdict == "fail"
    decided = result.looks[result.failed_at]
    assert decided.n_canary < 200 and (decided.end - ivs[0].start) <= timedelta(hours=4)
    assert {"latency", "error_rate"} & set(decided.vetoed_by)
    assert all(iv.verdict == "inconclusive" for iv in result.intervals)  # the per-interval view, unchanged


@pytest.mark.parametrize("per_hour", [25, 250, 2500])
def test_aa_canary_does_not_roll_back_over_a_day(per_hour):
    rng = np.random.default_rng([41, per_hour])
    hours = 24 if per_hour < 2500 else 6
    for _ in range(4 if per_hour < 2500 else 2):
        assert judge_canary(_poisson(rng, per_hour, 0.10, hours), per_interval=False).verdict != "fail"


def test_undecided_canary_says_what_a_decision_needs():
    rng = np.random.default_rng(51)
    result = judge_canary(_poisson(rng, 250, 0.10, 3))
    assert result.verdict == "inconclusive" and result.needs is not None
    needs = result.needs
    assert needs["canary_requests"] > 100 and needs["hours"] > 3 and not needs["before_first_judgement"]
    assert needs["canary_rate_per_hour"] == pytest.approx(result.looks[-1].n_canary / 3, rel=1e-9)
    assert needs["hours"] == pytest.approx(needs["canary_requests"] / needs["canary_rate_per_hour"])
    assert needs["text"].startswith("a decision needs about ") and "canary requests per hour" in needs["text"]
    assert set(needs["by_metric"]) <= {m.name for m in DEFAULT_CONFIG.metrics if m.critical}
    assert needs["text"] in result.reasons
    md = render_markdown(result)
    assert "INCONCLUSIVE" in md and "more canary requests" in md
    # Looks read as the canary's state: too few requests at first, then no regression but undecided.
    assert "| inconclusive (too few requests) |" in md and "| no regression yet, undecided |" in md
    assert "| pass |" not in md


def test_healthy_busy_canary_passes_once_every_margin_is_shown():
    rng = np.random.default_rng(61)
    result = judge_canary(_poisson(rng, 25000, 0.10, 2), per_interval=False)
    assert result.verdict == "pass" and result.needs is None
    last = result.looks[-1]
    assert all(m.details.get("margin_ok") for m in last.metrics if m.critical)
    md = render_markdown(result)
    assert md.rstrip().count("\n") < 200 and "| pass |" in md


# ---------------------------------------------------------------- configuration


def test_config_from_dict_roundtrip_and_refusals():
    assert CanaryConfig.from_dict(None) == DEFAULT_CONFIG
    assert CanaryConfig.from_dict(DEFAULT_CONFIG.as_dict()) == DEFAULT_CONFIG
    cfg = CanaryConfig.from_dict({"min_points": 100, "metrics": [
        {"name": "lat", "column": "latency_ms", "critical": True}]})
    assert cfg.min_points == 100 and [m.name for m in cfg.metrics] == ["lat"]
    with pytest.raises(CanaryConfigError, match="unknown canary keys"):
        CanaryConfig.from_dict({"min_point": 10})
    with pytest.raises(CanaryConfigError, match="unknown column"):
        CanaryConfig.from_dict({"metrics": [{"name": "x", "column": "prompt; DROP TABLE spans"}]})
    with pytest.raises(CanaryConfigError, match="unknown keys"):
        CanaryConfig.from_dict({"metrics": [{"name": "x", "column": "latency_ms", "critcal": True}]})
    with pytest.raises(CanaryConfigError):
        CanaryConfig(pass_score=70, marginal_score=80)
    with pytest.raises(CanaryConfigError):
        CanaryMetric("x", "latency_ms", kind="median")


# ---------------------------------------------------------------- loading from trace_features


@pytest.fixture
def features_con():
    con = duckdb.connect()
    migrate(con)
    yield con
    con.close()


def _insert(con, rows):
    for r in rows:
        row = {"day": r["start_time"].date(), "workflow": "wf", "spans": 3, "llm_calls": 1, "is_error": False,
               "is_refusal": False, "computed_at": datetime(2025, 3, 2), "latency_ms": 1000.0, **r}
        cols = ", ".join(row)
        con.execute(f"INSERT INTO trace_features ({cols}) VALUES ({', '.join('?' for _ in row)})", list(row.values()))


def test_load_canary_intervals_from_trace_features(features_con):
    t0 = datetime(2025, 3, 1, 12, 0)
    at = lambda minutes: t0 + timedelta(minutes=minutes)  # noqa: E731
    rows = []
    n = 0

    def add(release, minutes, **kw):
        nonlocal n
        n += 1
        rows.append({"release": release, "trace_id": f"t{n:03d}", "start_time": at(minutes), **kw})

    for m in (0, 3, 9.99):
        add("v2", m, latency_ms=2000.0 + m)  # canary, interval 0
    add("v2", 10, latency_ms=None, is_error=True)  # exactly on the boundary: interval 1; NULL latency
    for m in (1, 5):
        add("v1", m, latency_ms=1000.0 + m)  # baseline, interval 0
    add("v0", 12, latency_ms=900.0)  # another release serving at the time: interval 1
    add("unknown", 4, latency_ms=5.0)  # never part of an implicit baseline
    add("v1", 21, latency_ms=1100.0)  # interval 2 (the short last one)
    add("v1", 25, latency_ms=1.0)  # at `end`: outside
    add("v1", -1, latency_ms=1.0)  # before `start`: outside
    add("v2", 2, latency_ms=7.0, workflow="other")  # another workflow
    _insert(features_con, rows)
    # t001 recomputed later with another latency: only the newest row counts.
    _insert(features_con, [{"release": "v2", "trace_id": "t001", "start_time": at(0), "latency_ms": 2500.0,
                            "computed_at": datetime(2025, 3, 3)}])

    ivs = load_canary_intervals(features_con, "wf", "v2", None, t0, at(25), 10)
    assert [(iv.index, iv.start, iv.end) for iv in ivs] == [(0, t0, at(10)), (1, at(10), at(20)), (2, at(20), at(25))]
    assert sorted(ivs[0].canary["latency_ms"].tolist()) == [2003.0, 2009.99, 2500.0]
    assert sorted(ivs[0].baseline["latency_ms"].tolist()) == [1001.0, 1005.0]  # no "unknown", no v0 yet
    assert ivs[1].n_canary == 1 and math.isnan(ivs[1].canary["latency_ms"][0])
    assert ivs[1].canary["is_error"].tolist() == [1.0]
    assert ivs[1].baseline["latency_ms"].tolist() == [900.0]  # v0 is part of the implicit baseline
    assert ivs[2].n_canary == 0 and ivs[2].baseline["latency_ms"].tolist() == [1100.0]
    assert set(ivs[0].canary) == set(FEATURE_COLUMNS)  # every feature column by default

    only_v1 = load_canary_intervals(features_con, "wf", "v2", "v1", t0, at(25), 10, columns=["latency_ms"])
    assert list(only_v1[0].canary) == ["latency_ms"]
    assert only_v1[1].baseline["latency_ms"].tolist() == []  # v0 not in an explicit baseline
    both = load_canary_intervals(features_con, "wf", "v2", ["v1", "v0"], t0, at(25), 10, columns=["latency_ms"])
    assert both[1].baseline["latency_ms"].tolist() == [900.0]
    # Aware times are converted to naive UTC: 13:00+01:00 is 12:00 UTC.
    cet = timezone(timedelta(hours=1))
    aware = load_canary_intervals(features_con, "wf", "v2", "v1", (t0 + timedelta(hours=1)).replace(tzinfo=cet),
                                  at(25).replace(tzinfo=UTC), 10, columns=["latency_ms"])
    assert [iv.start for iv in aware] == [t0, at(10), at(20)]
    assert sorted(aware[0].canary["latency_ms"].tolist()) == [2003.0, 2009.99, 2500.0]
    with pytest.raises(ValueError, match="own baseline"):
        load_canary_intervals(features_con, "wf", "v2", ["v1", "v2"], t0, at(25), 10)
    with pytest.raises(ValueError, match="unknown trace_features columns"):
        load_canary_intervals(features_con, "wf", "v2", "v1", t0, at(25), 10, columns=["latency_ms; --"])
    with pytest.raises(ValueError, match="empty window"):
        load_canary_intervals(features_con, "wf", "v2", "v1", at(25), t0, 10)


def test_loaded_intervals_judge_end_to_end(features_con):
    rng = np.random.default_rng(16)
    t0 = datetime(2025, 3, 1, 12, 0)
    rows = []
    for i in range(2):
        for release, n, scale in (("v2", 150, 1.6), ("v1", 600, 1.0)):
            g = _group(rng, n, latency_scale=scale)
            for j in range(n):
                rows.append({"release": release, "trace_id": f"{release}-{i}-{j}",
                             "start_time": t0 + timedelta(minutes=10 * i, seconds=float(rng.uniform(0, 599))),
                             "latency_ms": float(g["latency_ms"][j]), "is_error": bool(g["is_error"][j]),
                             "is_refusal": bool(g["is_refusal"][j]), "output_tokens": int(g["output_tokens"][j]),
                             "cost_usd": float(g["cost_usd"][j])})
    df = pd.DataFrame(rows)
    df["day"] = df["start_time"].dt.date
    df["workflow"], df["spans"], df["llm_calls"], df["computed_at"] = "wf", 2, 1, datetime(2025, 3, 2)
    features_con.register("df", df)
    features_con.execute("INSERT INTO trace_features BY NAME SELECT * FROM df")
    ivs = load_canary_intervals(features_con, "wf", "v2", "v1", t0, t0 + timedelta(minutes=20), 10)
    assert [(iv.n_canary, iv.n_baseline) for iv in ivs] == [(150, 600), (150, 600)]
    result = judge_canary(ivs, workflow="wf", canary="v2", baseline="v1")
    assert result.verdict == "fail" and result.failed_at == 0
    assert result.looks[0].metric("latency").classification == "High"
    assert result.intervals[1].metric("latency").classification == "High"


# ---------------------------------------------------------------- reports


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.hrefs += [v for k, v in attrs if k == "href"]


def _hostile_result():
    rng = np.random.default_rng(17)
    cfg = CanaryConfig(metrics=(
        CanaryMetric(XSS, "latency_ms", critical=True),
        CanaryMetric("err|*_[x](javascript:alert(1))", "is_error", "proportion"),
    ))
    ivs = [CanaryInterval(index=i, start=datetime(2025, 3, 1, 12, 10 * i), end=datetime(2025, 3, 1, 12, 10 * i + 10),
                          canary=_group(rng, 300, latency_scale=1.5), baseline=_group(rng, 900))
           for i in range(2)]
    return judge_canary(ivs, cfg, workflow=f"wf{XSS}", canary="v2 | **bold**", baseline="<img src=x onerror=alert(1)>")


def test_reports_escape_everything_from_users_and_config():
    result = _hostile_result()
    assert result.verdict == "fail"
    links = {"dashboard": "https://grafana.example/d/1?a=<b>", "evil": "javascript:alert(1)", XSS: "runs/1"}
    md = render_markdown(result, links=links)
    assert md.startswith("## **FAIL** — canary analysis for wf&lt;script>")
    assert "<script" not in md and "<img" not in md and re.search(r"(?<!\\)\]\(javascript:", md) is None
    assert "v2 \\| \\*\\*bold\\*\\*" in md
    assert "[dashboard](<https://grafana.example/d/1?a=%3Cb%3E>)" in md
    assert "evil: javascript:alert(1)" in md
    assert "| **High** |" in md  # the critical metric's classification, in bold
    html_text = render_html(result, links=links)
    parser = _Tags()
    parser.feed(html_text)
    assert "script" not in parser.tags and "img" not in parser.tags
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html_text
    assert "Content-Security-Policy" in html_text and "default-src 'none'" in html_text
    assert parser.hrefs == ["https://grafana.example/d/1?a=<b>", "runs/1"]  # as the browser reads them
    assert 'class="badge" style="background:#cf222e">FAIL' in html_text
    doc = json.loads(render_json(result))
    assert doc["workflow"] == f"wf{XSS}" and doc["verdict"] == "fail"


def test_report_of_an_inconclusive_canary_without_intervals():
    r = judge_canary([], workflow="wf", canary="v2")
    md = render_markdown(r)
    assert "**INCONCLUSIVE**" in md and "no intervals" in md and "all other releases" in md
    assert "<h2>" in render_html(r)
