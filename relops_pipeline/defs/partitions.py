"""Partitions shared across domains."""

from __future__ import annotations

import dagster as dg

# Daily partitions of production traces (UTC). end_offset=1 includes today, so traces that
# arrive during the day are visible before midnight.
DAILY_START = "2024-01-01"
daily_partitions = dg.DailyPartitionsDefinition(start_date=DAILY_START, end_offset=1)

# Monday-to-Sunday weeks (UTC). No end offset: only complete weeks are partitions, so the
# weekly schedule's tick on a Monday targets the week that just ended.
weekly_partitions = dg.WeeklyPartitionsDefinition(start_date=DAILY_START, day_offset=1)
