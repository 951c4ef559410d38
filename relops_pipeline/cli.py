"""The `relops` command: a thin front door over the Dagster definitions.

Commands that compute or change state run through Dagster on the home's instance, so the UI
shows the same history. Each prints a short human summary, or one JSON object with --json.
Exit codes: 0 success; 3 bad input (unreadable path, unknown format, bad configuration);
4 a Dagster run failed; 5 no such home or warehouse yet.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys

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
    home.ensure()
    os.environ[HOME_ENV] = str(home.root)
    os.environ["DAGSTER_HOME"] = str(home.dagster_home)


def _instance(home: Home):
    import fcntl

    _activate(home)
    from dagster import DagsterInstance

    # Two processes creating a new instance's SQLite storage at once race in its schema
    # migrations; the first one creates it under a lock, the others then open it.
    with open(home.dagster_home / ".instance.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return DagsterInstance.get()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _defs():
    from relops_pipeline.definitions import defs

    return defs


def run_job(home: Home, job_name: str, *, run_config: dict | None = None, tags: dict | None = None):
    """Execute a job in this process, recorded on the home's Dagster instance."""
    instance = _instance(home)
    from relops_pipeline.defs.beta import expected_beta_warnings

    with expected_beta_warnings():  # Dagster warns on its own use of a beta parameter here
        job = _defs().resolve_job_def(job_name)
    # The run's own log goes to the instance (the UI shows it); the terminal gets the summary
    # (a BLOCKed gate fails its run by design: no stack trace on the terminal for that).
    # RELOPS_LOG_LEVEL=INFO shows the run's log here too.
    quiet = {"loggers": {"console": {"config": {"log_level": os.environ.get("RELOPS_LOG_LEVEL", "CRITICAL")}}}}
    return job.execute_in_process(
        run_config={**quiet, **(run_config or {})}, instance=instance, tags={"relops/trigger": "cli", **(tags or {})}, raise_on_error=False
    )


def _run_failure(result) -> str:
    """The innermost error message of a failed run: the user-facing cause, not Dagster's wrapper."""
    for event in result.all_events:
        if event.is_failure and event.event_specific_data is not None:
            err = getattr(event.event_specific_data, "error", None)
            while err is not None and getattr(err, "cause", None) is not None:
                err = err.cause
            if err is not None:
                import re

                line = err.message.strip().splitlines()[-1]
                return re.sub(r"^relops_pipeline\.[\w.]+\.(\w+(Error|Refused)): ", "", line)
    return "the run failed (see the Dagster UI)"


def refresh_days(home: Home, ranges: Sequence[Sequence[str]], *, drift_runs: list[str] | None = None) -> list[str]:
    """Validate and recompute daily signals and features: one run per range of consecutive
    days; then the rolling drift of the days whose trailing week they touch (what the drift
    sensor does when the daemon runs), in one run."""
    from relops_pipeline.defs.drift.sensors import affected_days
    from relops_pipeline.defs.partitions import daily_partitions

    keys = daily_partitions.get_partition_keys()
    run_ids = []
    drift_ranges: list[list[str]] = []
    for first, last in ranges:
        first, last = max(first, keys[0]), min(last, keys[-1])
        if first > last:
            continue
        result = run_job(
            home,
            "trace_signals_job",
            tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
        )
        if not result.success:
            raise CliError(f"signals run {result.run_id} for {first}..{last} failed: {_run_failure(result)}", EXIT_RUN_FAILED)
        run_ids.append(result.run_id)
        lo, hi = affected_days(first, last, keys)
        # One run over the hull: windows without traces cost one count query each.
        drift_ranges = [[min(lo, drift_ranges[0][0]), max(hi, drift_ranges[0][1])]] if drift_ranges else [[lo, hi]]
    for lo, hi in drift_ranges:
        # The terminal waits for this run: only the latest 90 days (older history is for the
        # drift sensor, which covers every affected day, or `relops drift`'s weekly view).
        lo = max(lo, (dt.date.fromisoformat(hi) - dt.timedelta(days=89)).isoformat())
        rid = refresh_rolling_drift(home, lo, hi)
        if drift_runs is not None:
            drift_runs.append(rid)
    return run_ids


def refresh_rolling_drift(home: Home, lo: str, hi: str) -> str:
    """Recompute the trailing-7-day drift of the days lo..hi in one run."""
    from relops_pipeline.defs.drift.sensors import RANGE_END_TAG, RANGE_START_TAG

    result = run_job(home, "rolling_drift_job", tags={RANGE_START_TAG: lo, RANGE_END_TAG: hi})
    if not result.success:
        raise CliError(f"rolling drift run {result.run_id} failed: {_run_failure(result)}", EXIT_RUN_FAILED)
    return result.run_id


# ---------------------------------------------------------------------------------------------
# Commands


def cmd_init(args) -> dict:
    home = Home.resolve(args.home)
    written = home.init()
    _instance(home)  # create the Dagster instance's storage now, once
    return {
        "home": str(home.root),
        "written": [str(p) for p in written],
        "_text": f"relops home ready at {home.root}" + (f" ({len(written)} files written)" if written else " (kept as it was)"),
    }


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


def ingest(home: Home, paths: Sequence[str], fmt: str | None = None) -> dict:
    """Ingest through Dagster (an ingestion run, then a signals run for the days touched)."""
    files, problems = _precheck(paths, fmt, home.root)
    if problems:
        raise CliError("\n".join(problems))
    config: dict = {"paths": [str(f.resolve()) for f in files]}
    if fmt:
        config["format"] = fmt
    result = run_job(home, "ingest_traces_job", run_config={"ops": {"ingest_trace_files": {"config": config}}})
    if not result.success:
        raise CliError(f"ingestion run {result.run_id} failed: {_run_failure(result)}", EXIT_RUN_FAILED)
    summary = result.output_for_node("ingest_trace_files")
    summary["run_id"] = result.run_id
    summary["drift_run_ids"] = []
    summary["signals_run_ids"] = refresh_days(home, summary["day_ranges"], drift_runs=summary["drift_run_ids"])
    if summary["errors"]:  # files that became unreadable after the precheck; the rest is committed
        raise CliError("\n".join(f"{e['path']}: {e['error']}" for e in summary["errors"]), EXIT_RUN_FAILED)
    return summary


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
    n = len(summary.get("signals_run_ids") or [])
    lines.append(f"dagster run: {summary['run_id']}" + (f"; signals runs: {n} (days {_ranges_text(summary['day_ranges'])})" if n else ""))
    return "\n".join(lines)


def _ranges_text(ranges) -> str:
    text = ", ".join(a if a == b else f"{a}..{b}" for a, b in ranges[:4])
    return text + (f" and {len(ranges) - 4} more ranges" if len(ranges) > 4 else "")


def cmd_ingest(args) -> dict:
    home = Home.resolve(args.home)
    summary = ingest(home, args.paths, args.format)
    return {**summary, "_text": _ingest_text(summary)}


def _default_actor() -> str:
    return os.environ.get("USER") or "unknown"


def _read_warehouse(home: Home):
    from relops_pipeline.lib.warehouse import open_warehouse

    if not home.warehouse_path.exists():
        raise CliError(f"no warehouse at {home.warehouse_path}: ingest traces first (relops ingest PATH)", EXIT_NO_HOME)
    # Read-write open: it migrates an older warehouse, and read-only opens conflict the same way.
    return open_warehouse(home.warehouse_path)


def cmd_status(args) -> dict:
    home = Home.resolve(args.home)
    if getattr(args, "workflow", None):
        return workflow_status(home, args.workflow)
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


def demo_releases(home: Home) -> list[dict]:
    """Register every release manifest in the home, oldest version first, with its eval run."""
    from relops_pipeline.lib.evals.manifests import load_manifest
    from relops_pipeline.lib.evals.suites import version_sort_key

    result = run_job(home, "suites_job")
    if not result.success:
        raise CliError(f"suites run {result.run_id} failed: {_run_failure(result)}", EXIT_RUN_FAILED)
    out = []
    for wf_dir in sorted((home.root / "releases").glob("*")):
        for path in sorted(wf_dir.glob("*.yaml"), key=lambda p: version_sort_key(p.stem)):
            r = register_release(home, load_manifest(path), by="demo")
            print(f"      {r['release_key']}: {_eval_line(r['eval'])}", file=sys.stderr)
            out.append(r)
    return out


def demo_gates(home: Home, releases: list[dict]) -> list[dict]:
    """Gate every demo release in order; a workflow's first release (no baseline to compare
    with) ends in REVIEW and is approved by the workflow's owner, as a person would."""
    from relops_pipeline.lib.evals.model import split_release_key
    from relops_pipeline.lib.gates.service import approve
    from relops_pipeline.lib.warehouse import open_warehouse

    out = []
    for r in releases:
        key = r["release_key"]
        workflow, version = split_release_key(key)
        gate = _latest_gate(home, key)
        if gate is not None:  # a second demo keeps the decisions made the first time
            out.append({"release_key": key, "decision": gate["decision"],
                        "baseline": gate["result"].get("baseline_version"), "reasons": gate["result"]["reasons"],
                        "report": gate["report_html"], "approved_by": None})
            print(f"      {key}: {gate['decision']} (decided earlier)", file=sys.stderr)
            continue
        result = run_job(home, "release_gate_job", tags={"dagster/partition": key})
        gate = _latest_gate(home, key, result.run_id)
        if gate is None:
            raise CliError(f"gate run {result.run_id} for {key} failed: {_run_failure(result)}", EXIT_RUN_FAILED)
        row = {"release_key": key, "decision": gate["decision"], "baseline": gate["result"].get("baseline_version"),
               "reasons": gate["result"]["reasons"], "report": gate["report_html"], "approved_by": None}
        if gate["decision"] == "REVIEW" and not row["baseline"]:
            wf = _workflow(home, workflow)
            with open_warehouse(home.warehouse_path) as con:
                approve(con, key, approvers=wf.approvers, by=wf.owner, reason="first release of the workflow: reviewed by hand as the baseline")
            row["approved_by"] = wf.owner
        print(f"      {key}: {row['decision']}" + (f" (approved by {row['approved_by']})" if row["approved_by"] else "")
              + f" vs {row['baseline'] or 'no baseline'}", file=sys.stderr)
        out.append(row)
    return out


def _eval_line(e: dict) -> str:
    if not e:
        return "no eval"
    rates = ", ".join(f"{m} {v['pass_rate']:.2f}" for m, v in e["metrics"].items())
    return f"{e['cases']} cases x {e['samples'] // max(e['cases'], 1)} samples: {rates}" + (
        f"; must-pass failing {e['must_pass_failing_cases']}" if e.get("must_pass_failing_cases") else "")


def cmd_demo(args) -> dict:
    from relops_pipeline.lib.demo_traces import generate_demo_traces

    home = Home.resolve(args.home)
    home.ensure()
    print(f"relops demo: home {home.root}", file=sys.stderr)
    print("[1/7] generating the demo world's production traces ...", file=sys.stderr)
    gen = generate_demo_traces(home.landing_dir / "demo", seed=args.seed, scale=args.scale)
    print(f"      {gen.spans} spans in {len(gen.files)} files", file=sys.stderr)
    print("[2/7] ingesting them through Dagster ...", file=sys.stderr)
    summary = ingest(home, [str(home.landing_dir / "demo")])
    print("[3/7] registering the demo releases and running their evals through Dagster ...", file=sys.stderr)
    releases = demo_releases(home)
    print("[4/7] gating every release against its baseline ...", file=sys.stderr)
    gates = demo_gates(home, releases)
    print("[5/7] weekly drift of every complete week through Dagster ...", file=sys.stderr)
    compute_weekly_drift(home, None, refresh=False)
    drift = demo_drift_lines(home)
    print("[6/7] rollouts, doc-qa v2.4.0's canary judged on production traces, a rollback drill ...", file=sys.stderr)
    rollout = demo_rollout(home)
    print("[7/7] the cadence: a past incident, the week's review sample and memo, the monthly proposals ...",
          file=sys.stderr)
    cadence = demo_cadence(home)
    t = summary["totals"]
    expected = gen.expected_ingest()
    first_time = (t["accepted"], t["rejected"], t["unknown_release"]) == (
        expected["accepted_spans"], expected["rejected_lines"], expected["unknown_release_spans"])
    again = t["accepted"] == t["rejected"] == 0 and t["duplicates"] == expected["accepted_spans"] + expected["rejected_lines"]
    matches = first_time or again
    lines = [
        _ingest_text({**summary, "files": []}).replace("total: 0 files", f"total: {len(summary['files'])} files"),
        f"expected from the generator: accepted {expected['accepted_spans']}, rejected {expected['rejected_lines']},"
        f" without release {expected['unknown_release_spans']}"
        + (" — matches" if first_time else " — already ingested: every record a duplicate" if again else " — MISMATCH"),
        "",
        "releases, their evals and gate decisions:",
        *[f"  {r['release_key']:<26} {g['decision']:<6} vs {g['baseline'] or '-':<8} {_eval_line(r['eval'])}"
          + (f"  [approved by {g['approved_by']}]" if g["approved_by"] else "")
          for r, g in zip(releases, gates)],
        *[f"  {g['release_key']} BLOCK: {g['reasons'][0]}" for g in gates if g["decision"] == "BLOCK"],
        "",
        "weekly drift against each workflow's reference window:",
        *drift,
        "",
        "rollout and rollback:",
        *rollout,
        "",
        "the weekly and monthly cadence:",
        *cadence,
        "",
        "where to look:",
        f"  relops --home {home.root} status     spans per workflow, release and day",
        f"  relops --home {home.root} rejects    the quarantined records, with reasons",
        f"  {home.reports_dir / 'gates'}   gate reports (HTML, markdown, JSON) per release",
        f"  relops --home {home.root} drift --week 2026-11-02   drift per column and release of a week",
        f"  {home.reports_dir / 'drift'}   Evidently drift reports per workflow and week",
        f"  relops --home {home.root} alerts     the alert outbox",
        f"  relops --home {home.root} status doc-qa   live, canary, last known good, incidents, drills",
        f"  {home.registry_dir}   pointer files the serving application reads",
        f"  {home.reports_dir / 'runbooks'}   rollback runbooks; {home.reports_dir / 'canary'}: canary reports",
        f"  {home.reports_dir / 'memos'}   weekly stability memos (markdown and HTML)",
        f"  {home.reports_dir / 'review'}   weekly review sheets (CSV to label, HTML to read)",
        f"  relops --home {home.root} proposals   this month's drafts: read, then accept or reject",
        f"  {home.reports_dir / 'proposals'}   proposal reports (backtests, calibration before/after)",
        f"  {home.reports_dir / 'readiness'}   readiness reviews with a first month's plan",
        "  make ui                               the Dagster UI on http://127.0.0.1:3000",
    ]
    if not matches:
        raise CliError("\n".join(lines[:2]) + "\nthe demo's counts do not match what was generated", EXIT_RUN_FAILED)
    return {
        "home": str(home.root),
        "generated": gen.expected_ingest(),
        "matches_generator": matches,
        "releases": [{"release_key": r["release_key"], "eval": r["eval"], "gate": g} for r, g in zip(releases, gates)],
        "ingest": {"totals": t, "run_id": summary["run_id"], "signals_run_ids": summary["signals_run_ids"]},
        "drift": drift,
        "rollout": rollout,
        "cadence": cadence,
        "_text": "\n".join(lines),
    }


# The demo's rollout story: what each workflow serves, in order (a first release goes straight
# to full; later ones go through canary). doc-qa v2.4.0 stays in canary to be judged.
DEMO_ROLLOUTS = (("support-triage", "v1.4.0", "full"), ("support-triage", "v1.5.1", "canary"),
                 ("support-triage", "v1.5.1", "full"), ("doc-qa", "v2.1.0", "full"), ("doc-qa", "v2.3.0", "canary"),
                 ("doc-qa", "v2.3.0", "full"), ("doc-qa", "v2.4.0", "canary"))


def demo_rollout(home: Home) -> list[str]:
    """Roll the demo releases out (once: a home that has a registry keeps it), judge doc-qa
    v2.4.0's canary (rolled back automatically when it fails), drill, and describe the result."""
    from relops_pipeline.lib.registry.state import get_state

    with _read_warehouse(home) as con:
        fresh = {w: get_state(con, w).seq == 0 for w in ("support-triage", "doc-qa")}
    for workflow, version, stage in DEMO_ROLLOUTS:
        if not fresh[workflow]:
            continue
        owner = _workflow(home, workflow).owner
        result = run_job(home, "registry_change_job", run_config={"ops": {"change_registry": {"config": {
            "workflow": workflow, "release": version, "stage": stage, "actor": owner,
            "reason": f"demo: {version} to {stage}"}}}})
        if not result.success:
            raise CliError(f"demo rollout of {workflow} {version} to {stage} failed: {_run_failure(result)}", EXIT_RUN_FAILED)
    lines = []
    with _read_warehouse(home) as con:
        in_canary = get_state(con, "doc-qa").canary == "v2.4.0"
    if in_canary:
        canary = cmd_canary(argparse.Namespace(home=str(home.root), workflow="doc-qa", version="v2.4.0"))
        lines += ["  " + line for line in canary["_text"].splitlines()]
    drill = run_job(home, "drill_job")
    if not drill.success:
        raise CliError(f"demo drill run {drill.run_id} failed: {_run_failure(drill)}", EXIT_RUN_FAILED)
    for w in ("support-triage", "doc-qa"):
        status = workflow_status(home, w)
        st = status["state"]
        drill = status["drill"]
        took = (drill.get("last_drill") or {}).get("duration_ms")
        lines.append(f"  {w:<16} live {st['live'] or '-'}, canary {st['canary'] or '-'}, last known good "
                     f"{st['last_known_good'] or '-'}; open incidents {len(status['incidents'])}; drill {drill['status']}"
                     + (f" ({took:.0f} ms)" if took is not None else ""))
    return lines


# The demo world's incident before relops watched it: support-triage v1.5.0's canary truncated
# replies until it was rolled back by hand (demo_traces: canary day 43, rolled back day 45).
DEMO_PAST_INCIDENT = ("support-triage", "v1.5.0",
                      "v1.5.0 truncated replies (max_tokens 256): invalid JSON and more thumbs-down",
                      "rolled back to v1.4.0 by hand; fixed in v1.5.1 (max_tokens 400 again)")
DEMO_REVIEWER = "sam.okafor"


def demo_past_incident(home: Home) -> dict:
    """Record the demo world's past incident once (backdated to when the problem began, linked
    to the truncated traces), and close it as it was closed."""
    from relops_pipeline.lib.demo_traces import release_schedule
    from relops_pipeline.lib.incidents import close_incident, open_incident

    workflow, version, title, resolution = DEMO_PAST_INCIDENT
    # The schedule's versions are the resource's service.version ("1.5.0"); release keys carry a "v".
    rel = next(r for r in release_schedule() if (r.workflow, f"v{r.version}") == (workflow, version))
    with _read_warehouse(home) as con:
        known = con.execute("SELECT incident_id FROM incidents WHERE workflow = ? AND title = ?", [workflow, title]).fetchall()
        if known:
            return {"incident_id": known[0][0], "created": False}
        traces = [r[0] for r in con.execute(
            "SELECT trace_id FROM trace_features WHERE workflow = ? AND release = ? AND finish_reason = 'length' "
            "ORDER BY start_time LIMIT 20", [workflow, version]).fetchall()]
        owner = _workflow(home, workflow).owner
        row = open_incident(con, workflow, version, title, "manual", owner, {"traces": traces}, started_at=rel.canary_start)
        close_incident(con, row["incident_id"], closed_by=owner, resolution=resolution)
    return {"incident_id": row["incident_id"], "created": True, "traces": len(traces)}


def demo_review_labels(home: Home, week: str) -> Path:
    """The demo's weekly reviewer: label the week's sheet (refusals and truncated answers fail;
    a provider error is "unsure" — not the release's answer; the rest pass) and save it beside
    the sheet, as a person would."""
    import csv

    sheet = home.reports_dir / "review" / f"{week}.csv"
    with open(sheet, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    with _read_warehouse(home) as con:
        flags = {r[0]: r[1:] for r in con.execute(
            "SELECT trace_id, is_error, is_refusal, finish_reason FROM trace_features WHERE trace_id IN "
            "(SELECT trace_id FROM review_samples WHERE week = ?)", [week]).fetchall()}
    for r in rows:
        is_error, is_refusal, finish = flags.get(r["trace_id"], (False, False, None))
        why = "refusal" if is_refusal else "truncated" if finish == "length" else None
        label = "fail" if why else "unsure" if is_error else "pass"
        r.update(label=label, failure_type=why or "", reviewer=DEMO_REVIEWER,
                 note="provider error, no answer to judge" if label == "unsure" else "")
    out = sheet.with_name(f"{week}.labelled.csv")
    with open(out, "w", encoding="utf-8-sig", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows(rows)
    return out


def _proposal_evidence_lines(p: dict) -> list[str]:
    """A proposal's evidence in a line or two: the ratchet's backtest, the calibration's
    alerts before and after, the suite cases' incidents."""
    ev = p.get("evidence") or {}
    if p["kind"] == "thresholds":
        b = (ev.get("backtest") or {}).get("summary") or {}
        changed = [*b.get("newly_blocked", []), *b.get("newly_review", [])]
        return [f"backtest over {b.get('replayed', 0)} past releases: "
                + (f"would have changed {', '.join(changed)}" if changed else "no past decision would change")]
    if p["kind"] == "alert_rules":
        out = []
        for r in ev.get("rules", []):
            if r.get("status") != "proposed":
                continue
            before, after = r["before"], r["after"]
            out.append(f"{r['name']}: {before['firings']} alerts ({before['noise']} without an incident, "
                       f"{before['noise_per_month']:g}/month) -> {after['firings']} ({after['noise']}, "
                       f"{after['noise_per_month']:g}/month) over {ev.get('days')} days; still catches "
                       f"{len(after['caught'])} of {len(before['caught'])} incidents it caught")
        return out
    if p["kind"] == "suite":
        return [f"{len(i['cases'])} cases from {i['incident_id']} ({i['title']})"
                for i in ev.get("incidents", []) if i.get("cases")]
    return []


def _label_counts(home: Home, week: str) -> str:
    with _read_warehouse(home) as con:
        rows = con.execute(
            "SELECT label, count(*) FROM (SELECT l.sample_id, arg_max(l.label, l.imported_at) AS label FROM trace_labels l "
            "JOIN review_samples s USING (sample_id) WHERE s.week = ? GROUP BY l.sample_id) GROUP BY label ORDER BY 2 DESC",
            [week]).fetchall()
    return ", ".join(f"{n} {label}" for label, n in rows) or "no labels"


def demo_cadence(home: Home) -> list[str]:
    """The demo's month of cadence: the past incident, the week's review sample labelled and
    imported, the weekly memo, the monthly proposals, and the suite proposal made from the
    canary incident accepted — a new suite version the backfill evaluates for every release."""
    from relops_pipeline import cli_cadence
    from relops_pipeline.lib.proposals.store import list_proposals

    past = demo_past_incident(home)
    with _read_warehouse(home) as con:
        last_day = con.execute("SELECT max(day) FROM trace_features").fetchall()[0][0]
    week = last_day - dt.timedelta(days=last_day.weekday() + (0 if last_day.weekday() == 6 else 7))
    week_key = week.isoformat()
    review = cli_cadence.cmd_review(argparse.Namespace(home=str(home.root), action="sample", week=week_key, file=None))
    labelled = demo_review_labels(home, week_key)
    imported = cli_cadence.cmd_review(argparse.Namespace(home=str(home.root), action="import", file=str(labelled),
                                                         by=DEMO_REVIEWER, open_incidents=False, week=None))
    memo = cli_cadence.cmd_memo(argparse.Namespace(home=str(home.root), week=week_key, full=False))
    print("      the monthly proposals (suite cases from incidents, threshold ratchets, alert calibration) ...",
          file=sys.stderr)
    run_job(home, "monthly_cadence_job")
    with _read_warehouse(home) as con:
        drafts = list_proposals(con, status="draft")
        accepted = list_proposals(con, kind="suite", workflow="doc-qa", status="accepted")
    lines = [
        f"  past incident {past['incident_id']}: support-triage v1.5.0 truncated replies (recorded, closed)",
        f"  review sample of the week of {week_key}: {sum(r['traces'] for r in review['samples'])} traces; labels "
        f"imported by {DEMO_REVIEWER}: {imported.get('written', 0)} new, {imported.get('unchanged', 0)} unchanged "
        f"({_label_counts(home, week_key)})",
        f"  stability memo of the week of {week_key}:",
        *[f"    {line}" for line in memo["summary"]],
        f"    read: {memo['html_path']}",
        f"          {memo['md_path']}",
    ]
    for p in drafts:
        lines.append(f"  draft {p['proposal_id']}:")
        lines.append(f"    {p['title']}")
        lines += [f"    {line}" for line in _proposal_evidence_lines(p)]
    with _read_warehouse(home) as con:
        ready = con.execute("SELECT workflow, arg_max(status, reviewed_at), arg_max(result, reviewed_at) "
                            "FROM readiness_reviews GROUP BY workflow ORDER BY workflow").fetchall()
    for workflow, status, result in ready:
        plan = json.loads(result).get("plan") or []
        lines.append(f"  readiness of {workflow}: {status}" + (f"; first step: {plan[0]['title']}" if plan else ""))
    suite_draft = next((p for p in drafts if p["kind"] == "suite" and p["workflow"] == "doc-qa"), None)
    if suite_draft and not accepted:
        owner = _workflow(home, "doc-qa").owner
        print(f"      {owner} accepts {suite_draft['proposal_id']}; evaluating every doc-qa release on the new suite ...",
              file=sys.stderr)
        out = cli_cadence.accept_or_reject(home, "suite", suite_draft["proposal_id"], action="accept", by=owner,
                                           reason="cases from the v2.4.0 canary incident")
        lines.append(f"  {out['_text']}")
        back = backfill_evals(home, "doc-qa", suite_version=out["version"], in_process=True)
        for r in back["runs"]:
            lines.append(f"    {r['release_key']:<26} {_eval_line(r)}")
        gate = cmd_gate(argparse.Namespace(home=str(home.root), workflow="doc-qa", version="v2.4.0", baseline=None,
                                           suite_version=out["version"], junit=None, markdown=None))
        lines.append(f"  doc-qa v2.4.0 on suite {out['version']}: {gate['decision']}"
                     + (f" — {gate['reasons'][0]}" if gate.get("reasons") else ""))
    elif accepted:
        lines.append(f"  suite proposal {accepted[0]['proposal_id']} accepted earlier by {accepted[0]['decided_by']}"
                     f" (suite {accepted[0]['result_version']})")
    return lines


def demo_drift_lines(home: Home) -> list[str]:
    """One line per workflow: which weeks drifted (and why), which stayed stationary."""
    with _read_warehouse(home) as con:
        rows = con.execute(
            "SELECT workflow, period_start, status, severity, critical_drifted, drifted_share FROM drift_summaries "
            "WHERE granularity = 'weekly' AND release = '*' ORDER BY workflow, period_start").fetchall()
    by_wf: dict[str, list] = {}
    for wf, week, status, severity, critical, share in rows:
        by_wf.setdefault(wf, []).append((str(week), status, severity, json.loads(critical) if critical else [], share))
    lines = []
    for wf, weeks in by_wf.items():
        flagged = [w for w in weeks if w[1] == "drift"]
        quiet = [w for w in weeks if w[1] == "ok"]
        text = f"  {wf:<16} {len(quiet)} weeks without drift"
        if flagged:
            first = flagged[0]
            why = ", ".join(first[3]) or f"share {first[4]:.2f}"
            text += f"; DRIFT ({first[2]}) from the week of {first[0]} in {len(flagged)} weeks: {why}"
        lines.append(text)
    return lines or ["  no complete week yet"]


# ---------------------------------------------------------------------------------------------
# Workflows, releases, suites and evals


def _workflow(home: Home, name: str):
    from relops_pipeline.lib.workflows import WorkflowError, load_workflow

    try:
        return load_workflow(home.workflows_dir, name)
    except WorkflowError as exc:
        raise CliError(str(exc)) from None


def _workflow_release(home: Home, workflow: str, version: str):
    """The workflow's configuration and the release key, or a one-line error."""
    from relops_pipeline.lib.evals.model import release_key

    wf = _workflow(home, workflow)
    try:
        return wf, release_key(wf.name, version)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def cmd_workflow_add(args) -> dict:
    from relops_pipeline.lib.workflows import WorkflowError, add_workflow

    home = Home.resolve(args.home)
    home.ensure()
    try:
        path = add_workflow(home.workflows_dir, args.name, owner=args.owner)
    except WorkflowError as exc:
        raise CliError(str(exc)) from None
    return {"workflow": args.name, "path": str(path), "_text": f"workflow {args.name} written to {path} (edit its runner and scorers)"}


def _add_release_partition(home: Home, key: str) -> None:
    from relops_pipeline.defs.evals.partitions import releases_partitions

    instance = _instance(home)
    if not instance.has_dynamic_partition(releases_partitions.name, key):
        instance.add_dynamic_partitions(releases_partitions.name, [key])


def _run_partition(home: Home, job: str, key: str, tags: dict) -> Any:
    result = run_job(home, job, tags={"dagster/partition": key, **tags})
    if not result.success:
        raise CliError(f"{job} run {result.run_id} for {key} failed: {_run_failure(result)}", EXIT_RUN_FAILED)
    return result


def _eval_summary(home: Home, run_id: str) -> dict:
    from relops_pipeline.lib.warehouse import open_warehouse
    from relops_pipeline.lib.evals.store import eval_run_summary

    with open_warehouse(home.warehouse_path) as con:
        row = con.execute("SELECT eval_run_id FROM eval_runs WHERE dagster_run_id = ? ORDER BY finished_at DESC LIMIT 1",
                          [run_id]).fetchone()
        return eval_run_summary(con, row[0]) if row else {}


def _eval_text(e: dict) -> str:
    if not e:
        return "no eval run recorded"
    lines = [
        f"eval run {e['eval_run_id']} of {e['release_key']} on suite {e['suite_version']} ({e['source']}): "
        f"{e['cases']} cases, {e['samples']} samples, {e['errors']} errors"
        + ("" if e["valid"] else f" — INVALID: {e['invalid_reason']}"),
    ]
    for m, v in e["metrics"].items():
        lines.append(f"  {m:<16} mean {v['mean']:.3f}  pass rate {v['pass_rate']:.3f}  (n={v['n']})")
    if e.get("must_pass_cases"):
        lines.append(f"  must-pass cases failing in some sample: {e['must_pass_failing_cases']} of {e['must_pass_cases']}")
    return "\n".join(lines)


def cmd_release_register(args) -> dict:
    import yaml

    from relops_pipeline.lib.evals.manifests import ManifestError, load_manifest

    home = Home.resolve(args.home)
    home.ensure()
    try:
        manifest = load_manifest(Path(args.file))
    except (ManifestError, ValueError) as exc:
        raise CliError(str(exc)) from None
    _workflow(home, manifest.workflow)
    dest = home.root / "releases" / manifest.workflow / f"{manifest.version}.yaml"
    if dest.exists():
        registered = load_manifest(dest)
        if registered.content_hash != manifest.content_hash:
            raise CliError(
                f"release {manifest.release_key} is already registered with a different manifest ({dest}): "
                "a registered manifest is immutable; give the change a new version"
            )
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # The home keeps a self-contained copy: templates given by file are inlined.
        tmp = dest.with_suffix(".yaml.tmp")
        tmp.write_text(f"# registered from {Path(args.file).resolve()}\n" + yaml.safe_dump(manifest.content(), sort_keys=False))
        tmp.replace(dest)
    return register_release(home, manifest, by=args.by, run_eval=not args.no_eval)


def register_release(home: Home, manifest, *, by: str | None, run_eval: bool = True) -> dict:
    """Add the release's partition and record it (and run its eval) through Dagster."""
    from relops_pipeline.lib.evals.store import get_release
    from relops_pipeline.lib.warehouse import open_warehouse

    key = manifest.release_key
    _add_release_partition(home, key)
    tags = {"relops/registered_by": by or _default_actor()}
    result = _run_partition(home, "release_eval_job" if run_eval else "release_manifest_job", key, tags)
    with open_warehouse(home.warehouse_path) as con:
        release = get_release(con, key)
    ev = _eval_summary(home, result.run_id) if run_eval else {}
    summary = (release.get("diff") or {}).get("summary") or []
    text = [f"registered {key} (manifest {release['manifest_hash'][:12]}), compared with {release['baseline_version'] or 'nothing'}"]
    text += [f"  changed: {line}" for line in summary]
    if ev:
        text.append(_eval_text(ev))
    return {"release_key": key, "manifest_hash": release["manifest_hash"], "diff": release["diff"], "eval": ev,
            "run_id": result.run_id, "_text": "\n".join(text)}


def cmd_suite(args) -> dict:
    """suite validate PATH | suite accept PROPOSAL --by NAME | suite reject PROPOSAL --by NAME --reason TEXT"""
    if args.action in ("accept", "reject"):
        from relops_pipeline.cli_cadence import suite_accept

        return suite_accept(args)
    from relops_pipeline.lib.evals.suites import validate_path

    problems = validate_path(Path(args.target))
    if problems:
        raise CliError("\n".join(str(p) for p in problems))
    return {"path": args.target, "problems": [], "_text": f"{args.target}: valid"}


def _release_partitions(home: Home, workflow: str) -> list[str]:
    from relops_pipeline.defs.evals.partitions import releases_partitions

    instance = _instance(home)
    return sorted(k for k in instance.get_dynamic_partitions(releases_partitions.name) if k.startswith(f"{workflow}--"))


def cmd_eval(args) -> dict:
    positional = args.positional
    if positional[0] == "import":
        return _eval_import(args, positional[1:])
    if positional[0] == "backfill":
        return _eval_backfill(args)
    if len(positional) != 2:
        raise CliError("usage: relops eval WORKFLOW VERSION | eval import FILE --workflow W --version V | eval backfill --workflow W")
    home = Home.resolve(args.home)
    workflow, version = positional
    _wf, key = _workflow_release(home, workflow, version)
    if key not in _release_partitions(home, workflow):
        raise CliError(f"release {key} is not registered: relops release register MANIFEST.yaml")
    tags = {}
    if args.samples:
        tags["relops/samples"] = str(args.samples)
    if args.suite_version:
        tags["relops/suite_version"] = args.suite_version
    result = _run_partition(home, "eval_run_job", key, tags)
    ev = _eval_summary(home, result.run_id)
    return {**ev, "run_id": result.run_id, "_text": _eval_text(ev)}


def _eval_import(args, rest: list[str]) -> dict:
    if len(rest) != 1 or not args.workflow or not args.version:
        raise CliError("usage: relops eval import FILE --workflow W --version V [--format promptfoo|inspect|jsonl]")
    home = Home.resolve(args.home)
    path = Path(rest[0])
    if not path.is_file():
        raise CliError(f"no such file: {path}")
    _wf, key = _workflow_release(home, args.workflow, args.version)
    from relops_pipeline.lib.evals.imports import ImportFormatError, import_results

    try:  # fail before any run on a file that cannot be imported
        import_results(path, args.format, workflow=args.workflow, version=args.version, variant=args.variant)
    except (ImportFormatError, ValueError) as exc:
        raise CliError(str(exc)) from None
    _add_release_partition(home, key)
    tags = {"relops/import_file": str(path.resolve())}
    if args.format:
        tags["relops/import_format"] = args.format
    if args.variant:
        tags["relops/import_variant"] = args.variant
    result = _run_partition(home, "release_eval_job", key, tags)
    ev = _eval_summary(home, result.run_id)
    return {**ev, "run_id": result.run_id, "_text": _eval_text(ev)}


def _daemon_running(instance) -> bool:
    import time as _time

    beats = instance.get_daemon_heartbeats()
    beat = beats.get("BACKFILL")
    return beat is not None and _time.time() - beat.timestamp < 120


def _eval_backfill(args) -> dict:
    home = Home.resolve(args.home)
    if not args.workflow:
        raise CliError("usage: relops eval backfill --workflow W [--suite-version S] [--in-process]")
    return backfill_evals(home, args.workflow, suite_version=args.suite_version, in_process=args.in_process)


def backfill_evals(home: Home, workflow: str, *, suite_version: str | None, in_process: bool) -> dict:
    """Evaluate every registered release of the workflow (on a suite version, default the
    latest): one Dagster backfill for the daemon, or every partition now in this process."""
    _workflow(home, workflow)
    keys = _release_partitions(home, workflow)
    if not keys:
        raise CliError(f"workflow {workflow} has no registered releases")
    tags = {"relops/trigger": "cli-backfill"}
    if suite_version:
        tags["relops/suite_version"] = suite_version
    if in_process:
        runs = []
        for i, key in enumerate(keys, 1):
            print(f"[{i}/{len(keys)}] eval {key} ...", file=sys.stderr)
            runs.append({"release_key": key, **_eval_summary(home, _run_partition(home, "eval_run_job", key, tags).run_id)})
        text = "\n".join(_eval_text(r) for r in runs)
        return {"mode": "in-process", "releases": keys, "runs": runs, "_text": text}
    backfill_id = submit_backfill(home, keys, tags)
    instance = _instance(home)
    running = _daemon_running(instance)
    note = ("the Dagster daemon is running: follow it in the UI (Overview > Backfills)" if running else
            "no Dagster daemon is running: the backfill is queued and runs when `make ui` starts; "
            "or run it now with --in-process")
    return {"mode": "daemon", "backfill_id": backfill_id, "releases": keys, "daemon_running": running,
            "_text": f"backfill {backfill_id} submitted over {len(keys)} releases of {workflow}\n{note}"}


def submit_backfill(home: Home, keys: list[str], tags: dict) -> str:
    """One Dagster backfill of eval_run over the given release partitions."""
    import time as _time

    from dagster import AssetKey
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    instance = _instance(home)
    with _beta():
        asset_graph = _defs().resolve_asset_graph()
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=make_new_backfill_id(),
        asset_graph=asset_graph,
        partition_names=keys,
        asset_selection=[AssetKey("eval_run")],
        backfill_timestamp=_time.time(),
        tags=tags,
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=f"eval backfill {tags.get('relops/suite_version', 'latest suite')}",
        description="relops eval backfill",
        run_config=None,
    )
    instance.add_backfill(backfill)
    return backfill.backfill_id


def _beta():
    from relops_pipeline.defs.beta import expected_beta_warnings

    return expected_beta_warnings()


# ---------------------------------------------------------------------------------------------
# Gates, approvals, thresholds and the audit log

EXIT_BY_DECISION = {"SHIP": 0, "BLOCK": 1, "REVIEW": 2}


def _latest_gate(home: Home, key: str, dagster_run_id: str | None = None) -> dict | None:
    from relops_pipeline.lib.warehouse import open_warehouse

    with open_warehouse(home.warehouse_path) as con:
        sql = "SELECT gate_id, decision, result, report_md, report_html, report_json, dagster_run_id FROM gate_decisions WHERE release_key = ?"
        params = [key]
        if dagster_run_id:
            sql += " AND dagster_run_id = ?"
            params.append(dagster_run_id)
        row = con.execute(sql + " ORDER BY decided_at DESC LIMIT 1", params).fetchall()
    if not row:
        return None
    gate_id, decision, result, md, html, js, run_id = row[0]
    return {"gate_id": gate_id, "decision": decision, "result": json.loads(result), "report_md": md,
            "report_html": html, "report_json": js, "dagster_run_id": run_id}


def cmd_gate(args) -> dict:
    """CI mode: run what is missing (release record, eval, thresholds, gate) and exit by decision."""
    from relops_pipeline.lib.evals.manifests import load_manifest

    home = Home.resolve(args.home)
    wf, key = _workflow_release(home, args.workflow, args.version)
    if args.baseline and args.baseline == args.version:
        raise CliError(f"--baseline {args.baseline} is the release being gated: a release cannot be its own baseline")
    registered = key in _release_partitions(home, wf.name)
    if not registered:
        path = home.root / "releases" / wf.name / f"{args.version}.yaml"
        if not path.exists():
            raise CliError(f"release {key} is not registered and has no manifest at {path}: relops release register FILE")
        print(f"registering {key} ...", file=sys.stderr)
        try:
            manifest = load_manifest(path)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        register_release(home, manifest, by=os.environ.get("USER"), run_eval=not args.suite_version)
        if args.suite_version:
            _run_partition(home, "eval_run_job", key, {"relops/suite_version": args.suite_version})
    else:
        from relops_pipeline.lib.gates.service import latest_eval_run
        from relops_pipeline.lib.warehouse import open_warehouse

        with open_warehouse(home.warehouse_path) as con:
            have_eval = latest_eval_run(con, key, args.suite_version) is not None
        if not have_eval:
            print(f"running the eval of {key} ...", file=sys.stderr)
            tags = {"relops/suite_version": args.suite_version} if args.suite_version else {}
            _run_partition(home, "eval_run_job", key, tags)
    tags = {}
    if args.baseline:
        tags["relops/baseline"] = args.baseline
    if args.suite_version:
        tags["relops/suite_version"] = args.suite_version
    # A BLOCK fails the run's blocking checks: the run "fails" but the decision is recorded.
    result = run_job(home, "release_gate_job", tags={"dagster/partition": key, **tags})
    gate = _latest_gate(home, key, result.run_id)
    if gate is None:
        raise CliError(f"gate run {result.run_id} for {key} failed: {_run_failure(result)}", EXIT_RUN_FAILED)
    from relops_pipeline.lib.gates.report import render_junit, render_pr_comment, write_text_atomic

    gr = _gate_result(gate["result"])
    if args.junit:
        write_text_atomic(Path(args.junit), render_junit(gr))
    if args.markdown:
        write_text_atomic(Path(args.markdown), render_pr_comment(gr, links={"full report": gate["report_html"]}))
    r = gate["result"]
    text = [f"{gate['decision']}: {key} vs {r.get('baseline_version') or 'no baseline'}"]
    text += [f"  - {reason}" for reason in r["reasons"]]
    text.append(f"report: {gate['report_html']}")
    out = {"release_key": key, "decision": gate["decision"], "reasons": r["reasons"], "gate_id": gate["gate_id"],
           "baseline_version": r.get("baseline_version"), "reports": {"md": gate["report_md"], "html": gate["report_html"],
           "json": gate["report_json"]}, "run_id": result.run_id, "_text": "\n".join(text)}
    out["_exit"] = EXIT_BY_DECISION[gate["decision"]]
    return out


def _gate_result(d: dict):
    """Rebuild a GateResult from its stored JSON (for the CI renderers)."""
    from relops_pipeline.lib.gates.model import CaseChange, GateResult, Interval, MetricEvidence, MustPassCase, RuleResult

    def iv(x):
        return Interval(**x) if x else None

    return GateResult(
        workflow=d["workflow"], version=d["version"], baseline_version=d.get("baseline_version"), decision=d["decision"],
        reasons=d["reasons"], rules=[RuleResult(**r) for r in d["rules"]],
        metrics=[MetricEvidence(**{**m, "candidate": iv(m["candidate"]), "baseline": iv(m.get("baseline")), "delta": iv(m.get("delta"))}) for m in d["metrics"]],
        must_pass=[MustPassCase(**m) for m in d["must_pass"]], flaky_cases=[CaseChange(**c) for c in d["flaky_cases"]],
        newly_failing=[CaseChange(**c) for c in d["newly_failing"]], newly_passing=[CaseChange(**c) for c in d["newly_passing"]],
        latency_ms={k: iv(v) for k, v in d["latency_ms"].items()}, cost_usd={k: iv(v) for k, v in d["cost_usd"].items()},
        evidence=d["evidence"], diff=d.get("diff"),
    )


def cmd_approve(args) -> dict:
    from relops_pipeline.lib.gates.service import GateError, approve
    from relops_pipeline.lib.warehouse import open_warehouse

    home = Home.resolve(args.home)
    wf, key = _workflow_release(home, args.workflow, args.version)
    with open_warehouse(home.warehouse_path) as con:
        try:
            out = approve(con, key, approvers=wf.approvers, by=args.by, reason=args.reason, override=args.override)
        except GateError as exc:
            raise CliError(str(exc)) from None
    word = "overrode the BLOCK of" if out["kind"] == "override" else "approved"
    return {**out, "_text": f"{args.by} {word} {key} (event {out['event_seq']}): {args.reason}"}


def cmd_audit(args) -> dict:
    from relops_pipeline.lib import audit
    from relops_pipeline.lib.warehouse import open_warehouse

    home = Home.resolve(args.home)
    with _read_warehouse(home):
        pass
    expect = None
    if args.expect_head:
        seq, _, h = args.expect_head.partition(":")
        if not seq.isdigit() or len(h) != 64:
            raise CliError(f"--expect-head {args.expect_head!r}: expected SEQ:HASH as `relops audit head` prints it")
        expect = (int(seq), h)
    with open_warehouse(home.warehouse_path) as con:
        if args.action == "head":
            seq, h = audit.head(con)
            return {"seq": seq, "hash": h, "_text": f"{seq}:{h}"}
        res = audit.verify_chain(con, expect_head=expect)
        # Versioned tables tie their rows to events: a row edited after it was recorded shows here.
        from relops_pipeline.lib.alerts.rules import verify_alert_rules
        from relops_pipeline.lib.gates.thresholds import verify_thresholds

        versions = verify_thresholds(con) + verify_alert_rules(con)
    text = res.summary() + "".join(f"\nversion record: {v}" for v in versions)
    out = {"ok": res.ok and not versions, "checked": res.checked, "problems": [p.__dict__ for p in res.problems],
           "version_problems": versions, "_text": text}
    if not out["ok"]:
        out["_exit"] = EXIT_RUN_FAILED + 2  # 6: the log was tampered with
    return out


def cmd_thresholds(args) -> dict:
    import yaml

    from relops_pipeline.lib.gates.thresholds import current_thresholds, record_thresholds, thresholds_history
    from relops_pipeline.lib.warehouse import open_warehouse

    home = Home.resolve(args.home)
    if args.action in ("accept", "reject"):
        from relops_pipeline.cli_cadence import accept_or_reject

        return accept_or_reject(home, "thresholds", args.workflow, action=args.action, by=args.by, reason=args.reason)
    wf = _workflow(home, args.workflow)
    with open_warehouse(home.warehouse_path) as con:
        if args.action == "show":
            th = current_thresholds(con, wf.name)
            hist = thresholds_history(con, wf.name)
            return {"current": th.as_dict(), "history": hist,
                    "_text": yaml.safe_dump({"version": th.version, **th.as_dict()}, sort_keys=False)}
        if not args.file or not args.by or not args.reason:
            raise CliError("usage: relops thresholds set WORKFLOW FILE --by NAME --reason TEXT")
        from relops_pipeline.cli_cadence import require_approver

        require_approver(con, wf, args.by, "change the thresholds", asked=args.reason)
        try:
            mapping = yaml.safe_load(Path(args.file).read_text()) or {}
            th = record_thresholds(con, wf.name, mapping, author=args.by, reason=args.reason)
        except (ValueError, OSError) as exc:
            raise CliError(str(exc)) from None
    return {"version": th.version, "_text": f"thresholds of {wf.name} are now version {th.version} (by {th.author}: {th.reason})"}


# ---------------------------------------------------------------------------------------------
# Drift and alerts


def _complete_weeks(con, keys: list[str]) -> list[str]:
    """The complete weeks (partition keys) that contain traces."""
    first, last = con.execute("SELECT min(day), max(day) FROM trace_features").fetchone()
    if first is None:
        return []
    lo = (first - dt.timedelta(days=first.weekday())).isoformat()
    return [k for k in keys if lo <= k <= last.isoformat()]


def _missing_feature_days(con) -> list:
    from relops_pipeline.lib.ingest import day_ranges

    days = [r[0] for r in con.execute(
        "SELECT DISTINCT start_time::DATE FROM spans WHERE start_time IS NOT NULL "
        "EXCEPT SELECT DISTINCT day FROM trace_features ORDER BY 1").fetchall()]
    return [(a.isoformat(), b.isoformat()) for a, b in day_ranges(days)]


def cmd_drift(args) -> dict:
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
        _workflow(home, args.workflow)
    todo, runs, weeks = compute_weekly_drift(home, [week] if args.week else None, refresh=args.refresh)
    return {**drift_view(home, weeks, args.workflow, detail=bool(args.week)), "computed_weeks": todo, "run_ids": runs}


def compute_weekly_drift(home: Home, weeks: list[str] | None, *, refresh: bool) -> tuple[list[str], list[str], list[str]]:
    """Run weekly drift through Dagster for the given weeks (default: every complete week with
    traces) that have no result yet, or all of them with refresh. Returns (computed, run ids, weeks)."""
    from relops_pipeline.defs.partitions import weekly_partitions

    with _read_warehouse(home) as con:
        missing = _missing_feature_days(con)
    if missing:
        print(f"computing per-request features for {len(missing)} range(s) of days first ...", file=sys.stderr)
        refresh_days(home, missing)
    with _read_warehouse(home) as con:
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
        result = run_job(home, "weekly_drift_job", tags={"dagster/partition": w})
        if not result.success:
            raise CliError(f"weekly drift run {result.run_id} for {w} failed: {_run_failure(result)}", EXIT_RUN_FAILED)
        runs.append(result.run_id)
    return todo, runs, weeks


def drift_view(home: Home, weeks: list[str], workflow: str | None, *, detail: bool) -> dict:
    """The stored weekly drift of these weeks (workflow scope, plus columns and releases in detail)."""
    where = "granularity = 'weekly' AND period_start IN (SELECT unnest(?::DATE[]))" + (" AND workflow = ?" if workflow else "")
    params: list = [weeks] + ([workflow] if workflow else [])
    with _read_warehouse(home) as con:
        cols = ["period_start", "workflow", "release", "status", "severity", "columns_tested", "columns_drifted",
                "drifted_share", "critical_drifted", "cur_rows", "ref_rows", "reference_id", "report_path"]
        rows = [dict(zip(cols, r)) for r in con.execute(
            f"SELECT {', '.join(cols)} FROM drift_summaries WHERE {where} ORDER BY period_start, workflow, release = '*' DESC, release",
            params).fetchall()]
        columns = []
        if detail:
            ccols = ["period_start", "workflow", "release", "column_name", "column_type", "role", "method", "score",
                     "threshold", "drifted", "status", "cur_rows", "ref_rows"]
            columns = [dict(zip(ccols, r)) for r in con.execute(
                f"SELECT {', '.join(ccols)} FROM drift_results WHERE {where} AND release = '*' "
                "ORDER BY workflow, drifted DESC, score DESC NULLS LAST, column_name", params).fetchall()]
    for r in rows:
        r["period_start"] = str(r["period_start"])
        r["critical_drifted"] = json.loads(r["critical_drifted"]) if isinstance(r["critical_drifted"], str) else (r["critical_drifted"] or [])
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
        lines.append(_plain_table(["week", "workflow", "status", "severity", "drifted", "share", "critical drifted", "traces"], table))
    if detail and rows:
        rel = [[r["workflow"], r["release"], r["status"], f"{r['columns_drifted']}/{r['columns_tested']}", share(r["drifted_share"]), r["cur_rows"]]
               for r in rows if r["release"] != "*"]
        if rel:
            lines += ["", "per release:", _plain_table(["workflow", "release", "status", "drifted", "share", "traces"], rel)]
        if columns:
            lines += ["", "per column (workflow scope):", _plain_table(
                ["workflow", "column", "role", "method", "score", "threshold", "drifted", "traces", "reference"],
                [[c["workflow"], c["column_name"], c["role"], c["method"] or "-",
                  "-" if c["score"] is None else f"{c['score']:.4f}", "-" if c["threshold"] is None else f"{c['threshold']:g}",
                  "YES" if c["drifted"] else ("-" if c["drifted"] is None else "no"), c["cur_rows"], c["ref_rows"]]
                 for c in columns])]
        reports = [r["report_path"] for r in rows if r["report_path"]]
        if reports:
            lines += ["", "Evidently reports:", *[f"  {p}" for p in reports]]
    return {"weeks": weeks, "summaries": rows, "columns": columns, "_text": "\n".join(lines)}


def cmd_alerts(args) -> dict:
    """List the outbox; deliver what is due (through Dagster); requeue dead deliveries; or
    send a test alert through a workflow's sinks."""
    from relops_pipeline.lib.alerts import ALERT_STATUSES, list_alerts, retry_dead

    home = Home.resolve(args.home)
    action = args.action or "list"
    if action in ("accept", "reject"):
        from relops_pipeline.cli_cadence import accept_or_reject

        if not args.alert_id:
            raise CliError(f"usage: relops alerts {action} PROPOSAL --by NAME")
        return accept_or_reject(home, "alert_rules", args.alert_id, action=action, by=args.by, reason=args.reason)
    if action == "test":
        if not args.workflow:
            raise CliError("usage: relops alerts test --workflow W")
        from relops_pipeline.lib.alerts import Alert
        from relops_pipeline.lib.alerts.service import raise_alert

        wf = _workflow(home, args.workflow)
        with _read_warehouse(home) as con:
            rec = raise_alert(con, home, Alert(
                kind="test", severity=args.severity, title=f"relops test alert for {wf.name}",
                workflow=wf.name, summary="A test of this workflow's alert sinks; nothing is wrong.",
                dedup_key=f"test:{wf.name}:{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S%f}"), )
        action = "deliver"
        print(f"test alert {rec.alert_id} written to the outbox ({rec.status}); delivering ...", file=sys.stderr)
    if action == "deliver":
        result = run_job(home, "deliver_alerts_job")
        if not result.success:
            raise CliError(f"delivery run {result.run_id} failed: {_run_failure(result)}", EXIT_RUN_FAILED)
        report = result.output_for_node("deliver_alerts")
        counts = {k: sum(1 for a in report["attempts"] if a["outcome"] == k) for k in ("delivered", "retry", "dead")}
    elif action == "retry":
        with _read_warehouse(home) as con:
            n = retry_dead(con, args.alert_id)
        return {"requeued": n, "_text": f"{n} dead deliveries requeued; `relops alerts deliver` sends them now"}
    status = args.status
    if status and status not in ALERT_STATUSES:
        raise CliError(f"--status {status!r}: one of {', '.join(ALERT_STATUSES)}")
    with _read_warehouse(home) as con:
        records = [r.to_dict() for r in list_alerts(con, status, workflow=args.workflow, limit=args.limit)]
        totals = dict(con.execute("SELECT status, count(*) FROM alert_outbox GROUP BY ALL").fetchall())
    rows = []
    for r in records:
        a = r
        sinks = ", ".join(f"{d['sink']}:{d['status']}" + (f"({d['attempts']})" if d["attempts"] > 1 else "") for d in r["deliveries"])
        rows.append([a["created_at"][:19], r["status"], a["severity"], a["workflow"] or "-", a["release"] or "-", a["title"][:60], sinks or "-"])
    lines = []
    if action == "deliver":
        lines.append(f"delivery run {result.run_id}: delivered {counts['delivered']}, retrying {counts['retry']}, dead {counts['dead']}")
    lines.append("outbox: " + (", ".join(f"{k} {v}" for k, v in sorted(totals.items())) or "empty"))
    if rows:
        lines.append(_plain_table(["raised (UTC)", "status", "severity", "workflow", "release", "title", "sinks"], rows))
    out = {"totals": totals, "alerts": records, "_text": "\n".join(lines)}
    if action == "deliver":
        out["delivery"] = report
    return out


def _plain_table(header: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


# ---------------------------------------------------------------------------------------------
# Rollout, rollback, registry, drills


def workflow_status(home: Home, workflow: str) -> dict:
    """A workflow's release state: live, canary, last known good, open incidents, last drill."""
    from relops_pipeline.lib.drills import drill_status
    from relops_pipeline.lib.incidents import list_incidents
    from relops_pipeline.lib.registry.rollout import list_rollbacks
    from relops_pipeline.lib.registry.state import get_state, pointer_seq_on_disk

    wf = _workflow(home, workflow)
    with _read_warehouse(home) as con:
        state = get_state(con, wf.name)
        incidents = list_incidents(con, wf.name)
        drill = drill_status(con, wf.name)
        rollbacks = list_rollbacks(con, wf.name, limit=3)
    on_disk = pointer_seq_on_disk(home.registry_dir, wf.name)
    canary = f"{state.canary} at {state.canary_percent:g} %" if state.canary and state.canary_percent is not None else (state.canary or "-")
    lines = [
        f"{wf.name} (owner {wf.owner or '-'})",
        f"  live             {state.live or '-'}",
        f"  canary           {canary}" + (f"   shadow {state.shadow}" if state.shadow else ""),
        f"  last known good  {state.last_known_good or '-'}",
        f"  registry seq     {state.seq} (pointer file: {on_disk if on_disk is not None else 'none'}"
        + (" — BEHIND: relops sync " + wf.name if on_disk is not None and on_disk < state.seq else "") + ")",
        f"  last drill       {drill['status']}: {drill['message']}",
        f"  open incidents   {len(incidents)}",
        *[f"    {i['incident_id']}  {i['opened_at']:%Y-%m-%d %H:%M}  {i['title']}" for i in incidents[:5]],
        "  recent rollbacks" + ("" if rollbacks else "  none"),
        *[f"    {r['recorded_at']:%Y-%m-%d %H:%M}  {r['from_release'] or '-'} -> {r['to_release'] or '-'}  "
          f"{r['trigger']}{' (automatic)' if r['automatic'] else ''}{'' if r['performed'] else ' — recommended only'}"
          + (f"  time to rollback {r['time_to_rollback_s']:.1f} s" if r.get("time_to_rollback_s") is not None else "")
          for r in rollbacks],
    ]
    return {"workflow": wf.name, "state": state.as_dict(), "pointer_seq_on_disk": on_disk, "incidents": incidents,
            "drill": drill, "rollbacks": rollbacks, "_text": "\n".join(lines)}


def cmd_rollout(args) -> dict:
    wf, key = _workflow_release(home := Home.resolve(args.home), args.workflow, args.version)
    by = args.by or _default_actor()
    result = run_job(home, "registry_change_job", run_config={"ops": {"change_registry": {"config": {
        "workflow": wf.name, "release": args.version, "stage": args.stage, "percent": args.percent,
        "actor": by, "reason": args.reason, "override": bool(args.override)}}}})
    if not result.success:
        raise CliError(f"rollout of {key} to {args.stage} refused or failed: {_run_failure(result)}")
    out = result.output_for_node("change_registry")
    after = out["after"]
    return {**out, "_text": f"{key}: {args.stage}" + (f" at {after.get('canary_percent'):g} %" if args.stage in ("canary", "ramp") and after.get("canary_percent") is not None else "")
            + f" (registry seq {after['seq']}; live {after.get('live') or '-'}, last known good {after.get('last_known_good') or '-'})"
            + (f"; override waived: {', '.join(out['waived'])}" if out.get("waived") else "")}


def cmd_rollback(args) -> dict:
    home = Home.resolve(args.home)
    wf = _workflow(home, args.workflow)
    by = args.by or _default_actor()
    result = run_job(home, "rollback_alert_job", run_config={"ops": {"rollback_or_alert": {"config": {
        "workflow": wf.name, "trigger": "manual", "reason": args.reason, "actor": by, "to_release": args.to}}}})
    if not result.success:
        raise CliError(f"rollback of {wf.name} failed: {_run_failure(result)}")
    out = result.output_for_node("rollback_or_alert")
    if out["decision"] == "none":
        return {**out, "_text": f"{wf.name}: nothing rolled back — {out['why']}"}
    rb = out["rollback"]
    return {**out, "_text": f"{wf.name}: rolled back {rb.get('release') or '-'} -> {rb.get('to_release') or '-'}; "
                            f"incident {out['incident_id']}, alert {out['alert_id']} ({out['alert_status']}); live now {out['live_after']}"}


def cmd_canary(args) -> dict:
    """Judge a release's canary through Dagster; a failed check is acted on at once, the way
    the canary failure sensor does when the daemon runs (a second response changes nothing)."""
    wf, key = _workflow_release(home := Home.resolve(args.home), args.workflow, args.version)
    _add_release_partition(home, key)
    result = run_job(home, "canary_job", tags={"dagster/partition": key})
    if not result.success:
        raise CliError(f"canary run {result.run_id} for {key} failed: {_run_failure(result)}", EXIT_RUN_FAILED)
    [ev] = [e for e in result.get_asset_check_evaluations() if e.check_name == "canary_healthy"]
    meta = {k: getattr(v, "value", v) for k, v in ev.metadata.items()}
    out = {"release_key": key, "verdict": meta["verdict"], "passed": ev.passed, "run_id": result.run_id,
           "description": ev.description, "response": None}
    lines = [f"{key}: canary {meta['verdict'].upper()} — {ev.description}"]
    if not ev.passed:
        import dagster as dg

        from relops_pipeline.defs.releases.sensors import requests_for_failure

        instance = _instance(home)
        ck = dg.AssetCheckKey(dg.AssetKey("canary_analysis"), "canary_healthy")
        records = [r for r in instance.event_log_storage.get_asset_check_execution_history(ck, limit=20)
                   if r.run_id == result.run_id]
        for req in (q for r in records for q in requests_for_failure("canary", r, instance)):
            resp = run_job(home, "rollback_alert_job", run_config=req.run_config, tags=req.tags)
            if not resp.success:
                raise CliError(f"rollback-alert run {resp.run_id} failed: {_run_failure(resp)}", EXIT_RUN_FAILED)
            out["response"] = resp.output_for_node("rollback_or_alert")
            r = out["response"]
            lines.append(f"  {r['decision']}: {r['why']}" + (f" (time to rollback {r['time_to_rollback_s']:.2f} s)" if r.get("time_to_rollback_s") is not None else ""))
            if r.get("incident_id"):
                lines.append(f"  incident {r['incident_id']}, alert {r['alert_id']} ({r['alert_status']}); live now {r['live_after']}")
        out["_exit"] = 1
    return {**out, "_text": "\n".join(lines)}


def cmd_sync(args) -> dict:
    from relops_pipeline.lib.registry import sync_pointer_at_home

    home = Home.resolve(args.home)
    wf = _workflow(home, args.workflow)
    out = sync_pointer_at_home(home, wf.name)
    return {**out, "_text": f"{wf.name}: pointer file rewritten from the registry ({json.dumps(out, default=str)[:200]})"}


def cmd_drill(args) -> dict:
    home = Home.resolve(args.home)
    wf = _workflow(home, args.workflow) if args.workflow else None
    result = run_job(home, "drill_job")
    if not result.success:
        raise CliError(f"drill run {result.run_id} failed: {_run_failure(result)}", EXIT_RUN_FAILED)
    from relops_pipeline.lib.drills import drill_status, list_drills

    with _read_warehouse(home) as con:
        names = [wf.name] if wf else _workflow_names(home)
        drills = {n: (list_drills(con, n, limit=1) or [None])[0] for n in names}
        statuses = {n: drill_status(con, n) for n in names}
    lines = []
    for n in names:
        d = drills[n]
        if d is None:
            lines.append(f"{n}: no drill recorded")
            continue
        took = f" in {d['duration_ms']:.1f} ms" if d.get("duration_ms") is not None else ""
        lines.append(f"{n}: drill {'PASSED' if d['passed'] else 'FAILED'}{took} — {statuses[n]['message']}")
    failed = [n for n in names if drills[n] is not None and not drills[n]["passed"]]
    out = {"run_id": result.run_id, "drills": drills, "statuses": statuses, "_text": "\n".join(lines)}
    if failed:
        out["_exit"] = EXIT_RUN_FAILED
    return out


def _workflow_names(home: Home) -> list[str]:
    from relops_pipeline.lib.workflows import list_workflows

    return list_workflows(home.workflows_dir)


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
    p = add("status", cmd_status, "summarise the warehouse; with a WORKFLOW: live, canary, last known good, incidents, last drill")
    p.add_argument("workflow", nargs="?", default=None)
    p = add("rejects", cmd_rejects, "list quarantined records with their reasons")
    p.add_argument("--limit", type=int, default=50)
    p = add("workflow", cmd_workflow_add, "add a workflow: relops workflow add NAME [--owner NAME]")
    p.add_argument("action", choices=["add"])
    p.add_argument("name")
    p.add_argument("--owner", default=None)
    p = add("release", cmd_release_register, "register a release manifest: relops release register FILE")
    p.add_argument("action", choices=["register"])
    p.add_argument("file")
    p.add_argument("--by", default=None, help="who registers it (default: $USER)")
    p.add_argument("--no-eval", action="store_true", help="record the release without running its eval")
    p = add("suite", cmd_suite, "suite validate PATH | suite accept PROPOSAL --by NAME | suite reject PROPOSAL --by NAME --reason T")
    p.add_argument("action", choices=["validate", "accept", "reject"])
    p.add_argument("target", metavar="PATH_OR_PROPOSAL")
    p.add_argument("--by", default=None, help="accept/reject: the workflow's owner or a delegate")
    p.add_argument("--reason", default=None)
    p.add_argument("--backfill", default="daemon", choices=["daemon", "in-process", "none"],
                   help="accept: evaluate every release on the new version (default: a Dagster backfill)")
    p = add("eval", cmd_eval, "run a release's evals: eval W V | eval import FILE --workflow W --version V | eval backfill --workflow W")
    p.add_argument("positional", nargs="+", metavar="ARG")
    p.add_argument("--samples", type=int, default=None, help="samples per case (default: the workflow's)")
    p.add_argument("--suite-version", default=None)
    p.add_argument("--workflow", default=None)
    p.add_argument("--version", default=None)
    p.add_argument("--format", default=None, choices=["promptfoo", "inspect", "jsonl"])
    p.add_argument("--variant", default=None, help="import: which provider/prompt of a multi-provider promptfoo file")
    p.add_argument("--in-process", action="store_true", help="backfill: run every partition now, in this process")
    p = add("gate", cmd_gate, "decide a release's gate (CI mode): exit 0 SHIP, 1 BLOCK, 2 REVIEW, 3+ errors")
    p.add_argument("workflow")
    p.add_argument("version")
    p.add_argument("--baseline", default=None, help="compare with this version (default: the live release)")
    p.add_argument("--suite-version", default=None)
    p.add_argument("--junit", default=None, metavar="FILE", help="write JUnit XML, one test per rule")
    p.add_argument("--markdown", default=None, metavar="FILE", help="write a pull-request comment")
    p = add("approve", cmd_approve, "approve a REVIEW (or --override a BLOCK) as an owner or delegate")
    p.add_argument("workflow")
    p.add_argument("version")
    p.add_argument("--by", required=True)
    p.add_argument("--reason", required=True)
    p.add_argument("--override", action="store_true", help="ship a BLOCKed release anyway (recorded as an override)")
    p = add("audit", cmd_audit, "verify the hash-chained event log (or print its head)")
    p.add_argument("action", choices=["verify", "head"])
    p.add_argument("--expect-head", default=None, metavar="SEQ:HASH", help="a head recorded earlier: detects a truncated log")
    p = add("thresholds", cmd_thresholds, "show W | set W FILE | accept PROPOSAL | reject PROPOSAL: versioned gate thresholds")
    p.add_argument("action", choices=["show", "set", "accept", "reject"])
    p.add_argument("workflow", metavar="WORKFLOW_OR_PROPOSAL")
    p.add_argument("file", nargs="?")
    p.add_argument("--by", default=None)
    p.add_argument("--reason", default=None)
    p = add("drift", cmd_drift, "show weekly drift per workflow; computes complete weeks that have none yet through Dagster")
    p.add_argument("--workflow", default=None)
    p.add_argument("--week", default=None, metavar="YYYY-MM-DD", help="the week containing this day: details per column and release")
    p.add_argument("--refresh", action="store_true", help="recompute the selected weeks even if they have results")
    p = add("alerts", cmd_alerts, "the alert outbox: list [--status S] | deliver | retry [ALERT_ID] | test --workflow W"
                                  " | accept|reject PROPOSAL --by NAME (alert-rule calibration)")
    p.add_argument("action", nargs="?", choices=["list", "deliver", "retry", "test", "accept", "reject"])
    p.add_argument("alert_id", nargs="?", default=None, metavar="ALERT_OR_PROPOSAL")
    p.add_argument("--by", default=None)
    p.add_argument("--reason", default=None)
    p.add_argument("--status", default=None, help="pending, delivered, dead, suppressed or unrouted")
    p.add_argument("--workflow", default=None)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--severity", default="info", help="test: the test alert's severity (routing by min_severity)")
    p = add("rollout", cmd_rollout, "move a release to a rollout stage: rollout W V --stage shadow|canary|ramp|full")
    p.add_argument("workflow")
    p.add_argument("version")
    p.add_argument("--stage", required=True, choices=["shadow", "canary", "ramp", "full"])
    p.add_argument("--percent", type=float, default=None, help="traffic share of canary or ramp (default: the policy's)")
    p.add_argument("--by", default=None, help="who (default: $USER); --override needs an owner or delegate")
    p.add_argument("--reason", default="rollout")
    p.add_argument("--override", action="store_true", help="roll out although the gate does not allow it (recorded)")
    p = add("rollback", cmd_rollback, "roll a workflow back to its last known good release (or --to V)")
    p.add_argument("workflow")
    p.add_argument("--to", default=None)
    p.add_argument("--reason", required=True)
    p.add_argument("--by", default=None)
    p = add("canary", cmd_canary, "judge a release's canary against the live release; exit 1 when it fails (and act on it)")
    p.add_argument("workflow")
    p.add_argument("version")
    p = add("sync", cmd_sync, "rewrite a workflow's pointer file from the registry (after a failed deploy)")
    p.add_argument("workflow")
    p = add("drill", cmd_drill, "rehearse rollback on a sandbox copy of the registry and record the result")
    p.add_argument("workflow", nargs="?", default=None)
    from relops_pipeline.cli_cadence import add_commands

    add_commands(add)
    p = add("demo", cmd_demo, "generate the demo world and run the story through Dagster")
    p.add_argument("--scale", type=float, default=1.0, help="volume multiplier (10 = millions of spans)")
    p.add_argument("--seed", type=int, default=7)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = args.fn(args)
    except Exception as exc:  # noqa: BLE001 — exit 1 and 2 are gate decisions: never let a crash look like one
        if not isinstance(exc, CliError):
            exc = CliError(f"{type(exc).__name__}: {exc}", EXIT_RUN_FAILED)
        if getattr(args, "json", False):
            print(json.dumps({"error": str(exc), "exit_code": exc.code}))
        else:
            for line in str(exc).splitlines():
                print(f"relops: {line}", file=sys.stderr)
        return exc.code
    text = out.pop("_text", "")
    code = out.pop("_exit", EXIT_OK)
    if args.json:
        print(json.dumps(out, default=str))
    else:
        print(text)
    return code


if __name__ == "__main__":
    sys.exit(main())
