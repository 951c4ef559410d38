"""The weekly and monthly cadence, one function per artifact, shared by the Dagster assets and
the CLI so both do exactly the same thing.

- `memo_for_week`: the stability memo of a week. Its production signals are those of the week
  (by trace time); its release operations (gates, rollouts, rollbacks, incidents, alerts) are
  those recorded since the previous memo was written (or since the week began, for the first
  memo), up to now. On the Monday schedule that is the week just ended; for a replayed or
  backfilled history it is what happened since the last memo, which is what a reader needs.
- `make_proposals`: the monthly drafts of one kind for every workflow, each with its report
  written under `<home>/reports/proposals/`.
- `readiness_for`: a workflow's readiness review, written and recorded.
- `draw_review_sample`: the week's review sample, recorded, and its sheet written.

Each returns a frozen dataclass (MemoWritten, ReviewSampleDrawn, ProposalsMade,
ReadinessReviewed) that the Dagster layer turns into metadata (defs/maintenance/metadata.py) and
that round-trips through JSON (lib/results.py).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from relops_pipeline.lib.home import Home
from relops_pipeline.lib.proposals.store import Proposal

PROPOSAL_KINDS = ("suite", "thresholds", "alert_rules")

# The headline signals of a workflow's memo section that become metadata (`<key>/<workflow>`).
HEADLINE_KEYS = ("traces", "error_rate", "latency_p95_ms", "cost_per_trace_usd")


@dataclasses.dataclass(frozen=True)
class WorkflowHeadline:
    """A workflow's total signals of the memo's week (None: not measured)."""

    workflow: str
    traces: float | None = None
    error_rate: float | None = None
    latency_p95_ms: float | None = None
    cost_per_trace_usd: float | None = None


@dataclasses.dataclass(frozen=True)
class MemoWritten:
    """The stability memo of a week, written and recorded. `memo` is the memo document (the
    JSON stored in stability_memos, rendered by lib/memo/render.py)."""

    week: date
    memo_id: str
    markdown: str
    md_path: str
    html_path: str
    ops_from: datetime
    ops_to: datetime
    recommendations: int
    headlines: tuple[WorkflowHeadline, ...]
    memo: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ReviewStratum:
    workflow: str
    release: str
    traces: int


@dataclasses.dataclass(frozen=True)
class ReviewSampleDrawn:
    """The week's review sample (drawn once, recorded) and its sheet."""

    week: date
    traces: int
    sheet_csv: str
    sheet_html: str
    strata: tuple[ReviewStratum, ...]


@dataclasses.dataclass(frozen=True)
class ProposalOutcome:
    """One workflow's draft of one kind; proposal_id None: nothing to propose."""

    workflow: str
    proposal_id: str | None = None
    title: str | None = None
    status: str | None = None
    created: bool = False
    report_path: str | None = None

    @property
    def proposed(self) -> bool:
        return self.proposal_id is not None


@dataclasses.dataclass(frozen=True)
class ProposalsMade:
    """This month's drafts of one kind, for every workflow of the home."""

    kind: str
    outcomes: tuple[ProposalOutcome, ...]

    @property
    def drafts(self) -> int:
        return sum(1 for o in self.outcomes if o.proposed and o.status == "draft")


@dataclasses.dataclass(frozen=True)
class ReadinessReviewed:
    """A workflow's readiness review, written and recorded. `result` is the review document
    (lib/readiness.review_readiness, the JSON stored in readiness_reviews)."""

    workflow: str
    status: str
    review_id: str
    report_path: str
    markdown: str
    gaps: tuple[str, ...]  # the names of the checks that are not ok, in order
    result: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ReadinessReviews:
    """The readiness review of every workflow of the home."""

    reviews: tuple[ReadinessReviewed, ...]


def _headline(workflow_section: dict[str, Any]) -> WorkflowHeadline:
    total = (workflow_section.get("signals") or {}).get("total") or {}
    week = total.get("this_week") or {}
    values = {k: float(v) for k in HEADLINE_KEYS if isinstance(v := week.get(k), (int, float))}
    return WorkflowHeadline(workflow=workflow_section["workflow"], **values)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _workflow_names(home: Home) -> list[str]:
    """The workflows whose file loads: a broken one is skipped (`relops doctor`/the CLI name it),
    never the others."""
    from relops_pipeline.lib.workflows import load_all

    return [wf.name for wf in load_all(home.workflows_dir).workflows]


def ops_window(con: duckdb.DuckDBPyConnection, week: date, now: datetime) -> tuple[datetime, datetime]:
    """(ops_from, ops_to) of the memo of `week` written at `now`: since the previous memo (of an
    earlier week) was written, else since the week began; until now."""
    from relops_pipeline.lib.memo import previous_memo

    start = datetime.combine(week, datetime.min.time())
    prev = previous_memo(con, week)
    ops_from = prev["generated_at"] if prev else start
    return min(ops_from, now), now


def memo_for_week(
    con: duckdb.DuckDBPyConnection, home: Home, week: date, *, now: datetime | None = None,
    dagster_run_id: str | None = None,
) -> MemoWritten:
    """Build, render, write and record the stability memo of the week starting `week` (a Monday)."""
    from relops_pipeline.lib.memo import build_memo, record_memo, render_markdown, write_memo

    if week.weekday() != 0:
        raise ValueError(f"a memo week starts on a Monday; {week} is a {week:%A}")
    now = now or _now()
    ops_from, ops_to = ops_window(con, week, now)
    memo = build_memo(con, week, ops_from=ops_from, ops_to=ops_to, home=home)
    md = render_markdown(memo)
    md_path, html_path = write_memo(home, memo)
    memo_id = record_memo(con, memo, md, md_path, html_path, generated_at=now, ops_from=ops_from, ops_to=ops_to,
                          dagster_run_id=dagster_run_id)
    return MemoWritten(
        week=week, memo_id=memo_id, markdown=md, md_path=str(md_path), html_path=str(html_path), ops_from=ops_from,
        ops_to=ops_to, recommendations=len(memo.get("recommendations", [])),
        headlines=tuple(_headline(wf) for wf in memo.get("workflows", [])), memo=memo,
    )


def recorded_memo_of_run(con: duckdb.DuckDBPyConnection, dagster_run_id: str) -> dict[str, Any] | None:
    """The memo a run recorded (its latest, when several): memo_id, md_path, html_path, report_md,
    ops_from, ops_to and the memo document; None when the run recorded none."""
    import json

    row = con.execute(
        "SELECT memo_id, md_path, html_path, report_md, ops_from, ops_to, memo FROM stability_memos "
        "WHERE dagster_run_id = ? ORDER BY generated_at DESC LIMIT 1", [dagster_run_id]).fetchone()
    if row is None:
        return None
    keys = ("memo_id", "md_path", "html_path", "report_md", "ops_from", "ops_to", "memo")
    out = dict(zip(keys, row, strict=True))
    out["memo"] = json.loads(out["memo"]) if out["memo"] else {}
    return out


def draw_review_sample(con: duckdb.DuckDBPyConnection, home: Home, week: date) -> ReviewSampleDrawn:
    """The week's review sample (drawn and recorded the first time, the stored one later) with
    its sheet written (CSV to fill in, HTML to read)."""
    from relops_pipeline.lib.review import select_review_sample, write_review_sheet

    samples = select_review_sample(con, week)
    csv_path, html_path = write_review_sheet(con, home, week, samples)
    counts: dict[tuple[str, str], int] = {}
    for s in samples:
        counts[(s["workflow"], s["release"])] = counts.get((s["workflow"], s["release"]), 0) + 1
    return ReviewSampleDrawn(
        week=week, traces=len(samples), sheet_csv=str(csv_path), sheet_html=str(html_path),
        strata=tuple(ReviewStratum(w, r, n) for (w, r), n in sorted(counts.items())),
    )


def review_sample_counts(con: duckdb.DuckDBPyConnection, week: date) -> tuple[list[ReviewStratum], str | None]:
    """The recorded sample of a week per workflow and release, and its sheet's path."""
    rows = con.execute("SELECT workflow, release, count(*), any_value(sheet) FROM review_samples WHERE week = ? "
                       "GROUP BY ALL ORDER BY 1, 2", [week]).fetchall()
    return [ReviewStratum(w, r, int(n)) for w, r, n, _s in rows], (rows[0][3] if rows else None)


def proposal_report_path(home: Home, proposal_id: str) -> Path:
    return home.reports_dir / "proposals" / f"{proposal_id}.md"


def write_proposal_report(con: duckdb.DuckDBPyConnection, home: Home, proposal: Proposal) -> Proposal:
    """Write the proposal's markdown report under the home's reports (once) and record its path."""
    if not proposal.report_md:
        return proposal
    path = proposal_report_path(home, proposal.proposal_id)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".md.tmp")
        tmp.write_text(proposal.report_md, encoding="utf-8")
        tmp.replace(path)
    if proposal.report_path != str(path):
        con.execute("UPDATE proposals SET report_path = ? WHERE proposal_id = ?", [str(path), proposal.proposal_id])
        proposal = dataclasses.replace(proposal, report_path=str(path))
    return proposal


def propose(
    con: duckdb.DuckDBPyConnection, home: Home, kind: str, workflow: str, *, now: datetime | None = None,
    dagster_run_id: str | None = None,
) -> Proposal | None:
    """One workflow's draft of one kind (None: nothing to propose), its report written."""
    now = now or _now()
    period = f"{now:%Y-%m}"
    if kind == "suite":
        from relops_pipeline.lib.proposals.suites import propose_suite_cases
        from relops_pipeline.lib.workflows import load_workflow

        wf = load_workflow(home.workflows_dir, workflow)
        p = propose_suite_cases(con, home.root / "suites", workflow, period=period, now=now, suite=wf.suite_name,
                                scorer_types=[s.get("type") for s in wf.scorers], dagster_run_id=dagster_run_id)
    elif kind == "thresholds":
        from relops_pipeline.lib.proposals.thresholds import propose_threshold_ratchet

        p = propose_threshold_ratchet(con, workflow, period=period, now=now)
    elif kind == "alert_rules":
        from relops_pipeline.lib.alerts.calibration import propose_alert_calibration

        p = propose_alert_calibration(con, workflow, period=period, now=now)
    else:
        raise ValueError(f"proposal kind {kind!r}: one of {', '.join(PROPOSAL_KINDS)}")
    if p is None:
        return None
    if dagster_run_id and p.created and not p.dagster_run_id:
        con.execute("UPDATE proposals SET dagster_run_id = ? WHERE proposal_id = ?", [dagster_run_id, p.proposal_id])
    return write_proposal_report(con, home, p)


def _outcome(workflow: str, p: Proposal | None) -> ProposalOutcome:
    if p is None:
        return ProposalOutcome(workflow)
    return ProposalOutcome(workflow=workflow, proposal_id=p.proposal_id, title=p.title, status=p.status,
                           created=p.created, report_path=p.report_path)


def make_proposals(
    con: duckdb.DuckDBPyConnection, home: Home, kind: str, *, now: datetime | None = None,
    dagster_run_id: str | None = None,
) -> ProposalsMade:
    """The drafts of one kind (or nothing to propose) for every workflow of the home."""
    return ProposalsMade(kind, tuple(_outcome(w, propose(con, home, kind, w, now=now, dagster_run_id=dagster_run_id))
                                     for w in _workflow_names(home)))


def readiness_for(
    con: duckdb.DuckDBPyConnection, home: Home, workflow: str, *, now: datetime | None = None,
    dagster_run_id: str | None = None,
) -> ReadinessReviewed:
    """Review, render, write and record a workflow's readiness."""
    from relops_pipeline.lib.readiness import (
        record_readiness,
        render_readiness_markdown,
        review_readiness,
        write_readiness,
    )

    result = review_readiness(con, home, workflow, now=now or _now())
    md = render_readiness_markdown(result)
    path = write_readiness(home, result, md)
    review_id = record_readiness(con, result, md, path, dagster_run_id)
    return ReadinessReviewed(
        workflow=workflow, status=result["status"], review_id=review_id, report_path=str(path), markdown=md,
        gaps=tuple(c["name"] for c in result["checks"] if c["status"] != "ok"), result=result,
    )


def review_all_readiness(
    con: duckdb.DuckDBPyConnection, home: Home, *, now: datetime | None = None, dagster_run_id: str | None = None,
) -> ReadinessReviews:
    """The readiness review of every workflow of the home, each written and recorded."""
    return ReadinessReviews(tuple(readiness_for(con, home, w, now=now, dagster_run_id=dagster_run_id)
                                  for w in _workflow_names(home)))


def recorded_readiness_of_run(
    con: duckdb.DuckDBPyConnection, workflow: str, dagster_run_id: str,
) -> tuple[str, dict[str, Any], str, str] | None:
    """(status, result, report_md, report_path) of the workflow's review a run recorded, or None."""
    import json

    row = con.execute("SELECT status, result, report_md, report_path FROM readiness_reviews WHERE workflow = ? "
                      "AND dagster_run_id = ? ORDER BY reviewed_at DESC LIMIT 1", [workflow, dagster_run_id]).fetchone()
    if row is None:
        return None
    return row[0], json.loads(row[1]), row[2], row[3]


def last_complete_week(today: date) -> date:
    """The Monday of the last complete Monday-to-Sunday week before `today`."""
    return today - timedelta(days=today.weekday() + 7)
