"""Reading a canary's intervals from the warehouse's `trace_features` (one row per production
request: release, start_time and the per-request metrics).

The baseline is whatever serves the rest of the traffic in the same window, never an earlier
period: both groups are read from the same interval, so time-of-day, load and upstream
changes hit both alike and only the release differs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from relops_pipeline.lib.timeutil import utc_naive

from .config import DEFAULT_CONFIG, FEATURE_COLUMNS
from .model import CanaryInterval

__all__ = ["load_canary_intervals", "UNKNOWN_RELEASE"]

UNKNOWN_RELEASE = "unknown"  # the loader's name for spans without a release: never a baseline
_EPOCH = datetime(1970, 1, 1)


def _epoch_us(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


def load_canary_intervals(
    con: Any,
    workflow: str,
    canary: str,
    baseline: str | Sequence[str] | None,
    start: datetime,
    end: datetime,
    interval_minutes: int = DEFAULT_CONFIG.interval_minutes,
    *,
    columns: Sequence[str] | None = None,
) -> list[CanaryInterval]:
    """The canary's and the baseline's per-request values from `trace_features`, cut into
    consecutive intervals [start + i·Δ, start + (i+1)·Δ) up to `end` (the last one shorter if
    the window does not divide evenly; intervals without requests are returned empty, so a
    gap shows up as NoData rather than vanishing).

    `canary` is the canary's release key; `baseline` a release key, a list of them, or None for
    "every other release of the workflow serving at the time" (the release "unknown" is never
    part of an implicit baseline: it may hold canary traffic). Times are naive UTC (aware
    datetimes are converted); a request belongs to the interval holding its start_time.
    `columns` defaults to every metric column in FEATURE_COLUMNS; NULLs become NaN (the
    judgement drops them per metric). Should a trace appear more than once, only its most
    recently computed row counts: a duplicate would count the same request twice as evidence.
    """
    if interval_minutes <= 0:
        raise ValueError("interval_minutes must be positive")
    start, end = utc_naive(start), utc_naive(end)
    if end <= start:
        raise ValueError(f"empty window: end {end} is not after start {start}")
    cols = list(FEATURE_COLUMNS if columns is None else columns)
    unknown = [c for c in cols if c not in FEATURE_COLUMNS]
    if unknown:
        raise ValueError(f"unknown trace_features columns {unknown} (known: {', '.join(FEATURE_COLUMNS)})")
    if isinstance(baseline, str):
        baseline = [baseline]
    if baseline is not None:
        baseline = list(baseline)
        if not baseline:
            raise ValueError("baseline: give a release, a list of releases, or None for all other releases")
        if canary in baseline:
            raise ValueError(f"the canary release {canary!r} cannot be part of its own baseline")

    step = timedelta(minutes=interval_minutes)
    step_us = step // timedelta(microseconds=1)
    count = math.ceil((end - start) / step)
    select = ", ".join(f'CAST("{c}" AS DOUBLE) AS "{c}"' for c in cols)
    params: list[Any] = [_epoch_us(start), step_us, canary, workflow, start, end]
    if baseline is None:  # the canary, or anything but the canary and "unknown"
        group_filter = "(release = ? OR release NOT IN (?, ?))"
        params += [canary, canary, UNKNOWN_RELEASE]
    else:  # the canary and the named baseline releases
        group_filter = f"release IN ({', '.join('?' for _ in range(len(baseline) + 1))})"
        params += [canary, *baseline]
    sql = f"""
        SELECT (epoch_us(start_time) - ?) // ? AS bucket, release = ? AS is_canary, {select}
        FROM trace_features
        WHERE workflow = ? AND start_time >= ? AND start_time < ? AND {group_filter}
        QUALIFY row_number() OVER (PARTITION BY trace_id ORDER BY computed_at DESC) = 1
        ORDER BY bucket, is_canary, start_time, trace_id
    """
    data = con.execute(sql, params).fetchnumpy()
    bucket = np.asarray(data["bucket"], dtype=np.int64)
    is_canary = np.asarray(data["is_canary"], dtype=bool)
    values = {c: np.ma.filled(np.ma.asarray(data[c]).astype(float), np.nan) for c in cols}

    out: list[CanaryInterval] = []
    for i in range(count):
        lo = start + i * step
        hi = min(start + (i + 1) * step, end)
        in_bucket = bucket == i
        c_mask, b_mask = in_bucket & is_canary, in_bucket & ~is_canary
        out.append(CanaryInterval(
            start=lo, end=hi, index=i,
            canary={c: v[c_mask] for c, v in values.items()},
            baseline={c: v[b_mask] for c, v in values.items()},
        ))
    return out
