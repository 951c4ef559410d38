"""The cadence: the weekly stability memo and review sample; the monthly proposals (suite cases
from incidents, threshold ratchets, alert calibration) and the readiness review.

Nothing here changes a suite, a threshold or an alert rule: proposals are drafts that a person
accepts (`relops suite accept`, `relops thresholds accept`, `relops alerts accept`).
"""

from datetime import UTC, datetime

import dagster as dg

from relops_pipeline.defs.drift.assets import weekly_drift
from relops_pipeline.defs.evals.assets import eval_suites
from relops_pipeline.defs.gates.assets import release_gate
from relops_pipeline.defs.ingest.assets import daily_signals, trace_features
from relops_pipeline.defs.partitions import weekly_partitions
from relops_pipeline.defs.releases.assets import rollback_drill
from relops_pipeline.defs.resources import WAREHOUSE_POOL, RelopsHomeResource, WarehouseResource
from relops_pipeline.lib.markdown import md_table


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _workflows(home):
    from relops_pipeline.lib.workflows import list_workflows, load_workflow

    return [load_workflow(home.workflows_dir, n) for n in list_workflows(home.workflows_dir)]


def _week(context: dg.AssetExecutionContext):
    return datetime.fromisoformat(context.partition_key).date()


@dg.asset(partitions_def=weekly_partitions, deps=[weekly_drift, daily_signals, trace_features], group_name="cadence",
          pool=WAREHOUSE_POOL, kinds={"duckdb"})
def stability_memo(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource):
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
        out = memo_for_week(con, home.home, _week(context), now=_now(), dagster_run_id=context.run.run_id)
    memo = out["memo"]
    meta = {
        "memo_md": dg.MetadataValue.path(str(out["md_path"])),
        "memo_html": dg.MetadataValue.path(str(out["html_path"])),
        "memo": dg.MetadataValue.md(out["markdown"][:60000]),
        "ops_window": f"{out['ops_from']:%Y-%m-%d %H:%M} .. {out['ops_to']:%Y-%m-%d %H:%M} UTC",
        "recommendations": dg.MetadataValue.int(len(memo.get("recommendations", []))),
    }
    for wf in memo.get("workflows", []):
        name = wf["workflow"]
        total = (wf.get("signals") or {}).get("total") or {}
        for key in ("traces", "error_rate", "latency_p95_ms", "cost_per_trace_usd"):
            value = (total.get("this_week") or {}).get(key)
            if isinstance(value, (int, float)):
                meta[f"{key}/{name}"] = dg.MetadataValue.float(float(value))
    return dg.MaterializeResult(metadata=meta)


@dg.asset(partitions_def=weekly_partitions, deps=[stability_memo, trace_features], group_name="cadence",
          pool=WAREHOUSE_POOL, kinds={"duckdb"})
def review_sample(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource):
    """The week's rotating quality sample: production traces stratified over workflows,
    topics and releases, written as a review sheet (CSV to fill in, HTML to read) with stable
    sample ids.

    The business meaning: a person looks at real answers every week; their labels come back
    with `relops review import` as scores on those traces, and failures open incidents.
    """
    from relops_pipeline.lib.review import select_review_sample, write_review_sheet

    week = _week(context)
    with warehouse.get_connection() as con:
        samples = select_review_sample(con, week)
        csv_path, html_path = write_review_sheet(con, home.home, week, samples)
    rows: dict[tuple, int] = {}
    for s in samples:
        rows[(s["workflow"], s["release"])] = rows.get((s["workflow"], s["release"]), 0) + 1
    return dg.MaterializeResult(metadata={
        "traces": dg.MetadataValue.int(len(samples)),
        "sheet_csv": dg.MetadataValue.path(str(csv_path)),
        "sheet_html": dg.MetadataValue.path(str(html_path)),
        "strata": dg.MetadataValue.md(md_table(["workflow", "release", "traces"], [[*k, v] for k, v in sorted(rows.items())])
                                      if rows else "no traffic this week"),
    })


def _propose(context, home: RelopsHomeResource, warehouse: WarehouseResource, kind: str) -> dg.MaterializeResult:
    from relops_pipeline.lib.cadence import make_proposals

    with warehouse.get_connection() as con:
        made = make_proposals(con, home.home, kind, now=_now(), dagster_run_id=context.run.run_id)
    for workflow, p in made:
        context.log.info(f"{workflow}: " + (f"{p['proposal_id']} ({p['status']}): {p['title']}" if p else "nothing to propose"))
    return dg.MaterializeResult(metadata=_proposal_metadata(made))


def _proposal_metadata(made: list[tuple[str, dict | None]]) -> dict:
    rows, meta = [], {}
    for workflow, p in made:
        if p is None:
            rows.append([workflow, "-", "nothing to propose", "-"])
            continue
        rows.append([workflow, p["proposal_id"], p["title"], p["status"]])
        if p.get("report_path"):
            meta[f"report/{workflow}"] = dg.MetadataValue.path(p["report_path"])
    meta["proposals"] = dg.MetadataValue.md(md_table(["workflow", "proposal", "title", "status"], rows))
    meta["drafts"] = dg.MetadataValue.int(sum(1 for _w, p in made if p is not None and p["status"] == "draft"))
    return meta


@dg.asset(deps=[eval_suites], group_name="cadence", pool=WAREHOUSE_POOL, kinds={"duckdb"})
def suite_proposals(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource):
    """Proposed test cases from incidents, as a draft suite version per workflow: the input of
    each incident trace, the bad output, provenance incident:<id>, a suggested expectation and
    whether it should be must-pass.

    The business meaning: the eval suite learns from production failures. Nothing changes
    until a maintainer accepts the draft (`relops suite accept`), which makes a new suite
    version that the eval backfill then runs for every release.
    """
    return _propose(context, home, warehouse, "suite")


@dg.asset(deps=[release_gate], group_name="cadence", pool=WAREHOUSE_POOL, kinds={"duckdb"})
def threshold_proposals(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource):
    """Ratchet proposals: tighter gate floors where the recent releases were confidently above
    them, each with a backtest of which past releases it would have blocked or sent to review.

    The business meaning: the quality bar rises as a workflow stabilises, never silently and
    never down without a stated reason; `relops thresholds accept` makes the new version.
    """
    return _propose(context, home, warehouse, "thresholds")


@dg.asset(deps=[daily_signals, "signal_rule_alerts"], group_name="cadence", pool=WAREHOUSE_POOL, kinds={"duckdb"})
def alert_calibration(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource):
    """Alert calibration: the history of signals replayed through each workflow's alert rules
    — alerts per rule, which preceded a real incident or rollback, which were noise — and a
    proposal that keeps noise within budget while still catching the past incidents.

    The business meaning: alerts people trust. `relops alerts accept` makes the new rules
    version.
    """
    return _propose(context, home, warehouse, "alert_rules")


@dg.asset(deps=[eval_suites, rollback_drill, stability_memo], group_name="cadence", pool=WAREHOUSE_POOL,
          kinds={"duckdb"})
def readiness_report(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource):
    """The readiness review of every workflow: a runnable suite with must-pass cases,
    telemetry that carries release identifiers, a rollout process with rollback triggers,
    thresholds, an owner and a review cadence — with the gaps as a first month's plan.

    The business meaning: what a workflow still lacks before relops can keep its releases
    safe, ordered by risk.
    """
    from relops_pipeline.lib.cadence import readiness_for

    rows, meta = [], {}
    with warehouse.get_connection() as con:
        for wf in _workflows(home.home):
            out = readiness_for(con, home.home, wf.name, dagster_run_id=context.run.run_id)
            res = out["result"]
            gaps = [c for c in res["checks"] if c["status"] != "ok"]
            rows.append([wf.name, res["status"], len(gaps), "; ".join(c["name"] for c in gaps[:4]) or "-"])
            meta[f"report/{wf.name}"] = dg.MetadataValue.path(str(out["path"]))
            meta[f"gaps/{wf.name}"] = dg.MetadataValue.int(len(gaps))
    meta["workflows"] = dg.MetadataValue.md(md_table(["workflow", "status", "gaps", "first gaps"], rows))
    return dg.MaterializeResult(metadata=meta)
