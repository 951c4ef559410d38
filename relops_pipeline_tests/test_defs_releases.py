"""Dagster wiring of rollout and rollback: failed checks launch the rollback-alert job once per
failure; the job rolls back a canary where the policy allows it and only recommends where it
does not; the drill check fails on a stale drill and passes after a drill."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import pytest

from relops_pipeline.defs.evals.partitions import releases_partitions
from relops_pipeline.defs.releases.assets import drill_fresh, rollback_drill, rollback_runbook
from relops_pipeline.defs.releases.jobs import rollback_alert_job
from relops_pipeline.defs.releases.sensors import failed_checks_sensor
from relops_pipeline.lib.alerts import list_alerts
from relops_pipeline.lib.registry.rollout import adopt_state
from relops_pipeline.lib.registry.state import RegistryState, get_state, write_pointer
from relops_pipeline.lib.warehouse import open_warehouse
from relops_pipeline.registry import read_pointer


@pytest.fixture
def home(home):
    """conftest's example home with doc-qa in canary and support-triage fully rolled out."""
    h = home
    with open_warehouse(h.warehouse_path) as con:
        now = dt.datetime(2026, 11, 20, 9, 0)
        for state in (
            RegistryState("doc-qa", seq=2, live="v2.3.0", canary="v2.4.0", canary_percent=50.0, stage="canary",
                          last_known_good="v2.1.0", updated_by="li.wei", reason="canary", updated_at=now),
            RegistryState("support-triage", seq=1, live="v1.4.0", stage="full", last_known_good="v1.3.0",
                          updated_by="ana.lopez", reason="rollout", updated_at=now),
        ):
            state = adopt_state(con, state, actor="relops-tests", reason="starting point")
            write_pointer(h.registry_dir, state)
    return h


def _fake(asset: str, check: str, *, partitioned: bool, metadata: dict):
    """An asset with the real asset's name and check whose check fails (what a real failure records)."""

    @dg.asset(name=asset, partitions_def=releases_partitions if partitioned else None,
              check_specs=[dg.AssetCheckSpec(check, asset=asset)])
    def _asset():
        return dg.MaterializeResult(check_results=[dg.AssetCheckResult(
            check_name=check, passed=False, severity=dg.AssetCheckSeverity.ERROR, description="it failed",
            metadata=metadata)])

    return _asset


def _run_requests(sensor, instance, cursor):
    result = sensor(dg.build_sensor_context(instance=instance, cursor=cursor))
    return result.run_requests, result.cursor


def _execute(request, resources, instance):
    job = dg.Definitions(jobs=[rollback_alert_job], resources=resources).resolve_job_def("rollback_alert_job")
    result = job.execute_in_process(run_config=request.run_config, instance=instance, tags=request.tags)
    assert result.success
    return result.output_for_node("rollback_or_alert")


def test_failed_canary_check_rolls_back_once_and_records_everything(home, resources):
    with dg.instance_for_test() as instance:
        requests, cursor = _run_requests(failed_checks_sensor, instance, None)
        assert requests == []  # the first tick only starts the cursor
        instance.add_dynamic_partitions(releases_partitions.name, ["doc-qa--v2.4.0"])
        fake = _fake("canary_analysis", "canary_healthy", partitioned=True, metadata={"p95_latency_ratio": 1.38})
        assert dg.materialize([fake], partition_key="doc-qa--v2.4.0", instance=instance, raise_on_error=False)
        requests, cursor = _run_requests(failed_checks_sensor, instance, cursor)
        assert len(requests) == 1
        again, _ = _run_requests(failed_checks_sensor, instance, cursor)
        assert again == []  # ticking again: no second run for the same failure
        out = _execute(requests[0], resources, instance)
    assert out["decision"] == "rollback" and out["time_to_rollback_s"] is not None and out["time_to_rollback_s"] >= 0
    pointer = read_pointer(home.registry_dir, "doc-qa")
    assert pointer.live == "v2.3.0" and pointer.canary is None
    with open_warehouse(home.warehouse_path) as con:
        [alert] = list_alerts(con, workflow="doc-qa")
        incidents = con.execute("SELECT status, release FROM incidents WHERE workflow = 'doc-qa'").fetchall()
    assert alert.status == "delivered" and "rolled back automatically" in alert.alert.title
    assert alert.alert.evidence["p95_latency_ratio"] == 1.38
    assert incidents == [("open", "v2.4.0")]
    runbook = (home.reports_dir / "runbooks" / "doc-qa.md").read_text()
    assert "| live | v2.3.0 |" in runbook and "v2\\." not in runbook  # the version as written, not escaped


def test_drift_failure_where_policy_forbids_rollback_only_recommends(home, resources):
    wf = home.workflows_dir / "support-triage.yaml"
    wf.write_text(wf.read_text() + "\nrollout: {auto_rollback: false}\n")
    failing = [{"workflow": "support-triage", "release": "v1.4.0", "period_start": "2026-11-02", "severity": "ERROR",
                "reason": "critical columns drifted: topic, input_chars"}]
    with dg.instance_for_test() as instance:
        _, cursor = _run_requests(failed_checks_sensor, instance, None)
        fake = _fake("weekly_drift", "critical_columns_stable", partitioned=False,
                     metadata={"failing": dg.MetadataValue.json(failing)})
        dg.materialize([fake], instance=instance, raise_on_error=False)
        requests, cursor = _run_requests(failed_checks_sensor, instance, cursor)
        assert len(requests) == 1 and _run_requests(failed_checks_sensor, instance, cursor)[0] == []
        out = _execute(requests[0], resources, instance)
    assert out["decision"] == "alert_only" and "forbids automatic rollback" in out["why"]
    with open_warehouse(home.warehouse_path) as con:
        assert get_state(con, "support-triage").live == "v1.4.0"  # nothing changed
        [alert] = list_alerts(con, workflow="support-triage")
        performed = con.execute("SELECT performed FROM rollbacks WHERE workflow = 'support-triage'").fetchall()
    assert "recommended" in alert.alert.title and alert.alert.release == "v1.4.0"
    assert performed == [(False,)]


def test_drill_check_fails_on_a_stale_drill_and_passes_after_a_drill(home, resources):
    old = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=40)
    with open_warehouse(home.warehouse_path) as con:
        for w in ("doc-qa", "support-triage"):
            con.execute("INSERT INTO drills VALUES (?, ?, ?, ?, true, 12.0, ?, NULL)",
                        [f"drill-old-{w}", w, old, old, json.dumps({"checks": []})])
    defs = dg.Definitions(assets=[rollback_drill, rollback_runbook], asset_checks=[drill_fresh], resources=resources)
    with dg.instance_for_test() as instance:
        job = dg.define_asset_job("only_check", selection=dg.AssetSelection.checks(drill_fresh))
        stale = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def("only_check").execute_in_process(instance=instance)
        [ev] = stale.get_asset_check_evaluations()
        assert not ev.passed and "40 days ago" in ev.description
        after = dg.materialize([rollback_drill, rollback_runbook, drill_fresh], resources=resources, instance=instance)
        [ev] = after.get_asset_check_evaluations()
        assert ev.passed, ev.description


def test_failed_gate_check_fires_once_and_a_blocked_release_that_never_served_only_alerts(home, resources):

    with dg.instance_for_test() as instance:
        _, cursor = _run_requests(failed_checks_sensor, instance, None)
        instance.add_dynamic_partitions(releases_partitions.name, ["support-triage--v1.5.0"])
        fake = _fake("release_gate", "must_pass", partitioned=True, metadata={"decision": "BLOCK"})
        dg.materialize([fake], partition_key="support-triage--v1.5.0", instance=instance, raise_on_error=False)
        requests, cursor = _run_requests(failed_checks_sensor, instance, cursor)
        assert len(requests) == 1 and _run_requests(failed_checks_sensor, instance, cursor)[0] == []
        out = _execute(requests[0], resources, instance)
    assert out["decision"] == "not_serving" and out["incident_id"] is None
    with open_warehouse(home.warehouse_path) as con:
        assert get_state(con, "support-triage").live == "v1.4.0"
        [alert] = list_alerts(con, workflow="support-triage")
    assert alert.alert.release == "v1.5.0" and "does not serve traffic" in alert.alert.title
