"""Readers of document formats (Langfuse, LangSmith, DeepEval, OTel-JS, OTel attribute maps)
and of relops' own JSONL and Parquet, on the real fixtures and on hand-made malformed input.

Expected values were read from the fixture files themselves (see each folder's PROVENANCE.md).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from relops_pipeline.lib.readers import (
    deepeval,
    detect_format,
    langfuse,
    langsmith,
    otel_attributes,
    reader_for,
    relops_jsonl,
    relops_parquet,
    vercel,
)
from relops_pipeline.lib.readers.base import ReadContext, SourceSettings, UnreadableInput
from relops_pipeline.lib.schema import create_stage_tables_sql
from relops_pipeline_tests.conftest import FIXTURES

LANGFUSE = FIXTURES / "langfuse"
LANGSMITH = FIXTURES / "langsmith"
DEEPEVAL = FIXTURES / "deepeval"
OPENINFERENCE = FIXTURES / "openinference"


def read(path: Path, module=None, settings: SourceSettings | None = None) -> tuple[list[dict], list[dict]]:
    """(spans, rejects) a reader stages for one file, as dicts (JSON columns decoded)."""
    module = module or reader_for(detect_format(path))
    con = duckdb.connect()
    try:
        con.execute(create_stage_tables_sql())
        module.read(con, ReadContext(path=path, settings=settings or SourceSettings()))
        out = []
        for table in ("stage_spans", "stage_rejects"):
            cur = con.execute(f"SELECT * FROM {table} ORDER BY source_line NULLS FIRST")
            names = [d[0] for d in cur.description]
            rows = [dict(zip(names, r, strict=False)) for r in cur.fetchall()]
            for row in rows:
                for key in ("attributes", "online_scores", "input_messages", "output_messages"):
                    if isinstance(row.get(key), str):
                        row[key] = json.loads(row[key])
            out.append(rows)
        return out[0], out[1]
    finally:
        con.close()


def one(spans: list[dict], **match) -> dict:
    found = [s for s in spans if all(s.get(k) == v for k, v in match.items())]
    assert len(found) == 1, f"{len(found)} spans match {match}"
    return found[0]


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------

NOT_TRACES = ("LICENSE", "PROVENANCE.md", "_manifest.jsonl", "spec-")


def _expected_format(path: Path) -> str | None:
    if path.name.startswith(NOT_TRACES):
        return None
    folder = path.parent.name
    if folder == "openinference":
        return "otel-js" if path.name.startswith("vercel-") else "otel-attributes"
    return folder


@pytest.mark.parametrize("folder", ["langfuse", "langsmith", "deepeval", "openinference"])
def test_detect_format_for_every_fixture_file(folder):
    files = sorted(p for p in (FIXTURES / folder).iterdir() if p.is_file())
    seen = Counter()
    for path in files:
        expected = _expected_format(path)
        if expected is None:
            with pytest.raises(UnreadableInput):
                detect_format(path)
            seen["not traces"] += 1
        else:
            assert detect_format(path) == expected, path.name
            seen[expected] += 1
    assert dict(seen) == {
        "langfuse": {"langfuse": 23, "not traces": 3},
        "langsmith": {"langsmith": 7, "not traces": 3},
        "deepeval": {"deepeval": 32, "not traces": 3},
        "openinference": {"otel-js": 11, "otel-attributes": 5, "not traces": 6},
    }[folder]


def test_document_sniffers_leave_other_formats_alone():
    """No document sniffer claims an OTLP, promptfoo, Inspect or eval-dataset file."""
    mine = (langfuse, langsmith, deepeval, vercel, otel_attributes, relops_jsonl, relops_parquet)
    others = [p for d in ("otel_genai_openai_v2", "promptfoo", "inspect_ai", "eval_datasets")
              for p in sorted((FIXTURES / d).rglob("*")) if p.is_file()]
    assert len(others) > 100
    for path in others:
        head = path.read_bytes()[: 64 * 1024]
        claimed = [m.FORMAT for m in mine if m.sniff(head, path)]
        assert claimed == [], f"{path.name} claimed by {claimed}"


def test_each_document_sniffer_claims_only_its_own_files():
    samples = {
        "langfuse": LANGFUSE / "autogen-2025-06-06.trace.json",
        "langsmith": LANGSMITH / "langsmith_js_wrap_openai_default.json",
        "deepeval": DEEPEVAL / "test_run_sample.json",
        "otel-js": OPENINFERENCE / "vercel-v6-spans-by-operation.json",
        "otel-attributes": OPENINFERENCE / "genai-otel_genai_tool_execution_span.json",
    }
    for fmt, path in samples.items():
        head = path.read_bytes()[: 64 * 1024]
        claimed = [m.FORMAT for m in (langfuse, langsmith, deepeval, vercel, otel_attributes, relops_jsonl, relops_parquet)
                   if m.sniff(head, path)]
        assert claimed == [fmt], path.name


# --------------------------------------------------------------------------------------------
# Langfuse
# --------------------------------------------------------------------------------------------

LANGFUSE_COUNTS = {
    "agno-2025-06-11.trace.json": 6, "autogen-2025-06-06.trace.json": 2, "beeai-2025-08-01.trace.json": 29,
    "claude-agent-2025-12-22.trace.json": 7, "crewai-2025-07-11.trace.json": 6,
    "csharp-agent-with-gemini-2026-03-09.trace.json": 8, "google-adk-2025-08-28.trace.json": 5,
    "google-gemini-2025-08-01.trace.json": 1, "koog-2025-08-26.trace.json": 11,
    "langgraph-js-2025-10-30.trace.json": 20, "langgraph-python-2025-08-22.trace.json": 9,
    "llamaindex-2025-06-05.trace.json": 2, "microsoft-agent-2025-12-17.trace.json": 4,
    "openai-agents-2025-09-30.trace.json": 5, "pydantic-ai-2025-06-06.trace.json": 3,
    "pydantic-ai-tools-2025-06-06.trace.json": 3, "pydantic-ai-tools-2025-12-04.trace.json": 12,
    "pydantic-ai-with-gemini-2025-12-24.trace.json": 1, "seeder-google-vertex-tools-langchain-2025-09-19.json": 1,
    "seeder-microsoft-agent-2025-10-14.json": 4, "seeder-openai-assistants-2024-05-29.json": 4,
    "vercel-aisdk-2025-11-17.trace.json": 3, "vertex-ai-2025-08-01.trace.json": 1,
}


def test_langfuse_every_file_reads_every_observation():
    files = sorted(p for p in LANGFUSE.glob("*.json"))
    counts, traces, total_rejects = {}, set(), 0
    for path in files:
        spans, rejects = read(path, langfuse)
        counts[path.name] = len(spans)
        total_rejects += len(rejects)
        traces |= {s["trace_id"] for s in spans}
        assert all(s["source_format"] == "langfuse" and s["span_id"] and s["trace_id"] for s in spans)
        assert [s["source_line"] for s in spans] == list(range(1, len(spans) + 1))
    assert counts == LANGFUSE_COUNTS
    assert sum(counts.values()) == 147 and total_rejects == 0
    # 23 exports but 22 traces: the two pydantic-ai-*-2025-06-06 files are the same trace.
    assert len(files) == 23 and len(traces) == 22


def test_langfuse_generation_fields_and_latency_in_seconds():
    spans, _ = read(LANGFUSE / "autogen-2025-06-06.trace.json", langfuse)
    gen = one(spans, span_name="chat gpt-4o")
    assert gen["kind"] == "llm" and gen["model"] == "gpt-4o"
    assert (gen["input_tokens"], gen["output_tokens"]) == (41, 3)
    assert gen["latency_ms"] == pytest.approx(628.0)  # observation.latency 0.628 (seconds)
    assert gen["start_time"] == datetime(2025, 6, 6, 11, 31, 33, 978000)
    assert gen["parent_span_id"] == "95f4f51edeb603d9"
    assert gen["cost_usd"] == pytest.approx(2.5e-05)
    assert gen["output_text"] == "Hello World!"
    assert gen["status"] == "unset"
    # service.name is the SDK placeholder "unknown_service": the trace name is the workflow.
    assert gen["workflow"] == "autogen-chat-trace" and gen["release"] == "1.0.0"
    root = one(spans, span_name="autogen-chat-trace")
    assert root["kind"] == "other" and root["parent_span_id"] is None
    assert root["input_text"] == "Say 'Hello World!'"  # the trace's input, given to its only root


def test_langfuse_latency_reported_in_milliseconds_is_detected():
    spans, _ = read(LANGFUSE / "pydantic-ai-tools-2025-12-04.trace.json", langfuse)
    root = one(spans, span_name="run_joke_generator")
    # observation.latency is 7424 here (end - start = 7.424 s): milliseconds, not seconds.
    assert root["latency_ms"] == pytest.approx(7424.0)
    assert root["attributes"]["langfuse.latency_unit"] == "ms"
    assert (root["end_time"] - root["start_time"]).total_seconds() == pytest.approx(7.424)
    chat = [s for s in spans if s["kind"] == "llm"]
    assert len(chat) == 4 and {s["model"] for s in chat} == {"gpt-4o-mini-2024-07-18"}
    assert Counter(s["finish_reason"] for s in chat) == {"stop": 2, "tool_call": 2}


def test_langfuse_otel_metadata_gives_provider_finish_reason_workflow_release():
    spans, _ = read(LANGFUSE / "csharp-agent-with-gemini-2026-03-09.trace.json", langfuse)
    chats = [s for s in spans if s["span_name"] == "chat gemini-2.5-flash"]
    assert len(chats) == 3
    first = one(spans, source_line=1)
    assert (first["input_tokens"], first["output_tokens"]) == (3004, 167)
    assert first["provider"] == "gcp.vertex_ai" and first["finish_reason"] == "stop"
    assert {s["workflow"] for s in spans} == {"agentic-clientinsights"}  # resource service.name
    assert {s["release"] for s in spans} == {"105537"}  # resource service.version
    assert first["attributes"]["service.name"] == "agentic-clientinsights"
    assert Counter(s["kind"] for s in spans) == {"llm": 3, "agent": 3, "tool": 2}


def test_langfuse_kinds_scores_and_gemini_finish_enum():
    spans, _ = read(LANGFUSE / "google-adk-2025-08-28.trace.json", langfuse)
    assert Counter(s["kind"] for s in spans) == {"llm": 2, "agent": 2, "tool": 1}  # CHAIN, AGENT -> agent
    root = one(spans, span_name="invocation [hello_app]")
    assert root["online_scores"] == {"toxicity": 0.0, "hallucination": 0.0}  # trace scores -> root
    assert one(spans, span_name="execute_tool say_hello")["online_scores"] is None
    spans, _ = read(LANGFUSE / "beeai-2025-08-01.trace.json", langfuse)
    assert one(spans, span_name="beeai-framework-main")["online_scores"] == {"hallucination": 0.2, "toxicity": 0.0}
    spans, _ = read(LANGFUSE / "vertex-ai-2025-08-01.trace.json", langfuse)
    assert spans[0]["finish_reason"] == "stop"  # candidates[0].finish_reason = 1 (STOP)
    assert spans[0]["output_tokens"] == 845


def test_langfuse_error_level_feedback_score_and_trace_without_observations(tmp_path):
    export = [
        {
            "trace": {"id": "t-1", "name": "support-triage", "release": "r7", "scores": [
                {"name": "user-feedback", "value": 1, "dataType": "NUMERIC", "observationId": "o-2"},
                {"name": "tone", "stringValue": "polite", "dataType": "CATEGORICAL", "observationId": None},
            ]},
            "observations": [
                {"id": "o-1", "traceId": "t-1", "type": "SPAN", "name": "agent run", "level": "DEFAULT",
                 "startTime": "2026-01-01T00:00:00.000Z", "endTime": "2026-01-01T00:00:02.000Z", "latency": 2.0},
                {"id": "o-2", "traceId": "t-1", "parentObservationId": "o-1", "type": "GENERATION",
                 "name": "chat", "level": "ERROR", "statusMessage": "openai.APITimeoutError: Request timed out.",
                 "model": "gpt-4o-mini", "usageDetails": {"input": "12", "output": 0},
                 "startTime": "2026-01-01T00:00:00.500Z", "endTime": "2026-01-01T00:00:01.500Z",
                 "metadata": "{\"attributes\": {\"gen_ai.system\": \"openai\"}}"},
                {"traceId": "t-1", "type": "EVENT", "name": "no id"},
                "not an object",
            ],
        },
        {"trace": {"id": "t-2", "name": "bare", "timestamp": "2026-01-01T00:00:00Z", "latency": 1.5,
                   "input": "hi", "output": "hello"}, "observations": []},
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    spans, rejects = read(path, langfuse)
    err = one(spans, span_id="o-2")
    assert err["status"] == "error" and err["error_type"] == "openai.APITimeoutError"
    assert err["input_tokens"] == 12 and err["provider"] == "openai"
    assert err["feedback_score"] == 1.0 and err["online_scores"] == {"user-feedback": 1.0}
    assert err["release"] == "r7" and err["workflow"] == "support-triage"
    assert err["latency_ms"] == pytest.approx(1000.0)  # no observation.latency: from the timestamps
    root = one(spans, span_id="o-1")
    assert root["kind"] == "agent" and root["attributes"]["langfuse.score.tone"] == "polite"
    bare = one(spans, trace_id="t-2")
    assert bare["span_id"] == "t-2" and bare["kind"] == "agent" and bare["latency_ms"] == pytest.approx(1500.0)
    assert (bare["input_text"], bare["output_text"]) == ("hi", "hello")
    assert [(r["source_line"], r["reason"]) for r in rejects] == [
        (3, "observation without id"), (4, "observation is a str, not an object")]


# --------------------------------------------------------------------------------------------
# LangSmith
# --------------------------------------------------------------------------------------------


def test_langsmith_every_payload_is_one_run():
    files = sorted(LANGSMITH.glob("langsmith_*.json"))
    assert len(files) == 7
    for path in files:
        spans, rejects = read(path, langsmith)
        assert len(spans) == 1 and rejects == [], path.name
        span = spans[0]
        assert span["kind"] == "llm" and span["status"] == "ok" and span["span_name"] == "ChatOpenAI"
        assert span["trace_id"] == span["span_id"] and span["parent_span_id"] is None
        assert span["workflow"] == "default" and span["provider"] == "openai"
        assert span["finish_reason"] == "stop"
        assert span["end_time"] > span["start_time"]


def test_langsmith_js_epoch_ms_and_patch_without_id():
    spans, _ = read(LANGSMITH / "langsmith_js_wrap_openai_default.json", langsmith)
    s = spans[0]
    assert s["span_id"] == "dc34609e-3eeb-459d-bc2a-6fedb01d2e6e"
    assert s["start_time"] == datetime(2024, 10, 13, 7, 5, 37, 170000)  # 1728803137170 ms
    assert (s["end_time"] - s["start_time"]).total_seconds() * 1000 == pytest.approx(1115.0)
    assert s["model"] == "gpt-4o-mini-2024-07-18"  # the response's model (ls_model_name: gpt-4o-mini)
    assert (s["input_tokens"], s["output_tokens"]) == (9, 9)  # from the patch (merged by dotted_order)
    assert s["output_text"] == "Howdy! How can I assist you today?"
    assert s["input_text"] == "howdy"  # the plain text of the messages, the roles in input_messages
    assert s["input_messages"] == [{"role": "user", "content": "howdy"}]
    assert s["output_messages"] == [{"role": "assistant", "content": "Howdy! How can I assist you today?"}]
    assert s["release"] is None  # the JS captures carry no revision_id


def test_langsmith_python_release_reasoning_and_streams():
    spans, _ = read(LANGSMITH / "langsmith_py_wrap_openai_reasoning.json", langsmith)
    s = spans[0]
    assert s["release"] == "v0.1.82-381-g03d9e1a-dirty"  # extra.metadata.revision_id
    assert (s["model"], s["input_tokens"], s["output_tokens"]) == ("o1-mini-2024-09-12", 43, 2497)
    assert s["attributes"]["ls_model_name"] == "o1-mini"
    # JS stream: choices[0].finish_reason is the whole final chunk, an object.
    assert read(LANGSMITH / "langsmith_js_wrap_openai_stream.json", langsmith)[0][0]["finish_reason"] == "stop"
    no_usage = read(LANGSMITH / "langsmith_py_wrap_openai_stream_no_usage.json", langsmith)[0][0]
    assert (no_usage["input_tokens"], no_usage["output_tokens"]) == (None, None)
    stream = read(LANGSMITH / "langsmith_py_wrap_openai_stream.json", langsmith)[0][0]
    assert stream["attributes"]["langsmith.events"] == 12
    assert stream["attributes"]["langsmith.time_to_first_token_ms"] > 0


def test_langsmith_error_child_runs_and_orphan_patch(tmp_path):
    payload = {
        "post": [
            {"id": "r1", "trace_id": "r1", "dotted_order": "20260101T000000000000Zr1", "name": "pipeline",
             "run_type": "chain", "start_time": "2026-01-01T00:00:00+00:00", "session_name": "support-triage",
             "child_runs": [{"id": "r2", "trace_id": "r1", "dotted_order": "20260101T000000000000Zr1.20260101T000000100000Zr2",
                             "name": "search", "run_type": "retriever", "start_time": "2026-01-01T00:00:00.1+00:00"}]},
            {"name": "no ids"},
        ],
        "patch": [
            {"id": "r1", "trace_id": "r1", "end_time": "2026-01-01T00:00:03+00:00",
             "error": "ValueError('boom')\n\nTraceback (most recent call last): ..."},
            {"id": "r9", "trace_id": "r9", "end_time": "2026-01-01T00:00:03+00:00"},
        ],
    }
    path = tmp_path / "payload.json"
    path.write_text(json.dumps(payload))
    spans, rejects = read(path, langsmith)
    r1, r2 = one(spans, span_id="r1"), one(spans, span_id="r2")
    assert r1["status"] == "error" and r1["error_type"] == "ValueError" and r1["kind"] == "agent"
    assert r1["workflow"] == "support-triage"
    assert r2["kind"] == "retrieval" and r2["parent_span_id"] == "r1" and r2["status"] == "unset"
    assert [(r["source_line"], r["reason"]) for r in rejects] == [
        (3, "run without id (and no dotted_order)"),
        (5, "patch for run r9 has no matching post in this payload"),
    ]


# --------------------------------------------------------------------------------------------
# DeepEval
# --------------------------------------------------------------------------------------------


def _deepeval_span_count(path: Path) -> int:
    doc = json.loads(path.read_text())
    return sum(len(doc.get(g) or []) for g in deepeval.SPAN_GROUPS)


def test_deepeval_every_trace_file_reads_every_span():
    files = sorted(p for p in DEEPEVAL.glob("test_*.json") if p.name != "test_run_sample.json")
    total, traces = 0, set()
    for path in files:
        spans, rejects = read(path, deepeval)
        assert rejects == [] and len(spans) == _deepeval_span_count(path), path.name
        assert len({s["trace_id"] for s in spans}) == 1
        total += len(spans)
        traces |= {s["trace_id"] for s in spans}
    assert len(files) == 31 and len(traces) == 31 and total == 129


def test_deepeval_llm_span_prompt_release_and_tokens():
    spans, _ = read(DEEPEVAL / "test_openai__test_sync_openai_with_trace.json", deepeval)
    (s,) = spans
    assert s["trace_id"] == "59810b66-fe8e-407e-a368-bf60002d9dee"
    assert (s["kind"], s["model"], s["provider"]) == ("llm", "gpt-4o", "OpenAI")
    assert (s["input_tokens"], s["output_tokens"]) == (13, 28)  # 13.0 / 28.0 in the file
    assert s["workflow"] == "test_name_1" and s["release"] == "asd@00.00.01"
    assert s["attributes"]["deepeval.promptCommitHash"] == "bab04ec"
    assert s["status"] == "ok" and s["input_text"] == '[{"role":"user","content":"Hello, how are you?"}]'
    spans, _ = read(DEEPEVAL / "test_langchain__schemas__langchain_single_tool_schema.json", deepeval)
    assert Counter(s["kind"] for s in spans) == {"agent": 1, "llm": 2, "tool": 1}
    agent = one(spans, kind="agent")
    assert {s["parent_span_id"] for s in spans if s["kind"] != "agent"} == {agent["span_id"]}
    assert one(spans, kind="tool")["output_text"] == "Foggy, 58F"


def test_deepeval_test_run_sample_maps_its_trace():
    spans, rejects = read(DEEPEVAL / "test_run_sample.json", deepeval)
    assert rejects == [] and len(spans) == 9
    assert {s["trace_id"] for s in spans} == {"abf91011-1111-4111-8111-111111111111"}
    assert Counter(s["kind"] for s in spans) == {"llm": 4, "agent": 2, "other": 1, "retrieval": 1, "tool": 1}
    failed = one(spans, span_name="synthesize_answer")
    assert failed["status"] == "error" and failed["error_type"] == "openai.RateLimitError"
    root = one(spans, span_id="020e0001-0000-0000-0000-00000000a001")
    assert root["status"] == "error" and root["parent_span_id"] is None
    assert root["online_scores"] == {"Answer Relevancy": 0.92, "Faithfulness": 0.45}  # trace metricsData
    rerank = one(spans, span_name="rerank_chunks")
    assert rerank["online_scores"] == {"Faithfulness": 0.91}
    assert rerank["cost_usd"] == pytest.approx(1200 * 1.5e-07 + 48 * 6e-07)
    assert rerank["output_text"] == "Top chunks: chunk_a, chunk_b, chunk_c"
    assert rerank["parent_span_id"] == "020e0001-0000-0000-0000-0000000000r1"
    assert {s["workflow"] for s in spans} == {"orchestrate_research_response"}


def test_deepeval_test_case_without_trace_is_rejected(tmp_path):
    run = {"testCases": [{"name": "only-metrics", "input": "q", "metricsData": [{"name": "x", "score": 1}]}],
           "conversationalTestCases": []}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run))
    spans, rejects = read(path, deepeval)
    assert spans == [] and len(rejects) == 1
    assert rejects[0]["source_line"] == 1 and "without a trace" in rejects[0]["reason"]


# --------------------------------------------------------------------------------------------
# OTel-JS (Vercel AI SDK) and flat attribute maps
# --------------------------------------------------------------------------------------------

VERCEL_COUNTS = {
    "vercel-v6-ai-embed-doEmbed.json": (1, 0), "vercel-v6-ai-embed.json": (1, 0),
    "vercel-v6-ai-generateObject-doGenerate.json": (1, 0), "vercel-v6-ai-generateObject.json": (1, 0),
    "vercel-v6-ai-generateText-doGenerate.json": (2, 0), "vercel-v6-ai-generateText.json": (2, 0),
    "vercel-v6-ai-streamText-doStream.json": (1, 0), "vercel-v6-ai-streamText.json": (1, 0),
    "vercel-v6-all-spans.json": (10, 0), "vercel-v6-capture-results.json": (0, 1),
    "vercel-v6-spans-by-operation.json": (10, 0),
}


def test_vercel_files_spans_and_wrappers():
    counts = {}
    for path in sorted(OPENINFERENCE.glob("vercel-*.json")):
        spans, rejects = read(path, vercel)
        counts[path.name] = (len(spans), len(rejects))
    assert counts == VERCEL_COUNTS
    _, rejects = read(OPENINFERENCE / "vercel-v6-capture-results.json", vercel)
    assert "no OTel-JS span" in rejects[0]["reason"]
    all_ids = {s["span_id"] for s in read(OPENINFERENCE / "vercel-v6-all-spans.json", vercel)[0]}
    by_op = {s["span_id"] for s in read(OPENINFERENCE / "vercel-v6-spans-by-operation.json", vercel)[0]}
    assert len(all_ids) == 10 and by_op == all_ids


def test_vercel_generate_text_fields():
    spans, _ = read(OPENINFERENCE / "vercel-v6-ai-generateText-doGenerate.json", vercel)
    s = one(spans, span_id="39d6e9b3ddec9996")
    assert s["trace_id"] == "b3e700af9eab81e19f72f964d62a35af"
    assert (s["kind"], s["model"], s["provider"]) == ("llm", "gpt-4o-mini-2024-07-18", "openai.responses")
    assert (s["input_tokens"], s["output_tokens"], s["finish_reason"]) == (14, 20, "stop")
    assert s["workflow"] == "test-generate-text"  # ai.telemetry.functionId
    assert s["start_time"] == datetime(2026, 2, 3, 15, 19, 52, 242000)  # [1770131992, 242000000]
    # ai.response.text / ai.prompt.messages are JSON-encoded twice in this capture.
    assert s["output_text"].startswith("Lines of code align,")
    assert json.loads(s["input_text"])[0]["role"] == "user"
    assert s["status"] == "unset" and s["parent_span_id"] is None
    parent = read(OPENINFERENCE / "vercel-v6-ai-generateText.json", vercel)[0][0]
    assert parent["kind"] == "agent" and parent["model"] == "gpt-4o-mini"
    embed = read(OPENINFERENCE / "vercel-v6-ai-embed.json", vercel)[0][0]
    assert embed["input_tokens"] == 10 and "omitted by relops" in embed["attributes"]["ai.embedding"]


def test_vercel_malformed_spans_are_rejected_with_their_path(tmp_path):
    doc = {"spans": [
        {"name": "ok", "spanContext": {"traceId": "a" * 32, "spanId": "b" * 16}, "attributes": {},
         "status": {"code": 2, "message": "boom"}, "startTime": [1770131992, 0], "endTime": [1770131993, 0]},
        {"name": "no span id", "spanContext": {"traceId": "a" * 32}, "attributes": {}},
        {"name": "not a span"},
    ], "note": "hello"}
    path = tmp_path / "spans.json"
    path.write_text(json.dumps(doc))
    spans, rejects = read(path, vercel)
    assert len(spans) == 1 and spans[0]["status"] == "error" and spans[0]["error_type"] == "boom"
    assert [(r["source_line"], r["reason"]) for r in rejects] == [
        (2, "$.spans[1]: span without spanContext.spanId"),
        (3, "$.spans[2]: not an OTel-JS span (no spanContext)"),
        (4, "$.note: not an OTel-JS span (no spanContext)"),
    ]


def test_otel_attribute_maps_with_synthetic_ids():
    counts = {}
    for path in sorted(OPENINFERENCE.glob("genai-*.json")):
        spans, rejects = read(path, otel_attributes)
        counts[path.name] = len(spans)
        assert rejects == []
        s = spans[0]
        assert s["attributes"]["relops.synthetic_ids"] is True
        assert len(s["trace_id"]) == 32 and len(s["span_id"]) == 16
        assert s["start_time"] is not None and s["attributes"]["relops.time_source"] == "file_mtime"
    assert sum(counts.values()) == 5
    spans, _ = read(OPENINFERENCE / "genai-openinference_client_span_tool_calls.json", otel_attributes)
    s = spans[0]
    messages = s["input_messages"]  # rebuilt from llm.input_messages.N.message.*
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    # input_text is the messages' plain text (issue 16: one shape for every source)
    assert s["input_text"] == "Weather in Paris?\nAbsolutely! Let me check the weather for you.\nrainy, 57°F"
    assert messages[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert s["output_text"] == "The weather in Paris is currently rainy with a temperature of 57°F."
    assert (s["kind"], s["model"], s["input_tokens"], s["output_tokens"]) == ("llm", "gpt-4-0613", 97, 52)
    assert s["finish_reason"] == "stop"  # from output.value
    assert not any(k.startswith("llm.input_messages.") for k in s["attributes"])
    genai = read(OPENINFERENCE / "genai-otel_genai_client_span_tool_calls.json", otel_attributes)[0][0]
    assert genai["span_name"] == "chat gpt-4" and genai["provider"] == "openai"
    assert genai["output_text"] == "The weather in Paris is currently rainy with a temperature of 57°F."
    tool = read(OPENINFERENCE / "genai-otel_genai_tool_execution_span.json", otel_attributes)[0][0]
    assert tool["kind"] == "tool" and tool["span_name"] == "execute_tool get_weather"


# --------------------------------------------------------------------------------------------
# Every reader: stable ids, malformed input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module, path",
    [
        (langfuse, LANGFUSE / "koog-2025-08-26.trace.json"),
        (langsmith, LANGSMITH / "langsmith_py_wrap_openai_.json"),
        (deepeval, DEEPEVAL / "test_llamaindex__schemas__llama_index_rag_python_schema.json"),
        (vercel, OPENINFERENCE / "vercel-v6-all-spans.json"),
        (otel_attributes, OPENINFERENCE / "genai-openinference_client_span_input_output_only.json"),
    ],
    ids=lambda v: getattr(v, "FORMAT", None) or v.name,
)
def test_reading_twice_gives_identical_rows(module, path):
    first, second = read(path, module), read(path, module)
    assert first == second
    assert len({(s["trace_id"], s["span_id"]) for s in first[0]}) == len(first[0])


@pytest.mark.parametrize("module", [langfuse, langsmith, deepeval, vercel, otel_attributes],
                         ids=lambda m: m.FORMAT)
def test_truncated_json_is_one_whole_file_reject(module, tmp_path):
    source = {
        "langfuse": LANGFUSE / "autogen-2025-06-06.trace.json",
        "langsmith": LANGSMITH / "langsmith_js_wrap_openai_default.json",
        "deepeval": DEEPEVAL / "test_strands__schemas__strands_tool_schema.json",
        "otel-js": OPENINFERENCE / "vercel-v6-ai-generateText.json",
        "otel-attributes": OPENINFERENCE / "genai-otel_genai_client_span_tool_calls.json",
    }[module.FORMAT]
    path = tmp_path / "truncated.json"
    path.write_bytes(source.read_bytes()[:700])
    spans, rejects = read(path, module)
    assert spans == [] and len(rejects) == 1
    assert rejects[0]["source_line"] is None and "invalid JSON (line" in rejects[0]["reason"]


@pytest.mark.parametrize(
    "module, doc",
    [
        (langfuse, {"foo": 1}),
        (langsmith, {"runs": []}),
        (langsmith, {"post": {"id": "x"}}),
        (deepeval, {"uuid": "x"}),
        (vercel, "a string"),
        (otel_attributes, {"trace": {"id": 1}}),
    ],
    ids=lambda v: getattr(v, "FORMAT", None) or json.dumps(v)[:20],
)
def test_wrong_shape_is_unreadable_input(module, doc, tmp_path):
    path = tmp_path / "wrong.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(UnreadableInput):
        read(path, module)


def test_missing_file_is_unreadable_input(tmp_path):
    for module in (langfuse, langsmith, deepeval, vercel, otel_attributes, relops_jsonl):
        with pytest.raises(UnreadableInput):
            read(tmp_path / "nope.json", module)


def test_not_utf8_is_a_reject_not_a_crash(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes('{"trace": {"id": "caf\u00e9"}}'.encode("latin-1"))
    spans, rejects = read(path, langfuse)
    assert spans == [] and "not valid UTF-8" in rejects[0]["reason"]


# --------------------------------------------------------------------------------------------
# relops JSONL and Parquet
# --------------------------------------------------------------------------------------------

JSONL_LINES = [
    '{"trace_id": "t1", "span_id": "s1", "kind": "LLM", "workflow": "support-triage", "release": "v3", '
    '"model": "gpt-4o-mini", "start_time": "2025-06-01T12:00:00.120Z", "end_time": "2025-06-01T14:00:01.570+02:00", '
    '"input_tokens": "412", "output_tokens": 96.0, "status": "OK", "input_text": [{"role": "user", "content": "hi"}], '
    '"output_text": "yo", "online_scores": {"relevance": 0.5}, "attributes": {"tenant": "acme"}, "custom.key": 5, '
    '"source_format": "langfuse"}',
    "",
    '{"trace_id": "t1", "span_id": "s2", "parent_span_id": "s1", "start_time": 1748779200123, '
    '"end_time": "1748779201", "attributes": "{\\"service.name\\": \\"svc\\", \\"service.version\\": \\"9\\"}"}',
    '{"trace_id": "t1", "span_id": "s3", "start_time": "yesterday", "input_tokens": "many", "kind": "chain", "attributes": [1]}',
    "not json",
    "[1, 2]",
    '{"span_id": "x"}',
    '{"trace_id": 2, "span_id": 3, "start_time": 1748779200123456789, "end_time": "2025-06-01 12:00:00"}\r',
    '{"trace_id": "t9", "span_id": "\xff"}',
    '{"trace_id": "t9", "span_id": "last"}',
]


def _write_jsonl(tmp_path) -> Path:
    path = tmp_path / "spans.jsonl"
    data = "\n".join(JSONL_LINES).encode("utf-8").replace("\xff".encode(), b"\xff")
    path.write_bytes(data)
    return path


def test_relops_jsonl_types_lines_and_rejects_with_line_numbers(tmp_path):
    path = _write_jsonl(tmp_path)
    assert detect_format(path) == "relops-jsonl"
    spans, rejects = read(path, relops_jsonl)
    by_id = {s["span_id"]: s for s in spans}
    assert sorted(by_id) == ["3", "last", "s1", "s2"]
    s1 = by_id["s1"]
    assert (s1["kind"], s1["status"], s1["source_line"]) == ("llm", "ok", 1)
    assert s1["start_time"] == datetime(2025, 6, 1, 12, 0, 0, 120000)
    assert s1["end_time"] == datetime(2025, 6, 1, 12, 0, 1, 570000)  # +02:00 converted to UTC
    assert (s1["input_tokens"], s1["output_tokens"]) == (412, 96)
    assert s1["input_text"] == '[{"role":"user","content":"hi"}]'
    assert s1["online_scores"] == {"relevance": 0.5}
    assert s1["attributes"] == {"tenant": "acme", "custom.key": 5, "relops.original_source_format": "langfuse"}
    s2 = by_id["s2"]
    assert s2["start_time"] == datetime(2025, 6, 1, 12, 0, 0, 123000)  # epoch ms
    assert s2["end_time"] == datetime(2025, 6, 1, 12, 0, 1)  # epoch seconds as a string
    assert (s2["workflow"], s2["release"]) == ("svc", "9")  # from attributes given as JSON text
    assert (s2["kind"], s2["status"]) == ("other", "unset")
    assert by_id["3"]["start_time"] == datetime(2025, 6, 1, 12, 0, 0, 123456)  # epoch ns, CRLF line
    assert by_id["last"]["source_line"] == 10
    assert [(r["source_line"], r["reason"]) for r in rejects] == [
        (4, "kind: must be one of llm, tool, retrieval, agent, other; "
            "start_time: not an ISO 8601 time or epoch number; input_tokens: not a number; "
            "attributes: not a JSON object"),
        (5, "invalid JSON"),
        (6, "not a JSON object (array)"),
        (7, "missing trace_id"),
        (9, "not valid UTF-8 (invalid start byte at byte 31)"),
    ]


def test_relops_jsonl_sniff_and_settings(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"trace_id": "t", "span_id": "s", "attributes": {"service.name": "unknown_service:node", "team": "a"}}\n')
    assert relops_jsonl.sniff(path.read_bytes(), path)
    assert not relops_jsonl.sniff(b'{"file": "a.json", "sha256": "x"}\n', path)
    assert not relops_jsonl.sniff(b'{\n  "trace_id": "t"\n}\n', path)
    spans, _ = read(path, relops_jsonl)
    assert spans[0]["workflow"] is None  # the SDK's placeholder service name is no workflow
    spans, _ = read(path, relops_jsonl, SourceSettings(workflow_keys=("team",)))
    assert spans[0]["workflow"] == "a"
    spans, _ = read(path, relops_jsonl, SourceSettings(default_workflow="fallback"))
    assert spans[0]["workflow"] == "fallback"


def test_relops_parquet_subset_extra_columns_and_rejects(tmp_path):
    path = tmp_path / "spans.parquet"
    con = duckdb.connect()
    con.execute(
        f"""COPY (SELECT * FROM (VALUES
            ('t1', 's1', 'LLM', TIMESTAMPTZ '2025-06-01 14:00:00+02', '12', {{'service.name': 'svc', 'n': 1}}, 'x', 'langfuse'),
            ('t1', NULL, 'tool', NULL, '5', NULL, 'y', NULL),
            ('t2', 's3', 'bogus', NULL, 'abc', NULL, 'z', NULL)
        ) v(trace_id, span_id, kind, start_time, input_tokens, attributes, extra_col, source_format))
        TO '{path}' (FORMAT parquet)"""
    )
    con.close()
    assert detect_format(path) == "relops-parquet"
    spans, rejects = read(path, relops_parquet)
    assert len(spans) == 1
    s = spans[0]
    assert (s["kind"], s["status"], s["workflow"], s["input_tokens"], s["source_line"]) == ("llm", "unset", "svc", 12, 1)
    assert s["start_time"] == datetime(2025, 6, 1, 12, 0, 0)
    assert s["attributes"] == {"service.name": "svc", "n": 1, "extra_col": "x", "relops.original_source_format": "langfuse"}
    assert s["output_tokens"] is None and s["end_time"] is None
    assert [(r["source_line"], r["reason"]) for r in rejects] == [
        (2, "missing span_id"),
        (3, "kind: must be one of llm, tool, retrieval, agent, other; input_tokens: not a number"),
    ]
    assert json.loads(rejects[0]["raw"])["extra_col"] == "y"


def test_relops_parquet_not_parquet_is_unreadable(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(UnreadableInput):
        read(path, relops_parquet)


def test_relops_jsonl_documented_example_reads(tmp_path):
    example = next(line.strip() for line in relops_jsonl.__doc__.splitlines() if line.strip().startswith('{"trace_id"'))
    path = tmp_path / "example.jsonl"
    path.write_text(example + "\n")
    spans, rejects = read(path, relops_jsonl)
    assert rejects == [] and len(spans) == 1
    s = spans[0]
    assert (s["workflow"], s["release"], s["kind"], s["input_tokens"]) == ("support-triage", "v3", "llm", 412)
    assert json.loads(s["input_text"])[0]["content"] == "Where is my order?"
