"""Markdown and self-contained HTML for the stability memo.

Both renderers walk the same list of blocks (`_blocks`), which holds RAW text; each renderer
escapes every piece of it (markdown: lib.markdown.escape_md / md_table; HTML: html.escape), so
a release name, an incident title or a gate reason written by a model or a user can never
become markup. The HTML adds inline SVG charts (daily traces, p95 latency, error rate over the
last 8 weeks); no JavaScript, no external resources.
"""

from __future__ import annotations

import html
from typing import Any

from relops_pipeline.lib.markdown import escape_md, html_page, md_table, safe_url

SEVERITY_COLOURS = {"critical": "#82071e", "high": "#cf222e", "medium": "#9a6700", "low": "#57606a"}
DECISION_COLOURS = {"SHIP": "#1a7f37", "BLOCK": "#cf222e", "REVIEW": "#9a6700"}


# ---------------------------------------------------------------------------------------------
# Value formatting (raw text; escaped by the renderers)


def fmt_value(metric: str, v: Any) -> str:
    if v is None:
        return "–"
    if metric in ("error_rate", "refusal_rate", "fail_rate", "share"):
        return f"{v * 100:.2f} %"
    if metric.endswith("_ms"):
        return f"{v:,.0f} ms"
    if metric == "cost_usd":
        return f"${v:,.2f}"
    if metric == "cost_per_trace":
        return f"${v:.5f}"
    if metric in ("feedback_mean",) or metric.startswith("score:"):
        return f"{v:.3f}"
    if isinstance(v, float):
        return f"{v:,.4g}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def fmt_change(metric: str, ch: dict[str, Any] | None) -> str:
    if not ch or ch.get("delta") is None:
        return "–"
    d, p = ch["delta"], ch.get("pct")
    if metric in ("error_rate", "refusal_rate"):
        return f"{d * 100:+.2f} pts"
    if metric == "feedback_mean" or metric.startswith("score:"):
        return f"{d:+.3f}"
    if p is None:
        return f"{d:+,.4g}"
    return f"{p * 100:+.1f} %"


_SIGNAL_ROWS = (
    ("traces", "traces"), ("errors", "failed traces"), ("error_rate", "error rate"),
    ("latency_p50_ms", "latency p50"), ("latency_p95_ms", "latency p95"), ("cost_usd", "cost (total)"),
    ("cost_per_trace", "cost per trace"), ("refusal_rate", "refusal rate"), ("feedback_mean", "feedback mean"),
    ("feedback_n", "feedback n"),
)


# ---------------------------------------------------------------------------------------------
# Blocks: ("h", level, text) ("p", text) ("ul", [text]) ("fixes", [fix]) ("table", headers, rows)
# ("chart", series) ("link", label, url)


def _signal_table(sig: dict[str, Any]) -> tuple:
    cur, prev, chg = sig.get("week") or {}, sig.get("previous") or {}, sig.get("change") or {}
    rows = [[label, fmt_value(m, cur.get(m)), fmt_value(m, prev.get(m)), fmt_change(m, chg.get(m))]
            for m, label in _SIGNAL_ROWS]
    for name in sorted(set(cur.get("online_scores", {})) | set(prev.get("online_scores", {}))):
        c = (cur.get("online_scores", {}).get(name) or {}).get("mean")
        p = (prev.get("online_scores", {}).get(name) or {}).get("mean")
        rows.append([f"online score {name}", fmt_value("score:", c), fmt_value("score:", p),
                     fmt_change("score:", (chg.get("online_scores") or {}).get(name))])
    return ("table", ["signal", "this week", "previous week", "change"], rows)


def _release_table(w: dict[str, Any]) -> tuple:
    rows = []
    for r in w["releases"]:
        cur, chg = r["week"] or {}, r["change"]
        notes = []
        if r["first_seen_this_week"]:
            notes.append("new this week")
        if not r["week"]:
            notes.append("no traffic this week")
        if r.get("rolled_back_at"):
            notes.append(f"rolled back {r['rolled_back_at']}")
        if r.get("manifest_change") and r["first_seen_this_week"]:
            notes.append(r["manifest_change"])
        scores = ", ".join(f"{k} {v['mean']:.3f}" for k, v in sorted(cur.get("online_scores", {}).items())
                           if v.get("mean") is not None)
        fb = (f"{cur['feedback_mean']:.3f} (n {cur['feedback_n']})" if cur.get("feedback_mean") is not None
              else "–")
        rows.append([
            r["release"], fmt_value("traces", cur.get("traces", 0)),
            fmt_value("error_rate", cur.get("error_rate")), fmt_value("latency_p50_ms", cur.get("latency_p50_ms")),
            fmt_value("latency_p95_ms", cur.get("latency_p95_ms")),
            fmt_change("latency_p95_ms", chg.get("latency_p95_ms")),
            fmt_value("cost_per_trace", cur.get("cost_per_trace")), fmt_value("refusal_rate", cur.get("refusal_rate")),
            fb, scores or "–", "; ".join(notes) or "–",
        ])
    return ("table", ["release", "traces", "error rate", "p50", "p95", "p95 vs prev. week", "cost/trace",
                      "refusal rate", "feedback", "online scores", "notes"], rows)


def _fix_line(f: dict[str, Any]) -> dict[str, str]:
    src = []
    for s in f["evidence"].get("source", []):
        src.append(s.get("table", "?") + "(" + ", ".join(
            f"{k}={v if not isinstance(v, list) else '/'.join(map(str, v))}" for k, v in s.items()
            if k != "table" and v is not None) + ")")
    return {"severity": f["severity"], "title": f["title"], "detail": f["detail"],
            "evidence": "; ".join(src)}


def _workflow_blocks(w: dict[str, Any], memo: dict[str, Any]) -> list:
    b: list = [("h", 2, f"Workflow {w['workflow']}")]
    week = memo["week"]
    if not w["traffic"]:
        prev_n = (w["signals"]["previous"] or {}).get("traces", 0)
        b.append(("p", f"No traffic in the week of {week}" + (f" ({prev_n} traces the week before)." if prev_n
                                                               else " (none the week before either).")))
    else:
        src = w["signals"]["source"]
        b.append(("p", f"Signals from {src} by trace time."
                  + (" Latency is the traffic-weighted mean of daily quantiles (approximate); refusal rate per LLM "
                     "call." if src == "daily_signals" else " Latency quantiles over the week's traces.")))
    b.append(("chart", w["workflow"], w["series"]))
    if w["traffic"] or w["traffic_previous"]:
        b += [("h", 3, "Signals, week over week"), _signal_table(w["signals"]),
              ("h", 3, "Per release"), _release_table(w)]
    lab = w["labels"]
    if lab["n"]:
        b += [("h", 3, "Human review labels"),
              ("p", f"{lab['n']} labelled traces: {lab['pass']} pass, {lab['fail']} fail, {lab['unsure']} unsure"
                    + (f" (fail rate {lab['fail_rate'] * 100:.0f} %)." if lab["fail_rate"] is not None else "."))]
        b.append(("table", ["release", "labelled", "pass", "fail", "unsure"],
                  [[k, v["n"], v["pass"], v["fail"], v["unsure"]] for k, v in lab["by_release"].items()]))

    d = w["drift"]
    b.append(("h", 3, "Drift"))
    if not d["computed"]:
        b.append(("p", d["message"] + "."))
    else:
        line = (f"Status {d['status']}" + (f", severity {d['severity']}" if d.get("severity") else "")
                + f": {d['columns_drifted']} of {d['columns_tested']} columns drifted"
                + (f"; critical: {', '.join(map(str, d['critical_drifted']))}" if d["critical_drifted"] else "")
                + f" ({d['cur_rows']} traces against a reference of {d['ref_rows']}).")
        b.append(("p", line))
        if d.get("since"):
            b.append(("p", d["message"].capitalize() + "."))
        if d.get("report_link"):
            b.append(("link", "drift report", d["report_link"]))

    b.append(("h", 3, "Gates and decisions"))
    b.append(("table", ["decided at", "release", "decision", "baseline", "reasons"],
              [[g["decided_at"], g["release"], g["decision"], g["baseline"] or "–",
                (g["reasons"][0] if g["reasons"] else "–") + (f" (+{len(g['reasons']) - 1} more)"
                                                              if len(g["reasons"]) > 1 else "")]
               for g in w["gates"]]))
    if w["approvals"]:
        b.append(("ul", [f"{a['at']} {a['kind']}" + (f" of {a['release']}" if a["release"] else "")
                         + (f" ({a['decision']})" if a["decision"] else "") + f" by {a['actor']}: {a['reason']}"
                         for a in w["approvals"]]))

    b.append(("h", 3, "Rollouts and rollbacks"))
    b.append(("table", ["at", "release", "stage", "percent", "live after", "gate", "by"],
              [[r["at"], r["release"], r["stage"] or "–", fmt_value("p", r["percent"]), r["live_after"] or "–",
                (r["gate_decision"] or "–") + (" (override)" if r["override"] else ""), r["actor"]]
               for r in w["rollouts"]]))
    if w["rollbacks"]:
        b.append(("table", ["at", "from → to", "trigger", "automatic", "performed", "time to rollback", "reason"],
                  [[r["at"], f"{r['from'] or '-'} → {r['to'] or '-'}", r["trigger"], "yes" if r["automatic"] else "no",
                    "yes" if r["performed"] else "no",
                    f"{r['time_to_rollback_s']:.1f} s" if r["time_to_rollback_s"] is not None else "–", r["reason"]]
                   for r in w["rollbacks"]]))
    if w["canaries"]:
        b.append(("h", 3, "Canary analyses"))
        b.append(("table", ["computed at", "canary", "baseline", "verdict", "window", "rolled back", "reasons"],
                  [[c["computed_at"], c["canary"], c["baseline"], c["verdict"],
                    f"{c['window_start']} – {c['window_end']}", "yes" if c["rolled_back"] else "no",
                    "; ".join(c["reasons"][:2]) or "–"] for c in w["canaries"]]))

    inc = w["incidents"]
    b.append(("h", 3, "Incidents"))
    b.append(("p", f"{len(inc['opened'])} opened, {len(inc['closed'])} closed in the window; "
                   f"{len(inc['open'])} open at its end."))
    rows: dict[Any, dict[str, Any]] = {}
    for kind in ("opened", "closed", "open"):
        for i in inc[kind]:
            rows.setdefault(i["incident_id"], i)
    if rows:
        b.append(("table", ["incident", "release", "title", "source", "opened", "closed", "status"],
                  [[i["incident_id"], i["release"] or "–", i["title"], i["source"], i["opened_at"],
                    i["closed_at"] or "–",
                    i["status"] + (f" ({i['age_days']:.0f} d)" if i.get("age_days") is not None else "")]
                   for i in rows.values()]))

    a = w["alerts"]
    b.append(("h", 3, "Alerts"))
    if not a["total"]:
        b.append(("p", "No alerts in the window."))
    else:
        def fmt(d: dict) -> str:
            return ", ".join(f"{k} {v}" for k, v in d.items())
        b.append(("ul", [f"{a['total']} alerts: by kind {fmt(a['by_kind'])}; by severity {fmt(a['by_severity'])}; "
                         f"by status {fmt(a['by_status'])}",
                         f"noisy (no incident or rollback within 3 days): {a['noisy']}; suppressed duplicates: "
                         f"{a['suppressed']}; judged: {fmt(a['by_verdict'])}"]))
        b.append(("table", ["created", "kind", "severity", "title", "status", "verdict"],
                  [[x["created_at"], x["kind"], x["severity"], x["title"], x["status"], x["verdict"]]
                   for x in a["items"][:30]]))
    if w.get("drill"):
        b += [("h", 3, "Rollback drill"), ("p", w["drill"]["message"])]
    return b


def _blocks(memo: dict[str, Any]) -> list:
    s = memo["summary"]
    b: list = [
        ("h", 1, f"Stability memo — week of {memo['week']}"),
        ("p", f"Signals by trace time: Monday {memo['week']} to Sunday {memo['week_end']}, compared with the week of "
              f"{memo['previous_week']}. Operations as recorded from {memo['ops_from']} to {memo['ops_to']} UTC."),
    ]
    if memo["no_traffic"]:
        b.append(("p", f"No traffic in the week of {memo['week']}: no workflow has traces between {memo['week']} and "
                       f"{memo['week_end']}."))
    rollbacks = "; ".join(
        f"{r['workflow']} {r['from'] or '-'} → {r['to'] or '-'} ({r['trigger']}"
        + (f", {r['time_to_rollback_s']:.1f} s to roll back" if r["time_to_rollback_s"] is not None else "")
        + ("" if r["performed"] else ", not performed") + ")" for r in s["rollback_list"])
    b += [("h", 2, "Summary"), ("ul", [
        f"{s['traces']:,} traces from {s['with_traffic']} of {s['workflows']} workflow(s)",
        f"{s['gate_decisions']} gate decision(s), {s['blocked']} BLOCK"
        + (f" ({', '.join(s['blocked_releases'])})" if s["blocked_releases"] else ""),
        f"{s['rollouts']} rollout step(s), {s['rollbacks']} rollback(s)" + (f": {rollbacks}" if rollbacks else ""),
        *s["drifting"],
        f"incidents: {s['incidents_opened']} opened, {s['incidents_closed']} closed, {s['incidents_open']} open",
        f"{s['alerts']} alert(s), {s['noisy_alerts']} noisy or suppressed",
    ])]
    b += [("h", 2, "Recommended fixes, by impact")]
    if memo["fixes"]:
        b.append(("fixes", [_fix_line(f) for f in memo["fixes"]]))
        b.append(("p", "Rule-based: a release or drift that only shares the timing of a change \"coincides with\" "
                       "it; the memo does not claim causes."))
    else:
        b.append(("p", "Nothing to fix: no rule fired."))
    for w in memo["workflows"]:
        b += _workflow_blocks(w, memo)
    return b


# ---------------------------------------------------------------------------------------------
# Markdown


def render_markdown(memo: dict[str, Any]) -> str:
    """The memo as markdown; every value is escaped."""
    out: list[str] = []
    for blk in _blocks(memo):
        kind = blk[0]
        if kind == "h":
            out += ["#" * blk[1] + " " + escape_md(blk[2]), ""]
        elif kind == "p":
            out += [escape_md(blk[1]), ""]
        elif kind == "ul":
            out += [f"- {escape_md(x)}" for x in blk[1]] + [""]
        elif kind == "fixes":
            for i, f in enumerate(blk[1], 1):
                out.append(f"{i}. **{escape_md(f['severity'].upper())}** {escape_md(f['title'])}. "
                           f"{escape_md(f['detail'])}" + (f" _Evidence: {escape_md(f['evidence'])}_"
                                                          if f["evidence"] else ""))
            out.append("")
        elif kind == "table":
            out += [md_table(blk[1], blk[2]), ""]
        elif kind == "link":
            url = safe_url(blk[2])
            out += [f"[{escape_md(blk[1])}](<{url}>)" if url and ">" not in url and " " not in url
                    else escape_md(f"{blk[1]}: {blk[2]}"), ""]
        # charts are HTML only
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# HTML


_CSS = """
body{font:14px/1.45 -apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#1f2328;max-width:1200px;margin:24px auto;padding:0 16px}
h2{border-bottom:2px solid #d0d7de;padding-bottom:4px;margin-top:36px}h3{margin-top:22px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}th,td{border:1px solid #d0d7de;\
padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f6f8fa}.sev{display:inline-block;color:#fff;border-radius:5px;padding:0 7px;font-weight:700;font-size:12px}
.ev{color:#57606a;font-size:12px}.charts{display:flex;gap:18px;flex-wrap:wrap}.charts figure{margin:0}
.charts figcaption{font-size:12px;color:#57606a}ol li{margin-bottom:6px}
""".strip()

_W, _H = 260, 56


def _spark(values: list, *, bars: bool = False, colour: str = "#0969da", title: str = "") -> str:
    """An inline SVG: bars (volume) or a line with gaps for missing days. Numbers only."""
    nums = [v for v in values if v is not None]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" role="img" '
             f'viewBox="0 0 {_W} {_H}"><title>{html.escape(title)}</title>'
             f'<rect x="0" y="0" width="{_W}" height="{_H}" fill="#f6f8fa"/>']
    if nums:
        top = max(nums) or 1.0
        n = len(values)
        step = _W / max(n, 1)
        y = lambda v: _H - 4 - (v / top) * (_H - 10)  # noqa: E731
        if bars:
            for i, v in enumerate(values):
                if v:
                    parts.append(f'<rect x="{i * step + 0.5:.1f}" y="{y(v):.1f}" width="{max(step - 1, 1):.1f}" '
                                 f'height="{_H - 4 - y(v):.1f}" fill="{colour}"/>')
        else:
            run: list[str] = []
            for i, v in enumerate(values + [None]):
                if v is None:
                    if len(run) == 1:
                        x0, y0 = run[0].split(",")
                        parts.append(f'<circle cx="{x0}" cy="{y0}" r="1.5" fill="{colour}"/>')
                    elif run:
                        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                                     f'points="{" ".join(run)}"/>')
                    run = []
                else:
                    run.append(f"{i * step + step / 2:.1f},{y(v):.1f}")
        # the memo's week is the last 7 days: shade it
        parts.append(f'<rect x="{_W - 7 * step:.1f}" y="0" width="{7 * step:.1f}" height="{_H}" '
                     f'fill="#0969da" fill-opacity="0.07"/>')
    else:
        parts.append(f'<text x="8" y="{_H / 2 + 4:.0f}" font-size="11" fill="#57606a">no data</text>')
    parts.append("</svg>")
    return "".join(parts)


def _chart_html(workflow: str, series: dict[str, Any]) -> str:
    days = series["days"]
    span = f"{days[0]} – {days[-1]}" if days else ""

    def peak(vals: list, metric: str) -> str:
        nums = [v for v in vals if v is not None]
        return f"max {fmt_value(metric, max(nums))}" if nums else "no data"

    figs = [
        (_spark(series["traces"], bars=True, title=f"{workflow} daily traces"),
         f"daily traces ({peak(series['traces'], 'traces')})"),
        (_spark(series["latency_p95_ms"], colour="#8250df", title=f"{workflow} daily p95 latency"),
         f"p95 latency ({peak(series['latency_p95_ms'], 'latency_p95_ms')})"),
        (_spark(series["error_rate"], colour="#cf222e", title=f"{workflow} daily error rate"),
         f"error rate ({peak(series['error_rate'], 'error_rate')})"),
    ]
    inner = "".join(f"<figure>{svg}<figcaption>{html.escape(cap)}</figcaption></figure>" for svg, cap in figs)
    return (f'<div class="charts">{inner}</div><p class="ev">Last 8 weeks, {html.escape(span)} (UTC days); '
            "the shaded band is the memo's week.</p>")


def _cell_html(header: str, v: Any) -> str:
    text = html.escape(str(v))
    if header in ("decision", "verdict") and str(v) in DECISION_COLOURS:
        return f'<span class="sev" style="background:{DECISION_COLOURS[str(v)]}">{text}</span>'
    return text


def render_html(memo: dict[str, Any]) -> str:
    """The memo as one self-contained HTML page (inline CSS and SVG, no JavaScript, no external
    URLs); every value is escaped with html.escape."""
    out: list[str] = []
    for blk in _blocks(memo):
        kind = blk[0]
        if kind == "h":
            out.append(f"<h{blk[1]}>{html.escape(blk[2])}</h{blk[1]}>")
        elif kind == "p":
            out.append(f"<p>{html.escape(blk[1])}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in blk[1]) + "</ul>")
        elif kind == "fixes":
            items = []
            for f in blk[1]:
                colour = SEVERITY_COLOURS.get(f["severity"], "#57606a")
                items.append(f'<li><span class="sev" style="background:{colour}">{html.escape(f["severity"].upper())}'
                             f"</span> <strong>{html.escape(f['title'])}</strong><br>{html.escape(f['detail'])}"
                             + (f'<br><span class="ev">Evidence: {html.escape(f["evidence"])}</span>'
                                if f["evidence"] else "") + "</li>")
            out.append("<ol>" + "".join(items) + "</ol>")
        elif kind == "table":
            headers, rows = blk[1], blk[2]
            if not rows:
                out.append("<p><em>none</em></p>")
                continue
            out.append("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers)
                       + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f"<td>{_cell_html(h, v)}</td>" for h, v in zip(headers, r, strict=False))
                                 + "</tr>" for r in rows)
                       + "</tbody></table>")
        elif kind == "link":
            url = safe_url(blk[2])
            if url and "://" not in url:  # relative links only: the page must not reach out
                out.append(f'<p><a href="{html.escape(url, quote=True)}">{html.escape(blk[1])}</a></p>')
            else:
                out.append(f"<p>{html.escape(blk[1])}: {html.escape(str(blk[2]))}</p>")
        elif kind == "chart":
            out.append(_chart_html(blk[1], blk[2]))
    return html_page(f"Stability memo — week of {memo['week']}", _CSS, "\n".join(out))
