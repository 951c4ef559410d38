"""Typed results of the releases domain as materialization metadata and check results: the
rollout plan, the canary analysis (lib/canary/service.py: CanaryOutcome), the runbooks
(lib/runbook.py: RunbookWritten), the drills (lib/drills.py: WorkflowDrill), and the registry
changes of the rollback-alert and registry-change ops (lib/registry: FailureHandled,
TransitionResult)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from relops_pipeline.lib import rounding
from relops_pipeline.lib.canary.service import CanaryOutcome
from relops_pipeline.lib.drills import WorkflowDrill
from relops_pipeline.lib.evals.model import split_release_key
from relops_pipeline.lib.home import Home
from relops_pipeline.lib.markdown import md_table
from relops_pipeline.lib.registry.respond import FailureHandled, FailureResponse
from relops_pipeline.lib.registry.rollout import TransitionResult
from relops_pipeline.lib.report_links import release_url, report_url
from relops_pipeline.lib.runbook import RunbookWritten

# How much of the canary's markdown report the materialization shows.
CANARY_REPORT_CHARS = 20000


def release_page(home: Home, release_key: str) -> dg.MetadataValue:
    """The link to a release's page (relops serve): its whole story."""
    workflow, version = split_release_key(release_key)
    return dg.MetadataValue.url(release_url(home, workflow, version))


def rollout_plan_result(plan: Mapping[str, Any], home: Home, release_key: str) -> dg.MaterializeResult:
    """A release's rollout plan (lib/registry/policy.rollout_plan): its stages as a table."""
    stages = md_table(["stage", "traffic %", "min minutes", "advance when"],
                      [[s["stage"], s["traffic_percent"], s["min_minutes"], s["advance_when"]] for s in plan["stages"]])
    return dg.MaterializeResult(metadata={
        "stages": dg.MetadataValue.md(stages),
        "plan": dg.MetadataValue.json(dict(plan)),
        "auto_rollback": dg.MetadataValue.bool(bool(plan.get("policy", {}).get("auto_rollback", True))),
        "release_page": release_page(home, release_key),
    })


def canary_result(outcome: CanaryOutcome, release_key: str, home: Home) -> dg.MaterializeResult:
    """The canary's verdict and reports as metadata, and the canary_healthy check (it fails only on
    a failed canary; an inconclusive one passes the check and says what a decision still needs)."""
    result = outcome.result
    with open(outcome.report_md, encoding="utf-8") as f:
        report = f.read()[:CANARY_REPORT_CHARS]
    metadata: dict[str, dg.MetadataValue] = {
        "verdict": dg.MetadataValue.text(result.verdict),
        "score": dg.MetadataValue.float(rounding.rate(result.score)) if result.score is not None else dg.MetadataValue.text("none"),
        "baseline": dg.MetadataValue.text(outcome.baseline or "every other release"),
        "intervals": dg.MetadataValue.int(outcome.intervals),
        "looks": dg.MetadataValue.int(len(result.looks)),
        "canary_requests": dg.MetadataValue.int(result.looks[-1].n_canary if result.looks else 0),
        "report_html": dg.MetadataValue.url(report_url(home, outcome.report_html)),
        "report_md": dg.MetadataValue.url(report_url(home, outcome.report_md)),
        "release_page": release_page(home, release_key),
        "report": dg.MetadataValue.md(report),
        "release_key": dg.MetadataValue.text(release_key),
    }
    if result.needs:
        metadata["needs"] = dg.MetadataValue.text(result.needs["text"])
    check = dg.AssetCheckResult(
        check_name="canary_healthy", passed=result.verdict != "fail", severity=dg.AssetCheckSeverity.ERROR,
        description=f"{release_key}: " + ("; ".join(result.reasons) or result.verdict),
        metadata={"verdict": result.verdict, "release_key": release_key,
                  "consecutive_failures": dg.MetadataValue.int(result.consecutive_failures),
                  "failing_metrics": ", ".join(outcome.failing_metrics) or "none",
                  "needs": (result.needs or {}).get("text") or "nothing: decided"},
    )
    return dg.MaterializeResult(metadata=metadata, check_results=[check])


def runbooks_result(written: Sequence[RunbookWritten], home: Home) -> dg.MaterializeResult:
    """Each workflow's runbook as a link, a table of them, and a data version from their inputs."""
    metadata: dict[str, dg.MetadataValue] = {f"runbook/{r.workflow}": dg.MetadataValue.url(report_url(home, r.path))
                                             for r in written}
    rows = [[r.workflow, r.live or "-", r.last_known_good or "-", r.drill, r.inputs_hash] for r in written]
    metadata["workflows"] = dg.MetadataValue.md(md_table(["workflow", "live", "last known good", "drill", "inputs"], rows))
    return dg.MaterializeResult(metadata=metadata,
                                data_version=dg.DataVersion("-".join(r.inputs_hash for r in written) or "empty"))


def drills_result(round_: Sequence[WorkflowDrill]) -> dg.MaterializeResult:
    """Each workflow's drill (or why there was none) as a table, and its flip time."""
    rows: list[list[Any]] = []
    metadata: dict[str, dg.MetadataValue] = {}
    for d in round_:
        if d.drill is None:
            rows.append([d.workflow, "n/a: never rolled out", 0.0, "-"])
            continue
        ms = d.drill.duration_ms or 0.0
        rows.append([d.workflow, "pass" if d.drill.passed else "FAIL", round(ms, 1), ", ".join(d.drill.failed_checks) or "-"])
        metadata[f"drill_ms/{d.workflow}"] = dg.MetadataValue.float(round(float(ms), 1))  # a flip takes well under a millisecond
    metadata["drills"] = dg.MetadataValue.md(md_table(["workflow", "result", "ms", "failed checks"], rows))
    return dg.MaterializeResult(metadata=metadata)


def drill_fresh_result(statuses: Sequence[Mapping[str, Any]]) -> dg.AssetCheckResult:
    """The drill_fresh check from the drill status of each rolled-out workflow (lib.drills.drill_status)."""
    bad = [s for s in statuses if not s["ok"]]
    return dg.AssetCheckResult(
        passed=not bad,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(s["message"] for s in bad) or "every workflow's rollback was drilled recently",
        metadata={"statuses": dg.MetadataValue.json({s["workflow"]: s["status"] for s in statuses})},
    )


def rollback_registry_change(response: FailureResponse) -> dict[str, dg.MetadataValue]:
    """The metadata of a rollback's release_registry materialization."""
    rb = response.rollback
    metadata: dict[str, dg.MetadataValue] = {
        "action": dg.MetadataValue.text("rollback"),
        "trigger": dg.MetadataValue.text(response.trigger),
        "to": dg.MetadataValue.text((rb.to_release if rb else None) or response.live_after or "-"),
        "live": dg.MetadataValue.text(response.live_after or "-"),
        "incident_id": dg.MetadataValue.text(response.incident_id or "-"),
    }
    if response.time_to_rollback_s is not None:
        metadata["time_to_rollback_s"] = dg.MetadataValue.float(rounding.seconds(response.time_to_rollback_s))
    return metadata


def failure_output_metadata(handled: FailureHandled, *, release: str | None) -> dict[str, dg.MetadataValue]:
    """The rollback-alert op's output metadata. `release`: the release the failure named."""
    r = handled.response
    metadata: dict[str, dg.MetadataValue] = {
        "decision": dg.MetadataValue.text(r.decision),
        "workflow": dg.MetadataValue.text(r.workflow),
        "release": dg.MetadataValue.text(release or "-"),
        "trigger": dg.MetadataValue.text(r.trigger),
    }
    if r.time_to_rollback_s is not None:
        metadata["time_to_rollback_s"] = dg.MetadataValue.float(rounding.seconds(r.time_to_rollback_s))
    if r.incident_id:
        metadata["incident_id"] = dg.MetadataValue.text(r.incident_id)
    return metadata


def _routing(res: TransitionResult) -> dict[str, dg.MetadataValue]:
    after = res.after
    return {"live": dg.MetadataValue.text(after.live or "-"), "canary": dg.MetadataValue.text(after.canary or "-"),
            "last_known_good": dg.MetadataValue.text(after.last_known_good or "-")}


def transition_registry_change(res: TransitionResult, *, stage: str, actor: str) -> dict[str, dg.MetadataValue]:
    """The metadata of a rollout step's release_registry materialization."""
    return {"action": dg.MetadataValue.text(stage), **_routing(res), "seq": dg.MetadataValue.int(res.after.seq),
            "by": dg.MetadataValue.text(actor), "override": dg.MetadataValue.bool(bool(res.override))}


def transition_output_metadata(res: TransitionResult, *, release: str, stage: str) -> dict[str, dg.MetadataValue]:
    """The registry-change op's output metadata."""
    return {"workflow": dg.MetadataValue.text(res.workflow), "release": dg.MetadataValue.text(release),
            "stage": dg.MetadataValue.text(stage), **_routing(res), "seq": dg.MetadataValue.int(res.after.seq)}
