"""Signal alert rules per workflow: a daily production signal above or below a threshold.

The rules live in the workflow file's `alerts:` block (the sinks and cool-down next to them
are parsed by sinks.py)::

    alerts:
      rules:
        - {name: p95-latency, signal: latency_p95_ms, above: 2500, min_traces: 50, severity: warning}
        - {name: error-rate, signal: error_rate, above: 0.03}
        - {name: thumbs-down, signal: feedback_mean, below: 0.55, min_feedback: 20}
        - {name: truncated, signal: truncation_rate, above: 0.05, min_traces: 30, per_release: true}

Keys of a rule: `name` (lower-case words joined by '-' or '_', unique in the workflow),
`signal` (one of SIGNALS, or `online_scores.<score name>`), exactly one of `above` / `below`
(a number; the rule fires when the day's value is strictly above / below it), `min_traces`
(default 30: a day, or with per_release a release's day, with fewer traces is not judged),
`min_feedback` (default 0: the same for feedback_n), `severity` (default warning),
`per_release` (default false: the workflow's day over all releases; true: every release's day
on its own, and the rule fires when any release that has enough traces breaches — a 10 %
canary barely moves the workflow's aggregate).

Signals of a workflow's day (`day_signals`) come from `daily_signals` (one row per day x
release), combined over releases exactly where the column allows it: error_rate = failed
traces / traces, refusal_rate = refusals / llm calls, truncation_rate = llm calls with finish
reason 'length' / llm calls, feedback_mean weighted by feedback_n, cost_per_trace_usd = cost /
traces. Latency quantiles of the whole workflow are computed over the day's traces in
`trace_features` (exact); only when trace_features has no rows for the day does it fall back
to the traces-weighted mean of the releases' quantiles (an approximation, flagged in the
result as `latency_source: "daily_signals (weighted)"`). Online scores are traces-weighted
means of the releases' means. With per_release, every signal is the release's own row.

Versioned like the gate thresholds (lib/gates/thresholds.py), with the mechanism of
lib/versioned.py: versions 1, 2, ... in `alert_rule_versions` (warehouse migration 7), each
with an `alert_rules_version` event in the hash-chained log. The file's block seeds version 1
(author: the owner); after that a differing file only produces a warning, and a change is
recorded with `record_alert_rules` (an author and a reason) — normally by accepting a
calibration proposal (calibration.py).

`fire_rules` is what the daily asset calls: it records each firing once per workflow, rule,
day and rules version in `rule_firings` and raises one alert per firing (kind
`signal.<rule>`, dedup key `signal.<rule>:<workflow>:<day>`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import duckdb

from relops_pipeline.lib import audit

# The rules' configuration (what a workflow file states, and its validation) lives in rule_config.py,
# which lib/workflows.py uses without importing this module; its names stay importable from here.
from relops_pipeline.lib.alerts.rule_config import (  # noqa: F401
    DEFAULT_MIN_FEEDBACK,
    DEFAULT_MIN_TRACES,
    DEFAULT_SEVERITY,
    ONLINE_PREFIX,
    RULE_KEYS,
    SIGNALS,
    AlertRule,
    AlertRules,
    RulesError,
    _is_number,
    known_signal,
    parse_rules,
    rules_config,
)

# NO_OWNER_AUTHOR is part of this module's interface (the author of a version seeded without an owner).
from relops_pipeline.lib.versioned import VersionedConfig

KIND_ALERT_RULES_VERSION = "alert_rules_version"
SEED_REASON = "initial alert rules from the workflow configuration"


def _as_rules(rules: Any, where: str) -> list[AlertRule]:
    if isinstance(rules, AlertRules):
        return list(rules.rules)
    if isinstance(rules, (list, tuple)) and all(isinstance(r, AlertRule) for r in rules):
        return parse_rules(rules_config(rules), where)  # re-validated: a hand-made AlertRule may be wrong
    return parse_rules(rules, where)


# ---------------------------------------------------------------------------------------------
# Versions

_VERSIONS: VersionedConfig[AlertRules] = VersionedConfig(
    table="alert_rule_versions",
    event_kind=KIND_ALERT_RULES_VERSION,
    label="alert rules version",
    subject="alert rules",
    change="an alert rules change",
    error=RulesError,
    parse=lambda raw, where: AlertRules(rules=_as_rules(raw, where)),
    config_of=lambda rules: rules.config(),
    empty=AlertRules,
    seed_reason=SEED_REASON,
)


def current_alert_rules(con: duckdb.DuckDBPyConnection, workflow: str) -> AlertRules:
    """The latest recorded version of the workflow's rules; no rules (version 0) when none."""
    return _VERSIONS.current(con, workflow)


def alert_rules_at(con: duckdb.DuckDBPyConnection, workflow: str, version: int) -> AlertRules:
    """A given version (0: no rules); RulesError when it was never recorded."""
    return _VERSIONS.at(con, workflow, version)


def alert_rules_history(con: duckdb.DuckDBPyConnection, workflow: str) -> list[dict[str, Any]]:
    """Every recorded version, oldest first: version, config, config_hash, author, reason,
    created_at, event_seq."""
    return _VERSIONS.history(con, workflow)


def record_alert_rules(
    con: duckdb.DuckDBPyConnection,
    workflow: str,
    rules: Any,
    author: str,
    reason: str,
    *,
    now: datetime | None = None,
) -> AlertRules:
    """Record `rules` (AlertRules, a list of AlertRule, or a mapping / list as in the file) as
    the workflow's next version with an `alert_rules_version` event, in one transaction (the
    caller's when one is open). Identical to the latest version: a no-op returning it.
    A version is complete: rules left out are gone."""
    return _VERSIONS.record(con, workflow, rules, author=author, reason=reason, now=now)


def seed_alert_rules(
    con: duckdb.DuckDBPyConnection,
    workflow: str,
    alerts_cfg: Mapping[str, Any] | None,
    owner: str | None,
    *,
    where: str | None = None,
) -> str | None:
    """Bring the file's `alerts.rules` into the record, never silently: no rules in the file:
    nothing; nothing recorded yet: record them as version 1 (author the owner); recorded and
    different: change nothing and return a warning naming the rules that differ. Invalid
    rules raise RulesError naming the key."""
    where = where or f"workflow {workflow}: alerts"
    from_file = parse_rules(alerts_cfg, where)
    if not from_file:
        return None
    latest = _VERSIONS.seed(con, workflow, from_file, owner)
    if latest is None:
        return None
    file_cfg = {r.name: r.to_config() for r in from_file}
    rec_cfg = {r.name: r.to_config() for r in latest.rules}
    diff = sorted(n for n in set(file_cfg) | set(rec_cfg) if file_cfg.get(n) != rec_cfg.get(n))
    if not diff:
        return None
    return (f"{where}.rules differs from the recorded alert rules version {latest.version} (by {latest.author}) in "
            f"{', '.join(diff)}; the daily rules keep using version {latest.version}. Alert rules change through "
            f"a calibration proposal (`relops alerts accept`) or record_alert_rules with an author and a reason.")


def verify_alert_rules(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Cross-check every recorded version against its config_hash and its event in the log
    (same kind, workflow, version and hash). Returns the problems (empty: consistent)."""
    return _VERSIONS.verify(con)


# ---------------------------------------------------------------------------------------------
# Signals of a workflow's days


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _combine(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Signals of several daily_signals rows (releases) of one day, combined (see module doc)."""
    traces = sum(r["traces"] for r in rows)
    llm = sum(r["llm_calls"] for r in rows)
    fb_n = sum(r["feedback_n"] for r in rows)
    out: dict[str, Any] = {
        "traces": traces,
        "error_rate": _div(sum((r["error_rate"] or 0.0) * r["traces"] for r in rows), traces),
        "refusal_rate": _div(sum(r["refusals"] for r in rows), llm),
        "truncation_rate": _div(sum(r["length_calls"] for r in rows), llm),
        "feedback_n": fb_n,
        "feedback_mean": _div(sum((r["feedback_mean"] or 0.0) * r["feedback_n"] for r in rows
                                  if r["feedback_mean"] is not None), fb_n),
        "cost_usd": sum(r["cost_usd"] for r in rows if r["cost_usd"] is not None) if any(
            r["cost_usd"] is not None for r in rows) else None,
    }
    out["cost_per_trace_usd"] = _div(out["cost_usd"], traces)
    for q in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms"):
        have = [r for r in rows if r[q] is not None]
        out[q] = _div(sum(r[q] * r["traces"] for r in have), sum(r["traces"] for r in have))
    names = sorted({k for r in rows for k in r["online"]})
    for n in names:
        have = [r for r in rows if n in r["online"]]
        out[ONLINE_PREFIX + n] = _div(sum(r["online"][n] * r["traces"] for r in have), sum(r["traces"] for r in have))
    return out


def day_signals(con: duckdb.DuckDBPyConnection, workflow: str, start: date, end: date) -> dict[date, dict[str, Any]]:
    """{day: {"workflow": signals over all releases, "releases": {release: signals}}} for the
    days in [start, end) that have daily_signals rows. Each signals mapping has every name of
    SIGNALS (None where undefined) plus `online_scores.<name>` keys; the workflow's also has
    `latency_source`."""
    rows = con.execute(
        "SELECT day, release, traces, llm_calls, error_rate, refusals, feedback_n, feedback_mean, cost_usd, "
        "latency_p50_ms, latency_p95_ms, latency_p99_ms, "
        "coalesce(TRY_CAST(json_extract(finish_reasons, '$.length') AS BIGINT), 0), online_scores "
        "FROM daily_signals WHERE workflow = ? AND day >= ? AND day < ? ORDER BY day, release",
        [workflow, start, end]).fetchall()
    by_day: dict[date, list[dict[str, Any]]] = {}
    for (day, rel, traces, llm, err, refusals, fb_n, fb_mean, cost, p50, p95, p99, length, online) in rows:
        scores = {}
        for k, v in (json.loads(online) if online else {}).items():
            if _is_number(v):
                scores[k] = float(v)
        by_day.setdefault(day, []).append({
            "release": rel, "traces": int(traces), "llm_calls": int(llm), "error_rate": err,
            "refusals": int(refusals), "feedback_n": int(fb_n), "feedback_mean": fb_mean, "cost_usd": cost,
            "latency_p50_ms": p50, "latency_p95_ms": p95, "latency_p99_ms": p99, "length_calls": int(length),
            "online": scores})
    exact = {d: (p50, p95, p99) for d, p50, p95, p99 in con.execute(
        "SELECT day, q[1], q[2], q[3] FROM (SELECT day, quantile_cont(latency_ms, [0.5, 0.95, 0.99]) AS q "
        "FROM trace_features WHERE workflow = ? AND day >= ? AND day < ? AND latency_ms IS NOT NULL GROUP BY day)",
        [workflow, start, end]).fetchall()}
    out: dict[date, dict[str, Any]] = {}
    for day, rels in by_day.items():
        wf = _combine(rels)
        if day in exact:
            wf["latency_p50_ms"], wf["latency_p95_ms"], wf["latency_p99_ms"] = exact[day]
            wf["latency_source"] = "trace_features"
        else:
            wf["latency_source"] = "daily_signals (weighted)"
        out[day] = {"workflow": wf, "releases": {r["release"]: _combine([r]) for r in rels}}
    return out


@dataclass(frozen=True)
class BreachingRelease:
    """A release whose own day breached a per-release rule."""

    release: str
    value: float
    traces: int


@dataclass(frozen=True)
class Firing:
    """A rule that fired on a day. `release` is the worst breaching release of a per-release
    rule (None for a workflow-wide rule); `releases` lists every breaching release."""

    workflow: str
    rule: str
    signal: str
    day: date
    value: float
    threshold: float
    direction: str
    traces: int
    feedback_n: int
    severity: str
    release: str | None = None
    releases: tuple[BreachingRelease, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["day"] = self.day.isoformat()
        d["releases"] = [asdict(r) for r in self.releases]
        return d


@dataclass(frozen=True)
class RuleFiring:
    """A firing as `fire_rules` recorded it: under which rules version, the alert raised for it
    (None: recorded without an alert) and whether this call recorded it (new)."""

    firing: Firing
    rules_version: int
    alert_id: str | None
    new: bool

    @property
    def workflow(self) -> str:
        return self.firing.workflow

    @property
    def rule(self) -> str:
        return self.firing.rule

    @property
    def day(self) -> date:
        return self.firing.day

    @property
    def value(self) -> float:
        return self.firing.value

    @property
    def threshold(self) -> float:
        return self.firing.threshold


@dataclass(frozen=True)
class SignalRuleAlerts:
    """The alert rules of every workflow evaluated on a range of days: the firings (in order of
    workflow, then day) and the warnings of rules that differ from their workflow file."""

    days: tuple[date, ...]
    firings: tuple[RuleFiring, ...]
    warnings: tuple[str, ...] = ()

    @property
    def alerts_sent(self) -> int:
        return sum(1 for f in self.firings if f.alert_id is not None)


def _eligible(rule: AlertRule, sig: Mapping[str, Any]) -> bool:
    return (sig.get("traces") or 0) >= rule.min_traces and (sig.get("feedback_n") or 0) >= rule.min_feedback


def rule_value(rule: AlertRule, signals: Mapping[str, Any]) -> tuple[float | None, Mapping[str, Any] | None, str | None]:
    """(value, the signals it came from, release or None) that `rule` judges for one day's
    signals (an entry of day_signals): the workflow's value, or for a per-release rule the worst
    eligible release's. None when no eligible value exists."""
    if not rule.per_release:
        sig = signals["workflow"]
        v = sig.get(rule.signal)
        return (v, sig, None) if v is not None and _eligible(rule, sig) else (None, None, None)
    best: tuple[float | None, Mapping[str, Any] | None, str | None] = (None, None, None)
    for rel, sig in sorted(signals["releases"].items()):
        v = sig.get(rule.signal)
        if v is None or not _eligible(rule, sig):
            continue
        worse = best[0] is None or (v > best[0] if rule.above is not None else v < best[0])
        if worse:
            best = (v, sig, rel)
    return best


def firing_for(workflow: str, rule: AlertRule, day: date, signals: Mapping[str, Any]) -> Firing | None:
    """The rule's firing on one day's signals, or None."""
    value, sig, release = rule_value(rule, signals)
    if value is None or not rule.breaches(value):
        return None
    assert sig is not None  # a value comes with the signals it was read from
    breaching: tuple[BreachingRelease, ...] = ()
    if rule.per_release:
        breaching = tuple(
            BreachingRelease(release=rel, value=s[rule.signal], traces=s["traces"])
            for rel, s in sorted(signals["releases"].items())
            if s.get(rule.signal) is not None and _eligible(rule, s) and rule.breaches(s[rule.signal]))
    return Firing(workflow=workflow, rule=rule.name, signal=rule.signal, day=day, value=float(value),
                  threshold=rule.threshold, direction=rule.direction, traces=int(sig["traces"]),
                  feedback_n=int(sig.get("feedback_n") or 0), severity=rule.severity, release=release,
                  releases=breaching)


def evaluate_rules(con: duckdb.DuckDBPyConnection, workflow: str, rules: Any, day: date) -> list[Firing]:
    """The firings of `rules` (AlertRules or a list of AlertRule) on the workflow's `day`;
    nothing is written."""
    rule_list = rules.rules if isinstance(rules, AlertRules) else list(rules)
    signals = day_signals(con, workflow, day, day + timedelta(days=1)).get(day)
    if signals is None:
        return []
    return [f for f in (firing_for(workflow, r, day, signals) for r in rule_list) if f is not None]


# ---------------------------------------------------------------------------------------------
# Firing: the daily asset


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _alert_for(f: Firing, version: int, dagster_run_id: str | None):
    from relops_pipeline.lib.alerts.model import Alert

    where = f" (release {f.release})" if f.release else ""
    title = (f"{f.workflow}: {f.signal} {_fmt(f.value)} {f.direction} {_fmt(f.threshold)} on {f.day.isoformat()}"
             f"{where}")
    summary = (f"alert rule {f.rule} (version {version}): {f.signal} was {_fmt(f.value)}, "
               f"{f.direction} its threshold {_fmt(f.threshold)}, over {f.traces} traces on {f.day.isoformat()}")
    evidence: dict[str, Any] = {"value": f.value, "threshold": f.threshold, "traces": f.traces,
                                "day": f.day.isoformat(), "rules_version": version}
    if f.signal.startswith("feedback"):
        evidence["feedback_n"] = f.feedback_n
    if f.releases:
        evidence["breaching_releases"] = [r.release for r in f.releases]
    return Alert(kind=f"signal.{f.rule}", severity=f.severity, title=title, workflow=f.workflow,
                 release=f.release or "*", summary=summary, evidence=evidence,
                 dedup_key=f"signal.{f.rule}:{f.workflow}:{f.day.isoformat()}", dagster_run_id=dagster_run_id)


def fire_rules(
    con: duckdb.DuckDBPyConnection,
    home,
    workflow: str,
    day: date,
    *,
    dagster_run_id: str | None = None,
    now: datetime | None = None,
    raise_alerts: bool = True,
) -> list[RuleFiring]:
    """Evaluate the workflow's current rules on `day`, record each firing in rule_firings
    (once per workflow, rule, day and rules version) and, with raise_alerts, raise one alert
    per firing through lib/alerts/service.raise_alert. Re-running is idempotent: a recorded
    firing is returned again (new False) and not re-raised; one recorded without an alert gets
    its alert when a later run raises alerts.

    When no rules version is recorded yet, the workflow file's `alerts.rules` seed version 1
    (call seed_alert_rules yourself to get the warning when the file differs later).
    Returns the firings with their rules version, alert id and whether this call recorded them."""
    from relops_pipeline.lib.alerts.service import raise_alert

    now = now or datetime.now(UTC).replace(tzinfo=None)
    current = current_alert_rules(con, workflow)
    if current.version == 0:
        from relops_pipeline.lib.workflows import list_workflows, load_workflow

        if workflow in list_workflows(home.workflows_dir):
            wf = load_workflow(home.workflows_dir, workflow)
            seed_alert_rules(con, workflow, wf.alerts, wf.owner, where=f"{wf.path}: alerts")
            current = current_alert_rules(con, workflow)
    if not current.rules:
        return []
    out: list[RuleFiring] = []
    for f in evaluate_rules(con, workflow, current, day):
        with audit.transaction(con):
            row = con.execute(
                "SELECT alert_id FROM rule_firings WHERE workflow = ? AND rule = ? AND day = ? AND rules_version = ?",
                [workflow, f.rule, day, current.version]).fetchone()
            alert_id = row[0] if row else None
            if raise_alerts and alert_id is None:
                alert_id = raise_alert(con, home, _alert_for(f, current.version, dagster_run_id), now=now).alert_id
            if row is None:
                con.execute(
                    "INSERT INTO rule_firings (workflow, rule, day, rules_version, value, threshold, traces, alert_id, "
                    "dagster_run_id, fired_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [workflow, f.rule, day, current.version, f.value, f.threshold, f.traces, alert_id,
                     dagster_run_id, now])
            elif row[0] is None and alert_id is not None:
                con.execute("UPDATE rule_firings SET alert_id = ? WHERE workflow = ? AND rule = ? AND day = ? "
                            "AND rules_version = ?", [alert_id, workflow, f.rule, day, current.version])
        out.append(RuleFiring(firing=f, rules_version=current.version, alert_id=alert_id, new=row is None))
    return out


# Firings of older days are recorded (the history calibration replays) but not sent: an alert
# about last month's traffic, raised because its traces arrived late, would only be noise.
ALERT_MAX_AGE_DAYS = 2


def fire_signal_rules(
    con: duckdb.DuckDBPyConnection,
    home,
    days: list[date],
    *,
    now: datetime | None = None,
    dagster_run_id: str | None = None,
    max_age_days: int = ALERT_MAX_AGE_DAYS,
) -> SignalRuleAlerts:
    """Every workflow of the home through its alert rules on each of `days` (fire_rules): the
    workflow file's rules seed version 1 (a file that differs from the recorded version is a
    warning); alerts are raised only for days at most `max_age_days` old."""
    from relops_pipeline.lib.workflows import load_all

    now = now or datetime.now(UTC).replace(tzinfo=None)
    firings: list[RuleFiring] = []
    loaded = load_all(home.workflows_dir)
    warnings: list[str] = loaded.warnings()  # a broken workflow file is skipped, never the others
    for wf in loaded.workflows:
        workflow = wf.name
        warning = seed_alert_rules(con, wf.name, wf.alerts, wf.owner, where=f"{wf.path}: alerts")
        if warning:
            warnings.append(warning)
        for day in days:
            send = (now.date() - day).days <= max_age_days
            firings += fire_rules(con, home, workflow, day, dagster_run_id=dagster_run_id, now=now, raise_alerts=send)
    return SignalRuleAlerts(days=tuple(days), firings=tuple(firings), warnings=tuple(warnings))
