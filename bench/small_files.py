"""Benchmark: many small OTLP files (an exporter that writes a file per batch).

    python bench/small_files.py                       # 400 files of 25 spans
    python bench/small_files.py --files 1000 --spans-per-file 10

Normalising a file is one large DuckDB statement whose binding and optimising cost a few
tenths of a second whatever the file's size; small JSON-lines files are therefore normalised
together (lib/readers/otlp.prestage) and then ingested and committed one by one. Both ways are
measured here in the same run, into fresh warehouses: together (the default) and each file
alone (the baseline, the prestaging turned off); both must accept the same spans, and the
ratio is printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _ingest(folder: Path, warehouse: Path) -> tuple[float, int, int]:
    from relops_pipeline.lib.ingest import ingest_paths
    from relops_pipeline.lib.warehouse import open_warehouse

    with open_warehouse(warehouse) as con:
        started = time.perf_counter()
        summary = ingest_paths(con, [folder])
        took = time.perf_counter() - started
        if summary.errors:
            raise SystemExit(f"ingestion errors: {summary.errors[:3]}")
        spans = con.execute("SELECT count(*) FROM spans").fetchall()[0][0]
    return took, len(summary.files), spans


def main(argv: list[str] | None = None) -> dict:
    from relops_pipeline.demo.traces import write_bench_traces
    from relops_pipeline.lib.readers import otlp

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=400)
    ap.add_argument("--spans-per-file", type=int, default=25)
    ap.add_argument("--workdir", default=None, help="where to write the files and warehouses (default: a temp dir)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        whole = work / "all.jsonl"
        write_bench_traces(whole, args.files * args.spans_per_file)
        folder = work / "exports"
        folder.mkdir()
        lines = whole.read_bytes().splitlines(keepends=True)
        for i in range(args.files):
            chunk = lines[i * args.spans_per_file:(i + 1) * args.spans_per_file]
            (folder / f"export-{i:05d}.jsonl").write_bytes(b"".join(chunk))
        print(f"{args.files} files of {args.spans_per_file} spans ({whole.stat().st_size / 1e6:.1f} MB)", flush=True)

        together = _ingest(folder, work / "together.duckdb")
        print(f"  together (default):   {together[0]:7.2f} s  {together[1]} files, {together[2]:,} spans", flush=True)
        default_limit = otlp.PRESTAGE_FILE_BYTES
        otlp.PRESTAGE_FILE_BYTES = -1
        try:
            alone = _ingest(folder, work / "alone.duckdb")
        finally:
            otlp.PRESTAGE_FILE_BYTES = default_limit
        print(f"  each alone (baseline): {alone[0]:7.2f} s  {alone[1]} files, {alone[2]:,} spans", flush=True)
        if together[1:] != alone[1:]:
            raise SystemExit(f"the two ways disagree: {together[1:]} vs {alone[1:]}")
        ratio = alone[0] / together[0]
        print(f"  together is {ratio:.1f}x the speed of each alone "
              f"({args.files / together[0]:.0f} vs {args.files / alone[0]:.0f} files/s)")
    return {"together_s": together[0], "alone_s": alone[0], "ratio": ratio, "files": together[1], "spans": together[2]}


if __name__ == "__main__":
    main()
