"""Daily drift follows new daily signals: after the signals of some days are recomputed, the
trailing-7-day drift of every day whose window contains them is recomputed too."""

import datetime as dt

import dagster as dg

from relops_pipeline.defs.beta import expected_beta_warnings
from relops_pipeline.defs.drift.assets import rolling_drift_job
from relops_pipeline.defs.ingest.assets import trace_signals_job

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def affected_days(first: str, last: str, keys: list[str]) -> tuple[str, str] | None:
    """The rolling-drift days whose trailing 7-day window contains a day in first..last."""
    end = (dt.date.fromisoformat(last) + dt.timedelta(days=6)).isoformat()
    lo, hi = max(first, keys[0]), min(end, keys[-1])
    return (lo, hi) if lo <= hi else None


def drift_follows_signals_sensor(context: dg.RunStatusSensorContext):
    """After a signals run succeeds, recompute the rolling drift of the days it affects."""
    from relops_pipeline.defs.partitions import daily_partitions

    tags = context.dagster_run.tags
    first = tags.get(RANGE_START_TAG) or tags.get("dagster/partition")
    last = tags.get(RANGE_END_TAG) or first
    if not first:
        return dg.SkipReason("the signals run has no partition tags")
    days = affected_days(first, last, daily_partitions.get_partition_keys())
    if days is None:
        return dg.SkipReason(f"days {first}..{last} are outside the daily partitions")
    return dg.RunRequest(
        run_key=f"drift-{context.dagster_run.run_id}",
        tags={RANGE_START_TAG: days[0], RANGE_END_TAG: days[1], "relops/trigger": f"signals:{context.dagster_run.run_id}"},
    )


with expected_beta_warnings():
    drift_follows_signals_sensor = dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=[trace_signals_job],
        request_job=rolling_drift_job,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=15,
    )(drift_follows_signals_sensor)
