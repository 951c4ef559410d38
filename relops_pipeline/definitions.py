"""Assembles the relops Definitions from the domains under defs/."""

from __future__ import annotations

import dagster as dg

from relops_pipeline.defs import alerts, drift, evals, gates, ingest, maintenance, releases
from relops_pipeline.defs.resources import relops_resources
from relops_pipeline.lib.home import HOME_ENV, Home


def build_resources() -> dict:
    """The home is $RELOPS_HOME when set (read when the code location loads), else ./data/home."""
    import os

    return relops_resources(dg.EnvVar(HOME_ENV) if os.environ.get(HOME_ENV) else Home.resolve().root)


defs = dg.Definitions(
    assets=[*ingest.assets, *evals.assets, *gates.assets, *drift.assets, *releases.assets, *alerts.assets,
            *maintenance.assets],
    asset_checks=[*releases.asset_checks],
    jobs=[*ingest.jobs, *evals.jobs, *gates.jobs, *drift.jobs, *alerts.jobs, *releases.jobs,
          *maintenance.jobs],
    schedules=[*drift.schedules, *releases.schedules, *maintenance.schedules],
    sensors=[*ingest.sensors, *evals.sensors, *gates.sensors, *drift.sensors, *alerts.sensors, *releases.sensors],
    resources=build_resources(),
)
