"""The loader's guarantees, independent of any one format: counts add up, files are atomic,
re-ingestion adds nothing, and the batch-level columns (cost, caps, unknown) are right."""

from __future__ import annotations

import json
import types
from datetime import datetime, timedelta

import pytest

from relops_pipeline.lib import ingest as ingest_mod
from relops_pipeline.lib.ingest import ingest_file
from relops_pipeline.lib.readers.base import stage_rows
from relops_pipeline.lib.settings import IngestSettings, Price
from relops_pipeline.lib.warehouse import MIGRATIONS, current_version, migrate, open_warehouse

T0 = datetime(2026, 10, 5, 12, 0, 0)


def span(i: int, **kw) -> dict:
    row = {
        "trace_id": f"t{i // 3}",
        "span_id": f"s{i}",
        "kind": "llm",
        "workflow": "support-triage",
        "release": "v1",
        "model": "gpt-4o-mini-2024-07-18",
        "provider": "openai",
        "start_time": T0 + timedelta(minutes=i),
        "end_time": T0 + timedelta(minutes=i, milliseconds=850),
        "input_tokens": 1000,
        "output_tokens": 100,
        "status": "ok",
        "input_text": "hello",
        "output_text": "world",
        "source_format": "fake",
        "source_line": i + 1,
    }
    row.update(kw)
    return row


def fake_reader(rows, rejects=(), events=None):
    def read(con, ctx):
        stage_rows(con, rows, rejects)
        for e in events or []:
            con.execute(
                "INSERT INTO stage_events (trace_id, span_id, event_name, event_time, role, content, source_format, source_line) "
                "VALUES (?, ?, ?, ?, ?, ?, 'fake', ?)",
                [e["trace_id"], e["span_id"], e["event_name"], e.get("event_time", T0), e["role"], e["content"], e["line"]],
            )

    return types.SimpleNamespace(FORMAT="fake", read=read)


@pytest.fixture
def use_reader(monkeypatch):
    def install(reader):
        monkeypatch.setattr(ingest_mod, "reader_for", lambda fmt: reader)

    return install


@pytest.fixture
def afile(tmp_path):
    p = tmp_path / "batch.jsonl"
    p.write_text("placeholder: the fake reader does not read it\n")
    return p


def test_counts_add_up_with_rejects_and_in_batch_duplicates(wh, afile, use_reader):
    rows = [span(i) for i in range(10)] + [span(3, source_line=99)]  # s3 repeated in the batch
    rows.append(span(11, span_id=None))  # no span id: a reject, never a silent drop
    rows.append(span(12, start_time=None))  # no time: it could never reach a day's checks
    use_reader(fake_reader(rows, rejects=[{"source_line": 50, "raw": "{oops", "reason": "invalid JSON"}]))
    r = ingest_file(wh, afile, fmt="fake")
    assert (r.read, r.accepted, r.rejected, r.duplicates) == (14, 10, 3, 1)
    assert r.read == r.accepted + r.rejected + r.duplicates
    reasons = sorted(x[0] for x in wh.execute("SELECT reason FROM trace_rejects").fetchall())
    assert reasons == ["invalid JSON", "span without span id", "span without start time"]
    batch = wh.execute("SELECT records_read, accepted, rejected, duplicates FROM ingest_batches").fetchone()
    assert batch == (14, 10, 3, 1)


def test_reingest_adds_nothing(wh, afile, use_reader):
    use_reader(fake_reader([span(i) for i in range(5)], rejects=[{"source_line": 6, "raw": "{oops", "reason": "invalid JSON"}]))
    first = ingest_file(wh, afile, fmt="fake")
    second = ingest_file(wh, afile, fmt="fake")
    assert (first.accepted, first.rejected) == (5, 1)
    # the same spans and the same quarantined line again: duplicates, nothing added
    assert (second.read, second.accepted, second.rejected, second.duplicates) == (6, 0, 0, 6)
    assert wh.execute("SELECT count(*) FROM spans").fetchone()[0] == 5
    assert wh.execute("SELECT count(*) FROM trace_rejects").fetchone()[0] == 1


def test_file_is_atomic(wh, afile, use_reader, monkeypatch):
    use_reader(fake_reader([span(i) for i in range(5)], rejects=[{"source_line": 9, "raw": "x", "reason": "bad"}]))

    def boom(*a, **k):
        raise RuntimeError("disk full, say")

    monkeypatch.setattr(ingest_mod, "_fill_text_from_events", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        ingest_file(wh, afile, fmt="fake")
    for table in ("spans", "trace_rejects", "ingest_batches", "genai_events"):
        assert wh.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table


def test_cost_units_caps_and_unknown_release(wh, afile, use_reader):
    long_text = "x" * 50
    rows = [
        span(0),  # cost from the price table (dated id priced by its prefix)
        span(1, cost_usd=0.5),  # reported cost kept
        span(2, model="mystery-model"),  # no price: unknown cost, not zero
        span(3, release=None, input_text=long_text),  # no release: kept as unknown, counted
        span(5, release="support-triage@"),  # names no version: unknown too
        span(4, latency_ms=1234.0),  # reported latency wins over end - start
    ]
    use_reader(fake_reader(rows))
    settings = IngestSettings(text_cap=20, prices={"gpt-4o-mini": Price(0.15, 0.60)})
    r = ingest_file(wh, afile, fmt="fake", settings=settings)
    assert r.unknown_release == 2
    got = {
        sid: (cost, src, rel, known, trunc, len(txt), lat)
        for sid, cost, src, rel, known, trunc, txt, lat in wh.execute(
            "SELECT span_id, cost_usd, cost_source, release, release_known, input_truncated, input_text, latency_ms FROM spans"
        ).fetchall()
    }
    assert got["s0"][0] == pytest.approx(1000 * 0.15 / 1e6 + 100 * 0.60 / 1e6)
    assert got["s0"][1] == "computed"
    assert got["s1"][:2] == (0.5, "reported")
    assert got["s2"][:2] == (None, "unknown")  # neither reported nor computed: unknown, never zero
    assert got["s3"][2:6] == ("unknown", False, True, 20)
    assert got["s0"][6] == pytest.approx(850.0)
    assert got["s4"][6] == 1234.0


def test_events_fill_text_whichever_arrives_first(wh, tmp_path, use_reader):
    a, b = tmp_path / "spans.jsonl", tmp_path / "logs.jsonl"
    a.write_text("x\n")
    b.write_text("y\n")
    events = [
        {"trace_id": "t0", "span_id": "s0", "event_name": "gen_ai.user.message", "role": "user", "content": "Say hi", "line": 1},
        {"trace_id": "t0", "span_id": "s0", "event_name": "gen_ai.choice", "role": "assistant", "content": "Hi!", "line": 2},
    ]
    use_reader(fake_reader([], events=events))
    r1 = ingest_file(wh, b, fmt="fake")
    assert r1.accepted == 2 and r1.read == 2
    use_reader(fake_reader([span(0, input_text=None, output_text=None)]))
    ingest_file(wh, a, fmt="fake")
    inp, out, msgs = wh.execute("SELECT input_text, output_text, input_messages FROM spans WHERE span_id = 's0'").fetchone()
    assert inp == "Say hi"  # plain text; the roles are in input_messages
    assert json.loads(msgs) == [{"role": "user", "content": "Say hi"}]
    assert out == "Hi!"
    # The same events again are duplicates.
    use_reader(fake_reader([], events=events))
    r3 = ingest_file(wh, b, fmt="fake")
    assert (r3.accepted, r3.duplicates) == (0, 2)


def test_older_warehouse_upgrades(tmp_path):
    path = tmp_path / "old.duckdb"
    with open_warehouse(path) as con:
        con.execute("INSERT INTO trace_rejects VALUES ('b1', 'f', 'otlp', 1, '{', 'invalid JSON', now()::TIMESTAMP)")
        assert current_version(con) == MIGRATIONS[-1][0]
    future = MIGRATIONS + [(MIGRATIONS[-1][0] + 1, "test: add a column", "ALTER TABLE trace_rejects ADD COLUMN note VARCHAR")]
    import duckdb

    con = duckdb.connect(str(path))
    assert migrate(con, future) == [MIGRATIONS[-1][0] + 1]
    assert con.execute("SELECT reason, note FROM trace_rejects").fetchall() == [("invalid JSON", None)]
    assert migrate(con, future) == []  # idempotent
    con.close()


def test_failed_migration_leaves_the_warehouse_as_it_was(tmp_path):
    import duckdb

    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    migrate(con)
    broken = MIGRATIONS + [(99, "broken", "CREATE TABLE half_done (x INT); SELECT * FROM no_such_table;")]
    with pytest.raises(duckdb.Error):
        migrate(con, broken)
    assert current_version(con) == MIGRATIONS[-1][0]
    assert con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'half_done'").fetchone()[0] == 0
    con.close()
