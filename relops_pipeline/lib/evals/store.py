"""Eval records in the warehouse: releases, suite versions and eval runs.

Results of each release on each suite version are kept side by side, never overwritten: an
eval run is identified by its own id, and the current run of a release on a suite version is
the latest valid one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import duckdb

from relops_pipeline.lib.evals.model import EvalRunData, Manifest, SampleRequest, Suite, release_key
from relops_pipeline.lib.timeutil import utc_naive
from relops_pipeline.lib.warehouse import fetch_one


class ImmutableError(ValueError):
    """A registered manifest or a used suite version was changed in place."""


# ---------------------------------------------------------------------------------------------
# Suites


def record_suite_version(con: duckdb.DuckDBPyConnection, suite: Suite, source_file: str | None = None) -> str:
    """Record a suite version; 'new', 'unchanged', or ImmutableError when a recorded version's
    content changed (a version is immutable once recorded: make a new one with a changelog)."""
    row = con.execute(
        "SELECT content_hash FROM suite_versions WHERE workflow = ? AND version = ?", [suite.workflow, suite.version]
    ).fetchone()
    if row is not None:
        if row[0] != suite.content_hash:
            raise ImmutableError(
                f"suite {suite.workflow} {suite.version} changed after it was recorded (hash {row[0][:12]} -> "
                f"{suite.content_hash[:12]}): suite versions are immutable; save the change as a new version "
                f"with a changelog line"
            )
        return "unchanged"
    con.execute(
        "INSERT INTO suite_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            suite.workflow,
            suite.version,
            suite.content_hash,
            len(suite.cases),
            sum(1 for c in suite.cases if c.must_pass),
            json.dumps(suite.changelog),
            json.dumps([c.as_dict() for c in suite.cases]),
            source_file,
            utc_naive(),
        ],
    )
    return "new"


# ---------------------------------------------------------------------------------------------
# Releases


def get_release(con: duckdb.DuckDBPyConnection, key: str) -> dict | None:
    row = con.execute(
        "SELECT release_key, workflow, version, manifest_known, manifest, manifest_hash, source_file, "
        "baseline_version, diff, registered_by, registered_at FROM releases WHERE release_key = ?",
        [key],
    ).fetchone()
    if row is None:
        return None
    cols = ("release_key", "workflow", "version", "manifest_known", "manifest", "manifest_hash", "source_file",
            "baseline_version", "diff", "registered_by", "registered_at")
    out = dict(zip(cols, row, strict=False))
    for k in ("manifest", "diff"):
        out[k] = json.loads(out[k]) if out[k] else None
    return out


def previous_release(con: duckdb.DuckDBPyConnection, workflow: str, before_key: str) -> dict | None:
    """The release registered before this one with a known manifest (the default diff base)."""
    row = con.execute(
        "SELECT release_key FROM releases WHERE workflow = ? AND release_key <> ? AND manifest_known "
        "AND registered_at <= coalesce((SELECT registered_at FROM releases WHERE release_key = ?), now()::TIMESTAMP) "
        "ORDER BY registered_at DESC, release_key DESC LIMIT 1",
        [workflow, before_key, before_key],
    ).fetchone()
    return get_release(con, row[0]) if row else None


def record_release(
    con: duckdb.DuckDBPyConnection,
    manifest: Manifest | None,
    *,
    workflow: str,
    version: str,
    source_file: str | None,
    diff: dict | None,
    baseline_version: str | None,
    registered_by: str | None,
) -> str:
    """Record a release; 'new', 'unchanged', 'upgraded' (a manifest arrived for a release that
    was registered by an import without one), or ImmutableError when a manifest changed."""
    key = release_key(workflow, version)
    existing = get_release(con, key)
    h = manifest.content_hash if manifest else None
    if existing is not None:
        if existing["manifest_known"] and manifest is not None and existing["manifest_hash"] != h:
            raise ImmutableError(
                f"release {key} is registered with a different manifest (hash {existing['manifest_hash'][:12]}): "
                f"a registered manifest is immutable; give the change a new version"
            )
        if existing["manifest_known"] or manifest is None:
            return "unchanged"
        con.execute(
            "UPDATE releases SET manifest_known = true, manifest = ?, manifest_hash = ?, source_file = ?, "
            "baseline_version = ?, diff = ? WHERE release_key = ?",
            [json.dumps(manifest.content()), h, source_file, baseline_version, json.dumps(diff), key],
        )
        return "upgraded"
    con.execute(
        "INSERT INTO releases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            key,
            workflow,
            version,
            manifest is not None,
            json.dumps(manifest.content()) if manifest else None,
            h,
            source_file,
            baseline_version,
            json.dumps(diff) if diff is not None else None,
            registered_by,
            utc_naive(),
        ],
    )
    return "new"


# ---------------------------------------------------------------------------------------------
# Eval runs


def plan_requests(suite: Suite, samples: int, *, base_seed: int = 0) -> list[SampleRequest]:
    """Each case sampled k times; the seed depends on case and sample only, so reruns of the
    same release reproduce what a deterministic runner did."""
    import zlib

    return [
        SampleRequest(case=c, sample=k, seed=(zlib.crc32(c.id.encode()) + 7919 * k + base_seed) & 0x7FFFFFFF)
        for c in suite.cases
        for k in range(samples)
    ]


def execute_eval(
    manifest: Manifest,
    suite: Suite,
    *,
    samples: int,
    runner,
    scorers: list,
    progress: Callable[[int, int], None] | None = None,
    source: str,
) -> EvalRunData:
    """Run every case k times through the runner and score every sample."""
    from relops_pipeline.lib.evals.scorers import score_sample

    requests = plan_requests(suite, samples)
    results = runner.run(manifest, requests, progress=progress)
    data = EvalRunData(
        workflow=manifest.workflow,
        version=manifest.version,
        suite_version=suite.version,
        source=source,
        samples=list(results),
        must_pass={c.id: c.must_pass for c in suite.cases},
        case_ids=[c.id for c in suite.cases],
    )
    by_id = {c.id: c for c in suite.cases}
    for r in results:
        data.scores[(r.case_id, r.sample)] = list(score_sample(scorers, by_id[r.case_id], r))
    return data


def write_eval_run(
    con: duckdb.DuckDBPyConnection,
    data: EvalRunData,
    *,
    max_error_rate: float,
    samples_per_case: int | None,
    suite_hash: str | None,
    dagster_run_id: str | None,
    started_at: datetime | None = None,
) -> dict[str, Any]:
    """Store an eval run with its samples and scores in one transaction; return its summary."""
    import pyarrow as pa

    run_id = f"ev-{utc_naive():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:10]}"
    n = len(data.samples)
    errors = sum(1 for s in data.samples if s.error)
    error_rate = errors / n if n else None
    invalid_reason = None
    if n == 0:
        invalid_reason = "no samples"
    elif error_rate is not None and error_rate > max_error_rate:
        invalid_reason = f"error rate {error_rate:.1%} above the allowed {max_error_rate:.1%}"
    samples = pa.table(
        {
            "eval_run_id": [run_id] * n,
            "case_id": [s.case_id for s in data.samples],
            "sample": pa.array([s.sample for s in data.samples], pa.int32()),
            "must_pass": [bool(data.must_pass.get(s.case_id, False)) for s in data.samples],
            "output": [s.output for s in data.samples],
            "error": [s.error for s in data.samples],
            "latency_ms": pa.array([s.latency_ms for s in data.samples], pa.float64()),
            "input_tokens": pa.array([s.input_tokens for s in data.samples], pa.int64()),
            "output_tokens": pa.array([s.output_tokens for s in data.samples], pa.int64()),
            "cost_usd": pa.array([s.cost_usd for s in data.samples], pa.float64()),
            "attempts": pa.array([s.attempts for s in data.samples], pa.int32()),
        }
    )
    score_rows = [(cid, k, sc) for (cid, k), scs in data.scores.items() for sc in scs]
    scores = pa.table(
        {
            "eval_run_id": [run_id] * len(score_rows),
            "case_id": [c for c, _, _ in score_rows],
            "sample": pa.array([k for _, k, _ in score_rows], pa.int32()),
            "metric": [s.metric for _, _, s in score_rows],
            "score": pa.array([float(s.score) for _, _, s in score_rows], pa.float64()),
            "passed": [bool(s.passed) for _, _, s in score_rows],
            "detail": [s.detail for _, _, s in score_rows],
        }
    )
    cases = len(data.case_ids) or len({s.case_id for s in data.samples})
    con.complete()  # DuckDB 2.0 refuses register() while a fetchone() result is open
    con.register("_eval_samples", samples)
    con.register("_eval_scores", scores)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("INSERT INTO eval_samples SELECT * FROM _eval_samples")
        con.execute("INSERT INTO eval_scores SELECT * FROM _eval_scores")
        con.execute(
            "INSERT INTO eval_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                run_id, release_key(data.workflow, data.version), data.workflow, data.version, data.suite_version,
                suite_hash, data.source, samples_per_case, cases, n, errors, error_rate, invalid_reason is None,
                invalid_reason, json.dumps(data.notes), dagster_run_id, started_at or utc_naive(), utc_naive(),
            ],
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.unregister("_eval_samples")
        con.unregister("_eval_scores")
    return eval_run_summary(con, run_id)


def eval_run_summary(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, Any]:
    row = fetch_one(con.execute(
        "SELECT eval_run_id, release_key, workflow, version, suite_version, source, samples_per_case, cases, samples, "
        "errors, error_rate, valid, invalid_reason, dagster_run_id FROM eval_runs WHERE eval_run_id = ?",
        [run_id],
    ))
    cols = ("eval_run_id", "release_key", "workflow", "version", "suite_version", "source", "samples_per_case",
            "cases", "samples", "errors", "error_rate", "valid", "invalid_reason", "dagster_run_id")
    out = dict(zip(cols, row, strict=False))
    out["metrics"] = {
        m: {"mean": mean, "pass_rate": pr, "n": n}
        for m, mean, pr, n in con.execute(
            "SELECT metric, avg(score), avg(passed::INT), count(*) FROM eval_scores WHERE eval_run_id = ? "
            "GROUP BY metric ORDER BY metric",
            [run_id],
        ).fetchall()
    }
    mp = fetch_one(con.execute(
        "SELECT count(DISTINCT case_id) FILTER (WHERE must_pass), "
        "count(DISTINCT s.case_id) FILTER (WHERE must_pass AND NOT passed) "
        "FROM eval_samples e LEFT JOIN eval_scores s USING (eval_run_id, case_id, sample) WHERE e.eval_run_id = ?",
        [run_id],
    ))
    out["must_pass_cases"], out["must_pass_failing_cases"] = int(mp[0] or 0), int(mp[1] or 0)
    lat = fetch_one(con.execute(
        "SELECT quantile_cont(latency_ms, 0.5), quantile_cont(latency_ms, 0.95), sum(cost_usd) "
        "FROM eval_samples WHERE eval_run_id = ?",
        [run_id],
    ))
    out["latency_p50_ms"], out["latency_p95_ms"], out["cost_usd"] = lat
    return out
