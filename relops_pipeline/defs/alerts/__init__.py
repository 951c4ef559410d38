"""Alerts domain: the outbox delivery job and the sensor that launches it."""

from relops_pipeline.defs.alerts.jobs import alert_delivery_sensor, deliver_alerts_job

assets: list = []
jobs = [deliver_alerts_job]
sensors = [alert_delivery_sensor]
