"""Many small OTLP files (an exporter writing a file per batch): normalised together in one
statement, then each ingested, accounted and committed on its own — with exactly the result of
reading each file alone: the same spans, events and rejects, on the same line numbers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from relops_pipeline.lib import ingest as ingest_mod
from relops_pipeline.lib.ingest import ingest_paths
from relops_pipeline.lib.readers import otlp
from relops_pipeline.lib.warehouse import open_warehouse
from relops_pipeline_tests.conftest import FIXTURES

OTEL = FIXTURES / "otel_genai_openai_v2" / "per_test"
OPENINFERENCE = FIXTURES / "openinference"


def _small_files(folder: Path, tests: int) -> Path:
    """The openai-v2 captures of `tests` tests (traces in both conventions, and the legacy
    log exports), the OpenInference ones, and a file with bad lines among them."""
    (folder / "otel").mkdir(parents=True)
    for path in sorted(OTEL.iterdir())[: 3 * tests]:
        shutil.copy(path, folder / "otel" / path.name)
    shutil.copytree(OPENINFERENCE, folder / "oi", ignore=shutil.ignore_patterns("*.md", "LICENSE*", "PROVENANCE*"))
    good = next(p for p in sorted((folder / "otel").glob("*.traces.jsonl")) if p.stat().st_size > 0)
    lines = good.read_text().splitlines()
    bad = [*lines[:1], "this is not json", '{"hello": "world"}', "", "\u00ff\u00fe"]
    (folder / "otel" / "m_bad_lines.traces.jsonl").write_text("\n".join(bad) + "\n")
    return folder


@pytest.fixture
def small_files(tmp_path) -> Path:
    return _small_files(tmp_path / "in", tests=6)


def _ingest(tmp_path: Path, name: str, folder: Path, monkeypatch, *, together: bool):
    if not together:
        monkeypatch.setattr(otlp, "PRESTAGE_FILE_BYTES", -1)
    calls = []
    original = otlp.prestage
    monkeypatch.setattr(otlp, "prestage", lambda con, paths, s: (calls.append(len(paths)), original(con, paths, s)))
    with open_warehouse(tmp_path / f"{name}.duckdb") as con:
        summary = ingest_paths(con, [folder])
        files = {Path(f.path).name: (f.read, f.accepted, f.rejected, f.duplicates, f.spans_accepted) for f in summary.files}
        spans = con.execute(
            "SELECT * EXCLUDE (source_file, ingest_batch_id, ingested_at) FROM spans ORDER BY trace_id, span_id").fetchall()
        events = con.execute("SELECT * EXCLUDE (source_file, ingest_batch_id) FROM genai_events "
                             "ORDER BY event_key").fetchall()
        rejects = con.execute("SELECT regexp_extract(source_file, '[^/]+$'), source_line, raw, reason FROM trace_rejects "
                              "ORDER BY ALL").fetchall()
    monkeypatch.undo()
    return summary, files, spans, events, rejects, calls


def test_small_files_together_give_exactly_what_each_gives_alone(small_files, tmp_path, monkeypatch):
    together = _ingest(tmp_path, "together", small_files, monkeypatch, together=True)
    alone = _ingest(tmp_path, "alone", small_files, monkeypatch, together=False)
    assert together[5] == [19]  # the JSON-lines files, normalised together  # files normalised together (the sizes of the groups)
    assert alone[5] == []
    assert together[0].errors == alone[0].errors == []
    assert together[1] == alone[1] and len(together[1]) == 35
    for f in together[0].files:
        assert f.read == f.accepted + f.rejected + f.duplicates, f
    assert together[2] == alone[2] and len(together[2]) > 10
    assert together[3] == alone[3] and together[3]  # the legacy log exports' GenAI events
    assert together[4] == alone[4]
    bad = [(line, reason) for name, line, _raw, reason in together[4] if name == "m_bad_lines.traces.jsonl"]
    assert [line for line, _ in bad] == [2, 3, 5] and "invalid JSON" in bad[0][1] and "not an OTLP export" in bad[1][1]


def test_if_the_shared_statement_fails_each_file_is_read_alone(tmp_path, monkeypatch):
    def broken(con, paths, settings):
        con.execute("CREATE OR REPLACE TEMP TABLE otlp_prestaged_spans AS SELECT 1 AS x")  # half done
        raise MemoryError("out of memory")

    monkeypatch.setattr(otlp, "prestage", broken)
    with open_warehouse(tmp_path / "w.duckdb") as con:
        summary = ingest_paths(con, [_small_files(tmp_path / "in", tests=2)])
        assert summary.errors == [] and len(summary.files) == 23 and sum(f.spans_accepted for f in summary.files) > 5
        assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE 'otlp_prestaged%'").fetchall() == [(0,)]


def test_groups_keep_the_order_and_break_at_large_or_other_files(tmp_path, monkeypatch):
    monkeypatch.setattr(otlp, "PRESTAGE_FILE_BYTES", 2000)
    line = json.dumps({"resourceSpans": []})
    paths = []
    for name, size in [("a", 1), ("b", 1), ("c", 100), ("d", 1), ("e", 1), ("f", 1)]:
        p = tmp_path / f"{name}.jsonl"
        p.write_text("\n".join([line] * size) + "\n")
        paths.append(p)
    (tmp_path / "d.jsonl").write_text(json.dumps({"run_id": "not otlp"}) + "\n")  # another format breaks the run
    groups = [[p.stem for p in g] for g, _, _ in ingest_mod._prestage_groups(paths, ingest_mod.IngestSettings(), None, None)]
    assert groups == [["a", "b"], ["c"], ["d"], ["e", "f"]]
