"""Releases and their evals: suite versions, release manifests and eval runs per release."""

import time
from pathlib import Path

import dagster as dg

from relops_pipeline.defs.evals.partitions import (
    IMPORT_FILE_TAG,
    IMPORT_FORMAT_TAG,
    IMPORT_VARIANT_TAG,
    REGISTERED_BY_TAG,
    SAMPLES_TAG,
    SUITE_VERSION_TAG,
    releases_partitions,
)
from relops_pipeline.defs.resources import WAREHOUSE_POOL, RelopsHomeResource, WarehouseResource
from relops_pipeline.lib.markdown import md_table


def suites_root(home: RelopsHomeResource) -> Path:
    return home.home.root / "suites"


def releases_root(home: RelopsHomeResource) -> Path:
    return home.home.root / "releases"


@dg.asset(group_name="evals", pool=WAREHOUSE_POOL, kinds={"duckdb"})
def eval_suites(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource):
    """Every version of every workflow's eval suite, validated and recorded.

    The business meaning: the test sets releases are judged on. A version is immutable once
    recorded (content-hashed); a change is a new version with a changelog line, and eval runs
    name the version they ran.
    """
    from relops_pipeline.lib.evals.store import record_suite_version
    from relops_pipeline.lib.evals.suites import load_suite, validate_path

    root = suites_root(home)
    files = sorted(root.glob("*/*.yaml")) if root.is_dir() else []
    problems = [str(p) for f in files for p in validate_path(f)]
    if problems:
        raise dg.Failure(description="invalid suite files:\n" + "\n".join(problems[:50]))
    rows = []
    with warehouse.get_connection() as con:
        for f in files:
            suite = load_suite(f)
            status = record_suite_version(con, suite, str(f))
            rows.append([suite.workflow, suite.version, len(suite.cases), sum(c.must_pass for c in suite.cases),
                         suite.content_hash[:12], status])
    context.log.info(f"{len(rows)} suite versions ({sum(r[5] == 'new' for r in rows)} new)")
    return dg.MaterializeResult(
        metadata={
            "suite_versions": dg.MetadataValue.int(len(rows)),
            "versions": dg.MetadataValue.md(md_table(["workflow", "version", "cases", "must_pass", "hash", "status"], rows)),
        }
    )


@dg.asset(partitions_def=releases_partitions, group_name="releases", pool=WAREHOUSE_POOL, kinds={"duckdb"})
def release_manifest(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource):
    """The release candidate as registered: prompts, model, parameters, tools, retrieval and
    code revision, content-hashed, with what changed against the previous release.

    The business meaning: exactly what is being shipped. Immutable once registered; a release
    imported from eval results without a manifest is recorded with "what changed: unknown".
    """
    from relops_pipeline.lib.evals.diff import diff_manifests, diff_markdown
    from relops_pipeline.lib.evals.manifests import load_manifest, manifest_from_content
    from relops_pipeline.lib.evals.model import split_release_key
    from relops_pipeline.lib.evals.store import ImmutableError, get_release, previous_release, record_release

    key = context.partition_key
    workflow, version = split_release_key(key)
    path = releases_root(home) / workflow / f"{version}.yaml"
    registered_by = context.run.tags.get(REGISTERED_BY_TAG)
    with warehouse.get_connection() as con:
        manifest = load_manifest(path) if path.exists() else None
        if manifest is None and get_release(con, key) is None and not context.run.tags.get(IMPORT_FILE_TAG):
            raise dg.Failure(description=f"no manifest for release {key}: expected {path}")
        base = previous_release(con, workflow, key)
        diff = None
        if manifest is not None:
            base_manifest = manifest_from_content(base["manifest"]) if base and base["manifest"] else None
            diff = diff_manifests(base_manifest, manifest)
        try:
            status = record_release(
                con, manifest, workflow=workflow, version=version, source_file=str(path) if manifest else None,
                diff=diff, baseline_version=base["version"] if base else None, registered_by=registered_by,
            )
        except ImmutableError as exc:
            raise dg.Failure(description=str(exc)) from None
        release = get_release(con, key)
    known = bool(release["manifest_known"])
    diff = release["diff"]
    md = diff_markdown(diff) if diff else "_What changed is unknown: this release was registered without a manifest._"
    return dg.MaterializeResult(
        metadata={
            "workflow": workflow,
            "version": version,
            "manifest_known": known,
            "manifest_hash": release["manifest_hash"] or "unknown",
            "model": (release["manifest"] or {}).get("model", "unknown"),
            "compared_with": release["baseline_version"] or "none",
            "status": status,
            "what_changed": dg.MetadataValue.md(md),
        }
    )


@dg.asset(
    partitions_def=releases_partitions,
    deps=[release_manifest, eval_suites],
    group_name="evals",
    pool=WAREHOUSE_POOL,
    kinds={"duckdb"},
)
def eval_run(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource):
    """The release's eval suite run: every case sampled k times, every sample scored — or the
    results of an external harness (promptfoo, Inspect, relops JSONL) imported as such a run.

    The business meaning: the evidence a release gate weighs. Each run is kept, side by side
    with the release's runs on other suite versions; errors and timeouts are recorded per
    sample, and a run with too many errors is marked invalid rather than trusted.
    """
    from relops_pipeline.lib.evals.model import split_release_key
    from relops_pipeline.lib.evals.store import write_eval_run
    from relops_pipeline.lib.workflows import load_workflow

    key = context.partition_key
    workflow_name, version = split_release_key(key)
    tags = context.run.tags
    workflow = load_workflow(home.home.workflows_dir, workflow_name)
    started = time.time()
    import_file = tags.get(IMPORT_FILE_TAG)
    if import_file:
        data, suite_hash, samples = _imported(
            import_file, tags.get(IMPORT_FORMAT_TAG), tags.get(IMPORT_VARIANT_TAG), workflow_name, version
        )
    else:
        data, suite_hash, samples = _executed(context, home, warehouse, workflow, version)
    with warehouse.get_connection() as con:
        summary = write_eval_run(
            con, data, max_error_rate=workflow.max_error_rate, samples_per_case=samples, suite_hash=suite_hash,
            dagster_run_id=context.run.run_id,
        )
    context.log.info(
        f"eval run {summary['eval_run_id']}: {summary['cases']} cases, {summary['samples']} samples, "
        f"{summary['errors']} errors, valid={summary['valid']} in {time.time() - started:.1f} s"
    )
    metrics = summary["metrics"]
    return dg.MaterializeResult(
        metadata={
            "eval_run_id": summary["eval_run_id"],
            "suite_version": summary["suite_version"],
            "source": summary["source"],
            "cases": dg.MetadataValue.int(summary["cases"]),
            "samples": dg.MetadataValue.int(summary["samples"]),
            "errors": dg.MetadataValue.int(summary["errors"]),
            "error_rate": dg.MetadataValue.float(float(summary["error_rate"] or 0.0)),
            "valid": summary["valid"],
            "invalid_reason": summary["invalid_reason"] or "",
            "must_pass_failing_cases": dg.MetadataValue.int(summary["must_pass_failing_cases"]),
            **{f"pass_rate/{m}": dg.MetadataValue.float(float(v["pass_rate"])) for m, v in metrics.items()},
            "latency_p50_ms": dg.MetadataValue.float(float(summary["latency_p50_ms"] or 0.0)),
            "cost_usd": dg.MetadataValue.float(float(summary["cost_usd"] or 0.0)),
            "metrics": dg.MetadataValue.md(
                md_table(["metric", "mean", "pass rate", "n"], [[m, v["mean"], v["pass_rate"], v["n"]] for m, v in metrics.items()])
            ),
        }
    )


def _imported(path: str, fmt: str | None, variant: str | None, workflow: str, version: str):
    from relops_pipeline.lib.evals.imports import import_results

    data = import_results(Path(path), fmt, workflow=workflow, version=version, variant=variant)
    return data, None, None


def _executed(context, home: RelopsHomeResource, warehouse: WarehouseResource, workflow, version: str):
    from relops_pipeline.lib.evals.manifests import load_manifest
    from relops_pipeline.lib.evals.runners import build_runner
    from relops_pipeline.lib.evals.scorers import build_scorers
    from relops_pipeline.lib.evals.store import execute_eval
    from relops_pipeline.lib.evals.suites import list_suite_versions

    tags = context.run.tags
    path = releases_root(home) / workflow.name / f"{version}.yaml"
    if not path.exists():
        raise dg.Failure(description=f"release {workflow.name} {version} has no manifest ({path}): it can only get imported eval results")
    manifest = load_manifest(path)
    versions = list_suite_versions(suites_root(home), workflow.suite_name)
    if not versions:
        raise dg.Failure(description=f"workflow {workflow.name} has no eval suite under {suites_root(home) / workflow.suite_name}")
    wanted = tags.get(SUITE_VERSION_TAG)
    suite = versions[-1] if not wanted else next((s for s in versions if s.version == wanted), None)
    if suite is None:
        raise dg.Failure(description=f"no suite version {wanted!r} for {workflow.name}; have {[s.version for s in versions]}")
    from relops_pipeline.lib.evals.store import ImmutableError, record_suite_version

    with warehouse.get_connection() as con:  # a version is immutable once used
        try:
            record_suite_version(con, suite, str(suites_root(home) / workflow.suite_name / f"{suite.version}.yaml"))
        except ImmutableError as exc:
            raise dg.Failure(description=str(exc)) from None
    samples = int(tags.get(SAMPLES_TAG) or workflow.samples)
    runner = build_runner(_resolve_runner_config(workflow.runner, home.home.root, workflow.name, version), base_dir=home.home.root)
    scorers = build_scorers(workflow.scorers)
    from relops_pipeline.lib.progress import Throttle

    total = len(suite.cases) * samples
    last = [0.0]
    shown = Throttle()

    def progress(done: int, of: int) -> None:
        if time.time() - last[0] > 5 or done == of:
            last[0] = time.time()
            context.log.info(f"eval {workflow.name} {version} on suite {suite.version}: {done}/{of} samples")
        shown.maybe(f"eval {workflow.name} {version} on suite {suite.version}: {done}/{of} samples ...")

    context.log.info(f"running {len(suite.cases)} cases x {samples} samples = {total} with the {workflow.runner['type']} runner")
    data = execute_eval(manifest, suite, samples=samples, runner=runner, scorers=scorers, progress=progress,
                        source=f"runner:{workflow.runner['type']}")
    return data, suite.content_hash, samples


def _resolve_runner_config(config: dict, home_root: Path, workflow: str, version: str) -> dict:
    """Relative files in a runner config are relative to the home; {workflow}/{version} fill in."""
    out = dict(config)
    if "file" in out:
        f = str(out["file"]).replace("{workflow}", workflow).replace("{version}", version)
        out["file"] = str(f if Path(f).is_absolute() else home_root / f)
    return out


release_eval_job = dg.define_asset_job(
    "release_eval_job",
    selection=[release_manifest, eval_run],
    description="Record a release's manifest and run its eval suite (or import results).",
)
release_manifest_job = dg.define_asset_job(
    "release_manifest_job", selection=[release_manifest], description="Record a release's manifest and what changed."
)
eval_run_job = dg.define_asset_job(
    "eval_run_job", selection=[eval_run], description="Run a registered release's eval suite (or import results)."
)
suites_job = dg.define_asset_job("suites_job", selection=[eval_suites], description="Validate and record suite versions.")

