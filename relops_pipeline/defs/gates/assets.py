"""Release gates: the thresholds in force for a release and the gate decision with its evidence."""

import dagster as dg

from relops_pipeline.defs.evals.assets import eval_run, eval_suites, release_manifest, releases_root, suites_root
from relops_pipeline.defs.evals.partitions import SUITE_VERSION_TAG, releases_partitions
from relops_pipeline.defs.gates.metadata import GATE_CHECK_SPECS, gate_thresholds_result, release_gate_result
from relops_pipeline.defs.resources import WAREHOUSE_POOL, RelopsHomeResource, WarehouseResource

BASELINE_TAG = "relops/baseline"


@dg.asset(partitions_def=releases_partitions, group_name="gates", pool=WAREHOUSE_POOL, kinds={"duckdb"})
def gate_thresholds(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource):
    """The version of the workflow's gate thresholds in force for this release.

    The business meaning: the bar this release is held to — floors, allowed regression,
    budgets, minimum evidence — as a versioned, reviewed configuration, so a decision can
    always be traced to the exact bar that applied.
    """
    from relops_pipeline.lib.evals.model import split_release_key
    from relops_pipeline.lib.gates.service import record_thresholds_in_force
    from relops_pipeline.lib.workflows import load_workflow

    key = context.partition_key
    workflow_name, _ = split_release_key(key)
    wf = load_workflow(home.home.workflows_dir, workflow_name)
    with warehouse.get_connection() as con:
        recorded = record_thresholds_in_force(con, key, wf, dagster_run_id=context.run.run_id)
    if recorded.warning:
        context.log.warning(recorded.warning)
    return gate_thresholds_result(recorded)


@dg.asset(
    partitions_def=releases_partitions,
    deps=[eval_run, gate_thresholds, release_manifest, eval_suites],
    group_name="gates",
    pool=WAREHOUSE_POOL,
    kinds={"duckdb"},
    check_specs=GATE_CHECK_SPECS,
)
def release_gate(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource):
    """The release decision — SHIP, BLOCK or REVIEW — with its evidence and report.

    The business meaning: whether this release may go to production. It compares the
    release's eval run with the baseline's on the same suite version under the thresholds in
    force, with intervals, must-pass re-samples and the manifest diff; the decision is an
    append-only record. A BLOCK records its check results and then fails the step, so the
    release's partition shows as failed (red) in the partition view, beside the green of a SHIP
    or a REVIEW; the decision, reasons and report links are on the failure and on the checks.
    Each release partition keeps its own check results, and `gate_decision` shows the decision
    at a glance (SHIP passes, REVIEW warns, BLOCK errors; the approvals sensor updates it when a
    REVIEW is approved or a BLOCK overridden). An invalid eval
    run (e.g. the endpoint was down) is an error, not a decision: it is recorded as INVALID
    (which nobody can approve or override) with its report, and the step fails naming the top
    error causes, so the partition shows as failed rather than as a REVIEW.
    """
    from relops_pipeline.defs.gates.metadata import blocked_failure, invalid_evidence_failure
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
    if outcome.result.decision == "INVALID":
        raise invalid_evidence_failure(outcome, home.home, key)
    result = release_gate_result(outcome, home.home, key)
    if outcome.result.decision == "BLOCK":
        yield from result.check_results or []
        raise blocked_failure(outcome, home.home, key)
    yield result


# Approvals are made by people (relops approve, an override on rollout), not computed: the
# asset is declared so they sit in the release's lineage between its gate and its rollout plan;
# the approvals sensor (defs/gates/sensors.py) reports each one from the audit log.
release_approval = dg.AssetSpec(
    "release_approval",
    deps=[release_gate],
    partitions_def=releases_partitions,
    group_name="gates",
    kinds={"duckdb"},
    description="Who let the release go out despite its gate: each approval of a REVIEW or override of a BLOCK "
                "is a materialization of the release's partition (by whom, why, when); a refused attempt is an "
                "observation. Read from the hash-chained audit log by the approvals sensor.",
)

__all__ = ["gate_thresholds", "release_gate", "release_approval", "suites_root", "releases_root"]
