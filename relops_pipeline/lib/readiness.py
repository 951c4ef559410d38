"""Readiness review: what release operations needs from a workflow, and what is missing.

`review_readiness` runs a fixed list of checks over a workflow's configuration (its workflow
file, suite files) and its record in the warehouse. Each check has a status:

    ok    the practice is in place (with the evidence that shows it);
    risk  something that blocks safe releases now: a bad release could ship unnoticed or could
          not be rolled back (no suite, no must-pass cases, no traces, no rollback path, a
          failed or missing drill, no owner, a configuration relops cannot read);
    gap   a missing practice that weakens release operations without blocking it (telemetry
          without release identifiers, thresholds never recorded, no on-call sink, no review
          cadence, ...).

The areas and the checks, in the order they are reported:

    suite      suite files exist and validate; cases >= the thresholds' min_cases; a must-pass
               subset; a valid eval run of the live release on the latest suite version
    telemetry  traces of the workflow in the last `days`; the share of its spans and traces
               without a release identifier (release 'unknown') below 1 %
    rollout    a rollout policy with a canary stage and automatic rollback, a valid canary
               configuration; a registry state with something to roll back to and an
               up-to-date pointer file; a passed rollback drill in the last 35 days
    ownership  an owner (approves REVIEWs and threshold changes) and at least one delegate
    gates      thresholds recorded (version > 0) with floors for the gating metrics
    alerts     an on-call sink beyond the file/log defaults; signal alert rules
    cadence    a stability memo in the last 8 days; review labels in the last 14 days; a drift
               reference configured or recorded

`plan` turns the checks that are not ok into a first month's reliability plan ordered by risk:
every `risk` is week 1 (it blocks safe releases), gaps go to their area's week — 1: suite,
rollout and ownership; 2: telemetry; 3: gates and alerts; 4: review cadence — and within a
week risks come before gaps. Each step carries concrete commands or configuration keys.

Nothing here writes to the warehouse except `record_readiness`; the review itself only reads.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from relops_pipeline.lib.evals.model import validate_key
from relops_pipeline.lib.home import Home
from relops_pipeline.lib.markdown import escape_md, fenced_block, md_table
from relops_pipeline.lib.workflows import DEFAULTS, Workflow, WorkflowError, load_workflow, workflow_path

STATUSES = ("ok", "gap", "risk")
UNKNOWN_RELEASE_OK_SHARE = 0.01  # below 1 % of spans and traces without a release: ok
DRILL_MAX_AGE_DAYS = 35
MEMO_MAX_AGE_DAYS = 8
REVIEW_MAX_AGE_DAYS = 14
# Sinks that only write locally: nobody is woken up by them.
LOCAL_SINK_TYPES = ("file", "log")

WEEKS = {
    1: "Make releases safe: a runnable suite with must-pass cases, a rollback path, an owner",
    2: "Telemetry: traces that carry release identifiers",
    3: "Gates and alerts: recorded thresholds, an on-call sink, signal alert rules",
    4: "Review cadence: weekly memo, labelled review sample, drift reference",
}
AREA_WEEK = {"config": 1, "suite": 1, "rollout": 1, "ownership": 1, "telemetry": 2, "gates": 3, "alerts": 3,
             "cadence": 4}


def _utc_naive(value: datetime | None) -> datetime:
    if value is None:
        return datetime.now(dt.UTC).replace(tzinfo=None)
    return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value


def _iso(value: Any) -> Any:
    """Dates and datetimes as ISO text, recursively: the result is stored as JSON."""
    if isinstance(value, (datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _iso(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_iso(v) for v in value]
    return value


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


class _Review:
    """Collects the checks of one review."""

    def __init__(self) -> None:
        self.checks: list[dict[str, Any]] = []

    def add(self, check_id: str, area: str, title: str, status: str, summary: str, *,
            evidence: dict[str, Any] | None = None, fix: str | None = None,
            commands: list[str] | None = None) -> None:
        assert status in STATUSES, status
        self.checks.append({
            "id": check_id, "area": area, "title": title, "name": title, "status": status, "summary": summary,
            "evidence": _iso(dict(evidence or {})),
            "fix": None if status == "ok" else fix,
            "commands": [] if status == "ok" else list(commands or []),
        })


# ---------------------------------------------------------------------------------------------
# Configuration


def _default_workflow(home: Home, name: str) -> Workflow:
    d = copy.deepcopy(DEFAULTS)
    return Workflow(name=name, path=workflow_path(home.workflows_dir, name), raw={}, **d)


def _load(home: Home, name: str, review: _Review) -> Workflow:
    try:
        wf = load_workflow(home.workflows_dir, name)
    except WorkflowError:
        path = workflow_path(home.workflows_dir, name)
        if path.exists():  # present but unreadable: every check below would be guesswork
            raise
        review.add("config.file", "config", "Workflow configuration", "risk",
                   "no workflow file: relops uses the defaults (no owner, replay runner, file/log alerts)",
                   evidence={"path": str(path.relative_to(home.root))},
                   fix="Add the workflow file with its owner; then configure its suite, rollout and alerts.",
                   commands=[f"relops workflow add {name} --owner NAME"])
        return _default_workflow(home, name)
    review.add("config.file", "config", "Workflow configuration", "ok",
               f"{wf.path.relative_to(home.root) if wf.path else name} is valid",
               evidence={"path": str(wf.path.relative_to(home.root)) if wf.path else None})
    return wf


def _thresholds(con: duckdb.DuckDBPyConnection, wf: Workflow):
    from relops_pipeline.lib.gates.model import Thresholds
    from relops_pipeline.lib.gates.thresholds import ThresholdsError, current_thresholds, parse_thresholds

    try:
        th = current_thresholds(con, wf.name)
    except ThresholdsError as exc:
        return None, str(exc)
    if th.version == 0 and wf.thresholds:
        # Not recorded yet: the gate seeds version 1 from the file on its next run.
        try:
            return parse_thresholds(wf.thresholds, f"workflows/{wf.name}.yaml: thresholds"), None
        except ThresholdsError as exc:
            return Thresholds(), str(exc)
    return th, None


# ---------------------------------------------------------------------------------------------
# Checks: suite


def _suite_checks(con, home: Home, wf: Workflow, th, review: _Review) -> dict[str, Any]:
    from relops_pipeline.lib.evals.suites import load_suite, suite_files, validate_suite_file, version_sort_key

    suite_name = wf.suite_name
    folder = home.root / "suites" / suite_name
    rel = f"suites/{suite_name}"
    files = suite_files(folder) if folder.is_dir() else []
    problems: list[str] = []
    suites = []
    for f in files:
        found = validate_suite_file(f)
        if found:
            problems += [str(p) for p in found]
        else:
            suites.append(load_suite(f))
    suites.sort(key=lambda s: version_sort_key(s.version))
    latest = suites[-1] if suites else None
    if not files:
        review.add("suite.files", "suite", "Suite files", "risk",
                   f"no suite files under {rel}/: releases cannot be evaluated or gated",
                   evidence={"folder": rel, "files": 0},
                   fix="Write a first suite version with curated cases (input, expected, must_pass) and validate it.",
                   commands=[f"mkdir -p {rel} && $EDITOR {rel}/v1.yaml", f"relops suite validate {rel}"])
    elif problems:
        review.add("suite.files", "suite", "Suite files", "risk",
                   f"{len(problems)} problem(s) in the suite files under {rel}/: the gate refuses an invalid suite",
                   evidence={"folder": rel, "files": len(files), "problems": problems[:10]},
                   fix="Fix every problem listed by the validator (a used version is immutable: add a new one).",
                   commands=[f"relops suite validate {rel}"])
    else:
        assert latest is not None  # every file validated, so each is a loaded suite
        review.add("suite.files", "suite", "Suite files", "ok",
                   f"{len(files)} suite version(s) validate; latest {latest.version} with {len(latest.cases)} cases",
                   evidence={"folder": rel, "files": len(files), "latest_version": latest.version})

    cases = len(latest.cases) if latest else 0
    must_pass = sum(1 for c in latest.cases if c.must_pass) if latest else 0
    min_cases = th.min_cases if th is not None else 30
    ev = {"latest_version": latest.version if latest else None, "cases": cases, "min_cases": min_cases}
    if latest is None:
        review.add("suite.min_cases", "suite", "Enough cases to ship", "gap",
                   "no valid suite version, so no cases", evidence=ev,
                   fix=f"The gate never SHIPs with fewer than min_cases ({min_cases}) cases.",
                   commands=[f"relops suite validate {rel}"])
    elif cases < min_cases:
        nxt = _next_version(latest.version)
        review.add("suite.min_cases", "suite", "Enough cases to ship", "gap",
                   f"{latest.version} has {cases} cases, fewer than min_cases {min_cases}: the gate can never SHIP, "
                   "every release needs a human REVIEW", evidence=ev,
                   fix=f"Add at least {min_cases - cases} cases in a new suite version with a changelog line "
                       "(incident traces are a good source), then backfill the evals.",
                   commands=[f"$EDITOR {rel}/{nxt}.yaml  # changelog: \"{nxt}: +{min_cases - cases} cases\"",
                             f"relops suite validate {rel}/{nxt}.yaml", f"relops eval backfill --workflow {wf.name}"])
    else:
        review.add("suite.min_cases", "suite", "Enough cases to ship", "ok",
                   f"{latest.version} has {cases} cases (min_cases {min_cases})", evidence=ev)

    ev = {"latest_version": latest.version if latest else None, "must_pass_cases": must_pass, "cases": cases}
    if must_pass == 0:
        nxt = _next_version(latest.version) if latest else "v1"
        review.add("suite.must_pass", "suite", "Must-pass subset", "risk",
                   ("no must-pass cases" + (f" in {latest.version}" if latest else "")
                    + ": a release that breaks a case that must never fail can still SHIP on averages"),
                   evidence=ev,
                   fix="Mark the cases that must never fail (safety, refusals, required fields) must_pass: true "
                       "in a new suite version; every sample of them must pass.",
                   commands=[f"$EDITOR {rel}/{nxt}.yaml  # must_pass: true on the critical cases",
                             f"relops suite validate {rel}/{nxt}.yaml"])
    else:
        assert latest is not None  # must-pass cases are counted in the latest suite
        review.add("suite.must_pass", "suite", "Must-pass subset", "ok",
                   f"{must_pass} of {cases} cases in {latest.version} are must-pass", evidence=ev)

    # The release whose quality production depends on: the live one, else the latest registered.
    from relops_pipeline.lib.registry.state import get_state

    state = get_state(con, wf.name)
    which: str | None
    release, which = state.live, "live"
    if release is None:
        row = con.execute("SELECT version FROM releases WHERE workflow = ? ORDER BY registered_at DESC, version DESC "
                          "LIMIT 1", [wf.name]).fetchone()
        release, which = (row[0], "latest registered") if row else (None, None)
    metrics: list[str] = []
    live_run = None
    if release is not None and latest is not None:
        live_run = con.execute(
            "SELECT eval_run_id, finished_at, cases, samples FROM eval_runs WHERE workflow = ? AND version = ? "
            "AND suite_version = ? AND valid ORDER BY finished_at DESC LIMIT 1",
            [wf.name, release, latest.version]).fetchone()
    ev = {"release": release, "which": which, "suite_version": latest.version if latest else None,
          "eval_run_id": live_run[0] if live_run else None, "finished_at": live_run[1] if live_run else None}
    means: dict[str, float] = {}
    if live_run:
        for metric, mean in con.execute(
                "SELECT metric, avg(score) FROM eval_scores WHERE eval_run_id = ? GROUP BY metric ORDER BY metric",
                [live_run[0]]).fetchall():
            metrics.append(metric)
            means[metric] = float(mean)
        ev["metric_means"] = means
        assert latest is not None  # an eval run is only looked up on the latest suite
        review.add("suite.live_eval", "suite", "Eval of the serving release on the latest suite", "ok",
                   f"{which} release {release} has a valid eval run on {latest.version} "
                   f"({live_run[2]} cases, {live_run[3]} samples, {live_run[1]:%Y-%m-%d})", evidence=ev)
    elif release is None:
        review.add("suite.live_eval", "suite", "Eval of the serving release on the latest suite", "gap",
                   "no release is registered or live: there is nothing to compare a candidate with", evidence=ev,
                   fix="Register the release that serves production (its manifest) so the gate has a baseline.",
                   commands=[f"relops release register releases/{wf.name}/VERSION.yaml"])
    else:
        review.add("suite.live_eval", "suite", "Eval of the serving release on the latest suite", "gap",
                   f"{which} release {release} has no valid eval run on "
                   f"{latest.version if latest else 'a valid suite'}: the gate has no baseline for the next candidate",
                   evidence=ev,
                   fix="Evaluate the serving release on the latest suite version (the backfill covers every release).",
                   commands=[f"relops eval {wf.name} {release}" + (f" --suite-version {latest.version}" if latest else ""),
                             f"relops eval backfill --workflow {wf.name}"])
    return {"latest_suite": latest, "metrics": metrics, "means": means, "state": state}


def _next_version(version: str) -> str:
    from relops_pipeline.lib.evals.suites import suggest_next_version

    return suggest_next_version(version) or f"{version}-next"


# ---------------------------------------------------------------------------------------------
# Checks: telemetry


def _telemetry_checks(con, wf: Workflow, now: datetime, days: int, review: _Review) -> None:
    start = now - timedelta(days=days)
    spans, unknown_spans, traces, unknown_traces = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE NOT coalesce(release_known, false) OR release = 'unknown'), "
        "count(DISTINCT trace_id), "
        "count(DISTINCT trace_id) FILTER (WHERE NOT coalesce(release_known, false) OR release = 'unknown') "
        "FROM spans WHERE workflow = ? AND start_time >= ? AND start_time < ?",
        [wf.name, start, now]).fetchone()
    home_unknown, home_no_workflow = con.execute(
        "SELECT count(*) FILTER (WHERE NOT coalesce(release_known, false)), count(*) FILTER (WHERE workflow = 'unknown') "
        "FROM spans").fetchone()
    last = con.execute("SELECT max(start_time) FROM spans WHERE workflow = ?", [wf.name]).fetchone()[0]
    window = {"from": start, "to": now, "days": days}
    if traces == 0:
        review.add("telemetry.traces", "telemetry", "Production traces", "risk",
                   f"no traces of {wf.name} in the last {days} days"
                   + (f" (last trace {last:%Y-%m-%d})" if last else " (none ever)")
                   + ": canaries cannot be judged and drift cannot be measured",
                   evidence={**window, "traces": 0, "last_trace": last},
                   fix="Send the workflow's traces to relops (OTLP/OpenInference/Langfuse/... files in the landing "
                       f"folder) with the workflow name in relops.workflow or service.name = {wf.name}.",
                   commands=["relops ingest PATH", "relops status"])
    else:
        review.add("telemetry.traces", "telemetry", "Production traces", "ok",
                   f"{traces} traces ({spans} spans) in the last {days} days",
                   evidence={**window, "traces": traces, "spans": spans, "last_trace": last})
    span_share, trace_share = _share(unknown_spans, spans), _share(unknown_traces, traces)
    ev = {**window, "spans": spans, "spans_without_release": unknown_spans, "span_share": span_share,
          "traces": traces, "traces_without_release": unknown_traces, "trace_share": trace_share,
          "home_spans_without_release": home_unknown, "home_spans_without_workflow": home_no_workflow,
          "ok_below": UNKNOWN_RELEASE_OK_SHARE}
    title = "Release identifiers on spans"
    if traces == 0:
        review.add("telemetry.release_ids", "telemetry", title, "gap",
                   "no traces to measure: release identifiers unknown", evidence=ev,
                   fix="Set the release on every span once traces arrive (see the next step).",
                   commands=["relops status"])
        return
    worst = max(span_share or 0.0, trace_share or 0.0)
    if worst < UNKNOWN_RELEASE_OK_SHARE:
        review.add("telemetry.release_ids", "telemetry", title, "ok",
                   f"{_pct(span_share)} of spans and {_pct(trace_share)} of traces lack a release (under 1 %)", evidence=ev)
    else:
        review.add("telemetry.release_ids", "telemetry", title, "gap",
                   f"{unknown_spans} of {spans} spans ({_pct(span_share)}) and {unknown_traces} of {traces} traces "
                   f"({_pct(trace_share)}) have release 'unknown': canary, drift and memo cannot attribute them",
                   evidence=ev,
                   fix="Stamp the release version on every span (resource attribute service.version or "
                       "relops.release set by the deploy), or map the attribute your collector sets with a "
                       "sources rule (release_keys) in relops.yaml; relops status counts spans without release.",
                   commands=["OTEL_RESOURCE_ATTRIBUTES=service.version=RELEASE_VERSION  # in the deploy",
                             "relops.yaml: sources: [{match: \"GLOB\", release_keys: [ATTRIBUTE]}]",
                             "relops status"])


# ---------------------------------------------------------------------------------------------
# Checks: rollout


def _rollout_checks(con, home: Home, wf: Workflow, state, now: datetime, review: _Review) -> None:
    from relops_pipeline.lib.drills import drill_status
    from relops_pipeline.lib.registry.policy import parse_policy
    from relops_pipeline.lib.registry.state import RegistryError, pointer_seq_on_disk

    cfg = f"workflows/{wf.name}.yaml"
    error: str | None
    try:
        pol = parse_policy(wf.rollout)
    except RegistryError as exc:
        pol, error = None, str(exc)
    else:
        error = None
    if pol is not None:
        try:
            from relops_pipeline.lib.canary.config import CanaryConfig, CanaryConfigError

            canary_cfg = CanaryConfig.from_dict((wf.rollout or {}).get("canary"))
        except CanaryConfigError as exc:
            error, canary_cfg = f"rollout.canary: {exc}", None
    title = "Rollout policy with rollback triggers"
    if pol is None or error:
        review.add("rollout.policy", "rollout", title, "risk", f"the rollout policy is invalid: {error}",
                   evidence={"error": error},
                   fix=f"Fix the rollout section of {cfg}; a canary cannot be judged or rolled back without it.",
                   commands=[f"$EDITOR {cfg}  # rollout: {{stages: [shadow, canary, ramp, full], auto_rollback: true}}"])
    else:
        assert canary_cfg is not None  # no error: the canary configuration parsed
        ev = {"stages": list(pol.stages), "auto_rollback": pol.auto_rollback,
              "auto_rollback_on": None if pol.auto_rollback_on is None else list(pol.auto_rollback_on),
              "canary_percent": pol.canary_percent, "canary_interval_minutes": canary_cfg.interval_minutes,
              "canary_metrics": [m.name for m in canary_cfg.metrics], "triggers": dict(pol.triggers),
              "canary_config": "configured" if (wf.rollout or {}).get("canary") else "defaults"}
        if "canary" not in pol.stages:
            review.add("rollout.policy", "rollout", title, "risk",
                       f"rollout.stages {list(pol.stages)} has no canary: a release reaches users without being "
                       "compared with the live one, so no canary trigger can roll it back", evidence=ev,
                       fix=f"Add the canary stage to {cfg} (traffic share and intervals under rollout.canary).",
                       commands=[f"{cfg}: rollout: {{stages: [shadow, canary, ramp, full], canary_percent: 10}}"])
        elif not pol.auto_rollback or pol.auto_rollback_on is not None and "canary" not in pol.auto_rollback_on:
            review.add("rollout.policy", "rollout", title, "gap",
                       "a failing canary only alerts (auto_rollback is off for canary failures): a person must "
                       "roll back, which takes longer than the policy would", evidence=ev,
                       fix=f"Let failed canary (and gate) checks roll back automatically in {cfg}, or keep it off "
                           "deliberately and name who rolls back in the runbook.",
                       commands=[f"{cfg}: rollout: {{auto_rollback: true, auto_rollback_on: [canary, gate]}}"])
        else:
            on = "every trigger" if pol.auto_rollback_on is None else ", ".join(pol.auto_rollback_on)
            review.add("rollout.policy", "rollout", title, "ok",
                       f"stages {' -> '.join(pol.stages)}; canary at {pol.canary_percent:g} % judged every "
                       f"{canary_cfg.interval_minutes} min ({ev['canary_config']}); automatic rollback on {on}",
                       evidence=ev)

    on_disk = pointer_seq_on_disk(home.registry_dir, wf.name)
    target = state.live if state.candidate else state.last_known_good
    ev = {"seq": state.seq, "live": state.live, "stage": state.stage, "last_known_good": state.last_known_good,
          "rollback_target": target, "pointer_seq_on_disk": on_disk}
    title = "Registry state and rollback target"
    if state.seq == 0:
        review.add("rollout.registry", "rollout", title, "risk",
                   "no registry state: relops does not know which release serves production, so it cannot "
                   "roll anything back", evidence=ev,
                   fix="Record the release that serves production through relops (the serving application reads "
                       "the pointer file under registry/).",
                   commands=[f"relops rollout {wf.name} LIVE_VERSION --stage full --reason \"adopt relops registry\""])
    elif on_disk is None or on_disk < state.seq:
        review.add("rollout.registry", "rollout", title, "risk",
                   f"the pointer file is {'missing' if on_disk is None else f'behind (seq {on_disk} < {state.seq})'}: "
                   "the application may serve something other than the record", evidence=ev,
                   fix="Rewrite the pointer file from the registry.", commands=[f"relops sync {wf.name}"])
    elif target is None:
        review.add("rollout.registry", "rollout", title, "gap",
                   f"live {state.live or '-'} has no last known good release: a rollback of the live release has "
                   "nowhere to go (the next full rollout sets one)", evidence=ev,
                   fix="Roll the next release out through relops so the current live becomes last known good.",
                   commands=[f"relops rollout {wf.name} NEXT_VERSION --stage canary"])
    else:
        review.add("rollout.registry", "rollout", title, "ok",
                   f"registry seq {state.seq}: live {state.live or '-'}, stage {state.stage or '-'}, rollback target "
                   f"{target}; pointer file in sync", evidence=ev)

    drill = drill_status(con, wf.name, now=now, max_age_days=DRILL_MAX_AGE_DAYS)
    last = drill.get("last_drill") or {}
    ev = {"drill_status": drill["status"], "last_drill": last.get("finished_at"),
          "last_passed": (drill.get("last_passed") or {}).get("finished_at"), "age_days": drill.get("age_days"),
          "max_age_days": DRILL_MAX_AGE_DAYS, "duration_ms": last.get("duration_ms")}
    title = "Rollback drill"
    if drill["status"] == "ok":
        review.add("rollout.drill", "rollout", title, "ok", drill["message"], evidence=ev)
    else:
        review.add("rollout.drill", "rollout", title, "gap" if drill["status"] == "stale" else "risk",
                   drill["message"] + ("" if drill["status"] != "never" else ": the rollback path is unproven"),
                   evidence=ev,
                   fix="Rehearse the rollback (sandboxed: production is not touched) and fix whatever check fails; "
                       "the monthly schedule keeps it fresh.",
                   commands=[f"relops drill {wf.name}", f"relops status {wf.name}"])


# ---------------------------------------------------------------------------------------------
# Checks: ownership, gates, alerts


def _ownership_checks(wf: Workflow, review: _Review) -> None:
    cfg = f"workflows/{wf.name}.yaml"
    if not wf.owner:
        review.add("ownership.owner", "ownership", "Owner", "risk",
                   "no owner: nobody may approve a REVIEW, override a BLOCK or change thresholds",
                   evidence={"owner": None},
                   fix=f"Name the accountable owner in {cfg}.", commands=[f"{cfg}: owner: NAME"])
    else:
        review.add("ownership.owner", "ownership", "Owner", "ok", f"owner {wf.owner}", evidence={"owner": wf.owner})
    if not wf.delegates:
        review.add("ownership.delegates", "ownership", "Delegates", "gap",
                   "no delegates: when the owner is away, nothing that needs an approval can ship",
                   evidence={"delegates": []},
                   fix=f"Name at least one delegate in {cfg}.", commands=[f"{cfg}: delegates: [NAME]"])
    else:
        review.add("ownership.delegates", "ownership", "Delegates", "ok", f"delegates {', '.join(wf.delegates)}",
                   evidence={"delegates": list(wf.delegates)})


def _shell_word(text: str) -> str:
    # Owner names come from the workflow file; quote them so a pasted command does what it says.
    import shlex

    return shlex.quote(text)


def _suggested_floor(mean: float) -> float:
    # A starting floor a little under today's performance: the ratchet tightens it later.
    return max(0.0, math.floor((mean - 0.05) * 20 + 1e-9) / 20)


def _gates_checks(con, wf: Workflow, th, th_error: str | None, suite_info: dict, review: _Review) -> None:
    owner = wf.owner or "OWNER"
    cmd_set = (f"relops thresholds set {wf.name} thresholds.yaml --by {_shell_word(owner)} "
               "--reason \"initial floors from the live release's evals\"")
    if th is None or th_error:
        review.add("gates.thresholds", "gates", "Thresholds recorded", "risk",
                   f"the thresholds cannot be read: {th_error}", evidence={"error": th_error},
                   fix="Fix the thresholds (the gate refuses to decide without them).",
                   commands=[f"relops thresholds show {wf.name}"])
        return
    recorded = con.execute("SELECT count(*) FROM threshold_versions WHERE workflow = ?", [wf.name]).fetchone()[0]
    ev = {"version": th.version, "recorded_versions": recorded, "author": th.author, "min_cases": th.min_cases,
          "in_workflow_file": bool(wf.thresholds)}
    if th.version > 0:
        review.add("gates.thresholds", "gates", "Thresholds recorded", "ok",
                   f"thresholds version {th.version} by {th.author}", evidence=ev)
    else:
        review.add("gates.thresholds", "gates", "Thresholds recorded", "gap",
                   ("the workflow file has a thresholds block that the gate has not recorded yet"
                    if wf.thresholds else "no thresholds recorded: the gate uses the built-in defaults (version 0)"),
                   evidence=ev,
                   fix="Record the thresholds as a version with an author and a reason (floors, budgets, min_cases).",
                   commands=[cmd_set])
    gating = sorted(th.metrics) if th.metrics else sorted(suite_info.get("metrics") or [])
    missing = [m for m in gating if m not in th.floors]
    means = suite_info.get("means") or {}
    ev = {"gating_metrics": gating, "floors": dict(th.floors), "missing": missing,
          "metrics_from": "thresholds.metrics" if th.metrics else "the serving release's eval run"}
    if not gating:
        review.add("gates.floors", "gates", "Floors for the gating metrics", "gap",
                   "no gating metrics known (no thresholds.metrics and no eval run of the serving release)",
                   evidence=ev, fix="Evaluate the serving release, then set floors for the metrics that gate.",
                   commands=[f"relops eval backfill --workflow {wf.name}", cmd_set])
    elif missing:
        suggestion = {m: _suggested_floor(means[m]) for m in missing if m in means}
        ev["suggested_floors"] = suggestion
        snippet = ", ".join(f"{m}: {suggestion.get(m, 'VALUE')}" for m in missing)
        review.add("gates.floors", "gates", "Floors for the gating metrics", "gap",
                   f"no floor for {', '.join(missing)}: a release can lose quality step by step as long as "
                   "each step is within the allowed regression", evidence=ev,
                   fix="Set an absolute floor per gating metric (suggested: the serving release's mean minus 0.05, "
                       "rounded down; the monthly ratchet tightens it).",
                   commands=[f"thresholds.yaml: floors: {{{snippet}}}", cmd_set])
    else:
        review.add("gates.floors", "gates", "Floors for the gating metrics", "ok",
                   "floors " + ", ".join(f"{m} {th.floors[m]:g}" for m in gating), evidence=ev)


def _alert_checks(con, home: Home, wf: Workflow, review: _Review) -> None:
    from relops_pipeline.lib.alerts.model import AlertError
    from relops_pipeline.lib.alerts.sinks import build_sinks

    cfg = f"workflows/{wf.name}.yaml"
    alerts = dict(wf.alerts or {})
    file_rules = alerts.pop("rules", None)  # the rules block is parsed by lib/alerts/rules.py
    try:
        sinks = build_sinks(alerts, home.alerts_dir)
    except AlertError as exc:
        review.add("alerts.sinks", "alerts", "On-call alert sink", "risk", f"the alerts section is invalid: {exc}",
                   evidence={"error": str(exc)}, fix=f"Fix the alerts section of {cfg}: alerts cannot be routed.",
                   commands=[f"$EDITOR {cfg}", f"relops alerts test --workflow {wf.name}"])
    else:
        types = [s.type for s in sinks]
        oncall = [f"{s.name} ({s.type}, min {s.min_severity})" for s in sinks if s.type not in LOCAL_SINK_TYPES]
        ev: dict[str, Any] = {"sinks": [{"name": s.name, "type": s.type, "min_severity": s.min_severity} for s in sinks]}
        if oncall:
            review.add("alerts.sinks", "alerts", "On-call alert sink", "ok", "alerts reach " + ", ".join(oncall),
                       evidence=ev)
        else:
            review.add("alerts.sinks", "alerts", "On-call alert sink", "gap",
                       f"alerts only go to {', '.join(types) or 'nowhere'}: a rollback or a failed canary at night "
                       "wakes nobody", evidence=ev,
                       fix=f"Add a paging or chat sink to {cfg} (the secret stays in an environment variable), "
                           "then send a test alert.",
                       commands=[f"{cfg}: alerts: {{sinks: [{{type: file}}, {{type: pagerduty, routing_key_env: "
                                 "RELOPS_PAGERDUTY_ROUTING_KEY, min_severity: error}, {type: slack, url_env: "
                                 "RELOPS_SLACK_WEBHOOK_URL, min_severity: warning}]}",
                                 f"relops alerts test --workflow {wf.name} --severity error"])

    row = con.execute("SELECT version, config FROM alert_rule_versions WHERE workflow = ? ORDER BY version DESC LIMIT 1",
                      [wf.name]).fetchone()
    recorded = _count_rules(json.loads(row[1])) if row else 0
    in_file = _count_rules(file_rules)
    ev = {"recorded_version": row[0] if row else 0, "recorded_rules": recorded, "rules_in_file": in_file}
    rules_error = None
    if file_rules is not None:
        from relops_pipeline.lib.alerts.rules import RulesError, parse_rules

        try:
            parse_rules({"rules": file_rules}, cfg)
        except RulesError as exc:
            rules_error = str(exc)
    if rules_error:
        review.add("alerts.rules", "alerts", "Signal alert rules", "gap",
                   f"the alert rules in {cfg} are invalid: {rules_error}", evidence={**ev, "error": rules_error},
                   fix=f"Fix alerts.rules in {cfg}; until then the daily signals raise no rule alerts from the file.",
                   commands=[f"$EDITOR {cfg}"])
    elif recorded or in_file:
        where = f"version {row[0]} ({recorded} rules)" if recorded else f"{in_file} rules in {cfg}, not recorded yet"
        review.add("alerts.rules", "alerts", "Signal alert rules", "ok", f"alert rules: {where}", evidence=ev)
    else:
        review.add("alerts.rules", "alerts", "Signal alert rules", "gap",
                   "no signal alert rules: a slow degradation of a live release (latency, errors, thumbs-down) "
                   "alerts nobody until the weekly memo", evidence=ev,
                   fix=f"Add alert rules under alerts.rules in {cfg}; the monthly calibration keeps their noise "
                       "within budget.",
                   commands=[f"{cfg}: alerts: {{rules: [{{name: p95-latency, signal: latency_p95_ms, above: MS, "
                             "min_traces: 50}, {name: error-rate, signal: error_rate, above: 0.03}, "
                             "{name: thumbs-down, signal: feedback_mean, below: 0.55, min_feedback: 20}]}"])


def _count_rules(value: Any) -> int:
    if isinstance(value, dict):
        value = value.get("rules")
    return len(value) if isinstance(value, list) else 0


# ---------------------------------------------------------------------------------------------
# Checks: cadence


def _cadence_checks(con, wf: Workflow, now: datetime, review: _Review) -> None:
    from relops_pipeline.lib.drift.config import DriftConfig, DriftConfigError

    since = now - timedelta(days=MEMO_MAX_AGE_DAYS)
    memos = con.execute(
        "SELECT memo_id, week, generated_at, memo::VARCHAR FROM stability_memos WHERE generated_at >= ? "
        "AND generated_at <= ? ORDER BY generated_at DESC", [since, now]).fetchall()
    # A memo covers every workflow with traffic or operations; look for this one's name in it.
    covering = [m for m in memos if json.dumps(wf.name) in (m[3] or "")]
    last_any = con.execute("SELECT max(generated_at) FROM stability_memos WHERE generated_at <= ?", [now]).fetchone()[0]
    ev = {"memos_in_window": len(memos), "covering_workflow": len(covering), "last_memo": last_any,
          "max_age_days": MEMO_MAX_AGE_DAYS}
    if covering:
        m = covering[0]
        review.add("cadence.memo", "cadence", "Weekly stability memo", "ok",
                   f"memo of the week of {m[1]} generated {m[2]:%Y-%m-%d}", evidence={**ev, "memo_id": m[0]})
    else:
        review.add("cadence.memo", "cadence", "Weekly stability memo", "gap",
                   f"no stability memo covering {wf.name} in the last {MEMO_MAX_AGE_DAYS} days"
                   + (f" (last memo {last_any:%Y-%m-%d})" if last_any else " (none ever)"), evidence=ev,
                   fix="Generate the weekly memo (the weekly schedule does it after drift) and read it in a weekly "
                       "review with the owner.",
                   commands=["relops memo"])

    since = now - timedelta(days=REVIEW_MAX_AGE_DAYS)
    labels, last_label = con.execute(
        "SELECT count(*), max(imported_at) FROM trace_labels WHERE workflow = ? AND imported_at >= ? "
        "AND imported_at <= ?", [wf.name, since, now]).fetchone()
    samples, unlabelled = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM trace_labels l "
        "WHERE l.sample_id = s.sample_id)) FROM review_samples s WHERE workflow = ? AND selected_at >= ? "
        "AND selected_at <= ?", [wf.name, since, now]).fetchone()
    ev = {"labels_in_window": labels, "last_label": last_label, "samples_in_window": samples,
          "unlabelled_samples": unlabelled, "max_age_days": REVIEW_MAX_AGE_DAYS}
    if labels:
        review.add("cadence.review", "cadence", "Labelled review sample", "ok",
                   f"{labels} review labels imported in the last {REVIEW_MAX_AGE_DAYS} days", evidence=ev)
    else:
        pending = f" ({unlabelled} sampled traces wait for labels)" if unlabelled else ""
        review.add("cadence.review", "cadence", "Labelled review sample", "gap",
                   f"no human review labels for {wf.name} in the last {REVIEW_MAX_AGE_DAYS} days{pending}: "
                   "quality problems that no metric catches go unseen", evidence=ev,
                   fix="Label the weekly review sheet (reports/review/WEEK.csv: label pass/fail, failure_type) "
                       "and import it; failures open incidents that become test cases.",
                   commands=["relops review import reports/review/WEEK.csv"])

    title = "Drift reference"
    try:
        drift = DriftConfig.from_workflow(wf.drift)
    except DriftConfigError as exc:
        review.add("cadence.drift_reference", "cadence", title, "risk", f"the drift section is invalid: {exc}",
                   evidence={"error": str(exc)}, fix=f"Fix the drift section of workflows/{wf.name}.yaml.",
                   commands=[f"relops drift --workflow {wf.name}"])
        return
    configured = "reference" in (wf.drift or {})
    ref = con.execute("SELECT reference_id, window_start, window_end, rows_total, created_at FROM drift_references "
                      "WHERE workflow = ? ORDER BY created_at DESC LIMIT 1", [wf.name]).fetchone()
    ev = {"reference": drift.reference.as_dict(), "configured_in_file": configured,
          "recorded_reference": ref[0] if ref else None, "window_start": ref[1] if ref else None,
          "window_end": ref[2] if ref else None, "reference_rows": ref[3] if ref else None}
    if configured or ref:
        what = "configured in the workflow file" if configured else "the default first days"
        rec = f"; recorded {ref[0]} ({ref[1]} .. {ref[2]}, {ref[3]} traces)" if ref else "; not built yet"
        review.add("cadence.drift_reference", "cadence", title, "ok", f"drift reference {what}{rec}", evidence=ev)
    else:
        review.add("cadence.drift_reference", "cadence", title, "gap",
                   "no drift reference: neither pinned in the workflow file nor built yet, so weekly drift has "
                   "nothing to compare with", evidence=ev,
                   fix="Pin the reference to a window when the workflow was known to behave (e.g. the weeks it was "
                       "tuned), then compute the weekly drift.",
                   commands=[f"workflows/{wf.name}.yaml: drift: {{reference: {{start: YYYY-MM-DD, end: YYYY-MM-DD}}}}",
                             f"relops drift --workflow {wf.name}"])


# ---------------------------------------------------------------------------------------------
# The review


def _plan(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    order = {c["id"]: i for i, c in enumerate(checks)}
    steps = []
    for c in checks:
        if c["status"] == "ok":
            continue
        week = 1 if c["status"] == "risk" else AREA_WEEK.get(c["area"], 4)
        steps.append({"week": week, "week_title": WEEKS[week], "check": c["id"], "status": c["status"],
                      "title": c["title"], "why": c["summary"], "fix": c["fix"], "commands": list(c["commands"])})
    steps.sort(key=lambda s: (s["week"], 0 if s["status"] == "risk" else 1, order[s["check"]]))
    for i, s in enumerate(steps, 1):
        s["step"] = i
    return steps


def review_readiness(con: duckdb.DuckDBPyConnection, home: Home, workflow: str, *, now: datetime | None = None,
                     days: int = 28) -> dict[str, Any]:
    """Review whether `workflow` is ready for release operations (see the module docstring).

    Reads the workflow file, its suite files under `<home>/suites/` and the warehouse; writes
    nothing. Returns a JSON-ready dict: workflow, reviewed_at, window, status (ready | gaps |
    at_risk), counts per status, checks (id, area, title — also as name —, status
    ok|gap|risk, summary, evidence, fix, commands) and plan (the checks that are not ok as a first month's plan,
    ordered by risk: step, week, week_title, check, status, title, why, fix, commands).
    A workflow file that exists but is invalid raises WorkflowError."""
    validate_key("workflow", workflow)
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValueError(f"days: expected an integer >= 1, got {days!r}")
    now = _utc_naive(now)
    review = _Review()
    wf = _load(home, workflow, review)
    th, th_error = _thresholds(con, wf)
    suite_info = _suite_checks(con, home, wf, th, review)
    _telemetry_checks(con, wf, now, days, review)
    _rollout_checks(con, home, wf, suite_info["state"], now, review)
    _ownership_checks(wf, review)
    _gates_checks(con, wf, th, th_error, suite_info, review)
    _alert_checks(con, home, wf, review)
    _cadence_checks(con, wf, now, review)
    checks = review.checks
    counts = {s: sum(1 for c in checks if c["status"] == s) for s in STATUSES}
    status = "at_risk" if counts["risk"] else ("gaps" if counts["gap"] else "ready")
    return {
        "workflow": workflow,
        "reviewed_at": now.isoformat(),
        "window": {"days": days, "from": (now - timedelta(days=days)).isoformat(), "to": now.isoformat()},
        "status": status,
        "ready": status == "ready",
        "counts": counts,
        "checks": checks,
        "plan": _plan(checks),
    }


# ---------------------------------------------------------------------------------------------
# Report and record

_STATUS_LABEL = {"ok": "ok", "gap": "GAP", "risk": "RISK"}
_OVERALL = {"ready": "ready: no gaps", "gaps": "not yet ready: gaps to close",
            "at_risk": "at risk: something blocks safe releases"}


def render_readiness_markdown(result: dict[str, Any]) -> str:
    """The review as markdown: status, a table of every check, and the plan by week with its
    commands (in fenced blocks). Everything that came from configuration or data is escaped."""
    wf = result["workflow"]
    c = result["counts"]
    lines = [
        f"# Readiness review: {escape_md(wf)}",
        "",
        f"**{escape_md(_OVERALL.get(result['status'], result['status']))}** — {c['ok']} ok, {c['gap']} gaps, "
        f"{c['risk']} risks. Reviewed {datetime.fromisoformat(result['reviewed_at']):%Y-%m-%d %H:%M} UTC; "
        "telemetry over "
        f"the last {int(result['window']['days'])} days.",
        "",
        "## Checks",
        "",
        md_table(["area", "check", "status", "finding"],
                 [(k["area"], k["title"], _STATUS_LABEL[k["status"]], k["summary"]) for k in result["checks"]]),
        "",
        "## First month's reliability plan",
        "",
    ]
    if not result["plan"]:
        lines += ["Nothing to do: every check is ok. Keep the cadence (weekly memo, review sample, monthly drill).", ""]
    week = None
    for s in result["plan"]:
        if s["week"] != week:
            week = s["week"]
            lines += [f"### Week {week}: {escape_md(s['week_title'])}", ""]
        lines += [f"{s['step']}\\. **{escape_md(s['title'])}** ({_STATUS_LABEL[s['status']]}) — {escape_md(s['why'])}",
                  "", f"   {escape_md(s['fix'])}", ""]
        if s["commands"]:
            lines += fenced_block("\n".join(s["commands"]), "sh") + [""]
    return "\n".join(lines).rstrip() + "\n"


def readiness_path(home: Home, workflow: str) -> Path:
    """`<home>/reports/readiness/<workflow>.md`."""
    return home.reports_dir / "readiness" / f"{validate_key('workflow', workflow)}.md"


def write_readiness(home: Home, result: dict[str, Any], md: str) -> Path:
    """Write the markdown report to `<home>/reports/readiness/<workflow>.md` (replacing the
    previous review's) and return its path."""
    path = readiness_path(home, result["workflow"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(md, encoding="utf-8")
    tmp.replace(path)
    return path


def record_readiness(con: duckdb.DuckDBPyConnection, result: dict[str, Any], md: str | None,
                     path: Path | str | None, dagster_run_id: str | None) -> str:
    """Insert a `readiness_reviews` row for the review and return its id
    (`rdy-<workflow>-<reviewed_at>-<sha8 of the result>`); recording the same result again
    returns the same id without a second row."""
    blob = json.dumps(result, sort_keys=True, separators=(",", ":"), default=str)
    reviewed_at = datetime.fromisoformat(result["reviewed_at"])
    review_id = (f"rdy-{validate_key('workflow', result['workflow'])}-{reviewed_at:%Y%m%dT%H%M%S}-"
                 f"{hashlib.sha256(blob.encode()).hexdigest()[:8]}")
    con.execute(
        "INSERT INTO readiness_reviews (review_id, workflow, status, result, report_md, report_path, dagster_run_id, "
        "reviewed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (review_id) DO NOTHING",
        [review_id, result["workflow"], result["status"], blob, md, None if path is None else str(path),
         dagster_run_id, reviewed_at])
    return review_id


def latest_readiness(con: duckdb.DuckDBPyConnection, workflow: str) -> dict[str, Any] | None:
    """The workflow's latest recorded review (result decoded), or None."""
    row = con.execute("SELECT review_id, status, result, report_path, reviewed_at FROM readiness_reviews "
                      "WHERE workflow = ? ORDER BY reviewed_at DESC, review_id DESC LIMIT 1", [workflow]).fetchone()
    if row is None:
        return None
    return {"review_id": row[0], "status": row[1], "result": json.loads(row[2]), "report_path": row[3],
            "reviewed_at": row[4]}


__all__: list[str] = [
    "review_readiness", "render_readiness_markdown", "write_readiness", "record_readiness", "readiness_path",
    "latest_readiness",
]
