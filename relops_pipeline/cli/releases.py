"""`relops rollout`, `rollback`, `canary`, `sync` and `drill`, and a workflow's release state
(`relops status WORKFLOW`)."""

from __future__ import annotations

import json

from relops_pipeline.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_RUN_FAILED,
    CliError,
    CommandResult,
    Commands,
    add_by,
    add_release_partition,
    dagster_instance,
    get_workflow,
    get_workflow_release,
    materialize,
    percent,
    read_warehouse,
    run_failure,
    run_followup,
    run_or_fail,
    who,
)
from relops_pipeline.cli.runs import reason_first
from relops_pipeline.lib.home import Home


def _run_or_explain(home: Home, job_name: str, **kwargs):
    """run_or_fail, its failure said cause first: the refusal and its next step, then the run."""
    try:
        return run_or_fail(home, job_name, **kwargs)
    except CliError as exc:
        raise CliError(reason_first(str(exc)), exc.code) from None


def workflow_status(home: Home, workflow: str) -> CommandResult:
    """A workflow's release state: live, canary, last known good, open incidents, last drill."""
    from relops_pipeline.lib.drills import drill_status
    from relops_pipeline.lib.incidents import list_incidents
    from relops_pipeline.lib.registry.rollout import list_rollbacks
    from relops_pipeline.lib.registry.state import get_state, pointer_seq_on_disk

    wf = get_workflow(home, workflow)
    with read_warehouse(home) as con:
        state = get_state(con, wf.name)
        incidents = list_incidents(con, wf.name)
        drill = drill_status(con, wf.name)
        rollbacks = list_rollbacks(con, wf.name, limit=3)
    on_disk = pointer_seq_on_disk(home.registry_dir, wf.name)
    canary = f"{state.canary} at {state.canary_percent:g} %" if state.canary and state.canary_percent is not None else (state.canary or "-")
    lines = [
        f"{wf.name} (owner {wf.owner or '-'})",
        f"  live             {state.live or '-'}",
        f"  canary           {canary}" + (f"   shadow {state.shadow}" if state.shadow else ""),
        f"  last known good  {state.last_known_good or '-'}",
        f"  registry seq     {state.seq} (pointer file: {on_disk if on_disk is not None else 'none'}"
        + (" — BEHIND: relops sync " + wf.name if on_disk is not None and on_disk < state.seq else "") + ")",
        f"  last drill       {drill['status']}: {drill['message']}",
        f"  open incidents   {len(incidents)}",
        *[f"    {i['incident_id']}  {i['opened_at']:%Y-%m-%d %H:%M}  {i['title']}" for i in incidents[:5]],
        "  recent rollbacks" + ("" if rollbacks else "  none"),
        *[f"    {r['recorded_at']:%Y-%m-%d %H:%M}  {r['from_release'] or '-'} -> {r['to_release'] or '-'}  "
          f"{r['trigger']}{' (automatic)' if r['automatic'] else ''}{'' if r['performed'] else ' — recommended only'}"
          + (f"  time to rollback {r['time_to_rollback_s']:.1f} s" if r.get("time_to_rollback_s") is not None else "")
          for r in rollbacks],
    ]
    return CommandResult({"workflow": wf.name, "state": state.as_dict(), "pointer_seq_on_disk": on_disk, "incidents": incidents,
                          "drill": drill, "rollbacks": rollbacks}, "\n".join(lines))


def cmd_rollout(args) -> CommandResult:
    from relops_pipeline.lib.registry.rollout import TransitionResult
    from relops_pipeline.lib.results import from_json

    wf, key = get_workflow_release(home := Home.resolve(args.home), args.workflow, args.version)
    principal, _ = who(home)
    # A refusal (the gate does not allow it; someone who may not roll out, or override, or act
    # as --by: authorized in the run, against the roles in force) fails the run: exit 3.
    result = _run_or_explain(home, "registry_change_job", what=f"rollout of {key} to {args.stage}", code=EXIT_BAD_INPUT,
                         run_config={"ops": {"change_registry": {"config": {
                             "workflow": wf.name, "release": args.version, "stage": args.stage, "percent": args.percent,
                             "actor": args.by or principal.name, "reason": args.reason, "override": bool(args.override),
                             "principal_json": principal.to_json(), "by": args.by}}}})
    out = result.output_for_node("change_registry")
    res = from_json(TransitionResult, out)
    after, percent = res.after, res.after.canary_percent
    text = (f"{key}: {args.stage}" + (f" at {percent:g} %" if args.stage in ("canary", "ramp") and percent is not None else "")
            + f" (registry seq {after.seq}; live {after.live or '-'}, last known good {after.last_known_good or '-'})"
            + (f"; override waived: {', '.join(res.waived)}" if res.waived else ""))
    return CommandResult(out, text)


def cmd_rollback(args) -> CommandResult:
    from relops_pipeline.lib.registry.respond import FailureResponse
    from relops_pipeline.lib.results import from_json

    home = Home.resolve(args.home)
    wf = get_workflow(home, args.workflow)
    principal, _ = who(home)
    # Authorized in the run (owner, delegates, on-call; --by only as a label the principal may use).
    result = _run_or_explain(home, "rollback_alert_job", what=f"rollback of {wf.name}", code=EXIT_BAD_INPUT,
                         run_config={"ops": {"rollback_or_alert": {"config": {
                             "workflow": wf.name, "trigger": "manual", "reason": args.reason, "actor": args.by or principal.name,
                             "to_release": args.to, "principal_json": principal.to_json(), "by": args.by}}}})
    out = _with_alert_status(home, result.output_for_node("rollback_or_alert"))
    r = from_json(FailureResponse, out)
    if r.decision == "none":
        return CommandResult(out, f"{wf.name}: nothing rolled back — {r.why}")
    rb = r.rollback
    return CommandResult(out, f"{wf.name}: rolled back {(rb.release if rb else None) or '-'} -> "
                              f"{(rb.to_release if rb else None) or '-'}; "
                              f"incident {r.incident_id}, alert {r.alert_id} ({r.alert_status}); live now {r.live_after}")


def _with_alert_status(home: Home, response: dict) -> dict:
    """The response with its alert's status as it is now (the job delivers after responding)."""
    from relops_pipeline.lib.alerts import get_alert

    if not response.get("alert_id"):
        return response
    with read_warehouse(home) as con:
        stored = get_alert(con, response["alert_id"])
    return {**response, "alert_status": stored.status if stored else response.get("alert_status")}


def cmd_canary(args) -> CommandResult:
    """Judge a release's canary through Dagster; a failed check is acted on at once, with the
    response defs/followups.py plans for the failed-checks sensor (a second response changes nothing).
    Exits 0 on pass, 1 on fail, 2 while undecided (inconclusive: the description says how many more
    canary requests, and how long, a decision needs; or marginal)."""
    from relops_pipeline.lib.registry.respond import FailureResponse
    from relops_pipeline.lib.results import from_json

    wf, key = get_workflow_release(home := Home.resolve(args.home), args.workflow, args.version)
    add_release_partition(home, key)
    result = materialize(home, ["canary_analysis"], partition_key=key)
    if not result.success:
        raise CliError(reason_first(f"canary run {result.run_id} for {key} failed: {run_failure(result)}"), EXIT_RUN_FAILED)
    [ev] = [e for e in result.get_asset_check_evaluations() if e.check_name == "canary_healthy"]
    meta = {k: getattr(v, "value", v) for k, v in ev.metadata.items()}
    verdict = meta["verdict"]
    needs = meta.get("needs") if verdict in ("inconclusive", "marginal") else None
    out = {"release_key": key, "verdict": verdict, "passed": ev.passed, "run_id": result.run_id,
           "description": ev.description, "needs": needs, "response": None}
    if needs:
        # Undecided, like a gate's REVIEW: what a decision needs and the next step, in one line.
        lines = [f"{key}: canary {verdict.upper()} — {needs}: not decided, so promoting it to ramp or full needs "
                 f"--override (recorded); wait for them, then judge again (relops canary {wf.name} {args.version})",
                 *(f"  - {r}" for r in (ev.description or "").split("; ") if r and r != needs)]
    else:
        lines = [f"{key}: canary {verdict.upper()} — {ev.description}"]
        if verdict in ("inconclusive", "marginal"):
            lines.append("  not decided: promoting it to ramp or full needs --override (recorded)")
    if not ev.passed:
        from relops_pipeline.defs.followups import after_failed_check, failed_checks_of_run

        instance = dagster_instance(home)
        for followup in (f for failure in failed_checks_of_run(instance, result.run_id) for f in after_failed_check(failure)):
            resp = run_followup(home, followup)
            out["response"] = _with_alert_status(home, resp.output_for_node("rollback_or_alert"))
            r = from_json(FailureResponse, out["response"])
            lines.append(f"  {r.decision}: {r.why}"
                         + (f" (time to rollback {r.time_to_rollback_s:.2f} s)" if r.time_to_rollback_s is not None else ""))
            if r.incident_id:
                lines.append(f"  incident {r.incident_id}, alert {r.alert_id} ({r.alert_status}); live now {r.live_after}")
    # 0 pass, 1 fail (acted on), 2 inconclusive or marginal: not decided, like a gate's REVIEW.
    code = 1 if not ev.passed else EXIT_OK if verdict == "pass" else 2
    return CommandResult(out, "\n".join(lines), code)


def cmd_sync(args) -> CommandResult:
    from relops_pipeline.lib.registry import sync_pointer_at_home

    home = Home.resolve(args.home)
    wf = get_workflow(home, args.workflow)
    out = sync_pointer_at_home(home, wf.name)
    return CommandResult(out, f"{wf.name}: pointer file rewritten from the registry ({json.dumps(out, default=str)[:200]})")


def cmd_drill(args) -> CommandResult:
    home = Home.resolve(args.home)
    wf = get_workflow(home, args.workflow) if args.workflow else None
    result = _run_or_explain(home, "drill_job", what="drill")
    from relops_pipeline.lib.drills import drill_status, list_drills
    from relops_pipeline.lib.registry.state import get_state
    from relops_pipeline.lib.workflows import load_all

    loaded = load_all(home.workflows_dir)
    with read_warehouse(home) as con:
        names = [wf.name] if wf else [w.name for w in loaded.workflows]
        drills = {n: next(iter(list_drills(con, n, limit=1)), None) for n in names}
        statuses = {n: drill_status(con, n) for n in names}
        rolled_out = {n for n in names if get_state(con, n).seq > 0}
    lines = [] if wf else loaded.warnings()
    for n in names:
        d = drills[n]
        if d is None:
            lines.append(f"{n}: no drill: nothing rolled out yet, so there is no rollback to rehearse; roll a release "
                         f"out first (relops rollout {n} VERSION --stage full), then relops drill {n}"
                         if n not in rolled_out else f"{n}: no drill recorded; drill it (relops drill {n})")
            continue
        took = f" in {d['duration_ms']:.1f} ms" if d.get("duration_ms") is not None else ""
        lines.append(f"{n}: drill {'PASSED' if d['passed'] else 'FAILED'}{took} — {statuses[n]['message']}")
    failed = [n for n, d in drills.items() if d is not None and not d["passed"]]
    return CommandResult({"run_id": result.run_id, "drills": drills, "statuses": statuses,
                          "skipped": [{"workflow": n, "error": e} for n, e in ([] if wf else loaded.broken)]},
                         "\n".join(lines),
                         EXIT_RUN_FAILED if failed else EXIT_OK)


def register(add: Commands) -> None:
    """Register rollout, rollback, canary, sync and drill on the `relops` parser."""
    p = add("rollout", cmd_rollout, "move a release to a rollout stage: rollout W V --stage shadow|canary|ramp|full")
    p.add_argument("workflow")
    p.add_argument("version")
    p.add_argument("--stage", required=True, choices=["shadow", "canary", "ramp", "full"])
    p.add_argument("--percent", type=percent, default=None, help="traffic share of canary or ramp (default: the policy's)")
    add_by(p, "needs the owner, a delegate or on-call (--override: the owner or a delegate)")
    p.add_argument("--reason", default="rollout")
    p.add_argument("--override", action="store_true", help="roll out although the gate does not allow it (recorded)")
    p = add("rollback", cmd_rollback, "roll a workflow back to its last known good release (or --to V)")
    p.add_argument("workflow")
    p.add_argument("--to", default=None)
    p.add_argument("--reason", required=True)
    add_by(p, "needs the owner, a delegate or on-call")
    p = add("canary", cmd_canary, "judge a release's canary against the live release: exit 0 pass, 1 fail (acted on), 2 not decided yet")
    p.add_argument("workflow")
    p.add_argument("version")
    p = add("sync", cmd_sync, "rewrite a workflow's pointer file from the registry (after a failed deploy)")
    p.add_argument("workflow")
    p = add("drill", cmd_drill, "rehearse rollback on a sandbox copy of the registry and record the result")
    p.add_argument("workflow", nargs="?", default=None)
