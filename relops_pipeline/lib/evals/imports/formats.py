"""The entry points: which format a file is (`detect_format`), and `import_results` /
`list_variants`, which hand it to its format's module."""

from __future__ import annotations

import json
from pathlib import Path

from relops_pipeline.lib.evals.imports import inspect_ai, promptfoo, relops_jsonl
from relops_pipeline.lib.evals.imports.base import _ALIASES, FORMATS, ImportFormatError, _read_text, finish
from relops_pipeline.lib.evals.model import EvalRunData


def detect_format(path: Path) -> str:
    """Guess the format from the content: a zip is an Inspect .eval log; a JSON document with an
    `eval` object is an Inspect log, one with a `results` list (or `results.results`) a promptfoo
    output; lines of JSON objects with `case_id` are relops JSONL. Raises ImportFormatError."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise ImportFormatError(path, f"cannot read the file: {exc}") from None
    if head == b"PK\x03\x04":
        return "inspect"
    text = _read_text(path)
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    else:
        if inspect_ai.looks_like(doc):
            return "inspect"
        if promptfoo.looks_like(doc):
            return "promptfoo"
        if isinstance(doc, dict) and "case_id" in doc:
            return "jsonl"
    first = next((ln for ln in text.split("\n") if ln.strip()), "")
    try:
        obj = json.loads(first)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and "case_id" in obj:
        return "jsonl"
    raise ImportFormatError(
        path,
        "cannot tell the format: expected a promptfoo output (JSON with 'results'), an Inspect log "
        "(.eval zip or JSON with 'eval' and 'samples') or relops JSONL (lines with 'case_id'); "
        "pass --format promptfoo|inspect|jsonl",
    )


def _norm_format(fmt: str | None, path: Path) -> str:
    if fmt is None:
        return detect_format(path)
    f = _ALIASES.get(fmt.lower(), fmt.lower())
    if f not in FORMATS:
        raise ImportFormatError(path, f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return f


def import_results(
    path: Path,
    fmt: str | None,
    *,
    workflow: str,
    version: str,
    variant: str | int | None = None,
    suite_version: str | None = None,
) -> EvalRunData:
    """Read a harness result file as an eval run of release `workflow`/`version`.

    `fmt`: "promptfoo" | "inspect" | "jsonl" or None to detect. `variant` picks one
    provider+prompt of a promptfoo file that has several (see `list_variants`). `suite_version`
    defaults to `imported-<hash of the case ids>`. Raises ImportFormatError (a ValueError) naming
    the file and every problem; nothing is imported then.
    """
    from relops_pipeline.lib.limits import MAX_EVAL_IMPORT_BYTES, InputTooLarge, require_file_size

    path = Path(path)
    if not path.is_file():
        raise ImportFormatError(path, "no such file")
    try:
        require_file_size(path, MAX_EVAL_IMPORT_BYTES, "an eval results file")
    except InputTooLarge as exc:
        raise ImportFormatError(path, str(exc)) from None
    f = _norm_format(fmt, path)
    if variant is not None and f != "promptfoo":
        raise ImportFormatError(path, f"variant= applies to promptfoo outputs only, not {f}")
    if f == "promptfoo":
        built = promptfoo.parse(path, variant)
    elif f == "inspect":
        built = inspect_ai.parse(path)
    else:
        built = relops_jsonl.parse(path)
    return finish(built, path, f, workflow=workflow, version=version, suite_version=suite_version)


def list_variants(path: Path, fmt: str | None = None) -> list[str]:
    """The provider+prompt variants of a result file, one description per variant (promptfoo
    files may have several; Inspect logs and relops JSONL have one)."""
    path = Path(path)
    f = _norm_format(fmt, path)
    if f != "promptfoo":
        return [f"[0] {f} file (single variant)"]
    return promptfoo.list_variants(path)
