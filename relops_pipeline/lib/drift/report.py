"""The Evidently HTML drift report of one window (weekly, workflow scope).

The report is Evidently's own DataDriftPreset run on the same frames relops' statistics ran
on, with each column's method and threshold pinned to what relops chose, so its verdicts match
the stored ones. The HTML is self-contained (no CDN; about 4 MB).

Evidently 0.7.23 embeds category values unescaped inside a <script> element of the HTML (a
value containing `</script>` ends the script and injects markup). Every user-derived string
(category values, online score names) is therefore HTML-escaped before it reaches Evidently:
an injective mapping, so counts and scores are unchanged; "<" shows as "&lt;" in the report.
"""

from __future__ import annotations

import datetime as dt
import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from relops_pipeline.lib.drift.compute import ColumnDrift


def _safe(name: str) -> str:
    return html.escape(str(name), quote=True)


def _sanitize(df, categorical: Sequence[str]):
    out = df.copy()
    for c in categorical:
        out[c] = out[c].map(lambda v: v if v is None or v != v else _safe(v))
    out.columns = [_safe(c) for c in out.columns]
    return out


def build_drift_snapshot(
    current_df,
    reference_df,
    *,
    columns: Sequence[ColumnDrift] | None = None,
    drift_share: float = 0.5,
    name: str | None = None,
    timestamp: dt.datetime | None = None,
    tags: Sequence[str] = (),
    metadata: dict[str, Any] | None = None,
):
    """An Evidently Snapshot of DataDriftPreset on the two frames.

    With `columns` (relops' ColumnDrift results) only the tested columns are included, each
    with its method and threshold; a numeric column tested with a chi-square or Z test (at
    most 5 distinct values) is declared categorical, the only type Evidently accepts those
    tests for by name. Without `columns`, every frame column goes in and Evidently chooses.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    if columns is not None:
        tested = [c for c in columns if c.method is not None]
        names = [c.column for c in tested]
        numerical = [c.column for c in tested if c.type == "num" and c.method not in ("z", "chisquare")]
        methods = {_safe(c.column): c.method for c in tested}
        thresholds = {_safe(c.column): c.threshold for c in tested}
    else:
        import pandas as pd

        names = list(current_df.columns)
        numerical = [c for c in names if pd.api.types.is_numeric_dtype(reference_df[c])]
        methods, thresholds = None, None
    if not names:
        raise ValueError("no column to report: every column lacked data (insufficient)")
    categorical = [c for c in names if c not in numerical]
    cur = _sanitize(current_df[names], categorical)
    ref = _sanitize(reference_df[names], categorical)
    definition = DataDefinition(
        numerical_columns=[_safe(c) for c in numerical], categorical_columns=[_safe(c) for c in categorical]
    )
    preset = DataDriftPreset(
        columns=[_safe(c) for c in names], drift_share=drift_share,
        per_column_method=methods, per_column_threshold=thresholds,
    )
    report = Report([preset], include_tests=True, metadata=metadata or {}, tags=list(tags))
    return report.run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
        timestamp=timestamp,
        name=name,
    )


def write_drift_report(
    path: Path | str,
    current_df,
    reference_df,
    *,
    columns: Sequence[ColumnDrift] | None = None,
    drift_share: float = 0.5,
    name: str | None = None,
    timestamp: dt.datetime | None = None,
    tags: Sequence[str] = (),
    metadata: dict[str, Any] | None = None,
    workspace_dir: Path | str | None = None,
    project_name: str | None = None,
    snapshots_out: list | None = None,
) -> Path:
    """Write the Evidently HTML drift report of current vs reference to `path` (atomically:
    a temp file renamed into place) and return the path. With `workspace_dir`, the same
    snapshot is also added to that local Evidently workspace under `project_name`; with
    `snapshots_out`, the snapshot is appended to that list instead (to add many at once with
    lib.drift.workspace.add_snapshots)."""
    path = Path(path)
    snapshot = build_drift_snapshot(
        current_df, reference_df, columns=columns, drift_share=drift_share, name=name,
        timestamp=timestamp, tags=tags, metadata=metadata,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        snapshot.save_html(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    if snapshots_out is not None:
        snapshots_out.append(snapshot)
    if workspace_dir is not None:
        from relops_pipeline.lib.drift.workspace import add_snapshot

        add_snapshot(workspace_dir, project_name or "relops drift", snapshot)
    return path
