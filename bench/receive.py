"""Benchmark: `relops serve` under the real OpenTelemetry SDK, against a null HTTP server.

    python bench/receive.py                   # 4 exporters, 512 spans per request, 12 s per run (~2 min)
    python bench/receive.py --seconds 30 --exporters 4 --batch 512 --workers 2 --rate 20000 --json

Clients: `--exporters` processes (processes, so the clients are not bound by one GIL), each a
TracerProvider with a BatchSpanProcessor(OTLPSpanExporter(protobuf over HTTP, no compression),
max_export_batch_size=--batch) and a Bearer API key, making realistic GenAI spans (an agent span
per trace and chat / tool children with gen_ai.* attributes, token counts and message text) as
fast as the exporter drains them (a producer never runs more than a few batches ahead of its
exporter, so no span is dropped and the load is closed-loop). The exporter is wrapped: every HTTP
POST is timed (send to response = the ack latency) and the spans of successful exports counted
(acknowledged). Throughput counts the acks that complete in the measured window (after a warm-up).

Two sides, one after the other, with the same clients:
- baseline: a null HTTP server (Python's ThreadingHTTPServer, HTTP/1.1 keep-alive, like `relops
  serve`) that reads the body and answers 200 without parsing or fsync: the ceiling of the
  clients + HTTP on this machine;
- relops: `relops serve` on a temp home (127.0.0.1, a free port), every ack after the payload is
  on disk (fsync). Afterwards the spool is counted: every acknowledged span must be in it.
Then the same again with `replay` clients: bodies the SDK encoded beforehand, posted back to back
through the exporter's own HTTP client, so the clients' span making and encoding (most of the
two cores in the first runs) no longer competes with the receiver: the receiver's own capacity.
Those closed-loop runs saturate the receiver, so their latency is the queue of 4 requests always
in flight (p50 ~ 4 requests / throughput). A last run offers a fixed load, `--rate` spans/s
(default 20,000, the goal) of paced replay, and measures the ack latency at that load.
It prints spans/s acknowledged, ack latency p50/p99, the ratio relops/baseline, the CPU each
side used (server: with its conversion workers; what the two cores were spent on), and a
profile of the receiver's work per request: protobuf parse, conversion to the OTLP JSON line, and the durable write (file + fsync +
rename + directory fsync), per request and per span, plus the top functions of a cProfile of
the conversion. The goal on 2 cores: >= 20,000 spans/s with p99 ack <= 100 ms.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GOAL_SPANS_S, GOAL_P99_MS = 20_000, 100.0
WARMUP_S = 2.0
KEY_ENV, KEY = "RELOPS_BENCH_RECEIVE_KEY", "bench-receive-key-0123456789"

NULL_SERVER = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Null(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def log_message(self, *args):
        pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

server = Server(("127.0.0.1", 0), Null)
print(server.server_address[1], flush=True)
server.serve_forever()
"""

# ----------------------------------------------------------------------------- the spans

_QUESTIONS = [
    "What is the refund policy for annual plans bought through a reseller?",
    "Summarise the attached incident report in three bullet points for the on-call channel.",
    "Translate 'the invoice is overdue' into German and Japanese: Die Rechnung ist überfällig / 請求書は期限切れです.",
    "Which of our regions had the highest p99 latency last week, and why?",
]
_ANSWERS = [
    "Annual plans bought through a reseller are refunded by the reseller within 30 days of purchase.",
    "- Database failover took 4 minutes\n- Alerts fired late because of a muted route\n- No data was lost",
    "German: Die Rechnung ist überfällig. Japanese: 請求書は期限切れです。",
    "eu-west-1 (p99 2.4 s): a cold cache after the Tuesday deploy.",
]
_SYSTEM = "You are a careful support assistant. Answer from the retrieved documents only; say so when they do not cover it."


def make_spans(tracer, n_traces: int, seq: int) -> int:
    """`n_traces` GenAI traces (an agent span, two chat calls and a tool call each); returns the
    number of spans made."""
    from opentelemetry.trace import SpanKind

    made = 0
    for t in range(n_traces):
        i = seq + t
        q, a = _QUESTIONS[i % len(_QUESTIONS)], _ANSWERS[i % len(_ANSWERS)]
        with tracer.start_as_current_span("invoke_agent support-bot", kind=SpanKind.INTERNAL, attributes={
                "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support-bot",
                "gen_ai.conversation.id": f"conv-{i // 3:08d}", "app.tenant": f"tenant-{i % 17}"}):
            for turn in range(2):
                inp = json.dumps([{"role": "system", "parts": [{"type": "text", "content": _SYSTEM}]},
                                  {"role": "user", "parts": [{"type": "text", "content": q}]}], ensure_ascii=False)
                out = json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": a}], "finish_reason": "stop"}],
                                 ensure_ascii=False)
                with tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT, attributes={
                        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                        "gen_ai.request.model": "gpt-4o-mini", "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                        "gen_ai.request.temperature": 0.2, "gen_ai.request.max_tokens": 512,
                        "gen_ai.response.id": f"chatcmpl-{i:010d}{turn}", "gen_ai.response.finish_reasons": ("stop",),
                        "gen_ai.usage.input_tokens": 180 + i % 50, "gen_ai.usage.output_tokens": 40 + i % 30,
                        "server.address": "api.openai.com", "server.port": 443,
                        "gen_ai.input.messages": inp, "gen_ai.output.messages": out}):
                    pass
                made += 1
            with tracer.start_as_current_span("execute_tool search_docs", kind=SpanKind.INTERNAL, attributes={
                    "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search_docs",
                    "gen_ai.tool.call.id": f"call_{i:012d}"}):
                pass
            made += 2
    return made


# ----------------------------------------------------------------------------- a client (child process)


def _client(url: str, seconds: float, batch: int, start_at: float, results, replay: bool, rate: float, index: int) -> None:
    """One exporter process: make spans for `seconds` from `start_at` (time.time()), export them,
    and put (exports, spans made) on `results`: per export (end time, spans, POST seconds, ok).
    With `replay`: no span is made; bodies the SDK encoded beforehand are posted back to back
    through the exporter's own HTTP client (the receiver measured without the clients' span
    creation and encoding); with a `rate` (spans/s of this client) paced at it (open loop: a request
    due while the previous one is still out goes as soon as it is back)."""
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult

    exports: list[tuple[float, int, float, bool]] = []
    handed = [0]

    class TimedExporter(OTLPSpanExporter):
        """The SDK exporter, its HTTP POST timed (the ack latency) and its spans counted."""

        def __init__(self, **kw: Any):
            super().__init__(**kw)
            post = self._client.export
            self._timing: list[float] = []

            def timed(data: bytes, *a: Any, **k: Any):
                t0 = time.perf_counter()
                try:
                    return post(data, *a, **k)
                finally:
                    self._timing.append(time.perf_counter() - t0)

            self._client.export = timed  # type: ignore[method-assign]

        def export(self, spans):
            self._timing.clear()
            result = super().export(spans)
            handed[0] += len(spans)
            # the last POST is the one acknowledged (earlier ones are retries after a 429/503)
            exports.append((time.time(), len(spans), self._timing[-1] if self._timing else 0.0,
                            result == SpanExportResult.SUCCESS))
            return result

    exporter = TimedExporter(endpoint=f"{url}/v1/traces", headers={"Authorization": f"Bearer {KEY}"},
                             compression=Compression.NoCompression, timeout=30)
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot", "service.version": "v2.4.1",
                                                        "deployment.environment.name": "bench"}))
    queue = batch * 8
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=queue, max_export_batch_size=batch,
                                                   schedule_delay_millis=200))
    tracer = provider.get_tracer("bench.receive", "1.0")
    made = seq = 0
    bodies = sample_bodies(batch, 4) if replay else []
    time.sleep(max(0.0, start_at - time.time()))
    end = start_at + seconds
    interval = batch / rate if rate > 0 else 0.0
    due = start_at + interval * index / 4
    while replay and time.time() < end:
        if interval:
            time.sleep(max(0.0, due - time.time()))
            due += interval
        t0 = time.perf_counter()
        ok = exporter._client.export(bodies[seq % len(bodies)]).success
        exports.append((time.time(), batch, time.perf_counter() - t0, ok))
        seq += 1
        made += batch
    while time.time() < end:
        if made - handed[0] > queue - batch:  # the exporter is behind: wait for it, drop nothing
            time.sleep(0.001)
            continue
        made += make_spans(tracer, 8, seq)
        seq += 8
    provider.shutdown()  # exports what is left
    results.put((exports, made))


# ----------------------------------------------------------------------------- measuring one side


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its children (the receiver's conversion workers)."""
    total = _cpu_seconds(pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                total += _cpu_seconds(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return total


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def drive(url: str, server_pid: int, exporters: int, seconds: float, batch: int, replay: bool = False,
          rate: float = 0.0) -> dict[str, Any]:
    """Run the clients against `url` (`rate`: replay paced at that many spans/s in all); the
    figures of the measured window."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    start_at = time.time() + (6.0 if replay else 3.0)  # every client imported and ready
    procs = [ctx.Process(target=_client, args=(url, seconds, batch, start_at, results, replay, rate / exporters, i))
             for i in range(exporters)]
    for p in procs:
        p.start()
    time.sleep(max(0.0, start_at + WARMUP_S - time.time()))
    server_cpu0, load0 = _tree_cpu_seconds(server_pid), os.getloadavg()
    clients_cpu0 = sum(_cpu_seconds(p.pid) for p in procs if p.pid)
    window0 = time.time()
    time.sleep(max(0.0, start_at + seconds - time.time()))
    window1 = time.time()
    server_cpu = _tree_cpu_seconds(server_pid) - server_cpu0
    clients_cpu = sum(_cpu_seconds(p.pid) for p in procs if p.pid) - clients_cpu0
    load = os.getloadavg()
    collected = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    exports = [e for got in collected for e in got[0]]
    ok = [e for e in exports if e[3]]
    in_window = [e for e in ok if window0 <= e[0] <= window1]
    latencies = sorted(e[2] for e in in_window)
    span = window1 - window0
    return {
        "spans_acked_per_s": sum(e[1] for e in in_window) / span,
        "requests_per_s": len(in_window) / span,
        "ack_p50_ms": _percentile(latencies, 0.50) * 1000,
        "ack_p99_ms": _percentile(latencies, 0.99) * 1000,
        "ack_max_ms": (latencies[-1] if latencies else float("nan")) * 1000,
        "spans_acked": sum(e[1] for e in ok),
        "spans_made": sum(got[1] for got in collected),
        "failed_exports": len(exports) - len(ok),
        "window_s": span,
        "server_cpu_cores": server_cpu / span,
        "clients_cpu_cores": clients_cpu / span,
        "load_avg_1m_before_after": [round(load0[0], 2), round(load[0], 2)],
    }


def _start(argv: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
                            start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"could not start {argv[:4]}: {proc.stderr.read() if proc.stderr else ''}")
    return proc, line


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def spooled_spans(received: Path) -> int:
    """Spans in the receiver's spool files (every line an OTLP JSON export)."""
    n = 0
    for f in received.rglob("*.otlp.json"):
        if any(p.startswith(".") for p in f.relative_to(received).parts):
            continue
        for line in f.read_bytes().splitlines():
            if line.strip():
                doc = json.loads(line)
                n += sum(len(s.get("spans") or []) for r in doc.get("resourceSpans") or [] for s in r.get("scopeSpans") or [])
    return n


# ----------------------------------------------------------------------------- where the receiver's time goes


def sample_bodies(batch: int, n: int) -> list[bytes]:
    """`n` export bodies of `batch` spans, encoded by the SDK's own encoder, as the clients send them."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    spans: list = []

    class Keep(SpanExporter):
        def export(self, batch_):
            spans.extend(batch_)
            return SpanExportResult.SUCCESS

    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot", "service.version": "v2.4.1"}))
    provider.add_span_processor(SimpleSpanProcessor(Keep()))
    tracer = provider.get_tracer("bench.receive", "1.0")
    seq = 0
    while len(spans) < batch * n:
        make_spans(tracer, 8, seq)
        seq += 8
    return [encode_spans(spans[i * batch:(i + 1) * batch]).SerializePartialToString() for i in range(n)]


def profile(batch: int, tmp: Path, n: int = 12) -> dict[str, Any]:
    """The receiver's per-request work on SDK-encoded bodies, stage by stage, in this process."""
    import cProfile
    import io
    import pstats

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from relops_pipeline.lib.receiver.payload import PROTOBUF, TRACES, convert
    from relops_pipeline.lib.receiver.server import tune_gc
    from relops_pipeline.lib.receiver.spool import Spool

    tune_gc()  # as in relops serve and its workers
    bodies = sample_bodies(batch, n)
    spool = Spool(tmp / "profile-landing")
    stages = {"parse": 0.0, "convert_to_json_text": 0.0, "write_fsync": 0.0}
    data = b""
    for body in bodies:
        t0 = time.perf_counter()
        ExportTraceServiceRequest.FromString(body)
        t1 = time.perf_counter()
        data = convert(body, None, PROTOBUF, TRACES, None, 1 << 30).line or b""
        t2 = time.perf_counter()
        spool.write(data)
        t3 = time.perf_counter()
        stages["parse"] += t1 - t0
        stages["convert_to_json_text"] += (t2 - t1) - (t1 - t0)  # convert = parse + the rest
        stages["write_fsync"] += t3 - t2
    prof = cProfile.Profile()
    prof.enable()
    for body in bodies:
        convert(body, None, PROTOBUF, TRACES, None, 1 << 30)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(8)
    top = [line.strip() for line in out.getvalue().splitlines() if line.strip()[:1].isdigit()][:8]
    per_request = {k: v / n * 1000 for k, v in stages.items()}
    return {"bodies": n, "body_bytes": sum(map(len, bodies)) // n, "json_bytes": len(data),
            "ms_per_request": per_request, "us_per_span": {k: v * 1000 / batch for k, v in per_request.items()},
            "cpu_ceiling_spans_s": batch / (sum(v for k, v in per_request.items() if k != "write_fsync") / 1000),
            "cprofile_top_tottime": top}


# ----------------------------------------------------------------------------- main


def _null_side(exporters: int, seconds: float, batch: int, replay: bool) -> dict[str, Any]:
    null, line = _start([sys.executable, "-c", NULL_SERVER])
    try:
        return drive(f"http://127.0.0.1:{int(line)}", null.pid, exporters, seconds, batch, replay)
    finally:
        _stop(null)


def _relops_side(home: Path, env: dict[str, str], exporters: int, seconds: float, batch: int, replay: bool,
                 serve_args: list[str], rate: float = 0.0) -> dict[str, Any]:
    subprocess.run([sys.executable, "-m", "relops_pipeline.cli", "--home", str(home), "init"], check=True, cwd=ROOT,
                   env=env, stdout=subprocess.DEVNULL)
    with open(home / "relops.yaml", "a") as fh:
        fh.write(f"\nserve:\n  api_keys:\n    - env: {KEY_ENV}\n")
    serve, line = _start([sys.executable, "-m", "relops_pipeline.cli", "--home", str(home), "serve", "--port", "0", "--json",
                           *serve_args], env)
    try:
        r = drive(json.loads(line)["url"], serve.pid, exporters, seconds, batch, replay, rate)
    finally:
        _stop(serve)
    state = json.loads((home / "landing" / "received" / ".receiver.json").read_text())
    r["server_counted_spans"] = state["counters"]["spans"]
    r["server_files"] = state["counters"]["files"]
    r["spooled_spans"] = spooled_spans(home / "landing" / "received")
    return r


def _show(name: str, r: dict[str, Any]) -> None:
    print(f"  {name:<13}: {r['spans_acked_per_s']:>9,.0f} spans/s acknowledged ({r['requests_per_s']:.1f} req/s), "
          f"ack p50 {r['ack_p50_ms']:6.1f} ms, p99 {r['ack_p99_ms']:6.1f} ms, max {r['ack_max_ms']:6.1f} ms; "
          f"CPU: server {r['server_cpu_cores']:.2f} cores, clients {r['clients_cpu_cores']:.2f} cores; "
          f"failed exports {r['failed_exports']}; load {r['load_avg_1m_before_after']}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=12.0, help="measured seconds per run, after a 2 s warm-up (default 12)")
    ap.add_argument("--exporters", type=int, default=4, help="concurrent exporter processes (default 4)")
    ap.add_argument("--batch", type=int, default=512, help="spans per export request: max_export_batch_size (default 512)")
    ap.add_argument("--workers", type=int, default=None, help="relops serve --workers (default: serve's own default)")
    ap.add_argument("--no-replay", action="store_true", help="skip the replay runs (pre-encoded bodies)")
    ap.add_argument("--rate", type=float, default=GOAL_SPANS_S,
                    help=f"spans/s offered in the paced replay run (default {GOAL_SPANS_S}; 0 skips it)")
    ap.add_argument("--json", action="store_true", help="print one JSON object with every figure at the end")
    args = ap.parse_args()
    seconds = args.seconds + WARMUP_S
    env = {**os.environ, KEY_ENV: KEY}
    report: dict[str, Any] = {"exporters": args.exporters, "batch": args.batch, "seconds": args.seconds,
                              "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"}
    print(f"{args.exporters} exporter processes, {args.batch} spans per request, {args.seconds:g} s measured per run; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    modes = [("sdk", False)] + ([] if args.no_replay else [("replay", True)])
    serve_args = [] if args.workers is None else ["--workers", str(args.workers)]
    with tempfile.TemporaryDirectory(prefix="relops-bench-receive-") as tmp_name:
        tmp = Path(tmp_name)
        for mode, replay in modes:
            print("clients: the real SDK, BatchSpanProcessor(OTLPSpanExporter protobuf/HTTP) making GenAI spans" if not replay
                  else "clients: replay of SDK-encoded bodies through the exporter's HTTP client (no span making)", flush=True)
            base = _null_side(args.exporters, seconds, args.batch, replay)
            _show("null server", base)
            rel = _relops_side(tmp / f"home-{mode}", env, args.exporters, seconds, args.batch, replay, serve_args)
            _show("relops serve", rel)
            ratio = rel["spans_acked_per_s"] / base["spans_acked_per_s"]
            met = rel["spans_acked_per_s"] >= GOAL_SPANS_S and rel["ack_p99_ms"] <= GOAL_P99_MS
            print(f"  ratio relops/null throughput: {ratio:.2f}; goal >= {GOAL_SPANS_S:,} spans/s with p99 <= "
                  f"{GOAL_P99_MS:.0f} ms: {'met' if met else 'NOT met'}")
            print(f"  durability: {rel['spans_acked']:,} spans acknowledged, {rel['spooled_spans']:,} in the spool "
                  f"({rel['server_files']:,} files; the server counted {rel['server_counted_spans']:,})"
                  + ("" if rel["spooled_spans"] >= rel["spans_acked"] else "  ** ACKNOWLEDGED SPANS MISSING **"), flush=True)
            report[mode] = {"baseline": base, "relops": rel, "ratio": ratio, "goal_met": met}
        if not args.no_replay and args.rate > 0:
            print(f"clients: replay paced at {args.rate:,.0f} spans/s in all (open loop: the latency at that load, "
                  "not at saturation)", flush=True)
            paced = _relops_side(tmp / "home-paced", env, args.exporters, seconds, args.batch, True, serve_args, args.rate)
            _show("relops serve", paced)
            met = paced["spans_acked_per_s"] >= 0.98 * args.rate and paced["ack_p99_ms"] <= GOAL_P99_MS
            print(f"  {paced['spans_acked_per_s']:,.0f} of {args.rate:,.0f} spans/s acknowledged, p99 {paced['ack_p99_ms']:.1f} ms: "
                  f"goal (p99 <= {GOAL_P99_MS:.0f} ms at {args.rate:,.0f} spans/s) {'met' if met else 'NOT met'}; "
                  f"{paced['spooled_spans']:,} of {paced['spans_acked']:,} acknowledged spans in the spool", flush=True)
            report["paced"] = {"rate": args.rate, "relops": paced, "goal_met": met}

        prof = profile(args.batch, tmp)
        report["profile"] = prof
        stages = ", ".join(f"{k} {v:.1f} ms ({prof['us_per_span'][k]:.1f} us/span)" for k, v in prof["ms_per_request"].items())
        print(f"receiver work per {args.batch}-span request ({prof['body_bytes']:,} B protobuf -> {prof['json_bytes']:,} B JSON): "
              f"{stages}; one core without fsync: {prof['cpu_ceiling_spans_s']:,.0f} spans/s")
        print("cProfile of payload.convert (what a conversion worker runs), top by own time:")
        for row in prof["cprofile_top_tottime"]:
            print("   ", row)
    print("CPU is each process's user+system time in the window, in cores (clients: span creation, encoding, "
          f"HTTP); load is the 1-minute average before/after the window. machine: {report['machine']}")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
