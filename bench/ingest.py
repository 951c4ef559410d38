"""Benchmark: relops trace ingestion against a bare DuckDB `read_ndjson` of the same file.

    python bench/ingest.py                  # 1M OTLP JSON spans, both line shapes
    python bench/ingest.py --quick          # 100k spans: a smoke run
    python bench/ingest.py --repeat 3       # medians of 3 runs of every measurement
    python bench/ingest.py --traces 5000000 --shapes 1 --no-cli

Two line shapes of the same spans: one span per line (the collector file exporter writing one
request per span) and 100 spans per line (100 one-span requests merged into one line of 100
resourceSpans). Every measurement runs in its own fresh process, one after the other, on the
same file, and reports its wall time and its peak RSS:
- bare: `CREATE TABLE t AS SELECT * FROM read_ndjson(file)` into a new DuckDB file (DuckDB
  infers the nested OTLP structure; no validation, no normalisation, no dedup);
- core: `ingest_file` into a fresh warehouse — classify every line, normalise spans, reject
  bad records with reasons, dedupe, write the warehouse, commit — with DuckDB limited to 1
  thread, then with all cores (N threads: the core's parallelism is DuckDB's, in one process);
- cli: `relops ingest` end to end on a fresh home (the Dagster ingestion run and what follows
  it: signals, features and drift for the touched days); peak RSS is the largest process of
  the command's process tree;
- 2 writers: two `relops ingest` processes started together on two different files of the
  same shape, and the throughput of both (spans / wall time until both are done) against one
  writer's: into one home (its warehouse has one writer at a time, so the second waits for
  the lock between steps: serialised, measured as it is) and into two homes (two warehouses:
  what the machine allows when the writers share nothing).
Ratios are throughput against the bare load measured in the same run (higher is better;
goals: core >= 0.8, cli >= 0.6, 2 writers >= 1.6x one writer).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
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
n = con.execute("SELECT sum(len(resourceSpans)) FROM t").fetchone()[0]
con.close()
print(json.dumps({"seconds": time.perf_counter() - t, "rows": n,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

CORE = r"""
import json, resource, sys, time
from pathlib import Path
from relops_pipeline.lib.ingest import ingest_file
from relops_pipeline.lib.warehouse import open_warehouse
path, db, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open_warehouse(db) as con:
    con.execute(f"SET threads = {threads}")
    t = time.perf_counter()
    r = ingest_file(con, Path(path))
    secs = time.perf_counter() - t
print(json.dumps({"seconds": secs, "rows": r.accepted, "read": r.read, "rejected": r.rejected,
                  "duplicates": r.duplicates, "format": r.format,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

# Runs `relops <argv...>` as a child (one per writer), waits for all of them and reports the
# largest RSS of any process in their trees (RUSAGE_CHILDREN: the waited-for descendants).
CLI = r"""
import json, resource, subprocess, sys, threading, time
cmds = json.loads(sys.argv[1])
t = time.perf_counter()
procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
outs = [None] * len(procs)
def wait(i, p):
    out, err = p.communicate()
    outs[i] = {"rc": p.returncode, "seconds": time.perf_counter() - t, "stdout": out, "stderr": err[-3000:]}
waiters = [threading.Thread(target=wait, args=(i, p)) for i, p in enumerate(procs)]
for w in waiters:
    w.start()
for w in waiters:
    w.join()
print(json.dumps({"seconds": time.perf_counter() - t, "runs": outs,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def run_child(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_shape(src: Path, dest: Path, per_line: int) -> int:
    """`src` (one `{"resourceSpans":[R]}` request per line) rewritten with `per_line` requests
    merged into one line; returns bytes written."""
    head, tail = b'{"resourceSpans":[', b"]}"
    written = 0
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        group: list[bytes] = []
        for line in fin:
            line = line.rstrip(b"\n")
            assert line.startswith(head) and line.endswith(tail), "unexpected bench line layout"
            group.append(line[len(head):-len(tail)])
            if len(group) == per_line:
                written += fout.write(head + b",".join(group) + tail + b"\n")
                group = []
        if group:
            written += fout.write(head + b",".join(group) + tail + b"\n")
    return written


def make_files(tmp: Path, n: int, shapes: list[int], second: bool) -> dict[int, list[Path]]:
    """Per shape, the bench file (and a second one with other ids, for the 2-writer run)."""
    from relops_pipeline.demo.traces import write_bench_traces

    files: dict[int, list[Path]] = {}
    for seed in (1, 2) if second else (1,):
        base = tmp / f"spans-{seed}.otlp.jsonl"
        t = time.perf_counter()
        size = write_bench_traces(base, n, seed=seed)
        print(f"generated {n:,} OTLP JSON spans, 1 per line, seed {seed} ({size / 2**30:.2f} GiB) "
              f"in {time.perf_counter() - t:.1f} s", flush=True)
        for per_line in shapes:
            if per_line == 1:
                path = base
            else:
                path = tmp / f"spans-{seed}-x{per_line}.otlp.jsonl"
                write_shape(base, path, per_line)
            files.setdefault(per_line, []).append(path)
        if 1 not in shapes:
            base.unlink()
    return files


def _median(runs: list[dict]) -> dict:
    out = dict(runs[0])
    for k in ("seconds", "peak_rss_mb"):
        out[k] = statistics.median(r[k] for r in runs)
    return out


def measure_bare(path: Path, tmp: Path, repeat: int) -> dict:
    runs = []
    for i in range(repeat):
        db = tmp / f"bare-{i}.duckdb"
        runs.append(run_child(BASELINE, str(path), str(db)))
        _remove_db(db)
    return _median(runs)


def measure_core(path: Path, tmp: Path, threads: int, repeat: int) -> dict:
    runs = []
    for i in range(repeat):
        db = tmp / f"core-{threads}-{i}.duckdb"
        r = run_child(CORE, str(path), str(db), str(threads))
        if r["read"] != r["rows"] + r["rejected"] + r["duplicates"]:
            raise SystemExit(f"accounting broken: {r}")
        runs.append(r)
        _remove_db(db)
    return _median(runs)


def _relops(*argv: str) -> list[str]:
    return [sys.executable, "-m", "relops_pipeline.cli", *argv]


STORE = {"on": False}  # --store: the homes keep their traces in the trace store


def _fresh_home(tmp: Path, name: str) -> Path:
    home = tmp / name
    out = subprocess.run(_relops("init", "--home", str(home)), capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"relops init failed:\n{out.stderr[-3000:]}")
    if STORE["on"]:
        with open(home / "relops.yaml", "a") as fh:
            fh.write("\ntrace_store: true\n")
    return home


def measure_cli(paths: list[Path], tmp: Path, repeat: int, label: str, *, homes: int = 1) -> dict:
    """`relops ingest` of each path, all started together, into one fresh home (`homes=1`: the
    writers share its warehouse) or one fresh home per path."""
    import shutil

    runs = []
    for i in range(repeat):
        dirs = [_fresh_home(tmp, f"home-{label}-{i}-{h}") for h in range(homes)]
        cmds = [_relops("ingest", "--home", str(dirs[k % homes]), "--json", str(p)) for k, p in enumerate(paths)]
        r = run_child(CLI, json.dumps(cmds))
        r["ok"] = all(x["rc"] == 0 for x in r["runs"])
        r["accepted"] = 0
        for x in r["runs"]:
            with contextlib.suppress(ValueError, KeyError):
                r["accepted"] += json.loads(x["stdout"])["totals"]["accepted"]
        runs.append(r)
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
    return _median(runs)


def _remove_db(db: Path) -> None:
    for p in (db, db.with_name(db.name + ".wal")):
        p.unlink(missing_ok=True)


def _line(name: str, r: dict, rows: int, base: dict | None) -> str:
    rate = rows / r["seconds"] if r["seconds"] else 0.0
    ratio = f"  {rate / (base['rows'] / base['seconds']):5.2f}x bare" if base else ""
    return f"  {name:<28s}{r['seconds']:8.1f} s {rate:>12,.0f} spans/s  peak RSS {r['peak_rss_mb']:>7,.0f} MB{ratio}"


def run_shape(per_line: int, files: list[Path], tmp: Path, args, threads: int) -> dict:
    path = files[0]
    with open(path, "rb") as fh:
        n_lines = sum(1 for _ in fh)
    print(f"\n{per_line} span(s) per line: {path.stat().st_size / 2**30:.2f} GiB, {n_lines:,} lines", flush=True)
    res: dict = {"per_line": per_line}
    base = res["bare"] = measure_bare(path, tmp, args.repeat)
    print(_line("bare read_ndjson", base, base["rows"], None), flush=True)
    for t in sorted({1, threads}):
        core = res[f"core_{t}"] = measure_core(path, tmp, t, args.repeat)
        print(_line(f"core ingest_file, {t} thread{'s' if t > 1 else ''}", core, core["rows"], base)
              + f"  (read {core['read']:,} = accepted {core['rows']:,} + rejected {core['rejected']:,}"
              f" + duplicates {core['duplicates']:,})", flush=True)
    if args.no_cli:
        return res
    cli = res["cli"] = measure_cli([path], tmp, args.repeat, f"{per_line}-1w")
    if not cli["ok"]:
        print(f"  relops ingest FAILED: {cli['runs'][0]['stderr'][-1500:]}")
        return res
    print(_line("relops ingest (end to end)", cli, cli["accepted"], base), flush=True)
    if args.no_concurrent or len(files) < 2:
        return res
    one_rate = cli["accepted"] / cli["seconds"]
    for homes, name in ((1, "2 writers, one home"), (2, "2 writers, two homes")):
        two = res[f"cli_2w_{homes}h"] = measure_cli(files[:2], tmp, args.repeat, f"{per_line}-2w{homes}", homes=homes)
        ends = ", ".join(f"{x['seconds']:.1f} s" + (f" (exit {x['rc']})" if x["rc"] else "") for x in two["runs"])
        two_rate = two["accepted"] / two["seconds"]
        print(_line(name, two, two["accepted"], base)
              + f"  {two_rate / one_rate:4.2f}x one writer; done after {ends}", flush=True)
        for x in two["runs"]:
            if x["rc"]:
                print(f"    a writer failed: {x['stderr'].strip().splitlines()[-1:]}")
    return res


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", type=int, default=1_000_000, help="spans per file (default 1M)")
    ap.add_argument("--large", action="store_true", help="5M spans")
    ap.add_argument("--quick", action="store_true", help="100k spans: a smoke run")
    ap.add_argument("--shapes", default="1,100", help="spans per line, comma-separated (default 1,100)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per measurement; the median is printed")
    ap.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 8), help="the core's N threads")
    ap.add_argument("--no-cli", action="store_true", help="skip `relops ingest` (bare and core only)")
    ap.add_argument("--no-concurrent", action="store_true", help="skip the 2-writer run")
    ap.add_argument("--store", action="store_true",
                    help="`relops ingest` into homes that keep their traces in the trace store (relops.yaml trace_store:)")
    ap.add_argument("--workdir", default=None, help="where to write the files and databases (default: a temp dir)")
    args = ap.parse_args(argv)
    STORE["on"] = args.store
    n = 100_000 if args.quick else 5_000_000 if args.large else args.traces
    shapes = [int(s) for s in args.shapes.split(",") if s.strip()]
    load = os.getloadavg()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; median of {args.repeat}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp_path = Path(tmp)
        files = make_files(tmp_path, n, shapes, second=not (args.no_cli or args.no_concurrent))
        for per_line in shapes:
            results.append(run_shape(per_line, files[per_line], tmp_path, args, args.threads))
    load = os.getloadavg()
    print(f"\nload average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return results


if __name__ == "__main__":
    main()
