"""Test doubles importable by path (runners call `module:function`)."""

from __future__ import annotations

import json


def fake_llm(manifest, case, sample, seed):
    """A deterministic stand-in for a model: answers the expected category, except that
    `quality: low` in the manifest's parameters gets cases tagged `hard` wrong, and a case
    tagged `explodes` raises (a runner error, recorded per sample)."""
    if "explodes" in case.tags:
        raise RuntimeError("upstream model returned garbage")
    category = case.expected.get("fields", {}).get("category", "other")
    if manifest.parameters.get("quality") == "low" and "hard" in case.tags:
        category = "wrong"
    if manifest.parameters.get("break_must_pass") and case.must_pass:
        category = "<script>alert(1)</script>"
    return {
        "output": json.dumps({"category": category, "reply": f"Thanks, we will look at your {category} issue."}),
        "latency_ms": 500.0 + 10 * sample,
        "input_tokens": 300,
        "output_tokens": 40,
    }
