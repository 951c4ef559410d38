"""Shared test fixtures."""

from __future__ import annotations

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
