"""End to end under a real `dagster dev` (webserver and daemon on 127.0.0.1, started and stopped
here): regressing canary traces land, the sensors ingest them, compute their signals, judge the
canary, and the canary failure sensor rolls it back; the registry's pointer file flips.

Prints the measured time to rollback (failed check evaluation -> pointer flip; target <= 60 s).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from relops_pipeline.lib.home import Home
from relops_pipeline.lib.registry.state import RegistryState, put_state, write_pointer
from relops_pipeline.lib.warehouse import connect, open_warehouse
from relops_pipeline.registry import read_pointer

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout_s: float, what: str, proc=None, log: Path | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"dagster dev exited while waiting for {what}:\n{log.read_text()[-4000:] if log else ''}")
        try:
            value = predicate()
        except Exception:  # noqa: BLE001 — not ready yet
            value = None
        if value:
            return value
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}" + (f":\n{log.read_text()[-4000:]}" if log else ""))


def _alerts(home: Home) -> int:
    con = connect(home.warehouse_path, read_only=True, timeout_s=10)
    try:
        return con.execute("SELECT count(*) FROM alert_outbox WHERE workflow = 'doc-qa'").fetchall()[0][0]
    finally:
        con.close()


@pytest.mark.timeout(900)
def test_regressing_canary_traces_are_rolled_back_by_the_running_daemon(tmp_path):
    from relops_pipeline.lib.demo_traces import generate_demo_traces

    home = Home.resolve(tmp_path / "home")
    home.init()
    # Only the canary's story: without the example manifests the releases sensor stays quiet
    # (their eval runs would queue ahead of ingestion in the warehouse pool).
    shutil.rmtree(home.root / "releases")
    with open_warehouse(home.warehouse_path) as con:
        state = RegistryState("doc-qa", seq=1, live="v2.3.0", canary="v2.4.0", canary_percent=50.0, stage="canary",
                              last_known_good="v2.1.0", updated_by="li.wei", reason="e2e canary",
                              updated_at=dt.datetime(2026, 11, 20, 10, 0))
        put_state(con, state)
    write_pointer(home.registry_dir, state)

    port = _free_port()
    env = {**os.environ, "RELOPS_HOME": str(home.root), "DAGSTER_HOME": str(home.dagster_home)}
    log = tmp_path / "dagster-dev.log"
    bin_dir = Path(sys.executable).parent
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(bin_dir / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port), "-w", str(REPO / "workspace.yaml")],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        _wait(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2).status == 200,
              180, "the webserver", proc, log)
        # Let the sensors take their first ticks (cursors start), then the traces arrive.
        time.sleep(20)
        started = time.monotonic()
        generate_demo_traces(home.landing_dir / "demo", days=range(53, 56), workflows=["doc-qa"])
        pointer = _wait(lambda: (p := read_pointer(home.registry_dir, "doc-qa")).canary is None and p,
                        600, "the registry to flip", proc, log)
        elapsed = time.monotonic() - started
        # The pointer flips first; the rollback job then opens the incident and writes the alert.
        _wait(lambda: _alerts(home) >= 1, 120, "the rollback's alert", proc, log)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert pointer.live == "v2.3.0" and pointer.canary is None and pointer.seq == 2
    con = connect(home.warehouse_path, read_only=True)
    try:
        trigger, automatic, ttr = con.execute(
            "SELECT trigger, automatic, time_to_rollback_s FROM rollbacks WHERE workflow = 'doc-qa' AND performed").fetchall()[0]
        verdicts = [r[0] for r in con.execute("SELECT verdict FROM canary_analyses ORDER BY computed_at").fetchall()]
        alerts = con.execute("SELECT count(*) FROM alert_outbox WHERE workflow = 'doc-qa'").fetchone()[0]
    finally:
        con.close()
    print(f"\ntraces landed -> registry flipped: {elapsed:.1f} s; time to rollback (failed canary check -> "
          f"pointer flip): {ttr:.1f} s; canary verdicts {verdicts}")
    assert trigger == "canary" and automatic and verdicts[-1] == "fail" and alerts >= 1
    assert 0 <= ttr <= 60
