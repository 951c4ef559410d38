"""Reader for relops' own JSON lines format (FORMAT "relops-jsonl").

## The relops JSONL trace format

One span per line, UTF-8, each line a JSON object whose keys are the normalised span columns:

| key | type | notes |
|---|---|---|
| `trace_id` | string (numbers accepted) | required |
| `span_id` | string (numbers accepted) | required |
| `parent_span_id` | string | absent / null for a root span |
| `span_name` | string | |
| `kind` | `llm` \\| `tool` \\| `retrieval` \\| `agent` \\| `other` | any case; absent -> `other` |
| `workflow` | string | absent -> looked up in `attributes` (service.name, ...), else `unknown` |
| `release` | string | absent -> looked up in `attributes` (service.version, ...), else `unknown` |
| `model`, `provider` | string | |
| `start_time`, `end_time` | ISO 8601 string or epoch number | ISO without offset = UTC; epoch in s, ms, us or ns (told apart by magnitude), as a number or a numeric string |
| `latency_ms` | number | absent -> end_time - start_time |
| `input_tokens`, `output_tokens` | integer (numeric strings accepted) | |
| `cost_usd` | number | absent -> computed from the price table |
| `finish_reason` | string | lower case: stop, length, tool_calls, content_filter, ... |
| `status` | `ok` \\| `error` \\| `unset` | any case; absent -> `unset` |
| `error_type` | string | |
| `input_text`, `output_text` | string (objects/arrays are kept as JSON text) | |
| `feedback_score` | number in [0, 1] | user feedback (thumbs up = 1) |
| `online_scores` | object `{"name": number}` | |
| `attributes` | object | flat `{"key": value}`; a JSON string holding an object is accepted |

Keys that are not columns are kept: they are merged into `attributes` (an `attributes` entry
of the same name wins); `source_format` / `source_line` of a line (a relops export of spans read
from another format) are kept as `relops.original_source_format` / `relops.original_source_line`.
Blank lines are ignored. A line that is not valid UTF-8, not valid JSON, not an object, lacks
`trace_id` or `span_id`, or has a value of the wrong type (a token count that is not a number,
a time that is neither ISO 8601 nor epoch, an unknown kind or status, attributes that are not an
object) is rejected with its 1-based line number and the reasons; the rest of the file loads.

Example:

    {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7", "span_name": "chat gpt-4o-mini", "kind": "llm", "workflow": "support-triage", "release": "v3", "model": "gpt-4o-mini", "start_time": "2025-06-01T12:00:00.120Z", "end_time": "2025-06-01T12:00:01.570Z", "input_tokens": 412, "output_tokens": 96, "finish_reason": "stop", "status": "ok", "input_text": "[{\\"role\\":\\"user\\",\\"content\\":\\"Where is my order?\\"}]", "output_text": "It ships tomorrow.", "attributes": {"tenant": "acme"}}

Implementation: lines are split in Python (exact line numbers, CRLF and invalid UTF-8 handled),
staged as text in DuckDB, and parsed, typed and classified in SQL, so large files load at
DuckDB speed.
"""  # noqa: E501 (a markdown table row and a JSON example line cannot wrap)

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from relops_pipeline.lib.readers.base import PLACEHOLDER_SERVICE_PREFIX, ReadContext, UnreadableInput
from relops_pipeline.lib.schema import RAW_REJECT_CAP, SPAN_KINDS, STAGE_COLUMNS

FORMAT = "relops-jsonl"

STAGE_NAMES = [n for n, _ in STAGE_COLUMNS]
# Columns the reader sets itself; a line's own values are kept as attributes.
READER_COLUMNS = ("source_format", "source_line")
STATUSES = ("ok", "error", "unset")
_CHUNK = 32 << 20


def sniff(head: bytes, path) -> bool:
    """The first non-blank line is a JSON object with `trace_id` and `span_id` keys."""
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    for raw_line in text.splitlines(keepends=True):
        line = raw_line.strip()
        if not line:
            continue
        if not line.startswith("{"):
            return False
        complete = raw_line.endswith(("\n", "\r")) or len(head) < 65536
        if complete:
            try:
                obj = json.loads(line)
            except ValueError:
                return False
            return isinstance(obj, dict) and "trace_id" in obj and "span_id" in obj
        return '"trace_id"' in line and '"span_id"' in line
    return False


# ---------------------------------------------------------------------------------------------
# SQL building blocks shared with relops_parquet
# ---------------------------------------------------------------------------------------------


def sql_str(s: str) -> str:
    """A SQL string literal."""
    return "'" + s.replace("'", "''") + "'"


def json_key_path(key: str) -> str:
    """A JSON path selecting a top-level key literally (dots and quotes included)."""
    return sql_str('$."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"')


_OFFSET_RE = r"\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|z|[+-]\d{2}(:?\d{2})?)$"
_MAX_EPOCH_US = 4_102_444_800 * 1_000_000  # 2100-01-01


def timestamp_from_text_sql(t: str) -> str:
    """SQL turning text `t` (ISO 8601 or an epoch number in s/ms/us/ns) into naive UTC."""
    int_us = (
        f"(CASE WHEN abs(TRY_CAST({t} AS HUGEINT)) > 1e17 THEN TRY_CAST({t} AS HUGEINT) // 1000 "
        f"WHEN abs(TRY_CAST({t} AS HUGEINT)) > 1e14 THEN TRY_CAST({t} AS HUGEINT) "
        f"WHEN abs(TRY_CAST({t} AS HUGEINT)) > 1e11 THEN TRY_CAST({t} AS HUGEINT) * 1000 "
        f"ELSE TRY_CAST({t} AS HUGEINT) * 1000000 END)"
    )
    dbl_us = (
        f"(CASE WHEN abs(TRY_CAST({t} AS DOUBLE)) > 1e17 THEN TRY_CAST({t} AS DOUBLE) / 1000 "
        f"WHEN abs(TRY_CAST({t} AS DOUBLE)) > 1e14 THEN TRY_CAST({t} AS DOUBLE) "
        f"WHEN abs(TRY_CAST({t} AS DOUBLE)) > 1e11 THEN TRY_CAST({t} AS DOUBLE) * 1000 "
        f"ELSE TRY_CAST({t} AS DOUBLE) * 1000000 END)"
    )
    return (
        f"(CASE WHEN {t} IS NULL THEN NULL "
        f"WHEN regexp_full_match(trim({t}), '-?\\d+') THEN "
        f"  CASE WHEN {int_us} BETWEEN 0 AND {_MAX_EPOCH_US} THEN make_timestamp(CAST({int_us} AS BIGINT)) END "
        f"WHEN regexp_full_match(trim({t}), '-?\\d+\\.\\d*([eE][+-]?\\d+)?|-?\\d+[eE][+-]?\\d+') THEN "
        f"  CASE WHEN {dbl_us} BETWEEN 0 AND {_MAX_EPOCH_US} THEN make_timestamp(CAST(round({dbl_us}) AS BIGINT)) END "
        f"WHEN regexp_matches(trim({t}), '{_OFFSET_RE}') THEN timezone('UTC', TRY_CAST(trim({t}) AS TIMESTAMPTZ)) "
        f"ELSE TRY_CAST(trim({t}) AS TIMESTAMP) END)"
    )


def resolve_sql(column: str, attrs: str, keys, default: str | None) -> str:
    """coalesce(column, attributes[key] for key in keys (placeholder service names skipped), default)."""
    parts = [f"nullif({column}, '')"]
    for key in keys:
        v = f"nullif(json_extract_string({attrs}, {json_key_path(key)}), '')"
        if key == "service.name":
            v = f"(CASE WHEN NOT starts_with({v}, {sql_str(PLACEHOLDER_SERVICE_PREFIX)}) THEN {v} END)"
        parts.append(v)
    if default:
        parts.append(sql_str(default))
    return f"coalesce({', '.join(parts)})"


def finish_stage_sql(typed: str, settings, fmt: str) -> list[str]:
    """Statements moving a typed table (line_no, raw, <STAGE columns>, reason) into
    stage_spans (reason NULL) and stage_rejects (reason set), resolving workflow/release."""
    cols = []
    for name, _ in STAGE_COLUMNS:
        if name == "workflow":
            cols.append(resolve_sql("workflow", "attributes", settings.workflow_keys, settings.default_workflow))
        elif name == "release":
            cols.append(resolve_sql("release", "attributes", settings.release_keys, None))
        elif name == "source_format":
            cols.append(sql_str(fmt))
        elif name == "source_line":
            cols.append("line_no")
        else:
            cols.append(f'"{name}"')
    return [
        f"INSERT INTO stage_spans SELECT {', '.join(cols)} FROM {typed} WHERE reason IS NULL ORDER BY line_no",
        f"INSERT INTO stage_rejects SELECT line_no, left(raw, {RAW_REJECT_CAP}), reason "
        f"FROM {typed} WHERE reason IS NOT NULL ORDER BY line_no",
    ]


def kind_sql(value: str) -> tuple[str, str]:
    """(normalised kind, condition for an invalid kind) of a text value."""
    kinds = ", ".join(sql_str(k) for k in SPAN_KINDS)
    return (
        f"coalesce(lower(trim({value})), 'other')",
        f"({value} IS NOT NULL AND lower(trim({value})) NOT IN ({kinds}))",
    )


def status_sql(value: str) -> tuple[str, str]:
    """(normalised status, condition for an invalid status) of a text value."""
    statuses = ", ".join(sql_str(s) for s in STATUSES)
    return (
        f"coalesce(lower(trim({value})), 'unset')",
        f"({value} IS NOT NULL AND lower(trim({value})) NOT IN ({statuses}))",
    )


# ---------------------------------------------------------------------------------------------
# The JSONL reader
# ---------------------------------------------------------------------------------------------


def _line_batches(path) -> Iterator[pa.Table]:
    """Tables (line_no, line, bad_utf8) of every line, in blocks of whole lines.

    Lines are split and decoded in bulk; only a block holding invalid UTF-8 is decoded line
    by line, to name the bad lines. Carriage returns and blank lines are dealt with in SQL.
    """
    line_no = 1
    carry = b""
    first = True
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(_CHUNK)
            data = carry + chunk
            if chunk:
                cut = data.rfind(b"\n")
                if cut < 0:
                    carry = data
                    continue
                data, carry = data[:cut], data[cut + 1 :]
            else:
                carry = b""
                if not data:
                    break
            if first and data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]
            first = False
            bad: list[str | None] | None  # per line: why it is not valid UTF-8 (None: it is)
            try:
                lines = data.decode("utf-8").split("\n")
                bad = None
            except UnicodeDecodeError:
                lines, bad = [], []
                for raw in data.split(b"\n"):
                    try:
                        lines.append(raw.decode("utf-8"))
                        bad.append(None)
                    except UnicodeDecodeError as exc:
                        lines.append(raw.decode("utf-8", errors="replace"))
                        bad.append(f"not valid UTF-8 ({exc.reason} at byte {exc.start})")
            n = len(lines)
            yield pa.table(
                {
                    "line_no": pa.array(np.arange(line_no, line_no + n, dtype=np.int64)),
                    "line": pa.array(lines, pa.string()),
                    "bad_utf8": pa.array(bad, pa.string()) if bad is not None else pa.nulls(n, pa.string()),
                }
            )
            line_no += n
            if not chunk:
                break


def _typed_sql() -> str:
    """SQL turning `_rj_raw` into `_rj_final` (line_no, raw, STAGE columns, reason).

    Each valid line is parsed once with json_transform into a struct of text values (JSON
    text for objects and arrays); values are typed once, then checked against their text.
    """
    # input_messages / output_messages are not read from relops JSONL lines (such keys stay attributes)
    known = [n for n in STAGE_NAMES if n not in READER_COLUMNS and n not in ("input_messages", "output_messages")]
    types = dict(STAGE_COLUMNS)
    structure = sql_str(json.dumps({n: ("JSON" if types[n] == "JSON" else "VARCHAR") for n in known}))
    exprs: list[str] = ['NULL::JSON AS "input_messages"', 'NULL::JSON AS "output_messages"']
    checks: list[str] = ["shape_error", "bad_utf8"]
    for name in known:
        typ = types[name]
        t = f's."{name}"'
        if name == "kind":
            val, bad = kind_sql(t)
            exprs.append(f"{val} AS kind")
            checks.append(f"CASE WHEN {bad} THEN 'kind: must be one of {', '.join(SPAN_KINDS)}' END")
        elif name == "status":
            val, bad = status_sql(t)
            exprs.append(f"{val} AS status")
            checks.append(f"CASE WHEN {bad} THEN 'status: must be one of {', '.join(STATUSES)}' END")
        elif typ == "VARCHAR":
            exprs.append(f'{t} AS "{name}"')
        elif typ in ("BIGINT", "DOUBLE"):
            num = f"TRY_CAST({t} AS DOUBLE)"
            exprs.append(f'{"CAST(round(" + num + ") AS BIGINT)" if typ == "BIGINT" else num} AS "{name}"')
            checks.append(f"CASE WHEN {t} IS NOT NULL AND \"{name}\" IS NULL THEN '{name}: not a number' END")
        elif typ == "TIMESTAMP":
            exprs.append(f'{timestamp_from_text_sql(t)} AS "{name}"')
            checks.append(f"CASE WHEN {t} IS NOT NULL AND \"{name}\" IS NULL THEN '{name}: not an ISO 8601 time or epoch number' END")
        elif typ == "JSON":
            inner = f"json_extract_string({t}, '$')"
            obj = (
                f"(CASE WHEN json_type({t}) = 'OBJECT' THEN {t} "
                f"WHEN json_type({t}) = 'VARCHAR' AND json_valid({inner}) AND json_type({inner}) = 'OBJECT' "
                f"THEN CAST({inner} AS JSON) END)"
            )
            exprs.append(f'{obj} AS "_{name}"')
            checks.append(f"CASE WHEN {t} IS NOT NULL AND \"_{name}\" IS NULL THEN '{name}: not a JSON object' END")
    checks.append("CASE WHEN s IS NOT NULL AND nullif(s.trace_id, '') IS NULL THEN 'missing trace_id' END")
    checks.append("CASE WHEN s IS NOT NULL AND nullif(s.span_id, '') IS NULL THEN 'missing span_id' END")
    not_known = ", ".join(sql_str(n) for n in known)
    renamed = " ".join(f"WHEN {sql_str(n)} THEN {sql_str('relops.original_' + n)}" for n in READER_COLUMNS)
    key_path = "'$.\"' || replace(replace(k, '\\', '\\\\'), '\"', '\\\"') || '\"'"
    return f"""
        CREATE OR REPLACE TEMP TABLE _rj_parsed AS
        SELECT line_no, line, bad_utf8, shape_error,
               CASE WHEN shape_error IS NULL AND bad_utf8 IS NULL THEN json_transform(line, {structure}) END AS s
        FROM (
            SELECT line_no, line, bad_utf8,
                   CASE WHEN bad_utf8 IS NOT NULL THEN NULL
                        WHEN tp IS NULL THEN 'invalid JSON'
                        WHEN tp <> 'OBJECT' THEN 'not a JSON object (' || lower(tp) || ')'
                   END AS shape_error
            FROM (
                SELECT line_no, line, bad_utf8, CASE WHEN json_valid(line) THEN json_type(line) END AS tp
                FROM (SELECT line_no, rtrim(line, chr(13)) AS line, bad_utf8 FROM _rj_raw)
                WHERE bad_utf8 IS NOT NULL OR NOT regexp_full_match(line, '\\s*')
            )
        );
        DROP TABLE _rj_raw;
        -- Top-level keys that are not columns (and the line's own source_*) become attributes.
        CREATE OR REPLACE TEMP TABLE _rj_extra AS
        SELECT line_no, json_group_object(CASE k {renamed} ELSE k END, json_extract(j, {key_path})) AS extra
        FROM (
            SELECT line_no, CAST(line AS JSON) AS j, unnest(json_keys(line)) AS k
            FROM _rj_parsed
            WHERE s IS NOT NULL AND len(list_filter(json_keys(line), lambda x: x NOT IN ({not_known}))) > 0
        )
        WHERE k NOT IN ({not_known})
        GROUP BY line_no;
        CREATE OR REPLACE TEMP TABLE _rj_final AS
        SELECT * EXCLUDE (raw, _attributes, _online_scores, extra, s, shape_error, bad_utf8),
               CAST(_online_scores AS JSON) AS online_scores,
               CAST(CASE WHEN extra IS NULL THEN _attributes
                         ELSE json_merge_patch(CAST(extra AS JSON), coalesce(_attributes, CAST('{{}}' AS JSON))) END
                    AS JSON) AS attributes,
               nullif(concat_ws('; ', {", ".join(checks)}), '') AS reason,
               CASE WHEN reason IS NOT NULL THEN raw END AS raw
        FROM (
            SELECT p.line_no, p.line AS raw, p.s, p.shape_error, p.bad_utf8, e.extra, {", ".join(exprs)}
            FROM _rj_parsed p LEFT JOIN _rj_extra e USING (line_no)
        );
        DROP TABLE _rj_parsed;
        DROP TABLE _rj_extra;
    """


def read(con, ctx: ReadContext) -> None:
    """Stage every line of a relops JSONL file as a span or a reject (see the module docstring)."""
    con.execute("CREATE OR REPLACE TEMP TABLE _rj_raw (line_no BIGINT, line VARCHAR, bad_utf8 VARCHAR)")
    try:
        try:
            for table in _line_batches(ctx.path):
                con.register("_rj_batch", table)
                try:
                    con.execute("INSERT INTO _rj_raw SELECT * FROM _rj_batch")
                finally:
                    con.unregister("_rj_batch")
        except OSError as exc:
            raise UnreadableInput(f"cannot read {ctx.path}: {exc.strerror or exc}") from exc
        con.execute(_typed_sql())
        for stmt in finish_stage_sql("_rj_final", ctx.settings, FORMAT):
            con.execute(stmt)
    finally:
        for t in ("_rj_raw", "_rj_parsed", "_rj_extra", "_rj_final"):
            con.execute(f"DROP TABLE IF EXISTS {t}")


__all__ = [
    "FORMAT",
    "finish_stage_sql",
    "json_key_path",
    "kind_sql",
    "read",
    "resolve_sql",
    "sniff",
    "sql_str",
    "status_sql",
    "timestamp_from_text_sql",
]
