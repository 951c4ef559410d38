"""promptfoo 0.123.1 (the current release): its `eval -o` output, from a real run with the echo
provider (fixtures/promptfoo_0_123/PROVENANCE.md), is read with every field of its truth file."""

from __future__ import annotations

import json

from relops_pipeline.lib.evals.imports import detect_format, import_results, list_variants
from relops_pipeline_tests.conftest import FIXTURES

CLIENT = "promptfoo 0.123.1"
HERE = FIXTURES / "promptfoo_0_123"
OUT = HERE / "echo-demo.output.json"
TRUTH = json.loads((HERE / "truth.json").read_text(encoding="utf-8"))


def test_promptfoo_0_123_output_every_truth_field():
    assert f"{TRUTH['client']} {TRUTH['client_version']}" == CLIENT and TRUTH["output_version"] == 3
    assert detect_format(OUT) == "promptfoo"
    assert len(list_variants(OUT)) == 1
    data = import_results(OUT, None, workflow="support-triage", version="v0.9.0")
    assert data.source == "import:promptfoo"
    by_desc = {s.raw["description"]: s for s in data.samples}
    assert sorted(by_desc) == sorted(TRUTH["results"]) and len(data.samples) == 4
    assert any("promptfoo output v3" in n for n in data.notes)
    for desc, t in TRUTH["results"].items():
        s = by_desc[desc]
        where = f"{CLIENT} test {desc}"
        assert s.case_id.startswith(desc + "-"), (where, "case id")
        assert t["provider"] in " ".join(data.notes), (where, "provider")
        assert s.raw["input"] == {"vars": t["vars"], "prompt": t["prompt"]}, (where, "vars and rendered prompt")
        assert s.output == t["output"], (where, "output")
        assert s.latency_ms == t["latency_ms"], (where, "latency")
        assert s.input_tokens == t["prompt_tokens"], (where, "prompt tokens")
        assert s.output_tokens == t["completion_tokens"], (where, "completion tokens")
        assert s.cost_usd == t["cost"], (where, "cost")
        # promptfoo sets `error` on an assertion failure too; only failureReason 2 is an error
        assert s.error == (t["error"] if t["failure_reason"] == 2 else None), (where, "error")
        scores = data.scores[(s.case_id, 0)]
        overall, *parts = scores
        assert (overall.metric, overall.passed, overall.score) == ("pass", t["pass"], float(t["pass"])), where
        assert t["reason"] in overall.detail, (where, "reason")
        assert [(p.metric, p.passed, p.score) for p in parts] == [
            (a["type"], a["pass"], float(a["score"])) for a in t["assertions"]], (where, "assertions")
    assert [d for d, t in TRUTH["results"].items() if not t["pass"]] == ["refund-004"]
    assert TRUTH["results"]["refund-004"]["failure_reason"] == 1
    assert "(日本から)" in by_desc["shipping-003"].output
