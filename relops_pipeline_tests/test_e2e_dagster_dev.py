"""End to end under a real `dagster dev` (webserver and daemon on 127.0.0.1, started and stopped
here): regressing canary traces land, the sensors ingest them, compute their signals, judge the
canary, and the canary failure sensor rolls it back; the registry's pointer file flips.

Prints the measured time to rollback (failed check evaluation -> pointer flip; target <= 60 s).
"""

from __future__ import annotations

import datetime as dt
import shutil
import time

import pytest

from relops_pipeline.lib.home import Home
from relops_pipeline.lib.registry.rollout import adopt_state
from relops_pipeline.lib.registry.state import RegistryState, write_pointer
from relops_pipeline.lib.warehouse import connect, open_warehouse
from relops_pipeline.registry import read_pointer
from relops_pipeline_tests.dagster_dev import DagsterDev
from relops_pipeline_tests.procs import scaled

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # a real dagster dev, minutes of sensor ticks


def _alerts(home: Home) -> int:
    con = connect(home.warehouse_path, read_only=True, timeout_s=scaled(10))
    try:
        return con.execute("SELECT count(*) FROM alert_outbox WHERE workflow = 'doc-qa'").fetchall()[0][0]
    finally:
        con.close()


@pytest.mark.timeout(900)
def test_regressing_canary_traces_are_rolled_back_by_the_running_daemon(tmp_path):
    from relops_pipeline.demo.traces import generate_demo_traces

    home = Home.resolve(tmp_path / "home")
    home.init(example=True)
    # Only the canary's story: without the example manifests the releases sensor stays quiet
    # (their eval runs would queue ahead of ingestion in the warehouse pool).
    shutil.rmtree(home.root / "releases")
    with open_warehouse(home.warehouse_path) as con:
        state = RegistryState("doc-qa", seq=1, live="v2.3.0", canary="v2.4.0", canary_percent=50.0, stage="canary",
                              last_known_good="v2.1.0", updated_by="li.wei", reason="e2e canary",
                              updated_at=dt.datetime(2026, 11, 20, 10, 0))
        state = adopt_state(con, state, actor="relops-tests", reason="starting point")
    write_pointer(home.registry_dir, state)

    with DagsterDev(home.root, tmp_path / "dagster-dev.log") as dev:
        # Let the sensors take their first ticks (cursors start), then the traces arrive.
        time.sleep(scaled(20))
        started = time.monotonic()
        generate_demo_traces(home.landing_dir / "demo", days=range(53, 56), workflows=["doc-qa"])
        pointer = dev.wait(lambda: (p := read_pointer(home.registry_dir, "doc-qa")).canary is None and p,
                           600, "the registry to flip")
        elapsed = time.monotonic() - started
        # The pointer flips first; the rollback job then opens the incident and writes the alert.
        dev.wait(lambda: _alerts(home) >= 1, 120, "the rollback's alert")
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
