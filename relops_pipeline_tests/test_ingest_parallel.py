"""Ingestion on both cores: an OTLP JSON-lines file is handed to DuckDB as many Arrow batches of
lines, which its threads parse and normalise in any order. Nothing about a record may depend on
that order: every span keeps its own line number, every reject its line and reason, and
read = accepted + rejected + duplicates holds, the same with 1 thread as with 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relops_pipeline.demo.traces import write_bench_traces
from relops_pipeline.lib.ingest import ingest_file
from relops_pipeline.lib.readers import otlp
from relops_pipeline.lib.readers.base import ReadContext, SourceSettings
from relops_pipeline.lib.schema import create_stage_tables_sql
from relops_pipeline.lib.warehouse import open_warehouse

N = 400
BAD = {
    37: ("this is not json", "invalid JSON"),
    150: ('{"hello": "world"}', "not an OTLP export: no resourceSpans/resourceLogs"),
    299: ("{not json either", "invalid JSON"),
}


@pytest.fixture
def traces(tmp_path) -> tuple[Path, dict[str, int], int]:
    """N bench spans, one per line, with bad lines put in at known numbers and one line
    repeated at the end; returns the file, span id -> line number, and the repeated line's number."""
    src = tmp_path / "src.jsonl"
    write_bench_traces(src, N)
    lines = src.read_text().splitlines()
    out: list[str] = []
    for line in lines:
        while len(out) + 1 in BAD:
            out.append(BAD[len(out) + 1][0])
        out.append(line)
    out.append(lines[5])  # a duplicate of a span already in the file
    path = tmp_path / "spans.otlp.jsonl"
    path.write_text("\n".join(out) + "\n")
    where = {}
    for no, line in enumerate(out, 1):
        if line.startswith('{"resourceSpans"'):
            span = json.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
            where.setdefault(span["spanId"], no)
    return path, where, len(out)


@pytest.mark.parametrize("threads", [1, 2])
def test_line_numbers_exact_whatever_the_order_of_batches(traces, monkeypatch, threads):
    """~2 KiB batches (hundreds of them) parsed by `threads` DuckDB threads: each staged span
    carries its own line, the bad lines their own numbers and reasons."""
    import duckdb

    path, where, dup_line = traces
    monkeypatch.setattr(otlp, "CHUNK_BYTES", 2048)
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute(create_stage_tables_sql())
    otlp.read(con, ReadContext(path=path, settings=SourceSettings()))
    staged = con.execute("SELECT span_id, source_line FROM stage_spans").fetchall()
    assert len(staged) == N + 1
    # the repeated line (a copy of line 6) is staged with its own number; dedup comes later
    assert sorted(staged) == sorted([*where.items(), (_id_at(where, 6), dup_line)])
    rejects = con.execute("SELECT source_line, reason FROM stage_rejects ORDER BY 1").fetchall()
    assert rejects == [(no, reason) for no, (_, reason) in sorted(BAD.items())]


def _id_at(where: dict[str, int], line: int) -> str:
    return next(s for s, n in where.items() if n == line)


def test_accounting_the_same_on_one_and_two_threads(traces, tmp_path, monkeypatch):
    """ingest_file with small batches on 1 and on 2 threads: the same counts, the same rejects
    (lines and reasons), the same spans."""
    path, where, _ = traces
    monkeypatch.setattr(otlp, "CHUNK_BYTES", 4096)
    results = []
    for threads in (1, 2):
        with open_warehouse(tmp_path / f"wh-{threads}.duckdb") as con:
            con.execute(f"SET threads = {threads}")
            r = ingest_file(con, path)
            rejects = con.execute("SELECT source_line, reason FROM trace_rejects ORDER BY 1").fetchall()
            spans = con.execute("SELECT span_id, start_time, input_text, attributes FROM spans ORDER BY 1").fetchall()
        assert r.read == r.accepted + r.rejected + r.duplicates
        results.append(((r.read, r.accepted, r.rejected, r.duplicates), rejects, spans))
    assert results[0][0] == (N + len(BAD) + 1, N, len(BAD), 1)
    assert results[0][1] == [(no, reason) for no, (_, reason) in sorted(BAD.items())]
    assert {s for s, *_ in results[0][2]} == set(where)
    assert results[0] == results[1]


def test_a_file_of_a_few_mib_is_several_batches(tmp_path):
    """The batch size lets a file of 8 MiB and more reach both of DuckDB's threads."""
    path = tmp_path / "mid.jsonl"
    line = b'{"resourceSpans":[]}' + b" " * 1000 + b"\n"
    path.write_bytes(line * (9 * 1024 * 1024 // len(line)))
    batches = list(otlp._line_batches(path))
    assert len(batches) >= 2
    assert sum(b.num_rows for b in batches) == 9 * 1024 * 1024 // len(line)
    assert [b.column(0)[0].as_py() for b in batches][1] == batches[0].num_rows + 1
