"""Eval runners against local HTTP servers (127.0.0.1, ephemeral ports) and local callables."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from relops_pipeline.lib.evals import runners
from relops_pipeline.lib.evals.model import Case, Manifest, SampleRequest, SampleResult
from relops_pipeline.lib.evals.runners import (
    HttpRunner,
    RunnerConfigError,
    build_runner,
    invalid_run,
    parse_retry_after,
)

MANIFEST = Manifest(workflow="support-triage", version="v1", model="gpt-test", provider="openai",
                    parameters={"temperature": 0.2, "max_tokens": 64})


def _case(cid: str, text: str = "hello") -> Case:
    return Case(id=cid, input={"messages": [{"role": "user", "content": text}]})


def _requests(ids: list[str], samples: int = 1) -> list[SampleRequest]:
    return [SampleRequest(case=_case(c, f"q-{c}"), sample=s, seed=1000 + 10 * i + s)
            for i, c in enumerate(ids) for s in range(samples)]


def _fallback_render(manifest: Manifest, case: Case) -> list[dict]:
    msgs = [{"role": "system", "content": manifest.prompts["system"]}] if manifest.prompts.get("system") else []
    return msgs + list(case.input["messages"])


class Server:
    """A threaded HTTP server whose behaviour is `handler(server, body: dict, headers) ->
    (status, headers, body_bytes_or_obj)`. It counts requests and the peak number in flight."""

    def __init__(self, handler):
        self.handler = handler
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        self.requests: list[tuple[float, dict, dict]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            wbufsize = 1 << 16  # headers and body in one write: no delayed-ACK stall per response

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with outer.lock:
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                    outer.requests.append((time.monotonic(), body, dict(self.headers)))
                    n = len(outer.requests)
                try:
                    status, headers, payload = outer.handler(n, body, self.headers)
                finally:
                    with outer.lock:
                        outer.in_flight -= 1
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def log_message(self, *args):
                pass

        class S(ThreadingHTTPServer):
            request_queue_size = 128  # the default backlog of 5 drops SYNs at concurrency 8 (1 s retransmit)

        self.httpd = S(("127.0.0.1", 0), H)
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1/chat/completions"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(handler) -> Server:
        s = Server(handler)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


def chat_reply(text: str, usage: dict | None = None) -> dict:
    out = {"id": "x", "object": "chat.completion",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
    if usage:
        out["usage"] = usage
    return out


def echo_chat(n, body, headers):
    last = body["messages"][-1]["content"]
    return 200, {}, chat_reply(f"answer to {last}", {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18})


# ----------------------------------------------------------------------------- http runner


def test_openai_chat_success_with_usage_and_api_key(serve, monkeypatch):
    monkeypatch.setenv("RELOPS_TEST_KEY", "sk-local-123")
    srv = serve(echo_chat)
    runner = build_runner({"type": "http", "url": srv.url, "api_key_env": "RELOPS_TEST_KEY", "concurrency": 4})
    reqs = _requests(["a", "b", "c"], samples=2)
    results = runner.run(MANIFEST, reqs)

    assert runner.source == "runner:http"
    assert [(r.case_id, r.sample) for r in results] == [(q.case.id, q.sample) for q in reqs]
    assert [r.output for r in results] == ["answer to q-a"] * 2 + ["answer to q-b"] * 2 + ["answer to q-c"] * 2
    assert all(r.error is None and r.attempts == 1 for r in results)
    assert {(r.input_tokens, r.output_tokens) for r in results} == {(11, 7)}
    assert all(r.latency_ms is not None and r.latency_ms > 0 for r in results)
    assert results[0].raw["choices"][0]["finish_reason"] == "stop"
    # what the endpoint received: model, rendered messages, manifest parameters, per-sample seed
    bodies = sorted((b for _, b, _ in srv.requests), key=lambda b: b["seed"])
    assert bodies[0] == {"model": "gpt-test", "messages": [{"role": "user", "content": "q-a"}],
                         "temperature": 0.2, "max_tokens": 64, "seed": 1000}
    assert sorted(b["seed"] for b in bodies) == [q.seed for q in reqs]
    assert {h["authorization"] for _, _, h in srv.requests} == {"Bearer sk-local-123"}


def test_json_mode(serve):
    def handler(n, body, headers):
        if body["case"]["id"] == "bad":
            return 200, {}, {"error": "model refused"}
        return 200, {}, {"output": {"category": body["case"]["id"]}, "cost_usd": 0.002, "input_tokens": 5}

    srv = serve(handler)
    runner = build_runner({"type": "http", "url": srv.url, "mode": "json"})
    results = runner.run(MANIFEST, _requests(["billing", "bad"]))
    assert results[0].output == '{"category":"billing"}'
    assert (results[0].cost_usd, results[0].input_tokens, results[0].error) == (0.002, 5, None)
    assert results[1].error == "endpoint error: model refused" and results[1].output is None
    body = next(b for _, b, _ in srv.requests if b["case"]["id"] == "billing")
    assert body["manifest"]["model"] == "gpt-test" and body["manifest"]["workflow"] == "support-triage"
    assert body["messages"] == [{"role": "user", "content": "q-billing"}]
    assert (body["sample"], body["seed"]) == (0, 1000)


def test_429_retry_after_is_honoured(serve):
    def handler(n, body, headers):
        if n == 1:
            return 429, {"Retry-After": "1"}, {"error": "rate limited"}
        return 200, {}, chat_reply("ok")

    srv = serve(handler)
    # backoff_s is tiny, so a wait of ~1 s can only come from Retry-After
    runner = build_runner({"type": "http", "url": srv.url, "backoff_s": 0.01, "max_retries": 3})
    [res] = runner.run(MANIFEST, _requests(["a"]))
    assert (res.output, res.error, res.attempts) == ("ok", None, 2)
    gap = srv.requests[1][0] - srv.requests[0][0]
    assert 0.95 <= gap < 2.0


def test_retry_after_is_capped(serve):
    def handler(n, body, headers):
        return (429, {"Retry-After": "120"}, {}) if n == 1 else (200, {}, chat_reply("ok"))

    srv = serve(handler)
    runner = build_runner({"type": "http", "url": srv.url, "retry_after_max_s": 0.2})
    t0 = time.monotonic()
    [res] = runner.run(MANIFEST, _requests(["a"]))
    assert (res.output, res.attempts) == ("ok", 2)
    assert time.monotonic() - t0 < 2.0


def test_parse_retry_after_seconds_and_http_date():
    now = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None


def test_500_twice_then_success(serve):
    srv = serve(lambda n, b, h: (500, {}, b"upstream down") if n <= 2 else (200, {}, chat_reply("fine")))
    runner = build_runner({"type": "http", "url": srv.url, "backoff_s": 0.02, "max_retries": 4})
    [res] = runner.run(MANIFEST, _requests(["a"]))
    assert (res.output, res.error, res.attempts) == ("fine", None, 3)
    assert len(srv.requests) == 3


def test_always_500_is_an_error_sample_after_max_retries(serve):
    srv = serve(lambda n, b, h: (500, {}, b"boom\n  internal"))
    runner = build_runner({"type": "http", "url": srv.url, "backoff_s": 0.01, "max_retries": 3})
    results = runner.run(MANIFEST, _requests(["a", "b"]))
    assert [r.error for r in results] == ["HTTP 500 after 4 attempts: boom internal"] * 2
    assert [r.attempts for r in results] == [4, 4]
    assert results[0].output is None and results[0].raw == {"status": 500}
    assert len(srv.requests) == 8


def test_non_retryable_4xx_is_recorded_at_once(serve):
    srv = serve(lambda n, b, h: (400, {}, {"error": {"message": "bad param"}}))
    runner = build_runner({"type": "http", "url": srv.url, "backoff_s": 0.01})
    [res] = runner.run(MANIFEST, _requests(["a"]))
    assert res.attempts == 1 and len(srv.requests) == 1
    assert res.error.startswith("HTTP 400 (not retried): ") and "bad param" in res.error


def test_connect_error_is_retried_then_recorded():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    runner = build_runner({"type": "http", "url": f"http://127.0.0.1:{port}/v1", "backoff_s": 0.01,
                           "max_retries": 2})
    [res] = runner.run(MANIFEST, _requests(["a"]))
    assert res.attempts == 3
    assert res.error.startswith("ConnectError") and res.error.endswith("(after 3 attempts)")


def test_slow_endpoint_times_out_while_others_succeed(serve):
    def handler(n, body, headers):
        if body["messages"][-1]["content"] == "q-slow":
            time.sleep(1.5)
        return 200, {}, chat_reply("done")

    srv = serve(handler)
    runner = build_runner({"type": "http", "url": srv.url, "timeout_s": 0.3, "concurrency": 4})
    t0 = time.monotonic()
    results = runner.run(MANIFEST, _requests(["a", "slow", "b", "c"]))
    assert time.monotonic() - t0 < 1.2  # the run did not wait for the slow answer
    assert [r.error for r in results] == [None, "timeout after 0.3 s", None, None]
    assert [r.output for r in results] == ["done", None, "done", "done"]
    assert results[1].attempts == 1 and 250 <= results[1].latency_ms < 1000


def test_concurrency_bound_is_respected(serve):
    def handler(n, body, headers):
        time.sleep(0.1)
        return 200, {}, chat_reply("x")

    srv = serve(handler)
    runner = build_runner({"type": "http", "url": srv.url, "concurrency": 3})
    results = runner.run(MANIFEST, _requests([f"c{i}" for i in range(12)]))
    assert len(results) == 12 and all(r.error is None for r in results)
    assert srv.max_in_flight == 3


def test_concurrency_bound_holds_across_client_shards(serve):
    # 20 slots are spread over two httpx clients (16 connections each at most)
    def handler(n, body, headers):
        time.sleep(0.15)
        return 200, {}, chat_reply("x")

    srv = serve(handler)
    results = build_runner({"type": "http", "url": srv.url, "concurrency": 20}).run(
        MANIFEST, _requests([f"c{i}" for i in range(50)]))
    assert len(results) == 50 and all(r.output == "x" for r in results)
    assert srv.max_in_flight == 20


def test_missing_api_key_env_is_a_config_error(serve, monkeypatch):
    monkeypatch.delenv("RELOPS_TEST_MISSING_KEY", raising=False)
    with pytest.raises(RunnerConfigError, match="RELOPS_TEST_MISSING_KEY"):
        build_runner({"type": "http", "url": "http://127.0.0.1:9/v1", "api_key_env": "RELOPS_TEST_MISSING_KEY"})


@pytest.mark.parametrize("config, match", [
    ({"type": "grpc"}, "runner type 'grpc'"),
    ({"type": "http", "url": "ftp://x"}, "url must be"),
    ({"type": "http", "url": "http://x", "mode": "completions"}, "mode 'completions'"),
    ({"type": "http", "url": "http://x", "concurency": 4}, "unknown key.*concurency"),
    ({"type": "http", "url": "http://x", "concurrency": 0}, "concurrency must be an integer >= 1"),
    ({"type": "python", "callable": "no_such_module_xyz:fn"}, "cannot import module 'no_such_module_xyz'"),
    ({"type": "python", "callable": "json:no_such_fn"}, "has no attribute 'no_such_fn'"),
    ({"type": "python", "callable": "json.dumps"}, "expected 'package.module:function'"),
])
def test_config_errors(config, match):
    with pytest.raises(RunnerConfigError, match=match):
        build_runner(config)


def test_progress_is_throttled_and_ends_at_total(serve):
    srv = serve(echo_chat)
    calls = []
    runner = build_runner({"type": "http", "url": srv.url, "concurrency": 8})
    runner.run(MANIFEST, _requests([f"c{i}" for i in range(40)]), progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (40, 40)
    assert len(calls) < 10  # 40 fast requests, well under a second: a handful of calls, not 40
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_http_runner_runs_from_a_thread_and_inside_a_running_loop(serve):
    srv = serve(echo_chat)
    runner = build_runner({"type": "http", "url": srv.url})
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", runner.run(MANIFEST, _requests(["a"]))))
    t.start()
    t.join(10)
    assert box["r"][0].output == "answer to q-a"

    async def inside():
        return runner.run(MANIFEST, _requests(["b"]))

    assert asyncio.run(inside())[0].output == "answer to q-b"


def test_unrenderable_case_is_an_error_sample(serve, monkeypatch):
    def render(manifest, case):
        if case.id == "b":
            raise ValueError("missing template variable 'ticket'")
        return _fallback_render(manifest, case)

    monkeypatch.setattr(runners, "_render_messages", render)
    srv = serve(echo_chat)
    results = build_runner({"type": "http", "url": srv.url}).run(MANIFEST, _requests(["a", "b"]))
    assert results[0].output == "answer to q-a"
    assert results[1].error == "cannot build request: ValueError: missing template variable 'ticket'"
    assert results[1].attempts == 0 and len(srv.requests) == 1


def test_prompts_rendered_from_the_manifest_template(serve):
    srv = serve(echo_chat)
    manifest = Manifest(workflow="support-triage", version="v2", model="gpt-test",
                        prompts={"system": "Triage tickets.", "user": "Ticket: {{ ticket }}"})
    reqs = [SampleRequest(Case(id="ok", input={"vars": {"ticket": "charged twice"}}), 0, 1),
            SampleRequest(Case(id="novar", input={"vars": {"other": "x"}}), 0, 2)]
    ok, novar = build_runner({"type": "http", "url": srv.url, "send_seed": False}).run(manifest, reqs)
    assert ok.output == "answer to Ticket: charged twice"
    assert srv.requests[0][1] == {"model": "gpt-test", "messages": [
        {"role": "system", "content": "Triage tickets."}, {"role": "user", "content": "Ticket: charged twice"}]}
    assert novar.error.startswith("cannot build request: ") and "ticket" in novar.error
    assert len(srv.requests) == 1


# ----------------------------------------------------------------------------- python runner


def sim_llm(manifest, case, sample, seed):
    """A callable for the python runner: behaviour chosen by the case id."""
    if case.id == "str":
        return f"{manifest.model}:{case.id}:{sample}:{seed}"
    if case.id == "dict":
        return {"output": "structured", "latency_ms": 812.5, "input_tokens": 30, "output_tokens": 4,
                "cost_usd": 0.0001, "finish_reason": "stop"}
    if case.id == "raise":
        raise ValueError("bad input " + "x" * 1000)
    if case.id == "sleep":
        time.sleep(1.0)
        return "too late"
    if case.id == "int":
        return 42
    raise AssertionError(case.id)


def test_python_runner_outputs_errors_and_timeouts():
    runner = build_runner({"type": "python", "callable": f"{__name__}:sim_llm", "timeout_s": 0.3,
                           "concurrency": 2})
    assert runner.source == "runner:python"
    reqs = _requests(["str", "sleep", "dict", "raise", "int"])
    t0 = time.monotonic()
    results = runner.run(MANIFEST, reqs)
    assert time.monotonic() - t0 < 0.9  # did not wait for the sleeper
    assert [r.case_id for r in results] == ["str", "sleep", "dict", "raise", "int"]
    s, slp, d, exc, i = results
    assert (s.output, s.error) == ("gpt-test:str:0:1000", None)
    assert s.latency_ms is not None and s.latency_ms < 100
    assert (slp.output, slp.error) == (None, "timeout after 0.3 s") and slp.latency_ms >= 300
    assert (d.output, d.latency_ms, d.input_tokens, d.output_tokens, d.cost_usd) == ("structured", 812.5, 30, 4, 0.0001)
    assert d.raw == {"finish_reason": "stop"}
    assert exc.error.startswith("exception in runner: ValueError: bad input xxx") and len(exc.error) < 400
    assert i.error == "runner returned int; expected str or a dict with 'output'"
    assert all(r.attempts == 1 for r in results)


def test_python_runner_timeouts_free_their_slot():
    # concurrency 1: two sleepers in a row each time out, then the fast case still runs
    runner = build_runner({"type": "python", "callable": f"{__name__}:sim_llm", "timeout_s": 0.2,
                           "concurrency": 1})
    calls = []
    results = runner.run(MANIFEST, _requests(["sleep", "sleep", "str"]), progress=lambda d, t: calls.append(d))
    assert [r.error for r in results] == ["timeout after 0.2 s", "timeout after 0.2 s", None]
    assert calls[-1] == 3


# ----------------------------------------------------------------------------- replay runner


def test_replay_with_a_missing_sample(tmp_path):
    lines = [
        {"case_id": "a", "sample": 0, "output": "A0", "latency_ms": 120, "cost_usd": 0.001, "model": "m"},
        {"case_id": "a", "sample": 1, "output": None, "error": "timeout after 30.0 s"},
        {"case_id": "b", "sample": 0, "output": {"k": 1}},
        {"case_id": "z", "sample": 0, "output": "not requested"},
    ]
    (tmp_path / "outputs.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    runner = build_runner({"type": "replay", "file": "outputs.jsonl"}, base_dir=tmp_path)
    results = runner.run(MANIFEST, _requests(["a", "b"], samples=2))
    assert [(r.case_id, r.sample, r.output, r.error) for r in results] == [
        ("a", 0, "A0", None),
        ("a", 1, None, "timeout after 30.0 s"),
        ("b", 0, '{"k":1}', None),
        ("b", 1, None, "no recorded output"),
    ]
    assert (results[0].latency_ms, results[0].cost_usd, results[0].raw) == (120.0, 0.001, {"model": "m"})


@pytest.mark.parametrize("content, match", [
    ('{"case_id": "a", "sample": 0, "output": "x"}\n{not json\n', r"outputs.jsonl:2: not valid JSON"),
    ('{"case_id": "a", "sample": 0}\n{"case_id": "a", "sample": 0}\n', r"outputs.jsonl:2: duplicate record"),
    ('{"case_id": "a", "sample": "first"}\n', r"outputs.jsonl:1: sample must be"),
])
def test_replay_file_problems_are_config_errors(tmp_path, content, match):
    (tmp_path / "outputs.jsonl").write_text(content)
    with pytest.raises(RunnerConfigError, match=match):
        build_runner({"type": "replay", "file": str(tmp_path / "outputs.jsonl")})
    with pytest.raises(RunnerConfigError, match="cannot read"):
        build_runner({"type": "replay", "file": "missing.jsonl"}, base_dir=tmp_path)


# ----------------------------------------------------------------------------- invalid_run


def test_invalid_run():
    ok, bad = SampleResult("a", 0, output="x"), SampleResult("a", 1, error="timeout after 1.0 s")
    assert invalid_run([ok, ok, ok, bad], 0.25) == (False, 0.25)
    assert invalid_run([ok, bad], 0.25) == (True, 0.5)
    assert invalid_run([ok], 0.0) == (False, 0.0)
    assert invalid_run([], 0.1) == (True, 0.0)


def test_http_runner_direct_construction_defaults():
    r = HttpRunner("http://127.0.0.1:1/v1")
    assert (r.mode, r.concurrency, r.timeout_s, r.max_retries, r.backoff_s) == ("openai-chat", 8, 60.0, 4, 0.5)
