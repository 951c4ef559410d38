"""The data home: one folder holding a deployment's configuration and its state.

    <home>/relops.yaml            settings: trace sources, price table, ingest limits
    <home>/workflows/<name>.yaml  one file per production LLM workflow
    <home>/landing/               trace files arrive here (watched by the landing sensor)
    <home>/warehouse/relops.duckdb the warehouse
    <home>/reports/               gate reports, drift dashboards, memos
    <home>/registry/              live pointer files read by serving applications
    <home>/alerts/                the file sink's alerts.jsonl
    <home>/dagster/               the Dagster instance (DAGSTER_HOME)

The home is `--home DIR`, else $RELOPS_HOME, else ./data/home.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

HOME_ENV = "RELOPS_HOME"
DEFAULT_HOME = Path("data") / "home"
# The example configuration `relops init` copies: package data (relops_pipeline/example/), so
# an installed wheel has it too.
EXAMPLE_PACKAGE, EXAMPLE_DIR = "relops_pipeline", "example"


def example_config() -> Traversable:
    """The example configuration's folder, wherever the package is installed (a source tree,
    site-packages or a zip): read it through the Traversable, not as a filesystem path."""
    return resources.files(EXAMPLE_PACKAGE) / EXAMPLE_DIR


def example_files(root: Traversable | None = None) -> Iterator[tuple[tuple[str, ...], Traversable]]:
    """Every file of the example configuration as (path parts relative to it, the file), sorted."""
    def walk(node: Traversable, parts: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Traversable]]:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            if child.is_dir():
                if child.name != "__pycache__":
                    yield from walk(child, (*parts, child.name))
            elif child.is_file():
                yield (*parts, child.name), child

    yield from walk(root if root is not None else example_config(), ())

# Run storage on SQLite in the home; the warehouse writer pool serialises every asset that
# writes DuckDB (one read-write process at a time is all DuckDB allows).
DAGSTER_YAML = """\
# Written by `relops init`. For PostgreSQL storage see docs/production.md and docs/dagster.postgres.yaml.
concurrency:
  pools:
    default_limit: 1
  runs:
    max_concurrent_runs: 4
# Runs that never start, or never finish cancelling, are failed. A run whose process died is
# released by relops' stuck_runs_sensor (the default launcher cannot check its workers).
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  max_resume_run_attempts: 0
  poll_interval_seconds: 60
telemetry:
  enabled: false
"""


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def resolve(cls, home: str | os.PathLike | None = None) -> Home:
        value = home or os.environ.get(HOME_ENV) or DEFAULT_HOME
        return cls(Path(value).expanduser().resolve())

    @property
    def settings_file(self) -> Path:
        return self.root / "relops.yaml"

    @property
    def workflows_dir(self) -> Path:
        return self.root / "workflows"

    @property
    def landing_dir(self) -> Path:
        return self.root / "landing"

    @property
    def warehouse_path(self) -> Path:
        return self.root / "warehouse" / "relops.duckdb"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def registry_dir(self) -> Path:
        return self.root / "registry"

    @property
    def alerts_dir(self) -> Path:
        return self.root / "alerts"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"

    def exists(self) -> bool:
        return self.settings_file.exists()

    def ensure(self, *, example: bool = False) -> list[Path]:
        """An existing home keeps its configuration as it is (deleted example files stay
        deleted); a new one is initialised (with the example workflows when `example`)."""
        if self.exists():
            self._dirs()
            return self._dagster_yaml()
        return self.init(example=example)

    def _dirs(self) -> None:
        for d in (
            self.root,
            self.workflows_dir,
            self.landing_dir,
            self.warehouse_path.parent,
            self.reports_dir,
            self.registry_dir,
            self.alerts_dir,
            self.dagster_home,
        ):
            d.mkdir(parents=True, exist_ok=True)

    def init(self, *, overwrite_config: bool = False, example: bool = False) -> list[Path]:
        """Create the folders, the configuration (relops.yaml) and the Dagster instance config;
        with `example`, also the example workflows, suites and release manifests (a real home
        starts with none: the releases sensor would evaluate the examples' releases).

        Existing configuration is kept unless `overwrite_config`; returns the files written.
        """
        written: list[Path] = []
        self._dirs()
        for parts, src in example_files():
            if not example and parts != ("relops.yaml",):
                continue
            dst = self.root.joinpath(*parts)
            if dst.exists() and not overwrite_config:
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            data = src.read_bytes()
            if parts == ("relops.yaml",):  # its identities name the OS user who runs init
                from relops_pipeline.lib.identity import init_user_settings

                data = init_user_settings(data.decode("utf-8")).encode("utf-8")
            dst.write_bytes(data)
            written.append(dst)
        written += self._dagster_yaml()
        return written

    def _dagster_yaml(self) -> list[Path]:
        written = []
        dagster_yaml = self.dagster_home / "dagster.yaml"
        if not dagster_yaml.exists():
            dagster_yaml.write_text(DAGSTER_YAML)
            written.append(dagster_yaml)
        return written

    def require(self) -> Home:
        if not self.exists():
            raise FileNotFoundError(f"no relops home at {self.root}: run `relops init --home {self.root}` first")
        return self
