"""Metadata links a browser opens from the Dagster UI: a report under a home's reports folder
as its `relops serve` URL (lib/report_links.py), and a release's page."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from relops_pipeline.lib.evals.model import split_release_key
from relops_pipeline.lib.home import Home
from relops_pipeline.lib.report_links import release_url, report_url


def home_of_report(path: str | Path) -> Home:
    """The home whose reports folder holds `path` (the nearest `reports` folder above it): the
    metadata builders get a report's path, not the home. ValueError when there is none."""
    resolved = Path(path).resolve()
    for parent in resolved.parents:
        if parent.name == "reports":
            return Home(parent.parent)
    raise ValueError(f"{path} is not under a home's reports folder")


def report_link(path: str | Path, home: Home | None = None) -> dg.MetadataValue:
    """The report's URL on relops serve, as a metadata link. A file outside the reports folder
    is not served: it stays a path (a link that 404s would be worse), and never fails the run."""
    try:
        return dg.MetadataValue.url(report_url(home or home_of_report(path), path))
    except ValueError:
        return dg.MetadataValue.path(str(path))


def release_link(home: Home, release_key: str) -> dg.MetadataValue:
    """The release page's URL on relops serve (its whole story), as a metadata link."""
    workflow, version = split_release_key(release_key)
    return dg.MetadataValue.url(release_url(home, workflow, version))
