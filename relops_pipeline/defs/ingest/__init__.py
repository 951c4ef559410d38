"""Ingestion domain: trace files -> warehouse -> raw_traces -> daily_signals, trace_features."""

from __future__ import annotations

import dagster as dg

from relops_pipeline.defs.followups import canary_job, traces_followup_job
from relops_pipeline.defs.ingest.assets import daily_signals, raw_traces, trace_features
from relops_pipeline.defs.ingest.jobs import ingest_traces_job, ingest_traces_to_store_job
from relops_pipeline.defs.ingest.sensors import followups_sensor, landing_sensor

assets = [raw_traces, daily_signals, trace_features]
jobs: list[dg.JobDefinition | dg.UnresolvedAssetJobDefinition] = [
    ingest_traces_job, ingest_traces_to_store_job, traces_followup_job, canary_job,
]
sensors = [landing_sensor, followups_sensor]
