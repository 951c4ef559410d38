"""Typed results of the gates domain (lib/gates) as materialization metadata and check results."""

from __future__ import annotations

import dagster as dg

from relops_pipeline.lib.gates.gate import GateOutcome
from relops_pipeline.lib.gates.service import ThresholdsInForce
from relops_pipeline.lib.markdown import escape_md

# The release gate's checks: name, severity, blocking, meaning.
GATE_CHECKS = (
    ("must_pass", dg.AssetCheckSeverity.ERROR, True, "no must-pass case newly and confirmedly fails"),
    (
        "no_regression",
        dg.AssetCheckSeverity.ERROR,
        True,
        "no significant regression beyond the allowed amount, no floor or budget confidently missed",
    ),
    (
        "enough_evidence",
        dg.AssetCheckSeverity.WARN,
        False,
        "enough cases and samples, with a baseline (an invalid run is no evidence: the gate fails instead)",
    ),
)


def gate_thresholds_result(t: ThresholdsInForce) -> dg.MaterializeResult:
    th = t.thresholds
    return dg.MaterializeResult(
        metadata={
            "thresholds_version": dg.MetadataValue.int(th.version),
            "author": th.author or "built-in defaults",
            "reason": th.reason or "",
            "confidence": dg.MetadataValue.float(th.confidence),
            "min_cases": dg.MetadataValue.int(th.min_cases),
            "thresholds": dg.MetadataValue.json(th.as_dict()),
            **({"warning": t.warning} if t.warning else {}),
        }
    )


def invalid_evidence_failure(outcome: GateOutcome) -> dg.Failure:
    """The failure of a gate whose candidate run is invalid: the reasons (with the top error
    causes, endpoint text escaped for markdown) and the report, recorded as INVALID."""
    result = outcome.result
    errors = result.evidence.get("candidate_errors") or {}
    causes = errors.get("top_causes") or []
    lines = [f"- {c['count']} of {c['samples']} samples: {escape_md(str(c['cause']))}" for c in causes]
    return dg.Failure(
        description="invalid evidence, no decision: " + "; ".join(result.reasons),
        metadata={
            "decision": "INVALID",
            "gate_id": outcome.gate_id,
            "candidate_eval_run_id": outcome.candidate_run or "none",
            "invalid_reason": str(errors.get("invalid_reason") or ""),
            "error_causes": dg.MetadataValue.md("\n".join(lines) or "_no error messages recorded_"),
            "report_html": dg.MetadataValue.path(outcome.reports.html),
            "report_md": dg.MetadataValue.path(outcome.reports.md),
        },
    )


def release_gate_result(outcome: GateOutcome) -> dg.MaterializeResult:
    """The decision, its evidence and reports as metadata; the rules as the three gate checks."""
    result = outcome.result
    by_rule = {r.rule: r for r in result.rules}
    must_pass_ok = all(r.outcome != "block" for r in result.rules if r.rule == "must_pass")
    regression_ok = all(r.outcome != "block" for r in result.rules if r.rule != "must_pass")
    evidence_ok = all(r.outcome == "pass" for r in result.rules if r.rule.startswith(("evidence:", "run:", "baseline:")))
    must_pass_rule = {"rule": by_rule["must_pass"].message} if "must_pass" in by_rule else {}
    blocking = ", ".join(r.rule for r in result.rules if r.outcome == "block" and r.rule != "must_pass") or "none"
    review = ", ".join(r.rule for r in result.rules if r.outcome == "review") or "none"
    checks = [
        dg.AssetCheckResult(
            check_name="must_pass",
            passed=must_pass_ok,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"decision": result.decision, **must_pass_rule},
        ),
        dg.AssetCheckResult(
            check_name="no_regression",
            passed=regression_ok,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"decision": result.decision, "blocking_rules": blocking},
        ),
        dg.AssetCheckResult(
            check_name="enough_evidence", passed=evidence_ok, severity=dg.AssetCheckSeverity.WARN, metadata={"review_rules": review}
        ),
    ]
    metrics = {}
    for m in result.metrics:
        if m.delta is not None and m.delta.estimate is not None:
            metrics[f"delta/{m.metric}"] = dg.MetadataValue.float(float(m.delta.estimate))
        if m.candidate.estimate is not None:
            metrics[f"candidate/{m.metric}"] = dg.MetadataValue.float(float(m.candidate.estimate))
    return dg.MaterializeResult(
        metadata={
            "decision": result.decision,
            "baseline_version": result.baseline_version or "none",
            "gate_id": outcome.gate_id,
            "candidate_eval_run_id": outcome.candidate_run or "none",
            "baseline_eval_run_id": outcome.baseline_run or "none",
            "suite_version": outcome.suite_version or "none",
            "thresholds_version": dg.MetadataValue.int(outcome.thresholds_version),
            **metrics,
            "report_html": dg.MetadataValue.path(outcome.reports.html),
            "report_md": dg.MetadataValue.path(outcome.reports.md),
            "report": dg.MetadataValue.md(outcome.pr_comment),
        },
        check_results=checks,
    )
