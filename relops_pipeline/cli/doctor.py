"""`relops doctor`: what a crash or a kill left behind, and `--fix` to repair it.

- runs in progress whose process is gone, and runs that hold a warehouse slot they no longer use
  (every later warehouse run, a rollback included, would wait for them);
- days whose daily signals or per-request features are missing or older than their spans;
- pointer files behind the registry's state;
- the event log and the tables it backs (tampering is reported, never "fixed": see `relops
  audit verify`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from relops_pipeline.cli.common import (
    EXIT_OK,
    CliError,
    CommandResult,
    Commands,
    dagster_instance,
    read_warehouse,
    run_followup,
)
from relops_pipeline.lib.home import Home

EXIT_UNHEALTHY = 7


def _findings(home: Home) -> dict[str, Any]:
    from relops_pipeline.defs.recovery import inspect_runs
    from relops_pipeline.lib import audit, ledger
    from relops_pipeline.lib.health import pointers_behind, stale_days

    runs = inspect_runs(dagster_instance(home))
    tampering: list[str] = []
    if home.warehouse_path.exists():
        with read_warehouse(home) as con:
            days, pointers = stale_days(con), pointers_behind(con, home.registry_dir)
            tampering = [f"event {p.seq}: {p.message}" for p in audit.verify_chain(con).problems]
            tampering += [d.line() for d in ledger.disagreements(con)]
    else:
        days, pointers = [], []
    return {"runs": runs, "stale_days": days, "pointers_behind": pointers, "tampering": tampering}


def _fix(home: Home, found: dict[str, Any]) -> list[str]:
    from relops_pipeline.defs.followups import after_features, after_ingestion
    from relops_pipeline.defs.recovery import release, stuck
    from relops_pipeline.lib.registry import sync_pointer
    from relops_pipeline.lib.workflows import WorkflowError, load_workflow

    done = []
    instance = dagster_instance(home)
    for run in stuck(found["runs"]):
        release(instance, run)
        done.append(f"released {run.describe()}: {run.why}")
    if found["stale_days"]:
        signals = after_ingestion([d.day for d in found["stale_days"]], source="doctor")
        for followup in signals:
            run_followup(home, followup)
            done.append(f"recomputed the signals and features of {followup.days[0]}..{followup.days[1]}" if followup.days
                         else f"ran {followup.describe()}")
        ranges = [(dt.date.fromisoformat(f.days[0]), dt.date.fromisoformat(f.days[1])) for f in signals if f.days]
        for followup in after_features(ranges, [], source="doctor", max_drift_days=90):
            run_followup(home, followup)
            done.append(f"recomputed the rolling drift of {followup.days[0]}..{followup.days[1]}" if followup.days
                        else f"ran {followup.describe()}")
    for p in found["pointers_behind"]:
        try:
            policy: Any = load_workflow(home.workflows_dir, p.workflow)
        except WorkflowError:
            policy = None
        if any(line.startswith(f"registry_state {p.workflow}:") for line in found["tampering"]):
            done.append(f"left {p.workflow}'s pointer file alone: its registry row disagrees with the event log")
            continue
        with read_warehouse(home) as con:
            sync_pointer(con, home.registry_dir, p.workflow, policy=policy)
        done.append(f"rewrote {p.workflow}'s pointer file from the registry (seq {p.registry_seq})")
    return done


def _lines(found: dict[str, Any]) -> list[str]:
    from relops_pipeline.defs.recovery import stuck

    lines = []
    bad_runs = stuck(found["runs"])
    live = [r for r in found["runs"] if r.alive and r.holds_warehouse]
    lines.append(f"runs: {len(bad_runs)} stuck" + (f"; the warehouse is held by {', '.join(r.describe() for r in live)}" if live
                                                     else "; the warehouse is free"))
    lines += [f"  STUCK {r.describe()}: {r.why}" + ("; holds the warehouse" if r.holds_warehouse else "") for r in bad_runs]
    days = found["stale_days"]
    lines.append(f"derived data: {len(days)} stale day{'s' if len(days) != 1 else ''}")
    lines += [f"  {d.day}: {d.why}" for d in days[:20]] + ([f"  ... and {len(days) - 20} more"] if len(days) > 20 else [])
    ptrs = found["pointers_behind"]
    lines.append(f"pointer files: {len(ptrs)} behind the registry")
    lines += [f"  {p.workflow}: registry seq {p.registry_seq}, pointer file "
              f"{'missing' if p.pointer_seq is None else f'seq {p.pointer_seq}'}" for p in ptrs]
    bad = found["tampering"]
    lines.append(f"event log: {len(bad)} problem{'s' if len(bad) != 1 else ''}"
                 + (" (not repaired by --fix: see `relops audit verify`)" if bad else ""))
    lines += [f"  {line}" for line in bad[:20]] + ([f"  ... and {len(bad) - 20} more"] if len(bad) > 20 else [])
    return lines


def _healthy(found: dict[str, Any]) -> bool:
    from relops_pipeline.defs.recovery import stuck

    return not (stuck(found["runs"]) or found["stale_days"] or found["pointers_behind"] or found["tampering"])


def cmd_doctor(args) -> CommandResult:
    from relops_pipeline.lib.results import to_json

    home = Home.resolve(args.home)
    if not home.exists():
        raise CliError(f"no relops home at {home.root}: run `relops init --home {home.root}` first", 5)
    found = _findings(home)
    lines = _lines(found)
    fixed: list[str] = []
    if args.fix and not _healthy(found):
        fixed = _fix(home, found)
        found = _findings(home)
        lines = ["fixed:", *(f"  {f}" for f in fixed), "now:", *_lines(found)]
    healthy = _healthy(found)
    if not healthy and not args.fix:
        lines.append("repair with: relops doctor --fix")
    data = {"healthy": healthy, "fixed": fixed, **{k: to_json(v) for k, v in found.items()}}
    return CommandResult(data, "\n".join(lines), EXIT_OK if healthy else EXIT_UNHEALTHY)


def register(add: Commands) -> None:
    """Register doctor on the `relops` parser."""
    p = add("doctor", cmd_doctor, "find what a crash left behind (stuck runs holding the warehouse, stale derived days, "
                                  "pointer files behind the registry); exit 7 when something is wrong")
    p.add_argument("--fix", action="store_true", help="release stuck runs, recompute stale days, rewrite pointer files")
