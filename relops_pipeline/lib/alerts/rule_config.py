"""Alert rules as a workflow file states them: the signals a rule may watch, one rule
(AlertRule), a workflow's recorded rules (AlertRules) and their validation (parse_rules).

Pure configuration, below everything else that uses it: lib/workflows.py validates a workflow
file's `alerts.rules` with parse_rules, and rules.py (versions, evaluation, firing, which raises
alerts through service.py and reads workflow files) builds on it; the keys are described in
rules.py's docstring. Imports nothing of relops but alerts/model.py.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeGuard

from relops_pipeline.lib.alerts.model import AlertError, normalize_severity

# Signal name -> what it is (the unit is part of the name where there is one).
SIGNALS: dict[str, str] = {
    "traces": "traces of the day",
    "error_rate": "failed traces / traces",
    "latency_p50_ms": "median request latency (ms)",
    "latency_p95_ms": "95th percentile request latency (ms)",
    "latency_p99_ms": "99th percentile request latency (ms)",
    "refusal_rate": "refusals / llm calls",
    "truncation_rate": "llm calls that stopped at the token limit (finish reason 'length') / llm calls",
    "feedback_mean": "mean user feedback (1 thumbs up, 0 down)",
    "feedback_n": "user feedback received",
    "cost_usd": "total cost of the day (USD)",
    "cost_per_trace_usd": "cost per trace (USD)",
}
ONLINE_PREFIX = "online_scores."

RULE_KEYS = ("name", "signal", "above", "below", "min_traces", "min_feedback", "severity", "per_release")
DEFAULT_MIN_TRACES = 30
DEFAULT_MIN_FEEDBACK = 0
DEFAULT_SEVERITY = "warning"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,47}\Z")


class RulesError(ValueError):
    """Alert rules that are invalid, or a request about them that cannot be done."""


@dataclass(frozen=True)
class AlertRule:
    """One signal rule. Exactly one of `above` / `below` is set."""

    name: str
    signal: str
    above: float | None = None
    below: float | None = None
    min_traces: int = DEFAULT_MIN_TRACES
    min_feedback: int = DEFAULT_MIN_FEEDBACK
    severity: str = DEFAULT_SEVERITY
    per_release: bool = False

    @property
    def direction(self) -> str:
        return "above" if self.above is not None else "below"

    @property
    def threshold(self) -> float:
        if self.above is not None:
            return float(self.above)
        assert self.below is not None  # a rule has exactly one of above / below (parse_rules)
        return float(self.below)

    def breaches(self, value: float | None) -> bool:
        """True when `value` is on the wrong side of the threshold (strictly)."""
        if value is None:
            return False
        return value > self.threshold if self.above is not None else value < self.threshold

    def with_threshold(self, threshold: float) -> AlertRule:
        """The same rule with another threshold."""
        key = self.direction
        return AlertRule(**{**asdict(self), key: float(threshold)})

    def to_config(self) -> dict[str, Any]:
        """The rule as stored and as written in a workflow file (defaults included)."""
        d = {"name": self.name, "signal": self.signal, self.direction: self.threshold,
             "min_traces": self.min_traces, "min_feedback": self.min_feedback, "severity": self.severity,
             "per_release": self.per_release}
        return d


@dataclass
class AlertRules:
    """A workflow's rules as recorded (version 0: nothing recorded, no rules)."""

    rules: list[AlertRule] = field(default_factory=list)
    version: int = 0
    author: str | None = None
    reason: str | None = None

    def config(self) -> dict[str, Any]:
        return rules_config(self.rules)

    def by_name(self, name: str) -> AlertRule | None:
        return next((r for r in self.rules if r.name == name), None)


# ---------------------------------------------------------------------------------------------
# Parsing


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def known_signal(signal: Any) -> TypeGuard[str]:
    """True for a name of SIGNALS or `online_scores.<name>`."""
    return isinstance(signal, str) and (signal in SIGNALS or (signal.startswith(ONLINE_PREFIX)
                                                              and len(signal) > len(ONLINE_PREFIX)))


def _parse_rule(errors: list[str], where: str, i: int, raw: Any) -> AlertRule | None:
    at = f"{where}.rules[{i}]"
    if not isinstance(raw, Mapping):
        errors.append(f"{at}: expected a mapping with name, signal and above or below, got {raw!r}")
        return None
    n_errors = len(errors)
    name = raw.get("name")
    if isinstance(name, str) and name.strip():
        at = f"{where}.rules[{i}] ({name})"
    for key in raw:
        if key not in RULE_KEYS:
            close = difflib.get_close_matches(str(key), RULE_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            errors.append(f"{at}: unknown key {key!r}{hint}; known keys: {', '.join(RULE_KEYS)}")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        errors.append(f"{at}: name: expected lower-case letters, digits, '-' or '_' (up to 48), got {name!r}")
    signal = raw.get("signal")
    if not known_signal(signal):
        close = difflib.get_close_matches(str(signal), list(SIGNALS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        errors.append(f"{at}: signal: {signal!r} is not a signal{hint}; known: {', '.join(SIGNALS)}, "
                      f"or {ONLINE_PREFIX}<score name>")
    given = [k for k in ("above", "below") if raw.get(k) is not None]
    if len(given) != 1:
        errors.append(f"{at}: expected exactly one of above / below, got "
                      f"{' and '.join(given) if given else 'neither'}")
    for k in given:
        if not _is_number(raw[k]):
            errors.append(f"{at}: {k}: expected a number, got {raw[k]!r}")
    ints = {}
    for key, default in (("min_traces", DEFAULT_MIN_TRACES), ("min_feedback", DEFAULT_MIN_FEEDBACK)):
        v = raw.get(key, default)
        v = default if v is None else v
        minimum = 1 if key == "min_traces" else 0
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            errors.append(f"{at}: {key}: expected an integer >= {minimum}, got {v!r}")
        ints[key] = v
    severity = raw.get("severity") or DEFAULT_SEVERITY
    try:
        severity = normalize_severity(severity)
    except AlertError as exc:
        errors.append(f"{at}: severity: {exc}")
    per_release = raw.get("per_release", False)
    per_release = False if per_release is None else per_release
    if not isinstance(per_release, bool):
        errors.append(f"{at}: per_release: expected true or false, got {per_release!r}")
    if len(errors) > n_errors:
        return None
    assert isinstance(name, str) and isinstance(signal, str)  # checked above: an error was recorded otherwise
    return AlertRule(name=name, signal=signal,
                     above=float(raw["above"]) if "above" in given else None,
                     below=float(raw["below"]) if "below" in given else None,
                     min_traces=ints["min_traces"], min_feedback=ints["min_feedback"], severity=severity,
                     per_release=per_release)


def parse_rules(mapping: Mapping[str, Any] | Sequence[Any] | None, where: str) -> list[AlertRule]:
    """Validate alert rules and return them in file order.

    `mapping` is a workflow file's `alerts` block (its `rules` key is read; the sinks and
    cool-down are sinks.py's), a mapping `{"rules": [...]}` as stored, or the list of rules
    itself; None or no `rules` key: no rules. Raises RulesError listing every problem, each
    naming the rule and the key (e.g. "workflows/doc-qa.yaml: alerts.rules[1] (error-rate):
    above: expected a number")."""
    if mapping is None:
        return []
    if isinstance(mapping, Mapping):
        raw_rules = mapping.get("rules")
    elif isinstance(mapping, (list, tuple)):
        raw_rules = mapping
    else:
        raise RulesError(f"{where}: expected the alerts mapping or a list of rules, got {type(mapping).__name__}")
    if raw_rules is None:
        return []
    if not isinstance(raw_rules, (list, tuple)):
        raise RulesError(f"{where}.rules: expected a list of rules, got {type(raw_rules).__name__}")
    errors: list[str] = []
    rules = [_parse_rule(errors, where, i, r) for i, r in enumerate(raw_rules)]
    names = [nm for r in raw_rules if isinstance(r, Mapping) and isinstance(nm := r.get("name"), str)]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        errors.append(f"{where}.rules: rule names must be unique; repeated: {', '.join(dupes)}")
    if errors:
        raise RulesError("; ".join(errors))
    return [r for r in rules if r is not None]


def rules_config(rules: Iterable[AlertRule]) -> dict[str, Any]:
    """{"rules": [rule configs]} — what a version stores (and what the file's block means)."""
    return {"rules": [r.to_config() for r in rules]}
