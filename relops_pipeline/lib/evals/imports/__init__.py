"""Import results of existing eval harnesses as an eval run of one release.

`import_results(path, fmt, *, workflow, version, variant=None, suite_version=None)` reads a
promptfoo output, an Inspect AI log or a relops JSONL file and returns an `EvalRunData`
(source `import:<format>`). `fmt` is "promptfoo", "inspect" or "jsonl"; None detects it from
the content (`detect_format`). An import is all-or-nothing: any problem raises
`ImportFormatError` (a ValueError) naming the file and listing every problem found.

Common rules
------------
- Scores are in [0, 1]. A harness score outside that range is clamped and the run's notes count
  the clamps (relops JSONL is strict instead: out of range is an error).
- A sample with an error gets, for each metric that applies to its case and that it lacks,
  score 0 / passed False / detail "sample error: ..." (as a relops runner does). The metrics
  that apply to a case are those recorded for any of its samples, plus the assertions promptfoo
  lists for the test, plus (Inspect) every metric recorded anywhere in the log.
- `suite_version` defaults to `imported-<12 hex>`: a hash of the sorted case ids with their
  inputs where the file has them (promptfoo vars, Inspect input + target; ids only for JSONL),
  so two imports of the same test set share a suite version and can be compared.
- `notes` say where the run came from (format, file, harness run id, model/provider, variant)
  and everything that was not imported or was adjusted, with counts.
- `SampleResult.raw` keeps the harness ids and the case input (promptfoo vars / Inspect input),
  so a suite can be rebuilt from an import.

One module per format — promptfoo.py, inspect_ai.py, relops_jsonl.py, each documenting what it
reads — over base.py (the error, the shared helpers and `finish`, which turns what a format
parsed into an EvalRunData); formats.py detects the format and dispatches.
"""

from __future__ import annotations

from relops_pipeline.lib.evals.imports.base import FORMATS, PASS_THRESHOLD, ImportFormatError
from relops_pipeline.lib.evals.imports.formats import detect_format, import_results, list_variants

__all__ = [
    "FORMATS",
    "ImportFormatError",
    "detect_format",
    "import_results",
    "list_variants",
    "PASS_THRESHOLD",
]
