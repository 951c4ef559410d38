"""Crash recovery: a run whose process is gone never holds the warehouse.

On an instance: a STARTED run holding the warehouse slot whose process died is found, marked
failed and its slot freed; a live holder is left alone. Through the CLI: a SIGKILLed ingestion
leaves the warehouse held and days without signals, and afterwards `relops rollback` still goes
through in seconds, `relops doctor` names what was left and `--fix` repairs it; a command waiting
for a live holder gives up with the holder's name after its bound, and SIGTERM ends it at once.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from relops_pipeline.cli.runs import EXIT_BUSY, EXIT_INTERRUPTED, _Watchdog
from relops_pipeline.defs.recovery import PID_TAG, inspect_runs, release_stuck, stuck, warehouse_holders
from relops_pipeline.defs.resources import WAREHOUSE_POOL
from relops_pipeline.lib.registry.rollout import adopt_state
from relops_pipeline.lib.registry.state import RegistryState, write_pointer
from relops_pipeline.lib.warehouse import open_warehouse
from relops_pipeline_tests.procs import popen, reap, scaled

RELOPS = str(Path(sys.executable).parent / "relops")


@dg.op(pool=WAREHOUSE_POOL)
def _hold():
    return None


@dg.job
def _holder_job():
    _hold()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _started_run_holding_the_warehouse(instance: dg.DagsterInstance, pid: int) -> dg.DagsterRun:
    """What a killed run leaves: STARTED, a pid that ran it, the pool's one slot claimed."""
    run = instance.create_run_for_job(_holder_job, tags={PID_TAG: str(pid)})
    instance.report_dagster_event(dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, job_name=run.job_name),
                                  run_id=run.run_id)
    instance.event_log_storage.set_concurrency_slots(WAREHOUSE_POOL, 1)
    claim = instance.event_log_storage.claim_concurrency_slot(WAREHOUSE_POOL, run.run_id, "_hold")
    assert claim.is_claimed
    return run


def test_a_run_whose_process_is_gone_is_released_and_a_live_one_is_not():
    with dg.instance_for_test() as instance:
        dead = _started_run_holding_the_warehouse(instance, _dead_pid())
        [found] = inspect_runs(instance)
        assert found.run_id == dead.run_id and not found.alive and found.holds_warehouse
        assert "is gone" in found.why and warehouse_holders(instance) == []
        assert [r.run_id for r in release_stuck(instance)] == [dead.run_id]
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
        assert instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL).claimed_slots == []
        assert inspect_runs(instance) == []

        live = _started_run_holding_the_warehouse(instance, os.getpid())
        assert release_stuck(instance) == []
        [holder] = warehouse_holders(instance)
        assert holder.run_id == live.run_id and holder.alive and holder.why == "running"


def test_a_step_left_in_the_queue_by_a_dead_run_is_released_before_the_slot_it_was_given_blocks_everyone():
    with dg.instance_for_test() as instance:
        holder = _started_run_holding_the_warehouse(instance, os.getpid())
        # A command killed while it waited: its step stays queued, its run ended (or never will).
        dead = instance.create_run_for_job(_holder_job)
        assert not instance.event_log_storage.claim_concurrency_slot(WAREHOUSE_POOL, dead.run_id, "_hold").is_claimed
        instance.report_run_failed(dead)
        [found] = [r for r in inspect_runs(instance) if r.run_id == dead.run_id]
        assert not found.alive and not found.holds_warehouse and "waits in the warehouse pool" in found.why

        # The holder ends: Dagster hands the slot to the dead step, which never claims it.
        instance.report_run_failed(holder)
        instance.event_log_storage.free_concurrency_slots_for_run(holder.run_id)
        after = instance.create_run_for_job(_holder_job, tags={PID_TAG: str(os.getpid())})
        instance.report_dagster_event(dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, job_name=after.job_name),
                                      run_id=after.run_id)
        assert not instance.event_log_storage.claim_concurrency_slot(WAREHOUSE_POOL, after.run_id, "_hold").is_assigned
        [found] = stuck(inspect_runs(instance))
        assert found.run_id == dead.run_id and found.holds_warehouse and "ended (FAILURE)" in found.why
        assert warehouse_holders(instance) == []  # nobody alive to name: the reason it must be released

        assert [r.run_id for r in release_stuck(instance)] == [dead.run_id]
        assert instance.event_log_storage.claim_concurrency_slot(WAREHOUSE_POOL, after.run_id, "_hold").is_claimed


def test_a_queued_step_of_a_run_without_a_record_is_released():
    # (Deleting a run frees its place itself; this is a pool row whose run the storage lost.)
    with dg.instance_for_test() as instance:
        _started_run_holding_the_warehouse(instance, os.getpid())
        instance.event_log_storage.claim_concurrency_slot(WAREHOUSE_POOL, "0f" * 16, "_hold")
        assert [r.why for r in release_stuck(instance)] == ["the run no longer exists but is still in the warehouse pool"]
        assert [p.run_id for p in instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL).pending_steps
                if p.assigned_timestamp is None] == []


def _waiting_run(instance: dg.DagsterInstance) -> dg.DagsterRun:
    """A run whose step waits for the warehouse slot a live run holds."""
    _started_run_holding_the_warehouse(instance, os.getpid())
    run = instance.create_run_for_job(_holder_job)
    assert not instance.event_log_storage.claim_concurrency_slot(WAREHOUSE_POOL, run.run_id, "_hold").is_claimed
    return run


def _watch(instance: dg.DagsterInstance, run: dg.DagsterRun, limit_s: float, monkeypatch) -> list[int]:
    exits: list[int] = []
    monkeypatch.setattr(os, "_exit", exits.append)
    watchdog = _Watchdog(instance, run.run_id, limit_s)
    watchdog.start()
    watchdog.join(timeout=scaled(20))
    watchdog.done.set()
    return exits


def _pending(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list:
    return [p for p in instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL).pending_steps
            if p.run_id == run.run_id]


def test_an_interrupt_while_waiting_for_a_slot_ends_the_command_and_withdraws_its_claim(monkeypatch):
    from dagster._utils import interrupts

    with dg.instance_for_test() as instance:
        run = _waiting_run(instance)
        monkeypatch.setitem(interrupts._received_interrupt, "received", True)
        assert _watch(instance, run, 300, monkeypatch) == [EXIT_INTERRUPTED]
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE and _pending(instance, run) == []


def test_a_wait_past_its_bound_ends_the_command_naming_the_holder(monkeypatch, capsys):
    with dg.instance_for_test() as instance:
        run = _waiting_run(instance)
        assert _watch(instance, run, 0.5, monkeypatch) == [EXIT_BUSY]
        assert "the warehouse is held by run" in capsys.readouterr().err and _pending(instance, run) == []


# ---------------------------------------------------------------------------------------------
# Through the CLI, with real processes and real kills.


def _cli(home, *args, env=None, timeout=120.0):
    try:
        proc = subprocess.run([RELOPS, "--home", str(home.root), *args], capture_output=True, text=True,
                              timeout=scaled(timeout), env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as exc:  # say what it was doing (e.g. waiting for the warehouse)
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
        raise AssertionError(f"relops {' '.join(args)} did not finish in {scaled(timeout):.0f} s; "
                             f"its stderr so far: {(err or '')[-2000:]!r}") from None
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def canary_home(home):
    with open_warehouse(home.warehouse_path) as con:
        state = RegistryState("doc-qa", seq=1, live="v2.3.0", canary="v2.4.0", canary_percent=50.0, stage="canary",
                              last_known_good="v2.1.0", updated_by="li.wei", reason="canary",
                              updated_at=dt.datetime(2026, 11, 20, 10, 0))
        state = adopt_state(con, state, actor="relops-tests", reason="starting point")
    write_pointer(home.registry_dir, state)
    return home


def _files_committed(instance: dg.DagsterInstance) -> int:
    runs = instance.get_runs(dg.RunsFilter(job_name="ingest_traces_job", statuses=[dg.DagsterRunStatus.STARTED]))
    return sum(1 for run in runs for e in instance.all_logs(run.run_id) if "]: read " in (e.user_message or ""))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_after_a_killed_ingestion_rollback_goes_through_and_doctor_repairs(canary_home, tmp_path):
    from relops_pipeline.demo.traces import generate_demo_traces

    home = canary_home
    generate_demo_traces(tmp_path / "traces", scale=0.3, days=range(0, 8), workflows=["doc-qa"])
    with dg.DagsterInstance.from_config(str(home.dagster_home)) as instance:  # its storage exists before the CLI runs
        ingest = popen([RELOPS, "--home", str(home.root), "ingest", str(tmp_path / "traces")],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            # Kill it once it has committed two files (its run's log says so per file).
            deadline = time.monotonic() + scaled(120)
            while time.monotonic() < deadline and ingest.poll() is None and _files_committed(instance) < 2:
                time.sleep(0.2)
            assert ingest.poll() is None, f"the ingestion ended before it could be killed: {ingest.stderr.read()}"
            os.killpg(ingest.pid, signal.SIGKILL)
        finally:
            reap(ingest)

    started = time.monotonic()
    code, out, err = _cli(home, "rollback", "doc-qa", "--reason", "after a killed ingestion", "--json",
                          env={"RELOPS_WAREHOUSE_WAIT_S": "30"})
    took = time.monotonic() - started
    assert code == 0, err
    assert json.loads(out)["live_after"] == "v2.3.0"
    assert "released stuck run" in err and "is gone" in err
    print(f"\nrollback after a SIGKILLed ingestion: {took:.1f} s")
    assert took < scaled(30)

    code, out, _ = _cli(home, "doctor", "--json")
    found = json.loads(out)
    assert code == 7 and found["stale_days"] and not found["pointers_behind"]
    code, out, _ = _cli(home, "doctor", "--fix", "--json", timeout=300)
    fixed = json.loads(out)
    assert code == 0 and fixed["healthy"] and fixed["stale_days"] == [] and fixed["fixed"]
    with open_warehouse(home.warehouse_path, read_only=True) as con:
        signals = con.execute("SELECT sum(spans) FROM daily_signals").fetchall()[0][0]
        spans = con.execute("SELECT count(*) FROM spans").fetchall()[0][0]
    assert signals == spans  # the repaired signals count every committed span


def _waiting_rollback(home) -> subprocess.Popen:
    """A `relops rollback` that has said it waits for the warehouse."""
    proc = popen([RELOPS, "--home", str(home.root), "rollback", "doc-qa", "--reason", "r"],
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                 env={**os.environ, "RELOPS_WAREHOUSE_WAIT_S": "600"})
    line = ""
    while proc.poll() is None and "waiting for the warehouse" not in line:
        line = proc.stderr.readline()
    assert "waiting for the warehouse" in line, proc.stderr.read()
    return proc


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_command_waiting_for_a_live_holder_is_bounded_and_stops_on_sigterm(canary_home):
    home = canary_home
    instance_env = {"DAGSTER_HOME": str(home.dagster_home)}
    with dg.DagsterInstance.from_config(str(home.dagster_home)) as instance:
        holder = _started_run_holding_the_warehouse(instance, os.getpid())  # this test process: alive
        code, _, err = _cli(home, "rollback", "doc-qa", "--reason", "r", env={"RELOPS_WAREHOUSE_WAIT_S": "2", **instance_env})
        assert code == 6
        assert f"the warehouse is held by run {holder.run_id[:8]} (_holder_job" in err and "relops doctor" in err

        waiting = _waiting_rollback(home)
        try:
            sent = time.monotonic()
            waiting.send_signal(signal.SIGTERM)
            waiting.wait(timeout=scaled(10))
            print(f"\nSIGTERM to a waiting rollback: ended in {time.monotonic() - sent:.2f} s")
            assert waiting.returncode == EXIT_INTERRUPTED and "interrupted" in waiting.stderr.read()
        finally:
            reap(waiting)
        # SIGKILL to a waiting rollback leaves its step queued in the pool: when the holder ends,
        # Dagster hands the slot to that step, and the next command must release it.
        killed = _waiting_rollback(home)
        try:
            queued = time.monotonic() + scaled(20)  # the message comes before the step is queued
            while time.monotonic() < queued and not [
                    p for p in instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL).pending_steps
                    if p.run_id != holder.run_id]:
                time.sleep(0.1)
            os.killpg(killed.pid, signal.SIGKILL)
        finally:
            reap(killed)
        # Nothing changed, and once the holder is gone the rollback goes through.
        instance.report_run_failed(instance.get_run_by_id(holder.run_id))
        instance.event_log_storage.free_concurrency_slots_for_run(holder.run_id)
        assert warehouse_holders(instance) == []
        assert [r.holds_warehouse for r in stuck(inspect_runs(instance))] == [True]  # the killed one, given the slot
    code, out, err = _cli(home, "rollback", "doc-qa", "--reason", "r", "--json")
    assert code == 0, err
    assert "released stuck run" in err and "is gone" in err


def test_a_duckdb_query_ended_by_the_interrupt_counts_as_an_interrupted_run():
    """SIGTERM or Ctrl-C landing while a step's DuckDB query runs ends the query with DuckDB's
    own error, `RuntimeError: Query interrupted` (DuckDB 2.0, when the signal handler raises
    KeyboardInterrupt as the query checks for signals): the run was interrupted (exit 130, and
    an ingestion's follow-ups pending), not failed. Another RuntimeError is a failure."""
    from relops_pipeline.cli.runs import DUCKDB_INTERRUPTED, was_interrupted

    @dg.op
    def interrupted_query():
        raise RuntimeError(DUCKDB_INTERRUPTED)  # what duckdb raises; a real signal's timing is the machine's

    @dg.op
    def failing():
        raise RuntimeError("something else")

    interrupted = dg.GraphDefinition("interrupted", node_defs=[interrupted_query]).to_job().execute_in_process(
        raise_on_error=False)
    failed = dg.GraphDefinition("failed", node_defs=[failing]).to_job().execute_in_process(raise_on_error=False)
    assert not interrupted.success and was_interrupted(interrupted)
    assert not failed.success and not was_interrupted(failed)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigterm_after_the_commit_reports_the_ingestion_and_the_next_one_heals_the_days(home, tmp_path):
    from relops_pipeline.demo.traces import generate_demo_traces

    generate_demo_traces(tmp_path / "traces", scale=0.2, days=range(0, 4), workflows=["doc-qa"])
    with dg.DagsterInstance.from_config(str(home.dagster_home)) as instance:
        ingest = popen([RELOPS, "--home", str(home.root), "ingest", str(tmp_path / "traces"), "--json"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + scaled(180)
            while time.monotonic() < deadline and ingest.poll() is None and not _followup_started(instance):
                time.sleep(0.2)
            assert ingest.poll() is None, "the command ended before its follow-ups started"
            ingest.send_signal(signal.SIGTERM)
            out, err = ingest.communicate(timeout=scaled(60))
        finally:
            reap(ingest)
    assert ingest.returncode == 0, out[-3000:] + err[-3000:]
    summary = json.loads(out)
    assert summary["followups"] == "pending (interrupted)" and summary["totals"]["accepted"] > 0

    code, out, _ = _cli(home, "doctor", "--json")
    assert code == 7 and json.loads(out)["stale_days"]
    # The next ingestion (here: the same files again, all duplicates) redoes what was left.
    code, out, err = _cli(home, "ingest", str(tmp_path / "traces"), "--json", timeout=300)
    again = json.loads(out)
    assert code == 0 and again["totals"]["accepted"] == 0 and again["healed_days"], err
    code, out, _ = _cli(home, "doctor", "--json")
    assert code == 0 and json.loads(out)["stale_days"] == []


def _followup_started(instance: dg.DagsterInstance) -> bool:
    runs = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    return any(r.tags.get("relops/trigger") == "ingest:cli" for r in runs)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_hanging_alert_sink_never_holds_up_a_rollback(canary_home):
    """Alert delivery is outside the warehouse pool: with a delivery run stuck on a sink that
    accepts connections and never answers, a rollback still flips the pointer in seconds."""
    import socket
    import threading

    from relops_pipeline.lib.alerts.model import Alert
    from relops_pipeline.lib.alerts.service import raise_alert
    from relops_pipeline.registry import read_pointer

    home = canary_home
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: [held.append(server.accept()[0]) for _ in range(16)], daemon=True).start()
    port = server.getsockname()[1]
    wf_file = home.workflows_dir / "doc-qa.yaml"
    wf_file.write_text(wf_file.read_text().replace(
        "    - {type: file}                 # <home>/alerts/alerts.jsonl\n",
        f"    - {{type: webhook, url: 'http://127.0.0.1:{port}/hook', secret_env: HOOK_SECRET, timeout_s: 60}}\n"))
    env = {"HOOK_SECRET": "s"}
    with open_warehouse(home.warehouse_path) as con:
        for i in range(3):
            raise_alert(con, home, Alert(kind="test", severity="error", title=f"t{i}", workflow="doc-qa",
                                         dedup_key=f"test:{i}"))
    try:
        delivering = popen([RELOPS, "--home", str(home.root), "alerts", "deliver"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env={**os.environ, **env})
        try:
            deadline = time.monotonic() + scaled(60)
            while time.monotonic() < deadline and not held:
                time.sleep(0.1)
            assert held, "the delivery never reached the sink"
            started = time.monotonic()
            rollback = popen([RELOPS, "--home", str(home.root), "rollback", "doc-qa", "--reason", "r"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **env})
            try:
                while time.monotonic() - started < scaled(60) and read_pointer(home.registry_dir, "doc-qa").canary:
                    time.sleep(0.05)
                flipped = time.monotonic() - started
            finally:
                reap(rollback)
            assert delivering.poll() is None  # still stuck on the sink all along
        finally:
            reap(delivering)
    finally:
        server.close()
        for s in held:
            s.close()
    print(f"\nrollback with a delivery hanging on a sink: pointer flipped {flipped:.1f} s after the command started")
    assert read_pointer(home.registry_dir, "doc-qa").live == "v2.3.0"
    assert flipped < scaled(20)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_rollback_goes_in_between_the_chunks_of_a_large_ingestion(canary_home, tmp_path):
    """Ingestion takes the warehouse chunk by chunk and a rollback is first in the pool's queue:
    the pointer flips while the ingestion is still running, within seconds."""
    from relops_pipeline.demo.traces import generate_demo_traces
    from relops_pipeline.registry import read_pointer

    home = canary_home
    generate_demo_traces(tmp_path / "traces", scale=0.3, days=range(0, 14))
    with dg.DagsterInstance.from_config(str(home.dagster_home)) as instance:
        ingest = popen([RELOPS, "--home", str(home.root), "ingest", str(tmp_path / "traces")],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={**os.environ, "RELOPS_INGEST_CHUNK_MB": "1"})  # many small chunks
        try:
            deadline = time.monotonic() + scaled(120)
            while time.monotonic() < deadline and ingest.poll() is None and _files_committed(instance) < 2:
                time.sleep(0.2)
            assert ingest.poll() is None, "the ingestion ended before the rollback could start"
            started = time.monotonic()
            rollback = popen([RELOPS, "--home", str(home.root), "rollback", "doc-qa", "--reason", "r"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                while time.monotonic() - started < scaled(120) and read_pointer(home.registry_dir, "doc-qa").canary:
                    time.sleep(0.05)
                flipped = time.monotonic() - started
                ingesting = ingest.poll() is None
                rollback.wait(timeout=scaled(120))
            finally:
                reap(rollback)
            ingest.wait(timeout=scaled(300))
        finally:
            reap(ingest)
    print(f"\nrollback during a {_files_committed_total(tmp_path)}-file ingestion: pointer flipped after {flipped:.1f} s "
          f"({'the ingestion still running' if ingesting else 'after the ingestion'})")
    assert rollback.returncode == 0 and ingest.returncode == 0
    assert ingesting and flipped < scaled(10)


def _files_committed_total(folder: Path) -> int:
    return sum(1 for _ in folder.rglob("*.jsonl"))
