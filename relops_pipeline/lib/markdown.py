"""Markdown that is safe to show: everything that came from a model or a user is escaped."""

from __future__ import annotations

import html
import re
from typing import Any, Iterable, Sequence

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|>~])")


def escape_md(value: Any) -> str:
    """Escape text for markdown: HTML-escape it (Dagster and GitHub render inline HTML), then
    backslash-escape markdown syntax, and keep it on one line."""
    text = "" if value is None else str(value)
    text = html.escape(text, quote=False)  # quotes are harmless once < and & are escaped
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return text.replace("\r", " ").replace("\n", " ")


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table with every cell escaped; numbers are shown as they are."""
    rows = list(rows)
    if not rows:
        return "_none_"

    def cell(v: Any) -> str:
        if isinstance(v, bool) or v is None:
            return escape_md(v)
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float):
            return f"{v:.4g}"
        return escape_md(v)

    out = ["| " + " | ".join(escape_md(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def fenced_block(text: str, lang: str = "text") -> list[str]:
    """Lines of a fenced code block holding untrusted multi-line text (model outputs, prompts).

    The fence is longer than any backtick run in the text, so the text cannot close it; and
    `<`, `>` and `&` are HTML-escaped as well, so no renderer that ignores fences (or a reader
    grepping the file) ever meets raw markup from a model. The price: GitHub shows `&lt;` inside
    code blocks literally.
    """
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{lang}", html.escape(text, quote=False), fence]
