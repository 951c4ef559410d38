"""Shared plumbing of the `relops` command: exit codes, CliError, Dagster runs on the home's
instance (Dagster is imported lazily: it costs over a second to import), the warehouse and
the workflows' configuration.
"""

from __future__ import annotations

import os
from typing import Any

from relops_pipeline.lib.home import HOME_ENV, Home

EXIT_OK = 0
EXIT_BAD_INPUT = 3
EXIT_RUN_FAILED = 4
EXIT_NO_HOME = 5


class CliError(Exception):
    """A one-line failure the command reports, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.code = code


def _activate(home: Home) -> None:
    """Point this process at the home: its instance (DAGSTER_HOME) and its definitions."""
    home.ensure()
    os.environ[HOME_ENV] = str(home.root)
    os.environ["DAGSTER_HOME"] = str(home.dagster_home)


def dagster_instance(home: Home):
    """The home's Dagster instance (this process is pointed at the home first)."""
    import fcntl

    _activate(home)
    from dagster import DagsterInstance

    # Two processes creating a new instance's SQLite storage at once race in its schema
    # migrations; the first one creates it under a lock, the others then open it.
    with open(home.dagster_home / ".instance.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return DagsterInstance.get()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def dagster_defs():
    """The project's Dagster Definitions."""
    from relops_pipeline.definitions import defs

    return defs


def run_job(home: Home, job_name: str, *, run_config: dict | None = None, tags: dict | None = None):
    """Execute a job in this process, recorded on the home's Dagster instance."""
    instance = dagster_instance(home)
    from relops_pipeline.defs.beta import expected_beta_warnings

    with expected_beta_warnings():  # Dagster warns on its own use of a beta parameter here
        job = dagster_defs().resolve_job_def(job_name)
    # The run's own log goes to the instance (the UI shows it); the terminal gets the summary
    # (a BLOCKed gate fails its run by design: no stack trace on the terminal for that).
    # RELOPS_LOG_LEVEL=INFO shows the run's log here too.
    quiet = {"loggers": {"console": {"config": {"log_level": os.environ.get("RELOPS_LOG_LEVEL", "CRITICAL")}}}}
    return job.execute_in_process(
        run_config={**quiet, **(run_config or {})}, instance=instance, tags={"relops/trigger": "cli", **(tags or {})}, raise_on_error=False
    )


def run_failure(result) -> str:
    """The innermost error message of a failed run: the user-facing cause, not Dagster's wrapper."""
    for event in result.all_events:
        if event.is_failure and event.event_specific_data is not None:
            err = getattr(event.event_specific_data, "error", None)
            while err is not None and getattr(err, "cause", None) is not None:
                err = err.cause
            if err is not None:
                import re

                line = err.message.strip().splitlines()[-1]
                return re.sub(r"^relops_pipeline\.[\w.]+\.(\w+(Error|Refused)): ", "", line)
    return "the run failed (see the Dagster UI)"


def read_warehouse(home: Home):
    """Open the home's warehouse; no warehouse yet is a CliError (exit 5)."""
    from relops_pipeline.lib.warehouse import open_warehouse

    if not home.warehouse_path.exists():
        raise CliError(f"no warehouse at {home.warehouse_path}: ingest traces first (relops ingest PATH)", EXIT_NO_HOME)
    # Read-write open: it migrates an older warehouse, and read-only opens conflict the same way.
    return open_warehouse(home.warehouse_path)


def default_actor() -> str:
    """Who runs the command when --by names nobody: $USER."""
    return os.environ.get("USER") or "unknown"


def get_workflow(home: Home, name: str):
    """The workflow's configuration, or a one-line error."""
    from relops_pipeline.lib.workflows import WorkflowError, load_workflow

    try:
        return load_workflow(home.workflows_dir, name)
    except WorkflowError as exc:
        raise CliError(str(exc)) from None


def get_workflow_release(home: Home, workflow: str, version: str):
    """The workflow's configuration and the release key, or a one-line error."""
    from relops_pipeline.lib.evals.model import release_key

    wf = get_workflow(home, workflow)
    try:
        return wf, release_key(wf.name, version)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def add_release_partition(home: Home, key: str) -> None:
    """Add the release's dynamic partition (once)."""
    from relops_pipeline.defs.evals.partitions import releases_partitions

    instance = dagster_instance(home)
    if not instance.has_dynamic_partition(releases_partitions.name, key):
        instance.add_dynamic_partitions(releases_partitions.name, [key])


def release_partitions(home: Home, workflow: str) -> list[str]:
    """The workflow's registered release keys (its dynamic partitions), sorted."""
    from relops_pipeline.defs.evals.partitions import releases_partitions

    instance = dagster_instance(home)
    return sorted(k for k in instance.get_dynamic_partitions(releases_partitions.name) if k.startswith(f"{workflow}--"))


def run_partition(home: Home, job: str, key: str, tags: dict) -> Any:
    """Run a job on one release partition; a failed run is a CliError."""
    result = run_job(home, job, tags={"dagster/partition": key, **tags})
    if not result.success:
        raise CliError(f"{job} run {result.run_id} for {key} failed: {run_failure(result)}", EXIT_RUN_FAILED)
    return result


def plain_table(header: list[str], rows: list[list]) -> str:
    """Rows as left-aligned text columns under the header."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() for r in cells)
