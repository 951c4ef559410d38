"""Crash recovery on the Dagster instance: runs whose process is gone never hold the warehouse.

A run killed with SIGKILL (or whose machine rebooted) stays STARTED and keeps its slot in the
warehouse pool, and every later warehouse run — a rollback included — would wait for it for
ever. Every run records the processes that execute it (Dagster's engine events carry their pid);
a run that is still "in progress" while none of them is alive is stuck: it is marked failed and
its slots are freed. The CLI does this before each run, `relops doctor --fix` on demand, and
the daemon's run monitoring for the runs it launched.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg
import psutil

from relops_pipeline.defs.resources import WAREHOUSE_POOL

IN_PROGRESS = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
HOST_TAG = "relops/host"
PID_TAG = "relops/pid"
# A run whose process has not said its pid yet gets this long before it counts as stuck.
GRACE_S = 60.0


@dataclass(frozen=True)
class RunProcess:
    """A run in progress, or one that holds a warehouse slot, and whether its processes live."""

    run_id: str
    job_name: str
    status: str
    started_at: dt.datetime | None
    pids: tuple[int, ...]
    alive: bool
    holds_warehouse: bool
    why: str  # why it counts as stuck, or "running"

    @property
    def age_s(self) -> float | None:
        return (dt.datetime.now(dt.UTC) - self.started_at).total_seconds() if self.started_at else None

    def describe(self) -> str:
        age = f", {_duration(self.age_s)}" if self.age_s is not None else ""
        what = self.job_name if self.job_name != "__ASSET_JOB" else "assets"
        return f"run {self.run_id[:8]} ({what}{age})"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def run_tags() -> dict[str, str]:
    """Tags the CLI puts on the runs it executes in its own process."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def run_pids(instance: dg.DagsterInstance, run: dg.DagsterRun) -> tuple[int, ...]:
    """Every process that executed the run: the CLI's tag, and the pids of Dagster's engine and
    step-worker events (run worker, in-process executor, step subprocesses)."""
    pids: set[int] = set()
    if run.tags.get(PID_TAG, "").isdigit():
        pids.add(int(run.tags[PID_TAG]))
    kinds = {dg.DagsterEventType.ENGINE_EVENT, dg.DagsterEventType.STEP_WORKER_STARTED,
             dg.DagsterEventType.STEP_WORKER_STARTING}
    for entry in instance.all_logs(run.run_id, of_type=kinds):
        data = entry.dagster_event.event_specific_data if entry.dagster_event else None
        value = getattr(getattr(data, "metadata", None) or {}, "get", lambda _k: None)("pid")
        text = str(getattr(value, "value", value) or "")
        if text.isdigit():
            pids.add(int(text))
    return tuple(sorted(pids))


def process_alive(pid: int, not_after: dt.datetime | None) -> bool:
    """The process lives, is no zombie, and started before the run did (not a reused pid)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        created = dt.datetime.fromtimestamp(proc.create_time(), tz=dt.UTC)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return not_after is None or created <= not_after + dt.timedelta(seconds=5)


def _on_this_host(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    host = run.tags.get(HOST_TAG)
    if host is not None:
        return host == socket.gethostname()
    # Runs the daemon launched: the default launcher starts them on this machine.
    from dagster._core.launcher import DefaultRunLauncher

    return isinstance(instance.run_launcher, DefaultRunLauncher)


def inspect_runs(instance: dg.DagsterInstance) -> list[RunProcess]:
    """Runs in progress and runs in the warehouse pool, with the liveness of their processes.

    A run is in the pool when it holds a slot, or when its step is queued for one. A queued step
    counts too: a process that dies while waiting (SIGKILL, or an exit racing Dagster's own
    claim loop) leaves its step in the queue, and when the slot frees, Dagster assigns it to
    that step, which never claims it — every later run would wait behind it, with no holder to
    name. Its slot counts as held from the moment it is assigned."""
    info = instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL)
    holders = {s.run_id for s in info.claimed_slots} | {p.run_id for p in info.pending_steps
                                                         if p.assigned_timestamp is not None}
    in_pool = holders | {p.run_id for p in info.pending_steps}
    records = {r.dagster_run.run_id: r for r in instance.get_run_records(dg.RunsFilter(statuses=IN_PROGRESS))}
    out = []
    now = dt.datetime.now(dt.UTC)
    for run_id in sorted(in_pool - set(records)):
        found = instance.get_run_records(dg.RunsFilter(run_ids=[run_id]))
        if found:
            records[run_id] = found[0]
        else:  # deleted from the instance, its place in the pool left behind
            out.append(RunProcess(run_id, "?", "missing", None, (), False, run_id in holders,
                                  "the run no longer exists but is still in the warehouse pool"))
    for run_id, rec in records.items():
        run = rec.dagster_run
        # Before its worker says RUN_START, a run dates from its launch (the STARTING update),
        # not from its creation: a run queued behind the warehouse pool is launched long after
        # it was created, and its new worker must not look like a reused pid.
        launched = rec.update_timestamp.timestamp() if rec.update_timestamp else None
        started = rec.start_time or launched or rec.create_timestamp.timestamp()
        started_at = dt.datetime.fromtimestamp(started, tz=dt.UTC) if started else None
        holds = run_id in holders
        if run.status not in IN_PROGRESS and not run.is_finished:  # queued or not started: not ours to judge
            out.append(RunProcess(run_id, run.job_name, run.status.value, started_at, (), True, holds, "not started"))
            continue
        if run.is_finished:
            place = "holds a warehouse slot" if holds else "waits in the warehouse pool"
            out.append(RunProcess(run_id, run.job_name, run.status.value, started_at, (), False, holds,
                                  f"it ended ({run.status.value}) but still {place}"))
            continue
        if not _on_this_host(instance, run):
            out.append(RunProcess(run_id, run.job_name, run.status.value, started_at, (), True, holds, "running elsewhere"))
            continue
        pids = run_pids(instance, run)
        alive = any(process_alive(p, started_at) for p in pids)
        if alive:
            why = "running"
        elif pids:
            why = f"its process{'es' if len(pids) > 1 else ''} {', '.join(map(str, pids))} {'are' if len(pids) > 1 else 'is'} gone"
        elif started_at is not None and (now - started_at).total_seconds() > GRACE_S:
            why = f"no process recorded after {GRACE_S:.0f} s"
        else:
            alive, why = True, "starting"
        out.append(RunProcess(run_id, run.job_name, run.status.value, started_at, pids, alive, holds, why))
    return sorted(out, key=lambda r: (r.started_at or now))


def stuck(runs: Sequence[RunProcess]) -> list[RunProcess]:
    return [r for r in runs if not r.alive]


def release(instance: dg.DagsterInstance, run: RunProcess) -> None:
    """Mark a stuck run failed (when it is still in progress) and free its warehouse slots and
    its place in the pool's queue."""
    found = instance.get_run_by_id(run.run_id)
    if found is not None and found.status in IN_PROGRESS:
        instance.report_run_failed(found, f"relops: {run.why}; marked failed and its warehouse slot freed")
    instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)


def release_stuck(instance: dg.DagsterInstance) -> list[RunProcess]:
    """Release every stuck run; returns them."""
    released = stuck(inspect_runs(instance))
    for run in released:
        release(instance, run)
    return released


def warehouse_holders(instance: dg.DagsterInstance) -> list[RunProcess]:
    """The live runs holding the warehouse now."""
    return [r for r in inspect_runs(instance) if r.holds_warehouse and r.alive]


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def stuck_runs_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    """Release runs whose process is gone (marked failed, their warehouse slots freed), so that
    nothing waits behind a killed run — a rollback least of all."""
    released = release_stuck(context.instance)
    for run in released:
        context.log.warning(f"released stuck {run.describe()}: {run.why}")
    return dg.SkipReason(f"released {len(released)} stuck run(s)" if released else "no stuck run")
