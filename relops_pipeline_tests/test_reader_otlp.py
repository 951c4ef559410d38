"""The OTLP/JSON reader against the real openai-v2 captures and hand-made edge cases."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relops_pipeline.lib.readers import otlp
from relops_pipeline.lib.readers.attributes import map_attributes
from relops_pipeline.lib.readers.base import ReadContext, SourceSettings
from relops_pipeline.lib.schema import RAW_REJECT_CAP
from relops_pipeline_tests.conftest import FIXTURES

OTEL = FIXTURES / "otel_genai_openai_v2"
LATEST = OTEL / "ALL.latest_experimental.traces.jsonl"
LEGACY_TRACES = OTEL / "ALL.legacy_semconv.traces.jsonl"
LEGACY_LOGS = OTEL / "ALL.legacy_semconv.logs.jsonl"


def _read(con, path: Path, settings: SourceSettings | None = None) -> None:
    otlp.read(con, ReadContext(path=path, settings=settings or SourceSettings()))


def _rows(con, sql: str, params=None) -> list[dict]:
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=False)) for r in cur.fetchall()]


def _counts(con) -> tuple[int, int, int]:
    return tuple(con.execute(f"SELECT count(*) FROM stage_{t}").fetchall()[0][0] for t in ("spans", "events", "rejects"))


def _any_value(v: dict):
    """Reference AnyValue decoder (plain Python), independent of the reader's SQL."""
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "boolValue" in v:
        return v["boolValue"]
    if "arrayValue" in v:
        return [_any_value(x) for x in v["arrayValue"].get("values", [])]
    if "kvlistValue" in v:
        return {kv["key"]: _any_value(kv["value"]) for kv in v["kvlistValue"].get("values", [])}
    return None


def _spans_of(path: Path) -> list[tuple[int, dict, dict]]:
    """(line number, span, merged flat attributes) for every span in a JSON-lines file."""
    out = []
    for no, line in enumerate(path.read_text().splitlines(), 1):
        for rs in json.loads(line).get("resourceSpans", []):
            res = {a["key"]: _any_value(a["value"]) for a in rs.get("resource", {}).get("attributes", [])}
            for ss in rs.get("scopeSpans", []):
                for sp in ss.get("spans", []):
                    attrs = {**res, **{a["key"]: _any_value(a["value"]) for a in sp.get("attributes", [])}}
                    out.append((no, sp, attrs))
    return out


def _log_records_of(path: Path) -> list[tuple[int, dict]]:
    out = []
    for no, line in enumerate(path.read_text().splitlines(), 1):
        for rl in json.loads(line).get("resourceLogs", []):
            for sl in rl.get("scopeLogs", []):
                out.extend((no, rec) for rec in sl.get("logRecords", []))
    return out


def _utc(ns: str) -> datetime:
    # Exact to the microsecond, without going through a float.
    return datetime.fromtimestamp(int(ns) // 1_000_000_000, tz=UTC).replace(
        tzinfo=None, microsecond=int(ns) // 1000 % 1_000_000
    )


# --- real captures ----------------------------------------------------------------------------


def test_latest_file_all_spans_staged_with_their_lines(stage_con):
    spans = _spans_of(LATEST)
    assert len(LATEST.read_text().splitlines()) == 68 and len(spans) == 72  # as read from the file
    _read(stage_con, LATEST)
    assert _counts(stage_con) == (72, 0, 0)
    got = {(r["span_id"], r["source_line"]) for r in _rows(stage_con, "SELECT span_id, source_line FROM stage_spans")}
    assert got == {(sp["spanId"], no) for no, sp, _ in spans}
    assert _rows(stage_con, "SELECT DISTINCT source_format, kind, provider FROM stage_spans") == [
        {"source_format": "otlp", "kind": "llm", "provider": "openai"}
    ]


def test_latest_named_span_checked_by_hand(stage_con):
    # Line 36 = per_test/test_chat_completion_with_content: one chat span, read by hand.
    _read(stage_con, LATEST)
    (row,) = _rows(stage_con, "SELECT * FROM stage_spans WHERE span_id = '414c65e6132e984b'")
    assert row["source_line"] == 36
    assert row["trace_id"] == "ddf68acf2bbc6505d87494e1fff5264b"
    assert row["parent_span_id"] is None
    assert row["span_name"] == "chat gpt-4o-mini"
    assert row["model"] == "gpt-4o-mini-2024-07-18"  # response model wins over request model gpt-4o-mini
    assert (row["input_tokens"], row["output_tokens"]) == (12, 5)
    assert row["finish_reason"] == "stop"
    assert (row["status"], row["error_type"]) == ("unset", None)
    assert row["start_time"] == datetime(2026, 11, 27, 15, 34, 58, 283123)  # 1795793698283123715 ns
    assert row["end_time"] == _utc("1795793698317404845")
    assert "Say this is a test" in row["input_text"]
    assert json.loads(row["input_messages"])[0]["role"] == "user"  # plain text; the roles are in input_messages
    assert row["output_text"] == "This is a test."
    attrs = json.loads(row["attributes"])
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.response.id"] == "chatcmpl-ASYMQRl3A3DXL9FWCK9tnGRcKIO7q"
    assert attrs["service.name"] == "unknown_service:python"  # resource attribute merged in
    assert attrs["otel.scope.name"] == "opentelemetry.util.genai.handler"
    assert attrs["otel.span.kind"] == "client"
    for filled in ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.usage.input_tokens", "gen_ai.response.model"):
        assert filled not in attrs
    assert row["workflow"] is None and row["release"] is None  # unknown_service:python, no service.version
    assert row["online_scores"] is None


def test_latest_404_is_an_error_with_its_type(stage_con):
    _read(stage_con, LATEST)
    (row,) = _rows(stage_con, "SELECT * FROM stage_spans WHERE span_id = '5c3b970ea9961576'")
    assert row["source_line"] == 1
    assert row["span_name"] == "chat this-model-does-not-exist"
    assert (row["status"], row["error_type"]) == ("error", "NotFoundError")
    assert row["model"] == "this-model-does-not-exist"
    assert row["parent_span_id"] == "4cfe99815132734e"
    assert "Error code: 404" in json.loads(row["attributes"])["otel.status_description"]
    # status.code 2 <-> error, for every span of the file
    errors = {sp["spanId"] for _, sp, _ in _spans_of(LATEST) if sp.get("status", {}).get("code") == 2}
    assert {r["span_id"] for r in _rows(stage_con, "SELECT span_id FROM stage_spans WHERE status = 'error'")} == errors
    assert _rows(stage_con, "SELECT count(*) AS n FROM stage_spans WHERE status = 'ok'") == [{"n": 0}]


def test_latest_output_text_is_plain_text_or_json_for_tool_calls(stage_con):
    _read(stage_con, LATEST)
    out = {r["span_id"]: r["output_text"] for r in _rows(stage_con, "SELECT span_id, output_text FROM stage_spans")}
    assert out["b674b32885e834ad"] == "This is a test.\nThis is a test."  # two choices
    assert out["a90cc01b4fbd6da7"] == '"This is a test."'  # the model answered with quotes
    tool_only = json.loads(out["d851e0a8f4968ab1"])  # tool calls only: the messages as given
    assert [p["type"] for p in tool_only[0]["parts"]] == ["tool_call", "tool_call"]
    assert out["1ca9f556893e1a67"] == ""  # an empty text part is an empty answer


@pytest.mark.parametrize("path", [LATEST, LEGACY_TRACES], ids=["latest", "legacy"])
def test_fields_agree_with_map_attributes(stage_con, path):
    """The SQL mapping and attributes.map_attributes read the same FIELD_KEYS: same results."""
    _read(stage_con, path)
    staged = {r["span_id"]: r for r in _rows(stage_con, "SELECT * FROM stage_spans")}
    spans = _spans_of(path)
    assert len(staged) == len(spans)
    for _, sp, attrs in spans:
        want, row = map_attributes(attrs), staged[sp["spanId"]]
        for field in ("model", "provider", "input_tokens", "output_tokens", "finish_reason", "kind", "input_text"):
            assert row[field] == want[field], (sp["spanId"], field)
        if want["error_type"] is not None:
            assert row["error_type"] == want["error_type"]


def test_legacy_traces_provider_from_gen_ai_system(stage_con):
    spans = _spans_of(LEGACY_TRACES)
    assert len(LEGACY_TRACES.read_text().splitlines()) == 47 and len(spans) == 51
    assert all("gen_ai.provider.name" not in a and a["gen_ai.system"] == "openai" for _, _, a in spans)
    _read(stage_con, LEGACY_TRACES)
    assert _counts(stage_con) == (51, 0, 0)
    assert _rows(stage_con, "SELECT DISTINCT provider FROM stage_spans") == [{"provider": "openai"}]
    # legacy spans carry no message content: it is in the log records
    assert _rows(stage_con, "SELECT count(input_text) AS i, count(output_text) AS o FROM stage_spans") == [{"i": 0, "o": 0}]
    (row,) = _rows(stage_con, "SELECT * FROM stage_spans WHERE span_id = '341161cfbad6d9bb'")
    assert (row["source_line"], row["model"], row["finish_reason"]) == (5, "gpt-4o-mini-2024-07-18", "stop")
    assert (row["input_tokens"], row["output_tokens"]) == (12, 10)
    assert json.loads(row["attributes"])["gen_ai.request.choice.count"] == 2  # intValue string -> number


def test_legacy_logs_every_record_is_an_event(stage_con):
    records = _log_records_of(LEGACY_LOGS)
    assert len(LEGACY_LOGS.read_text().splitlines()) == 41 and len(records) == 114
    _read(stage_con, LEGACY_LOGS)
    assert _counts(stage_con) == (0, 114, 0)
    by_name = {
        (r["event_name"], r["role"]): r["n"]
        for r in _rows(stage_con, "SELECT event_name, role, count(*) AS n FROM stage_events GROUP BY ALL")
    }
    expected = {}
    for _, rec in records:
        role = {"gen_ai.choice": "assistant"}.get(rec["eventName"], rec["eventName"].split(".")[1])
        expected[(rec["eventName"], role)] = expected.get((rec["eventName"], role), 0) + 1
    assert by_name == expected
    assert by_name[("gen_ai.user.message", "user")] == 45
    # every record keeps its line, ids and time (observedTimeUnixNano: no timeUnixNano here)
    staged = sorted(
        (r["source_line"], r["trace_id"], r["span_id"], r["event_time"])
        for r in _rows(stage_con, "SELECT source_line, trace_id, span_id, event_time FROM stage_events")
    )
    assert staged == sorted((no, rec["traceId"], rec["spanId"], _utc(rec["observedTimeUnixNano"])) for no, rec in records)


def test_legacy_logs_roles_and_content_checked_by_hand(stage_con):
    _read(stage_con, LEGACY_LOGS)
    line6 = _rows(stage_con, "SELECT * FROM stage_events WHERE span_id = '31a43869838c408a' ORDER BY event_time")
    assert [(r["event_name"], r["role"]) for r in line6] == [
        ("gen_ai.system.message", "system"),
        ("gen_ai.user.message", "user"),
        ("gen_ai.choice", "assistant"),
        ("gen_ai.choice", "assistant"),
    ]
    assert line6[0]["content"] == "You're a helpful assistant."
    assert line6[1]["content"] == "What's the weather in Seattle and San Francisco today?"
    assert line6[2]["content"].startswith("I'm unable to provide real-time weather updates")
    assert {r["source_line"] for r in line6} == {6}
    body = json.loads(line6[3]["attributes"])["log.body"]
    assert (body["index"], body["finish_reason"], body["message"]["role"]) == (1, "stop", "assistant")
    # a choice with tool calls only: the body as JSON, nested values decoded
    (tool_choice,) = _rows(
        stage_con, "SELECT content FROM stage_events WHERE span_id = 'd45312d616babde7' AND event_name = 'gen_ai.choice'")
    content = json.loads(tool_choice["content"])
    assert content["finish_reason"] == "tool_calls"
    assert [c["function"]["name"] for c in content["message"]["tool_calls"]] == ["get_current_weather"] * 2
    # content not captured (empty body): NULL content, still staged
    (no_content,) = _rows(stage_con, "SELECT content FROM stage_events WHERE span_id = '67bf13d746639ea1'")
    assert no_content["content"] is None


def test_mixed_traces_and_logs_in_one_file(stage_con, tmp_path):
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(LATEST.read_text() + LEGACY_LOGS.read_text())
    _read(stage_con, mixed)
    assert _counts(stage_con) == (72, 114, 0)
    assert _rows(stage_con, "SELECT min(source_line) AS lo, max(source_line) AS hi FROM stage_events") == [{"lo": 69, "hi": 68 + 41}]


# --- single documents ---------------------------------------------------------------------------


def _pretty_doc() -> dict:
    one = json.loads((OTEL / "per_test/test_chat_completion_with_content.latest_experimental.traces.jsonl").read_text())
    two = json.loads(LATEST.read_text().splitlines()[12])  # line 13: one scope with two spans
    return {"resourceSpans": one["resourceSpans"] + two["resourceSpans"]}


def test_pretty_printed_document_record_index(stage_con, tmp_path):
    doc = tmp_path / "request.json"
    doc.write_text(json.dumps(_pretty_doc(), indent=2))
    logs = json.loads(LEGACY_LOGS.read_text().splitlines()[4])  # 3 log records
    both = tmp_path / "two_docs.json"
    both.write_text(json.dumps(_pretty_doc(), indent=2) + "\n" + json.dumps(logs, indent=4) + "\n")
    assert otlp.sniff(doc.read_bytes()[:4096], doc)
    _read(stage_con, doc)
    assert _rows(stage_con, "SELECT source_line, span_id, output_text FROM stage_spans ORDER BY source_line") == [
        {"source_line": 1, "span_id": "414c65e6132e984b", "output_text": "This is a test."},
        {"source_line": 2, "span_id": "518163fb1a2844da", "output_text": None},
        {"source_line": 3, "span_id": "56be8e5937c396b0", "output_text": None},
    ]
    stage_con.execute("DELETE FROM stage_spans")
    _read(stage_con, both)
    assert _counts(stage_con) == (3, 3, 0)
    assert [r["source_line"] for r in _rows(stage_con, "SELECT source_line FROM stage_events ORDER BY 1")] == [1, 2, 3]


def test_single_line_per_test_file(stage_con):
    _read(stage_con, OTEL / "per_test/test_async_chat_completion_404.latest_experimental.traces.jsonl")
    assert _rows(stage_con, "SELECT source_line, status, error_type FROM stage_spans") == [
        {"source_line": 1, "status": "error", "error_type": "NotFoundError"}
    ]


def test_broken_document_is_one_reject(stage_con, tmp_path):
    doc = tmp_path / "broken.json"
    text = json.dumps(_pretty_doc(), indent=2)
    doc.write_text(text[: len(text) // 2])
    _read(stage_con, doc)
    assert _counts(stage_con) == (0, 0, 1)
    (rej,) = _rows(stage_con, "SELECT * FROM stage_rejects")
    assert rej["source_line"] is None and rej["reason"].startswith("invalid JSON document")
    assert rej["raw"].startswith('{\n  "resourceSpans"')


# --- malformed input ----------------------------------------------------------------------------


def _span_line(span_id: str | None, start: str = "1795793707316193365", trace: str = "0123456789abcdef0123456789abcdef") -> str:
    span = {
        "traceId": trace,
        "spanId": span_id,
        "name": "chat x",
        "kind": 3,
        "startTimeUnixNano": start,
        "endTimeUnixNano": "1795793707320138317",
        "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}}],
        "status": {},
    }
    if span_id is None:
        del span["spanId"]
    return json.dumps({"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {"name": "s"}, "spans": [span]}]}]})


def test_malformed_corpus(stage_con, tmp_path, monkeypatch):
    monkeypatch.setattr(otlp, "MAX_LINE_BYTES", 100_000)
    good = LATEST.read_text().splitlines()
    lines = [
        good[0],  # 1 span 5c3b970ea9961576
        good[3][: len(good[3]) // 2],  # 2 truncated
        "this is not json",  # 3
        '{"hello": "world"}',  # 4 valid JSON, not OTLP
        _span_line(None),  # 5 span without spanId
        _span_line("bbbbbbbbbbbbbbbb", start="not-a-number"),  # 6 bad timestamp
        "",  # 7 blank
        "   \t",  # 8 blank
        good[4] + "\r",  # 9 CRLF line, span b674b32885e834ad
        '{"resourceSpans": []}',  # 10 an export without spans
        '{"x": "' + "y" * 300_000 + '"}',  # 11 huge line
        _span_line("cccccccccccccccc", trace=""),  # 12 span without traceId
        good[5],  # 13 span bb857c70476ccae4
    ]
    bad_utf8 = b'{"resourceSpans": "\xff\xfe"}'  # 14
    path = tmp_path / "bad.jsonl"
    path.write_bytes("\n".join(lines).encode() + b"\n" + bad_utf8 + b"\n" + good[6].encode())  # 15, no final newline
    _read(stage_con, path)
    assert _rows(stage_con, "SELECT source_line, span_id FROM stage_spans ORDER BY 1") == [
        {"source_line": 1, "span_id": "5c3b970ea9961576"},
        {"source_line": 9, "span_id": "b674b32885e834ad"},
        {"source_line": 13, "span_id": "bb857c70476ccae4"},
        {"source_line": 15, "span_id": "a79b65f9dbd7cd60"},
    ]
    rejects = _rows(stage_con, "SELECT source_line, reason, raw FROM stage_rejects ORDER BY 1")
    assert [(r["source_line"], r["reason"]) for r in rejects] == [
        (2, "invalid JSON"),
        (3, "invalid JSON"),
        (4, "not an OTLP export: no resourceSpans/resourceLogs"),
        (5, "span without spanId"),
        (6, "unparseable timestamp: startTimeUnixNano=not-a-number"),
        (10, "OTLP export without spans or log records"),
        (11, "line longer than 100000 bytes"),
        (12, "span without traceId"),
        (14, "invalid UTF-8"),
    ]
    raw = {r["source_line"]: r["raw"] for r in rejects}
    assert raw[2] == lines[1] and raw[3] == "this is not json"
    assert json.loads(raw[5])["traceId"] == "0123456789abcdef0123456789abcdef"  # the offending span
    assert len(raw[11]) == RAW_REJECT_CAP and raw[11].startswith('{"x": "yyy')
    assert "\\xFF\\xFE" in raw[14]
    # every non-blank line is accounted for exactly once
    assert sorted({r["source_line"] for r in rejects} | {1, 9, 13, 15}) == [n for n in range(1, 16) if n not in (7, 8)]
    assert _counts(stage_con)[1] == 0


def test_line_splitting_across_small_chunks(stage_con, tmp_path, monkeypatch):
    """Lines straddling chunk ends, and a too-long line cut and skipped, keep exact numbers."""
    monkeypatch.setattr(otlp, "CHUNK_BYTES", 997)
    monkeypatch.setattr(otlp, "MAX_LINE_BYTES", 5_000)
    good = LATEST.read_text().splitlines()[:20]
    path = tmp_path / "chunks.jsonl"
    path.write_text("\n".join(good[:10] + ["\n", '{"x": "' + "z" * 20_000 + '"}'] + good[10:]) + "\n")
    _read(stage_con, path)
    want = {(sp["spanId"], no if no <= 10 else no + 3) for no, sp, _ in _spans_of(LATEST) if no <= 20}
    assert {(r["span_id"], r["source_line"]) for r in _rows(stage_con, "SELECT span_id, source_line FROM stage_spans")} == want
    assert _rows(stage_con, "SELECT source_line, reason FROM stage_rejects") == [
        {"source_line": 13, "reason": "line longer than 5000 bytes"}
    ]


def test_reading_appends_and_keeps_other_rows(stage_con):
    stage_con.execute("INSERT INTO stage_spans (trace_id, span_id, source_format) VALUES ('t', 's', 'other')")
    _read(stage_con, LATEST)
    _read(stage_con, LATEST)
    assert _counts(stage_con) == (145, 0, 0)
    assert _rows(stage_con, "SELECT count(*) AS n FROM stage_spans WHERE source_format = 'other'") == [{"n": 1}]
    assert _rows(stage_con, "SELECT count(*) AS n FROM stage_spans WHERE source_format NOT IN ('otlp', 'other')") == [{"n": 0}]


# --- workflow, release, scores, ids --------------------------------------------------------------


def _kv(key: str, value) -> dict:
    if isinstance(value, dict):
        return {"key": key, "value": value}
    return {"key": key, "value": {"stringValue": value}}


def _export(resource: list, span_attrs: list, span_id: str, trace_id: str = "ab" * 16) -> str:
    span = {
        "traceId": trace_id,
        "spanId": span_id,
        "name": "n",
        "startTimeUnixNano": "1795793707316193365",
        "endTimeUnixNano": "1795793707320138317",
        "attributes": span_attrs,
        "status": {"code": 1},
    }
    return json.dumps({"resourceSpans": [{"resource": {"attributes": resource}, "scopeSpans": [{"scope": {}, "spans": [span]}]}]})


@pytest.fixture
def wf_file(tmp_path) -> Path:
    svc = [_kv("service.name", "checkout"), _kv("service.version", "1.4.2")]
    path = tmp_path / "wf.jsonl"
    path.write_text(
        "\n".join(
            [
                _export(svc, [], "0000000000000001"),
                _export(svc, [_kv("relops.release", "rc-7")], "0000000000000002"),
                _export([_kv("service.name", "unknown_service:python")], [], "0000000000000003"),
                _export([_kv("service.name", "unknown_service:python")], [_kv("relops.workflow", "wf-x")], "0000000000000004"),
                _export([_kv("service.name", "")], [_kv("service.name", "span-svc")], "0000000000000005"),
            ]
        )
    )
    return path


def _wf(con) -> list[tuple]:
    return [tuple(r.values()) for r in _rows(con, "SELECT source_line, workflow, release FROM stage_spans ORDER BY 1")]


def test_workflow_and_release_default_keys(stage_con, wf_file):
    _read(stage_con, wf_file)
    assert _wf(stage_con) == [
        (1, "checkout", "1.4.2"),
        (2, "checkout", "rc-7"),  # relops.release comes first in the default release keys
        (3, None, None),  # unknown_service:python is no workflow
        (4, "wf-x", None),
        (5, "span-svc", None),  # span attributes over resource attributes
    ]
    assert _rows(stage_con, "SELECT DISTINCT status FROM stage_spans") == [{"status": "ok"}]


def test_workflow_and_release_configured_keys(stage_con, wf_file):
    settings = SourceSettings(release_keys=("service.version", "relops.release"), default_workflow="fallback")
    _read(stage_con, wf_file, settings)
    assert _wf(stage_con) == [
        (1, "checkout", "1.4.2"),
        (2, "checkout", "1.4.2"),  # service.version configured first now
        (3, "fallback", None),
        (4, "wf-x", None),
        (5, "span-svc", None),
    ]


def test_online_scores_arrays_and_base64_ids(stage_con, tmp_path):
    attrs = [
        _kv("relops.score.helpfulness", "0.8"),
        _kv("eval.score.toxicity", {"doubleValue": 0.1}),
        _kv("relops.score.note", "not a number"),
        _kv("gen_ai.request.stop_sequences", {"arrayValue": {"values": [{"stringValue": "\n"}, {"stringValue": "END"}]}}),
        _kv("gen_ai.response.finish_reasons", {"arrayValue": {"values": [{"stringValue": "LENGTH"}]}}),
        _kv("gen_ai.usage.input_tokens", {"intValue": 7}),
        _kv("openinference.span.kind", "RETRIEVER"),
    ]
    path = tmp_path / "scores.jsonl"
    # the same ids in base64 (OTLP/protobuf JSON as some exporters write it)
    path.write_text(_export([], attrs, "W7/L9hRGMi0=", trace_id="3bRPpRkIz7CDrUuCLvN2cA=="))
    _read(stage_con, path)
    (row,) = _rows(stage_con, "SELECT * FROM stage_spans")
    assert (row["trace_id"], row["span_id"]) == ("ddb44fa51908cfb083ad4b822ef37670", "5bbfcbf61446322d")
    assert json.loads(row["online_scores"]) == {"helpfulness": 0.8, "toxicity": 0.1}
    assert (row["finish_reason"], row["input_tokens"], row["kind"]) == ("length", 7, "retrieval")
    attributes = json.loads(row["attributes"])
    assert attributes["gen_ai.request.stop_sequences"] == ["\n", "END"]
    assert not any(k.startswith(("relops.score.", "eval.score.")) for k in attributes)


def test_openinference_attributes_over_otlp(stage_con, tmp_path):
    attrs = [
        _kv("openinference.span.kind", "LLM"),
        _kv("llm.model_name", "gpt-4o"),
        _kv("llm.provider", "openai"),
        _kv("llm.token_count.prompt", {"intValue": "31"}),
        _kv("llm.token_count.completion", {"intValue": "9"}),
        _kv("input.value", '{"messages": [{"role": "user", "content": "hi"}]}'),
        _kv("output.value", "hello there"),
    ]
    path = tmp_path / "oi.jsonl"
    path.write_text(_export([_kv("service.name", "rag-bot")], attrs, "00000000000000aa"))
    _read(stage_con, path)
    (row,) = _rows(stage_con, "SELECT * FROM stage_spans")
    assert (row["kind"], row["model"], row["provider"]) == ("llm", "gpt-4o", "openai")
    assert (row["input_tokens"], row["output_tokens"]) == (31, 9)
    assert row["input_text"] == '{"messages": [{"role": "user", "content": "hi"}]}'
    assert row["output_text"] == "hello there"
    assert row["workflow"] == "rag-bot"


def test_non_genai_log_records_and_log_rejects(stage_con, tmp_path):
    rec = {
        "timeUnixNano": "1795793707316193365",
        "severityNumber": 13,
        "severityText": "WARN",
        "body": {"stringValue": "disk almost full"},
        "attributes": [_kv("host", "db-1")],
    }
    bad_time = dict(rec, timeUnixNano="yesterday", body={"stringValue": "late"})

    def logs(*records) -> dict:
        return {"resourceLogs": [{"resource": {}, "scopeLogs": [{"scope": {"name": "app"}, "logRecords": list(records)}]}]}

    both = json.loads(_export([], [], "00000000000000bb"))
    both.update(logs(dict(rec, body={"stringValue": "next to a span"})))
    path = tmp_path / "app.logs.jsonl"
    path.write_text(
        "\n".join(json.dumps(x) for x in (logs(rec), logs(bad_time), {"resourceLogs": [{"scopeLogs": [{"logRecords": []}]}]}, both))
    )
    _read(stage_con, path)
    assert _counts(stage_con) == (1, 2, 2)
    (ev, ev4) = _rows(stage_con, "SELECT * FROM stage_events ORDER BY source_line")
    assert (ev["source_line"], ev["event_name"], ev["role"], ev["trace_id"], ev["content"]) == (1, None, None, None, "disk almost full")
    assert ev["event_time"] == _utc("1795793707316193365")
    assert json.loads(ev["attributes"]) == {
        "host": "db-1",
        "otel.scope.name": "app",
        "log.severity_text": "WARN",
        "log.severity_number": 13,
    }
    assert (ev4["source_line"], ev4["content"]) == (4, "next to a span")
    assert _rows(stage_con, "SELECT source_line, span_id FROM stage_spans") == [{"source_line": 4, "span_id": "00000000000000bb"}]
    rejects = _rows(stage_con, "SELECT source_line, reason, raw FROM stage_rejects ORDER BY 1")
    assert [(r["source_line"], r["reason"]) for r in rejects] == [
        (2, "unparseable timestamp: timeUnixNano=yesterday observedTimeUnixNano="),
        (3, "OTLP export without spans or log records"),
    ]
    assert json.loads(rejects[0]["raw"])["body"] == {"stringValue": "late"}


# --- detection ----------------------------------------------------------------------------------


def test_sniff_claims_only_otlp():
    for path in sorted(FIXTURES.rglob("*")):
        if path.is_file() and path.suffix in (".json", ".jsonl"):
            assert otlp.sniff(path.read_bytes()[:65536], path) == (OTEL in path.parents), path
    assert otlp.sniff(b'\xef\xbb\xbf  {"resourceLogs": [', Path("x.json"))
    assert otlp.sniff(b'{\n  "resourceSpans": [\n', Path("x.json"))
    assert not otlp.sniff(b'[{"resourceSpans": []}]', Path("x.json"))
