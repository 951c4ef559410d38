"""Rollout transitions and rollbacks: validated, recorded, then deployed.

Order of every change, and what a crash at each point leaves:

1. Validate against the current state, the policy and the gate (read only). A refused rollout
   (gate not releasable, a skipped stage, an override by someone who may not) is appended to
   the event log as `refused` and raised as RolloutRefused; other invalid requests raise
   RegistryError and record nothing.
2. One warehouse transaction: the event (`rollout` / `rollback`, payload with the state before
   and after), the new `registry_state` row (seq + 1, pointing at the event) and, for a
   rollback, its `rollbacks` row with `flipped_at` NULL. A crash before COMMIT leaves nothing.
3. Deploy (the pointer file, and the webhook when configured). A crash or a failure here leaves
   the warehouse one seq ahead of the pointer: the record says what should serve, the
   application still reads the previous complete pointer. `sync_pointer` re-derives and
   re-delivers the pointer from the warehouse (idempotent; the next transition does too).
4. For a rollback: `flipped_at` (the moment the pointer was replaced) and
   `time_to_rollback_s = flipped_at - check_evaluated_at` are written. A rollback whose deploy
   failed keeps `flipped_at` NULL until `sync_pointer` delivers it.

Transitions must not run inside a caller's open transaction: the pointer would be deployed
before the caller decides to commit.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from relops_pipeline.lib import audit, ledger
from relops_pipeline.lib.evals.model import release_key, validate_key
from relops_pipeline.lib.gates.service import release_state
from relops_pipeline.lib.registry.deployers import Deployer, DeployError, deployer_from_config
from relops_pipeline.lib.registry.policy import SKIPPABLE, parse_policy
from relops_pipeline.lib.registry.state import (
    IN_FLIGHT,
    ROLLED_BACK,
    STAGES,
    RegistryError,
    RegistryState,
    get_state,
    pointer_seq_on_disk,
    put_state,
    utc_naive,
)
from relops_pipeline.lib.warehouse import fetch_one

KIND_ROLLBACK_RECOMMENDED = "rollback_recommended"
_TRIGGER_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}\Z")

ROLLBACK_COLUMNS = (
    "rollback_id", "workflow", "from_release", "to_release", "trigger", "reason", "automatic", "performed",
    "check_evaluated_at", "flipped_at", "time_to_rollback_s", "alert_id", "incident_id", "actor", "event_seq",
    "dagster_run_id", "recorded_at",
)


class RolloutRefused(RegistryError):
    """The rollout is not allowed (and the refusal is in the event log)."""


@dataclass(frozen=True)
class TransitionResult:
    """What a transition or rollback did. `performed` False: nothing changed (see `message`).
    Round-trips through JSON (lib/results.py)."""

    workflow: str
    action: str  # shadow | canary | ramp | full | rollback
    release: str | None  # the release rolled out, or rolled back from
    before: RegistryState
    after: RegistryState
    event_seq: int | None
    performed: bool = True
    override: bool = False
    waived: tuple[str, ...] = ()
    receipt: dict[str, Any] | None = None
    to_release: str | None = None
    rollback_id: str | None = None
    flipped_at: datetime | None = None
    time_to_rollback_s: float | None = None
    message: str = ""


@dataclass(frozen=True)
class RollbackRecommendation:
    """A rollback recommended but not performed: where the release serves and what a rollback
    would go back to."""

    rollback_id: str
    workflow: str
    release: str | None
    serving_as: str | None  # shadow | canary | ramp | live | None
    would_roll_back_to: str | None
    event_seq: int


def _key(kind: str, value: Any) -> str:
    try:
        return validate_key(kind, value)
    except ValueError as exc:
        raise RegistryError(str(exc)) from None


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RegistryError(f"a registry change needs a non-empty {name}")
    return value.strip()


def _outside_transaction(con: duckdb.DuckDBPyConnection) -> None:
    if audit.in_transaction(con):
        raise RegistryError("registry changes deploy the pointer after committing: call them outside an open "
                            "transaction")


def _resolve_deployer(deployer: Deployer | None, policy: Any) -> Deployer:
    return deployer if deployer is not None else deployer_from_config(parse_policy(policy).deployer)


def verified_state(con: duckdb.DuckDBPyConnection, workflow: str) -> RegistryState:
    """The workflow's registry state, believed only when the keyed event log backs it (see
    lib/ledger.py): raises audit.TamperedError, changing nothing, when the row was edited,
    deleted or forged, or the log was truncated."""
    state = get_state(con, workflow)
    problem = audit.anchor_problem(con) or ledger.registry_problem(con, workflow, state)
    if problem:
        raise audit.TamperedError(f"{workflow}: {problem}; nothing was changed (see `relops audit verify`)")
    return state


def adopt_state(con: duckdb.DuckDBPyConnection, state: RegistryState, *, actor: str, reason: str) -> RegistryState:
    """Record `state` as the workflow's registry state as it stands — a registry brought in from
    elsewhere, a drill's sandbox copy, a test's starting point — with a `registry_adopted` event
    carrying its seq and routing, so that it is backed by the log like any rollout. The seq must
    be above the recorded one. Returns the state as stored (with its event_seq)."""
    actor, reason = _text("actor", actor), _text("reason", reason)
    with audit.transaction(con):
        current = get_state(con, state.workflow)
        if state.seq <= current.seq:
            raise RegistryError(f"{state.workflow}: cannot adopt seq {state.seq}: the registry is at seq {current.seq}")
        event = audit.append_event(
            con, kind=ledger.KIND_REGISTRY_ADOPTED, actor=actor, reason=reason, workflow=state.workflow,
            payload={"seq": state.seq, "before": current.releases(), "after": state.releases()},
        )
        adopted = replace(state, event_seq=event["seq"], updated_by=state.updated_by or actor,
                          updated_at=state.updated_at or utc_naive())
        put_state(con, adopted)
    return adopted


def _reread(con: duckdb.DuckDBPyConnection, before: RegistryState) -> None:
    now = get_state(con, before.workflow)
    if now.seq != before.seq:
        raise RegistryError(f"{before.workflow}: the registry changed meanwhile (seq {before.seq} -> {now.seq}): retry")


def _deploy(deployer: Deployer, registry_dir: Path, state: RegistryState) -> dict[str, Any]:
    try:
        return deployer.deploy(Path(registry_dir), state)
    except DeployError:
        raise
    except RegistryError as exc:  # e.g. a stale pointer: the record is still ahead of the file
        raise DeployError(f"{state.workflow}: seq {state.seq} is recorded but not deployed: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# Rollout


def _check_rollout(
    before: RegistryState, pol, stage: str, release: str, percent: float | None
) -> tuple[float | None, list[str]]:
    """(percent to use, waivable problems); raises RegistryError for requests no override fixes."""
    wf = before.workflow
    rollout = f"relops rollout {wf} {release}"
    if stage not in pol.stages:
        raise RegistryError(f"{wf}: stage {stage!r} is not in this workflow's rollout stages {list(pol.stages)}: "
                            f"its rollout policy leaves it out; use one of them ({rollout} --stage {pol.stages[-1]})")
    if release == before.live:
        raise RegistryError(f"{wf}: {release} is already live: full is the last rollout stage, there is nothing to "
                            f"promote it to; roll out a newer release (relops rollout {wf} VERSION --stage canary)")
    candidate = before.candidate
    if candidate is not None and candidate != release:
        raise RegistryError(f"{wf}: {candidate} is in {before.stage}: only one release rolls out at a time; promote it "
                            f"(relops rollout {wf} {candidate} --stage full) or roll it back (relops rollback {wf} "
                            f"--reason TEXT) before rolling out {release}")
    if before.live is None and stage != "full":
        raise RegistryError(f"{wf}: nothing is live yet, so there is no traffic to {stage} against: the first "
                            f"release goes straight to full; {rollout} --stage full")
    if stage == "shadow" or stage == "full":
        if percent is not None and not (stage == "full" and percent == 100):
            raise RegistryError(f"{wf}: --percent applies to canary and ramp only: {stage} takes no traffic share; "
                                f"drop --percent ({rollout} --stage {stage})")
        percent = None
    else:
        if percent is None:
            percent = pol.canary_percent if stage == "canary" else pol.ramp_percent
        if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 < percent < 100:
            raise RegistryError(f"{wf}: {stage} percent must be in (0, 100), got {percent!r}: 100 % is full; "
                                f"give a share below 100 ({rollout} --stage {stage} --percent 10) or use --stage full")
        percent = float(percent)
    current = before.stage if candidate == release else None
    if current is not None:
        if STAGES.index(stage) < STAGES.index(current):
            raise RegistryError(f"{wf}: {release} is in {current}: going back to {stage} is a rollback, not a "
                                f"rollout; relops rollback {wf} --reason TEXT")
        if stage == current and (stage == "shadow" or percent == before.canary_percent):
            later = next((s for s in pol.stages if STAGES.index(s) > STAGES.index(stage)), "full")
            raise RegistryError(f"{wf}: {release} is already in {stage}" + (f" at {percent:g} %" if percent else "")
                                + f": nothing would change; promote it ({rollout} --stage {later})")
    waived: list[str] = []
    bootstrap = before.live is None and stage == "full"
    if not bootstrap:
        reached = STAGES.index(current) if current else -1
        skipped = [s for s in pol.stages
                   if s not in SKIPPABLE and STAGES.index(s) < STAGES.index(stage) and STAGES.index(s) > reached]
        if skipped:
            waived.append(f"stage order: {release} has not been through {', '.join(skipped)} before {stage}")
    return percent, waived


def _refusal(workflow: str, release: str, action: str, waived: Sequence[str], gate: dict[str, Any],
             canary: str | None) -> str:
    """Why a rollout is refused, in one line: the problems, why they matter and the next step
    (the command that fixes the first one; --override waives them all, recorded)."""
    decision = gate.get("decision")
    if any(w.startswith("gate:") for w in waived):
        why = "a release goes out only on a SHIP, an approved REVIEW or an overridden BLOCK"
        step = {
            None: f"gate it first (relops gate {workflow} {release})",
            "REVIEW": f"an owner or delegate approves it (relops approve {workflow} {release} --reason TEXT)",
            "BLOCK": f"fix it and gate the new release (relops gate {workflow} NEW_VERSION)",
            "INVALID": f"re-run the evals and the gate (relops eval {workflow} {release} && relops gate {workflow} {release})",
        }.get(decision, f"gate it again (relops gate {workflow} {release})")
    elif canary is not None:
        why = f"{action} would widen the traffic of a release its canary has not shown to be healthy"
        step = (f"roll it back (relops rollback {workflow} --reason TEXT)" if "is inconclusive" not in canary
                else f"wait for that traffic, then judge it again (relops canary {workflow} {release})")
    else:
        why = f"{action} comes after a canary judged on live traffic"
        step = f"canary it first (relops rollout {workflow} {release} --stage canary, then relops canary {workflow} {release})"
    return (f"{workflow}: rollout of {release} to {action} refused: {'; '.join(waived)}: {why}; {step}, "
            "or an approver waives this with --override, which is recorded")


def _gate_problem(gate: dict[str, Any]) -> str | None:
    if gate.get("releasable"):
        return None
    decision = gate.get("decision")
    if decision is None:
        return f"gate: {gate['release_key']} has no gate decision"
    if decision == "REVIEW":
        return f"gate: {gate['release_key']} is REVIEW without an approval"
    return f"gate: {gate['release_key']} is {decision}"


def _canary_problem(con: duckdb.DuckDBPyConnection, key: str) -> str | None:
    """Why the release's latest canary analysis does not support promoting it (None: it passed,
    or it was never judged — the stage-order rule covers a release that skipped its canary)."""
    row = con.execute("SELECT verdict, result FROM canary_analyses WHERE release_key = ? "
                      "ORDER BY computed_at DESC, analysis_id DESC LIMIT 1", [key]).fetchone()
    if row is None or row[0] == "pass":
        return None
    verdict, result = row
    if verdict == "inconclusive":
        try:
            needs = (json.loads(result) or {}).get("needs") or {}
        except (TypeError, ValueError):
            needs = {}
        return f"canary: {key} is inconclusive" + (f" ({needs['text']})" if needs.get("text") else "")
    return f"canary: {key}'s latest analysis is {verdict}"


def transition(
    con: duckdb.DuckDBPyConnection,
    registry_dir: str | Path,
    workflow: str,
    *,
    action: str,
    release: str | None,
    percent: float | None = None,
    actor: str,
    reason: str,
    override: bool = False,
    deployer: Deployer | None = None,
    policy: Any = None,
    approvers: Sequence[str] | None = None,
) -> TransitionResult:
    """Move `release` to a rollout stage (shadow | canary | ramp | full), or roll back
    (action "rollback"; `release` is then the optional target, like `to` of `rollback`).

    `policy`: the workflow's `rollout` mapping or the Workflow (then its owner and delegates are
    the `approvers` who may override). Refused unless the release's gate is SHIP, an approved
    REVIEW or an overridden BLOCK, and unless it went through the workflow's canary stage before
    ramp or full (shadow and ramp may be skipped; the very first release goes straight to full).
    `override=True` waives those two checks, and what was waived is recorded in the event.
    Records, then deploys (see the module docstring); raises DeployError after recording when
    the deploy fails."""
    if action == "rollback":
        return rollback(con, registry_dir, workflow, to=release, trigger="manual", reason=reason, actor=actor,
                        automatic=False, deployer=deployer, policy=policy)
    if action not in STAGES:
        raise RegistryError(f"unknown action {action!r}: one of {', '.join(STAGES)} or rollback")
    workflow = _key("workflow", workflow)
    release = _key("version", release)
    actor, reason = _text("actor", actor), _text("reason", reason)
    _outside_transaction(con)
    pol = parse_policy(policy)
    if approvers is None and hasattr(policy, "approvers"):
        approvers = list(policy.approvers)
    deployer = _resolve_deployer(deployer, pol)
    key = release_key(workflow, release)

    before = verified_state(con, workflow)
    gate = release_state(con, key)
    if gate.get("tampered"):
        raise audit.TamperedError(f"{key}: {gate['tampered']}; nothing was changed (see `relops audit verify`)")
    percent, waived = _check_rollout(before, pol, action, release, percent)
    problem = _gate_problem(gate)
    if problem:
        waived.insert(0, problem)
    canary_problem = None
    if action in ("ramp", "full") and before.candidate == release and before.stage in ("canary", "ramp"):
        canary_problem = _canary_problem(con, key)
        if canary_problem:
            waived.append(canary_problem)
    request = {"request": "rollout", "stage": action, "percent": percent, "override": bool(override),
               "gate_decision": gate.get("decision")}
    if waived and not override:
        audit.append_event(con, kind=audit.KIND_REFUSED, actor=actor, reason=f"{'; '.join(waived)} (asked: {reason})",
                           workflow=workflow, release_key=key, payload={**request, "problems": waived})
        raise RolloutRefused(_refusal(workflow, release, action, waived, gate, canary_problem))
    if override and approvers is not None and actor not in approvers:
        why = (f"{actor} may not override a rollout of {workflow}: approvers are "
               f"{', '.join(approvers) or 'nobody (set an owner)'}: only they may waive what the gate or the "
               f"canary refused; ask one of them to roll it out (relops rollout {workflow} {release} --stage "
               f"{action} --override --reason TEXT)")
        audit.append_event(con, kind=audit.KIND_REFUSED, actor=actor, reason=f"{why} (asked: {reason})",
                           workflow=workflow, release_key=key, payload={**request, "problems": waived})
        raise RolloutRefused(why)

    now = utc_naive()
    changes: dict[str, Any] = {"updated_by": actor, "reason": reason, "updated_at": now}
    if action == "shadow":
        changes.update(shadow=release, canary=None, canary_percent=None, stage="shadow")
    elif action in ("canary", "ramp"):
        changes.update(canary=release, canary_percent=percent, shadow=None, stage=action)
    else:  # full: promote; the previous live becomes the rollback target (the LKG rule)
        changes.update(live=release, canary=None, canary_percent=None, shadow=None, stage="full",
                       last_known_good=before.live if before.live is not None else before.last_known_good)
    after = before.next(**changes)
    with audit.transaction(con):
        _reread(con, before)
        event = audit.append_event(
            con, kind=audit.KIND_ROLLOUT, actor=actor, reason=reason, workflow=workflow, release_key=key,
            payload={**request, "seq": after.seq, "before": before.releases(), "after": after.releases(),
                     "waived": waived, "gate": {k: gate.get(k) for k in ("decision", "gate_id", "approved", "overridden")},
                     "deployer": getattr(deployer, "name", type(deployer).__name__)},
        )
        after = before.next(**changes, event_seq=event["seq"])
        put_state(con, after)
    receipt = _deploy(deployer, Path(registry_dir), after)
    return TransitionResult(workflow=workflow, action=action, release=release, before=before, after=after,
                            event_seq=event["seq"], override=bool(override), waived=tuple(waived), receipt=receipt,
                            message=_describe(after))


def _describe(state: RegistryState) -> str:
    parts = [f"{state.workflow} seq {state.seq}: live {state.live or '-'}"]
    if state.canary:
        parts.append(f"{state.stage} {state.canary} at {state.canary_percent:g} %")
    if state.shadow:
        parts.append(f"shadow {state.shadow}")
    parts.append(f"last known good {state.last_known_good or '-'}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# Rollback


def _was_live(con: duckdb.DuckDBPyConnection, workflow: str, version: str) -> bool:
    row = fetch_one(con.execute(
        "SELECT count(*) FROM events WHERE workflow = ? AND kind IN (?, ?) "
        "AND json_extract_string(payload, '$.after.live') = ?",
        [workflow, audit.KIND_ROLLOUT, audit.KIND_ROLLBACK, version],
    ))
    return bool(row[0])


def _rollback_plan(
    con: duckdb.DuckDBPyConnection, before: RegistryState, to: str | None, release: str | None
) -> tuple[str | None, str | None, dict[str, Any] | None]:
    """(from_release, target, state changes); changes None means there is nothing to do."""
    wf = before.workflow
    if before.seq == 0:
        raise RegistryError(f"{wf}: nothing has been rolled out: no registry state to roll back, so there is no earlier "
                            f"release to go back to; roll a release out first (relops rollout {wf} VERSION --stage full)")
    candidate = before.candidate
    if release is not None and before.stage_of(release) is None:
        return release, None, None  # already rolled back or replaced: a retried job must not roll back twice
    source: str | None
    target: str | None
    if candidate is not None and (release is None or release == candidate):
        source, target = candidate, (to or before.live)
        changes: dict[str, Any] = {"canary": None, "canary_percent": None, "shadow": None}
    else:
        if candidate is not None:
            raise RegistryError(f"{wf}: {candidate} is in {before.stage}: a rollback of the live release would leave it "
                                f"serving; roll it back first (relops rollback {wf} --reason TEXT), then the live release")
        source, target = before.live, (to or before.last_known_good)
        if target is None:
            raise RegistryError(f"{wf}: no last known good release to roll back {source} to: none served before it, "
                                f"or it was used by an earlier rollback; name a release that served before "
                                f"(relops rollback {wf} --to VERSION --reason TEXT) or roll out a fix "
                                f"(relops rollout {wf} VERSION --stage canary)")
        changes = {}
    if target == source:
        raise RegistryError(f"{wf}: cannot roll {source} back to itself: it is what serves now; name another "
                            f"release that served before (relops rollback {wf} --to VERSION --reason TEXT)")
    if to is not None and to != before.live and to != before.last_known_good:
        gate = release_state(con, release_key(wf, to))
        if not gate.get("releasable") and not _was_live(con, wf, to):
            raise RegistryError(f"{wf}: {to} was never live and its gate does not allow it "
                                f"({_gate_problem(gate)}): a rollback goes to a release known to work; choose one "
                                f"that served before (relops rollback {wf} --to VERSION --reason TEXT)")
    lkg = before.last_known_good
    # The rollback target and the release rolled back from can never be the rollback target of
    # the new live release: once the one vetted step back has been used, the next rollback of live
    # needs an explicit --to.
    changes.update(live=target, stage=ROLLED_BACK,
                   last_known_good=None if lkg in (target, source) else lkg)
    return source, target, changes


def _trigger(trigger: Any) -> str:
    if not isinstance(trigger, str) or not _TRIGGER_RE.match(trigger):
        raise RegistryError(f"rollback trigger {trigger!r}: a lower-case word such as gate, canary, drift, manual, drill")
    return trigger


def rollback(
    con: duckdb.DuckDBPyConnection,
    registry_dir: str | Path,
    workflow: str,
    *,
    to: str | None = None,
    trigger: str,
    reason: str,
    actor: str,
    automatic: bool,
    check_evaluated_at: datetime | None = None,
    alert_id: str | None = None,
    incident_id: str | None = None,
    run_id: str | None = None,
    release: str | None = None,
    deployer: Deployer | None = None,
    policy: Any = None,
) -> TransitionResult:
    """Roll back: a candidate in shadow/canary/ramp is removed (traffic returns to live, or to
    `to`); otherwise live goes to its last known good (or `to`). Records the event, the state
    and a `rollbacks` row, deploys, then stores flipped_at and
    time_to_rollback_s = flipped_at - check_evaluated_at (None without a check time).

    `release`: the release the failed check was about. When given and it no longer serves
    (already rolled back or replaced), nothing happens and `performed` is False: a retried job
    never rolls back twice. `to` must be the live or last known good release, a release that was
    live before, or a releasable one. Raises RegistryError when there is nothing to roll back
    to, DeployError (after recording) when the deploy fails."""
    workflow = _key("workflow", workflow)
    trigger = _trigger(trigger)
    actor, reason = _text("actor", actor), _text("reason", reason)
    to = None if to is None else _key("version", to)
    release = None if release is None else _key("version", release)
    _outside_transaction(con)
    deployer = _resolve_deployer(deployer, policy)
    checked_at = utc_naive(check_evaluated_at) if check_evaluated_at is not None else None

    before = verified_state(con, workflow)
    source, target, changes = _rollback_plan(con, before, to, release)
    if changes is None:
        return TransitionResult(workflow=workflow, action="rollback", release=source, before=before, after=before,
                                event_seq=None, performed=False,
                                message=f"{workflow}: {source} no longer serves traffic: nothing rolled back")
    now = utc_naive()
    rollback_id = f"rb-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    changes.update(updated_by=actor, reason=reason, updated_at=now)
    after = before.next(**changes)
    with audit.transaction(con):
        _reread(con, before)
        event = audit.append_event(
            con, kind=audit.KIND_ROLLBACK, actor=actor, reason=reason, workflow=workflow,
            release_key=release_key(workflow, source) if source else None,
            payload={"rollback_id": rollback_id, "trigger": trigger, "automatic": bool(automatic), "from": source,
                     "to": target, "seq": after.seq, "before": before.releases(), "after": after.releases(),
                     "check_evaluated_at": checked_at, "alert_id": alert_id, "incident_id": incident_id,
                     "dagster_run_id": run_id},
        )
        after = before.next(**changes, event_seq=event["seq"])
        put_state(con, after)
        row = {
            "rollback_id": rollback_id, "workflow": workflow, "from_release": source, "to_release": target,
            "trigger": trigger, "reason": reason, "automatic": bool(automatic), "performed": True,
            "check_evaluated_at": checked_at, "flipped_at": None, "time_to_rollback_s": None, "alert_id": alert_id,
            "incident_id": incident_id, "actor": actor, "event_seq": event["seq"], "dagster_run_id": run_id,
            "recorded_at": now,
        }
        _insert_rollback(con, row)
    receipt = _deploy(deployer, Path(registry_dir), after)
    flipped_at, time_to_rollback_s = _mark_flipped(con, rollback_id, checked_at)
    return TransitionResult(workflow=workflow, action="rollback", release=source, to_release=target, before=before,
                            after=after, event_seq=event["seq"], rollback_id=rollback_id, receipt=receipt,
                            flipped_at=flipped_at, time_to_rollback_s=time_to_rollback_s, message=_describe(after))


def _insert_rollback(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> None:
    con.execute(
        f"INSERT INTO rollbacks ({', '.join(ROLLBACK_COLUMNS)}) VALUES ({', '.join('?' for _ in ROLLBACK_COLUMNS)})",
        [row[c] for c in ROLLBACK_COLUMNS],
    )


def _mark_flipped(
    con: duckdb.DuckDBPyConnection, rollback_id: str, checked_at: datetime | None
) -> tuple[datetime, float | None]:
    flipped = utc_naive()
    ttr = (flipped - checked_at).total_seconds() if checked_at is not None else None
    con.execute("UPDATE rollbacks SET flipped_at = ?, time_to_rollback_s = ? WHERE rollback_id = ?",
                [flipped, ttr, rollback_id])
    return flipped, ttr


def link_rollback(
    con: duckdb.DuckDBPyConnection, rollback_id: str, *, alert_id: str | None = None, incident_id: str | None = None
) -> dict[str, Any]:
    """Attach the alert and/or incident created after a rollback (flip first, paperwork after:
    time to rollback should not include opening the incident). Returns the updated row."""
    if alert_id is None and incident_id is None:
        raise RegistryError("link_rollback needs an alert_id or an incident_id")
    con.execute(
        "UPDATE rollbacks SET alert_id = coalesce(?, alert_id), incident_id = coalesce(?, incident_id) "
        "WHERE rollback_id = ?",
        [alert_id, incident_id, rollback_id],
    )
    row = con.execute(f"SELECT {', '.join(ROLLBACK_COLUMNS)} FROM rollbacks WHERE rollback_id = ?",
                      [rollback_id]).fetchone()
    if row is None:
        raise RegistryError(f"no rollback {rollback_id!r}")
    return dict(zip(ROLLBACK_COLUMNS, row, strict=False))


def record_recommendation(
    con: duckdb.DuckDBPyConnection,
    workflow: str,
    *,
    release: str | None,
    trigger: str,
    reason: str,
    actor: str,
    automatic: bool = True,
    check_evaluated_at: datetime | None = None,
    alert_id: str | None = None,
    incident_id: str | None = None,
    run_id: str | None = None,
) -> RollbackRecommendation:
    """Record that a rollback was recommended but not performed (decide() said alert_only):
    a `rollbacks` row with performed false and the target a rollback would take, plus a
    `rollback_recommended` event. The registry and the pointer are not touched."""
    workflow = _key("workflow", workflow)
    trigger = _trigger(trigger)
    actor, reason = _text("actor", actor), _text("reason", reason)
    release = None if release is None else _key("version", release)
    state = verified_state(con, workflow)
    where = state.stage_of(release) if release else None
    target = state.live if where in IN_FLIGHT else (state.last_known_good if where == "live" else None)
    now = utc_naive()
    rollback_id = f"rb-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    checked_at = utc_naive(check_evaluated_at) if check_evaluated_at is not None else None
    with audit.transaction(con):
        event = audit.append_event(
            con, kind=KIND_ROLLBACK_RECOMMENDED, actor=actor, reason=reason, workflow=workflow,
            release_key=release_key(workflow, release) if release else None,
            payload={"rollback_id": rollback_id, "trigger": trigger, "release": release, "serving_as": where,
                     "would_roll_back_to": target, "seq": state.seq, "alert_id": alert_id,
                     "incident_id": incident_id, "dagster_run_id": run_id},
        )
        _insert_rollback(con, {
            "rollback_id": rollback_id, "workflow": workflow, "from_release": release, "to_release": target,
            "trigger": trigger, "reason": reason, "automatic": bool(automatic), "performed": False,
            "check_evaluated_at": checked_at, "flipped_at": None, "time_to_rollback_s": None, "alert_id": alert_id,
            "incident_id": incident_id, "actor": actor, "event_seq": event["seq"], "dagster_run_id": run_id,
            "recorded_at": now,
        })
    return RollbackRecommendation(rollback_id=rollback_id, workflow=workflow, release=release, serving_as=where,
                                  would_roll_back_to=target, event_seq=event["seq"])


# ---------------------------------------------------------------------------------------------
# Re-deriving the pointer


def sync_pointer(
    con: duckdb.DuckDBPyConnection,
    registry_dir: str | Path,
    workflow: str,
    *,
    deployer: Deployer | None = None,
    policy: Any = None,
) -> dict[str, Any]:
    """Deploy the pointer of the state recorded in the warehouse (idempotent: the same seq with
    the same content is a no-op for the file; a webhook receiver ignores a seq it has). When the
    deployed state is a rollback whose flip was not confirmed (the deploy failed or the process
    died), its flipped_at and time_to_rollback_s are filled in now. Returns what was found and
    done; raises DeployError when the deploy fails again."""
    workflow = _key("workflow", workflow)
    _outside_transaction(con)
    deployer = _resolve_deployer(deployer, policy)
    state = verified_state(con, workflow)
    on_disk = pointer_seq_on_disk(registry_dir, workflow)
    out: dict[str, Any] = {"workflow": workflow, "seq": state.seq, "pointer_seq_before": on_disk,
                           "behind": state.seq > 0 and (on_disk is None or on_disk < state.seq),
                           "deployed": False, "completed_rollbacks": []}
    if state.seq == 0:
        out["message"] = f"{workflow}: nothing recorded: no pointer"
        return out
    out["receipt"] = _deploy(deployer, Path(registry_dir), state)
    out["deployed"] = True
    pending = con.execute(
        "SELECT rollback_id, check_evaluated_at FROM rollbacks WHERE workflow = ? AND performed "
        "AND flipped_at IS NULL AND event_seq = ?",
        [workflow, state.event_seq],
    ).fetchall()
    for rollback_id, checked_at in pending:
        _mark_flipped(con, rollback_id, checked_at)
        out["completed_rollbacks"].append(rollback_id)
    out["message"] = (f"{workflow}: pointer {'brought from seq ' + str(on_disk) + ' to' if out['behind'] else 'at'} "
                      f"seq {state.seq}")
    return out


def list_rollbacks(
    con: duckdb.DuckDBPyConnection, workflow: str | None = None, *, limit: int | None = None
) -> list[dict[str, Any]]:
    """Rollbacks (performed and recommended), newest first."""
    sql = f"SELECT {', '.join(ROLLBACK_COLUMNS)} FROM rollbacks"
    params: list[Any] = []
    if workflow is not None:
        sql += " WHERE workflow = ?"
        params.append(workflow)
    sql += " ORDER BY recorded_at DESC, rollback_id DESC"
    if limit is not None:
        sql += f" LIMIT {max(0, int(limit))}"
    return [dict(zip(ROLLBACK_COLUMNS, r, strict=False)) for r in con.execute(sql, params).fetchall()]


def history(con: duckdb.DuckDBPyConnection, workflow: str, *, limit: int | None = None) -> list[dict[str, Any]]:
    """The workflow's registry history from the event log (rollouts, rollbacks, refusals and
    recommendations), oldest first."""
    kinds = (audit.KIND_ROLLOUT, audit.KIND_ROLLBACK, audit.KIND_REFUSED, KIND_ROLLBACK_RECOMMENDED)
    events = [
        e for e in audit.list_events(con, workflow=workflow)
        if e["kind"] in kinds and (e["kind"] != audit.KIND_REFUSED or (e.get("payload") or {}).get("request") == "rollout")
    ]
    return events[-limit:] if limit else events
