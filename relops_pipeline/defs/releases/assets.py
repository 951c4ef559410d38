"""Rollout and rollback: each release's rollout plan, each workflow's rollback runbook, and
the rollback drills that keep it practised."""

import dagster as dg

from relops_pipeline.defs.evals.partitions import releases_partitions
from relops_pipeline.defs.gates.assets import gate_thresholds, release_gate
from relops_pipeline.defs.resources import WAREHOUSE_POOL, RelopsHomeResource, WarehouseResource
from relops_pipeline.lib.markdown import md_table


@dg.asset(partitions_def=releases_partitions, deps=[release_gate, gate_thresholds], group_name="releases",
          pool=WAREHOUSE_POOL, kinds={"duckdb"})
def rollout_plan(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource):
    """How this release reaches production: stages with traffic shares and minimum durations,
    and the rollback triggers derived from the workflow's thresholds and rollout policy.

    The business meaning: the agreed path from a passed gate to full traffic, and exactly what
    makes relops pull the release back on the way.
    """
    from relops_pipeline.lib.evals.model import split_release_key
    from relops_pipeline.lib.gates.thresholds import current_thresholds
    from relops_pipeline.lib.registry.policy import rollout_plan as plan_for
    from relops_pipeline.lib.workflows import load_workflow

    workflow, version = split_release_key(context.partition_key)
    wf = load_workflow(home.home.workflows_dir, workflow)
    with warehouse.get_connection() as con:
        plan = plan_for(wf, current_thresholds(con, workflow))
    stages = md_table(["stage", "traffic %", "min minutes", "advance when"],
                      [[s["stage"], s["traffic_percent"], s["min_minutes"], s["advance_when"]] for s in plan["stages"]])
    return dg.MaterializeResult(metadata={
        "stages": dg.MetadataValue.md(stages),
        "plan": dg.MetadataValue.json(plan),
        "auto_rollback": bool(plan.get("policy", {}).get("auto_rollback", True)),
    })


# The registry is changed by ops (a person's rollout, the rollback-alert job), not computed: it
# is declared here so the lineage of a release decision runs on to it, and each change is
# reported as a materialization of the release's partition (stage, pointer seq, rollback time).
release_registry = dg.AssetSpec(
    "release_registry",
    deps=[rollout_plan, "canary_analysis"],
    partitions_def=releases_partitions,
    group_name="releases",
    kinds={"json"},
    description="What production serves: the registry's state and the pointer file the serving application reads. "
                "Each rollout step or rollback of the release is a materialization of its partition, with the stage, "
                "the pointer's seq and, for a rollback, the trigger and the time to rollback.",
)


def report_registry_change(context, workflow: str, release: str | None, metadata: dict) -> None:
    """Report a registry change of `release` as a materialization of `release_registry`."""
    from relops_pipeline.lib.evals.model import release_key

    if not release:
        return
    key = release_key(workflow, release)
    if not context.instance.has_dynamic_partition(releases_partitions.name, key):
        context.log.warning(f"{key} is not a registered release: its registry change is not reported as an asset")
        return
    context.log_event(dg.AssetMaterialization(asset_key="release_registry", partition=key, metadata=metadata))


def _workflows(home):
    from relops_pipeline.lib.workflows import list_workflows, load_workflow

    return [load_workflow(home.workflows_dir, n) for n in list_workflows(home.workflows_dir)]


@dg.asset(group_name="releases", pool=WAREHOUSE_POOL, kinds={"duckdb"}, deps=["rollback_drill"])
def rollback_runbook(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource):
    """The rollback runbook of every workflow (markdown under the home's reports/runbooks):
    live and last known good, triggers, the manual rollback commands, how to verify from
    traces, the owner, and the last drill's result and timing.

    The business meaning: what the on-call engineer follows at 3 a.m. — regenerated whenever
    the registry, the drills, the thresholds or the workflow's configuration change.
    """
    from relops_pipeline.lib.runbook import write_runbook

    meta = {}
    rows = []
    with warehouse.get_connection() as con:
        for wf in _workflows(home.home):
            out = write_runbook(con, home.home, wf)
            meta[f"runbook/{wf.name}"] = dg.MetadataValue.path(out["path"])
            rows.append([wf.name, out["live"] or "-", out["last_known_good"] or "-", out["drill"], out["inputs_hash"]])
    meta["workflows"] = dg.MetadataValue.md(md_table(["workflow", "live", "last known good", "drill", "inputs"], rows))
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion("-".join(r[4] for r in rows) or "empty"))


@dg.asset(group_name="releases", pool=WAREHOUSE_POOL, kinds={"duckdb"})
def rollback_drill(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource):
    """A rehearsed rollback of every workflow: on a sandbox copy of its registry, roll back,
    read the pointer back as the serving application would, time it, restore, record.

    The business meaning: evidence that rollback works today and how long it takes — a
    rollback that is never practised fails when it is needed.
    """
    from relops_pipeline.lib.drills import run_drill
    from relops_pipeline.lib.registry.state import get_state

    rows, meta, failed = [], {}, []
    with warehouse.get_connection() as con:
        for wf in _workflows(home.home):
            if get_state(con, wf.name).seq == 0:
                rows.append([wf.name, "n/a: never rolled out", 0.0, "-"])
                continue
            res = run_drill(con, home.home.registry_dir, wf.name, actor="relops", run_id=context.run.run_id)
            d = res.as_dict()
            rows.append([wf.name, "pass" if d["passed"] else "FAIL", round(d.get("duration_ms") or 0.0, 1),
                         ", ".join(res.failed_checks) or "-"])
            meta[f"drill_ms/{wf.name}"] = dg.MetadataValue.float(float(d.get("duration_ms") or 0.0))
            if not d["passed"]:
                failed.append(wf.name)
    meta["drills"] = dg.MetadataValue.md(md_table(["workflow", "result", "ms", "failed checks"], rows))
    if failed:
        context.log.warning(f"rollback drills failed for {', '.join(failed)}")
    return dg.MaterializeResult(metadata=meta)


@dg.asset_check(asset=rollback_drill, name="drill_fresh", description="the last drill passed within 35 days")
def drill_fresh(home: RelopsHomeResource, warehouse: WarehouseResource) -> dg.AssetCheckResult:
    """Fails when any workflow's last passing drill is older than 35 days, or its last drill failed."""
    from relops_pipeline.lib.drills import drill_status
    from relops_pipeline.lib.registry.state import get_state

    with warehouse.get_connection() as con:
        # A workflow never rolled out has no registry to roll back: nothing to drill yet.
        statuses = [drill_status(con, wf.name) for wf in _workflows(home.home) if get_state(con, wf.name).seq > 0]
    bad = [s for s in statuses if not s["ok"]]
    return dg.AssetCheckResult(
        passed=not bad,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(s["message"] for s in bad) or "every workflow's rollback was drilled recently",
        metadata={"statuses": dg.MetadataValue.json({s["workflow"]: s["status"] for s in statuses})},
    )


@dg.asset(partitions_def=releases_partitions, deps=[release_gate], group_name="releases", pool=WAREHOUSE_POOL,
          kinds={"duckdb"}, check_specs=[dg.AssetCheckSpec("canary_healthy", asset="canary_analysis",
                                                           description="the canary is no worse than the baseline serving at the same time")])
def canary_analysis(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource):
    """The canary's production requests judged against the live release's requests in the same
    intervals (Kayenta style): per metric a rank, tail or proportion test with an interval and
    a tolerance, critical metrics that veto, and a verdict that fails only after consecutive
    failing intervals.

    The business meaning: whether the release that passed its gate also holds up on real
    traffic — a failed check here rolls it back where the policy allows.
    """
    from relops_pipeline.lib.canary.service import analyse_canary
    from relops_pipeline.lib.drift.features import compute_trace_features
    from relops_pipeline.lib.evals.model import split_release_key
    from relops_pipeline.lib.registry.state import get_state
    from relops_pipeline.lib.workflows import load_workflow

    key = context.partition_key
    workflow, version = split_release_key(key)
    wf = load_workflow(home.home.workflows_dir, workflow)
    with warehouse.get_connection() as con:
        state = get_state(con, workflow)
        baseline = state.live if state.live and state.live != version else None
        window = con.execute("SELECT min(start_time)::DATE, max(start_time)::DATE FROM spans WHERE workflow = ? AND release = ?",
                             [workflow, version]).fetchall()[0]
        if window[0] is not None:  # today's requests too: features are recomputed per whole day
            import datetime as _dt

            compute_trace_features(con, window[1], window[1] + _dt.timedelta(days=1))
        out = analyse_canary(con, home.home, wf, version, baseline=baseline, run_id=context.run.run_id)
    result = out["result"]
    failing = [m for iv in result.intervals for m in iv.metrics if m.classification == "High"] if result.verdict == "fail" else []
    return dg.MaterializeResult(
        metadata={
            "verdict": result.verdict,
            "score": dg.MetadataValue.float(float(result.score)) if result.score is not None else "none",
            "baseline": baseline or "every other release",
            "intervals": dg.MetadataValue.int(out["intervals"]),
            "report_html": dg.MetadataValue.path(out["report_html"]),
            "report": dg.MetadataValue.md(open(out["report_md"], encoding="utf-8").read()[:20000]),
            "release_key": key,
        },
        check_results=[dg.AssetCheckResult(
            check_name="canary_healthy", passed=result.verdict != "fail", severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(result.reasons) or result.verdict,
            metadata={"verdict": result.verdict, "release_key": key,
                      "consecutive_failures": dg.MetadataValue.int(result.consecutive_failures),
                      "failing_metrics": ", ".join(sorted({m.name for m in failing})) or "none"},
        )],
    )
