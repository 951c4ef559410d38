"""Import promptfoo outputs as eval runs (`--format promptfoo`).

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
- The rendered prompt (`prompt.raw`) is kept with each sample's vars (raw.input.prompt).
- `latencyMs` -> latency_ms, `cost` -> cost_usd, `response.tokenUsage.prompt/completion` ->
  tokens (None for cached responses that report only `cached`). `testCase.metadata.must_pass`
  (true on any result of the test) -> must_pass. promptfoo JSONL/CSV/YAML outputs are not read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relops_pipeline.lib.evals.imports.base import (
    PASS_THRESHOLD,
    Built,
    ImportFormatError,
    _Clamp,
    _hash,
    _int_or_none,
    _is_num,
    _load_json,
    _num_or_none,
    _short,
    _slug,
    _text_of,
)
from relops_pipeline.lib.evals.model import SampleResult, Score


def looks_like(doc: Any) -> bool:
    if not isinstance(doc, dict):
        return False
    r = doc.get("results")
    return (isinstance(r, dict) and isinstance(r.get("results"), list)) or (
        isinstance(r, list) and ("table" in doc or "stats" in doc or "version" in doc))


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
        return _PfLayout(int(doc["version"]) if doc.get("version") in (1, 2) else 1, r, doc, doc)
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


def _pf_input(r: dict[str, Any], vars_: dict[str, Any]) -> dict[str, Any]:
    """A sample's input: the test's vars and, when promptfoo recorded it, the prompt as rendered
    and sent to the provider (`prompt.raw`: text, or the JSON of chat messages)."""
    p = r.get("prompt")
    rendered = p.get("raw") if isinstance(p, dict) else None
    return {"vars": vars_, **({"prompt": rendered} if isinstance(rendered, str) else {})}


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
    tc = got if isinstance(got := r.get("testCase"), dict) else {}
    vars_ = got if isinstance(got := r.get("vars"), dict) else tc.get("vars")
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


def parse(path: Path, variant: str | int | None) -> Built:
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
        resp = got if isinstance(got := r.get("response"), dict) else {}
        usage = got if isinstance(got := resp.get("tokenUsage"), dict) else {}
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
                 "promptIdx": r.get("promptIdx"), "input": _pf_input(r, vars_), "description": desc},
        ))
        gr = got if isinstance(got := r.get("gradingResult"), dict) else None
        comps = [c for c in (gr.get("componentResults") or []) if isinstance(c, dict)] if gr else []
        asserts = got if isinstance(got := tc.get("assert"), list) else []
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
    return Built(samples, scores, must_pass, case_ids, expected, notes, inputs)


def _assign_samples(rows: list[tuple[str, Any]]) -> list[int]:
    """Sample index per row: 0, 1, ... per case id in the given order."""
    seen: dict[str, int] = {}
    out = []
    for cid, _ in rows:
        out.append(seen.get(cid, 0))
        seen[cid] = out[-1] + 1
    return out


def list_variants(path: Path) -> list[str]:
    """One description per provider+prompt variant of a promptfoo output."""
    doc = _load_json(path, "promptfoo output")
    layout = _pf_layout(path, doc)
    return [v.describe() for v in _pf_variants(layout)]
