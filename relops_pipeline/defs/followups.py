"""What runs after what: the one place that decides the follow-ups of new traces and of failed
checks.

- An ingestion reports the `raw_traces` partitions (days) it touched as materializations
  (`INGESTED_METADATA_KEY` in their metadata tells them from the validation's own).
- After an ingestion: validate those days and recompute their signals, per-request features and
  signal alerts — one run per range of consecutive days, ranges with only empty days between
  them (up to BRIDGE_MAX_GAP_DAYS) sharing one (`after_ingestion`).
- After new per-request features: the rolling drift of every day whose trailing week holds them
  (one run over their hull), and the canary judgement of every release in canary or ramp
  (`after_features`).
- After a failed gate, canary or drift check: the rollback-alert job, once per failure and
  workflow (`after_failed_check`).

The sensors turn these plans into run requests (`FollowUp.run_request`); the CLI executes the
same plans in its own process (`relops_pipeline.cli.common.run_followups`) when no daemon runs.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from relops_pipeline.lib.days import DayRange, bridged, clamp, day_ranges, gaps, hull, trailing_window_days

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
TRIGGER_TAG = "relops/trigger"
PARENT_RUN_TAG = "dagster/parent_run_id"  # on a re-execution of a run (from failure, or chosen steps)

# The metadata key an ingestion's report of a raw_traces partition carries (the spans it added
# or completed that day); the validation's materialization of the same day has none.
INGESTED_METADATA_KEY = "ingested_spans"

# What the days touched by an ingestion need recomputed, in one run per range of days.
SIGNALS_ASSETS = ("raw_traces", "daily_signals", "trace_features", "signal_rule_alerts")
ROLLING_DRIFT_ASSETS = ("rolling_drift",)
CANARY_ASSETS = ("canary_analysis",)
ROLLING_DRIFT_WINDOW_DAYS = 7
# Ranges of touched days this close, with no spans between them, are refreshed in one run: a run
# costs ~0.8 s whatever it covers, an empty day in it ~0.05 s (measured on 2 cores), so a gap of
# up to ~15 days is cheaper inside a run. History imported in one go touches scattered days: the
# trace fixtures (2024-05 to 2026-12) took 31 signals runs.
BRIDGE_MAX_GAP_DAYS = 14

# The jobs the sensors launch follow-ups in (a sensor's runs need a job, and one asset job
# cannot mix daily and release partitions); the CLI materializes the same selections directly.
traces_followup_job = dg.define_asset_job(
    "traces_followup_job", selection=[*SIGNALS_ASSETS, *ROLLING_DRIFT_ASSETS],
    description="What follows new traces on some days: validation, signals, features and signal alerts, "
                "or the rolling drift of the days whose week they touch (each run selects its part).",
)
canary_job = dg.define_asset_job("canary_job", selection=list(CANARY_ASSETS),
                                 description="Judge a release's canary against the live release over the same intervals.")

# trigger -> the checks whose failure launches the rollback-alert job.
FAILURE_CHECKS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "gate": (("release_gate", "must_pass"), ("release_gate", "no_regression")),
    "canary": (("canary_analysis", "canary_healthy"),),
    "drift": (("weekly_drift", "critical_columns_stable"), ("weekly_drift", "drifted_share_within_limit"),
              ("rolling_drift", "critical_columns_stable"), ("rolling_drift", "drifted_share_within_limit")),
}
TRIGGER_OF_CHECK = {f"{asset}:{check}": trigger for trigger, checks in FAILURE_CHECKS.items() for asset, check in checks}


@dataclass(frozen=True)
class FollowUp:
    """One run to launch: assets over a range of days or one release partition, or an op job."""

    kind: str  # signals | rolling_drift | canary | failure_response
    run_key: str
    job: str  # what a sensor launches
    assets: tuple[str, ...] = ()  # the part of the job's assets to materialize (none: an op job)
    partition_key: str | None = None
    days: tuple[str, str] | None = None  # first..last, both included
    run_config: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def run_tags(self) -> dict[str, str]:
        tags = dict(self.tags)
        if self.days is not None:
            tags[RANGE_START_TAG], tags[RANGE_END_TAG] = self.days
        return tags

    def describe(self) -> str:
        where = self.partition_key or (f"{self.days[0]}..{self.days[1]}" if self.days else "")
        return f"{self.kind} {where}".strip()

    def run_request(self) -> dg.RunRequest:
        return dg.RunRequest(
            run_key=self.run_key,
            job_name=self.job,
            asset_selection=[dg.AssetKey(a) for a in self.assets] if self.assets else None,
            partition_key=self.partition_key,
            run_config=dict(self.run_config),
            tags=self.run_tags,
        )


def _daily_bounds() -> tuple[dt.date, dt.date]:
    from relops_pipeline.defs.partitions import daily_partitions

    keys = daily_partitions.get_partition_keys()
    return dt.date.fromisoformat(keys[0]), dt.date.fromisoformat(keys[-1])


def _iso(rng: DayRange) -> tuple[str, str]:
    return rng[0].isoformat(), rng[1].isoformat()


def after_ingestion(days: Iterable[dt.date], *, source: str, log=None,
                    occupied: Iterable[dt.date] | None = None) -> list[FollowUp]:
    """The signals runs for the days an ingestion touched: one per range of consecutive days
    within the daily partitions (days outside them are logged and left out). `occupied`: the
    days holding spans in the gaps of up to BRIDGE_MAX_GAP_DAYS between those ranges (see
    `bridge_gaps`); the ranges around a gap without any are refreshed in one run, with it."""
    first, last = _daily_bounds()
    ranges = []
    for rng in day_ranges(days):
        clamped = clamp(rng, first, last)
        if clamped != rng and log is not None:
            log(f"days {rng[0]}..{rng[1]} reach outside the daily partitions {first}..{last}: refreshing {clamped}")
        if clamped is not None:
            ranges.append(clamped)
    if occupied is not None:
        ranges = bridged(ranges, occupied, BRIDGE_MAX_GAP_DAYS)
    out = []
    for rng in ranges:
        lo, hi = _iso(rng)
        out.append(FollowUp("signals", run_key=f"signals-{source}-{lo}-{hi}", job=traces_followup_job.name,
                            assets=SIGNALS_ASSETS, days=(lo, hi),
                            tags={TRIGGER_TAG: f"ingest:{source}"}))
    return out


def bridge_gaps(days: Iterable[dt.date]) -> list[DayRange]:
    """The gaps between the ranges of these days that a run could bridge: ask which of their
    days hold spans and pass them to `after_ingestion` as `occupied`."""
    return gaps(day_ranges(days), BRIDGE_MAX_GAP_DAYS)


def after_features(ranges: Sequence[DayRange], canary_release_keys: Sequence[str], *, source: str,
                   max_drift_days: int | None = None) -> list[FollowUp]:
    """After the per-request features of some days were recomputed: one rolling-drift run over
    every day whose trailing week holds them (at most the latest `max_drift_days` when a
    person waits for it), and a canary judgement of each release in canary or ramp."""
    first, last = _daily_bounds()
    out: list[FollowUp] = []
    affected = [trailing_window_days(r, ROLLING_DRIFT_WINDOW_DAYS) for r in ranges]
    span = hull([c for c in (clamp(r, first, last) for r in affected) if c is not None])
    if span is not None:
        if max_drift_days is not None:
            span = (max(span[0], span[1] - dt.timedelta(days=max_drift_days - 1)), span[1])
        lo, hi = _iso(span)
        out.append(FollowUp("rolling_drift", run_key=f"drift-{source}-{lo}-{hi}", job=traces_followup_job.name,
                            assets=ROLLING_DRIFT_ASSETS,
                            days=(lo, hi), tags={TRIGGER_TAG: f"signals:{source}"}))
    for key in canary_release_keys:
        out.append(FollowUp("canary", run_key=f"canary-{source}-{key}", job=canary_job.name, assets=CANARY_ASSETS,
                            partition_key=key,
                            tags={TRIGGER_TAG: f"signals:{source}"}))
    return out


def releases_in_canary(con) -> list[str]:
    """The release keys of every release now in canary or ramp."""
    from relops_pipeline.lib.evals.model import release_key
    from relops_pipeline.lib.registry.state import list_states

    return [release_key(s.workflow, s.canary) for s in list_states(con) if s.canary and s.stage in ("canary", "ramp")]


# --- failed checks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FailedCheck:
    """A failed check evaluation that relops responds to."""

    trigger: str  # gate | canary | drift
    check: str  # asset:check
    storage_id: int
    run_id: str
    evaluated_at: dt.datetime
    partition: str | None
    description: str | None
    metadata: Mapping[str, Any]


def failed_checks_of_run(instance: dg.DagsterInstance, run_id: str) -> list[FailedCheck]:
    """The failed gate, canary and drift check evaluations a run recorded."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    run = instance.get_run_by_id(run_id)
    out = []
    for rec in records:
        entry = rec.event_log_entry
        ev = entry.dagster_event.event_specific_data if entry.dagster_event else None
        if not isinstance(ev, dg.AssetCheckEvaluation) or ev.passed:
            continue
        check = f"{ev.asset_key.to_user_string()}:{ev.check_name}"
        trigger = TRIGGER_OF_CHECK.get(check)
        if trigger is None:
            continue
        meta = {k: getattr(v, "value", v) for k, v in (ev.metadata or {}).items()}
        # Checks of a partitioned asset carry no partition (Dagster 1.13): the run's tag does.
        partition = ev.partition or meta.get("release_key") or (run.tags.get("dagster/partition") if run else None)
        partition = str(partition) if partition else None
        out.append(FailedCheck(trigger, check, rec.storage_id, run_id,
                               dt.datetime.fromtimestamp(entry.timestamp, tz=dt.UTC), partition, ev.description, meta))
    return out


def after_failed_check(failure: FailedCheck) -> list[FollowUp]:
    """The rollback-alert runs one failed check asks for: one per workflow it names."""
    from relops_pipeline.lib.evals.model import split_release_key

    links = {"check": failure.check, "dagster_run": failure.run_id}
    targets: list[tuple[str, str | None, str, dict]] = []
    if failure.trigger == "drift":
        for f in failure.metadata.get("failing") or []:
            rel = f.get("release")
            targets.append((f["workflow"], None if rel in (None, "*") else rel, f"{failure.check} failed: {f['reason']}",
                            {"period_start": f.get("period_start"), "severity": f.get("severity")}))
    elif failure.partition:
        workflow, version = split_release_key(failure.partition)
        reason = failure.description or f"{failure.check} failed"
        targets.append((workflow, version, f"{failure.check} failed for {failure.partition}: {reason}",
                        {k: v for k, v in failure.metadata.items() if isinstance(v, (int, float, str, bool))}))
    return [
        FollowUp(
            "failure_response",
            run_key=f"{failure.trigger}-{failure.storage_id}-{workflow}",
            job="rollback_alert_job",
            run_config={"ops": {"rollback_or_alert": {"config": {
                "workflow": workflow, "release": release, "trigger": failure.trigger, "reason": reason[:2000],
                "check_evaluated_at": failure.evaluated_at.isoformat(), "evidence_json": json.dumps(evidence, default=str),
                "links_json": json.dumps(links)}}}},
            tags={TRIGGER_TAG: f"{failure.trigger}-check", "relops/workflow": workflow,
                  **({"relops/release": release} if release else {})},
        )
        for workflow, release, reason, evidence in targets
    ]


# --- reading what happened -------------------------------------------------------------------


def ingested_days(events: Iterable[dg.AssetMaterialization]) -> list[dt.date]:
    """The days an ingestion reported touching (its raw_traces materializations)."""
    return sorted({dt.date.fromisoformat(m.partition) for m in events
                   if m.asset_key == dg.AssetKey("raw_traces") and m.partition and INGESTED_METADATA_KEY in m.metadata})


def refreshed_days(instance: dg.DagsterInstance, after: Mapping[dt.date, float],
                   assets: Sequence[str]) -> dict[dt.date, tuple[str, float]]:
    """The days of `after` that a successful run of `assets` (all of them, over a range of days
    holding the day) refreshed from what was committed before the day's time (a Unix time): it
    started later. Each such day -> the first such run to end: its id and end time. An
    ingestion whose days another ingestion's follow-ups refreshed after its commit has nothing
    left to do."""
    if not after:
        return {}
    keys = {dg.AssetKey(a) for a in assets}
    out: dict[dt.date, tuple[str, float]] = {}
    since = dt.datetime.fromtimestamp(min(after.values()) - OTHER_CLOCKS_S, tz=dt.UTC)
    for rec in instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS], updated_after=since)):
        run = rec.dagster_run
        if rec.start_time is None or rec.end_time is None or not _refreshes_whole(run, keys):
            continue
        first, last = dt.date.fromisoformat(run.tags[RANGE_START_TAG]), dt.date.fromisoformat(run.tags[RANGE_END_TAG])
        started = rec.start_time - (0.0 if _on_this_machine(run) else OTHER_CLOCKS_S)
        for day, committed in after.items():
            if (first <= day <= last and started > committed
                    and (day not in out or rec.end_time < out[day][1])):
                out[day] = (run.run_id, rec.end_time)
    return out


# A run timed by another machine's clock counts as started this much earlier than it says.
OTHER_CLOCKS_S = 5.0


def _refreshes_whole(run: dg.DagsterRun, keys: set[dg.AssetKey]) -> bool:
    """The run materializes all of `keys` over a range of days, every step of it: not a
    re-execution of some of its steps (which keeps the parent's selection and tags and names
    its parent)."""
    tags = run.tags
    return (RANGE_START_TAG in tags and RANGE_END_TAG in tags and keys <= set(run.asset_selection or ())
            and PARENT_RUN_TAG not in tags)


def _on_this_machine(run: dg.DagsterRun) -> bool:
    """Timed by this machine's clock: a run the CLI executed here (the daemon's runs carry no
    host and may run in other pods)."""
    import socket

    from relops_pipeline.defs.recovery import HOST_TAG

    return run.tags.get(HOST_TAG) == socket.gethostname()


def days_not_read_yet(instance: dg.DagsterInstance, assets: Sequence[str]) -> dict[dt.date, str]:
    """The days that runs of `assets` (all of them, over a range of days) will read from what is
    committed now: runs queued, starting, or started with no step begun (waiting for the
    warehouse pool). Each such day -> one such run. Another run for those days would only do
    their work again; if one of them fails, the days are left stale and healed (`_heal`)."""
    keys = {dg.AssetKey(a) for a in assets}
    out: dict[dt.date, str] = {}
    statuses = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED]
    for run in instance.get_runs(dg.RunsFilter(statuses=statuses)):
        if not _refreshes_whole(run, keys):
            continue
        if run.status == dg.DagsterRunStatus.STARTED and instance.get_records_for_run(
                run.run_id, of_type=dg.DagsterEventType.STEP_START, limit=1).records:
            continue
        first, last = dt.date.fromisoformat(run.tags[RANGE_START_TAG]), dt.date.fromisoformat(run.tags[RANGE_END_TAG])
        for i in range((last - first).days + 1):
            out.setdefault(first + dt.timedelta(days=i), run.run_id)
    return out


def drift_needs(refreshed: Mapping[dt.date, tuple[str, float]], first: dt.date, last: dt.date) -> dict[dt.date, float]:
    """For the rolling drift of the days first..last: each day whose trailing week holds a day
    of `refreshed` -> when the last of those refreshes ended (a drift run that started later
    read their features)."""
    out = {}
    for i in range((last - first).days + 1):
        day = first + dt.timedelta(days=i)
        ends = [end for d, (_, end) in refreshed.items() if 0 <= (day - d).days < ROLLING_DRIFT_WINDOW_DAYS]
        if ends:
            out[day] = max(ends)
    return out


def materialized_day_ranges(partitions: Iterable[str]) -> list[DayRange]:
    """Ranges of consecutive days among materialized daily partitions."""
    return day_ranges(dt.date.fromisoformat(p) for p in partitions)
