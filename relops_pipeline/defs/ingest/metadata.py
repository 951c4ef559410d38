"""Typed results of the traces domain (lib/traces_day.py) as materialization metadata and
check results."""

from __future__ import annotations

import dagster as dg

from relops_pipeline.lib import rounding
from relops_pipeline.lib.markdown import md_table
from relops_pipeline.lib.traces_day import DayValidation, FeaturesRefresh, SignalsRefresh
from relops_pipeline.lib.validation import WARN

# The day's validation rules that become asset checks, with their severity and meaning.
SPAN_RULES = (
    ("keys_not_null", dg.AssetCheckSeverity.ERROR, "trace id, span id, workflow, release and start time are never null"),
    ("span_ids_unique", dg.AssetCheckSeverity.ERROR, "each (trace id, span id) appears once"),
    (
        "times_ordered",
        dg.AssetCheckSeverity.ERROR,
        "spans end after they start: ERROR above the tolerated share (1 % by default), a WARN with the count below it",
    ),
    (
        "latency_not_negative",
        dg.AssetCheckSeverity.ERROR,
        "no negative latency: ERROR above the tolerated share (1 % by default), a WARN with the count below it",
    ),
    ("unknown_release_share", dg.AssetCheckSeverity.WARN, "few spans without a release identifier"),
    ("latency_in_range", dg.AssetCheckSeverity.WARN, "latency within the plausible range"),
)


def window_text(start, end) -> str:
    return f"{start:%Y-%m-%d} .. {end:%Y-%m-%d} (end exclusive)"


def raw_traces_result(v: DayValidation) -> dg.MaterializeResult:
    """The day's volume as metadata and each validation rule as a check result. A rule's
    result carries the outcome's severity: a proportionate rule within its tolerated share
    fails as a WARN, which does not block (lib/validation.py)."""
    known = {name for name, _, _ in SPAN_RULES}
    checks = [
        dg.AssetCheckResult(
            check_name=rule.name,
            passed=bool(rule.passed),
            severity=dg.AssetCheckSeverity.WARN if rule.severity == WARN else dg.AssetCheckSeverity.ERROR,
            description=rule.description,
            metadata={
                **{k: val for k, val in rule.observed.items() if isinstance(val, (int, float, str, bool))},
                **({"examples": dg.MetadataValue.json(rule.unexpected_examples)} if rule.unexpected_examples else {}),
                **({"evaluation_error": rule.error} if rule.error else {}),
            },
        )
        for rule in v.validation.rules
        if rule.name in known
    ]
    table = md_table(["workflow", "release", "spans"], [[r.workflow, r.release, r.spans] for r in v.by_release])
    return dg.MaterializeResult(
        metadata={
            "spans": dg.MetadataValue.int(v.spans),
            "unknown_release_spans": dg.MetadataValue.int(v.unknown_release_spans),
            "anomalous_spans": dg.MetadataValue.int(v.anomalous_spans),
            "rejects_in_overlapping_batches": dg.MetadataValue.int(v.rejects_in_overlapping_batches),
            "window": dg.MetadataValue.text(window_text(v.start, v.end)),
            "by_release": dg.MetadataValue.md(table),
        },
        check_results=checks,
    )


def daily_signals_result(r: SignalsRefresh) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={
            "rows": dg.MetadataValue.int(r.rows),
            "spans": dg.MetadataValue.int(r.spans),
            "errors": dg.MetadataValue.int(r.errors),
            "cost_usd": dg.MetadataValue.float(rounding.usd(r.cost_usd)),
            "max_latency_p95_ms": dg.MetadataValue.float(rounding.ms(r.max_latency_p95_ms)),
        }
    )


def trace_features_result(r: FeaturesRefresh) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={
            "traces": dg.MetadataValue.int(r.traces),
            **({"recomputed_traces": dg.MetadataValue.int(r.recomputed)} if r.recomputed is not None else {}),
            "refresh": dg.MetadataValue.text("whole days" if r.batches is None else f"the traces of {r.batches} new batch(es)"),
            "by_workflow": dg.MetadataValue.md(md_table(["workflow", "traces"], [[w.workflow, w.traces] for w in r.by_workflow])),
        }
    )
