"""Eval records in the warehouse: releases, suite versions and eval runs.

Results of each release on each suite version are kept side by side, never overwritten: an
eval run is identified by its own id, and the current run of a release on a suite version is
the latest valid one.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from relops_pipeline.lib.evals.model import EvalRunData, Manifest, SampleRequest, Suite, release_key
from relops_pipeline.lib.timeutil import utc_naive
from relops_pipeline.lib.warehouse import fetch_one


class ImmutableError(ValueError):
    """A registered manifest or a used suite version was changed in place."""


class MissingManifestError(ValueError):
    """A release to record has no manifest file and was neither registered nor imported before."""


class InvalidSuitesError(ValueError):
    """Suite files that do not validate; `problems` lists each one as file:case:field: message."""

    def __init__(self, problems: list[str]):
        super().__init__("invalid suite files:\n" + "\n".join(problems[:50]))
        self.problems = problems


@dataclasses.dataclass(frozen=True)
class SuiteVersionRecord:
    """One suite version as recorded: 'new' or 'unchanged'."""

    workflow: str
    version: str
    cases: int
    must_pass: int
    content_hash: str
    status: str


@dataclasses.dataclass(frozen=True)
class SuitesRecorded:
    """Every suite version found under the suites folder, recorded."""

    versions: tuple[SuiteVersionRecord, ...]

    @property
    def new(self) -> int:
        return sum(v.status == "new" for v in self.versions)


@dataclasses.dataclass(frozen=True)
class Release:
    """A registered release as the warehouse keeps it (`manifest` and `diff` decoded)."""

    release_key: str
    workflow: str
    version: str
    manifest_known: bool
    manifest: dict[str, Any] | None
    manifest_hash: str | None
    source_file: str | None
    baseline_version: str | None
    diff: dict[str, Any] | None
    registered_by: str | None
    registered_at: datetime


@dataclasses.dataclass(frozen=True)
class ReleaseRegistration:
    """A release recorded: 'new', 'unchanged' or 'upgraded', and the release as now registered."""

    status: str
    release: Release


@dataclasses.dataclass(frozen=True)
class MetricSummary:
    mean: float
    pass_rate: float
    n: int


@dataclasses.dataclass(frozen=True)
class ErrorCause:
    """One error message shared by some of a run's errored samples (first line, spaces
    collapsed): how many samples of the run gave it."""

    cause: str
    count: int
    samples: int

    def text(self) -> str:
        return f"{self.count} of {self.samples} samples: {self.cause}"


MAX_CAUSE_CHARS = 200
TOP_CAUSES = 3


def _cause(error: str) -> str:
    first = " ".join(str(error).strip().splitlines()[0].split()) if str(error).strip() else "(empty error)"
    return first if len(first) <= MAX_CAUSE_CHARS else first[: MAX_CAUSE_CHARS - 1] + "\u2026"


def summarize_errors(counts: list[tuple[str, int]], samples: int, top: int = TOP_CAUSES) -> list[ErrorCause]:
    """(error message, count) pairs to the `top` most frequent causes, messages that differ
    only after their first line or in spacing counted as one."""
    merged: dict[str, int] = {}
    for error, n in counts:
        if error is None or not str(error).strip():
            continue
        c = _cause(error)
        merged[c] = merged.get(c, 0) + int(n)
    ranked = sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))
    return [ErrorCause(c, n, samples) for c, n in ranked[:top]]


def error_causes_text(causes: list[ErrorCause], errors: int, samples: int) -> str:
    """ "118 of 120 samples: ConnectError: ..." per cause, "; "-joined, and how many errored
    samples are left out; "" when there are none."""
    if not causes:
        return ""
    shown = sum(c.count for c in causes)
    rest = errors - shown
    return "; ".join(c.text() for c in causes) + (
        f"; and {rest} more errored sample{'s' if rest != 1 else ''} with other causes" if rest > 0 else ""
    )


def error_causes(con: duckdb.DuckDBPyConnection, run_id: str, samples: int, top: int = TOP_CAUSES) -> list[ErrorCause]:
    """The `top` most frequent error causes of an eval run's samples."""
    rows = con.execute(
        "SELECT error, count(*) FROM eval_samples WHERE eval_run_id = ? AND error IS NOT NULL AND error <> '' GROUP BY error",
        [run_id],
    ).fetchall()
    return summarize_errors([(e, int(n)) for e, n in rows], samples, top)


@dataclasses.dataclass(frozen=True)
class EvalRunSummary:
    """One eval run's totals, per-metric means and pass rates, must-pass failures, latency and cost."""

    eval_run_id: str
    release_key: str
    workflow: str
    version: str
    suite_version: str
    source: str
    samples_per_case: int | None
    cases: int
    samples: int
    errors: int
    error_rate: float | None
    valid: bool
    invalid_reason: str | None
    dagster_run_id: str | None
    metrics: dict[str, MetricSummary]
    must_pass_cases: int
    must_pass_failing_cases: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    cost_usd: float | None
    # the most frequent error messages of the run's samples (text from an endpoint: escape it)
    error_causes: list[ErrorCause] = dataclasses.field(default_factory=list)

    def errors_text(self) -> str:
        """The top error causes with their counts, or "" when no sample errored."""
        return error_causes_text(self.error_causes, self.errors, self.samples)


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


def suite_files(root: Path) -> list[Path]:
    """The suite files under the suites folder (<root>/<suite>/<version>.yaml), validated;
    InvalidSuitesError lists every problem."""
    from relops_pipeline.lib.evals.suites import validate_path

    files = sorted(root.glob("*/*.yaml")) if root.is_dir() else []
    problems = [str(p) for f in files for p in validate_path(f)]
    if problems:
        raise InvalidSuitesError(problems)
    return files


def record_suites(con: duckdb.DuckDBPyConnection, files: list[Path]) -> SuitesRecorded:
    """Record every suite file's version (ImmutableError when a recorded version changed)."""
    from relops_pipeline.lib.evals.suites import load_suite

    out = []
    for f in files:
        suite = load_suite(f)
        status = record_suite_version(con, suite, str(f))
        out.append(
            SuiteVersionRecord(
                suite.workflow, suite.version, len(suite.cases), sum(c.must_pass for c in suite.cases), suite.content_hash, status
            )
        )
    return SuitesRecorded(tuple(out))


# ---------------------------------------------------------------------------------------------
# Releases


def get_release(con: duckdb.DuckDBPyConnection, key: str) -> Release | None:
    row = con.execute(
        "SELECT release_key, workflow, version, manifest_known, manifest, manifest_hash, source_file, "
        "baseline_version, diff, registered_by, registered_at FROM releases WHERE release_key = ?",
        [key],
    ).fetchone()
    if row is None:
        return None
    key_, workflow, version, known, manifest, manifest_hash, source_file, baseline, diff, by, at = row
    return Release(
        release_key=key_,
        workflow=workflow,
        version=version,
        manifest_known=bool(known),
        manifest=json.loads(manifest) if manifest else None,
        manifest_hash=manifest_hash,
        source_file=source_file,
        baseline_version=baseline,
        diff=json.loads(diff) if diff else None,
        registered_by=by,
        registered_at=at,
    )


def previous_release(con: duckdb.DuckDBPyConnection, workflow: str, before_key: str) -> Release | None:
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
        if existing.manifest_known and manifest is not None and existing.manifest_hash != h:
            raise ImmutableError(
                f"release {key} is registered with a different manifest (hash {(existing.manifest_hash or '')[:12]}): "
                f"a registered manifest is immutable; give the change a new version"
            )
        if existing.manifest_known or manifest is None:
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


def register_release_manifest(
    con: duckdb.DuckDBPyConnection,
    key: str,
    manifest_path: Path,
    *,
    registered_by: str | None,
    imported: bool = False,
) -> ReleaseRegistration:
    """Record the release from its manifest file, with what changed against the previous
    release. Without a manifest file the release must already be registered or come with an
    imported eval run (`imported`), else MissingManifestError; ImmutableError when a registered
    manifest changed."""
    from relops_pipeline.lib.evals.diff import diff_manifests
    from relops_pipeline.lib.evals.manifests import load_manifest, manifest_from_content
    from relops_pipeline.lib.evals.model import split_release_key

    workflow, version = split_release_key(key)
    manifest = load_manifest(manifest_path) if manifest_path.exists() else None
    if manifest is None and get_release(con, key) is None and not imported:
        raise MissingManifestError(f"no manifest for release {key}: expected {manifest_path}")
    base = previous_release(con, workflow, key)
    diff = None
    if manifest is not None:
        base_manifest = manifest_from_content(base.manifest) if base and base.manifest else None
        diff = diff_manifests(base_manifest, manifest)
    status = record_release(
        con,
        manifest,
        workflow=workflow,
        version=version,
        source_file=str(manifest_path) if manifest else None,
        diff=diff,
        baseline_version=base.version if base else None,
        registered_by=registered_by,
    )
    release = get_release(con, key)
    assert release is not None  # recorded just above
    return ReleaseRegistration(status, release)


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
) -> EvalRunSummary:
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
                run_id,
                release_key(data.workflow, data.version),
                data.workflow,
                data.version,
                data.suite_version,
                suite_hash,
                data.source,
                samples_per_case,
                cases,
                n,
                errors,
                error_rate,
                invalid_reason is None,
                invalid_reason,
                json.dumps(data.notes),
                dagster_run_id,
                started_at or utc_naive(),
                utc_naive(),
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


def eval_run_of_dagster_run(con: duckdb.DuckDBPyConnection, dagster_run_id: str) -> EvalRunSummary | None:
    """The eval run a Dagster run recorded (its latest), or None."""
    row = con.execute(
        "SELECT eval_run_id FROM eval_runs WHERE dagster_run_id = ? ORDER BY finished_at DESC LIMIT 1", [dagster_run_id]
    ).fetchone()
    return eval_run_summary(con, row[0]) if row else None


def eval_run_summary(con: duckdb.DuckDBPyConnection, run_id: str) -> EvalRunSummary:
    row = fetch_one(
        con.execute(
            "SELECT eval_run_id, release_key, workflow, version, suite_version, source, samples_per_case, cases, samples, "
            "errors, error_rate, valid, invalid_reason, dagster_run_id FROM eval_runs WHERE eval_run_id = ?",
            [run_id],
        )
    )
    cols = (
        "eval_run_id",
        "release_key",
        "workflow",
        "version",
        "suite_version",
        "source",
        "samples_per_case",
        "cases",
        "samples",
        "errors",
        "error_rate",
        "valid",
        "invalid_reason",
        "dagster_run_id",
    )
    out: dict[str, Any] = dict(zip(cols, row, strict=True))
    out["metrics"] = {
        m: MetricSummary(mean, pr, n)
        for m, mean, pr, n in con.execute(
            "SELECT metric, avg(score), avg(passed::INT), count(*) FROM eval_scores WHERE eval_run_id = ? GROUP BY metric ORDER BY metric",
            [run_id],
        ).fetchall()
    }
    mp = fetch_one(
        con.execute(
            "SELECT count(DISTINCT case_id) FILTER (WHERE must_pass), "
            "count(DISTINCT s.case_id) FILTER (WHERE must_pass AND NOT passed) "
            "FROM eval_samples e LEFT JOIN eval_scores s USING (eval_run_id, case_id, sample) WHERE e.eval_run_id = ?",
            [run_id],
        )
    )
    out["must_pass_cases"], out["must_pass_failing_cases"] = int(mp[0] or 0), int(mp[1] or 0)
    lat = fetch_one(
        con.execute(
            "SELECT quantile_cont(latency_ms, 0.5), quantile_cont(latency_ms, 0.95), sum(cost_usd) FROM eval_samples WHERE eval_run_id = ?",
            [run_id],
        )
    )
    out["latency_p50_ms"], out["latency_p95_ms"], out["cost_usd"] = lat
    out["error_causes"] = error_causes(con, run_id, int(out["samples"] or 0)) if out["errors"] else []
    return EvalRunSummary(**out)
