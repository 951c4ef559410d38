"""Signal alert rules: each day's production signals of every workflow through its versioned
alert rules (`alerts.rules` in the workflow file, recorded as alert-rule versions)."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from relops_pipeline.defs.beta import with_beta_parameters
from relops_pipeline.defs.ingest.assets import SINGLE_RUN, _window, daily_signals, trace_features
from relops_pipeline.defs.partitions import daily_partitions
from relops_pipeline.defs.resources import WAREHOUSE_POOL, RelopsHomeResource, WarehouseResource
from relops_pipeline.lib.markdown import md_table

# Firings of older days are recorded (the history calibration replays) but not sent: an alert
# about last month's traffic, raised because its traces arrived late, would only be noise.
ALERT_MAX_AGE_DAYS = 2


@with_beta_parameters(
    dg.asset,
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    pool=WAREHOUSE_POOL,
    deps=[daily_signals, trace_features],
    group_name="alerts",
    kinds={"duckdb"},
)
def signal_rule_alerts(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource):
    """Which alert rules fired on each day's production signals, per workflow (error rate,
    p95 latency, feedback, refusals ... above or below their thresholds), and the alerts sent.

    The business meaning: the on-call page for a bad day in production; the firings are the
    history the monthly alert calibration replays to keep these rules quiet but useful.
    """
    from relops_pipeline.lib.alerts.rules import fire_rules, seed_alert_rules
    from relops_pipeline.lib.workflows import list_workflows, load_workflow

    start, end = _window(context)
    now = datetime.now(UTC).replace(tzinfo=None)
    days = [(start + timedelta(days=i)).date() for i in range((end - start).days)]
    rows = []
    with warehouse.get_connection() as con:
        for workflow in list_workflows(home.home.workflows_dir):
            wf = load_workflow(home.home.workflows_dir, workflow)
            warning = seed_alert_rules(con, wf.name, wf.alerts, wf.owner, where=f"{wf.path}: alerts")
            if warning:
                context.log.warning(warning)
            for day in days:
                send = (now.date() - day).days <= ALERT_MAX_AGE_DAYS
                for f in fire_rules(con, home.home, workflow, day, dagster_run_id=context.run.run_id, now=now,
                                    raise_alerts=send):
                    rows.append([str(day), workflow, f["rule"], f["value"], f["threshold"], f.get("alert_id") or "-"])
    context.log.info(f"{len(rows)} rule firings over {len(days)} days")
    return dg.MaterializeResult(metadata={
        "firings": dg.MetadataValue.int(len(rows)),
        "alerts_sent": dg.MetadataValue.int(sum(1 for r in rows if r[5] != "-")),
        "fired": dg.MetadataValue.md(md_table(["day", "workflow", "rule", "value", "threshold", "alert"], rows[-50:])
                                     if rows else "no rule fired"),
    })
