"""The sensor that turns failed checks into rollback-alert runs, once per failure, and the
sensor that regenerates the runbooks when their inputs change."""

import json
from datetime import UTC, datetime

import dagster as dg

from relops_pipeline.defs.releases.jobs import rollback_alert_job, runbook_job
from relops_pipeline.defs.resources import RelopsHomeResource, WarehouseBusy, WarehouseResource


@dg.sensor(job=rollback_alert_job, minimum_interval_seconds=5, default_status=dg.DefaultSensorStatus.RUNNING)
def failed_checks_sensor(context: dg.SensorEvaluationContext):
    """A failed gate, canary or drift check launches the rollback-alert job, once per failure
    and workflow (defs/followups.py plans the response). Reads the check evaluations of runs
    that finished since the last tick; on its first tick it only starts its cursor: failures
    from before the sensor existed are history, not news."""
    from relops_pipeline.defs.followups import after_failed_check, failed_checks_of_run

    cursor = json.loads(context.cursor) if context.cursor else None
    if cursor is None:
        last = context.instance.get_run_records(filters=dg.RunsFilter(statuses=FINISHED), order_by="update_timestamp",
                                                ascending=False, limit=1)
        return dg.SensorResult(cursor=json.dumps({"t": last[0].update_timestamp.timestamp() if last else 0.0,
                                                  "runs": [last[0].dagster_run.run_id] if last else []}))
    since = cursor["t"]
    seen = set(cursor["runs"])
    # Timestamps are coarse: look one second back and skip the runs already seen there.
    after = datetime.fromtimestamp(since - 1, tz=UTC) if since else None
    finished = [r for r in context.instance.get_run_records(
        filters=dg.RunsFilter(statuses=FINISHED, updated_after=after), order_by="update_timestamp", ascending=True, limit=200)
        if r.dagster_run.run_id not in seen]
    newest = max([r.update_timestamp.timestamp() for r in finished] + [since])
    # The runs within the last second are remembered: the next tick looks one second back.
    keep = {r.dagster_run.run_id for r in finished if r.update_timestamp.timestamp() >= newest - 1}
    if newest - since < 1:
        keep |= seen
    new_cursor = json.dumps({"t": newest, "runs": sorted(keep)})
    requests = [f.run_request() for r in finished for failure in failed_checks_of_run(context.instance, r.dagster_run.run_id)
                for f in after_failed_check(failure)]
    return dg.SensorResult(run_requests=requests, cursor=new_cursor)


FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]


@dg.sensor(job=runbook_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def runbook_inputs_sensor(context: dg.SensorEvaluationContext, home: RelopsHomeResource, warehouse: WarehouseResource):
    """Regenerate the runbooks when the registry, drills, thresholds or configuration change."""
    from relops_pipeline.lib.runbook import runbook_inputs
    from relops_pipeline.lib.workflows import load_all

    h = home.home
    loaded = load_all(h.workflows_dir)
    for warning in loaded.warnings():
        context.log.warning(warning)
    try:
        with warehouse.read_only(requires="registry_state") as con:
            if con is None:
                return dg.SkipReason("the warehouse has no registry yet")
            hashes = {wf.name: runbook_inputs(con, h, wf)["inputs_hash"] for wf in loaded.workflows}
    except WarehouseBusy:
        return dg.SkipReason("the warehouse is busy; trying again on the next tick")
    key = "-".join(f"{n}:{h}" for n, h in sorted(hashes.items()))
    if key == context.cursor:
        return dg.SkipReason("the runbooks' inputs have not changed")
    # No run key: the cursor dedupes, and inputs that return to an earlier state must still
    # regenerate the runbook.
    return dg.SensorResult(run_requests=[dg.RunRequest()], cursor=key)
