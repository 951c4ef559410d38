"""Alerts: an outbox in the warehouse, delivered at least once to configured sinks (pure logic).

    alert = Alert(kind="drift.weekly", severity="error", title="...", workflow="support-triage", ...)
    sinks = build_sinks(wf.alerts, home_alerts_dir)
    enqueue(con, alert, sinks, cooldown=cooldown_from_config(wf.alerts))   # committed, nothing sent
    deliver_due(con, sinks)                                                # sends, retries, dead-letters
    list_alerts(con, status="dead")

See outbox.py for statuses and the delivery guarantee, sinks.py for the configuration keys.
"""

from relops_pipeline.lib.alerts.model import (
    SEVERITIES,
    Alert,
    AlertError,
    AlertRecord,
    Delivery,
    format_alert_text,
    normalize_severity,
)
from relops_pipeline.lib.alerts.outbox import (
    ALERT_STATUSES,
    DELIVERY_STATUSES,
    DeliveryAttempt,
    DeliveryReport,
    deliver_due,
    enqueue,
    get_alert,
    list_alerts,
    retry_dead,
)
from relops_pipeline.lib.alerts.sinks import (
    DeliveryError,
    RetryPolicy,
    Sink,
    build_sinks,
    cooldown_from_config,
)

__all__ = [
    "ALERT_STATUSES",
    "DELIVERY_STATUSES",
    "SEVERITIES",
    "Alert",
    "AlertError",
    "AlertRecord",
    "Delivery",
    "DeliveryAttempt",
    "DeliveryError",
    "DeliveryReport",
    "RetryPolicy",
    "Sink",
    "build_sinks",
    "cooldown_from_config",
    "deliver_due",
    "enqueue",
    "format_alert_text",
    "get_alert",
    "list_alerts",
    "normalize_severity",
    "retry_dead",
]
