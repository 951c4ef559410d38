"""The warehouse's trace tables kept in the trace store.

When relops.yaml has a `trace_store:` section, ingestion appends spans, GenAI events and rejects
to Delta tables (lib/ingest.ingest_paths_to_store) instead of the warehouse, and every warehouse
connection of the home reads them through temp views named like the warehouse tables (`spans`,
`genai_events`, `trace_rejects`). A temp view shadows the table of the same name, so every query
in relops reads the store unchanged, and a stray write to `spans` fails (a view) instead of
landing where nothing reads it. The control state (ingest_batches, releases, gates, events,
registry) stays in the warehouse.

Upgrading a home: the first read-write connection after `trace_store:` is set moves the rows the
warehouse tables hold into the store (TraceStore.migrate_from_warehouse: one idempotent commit per
day, every identity checked present), then deletes them from the warehouse. A read-only
connection that finds rows not yet moved reads the warehouse as before, so readers never see
less than there is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import duckdb

from relops_pipeline.lib.settings import TraceStoreSettings
from relops_pipeline.lib.tracestore.schema import GENAI_EVENTS, SPANS, TRACE_REJECTS, TableSpec

if TYPE_CHECKING:  # store.py imports deltalake: only once a home uses the store
    from relops_pipeline.lib.tracestore.store import MigrationResult, TraceStore

LINKED_TABLES: tuple[TableSpec, ...] = (SPANS, GENAI_EVENTS, TRACE_REJECTS)


@dataclass(frozen=True)
class TraceTables:
    """The home's three trace tables in the store at `settings.uri` (`<uri>/spans`, ...)."""

    settings: TraceStoreSettings

    def store(self, spec: TableSpec) -> TraceStore:
        from relops_pipeline.lib.tracestore.store import TraceStore

        return TraceStore(self.settings.table_uri(spec.name), self.settings.storage_options, spec=spec)

    def warehouse_rows(self, con: duckdb.DuckDBPyConnection) -> dict[str, int]:
        """Rows each warehouse trace table still holds (the tables, not the views over the store)."""
        db = con.execute("SELECT current_database()").fetchall()[0][0]
        have = {r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main'", [db]).fetchall()}
        return {spec.name: int(con.execute(f'SELECT count(*) FROM "{db}".main.{spec.name}').fetchall()[0][0])
                for spec in LINKED_TABLES if spec.name in have}

    def move_from_warehouse(self, con: duckdb.DuckDBPyConnection) -> dict[str, MigrationResult]:
        """Move every row of the warehouse trace tables into the store, checked, then delete them
        from the warehouse. Safe to interrupt: the copy resumes (one idempotent commit per day)
        and the warehouse rows go only once the store holds every one of them."""
        db = con.execute("SELECT current_database()").fetchall()[0][0]
        moved = {}
        for spec in LINKED_TABLES:
            table = f'"{db}".main.{spec.name}'
            if not int(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]):
                continue
            moved[spec.name] = self.store(spec).migrate_from_warehouse(con, table)
            con.execute(f"DELETE FROM {table}")
        return moved

    def attach(self, con: duckdb.DuckDBPyConnection, days: Iterable[date | str] | None = None) -> None:
        """Create the views `spans`, `genai_events` and `trace_rejects` over the store on `con`
        (each as of now); with `days`, `spans` reads only those days' partitions."""
        for spec in LINKED_TABLES:
            self.store(spec).register(con, view_name=spec.name, days=days if spec is SPANS else None)


def link_trace_store(con: duckdb.DuckDBPyConnection, settings: TraceStoreSettings | None, *, writable: bool,
                     days: Iterable[date | str] | None = None) -> bool:
    """Make `con` read the home's traces from the store when `settings` names one (else nothing):
    rows still in the warehouse are moved first on a writable connection; a read-only one that
    finds some keeps reading the warehouse. Returns whether the store is linked."""
    if settings is None:
        return False
    tables = TraceTables(settings)
    if any(tables.warehouse_rows(con).values()):
        if not writable:
            return False
        tables.move_from_warehouse(con)
    tables.attach(con, days)
    return True
