"""Gate reports: markdown, PR comment, HTML, JSON, JUnit and the files, for SHIP, BLOCK and REVIEW."""

from __future__ import annotations

import dataclasses
import html
import json
import math
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from relops_pipeline.lib.evals.diff import diff_manifests
from relops_pipeline.lib.evals.model import Manifest
from relops_pipeline.lib.gates.model import (
    CaseChange,
    GateResult,
    Interval,
    MetricEvidence,
    MustPassCase,
    RuleResult,
)
from relops_pipeline.lib.gates.report import (
    MAX_CASES,
    NO_DIFF,
    render_html,
    render_json,
    render_junit,
    render_markdown,
    render_pr_comment,
    write_reports,
)

XSS = "<script>alert(1)</script>"


def _evidence(**extra):
    ev = {
        "candidate_run_id": "run-cand-0042",
        "baseline_run_id": "run-base-0041",
        "suite_version": "s3",
        "thresholds_version": 2,
        "thresholds": {
            "version": 2,
            "author": "dana",
            "reason": "tighten after incident #12",
            "confidence": 0.95,
            "latency_p95_budget_ms": 2500.0,
        },
        "cases": 312,
        "samples_per_case": 3,
        "seed": 1234,
        "n_boot": 10000,
    }
    ev.update(extra)
    return ev


def _metric(name, base, cand, delta, verdict, *, floor=None, note=""):
    return MetricEvidence(
        metric=name,
        candidate=Interval(*cand, n=312),
        baseline=Interval(*base, n=312) if base else None,
        delta=Interval(*delta, n=300) if delta else None,
        allowed_regression=0.02,
        tolerated_regression=0.05,
        floor=floor,
        verdict=verdict,
        note=note,
    )


def _diff(prompt_extra="", old_version="v1", new_version="v2"):
    old = Manifest(
        workflow="support-bot", version=old_version, model="gpt-a", prompts={"system": "Be kind.\n"}, parameters={"temperature": 0.2}
    )
    new = dataclasses.replace(
        old,
        version=new_version,
        model="gpt-b",
        prompts={"system": "Be kind.\n" + prompt_extra + "Answer briefly.\n"},
        parameters={"temperature": 0.0},
    )
    return diff_manifests(old, new)


def ship_result() -> GateResult:
    return GateResult(
        workflow="support-bot",
        version="v2",
        baseline_version="v1",
        decision="SHIP",
        reasons=["no metric regressed beyond the tolerated 0.05", "every must-pass case passed in all samples"],
        rules=[
            RuleResult("regression:fields_match", "pass", "delta +0.012 [-0.010, +0.034]"),
            RuleResult("must_pass", "pass", "10 must-pass cases passed 3/3"),
            RuleResult("evidence:min_cases", "pass", "312 cases >= 30"),
        ],
        metrics=[_metric("fields_match", (0.851, 0.83, 0.87), (0.863, 0.842, 0.881), (0.012, -0.010, 0.034), "ok", floor=0.8)],
        must_pass=[],
        flaky_cases=[CaseChange("c-17", 1.0, 2 / 3)],
        newly_failing=[],
        newly_passing=[],
        latency_ms={"p50": Interval(812.0, 790.0, 830.0, n=936), "p95": Interval(1840.0, 1700.0, 1990.0, n=936)},
        cost_usd={"mean_per_sample": Interval(0.0021, 0.0020, 0.0022, n=936)},
        evidence=_evidence(),
        diff=_diff(),
    )


def block_result() -> GateResult:
    must = [
        MustPassCase(
            "refund-" + XSS,
            candidate_failed=3,
            candidate_samples=3,
            baseline_failed=0,
            baseline_samples=3,
            resamples=[False, False, True, False, False],
            verdict="confirmed",
            example_output="Sure!\n" + XSS + "\n```\nnot a fence end\n````",
            failed_metrics=["fields_match"],
        ),
        MustPassCase(
            "mp-2",
            candidate_failed=1,
            candidate_samples=3,
            baseline_failed=None,
            baseline_samples=None,
            verdict="new_case",
            example_output=None,
        ),
        MustPassCase("mp-ok", candidate_failed=0, candidate_samples=3, baseline_failed=0, baseline_samples=3),
    ]
    newly_failing = [CaseChange(f"nf-{i:03d}", 1.0, 0.0, example_output=f"wrong answer {i}\nline two") for i in range(45)]
    return GateResult(
        workflow="support-bot",
        version="v3",
        baseline_version="v2",
        decision="BLOCK",
        reasons=[
            "must-pass case refund-" + XSS + " fails in 3/3 samples and 4/5 re-samples",
            "fields_match regressed by -0.061 (allowed 0.02)",
        ],
        rules=[
            RuleResult(
                "regression:fields_match",
                "block",
                'delta -0.061 [-0.090, -0.032] < -0.02 "significant"',
                details={"estimate": -0.061, "low": -0.09},
            ),
            RuleResult("regression:tone", "pass", "delta -0.004"),
            RuleResult("must_pass", "block", "1 must-pass case fails: refund-" + XSS + "\x01"),
            RuleResult("evidence:min_cases", "pass", "312 cases >= 30"),
        ],
        metrics=[
            _metric("fields_match", (0.863, 0.842, 0.881), (0.802, 0.780, 0.823), (-0.061, -0.090, -0.032), "regression", floor=0.8),
            _metric("tone", (0.95, 0.94, 0.96), (0.946, 0.935, 0.957), (-0.004, -0.012, 0.004), "ok"),
        ],
        must_pass=must,
        flaky_cases=[],
        newly_failing=newly_failing,
        newly_passing=[CaseChange("np-1", 0.0, 1.0)],
        latency_ms={"p95": Interval(2100.0, 1990.0, 2230.0, n=936)},
        cost_usd={"mean_per_sample": Interval(float("nan"), None, None, n=0)},
        evidence=_evidence(),
        diff=_diff(prompt_extra=XSS + "\n", old_version="v2", new_version="v3"),
    )


def review_result() -> GateResult:
    return GateResult(
        workflow="support-bot",
        version="v4",
        baseline_version=None,
        decision="REVIEW",
        reasons=["too little evidence: 20 cases < 30"],
        rules=[
            RuleResult("regression:fields_match", "pass", "no baseline"),
            RuleResult("evidence:min_cases", "review", "20 cases < 30 needed for a SHIP"),
            RuleResult("must_pass:flaky_baseline", "review", "mp-7 is flaky in the baseline too"),
        ],
        metrics=[_metric("fields_match", None, (0.9, 0.8, 0.97), None, "no_baseline")],
        must_pass=[],
        flaky_cases=[],
        newly_failing=[],
        newly_passing=[],
        latency_ms={},
        cost_usd={},
        evidence=_evidence(cases=20, thresholds_version=0, thresholds={}),
        diff=None,
    )


def _outside_fences(md: str) -> str:
    """The markdown with fenced blocks removed (what a renderer could interpret as HTML)."""
    out, fence = [], None
    for line in md.splitlines():
        m = re.match(r"^(`{3,})", line)
        if fence is None and m:
            fence = m.group(1)
        elif fence is not None and re.fullmatch(re.escape(fence) + r"`*\s*", line):
            fence = None
        elif fence is None:
            out.append(line)
    assert fence is None, "unclosed fence"
    return "\n".join(out)


# ---------------------------------------------------------------- markdown


def test_markdown_ship_content():
    md = render_markdown(ship_result(), links={"Dagster run": "http://127.0.0.1:3000/runs/abc"})
    lines = md.splitlines()
    assert "**SHIP**" in lines[0] and "support-bot" in lines[0]
    assert "- no metric regressed beyond the tolerated 0.05" in lines
    assert "### What changed since v1" in md and "model gpt-a -> gpt-b" in md
    # versions, with the thresholds' author and reason from the config
    assert "| suite version | s3 |" in md and "| thresholds version | 2 |" in md
    assert "| thresholds reason | tighten after incident #12 |" in md and "| confidence | 95% |" in md
    # the metric row: baseline, candidate with CI, delta with CI, allowed, tolerated, floor, verdict
    assert ("| fields_match | 0.851 [0.830, 0.870] | 0.863 [0.842, 0.881] | +0.012 [-0.010, +0.034] | 0.020 | 0.050 | 0.800 | ok |") in md
    assert "### Must-pass failures (0)" in md and "### Flaky cases (mixed results across samples) (1)" in md
    assert "| c-17 | 100% | 67% |" in md
    assert "| latency p95 (ms) | 1840 [1700, 1990] | 936 | 2500 |" in md
    assert "| cost mean_per_sample (USD) | 0.0021 [0.002, 0.0022] | 936 |  |" in md
    assert "| thresholds | version: 2, author: dana, reason: tighten after incident #12, confidence: 0.95, " in md
    for needle in ("run-cand-0042", "run-base-0041", "| seed | 1234 |", "| n_boot | 10000 |", "| cases | 312 |"):
        assert needle in md
    assert "- [Dagster run](<http://127.0.0.1:3000/runs/abc>)" in md


def test_markdown_block_must_pass_resamples_and_caps():
    md = render_markdown(block_result())
    assert md.splitlines()[0].startswith("## **BLOCK**")
    assert "### Must-pass failures (2)" in md  # mp-ok passed and is not listed
    assert "re-sampled 5x: FFPFF (4 failed; P = pass, F = fail)" in md
    assert "candidate: failed 3 of 3 samples" in md and "baseline: failed 0 of 3 samples" in md
    assert "baseline: did not run this case" in md and "_new_case_" in md
    assert "failed metrics: fields_match" in md
    assert "mp-ok" not in md
    # the example output sits in a fence longer than its longest backtick run (4)
    lines = md.splitlines()
    start = lines.index("`````text")
    end = lines.index("`````", start + 1)
    assert lines[start + 1 : end] == ["Sure!", html.escape(XSS, quote=False), "```", "not a fence end", "````"]
    # newly failing: capped at MAX_CASES rows, the cut counted; the example output on one line
    assert "### Newly failing cases (45)" in md
    assert "| nf-000 | 100% | 0% | wrong answer 0 line two |" in md
    assert f"nf-{MAX_CASES - 1:03d}" in md and f"nf-{MAX_CASES:03d}" not in md
    assert f"… and {45 - MAX_CASES} more not shown" in md
    assert "**regression**" in md and "| must_pass | **BLOCK** |" in md
    assert "| cost mean_per_sample (USD) | n/a | 0 |" in md  # NaN shown as n/a


def test_markdown_review_without_manifest_or_baseline():
    md = render_markdown(review_result())
    assert md.splitlines()[0].startswith("## **REVIEW**")
    assert "Baseline: none" in md
    assert f"### What changed\n\n{NO_DIFF}\n" in md
    assert "| thresholds version | 0 (built-in defaults) |" in md
    assert "| fields_match | n/a | 0.900 [0.800, 0.970] | n/a |" in md
    assert "| evidence:min_cases | **REVIEW** | 20 cases &lt; 30 needed for a SHIP |" in md
    assert "No latency or cost recorded." in md


def test_markdown_escapes_model_and_user_text():
    md = render_markdown(block_result(), links={"evil": "javascript:alert(1)", "x](y": "https://ok.example/a b"})
    outside = _outside_fences(md)
    assert "<script>" not in outside and "</script>" not in outside
    assert "refund-&lt;script>alert(1)&lt;/script>" in outside  # case id, escaped
    # inside fences the output and the prompt diff are HTML-escaped too: no raw markup anywhere
    assert XSS not in md
    assert md.count(html.escape(XSS, quote=False)) >= 2
    assert "+" + html.escape(XSS, quote=False) in md
    # unsafe link schemes are shown as text, never as a link
    assert "](<javascript" not in md and "evil: javascript:alert(1)" in md
    assert "[x\\](y](<https://ok.example/a%20b>)" in md


# ---------------------------------------------------------------- PR comment


def test_pr_comment_is_short_and_names_failures():
    big = block_result()
    big.must_pass = big.must_pass + [MustPassCase(f"mp-{i}", 3, 3, 0, 3, verdict="confirmed") for i in range(40)]
    big.reasons = big.reasons + [f"reason {i}" for i in range(30)]
    big.metrics = big.metrics + [_metric(f"m{i}", (0.9, 0.8, 0.95), (0.9, 0.8, 0.95), (0, -0.01, 0.01), "ok") for i in range(30)]
    links = {f"link {i}": f"https://ci.example/{i}" for i in range(10)}
    text = render_pr_comment(big, links=links)
    assert len(text.splitlines()) <= 60
    first = text.splitlines()[0]
    assert first == "### relops gate: **BLOCK** — support-bot v3"
    assert "Must-pass failures (42):" in text and "mp-0 (confirmed)" in text and "… and 27 more" in text
    assert "… and 27 more reasons" in text and "… and 20 more metrics" in text
    assert "<script>" not in text and "Sure!" not in text  # ids only, no outputs
    assert "run-cand-0042" in text and "thresholds v2" in text
    assert "[link 4](<https://ci.example/4>)" in text and "link 5" not in text

    ship = render_pr_comment(ship_result())
    assert "**SHIP**" in ship and "Must-pass failures:** none" in ship
    assert "**What changed:** model gpt-a -> gpt-b; prompt system changed" in ship
    review = render_pr_comment(review_result())
    assert "**REVIEW**" in review and NO_DIFF in review


# ---------------------------------------------------------------- HTML


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.text: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs

    def handle_data(self, data):
        self.text.append(data)


def test_html_escapes_and_is_self_contained():
    page = render_html(block_result(), links={"run": "http://127.0.0.1:3000/runs/1", "bad": "javascript:alert(1)"})
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    parser = _Collector()
    parser.feed(page)
    assert "script" not in parser.tags and "iframe" not in parser.tags
    text = "".join(parser.text)
    # the decoded text holds the model output, the case id and the prompt line, as text
    assert "Sure!\n" + XSS in text and "refund-" + XSS in text and "+" + XSS in text
    # no external resources, no JavaScript URLs, no event handlers
    assert not any(name in ("src",) for name, _ in parser.attrs)
    hrefs = [v for name, v in parser.attrs if name == "href"]
    assert hrefs == ["http://127.0.0.1:3000/runs/1"]
    assert not any(name.startswith("on") for name, _ in parser.attrs)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    # the same content as the markdown report, and the chart
    assert 'class="badge"' in page and ">BLOCK</span>" in page
    assert "FFPFF" in page and "Must-pass failures (2)" in page and f"… and {45 - MAX_CASES} more not shown" in page
    assert page.count("<svg") == 2 and "stroke-dasharray" in page  # one chart per metric, floor drawn
    assert "run-cand-0042" in page and "tighten after incident #12" in page


def test_html_ship_and_review():
    ship = render_html(ship_result())
    assert ">SHIP</span>" in ship and "0.863 [0.842, 0.881]" in ship and "+0.012 [-0.010, +0.034]" in ship
    review = render_html(review_result())
    assert ">REVIEW</span>" in review and html.escape(NO_DIFF) in review
    assert review.count("<svg") == 1


# ---------------------------------------------------------------- JSON


def test_json_matches_as_dict_with_decision_first():
    r = ship_result()
    text = render_json(r)
    doc = json.loads(text)
    assert list(doc)[0] == "decision" and doc["decision"] == "SHIP"
    assert doc == {"decision": "SHIP", **r.as_dict()}
    assert list(doc)[1:4] == ["workflow", "version", "baseline_version"]
    assert list(doc["evidence"]) == sorted(doc["evidence"])
    assert render_json(ship_result()) == text  # stable


def test_json_has_no_nan():
    text = render_json(block_result())
    doc = json.loads(text)  # strict JSON: NaN would not be valid
    assert "NaN" not in text
    assert doc["cost_usd"]["mean_per_sample"]["estimate"] is None
    assert doc["must_pass"][0]["example_output"].startswith("Sure!\n<script>")  # data, not a page


# ---------------------------------------------------------------- JUnit


def _suite(xml_text):
    root = ET.fromstring(xml_text)
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    return root, suites[0]


def test_junit_block():
    root, suite = _suite(render_junit(block_result()))
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["regression:fields_match", "regression:tone", "must_pass", "evidence:min_cases"]
    assert {c.get("classname") for c in cases} == {"relops.gate.support-bot"}
    assert suite.get("name") == "relops.gate.support-bot"
    for el in (root, suite):
        assert (el.get("tests"), el.get("failures"), el.get("errors"), el.get("skipped")) == ("4", "2", "0", "0")
    failures = {c.get("name"): c.find("failure") for c in cases}
    assert failures["regression:tone"] is None and failures["evidence:min_cases"] is None
    reg = failures["regression:fields_match"]
    assert reg.get("type") == "block" and reg.get("message") == 'delta -0.061 [-0.090, -0.032] < -0.02 "significant"'
    assert '"estimate": -0.061' in reg.text
    mp = failures["must_pass"]
    assert mp.get("message") == "1 must-pass case fails: refund-" + XSS + "\ufffd"  # control char replaced
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["decision"] == "BLOCK" and props["baseline_version"] == "v2"
    assert props["evidence.candidate_run_id"] == "run-cand-0042" and props["evidence.seed"] == "1234"
    assert "evidence.thresholds" not in props  # only scalar evidence


def test_junit_review_skipped_or_strict_failure():
    text = render_junit(review_result())
    root, suite = _suite(text)
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "0", "2")
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["decision"] == "REVIEW" and props["baseline_version"] == ""
    skipped = [c.find("skipped") for c in suite.findall("testcase")]
    assert skipped[0] is None
    assert skipped[1].get("message") == "REVIEW: 20 cases < 30 needed for a SHIP"
    assert "&lt; 30" in text  # escaped on the wire

    _, strict = _suite(render_junit(review_result(), review_as="failure"))
    assert (strict.get("tests"), strict.get("failures"), strict.get("skipped")) == ("3", "2", "0")
    assert {c.find("failure").get("type") for c in strict.findall("testcase")[1:]} == {"review"}
    with pytest.raises(ValueError):
        render_junit(review_result(), review_as="error")


def test_junit_ship_and_no_rules():
    _, suite = _suite(render_junit(ship_result()))
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "0", "0")
    assert all(len(list(c)) == 0 for c in suite.findall("testcase"))
    bare = dataclasses.replace(block_result(), rules=[])
    _, suite = _suite(render_junit(bare))
    (case,) = suite.findall("testcase")
    assert case.get("name") == "gate" and case.find("failure") is not None
    assert suite.get("failures") == "1"


# ---------------------------------------------------------------- files


def test_write_reports_atomic(tmp_path):
    out = tmp_path / "reports" / "support-bot"
    paths = write_reports(block_result(), out, "support-bot--v3")
    assert set(paths) == {"md", "html", "json"}
    assert paths["md"] == out / "support-bot--v3.md"
    assert paths["md"].read_text(encoding="utf-8") == render_markdown(block_result())
    assert paths["html"].read_text(encoding="utf-8") == render_html(block_result())
    assert json.loads(paths["json"].read_text(encoding="utf-8"))["decision"] == "BLOCK"
    assert sorted(p.name for p in out.iterdir()) == [
        "support-bot--v3.html",
        "support-bot--v3.json",
        "support-bot--v3.md",
    ]  # no temp files left
    # a second write replaces the files
    write_reports(ship_result(), out, "support-bot--v3")
    assert json.loads(paths["json"].read_text(encoding="utf-8"))["decision"] == "SHIP"
    for bad in ("../x", "a/b", ".hidden", ""):
        with pytest.raises(ValueError):
            write_reports(ship_result(), out, bad)


def test_intervals_without_bounds_and_nan():
    r = ship_result()
    r.metrics = [_metric("m", (0.5, None, None), (math.nan, None, None), (0.1, math.inf, None), "inconclusive")]
    md = render_markdown(r)
    assert "| m | 0.500 | n/a | +0.100 |" in md
    page = render_html(r)
    assert ">n/a</text>" in page  # the chart has no bar for a NaN candidate
    assert json.loads(render_json(r))["metrics"][0]["delta"]["low"] is None


def test_reports_of_an_invalid_run_and_a_corrected_floor():
    """An INVALID result is titled as such, lists the error causes escaped (endpoint text is
    untrusted) and JUnit calls it an error; a floor judged on the corrected interval says so."""
    from relops_pipeline_tests.test_gate_decision import gate, run, suite

    causes = [{"cause": f"ConnectError: refused {XSS}", "count": 118, "samples": 120}]
    res = gate(
        run(suite(60)),
        run(suite(60)),
        run_valid=False,
        invalid_reason="error rate 98.3% above the allowed 10.0%",
        error_causes=[f"118 of 120 samples: ConnectError: refused {XSS}"],
        evidence={"candidate_errors": {"valid": False, "errors": 118, "samples": 120, "top_causes": causes}},
    )
    assert res.decision == "INVALID"
    md, page, pr = render_markdown(res), render_html(res), render_pr_comment(res)
    for text in (md, page, pr):
        assert "INVALID" in text and "118" in text and "ConnectError" in text
        assert XSS not in text and "&lt;script" in text
    assert "Errors in the candidate's eval run: 118 of 120 samples" in md
    suite_el = ET.fromstring(render_junit(res).split("\n", 1)[1]).find("testsuite")
    assert suite_el.get("errors") == "1" and suite_el.find("testcase/error").get("type") == "invalid_evidence"

    from relops_pipeline.lib.gates.model import Thresholds

    th = Thresholds(floors={"correct": 0.92}, latency_p95_budget_ms=10_000.0, allowed_regression={"*": 1.0})
    unclear = gate(run(suite(100, failing={f"c{i:03d}" for i in range(8)})), run(suite(100)), th)
    assert next(r for r in unclear.rules if r.rule == "floor:correct").outcome == "review"
    assert "floor judged on the 98.3% CI, corrected for 3 comparisons:" in unclear.metrics[0].note
    from relops_pipeline.lib.markdown import escape_md

    assert escape_md("floor judged on the 98.3% CI, corrected for 3 comparisons:") in render_markdown(unclear)
