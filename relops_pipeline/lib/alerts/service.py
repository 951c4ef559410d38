"""Alerts for a home: each workflow's sinks and cool-down from its configuration file.

The one place that turns workflow files into sinks, so that raising, delivering and testing an
alert (Dagster jobs and the CLI alike) route the same way.
"""

from __future__ import annotations

from datetime import datetime

import duckdb

from relops_pipeline.lib.alerts.model import Alert, AlertRecord
from relops_pipeline.lib.alerts.outbox import Connector, DeliveryReport, connector, deliver_due, enqueue
from relops_pipeline.lib.alerts.sinks import Sink, build_sinks, cooldown_from_config
from relops_pipeline.lib.home import Home
from relops_pipeline.lib.warehouse import fetch_one
from relops_pipeline.lib.workflows import DEFAULTS, list_workflows, load_workflow


def workflow_alerts_config(home: Home, workflow: str | None) -> dict:
    """The `alerts` block of a workflow file; the defaults for alerts about no known workflow."""
    if workflow and workflow in list_workflows(home.workflows_dir):
        return load_workflow(home.workflows_dir, workflow).alerts
    return DEFAULTS["alerts"]


def sinks_for(home: Home, workflow: str | None) -> list[Sink]:
    return build_sinks(workflow_alerts_config(home, workflow), home.alerts_dir)


def sinks_by_workflow(home: Home, workflows: list[str | None]) -> dict:
    """{workflow: sinks} for deliver_due, covering every workflow that has alerts waiting."""
    return {w: sinks_for(home, w) for w in dict.fromkeys(workflows)}


def raise_alert(con: duckdb.DuckDBPyConnection, home: Home, alert: Alert, now: datetime | None = None) -> AlertRecord:
    """Write the alert to the outbox, routed to its workflow's sinks (nothing is sent yet)."""
    cfg = workflow_alerts_config(home, alert.workflow)
    return enqueue(con, alert, build_sinks(cfg, home.alerts_dir), now=now, cooldown=cooldown_from_config(cfg))


def deliver(con: Connector, home: Home, now: datetime | None = None) -> DeliveryReport:
    """Try every due delivery of every workflow with the sinks its file configures now. Given a
    factory of connections (Connector), the warehouse is open only to read and record, never
    while a sink is called."""
    with connector(con)() as c:
        waiting = [r[0] for r in c.execute(
            "SELECT DISTINCT o.workflow FROM alert_deliveries d JOIN alert_outbox o USING (alert_id) "
            "WHERE d.status IN ('pending', 'sending')").fetchall()]
    return deliver_due(con, sinks_by_workflow(home, waiting), now=now)


def due_count(con: duckdb.DuckDBPyConnection, now: datetime) -> int:
    """How many deliveries are due now (pending and due, or sending past a lease)."""
    return int(fetch_one(con.execute(
        "SELECT count(*) FROM alert_deliveries WHERE status IN ('pending', 'sending') "
        "AND coalesce(next_attempt_at, TIMESTAMP '1970-01-01') <= ?", [now]))[0])
