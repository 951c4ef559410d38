"""Writing the memo's files and recording it in the warehouse (`stability_memos`)."""

from __future__ import annotations

import json
import os
import uuid
from datetime import date, datetime
from pathlib import Path
from typing import Any

from relops_pipeline.lib.memo.build import week_start
from relops_pipeline.lib.memo.render import render_html, render_markdown

COLUMNS = ("memo_id", "week", "generated_at", "ops_from", "ops_to", "memo", "report_md", "md_path", "html_path",
           "dagster_run_id")


def memo_paths(home, week: date | str) -> tuple[Path, Path]:
    """(<home>/reports/memos/<week>.md, ....html) for the week's Monday."""
    monday = week_start(date.fromisoformat(week) if isinstance(week, str) else week)
    folder = Path(home.reports_dir) / "memos"
    return folder / f"{monday.isoformat()}.md", folder / f"{monday.isoformat()}.html"


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_memo(home, memo: dict[str, Any]) -> tuple[Path, Path]:
    """Render the memo and write `<home>/reports/memos/<week>.md` and `.html` (replacing an
    earlier memo of the same week); returns (md_path, html_path)."""
    md_path, html_path = memo_paths(home, memo["week"])
    _atomic_write(md_path, render_markdown(memo))
    _atomic_write(html_path, render_html(memo))
    return md_path, html_path


def record_memo(
    con,
    memo: dict[str, Any],
    md: str | None,
    md_path: Path | str | None,
    html_path: Path | str | None,
    *,
    generated_at: datetime,
    ops_from: datetime,
    ops_to: datetime,
    dagster_run_id: str | None = None,
) -> str:
    """Insert one stability_memos row (the memo as JSON, its markdown and file paths) and return
    its memo_id `memo-<week yyyymmdd>-<generated_at>-<hex>`. Re-generating a week adds a row; the
    latest per week is the current one."""
    monday = week_start(date.fromisoformat(memo["week"]))
    memo_id = f"memo-{monday:%Y%m%d}-{generated_at:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    con.execute(
        f"INSERT INTO stability_memos ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})",
        [memo_id, monday, generated_at, ops_from, ops_to, json.dumps(memo, sort_keys=True, default=str), md,
         str(md_path) if md_path is not None else None, str(html_path) if html_path is not None else None,
         dagster_run_id],
    )
    return memo_id


def previous_memo(con, week: date) -> dict[str, Any] | None:
    """The latest recorded memo for a week before `week` (by week, then generated_at), as a dict
    of the stability_memos columns with `memo` parsed; None when there is none. Its
    `generated_at` is the next memo's ops_from."""
    monday = week_start(week)
    row = con.execute(
        f"SELECT {', '.join(COLUMNS)} FROM stability_memos WHERE week < ? "
        "ORDER BY week DESC, generated_at DESC, memo_id DESC LIMIT 1",
        [monday],
    ).fetchone()
    if row is None:
        return None
    out = dict(zip(COLUMNS, row, strict=False))
    out["memo"] = json.loads(out["memo"]) if out["memo"] else None
    return out
