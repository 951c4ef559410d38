"""Time in the warehouse's convention: naive datetimes that mean UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_naive(value: datetime | None = None) -> datetime:
    """`value` (default: now) as a naive UTC datetime; a naive `value` is taken to be UTC already."""
    if value is None:
        return datetime.now(UTC).replace(tzinfo=None)
    if value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value
