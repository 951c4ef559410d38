"""One drift materialization: every workflow, every window of a partition range, stored.

Called by the Dagster drift assets (defs/drift/assets.py). Workflows are those with a
configuration file in the home plus any with traces in the range (the latter with the default
drift configuration); traces whose workflow is unknown are not a workflow and are skipped.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable
from pathlib import Path

from relops_pipeline.lib.drift.compute import ALL_RELEASES, DriftCache, DriftSummary, compute_drift, store_drift
from relops_pipeline.lib.drift.config import DriftConfig, DriftConfigError
from relops_pipeline.lib.home import Home
from relops_pipeline.lib.schema import UNKNOWN

REPORTS_SUBDIR = "drift"
WORKSPACE_SUBDIR = "evidently-workspace"


def drift_reports_dir(home: Home) -> Path:
    return home.reports_dir / REPORTS_SUBDIR


def workspace_dir(home: Home) -> Path:
    """The local Evidently workspace (`evidently ui --workspace <this>`; see lib.drift.workspace)."""
    return drift_reports_dir(home) / WORKSPACE_SUBDIR


def _slug(name: str) -> str:
    # Workflow names seen only in traces are not validated: keep them inside the reports dir.
    slug = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return slug or "_"


def report_path(home: Home, workflow: str, period_start: dt.date) -> Path:
    return drift_reports_dir(home) / _slug(workflow) / f"week-{period_start.isoformat()}.html"


def windows(granularity: str, start: dt.date, end: dt.date, window_days: int | None) -> list[tuple[dt.date, dt.date]]:
    """The drift windows of the partitions in [start, end): with window_days, one trailing
    window of that many days ending with each day; without, consecutive 7-day weeks."""
    if end <= start:
        return []
    if window_days:
        days = (end - start).days
        return [
            (start + dt.timedelta(days=i) - dt.timedelta(days=window_days - 1), start + dt.timedelta(days=i + 1))
            for i in range(days)
        ]
    out = []
    s = start
    while s < end:
        out.append((s, min(s + dt.timedelta(days=7), end)))
        s += dt.timedelta(days=7)
    return out


def drift_configs(con, home: Home, start: dt.date, end: dt.date,
                  log: Callable[[str], None] = lambda _msg: None) -> dict[str, DriftConfig]:
    """Drift configuration per workflow to monitor (configured ones, then any with traffic)."""
    from relops_pipeline.lib.workflows import load_all

    configs: dict[str, DriftConfig] = {}
    loaded = load_all(home.workflows_dir)
    for warning in loaded.warnings():
        log(warning)
    for wf in loaded.workflows:
        name = wf.name
        try:
            configs[name] = DriftConfig.from_workflow(wf.drift)
        except DriftConfigError as exc:
            raise DriftConfigError(f"{wf.path}: {exc}") from None
    seen = con.execute(
        "SELECT DISTINCT workflow FROM trace_features WHERE day >= ? AND day < ? AND workflow <> ? ORDER BY 1",
        [start, end, UNKNOWN],
    ).fetchall()
    broken = {name for name, _ in loaded.broken}
    for (name,) in seen:
        if name not in broken:  # its own configuration is unreadable: not judged on the defaults
            configs.setdefault(name, DriftConfig())
    return configs


def run_drift_period(
    con,
    home: Home | str | os.PathLike,
    *,
    granularity: str,
    start: dt.date,
    end: dt.date,
    run_id: str | None = None,
    reports: bool = False,
    window_days: int | None = None,
    log: Callable[[str], None] | None = None,
) -> list[DriftSummary]:
    """Compute and store the drift of every workflow for the partitions [start, end); return
    the summaries (without their samples: they round-trip through JSON), workflow scope
    first per workflow.

    reports: write the Evidently HTML report of each weekly workflow-scope window that has a
    verdict (under <home>/reports/drift/<workflow>/) and add it to the local Evidently
    workspace. `con` must not be inside a transaction already.

    The windows share one DriftCache: each workflow's reference is resolved and read once, and
    a window holding the same rows as an earlier one (the same days with traffic) reuses its
    column tests instead of running them again.
    """
    home = home if isinstance(home, Home) else Home.resolve(home)
    log = log or (lambda _msg: None)
    spans = windows(granularity, start, end, window_days)
    if not spans:
        return []
    configs = drift_configs(con, home, min(s for s, _ in spans), max(e for _, e in spans), log=log)
    out: list[DriftSummary] = []
    cache = DriftCache()
    snapshots: list[tuple[str, object]] = []
    for w_start, w_end in spans:
        period: list[DriftSummary] = []
        active = {r[0] for r in con.execute(
            "SELECT DISTINCT workflow FROM trace_features WHERE day >= ? AND day < ?", [w_start, w_end]).fetchall()}
        for workflow, cfg in configs.items():
            if workflow not in active:
                continue  # no traffic in this window: nothing to compare (no row, no verdict)
            sums = compute_drift(con, workflow, cfg, w_start, w_end, granularity=granularity, run_id=run_id,
                                 keep_samples=reports, cache=cache)
            kept = []
            for s in sums:
                report = None
                if reports and s.release == ALL_RELEASES and s.samples is not None and s.columns_tested:
                    report = str(_write_report(home, s, cfg, snapshots))
                    log(f"drift report {workflow} {w_start}: {report}")
                kept.append(s.without_samples(report))
            period.extend(kept)
            head = kept[0]
            log(f"drift {granularity} {w_start}..{w_end} {workflow}: {head.status} "
                f"({head.columns_drifted}/{head.columns_tested} columns, {head.cur_rows} traces)")
        store_drift(con, period, run_id=run_id)
        out.extend(period)
    if snapshots:
        from relops_pipeline.lib.drift.workspace import add_snapshots

        add_snapshots(workspace_dir(home), snapshots)
        log(f"added {len(snapshots)} snapshots to the Evidently workspace {workspace_dir(home)}")
    return out


def _write_report(home: Home, s: DriftSummary, cfg: DriftConfig, snapshots: list) -> Path:
    from relops_pipeline.lib.drift.report import write_drift_report

    cur, ref = s.samples
    made: list = []
    path = write_drift_report(
        report_path(home, s.workflow, s.period_start), cur, ref,
        columns=s.columns, drift_share=cfg.drifted_share_warn,
        name=f"{s.workflow} week of {s.period_start.isoformat()}",
        timestamp=dt.datetime.combine(s.period_start, dt.time()),
        tags=[s.workflow, s.granularity],
        metadata={"workflow": s.workflow, "reference_id": s.reference_id or "", "status": s.status},
        snapshots_out=made,
    )
    snapshots.extend((f"relops drift: {s.workflow}", snap) for snap in made)
    return path
