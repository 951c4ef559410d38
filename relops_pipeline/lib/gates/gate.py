"""Evaluating a release gate end to end: pick the runs, decide, write the reports, record.

Called by the `release_gate` asset; pure of Dagster so it can be tested and reasoned about
on its own.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime

import duckdb

from relops_pipeline.lib.evals.model import SampleRequest, release_key, split_release_key
from relops_pipeline.lib.gates.model import GateResult
from relops_pipeline.lib.home import Home


@dataclasses.dataclass(frozen=True)
class GateReports:
    """The report files of one decision."""

    md: str
    html: str
    json: str


@dataclasses.dataclass(frozen=True)
class GateOutcome:
    """One release's gate evaluated and recorded: the decision with its evidence, the report
    files and pull-request comment, and what was compared under which thresholds."""

    result: GateResult
    reports: GateReports
    pr_comment: str
    gate_id: str
    candidate_run: str
    baseline_run: str | None
    suite_version: str
    thresholds_version: int


def _resampler(home: Home, workflow, version: str, suite_version: str, start_sample: int) -> Callable[[str, int], list[bool]] | None:
    """Extra samples of one case from the candidate's own runner, scored like the run."""
    from relops_pipeline.lib.evals.manifests import load_manifest
    from relops_pipeline.lib.evals.runners import build_runner
    from relops_pipeline.lib.evals.scorers import build_scorers, score_sample
    from relops_pipeline.lib.evals.suites import list_suite_versions

    manifest_path = home.root / "releases" / workflow.name / f"{version}.yaml"
    if not manifest_path.exists():
        return None
    suite = next((s for s in list_suite_versions(home.root / "suites", workflow.suite_name) if s.version == suite_version), None)
    if suite is None:
        return None
    manifest = load_manifest(manifest_path)
    config = dict(workflow.runner)
    if "file" in config:
        config["file"] = str(config["file"]).replace("{workflow}", workflow.name).replace("{version}", version)
    runner = build_runner(config, base_dir=home.root)
    scorers = build_scorers(workflow.scorers)

    def resample(case_id: str, n: int) -> list[bool]:
        case = suite.case(case_id)
        base = zlib.crc32(f"resample:{case_id}".encode())
        requests = [SampleRequest(case=case, sample=start_sample + i, seed=(base + 104729 * i) & 0x7FFFFFFF) for i in range(n)]
        out = []
        for r in runner.run(manifest, requests):
            scores = score_sample(scorers, case, r)
            out.append(r.error is None and bool(scores) and all(s.passed for s in scores))
        return out

    return resample


def evaluate_gate(
    *,
    home: Home,
    connection: Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]],
    key: str,
    baseline: str | None = None,
    suite_version: str | None = None,
    dagster_run_id: str | None = None,
    log: Callable[[str], None] = lambda msg: None,
    seed: int = 20260101,
) -> GateOutcome:
    """Decide one release's gate. `connection` opens the warehouse (the caller's resource, with
    its lock handling); it is opened twice, briefly: the decision's re-samples run with it closed."""
    from relops_pipeline.lib.evals.store import error_causes, get_release
    from relops_pipeline.lib.gates.decision import decide
    from relops_pipeline.lib.gates.report import render_pr_comment, write_reports
    from relops_pipeline.lib.gates.service import default_baseline, latest_eval_run, record_decision, thresholds_in_force
    from relops_pipeline.lib.gates.stats import run_frame
    from relops_pipeline.lib.workflows import load_workflow

    workflow_name, version = split_release_key(key)
    wf = load_workflow(home.workflows_dir, workflow_name)
    with connection() as con:
        thresholds = thresholds_in_force(con, key, wf.name)
        candidate = latest_eval_run(con, key, suite_version)
        if candidate is None:
            raise ValueError(
                f"{key} has no eval run{' on suite ' + suite_version if suite_version else ''}: run `relops eval {workflow_name} {version}`"
            )
        suite = candidate.suite_version
        live = _live_version(home, wf.name)
        if baseline and release_key(wf.name, baseline) == key:
            raise ValueError(f"--baseline {baseline} is the release being gated: a release cannot be its own baseline")
        base_version = baseline or default_baseline(con, wf.name, key, live)
        # An invalid baseline run (too many errored samples, scored 0) would flatter the candidate.
        base_run = latest_eval_run(con, release_key(wf.name, base_version), suite, valid_only=True) if base_version else None
        if base_version and base_run is None:
            log(
                f"baseline {base_version} has no valid eval run on suite {suite}: the gate cannot compare "
                f"(run `relops eval backfill --workflow {wf.name}`)"
            )
        candidate_df = run_frame(con, candidate.eval_run_id)
        baseline_df = run_frame(con, base_run.eval_run_id) if base_run else None
        must_pass = set(candidate_df.loc[candidate_df["must_pass"].astype(bool), "case_id"].unique())
        resample = None
        if str(candidate.source).startswith("runner:"):
            resample = _resampler(home, wf, version, suite, int(candidate.samples_per_case or 1))
        release = get_release(con, key)
        diff = release.diff if release is not None and release.manifest_known else None
        # The top error causes of the candidate run: an invalid run's reasons name them.
        causes = error_causes(con, candidate.eval_run_id, candidate.samples) if candidate.errors else []
        evidence = {
            "candidate_eval_run_id": candidate.eval_run_id,
            "baseline_eval_run_id": base_run.eval_run_id if base_run else None,
            "suite_version": suite,
            "thresholds_version": thresholds.version,
            "thresholds": {
                "version": thresholds.version,
                "author": thresholds.author,
                "reason": thresholds.reason,
                "confidence": thresholds.confidence,
                "latency_p95_budget_ms": thresholds.latency_p95_budget_ms,
                "cost_per_sample_budget_usd": thresholds.cost_per_sample_budget_usd,
            },
            "candidate_source": candidate.source,
            "candidate_errors": {
                "valid": bool(candidate.valid),
                "invalid_reason": candidate.invalid_reason,
                "samples": candidate.samples,
                "errors": candidate.errors,
                "top_causes": [{"cause": c.cause, "count": c.count, "samples": c.samples} for c in causes],
            },
            "baseline_chosen_by": "--baseline"
            if baseline
            else ("live release" if live and base_version == live else "last releasable release"),
            "dagster_run_id": dagster_run_id,
        }
    # The decision (with must-pass re-samples through the runner, which may be slow) runs with
    # the warehouse closed, so other writers are not kept waiting on DuckDB's lock.
    result = decide(
        candidate_df,
        baseline_df,
        thresholds,
        must_pass_cases=must_pass,
        resample=resample,
        run_valid=bool(candidate.valid),
        invalid_reason=candidate.invalid_reason,
        error_causes=[c.text() for c in causes],
        workflow=wf.name,
        version=version,
        baseline_version=base_version if base_run else None,
        evidence=evidence,
        diff=diff,
        seed=seed,
    )
    if base_version and base_run is None:
        result.reasons.append(f"baseline {base_version} has no valid eval run on suite {suite}")
    # One set of report files per decision: a later gate of the same release never rewrites an earlier one.
    out_dir = home.reports_dir / "gates" / wf.name / version
    paths = write_reports(result, out_dir, f"gate-{datetime.now(UTC):%Y%m%dT%H%M%S%f}")
    reports = {k: str(v) for k, v in paths.items()}
    with connection() as con:
        recorded = record_decision(
            con,
            result,
            reports=reports,
            candidate_run=candidate.eval_run_id,
            baseline_run=base_run.eval_run_id if base_run else None,
            suite_version=suite,
            thresholds_version=thresholds.version,
            dagster_run_id=dagster_run_id,
        )
    log(f"gate {key}: {result.decision} vs {result.baseline_version or 'no baseline'} — " + "; ".join(result.reasons[:3]))
    return GateOutcome(
        result=result,
        reports=GateReports(md=reports["md"], html=reports["html"], json=reports["json"]),
        pr_comment=render_pr_comment(result),
        gate_id=recorded["gate_id"],
        candidate_run=candidate.eval_run_id,
        baseline_run=base_run.eval_run_id if base_run else None,
        suite_version=suite,
        thresholds_version=thresholds.version,
    )


def _live_version(home: Home, workflow: str) -> str | None:
    """The live release from the registry pointer file, when the registry has one."""
    import json

    pointer = home.registry_dir / f"{workflow}.json"
    if not pointer.exists():
        return None
    try:
        return json.loads(pointer.read_text()).get("live")
    except ValueError:
        return None
