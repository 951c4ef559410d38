"""Release gates: the thresholds in force for a release and the gate decision with its evidence."""

from datetime import UTC

import dagster as dg

from relops_pipeline.defs.evals.assets import eval_run, eval_suites, release_manifest, releases_root, suites_root
from relops_pipeline.defs.evals.partitions import SUITE_VERSION_TAG, releases_partitions
from relops_pipeline.defs.resources import WAREHOUSE_POOL, RelopsHomeResource, WarehouseResource

BASELINE_TAG = "relops/baseline"
GATE_CHECKS = (
    ("must_pass", dg.AssetCheckSeverity.ERROR, True, "no must-pass case newly and confirmedly fails"),
    ("no_regression", dg.AssetCheckSeverity.ERROR, True, "no significant regression beyond the allowed amount, no floor or budget confidently missed"),
    ("enough_evidence", dg.AssetCheckSeverity.WARN, False, "enough cases, samples and a valid run with a baseline"),
)


@dg.asset(partitions_def=releases_partitions, group_name="gates", pool=WAREHOUSE_POOL, kinds={"duckdb"})
def gate_thresholds(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource):
    """The version of the workflow's gate thresholds in force for this release.

    The business meaning: the bar this release is held to — floors, allowed regression,
    budgets, minimum evidence — as a versioned, reviewed configuration, so a decision can
    always be traced to the exact bar that applied.
    """
    from datetime import datetime

    from relops_pipeline.lib.evals.model import split_release_key
    from relops_pipeline.lib.gates.thresholds import current_thresholds, seed_from_workflow_config
    from relops_pipeline.lib.workflows import load_workflow

    key = context.partition_key
    workflow_name, _ = split_release_key(key)
    wf = load_workflow(home.home.workflows_dir, workflow_name)
    with warehouse.get_connection() as con:
        warning = seed_from_workflow_config(con, wf.name, wf.thresholds, wf.owner, where=f"{wf.path}: thresholds")
        th = current_thresholds(con, wf.name)
        con.execute(
            "INSERT INTO release_thresholds VALUES (?, ?, ?, ?, ?)",
            [key, wf.name, th.version, context.run.run_id, datetime.now(UTC).replace(tzinfo=None)],
        )
    if warning:
        context.log.warning(warning)
    return dg.MaterializeResult(
        metadata={
            "thresholds_version": dg.MetadataValue.int(th.version),
            "author": th.author or "built-in defaults",
            "reason": th.reason or "",
            "confidence": dg.MetadataValue.float(th.confidence),
            "min_cases": dg.MetadataValue.int(th.min_cases),
            "thresholds": dg.MetadataValue.json(th.as_dict()),
            **({"warning": warning} if warning else {}),
        }
    )


@dg.asset(
    partitions_def=releases_partitions,
    deps=[eval_run, gate_thresholds, release_manifest, eval_suites],
    group_name="gates",
    pool=WAREHOUSE_POOL,
    kinds={"duckdb"},
    check_specs=[dg.AssetCheckSpec(n, asset="release_gate", description=d, blocking=b) for n, _, b, d in GATE_CHECKS],
)
def release_gate(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource):
    """The release decision — SHIP, BLOCK or REVIEW — with its evidence and report.

    The business meaning: whether this release may go to production. It compares the
    release's eval run with the baseline's on the same suite version under the thresholds in
    force, with intervals, must-pass re-samples and the manifest diff; the decision is an
    append-only record, and a BLOCK fails the blocking checks (and so the run).
    """
    from relops_pipeline.lib.gates.gate import evaluate_gate

    key = context.partition_key
    tags = context.run.tags
    outcome = evaluate_gate(
        home=home.home,
        connection=warehouse.get_connection,
        key=key,
        baseline=tags.get(BASELINE_TAG),
        suite_version=tags.get(SUITE_VERSION_TAG),
        dagster_run_id=context.run.run_id,
        log=context.log.info,
    )
    result = outcome["result"]
    by_rule = {r.rule: r for r in result.rules}
    must_pass_ok = all(r.outcome != "block" for r in result.rules if r.rule == "must_pass")
    regression_ok = all(r.outcome != "block" for r in result.rules if r.rule != "must_pass")
    evidence_ok = all(r.outcome == "pass" for r in result.rules if r.rule.startswith(("evidence:", "run:", "baseline:")))
    checks = [
        dg.AssetCheckResult(check_name="must_pass", passed=must_pass_ok, severity=dg.AssetCheckSeverity.ERROR,
                            metadata={"decision": result.decision, **({"rule": by_rule["must_pass"].message} if "must_pass" in by_rule else {})}),
        dg.AssetCheckResult(check_name="no_regression", passed=regression_ok, severity=dg.AssetCheckSeverity.ERROR,
                            metadata={"decision": result.decision,
                                      "blocking_rules": ", ".join(r.rule for r in result.rules if r.outcome == "block" and r.rule != "must_pass") or "none"}),
        dg.AssetCheckResult(check_name="enough_evidence", passed=evidence_ok, severity=dg.AssetCheckSeverity.WARN,
                            metadata={"review_rules": ", ".join(r.rule for r in result.rules if r.outcome == "review") or "none"}),
    ]
    metrics = {}
    for m in result.metrics:
        if m.delta is not None and m.delta.estimate is not None:
            metrics[f"delta/{m.metric}"] = dg.MetadataValue.float(float(m.delta.estimate))
        if m.candidate.estimate is not None:
            metrics[f"candidate/{m.metric}"] = dg.MetadataValue.float(float(m.candidate.estimate))
    reports = outcome["reports"]
    return dg.MaterializeResult(
        metadata={
            "decision": result.decision,
            "baseline_version": result.baseline_version or "none",
            "gate_id": outcome["gate_id"],
            "candidate_eval_run_id": outcome["candidate_run"] or "none",
            "baseline_eval_run_id": outcome["baseline_run"] or "none",
            "suite_version": outcome["suite_version"] or "none",
            "thresholds_version": dg.MetadataValue.int(outcome["thresholds_version"]),
            **metrics,
            "report_html": dg.MetadataValue.path(reports["html"]),
            "report_md": dg.MetadataValue.path(reports["md"]),
            "report": dg.MetadataValue.md(outcome["pr_comment"]),
        },
        check_results=checks,
    )


release_gate_job = dg.define_asset_job(
    "release_gate_job",
    selection=[gate_thresholds, release_gate],
    description="Record the thresholds in force and decide a release's gate.",
)

__all__ = ["gate_thresholds", "release_gate", "release_gate_job", "suites_root", "releases_root"]
