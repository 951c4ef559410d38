"""Production drift: the trailing 7 days (daily) and each complete week against the workflow's
reference window, with checks whose severities come from each workflow's drift config."""

import dagster as dg

from relops_pipeline.defs.beta import with_beta_parameters
from relops_pipeline.defs.drift.metadata import DRIFT_CHECKS, drift_result
from relops_pipeline.defs.ingest.assets import SINGLE_RUN, _window, trace_features
from relops_pipeline.defs.partitions import daily_partitions, weekly_partitions
from relops_pipeline.defs.resources import WAREHOUSE_POOL, RelopsHomeResource, WarehouseResource


def _check_specs(asset: str) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(name, asset=asset, description=desc) for name, desc in DRIFT_CHECKS]


def _materialize(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource,
                 granularity: str, asset: str, *, reports: bool, days: int | None) -> dg.MaterializeResult:
    from relops_pipeline.lib.drift.run import run_drift_period

    start, end = _window(context)
    with warehouse.get_connection() as con:
        summaries = run_drift_period(
            con, home.home, granularity=granularity, start=start.date(), end=end.date(),
            run_id=context.run.run_id, reports=reports, window_days=days, log=context.log.info,
        )
    return drift_result(summaries, asset, start, end)


@with_beta_parameters(
    dg.asset,
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    pool=WAREHOUSE_POOL,
    deps=[dg.AssetDep(trace_features, partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-6))],
    group_name="drift",
    kinds={"duckdb", "evidently"},
    check_specs=_check_specs("rolling_drift"),
)
def rolling_drift(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource):
    """Per workflow and release: the trailing 7 days of production requests against the
    workflow's reference window — per column the method, score, threshold and verdict.

    The business meaning: an early warning, refreshed every day as traces arrive, that what
    users send or what the workflow answers has moved away from what it was tuned and
    evaluated on. Too little data is "insufficient", never a verdict.
    """
    return _materialize(context, home, warehouse, "rolling", "rolling_drift", reports=False, days=7)


@dg.asset(
    partitions_def=weekly_partitions,
    pool=WAREHOUSE_POOL,
    deps=[trace_features],
    group_name="drift",
    kinds={"duckdb", "evidently"},
    check_specs=_check_specs("weekly_drift"),
)
def weekly_drift(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource):
    """Per workflow and release: one complete Monday-to-Sunday week of production requests
    against the workflow's reference window, with an Evidently HTML report per workflow.

    The business meaning: the weekly drift finding the stability memo and the on-call
    reviewer read — which inputs and behaviours moved, by how much, on how many requests.
    """
    return _materialize(context, home, warehouse, "weekly", "weekly_drift", reports=True, days=None)


__all__ = ["rolling_drift", "weekly_drift"]
