"""Alert delivery: the outbox is drained by a job, launched by a sensor whenever deliveries are due."""

from datetime import UTC

import dagster as dg

from relops_pipeline.defs.alerts.metadata import delivery_metadata
from relops_pipeline.defs.resources import RelopsHomeResource, WarehouseBusy, WarehouseResource


# Not in the warehouse pool: delivery talks to the network, and a sink that hangs must not keep
# a rollback (or anything) waiting. It opens the warehouse only for its short reads and records.
@dg.op(ins={"after": dg.In(dg.Nothing, description="runs after this op (the rollback's response)")})
def deliver_alerts(context: dg.OpExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource) -> dict:
    """Send every due alert delivery to its sink; failures are retried later with backoff and
    dead-lettered after the last attempt (nothing leaves the outbox)."""
    from relops_pipeline.lib.alerts.service import deliver

    report = deliver(warehouse.get_connection, home.home)
    for a in report.attempts:
        log = context.log.info if a.outcome == "delivered" else context.log.warning
        log(f"alert {a.alert_id} -> {a.sink}: {a.outcome}" + (f" ({a.error})" if a.error else ""))
    context.add_output_metadata(delivery_metadata(report))
    return report.to_dict()


@dg.job(description="Deliver the alerts waiting in the outbox to their sinks (retries with backoff, dead-letters).")
def deliver_alerts_job():
    deliver_alerts()


@dg.sensor(job=deliver_alerts_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def alert_delivery_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
    """Launch a delivery run when the outbox has deliveries due (checked every 30 s)."""
    from datetime import datetime

    from relops_pipeline.lib.alerts.service import due_count

    now = datetime.now(UTC).replace(tzinfo=None)
    try:
        with warehouse.read_only(requires="alert_deliveries") as con:
            due = due_count(con, now) if con is not None else 0
    except WarehouseBusy:
        return dg.SkipReason("the warehouse is busy; trying again on the next tick")
    if not due:
        return dg.SkipReason("no alert delivery is due")
    # One run per minute at most: the key dedupes ticks while a run is queued.
    return dg.RunRequest(run_key=f"deliver-{now:%Y%m%dT%H%M}", tags={"relops/due": str(due)})
