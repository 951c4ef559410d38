"""Dagster wiring of releases and evals: the releases sensor and the per-release assets."""

from __future__ import annotations

import shutil

import dagster as dg
import pytest

from relops_pipeline.defs.evals.assets import eval_run, eval_suites, release_manifest
from relops_pipeline.defs.evals.partitions import releases_partitions
from relops_pipeline.defs.evals.sensors import releases_sensor
from relops_pipeline.defs.resources import RelopsHomeResource, WarehouseResource
from relops_pipeline.lib.home import Home
from relops_pipeline.lib.warehouse import open_warehouse


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = Home.resolve(tmp_path / "home")
    h.init()  # the example home: demo workflows, suites and manifests
    monkeypatch.setenv("RELOPS_HOME", str(h.root))
    return h


@pytest.fixture
def resources(home):
    return {"home": RelopsHomeResource(root=str(home.root)), "warehouse": WarehouseResource(database=str(home.warehouse_path))}


def test_releases_sensor_adds_partitions_and_requests_eval_runs_once(home):
    with dg.instance_for_test() as instance:
        result = releases_sensor(dg.build_sensor_context(instance=instance))
        keys = sorted(r.partition_key for r in result.run_requests)
        assert "support-triage--v1.3.0" in keys and "doc-qa--v2.0.0" in keys and len(keys) == 9
        added = result.dynamic_partitions_requests[0]
        assert sorted(added.partition_keys) == keys
        # The daemon applies the partition requests; here we apply them as it would.
        instance.add_dynamic_partitions(releases_partitions.name, keys)
        again = releases_sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor))
        assert isinstance(again, dg.SkipReason)
        # A new manifest file is picked up on the next tick, and only it.
        src = home.root / "releases" / "support-triage" / "v1.5.1.yaml"
        dst = src.with_name("v1.6.0.yaml")
        dst.write_text(src.read_text().replace("version: v1.5.1", "version: v1.6.0"))
        third = releases_sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor))
        assert [r.partition_key for r in third.run_requests] == ["support-triage--v1.6.0"]


def test_release_assets_materialize_for_a_partition(home, resources):
    for wf in ("doc-qa",):
        shutil.rmtree(home.root / "releases" / wf)
    key = "support-triage--v1.2.0"
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(releases_partitions.name, [key])
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
