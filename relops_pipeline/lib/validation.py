"""Data-quality rules for a batch of spans, evaluated by Great Expectations.

GX runs on a pandas DataFrame, not on DuckDB through SQLAlchemy: with SQLAlchemy 2.1 + DuckDB
2.0 every GX expectation fails silently (an IndexError hidden in `exception_info`). Pull the
batch with `spans_frame` (only VALIDATION_COLUMNS) and hand it to `validate_spans`.

Rules (name, severity):

- keys_not_null (ERROR): trace_id, span_id, workflow, release, start_time are never null.
- span_ids_unique (ERROR): (trace_id, span_id) is unique. Rows with a null key are left to
  keys_not_null. GX counts every row of a duplicated pair: 2 duplicated pairs = 4 rows.
- times_ordered (ERROR, proportionate): end_time >= start_time. Rows missing either time are
  skipped (a null start_time is a keys_not_null failure; a null end_time is allowed).
- latency_not_negative (ERROR, proportionate): latency_ms >= 0 (null latencies are skipped).
- unknown_release_share (WARN): the share of spans with release_known false is at most
  `unknown_release_max_share` (GX `expect_column_values_to_be_in_set([True], mostly=1-share)`;
  null release_known values are not counted, as GX ignores missing values).
- latency_in_range (WARN): at least LATENCY_RANGE_MOSTLY of latencies lie in
  [0, latency_max_ms].

Proportionate rules judge a share, not a single row: clock skew between hosts makes a few spans
end before they start on any busy day, and the loader keeps those spans (latency NULL, flagged
in `anomalies`), so one of them must not block the day. GX evaluates them with
`mostly = 1 - max_violating_share` (default DEFAULT_MAX_VIOLATING_SHARE, 1 %; `data_quality:
max_violating_share` in relops.yaml): more than that share of the checked spans violating fails
the rule as an ERROR (the day is genuinely broken and blocks); some violating spans within the
share fail it as a WARN, which does not block, with the count in `observed` (unexpected_count,
violating_share, max_violating_share, tolerated). The identity rules (keys_not_null,
span_ids_unique) stay strict: the loader rejects spans without identity and deduplicates, so a
violation there means the warehouse itself is wrong.

Any exception GX reports inside a result (`exception_info`), a missing result, or an
exception raised by GX itself turns the affected rules into failures carrying the message.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

ERROR = "ERROR"
WARN = "WARN"

KEY_COLUMNS = ("trace_id", "span_id", "workflow", "release", "start_time")
VALIDATION_COLUMNS = (
    "trace_id",
    "span_id",
    "start_time",
    "end_time",
    "latency_ms",
    "release",
    "release_known",
    "workflow",
)
LATENCY_RANGE_MOSTLY = 0.999
# The share of a day's spans a proportionate rule tolerates (as a WARN) before it is an ERROR.
DEFAULT_MAX_VIOLATING_SHARE = 0.01
# The rules judged by share (see the module docstring).
PROPORTIONATE_RULES = ("times_ordered", "latency_not_negative")
EXAMPLES_MAX = 5

_RULE_META_KEY = "relops_rule"


@dataclasses.dataclass(frozen=True)
class RuleResult:
    """The outcome of one rule.

    `severity` is the outcome's: a proportionate rule whose violations stay within the tolerated
    share fails as WARN (`observed["tolerated"]` True) although the rule is an ERROR rule.
    `observed` holds flat numbers (element_count, unexpected_count, unexpected_percent, and
    rule-specific values such as `null_count.<column>` or `unknown_share`); `empty_batch` is
    set when there were no rows. `error` carries the GX exception message when the rule could
    not be evaluated (then `passed` is False).
    """

    name: str
    severity: str
    passed: bool
    observed: dict[str, Any]
    description: str
    unexpected_examples: list[Any]
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class SpanValidation:
    """All rule results for one batch of spans."""

    rules: tuple[RuleResult, ...]
    element_count: int
    duration_s: float

    @property
    def passed(self) -> bool:
        """True when no ERROR rule failed (WARN failures do not block)."""
        return not self.failed(ERROR)

    def failed(self, severity: str | None = None) -> list[RuleResult]:
        """The failed rules, optionally only those of one severity."""
        return [r for r in self.rules if not r.passed and (severity is None or r.severity == severity)]

    def rule(self, name: str) -> RuleResult:
        """The result of the rule called `name`."""
        for r in self.rules:
            if r.name == name:
                return r
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary."""
        return {
            "passed": self.passed,
            "element_count": self.element_count,
            "duration_s": self.duration_s,
            "rules": [dataclasses.asdict(r) for r in self.rules],
        }


def load_max_violating_share(settings_file: Path) -> float:
    """`data_quality.max_violating_share` of a home's relops.yaml (a share in [0, 1]; default
    DEFAULT_MAX_VIOLATING_SHARE when the file or the key is absent). A bad value is a
    SettingsError naming the file and the key, never a silent default."""
    from relops_pipeline.lib.settings import SettingsError, _document

    section = _document(settings_file).get("data_quality") or {}
    where = f"{settings_file}: data_quality.max_violating_share"
    if not isinstance(section, dict):
        raise SettingsError(f"{settings_file}: data_quality: expected a mapping")
    value = section.get("max_violating_share", DEFAULT_MAX_VIOLATING_SHARE)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise SettingsError(f"{where}: expected a share between 0 and 1 (0.01 = 1 %), got {value!r}")
    return float(value)


def spans_frame(con, *, batch_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """The columns the rules need, from warehouse `spans`, for the given ingest batches
    (all spans when `batch_ids` is None)."""
    cols = ", ".join(f'"{c}"' for c in VALIDATION_COLUMNS)
    if batch_ids is None:
        return con.execute(f"SELECT {cols} FROM spans").df()
    return con.execute(
        f"SELECT {cols} FROM spans WHERE ingest_batch_id IN (SELECT unnest(?::VARCHAR[]))",
        [list(batch_ids)],
    ).df()


# One ephemeral context per process: building one costs a few ms after the 4 s import, but it
# is shared mutable state, so validations are serialised. The pandas datasource is added per
# call and deleted afterwards, because the context otherwise keeps the last validated frame
# alive (measured: the DataFrame stays referenced until the datasource is deleted).
_LOCK = threading.Lock()
_CONTEXT = None


def _context():
    global _CONTEXT
    if _CONTEXT is None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        _CONTEXT = ctx
    return _CONTEXT


def _percent(share: float) -> str:
    """0.01 -> "1 %", 0.0014977 -> "0.15 %"."""
    return f"{share * 100:.3g} %"


def _mostly(max_share: float) -> float:
    # GX compares (n - bad) / n >= mostly in floats: 1 - 0.059 is above 941/1000, so a share
    # exactly at the limit would fail without the slack.
    return max(0.0, 1.0 - max_share - 1e-9)


def _rule_specs(latency_max_ms: float, unknown_release_max_share: float, max_violating_share: float):
    """(name, severity, description, [expectation, ...]) for every rule, in report order."""
    import great_expectations.expectations as gxe

    def tag(name, **extra):
        return {_RULE_META_KEY: name, **extra}

    share = f"ERROR above {_percent(max_violating_share)} of spans, else WARN with the count"

    return [
        (
            "keys_not_null",
            ERROR,
            "trace_id, span_id, workflow, release and start_time are never null",
            [gxe.ExpectColumnValuesToNotBeNull(column=c, meta=tag("keys_not_null", column=c)) for c in KEY_COLUMNS],
        ),
        (
            "span_ids_unique",
            ERROR,
            "(trace_id, span_id) is unique; unexpected_count counts every row of a duplicated pair",
            [
                gxe.ExpectCompoundColumnsToBeUnique(
                    column_list=["trace_id", "span_id"],
                    ignore_row_if="any_value_is_missing",
                    meta=tag("span_ids_unique"),
                )
            ],
        ),
        (
            "times_ordered",
            ERROR,
            f"end_time >= start_time (rows missing either time are skipped; {share})",
            [
                gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                    column_A="end_time",
                    column_B="start_time",
                    or_equal=True,
                    ignore_row_if="either_value_is_missing",
                    mostly=_mostly(max_violating_share),
                    meta=tag("times_ordered"),
                )
            ],
        ),
        (
            "latency_not_negative",
            ERROR,
            f"latency_ms >= 0 (null latencies are skipped; {share})",
            [
                gxe.ExpectColumnValuesToBeBetween(
                    column="latency_ms",
                    min_value=0,
                    mostly=_mostly(max_violating_share),
                    meta=tag("latency_not_negative"),
                )
            ],
        ),
        (
            "unknown_release_share",
            WARN,
            f"share of spans with an unknown release <= {unknown_release_max_share:g}",
            [
                gxe.ExpectColumnValuesToBeInSet(
                    column="release_known",
                    value_set=[True],
                    mostly=_mostly(unknown_release_max_share),
                    meta=tag("unknown_release_share"),
                )
            ],
        ),
        (
            "latency_in_range",
            WARN,
            f"at least {LATENCY_RANGE_MOSTLY:.1%} of latency_ms in [0, {latency_max_ms:g}]",
            [
                gxe.ExpectColumnValuesToBeBetween(
                    column="latency_ms",
                    min_value=0,
                    max_value=latency_max_ms,
                    mostly=LATENCY_RANGE_MOSTLY,
                    meta=tag("latency_in_range"),
                )
            ],
        ),
    ]


def _exception_message(info: Any) -> str | None:
    """The message of an exception GX recorded, if any.

    GX uses two shapes: a flat {"raised_exception": bool, "exception_message": ...} and, when a
    metric failed, {<metric id>: {"raised_exception": True, "exception_message": ...}, ...}.
    """
    if not info:
        return None
    if "raised_exception" in info:
        if info.get("raised_exception"):
            return str(info.get("exception_message") or "GX raised an exception without a message")
        return None
    messages = [
        str(v.get("exception_message") or "GX raised an exception without a message")
        for v in info.values()
        if isinstance(v, dict) and v.get("raised_exception")
    ]
    return "; ".join(dict.fromkeys(messages)) or None


def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (dt.datetime, dt.date, pd.Timestamp)):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def _combine(name: str, severity: str, description: str, results: list[dict], expected: int, max_violating_share: float) -> RuleResult:
    """Fold the GX results of one rule's expectations into a RuleResult."""
    errors = []
    if len(results) != expected:
        errors.append(f"GX returned {len(results)} results for {expected} expectations")
    observed: dict[str, Any] = {}
    examples: list[Any] = []
    element_count = None
    unexpected_total = 0
    percent_max = 0.0
    passed = True
    for res in results:
        cfg = res.get("expectation_config") or {}
        msg = _exception_message(res.get("exception_info"))
        if msg:
            column = (cfg.get("meta") or {}).get("column")
            errors.append(f"{column}: {msg}" if column else msg)
            continue
        body = res.get("result") or {}
        if "element_count" not in body or body.get("unexpected_count") is None:
            errors.append(f"GX returned no counts for {cfg.get('type')}")
            continue
        passed = passed and bool(res.get("success"))
        element_count = int(body["element_count"])
        n_bad = int(body["unexpected_count"])
        unexpected_total += n_bad
        percent_max = max(percent_max, float(body.get("unexpected_percent") or 0.0))
        column = (cfg.get("meta") or {}).get("column")
        if column is not None:
            observed[f"null_count.{column}"] = n_bad
            if n_bad:
                examples.append(f"{column}: {n_bad} null")
        else:
            examples.extend(_jsonable(body.get("partial_unexpected_list") or [])[:EXAMPLES_MAX])
            if "missing_count" in body:
                observed["missing_count"] = int(body["missing_count"])
    if element_count is not None:
        observed["element_count"] = element_count
        observed["unexpected_count"] = unexpected_total
        # For keys_not_null (one expectation per column) this is the worst column's percentage.
        observed["unexpected_percent"] = percent_max
        if element_count == 0:
            observed["empty_batch"] = True
            description = f"{description} (empty batch: nothing to check)"
    if name == "unknown_release_share" and element_count is not None:
        considered = element_count - observed.get("missing_count", 0)
        observed["unknown_share"] = (unexpected_total / considered) if considered else 0.0
    error = "; ".join(errors) or None
    if error:
        passed = False
        description = f"{description} — NOT EVALUATED: {error}"
    elif name in PROPORTIONATE_RULES and element_count is not None:
        share = percent_max / 100.0
        observed["violating_share"] = share
        observed["max_violating_share"] = max_violating_share
        found = f"{unexpected_total} spans violate ({_percent(share)})"
        if passed and unexpected_total:
            # Within the tolerated share: counted and shown, but it does not block the day.
            passed, severity = False, WARN
            observed["tolerated"] = True
            description = f"{description} — {found}, within the tolerated {_percent(max_violating_share)}: WARN"
        elif not passed:
            description = f"{description} — {found}, more than the tolerated {_percent(max_violating_share)}: ERROR"
    return RuleResult(
        name=name,
        severity=severity,
        passed=passed,
        observed=observed,
        description=description,
        unexpected_examples=examples[:EXAMPLES_MAX],
        error=error,
    )


def validate_spans(
    df: pd.DataFrame | Iterable[pd.DataFrame],
    *,
    latency_max_ms: float = 600_000,
    unknown_release_max_share: float = 0.05,
    max_violating_share: float = DEFAULT_MAX_VIOLATING_SHARE,
) -> SpanValidation:
    """Validate a batch of spans (a DataFrame with VALIDATION_COLUMNS) with Great Expectations.

    Returns one RuleResult per rule (see the module docstring). An empty frame passes every
    rule with element_count 0. GX errors never pass silently: they fail the rule with the
    message in `error` and `description`.

    The batch may come as several frames (an iterable), so a large day is never in memory at
    once: GX validates each frame and the counts are summed per expectation, then each
    expectation is judged on the totals (a `mostly` rule on the whole batch's share, not per
    frame). For span_ids_unique to count right, the frames must partition the spans by
    trace_id (both rows of a duplicated pair in one frame), as `validate_window` does.
    """
    if not 0.0 <= unknown_release_max_share <= 1.0:
        raise ValueError(f"unknown_release_max_share must be in [0, 1], got {unknown_release_max_share}")
    if not 0.0 <= max_violating_share <= 1.0:
        raise ValueError(f"max_violating_share must be in [0, 1], got {max_violating_share}")
    if latency_max_ms < 0:
        raise ValueError(f"latency_max_ms must be >= 0, got {latency_max_ms}")
    started = time.perf_counter()
    specs = _rule_specs(latency_max_ms, unknown_release_max_share, max_violating_share)
    frames = [df] if isinstance(df, pd.DataFrame) else df
    per_frame: list[list[dict]] = []
    failure: str | None = None
    rows = 0
    for frame in frames:
        rows += len(frame)
        results, failure = _validate_frame(frame, specs)
        if failure:
            break
        per_frame.append(results)
    if not per_frame and failure is None:  # no frame at all: validate an empty one
        results, failure = _validate_frame(pd.DataFrame({c: [] for c in VALIDATION_COLUMNS}), specs)
        per_frame.append(results)
    merged = _merge_frames(per_frame) if failure is None else []
    by_rule: dict[str, list[dict]] = {name: [] for name, *_ in specs}
    for res in merged:
        rule = ((res.get("expectation_config") or {}).get("meta") or {}).get(_RULE_META_KEY)
        if rule in by_rule:
            by_rule[rule].append(res)

    rules = []
    for name, severity, description, expectations in specs:
        r = _combine(name, severity, description, by_rule[name], len(expectations), max_violating_share)
        if failure:
            r = dataclasses.replace(
                r,
                severity=severity,
                passed=False,
                error=failure,
                description=f"{description} — NOT EVALUATED: {failure}",
            )
        rules.append(r)
    return SpanValidation(
        rules=tuple(rules),
        element_count=rows,
        duration_s=time.perf_counter() - started,
    )


def _validate_frame(df: pd.DataFrame, specs) -> tuple[list[dict], str | None]:
    """GX's results for one frame (JSON dicts, in suite order), or the exception GX raised."""
    import great_expectations as gx

    source_name = "relops_spans_frame"
    with _LOCK:
        ctx = None
        try:
            ctx = _context()
            # A suite resolves GX's current context on add_expectation: build it after _context().
            suite = gx.ExpectationSuite(name="relops_spans")
            for _, _, _, expectations in specs:
                for e in expectations:
                    suite.add_expectation(e)
            source = ctx.data_sources.add_or_update_pandas(source_name)
            batch_def = source.add_dataframe_asset("spans").add_batch_definition_whole_dataframe("whole")
            batch = batch_def.get_batch(batch_parameters={"dataframe": df})
            report = batch.validate(
                suite, result_format={"result_format": "BASIC", "partial_unexpected_count": EXAMPLES_MAX}
            ).to_json_dict()
        except Exception as exc:  # surfaced as failed rules by the caller, never a pass
            return [], f"{type(exc).__name__}: {exc}"
        finally:
            if ctx is not None and source_name in ctx.data_sources.all():
                ctx.data_sources.delete(source_name)
    return list(report.get("results", [])), None


def _merge_frames(per_frame: list[list[dict]]) -> list[dict]:
    """One GX result per expectation from the results of several frames: counts summed, the
    unexpected percentage recomputed on the totals (of the non-missing values, as GX does), and
    success judged on the totals (`mostly` against the whole batch's share; without `mostly`,
    every frame must pass). An exception in any frame is kept, so the rule is not evaluated."""
    if len(per_frame) == 1:
        return per_frame[0]
    merged = []
    for results in zip(*per_frame, strict=False):
        first = results[0]
        cfg = first.get("expectation_config") or {}
        broken = next((r for r in results if _exception_message(r.get("exception_info"))), None)
        bodies = [r.get("result") or {} for r in results]
        if broken is not None or any("element_count" not in b or b.get("unexpected_count") is None for b in bodies):
            merged.append(broken or next(r for r in results if "element_count" not in (r.get("result") or {})
                                         or (r.get("result") or {}).get("unexpected_count") is None))
            continue
        element = sum(int(b["element_count"]) for b in bodies)
        unexpected = sum(int(b["unexpected_count"]) for b in bodies)
        examples = [x for b in bodies for x in (b.get("partial_unexpected_list") or [])][:EXAMPLES_MAX]
        body: dict[str, Any] = {"element_count": element, "unexpected_count": unexpected, "partial_unexpected_list": examples}
        considered = element
        if all("missing_count" in b for b in bodies):
            body["missing_count"] = sum(int(b["missing_count"]) for b in bodies)
            considered = element - body["missing_count"]
        body["unexpected_percent"] = 100.0 * unexpected / considered if considered else 0.0
        mostly = (cfg.get("kwargs") or {}).get("mostly")
        if mostly is None:
            success = all(bool(r.get("success")) for r in results)
        else:
            success = considered == 0 or (considered - unexpected) / considered >= float(mostly)
        merged.append({**first, "success": success, "result": body})
    return merged
