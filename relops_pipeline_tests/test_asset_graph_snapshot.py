"""A snapshot of the asset graph the code location serves (relops_pipeline.definitions.defs):
for every asset its group, upstream keys, partitions, checks, automation condition and pool;
and the names of the jobs, sensors and schedules. A change to any of them shows up here as a
diff to review, and is accepted by rewriting the snapshot:

    RELOPS_UPDATE_SNAPSHOTS=1 .venv/bin/pytest relops_pipeline_tests/test_asset_graph_snapshot.py

The rendering is deterministic (everything sorted, no addresses or times), so the committed
file changes only when the definitions do.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"
UPDATE_ENV = "RELOPS_UPDATE_SNAPSHOTS"
UPDATE_HINT = f"{UPDATE_ENV}=1 .venv/bin/pytest relops_pipeline_tests/test_asset_graph_snapshot.py"


def _partitions(pd: dg.PartitionsDefinition | None) -> str | None:
    """A stable one-line description of a partitions definition."""
    if pd is None:
        return None
    if isinstance(pd, dg.TimeWindowPartitionsDefinition):
        start = pd.start.isoformat() if pd.start is not None else None
        end = pd.end.isoformat() if getattr(pd, "end", None) is not None else None
        parts = [f"start={start}", f"cron={pd.cron_schedule!r}", f"timezone={pd.timezone}", f"fmt={pd.fmt!r}"]
        if pd.end_offset:
            parts.append(f"end_offset={pd.end_offset}")
        if end is not None:
            parts.append(f"end={end}")
        return f"time_window({', '.join(parts)})"
    if isinstance(pd, dg.DynamicPartitionsDefinition):
        return f"dynamic(name={pd.name!r})"
    if isinstance(pd, dg.StaticPartitionsDefinition):
        return f"static(keys={sorted(pd.get_partition_keys())!r})"
    if isinstance(pd, dg.MultiPartitionsDefinition):
        dims = ", ".join(f"{d.name}={_partitions(d.partitions_def)}" for d in sorted(pd.partitions_defs, key=lambda d: d.name))
        return f"multi({dims})"
    return type(pd).__name__


def _automation(condition: dg.AutomationCondition | None) -> str | None:
    if condition is None:
        return None
    return condition.get_label() or type(condition).__name__


def render(defs: dg.Definitions) -> dict[str, Any]:
    """The snapshot's content: plain JSON values, every collection sorted."""
    from relops_pipeline.defs.beta import expected_beta_warnings

    with expected_beta_warnings():  # Dagster's own use of a beta sensor parameter, at repository build
        graph = defs.resolve_asset_graph()
        repo = defs.get_repository_def()
    checks: dict[dg.AssetKey, list[dict[str, Any]]] = {}
    for check_key in graph.asset_check_keys:
        node = graph.get(check_key)
        checks.setdefault(check_key.asset_key, []).append({"name": check_key.name, "blocking": bool(node.blocking)})
    assets = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "partitions": _partitions(node.partitions_def),
            "checks": sorted(checks.get(key, []), key=lambda c: c["name"]),
            "automation_condition": _automation(node.automation_condition),
            "pool": sorted(node.pools) if node.pools else None,
        }
    return {
        "assets": dict(sorted(assets.items())),
        # Dagster's implicit asset jobs (__ASSET_JOB...) are its own, not ours.
        "jobs": sorted(j.name for j in repo.get_all_jobs() if not j.name.startswith("__")),
        "sensors": sorted(s.name for s in repo.sensor_defs),
        "schedules": sorted(s.name for s in repo.schedule_defs),
    }


def dumps(snapshot: dict[str, Any]) -> str:
    return json.dumps(snapshot, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_asset_graph_matches_the_committed_snapshot():
    from relops_pipeline.definitions import defs

    current = dumps(render(defs))
    if os.environ.get(UPDATE_ENV) == "1":
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        if not SNAPSHOT.exists() or SNAPSHOT.read_text(encoding="utf-8") != current:
            SNAPSHOT.write_text(current, encoding="utf-8")
        return
    if not SNAPSHOT.exists():
        pytest.fail(f"no snapshot at {SNAPSHOT}; write it with:\n    {UPDATE_HINT}", pytrace=False)
    committed = SNAPSHOT.read_text(encoding="utf-8")
    if committed != current:
        diff = "".join(difflib.unified_diff(committed.splitlines(keepends=True), current.splitlines(keepends=True),
                                            fromfile=f"{SNAPSHOT.name} (committed)", tofile=f"{SNAPSHOT.name} (definitions now)"))
        pytest.fail(f"the asset graph differs from its snapshot:\n{diff}\n"
                    f"If the change is intended, rewrite the snapshot and commit it:\n    {UPDATE_HINT}", pytrace=False)


def test_rendering_is_deterministic_and_plain_json():
    from relops_pipeline.definitions import defs

    first = render(defs)
    assert dumps(first) == dumps(render(defs))
    assert json.loads(dumps(first)) == first
    assert first["assets"], "no assets rendered"
    for name, asset in first["assets"].items():
        assert set(asset["deps"]) <= set(first["assets"]), f"{name} depends on an asset outside the graph"


def test_partitions_are_described_by_kind_and_parameters():
    daily = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_offset=1)
    assert _partitions(daily) == ("time_window(start=2024-01-01T00:00:00+00:00, cron='0 0 * * *', timezone=UTC, "
                                  "fmt='%Y-%m-%d', end_offset=1)")
    assert _partitions(dg.DynamicPartitionsDefinition(name="releases")) == "dynamic(name='releases')"
    assert _partitions(dg.StaticPartitionsDefinition(["b", "a"])) == "static(keys=['a', 'b'])"
    assert _partitions(None) is None
