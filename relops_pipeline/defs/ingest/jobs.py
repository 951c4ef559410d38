"""Ingestion: trace files from the landing folder (or the CLI) into the warehouse."""


import dagster as dg

from relops_pipeline.defs.followups import INGESTED_METADATA_KEY
from relops_pipeline.defs.resources import WAREHOUSE_POOL, RelopsHomeResource, WarehouseResource
from relops_pipeline.lib.days import day_ranges
from relops_pipeline.lib.ingest import ingest_paths, spans_by_day, touched_days
from relops_pipeline.lib.markdown import md_table


class IngestConfig(dg.Config):
    paths: list[str]
    format: str | None = None


@dg.op(pool=WAREHOUSE_POOL, tags={"relops/domain": "ingest"})
def ingest_trace_files(
    context: dg.OpExecutionContext,
    config: IngestConfig,
    home: RelopsHomeResource,
    warehouse: WarehouseResource,
) -> dg.Output[dict]:
    """Ingest trace files atomically, one transaction per file; every record accepted,
    rejected with a reason, or counted as a duplicate."""
    from relops_pipeline.lib.progress import Throttle

    settings = home.settings()
    shown, done = Throttle(), {"files": 0, "read": 0}

    def progress(r):
        context.log.info(
            f"{r.path} [{r.format}]: read {r.read} = accepted {r.accepted} + rejected {r.rejected}"
            f" + duplicates {r.duplicates} (unknown release: {r.unknown_release})"
        )
        done["files"] += 1
        done["read"] += r.read
        shown.maybe(f"ingested {done['files']} files, {done['read']:,} records ...")

    with warehouse.get_connection() as con:
        summary = ingest_paths(
            con,
            config.paths,
            settings=settings,
            fmt=config.format,
            landing_dir=home.home.landing_dir,
            run_id=context.run.run_id,
            progress=progress,
        )
        batch_ids = [f.batch_id for f in summary.files if f.batch_id]
        days = touched_days(con, batch_ids)
        per_day = spans_by_day(con, batch_ids, days)
    ranges = day_ranges(days)
    # The days touched, reported as raw_traces materializations: what follows them (validation,
    # signals, features, drift, canary) is planned from these (defs/followups.py).
    for day in days:
        context.log_event(dg.AssetMaterialization(
            asset_key="raw_traces", partition=day.isoformat(),
            description="spans ingested (validated by the follow-up signals run)",
            metadata={INGESTED_METADATA_KEY: dg.MetadataValue.int(per_day[day]),
                      "files": dg.MetadataValue.int(len(summary.files))},
        ))
    totals = summary.totals
    result = summary.as_json()
    result["day_ranges"] = [[a.isoformat(), b.isoformat()] for a, b in ranges]
    for e in summary.errors:
        # The files that were read are committed and their days still get refreshed; the
        # unreadable ones are listed on the run and in its output, loudly.
        context.log.error(f"not ingested: {e['path']}: {e['error']}")
    cols = ("path", "format", "read", "accepted", "rejected", "duplicates", "unknown_release")
    rows = [[f[k] for k in cols] for f in result["files"]]
    return dg.Output(
        result,
        metadata={
            **{k: dg.MetadataValue.int(v) for k, v in totals.items()},
            "files": dg.MetadataValue.int(len(summary.files)),
            "unreadable_files": dg.MetadataValue.int(len(summary.errors)),
            **({"errors": dg.MetadataValue.json(summary.errors)} if summary.errors else {}),
            "days_touched": dg.MetadataValue.text(f"{days[0]} .. {days[-1]}" if days else "none"),
            "per_file": dg.MetadataValue.md(md_table(cols, rows)),
        },
    )


@dg.job(tags={"relops/domain": "ingest"})
def ingest_traces_job():
    """Ingest trace files into the warehouse (launched by the landing sensor and `relops ingest`); reports the
    raw_traces days it touched."""
    ingest_trace_files()
