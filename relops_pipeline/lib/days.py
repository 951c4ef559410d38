"""Ranges of days: which days a refresh covers, clamped once to the days that exist."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

DayRange = tuple[dt.date, dt.date]


def day_ranges(days: Iterable[dt.date]) -> list[DayRange]:
    """Consecutive days grouped into (first, last) ranges: one refresh run per range."""
    out: list[DayRange] = []
    for d in sorted(set(days)):
        if out and (d - out[-1][1]).days == 1:
            out[-1] = (out[-1][0], d)
        else:
            out.append((d, d))
    return out


def bridged(ranges: Sequence[DayRange], occupied: Iterable[dt.date], max_gap_days: int) -> list[DayRange]:
    """Sorted ranges with each gap of at most `max_gap_days` days that holds no `occupied` day
    bridged: the two ranges and the empty days between them become one range (one refresh run
    instead of two: a run costs about as much as 15 empty days in it). A gap holding an
    occupied day stays, so no run recomputes a day nobody touched that has data."""
    full = set(occupied)
    out: list[DayRange] = []
    for rng in sorted(ranges):
        if out:
            gap = [out[-1][1] + dt.timedelta(days=k) for k in range(1, (rng[0] - out[-1][1]).days)]
            if len(gap) <= max_gap_days and not full.intersection(gap):
                out[-1] = (out[-1][0], max(out[-1][1], rng[1]))
                continue
        out.append(rng)
    return out


def gaps(ranges: Sequence[DayRange], max_gap_days: int) -> list[DayRange]:
    """The (first, last) days between consecutive sorted ranges, for gaps of 1..max_gap_days days."""
    out = []
    ordered = sorted(ranges)
    for a, b in zip(ordered, ordered[1:], strict=False):
        n = (b[0] - a[1]).days - 1
        if 1 <= n <= max_gap_days:
            out.append((a[1] + dt.timedelta(days=1), b[0] - dt.timedelta(days=1)))
    return out


def clamp(rng: DayRange, first: dt.date, last: dt.date) -> DayRange | None:
    """The part of `rng` within first..last, or None when they do not overlap."""
    lo, hi = max(rng[0], first), min(rng[1], last)
    return (lo, hi) if lo <= hi else None


def trailing_window_days(rng: DayRange, window_days: int) -> DayRange:
    """The days whose trailing window of `window_days` (the day itself included) holds a day of `rng`."""
    return rng[0], rng[1] + dt.timedelta(days=window_days - 1)


def hull(ranges: Sequence[DayRange]) -> DayRange | None:
    """The smallest range that holds every range (one run over it instead of one per range)."""
    if not ranges:
        return None
    return min(r[0] for r in ranges), max(r[1] for r in ranges)
