"""LangSmith SDK 0.15.1 (langsmith-py) as it really sends: multipart bodies (plain and zstd)
parsed by the receiver's functions, and runs whose post and patch arrive in different requests
merged across files in the warehouse. Fixtures: fixtures/langsmith_sdk (see its PROVENANCE.md)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from relops_pipeline.lib.ingest import ingest_file
from relops_pipeline.lib.readers import langsmith
from relops_pipeline.lib.receiver.langsmith_api import (
    LangSmithRequestError,
    info_document,
    parse_request,
    spool_document,
)
from relops_pipeline_tests.conftest import FIXTURES

SDK = FIXTURES / "langsmith_sdk"  # zstd bodies (zstandard importable)
PLAIN = SDK / "plain"  # the same script, zstandard not importable: plain bodies
SDK_VERSION = "0.15.1"


def request(n: int, folder: Path = SDK) -> tuple[str, str, dict, bytes]:
    body = next(folder.glob(f"{n:03d}-*.body"))
    _, method, path = body.name[: -len(".body")].split("-", 2)
    headers = json.loads(body.with_name(body.name.replace(".body", ".headers.json")).read_text())
    return method, "/" + path.replace("_", "/"), headers, body.read_bytes()


def runs_of(n: int, folder: Path = SDK) -> dict:
    return parse_request(*request(n, folder))


def by_name(runs: list[dict], name: str) -> dict:
    found = [r for r in runs if r["name"] == name]
    assert len(found) == 1, name
    return found[0]


def spool(tmp_path: Path, n: int, folder: Path = SDK) -> Path:
    path = tmp_path / f"{folder.name}-req{n:03d}.json"
    path.write_bytes(spool_document(runs_of(n, folder)))
    return path


def span(con, name: str, trace_id: str | None = None) -> dict:
    cur = con.execute("SELECT * FROM spans WHERE span_name = ? AND (? IS NULL OR trace_id = ?)", [name, trace_id, trace_id])
    names = [d[0] for d in cur.description]
    rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    assert len(rows) == 1, (name, len(rows))
    return rows[0]


FIRST_TRACE = "01a248f7-14e8-7b86-a6fe-0041f3684293"


def test_sdk_0_15_zstd_first_request_is_the_chains_start_only():
    assert all({k.lower(): v for k, v in request(n)[2].items()}["content-encoding"] == "zstd" for n in range(2, 7))
    first = runs_of(2)
    assert first["patch"] == []
    answer = by_name(first["post"], "answer")
    assert answer["id"] == answer["trace_id"] == FIRST_TRACE
    assert answer["run_type"] == "chain" and answer["start_time"] == "2026-12-06T01:28:02.024805+00:00"
    assert answer["inputs"] == {"question": "What is the capital of France?"}
    assert answer["session_name"] == "relops-fixture"
    assert "end_time" not in answer and answer["extra"]["runtime"]["sdk_version"] == SDK_VERSION


def test_sdk_0_15_plain_multipart_every_field():
    assert not any("content-encoding" in {k.lower() for k in request(n, PLAIN)[2]} for n in range(2, 7))
    first = runs_of(2, PLAIN)
    assert [r["name"] for r in first["post"]] == ["answer"] and first["patch"] == []
    second = runs_of(3, PLAIN)
    # without zstd the SDK sent the finished llm run as one post (start and end together)
    chat = by_name(second["post"], "chat")
    assert chat["run_type"] == "llm" and chat["parent_run_id"] == first["post"][0]["id"]
    assert chat["start_time"] < chat["end_time"]
    assert chat["inputs"] == {"messages": [{"role": "user", "content": "What is the capital of France?"}]}
    assert chat["outputs"]["usage_metadata"] == {"input_tokens": 12, "output_tokens": 3, "total_tokens": 15}
    assert by_name(second["patch"], "answer")["outputs"] == {"output": "Paris."}
    errors = runs_of(4, PLAIN)
    assert errors["patch"] == []
    assert by_name(errors["post"], "lookup")["error"].startswith("KeyError('no such key: missing')")
    assert by_name(errors["post"], "failing")["end_time"]


def test_sdk_0_15_zstd_multipart_every_field_of_llm_run():
    runs = runs_of(3)
    post, patch = by_name(runs["post"], "chat"), by_name(runs["patch"], "chat")
    assert post["id"] == patch["id"] == "01a248f7-1ae1-74cd-82dd-67baca27f240"
    assert post["trace_id"] == post["parent_run_id"] == FIRST_TRACE and post["run_type"] == "llm"
    assert post["inputs"] == {"messages": [{"role": "user", "content": "What is the capital of France?"}]}
    assert post["serialized"] == {"name": "chat"}
    assert post["extra"]["metadata"]["ls_model_name"] == "gpt-4o-mini"
    assert post["start_time"] == "2026-12-06T01:28:03.553061+00:00"
    assert patch["end_time"] == "2026-12-06T01:28:03.554193+00:00"
    assert patch["outputs"]["usage_metadata"] == {"input_tokens": 12, "output_tokens": 3, "total_tokens": 15}
    assert patch["outputs"]["model"] == "gpt-4o-mini-2024-07-18"
    assert patch["outputs"]["choices"][0]["message"]["content"] == "Paris."
    # the chain's end arrives here, its start came in request 002
    answer_end = by_name(runs["patch"], "answer")
    assert answer_end["id"] == FIRST_TRACE and answer_end["outputs"] == {"output": "Paris."}
    assert answer_end["end_time"] > answer_end["start_time"] == "2026-12-06T01:28:02.024805+00:00"


def test_sdk_0_15_error_parts():
    runs = runs_of(4)
    lookup = by_name(runs["patch"], "lookup")
    assert lookup["error"].startswith("KeyError('no such key: missing')") and lookup["run_type"] == "tool"
    assert by_name(runs["patch"], "failing")["error"].startswith("KeyError(")
    assert by_name(runs["post"], "lookup")["inputs"] == {"key": "missing"}


def test_other_routes_and_info():
    assert parse_request("GET", "/info", {}, b"") is None
    info = info_document()
    assert info["batch_ingest_config"]["use_multipart_endpoint"] is True and "size_limit_bytes" in info["batch_ingest_config"]
    assert "instance_flags" in info and info["version"]
    batch = {"post": [{"id": "r1", "trace_id": "r1", "name": "x"}], "patch": [{"id": "r1", "trace_id": "r1", "end_time": "t"}]}
    assert parse_request("POST", "/api/v1/runs/batch", {"Content-Encoding": "gzip"}, gzip.compress(json.dumps(batch).encode())) == batch
    assert parse_request("POST", "/runs", {}, b'{"id": "r2"}') == {"post": [{"id": "r2"}], "patch": []}
    assert parse_request("PATCH", "/runs/r2", {}, b'{"end_time": "t"}') == {"post": [], "patch": [{"end_time": "t", "id": "r2"}]}
    with pytest.raises(LangSmithRequestError) as err:
        parse_request("POST", "/nope", {}, b"")
    assert err.value.status == 404
    with pytest.raises(LangSmithRequestError):
        parse_request("POST", "/runs/batch", {}, b"not json")
    with pytest.raises(LangSmithRequestError) as err:
        parse_request("POST", "/runs/multipart", {"Content-Type": "application/json"}, b"{}")
    assert err.value.status == 415
    doc = json.loads(spool_document(runs_of(3)))
    assert list(doc)[:2] == ["post", "patch"]


def test_post_first_then_patch_in_a_later_file_updates_the_span(wh, tmp_path):
    r2 = ingest_file(wh, spool(tmp_path, 2))
    assert (r2.accepted, r2.rejected) == (1, 0)
    before = span(wh, "answer")
    assert before["end_time"] is None and before["status"] == "unset" and before["output_text"] is None
    r3 = ingest_file(wh, spool(tmp_path, 3))
    # chat is new; answer's patch updates the span ingested from request 002 (a duplicate, no new span)
    assert (r3.accepted, r3.rejected, r3.duplicates) == (1, 0, 1)
    after = span(wh, "answer")
    assert after["end_time"] is not None and after["status"] == "ok" and after["output_text"] == "Paris."
    assert after["latency_ms"] == pytest.approx((after["end_time"] - after["start_time"]).total_seconds() * 1000)
    chat = span(wh, "chat", FIRST_TRACE)
    assert (chat["input_tokens"], chat["output_tokens"], chat["finish_reason"]) == (12, 3, "stop")
    assert chat["model"] == "gpt-4o-mini-2024-07-18" and chat["provider"] == "openai" and chat["kind"] == "llm"
    assert langsmith.pending_patches(wh) == 0


def test_patch_first_waits_then_merges_when_the_post_arrives(wh, tmp_path):
    r3 = ingest_file(wh, spool(tmp_path, 3))
    assert (r3.accepted, r3.rejected) == (1, 1)  # chat; answer's patch waits (reported as pending)
    reasons = [r[0] for r in wh.execute("SELECT reason FROM trace_rejects").fetchall()]
    assert len(reasons) == 1 and reasons[0].startswith(f"pending: patch for run {FIRST_TRACE}")
    assert langsmith.pending_patches(wh) == 1
    assert wh.execute("SELECT run_id, trace_id FROM langsmith_pending").fetchall() == [(FIRST_TRACE, FIRST_TRACE)]
    r2 = ingest_file(wh, spool(tmp_path, 2))
    assert r2.accepted == 1
    answer = span(wh, "answer")
    assert answer["status"] == "ok" and answer["output_text"] == "Paris." and answer["latency_ms"] > 1000
    assert langsmith.pending_patches(wh) == 0
    ingest_file(wh, spool(tmp_path, 4))  # the next LangSmith ingest settles (deletes) merged patches
    assert wh.execute("SELECT count(*) FROM langsmith_pending").fetchone()[0] == 0
    assert span(wh, "answer")["output_text"] == "Paris."


def test_late_pending_patch_applied_to_span_ingested_before(wh, tmp_path):
    """A patch kept pending whose run is then ingested some other way is applied at settle time."""
    r2 = ingest_file(wh, spool(tmp_path, 2))
    assert r2.accepted == 1
    patch = by_name(runs_of(3)["patch"], "answer")
    wh.execute(
        "INSERT INTO langsmith_pending VALUES (?, ?, ?, 'elsewhere', 1, NULL, now()::TIMESTAMP + INTERVAL 1 HOUR)",
        [FIRST_TRACE, FIRST_TRACE, json.dumps(patch)],
    )
    r4 = ingest_file(wh, spool(tmp_path, 4))  # the next LangSmith file's load settles it
    assert span(wh, "answer")["output_text"] == "Paris."
    assert wh.execute("SELECT count(*) FROM langsmith_pending").fetchone()[0] == 0
    assert wh.execute("SELECT ingest_batch_id, span_id, reason FROM span_updates").fetchall() == [
        (r4.batch_id, FIRST_TRACE, "langsmith patch")
    ]


def test_late_patch_completes_the_span_like_an_ingested_one(wh, tmp_path):
    """A run's end arriving in a later file gets what the run would have had in one file: output
    messages, the cost computed from the configured prices, and its day recomputed."""
    from relops_pipeline.lib.ingest import touched_days
    from relops_pipeline.lib.settings import IngestSettings, Price

    settings = IngestSettings(prices={"gpt-4o-mini": Price(input_per_mtok=0.15, output_per_mtok=0.6)})
    one = tmp_path / "one"
    one.mkdir()
    both = {"post": runs_of(3)["post"], "patch": runs_of(3)["patch"]}
    (one / "whole.json").write_text(json.dumps(both))
    split_post = tmp_path / "post.json"
    split_post.write_text(json.dumps({"post": both["post"], "patch": []}))
    split_patch = tmp_path / "patch.json"
    split_patch.write_text(json.dumps({"post": [], "patch": both["patch"]}))
    ingest_file(wh, split_post, settings=settings)
    late = ingest_file(wh, split_patch, settings=settings)
    chat = span(wh, "chat")
    assert json.loads(chat["output_messages"]) == [{"role": "assistant", "content": "Paris."}]
    assert json.loads(chat["input_messages"]) == [{"role": "user", "content": "What is the capital of France?"}]
    assert chat["input_text"] == "What is the capital of France?" and chat["output_text"] == "Paris."
    assert chat["cost_source"] == "computed" and chat["cost_usd"] == pytest.approx((12 * 0.15 + 3 * 0.6) / 1e6)
    assert chat["model"] == "gpt-4o-mini-2024-07-18" and chat["status"] == "ok"
    assert late.min_start_time == chat["start_time"] and touched_days(wh, [late.batch_id]) == [chat["start_time"].date()]
    # the same run read from one file has the same fields
    import duckdb

    from relops_pipeline.lib.warehouse import migrate

    other = duckdb.connect()
    migrate(other)
    ingest_file(other, one / "whole.json", settings=settings)
    columns = ("input_text", "output_text", "input_messages", "output_messages", "cost_usd", "cost_source", "model",
               "input_tokens", "output_tokens", "finish_reason", "status", "latency_ms", "end_time")
    sql = f"SELECT {', '.join(columns)} FROM spans WHERE span_name = 'chat'"
    assert other.execute(sql).fetchall() == wh.execute(sql).fetchall()


def test_errors_are_kept(wh, tmp_path):
    ingest_file(wh, spool(tmp_path, 4))
    lookup, failing = span(wh, "lookup"), span(wh, "failing")
    assert lookup["status"] == failing["status"] == "error"
    assert lookup["error_type"] == "KeyError" and lookup["kind"] == "tool" and lookup["parent_span_id"] == failing["span_id"]


SNAPSHOT = "SELECT * EXCLUDE (ingest_batch_id, ingested_at, source_file) FROM spans ORDER BY trace_id, span_id"


@pytest.mark.parametrize(
    ("folder", "order"), [(SDK, [2, 3, 4, 5, 6]), (SDK, [6, 5, 4, 3, 2]), (PLAIN, [2, 3, 4, 5, 6]), (PLAIN, [6, 5, 4, 3, 2])]
)
def test_every_request_in_either_order_gives_every_run_once_and_reingest_changes_nothing(wh, tmp_path, folder, order):
    files = {n: spool(tmp_path, n, folder) for n in order}
    results = [ingest_file(wh, files[n]) for n in order]
    assert sum(r.accepted for r in results) == 6  # answer, chat, failing, lookup, answer, chat
    rows = wh.execute(SNAPSHOT).fetchall()
    assert len(rows) == 6
    assert langsmith.pending_patches(wh) == 0
    cur = wh.execute("SELECT span_name, status, end_time IS NOT NULL, output_tokens FROM spans ORDER BY span_name, start_time")
    assert cur.fetchall() == [
        ("answer", "ok", True, None), ("answer", "ok", True, None), ("chat", "ok", True, 3), ("chat", "ok", True, 3),
        ("failing", "error", True, None), ("lookup", "error", True, None),
    ]  # every run has its end, whichever order its start and end arrived in
    again = [ingest_file(wh, files[n]) for n in order]
    assert sum(r.accepted for r in again) == 0 and sum(r.rejected for r in again) == 0
    assert wh.execute(SNAPSHOT).fetchall() == rows
    assert langsmith.pending_patches(wh) == 0


def test_multipart_attachments_recorded_and_fields_in_any_order():
    boundary = "b0undary"
    parts = [
        ("post.r1.inputs", "application/json", b'{"q": "hi"}'),
        ("post.r1", "application/json", b'{"id": "r1", "trace_id": "r1", "name": "x", "run_type": "chain"}'),
        ("attachment.r1.image", "image/png", b"\x89PNG\r\n\x00\x01"),
        ("patch.r1", "application/json", b'{"id": "r1", "trace_id": "r1", "end_time": "2026-01-01T00:00:01Z"}'),
        ("patch.r1.error", "application/json", b'"ValueError(\'x\')"'),
    ]
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{n}"\r\nContent-Type: {t}\r\n\r\n'.encode() + c + b"\r\n"
        for n, t, c in parts
    ) + f"--{boundary}--\r\n".encode()
    runs = parse_request("POST", "/runs/multipart", {"content-type": f"multipart/form-data; boundary={boundary}"}, body)
    assert runs["post"] == [{"inputs": {"q": "hi"}, "id": "r1", "trace_id": "r1", "name": "x", "run_type": "chain"}]
    assert runs["patch"] == [{"id": "r1", "trace_id": "r1", "end_time": "2026-01-01T00:00:01Z", "error": "ValueError('x')"}]
    assert runs["attachments"] == [{"run_id": "r1", "name": "image", "content_type": "image/png", "bytes": 8}]
    assert json.loads(spool_document(runs))["attachments"][0]["bytes"] == 8
    with pytest.raises(LangSmithRequestError):
        parse_request("POST", "/runs/multipart", {"content-type": f"multipart/form-data; boundary={boundary}"},
                      body.replace(b'"q": "hi"', b"not json"))
    with pytest.raises(LangSmithRequestError):
        parse_request("POST", "/runs/multipart", {"content-type": "multipart/form-data; boundary=x", "content-encoding": "zstd"}, b"nope")


def test_patch_without_id_is_rejected_not_dropped(wh, tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"post": [], "patch": [{"trace_id": "t", "end_time": "2026-01-01T00:00:01Z"}]}))
    result = ingest_file(wh, path)
    assert (result.read, result.rejected) == (1, 1)
    assert wh.execute("SELECT reason FROM trace_rejects").fetchone()[0] == "patch for run (no id) has no matching post in this payload"
    assert wh.execute("SELECT count(*) FROM langsmith_pending").fetchone()[0] == 0


def test_status_and_ingest_show_a_run_end_waiting_for_its_start(home, capsys, tmp_path):
    from relops_pipeline_tests.conftest import run_cli

    spooled = spool(tmp_path, 3)
    code, out, _ = run_cli(capsys, home.root, "ingest", str(spooled))
    assert code == 0 and "rejected 1" in out, out
    code, out, _ = run_cli(capsys, home.root, "status", "--json")
    assert code == 0 and json.loads(out)["langsmith_patches_waiting"] == 1
    code, out, _ = run_cli(capsys, home.root, "status")
    assert "LangSmith run ends waiting for their run's start: 1" in out
    code, out, _ = run_cli(capsys, home.root, "ingest", str(spool(tmp_path, 2)))
    code, out, _ = run_cli(capsys, home.root, "status", "--json")
    assert json.loads(out)["langsmith_patches_waiting"] == 0
