"""A release manager's view in the Dagster UI, read through Dagster's own GraphQL schema (in
this process, over the home's instance, as the webserver serves it): four releases gated by
`relops gate` — a REVIEW that is approved (after a refused attempt), a SHIP, a BLOCK that is
overridden and a BLOCK — then the approvals sensor ticks once as the daemon would. For each
release partition the test reads the decision at a glance (the partition's status: a BLOCK is a
failed partition, a SHIP or REVIEW a materialized one; the `gate_decision` check's status,
severity and description; the materialization's decision and tags) and compares it with what
`relops gate` said; the gate's checks name their release and suite version; the approval,
refusal and override sit on `release_approval` between `release_gate` and `rollout_plan`; every
gated release has a rollout plan; and every link in that metadata opens on a real `relops serve`
(HTTP 200 with the report file's bytes, or the release's page; 401 without the key)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import dagster as dg
import pytest
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.storage.defs_state.base import set_defs_state_storage
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext, WorkspaceRequestContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster_graphql.test.utils import execute_dagster_graphql

from relops_pipeline.defs.resources import relops_resources
from relops_pipeline_tests.conftest import run_cli as cli
from relops_pipeline_tests.test_cli_gate import manifest, suite_yaml
from relops_pipeline_tests.test_report_server import Served, _free_port

WORKFLOW = "support-triage"
SUITE = "v1"
KEY_ENV, KEY = "RELOPS_TEST_UI_KEY", "test-ui-decisions-key-0123"

DECISIONS = """
query Decisions($partitions: [String!]) {
  assetNodeOrError(assetKey: {path: ["release_gate"]}) {
    ... on AssetNode {
      dependedByKeys { path }
      assetPartitionStatuses { ... on DefaultPartitionStatuses { materializedPartitions failedPartitions } }
      latestMaterializationByPartition(partitions: $partitions) {
        partition
        tags { key value }
        metadataEntries { label ... on TextMetadataEntry { text } ... on UrlMetadataEntry { url } }
      }
      assetChecksOrError {
        ... on AssetChecks {
          checks {
            name
            partitionStatuses { ... on AssetCheckDefaultPartitionStatuses { succeededPartitions failedPartitions } }
          }
        }
      }
    }
  }
}
"""

CHECK_EXECUTIONS = """
query Executions($check: String!, $partition: String) {
  assetCheckExecutions(assetKey: {path: ["release_gate"]}, checkName: $check, partition: $partition, limit: 1) {
    partition
    evaluation {
      success severity description partition
      metadataEntries { label ... on TextMetadataEntry { text } ... on UrlMetadataEntry { url } }
    }
  }
}
"""

APPROVALS = """
query Approvals($partitions: [String!]) {
  assetNodeOrError(assetKey: {path: ["release_approval"]}) {
    ... on AssetNode {
      dependencyKeys { path }
      dependedByKeys { path }
      assetMaterializations(partitions: $partitions) {
        partition description
        metadataEntries { label ... on TextMetadataEntry { text } ... on UrlMetadataEntry { url } }
      }
      assetObservations(partitions: $partitions) { partition description }
    }
  }
}
"""

ROLLOUT_PLANS = """
query Plans($partitions: [String!]) {
  assetNodeOrError(assetKey: {path: ["rollout_plan"]}) {
    ... on AssetNode {
      latestMaterializationByPartition(partitions: $partitions) {
        partition
        metadataEntries { label ... on UrlMetadataEntry { url } }
      }
    }
  }
}
"""


@pytest.fixture
def home(make_cli_home, monkeypatch):
    """support-triage with a 40-case suite; `relops serve` will listen at serve.public_url with
    one API key, so the links written into metadata are the ones a browser opens."""
    import yaml

    h = make_cli_home(
        "name: support-triage\nowner: ana\ndelegates: [sam]\n"
        "runner: {type: python, callable: 'relops_pipeline_tests.support:fake_llm'}\n"
        "scorers: [{type: json}]\nevals: {samples: 3}\n",
        suite_yaml(40),
    )
    monkeypatch.setenv(KEY_ENV, KEY)
    doc = yaml.safe_load((h / "relops.yaml").read_text()) or {}
    doc["serve"] = {**(doc.get("serve") or {}), "public_url": f"http://127.0.0.1:{_free_port()}", "api_keys": [{"env": KEY_ENV}]}
    (h / "relops.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return h


@contextlib.contextmanager
def graphql(instance: dg.DagsterInstance) -> Iterator[WorkspaceRequestContext]:
    """The webserver's GraphQL context over the project's definitions, loaded in this process."""
    origin = InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name="relops_pipeline.definitions", attribute="defs"),
                                         location_name="relops")
    # Every DagsterInstance makes its defs-state storage the current one when created and never
    # resets it; after a sensor context's instance has gone, loading the definitions would read a
    # dead instance's storage (an error that depends on which tests ran before). Make it this one's.
    # Entered as the webserver enters it per request: dynamic partitions load from the instance.
    with set_defs_state_storage(instance.defs_state_storage), \
            WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as process, \
            process.create_request_context() as context:
        yield context


def query(context: WorkspaceRequestContext, text: str, **variables) -> dict:
    result = execute_dagster_graphql(context, text, variables)
    assert not result.errors, result.errors
    return result.data


def entries(node: dict) -> dict:
    return {e["label"]: e.get("text", e.get("url")) for e in node["metadataEntries"]}


def gate(capsys, home: Path, tmp_path: Path, version: str, **params) -> str:
    """Register and gate a release with `relops`: its decision."""
    f = tmp_path / f"{version}.yaml"
    f.write_text(manifest(version, **params))
    code, _, err = cli(capsys, home, "release", "register", str(f))
    assert code == 0, err
    _, out, _ = cli(capsys, home, "gate", WORKFLOW, version, "--json")
    return json.loads(out)["decision"]


def tick_approvals_sensor(instance: dg.DagsterInstance, home: Path, cursor: str | None) -> dg.SensorResult | dg.SkipReason:
    """One tick of the approvals sensor, its events stored as the daemon stores them."""
    from relops_pipeline.defs.gates.sensors import approvals_sensor

    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=relops_resources(home)) as context:
        result = approvals_sensor(context)
    if isinstance(result, dg.SensorResult):
        for event in result.asset_events or []:
            instance.report_runless_asset_event(event)
    return result


def test_each_release_decision_reads_at_a_glance_through_graphql(home, tmp_path, capsys):
    said = {"v1.0.0": gate(capsys, home, tmp_path, "v1.0.0")}
    code, _, _ = cli(capsys, home, "approve", WORKFLOW, "v1.0.0", "--by", "mallory", "--reason", "looks fine")
    assert code != 0  # refused: recorded in the audit log
    assert cli(capsys, home, "approve", WORKFLOW, "v1.0.0", "--by", "ana", "--reason", "first release, reviewed")[0] == 0
    said["v1.1.0"] = gate(capsys, home, tmp_path, "v1.1.0")
    said["v1.2.0"] = gate(capsys, home, tmp_path, "v1.2.0", break_must_pass=True)
    said["v1.3.0"] = gate(capsys, home, tmp_path, "v1.3.0", break_must_pass=True)  # before the override: vs v1.1.0
    assert cli(capsys, home, "approve", WORKFLOW, "v1.2.0", "--by", "sam", "--reason", "hotfix", "--override")[0] == 0
    assert said == {"v1.0.0": "REVIEW", "v1.1.0": "SHIP", "v1.2.0": "BLOCK", "v1.3.0": "BLOCK"}
    keys = {v: f"{WORKFLOW}--{v}" for v in said}

    import yaml

    base_url = yaml.safe_load((home / "relops.yaml").read_text())["serve"]["public_url"]
    urls: set[str] = set()

    def links(node: dict) -> dict:
        found = entries(node)
        urls.update(e["url"] for e in node["metadataEntries"] if "url" in e)
        return found

    instance = dg.DagsterInstance.get()
    first = tick_approvals_sensor(instance, home, None)
    assert isinstance(first, dg.SensorResult) and first.cursor
    assert isinstance(tick_approvals_sensor(instance, home, first.cursor), dg.SkipReason)  # nothing new: nothing twice

    # What each release's partition shows, with the status `relops gate` and approve imply.
    expected = {  # version: (status, passed, severity)
        "v1.0.0": ("REVIEW approved", True, "WARN"),
        "v1.1.0": ("SHIP", True, "WARN"),
        "v1.2.0": ("BLOCK overridden", False, "WARN"),
        "v1.3.0": ("BLOCK", False, "ERROR"),
    }
    with graphql(instance) as context:
        node = query(context, DECISIONS, partitions=list(keys.values()))["assetNodeOrError"]
        by_partition = {m["partition"]: m for m in node["latestMaterializationByPartition"] if m}
        checks = {c["name"]: c["partitionStatuses"] for c in node["assetChecksOrError"]["checks"]}
        partitions = node["assetPartitionStatuses"]
        for version, key in keys.items():
            status, passed, severity = expected[version]
            [execution] = query(context, CHECK_EXECUTIONS, check="gate_decision", partition=key)["assetCheckExecutions"]
            evaluation = execution["evaluation"]
            assert (execution["partition"], evaluation["partition"]) == (key, key)
            assert (links(evaluation)["status"], evaluation["success"], evaluation["severity"]) == (status, passed, severity)
            assert evaluation["description"].startswith(status) and f"{key} on suite {SUITE}" in evaluation["description"]
            assert key in (checks["gate_decision"]["succeededPartitions"] if passed else checks["gate_decision"]["failedPartitions"])

            # The partition view: a BLOCK is a failed (red) partition with no materialization, a
            # SHIP or a REVIEW a materialized (green) one carrying the decision and its reports.
            if said[version] == "BLOCK":
                assert key in partitions["failedPartitions"] and key not in partitions["materializedPartitions"]
                assert key not in by_partition
                meta = links(evaluation)  # the gate run's gate_decision check carries the reports
            else:
                assert key in partitions["materializedPartitions"] and key not in partitions["failedPartitions"]
                materialization = by_partition[key]
                meta = links(materialization)
                assert meta["decision"] == said[version]
                assert {"key": "relops/decision", "value": said[version]} in materialization["tags"]
            assert meta["report_html"].startswith(f"{base_url}/reports/") and meta["report_html"].endswith(".html")
            assert meta["release_page"] == f"{base_url}/releases/{WORKFLOW}/{version}"

            # "must_pass Failed" says which release, on which suite version.
            [must] = query(context, CHECK_EXECUTIONS, check="must_pass", partition=key)["assetCheckExecutions"]
            assert must["evaluation"]["partition"] == key and must["evaluation"]["success"] == (said[version] != "BLOCK")
            assert must["evaluation"]["description"].startswith(f"{key} on suite {SUITE}:")
            assert entries(must["evaluation"])["suite_version"] == SUITE
        assert sorted(checks["must_pass"]["failedPartitions"]) == [keys["v1.2.0"], keys["v1.3.0"]]

        # Approvals, refusals and overrides in the lineage: release_gate -> release_approval -> rollout_plan.
        approvals = query(context, APPROVALS, partitions=list(keys.values()))["assetNodeOrError"]
        assert {"release_gate"} == {"/".join(k["path"]) for k in approvals["dependencyKeys"]}
        assert "rollout_plan" in {"/".join(k["path"]) for k in approvals["dependedByKeys"]}
        made = {(m["partition"], links(m)["kind"], links(m)["by"]) for m in approvals["assetMaterializations"]}
        assert made == {(keys["v1.0.0"], "approval", "ana"), (keys["v1.2.0"], "override", "sam")}
        [refused] = approvals["assetObservations"]
        assert refused["partition"] == keys["v1.0.0"] and "refused by" in refused["description"]

        # Every gated release has its rollout plan, whatever its decision, linking to its page.
        plans = query(context, ROLLOUT_PLANS, partitions=list(keys.values()))["assetNodeOrError"]
        planned = {m["partition"]: links(m)["release_page"] for m in plans["latestMaterializationByPartition"] if m}
        assert planned == {key: f"{base_url}/releases/{WORKFLOW}/{v}" for v, key in keys.items()}

    # Every link the UI shows opens on relops serve: the report file itself, or the release's page.
    reports = {u for u in urls if "/reports/" in u}
    assert len(reports) == 2 * len(keys) and len(urls - reports) == len(keys)  # html + md per gate; a page per release
    server = Served(home, int(urlsplit(base_url).port or 0))
    try:
        for url in sorted(urls):
            assert url.startswith(base_url + "/")
            status, _, body = server.request(urlsplit(url).path, key=KEY)
            assert status == 200, (url, status, body[:300])
            path = unquote(urlsplit(url).path)
            if path.startswith("/reports/"):
                assert body == (server.home.reports_dir / path.removeprefix("/reports/")).read_bytes(), url
            else:
                version = path.rsplit("/", 1)[1]
                assert f"{WORKFLOW}--{version}".encode() in body or version.encode() in body, url
        assert server.request(urlsplit(sorted(reports)[0]).path, key=None)[0] == 401  # behind its authentication
    finally:
        server.close()
