"""GenAI messages as clients send them (issue 16, item 2): latest conventions with events only,
finish reasons of streamed calls, one normalised shape (plain text + messages with roles) and
real Unicode, and cost_source `unknown`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relops_pipeline.lib.ingest import ingest_file

OPENAI_V2 = Path(__file__).parent / "fixtures" / "otel_genai_openai_v2"
PER_TEST = OPENAI_V2 / "per_test"
TRACE = "7f11e17cee4f44b72da3a470f3223e11"


def _s(v: str) -> dict:
    return {"stringValue": v}


def _kv(**kw) -> dict:
    return {"kvlistValue": {"values": [{"key": k, "value": v} for k, v in kw.items()]}}


def _arr(*vs) -> dict:
    return {"arrayValue": {"values": list(vs)}}


def _span(span_id: str, attrs: dict, **extra) -> dict:
    span = {
        "traceId": TRACE,
        "spanId": span_id,
        "name": "chat gpt-4o-mini",
        "kind": 3,
        "startTimeUnixNano": "1795793719249724000",
        "endTimeUnixNano": "1795793719349724000",
        "attributes": [{"key": k, "value": v} for k, v in attrs.items()],
    }
    span.update(extra)
    return {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"scope": {"name": "t"}, "spans": [span]}]}]}


def _logs(*records) -> dict:
    return {"resourceLogs": [{"resource": {"attributes": []}, "scopeLogs": [{"scope": {"name": "t"}, "logRecords": list(records)}]}]}


def _write(path: Path, *docs) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def _row(wh, span_id: str) -> dict:
    cur = wh.execute(
        "SELECT input_text, output_text, input_messages, output_messages, finish_reason, cost_source FROM spans WHERE span_id = ?",
        [span_id],
    )
    names = [d[0] for d in cur.description]
    row = cur.fetchone()
    assert row is not None, span_id
    got = dict(zip(names, row, strict=True))
    for k in ("input_messages", "output_messages"):
        got[k] = json.loads(got[k]) if got[k] is not None else None
    return got


# --- 1. latest conventions, events only ----------------------------------------------------------
@pytest.mark.parametrize("logs_first", [True, False])
def test_openai_v2_latest_events_only_details_record_fills_the_span(wh, logs_first):
    """opentelemetry-instrumentation-openai-v2 (latest experimental conventions, events only):
    the messages are in the attributes of a gen_ai.client.inference.operation.details record."""
    logs = PER_TEST / "test_responses_create_event_only_no_content_in_span.logs.jsonl"
    traces = PER_TEST / "test_responses_create_event_only_no_content_in_span.traces.jsonl"
    for f in (logs, traces) if logs_first else (traces, logs):
        ingest_file(wh, f, fmt="otlp")
    got = _row(wh, "c7080a2c01a5b5a1")
    assert got["input_text"] == "You are a helpful assistant.\nSay this is a test"
    assert got["output_text"] == "This is a test."
    assert got["input_messages"] == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Say this is a test"},
    ]
    assert got["output_messages"] == [{"role": "assistant", "content": "This is a test."}]
    assert got["finish_reason"] == "stop"
    # the messages are the event's content, not repeated as raw OTLP in its attributes
    content, attrs = wh.execute("SELECT content, attributes FROM genai_events").fetchone()
    assert json.loads(content)["gen_ai.input.messages"][0]["role"] == "user"
    assert "gen_ai.input.messages" not in json.loads(attrs)


def test_details_record_with_string_messages_and_streamed_finish_reason(wh, tmp_path):
    """A details record whose messages are JSON strings, on a streamed span without
    gen_ai.response.finish_reasons: the finish reason comes from the output messages."""
    out = [{"role": "assistant", "parts": [{"type": "text", "content": "Grüße aus 日本"}], "finish_reason": "length"}]
    inp = [{"role": "user", "parts": [{"type": "text", "content": "Sag ü日本"}]}]
    rec = {
        "timeUnixNano": "1795793719349724000",
        "eventName": "gen_ai.client.inference.operation.details",
        "body": {},
        "traceId": TRACE,
        "spanId": "00000000000000d1",
        "attributes": [
            {"key": "gen_ai.input.messages", "value": _s(json.dumps(inp))},
            {"key": "gen_ai.output.messages", "value": _s(json.dumps(out))},
        ],
    }
    f = _write(tmp_path / "a.jsonl", _span("00000000000000d1", {"gen_ai.operation.name": _s("chat")}), _logs(rec))
    ingest_file(wh, f, fmt="otlp")
    got = _row(wh, "00000000000000d1")
    assert (got["input_text"], got["output_text"], got["finish_reason"]) == ("Sag ü日本", "Grüße aus 日本", "length")
    assert got["input_messages"] == [{"role": "user", "content": "Sag ü日本"}]


# --- 2. finish reason of streamed calls --------------------------------------------------------------
def test_openai_v2_legacy_streamed_finish_reason_from_the_choice_event(wh):
    """Legacy conventions, streamed chat completion: the span has no finish reasons, the
    gen_ai.choice event does."""
    for f in ("test_chat_completion_streaming.legacy_semconv.traces.jsonl", "test_chat_completion_streaming.legacy_semconv.logs.jsonl"):
        ingest_file(wh, PER_TEST / f, fmt="otlp")
    rows = wh.execute("SELECT span_id, finish_reason FROM spans WHERE kind = 'llm'").fetchall()
    assert rows and all(fr == "stop" for _, fr in rows), rows
    sid = rows[0][0]
    got = _row(wh, sid)
    assert got["input_text"] == "Say this is a test"
    assert got["input_messages"] == [{"role": "user", "content": "Say this is a test"}]
    assert got["output_messages"][0]["role"] == "assistant"


def test_streamed_span_finish_reason_from_output_messages(wh, tmp_path):
    out = [{"role": "assistant", "parts": [{"type": "text", "content": "hi"}], "finish_reason": "stop"}]
    attrs = {"gen_ai.operation.name": _s("chat"), "gen_ai.output.messages": _s(json.dumps(out))}
    ingest_file(wh, _write(tmp_path / "s.jsonl", _span("00000000000000f1", attrs)), fmt="otlp")
    assert _row(wh, "00000000000000f1")["finish_reason"] == "stop"


# --- 3. one normalised shape, real Unicode ----------------------------------------------------------
def test_openai_v2_latest_span_messages_normalised(wh):
    ingest_file(wh, OPENAI_V2 / "ALL.latest_experimental.traces.jsonl", fmt="otlp")
    bad = wh.execute(
        "SELECT count(*) FROM spans WHERE input_text LIKE '%\"role\"%' OR input_text LIKE '[{%' OR output_text LIKE '[{%\"parts\"%'"
    ).fetchone()[0]
    # only outputs that are tool calls alone keep their JSON
    tool_only = wh.execute(
        "SELECT count(*) FROM spans WHERE output_text LIKE '[{%\"parts\"%' AND output_text LIKE '%tool_call%' "
        'AND output_text NOT LIKE \'%"type":"text"%\''
    ).fetchone()[0]
    assert bad == tool_only
    # an empty text part is an empty output, not the JSON
    assert wh.execute("SELECT output_text FROM spans WHERE span_id = '1ca9f556893e1a67'").fetchone()[0] == ""
    n = wh.execute("SELECT count(*) FROM spans WHERE input_messages IS NOT NULL").fetchone()[0]
    assert n == wh.execute("SELECT count(*) FROM spans WHERE input_text IS NOT NULL AND kind = 'llm'").fetchone()[0] > 0
    got = _row(wh, "2ab340109de27802")
    assert got["input_text"] == "You are a helpful assistant.\nSay this is a test"
    assert [m["role"] for m in got["input_messages"]] == ["system", "user"]


def test_unicode_escapes_are_decoded_and_searchable(wh, tmp_path):
    inp = [{"role": "user", "parts": [{"type": "text", "content": "Grüße ü日本"}]}]
    attrs = {
        "gen_ai.operation.name": _s("chat"),
        "gen_ai.input.messages": _s(json.dumps(inp)),  # ensure_ascii: \u00fc\u65e5...
        "gen_ai.tool.call.result": _s(json.dumps({"city": "München 日本"})),
    }
    assert "\\u00fc" in json.dumps(inp)
    f = _write(tmp_path / "u.jsonl", _span("00000000000000e1", attrs))
    ingest_file(wh, f, fmt="otlp")
    hits = wh.execute("SELECT span_id, output_text FROM spans WHERE input_text LIKE '%ü日本%'").fetchall()
    assert [h[0] for h in hits] == ["00000000000000e1"]
    assert "\\u" not in hits[0][1] and "München 日本" in hits[0][1]


def test_legacy_events_give_plain_text_and_messages(wh):
    for f in (
        "test_chat_completion_with_content.legacy_semconv.traces.jsonl",
        "test_chat_completion_with_content.legacy_semconv.logs.jsonl",
    ):
        ingest_file(wh, PER_TEST / f, fmt="otlp")
    rows = wh.execute("SELECT span_id FROM spans WHERE kind = 'llm' AND input_text IS NOT NULL").fetchall()
    assert rows
    got = _row(wh, rows[0][0])
    assert '"role"' not in got["input_text"]
    assert got["input_messages"][-1]["role"] == "user"
    assert got["input_text"].endswith(got["input_messages"][-1]["content"])


# --- 4. cost_source ----------------------------------------------------------------------------------
def test_cost_source_unknown_when_neither_reported_nor_computed(wh, tmp_path):
    attrs = {"gen_ai.operation.name": _s("chat"), "gen_ai.request.model": _s("mystery-model-xyz")}
    ingest_file(wh, _write(tmp_path / "c.jsonl", _span("00000000000000c1", attrs)), fmt="otlp")
    assert _row(wh, "00000000000000c1")["cost_source"] == "unknown"
    assert wh.execute("SELECT count(*) FROM spans WHERE cost_source IS NULL").fetchone()[0] == 0


# --- 5. OpenInference --------------------------------------------------------------------------------
OPENINFERENCE = Path(__file__).parent / "fixtures" / "openinference"


def _otlp_value(v) -> dict:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    return _s(str(v))


def test_openinference_messages_preferred_over_request_json(wh, tmp_path):
    """OpenInference (openai instrumentation): input_text / output_text are the flattened
    llm.input_messages / llm.output_messages, not the request/response JSON of input.value."""
    attrs = json.loads((OPENINFERENCE / "genai-openinference_client_span_tool_calls.json").read_text())
    span = _span("00000000000000a1", {k: _otlp_value(v) for k, v in attrs.items()})
    ingest_file(wh, _write(tmp_path / "oi.jsonl", span), fmt="otlp")
    got = _row(wh, "00000000000000a1")
    assert got["input_text"] == "Weather in Paris?\nAbsolutely! Let me check the weather for you.\nrainy, 57°F"
    assert got["input_messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Absolutely! Let me check the weather for you."},
        {"role": "tool", "content": "rainy, 57°F"},
    ]
    assert got["output_text"] == "The weather in Paris is currently rainy with a temperature of 57°F."
    assert got["output_messages"] == [{"role": "assistant", "content": got["output_text"]}]


def test_openinference_error_span_model_from_invocation_parameters(wh, tmp_path):
    attrs = {
        "openinference.span.kind": _s("LLM"),
        "llm.invocation_parameters": _s(json.dumps({"model": "gpt-4o-mini", "temperature": 0})),
        "llm.input_messages.0.message.role": _s("user"),
        "llm.input_messages.0.message.content": _s("hi"),
    }
    span = _span("00000000000000a2", attrs, status={"code": 2, "message": "boom"})
    ingest_file(wh, _write(tmp_path / "oe.jsonl", span), fmt="otlp")
    model, status, inp = wh.execute("SELECT model, status, input_text FROM spans WHERE span_id = '00000000000000a2'").fetchone()
    assert (model, status, inp) == ("gpt-4o-mini", "error", "hi")


def test_huge_messages_are_capped_with_their_roles_and_flagged(wh, tmp_path):
    """The message columns are bounded like the text columns: a 40,000-character prompt keeps
    every message and role, its contents cut to a share of text_cap, and the span says so."""
    from relops_pipeline.lib.settings import IngestSettings

    msgs = [{"role": "system", "parts": [{"type": "text", "content": "s" * 20_000}]},
            {"role": "user", "parts": [{"type": "text", "content": "ü" * 20_000}]}]
    out = [{"role": "assistant", "parts": [{"type": "text", "content": "short answer"}], "finish_reason": "stop"}]
    path = _write(tmp_path / "big.jsonl", _span("00000000000000b1", {
        "gen_ai.operation.name": _s("chat"),
        "gen_ai.input.messages": _s(json.dumps(msgs)),
        "gen_ai.output.messages": _s(json.dumps(out)),
    }))
    assert ingest_file(wh, path, settings=IngestSettings(text_cap=1000)).accepted == 1
    row = wh.execute(
        "SELECT input_messages, output_messages, input_truncated, output_truncated, length(input_text) FROM spans"
    ).fetchone()
    kept = json.loads(row[0])
    assert [m["role"] for m in kept] == ["system", "user"]
    assert [m["content"] for m in kept] == ["s" * 500, "ü" * 500]
    assert json.loads(row[1]) == [{"role": "assistant", "content": "short answer"}]
    assert row[2:] == (True, False, 1000)
