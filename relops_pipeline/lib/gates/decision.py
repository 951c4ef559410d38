"""The gate's decision: SHIP, BLOCK or REVIEW (or INVALID evidence), one rule at a time, with human reasons.

The rule (every interval is a case bootstrap, see stats.py; c = thresholds.confidence, 95% by
default; "points" are hundredths of a score in [0, 1]):

- BLOCK when any of these holds (and the evidence gate below is open):
  * regression:<metric> — the paired difference candidate − baseline is significantly below 0
    (its upper confidence bound < 0) AND its estimate is below −allowed_regression (default
    0.02). The upper bound is one-sided at (1 − c)/2 divided by the number k of BLOCK tests
    (Bonferroni over gating metrics + floors + budgets): BLOCK fires when ANY test fires, so
    without the correction a release with m healthy metrics would be blocked m times as often
    as the nominal 2.5%. With one metric and no floors/budgets this is exactly "the 95% CI lies
    below zero". A SHIP needs ALL its conditions (an intersection-union test), so the SHIP side
    needs no correction: each condition alone already bounds the chance of shipping a release
    that breaks it.
  * floor:<metric> — the candidate's mean is confidently below the floor (upper bound, same
    corrected level, below it).
  * budget:latency_p95 / budget:cost — the candidate's latency p95 / mean cost per sample is
    confidently over budget (lower bound, corrected level, above it).
  * must_pass — a must-pass case failed a candidate sample, is not known to fail in the
    baseline (it passed every baseline sample, the baseline did not run it, or there is no
    baseline: must pass means must pass), AND the failure is confirmed. Where a runner exists,
    of thresholds.resamples (default 5) extra samples from `resample(case_id, n)` the majority
    fail; an occasional failure in the re-samples is a flaky case (REVIEW). Without a runner
    (`resample` is None, e.g. an imported promptfoo/Inspect/JSONL run), with resamples = 0 or
    when re-sampling fails, the run's own k samples are the re-samples: failing every one of
    k >= 2 confirms it; a failure among passes is flaky (REVIEW); a single sample (k = 1) cannot
    confirm anything (REVIEW). A confirmed must-pass failure is a fact about one case, not an
    estimate from the suite, so it BLOCKs even with fewer cases than min_cases.
    Floors, budgets and regressions are judged on the corrected bound, and their messages show
    the corrected interval (e.g. "98.3% CI, corrected for 3 comparisons"); the SHIP side uses
    the plain c-level interval, shown as such.
- SHIP when every rule passes: at least min_cases cases (counted on the cases both runs ran)
  and min_samples_per_case samples, a valid run, a baseline, for every gating metric the lower
  bound of the c-level CI of the paired difference above −tolerated_regression (default 0.05),
  every floor confidently met (lower bound ≥ floor), every budget confidently met (upper bound
  ≤ budget), and every must-pass case passing all its candidate samples.
- REVIEW otherwise. Too little evidence is ALWAYS REVIEW: with it any rule that would block
  (except a confirmed must-pass failure) is reported as "would BLOCK" and downgraded to REVIEW
  (an interval from 20 cases is not trusted to block or to ship). No baseline is REVIEW
  (floors, budgets and must-pass cases can still block). A must-pass case failing in the
  baseline too is REVIEW: fix the case or the workflow.
- INVALID when the candidate's eval run is invalid (e.g. the endpoint was down and most samples
  errored): that is not a decision but an error. Its figures are still computed for the report,
  its reasons name the top error causes, the CLI exits 3 and the release cannot be approved or
  overridden: re-run the evals.

So the decision is INVALID iff some rule's outcome is "error" (only run:valid), else BLOCK iff
some rule's outcome is "block", SHIP iff every rule's outcome is "pass", and REVIEW otherwise.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pandas as pd

from relops_pipeline.lib.gates import stats
from relops_pipeline.lib.gates.model import (
    Decision,
    GateResult,
    Interval,
    MetricEvidence,
    MustPassCase,
    RuleResult,
    Thresholds,
)

Resample = Callable[[str, int], list[bool]]

EVIDENCE_RULES = ("evidence:min_cases", "evidence:min_samples", "run:valid")


# ---------------------------------------------------------------------------------------------
# Formatting


def _minus(s: str) -> str:
    return s.replace("-", "\u2212")


def _pts(x: float | None, signed: bool = True) -> str:
    """A difference of scores in points (×100), with a real minus sign."""
    if x is None:
        return "n/a"
    v = round(x * 100, 1)
    if v == 0:
        return "0.0"
    return _minus(f"{v:+.1f}" if signed else f"{v:.1f}")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.1f}%"


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f} ms"


def _usd(x: float | None) -> str:
    return "n/a" if x is None else f"${x:.3g}"


def _ci(iv: Interval, fmt: Callable[[float | None], str], conf: float) -> str:
    return f"{conf:.0%} CI {fmt(iv.low)} to {fmt(iv.high)}"


def _level(x: float) -> str:
    """A confidence level as a percentage, with a decimal only when it needs one (95%, 98.3%)."""
    v = round(x * 100, 1)
    return f"{v:.0f}%" if v == int(v) else f"{v:.1f}%"


def _block_ci(
    est: stats.BootEstimate, alpha_block: float, tests: int, corrected: bool, fmt: Callable[[float | None], str]
) -> tuple[str, float | None, float | None]:
    """The interval the BLOCK test uses — two-sided at 1 − 2·alpha_block, i.e. corrected for
    `tests` comparisons when `corrected` — as text, with its bounds."""
    low, high = est.bound(alpha_block, "low"), est.bound(alpha_block, "high")
    label = f"{_level(1 - 2 * alpha_block)} CI"
    if corrected:
        label += f", corrected for {tests} comparisons:"
    return f"{label} {fmt(low)} to {fmt(high)}", low, high


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# ---------------------------------------------------------------------------------------------
# Must-pass cases


def _must_pass(st: stats.GateStats, cases: set[str], resample: Resample | None, n_resample: int) -> tuple[RuleResult, list[MustPassCase]]:
    cand, base = st.candidate, st.baseline
    cidx = cand.index()
    bidx = base.index() if base is not None else {}
    out: list[MustPassCase] = []
    confirmed, review_msgs = [], []
    passing = 0
    for cid in sorted(cases):
        i = cidx.get(cid)
        if i is None:
            out.append(MustPassCase(cid, 0, 0, None, None, verdict="missing"))
            review_msgs.append(f"must-pass case {cid} has no samples in the candidate run")
            continue
        n_c, f_c = int(cand.samples[i]), int(cand.failed[i])
        if f_c == 0:
            passing += 1
            continue
        j = bidx.get(cid)
        # j is only ever set when there is a baseline (bidx is empty otherwise)
        n_b = int(base.samples[j]) if base is not None and j is not None else None
        f_b = int(base.failed[j]) if base is not None and j is not None else None
        mp = MustPassCase(
            cid, f_c, n_c, f_b, n_b, example_output=cand.fail_output.get(cid), failed_metrics=list(cand.failed_metrics.get(cid, []))
        )
        out.append(mp)
        what = f"must-pass case {cid} failed {f_c}/{n_c} candidate samples"
        if mp.failed_metrics:
            what += f" ({', '.join(mp.failed_metrics)})"
        before = (
            f"after passing all {n_b} baseline samples"
            if j is not None
            else "which the baseline did not run"
            if base is not None and base.n_cases
            else "with no baseline to compare with"
        )
        if j is not None and f_b == n_b:
            mp.verdict = "failing_in_baseline"
            review_msgs.append(f"{what} and all {n_b} baseline samples too: fix the case or the workflow")
            continue
        if j is not None and f_b:
            mp.verdict = "flaky_in_baseline"
            review_msgs.append(f"{what} and is flaky in the baseline too ({f_b}/{n_b} failed): fix the case or the workflow")
            continue
        # Passing every baseline sample, a new case, or no baseline at all: a must-pass case must
        # pass, so a confirmed failure blocks whatever the baseline did.
        not_confirmed = None
        if resample is not None and n_resample > 0:
            try:
                mp.resamples = [bool(x) for x in resample(cid, n_resample)]
                err = None
            except Exception as exc:  # noqa: BLE001 - a failing runner must not lose the gate
                err = f"{type(exc).__name__}: {exc}"
            fails = sum(1 for x in mp.resamples if not x)
            if err is None and mp.resamples:
                if 2 * fails > len(mp.resamples):
                    mp.verdict = "confirmed"
                    confirmed.append(f"{what} and {fails}/{len(mp.resamples)} re-samples, {before}")
                else:
                    mp.verdict = "flaky_in_candidate"
                    review_msgs.append(f"{what} {before}, but failed only {fails}/{len(mp.resamples)} re-samples: flaky in the candidate")
                continue
            not_confirmed = f"re-sampling failed ({err or 'no samples returned'})"
        elif resample is None:
            not_confirmed = "there is no runner to re-sample it (e.g. an imported run)"
        else:
            not_confirmed = "re-sampling is off"
        # Without re-samples the run's own samples are the re-samples: failing every one of
        # k >= 2 of them confirms the failure; a failure among passes is a flaky case.
        if f_c == n_c and n_c >= 2:
            mp.verdict = "confirmed"
            confirmed.append(
                f"{what} {before}: every one of its {n_c} samples failed, which confirms it "
                f"({not_confirmed}, so its samples are the re-samples)"
            )
        elif f_c < n_c:
            mp.verdict = "flaky_in_candidate"
            review_msgs.append(f"{what} {before}, and passed the other {n_c - f_c}: flaky in the candidate ({not_confirmed})")
        else:
            mp.verdict = "not_resampled"
            review_msgs.append(
                f"{what} {before}, but a single sample cannot confirm a failure and "
                f"{not_confirmed}: evaluate with at least 2 samples per case"
            )
    details = {
        "cases": len(cases),
        "passing": passing,
        "confirmed": [m.case_id for m in out if m.verdict == "confirmed"],
        "unresolved": [m.case_id for m in out if m.verdict != "confirmed"],
    }
    if confirmed:
        msg = "; ".join(confirmed)
        if review_msgs:
            msg += "; also " + "; ".join(review_msgs)
        return RuleResult("must_pass", "block", msg, details), out
    if review_msgs:
        return RuleResult("must_pass", "review", "; ".join(review_msgs), details), out
    if not cases:
        return RuleResult("must_pass", "pass", "the suite has no must-pass cases", details), out
    return RuleResult("must_pass", "pass", f"all {_plural(len(cases), 'must-pass case')} passed every sample", details), out


# ---------------------------------------------------------------------------------------------
# The decision


def decide(
    candidate_df: pd.DataFrame,
    baseline_df: pd.DataFrame | None,
    thresholds: Thresholds,
    *,
    must_pass_cases: set[str],
    resample: Resample | None,
    run_valid: bool,
    invalid_reason: str | None,
    error_causes: list[str] | None = None,
    workflow: str,
    version: str,
    baseline_version: str | None,
    evidence: dict[str, Any],
    diff: dict[str, Any] | None,
    seed: int | None,
    n_boot: int = stats.DEFAULT_N_BOOT,
    multiplicity: Literal["bonferroni", "none"] = "bonferroni",
) -> GateResult:
    """Decide SHIP / BLOCK / REVIEW for a candidate eval run against a baseline (see the module
    docstring for the rule). Frames are long-format eval runs (stats.run_frame). `resample`
    draws n more samples of a case from the candidate and returns pass/fail per sample (None:
    no runner). seed None derives a stable seed from workflow and version; the seed and the
    number of bootstrap resamples are recorded in the evidence. `error_causes`: the candidate
    run's top error causes as text ("118 of 120 samples: ConnectError ..."), named in the
    reasons of an INVALID run."""
    if seed is None:
        seed = zlib.crc32(f"{workflow}\x00{version}".encode()) & 0x7FFFFFFF
    conf = float(thresholds.confidence)
    tol = float(thresholds.tolerated_regression)
    st = stats.compute(candidate_df, baseline_df, n_boot=n_boot, seed=seed, metrics=thresholds.metrics)
    cand = st.candidate
    # the baseline, when there is one with cases (None otherwise)
    base = st.baseline if st.baseline is not None and st.baseline.n_cases > 0 else None
    has_base = base is not None
    cm = st.candidate_stats["metrics"]
    bm = st.baseline_stats["metrics"] if st.baseline_stats is not None else {}

    if thresholds.metrics is not None:
        gating = list(thresholds.metrics)
    elif base is not None:
        gating = sorted(set(cand.metrics) & set(base.metrics))
    else:
        gating = list(cand.metrics)
    budgets = [b for b in (thresholds.latency_p95_budget_ms, thresholds.cost_per_sample_budget_usd) if b is not None]
    n_tests = max(1, (len(gating) if has_base else 0) + len(thresholds.floors) + len(budgets))
    alpha1 = (1 - conf) / 2  # one-sided level of the c-level two-sided interval
    alpha_block = alpha1 / n_tests if multiplicity == "bonferroni" else alpha1
    corrected = multiplicity == "bonferroni" and n_tests > 1
    ci = f"{conf:.0%} CI"

    rules: list[RuleResult] = []
    verdicts: dict[str, list[str]] = {}
    notes: dict[str, list[str]] = {}

    # --- evidence, validity, baseline
    n_cases = cand.n_cases
    n_common = st.common_cases if has_base else None
    effective = min(n_cases, n_common) if n_common is not None else n_cases
    counted = f"{effective} cases" + (" in common with the baseline" if n_common is not None and n_common < n_cases else "")
    if effective >= thresholds.min_cases:
        rules.append(
            RuleResult(
                "evidence:min_cases",
                "pass",
                f"{counted} (minimum {thresholds.min_cases})",
                {"cases": n_cases, "common_cases": n_common, "min_cases": thresholds.min_cases},
            )
        )
    else:
        rules.append(
            RuleResult(
                "evidence:min_cases",
                "review",
                f"too little evidence: only {counted}, at least {thresholds.min_cases} are needed before a release can ship",
                {"cases": n_cases, "common_cases": n_common, "min_cases": thresholds.min_cases},
            )
        )
    min_s = int(cand.samples.min()) if n_cases else 0
    short = int((cand.samples < thresholds.min_samples_per_case).sum())
    if n_cases and min_s >= thresholds.min_samples_per_case:
        rules.append(
            RuleResult(
                "evidence:min_samples",
                "pass",
                f"every case has at least {min_s} samples (minimum {thresholds.min_samples_per_case})",
                {"min_samples": min_s, "required": thresholds.min_samples_per_case},
            )
        )
    else:
        msg = (
            f"too little evidence: {_plural(short, 'case')} with fewer than {thresholds.min_samples_per_case} samples"
            if n_cases
            else "too little evidence: the candidate run has no samples"
        )
        rules.append(
            RuleResult(
                "evidence:min_samples",
                "review",
                msg,
                {"min_samples": min_s, "required": thresholds.min_samples_per_case, "short_cases": short},
            )
        )
    causes = list(error_causes or [])
    if run_valid:
        rules.append(RuleResult("run:valid", "pass", "the candidate's eval run is valid"))
    else:
        rules.append(
            RuleResult(
                "run:valid",
                "error",
                f"the candidate's eval run is invalid ({invalid_reason or 'no reason recorded'})"
                + (f" — {'; '.join(causes)}" if causes else "")
                + ": its figures cannot decide the release; fix the cause and re-run the evals",
                {"invalid_reason": invalid_reason, "error_causes": causes},
            )
        )
    if base is None:
        rules.append(
            RuleResult(
                "baseline:present",
                "review",
                "no baseline to compare with (the workflow has no live release and no --baseline "
                "was given): regressions cannot be measured, so the release needs a review",
            )
        )
    elif n_common == 0:
        rules.append(
            RuleResult(
                "baseline:present",
                "review",
                f"the baseline {baseline_version or ''} shares no case with the candidate "
                f"(a different suite?): regressions cannot be measured".replace("  ", " "),
                {"baseline_cases": base.n_cases, "common_cases": 0},
            )
        )
    else:
        rules.append(
            RuleResult(
                "baseline:present",
                "pass",
                f"baseline {baseline_version or '(unnamed)'}: {base.n_cases} cases, {n_common} in common",
                {"baseline_cases": base.n_cases, "common_cases": n_common},
            )
        )

    # --- regression and tolerance per gating metric
    for m in gating:
        verdicts.setdefault(m, [])
        if not has_base or n_common == 0:
            detail = {"skipped": "no baseline"}
            rules.append(RuleResult(f"regression:{m}", "review", f"{m}: no baseline to compare with", detail))
            rules.append(RuleResult(f"tolerance:{m}", "review", f"{m}: no baseline to compare with", detail))
            verdicts[m].append("no_baseline")
            continue
        d = st.deltas.get(m)
        if d is None or d.estimate is None:
            where = "candidate" if m not in cand.metrics else "baseline"
            msg = f"{m} was not scored in the {where}, so it cannot be compared"
            rules.append(RuleResult(f"regression:{m}", "review", msg, {"missing_in": where}))
            rules.append(RuleResult(f"tolerance:{m}", "review", msg, {"missing_in": where, "skipped": "duplicate"}))
            verdicts[m].append("missing")
            continue
        iv = d.interval(conf)
        if iv.low is None:
            msg = f"{m}: only {d.n} case(s) in common, too few for an interval"
            rules.append(RuleResult(f"regression:{m}", "review", msg))
            rules.append(RuleResult(f"tolerance:{m}", "review", msg, {"skipped": "duplicate"}))
            verdicts[m].append("inconclusive")
            continue
        allowed = thresholds.allowed_for(m)
        # The BLOCK test's own interval (corrected): the regression messages show it, so the
        # interval shown always agrees with the verdict; the tolerance (SHIP) side shows the plain one.
        block_ci, lower_c, upper = _block_ci(d, alpha_block, n_tests, corrected, _pts)
        det = {
            "estimate": d.estimate,
            "low": iv.low,
            "high": iv.high,
            "n": d.n,
            "allowed": allowed,
            "tolerated": tol,
            "upper_bound_for_block": upper,
            "block_level": alpha_block,
            "tests": n_tests,
            "corrected_low": lower_c,
            "corrected_high": upper,
            "corrected_level": 1 - 2 * alpha_block,
        }
        shown = f"({block_ci})"
        plain = f"({ci} {_pts(iv.low)} to {_pts(iv.high)})"
        if upper is not None and upper < 0 and d.estimate < -allowed:
            rules.append(
                RuleResult(
                    f"regression:{m}",
                    "block",
                    f"{m} regressed by {_pts(-d.estimate, False)} points {shown}, more than the allowed {_pts(allowed, False)}",
                    det,
                )
            )
            verdicts[m].append("regression")
        elif upper is not None and upper < 0:
            rules.append(
                RuleResult(
                    f"regression:{m}",
                    "pass",
                    f"{m} regressed by {_pts(-d.estimate, False)} points {shown}: significant but "
                    f"within the allowed {_pts(allowed, False)}",
                    det,
                )
            )
        else:
            rules.append(
                RuleResult(f"regression:{m}", "pass", f"{m} changed by {_pts(d.estimate)} points {shown}: no significant regression", det)
            )
        if iv.low > -tol:
            rules.append(
                RuleResult(
                    f"tolerance:{m}",
                    "pass",
                    f"{m}: any regression is smaller than the tolerated {_pts(tol, False)} points (lower bound {_pts(iv.low)})",
                    det,
                )
            )
            verdicts[m].append("ok")
        else:
            rules.append(
                RuleResult(
                    f"tolerance:{m}",
                    "review",
                    f"{m} changed by {_pts(d.estimate)} points {plain}: a regression of more than "
                    f"the tolerated {_pts(tol, False)} cannot be ruled out",
                    det,
                )
            )
            verdicts[m].append("inconclusive")
        if d.n != n_cases:
            notes.setdefault(m, []).append(f"delta on the {d.n} cases both runs scored")
        if corrected:
            notes.setdefault(m, []).append(f"regression judged on the {block_ci} (Bonferroni)")

    # --- floors
    for m, floor in sorted(thresholds.floors.items()):
        verdicts.setdefault(m, [])
        e = cm.get(m)
        if e is None or e.estimate is None:
            rules.append(RuleResult(f"floor:{m}", "review", f"{m} has a floor of {_pct(floor)} but was not scored", {"floor": floor}))
            verdicts[m].append("missing")
            continue
        iv = e.interval(conf)
        block_ci, lower_c, upper = _block_ci(e, alpha_block, n_tests, corrected, _pct)
        det = {
            "estimate": e.estimate,
            "low": iv.low,
            "high": iv.high,
            "floor": floor,
            "upper_bound_for_block": upper,
            "corrected_low": lower_c,
            "corrected_high": upper,
            "corrected_level": 1 - 2 * alpha_block,
        }
        # Each message shows the interval its verdict was read from: BLOCK and "cannot tell"
        # the corrected one (its upper bound is the BLOCK test), a pass the plain c-level one.
        if upper is not None and upper < floor:
            rules.append(RuleResult(f"floor:{m}", "block", f"{m} is {_pct(e.estimate)} ({block_ci}), below its floor {_pct(floor)}", det))
            verdicts[m].append("floor_missed")
        elif iv.low is not None and iv.low >= floor:
            rules.append(
                RuleResult(f"floor:{m}", "pass", f"{m} is {_pct(e.estimate)} ({_ci(iv, _pct, conf)}), above its floor {_pct(floor)}", det)
            )
        else:
            rules.append(
                RuleResult(
                    f"floor:{m}",
                    "review",
                    f"{m} is {_pct(e.estimate)} ({block_ci}): cannot tell yet whether it meets its floor {_pct(floor)}",
                    det,
                )
            )
            verdicts[m].append("floor_unclear")
        if corrected and not (iv.low is not None and iv.low >= floor):
            notes.setdefault(m, []).append(f"floor judged on the {block_ci} (Bonferroni)")

    # --- budgets
    def budget(rule: str, what: str, est: stats.BootEstimate, limit: float | None, fmt) -> None:
        if limit is None:
            rules.append(RuleResult(rule, "pass", f"no {what} budget set", {"configured": False}))
            return
        if est.estimate is None:
            rules.append(
                RuleResult(
                    rule, "review", f"no {what} recorded to check against the budget {fmt(limit)}", {"configured": True, "budget": limit}
                )
            )
            return
        iv = est.interval(conf)
        block_ci, lower, upper_c = _block_ci(est, alpha_block, n_tests, corrected, fmt)
        det = {
            "configured": True,
            "budget": limit,
            "estimate": est.estimate,
            "low": iv.low,
            "high": iv.high,
            "lower_bound_for_block": lower,
            "corrected_low": lower,
            "corrected_high": upper_c,
            "corrected_level": 1 - 2 * alpha_block,
        }
        shown = f"{what} is {fmt(est.estimate)}"
        if lower is not None and lower > limit:
            rules.append(RuleResult(rule, "block", f"{shown} ({block_ci}), over the budget {fmt(limit)}", det))
        elif iv.high is not None and iv.high <= limit:
            rules.append(RuleResult(rule, "pass", f"{shown} ({_ci(iv, fmt, conf)}), within the budget {fmt(limit)}", det))
        else:
            rules.append(
                RuleResult(rule, "review", f"{shown} ({block_ci}): cannot tell yet whether it is within the budget {fmt(limit)}", det)
            )

    budget("budget:latency_p95", "latency p95", st.candidate_stats["latency"]["p95"], thresholds.latency_p95_budget_ms, _ms)
    budget("budget:cost", "cost per sample", st.candidate_stats["cost_per_sample"], thresholds.cost_per_sample_budget_usd, _usd)

    # --- must-pass
    mp_rule, mp_cases = _must_pass(st, set(must_pass_cases), resample, int(thresholds.resamples))
    rules.append(mp_rule)

    # --- the decision
    gate_closed = [r for r in rules if r.rule in EVIDENCE_RULES and r.outcome != "pass"]
    invalid = [r for r in rules if r.outcome == "error"]
    if gate_closed:
        for r in rules:
            # A confirmed must-pass failure is a fact about its case, not an estimate from too
            # few cases: it keeps blocking (on a valid run).
            if r.outcome == "block" and (invalid or r.rule != "must_pass"):
                r.outcome = "review"
                r.details["would_block"] = True
                r.message = f"would BLOCK with enough valid evidence: {r.message}"
    reasons: list[str]
    decision: Decision
    blocks = [r for r in rules if r.outcome == "block"]
    reviews = [r for r in rules if r.outcome == "review" and r.details.get("skipped") is None]
    if invalid:
        # Not a decision: the evidence is broken. The reasons say why and what to do.
        decision = "INVALID"
        reasons = [r.message for r in invalid]
    elif blocks:
        decision = "BLOCK"
        reasons = [r.message for r in blocks]
    elif reviews or any(r.outcome != "pass" for r in rules):
        decision = "REVIEW"
        first = [r for r in reviews if r.details.get("would_block")]
        reasons = (
            [r.message for r in gate_closed]
            + [r.message for r in first]
            + [r.message for r in reviews if r not in gate_closed and r not in first]
        )
    else:
        decision = "SHIP"
        worst = None
        for m in gating:
            d = st.deltas.get(m)
            if d is not None and d.estimate is not None:
                low = d.interval(conf).low
                # under SHIP every gating metric's lower bound exists (else its tolerance rule is REVIEW)
                if low is not None and (worst is None or low < worst[1]):
                    worst = (m, low)
        per_case = sorted(set(cand.samples.tolist()))
        shape = f"{n_cases} cases × {per_case[0]} samples" if len(per_case) == 1 else f"{n_cases} cases, {cand.n_samples} samples"
        msg = (
            f"every gating metric is within the tolerated regression of {_pts(tol, False)} points"
            + (f" (closest: {worst[0]}, lower bound {_pts(worst[1])})" if worst else "")
            + ", floors and budgets are met, and every must-pass case passed all its samples; "
            + f"{shape} against baseline {baseline_version or '(unnamed)'}"
        )
        reasons = [msg]

    # --- evidence per metric
    metric_names = list(dict.fromkeys([*gating, *sorted(thresholds.floors), *cand.metrics]))
    order = ("regression", "floor_missed", "missing", "no_baseline", "inconclusive", "floor_unclear", "ok")
    metrics_out: list[MetricEvidence] = []
    for m in metric_names:
        e = cm.get(m)
        cand_iv = e.interval(conf) if e is not None else Interval(None, None, None, 0)
        base_iv = bm[m].interval(conf) if has_base and m in bm else None
        d = st.deltas.get(m) if has_base else None
        delta_iv = d.interval(conf) if d is not None and d.estimate is not None else None
        vs = verdicts.get(m, [])
        verdict = next((v for v in order if v in vs), "not_gating" if m not in gating and not vs else "ok")
        metrics_out.append(
            MetricEvidence(
                metric=m,
                candidate=cand_iv,
                baseline=base_iv,
                delta=delta_iv,
                allowed_regression=thresholds.allowed_for(m),
                tolerated_regression=tol,
                floor=thresholds.floors.get(m),
                verdict=verdict,
                note="; ".join(notes.get(m, [])),
            )
        )

    cs, bs = st.candidate_stats, st.baseline_stats
    latency = {k: v.interval(conf) for k, v in cs["latency"].items()}
    cost = {"mean_per_sample": cs["cost_per_sample"].interval(conf), "total": Interval(cs["cost_total"], None, None, cand.n_samples)}
    if bs is not None and has_base:
        latency.update({f"baseline_{k}": v.interval(conf) for k, v in bs["latency"].items()})
        cost["baseline_mean_per_sample"] = bs["cost_per_sample"].interval(conf)

    ev = dict(evidence)
    ev.update(
        {
            "seed": int(seed),
            "n_boot": int(n_boot),
            "confidence": conf,
            "multiplicity": multiplicity,
            "block_tests": n_tests,
            "block_level_one_sided": alpha_block,
            "gating_metrics": gating,
            "cases": n_cases,
            "samples": cand.n_samples,
            "baseline_cases": base.n_cases if base is not None else None,
            "baseline_samples": base.n_samples if base is not None else None,
            "common_cases": n_common,
            "thresholds_version": thresholds.version,
        }
    )
    return GateResult(
        workflow=workflow,
        version=version,
        baseline_version=baseline_version,
        decision=decision,
        reasons=reasons,
        rules=rules,
        metrics=metrics_out,
        must_pass=mp_cases,
        flaky_cases=st.outcomes.flaky,
        newly_failing=st.outcomes.newly_failing,
        newly_passing=st.outcomes.newly_passing,
        latency_ms=latency,
        cost_usd=cost,
        evidence=_jsonable(ev),
        diff=diff,
    )


def _jsonable(obj: Any) -> Any:
    """numpy scalars to Python ones, so GateResult.as_dict() dumps as JSON."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj
