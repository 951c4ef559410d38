"""A local Evidently workspace holding the weekly drift snapshots, browsable with `evidently ui`.

Verified with evidently 0.7.23 in a network namespace that had only a loopback interface:
`Workspace.create(dir)` + `add_run` write plain JSON files, and
`evidently ui --workspace DIR --host 127.0.0.1 --port N` serves its own bundled web app
(index, JS and CSS come from the wheel; no CDN) and the project, snapshot and dashboard APIs.
One caveat: the UI service sends usage telemetry (to 35.232.253.5:8000) on every project API
call unless the environment variable DO_NOT_TRACK is set; offline those attempts fail
silently. Always start it with DO_NOT_TRACK=1 (see `ui_command`). Writing snapshots from
Python sends nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The environment `evidently ui` must run with: no telemetry.
UI_ENV = {"DO_NOT_TRACK": "1"}
SHARE_PANEL_TITLE = "Share of drifted columns"
# Snapshot name -> id per project, kept by relops beside Evidently's files (Evidently lists
# only UUID-named entries, so it ignores this file).
INDEX_FILE = "relops-snapshots.json"


def _project(ws, project_name: str, description: str | None):
    from evidently.sdk.models import DashboardPanelPlot, PanelMetric

    found = ws.search_project(project_name)
    if found:
        return found[0]
    project = ws.create_project(project_name, description=description)
    project.dashboard.add_panel(
        DashboardPanelPlot(
            title=SHARE_PANEL_TITLE,
            subtitle="DataDriftPreset per week (relops weekly drift, workflow scope)",
            size="full",
            values=[PanelMetric(legend="share", metric="DriftedColumnsCount", metric_labels={"value_type": "share"})],
            plot_params={"plot_type": "line"},
        ),
        tab="Drift",
    )
    return project


def add_snapshots(
    workspace_dir: Path | str,
    items: Sequence[tuple[str, Any]],
    *,
    description: str | None = None,
) -> list[str]:
    """Add Evidently Snapshots, as (project_name, snapshot) pairs, to the local workspace at
    `workspace_dir` (created when missing); each project is created with a drifted-share panel
    when missing. Return the snapshot ids. A snapshot whose name was added before through this
    module (a recomputed week) is replaced, so each week appears once. The input data is not
    copied into the workspace. Opening a workspace reads all its snapshots, so batch them."""
    if not items:
        return []
    from evidently.ui.workspace import Workspace

    root = Path(workspace_dir)
    root.mkdir(parents=True, exist_ok=True)
    ws = Workspace.create(str(root))
    index_path = root / INDEX_FILE
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    ids = []
    for project_name, snapshot in items:
        project = _project(ws, project_name, description)
        names = index.setdefault(str(project.id), {})
        name = snapshot.get_name() or ""
        old = names.get(name) if name else None
        if old and old in {str(s) for s in ws.list_runs(project.id)}:
            ws.delete_run(project.id, old)
        ref = ws.add_run(project.id, snapshot, include_data=False)
        if name:
            names[name] = str(ref.id)
        ids.append(str(ref.id))
    tmp = index_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(index, indent=1, sort_keys=True))
    tmp.replace(index_path)
    return ids


def add_snapshot(
    workspace_dir: Path | str,
    project_name: str,
    snapshot: Any,
    *,
    description: str | None = None,
) -> str:
    """Add one Evidently Snapshot to the workspace under `project_name` (see add_snapshots)."""
    return add_snapshots(workspace_dir, [(project_name, snapshot)], description=description)[0]


def ui_command(workspace_dir: Path | str, *, port: int = 8000) -> tuple[list[str], dict[str, str]]:
    """The command and extra environment that serve the workspace on 127.0.0.1 offline."""
    return (
        ["evidently", "ui", "--workspace", str(workspace_dir), "--host", "127.0.0.1", "--port", str(port)],
        dict(UI_ENV),
    )
