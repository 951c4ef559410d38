"""Reader for relops Parquet trace files (FORMAT "relops-parquet").

The columns are the normalised span columns of the relops JSONL format (see relops_jsonl.py);
any subset is accepted: a missing column is NULL (kind -> other, status -> unset), a column
that is not a span column is kept in `attributes` (an `attributes` entry of the same name
wins). Types are converted by what the file holds: TIMESTAMP as UTC, TIMESTAMP WITH TIME ZONE
converted to UTC, text times as ISO 8601 or epoch, numbers as epoch (s/ms/us/ns by magnitude);
`attributes` / `online_scores` as a STRUCT or MAP, or as text holding a JSON object.
A row without trace_id or span_id, or with a value that does not convert (a token count that
is not a number, an unknown kind or status, ...), is rejected with its 1-based row number and
the reasons. Everything happens in DuckDB SQL (read_parquet straight into the stage tables);
no row passes through Python.
"""

from __future__ import annotations

import duckdb

from relops_pipeline.lib.readers.base import ReadContext, UnreadableInput
from relops_pipeline.lib.readers.relops_jsonl import (
    READER_COLUMNS,
    STATUSES,
    finish_stage_sql,
    kind_sql,
    sql_str,
    status_sql,
    timestamp_from_text_sql,
)
from relops_pipeline.lib.schema import RAW_REJECT_CAP, SPAN_KINDS, STAGE_COLUMNS

FORMAT = "relops-parquet"

_INTEGER_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT")
_NUMERIC_PREFIXES = _INTEGER_TYPES + ("FLOAT", "DOUBLE", "DECIMAL")


def sniff(head: bytes, path) -> bool:
    """Parquet magic bytes."""
    return head[:4] == b"PAR1"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _is_numeric(src_type: str) -> bool:
    return src_type.startswith(_NUMERIC_PREFIXES)


def _is_nested(src_type: str) -> bool:
    return src_type.startswith(("STRUCT", "MAP")) or src_type.endswith("]")


def _column_sql(name: str, typ: str, src_type: str | None) -> tuple[str, str | None]:
    """(typed value, condition under which a present value failed to convert)."""
    if src_type is None:
        defaults = {"kind": "'other'", "status": "'unset'"}
        return f"CAST({defaults.get(name, 'NULL')} AS {typ if typ != 'JSON' else 'JSON'})", None
    c = _q(name)
    text = c if src_type == "VARCHAR" else (f"CAST(to_json({c}) AS VARCHAR)" if _is_nested(src_type) else f"CAST({c} AS VARCHAR)")
    if name == "kind":
        val, bad = kind_sql(text)
        return val, bad
    if name == "status":
        val, bad = status_sql(text)
        return val, bad
    if typ == "VARCHAR":
        return text, None
    if typ in ("BIGINT", "DOUBLE"):
        num = f"CAST({c} AS DOUBLE)" if _is_numeric(src_type) else f"TRY_CAST({text} AS DOUBLE)"
        val = f"CAST(round({num}) AS BIGINT)" if typ == "BIGINT" else num
        return val, f"({c} IS NOT NULL AND {num} IS NULL)"
    if typ == "TIMESTAMP":
        if src_type == "TIMESTAMP WITH TIME ZONE":
            val = f"timezone('UTC', {c})"
        elif src_type.startswith("TIMESTAMP") or src_type == "DATE":
            val = f"CAST({c} AS TIMESTAMP)"
        else:
            val = timestamp_from_text_sql(text)
        return val, f"({c} IS NOT NULL AND {val} IS NULL)"
    if typ == "JSON":
        if src_type.startswith(("STRUCT", "MAP")):
            val = f"CAST(to_json({c}) AS JSON)"
        elif src_type in ("VARCHAR", "JSON"):
            val = f"(CASE WHEN json_valid({c}) AND json_type({c}) = 'OBJECT' THEN CAST({c} AS JSON) END)"
        else:
            val = "CAST(NULL AS JSON)"
        return val, f"({c} IS NOT NULL AND {val} IS NULL)"
    return f"TRY_CAST({c} AS {typ})", f"({c} IS NOT NULL AND TRY_CAST({c} AS {typ}) IS NULL)"


def _messages(name: str, typ: str) -> str:
    if name == "kind":
        return f"kind: must be one of {', '.join(SPAN_KINDS)}"
    if name == "status":
        return f"status: must be one of {', '.join(STATUSES)}"
    if typ == "TIMESTAMP":
        return f"{name}: not a time (TIMESTAMP, ISO 8601 text or epoch number)"
    if typ == "JSON":
        return f"{name}: not a JSON object (STRUCT, MAP or JSON text)"
    return f"{name}: not a number"


def read(con, ctx: ReadContext) -> None:
    """Stage every row of the Parquet file as a span or a reject, in SQL."""
    src = f"read_parquet({sql_str(str(ctx.path))}, file_row_number = true)"
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()
    except duckdb.Error as exc:
        raise UnreadableInput(f"{ctx.path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from exc
    columns = {row[0]: row[1] for row in described}
    columns.pop("file_row_number", None)
    stage_names = {n for n, _ in STAGE_COLUMNS}
    exprs, checks = [], []
    for name, typ in STAGE_COLUMNS:
        if name in READER_COLUMNS:
            continue
        val, bad = _column_sql(name, typ, columns.get(name))
        alias = f"_{name}" if name in ("attributes", "online_scores") else name
        exprs.append(f"{val} AS {_q(alias)}")
        if bad:
            checks.append(f"CASE WHEN {bad} THEN {sql_str(_messages(name, typ))} END")
    for name in ("trace_id", "span_id"):
        text = f"CAST({_q(name)} AS VARCHAR)" if name in columns else "NULL"
        checks.append(f"CASE WHEN nullif({text}, '') IS NULL THEN 'missing {name}' END")
    extra_cols = [n for n in columns if n not in stage_names or n in READER_COLUMNS]
    if extra_cols:
        fields = ", ".join(
            f"{_q('relops.original_' + n if n in READER_COLUMNS else n)} := {_q(n)}" for n in extra_cols
        )
        extra = f"to_json(struct_pack({fields}))"
        attrs = "json_merge_patch(_extra, coalesce(_attributes, CAST('{}' AS JSON)))"
    else:
        extra = "CAST(NULL AS JSON)"
        attrs = "_attributes"
    reason = f"nullif(concat_ws('; ', {', '.join(checks)}), '')"
    try:
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE _rp_final AS
            SELECT * EXCLUDE (_attributes, _online_scores, _row, _extra),
                   CAST(_online_scores AS JSON) AS online_scores,
                   CAST({attrs} AS JSON) AS attributes,
                   CASE WHEN reason IS NOT NULL THEN left(CAST(to_json(_row) AS VARCHAR), {RAW_REJECT_CAP}) END AS raw
            FROM (
                SELECT file_row_number + 1 AS line_no, {', '.join(exprs)}, {reason} AS reason,
                       {extra} AS _extra,
                       struct_pack({', '.join(f"{_q(n)} := {_q(n)}" for n in columns)}) AS _row
                FROM {src}
            )
            """
        )
        for stmt in finish_stage_sql("_rp_final", ctx.settings, FORMAT):
            con.execute(stmt)
    except duckdb.Error as exc:
        raise UnreadableInput(f"{ctx.path}: cannot read as relops Parquet ({str(exc).splitlines()[0]})") from exc
    finally:
        con.execute("DROP TABLE IF EXISTS _rp_final")
