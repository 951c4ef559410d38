"""What the result importers share: the error they raise, the formats' names, small helpers,
what a format parser returns (`Built`) and `finish`, which makes an EvalRunData of it (the
common rules of the package docstring: errored samples' metrics, the suite version, notes)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from relops_pipeline.lib.evals.model import EvalRunData, SampleResult, Score

FORMATS = ("promptfoo", "inspect", "jsonl")
_ALIASES = {"inspect_ai": "inspect", "inspect-ai": "inspect", "relops": "jsonl", "relops-jsonl": "jsonl"}
PASS_THRESHOLD = 0.5  # a bare number from a harness counts as passed at or above this
CASE_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}\Z")
METRIC_RE = re.compile(r"^[A-Za-z0-9_.:/-]{1,128}\Z")
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


def _is_num(v: Any) -> TypeGuard[float]:
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
        parts = [text for p in content if isinstance(p, dict) and isinstance(text := p.get("text"), str)]
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
class Built:
    """What a format parser hands to `finish`."""

    samples: list[SampleResult]
    scores: dict[tuple[str, int], list[Score]]
    must_pass: dict[str, bool]
    case_ids: list[str]
    expected_metrics: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    case_inputs: dict[str, Any] = field(default_factory=dict)


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


def finish(built: Built, path: Path, fmt: str, *, workflow: str, version: str,
            suite_version: str | None) -> EvalRunData:
    if not built.samples:
        raise ImportFormatError(path, "no samples to import")
    # Errored samples: fill in the metrics that apply to their case (see the package docstring).
    per_case: dict[str, list[str]] = {cid: list(ms) for cid, ms in built.expected_metrics.items()}
    for (cid, _), scores in built.scores.items():
        names = per_case.setdefault(cid, [])
        for score in scores:
            if score.metric not in names:
                names.append(score.metric)
    filled = 0
    for res in built.samples:
        if res.error is None:
            continue
        have = built.scores.setdefault((res.case_id, res.sample), [])
        present = {x.metric for x in have}
        for m in per_case.get(res.case_id, []):
            if m not in present:
                have.append(Score(m, 0.0, False, f"sample error: {_short(res.error, 300)}"))
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
