"""Suite proposals: production incidents turned into proposed eval cases, as a draft suite version.

`propose_suite_cases` looks at a workflow's incidents (open, or closed in the last `days`), skips
those already turned into cases (some suite version — a file under `suites_dir` or a row of
`suite_versions` — has a case with provenance `incident:<id>`), and for every trace linked to the
rest (`incidents.incident_traces`, plus trace ids of failure labels tied to the incident) makes a
case when the trace shows what went wrong:

- input: `{vars: {...}}` recovered from the first LLM call's user message with the release's
  user-prompt template (`releases.manifest` -> prompts.user). The template may match the whole
  message, or its end when the application put context before it (RAG excerpts before
  "Question: {{ question }}"). When it does not match and the template has a single variable, the
  user message is taken as that variable (the demo workflows send the bare ticket); otherwise
  `{messages: [...]}` (the trace's messages without system messages: the manifest adds its own).
- expected, from what went wrong (`why` in the evidence says which):
  refusal -> `not_contains` the refusal phrase found in the output (signals.REFUSAL_PATTERNS);
  JSON workflow (JSON output type on the LLM span, a JSON response format in the manifest, or a
  suite whose cases mostly check JSON) -> `json_schema` (the suite's own schema, else an object with
  the fields its cases check), which also catches truncated/invalid JSON, errors and refusals;
  error or content filter in a text workflow -> `regex: '\\S'` (the case must get an answer);
  truncated text -> a `judge_rubric` (the answer must be complete);
  a reviewer's failure label (`trace_labels`) -> a `judge_rubric` quoting the reviewer's note.
  A trace with none of these (e.g. only slow: latency is a gate budget, not a case expectation)
  gives no case and is listed as skipped with the reason.
- must_pass: true when the incident caused a performed rollback.
- provenance `incident:<id>`; id `inc-<incident short id>-<n>`; tags `incident` plus what went
  wrong and the trace's topic.

Inputs near-identical to another proposed case or to a case already in the suite are dropped
(normalised text: case, whitespace and digit runs ignored; word-trigram Jaccard >= 0.9); a dropped
trace is listed under its case (`duplicates`) or as skipped. The bad output, the trace id and the
release stay in the proposal's evidence and report: the suite case schema has no place for them.

`accept_suite_proposal` writes `<suites_dir>/<suite>/<next_version>.yaml` (the base version's
cases, the proposed cases, every changelog line plus the new one), validates it, records it
(`evals.store.record_suite_version` and a `suite_version` event) and marks the proposal accepted,
all or nothing. It refuses when the base version is no longer the latest or was edited, or when
the target file or version already exists: re-propose then.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import yaml

from relops_pipeline.lib import audit
from relops_pipeline.lib import incidents as incidents_mod
from relops_pipeline.lib.evals.manifests import PLACEHOLDER_RE
from relops_pipeline.lib.evals.model import Case, release_key, validate_key
from relops_pipeline.lib.evals.store import record_suite_version
from relops_pipeline.lib.evals.suites import (
    MESSAGE_ROLES,
    list_suite_versions,
    load_suite,
    suggest_next_version,
    validate_suite_file,
    version_sort_key,
)
from relops_pipeline.lib.markdown import code_span, escape_md, fenced_block, md_table
from relops_pipeline.lib.proposals import store
from relops_pipeline.lib.signals import REFUSAL_PATTERNS
from relops_pipeline.lib.warehouse import fetch_one

KIND = "suite"
INCIDENT_WINDOW_DAYS = 45
MAX_TRACES_PER_INCIDENT = 50
BAD_OUTPUT_CHARS = 2000
NEAR_DUPLICATE_JACCARD = 0.9
ANY_ANSWER_REGEX = r"\S"
# Which scorer type reads which expectation (evals/scorers.py), for the "nothing scores this" warning.
SCORER_FOR_EXPECTATION = {
    "not_contains": ("contains",), "contains": ("contains",), "regex": ("regex",), "json_schema": ("json",),
    "fields": ("json",), "judge_rubric": ("llm_judge",), "reference": ("similarity", "exact_match", "llm_judge"),
    "number": ("numeric",),
}

_REFUSAL_RE = re.compile(REFUSAL_PATTERNS, re.IGNORECASE)


class SuiteProposalError(ValueError):
    """A suite proposal cannot be made or accepted as asked (no suite, base moved, file exists)."""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


# ---------------------------------------------------------------------------------------------
# Reading traces


@dataclass
class _Trace:
    """What one linked trace shows, read from its spans."""

    trace_id: str
    release: str | None = None
    start_time: datetime | None = None
    messages: list[dict[str, str]] | None = None  # the first LLM call's input, normalised
    input_truncated: bool = False
    output: str | None = None
    status: str | None = None
    error_type: str | None = None
    finish_reason: str | None = None
    json_output: bool = False  # the LLM span declares JSON output (gen_ai.output.type)
    topic: str | None = None
    query: str | None = None  # a retrieval span's query text
    label: dict[str, Any] | None = None  # latest human review label when it is a failure
    extra_notes: list[str] = field(default_factory=list)


def _text_of_content(content: Any) -> str | None:
    """Plain text of a message content: a string, or the text parts of a list of parts
    (OpenAI `{"type": "text", "text": ...}`, GenAI `{"type": "text", "content": ...}`)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text":
                value = part.get("text", part.get("content"))
                if isinstance(value, str):
                    texts.append(value)
        return "".join(texts) if texts else None
    return None


def parse_messages(input_text: str | None) -> list[dict[str, str]] | None:
    """Chat messages `[{role, content}]` from a staged `input_text`: JSON messages in the GenAI
    (`parts`) or OpenAI (`content`) shape, `{"messages": [...]}`, or a plain prompt (one user
    message). Messages without text (tool calls) and unknown roles are left out."""
    if input_text is None or not input_text.strip():
        return None
    try:
        doc = json.loads(input_text)
    except ValueError:
        return [{"role": "user", "content": input_text}]
    if isinstance(doc, dict) and isinstance(doc.get("messages"), list):
        doc = doc["messages"]
    if isinstance(doc, str):
        return [{"role": "user", "content": doc}]
    if not isinstance(doc, list):
        return [{"role": "user", "content": input_text}]
    out = []
    for msg in doc:
        if not isinstance(msg, dict):
            continue
        aliases: dict[Any, Any] = {"human": "user", "ai": "assistant"}
        role = aliases.get(msg.get("role"), msg.get("role"))
        text = _text_of_content(msg["parts"] if "parts" in msg else msg.get("content"))
        if role in MESSAGE_ROLES and text:
            out.append({"role": role, "content": text})
    return out or None


def _read_traces(con: duckdb.DuckDBPyConnection, trace_ids: list[str]) -> dict[str, _Trace]:
    """Each trace's input (first LLM call with input text; else the root's), final output (last
    LLM call with output text; else the root's), status, error type, finish reason, topic and
    latest human label."""
    if not trace_ids:
        return {}
    rows = con.execute(
        "SELECT trace_id, parent_span_id IS NULL, kind, release, start_time, status, error_type, finish_reason, "
        "input_text, output_text, coalesce(input_truncated, false), attributes->>'$.\"gen_ai.output.type\"', "
        "attributes->>'$.\"gen_ai.retrieval.query.text\"' "
        "FROM spans WHERE list_contains(?::VARCHAR[], trace_id) ORDER BY trace_id, start_time, span_id",
        [trace_ids],
    ).fetchall()
    groups: dict[str, list[tuple]] = {}
    for r in rows:
        groups.setdefault(r[0], []).append(r)
    topics = dict(con.execute(
        "SELECT trace_id, any_value(topic) FROM trace_features WHERE list_contains(?::VARCHAR[], trace_id) "
        "GROUP BY trace_id", [trace_ids]).fetchall())
    labels: dict[str, dict[str, Any]] = {}
    for trace_id, label, value, note, reviewer, is_failure in con.execute(
        "SELECT trace_id, label, value, note, reviewer, is_failure FROM trace_labels "
        "WHERE list_contains(?::VARCHAR[], trace_id) AND name = 'human_review' "
        "QUALIFY row_number() OVER (PARTITION BY trace_id ORDER BY imported_at DESC, label_id DESC) = 1",
        [trace_ids],
    ).fetchall():
        if is_failure:
            labels[trace_id] = {"label": label, "value": value, "note": note, "reviewer": reviewer}
    out: dict[str, _Trace] = {}
    for trace_id, group in groups.items():
        root = next((s for s in group if s[1]), group[0])
        llm = [s for s in group if s[2] == "llm"]
        first_in = next((s for s in llm if s[8]), root if root[8] else None)
        last_out = next((s for s in reversed(llm) if s[9] is not None), root if root[9] is not None else None)
        errors = [s for s in group if s[5] == "error"]
        out[trace_id] = _Trace(
            trace_id=trace_id,
            release=root[3] or next((s[3] for s in group if s[3]), None),
            start_time=min(s[4] for s in group if s[4] is not None) if any(s[4] for s in group) else None,
            messages=parse_messages(first_in[8]) if first_in else None,
            input_truncated=bool(first_in[10]) if first_in else False,
            output=last_out[9] if last_out else None,
            status="error" if errors else root[5],
            error_type=(root[6] if root[5] == "error" else None) or next((s[6] for s in errors if s[6]), None),
            finish_reason=next((s[7] for s in reversed(llm) if s[7]), root[7]),
            json_output=any((s[11] or "").lower() == "json" for s in llm),
            topic=topics.get(trace_id),
            query=next((s[12] for s in group if s[2] == "retrieval" and s[12]), None),
            label=labels.get(trace_id),
        )
    return out


# ---------------------------------------------------------------------------------------------
# Inputs in the suite's style


def template_pattern(template: str, *, suffix: bool) -> re.Pattern | None:
    """A regex that recovers a prompt template's `{{ name }}` values from a rendered prompt.
    `suffix`: the template may be preceded by other text (the last match wins). None when the
    template has no variables, or for `suffix` when it does not start with literal text (it would
    then match any text)."""
    parts = PLACEHOLDER_RE.split(template)  # literal, name, literal, name, ..., literal
    if len(parts) < 3:
        return None
    if suffix and len(parts[0].strip()) < 3:
        return None
    seen: set[str] = set()
    regex = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            regex.append(re.escape(part))
        elif part in seen:
            regex.append(f"(?P={part})")
        else:
            seen.add(part)
            regex.append(f"(?P<{part}>.+?)")
    return re.compile(("(?:.*)" if suffix else "") + "".join(regex), re.DOTALL)


def recover_input(
    messages: list[dict[str, str]] | None, template: str | None, suite_vars: set[str], query: str | None = None
) -> tuple[dict[str, Any] | None, str]:
    """The case input for a trace's messages: `({"vars": ...}, how)` recovered with the user
    template, else `({"messages": ...}, how)`, else `(None, why not)`. `query`: a retrieval
    query, used as the single template variable when the trace has no model input (the call
    failed before the model was asked)."""
    names = list(dict.fromkeys(PLACEHOLDER_RE.findall(template))) if template else sorted(suite_vars)
    if not messages:
        if query and len(names) == 1:
            return {"vars": {names[0]: query}}, "the retrieval query (the trace has no model input)"
        return None, "the trace has no input messages in the warehouse"
    users = [m for m in messages if m["role"] == "user"]
    non_system = [m for m in messages if m["role"] not in ("system", "developer")]
    if template and len(users) == 1:
        for suffix in (False, True):
            pattern = template_pattern(template, suffix=suffix)
            match = pattern.fullmatch(users[0]["content"]) if pattern else None
            if match:
                how = "the user prompt template" + (" (after the application's context)" if suffix else "")
                return {"vars": {n: match.group(n) for n in names}}, how
    if len(names) == 1 and len(non_system) == 1 and len(users) == 1:
        return {"vars": {names[0]: users[0]["content"]}}, f"the user message as {{{{ {names[0]} }}}}"
    if non_system and non_system[0]["role"] in ("user", "assistant"):
        return {"messages": [dict(m) for m in non_system]}, "the trace's messages (system prompt left to the manifest)"
    return None, "the trace's messages cannot be turned into a case input"


def _input_text(case_input: Mapping[str, Any]) -> str:
    if "vars" in case_input:
        return "\n".join(json.dumps(v, ensure_ascii=False, sort_keys=True) if not isinstance(v, str) else v
                         for _, v in sorted(case_input["vars"].items()))
    return "\n".join(str(m.get("content")) for m in case_input.get("messages") or [])


_WORD_RE = re.compile(r"\w+", re.UNICODE)


def _fingerprint(case_input: Mapping[str, Any]) -> tuple[str, frozenset]:
    """Normalised text (case, whitespace and digit runs ignored) and its word trigrams."""
    words = [re.sub(r"\d+", "#", w) for w in _WORD_RE.findall(_input_text(case_input).casefold())]
    grams = frozenset(tuple(words[i:i + 3]) for i in range(max(0, len(words) - 2)))
    return " ".join(words), grams


def _near(a: tuple[str, frozenset], b: tuple[str, frozenset]) -> bool:
    if a[0] == b[0]:
        return True
    if not a[1] or not b[1]:
        return False
    return len(a[1] & b[1]) / len(a[1] | b[1]) >= NEAR_DUPLICATE_JACCARD


# ---------------------------------------------------------------------------------------------
# Expectations


def _json_schema_of(suite_cases: list[Case]) -> dict[str, Any]:
    """The suite's most common `json_schema`, else an object requiring the top-level fields that
    at least half of its `fields` cases check, else any JSON object."""
    schemas = Counter(json.dumps(c.expected["json_schema"], sort_keys=True)
                      for c in suite_cases if isinstance(c.expected.get("json_schema"), dict))
    if schemas:
        return json.loads(schemas.most_common(1)[0][0])
    with_fields = [c for c in suite_cases if isinstance(c.expected.get("fields"), dict)]
    counts = Counter(k.split(".")[0] for c in with_fields for k in set(p.split(".")[0] for p in c.expected["fields"]))
    required = sorted(k for k, n in counts.items() if n * 2 >= len(with_fields))
    return {"type": "object", **({"required": required} if required else {})}


def _suite_is_json(suite_cases: list[Case]) -> bool:
    checked = sum(1 for c in suite_cases if c.expected.get("json_schema") or c.expected.get("fields"))
    return bool(suite_cases) and checked * 2 >= len(suite_cases)


def _is_json(text: str | None) -> bool:
    if text is None:
        return False
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def suggest_expectation(trace: _Trace, *, json_mode: bool, schema: Mapping[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    """(expected, why, tags) for a trace from what went wrong; an empty `expected` means the
    trace shows nothing a case could check."""
    expected: dict[str, Any] = {}
    why: list[str] = []
    tags: list[str] = []
    output = trace.output or ""
    refusal = _REFUSAL_RE.search(output)
    if trace.label:
        note = (trace.label.get("note") or "").strip()
        reviewer = trace.label.get("reviewer") or "a reviewer"
        why.append(f"{reviewer} labelled the output {trace.label.get('label') or 'fail'}" + (f": {note}" if note else ""))
        expected["judge_rubric"] = (
            "A reviewer marked the production answer to this input as a failure"
            + (f" ({note})" if note else "") + ". A good answer does not repeat that failure.")
        tags.append("review")
    if refusal:
        expected["not_contains"] = [refusal.group(0)]
        why.append(f"refused: {refusal.group(0)!r}")
        tags.append("refusal")
    elif trace.finish_reason == "content_filter":
        why.append("blocked by the content filter")
        tags.append("refusal")
        if not json_mode:
            expected["regex"] = ANY_ANSWER_REGEX
    if trace.status == "error":
        why.append(f"the call failed ({trace.error_type or 'error'}): the case must get an answer")
        tags.append("error")
        if not json_mode:
            expected.setdefault("regex", ANY_ANSWER_REGEX)
    truncated = trace.finish_reason == "length"
    if truncated:
        why.append("output cut off at the token limit (finish_reason length)")
        tags.append("truncated")
        if not json_mode:
            expected.setdefault("judge_rubric", "The answer is complete: not cut off mid-sentence or mid-list.")
    if json_mode:
        invalid = trace.status != "error" and trace.output is not None and not _is_json(trace.output)
        if invalid and not refusal:
            why.append("output is not valid JSON" + (" (truncated)" if truncated else ""))
            tags.append("invalid-json")
        if expected or invalid or truncated or trace.status == "error" or refusal:
            expected["json_schema"] = dict(schema)
    return expected, why, list(dict.fromkeys(tags))


# ---------------------------------------------------------------------------------------------
# Warehouse look-ups


def _covered_incidents(con: duckdb.DuckDBPyConnection, suites: list, suite: str) -> set[str]:
    """Incident ids named in the provenance of any case of any suite version (files and rows)."""
    provenances = {c.provenance for s in suites for c in s.cases}
    for (cases_json,) in con.execute("SELECT cases FROM suite_versions WHERE workflow = ?", [suite]).fetchall():
        for case in json.loads(cases_json or "[]"):
            if isinstance(case, dict) and isinstance(case.get("provenance"), str):
                provenances.add(case["provenance"])
    return {p.split(":", 1)[1] for p in provenances if p.startswith("incident:")}


def _incidents(con: duckdb.DuckDBPyConnection, workflow: str, now: datetime, days: int) -> list[dict[str, Any]]:
    since = now - timedelta(days=days)
    rows = con.execute(
        "SELECT incident_id FROM incidents WHERE workflow = ? AND opened_at <= ? "
        "AND (status = 'open' OR closed_at >= ?) ORDER BY opened_at, incident_id",
        [workflow, now, since],
    ).fetchall()
    return [inc for r in rows if (inc := incidents_mod.get_incident(con, r[0])) is not None]


def _incident_trace_ids(con: duckdb.DuckDBPyConnection, incident: Mapping[str, Any]) -> list[str]:
    """Linked traces (incidents.incident_traces, else links["traces"]) plus the traces of failure
    labels tied to the incident; first MAX_TRACES_PER_INCIDENT, link order."""
    ids: list[str | None] = []  # a linked trace object may lack its id: dropped below
    finder = getattr(incidents_mod, "incident_traces", None)
    if finder is not None:
        ids.extend(t["trace_id"] for t in finder(con, incident["incident_id"], limit=MAX_TRACES_PER_INCIDENT))
    linked = (incident.get("links") or {}).get("traces") or []
    ids.extend(t if isinstance(t, str) else t.get("trace_id") for t in linked if isinstance(t, (str, dict)))
    ids.extend(r[0] for r in con.execute(
        "SELECT trace_id FROM trace_labels WHERE incident_id = ? AND is_failure ORDER BY imported_at, trace_id",
        [incident["incident_id"]]).fetchall())
    return [t for t in dict.fromkeys(ids) if t][:MAX_TRACES_PER_INCIDENT]


def _caused_rollback(con: duckdb.DuckDBPyConnection, incident: Mapping[str, Any]) -> bool:
    rollback_id = (incident.get("links") or {}).get("rollback_id")
    row = fetch_one(con.execute(
        "SELECT count(*) FROM rollbacks WHERE performed AND (incident_id = ? OR rollback_id = ?)",
        [incident["incident_id"], rollback_id if isinstance(rollback_id, str) else None],
    ))
    return bool(row[0])


def _manifest(con: duckdb.DuckDBPyConnection, workflow: str, release: str | None) -> dict[str, Any] | None:
    """The release's registered manifest, else the workflow's latest registered one."""
    row = None
    if release and release != "unknown":
        try:
            key = release_key(workflow, release)
        except ValueError:
            key = None
        if key:
            row = con.execute("SELECT manifest FROM releases WHERE release_key = ? AND manifest_known", [key]).fetchone()
    if row is None:
        row = con.execute("SELECT manifest FROM releases WHERE workflow = ? AND manifest_known "
                          "ORDER BY registered_at DESC, release_key DESC LIMIT 1", [workflow]).fetchone()
    return json.loads(row[0]) if row and row[0] else None


def _manifest_json(manifest: Mapping[str, Any] | None) -> bool:
    fmt = ((manifest or {}).get("parameters") or {}).get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else fmt
    return isinstance(kind, str) and kind.startswith("json")


def _short_id(incident_id: str) -> str:
    m = re.fullmatch(r"inc-.*-([0-9a-f]{6,})", incident_id)
    short = m.group(1) if m else re.sub(r"[^A-Za-z0-9_.-]", "-", incident_id.removeprefix("inc-"))
    return short[:64] or "x"


def _truncate(text: str | None, limit: int = BAD_OUTPUT_CHARS) -> tuple[str | None, bool]:
    if text is None or len(text) <= limit:
        return text, False
    return text[:limit], True


# ---------------------------------------------------------------------------------------------
# Propose


def propose_suite_cases(
    con: duckdb.DuckDBPyConnection,
    suites_dir: Path,
    workflow: str,
    *,
    period: str,
    now: datetime | None = None,
    suite: str | None = None,
    days: int = INCIDENT_WINDOW_DAYS,
    scorer_types: Iterable[str | None] | None = None,
    dagster_run_id: str | None = None,
) -> store.Proposal | None:
    """Record a draft suite version with cases from the workflow's incident traces (see the
    module docstring), or return None when there is nothing to propose.

    `suite`: the suite folder name (the workflow's `evals.suite`, default the workflow).
    `scorer_types`: the workflow's scorer types, when known: the report warns about suggested
    expectations no configured scorer reads. Returns the proposal (store.create_proposal:
    `created` False when the same draft exists); its evidence lists what was `skipped`
    (incident/trace, reason)."""
    validate_key("workflow", workflow)
    suite = validate_key("workflow", suite or workflow)
    now = now or _now()
    versions = list_suite_versions(Path(suites_dir), suite)
    if not versions:
        raise SuiteProposalError(f"workflow {workflow} has no suite under {Path(suites_dir) / suite}: "
                                 "cases need a suite version to extend")
    base = versions[-1]
    next_version = suggest_next_version(base.version)
    if next_version is None:
        raise SuiteProposalError(f"suite {suite} {base.version}: no number to increment for the next version")
    covered = _covered_incidents(con, versions, suite)
    json_suite = _suite_is_json(base.cases)
    schema = _json_schema_of(base.cases)
    suite_vars = {k for c in base.cases for k in (c.input.get("vars") or {})}
    existing = [(c.id, _fingerprint(c.input)) for c in base.cases]
    taken_ids = {c.id for c in base.cases}

    cases: list[dict[str, Any]] = []
    evidence_cases: dict[str, dict[str, Any]] = {}
    fingerprints: list[tuple[str, tuple[str, frozenset]]] = []
    skipped: list[dict[str, Any]] = []
    incident_rows: list[dict[str, Any]] = []
    for incident in _incidents(con, workflow, now, days):
        iid = incident["incident_id"]
        if iid in covered:
            continue
        trace_ids = _incident_trace_ids(con, incident)
        if not trace_ids:
            skipped.append({"incident_id": iid, "trace_id": None,
                            "reason": "no linked traces (link examples with `relops incident link`)"})
            continue
        traces = _read_traces(con, trace_ids)
        must_pass = _caused_rollback(con, incident)
        short, n, made = _short_id(iid), 0, []
        manifests: dict[str | None, dict[str, Any] | None] = {}
        ordered = sorted((traces[t] for t in trace_ids if t in traces),
                         key=lambda t: (t.start_time or datetime.min, t.trace_id))
        for t in trace_ids:
            if t not in traces:
                skipped.append({"incident_id": iid, "trace_id": t, "reason": "trace not in the warehouse"})
        for tr in ordered:
            def skip(reason: str, iid: str = iid, tr: _Trace = tr) -> None:
                skipped.append({"incident_id": iid, "trace_id": tr.trace_id, "reason": reason})

            if tr.input_truncated:
                skip("input truncated in the warehouse: the case would not be the production input")
                continue
            release = tr.release or incident.get("release")
            if release not in manifests:
                manifests[release] = _manifest(con, workflow, release)
            manifest = manifests[release]
            json_mode = json_suite or tr.json_output or _manifest_json(manifest)
            expected, why, tags = suggest_expectation(tr, json_mode=json_mode, schema=schema)
            if not expected:
                skip("no failure visible in the trace (not an error, refusal, truncation, invalid JSON or a "
                     "reviewer's fail): slowness and cost are gate budgets, not case expectations")
                continue
            template = ((manifest or {}).get("prompts") or {}).get("user")
            case_input, how = recover_input(tr.messages, template if isinstance(template, str) else None, suite_vars,
                                            tr.query)
            if case_input is None:
                skip(how)
                continue
            fp = _fingerprint(case_input)
            dup_suite = next((cid for cid, efp in existing if _near(fp, efp)), None)
            if dup_suite:
                skip(f"input already in suite {base.version} as case {dup_suite}")
                continue
            dup = next((cid for cid, pfp in fingerprints if _near(fp, pfp)), None)
            if dup:
                evidence_cases[dup]["duplicates"].append(tr.trace_id)
                continue
            n += 1
            case_id = f"inc-{short}-{n}"
            while case_id in taken_ids:
                n += 1
                case_id = f"inc-{short}-{n}"
            taken_ids.add(case_id)
            topic = tr.topic if isinstance(tr.topic, str) and tr.topic.strip() else None
            case = {"id": case_id, "input": case_input, "expected": expected,
                    "tags": list(dict.fromkeys(["incident", *tags, *([topic.strip()] if topic else [])])),
                    "must_pass": must_pass, "provenance": f"incident:{iid}"}
            cases.append(case)
            made.append(case_id)
            fingerprints.append((case_id, fp))
            bad, cut = _truncate(tr.output)
            evidence_cases[case_id] = {
                "incident_id": iid, "trace_id": tr.trace_id, "release": release,
                "start_time": tr.start_time.isoformat() if tr.start_time else None,
                "bad_output": bad, "bad_output_truncated": cut, "why": why, "input_from": how,
                "status": tr.status, "error_type": tr.error_type, "finish_reason": tr.finish_reason,
                "label": tr.label, "duplicates": [],
            }
        incident_rows.append({
            "incident_id": iid, "title": incident["title"], "release": incident.get("release"),
            "status": incident["status"], "opened_at": incident["opened_at"].isoformat(),
            "caused_rollback": must_pass, "traces_linked": len(trace_ids), "cases": made,
        })
    if not cases:
        return None

    warnings = _scorer_warnings(cases, scorer_types)
    with_cases = [r["incident_id"] for r in incident_rows if r["cases"]]
    k = len(cases)
    changelog = (f"{next_version}: +{k} case{'s' if k != 1 else ''} from "
                 f"incident{'s' if len(with_cases) != 1 else ''} {', '.join(with_cases)}")
    payload = {"suite": suite, "base_version": base.version, "base_hash": base.content_hash,
               "next_version": next_version, "changelog": changelog, "cases": cases, "incidents": with_cases}
    evidence = {"suite": suite, "base_version": base.version, "incidents": incident_rows,
                "cases": evidence_cases, "skipped": skipped, "warnings": warnings,
                "window_days": days, "as_of": now.isoformat()}
    title = f"suite {suite} {next_version}: +{k} case{'s' if k != 1 else ''} from {len(with_cases)} incident" \
            f"{'s' if len(with_cases) != 1 else ''}"
    report = render_report(title, payload, evidence)
    row = store.create_proposal(
        con, kind=KIND, workflow=workflow, period=period, title=title, payload=payload, evidence=evidence,
        base_version=base.version, report_md=report, dagster_run_id=dagster_run_id,
    )
    return row


def _scorer_warnings(cases: list[dict[str, Any]], scorer_types: Iterable[str | None] | None) -> list[str]:
    if scorer_types is None:
        return []
    have = set(scorer_types)
    out = []
    for key in sorted({k for c in cases for k in c["expected"]}):
        needed = SCORER_FOR_EXPECTATION.get(key, ())
        if needed and not have & set(needed):
            ids = [c["id"] for c in cases if key in c["expected"]]
            out.append(f"expected.{key} ({', '.join(ids)}) is read by a {' or '.join(needed)} scorer, which the "
                       f"workflow does not configure: add one or edit the cases")
    return out


def render_report(title: str, payload: Mapping[str, Any], evidence: Mapping[str, Any]) -> str:
    """The proposal as markdown for the reviewer: every case with its input, the bad output,
    why and the suggested expectation; skipped traces with reasons. Everything from traces and
    people is escaped."""
    lines = [f"# {escape_md(title)}", "",
             f"Base: suite {escape_md(payload['suite'])} {escape_md(payload['base_version'])}; "
             f"accepting creates {escape_md(payload['next_version'])} with the changelog line "
             f"\"{escape_md(payload['changelog'])}\". Nothing changes until the draft is accepted "
             "(`relops suite accept PROPOSAL --by NAME`).", ""]
    for warning in evidence.get("warnings") or []:
        lines.append(f"> Warning: {escape_md(warning)}")
    lines += ["", "## Incidents", "",
              md_table(["incident", "title", "release", "status", "caused rollback", "traces", "cases"],
                       [[r["incident_id"], r["title"], r["release"], r["status"], r["caused_rollback"],
                         r["traces_linked"], ", ".join(r["cases"]) or "-"] for r in evidence["incidents"]]), ""]
    lines += ["## Proposed cases", ""]
    for case in payload["cases"]:
        ev = evidence["cases"][case["id"]]
        lines += [f"### {escape_md(case['id'])}", "",
                  f"- incident {escape_md(ev['incident_id'])}, trace {code_span(ev['trace_id'])}, "
                  f"release {escape_md(ev['release'])}, at {escape_md(ev['start_time'])}",
                  f"- why: {escape_md('; '.join(ev['why']))}",
                  f"- must pass: {'yes (the incident caused a rollback)' if case['must_pass'] else 'no'}",
                  f"- tags: {escape_md(', '.join(case['tags']))}; input from {escape_md(ev['input_from'])}"]
        if ev["duplicates"]:
            lines.append(f"- near-identical traces merged here: {escape_md(', '.join(ev['duplicates']))}")
        lines += ["", "Input:", *fenced_block(json.dumps(case["input"], ensure_ascii=False, indent=2), "json"), "",
                  "Bad output" + (" (first 2,000 characters)" if ev["bad_output_truncated"] else "") + ":",
                  *fenced_block(ev["bad_output"] if ev["bad_output"] is not None else "(no output)"), "",
                  "Suggested expectation:",
                  *fenced_block(json.dumps(case["expected"], ensure_ascii=False, indent=2), "json"), ""]
    lines += ["## Skipped", "",
              md_table(["incident", "trace", "reason"],
                       [[s["incident_id"], s["trace_id"] or "-", s["reason"]] for s in evidence["skipped"]]), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Accept


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so a ticket reads as it was written."""


def _str_representer(dumper: yaml.SafeDumper, data: str):
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


_Dumper.add_representer(str, _str_representer)


def _compact(case: Mapping[str, Any]) -> dict[str, Any]:
    """A case as written in a suite file: defaults left out, keys in the documented order."""
    out: dict[str, Any] = {"id": case["id"], "input": case["input"]}
    if case.get("expected"):
        out["expected"] = case["expected"]
    if case.get("tags"):
        out["tags"] = list(case["tags"])
    if case.get("must_pass"):
        out["must_pass"] = True
    out["provenance"] = case.get("provenance") or "curated"
    return out


def render_suite_yaml(base_file: Path, base, payload: Mapping[str, Any], note: str) -> str:
    """The new suite file: the base file's leading comments plus `note`, then workflow, version,
    every changelog line plus the new one, and the base cases followed by the proposed ones."""
    head = []
    for line in Path(base_file).read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        head.append(line)
    doc = {
        "workflow": base.workflow,
        "version": payload["next_version"],
        "changelog": [*base.changelog, payload["changelog"]],
        "cases": [_compact(c.as_dict()) for c in base.cases] + [_compact(c) for c in payload["cases"]],
    }
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120, default_flow_style=False)
    return "\n".join([*head, f"# {note}", body])


def accept_suite_proposal(
    con: duckdb.DuckDBPyConnection,
    suites_dir: Path,
    proposal_id: str,
    *,
    by: str,
    reason: str | None = None,
) -> dict[str, Any]:
    """Accept a suite draft as proposed: write `<suites_dir>/<suite>/<next_version>.yaml`,
    validate and record it, and mark the proposal accepted with `by`, in one transaction (the
    file is removed again when recording fails). Refuses when the base version is no longer the
    latest or changed, or when the new version's file or warehouse row already exists.
    Returns {proposal_id, suite, workflow, version, base_version, path, cases_added, case_ids,
    content_hash}."""
    if not isinstance(by, str) or not by.strip():
        raise store.ProposalError("accepting a proposal needs who (--by NAME)")
    by = by.strip()
    proposal = store.require_draft(con, proposal_id, KIND)
    payload = proposal["payload"]
    suite_name, base_version, next_version = payload["suite"], payload["base_version"], payload["next_version"]
    folder = Path(suites_dir) / validate_key("workflow", suite_name)
    validate_key("version", next_version)
    versions = list_suite_versions(Path(suites_dir), suite_name)
    latest = versions[-1] if versions else None
    if latest is None or latest.version != base_version:
        raise SuiteProposalError(
            f"proposal {proposal_id} extends suite {suite_name} {base_version}, but the latest version is now "
            f"{latest.version if latest else 'none'}: re-run the suite proposal to build on it")
    if latest.content_hash != payload.get("base_hash"):
        raise SuiteProposalError(
            f"suite {suite_name} {base_version} changed since proposal {proposal_id} was made: re-run the proposal")
    target = folder / f"{next_version}.yaml"
    if target.exists() or (folder / f"{next_version}.yml").exists():
        raise SuiteProposalError(f"{target} already exists: re-run the suite proposal")
    if fetch_one(con.execute("SELECT count(*) FROM suite_versions WHERE workflow = ? AND version = ?",
                             [suite_name, next_version]))[0]:
        raise SuiteProposalError(f"suite {suite_name} {next_version} is already recorded in the warehouse: "
                                 "re-run the suite proposal")
    base_file = next(p for p in (folder / f"{base_version}.yaml", folder / f"{base_version}.yml") if p.exists())
    k = len(payload["cases"])
    reason = (reason or "").strip() or f"accepted {k} proposed case{'s' if k != 1 else ''} from incidents"
    text = render_suite_yaml(base_file, latest, payload,
                             f"{next_version}: cases from incidents proposed by relops ({proposal_id}), accepted by {by}")
    _validate_text(text, suite_name, base_version, next_version)

    tmp = folder / f".{next_version}.{os.getpid()}.partial"
    tmp.write_text(text, encoding="utf-8")
    try:
        os.link(tmp, target)  # fails when the target appeared meanwhile: never overwrite a version
    except FileExistsError:
        raise SuiteProposalError(f"{target} already exists: re-run the suite proposal") from None
    finally:
        tmp.unlink(missing_ok=True)
    try:
        with audit.transaction(con):
            suite = load_suite(target)
            written = {c.id: c.as_dict() for c in suite.cases}
            for case in payload["cases"]:
                want = Case(**{**_compact(case), "must_pass": bool(case.get("must_pass"))}).as_dict()
                if written.get(case["id"]) != want:
                    raise SuiteProposalError(f"case {case['id']} did not survive the YAML round trip; nothing recorded")
            record_suite_version(con, suite, str(target))
            audit.append_event(
                con, kind=audit.KIND_SUITE_VERSION, actor=by, reason=reason, workflow=proposal["workflow"],
                payload={"suite": suite_name, "version": next_version, "base_version": base_version,
                         "content_hash": suite.content_hash, "cases": len(suite.cases), "cases_added": k,
                         "proposal_id": proposal_id, "file": str(target)},
            )
            store.mark_accepted(con, proposal_id, by=by, reason=reason, result_version=next_version, kind=KIND)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return {"proposal_id": proposal_id, "suite": suite_name, "workflow": proposal["workflow"],
            "version": next_version, "base_version": base_version, "path": str(target), "cases_added": k,
            "case_ids": [c["id"] for c in payload["cases"]], "content_hash": suite.content_hash}


def _validate_text(text: str, suite_name: str, base_version: str, next_version: str) -> None:
    """Validate the new file where the folder checks apply (same folder name, an earlier sibling
    version so the changelog rule is enforced) before anything is written to the suites folder."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "suites" / suite_name
        folder.mkdir(parents=True)
        if version_sort_key(base_version) < version_sort_key(next_version):
            (folder / f"{base_version}.yaml").write_text("", encoding="utf-8")  # only its name is looked at
        path = folder / f"{next_version}.yaml"
        path.write_text(text, encoding="utf-8")
        problems = validate_suite_file(path)
    if problems:
        raise SuiteProposalError("the new suite file would not be valid:\n" + "\n".join(f"  {p}" for p in problems))
