"""The weekly stability memo: what production did in a week, what release operations did, and
what to fix first.

- `build_memo(con, week, ops_from=, ops_to=, home=)` gathers everything into one JSON-ready dict
  (signals by trace time for the Monday..Sunday week and the week before; operations by recorded
  time in [ops_from, ops_to)); `fixes` are rule-based recommendations ranked by impact, each with
  its evidence.
- `render_markdown(memo)` / `render_html(memo)` turn it into a report (HTML self-contained, with
  inline SVG charts of the last 8 weeks); everything from a model or a user is escaped.
- `write_memo(home, memo)` writes `<home>/reports/memos/<week>.{md,html}`;
  `record_memo(...)` inserts a `stability_memos` row; `previous_memo(con, week)` returns the
  latest memo for an earlier week (its generated_at is the next memo's ops_from).
"""

from relops_pipeline.lib.memo.build import build_memo, week_start
from relops_pipeline.lib.memo.render import render_html, render_markdown
from relops_pipeline.lib.memo.store import memo_paths, previous_memo, record_memo, write_memo

__all__ = [
    "build_memo",
    "memo_paths",
    "previous_memo",
    "record_memo",
    "render_html",
    "render_markdown",
    "week_start",
    "write_memo",
]
