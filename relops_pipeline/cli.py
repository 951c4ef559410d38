"""The `relops` command: a thin front door over the Dagster definitions.

Commands that compute or change state run through Dagster on the home's instance, so the UI
shows the same history. Each prints a short human summary, or one JSON object with --json.
Exit codes: 0 success; 3 bad input (unreadable path, unknown format, bad configuration);
4 a Dagster run failed; 5 no such home or warehouse yet.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date
from pathlib import Path
from typing import Any, Sequence

from relops_pipeline.lib.home import HOME_ENV, Home

EXIT_OK = 0
EXIT_BAD_INPUT = 3
EXIT_RUN_FAILED = 4
EXIT_NO_HOME = 5


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------------------------
# Dagster plumbing (imported lazily: dagster costs over a second to import)


def _activate(home: Home) -> None:
    """Point this process at the home: its instance (DAGSTER_HOME) and its definitions."""
    home.init()
    os.environ[HOME_ENV] = str(home.root)
    os.environ["DAGSTER_HOME"] = str(home.dagster_home)


def _instance(home: Home):
    _activate(home)
    from dagster import DagsterInstance

    return DagsterInstance.get()


def _defs():
    from relops_pipeline.definitions import defs

    return defs


def run_job(home: Home, job_name: str, *, run_config: dict | None = None, tags: dict | None = None):
    """Execute a job in this process, recorded on the home's Dagster instance."""
    instance = _instance(home)
    from relops_pipeline.defs.beta import expected_beta_warnings

    with expected_beta_warnings():  # Dagster warns on its own use of a beta parameter here
        job = _defs().resolve_job_def(job_name)
    # The run's own log goes to the instance (the UI shows it); the terminal gets the summary.
    quiet = {"loggers": {"console": {"config": {"log_level": os.environ.get("RELOPS_LOG_LEVEL", "WARNING")}}}}
    return job.execute_in_process(
        run_config={**quiet, **(run_config or {})}, instance=instance, tags={"relops/trigger": "cli", **(tags or {})}, raise_on_error=False
    )


def _run_failure(result) -> str:
    for event in result.all_events:
        if event.is_failure and event.event_specific_data is not None:
            err = getattr(event.event_specific_data, "error", None)
            if err is not None:
                return err.message.strip().splitlines()[-1]
    return "the run failed (see the Dagster UI)"


def refresh_days(home: Home, days: Sequence[date]) -> Any:
    """Validate and recompute daily signals for a range of days, as one run."""
    from relops_pipeline.defs.partitions import daily_partitions

    if not days:
        return None
    keys = daily_partitions.get_partition_keys()
    first, last = days[0].isoformat(), days[-1].isoformat()
    first = max(first, keys[0])
    last = min(last, keys[-1])
    if first > last:
        return None
    result = run_job(
        home,
        "trace_signals_job",
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
    )
    if not result.success:
        raise CliError(f"signals run {result.run_id} failed: {_run_failure(result)}", EXIT_RUN_FAILED)
    return result


# ---------------------------------------------------------------------------------------------
# Commands


def cmd_init(args) -> dict:
    home = Home.resolve(args.home)
    written = home.init()
    return {
        "home": str(home.root),
        "written": [str(p) for p in written],
        "_text": f"relops home ready at {home.root}" + (f" ({len(written)} files written)" if written else " (kept as it was)"),
    }


def _precheck(paths: Sequence[str], fmt: str | None) -> tuple[list[Path], list[str]]:
    """Resolve the files and their formats before any run, so bad input fails with one line
    per problem and nothing is half-done."""
    from relops_pipeline.lib.ingest import expand_paths
    from relops_pipeline.lib.readers import detect_format, reader_for
    from relops_pipeline.lib.readers.base import UnreadableInput

    files, skipped, errors = expand_paths(paths)
    problems = [f"{e['path']}: {e['error']}" for e in errors]
    if fmt is not None:
        try:
            reader_for(fmt)
        except UnreadableInput as exc:
            problems.append(str(exc))
    else:
        for f in files:
            try:
                detect_format(f)
            except UnreadableInput as exc:
                problems.append(str(exc))
    if not files and not problems:
        problems.append(f"no trace files in {', '.join(paths)}")
    return files, problems


def ingest(home: Home, paths: Sequence[str], fmt: str | None = None) -> dict:
    """Ingest through Dagster (an ingestion run, then a signals run for the days touched)."""
    files, problems = _precheck(paths, fmt)
    if problems:
        raise CliError("\n".join(problems))
    config: dict = {"paths": [str(f.resolve()) for f in files]}
    if fmt:
        config["format"] = fmt
    result = run_job(home, "ingest_traces_job", run_config={"ops": {"ingest_trace_files": {"config": config}}})
    if not result.success:
        raise CliError(f"ingestion run {result.run_id} failed: {_run_failure(result)}", EXIT_RUN_FAILED)
    summary = result.output_for_node("ingest_trace_files")
    days = sorted({date.fromisoformat(d) for f in summary["files"] for d in _file_days(f)})
    signals = refresh_days(home, days)
    summary["run_id"] = result.run_id
    summary["signals_run_id"] = signals.run_id if signals is not None else None
    summary["days"] = [days[0].isoformat(), days[-1].isoformat()] if days else []
    return summary


def _file_days(f: dict) -> list[str]:
    if not f.get("min_start_time"):
        return []
    d0 = date.fromisoformat(f["min_start_time"][:10])
    d1 = date.fromisoformat(f["max_start_time"][:10])
    return [date.fromordinal(o).isoformat() for o in range(d0.toordinal(), d1.toordinal() + 1)]


def _ingest_text(summary: dict) -> str:
    lines = []
    for f in summary["files"]:
        lines.append(
            f"{f['path']} [{f['format']}]: read {f['read']} = accepted {f['accepted']} + rejected {f['rejected']}"
            f" + duplicates {f['duplicates']}" + (f" (no release: {f['unknown_release']})" if f["unknown_release"] else "")
        )
    t = summary["totals"]
    lines.append(
        f"total: {len(summary['files'])} files, read {t['read']} = accepted {t['accepted']} + rejected {t['rejected']}"
        f" + duplicates {t['duplicates']}; spans without release: {t['unknown_release']}"
    )
    if summary.get("skipped"):
        lines.append(f"skipped {len(summary['skipped'])} documentation/metadata files")
    lines.append(f"dagster run: {summary['run_id']}" + (f"; signals run: {summary['signals_run_id']}" if summary.get("signals_run_id") else ""))
    return "\n".join(lines)


def cmd_ingest(args) -> dict:
    home = Home.resolve(args.home)
    summary = ingest(home, args.paths, args.format)
    return {**summary, "_text": _ingest_text(summary)}


def _read_warehouse(home: Home):
    from relops_pipeline.lib.warehouse import open_warehouse

    if not home.warehouse_path.exists():
        raise CliError(f"no warehouse at {home.warehouse_path}: ingest traces first (relops ingest PATH)", EXIT_NO_HOME)
    # Read-write open: it migrates an older warehouse, and read-only opens conflict the same way.
    return open_warehouse(home.warehouse_path)


def cmd_status(args) -> dict:
    home = Home.resolve(args.home)
    with _read_warehouse(home) as con:
        totals = con.execute(
            "SELECT count(*), count(DISTINCT trace_id), count(*) FILTER (WHERE NOT release_known), "
            "min(start_time), max(start_time) FROM spans"
        ).fetchone()
        by_release = con.execute(
            "SELECT workflow, release, count(*) AS spans, count(DISTINCT start_time::DATE) AS days, "
            "min(start_time)::DATE AS first_day, max(start_time)::DATE AS last_day "
            "FROM spans GROUP BY ALL ORDER BY workflow, release"
        ).fetchall()
        by_day = con.execute(
            "SELECT start_time::DATE AS day, workflow, release, count(*) FROM spans GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        rejects = con.execute("SELECT reason, count(*) FROM trace_rejects GROUP BY ALL ORDER BY 2 DESC, 1").fetchall()
        batches = con.execute(
            "SELECT count(*), coalesce(sum(records_read), 0), coalesce(sum(accepted), 0), coalesce(sum(rejected), 0), "
            "coalesce(sum(duplicates), 0) FROM ingest_batches"
        ).fetchone()
    out = {
        "home": str(home.root),
        "spans": totals[0],
        "traces": totals[1],
        "unknown_release_spans": totals[2],
        "first_span": totals[3].isoformat() if totals[3] else None,
        "last_span": totals[4].isoformat() if totals[4] else None,
        "by_release": [
            {"workflow": w, "release": r, "spans": n, "days": d, "first_day": str(a), "last_day": str(b)}
            for w, r, n, d, a, b in by_release
        ],
        "by_day": [{"day": str(d), "workflow": w, "release": r, "spans": n} for d, w, r, n in by_day],
        "rejects_by_reason": [{"reason": r, "count": n} for r, n in rejects],
        "ingest": dict(zip(("batches", "read", "accepted", "rejected", "duplicates"), map(int, batches))),
    }
    lines = [
        f"warehouse {home.warehouse_path}",
        f"spans {out['spans']} in {out['traces']} traces, {out['first_span']} .. {out['last_span']};"
        f" without release: {out['unknown_release_spans']}",
        f"ingested {out['ingest']['batches']} files: read {out['ingest']['read']} = accepted {out['ingest']['accepted']}"
        f" + rejected {out['ingest']['rejected']} + duplicates {out['ingest']['duplicates']}",
        "",
        f"{'workflow':<24} {'release':<28} {'spans':>9} {'days':>5}  first .. last",
    ]
    for r in out["by_release"]:
        lines.append(f"{r['workflow'][:24]:<24} {r['release'][:28]:<28} {r['spans']:>9} {r['days']:>5}  {r['first_day']} .. {r['last_day']}")
    if rejects:
        lines += ["", "rejects by reason:"] + [f"  {n:>7}  {r}" for r, n in rejects]
    lines.append("(per-day counts: relops status --json)")
    return {**out, "_text": "\n".join(lines)}


def cmd_rejects(args) -> dict:
    home = Home.resolve(args.home)
    with _read_warehouse(home) as con:
        total = con.execute("SELECT count(*) FROM trace_rejects").fetchone()[0]
        rows = con.execute(
            "SELECT source_file, source_line, reason, raw, ingest_batch_id, rejected_at FROM trace_rejects "
            "ORDER BY rejected_at, source_file, source_line LIMIT ?",
            [args.limit],
        ).fetchall()
    items = [
        {"source_file": f, "source_line": ln, "reason": r, "raw": raw, "batch_id": b, "rejected_at": t.isoformat()}
        for f, ln, r, raw, b, t in rows
    ]
    lines = [f"{total} rejected records" + (f" (showing {len(items)})" if len(items) < total else "")]
    for i in items:
        raw = (i["raw"] or "").replace("\n", " ")
        lines.append(f"{i['source_file']}:{i['source_line']}: {i['reason']}: {raw[:100]}")
    return {"total": total, "rejects": items, "_text": "\n".join(lines)}


def cmd_demo(args) -> dict:
    from relops_pipeline.lib.demo_traces import generate_demo_traces

    home = Home.resolve(args.home)
    home.init()
    print(f"relops demo: home {home.root}", file=sys.stderr)
    print("[1/2] generating the demo world's production traces ...", file=sys.stderr)
    gen = generate_demo_traces(home.landing_dir / "demo", seed=args.seed, scale=args.scale)
    print(f"      {gen.spans} spans in {len(gen.files)} files", file=sys.stderr)
    print("[2/2] ingesting them through Dagster ...", file=sys.stderr)
    summary = ingest(home, [str(home.landing_dir / "demo")])
    t = summary["totals"]
    expected = gen.expected_ingest()
    matches = (t["accepted"], t["rejected"], t["unknown_release"]) == (
        expected["accepted_spans"], expected["rejected_lines"], expected["unknown_release_spans"])
    lines = [
        _ingest_text({**summary, "files": []}).replace("total: 0 files", f"total: {len(summary['files'])} files"),
        f"expected from the generator: accepted {expected['accepted_spans']}, rejected {expected['rejected_lines']},"
        f" without release {expected['unknown_release_spans']}"
        + (" — matches" if matches else " — MISMATCH"),
        "",
        "where to look:",
        f"  relops --home {home.root} status     spans per workflow, release and day",
        f"  relops --home {home.root} rejects    the quarantined records, with reasons",
        "  make ui                               the Dagster UI on http://127.0.0.1:3000",
    ]
    if not matches:
        raise CliError("\n".join(lines[:2]) + "\nthe demo's counts do not match what was generated", EXIT_RUN_FAILED)
    return {
        "home": str(home.root),
        "generated": gen.expected_ingest(),
        "matches_generator": matches,
        "ingest": {"totals": t, "run_id": summary["run_id"], "signals_run_id": summary["signals_run_id"]},
        "_text": "\n".join(lines),
    }


# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    home_help = f"the relops home folder (default: ${HOME_ENV}, else ./data/home)"
    parser = argparse.ArgumentParser(prog="relops", description="Release operations for production LLM workflows.")
    parser.add_argument("--home", default=None, help=home_help)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, fn, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--home", default=argparse.SUPPRESS, help=home_help)
        p.add_argument("--json", action="store_true", help="print one JSON object")
        p.set_defaults(fn=fn)
        return p

    add("init", cmd_init, "create a home with example workflow configuration")
    p = add("ingest", cmd_ingest, "ingest trace files or folders into the warehouse")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--format", default=None, help="force a format instead of detecting it")
    add("status", cmd_status, "summarise the warehouse: spans per workflow, release and day; rejects")
    p = add("rejects", cmd_rejects, "list quarantined records with their reasons")
    p.add_argument("--limit", type=int, default=50)
    p = add("demo", cmd_demo, "generate the demo world and run the story through Dagster")
    p.add_argument("--scale", type=float, default=1.0, help="volume multiplier (10 = millions of spans)")
    p.add_argument("--seed", type=int, default=7)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = args.fn(args)
    except CliError as exc:
        if getattr(args, "json", False):
            print(json.dumps({"error": str(exc), "exit_code": exc.code}))
        else:
            for line in str(exc).splitlines():
                print(f"relops: {line}", file=sys.stderr)
        return exc.code
    text = out.pop("_text", "")
    if args.json:
        print(json.dumps(out, default=str))
    else:
        print(text)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
