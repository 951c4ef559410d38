"""Alerts domain: signal alert rules, the outbox delivery job and the sensor that launches it."""

from relops_pipeline.defs.alerts.assets import signal_rule_alerts
from relops_pipeline.defs.alerts.jobs import alert_delivery_sensor, deliver_alerts_job

assets = [signal_rule_alerts]
jobs = [deliver_alerts_job]
sensors = [alert_delivery_sensor]
