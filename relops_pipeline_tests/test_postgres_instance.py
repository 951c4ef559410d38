"""The production instance config (docs/dagster.postgres.yaml) on a real PostgreSQL
server: the set-up starts a throwaway server on 127.0.0.1 (the distribution's binaries), the
`relops` command ingests a slice of the demo world through a home whose dagster.yaml is that
file verbatim, and the runs, materializations and the warehouse pool are read back from Postgres.

Without PostgreSQL's server binaries (Debian: apt-get install postgresql; `make test` installs
them through scripts/ensure-postgres.sh) the test fails with that message.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from relops_pipeline.lib.home import Home
from relops_pipeline_tests.pg import PostgresServer, find_server_bin
from relops_pipeline_tests.procs import run, scaled

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_YAML = REPO / "docs" / "dagster.postgres.yaml"
DB = "dagster"
POOL = "relops_warehouse"

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # a PostgreSQL server and a CLI run


def _missing(what: str) -> None:
    pytest.fail(f"{what}: `make test` installs it (scripts/ensure-postgres.sh)", pytrace=False)


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    """A running PostgreSQL server with an empty database `dagster`; stopped after the module."""
    bin_dir = find_server_bin()
    if bin_dir is None:
        _missing("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in /usr/lib/postgresql/*/bin or on PATH")
    try:
        import dagster_postgres  # noqa: F401
        import psycopg2  # noqa: F401
    except ImportError as exc:
        _missing(f"dagster-postgres is not installed ({exc})")
    server = PostgresServer(tmp_path_factory.mktemp("postgres"), bin_dir)
    try:
        server.start()
        server.create_database(DB)
        yield server
    finally:
        server.stop()


@pytest.mark.timeout(180)
def test_cli_ingest_runs_on_a_postgres_backed_instance(pg, tmp_path, monkeypatch):
    from relops_pipeline.demo.traces import generate_demo_traces

    home = Home.resolve(tmp_path / "home")
    home.init(example=True)
    # The production path: the example file, unchanged, is the home's instance config.
    shutil.copyfile(EXAMPLE_YAML, home.dagster_home / "dagster.yaml")
    traces = generate_demo_traces(tmp_path / "traces", scale=0.1, days=range(0, 3))
    expected = traces.expected_ingest()
    assert expected["accepted_spans"] > 500  # a real slice, not an empty one

    env = {**os.environ, **pg.dagster_env(DB), "RELOPS_HOME": str(home.root)}
    started = time.monotonic()
    proc = run(  # its own process group, reaped however it ends
        [str(Path(sys.executable).parent / "relops"), "ingest", "--home", str(home.root), str(tmp_path / "traces"), "--json"],
        env=env, capture_output=True, text=True, timeout=scaled(150), cwd=tmp_path,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, f"relops ingest exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n{pg.log_tail()}"
    summary = json.loads(proc.stdout)
    assert summary["totals"]["accepted"] == expected["accepted_spans"]
    assert summary["totals"]["rejected"] == expected["rejected_lines"]
    assert summary["day_ranges"] == [["2026-09-28", "2026-09-30"]]
    run_ids = {summary["run_id"], *summary["signals_run_ids"], *summary["drift_run_ids"]}
    assert len(run_ids) == 3
    print(f"\nrelops ingest on the Postgres instance: {elapsed:.1f} s ({expected['accepted_spans']} spans, 3 runs)")

    from relops_pipeline.lib.warehouse import connect

    wh = connect(home.warehouse_path, read_only=True)
    try:
        assert wh.execute("SELECT count(*) FROM spans").fetchone()[0] == expected["accepted_spans"]
    finally:
        wh.close()
    # Nothing went to the default SQLite storage beside the config.
    assert not list(home.dagster_home.rglob("*.db")), list(home.dagster_home.rglob("*.db"))

    # The instance, opened from the same file, reads it all back from Postgres.
    for k, v in pg.dagster_env(DB).items():
        monkeypatch.setenv(k, v)
    import dagster as dg
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    with dg.DagsterInstance.from_config(str(home.dagster_home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert instance.run_monitoring_enabled
        runs = {r.run_id: r for r in instance.get_runs()}
        assert set(runs) == run_ids
        assert runs[summary["run_id"]].job_name == "ingest_traces_job"
        # The follow-ups the planner asked for, materialized as asset selections.
        assert runs[summary["signals_run_ids"][0]].asset_selection == {
            dg.AssetKey(k) for k in ("raw_traces", "daily_signals", "trace_features", "signal_rule_alerts")}
        assert runs[summary["drift_run_ids"][0]].asset_selection == {dg.AssetKey("rolling_drift")}
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs.values())
        days = {"2026-09-28", "2026-09-29", "2026-09-30"}
        for key in ("raw_traces", "daily_signals", "trace_features"):
            assert instance.get_materialized_partitions(dg.AssetKey(key)) == days, key
        mats = instance.fetch_materializations(dg.AssetKey("raw_traces"), limit=10).records
        # Each day twice: reported by the ingestion (spans it added), then validated by the signals run.
        reported = [m for m in mats if m.run_id == summary["run_id"]]
        validated = [m for m in mats if m.run_id == summary["signals_run_ids"][0]]
        assert sorted(m.partition_key for m in reported) == sorted(m.partition_key for m in validated) == sorted(days)
        assert sum(m.asset_materialization.metadata["ingested_spans"].value for m in reported) == expected["accepted_spans"]
        assert all(m.asset_materialization.metadata["spans"].value > 0 for m in validated)
        # The warehouse pool came from `concurrency: pools: default_limit: 1`, stored in Postgres.
        info = instance.event_log_storage.get_concurrency_info(POOL)
        assert info.slot_count == 1 and info.active_slot_count == 0

    # And straight from the tables, as a platform team would look.
    con = pg.connect(DB)
    try:
        cur = con.cursor()
        cur.execute("SELECT run_id, status FROM runs")
        assert dict(cur.fetchall()) == {rid: "SUCCESS" for rid in run_ids}
        cur.execute("SELECT asset_key, count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
                    "AND run_id = ANY(%s) GROUP BY 1", [sorted(run_ids)])
        counts = dict(cur.fetchall())
        assert counts['["raw_traces"]'] == 6 and counts['["daily_signals"]'] == 3 and counts['["trace_features"]'] == 3
        cur.execute("SELECT concurrency_key, \"limit\" FROM concurrency_limits")
        assert cur.fetchall() == [(POOL, 1)]
    finally:
        con.close()
