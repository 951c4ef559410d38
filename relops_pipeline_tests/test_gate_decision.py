"""The gate's decision: every path to SHIP, BLOCK and REVIEW, with its reasons."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from relops_pipeline.lib.gates.decision import _pts, decide
from relops_pipeline.lib.gates.model import Thresholds

N_BOOT = 1000


def run(
    cases: dict[str, list[bool]], *, metric: str = "correct", latency: float | None = None, cost: float | None = None, outputs: bool = True
) -> pd.DataFrame:
    """A long-format eval run: case -> pass/fail per sample (score 1/0)."""
    rows = []
    for cid, passes in cases.items():
        for k, ok in enumerate(passes):
            row = {"case_id": cid, "sample": k, "metric": metric, "score": 1.0 if ok else 0.0, "passed": ok}
            if latency is not None:
                row["latency_ms"] = latency + k
            if cost is not None:
                row["cost_usd"] = cost
            if outputs:
                row["output"] = f"<out {cid}/{k}>"
            rows.append(row)
    return pd.DataFrame(rows)


def suite(n: int, *, k: int = 3, failing: set[str] = frozenset(), mp_fail: dict[str, list[bool]] | None = None):
    """n regular cases (c00..) passing every sample except `failing` ones (failing every sample),
    plus must-pass cases mp0, mp1 passing every sample unless mp_fail says otherwise."""
    cases = {f"c{i:03d}": [f"c{i:03d}" not in failing] * k for i in range(n)}
    for m in ("mp0", "mp1"):
        cases[m] = (mp_fail or {}).get(m, [True] * k)
    return cases


MUST = {"mp0", "mp1"}


def gate(cand, base, thresholds=None, **kw):
    args = dict(
        must_pass_cases=MUST,
        resample=None,
        run_valid=True,
        invalid_reason=None,
        workflow="wf",
        version="v2",
        baseline_version="v1",
        evidence={"candidate_run": "ev-2"},
        diff={"model": "x"},
        seed=7,
        n_boot=N_BOOT,
    )
    args.update(kw)
    return decide(cand, base, thresholds or Thresholds(), **args)


def rule(res, rule_id):
    return next(r for r in res.rules if r.rule == rule_id)


def test_ship_with_enough_evidence_and_nothing_changed():
    base = run(suite(60, failing={"c001", "c002"}))
    cand = run(suite(60, failing={"c001", "c002"}))
    res = gate(cand, base)
    assert res.decision == "SHIP"
    assert all(r.outcome == "pass" for r in res.rules)
    assert [r.rule for r in res.rules] == [
        "evidence:min_cases",
        "evidence:min_samples",
        "run:valid",
        "baseline:present",
        "regression:correct",
        "tolerance:correct",
        "budget:latency_p95",
        "budget:cost",
        "must_pass",
    ]
    assert "every gating metric is within the tolerated regression of 5.0 points" in res.reasons[0]
    assert "62 cases × 3 samples against baseline v1" in res.reasons[0]
    (m,) = res.metrics
    assert (m.metric, m.verdict) == ("correct", "ok")
    assert m.delta.estimate == 0 and m.delta.low == 0 and m.delta.high == 0
    assert res.evidence["candidate_run"] == "ev-2"
    assert (res.evidence["seed"], res.evidence["n_boot"], res.evidence["common_cases"]) == (7, N_BOOT, 62)
    assert res.diff == {"model": "x"}
    json.dumps(res.as_dict())


def test_block_on_a_significant_regression_larger_than_allowed():
    base = run(suite(100))
    failing = {f"c{i:03d}" for i in range(0, 100, 10)}  # 10 of 102 cases now fail every sample
    res = gate(run(suite(100, failing=failing)), base)
    assert res.decision == "BLOCK"
    r = rule(res, "regression:correct")
    assert r.outcome == "block"
    assert re.fullmatch(r"correct regressed by 9\.8 points \(95% CI −\d+\.\d to −\d+\.\d\), more than the allowed 2\.0", r.message), (
        r.message
    )
    assert r.details["high"] < 0 and r.details["estimate"] == pytest.approx(-10 / 102)
    assert res.reasons == [r.message]
    assert rule(res, "tolerance:correct").outcome == "review"  # lower bound below -5 too
    assert res.metrics[0].verdict == "regression"
    assert [c.case_id for c in res.newly_failing] == sorted(failing)
    assert res.newly_failing[0].example_output == "<out c000/0>"


def test_significant_regression_within_the_allowed_amount_does_not_block():
    base = run(suite(598))
    res = gate(run(suite(598, failing={f"c{i:03d}" for i in range(10)})), base)  # -1.7 points, significant
    reg = rule(res, "regression:correct")
    assert reg.outcome == "pass" and "significant but within the allowed 2.0" in reg.message
    assert res.decision == "SHIP"


def test_block_on_a_confirmed_must_pass_failure():
    calls = []

    def resample(case_id, n):
        calls.append((case_id, n))
        return [False] * n

    base = run(suite(60))
    cand = run(suite(60, mp_fail={"mp1": [True, False, True]}))
    res = gate(cand, base, resample=resample)
    assert res.decision == "BLOCK"
    assert calls == [("mp1", 5)]
    (mp,) = res.must_pass
    assert (mp.case_id, mp.verdict, mp.candidate_failed, mp.baseline_failed) == ("mp1", "confirmed", 1, 0)
    assert mp.resamples == [False] * 5
    assert mp.example_output == "<out mp1/1>"
    assert mp.failed_metrics == ["correct"]
    assert res.reasons == [
        "must-pass case mp1 failed 1/3 candidate samples (correct) and 5/5 re-samples, after passing all 3 baseline samples"
    ]


def test_review_when_the_must_pass_failure_does_not_reproduce():
    base = run(suite(60))
    cand = run(suite(60, mp_fail={"mp0": [False, True, True]}))
    res = gate(cand, base, resample=lambda c, n: [True, True, False, True, True][:n])
    assert res.decision == "REVIEW"
    assert res.must_pass[0].verdict == "flaky_in_candidate"
    assert "failed only 1/5 re-samples: flaky in the candidate" in rule(res, "must_pass").message


def test_block_without_a_runner_when_every_sample_of_a_must_pass_case_fails():
    # An imported run (no runner): its k = 3 samples are the re-samples. Used to be REVIEW,
    # "not confirmed: no runner to re-sample".
    base = run(suite(60))
    cand = run(suite(60, mp_fail={"mp0": [False, False, False]}))
    res = gate(cand, base, resample=None)
    assert res.decision == "BLOCK"
    assert res.must_pass[0].verdict == "confirmed" and res.must_pass[0].resamples == []
    assert res.reasons == [
        "must-pass case mp0 failed 3/3 candidate samples (correct) after passing all 3 baseline "
        "samples: every one of its 3 samples failed, which confirms it (there is no runner to "
        "re-sample it (e.g. an imported run), so its samples are the re-samples)"
    ]


def test_block_without_a_baseline_when_every_sample_of_a_must_pass_case_fails():
    # Must pass means must pass: no baseline is needed. Used to be REVIEW.
    cand = run(suite(60, mp_fail={"mp1": [False, False, False]}))
    res = gate(cand, None, baseline_version=None, resample=None)
    assert res.decision == "BLOCK"
    assert rule(res, "must_pass").outcome == "block"
    assert rule(res, "baseline:present").outcome == "review"
    assert res.reasons[0].startswith(
        "must-pass case mp1 failed 3/3 candidate samples (correct) with no baseline to compare with: every one of its 3 samples failed"
    )
    # and where a runner exists, without a baseline it is re-sampled (majority decides)
    calls = []
    res = gate(cand, None, baseline_version=None, resample=lambda c, n: calls.append(c) or [False] * n)
    assert res.decision == "BLOCK" and calls == ["mp1"] and res.must_pass[0].resamples == [False] * 5
    assert gate(cand, None, baseline_version=None, resample=lambda c, n: [True] * n).decision == "REVIEW"


def test_review_without_a_runner_when_one_sample_fails_among_passes():
    base = run(suite(60))
    cand = run(suite(60, mp_fail={"mp0": [True, False, True]}))
    res = gate(cand, base, resample=None)
    assert res.decision == "REVIEW"
    assert res.must_pass[0].verdict == "flaky_in_candidate"
    assert rule(res, "must_pass").message == (
        "must-pass case mp0 failed 1/3 candidate samples (correct) after passing all 3 baseline samples, and passed "
        "the other 2: flaky in the candidate (there is no runner to re-sample it (e.g. an imported run))"
    )


def test_review_without_a_runner_when_the_only_sample_fails():
    base = run(suite(60, k=1))
    cand = run(suite(60, k=1, mp_fail={"mp0": [False]}))
    res = gate(cand, base, resample=None)
    assert res.decision == "REVIEW"
    assert res.must_pass[0].verdict == "not_resampled"
    assert "a single sample cannot confirm a failure" in rule(res, "must_pass").message
    # with re-sampling off, a runner does not help either: the samples decide
    assert (
        gate(run(suite(60, mp_fail={"mp0": [False] * 3})), base, Thresholds(resamples=0), resample=lambda c, n: [True] * n).decision
        == "BLOCK"
    )


def test_failed_resampling_falls_back_to_the_samples():
    def broken(case_id, n):
        raise ConnectionError("runner down")

    base = run(suite(60))
    res = gate(run(suite(60, mp_fail={"mp0": [False] * 3})), base, resample=broken)
    assert res.decision == "BLOCK"
    assert "re-sampling failed (ConnectionError: runner down)" in rule(res, "must_pass").message
    res = gate(run(suite(60, mp_fail={"mp0": [False, True, True]})), base, resample=broken)
    assert res.decision == "REVIEW" and res.must_pass[0].verdict == "flaky_in_candidate"


def test_review_when_the_must_pass_case_is_flaky_in_the_baseline_too():
    def resample(case_id, n):
        raise AssertionError("no re-sampling needed: the baseline already failed this case")

    base = run(suite(60, mp_fail={"mp0": [True, False, True]}))
    cand = run(suite(60, mp_fail={"mp0": [False, False, False]}))
    res = gate(cand, base, resample=resample)
    assert res.decision == "REVIEW"
    assert res.must_pass[0].verdict == "flaky_in_baseline"
    assert res.reasons[0].endswith("is flaky in the baseline too (1/3 failed): fix the case or the workflow")


def test_review_with_too_little_evidence_even_when_a_rule_would_block():
    base = run(suite(18))  # 20 cases with the must-pass ones
    cand = run(suite(18, failing={f"c{i:03d}" for i in range(10)}))
    res = gate(cand, base, Thresholds(floors={"correct": 0.95}, allowed_regression={"*": 1.0}))
    assert res.decision == "REVIEW"
    assert res.reasons[0] == "too little evidence: only 20 cases, at least 30 are needed before a release can ship"
    fl = rule(res, "floor:correct")
    assert fl.outcome == "review" and fl.details["would_block"] is True
    assert res.reasons[1].startswith("would BLOCK with enough valid evidence: correct is 50.0%")


def test_a_confirmed_must_pass_failure_blocks_even_with_too_little_evidence():
    # A fact about one case, not an estimate from 20 cases.
    base = run(suite(18))
    cand = run(suite(18, mp_fail={"mp0": [False] * 3}))
    res = gate(cand, base, resample=lambda c, n: [False] * n)
    assert res.decision == "BLOCK"
    assert rule(res, "evidence:min_cases").outcome == "review"
    assert res.must_pass[0].verdict == "confirmed"
    assert res.reasons[0].startswith("must-pass case mp0 failed 3/3")


def test_too_little_evidence_never_ships():
    res = gate(run(suite(18)), run(suite(18)))
    assert res.decision == "REVIEW"
    assert [r.rule for r in res.rules if r.outcome != "pass"] == ["evidence:min_cases"]


def test_min_cases_counts_the_cases_in_common_with_the_baseline():
    base = run({f"x{i}": [True] * 3 for i in range(40)} | suite(8))
    res = gate(run(suite(60)), base)
    r = rule(res, "evidence:min_cases")
    assert r.outcome == "review"
    assert r.message.startswith("too little evidence: only 10 cases in common with the baseline")


def test_min_samples_per_case():
    res = gate(run(suite(60, k=1)), run(suite(60, k=1)), Thresholds(min_samples_per_case=3))
    assert res.decision == "REVIEW"
    assert rule(res, "evidence:min_samples").message == "too little evidence: 62 cases with fewer than 3 samples"


def test_review_without_a_baseline():
    res = gate(run(suite(60)), None, baseline_version=None)
    assert res.decision == "REVIEW"
    assert res.reasons == [
        "no baseline to compare with (the workflow has no live release and no --baseline was "
        "given): regressions cannot be measured, so the release needs a review"
    ]
    assert rule(res, "regression:correct").outcome == "review"
    assert res.metrics[0].verdict == "no_baseline" and res.metrics[0].delta is None


def test_an_invalid_run_is_invalid_not_a_review():
    res = gate(
        run(suite(60)),
        run(suite(60)),
        run_valid=False,
        invalid_reason="error rate 30.0% above the allowed 5.0%",
        error_causes=["18 of 60 samples: ConnectError: [Errno 111] Connection refused"],
    )
    assert res.decision == "INVALID"
    assert res.reasons == [
        "the candidate's eval run is invalid (error rate 30.0% above the allowed 5.0%) — 18 of 60 "
        "samples: ConnectError: [Errno 111] Connection refused: its figures cannot decide the "
        "release; fix the cause and re-run the evals"
    ]
    assert rule(res, "run:valid").outcome == "error"
    # nothing blocks on invalid evidence, not even a confirmed must-pass failure
    res = gate(run(suite(60, mp_fail={"mp0": [False] * 3})), run(suite(60)), run_valid=False, invalid_reason="x")
    assert res.decision == "INVALID" and rule(res, "must_pass").outcome == "review"


def test_block_on_a_latency_budget_confidently_missed():
    th = Thresholds(latency_p95_budget_ms=500.0, cost_per_sample_budget_usd=0.01)
    res = gate(run(suite(60), latency=900.0, cost=0.002), run(suite(60), latency=400.0, cost=0.002), th)
    assert res.decision == "BLOCK"
    r = rule(res, "budget:latency_p95")
    assert r.outcome == "block"
    assert r.message == ("latency p95 is 902 ms (98.3% CI, corrected for 3 comparisons: 902 ms to 902 ms), over the budget 500 ms")
    assert rule(res, "budget:cost").outcome == "pass"
    assert res.latency_ms["p95"].estimate == 902.0 and res.latency_ms["baseline_p95"].estimate == 402.0
    assert res.cost_usd["mean_per_sample"].estimate == pytest.approx(0.002)
    assert res.cost_usd["total"].estimate == pytest.approx(0.002 * 62 * 3)


def test_block_on_a_cost_budget_and_review_when_unclear():
    th = Thresholds(cost_per_sample_budget_usd=0.001)
    assert gate(run(suite(60), cost=0.003), run(suite(60), cost=0.003), th).decision == "BLOCK"
    # half the cases cost 0.0005, half 0.0015: mean 0.001 +- noise -> cannot tell
    cand = pd.concat([run(suite(30), cost=0.0005), run({f"d{i:03d}": [True] * 3 for i in range(32)}, cost=0.0015)], ignore_index=True)
    base = pd.concat([run(suite(30)), run({f"d{i:03d}": [True] * 3 for i in range(32)})], ignore_index=True)
    res = gate(cand, base, th)
    assert rule(res, "budget:cost").outcome == "review" and res.decision == "REVIEW"


def test_floors_block_pass_and_review():
    base = run(suite(100))
    cand = run(suite(100, failing={f"c{i:03d}" for i in range(30)}))  # 70.6% passing
    res = gate(cand, base, Thresholds(floors={"correct": 0.9}, allowed_regression={"*": 1.0}))
    r = rule(res, "floor:correct")
    assert r.outcome == "block" and r.message.startswith("correct is 70.6% (97.5% CI, corrected for 2 comparisons: ")
    assert r.message.endswith("below its floor 90.0%")
    assert res.decision == "BLOCK" and res.metrics[0].verdict == "floor_missed"
    assert rule(gate(base, base, Thresholds(floors={"correct": 0.9})), "floor:correct").outcome == "pass"
    unclear = gate(cand, base, Thresholds(floors={"correct": 0.7}, allowed_regression={"*": 1.0}))
    assert rule(unclear, "floor:correct").outcome == "review"


def test_a_gating_metric_missing_from_the_candidate_is_reviewed():
    res = gate(run(suite(60)), run(suite(60)), Thresholds(metrics=["correct", "fields_match"]))
    assert res.decision == "REVIEW"
    assert rule(res, "regression:fields_match").message == ("fields_match was not scored in the candidate, so it cannot be compared")


def test_bonferroni_makes_the_block_test_stricter_with_more_tests():
    base = run(suite(100))
    cand = run(suite(100, failing={f"c{i:03d}" for i in range(0, 100, 25)}))
    th = Thresholds(latency_p95_budget_ms=10_000.0, cost_per_sample_budget_usd=1.0, allowed_regression={"*": 0.0})
    b = gate(cand, base, th)
    n = gate(cand, base, th, multiplicity="none")
    rb, rn = rule(b, "regression:correct").details, rule(n, "regression:correct").details
    assert rb["tests"] == 3 and rb["block_level"] == pytest.approx(0.025 / 3)
    assert rn["block_level"] == pytest.approx(0.025)
    assert rb["upper_bound_for_block"] > rn["upper_bound_for_block"]
    assert (rb["low"], rb["high"]) == (rn["low"], rn["high"])  # the reported 95% CI is the same


def test_same_seed_same_result_and_seed_recorded():
    base = run(suite(50, failing={"c003"}))
    cand = run(suite(50, failing={"c001", "c007"}))
    a, b = gate(cand, base, seed=99), gate(cand, base, seed=99)
    assert a.as_dict() == b.as_dict()
    assert a.evidence["seed"] == 99
    c = gate(cand, base, seed=100)
    assert c.metrics[0].delta != a.metrics[0].delta  # other resamples, other interval ends
    # no seed: derived from workflow and version, still reproducible
    assert gate(cand, base, seed=None).as_dict() == gate(cand, base, seed=None).as_dict()


CI_IN_MESSAGE = re.compile(r"\((\d+(?:\.\d)?)% CI(, corrected for (\d+) comparisons:)? (\S+)% to (\S+)%\)")


def test_floor_messages_show_the_interval_the_verdict_used():
    # 4 block tests (a regression, a floor and two budgets): the floor's BLOCK test is the 98.75%
    # interval (shown as 98.8%).
    # The old message showed the 95% one, which can lie wholly below the floor while the
    # decision says "cannot tell yet" — the shown interval contradicted the verdict.
    base = run(suite(100), latency=100.0, cost=0.001)
    cand = run(suite(100, failing={f"c{i:03d}" for i in range(12)}), latency=100.0, cost=0.001)
    seen = {"block": 0, "pass": 0, "review": 0}
    contradicted_before = 0
    for floor in [x / 1000 for x in range(780, 1000, 4)]:
        th = Thresholds(
            floors={"correct": floor}, latency_p95_budget_ms=1000.0, cost_per_sample_budget_usd=1.0, allowed_regression={"*": 1.0}
        )
        r = rule(gate(cand, base, th), "floor:correct")
        seen[r.outcome] += 1
        level, corrected, tests, low, high = CI_IN_MESSAGE.search(r.message).groups()
        low, high = float(low) / 100, float(high) / 100
        if r.outcome == "block":
            assert high < floor and corrected and tests == "4" and level == "98.8", r.message
        elif r.outcome == "pass":
            assert low >= floor and level == "95" and not corrected, r.message
        else:
            assert low < floor <= high + 0.0005 and corrected and level == "98.8", r.message
            assert "cannot tell yet" in r.message
            assert r.details["corrected_high"] == r.details["upper_bound_for_block"]
            contradicted_before += r.details["high"] < floor  # the 95% CI alone says "below the floor"
    assert seen["block"] and seen["pass"] and seen["review"], seen
    assert contradicted_before, "the sweep should include floors where the plain 95% CI is wholly below"


def test_regression_messages_show_the_corrected_interval_they_used():
    base = run(suite(100))
    cand = run(suite(100, failing={f"c{i:03d}" for i in range(0, 100, 25)}))
    th = Thresholds(latency_p95_budget_ms=10_000.0, cost_per_sample_budget_usd=1.0, allowed_regression={"*": 0.0})
    res = gate(cand, base, th)
    r = rule(res, "regression:correct")
    assert "(98.3% CI, corrected for 3 comparisons: " in r.message
    d = r.details
    assert f"{_pts(d['corrected_low'])} to {_pts(d['corrected_high'])})" in r.message
    if r.outcome == "block":
        assert d["corrected_high"] < 0
    else:
        assert d["corrected_high"] >= 0 and "no significant regression" in r.message
    # the tolerance (SHIP side) shows the plain 95% interval it used
    assert "(95% CI " in rule(res, "tolerance:correct").message
    # one test: nothing to correct, the plain 95% interval
    single = gate(cand, base, Thresholds(allowed_regression={"*": 0.0}))
    assert "(95% CI " in rule(single, "regression:correct").message
    assert "corrected" not in rule(single, "regression:correct").message
