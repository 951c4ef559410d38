"""Signal alert rules: each day's production signals of every workflow through its versioned
alert rules (`alerts.rules` in the workflow file, recorded as alert-rule versions)."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from relops_pipeline.defs.alerts.metadata import signal_rule_alerts_result
from relops_pipeline.defs.beta import with_beta_parameters
from relops_pipeline.defs.ingest.assets import SINGLE_RUN, _window, daily_signals, trace_features
from relops_pipeline.defs.partitions import daily_partitions
from relops_pipeline.defs.resources import WAREHOUSE_POOL, RelopsHomeResource, WarehouseResource


@with_beta_parameters(
    dg.asset,
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    pool=WAREHOUSE_POOL,
    deps=[daily_signals, trace_features],
    group_name="alerts",
    kinds={"duckdb"},
)
def signal_rule_alerts(context: dg.AssetExecutionContext, home: RelopsHomeResource,
                       warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Which alert rules fired on each day's production signals, per workflow (error rate,
    p95 latency, feedback, refusals ... above or below their thresholds), and the alerts sent.

    The business meaning: the on-call page for a bad day in production; the firings are the
    history the monthly alert calibration replays to keep these rules quiet but useful.
    """
    from relops_pipeline.lib.alerts.rules import fire_signal_rules

    start, end = _window(context)
    now = datetime.now(UTC).replace(tzinfo=None)
    days = [(start + timedelta(days=i)).date() for i in range((end - start).days)]
    with warehouse.get_connection() as con:
        fired = fire_signal_rules(con, home.home, days, now=now, dagster_run_id=context.run.run_id)
    for warning in fired.warnings:
        context.log.warning(warning)
    context.log.info(f"{len(fired.firings)} rule firings over {len(days)} days")
    return signal_rule_alerts_result(fired)
