"""Releases and their evals: suite versions, release manifests and eval runs per release."""

import time
from pathlib import Path

import dagster as dg

from relops_pipeline.defs.evals.metadata import eval_run_result, eval_suites_result, release_manifest_result
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
    from relops_pipeline.lib.evals.store import InvalidSuitesError, record_suites, suite_files

    try:
        files = suite_files(suites_root(home))
    except InvalidSuitesError as exc:
        raise dg.Failure(description=str(exc)) from None
    with warehouse.get_connection() as con:
        recorded = record_suites(con, files)
    context.log.info(f"{len(recorded.versions)} suite versions ({recorded.new} new)")
    return eval_suites_result(recorded)


@dg.asset(partitions_def=releases_partitions, group_name="releases", pool=WAREHOUSE_POOL, kinds={"duckdb"})
def release_manifest(context: dg.AssetExecutionContext, home: RelopsHomeResource, warehouse: WarehouseResource):
    """The release candidate as registered: prompts, model, parameters, tools, retrieval and
    code revision, content-hashed, with what changed against the previous release.

    The business meaning: exactly what is being shipped. Immutable once registered; a release
    imported from eval results without a manifest is recorded with "what changed: unknown".
    """
    from relops_pipeline.lib.evals.model import split_release_key
    from relops_pipeline.lib.evals.store import ImmutableError, MissingManifestError, register_release_manifest

    key = context.partition_key
    workflow, version = split_release_key(key)
    with warehouse.get_connection() as con:
        try:
            registered = register_release_manifest(
                con, key, releases_root(home) / workflow / f"{version}.yaml",
                registered_by=context.run.tags.get(REGISTERED_BY_TAG), imported=bool(context.run.tags.get(IMPORT_FILE_TAG)),
            )
        except (ImmutableError, MissingManifestError) as exc:
            raise dg.Failure(description=str(exc)) from None
    return release_manifest_result(registered)


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
        f"eval run {summary.eval_run_id}: {summary.cases} cases, {summary.samples} samples, "
        f"{summary.errors} errors, valid={summary.valid} in {time.time() - started:.1f} s"
    )
    return eval_run_result(summary)


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
