"""The cadence: the weekly stability memo and review sample; the monthly proposals (suite cases
from incidents, threshold ratchets, alert calibration) and the readiness review.

Nothing here changes a suite, a threshold or an alert rule: proposals are drafts that a person
accepts (`relops suite accept`, `relops thresholds accept`, `relops alerts accept`).
"""

from datetime import UTC, date, datetime

import dagster as dg

from relops_pipeline.defs.drift.assets import weekly_drift
from relops_pipeline.defs.evals.assets import eval_suites
from relops_pipeline.defs.gates.assets import release_gate
from relops_pipeline.defs.ingest.assets import daily_signals, trace_features
from relops_pipeline.defs.maintenance.metadata import (
    proposal_log_lines,
    proposals_result,
    readiness_report_result,
    review_sample_result,
    stability_memo_result,
)
from relops_pipeline.defs.partitions import weekly_partitions
from relops_pipeline.defs.releases.assets import rollback_drill
from relops_pipeline.defs.resources import WAREHOUSE_POOL, RelopsHomeResource, WarehouseResource


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _week(context: dg.AssetExecutionContext) -> date:
    return datetime.fromisoformat(context.partition_key).date()


@dg.asset(partitions_def=weekly_partitions, deps=[weekly_drift, daily_signals, trace_features], group_name="cadence",
          pool=WAREHOUSE_POOL, kinds={"duckdb"})
def stability_memo(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The weekly stability memo (markdown and self-contained HTML under reports/memos):
    per workflow, signals week over week per release, drift findings, gates and decisions,
    rollouts, rollbacks and time to rollback, incidents, alerts, and recommended fixes ranked
    by impact, each tied to its evidence.

    The business meaning: what the weekly reviewer reads to know whether production is stable
    and what to do next. Signals are by trace time; release operations are those recorded
    since the previous memo was written.
    """
    from relops_pipeline.lib.cadence import memo_for_week

    with warehouse.get_connection() as con:
        written = memo_for_week(con, home.home, _week(context), now=_now(), dagster_run_id=context.run.run_id)
    return stability_memo_result(written)


@dg.asset(partitions_def=weekly_partitions, deps=[stability_memo, trace_features], group_name="cadence",
          pool=WAREHOUSE_POOL, kinds={"duckdb"})
def review_sample(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The week's rotating quality sample: production traces stratified over workflows,
    topics and releases, written as a review sheet (CSV to fill in, HTML to read) with stable
    sample ids.

    The business meaning: a person looks at real answers every week; their labels come back
    with `relops review import` as scores on those traces, and failures open incidents.
    """
    from relops_pipeline.lib.cadence import draw_review_sample

    with warehouse.get_connection() as con:
        drawn = draw_review_sample(con, home.home, _week(context))
    return review_sample_result(drawn)


def _propose(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource,
             kind: str) -> dg.MaterializeResult:
    from relops_pipeline.lib.cadence import make_proposals

    with warehouse.get_connection() as con:
        made = make_proposals(con, home.home, kind, now=_now(), dagster_run_id=context.run.run_id)
    for line in proposal_log_lines(made):
        context.log.info(line)
    return proposals_result(made)


@dg.asset(deps=[eval_suites], group_name="cadence", pool=WAREHOUSE_POOL, kinds={"duckdb"})
def suite_proposals(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Proposed test cases from incidents, as a draft suite version per workflow: the input of
    each incident trace, the bad output, provenance incident:<id>, a suggested expectation and
    whether it should be must-pass.

    The business meaning: the eval suite learns from production failures. Nothing changes
    until a maintainer accepts the draft (`relops suite accept`), which makes a new suite
    version that the eval backfill then runs for every release.
    """
    return _propose(context, home, warehouse, "suite")


@dg.asset(deps=[release_gate], group_name="cadence", pool=WAREHOUSE_POOL, kinds={"duckdb"})
def threshold_proposals(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Ratchet proposals: tighter gate floors where the recent releases were confidently above
    them, each with a backtest of which past releases it would have blocked or sent to review.

    The business meaning: the quality bar rises as a workflow stabilises, never silently and
    never down without a stated reason; `relops thresholds accept` makes the new version.
    """
    return _propose(context, home, warehouse, "thresholds")


@dg.asset(deps=[daily_signals, "signal_rule_alerts"], group_name="cadence", pool=WAREHOUSE_POOL, kinds={"duckdb"})
def alert_calibration(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Alert calibration: the history of signals replayed through each workflow's alert rules
    — alerts per rule, which preceded a real incident or rollback, which were noise — and a
    proposal that keeps noise within budget while still catching the past incidents.

    The business meaning: alerts people trust. `relops alerts accept` makes the new rules
    version.
    """
    return _propose(context, home, warehouse, "alert_rules")


@dg.asset(deps=[eval_suites, rollback_drill, stability_memo], group_name="cadence", pool=WAREHOUSE_POOL,
          kinds={"duckdb"})
def readiness_report(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """The readiness review of every workflow: a runnable suite with must-pass cases,
    telemetry that carries release identifiers, a rollout process with rollback triggers,
    thresholds, an owner and a review cadence — with the gaps as a first month's plan.

    The business meaning: what a workflow still lacks before relops can keep its releases
    safe, ordered by risk.
    """
    from relops_pipeline.lib.cadence import review_all_readiness

    with warehouse.get_connection() as con:
        reviewed = review_all_readiness(con, home.home, dagster_run_id=context.run.run_id)
    return readiness_report_result(reviewed)
