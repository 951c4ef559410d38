"""Shared test fixtures, the `slow` marking and the timeout scale.

- `make test-fast` runs `pytest -m "not slow"`: every test marked `e2e`, and every test in
  SLOW_MODULES, is also marked `slow` here (other slow tests carry the mark in their own file).
- Modules with the most slow tests run first (`_slow_modules_first`), which keeps `make test`'s
  workers busy to the end.
- $RELOPS_TEST_TIMEOUT_SCALE multiplies every subprocess and wait timeout in the tests
  (`scaled`, from procs.py) and pytest-timeout's limits (the ini `timeout` and every
  `@pytest.mark.timeout`): e.g. RELOPS_TEST_TIMEOUT_SCALE=3 on a loaded 2-core machine.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from relops_pipeline.lib import warehouse
from relops_pipeline.lib.home import Home
from relops_pipeline.lib.schema import create_stage_tables_sql
from relops_pipeline_tests.procs import TIMEOUT_SCALE_ENV, popen, reap, scaled, spawned, timeout_scale

__all__ = ["FIXTURES", "TIMEOUT_SCALE_ENV", "let_os_user_act_as", "popen", "reap", "run_cli", "scaled", "spawned",
           "timeout_scale"]

FIXTURES = Path(__file__).parent / "fixtures"

# Slow as a whole (several seconds to minutes per test: the CLI driving real Dagster runs on a
# home instance), marked here rather than in the file.
SLOW_MODULES = {
    "test_cli_ingest.py": "every trace fixture folder through the CLI and Dagster, twice; two concurrent CLI processes",
    "test_cli_cadence.py": "a demo week ingested and evaluated through the CLI",
    "test_cli_gate.py": "register, evaluate and gate releases through the CLI",
    "test_cli_evals.py": "eval runs, imports and backfills through the CLI",
    "test_tracestore_ingest.py": "store homes through the CLI and Dagster: two writers at once, kills, upgrades",
    "test_tracestore_completion.py": "GenAI events and spans apart: CLI homes and racing writers, checked against a warehouse",
    "test_tracestore_langsmith.py": "LangSmith runs and ends apart: store ingestions and racing writers, checked against a warehouse",
}


def pytest_collection_modifyitems(config, items):
    scale = timeout_scale()
    default_timeout = getattr(config, "_env_timeout", None)  # pytest-timeout's ini / --timeout / $PYTEST_TIMEOUT
    for item in items:
        if item.get_closest_marker("e2e") is not None or item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
        if scale != 1.0:
            _scale_timeout(item, scale, default_timeout)
    _slow_modules_first(items)


def _slow_modules_first(items) -> None:
    """Modules with the most slow tests first, each module's tests together and in their order:
    `make test` hands whole modules to its workers in this order (pytest-xdist, --dist loadfile
    --no-loadscope-reorder), so the last modules to start are short ones."""
    slow: dict[Path, int] = {}
    first: dict[Path, int] = {}
    for i, item in enumerate(items):
        first.setdefault(item.path, i)
        slow[item.path] = slow.get(item.path, 0) + (item.get_closest_marker("slow") is not None)
    items.sort(key=lambda item: (-slow[item.path], first[item.path]))


def _scale_timeout(item, scale: float, default_timeout: float | None) -> None:
    """Put a scaled `timeout` marker in front of the item's own (pytest-timeout reads the closest)."""
    marker = item.get_closest_marker("timeout")
    if marker is None:
        if default_timeout:
            item.add_marker(pytest.mark.timeout(default_timeout * scale), append=False)
        return
    args, kwargs = list(marker.args), dict(marker.kwargs)
    for i, name in enumerate(("timeout", "method", "func_only")):
        if i < len(args):
            kwargs.setdefault(name, args[i])
    if kwargs.get("timeout"):
        kwargs["timeout"] = float(kwargs["timeout"]) * scale
        item.add_marker(pytest.mark.timeout(**kwargs), append=False)


@pytest.fixture
def spawn():
    """`spawn(argv, **popen_kwargs)` starts a child in its own process group (procs.popen); at
    teardown, whether the test passed, failed or timed out, each child is ended with its whole
    group (procs.reap: SIGTERM, SIGKILL after a grace period) and waited for."""
    started = []

    def start(argv, **kwargs):
        proc = popen(argv, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        reap(proc)


@pytest.fixture
def home(tmp_path) -> Home:
    """The example home of `relops init` (demo workflows, suites, manifests) under tmp_path.
    Dagster code reaches it through `resources`, not through $RELOPS_HOME."""
    h = Home.resolve(tmp_path / "home")
    h.init(example=True)
    return h


@pytest.fixture
def resources(home):
    """The Definitions' resources (home, warehouse) configured for the `home` fixture."""
    from relops_pipeline.defs.resources import relops_resources

    return relops_resources(home.root)


@pytest.fixture
def wh(tmp_path):
    """A read-write connection to a migrated, empty warehouse file under tmp_path."""
    with warehouse.open_warehouse(tmp_path / "wh.duckdb") as con:
        yield con


@pytest.fixture
def stage_con():
    """A DuckDB connection with empty stage tables, for testing one reader alone."""
    con = duckdb.connect()
    con.execute(create_stage_tables_sql())
    yield con
    con.close()


@pytest.fixture
def wh_con():
    """An in-memory DuckDB connection with every warehouse migration applied (empty tables)."""
    con = duckdb.connect()
    warehouse.migrate(con)
    yield con
    con.close()


def run_cli(capsys, home: Path, *argv: str) -> tuple[int, str, str]:
    """`relops --home <home> *argv` in-process: (exit code, stdout, stderr)."""
    from relops_pipeline.cli import main

    code = main(["--home", str(home), *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def let_os_user_act_as(home: Path, *labels: str) -> None:
    """Let the operating-system user running the tests act as these labels (`identities` in the
    home's relops.yaml, lib/identity.py): tests play several people from one account."""
    import yaml

    from relops_pipeline.lib.identity import os_principal

    settings = home / "relops.yaml"
    doc = yaml.safe_load(settings.read_text()) or {}
    identities = doc.setdefault("identities", {}) or {}
    for label in labels:
        users = identities.setdefault(label, {}).setdefault("os_users", [])
        if os_principal().subject not in users:
            users.append(os_principal().subject)
    doc["identities"] = identities
    settings.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture
def make_cli_home(tmp_path, monkeypatch):
    """A factory for a `relops init` home under tmp_path with only the support-triage workflow
    (`workflow_yaml`) and its suite v1 (`suite_v1_yaml`): the example home's demo suites and
    releases are removed; the OS user may act as the workflow's owner, delegates and on-call.
    RELOPS_HOME and DAGSTER_HOME point at it."""
    from relops_pipeline.cli import main
    from relops_pipeline.lib.workflows import Roles

    def make(workflow_yaml: str, suite_v1_yaml: str) -> Path:
        h = tmp_path / "home"
        monkeypatch.setenv("RELOPS_HOME", str(h))
        monkeypatch.setenv("DAGSTER_HOME", str(h / "dagster"))
        assert main(["--home", str(h), "init", "--example"]) == 0
        for d in ("suites", "releases"):
            shutil.rmtree(h / d, ignore_errors=True)
        (h / "workflows" / "support-triage.yaml").write_text(workflow_yaml)
        let_os_user_act_as(h, *(Roles.of_text(workflow_yaml) or Roles()).operators)
        (h / "suites" / "support-triage").mkdir(parents=True)
        (h / "suites" / "support-triage" / "v1.yaml").write_text(suite_v1_yaml)
        return h

    return make
