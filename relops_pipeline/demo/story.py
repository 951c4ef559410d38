"""The demo's story: generate the demo world and run it through Dagster, command by command,
as a person would — ingest, evals, gates, drift, rollouts and a rollback, the cadence.

The demo world is not the product: lib/ never imports this package; the demo uses lib/ and
the CLI's commands (`relops demo` in cli/demo.py is a thin front over `run_story`)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import textwrap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from relops_pipeline.cli.cadence import accept_or_reject, cmd_memo, cmd_review_import, cmd_review_sample
from relops_pipeline.cli.common import (
    EXIT_RUN_FAILED,
    CliError,
    get_workflow,
    materialize,
    materialize_or_fail,
    read_warehouse,
    run_failure,
    run_job,
    run_or_fail,
)
from relops_pipeline.cli.drift import compute_weekly_drift
from relops_pipeline.cli.evals import backfill_evals, register_release
from relops_pipeline.cli.gates import RELEASE_GATE, cmd_gate, latest_gate
from relops_pipeline.cli.ingest import ingest, ingest_text
from relops_pipeline.cli.releases import cmd_canary, workflow_status
from relops_pipeline.demo.traces import generate_demo_traces, release_schedule
from relops_pipeline.lib.home import Home

# Who the story acts as: the example workflows' owners, delegates and on-call, and the reviewer.
DEMO_WORKFLOWS = ("doc-qa", "support-triage")


def let_the_story_play_its_people(home: Home) -> None:
    """The story approves, accepts and reviews as the example's people, run by one OS user
    (lib/identity.py). `relops init` maps them to that user; a home whose relops.yaml predates
    identities gets the same entries appended (and says so); a home whose identities leave one
    of them out is refused before any work, naming who is missing."""
    import yaml

    from relops_pipeline.lib.identity import may_act_as, os_principal
    from relops_pipeline.lib.settings import load_identity_settings

    me = os_principal()
    people = sorted({p for w in DEMO_WORKFLOWS for p in get_workflow(home, w).roles.operators} | {DEMO_REVIEWER})
    missing = [p for p in people if not may_act_as(me, p, load_identity_settings(home.settings_file))]
    if not missing:
        return
    if "identities" in (yaml.safe_load(home.settings_file.read_text()) or {}):
        raise CliError(
            f"the demo acts as {', '.join(missing)}, whom {home.settings_file}'s identities do not let "
            f"{me.name} act as: add them there, or run the demo in a new home"
        )
    with open(home.settings_file, "a", encoding="utf-8") as f:
        f.write(
            "\n# Added by `relops demo`: the story plays the example's people as the OS user who runs it.\n"
            "identities:\n" + "".join(f"  {p}: {{os_users: [{json.dumps(me.subject)}]}}\n" for p in people)
        )
    _say(f"      {home.settings_file}: {me.name} may act as {', '.join(people)} (identities added)")


@dataclass
class StoryResult:
    """What the story did: `data` (JSON-able: home, generated counts, releases, drift, rollout,
    cadence) and `text`, the human summary."""

    data: dict
    text: str


def run_story(home_arg: str | Path | None, seed: int = 7, scale: float = 1.0) -> StoryResult:
    """Generate the demo world in the home (resolved from `home_arg`) and run the whole story;
    raises CliError when the ingested counts do not match what was generated."""
    home = Home.resolve(home_arg)
    home.init(example=True)  # the demo brings its own workflows and releases (kept where they exist)
    _say(f"relops demo: home {home.root}")
    let_the_story_play_its_people(home)
    _say("[1/7] generating the demo world's production traces ...")
    # Outside landing/: the landing sensor of a later `make ui` must not ingest the world again.
    world = home.root / "demo-world"
    gen = generate_demo_traces(world, seed=seed, scale=scale)
    _say(f"      {gen.spans} spans in {len(gen.files)} files")
    _say("[2/7] ingesting them through Dagster ...")
    summary = ingest(home, [str(world)])
    _say("[3/7] registering the demo releases and running their evals through Dagster ...")
    releases = demo_releases(home)
    _say("[4/7] gating every release against its baseline ...")
    gates = demo_gates(home, releases)
    _say("[5/7] weekly drift of every complete week through Dagster ...")
    compute_weekly_drift(home, None, refresh=False)
    drift = demo_drift_lines(home)
    _say("[6/7] rollouts, doc-qa v2.4.0's canary judged on production traces, a rollback drill ...")
    rollout = demo_rollout(home)
    _say("[7/7] the cadence: a past incident, the week's review sample and memo, the monthly proposals ...")
    cadence = demo_cadence(home)
    t = summary["totals"]
    expected = gen.expected_ingest()
    first_time = (t["accepted"], t["rejected"], t["unknown_release"]) == (
        expected["accepted_spans"],
        expected["rejected_lines"],
        expected["unknown_release_spans"],
    )
    again = t["accepted"] == t["rejected"] == 0 and t["duplicates"] == expected["accepted_spans"] + expected["rejected_lines"]
    matches = first_time or again
    lines = [
        ingest_text({**summary, "files": []}).replace("total: 0 files", f"total: {len(summary['files'])} files"),
        f"expected from the generator: accepted {expected['accepted_spans']}, rejected {expected['rejected_lines']},"
        f" without release {expected['unknown_release_spans']}"
        + (" — matches" if first_time else " — already ingested: every record a duplicate" if again else " — MISMATCH"),
        "",
        "releases, their evals (per metric: the mean score the gate judges, and the pass rate of samples) and gate decisions:",
        *[
            f"  {r['release_key']:<26} {g['decision']:<6} vs {g['baseline'] or '-':<8} {_eval_line(r['eval'])}"
            + (f"  [approved by {g['approved_by']}]" if g["approved_by"] else "")
            for r, g in zip(releases, gates, strict=False)
        ],
        *[f"  {g['release_key']} BLOCK: {g['reasons'][0]}" for g in gates if g["decision"] == "BLOCK"],
        "",
        "weekly drift against each workflow's reference window:",
        *drift,
        "",
        "rollout and rollback:",
        *rollout,
        "",
        "the weekly and monthly cadence:",
        *cadence,
        "",
        *demo_summary_table(home),
    ]
    if not matches:
        raise CliError("\n".join(lines[:2]) + "\nthe demo's counts do not match what was generated", EXIT_RUN_FAILED)
    return StoryResult(
        data={
            "home": str(home.root),
            "generated": gen.expected_ingest(),
            "matches_generator": matches,
            "releases": [{"release_key": r["release_key"], "eval": r["eval"], "gate": g} for r, g in zip(releases, gates, strict=False)],
            "ingest": {"totals": t, "run_id": summary["run_id"], "signals_run_ids": summary["signals_run_ids"]},
            "drift": drift,
            "rollout": rollout,
            "cadence": cadence,
        },
        text="\n".join(fit(lines)),
    )


WIDTH = 100  # the terminal columns the demo's output fits in


def _say(line: str) -> None:
    """A progress line on stderr, wrapped to WIDTH columns."""
    print("\n".join(fit([line])), file=sys.stderr)


def fit(lines: list[str], width: int = WIDTH) -> list[str]:
    """Every line (of possibly several lines each) wrapped to `width` columns, continued under a
    hanging indent (its own indent and four spaces); a path or URL longer than that is never cut."""
    out: list[str] = []
    for line in (part for text in lines for part in str(text).split("\n")):
        if len(line) <= width:
            out.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        out += textwrap.wrap(line.strip(), width, initial_indent=indent, subsequent_indent=indent + "    ",
                             break_long_words=False, break_on_hyphens=False)
    return out


def demo_summary_table(home: Home) -> list[str]:
    """The demo's last word: what happened, in one line per part, and where to look — every
    figure read back from the warehouse."""

    with read_warehouse(home) as con:

        def one(sql: str, params=()):
            return con.execute(sql, list(params)).fetchall()[0]

        spans, rejects = one("SELECT (SELECT count(*) FROM spans), (SELECT count(*) FROM trace_rejects)")
        # Counted as the list above shows them: each release's first decision (on the suite it was
        # gated on); a release gated again on a newer suite (one grown from an incident) is named.
        per_release = con.execute(
            "SELECT release_key, arg_min(decision, decided_at), arg_min(suite_version, decided_at), "
            "arg_max(decision, decided_at), arg_max(suite_version, decided_at) "
            "FROM gate_decisions GROUP BY release_key ORDER BY release_key"
        ).fetchall()
        decisions = Counter(first for _, first, _, _, _ in per_release)
        regated = [f"{key.split('--', 1)[-1]} {last} on suite {suite}" for key, _, suite0, last, suite in per_release
                   if suite != suite0]
        approved = one("SELECT count(DISTINCT release_key) FROM events WHERE kind = 'approval'")[0]
        drift = con.execute(
            "SELECT workflow, min(period_start) FROM drift_summaries WHERE granularity = 'weekly' "
            "AND release = '*' AND status = 'drift' GROUP BY workflow ORDER BY workflow"
        ).fetchall()
        rollbacks = con.execute(
            "SELECT workflow, from_release, to_release, time_to_rollback_s FROM rollbacks "
            "WHERE performed AND automatic ORDER BY recorded_at"
        ).fetchall()
        drills = one("SELECT count(*) FILTER (WHERE passed), count(*), max(duration_ms) FROM drills")
        memo = con.execute("SELECT week, html_path FROM stability_memos ORDER BY generated_at DESC LIMIT 1").fetchall()
        proposals = dict(con.execute("SELECT status, count(*) FROM proposals GROUP BY status").fetchall())
        incidents = one("SELECT count(*) FILTER (WHERE status = 'open'), count(*) FROM incidents")
    reports = home.reports_dir
    rows = [
        ["traces", f"{spans:,} spans ingested, {rejects} malformed records quarantined with reasons", "relops status · relops rejects"],
        [
            "gates",
            f"{sum(decisions.values())} releases: "
            + ", ".join(f"{decisions.get(d, 0)} {d}" for d in ("SHIP", "BLOCK", "REVIEW"))
            + f" ({approved} approved)"
            + (f"; gated again on a newer suite: {', '.join(regated)}" if regated else ""),
            f"{reports / 'gates'}/",
        ],
        ["drift", "; ".join(f"{w} drifts from the week of {d}" for w, d in drift) or "no drift", f"{reports / 'drift'}/ · relops drift"],
        [
            "rollback",
            "; ".join(f"{w} {a} -> {b} automatically in {t:.2f} s" for w, a, b, t in rollbacks) or "none",
            f"{home.registry_dir}/ (pointer files)",
        ],
        ["incidents", f"{incidents[1]} recorded, {incidents[0]} open", "relops incident list --all"],
        [
            "drills",
            f"{drills[0]} of {drills[1]} passed" + (f" (slowest {drills[2]:.0f} ms)" if drills[2] else ""),
            f"{reports / 'runbooks'}/",
        ],
        ["memo", f"week of {memo[0][0]}" if memo else "none", memo[0][1] if memo else "relops memo"],
        [
            "proposals",
            ", ".join(f"{n} {k}" for k, n in sorted(proposals.items())) or "none",
            f"relops proposals · {reports / 'proposals'}/",
        ],
        ["UI", "the lineage of every release decision, runs, checks", "make ui -> http://127.0.0.1:3000"],
    ]
    # One row per part, where to look under it: a table of three columns was ~200 columns wide.
    width = max(len(r[0]) for r in rows)
    lines = ["what happened, and where to look:"]
    under = " " * (width + 4)
    for part, what, where in rows:
        lines += textwrap.wrap(what, WIDTH, initial_indent=f"  {part:<{width}}  ", subsequent_indent=under,
                               break_long_words=False, break_on_hyphens=False)
        lines += textwrap.wrap(f"-> {where}", WIDTH, initial_indent=under, subsequent_indent=under + "   ",
                               break_long_words=False, break_on_hyphens=False)
    return lines


def demo_releases(home: Home) -> list[dict]:
    """Register every release manifest in the home, oldest version first, with its eval run."""
    from relops_pipeline.lib.evals.manifests import load_manifest
    from relops_pipeline.lib.evals.suites import version_sort_key

    materialize_or_fail(home, ["eval_suites"], what="suites")
    out = []
    for wf_dir in sorted((home.root / "releases").glob("*")):
        for path in sorted(wf_dir.glob("*.yaml"), key=lambda p: version_sort_key(p.stem)):
            r = register_release(home, load_manifest(path), by="demo").data
            _say(f"      {r['release_key']}: {_eval_line(r['eval'])}")
            out.append(r)
    return out


def demo_gates(home: Home, releases: list[dict]) -> list[dict]:
    """Gate every demo release in order; a workflow's first release (no baseline to compare
    with) ends in REVIEW and is approved by the workflow's owner, as a person would."""
    from relops_pipeline.lib.evals.model import split_release_key
    from relops_pipeline.lib.gates.service import approve
    from relops_pipeline.lib.warehouse import open_warehouse

    out = []
    for r in releases:
        key = r["release_key"]
        workflow, version = split_release_key(key)
        gate = latest_gate(home, key)
        if gate is not None:  # a second demo keeps the decisions made the first time
            out.append(_gate_row(key, gate))
            _say(f"      {key}: {gate.decision} (decided earlier)")
            continue
        result = materialize(home, RELEASE_GATE, partition_key=key)
        gate = latest_gate(home, key, result.run_id)
        if gate is None:
            raise CliError(f"gate run {result.run_id} for {key} failed: {run_failure(result)}", EXIT_RUN_FAILED)
        row = _gate_row(key, gate)
        if gate.decision == "REVIEW" and not row["baseline"]:
            wf = get_workflow(home, workflow)
            with open_warehouse(home.warehouse_path) as con:
                approve(
                    con, key, approvers=wf.approvers, by=wf.owner, reason="first release of the workflow: reviewed by hand as the baseline"
                )
            row["approved_by"] = wf.owner
        _say(
            f"      {key}: {row['decision']}"
            + (f" (approved by {row['approved_by']})" if row["approved_by"] else "")
            + f" vs {row['baseline'] or 'no baseline'}"
        )
        out.append(row)
    return out


def _gate_row(key: str, gate) -> dict:
    """A release's gate decision as the demo reports it."""
    return {
        "release_key": key,
        "decision": gate.decision,
        "baseline": gate.result.baseline_version,
        "reasons": gate.result.reasons,
        "report": gate.report_html,
        "approved_by": None,
    }


def _eval_line(e: dict) -> str:
    if not e:
        return "no eval"
    # The gate judges the mean score of each metric; the pass rate (share of samples passing) is
    # shown beside it, labelled, so the two are not taken for each other.
    means = ", ".join(f"{m} mean {v['mean']:.3f} (pass rate {v['pass_rate']:.0%})" for m, v in e["metrics"].items())
    return f"{e['cases']} cases x {e['samples'] // max(e['cases'], 1)} samples: {means}" + (
        f"; must-pass failing {e['must_pass_failing_cases']}" if e.get("must_pass_failing_cases") else ""
    )


# The demo's rollout story: what each workflow serves, in order (a first release goes straight
# to full; later ones go through canary). doc-qa v2.4.0 stays in canary to be judged.
DEMO_ROLLOUTS = (
    ("support-triage", "v1.4.0", "full"),
    ("support-triage", "v1.5.1", "canary"),
    ("support-triage", "v1.5.1", "full"),
    ("doc-qa", "v2.1.0", "full"),
    ("doc-qa", "v2.3.0", "canary"),
    ("doc-qa", "v2.3.0", "full"),
    ("doc-qa", "v2.4.0", "canary"),
)


def demo_rollout(home: Home) -> list[str]:
    """Roll the demo releases out (once: a home that has a registry keeps it), judge doc-qa
    v2.4.0's canary (rolled back automatically when it fails), drill, and describe the result."""
    from relops_pipeline.lib.registry.state import get_state

    with read_warehouse(home) as con:
        fresh = {w: get_state(con, w).seq == 0 for w in ("support-triage", "doc-qa")}
    for workflow, version, stage in DEMO_ROLLOUTS:
        if not fresh[workflow]:
            continue
        owner = get_workflow(home, workflow).owner
        run_or_fail(
            home,
            "registry_change_job",
            what=f"demo rollout of {workflow} {version} to {stage}",
            run_config={
                "ops": {
                    "change_registry": {
                        "config": {
                            "workflow": workflow,
                            "release": version,
                            "stage": stage,
                            "actor": owner,
                            "reason": f"demo: {version} to {stage}",
                        }
                    }
                }
            },
        )
    lines = []
    with read_warehouse(home) as con:
        in_canary = get_state(con, "doc-qa").canary == "v2.4.0"
    if in_canary:
        canary = cmd_canary(argparse.Namespace(home=str(home.root), workflow="doc-qa", version="v2.4.0"))
        lines += ["  " + line for line in canary.text.splitlines()]
    run_or_fail(home, "drill_job", what="demo drill")
    for w in ("support-triage", "doc-qa"):
        status = workflow_status(home, w).data
        st = status["state"]
        drill = status["drill"]
        took = (drill.get("last_drill") or {}).get("duration_ms")
        lines.append(
            f"  {w:<16} live {st['live'] or '-'}, canary {st['canary'] or '-'}, last known good "
            f"{st['last_known_good'] or '-'}; open incidents {len(status['incidents'])}; drill {drill['status']}"
            + (f" ({took:.0f} ms)" if took is not None else "")
        )
    return lines


# The demo world's incident before relops watched it: support-triage v1.5.0's canary truncated
# replies until it was rolled back by hand (demo/traces.py: canary day 43, rolled back day 45).
DEMO_PAST_INCIDENT = (
    "support-triage",
    "v1.5.0",
    "v1.5.0 truncated replies (max_tokens 256): invalid JSON and more thumbs-down",
    "rolled back to v1.4.0 by hand; fixed in v1.5.1 (max_tokens 400 again)",
)


DEMO_REVIEWER = "sam.okafor"


def demo_past_incident(home: Home) -> dict:
    """Record the demo world's past incident once (backdated to when the problem began, linked
    to the truncated traces), and close it as it was closed."""
    from relops_pipeline.lib.incidents import close_incident, open_incident

    workflow, version, title, resolution = DEMO_PAST_INCIDENT
    # The schedule's versions are the resource's service.version ("1.5.0"); release keys carry a "v".
    rel = next(r for r in release_schedule() if (r.workflow, f"v{r.version}") == (workflow, version))
    with read_warehouse(home) as con:
        known = con.execute("SELECT incident_id FROM incidents WHERE workflow = ? AND title = ?", [workflow, title]).fetchall()
        if known:
            return {"incident_id": known[0][0], "created": False}
        traces = [
            r[0]
            for r in con.execute(
                "SELECT trace_id FROM trace_features WHERE workflow = ? AND release = ? AND finish_reason = 'length' "
                "ORDER BY start_time LIMIT 20",
                [workflow, version],
            ).fetchall()
        ]
        owner = get_workflow(home, workflow).owner
        row = open_incident(con, workflow, version, title, "manual", owner, {"traces": traces}, started_at=rel.canary_start)
        close_incident(con, row["incident_id"], closed_by=owner, resolution=resolution)
    return {"incident_id": row["incident_id"], "created": True, "traces": len(traces)}


def demo_review_labels(home: Home, week: str) -> Path:
    """The demo's weekly reviewer: label the week's sheet (refusals and truncated answers fail;
    a provider error is "unsure" — not the release's answer; the rest pass) and save it beside
    the sheet, as a person would."""
    import csv

    sheet = home.reports_dir / "review" / f"{week}.csv"
    with open(sheet, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    with read_warehouse(home) as con:
        flags = {
            r[0]: r[1:]
            for r in con.execute(
                "SELECT trace_id, is_error, is_refusal, finish_reason FROM trace_features WHERE trace_id IN "
                "(SELECT trace_id FROM review_samples WHERE week = ?)",
                [week],
            ).fetchall()
        }
    for r in rows:
        is_error, is_refusal, finish = flags.get(r["trace_id"], (False, False, None))
        why = "refusal" if is_refusal else "truncated" if finish == "length" else None
        label = "fail" if why else "unsure" if is_error else "pass"
        r.update(
            label=label,
            failure_type=why or "",
            reviewer=DEMO_REVIEWER,
            note="provider error, no answer to judge" if label == "unsure" else "",
        )
    out = sheet.with_name(f"{week}.labelled.csv")
    with open(out, "w", encoding="utf-8-sig", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows(rows)
    return out


def _proposal_evidence_lines(p: dict) -> list[str]:
    """A proposal's evidence in a line or two: the ratchet's backtest, the calibration's
    alerts before and after, the suite cases' incidents."""
    ev = p.get("evidence") or {}
    if p["kind"] == "thresholds":
        b = (ev.get("backtest") or {}).get("summary") or {}
        changed = [*b.get("newly_blocked", []), *b.get("newly_review", [])]
        return [
            f"backtest over {b.get('replayed', 0)} past releases: "
            + (f"would have changed {', '.join(changed)}" if changed else "no past decision would change")
        ]
    if p["kind"] == "alert_rules":
        out = []
        for r in ev.get("rules", []):
            if r.get("status") != "proposed":
                continue
            before, after = r["before"], r["after"]
            out.append(
                f"{r['name']}: {before['firings']} alerts ({before['noise']} without an incident, "
                f"{before['noise_per_month']:g}/month) -> {after['firings']} ({after['noise']}, "
                f"{after['noise_per_month']:g}/month) over {ev.get('days')} days; still catches "
                f"{len(after['caught'])} of {len(before['caught'])} incidents it caught"
            )
        return out
    if p["kind"] == "suite":
        return [f"{len(i['cases'])} cases from {i['incident_id']} ({i['title']})" for i in ev.get("incidents", []) if i.get("cases")]
    return []


def _label_counts(home: Home, week: str) -> str:
    with read_warehouse(home) as con:
        rows = con.execute(
            "SELECT label, count(*) FROM (SELECT l.sample_id, arg_max(l.label, l.imported_at) AS label FROM trace_labels l "
            "JOIN review_samples s USING (sample_id) WHERE s.week = ? GROUP BY l.sample_id) GROUP BY label ORDER BY 2 DESC",
            [week],
        ).fetchall()
    return ", ".join(f"{n} {label}" for label, n in rows) or "no labels"


def demo_cadence(home: Home) -> list[str]:
    """The demo's month of cadence: the past incident, the week's review sample labelled and
    imported, the weekly memo, the monthly proposals, and the suite proposal made from the
    canary incident accepted — a new suite version the backfill evaluates for every release."""
    from relops_pipeline.lib.proposals.store import list_proposals

    past = demo_past_incident(home)
    with read_warehouse(home) as con:
        last_day = con.execute("SELECT max(day) FROM trace_features").fetchall()[0][0]
    week = last_day - dt.timedelta(days=last_day.weekday() + (0 if last_day.weekday() == 6 else 7))
    week_key = week.isoformat()
    review = cmd_review_sample(argparse.Namespace(home=str(home.root), week=week_key)).data
    labelled = demo_review_labels(home, week_key)
    imported = cmd_review_import(argparse.Namespace(home=str(home.root), file=str(labelled), by=DEMO_REVIEWER, open_incidents=False)).data
    memo = cmd_memo(argparse.Namespace(home=str(home.root), week=week_key, full=False)).data
    _say("      the monthly proposals (suite cases from incidents, threshold ratchets, alert calibration) ...")
    run_job(home, "monthly_cadence_job")
    with read_warehouse(home) as con:
        drafts = list_proposals(con, status="draft")
        accepted = list_proposals(con, kind="suite", workflow="doc-qa", status="accepted")
    lines = [
        f"  past incident {past['incident_id']}: support-triage v1.5.0 truncated replies (recorded, closed)",
        f"  review sample of the week of {week_key}: {sum(r['traces'] for r in review['samples'])} traces; labels "
        f"imported by {DEMO_REVIEWER}: {imported.get('written', 0)} new, {imported.get('unchanged', 0)} unchanged "
        f"({_label_counts(home, week_key)})",
        f"  stability memo of the week of {week_key}:",
        *[f"    {line}" for line in memo["summary"]],
        f"    read: {memo['html_path']}",
        f"          {memo['md_path']}",
    ]
    for p in drafts:
        lines.append(f"  draft {p['proposal_id']}:")
        lines.append(f"    {p['title']}")
        lines += [f"    {line}" for line in _proposal_evidence_lines(p)]
    with read_warehouse(home) as con:
        ready = con.execute(
            "SELECT workflow, arg_max(status, reviewed_at), arg_max(result, reviewed_at) "
            "FROM readiness_reviews GROUP BY workflow ORDER BY workflow"
        ).fetchall()
    for workflow, status, result in ready:
        plan = json.loads(result).get("plan") or []
        lines.append(f"  readiness of {workflow}: {status}" + (f"; first step: {plan[0]['title']}" if plan else ""))
    suite_draft = next((p for p in drafts if p["kind"] == "suite" and p["workflow"] == "doc-qa"), None)
    if suite_draft and not accepted:
        owner = get_workflow(home, "doc-qa").owner
        _say(f"      {owner} accepts {suite_draft['proposal_id']}; evaluating every doc-qa release on the new suite ...")
        accepted_now = accept_or_reject(
            home, "suite", suite_draft["proposal_id"], action="accept", by=owner, reason="cases from the v2.4.0 canary incident"
        )
        lines.append(f"  {accepted_now.text}")
        out = accepted_now.data
        back = backfill_evals(home, "doc-qa", suite_version=out["version"], in_process=True).data
        for r in back["runs"]:
            lines.append(f"    {r['release_key']:<26} {_eval_line(r)}")
        gate = cmd_gate(
            argparse.Namespace(
                home=str(home.root),
                workflow="doc-qa",
                version="v2.4.0",
                baseline=None,
                suite_version=out["version"],
                junit=None,
                markdown=None,
            )
        ).data
        lines += textwrap.wrap(
            f"doc-qa v2.4.0 on suite {out['version']}: {gate['decision']}" + (f" — {gate['reasons'][0]}" if gate.get("reasons") else ""),
            width=110, initial_indent="  ", subsequent_indent="      ", break_on_hyphens=False,
        )
    elif accepted:
        lines.append(
            f"  suite proposal {accepted[0]['proposal_id']} accepted earlier by {accepted[0]['decided_by']}"
            f" (suite {accepted[0]['result_version']})"
        )
    return lines


def demo_drift_lines(home: Home) -> list[str]:
    """One line per workflow: which weeks drifted (and why), which stayed stationary."""
    with read_warehouse(home) as con:
        rows = con.execute(
            "SELECT workflow, period_start, status, severity, critical_drifted, drifted_share FROM drift_summaries "
            "WHERE granularity = 'weekly' AND release = '*' ORDER BY workflow, period_start"
        ).fetchall()
    by_wf: dict[str, list] = {}
    for wf, week, status, severity, critical, share in rows:
        by_wf.setdefault(wf, []).append((str(week), status, severity, json.loads(critical) if critical else [], share))
    lines = []
    for wf, weeks in by_wf.items():
        flagged = [w for w in weeks if w[1] == "drift"]
        quiet = [w for w in weeks if w[1] == "ok"]
        text = f"  {wf:<16} {len(quiet)} weeks without drift"
        if flagged:
            first = flagged[0]
            why = ", ".join(first[3]) or f"share {first[4]:.2f}"
            text += f"; DRIFT ({first[2]}) from the week of {first[0]} in {len(flagged)} weeks: {why}"
        lines.append(text)
    return lines or ["  no complete week yet"]
