"""Ingestion domain: trace files -> warehouse -> raw_traces -> daily_signals, trace_features."""

from relops_pipeline.defs.ingest.assets import daily_signals, raw_traces, trace_features, trace_signals_job
from relops_pipeline.defs.ingest.jobs import ingest_traces_job
from relops_pipeline.defs.ingest.sensors import ingested_days_sensor, landing_sensor

assets = [raw_traces, daily_signals, trace_features]
jobs = [ingest_traces_job, trace_signals_job]
sensors = [landing_sensor, ingested_days_sensor]
