"""Rendering a CanaryResult: markdown and one self-contained HTML page with the same content,
plus JSON. The layout follows the gate's report (lib/gates/report.py): the verdict first with
its reasons, then the evidence.

Everything that came from a user or a configuration (workflow, release keys, metric names,
columns, reasons, notes, link labels) is escaped: markdown through `escape_md` (HTML-escaped,
markdown syntax backslash-escaped, one line); HTML through `html.escape`, no JavaScript, no
external resources, and a Content-Security-Policy that forbids scripts. Text this module
formats itself (numbers, labels) is marked `_Lit` and left as it is in markdown.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..markdown import escape_md, html_page, safe_url
from .model import CanaryResult, IntervalResult, MetricResult
from .verdict import effect_text, tolerance_text

__all__ = ["render_markdown", "render_html", "render_json"]

_BADGE_COLOURS = {"pass": "#1a7f37", "fail": "#cf222e", "marginal": "#9a6700", "inconclusive": "#57606a"}
_CLASS_COLOURS = {"Pass": "#dafbe1", "High": "#ffebe9", "Low": "#ddf4ff", "NoData": "#eaeef2"}


@dataclass(frozen=True)
class _Lit:
    """Text this module produced (numbers, labels): never contains user data."""

    text: str


@dataclass(frozen=True)
class _Cls:
    """A classification cell: Pass / High / Low / NoData, `bad` when in the bad direction."""

    label: str
    bad: bool


Cell = Any  # str (untrusted) | _Lit | _Cls | list of those


# A day of 10-minute looks is 144: the reports show the most recent ones (the JSON has all).
MAX_LOOK_ROWS = 48
MAX_INTERVAL_COLUMNS = 24


def _md(x: Cell) -> str:
    if isinstance(x, list):
        return "".join(_md(p) for p in x)
    if isinstance(x, _Lit):
        return x.text
    if isinstance(x, _Cls):
        return f"**{x.label}**" if x.bad else x.label
    return escape_md(x)


def _html(x: Cell) -> str:
    if isinstance(x, list):
        return "".join(_html(p) for p in x)
    if isinstance(x, _Cls):
        return html.escape(x.label)
    return html.escape(x.text if isinstance(x, _Lit) else ("" if x is None else str(x)), quote=True)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _num(x: Any, digits: int = 4) -> str:
    return f"{x:.{digits}g}" if _finite(x) else "n/a"


def _pct(x: Any, digits: int = 1) -> str:
    return f"{x:.{digits}%}" if _finite(x) else "n/a"


def _time(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M") if isinstance(t, datetime) else "n/a"


def _value_text(m: MetricResult, v: float | None) -> str:
    if v is None:
        return "n/a"
    if m.kind == "proportion":
        return _pct(v, 2)
    return _num(v)


def _tail_label(result: CanaryResult, name: str) -> str:
    for m in result.config.get("metrics", []):
        if m.get("name") == name and m.get("kind") == "tail":
            return f"p{float(m.get('quantile', 0.95)) * 100:g}"
    return "p95"


# ---------------------------------------------------------------- blocks


def _metric_rows(result: CanaryResult, r: IntervalResult) -> list[list[Cell]]:
    rows = []
    for m in r.metrics:
        what = {"continuous": "median", "proportion": "rate", "tail": _tail_label(result, m.name)}[m.kind]
        test = {"continuous": "Mann-Whitney U, Hodges-Lehmann", "proportion": "exact mid-p, Newcombe",
                "tail": f"share above pooled {what}: exact mid-p, Newcombe"}[m.kind]
        cls = _Cls(m.classification, m.bad)
        rows.append([
            m.name,
            _Lit(test),
            _Lit("yes" if m.critical else "no"),
            _Lit(f"{_value_text(m, m.canary_value)} ({what}, n={m.n_canary})"),
            _Lit(f"{_value_text(m, m.baseline_value)} ({what}, n={m.n_baseline})"),
            _Lit(effect_text(m)),
            _Lit(tolerance_text(m)),
            _Lit(f"{_num(m.p_value, 3)} (level {_num(1 - m.level, 3)}"
                 + (", sequential" if m.details.get("sequential") else "") + ")" if m.level is not None else "n/a"),
            cls,
            m.note,
        ])
    return rows


_METRIC_HEADERS = ["metric", "test", "critical", "canary", "baseline", "effect [interval]", "tolerance",
                   "p (level)", "class", "note"]


def _look_state(look: IntervalResult, position: int, cfg: dict) -> str:
    """A look's verdict as the canary's state: a look where nothing deviates passes the canary
    only once every critical metric rules out its margin (judge.shows_pass)."""
    if look.verdict == "inconclusive":
        return "inconclusive (too few requests)"
    if look.verdict != "pass":
        return look.verdict
    pending = [m for m in look.metrics if m.critical and not m.details.get("margin_ok")]
    if pending or position + 1 < int(cfg.get("min_intervals") or 1):
        return "no regression yet, undecided"
    return "pass"


def _blocks(result: CanaryResult, links: dict | None) -> list[tuple]:
    cfg = result.config
    blocks: list[tuple] = []
    title = [_Lit(f"**{result.verdict.upper()}** — canary analysis for "), result.workflow or "?", _Lit(": "),
             result.canary or "?", _Lit(" vs "), result.baseline or "all other releases"]
    blocks.append(("h", 2, title))
    score = f"{result.score:.1f}" if _finite(result.score) else "n/a"
    looks = result.looks
    blocks.append(("p", _Lit(
        f"Window {_time(result.window_start)} – {_time(result.window_end)} UTC · {len(looks)} look(s) at the growing "
        f"window, one every {cfg.get('interval_minutes')} min · score {score} (pass ≥ {cfg.get('pass_score'):g}, "
        f"marginal ≥ {cfg.get('marginal_score'):g})")))
    blocks.append(("ul", list(result.reasons) or [_Lit("no reasons given")]))
    if result.needs:
        per = ", ".join(f"{k} {'?' if v is None else f'{v:,}'}" for k, v in (result.needs.get("by_metric") or {}).items())
        blocks.append(("p", [_Lit("**Inconclusive — what a decision needs:** "), str(result.needs.get("text", "")),
                             _Lit(f" (more canary requests per pending critical metric: {per})" if per else "")]))

    if looks:
        pos = result.failed_at if result.failed_at is not None else len(looks) - 1
        shown = looks[pos]
        blocks.append(("h", 3, _Lit(f"Metrics since the start, at look {shown.index} (until {_time(shown.end)}; "
                                    f"{shown.n_canary} canary, {shown.n_baseline} baseline requests)")))
        blocks.append(("p", _Lit("Intervals and p-value levels are sequential (always-valid): valid however often the "
                                 "canary is looked at, so they are wider than a one-off test's.")))
        blocks.append(("table", _METRIC_HEADERS, _metric_rows(result, shown)))

        blocks.append(("h", 3, _Lit("Looks (the growing window: this decides)")))
        first = max(len(looks) - MAX_LOOK_ROWS, 0)
        if first:
            blocks.append(("p", _Lit(f"The last {MAX_LOOK_ROWS} of {len(looks)} looks (the JSON report has every look).")))
        rows = []
        for i, r in enumerate(looks[first:], start=first):
            deviating = [m for m in r.metrics if m.bad]
            dev: list[Cell] = []
            for j, m in enumerate(deviating):
                dev += ([_Lit(", ")] if j else []) + [m.name, _Lit(f" {m.classification}" + (" (critical)" if m.critical else ""))]
            marker = " ← decided" if result.failed_at == i else ""
            rows.append([_Lit(str(r.index)), _Lit(_time(r.end)), _Lit(str(r.n_canary)), _Lit(str(r.n_baseline)),
                         _Lit(f"{r.score:.1f}" if _finite(r.score) else "n/a"), _Lit(_look_state(r, i, cfg) + marker),
                         dev or _Lit("—")])
        blocks.append(("table", ["look", "until", "canary n", "baseline n", "score", "verdict", "deviating metrics"],
                       rows))

    if result.intervals:
        blocks.append(("h", 3, _Lit("Each interval on its own (descriptive: decides nothing)")))
        intervals = result.intervals[-MAX_INTERVAL_COLUMNS:]
        names = [m.name for m in intervals[0].metrics]
        grid = []
        for name in names:
            row: list[Cell] = [name]
            for r in intervals:
                found = next((x for x in r.metrics if x.name == name), None)
                row.append(_Lit("—") if found is None else _Cls(found.classification, found.bad))
            grid.append(row)
        cut = "" if len(intervals) == len(result.intervals) else \
            f" The last {len(intervals)} of {len(result.intervals)} intervals."
        blocks.append(("p", _Lit("Each interval judged alone at the per-interval level; NoData where an interval has "
                                 "too few requests. Bold marks a deviation in the metric's bad direction." + cut)))
        blocks.append(("table", ["metric"] + [f"#{r.index}" for r in intervals], grid))

    blocks.append(("h", 3, _Lit("Configuration")))
    mrows = []
    for m in cfg.get("metrics", []):
        mrows.append([str(m.get("name")), str(m.get("column")), str(m.get("kind")), str(m.get("direction")),
                      _Lit(f"{m.get('tolerance'):g}"), _Lit(_num(m.get("margin"))), _Lit(_num(m.get("weight", 1))),
                      _Lit("yes" if m.get("critical") else "no")])
    blocks.append(("table", ["metric", "column", "kind", "bad direction", "tolerance", "margin", "α weight",
                             "critical"], mrows))
    blocks.append(("p", _Lit(
        f"Confidence {cfg.get('confidence'):g} family-wise over the metrics and every look (a normal-mixture sequential "
        f"test, τ = {_num(cfg.get('mixture_scale'))} standard deviations; α split by the weights). Continuous metrics: "
        f"Mann-Whitney U with the Hodges-Lehmann shift and its Moses interval (log scale: ratio − 1). Rates and tail "
        f"shares: conditional exact test (mid-p) decides, Newcombe's interval shows the size. A metric is High/Low "
        f"only when significant and beyond its tolerance; a critical metric deviating in its bad direction fails the "
        f"canary. A pass needs every critical metric's interval within its margin after {cfg.get('min_intervals')} "
        f"look(s); at least {cfg.get('min_points')} requests per group since the start, else NoData.")))
    if links:
        blocks.append(("links", [("link", str(label), str(url)) for label, url in links.items()]))
    return blocks


def _table_md(headers: Sequence[str], rows: list[list[Cell]]) -> list[str]:
    # Headers are this module's own labels.
    out = ["| " + " | ".join(headers) + " |",
           "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return out


def render_markdown(result: CanaryResult, *, links: dict | None = None) -> str:
    """The canary report as markdown: the verdict (**PASS** / **FAIL** / ...) and its reasons
    first, the intervals, the deciding interval's metrics (values, effect with interval,
    tolerance, p-value and level, classification), the classification grid, the
    configuration, and `links` ({label: url}; only http(s) and relative URLs become links).
    Every user- or configuration-derived value is escaped."""
    out: list[str] = []
    for b in _blocks(result, links):
        kind = b[0]
        if kind == "h":
            out += ["#" * b[1] + " " + _md(b[2]), ""]
        elif kind == "p":
            out += [_md(b[1]), ""]
        elif kind == "ul":
            out += ["- " + _md(item) for item in b[1]] + [""]
        elif kind == "table":
            out += _table_md(b[1], b[2]) + [""]
        elif kind == "links":
            parts = []
            for _, label, url in b[1]:
                safe = safe_url(url)
                if safe is None:
                    parts.append(f"{escape_md(label)}: {escape_md(url)}")
                else:
                    dest = safe.replace("<", "%3C").replace(">", "%3E").replace(" ", "%20")
                    parts.append(f"[{escape_md(label)}](<{dest}>)")
            out += ["Links: " + " · ".join(parts), ""]
    return "\n".join(out).rstrip("\n") + "\n"


_CSS = """
body{font:14px/1.45 -apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#1f2328;max-width:1200px;margin:24px auto;padding:0 16px}
h2{margin-top:0}h3{border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:middle}
th{background:#f6f8fa}td.bad{font-weight:700;color:#cf222e}
.badge{display:inline-block;color:#fff;border-radius:6px;padding:2px 10px;font-weight:700;letter-spacing:.04em}
""".strip()


def _html_cell(c: Cell) -> str:
    if isinstance(c, _Cls):
        cls = ' class="bad"' if c.bad else ""
        colour = _CLASS_COLOURS.get(c.label, "#ffffff")
        return f'<td{cls} style="background:{colour}">{html.escape(c.label)}</td>'
    return f"<td>{_html(c)}</td>"


def render_html(result: CanaryResult, *, links: dict | None = None) -> str:
    """The canary report as one self-contained HTML page (inline CSS, no JavaScript, no
    external resources) with the same content as `render_markdown`; classifications are
    coloured. Every value is escaped with html.escape."""
    parts: list[str] = []
    for b in _blocks(result, links):
        kind = b[0]
        if kind == "h" and b[1] == 2:
            colour = _BADGE_COLOURS.get(result.verdict, "#57606a")
            parts.append(f'<h2><span class="badge" style="background:{colour}">{html.escape(result.verdict.upper())}'
                         f"</span> canary analysis for {html.escape(str(result.workflow or '?'))}: "
                         f"{html.escape(str(result.canary or '?'))} vs "
                         f"{html.escape(str(result.baseline or 'all other releases'))}</h2>")
        elif kind == "h":
            parts.append(f"<h{b[1]}>{_html(b[2])}</h{b[1]}>")
        elif kind == "p":
            parts.append(f"<p>{_html(b[1])}</p>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{_html(i)}</li>" for i in b[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b[1])
            body = "".join("<tr>" + "".join(_html_cell(c) for c in row) + "</tr>" for row in b[2])
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "links":
            items = []
            for _, label, url in b[1]:
                safe = safe_url(url)
                items.append(f'<a href="{html.escape(safe, quote=True)}">{html.escape(label)}</a>' if safe
                             else f"{html.escape(label)}: {html.escape(url)}")
            parts.append("<p>Links: " + " · ".join(items) + "</p>")
    title = f"{result.verdict.upper()} — canary {result.workflow or '?'} {result.canary or '?'}"
    return html_page(title, _CSS, "\n".join(parts))


def render_json(result: CanaryResult) -> str:
    """The result as JSON text (CanaryResult.as_dict(); NaN and infinities as null)."""
    return json.dumps(result.as_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
