"""A workflow's drift configuration (the `drift:` section of its YAML) and the column catalogue.

Keys (all optional):

- reference: the reference window the current traffic is compared with.
    {start: DATE, end: DATE}  pinned dates, both inclusive;
    {release: V, days: N}     the first N days of traffic of release V (its traces only);
    {first_days: N}           the first N days with traces of the workflow (default N = 14).
- critical: columns whose drift alone is a finding of `critical_severity` (default
  [topic, input_chars]: what users ask and how much they send).
- critical_severity: ERROR (default) or WARN.
- drifted_share_warn: a finding of `share_severity` when more than this share of the tested
  columns drifted (default 0.5, Evidently's dataset-drift share).
- share_severity: WARN (default) or ERROR.
- min_rows: a window (reference or current, per column: non-null values) with fewer rows is
  "insufficient": no verdict (default 50).
- sample_rows: at most this many rows per window go into the statistics; DuckDB draws a
  seeded uniform sample when a window is larger (default 50_000).
- thresholds: {METHOD: number} for every column, and {COLUMN: {METHOD: number}} per column;
  per column wins. Methods and defaults are Evidently's (see METHODS).
- columns: the columns to test (default: every catalogue column that has data in the
  reference window, plus one `score.<name>` column per online score found there).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Column catalogue: name -> (type, role). type num|cat; role input (what users send),
# behaviour (what the workflow did), feedback (how users and online evaluators judged it).
# Tokens count the whole prompt the release builds (system prompt, retrieved documents), so
# they are behaviour, not input.
COLUMNS: dict[str, tuple[str, str]] = {
    "input_chars": ("num", "input"),
    "input_words": ("num", "input"),
    "topic": ("cat", "input"),
    "intent": ("cat", "input"),
    "language": ("cat", "input"),
    "latency_ms": ("num", "behaviour"),
    "llm_calls": ("num", "behaviour"),
    "input_tokens": ("num", "behaviour"),
    "output_tokens": ("num", "behaviour"),
    "cost_usd": ("num", "behaviour"),
    "output_chars": ("num", "behaviour"),
    "output_words": ("num", "behaviour"),
    "output_json_valid": ("cat", "behaviour"),
    "is_error": ("cat", "behaviour"),
    "is_refusal": ("cat", "behaviour"),
    "finish_reason": ("cat", "behaviour"),
    "model": ("cat", "behaviour"),
    "feedback": ("num", "feedback"),
}
# Online scores become numeric feedback columns named SCORE_PREFIX + score name.
SCORE_PREFIX = "score."

# Evidently's drift methods used here: name -> (kind, default threshold). A p-value method
# flags drift when p < threshold (ks: p <= threshold, as Evidently does); a distance method
# when distance >= threshold.
METHODS: dict[str, tuple[str, float]] = {
    "ks": ("p_value", 0.05),
    "chisquare": ("p_value", 0.05),
    "z": ("p_value", 0.05),
    "wasserstein": ("distance", 0.1),
    "jensenshannon": ("distance", 0.1),
}

SEVERITIES = ("ERROR", "WARN")

DEFAULTS: dict[str, Any] = {
    "reference": {"first_days": 14},
    "critical": ["topic", "input_chars"],
    "critical_severity": "ERROR",
    "drifted_share_warn": 0.5,
    "share_severity": "WARN",
    "min_rows": 50,
    "sample_rows": 50_000,
    # Calibrated by bench/drift_quality.py (26 stationary weeks x 10 worlds per volume): p-values
    # at 0.01 (before the Bonferroni division) keep false alerts <= 1 per 26 weeks at 700
    # requests a week; topic's Jensen-Shannon at 0.08 catches a 10-point shift between two
    # existing topics (JS ~0.11) in its first week, while stationary weeks stay below 0.06.
    "thresholds": {"ks": 0.01, "chisquare": 0.01, "z": 0.01, "topic": {"jensenshannon": 0.08}},
    "columns": None,
}


def merge_thresholds(given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The default thresholds overlaid key by key with a workflow's (a column's own mapping
    merges with its default one), so setting one threshold keeps the calibrated others."""
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in DEFAULTS["thresholds"].items()}
    for k, v in (given or {}).items():
        out[k] = {**out[k], **v} if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


class DriftConfigError(ValueError):
    """A drift configuration is invalid; the message names the key."""


def column_info(name: str) -> tuple[str, str]:
    """(type, role) of a catalogue or online-score column."""
    if name in COLUMNS:
        return COLUMNS[name]
    if name.startswith(SCORE_PREFIX) and len(name) > len(SCORE_PREFIX):
        return ("num", "feedback")
    raise KeyError(name)


def is_known_column(name: str) -> bool:
    try:
        column_info(name)
    except KeyError:
        return False
    return True


@dataclass(frozen=True)
class ReferenceSpec:
    """How the reference window is chosen: kind pinned | release | first_days."""

    kind: str
    start: dt.date | None = None
    end: dt.date | None = None  # inclusive
    release: str | None = None
    days: int | None = None

    def as_dict(self) -> dict[str, Any]:
        if self.kind == "pinned":
            assert self.start is not None and self.end is not None  # a pinned spec has both (_reference)
            return {"start": self.start.isoformat(), "end": self.end.isoformat()}
        if self.kind == "release":
            return {"release": self.release, "days": self.days}
        return {"first_days": self.days}


@dataclass(frozen=True)
class DriftConfig:
    """A validated drift configuration (see the module docstring for each key)."""

    reference: ReferenceSpec = field(default_factory=lambda: ReferenceSpec("first_days", days=14))
    critical: tuple[str, ...] = ("topic", "input_chars")
    critical_severity: str = "ERROR"
    drifted_share_warn: float = 0.5
    share_severity: str = "WARN"
    min_rows: int = 50
    sample_rows: int = 50_000
    method_thresholds: Mapping[str, float] = field(default_factory=dict)
    column_thresholds: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    columns: tuple[str, ...] | None = None

    @classmethod
    def from_workflow(cls, drift: Mapping[str, Any] | None) -> DriftConfig:
        """Validate a workflow's `drift` section (defaults filled in); raise DriftConfigError
        naming the offending key."""
        drift = dict(drift or {})
        unknown = sorted(set(drift) - set(DEFAULTS))
        if unknown:
            raise DriftConfigError(f"drift: unknown keys {', '.join(unknown)} (known: {', '.join(DEFAULTS)})")
        d = {**DEFAULTS, **{k: v for k, v in drift.items() if v is not None or k == "columns"}}
        if not isinstance(d["thresholds"], Mapping):
            raise DriftConfigError(f"drift.thresholds: expected a mapping, got {d['thresholds']!r}")
        d["thresholds"] = merge_thresholds(d["thresholds"])
        return cls(
            reference=_reference(d["reference"]),
            critical=_column_list("critical", d["critical"]),
            critical_severity=_severity("critical_severity", d["critical_severity"]),
            drifted_share_warn=_share(d["drifted_share_warn"]),
            share_severity=_severity("share_severity", d["share_severity"]),
            min_rows=_positive_int("min_rows", d["min_rows"]),
            sample_rows=_positive_int("sample_rows", d["sample_rows"], minimum=100),
            **_thresholds(d["thresholds"]),
            columns=None if d["columns"] is None else _column_list("columns", d["columns"], allow_empty=False),
        )

    def threshold(self, column: str, method: str) -> float:
        """The threshold of `method` on `column`: per column, else per method, else Evidently's."""
        per_col = self.column_thresholds.get(column, {})
        if method in per_col:
            return float(per_col[method])
        if method in self.method_thresholds:
            return float(self.method_thresholds[method])
        return METHODS[method][1]

    def as_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference.as_dict(),
            "critical": list(self.critical),
            "critical_severity": self.critical_severity,
            "drifted_share_warn": self.drifted_share_warn,
            "share_severity": self.share_severity,
            "min_rows": self.min_rows,
            "sample_rows": self.sample_rows,
            "thresholds": {**dict(self.method_thresholds), **{c: dict(m) for c, m in self.column_thresholds.items()}},
            "columns": None if self.columns is None else list(self.columns),
        }


def _date(key: str, v: Any) -> dt.date:
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    try:
        return dt.date.fromisoformat(str(v))
    except ValueError:
        raise DriftConfigError(f"drift.{key}: expected a date YYYY-MM-DD, got {v!r}") from None


def _positive_int(key: str, v: Any, *, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise DriftConfigError(f"drift.{key}: expected an integer >= {minimum}, got {v!r}")
    return v


def _reference(v: Any) -> ReferenceSpec:
    if not isinstance(v, Mapping):
        raise DriftConfigError(
            "drift.reference: expected {start: DATE, end: DATE}, {release: V, days: N} or {first_days: N}, "
            f"got {v!r}"
        )
    keys = set(v)
    if keys == {"start", "end"}:
        start, end = _date("reference.start", v["start"]), _date("reference.end", v["end"])
        if end < start:
            raise DriftConfigError(f"drift.reference.end: {end} is before reference.start {start}")
        return ReferenceSpec("pinned", start=start, end=end)
    if keys == {"release", "days"}:
        if not isinstance(v["release"], str) or not v["release"].strip():
            raise DriftConfigError(f"drift.reference.release: expected a release version, got {v['release']!r}")
        return ReferenceSpec("release", release=v["release"].strip(), days=_positive_int("reference.days", v["days"]))
    if keys == {"first_days"}:
        return ReferenceSpec("first_days", days=_positive_int("reference.first_days", v["first_days"]))
    raise DriftConfigError(
        f"drift.reference: keys {sorted(keys)} are not one of {{start, end}}, {{release, days}} or {{first_days}}"
    )


def _column_list(key: str, v: Any, *, allow_empty: bool = True) -> tuple[str, ...]:
    if not isinstance(v, (list, tuple)) or not all(isinstance(c, str) for c in v):
        raise DriftConfigError(f"drift.{key}: expected a list of column names, got {v!r}")
    if not v and not allow_empty:
        raise DriftConfigError(f"drift.{key}: expected at least one column (leave it out for all columns)")
    bad = [c for c in v if not is_known_column(c)]
    if bad:
        raise DriftConfigError(
            f"drift.{key}: unknown columns {', '.join(bad)} (known: {', '.join(COLUMNS)}, {SCORE_PREFIX}<online score>)"
        )
    return tuple(dict.fromkeys(v))


def _severity(key: str, v: Any) -> str:
    s = str(v).upper()
    if s == "WARNING":
        s = "WARN"
    if s not in SEVERITIES:
        raise DriftConfigError(f"drift.{key}: expected ERROR or WARN, got {v!r}")
    return s


def _share(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
        raise DriftConfigError(f"drift.drifted_share_warn: expected a share in [0, 1), got {v!r}")
    return float(v)


def _number(key: str, method: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        raise DriftConfigError(f"drift.{key}: expected a positive number, got {v!r}")
    if METHODS[method][0] == "p_value" and v >= 1:
        raise DriftConfigError(f"drift.{key}: {method} takes a p-value threshold below 1, got {v!r}")
    return float(v)


def _thresholds(v: Any) -> dict[str, Any]:
    if not isinstance(v, Mapping):
        raise DriftConfigError(f"drift.thresholds: expected a mapping of method or column to thresholds, got {v!r}")
    methods: dict[str, float] = {}
    columns: dict[str, dict[str, float]] = {}
    for k, val in v.items():
        if k in METHODS:
            methods[k] = _number(f"thresholds.{k}", k, val)
        elif is_known_column(k):
            if not isinstance(val, Mapping) or not val:
                raise DriftConfigError(
                    f"drift.thresholds.{k}: expected {{METHOD: number}} (e.g. {{wasserstein: 0.2, ks: 0.01}}): "
                    "p-value and distance thresholds mean different things"
                )
            for m, x in val.items():
                if m not in METHODS:
                    raise DriftConfigError(f"drift.thresholds.{k}.{m}: unknown method (known: {', '.join(METHODS)})")
                columns.setdefault(k, {})[m] = _number(f"thresholds.{k}.{m}", m, x)
        else:
            raise DriftConfigError(
                f"drift.thresholds.{k}: neither a method ({', '.join(METHODS)}) nor a column ({', '.join(COLUMNS)})"
            )
    return {"method_thresholds": methods, "column_thresholds": columns}
