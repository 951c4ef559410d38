"""Assembles the relops Definitions from the domains under defs/."""

from __future__ import annotations

import dagster as dg

from relops_pipeline.defs import alerts, drift, evals, gates, ingest, maintenance, releases
from relops_pipeline.defs.recovery import stuck_runs_sensor
from relops_pipeline.defs.resources import relops_resources
from relops_pipeline.lib.home import HOME_ENV, Home


def build_resources() -> dict:
    """The home is $RELOPS_HOME, read when a run starts (the CLI points it at --home); unset when
    the code location loads, it is the default home (./data/home) from then on."""
    import os

    os.environ.setdefault(HOME_ENV, str(Home.resolve().root))
    return relops_resources(dg.EnvVar(HOME_ENV))


defs = dg.Definitions(
    assets=[*ingest.assets, *evals.assets, *gates.assets, *drift.assets, *releases.assets, *alerts.assets,
            *maintenance.assets],
    asset_checks=[*releases.asset_checks],
    jobs=[*ingest.jobs, *evals.jobs, *gates.jobs, *drift.jobs, *alerts.jobs, *releases.jobs,
          *maintenance.jobs],
    schedules=[*drift.schedules, *releases.schedules, *maintenance.schedules],
    sensors=[stuck_runs_sensor, *ingest.sensors, *evals.sensors, *gates.sensors, *drift.sensors, *alerts.sensors, *releases.sensors],
    resources=build_resources(),
)
