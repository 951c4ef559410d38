"""The demo world's simulated LLM, suites and release manifests (relops_pipeline/example)."""

from __future__ import annotations

import dataclasses
import functools
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest

from relops_pipeline.demo import llm as demo_llm
from relops_pipeline.demo.llm import ABSTAIN_ANSWER, respond
from relops_pipeline.demo.traces import release_schedule
from relops_pipeline.lib.evals.manifests import RenderError, load_manifest, validate_manifest_file
from relops_pipeline.lib.evals.model import Case, SampleResult
from relops_pipeline.lib.evals.runners import build_runner
from relops_pipeline.lib.evals.scorers import build_scorers, score_sample
from relops_pipeline.lib.evals.store import plan_requests
from relops_pipeline.lib.evals.suites import load_suite, validate_suite_file

EXAMPLE = Path(__file__).resolve().parents[1] / "relops_pipeline" / "example"
SAMPLES = 5
# The scorer blocks the demo workflows use (relops_pipeline/example/workflows/*.yaml).
SCORERS = {
    "support-triage": [{"type": "json"}, {"type": "contains"}],
    "doc-qa": [{"type": "similarity", "threshold": 0.8}, {"type": "contains"}],
}
LONG_MUST_PASS = {
    "critical-account-takeover-email-changed-001",
    "critical-account-takeover-reset-001",
    "critical-gdpr-access-request-001",
    "critical-production-outage-001",
    "critical-vulnerability-report-001",
}


@functools.cache
def _suite(workflow: str):
    return load_suite(EXAMPLE / "suites" / workflow / "v1.yaml")


def _manifest(workflow: str, version: str):
    return load_manifest(EXAMPLE / "releases" / workflow / f"{version}.yaml")


@dataclasses.dataclass
class RunStats:
    passed: dict[str, list[bool]]  # case id -> per sample: every metric passed
    metric: dict[str, float]  # metric -> mean pass rate
    must_pass_failed: dict[int, set[str]]  # sample -> must-pass case ids that failed
    latency: float
    cost: float
    outputs: dict[tuple[str, int], dict]

    @property
    def pass_rate(self) -> float:
        flat = [v for vs in self.passed.values() for v in vs]
        return sum(flat) / len(flat)

    @property
    def flaky(self) -> list[str]:
        return [cid for cid, vs in self.passed.items() if 0 < sum(vs) < len(vs)]


_RUNS: dict[tuple[str, str], RunStats] = {}


def run_release(workflow: str, version: str) -> RunStats:
    """Run the suite against a release as the eval asset does (plan_requests seeds) and score it."""
    key = (workflow, version)
    if key in _RUNS:
        return _RUNS[key]
    suite = _suite(workflow)
    manifest = _manifest(workflow, version)
    scorers = build_scorers(SCORERS[workflow])
    passed: dict[str, list[bool]] = defaultdict(list)
    metric: dict[str, list[bool]] = defaultdict(list)
    mp_failed: dict[int, set[str]] = {k: set() for k in range(SAMPLES)}
    lat, cost, outputs = [], [], {}
    for req in plan_requests(suite, SAMPLES):
        out = respond(manifest=manifest, case=req.case, sample=req.sample, seed=req.seed)
        outputs[(req.case.id, req.sample)] = out
        scores = score_sample(scorers, req.case, SampleResult(case_id=req.case.id, sample=req.sample,
                                                              output=out["output"]))
        ok = bool(scores) and all(s.passed for s in scores)
        passed[req.case.id].append(ok)
        for s in scores:
            metric[s.metric].append(s.passed)
        if req.case.must_pass and not ok:
            mp_failed[req.sample].add(req.case.id)
        lat.append(out["latency_ms"])
        cost.append(out["cost_usd"])
    stats = RunStats(dict(passed), {m: sum(v) / len(v) for m, v in metric.items()}, mp_failed,
                     statistics.mean(lat), statistics.mean(cost), outputs)
    _RUNS[key] = stats
    return stats


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("workflow,n_min,n_max", [("support-triage", 100, 110), ("doc-qa", 80, 90)])
def test_demo_suites_validate_and_have_a_must_pass_subset(workflow, n_min, n_max):
    path = EXAMPLE / "suites" / workflow / "v1.yaml"
    assert validate_suite_file(path) == []
    assert path.stat().st_size < 200_000
    suite = load_suite(path)
    assert suite.workflow == workflow and suite.version == "v1"
    assert n_min <= len(suite.cases) <= n_max
    must = [c for c in suite.cases if c.must_pass]
    assert 9 <= len(must) <= 12
    assert all(c.provenance == "curated" for c in suite.cases)
    assert all({"easy", "medium", "hard"} & set(c.tags) for c in suite.cases)
    for c in suite.cases:
        # The gold answer satisfies the case's own expectations.
        ref = c.expected["reference"]
        assert all(p in ref for p in c.expected["contains"]), c.id
        assert not any(p in ref for p in c.expected.get("not_contains", [])), c.id


def test_support_suite_covers_topics_languages_and_critical_behaviour():
    suite = _suite("support-triage")
    cats = {c.expected["fields"]["category"] for c in suite.cases}
    assert cats == {"billing", "login", "shipping", "refund", "bug", "feature-request", "other"}
    langs = {c.expected["fields"].get("language", "en") for c in suite.cases}
    assert langs == {"en", "de", "fr", "es"}
    must_tags = {t for c in suite.cases if c.must_pass for t in c.tags}
    assert {"privacy", "account-takeover", "refund-policy", "credentials", "prompt-injection"} <= must_tags
    assert {c.id for c in suite.cases if c.must_pass and "long" in c.tags} == LONG_MUST_PASS


def test_manifests_exist_for_every_release_of_the_trace_schedule():
    releases = [r for r in release_schedule()]
    assert len(releases) == 10
    for r in releases:
        path = EXAMPLE / "releases" / r.workflow / f"v{r.version}.yaml"
        assert validate_manifest_file(path) == [], path
        m = load_manifest(path)
        assert m.model == r.model, (r.workflow, r.version)
        assert "system" in m.prompts and "user" in m.prompts and m.notes and m.code_revision
    st = {v: _manifest("support-triage", v) for v in ("v1.2.0", "v1.3.0", "v1.4.0", "v1.5.0", "v1.5.1")}
    assert "{{ ticket }}" in st["v1.2.0"].prompts["user"]
    assert [st[v].parameters["max_tokens"] for v in st] == [400, 400, 400, 256, 400]
    assert [st[v].parameters["temperature"] for v in st] == [0.7, 0.2, 0.2, 0.2, 0.2]
    assert "response_format" not in st["v1.2.0"].parameters
    assert "account-deletion" in st["v1.5.0"].prompts["system"]
    assert "account-deletion" not in st["v1.4.0"].prompts["system"]
    dq = {v: _manifest("doc-qa", v) for v in ("v2.0.0", "v2.1.0", "v2.2.0", "v2.3.0", "v2.4.0")}
    assert [dq[v].retrieval["top_k"] for v in dq] == [4, 8, 8, 8, 8]
    assert "{{ question }}" in dq["v2.0.0"].prompts["user"]
    assert "Cite" in dq["v2.3.0"].prompts["system"] and "Cite" not in dq["v2.2.0"].prompts["system"]
    # v2.4.0 changes only the model (and drops temperature, which gpt-5 models do not take).
    assert dq["v2.4.0"].prompts == dq["v2.3.0"].prompts and dq["v2.4.0"].retrieval == dq["v2.3.0"].retrieval
    assert "temperature" not in dq["v2.4.0"].parameters
    assert dq["v2.4.0"].parameters["max_completion_tokens"] == dq["v2.3.0"].parameters["max_tokens"]


# --------------------------------------------------------------------------- the simulated LLM


def test_respond_is_deterministic_and_depends_on_behaviour_not_labels():
    m = _manifest("support-triage", "v1.2.0")
    suite = _suite("support-triage")
    cases = suite.cases[:20]
    a = [respond(m, c, s, 11) for c in cases for s in range(3)]
    b = [respond(m, c, s, 11) for c in cases for s in range(3)]
    assert a == b
    # Version, notes and code revision are labels: the same behaviour gives the same outputs.
    relabelled = dataclasses.replace(m, version="v9.9.9", notes="other notes", code_revision="0000000")
    assert [respond(relabelled, c, s, 11) for c in cases for s in range(3)] == a
    # Another seed or sample index draws again: some outputs or latencies differ.
    assert [respond(m, c, 0, 12) for c in cases] != [respond(m, c, 0, 11) for c in cases]
    assert [respond(m, c, 1, 11)["latency_ms"] for c in cases] != [x["latency_ms"] for x in a[::3]]
    # A different prompt is a different behaviour.
    edited = dataclasses.replace(m, prompts={**m.prompts, "user": "Ticket:\n{{ ticket }}"})
    assert [respond(edited, c, s, 11) for c in cases for s in range(3)] != a


def test_outputs_are_realistic_json_and_report_usage():
    m = _manifest("support-triage", "v1.3.0")
    case = _suite("support-triage").case("billing-double-charge-001")
    out = respond(m, case, 0, 0)
    doc = json.loads(out["output"])
    assert set(doc) == {"category", "priority", "language", "reply"}
    assert doc["category"] == "billing" and doc["language"] == "en"
    assert "duplicate charge" in doc["reply"]
    assert out["input_tokens"] > 300 and 40 < out["output_tokens"] < 200
    assert out["cost_usd"] == pytest.approx((out["input_tokens"] * 0.15 + out["output_tokens"] * 0.60) / 1e6, rel=1e-3)
    assert out["finish_reason"] == "stop" and out["model"] == "gpt-4o-mini-2024-07-18"
    qa = respond(_manifest("doc-qa", "v2.3.0"), _suite("doc-qa").case("critical-signature-verification-001"), 0, 0)
    assert "HMAC-SHA256" in qa["output"] and "[1]" in qa["output"] and "Sources:" in qa["output"]


def test_a_missing_template_variable_raises_like_a_real_render():
    m = _manifest("doc-qa", "v2.0.0")
    case = Case(id="no-question", input={"vars": {"query": "How do I retry?"}}, expected={"reference": "x"})
    with pytest.raises(RenderError, match="question"):
        respond(m, case, 0, 0)


def test_python_runner_runs_the_demo_callable():
    runner = build_runner({"type": "python", "callable": "relops_pipeline.demo.llm:respond", "timeout_s": 30})
    suite = _suite("doc-qa")
    manifest = _manifest("doc-qa", "v2.1.0")
    requests = plan_requests(suite, 2)
    results = runner.run(manifest, requests)
    assert len(results) == len(requests)
    assert all(r.error is None and r.output for r in results)
    first = respond(manifest, requests[0].case, requests[0].sample, requests[0].seed)
    assert results[0].latency_ms == first["latency_ms"] and results[0].cost_usd == first["cost_usd"]
    assert results[0].raw == {"model": first["model"], "finish_reason": "stop", "tool_calls": 0}


def test_fast_enough():
    m = _manifest("support-triage", "v1.4.0")
    cases = _suite("support-triage").cases[:100]
    respond(m, cases[0], 0, 0)
    t0 = time.perf_counter()
    for c in cases:
        for s in range(5):
            respond(m, c, s, 0)
    assert time.perf_counter() - t0 < 1.0


# --------------------------------------------------------------------------- the documented story


def test_support_v1_3_0_is_clearly_better_than_v1_2_0():
    old, new = run_release("support-triage", "v1.2.0"), run_release("support-triage", "v1.3.0")
    assert new.pass_rate - old.pass_rate >= 0.06, (old.pass_rate, new.pass_rate)
    assert old.metric["json_valid"] < 0.995 and new.metric["json_valid"] == 1.0  # JSON mode fixes the format
    assert new.metric["fields_match"] > old.metric["fields_match"]
    assert len(new.flaky) < len(old.flaky)  # a lower temperature steadies the verdicts
    fenced = [o for o in old.outputs.values() if o["output"].startswith(("```", "Here is"))]
    assert fenced and not any(o["output"].startswith(("```", "Here is")) for o in new.outputs.values())
    assert not any(new.must_pass_failed.values())


def test_support_v1_4_0_is_slower_and_costlier_but_not_worse():
    base, cand = run_release("support-triage", "v1.3.0"), run_release("support-triage", "v1.4.0")
    assert cand.latency >= 1.2 * base.latency
    assert cand.cost >= 2.0 * base.cost
    assert cand.pass_rate >= base.pass_rate - 0.02
    assert not any(cand.must_pass_failed.values())


def test_support_v1_5_0_breaks_must_pass_cases_and_v1_5_1_fixes_them():
    broken, fixed = run_release("support-triage", "v1.5.0"), run_release("support-triage", "v1.5.1")
    failing_samples = [k for k, ids in broken.must_pass_failed.items() if len(ids) >= 3]
    assert len(failing_samples) >= 4
    assert set().union(*broken.must_pass_failed.values()) == LONG_MUST_PASS
    truncated = broken.outputs[("critical-account-takeover-reset-001", 0)]
    assert truncated["finish_reason"] == "length" and truncated["output_tokens"] == 256
    with pytest.raises(ValueError):
        json.loads(truncated["output"])
    assert not any(fixed.must_pass_failed.values())
    assert fixed.pass_rate - broken.pass_rate >= 0.06


def test_support_must_pass_cases_hold_on_good_releases_over_many_samples():
    suite = _suite("support-triage")
    scorers = build_scorers(SCORERS["support-triage"])
    m = _manifest("support-triage", "v1.3.0")
    failures = total = 0
    for c in (c for c in suite.cases if c.must_pass):
        for k in range(60):
            out = respond(m, c, k, 3)
            scores = score_sample(scorers, c, SampleResult(case_id=c.id, sample=k, output=out["output"]))
            failures += not all(s.passed for s in scores)
            total += 1
    assert failures / total <= 0.002


def test_doc_qa_releases_differ_as_documented():
    v20, v21, v22, v23, v24 = (run_release("doc-qa", v) for v in ("v2.0.0", "v2.1.0", "v2.2.0", "v2.3.0", "v2.4.0"))
    assert v21.pass_rate - v20.pass_rate >= 0.05  # top_k 8 grounds more answers
    assert v21.pass_rate - v22.pass_rate >= 0.05  # the nano model loses grounding
    assert v23.pass_rate >= v21.pass_rate  # gpt-4.1-mini + citations: the best
    for stats in (v20, v21, v22, v23, v24):
        assert not any(stats.must_pass_failed.values())
    assert v21.latency > v20.latency and v21.cost > 1.4 * v20.cost  # twice the context
    assert v22.latency < 0.7 * v21.latency and v22.cost < v21.cost  # cheaper and faster
    assert v23.cost > v21.cost
    # gpt-5-mini: at least as good as v2.3.0, slower (its first token), cheaper per sample.
    assert v24.pass_rate >= v23.pass_rate
    assert 1.25 * v23.latency <= v24.latency <= 1.6 * v23.latency
    assert v24.cost < 0.8 * v23.cost
    # Citations as v2.3.0 (same prompt); no refusals in the eval (the suite has no pasted configs).
    assert sum("[1]" in o["output"] for o in v24.outputs.values()) > 0.5 * len(v24.outputs)
    assert not any("I'm sorry" in o["output"] for o in v24.outputs.values())
    # v2.0.0 abstains where the answer is ranked below its top 4 excerpts.
    abstained = {cid for (cid, _), o in v20.outputs.items() if o["output"].startswith(ABSTAIN_ANSWER)}
    assert "configuration-max-delay-001" in abstained or "configuration-max-delay-002" in abstained


def _run_frame(workflow: str, version: str) -> pd.DataFrame:
    """The long-format frame the gate reads for an eval run (gates.stats.run_frame's columns)."""
    stats = run_release(workflow, version)
    scorers = build_scorers(SCORERS[workflow])
    rows = []
    for req in plan_requests(_suite(workflow), SAMPLES):
        out = stats.outputs[(req.case.id, req.sample)]
        for s in score_sample(scorers, req.case, SampleResult(case_id=req.case.id, sample=req.sample,
                                                              output=out["output"])):
            rows.append({"case_id": req.case.id, "sample": req.sample, "must_pass": req.case.must_pass,
                         "output": out["output"], "error": None, "latency_ms": out["latency_ms"],
                         "cost_usd": out["cost_usd"], "metric": s.metric, "score": float(s.score),
                         "passed": bool(s.passed)})
    return pd.DataFrame(rows)


def test_doc_qa_v2_4_0_eval_ships_against_v2_3_0():
    """The canary release of the demo passes its gate: the default thresholds (doc-qa sets none)
    and the demo gate's seed, against v2.3.0, the releasable release before it."""
    from relops_pipeline.lib.gates.decision import decide
    from relops_pipeline.lib.gates.model import Thresholds

    cand, base = _run_frame("doc-qa", "v2.4.0"), _run_frame("doc-qa", "v2.3.0")
    result = decide(cand, base, Thresholds(), must_pass_cases=set(cand.loc[cand["must_pass"], "case_id"]),
                    resample=None, run_valid=True, invalid_reason=None, workflow="doc-qa", version="v2.4.0",
                    baseline_version="v2.3.0", evidence={}, diff=None, seed=20260101)
    assert result.decision == "SHIP", result.reasons
    assert all(r.outcome == "pass" for r in result.rules), [(r.rule, r.outcome) for r in result.rules]
    by_metric = cand.groupby("metric")["passed"].mean()
    base_by_metric = base.groupby("metric")["passed"].mean()
    assert set(by_metric.index) == {"similarity", "contains"}
    assert (by_metric >= base_by_metric).all()  # same or better on every gating metric


def test_manifest_features_drive_behaviour():
    suite = _suite("support-triage")
    cases = [c for c in suite.cases if not c.must_pass][:40]
    v13 = _manifest("support-triage", "v1.3.0")

    def outputs(m, k=5):
        return {c.id: [respond(m, c, s, 0)["output"] for s in range(k)] for c in cases}

    def categories(outs):
        return {cid: [json.loads(o)["category"] for o in os_] for cid, os_ in outs.items()}

    # Temperature 0: every sample gives the same verdict; at 1.0 some cases flip between samples.
    cold = categories(outputs(dataclasses.replace(v13, parameters={**v13.parameters, "temperature": 0.0})))
    hot = categories(outputs(dataclasses.replace(v13, parameters={**v13.parameters, "temperature": 1.0})))
    assert sum(len(set(v)) > 1 for v in hot.values()) > sum(len(set(v)) > 1 for v in cold.values())
    # A lower max_tokens truncates long replies.
    long_case = suite.case("critical-gdpr-access-request-001")
    short = dataclasses.replace(v13, parameters={**v13.parameters, "max_tokens": 120})
    assert respond(short, long_case, 0, 0)["finish_reason"] == "length"
    assert respond(v13, long_case, 0, 0)["finish_reason"] == "stop"
    # Without the account-takeover clause, the takeover cases lose their escalation.
    clause = "- If an account may be compromised, say that our security team has been alerted.\n"
    system = v13.prompts["system"].replace(clause, "")
    assert system != v13.prompts["system"]
    no_clause = dataclasses.replace(v13, prompts={**v13.prompts, "system": system})
    takeover = suite.case("critical-account-takeover-reset-001")
    scorers = build_scorers(SCORERS["support-triage"])
    fails = sum(not all(s.passed for s in score_sample(scorers, takeover, SampleResult(
        case_id=takeover.id, sample=k, output=respond(no_clause, takeover, k, 0)["output"]))) for k in range(20))
    assert fails >= 5
    # An unknown model still answers, with a default profile.
    other = dataclasses.replace(v13, model="acme-llm-7b")
    assert json.loads(respond(other, cases[0], 0, 0)["output"])["category"]
    assert demo_llm.MODEL_PROFILES["gpt-4.1-mini"].price_in == 0.40
