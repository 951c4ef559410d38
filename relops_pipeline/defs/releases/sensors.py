"""Sensors that turn failed checks into rollback-alert runs, once per failure, and the sensor
that regenerates the runbooks when their inputs change."""

import json
from datetime import UTC, datetime

import dagster as dg

from relops_pipeline.defs.beta import expected_beta_warnings
from relops_pipeline.defs.ingest.assets import trace_signals_job
from relops_pipeline.defs.releases.jobs import canary_job, rollback_alert_job, runbook_job

# trigger -> the checks whose failure launches the rollback-alert job.
FAILURE_CHECKS = {
    "gate": (("release_gate", "must_pass"), ("release_gate", "no_regression")),
    "canary": (("canary_analysis", "canary_healthy"),),
    "drift": (("weekly_drift", "critical_columns_stable"), ("weekly_drift", "drifted_share_within_limit"),
              ("rolling_drift", "critical_columns_stable"), ("rolling_drift", "drifted_share_within_limit")),
}


def _evaluation(record):
    return record.event.dagster_event.event_specific_data


def _run_finished(instance, run_id: str) -> bool:
    run = instance.get_run_by_id(run_id)
    return run is None or run.is_finished  # a check of a finished run that never ran stays planned


def _failed(record) -> bool:
    ev = getattr(record.event.dagster_event, "event_specific_data", None) if record.event.dagster_event else None
    return getattr(ev, "passed", True) is False


def requests_for_failure(trigger: str, record, instance=None) -> list[dg.RunRequest]:
    """The rollback-alert runs one failed check evaluation asks for (one per workflow)."""
    from relops_pipeline.lib.evals.model import split_release_key

    ev = _evaluation(record)
    # The evaluation event's time (the row's create_timestamp is when the check was planned).
    evaluated_at = datetime.fromtimestamp(record.event.timestamp, tz=UTC).isoformat()
    meta = {k: getattr(v, "value", v) for k, v in (ev.metadata or {}).items()}
    check = f"{ev.asset_key.to_user_string()}:{ev.check_name}"
    links = {"check": check, "dagster_run": record.run_id}
    targets = []
    if trigger == "drift":
        for f in meta.get("failing") or []:
            rel = f.get("release")
            targets.append((f["workflow"], None if rel in (None, "*") else rel, f"{check} failed: {f['reason']}",
                            {"period_start": f.get("period_start"), "severity": f.get("severity")}))
    else:
        # Checks of a partitioned asset carry no partition here: the run's partition tag does.
        key = ev.partition or record.event.dagster_event.partition or meta.get("release_key")
        if not key and instance is not None:
            run = instance.get_run_by_id(record.run_id)
            key = run.tags.get("dagster/partition") if run else None
        if not key:
            return []
        workflow, version = split_release_key(key)
        reason = ev.description or f"{check} failed"
        targets.append((workflow, version, f"{check} failed for {key}: {reason}",
                        {k: v for k, v in meta.items() if isinstance(v, (int, float, str, bool))}))
    return [
        dg.RunRequest(
            run_key=f"{trigger}-{record.id}-{workflow}",
            run_config={"ops": {"rollback_or_alert": {"config": {
                "workflow": workflow, "release": release, "trigger": trigger, "reason": reason[:2000],
                "check_evaluated_at": evaluated_at, "evidence_json": json.dumps(evidence, default=str),
                "links_json": json.dumps(links)}}}},
            tags={"relops/trigger": f"{trigger}-check", "relops/workflow": workflow, **({"relops/release": release} if release else {})},
        )
        for workflow, release, reason, evidence in targets
    ]


def failed_checks_since(instance, trigger: str, cursor: dict[str, int]) -> tuple[list, dict[str, int]]:
    """(failed check execution records newer than the cursor, the new cursor) for a trigger.
    A check seen for the first time starts from its newest record: failures from before the
    sensor existed are history, not news."""
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

    records, new = [], dict(cursor)
    for asset, name in FAILURE_CHECKS[trigger]:
        key = dg.AssetCheckKey(dg.AssetKey(asset), name)
        history = instance.event_log_storage.get_asset_check_execution_history(key, limit=100)
        # A check still running (planned) keeps its id: the cursor must stay below it, or its
        # failure, recorded later in the same row, would never be seen.
        newest = max((r.id for r in history), default=0)
        planned = [r.id for r in history if r.status == AssetCheckExecutionRecordStatus.PLANNED
                   and not _run_finished(instance, r.run_id)]
        if planned:
            newest = min(newest, min(planned) - 1)
        ck = key.to_user_string()
        if ck not in cursor:
            new[ck] = newest
            continue
        records += [r for r in history if cursor[ck] < r.id <= newest and r.event is not None and _failed(r)]
        new[ck] = max(cursor[ck], newest)
    return sorted(records, key=lambda r: r.id), new


def _failure_sensor(trigger: str):
    def sensor_fn(context: dg.SensorEvaluationContext):
        cursor = json.loads(context.cursor) if context.cursor else {}
        records, new_cursor = failed_checks_since(context.instance, trigger, cursor)
        requests = [req for r in records for req in requests_for_failure(trigger, r, context.instance)]
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(new_cursor, sort_keys=True))

    sensor_fn.__name__ = f"{trigger}_failure_sensor"
    sensor_fn.__doc__ = f"A failed {trigger} check launches the rollback-alert job, once per failure."
    return dg.sensor(name=f"{trigger}_failure_sensor", job=rollback_alert_job, minimum_interval_seconds=5,
                     default_status=dg.DefaultSensorStatus.RUNNING)(sensor_fn)


gate_failure_sensor = _failure_sensor("gate")
canary_failure_sensor = _failure_sensor("canary")
drift_failure_sensor = _failure_sensor("drift")


def runbook_inputs_sensor(context: dg.SensorEvaluationContext):
    """Regenerate the runbooks when the registry, drills, thresholds or configuration change."""
    from relops_pipeline.lib.home import Home
    from relops_pipeline.lib.runbook import runbook_inputs
    from relops_pipeline.lib.warehouse import connect, is_lock_error
    from relops_pipeline.lib.workflows import list_workflows, load_workflow

    home = Home.resolve()
    if not home.warehouse_path.exists():
        return dg.SkipReason("no warehouse yet")
    try:
        con = connect(home.warehouse_path, read_only=True, timeout_s=5)
    except Exception as exc:  # noqa: BLE001 — busy: next tick
        if is_lock_error(exc):
            return dg.SkipReason("the warehouse is busy; trying again on the next tick")
        raise
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        if "registry_state" not in tables:
            return dg.SkipReason("the warehouse has no registry yet")
        hashes = {n: runbook_inputs(con, home, load_workflow(home.workflows_dir, n))["inputs_hash"]
                  for n in list_workflows(home.workflows_dir)}
    finally:
        con.close()
    key = "-".join(f"{n}:{h}" for n, h in sorted(hashes.items()))
    if key == context.cursor:
        return dg.SkipReason("the runbooks' inputs have not changed")
    # No run key: the cursor dedupes, and inputs that return to an earlier state must still
    # regenerate the runbook.
    return dg.SensorResult(run_requests=[dg.RunRequest()], cursor=key)


runbook_inputs_sensor = dg.sensor(job=runbook_job, minimum_interval_seconds=60,
                                  default_status=dg.DefaultSensorStatus.RUNNING)(runbook_inputs_sensor)


def canary_traces_sensor(context: dg.RunStatusSensorContext):
    """After new traces' signals are computed, judge every release that is in canary (or ramp)."""
    from relops_pipeline.lib.evals.model import release_key
    from relops_pipeline.lib.home import Home
    from relops_pipeline.lib.registry.state import list_states
    from relops_pipeline.lib.warehouse import connect, is_lock_error

    home = Home.resolve()
    try:
        con = connect(home.warehouse_path, read_only=True, timeout_s=10)
    except Exception as exc:  # noqa: BLE001 — busy: the next signals run asks again
        if is_lock_error(exc):
            return dg.SkipReason("the warehouse is busy")
        raise
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        states = list_states(con) if "registry_state" in tables else []
    finally:
        con.close()
    keys = [release_key(s.workflow, s.canary) for s in states if s.canary and s.stage in ("canary", "ramp")]
    if not keys:
        return dg.SkipReason("no release is in canary")
    from relops_pipeline.defs.evals.partitions import releases_partitions

    # A release rolled out without being registered here still gets its canary judged.
    missing = [k for k in keys if not context.instance.has_dynamic_partition(releases_partitions.name, k)]
    if missing:
        context.instance.add_dynamic_partitions(releases_partitions.name, missing)
    run_id = context.dagster_run.run_id
    return [dg.RunRequest(run_key=f"canary-{run_id}-{k}", partition_key=k, tags={"relops/trigger": f"signals:{run_id}"})
            for k in keys]


with expected_beta_warnings():
    canary_traces_sensor = dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[trace_signals_job], request_job=canary_job,
        default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=5,
    )(canary_traces_sensor)
