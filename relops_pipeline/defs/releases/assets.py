"""Rollout and rollback: each release's rollout plan, each workflow's rollback runbook, and
the rollback drills that keep it practised."""

import dagster as dg

from relops_pipeline.defs.evals.partitions import RELEASES_PARTITIONS, release_check_spec, releases_partitions
from relops_pipeline.defs.gates.assets import gate_thresholds, release_approval, release_gate
from relops_pipeline.defs.releases.metadata import (
    canary_result,
    drill_fresh_result,
    drills_result,
    rollout_plan_result,
    runbooks_result,
)
from relops_pipeline.defs.resources import WAREHOUSE_POOL, RelopsHomeResource, WarehouseResource
from relops_pipeline.lib.home import Home
from relops_pipeline.lib.workflows import Workflow


# No direct edge from release_gate: `relops gate` materializes the plan in the gate's run, and a
# BLOCK (a failed blocking check) would skip a direct dependant; the plan is the release's
# whatever its decision, and it follows the gate through release_approval in the lineage.
@dg.asset(partitions_def=releases_partitions, deps=[release_approval, gate_thresholds], group_name="releases",
          pool=WAREHOUSE_POOL, kinds={"duckdb"})
def rollout_plan(context: dg.AssetExecutionContext, home: RelopsHomeResource,
                 warehouse: WarehouseResource) -> dg.MaterializeResult:
    """How this release reaches production: stages with traffic shares and minimum durations,
    and the rollback triggers derived from the workflow's thresholds and rollout policy.

    The business meaning: the agreed path from a passed gate to full traffic, and exactly what
    makes relops pull the release back on the way.
    """
    from relops_pipeline.lib.evals.model import split_release_key
    from relops_pipeline.lib.gates.thresholds import current_thresholds
    from relops_pipeline.lib.registry.policy import rollout_plan as plan_for
    from relops_pipeline.lib.workflows import load_workflow

    workflow, version = split_release_key(context.partition_key)
    wf = load_workflow(home.home.workflows_dir, workflow)
    with warehouse.get_connection() as con:
        plan = plan_for(wf, current_thresholds(con, workflow))
    return rollout_plan_result(plan, home.home, context.partition_key)


# The registry is changed by ops (a person's rollout, the rollback-alert job), not computed: it
# is declared here so the lineage of a release decision runs on to it, and each change is
# reported as a materialization of the release's partition (stage, pointer seq, rollback time).
release_registry = dg.AssetSpec(
    "release_registry",
    deps=[rollout_plan, "canary_analysis"],
    partitions_def=releases_partitions,
    group_name="releases",
    kinds={"json"},
    description="What production serves: the registry's state and the pointer file the serving application reads. "
                "Each rollout step or rollback of the release is a materialization of its partition, with the stage, "
                "the pointer's seq and, for a rollback, the trigger and the time to rollback.",
)


def report_registry_change(context: dg.OpExecutionContext, workflow: str, release: str | None,
                           metadata: dict[str, dg.MetadataValue]) -> None:
    """Report a registry change of `release` as a materialization of `release_registry`."""
    from relops_pipeline.lib.evals.model import release_key

    if not release:
        return
    key = release_key(workflow, release)
    if not context.instance.has_dynamic_partition(RELEASES_PARTITIONS, key):
        context.log.warning(f"{key} is not a registered release: its registry change is not reported as an asset")
        return
    context.log_event(dg.AssetMaterialization(asset_key="release_registry", partition=key, metadata=metadata))


def _workflows(home: Home, context: dg.AssetExecutionContext | None = None) -> list[Workflow]:
    """Every workflow that loads; a broken workflow file is logged and skipped, never the others."""
    from relops_pipeline.lib.workflows import load_all

    loaded = load_all(home.workflows_dir)
    if context is not None:
        for warning in loaded.warnings():
            context.log.warning(warning)
    return list(loaded.workflows)


@dg.asset(group_name="releases", pool=WAREHOUSE_POOL, kinds={"duckdb"}, deps=["rollback_drill"])
def rollback_runbook(context: dg.AssetExecutionContext, home: RelopsHomeResource,
                     warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The rollback runbook of every workflow (markdown under the home's reports/runbooks):
    live and last known good, triggers, the manual rollback commands, how to verify from
    traces, the owner, and the last drill's result and timing.

    The business meaning: what the on-call engineer follows at 3 a.m. — regenerated whenever
    the registry, the drills, the thresholds or the workflow's configuration change.
    """
    from relops_pipeline.lib.runbook import write_runbook

    with warehouse.get_connection() as con:
        written = [write_runbook(con, home.home, wf) for wf in _workflows(home.home, context)]
    return runbooks_result(written, home.home)


@dg.asset(group_name="releases", pool=WAREHOUSE_POOL, kinds={"duckdb"})
def rollback_drill(context: dg.AssetExecutionContext, home: RelopsHomeResource,
                   warehouse: WarehouseResource) -> dg.MaterializeResult:
    """A rehearsed rollback of every workflow: on a sandbox copy of its registry, roll back,
    read the pointer back as the serving application would, time it, restore, record.

    The business meaning: evidence that rollback works today and how long it takes — a
    rollback that is never practised fails when it is needed.
    """
    from relops_pipeline.lib.drills import drill_workflows

    with warehouse.get_connection() as con:
        drilled = drill_workflows(con, home.home.registry_dir, [wf.name for wf in _workflows(home.home, context)], actor="relops",
                                  run_id=context.run.run_id)
    failed = [d.workflow for d in drilled if d.drill is not None and not d.drill.passed]
    if failed:
        context.log.warning(f"rollback drills failed for {', '.join(failed)}")
    return drills_result(drilled)


@dg.asset_check(asset=rollback_drill, name="drill_fresh", description="the last drill passed within 35 days")
def drill_fresh(home: RelopsHomeResource, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    """Fails when any workflow's last passing drill is older than 35 days, or its last drill failed."""
    from relops_pipeline.lib.drills import rolled_out_drill_statuses

    with warehouse.get_connection() as con:
        statuses = rolled_out_drill_statuses(con, [wf.name for wf in _workflows(home.home)])
    return drill_fresh_result(statuses)


# The canary judges production requests: the traces it reads are its evidence in the lineage
# (every day of them: the release's days are only known from the data).
CANARY_EVIDENCE = [dg.AssetDep(asset, partition_mapping=dg.AllPartitionMapping()) for asset in ("raw_traces", "trace_features")]


@dg.asset(partitions_def=releases_partitions, deps=[release_gate, *CANARY_EVIDENCE], group_name="releases",
          pool=WAREHOUSE_POOL, kinds={"duckdb"}, check_specs=[release_check_spec(
              "canary_healthy", "canary_analysis",
              "the canary is no worse than the baseline serving at the same time")])
def canary_analysis(context: dg.AssetExecutionContext, home: RelopsHomeResource,
                    warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The canary's production requests judged against the live release's requests in the same
    intervals (Kayenta style): per metric a rank, tail or proportion test with an interval and
    a tolerance, critical metrics that veto, and a verdict that fails only after consecutive
    failing intervals.

    The business meaning: whether the release that passed its gate also holds up on real
    traffic — a failed check here rolls it back where the policy allows.
    """
    from relops_pipeline.lib.canary.service import judge_release_canary
    from relops_pipeline.lib.evals.model import split_release_key
    from relops_pipeline.lib.workflows import load_workflow

    key = context.partition_key
    workflow, version = split_release_key(key)
    wf = load_workflow(home.home.workflows_dir, workflow)
    with warehouse.get_connection() as con:
        outcome = judge_release_canary(con, home.home, wf, version, run_id=context.run.run_id)
    return canary_result(outcome, key, home.home)
