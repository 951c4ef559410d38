"""What relops does when a gate, canary or drift check fails: roll back where the workflow's
policy allows it, otherwise recommend it — and in both cases open an incident with the
evidence and send an alert that carries the runbook. Used by the rollback-alert job and by
`relops rollback` alike, so both leave the same records.

Order matters: the registry flip comes first (time to rollback ends at the flip), then the
incident, then the alert (written to the outbox, delivered by the alert delivery job).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from relops_pipeline.lib.alerts import Alert
from relops_pipeline.lib.alerts.service import raise_alert
from relops_pipeline.lib.home import Home
from relops_pipeline.lib.incidents import example_traces, open_incident
from relops_pipeline.lib.registry.policy import decide
from relops_pipeline.lib.registry.rollout import (
    RollbackRecommendation,
    TransitionResult,
    link_rollback,
    record_recommendation,
    rollback,
)
from relops_pipeline.lib.registry.state import get_state
from relops_pipeline.lib.workflows import Workflow

# Alert severity per trigger when relops rolled back (the page is "it happened, verify") and
# when it only recommends (a human must act).
SEVERITY = {("rollback", "gate"): "error", ("rollback", "canary"): "error", ("rollback", "drift"): "error",
            ("alert_only", "gate"): "error", ("alert_only", "canary"): "critical", ("alert_only", "drift"): "warning",
            ("rollback", "manual"): "warning", ("alert_only", "manual"): "warning"}


# How many example traces of a failing canary the incident links (they become test cases).
CANARY_EXAMPLE_TRACES = 20


@dataclass(frozen=True)
class FailureResponse:
    """What relops did about a failed check (or a manual rollback). Round-trips through JSON
    (lib/results.py); the rollback-alert job's output is its JSON.

    decision: rollback | alert_only | not_serving (a failed release that never served: alert
    only) | none (the rollback found nothing to do, see `why`). `rollback`: the registry
    change (or the attempt that found nothing to do); `recommendation`: the rollback recorded
    as recommended when the policy forbids it."""

    decision: str
    why: str
    workflow: str
    release: str | None
    trigger: str
    rollback_id: str | None = None
    rollback: TransitionResult | None = None
    recommendation: RollbackRecommendation | None = None
    incident_id: str | None = None
    alert_id: str | None = None
    alert_status: str | None = None
    time_to_rollback_s: float | None = None
    live_after: str | None = None


@dataclass(frozen=True)
class FailureHandled:
    """respond_to_failure, then the runbook refreshed. The alert is in the outbox; it is delivered
    after, outside the warehouse (defs/alerts deliver_alerts), so no sink holds up a rollback."""

    response: FailureResponse


def runbook_path(home: Home, workflow: str):
    return home.reports_dir / "runbooks" / f"{workflow}.md"


def canary_examples(con: duckdb.DuckDBPyConnection, workflow: str, release: str,
                    limit: int = CANARY_EXAMPLE_TRACES) -> tuple[list[str], datetime | None]:
    """(example trace ids of the canary, when the canary window began): the window of the
    latest canary analysis of the release, else the release's whole traffic; errors, refusals
    and the slowest traces in turn (incidents.example_traces)."""
    from relops_pipeline.lib.canary.service import canary_window

    row = con.execute("SELECT window_start, window_end FROM canary_analyses WHERE workflow = ? AND canary = ? "
                      "ORDER BY computed_at DESC LIMIT 1", [workflow, release]).fetchone()
    window = (row[0], row[1]) if row else canary_window(con, workflow, release)
    if window is None:
        return [], None
    return [e["trace_id"] for e in example_traces(con, workflow, release, window[0], window[1], limit=limit)], window[0]


def respond_to_failure(
    con: duckdb.DuckDBPyConnection,
    home: Home,
    wf: Workflow,
    *,
    release: str | None,
    trigger: str,
    reason: str,
    check_evaluated_at: datetime | None = None,
    evidence: Mapping[str, Any] | None = None,
    links: Mapping[str, Any] | None = None,
    run_id: str | None = None,
    actor: str = "relops",
    manual_to: str | None = None,
) -> FailureResponse:
    """Decide by policy and act. `trigger`: gate | canary | drift | manual (manual always rolls
    back, to `manual_to` or the last known good). Returns what was done."""
    state = get_state(con, wf.name)
    if trigger == "manual":
        decision, why = "rollback", f"manual rollback by {actor}"
    elif trigger in ("gate", "canary") and release and state.stage_of(release) is None:
        # A BLOCKed release that never reached production: nothing to roll back and no
        # incident; the owner hears that it must not be rolled out.
        record = raise_alert(con, home, Alert(
            kind=f"{trigger}.blocked", severity="warning",
            title=f"{wf.name}: {release} failed its {trigger} check; it does not serve traffic",
            workflow=wf.name, release=release, summary=f"{reason}. Do not roll it out.",
            evidence={k: v for k, v in (evidence or {}).items() if isinstance(v, (int, float, str, bool))},
            links=dict(links or {}), runbook=str(runbook_path(home, wf.name)),
            dedup_key=f"{trigger}:{wf.name}:{release}", dagster_run_id=run_id,
        ))
        return FailureResponse(decision="not_serving", why=f"{release} is not in the registry: nothing to roll back",
                               workflow=wf.name, release=release, trigger=trigger, alert_id=record.alert_id,
                               alert_status=record.status, live_after=state.live)
    else:
        decision, why = decide(wf, state, trigger, release)
    done: TransitionResult | None = None
    rec: RollbackRecommendation | None = None
    if decision == "rollback":
        res = rollback(con, home.registry_dir, wf.name, to=manual_to, trigger=trigger, reason=reason, actor=actor,
                       automatic=trigger != "manual", check_evaluated_at=check_evaluated_at, run_id=run_id,
                       release=release if trigger != "manual" else None, policy=wf)
        if not res.performed:
            return FailureResponse(decision="none", why=res.message, workflow=wf.name, release=release, trigger=trigger,
                                   rollback=res, live_after=state.live)
        assert res.rollback_id is not None  # a performed rollback is recorded under an id
        rollback_id, done = res.rollback_id, res
        if trigger == "manual":
            release = res.release  # what was rolled back: the incident's and the alert's subject
        headline = (f"{wf.name}: rolled back {res.release} -> {res.to_release}" if trigger == "manual" else
                    f"{wf.name}: {release or res.release} rolled back automatically after a failed {trigger} check")
    else:
        rec = record_recommendation(con, wf.name, release=release, trigger=trigger, reason=f"{reason} ({why})",
                                    actor=actor, check_evaluated_at=check_evaluated_at, run_id=run_id)
        rollback_id = rec.rollback_id
        headline = f"{wf.name}: rollback of {release or 'the live release'} recommended after a failed {trigger} check"
    all_links = {**(links or {}), "runbook": str(runbook_path(home, wf.name))}
    if run_id:
        all_links.setdefault("dagster_run", run_id)
    title = (f"manual rollback of {release or 'the live release'}" if trigger == "manual"
             else f"failed {trigger} check" + (f" on {release}" if release else ""))
    incident_links: dict[str, Any] = {**all_links, "rollback_id": rollback_id}
    started_at = None
    if trigger == "canary" and release:
        traces, started_at = canary_examples(con, wf.name, release)
        if traces:
            incident_links["traces"] = traces
    incident = open_incident(con, wf.name, release, title, trigger, actor, links=incident_links, started_at=started_at)
    numbers = {k: v for k, v in (evidence or {}).items() if isinstance(v, (int, float, str, bool)) or v is None}
    if done is not None and done.time_to_rollback_s is not None:
        numbers["time_to_rollback_s"] = round(float(done.time_to_rollback_s), 3)
    record = raise_alert(con, home, Alert(
        kind=f"{trigger}.{'rollback' if decision == 'rollback' else 'recommend_rollback'}",
        severity=SEVERITY.get((decision, trigger), "error"),
        title=headline,
        workflow=wf.name,
        release=release,
        summary=f"{reason}. {why}. Incident {incident['incident_id']}.",
        evidence=numbers,
        links=all_links,
        runbook=str(runbook_path(home, wf.name)),
        dedup_key=f"{trigger}:{wf.name}:{release or '-'}" + (f":{rollback_id}" if trigger == "manual" else ""),
        dagster_run_id=run_id,
    ))
    link_rollback(con, rollback_id, alert_id=record.alert_id, incident_id=incident["incident_id"])
    return FailureResponse(
        decision=decision, why=why, workflow=wf.name, release=release, trigger=trigger, rollback_id=rollback_id,
        rollback=done, recommendation=rec, incident_id=incident["incident_id"], alert_id=record.alert_id,
        alert_status=record.status, time_to_rollback_s=done.time_to_rollback_s if done is not None else None,
        live_after=get_state(con, wf.name).live,
    )


def handle_failure(con: duckdb.DuckDBPyConnection, home: Home, wf: Workflow, **respond: Any) -> FailureHandled:
    """What the rollback-alert job does under the warehouse lock: respond_to_failure
    (`respond`: its keyword arguments) and refresh the workflow's runbook. No network call."""
    from relops_pipeline.lib.runbook import write_runbook

    out = respond_to_failure(con, home, wf, **respond)
    write_runbook(con, home, wf)
    return FailureHandled(out)
