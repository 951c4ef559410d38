"""The rollback-alert job, and the jobs and schedules of runbooks and drills."""

import dagster as dg

from relops_pipeline.defs.releases.assets import (
    drill_fresh,
    report_registry_change,
    rollback_drill,
    rollback_runbook,
)
from relops_pipeline.defs.resources import WAREHOUSE_POOL, RelopsHomeResource, WarehouseResource


class FailureConfig(dg.Config):
    """What failed: the sensors fill this from the failed check's evaluation."""

    workflow: str
    release: str | None = None
    trigger: str  # gate | canary | drift | manual
    reason: str
    check_evaluated_at: str | None = None  # ISO 8601 UTC: when the failing check was evaluated
    evidence_json: str = "{}"
    links_json: str = "{}"
    actor: str = "relops"
    to_release: str | None = None  # manual rollback only


@dg.op(pool=WAREHOUSE_POOL)
def rollback_or_alert(context: dg.OpExecutionContext, config: FailureConfig, home: RelopsHomeResource,
                      warehouse: WarehouseResource) -> dict:
    """Decide by the workflow's policy: roll back a release in canary or ramp automatically
    where allowed, otherwise recommend it; open an incident, write the alert to the outbox,
    deliver it, and refresh the runbook. Records time to rollback."""
    import json
    from datetime import datetime

    from relops_pipeline.lib.alerts.service import deliver
    from relops_pipeline.lib.registry.respond import respond_to_failure
    from relops_pipeline.lib.runbook import write_runbook
    from relops_pipeline.lib.workflows import load_workflow

    wf = load_workflow(home.home.workflows_dir, config.workflow)
    evaluated = datetime.fromisoformat(config.check_evaluated_at) if config.check_evaluated_at else None
    with warehouse.get_connection() as con:
        out = respond_to_failure(
            con, home.home, wf, release=config.release, trigger=config.trigger, reason=config.reason,
            check_evaluated_at=evaluated, evidence=json.loads(config.evidence_json), links=json.loads(config.links_json),
            run_id=context.run.run_id, actor=config.actor, manual_to=config.to_release,
        )
        write_runbook(con, home.home, wf)
        report = deliver(con, home.home)
        if out.get("alert_id"):
            from relops_pipeline.lib.alerts import get_alert

            stored = get_alert(con, out["alert_id"])
            out["alert_status"] = stored.status if stored else out.get("alert_status")
    context.log.info(f"{config.workflow}: {out['decision']} — {out['why']}")
    if out["decision"] == "rollback":
        rb = out.get("rollback") or {}
        report_registry_change(context, wf.name, out.get("release"), {
            "action": "rollback", "trigger": config.trigger, "to": rb.get("to_release") or out.get("live_after") or "-",
            "live": out.get("live_after") or "-", "incident_id": out.get("incident_id") or "-",
            **({"time_to_rollback_s": float(out["time_to_rollback_s"])} if out.get("time_to_rollback_s") is not None else {}),
        })
    meta = {"decision": out["decision"], "workflow": wf.name, "release": config.release or "-", "trigger": config.trigger,
            "alerts_delivered": len(report.delivered), "alerts_retrying": len(report.retrying)}
    if out.get("time_to_rollback_s") is not None:
        meta["time_to_rollback_s"] = float(out["time_to_rollback_s"])
    if out.get("incident_id"):
        meta["incident_id"] = out["incident_id"]
    context.add_output_metadata(meta)
    return out


@dg.job(description="Act on a failed gate, canary or drift check (or a manual rollback): roll back by policy or "
                    "recommend it, open an incident, alert with the evidence and the runbook.")
def rollback_alert_job():
    rollback_or_alert()


runbook_job = dg.define_asset_job("runbook_job", selection=[rollback_runbook],
                                  description="Regenerate every workflow's rollback runbook.")
drill_job = dg.define_asset_job("drill_job", selection=dg.AssetSelection.assets(rollback_drill, rollback_runbook),
                                description="Rehearse every workflow's rollback in a sandbox, then refresh the runbooks.")
drill_freshness_job = dg.define_asset_job("drill_freshness_job", selection=dg.AssetSelection.checks(drill_fresh),
                                          description="Check that every workflow's rollback was drilled recently.")

monthly_drill_schedule = dg.ScheduleDefinition(
    job=drill_job, cron_schedule="0 7 1 * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING, description="The first of each month, 07:00 UTC: a rollback drill.",
)
daily_drill_freshness_schedule = dg.ScheduleDefinition(
    job=drill_freshness_job, cron_schedule="30 7 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING, description="Every day: is the last drill recent and passing?",
)


class RegistryChangeConfig(dg.Config):
    """A rollout stage change requested by a person (relops rollout)."""

    workflow: str
    release: str
    stage: str  # shadow | canary | ramp | full
    percent: float | None = None
    actor: str
    reason: str
    override: bool = False


@dg.op(pool=WAREHOUSE_POOL)
def change_registry(context: dg.OpExecutionContext, config: RegistryChangeConfig, home: RelopsHomeResource,
                    warehouse: WarehouseResource) -> dict:
    """Move a release to a rollout stage: refused unless its gate allows it (or an owner
    overrides, recorded); then the registry, its event and the pointer file, and the runbook."""
    from relops_pipeline.lib.registry import transition
    from relops_pipeline.lib.runbook import write_runbook
    from relops_pipeline.lib.workflows import load_workflow

    wf = load_workflow(home.home.workflows_dir, config.workflow)
    with warehouse.get_connection() as con:
        res = transition(con, home.home.registry_dir, wf.name, action=config.stage, release=config.release,
                         percent=config.percent, actor=config.actor, reason=config.reason, override=config.override,
                         policy=wf)
        write_runbook(con, home.home, wf)
    after = res.after
    if res.performed:
        report_registry_change(context, wf.name, config.release, {
            "action": config.stage, "live": after.live or "-", "canary": after.canary or "-",
            "last_known_good": after.last_known_good or "-", "seq": after.seq, "by": config.actor,
            "override": bool(config.override)})
    context.add_output_metadata({"workflow": wf.name, "release": config.release, "stage": config.stage,
                                 "live": after.live or "-", "canary": after.canary or "-",
                                 "last_known_good": after.last_known_good or "-", "seq": after.seq})
    return res.as_dict()


@dg.job(description="Move a release to a rollout stage (shadow, canary, ramp, full) in the registry.")
def registry_change_job():
    change_registry()
