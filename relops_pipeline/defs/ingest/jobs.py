"""Ingestion: trace files from the landing folder (or the CLI) into the warehouse."""


import dagster as dg

from relops_pipeline.defs.resources import WAREHOUSE_POOL, RelopsHomeResource, WarehouseResource
from relops_pipeline.lib.ingest import ingest_paths
from relops_pipeline.lib.markdown import md_table

# Run tags through which an ingestion run tells the signals sensor which days it touched.
DAYS_FROM_TAG = "relops/days_from"
DAYS_TO_TAG = "relops/days_to"


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
    settings = home.settings()

    def progress(r):
        context.log.info(
            f"{r.path} [{r.format}]: read {r.read} = accepted {r.accepted} + rejected {r.rejected}"
            f" + duplicates {r.duplicates} (unknown release: {r.unknown_release})"
        )

    with warehouse.get_connection() as con:
        summary = ingest_paths(
            con,
            config.paths,
            settings=settings,
            fmt=config.format,
            landing_dir=home.home.landing_dir,
            run_id=context.run_id,
            progress=progress,
        )
    days = summary.days()
    if days:
        context.instance.add_run_tags(
            context.run_id, {DAYS_FROM_TAG: days[0].isoformat(), DAYS_TO_TAG: days[-1].isoformat()}
        )
    totals = summary.totals
    result = summary.as_json()
    if summary.errors:
        # Files that were read are committed; the unreadable ones fail the run, loudly.
        raise dg.Failure(
            description="; ".join(f"{e['path']}: {e['error']}" for e in summary.errors),
            metadata={"ingested": dg.MetadataValue.json(result)},
        )
    cols = ("path", "format", "read", "accepted", "rejected", "duplicates", "unknown_release")
    rows = [[f[k] for k in cols] for f in result["files"]]
    return dg.Output(
        result,
        metadata={
            **{k: dg.MetadataValue.int(v) for k, v in totals.items()},
            "files": dg.MetadataValue.int(len(summary.files)),
            "days_touched": dg.MetadataValue.text(f"{days[0]} .. {days[-1]}" if days else "none"),
            "per_file": dg.MetadataValue.md(md_table(cols, rows)),
        },
    )


@dg.job(tags={"relops/domain": "ingest"})
def ingest_traces_job():
    """Ingest trace files into the warehouse (launched by the landing sensor and `relops ingest`)."""
    ingest_trace_files()
