"""End to end through the real UI's GraphQL API: a `dagster dev` (webserver and daemon on
127.0.0.1, started and stopped here) over a home where two doc-qa releases were registered,
evaluated and gated by the `relops` command. Over plain HTTP the test reads the lineage of the
release gate and its decision, then launches a partition backfill of the eval runs, which the
daemon executes; the warehouse gets one new eval run per release.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from relops_pipeline.cli import main
from relops_pipeline.lib.home import Home
from relops_pipeline.lib.warehouse import connect
from relops_pipeline_tests.dagster_dev import DagsterDev

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # a real dagster dev and a backfill

WORKFLOW = "doc-qa"
BASELINE, CANDIDATE = "v2.0.0", "v2.1.0"
KEYS = [f"{WORKFLOW}--{BASELINE}", f"{WORKFLOW}--{CANDIDATE}"]

LINEAGE = """
query Lineage($key: AssetKeyInput!, $partitions: [String!]) {
  assetNodeOrError(assetKey: $key) {
    __typename
    ... on AssetNode {
      partitionKeys
      dependencyKeys { path }
      dependedByKeys { path }
      dependencies { asset { assetKey { path } dependencyKeys { path } } }
      latestMaterializationByPartition(partitions: $partitions) {
        partition runId
        metadataEntries {
          label
          ... on TextMetadataEntry { text }
          ... on IntMetadataEntry { intValue }
          ... on FloatMetadataEntry { floatValue }
          ... on PathMetadataEntry { path }
          ... on UrlMetadataEntry { url }
        }
      }
    }
  }
}
"""

LAUNCH_BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on PartitionSetNotFoundError { message }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
  }
}
"""

BACKFILL_STATUS = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      status isAssetBackfill numPartitions
      runs { id status tags { key value } }
    }
    ... on PythonError { message }
  }
}
"""

DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def _cli_json(capsys, home: Home, *argv: str) -> dict:
    code = main(["--home", str(home.root), *argv, "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def _paths(keys: list[dict]) -> set[str]:
    return {"/".join(k["path"]) for k in keys}


def _metadata(materialization: dict) -> dict:
    return {e["label"]: next((v for k, v in e.items() if k != "label"), None) for e in materialization["metadataEntries"]}


def _eval_runs(home: Home) -> list[tuple]:
    con = connect(home.warehouse_path, read_only=True)
    try:
        return con.execute("SELECT eval_run_id, release_key, dagster_run_id, valid FROM eval_runs ORDER BY started_at").fetchall()
    finally:
        con.close()


@pytest.mark.timeout(300)
def test_graphql_reads_the_gate_lineage_and_a_backfill_of_eval_runs_completes(tmp_path, monkeypatch, capsys):
    started = time.monotonic()
    home = Home.resolve(tmp_path / "home")
    monkeypatch.setenv("RELOPS_HOME", str(home.root))
    monkeypatch.setenv("DAGSTER_HOME", str(home.dagster_home))
    home.init(example=True)
    registered = {
        v: _cli_json(capsys, home, "release", "register", str(home.root / "releases" / WORKFLOW / f"{v}.yaml"), "--by", "li.wei")
        for v in (BASELINE, CANDIDATE)
    }
    gate = _cli_json(capsys, home, "gate", WORKFLOW, CANDIDATE, "--baseline", BASELINE)
    assert gate["decision"] == "SHIP"
    # The releases sensor registers every manifest it has not seen: keep only the two that are
    # registered (eval_run reads its release's manifest, so the folder itself must stay).
    for manifest in (home.root / "releases").glob("*/*.yaml"):
        if manifest.parent.name != WORKFLOW or manifest.stem not in (BASELINE, CANDIDATE):
            manifest.unlink()
    before = _eval_runs(home)
    assert sorted(r[1] for r in before) == KEYS

    with DagsterDev(home.root, tmp_path / "dagster-dev.log") as dev:
        # (a) The lineage of the release decision, as the UI's asset graph shows it.
        gate_node = dev.graphql(LINEAGE, {"key": {"path": ["release_gate"]}, "partitions": [KEYS[1]]})["assetNodeOrError"]
        assert gate_node["__typename"] == "AssetNode", gate_node
        assert sorted(gate_node["partitionKeys"]) == KEYS
        assert _paths(gate_node["dependencyKeys"]) == {"eval_run", "gate_thresholds", "release_manifest", "eval_suites"}
        assert {"release_approval", "canary_analysis"} <= _paths(gate_node["dependedByKeys"])
        upstream = {"/".join(d["asset"]["assetKey"]["path"]): _paths(d["asset"]["dependencyKeys"]) for d in gate_node["dependencies"]}
        assert upstream["eval_run"] == {"release_manifest", "eval_suites"}
        assert upstream["gate_thresholds"] == set()
        rollout = dev.graphql(LINEAGE, {"key": {"path": ["rollout_plan"]}, "partitions": []})["assetNodeOrError"]
        assert {"release_approval", "gate_thresholds"} <= _paths(rollout["dependencyKeys"])

        (latest,) = gate_node["latestMaterializationByPartition"]
        meta = _metadata(latest)
        assert latest["partition"] == KEYS[1] and latest["runId"] == gate["run_id"]
        assert meta["decision"] == "SHIP" and meta["baseline_version"] == BASELINE
        assert meta["gate_id"] == gate["gate_id"]
        assert meta["candidate_eval_run_id"] == registered[CANDIDATE]["eval"]["eval_run_id"]
        assert meta["baseline_eval_run_id"] == registered[BASELINE]["eval"]["eval_run_id"]
        html = Path(gate["reports"]["html"]).relative_to(home.reports_dir).as_posix()
        assert meta["report_html"] == f"http://127.0.0.1:4318/reports/{html}"

        # (b) A backfill of the eval results over the release partitions, run by the daemon.
        launched = dev.graphql(LAUNCH_BACKFILL, {"params": {
            "assetSelection": [{"path": ["eval_run"]}], "partitionNames": KEYS, "title": "re-run doc-qa evals",
            "tags": [{"key": "relops/trigger", "value": "e2e-graphql"}],
        }})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill_id = launched["backfillId"]

        def finished():
            b = dev.graphql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
            assert b["__typename"] == "PartitionBackfill", b
            return b if b["status"] in DONE else None

        backfill = dev.wait(finished, 200, f"backfill {backfill_id} to complete", interval_s=2)
        eval_node = dev.graphql(LINEAGE, {"key": {"path": ["eval_run"]}, "partitions": KEYS})["assetNodeOrError"]

    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), backfill
    assert backfill["isAssetBackfill"] and backfill["numPartitions"] == 2
    runs = {next(t["value"] for t in r["tags"] if t["key"] == "dagster/partition"): r for r in backfill["runs"]}
    assert sorted(runs) == KEYS and {r["status"] for r in runs.values()} == {"SUCCESS"}
    assert all({"key": "dagster/backfill", "value": backfill_id} in r["tags"] for r in runs.values())

    # The UI now shows the backfill's materializations, and the warehouse one new run per release.
    by_partition = {m["partition"]: m for m in eval_node["latestMaterializationByPartition"]}
    assert {k: by_partition[k]["runId"] for k in KEYS} == {k: runs[k]["id"] for k in KEYS}
    after = _eval_runs(home)
    new = [r for r in after if r not in before]
    assert sorted((r[1], r[2]) for r in new) == sorted((k, runs[k]["id"]) for k in KEYS)
    assert all(r[3] for r in new)
    for k in KEYS:
        assert _metadata(by_partition[k])["eval_run_id"] == next(r[0] for r in new if r[1] == k)
    print(f"\ngraphql e2e: {time.monotonic() - started:.1f} s")
