"""Browser links to what `relops serve` shows read-only: the reports under `<home>/reports/` and
the release pages. Dagster metadata carries these URLs (not server file paths) so a click in the
UI opens the report; the base is `serve.public_url` in relops.yaml (default
http://127.0.0.1:4318, where `make ui` starts the server)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from relops_pipeline.lib.home import Home
from relops_pipeline.lib.settings import serve_public_url

REPORTS_PREFIX = "/reports/"
RELEASES_PREFIX = "/releases/"


def report_url(home: Home, path: str | Path) -> str:
    """The URL of a report file under the home's reports folder. A path outside that folder is
    a programming error (the server would refuse it), so it raises ValueError."""
    resolved = Path(path).resolve()
    relative = resolved.relative_to(home.reports_dir.resolve())  # ValueError when outside
    return serve_public_url(home.settings_file) + REPORTS_PREFIX + quote(relative.as_posix())


def release_url(home: Home, workflow: str, version: str) -> str:
    """The URL of a release's page: its whole story, each part linking to its full report."""
    return (serve_public_url(home.settings_file) + RELEASES_PREFIX
            + quote(workflow, safe="") + "/" + quote(version, safe=""))
