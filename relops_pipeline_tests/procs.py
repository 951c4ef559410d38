"""Child processes in tests: timeouts that scale with the machine, and children that are always
reaped together with everything they started.

    with spawned([sys.executable, "-m", "relops_pipeline.cli", "ingest", path], stdout=PIPE) as proc:
        out, _ = proc.communicate(timeout=scaled(300))

- `scaled(seconds)` multiplies a timeout by $RELOPS_TEST_TIMEOUT_SCALE (default 1.0): a loaded
  or slow machine runs the suite with e.g. RELOPS_TEST_TIMEOUT_SCALE=3 instead of editing tests.
  conftest.py applies the same factor to pytest-timeout's limits.
- `popen` starts a child in a new session, so it leads its own process group; `reap` ends that
  whole group (SIGTERM, then SIGKILL after a grace period) and waits for the child, so nothing
  a test started outlives it. `spawned` and `run` do both, in a `finally`; the `spawn` fixture
  in conftest.py reaps at teardown.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

TIMEOUT_SCALE_ENV = "RELOPS_TEST_TIMEOUT_SCALE"
DEFAULT_GRACE_S = 10.0


def timeout_scale() -> float:
    """The factor in $RELOPS_TEST_TIMEOUT_SCALE (a positive number; 1.0 when unset or empty)."""
    raw = os.environ.get(TIMEOUT_SCALE_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{TIMEOUT_SCALE_ENV}={raw!r} is not a number") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{TIMEOUT_SCALE_ENV}={raw!r} must be a positive number")
    return value


def scaled(seconds: float) -> float:
    """`seconds` times $RELOPS_TEST_TIMEOUT_SCALE: use it for every subprocess or wait timeout."""
    return seconds * timeout_scale()


def popen(argv: Sequence[str | os.PathLike], **kwargs: Any) -> subprocess.Popen:
    """subprocess.Popen in a new session: the child leads a process group of its own (its pid is
    the group id), which `reap` ends with everything the child started."""
    if kwargs.get("start_new_session") is False or "process_group" in kwargs:
        raise ValueError("popen always starts the child in a new session (its own process group)")
    kwargs["start_new_session"] = True
    return subprocess.Popen(argv, **kwargs)


def _signal_group(pgid: int, sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_members(pgid: int) -> list[int]:
    """Live processes in process group `pgid` (zombies, which have exited and wait only for
    their parent to collect them, do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: the group exists, that is all we know
        return [pgid]
    members = []
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        state, _ppid, pgrp = stat[stat.rindex(")") + 2:].split()[:3]
        if int(pgrp) == pgid and state not in ("Z", "X"):
            members.append(int(d.name))
    return members


def reap(proc: subprocess.Popen, grace_s: float = DEFAULT_GRACE_S, sig: int = signal.SIGTERM) -> None:
    """End `proc` (started by `popen`) and every process of its group: `sig` to the group, SIGKILL
    to the group if anything in it is still alive after scaled(grace_s); then wait for `proc` and
    close its pipes. Safe after the child has exited, and safe to call twice."""
    pgid = proc.pid
    _signal_group(pgid, sig)
    deadline = time.monotonic() + scaled(grace_s)
    while time.monotonic() < deadline:
        if proc.poll() is not None and not group_members(pgid):
            break
        time.sleep(0.05)
    else:
        _signal_group(pgid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):  # uninterruptible sleep: nothing more a test can do
        proc.wait(timeout=scaled(grace_s))
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with suppress(OSError):
                stream.close()


@contextmanager
def spawned(argv: Sequence[str | os.PathLike], *, grace_s: float = DEFAULT_GRACE_S, **kwargs: Any) -> Iterator[subprocess.Popen]:
    """`popen(argv, **kwargs)`, reaped with its whole group on leaving the block (also on errors)."""
    proc = popen(argv, **kwargs)
    try:
        yield proc
    finally:
        reap(proc, grace_s)


def run(argv: Sequence[str | os.PathLike], *, timeout: float, check: bool = False, input: str | bytes | None = None,
        **kwargs: Any) -> subprocess.CompletedProcess:
    """Like subprocess.run, but the child runs in its own process group and that whole group is
    reaped when it finishes or the (already scaled) `timeout` expires (TimeoutExpired is raised)."""
    if kwargs.pop("capture_output", False):
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    if input is not None:
        kwargs["stdin"] = subprocess.PIPE
    with spawned(argv, **kwargs) as proc:
        stdout, stderr = proc.communicate(input=input, timeout=timeout)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    if check:
        result.check_returncode()
    return result
