"""The gate's statistics: case-level bootstrap intervals for eval runs (numpy, vectorised).

Input: one long-format pandas DataFrame per eval run, as `run_frame()` reads it from the
warehouse — one row per (case_id, sample, metric) with the sample's columns repeated on each of
its metric rows, and a row with metric NULL for a sample that has no score:

    case_id, sample, metric, score, passed            (the scores; eval_scores)
    latency_ms, cost_usd, output, error, must_pass   (per sample, all optional; eval_samples)

A frame with only the score columns (or only the sample columns) works too.

Estimands. A metric's value for a run is the mean over cases of the case's mean score over its
samples: every case of the suite counts once, however many samples it got (a case with 5
samples does not outweigh one with 3; with unequal sample counts the case means are simply
noisier, which the case bootstrap accounts for). The paired difference is the same mean over
the cases both runs scored, of (candidate case mean − baseline case mean). Latency percentiles
and cost per sample are over samples (what a user of the workflow experiences / pays).

The bootstrap resamples cases only (one stage), never samples within a case. Justification:
cases are the units drawn from the population of inputs; samples are nested inside them. The
variance of a mean of case means is (σ²_between + mean(σ²_within / k_i)) / n, and the empirical
variance of the observed case means already estimates exactly that sum, because each observed
case mean carries its own within-case noise. Resampling cases therefore gets both variance
components right (consistent as the number of cases grows, whatever k_i is), while a two-stage
bootstrap that also resamples samples within each case adds the within-case component a second
time and overstates the variance (Davison & Hinkley 1997, §3.8; Field & Welsh 2007). With k = 3
binary samples per case that overstatement is large, and it would make every interval wider
than it should be — fewer SHIPs and fewer BLOCKs for nothing. A paired difference resamples the
common cases jointly: the candidate and baseline means of a drawn case move together, so the
between-case variance (case difficulty) cancels out of the difference, which is what makes a
paired comparison far more precise than two independent intervals.

Intervals are percentile intervals with Hesterberg's small-sample expansion (the percentile
interval of a mean is too narrow by about sqrt((n−1)/n) and uses z instead of t; the expanded
interval uses the percentiles at α' = 2·Φ(−sqrt(n/(n−1))·t_{α/2, n−1}), Hesterberg 2015, "What
teachers should know about the bootstrap"). At 300 cases it changes nothing visible; at 20 it
keeps the coverage near the nominal level.

Resampling is done with a count matrix: for B resamples of n cases, C[b, i] = how often case i
was drawn in resample b (drawn with `integers` and counted with one `bincount`, in chunks so the
matrix stays a few tens of MB); every mean over the resample is then one product C·x per column
(see _cdot), and a weighted percentile is one cumulative sum over the samples sorted once. The
RNG is numpy's PCG64 seeded per statistic with [seed, stream], so each figure is reproducible
from the seed alone and does not depend on which other figures were computed. Measured: two runs
of 1000 cases × 5 samples, 3 metrics, latency and cost, 10,000 resamples: about 0.6 s on 2 cores
(bench/gate_quality.py prints it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from relops_pipeline.lib.gates.model import CaseChange, Interval

DEFAULT_N_BOOT = 10_000
# Cells of the count matrix per chunk (~32 MB as float64): bounds memory at any suite size.
_CHUNK_CELLS = 4_000_000

# Stream ids: one independent RNG stream per statistic (see the module docstring).
_STREAM_CANDIDATE = 1
_STREAM_BASELINE = 2
_STREAM_PAIRED = 3

RUN_FRAME_SQL = """
SELECT e.case_id, e.sample, e.must_pass, e.output, e.error, e.latency_ms, e.cost_usd,
       s.metric, s.score, s.passed
FROM eval_samples e
LEFT JOIN eval_scores s USING (eval_run_id, case_id, sample)
WHERE e.eval_run_id = ?
ORDER BY e.case_id, e.sample, s.metric
"""


def run_frame(con: Any, eval_run_id: str) -> pd.DataFrame:
    """The long-format frame of one eval run (samples left-joined to their scores)."""
    return con.execute(RUN_FRAME_SQL, [eval_run_id]).df()


# ---------------------------------------------------------------------------------------------
# Preparing a run


@dataclass
class RunTable:
    """One run reduced to per-case arrays (cases sorted by id) and per-sample arrays."""

    case_ids: np.ndarray  # (n,) str, sorted
    metrics: list[str]
    metric_sum: np.ndarray  # (n, m) sum of scores per case and metric
    metric_count: np.ndarray  # (n, m) scored samples per case and metric
    samples: np.ndarray  # (n,) samples per case
    failed: np.ndarray  # (n,) samples per case that failed (a metric failed, or an error)
    sample_case: np.ndarray  # (s,) case index of every sample
    latency_ms: np.ndarray  # (s,) NaN where unknown
    cost_usd: np.ndarray  # (s,) NaN where unknown
    failed_metrics: dict[str, list[str]] = field(default_factory=dict)  # case -> metrics that failed
    fail_output: dict[str, str] = field(default_factory=dict)  # case -> output of its first failed sample
    pass_output: dict[str, str] = field(default_factory=dict)  # case -> output of its first passed sample

    @property
    def n_cases(self) -> int:
        return int(len(self.case_ids))

    @property
    def n_samples(self) -> int:
        return int(self.samples.sum())

    def case_means(self) -> np.ndarray:
        """(n, m) mean score per case and metric; NaN where the case has no score for it."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.metric_count > 0, self.metric_sum / np.maximum(self.metric_count, 1), np.nan)

    def pass_rates(self) -> np.ndarray:
        """(n,) share of each case's samples that passed every metric."""
        return (self.samples - self.failed) / np.maximum(self.samples, 1)

    def index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.case_ids.tolist())}


def _text(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    return str(v)


def prepare(df: pd.DataFrame | None) -> RunTable:
    """Reduce a run's long-format frame to a RunTable (see the module docstring for columns).

    A sample fails when any of its metrics failed or it carries an error; a sample without
    scores and without an error passes (nothing was asked of it).
    """
    if df is None or len(df) == 0:
        e = np.zeros(0)
        i = np.zeros(0, dtype=np.int64)
        return RunTable(np.array([], dtype=object), [], np.zeros((0, 0)), np.zeros((0, 0), dtype=np.int64),
                        i, i, i, e, e)
    missing = {"case_id", "sample"} - set(df.columns)
    if missing:
        raise ValueError(f"eval frame lacks columns {sorted(missing)}")
    cols = set(df.columns)
    case_code, case_ids = pd.factorize(df["case_id"].astype(str), sort=True)
    case_ids = np.asarray(case_ids, dtype=object)
    s_code, s_uni = pd.factorize(df["sample"], sort=True)
    if (case_code < 0).any() or (s_code < 0).any():
        raise ValueError("eval frame has rows without case_id or sample")
    n = len(case_ids)
    # One entry per (case, sample); rows are metric rows of those samples.
    key = case_code.astype(np.int64) * max(len(s_uni), 1) + s_code
    skeys, first_row, row_sample = np.unique(key, return_index=True, return_inverse=True)
    sample_case = (skeys // max(len(s_uni), 1)).astype(np.int64)
    n_s = len(skeys)

    if "metric" in cols:
        scored = df["metric"].notna().to_numpy()
        if scored.any() and not {"score", "passed"} <= cols:
            raise ValueError("eval frame has metric rows without score/passed columns")
    else:
        scored = np.zeros(len(df), dtype=bool)
    bad_row = np.zeros(len(df), dtype=bool)
    if scored.any():
        # through the nullable boolean dtype: object columns with None and float 1.0/0.0 both work
        bad_row[scored] = ~df["passed"][scored].astype("boolean").fillna(False).to_numpy(dtype=bool)
    failed_sample = np.bincount(row_sample, weights=bad_row, minlength=n_s) > 0
    if "error" in cols:
        err = df["error"].to_numpy(dtype=object)[first_row]
        failed_sample |= np.array([_text(e) not in (None, "") for e in err], dtype=bool)
    samples = np.bincount(sample_case, minlength=n).astype(np.int64)
    failed = np.bincount(sample_case, weights=failed_sample, minlength=n).astype(np.int64)

    def num(col: str) -> np.ndarray:
        if col not in cols:
            return np.full(n_s, np.nan)
        return pd.to_numeric(df[col], errors="coerce").to_numpy(float)[first_row]

    metrics: list[str] = []
    msum: np.ndarray = np.zeros((n, 0))  # float sums (bincount with weights below)
    mcnt = np.zeros((n, 0), dtype=np.int64)
    failed_metrics: dict[str, list[str]] = {}
    if scored.any():
        m_code, m_uni = pd.factorize(df["metric"][scored].astype(str), sort=True)
        metrics = [str(m) for m in m_uni]
        k = len(metrics)
        flat = case_code[scored].astype(np.int64) * k + m_code
        score = pd.to_numeric(df["score"][scored], errors="coerce").to_numpy(float)
        ok = ~np.isnan(score)
        msum = np.bincount(flat[ok], weights=score[ok], minlength=n * k).reshape(n, k)
        mcnt = np.bincount(flat[ok], minlength=n * k).reshape(n, k).astype(np.int64)
        for p in np.unique(flat[bad_row[scored]]).tolist():
            failed_metrics.setdefault(str(case_ids[p // k]), []).append(metrics[p % k])

    def first_text(mask: np.ndarray, with_error: bool) -> dict[str, str]:
        idx = np.flatnonzero(mask)
        if not len(idx) or not ({"output", "error"} & cols):
            return {}
        _, first = np.unique(sample_case[idx], return_index=True)
        out = {}
        for i in idx[first].tolist():
            row = int(first_row[i])
            text = _text(df["output"].iat[row]) if "output" in cols else None
            if text is None and with_error and "error" in cols and _text(df["error"].iat[row]):
                text = f"(error) {_text(df['error'].iat[row])}"
            if text is not None:
                out[str(case_ids[sample_case[i]])] = text
        return out

    return RunTable(
        case_ids=case_ids,
        metrics=metrics,
        metric_sum=msum,
        metric_count=mcnt,
        samples=samples,
        failed=failed,
        sample_case=sample_case,
        latency_ms=num("latency_ms"),
        cost_usd=num("cost_usd"),
        failed_metrics=failed_metrics,
        fail_output=first_text(failed_sample, True),
        pass_output=first_text(~failed_sample, False),
    )


# ---------------------------------------------------------------------------------------------
# Bootstrap machinery


def rng_for(seed: int, stream: int) -> np.random.Generator:
    """The RNG of one statistic: reproducible from (seed, stream) alone."""
    return np.random.default_rng([int(seed), int(stream)])


def case_counts(rng: np.random.Generator, n: int, n_boot: int, *, cells: int = _CHUNK_CELLS) -> Iterable[np.ndarray]:
    """Yield count matrices C (b × n, float64), b ≤ n_boot in total: C[r, i] is how often case i
    was drawn (with replacement, n draws) in resample r. Chunked to bound memory."""
    chunk = max(1, min(n_boot, cells // max(n, 1)))
    done = 0
    while done < n_boot:
        b = min(chunk, n_boot - done)
        idx = rng.integers(0, n, size=(b, n))
        idx += (np.arange(b) * n)[:, None]
        yield np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
        done += b


def bootstrap(n: int, n_boot: int, rng: np.random.Generator,
              statistics: Sequence[Callable[[np.ndarray], np.ndarray]],
              *, cells: int = _CHUNK_CELLS) -> list[np.ndarray]:
    """Run several statistics on the same case resamples. Each statistic maps a count matrix
    (b × n) to a (b × k) array; the result is one (n_boot × k) array per statistic."""
    parts: list[list[np.ndarray]] = [[] for _ in statistics]
    for counts in case_counts(rng, n, n_boot, cells=cells):
        for j, fn in enumerate(statistics):
            parts[j].append(np.asarray(fn(counts), dtype=float).reshape(len(counts), -1))
    return [np.concatenate(p, axis=0) for p in parts]


def _cdot(counts: np.ndarray, x: np.ndarray) -> np.ndarray:
    """counts @ x without BLAS: einsum's own loop, one column at a time. These products are
    skinny (b × n times n × few), where multi-threaded BLAS gains nothing and its spinning
    threads slow down the rest of the bootstrap on a small machine (measured 2× on 2 cores)."""
    if x.ndim == 1:
        return np.einsum("ij,j->i", counts, x)
    out = np.empty((counts.shape[0], x.shape[1]))
    for j in range(x.shape[1]):
        out[:, j] = np.einsum("ij,j->i", counts, np.ascontiguousarray(x[:, j]))
    return out


def weighted_means(values: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Statistic: per column, the mean of the non-NaN case values weighted by the counts."""
    mask = ~np.isnan(values)
    filled = np.where(mask, values, 0.0)
    maskf = mask.astype(float)

    def fn(counts: np.ndarray) -> np.ndarray:
        den = _cdot(counts, maskf)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, _cdot(counts, filled) / np.where(den > 0, den, 1.0), np.nan)

    return fn


def weighted_quantiles(values: np.ndarray, sample_case: np.ndarray, qs: Sequence[float]) -> Callable[[np.ndarray], np.ndarray]:
    """Statistic: quantiles (inverted CDF) of per-sample values, each sample weighted by how often
    its case was drawn. NaN values are left out."""
    keep = ~np.isnan(values)
    order = np.argsort(values[keep], kind="stable")
    sorted_vals = values[keep][order]
    sorted_case = sample_case[keep][order]
    qs_arr = np.asarray(qs, dtype=float)
    s = len(sorted_vals)
    n = int(sample_case.max()) + 1 if len(sample_case) else 0
    per_case = np.bincount(sorted_case, minlength=n).astype(float) if s else np.zeros(n)
    n_eff = max(1, int((per_case > 0).sum()))
    # Window of sorted positions per quantile where the replicates' quantiles fall: ±4 standard
    # errors of a quantile, counting only cases as independent (conservative under clustering).
    # Only the window is cumulated (the samples below it enter as one matrix-vector product);
    # the rare replicate whose quantile falls outside is recomputed over all samples.
    windows = []
    for q in qs_arr:
        w = min(0.5, 4 * np.sqrt(q * (1 - q) / n_eff) + 2 / max(s, 1))
        lo = int(np.clip(np.floor((q - w) * s), 0, s))
        hi = int(np.clip(np.ceil((q + w) * s), lo, s))
        below = np.bincount(sorted_case[:lo], minlength=n).astype(float)
        windows.append((lo, hi, below))

    def full(counts: np.ndarray, q: float) -> np.ndarray:
        cum = np.cumsum(np.take(counts, sorted_case, axis=1), axis=1)
        k = (cum < (q * cum[:, -1])[:, None]).sum(axis=1)
        return sorted_vals[np.minimum(k, s - 1)]

    def fn(counts: np.ndarray) -> np.ndarray:
        out = np.full((len(counts), len(qs_arr)), np.nan)
        if s == 0:
            return out
        total = _cdot(counts, per_case)
        for j, (q, (lo, hi, below)) in enumerate(zip(qs_arr, windows, strict=False)):
            target = q * total
            base = _cdot(counts, below)
            cum = base[:, None] + np.cumsum(np.take(counts, sorted_case[lo:hi], axis=1), axis=1)
            k = lo + (cum < target[:, None]).sum(axis=1)
            inside = (base < target) & (k < hi) if hi > lo else np.zeros(len(counts), bool)
            out[inside, j] = sorted_vals[k[inside]]
            redo = ~inside & (total > 0)
            if redo.any():
                out[redo, j] = full(counts[redo], q)
        out[total == 0] = np.nan
        return out

    return fn


def weighted_ratio(values: np.ndarray, sample_case: np.ndarray, n: int) -> Callable[[np.ndarray], np.ndarray]:
    """Statistic: mean per sample of per-sample values (NaN left out) over the drawn cases."""
    keep = ~np.isnan(values)
    tot = np.bincount(sample_case[keep], weights=values[keep], minlength=n)
    cnt = np.bincount(sample_case[keep], minlength=n).astype(float)

    def fn(counts: np.ndarray) -> np.ndarray:
        den = _cdot(counts, cnt)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, _cdot(counts, tot) / np.where(den > 0, den, 1.0), np.nan)

    return fn


def expanded_alpha(alpha: float, n: int) -> float:
    """Hesterberg's expanded-percentile level: the two-sided α to use on the bootstrap
    percentiles so that a mean over n cases gets t-like small-sample coverage."""
    if n < 2:
        return alpha
    t = sps.t.ppf(1 - alpha / 2, n - 1)
    return float(2 * sps.norm.cdf(-np.sqrt(n / (n - 1)) * t))


@dataclass
class BootEstimate:
    """A point estimate with its bootstrap replicates; intervals on demand at any level."""

    estimate: float | None
    replicates: np.ndarray | None  # (n_boot,) or None when there is nothing to resample
    n: int  # cases resampled

    def bound(self, one_sided_alpha: float, side: str) -> float | None:
        """The lower ("low") or upper ("high") confidence bound at a one-sided level."""
        if self.estimate is None or self.replicates is None or self.n < 2:
            return None
        reps = self.replicates[~np.isnan(self.replicates)]
        if len(reps) == 0:
            return None
        a = expanded_alpha(2 * one_sided_alpha, self.n) / 2
        q = a if side == "low" else 1 - a
        return float(np.quantile(reps, q))

    def interval(self, confidence: float) -> Interval:
        alpha = (1 - confidence) / 2
        return Interval(self.estimate, self.bound(alpha, "low"), self.bound(alpha, "high"), self.n)


# ---------------------------------------------------------------------------------------------
# The statistics


def _nanmean_cols(values: np.ndarray) -> list[float | None]:
    out: list[float | None] = []
    for j in range(values.shape[1]):
        col = values[:, j]
        col = col[~np.isnan(col)]
        out.append(float(col.mean()) if len(col) else None)
    return out


def run_statistics(run: RunTable, *, n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                   stream: int = _STREAM_CANDIDATE, quantiles: Sequence[float] = (0.5, 0.95)
                   ) -> dict[str, Any]:
    """One run's metric means, latency quantiles and cost per sample, all with bootstrap
    replicates over the same case resamples.

    Returns {"metrics": {metric: BootEstimate}, "latency": {"p50": ..., "p95": ...},
    "cost_per_sample": BootEstimate, "cost_total": float | None}.
    """
    n = run.n_cases
    means = run.case_means()
    lat_keep = ~np.isnan(run.latency_ms)
    cost_keep = ~np.isnan(run.cost_usd)
    stat_fns: list[Callable[[np.ndarray], np.ndarray]] = [weighted_means(means)]
    if lat_keep.any():
        stat_fns.append(weighted_quantiles(run.latency_ms, run.sample_case, quantiles))
    if cost_keep.any():
        stat_fns.append(weighted_ratio(run.cost_usd, run.sample_case, n))
    reps: list[np.ndarray | None] = [None] * len(stat_fns)
    if n >= 2 and n_boot > 0:
        reps = list(bootstrap(n, n_boot, rng_for(seed, stream), stat_fns))

    out: dict[str, Any] = {"metrics": {}, "latency": {}, "cost_per_sample": BootEstimate(None, None, 0),
                           "cost_total": None}
    for j, (m, est) in enumerate(zip(run.metrics, _nanmean_cols(means), strict=False)):
        n_m = int((run.metric_count[:, j] > 0).sum())
        out["metrics"][m] = BootEstimate(est, None if reps[0] is None else reps[0][:, j], n_m)
    k = 1
    names = [f"p{round(q * 100):d}" for q in quantiles]
    if lat_keep.any():
        vals = run.latency_ms[lat_keep]
        n_lat = int(len(np.unique(run.sample_case[lat_keep])))
        lat_reps = reps[k]
        for j, (name, q) in enumerate(zip(names, quantiles, strict=False)):
            est = float(np.quantile(vals, q, method="inverted_cdf"))
            out["latency"][name] = BootEstimate(est, None if lat_reps is None else lat_reps[:, j], n_lat)
        k += 1
    else:
        for name in names:
            out["latency"][name] = BootEstimate(None, None, 0)
    if cost_keep.any():
        vals = run.cost_usd[cost_keep]
        n_cost = int(len(np.unique(run.sample_case[cost_keep])))
        cost_reps = reps[k]
        out["cost_per_sample"] = BootEstimate(float(vals.mean()), None if cost_reps is None else cost_reps[:, 0], n_cost)
        out["cost_total"] = float(vals.sum())
    return out


def paired_differences(candidate: RunTable, baseline: RunTable, *, n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                       metrics: Sequence[str] | None = None) -> dict[str, BootEstimate]:
    """Per metric, the mean over the cases both runs scored of (candidate − baseline case mean),
    with replicates from resampling those common cases jointly (one count matrix for all
    metrics, so their replicates are also jointly distributed)."""
    if metrics is None:
        metrics = sorted(set(candidate.metrics) & set(baseline.metrics))
    metrics = list(metrics)
    common, ci, bi = np.intersect1d(candidate.case_ids, baseline.case_ids, return_indices=True)
    n = len(common)
    d = np.full((n, len(metrics)), np.nan)
    cm, bm = candidate.case_means(), baseline.case_means()
    for j, m in enumerate(metrics):
        if m in candidate.metrics and m in baseline.metrics:
            d[:, j] = cm[ci, candidate.metrics.index(m)] - bm[bi, baseline.metrics.index(m)]
    reps = None
    if n >= 2 and n_boot > 0 and len(metrics):
        reps = bootstrap(n, n_boot, rng_for(seed, _STREAM_PAIRED), [weighted_means(d)])[0]
    out = {}
    for j, (m, est) in enumerate(zip(metrics, _nanmean_cols(d), strict=False)):
        n_m = int((~np.isnan(d[:, j])).sum())
        out[m] = BootEstimate(est, None if reps is None else reps[:, j], n_m)
    return out


def common_cases(candidate: RunTable, baseline: RunTable | None) -> int:
    """How many cases both runs ran."""
    if baseline is None:
        return 0
    return int(len(np.intersect1d(candidate.case_ids, baseline.case_ids)))


@dataclass
class CaseOutcomes:
    pass_rates: dict[str, float]  # candidate: case -> share of samples passing every metric
    flaky: list[CaseChange]  # mixed results across the candidate's samples
    newly_failing: list[CaseChange]  # passed every baseline sample, fails most candidate samples
    newly_passing: list[CaseChange]  # failed most baseline samples, passes every candidate sample


def case_outcomes(candidate: RunTable, baseline: RunTable | None) -> CaseOutcomes:
    """Per-case pass rates, flaky cases and the cases whose outcome changed.

    A case passes a sample when every metric passed (and the sample has no error). Flaky: the
    candidate's samples of the case disagree. Newly failing: the case passed every baseline
    sample and fails the majority of the candidate's; newly passing: the reverse (failed the
    majority of the baseline's, passes every candidate sample). Changes inside the noise of a
    few samples (3/3 → 2/3) are not "new" failures; they show up as flaky.
    """
    rates = candidate.pass_rates()
    base_rates: dict[str, float] = {}
    if baseline is not None:
        base_rates = dict(zip(baseline.case_ids.tolist(), baseline.pass_rates().tolist(), strict=False))
    pass_rates = dict(zip(candidate.case_ids.tolist(), rates.tolist(), strict=False))
    flaky, newly_failing, newly_passing = [], [], []
    for cid, r in pass_rates.items():
        b = base_rates.get(cid)
        if 0 < r < 1:
            flaky.append(CaseChange(cid, b, r, candidate.fail_output.get(cid)))
        if b is None:
            continue
        if b == 1.0 and r < 0.5:
            newly_failing.append(CaseChange(cid, b, r, candidate.fail_output.get(cid)))
        elif b < 0.5 and r == 1.0:
            newly_passing.append(CaseChange(cid, b, r, candidate.pass_output.get(cid)))
    return CaseOutcomes(pass_rates, flaky, newly_failing, newly_passing)


@dataclass
class GateStats:
    """Everything the decision needs, computed once."""

    candidate: RunTable
    baseline: RunTable | None
    candidate_stats: dict[str, Any]
    baseline_stats: dict[str, Any] | None
    deltas: dict[str, BootEstimate]
    common_cases: int
    outcomes: CaseOutcomes
    n_boot: int
    seed: int


def compute(candidate_df: pd.DataFrame, baseline_df: pd.DataFrame | None, *, n_boot: int = DEFAULT_N_BOOT,
            seed: int = 0, metrics: Sequence[str] | None = None) -> GateStats:
    """All statistics of a gate: candidate and baseline means, latency and cost with their
    replicates, the paired differences on the common cases, and the case outcomes."""
    cand = prepare(candidate_df)
    base = prepare(baseline_df) if baseline_df is not None else None
    cstats = run_statistics(cand, n_boot=n_boot, seed=seed, stream=_STREAM_CANDIDATE)
    bstats = run_statistics(base, n_boot=n_boot, seed=seed, stream=_STREAM_BASELINE) if base is not None else None
    deltas = paired_differences(cand, base, n_boot=n_boot, seed=seed, metrics=metrics) if base is not None else {}
    return GateStats(cand, base, cstats, bstats, deltas, common_cases(cand, base), case_outcomes(cand, base),
                     n_boot, seed)
