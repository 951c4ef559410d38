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


# --- throughput mechanisms: group commit, conversion workers, the protobuf converter -----------------


def _lines(received: Path) -> list[bytes]:
    """Every line of the visible spool files (not the dot-prefixed temp files)."""
    out = []
    for f in sorted(received.rglob("*.otlp.json")):
        if not any(p.startswith(".") for p in f.relative_to(received).parts):
            out.extend(line for line in f.read_bytes().splitlines() if line)
    return out


def test_group_commit_acks_every_request_once_in_fewer_files(tmp_path, monkeypatch):
    """Forty requests committed at once (fsync slowed down so they pile up): each returns the
    file that holds its line, every line is in the spool exactly once, and they share files
    (fewer fsyncs than requests)."""
    from relops_pipeline.lib.receiver import spool as spool_mod

    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        time.sleep(0.02)
        real_fsync(fd)

    monkeypatch.setattr(spool_mod.os, "fsync", slow_fsync)
    spool = spool_mod.Spool(tmp_path / "landing")
    n = 40
    barrier = threading.Barrier(n)
    got: dict[int, Path] = {}

    def one(i: int) -> None:
        barrier.wait()
        got[i] = spool.commit(json.dumps({"resourceSpans": [], "request": i}).encode() + b"\n")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=scaled(30))
    spool.close()
    assert sorted(got) == list(range(n))
    lines = _lines(spool.root)
    assert sorted(json.loads(line)["request"] for line in lines) == list(range(n))
    for i, path in got.items():
        assert any(json.loads(line)["request"] == i for line in path.read_bytes().splitlines())
    files = {p for p in got.values()}
    assert 1 <= len(files) < n and spool.counters["files"] == len(files)
    assert spool.pending_bytes() == sum(p.stat().st_size for p in files)


def test_group_commit_write_error_fails_every_waiting_request(tmp_path, monkeypatch):
    """A failed write (disk full) raises OSError in every request of its group: none is
    acknowledged, nothing visible is left; the next commit works again."""
    from relops_pipeline.lib.receiver import spool as spool_mod

    spool = spool_mod.Spool(tmp_path / "landing")
    real_fsync = os.fsync
    monkeypatch.setattr(spool_mod.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(OSError, match="No space left"):
        spool.commit(b'{"resourceSpans": []}\n')
    assert _lines(spool.root) == [] and not list(spool.root.rglob(".*.tmp"))
    monkeypatch.setattr(spool_mod.os, "fsync", real_fsync)
    assert spool.commit(b'{"resourceSpans": [], "ok": 1}\n').exists()
    spool.close()
    with pytest.raises(OSError):
        spool.commit(b"{}\n")  # closed: refused, not silently dropped


CRASH_BEFORE_FSYNC = r"""
import os, sys
from pathlib import Path
from relops_pipeline.lib.receiver import spool as spool_mod
spool = spool_mod.Spool(Path(sys.argv[1]))
spool.commit(b'{"resourceSpans": [], "request": 1}\n')
print("acknowledged 1", flush=True)
spool_mod.os.fsync = lambda fd: os._exit(9)   # the machine dies after the write, before the fsync
spool.commit(b'{"resourceSpans": [], "request": 2}\n')
print("acknowledged 2", flush=True)   # never reached
"""


def test_crash_between_write_and_fsync_leaves_no_visible_file(tmp_path):
    """A process that dies between writing a group's file and its fsync has acknowledged
    nothing and left only a dot-prefixed temp file, which ingestion never reads and the next
    start removes."""
    landing = tmp_path / "landing"
    out = subprocess.run([sys.executable, "-c", CRASH_BEFORE_FSYNC, str(landing)], capture_output=True, text=True,
                         timeout=scaled(60), cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 9 and out.stdout.split("\n") == ["acknowledged 1", ""], out.stderr
    received = landing / "received"
    assert _lines(received) == [b'{"resourceSpans": [], "request": 1}']
    assert len(list(received.rglob(".*.tmp"))) == 1
    from relops_pipeline.lib.receiver.spool import Spool

    assert Spool(landing).removed_temp == 1 and not list(received.rglob(".*.tmp"))


def _rich_request():
    """An ExportTraceServiceRequest that sets every kind of field OTLP traces have."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

    attrs = [KeyValue(key="s", value=AnyValue(string_value="ü日本 \"q\"\n")), KeyValue(key="empty", value=AnyValue(string_value="")),
             KeyValue(key="i", value=AnyValue(int_value=-(2**62))), KeyValue(key="b", value=AnyValue(bool_value=False)),
             KeyValue(key="d", value=AnyValue(double_value=0.1)), KeyValue(key="nan", value=AnyValue(double_value=float("nan"))),
             KeyValue(key="inf", value=AnyValue(double_value=float("-inf"))),
             KeyValue(key="bytes", value=AnyValue(bytes_value=b"\x00\xff")),
             KeyValue(key="arr", value=AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1), AnyValue(string_value="x")]))),
             KeyValue(key="kv", value=AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="k", value=AnyValue(bool_value=True))]))),
             KeyValue(key="unset"), KeyValue(value=AnyValue(string_value="no key")), KeyValue(key="idx", key_strindex=3),
             KeyValue(key="strindex", value=AnyValue(string_value_strindex=7)),
             KeyValue(key="emptyarr", value=AnyValue(array_value=ArrayValue()))]
    trace, span_id = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736"), bytes.fromhex("00f067aa0ba902b7")
    span = Span(trace_id=trace, span_id=span_id, parent_span_id=bytes.fromhex("53995c3f42cd8ad8"), trace_state="k=v", flags=257,
                name="chat", kind=Span.SPAN_KIND_CLIENT, start_time_unix_nano=2**63 - 5, end_time_unix_nano=2**63 - 1,
                attributes=attrs, dropped_attributes_count=2, dropped_events_count=1, dropped_links_count=3,
                events=[Span.Event(time_unix_nano=5, name="gen_ai.choice", attributes=attrs[:2], dropped_attributes_count=1)],
                links=[Span.Link(trace_id=trace, span_id=span_id, trace_state="a=b", attributes=attrs[2:4], flags=1)],
                status=Status(code=Status.STATUS_CODE_ERROR, message="boom"))
    odd = Span(trace_id=trace, span_id=bytes.fromhex("00f067aa0ba902b8"), kind=7, status=Status())  # an unknown enum number
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=attrs[:3], dropped_attributes_count=4), schema_url="https://opentelemetry.io/schemas/1.26.0",
        scope_spans=[ScopeSpans(scope=InstrumentationScope(name="sc", version="1", attributes=attrs[:1], dropped_attributes_count=1),
                                spans=[span, odd], schema_url="s")])])


def test_protobuf_conversion_is_message_to_dict_with_hex_ids():
    """to_otlp_json_text gives exactly MessageToDict's OTLP JSON (every field kind, NaN/Infinity,
    unknown enum numbers, unset and empty values, strindex fields, real Unicode), with hex ids."""
    from google.protobuf.json_format import MessageToDict

    from relops_pipeline.lib.receiver.payload import to_otlp_json_text

    request = _rich_request()
    text = to_otlp_json_text(request)
    expected = MessageToDict(request)
    for resource in expected["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                for item in [span, *span.get("links", [])]:
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in item:
                            item[key] = base64.b64decode(item[key]).hex()
    assert json.loads(text) == json.loads(json.dumps(expected))  # NaN compared as the string "NaN"
    assert text == json.dumps(expected, separators=(",", ":"), ensure_ascii=False)  # the same text, key order included
    assert "ü日本" in text
    # the export path (spans written field by field, not through ListFields) makes the same text
    from relops_pipeline.lib.receiver.payload import PROTOBUF, TRACES, convert

    assert convert(request.SerializeToString(), None, PROTOBUF, TRACES, None, 1 << 20).line == (text + "\n").encode()


def test_protobuf_export_cleaned_like_json_bodies():
    """A protobuf export is cleaned as a JSON one is: spans without valid ids rejected (counted,
    partial success), an invalid parent id left out, the key's workflow pinned on resource and
    span (replacing one the client set); logs keep records without ids."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    from relops_pipeline.lib.receiver.payload import JSON, LOGS, PROTOBUF, TRACES, BadRequest, convert

    request = _rich_request()
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[0].parent_span_id = b"\x01\x02"
    spans[0].attributes.append(KeyValue(key="relops.workflow", value=AnyValue(string_value="client-set")))
    spans.append(Span(trace_id=b"\0" * 16, span_id=b"\1" * 8, name="zero trace id"))
    spans.append(Span(trace_id=b"\1" * 16, name="no span id"))
    request.resource_spans.append(ResourceSpans(scope_spans=[ScopeSpans(spans=[Span(trace_id=b"\2" * 16, span_id=b"\2" * 8)])]))
    done = convert(request.SerializeToString(), None, PROTOBUF, TRACES, "pinned-flow", 1 << 20)
    assert (done.accepted, done.rejected) == (3, 2) and "2 spans" in done.message
    assert done.line is not None and done.line.endswith(b"\n") and done.line.count(b"\n") == 1
    doc = json.loads(done.line)
    first, second = doc["resourceSpans"]
    kept = first["scopeSpans"][0]["spans"]
    assert [s["spanId"] for s in kept] == ["00f067aa0ba902b7", "00f067aa0ba902b8"] and "parentSpanId" not in kept[0]
    pinned = {"key": "relops.workflow", "value": {"stringValue": "pinned-flow"}}
    for attrs in (first["resource"]["attributes"], second["resource"]["attributes"], kept[0]["attributes"], kept[1]["attributes"],
                  second["scopeSpans"][0]["spans"][0]["attributes"]):
        assert [a for a in attrs if a.get("key") == "relops.workflow"] == [pinned]
    # the same export as OTLP JSON is cleaned to the same document
    from google.protobuf.json_format import MessageToDict

    body = MessageToDict(request)
    for link in body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["links"]:  # hex in OTLP JSON (JSON bodies keep theirs)
        link["traceId"], link["spanId"] = (base64.b64decode(link[k]).hex() for k in ("traceId", "spanId"))
    as_json = convert(json.dumps(body).encode(), None, JSON, TRACES, "pinned-flow", 1 << 20)
    assert (as_json.accepted, as_json.rejected) == (3, 2)
    assert as_json.line is not None
    for a, b in zip(json.loads(as_json.line)["resourceSpans"], doc["resourceSpans"], strict=True):
        assert a["scopeSpans"] == b["scopeSpans"] and a["resource"]["attributes"] == b["resource"]["attributes"]
    logs = ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=[
        LogRecord(event_name="no ids", body=AnyValue(string_value="x")), LogRecord(event_name="bad id", trace_id=b"\1\2")])])])
    done = convert(logs.SerializeToString(), None, PROTOBUF, LOGS, None, 1 << 20)
    assert (done.accepted, done.rejected) == (2, 0) and done.line is not None
    records = json.loads(done.line)["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    assert [r.get("traceId") for r in records] == [None, None] and records[1]["eventName"] == "bad id"
    with pytest.raises(BadRequest):
        convert(b"", None, PROTOBUF, TRACES, None, 1 << 20)  # no resourceSpans: 400, as before


def test_conversion_workers_match_inline_and_recover_from_a_lost_worker():
    """A body converted in a worker process is byte for byte what the handler thread makes; a
    worker killed under it is a WorkerLost (503) and the next request works on a new pool."""
    from relops_pipeline.lib.receiver.payload import PROTOBUF, TRACES, BadRequest, convert
    from relops_pipeline.lib.receiver.server import Converter, WorkerLost

    body = _rich_request().SerializeToString()
    inline = convert(body, None, PROTOBUF, TRACES, "pinned-flow", 1 << 20)
    assert inline.accepted == 2 and inline.line is not None
    converter = Converter(workers=1, inline_below=0)
    converter.start()
    try:
        assert converter.convert(body, None, PROTOBUF, TRACES, "pinned-flow", 1 << 20) == inline
        with pytest.raises(BadRequest):
            converter.convert(b"\xff\xff garbage", None, PROTOBUF, TRACES, None, 1 << 20)
        pool = converter._pool
        assert pool is not None
        for proc in list(pool._processes.values()):
            os.kill(proc.pid, signal.SIGKILL)
        with pytest.raises(WorkerLost):
            converter.convert(body, None, PROTOBUF, TRACES, "pinned-flow", 1 << 20)
        assert converter.convert(body, None, PROTOBUF, TRACES, "pinned-flow", 1 << 20) == inline
    finally:
        converter.close()


def test_concurrent_sdk_exports_through_workers_each_span_once(home, serve):
    """Four real SDK BatchSpanProcessor exporters at once, 256-span protobuf requests (converted
    by the worker processes, spooled by group commit): every span in the warehouse exactly once."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    server = serve("--workers", "2")
    assert server.where["workers"] == 2
    made: list[set[str]] = [set() for _ in range(4)]

    def client(i: int) -> None:
        provider = TracerProvider(resource=Resource.create({"service.name": f"flow-{i}"}))
        provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"{server.url}/v1/traces", headers={"Authorization": f"Bearer {KEY}"}, timeout=scaled(30)),
            max_export_batch_size=256, max_queue_size=4096, schedule_delay_millis=50))
        tracer = provider.get_tracer("t")
        for n in range(1024):
            with tracer.start_as_current_span("chat", attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                                                                  "gen_ai.input.messages": f"question {n} " + "x" * 200}) as span:
                made[i].add(format(span.get_span_context().span_id, "016x"))
        assert provider.force_flush(int(scaled(60) * 1000))
        provider.shutdown()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=scaled(120))
    server.close()
    state = _state(home)["counters"]
    assert state["spans"] == 4096 and state["files"] <= state["requests"]
    _ingest(home)
    con = duckdb.connect(str(home / "warehouse" / "relops.duckdb"), read_only=True)
    try:
        counts = dict(con.execute("SELECT span_id, count(*) FROM spans GROUP BY 1").fetchall())
    finally:
        con.close()
    assert set(counts) == set().union(*made) and set(counts.values()) == {1}


def _state_of(pid: int) -> str | None:
    """The process state letter of `pid` (Z: a zombie), None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_conversion_workers_do_not_outlive_a_killed_server(home, serve):
    """kill -9 of the server process alone (not its group): its worker processes notice and exit."""
    server = serve("--workers", "2")
    children = _children(server.proc.pid)
    assert len(children) >= 2
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(timeout=scaled(10))
    deadline = time.monotonic() + scaled(20)
    while (alive := [c for c in children if _state_of(c) not in (None, "Z")]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive, f"conversion workers still running after the server was killed: {[(c, _state_of(c)) for c in alive]}"
