"""End to end through the `relops` command: ingest every trace fixture folder through Dagster
on a real home instance, with counts that add up, idempotency and clear errors."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from relops_pipeline.cli import EXIT_BAD_INPUT, main
from relops_pipeline_tests import procs
from relops_pipeline_tests.conftest import FIXTURES

TRACE_FOLDERS = ["otel_genai_openai_v2", "openinference", "langfuse", "langsmith", "deepeval"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    # The CLI points DAGSTER_HOME / RELOPS_HOME at the home; keep that inside this test.
    monkeypatch.setenv("RELOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster"))
    return tmp_path / "home"


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ingest_every_fixture_folder_counts_add_up_and_second_ingest_adds_nothing(home, capsys):
    paths = [str(FIXTURES / f) for f in TRACE_FOLDERS]
    code, out, err = run_cli(capsys, "--home", str(home), "ingest", *paths, "--json")
    assert code == 0, err
    doc = json.loads(out)
    t = doc["totals"]
    assert t["read"] == t["accepted"] + t["rejected"] + t["duplicates"]
    assert t["accepted"] > 300
    for f in doc["files"]:
        assert f["read"] == f["accepted"] + f["rejected"] + f["duplicates"], f
        assert set(f) >= {"path", "format", "read", "accepted", "rejected", "duplicates"}
    formats = {f["format"] for f in doc["files"]}
    assert {"otlp", "langfuse", "langsmith", "deepeval", "otel-js"} <= formats
    assert doc["run_id"] and doc["signals_run_ids"]
    # One signals run per range of touched days, ranges up to BRIDGE_MAX_GAP_DAYS apart sharing a
    # run (nothing lies between them: the home had no spans before this ingestion).
    from relops_pipeline.defs.followups import BRIDGE_MAX_GAP_DAYS
    from relops_pipeline.lib.days import bridged

    touched = [(dt.date.fromisoformat(a), dt.date.fromisoformat(b)) for a, b in doc["day_ranges"]]
    runs = bridged(touched, [], BRIDGE_MAX_GAP_DAYS)
    assert len(touched) > len(runs) > 1
    assert len(doc["signals_run_ids"]) == len(runs)

    code, out, err = run_cli(capsys, "--home", str(home), "ingest", *paths, "--json")
    assert code == 0, out + err
    again = json.loads(out)
    assert again["totals"]["accepted"] == 0 and again["totals"]["rejected"] == 0
    assert again["totals"]["duplicates"] == t["read"]  # spans, events and quarantined records alike

    code, out, _ = run_cli(capsys, "--home", str(home), "status", "--json")
    status = json.loads(out)
    assert status["spans"] == t["accepted"] - _events(doc)
    assert status["ingest"]["read"] == 2 * t["read"]
    # Both runs are on the home's Dagster instance, as the UI will show them.
    from dagster import DagsterInstance

    instance = DagsterInstance.get()
    assert instance.get_run_by_id(doc["run_id"]).job_name == "ingest_traces_job"
    signals_run = instance.get_run_by_id(doc["signals_run_ids"][0])
    import dagster as dg

    from relops_pipeline.defs.followups import SIGNALS_ASSETS

    # The follow-up the planner asked for: the signals assets over the touched days, in one run.
    assert signals_run.asset_selection == {dg.AssetKey(a) for a in SIGNALS_ASSETS}
    assert signals_run.tags["relops/trigger"] == "ingest:cli"
    from relops_pipeline.defs.followups import RANGE_END_TAG, RANGE_START_TAG

    ranges = [instance.get_run_by_id(r).tags for r in doc["signals_run_ids"]]
    assert sorted((t[RANGE_START_TAG], t[RANGE_END_TAG]) for t in ranges) == [(a.isoformat(), b.isoformat()) for a, b in runs]


def _events(doc) -> int:
    return sum(f["events_accepted"] for f in doc["files"])


def test_human_output_names_files_and_totals(home, capsys):
    path = FIXTURES / "otel_genai_openai_v2" / "ALL.latest_experimental.traces.jsonl"
    code, out, _ = run_cli(capsys, "--home", str(home), "ingest", str(path))
    assert code == 0
    assert "ALL.latest_experimental.traces.jsonl [otlp]: read 72 = accepted 72 + rejected 0 + duplicates 0" in out
    assert "total: 1 files, read 72" in out


def test_bad_paths_fail_with_one_line_reasons_and_ingest_nothing(home, capsys, tmp_path):
    unknown = tmp_path / "notes.bin"
    unknown.write_bytes(b"\x00\x01 not a trace")
    good = FIXTURES / "langsmith"
    code, out, err = run_cli(capsys, "--home", str(home), "ingest", str(good), str(tmp_path / "missing.jsonl"), str(unknown))
    assert code == EXIT_BAD_INPUT
    lines = [ln for ln in err.splitlines() if ln]
    assert len(lines) == 2
    assert "missing.jsonl" in lines[0] and "no such file" in lines[0]
    assert "notes.bin" in lines[1] and "unknown format" in lines[1]
    assert not (home / "warehouse" / "relops.duckdb").exists() or _spans(home) == 0

    code, out, _ = run_cli(capsys, "--home", str(home), "ingest", str(good), "--format", "nope", "--json")
    assert code == EXIT_BAD_INPUT and "unknown format 'nope'" in json.loads(out)["error"]


def _spans(home: Path) -> int:
    import duckdb

    con = duckdb.connect(str(home / "warehouse" / "relops.duckdb"), read_only=True)
    try:
        return con.execute("SELECT count(*) FROM spans").fetchone()[0]
    finally:
        con.close()


def test_malformed_lines_are_rejects_not_crashes_and_listed(home, capsys, tmp_path):
    src = FIXTURES / "otel_genai_openai_v2" / "ALL.latest_experimental.traces.jsonl"
    lines = src.read_text().splitlines()
    bad = tmp_path / "landing.jsonl"
    bad.write_text("\n".join(lines[:3] + ['{"resourceSpans": [', "not json at all", '{"hello": "world"}'] + lines[3:5]) + "\n")
    code, out, _ = run_cli(capsys, "--home", str(home), "ingest", str(bad), "--json")
    assert code == 0
    f = json.loads(out)["files"][0]
    assert f["rejected"] == 3
    assert f["read"] == f["accepted"] + 3
    code, out, _ = run_cli(capsys, "--home", str(home), "rejects", "--json")
    rejects = json.loads(out)
    assert rejects["total"] == 3
    assert sorted(r["source_line"] for r in rejects["rejects"]) == [4, 5, 6]
    assert all(r["reason"] for r in rejects["rejects"])


def test_two_concurrent_ingestion_processes_both_succeed(home, tmp_path, spawn):
    env = {**os.environ, "RELOPS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    a = FIXTURES / "otel_genai_openai_v2" / "ALL.legacy_semconv.traces.jsonl"
    b = FIXTURES / "otel_genai_openai_v2" / "ALL.latest_experimental.traces.jsonl"
    procs.run([sys.executable, "-m", "relops_pipeline.cli", "init"], env=env, check=True, capture_output=True,
              timeout=procs.scaled(120))
    # spawn: own process groups, reaped with everything they started when the test ends, pass or fail.
    children = [
        spawn([sys.executable, "-m", "relops_pipeline.cli", "ingest", str(p), "--json"], env=env,
              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for p in (a, b)
    ]
    # Both pipes drained at once: a child blocked on a full stderr pipe while holding the
    # warehouse would stall the other one until the timeout.
    with ThreadPoolExecutor(len(children)) as pool:
        outs = list(pool.map(lambda p: p.communicate(timeout=procs.scaled(300)), children))
    for p, (_out, err) in zip(children, outs, strict=False):
        assert p.returncode == 0, err[-2000:]
    totals = [json.loads(out)["totals"] for out, _ in outs]
    assert all(t["read"] == t["accepted"] + t["rejected"] + t["duplicates"] for t in totals)
    assert _spans(home) == sum(t["accepted"] for t in totals)


def test_follow_ups_wait_for_an_ingestion_in_progress_but_only_so_long(home, spawn, monkeypatch):
    """An ingestion's follow-ups wait for the home's other ingestions in progress (to refresh
    their days in the same pass) until they end — and no longer than the bound when one does
    not; a dead one is not waited for."""
    import subprocess

    import dagster as dg

    from relops_pipeline.cli.common import dagster_instance
    from relops_pipeline.cli.ingest import followups_turn
    from relops_pipeline.defs import recovery
    from relops_pipeline.defs.recovery import PID_TAG
    from relops_pipeline.lib.home import Home

    @dg.op
    def _read():
        return None

    @dg.job(name="ingest_traces_to_store_job")
    def _ingestion():
        _read()

    h = Home.resolve(home)
    h.init()
    instance = dagster_instance(h)

    def ingestion_in_progress(pid: int) -> str:
        run = instance.create_run_for_job(_ingestion, tags={PID_TAG: str(pid)})
        instance.report_dagster_event(dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, job_name=run.job_name),
                                      run_id=run.run_id)
        return run.run_id

    # One ingestion ends once the follow-ups have seen it in progress (at their first look: not
    # after a sleep, which a loaded machine may outlast before they look), the other never.
    short = spawn([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    ending = ingestion_in_progress(short.pid)
    long = spawn([sys.executable, "-c", "import time; time.sleep(600)"])
    ingestion_in_progress(long.pid)
    inspect_runs, looks = recovery.inspect_runs, []

    def ends_after_the_first_look(*args, **kwargs):
        runs = inspect_runs(*args, **kwargs)
        looks.append(None)
        if len(looks) == 1:
            short.stdin.close()
        return runs

    monkeypatch.setattr(recovery, "inspect_runs", ends_after_the_first_look)
    # Waits for the one that ends; gives up on the other at the bound, which then still runs.
    with followups_turn(h, wait_s=procs.scaled(5), own_run="mine") as waited:
        assert waited == [ending]  # it exited (unreaped, a zombie: not alive) within the bound
        short.wait(timeout=5)
        assert long.poll() is None
    monkeypatch.undo()
    # No ingestion alive but the one that never ends, and a bound of 0: no wait at all.
    with followups_turn(h, wait_s=0, own_run="mine") as waited:
        assert waited == []
    long.kill()
    long.wait(timeout=5)
    with followups_turn(h, wait_s=procs.scaled(600), own_run="mine") as waited:
        assert waited == []  # the dead one is not waited for (else this would take 600 s)


def test_init_starts_empty_and_example_copies_the_demos_workflows(tmp_path, capsys):
    from relops_pipeline_tests.conftest import run_cli

    home = tmp_path / "real"
    code, out, _ = run_cli(capsys, home, "init")
    assert code == 0 and "no workflows yet: add one with relops workflow add NAME" in out
    assert (home / "relops.yaml").is_file() and (home / "dagster" / "dagster.yaml").is_file()
    assert [p for p in home.rglob("*.yaml") if p.parent.name != "dagster"] == [home / "relops.yaml"]
    assert not [p for d in ("workflows", "releases", "suites") for p in (home / d).rglob("*")]
    code, out, _ = run_cli(capsys, home, "init", "--example")
    assert code == 0 and (home / "workflows" / "doc-qa.yaml").is_file()
    assert sorted(p.name for p in (home / "releases" / "doc-qa").glob("*.yaml"))[0] == "v2.0.0.yaml"
    assert "no workflows yet" not in out
