"""Recommended fixes for the stability memo: rule-based, ranked by impact, each tied to evidence.

Every rule reads only the memo's own numbers (so the evidence shown is the evidence used), and
names the rows they came from. Causes are never invented: a release or a drift that only shares
the timing of a regression "coincides with" it; a manifest diff says what changed, not why
production got worse.

Ranking: severity first (critical > high > medium > low), then `score`, a rough impact in
[0, 1+] (share of the workflow's traffic affected x size of the change).

Rules (thresholds are module constants):
- release_regression: a release is worse than the incumbent release in the SAME week (p95
  latency, error rate, refusal rate, cost per trace, feedback) — the fairest comparison;
- workflow_regression: the workflow is worse than the week before (for metrics no
  release_regression already explains);
- canary_failed: a failing canary analysis in the ops window (critical when not rolled back);
- drift_without_incident: drift of a critical column with no incident open or opened;
- drill: the rollback drill is failed, stale or never run;
- incident_open_too_long: an open incident older than 7 days;
- noisy_alerts: alerts not followed by an incident or rollback within 3 days, and suppressed
  duplicates, per alert kind;
- no_eval_evidence: a release serving traffic with no valid eval run;
- unknown_release: traces without release identifiers (> 1 % of the week's traces);
- review_failures: human review labels failing >= 10 % of the week's labelled traces.
"""

from __future__ import annotations

from typing import Any

MIN_TRACES = 30
MIN_FEEDBACK = 20
MIN_LABELS = 5
LATENCY_PCT = 0.20
COST_PCT = 0.20
RATE_POINTS = 0.01  # error/refusal rate: at least +1 point ...
RATE_RATIO = 1.5  # ... and at least 1.5x
FEEDBACK_DROP = 0.05
UNKNOWN_SHARE = 0.01
LABEL_FAIL_RATE = 0.10
NOISY_MIN = 1
OPEN_INCIDENT_DAYS = 7.0

SHIFT_POINTS = 0.10  # a release whose traffic share grew by 10 points or more "coincides with" a change

SEVERITY_RANK = {"critical": 3, "high": 2, "medium": 1, "low": 0}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.0f} %"


def _rate(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.1f} %"


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f} ms"


def _usd(x: float | None) -> str:
    return "n/a" if x is None else f"${x:.5f}"


def _fmt(metric: str, v: float | None) -> str:
    if metric in ("error_rate", "refusal_rate"):
        return _rate(v)
    if metric == "cost_per_trace":
        return _usd(v)
    if metric.endswith("_ms"):
        return _ms(v)
    return "n/a" if v is None else f"{v:.3f}"


def traffic_shifts(w: dict[str, Any]) -> list[dict[str, Any]]:
    """Each release's share of the workflow's traces this week and the week before, largest
    gain first: the release mix explains many week-over-week changes of a workflow."""
    cur_total = (w["signals"]["week"] or {}).get("traces", 0)
    prev_total = (w["signals"]["previous"] or {}).get("traces", 0)
    out = []
    for r in w["releases"]:
        c = (r["week"] or {}).get("traces", 0) / cur_total if cur_total else 0.0
        p = (r["previous"] or {}).get("traces", 0) / prev_total if prev_total else 0.0
        out.append({"release": r["release"], "current": c, "previous": p, "delta": c - p,
                    "manifest_change": r.get("manifest_change") if r["first_seen_this_week"] else None,
                    "metrics": {k: v for k, v in (r["week"] or {}).items() if k != "online_scores"}})
    out.sort(key=lambda s: (-s["delta"], s["release"]))
    return out


def regressions(cur: dict[str, Any] | None, base: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The metrics on which `cur` is worse than `base` beyond the thresholds, each as
    {metric, current, baseline, change, text, magnitude}. Needs MIN_TRACES on both sides."""
    if not cur or not base or cur.get("traces", 0) < MIN_TRACES or base.get("traces", 0) < MIN_TRACES:
        return []
    out = []

    def rel(metric: str, limit: float, label: str, fmt) -> None:
        c, b = cur.get(metric), base.get(metric)
        if c is None or not b:
            return
        pct = (c - b) / b
        if pct >= limit:
            out.append({"metric": metric, "current": c, "baseline": b, "change_pct": pct,
                        "text": f"{label} {_pct(pct)} ({fmt(b)} → {fmt(c)})", "magnitude": pct})

    def rate(metric: str, label: str) -> None:
        c, b = cur.get(metric), base.get(metric)
        if c is None or b is None:
            return
        if c - b >= RATE_POINTS and (b == 0 or c / b >= RATE_RATIO):
            out.append({"metric": metric, "current": c, "baseline": b, "change_points": c - b,
                        "text": f"{label} {_rate(b)} → {_rate(c)}", "magnitude": min(1.0, (c - b) * 10)})

    rel("latency_p95_ms", LATENCY_PCT, "p95 latency", _ms)
    rate("error_rate", "error rate")
    rate("refusal_rate", "refusal rate")
    rel("cost_per_trace", COST_PCT, "cost per trace", _usd)
    c, b = cur.get("feedback_mean"), base.get("feedback_mean")
    if (c is not None and b is not None and cur.get("feedback_n", 0) >= MIN_FEEDBACK
            and base.get("feedback_n", 0) >= MIN_FEEDBACK and b - c >= FEEDBACK_DROP):
        out.append({"metric": "feedback_mean", "current": c, "baseline": b, "change_points": c - b,
                    "text": f"feedback {b:.2f} → {c:.2f} (n {base['feedback_n']} → {cur['feedback_n']})",
                    "magnitude": min(1.0, (b - c) * 5)})
    return out


def _severity_of(regs: list[dict[str, Any]]) -> str:
    big = any(r.get("change_pct", 0) >= 0.30 or r.get("change_points", 0) >= 0.02
              or (r["metric"] == "feedback_mean" and r.get("change_points", 0) <= -0.10) for r in regs)
    return "high" if big else "medium"


def _incumbent(w: dict[str, Any]) -> dict[str, Any] | None:
    """The release that served the most traffic this week among those that also served the
    week before (else the week's biggest)."""
    rels = [r for r in w["releases"] if r["release"] != "unknown" and r["week"]]
    both = [r for r in rels if r["previous"]]
    pool = both or rels
    return max(pool, key=lambda r: (r["week"]["traces"], r["release"])) if pool else None


def _workflow_fixes(w: dict[str, Any], memo: dict[str, Any]) -> list[dict[str, Any]]:
    wf = w["workflow"]
    week = memo["week"]
    fixes: list[dict[str, Any]] = []
    total = (w["signals"]["week"] or {}).get("traces", 0)

    def add(rule: str, severity: str, score: float, title: str, detail: str, evidence: dict, release=None):
        fixes.append({"rule": rule, "severity": severity, "score": round(float(score), 4), "workflow": wf,
                      "release": release, "title": title, "detail": detail, "evidence": evidence})

    # Release vs incumbent, same week.
    explained: set[str] = set()
    inc = _incumbent(w)
    if inc is not None:
        for r in w["releases"]:
            if r is inc or r["release"] == "unknown" or not r["week"]:
                continue
            regs = regressions(r["week"], inc["week"])
            if not regs:
                continue
            explained.update(x["metric"] for x in regs)
            share = r["week"]["traces"] / total if total else 0.0
            rolled = r.get("rolled_back_at")
            what = "; ".join(x["text"] for x in regs)
            detail = (f"{r['release']} ({r['week']['traces']} traces, {share * 100:.0f} % of the week) against "
                      f"{inc['release']} ({inc['week']['traces']} traces) over the same week: {what}.")
            if r.get("manifest_change"):
                detail += f" Its manifest diff: {r['manifest_change']} (coincides with; not a proven cause)."
            detail += (f" It was rolled back at {rolled}." if rolled
                       else " Compare the two releases' slowest/failed traces before widening it.")
            sev = "medium" if rolled else _severity_of(regs)
            add("release_regression", sev, share * max(x["magnitude"] for x in regs) + (0 if rolled else 0.5),
                f"{wf} {r['release']} is worse than {inc['release']}: {what}", detail,
                {"release": r["release"], "baseline_release": inc["release"], "regressions": regs,
                 "manifest_change": r.get("manifest_change"), "rolled_back_at": rolled,
                 "source": [{"table": "trace_features", "workflow": wf, "week": week,
                             "releases": [r["release"], inc["release"]]},
                            {"table": "releases", "workflow": wf, "version": r["release"]}]},
                release=r["release"])

    # Workflow week over week.
    regs = [x for x in regressions(w["signals"]["week"], w["signals"]["previous"]) if x["metric"] not in explained]
    if regs:
        shifts = traffic_shifts(w)
        new = [r for r in w["releases"] if r["first_seen_this_week"] and r["release"] != "unknown"]
        what = "; ".join(x["text"] for x in regs)
        detail = f"{wf} over all releases, week of {week} against the week of {memo['previous_week']}: {what}."
        gained = [s for s in shifts if s["delta"] >= SHIFT_POINTS]
        if gained:
            detail += " Coincides with traffic moving to " + ", ".join(
                f"{s['release']} (share {s['previous'] * 100:.0f} % → {s['current'] * 100:.0f} %"
                + "".join(f"; its {x['metric'].replace('_', ' ')} {_fmt(x['metric'], s['metrics'].get(x['metric']))}"
                          for x in regs)
                + (f"; manifest: {s['manifest_change']}" if s["manifest_change"] else "") + ")"
                for s in gained) + "."
        elif new:
            detail += " Coincides with release(s) first serving this week: " + ", ".join(
                f"{r['release']} ({r['manifest_change'] or 'manifest unknown'})" for r in new) + "."
        else:
            detail += " The release mix did not change much: no release change coincides with it."
        if w["drift"].get("status") == "drift":
            detail += f" Coincides with input drift ({w['drift']['message']})."
        add("workflow_regression", _severity_of(regs), max(x["magnitude"] for x in regs),
            f"{wf}: {what} week over week", detail,
            {"regressions": regs, "new_releases": [r["release"] for r in new], "traffic_shifts": shifts,
             "source": [{"table": w["signals"]["source"], "workflow": wf,
                         "weeks": [memo["previous_week"], week]}]})

    # Failing canaries.
    for c in w["canaries"]:
        if c["verdict"] != "fail":
            continue
        # The gate in force when the canary was judged (a later re-gate does not count).
        gates = [g for g in w["gates"] if g["release"] == c["canary"] and g["decided_at"] <= c["computed_at"]]
        shipped = gates and gates[-1]["decision"] == "SHIP"
        if not c["rolled_back"]:
            add("canary_failed", "critical", 2.0, f"canary {c['canary']} is failing and has not been rolled back",
                f"Canary analysis {c['analysis_id']} ({c['window_start']} to {c['window_end']}) failed against "
                f"{c['baseline']}: {'; '.join(c['reasons'][:3])}. Roll it back (relops rollback {wf}) or "
                "stop its ramp.",
                {"analysis_id": c["analysis_id"], "reasons": c["reasons"], "score": c["score"],
                 "source": [{"table": "canary_analyses", "analysis_id": c["analysis_id"]}]}, release=c["canary"])
        else:
            add("canary_failed", "medium" if shipped else "low", 0.6 if shipped else 0.2,
                f"canary {c['canary']} failed in production"
                + (" after its gate said SHIP: the eval suite misses what the canary caught" if shipped else ""),
                f"Canary analysis {c['analysis_id']} failed ({'; '.join(c['reasons'][:3])}) and {c['canary']} was "
                "rolled back." + (f" Its gate decision {gates[-1]['gate_id']} was SHIP: add cases covering the "
                                  "failure (incident traces → suite proposal)." if shipped else ""),
                {"analysis_id": c["analysis_id"], "reasons": c["reasons"],
                 "gate_id": gates[-1]["gate_id"] if gates else None,
                 "source": [{"table": "canary_analyses", "analysis_id": c["analysis_id"]},
                            {"table": "gate_decisions", "gate_id": gates[-1]["gate_id"] if gates else None}]},
                release=c["canary"])

    # Critical drift without an incident.
    d = w["drift"]
    if d.get("status") == "drift" and d.get("critical_drifted"):
        incidents = w["incidents"]["open"] + w["incidents"]["opened"]
        if not incidents:
            cols = ", ".join(map(str, d["critical_drifted"]))
            add("drift_without_incident", "high", 0.5 + 0.1 * d.get("weeks", 1),
                f"{wf}: critical column(s) {cols} drifted, {d['message']}, and no incident tracks it",
                f"Weekly drift ({d['columns_drifted']} of {d['columns_tested']} columns, severity {d['severity']}) "
                "with no open incident: open one, check the review sample for the drifted inputs, and refresh "
                "the drift reference once the change is understood and accepted.",
                {"since": d.get("since"), "weeks": d.get("weeks"), "critical_drifted": d["critical_drifted"],
                 "columns_drifted": d["columns_drifted"], "columns_tested": d["columns_tested"],
                 "source": [{"table": "drift_summaries", "granularity": "weekly", "release": "*", "workflow": wf,
                             "period_start": week}]})

    # Drills.
    dr = w.get("drill")
    if dr and dr["status"] != "ok":
        sev = "high" if dr["status"] == "failed" else "medium"
        add("drill", sev, 0.4, f"{wf}: rollback drill {dr['status']}", dr["message"],
            {"status": dr["status"], "age_days": dr["age_days"],
             "source": [{"table": "drills", "workflow": wf}]})

    # Incidents open too long.
    for i in w["incidents"]["open"]:
        if (i["age_days"] or 0) > OPEN_INCIDENT_DAYS:
            add("incident_open_too_long", "high" if i["age_days"] > 2 * OPEN_INCIDENT_DAYS else "medium",
                min(1.0, i["age_days"] / 30), f"incident {i['incident_id']} open for {i['age_days']:.0f} days",
                f"\"{i['title']}\" (release {i['release'] or '-'}, opened {i['opened_at']} by {i['opened_by']}) is "
                "still open: close it with a resolution or escalate.",
                {"incident_id": i["incident_id"], "age_days": i["age_days"],
                 "source": [{"table": "incidents", "incident_id": i["incident_id"]}]}, release=i["release"])

    # Noisy alerts.
    a = w["alerts"]
    for kind, n in a["noisy_by_kind"].items():
        if n < NOISY_MIN:
            continue
        ids = [x["alert_id"] for x in a["items"] if x["kind"] == kind and x["verdict"] in ("noisy", "suppressed")]
        sup = sum(1 for x in a["items"] if x["kind"] == kind and x["verdict"] == "suppressed")
        add("noisy_alerts", "medium" if n >= 3 else "low", min(1.0, n / 10),
            f"{wf}: {n} noisy '{kind}' alert(s)",
            f"{n - sup} alert(s) of kind {kind} were not followed by an incident or rollback within 3 days and "
            f"{sup} were suppressed duplicates: tune the rule (alert calibration) or lower its severity.",
            {"kind": kind, "noisy": n - sup, "suppressed": sup, "alert_ids": ids[:20],
             "source": [{"table": "alert_outbox", "alert_ids": ids[:20]}]})

    # Releases without eval evidence.
    for rel, n in w["eval_runs"].items():
        if n:
            continue
        traces = next((r["week"]["traces"] for r in w["releases"] if r["release"] == rel and r["week"]), 0)
        share = traces / total if total else 0.0
        add("no_eval_evidence", "high" if share >= 0.10 else "medium", share,
            f"{wf} {rel} serves traffic without eval evidence",
            f"{rel} served {traces} traces ({share * 100:.0f} %) this week and has no valid eval run: run "
            f"`relops eval {wf} {rel}` and gate it.",
            {"release": rel, "traces": traces, "share": share,
             "source": [{"table": "eval_runs", "workflow": wf, "version": rel}]}, release=rel)

    # Traces without release identifiers.
    unknown = next((r for r in w["releases"] if r["release"] == "unknown" and r["week"]), None)
    if unknown and total:
        share = unknown["week"]["traces"] / total
        if share > UNKNOWN_SHARE:
            add("unknown_release", "medium" if share > 0.05 else "low", share,
                f"{wf}: {share * 100:.1f} % of traces carry no release identifier",
                f"{unknown['week']['traces']} of {total} traces this week have release 'unknown': their "
                "regressions cannot be attributed. Set service.version / relops.release on every exporter "
                "(batch jobs included).",
                {"traces": unknown["week"]["traces"], "total": total, "share": share,
                 "source": [{"table": w["signals"]["source"], "workflow": wf, "release": "unknown", "week": week}]})

    # Human review failures.
    lab = w["labels"]
    if lab["n"] >= MIN_LABELS and (lab["fail_rate"] or 0) >= LABEL_FAIL_RATE:
        add("review_failures", "medium", lab["fail_rate"],
            f"{wf}: reviewers failed {lab['fail']} of {lab['n']} sampled traces ({lab['fail_rate'] * 100:.0f} %)",
            "Read the failed samples' notes; failures with an incident become suite cases.",
            {"n": lab["n"], "fail": lab["fail"], "by_release": lab["by_release"],
             "source": [{"table": "trace_labels", "workflow": wf, "week": week}]})
    return fixes


def recommend_fixes(memo: dict[str, Any]) -> list[dict[str, Any]]:
    """All workflows' fixes, ranked (severity, then score), numbered from 1 in `rank`."""
    fixes = [f for w in memo["workflows"] for f in _workflow_fixes(w, memo)]
    fixes.sort(key=lambda f: (-SEVERITY_RANK[f["severity"]], -f["score"], f["workflow"], f["rule"],
                              f["release"] or ""))
    for i, f in enumerate(fixes, 1):
        f["rank"] = i
    return fixes
