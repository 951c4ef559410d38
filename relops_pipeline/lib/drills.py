"""Rollback drills: rehearse a rollback without touching production, and keep the score.

`run_drill` copies the workflow's registry — its `registry_state` row and its pointer file —
into a sandbox (an in-memory warehouse with the real schema, and a temporary registry folder),
performs a rollback there through the real code path (`rollback`, the pointer-file deployer),
reads the pointer back with `relops_pipeline.registry` exactly as a serving application would,
times the flip, discards the sandbox, and records one `drills` row (and a `drill` event).

It passes when every check holds:
- state_recorded: the workflow has a registry state;
- pointer_in_sync: the production pointer file exists and has the warehouse's seq and releases
  (a stale pointer means the application serves something other than the record);
- rollback_target: there is something to roll back to (the live release for a candidate in
  flight, else the last known good) — without it a real rollback would fail too;
- rollback_recorded, pointer_flipped, traffic_moved: the sandbox rollback was recorded, the
  pointer read back has seq + 1 and the target as live and no canary, and `choose_release`
  sends no request to the release rolled back from;
- production_untouched: the production pointer file and state are unchanged afterwards.

`duration_ms` is the time from calling rollback to reading the flipped pointer back.
`drill_status` turns the history into ok / stale / failed / never.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from relops_pipeline import registry as app_registry
from relops_pipeline.lib import audit, ledger, warehouse
from relops_pipeline.lib.registry.deployers import PointerFileDeployer
from relops_pipeline.lib.registry.rollout import adopt_state, rollback
from relops_pipeline.lib.registry.state import get_state
from relops_pipeline.lib.results import to_json
from relops_pipeline.lib.warehouse import fetch_one

KIND_DRILL = "drill"
DEFAULT_MAX_AGE_DAYS = 35
DRILL_COLUMNS = ("drill_id", "workflow", "started_at", "finished_at", "passed", "duration_ms", "detail", "dagster_run_id")
_SAMPLE_KEYS = 2000  # request keys routed through the read-back pointer


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class DrillCheck:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class DrillResult:
    """One drill of a workflow's rollback. Round-trips through JSON (lib/results.py)."""

    drill_id: str
    workflow: str
    passed: bool
    started_at: datetime
    finished_at: datetime
    duration_ms: float | None  # rollback call -> flipped pointer read back
    total_ms: float
    from_release: str | None
    to_release: str | None
    checks: tuple[DrillCheck, ...] = ()
    error: str | None = None

    @property
    def failed_checks(self) -> list[str]:
        return [c.name for c in self.checks if not c.ok]


@dataclass(frozen=True)
class WorkflowDrill:
    """A workflow's part of a drill round: its drill, or None when it was never rolled out
    (no registry to roll back: nothing to drill)."""

    workflow: str
    drill: DrillResult | None


def run_drill(
    con: duckdb.DuckDBPyConnection,
    registry_dir: str | Path,
    workflow: str,
    *,
    actor: str,
    run_id: str | None = None,
    sandbox_root: str | Path | None = None,
) -> DrillResult:
    """Rehearse a rollback of `workflow` in a sandbox and record the result (see the module
    docstring). Never changes the production registry state or pointer. Returns the result;
    a failed drill is a result with passed False, not an exception."""
    started = _now()
    t_start = time.perf_counter()
    drill_id = f"drill-{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    checks: list[DrillCheck] = []

    def check(name: str, ok: bool, detail: str) -> bool:
        checks.append(DrillCheck(name, bool(ok), detail))
        return bool(ok)

    registry_dir = Path(registry_dir)
    real_path = app_registry.pointer_file(registry_dir, workflow)
    real_bytes = real_path.read_bytes() if real_path.exists() else None
    state = get_state(con, workflow)
    source = target = None
    duration_ms: float | None = None
    error: str | None = None

    if check("state_recorded", state.seq > 0,
             f"registry seq {state.seq}" if state.seq else "nothing rolled out: no registry state to drill"):
        try:
            on_disk = app_registry.parse_pointer(real_bytes, workflow) if real_bytes is not None else None
        except app_registry.PointerError as exc:
            on_disk, why = None, f"production pointer unreadable: {exc}"
        else:
            why = "no production pointer file" if on_disk is None else (
                f"pointer seq {on_disk.seq} live {on_disk.live}, warehouse seq {state.seq} live {state.live}")
        check("pointer_in_sync", on_disk is not None and on_disk.seq == state.seq and on_disk.live == state.live,
              why)
        tampered = audit.anchor_problem(con) or ledger.registry_problem(con, workflow, state)
        check("registry_backed_by_log", tampered is None,
              tampered or f"registry seq {state.seq} agrees with event {state.event_seq} of the keyed log")
        candidate = state.candidate
        source = candidate or state.live
        target = state.live if candidate else state.last_known_good
        if check("rollback_target", target is not None,
                 f"{source} -> {target}" if target else f"no last known good release to roll {source} back to"):
            sandbox = Path(tempfile.mkdtemp(prefix="relops-drill-", dir=sandbox_root))
            sb_con = duckdb.connect()
            try:
                warehouse.migrate(sb_con)
                adopt_state(sb_con, state, actor=actor, reason=f"sandbox copy for rollback drill {drill_id}")
                sb_registry = sandbox / "registry"
                sb_registry.mkdir()
                if real_bytes is not None:
                    (app_registry.pointer_file(sb_registry, workflow)).write_bytes(real_bytes)
                t_flip = time.perf_counter()
                result = rollback(sb_con, sb_registry, workflow, trigger="drill", reason=f"rollback drill {drill_id}",
                                  actor=actor, automatic=False, deployer=PointerFileDeployer())
                pointer = app_registry.read_pointer(sb_registry, workflow)
                duration_ms = (time.perf_counter() - t_flip) * 1000.0
                recorded = fetch_one(sb_con.execute(
                    "SELECT count(*) FROM rollbacks WHERE rollback_id = ? AND flipped_at IS NOT NULL",
                    [result.rollback_id],
                ))[0]
                check("rollback_recorded", result.performed and recorded == 1,
                      f"rollback {result.rollback_id} recorded with its flip time" if recorded else "no rollbacks row")
                check("pointer_flipped",
                      pointer.seq == state.seq + 1 and pointer.live == target and pointer.canary is None,
                      f"read back seq {pointer.seq} live {pointer.live} canary {pointer.canary}; expected seq "
                      f"{state.seq + 1} live {target} and no canary")
                served = {app_registry.choose_release(pointer, f"drill-{i}") for i in range(_SAMPLE_KEYS)}
                check("traffic_moved", served == {target},
                      f"{_SAMPLE_KEYS} sample requests served by {sorted(s or '-' for s in served)}")
            except Exception as exc:  # a drill reports what broke rather than crashing its caller
                error = f"{type(exc).__name__}: {exc}"
                check("rollback_performed", False, error)
            finally:
                sb_con.close()
                shutil.rmtree(sandbox, ignore_errors=True)
        after_bytes = real_path.read_bytes() if real_path.exists() else None
        after_state = get_state(con, workflow)
        check("production_untouched", after_bytes == real_bytes and after_state.seq == state.seq,
              "production pointer and state unchanged" if after_bytes == real_bytes and after_state.seq == state.seq
              else "the production pointer or state changed during the drill")

    finished = _now()
    res = DrillResult(
        drill_id=drill_id, workflow=workflow, passed=all(c.ok for c in checks), started_at=started,
        finished_at=finished, duration_ms=duration_ms, total_ms=(time.perf_counter() - t_start) * 1000.0,
        from_release=source, to_release=target, checks=tuple(checks), error=error,
    )
    detail = {"checks": to_json(res.checks), "from": source, "to": target, "seq": state.seq, "total_ms": res.total_ms,
              "error": error}
    with audit.transaction(con):
        audit.append_event(
            con, kind=KIND_DRILL, actor=actor,
            reason=f"rollback drill {'passed' if res.passed else 'FAILED: ' + ', '.join(res.failed_checks)}",
            workflow=workflow, payload={"drill_id": drill_id, "passed": res.passed, "duration_ms": duration_ms,
                                        "from": source, "to": target},
        )
        con.execute(
            f"INSERT INTO drills ({', '.join(DRILL_COLUMNS)}) VALUES ({', '.join('?' for _ in DRILL_COLUMNS)})",
            [drill_id, workflow, started, finished, res.passed, duration_ms, json.dumps(detail, default=str), run_id],
        )
    return res


def drill_workflows(
    con: duckdb.DuckDBPyConnection, registry_dir: str | Path, workflows: Sequence[str], *, actor: str,
    run_id: str | None = None,
) -> tuple[WorkflowDrill, ...]:
    """A drill round: run_drill for each workflow that was ever rolled out."""
    return tuple(
        WorkflowDrill(name, run_drill(con, registry_dir, name, actor=actor, run_id=run_id)
                      if get_state(con, name).seq > 0 else None)
        for name in workflows
    )


def _drill_row(values: tuple) -> dict[str, Any]:
    row = dict(zip(DRILL_COLUMNS, values, strict=False))
    row["detail"] = json.loads(row["detail"]) if row["detail"] else {}
    return row


def list_drills(con: duckdb.DuckDBPyConnection, workflow: str, *, limit: int | None = None) -> list[dict[str, Any]]:
    """The workflow's drills, newest first."""
    sql = f"SELECT {', '.join(DRILL_COLUMNS)} FROM drills WHERE workflow = ? ORDER BY finished_at DESC, drill_id DESC"
    if limit is not None:
        sql += f" LIMIT {max(0, int(limit))}"
    return [_drill_row(r) for r in con.execute(sql, [workflow]).fetchall()]


def _why_failed(workflow: str, check: Mapping[str, Any]) -> str:
    """A failed check in one line: what is wrong and the next step."""
    name, detail = check.get("name"), check.get("detail") or ""
    if name == "state_recorded":
        return (f"nothing rolled out yet: a drill needs a live release; roll one out first "
                f"(relops rollout {workflow} V --stage full)")
    if name == "rollback_target":
        return (f"no last known good release yet: a drill needs a release to roll back to; roll out a second "
                f"release first (relops rollout {workflow} VERSION --stage canary, then --stage full)")
    if name == "pointer_in_sync":
        return f"the production pointer disagrees with the registry ({detail}); rewrite it with relops sync {workflow}"
    if name == "registry_backed_by_log":
        return f"the registry is not backed by its keyed log ({detail}); see relops doctor"
    if name == "production_untouched":
        return f"{detail}: a rollout or rollback ran at the same time; drill again (relops drill {workflow})"
    return f"{name}: {detail}" if detail else str(name)


def drill_status(
    con: duckdb.DuckDBPyConnection,
    workflow: str,
    now: datetime | None = None,
    max_age_days: float = DEFAULT_MAX_AGE_DAYS,
) -> dict[str, Any]:
    """Whether the workflow's rollback has been rehearsed recently:

    never  - no drill recorded;
    failed - the last drill failed (whatever its age);
    stale  - the last drill passed but finished more than `max_age_days` before `now`;
    ok     - the last drill passed within `max_age_days`.

    Returns {status, ok (status == "ok"), message, last_drill, last_passed, age_days,
    max_age_days}; `now` defaults to the current UTC time (naive UTC or aware)."""
    now = _now() if now is None else (now.astimezone(UTC).replace(tzinfo=None) if now.tzinfo else now)
    drills = list_drills(con, workflow, limit=1)
    last = drills[0] if drills else None
    passed = con.execute(
        f"SELECT {', '.join(DRILL_COLUMNS)} FROM drills WHERE workflow = ? AND passed "
        "ORDER BY finished_at DESC, drill_id DESC LIMIT 1",
        [workflow],
    ).fetchone()
    last_passed = _drill_row(passed) if passed else None
    out: dict[str, Any] = {"workflow": workflow, "last_drill": last, "last_passed": last_passed,
                           "age_days": None, "max_age_days": max_age_days}
    if last is None:
        status, message = "never", f"{workflow}: rollback has never been drilled (relops drill {workflow})"
    else:
        age = (now - last["finished_at"]) / timedelta(days=1)
        out["age_days"] = age
        if not last["passed"]:
            failed = [c for c in last["detail"].get("checks", []) if not c.get("ok")]
            status = "failed"
            why = "; ".join(_why_failed(workflow, c) for c in failed)
            message = (f"{workflow}: the last drill ({last['finished_at']:%Y-%m-%d %H:%M} UTC) failed: "
                       f"{why or last['detail'].get('error') or 'see its detail'}")
        elif age > max_age_days:
            status = "stale"
            message = (f"{workflow}: the last drill passed {age:.0f} days ago, more than {max_age_days:g}: "
                       f"drill again (relops drill {workflow})")
        else:
            status = "ok"
            took = f" (flip read back in {last['duration_ms']:.0f} ms)" if last["duration_ms"] is not None else ""
            message = f"{workflow}: the last drill passed {age:.1f} days ago{took}"
    out.update(status=status, ok=status == "ok", message=message)
    return out


def rolled_out_drill_statuses(con: duckdb.DuckDBPyConnection, workflows: Sequence[str]) -> list[dict[str, Any]]:
    """drill_status of each workflow that was ever rolled out (one never rolled out has no
    registry to roll back: nothing to drill yet)."""
    return [drill_status(con, name) for name in workflows if get_state(con, name).seq > 0]
