"""Rendering a GateResult: the full gate report (markdown and self-contained HTML), a short
pull-request comment, JSON, JUnit XML, and writing the report files atomically.

Everything that came from a model or a user (outputs, case ids, versions, rule messages,
reasons, evidence values, prompt diffs) is escaped:
- markdown: inline text through `escape_md` (HTML-escaped, markdown syntax backslash-escaped,
  one line); multi-line outputs in a fenced block (markdown.fenced_block: HTML-escaped, fence longer than any backtick run
  in the text, so the text cannot close it (a renderer shows a code block's content
  literally, so `<script>` inside a fence is inert text);
- HTML: `html.escape` on every value, outputs in `<pre>`, no JavaScript, no external resources,
  and a Content-Security-Policy that forbids scripts should anything slip through;
- JUnit: XML built with ElementTree (escapes text and attributes), characters that XML 1.0
  forbids removed.

Both documents are built from one list of blocks (`_report_blocks`), so the markdown and the
HTML report say the same things. Plain `str` inside a block is untrusted text and is always
escaped; `_Lit` marks text this module formatted itself (numbers, labels).

The `evidence` dict is rendered as it comes; these keys are also used where present:
`suite_version`, `thresholds_version` (or `thresholds: {version, author, reason, confidence,
latency_p95_budget_ms, cost_per_sample_budget_usd}`), `confidence`, and keys ending in
`run_id` (shown in the pull-request comment).

JUnit choice: one `<testcase>` per rule. A `pass` rule is a plain testcase, a `block` rule a
`<failure type="block">`, and a `review` rule a `<skipped>` by default: it is neither a pass
nor a defect, CI dashboards show it as "not passed" without painting the suite red, and the
exit code (2) and the suite property `decision=REVIEW` carry the outcome. Strict CI can ask
for `render_junit(result, review_as="failure")`, which turns a review into
`<failure type="review">`. An invalid eval run (decision INVALID, rule run:valid with outcome
"error") is an `<error type="invalid_evidence">`: broken evidence, not a judgement.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import json
import math
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeGuard

from ..evals.diff import diff_markdown
from ..markdown import escape_md, fenced_block, html_page, safe_url
from .model import CaseChange, GateResult, Interval, MetricEvidence, MustPassCase

__all__ = [
    "render_markdown",
    "render_pr_comment",
    "render_html",
    "render_json",
    "render_junit",
    "write_reports",
    "write_text_atomic",
    "NO_DIFF",
    "MAX_CASES",
    "MAX_OUTPUT_CHARS",
]

NO_DIFF = "unknown: registered without a manifest"
MAX_CASES = 20  # rows per case list in the reports (the JSON report has them all)
MAX_OUTPUT_CHARS = 2000  # of an example output shown in full
MAX_INLINE_OUTPUT = 120  # of an example output shown inline in a table
PR_MAX_REASONS = 5
PR_MAX_METRICS = 12
PR_MAX_IDS = 15
PR_MAX_LINKS = 5

_BADGE_COLOURS = {"SHIP": "#1a7f37", "BLOCK": "#cf222e", "REVIEW": "#9a6700", "INVALID": "#8250df"}
_XML_INVALID = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


# ---------------------------------------------------------------- the tiny document model


@dataclass(frozen=True)
class _Lit:
    """Text this module produced itself (numbers, labels): never contains user data."""

    text: str


@dataclass(frozen=True)
class _Bold:
    inner: Any  # str (untrusted) or _Lit


@dataclass(frozen=True)
class _Em:
    inner: Any


@dataclass(frozen=True)
class _Link:
    label: Any
    url: str


@dataclass(frozen=True)
class _Raw:
    """A block with its own markdown and HTML renderings (the caller escaped both)."""

    md: str
    html: str


Inline = Any  # str | _Lit | _Bold | _Em | _Link | list of those


def _md_inline(x: Inline) -> str:
    if isinstance(x, list):
        return "".join(_md_inline(p) for p in x)
    if isinstance(x, _Lit):
        return x.text
    if isinstance(x, _Bold):
        return f"**{_md_inline(x.inner)}**"
    if isinstance(x, _Em):
        return f"_{_md_inline(x.inner)}_"
    if isinstance(x, _Link):
        url = safe_url(x.url)
        if url is None:
            return f"{_md_inline(x.label)}: {escape_md(x.url)}"
        # <...> destination: percent-encode what could end it or break the line.
        dest = url.replace("<", "%3C").replace(">", "%3E").replace(" ", "%20")
        return f"[{_md_inline(x.label)}](<{dest}>)"
    return escape_md(x)


def _html_inline(x: Inline) -> str:
    if isinstance(x, list):
        return "".join(_html_inline(p) for p in x)
    if isinstance(x, _Lit):
        return html.escape(x.text)
    if isinstance(x, _Bold):
        return f"<strong>{_html_inline(x.inner)}</strong>"
    if isinstance(x, _Em):
        return f"<em>{_html_inline(x.inner)}</em>"
    if isinstance(x, _Link):
        url = safe_url(x.url)
        if url is None:
            return f"{_html_inline(x.label)}: {html.escape(str(x.url))}"
        return f'<a href="{html.escape(url, quote=True)}">{_html_inline(x.label)}</a>'
    return html.escape("" if x is None else str(x), quote=True)


# Blocks: ("h", level, inline) | ("p", inline) | ("ul", [inline]) |
#         ("table", headers, rows, extra_html_cells) | ("pre", text, note) | _Raw


def _clip_output(text: str | None, limit: int = MAX_OUTPUT_CHARS) -> tuple[str, int]:
    text = "" if text is None else str(text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if len(text) <= limit:
        return text, 0
    return text[:limit], len(text) - limit


def _render_md(blocks: list) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, _Raw):
            if b.md:
                out.append(b.md.rstrip("\n"))
                out.append("")
            continue
        kind = b[0]
        if kind == "h":
            out += ["#" * b[1] + " " + _md_inline(b[2]), ""]
        elif kind == "p":
            out += [_md_inline(b[1]), ""]
        elif kind == "ul":
            out += ["- " + _md_inline(item) for item in b[1]]
            out.append("")
        elif kind == "table":
            headers, rows = b[1], b[2]
            out.append("| " + " | ".join(_md_inline(h) for h in headers) + " |")
            out.append("|" + "---|" * len(headers))
            out += ["| " + " | ".join(_md_inline(c) for c in row) + " |" for row in rows]
            out.append("")
        elif kind == "pre":
            text, cut = _clip_output(b[1])
            out += fenced_block(text)
            if cut:
                out.append(f"_… {cut} more characters not shown_")
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def _render_html_body(blocks: list) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, _Raw):
            out.append(b.html)
            continue
        kind = b[0]
        if kind == "h":
            out.append(f"<h{b[1]}>{_html_inline(b[2])}</h{b[1]}>")
        elif kind == "p":
            out.append(f"<p>{_html_inline(b[1])}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_html_inline(i)}</li>" for i in b[1]) + "</ul>")
        elif kind == "table":
            headers, rows = b[1], b[2]
            extra = b[3] if len(b) > 3 else None  # (header, [html per row]) for charts
            head = "".join(f"<th>{_html_inline(h)}</th>" for h in headers)
            if extra:
                head += f"<th>{html.escape(extra[0])}</th>"
            body = []
            for i, row in enumerate(rows):
                cells = "".join(f"<td>{_html_inline(c)}</td>" for c in row)
                if extra:
                    cells += f"<td>{extra[1][i]}</td>"
                body.append(f"<tr>{cells}</tr>")
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
        elif kind == "pre":
            text, cut = _clip_output(b[1])
            # A newline right after <pre> is dropped by HTML parsers: this one, not the output's.
            out.append(f"<pre>\n{html.escape(text)}</pre>")
            if cut:
                out.append(f"<p><em>… {cut} more characters not shown</em></p>")
    return "\n".join(out)


# ---------------------------------------------------------------- formatting numbers


def _finite(x: object) -> TypeGuard[float]:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _f(x: Any, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if _finite(x) else "n/a"


def _signed(x: Any, digits: int = 3) -> str:
    return f"{x:+.{digits}f}" if _finite(x) else "n/a"


def _g(x: Any) -> str:
    return f"{x:.4g}" if _finite(x) else "n/a"


def _interval(iv: Interval | None, fmt=_f) -> _Lit:
    if iv is None:
        return _Lit("n/a")
    text = fmt(iv.estimate)
    if _finite(iv.low) and _finite(iv.high):
        text += f" [{fmt(iv.low)}, {fmt(iv.high)}]"
    return _Lit(text)


def _rate(x: Any) -> _Lit:
    return _Lit(f"{x:.0%}" if _finite(x) else "n/a")


def _resample_string(resamples: Sequence[bool]) -> str:
    return "".join("P" if ok else "F" for ok in resamples)


def _compact(value: Any, limit: int = 300) -> str:
    """One line of plain text for a value: a flat dict as "k: v, ...", a flat list as "a, b",
    anything nested as JSON."""

    def flat(v: Any) -> bool:
        return v is None or isinstance(v, (str, int, float, bool))

    if isinstance(value, dict) and all(flat(v) for v in value.values()):
        text = ", ".join(f"{k}: {v}" for k, v in value.items())
    elif isinstance(value, (list, tuple)) and all(flat(v) for v in value):
        text = ", ".join(str(v) for v in value)
    elif isinstance(value, (dict, list, tuple)):
        text = json.dumps(_plain(value), ensure_ascii=False, separators=(",", ":"), default=str)
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_line(text: Any, limit: int = MAX_INLINE_OUTPUT) -> str:
    s = " ".join(str(text).split()) if text is not None else ""
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _outcome_label(outcome: str) -> _Lit:
    return _Lit({"pass": "PASS", "block": "BLOCK", "review": "REVIEW", "error": "ERROR"}.get(outcome, "?"))


# ---------------------------------------------------------------- pieces of the report


def _thresholds_info(result: GateResult) -> dict[str, Any]:
    ev = result.evidence or {}
    th_raw = ev.get("thresholds")
    th: dict[str, Any] = th_raw if isinstance(th_raw, dict) else {}
    return {
        "version": ev.get("thresholds_version", th.get("version")),
        "author": th.get("author", ev.get("thresholds_author")),
        "reason": th.get("reason", ev.get("thresholds_reason")),
        "confidence": ev.get("confidence", th.get("confidence")),
        "latency_p95_budget_ms": th.get("latency_p95_budget_ms", ev.get("latency_p95_budget_ms")),
        "cost_per_sample_budget_usd": th.get("cost_per_sample_budget_usd", ev.get("cost_per_sample_budget_usd")),
    }


def _title(result: GateResult) -> Inline:
    if result.decision == "INVALID":
        return [_Bold(_Lit("INVALID evidence")), _Lit(" — no decision: release gate for "), result.workflow, _Lit(" "), result.version]
    return [_Bold(_Lit(result.decision)), _Lit(" — release gate for "), result.workflow, _Lit(" "), result.version]


def _error_blocks(result: GateResult, *, heading: int = 3) -> list:
    """The candidate run's top error causes (endpoint messages: untrusted text, escaped)."""
    errors = (result.evidence or {}).get("candidate_errors")
    if not isinstance(errors, dict) or not errors.get("top_causes"):
        return []

    def count(x: Any) -> str:
        return str(int(x)) if isinstance(x, (int, float)) and _finite(x) else "n/a"

    title = f"Errors in the candidate's eval run: {count(errors.get('errors'))} of {count(errors.get('samples'))} samples"
    if errors.get("valid") is False:
        title += " (the run is invalid: no decision can be made on it)"
    rows = [
        [_Lit(count(c.get("count"))), _Lit(count(c.get("samples"))), str(c.get("cause", ""))]
        for c in errors["top_causes"]
        if isinstance(c, dict)
    ]
    return [("h", heading, _Lit(title)), ("table", [_Lit("samples"), _Lit("of"), _Lit("error")], rows)]


def _baseline_line(result: GateResult) -> Inline:
    if result.baseline_version:
        return [_Lit("Baseline: "), result.baseline_version]
    return _Lit("Baseline: none (no earlier release to compare with)")


def _what_changed(result: GateResult, heading: str = "###") -> _Raw:
    level = len(heading)
    diff = result.diff
    if not diff:
        md = f"{heading} What changed\n\n{NO_DIFF}\n"
        body = f"<h{level}>What changed</h{level}><p>{html.escape(NO_DIFF)}</p>"
        return _Raw(md, body)
    md = diff_markdown(diff, heading=heading)
    baseline = diff.get("baseline")
    parts = [f"<h{level}>What changed" + (f" since {html.escape(str(baseline))}" if baseline else "") + f"</h{level}>"]
    if not diff.get("known"):
        parts.append(f"<p><em>Unknown</em>: {html.escape(str(diff.get('reason') or 'no comparison available'))}</p>")
        return _Raw(md, "\n".join(parts))
    parts.append("<ul>" + "".join(f"<li>{html.escape(str(s))}</li>" for s in diff.get("summary") or []) + "</ul>")
    for name, p in (diff.get("prompts") or {}).items():
        lines = []
        for ln in str(p.get("unified_diff", "")).splitlines()[:200]:
            cls = "add" if ln.startswith("+") else "del" if ln.startswith("-") else ""
            esc = html.escape(ln)
            lines.append(f'<span class="{cls}">{esc}</span>' if cls else esc)
        parts.append(
            f"<p><strong>Prompt {html.escape(str(name))}</strong> ({html.escape(str(p.get('status', '')))})</p>"
            f'<pre class="diff">{chr(10).join(lines)}</pre>'
        )
    return _Raw(md, "\n".join(parts))


def _versions_table(result: GateResult) -> tuple:
    ev = result.evidence or {}
    th = _thresholds_info(result)
    version = th["version"]
    rows: list[list[Inline]] = [
        [_Lit("workflow"), result.workflow],
        [_Lit("candidate version"), result.version],
        [_Lit("baseline version"), result.baseline_version if result.baseline_version else _Lit("none")],
        [_Lit("suite version"), ev["suite_version"] if ev.get("suite_version") is not None else _Lit("unknown")],
        [
            _Lit("thresholds version"),
            _Lit("0 (built-in defaults)") if version == 0 else (_compact(version) if version is not None else _Lit("unknown")),
        ],
    ]
    if th["author"]:
        rows.append([_Lit("thresholds author"), str(th["author"])])
    if th["reason"]:
        rows.append([_Lit("thresholds reason"), str(th["reason"])])
    if _finite(th["confidence"]):
        rows.append([_Lit("confidence"), _Lit(f"{th['confidence']:.0%}" if th["confidence"] < 1 else _g(th["confidence"]))])
    return ("table", [_Lit("item"), _Lit("value")], rows)


METRIC_HEADERS = ["metric", "baseline", "candidate (CI)", "delta (CI)", "allowed regression", "tolerated regression", "floor", "verdict"]


def _metric_row(m: MetricEvidence) -> list[Inline]:
    return [
        m.metric,
        _interval(m.baseline) if m.baseline is not None else _Lit("n/a"),
        _interval(m.candidate),
        _delta(m.delta),
        _Lit(_f(m.allowed_regression)),
        _Lit(_f(m.tolerated_regression)),
        _Lit(_f(m.floor)) if m.floor is not None else _Lit("none"),
        _Bold(m.verdict) if m.verdict not in ("ok",) else m.verdict,
    ]


def _delta(iv: Interval | None) -> _Lit:
    if iv is None:
        return _Lit("n/a")
    text = _signed(iv.estimate)
    if _finite(iv.low) and _finite(iv.high):
        text += f" [{_signed(iv.low)}, {_signed(iv.high)}]"
    return _Lit(text)


def _metrics_table(result: GateResult, *, with_notes: bool = True) -> tuple:
    headers = [_Lit(h) for h in METRIC_HEADERS]
    notes = with_notes and any(m.note for m in result.metrics)
    if notes:
        headers.append(_Lit("note"))
    rows = []
    for m in result.metrics:
        row = _metric_row(m)
        if notes:
            row.append(m.note or "")
        rows.append(row)
    return ("table", headers, rows)


def _failing_must_pass(result: GateResult) -> list[MustPassCase]:
    return [c for c in result.must_pass if c.candidate_failed > 0 or (c.resamples and not all(c.resamples))]


def _must_pass_blocks(result: GateResult) -> list:
    failing = _failing_must_pass(result)
    blocks: list = [("h", 3, [_Lit(f"Must-pass failures ({len(failing)})")])]
    if not failing:
        n = len(result.must_pass)
        blocks.append(
            (
                "p",
                _Lit(
                    "None: every must-pass case passed in every sample." if n == 0 else f"None ({n} must-pass cases listed, none failing)."
                ),
            )
        )
        return blocks
    for c in failing:
        facts: list[Inline] = [
            _Lit(f"candidate: failed {c.candidate_failed} of {c.candidate_samples} samples"),
        ]
        if c.baseline_samples is None:
            facts.append(_Lit("baseline: did not run this case"))
        else:
            facts.append(_Lit(f"baseline: failed {_g(c.baseline_failed)} of {c.baseline_samples} samples"))
        if c.resamples:
            facts.append(
                _Lit(
                    f"re-sampled {len(c.resamples)}x: {_resample_string(c.resamples)} "
                    f"({sum(1 for r in c.resamples if not r)} failed; P = pass, F = fail)"
                )
            )
        else:
            facts.append(_Lit("not re-sampled"))
        if c.failed_metrics:
            facts.append([_Lit("failed metrics: "), ", ".join(str(x) for x in c.failed_metrics)])
        blocks.append(("p", [_Bold(c.case_id), _Lit(" — "), _Em(c.verdict or "failed")]))
        blocks.append(("ul", facts))
        if c.example_output is not None:
            blocks.append(("p", _Lit("Example failing output:")))
            blocks.append(("pre", c.example_output))
    return blocks


def _case_blocks(title: str, cases: list[CaseChange], *, with_output: bool, empty: str) -> list:
    blocks: list = [("h", 3, _Lit(f"{title} ({len(cases)})"))]
    if not cases:
        blocks.append(("p", _Lit(empty)))
        return blocks
    headers = [_Lit("case"), _Lit("baseline pass rate"), _Lit("candidate pass rate")]
    if with_output:
        headers.append(_Lit("example output"))
    rows = []
    for c in cases[:MAX_CASES]:
        row = [
            c.case_id,
            _rate(c.baseline_pass_rate) if c.baseline_pass_rate is not None else _Lit("not run"),
            _rate(c.candidate_pass_rate),
        ]
        if with_output:
            row.append(_one_line(c.example_output) if c.example_output is not None else _Lit(""))
        rows.append(row)
    blocks.append(("table", headers, rows))
    if len(cases) > MAX_CASES:
        blocks.append(("p", _Em(_Lit(f"… and {len(cases) - MAX_CASES} more not shown (cut; the JSON report lists all {len(cases)})"))))
    return blocks


def _latency_cost_blocks(result: GateResult) -> list:
    blocks: list = [("h", 3, _Lit("Latency and cost"))]
    th = _thresholds_info(result)
    rows = []
    for key, iv in (result.latency_ms or {}).items():
        budget = th["latency_p95_budget_ms"] if key == "p95" else None
        rows.append(
            [
                [_Lit("latency "), key, _Lit(" (ms)")],
                _interval(iv, _g),
                _Lit(str(iv.n)),
                _Lit(_g(budget)) if budget is not None else _Lit(""),
            ]
        )
    for key, iv in (result.cost_usd or {}).items():
        budget = th["cost_per_sample_budget_usd"] if key == "mean_per_sample" else None
        rows.append(
            [[_Lit("cost "), key, _Lit(" (USD)")], _interval(iv, _g), _Lit(str(iv.n)), _Lit(_g(budget)) if budget is not None else _Lit("")]
        )
    if not rows:
        blocks.append(("p", _Lit("No latency or cost recorded.")))
    else:
        blocks.append(("table", [_Lit("statistic"), _Lit("estimate [CI]"), _Lit("n"), _Lit("budget")], rows))
    return blocks


def _evidence_blocks(result: GateResult) -> list:
    blocks: list = [("h", 3, _Lit("Evidence"))]
    ev = result.evidence or {}
    if not ev:
        blocks.append(("p", _Lit("No evidence recorded.")))
        return blocks
    rows = [[str(k), _compact(v) if v is not None else _Lit("none")] for k, v in ev.items()]
    blocks.append(("table", [_Lit("item"), _Lit("value")], rows))
    return blocks


def _links_blocks(links: dict | None) -> list:
    if not links:
        return []
    return [("h", 3, _Lit("Links")), ("ul", [_Link(str(k), str(v)) for k, v in links.items()])]


def _rules_blocks(result: GateResult) -> list:
    blocks: list = [("h", 3, _Lit("Rules"))]
    if not result.rules:
        blocks.append(("p", _Lit("No rules evaluated.")))
        return blocks
    rows = [
        [r.rule, _Bold(_outcome_label(r.outcome)) if r.outcome != "pass" else _outcome_label(r.outcome), r.message] for r in result.rules
    ]
    blocks.append(("table", [_Lit("rule"), _Lit("outcome"), _Lit("message")], rows))
    return blocks


def _report_blocks(result: GateResult, links: dict | None) -> list:
    reasons = [r for r in result.reasons] or []
    blocks: list = [
        ("h", 2, _title(result)),
        ("p", _baseline_line(result)),
        ("p", _Bold(_Lit("Why:"))),
        ("ul", reasons) if reasons else ("p", _Em(_Lit("no reasons given"))),
        *_error_blocks(result),
        _what_changed(result),
        ("h", 3, _Lit("Suite and thresholds")),
        _versions_table(result),
        ("h", 3, _Lit("Metrics")),
    ]
    if result.metrics:
        table = _metrics_table(result)
        charts = [_metric_svg(m) for m in result.metrics]
        blocks.append((*table, ("chart", charts)))
    else:
        blocks.append(("p", _Lit("No metrics.")))
    blocks += _rules_blocks(result)
    blocks += _must_pass_blocks(result)
    blocks += _case_blocks("Flaky cases (mixed results across samples)", result.flaky_cases, with_output=False, empty="None.")
    blocks += _case_blocks("Newly failing cases", result.newly_failing, with_output=True, empty="None.")
    blocks += _case_blocks("Newly passing cases", result.newly_passing, with_output=False, empty="None.")
    blocks += _latency_cost_blocks(result)
    blocks += _evidence_blocks(result)
    blocks += _links_blocks(links)
    return blocks


# ---------------------------------------------------------------- SVG chart (HTML only)


def _metric_svg(m: MetricEvidence) -> str:
    """Baseline vs candidate as horizontal bars with CI whiskers, floor as a dashed line."""
    values = [v for iv in (m.baseline, m.candidate) if iv is not None for v in (iv.estimate, iv.low, iv.high) if _finite(v)]
    top = max([1.0] + values + ([m.floor] if _finite(m.floor) else []))
    width, left, bar_w = 220, 70, 140

    def x(v: float) -> float:
        return left + bar_w * max(0.0, min(v, top)) / top

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="44" role="img" '
        f'aria-label="{html.escape(m.metric, quote=True)}: baseline vs candidate">'
    ]
    for row, (label, iv, colour) in enumerate((("baseline", m.baseline, "#8c959f"), ("candidate", m.candidate, "#0969da"))):
        y = 4 + row * 20
        parts.append(f'<text x="0" y="{y + 11}" font-size="10">{label}</text>')
        if iv is None or not _finite(iv.estimate):
            parts.append(f'<text x="{left}" y="{y + 11}" font-size="10">n/a</text>')
            continue
        parts.append(f'<rect x="{left}" y="{y}" width="{x(iv.estimate) - left:.1f}" height="14" fill="{colour}"/>')
        if _finite(iv.low) and _finite(iv.high):
            lo, hi, mid = x(iv.low), x(iv.high), y + 7
            parts.append(
                f'<path d="M{lo:.1f} {mid}H{hi:.1f}M{lo:.1f} {mid - 4}V{mid + 4}M{hi:.1f} {mid - 4}V{mid + 4}" '
                f'stroke="#24292f" stroke-width="1.2" fill="none"/>'
            )
    if _finite(m.floor):
        fx = x(m.floor)
        parts.append(f'<line x1="{fx:.1f}" y1="0" x2="{fx:.1f}" y2="44" stroke="#cf222e" stroke-dasharray="3 2"/>')
    parts.append("</svg>")
    return "".join(parts)


# ---------------------------------------------------------------- public renderers


def render_markdown(result: GateResult, *, links: dict | None = None) -> str:
    """The full gate report as markdown: the decision and why (first lines, with a **SHIP** /
    **BLOCK** / **REVIEW** badge), what changed, suite and thresholds versions, the metrics
    table, the rules, must-pass failures (counts, re-samples, an example output), flaky, newly
    failing and newly passing cases (at most MAX_CASES rows each, the cut counted), latency and
    cost, the evidence and `links` ({label: url}; only http(s) and relative URLs become links).
    Every value from a model or a user is escaped."""
    blocks = _report_blocks(result, links)
    return _render_md([b[:3] if isinstance(b, tuple) and b[0] == "table" else b for b in blocks])


def render_pr_comment(result: GateResult, *, links: dict | None = None) -> str:
    """A short markdown for a pull-request comment (well under 60 lines whatever the size of
    the result): decision, top reasons, what changed in one line, the metrics table, must-pass
    failures (ids only), counts of flaky / newly failing / newly passing cases, the evidence's
    run ids and versions, and link lines."""
    title = [_Lit("relops gate: "), _Bold(_Lit(result.decision)), _Lit(" — "), result.workflow, _Lit(" "), result.version]
    blocks: list = [("h", 3, title), ("p", _baseline_line(result))]
    reasons: list[Inline] = list(result.reasons[:PR_MAX_REASONS])
    if len(result.reasons) > PR_MAX_REASONS:
        reasons.append(_Em(_Lit(f"… and {len(result.reasons) - PR_MAX_REASONS} more reasons in the full report")))
    blocks.append(("ul", reasons) if reasons else ("p", _Em(_Lit("no reasons given"))))
    if result.decision == "INVALID":
        blocks += _error_blocks(result, heading=4)

    diff = result.diff
    if not diff:
        changed: Inline = _Lit(NO_DIFF)
    elif not diff.get("known"):
        changed = ["unknown: ", str(diff.get("reason") or "no comparison available")]
    else:
        summary = [str(s) for s in diff.get("summary") or []]
        changed = "; ".join(summary[:3]) if summary else "nothing"
        if len(summary) > 3:
            changed = [changed, _Lit(f" (+{len(summary) - 3} more)")]
    blocks.append(("p", [_Bold(_Lit("What changed:")), _Lit(" "), changed]))

    if result.metrics:
        table = _metrics_table(result, with_notes=False)
        blocks.append(("table", table[1], table[2][:PR_MAX_METRICS]))
        if len(result.metrics) > PR_MAX_METRICS:
            blocks.append(("p", _Em(_Lit(f"… and {len(result.metrics) - PR_MAX_METRICS} more metrics in the full report"))))

    failing = _failing_must_pass(result)
    if failing:
        ids: list[Inline] = []
        for i, c in enumerate(failing[:PR_MAX_IDS]):
            ids += ([_Lit(", ")] if i else []) + [c.case_id]
            if c.verdict:
                ids += [_Lit(" ("), c.verdict, _Lit(")")]
        if len(failing) > PR_MAX_IDS:
            ids.append(_Lit(f", … and {len(failing) - PR_MAX_IDS} more"))
        blocks.append(("p", [_Bold(_Lit(f"Must-pass failures ({len(failing)}):")), _Lit(" "), *ids]))
    else:
        blocks.append(("p", [_Bold(_Lit("Must-pass failures:")), _Lit(" none")]))
    blocks.append(
        (
            "p",
            _Lit(
                f"Flaky cases: {len(result.flaky_cases)} · newly failing: {len(result.newly_failing)}"
                f" · newly passing: {len(result.newly_passing)}"
            ),
        )
    )

    ev = result.evidence or {}
    th = _thresholds_info(result)
    facts: list[Inline] = []
    for k, v in ev.items():
        if str(k).endswith("run_id") and v is not None:
            facts.append([str(k), _Lit(" "), _one_line(v, 80)])
    if ev.get("suite_version") is not None:
        facts.append([_Lit("suite "), _one_line(ev["suite_version"], 80)])
    if th["version"] is not None:
        facts.append([_Lit("thresholds v"), _one_line(th["version"], 40)])
    if facts:
        line: list[Inline] = [_Bold(_Lit("Evidence:")), _Lit(" ")]
        for i, f in enumerate(facts[:6]):
            line += ([_Lit(" · ")] if i else []) + [f]
        blocks.append(("p", line))
    if links:
        items = list(links.items())[:PR_MAX_LINKS]
        blocks.append(
            ("p", [_Lit("Links: "), *[p for i, (k, v) in enumerate(items) for p in ([_Lit(" · ")] if i else []) + [_Link(str(k), str(v))]]])
        )
    return _render_md(blocks)


_CSS = """
body{font:14px/1.45 -apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#1f2328;max-width:1100px;margin:24px auto;padding:0 16px}
h2{margin-top:0}h3{border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:middle}
th{background:#f6f8fa}pre{background:#f6f8fa;padding:8px;overflow-x:auto;white-space:pre-wrap;word-break:break-word;max-height:420px}
pre.diff .add{color:#1a7f37}pre.diff .del{color:#cf222e}
.badge{display:inline-block;color:#fff;border-radius:6px;padding:2px 10px;font-weight:700;letter-spacing:.04em}
""".strip()


def render_html(result: GateResult, *, links: dict | None = None) -> str:
    """The gate report as one self-contained HTML page (inline CSS and SVG, no JavaScript, no
    external resources), with the same content as `render_markdown`, plus a small bar chart
    per metric (baseline vs candidate, CI whiskers, floor dashed). Every value is escaped with
    html.escape; outputs are in <pre>."""
    blocks = _report_blocks(result, links)
    rendered: list = []
    for b in blocks:
        if isinstance(b, tuple) and b[0] == "h" and b[1] == 2:
            colour = _BADGE_COLOURS.get(result.decision, "#57606a")
            rendered.append(
                _Raw(
                    "",
                    f'<h2><span class="badge" style="background:{colour}">'
                    f"{html.escape(result.decision)}</span> release gate for "
                    f"{html.escape(result.workflow)} {html.escape(result.version)}</h2>",
                )
            )
        else:
            rendered.append(b)
    title = f"{result.decision} — {result.workflow} {result.version}"
    return html_page(title, _CSS, _render_html_body(rendered))


def _plain(obj: Any) -> Any:
    """JSON-ready copy: dataclass fields in declaration order, other dicts sorted by key,
    non-finite floats as null (JSON has no NaN)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _plain(obj[k]) for k in sorted(obj, key=str)}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _plain(obj.item())
    return str(obj)


def render_json(result: GateResult) -> str:
    """GateResult.as_dict() with "decision" as the first key: dataclass fields keep their
    declared order, free-form dicts (evidence, details, diff, ...) are sorted by key, NaN and
    infinities become null, so the same result always gives the same text."""
    body = _plain(result)
    doc = {"decision": result.decision, **{k: v for k, v in body.items() if k != "decision"}}
    return json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _xml_text(value: Any) -> str:
    return _XML_INVALID.sub("\ufffd", "" if value is None else str(value))


def render_junit(result: GateResult, *, review_as: Literal["skipped", "failure"] = "skipped") -> str:
    """JUnit XML with one <testcase> per rule (classname relops.gate.<workflow>, name = rule
    id): pass -> a plain testcase, block -> <failure type="block">, review -> <skipped>
    (or <failure type="review"> with review_as="failure", for strict CI). The suite carries
    the properties decision, workflow, version, baseline_version and the evidence's scalar
    values; its tests/failures/errors/skipped attributes count the testcases. A result
    without rules gets one testcase "gate" that carries the decision."""
    if review_as not in ("skipped", "failure"):
        raise ValueError(f"review_as must be 'skipped' or 'failure', not {review_as!r}")
    classname = _xml_text(f"relops.gate.{result.workflow}")
    rules: list[tuple[str, str, str, dict[str, Any]]] = [(r.rule, r.outcome, r.message, r.details) for r in result.rules]
    if not rules:
        outcome = {"SHIP": "pass", "BLOCK": "block"}.get(result.decision, "review")
        rules = [("gate", outcome, "; ".join(result.reasons) or result.decision, {})]

    failures = sum(1 for _, o, _, _ in rules if o == "block" or (o == "review" and review_as == "failure"))
    skipped = sum(1 for _, o, _, _ in rules if o == "review" and review_as == "skipped")
    errors = sum(1 for _, o, _, _ in rules if o == "error")
    counts = {"tests": str(len(rules)), "failures": str(failures), "errors": str(errors), "skipped": str(skipped), "time": "0"}

    root = ET.Element("testsuites", {"name": "relops gate", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": classname, **counts})
    props = ET.SubElement(suite, "properties")
    evidence_props = [
        (f"evidence.{k}", v) for k, v in (result.evidence or {}).items() if v is None or isinstance(v, (str, int, float, bool))
    ]
    for name, value in [
        ("decision", result.decision),
        ("workflow", result.workflow),
        ("version", result.version),
        ("baseline_version", result.baseline_version or ""),
    ] + evidence_props:
        ET.SubElement(props, "property", {"name": _xml_text(name), "value": _xml_text("" if value is None else value)})

    for rule, outcome, message, details in rules:
        case = ET.SubElement(suite, "testcase", {"classname": classname, "name": _xml_text(rule), "time": "0"})
        body = _xml_text(message)
        if details:
            body += "\n" + _xml_text(json.dumps(_plain(details), ensure_ascii=False, indent=2, allow_nan=False))
        if outcome == "block" or (outcome == "review" and review_as == "failure"):
            el = ET.SubElement(case, "failure", {"message": _xml_text(message), "type": outcome})
            el.text = body
        elif outcome == "review":
            el = ET.SubElement(case, "skipped", {"message": _xml_text(f"REVIEW: {message}")})
            el.text = body
        elif outcome == "error":  # invalid evidence: an error of the run, not a judgement
            el = ET.SubElement(case, "error", {"message": _xml_text(message), "type": "invalid_evidence"})
            el.text = body
    out = ET.SubElement(suite, "system-out")
    out.text = _xml_text(f"decision: {result.decision}\n" + "".join(f"- {r}\n" for r in result.reasons))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# ---------------------------------------------------------------- files


def write_text_atomic(path: Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` through a temporary file in the same folder and a
    rename, so a reader never sees half a report."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_reports(result: GateResult, out_dir: Path, stem: str, *, links: dict | None = None) -> dict[str, Path]:
    """Write <stem>.md, <stem>.html and <stem>.json into `out_dir` (created if missing), each
    atomically; returns {"md": path, "html": path, "json": path}."""
    if not stem or stem != Path(stem).name or stem.startswith(".") or "\\" in stem:
        raise ValueError(f"invalid report stem {stem!r}: a plain file name without folders is needed")
    out_dir = Path(out_dir)
    texts = {
        "md": render_markdown(result, links=links),
        "html": render_html(result, links=links),
        "json": render_json(result),
    }
    return {ext: write_text_atomic(out_dir / f"{stem}.{ext}", text) for ext, text in texts.items()}
