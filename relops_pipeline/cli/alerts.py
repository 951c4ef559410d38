"""`relops alerts`: the alert outbox (list, deliver, retry, test) and alert-rule calibration
proposals."""

from __future__ import annotations

import datetime as dt
import sys

from relops_pipeline.cli.cadence import accept_or_reject
from relops_pipeline.cli.common import (
    CliError,
    CommandResult,
    Commands,
    add_by,
    get_workflow,
    plain_table,
    positive_int,
    read_warehouse,
    run_or_fail,
)
from relops_pipeline.lib.home import Home


def _outbox(home: Home, args, *, delivery=None) -> CommandResult:
    """The outbox (by --status, --workflow, --limit), after the delivery run when there was one."""
    from relops_pipeline.lib.alerts import ALERT_STATUSES, list_alerts

    status = args.status
    if status and status not in ALERT_STATUSES:
        raise CliError(f"--status {status!r}: one of {', '.join(ALERT_STATUSES)}")
    with read_warehouse(home) as con:
        records = [r.to_dict() for r in list_alerts(con, status, workflow=args.workflow, limit=args.limit)]
        totals = dict(con.execute("SELECT status, count(*) FROM alert_outbox GROUP BY ALL").fetchall())
    rows = []
    for r in records:
        sinks = ", ".join(f"{d['sink']}:{d['status']}" + (f"({d['attempts']})" if d["attempts"] > 1 else "") for d in r["deliveries"])
        rows.append([r["created_at"][:19], r["status"], r["severity"], r["workflow"] or "-", r["release"] or "-", r["title"][:60],
                     sinks or "-"])
    lines = []
    data = {"totals": totals, "alerts": records}
    if delivery is not None:
        result, report = delivery
        counts = {k: sum(1 for a in report["attempts"] if a["outcome"] == k) for k in ("delivered", "retry", "dead")}
        lines.append(f"delivery run {result.run_id}: delivered {counts['delivered']}, retrying {counts['retry']}, dead {counts['dead']}")
        data["delivery"] = report
    lines.append("outbox: " + (", ".join(f"{k} {v}" for k, v in sorted(totals.items())) or "empty"))
    if rows:
        lines.append(plain_table(["raised (UTC)", "status", "severity", "workflow", "release", "title", "sinks"], rows))
    return CommandResult(data, "\n".join(lines))


def cmd_alerts_list(args) -> CommandResult:
    """List the outbox."""
    return _outbox(Home.resolve(args.home), args)


def cmd_alerts_deliver(args) -> CommandResult:
    """Deliver what is due (through Dagster), then list the outbox."""
    home = Home.resolve(args.home)
    result = run_or_fail(home, "deliver_alerts_job", what="delivery")
    return _outbox(home, args, delivery=(result, result.output_for_node("deliver_alerts")))


def cmd_alerts_retry(args) -> CommandResult:
    """Requeue dead deliveries (of one alert, or all)."""
    from relops_pipeline.lib.alerts import retry_dead

    with read_warehouse(Home.resolve(args.home)) as con:
        n = retry_dead(con, args.alert_id)
    return CommandResult({"requeued": n}, f"{n} dead deliveries requeued; `relops alerts deliver` sends them now")


def cmd_alerts_test(args) -> CommandResult:
    """Send a test alert through a workflow's sinks: written to the outbox, then delivered."""
    from relops_pipeline.lib.alerts import Alert
    from relops_pipeline.lib.alerts.service import raise_alert

    home = Home.resolve(args.home)
    wf = get_workflow(home, args.workflow)
    with read_warehouse(home) as con:
        rec = raise_alert(con, home, Alert(
            kind="test", severity=args.severity, title=f"relops test alert for {wf.name}",
            workflow=wf.name, summary="A test of this workflow's alert sinks; nothing is wrong.",
            dedup_key=f"test:{wf.name}:{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}"), )
    print(f"test alert {rec.alert_id} written to the outbox ({rec.status}); delivering ...", file=sys.stderr)
    return cmd_alerts_deliver(args)


def cmd_alerts_accept(args) -> CommandResult:
    """Accept an alert-rule calibration proposal (a new version of the workflow's rules)."""
    return accept_or_reject(Home.resolve(args.home), "alert_rules", args.proposal_id, action="accept", by=args.by, reason=args.reason)


def cmd_alerts_reject(args) -> CommandResult:
    """Reject an alert-rule calibration proposal."""
    return accept_or_reject(Home.resolve(args.home), "alert_rules", args.proposal_id, action="reject", by=args.by, reason=args.reason)


def register(add: Commands) -> None:
    """Register alerts and its verbs on the `relops` parser."""
    alerts = add.group("alerts", "the alert outbox: list (the default) | deliver | retry | test; "
                                 "accept | reject alert-rule calibration proposals", default="list")

    def outbox_options(p) -> None:
        p.add_argument("--status", default=None, help="pending, delivered, dead, suppressed or unrouted")
        p.add_argument("--workflow", default=None)
        p.add_argument("--limit", type=positive_int, default=50)

    outbox_options(alerts("list", cmd_alerts_list, "list the outbox (`relops alerts` alone does this)"))
    outbox_options(alerts("deliver", cmd_alerts_deliver, "deliver what is due now, through Dagster"))
    p = alerts("retry", cmd_alerts_retry, "requeue dead-lettered deliveries (of one alert, or all)")
    p.add_argument("alert_id", nargs="?", default=None, metavar="ALERT_ID")
    p = alerts("test", cmd_alerts_test, "send a test alert through a workflow's sinks, then deliver")
    p.add_argument("--workflow", required=True)
    p.add_argument("--severity", default="info", help="the test alert's severity (routing by min_severity)")
    p.add_argument("--status", default=None, help="the outbox listed afterwards: pending, delivered, dead, suppressed or unrouted")
    p.add_argument("--limit", type=positive_int, default=50)
    for verb, fn in (("accept", cmd_alerts_accept), ("reject", cmd_alerts_reject)):
        p = alerts(verb, fn, f"{verb} an alert-rule calibration proposal as the workflow's owner or a delegate")
        p.add_argument("proposal_id", metavar="PROPOSAL")
        add_by(p, "the owner or a delegate")
        p.add_argument("--reason", default=None, help="why (needed to reject)")
