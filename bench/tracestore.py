"""Benchmark: writers appending spans into the trace store (lib/tracestore, a Delta table), and
DuckDB reading one day back through the store's view.

    python bench/tracestore.py                       # local FS, 200k spans per writer (~1-2 min)
    python bench/tracestore.py --spans 400000 --s3   # also on moto's S3 server (127.0.0.1)
    python bench/tracestore.py --repeat 3 --json      # the median of 3 runs of each case

Each writer is its own process. It makes its spans first (realistic GenAI spans: ~400 characters
of input text, ~300 of output, words varying per span, a JSON attributes object, over `--days` UTC days), waits for a common
start instant, then appends them as sources of `--batch` spans each (one source = one file in
`relops ingest`; one Delta commit each). Throughput = all spans / (last writer's end - start).
Runs, on a fresh table each:
- 1 writer, the default append (anti-join of the source's identities against the touched days'
  identities already in the table, then the commit);
- 2 writers at once, the same;
- 1 and 2 writers with `check_existing=False` (blind append: the view and compaction
  deduplicate), the mode whose cost does not grow with the day's partition.
After the 2-writer run it prints the bytes per span on disk, the files per day, and the time of
a DuckDB query (count, distinct identities, p50 latency by workflow) over one day through the
deduplicating view and over the raw table. Last, on the local FS, the time of one append of
`--batch` new spans into a day already holding `--existing` spans, with and without the
anti-join (its cost grows with the day; the blind append's does not).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE = datetime(2026, 11, 2)
WORKFLOWS = ("support", "search", "billing", "triage")


_VOCAB = [f"{a}{b}" for a in ("par", "ord", "ship", "acc", "bill", "ref", "del", "track", "rep", "sup")
          for b in ("cel", "er", "ment", "ount", "ing", "und", "ay", "ed", "ly", "al", "ion", "ive", "or",
                    "ure", "ant", "ist", "ism", "ous", "ful", "less")]


def _text(i: int, words: int) -> str:
    """About `words` words (~6 characters each), different per span (text compresses like text)."""
    return " ".join(_VOCAB[((i * 1_000_003 + k) * 2654435761 >> 9) % len(_VOCAB)] for k in range(words))


def make_spans(lo: int, hi: int, days: int):
    """Spans lo..hi-1 in the warehouse's span columns (identity t<i//4>/s<i>), over `days` days."""
    import pyarrow as pa

    ids = range(lo, hi)
    n = hi - lo
    return pa.table({
        "trace_id": [f"{i // 4:032x}" for i in ids],
        "span_id": [f"{i:016x}" for i in ids],
        "parent_span_id": [None if i % 4 == 0 else f"{i - i % 4:016x}" for i in ids],
        "span_name": ["chat gpt-4o"] * n,
        "kind": ["llm"] * n,
        "workflow": [WORKFLOWS[i % 4] for i in ids],
        "release": ["v12"] * n,
        "model": ["gpt-4o"] * n,
        "provider": ["openai"] * n,
        "start_time": [BASE + timedelta(days=i % days, milliseconds=(i * 7919) % 86_400_000) for i in ids],
        "end_time": [BASE + timedelta(days=i % days, milliseconds=(i * 7919) % 86_400_000 + 800) for i in ids],
        "latency_ms": [float(200 + i % 1800) for i in ids],
        "input_tokens": [100 + i % 900 for i in ids],
        "output_tokens": [20 + i % 300 for i in ids],
        "cost_usd": [0.0001 * (i % 50) for i in ids],
        "finish_reason": ["stop"] * n,
        "status": ["ok" if i % 50 else "error" for i in ids],
        "input_text": [_text(i, 64) for i in ids],
        "output_text": [_text(i + 7, 48) for i in ids],
        "attributes": [json.dumps({"service.name": "api", "tenant": f"t{i % 97}", "region": "eu"}) for i in ids],
        "source_format": ["otlp-json"] * n,
        "source_file": [f"/landing/batch-{lo}.jsonl"] * n,
        "source_line": [i - lo + 1 for i in ids],
        "ingest_batch_id": [f"b{lo}"] * n,
        "ingested_at": [BASE] * n,
    })


def child(uri: str, options: str, lo: int, hi: int, batch: int, days: int, start_at: float, check: bool) -> None:
    """One writer: make its spans, wait for `start_at`, append them `batch` at a time; print JSON."""
    from relops_pipeline.lib.tracestore import TraceStore

    store = TraceStore(uri, json.loads(options))
    store.table()
    tables = [(s, make_spans(s, min(s + batch, hi), days)) for s in range(lo, hi, batch)]
    while time.time() < start_at:
        time.sleep(0.001)
    t0, cpu0 = time.time(), time.process_time()
    appended = 0
    for s, table in tables:
        appended += store.append(table, f"bench-{s}", check_existing=check).appended
    end = time.time()
    print(json.dumps({"start": t0, "end": end, "appended": appended, "cpu": time.process_time() - cpu0}), flush=True)


def run_writers(uri: str, options: dict[str, str], writers: int, spans: int, batch: int, days: int,
                check: bool) -> dict[str, Any]:
    """`writers` concurrent writer processes of `spans` spans each into a fresh table at `uri`."""
    from relops_pipeline.lib.tracestore import TraceStore

    TraceStore(uri, options).table()
    start_at = time.time() + 4.0 + 1.5 * writers  # time to make the spans before the start
    procs = [subprocess.Popen(
        [sys.executable, __file__, "--child", uri, json.dumps(options), str(w * spans), str((w + 1) * spans),
         str(batch), str(days), str(start_at), "1" if check else "0"],
        stdout=subprocess.PIPE, text=True) for w in range(writers)]
    outs = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"writer exited {p.returncode}")
        outs.append(json.loads(out.strip().splitlines()[-1]))
    start = min(o["start"] for o in outs)
    end = max(o["end"] for o in outs)
    total = sum(o["appended"] for o in outs)
    cpu = sum(o["cpu"] for o in outs)
    return {"writers": writers, "check_existing": check, "spans": total, "seconds": round(end - start, 2),
            "spans_per_s": round(total / (end - start)), "spans_per_cpu_s": round(total / max(cpu, 1e-9))}


def read_side(uri: str, options: dict[str, str]) -> dict[str, Any]:
    """Size on disk and a one-day query through the view and raw."""
    import duckdb
    import pyarrow as pa

    from relops_pipeline.lib.tracestore import TraceStore

    store = TraceStore(uri, options)
    dt = store.table()
    adds = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
    total_bytes = sum(a["size_bytes"] for a in adds)
    rows = sum(a["num_records"] for a in adds)
    day = store.days()[0]
    day_files = [a for a in adds if str(a.get("partition.day")) == day.isoformat()]
    q = "SELECT count(*), count(DISTINCT (trace_id, span_id)), median(latency_ms) FROM {} GROUP BY workflow"
    con = duckdb.connect()
    t = time.perf_counter()
    store.register(con, "one_day", days=[day])
    con.execute(q.format("one_day")).fetchall()
    view_s = time.perf_counter() - t
    t = time.perf_counter()
    con.register("raw_day", dt.to_pyarrow_dataset(file_pruning_predicate=[("day", "=", day.isoformat())]))
    con.execute(q.format("raw_day")).fetchall()
    raw_s = time.perf_counter() - t
    t = time.perf_counter()
    store.register(con, "all_days")
    con.execute(q.format("all_days")).fetchall()
    all_s = time.perf_counter() - t
    return {"rows": rows, "bytes_per_span": round(total_bytes / max(rows, 1), 1), "files": len(adds),
            "days": len(store.days()), "day_files": len(day_files),
            "day_rows": sum(a["num_records"] for a in day_files),
            "one_day_view_s": round(view_s, 3), "one_day_raw_s": round(raw_s, 3), "all_days_view_s": round(all_s, 3)}


def existing_cost(uri: str, existing: int, batch: int) -> dict[str, Any]:
    """The time of one append of `batch` spans into a day that already holds `existing` spans:
    with the anti-join against the day's identities (the default) and blind."""
    from relops_pipeline.lib.tracestore import TraceStore

    store = TraceStore(uri)
    for lo in range(0, existing, 100_000):
        store.append(make_spans(lo, min(lo + 100_000, existing), 1), f"fill-{lo}", check_existing=False)
    out: dict[str, Any] = {"existing_spans_in_day": existing, "batch": batch}
    for check in (True, False):
        table = make_spans(10**9 + check, 10**9 + check + batch, 1)  # new identities, the same day
        t = time.perf_counter()
        store.append(table, f"probe-{check}", check_existing=check)
        out[f"append_s_check_{check}"] = round(time.perf_counter() - t, 2)
    return out


def _moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.1)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print a table (or JSON) and return the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", type=int, default=200_000, help="spans per writer")
    ap.add_argument("--batch", type=int, default=50_000, help="spans per source (one commit)")
    ap.add_argument("--days", type=int, default=2)
    ap.add_argument("--s3", action="store_true", help="also run against moto's S3 server")
    ap.add_argument("--existing", type=int, default=1_000_000,
                    help="spans already in the day for the append-cost probe (0: skip it)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each case; the median is kept")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    targets: list[tuple[str, Any]] = [("local", None)]
    moto = None
    if a.s3:
        moto, endpoint = _moto()
        targets.append(("s3", endpoint))
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                               "spans_per_writer": a.spans, "batch": a.batch, "runs": []}
    tmp = Path(tempfile.mkdtemp(prefix="relops-bench-tracestore-"))
    try:
        for name, endpoint in targets:
            for check in (True, False):
                for writers in (1, 2):
                    if endpoint is None:
                        uri, options = str(tmp / f"{name}-{writers}-{check}"), {}
                    else:
                        import boto3

                        bucket = f"bench-{uuid.uuid4().hex[:10]}"
                        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                                     region_name="us-east-1").create_bucket(Bucket=bucket)
                        uri = f"s3://{bucket}/traces"
                        options = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test",
                                   "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
                    reps = [run_writers(uri if i == 0 else f"{uri}-r{i}", options, writers, a.spans, a.batch, a.days, check)
                            for i in range(a.repeat)]
                    r = sorted(reps, key=lambda x: x["spans_per_s"])[len(reps) // 2]
                    r["all_spans_per_s"] = [x["spans_per_s"] for x in reps]
                    r["target"] = name
                    if writers == 2 and check:
                        r["read"] = read_side(uri, options)
                    results["runs"].append(r)
                    if not a.json:
                        print(f"{name:5} writers={writers} check_existing={check!s:5} {r['spans']:>9,} spans "
                              f"{r['seconds']:>7.2f} s {r['spans_per_s']:>9,} spans/s (runs {r['all_spans_per_s']}), "
                              f"{r['spans_per_cpu_s']:,} spans per CPU-second", flush=True)
                        if "read" in r:
                            print(f"      read: {r['read']}", flush=True)
        if a.existing:
            results["existing_day"] = existing_cost(str(tmp / "existing"), a.existing, a.batch)
            if not a.json:
                print(f"append into a full day: {results['existing_day']}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if moto is not None:
            moto.terminate()
            moto.wait(10)
    if a.json:
        print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        u, o, lo_, hi_, b, d, st, c = sys.argv[2:10]
        child(u, o, int(lo_), int(hi_), int(b), int(d), float(st), c == "1")
    else:
        main()
