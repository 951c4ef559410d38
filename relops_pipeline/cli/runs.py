"""Executing a Dagster run in the CLI's own process, safely.

Before a run: runs whose process is gone are released (defs/recovery.py), and while a live run
holds the warehouse the command waits — interruptibly, and at most RELOPS_WAREHOUSE_WAIT_S
seconds (default 300), then fails naming the holder. During a run, Dagster defers SIGINT and
SIGTERM to its own checkpoints, and it has none while a step waits for a pool slot: a watchdog
thread ends such a waiting command cleanly (its claim withdrawn, its run marked failed).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

WAIT_ENV = "RELOPS_WAREHOUSE_WAIT_S"
DEFAULT_WAIT_S = 300.0
EXIT_INTERRUPTED = 130


class WarehouseBusyError(Exception):
    """A live run held the warehouse for longer than this command may wait."""


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by SIGINT or SIGTERM (Dagster ends the step and fails the run)."""


INTERRUPT_ERRORS = {"DagsterExecutionInterruptedError", "KeyboardInterrupt"}


def was_interrupted(result: Any) -> bool:
    """Whether a failed in-process run failed because it was interrupted."""
    for event in getattr(result, "all_events", []):
        err = getattr(event.event_specific_data, "error", None) if event.is_failure and event.event_specific_data else None
        while err is not None:
            if err.cls_name in INTERRUPT_ERRORS:
                return True
            err = err.cause
    return False


def _say(message: str) -> None:
    print(f"relops: {message}", file=sys.stderr, flush=True)


def wait_s() -> float:
    value = os.environ.get(WAIT_ENV)
    try:
        return float(value) if value else DEFAULT_WAIT_S
    except ValueError:
        raise WarehouseBusyError(f"{WAIT_ENV}={value!r}: expected a number of seconds") from None


def prepare(instance, *, what: str) -> None:
    """Release stuck runs, then wait (bounded) until no live run holds the warehouse."""
    from relops_pipeline.defs.recovery import release_stuck, warehouse_holders

    for run in release_stuck(instance):
        _say(f"released stuck {run.describe()}: {run.why}")
    deadline = time.monotonic() + wait_s()
    told = False
    while holders := warehouse_holders(instance):
        held_by = ", ".join(h.describe() for h in holders)
        if time.monotonic() >= deadline:
            raise WarehouseBusyError(f"the warehouse is held by {held_by} — retry when it is done, or see `relops doctor`")
        if not told:
            _say(f"{what}: waiting for the warehouse, held by {held_by} (at most {wait_s():.0f} s; Ctrl-C stops)")
            told = True
        time.sleep(1.0)
        for run in release_stuck(instance):
            _say(f"released stuck {run.describe()}: {run.why}")


class _Watchdog(threading.Thread):
    """Ends the process when an interrupt arrives while the run still waits for a pool slot."""

    def __init__(self, instance, run_id: str):
        super().__init__(daemon=True, name="relops-interrupt-watchdog")
        self.instance, self.run_id = instance, run_id
        self.done = threading.Event()

    def run(self) -> None:
        from dagster._utils.interrupts import check_captured_interrupt

        from relops_pipeline.defs.resources import WAREHOUSE_POOL

        while not self.done.wait(0.5):
            if not check_captured_interrupt():
                continue
            info = self.instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL)
            if any(s.run_id == self.run_id for s in info.claimed_slots):
                return  # it runs: Dagster interrupts the step itself at its next checkpoint
            self.instance.event_log_storage.free_concurrency_slots_for_run(self.run_id)
            run = self.instance.get_run_by_id(self.run_id)
            if run is not None and not run.is_finished:
                self.instance.report_run_failed(run, "relops: interrupted while waiting for the warehouse")
            _say("interrupted while waiting for the warehouse; nothing was changed")
            os._exit(EXIT_INTERRUPTED)
            return  # (only reached where os._exit is replaced, in tests)


def execute(instance, run: Callable[..., Any], *, what: str, tags: dict[str, str], **kwargs: Any) -> Any:
    """`run(instance=..., run_id=..., tags=..., **kwargs)` (a job's execute_in_process) after
    `prepare`, with the watchdog; the run carries this process's pid and host."""
    from relops_pipeline.defs.recovery import run_tags

    prepare(instance, what=what)
    run_id = str(uuid.uuid4())
    watchdog = _Watchdog(instance, run_id)
    watchdog.start()
    try:
        result = run(instance=instance, run_id=run_id, tags={**tags, **run_tags()}, **kwargs)
    finally:
        watchdog.done.set()
    if not result.success and was_interrupted(result):
        raise RunInterrupted(f"{what} run {run_id} was interrupted")
    return result
