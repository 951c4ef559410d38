"""The test suite's own process helpers (procs.py): scaled timeouts, and reaping a child with
everything it started."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from relops_pipeline_tests.procs import TIMEOUT_SCALE_ENV, group_members, popen, reap, run, scaled, spawned

# A child that starts a grandchild (in its group: no new session), prints both pids, and then
# waits; with "ignore", both ignore SIGTERM, and with "exit" the child exits at once, leaving
# the grandchild behind as an orphan in the group.
FAMILY = r"""
import os, signal, subprocess, sys, time
mode = sys.argv[1]
if mode == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen([sys.executable, "-c",
    "import signal, sys, time\n"
    "if sys.argv[1] == 'ignore': signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(600)", mode], stdout=subprocess.PIPE, text=True)
grandchild.stdout.readline()
print(os.getpid(), grandchild.pid, flush=True)
if mode != "exit":
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    """The process exists and has not exited (a zombie only waits for its parent to collect it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _family(spawn_fn, mode: str) -> tuple[subprocess.Popen, int, int]:
    proc = spawn_fn([sys.executable, "-c", FAMILY, mode], stdout=subprocess.PIPE, text=True)
    child, grandchild = (int(x) for x in proc.stdout.readline().split())
    assert child == proc.pid and _alive(grandchild)
    return proc, child, grandchild


pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc (Linux)")


@pytest.mark.parametrize("mode", ["plain", "ignore", "exit"])
def test_reap_ends_the_child_and_the_grandchild_it_started(mode):
    proc, child, grandchild = _family(popen, mode)
    try:
        assert os.getpgid(grandchild) == child  # the grandchild is in the child's group
        if mode == "exit":
            proc.wait(timeout=scaled(30))
            assert _alive(grandchild)  # an orphan that outlived its parent
        started = time.monotonic()
        reap(proc, grace_s=0.5)
        elapsed = time.monotonic() - started
    finally:
        reap(proc, grace_s=0.5)  # safe to call twice
    assert not _alive(child) and not _alive(grandchild)
    assert proc.returncode is not None and group_members(child) == []
    if mode == "ignore":  # SIGTERM ignored: SIGKILL after the grace period
        assert elapsed >= 0.5 * scaled(1)


def test_spawned_reaps_when_the_block_fails():
    with pytest.raises(RuntimeError, match="the test failed"), spawned([sys.executable, "-c", FAMILY, "plain"],
                                                                       stdout=subprocess.PIPE, text=True) as proc:
        child, grandchild = (int(x) for x in proc.stdout.readline().split())
        raise RuntimeError("the test failed")
    assert not _alive(child) and not _alive(grandchild)


def test_spawn_fixture_children_lead_their_own_group(spawn):
    proc, child, grandchild = _family(spawn, "plain")
    assert os.getpgid(child) == child != os.getpgid(0)
    # the fixture's teardown reaps them; test_reap_* shows what that does


def test_run_times_out_and_leaves_nothing_behind(tmp_path):
    pids = tmp_path / "pids"
    code = FAMILY.replace("print(os.getpid(), grandchild.pid, flush=True)",
                          f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{grandchild.pid}}')")
    with pytest.raises(subprocess.TimeoutExpired):
        run([sys.executable, "-c", code, "plain"], timeout=scaled(2.5), capture_output=True, text=True)
    child, grandchild = (int(x) for x in pids.read_text().split())  # written within the timeout, after the grandchild began
    assert not _alive(child) and not _alive(grandchild)
    done = run([sys.executable, "-c", "print('hi')"], timeout=scaled(30), capture_output=True, text=True, check=True)
    assert done.stdout == "hi\n"


def test_scaled_reads_the_multiplier(monkeypatch):
    monkeypatch.delenv(TIMEOUT_SCALE_ENV, raising=False)
    base = scaled(10)
    assert base == 10
    monkeypatch.setenv(TIMEOUT_SCALE_ENV, "2.5")
    assert scaled(10) == 25
    for bad in ("zero", "0", "-1", "inf"):
        monkeypatch.setenv(TIMEOUT_SCALE_ENV, bad)
        with pytest.raises(ValueError, match=TIMEOUT_SCALE_ENV):
            scaled(1)
