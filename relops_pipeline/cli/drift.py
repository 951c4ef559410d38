"""`relops drift`: weekly drift per workflow, computed through Dagster for the weeks that
have none yet."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Sequence

from relops_pipeline.cli.common import (
    CliError,
    CommandResult,
    Commands,
    get_workflow,
    materialize_or_fail,
    plain_table,
    read_warehouse,
)
from relops_pipeline.cli.ingest import refresh_days
from relops_pipeline.lib.home import Home


def _complete_weeks(con, keys: Sequence[str]) -> list[str]:
    """The complete weeks (partition keys) that contain traces."""
    first, last = con.execute("SELECT min(day), max(day) FROM trace_features").fetchone()
    if first is None:
        return []
    lo = (first - dt.timedelta(days=first.weekday())).isoformat()
    return [k for k in keys if lo <= k <= last.isoformat()]


def _missing_feature_days(con) -> list[dt.date]:
    """Days with spans but no per-request features yet."""
    return [r[0] for r in con.execute(
        "SELECT DISTINCT start_time::DATE FROM spans WHERE start_time IS NOT NULL "
        "EXCEPT SELECT DISTINCT day FROM trace_features ORDER BY 1").fetchall()]


def cmd_drift(args) -> CommandResult:
    """Show weekly drift; compute (through Dagster) the weeks that have none yet, or --refresh."""
    from relops_pipeline.defs.partitions import weekly_partitions

    home = Home.resolve(args.home)
    keys = weekly_partitions.get_partition_keys()
    if args.week:
        try:
            day = dt.date.fromisoformat(args.week)
        except ValueError:
            raise CliError(f"--week {args.week!r}: expected a date YYYY-MM-DD") from None
        week = (day - dt.timedelta(days=day.weekday())).isoformat()
        if week not in keys:
            raise CliError(f"the week of {week} is not complete yet: weekly drift covers Monday to Sunday weeks up to {keys[-1]}")
    if args.workflow:
        get_workflow(home, args.workflow)
    todo, runs, weeks = compute_weekly_drift(home, [week] if args.week else None, refresh=args.refresh)
    view = drift_view(home, weeks, args.workflow, detail=bool(args.week))
    return CommandResult({**view.data, "computed_weeks": todo, "run_ids": runs}, view.text)


def compute_weekly_drift(home: Home, weeks: list[str] | None, *, refresh: bool) -> tuple[list[str], list[str], list[str]]:
    """Run weekly drift through Dagster for the given weeks (default: every complete week with
    traces) that have no result yet, or all of them with refresh. Returns (computed, run ids, weeks)."""
    from relops_pipeline.defs.partitions import weekly_partitions

    with read_warehouse(home) as con:
        missing = _missing_feature_days(con)
    if missing:
        print(f"computing per-request features for {len(missing)} day(s) first ...", file=sys.stderr)
        refresh_days(home, missing)
    with read_warehouse(home) as con:
        weeks = weeks if weeks is not None else _complete_weeks(con, weekly_partitions.get_partition_keys())
        # A week is done when every workflow with traces in it has its summary (late traces of
        # a new workflow, or a week computed before them, make it due again).
        pending = {str(r[0]) for r in con.execute(
            "SELECT DISTINCT date_trunc('week', day)::DATE AS w, workflow FROM trace_features WHERE workflow <> 'unknown' "
            "EXCEPT SELECT period_start, workflow FROM drift_summaries WHERE granularity = 'weekly'").fetchall()}
        done = {w for w in weeks if w not in pending}
    todo = [w for w in weeks if refresh or w not in done]
    runs = []
    for i, w in enumerate(todo, 1):
        print(f"      [{i}/{len(todo)}] weekly drift of the week of {w} ...", file=sys.stderr)
        result = materialize_or_fail(home, ["weekly_drift"], what="weekly drift", partition_key=w)
        runs.append(result.run_id)
    return todo, runs, weeks


def drift_view(home: Home, weeks: list[str], workflow: str | None, *, detail: bool) -> CommandResult:
    """The stored weekly drift of these weeks (workflow scope, plus columns and releases in detail)."""
    where = "granularity = 'weekly' AND period_start IN (SELECT unnest(?::DATE[]))" + (" AND workflow = ?" if workflow else "")
    params: list = [weeks] + ([workflow] if workflow else [])
    with read_warehouse(home) as con:
        cols = ["period_start", "workflow", "release", "status", "severity", "columns_tested", "columns_drifted",
                "drifted_share", "critical_drifted", "cur_rows", "ref_rows", "reference_id", "report_path"]
        rows = [dict(zip(cols, r, strict=False)) for r in con.execute(
            f"SELECT {', '.join(cols)} FROM drift_summaries WHERE {where} ORDER BY period_start, workflow, release = '*' DESC, release",
            params).fetchall()]
        columns = []
        if detail:
            ccols = ["period_start", "workflow", "release", "column_name", "column_type", "role", "method", "score",
                     "threshold", "drifted", "status", "cur_rows", "ref_rows"]
            columns = [dict(zip(ccols, r, strict=False)) for r in con.execute(
                f"SELECT {', '.join(ccols)} FROM drift_results WHERE {where} AND release = '*' "
                "ORDER BY workflow, drifted DESC, score DESC NULLS LAST, column_name", params).fetchall()]
    for r in rows:
        r["period_start"] = str(r["period_start"])
        critical = r["critical_drifted"]
        r["critical_drifted"] = json.loads(critical) if isinstance(critical, str) else (critical or [])
    for c in columns:
        c["period_start"] = str(c["period_start"])

    def share(v):
        return "-" if v is None else f"{v:.2f}"

    lines = ["weekly drift (workflow scope; releases below with --week):"] if rows else [
        "no weekly drift yet: ingest traces covering at least one complete Monday-to-Sunday week"]
    table = [[r["period_start"], r["workflow"], r["status"].upper() if r["status"] == "drift" else r["status"],
              r["severity"] or "-", f"{r['columns_drifted']}/{r['columns_tested']}", share(r["drifted_share"]),
              ", ".join(r["critical_drifted"]) or "-", r["cur_rows"]]
             for r in rows if r["release"] == "*"]
    if table:
        lines.append(plain_table(["week", "workflow", "status", "severity", "drifted", "share", "critical drifted", "traces"], table))
    if detail and rows:
        rel = [[r["workflow"], r["release"], r["status"], f"{r['columns_drifted']}/{r['columns_tested']}", share(r["drifted_share"]),
                r["cur_rows"]] for r in rows if r["release"] != "*"]
        if rel:
            lines += ["", "per release:", plain_table(["workflow", "release", "status", "drifted", "share", "traces"], rel)]
        if columns:
            lines += ["", "per column (workflow scope):", plain_table(
                ["workflow", "column", "role", "method", "score", "threshold", "drifted", "traces", "reference"],
                [[c["workflow"], c["column_name"], c["role"], c["method"] or "-",
                  "-" if c["score"] is None else f"{c['score']:.4f}", "-" if c["threshold"] is None else f"{c['threshold']:g}",
                  "YES" if c["drifted"] else ("-" if c["drifted"] is None else "no"), c["cur_rows"], c["ref_rows"]]
                 for c in columns])]
        reports = [r["report_path"] for r in rows if r["report_path"]]
        if reports:
            lines += ["", "Evidently reports:", *[f"  {p}" for p in reports]]
    return CommandResult({"weeks": weeks, "summaries": rows, "columns": columns}, "\n".join(lines))


def register(add: Commands) -> None:
    """Register drift on the `relops` parser."""
    p = add("drift", cmd_drift, "show weekly drift per workflow; computes complete weeks that have none yet through Dagster")
    p.add_argument("--workflow", default=None)
    p.add_argument("--week", default=None, metavar="YYYY-MM-DD", help="the week containing this day: details per column and release")
    p.add_argument("--refresh", action="store_true", help="recompute the selected weeks even if they have results")
