"""Benchmark: per-request features after a small file lands in days that are already full.

    python bench/features.py                          # 1M spans in the warehouse, then 10k more
    python bench/features.py --spans 200000 --new 5000

What follows an ingestion recomputes `trace_features` for the days it touched. It used to
recompute those days whole; it now recomputes only the traces of the batches the days' features
do not reflect yet (lib/drift/features.pending_batches). Both are measured here in the same run,
on the same warehouse, after the same second file: the incremental refresh first, then the whole
days (the baseline); both must leave the same number of rows, and the ratio is printed. The
first, whole computation of the big file's days is printed too, for scale.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> dict:
    from relops_pipeline.demo.traces import write_bench_traces
    from relops_pipeline.lib.drift.features import compute_trace_features
    from relops_pipeline.lib.ingest import ingest_file
    from relops_pipeline.lib.traces_day import refresh_features
    from relops_pipeline.lib.warehouse import open_warehouse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spans", type=int, default=1_000_000, help="spans already in the days (default 1M)")
    ap.add_argument("--new", type=int, default=10_000, help="spans of the file that lands after them (default 10k)")
    ap.add_argument("--workdir", default=None, help="where to write the files and the warehouse (default: a temp dir)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="relops-bench-features-", dir=args.workdir) as tmp_name:
        tmp = Path(tmp_name)
        big, small = tmp / "full.otlp.jsonl", tmp / "new.otlp.jsonl"
        write_bench_traces(big, args.spans, seed=1)
        write_bench_traces(small, args.new, seed=2)  # other ids, the same hours of the same day
        with open_warehouse(tmp / "relops.duckdb") as con:
            first = ingest_file(con, big)
            start = first.min_start_time.date()
            end = first.max_start_time.date() + dt.timedelta(days=1)
            t = time.perf_counter()
            initial = compute_trace_features(con, start, end)
            t_initial = time.perf_counter() - t
            second = ingest_file(con, small)
            assert second.min_start_time.date() >= start and second.max_start_time.date() < end, "the new file left the days"

            t = time.perf_counter()
            inc = refresh_features(con, start, end, incremental=True)
            t_inc = time.perf_counter() - t
            t = time.perf_counter()
            whole = compute_trace_features(con, start, end)
            t_whole = time.perf_counter() - t
    if inc.traces != whole:
        raise SystemExit(f"incremental left {inc.traces} rows, the whole recompute {whole}: they must agree")
    out = {"spans": args.spans, "new": args.new, "days": (end - start).days, "initial_s": t_initial,
           "incremental_s": t_inc, "whole_s": t_whole, "recomputed": inc.recomputed, "rows": whole,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(f"{args.spans:,} spans in {out['days']} day(s); features computed whole once: {initial:,} traces in {t_initial:.2f} s")
    print(f"then {args.new:,} new spans land in those days (batch {second.batch_id}):")
    print(f"  incremental (the traces of the pending batches): {inc.recomputed:,} traces recomputed in {t_inc:.2f} s")
    print(f"  baseline (the days whole, as before):            {whole:,} traces recomputed in {t_whole:.2f} s")
    print(f"  ratio: incremental is {t_whole / t_inc:.1f}x faster; both leave {whole:,} rows; "
          f"peak RSS {out['peak_rss_mb']:.0f} MB")
    return out


if __name__ == "__main__":
    main()
