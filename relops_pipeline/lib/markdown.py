"""Markdown that is safe to show: everything that came from a model or a user is escaped."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

# Escaping only where a character would change the rendering (CommonMark + GFM tables and
# strikethrough), so that text read raw stays readable ("2026-08-03", "ticket-summary", "->").
_INLINE_SYNTAX = re.compile(r"([`*\[\]|~])")  # code, emphasis, links/images, table cells, strikethrough
_BACKSLASH = re.compile(r"\\(?=[!-/:-@\[-`{-~]|$)")  # a backslash escapes punctuation (and what follows the text)
_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")  # "snake_case" never emphasises
_ENTITY = re.compile(r"&(?=#?[0-9A-Za-z]+;)")  # "&copy;" would render as a character
_BLOCK_START = re.compile(r"^(\s*)(?:([#>+=-])|(\d{1,9})([.)]))")  # a heading, quote, list or rule


def escape_md(value: Any) -> str:
    """Escape text for markdown, on one line: `<` HTML-escaped (so no tag, comment or autolink
    can open: Dagster and GitHub render inline HTML), `&` of an entity escaped, and markdown
    syntax backslash-escaped only where it would change the rendering: emphasis, code, links,
    table pipes, strikethrough anywhere; `#`, `>`, `+`, `-`, `=` and `1.` only at the start, where
    they begin a block. Hyphens, dots and arrows in the middle of text stay as they are."""
    text = "" if value is None else str(value)
    text = text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")
    text = _BACKSLASH.sub(r"\\\\", text)
    text = _ENTITY.sub("&amp;", text)
    text = text.replace("<", "&lt;")
    text = _INLINE_SYNTAX.sub(r"\\\1", text)
    text = _UNDERSCORE.sub(r"\\_", text)
    m = _BLOCK_START.match(text)
    if m:
        at = m.start(2) if m.group(2) else m.start(4)
        text = text[:at] + "\\" + text[at:]
    return text


def code_span(value: Any) -> str:
    """Text as an inline code span (a path, an id, a command to copy): nothing escaped inside,
    since backslashes are literal there; the fence is longer than any backtick run in the text,
    so the text cannot close it. On one line."""
    text = ("" if value is None else str(value)).replace("\r", " ").replace("\n", " ")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or (text.startswith(" ") and text.endswith(" ") and text.strip()) else ""
    return f"{fence}{pad}{text}{pad}{fence}"


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


def safe_url(url: Any) -> str | None:
    """http(s) and relative URLs may become links; anything else (javascript:, data:, ...) is
    shown as text: None."""
    text = str(url).strip()
    if not text or any(c in text for c in "\r\n\t") or text.startswith("//"):
        return None
    scheme = urlsplit(text).scheme.lower()
    if scheme in ("http", "https"):
        return text
    if scheme == "" and ":" not in text.split("/", 1)[0]:
        return text
    return None


def html_page(title: str, css: str, body: str) -> str:
    """A self-contained HTML report page: no external resources, and a Content-Security-Policy
    that forbids scripts should anything slip through. `title` is escaped here; `body` must
    already be safe HTML."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "img-src data:\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n<style>\n{css}\n</style>\n</head>\n<body>\n"
        f"{body}\n"
        "<footer><p><small>Generated by relops.</small></p></footer>\n</body>\n</html>\n"
    )


_MD_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
_LINK = re.compile(r"\[((?:\\.|[^\]\\])*)\]\(<?([^)>]*)>?\)")
_STRONG = re.compile(r"\*\*(.+?)\*\*")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]")  # ANSI escapes and other terminal controls
_FENCE = re.compile(r"^(`{3,})")


def plain_text(md: str) -> str:
    """A report's markdown as terminal text: no markdown syntax (headings' `#`, `**`, escapes,
    links shown as `label (url)`), entities decoded, code blocks indented, and no control
    characters, so a model's output cannot drive the terminal."""
    out: list[str] = []
    fence: str | None = None
    for line in md.split("\n"):
        m = _FENCE.match(line.strip())
        if fence is not None:
            if m and m.group(1) == fence and line.strip() == fence:
                fence = None
                continue
            out.append("    " + html.unescape(line))
            continue
        if m:
            fence = m.group(1)
            continue
        line = re.sub(r"^#{1,6} ", "", line)
        line = _LINK.sub(lambda lm: f"{lm.group(1)} ({lm.group(2)})", line)
        line = _STRONG.sub(r"\1", line)
        line = _MD_ESCAPE.sub(r"\1", line)
        out.append(html.unescape(line))
    return _CONTROL.sub("", "\n".join(out))
