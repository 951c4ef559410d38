"""Threshold ratchet: propose tighter gate floors (and budgets) once a workflow is stable.

The monthly `threshold_proposals` asset calls `propose_threshold_ratchet`. Nothing changes
until a maintainer accepts the draft (`relops thresholds accept PROPOSAL --by NAME`), which
records the next threshold version (lib/gates/thresholds.py) and marks the proposal accepted
in one transaction.

Which releases are evidence. The last `recent` releases of the workflow (by registration
time) that
- have a valid eval run on the current suite version (the latest recorded suite version),
- whose latest gate decision is SHIP, or REVIEW approved afterwards by the owner/delegates
  (an overridden BLOCK is not evidence of stability: the gate said no),
- and were not rolled back (a performed rollback from that version: production said no).
At least `min_releases` (default 2) must qualify, else nothing is proposed.

The bound. For each of those releases and each gating metric (thresholds.metrics, else the
metrics every chosen run scored; plus any metric that already has a floor), the lower bound of
the c-level interval of the release's mean (c = thresholds.confidence) — the same case
bootstrap with Hesterberg's small-sample expansion the gate uses (lib/gates/stats.py), on the
same seed and number of resamples the release's gate recorded, so the bound is the one shown
in the release's gate report. Candidate floor = min over releases of the lower bound −
`margin`, rounded down to hundredths. It is proposed when it is at least `min_step` above the
current floor (no floor counts as 0). The gate's floor rule passes when a candidate's lower
bound is ≥ the floor, so every recent release clears the proposed floor by at least `margin`.

Never loosens: a floor is only ever raised and a budget only ever lowered here; a metric whose
recent bounds sit below its current floor is reported ("not loosened") and left alone.

Budgets. A latency p95 or cost-per-sample budget that is set is tightened to the largest
upper bound of the recent releases × (1 + `budget_margin`) (rounded up) when that is at least
`budget_min_step` (relative) below the current budget. An unset budget is not introduced (that
is a product decision, not a ratchet); the report shows the observed upper bounds.

Backtest. Every release of the workflow with a gate decision is re-decided (gates/decision.py
`decide`, the gate's own function) from its recorded candidate and baseline eval runs, with the
recorded seed and number of resamples, once under the current thresholds and once under the
proposal. Must-pass re-sampling needs the release's runner, which a replay does not call
(resample=None): a must-pass failure that the gate confirmed by re-sampling replays as REVIEW
under both, so the comparison current vs proposed stays like for like; rows where the replay
under the current thresholds differs from the recorded decision say so.
"""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime
from typing import Any

import duckdb

from relops_pipeline.lib import audit
from relops_pipeline.lib.evals.suites import version_sort_key
from relops_pipeline.lib.gates import stats
from relops_pipeline.lib.gates.model import Thresholds
from relops_pipeline.lib.gates.thresholds import (
    config_of,
    current_thresholds,
    parse_thresholds,
    record_thresholds,
)
from relops_pipeline.lib.markdown import code_span, escape_md, md_table
from relops_pipeline.lib.proposals import store

KIND = "thresholds"
# evaluate_gate's default seed: used when a release's gate did not record one.
GATE_SEED = 20260101
BOUND_METHOD = ("case bootstrap of the release's mean (lib/gates/stats.py: percentile interval with "
                "Hesterberg's small-sample expansion), lower end of the c-level two-sided interval, "
                "with the seed and resamples its gate recorded")
_EPS = 1e-9


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _floor_to(x: float, step: float) -> float:
    return round(math.floor(x / step + _EPS) * step, 10)


def _ceil_to(x: float, step: float) -> float:
    return round(math.ceil(x / step - _EPS) * step, 10)


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(float(x), digits)


# ---------------------------------------------------------------------------------------------
# Reading the record


def _current_suite_version(con: duckdb.DuckDBPyConnection, workflow: str) -> str | None:
    rows = [r[0] for r in con.execute("SELECT version FROM suite_versions WHERE workflow = ?", [workflow]).fetchall()]
    if not rows:  # imported runs may exist without a recorded suite file
        rows = [r[0] for r in con.execute("SELECT DISTINCT suite_version FROM eval_runs WHERE workflow = ?",
                                          [workflow]).fetchall()]
    return max(rows, key=version_sort_key) if rows else None


def _latest_decisions(con: duckdb.DuckDBPyConnection, workflow: str, now: datetime) -> dict[str, dict[str, Any]]:
    """release_key -> its latest gate decision (decided by `now`) with approval/override state."""
    rows = con.execute(
        "SELECT gate_id, release_key, version, decision, baseline_version, candidate_eval_run_id, "
        "baseline_eval_run_id, suite_version, thresholds_version, result, event_seq, decided_at "
        "FROM gate_decisions WHERE workflow = ? AND decided_at <= ? "
        "QUALIFY row_number() OVER (PARTITION BY release_key ORDER BY decided_at DESC, gate_id DESC) = 1",
        [workflow, now],
    ).fetchall()
    cols = ("gate_id", "release_key", "version", "decision", "baseline_version", "candidate_eval_run_id",
            "baseline_eval_run_id", "suite_version", "thresholds_version", "result", "event_seq", "decided_at")
    out: dict[str, dict[str, Any]] = {}
    for values in rows:
        row = dict(zip(cols, values, strict=False))
        result = json.loads(row.pop("result") or "{}")
        ev = result.get("evidence") or {}
        row["seed"] = ev.get("seed")
        row["n_boot"] = ev.get("n_boot")
        followups = con.execute(
            "SELECT kind, actor FROM events WHERE release_key = ? AND kind IN (?, ?) AND seq > ? AND ts <= ? "
            "ORDER BY seq",
            [row["release_key"], audit.KIND_APPROVAL, audit.KIND_OVERRIDE, row["event_seq"] or 0, now],
        ).fetchall()
        row["approved_by"] = next((a for k, a in followups if k == audit.KIND_APPROVAL), None)
        row["overridden_by"] = next((a for k, a in followups if k == audit.KIND_OVERRIDE), None)
        out[row["release_key"]] = row
    return out


def _rolled_back(con: duckdb.DuckDBPyConnection, workflow: str, now: datetime) -> set[str]:
    rows = con.execute(
        "SELECT DISTINCT from_release FROM rollbacks WHERE workflow = ? AND performed AND from_release IS NOT NULL "
        "AND recorded_at <= ?", [workflow, now]).fetchall()
    return {r[0] for r in rows}


def _valid_run(con: duckdb.DuckDBPyConnection, key: str, suite_version: str, now: datetime) -> str | None:
    row = con.execute(
        "SELECT eval_run_id FROM eval_runs WHERE release_key = ? AND suite_version = ? AND valid "
        "AND finished_at <= ? ORDER BY finished_at DESC LIMIT 1", [key, suite_version, now]).fetchone()
    return row[0] if row else None


def _run_valid(con: duckdb.DuckDBPyConnection, eval_run_id: str) -> tuple[bool, str | None] | None:
    row = con.execute("SELECT valid, invalid_reason FROM eval_runs WHERE eval_run_id = ?", [eval_run_id]).fetchone()
    return (bool(row[0]), row[1]) if row else None


def select_evidence_releases(
    con: duckdb.DuckDBPyConnection, workflow: str, *, suite_version: str, recent: int, now: datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(chosen, excluded): the last `recent` releases that count as evidence of stability (see
    the module docstring), newest first, each with its eval run and gate decision; and every
    newer-or-skipped release with why it was not used."""
    decisions = _latest_decisions(con, workflow, now)
    rolled = _rolled_back(con, workflow, now)
    rels = con.execute(
        "SELECT release_key, version, registered_at FROM releases WHERE workflow = ? AND registered_at <= ? "
        "ORDER BY registered_at DESC, release_key DESC", [workflow, now]).fetchall()
    chosen: list[dict[str, Any]] = []
    excluded: list[dict[str, Any]] = []
    for key, version, _registered_at in rels:
        if len(chosen) >= recent:
            break
        d = decisions.get(key)
        why = None
        if d is None:
            why = "no gate decision"
        elif d["decision"] == "BLOCK":
            why = f"BLOCKed by the gate{' (overridden by ' + d['overridden_by'] + ')' if d['overridden_by'] else ''}"
        elif d["decision"] == "REVIEW" and not d["approved_by"]:
            why = "REVIEW not approved"
        elif d["decision"] not in ("SHIP", "REVIEW"):
            why = f"gate decision {d['decision']}"
        elif version in rolled:
            why = "rolled back in production"
        run_id = None
        if why is None:
            run_id = _valid_run(con, key, suite_version, now)
            if run_id is None:
                why = f"no valid eval run on suite {suite_version}"
        if why is not None:
            excluded.append({"release": version, "why": why})
            continue
        assert d is not None  # without a gate decision `why` is set
        chosen.append({
            "release": version, "release_key": key, "eval_run_id": run_id, "decision": d["decision"],
            "approved_by": d["approved_by"], "gate_id": d["gate_id"],
            "seed": int(d["seed"]) if d["seed"] is not None else GATE_SEED,
            "n_boot": int(d["n_boot"]) if d["n_boot"] else stats.DEFAULT_N_BOOT,
        })
    return chosen, excluded


# ---------------------------------------------------------------------------------------------
# The analysis


def analyze_threshold_ratchet(
    con: duckdb.DuckDBPyConnection,
    workflow: str,
    *,
    recent: int = 3,
    margin: float = 0.02,
    min_step: float = 0.01,
    min_releases: int = 2,
    budget_margin: float = 0.10,
    budget_min_step: float = 0.05,
    n_boot: int | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """What a ratchet would propose, without writing anything and without the backtest.

    Returns a JSON-ready dict: workflow, as_of, thresholds_version, suite_version, confidence,
    params, method, releases (the evidence, newest first), excluded (with why), metrics
    (per metric: current_floor, candidate, proposed or None, action, why, bounds per release),
    budgets (same shape), changes ({"floors": {m: [old, new]}, "latency_p95_budget_ms": [old,
    new], ...}), config (the full proposed configuration) and `nothing_because` (None when
    there are changes). `n_boot` overrides the recorded number of resamples (tests)."""
    now = now or _now()
    current = current_thresholds(con, workflow)
    conf = float(current.confidence)
    alpha = (1 - conf) / 2
    out: dict[str, Any] = {
        "workflow": workflow, "as_of": now.isoformat(timespec="seconds"), "thresholds_version": current.version,
        "confidence": conf, "method": BOUND_METHOD,
        "params": {"recent": recent, "margin": margin, "min_step": min_step, "min_releases": min_releases,
                   "budget_margin": budget_margin, "budget_min_step": budget_min_step},
        "suite_version": None, "releases": [], "excluded": [], "metrics": {}, "budgets": {}, "changes": {},
        "config": config_of(current), "nothing_because": None,
    }
    suite = _current_suite_version(con, workflow)
    out["suite_version"] = suite
    if suite is None:
        out["nothing_because"] = "the workflow has no suite version and no eval runs"
        return out
    chosen, excluded = select_evidence_releases(con, workflow, suite_version=suite, recent=recent, now=now)
    out["releases"], out["excluded"] = chosen, excluded
    if len(chosen) < min_releases:
        out["nothing_because"] = (f"only {len(chosen)} release(s) qualify as evidence (SHIP or approved, not "
                                  f"rolled back, a valid eval run on suite {suite}); at least {min_releases} needed")
        return out

    per_release = []
    for rel in chosen:
        table = stats.prepare(stats.run_frame(con, rel["eval_run_id"]))
        st = stats.run_statistics(table, n_boot=n_boot or rel["n_boot"], seed=rel["seed"])
        per_release.append((rel, st))

    if current.metrics is not None:
        gating = list(current.metrics)
    else:
        sets = [set(st["metrics"]) for _, st in per_release]
        gating = sorted(set.intersection(*sets)) if sets else []
    metric_names = list(dict.fromkeys([*gating, *sorted(current.floors)]))

    new_floors = dict(current.floors)
    changes: dict[str, Any] = {}
    for m in metric_names:
        cur = current.floors.get(m)
        bounds = []
        for rel, st in per_release:
            e = st["metrics"].get(m)
            est = e.estimate if e is not None else None
            low = e.bound(alpha, "low") if e is not None else None
            bounds.append({"release": rel["release"], "eval_run_id": rel["eval_run_id"], "estimate": _r(est),
                           "low": _r(low), "n_cases": e.n if e is not None else 0})
        info: dict[str, Any] = {"current_floor": cur, "candidate": None, "proposed": None, "bounds": bounds}
        lows = [b["low"] for b in bounds]
        if any(v is None for v in lows):
            missing = [b["release"] for b in bounds if b["low"] is None]
            info.update(action="skip", why=f"no interval for {', '.join(missing)} (not scored or too few cases)")
        else:
            candidate = max(0.0, min(1.0, _floor_to(min(lows) - margin, 0.01)))
            info["candidate"] = candidate
            base = cur if cur is not None else 0.0
            if candidate >= base + min_step - _EPS:
                info.update(action="tighten", proposed=candidate,
                            why=f"lowest recent lower bound {min(lows):.4f} − margin {margin} = {candidate:.2f}")
                new_floors[m] = candidate
                changes.setdefault("floors", {})[m] = [cur, candidate]
            elif candidate < base - _EPS:
                info.update(action="keep", why=(f"recent lower bounds reach down to {min(lows):.4f}: {candidate:.2f} "
                                                f"is below the current floor {base:.2f}, and a ratchet never loosens"))
            else:
                info.update(action="keep", why=f"{candidate:.2f} is less than {min_step} above the current floor "
                                               f"{base:.2f}")
        out["metrics"][m] = info

    new_budgets: dict[str, float] = {}
    budget_specs = (
        ("latency_p95_budget_ms", lambda st: st["latency"]["p95"], 10.0),
        ("cost_per_sample_budget_usd", lambda st: st["cost_per_sample"], 1e-6),
    )
    for key, pick, step in budget_specs:
        cur = getattr(current, key)
        bounds = []
        for rel, st in per_release:
            e = pick(st)
            bounds.append({"release": rel["release"], "estimate": _r(e.estimate, 6), "high": _r(e.bound(alpha, "high"), 6)})
        highs = [b["high"] for b in bounds]
        info = {"current": cur, "candidate": None, "proposed": None, "bounds": bounds}
        if any(v is None for v in highs):
            info.update(action="skip", why="not recorded for every recent release")
        else:
            candidate = _ceil_to(max(highs) * (1 + budget_margin), step)
            info["candidate"] = candidate
            if cur is None:
                info.update(action="not_set", why=(f"no budget set; recent upper bounds reach {max(highs):.6g}. "
                                                   f"A ratchet does not introduce a budget"))
            elif candidate <= cur * (1 - budget_min_step) + _EPS:
                info.update(action="tighten", proposed=candidate,
                            why=f"highest recent upper bound {max(highs):.6g} + {budget_margin:.0%} = {candidate:.6g}")
                new_budgets[key] = candidate
                changes[key] = [cur, candidate]
            else:
                info.update(action="keep", why=f"{candidate:.6g} is not {budget_min_step:.0%} below the budget {cur:.6g}")
        out["budgets"][key] = info

    config = config_of(current)
    config["floors"] = dict(sorted(new_floors.items()))
    config.update(new_budgets)
    # Round-trip through the parser: the proposal must be a valid thresholds version.
    out["config"] = config_of(parse_thresholds(config, f"ratchet proposal for {workflow}"))
    out["changes"] = changes
    if not changes:
        out["nothing_because"] = "no floor or budget can be tightened by the minimum step"
    return out


# ---------------------------------------------------------------------------------------------
# Backtest


def backtest_thresholds(
    con: duckdb.DuckDBPyConnection,
    workflow: str,
    proposed: Thresholds,
    *,
    current: Thresholds | None = None,
    n_boot: int | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Re-decide every release of the workflow that has a gate decision (its latest one) under
    the current and the proposed thresholds (see the module docstring). Returns {"rows": [...],
    "summary": {...}}: per release the recorded decision, the replay under the current
    thresholds, the decision under the proposal, `changed` (proposal vs current replay), and the
    rules whose outcome differs."""
    from relops_pipeline.lib.gates.decision import decide

    now = now or _now()
    current = current if current is not None else current_thresholds(con, workflow)
    decisions = sorted(_latest_decisions(con, workflow, now).values(), key=lambda d: (d["decided_at"], d["gate_id"]))
    order = con.execute("SELECT release_key, registered_at FROM releases WHERE workflow = ?", [workflow]).fetchall()
    registered = dict(order)
    decisions.sort(key=lambda d: (registered.get(d["release_key"]) or d["decided_at"], d["release_key"]))
    rows = []
    for d in decisions:
        row: dict[str, Any] = {"release": d["version"], "gate_id": d["gate_id"], "recorded": d["decision"],
                               "approved_by": d["approved_by"], "overridden_by": d["overridden_by"],
                               "baseline": d["baseline_version"], "current": None, "proposed": None,
                               "changed": False, "rules_changed": [], "note": None}
        cand_id, base_id = d["candidate_eval_run_id"], d["baseline_eval_run_id"]
        validity = _run_valid(con, cand_id) if cand_id else None
        if validity is None:
            row["note"] = "the candidate eval run is no longer in the warehouse: not replayed"
            rows.append(row)
            continue
        cand_df = stats.run_frame(con, cand_id)
        base_df = stats.run_frame(con, base_id) if base_id else None
        must = set(cand_df.loc[cand_df["must_pass"].astype(bool), "case_id"].unique()) if len(cand_df) else set()
        args = dict(must_pass_cases=must, resample=None, run_valid=validity[0], invalid_reason=validity[1],
                    workflow=workflow, version=d["version"], baseline_version=d["baseline_version"] if base_id else None,
                    evidence={}, diff=None, seed=int(d["seed"]) if d["seed"] is not None else GATE_SEED,
                    n_boot=n_boot or (int(d["n_boot"]) if d["n_boot"] else stats.DEFAULT_N_BOOT))
        before = decide(cand_df, base_df, current, **args)
        after = decide(cand_df, base_df, proposed, **args)
        row["current"], row["proposed"] = before.decision, after.decision
        row["changed"] = before.decision != after.decision
        outcome_before = {r.rule: r.outcome for r in before.rules}
        row["rules_changed"] = [
            {"rule": r.rule, "current": outcome_before.get(r.rule), "proposed": r.outcome, "message": r.message}
            for r in after.rules if outcome_before.get(r.rule) != r.outcome
        ]
        if before.decision != d["decision"]:
            why = ("the gate confirmed a must-pass failure by re-sampling, which a replay cannot"
                   if any(r.rule == "must_pass" and r.outcome == "review" for r in before.rules)
                   else f"decided under thresholds v{d['thresholds_version']}, replayed under v{current.version}")
            row["note"] = f"replay under the current thresholds gives {before.decision}, recorded {d['decision']}: {why}"
        rows.append(row)
    rank = {"SHIP": 0, "REVIEW": 1, "BLOCK": 2}
    changed = [r for r in rows if r["changed"]]
    summary = {
        "releases": len(rows),
        "replayed": sum(1 for r in rows if r["current"] is not None),
        "changed": len(changed),
        "stricter": [r["release"] for r in changed if rank[r["proposed"]] > rank[r["current"]]],
        "looser": [r["release"] for r in changed if rank[r["proposed"]] < rank[r["current"]]],
        "newly_blocked": [r["release"] for r in changed if r["proposed"] == "BLOCK"],
        "newly_review": [r["release"] for r in changed if r["proposed"] == "REVIEW"],
    }
    return {"rows": rows, "summary": summary}


# ---------------------------------------------------------------------------------------------
# Report


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def render_threshold_report(analysis: dict[str, Any], backtest: dict[str, Any] | None,
                            proposal_id: str | None = None) -> str:
    """Markdown for a ratchet proposal: what changes, the evidence per metric and the backtest.
    Every name and message is escaped."""
    wf = escape_md(analysis["workflow"])
    lines = [f"# Threshold ratchet for {wf}", ""]
    if proposal_id:
        lines += [f"Proposal {code_span(proposal_id)} (draft) — based on thresholds version "
                  f"{analysis['thresholds_version']}. Nothing changes until it is accepted: "
                  f"{code_span(f'relops thresholds accept {proposal_id} --by NAME')}.", ""]
    p = analysis["params"]
    lines += [f"Evidence: the last {p['recent']} releases that shipped (SHIP or approved REVIEW, not rolled "
              f"back) with a valid eval run on suite {escape_md(analysis['suite_version'])}; confidence "
              f"{analysis['confidence']:.0%}; margin {p['margin']}; minimum step {p['min_step']}.", "",
              f"Bound: {escape_md(analysis['method'])}.", ""]
    if analysis["releases"]:
        lines += ["## Releases used", "",
                  md_table(["release", "gate", "approved by", "eval run"],
                           [(r["release"], r["decision"], r["approved_by"] or "", r["eval_run_id"])
                            for r in analysis["releases"]]), ""]
    if analysis["excluded"]:
        lines += ["Not used: " + "; ".join(f"{escape_md(e['release'])} ({escape_md(e['why'])})"
                                          for e in analysis["excluded"]) + ".", ""]
    if analysis.get("nothing_because"):
        lines += [f"**Nothing to propose:** {escape_md(analysis['nothing_because'])}.", ""]
    lines += ["## Floors", ""]
    rows: list[tuple[Any, ...]] = []
    for m, info in analysis["metrics"].items():
        lows = ", ".join(f"{b['release']} {_fmt(b['low'])}" for b in info["bounds"])
        rows.append((m, _fmt(info["current_floor"]), _fmt(info["proposed"]), info["action"], lows, info["why"]))
    lines += [md_table(["metric", "current floor", "proposed", "action", "lower bounds", "why"], rows), ""]
    lines += ["## Budgets", ""]
    rows = []
    for key, info in analysis["budgets"].items():
        highs = ", ".join(f"{b['release']} {_fmt(b['high'])}" for b in info["bounds"])
        rows.append((key, _fmt(info["current"]), _fmt(info["proposed"]), info["action"], highs, info["why"]))
    lines += [md_table(["budget", "current", "proposed", "action", "upper bounds", "why"], rows), ""]
    if backtest is not None:
        s = backtest["summary"]
        lines += ["## Backtest", "",
                  f"{s['replayed']} of {s['releases']} gated releases replayed; {s['changed']} would be decided "
                  f"differently under the proposal"
                  + (f" — stricter: {escape_md(', '.join(s['stricter']))}" if s["stricter"] else "")
                  + (f"; looser: {escape_md(', '.join(s['looser']))}" if s["looser"] else "") + ".", ""]
        rows = []
        for r in backtest["rows"]:
            what = "; ".join(f"{c['rule']}: {c['current'] or 'no rule'} → {c['proposed']}" for c in r["rules_changed"])
            rows.append((r["release"], r["recorded"], _fmt(r["current"]), _fmt(r["proposed"]),
                         "yes" if r["changed"] else "", what, r["note"] or ""))
        lines += [md_table(["release", "recorded", "replay (current)", "under proposal", "changed", "rules changed",
                            "note"], rows), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Propose and accept


def propose_threshold_ratchet(
    con: duckdb.DuckDBPyConnection,
    workflow: str,
    *,
    period: str,
    recent: int = 3,
    margin: float = 0.02,
    min_step: float = 0.01,
    now: datetime | None = None,
    min_releases: int = 2,
    budget_margin: float = 0.10,
    budget_min_step: float = 0.05,
    n_boot: int | None = None,
    report_path: str | None = None,
    dagster_run_id: str | None = None,
) -> store.Proposal | None:
    """Analyse, backtest and record a draft `thresholds` proposal; None when nothing can be
    tightened. Returns the proposal (`created` False when the identical draft already
    existed). The thresholds in force do not change."""
    analysis = analyze_threshold_ratchet(
        con, workflow, recent=recent, margin=margin, min_step=min_step, min_releases=min_releases,
        budget_margin=budget_margin, budget_min_step=budget_min_step, n_boot=n_boot, now=now)
    if not analysis["changes"]:
        return None
    current = current_thresholds(con, workflow)
    proposed = parse_thresholds(analysis["config"], f"ratchet proposal for {workflow}")
    backtest = backtest_thresholds(con, workflow, proposed, current=current, n_boot=n_boot, now=now)
    parts = [f"{m} {_fmt(old)}→{new:.2f}" for m, (old, new) in sorted(analysis["changes"].get("floors", {}).items())]
    parts += [f"{k} {_fmt(v[0])}→{_fmt(v[1])}" for k, v in analysis["changes"].items() if k != "floors"]
    title = f"Ratchet {workflow} thresholds: " + ", ".join(parts)
    evidence = {k: analysis[k] for k in ("as_of", "suite_version", "confidence", "method", "params", "releases",
                                         "excluded", "metrics", "budgets", "changes")}
    evidence["backtest"] = backtest
    base_version = str(current.version)
    # The id is derived from the content by the store, so the report (which names it) is
    # written right after, in the same transaction.
    with audit.transaction(con):
        draft = store.create_proposal(
            con, kind=KIND, workflow=workflow, period=period, title=title, payload={"config": analysis["config"]},
            evidence=evidence, base_version=base_version, report_md=None, report_path=report_path,
            dagster_run_id=dagster_run_id)
        if draft.created or not draft.report_md:
            report = render_threshold_report(analysis, backtest, draft.proposal_id)
            con.execute("UPDATE proposals SET report_md = ? WHERE proposal_id = ?", [report, draft.proposal_id])
            draft = dataclasses.replace(draft, report_md=report)
    return draft


def accept_threshold_proposal(
    con: duckdb.DuckDBPyConnection, proposal_id: str, *, by: str, reason: str | None = None
) -> Thresholds:
    """Accept a draft ratchet: record its configuration as the workflow's next threshold version
    (author `by`, reason "ratchet <id>: ...") and mark the proposal accepted, in one
    transaction. Refuses (store.ProposalError) when the proposal is not a thresholds draft or
    when a threshold version was recorded since it was proposed (re-run the proposal)."""
    if not isinstance(by, str) or not by.strip():
        raise store.ProposalError("accepting a proposal needs who (--by NAME)")
    why = reason.strip() if isinstance(reason, str) and reason.strip() else "accepted as proposed"
    with audit.transaction(con):
        row = store.require_draft(con, proposal_id, KIND)
        workflow = row["workflow"]
        current = current_thresholds(con, workflow)
        if str(current.version) != row["base_version"]:
            raise store.ProposalError(
                f"proposal {proposal_id} was made against thresholds version {row['base_version']} of {workflow}, "
                f"but version {current.version} (by {current.author}) is in force now: re-run the ratchet to "
                f"propose against it")
        new = record_thresholds(con, workflow, row["payload"]["config"], author=by.strip(),
                                reason=f"ratchet {proposal_id}: {why}")
        store.mark_accepted(con, proposal_id, by=by.strip(), reason=why, result_version=str(new.version), kind=KIND)
    return new


__all__ = [
    "accept_threshold_proposal", "analyze_threshold_ratchet", "backtest_thresholds", "propose_threshold_ratchet",
    "render_threshold_report", "select_evidence_releases",
]
