"""Drift domain: rolling (daily) and weekly drift against each workflow's reference window.
Rolling drift follows new per-request features (defs/followups.py); the weekly drift runs in
the weekly cadence (defs/maintenance)."""

from relops_pipeline.defs.drift.assets import rolling_drift, weekly_drift

assets = [rolling_drift, weekly_drift]
jobs: list = []
schedules: list = []
sensors: list = []
