"""Sensors: new files in the landing folder launch ingestion; a finished ingestion refreshes
the days it touched."""


import hashlib
import json
import os
import time
from pathlib import Path

import dagster as dg

from relops_pipeline.defs.beta import expected_beta_warnings
from relops_pipeline.defs.ingest.assets import trace_signals_job
from relops_pipeline.defs.ingest.jobs import DAY_RANGES_TAG, decode_ranges, ingest_traces_job
from relops_pipeline.lib.home import Home
from relops_pipeline.lib.ingest import expand_paths

# A file still being written by a collector must not be ingested half-way: wait until it has
# not changed for this many seconds.
SETTLE_ENV = "RELOPS_LANDING_SETTLE_S"
MAX_FILES_PER_RUN = 200


def landing_files(landing: Path, settle_s: float, now: float | None = None) -> dict[str, list[int]]:
    """Settled trace files under the landing folder: {path: [size, mtime_ns]}."""
    if not landing.is_dir():
        return {}
    now = time.time() if now is None else now
    files, _skipped, _errors = expand_paths([landing])
    out = {}
    for f in files:
        st = f.stat()
        if now - st.st_mtime >= settle_s:
            out[str(f)] = [st.st_size, st.st_mtime_ns]
    return out


def landing_sensor(context: dg.SensorEvaluationContext):
    """Launch an ingestion run for trace files that are new or changed in the landing folder."""
    landing = Home.resolve().landing_dir
    settle = float(os.environ.get(SETTLE_ENV, "5"))
    seen: dict[str, list[int]] = json.loads(context.cursor) if context.cursor else {}
    current = landing_files(landing, settle)
    new = sorted(p for p, sig in current.items() if seen.get(p) != sig)
    if not new:
        return dg.SkipReason(f"no new settled files in {landing}")
    requests = []
    for i in range(0, len(new), MAX_FILES_PER_RUN):
        chunk = new[i : i + MAX_FILES_PER_RUN]
        key = hashlib.sha256(json.dumps([[p, current[p]] for p in chunk]).encode()).hexdigest()[:24]
        requests.append(
            dg.RunRequest(
                run_key=f"landing-{key}",
                run_config={"ops": {"ingest_trace_files": {"config": {"paths": chunk}}}},
                tags={"relops/trigger": "landing_sensor", "relops/files": str(len(chunk))},
            )
        )
    seen.update({p: current[p] for p in new})
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen))


def ingested_days_sensor(context: dg.RunStatusSensorContext):
    """After an ingestion run, validate and recompute the signals of the days it touched."""
    from relops_pipeline.defs.partitions import daily_partitions

    keys = daily_partitions.get_partition_keys()
    ranges = []
    for first, last in decode_ranges(context.dagster_run.tags.get(DAY_RANGES_TAG)):
        clamped = (max(first, keys[0]), min(last, keys[-1]))
        if clamped != (first, last):
            context.log.warning(f"days {first}..{last} reach outside the daily partitions {keys[0]}..{keys[-1]}: refreshing {clamped}")
        if clamped[0] <= clamped[1]:
            ranges.append(clamped)
    if not ranges:
        return dg.SkipReason("the ingestion run added no spans within the daily partitions")
    run_id = context.dagster_run.run_id
    return [
        dg.RunRequest(
            run_key=f"days-{run_id}-{first}",
            tags={
                "dagster/asset_partition_range_start": first,
                "dagster/asset_partition_range_end": last,
                "relops/trigger": f"ingest:{run_id}",
            },
        )
        for first, last in ranges
    ]


with expected_beta_warnings():
    landing_sensor = dg.sensor(
        job=ingest_traces_job, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING
    )(landing_sensor)
    ingested_days_sensor = dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=[ingest_traces_job],
        request_job=trace_signals_job,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=15,
    )(ingested_days_sensor)
