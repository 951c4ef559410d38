"""Partitions shared across domains."""

from __future__ import annotations

import dagster as dg

# Daily partitions of production traces (UTC). end_offset=1 includes today, so traces that
# arrive during the day are visible before midnight.
DAILY_START = "2024-01-01"
daily_partitions = dg.DailyPartitionsDefinition(start_date=DAILY_START, end_offset=1)
