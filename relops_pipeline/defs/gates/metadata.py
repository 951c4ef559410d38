"""Typed results of the gates domain (lib/gates) as materialization metadata and check results."""

from __future__ import annotations

import dagster as dg

from relops_pipeline.defs.evals.partitions import release_check_spec
from relops_pipeline.lib import rounding
from relops_pipeline.lib.evals.model import split_release_key
from relops_pipeline.lib.gates.gate import GateOutcome
from relops_pipeline.lib.gates.glance import ERROR, PASS, WARN, ApprovalEvent, DecisionGlance, glance
from relops_pipeline.lib.gates.service import GateRecord, ThresholdsInForce
from relops_pipeline.lib.home import Home
from relops_pipeline.lib.markdown import escape_md
from relops_pipeline.lib.report_links import release_url, report_url

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
    (
        "gate_decision",
        dg.AssetCheckSeverity.WARN,
        False,
        "the release's decision at a glance: SHIP or an approved REVIEW pass; a REVIEW waiting for approval and "
        "an overridden BLOCK warn; a BLOCK errors",
    ),
)
GATE_DECISION_CHECK = "gate_decision"

# One result per release partition (defs/evals/partitions.release_check_spec).
GATE_CHECK_SPECS = [release_check_spec(n, "release_gate", d, blocking=b) for n, _, b, d in GATE_CHECKS]

SEVERITY = {WARN: dg.AssetCheckSeverity.WARN, ERROR: dg.AssetCheckSeverity.ERROR, PASS: dg.AssetCheckSeverity.WARN}
# Materialization tags: the decision and its at-a-glance status, filterable in the UI.
DECISION_TAG, STATUS_TAG = "relops/decision", "relops/status"


def glance_check_evaluation(g: DecisionGlance, home: Home, instance: dg.DagsterInstance,
                            gate: GateRecord | None = None) -> dg.AssetCheckEvaluation:
    """The gate_decision check of a release partition as an evaluation a sensor reports (after
    an approval or override changes the release's status; the gate run reports the first). It
    targets the partition's latest gate materialization, so the UI counts it as the current
    status of that partition (an evaluation without a target is shown but not current). The
    gate's reports (`gate`, its latest record) are linked: a BLOCK has no materialization to
    carry them."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData,
    )

    reports: dict[str, dg.MetadataValue] = {label: dg.MetadataValue.url(report_url(home, path))
               for label, path in (("report_html", gate and gate.report_html), ("report_md", gate and gate.report_md)) if path}
    r = _glance_check(g, home, reports)
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("release_gate"), asset_partitions=[g.release_key]), limit=1).records
    target = (AssetCheckEvaluationTargetMaterializationData(storage_id=records[0].storage_id, run_id=records[0].run_id,
                                                            timestamp=records[0].timestamp) if records else None)
    return dg.AssetCheckEvaluation(asset_key=dg.AssetKey("release_gate"), check_name=GATE_DECISION_CHECK, passed=r.passed,
                                   severity=r.severity, description=r.description, metadata=r.metadata,
                                   partition=g.release_key, target_materialization_data=target)


def approval_asset_event(e: ApprovalEvent, home: Home) -> dg.AssetMaterialization | dg.AssetObservation:
    """An approval or override as a materialization of the release's `release_approval`
    partition (the release may now go out); a refusal as an observation (nothing was approved,
    but the attempt stays visible beside it)."""
    workflow, version = split_release_key(e.release_key)
    what = {"approval": "approved", "override": "overridden", "refused": "refused"}.get(e.kind, e.kind)
    metadata: dict[str, dg.RawMetadataValue] = {
        "kind": dg.MetadataValue.text(e.kind),
        "by": dg.MetadataValue.text(e.actor),
        "reason": dg.MetadataValue.text(e.reason),
        "at": dg.MetadataValue.text(e.ts),
        "release_key": dg.MetadataValue.text(e.release_key),
        "audit_seq": dg.MetadataValue.int(e.seq),
        "release_page": dg.MetadataValue.url(release_url(home, workflow, version)),
    }
    description = f"{e.release_key} {what} by {e.actor}: {e.reason}"
    if e.kind == "refused":
        return dg.AssetObservation(asset_key="release_approval", partition=e.release_key, description=description,
                                   metadata=metadata, tags={STATUS_TAG: what})
    return dg.AssetMaterialization(asset_key="release_approval", partition=e.release_key, description=description,
                                   metadata=metadata, tags={STATUS_TAG: what})


def _glance_check(g: DecisionGlance, home: Home, reports: dict[str, dg.MetadataValue] | None = None) -> dg.AssetCheckResult:
    workflow, version = split_release_key(g.release_key)
    metadata: dict[str, dg.RawMetadataValue] = {
        "status": dg.MetadataValue.text(g.status),
        "decision": dg.MetadataValue.text(g.decision),
        "release_key": dg.MetadataValue.text(g.release_key),
        "suite_version": dg.MetadataValue.text(g.suite_version),
        "release_page": dg.MetadataValue.url(release_url(home, workflow, version)),
        **(reports or {}),
    }
    if g.by:
        metadata["by"] = dg.MetadataValue.text(g.by)
    return dg.AssetCheckResult(check_name=GATE_DECISION_CHECK, passed=g.outcome == PASS, severity=SEVERITY[g.outcome],
                               description=g.description, metadata=metadata)


def gate_thresholds_result(t: ThresholdsInForce) -> dg.MaterializeResult:
    th = t.thresholds
    return dg.MaterializeResult(
        metadata={
            "thresholds_version": dg.MetadataValue.int(th.version),
            "author": th.author or "built-in defaults",
            "reason": th.reason or "",
            "confidence": dg.MetadataValue.float(rounding.rate(th.confidence)),
            "min_cases": dg.MetadataValue.int(th.min_cases),
            "thresholds": dg.MetadataValue.json(th.as_dict()),
            **({"warning": t.warning} if t.warning else {}),
        }
    )


def invalid_evidence_failure(outcome: GateOutcome, home: Home, release_key: str) -> dg.Failure:
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
            **_links(home, release_key, outcome),
        },
    )


def blocked_failure(outcome: GateOutcome, home: Home, release_key: str) -> dg.Failure:
    """The failure of a BLOCKed gate, raised after its check results: the partition shows as
    failed in the UI (a BLOCK must not look like a SHIP), with the decision, the reasons and the
    reports on the failure. Never retried: the decision is recorded, a retry would only repeat it."""
    result = outcome.result
    where = f"{release_key} on suite {outcome.suite_version or 'none'}"
    return dg.Failure(
        description=f"BLOCK: {where}: " + "; ".join(result.reasons),
        metadata={
            "decision": "BLOCK",
            "release_key": release_key,
            "suite_version": outcome.suite_version or "none",
            "baseline_version": result.baseline_version or "none",
            "gate_id": outcome.gate_id,
            "candidate_eval_run_id": outcome.candidate_run or "none",
            **_links(home, release_key, outcome),
            "report": dg.MetadataValue.md(outcome.pr_comment),
        },
        allow_retries=False,
    )


def _links(home: Home, release_key: str, outcome: GateOutcome) -> dict[str, dg.MetadataValue]:
    """Browser links (relops serve): the gate's reports and the release's page."""
    workflow, version = split_release_key(release_key)
    return {
        "report_html": dg.MetadataValue.url(report_url(home, outcome.reports.html)),
        "report_md": dg.MetadataValue.url(report_url(home, outcome.reports.md)),
        "release_page": dg.MetadataValue.url(release_url(home, workflow, version)),
    }


def release_gate_result(outcome: GateOutcome, home: Home, release_key: str) -> dg.MaterializeResult:
    """The decision, its evidence and reports as metadata; the rules as the gate checks, each
    naming the release and the suite version it was judged on, and the decision at a glance
    (gate_decision: pass, warn or error per release partition)."""
    result = outcome.result
    suite = outcome.suite_version or "none"
    where = f"{release_key} on suite {suite}"
    named = {"release_key": dg.MetadataValue.text(release_key), "suite_version": dg.MetadataValue.text(suite)}
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
            description=f"{where}: " + ("no must-pass case newly fails" if must_pass_ok else "a must-pass case newly fails"),
            metadata={"decision": result.decision, **named, **must_pass_rule},
        ),
        dg.AssetCheckResult(
            check_name="no_regression",
            passed=regression_ok,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"{where}: " + ("no blocking regression" if regression_ok else f"blocked by {blocking}"),
            metadata={"decision": result.decision, **named, "blocking_rules": blocking},
        ),
        dg.AssetCheckResult(
            check_name="enough_evidence",
            passed=evidence_ok,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{where}: " + ("enough evidence" if evidence_ok else f"needs review: {review}"),
            metadata={**named, "review_rules": review},
        ),
        # the gate's reports on the check too: a BLOCK has no materialization to carry them
        _glance_check(glance(release_key, outcome.suite_version, result.decision), home, _links(home, release_key, outcome)),
    ]
    metrics = {}
    for m in result.metrics:
        if m.delta is not None and m.delta.estimate is not None:
            metrics[f"delta/{m.metric}"] = dg.MetadataValue.float(rounding.by_name(m.metric, m.delta.estimate))
        if m.candidate.estimate is not None:
            metrics[f"candidate/{m.metric}"] = dg.MetadataValue.float(rounding.by_name(m.metric, m.candidate.estimate))
    return dg.MaterializeResult(
        tags={DECISION_TAG: result.decision, STATUS_TAG: result.decision},
        metadata={
            "decision": result.decision,
            "baseline_version": result.baseline_version or "none",
            "gate_id": outcome.gate_id,
            "candidate_eval_run_id": outcome.candidate_run or "none",
            "baseline_eval_run_id": outcome.baseline_run or "none",
            "suite_version": outcome.suite_version or "none",
            "thresholds_version": dg.MetadataValue.int(outcome.thresholds_version),
            **metrics,
            **_links(home, release_key, outcome),
            "report": dg.MetadataValue.md(outcome.pr_comment),
        },
        check_results=checks,
    )
