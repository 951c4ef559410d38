"""Executing a Dagster run in the CLI's own process, safely.

Before a run: runs whose process is gone are released (defs/recovery.py). The run's steps then
queue for the warehouse pool's slot in Dagster's order (registry changes first, then the oldest),
and a watchdog thread guards the wait:
- a step that waits for the slot longer than RELOPS_WAREHOUSE_WAIT_S seconds (default 300)
  ends the command with exit 6, naming the run that holds the warehouse;
- Dagster defers SIGINT and SIGTERM to its own checkpoints and has none while a step waits
  for a slot: an interrupt then ends the command at once (exit 130);
- a holder whose process dies meanwhile is released, so the wait goes on to the slot.
In every case the waiting step's claim is withdrawn and its run marked failed: nothing changed.
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
EXIT_BUSY = 6
EXIT_INTERRUPTED = 130


class WarehouseBusyError(Exception):
    """A live run held the warehouse for longer than this command may wait."""


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by SIGINT or SIGTERM (Dagster ends the step and fails the run)."""


INTERRUPT_ERRORS = {"DagsterExecutionInterruptedError", "KeyboardInterrupt"}
# An interrupt that lands while a step's DuckDB query runs: DuckDB checks for signals as it
# executes and ends the query with a RuntimeError of its own (DuckDB 2.0).
DUCKDB_INTERRUPTED = "Query interrupted"


def was_interrupted(result: Any) -> bool:
    """Whether a failed in-process run failed because it was interrupted."""
    for event in getattr(result, "all_events", []):
        err = getattr(event.event_specific_data, "error", None) if event.is_failure and event.event_specific_data else None
        while err is not None:
            if err.cls_name in INTERRUPT_ERRORS or (err.cls_name == "RuntimeError"
                                                    and (err.message or "").strip().endswith(DUCKDB_INTERRUPTED)):
                return True
            err = err.cause
    return False


def reason_first(message: str) -> str:
    """A failed run's one-line message with its cause first: "WHAT run ID [for KEY] failed:
    CAUSE" (cli/common.py) becomes "CAUSE (WHAT run ID)", without the name of the exception
    class Dagster wrapped the cause in. Other messages are returned unchanged."""
    import re

    m = re.fullmatch(r"(?P<what>.+?) run (?P<run>[0-9a-f-]{36})(?: for \S+)? failed: (?P<cause>.+)", message, re.S)
    if m is None:
        return message
    cause = re.sub(r"^(dagster\.[\w.]+\.Failure|ValueError|RegistryError): ", "", m["cause"].strip())
    return f"{cause} ({m['what']} run {m['run']})"


def _say(message: str) -> None:
    print(f"relops: {message}", file=sys.stderr, flush=True)


def wait_s() -> float:
    value = os.environ.get(WAIT_ENV)
    try:
        return float(value) if value else DEFAULT_WAIT_S
    except ValueError:
        raise WarehouseBusyError(f"{WAIT_ENV}={value!r}: expected a number of seconds") from None


def prepare(instance, *, what: str) -> None:
    """Release stuck runs; say who holds the warehouse, when someone does."""
    from relops_pipeline.defs.recovery import release_stuck, warehouse_holders

    for run in release_stuck(instance):
        _say(f"released stuck {run.describe()}: {run.why}")
    if holders := warehouse_holders(instance):
        _say(f"{what}: waiting for the warehouse, held by {', '.join(h.describe() for h in holders)} "
             f"(at most {wait_s():.0f} s; Ctrl-C stops)")


class _Watchdog(threading.Thread):
    """Guards a run while its steps wait for the warehouse pool (see the module's docstring)."""

    def __init__(self, instance, run_id: str, limit_s: float):
        super().__init__(daemon=True, name="relops-warehouse-watchdog")
        self.instance, self.run_id, self.limit_s = instance, run_id, limit_s
        self.done = threading.Event()

    def _waiting_since(self) -> float | None:
        """When this run's step started waiting for the slot (None: not waiting)."""
        from relops_pipeline.defs.resources import WAREHOUSE_POOL

        info = self.instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL)
        if any(s.run_id == self.run_id for s in info.claimed_slots):
            return None
        waits = [p.enqueued_timestamp.timestamp() for p in info.pending_steps
                 if p.run_id == self.run_id and p.assigned_timestamp is None]
        return min(waits) if waits else None

    def _give_up(self, message: str, code: int) -> None:
        self.instance.event_log_storage.free_concurrency_slots_for_run(self.run_id)
        run = self.instance.get_run_by_id(self.run_id)
        if run is not None and not run.is_finished:
            self.instance.report_run_failed(run, f"relops: {message}")
        # Again: the executor's claim loop may have queued the step anew meanwhile. (A row left
        # all the same belongs to a failed run, which the next command's recovery releases.)
        self.instance.event_log_storage.free_concurrency_slots_for_run(self.run_id)
        _say(message)
        os._exit(code)

    def run(self) -> None:
        from dagster._utils.interrupts import check_captured_interrupt

        from relops_pipeline.defs.recovery import release_stuck, warehouse_holders

        last_release = time.monotonic()
        while not self.done.wait(0.5):
            since = self._waiting_since()
            if since is None:
                continue  # running (Dagster interrupts a running step itself), or not in the pool
            if check_captured_interrupt():
                self._give_up("interrupted while waiting for the warehouse; nothing was changed", EXIT_INTERRUPTED)
                return  # (only reached where os._exit is replaced, in tests)
            if time.monotonic() - last_release > 5:
                last_release = time.monotonic()
                for run in release_stuck(self.instance):
                    _say(f"released stuck {run.describe()}: {run.why}")
            if time.time() - since > self.limit_s:
                held_by = ", ".join(h.describe() for h in warehouse_holders(self.instance)) or "another run"
                self._give_up(f"the warehouse is held by {held_by} — waited {self.limit_s:.0f} s: runs that change it "
                              f"take turns; retry when it is done (or wait longer: {WAIT_ENV}=SECONDS), or see "
                              "`relops doctor`", EXIT_BUSY)
                return


def execute(instance, run: Callable[..., Any], *, what: str, tags: dict[str, str], **kwargs: Any) -> Any:
    """`run(instance=..., run_id=..., tags=..., **kwargs)` (a job's execute_in_process) after
    `prepare`, guarded by the watchdog; the run carries this process's pid and host."""
    from relops_pipeline.defs.recovery import run_tags

    limit = wait_s()
    prepare(instance, what=what)
    run_id = str(uuid.uuid4())
    watchdog = _Watchdog(instance, run_id, limit)
    watchdog.start()
    try:
        result = run(instance=instance, run_id=run_id, tags={**tags, **run_tags()}, **kwargs)
    finally:
        watchdog.done.set()
    if not result.success and was_interrupted(result):
        raise RunInterrupted(f"{what} run {run_id} was interrupted")
    return result
