"""Typed results of the evals domain (lib/evals/store.py) as materialization metadata."""

from __future__ import annotations

import dagster as dg

from relops_pipeline.lib import rounding
from relops_pipeline.lib.evals.store import EvalRunSummary, ReleaseRegistration, SuitesRecorded
from relops_pipeline.lib.markdown import md_table

UNKNOWN_CHANGES = "_What changed is unknown: this release was registered without a manifest._"


def eval_suites_result(r: SuitesRecorded) -> dg.MaterializeResult:
    rows = [[v.workflow, v.version, v.cases, v.must_pass, v.content_hash[:12], v.status] for v in r.versions]
    return dg.MaterializeResult(
        metadata={
            "suite_versions": dg.MetadataValue.int(len(rows)),
            "versions": dg.MetadataValue.md(md_table(["workflow", "version", "cases", "must_pass", "hash", "status"], rows)),
        }
    )


def release_manifest_result(r: ReleaseRegistration) -> dg.MaterializeResult:
    from relops_pipeline.lib.evals.diff import diff_markdown

    release = r.release
    return dg.MaterializeResult(
        metadata={
            "workflow": release.workflow,
            "version": release.version,
            "manifest_known": release.manifest_known,
            "manifest_hash": release.manifest_hash or "unknown",
            "model": (release.manifest or {}).get("model", "unknown"),
            "compared_with": release.baseline_version or "none",
            "status": r.status,
            "what_changed": dg.MetadataValue.md(diff_markdown(release.diff) if release.diff else UNKNOWN_CHANGES),
        }
    )


def eval_run_result(s: EvalRunSummary) -> dg.MaterializeResult:
    metrics = s.metrics
    return dg.MaterializeResult(
        metadata={
            "eval_run_id": s.eval_run_id,
            "suite_version": s.suite_version,
            "source": s.source,
            "cases": dg.MetadataValue.int(s.cases),
            "samples": dg.MetadataValue.int(s.samples),
            "errors": dg.MetadataValue.int(s.errors),
            "error_rate": dg.MetadataValue.float(rounding.rate(s.error_rate or 0.0)),
            "valid": s.valid,
            "invalid_reason": s.invalid_reason or "",
            # endpoint error messages are not ours: escaped in the markdown
            "error_causes": dg.MetadataValue.md(
                md_table(["samples", "of", "error"], [[c.count, c.samples, c.cause] for c in s.error_causes])
                if s.error_causes
                else "_no errors_"
            ),
            "must_pass_failing_cases": dg.MetadataValue.int(s.must_pass_failing_cases),
            # the gate judges means of scores; the pass rate (share of samples passing) is for reference
            **{f"mean/{m}": dg.MetadataValue.float(rounding.rate(v.mean)) for m, v in metrics.items()},
            **{f"pass_rate/{m}": dg.MetadataValue.float(rounding.rate(v.pass_rate)) for m, v in metrics.items()},
            "latency_p50_ms": dg.MetadataValue.float(rounding.ms(s.latency_p50_ms or 0.0)),
            "cost_usd": dg.MetadataValue.float(rounding.usd(s.cost_usd or 0.0)),
            "metrics": dg.MetadataValue.md(
                md_table(
                    ["metric", "mean score (gated)", "pass rate (of samples)", "scored samples"],
                    [[m, rounding.rate(v.mean), rounding.rate(v.pass_rate), v.n] for m, v in metrics.items()],
                )
            ),
        }
    )
