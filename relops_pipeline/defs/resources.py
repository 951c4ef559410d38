"""Resources shared by every domain: the data home, and the warehouse built on it.

Everything in `defs/` reaches the home and the warehouse through these two resources, never
through the environment: the Definitions configure them once (`relops_resources`), tests pass
their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
from pydantic import Field

from relops_pipeline.lib.home import Home
from relops_pipeline.lib.settings import IngestSettings, load_settings
from relops_pipeline.lib.warehouse import connect, is_lock_error, open_warehouse, release_memory

# Every asset or op that opens the warehouse runs in this pool. The home's dagster.yaml sets
# its limit to 1: DuckDB allows one read-write process per file, so runs queue for it.
WAREHOUSE_POOL = "relops_warehouse"


class WarehouseBusy(Exception):
    """Another process holds the warehouse (DuckDB allows one writer and no reader beside it)."""


class RelopsHomeResource(dg.ConfigurableResource):
    """The data home: configuration, landing folder, reports, registry, warehouse file."""

    root: str = Field(description="Path of the relops home folder.")

    @property
    def home(self) -> Home:
        return Home.resolve(self.root)

    def settings(self) -> IngestSettings:
        return load_settings(self.home.settings_file)


class WarehouseResource(dg.ConfigurableResource):
    """The home's DuckDB warehouse, migrated to the latest schema on first use."""

    home: RelopsHomeResource
    database: str = Field(default="", description="Path of the DuckDB file; empty: the home's warehouse.")
    lock_timeout_s: float = Field(default=300.0, description="How long to wait for another process's lock.")

    @property
    def path(self) -> Path:
        return Path(self.database) if self.database else self.home.home.warehouse_path

    @contextmanager
    def get_connection(self, days: Iterable[date] | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection (waits up to lock_timeout_s for another writer), whose DuckDB
        memory is bounded by the home's `ingest.memory_limit` (relops.yaml, default 1GB): past
        it, DuckDB spills to disk beside the warehouse. Without it, DuckDB keeps up to 80% of
        the machine's memory cached from what a run scans — several GB after the follow-ups
        of a 5M-span ingestion. On closing, the step's freed memory goes back to the system
        (release_memory), so the next step starts from what is really in use.

        When the home keeps its traces in the trace store (relops.yaml `trace_store:`), `spans`,
        `genai_events` and `trace_rejects` read the store (lib/tracestore/linked.py); with
        `days`, `spans` reads only those days' partitions."""
        settings = self.home.settings()
        try:
            with open_warehouse(self.path, timeout_s=self.lock_timeout_s) as con:
                con.execute(f"SET memory_limit = '{settings.memory_limit}'")
                if settings.trace_store is not None:
                    from relops_pipeline.lib.tracestore.linked import link_trace_store

                    link_trace_store(con, settings.trace_store, writable=True, days=days)
                yield con
        finally:
            release_memory()

    @contextmanager
    def read_only(self, *, requires: str | None = None, timeout_s: float = 5.0,
                  traces: bool = False) -> Iterator[duckdb.DuckDBPyConnection | None]:
        """A read-only connection for sensors, or None when there is nothing to read yet (no
        warehouse file, or no table `requires`). Raises WarehouseBusy while a run holds the
        file: a sensor skips this tick and asks again on the next. `traces`: the connection reads
        spans, GenAI events and rejects (from the trace store when the home keeps them there;
        linking it opens the Delta tables, which sensors that read none of them skip)."""
        if not self.path.exists():
            yield None
            return
        try:
            con = connect(self.path, read_only=True, timeout_s=timeout_s)
        except Exception as exc:
            if is_lock_error(exc):
                raise WarehouseBusy(f"the warehouse {self.path} is busy") from exc
            raise
        try:
            if requires is not None:
                tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
                if requires not in tables:
                    yield None
                    return
            store = self.home.settings().trace_store if traces else None
            if store is not None:
                from relops_pipeline.lib.tracestore.linked import link_trace_store

                link_trace_store(con, store, writable=False)
            yield con
        finally:
            con.close()


def relops_resources(root: str | Path | dg.EnvVar) -> dict[str, dg.ConfigurableResource]:
    """The resources of the Definitions for the home at `root` (tests pass a temporary folder)."""
    home = RelopsHomeResource(root=root if isinstance(root, dg.EnvVar) else str(root))
    return {"home": home, "warehouse": WarehouseResource(home=home)}
