"""The release registry: rollout stages, rollbacks, policy, plans — and where the pieces live.

Pure library (no dagster). Warehouse tables from migration 6: registry_state (one row per
workflow, the current state), rollbacks, incidents, drills. History is the hash-chained event
log (relops_pipeline.lib.audit): kinds `rollout`, `rollback`, `refused` (a refused rollout),
`rollback_recommended`, `incident_opened`, `incident_closed`, `drill`.

API
---
State and pointer (state.py, deployers.py)::

    get_state(con, workflow) -> RegistryState        # seq 0 = never rolled out
    RegistryState(workflow, seq, live, canary, canary_percent, shadow, stage, last_known_good,
                  updated_by, reason, event_seq, updated_at); .candidate, .stage_of(release)
    write_pointer(registry_dir, state) -> Path       # atomic; refuses to move seq backwards
    PointerFileDeployer() | WebhookDeployer(url, secret_env=...)   # .deploy(registry_dir, state)
    deployer_from_config(workflow.rollout.get("deployer"))

    The serving side reads the pointer with relops_pipeline.registry (stdlib only):
    read_pointer(home_or_registry_dir, workflow) -> Pointer; choose_release(pointer, request_key).

Changes (rollout.py) — all record first, then deploy; call them outside a transaction::

    transition(con, registry_dir, workflow, *, action, release, percent=None, actor, reason,
               override=False, deployer=None, policy=None, approvers=None) -> TransitionResult
        action: shadow | canary | ramp | full | rollback (release = optional target then).
        policy: the Workflow (approvers = owner + delegates) or its rollout mapping.
        Raises RolloutRefused (recorded as a `refused` event) when the gate does not allow the
        release (not SHIP / approved REVIEW / overridden BLOCK) or a required stage (canary) was
        skipped, unless override=True — then what was waived is in the event. Raises
        RegistryError for requests no override fixes (another candidate in flight, already live,
        backwards, canary with nothing live, stage not in the policy, bad percent).
    rollback(con, registry_dir, workflow, *, to=None, trigger, reason, actor, automatic,
             check_evaluated_at=None, alert_id=None, incident_id=None, run_id=None,
             release=None, deployer=None, policy=None) -> TransitionResult
        Candidate in shadow/canary/ramp: removed, traffic back to live (or `to`).
        Otherwise live -> last known good (or `to`). `release` = what the failed check was about:
        if it no longer serves, nothing happens (performed False) — retries never roll back twice.
        Writes a rollbacks row; flipped_at = when the pointer was replaced;
        time_to_rollback_s = flipped_at - check_evaluated_at.
    record_recommendation(con, workflow, *, release, trigger, reason, actor, automatic=True,
                          check_evaluated_at=None, alert_id=None, incident_id=None, run_id=None)
        -> RollbackRecommendation
        decide() said alert_only: a rollbacks row with performed false; registry untouched.
    link_rollback(con, rollback_id, *, alert_id=None, incident_id=None) -> row
    sync_pointer(con, registry_dir, workflow, *, deployer=None, policy=None) -> dict
        Re-derive and re-deliver the pointer from registry_state (idempotent); completes the
        flipped_at of a rollback whose deploy had failed. sync_pointer_at_home(home, workflow)
        does it for a home (opens the warehouse, reads the workflow's deployer).
    list_rollbacks(con, workflow=None, limit=None); history(con, workflow, limit=None)

The rollback-alert job, in this order (flip first: time to rollback ends at the flip)::

    state = get_state(con, wf); decision, why = decide(workflow, state, trigger, release)
    if decision == "rollback":
        res = rollback(con, home.registry_dir, wf, trigger=trigger, reason=..., actor="relops",
                       automatic=True, check_evaluated_at=evaluated_at, run_id=run_id,
                       release=release, policy=workflow)      # res.performed False: already done
    else:
        res = record_recommendation(con, wf, release=release, trigger=trigger, reason=why, ...)
    incident = open_incident(con, wf, release, title, trigger, "relops", links={...})
    alert_id = enqueue(...)                                   # lib/alerts
    link_rollback(con, rollback_id, alert_id=alert_id, incident_id=incident["incident_id"])

Policy and plan (policy.py)::

    parse_policy(workflow.rollout | Workflow | None) -> RolloutPolicy
    decide(policy, state, trigger, release=None) -> ("rollback" | "alert_only", why)
        rollback only when auto_rollback is true, the trigger is allowed by auto_rollback_on
        (absent: all of gate, canary, drift), and the release (default: the candidate) is in
        canary or ramp. Live, shadow or gone -> alert_only.
    rollout_plan(workflow_cfg, thresholds=None) -> dict   # stages, shares, durations, triggers

Elsewhere in lib/::

    incidents.py  open_incident(con, workflow, release, title, source, opened_by, links=None)
                  (idempotent while open), close_incident(con, id, *, closed_by, resolution),
                  list_incidents(con, workflow=None, *, status="open", limit=None)
    runbook.py    render_runbook(state, plan, workflow_cfg, last_drill, home, *, incidents=None,
                  generated_at=None, sync_command=None) -> markdown
    drills.py     run_drill(con, registry_dir, workflow, *, actor, run_id=None) -> DrillResult
                  drill_status(con, workflow, now=None, max_age_days=35)
                  -> {"status": ok | stale | failed | never, "ok", "message", "last_drill", ...}
                  list_drills(con, workflow, limit=None)

The last-known-good (LKG) rule
------------------------------
The LKG is the rollback target of the live release: never the live release itself, never a
release that was rolled back from.
- Promotion of R to full (R was not live): LKG := the previous live release (it served everyone
  until R had passed its canary); with nothing live before (the first release), LKG stays None.
- shadow / canary / ramp change neither live nor LKG (a candidate's rollback target is live).
- A rollback that removes a candidate leaves live and LKG alone (unless `to` names another live).
- A rollback that replaces live: LKG := None when the old LKG is the new live or the release
  rolled back from, else unchanged. One vetted step back is kept, not a chain: rolling back live a
  second time needs an explicit `to` (a human decision).
"""

from relops_pipeline.lib.registry.deployers import (
    SIGNATURE_HEADER,
    Deployer,
    DeployError,
    PointerFileDeployer,
    WebhookDeployer,
    deployer_from_config,
    sign,
    webhook_body,
)
from relops_pipeline.lib.registry.ops import sync_pointer_at_home
from relops_pipeline.lib.registry.policy import TRIGGERS, RolloutPolicy, decide, parse_policy, rollout_plan
from relops_pipeline.lib.registry.rollout import (
    KIND_ROLLBACK_RECOMMENDED,
    RollbackRecommendation,
    RolloutRefused,
    TransitionResult,
    history,
    link_rollback,
    list_rollbacks,
    record_recommendation,
    rollback,
    sync_pointer,
    transition,
)
from relops_pipeline.lib.registry.state import (
    IN_FLIGHT,
    ROLLED_BACK,
    STAGES,
    RegistryError,
    RegistryState,
    StalePointerError,
    get_state,
    list_states,
    pointer_doc,
    write_pointer,
)

__all__ = [
    "IN_FLIGHT", "KIND_ROLLBACK_RECOMMENDED", "ROLLED_BACK", "SIGNATURE_HEADER", "STAGES", "TRIGGERS",
    "DeployError", "Deployer", "PointerFileDeployer", "RegistryError", "RegistryState", "RolloutPolicy",
    "RollbackRecommendation", "RolloutRefused", "StalePointerError", "TransitionResult", "WebhookDeployer",
    "decide", "deployer_from_config", "get_state", "history", "link_rollback", "list_rollbacks", "list_states", "parse_policy",
    "pointer_doc", "record_recommendation", "rollback", "rollout_plan", "sign", "sync_pointer",
    "sync_pointer_at_home", "transition", "webhook_body", "write_pointer",
]
