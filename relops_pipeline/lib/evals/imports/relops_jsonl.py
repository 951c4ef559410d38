"""Import relops JSONL result files as eval runs (`--format jsonl`).

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
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from relops_pipeline.lib.evals.imports.base import (
    CASE_ID_RE,
    METRIC_RE,
    PASS_THRESHOLD,
    Built,
    ImportFormatError,
    _is_num,
    _num_or_none,
    _read_text,
)
from relops_pipeline.lib.evals.model import SampleResult, Score

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


def parse(path: Path) -> Built:
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
            sample_key = (cid, k)
            if sample_key in seen:
                bad.append(f"case_id {cid!r} sample {k} already on line {seen[sample_key]}")
            elif mp is not None and cid in must_pass and must_pass[cid][0] != mp:
                bad.append(f"must_pass {mp} for case {cid!r} contradicts line {must_pass[cid][1]}")
        if bad:
            problems.extend(f"{where}: {b}" for b in bad)
            continue
        # checked above (each failure adds to `bad`)
        assert isinstance(cid, str) and isinstance(k, int)
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
    return Built(samples, scores, {c: v[0] for c, v in must_pass.items()}, case_ids, {}, notes)
