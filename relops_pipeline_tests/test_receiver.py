"""`relops serve` end to end: the real server in a subprocess on a free port, the real
OpenTelemetry SDK exporter (protobuf, gzip) and JSON bodies posted with httpx, then `relops
ingest` of the landing folder and the spans checked in the warehouse; the status codes (401,
413, 429, 400, 415, 404, 405) and their counters; kill -9 under load: every acknowledged span
ingested exactly once, no temp file ingested."""

from __future__ import annotations

import base64
import gzip
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import httpx
import pytest

from relops_pipeline.cli import main
from relops_pipeline_tests.procs import popen, reap, scaled

KEY, DOC_KEY = "test-global-key-0123", "test-docqa-key-4567"
SERVE_YAML = """
serve:
  api_keys:
    - env: RELOPS_TEST_INGEST_KEY
    - env: RELOPS_TEST_DOCQA_KEY
      workflow: pinned-flow
"""


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh home (RELOPS_HOME/DAGSTER_HOME set like test_cli_cadence.py) with two API keys."""
    root = tmp_path / "home"
    monkeypatch.setenv("RELOPS_HOME", str(root))
    monkeypatch.setenv("DAGSTER_HOME", str(root / "dagster"))
    monkeypatch.setenv("RELOPS_TEST_INGEST_KEY", KEY)
    monkeypatch.setenv("RELOPS_TEST_DOCQA_KEY", DOC_KEY)
    assert main(["--home", str(root), "init"]) == 0
    with open(root / "relops.yaml", "a") as fh:
        fh.write(SERVE_YAML)
    return root


class Server:
    """`relops serve --json --port 0` as a child process; reaped by `close`."""

    def __init__(self, home: Path, *extra: str):
        self.proc = popen([sys.executable, "-m", "relops_pipeline.cli", "--home", str(home), "serve", "--port", "0", "--json", *extra],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
        assert self.proc.stdout is not None
        deadline = time.monotonic() + scaled(60)
        line = b""
        while not line.endswith(b"\n"):
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self.proc.stdout.fileno(), 1) if ready else b""
            if not chunk:
                err = self.proc.stderr.read().decode() if self.proc.poll() is not None and self.proc.stderr else ""
                raise AssertionError(f"relops serve did not start: {err}")
            line += chunk
        self.where = json.loads(line)
        self.url = self.where["url"]

    def close(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server with `sig` (its group is reaped whatever happens)."""
        reap(self.proc, grace_s=scaled(30), sig=sig)


@pytest.fixture
def serve(home):
    """serve(*extra_args) starts a server on the test home; all are reaped at teardown."""
    started: list[Server] = []

    def start(*extra: str) -> Server:
        server = Server(home, *extra)
        started.append(server)
        return server

    yield start
    for s in started:
        s.close()


def _sdk_export(endpoint: str, headers: dict[str, str], names: list[str], gzip_it: bool) -> list[tuple[str, str]]:
    """Spans exported by the real OTel SDK exporter (protobuf); returns their (trace, span) ids."""
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "doc-qa", "service.version": "v3.1.0"}))
    exporter = OTLPSpanExporter(endpoint=endpoint, headers=headers, timeout=scaled(10),
                                compression=Compression.Gzip if gzip_it else Compression.NoCompression)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("relops-test")
    ids = []
    for name in names:
        with tracer.start_as_current_span(name, attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
                                                            "gen_ai.usage.input_tokens": 21, "app.tenant": "acme"}) as span:
            ctx = span.get_span_context()
            ids.append((format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")))
    provider.shutdown()
    return ids


def _json_export(spans: list[tuple[str, str, str]], service: str = "doc-qa") -> dict:
    """An OTLP JSON export request of (trace id, span id, name) spans."""
    now = time.time_ns()
    return {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}},
                                                         {"key": "service.version", "value": {"stringValue": "v3.1.0"}}]},
                               "scopeSpans": [{"scope": {"name": "t"}, "spans": [
                                   {"traceId": t, "spanId": s, "name": n, "kind": 3, "startTimeUnixNano": str(now),
                                    "endTimeUnixNano": str(now + 5_000_000),
                                    "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                                                   {"key": "app.tenant", "value": {"stringValue": "json"}}]}
                                   for t, s, n in spans]}]}]}


def _post_log_record(url: str, auth: dict[str, str]) -> str:
    """One GenAI event as an OTLP protobuf logs export on /v1/logs; returns its trace id (hex)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    trace_id, span_id = bytes.fromhex("5b8efff798038103d269b633813fc60c"), bytes.fromhex("eee19b7ec3c1b174")
    record = LogRecord(time_unix_nano=time.time_ns(), trace_id=trace_id, span_id=span_id, event_name="gen_ai.choice",
                       body=AnyValue(string_value="hello"))
    request = ExportLogsServiceRequest(resource_logs=[ResourceLogs(
        resource=Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="doc-qa"))]),
        scope_logs=[ScopeLogs(log_records=[record])])])
    r = httpx.post(f"{url}/v1/logs", content=request.SerializeToString(), timeout=scaled(10),
                   headers={**auth, "Content-Type": "application/x-protobuf"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-protobuf"
    ExportLogsServiceResponse.FromString(r.content)
    return trace_id.hex()


def _ingest(home: Path) -> None:
    assert main(["--home", str(home), "ingest", str(home / "landing")]) == 0


def _spans(home: Path) -> dict[tuple[str, str], tuple]:
    con = duckdb.connect(str(home / "warehouse" / "relops.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT trace_id, span_id, span_name, workflow, release, model, attributes, source_file FROM spans").fetchall()
    finally:
        con.close()
    return {(r[0], r[1]): r[2:] for r in rows}


def _state(home: Path) -> dict:
    return json.loads((home / "landing" / "received" / ".receiver.json").read_text())


def test_sdk_protobuf_and_json_reach_the_warehouse(home, serve):
    """The real SDK exporter (protobuf, plain and gzip), a JSON body (gzip) and the Langfuse
    endpoint with Basic auth: every span ingested once with its ids, name, attributes; a
    per-workflow key pins the workflow; a span without ids is a partial success."""
    server = serve()
    auth = {"Authorization": f"Bearer {KEY}"}
    sdk_ids = _sdk_export(f"{server.url}/v1/traces", auth, ["chat a", "chat b"], gzip_it=False)
    sdk_ids += _sdk_export(f"{server.url}/v1/traces", auth, ["chat c"], gzip_it=True)
    json_spans = [("0af7651916cd43dd8448eb211c80319c", f"b7ad6b71692033{i:02x}", f"json {i}") for i in range(3)]
    body = _json_export(json_spans)
    body["resourceSpans"][0]["scopeSpans"][0]["spans"].append({"traceId": "0af7651916cd43dd8448eb211c80319c", "name": "no span id"})
    r = httpx.post(f"{server.url}/v1/traces", content=gzip.compress(json.dumps(body).encode()), timeout=scaled(10),
                   headers={**auth, "Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert int(r.json()["partialSuccess"]["rejectedSpans"]) == 1
    log_trace = _post_log_record(server.url, auth)
    basic = base64.b64encode(f"pk-lf-1:{DOC_KEY}".encode()).decode()
    langfuse_ids = _sdk_export(f"{server.url}/api/public/otel/v1/traces", {"Authorization": f"Basic {basic}"}, ["lf gen"], gzip_it=False)
    server.close()  # SIGTERM: a clean stop
    assert server.proc.returncode == 0 and "stopped_at" in _state(home)
    assert _state(home)["counters"]["spans"] == 7
    _ingest(home)
    spans = _spans(home)
    assert len(spans) == 7
    for (t, s), name in zip(sdk_ids, ["chat a", "chat b", "chat c"], strict=True):
        span_name, workflow, release, model, attributes, source = spans[(t, s)]
        assert (span_name, workflow, release, model) == (name, "doc-qa", "v3.1.0", "gpt-4o-mini")
        assert json.loads(attributes)["app.tenant"] == "acme"
        assert "/landing/received/" in source and source.endswith(".otlp.json")
    for t, s, name in json_spans:
        assert spans[(t, s)][0] == name and json.loads(spans[(t, s)][4])["app.tenant"] == "json"
    assert spans[langfuse_ids[0]][:2] == ("lf gen", "pinned-flow")
    con = duckdb.connect(str(home / "warehouse" / "relops.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT event_name FROM genai_events WHERE trace_id = ?", [log_trace]).fetchall() == [("gen_ai.choice",)]
    finally:
        con.close()
    _ingest(home)  # again: nothing new
    assert len(_spans(home)) == 7


def test_status_codes_and_counters(home, serve, capsys):
    """401 without or with a wrong key (counted), 415 text/plain, 400 garbage, 404, 405, 413 over
    the body limit (also once decompressed), 429 with Retry-After past the spool size."""
    server = serve("--max-body-mb", "0.01", "--spool-limit-mb", "0.0001")
    url, auth = f"{server.url}/v1/traces", {"Authorization": f"Bearer {KEY}"}
    proto = {"Content-Type": "application/x-protobuf"}
    with httpx.Client(timeout=scaled(10)) as c:
        assert c.post(url, content=b"", headers=proto).status_code == 401
        assert c.post(url, content=b"", headers={**proto, "Authorization": "Bearer wrong"}).status_code == 401
        r = c.post(url, content=b"hello", headers={**auth, "Content-Type": "text/plain"})
        assert r.status_code == 415
        r = c.post(url, content=b"\xff\xff\xff garbage", headers={**auth, **proto})
        assert r.status_code == 400 and r.headers["content-type"] == "application/x-protobuf"
        assert c.post(url, content=b"{not json", headers={**auth, "Content-Type": "application/json"}).status_code == 400
        wrong = b'{"resourceSpans": [{"resource": 5, "scopeSpans": [{"spans": [7]}]}]}'
        assert c.post(url, content=wrong, headers={**auth, "Content-Type": "application/json"}).status_code == 400
        assert c.post(f"{server.url}/v2/nothing", content=b"{}", headers=auth).status_code == 404
        r = c.get(url)
        assert r.status_code == 405 and r.headers["allow"] == "POST"
        big = json.dumps(_json_export([("0af7651916cd43dd8448eb211c80319c", f"{i:016x}", "x" * 50) for i in range(1, 200)])).encode()
        assert c.post(url, content=big, headers={**auth, "Content-Type": "application/json"}).status_code == 413
        bomb = gzip.compress(b'{"resourceSpans": []' + b" " * 100_000 + b"}")
        gz = {**auth, "Content-Type": "application/json", "Content-Encoding": "gzip"}
        assert c.post(url, content=bomb, headers=gz).status_code == 413
        first = json.dumps(_json_export([("0af7651916cd43dd8448eb211c80319c", "00000000000000a1", "ok")])).encode()
        assert c.post(url, content=first, headers={**auth, "Content-Type": "application/json"}).status_code == 200
        r = c.post(url, content=first, headers={**auth, "Content-Type": "application/json"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        _ingest(home)  # the spool drains: accepted again once the receiver sees the file ingested
        deadline = time.monotonic() + scaled(20)
        while (code := c.post(url, content=first, headers={**auth, "Content-Type": "application/json"}).status_code) == 429:
            assert time.monotonic() < deadline, "still 429 after the spool was ingested"
            time.sleep(0.5)
        assert code == 200
    server.close()
    counters = _state(home)["counters"]
    assert (counters["unauthorized_401"], counters["too_large_413"], counters["throttled_429"] >= 1) == (2, 2, True)
    assert (counters["bad_request_400"], counters["unsupported_415"], counters["requests"], counters["spans"]) == (3, 1, 2, 2)
    capsys.readouterr()
    assert main(["--home", str(home), "status", "--json"]) == 0
    received = json.loads(capsys.readouterr().out)["received"]
    assert received["url"] == server.url and received["counters"]["unauthorized_401"] == 2


def test_bad_serve_config_names_the_key(home, monkeypatch, capsys):
    """An unset key variable, or an unknown key, is a configuration error naming the key."""
    monkeypatch.delenv("RELOPS_TEST_DOCQA_KEY")
    assert main(["--home", str(home), "serve", "--port", "0"]) == 3
    assert "serve.api_keys[1].env" in capsys.readouterr().err
    (home / "relops.yaml").write_text("serve:\n  max_body: 3\n")
    assert main(["--home", str(home), "serve", "--port", "0"]) == 3
    assert "serve.max_body" in capsys.readouterr().err


def test_kill_9_under_load_loses_no_acknowledged_span(home, serve):
    """Threads post batches with known span ids; the server is SIGKILLed mid-load and restarted;
    after ingestion every acknowledged span is in the warehouse exactly once, and no temp file
    was ingested."""
    acked: list[str] = []
    lock = threading.Lock()
    stats = {"requests": 0, "failed": 0, "latency": []}
    first = serve()
    server = {"url": first.url}
    stop = threading.Event()
    per_batch = 50

    def post(worker: int) -> None:
        with httpx.Client(timeout=scaled(10)) as c:
            batch = 0
            while not stop.is_set():
                ids = [f"{worker + 1:04x}{batch:08x}{i:04x}" for i in range(per_batch)]
                body = json.dumps(_json_export([("4bf92f3577b34da6a3ce929d0e0e4736", s, f"w{worker}") for s in ids])).encode()
                t0 = time.perf_counter()
                try:
                    r = c.post(f"{server['url']}/v1/traces", content=body,
                               headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
                except httpx.HTTPError:
                    with lock:
                        stats["failed"] += 1
                    time.sleep(0.05)
                    continue  # not acknowledged: the client retries the same batch
                if r.status_code == 200:
                    with lock:
                        acked.extend(ids)
                        stats["requests"] += 1
                        stats["latency"].append(time.perf_counter() - t0)
                    batch += 1

    threads = [threading.Thread(target=post, args=(w,)) for w in range(4)]
    t_start = time.perf_counter()
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + scaled(30)
        while len(acked) < 20 * per_batch and time.monotonic() < deadline:
            time.sleep(0.05)
        killed_at = len(acked)
        os.killpg(first.proc.pid, signal.SIGKILL)
        first.proc.wait(timeout=scaled(10))
        server["url"] = serve().url  # restart: the clients go on against it
        deadline = time.monotonic() + scaled(30)
        while len(acked) < killed_at + 20 * per_batch and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=scaled(30))
    elapsed = time.perf_counter() - t_start
    assert killed_at >= 20 * per_batch and len(acked) >= killed_at + 20 * per_batch
    latencies = sorted(stats["latency"])
    print(f"kill -9 test: {stats['requests']} requests, {len(acked)} spans acknowledged in {elapsed:.1f}s "
          f"({len(acked) / elapsed:.0f} spans/s), ack p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms, {stats['failed']} failed requests around the kill")
    _ingest(home)
    con = duckdb.connect(str(home / "warehouse" / "relops.duckdb"), read_only=True)
    try:
        counts = dict(con.execute("SELECT span_id, count(*) FROM spans GROUP BY 1").fetchall())
        sources = [r[0] for r in con.execute("SELECT DISTINCT source_file FROM ingest_batches").fetchall()]
    finally:
        con.close()
    assert len(acked) == len(set(acked))
    missing = [s for s in acked if counts.get(s) != 1]
    assert not missing, f"{len(missing)} acknowledged spans missing or duplicated, e.g. {missing[:3]}"
    assert max(counts.values()) == 1
    assert not any("/." in s for s in sources)
    assert not list((home / "landing" / "received").rglob(".*.tmp"))  # removed at the restart



def test_langsmith_sdk_requests_reach_the_warehouse_merged(home, serve):
    """The LangSmith ingestion API: the real captured SDK 0.15.1 requests (fixtures/langsmith_sdk:
    GET /info, then five zstd multipart bodies whose runs' posts and patches arrive in different
    requests) posted in order with the key as `x-api-key`; each spooled as *.langsmith.json and
    `relops ingest` merges every run into one span with its end time and outputs. Without a valid
    key: 401, nothing spooled."""
    fixtures = Path(__file__).parent / "fixtures" / "langsmith_sdk"
    server = serve()
    skip = {"host", "content-length", "connection", "accept-encoding"}
    bodies = sorted(fixtures.glob("*.body"))
    assert [b.name.split("-", 1)[0] for b in bodies] == ["001", "002", "003", "004", "005", "006"]
    with httpx.Client(base_url=server.url, timeout=scaled(10)) as client:
        first_headers = json.loads((fixtures / "002-POST-runs_multipart.headers.json").read_text())
        first = {k: v for k, v in first_headers.items() if k.lower() not in skip}
        for bad in ({}, {"x-api-key": "wrong-key"}):
            r = client.post("/runs/multipart", content=(fixtures / "002-POST-runs_multipart.body").read_bytes(), headers={**first, **bad})
            assert r.status_code == 401, r.text
        assert not list((home / "landing" / "received").rglob("*.langsmith.json"))
        for body in bodies:
            _, method, path = body.name[: -len(".body")].split("-", 2)
            sent = json.loads(body.with_name(body.name.replace(".body", ".headers.json")).read_text())
            headers = {**{k: v for k, v in sent.items() if k.lower() not in skip}, "x-api-key": KEY}
            r = client.request(method, "/" + path.replace("_", "/"), content=body.read_bytes() or None, headers=headers)
            if method == "GET":
                assert r.status_code == 200 and r.json()["batch_ingest_config"]["use_multipart_endpoint"] is True
            else:
                assert r.status_code == 202 and r.json()["message"], r.text
    server.close()  # SIGTERM: a clean stop saves the counters
    spooled = sorted((home / "landing" / "received").rglob("*.langsmith.json"))
    assert len(spooled) == 5
    _ingest(home)
    con = duckdb.connect(str(home / "warehouse" / "relops.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT span_name, status, end_time IS NOT NULL, output_tokens, output_text, source_file FROM spans "
                           "ORDER BY span_name, start_time").fetchall()
        pending = con.execute("SELECT count(*) FROM langsmith_pending").fetchone()
    finally:
        con.close()
    # the same six runs test_langsmith_runs.py expects of these captures, each once, each ended
    assert [r[:4] for r in rows] == [
        ("answer", "ok", True, None), ("answer", "ok", True, None), ("chat", "ok", True, 3), ("chat", "ok", True, 3),
        ("failing", "error", True, None), ("lookup", "error", True, None),
    ]
    assert [r[4] for r in rows if r[0] == "answer"] == ["Paris.", "Paris."]  # outputs from the patches, merged
    assert all(r[5].endswith(".langsmith.json") for r in rows)
    assert pending == (0,)
    state = _state(home)["counters"]
    assert state["unauthorized_401"] == 2 and state["langsmith_requests"] == 5 and state["langsmith_runs"] >= 6
