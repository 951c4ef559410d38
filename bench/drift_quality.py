"""Alert-quality benchmark for production drift: false alerts on stationary traffic, and how
fast a 10 %-point topic-share shift is caught.

    python bench/drift_quality.py                 # weekly volumes 700, 1200, 3000 (the demo's), 30000
                                                  # (560 worlds, about 27 min on 2 busy cores)
    python bench/drift_quality.py --rows 3000 --reps 2 --detect-reps 2   # a quick run (1 min)

Each simulated world is a fresh in-memory warehouse whose `trace_features` rows come from
bench/drift.py's vectorised generator (support-triage-like and doc-qa-like traffic), and each
verdict is the real `compute_drift` (workflow scope, as the drift checks read it) with the
example workflows' drift config (relops_pipeline/example/workflows/*.yaml: pinned two-week reference,
critical [topic, input_chars] -> ERROR, drifted share > 0.5 -> WARN). An alert is a workflow
summary with a severity.

1. False alerts: a two-week reference, then 26 weekly windows drawn from the same
   distributions (target: at most 1 alert per workflow over the 26 weeks). Repeated --reps
   times with independent draws; printed as the mean and the worst replication.
2. Detection: a two-week reference, then a topic mix moved by 10 %-points from the week's
   first day. Three shapes per workflow: a new topic at 10 % (the others scaled down), 10
   points from the largest topic to the smallest, and 10 points from the largest to the second
   largest (the smallest Jensen-Shannon distance a 10-point move between existing topics makes
   here: 0.108 for support-triage, 0.112 for doc-qa, against the default threshold 0.1).
   Delay = the first weekly window that alerts (1 = the first week of the shift; target <= 1).
   Also the rolling drift (trailing 7 days, computed daily) when the shift starts on a
   Thursday: delay in days from the onset (day 1 = the onset day).
3. Thresholds: the per-window scores of (1) and (2) judged with other thresholds (same
   scores, only the verdicts change), to show what a different default would trade.

Volumes: at most 1000 traces in a window means p-value methods (KS, chi-square, Z), above
that distance methods (normed Wasserstein, Jensen-Shannon); 1200/week is the noisiest
distance-method case (a two-week reference is twice the week).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.drift import DOCQA_TOPICS, SUPPORT_TOPICS, insert_features  # noqa: E402

START = date(2026, 9, 28)  # a Monday; the example configs pin the reference to its first 14 days
REF_DAYS = 14
WORKFLOWS = {"support-triage": ("support", SUPPORT_TOPICS), "doc-qa": ("docqa", DOCQA_TOPICS)}
DETECT_WEEKS = 3
DETECT_DAYS = 10


def example_drift_config(workflow: str) -> dict:
    """The `drift:` section of the example workflow (relops_pipeline/example/workflows/<name>.yaml)."""
    doc = yaml.safe_load((ROOT / "relops_pipeline" / "example" / "workflows" / f"{workflow}.yaml").read_text())
    return doc.get("drift") or {}


def shifts(topics: dict[str, float]) -> dict[str, dict[str, float]]:
    """The 10 %-point shifts of a topic mix, by name."""
    order = sorted(topics, key=topics.get, reverse=True)
    out = {"new topic at 10 %": {**{k: v * 0.9 for k, v in topics.items()}, "new-topic": 0.10}}
    for label, a, b in (("largest -> smallest", order[0], order[-1]), ("largest -> 2nd largest", order[0], order[1])):
        out[f"10 pts {label}"] = {**topics, a: topics[a] - 0.10, b: topics[b] + 0.10}
    return out


@dataclass(frozen=True)
class Task:
    kind: str  # stationary | weekly | rolling
    workflow: str
    rows: int  # traces per week
    rep: int
    shift: str | None = None


def _con():
    import duckdb

    from relops_pipeline.lib.warehouse import migrate

    con = duckdb.connect()
    migrate(con)
    return con


def _days(con, task: Task, first: date, n_days: int, topics: dict[str, float], tag: str) -> None:
    """Append n_days of traffic from `first` with the given topic mix (one insert per day)."""
    kind, _ = WORKFLOWS[task.workflow]
    per_day = max(1, round(task.rows / 7))
    for d in range(n_days):
        day = first + timedelta(days=d)
        key = repr((task.workflow, task.rows, task.rep, task.kind, task.shift, tag, d)).encode()
        seed = int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "little")
        insert_features(con, workflow=task.workflow, start=day, days=1, rows=per_day, seed=seed, kind=kind,
                        topics=topics, id_prefix=f"{tag}{d}")


def _window(con, cfg, wf: str, start: date, granularity: str) -> dict:
    """compute_drift of the 7 days from `start` (workflow scope), reduced to what is judged."""
    from relops_pipeline.lib.drift.compute import compute_drift

    s = compute_drift(con, wf, cfg, start, start + timedelta(days=7), granularity=granularity,
                      scopes=("workflow",))[0]
    return {"severity": s.severity, "warn": s.drifted_share_warn, "critical": list(s.critical_columns),
            "columns": {c.column: (c.method, c.score, c.threshold, c.drifted) for c in s.columns}}


def run_task(task: Task) -> dict:
    """One simulated world: a two-week reference, then the task's windows (all of them, so
    that other thresholds can be judged on the same scores)."""
    from relops_pipeline.lib.drift.config import DriftConfig

    _, topics = WORKFLOWS[task.workflow]
    cfg = DriftConfig.from_workflow(example_drift_config(task.workflow))
    con = _con()
    t = time.perf_counter()
    _days(con, task, START, REF_DAYS, topics, "ref")
    first = START + timedelta(days=REF_DAYS)
    if task.kind == "stationary":
        _days(con, task, first, 26 * 7, topics, "cur")
        windows = [_window(con, cfg, task.workflow, first + timedelta(weeks=w), "weekly") for w in range(26)]
    elif task.kind == "weekly":  # shifted from the first day of the first week
        _days(con, task, first, DETECT_WEEKS * 7, shifts(topics)[task.shift], "cur")
        windows = [_window(con, cfg, task.workflow, first + timedelta(weeks=w), "weekly") for w in range(DETECT_WEEKS)]
    else:  # rolling: stationary Monday-Wednesday, shifted from Thursday
        onset = first + timedelta(days=3)
        _days(con, task, first, 3, topics, "pre")
        _days(con, task, onset, DETECT_DAYS, shifts(topics)[task.shift], "cur")
        # day d of the shift (1-based): the trailing 7 days ending with it
        windows = [_window(con, cfg, task.workflow, onset + timedelta(days=d - 7), "rolling")
                   for d in range(1, DETECT_DAYS + 1)]
    con.close()
    return {"task": task, "windows": windows, "seconds": time.perf_counter() - t}


# Alternative threshold sets, judged on the same scores: {method: threshold} for every column
# and {"topic": {method: threshold}} for the topic column alone, as the drift config's
# `thresholds` takes them (p-value thresholds before compute_drift's Bonferroni division).
CANDIDATES: dict[str, dict] = {
    "defaults (Evidently's; p-values Bonferroni)": {},
    "topic JS 0.09": {"topic": {"jensenshannon": 0.09}},
    "topic JS 0.08": {"topic": {"jensenshannon": 0.08}},
    "topic JS 0.07": {"topic": {"jensenshannon": 0.07}},
    "p-values 0.01": {"ks": 0.01, "z": 0.01, "chisquare": 0.01},
    "p-values 0.01, topic JS 0.08": {"ks": 0.01, "z": 0.01, "chisquare": 0.01, "topic": {"jensenshannon": 0.08}},
}
P_VALUE = {"ks", "z", "chisquare"}


def alerts(window: dict, thresholds: dict) -> bool:
    """Would this window alert under `thresholds` (see CANDIDATES)? Same scores; the drift
    config's critical and share rules and compute_drift's Bonferroni division unchanged. With
    {} it is compute_drift's own verdict."""
    if not thresholds:
        return bool(window["severity"])
    cols = window["columns"]
    m = sum(1 for method, score, _t, _d in cols.values() if method in P_VALUE and score is not None)
    drifted = {}
    for col, (method, score, threshold, was) in cols.items():
        if was is None:
            continue
        if method in P_VALUE:
            m_div = m if m > 1 else 1
            configured = thresholds.get(col, {}).get(method, thresholds.get(method, threshold * m_div))
            thr = configured / m_div
            drifted[col] = score <= thr if method == "ks" else score < thr
        else:
            drifted[col] = score >= thresholds.get(col, {}).get(method, thresholds.get(method, threshold))
    if not drifted:
        return False
    share = sum(drifted.values()) / len(drifted)
    return any(drifted.get(c) for c in window["critical"]) or share > window["warn"]


def _delay(windows: list[dict], thresholds: dict) -> int | None:
    return next((i for i, w in enumerate(windows, 1) if alerts(w, thresholds)), None)


def _hist(delays: list[int | None], unit: str, cap: int) -> str:
    caught = [d for d in delays if d is not None]
    parts = [f"{caught.count(d)}× {d}" for d in sorted(set(caught))]
    if len(caught) < len(delays):
        parts.append(f"{len(delays) - len(caught)}× not within {cap}")
    return ", ".join(parts) + f" {unit}"


def _worst(delays: list[int | None], cap: int) -> str:
    return f">{cap}" if None in delays else str(max(delays))


def _config_text(wf: str) -> str:
    c = example_drift_config(wf)
    ref = c.get("reference", {})
    return (f"reference {ref.get('start')} .. {ref.get('end')}, critical {c.get('critical')} -> ERROR, "
            f"drifted share > {c.get('drifted_share_warn')} -> WARN, thresholds {c.get('thresholds', {}) or 'default'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="700,1200,3000,30000",
                    help="traces per week, comma-separated (one set of worlds per volume); e.g. --rows 500 for a quick run")
    ap.add_argument("--reps", type=int, default=10, help="independent 26-week stationary worlds per workflow and volume")
    ap.add_argument("--detect-reps", type=int, default=10, help="independent worlds per shift shape, workflow and volume")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    volumes = [int(v) for v in str(args.rows).split(",")]
    t0 = time.perf_counter()

    tasks = [Task("stationary", wf, n, r) for n in volumes for wf in WORKFLOWS for r in range(args.reps)]
    for n in volumes:
        for wf, (_, topics) in WORKFLOWS.items():
            for sh in shifts(topics):
                tasks += [Task(k, wf, n, r, sh) for k in ("weekly", "rolling") for r in range(args.detect_reps)]
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            results = list(pool.map(run_task, tasks, chunksize=1))
    else:
        results = [run_task(t) for t in tasks]
    by: dict[tuple, list[list[dict]]] = {}
    for r in results:
        t = r["task"]
        by.setdefault((t.kind, t.workflow, t.rows, t.shift), []).append(r["windows"])

    print(f"drift alert quality: {len(tasks)} simulated worlds, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, {args.workers} worker(s); load average at the end "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for wf in WORKFLOWS:
        print(f"  {wf}: {_config_text(wf)}")
    print()

    print(f"1. false alerts over 26 stationary weeks, {args.reps} independent worlds each (alert = the workflow "
          "summary has a severity; target <= 1 per workflow)")
    for n in volumes:
        for wf in WORKFLOWS:
            worlds = by[("stationary", wf, n, None)]
            counts = [sum(alerts(win, {}) for win in w) for w in worlds]
            mean = sum(counts) / len(counts)
            methods = sorted({m for w in worlds for win in w for (m, *_r) in win["columns"].values() if m})
            flagged: dict[str, int] = {}
            for w in worlds:
                for win in w:
                    for c, (_m, _s, _t, d) in win["columns"].items():
                        flagged[c] = flagged.get(c, 0) + bool(d)
            print(f"  {wf:<15} {n:>6,}/week: alerts {counts}: mean {mean:.2f}, worst {max(counts)}  "
                  f"[{'met' if mean <= 1 else 'MISSED'}]   methods: {', '.join(methods)}")
            top = sorted(((k, c) for c, k in flagged.items() if k), reverse=True)
            if top:
                print(f"      column-weeks flagged (of {26 * len(worlds)}): " + ", ".join(f"{c} {k}" for k, c in top))
            js = [win["columns"]["topic"][1] for w in worlds for win in w
                  if win["columns"].get("topic", (None,))[0] == "jensenshannon"]
            if js:
                print(f"      topic Jensen-Shannon distance on stationary weeks: max {max(js):.4f}, "
                      f"median {sorted(js)[len(js) // 2]:.4f}")
    print()

    print(f"2. detection of a 10 %-point topic-share shift, {args.detect_reps} independent worlds per shape "
          "(target <= 1 week)")
    print("   weekly: the first weekly window that alerts, 1 = the first week of the shift (shift from a Monday);")
    print("   rolling: the day of the shift whose trailing-7-day window first alerts (shift from a Thursday)")
    for n in volumes:
        for wf, (_, topics) in WORKFLOWS.items():
            for sh in shifts(topics):
                weekly, rolling = by[("weekly", wf, n, sh)], by[("rolling", wf, n, sh)]
                wd = [_delay(w, {}) for w in weekly]
                rd = [_delay(w, {}) for w in rolling]
                m0 = weekly[0][0]["columns"]["topic"][0]
                sc = [w[0]["columns"]["topic"][1] for w in weekly]
                print(f"  {wf:<15} {n:>6,}/week  {sh:<24} weekly: {_hist(wd, 'wk', DETECT_WEEKS):<22}"
                      f"[{'met' if all(d == 1 for d in wd) else 'MISSED'}]  rolling: {_hist(rd, 'days', DETECT_DAYS):<26}"
                      f"[{'met' if all(d is not None and d <= 7 for d in rd) else 'MISSED'}]   "
                      f"week-1 topic {m0} {min(sc):.3g}..{max(sc):.3g}")
    print()

    print("3. the same scores judged with other thresholds (drift config `thresholds`; the first row is the real")
    print("   verdicts). Per volume: mean false alerts per 26 stationary weeks (worst world) | shifted worlds caught")
    print("   in their first week | worst rolling delay in days, all three shapes")
    for label, thr in CANDIDATES.items():
        print(f"  {label}")
        for n in volumes:
            cells = []
            for wf, (_, topics) in WORKFLOWS.items():
                counts = [sum(alerts(win, thr) for win in w) for w in by[("stationary", wf, n, None)]]
                weekly = [w for sh in shifts(topics) for w in by[("weekly", wf, n, sh)]]
                rolling = [w for sh in shifts(topics) for w in by[("rolling", wf, n, sh)]]
                caught = sum(_delay(w, thr) == 1 for w in weekly)
                cells.append(f"{wf}: {sum(counts) / len(counts):.2f} ({max(counts)}) | {caught}/{len(weekly)} | "
                             f"{_worst([_delay(w, thr) for w in rolling], DETECT_DAYS)} d")
            print(f"    {n:>6,}/week  " + "   ".join(f"{c:<40}" for c in cells))
    secs = sorted(r["seconds"] for r in results)
    print(f"\nsimulated worlds: median {secs[len(secs) // 2]:.1f} s, longest {secs[-1]:.1f} s; "
          f"total wall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
