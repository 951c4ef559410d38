"""The weekly review sample: a stratified sample of a week's production traces, written as a
review sheet (CSV to label, HTML to read), and the labels imported back as scores on the traces.

How the sample is drawn (deterministic for the week, the seed and the data):
- Population: every trace in `trace_features` that started in the week (Monday..Sunday, UTC),
  including traces without a release identifier (release 'unknown': still production traffic).
- Workflows: half of the sample is split evenly over the workflows with traffic, the other half
  in proportion to their traffic (so a small workflow is not starved). Within a workflow every
  release with traffic gets a floor (up to RELEASE_FLOOR traces), the rest by traffic. Within a
  release, the topics share the picks in proportion with a floor of one; when there are more
  topics than picks, which topics get one rotates from week to week (the order is a hash of
  the week and the seed).
- Oversampling, said in `stratum`: up to FLAG_SHARE of each release's picks come from traces
  with an error, a refusal or negative feedback (< NEGATIVE_FEEDBACK), taken in turn; such picks
  have stratum 'oversampled: error|refusal|negative_feedback'; the rest are 'random' (a random
  pick may be an error too, at its natural rate).
A week is sampled once: `select_review_sample` returns the stored sample when the week has one,
so re-running (or running with another seed) never adds rows.

Labels: `label` pass | fail | unsure, optional `score` in [0, 1], `failure_type`, `note`,
`reviewer`. Each imported label is a `trace_labels` row named 'human_review' whose value is the
score, else 1 for pass and 0 for fail (NULL for unsure); `failure_type` and `note` as given.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import math
import uuid
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from relops_pipeline.lib import audit
from relops_pipeline.lib.incidents import open_incident, trace_summaries
from relops_pipeline.lib.markdown import html_page
from relops_pipeline.lib.warehouse import fetch_one

LABEL_NAME = "human_review"
KIND_LABELS_IMPORTED = "review_labels_imported"
LABELS = ("pass", "fail", "unsure")
SHEET_COLUMNS = ("sample_id", "workflow", "release", "topic", "trace_id", "start_time", "input", "output", "stratum",
                 "label", "score", "failure_type", "note", "reviewer")
TEXT_CAP = 2000
FLAG_SHARE = 0.25
NEGATIVE_FEEDBACK = 0.5
WORKFLOW_EVEN_SHARE = 0.5
RELEASE_FLOOR = 2
UNKNOWN_RELEASE = "unknown"
RANDOM = "random"
# Spreadsheet programs run a cell starting with one of these as a formula (CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


class ReviewError(ValueError):
    """A review request is invalid."""


class ReviewImportError(ReviewError):
    """A label file has problems; nothing was imported. `problems`: one line each, with the
    file's line number."""

    def __init__(self, path: Path | str, problems: Sequence[str]):
        self.problems = list(problems)
        shown = "\n".join(f"  - {p}" for p in self.problems[:50])
        more = f"\n  ... and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
        super().__init__(f"{path}: {len(self.problems)} problem(s), nothing imported:\n{shown}{more}")


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def week_start(week: date) -> date:
    """The Monday of the week containing `week`."""
    if isinstance(week, datetime):
        week = week.date()
    return week - timedelta(days=week.weekday())


def sample_id(week: date, trace_id: str) -> str:
    """The stable id of a trace in a week's sample: rv-<Monday yyyymmdd>-<sha256(trace_id)[:8]>."""
    return f"rv-{week_start(week):%Y%m%d}-{hashlib.sha256(trace_id.encode()).hexdigest()[:8]}"


def _rank(seed: int, week: date, *parts: Any) -> str:
    return hashlib.sha256("\x1f".join(map(str, (seed, week.isoformat(), *parts))).encode()).hexdigest()


K = TypeVar("K", bound=Hashable)


def _allocate(n: int, counts: Mapping[K, int], floors: Mapping[K, int], order: Sequence[K]) -> dict[K, int]:
    """Split `n` picks over keys: each key first gets its floor (in `order`, while picks last),
    the rest in proportion to `counts` by largest remainder (ties in `order`); never more than
    a key's count."""
    alloc = {k: 0 for k in order}
    remaining = n
    for k in order:
        give = max(0, min(floors.get(k, 0), counts[k], remaining))
        alloc[k] += give
        remaining -= give
    position = {k: i for i, k in enumerate(order)}
    while remaining > 0:
        open_keys = [k for k in order if counts[k] > alloc[k]]
        if not open_keys:
            break
        total = sum(counts[k] for k in open_keys)
        quota = {k: remaining * counts[k] / total for k in open_keys}
        whole = {k: min(counts[k] - alloc[k], int(quota[k])) for k in open_keys}
        if sum(whole.values()) == 0:
            for k in sorted(open_keys, key=lambda k: (-(quota[k] - int(quota[k])), position[k])):
                if remaining == 0:
                    break
                alloc[k] += 1
                remaining -= 1
            continue
        for k, v in whole.items():
            alloc[k] += v
            remaining -= v
    return alloc


def _flag(row: Mapping[str, Any]) -> str | None:
    if row["is_error"]:
        return "error"
    if row["is_refusal"]:
        return "refusal"
    if row["feedback"] is not None and row["feedback"] < NEGATIVE_FEEDBACK:
        return "negative_feedback"
    return None


def _week_population(con: duckdb.DuckDBPyConnection, monday: date) -> list[dict[str, Any]]:
    cols = ("trace_id", "workflow", "release", "topic", "start_time", "is_error", "is_refusal", "feedback")
    rows = con.execute(
        f"SELECT {', '.join(cols)} FROM trace_features WHERE start_time >= ? AND start_time < ? "
        "QUALIFY row_number() OVER (PARTITION BY trace_id ORDER BY computed_at DESC) = 1",
        [datetime.combine(monday, datetime.min.time()), datetime.combine(monday + timedelta(days=7), datetime.min.time())],
    ).fetchall()
    return [dict(zip(cols, r, strict=False)) for r in rows]


def _pick_cell(rows: list[dict[str, Any]], k: int, seed: int, monday: date) -> list[tuple[dict[str, Any], str]]:
    """`k` traces of one workflow+release: the oversampled flagged ones, then by topic."""
    by_rank = sorted(rows, key=lambda r: _rank(seed, monday, "trace", r["trace_id"]))
    picked: list[tuple[dict[str, Any], str]] = []
    n_flag = math.ceil(k * FLAG_SHARE) if k >= 3 else 0
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in by_rank:
        reason = _flag(r)
        if reason:
            groups.setdefault(reason, []).append(r)
    reasons = [g for g in ("error", "refusal", "negative_feedback") if g in groups]
    i = 0
    while len(picked) < n_flag and any(i < len(groups[g]) for g in reasons):
        for g in reasons:
            if i < len(groups[g]) and len(picked) < n_flag:
                picked.append((groups[g][i], f"oversampled: {g}"))
        i += 1
    taken = {r["trace_id"] for r, _ in picked}
    rest = [r for r in by_rank if r["trace_id"] not in taken]
    topics: dict[str, list[dict[str, Any]]] = {}
    for r in rest:
        topics.setdefault(r["topic"] or "", []).append(r)
    order = sorted(topics, key=lambda t: _rank(seed, monday, "topic", rows[0]["workflow"], rows[0]["release"], t))
    alloc = _allocate(k - len(picked), {t: len(v) for t, v in topics.items()}, {t: 1 for t in topics}, order)
    for t in order:
        picked += [(r, RANDOM) for r in topics[t][: alloc[t]]]
    return picked


def draw_review_sample(con: duckdb.DuckDBPyConnection, week: date, *, size: int = 40, seed: int = 0) -> list[dict[str, Any]]:
    """Draw the week's stratified sample (see the module docstring) without recording it.
    Rows: sample_id, week (the Monday), workflow, release, topic, trace_id, start_time, stratum;
    ordered by workflow, release, topic and start time."""
    if size < 1:
        raise ReviewError(f"size must be at least 1, got {size}")
    monday = week_start(week)
    population = _week_population(con, monday)
    if not population:
        return []
    by_wf: dict[str, list[dict[str, Any]]] = {}
    for r in population:
        by_wf.setdefault(r["workflow"], []).append(r)
    wf_order = sorted(by_wf, key=lambda w: _rank(seed, monday, "workflow", w))
    even = math.ceil(size * WORKFLOW_EVEN_SHARE / len(by_wf))
    wf_floor = {w: max(even, len({r["release"] for r in rows})) for w, rows in by_wf.items()}
    wf_alloc = _allocate(size, {w: len(v) for w, v in by_wf.items()}, wf_floor, wf_order)
    out: list[dict[str, Any]] = []
    for w in wf_order:
        m = wf_alloc[w]
        cells: dict[str, list[dict[str, Any]]] = {}
        for r in by_wf[w]:
            cells.setdefault(r["release"], []).append(r)
        rel_order = sorted(cells, key=lambda rel: _rank(seed, monday, "release", w, rel))
        floor = max(1, min(RELEASE_FLOOR, m // (2 * len(cells))))
        rel_alloc = _allocate(m, {rel: len(v) for rel, v in cells.items()}, {rel: floor for rel in cells}, rel_order)
        for rel in rel_order:
            for r, stratum in _pick_cell(cells[rel], rel_alloc[rel], seed, monday):
                out.append({"sample_id": sample_id(monday, r["trace_id"]), "week": monday, "workflow": w,
                            "release": rel, "topic": r["topic"], "trace_id": r["trace_id"],
                            "start_time": r["start_time"], "stratum": stratum})
    out.sort(key=lambda s: (s["workflow"], s["release"], s["topic"] or "", s["start_time"], s["trace_id"]))
    return out


def stored_sample(con: duckdb.DuckDBPyConnection, week: date) -> list[dict[str, Any]]:
    """The recorded sample of the week (same row shape as `draw_review_sample`, plus `sheet`)."""
    monday = week_start(week)
    rows = con.execute(
        "SELECT r.sample_id, r.week, r.workflow, r.release, r.topic, r.trace_id, "
        "(SELECT min(f.start_time) FROM trace_features f WHERE f.trace_id = r.trace_id), r.stratum, r.sheet "
        "FROM review_samples r WHERE r.week = ?", [monday]).fetchall()
    cols = ("sample_id", "week", "workflow", "release", "topic", "trace_id", "start_time", "stratum", "sheet")
    out = [dict(zip(cols, r, strict=False)) for r in rows]
    out.sort(key=lambda s: (s["workflow"], s["release"], s["topic"] or "", s["start_time"] or datetime.min, s["trace_id"]))
    return out


def select_review_sample(con: duckdb.DuckDBPyConnection, week: date, *, size: int = 40, seed: int = 0,
                         now: datetime | None = None) -> list[dict[str, Any]]:
    """The week's review sample, recorded in `review_samples`: drawn and inserted the first time,
    the stored sample on every later call (a week is sampled once; nothing is inserted twice).
    `week`: any day of the week (the Monday is used). Returns `draw_review_sample`'s rows."""
    monday = week_start(week)
    existing = stored_sample(con, monday)
    if existing:
        return [{k: v for k, v in s.items() if k != "sheet"} for s in existing]
    drawn = draw_review_sample(con, monday, size=size, seed=seed)
    if not drawn:
        return []
    selected_at = now or _now()
    with audit.transaction(con):
        for s in drawn:
            con.execute(
                "INSERT INTO review_samples (sample_id, week, workflow, release, trace_id, stratum, topic, sheet, selected_at) "
                "SELECT ?, ?, ?, ?, ?, ?, ?, NULL, ? WHERE NOT EXISTS (SELECT 1 FROM review_samples WHERE sample_id = ?)",
                [s["sample_id"], monday, s["workflow"], s["release"], s["trace_id"], s["stratum"], s["topic"],
                 selected_at, s["sample_id"]],
            )
    return drawn


# ---------------------------------------------------------------------------------------------
# The review sheet


def guard_cell(value: Any) -> str:
    """A cell as text that a spreadsheet shows as text: a leading = + - @ (or tab/CR) gets a '."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def unguard_cell(text: str) -> str:
    """Undo `guard_cell` (and trim): what the reviewer meant."""
    text = (text or "").strip()
    raw = text or ""
    if len(raw) > 1 and raw[0] == "'" and raw.startswith(tuple("'" + p for p in FORMULA_PREFIXES)):
        return raw[1:].strip()
    return raw.strip()


def readable_text(text: str | None) -> str:
    """Chat messages stored as JSON (`[{"role", "parts" | "content"}]`) as "role: text" lines;
    any other text unchanged."""
    if not text or text[:1] not in "[{":
        return text or ""
    try:
        messages = json.loads(text)
    except ValueError:
        return text
    if isinstance(messages, dict):
        messages = [messages]
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        return text
    lines = []
    for m in messages:
        content = m.get("content", m.get("parts"))
        if isinstance(content, list):
            content = "\n".join(str(p.get("content", p.get("text", json.dumps(p)))) if isinstance(p, dict) else str(p)
                                for p in content)
        lines.append(f"{m['role']}: {content if isinstance(content, str) else json.dumps(content)}")
    return "\n\n".join(lines)


def cap_text(text: str | None, cap: int = TEXT_CAP) -> str:
    """`text` up to about `cap` characters. Longer text keeps its beginning and its end (the
    question usually comes last, after the retrieved context) and says what was cut."""
    if text is None:
        return ""
    if len(text) <= cap:
        return text
    head, tail = cap * 2 // 5, cap * 3 // 5
    return (f"{text[:head]}\n… [truncated: {len(text) - head - tail:,} of {len(text):,} characters cut here] …\n"
            f"{text[-tail:]}")


def _sheet_rows(con: duckdb.DuckDBPyConnection, samples: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    details = trace_summaries(con, [s["trace_id"] for s in samples])
    rows = []
    for s in samples:
        d = details.get(s["trace_id"], {})
        start = s.get("start_time") or d.get("start_time")
        rows.append({
            "sample_id": s["sample_id"], "workflow": s["workflow"], "release": s["release"], "topic": s.get("topic") or "",
            "trace_id": s["trace_id"], "start_time": start.strftime("%Y-%m-%d %H:%M:%S") if start else "",
            "input": cap_text(readable_text(d.get("input_text"))) if d else "[trace not in the warehouse]",
            "output": cap_text(readable_text(d.get("output_text"))) if d else "",
            "stratum": s["stratum"], "label": "", "score": "", "failure_type": "", "note": "", "reviewer": "",
        })
    return rows


_CSS = """body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}
table{border-collapse:collapse;width:100%}th,td{border:1px solid #ccc;padding:.3rem .4rem;vertical-align:top;font-size:.85rem}
th{background:#f3f3f3;text-align:left}pre{white-space:pre-wrap;word-break:break-word;max-height:16rem;overflow:auto;margin:0}
.flag{color:#a40}code{background:#f3f3f3;padding:0 .2rem}"""


def render_sheet_html(week: date, rows: Sequence[Mapping[str, str]], csv_name: str) -> str:
    """The sheet as a self-contained page to read while labelling the CSV (all text escaped)."""
    e = html.escape
    strata = Counter(r["stratum"] for r in rows)
    cells = []
    for r in rows:
        cls = "" if r["stratum"] == RANDOM else ' class="flag"'
        cells.append(
            f"<tr><td><code>{e(r['sample_id'])}</code></td><td>{e(r['workflow'])}</td><td>{e(r['release'])}</td>"
            f"<td>{e(r['topic'])}</td><td><code>{e(r['trace_id'])}</code><br>{e(r['start_time'])}</td>"
            f"<td><pre>{e(r['input'])}</pre></td><td><pre>{e(r['output'])}</pre></td><td{cls}>{e(r['stratum'])}</td></tr>")
    body = (
        f"<h1>Review sample, week of {week_start(week).isoformat()}</h1>"
        f"<p>{len(rows)} traces. Label them in <code>{e(csv_name)}</code>: <code>label</code> = pass | fail | unsure, "
        "<code>score</code> 0–1 (optional), <code>failure_type</code>, <code>note</code>, <code>reviewer</code>; then "
        f"<code>relops review import {e(csv_name)}</code>. A fail can open an incident.</p>"
        "<p>Strata: " + ", ".join(f"{e(k)} {v}" for k, v in sorted(strata.items())) + ". Oversampled rows (errors, "
        f"refusals, negative feedback: up to {int(FLAG_SHARE * 100)} % of each release's picks) are not representative "
        f"of the release's traffic. Inputs and outputs longer than {TEXT_CAP:,} characters are truncated (it says so).</p>"
        "<table><thead><tr><th>sample</th><th>workflow</th><th>release</th><th>topic</th><th>trace</th><th>input</th>"
        "<th>output</th><th>stratum</th></tr></thead><tbody>" + "".join(cells) + "</tbody></table>"
    )
    return html_page(f"Review sample {week_start(week).isoformat()}", _CSS, body)


def _has_labels(path: Path) -> bool:
    """Whether a sheet on disk has any label, score, failure type, note or reviewer filled in."""
    if not path.exists():
        return False
    with open(path, encoding="utf-8-sig", newline="") as f:
        return any(any((row.get(c) or "").strip() for c in ("label", "score", "failure_type", "note", "reviewer"))
                   for row in csv.DictReader(f))


def write_review_sheet(con: duckdb.DuckDBPyConnection, home, week: date,
                       samples: Sequence[Mapping[str, Any]]) -> tuple[Path, Path]:
    """Write `<home>/reports/review/<Monday>.csv` (UTF-8 with BOM, every cell quoted, formula
    cells guarded, empty label columns) and `.html`; record the sheet path on the samples.
    Returns (csv_path, html_path)."""
    monday = week_start(week)
    folder = Path(home.reports_dir) / "review"
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, html_path = folder / f"{monday.isoformat()}.csv", folder / f"{monday.isoformat()}.html"
    rows = _sheet_rows(con, samples)
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(SHEET_COLUMNS)
    for r in rows:
        writer.writerow([guard_cell(r[c]) for c in SHEET_COLUMNS])
    if not _has_labels(csv_path):  # a sheet someone has started labelling is never overwritten
        csv_path.write_text(buf.getvalue(), encoding="utf-8-sig", newline="")
    html_path.write_text(render_sheet_html(monday, rows, csv_path.name), encoding="utf-8")
    ids = [s["sample_id"] for s in samples]
    if ids:
        con.execute("UPDATE review_samples SET sheet = ? WHERE list_contains(?::VARCHAR[], sample_id)", [str(csv_path), ids])
    return csv_path, html_path


# ---------------------------------------------------------------------------------------------
# Importing labels


def _read_table(path: Path) -> tuple[list[tuple[int, list[str]]], list[str], str]:
    raw = path.read_bytes()
    try:
        text, encoding = raw.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = raw.decode("cp1252", errors="replace"), "cp1252"  # an old Excel "CSV" save
    first = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first.count)  # Excel in some locales saves with ';'
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [h.strip().lstrip("\ufeff").strip().lower() for h in next(reader)]
    except StopIteration:
        return [], [], encoding
    rows, start = [], reader.line_num + 1
    for row in reader:
        rows.append((start, row))
        start = reader.line_num + 1
    return rows, header, encoding


def import_review_labels(con: duckdb.DuckDBPyConnection, path: Path | str, *, reviewer_default: str | None = None,
                         open_incidents: bool = True, now: datetime | None = None) -> dict[str, Any]:
    """Load a labelled review sheet. Every row is checked first; any problem (unknown sample id,
    bad label or score, no reviewer, the same sample labelled twice differently by one reviewer)
    raises ReviewImportError listing all problems with line numbers, and nothing is written.
    Rows without a label are skipped and counted. Each label becomes a `trace_labels` row
    (name 'human_review'); importing the same label again adds nothing, a changed label adds a
    row (the latest wins). New fail labels open — or join, while open — one incident per
    workflow and release (source 'review', the failing traces linked) when `open_incidents`,
    and the label rows point at it. Returns counts and the incidents."""
    from relops_pipeline.lib.limits import MAX_REVIEW_ROWS, MAX_REVIEW_SHEET_BYTES, InputTooLarge, require_file_size

    path = Path(path)
    if not path.is_file():
        raise ReviewError(f"{path}: no such file")
    try:
        require_file_size(path, MAX_REVIEW_SHEET_BYTES, "a review sheet")
    except InputTooLarge as exc:
        raise ReviewImportError(path, [str(exc)]) from None
    rows, header, encoding = _read_table(path)
    if len(rows) > MAX_REVIEW_ROWS:
        raise ReviewImportError(path, [f"{len(rows):,} rows is over the limit of {MAX_REVIEW_ROWS:,} rows for a review "
                                       "sheet (import it in parts)"])
    missing = [c for c in ("sample_id", "label") if c not in header]
    if missing:
        raise ReviewImportError(path, [f"line 1: the header has no {', '.join(missing)} column (found: "
                                       f"{', '.join(h for h in header if h) or 'nothing'})"])
    col = {name: header.index(name) for name in SHEET_COLUMNS if name in header}
    known = {r[0]: r[1:] for r in con.execute(
        "SELECT sample_id, trace_id, workflow, release, week FROM review_samples").fetchall()}
    default = (reviewer_default or "").strip()
    problems: list[str] = []
    records: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], tuple[int, tuple]] = {}
    skipped = duplicates = 0
    for line, row in rows:
        def cell(name: str, row: list[str] = row) -> str:
            i = col.get(name)
            return unguard_cell(row[i]) if i is not None and i < len(row) else ""

        if not any(c.strip() for c in row):
            continue  # an empty line (spreadsheets add them at the end)
        sid, label, score_text = cell("sample_id"), cell("label").lower(), cell("score")
        failure_type, note = cell("failure_type"), cell("note")
        bad = len(problems)
        if not sid:
            problems.append(f"line {line}: sample_id is empty")
        elif sid not in known:
            problems.append(f"line {line}: unknown sample_id {sid!r} (not in any recorded review sample)")
        if not label:
            if score_text or failure_type:
                problems.append(f"line {line}: a score or failure_type without a label: set label "
                                f"({' | '.join(LABELS)}) or clear the row")
            elif len(problems) == bad:
                skipped += 1
            continue
        if label not in LABELS:
            problems.append(f"line {line}: label {label!r} is not one of {', '.join(LABELS)}")
        score = None
        if score_text:
            try:
                score = float(score_text.replace(",", "."))
            except ValueError:
                score = None
                problems.append(f"line {line}: score {score_text!r} is not a number")
            else:
                if not math.isfinite(score) or not 0.0 <= score <= 1.0:
                    problems.append(f"line {line}: score {score_text!r} is outside 0..1")
        reviewer = cell("reviewer") or default
        if not reviewer:
            problems.append(f"line {line}: no reviewer (the reviewer cell is empty and no default reviewer was given)")
        if len(problems) > bad:
            continue
        content = (label, score, failure_type, note)
        key = (sid, reviewer)
        if key in seen:
            if seen[key][1] != content:
                problems.append(f"line {line}: {sid} labelled again by {reviewer} with a different label "
                                f"(first on line {seen[key][0]})")
            else:
                duplicates += 1
            continue
        seen[key] = (line, content)
        trace_id, workflow, release, week = known[sid]
        value = score if score is not None else {"pass": 1.0, "fail": 0.0}.get(label)
        records.append({"line": line, "sample_id": sid, "trace_id": trace_id, "workflow": workflow, "release": release,
                        "week": week, "label": label, "value": value, "failure_type": failure_type or None,
                        "note": note or None,
                        "reviewer": reviewer})
    if problems:
        raise ReviewImportError(path, problems)

    imported_at = now or _now()
    written: list[dict[str, Any]] = []
    unchanged = 0
    incidents: list[dict[str, Any]] = []
    with audit.transaction(con):
        for r in records:
            latest = con.execute(
                "SELECT label, value, failure_type, note FROM trace_labels WHERE sample_id = ? AND reviewer = ? AND name = ? "
                "ORDER BY imported_at DESC, label_id DESC LIMIT 1", [r["sample_id"], r["reviewer"], LABEL_NAME]).fetchone()
            if latest is not None and tuple(latest) == (r["label"], r["value"], r["failure_type"], r["note"]):
                unchanged += 1
                continue
            r["label_id"] = f"lbl-{uuid.uuid4().hex[:16]}"
            con.execute(
                "INSERT INTO trace_labels (label_id, sample_id, trace_id, workflow, release, name, value, label, is_failure, "
                "failure_type, note, reviewer, source_file, incident_id, imported_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
                [r["label_id"], r["sample_id"], r["trace_id"], r["workflow"], r["release"], LABEL_NAME, r["value"],
                 r["label"], r["label"] == "fail", r["failure_type"], r["note"], r["reviewer"], path.name, imported_at],
            )
            written.append(r)
        if written:
            audit.append_event(
                con, kind=KIND_LABELS_IMPORTED, actor=", ".join(sorted({r["reviewer"] for r in written})),
                reason=f"review labels imported from {path.name}", workflow=None,
                payload={"file": path.name, "labels": len(written), "by_label": dict(Counter(r["label"] for r in written)),
                         "label_ids": [r["label_id"] for r in written]})
        failing = [r for r in written if r["label"] == "fail"]
        if open_incidents and failing:
            groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
            for r in failing:
                groups.setdefault((r["workflow"], r["release"]), []).append(r)
            for (workflow, release), group in sorted(groups.items()):
                incidents.append(_open_review_incident(con, workflow, release, group, path, imported_at))
    return {
        "file": str(path), "encoding": encoding, "rows": len(records) + skipped + duplicates,
        "labelled": len(records), "written": len(written), "unchanged": unchanged, "skipped_blank": skipped,
        "duplicate_rows": duplicates, "by_label": dict(Counter(r["label"] for r in written)),
        "failures": len([r for r in written if r["label"] == "fail"]), "incidents": incidents,
    }


def _open_review_incident(con: duckdb.DuckDBPyConnection, workflow: str, release: str,
                          group: list[dict[str, Any]], path: Path, now: datetime) -> dict[str, Any]:
    traces = list(dict.fromkeys(r["trace_id"] for r in group))
    started = fetch_one(con.execute("SELECT min(start_time) FROM trace_features WHERE list_contains(?::VARCHAR[], trace_id)",
                                    [traces]))[0]
    rel = None if release == UNKNOWN_RELEASE else release
    title = f"human review: failing traces on {rel}" if rel else "human review: failing traces (release unknown)"
    reviewers = ", ".join(sorted({r["reviewer"] for r in group}))
    inc = open_incident(con, workflow, rel, title, "review", reviewers,
                        links={"traces": traces, "review_file": path.name}, started_at=started, now=now)
    con.execute("UPDATE trace_labels SET incident_id = ? WHERE list_contains(?::VARCHAR[], label_id)",
                [inc["incident_id"], [r["label_id"] for r in group]])
    return {"incident_id": inc["incident_id"], "workflow": workflow, "release": rel, "title": title,
            "created": inc["created"], "traces": len(traces)}
