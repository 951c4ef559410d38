"""What an alert is, and the one place its human-readable wording is written.

An `Alert` says what happened (`kind`, `title`, `summary`), where (`workflow`, `release`), the
evidence as numbers, links (reports, the Dagster run), where the runbook is, and its
`dedup_key`: alerts with the same key are the same condition (cool-down suppression in the
outbox; PagerDuty and webhook receivers dedupe on it too).

Severities, lowest first: info < warning < error < critical. Dagster's check severities
(WARN, ERROR) are accepted and normalised (`normalize_severity`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from relops_pipeline.lib.timeutil import utc_naive

SEVERITIES: tuple[str, ...] = ("info", "warning", "error", "critical")
SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}
_SEVERITY_ALIASES = {"warn": "warning", "err": "error", "crit": "critical", "fatal": "critical"}

_KIND_RE = re.compile(r"^[a-z][a-z0-9_.\-]{0,62}\Z")


class AlertError(ValueError):
    """An alert, a sink configuration or an outbox operation is invalid as given."""


def normalize_severity(value: Any) -> str:
    """'WARN' / 'warning' / 'Error' ... -> one of SEVERITIES; anything else raises AlertError."""
    if isinstance(value, str):
        s = value.strip().lower()
        s = _SEVERITY_ALIASES.get(s, s)
        if s in SEVERITY_RANK:
            return s
    raise AlertError(f"severity {value!r}: expected one of {', '.join(SEVERITIES)} (or WARN/ERROR)")


def severity_at_least(severity: str, minimum: str) -> bool:
    """True when `severity` is as severe as `minimum` or more."""
    return SEVERITY_RANK[normalize_severity(severity)] >= SEVERITY_RANK[normalize_severity(minimum)]


def _evidence_value(key: str, value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        # JSON has no NaN/Infinity; keep the fact visible as text rather than dropping it.
        return value if math.isfinite(value) else str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _evidence_value(key, value.item())
    if isinstance(value, (list, tuple)):
        return [_evidence_value(key, v) for v in value]
    raise AlertError(f"evidence[{key!r}]: expected a number, text, a list of them or None, got {type(value).__name__}")


@dataclass(frozen=True)
class Alert:
    """One alert. `alert_id` and `created_at` are set by the outbox when it is enqueued.

    `dedup_key` defaults to "<kind>:<workflow or ->:<release or ->"; set it when the condition
    is narrower (e.g. "drift.weekly:support-triage:*:2026-11-02").
    """

    kind: str
    severity: str
    title: str
    workflow: str | None = None
    release: str | None = None
    summary: str = ""
    evidence: Mapping[str, Any] = field(default_factory=dict)
    links: Mapping[str, str] = field(default_factory=dict)
    runbook: str | None = None
    dedup_key: str | None = None
    dagster_run_id: str | None = None
    alert_id: str | None = None
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not _KIND_RE.match(self.kind):
            raise AlertError(f"kind {self.kind!r}: expected lower-case words joined by '.', '_' or '-'")
        object.__setattr__(self, "severity", normalize_severity(self.severity))
        if not isinstance(self.title, str) or not self.title.strip():
            raise AlertError("title: required (one line saying what happened)")
        if not isinstance(self.evidence, Mapping):
            raise AlertError(f"evidence: expected a mapping of name -> number, got {type(self.evidence).__name__}")
        object.__setattr__(self, "evidence", {str(k): _evidence_value(str(k), v) for k, v in self.evidence.items()})
        if not isinstance(self.links, Mapping) or not all(isinstance(v, str) for v in self.links.values()):
            raise AlertError("links: expected a mapping of label -> URL or path (text)")
        object.__setattr__(self, "links", {str(k): v for k, v in self.links.items()})
        if self.dedup_key is None:
            object.__setattr__(self, "dedup_key", f"{self.kind}:{self.workflow or '-'}:{self.release or '-'}")
        elif not isinstance(self.dedup_key, str) or not self.dedup_key.strip():
            raise AlertError("dedup_key: expected non-empty text (or None for the default)")
        if self.created_at is not None:
            object.__setattr__(self, "created_at", utc_naive(self.created_at))

    def with_identity(self, alert_id: str, created_at: datetime) -> Alert:
        return replace(self, alert_id=alert_id, created_at=created_at)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (created_at as ISO 8601 UTC with a trailing Z)."""
        d = asdict(self)
        d["created_at"] = iso_z(self.created_at)
        return d

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, compact): identical bytes for identical alerts."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def iso_z(value: datetime | None) -> str | None:
    return None if value is None else utc_naive(value).isoformat(timespec="seconds") + "Z"


@dataclass(frozen=True)
class Delivery:
    """The state of one alert's delivery to one sink (a row of alert_deliveries)."""

    sink: str
    sink_type: str
    status: str  # pending | sending | delivered | dead
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    delivered_at: datetime | None
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("next_attempt_at", "delivered_at", "updated_at"):
            d[k] = iso_z(d[k])
        return d


@dataclass(frozen=True)
class AlertRecord:
    """An alert as stored in the outbox, with its status and its deliveries."""

    alert: Alert
    status: str  # pending | delivered | dead | suppressed | unrouted
    suppressed_by: str | None
    deliveries: list[Delivery]

    @property
    def alert_id(self) -> str:
        return self.alert.alert_id or ""

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.alert.to_dict(),
            "status": self.status,
            "suppressed_by": self.suppressed_by,
            "deliveries": [d.to_dict() for d in self.deliveries],
        }


# ---------------------------------------------------------------------------------------------
# Wording: one function, used by the file, log and Slack sinks (and the CLI).


def format_number(value: Any) -> str:
    """Evidence values as people read them: 0.3125 -> '0.3125', 0.123456 -> '0.1235', 12345.6 -> '12,346'."""
    if isinstance(value, bool) or value is None:
        return str(value).lower() if isinstance(value, bool) else "-"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if abs(value) >= 10_000:
            return f"{value:,.0f}"
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(format_number(v) for v in value) or "-"
    return str(value)


def where_text(alert: Alert) -> str:
    """'support-triage, release 1.4.0' / 'support-triage, all releases' / 'relops'."""
    if not alert.workflow:
        return f"release {alert.release}" if alert.release else "relops (no workflow)"
    if not alert.release or alert.release == "*":
        return f"workflow {alert.workflow}, all releases"
    return f"workflow {alert.workflow}, release {alert.release}"


def format_alert_text(alert: Alert) -> str:
    """The plain-text wording of an alert: what, where, evidence numbers, links, runbook.

    First line: "[SEVERITY] title". Used as the Slack fallback text, the log message and the
    `text` field of the file sink, so every channel says the same thing.
    """
    lines = [f"[{alert.severity.upper()}] {alert.title.strip()}"]
    what = alert.kind + (f": {alert.summary.strip()}" if alert.summary and alert.summary.strip() else "")
    lines.append(f"what: {what}")
    lines.append(f"where: {where_text(alert)}")
    if alert.evidence:
        lines.append("evidence: " + ", ".join(f"{k}={format_number(v)}" for k, v in alert.evidence.items()))
    else:
        lines.append("evidence: none recorded")
    if alert.links:
        lines.append("links:")
        lines.extend(f"  {label}: {url}" for label, url in alert.links.items())
    lines.append(f"runbook: {alert.runbook or 'none configured'}")
    ident = [f"dedup key {alert.dedup_key}"]
    if alert.alert_id:
        ident.append(f"alert {alert.alert_id}")
    if alert.dagster_run_id:
        ident.append(f"dagster run {alert.dagster_run_id}")
    if alert.created_at:
        ident.append(f"raised {iso_z(alert.created_at)}")
    lines.append(" · ".join(ident))
    return "\n".join(lines)
