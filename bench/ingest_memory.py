"""Benchmark: where `relops ingest` end to end spends its memory, step by step.

    python bench/ingest_memory.py                     # 1M generated spans, one per line
    python bench/ingest_memory.py --spans 5000000
    python bench/ingest_memory.py --file traces.jsonl --memory-limit 600MB

Runs `relops ingest FILE --json` into a fresh home, samples the resident memory of the process
(and of any children) every 0.2 s, then reads the Dagster runs it executed from the home's
instance and prints, for every step of every run (ingestion, validation and signals, features,
drift), its time and the peak RSS sampled while it ran. The baseline for scale is a process that
only imports the Dagster definitions, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _relops(*argv: str) -> list[str]:
    return [sys.executable, "-m", "relops_pipeline.cli", *argv]


def _sample(pid: int, samples: list[tuple[float, int]], stop: threading.Event) -> None:
    import psutil

    proc = psutil.Process(pid)
    while not stop.is_set():
        try:
            rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
        except psutil.Error:
            return
        samples.append((time.time(), rss))
        stop.wait(0.2)


def _wait_peak_mb(proc: subprocess.Popen) -> float:
    """Wait for the process; its peak RSS (and its waited-for children's) as the kernel kept it."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024


def _peak(samples: list[tuple[float, int]], start: float, end: float) -> float:
    inside = [rss for t, rss in samples if start <= t <= end]
    return max(inside) / 2**20 if inside else float("nan")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spans", type=int, default=1_000_000, help="spans to generate (default 1M)")
    ap.add_argument("--file", default=None, help="ingest this file instead of generating one")
    ap.add_argument("--memory-limit", default=None, help="the home's ingest.memory_limit (default: relops.yaml's, 1GB)")
    ap.add_argument("--store", action="store_true", help="a home that keeps its traces in the trace store (trace_store: true)")
    ap.add_argument("--workdir", default=None, help="where to write the file and the home (default: a temp dir)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        if args.file:
            path = Path(args.file)
        else:
            from relops_pipeline.demo.traces import write_bench_traces

            path = work / "spans.otlp.jsonl"
            write_bench_traces(path, args.spans)
        home = work / "home"
        subprocess.run(_relops("init", "--home", str(home)), check=True, capture_output=True, cwd=ROOT)
        if args.memory_limit:
            settings = home / "relops.yaml"
            text = settings.read_text()
            if "\n  memory_limit: 1GB\n" not in text:
                raise SystemExit(f"{settings}: no `memory_limit: 1GB` line to replace")
            settings.write_text(text.replace("\n  memory_limit: 1GB\n", f"\n  memory_limit: {args.memory_limit}\n"))
        if args.store:
            with open(home / "relops.yaml", "a") as fh:
                fh.write("\ntrace_store: true\n")
        env = {**os.environ, "DAGSTER_HOME": str(home / "dagster")}
        imports = subprocess.Popen([sys.executable, "-c", "import relops_pipeline.definitions"], cwd=ROOT, env=env)
        base_mb = _wait_peak_mb(imports)
        print(f"{path.name}: {path.stat().st_size / 2**30:.2f} GiB; importing the Dagster definitions alone peaks at "
              f"{base_mb:,.0f} MB", flush=True)

        samples: list[tuple[float, int]] = []
        stop = threading.Event()
        started = time.time()
        proc = subprocess.Popen(_relops("--home", str(home), "ingest", str(path), "--json"), stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=env)
        sampler = threading.Thread(target=_sample, args=(proc.pid, samples, stop), daemon=True)
        sampler.start()
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.append(proc.stdout.read() if proc.stdout else ""), daemon=True)
        reader.start()
        peak = _wait_peak_mb(proc)
        reader.join()
        stop.set()
        sampler.join()
        ended = time.time()
        if proc.returncode != 0:
            raise SystemExit(f"relops ingest failed with exit code {proc.returncode}")
        totals = json.loads(out[0])["totals"]
        print(f"relops ingest: {ended - started:.1f} s, {totals['accepted']:,} spans accepted, peak RSS {peak:,.0f} MB "
              f"(sampled: {max(r for _, r in samples) / 2**20:,.0f} MB)")

        import dagster as dg

        os.environ["DAGSTER_HOME"] = str(home / "dagster")
        rows = []
        with dg.DagsterInstance.get() as instance:
            for run in sorted(instance.get_runs(), key=lambda r: instance.get_run_stats(r.run_id).start_time or 0):
                what = run.job_name if run.job_name != "__ASSET_JOB" else ",".join(
                    sorted(k.to_user_string() for k in run.asset_selection or []))
                for step in instance.get_run_step_stats(run.run_id):
                    if step.start_time and step.end_time:
                        rows.append((what, step.step_key, step.end_time - step.start_time,
                                     _peak(samples, step.start_time, step.end_time)))
        print(f"  {'run':<52s} {'step':<26s} {'time':>8s} {'peak RSS':>10s}")
        for what, step, took, mb in rows:
            print(f"  {what[:52]:<52s} {step[:26]:<26s} {took:7.1f}s {mb:8,.0f} MB")
        return {"seconds": ended - started, "peak_rss_mb": peak, "accepted": totals["accepted"],
                "steps": [{"run": w, "step": s, "seconds": t, "peak_rss_mb": m} for w, s, t, m in rows]}


if __name__ == "__main__":
    main()
