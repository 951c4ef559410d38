"""Decision-quality benchmark for canary judgement: how often does the canary analysis roll back
a canary that is no worse than its baseline (A/A), and how fast does it catch a 20 % p95 latency
regression?

    python bench/canary_quality.py                      # 1000 canaries per scenario, 2 processes (~32 min)
    python bench/canary_quality.py --confidence 0.90    # the same world at another per-interval level
    python bench/canary_quality.py --canaries 200 --workers 1 --grid ""

Every simulated canary runs the real `judge_interval` / `judge_canary` with the default
CanaryConfig (6 metrics, 4 of them critical, 95 % family-wise per interval, 50 requests per
group minimum, fail after 2 consecutive failing intervals), interval by interval, stopping at
the first rollback as production does.

The simulated world, per request (canary and baseline drawn independently in every interval):
- latency: a log-normal body (median 1200 ms, σ 0.45) for 96 % of requests and a slow
  component (median 3600 ms, σ 0.6: long generations, retries) for 4 %: a heavy right tail
  (p95 ≈ 2.4 × the median);
- errors 1 %, refusals 2 %; output tokens log-normal (median 250, σ 0.6) rounded, 0 on error;
  cost 0.002 + 8e-6 per output token, 0 on error.

A "20 % p95 regression" makes the canary's true p95 exactly 1.2 × the baseline's, in three
shapes (solved on the exact mixture CDF):
- uniform: every request 20 % slower (median and p95 both +20 %: a bigger model, a longer
  prompt);
- slow path: a share of requests (solved: ~10 %) takes twice as long (a retry, a tool call)
  — the median moves ~6 %;
- spread: log-latency spreads around the same median (median unchanged, the fast get faster)
  — a pure tail change.
Each shape is judged with the default metrics, with the rank test alone (latency_p95 removed)
and with the tail test alone (latency removed), on the same simulated canaries.

Canary traffic: 200 requests per interval against a baseline of 1800 (a 10 % canary: the
baseline is the rest of the traffic in the same window), and 200 vs 200 (a Kayenta-style
baseline of the canary's size). "Caught within 2 intervals" = the canary has failed by the end
of its second interval, which with the consecutive-failure limit of 2 means both of its first
two intervals failed. A/A canaries run 6 intervals (one hour of 10-minute intervals) and 24
(four hours); a false rollback is any failure in that time. Rates carry a 95 % Wilson interval.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import stats as sps
from scipy.optimize import brentq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import map_seed_chunks  # noqa: E402
from relops_pipeline.lib.canary import DEFAULT_CONFIG, CanaryConfig, judge_canary, judge_interval  # noqa: E402
from relops_pipeline.lib.canary.stats import wilson  # noqa: E402

BODY_MEDIAN, BODY_SIGMA = 1200.0, 0.45
SLOW_SHARE, SLOW_MEDIAN, SLOW_SIGMA = 0.04, 3600.0, 0.6
ERROR_RATE, REFUSAL_RATE = 0.01, 0.02
TOKENS_MEDIAN, TOKENS_SIGMA = 250.0, 0.6
REGRESSION = 1.2  # canary p95 / baseline p95
SLOW_PATH_FACTOR = 2.0

CONFIG_NAMES = ("default (rank + tail)", "rank test only", "tail test only")


def configs(confidence: float) -> dict[str, CanaryConfig]:
    """The default configuration (at `confidence`) and its rank-only / tail-only variants."""
    base = replace(DEFAULT_CONFIG, confidence=confidence)
    return {
        "default (rank + tail)": base,
        "rank test only": base.with_metrics("latency", "error_rate", "refusal_rate", "cost", "output_tokens"),
        "tail test only": base.with_metrics("latency_p95", "error_rate", "refusal_rate", "cost", "output_tokens"),
    }


# ---------------------------------------------------------------- the latency model


def latency_cdf(x: np.ndarray | float) -> np.ndarray | float:
    body = sps.lognorm.cdf(x, BODY_SIGMA, scale=BODY_MEDIAN)
    slow = sps.lognorm.cdf(x, SLOW_SIGMA, scale=SLOW_MEDIAN)
    return (1 - SLOW_SHARE) * body + SLOW_SHARE * slow


def latency_quantile(q: float) -> float:
    return brentq(lambda x: latency_cdf(x) - q, 1.0, 1e7, xtol=1e-9)


BASE_P95 = latency_quantile(0.95)
BASE_MEDIAN = latency_quantile(0.5)


def _shape_cdf(shape: str, param: float, x: float) -> float:
    """The canary's latency CDF under a regression shape with parameter `param`."""
    if shape == "uniform":
        return float(latency_cdf(x / param))
    if shape == "slow path":  # a share `param` of requests takes SLOW_PATH_FACTOR times as long
        return float((1 - param) * latency_cdf(x) + param * latency_cdf(x / SLOW_PATH_FACTOR))
    if shape == "spread":  # log-latency around the median scaled by `param`
        return float(latency_cdf(BASE_MEDIAN * (x / BASE_MEDIAN) ** (1.0 / param)))
    raise ValueError(shape)


def solve_shape(shape: str) -> float:
    """The shape's parameter that puts the canary's true p95 at REGRESSION × the baseline's."""
    target = REGRESSION * BASE_P95
    if shape == "uniform":
        return REGRESSION
    lo, hi = (1e-6, 0.9) if shape == "slow path" else (1.0 + 1e-9, 4.0)
    return brentq(lambda p: _shape_cdf(shape, p, target) - 0.95, lo, hi, xtol=1e-12)


def shape_facts(shape: str, param: float) -> dict[str, float]:
    def q(p: float) -> float:
        return brentq(lambda x: _shape_cdf(shape, param, x) - p, 1.0, 1e7, xtol=1e-9)

    return {"p95_ratio": q(0.95) / BASE_P95, "median_ratio": q(0.5) / BASE_MEDIAN,
            "share_above_base_p95": 1 - _shape_cdf(shape, param, BASE_P95)}


def simulate_group(rng: np.random.Generator, n: int, shape: str | None = None, param: float = 0.0,
                   error_rate: float = ERROR_RATE, refusal_rate: float = REFUSAL_RATE) -> dict[str, np.ndarray]:
    """One group's requests in one interval."""
    slow = rng.random(n) < SLOW_SHARE
    lat = np.where(slow, rng.lognormal(math.log(SLOW_MEDIAN), SLOW_SIGMA, n),
                   rng.lognormal(math.log(BODY_MEDIAN), BODY_SIGMA, n))
    if shape == "uniform":
        lat = lat * param
    elif shape == "slow path":
        lat = np.where(rng.random(n) < param, lat * SLOW_PATH_FACTOR, lat)
    elif shape == "spread":
        lat = BASE_MEDIAN * (lat / BASE_MEDIAN) ** param
    err = rng.random(n) < error_rate
    tokens = np.where(err, 0.0, np.round(rng.lognormal(math.log(TOKENS_MEDIAN), TOKENS_SIGMA, n)))
    return {"latency_ms": lat, "is_error": err, "is_refusal": rng.random(n) < refusal_rate,
            "output_tokens": tokens, "cost_usd": np.where(err, 0.0, 0.002 + tokens * 8e-6)}


# ---------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    name: str
    n_canary: int
    n_baseline: int
    intervals: int  # how long the canary runs (it stops at the first rollback)
    shape: str | None = None
    error_rate: float = ERROR_RATE
    refusal_rate: float = REFUSAL_RATE
    configs: tuple[str, ...] = ("default (rank + tail)",)
    stream: int = 0  # seeds: scenarios with the same stream see the same baseline draws


@dataclass
class Outcome:
    failed_at: list[int | None] = field(default_factory=list)  # 0-based interval of the rollback
    final: Counter = field(default_factory=Counter)  # verdict at the end
    interval_fail: int = 0
    intervals: int = 0
    vetoes: Counter = field(default_factory=Counter)


def _run_chunk(args: tuple[Scenario, float, list[int], float]) -> dict[str, Outcome]:
    sc, param, seeds, confidence = args
    cfgs = configs(confidence)
    out = {c: Outcome() for c in sc.configs}
    for seed in seeds:
        rng = np.random.default_rng([sc.stream, seed])
        data = []
        for _ in range(sc.intervals):
            data.append((simulate_group(rng, sc.n_canary, sc.shape, param, sc.error_rate, sc.refusal_rate),
                         simulate_group(rng, sc.n_baseline)))
        for name in sc.configs:
            cfg, o = cfgs[name], out[name]
            judged = []
            result = None
            for i, (cv, bv) in enumerate(data):
                r = judge_interval(cv, bv, cfg, index=i)
                judged.append(r)
                o.intervals += 1
                o.interval_fail += r.verdict == "fail"
                o.vetoes.update(r.vetoed_by)
                result = judge_canary(judged, cfg)
                if result.verdict == "fail":
                    break
            o.failed_at.append(result.failed_at)
            o.final[result.verdict] += 1
    return out


class Runner:
    def __init__(self, workers: int, confidence: float):
        self.pool = ProcessPoolExecutor(workers) if workers > 1 else None
        self.workers = workers
        self.confidence = confidence

    def run(self, sc: Scenario, canaries: int) -> dict[str, Outcome]:
        param = solve_shape(sc.shape) if sc.shape else 0.0
        parts = map_seed_chunks(self.pool, self.workers, _run_chunk, range(canaries),
                                lambda seeds: (sc, param, seeds, self.confidence))
        merged = {c: Outcome() for c in sc.configs}
        for part in parts:
            for c, o in part.items():
                m = merged[c]
                m.failed_at += o.failed_at
                m.final.update(o.final)
                m.interval_fail += o.interval_fail
                m.intervals += o.intervals
                m.vetoes.update(o.vetoes)
        return merged


def _rate(k: int, n: int) -> str:
    lo, hi = wilson(k, n, 1.959964)
    return f"{k / n:6.1%} [{lo:.1%}, {hi:.1%}]"


def _caught(o: Outcome, within: int) -> int:
    return sum(1 for f in o.failed_at if f is not None and f < within)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--canaries", type=int, default=1000, help="simulated canaries per scenario")
    ap.add_argument("--aa-canaries", type=int, default=2000, help="simulated canaries for the main A/A scenario")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--grid", default="400,800,1600",
                    help="canary requests per interval probed for the tail-only shapes (baseline 9×); '' to skip")
    ap.add_argument("--grid-canaries", type=int, default=500)
    ap.add_argument("--confidence", type=float, default=DEFAULT_CONFIG.confidence,
                    help="per-interval family-wise confidence to simulate (sensitivity of the default)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    run = Runner(args.workers, args.confidence)
    N = args.canaries
    cfg = configs(args.confidence)["default (rank + tail)"]
    print(f"canary decision quality: Python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"{args.workers} worker(s), {N} canaries per scenario ({args.aa_canaries} for the main A/A)")
    print(f"default config: confidence {cfg.confidence} per interval (Bonferroni over the metrics with data), "
          f"pass {cfg.pass_score:g} / marginal {cfg.marginal_score:g}, min {cfg.min_points} requests per group, "
          f"fail after {cfg.consecutive_failure_limit} consecutive failing intervals, pass needs {cfg.min_intervals}")
    print("metrics: " + "; ".join(f"{m.name} ({m.kind}, tol {m.tolerance:g}{', critical' if m.critical else ''})"
                                  for m in cfg.metrics))
    print(f"latency: baseline median {BASE_MEDIAN:.0f} ms, p95 {BASE_P95:.0f} ms "
          f"(p95/median {BASE_P95 / BASE_MEDIAN:.2f})")
    shapes = ("uniform", "slow path", "spread")
    for shape in shapes:
        param = solve_shape(shape)
        f = shape_facts(shape, param)
        print(f"  shape {shape:<9}: parameter {param:.4f} -> true p95 ×{f['p95_ratio']:.3f}, median "
              f"×{f['median_ratio']:.3f}, share above the baseline p95 {f['share_above_base_p95']:.1%} (baseline 5.0%)")
    print()

    # 1. A/A.
    print("A/A (canary = baseline): false rollback = the canary fails at any point")
    print(f"  {'scenario':<44} {'canaries':>8} {'false rollback [95% CI]':>26} {'ends pass':>10} "
          f"{'interval fail rate':>19}   vetoes by metric (intervals)")
    aa = [
        (Scenario("A/A 200 vs 1800, 6 intervals (1 h)", 200, 1800, 6, stream=1), args.aa_canaries),
        (Scenario("A/A 200 vs 200, 6 intervals", 200, 200, 6, stream=2), N),
        (Scenario("A/A 50 vs 450 (min points), 6 intervals", 50, 450, 6, stream=3), N),
        (Scenario("A/A 2000 vs 18000, 6 intervals", 2000, 18000, 6, stream=4), N),
        (Scenario("A/A 200 vs 1800, 24 intervals (4 h)", 200, 1800, 24, stream=5), N),
    ]
    aa_main = None
    for sc, n in aa:
        o = run.run(sc, n)[sc.configs[0]]
        k = sum(1 for f in o.failed_at if f is not None)
        if aa_main is None:
            aa_main = (k, n)
        print(f"  {sc.name:<44} {n:>8} {_rate(k, n):>26} {o.final['pass'] / n:>10.1%} "
              f"{o.interval_fail / o.intervals:>8.2%} of {o.intervals:<7}   "
              f"{dict(o.vetoes.most_common()) or '-'}", flush=True)
    print()

    # 2. Regressions.
    print("20 % p95 latency regression: caught = the canary has failed by the end of interval k")
    print(f"  {'shape, requests per interval':<38} {'config':<22} {'within 2 [95% CI]':>24} {'within 3':>9} "
          f"{'within 6':>9}")
    regs = []
    for shape in shapes:
        regs.append(Scenario(f"{shape}, 200 vs 1800", 200, 1800, 6, shape, configs=CONFIG_NAMES, stream=10))
    regs.append(Scenario("uniform, 200 vs 200", 200, 200, 6, "uniform", configs=CONFIG_NAMES, stream=11))
    regs.append(Scenario("uniform, 400 vs 400", 400, 400, 6, "uniform", configs=("default (rank + tail)",), stream=12))
    headline = None
    for sc in regs:
        res = run.run(sc, N)
        for name, o in res.items():
            c2 = _caught(o, 2)
            if sc.shape == "uniform" and sc.n_baseline == 1800 and name == "default (rank + tail)":
                headline = (c2, N)
            print(f"  {sc.name:<38} {name:<22} {_rate(c2, N):>24} {_caught(o, 3) / N:>9.1%} {_caught(o, 6) / N:>9.1%}",
                  flush=True)
    print()

    print("other regressions (default config, 200 vs 1800)")
    others = [
        Scenario("error rate 1% -> 3%", 200, 1800, 6, error_rate=0.03, stream=13),
        Scenario("error rate 1% -> 5%", 200, 1800, 6, error_rate=0.05, stream=14),
        Scenario("refusal rate 2% -> 6%", 200, 1800, 6, refusal_rate=0.06, stream=15),
    ]
    for sc in others:
        o = run.run(sc, N)[sc.configs[0]]
        print(f"  {sc.name:<38} {'default (rank + tail)':<22} {_rate(_caught(o, 2), N):>24} "
              f"{_caught(o, 3) / N:>9.1%} {_caught(o, 6) / N:>9.1%}", flush=True)
    print()

    grid = [int(x) for x in args.grid.split(",") if x.strip()]
    if grid:
        G = args.grid_canaries
        print(f"tail-only shapes: caught within 2 intervals by canary requests per interval (baseline 9×, "
              f"default config, {G} canaries each)")
        for shape in ("slow path", "spread"):
            cells = []
            for n in grid:
                o = run.run(Scenario(f"{shape} {n}", n, 9 * n, 2, shape, stream=20), G)["default (rank + tail)"]
                cells.append(f"{n}: {_caught(o, 2) / G:.1%}")
            print(f"  {shape:<10} " + ", ".join(cells), flush=True)
        print()

    k, n = aa_main
    hk, hn = headline
    print("targets:")
    print(f"  A/A false rollback <= 1% (200 vs 1800, 6 intervals, {n} canaries): {_rate(k, n).strip()} -> "
          f"{'met' if k / n <= 0.01 else 'MISSED'}")
    print(f"  20% p95 regression caught within 2 intervals >= 90% (uniform slowdown, 200 vs 1800): "
          f"{_rate(hk, hn).strip()} -> {'met' if hk / hn >= 0.90 else 'MISSED'}")
    print(f"\ntotal time {time.perf_counter() - t0:.0f} s")
    if run.pool is not None:
        run.pool.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
