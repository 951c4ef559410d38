"""Shared test fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from relops_pipeline.lib import warehouse
from relops_pipeline.lib.schema import create_stage_tables_sql

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def stage_con():
    """A DuckDB connection with empty stage tables, for testing one reader alone."""
    con = duckdb.connect()
    con.execute(create_stage_tables_sql())
    yield con
    con.close()


@pytest.fixture
def wh_con():
    """An in-memory DuckDB connection with every warehouse migration applied (empty tables)."""
    con = duckdb.connect()
    warehouse.migrate(con)
    yield con
    con.close()


def run_cli(capsys, home: Path, *argv: str) -> tuple[int, str, str]:
    """`relops --home <home> *argv` in-process: (exit code, stdout, stderr)."""
    from relops_pipeline.cli import main

    code = main(["--home", str(home), *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def make_cli_home(tmp_path, monkeypatch):
    """A factory for a `relops init` home under tmp_path with only the support-triage workflow
    (`workflow_yaml`) and its suite v1 (`suite_v1_yaml`): the example home's demo suites and
    releases are removed. RELOPS_HOME and DAGSTER_HOME point at it."""
    from relops_pipeline.cli import main

    def make(workflow_yaml: str, suite_v1_yaml: str) -> Path:
        h = tmp_path / "home"
        monkeypatch.setenv("RELOPS_HOME", str(h))
        monkeypatch.setenv("DAGSTER_HOME", str(h / "dagster"))
        assert main(["--home", str(h), "init"]) == 0
        for d in ("suites", "releases"):
            shutil.rmtree(h / d, ignore_errors=True)
        (h / "workflows" / "support-triage.yaml").write_text(workflow_yaml)
        (h / "suites" / "support-triage").mkdir(parents=True)
        (h / "suites" / "support-triage" / "v1.yaml").write_text(suite_v1_yaml)
        return h

    return make
