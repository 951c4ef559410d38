"""Resources shared by every domain: the data home and the warehouse."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource
from pydantic import Field

from relops_pipeline.lib.home import Home
from relops_pipeline.lib.settings import IngestSettings, load_settings
from relops_pipeline.lib.warehouse import open_warehouse

# Every asset or op that opens the warehouse runs in this pool. The home's dagster.yaml sets
# its limit to 1: DuckDB allows one read-write process per file, so runs queue for it.
WAREHOUSE_POOL = "relops_warehouse"


class RelopsHomeResource(dg.ConfigurableResource):
    """The data home (RELOPS_HOME): configuration, landing folder, reports, registry."""

    root: str = Field(description="Path of the relops home folder.")

    @property
    def home(self) -> Home:
        return Home.resolve(self.root)

    def settings(self) -> IngestSettings:
        return load_settings(self.home.settings_file)


class WarehouseResource(DuckDBResource):
    """The DuckDB warehouse file, migrated to the latest schema on first use.

    `database` empty means `<RELOPS_HOME>/warehouse/relops.duckdb`.
    """

    database: str = Field(default="", description="Path of the DuckDB file; empty: the home's warehouse.")
    lock_timeout_s: float = Field(default=300.0, description="How long to wait for another process's lock.")

    @property
    def path(self) -> str:
        return self.database or str(Home.resolve().warehouse_path)

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with open_warehouse(self.path, timeout_s=self.lock_timeout_s) as con:
            yield con
