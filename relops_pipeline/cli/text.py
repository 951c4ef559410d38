"""Terminal text that fits in 100 columns: prose lines wrapped under a hanging indent; rows of a
table (which a user may grep or cut) and lone long words (paths, URLs) left whole."""

from __future__ import annotations

import re
import textwrap

WIDTH = 100

_TABLE_ROW = re.compile(r"\|.*\||\S {2,}\S.* {2,}\S")  # a pipe table row, or three aligned columns


def wrap_prose(text: str, width: int = WIDTH) -> str:
    """`text` with each line longer than `width` wrapped: continued under its own indent plus
    four spaces. Table rows, and lines holding a word nearly as long as a line (a path, a URL:
    kept beside its label), are left whole."""
    out: list[str] = []
    for line in text.split("\n"):
        if (len(line) <= width or _TABLE_ROW.search(line.strip())
                or max(map(len, line.split()), default=0) > width - 20):
            out.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        out += textwrap.wrap(line.strip(), width, initial_indent=indent, subsequent_indent=indent + "    ",
                             break_long_words=False, break_on_hyphens=False)
    return "\n".join(out)
