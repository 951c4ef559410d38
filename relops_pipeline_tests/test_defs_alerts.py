"""Dagster wiring of alerts: the delivery sensor launches a run only when deliveries are due,
and the delivery job drains the outbox into the workflow's sinks (retrying a sink that is down)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import pytest

from relops_pipeline.defs.alerts.jobs import alert_delivery_sensor, deliver_alerts_job
from relops_pipeline.defs.resources import relops_resources
from relops_pipeline.lib.alerts import Alert, list_alerts
from relops_pipeline.lib.alerts.service import raise_alert
from relops_pipeline.lib.warehouse import open_warehouse


@pytest.fixture
def home(home):
    """conftest's example home, with its warehouse created."""
    with open_warehouse(home.warehouse_path):
        pass
    return home


class _Receiver(BaseHTTPRequestHandler):
    fail_first = 1
    bodies: list = []

    def do_POST(self):  # noqa: N802 — http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        cls = type(self)
        if cls.fail_first > 0:
            cls.fail_first -= 1
            self.send_response(500)
        else:
            cls.bodies.append(json.loads(body))
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def _run(home):
    resources = relops_resources(home.root)
    with dg.instance_for_test() as instance:
        job = dg.Definitions(jobs=[deliver_alerts_job], resources=resources).resolve_job_def("deliver_alerts_job")
        result = job.execute_in_process(instance=instance)
    assert result.success
    return result.output_for_node("deliver_alerts")


def test_sensor_waits_for_due_deliveries_and_the_job_delivers_through_a_recovering_sink(home, monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        wf = home.workflows_dir / "support-triage.yaml"
        wf.write_text(wf.read_text().replace(
            "    - {type: log}\n",
            "    - {type: log}\n    - {type: webhook, url_env: TEST_HOOK_URL, secret_env: TEST_HOOK_SECRET, backoff_s: 0}\n", 1))
        monkeypatch.setenv("TEST_HOOK_URL", f"http://127.0.0.1:{server.server_port}/hook")
        monkeypatch.setenv("TEST_HOOK_SECRET", "s3cret")
        with dg.instance_for_test() as instance:
            assert isinstance(_tick(alert_delivery_sensor, instance, home), dg.SkipReason)
            with open_warehouse(home.warehouse_path) as con:
                raise_alert(con, home, Alert(kind="drift.weekly", severity="error", title="topic drifted",
                                             workflow="support-triage", evidence={"topic_score": 0.21}))
            request = _tick(alert_delivery_sensor, instance, home)
            assert isinstance(request, dg.RunRequest) and request.tags["relops/due"] == "3"
        first = _run(home)  # the webhook answers 500: file and log delivered, the webhook retries
        assert sorted(a["outcome"] for a in first["attempts"]) == ["delivered", "delivered", "retry"]
        second = _run(home)  # backoff 0 s: due again at once, and the receiver has recovered
        assert [a["outcome"] for a in second["attempts"]] == ["delivered"]
        assert _Receiver.bodies[0]["title"] == "topic drifted"
        with open_warehouse(home.warehouse_path) as con:
            [rec] = list_alerts(con)
        assert rec.status == "delivered" and {d.sink: d.attempts for d in rec.deliveries}["webhook"] == 2
    finally:
        server.shutdown()


def _tick(sensor, instance, home, cursor=None):
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=relops_resources(home.root)) as context:
        return sensor(context)
