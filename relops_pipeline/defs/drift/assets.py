"""Production drift: the trailing 7 days (daily) and each complete week against the workflow's
reference window, with checks whose severities come from each workflow's drift config."""

import dagster as dg

from relops_pipeline.defs.beta import with_beta_parameters
from relops_pipeline.defs.ingest.assets import SINGLE_RUN, _window, trace_features
from relops_pipeline.defs.partitions import daily_partitions, weekly_partitions
from relops_pipeline.defs.resources import WAREHOUSE_POOL, RelopsHomeResource, WarehouseResource
from relops_pipeline.lib.markdown import md_table

DRIFT_CHECKS = (
    ("critical_columns_stable", "no critical column (by default topic and input length) drifted in any workflow"),
    ("drifted_share_within_limit", "the share of drifted columns stays under each workflow's limit"),
)
SEVERITY = {"ERROR": dg.AssetCheckSeverity.ERROR, "WARN": dg.AssetCheckSeverity.WARN}


def drift_outcome(summaries: list[dict], asset: str) -> tuple[dict, list[dg.AssetCheckResult]]:
    """Metadata and check results for one drift materialization, from its workflow-scope
    summaries (dicts as returned by lib.drift.run.run_drift_period)."""
    meta: dict = {}
    rows = []
    critical_fail, share_fail, no_verdict = [], [], []
    for s in summaries:
        if s["release"] != "*":
            continue
        wf = s["workflow"]
        rows.append([s["period_start"], wf, s["status"], s["columns_drifted"], s["columns_tested"],
                     "-" if s["drifted_share"] is None else f"{s['drifted_share']:.2f}",
                     ", ".join(s["critical_drifted"]) or "-", s["cur_rows"], s["ref_rows"]])
        if s["status"] == "insufficient":
            no_verdict.append(wf)
            continue
        meta[f"drifted_share/{wf}"] = dg.MetadataValue.float(float(s["drifted_share"] or 0.0))
        meta[f"columns_drifted/{wf}"] = dg.MetadataValue.int(int(s["columns_drifted"]))
        meta[f"traces/{wf}"] = dg.MetadataValue.int(int(s["cur_rows"]))
        for col in s["columns"]:
            if col["score"] is not None and col["column"] in s["critical_columns"]:
                meta[f"score/{wf}/{col['column']}"] = dg.MetadataValue.float(float(col["score"]))
        if s.get("report_path"):
            meta[f"report/{wf}"] = dg.MetadataValue.path(s["report_path"])
        failing = {"workflow": wf, "release": s.get("dominant_release") or "*", "period_start": str(s["period_start"])}
        if s["critical_drifted"]:
            critical_fail.append({**failing, "severity": s["critical_severity"],
                                  "reason": f"critical columns drifted: {', '.join(s['critical_drifted'])}"})
        if s["drifted_share"] is not None and s["drifted_share"] > s["drifted_share_warn"]:
            share_fail.append({**failing, "severity": s["share_severity"],
                               "reason": f"{s['columns_drifted']} of {s['columns_tested']} columns drifted "
                                         f"(share {s['drifted_share']:.2f} > {s['drifted_share_warn']:.2f})"})
    meta["summary"] = dg.MetadataValue.md(md_table(
        ["period", "workflow", "status", "drifted", "tested", "share", "critical drifted", "traces", "reference traces"], rows)
        if rows else "no workflow had traces in this window")
    if no_verdict:
        meta["insufficient_data"] = ", ".join(no_verdict)

    def check(name: str, failing: list[dict]) -> dg.AssetCheckResult:
        worst = "ERROR" if any(f["severity"] == "ERROR" for f in failing) else "WARN"
        return dg.AssetCheckResult(
            asset_key=asset,
            check_name=name,
            passed=not failing,
            severity=SEVERITY[worst],
            description="; ".join(f"{f['workflow']}: {f['reason']}" for f in failing)
            or ("no verdict for " + ", ".join(no_verdict) + " (insufficient data)" if no_verdict else "no drift"),
            metadata={
                "failing": dg.MetadataValue.json(failing),
                "insufficient_data": ", ".join(no_verdict) or "none",
            },
        )

    def latest(failing: list[dict]) -> list[dict]:
        # A run over many days reports each workflow once: its latest failing window.
        by_wf: dict[str, dict] = {}
        for f in failing:
            if f["workflow"] not in by_wf or f["period_start"] >= by_wf[f["workflow"]]["period_start"]:
                by_wf[f["workflow"]] = f
        return list(by_wf.values())

    return meta, [check("critical_columns_stable", latest(critical_fail)),
                  check("drifted_share_within_limit", latest(share_fail))]


def _check_specs(asset: str) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(name, asset=asset, description=desc) for name, desc in DRIFT_CHECKS]


def _materialize(context, home, warehouse, granularity: str, asset: str, *, reports: bool, days: int | None):
    from relops_pipeline.lib.drift.run import run_drift_period

    start, end = _window(context)
    with warehouse.get_connection() as con:
        summaries = run_drift_period(
            con, home.home, granularity=granularity, start=start.date(), end=end.date(),
            run_id=context.run.run_id, reports=reports, window_days=days, log=context.log.info,
        )
    meta, checks = drift_outcome(summaries, asset)
    meta["window"] = dg.MetadataValue.text(f"{start:%Y-%m-%d} .. {end:%Y-%m-%d} (end exclusive)")
    return dg.MaterializeResult(metadata=meta, check_results=checks)


@with_beta_parameters(
    dg.asset,
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    pool=WAREHOUSE_POOL,
    deps=[dg.AssetDep(trace_features, partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-6))],
    group_name="drift",
    kinds={"duckdb", "evidently"},
    check_specs=_check_specs("rolling_drift"),
)
def rolling_drift(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource):
    """Per workflow and release: the trailing 7 days of production requests against the
    workflow's reference window — per column the method, score, threshold and verdict.

    The business meaning: an early warning, refreshed every day as traces arrive, that what
    users send or what the workflow answers has moved away from what it was tuned and
    evaluated on. Too little data is "insufficient", never a verdict.
    """
    return _materialize(context, home, warehouse, "rolling", "rolling_drift", reports=False, days=7)


@dg.asset(
    partitions_def=weekly_partitions,
    pool=WAREHOUSE_POOL,
    deps=[trace_features],
    group_name="drift",
    kinds={"duckdb", "evidently"},
    check_specs=_check_specs("weekly_drift"),
)
def weekly_drift(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource):
    """Per workflow and release: one complete Monday-to-Sunday week of production requests
    against the workflow's reference window, with an Evidently HTML report per workflow.

    The business meaning: the weekly drift finding the stability memo and the on-call
    reviewer read — which inputs and behaviours moved, by how much, on how many requests.
    """
    return _materialize(context, home, warehouse, "weekly", "weekly_drift", reports=True, days=None)


__all__ = ["rolling_drift", "weekly_drift"]
