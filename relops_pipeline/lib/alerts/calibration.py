"""Alert calibration: replay the signal history through a workflow's alert rules, measure
which firings were useful and which were noise, and propose thresholds that keep the noise
within a budget while still catching every incident the current rules caught.

Definitions (all times naive UTC):

- The replay covers the days in [start, end) that have daily_signals rows; each rule is
  evaluated on each day exactly as the daily asset does (rules.firing_for), nothing is sent.
- A problem is an incident of the workflow (it began at `started_at`, or `opened_at` when
  that is unset) or a performed rollback not linked to one of those incidents (at
  `flipped_at`, else `recorded_at`). Its window runs from `lead_days` before it began to
  when it ended: `closed_at` (or the end of the replay while it is open), but at most
  `incident_days` after it began — a firing long after the start of an incident that stayed
  open is not evidence that the rule sees the problem.
- A firing on day D (the day's traffic, D 00:00 to D+1 00:00) is useful when that day
  overlaps a problem's window, noise otherwise. A problem is caught by a rule when at least
  one firing of the rule is useful for it.
- Noise per month = noise firings * 30 / days replayed. A rule is over budget when that
  exceeds `budget_per_month`.
- For a rule over budget, the search moves the threshold away from the current one (up for
  `above`, down for `below`) to the first value at which noise fits the budget. When that
  threshold loses an incident the current threshold caught, no threshold does both (fewer
  firings never catch more), and the result says so, with the quietest threshold that still
  catches them all. A proposed threshold is rounded to the fewest significant digits that
  give the same firings on the history.
- Drift alerts are counted, not calibrated: the days a rolling (or daily) drift summary of
  the workflow (release '*') said `drift`, by severity, and how many overlapped a problem.

`propose_alert_calibration` records the result as a draft (lib/proposals/store.py, kind
"alert_rules"); `accept_alert_calibration` records the proposed rules as the next version
and marks the draft accepted, in one transaction. Nothing changes before acceptance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import duckdb

from relops_pipeline.lib import audit
from relops_pipeline.lib.alerts.rules import (
    AlertRule,
    AlertRules,
    RulesError,
    current_alert_rules,
    day_signals,
    firing_for,
    record_alert_rules,
    rule_value,
    rules_config,
)
from relops_pipeline.lib.markdown import escape_md, md_table
from relops_pipeline.lib.proposals import store
from relops_pipeline.lib.warehouse import fetch_one

DAYS_PER_MONTH = 30.0


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day)


def problem_windows(
    con: duckdb.DuckDBPyConnection,
    workflow: str,
    *,
    start: date,
    end: date,
    lead_days: int = 3,
    incident_days: int = 3,
) -> list[dict[str, Any]]:
    """The workflow's incidents and unlinked performed rollbacks whose window (see the module
    docstring) overlaps [start, end): id, kind (incident | rollback), release, title, began,
    window_from, window_to (datetimes)."""
    replay_end = _midnight(end)
    out: list[dict[str, Any]] = []
    incident_ids = set()
    for iid, release, title, began, closed in con.execute(
        "SELECT incident_id, release, title, coalesce(started_at, opened_at), closed_at FROM incidents "
        "WHERE workflow = ? ORDER BY 4, 1", [workflow]).fetchall():
        incident_ids.add(iid)
        stop = min(closed or replay_end, began + timedelta(days=incident_days))
        out.append({"id": iid, "kind": "incident", "release": release, "title": title, "began": began,
                    "window_from": began - timedelta(days=lead_days), "window_to": max(stop, began)})
    for rid, release, began, linked in con.execute(
        "SELECT rollback_id, from_release, coalesce(flipped_at, recorded_at), incident_id FROM rollbacks "
        "WHERE workflow = ? AND performed ORDER BY 3, 1", [workflow]).fetchall():
        if linked in incident_ids:
            continue
        out.append({"id": rid, "kind": "rollback", "release": release, "title": f"rollback of {release}",
                    "began": began, "window_from": began - timedelta(days=lead_days), "window_to": began})
    lo = _midnight(start)
    return [p for p in out if p["window_to"] >= lo and p["window_from"] < replay_end]


def _problems_of_day(day: date, problems: list[dict[str, Any]]) -> list[str]:
    lo, hi = _midnight(day), _midnight(day) + timedelta(days=1)
    return [p["id"] for p in problems if hi > p["window_from"] and lo <= p["window_to"]]


def _count(fired: list[tuple[date, float, str | None]], problems: list[dict[str, Any]], days: int) -> dict[str, Any]:
    useful: list[dict[str, Any]] = []
    noise: list[dict[str, Any]] = []
    caught: set[str] = set()
    for day, value, release in fired:
        hit = _problems_of_day(day, problems)
        (useful if hit else noise).append({"day": day.isoformat(), "value": value, "release": release,
                                            "problems": hit})
        caught.update(hit)
    per_month = DAYS_PER_MONTH / days if days else 0.0
    return {
        "firings": len(fired), "useful": len(useful), "noise": len(noise),
        "firings_per_month": round(len(fired) * per_month, 2), "noise_per_month": round(len(noise) * per_month, 2),
        "caught": sorted(caught), "useful_days": useful, "noise_days": noise,
    }


def _fires(rule: AlertRule, threshold: float, value: float) -> bool:
    return value > threshold if rule.above is not None else value < threshold


def _nice(threshold: float, limit: float | None, above: bool) -> float:
    """The number with the fewest significant digits in [threshold, limit) (above) or
    (limit, threshold] (below): the same firings on the history, easier to read."""
    if threshold == 0 or not math.isfinite(threshold):
        return threshold
    mag = math.floor(math.log10(abs(threshold)))
    for digits in range(1, 8):
        step = 10.0 ** (mag - digits + 1)
        r = (math.ceil(threshold / step - 1e-9) if above else math.floor(threshold / step + 1e-9)) * step
        r = round(r, max(0, -(mag - digits + 1)) + 2)
        if (limit is None or (r < limit if above else r > limit)) and ((r >= threshold) if above else (r <= threshold)):
            return r
    return threshold


def _search(rule: AlertRule, values: list[tuple[date, float, str | None]], problems: list[dict[str, Any]],
            days: int, budget: float, must_catch: set[str]) -> dict[str, Any]:
    """The threshold closest to the current one whose noise fits the budget (see the module doc)."""
    above = rule.above is not None
    t0 = rule.threshold
    cands = sorted({v for _, v, _ in values if (v >= t0 if above else v <= t0)} | {t0}, reverse=not above)

    def at(t: float) -> dict[str, Any]:
        return _count([x for x in values if _fires(rule, t, x[1])], problems, days)

    chosen = None
    for t in cands:
        c = at(t)
        if c["noise_per_month"] <= budget:
            chosen = (t, c)
            break
    if chosen is None:  # cannot happen (the last candidate fires nowhere), kept for safety
        return {"status": "impossible", "threshold": None, "counts": None}
    t, c = chosen
    if must_catch <= set(c["caught"]):
        others = [v for _, v, _ in values if (v > t if above else v < t)]
        limit = (min(others) if above else max(others)) if others else None
        nice = _nice(t, limit, above)
        return {"status": "proposed", "threshold": nice, "counts": at(nice)}
    # Quietest threshold that still catches every incident the current one caught.
    best = (t0, at(t0))
    for t in cands:
        c = at(t)
        if not must_catch <= set(c["caught"]):
            break
        best = (t, c)
    return {"status": "impossible", "threshold": best[0], "counts": best[1]}


def _drift_counts(con, workflow: str, start: date, end: date, problems: list[dict[str, Any]]) -> dict[str, Any]:
    rows = con.execute(
        "SELECT DISTINCT CAST(period_end - INTERVAL 1 DAY AS DATE) AS day, granularity, severity FROM drift_summaries "
        "WHERE workflow = ? AND release = '*' AND granularity IN ('rolling', 'daily') AND status = 'drift' "
        "AND period_end - INTERVAL 1 DAY >= ? AND period_end - INTERVAL 1 DAY < ? ORDER BY 1",
        [workflow, start, end]).fetchall()
    by_sev: dict[str, int] = {}
    days = sorted({r[0] for r in rows})
    for _, _, sev in rows:
        by_sev[sev or "none"] = by_sev.get(sev or "none", 0) + 1
    useful = [d for d in days if _problems_of_day(d, problems)]
    return {"drifted_days": len(days), "by_severity": by_sev, "useful": len(useful),
            "noise": len(days) - len(useful), "first_day": days[0].isoformat() if days else None,
            "last_day": days[-1].isoformat() if days else None,
            "granularities": sorted({r[1] for r in rows})}


def calibrate(
    con: duckdb.DuckDBPyConnection,
    workflow: str,
    *,
    start: date,
    end: date,
    budget_per_month: float = 1.0,
    lead_days: int = 3,
    incident_days: int = 3,
    rules: AlertRules | None = None,
) -> dict[str, Any]:
    """Replay [start, end) through the workflow's current rules (or `rules`) and propose
    thresholds for the rules over budget. JSON-ready result:

    {workflow, start, end, days, budget_per_month, lead_days, incident_days, rules_version,
     problems: [{id, kind, release, title, began, window_from, window_to}],
     rules: [{name, signal, direction, threshold, min_traces, per_release, status (within_budget |
              proposed | impossible | no_data), proposed_threshold, before: counts, after: counts,
              lost: [problem ids], note}],
     caught_before, caught_after (problem ids caught by any rule), proposed_rules (configs of
     every rule after the change), changed (bool), drift: counts}

    counts = {firings, useful, noise, firings_per_month, noise_per_month, caught, useful_days,
    noise_days}."""
    if end <= start:
        raise RulesError(f"calibration needs start < end, got {start} .. {end}")
    current = rules if rules is not None else current_alert_rules(con, workflow)
    signals = day_signals(con, workflow, start, end)
    n_days = (end - start).days
    problems = problem_windows(con, workflow, start=start, end=end, lead_days=lead_days, incident_days=incident_days)
    results, new_rules = [], []
    caught_before: set[str] = set()
    caught_after: set[str] = set()
    for rule in current.rules:
        values = []
        for day in sorted(signals):
            v, _, rel = rule_value(rule, signals[day])
            if v is not None:
                values.append((day, float(v), rel))
        fired = [(f.day, f.value, f.release) for f in
                 (firing_for(workflow, rule, day, signals[day]) for day in sorted(signals)) if f is not None]
        before = _count(fired, problems, n_days)
        res: dict[str, Any] = {
            "name": rule.name, "signal": rule.signal, "direction": rule.direction, "threshold": rule.threshold,
            "min_traces": rule.min_traces, "min_feedback": rule.min_feedback, "per_release": rule.per_release,
            "days_judged": len(values), "before": before, "after": before, "proposed_threshold": None, "lost": [],
        }
        new_rule = rule
        if not values:
            res.update(status="no_data", note="no day had enough traces (or feedback) to judge this rule")
        elif before["noise_per_month"] <= budget_per_month:
            res.update(status="within_budget", note=f"{before['noise_per_month']:g} noise alerts per month, "
                                                    f"budget {budget_per_month:g}")
        else:
            found = _search(rule, values, problems, n_days, budget_per_month, set(before["caught"]))
            if found["status"] == "proposed":
                new_rule = rule.with_threshold(found["threshold"])
                res.update(status="proposed", proposed_threshold=found["threshold"], after=found["counts"],
                           note=(f"{rule.direction} {rule.threshold:g} → {found['threshold']:g}: noise "
                                 f"{before['noise_per_month']:g} → {found['counts']['noise_per_month']:g} per month, "
                                 f"still catches {len(found['counts']['caught'])} of the {len(before['caught'])} "
                                 "problems it caught" + ("" if before["caught"] else
                                                         " (it caught none: this only quiets it)")))
            else:
                t = found["threshold"]
                c = found["counts"]
                res.update(status="impossible", after=before,
                           note=(f"no threshold brings noise within {budget_per_month:g} per month and still catches "
                                 f"{', '.join(before['caught'])}; the quietest that catches them all is "
                                 f"{rule.direction} {t:g} with {c['noise_per_month']:g} noise per month. "
                                 "Consider per_release, min_traces or another signal."))
        caught_before.update(before["caught"])
        caught_after.update(res["after"]["caught"])
        new_rules.append(new_rule)
        results.append(res)
    return {
        "workflow": workflow, "start": start.isoformat(), "end": end.isoformat(), "days": n_days,
        "days_with_signals": len(signals), "budget_per_month": budget_per_month, "lead_days": lead_days,
        "incident_days": incident_days, "rules_version": current.version,
        "problems": [{**p, **{k: p[k].isoformat(timespec="seconds") for k in ("began", "window_from", "window_to")}}
                     for p in problems],
        "rules": results, "caught_before": sorted(caught_before), "caught_after": sorted(caught_after),
        "proposed_rules": rules_config(new_rules)["rules"],
        "changed": any(r["status"] == "proposed" for r in results),
        "drift": _drift_counts(con, workflow, start, end, problems),
    }


def render_calibration_markdown(cal: Mapping[str, Any]) -> str:
    """The calibration as a markdown report: alerts per rule before and after on the history,
    the problems, the drift alert counts. Every value is escaped."""
    wf = cal["workflow"]
    lines = [f"# Alert calibration: {escape_md(wf)}", "",
             f"History replayed: {escape_md(cal['start'])} to {escape_md(cal['end'])} (exclusive), {cal['days']} days "
             f"({cal['days_with_signals']} with signals), rules version {cal['rules_version']}. Budget: "
             f"{cal['budget_per_month']:g} noise alerts per rule per 30 days. A firing is useful when it comes at most "
             f"{cal['lead_days']} days before a problem began or during its first {cal['incident_days']} days.", "",
             "## Alerts per rule, before and after", ""]
    rows = []
    for r in cal["rules"]:
        b, a = r["before"], r["after"]
        after_t = r["proposed_threshold"] if r["proposed_threshold"] is not None else r["threshold"]
        rows.append([r["name"], f"{r['signal']} {r['direction']} {r['threshold']:g}",
                     f"{r['direction']} {after_t:g}", r["status"], b["firings"], b["useful"], b["noise"],
                     b["noise_per_month"], a["firings"], a["useful"], a["noise"], a["noise_per_month"],
                     ", ".join(b["caught"]) or "-", ", ".join(a["caught"]) or "-"])
    lines.append(md_table(["rule", "before", "after", "status", "fired", "useful", "noise", "noise/month",
                           "fired after", "useful after", "noise after", "noise/month after", "caught before",
                           "caught after"], rows))
    lines += ["", "## Notes", ""]
    lines += [f"- **{escape_md(r['name'])}**: {escape_md(r.get('note', ''))}" for r in cal["rules"]] or ["- no rules"]
    lines += ["", "## Problems in the history", ""]
    lines.append(md_table(["id", "kind", "release", "title", "began", "window"],
                          [[p["id"], p["kind"], p["release"] or "-", p["title"], p["began"],
                            f"{p['window_from']} .. {p['window_to']}"] for p in cal["problems"]]))
    d = cal["drift"]
    lines += ["", "## Drift alerts (counted, not calibrated)", "",
              f"{d['drifted_days']} drifted days ({escape_md(', '.join(f'{k} {v}' for k, v in d['by_severity'].items()) or 'none')}); "
              f"{d['useful']} overlapped a problem, {d['noise']} did not."]
    noisy_days = [[r["name"], x["day"], x["value"], x["release"] or "*"] for r in cal["rules"]
                  for x in r["before"]["noise_days"]]
    lines += ["", "## Noise firings before the change", "",
              md_table(["rule", "day", "value", "release"], noisy_days)]
    return "\n".join(lines) + "\n"


def propose_alert_calibration(
    con: duckdb.DuckDBPyConnection,
    workflow: str,
    *,
    period: str,
    now: datetime | None = None,
    days: int = 90,
    budget_per_month: float = 1.0,
    lead_days: int = 3,
    incident_days: int = 3,
    dagster_run_id: str | None = None,
) -> store.Proposal | None:
    """Calibrate the workflow's current rules over the last `days` days of signals up to
    `now` and record a draft (kind "alert_rules", base_version = the current rules version,
    payload {"rules": every rule after the change}, evidence = the calibration, a markdown
    report). None when no rules are recorded, there are no signals, or no rule needs a change.
    Returns the proposal (store.create_proposal); its evidence is the calibration."""
    now = now or _now()
    current = current_alert_rules(con, workflow)
    if not current.rules:
        return None
    first, last = fetch_one(con.execute("SELECT min(day), max(day) FROM daily_signals WHERE workflow = ?", [workflow]))
    if first is None:
        return None
    end = min(now.date(), last) + timedelta(days=1)
    start = max(first, end - timedelta(days=days))
    if end <= start:
        return None
    cal = calibrate(con, workflow, start=start, end=end, budget_per_month=budget_per_month, lead_days=lead_days,
                    incident_days=incident_days, rules=current)
    if not cal["changed"]:
        return None
    changed = [r for r in cal["rules"] if r["status"] == "proposed"]
    title = f"{workflow}: recalibrate " + ", ".join(
        f"{r['name']} {r['direction']} {r['threshold']:g} -> {r['proposed_threshold']:g}" for r in changed)
    row = store.create_proposal(
        con, kind="alert_rules", workflow=workflow, period=period, title=title,
        payload={"rules": cal["proposed_rules"]}, evidence=cal, base_version=str(current.version),
        report_md=render_calibration_markdown(cal), dagster_run_id=dagster_run_id)
    return row


def accept_alert_calibration(
    con: duckdb.DuckDBPyConnection, proposal_id: str, *, by: str, reason: str | None = None
) -> dict[str, Any]:
    """Record the proposal's rules as the workflow's next rules version (author `by`) and mark
    the draft accepted, in one transaction. Refuses (ProposalError) when the proposal is not an
    alert_rules draft or the rules version moved since it was made (re-propose).
    Returns {proposal_id, workflow, version, rules}."""
    if not isinstance(by, str) or not by.strip():
        raise store.ProposalError("accepting a proposal needs who (--by NAME)")
    with audit.transaction(con):
        row = store.require_draft(con, proposal_id, "alert_rules")
        workflow = row["workflow"]
        current = current_alert_rules(con, workflow)
        if str(current.version) != str(row["base_version"]):
            raise store.ProposalError(
                f"proposal {proposal_id} was made on alert rules version {row['base_version']} but {workflow} is now "
                f"at version {current.version}: re-run the calibration for a new proposal")
        why = (reason or "").strip() or "accepted as proposed"
        new = record_alert_rules(con, workflow, row["payload"]["rules"], author=by,
                                 reason=f"calibration {proposal_id}: {why}")
        store.mark_accepted(con, proposal_id, by=by, reason=why, result_version=str(new.version), kind="alert_rules")
    return {"proposal_id": proposal_id, "workflow": workflow, "version": new.version,
            "rules": rules_config(new.rules)["rules"]}
