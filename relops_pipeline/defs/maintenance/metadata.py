"""Typed results of the maintenance domain (lib/cadence.py) as materialization metadata."""

from __future__ import annotations

import dagster as dg

from relops_pipeline.defs.links import report_link
from relops_pipeline.lib import rounding
from relops_pipeline.lib.cadence import (
    HEADLINE_KEYS,
    MemoWritten,
    ProposalsMade,
    ReadinessReviews,
    ReviewSampleDrawn,
)
from relops_pipeline.lib.markdown import md_table

# Dagster's markdown metadata value is capped: the memo is cut there (the files have all of it).
MEMO_METADATA_CHARS = 60000

Metadata = dict[str, dg.MetadataValue | str]


def stability_memo_result(m: MemoWritten) -> dg.MaterializeResult:
    """The memo's files, its text, the operations window and each workflow's headline signals."""
    meta: Metadata = {
        "memo_md": report_link(m.md_path),
        "memo_html": report_link(m.html_path),
        "memo": dg.MetadataValue.md(m.markdown[:MEMO_METADATA_CHARS]),
        "ops_window": f"{m.ops_from:%Y-%m-%d %H:%M} .. {m.ops_to:%Y-%m-%d %H:%M} UTC",
        "recommendations": dg.MetadataValue.int(m.recommendations),
    }
    for h in m.headlines:
        for key in HEADLINE_KEYS:
            value = getattr(h, key)
            if value is not None:
                meta[f"{key}/{h.workflow}"] = dg.MetadataValue.float(rounding.by_name(key, value))
    return dg.MaterializeResult(metadata=meta)


def review_sample_result(r: ReviewSampleDrawn) -> dg.MaterializeResult:
    strata = md_table(["workflow", "release", "traces"], [[s.workflow, s.release, s.traces] for s in r.strata])
    return dg.MaterializeResult(metadata={
        "traces": dg.MetadataValue.int(r.traces),
        "sheet_csv": report_link(r.sheet_csv),
        "sheet_html": report_link(r.sheet_html),
        "strata": dg.MetadataValue.md(strata if r.strata else "no traffic this week"),
    })


def proposal_log_lines(made: ProposalsMade) -> list[str]:
    """One line per workflow for the run's log."""
    return [f"{o.workflow}: " + (f"{o.proposal_id} ({o.status}): {o.title}" if o.proposed else "nothing to propose")
            for o in made.outcomes]


def proposals_result(made: ProposalsMade) -> dg.MaterializeResult:
    """Each workflow's draft (or nothing to propose), the reports' paths and the count of drafts."""
    rows: list[list[object]] = []
    meta: dict[str, dg.MetadataValue] = {}
    for o in made.outcomes:
        if not o.proposed:
            rows.append([o.workflow, "-", "nothing to propose", "-"])
            continue
        rows.append([o.workflow, o.proposal_id, o.title, o.status])
        if o.report_path:
            meta[f"report/{o.workflow}"] = report_link(o.report_path)
    meta["proposals"] = dg.MetadataValue.md(md_table(["workflow", "proposal", "title", "status"], rows))
    meta["drafts"] = dg.MetadataValue.int(made.drafts)
    return dg.MaterializeResult(metadata=meta)


def readiness_report_result(r: ReadinessReviews) -> dg.MaterializeResult:
    """Per workflow: its report, its number of gaps, and a table of statuses and first gaps."""
    rows: list[list[object]] = []
    meta: dict[str, dg.MetadataValue] = {}
    for review in r.reviews:
        rows.append([review.workflow, review.status, len(review.gaps), "; ".join(review.gaps[:4]) or "-"])
        meta[f"report/{review.workflow}"] = report_link(review.report_path)
        meta[f"gaps/{review.workflow}"] = dg.MetadataValue.int(len(review.gaps))
    meta["workflows"] = dg.MetadataValue.md(md_table(["workflow", "status", "gaps", "first gaps"], rows))
    return dg.MaterializeResult(metadata=meta)
