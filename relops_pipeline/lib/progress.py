"""Progress of long work, for people watching a terminal.

Assets and ops report progress to the Dagster run log (the UI shows it). When the `relops`
command runs a job in its own process, the run log stays quiet on the terminal; these lines
go to the `relops.progress` logger instead, which the command prints to stderr. A `Throttle`
keeps it to one line every few seconds.
"""

from __future__ import annotations

import logging
import time

logger = logging.getLogger("relops.progress")


class Throttle:
    """Call `maybe(text)` as often as you like: a line once `every_s` seconds have passed since
    the start or the last line (work that finishes sooner prints nothing), and always with
    `force=True`."""

    def __init__(self, every_s: float = 5.0):
        self.every_s = every_s
        self._last = time.monotonic()

    def maybe(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.every_s:
            self._last = now
            logger.info(text)
