"""Drift domain: rolling (daily) and weekly drift against each workflow's reference window."""

from relops_pipeline.defs.drift.assets import (
    rolling_drift,
    rolling_drift_job,
    weekly_drift,
    weekly_drift_job,
)
from relops_pipeline.defs.drift.sensors import drift_follows_signals_sensor

assets = [rolling_drift, weekly_drift]
jobs = [rolling_drift_job, weekly_drift_job]
schedules: list = []  # the weekly drift runs in the weekly cadence (defs/maintenance)
sensors = [drift_follows_signals_sensor]
