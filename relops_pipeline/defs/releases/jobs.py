"""The rollback-alert job, and the jobs and schedules of runbooks and drills."""

import dagster as dg

from relops_pipeline.defs.alerts.jobs import deliver_alerts
from relops_pipeline.defs.releases.assets import (
    drill_fresh,
    report_registry_change,
    rollback_drill,
    rollback_runbook,
)
from relops_pipeline.defs.releases.metadata import (
    failure_output_metadata,
    rollback_registry_change,
    transition_output_metadata,
    transition_registry_change,
)
from relops_pipeline.defs.resources import WAREHOUSE_POOL, RelopsHomeResource, WarehouseResource
from relops_pipeline.lib.identity import SERVICE_ACTOR
from relops_pipeline.lib.results import to_json

# Registry changes (rollbacks above all) take the next free warehouse slot before any other
# waiting step.
REGISTRY_FIRST = {"dagster/priority": "10"}


class FailureConfig(dg.Config):
    """What failed: the sensors fill this from the failed check's evaluation."""

    workflow: str
    release: str | None = None
    trigger: str  # gate | canary | drift | manual
    reason: str
    check_evaluated_at: str | None = None  # ISO 8601 UTC: when the failing check was evaluated
    evidence_json: str = "{}"
    links_json: str = "{}"
    actor: str = SERVICE_ACTOR  # automatic responses are relops' own (lib/identity.py)
    to_release: str | None = None  # manual rollback only
    # A person's rollback (relops rollback): who asked (Principal.to_json) and as which label
    # (--by); authorized here, against the workflow's roles in force, before anything changes.
    principal_json: str | None = None
    by: str | None = None


@dg.op(pool=WAREHOUSE_POOL, tags=REGISTRY_FIRST)
def rollback_or_alert(context: dg.OpExecutionContext, config: FailureConfig, home: RelopsHomeResource,
                      warehouse: WarehouseResource) -> dict:
    """Decide by the workflow's policy: roll back a release in canary or ramp automatically
    where allowed, otherwise recommend it; open an incident, write the alert to the outbox
    (delivered by the next op, outside the warehouse pool), and refresh the runbook. Records time to rollback. The output is the
    FailureResponse's JSON (lib/results.py: from_json(FailureResponse, output))."""
    import json
    from datetime import datetime

    from relops_pipeline.lib.registry.respond import handle_failure
    from relops_pipeline.lib.workflows import load_workflow

    wf = load_workflow(home.home.workflows_dir, config.workflow)
    evaluated = datetime.fromisoformat(config.check_evaluated_at) if config.check_evaluated_at else None
    with warehouse.get_connection() as con:
        actor = _authorized(con, home, wf, config.principal_json, "rollback", request=f"roll back {wf.name}",
                            by=config.by, asked=config.reason) or config.actor
        handled = handle_failure(
            con, home.home, wf, release=config.release, trigger=config.trigger, reason=config.reason,
            check_evaluated_at=evaluated, evidence=json.loads(config.evidence_json), links=json.loads(config.links_json),
            run_id=context.run.run_id, actor=actor, manual_to=config.to_release,
        )
    out = handled.response
    context.log.info(f"{config.workflow}: {out.decision} — {out.why}")
    if out.decision == "rollback":
        report_registry_change(context, wf.name, out.release, rollback_registry_change(out))
    context.add_output_metadata(failure_output_metadata(handled, release=config.release))
    return to_json(out)


def _authorized(con, home: RelopsHomeResource, wf, principal_json: str | None, action: str, *, request: str,
                by: str | None, asked: str, release_key: str | None = None) -> str | None:
    """The label a person's request acts as, once authorized (lib/identity.authorize_request:
    a refusal is recorded, then raised and fails the run); None for a run that carries no
    principal (relops' own automatic responses, the demo's story, a launch from the UI)."""
    if not principal_json:
        return None
    from relops_pipeline.lib.identity import Principal, authorize_request
    from relops_pipeline.lib.settings import load_identity_settings

    return authorize_request(con, home.home.workflows_dir, wf, Principal.from_json(principal_json),
                             load_identity_settings(home.home.settings_file), action, request=request, by=by,
                             asked=asked, release_key=release_key)


@dg.job(description="Act on a failed gate, canary or drift check (or a manual rollback): roll back by policy or "
                    "recommend it, open an incident, alert with the evidence and the runbook.")
def rollback_alert_job():
    deliver_alerts(after=rollback_or_alert())


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
    # A person's request (relops rollout): who asked and as which label; authorized here.
    principal_json: str | None = None
    by: str | None = None


@dg.op(pool=WAREHOUSE_POOL, tags=REGISTRY_FIRST)
def change_registry(context: dg.OpExecutionContext, config: RegistryChangeConfig, home: RelopsHomeResource,
                    warehouse: WarehouseResource) -> dict:
    """Move a release to a rollout stage: refused unless its gate allows it (or an owner
    overrides, recorded); then the registry, its event and the pointer file, and the runbook.
    The output is the TransitionResult's JSON (lib/results.py: from_json(TransitionResult, output))."""
    from relops_pipeline.lib.evals.model import release_key
    from relops_pipeline.lib.registry import transition
    from relops_pipeline.lib.runbook import write_runbook
    from relops_pipeline.lib.workflows import load_workflow

    wf = load_workflow(home.home.workflows_dir, config.workflow)
    with warehouse.get_connection() as con:
        key = release_key(wf.name, config.release)
        action, request = (("override", f"override the gate to roll out {key}") if config.override
                           else ("rollout", f"roll out {key} to {config.stage}"))
        actor = _authorized(con, home, wf, config.principal_json, action, request=request, by=config.by,
                            asked=config.reason, release_key=key) or config.actor
        res = transition(con, home.home.registry_dir, wf.name, action=config.stage, release=config.release,
                         percent=config.percent, actor=actor, reason=config.reason, override=config.override,
                         policy=wf)
        write_runbook(con, home.home, wf)
    if res.performed:
        report_registry_change(context, wf.name, config.release,
                               transition_registry_change(res, stage=config.stage, actor=actor))
    context.add_output_metadata(transition_output_metadata(res, release=config.release, stage=config.stage))
    return to_json(res)


@dg.job(description="Move a release to a rollout stage (shadow, canary, ramp, full) in the registry.")
def registry_change_job():
    change_registry()
