"""The rollback runbook of a workflow, as markdown: what serves now, when to roll back, the exact
commands, how to check that it worked, who owns it and when rollback was last rehearsed.

Every value that came from configuration, a user or the registry is escaped (escape_md);
commands are in fenced blocks, built only from validated names and a shell-quoted home path.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from relops_pipeline.lib.markdown import code_span, escape_md, fenced_block, md_table
from relops_pipeline.lib.registry.state import RegistryState

VERIFY_MINUTES = 15


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _home_root(home: Any) -> Path | None:
    if home is None:
        return None
    if isinstance(home, (str, os.PathLike)):
        return Path(os.fspath(home))
    return Path(os.fspath(home.root))  # a Home


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _fmt_time(value: Any) -> str:
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M} UTC"
    return "-" if value is None else str(value)


def render_runbook(
    state: RegistryState | None,
    plan: Mapping[str, Any],
    workflow_cfg: Any,
    last_drill: Mapping[str, Any] | None,
    home: Any = None,
    *,
    incidents: Sequence[Mapping[str, Any]] | None = None,
    generated_at: datetime | None = None,
    sync_command: str | None = None,
) -> str:
    """The runbook markdown.

    `state`: the workflow's RegistryState (None or seq 0: nothing rolled out yet). `plan`:
    `rollout_plan(...)`. `workflow_cfg`: the Workflow (name, owner, delegates, description) or a
    mapping with those keys. `last_drill`: `drill_status(...)` (or None). `home`: the Home (or
    its folder) used in the commands (`relops --home ...`); None leaves `--home` out.
    `incidents`: open incidents to list (optional). `sync_command`: the command that re-delivers
    the recorded pointer, with {relops} and {workflow} placeholders (e.g. "{relops} sync
    {workflow}" once the CLI has one); None shows the Python call."""
    name = _get(workflow_cfg, "name") or _get(plan, "workflow")
    owner = _get(workflow_cfg, "owner")
    delegates = list(_get(workflow_cfg, "delegates") or [])
    root = _home_root(home)
    relops = "relops" + (f" --home {shlex.quote(str(root))}" if root else "")
    wf = shlex.quote(str(name))
    generated = generated_at or datetime.now(UTC).replace(tzinfo=None)
    cur = state if state is not None and state.seq > 0 else None  # None: nothing rolled out yet

    out: list[str] = [f"# Rollback runbook: {escape_md(name)}", ""]
    description = _get(workflow_cfg, "description")
    if description:
        out += [escape_md(description), ""]
    out += [f"_Generated {_fmt_time(generated)}" + (f" from registry seq {cur.seq}._" if cur is not None else "._"), ""]

    # ------------------------------------------------------------------ now
    out += ["## What serves now", ""]
    if cur is None:
        out += ["Nothing has been rolled out through relops yet: there is no pointer and nothing to roll back.", ""]
    else:
        canary = "-"
        if cur.canary:
            canary = f"{cur.canary} ({cur.stage}, {cur.canary_percent:g} % of requests)"
        rows = [
            ["live", cur.live or "-"],
            ["canary", canary],
            ["shadow", cur.shadow or "-"],
            ["last known good", cur.last_known_good or "none (a rollback of live needs --to VERSION)"],
            ["stage", cur.stage or "-"],
            ["last change", f"seq {cur.seq} by {cur.updated_by or '-'} at {_fmt_time(cur.updated_at)}: "
                            f"{cur.reason or '-'}"],
        ]
        out += [md_table(["", "release"], rows), ""]
        if root:
            out += [f"Pointer file read by the application: {code_span(root / 'registry' / f'{name}.json')}", ""]

    # ------------------------------------------------------------------ triggers
    out += ["## When to roll back", ""]
    auto_on = plan.get("auto_rollback_on")
    if not plan.get("auto_rollback"):
        out.append("Automatic rollback is **off** for this workflow: every failed check raises an alert recommending "
                   "rollback, and a human decides.")
    else:
        which = "any failed check" if auto_on is None else "a failed " + ", ".join(escape_md(t) for t in auto_on) + " check"
        out.append(f"A release in canary or ramp is rolled back automatically on {which}; other failures alert. "
                   "The live release is never rolled back automatically.")
    out.append("")
    trig_rows = [
        [t.get("trigger"), t.get("meaning"), t.get("action_in_canary_or_ramp"), t.get("action_when_live"),
         "yes" if t.get("critical") else "no"]
        for t in plan.get("triggers", [])
    ]
    out += [md_table(["check", "fails when", "in canary or ramp", "when live", "critical"], trig_rows), ""]
    stages = plan.get("stages") or []
    if stages:
        out += ["Stages: " + " → ".join(
            f"{escape_md(s['stage'])} ({s['traffic_percent']:g} %"
            + (f", at least {s['min_minutes']:g} min" if s.get("min_minutes") else "") + ")"
            for s in stages), ""]

    # ------------------------------------------------------------------ manual rollback
    out += ["## Manual rollback", ""]
    if cur is not None and cur.candidate:
        out += [f"{escape_md(cur.candidate)} is in {escape_md(cur.stage)}. Remove it; its traffic returns to "
                f"the live release {escape_md(cur.live)}:", ""]
        out += fenced_block(f'{relops} rollback {wf} --reason "WHY (link the alert or incident)"', "sh")
        out += ["", "Then, if the live release itself must go as well, run the rollback again (it goes to the "
                "last known good, or name a release with --to).", ""]
    elif cur is not None and cur.last_known_good:
        out += [f"Roll the live release {escape_md(cur.live)} back to the last known good "
                f"{escape_md(cur.last_known_good)}:", ""]
        out += fenced_block(f'{relops} rollback {wf} --reason "WHY (link the alert or incident)"', "sh")
        out += ["", "Or to a named release that served before:", ""]
        out += fenced_block(f'{relops} rollback {wf} --to {shlex.quote(cur.last_known_good)} --reason "WHY"', "sh")
        out.append("")
    elif cur is not None:
        out += [f"There is no last known good release behind {escape_md(cur.live)}: name the release to go to "
                "(one that served before):", ""]
        out += fenced_block(f'{relops} rollback {wf} --to VERSION --reason "WHY"', "sh")
        out.append("")
    else:
        out += ["Nothing to roll back yet.", ""]
    out += ["A rollback records the change in the warehouse first, then replaces the pointer file. If the command "
            "reports that the deploy failed, the rollback is already recorded: **do not run it again** (that would "
            "roll back one more release). Fix the cause (disk, webhook receiver) and re-deliver the recorded state:",
            ""]
    if sync_command:
        out += fenced_block(sync_command.format(relops=relops, workflow=wf), "sh")
    else:
        home_arg = json.dumps(str(root)) if root else "None"
        code = (f"from relops_pipeline.lib.registry import sync_pointer_at_home; "
                f"print(sync_pointer_at_home({home_arg}, {json.dumps(str(name))}))")
        out += fenced_block(f"python -c {shlex.quote(code)}", "sh")
    out.append("")

    # ------------------------------------------------------------------ verify
    expected = None
    if cur is not None:
        expected = cur.live if cur.candidate else cur.last_known_good
    out += ["## Verify it worked", ""]
    out += ["1. The registry and pointer: `live` is the release rolled back to, the canary is gone, and seq went up "
            "by one.", ""]
    out += fenced_block(f"{relops} status {wf}", "sh")
    out += ["", f"2. Production traces: ingest the newest traces, then look at the last {VERIFY_MINUTES} minutes by "
            "release. After the flip only "
            + (f"{escape_md(expected)}" if expected else "the target release")
            + " should start new requests (requests in flight at the flip may finish on the old release).", ""]
    sql = (
        "SELECT release, count(DISTINCT trace_id) AS traces,\n"
        "       avg(CASE WHEN status = 'error' THEN 1.0 ELSE 0.0 END) AS error_rate,\n"
        "       quantile_cont(latency_ms, 0.95) AS latency_p95_ms,\n"
        "       max(start_time) AS last_seen\n"
        "FROM spans\n"
        f"WHERE workflow = {_sql_literal(str(name))}\n"
        # BETWEEN rather than >=: fenced blocks HTML-escape < > &, which would break copy and paste
        f"  AND start_time BETWEEN (now() AT TIME ZONE 'UTC') - INTERVAL {VERIFY_MINUTES} MINUTE\n"
        "                     AND (now() AT TIME ZONE 'UTC') + INTERVAL 5 MINUTE\n"
        "GROUP BY release ORDER BY last_seen DESC;"
    )
    out += fenced_block(sql, "sql")
    out += ["", "Run it on a copy of the warehouse or while no relops job writes it (DuckDB lets one process "
            "open the file at a time).", ""]
    out += ["3. Close the incident once the traces confirm it, with what was done.", ""]
    if incidents:
        inc_rows = [[i.get("incident_id"), i.get("release") or "-", i.get("title"), i.get("source"),
                     _fmt_time(i.get("opened_at"))] for i in incidents]
        out += ["Open incidents:", "", md_table(["incident", "release", "title", "source", "opened"], inc_rows), ""]

    # ------------------------------------------------------------------ owner
    out += ["## Owner", ""]
    out.append(f"Owner: {escape_md(owner) if owner else '**none set** (add `owner:` to the workflow file)'}")
    if delegates:
        out.append(f"Delegates: {', '.join(escape_md(d) for d in delegates)}")
    out.append("")

    # ------------------------------------------------------------------ drill
    out += ["## Last drill", ""]
    if not last_drill or last_drill.get("status") in (None, "never"):
        out += ["Rollback has **never** been drilled for this workflow.", ""]
    else:
        status = str(last_drill.get("status"))
        drill = last_drill.get("last_drill") or {}
        lines = [f"Status: **{escape_md(status.upper())}** — {escape_md(last_drill.get('message'))}"]
        if drill:
            took = drill.get("duration_ms")
            lines.append(f"Last drill: {_fmt_time(drill.get('finished_at'))}, "
                         f"{'passed' if drill.get('passed') else 'failed'}"
                         + (f", rollback flipped and read back in {took:.0f} ms" if took is not None else ""))
            detail = drill.get("detail") or {}
            failed = [c for c in detail.get("checks", []) if not c.get("ok")]
            for c in failed:
                lines.append(f"- failed check {escape_md(c.get('name'))}: {escape_md(c.get('detail'))}")
        out += lines + [""]
    out += ["Rehearse it (a sandbox copy; production is not touched):", ""]
    out += fenced_block(f"{relops} drill {wf}", "sh")
    out.append("")
    return "\n".join(out)


def runbook_inputs(con, home, wf) -> dict[str, Any]:
    """Everything a workflow's runbook is rendered from, and a hash of it: the runbook is
    regenerated whenever this hash changes (registry seq, last drill, config, thresholds)."""
    import hashlib
    import json

    from relops_pipeline.lib.drills import drill_status
    from relops_pipeline.lib.gates.thresholds import current_thresholds
    from relops_pipeline.lib.registry.state import get_state

    state = get_state(con, wf.name)
    th = current_thresholds(con, wf.name)
    drill = drill_status(con, wf.name)
    last = drill.get("last_drill") or {}
    config = json.dumps({"owner": wf.owner, "delegates": wf.delegates, "rollout": wf.rollout, "alerts": wf.alerts},
                        sort_keys=True, default=str)
    key = json.dumps([state.seq, last.get("drill_id"), drill["status"], th.version, config], default=str)
    return {"state": state, "thresholds": th, "drill": drill,
            "inputs_hash": hashlib.sha256(key.encode()).hexdigest()[:16]}


@dataclass(frozen=True)
class RunbookWritten:
    """A workflow's runbook, rendered: where, from which inputs (their hash), and the live and
    last known good releases and the drill status it shows."""

    workflow: str
    path: str
    inputs_hash: str
    live: str | None
    last_known_good: str | None
    drill: str  # ok | stale | failed | never


def write_runbook(con, home, wf) -> RunbookWritten:
    """Render the workflow's runbook to <home>/reports/runbooks/<workflow>.md (atomically)."""
    import os

    from relops_pipeline.lib.incidents import list_incidents
    from relops_pipeline.lib.registry.policy import rollout_plan

    inputs = runbook_inputs(con, home, wf)
    text = render_runbook(inputs["state"], rollout_plan(wf, inputs["thresholds"]), wf, inputs["drill"], home,
                          incidents=list_incidents(con, wf.name), sync_command="{relops} sync {workflow}")
    path = Path(home.reports_dir) / "runbooks" / f"{wf.name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return RunbookWritten(workflow=wf.name, path=str(path), inputs_hash=inputs["inputs_hash"], live=inputs["state"].live,
                          last_known_good=inputs["state"].last_known_good, drill=inputs["drill"]["status"])
