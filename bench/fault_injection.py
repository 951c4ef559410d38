"""Fault injection: SIGKILL relops at random moments and check that nothing is lost.

    .venv/bin/python bench/fault_injection.py [--kills 20] [--seed 1] [--keep DIR]

Kills, in turn, an ingestion (during its chunks or its follow-ups), a rollback and an alert
delivery stuck on a sink that never answers, each at a random moment. Between kills, the next
command simply runs (it must cope with what the kill left). At the end, after one more
ingestion and `relops doctor --fix`, it checks and prints:
- nothing lost or duplicated: the warehouse holds exactly the spans of a clean reference
  ingestion of the same files;
- signals equal a recomputation from the spans;
- every pointer file agrees with the registry, and the registry (with every gate decision and
  rollback) agrees with the keyed event log, which verifies;
- a rollback started during an ingestion flips the pointer within 10 s.
Exit 0 when every check holds (and at least --kills kills landed), 1 otherwise. It takes about
six minutes on 2 cores, so it is not part of `make test`: `make test-faults` runs it as the test
relops_pipeline_tests/test_fault_injection.py, and CI (.ci/run) runs that after `make test`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RELOPS = str(Path(sys.executable).parent / "relops")


def _cli(home: Path, *args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([RELOPS, "--home", str(home), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def _spawn(home: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([RELOPS, "--home", str(home), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})}, start_new_session=True)


def _kill(proc: subprocess.Popen) -> bool:
    """SIGKILL the command and everything it started; whether it was still running."""
    alive = proc.poll() is None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return alive


def _put_canary(home: Path) -> None:
    """doc-qa with v2.4.0 in canary (what a rollback then undoes), pointer file written."""
    from relops_pipeline.lib.home import Home
    from relops_pipeline.lib.registry.rollout import adopt_state
    from relops_pipeline.lib.registry.state import RegistryState, get_state, write_pointer
    from relops_pipeline.lib.warehouse import open_warehouse

    h = Home.resolve(home)
    with open_warehouse(h.warehouse_path) as con:
        seq = get_state(con, "doc-qa").seq
        state = RegistryState("doc-qa", seq=seq + 1, live="v2.3.0", canary="v2.4.0", canary_percent=50.0, stage="canary",
                              last_known_good="v2.1.0", updated_by="bench", reason="fault injection",
                              updated_at=dt.datetime.now(dt.UTC).replace(tzinfo=None))
        state = adopt_state(con, state, actor="bench", reason="fault injection: a canary to roll back")
    write_pointer(h.registry_dir, state)


def _hanging_sink() -> tuple[socket.socket, int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):  # closed at the end
            while True:
                held.append(server.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    return server, server.getsockname()[1]


def _followup_running(instance) -> bool:
    import dagster as dg

    runs = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    return any(r.tags.get("relops/trigger") == "ingest:cli" for r in runs)


def _raise_alert(home: Path, i: int) -> None:
    from relops_pipeline.lib.alerts.model import Alert
    from relops_pipeline.lib.alerts.service import raise_alert
    from relops_pipeline.lib.home import Home
    from relops_pipeline.lib.warehouse import open_warehouse

    h = Home.resolve(home)
    with open_warehouse(h.warehouse_path) as con:
        raise_alert(con, h, Alert(kind="test", severity="error", title=f"fault {i}", workflow="doc-qa", dedup_key=f"f:{i}"))


def _spans(home: Path) -> set[tuple[str, str]]:
    from relops_pipeline.lib.warehouse import open_warehouse

    with open_warehouse(home / "warehouse" / "relops.duckdb", read_only=True) as con:
        return set(con.execute("SELECT trace_id, span_id FROM spans").fetchall())


def _signals_match_recomputation(home: Path, scratch: Path) -> bool:
    """The stored daily signals equal the ones recomputed from the spans (on a copy)."""
    from relops_pipeline.lib.signals import compute_daily_signals
    from relops_pipeline.lib.warehouse import open_warehouse

    copy = scratch / "copy.duckdb"
    shutil.copyfile(home / "warehouse" / "relops.duckdb", copy)
    cols = "day, workflow, release, spans, errors"
    with open_warehouse(copy) as con:
        stored = set(con.execute(f"SELECT {cols} FROM daily_signals").fetchall())
        lo, hi = con.execute("SELECT min(start_time)::DATE, max(start_time)::DATE FROM spans").fetchall()[0]
        compute_daily_signals(con, lo, hi + dt.timedelta(days=1))
        fresh = set(con.execute(f"SELECT {cols} FROM daily_signals").fetchall())
    return stored == fresh


def _pointers_agree(home: Path) -> bool:
    from relops_pipeline.lib.registry.state import list_states, pointer_seq_on_disk
    from relops_pipeline.lib.warehouse import open_warehouse

    with open_warehouse(home / "warehouse" / "relops.duckdb", read_only=True) as con:
        states = list_states(con)
    return all(pointer_seq_on_disk(home / "registry", s.workflow) == s.seq for s in states)


def _chain_agrees(home: Path) -> tuple[bool, str]:
    """The keyed event log verifies (hashes, MACs, anchor) and every registry row, gate decision
    and rollback agrees with it."""
    from relops_pipeline.lib import audit, ledger
    from relops_pipeline.lib.warehouse import open_warehouse

    with open_warehouse(home / "warehouse" / "relops.duckdb", read_only=True) as con:
        result = audit.verify_chain(con)
        rows = ledger.disagreements(con)
    detail = f"{result.checked} events" + "".join(f"; {p.seq}: {p.message}" for p in result.problems)
    detail += "".join(f"; {d.line()}" for d in rows)
    return result.ok and not rows and result.head_checked, detail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", default=None, help="work in this folder and keep it")
    parser.add_argument("--scale", type=float, default=0.4, help="traffic of the generated traces (demo scale)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="relops-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    from relops_pipeline.demo.traces import generate_demo_traces
    from relops_pipeline.lib.home import Home

    traces = work / "traces"
    if not traces.exists():
        generate_demo_traces(traces, scale=args.scale, days=range(0, 42))
    files = sorted(traces.rglob("*.jsonl"))
    rng.shuffle(files)
    batches = [files[i:i + 6] for i in range(0, len(files), 6)]  # deliveries of new files, in turn

    reference, home = work / "reference", work / "home"
    for h in (reference, home):
        shutil.rmtree(h, ignore_errors=True)
        Home.resolve(h).init(example=True)  # doc-qa, whose alert routes are swapped below
    t0 = time.monotonic()
    assert _cli(reference, "ingest", str(traces)).returncode == 0
    print(f"reference ingestion: {time.monotonic() - t0:.1f} s, {len(_spans(reference)):,} spans in {len(files)} files")

    server, port = _hanging_sink()
    wf = home / "workflows" / "doc-qa.yaml"
    wf.write_text(wf.read_text().replace(
        "    - {type: file}                 # <home>/alerts/alerts.jsonl\n",
        f"    - {{type: webhook, url: 'http://127.0.0.1:{port}/hook', secret_env: HOOK_SECRET, timeout_s: 30}}\n"))
    env = {"HOOK_SECRET": "s", "RELOPS_INGEST_CHUNK_MB": "4"}
    assert _cli(home, "ingest", str(batches[0][0]), env=env).returncode == 0  # the warehouse exists
    _put_canary(home)

    kinds = ["ingest", "followups", "rollback", "deliver"]
    done: dict[str, int] = {k: 0 for k in kinds}
    worst_next = 0.0
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(home / "dagster"))
    attempt = 0
    while sum(done.values()) < args.kills and attempt < 3 * args.kills:
        i, kind = attempt, kinds[attempt % len(kinds)]
        attempt += 1
        if kind in ("ingest", "followups"):
            proc = _spawn(home, "ingest", *map(str, batches[i % len(batches)]), env=env)
            if kind == "ingest":
                time.sleep(rng.uniform(3.5, 7.0))
            else:  # once its follow-ups run, at a random moment in them
                deadline = time.monotonic() + 120
                while proc.poll() is None and time.monotonic() < deadline and not _followup_running(instance):
                    time.sleep(0.1)
                time.sleep(rng.uniform(0.0, 2.5))
        elif kind == "rollback":
            _put_canary(home)
            proc = _spawn(home, "rollback", "doc-qa", "--reason", f"fault {i}", env=env)
            time.sleep(rng.uniform(2.0, 6.0))
        else:
            _raise_alert(home, i)  # something to deliver, to a sink that never answers
            proc = _spawn(home, "alerts", "deliver", env=env)
            time.sleep(rng.uniform(3.0, 8.0))
        killed = _kill(proc)
        done[kind] += int(killed)
        # The next command must cope with whatever the kill left.
        t = time.monotonic()
        status = _cli(home, "status", "--json", env=env, timeout=300)
        worst_next = max(worst_next, time.monotonic() - t)
        print(f"attempt {i + 1:2d}: {kind:9s} {'killed' if killed else 'had ended'}; next command exit {status.returncode}")

    assert _cli(home, "ingest", str(traces), env=env).returncode == 0
    fixed = _cli(home, "doctor", "--fix", env=env)
    print(fixed.stdout.strip())
    server.close()

    lost = _spans(reference) - _spans(home)
    extra = _spans(home) - _spans(reference)
    signals_ok = _signals_match_recomputation(home, work)
    pointers_ok = _pointers_agree(home)
    chain_ok, chain_detail = _chain_agrees(home)

    _put_canary(home)
    shutil.rmtree(home / "landing", ignore_errors=True)
    ingest = _spawn(home, "ingest", str(traces), env={**env, "RELOPS_INGEST_CHUNK_MB": "2"})
    time.sleep(8.0)
    started = time.monotonic()
    rollback = subprocess.Popen([RELOPS, "--home", str(home), "rollback", "doc-qa", "--reason", "after the faults"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **env}, start_new_session=True)
    from relops_pipeline.registry import read_pointer

    while (time.monotonic() - started < 120 and rollback.poll() in (None, 0)
           and read_pointer(home / "registry", "doc-qa").canary):
        time.sleep(0.05)
    flip = time.monotonic() - started
    _, rollback_err = rollback.communicate(timeout=300)
    if rollback.returncode != 0:
        print(f"the rollback failed (exit {rollback.returncode}): {rollback_err.strip()[-2000:]}")
        flip = float("inf")
    ingest.wait(timeout=600)

    print(f"\nkills: {sum(done.values())} ({', '.join(f'{k} {n}' for k, n in done.items())}); "
          f"slowest next command after a kill: {worst_next:.1f} s")
    print(f"spans lost: {len(lost)}; duplicated or extra: {len(extra)}; signals equal a recomputation: {signals_ok}; "
          f"pointers agree with the registry: {pointers_ok}")
    print(f"event log and the tables it backs agree: {chain_ok} ({chain_detail})")
    print(f"rollback during an ingestion after the faults: pointer flipped in {flip:.1f} s")
    ok = (not lost and not extra and signals_ok and pointers_ok and chain_ok and flip <= 10
          and fixed.returncode == 0 and sum(done.values()) >= args.kills)
    print("ALL CHECKS HOLD" if ok else "A CHECK FAILED")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
