"""Gather a week's stability memo from the warehouse (see the package docstring).

Two clocks, on purpose:
- signals (traffic, errors, latency, cost, refusals, feedback, online scores, review labels,
  drift) are by TRACE time: the Monday..Sunday `week` and the week before;
- operations (gate decisions, approvals, rollouts, rollbacks, incidents, alerts, canary
  analyses) are by RECORDED time in [ops_from, ops_to): what release operations did since the
  previous memo. Historical traces can be loaded long after they happened, and operations on
  them happen when they are recorded.

Signals come from `trace_features` (one row per trace), so p50/p95 latency are quantiles over
the week's traces. When a workflow has no trace_features rows in the two weeks (features not
computed), they come from `daily_signals` instead, and `signals.source` says so: latency is then
the traffic-weighted mean of the daily quantiles (an approximation) and the refusal rate is per
LLM call rather than per trace.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from relops_pipeline.lib.memo.fixes import recommend_fixes

SERIES_WEEKS = 8
NOISE_WINDOW = timedelta(days=3)
OPEN_INCIDENT_MAX_AGE_DAYS = 7.0
METRICS = ("traces", "errors", "error_rate", "latency_p50_ms", "latency_p95_ms", "cost_usd", "cost_per_trace",
           "refusals", "refusal_rate", "feedback_n", "feedback_mean")
# Rates are compared in points (absolute difference); the rest relative as well.
RATE_METRICS = ("error_rate", "refusal_rate", "feedback_mean")


def week_start(day: date) -> date:
    """The Monday of the week holding `day`."""
    if isinstance(day, datetime):
        day = day.date()
    return day - timedelta(days=day.weekday())


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    return value


def _num(value: Any) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    f = float(value)
    return None if math.isnan(f) or math.isinf(f) else f


def _json(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        return value
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def _rows(con, sql: str, params: list | None = None) -> list[dict[str, Any]]:
    cur = con.execute(sql, params or [])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=False)) for r in cur.fetchall()]


def change(cur: Any, prev: Any) -> dict[str, Any]:
    """{delta, pct}: cur - prev, and the relative change (None when prev is 0 or missing)."""
    if cur is None or prev is None:
        return {"delta": None, "pct": None}
    delta = cur - prev
    pct = (delta / prev) if prev else None
    return {"delta": _num(delta), "pct": _num(pct)}


# ---------------------------------------------------------------------------------------------
# Signals


def _has_features(con, workflow: str, start: date, end: date) -> bool:
    return con.execute(
        "SELECT count(*) FROM trace_features WHERE workflow = ? AND day >= ? AND day < ?", [workflow, start, end]
    ).fetchone()[0] > 0


def _signals_tf(con, workflow: str, start: date, end: date) -> dict[str | None, dict[str, Any]]:
    """{release (None = whole workflow): metrics} from trace_features."""
    rows = _rows(con, """
        SELECT CASE WHEN grouping(release) = 1 THEN NULL ELSE release END AS rel,
               grouping(release) AS g,
               count(*) AS traces,
               count(*) FILTER (WHERE is_error) AS errors,
               quantile_cont(latency_ms, 0.5) AS latency_p50_ms,
               quantile_cont(latency_ms, 0.95) AS latency_p95_ms,
               sum(cost_usd) AS cost_usd,
               count(*) FILTER (WHERE is_refusal) AS refusals,
               count(feedback) AS feedback_n,
               avg(feedback) AS feedback_mean
        FROM trace_features WHERE workflow = ? AND day >= ? AND day < ?
        GROUP BY GROUPING SETS ((release), ())
    """, [workflow, start, end])
    out: dict[str | None, dict[str, Any]] = {}
    for r in rows:
        traces = int(r["traces"])
        if not traces:  # the empty grouping set still yields a row
            continue
        m: dict[str, Any] = {
            "traces": traces, "errors": int(r["errors"]),
            "error_rate": r["errors"] / traces if traces else None,
            "latency_p50_ms": _num(r["latency_p50_ms"]), "latency_p95_ms": _num(r["latency_p95_ms"]),
            "cost_usd": _num(r["cost_usd"]),
            "cost_per_trace": _num(r["cost_usd"] / traces) if r["cost_usd"] is not None and traces else None,
            "refusals": int(r["refusals"]), "refusal_rate": r["refusals"] / traces if traces else None,
            "feedback_n": int(r["feedback_n"]), "feedback_mean": _num(r["feedback_mean"]),
            "online_scores": {},
        }
        out[None if r["g"] else r["rel"]] = m
    scores = _rows(con, """
        SELECT CASE WHEN grouping(t.release) = 1 THEN NULL ELSE t.release END AS rel, grouping(t.release) AS g,
               e.key AS name, avg(CAST(e.value AS DOUBLE)) AS mean, count(*) AS n
        FROM trace_features t, json_each(t.online_scores) AS e
        WHERE t.workflow = ? AND t.day >= ? AND t.day < ? AND t.online_scores IS NOT NULL
          AND e.type IN ('UBIGINT', 'BIGINT', 'DOUBLE')
        GROUP BY GROUPING SETS ((t.release, e.key), (e.key))
    """, [workflow, start, end])
    for s in scores:
        key = None if s["g"] else s["rel"]
        if key in out:
            out[key]["online_scores"][s["name"]] = {"mean": _num(s["mean"]), "n": int(s["n"])}
    return out


def _signals_daily(con, workflow: str, start: date, end: date) -> dict[str | None, dict[str, Any]]:
    """The same metrics from daily_signals (latency: traffic-weighted daily quantiles)."""
    rows = _rows(con, """
        SELECT CASE WHEN grouping(release) = 1 THEN NULL ELSE release END AS rel, grouping(release) AS g,
               sum(traces) AS traces,
               sum(round(coalesce(error_rate, 0) * traces)) AS failed,
               sum(latency_p50_ms * traces) / nullif(sum(traces) FILTER (WHERE latency_p50_ms IS NOT NULL), 0) AS p50,
               sum(latency_p95_ms * traces) / nullif(sum(traces) FILTER (WHERE latency_p95_ms IS NOT NULL), 0) AS p95,
               sum(cost_usd) AS cost_usd,
               sum(refusals) AS refusals, sum(llm_calls) AS llm_calls,
               sum(feedback_n) AS feedback_n,
               sum(feedback_mean * feedback_n) / nullif(sum(feedback_n), 0) AS feedback_mean
        FROM daily_signals WHERE workflow = ? AND day >= ? AND day < ?
        GROUP BY GROUPING SETS ((release), ())
    """, [workflow, start, end])
    out: dict[str | None, dict[str, Any]] = {}
    for r in rows:
        traces = int(r["traces"] or 0)
        if not traces:
            continue
        llm = int(r["llm_calls"] or 0)
        out[None if r["g"] else r["rel"]] = {
            "traces": traces, "errors": int(r["failed"] or 0), "error_rate": (r["failed"] or 0) / traces,
            "latency_p50_ms": _num(r["p50"]), "latency_p95_ms": _num(r["p95"]),
            "cost_usd": _num(r["cost_usd"]),
            "cost_per_trace": _num(r["cost_usd"] / traces) if r["cost_usd"] is not None else None,
            "refusals": int(r["refusals"] or 0), "refusal_rate": (r["refusals"] or 0) / llm if llm else None,
            "feedback_n": int(r["feedback_n"] or 0), "feedback_mean": _num(r["feedback_mean"]),
            "online_scores": {},
        }
    scores = _rows(con, """
        SELECT d.release AS rel, e.key AS name, sum(CAST(e.value AS DOUBLE) * d.traces) AS wsum, sum(d.traces) AS n
        FROM daily_signals d, json_each(d.online_scores) AS e
        WHERE d.workflow = ? AND d.day >= ? AND d.day < ? AND e.type IN ('UBIGINT', 'BIGINT', 'DOUBLE')
        GROUP BY d.release, e.key
    """, [workflow, start, end])
    totals: dict[str, list[float]] = {}
    for s in scores:
        if s["rel"] in out and s["n"]:
            out[s["rel"]]["online_scores"][s["name"]] = {"mean": _num(s["wsum"] / s["n"]), "n": int(s["n"])}
        acc = totals.setdefault(s["name"], [0.0, 0])
        acc[0] += s["wsum"] or 0.0
        acc[1] += s["n"] or 0
    if None in out:
        out[None]["online_scores"] = {k: {"mean": _num(w / n), "n": int(n)} for k, (w, n) in totals.items() if n}
    return out


def _compare(cur: dict[str, Any] | None, prev: dict[str, Any] | None) -> dict[str, Any]:
    cur, prev = cur or {}, prev or {}
    out = {m: change(cur.get(m), prev.get(m)) for m in METRICS}
    names = sorted(set(cur.get("online_scores", {})) | set(prev.get("online_scores", {})))
    out["online_scores"] = {
        n: change((cur.get("online_scores", {}).get(n) or {}).get("mean"),
                  (prev.get("online_scores", {}).get(n) or {}).get("mean"))
        for n in names
    }
    return out


def _labels(con, workflow: str, week: date) -> dict[str, Any]:
    """Human review labels on the week's traces (latest per trace, reviewer and name)."""
    rows = _rows(con, """
        WITH latest AS (
            SELECT * FROM trace_labels WHERE workflow = ?
            QUALIFY row_number() OVER (PARTITION BY trace_id, reviewer, name ORDER BY imported_at DESC, label_id DESC) = 1
        ),
        tf AS (SELECT trace_id, min(day) AS day FROM trace_features WHERE workflow = ? GROUP BY trace_id)
        SELECT coalesce(l.release, 'unknown') AS rel, l.label, l.is_failure, l.value
        FROM latest l
        LEFT JOIN review_samples rs ON rs.sample_id = l.sample_id
        LEFT JOIN tf ON tf.trace_id = l.trace_id
        WHERE coalesce(rs.week, CAST(date_trunc('week', tf.day) AS DATE)) = ?
    """, [workflow, workflow, week])

    def summarise(items: list[dict[str, Any]]) -> dict[str, Any]:
        n = len(items)
        fails = sum(1 for r in items if r["is_failure"])
        values = [r["value"] for r in items if r["value"] is not None]
        return {
            "n": n, "fail": fails, "pass": sum(1 for r in items if (r["label"] or "").lower() == "pass"),
            "unsure": sum(1 for r in items if (r["label"] or "").lower() == "unsure"),
            "fail_rate": fails / n if n else None, "mean_value": _num(sum(values) / len(values)) if values else None,
        }

    by_release: dict[str, list] = {}
    for r in rows:
        by_release.setdefault(r["rel"], []).append(r)
    return {**summarise(rows), "by_release": {k: summarise(v) for k, v in sorted(by_release.items())}}


def _series(con, workflow: str, start: date, end: date, use_features: bool) -> dict[str, Any]:
    """Daily traces, p95 latency and error rate over [start, end) for the charts."""
    if use_features:
        rows = _rows(con, """
            SELECT day, count(*) AS traces, quantile_cont(latency_ms, 0.95) AS p95,
                   avg(CASE WHEN is_error THEN 1.0 ELSE 0.0 END) AS err
            FROM trace_features WHERE workflow = ? AND day >= ? AND day < ? GROUP BY day
        """, [workflow, start, end])
    else:
        rows = _rows(con, """
            SELECT day, sum(traces) AS traces,
                   sum(latency_p95_ms * traces) / nullif(sum(traces) FILTER (WHERE latency_p95_ms IS NOT NULL), 0) AS p95,
                   sum(coalesce(error_rate, 0) * traces) / nullif(sum(traces), 0) AS err
            FROM daily_signals WHERE workflow = ? AND day >= ? AND day < ? GROUP BY day
        """, [workflow, start, end])
    by_day = {r["day"]: r for r in rows}
    days = [start + timedelta(days=i) for i in range((end - start).days)]
    return {
        "days": [d.isoformat() for d in days],
        "traces": [int(by_day[d]["traces"]) if d in by_day else 0 for d in days],
        "latency_p95_ms": [_num(by_day[d]["p95"]) if d in by_day else None for d in days],
        "error_rate": [_num(by_day[d]["err"]) if d in by_day else None for d in days],
    }


# ---------------------------------------------------------------------------------------------
# Drift


def _drift(con, workflow: str, week: date) -> dict[str, Any]:
    rows = _rows(con, """
        SELECT period_start, period_end, status, severity, columns_tested, columns_drifted, drifted_share,
               critical_drifted, cur_rows, ref_rows, report_path
        FROM drift_summaries WHERE granularity = 'weekly' AND release = '*' AND workflow = ? AND period_start <= ?
        ORDER BY period_start DESC, computed_at DESC
    """, [workflow, week])
    latest: dict[date, dict[str, Any]] = {}
    for r in rows:
        latest.setdefault(r["period_start"], r)
    this = latest.get(week)
    if this is None:
        return {"computed": False, "status": None, "message": f"no weekly drift summary for the week of {week}"}
    out = {
        "computed": True, "status": this["status"], "severity": this["severity"],
        "columns_tested": int(this["columns_tested"]), "columns_drifted": int(this["columns_drifted"]),
        "drifted_share": _num(this["drifted_share"]), "critical_drifted": _json(this["critical_drifted"]) or [],
        "cur_rows": int(this["cur_rows"]), "ref_rows": int(this["ref_rows"]), "report_path": this["report_path"],
        "since": None, "weeks": 0,
    }
    if this["status"] == "drift":
        since, n, d = week, 0, week
        while d in latest and latest[d]["status"] == "drift":
            since, n, d = d, n + 1, d - timedelta(days=7)
        out["since"], out["weeks"] = since.isoformat(), n
        out["message"] = f"drift since the week of {since.isoformat()} ({n} week{'s' if n != 1 else ''})"
    else:
        out["message"] = f"drift status {this['status']} ({this['columns_drifted']} of {this['columns_tested']} columns)"
    return out


# ---------------------------------------------------------------------------------------------
# Operations in [ops_from, ops_to)


def _version_of(release_key: str | None) -> str | None:
    return release_key.split("--", 1)[1] if release_key and "--" in release_key else release_key


def _gates(con, workflow: str, ops_from: datetime, ops_to: datetime) -> tuple[list, list]:
    gates = _rows(con, """
        SELECT gate_id, release_key, version, decision, baseline_version, suite_version, thresholds_version,
               reasons, decided_at
        FROM gate_decisions WHERE workflow = ? AND decided_at >= ? AND decided_at < ? ORDER BY decided_at, gate_id
    """, [workflow, ops_from, ops_to])
    events = _rows(con, """
        SELECT seq, ts, actor, kind, release_key, reason, payload FROM events
        WHERE workflow = ? AND kind IN ('approval', 'override', 'refused') AND ts >= ? AND ts < ? ORDER BY seq
    """, [workflow, ops_from, ops_to])
    decisions = [{
        "gate_id": g["gate_id"], "release": g["version"], "decision": g["decision"],
        "baseline": g["baseline_version"], "suite_version": g["suite_version"],
        "thresholds_version": g["thresholds_version"], "reasons": _json(g["reasons"]) or [],
        "decided_at": _iso(g["decided_at"]),
    } for g in gates]
    approvals = []
    for e in events:
        p = _json(e["payload"]) or {}
        approvals.append({
            "seq": int(e["seq"]), "kind": e["kind"], "actor": e["actor"], "release": _version_of(e["release_key"]),
            "gate_id": p.get("gate_id"), "decision": p.get("decision"), "reason": e["reason"], "at": _iso(e["ts"]),
        })
    return decisions, approvals


def _rollouts(con, workflow: str, ops_from: datetime, ops_to: datetime) -> tuple[list, list]:
    events = _rows(con, """
        SELECT seq, ts, actor, release_key, reason, payload FROM events
        WHERE workflow = ? AND kind = 'rollout' AND ts >= ? AND ts < ? ORDER BY seq
    """, [workflow, ops_from, ops_to])
    rollouts = []
    for e in events:
        p = _json(e["payload"]) or {}
        rollouts.append({
            "seq": int(e["seq"]), "release": _version_of(e["release_key"]), "stage": p.get("stage"),
            "percent": _num(p.get("percent")), "live_after": (p.get("after") or {}).get("live"),
            "gate_decision": p.get("gate_decision"), "override": bool(p.get("override")),
            "actor": e["actor"], "reason": e["reason"], "at": _iso(e["ts"]),
        })
    rbs = _rows(con, """
        SELECT rollback_id, from_release, to_release, trigger, reason, automatic, performed, time_to_rollback_s,
               alert_id, incident_id, actor, recorded_at
        FROM rollbacks WHERE workflow = ? AND recorded_at >= ? AND recorded_at < ? ORDER BY recorded_at, rollback_id
    """, [workflow, ops_from, ops_to])
    rollbacks = [{
        "rollback_id": r["rollback_id"], "from": r["from_release"], "to": r["to_release"], "trigger": r["trigger"],
        "reason": r["reason"], "automatic": bool(r["automatic"]), "performed": bool(r["performed"]),
        "time_to_rollback_s": _num(r["time_to_rollback_s"]), "alert_id": r["alert_id"],
        "incident_id": r["incident_id"], "actor": r["actor"], "at": _iso(r["recorded_at"]),
    } for r in rbs]
    return rollouts, rollbacks


def _incident_row(r: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {
        "incident_id": r["incident_id"], "release": r["release"], "title": r["title"], "status": r["status"],
        "source": r["source"], "opened_by": r["opened_by"], "opened_at": _iso(r["opened_at"]),
        "started_at": _iso(r.get("started_at")), "closed_by": r["closed_by"], "closed_at": _iso(r["closed_at"]),
        "resolution": r["resolution"],
        "age_days": _num((now - r["opened_at"]) / timedelta(days=1)) if r["status"] == "open" else None,
    }


def _incidents(con, workflow: str, ops_from: datetime, ops_to: datetime) -> dict[str, list]:
    rows = _rows(con, """
        SELECT incident_id, release, title, status, source, opened_by, opened_at, started_at, closed_by, closed_at,
               resolution
        FROM incidents WHERE workflow = ? AND opened_at < ? ORDER BY opened_at, incident_id
    """, [workflow, ops_to])
    opened = [_incident_row(r, ops_to) for r in rows if ops_from <= r["opened_at"] < ops_to]
    closed = [_incident_row(r, ops_to) for r in rows
              if r["closed_at"] is not None and ops_from <= r["closed_at"] < ops_to]
    # Open as of ops_to: not closed, or closed only after the window.
    still_open = []
    for r in rows:
        if r["closed_at"] is None or r["closed_at"] >= ops_to:
            row = _incident_row({**r, "status": "open"}, ops_to)
            still_open.append(row)
    return {"opened": opened, "closed": closed, "open": still_open}


def _alerts(con, workflow: str, ops_from: datetime, ops_to: datetime) -> dict[str, Any]:
    """Alerts created in the window, each judged: `actionable` (linked to, or followed within 3
    days by, an incident or a rollback of the workflow), `suppressed` (a duplicate inside the
    cool-down), `noisy` (neither), or `undecided` (younger than 3 days at ops_to, nothing yet)."""
    rows = _rows(con, """
        SELECT a.alert_id, a.dedup_key, a.kind, a.severity, a.title, a.release, a.status, a.suppressed_by,
               a.created_at,
               EXISTS (SELECT 1 FROM rollbacks r WHERE r.alert_id = a.alert_id)
                 OR EXISTS (SELECT 1 FROM incidents i WHERE i.workflow = a.workflow
                            AND contains(CAST(i.links AS VARCHAR), a.alert_id)) AS linked,
               EXISTS (SELECT 1 FROM incidents i WHERE i.workflow = a.workflow
                       AND i.opened_at >= a.created_at AND i.opened_at <= a.created_at + INTERVAL 3 DAY)
                 OR EXISTS (SELECT 1 FROM rollbacks r WHERE r.workflow = a.workflow AND r.performed
                            AND r.recorded_at >= a.created_at AND r.recorded_at <= a.created_at + INTERVAL 3 DAY)
                 AS followed
        FROM alert_outbox a WHERE a.workflow = ? AND a.created_at >= ? AND a.created_at < ?
        ORDER BY a.created_at, a.alert_id
    """, [workflow, ops_from, ops_to])
    items = []
    for r in rows:
        if r["status"] == "suppressed" or r["suppressed_by"]:
            verdict = "suppressed"
        elif r["linked"] or r["followed"]:
            verdict = "actionable"
        elif r["created_at"] + NOISE_WINDOW > ops_to:
            verdict = "undecided"
        else:
            verdict = "noisy"
        items.append({
            "alert_id": r["alert_id"], "kind": r["kind"], "severity": r["severity"], "title": r["title"],
            "release": r["release"], "status": r["status"], "dedup_key": r["dedup_key"],
            "suppressed_by": r["suppressed_by"], "created_at": _iso(r["created_at"]), "verdict": verdict,
        })

    def count(key: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in items:
            out[i[key]] = out.get(i[key], 0) + 1
        return dict(sorted(out.items()))

    noisy_by_kind: dict[str, int] = {}
    for i in items:
        if i["verdict"] in ("noisy", "suppressed"):
            noisy_by_kind[i["kind"]] = noisy_by_kind.get(i["kind"], 0) + 1
    return {
        "total": len(items), "by_kind": count("kind"), "by_severity": count("severity"),
        "by_status": count("status"), "by_verdict": count("verdict"),
        "noisy": sum(1 for i in items if i["verdict"] == "noisy"),
        "suppressed": sum(1 for i in items if i["verdict"] == "suppressed"),
        "noisy_by_kind": dict(sorted(noisy_by_kind.items())), "items": items,
    }


def _canaries(con, workflow: str, ops_from: datetime, ops_to: datetime) -> list[dict[str, Any]]:
    rows = _rows(con, """
        SELECT c.analysis_id, c.canary, c.baseline, c.verdict, c.score, c.consecutive_failures, c.window_start,
               c.window_end, c.computed_at, c.result,
               EXISTS (SELECT 1 FROM rollbacks r WHERE r.workflow = c.workflow AND r.from_release = c.canary
                       AND r.performed) AS rolled_back
        FROM canary_analyses c WHERE c.workflow = ? AND c.computed_at >= ? AND c.computed_at < ?
        ORDER BY c.computed_at, c.analysis_id
    """, [workflow, ops_from, ops_to])
    out = []
    for r in rows:
        result = _json(r["result"]) or {}
        out.append({
            "analysis_id": r["analysis_id"], "canary": r["canary"], "baseline": r["baseline"], "verdict": r["verdict"],
            "score": _num(r["score"]), "consecutive_failures": int(r["consecutive_failures"]),
            "window_start": _iso(r["window_start"]), "window_end": _iso(r["window_end"]),
            "computed_at": _iso(r["computed_at"]), "reasons": list(result.get("reasons") or [])[:5],
            "rolled_back": bool(r["rolled_back"]),
        })
    return out


def _manifest_change(con, workflow: str, release: str) -> str | None:
    """A one-line summary of what the release's manifest diff says changed (model, parameters,
    prompts, retrieval, tools); None when unknown."""
    row = con.execute("SELECT diff FROM releases WHERE workflow = ? AND version = ?", [workflow, release]).fetchone()
    diff = _json(row[0]) if row else None
    if not isinstance(diff, dict) or not diff.get("known"):
        return None
    parts = []
    model = diff.get("model")
    if isinstance(model, dict):
        parts.append(f"model {model.get('from')} → {model.get('to')}")
    for section in ("parameters", "retrieval"):
        d = diff.get(section) or {}
        if isinstance(d, dict):
            changed = [f"{k} {v.get('from')} → {v.get('to')}" for k, v in (d.get("changed") or {}).items()
                       if isinstance(v, dict)]
            changed += [f"+{k}" for k in (d.get("added") or {})] + [f"-{k}" for k in (d.get("removed") or {})]
            if changed:
                parts.append(f"{section}: " + ", ".join(changed))
    prompts = [k for k, v in (diff.get("prompts") or {}).items() if isinstance(v, dict) and v.get("status")]
    if prompts:
        parts.append("prompts changed: " + ", ".join(sorted(prompts)))
    tools = diff.get("tools") or {}
    if isinstance(tools, dict) and any(tools.get(k) for k in ("added", "removed", "changed")):
        parts.append("tools changed")
    return "; ".join(parts) if parts else "no manifest change recorded"


def _eval_evidence(con, workflow: str, releases: list[str]) -> dict[str, int]:
    """Valid eval runs per release."""
    if not releases:
        return {}
    rows = con.execute(
        "SELECT version, count(*) FILTER (WHERE valid) FROM eval_runs WHERE workflow = ? "
        "AND version IN (SELECT unnest(?::VARCHAR[])) GROUP BY version",
        [workflow, releases],
    ).fetchall()
    have = {r[0]: int(r[1]) for r in rows}
    return {r: have.get(r, 0) for r in releases}


# ---------------------------------------------------------------------------------------------
# The memo


def _workflows(con, prev: date, end: date, ops_from: datetime, ops_to: datetime) -> list[str]:
    rows = con.execute("""
        SELECT workflow FROM trace_features WHERE day >= $p AND day < $e
        UNION SELECT workflow FROM daily_signals WHERE day >= $p AND day < $e AND traces > 0
        UNION SELECT workflow FROM gate_decisions WHERE decided_at >= $f AND decided_at < $t
        UNION SELECT workflow FROM events WHERE workflow IS NOT NULL AND ts >= $f AND ts < $t
        UNION SELECT workflow FROM rollbacks WHERE recorded_at >= $f AND recorded_at < $t
        UNION SELECT workflow FROM incidents WHERE (opened_at >= $f AND opened_at < $t)
                                              OR (closed_at >= $f AND closed_at < $t)
        UNION SELECT workflow FROM alert_outbox WHERE workflow IS NOT NULL AND created_at >= $f AND created_at < $t
        UNION SELECT workflow FROM canary_analyses WHERE computed_at >= $f AND computed_at < $t
    """, {"p": prev, "e": end, "f": ops_from, "t": ops_to}).fetchall()
    return sorted(r[0] for r in rows if r[0] is not None)


def build_memo(
    con,
    week: date,
    *,
    ops_from: datetime,
    ops_to: datetime,
    home=None,
) -> dict[str, Any]:
    """The stability memo for the Monday..Sunday week holding `week` (JSON-ready dict).

    Signals are by trace time (the week and the week before); operations by recorded time in
    [ops_from, ops_to) (naive UTC). `home` (a lib.home.Home or None) only makes report paths
    relative to the memo's folder. See the module docstring for the sources."""
    if ops_to < ops_from:
        raise ValueError(f"ops window reversed: ops_from {ops_from} is after ops_to {ops_to}")
    week = week_start(week)
    end = week + timedelta(days=7)
    prev = week - timedelta(days=7)
    series_start = end - timedelta(days=7 * SERIES_WEEKS)
    from relops_pipeline.lib.drills import drill_status  # heavy import chain (registry); only here

    workflows: list[dict[str, Any]] = []
    for wf in _workflows(con, prev, end, ops_from, ops_to):
        use_tf = _has_features(con, wf, prev, end) or not con.execute(
            "SELECT count(*) FROM daily_signals WHERE workflow = ? AND day >= ? AND day < ?", [wf, prev, end]
        ).fetchone()[0]
        get = _signals_tf if use_tf else _signals_daily
        cur, before = get(con, wf, week, end), get(con, wf, prev, week)
        rel_names = sorted({r for r in cur if r is not None} | {r for r in before if r is not None})
        releases = [{
            "release": r, "week": cur.get(r), "previous": before.get(r), "change": _compare(cur.get(r), before.get(r)),
            "first_seen_this_week": r in cur and r not in before,
            "manifest_change": _manifest_change(con, wf, r) if r != "unknown" else None,
            "rolled_back_at": _iso(con.execute(
                "SELECT min(recorded_at) FROM rollbacks WHERE workflow = ? AND from_release = ? AND performed",
                [wf, r]).fetchone()[0]),
        } for r in rel_names]
        releases.sort(key=lambda x: (-(x["week"] or {}).get("traces", 0), x["release"]))
        gates, approvals = _gates(con, wf, ops_from, ops_to)
        rollouts, rollbacks = _rollouts(con, wf, ops_from, ops_to)
        known = [r for r in cur if r not in (None, "unknown")]
        reg = con.execute("SELECT count(*) FROM registry_state WHERE workflow = ?", [wf]).fetchone()[0]
        item: dict[str, Any] = {
            "workflow": wf,
            "traffic": None in cur,
            "traffic_previous": None in before,
            "signals": {
                "source": "trace_features" if use_tf else "daily_signals",
                "week": cur.get(None), "previous": before.get(None), "change": _compare(cur.get(None), before.get(None)),
            },
            "releases": releases,
            "labels": _labels(con, wf, week),
            "series": _series(con, wf, series_start, end, use_tf),
            "drift": _drift(con, wf, week),
            "gates": gates,
            "approvals": approvals,
            "rollouts": rollouts,
            "rollbacks": rollbacks,
            "canaries": _canaries(con, wf, ops_from, ops_to),
            "incidents": _incidents(con, wf, ops_from, ops_to),
            "alerts": _alerts(con, wf, ops_from, ops_to),
            "eval_runs": _eval_evidence(con, wf, sorted(known)),
            "drill": None,
            "has_registry": bool(reg),
        }
        if reg or con.execute("SELECT count(*) FROM drills WHERE workflow = ?", [wf]).fetchone()[0]:
            ds = drill_status(con, wf, now=ops_to)
            item["drill"] = {"status": ds["status"], "message": ds["message"], "age_days": _num(ds["age_days"])}
        workflows.append(item)

    memo: dict[str, Any] = {
        "kind": "stability_memo",
        "week": week.isoformat(),
        "week_end": (end - timedelta(days=1)).isoformat(),
        "previous_week": prev.isoformat(),
        "series_start": series_start.isoformat(),
        "ops_from": _iso(ops_from),
        "ops_to": _iso(ops_to),
        "workflows": workflows,
    }
    fixes = recommend_fixes(memo)
    for w in workflows:
        w["fixes"] = [f["rank"] for f in fixes if f["workflow"] == w["workflow"]]
    memo["fixes"] = fixes
    memo["summary"] = {
        "workflows": len(workflows),
        "with_traffic": sum(1 for w in workflows if w["traffic"]),
        "traces": sum((w["signals"]["week"] or {}).get("traces", 0) for w in workflows),
        "gate_decisions": sum(len(w["gates"]) for w in workflows),
        "blocked": sum(1 for w in workflows for g in w["gates"] if g["decision"] == "BLOCK"),
        "rollouts": sum(len(w["rollouts"]) for w in workflows),
        "rollbacks": sum(len(w["rollbacks"]) for w in workflows),
        "blocked_releases": sorted({f"{w['workflow']} {g['release']}" for w in workflows for g in w["gates"]
                                    if g["decision"] == "BLOCK"}),
        "rollback_list": [{"workflow": w["workflow"], "from": r["from"], "to": r["to"], "trigger": r["trigger"],
                           "performed": r["performed"], "time_to_rollback_s": r["time_to_rollback_s"]}
                          for w in workflows for r in w["rollbacks"]],
        "drifting": [f"{w['workflow']}: {w['drift']['message']}" for w in workflows
                     if w["drift"].get("status") == "drift"],
        "incidents_opened": sum(len(w["incidents"]["opened"]) for w in workflows),
        "incidents_closed": sum(len(w["incidents"]["closed"]) for w in workflows),
        "incidents_open": sum(len(w["incidents"]["open"]) for w in workflows),
        "alerts": sum(w["alerts"]["total"] for w in workflows),
        "noisy_alerts": sum(w["alerts"]["noisy"] + w["alerts"]["suppressed"] for w in workflows),
        "fixes": len(fixes),
    }
    memo["no_traffic"] = memo["summary"]["with_traffic"] == 0
    if home is not None:
        for w in workflows:
            w["drift"]["report_link"] = _relative_link(home, w["drift"].get("report_path"))
    return memo


def _relative_link(home, path: str | None) -> str | None:
    """A report path as a link relative to <home>/reports/memos/ (None outside the reports)."""
    if not path:
        return None
    try:
        rel = Path(path).resolve().relative_to(Path(home.reports_dir).resolve())
    except ValueError:
        return None
    return "../" + rel.as_posix()
