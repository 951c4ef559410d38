"""`relops init`, `ingest`, `status` and `rejects`: the home, trace ingestion and what the
warehouse holds; and the daily signals recomputed after an ingestion."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from relops_pipeline.cli.common import (
    EXIT_RUN_FAILED,
    CliError,
    CommandResult,
    Commands,
    dagster_instance,
    positive_int,
    read_warehouse,
    run_followup,
    run_or_fail,
)
from relops_pipeline.cli.releases import workflow_status
from relops_pipeline.lib.home import Home
from relops_pipeline.lib.readers.langsmith import pending_patches

# How much of the files one ingestion step takes at a time (default 32 MiB, defs/ingest/jobs.py).
CHUNK_ENV = "RELOPS_INGEST_CHUNK_MB"
# One `relops ingest` of a home runs its follow-ups at a time (followups_turn).
FOLLOWUPS_LOCK = ".followups.lock"
INGEST_JOBS = ("ingest_traces_job", "ingest_traces_to_store_job")
RUNNING = ("STARTING", "STARTED")


def refresh_days(home: Home, days: Sequence[dt.date], *, drift_runs: list[str] | None = None,
                 committed_at: float | None = None, covered_by: set[str] | None = None,
                 occupied: set[dt.date] | None = None) -> list[str]:
    """Run here what follows new traces on these days, as planned by defs/followups.py (the
    follow-ups sensor launches the same runs when the daemon runs): validation, signals and
    features per range of days, then the rolling drift of the days whose week they touch. The
    terminal waits, so the drift covers the latest 90 days (the sensor covers all) and canaries
    are left to `relops canary` (the sensor judges them). Returns the ids of the signals runs
    that refreshed the days.

    `committed_at`: when the data of these days was committed (a Unix time). Days that another
    ingestion's follow-ups refreshed since (runs that started later, so read it) are not
    refreshed again, nor is their drift when a drift run started after those refreshes ended;
    the ids of those runs are added to `covered_by`. `occupied`: the days holding spans in
    the gaps between the days' ranges (`bridge_gaps`); ranges around an empty gap share a run."""
    from relops_pipeline.defs.followups import (
        ROLLING_DRIFT_ASSETS,
        SIGNALS_ASSETS,
        after_features,
        after_ingestion,
        drift_needs,
        refreshed_days,
    )

    def log(msg: str) -> None:
        print(f"relops: {msg}", file=sys.stderr)

    done: dict[dt.date, tuple[str, float]] = {}
    if committed_at is not None:
        done = refreshed_days(dagster_instance(home), dict.fromkeys(days, committed_at), SIGNALS_ASSETS)
    todo = [d for d in days if d not in done]
    signals = after_ingestion(todo, source="cli", log=log, occupied=None if occupied is None else occupied | set(done))
    run_ids = [run_followup(home, f).run_id for f in signals]
    run_ids += sorted({run_id for run_id, _ in done.values()})
    ranges = [(dt.date.fromisoformat(f.days[0]), dt.date.fromisoformat(f.days[1]))
              for f in after_ingestion(days, source="cli") if f.days]
    others = {run_id for run_id, _ in done.values()}
    for f in after_features(ranges, [], source="cli", max_drift_days=90):
        drifted: dict[dt.date, tuple[str, float]] = {}
        if done and not todo and f.days is not None:
            # Every day was refreshed by others: so was the drift of a day if a drift run over it
            # started once the refreshes of its trailing week had ended.
            needs = drift_needs(done, *(dt.date.fromisoformat(d) for d in f.days))
            drifted = refreshed_days(dagster_instance(home), needs, ROLLING_DRIFT_ASSETS)
            drifted = drifted if len(drifted) == len(needs) else {}
        found = sorted({run_id for run_id, _ in drifted.values()})
        others.update(found)
        ids = found or [run_followup(home, f).run_id]
        if drift_runs is not None:
            drift_runs.extend(ids)
    if covered_by is not None:
        covered_by.update(others)
    return run_ids


@contextlib.contextmanager
def followups_turn(home: Home, *, wait_s: float, own_run: str) -> Iterator[list[str]]:
    """The home's turn to run an ingestion's follow-ups in this process: one `relops ingest` at a
    time (a file lock; the warehouse would serialise their steps anyway). Having it, wait up to
    `wait_s` for the other ingestions of the home in progress (live runs) to commit, so that one
    pass refreshes their days too and theirs find nothing left to do. Yields the ids of the
    ingestions waited for."""
    import fcntl

    from relops_pipeline.defs.recovery import inspect_runs

    with open(home.dagster_home / FOLLOWUPS_LOCK, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("relops: waiting for another ingestion's follow-ups to end", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
        instance = dagster_instance(home)

        def ingesting() -> set[str]:
            return {r.run_id for r in inspect_runs(instance)  # running, not queued: they commit soon
                    if r.job_name in INGEST_JOBS and r.alive and r.status in RUNNING and r.run_id != own_run}

        pending = ingesting() if wait_s > 0 else set()
        waited = set(pending)
        if pending:
            print(f"relops: waiting up to {wait_s:g} s for {len(pending)} other ingestion(s) in progress, "
                  "to refresh their days in the same pass", file=sys.stderr)
            deadline = time.monotonic() + wait_s
            while pending and time.monotonic() < deadline:
                time.sleep(0.25)
                pending &= ingesting()
        yield sorted(waited - pending)


def cmd_init(args) -> CommandResult:
    home = Home.resolve(args.home)
    written = home.init(example=args.example)
    dagster_instance(home)  # create the Dagster instance's storage now, once
    return CommandResult(
        {"home": str(home.root), "written": [str(p) for p in written]},
        f"relops home ready at {home.root}" + (f" ({len(written)} files written)" if written else " (kept as it was)")
        + ("" if args.example or any(home.workflows_dir.glob("*.yaml")) else
           "\nno workflows yet: add one with relops workflow add NAME --owner YOU (or relops init --example for the demo's)"),
    )


def _precheck(paths: Sequence[str], fmt: str | None, home_root: Path | None = None) -> tuple[list[Path], list[str]]:
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
        from relops_pipeline.lib.settings import SettingsError, load_settings

        try:
            settings = load_settings(Home.resolve(home_root).settings_file) if home_root else None
        except SettingsError as exc:
            return files, [str(exc)]
        for f in files:
            rule = settings.source_for(f) if settings else None
            if rule is not None and rule.format:
                continue  # the home's `sources:` rule names this file's format
            try:
                detect_format(f)
            except UnreadableInput as exc:
                problems.append(str(exc))
    if not files and not problems:
        problems.append(f"no trace files in {', '.join(paths)}")
    return files, problems


def ingest_job(home: Home) -> str:
    """The home's ingestion job: into the trace store when relops.yaml has `trace_store:`."""
    from relops_pipeline.lib.settings import SettingsError, load_settings

    try:
        store = load_settings(home.settings_file).trace_store
    except SettingsError as exc:
        raise CliError(str(exc)) from None
    return "ingest_traces_to_store_job" if store is not None else "ingest_traces_job"


def ingest(home: Home, paths: Sequence[str], fmt: str | None = None) -> dict:
    """Ingest through Dagster (an ingestion run, then what follows the days it reported)."""
    from relops_pipeline.defs.followups import bridge_gaps, ingested_days
    from relops_pipeline.lib.health import stale_days
    from relops_pipeline.lib.settings import SettingsError, load_settings
    from relops_pipeline.lib.traces_day import days_with_spans, stored_days_with_spans

    try:
        settings = load_settings(home.settings_file)
    except SettingsError as exc:
        raise CliError(str(exc)) from None
    files, problems = _precheck(paths, fmt, home.root)
    if problems:
        raise CliError("\n".join(problems))
    config: dict = {"paths": [str(f.resolve()) for f in files]}
    if fmt:
        config["format"] = fmt
    if chunk_mb := os.environ.get(CHUNK_ENV):
        try:
            config["chunk_mb"] = float(chunk_mb)
        except ValueError:
            raise CliError(f"{CHUNK_ENV}={chunk_mb!r}: expected a number of MiB") from None
    result = run_or_fail(home, ingest_job(home), what="ingestion", run_config={"ops": {"plan_ingest_chunks": {"config": config}}})
    summary = result.output_for_node("report_ingestion")
    summary["run_id"] = result.run_id
    summary["drift_run_ids"] = []
    days = ingested_days(result.asset_materializations_for_node("report_ingestion"))
    record = dagster_instance(home).get_run_record_by_id(result.run_id)
    committed_at = record.end_time if record is not None and record.end_time else time.time()
    summary["healed_days"], summary["waited_for"], summary["signals_run_ids"] = [], [], []
    summary["followups"] = "done"
    covered: set[str] = set()
    try:
        with followups_turn(home, wait_s=settings.coalesce_wait_s, own_run=result.run_id) as waited:
            summary["waited_for"] = waited
            # Days an earlier crash (or an ingestion still in progress) left without current
            # signals are refreshed along with these.
            with read_warehouse(home) as con:
                healed = sorted({d.day for d in stale_days(con)} - set(days))
                occupied = (days_with_spans(con, bridge_gaps(days)) if settings.trace_store is None
                            else stored_days_with_spans(settings.trace_store, bridge_gaps(days)))
            summary["healed_days"] = [d.isoformat() for d in healed]
            summary["signals_run_ids"] = refresh_days(home, days, drift_runs=summary["drift_run_ids"],
                                                      committed_at=committed_at, covered_by=covered, occupied=occupied)
            if healed:
                try:
                    summary["signals_run_ids"] += refresh_days(home, healed, drift_runs=summary["drift_run_ids"])
                except CliError as exc:  # an old day's trouble is reported, not this ingestion's failure
                    summary["healing_failed"] = str(exc)
    except KeyboardInterrupt:
        # The ingestion is committed: it stands; what follows it is redone by the next
        # ingestion, the follow-ups sensor, or `relops doctor --fix`.
        summary["followups"] = "pending (interrupted)"
    except Exception as exc:  # noqa: BLE001 -- the ingestion is committed whatever failed after it
        raise CliError(
            f"ingested {len(summary['files'])} files (committed, run {result.run_id}), but a follow-up failed: "
            f"{exc if isinstance(exc, CliError) else f'{type(exc).__name__}: {exc}'}\n"
            "the follow-ups are pending: `relops doctor` shows them, `relops doctor --fix` redoes them",
            exc.code if isinstance(exc, CliError) else EXIT_RUN_FAILED,
        ) from None
    summary["covered_by"] = sorted(covered)
    if summary["errors"]:  # files that became unreadable after the precheck; the rest is committed
        raise CliError("\n".join(f"{e['path']}: {e['error']}" for e in summary["errors"]), EXIT_RUN_FAILED)
    return summary


def ingest_text(summary: dict) -> str:
    """An ingestion summary as text: one line per file, the totals, the Dagster runs."""
    lines = []
    for f in summary["files"]:
        lines.append(
            f"{f['path']} [{f['format']}]: read {f['read']} = accepted {f['accepted']} + rejected {f['rejected']}"
            f" + duplicates {f['duplicates']}"
            + (f" (no release: {f['unknown_release']})" if f["unknown_release"] else "")
            + (f" (kept with an anomaly, latency NULL: {f['anomalies']})" if f.get("anomalies") else "")
        )
    t = summary["totals"]
    lines.append(
        f"total: {len(summary['files'])} files, read {t['read']} = accepted {t['accepted']} + rejected {t['rejected']}"
        f" + duplicates {t['duplicates']}; spans without release: {t['unknown_release']}"
    )
    if t.get("anomalies"):
        lines.append(
            f"{t['anomalies']} spans end before they start (clock skew) or report a negative latency: kept with "
            "latency NULL and flagged (relops rejects --anomalies)"
        )
    if summary.get("skipped"):
        lines.append(f"skipped {len(summary['skipped'])} documentation/metadata files")
    n = len(summary.get("signals_run_ids") or [])
    lines.append(f"dagster run: {summary['run_id']}" + (f"; signals runs: {n} (days {_ranges_text(summary['day_ranges'])})" if n else ""))
    if summary.get("waited_for"):
        lines.append(f"waited for {len(summary['waited_for'])} other ingestion(s) of this home to refresh their days "
                     "in the same pass")
    if summary.get("covered_by"):
        lines.append(f"days already refreshed since this commit by another ingestion's runs "
                     f"({', '.join(r[:8] for r in summary['covered_by'])}): not recomputed")
    if summary.get("healed_days") and not summary.get("healing_failed"):
        lines.append(f"also recomputed {len(summary['healed_days'])} day(s) an earlier crash or another ingestion "
                     "left stale")
    if summary.get("healing_failed"):
        lines.append(
            f"could not recompute {len(summary['healed_days'])} stale day(s) an earlier crash left: "
            f"{summary['healing_failed']} (see `relops doctor`)"
        )
    if summary.get("followups", "done") != "done":
        lines.append(
            f"follow-ups {summary['followups']}: the ingestion is committed; the next ingestion, the "
            "follow-ups sensor or `relops doctor --fix` redoes them"
        )
    return "\n".join(lines)


def _ranges_text(ranges) -> str:
    text = ", ".join(a if a == b else f"{a}..{b}" for a, b in ranges[:4])
    return text + (f" and {len(ranges) - 4} more ranges" if len(ranges) > 4 else "")


def cmd_ingest(args) -> CommandResult:
    home = Home.resolve(args.home)
    summary = ingest(home, args.paths, args.format)
    return CommandResult(summary, ingest_text(summary))


def cmd_status(args) -> CommandResult:
    home = Home.resolve(args.home)
    if getattr(args, "workflow", None):
        return workflow_status(home, args.workflow)
    with read_warehouse(home) as con:
        totals = con.execute(
            "SELECT count(*), count(DISTINCT trace_id), count(*) FILTER (WHERE NOT release_known), "
            "min(start_time), max(start_time), count(*) FILTER (WHERE anomalies IS NOT NULL) FROM spans"
        ).fetchone()
        by_release = con.execute(
            "SELECT workflow, release, count(*) AS spans, count(DISTINCT start_time::DATE) AS days, "
            "min(start_time)::DATE AS first_day, max(start_time)::DATE AS last_day "
            "FROM spans GROUP BY ALL ORDER BY workflow, release"
        ).fetchall()
        by_day = con.execute("SELECT start_time::DATE AS day, workflow, release, count(*) FROM spans GROUP BY ALL ORDER BY ALL").fetchall()
        rejects = con.execute("SELECT reason, count(*) FROM trace_rejects GROUP BY ALL ORDER BY 2 DESC, 1").fetchall()
        batches = con.execute(
            "SELECT count(*), coalesce(sum(records_read), 0), coalesce(sum(accepted), 0), coalesce(sum(rejected), 0), "
            "coalesce(sum(duplicates), 0) FROM ingest_batches"
        ).fetchone()
        waiting = pending_patches(con)
    out = {
        "home": str(home.root),
        "spans": totals[0],
        "traces": totals[1],
        "unknown_release_spans": totals[2],
        "anomalous_spans": totals[5],
        "first_span": totals[3].isoformat() if totals[3] else None,
        "last_span": totals[4].isoformat() if totals[4] else None,
        "by_release": [
            {"workflow": w, "release": r, "spans": n, "days": d, "first_day": str(a), "last_day": str(b)} for w, r, n, d, a, b in by_release
        ],
        "by_day": [{"day": str(d), "workflow": w, "release": r, "spans": n} for d, w, r, n in by_day],
        "rejects_by_reason": [{"reason": r, "count": n} for r, n in rejects],
        "ingest": dict(zip(("batches", "read", "accepted", "rejected", "duplicates"), map(int, batches), strict=False)),
        "langsmith_patches_waiting": waiting,
    }
    received = _received(home)
    if received:
        out["received"] = received
    lines = [
        f"warehouse {home.warehouse_path}",
        *([_received_text(received)] if received else []),
        f"spans {out['spans']} in {out['traces']} traces, {out['first_span']} .. {out['last_span']};"
        f" without release: {out['unknown_release_spans']}"
        + (f"; kept with an anomaly: {out['anomalous_spans']} (relops rejects --anomalies)" if out["anomalous_spans"] else ""),
        f"ingested {out['ingest']['batches']} files: read {out['ingest']['read']} = accepted {out['ingest']['accepted']}"
        f" + rejected {out['ingest']['rejected']} + duplicates {out['ingest']['duplicates']}",
        *([f"LangSmith run ends waiting for their run's start: {waiting} (merged when it is ingested; relops rejects)"]
          if waiting else []),
        "",
        f"{'workflow':<24} {'release':<28} {'spans':>9} {'days':>5}  first .. last",
    ]
    for r in out["by_release"]:
        lines.append(
            f"{r['workflow'][:24]:<24} {r['release'][:28]:<28} {r['spans']:>9} {r['days']:>5}  {r['first_day']} .. {r['last_day']}"
        )
    if rejects:
        lines += ["", "rejects by reason:"] + [f"  {n:>7}  {r}" for r, n in rejects]
    lines.append("(per-day counts: relops status --json)")
    return CommandResult(out, "\n".join(lines))


def _received(home: Home) -> dict | None:
    """What `relops serve` received into this home (its state file), or None."""
    from relops_pipeline.lib.receiver.spool import read_state

    state = read_state(home.landing_dir)
    if not state:
        return None
    return {"url": (state.get("listening") or {}).get("url"), "counters": state.get("counters") or {},
            "spool_files": state.get("spool_files"), "spool_bytes": state.get("spool_bytes"), "as_of": state.get("updated_at"),
            "stopped_at": state.get("stopped_at")}


def _received_text(r: dict) -> str:
    c = r["counters"]
    return (f"received by relops serve ({r['url']}): {c.get('requests', 0)} requests, {c.get('spans', 0)} spans, "
            f"{c.get('log_records', 0)} log records; not ingested yet {r['spool_files']} files ({r['spool_bytes']} bytes) as of "
            f"{r['as_of']}; refused: 401 {c.get('unauthorized_401', 0)}, 413 {c.get('too_large_413', 0)}, "
            f"429 {c.get('throttled_429', 0)}")


def _anomalies(home: Home, limit: int) -> CommandResult:
    """The spans kept with an anomaly (latency NULL): file, line, trace and span, what is wrong."""
    with read_warehouse(home) as con:
        total = con.execute("SELECT count(*) FROM spans WHERE anomalies IS NOT NULL").fetchall()[0][0]
        rows = con.execute(
            "SELECT source_file, source_line, trace_id, span_id, workflow, release, anomalies, start_time, end_time, "
            "date_diff('microsecond', end_time, start_time) / 1000.0, ingest_batch_id FROM spans "
            "WHERE anomalies IS NOT NULL ORDER BY start_time, source_file, source_line, trace_id, span_id LIMIT ?",
            [limit],
        ).fetchall()
    items = [
        {
            "source_file": f,
            "source_line": ln,
            "trace_id": t,
            "span_id": sp,
            "workflow": w,
            "release": r,
            "anomalies": list(a),
            "start_time": st.isoformat(),
            "end_time": en.isoformat() if en else None,
            "ends_before_start_ms": skew if skew is not None and skew > 0 else None,
            "batch_id": b,
        }
        for f, ln, t, sp, w, r, a, st, en, skew, b in rows
    ]
    lines = [
        f"{total} spans kept with an anomaly (latency NULL, still counted as requests)"
        + (f" (showing {len(items)})" if len(items) < total else "")
    ]
    for i in items:
        what = ", ".join(
            f"ends {i['ends_before_start_ms']:g} ms before it starts"
            if a == "end_before_start" and i["ends_before_start_ms"]
            else a.replace("_", " ")
            for a in i["anomalies"]
        )
        lines.append(
            f"{i['source_file']}:{i['source_line']}: trace {i['trace_id']} span {i['span_id']} ({i['workflow']}@{i['release']}): {what}"
        )
    return CommandResult({"total": total, "anomalies": items}, "\n".join(lines))


def cmd_rejects(args) -> CommandResult:
    home = Home.resolve(args.home)
    if getattr(args, "anomalies", False):
        return _anomalies(home, args.limit)
    with read_warehouse(home) as con:
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
    return CommandResult({"total": total, "rejects": items}, "\n".join(lines))


def register(add: Commands) -> None:
    """Register init, ingest, status and rejects on the `relops` parser."""
    p = add("init", cmd_init, "create a home: its configuration, no workflows (--example: the demo's workflows and releases)")
    p.add_argument("--example", action="store_true", help="also copy the example workflows, eval suites and release manifests")
    p = add("ingest", cmd_ingest, "ingest trace files or folders into the warehouse")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--format", default=None, help="force a format instead of detecting it")
    p = add("status", cmd_status, "summarise the warehouse; with a WORKFLOW: live, canary, last known good, incidents, last drill")
    p.add_argument("workflow", nargs="?", default=None)
    p = add("rejects", cmd_rejects, "list quarantined records with their reasons (--anomalies: spans kept with a flag)")
    p.add_argument("--limit", type=positive_int, default=50)
    p.add_argument(
        "--anomalies",
        action="store_true",
        help="list instead the spans that were kept but flagged (a span ending before it starts, a negative "
        "latency): kept with latency NULL, counted as requests, left out of latency statistics",
    )
