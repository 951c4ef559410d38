"""Typed results of the alerts domain (lib/alerts/rules.py, lib/alerts/outbox.py) as
materialization and output metadata."""

from __future__ import annotations

import dagster as dg

from relops_pipeline.lib import rounding
from relops_pipeline.lib.alerts.outbox import DeliveryReport
from relops_pipeline.lib.alerts.rules import SignalRuleAlerts
from relops_pipeline.lib.markdown import md_table

# The table of firings shows the latest ones.
FIRINGS_SHOWN = 50


def signal_rule_alerts_result(r: SignalRuleAlerts) -> dg.MaterializeResult:
    """How many rules fired and how many alerts were sent, and a table of the latest firings."""
    rows = [[str(f.day), f.workflow, f.rule, rounding.by_name(f.firing.signal, f.value), rounding.by_name(f.firing.signal, f.threshold),
             f.alert_id or "-"] for f in r.firings]
    return dg.MaterializeResult(metadata={
        "firings": dg.MetadataValue.int(len(r.firings)),
        "alerts_sent": dg.MetadataValue.int(r.alerts_sent),
        "fired": dg.MetadataValue.md(md_table(["day", "workflow", "rule", "value", "threshold", "alert"],
                                              rows[-FIRINGS_SHOWN:]) if rows else "no rule fired"),
    })


def delivery_metadata(report: DeliveryReport) -> dict[str, int]:
    """The delivery run's counts, as output metadata."""
    return {"delivered": len(report.delivered), "retrying": len(report.retrying), "dead": len(report.dead)}
