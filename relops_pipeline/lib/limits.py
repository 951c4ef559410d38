"""Documented size limits on what people and tools hand relops, checked before anything is read
or written, with an error that says the limit and how to stay under it."""

from __future__ import annotations

import os
from pathlib import Path

MiB = 1024 * 1024
# An eval harness's results file (promptfoo, Inspect, JSONL): far above a real suite's results.
MAX_EVAL_IMPORT_BYTES = 256 * MiB
# A review sheet: the weekly sample is 40 traces; a sheet this large is not a review.
MAX_REVIEW_SHEET_BYTES = 16 * MiB
MAX_REVIEW_ROWS = 10_000
# Free text on the command line (reasons, notes, names): kept whole in the audit log.
MAX_TEXT_CHARS = 4_000


class InputTooLarge(ValueError):
    """An input over its documented limit (nothing was read or written)."""


def require_file_size(path: str | os.PathLike, limit: int, what: str) -> Path:
    """The path, when its file is at most `limit` bytes; InputTooLarge otherwise."""
    p = Path(path)
    size = p.stat().st_size
    if size > limit:
        raise InputTooLarge(f"{p}: {what} of {size / MiB:.1f} MiB is over the limit of {limit / MiB:.0f} MiB "
                            "(split it, or import the part that matters)")
    return p


def require_text(value: str, what: str, limit: int = MAX_TEXT_CHARS) -> str:
    """Free text within `limit` characters and without NUL characters."""
    if "\x00" in value:
        raise InputTooLarge(f"{what}: contains a NUL character")
    if len(value) > limit:
        raise InputTooLarge(f"{what}: {len(value):,} characters is over the limit of {limit:,}")
    return value
