"""Production drift: per-request features, versioned reference profiles, drift statistics.

Pure domain logic (no dagster); Evidently is imported lazily, only where a statistic, report
or workspace is made (its import costs seconds).

API (stable; callers: defs/drift, defs/ingest, bench/drift*.py):

- features.compute_trace_features(con, start: date, end: date, *, dimension_keys=None) -> int
    Replace trace_features rows with day in [start, end) from `spans`; returns rows written.
    features.DEFAULT_DIMENSION_KEYS: ordered attribute keys for topic / intent / language.
- config.DriftConfig.from_workflow(wf.drift) -> DriftConfig   (raises DriftConfigError)
    Fields: reference (ReferenceSpec), critical, critical_severity, drifted_share_warn,
    share_severity, min_rows, sample_rows, method_thresholds, column_thresholds, columns;
    .threshold(column, method). config.COLUMNS: the column catalogue {name: (num|cat, role)};
    online scores are columns "score.<name>". config.METHODS: {method: (kind, default threshold)}.
- reference.ensure_reference(con, workflow, cfg, *, run_id=None) -> Reference | None
    reference.resolve_reference(con, workflow, spec) -> dict | None,
    reference.load_reference(con, reference_id) -> Reference | None.
- compute.compute_drift(con, workflow, cfg, window_start, window_end, *, granularity,
      scopes=("workflow", "release"), run_id=None, keep_samples=False, reference=None)
      -> list[DriftSummary]
    window_end is exclusive; granularity in weekly | rolling | daily | adhoc. The workflow
    scope (release '*') comes first and is always present.
    compute.store_drift(con, summaries, *, run_id=None, now=None) -> int
    compute.choose_method(col_type, ref_n, cur_n, n_unique) -> str
    compute.drift_of_frames(current_df, reference_df, cfg, columns) -> list[ColumnDrift]
      (the statistics on two pandas frames, e.g. for a benchmark).
    DriftSummary: granularity, period_start, period_end, workflow, release, status
    (ok|drift|insufficient), severity (None|WARN|ERROR), columns_tested, columns_drifted,
    drifted_share, critical_drifted, cur_rows, ref_rows, reference_id, columns
    (list[ColumnDrift]), critical_columns, critical_severity, share_severity,
    drifted_share_warn, dominant_release, sampled, report_path (frozen; to_json/from_json in
    lib/results.py once without_samples()).
    ColumnDrift: column, type, role, method, score, threshold, drifted, status, ref_rows, cur_rows.
- report.write_drift_report(path, current_df, reference_df, *, columns=None, drift_share=0.5,
      name=None, timestamp=None, tags=(), metadata=None, workspace_dir=None,
      project_name=None, snapshots_out=None) -> Path
- workspace.add_snapshot(workspace_dir, project_name, snapshot, *, description=None) -> str
    workspace.add_snapshots(workspace_dir, [(project_name, snapshot), ...]) -> list[str],
    workspace.ui_command(workspace_dir, port=8000) -> (argv, env).
- run.run_drift_period(con, home, *, granularity, start, end, run_id=None, reports=False,
      window_days=None, log=None) -> list[DriftSummary]   (what the Dagster assets call;
      defs/drift/metadata.py turns them into metadata and checks)
"""
