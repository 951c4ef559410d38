"""Benchmark: validating a large day with Great Expectations in frames against in one frame.

    python bench/validation.py                      # a day of 1M spans
    python bench/validation.py --spans 2000000

The day's spans go to GX (on pandas) in frames of about VALIDATION_FRAME_ROWS spans, partitioned
by trace_id (lib/traces_day.validate_window), instead of all at once. Each way runs in its own
fresh process on the same warehouse (built once here with the ingestion core); the baseline is
one frame of the whole day, as before. Prints wall time and peak RSS of each, the ratios, and
checks that both reach the same verdicts and counts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import datetime as dt, json, resource, sys, time
from relops_pipeline.lib import traces_day
from relops_pipeline.lib.warehouse import open_warehouse
db, frame_rows = sys.argv[1], int(sys.argv[2])
traces_day.VALIDATION_FRAME_ROWS = frame_rows
with open_warehouse(db) as con:
    lo, hi = con.execute("SELECT min(start_time), max(start_time) FROM spans").fetchone()
    t = time.perf_counter()
    v = traces_day.validate_window(con, lo, hi + dt.timedelta(seconds=1))
    secs = time.perf_counter() - t
print(json.dumps({"seconds": secs, "spans": v.spans, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "verdicts": [[r.name, r.passed, r.severity, r.observed.get("unexpected_count")] for r in v.validation.rules]}))
"""


def child(db: Path, frame_rows: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(db), str(frame_rows)], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    from relops_pipeline.demo.traces import write_bench_traces
    from relops_pipeline.lib.ingest import ingest_file
    from relops_pipeline.lib.traces_day import VALIDATION_FRAME_ROWS
    from relops_pipeline.lib.warehouse import open_warehouse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spans", type=int, default=1_000_000, help="spans in the day (default 1M)")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="relops-bench-validation-", dir=args.workdir) as tmp_name:
        tmp = Path(tmp_name)
        traces, db = tmp / "day.otlp.jsonl", tmp / "relops.duckdb"
        write_bench_traces(traces, args.spans, seed=1)
        with open_warehouse(db) as con:
            ingest_file(con, traces)
        traces.unlink()
        framed = child(db, VALIDATION_FRAME_ROWS)
        whole = child(db, 10**12)  # the baseline: the whole window in one frame
    if framed["verdicts"] != whole["verdicts"] or framed["spans"] != whole["spans"]:
        raise SystemExit(f"the verdicts differ:\n{framed['verdicts']}\n{whole['verdicts']}")
    print(f"a day of {framed['spans']:,} spans validated with Great Expectations:")
    print(f"  one frame (baseline):        {whole['seconds']:6.1f} s  peak RSS {whole['peak_rss_mb']:6,.0f} MB")
    print(f"  frames of {VALIDATION_FRAME_ROWS:,} spans: {framed['seconds']:6.1f} s  peak RSS {framed['peak_rss_mb']:6,.0f} MB")
    print(f"  ratio: {whole['seconds'] / framed['seconds']:.2f}x the baseline's speed, "
          f"{framed['peak_rss_mb'] / whole['peak_rss_mb']:.2f}x its peak memory; same verdicts and counts")
    return {"framed": framed, "whole": whole}


if __name__ == "__main__":
    main()
