"""Trace readers, one module per export format, and format detection.

Each reader module defines:
- `FORMAT`: the name users pass to `--format`;
- `sniff(head: bytes, path: Path) -> bool`: whether the first bytes of a file look like it;
- `read(con, ctx: ReadContext) -> None`: fills `stage_spans` / `stage_rejects` (see base.py).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from relops_pipeline.lib.readers.base import UnreadableInput

# Order matters for detection: the most specific sniffers first.
_MODULES = (
    "relops_parquet",
    "otlp",
    "langfuse",
    "langsmith",
    "deepeval",
    "vercel",
    "otel_attributes",
    "relops_jsonl",
)
SNIFF_BYTES = 64 * 1024


def _module(name: str):
    return importlib.import_module(f"relops_pipeline.lib.readers.{name}")


def formats() -> dict[str, object]:
    """Format name -> reader module."""
    return {m.FORMAT: m for m in (_module(n) for n in _MODULES)}


def detect_format(path: Path) -> str:
    """Name the format of `path` from its first bytes, or raise UnreadableInput."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except OSError as exc:
        raise UnreadableInput(f"cannot read {path}: {exc.strerror or exc}") from exc
    for name in _MODULES:
        module = _module(name)
        if module.sniff(head, path):
            return module.FORMAT
    raise UnreadableInput(
        f"unknown format for {path}: not OTLP JSON, Langfuse, LangSmith, DeepEval, "
        f"Vercel/OTel-JS spans, relops JSONL or Parquet (force one with --format; known: "
        f"{', '.join(sorted(formats()))})"
    )


def reader_for(fmt: str):
    known = formats()
    if fmt not in known:
        raise UnreadableInput(f"unknown format {fmt!r}; known: {', '.join(sorted(known))}")
    return known[fmt]
