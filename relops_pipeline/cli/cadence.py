"""The `relops` commands of the weekly and monthly cadence: memo, review, incident, propose,
proposals, suite/thresholds/alerts accept and reject, readiness.

Commands that compute artifacts materialize the cadence assets through Dagster (so the UI
shows the same history); reviewed changes (accepting a proposal, importing labels, incidents)
are recorded directly, each as an event with the actor.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from pathlib import Path

from relops_pipeline.cli.common import (
    EXIT_RUN_FAILED,
    CliError,
    CommandResult,
    Commands,
    act_as,
    add_by,
    authorized_actor,
    get_workflow,
    materialize_or_fail,
    plain_table,
    positive_int,
    read_warehouse,
    run_or_fail,
)
from relops_pipeline.cli.text import wrap_prose
from relops_pipeline.lib.home import Home
from relops_pipeline.lib.markdown import plain_text
from relops_pipeline.lib.results import to_json


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _week_arg(value: str | None) -> dt.date:
    """The Monday of the week containing the given day (default: the last complete week)."""
    from relops_pipeline.lib.cadence import last_complete_week

    if not value:
        return last_complete_week(_today())
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise CliError(f"--week {value!r}: expected YYYY-MM-DD") from None
    monday = day - dt.timedelta(days=day.weekday())
    if monday + dt.timedelta(days=7) > _today():
        raise CliError(f"the week of {monday} has not ended yet: a memo covers a complete week")
    return monday


def require_approver(con, home: Home, wf, by: str | None, request: str, asked: str | None = None,
                     action: str = "proposals") -> str:
    """The label of the workflow's owner or delegate (in force) the principal acts as (--by, or
    the first it may use); a refusal is recorded, with the real principal and what was asked."""
    return authorized_actor(con, home, wf, action, request=f"{request} for {wf.name}", by=by, asked=asked)


def cmd_memo(args) -> CommandResult:
    """Write (through Dagster) and show the stability memo of a week."""
    home = Home.resolve(args.home)
    week = _week_arg(args.week)
    with read_warehouse(home):
        pass
    from relops_pipeline.lib.cadence import recorded_memo_of_run

    result = materialize_or_fail(home, ["stability_memo"], what="memo", partition_key=week.isoformat())
    with read_warehouse(home) as con:
        row = recorded_memo_of_run(con, result.run_id)
    if row is None:
        raise CliError(f"memo run {result.run_id} recorded no memo", EXIT_RUN_FAILED)
    memo_id, md_path, html_path, md, ops_from, ops_to = (row[k] for k in ("memo_id", "md_path", "html_path",
                                                                         "report_md", "ops_from", "ops_to"))
    summary = memo_summary_lines(row["memo"].get("summary") or {})
    text = plain_text(md) if args.full else "\n".join([
        f"stability memo of the week of {week} ({memo_id}, run {result.run_id})",
        f"  release operations recorded {ops_from:%Y-%m-%d %H:%M} .. {ops_to:%Y-%m-%d %H:%M} UTC",
        *[f"  {line}" for line in summary],
        f"  markdown: {md_path}",
        f"  HTML:     {html_path}",
        "  (--full prints the memo)",
    ])
    return CommandResult({"week": week.isoformat(), "memo_id": memo_id, "md_path": md_path, "html_path": html_path,
                          "summary": summary, "run_id": result.run_id}, wrap_prose(text))


def memo_summary_lines(s: dict) -> list[str]:
    """The memo's headline in a few plain lines (the markdown has the detail)."""
    blocked = s.get("blocked_releases") or []
    lines = [f"{s.get('traces', 0):,} traces; {s.get('gate_decisions', 0)} gate decisions, {s.get('blocked', 0)} BLOCK"
             + (f" ({', '.join(blocked)})" if blocked else "")]
    for r in s.get("rollback_list") or []:
        took = r.get("time_to_rollback_s")
        lines.append(f"rollback: {r['workflow']} {r['from']} -> {r['to']} ({r['trigger']}"
                     + (f", {took:.2f} s to roll back" if took is not None else "")
                     + ("" if r.get("performed") else ", recommended only") + ")")
    lines += [f"drift: {d}" for d in s.get("drifting") or []]
    lines.append(f"incidents: {s.get('incidents_opened', 0)} opened, {s.get('incidents_closed', 0)} closed; "
                 f"alerts: {s.get('alerts', 0)} ({s.get('noisy_alerts', 0)} noisy); {s.get('fixes', 0)} recommended fixes")
    return lines


def cmd_review_sample(args) -> CommandResult:
    """review sample [--week D]: draw and write the week's review sheet (through Dagster)."""
    home = Home.resolve(args.home)
    week = _week_arg(args.week)
    with read_warehouse(home):
        pass
    from relops_pipeline.lib.cadence import review_sample_counts

    result = materialize_or_fail(home, ["review_sample"], what="review sample", partition_key=week.isoformat())
    with read_warehouse(home) as con:
        strata, sheet = review_sample_counts(con, week)
    lines = [f"review sample of the week of {week}: {sum(s.traces for s in strata)} traces (run {result.run_id})",
             *[f"  {s.workflow:<16} {s.release:<10} {s.traces}" for s in strata]]
    if sheet:
        lines.append(f"  sheet: {sheet} (fill label = pass | fail | unsure, then `relops review import FILE`)")
    return CommandResult({"week": week.isoformat(), "samples": [to_json(s) for s in strata],
                          "sheet": sheet, "run_id": result.run_id}, "\n".join(lines))


def cmd_review_import(args) -> CommandResult:
    """review import FILE [--by LABEL] [--open-incidents]: load the labels back (failures open
    incidents, one per workflow and release, only when asked: the reviewer decides)."""
    from relops_pipeline.lib.review import ReviewImportError, import_review_labels

    home = Home.resolve(args.home)
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"no such file: {path}")
    with read_warehouse(home) as con:
        reviewer = act_as(home, args.by, request=f"import review labels from {path.name}", con=con) if args.by else None
        try:
            out = import_review_labels(con, path, reviewer_default=reviewer, open_incidents=args.open_incidents)
        except ReviewImportError as exc:
            raise CliError(str(exc)) from None
    summary = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in out.items() if isinstance(v, int))
    lines = [f"imported {path}: {summary}"]
    for inc in out.get("incidents", []):
        lines.append(f"  incident {inc['incident_id']} ({inc['workflow']} {inc.get('release') or '-'}): {inc['title']}")
    return CommandResult(out, "\n".join(lines))


def cmd_incident_open(args) -> CommandResult:
    """incident open --workflow W [--release V] --title T [--trace ID ...] [--started-at TIME]"""
    from relops_pipeline.lib import incidents as inc

    home = Home.resolve(args.home)
    with read_warehouse(home) as con, _incident_errors():
        get_workflow(home, args.workflow)
        started = _time_arg(args.started_at)
        links = {"traces": list(args.trace)} if args.trace else {}
        by = act_as(home, args.by, request=f"open an incident of {args.workflow}", con=con, workflow=args.workflow,
                    asked=args.title)
        row = inc.open_incident(con, args.workflow, args.release, args.title, "manual", by, links, started_at=started)
    verb = "opened" if row.get("created") else "already open as"
    return CommandResult(row, f"{verb} {row['incident_id']}: {row['title']}")


def cmd_incident_list(args) -> CommandResult:
    """incident list [--workflow W] [--all]"""
    from relops_pipeline.lib import incidents as inc

    with read_warehouse(Home.resolve(args.home)) as con, _incident_errors():
        rows = inc.list_incidents(con, args.workflow, status=None if args.all else "open", limit=args.limit)
    table = plain_table(
        ["incident", "status", "workflow", "release", "opened (UTC)", "source", "title"],
        [[r["incident_id"], r["status"], r["workflow"], r["release"] or "-", f"{r['opened_at']:%Y-%m-%d %H:%M}",
          r["source"], r["title"][:60]] for r in rows])
    return CommandResult({"incidents": rows}, table if rows else "no incidents" + ("" if args.all else " open"))


def cmd_incident_show(args) -> CommandResult:
    """incident show ID"""
    from relops_pipeline.lib import incidents as inc

    with read_warehouse(Home.resolve(args.home)) as con, _incident_errors():
        row = inc.show_incident(con, args.incident_id)
    if row is None:
        raise CliError(f"no incident {args.incident_id!r}")
    return CommandResult(row, _incident_text(row))


def cmd_incident_close(args) -> CommandResult:
    """incident close ID --resolution TEXT [--by LABEL]"""
    from relops_pipeline.lib import incidents as inc

    home = Home.resolve(args.home)
    with read_warehouse(home) as con, _incident_errors():
        by = act_as(home, args.by, request=f"close incident {args.incident_id}", con=con, asked=args.resolution)
        row = inc.close_incident(con, args.incident_id, closed_by=by, resolution=args.resolution)
    return CommandResult(row, f"closed {row['incident_id']} ({by}): {row['resolution']}")


@contextlib.contextmanager
def _incident_errors():
    """An IncidentError as a one-line CliError."""
    from relops_pipeline.lib.incidents import IncidentError

    try:
        yield
    except IncidentError as exc:
        raise CliError(str(exc)) from None


def _time_arg(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"--started-at {value!r}: expected an ISO time such as 2026-11-10T10:00") from None
    return t.astimezone(dt.UTC).replace(tzinfo=None) if t.tzinfo else t


def _incident_text(row: dict) -> str:
    lines = [f"{row['incident_id']}  {row['status'].upper()}  {row['workflow']} {row.get('release') or '-'}",
             f"  {row['title']}",
             f"  source {row['source']}, opened by {row['opened_by']} at {row['opened_at']:%Y-%m-%d %H:%M} UTC"
             + (f", started {row['started_at']:%Y-%m-%d %H:%M}" if row.get("started_at") else "")]
    if row.get("closed_at"):
        lines.append(f"  closed by {row['closed_by']} at {row['closed_at']:%Y-%m-%d %H:%M}: {row['resolution']}")
    for name, items in (("alerts", row.get("alerts") or []), ("rollbacks", row.get("rollbacks") or []),
                        ("labels", row.get("labels") or [])):
        if items:
            lines.append(f"  {name}: {len(items)}")
    traces = row.get("traces") or []
    if traces:
        lines.append(f"  traces ({len(traces)}):")
        for t in traces[:10]:
            out = (t.get("output_text") or "").replace("\n", " ")[:80]
            lines.append(f"    {t['trace_id']}  {t.get('release') or '-'}  {out}")
    links = {k: v for k, v in (row.get("links") or {}).items() if k != "traces"}
    for k, v in links.items():
        lines.append(f"  {k}: {v}")
    return "\n".join(lines)


# The cadence asset that makes each kind of proposal.
KIND_ASSETS = {"suite": "suite_proposals", "thresholds": "threshold_proposals", "alert_rules": "alert_calibration"}


def cmd_propose(args) -> CommandResult:
    """Make this month's proposals now (through Dagster): all kinds, or --kind K."""
    home = Home.resolve(args.home)
    with read_warehouse(home):
        pass
    if args.kind:
        asset = KIND_ASSETS[args.kind]
        runs = [materialize_or_fail(home, [asset], what=asset.replace("_", " ")).run_id]
    else:
        runs = [run_or_fail(home, "monthly_cadence_job", what="monthly cadence").run_id]
    out = _proposals_list(home, kind=args.kind, workflow=args.workflow, status="draft")
    from relops_pipeline.lib.workflows import load_all

    broken = load_all(home.workflows_dir)  # skipped by the proposals: named, never hidden
    return CommandResult({**out.data, "run_ids": runs, "skipped": [{"workflow": n, "error": e} for n, e in broken.broken]},
                         "\n".join([*broken.warnings(), out.text]))


def cmd_proposals_list(args) -> CommandResult:
    """proposals [list] [--kind K] [--status S] [--workflow W]"""
    return _proposals_list(Home.resolve(args.home), kind=args.kind, workflow=args.workflow, status=args.status)


def cmd_proposals_show(args) -> CommandResult:
    """proposals show ID"""
    from relops_pipeline.lib.proposals.store import get_proposal

    with read_warehouse(Home.resolve(args.home)) as con:
        p = get_proposal(con, args.proposal_id)
    if p is None:
        raise CliError(f"no proposal {args.proposal_id!r}")
    return CommandResult(p, plain_text(p["report_md"]) if p["report_md"] else p["title"])


def _proposals_list(home: Home, *, kind: str | None, workflow: str | None, status: str | None) -> CommandResult:
    from relops_pipeline.lib.proposals.store import ProposalError, list_proposals

    with read_warehouse(home) as con:
        try:
            rows = list_proposals(con, kind=kind, workflow=workflow, status=status)
        except ProposalError as exc:
            raise CliError(str(exc)) from None
    accept = {"suite": "suite accept", "thresholds": "thresholds accept", "alert_rules": "alerts accept"}
    lines = [plain_table(["proposal", "status", "workflow", "title"],
                         [[p["proposal_id"], p["status"], p["workflow"], p["title"][:70]] for p in rows])
             if rows else "no proposals"]
    drafts = [p for p in rows if p["status"] == "draft"]
    for p in drafts:
        lines.append(f"  read: {p['report_path'] or 'relops proposals show ' + p['proposal_id']}")
        lines.append(f"  accept: relops {accept[p['kind']]} {p['proposal_id']} [--by LABEL]")
    return CommandResult({"proposals": rows}, "\n".join(lines))


def accept_or_reject(home: Home, kind: str, proposal_id: str, *, action: str, by: str | None,
                     reason: str | None) -> CommandResult:
    """Accept (make the new version) or reject a draft as the workflow's owner or a delegate."""
    from relops_pipeline.lib.proposals.store import ProposalError, get_proposal, reject_proposal

    with read_warehouse(home) as con:
        p = get_proposal(con, proposal_id)
        if p is None or p["kind"] != kind:
            raise CliError(f"no {kind} proposal {proposal_id!r}: `relops proposals --kind {kind}` lists them")
        wf = get_workflow(home, p["workflow"])
        by = require_approver(con, home, wf, by, f"{action} {kind} proposals", asked=proposal_id)
        try:
            if action == "reject":
                if not reason:
                    raise CliError("rejecting a proposal needs --reason TEXT")
                row = reject_proposal(con, proposal_id, by=by, reason=reason, kind=kind)
                note_decision(home, row)
                return CommandResult({"proposal": row}, f"{by} rejected {proposal_id}: {reason}")
            if kind == "suite":
                from relops_pipeline.lib.proposals.suites import accept_suite_proposal

                out = accept_suite_proposal(con, home.root / "suites", proposal_id, by=by, reason=reason)
                note_decision(home, get_proposal(con, proposal_id))
                return CommandResult({**out, "workflow": wf.name},
                                     f"{by} accepted {proposal_id}: suite {wf.suite_name} {out['version']} "
                                     f"(+{out['cases_added']} cases) at {out['path']}")
            if kind == "thresholds":
                from relops_pipeline.lib.proposals.thresholds import accept_threshold_proposal

                th = accept_threshold_proposal(con, proposal_id, by=by, reason=reason)
                note_decision(home, get_proposal(con, proposal_id))
                return CommandResult({"workflow": wf.name, "version": th.version},
                                     f"{by} accepted {proposal_id}: thresholds of {wf.name} are now version {th.version}")
            from relops_pipeline.lib.alerts.calibration import accept_alert_calibration

            out = accept_alert_calibration(con, proposal_id, by=by, reason=reason)
            note_decision(home, get_proposal(con, proposal_id))
            return CommandResult({**out, "workflow": wf.name},
                                 f"{by} accepted {proposal_id}: alert rules of {wf.name} are now version {out['version']}")
        except (ProposalError, ValueError) as exc:
            raise CliError(str(exc)) from None


def note_decision(home: Home, proposal: dict | None) -> None:
    """Append the decision to the proposal's report file, so the file never reads as a draft
    after it was decided."""
    from relops_pipeline.lib.cadence import proposal_report_path

    if proposal is None:
        return

    path = proposal_report_path(home, proposal["proposal_id"])
    if path.exists():
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"\n\n---\n**{proposal['status'].upper()}** by {proposal['decided_by']} at "
                    f"{proposal['decided_at']:%Y-%m-%d %H:%M} UTC"
                    + (f": version {proposal['result_version']}" if proposal.get("result_version") else "")
                    + f" ({proposal['decision_reason']})\n")


def cmd_readiness(args) -> CommandResult:
    """Review a workflow's readiness for release operations (through Dagster) and show the gaps."""
    home = Home.resolve(args.home)
    wf = get_workflow(home, args.workflow)
    with read_warehouse(home):
        pass
    from relops_pipeline.lib.cadence import recorded_readiness_of_run

    result = materialize_or_fail(home, ["readiness_report"], what="readiness")
    with read_warehouse(home) as con:
        row = recorded_readiness_of_run(con, wf.name, result.run_id)
    if row is None:
        raise CliError(f"readiness run {result.run_id} recorded no review of {wf.name}", EXIT_RUN_FAILED)
    status, res, md, path = row
    return CommandResult({"workflow": wf.name, "status": status, "result": res, "report_path": path,
                          "run_id": result.run_id}, wrap_prose(plain_text(md)) + f"\n(report: {path})")


def register(add: Commands) -> None:
    """Register the cadence commands (and their verbs) on the `relops` parser."""
    p = add("memo", cmd_memo, "write and show the weekly stability memo of a complete week")
    p.add_argument("--week", default=None, metavar="YYYY-MM-DD", help="a day of the week (default: the last complete week)")
    p.add_argument("--full", action="store_true", help="print the whole memo (as plain text; the markdown file has it formatted)")

    review = add.group("review", "the weekly review: review sample [--week D] | review import FILE [--by LABEL] [--open-incidents]")
    p = review("sample", cmd_review_sample, "draw and write the week's review sheet (through Dagster)")
    p.add_argument("--week", default=None, metavar="YYYY-MM-DD", help="a day of the week (default: the last complete week)")
    p = review("import", cmd_review_import, "load a filled-in review sheet's labels back")
    p.add_argument("file", metavar="FILE")
    add_by(p, "the reviewer of rows that name none")
    p.add_argument("--open-incidents", action="store_true",
                   help="open an incident per workflow and release with failures, linked to their traces")

    incident = add.group("incident", "incidents: incident open | list | show | close")
    p = incident("open", cmd_incident_open, "open an incident by hand")
    p.add_argument("--workflow", required=True)
    p.add_argument("--release", default=None, help="the release version")
    p.add_argument("--title", required=True)
    p.add_argument("--trace", action="append", default=[], metavar="TRACE_ID", help="link a trace (repeatable)")
    p.add_argument("--started-at", default=None, metavar="YYYY-MM-DDTHH:MM", help="when the problem began (UTC)")
    add_by(p)
    p = incident("list", cmd_incident_list, "list the open incidents (--all: closed ones too)")
    p.add_argument("--workflow", default=None)
    p.add_argument("--all", action="store_true", help="closed ones too")
    p.add_argument("--limit", type=positive_int, default=50)
    p = incident("show", cmd_incident_show, "show an incident with its alerts, rollbacks, labels and traces")
    p.add_argument("incident_id", metavar="INCIDENT_ID")
    p = incident("close", cmd_incident_close, "close an incident with its resolution")
    p.add_argument("incident_id", metavar="INCIDENT_ID")
    p.add_argument("--resolution", required=True)
    add_by(p)

    p = add("propose", cmd_propose, "make this month's proposals now for every workflow: suite cases from incidents, "
                                    "threshold ratchets, alert calibration (drafts until accepted)")
    p.add_argument("--kind", default=None, choices=list(KIND_ASSETS))
    p.add_argument("--workflow", default=None, help="list only this workflow's drafts afterwards")

    proposals = add.group("proposals", "proposals [list] [--kind K] [--status S] [--workflow W] | proposals show ID", default="list")
    p = proposals("list", cmd_proposals_list, "list proposals (`relops proposals` alone does this)")
    p.add_argument("--kind", default=None, choices=list(KIND_ASSETS))
    p.add_argument("--workflow", default=None)
    p.add_argument("--status", default=None, choices=["draft", "accepted", "rejected", "superseded"])
    p = proposals("show", cmd_proposals_show, "show a proposal's report")
    p.add_argument("proposal_id", metavar="PROPOSAL_ID")

    p = add("readiness", cmd_readiness, "review what release operations needs from a workflow, with a first month's plan")
    p.add_argument("workflow")
