"""Ingestion: trace files from the landing folder (or the CLI) into the warehouse.

The files are ingested chunk by chunk (CHUNK_MB each), one step per chunk: each step takes the
warehouse pool's slot, so a waiting rollback (first in the pool's queue) goes in between two
chunks instead of behind a whole large ingestion.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg

from relops_pipeline.defs.followups import INGESTED_METADATA_KEY
from relops_pipeline.defs.resources import WAREHOUSE_POOL, RelopsHomeResource, WarehouseResource
from relops_pipeline.lib.days import day_ranges
from relops_pipeline.lib.ingest import FileResult, chunk_files, expand_paths, ingest_paths, spans_by_day, touched_days
from relops_pipeline.lib.markdown import md_table
from relops_pipeline.lib.settings import IngestSettings

CHUNK_MB = 32.0


class IngestConfig(dg.Config):
    paths: list[str]
    format: str | None = None
    chunk_mb: float = CHUNK_MB


@dg.op(out={"chunks": dg.DynamicOut(dict), "expanded": dg.Out(dict)}, tags={"relops/domain": "ingest"})
def plan_ingest_chunks(context: dg.OpExecutionContext, config: IngestConfig):
    """The files under the given paths, in chunks of about `chunk_mb` (folders walked; what is
    skipped or missing is reported by the last step)."""
    files, skipped, errors = expand_paths(config.paths)
    chunks = chunk_files(files, int(config.chunk_mb * 1024 * 1024)) or [[]]
    context.log.info(f"{len(files)} files in {len(chunks)} chunk(s) of up to {config.chunk_mb:g} MiB")
    for i, chunk in enumerate(chunks):
        yield dg.DynamicOutput({"paths": [str(f) for f in chunk], "format": config.format}, mapping_key=f"chunk_{i}", output_name="chunks")
    yield dg.Output({"skipped": skipped, "errors": errors}, output_name="expanded")


def _progress_logger(context: dg.OpExecutionContext, chunk: dict) -> Callable[[FileResult], None]:
    from relops_pipeline.lib.progress import Throttle

    shown, done = Throttle(), {"files": 0, "read": 0}

    def progress(r: FileResult) -> None:
        context.log.info(
            f"{r.path} [{r.format}]: read {r.read} = accepted {r.accepted} + rejected {r.rejected}"
            f" + duplicates {r.duplicates} (unknown release: {r.unknown_release}; kept with an anomaly: {r.anomalies})"
        )
        done["files"] += 1
        done["read"] += r.read
        # Chunks are steps of their own: name the chunk, or its counts read as going backwards.
        shown.maybe(f"{context.get_mapping_key() or 'chunk'}: ingested {done['files']} of {len(chunk['paths'])} files, "
                    f"{done['read']:,} records ...")

    return progress


@dg.op(pool=WAREHOUSE_POOL, tags={"relops/domain": "ingest"})
def ingest_chunk(context: dg.OpExecutionContext, chunk: dict, home: RelopsHomeResource, warehouse: WarehouseResource) -> dict:
    """Ingest one chunk of trace files atomically, one transaction per file; every record
    accepted, rejected with a reason, or counted as a duplicate."""
    settings = home.settings()
    if settings.trace_store is not None:
        raise dg.Failure("this home keeps its traces in the trace store (relops.yaml trace_store:): "
                         "ingest with ingest_traces_to_store_job (relops ingest and the landing sensor choose it)")
    progress = _progress_logger(context, chunk)

    # The warehouse holds traces again: a later switch to the store must move them first (removed
    # before, in case of a crash, and again while holding the warehouse, in case a store ingestion
    # wrote it in between).
    _moved_marker(warehouse).unlink(missing_ok=True)
    with warehouse.get_connection() as con:
        _moved_marker(warehouse).unlink(missing_ok=True)
        summary = ingest_paths(
            con,
            chunk["paths"],
            settings=settings,
            fmt=chunk["format"],
            landing_dir=home.home.landing_dir,
            run_id=context.run.run_id,
            progress=progress,
        )
        batch_ids = [f.batch_id for f in summary.files if f.batch_id]
        days = touched_days(con, batch_ids)
        per_day = spans_by_day(con, batch_ids, days)
    return {**summary.as_json(), "spans_by_day": {d.isoformat(): n for d, n in per_day.items()}}


def _moved_marker(warehouse: WarehouseResource) -> Path:
    """Beside the warehouse: its traces are in the store named inside (written once they are)."""
    return warehouse.path.parent / ".traces-moved-to-store"


def _move_warehouse_traces_first(context: dg.OpExecutionContext, warehouse: WarehouseResource, uri: str) -> None:
    """Upgrading a home (trace_store: set where the warehouse holds traces): its traces move into
    the store before anything is appended, so a span the warehouse already held counts as a
    duplicate, not as accepted. Later ingestions find the marker and never touch the warehouse
    here (its lock would serialise them)."""
    marker = _moved_marker(warehouse)
    if marker.is_file() and marker.read_text() == uri:
        return
    with warehouse.get_connection(days=[]) as con:
        # A read-write connection of a store home has moved the warehouse's traces (lib/tracestore/
        # linked.py); the marker is written while this one holds the warehouse, so a warehouse
        # ingestion (which removes it) cannot come in between.
        if "spans" in {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE temporary").fetchall()}:
            marker.write_text(uri)
            context.log.info(f"the warehouse's traces are in the trace store at {uri}")


@dg.op(tags={"relops/domain": "ingest"})
def ingest_chunk_to_store(context: dg.OpExecutionContext, chunk: dict, home: RelopsHomeResource,
                          warehouse: WarehouseResource) -> dict:
    """Ingest one chunk of trace files into the trace store (relops.yaml `trace_store:`): read
    and counted exactly as into the warehouse, appended as one idempotent commit per file and
    table. No warehouse pool: several ingestions append at once; their batches are recorded in
    the warehouse by the next step."""
    from relops_pipeline.lib.ingest import ingest_paths_to_store
    from relops_pipeline.lib.tracestore.linked import TraceTables

    settings = home.settings()
    if settings.trace_store is None:
        raise dg.Failure("this home keeps its traces in the warehouse (no trace_store: in relops.yaml): "
                         "ingest with ingest_traces_job")
    _move_warehouse_traces_first(context, warehouse, settings.trace_store.uri)
    done = ingest_paths_to_store(
        TraceTables(settings.trace_store),
        chunk["paths"],
        workdir=home.home.warehouse_path.parent / "ingest-scratch",
        settings=settings,
        fmt=chunk["format"],
        landing_dir=home.home.landing_dir,
        run_id=context.run.run_id,
        progress=_progress_logger(context, chunk),
    )
    return {**done.summary.as_json(), "spans_by_day": done.spans_by_day, "batches": done.batches,
            "span_updates": done.span_updates}


@dg.op(pool=WAREHOUSE_POOL, tags={"relops/domain": "ingest"})
def record_store_batches(context: dg.OpExecutionContext, chunks: list[dict], warehouse: WarehouseResource) -> list[dict]:
    """Record the batches an ingestion appended to the trace store in the warehouse's
    ingest_batches (the control state: what came from which file, and how it added up) and
    the spans they completed in span_updates (what incremental features recompute), in one
    transaction. A batch already recorded is left as it is, with its updates."""
    rows = [b for c in chunks for b in c["batches"]]
    updates = [u for c in chunks for u in c.get("span_updates", [])]
    if rows:
        cols = list(rows[0])
        with warehouse.get_connection() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                recorded = {r[0] for r in con.execute(
                    "SELECT batch_id FROM ingest_batches WHERE batch_id IN (SELECT unnest(?::VARCHAR[]))",
                    [[r["batch_id"] for r in rows]]).fetchall()}
                con.executemany(
                    f"INSERT INTO ingest_batches ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)}) "
                    "ON CONFLICT DO NOTHING",
                    [[r[c] for c in cols] for r in rows],
                )
                new_updates = [u for u in updates if u["ingest_batch_id"] not in recorded]
                if new_updates:
                    ucols = list(new_updates[0])
                    con.executemany(f"INSERT INTO span_updates ({', '.join(ucols)}) VALUES ({', '.join('?' for _ in ucols)})",
                                    [[u[c] for c in ucols] for u in new_updates])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        context.log.info(f"recorded {len(rows)} ingest batch(es) in the warehouse")
    return [{k: v for k, v in c.items() if k != "batches"} for c in chunks]


@dg.op(tags={"relops/domain": "ingest"})
def report_ingestion(context: dg.OpExecutionContext, chunks: list[dict], expanded: dict) -> dg.Output[dict]:
    """The ingestion's totals, and the days it touched reported as raw_traces materializations:
    what follows them (validation, signals, features, drift, canary) is planned from these
    (defs/followups.py)."""
    import datetime as dt

    files = [f for c in chunks for f in c["files"]]
    errors = [*expanded["errors"], *(e for c in chunks for e in c["errors"])]
    per_day: dict[str, int] = {}
    for c in chunks:
        for day, n in c["spans_by_day"].items():
            per_day[day] = per_day.get(day, 0) + n
    for day in sorted(per_day):
        context.log_event(
            dg.AssetMaterialization(
                asset_key="raw_traces",
                partition=day,
                description="spans ingested (validated by the follow-up signals run)",
                metadata={INGESTED_METADATA_KEY: dg.MetadataValue.int(per_day[day]), "files": dg.MetadataValue.int(len(files))},
            )
        )
    keys = ("read", "accepted", "rejected", "duplicates", "unknown_release", "anomalies")
    totals = {k: sum(int(f.get(k, 0)) for f in files) for k in keys}
    ranges = day_ranges(dt.date.fromisoformat(d) for d in per_day)
    result: dict[str, Any] = {
        "files": files,
        "totals": totals,
        "errors": errors,
        "skipped": [*expanded["skipped"], *(s for c in chunks for s in c["skipped"])],
        "day_ranges": [[a.isoformat(), b.isoformat()] for a, b in ranges],
    }
    for e in errors:
        # The files that were read are committed and their days still get refreshed; the
        # unreadable ones are listed on the run and in its output, loudly.
        context.log.error(f"not ingested: {e['path']}: {e['error']}")
    cols = ("path", "format", "read", "accepted", "rejected", "duplicates", "unknown_release", "anomalies")
    days = sorted(per_day)
    return dg.Output(
        result,
        metadata={
            **{k: dg.MetadataValue.int(v) for k, v in totals.items()},
            "files": dg.MetadataValue.int(len(files)),
            "chunks": dg.MetadataValue.int(len(chunks)),
            "unreadable_files": dg.MetadataValue.int(len(errors)),
            **({"errors": dg.MetadataValue.json(errors)} if errors else {}),
            "days_touched": dg.MetadataValue.text(f"{days[0]} .. {days[-1]}" if days else "none"),
            "per_file": dg.MetadataValue.md(md_table(cols, [[f[k] for k in cols] for f in files])),
        },
    )


@dg.job(tags={"relops/domain": "ingest"})
def ingest_traces_job():
    """Ingest trace files into the warehouse (launched by the landing sensor and `relops ingest`), chunk by
    chunk; reports the raw_traces days it touched."""
    chunks, expanded = plan_ingest_chunks()
    report_ingestion(chunks.map(ingest_chunk).collect(), expanded)


@dg.job(tags={"relops/domain": "ingest"})
def ingest_traces_to_store_job():
    """Ingest trace files into the trace store (homes with relops.yaml `trace_store:`), chunk by
    chunk and outside the warehouse pool, then record the batches in the warehouse; reports the
    raw_traces days it touched, as ingest_traces_job does."""
    chunks, expanded = plan_ingest_chunks()
    report_ingestion(record_store_batches(chunks.map(ingest_chunk_to_store).collect()), expanded)


def ingest_job_name(settings: IngestSettings) -> str:
    """The ingestion job for a home: into the trace store when relops.yaml names one."""
    return (ingest_traces_to_store_job if settings.trace_store is not None else ingest_traces_job).name
