"""Gate thresholds per workflow, versioned in the warehouse.

A workflow's thresholds are a sequence of versions 1, 2, 3, ... in the table
`threshold_versions`, each with its author, reason and time, and each also an event
(`thresholds_version`) in the hash-chained event log (relops_pipeline.lib.audit). The gate
uses the latest version; a release records the version in force. A workflow that never
recorded a version uses the built-in defaults (version 0).

The `thresholds:` block of a workflow file (`<home>/workflows/<workflow>.yaml`) seeds version 1
the first time it is seen (author: the workflow's owner). After that, the file is not a source
of truth: when it differs from the recorded version, relops warns and keeps the recorded one;
record a change with `relops thresholds set`, which requires an author and a reason.

The block, with the defaults (every key is optional; `null` means the default)::

    thresholds:
      confidence: 0.95            # confidence level of every interval; in (0.5, 1)
      allowed_regression: 0.02    # BLOCK needs a significant regression larger than this;
                                  # a number for every metric, or per metric with "*" as the rest:
                                  #   {fields_match: 0.01, "*": 0.03}       each in [0, 1]
      tolerated_regression: 0.05  # SHIP needs the delta's interval lower bound above -this; [0, 1]
      floors:                     # absolute minimum of the candidate's mean, per metric; [0, 1]
        fields_match: 0.8
      latency_p95_budget_ms: 2500 # p95 latency per sample must stay under this; > 0 (null: none)
      cost_per_sample_budget_usd: 0.01   # mean cost per sample; > 0 (null: none)
      min_cases: 30               # fewer cases than this can never SHIP; >= 1
      min_samples_per_case: 1     # fewer samples per case than this can never SHIP; >= 1
      resamples: 5                # extra samples for a must-pass case that newly fails; >= 0
      metrics: [fields_match, json_valid]  # the metrics that gate (null: every metric of both runs)
      must_pass: all_samples      # every sample of every must-pass case passes (pass^k); the only policy

Unknown keys are errors that name the key and where it was found.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any

import duckdb

from relops_pipeline.lib import audit
from relops_pipeline.lib.gates.model import DEFAULT_ALLOWED_REGRESSION, Thresholds

# NO_OWNER_AUTHOR and config_hash are part of this module's interface (callers and tests use them).
from relops_pipeline.lib.versioned import NO_OWNER_AUTHOR as NO_OWNER_AUTHOR
from relops_pipeline.lib.versioned import VersionedConfig
from relops_pipeline.lib.versioned import config_hash as config_hash

# The table threshold_versions is created by warehouse migration 3
# (relops_pipeline/lib/warehouse.py); event_seq is the seq of the version's event.

SEED_REASON = "initial thresholds from the workflow configuration"

# Keys a user writes; the rest of Thresholds (version, author, reason) comes from the record.
RECORD_FIELDS = ("version", "author", "reason")
CONFIG_KEYS = tuple(f.name for f in fields(Thresholds) if f.name not in RECORD_FIELDS)
MUST_PASS_POLICIES = ("all_samples",)


class ThresholdsError(ValueError):
    """Thresholds that are invalid, or a request that cannot be recorded."""


# ---------------------------------------------------------------------------------------------
# Parsing and validation


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# Ranges: (low, high, low open, high open, how to say it).
UNIT = (0.0, 1.0, False, False, "in [0, 1]")
CONFIDENCE = (0.5, 1.0, True, True, "in (0.5, 1)")
POSITIVE = (0.0, math.inf, True, True, "above 0")


def _number(errors: list[str], where: str, key: str, v: Any, rng: tuple) -> float | None:
    lo, hi, lo_open, hi_open, what = rng
    if not _is_number(v):
        errors.append(f"{where}: {key}: expected a number {what}, got {v!r}")
        return None
    if not ((v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)):
        errors.append(f"{where}: {key}: {v!r} is not {what}")
        return None
    return float(v)


def _integer(errors: list[str], where: str, key: str, v: Any, minimum: int) -> int | None:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        errors.append(f"{where}: {key}: expected an integer >= {minimum}, got {v!r}")
        return None
    return int(v)


def _metric_map(errors: list[str], where: str, key: str, v: Any, *, allow_star: bool) -> dict[str, float] | None:
    if not isinstance(v, Mapping):
        errors.append(f"{where}: {key}: expected a mapping of metric: number, got {v!r}")
        return None
    out: dict[str, float] = {}
    for metric, value in v.items():
        if not isinstance(metric, str) or not metric.strip():
            errors.append(f"{where}: {key}: metric names must be non-empty strings, got {metric!r}")
            continue
        if metric == "*" and not allow_star:
            errors.append(f"{where}: {key}: '*' is not supported here; name each metric")
            continue
        n = _number(errors, where, f"{key}.{metric}", value, UNIT)
        if n is not None:
            out[metric] = n
    return out


def parse_thresholds(mapping: Mapping[str, Any] | None, where: str) -> Thresholds:
    """Validate a `thresholds:` mapping (see the module docstring) and return it as Thresholds
    (version 0: not recorded). Raises ThresholdsError listing every problem, each naming the
    key and `where` (e.g. "workflows/support-triage.yaml: thresholds")."""
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, Mapping):
        raise ThresholdsError(f"{where}: expected a mapping of thresholds, got {type(mapping).__name__}")
    errors: list[str] = []
    defaults = Thresholds()
    values: dict[str, Any] = {}
    for key in mapping:
        if key not in CONFIG_KEYS:
            close = difflib.get_close_matches(str(key), CONFIG_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            errors.append(f"{where}: unknown key {key!r}{hint}; known keys: {', '.join(CONFIG_KEYS)}")
    given = {k: v for k, v in mapping.items() if k in CONFIG_KEYS and v is not None}

    if "confidence" in given:
        values["confidence"] = _number(errors, where, "confidence", given["confidence"], CONFIDENCE)
    if "allowed_regression" in given:
        v = given["allowed_regression"]
        if isinstance(v, Mapping):
            per_metric = _metric_map(errors, where, "allowed_regression", v, allow_star=True)
            if per_metric is not None:
                values["allowed_regression"] = {"*": DEFAULT_ALLOWED_REGRESSION, **per_metric}
        else:
            rng = UNIT[:4] + ("in [0, 1] (or a mapping of metric: number)",)
            n = _number(errors, where, "allowed_regression", v, rng)
            if n is not None:
                values["allowed_regression"] = {"*": n}
    if "tolerated_regression" in given:
        values["tolerated_regression"] = _number(
            errors, where, "tolerated_regression", given["tolerated_regression"], UNIT
        )
    if "floors" in given:
        values["floors"] = _metric_map(errors, where, "floors", given["floors"], allow_star=False)
    for key in ("latency_p95_budget_ms", "cost_per_sample_budget_usd"):
        if key in given:
            values[key] = _number(errors, where, key, given[key], POSITIVE)
    for key, minimum in (("min_cases", 1), ("min_samples_per_case", 1), ("resamples", 0)):
        if key in given:
            values[key] = _integer(errors, where, key, given[key], minimum)
    if "metrics" in given:
        v = given["metrics"]
        if not isinstance(v, (list, tuple)) or not v or not all(isinstance(m, str) and m.strip() for m in v):
            errors.append(f"{where}: metrics: expected a non-empty list of metric names, got {v!r}")
        elif len(set(v)) != len(v):
            dupes = sorted({m for m in v if list(v).count(m) > 1})
            errors.append(f"{where}: metrics: listed more than once: {', '.join(dupes)}")
        else:
            values["metrics"] = sorted(v)
    if "must_pass" in given:
        if given["must_pass"] not in MUST_PASS_POLICIES:
            errors.append(f"{where}: must_pass: {given['must_pass']!r} is not a policy; "
                          f"use one of {', '.join(MUST_PASS_POLICIES)}")
        else:
            values["must_pass"] = given["must_pass"]

    if errors:
        raise ThresholdsError("; ".join(errors))
    return Thresholds(**{**{k: getattr(defaults, k) for k in CONFIG_KEYS}, **values})


def config_of(thresholds: Thresholds) -> dict[str, Any]:
    """The configuration part of Thresholds (no version, author or reason), as stored."""
    d = asdict(thresholds)
    return {k: d[k] for k in CONFIG_KEYS}


# ---------------------------------------------------------------------------------------------
# The recorded versions (the mechanism is relops_pipeline.lib.versioned)

_VERSIONS: VersionedConfig[Thresholds] = VersionedConfig(
    table="threshold_versions",
    event_kind=audit.KIND_THRESHOLDS_VERSION,
    label="threshold version",
    subject="thresholds",
    change="a threshold change",
    error=ThresholdsError,
    parse=parse_thresholds,
    config_of=config_of,
    empty=Thresholds,
    seed_reason=SEED_REASON,
    list_versions_when_missing=True,
)


def current_thresholds(con: duckdb.DuckDBPyConnection, workflow: str) -> Thresholds:
    """The latest recorded version for the workflow; the built-in defaults (version 0) when
    none was recorded."""
    return _VERSIONS.current(con, workflow)


def thresholds_at(con: duckdb.DuckDBPyConnection, workflow: str, version: int) -> Thresholds:
    """A given version (0: the built-in defaults); ThresholdsError when it was never recorded."""
    return _VERSIONS.at(con, workflow, version)


def thresholds_history(con: duckdb.DuckDBPyConnection, workflow: str) -> list[dict[str, Any]]:
    """Every recorded version, oldest first: version, config, config_hash, author, reason,
    created_at (naive UTC), event_seq."""
    return _VERSIONS.history(con, workflow)


# ---------------------------------------------------------------------------------------------
# Recording


def record_thresholds(
    con: duckdb.DuckDBPyConnection,
    workflow: str,
    thresholds_mapping: Mapping[str, Any] | None,
    *,
    author: str,
    reason: str,
) -> Thresholds:
    """Record the mapping as the workflow's next version (latest + 1), with an event in the log,
    in one transaction (the caller's, when one is open). Identical configuration to the latest
    version is a no-op that returns the latest. Keys left out take the defaults, not the
    previous version's values: a version is always complete."""
    return _VERSIONS.record(con, workflow, thresholds_mapping, author=author, reason=reason)


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [k for k in CONFIG_KEYS if a.get(k) != b.get(k)]


def seed_from_workflow_config(
    con: duckdb.DuckDBPyConnection,
    workflow: str,
    mapping: Mapping[str, Any] | None,
    owner: str | None,
    *,
    where: str | None = None,
) -> str | None:
    """Bring the workflow file's `thresholds:` block into the record, never silently.

    - No block (or an empty one): nothing to do.
    - No version recorded yet: record the block as version 1, author the owner, reason
      "initial thresholds from the workflow configuration".
    - A version recorded and the block differs from it: change nothing and return a warning
      that names the differing keys and says to use `relops thresholds set`.
    Returns the warning, or None. An invalid block raises ThresholdsError naming the key."""
    where = where or f"workflow {workflow}: thresholds"
    if not mapping:
        return None
    from_file = parse_thresholds(mapping, where)
    latest = _VERSIONS.seed(con, workflow, mapping, owner)
    if latest is None:
        return None
    diff = _differences(config_of(from_file), config_of(latest))
    if not diff:
        return None
    return (
        f"{where} differs from the recorded threshold version {latest.version} (by {latest.author}) in "
        f"{', '.join(diff)}; the gate keeps using version {latest.version}. To adopt the file's thresholds, "
        f"record them with `relops thresholds set {workflow} --by NAME --reason TEXT`."
    )


def verify_thresholds(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Cross-check every recorded version against the event log: its config must match its
    config_hash, and the event it names must be a thresholds_version event for the same
    workflow and version carrying the same config_hash. Returns the problems (empty: all
    consistent). Use it next to audit.verify_chain: the chain protects the events, this ties
    the threshold table to them."""
    return _VERSIONS.verify(con)
