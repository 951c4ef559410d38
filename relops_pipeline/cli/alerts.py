"""`relops alerts`: the alert outbox (list, deliver, retry, test) and alert-rule calibration
proposals."""

from __future__ import annotations

import datetime as dt
import sys

from relops_pipeline.cli.cadence import accept_or_reject
from relops_pipeline.cli.common import (
    EXIT_RUN_FAILED,
    CliError,
    get_workflow,
    plain_table,
    read_warehouse,
    run_failure,
    run_job,
)
from relops_pipeline.lib.home import Home


def cmd_alerts(args) -> dict:
    """List the outbox; deliver what is due (through Dagster); requeue dead deliveries; or
    send a test alert through a workflow's sinks."""
    from relops_pipeline.lib.alerts import ALERT_STATUSES, list_alerts, retry_dead

    home = Home.resolve(args.home)
    action = args.action or "list"
    if action in ("accept", "reject"):
        if not args.alert_id:
            raise CliError(f"usage: relops alerts {action} PROPOSAL --by NAME")
        return accept_or_reject(home, "alert_rules", args.alert_id, action=action, by=args.by, reason=args.reason)
    if action == "test":
        if not args.workflow:
            raise CliError("usage: relops alerts test --workflow W")
        from relops_pipeline.lib.alerts import Alert
        from relops_pipeline.lib.alerts.service import raise_alert

        wf = get_workflow(home, args.workflow)
        with read_warehouse(home) as con:
            rec = raise_alert(con, home, Alert(
                kind="test", severity=args.severity, title=f"relops test alert for {wf.name}",
                workflow=wf.name, summary="A test of this workflow's alert sinks; nothing is wrong.",
                dedup_key=f"test:{wf.name}:{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}"), )
        action = "deliver"
        print(f"test alert {rec.alert_id} written to the outbox ({rec.status}); delivering ...", file=sys.stderr)
    if action == "deliver":
        result = run_job(home, "deliver_alerts_job")
        if not result.success:
            raise CliError(f"delivery run {result.run_id} failed: {run_failure(result)}", EXIT_RUN_FAILED)
        report = result.output_for_node("deliver_alerts")
        counts = {k: sum(1 for a in report["attempts"] if a["outcome"] == k) for k in ("delivered", "retry", "dead")}
    elif action == "retry":
        with read_warehouse(home) as con:
            n = retry_dead(con, args.alert_id)
        return {"requeued": n, "_text": f"{n} dead deliveries requeued; `relops alerts deliver` sends them now"}
    status = args.status
    if status and status not in ALERT_STATUSES:
        raise CliError(f"--status {status!r}: one of {', '.join(ALERT_STATUSES)}")
    with read_warehouse(home) as con:
        records = [r.to_dict() for r in list_alerts(con, status, workflow=args.workflow, limit=args.limit)]
        totals = dict(con.execute("SELECT status, count(*) FROM alert_outbox GROUP BY ALL").fetchall())
    rows = []
    for r in records:
        sinks = ", ".join(f"{d['sink']}:{d['status']}" + (f"({d['attempts']})" if d["attempts"] > 1 else "") for d in r["deliveries"])
        rows.append([r["created_at"][:19], r["status"], r["severity"], r["workflow"] or "-", r["release"] or "-", r["title"][:60], sinks or "-"])
    lines = []
    if action == "deliver":
        lines.append(f"delivery run {result.run_id}: delivered {counts['delivered']}, retrying {counts['retry']}, dead {counts['dead']}")
    lines.append("outbox: " + (", ".join(f"{k} {v}" for k, v in sorted(totals.items())) or "empty"))
    if rows:
        lines.append(plain_table(["raised (UTC)", "status", "severity", "workflow", "release", "title", "sinks"], rows))
    out = {"totals": totals, "alerts": records, "_text": "\n".join(lines)}
    if action == "deliver":
        out["delivery"] = report
    return out


def register(add) -> None:
    """Register alerts on the `relops` parser."""
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
