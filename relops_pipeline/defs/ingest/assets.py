"""Production traces by day: the validated raw spans and the daily signals derived from them."""

from datetime import date, datetime, timedelta

import dagster as dg

from relops_pipeline.defs.beta import with_beta_parameters
from relops_pipeline.defs.ingest.metadata import (
    SPAN_RULES,
    daily_signals_result,
    raw_traces_result,
    trace_features_result,
    window_text,
)
from relops_pipeline.defs.partitions import daily_partitions
from relops_pipeline.defs.resources import WAREHOUSE_POOL, WarehouseResource

# Ingestion touches many days at once: one run over the whole range of days (one SQL
# statement) instead of a run per day.
SINGLE_RUN = dg.BackfillPolicy.single_run()


def _window(context: dg.AssetExecutionContext) -> tuple[datetime, datetime]:
    tw = context.partition_time_window
    return tw.start.replace(tzinfo=None), tw.end.replace(tzinfo=None)


def _days(start: datetime, end: datetime) -> list[date]:
    """The days of a window [start, end): the trace store's partitions it reads."""
    return [date.fromordinal(o) for o in range(start.date().toordinal(), end.date().toordinal())]


def derived_from(upstream: dg.AssetsDefinition) -> dict:
    """The definition of a daily asset computed from `upstream`'s days, one run over a range."""
    return {
        "partitions_def": daily_partitions,
        "backfill_policy": SINGLE_RUN,
        "pool": WAREHOUSE_POOL,
        "deps": [upstream],
        "group_name": "traces",
        "kinds": {"duckdb"},
    }


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
    idempotent. Span-level rules judge shares: a few spans ending before they start WARN with
    their count; more than `data_quality.max_violating_share` (1 %) of the day is an ERROR
    that blocks what follows (in a run over several days, of any one of its days).
    """
    from relops_pipeline.lib.traces_day import validate_window
    from relops_pipeline.lib.validation import load_max_violating_share

    start, end = _window(context)
    share = load_max_violating_share(warehouse.home.home.settings_file)
    with warehouse.get_connection(days=_days(start, end)) as con:
        validated = validate_window(con, start, end, max_violating_share=share)
    context.log.info(
        f"raw_traces {window_text(start, end)}: {validated.spans} spans, "
        f"{validated.unknown_release_spans} without release, "
        f"{validated.anomalous_spans} kept with an anomaly (latency NULL)"
    )
    return raw_traces_result(validated)


@with_beta_parameters(dg.asset, **derived_from(raw_traces))
def daily_signals(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Per workflow, release and day: volume, error and refusal rates, latency percentiles,
    tokens, cost, finish-reason mix, feedback and online scores.

    The business meaning: the daily vital signs of each release in production — what drift
    detection, canary judgement and the weekly memo read. Recomputing a day replaces its rows.
    """
    from relops_pipeline.lib.traces_day import refresh_signals

    start, end = _window(context)
    with warehouse.get_connection(days=_days(start, end)) as con:
        return daily_signals_result(refresh_signals(con, start.date(), end.date()))


@with_beta_parameters(dg.asset, **derived_from(raw_traces))
def trace_features(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """One row per production request (trace): latency, tokens, cost, input and output length,
    error, refusal, finish reason, model, topic, language, feedback and online scores.

    The business meaning: the per-request profile of what users sent and what the workflow
    answered — the columns drift detection compares between a reference window and now.
    Materializing a day replaces its rows; the run that follows an ingestion (or heals a day
    a crash left stale) recomputes only the traces of the batches the days do not reflect yet,
    so a small file into a full day costs what it touches.
    """
    from relops_pipeline.defs.followups import TRIGGER_TAG
    from relops_pipeline.lib.traces_day import refresh_features

    start, end = _window(context)
    incremental = context.run.tags.get(TRIGGER_TAG, "").startswith("ingest:")
    # A trace belongs to the day of its first span and may cross midnight: its days and one each side.
    with warehouse.get_connection(days=_days(start - timedelta(days=1), end + timedelta(days=1))) as con:
        return trace_features_result(refresh_features(con, start.date(), end.date(), incremental=incremental))
