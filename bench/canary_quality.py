"""Decision-quality benchmark for the sequential canary judgement: across traffic levels, how
often does it roll back a canary that is no worse than its baseline (A/A), how fast does it
roll back a real regression, and how long until a healthy canary passes?

    python bench/canary_quality.py                          # 4 levels, ~17 min on 2 cores
    python bench/canary_quality.py --canaries 100 --aa-canaries 200 --levels 250,2500

Every simulated canary runs the real judgement (`SequentialCanary`, the default CanaryConfig:
6 metrics, 4 critical, 98 % family-wise over the metrics and every look, a look every 10
minutes over the growing window since the canary's start) look by look, stopping at the first
rollback as production does.

Traffic: 25, 250, 2,500 and 25,000 requests per hour, a 10 % canary; in each 10-minute interval
the canary's and the baseline's request counts are Poisson (2.5 canary requests per hour at
25/h). The simulated world per request (canary and baseline drawn independently):
- latency: a log-normal body (median 1200 ms, σ 0.45) for 96 % of requests and a slow
  component (median 3600 ms, σ 0.6) for 4 %: a heavy right tail (p95 ≈ 2.4 × the median);
- errors 1 %, refusals 2 %; output tokens log-normal (median 250, σ 0.6), 0 on error; cost
  0.002 + 8e-6 per output token, 0 on error.

Scenarios per level, each followed for 24 hours (144 looks):
- A/A: the canary is the baseline; a false rollback is any failure within 24 h; "passes" is a
  pass (every critical metric's interval within its margin) at some look;
- latency +20 %: every canary request 20 % slower (median and p95 +20 %);
- errors +3 pt: error rate 1 % -> 4 %;
- at 250/h also the issue's low-traffic canary: 45 % slower with 6× the error rate.
Baseline in the same run: at 250 and 2,500/h the same regressions judged by the previous
judge (each 10-minute interval alone at 95 %, min 50 requests per group, fail after 2
consecutive failing intervals) — what relops did before the sequential judge.
Rates carry a 95 % Wilson interval; "hours" are medians over the canaries that decided.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import map_seed_chunks  # noqa: E402
from relops_pipeline.lib.canary import DEFAULT_CONFIG, CanaryConfig  # noqa: E402
from relops_pipeline.lib.canary.judge import judge_interval, shows_pass  # noqa: E402
from relops_pipeline.lib.canary.model import CanaryInterval  # noqa: E402
from relops_pipeline.lib.canary.sequential import SequentialCanary  # noqa: E402
from relops_pipeline.lib.canary.stats import wilson  # noqa: E402

BODY_MEDIAN, BODY_SIGMA = 1200.0, 0.45
SLOW_SHARE, SLOW_MEDIAN, SLOW_SIGMA = 0.04, 3600.0, 0.6
ERROR_RATE, REFUSAL_RATE = 0.01, 0.02
TOKENS_MEDIAN, TOKENS_SIGMA = 250.0, 0.6
CANARY_SHARE = 0.10
INTERVAL_MIN = 10
HOURS = 24
T0 = datetime(2026, 1, 1)
# The judge before the sequential one: each interval alone, its defaults then.
PER_INTERVAL = CanaryConfig(confidence=0.95, min_points=50, consecutive_failure_limit=2)


def simulate_group(rng: np.random.Generator, n: int, slowdown: float = 1.0,
                   error_rate: float = ERROR_RATE) -> dict[str, np.ndarray]:
    """One group's requests in one interval (every latency × `slowdown`)."""
    slow = rng.random(n) < SLOW_SHARE
    lat = np.where(slow, rng.lognormal(math.log(SLOW_MEDIAN), SLOW_SIGMA, n),
                   rng.lognormal(math.log(BODY_MEDIAN), BODY_SIGMA, n)) * slowdown
    err = rng.random(n) < error_rate
    tokens = np.where(err, 0.0, np.round(rng.lognormal(math.log(TOKENS_MEDIAN), TOKENS_SIGMA, n)))
    return {"latency_ms": lat, "is_error": err.astype(float), "is_refusal": (rng.random(n) < REFUSAL_RATE).astype(float),
            "output_tokens": tokens, "cost_usd": np.where(err, 0.0, 0.002 + tokens * 8e-6)}


@dataclass(frozen=True)
class Scenario:
    name: str
    level: int  # requests per hour
    slowdown: float = 1.0
    error_rate: float = ERROR_RATE
    stream: int = 0
    per_interval: bool = False  # the baseline: the previous per-interval judge

    @property
    def regression(self) -> bool:
        return self.slowdown != 1.0 or self.error_rate != ERROR_RATE


@dataclass
class Outcome:
    failed_h: list[float | None] = field(default_factory=list)  # hours to the rollback
    passed_h: list[float | None] = field(default_factory=list)  # hours to the first pass
    seconds: float = 0.0


def _run_chunk(args: tuple[Scenario, list[int]]) -> Outcome:
    sc, seeds = args
    out = Outcome()
    per_h = 60 // INTERVAL_MIN
    lam_c = sc.level * CANARY_SHARE / per_h
    lam_b = sc.level * (1 - CANARY_SHARE) / per_h
    t = time.perf_counter()
    for seed in seeds:
        rng = np.random.default_rng([sc.stream, sc.level, seed])
        seq = SequentialCanary(DEFAULT_CONFIG)
        failed = passed = None
        streak = conclusive = 0
        for i in range(HOURS * per_h):
            start = T0 + timedelta(minutes=INTERVAL_MIN * i)
            iv = CanaryInterval(start, start + timedelta(minutes=INTERVAL_MIN),
                                simulate_group(rng, rng.poisson(lam_c), sc.slowdown, sc.error_rate),
                                simulate_group(rng, rng.poisson(lam_b)), i)
            hours = (i + 1) / per_h
            if sc.per_interval:  # inconclusive intervals neither count nor reset the streak
                verdict = judge_interval(iv.canary, iv.baseline, PER_INTERVAL).verdict
                if verdict != "inconclusive":
                    conclusive += 1
                    streak = streak + 1 if verdict == "fail" else 0
                if streak >= PER_INTERVAL.consecutive_failure_limit:
                    failed = hours
                    break
                if passed is None and verdict == "pass" and conclusive >= PER_INTERVAL.min_intervals:
                    passed = hours
                continue
            look = seq.add(iv)
            if look.verdict == "fail":  # consecutive_failure_limit is 1 by default
                failed = hours
                break
            if passed is None and shows_pass(look, i + 1, DEFAULT_CONFIG):
                passed = hours
        out.failed_h.append(failed)
        out.passed_h.append(passed)
    out.seconds = time.perf_counter() - t
    return out


def run(pool, workers: int, sc: Scenario, canaries: int) -> Outcome:
    parts = map_seed_chunks(pool, workers, _run_chunk, range(canaries), lambda seeds: (sc, seeds))
    merged = Outcome()
    for p in parts:
        merged.failed_h += p.failed_h
        merged.passed_h += p.passed_h
        merged.seconds += p.seconds
    return merged


def _rate(k: int, n: int) -> str:
    lo, hi = wilson(k, n, 1.959964)
    return f"{k / n:6.1%} [{lo:.1%}, {hi:.1%}]"


def _within(hours: list[float | None], limit: float) -> int:
    return sum(1 for h in hours if h is not None and h <= limit + 1e-9)


def _median(hours: list[float | None]) -> str:
    got = sorted(h for h in hours if h is not None)
    return f"{float(np.median(got)):.1f} h" if got else "—"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--levels", default="25,250,2500,25000", help="requests per hour, comma-separated")
    ap.add_argument("--canaries", type=int, default=200, help="simulated canaries per regression scenario")
    ap.add_argument("--aa-canaries", type=int, default=400, help="simulated canaries per A/A scenario")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    cfg = DEFAULT_CONFIG
    t0 = time.perf_counter()
    pool = ProcessPoolExecutor(args.workers) if args.workers > 1 else None
    print(f"canary decision quality (sequential): Python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"{args.workers} worker(s); {args.aa_canaries} A/A and {args.canaries} regression canaries per scenario")
    print(f"default config: confidence {cfg.confidence} family-wise over {len(cfg.metrics)} metrics and every look, "
          f"mixture scale {cfg.mixture_scale}, a look every {cfg.interval_minutes} min, min {cfg.min_points} requests "
          f"per group since the start, fail after {cfg.consecutive_failure_limit} failing look(s)")
    print("metrics: " + "; ".join(f"{m.name} ({m.kind}, tol {m.tolerance:g}, margin {m.margin:g}"
                                  f"{', critical' if m.critical else ''})" for m in cfg.metrics))
    print(f"traffic: a {CANARY_SHARE:.0%} canary, Poisson counts per {INTERVAL_MIN}-minute interval, followed "
          f"{HOURS} h\n")
    header = (f"  {'req/h':>6}  {'scenario':<30} {'canaries':>8}  {'rolled back [95% CI]':>24} {'≤1 h':>6} {'≤4 h':>6} "
              f"{'median h':>9}  {'passed ≤24 h':>12} {'median h':>9}")
    print(header)
    goals: list[tuple[str, bool, str]] = []
    for level in levels:
        scenarios = [(Scenario("A/A", level, stream=1), args.aa_canaries),
                     (Scenario("latency +20%", level, slowdown=1.2, stream=2), args.canaries),
                     (Scenario("errors +3 pt (1% -> 4%)", level, error_rate=0.04, stream=3), args.canaries)]
        if level == 250:
            scenarios.append((Scenario("45% slower, 6x errors", level, slowdown=1.45, error_rate=0.06, stream=4),
                              args.canaries))
            scenarios.append((Scenario("45% slower, 6x errors", level, slowdown=1.45, error_rate=0.06, stream=4,
                                       per_interval=True), args.canaries))
        if level == 2500:
            scenarios.append((Scenario("latency +20%", level, slowdown=1.2, stream=2, per_interval=True),
                              args.canaries))
        for sc, n in scenarios:
            o = run(pool, args.workers, sc, n)
            k = sum(1 for h in o.failed_h if h is not None)
            name = "  previous per-interval judge" if sc.per_interval else sc.name
            print(f"  {level:>6}  {name:<30} {n:>8}  {_rate(k, n):>24} {_within(o.failed_h, 1) / n:>6.1%} "
                  f"{_within(o.failed_h, 4) / n:>6.1%} {_median(o.failed_h):>9}  "
                  f"{sum(1 for h in o.passed_h if h is not None) / n:>12.1%} {_median(o.passed_h):>9}", flush=True)
            if sc.per_interval:
                continue
            if sc.name == "A/A":
                goals.append((f"A/A false rollback over 24 h <= 1% at {level}/h", k / n <= 0.01, _rate(k, n).strip()))
            if level == 250 and sc.slowdown == 1.45:
                c = _within(o.failed_h, 4)
                goals.append(("250/h: 45% slower with 6x errors rolled back within 4 h >= 95%", c / n >= 0.95,
                              _rate(c, n).strip()))
            if level == 2500 and sc.name == "latency +20%":
                c = _within(o.failed_h, 1)
                goals.append(("2,500/h: 20% latency regression rolled back within 1 h >= 95%", c / n >= 0.95,
                              _rate(c, n).strip()))
        print()
    print("goals:")
    for text, ok, figure in goals:
        print(f"  {text}: {figure} -> {'met' if ok else 'MISSED'}")
    print(f"\ntotal time {time.perf_counter() - t0:.0f} s")
    if pool is not None:
        pool.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
