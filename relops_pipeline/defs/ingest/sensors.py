"""Sensors: new files in the landing folder launch ingestion; what follows new traces is
launched by the follow-ups sensor (planned in defs/followups.py)."""


import hashlib
import json
import os
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg

from relops_pipeline.defs.followups import canary_job, traces_followup_job
from relops_pipeline.defs.ingest.jobs import ingest_job_name, ingest_traces_job, ingest_traces_to_store_job
from relops_pipeline.defs.resources import RelopsHomeResource, WarehouseResource
from relops_pipeline.lib.ingest import expand_paths

# A file still being written by a collector must not be ingested half-way: wait until it has
# not changed for this many seconds.
SETTLE_ENV = "RELOPS_LANDING_SETTLE_S"
MAX_FILES_PER_RUN = 200
# Stale derived days (a crash between an ingestion's commit and its follow-ups) are looked for
# this often, among spans committed at least HEAL_AFTER_S ago.
HEAL_EVERY_S = 600
HEAL_AFTER_S = 900


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


@dg.sensor(
    jobs=[ingest_traces_job, ingest_traces_to_store_job],
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def landing_sensor(context: dg.SensorEvaluationContext, home: RelopsHomeResource):
    """Launch an ingestion run for trace files that are new or changed in the landing folder."""
    landing = home.home.landing_dir
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
                job_name=ingest_job_name(home.settings()),
                run_key=f"landing-{key}",
                run_config={"ops": {"plan_ingest_chunks": {"config": {"paths": chunk}}}},
                tags={"relops/trigger": "landing_sensor", "relops/files": str(len(chunk))},
            )
        )
    seen.update({p: current[p] for p in new})
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen))


def _new_materializations(instance, asset: str, after_id: int, limit: int = 1000) -> list:
    """Materialization records of `asset` after the storage id `after_id`, oldest first."""
    return list(instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), after_storage_id=after_id), limit=limit, ascending=True).records)


@dg.sensor(
    jobs=[traces_followup_job, canary_job],
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def followups_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
    """Launch what follows new traces (defs/followups.py decides): the days an ingestion
    reported are validated and their signals and features recomputed; new features are
    followed by the rolling drift of the days whose week they touch and by the canary
    judgement of every release in canary."""
    from relops_pipeline.defs.followups import (
        ROLLING_DRIFT_ASSETS,
        SIGNALS_ASSETS,
        after_features,
        after_ingestion,
        days_not_read_yet,
        ingested_days,
        materialized_day_ranges,
        releases_in_canary,
    )
    from relops_pipeline.defs.resources import WarehouseBusy

    cursor = json.loads(context.cursor) if context.cursor else {}
    requests: list[dg.RunRequest] = []
    first_tick = not cursor
    raw = _new_materializations(context.instance, "raw_traces", cursor.get("raw_traces", 0))
    features = _new_materializations(context.instance, "trace_features", cursor.get("trace_features", 0))
    if first_tick:  # what happened before the sensor existed is history, not news
        return dg.SensorResult(cursor=json.dumps({"raw_traces": max((r.storage_id for r in raw), default=0),
                                                  "trace_features": max((r.storage_id for r in features), default=0)}))
    if raw:
        days = ingested_days(r.asset_materialization for r in raw)
        waiting = days_not_read_yet(context.instance, SIGNALS_ASSETS)
        if left := [d for d in days if d in waiting]:
            context.log.info(f"{len(left)} day(s) left to runs that have not read them yet: "
                             f"{', '.join(sorted({waiting[d][:8] for d in left}))}")
        source = f"m{raw[-1].storage_id}"
        todo = [d for d in days if d not in waiting]
        requests += [f.run_request() for f in after_ingestion(todo, source=source, log=context.log.warning,
                                                              occupied=_occupied_gaps(context, warehouse, todo))]
        cursor["raw_traces"] = raw[-1].storage_id
    if features:
        try:
            with warehouse.read_only(requires="registry_state") as con:
                canaries = releases_in_canary(con) if con is not None else []
        except WarehouseBusy:
            context.log.info("the warehouse is busy: the features' follow-ups wait for the next tick")
        else:
            ranges = materialized_day_ranges({r.partition_key for r in features if r.partition_key})
            if canaries:
                from relops_pipeline.defs.evals.partitions import RELEASES_PARTITIONS

                # A release rolled out without being registered here still gets its canary judged.
                missing = [k for k in canaries if not context.instance.has_dynamic_partition(RELEASES_PARTITIONS, k)]
                if missing:
                    context.instance.add_dynamic_partitions(RELEASES_PARTITIONS, missing)
            source = f"m{features[-1].storage_id}"
            drifting = days_not_read_yet(context.instance, ROLLING_DRIFT_ASSETS)
            requests += [f.run_request() for f in after_features(ranges, canaries, source=source)
                         if not (f.kind == "rolling_drift" and f.days and _all_in(f.days, drifting))]
            cursor["trace_features"] = features[-1].storage_id
    if not requests and time.time() - cursor.get("healed_at", 0) >= HEAL_EVERY_S:
        requests += _heal(context, warehouse)
        cursor["healed_at"] = time.time()
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True))


def _occupied_gaps(context: dg.SensorEvaluationContext, warehouse: WarehouseResource,
                   days: list[date]) -> set[date] | None:
    """The days holding spans in the gaps between the ranges of `days` that one run could
    bridge (defs/followups.bridge_gaps), as `relops ingest` finds them; None (no bridging: a run
    per range, as always correct) when there is no such gap or the warehouse is busy."""
    from relops_pipeline.defs.followups import bridge_gaps
    from relops_pipeline.defs.resources import WarehouseBusy
    from relops_pipeline.lib.traces_day import days_with_spans, stored_days_with_spans

    gaps = bridge_gaps(days)
    if not gaps:
        return None
    if (store := warehouse.home.settings().trace_store) is not None:
        try:
            return stored_days_with_spans(store, gaps)
        except Exception as exc:  # noqa: BLE001 -- bridging is a saving: without it, a run per range
            context.log.warning(f"the trace store's day partitions could not be read ({exc}): a run per range")
            return None
    try:
        with warehouse.read_only(requires="spans", traces=True) as con:
            return None if con is None else days_with_spans(con, gaps)
    except WarehouseBusy:
        context.log.info("the warehouse is busy: the new days' ranges get a run each this time")
        return None


def _all_in(days: tuple[str, str], covered) -> bool:
    first, last = (datetime.fromisoformat(d).date() for d in days)
    return all(first + timedelta(days=i) in covered for i in range((last - first).days + 1))


def _heal(context: dg.SensorEvaluationContext, warehouse: WarehouseResource) -> list[dg.RunRequest]:
    """Signals runs for days a crash left stale: spans committed long enough ago that their own
    follow-ups should have finished, with derived data missing or older than them. The run keys
    name the days and their last ingestion, so the same stale state is asked for once."""
    from relops_pipeline.defs.followups import after_ingestion
    from relops_pipeline.defs.resources import WarehouseBusy
    from relops_pipeline.lib.health import stale_days

    try:
        with warehouse.read_only(requires="daily_signals", traces=True) as con:
            stale = stale_days(con) if con is not None else []
    except WarehouseBusy:
        return []
    settled = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=HEAL_AFTER_S)
    days = [d for d in stale if d.last_ingested < settled]
    if not days:
        return []
    context.log.warning(f"{len(days)} day(s) with stale derived data: {', '.join(str(d.day) for d in days[:10])}")
    source = "heal-" + max(d.last_ingested for d in days).strftime("%Y%m%dT%H%M%S%f")
    return [f.run_request() for f in after_ingestion([d.day for d in days], source=source, log=context.log.warning)]
