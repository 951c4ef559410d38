"""The weekly and monthly cadence: jobs and their schedules. (The CLI materializes single
cadence assets directly: `relops memo`, `relops review sample`, `relops propose --kind K`,
`relops readiness`.)"""

import dagster as dg

from relops_pipeline.defs.drift.assets import weekly_drift
from relops_pipeline.defs.maintenance.assets import (
    alert_calibration,
    readiness_report,
    review_sample,
    stability_memo,
    suite_proposals,
    threshold_proposals,
)
from relops_pipeline.defs.partitions import weekly_partitions

WEEKLY_CADENCE: list[dg.AssetsDefinition] = [weekly_drift, stability_memo, review_sample]
MONTHLY_CADENCE: list[dg.AssetsDefinition] = [suite_proposals, threshold_proposals, alert_calibration, readiness_report]

weekly_cadence_job = dg.define_asset_job(
    "weekly_cadence_job",
    selection=WEEKLY_CADENCE,
    description="The week that just ended: its drift, then the stability memo, then the review sample.",
)
monthly_cadence_job = dg.define_asset_job(
    "monthly_cadence_job",
    selection=MONTHLY_CADENCE,
    description="The monthly proposals (suite cases from incidents, threshold ratchets, alert calibration) "
                "and the readiness review. Proposals are drafts until someone accepts them.",
)


@dg.schedule(
    cron_schedule="0 6 * * 1",
    job=weekly_cadence_job,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def weekly_cadence_schedule(context: dg.ScheduleEvaluationContext):
    """Monday 06:00 UTC: the week that just ended — drift, then the memo, then the review sample."""
    weeks = weekly_partitions.get_partition_keys(current_time=context.scheduled_execution_time)
    if not weeks:
        return dg.SkipReason("no complete week yet")
    week = weeks[-1]
    return dg.RunRequest(run_key=f"weekly-cadence-{week}", partition_key=week,
                         tags={"relops/trigger": "weekly_cadence_schedule"})


# The 1st of the month at 08:00 UTC, after the monthly drill (07:00): the runbook the drill
# refreshes and the drill's result are in the readiness review.
monthly_cadence_schedule = dg.ScheduleDefinition(
    job=monthly_cadence_job, cron_schedule="0 8 1 * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING, tags={"relops/trigger": "monthly_cadence_schedule"},
)
