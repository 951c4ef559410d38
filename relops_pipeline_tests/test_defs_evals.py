"""Dagster wiring of releases and evals: the releases sensor and the per-release assets."""

from __future__ import annotations

import shutil

import dagster as dg

from relops_pipeline.defs.evals.assets import eval_run, eval_suites, release_manifest
from relops_pipeline.defs.evals.partitions import RELEASES_PARTITIONS
from relops_pipeline.defs.evals.sensors import releases_sensor
from relops_pipeline.defs.resources import relops_resources
from relops_pipeline.lib.warehouse import open_warehouse


def test_releases_sensor_adds_partitions_and_requests_eval_runs_once(home):
    with dg.instance_for_test() as instance:
        result = _tick(releases_sensor, instance, home)
        keys = sorted(r.partition_key for r in result.run_requests)
        assert "support-triage--v1.3.0" in keys and "doc-qa--v2.0.0" in keys and len(keys) == 10
        added = result.dynamic_partitions_requests[0]
        assert sorted(added.partition_keys) == keys
        # The daemon applies the partition requests; here we apply them as it would.
        instance.add_dynamic_partitions(RELEASES_PARTITIONS, keys)
        again = _tick(releases_sensor, instance, home, result.cursor)
        assert isinstance(again, dg.SkipReason)
        # A new manifest file is picked up on the next tick, and only it.
        src = home.root / "releases" / "support-triage" / "v1.5.1.yaml"
        dst = src.with_name("v1.6.0.yaml")
        dst.write_text(src.read_text().replace("version: v1.5.1", "version: v1.6.0"))
        third = _tick(releases_sensor, instance, home, result.cursor)
        assert [r.partition_key for r in third.run_requests] == ["support-triage--v1.6.0"]


def test_release_assets_materialize_for_a_partition(home, resources):
    for wf in ("doc-qa",):
        shutil.rmtree(home.root / "releases" / wf)
    key = "support-triage--v1.2.0"
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(RELEASES_PARTITIONS, [key])
        assert dg.materialize([eval_suites], resources=resources, instance=instance).success
        result = dg.materialize(
            [release_manifest, eval_run], partition_key=key, resources=resources, instance=instance,
            tags={"relops/samples": "2"},
        )
        assert result.success
        meta = result.asset_materializations_for_node("eval_run")[0].metadata
        assert meta["cases"].value == 105 and meta["samples"].value == 210
        assert meta["valid"].value is True
    with open_warehouse(home.warehouse_path) as con:
        assert con.execute("SELECT count(*) FROM eval_samples").fetchone()[0] == 210
        assert con.execute("SELECT count(*) FROM suite_versions").fetchone()[0] == 2


def test_release_gate_records_decision_and_checks(home, resources):
    from relops_pipeline.defs.gates.assets import gate_thresholds, release_gate

    shutil.rmtree(home.root / "releases" / "doc-qa")
    key = "support-triage--v1.2.0"
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(RELEASES_PARTITIONS, [key])
        assets = [eval_suites, release_manifest, eval_run, gate_thresholds, release_gate]
        assert dg.materialize([eval_suites], resources=resources, instance=instance).success
        result = dg.materialize(assets[1:], partition_key=key, resources=resources, instance=instance,
                                tags={"relops/samples": "2"})
        assert result.success  # a REVIEW fails no blocking check
        meta = result.asset_materializations_for_node("release_gate")[0].metadata
        assert meta["decision"].value == "REVIEW" and meta["baseline_version"].value == "none"
        checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
        assert checks["must_pass"].passed and checks["no_regression"].passed
        assert not checks["enough_evidence"].passed  # no baseline: the WARN check says so
        assert checks["enough_evidence"].severity == dg.AssetCheckSeverity.WARN
    with open_warehouse(home.warehouse_path) as con:
        assert con.execute("SELECT decision FROM gate_decisions").fetchall() == [("REVIEW",)]
        assert con.execute("SELECT count(*) FROM events WHERE kind = 'gate_decision'").fetchone()[0] == 1


def _tick(sensor, instance, home, cursor=None):
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=relops_resources(home.root)) as context:
        return sensor(context)
