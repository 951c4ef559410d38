"""Releases domain: rollout plans, the registry, rollback on failed checks, runbooks and drills."""

from __future__ import annotations

import dagster as dg

from relops_pipeline.defs.releases.assets import (
    canary_analysis,
    drill_fresh,
    release_registry,
    rollback_drill,
    rollback_runbook,
    rollout_plan,
)
from relops_pipeline.defs.releases.jobs import (
    daily_drill_freshness_schedule,
    drill_freshness_job,
    drill_job,
    monthly_drill_schedule,
    registry_change_job,
    rollback_alert_job,
    runbook_job,
)
from relops_pipeline.defs.releases.sensors import failed_checks_sensor, runbook_inputs_sensor

assets: list[dg.AssetsDefinition | dg.AssetSpec] = [rollout_plan, canary_analysis, release_registry, rollback_runbook,
                                                   rollback_drill]
asset_checks = [drill_fresh]
jobs: list[dg.JobDefinition | dg.UnresolvedAssetJobDefinition] = [
    rollback_alert_job, registry_change_job, runbook_job, drill_job, drill_freshness_job]
schedules = [monthly_drill_schedule, daily_drill_freshness_schedule]
sensors = [failed_checks_sensor, runbook_inputs_sensor]
