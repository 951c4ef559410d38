"""A canary analysis for a home: window, baseline and configuration from the registry and the
workflow file; the result stored in `canary_analyses` with its reports."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from relops_pipeline.lib.timeutil import utc_naive

from .config import CanaryConfig
from .judge import judge_canary
from .load import load_canary_intervals
from .report import render_html, render_json, render_markdown


def canary_window(con, workflow: str, version: str) -> tuple[datetime, datetime] | None:
    """From the canary's first production request to just after its last one."""
    row = con.execute("SELECT min(start_time), max(start_time) FROM trace_features WHERE workflow = ? AND release = ?",
                      [workflow, version]).fetchall()[0]
    if row[0] is None:
        return None
    return row[0], row[1] + timedelta(microseconds=1)


def analyse_canary(con, home, wf, version: str, *, baseline: str | None, run_id: str | None = None,
                   start: datetime | None = None, end: datetime | None = None) -> dict[str, Any]:
    """Judge `version`'s production requests against `baseline`'s (or every other release of
    the workflow) interval by interval over the window, store and report the result."""
    cfg = CanaryConfig.from_dict((wf.rollout or {}).get("canary"))
    window = (start, end) if start and end else canary_window(con, wf.name, version)
    now = utc_naive()
    if window is None:
        window = (now, now)
    intervals = load_canary_intervals(con, wf.name, version, baseline, window[0], window[1], cfg.interval_minutes)
    result = judge_canary(intervals, cfg, workflow=wf.name, canary=version, baseline=baseline)
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
    return {"analysis_id": analysis_id, "result": result, "report_md": str(md), "report_html": str(html),
            "window": window, "intervals": len(intervals)}
