"""Production traces by day: the validated raw spans and the daily signals derived from them."""


from datetime import datetime

import dagster as dg

from relops_pipeline.defs.beta import with_beta_parameters
from relops_pipeline.defs.partitions import daily_partitions
from relops_pipeline.defs.resources import WAREHOUSE_POOL, WarehouseResource
from relops_pipeline.lib.markdown import md_table

SPAN_RULES = (
    ("keys_not_null", dg.AssetCheckSeverity.ERROR, "trace id, span id, workflow, release and start time are never null"),
    ("span_ids_unique", dg.AssetCheckSeverity.ERROR, "each (trace id, span id) appears once"),
    ("times_ordered", dg.AssetCheckSeverity.ERROR, "no span ends before it starts"),
    ("latency_not_negative", dg.AssetCheckSeverity.ERROR, "no negative latency"),
    ("unknown_release_share", dg.AssetCheckSeverity.WARN, "few spans without a release identifier"),
    ("latency_in_range", dg.AssetCheckSeverity.WARN, "latency within the plausible range"),
)


# Ingestion touches many days at once: one run over the whole range of days (one SQL
# statement) instead of a run per day.
SINGLE_RUN = dg.BackfillPolicy.single_run()


def _window(context: dg.AssetExecutionContext) -> tuple[datetime, datetime]:
    tw = context.partition_time_window
    return tw.start.replace(tzinfo=None), tw.end.replace(tzinfo=None)


@with_beta_parameters(
    dg.asset,
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    pool=WAREHOUSE_POOL,
    group_name="traces",
    kinds={"duckdb"},
    check_specs=[
            dg.AssetCheckSpec(name, asset="raw_traces", description=desc, blocking=sev == dg.AssetCheckSeverity.ERROR)
            for name, sev, desc in SPAN_RULES
        ],
)
def raw_traces(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    """Production LLM spans of the day, as ingested from every trace source, validated.

    The business meaning: what the workflows actually did in production that day — the raw
    evidence every signal, drift verdict and canary judgement is computed from. Spans live in
    the warehouse's `spans` table (written by ingestion, atomically per file); materializing a
    day validates it with Great Expectations and records its volume, so re-running is
    idempotent.
    """
    from relops_pipeline.lib.validation import validate_spans

    start, end = _window(context)
    with warehouse.get_connection() as con:
        df = con.execute(
            "SELECT trace_id, span_id, workflow, release, release_known, start_time, end_time, latency_ms "
            "FROM spans WHERE start_time >= ? AND start_time < ?",
            [start, end],
        ).df()
        by_release = con.execute(
            "SELECT workflow, release, count(*) AS spans FROM spans WHERE start_time >= ? AND start_time < ? "
            "GROUP BY ALL ORDER BY workflow, release",
            [start, end],
        ).fetchall()
        rejects = con.execute(
            "SELECT count(*) FROM trace_rejects r JOIN ingest_batches b ON b.batch_id = r.ingest_batch_id "
            "WHERE b.min_start_time < ? AND b.max_start_time >= ?",
            [end, start],
        ).fetchone()[0]
    validation = validate_spans(df)
    severity = {name: sev for name, sev, _ in SPAN_RULES}
    checks = [
        dg.AssetCheckResult(
            check_name=rule.name,
            passed=bool(rule.passed),
            severity=severity[rule.name],
            description=rule.description,
            metadata={
                **{k: v for k, v in rule.observed.items() if isinstance(v, (int, float, str, bool))},
                **({"examples": dg.MetadataValue.json(rule.unexpected_examples)} if rule.unexpected_examples else {}),
                **({"evaluation_error": rule.error} if rule.error else {}),
            },
        )
        for rule in validation.rules
        if rule.name in severity
    ]
    unknown = int((~df["release_known"]).sum()) if len(df) else 0
    table = md_table(["workflow", "release", "spans"], by_release)
    context.log.info(f"raw_traces {start:%Y-%m-%d}..{end:%Y-%m-%d}: {len(df)} spans, {unknown} without release")
    return dg.MaterializeResult(
        metadata={
            "spans": dg.MetadataValue.int(len(df)),
            "unknown_release_spans": dg.MetadataValue.int(unknown),
            "rejects_in_overlapping_batches": dg.MetadataValue.int(int(rejects)),
            "window": dg.MetadataValue.text(f"{start:%Y-%m-%d} .. {end:%Y-%m-%d} (end exclusive)"),
            "by_release": dg.MetadataValue.md(table),
        },
        check_results=checks,
    )


@with_beta_parameters(
    dg.asset,
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    pool=WAREHOUSE_POOL,
    deps=[raw_traces],
    group_name="traces",
    kinds={"duckdb"},
)
def daily_signals(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Per workflow, release and day: volume, error and refusal rates, latency percentiles,
    tokens, cost, finish-reason mix, feedback and online scores.

    The business meaning: the daily vital signs of each release in production — what drift
    detection, canary judgement and the weekly memo read. Recomputing a day replaces its rows.
    """
    from relops_pipeline.lib.signals import compute_daily_signals

    start, end = _window(context)
    with warehouse.get_connection() as con:
        rows = compute_daily_signals(con, start.date(), end.date())
        totals = con.execute(
            "SELECT coalesce(sum(spans), 0), coalesce(sum(errors), 0), coalesce(sum(cost_usd), 0), "
            "max(latency_p95_ms) FROM daily_signals WHERE day >= ? AND day < ?",
            [start.date(), end.date()],
        ).fetchone()
    return dg.MaterializeResult(
        metadata={
            "rows": dg.MetadataValue.int(rows),
            "spans": dg.MetadataValue.int(int(totals[0])),
            "errors": dg.MetadataValue.int(int(totals[1])),
            "cost_usd": dg.MetadataValue.float(float(totals[2])),
            "max_latency_p95_ms": dg.MetadataValue.float(float(totals[3] or 0.0)),
        }
    )


@with_beta_parameters(
    dg.asset,
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    pool=WAREHOUSE_POOL,
    deps=[raw_traces],
    group_name="traces",
    kinds={"duckdb"},
)
def trace_features(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """One row per production request (trace): latency, tokens, cost, input and output length,
    error, refusal, finish reason, model, topic, language, feedback and online scores.

    The business meaning: the per-request profile of what users sent and what the workflow
    answered — the columns drift detection compares between a reference window and now.
    Recomputing a day replaces its rows.
    """
    from relops_pipeline.lib.drift.features import compute_trace_features

    start, end = _window(context)
    with warehouse.get_connection() as con:
        rows = compute_trace_features(con, start.date(), end.date())
        by_wf = con.execute(
            "SELECT workflow, count(*) FROM trace_features WHERE day >= ? AND day < ? GROUP BY ALL ORDER BY ALL",
            [start.date(), end.date()],
        ).fetchall()
    return dg.MaterializeResult(
        metadata={
            "traces": dg.MetadataValue.int(int(rows)),
            "by_workflow": dg.MetadataValue.md(md_table(["workflow", "traces"], by_wf)),
        }
    )
