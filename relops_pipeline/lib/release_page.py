"""The release pages `relops serve` shows (`/releases/`, `/releases/<workflow>/<version>`): a
release's whole story on one page — what changed against the previous release, its eval runs,
its gate decisions with the approvals, refusals and overrides recorded on them, its rollout
steps, canary analyses, rollbacks, incidents and the drift of its weeks — each part linking to
its full report under `/reports/` (links relative to the server, so they work whatever
`serve.public_url` says).

Reading: one short read-only connection per page (`read_story`), closed before rendering, so a
page never holds the warehouse while a writer waits; a warehouse locked by a writer raises
WarehouseBusy (the server answers 503 with Retry-After). Rendering is pure (`render_*`): every
text that came from a manifest, a model, a user or the event log is escaped with html.escape,
and the page carries no script.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import duckdb

from relops_pipeline.lib.home import Home
from relops_pipeline.lib.warehouse import connect, is_lock_error

REPORTS_PATH, RELEASES_PATH = "/reports/", "/releases/"
# How long a page waits for a writer to let go of the warehouse before answering "busy".
BUSY_WAIT_S = 2.0
_DECISION_EVENTS = ("gate_decision", "approval", "override", "refused")


class WarehouseBusy(RuntimeError):
    """Another process holds the warehouse read-write: the page cannot be read right now."""


@dataclass
class Story:
    """Everything the warehouse holds about one release, as plain rows (dicts)."""

    workflow: str
    version: str
    release: dict[str, Any]
    eval_runs: list[dict[str, Any]] = field(default_factory=list)
    gates: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)  # gate / approval / override / refused events
    rollout: list[dict[str, Any]] = field(default_factory=list)  # rollout / rollback events
    canaries: list[dict[str, Any]] = field(default_factory=list)
    rollbacks: list[dict[str, Any]] = field(default_factory=list)
    incidents: list[dict[str, Any]] = field(default_factory=list)
    drift: list[dict[str, Any]] = field(default_factory=list)
    workflow_reports: list[tuple[str, Path]] = field(default_factory=list)  # (label, file): runbook, readiness
    memos: list[dict[str, Any]] = field(default_factory=list)  # the weekly memos of the weeks it was acted on


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _open(home: Home) -> duckdb.DuckDBPyConnection | None:
    """A short-lived read-only connection; None when there is no warehouse yet."""
    if not home.warehouse_path.exists():
        return None
    try:
        return connect(home.warehouse_path, read_only=True, timeout_s=BUSY_WAIT_S)
    except duckdb.IOException as exc:
        if is_lock_error(exc):
            raise WarehouseBusy("the warehouse is busy (a writer holds it): retry in a moment") from None
        raise


def list_releases(home: Home) -> list[dict[str, Any]]:
    """Every registered release with its latest gate decision and registry stage, by workflow
    then registration time (newest first)."""
    con = _open(home)
    if con is None:
        return []
    try:
        return _rows(con, """
            SELECT r.workflow, r.version, r.registered_at,
                   (SELECT g.decision FROM gate_decisions g WHERE g.release_key = r.release_key
                    ORDER BY g.decided_at DESC LIMIT 1) AS decision,
                   (SELECT e.kind FROM events e WHERE e.release_key = r.release_key
                    AND e.kind IN ('approval', 'override') ORDER BY e.seq DESC LIMIT 1) AS signed_off,
                   (SELECT e.payload->>'stage' FROM events e WHERE e.release_key = r.release_key
                    AND e.kind IN ('rollout', 'rollback') ORDER BY e.seq DESC LIMIT 1) AS rollout_stage,
                   (SELECT e.kind FROM events e WHERE e.release_key = r.release_key
                    AND e.kind IN ('rollout', 'rollback') ORDER BY e.seq DESC LIMIT 1) AS last_move
            FROM releases r ORDER BY r.workflow, r.registered_at DESC, r.version DESC""", [])
    finally:
        con.close()


def read_story(home: Home, workflow: str, version: str) -> Story | None:
    """The release's story, or None when it is not registered."""
    con = _open(home)
    if con is None:
        return None
    try:
        found = _rows(con, "SELECT * FROM releases WHERE workflow = ? AND version = ?", [workflow, version])
        if not found:
            return None
        release = found[0]
        key = release["release_key"]
        story = Story(workflow, version, release)
        story.eval_runs = _rows(con, "SELECT * EXCLUDE (notes) FROM eval_runs WHERE release_key = ? ORDER BY started_at", [key])
        story.gates = _rows(con, "SELECT * EXCLUDE (result) FROM gate_decisions WHERE release_key = ? ORDER BY decided_at", [key])
        kinds = ", ".join(f"'{k}'" for k in _DECISION_EVENTS)
        story.decisions = _rows(con, f"SELECT seq, ts, actor, kind, reason, payload FROM events "
                                     f"WHERE release_key = ? AND kind IN ({kinds}) ORDER BY seq", [key])
        story.rollout = _rows(con, "SELECT seq, ts, actor, kind, reason, payload FROM events "
                                   "WHERE release_key = ? AND kind IN ('rollout', 'rollback', 'rollback_recommended') "
                                   "ORDER BY seq", [key])
        story.canaries = _rows(con, "SELECT * EXCLUDE (result) FROM canary_analyses WHERE release_key = ? "
                                    "ORDER BY computed_at", [key])
        story.rollbacks = _rows(con, "SELECT * FROM rollbacks WHERE workflow = ? AND (from_release = ? OR to_release = ?) "
                                     "ORDER BY recorded_at", [workflow, version, version])
        story.incidents = _rows(con, "SELECT * FROM incidents WHERE workflow = ? AND release = ? ORDER BY opened_at",
                                [workflow, version])
        # The weeks of its traffic, and of the trailing windows (one a day) only the newest.
        story.drift = _rows(con, "SELECT * FROM drift_summaries WHERE workflow = ? AND release = ? "
                                 "QUALIFY granularity = 'weekly' OR row_number() OVER "
                                 "(PARTITION BY granularity ORDER BY period_start DESC, computed_at DESC) = 1 "
                                 "ORDER BY granularity = 'rolling', period_start", [workflow, version])
        # The stability memos of the weeks something happened to it (latest memo of each week).
        days = [g["decided_at"] for g in story.gates] + [e["ts"] for e in story.rollout] + \
            [r["recorded_at"] for r in story.rollbacks] + [d["period_start"] for d in story.drift if d["granularity"] == "weekly"]
        from relops_pipeline.lib.memo.build import week_start  # the memos' own weeks

        weeks = sorted({week_start(d) for d in days if d is not None})
        if weeks:
            marks = ", ".join("?" for _ in weeks)
            story.memos = _rows(con, f"SELECT week, md_path, html_path FROM stability_memos WHERE week IN ({marks}) "
                                     "QUALIFY row_number() OVER (PARTITION BY week ORDER BY generated_at DESC) = 1 "
                                     "ORDER BY week", weeks)
    finally:
        con.close()
    for label, path in (("runbook", home.reports_dir / "runbooks" / f"{workflow}.md"),
                        ("readiness review", home.reports_dir / "readiness" / f"{workflow}.md")):
        if path.is_file():
            story.workflow_reports.append((label, path))
    return story


# -- rendering -------------------------------------------------------------------------------

def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def fmt_number(value: Any, digits: int = 3) -> str:
    """A number as a person reads it: integers as they are, others to `digits` significant
    figures (no -0)."""
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value == 0 or abs(value) < 10 ** -(digits + 3):
        return "0"
    text = f"{value:.{digits}g}"
    if "e" in text:
        text = f"{value:.{max(0, digits - 1 - int(math.floor(math.log10(abs(value)))))}f}"
    return text


def _ts(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, dt.date):
        return value.isoformat()
    return "" if value is None else str(value)


def report_href(home: Home, path: Any) -> str | None:
    """The server-relative URL of a report file, None when it is not a file under the home's
    reports folder (an old path, a report written elsewhere)."""
    if not path:
        return None
    try:
        file = Path(str(path)).resolve()
        relative = file.relative_to(home.reports_dir.resolve())
    except (ValueError, OSError):
        return None
    if not file.is_file():
        return None
    return REPORTS_PATH + quote(relative.as_posix())


def release_href(workflow: str, version: str) -> str:
    """The server-relative URL of a release page."""
    return RELEASES_PATH + quote(workflow, safe="") + "/" + quote(version, safe="")


def _links(home: Home, row: dict[str, Any], *columns: str) -> str:
    parts = []
    for col in columns:
        href = report_href(home, row.get(col))
        if href:
            label = Path(str(row[col])).suffix.lstrip(".") or "report"
            parts.append(f'<a href="{esc(href)}">{esc(label)}</a>')
    return " · ".join(parts) or "–"


_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:70rem;padding:0 1rem;color:#1d232b}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d6dbe1}
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{text-align:left;padding:.3rem .5rem;
border-bottom:1px solid #e6e9ed;vertical-align:top}th{background:#f4f6f8}
pre{background:#f4f6f8;padding:.6rem;overflow:auto;font-size:13px}
.SHIP,.pass,.ok{color:#11703a;font-weight:600}.BLOCK,.fail,.ERROR{color:#b3261e;font-weight:600}
.REVIEW,.inconclusive,.WARN{color:#8a5a00;font-weight:600}.muted{color:#5b6570}
nav a{margin-right:1rem}
"""


def html_page(title: str, body: str) -> bytes:
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>"
            f'<nav><a href="{RELEASES_PATH}">releases</a><a href="{REPORTS_PATH}">reports</a></nav>'
            f"{body}</body></html>\n").encode()


def _table(headers: list[str], rows: list[list[str]], empty: str) -> str:
    """A table of already-escaped cells (or `empty`, a plain sentence, when there is no row)."""
    if not rows:
        return f'<p class="muted">{esc(empty)}</p>'
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _badge(word: Any) -> str:
    text = esc(word)
    return f'<span class="{text}">{text}</span>' if word else "–"


def render_index(releases: list[dict[str, Any]], *, only_workflow: str | None = None) -> bytes:
    """The index of releases by workflow (only `only_workflow`'s when a key is pinned to it)."""
    rows = [r for r in releases if only_workflow is None or r["workflow"] == only_workflow]
    sections = []
    for workflow in sorted({r["workflow"] for r in rows}):
        table = _table(
            ["release", "registered", "gate", "signed off", "rollout"],
            [[f'<a href="{esc(release_href(r["workflow"], r["version"]))}">{esc(r["version"])}</a>',
              esc(_ts(r["registered_at"])), _badge(r["decision"]),
              esc({"approval": "approved", "override": "overridden"}.get(r["signed_off"] or "", "–")),
              esc((r["rollout_stage"] or "–") if r["last_move"] != "rollback" else "rolled back")]
             for r in rows if r["workflow"] == workflow],
            "no releases")
        sections.append(f"<h2>{esc(workflow)}</h2>{table}")
    body = "<h1>Releases</h1>" + ("".join(sections) or '<p class="muted">No release is registered yet.</p>')
    return html_page("relops releases", body)


def render_not_found(message: str, heading: str = "Not found") -> bytes:
    """The page of a refusal (404 by default; 403 with heading "Forbidden"): the heading and one
    escaped sentence."""
    return html_page(heading.lower(), f"<h1>{esc(heading)}</h1><p>{esc(message)}</p>")


def _diff_section(release: dict[str, Any]) -> str:
    diff = _json(release.get("diff")) or {}
    baseline = release.get("baseline_version")
    against = (f'against <a href="{esc(release_href(release["workflow"], baseline))}">{esc(baseline)}</a>'
               if baseline else "(no earlier release)")
    out = [f"<h2>What changed</h2><p>Manifest {esc((release.get('manifest_hash') or '')[:12]) or '(none)'} {against}; "
           f"registered by {esc(release.get('registered_by') or '–')} on {esc(_ts(release.get('registered_at')))}.</p>"]
    summary = diff.get("summary") if isinstance(diff, dict) else None
    if summary:
        out.append("<ul>" + "".join(f"<li>{esc(line)}</li>" for line in summary) + "</ul>")
    elif isinstance(diff, dict) and diff.get("reason"):
        out.append(f'<p class="muted">{esc(diff["reason"])}</p>')
    else:
        out.append('<p class="muted">Nothing changed.</p>')
    notes = diff.get("notes") if isinstance(diff, dict) else None
    if isinstance(notes, dict) and notes.get("to"):
        out.append(f"<p><b>Notes:</b> {esc(notes['to'])}</p>")
    prompts = diff.get("prompts") if isinstance(diff, dict) else None
    for name, change in (prompts or {}).items():
        if isinstance(change, dict) and change.get("unified_diff"):
            out.append(f"<p>prompt {esc(name)} ({esc(change.get('status'))})</p><pre>{esc(change['unified_diff'])}</pre>")
    return "".join(out)


def render_release(home: Home, story: Story) -> bytes:
    """The release page."""
    w, v = story.workflow, story.version
    parts = [f"<h1>{esc(w)} {esc(v)}</h1>"]
    latest = story.gates[-1]["decision"] if story.gates else None
    signed = [d for d in story.decisions if d["kind"] in ("approval", "override")]
    parts.append(f"<p>Gate: {_badge(latest) if latest else 'not gated yet'}"
                 + (f"; {esc('overridden' if signed[-1]['kind'] == 'override' else 'approved')} by "
                    f"{esc(signed[-1]['actor'])}" if signed else "") + "</p>")
    if story.workflow_reports:
        parts.append("<p>Workflow: " + " · ".join(
            f'<a href="{esc(report_href(home, p))}">{esc(label)}</a>' for label, p in story.workflow_reports
            if report_href(home, p)) + "</p>")
    memos = [f'week of {esc(m["week"])} ({_links(home, m, "html_path", "md_path")})' for m in story.memos]
    if memos:
        parts.append("<p>Weekly stability memos: " + " · ".join(memos) + "</p>")
    parts.append(_diff_section(story.release))

    parts.append("<h2>Eval runs</h2>" + _table(
        ["run", "suite", "source", "cases", "samples", "errors", "valid", "finished"],
        [[esc(r["eval_run_id"]), esc(r["suite_version"]), esc(r["source"]), esc(r["cases"]), esc(r["samples"]),
          f'{esc(r["errors"])} ({esc(fmt_number((r["error_rate"] or 0) * 100, 2))} %)',
          "yes" if r["valid"] else f'<span class="fail">no</span> {esc(r["invalid_reason"])}', esc(_ts(r["finished_at"]))]
         for r in story.eval_runs], "No eval run."))

    parts.append("<h2>Gate decisions</h2>" + _table(
        ["decided", "decision", "baseline", "suite", "thresholds", "why", "report"],
        [[esc(_ts(g["decided_at"])), _badge(g["decision"]), esc(g["baseline_version"] or "–"), esc(g["suite_version"]),
          esc(g["thresholds_version"]),
          "<br>".join(esc(x) for x in (_json(g["reasons"]) or []) if x) or "–",
          _links(home, g, "report_html", "report_md", "report_json")]
         for g in story.gates], "Not gated yet."))
    parts.append("<h3>Approvals, refusals and overrides</h3>" + _table(
        ["when", "what", "who", "reason"],
        [[esc(_ts(d["ts"])), _badge({"approval": "approved", "override": "overridden", "refused": "refused"}.get(d["kind"], d["kind"])),
          esc(d["actor"]), esc(d["reason"])]
         for d in story.decisions if d["kind"] != "gate_decision"], "None recorded."))

    def move(e: dict[str, Any]) -> str:
        p = _json(e["payload"]) or {}
        if e["kind"] == "rollout":
            pct = p.get("percent")
            return esc(f"{p.get('stage')}" + (f" at {fmt_number(pct)} %" if pct is not None else "")
                      + (" (override)" if p.get("override") else ""))
        if e["kind"] == "rollback":
            return esc(f"rollback {p.get('from') or '–'} -> {p.get('to') or '–'} ({p.get('trigger')})")
        return esc(e["kind"].replace("_", " "))

    parts.append("<h2>Rollout</h2>" + _table(
        ["when", "step", "who", "reason"],
        [[esc(_ts(e["ts"])), move(e), esc(e["actor"]), esc(e["reason"])] for e in story.rollout], "Not rolled out."))

    parts.append("<h2>Canary analyses</h2>" + _table(
        ["computed", "verdict", "baseline", "window", "score", "consecutive failures", "report"],
        [[esc(_ts(c["computed_at"])), _badge(c["verdict"]), esc(c["baseline"]),
          esc(f"{_ts(c['window_start'])} – {_ts(c['window_end'])}"), esc(fmt_number(c["score"])),
          esc(c["consecutive_failures"]), _links(home, c, "report_html", "report_md")]
         for c in story.canaries], "No canary analysis."))

    parts.append("<h2>Rollbacks</h2>" + _table(
        ["when", "from", "to", "trigger", "automatic", "reason", "time to rollback", "incident"],
        [[esc(_ts(r["recorded_at"])), esc(r["from_release"]), esc(r["to_release"]), esc(r["trigger"]),
          "yes" if r["automatic"] else "no", esc(r["reason"]),
          esc(f"{fmt_number(r['time_to_rollback_s'])} s" if r["time_to_rollback_s"] is not None else "–"),
          esc(r["incident_id"] or "–")]
         for r in story.rollbacks], "No rollback."))

    parts.append("<h2>Incidents</h2>" + _table(
        ["id", "title", "status", "source", "opened", "closed", "resolution"],
        [[esc(i["incident_id"]), esc(i["title"]), esc(i["status"]), esc(i["source"]),
          esc(f"{_ts(i['opened_at'])} by {i['opened_by']}"),
          esc(f"{_ts(i['closed_at'])} by {i['closed_by']}" if i["closed_at"] else "–"), esc(i["resolution"] or "–")]
         for i in story.incidents], "No incident."))

    parts.append("<h2>Drift</h2>" + _table(
        ["period", "status", "severity", "columns drifted", "critical drifted", "rows", "dashboard"],
        [[esc(f"{d['granularity']} {_ts(d['period_start'])} – {_ts(d['period_end'])}"), _badge(d["status"]),
          esc(d["severity"] or "–"), esc(f"{d['columns_drifted']} of {d['columns_tested']}"),
          esc(", ".join(str(c) for c in (_json(d["critical_drifted"]) or [])) or "–"),
          esc(f"{d['cur_rows']} vs {d['ref_rows']} reference"), _links(home, d, "report_path")]
         for d in story.drift], "No drift computed for this release's traffic."))
    return html_page(f"{w} {v}", "".join(parts))
