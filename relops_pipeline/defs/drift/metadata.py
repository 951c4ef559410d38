"""Typed results of the drift domain (lib/drift: DriftSummary) as materialization metadata and
check results."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import dagster as dg

from relops_pipeline.defs.links import report_link
from relops_pipeline.lib import rounding
from relops_pipeline.lib.drift.compute import ALL_RELEASES, DriftSummary
from relops_pipeline.lib.markdown import md_table

DRIFT_CHECKS = (
    ("critical_columns_stable", "no critical column (by default topic and input length) drifted in any workflow"),
    ("drifted_share_within_limit", "the share of drifted columns stays under each workflow's limit"),
)
SEVERITY = {"ERROR": dg.AssetCheckSeverity.ERROR, "WARN": dg.AssetCheckSeverity.WARN}


def drift_outcome(summaries: Sequence[DriftSummary], asset: str) -> tuple[dict[str, dg.MetadataValue],
                                                                          list[dg.AssetCheckResult]]:
    """Metadata and check results for one drift materialization, from its workflow-scope
    summaries (as returned by lib.drift.run.run_drift_period)."""
    meta: dict[str, dg.MetadataValue] = {}
    rows = []
    critical_fail: list[dict[str, str]] = []
    share_fail: list[dict[str, str]] = []
    no_verdict: list[str] = []
    for s in summaries:
        if s.release != ALL_RELEASES:
            continue
        wf = s.workflow
        rows.append([s.period_start.isoformat(), wf, s.status, s.columns_drifted, s.columns_tested,
                     "-" if s.drifted_share is None else f"{s.drifted_share:.2f}",
                     ", ".join(s.critical_drifted) or "-", s.cur_rows, s.ref_rows])
        if s.status == "insufficient":
            no_verdict.append(wf)
            continue
        meta[f"drifted_share/{wf}"] = dg.MetadataValue.float(rounding.rate(s.drifted_share or 0.0))
        meta[f"columns_drifted/{wf}"] = dg.MetadataValue.int(int(s.columns_drifted))
        meta[f"traces/{wf}"] = dg.MetadataValue.int(int(s.cur_rows))
        for col in s.columns:
            if col.score is not None and col.column in s.critical_columns:
                meta[f"score/{wf}/{col.column}"] = dg.MetadataValue.float(rounding.rate(col.score))
        if s.report_path:
            meta[f"report/{wf}"] = report_link(s.report_path)
        failing = {"workflow": wf, "release": s.dominant_release or "*", "period_start": s.period_start.isoformat()}
        if s.critical_drifted:
            critical_fail.append({**failing, "severity": s.critical_severity,
                                  "reason": f"critical columns drifted: {', '.join(s.critical_drifted)}"})
        if s.drifted_share is not None and s.drifted_share > s.drifted_share_warn:
            share_fail.append({**failing, "severity": s.share_severity,
                               "reason": f"{s.columns_drifted} of {s.columns_tested} columns drifted "
                                         f"(share {s.drifted_share:.2f} > {s.drifted_share_warn:.2f})"})
    meta["summary"] = dg.MetadataValue.md(md_table(
        ["period", "workflow", "status", "drifted", "tested", "share", "critical drifted", "traces", "reference traces"], rows)
        if rows else "no workflow had traces in this window")
    if no_verdict:
        meta["insufficient_data"] = dg.MetadataValue.text(", ".join(no_verdict))

    def check(name: str, failing: list[dict[str, str]]) -> dg.AssetCheckResult:
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

    def latest(failing: list[dict[str, str]]) -> list[dict[str, str]]:
        # A run over many days reports each workflow once: its latest failing window.
        by_wf: dict[str, dict[str, str]] = {}
        for f in failing:
            if f["workflow"] not in by_wf or f["period_start"] >= by_wf[f["workflow"]]["period_start"]:
                by_wf[f["workflow"]] = f
        return list(by_wf.values())

    return meta, [check("critical_columns_stable", latest(critical_fail)),
                  check("drifted_share_within_limit", latest(share_fail))]


def drift_result(summaries: Sequence[DriftSummary], asset: str, start: dt.datetime, end: dt.datetime) -> dg.MaterializeResult:
    """One drift materialization of the window [start, end): its metadata and check results."""
    meta, checks = drift_outcome(summaries, asset)
    meta["window"] = dg.MetadataValue.text(f"{start:%Y-%m-%d} .. {end:%Y-%m-%d} (end exclusive)")
    return dg.MaterializeResult(metadata=meta, check_results=checks)
