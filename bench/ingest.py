"""Benchmark: relops trace ingestion against a bare DuckDB `read_ndjson` of the same file.

    python bench/ingest.py                 # 1M OTLP JSON traces
    python bench/ingest.py --traces 5000000
    python bench/ingest.py --large         # same as --traces 5000000

Both sides run in their own fresh process, one after the other, on the same file:
- baseline: `CREATE TABLE t AS SELECT * FROM read_ndjson(file)` into a new DuckDB file
  (DuckDB infers the nested OTLP structure; no validation, no normalisation, no dedup);
- relops: `ingest_file` — the same function the Dagster ingestion op runs: classify every line,
  normalise spans, reject bad records with reasons, dedupe, write the warehouse, commit.
It prints rows/s, the ratio relops/baseline (throughput; higher is better, target >= 0.6) and
each side's peak RSS (target <= 1.5 GB at 5M).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASELINE = r"""
import json, resource, sys, time, duckdb
path, db = sys.argv[1], sys.argv[2]
con = duckdb.connect(db)
t = time.perf_counter()
con.execute("CREATE TABLE t AS SELECT * FROM read_ndjson(?)", [path])
n = con.execute("SELECT count(*) FROM t").fetchone()[0]
con.close()
print(json.dumps({"seconds": time.perf_counter() - t, "rows": n,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

RELOPS = r"""
import json, resource, sys, time
from pathlib import Path
from relops_pipeline.lib.ingest import ingest_file
from relops_pipeline.lib.warehouse import open_warehouse
path, db = sys.argv[1], sys.argv[2]
with open_warehouse(db) as con:
    t = time.perf_counter()
    r = ingest_file(con, Path(path))
    secs = time.perf_counter() - t
print(json.dumps({"seconds": secs, "rows": r.accepted, "read": r.read, "rejected": r.rejected,
                  "duplicates": r.duplicates, "format": r.format,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_child(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", type=int, default=1_000_000)
    ap.add_argument("--large", action="store_true", help="5M traces")
    ap.add_argument("--workdir", default=None, help="where to write the file and databases (default: a temp dir)")
    args = ap.parse_args()
    n = 5_000_000 if args.large else args.traces

    from relops_pipeline.demo.traces import write_bench_traces

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        data = tmp / "traces.otlp.jsonl"
        t = time.perf_counter()
        size = write_bench_traces(data, n)
        print(f"generated {n:,} OTLP JSON traces ({size / 2**30:.2f} GiB) in {time.perf_counter() - t:.1f} s", flush=True)
        base = run_child(BASELINE, str(data), str(tmp / "baseline.duckdb"))
        print(f"baseline read_ndjson : {base['seconds']:7.1f} s  {base['rows'] / base['seconds']:>12,.0f} rows/s"
              f"  peak RSS {base['peak_rss_mb']:,.0f} MB", flush=True)
        rel = run_child(RELOPS, str(data), str(tmp / "relops.duckdb"))
        assert rel["read"] == rel["rows"] + rel["rejected"] + rel["duplicates"]
        print(f"relops ingest_file   : {rel['seconds']:7.1f} s  {rel['rows'] / rel['seconds']:>12,.0f} rows/s"
              f"  peak RSS {rel['peak_rss_mb']:,.0f} MB"
              f"  (accepted {rel['rows']:,}, rejected {rel['rejected']:,}, duplicates {rel['duplicates']:,})")
        ratio = (rel["rows"] / rel["seconds"]) / (base["rows"] / base["seconds"])
        print(f"ratio relops/baseline throughput: {ratio:.2f}  (target >= 0.6)")
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")


if __name__ == "__main__":
    main()
