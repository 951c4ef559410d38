"""Import results of existing eval harnesses as an eval run of one release.

`import_results(path, fmt, *, workflow, version, variant=None, suite_version=None)` reads a
promptfoo output, an Inspect AI log or a relops JSONL file and returns an `EvalRunData`
(source `import:<format>`). `fmt` is "promptfoo", "inspect" or "jsonl"; None detects it from
the content (`detect_format`). An import is all-or-nothing: any problem raises
`ImportFormatError` (a ValueError) naming the file and listing every problem found.

Common rules
------------
- Scores are in [0, 1]. A harness score outside that range is clamped and the run's notes count
  the clamps (relops JSONL is strict instead: out of range is an error).
- A sample with an error gets, for each metric that applies to its case and that it lacks,
  score 0 / passed False / detail "sample error: ..." (as a relops runner does). The metrics
  that apply to a case are those recorded for any of its samples, plus the assertions promptfoo
  lists for the test, plus (Inspect) every metric recorded anywhere in the log.
- `suite_version` defaults to `imported-<12 hex>`: a hash of the sorted case ids with their
  inputs where the file has them (promptfoo vars, Inspect input + target; ids only for JSONL),
  so two imports of the same test set share a suite version and can be compared.
- `notes` say where the run came from (format, file, harness run id, model/provider, variant)
  and everything that was not imported or was adjusted, with counts.
- `SampleResult.raw` keeps the harness ids and the case input (promptfoo vars / Inspect input),
  so a suite can be rebuilt from an import.

relops JSONL (`--format jsonl`)
-------------------------------
UTF-8, one JSON object per line, one line per case x sample; blank lines are ignored::

    {"case_id": "refund-001", "sample": 0, "output": "Refund issued.",
     "scores": {"contains": 1, "polite": true, "judge": {"score": 0.7, "passed": true, "detail": "ok"}},
     "must_pass": true, "latency_ms": 812.5, "cost_usd": 0.00031,
     "input_tokens": 120, "output_tokens": 14, "error": null, "metadata": {"any": "thing"}}

- `case_id` (required): 1-128 characters of A-Z a-z 0-9 _ . : -
- `sample` (required): integer >= 0; each (case_id, sample) pair at most once.
- `output`: string or null. `error`: string or null (the sample errored or timed out).
  A line needs an output or an error.
- `scores`: object metric -> a number in [0, 1] (passed when >= 0.5), a boolean (1 / 0), or an
  object {"score": number in [0, 1], "passed"?: bool, "detail"?: string}. Metric names are
  1-128 characters of A-Z a-z 0-9 _ . : / -. May be omitted or empty on error lines.
- `must_pass`: boolean (default false); it may be given on one line of a case or on several,
  but the values given must agree.
- `latency_ms`, `cost_usd` (numbers >= 0), `input_tokens`, `output_tokens` (integers >= 0),
  `attempts` (integer >= 1), `metadata` (object, kept in `raw`). Any other key is an error, so a
  misspelt field is reported instead of ignored.

promptfoo output JSON (`promptfoo eval -o out.json`), layouts v1, v2 and v3
---------------------------------------------------------------------------
- One result = one test x prompt x provider. A relops release is one prompt + one model, so
  each (provider, prompt) pair of the file is a *variant*. A file with one variant imports
  directly. A file with several is refused with a message listing them; pick one with
  `variant=` (CLI `--variant`): its index, the provider id or label, the prompt label, or
  (a prefix of at least 6 characters of) the prompt id. The other variants' results are
  counted in the notes. Merging variants would mix two releases in one run.
- Case id: `<slug>-<10 hex>`, the hex a sha256 of the test's description and vars (canonical
  JSON), the slug from the description or else the var values. The same test gets the same id in
  every run; asserts are left out so that changing a threshold does not rename the case.
- Repeats (`--repeat N`) are results with the same description and vars (promptfoo gives each
  repeat its own testIdx); they become samples 0..N-1 in testIdx order (file order in v1/v2,
  which have no testIdx). Two tests with identical description and vars are indistinguishable
  from repeats and become samples of one case.
- Scores: each `gradingResult.componentResults[i]` -> metric named by the assertion's `metric`,
  else its `type` (a repeated name gets `_2`, `_3`, ... in assertion order); its score, clamped
  to [0, 1], and its pass flag. The overall outcome -> metric `pass` (1 / 0 from `success`),
  the detail carrying promptfoo's aggregate score and reason. v1/v2 files have only `pass`.
- Errors: promptfoo sets `error` also when an assertion fails. A sample is an error only when
  `failureReason` is 2 (ERROR) or, without `failureReason`, when the response carries an error
  or there is no response. Assertion failures are scores, not errors.
- `latencyMs` -> latency_ms, `cost` -> cost_usd, `response.tokenUsage.prompt/completion` ->
  tokens (None for cached responses that report only `cached`). `testCase.metadata.must_pass`
  (true on any result of the test) -> must_pass. promptfoo JSONL/CSV/YAML outputs are not read.

Inspect AI logs (`.json`, or `.eval` zip archives read with zipfile + json)
---------------------------------------------------------------------------
- Case id: the sample id (kept when it is a valid case id, else slug + hash). `epoch` (1-based)
  -> sample `epoch - 1`.
- Scores: one metric per scorer (the key of `sample.scores`); a dict value gives one metric per
  key, named `<scorer>.<key>`. Values: "C" = 1 (passed), "I" = 0, "P" = 0.5 (partial: not
  passed), "N" = 0 (no answer); "yes"/"true" = 1, "no"/"false" = 0; booleans 1/0; numbers and
  numeric strings as they are (passed when >= 0.5, clamped to [0, 1]). A value that cannot be
  mapped (None, lists, other strings) is left out and counted in the notes. Inspect's epoch
  reductions are not imported: relops computes its own statistics over samples.
- Output: `output.completion`, else the text of `output.choices[0].message.content`.
- Tokens: the model calls made outside scorers (model events), so a model-graded scorer's
  grader calls are not billed to the release; without events `output.usage`, then
  `model_usage`. Latency: `total_time` minus time spent inside scorers, else `output.time`
  (one generate call) — all seconds, converted to ms. Cost: `total_cost` of the usage if any.
- Error: `sample.error` (message). `sample.metadata.must_pass` (true in any epoch) -> must_pass.
- A log with no samples (e.g. written with `--no-log-samples`) is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from relops_pipeline.lib.evals.model import EvalRunData, SampleResult, Score

__all__ = [
    "FORMATS",
    "ImportFormatError",
    "detect_format",
    "import_results",
    "list_variants",
    "PASS_THRESHOLD",
]

FORMATS = ("promptfoo", "inspect", "jsonl")
_ALIASES = {"inspect_ai": "inspect", "inspect-ai": "inspect", "relops": "jsonl", "relops-jsonl": "jsonl"}
PASS_THRESHOLD = 0.5  # a bare number from a harness counts as passed at or above this
CASE_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
METRIC_RE = re.compile(r"^[A-Za-z0-9_.:/-]{1,128}$")
_MAX_LISTED = 50


class ImportFormatError(ValueError):
    """A file that cannot be imported; the message names the file and lists every problem."""

    def __init__(self, path: Path | str, summary: str, problems: list[str] | None = None):
        self.path = str(path)
        self.problems = list(problems or [])
        lines = [f"{self.path}: {summary}"]
        for p in self.problems[:_MAX_LISTED]:
            lines.append(f"  - {p}")
        if len(self.problems) > _MAX_LISTED:
            lines.append(f"  ... and {len(self.problems) - _MAX_LISTED} more")
        super().__init__("\n".join(lines))


# --- helpers -------------------------------------------------------------------------------


def _short(text: Any, limit: int = 200) -> str:
    s = str(text)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int_or_none(v: Any) -> int | None:
    if _is_num(v) and float(v).is_integer():
        return int(v)
    return None


def _num_or_none(v: Any) -> float | None:
    return float(v) if _is_num(v) else None


def _hash(obj: Any, n: int = 10) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def _slug(text: str, limit: int = 60) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return s[:limit].rstrip("-")


def _safe_case_id(raw: Any) -> str:
    s = str(raw)
    if CASE_ID_RE.match(s):
        return s
    return f"{_slug(s, 100) or 'case'}-{_hash(s)}"


def _text_of(content: Any) -> str | None:
    if content is None:
        return None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        if parts:
            return "".join(parts)
    return json.dumps(content, ensure_ascii=False, separators=(",", ":"), default=str)


@dataclass
class _Clamp:
    count: int = 0

    def __call__(self, value: float) -> float:
        c = min(1.0, max(0.0, value))
        if c != value:
            self.count += 1
        return c


@dataclass
class _Built:
    """What a format parser hands to `_finish`."""

    samples: list[SampleResult]
    scores: dict[tuple[str, int], list[Score]]
    must_pass: dict[str, bool]
    case_ids: list[str]
    expected_metrics: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    case_inputs: dict[str, Any] = field(default_factory=dict)


# --- detection -----------------------------------------------------------------------------


def _looks_inspect(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("eval"), dict) and (
        "samples" in doc or "results" in doc or "status" in doc)


def _looks_promptfoo(doc: Any) -> bool:
    if not isinstance(doc, dict):
        return False
    r = doc.get("results")
    return (isinstance(r, dict) and isinstance(r.get("results"), list)) or (
        isinstance(r, list) and ("table" in doc or "stats" in doc or "version" in doc))


def detect_format(path: Path) -> str:
    """Guess the format from the content: a zip is an Inspect .eval log; a JSON document with an
    `eval` object is an Inspect log, one with a `results` list (or `results.results`) a promptfoo
    output; lines of JSON objects with `case_id` are relops JSONL. Raises ImportFormatError."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise ImportFormatError(path, f"cannot read the file: {exc}") from None
    if head == b"PK\x03\x04":
        return "inspect"
    text = _read_text(path)
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    else:
        if _looks_inspect(doc):
            return "inspect"
        if _looks_promptfoo(doc):
            return "promptfoo"
        if isinstance(doc, dict) and "case_id" in doc:
            return "jsonl"
    first = next((ln for ln in text.split("\n") if ln.strip()), "")
    try:
        obj = json.loads(first)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and "case_id" in obj:
        return "jsonl"
    raise ImportFormatError(
        path,
        "cannot tell the format: expected a promptfoo output (JSON with 'results'), an Inspect log "
        "(.eval zip or JSON with 'eval' and 'samples') or relops JSONL (lines with 'case_id'); "
        "pass --format promptfoo|inspect|jsonl",
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportFormatError(path, f"not UTF-8 text ({exc})") from None
    except OSError as exc:
        raise ImportFormatError(path, f"cannot read the file: {exc}") from None


def _load_json(path: Path, what: str) -> Any:
    text = _read_text(path)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ImportFormatError(path, f"not valid JSON for a {what}: {exc}") from None


# --- entry points --------------------------------------------------------------------------


def _norm_format(fmt: str | None, path: Path) -> str:
    if fmt is None:
        return detect_format(path)
    f = _ALIASES.get(fmt.lower(), fmt.lower())
    if f not in FORMATS:
        raise ImportFormatError(path, f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return f


def import_results(
    path: Path,
    fmt: str | None,
    *,
    workflow: str,
    version: str,
    variant: str | int | None = None,
    suite_version: str | None = None,
) -> EvalRunData:
    """Read a harness result file as an eval run of release `workflow`/`version`.

    `fmt`: "promptfoo" | "inspect" | "jsonl" or None to detect. `variant` picks one
    provider+prompt of a promptfoo file that has several (see `list_variants`). `suite_version`
    defaults to `imported-<hash of the case ids>`. Raises ImportFormatError (a ValueError) naming
    the file and every problem; nothing is imported then.
    """
    path = Path(path)
    if not path.is_file():
        raise ImportFormatError(path, "no such file")
    f = _norm_format(fmt, path)
    if variant is not None and f != "promptfoo":
        raise ImportFormatError(path, f"variant= applies to promptfoo outputs only, not {f}")
    if f == "promptfoo":
        built = _promptfoo(path, variant)
    elif f == "inspect":
        built = _inspect(path)
    else:
        built = _jsonl(path)
    return _finish(built, path, f, workflow=workflow, version=version, suite_version=suite_version)


def list_variants(path: Path, fmt: str | None = None) -> list[str]:
    """The provider+prompt variants of a result file, one description per variant (promptfoo
    files may have several; Inspect logs and relops JSONL have one)."""
    path = Path(path)
    f = _norm_format(fmt, path)
    if f != "promptfoo":
        return [f"[0] {f} file (single variant)"]
    doc = _load_json(path, "promptfoo output")
    layout = _pf_layout(path, doc)
    return [v.describe() for v in _pf_variants(layout)]


def _finish(built: _Built, path: Path, fmt: str, *, workflow: str, version: str,
            suite_version: str | None) -> EvalRunData:
    if not built.samples:
        raise ImportFormatError(path, "no samples to import")
    # Errored samples: fill in the metrics that apply to their case (see the module docstring).
    per_case: dict[str, list[str]] = {cid: list(ms) for cid, ms in built.expected_metrics.items()}
    for (cid, _), scores in built.scores.items():
        names = per_case.setdefault(cid, [])
        for s in scores:
            if s.metric not in names:
                names.append(s.metric)
    filled = 0
    for s in built.samples:
        if s.error is None:
            continue
        have = built.scores.setdefault((s.case_id, s.sample), [])
        present = {x.metric for x in have}
        for m in per_case.get(s.case_id, []):
            if m not in present:
                have.append(Score(m, 0.0, False, f"sample error: {_short(s.error, 300)}"))
                filled += 1
    if filled:
        built.notes.append(f"{filled} score(s) set to 0 for errored samples (metrics that apply to their case)")
    for key, scores in built.scores.items():
        for s in scores:
            if not (0.0 <= s.score <= 1.0):  # parsers clamp; this guards the contract
                raise ImportFormatError(path, f"internal: score {s.score!r} out of [0, 1] for {key} {s.metric}")
    if suite_version is None:
        suite_version = f"imported-{_hash(sorted([c, built.case_inputs.get(c)] for c in built.case_ids), 12)}"
    n_scores = sum(len(v) for v in built.scores.values())
    if not n_scores:
        built.notes.append("the file holds no scores: only outputs, errors, latency and cost were imported")
    built.notes.insert(0, f"imported {fmt} file {path.name}: {len(built.case_ids)} cases, "
                          f"{len(built.samples)} samples, {n_scores} scores")
    return EvalRunData(
        workflow=workflow,
        version=version,
        suite_version=suite_version,
        source=f"import:{fmt}",
        samples=built.samples,
        scores=built.scores,
        must_pass={cid: bool(built.must_pass.get(cid, False)) for cid in built.case_ids},
        case_ids=built.case_ids,
        notes=built.notes,
    )


def _assign_samples(rows: list[tuple[str, Any]]) -> list[int]:
    """Sample index per row: 0, 1, ... per case id in the given order."""
    seen: dict[str, int] = {}
    out = []
    for cid, _ in rows:
        out.append(seen.get(cid, 0))
        seen[cid] = out[-1] + 1
    return out


# --- promptfoo -----------------------------------------------------------------------------


@dataclass
class _PfLayout:
    version: int
    results: list[Any]
    container: dict[str, Any]
    doc: dict[str, Any]


@dataclass
class _PfVariant:
    index: int
    key: tuple
    provider_id: str | None
    provider_label: str | None
    prompt_label: str | None
    prompt_id: str | None

    def describe(self) -> str:
        pid = f" (prompt id {self.prompt_id[:12]})" if self.prompt_id else ""
        prov = self.provider_id or "unknown provider"
        if self.provider_label:
            prov += f" [{self.provider_label}]"
        return f"[{self.index}] provider={prov} prompt={_short(self.prompt_label or '?', 80)!r}{pid}"

    def selectors(self) -> set[str]:
        return {s for s in (str(self.index), self.provider_id, self.provider_label, self.prompt_label,
                            self.prompt_id) if s}


def _pf_layout(path: Path, doc: Any) -> _PfLayout:
    if not isinstance(doc, dict):
        raise ImportFormatError(path, "a promptfoo output is a JSON object with 'results'")
    r = doc.get("results")
    if isinstance(r, dict) and isinstance(r.get("results"), list):
        v = r.get("version")
        version = v if v in (2, 3) else (3 if isinstance(r.get("prompts"), list) else 2)
        return _PfLayout(version, r["results"], r, doc)
    if isinstance(r, list):
        return _PfLayout(doc.get("version") if doc.get("version") in (1, 2) else 1, r, doc, doc)
    raise ImportFormatError(path, "not a promptfoo output: no 'results' list (v1) or 'results.results' list (v2/v3)")


def _pf_config_provider(doc: dict[str, Any]) -> str | None:
    provs = (doc.get("config") or {}).get("providers") if isinstance(doc.get("config"), dict) else None
    if isinstance(provs, list) and len(provs) == 1:
        p = provs[0]
        if isinstance(p, str):
            return p
        if isinstance(p, dict) and isinstance(p.get("id"), str):
            return p["id"]
    return None


def _pf_provider(r: dict[str, Any], layout: _PfLayout) -> tuple[str | None, str | None]:
    p = r.get("provider")
    if isinstance(p, dict):
        return (p.get("id") if isinstance(p.get("id"), str) else None,
                p.get("label") if isinstance(p.get("label"), str) and p.get("label") else None)
    if isinstance(p, str):
        return p, None
    return _pf_config_provider(layout.doc), None


def _pf_prompt_label(r: dict[str, Any]) -> str | None:
    p = r.get("prompt")
    if isinstance(p, dict):
        for k in ("label", "display", "raw"):
            if isinstance(p.get(k), str):
                return p[k]
    return p if isinstance(p, str) else None


def _pf_variant_key(r: dict[str, Any], layout: _PfLayout) -> tuple:
    if layout.version == 3 and _int_or_none(r.get("promptIdx")) is not None:
        return ("idx", int(r["promptIdx"]))
    prov, label = _pf_provider(r, layout)
    return ("pp", label or prov, r.get("promptId") or _pf_prompt_label(r))


def _pf_variants(layout: _PfLayout) -> list[_PfVariant]:
    found: dict[tuple, _PfVariant] = {}
    for r in layout.results:
        if not isinstance(r, dict):
            continue
        key = _pf_variant_key(r, layout)
        if key in found:
            continue
        prov, plabel = _pf_provider(r, layout)
        found[key] = _PfVariant(0, key, prov, plabel, _pf_prompt_label(r),
                                r.get("promptId") if isinstance(r.get("promptId"), str) else None)
    # v3 lists the provider x prompt pairs in results.prompts (promptIdx indexes it)
    prompts = layout.container.get("prompts") if layout.version == 3 else None
    if isinstance(prompts, list):
        for i, p in enumerate(prompts):
            if ("idx", i) in found and isinstance(p, dict):
                v = found[("idx", i)]
                v.provider_id = p.get("provider") if isinstance(p.get("provider"), str) else v.provider_id
                v.prompt_label = p.get("label") or v.prompt_label
                v.prompt_id = p.get("id") or v.prompt_id
    order: list[tuple] = list(found)
    if layout.version == 3:
        order.sort(key=lambda k: (0, k[1]) if k[0] == "idx" else (1, 0))
    else:
        head = ((layout.container.get("table") or {}).get("head") or {}).get("prompts")
        if isinstance(head, list):
            texts = [h.get("display") or h.get("raw") if isinstance(h, dict) else h for h in head]
            order.sort(key=lambda k: texts.index(k[2]) if k[2] in texts else len(texts))
    out = []
    for i, k in enumerate(order):
        v = found[k]
        v.index = i
        out.append(v)
    return out


def _pf_pick(path: Path, variants: list[_PfVariant], variant: str | int | None) -> _PfVariant:
    listing = [v.describe() for v in variants]
    if variant is None:
        if len(variants) == 1:
            return variants[0]
        raise ImportFormatError(
            path,
            f"this promptfoo output holds {len(variants)} provider/prompt variants and a release is one of "
            f"them; pick one with --variant (an index, a provider id or label, a prompt label, or a prompt "
            f"id prefix):",
            listing,
        )
    want = str(variant)
    hits = [v for v in variants
            if want in v.selectors() or (len(want) >= 6 and v.prompt_id and v.prompt_id.startswith(want))]
    if len(hits) == 1:
        return hits[0]
    what = "matches no variant" if not hits else f"matches {len(hits)} variants"
    raise ImportFormatError(path, f"--variant {want!r} {what}; the variants are:", listing)


def _pf_case(r: dict[str, Any]) -> tuple[str, dict[str, Any], str | None, dict[str, Any]]:
    tc = r.get("testCase") if isinstance(r.get("testCase"), dict) else {}
    vars_ = r.get("vars") if isinstance(r.get("vars"), dict) else tc.get("vars")
    vars_ = vars_ if isinstance(vars_, dict) else {}
    desc = tc.get("description") if isinstance(tc.get("description"), str) else r.get("description")
    desc = desc if isinstance(desc, str) and desc else None
    digest = _hash({"description": desc, "vars": vars_})
    if desc:
        slug = _slug(desc)
    else:
        slug = _slug(" ".join(_short(json.dumps(vars_[k], ensure_ascii=False, default=str)
                                     if not isinstance(vars_[k], str) else vars_[k], 40)
                              for k in sorted(vars_)))
    return f"{slug or 'case'}-{digest}", vars_, desc, tc


def _pf_metric_names(assertions: list[Any]) -> list[str]:
    names: list[str] = []
    counts: dict[str, int] = {}
    for i, a in enumerate(assertions):
        a = a if isinstance(a, dict) else {}
        base = a.get("metric") or a.get("type") or f"assertion_{i + 1}"
        base = str(base)
        if base == "pass":
            base = "pass_assertion"  # 'pass' is the overall outcome
        counts[base] = counts.get(base, 0) + 1
        names.append(base if counts[base] == 1 else f"{base}_{counts[base]}")
    return names


def _pf_error(r: dict[str, Any]) -> str | None:
    resp = r.get("response")
    fr = r.get("failureReason")
    if fr == 2:
        e = r.get("error") or (resp.get("error") if isinstance(resp, dict) else None)
        return str(e) if e else "promptfoo reported an error"
    if fr in (0, 1):
        return None
    if isinstance(resp, dict) and resp.get("error"):
        return str(resp["error"])
    if not isinstance(resp, dict):
        return str(r.get("error") or "no response")
    return None


def _promptfoo(path: Path, variant: str | int | None) -> _Built:
    doc = _load_json(path, "promptfoo output")
    layout = _pf_layout(path, doc)
    problems = [f"results[{i}]: expected an object, got {type(r).__name__}"
                for i, r in enumerate(layout.results) if not isinstance(r, dict)]
    if problems:
        raise ImportFormatError(path, "malformed promptfoo results", problems)
    if not layout.results:
        raise ImportFormatError(path, "the promptfoo output has no results")
    variants = _pf_variants(layout)
    chosen = _pf_pick(path, variants, variant)

    picked = [(i, r) for i, r in enumerate(layout.results) if _pf_variant_key(r, layout) == chosen.key]
    picked.sort(key=lambda ir: (_int_or_none(ir[1].get("testIdx")) if _int_or_none(ir[1].get("testIdx"))
                                is not None else ir[0], ir[0]))
    clamp = _Clamp()
    rows = []
    for i, r in picked:
        cid, vars_, desc, tc = _pf_case(r)
        rows.append((cid, (i, r, vars_, desc, tc)))
    sample_idx = _assign_samples(rows)

    samples: list[SampleResult] = []
    scores: dict[tuple[str, int], list[Score]] = {}
    must_pass: dict[str, bool] = {}
    expected: dict[str, list[str]] = {}
    case_ids: list[str] = []
    no_asserts = 0
    for (cid, (i, r, vars_, desc, tc)), k in zip(rows, sample_idx, strict=False):
        if cid not in must_pass:
            case_ids.append(cid)
        mp = tc["metadata"].get("must_pass") if isinstance(tc.get("metadata"), dict) else None
        must_pass[cid] = must_pass.get(cid, False) or mp is True
        resp = r.get("response") if isinstance(r.get("response"), dict) else {}
        usage = resp.get("tokenUsage") if isinstance(resp.get("tokenUsage"), dict) else {}
        error = _pf_error(r)
        out = resp.get("output")
        samples.append(SampleResult(
            case_id=cid, sample=k,
            output=None if out is None else (out if isinstance(out, str) else _text_of(out)),
            error=error,
            latency_ms=_num_or_none(r.get("latencyMs")),
            input_tokens=_int_or_none(usage.get("prompt")),
            output_tokens=_int_or_none(usage.get("completion")),
            cost_usd=_num_or_none(r.get("cost")) if _is_num(r.get("cost")) else _num_or_none(resp.get("cost")),
            raw={"format": "promptfoo", "result_index": i, "id": r.get("id"), "testIdx": r.get("testIdx"),
                 "promptIdx": r.get("promptIdx"), "input": {"vars": vars_}, "description": desc},
        ))
        gr = r.get("gradingResult") if isinstance(r.get("gradingResult"), dict) else None
        comps = [c for c in (gr.get("componentResults") or []) if isinstance(c, dict)] if gr else []
        asserts = tc.get("assert") if isinstance(tc.get("assert"), list) else []
        names = _pf_metric_names([c.get("assertion") for c in comps] if comps else asserts)
        expected.setdefault(cid, ["pass"])
        for n in names:
            if n not in expected[cid]:
                expected[cid].append(n)
        sc: list[Score] = []
        success = bool(r.get("success")) if error is None else False
        if error is not None:
            sc.append(Score("pass", 0.0, False, f"sample error: {_short(error, 300)}"))
        else:
            agg = r.get("score", gr.get("score") if gr else None)
            reason = gr.get("reason") if gr else None
            if reason == "No assertions" or (gr is None and not asserts):
                no_asserts += 1
            detail = "; ".join(x for x in (f"promptfoo score {agg:g}" if _is_num(agg) else None,
                                           _short(reason, 200) if reason else None) if x)
            sc.append(Score("pass", 1.0 if success else 0.0, success, detail or None))
        for c, n in zip(comps, names, strict=False):
            s = c.get("score")
            p = c.get("pass")
            passed = bool(p) if isinstance(p, bool) else (_is_num(s) and s >= PASS_THRESHOLD)
            value = clamp(float(s)) if _is_num(s) else (1.0 if passed else 0.0)
            sc.append(Score(n, value, passed, _short(c.get("reason"), 200) if c.get("reason") else None))
        scores[(cid, k)] = sc

    meta = [f"promptfoo output v{layout.version}"]
    if layout.doc.get("evalId"):
        meta.append(f"evalId {layout.doc['evalId']}")
    notes = [", ".join(meta) + f"; variant {chosen.describe()}"]
    others = len(layout.results) - len(picked)
    if others:
        notes.append(f"{others} result(s) of {len(variants) - 1} other variant(s) not imported "
                     f"(one release per provider+prompt)")
    repeats = len(picked) - len(case_ids)
    if repeats:
        notes.append(f"{repeats} result(s) are repeats of a test (same description and vars) -> extra samples")
    if no_asserts:
        notes.append(f"{no_asserts} result(s) had no assertions: their 'pass' is promptfoo's default success")
    if clamp.count:
        notes.append(f"{clamp.count} assertion score(s) outside [0, 1] clamped")
    inputs = {cid: {"description": desc, "vars": vars_} for cid, (_, _, vars_, desc, _) in rows}
    return _Built(samples, scores, must_pass, case_ids, expected, notes, inputs)


# --- Inspect AI ----------------------------------------------------------------------------


def _inspect_load(path: Path) -> tuple[dict[str, Any], list[Any], list[str]]:
    notes: list[str] = []
    with path.open("rb") as fh:
        is_zip = fh.read(4) == b"PK\x03\x04"
    if not is_zip:
        doc = _load_json(path, "Inspect log")
        if not isinstance(doc, dict) or not isinstance(doc.get("eval"), dict):
            raise ImportFormatError(path, "not an Inspect log: no 'eval' object")
        samples = doc.get("samples")
        return doc, samples if isinstance(samples, list) else [], notes
    try:
        z = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ImportFormatError(path, f"not a readable .eval (zip) archive: {exc}") from None
    with z:
        names = z.namelist()

        def read(name: str) -> Any:
            try:
                return json.loads(z.read(name))
            except (ValueError, KeyError, zipfile.BadZipFile) as exc:
                raise ImportFormatError(path, f"{name} inside the archive is not readable JSON: {exc}") from None

        if "header.json" in names:
            header = read("header.json")
        elif "_journal/start.json" in names:
            header = read("_journal/start.json")
            notes.append("no header.json in the .eval archive (run unfinished?): read _journal/start.json")
        else:
            raise ImportFormatError(path, "not an Inspect .eval log: no header.json or _journal/start.json")
        if not isinstance(header, dict) or not isinstance(header.get("eval"), dict):
            raise ImportFormatError(path, "not an Inspect .eval log: the header has no 'eval' object")
        sample_files = sorted(n for n in names if n.startswith("samples/") and n.endswith(".json"))
        samples = [read(n) for n in sample_files]
    return header, samples, notes


def _inspect_value(v: Any) -> tuple[float, bool] | None:
    if isinstance(v, bool):
        return (1.0 if v else 0.0), v
    if _is_num(v):
        return float(v), v >= PASS_THRESHOLD
    if isinstance(v, str):
        s = v.strip()
        letter = {"C": (1.0, True), "I": (0.0, False), "P": (0.5, False), "N": (0.0, False)}
        if s in letter:
            return letter[s]
        if s.lower() in ("yes", "true"):
            return 1.0, True
        if s.lower() in ("no", "false"):
            return 0.0, False
        try:
            f = float(s)
        except ValueError:
            return None
        if math.isfinite(f):
            return f, f >= PASS_THRESHOLD
    return None


def _parse_ts(s: Any) -> datetime | None:
    if not isinstance(s, str):
        return None
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None


def _inspect_events(sample: dict[str, Any]) -> list[dict[str, Any]]:
    ev = sample.get("events")
    if not isinstance(ev, list):
        tr = sample.get("transcript")
        ev = tr.get("events") if isinstance(tr, dict) else None
    return [e for e in ev or [] if isinstance(e, dict)]


def _inspect_solver_usage(events: list[dict[str, Any]]) -> tuple[dict[str, float] | None, float]:
    """Token usage of model calls outside scorers, and seconds spent inside scorers."""
    parent: dict[str, str | None] = {}
    kind: dict[str, str | None] = {}
    begin: dict[str, datetime | None] = {}
    scorer_s = 0.0
    step_depth = 0
    step_begin: list[datetime | None] = []
    usage: dict[str, float] | None = None

    def in_scorer(span: Any) -> bool:
        seen = set()
        while isinstance(span, str) and span not in seen:
            seen.add(span)
            if kind.get(span) == "scorer":
                return True
            span = parent.get(span)
        return False

    for e in events:
        et = e.get("event")
        if et == "span_begin" and isinstance(e.get("id"), str):
            parent[e["id"]] = e.get("parent_id")
            kind[e["id"]] = e.get("type")
            begin[e["id"]] = _parse_ts(e.get("timestamp"))
        elif et == "span_end" and kind.get(e.get("id")) == "scorer" and not in_scorer(parent.get(e.get("id"))):
            t0, t1 = begin.get(e["id"]), _parse_ts(e.get("timestamp"))
            if t0 and t1:
                scorer_s += (t1 - t0).total_seconds()
        elif et == "step" and e.get("type") == "scorer":
            if e.get("action") == "begin":
                step_depth += 1
                step_begin.append(_parse_ts(e.get("timestamp")))
            elif e.get("action") == "end" and step_depth:
                step_depth -= 1
                t0, t1 = step_begin.pop(), _parse_ts(e.get("timestamp"))
                if t0 and t1 and not step_depth:
                    scorer_s += (t1 - t0).total_seconds()
        elif et == "model":
            if step_depth or in_scorer(e.get("span_id")):
                continue
            u = (e.get("output") or {}).get("usage") if isinstance(e.get("output"), dict) else None
            if isinstance(u, dict):
                usage = usage or {}
                for key in ("input_tokens", "output_tokens", "total_cost"):
                    if _is_num(u.get(key)):
                        usage[key] = usage.get(key, 0) + u[key]
    return usage, scorer_s


def _inspect(path: Path) -> _Built:
    header, raw_samples, notes = _inspect_load(path)
    ev = header["eval"]
    problems: list[str] = []
    if not raw_samples:
        raise ImportFormatError(path, f"the Inspect log has no samples (status {header.get('status')!r}; "
                                      f"logs written with --no-log-samples cannot be imported)")
    seen: dict[tuple[str, int], int] = {}
    rows = []
    for i, s in enumerate(raw_samples):
        where = f"sample #{i + 1}"
        if not isinstance(s, dict):
            problems.append(f"{where}: expected an object")
            continue
        sid = s.get("id")
        if sid is None or (isinstance(sid, str) and not sid) or not isinstance(sid, (str, int)) or isinstance(sid, bool):
            problems.append(f"{where}: missing or invalid id {sid!r}")
            continue
        epoch = s.get("epoch", 1)
        if _int_or_none(epoch) is None or epoch < 1:
            problems.append(f"{where} (id {sid!r}): invalid epoch {epoch!r}")
            continue
        cid = _safe_case_id(sid)
        key = (cid, int(epoch) - 1)
        if key in seen:
            problems.append(f"{where}: id {sid!r} epoch {epoch} appears twice")
            continue
        seen[key] = i
        rows.append((key, s))
    if problems:
        raise ImportFormatError(path, "malformed Inspect samples", problems)

    def sort_key(item):
        (cid, k), s = item
        sid = s["id"]
        return (0, sid, "", k) if isinstance(sid, int) else (1, 0, str(sid), k)

    rows.sort(key=sort_key)
    model = ev.get("model") if isinstance(ev.get("model"), str) else None
    clamp = _Clamp()
    unmapped = 0
    samples: list[SampleResult] = []
    scores: dict[tuple[str, int], list[Score]] = {}
    must_pass: dict[str, bool] = {}
    case_ids: list[str] = []
    all_metrics: list[str] = []
    latency_sources: dict[str, int] = {}
    for (cid, k), s in rows:
        if cid not in must_pass:
            case_ids.append(cid)
        mp = s["metadata"].get("must_pass") if isinstance(s.get("metadata"), dict) else None
        must_pass[cid] = must_pass.get(cid, False) or mp is True
        out = s.get("output") if isinstance(s.get("output"), dict) else {}
        text = out.get("completion") if isinstance(out.get("completion"), str) and out.get("completion") else None
        if text is None:
            choices = out.get("choices")
            if isinstance(choices, list) and choices and isinstance(choices[0], dict):
                msg = choices[0].get("message")
                text = _text_of(msg.get("content")) if isinstance(msg, dict) else None
        err = s.get("error")
        if isinstance(err, dict):
            err = err.get("message") or json.dumps(err, default=str)
        error = str(err) if err else None

        usage, scorer_s = _inspect_solver_usage(_inspect_events(s))
        if usage is None and isinstance(out.get("usage"), dict):
            usage = out["usage"]
        if usage is None and isinstance(s.get("model_usage"), dict):
            mu = s["model_usage"]
            usage = mu.get(model) if isinstance(mu.get(model), dict) else None
        usage = usage or {}
        if _is_num(s.get("total_time")):
            latency, src = max(0.0, float(s["total_time"]) - scorer_s) * 1000.0, "total_time"
        elif _is_num(out.get("time")):
            latency, src = float(out["time"]) * 1000.0, "output.time"
        else:
            latency, src = None, "none"
        latency_sources[src] = latency_sources.get(src, 0) + 1

        samples.append(SampleResult(
            case_id=cid, sample=k, output=text, error=error, latency_ms=latency,
            input_tokens=_int_or_none(usage.get("input_tokens")),
            output_tokens=_int_or_none(usage.get("output_tokens")),
            cost_usd=_num_or_none(usage.get("total_cost")),
            raw={"format": "inspect", "id": s.get("id"), "epoch": s.get("epoch"), "uuid": s.get("uuid"),
                 "input": s.get("input"), "target": s.get("target"), "latency_source": src},
        ))
        sc: list[Score] = []
        raw_scores = s.get("scores")
        if not isinstance(raw_scores, dict) and isinstance(s.get("score"), dict):  # logs before scores{}
            raw_scores = {"score": s["score"]}
        for scorer, obj in (raw_scores or {}).items():
            obj = obj if isinstance(obj, dict) else {"value": obj}
            value = obj.get("value")
            expl = obj.get("explanation")
            items = value.items() if isinstance(value, dict) else [(None, value)]
            for sub, v in items:
                metric = str(scorer) if sub is None else f"{scorer}.{sub}"
                mapped = _inspect_value(v)
                if mapped is None:
                    unmapped += 1
                    continue
                val, passed = mapped
                detail = f"inspect value {v!r}" + (f": {_short(expl, 160)}" if isinstance(expl, str) and expl else "")
                sc.append(Score(metric, clamp(val), passed, detail))
                if metric not in all_metrics:
                    all_metrics.append(metric)
        scores[(cid, k)] = sc

    epochs = sorted({k + 1 for (_, k), _ in rows})
    ds = ev.get("dataset") if isinstance(ev.get("dataset"), dict) else {}
    meta = [f"Inspect log (version {header.get('version')}, status {header.get('status')})",
            f"task {ev.get('task')}" + (f" v{ev.get('task_version')}" if ev.get("task_version") is not None else ""),
            f"model {model}"]
    rev = ev.get("revision")
    if isinstance(rev, dict) and rev.get("commit"):
        meta.append(f"revision {rev['commit']}")
    if ev.get("run_id"):
        meta.append(f"run {ev['run_id']}")
    notes.append(", ".join(meta))
    notes.append(f"{len(case_ids)} sample ids x epochs {epochs}; latency from "
                 + ", ".join(f"{v} {k}" for k, v in sorted(latency_sources.items())))
    if header.get("status") not in ("success", None):
        notes.append(f"the log's status is {header.get('status')!r}: imported the samples it holds")
    if isinstance(ds.get("sample_ids"), list) and len(ds["sample_ids"]) > len(case_ids):
        notes.append(f"{len(ds['sample_ids']) - len(case_ids)} of the run's {len(ds['sample_ids'])} dataset "
                     f"sample(s) have no sample in the log")
    if unmapped:
        notes.append(f"{unmapped} score value(s) could not be mapped to [0, 1] and were left out")
    if clamp.count:
        notes.append(f"{clamp.count} score value(s) outside [0, 1] clamped")
    expected = {cid: list(all_metrics) for cid in case_ids}
    inputs = {cid: {"input": s.get("input"), "target": s.get("target")} for (cid, _), s in rows}
    return _Built(samples, scores, must_pass, case_ids, expected, notes, inputs)


# --- relops JSONL --------------------------------------------------------------------------

_JSONL_KEYS = {"case_id", "sample", "output", "error", "scores", "must_pass", "latency_ms", "cost_usd",
               "input_tokens", "output_tokens", "attempts", "metadata"}


def _jsonl_score(metric: str, v: Any) -> tuple[Score | None, str | None]:
    if not isinstance(metric, str) or not METRIC_RE.match(metric):
        return None, f"metric name {metric!r} must be 1-128 characters of A-Z a-z 0-9 _ . : / -"
    if isinstance(v, bool):
        return Score(metric, 1.0 if v else 0.0, v, None), None
    if _is_num(v):
        if not 0.0 <= v <= 1.0:
            return None, f"scores.{metric} = {v!r} is outside [0, 1]"
        return Score(metric, float(v), v >= PASS_THRESHOLD, None), None
    if isinstance(v, dict):
        extra = set(v) - {"score", "passed", "detail"}
        if extra:
            return None, f"scores.{metric}: unknown key(s) {sorted(extra)} (allowed: score, passed, detail)"
        s = v.get("score")
        if not _is_num(s) or not 0.0 <= s <= 1.0:
            return None, f"scores.{metric}.score must be a number in [0, 1], got {s!r}"
        p = v.get("passed", s >= PASS_THRESHOLD)
        if not isinstance(p, bool):
            return None, f"scores.{metric}.passed must be true or false, got {p!r}"
        d = v.get("detail")
        if d is not None and not isinstance(d, str):
            return None, f"scores.{metric}.detail must be a string"
        return Score(metric, float(s), p, d), None
    return None, f"scores.{metric} must be a number in [0, 1], a boolean or an object with 'score', got {v!r}"


def _jsonl(path: Path) -> _Built:
    text = _read_text(path)
    problems: list[str] = []
    samples: list[SampleResult] = []
    scores: dict[tuple[str, int], list[Score]] = {}
    must_pass: dict[str, tuple[bool, int]] = {}
    seen: dict[tuple[str, int], int] = {}
    case_ids: list[str] = []
    known_cases: set[str] = set()
    # split on "\n" only: str.splitlines would also break at U+2028 etc. inside JSON strings
    for n, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        where = f"line {n}"
        try:
            obj = json.loads(line)
        except ValueError as exc:
            problems.append(f"{where}: not valid JSON ({exc})")
            continue
        if not isinstance(obj, dict):
            problems.append(f"{where}: expected a JSON object, got {type(obj).__name__}")
            continue
        bad: list[str] = []
        extra = sorted(set(obj) - _JSONL_KEYS)
        if extra:
            bad.append(f"unknown key(s) {extra} (allowed: {', '.join(sorted(_JSONL_KEYS))})")
        cid = obj.get("case_id")
        if not isinstance(cid, str) or not CASE_ID_RE.match(cid):
            bad.append(f"case_id {cid!r} must be 1-128 characters of A-Z a-z 0-9 _ . : -")
        k = obj.get("sample")
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            bad.append(f"sample {k!r} must be an integer >= 0")
        out, err = obj.get("output"), obj.get("error")
        if out is not None and not isinstance(out, str):
            bad.append(f"output must be a string or null, got {type(out).__name__}")
        if err is not None and not isinstance(err, str):
            bad.append(f"error must be a string or null, got {type(err).__name__}")
        if out is None and not err:
            bad.append("needs an output or an error")
        for key in ("latency_ms", "cost_usd"):
            v = obj.get(key)
            if v is not None and (not _is_num(v) or v < 0):
                bad.append(f"{key} must be a number >= 0, got {v!r}")
        for key, lo in (("input_tokens", 0), ("output_tokens", 0), ("attempts", 1)):
            v = obj.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
                bad.append(f"{key} must be an integer >= {lo}, got {v!r}")
        mp = obj.get("must_pass")
        if mp is not None and not isinstance(mp, bool):
            bad.append(f"must_pass must be true or false, got {mp!r}")
        md = obj.get("metadata")
        if md is not None and not isinstance(md, dict):
            bad.append("metadata must be an object")
        sc: list[Score] = []
        raw_scores = obj.get("scores")
        if raw_scores is not None and not isinstance(raw_scores, dict):
            bad.append("scores must be an object {metric: value}")
        elif raw_scores:
            for metric, v in raw_scores.items():
                s, why = _jsonl_score(metric, v)
                if why:
                    bad.append(why)
                elif s:
                    sc.append(s)
        if not bad:
            key = (cid, k)
            if key in seen:
                bad.append(f"case_id {cid!r} sample {k} already on line {seen[key]}")
            elif mp is not None and cid in must_pass and must_pass[cid][0] != mp:
                bad.append(f"must_pass {mp} for case {cid!r} contradicts line {must_pass[cid][1]}")
        if bad:
            problems.extend(f"{where}: {b}" for b in bad)
            continue
        seen[(cid, k)] = n
        if cid not in known_cases:
            known_cases.add(cid)
            case_ids.append(cid)
        if mp is not None and cid not in must_pass:
            must_pass[cid] = (mp, n)
        samples.append(SampleResult(
            case_id=cid, sample=k, output=out, error=err or None,
            latency_ms=_num_or_none(obj.get("latency_ms")), input_tokens=obj.get("input_tokens"),
            output_tokens=obj.get("output_tokens"), cost_usd=_num_or_none(obj.get("cost_usd")),
            attempts=obj.get("attempts") or 1,
            raw={"format": "jsonl", "line": n, **({"metadata": md} if md else {})},
        ))
        scores[(cid, k)] = sc
    if problems:
        raise ImportFormatError(path, f"{len(problems)} problem(s) in the relops JSONL file; nothing imported",
                                problems)
    if not samples:
        raise ImportFormatError(path, "the relops JSONL file has no lines")
    notes = [f"relops JSONL, {len(samples)} line(s)"]
    return _Built(samples, scores, {c: v[0] for c, v in must_pass.items()}, case_ids, {}, notes)
