"""Benchmark: the http eval runner against a local OpenAI-compatible server that answers after 200 ms.

    python bench/runner.py                  # 640 requests at concurrency 32 (+ 8 and 64 for context)
    python bench/runner.py --requests 1280 --latency-ms 200

The server is an asyncio HTTP/1.1 server (keep-alive, no limit of its own on concurrency) in a
separate process on 127.0.0.1, so the runner's process is measured alone. Each request is a
real chat-completions POST with a rendered prompt, parsed into a SampleResult with usage tokens.
The ideal throughput is concurrency / latency (32 / 0.2 s = 160 calls/s); the ratio
measured/ideal is the runner's efficiency (target >= 0.8 at concurrency 32).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ----------------------------------------------------------------------------- server (child process)


async def _serve(latency_s: float) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = json.loads(await reader.readexactly(length)) if length else {}
                await asyncio.sleep(latency_s)
                text = "echo: " + str(body.get("messages", [{}])[-1].get("content", ""))[:40]
                data = json.dumps({
                    "id": "bench", "object": "chat.completion", "model": body.get("model"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28},
                }).encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


# ----------------------------------------------------------------------------- runner side


def measure(url: str, concurrency: int, n: int) -> dict:
    """Run n requests through the http runner at this concurrency; calls/s and error count."""
    from relops_pipeline.lib.evals.model import Case, Manifest, SampleRequest
    from relops_pipeline.lib.evals.runners import build_runner

    manifest = Manifest(workflow="bench", version="v1", model="bench-model",
                        prompts={"system": "You triage support tickets."},
                        parameters={"temperature": 0.2, "max_tokens": 64})
    reqs = [SampleRequest(case=Case(id=f"case-{i // 4}", input={"messages": [
        {"role": "user", "content": f"ticket {i}: I was charged twice for order {i}"}]}), sample=i % 4, seed=i)
        for i in range(n)]
    runner = build_runner({"type": "http", "url": url, "concurrency": concurrency, "timeout_s": 30,
                           "max_retries": 0})
    runner.run(manifest, reqs[: min(n, concurrency)])  # warm-up: imports, first connections
    cpu0, t0 = time.process_time(), time.perf_counter()
    results = runner.run(manifest, reqs)
    secs, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    errors = sum(r.error is not None for r in results)
    lat = sorted(r.latency_ms for r in results if r.latency_ms is not None)
    return {"concurrency": concurrency, "requests": n, "seconds": secs, "calls_per_s": n / secs,
            "errors": errors, "cpu_s": cpu, "p50_ms": lat[len(lat) // 2], "p99_ms": lat[int(len(lat) * 0.99) - 1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=640)
    ap.add_argument("--latency-ms", type=float, default=200.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--context", default="8,64", help="other concurrencies to measure, comma-separated")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    latency_s = args.latency_ms / 1000.0
    if args.serve:
        asyncio.run(_serve(latency_s))
        return

    server = subprocess.Popen([sys.executable, __file__, "--serve", "--latency-ms", str(args.latency_ms)],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        print(f"machine: {platform.machine()} {platform.system()} {platform.release()}, "
              f"{os.cpu_count()} cores, Python {platform.python_version()}")
        import httpx

        print(f"httpx {httpx.__version__}; server answers after {args.latency_ms:.0f} ms "
              f"(asyncio, separate process); {args.requests} requests per run\n")
        print(f"{'concurrency':>11} {'calls/s':>9} {'ideal':>7} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'errors':>6} {'runner CPU s':>12}")
        levels = [args.concurrency] + [int(c) for c in args.context.split(",") if c.strip()]
        rows = {}
        for c in sorted(set(levels)):
            r = measure(url, c, args.requests)
            ideal = c / latency_s
            r["ideal"], r["ratio"] = ideal, r["calls_per_s"] / ideal
            rows[c] = r
            print(f"{c:>11} {r['calls_per_s']:>9.1f} {ideal:>7.0f} {r['ratio']:>6.2f} {r['p50_ms']:>7.1f} "
                  f"{r['p99_ms']:>7.1f} {r['errors']:>6} {r['cpu_s']:>12.2f}", flush=True)
        main_row = rows[args.concurrency]
        verdict = "PASS" if main_row["ratio"] >= 0.8 and main_row["errors"] == 0 else "FAIL"
        print(f"\nconcurrency {args.concurrency}: {main_row['calls_per_s']:.1f} calls/s vs ideal "
              f"{main_row['ideal']:.0f} -> ratio {main_row['ratio']:.2f} (target >= 0.8): {verdict}; "
              f"runner peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
