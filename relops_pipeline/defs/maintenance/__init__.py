"""Maintenance domain: the weekly memo and review sample, the monthly proposals and the
readiness review, with their schedules."""

from relops_pipeline.defs.maintenance.assets import (
    alert_calibration,
    readiness_report,
    review_sample,
    stability_memo,
    suite_proposals,
    threshold_proposals,
)
from relops_pipeline.defs.maintenance.jobs import (
    monthly_cadence_job,
    monthly_cadence_schedule,
    weekly_cadence_job,
    weekly_cadence_schedule,
)

assets = [stability_memo, review_sample, suite_proposals, threshold_proposals, alert_calibration, readiness_report]
jobs = [weekly_cadence_job, monthly_cadence_job]
schedules = [weekly_cadence_schedule, monthly_cadence_schedule]
sensors: list = []
