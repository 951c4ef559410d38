"""Drift of one window of a workflow's traffic against its reference profile.

DuckDB does the heavy lifting: the exact window counts per release and, per scope, a bounded
uniform sample (bottom-k by hash(trace_id, seed), at most `sample_rows` rows; the whole window
when it is smaller). The statistics are Evidently's own drift methods (its registered
StatTest objects, called directly: the same functions its DataDriftPreset / ValueDrift run,
without building a Report), chosen the way Evidently chooses its defaults:

- numeric column with more than 5 distinct values: KS p-value when small, normed
  Wasserstein distance when large;
- categorical column, or numeric with at most 5 distinct values: chi-square p-value (more
  than 2 values) or Z-test p-value (at most 2) when small, Jensen-Shannon distance when large.

p-value verdicts are Bonferroni-corrected over the p-value columns of a scope (see
`bonferroni`); the stored threshold is the corrected one.

"Small" means at most 1000 non-null values in the smaller of the two windows. Evidently
decides on the reference size alone; here the current window counts too, because a distance
measured on a few dozen requests (a canary, a quiet day) is biased upward and would cry
drift, while a p-value accounts for the sample size. When the reference has at most 1000
rows both rules agree. A column with fewer than `min_rows` non-null values on either side is
"insufficient": no method, no score, no verdict. A window with fewer than `min_rows` traces
makes the whole summary "insufficient".

Summary per scope (the workflow as a whole, release '*', and each release seen in the window):
columns_tested = columns with a verdict; drifted_share = drifted / tested; critical_drifted =
the configured critical columns that drifted; severity = critical_severity when a critical
column drifted, share_severity when drifted_share > drifted_share_warn (the worse of the two
when both); status = "drift" when there is a severity, "ok" otherwise, "insufficient" when
nothing could be tested.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, TypedDict

from relops_pipeline.lib.drift.config import SCORE_PREFIX, DriftConfig, column_info
from relops_pipeline.lib.drift.reference import SAMPLE_SEED, Reference, bottom_k_threshold, ensure_reference
from relops_pipeline.lib.timeutil import utc_naive

# Evidently's boundary between p-value and distance methods (rows per window).
SMALL_WINDOW_ROWS = 1000
GRANULARITIES = ("weekly", "rolling", "daily", "adhoc")
SCOPES = ("workflow", "release")
ALL_RELEASES = "*"
SEVERITY_RANK = {None: 0, "WARN": 1, "ERROR": 2}


@dataclass(frozen=True)
class ColumnDrift:
    """One column's drift test. ref_rows / cur_rows: the non-null values the statistic saw
    (after sampling). status: ok | drift | insufficient."""

    column: str
    type: str
    role: str
    method: str | None
    score: float | None
    threshold: float | None
    drifted: bool | None
    status: str
    ref_rows: int
    cur_rows: int


@dataclass(frozen=True)
class DriftSummary:
    """One scope's drift in one window. cur_rows / ref_rows: exact trace counts of the window
    and of the reference window; sampled: a window was larger than sample_rows. Frozen; it
    round-trips through JSON (lib/results.py) once its samples are dropped (`without_samples`)."""

    granularity: str
    period_start: dt.date
    period_end: dt.date  # exclusive
    workflow: str
    release: str  # '*' for the workflow scope
    status: str
    severity: str | None
    columns_tested: int
    columns_drifted: int
    drifted_share: float | None
    critical_drifted: list[str]
    cur_rows: int
    ref_rows: int
    reference_id: str | None
    columns: list[ColumnDrift]
    critical_columns: list[str]
    critical_severity: str
    share_severity: str
    drifted_share_warn: float
    dominant_release: str | None = None
    sampled: bool = False
    report_path: str | None = None
    # The frames the statistics ran on (current, reference), kept only with keep_samples=True
    # (for the HTML report); never stored.
    samples: Any = field(default=None, repr=False, compare=False)

    def without_samples(self, report_path: str | None = None) -> DriftSummary:
        """This summary without its sample frames (what is stored and returned), with the
        report's path when one was written."""
        return replace(self, samples=None, report_path=report_path if report_path is not None else self.report_path)


def choose_method(col_type: str, ref_n: int, cur_n: int, n_unique: int) -> str:
    """Evidently's default method for a column (see the module docstring), with "small"
    judged on the smaller window."""
    small = min(ref_n, cur_n) <= SMALL_WINDOW_ROWS
    if col_type == "num" and n_unique > 5:
        return "ks" if small else "wasserstein"
    if small:
        return "chisquare" if n_unique > 2 else "z"
    return "jensenshannon"


def _stattests():
    # Evidently costs seconds to import: only when a statistic is computed.
    from evidently.legacy.calculations import stattests
    from evidently.legacy.core import ColumnType

    return {
        "ks": stattests.ks_stat_test,
        "chisquare": stattests.chi_stat_test,
        "z": stattests.z_stat_test,
        "wasserstein": stattests.wasserstein_stat_test,
        "jensenshannon": stattests.jensenshannon_stat_test,
    }, ColumnType


def run_stattest(method: str, reference, current, col_type: str, threshold: float) -> tuple[float, bool]:
    """Evidently's StatTest `method` on two non-null pandas Series: (score, drifted)."""
    tests, column_type = _stattests()
    ct = column_type.Numerical if col_type == "num" else column_type.Categorical
    with warnings.catch_warnings():
        # chi-square with a category absent from the reference divides by zero: p = 0 (drift),
        # which is the right verdict; scipy's RuntimeWarning about it is noise here.
        warnings.simplefilter("ignore", RuntimeWarning)
        result = tests[method](reference, current, ct, threshold)
    return float(result.drift_score), bool(result.drifted)


def column_sql(column: str) -> str:
    """SQL expression (aliased) for a drift column over trace_features-shaped rows."""
    col_type, _ = column_info(column)
    if column.startswith(SCORE_PREFIX):
        name = column[len(SCORE_PREFIX):].replace('"', '\\"').replace("'", "''")
        expr = f"TRY_CAST(json_extract_string(online_scores, '$.\"{name}\"') AS DOUBLE)"
    elif col_type == "num":
        expr = f'CAST("{column}" AS DOUBLE)'
    else:
        expr = f'CAST("{column}" AS VARCHAR)'
    return f'{expr} AS "{column.replace(chr(34), "")}"'


def clean_series(series, col_type: str):
    """Non-missing values as Evidently tests them: NaN/None dropped, and +-inf for numbers."""
    out = series.dropna()
    if col_type == "num":
        out = out[out.abs() != math.inf]
    return out


class _ColumnIdentity(TypedDict):
    """The fields of a ColumnDrift known before any test runs."""

    column: str
    type: str
    role: str
    ref_rows: int
    cur_rows: int


def column_drift(column: str, reference, current, cfg: DriftConfig, *, reference_clean: bool = False) -> ColumnDrift:
    """Drift of one column between two pandas Series (NaN/None = missing)."""
    col_type, role = column_info(column)
    ref = reference if reference_clean else clean_series(reference, col_type)
    cur = clean_series(current, col_type)
    base = _ColumnIdentity(column=column, type=col_type, role=role, ref_rows=int(len(ref)), cur_rows=int(len(cur)))
    if len(ref) < cfg.min_rows or len(cur) < cfg.min_rows:
        return ColumnDrift(**base, method=None, score=None, threshold=None, drifted=None, status="insufficient")
    import pandas as pd

    n_unique = int(pd.concat([ref, cur]).nunique())
    method = choose_method(col_type, len(ref), len(cur), n_unique)
    threshold = cfg.threshold(column, method)
    score, drifted = run_stattest(method, ref, cur, col_type, threshold)
    if math.isnan(score):
        return ColumnDrift(**base, method=method, score=None, threshold=threshold, drifted=None, status="insufficient")
    return ColumnDrift(**base, method=method, score=score, threshold=threshold, drifted=drifted,
                       status="drift" if drifted else "ok")


def summarize(
    columns: list[ColumnDrift], cfg: DriftConfig, *, enough_rows: bool
) -> tuple[str, str | None, int, int, float | None, list[str]]:
    """(status, severity, tested, drifted, drifted_share, critical_drifted) of column results."""
    tested = [c for c in columns if c.drifted is not None]
    drifted = [c for c in tested if c.drifted]
    if not enough_rows or not tested:
        return "insufficient", None, len(tested), len(drifted), None, []
    share = len(drifted) / len(tested)
    drifted_names = {c.column for c in drifted}
    critical = [c for c in cfg.critical if c in drifted_names]
    severity = None
    if critical:
        severity = cfg.critical_severity
    if share > cfg.drifted_share_warn and SEVERITY_RANK[cfg.share_severity] > SEVERITY_RANK[severity]:
        severity = cfg.share_severity
    return ("drift" if severity else "ok"), severity, len(tested), len(drifted), share, critical


def drift_of_frames(current, reference, cfg: DriftConfig, columns: Sequence[str], *, reference_clean=None) -> list[ColumnDrift]:
    """Column drift of two pandas DataFrames holding the given columns. `reference_clean`:
    {column: clean_series(reference[column])} computed once for several current frames."""
    if reference_clean is None:
        results = [column_drift(c, reference[c], current[c], cfg) for c in columns]
    else:
        results = [column_drift(c, reference_clean[c], current[c], cfg, reference_clean=True) for c in columns]
    return bonferroni(results)


P_VALUE_METHODS = ("ks", "chisquare", "z")


def bonferroni(columns: list[ColumnDrift]) -> list[ColumnDrift]:
    """Correct the p-value verdicts of one scope for the number of columns tested with a
    p-value: each is held to threshold / m. Without it, 17 columns tested at 0.05 each flag
    something in most stationary small windows (and a critical column in about 1 in 10).
    Distance methods measure a size of change, not evidence: they keep their threshold."""
    tested = [c for c in columns if c.method in P_VALUE_METHODS and c.score is not None]
    m = len(tested)
    if m <= 1:
        return columns
    out = []
    for c in columns:
        if c in tested:
            assert c.threshold is not None and c.score is not None  # tested: a method ran and scored
            threshold = c.threshold / m
            drifted = c.score <= threshold if c.method == "ks" else c.score < threshold
            c = ColumnDrift(**{**asdict(c), "threshold": threshold, "drifted": drifted, "status": "drift" if drifted else "ok"})
        out.append(c)
    return out


def sample_frame(con, cols_sql: str, where: str, params: dict, *, rows: int, k: int):
    """The rows of trace_features matching `where` (`rows` of them) as a DataFrame, or when
    there are more than k, the k with the smallest hash(trace_id, seed): the same bottom-k
    sample as reference.py draws. A hash threshold that keeps ~1.25 k rows filters during the
    scan, so the top-k sort sees a few rows instead of the whole window (4x faster and far
    less memory at millions of rows); should it keep fewer than k, the full sort runs."""
    if rows <= k:
        return con.execute(f"SELECT {cols_sql} FROM trace_features WHERE {where}", params).df()
    p = {**params, "seed": SAMPLE_SEED, "k": k, "thr": bottom_k_threshold(rows, k)}
    order = "ORDER BY hash(trace_id, $seed), trace_id LIMIT $k"
    df = con.execute(
        f"SELECT {cols_sql} FROM trace_features WHERE {where} AND hash(trace_id, $seed) < CAST($thr AS UBIGINT) {order}", p
    ).df()
    if len(df) < k:
        del p["thr"]
        df = con.execute(f"SELECT {cols_sql} FROM trace_features WHERE {where} {order}", p).df()
    return df


@dataclass
class DriftCache:
    """What the windows of one drift run share, per workflow: the reference (resolved once),
    its sample frame and cleaned columns (read once), and the column results of each distinct
    current sample. Evidently's stattests compare one (reference, current) pair per call, so a
    window whose rows differ needs its own tests; but two windows of a scope whose days with
    traffic are the same hold exactly the same rows (trace_features rows belong to a day), so
    the second reuses the first's results (after an ingestion into one day, its 7 trailing
    windows are often the same rows). Valid for one run: build a new one per run."""

    references: dict[str, Reference | None] = field(default_factory=dict)
    frames: dict[str, tuple[Any, dict[str, Any]]] = field(default_factory=dict)
    results: dict[tuple, tuple[list[ColumnDrift], Any]] = field(default_factory=dict)
    hits: int = 0


def _columns_for(cfg: DriftConfig, ref: Reference | None) -> list[str]:
    if cfg.columns is not None:
        return list(cfg.columns)
    return ref.available_columns() if ref is not None else []


def compute_drift(
    con,
    workflow: str,
    cfg: DriftConfig,
    window_start: dt.date,
    window_end: dt.date,
    *,
    granularity: str,
    scopes: Sequence[str] = SCOPES,
    run_id: str | None = None,
    keep_samples: bool = False,
    reference: Reference | None = None,
    cache: DriftCache | None = None,
) -> list[DriftSummary]:
    """Drift of `workflow`'s traces with day in [window_start, window_end) against its
    reference (built and stored on first use unless given): the workflow scope first
    (release '*', always present, "insufficient" when the window is empty), then one summary
    per release with traces in the window when "release" is in `scopes`.

    Reads trace_features; writes only a new reference version when one is needed. `cache`:
    shared by the windows of one run over the same workflows and configuration (DriftCache).
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity: expected one of {GRANULARITIES}, got {granularity!r}")
    bad = [s for s in scopes if s not in SCOPES]
    if bad:
        raise ValueError(f"scopes: unknown {bad} (known: {SCOPES})")
    ref: Reference | None
    if reference is not None:
        ref = reference
    elif cache is not None and workflow in cache.references:
        ref = cache.references[workflow]
    else:
        ref = ensure_reference(con, workflow, cfg, run_id=run_id)
        if cache is not None:
            cache.references[workflow] = ref
    window = {"workflow": workflow, "start": window_start, "end": window_end}
    counted = con.execute(
        "SELECT release, count(*) AS n, list(DISTINCT day ORDER BY day) AS days FROM trace_features "
        "WHERE workflow = $workflow AND day >= $start AND day < $end GROUP BY release ORDER BY n DESC, release",
        window,
    ).fetchall()
    counts = [(r, n) for r, n, _ in counted]
    days_of = {r: tuple(d) for r, _, d in counted}
    days_of[ALL_RELEASES] = tuple(sorted({d for _, _, ds in counted for d in ds}))
    total = sum(int(n) for _, n in counts)
    columns = _columns_for(cfg, ref)
    ref_rows = ref.rows_total if ref else 0
    enough_ref = ref is not None and ref_rows >= cfg.min_rows

    ref_df = None
    cols_sql = ", ".join(column_sql(c) for c in columns) if columns else "1 AS _none"
    if ref is not None and enough_ref and columns and total >= cfg.min_rows:
        frames = cache.frames.get(ref.reference_id) if cache is not None else None
        if frames is None:
            ref_df = con.execute(
                f"SELECT {cols_sql} FROM drift_reference_rows WHERE reference_id = $rid", {"rid": ref.reference_id}
            ).df()
            frames = ref_df, {c: clean_series(ref_df[c], column_info(c)[0]) for c in columns}
            if cache is not None:
                cache.frames[ref.reference_id] = frames
        ref_df, ref_clean = frames

    scope_list: list[tuple[str, int]] = []
    if "workflow" in scopes:
        scope_list.append((ALL_RELEASES, total))
    if "release" in scopes:
        scope_list.extend((r, int(n)) for r, n in counts)

    out = []
    local: dict[tuple, tuple[list[ColumnDrift], Any]] = {}
    for release, n in scope_list:
        enough = enough_ref and n >= cfg.min_rows
        cur_df = None
        if enough and ref_df is not None:
            # The same rows as the workflow scope when one release holds the whole window.
            key = (workflow, ALL_RELEASES if n == total else release, days_of[release], ref.reference_id if ref else None)
            hit = cache.results.get(key) if cache is not None else None
            if hit is None and n == total and release != ALL_RELEASES:
                hit = local.get(key)
            if hit is not None:
                col_results, cur_df = hit
                if cache is not None:
                    cache.hits += 1
            else:
                rel_sql = "" if release == ALL_RELEASES else " AND release = $release"
                params = {**window, **({} if release == ALL_RELEASES else {"release": release})}
                cur_df = sample_frame(
                    con, cols_sql, f"workflow = $workflow AND day >= $start AND day < $end{rel_sql}", params,
                    rows=n, k=cfg.sample_rows,
                )
                col_results = drift_of_frames(cur_df, ref_df, cfg, columns, reference_clean=ref_clean)
                local[key] = (col_results, cur_df if keep_samples else None)
                if cache is not None:
                    cache.results[key] = local[key]
        else:
            col_results = []
            for c in columns:
                t, role = column_info(c)
                col_results.append(ColumnDrift(c, t, role, None, None, None, None, "insufficient", 0, 0))
        status, severity, tested, drifted, share, critical = summarize(col_results, cfg, enough_rows=enough)
        out.append(DriftSummary(
            granularity=granularity, period_start=window_start, period_end=window_end, workflow=workflow,
            release=release, status=status, severity=severity, columns_tested=tested, columns_drifted=drifted,
            drifted_share=share, critical_drifted=critical, cur_rows=n, ref_rows=ref_rows,
            reference_id=ref.reference_id if ref else None, columns=col_results,
            critical_columns=list(cfg.critical), critical_severity=cfg.critical_severity,
            share_severity=cfg.share_severity, drifted_share_warn=cfg.drifted_share_warn,
            dominant_release=(counts[0][0] if counts else None) if release == ALL_RELEASES else release,
            sampled=n > cfg.sample_rows or (ref is not None and ref.rows_total > ref.rows_sampled),
            samples=(cur_df, ref_df) if keep_samples and cur_df is not None else None,
        ))
    return out


def store_drift(
    con,
    summaries: Sequence[DriftSummary],
    *,
    run_id: str | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Replace the stored results of every (granularity, period, workflow) in `summaries` by
    these (drift_summaries + one drift_results row per column) in one transaction; return the
    number of summary rows written. `con` must not be inside a transaction already."""
    if not summaries:
        return 0
    now = now or utc_naive()
    keys = sorted({(s.granularity, s.period_start, s.period_end, s.workflow) for s in summaries})
    summary_rows = [
        [s.granularity, s.period_start, s.period_end, s.workflow, s.release, s.status, s.severity,
         s.columns_tested, s.columns_drifted, s.drifted_share, json.dumps(s.critical_drifted), s.cur_rows,
         s.ref_rows, s.reference_id, s.report_path, run_id, now]
        for s in summaries
    ]
    result_rows = [
        [s.granularity, s.period_start, s.period_end, s.workflow, s.release, c.column, c.type, c.role, c.method,
         c.score, c.threshold, c.drifted, c.status, c.ref_rows, c.cur_rows, s.reference_id, run_id, now]
        for s in summaries for c in s.columns
    ]
    con.execute("BEGIN TRANSACTION")
    try:
        for table in ("drift_summaries", "drift_results"):
            for g, ps, pe, wf in keys:
                con.execute(
                    f"DELETE FROM {table} WHERE granularity = ? AND period_start = ? AND period_end = ? AND workflow = ?",
                    [g, ps, pe, wf],
                )
        _insert_rows(con, "drift_summaries", summary_rows)
        _insert_rows(con, "drift_results", result_rows)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return len(summary_rows)


def _insert_rows(con, table: str, rows: list[list], chunk: int = 500) -> None:
    # One multi-row INSERT per chunk: executemany costs a statement per row.
    for i in range(0, len(rows), chunk):
        part = rows[i:i + chunk]
        one = "(" + ", ".join("?" * len(part[0])) + ")"
        con.execute(f"INSERT INTO {table} VALUES " + ", ".join([one] * len(part)), [v for r in part for v in r])
