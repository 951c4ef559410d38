"""A canary analysis for a home: window, baseline and configuration from the registry and the
workflow file; the result stored in `canary_analyses` with its reports, and returned as a
CanaryOutcome (which round-trips through JSON, lib/results.py)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

from relops_pipeline.lib.home import Home
from relops_pipeline.lib.timeutil import utc_naive
from relops_pipeline.lib.workflows import Workflow

from .config import CanaryConfig
from .judge import judge_canary
from .load import load_canary_intervals
from .model import CanaryResult
from .report import render_html, render_json, render_markdown


@dataclass(frozen=True)
class CanaryOutcome:
    """One stored canary analysis: the judgement, its reports and what it compared.
    `baseline` None: the canary was judged against every other release of the workflow."""

    analysis_id: str
    workflow: str
    canary: str
    baseline: str | None
    window: tuple[datetime, datetime]
    intervals: int
    result: CanaryResult
    report_md: str
    report_html: str

    @property
    def failing_metrics(self) -> list[str]:
        """The metrics that regressed at the look where a failed canary failed, sorted."""
        r = self.result
        if r.verdict != "fail":
            return []
        if r.failed_at is not None and r.failed_at < len(r.looks):
            return sorted({m.name for m in r.looks[r.failed_at].metrics if m.bad})
        return sorted({m.name for iv in r.intervals for m in iv.metrics if m.bad})


def canary_window(con, workflow: str, version: str) -> tuple[datetime, datetime] | None:
    """From the canary's first production request to just after its last one."""
    row = con.execute("SELECT min(start_time), max(start_time) FROM trace_features WHERE workflow = ? AND release = ?",
                      [workflow, version]).fetchall()[0]
    if row[0] is None:
        return None
    return row[0], row[1] + timedelta(microseconds=1)


def analyse_canary(con: duckdb.DuckDBPyConnection, home: Home, wf: Workflow, version: str, *, baseline: str | None,
                   run_id: str | None = None, start: datetime | None = None, end: datetime | None = None) -> CanaryOutcome:
    """Judge `version`'s production requests against `baseline`'s (or every other release of
    the workflow) interval by interval over the window, store and report the result."""
    cfg = CanaryConfig.from_dict((wf.rollout or {}).get("canary"))
    window = (start, end) if start and end else canary_window(con, wf.name, version)
    now = utc_naive()
    no_traffic = window is None
    if window is None:  # not one request yet: judged on an empty look, so the verdict says what it needs
        window = (now - timedelta(minutes=cfg.interval_minutes), now)
    intervals = load_canary_intervals(con, wf.name, version, baseline, window[0], window[1], cfg.interval_minutes)
    result = judge_canary(intervals, cfg, workflow=wf.name, canary=version, baseline=baseline)
    if no_traffic and result.needs:
        from relops_pipeline.lib.registry.state import get_state

        serving = get_state(con, wf.name).stage_of(version) is not None
        text = (f"no production requests of {version} in the warehouse yet (the first judgement needs at least "
                f"{result.needs['canary_requests']}): "
                + ("ingest its traces (relops ingest PATH)" if serving else
                   f"send it canary traffic (relops rollout {wf.name} {version} --stage canary) and ingest its "
                   "traces (relops ingest PATH)"))
        before = result.needs["text"]
        result.needs = {**result.needs, "text": text}
        result.reasons = [text if r == before else r for r in result.reasons]
    analysis_id = f"canary-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    folder = Path(home.reports_dir) / "canary" / wf.name / version
    folder.mkdir(parents=True, exist_ok=True)
    md, html = folder / f"{analysis_id}.md", folder / f"{analysis_id}.html"
    md.write_text(render_markdown(result), encoding="utf-8")
    html.write_text(render_html(result), encoding="utf-8")
    con.execute(
        "INSERT INTO canary_analyses VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [analysis_id, f"{wf.name}--{version}", wf.name, version, baseline or "*", window[0], window[1], result.verdict,
         result.score, result.consecutive_failures, render_json(result), str(md), str(html), run_id, now],
    )
    return CanaryOutcome(analysis_id=analysis_id, workflow=wf.name, canary=version, baseline=baseline, window=window,
                         intervals=len(intervals), result=result, report_md=str(md), report_html=str(html))


def refresh_release_features(con: duckdb.DuckDBPyConnection, workflow: str, version: str) -> None:
    """Recompute the per-request features of the release's last day of traffic (today's
    requests too: features are computed per whole day)."""
    from relops_pipeline.lib.drift.features import compute_trace_features

    first, last = con.execute("SELECT min(start_time)::DATE, max(start_time)::DATE FROM spans "
                              "WHERE workflow = ? AND release = ?", [workflow, version]).fetchall()[0]
    if first is not None:
        compute_trace_features(con, last, last + timedelta(days=1))


def judge_release_canary(con: duckdb.DuckDBPyConnection, home: Home, wf: Workflow, version: str, *,
                         run_id: str | None = None) -> CanaryOutcome:
    """The canary analysis of `version` against the live release (every other release when it
    is itself live or nothing is), on freshly computed features: what the canary asset runs."""
    from relops_pipeline.lib.registry.state import get_state

    state = get_state(con, wf.name)
    baseline = state.live if state.live and state.live != version else None
    refresh_release_features(con, wf.name, version)
    return analyse_canary(con, home, wf, version, baseline=baseline, run_id=run_id)
