"""Numbers rounded to what they mean, for display (Dagster metadata): a rate or score to four
significant digits, a latency to whole milliseconds, a duration in seconds to milliseconds, a
cost to a millionth of a dollar. The stored values keep their full precision; only what a
person reads is rounded."""

from __future__ import annotations

import math

RATE_DIGITS = 4  # significant digits of a rate, share, score or difference of them
USD_DECIMALS = 6


def rate(value: float) -> float:
    """A rate, share, score, confidence or a difference of them: four significant digits
    (-0.0009523809523809538 -> -0.0009524)."""
    value = float(value)
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, RATE_DIGITS - 1 - math.floor(math.log10(abs(value))))


def ms(value: float) -> float:
    """A latency or duration in milliseconds: whole milliseconds."""
    value = float(value)
    return float(round(value)) if math.isfinite(value) else value


def seconds(value: float) -> float:
    """A duration in seconds: to the millisecond."""
    value = float(value)
    return round(value, 3) if math.isfinite(value) else value


def usd(value: float) -> float:
    """A cost in US dollars: to a millionth of a dollar (token prices are that small)."""
    value = float(value)
    return round(value, USD_DECIMALS) if math.isfinite(value) else value


def by_name(name: str, value: float) -> float:
    """A number rounded by what its name says it is: a latency in ms (`latency`, `_ms`), a cost
    (`cost`, `usd`), a duration in seconds (`_s`, `seconds`); anything else as a rate or score."""
    lowered = name.lower()
    if "latency" in lowered or lowered.endswith("_ms"):
        return ms(value)
    if "cost" in lowered or "usd" in lowered:
        return usd(value)
    if lowered.endswith("_s") or "seconds" in lowered:
        return seconds(value)
    return rate(value)
