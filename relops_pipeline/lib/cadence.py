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
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from relops_pipeline.lib.home import Home

PROPOSAL_KINDS = ("suite", "thresholds", "alert_rules")


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _workflow_names(home: Home) -> list[str]:
    from relops_pipeline.lib.workflows import list_workflows

    return list_workflows(home.workflows_dir)


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
) -> dict[str, Any]:
    """Build, render, write and record the stability memo of the week starting `week` (a Monday).
    Returns memo, markdown, md_path, html_path, ops_from, ops_to, memo_id."""
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
    return {"memo": memo, "markdown": md, "md_path": Path(md_path), "html_path": Path(html_path),
            "ops_from": ops_from, "ops_to": ops_to, "memo_id": memo_id}


def proposal_report_path(home: Home, proposal_id: str) -> Path:
    return home.reports_dir / "proposals" / f"{proposal_id}.md"


def write_proposal_report(con: duckdb.DuckDBPyConnection, home: Home, proposal: dict[str, Any]) -> dict[str, Any]:
    """Write the proposal's markdown report under the home's reports (once) and record its path."""
    if not proposal.get("report_md"):
        return proposal
    path = proposal_report_path(home, proposal["proposal_id"])
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".md.tmp")
        tmp.write_text(proposal["report_md"], encoding="utf-8")
        tmp.replace(path)
    if proposal.get("report_path") != str(path):
        con.execute("UPDATE proposals SET report_path = ? WHERE proposal_id = ?", [str(path), proposal["proposal_id"]])
        proposal = {**proposal, "report_path": str(path)}
    return proposal


def propose(
    con: duckdb.DuckDBPyConnection, home: Home, kind: str, workflow: str, *, now: datetime | None = None,
    dagster_run_id: str | None = None,
) -> dict[str, Any] | None:
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
    if dagster_run_id and p.get("created") and not p.get("dagster_run_id"):
        con.execute("UPDATE proposals SET dagster_run_id = ? WHERE proposal_id = ?", [dagster_run_id, p["proposal_id"]])
    return write_proposal_report(con, home, p)


def make_proposals(
    con: duckdb.DuckDBPyConnection, home: Home, kind: str, *, now: datetime | None = None,
    dagster_run_id: str | None = None,
) -> list[tuple[str, dict[str, Any] | None]]:
    """[(workflow, draft or None)] for every workflow of the home."""
    return [(w, propose(con, home, kind, w, now=now, dagster_run_id=dagster_run_id)) for w in _workflow_names(home)]


def readiness_for(
    con: duckdb.DuckDBPyConnection, home: Home, workflow: str, *, now: datetime | None = None,
    dagster_run_id: str | None = None,
) -> dict[str, Any]:
    """Review, render, write and record a workflow's readiness: result, markdown, path, review_id."""
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
    return {"result": result, "markdown": md, "path": Path(path), "review_id": review_id}


def last_complete_week(today: date) -> date:
    """The Monday of the last complete Monday-to-Sunday week before `today`."""
    return today - timedelta(days=today.weekday() + 7)
