"""`relops gate`, `approve`, `audit` and `thresholds`: gate decisions, approvals, the
hash-chained audit log and versioned gate thresholds."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from relops_pipeline.cli.cadence import accept_or_reject, require_approver
from relops_pipeline.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_RUN_FAILED,
    EXIT_TAMPERED,
    CliError,
    CommandResult,
    Commands,
    act_as,
    add_by,
    authorized_actor,
    get_workflow,
    get_workflow_release,
    materialize,
    read_warehouse,
    release_partitions,
    run_failure,
)
from relops_pipeline.cli.evals import eval_or_explain, register_release
from relops_pipeline.lib.home import Home

if TYPE_CHECKING:
    from relops_pipeline.lib.gates.service import GateRecord

# What `relops gate` materializes on the release's partition: the thresholds in force, the
# decision, and the rollout plan (every gated release has one, whatever its decision).
RELEASE_GATE = ["gate_thresholds", "release_gate", "rollout_plan"]

# INVALID is not a decision: the evidence is broken (an invalid eval run), an error like bad input.
EXIT_BY_DECISION = {"SHIP": 0, "BLOCK": 1, "REVIEW": 2, "INVALID": EXIT_BAD_INPUT}


def latest_gate(home: Home, key: str, dagster_run_id: str | None = None) -> GateRecord | None:
    """The release's latest gate decision (of that Dagster run, when given), or None."""
    from relops_pipeline.lib.gates.service import latest_gate_decision
    from relops_pipeline.lib.warehouse import open_warehouse

    with open_warehouse(home.warehouse_path) as con:
        return latest_gate_decision(con, key, dagster_run_id)


def cmd_gate(args) -> CommandResult:
    """CI mode: run what is missing (release record, eval, thresholds, gate) and exit by decision."""
    from relops_pipeline.lib.evals.manifests import load_manifest

    home = Home.resolve(args.home)
    wf, key = get_workflow_release(home, args.workflow, args.version)
    if args.baseline and args.baseline == args.version:
        raise CliError(f"--baseline {args.baseline} is the release being gated: a release cannot be its own baseline; "
                       f"compare with another version (--baseline VERSION) or leave it out for the live release")
    registered = key in release_partitions(home, wf.name)
    if not registered:
        path = home.root / "releases" / wf.name / f"{args.version}.yaml"
        if not path.exists():
            raise CliError(f"release {key} is not registered and has no manifest at {path}: a gate judges a "
                           f"registered release's evals; register it first (relops release register FILE), then "
                           f"relops gate {wf.name} {args.version}")
        print(f"registering {key} ...", file=sys.stderr)
        try:
            manifest = load_manifest(path)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        register_release(home, manifest, by=act_as(home, None, request=f"register {key}"), run_eval=not args.suite_version)
        if args.suite_version:
            eval_or_explain(home, key, {"relops/suite_version": args.suite_version})
    else:
        from relops_pipeline.lib.gates.service import latest_eval_run
        from relops_pipeline.lib.warehouse import open_warehouse

        with open_warehouse(home.warehouse_path) as con:
            have_eval = latest_eval_run(con, key, args.suite_version) is not None
        if not have_eval:
            print(f"running the eval of {key} ...", file=sys.stderr)
            tags = {"relops/suite_version": args.suite_version} if args.suite_version else {}
            eval_or_explain(home, key, tags)
    tags = {}
    if args.baseline:
        tags["relops/baseline"] = args.baseline
    if args.suite_version:
        tags["relops/suite_version"] = args.suite_version
    # A BLOCK fails the run's blocking checks: the run "fails" but the decision is recorded.
    result = materialize(home, RELEASE_GATE, partition_key=key, tags=tags)
    gate = latest_gate(home, key, result.run_id)
    if gate is None:
        raise CliError(f"{run_failure(result)}: no gate decision was recorded; see the run in the Dagster UI, fix "
                       f"the cause and gate again (relops gate {wf.name} {args.version}) (gate run {result.run_id})",
                       EXIT_RUN_FAILED)
    from relops_pipeline.lib.gates.report import render_junit, render_pr_comment, write_text_atomic

    gr = gate.result
    if args.junit:
        write_text_atomic(Path(args.junit), render_junit(gr))
    if args.markdown:
        write_text_atomic(Path(args.markdown), render_pr_comment(gr, links={"full report": gate.report_html}))
    out = {
        "release_key": key,
        "decision": gate.decision,
        "reasons": gr.reasons,
        "gate_id": gate.gate_id,
        "baseline_version": gr.baseline_version,
        "reports": {"md": gate.report_md, "html": gate.report_html, "json": gate.report_json},
        "run_id": result.run_id,
    }
    errors = gr.evidence.get("candidate_errors") or {}
    if gate.decision == "INVALID":
        # an error, not a decision: exit 3 with the causes, never 0, 1 or 2
        causes = errors.get("top_causes") or []
        out["error"] = (
            f"{key}: the evidence is invalid ({errors.get('invalid_reason') or 'invalid eval run'}): "
            "no decision was made; fix the cause, re-run the evals and the gate"
        )
        out["exit_code"] = EXIT_BAD_INPUT
        text = [f"INVALID evidence: {key} — no decision: {errors.get('invalid_reason') or 'the eval run is invalid'}"]
        text += [f"  - {c['count']} of {c['samples']} samples: {c['cause']}" for c in causes]
        text.append(f"  fix the cause, then re-run: relops eval {wf.name} {args.version} && relops gate {wf.name} {args.version}")
    else:
        text = [f"{gate.decision}: {key} vs {gr.baseline_version or 'no baseline'}"]
        text += [f"  - {reason}" for reason in gr.reasons]
    out["errors"] = errors
    text.append(f"report: {gate.report_html}")
    from relops_pipeline.cli.text import wrap_prose

    return CommandResult(out, wrap_prose("\n".join(text)), EXIT_BY_DECISION[gate.decision])


def cmd_approve(args) -> CommandResult:
    from relops_pipeline.lib.gates.service import GateError, approve
    from relops_pipeline.lib.warehouse import open_warehouse
    from relops_pipeline.lib.workflows import roles_in_force

    home = Home.resolve(args.home)
    wf, key = get_workflow_release(home, args.workflow, args.version)
    with open_warehouse(home.warehouse_path) as con:
        action, request = ("override", f"override the BLOCK of {key}") if args.override else ("approve", f"approve {key}")
        by = authorized_actor(con, home, wf, action, request=request, by=args.by, asked=args.reason, release_key=key)
        try:
            out = approve(con, key, approvers=list(roles_in_force(con, wf).approvers), by=by, reason=args.reason, override=args.override)
        except GateError as exc:
            raise CliError(str(exc)) from None
    word = "overrode the BLOCK of" if out["kind"] == "override" else "approved"
    return CommandResult(out, f"{by} {word} {key} (event {out['event_seq']}): {args.reason}")


def cmd_audit_head(args) -> CommandResult:
    """audit head: the log's last event as SEQ:HASH, to keep outside the warehouse (for a later
    `audit verify --expect-head`)."""
    from relops_pipeline.lib import audit

    with read_warehouse(Home.resolve(args.home)) as con:
        seq, h = audit.head(con)
    return CommandResult({"seq": seq, "hash": h}, f"{seq}:{h}")


def _expected_head(text: str | None) -> tuple[int, str] | None:
    """--expect-head: SEQ:HASH as `relops audit head` prints it, or a file holding that (or the
    JSON of `relops audit head --json`)."""
    import json

    if not text:
        return None
    value = text
    if ":" not in text or Path(text).is_file():
        try:
            value = Path(text).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CliError(f"--expect-head {text!r}: not SEQ:HASH and not a readable file ({exc.strerror})") from None
        if value.startswith("{"):
            try:
                doc = json.loads(value)
                value = f"{doc['seq']}:{doc['hash']}"
            except (ValueError, KeyError, TypeError):
                raise CliError(f"--expect-head {text}: not the JSON of `relops audit head --json`") from None
    seq, _, digest = value.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise CliError(f"--expect-head {text!r}: expected SEQ:HASH as `relops audit head` prints it")
    return int(seq), digest


def cmd_audit_verify(args) -> CommandResult:
    """audit verify [--expect-head SEQ:HASH|FILE]: replay the keyed event log — every hash, link
    and MAC, the anchor — and check every table that commands act on against it; exit 8 when
    anything disagrees."""
    from relops_pipeline.lib import audit, ledger
    from relops_pipeline.lib.alerts.rules import verify_alert_rules
    from relops_pipeline.lib.gates.thresholds import verify_thresholds

    expect = _expected_head(args.expect_head)
    with read_warehouse(Home.resolve(args.home)) as con:
        res = audit.verify_chain(con, expect_head=expect)
        rows = ledger.disagreements(con)
        # Versioned tables tie their rows to events: a row edited after it was recorded shows here.
        versions = verify_thresholds(con) + verify_alert_rules(con)
    text = res.summary()
    text += "".join(f"\ntable row: {d.line()}" for d in rows)
    text += "".join(f"\nversion record: {v}" for v in versions)
    ok = res.ok and not rows and not versions
    if not ok:
        text += "\nrefused until resolved: rollouts, rollbacks and approvals that rely on these rows"
    data = {
        "ok": ok,
        "checked": res.checked,
        "head": {"seq": res.head[0], "hash": res.head[1]},
        "head_checked": res.head_checked,
        "problems": [p.__dict__ for p in res.problems],
        "table_rows": [d.as_dict() for d in rows],
        "version_problems": versions,
        "notes": res.notes,
    }
    return CommandResult(data, text, EXIT_OK if ok else EXIT_TAMPERED)


def cmd_thresholds_show(args) -> CommandResult:
    """thresholds show WORKFLOW: the version in force (YAML) and the history (--json)."""
    import yaml

    from relops_pipeline.lib.gates.thresholds import current_thresholds, thresholds_history
    from relops_pipeline.lib.warehouse import open_warehouse

    home = Home.resolve(args.home)
    wf = get_workflow(home, args.workflow)
    with open_warehouse(home.warehouse_path) as con:
        th = current_thresholds(con, wf.name)
        hist = thresholds_history(con, wf.name)
    return CommandResult(
        {"current": th.as_dict(), "history": hist}, yaml.safe_dump({"version": th.version, **th.as_dict()}, sort_keys=False)
    )


def cmd_thresholds_accept(args) -> CommandResult:
    """thresholds accept PROPOSAL [--by LABEL]: a ratchet proposal becomes the new version."""
    return accept_or_reject(Home.resolve(args.home), "thresholds", args.proposal_id, action="accept", by=args.by, reason=args.reason)


def cmd_thresholds_reject(args) -> CommandResult:
    """thresholds reject PROPOSAL [--by LABEL] --reason TEXT"""
    return accept_or_reject(Home.resolve(args.home), "thresholds", args.proposal_id, action="reject", by=args.by, reason=args.reason)


def cmd_thresholds_set(args) -> CommandResult:
    """thresholds set WORKFLOW FILE [--by LABEL] --reason TEXT: a new version, by an owner or delegate."""
    import yaml

    from relops_pipeline.lib.gates.thresholds import record_thresholds
    from relops_pipeline.lib.warehouse import open_warehouse

    home = Home.resolve(args.home)
    wf = get_workflow(home, args.workflow)
    with open_warehouse(home.warehouse_path) as con:
        by = require_approver(con, home, wf, args.by, "change the thresholds", asked=args.reason, action="thresholds")
        try:
            mapping = yaml.safe_load(Path(args.file).read_text()) or {}
            th = record_thresholds(con, wf.name, mapping, author=by, reason=args.reason)
        except (ValueError, OSError) as exc:
            raise CliError(str(exc)) from None
    return CommandResult({"version": th.version}, f"thresholds of {wf.name} are now version {th.version} (by {th.author}: {th.reason})")


def register(add: Commands) -> None:
    """Register gate, approve, audit and thresholds on the `relops` parser."""
    p = add(
        "gate",
        cmd_gate,
        "decide a release's gate (CI mode): exit 0 SHIP, 1 BLOCK, 2 REVIEW, 3 invalid evidence or bad input, 4+ other errors",
    )
    p.add_argument("workflow")
    p.add_argument("version")
    p.add_argument("--baseline", default=None, help="compare with this version (default: the live release)")
    p.add_argument("--suite-version", default=None)
    p.add_argument("--junit", default=None, metavar="FILE", help="write JUnit XML, one test per rule")
    p.add_argument("--markdown", default=None, metavar="FILE", help="write a pull-request comment")
    p = add(
        "approve",
        cmd_approve,
        "approve a REVIEW (or --override a BLOCK) as an owner or delegate; invalid evidence is never approved (exit 3): re-run the evals",
    )
    p.add_argument("workflow")
    p.add_argument("version")
    add_by(p, "the owner or a delegate")
    p.add_argument("--reason", required=True)
    p.add_argument("--override", action="store_true", help="ship a BLOCKed release anyway (recorded as an override)")

    audit = add.group("audit", "the keyed, hash-chained event log: audit verify [--expect-head SEQ:HASH] | audit head")
    p = audit(
        "verify",
        cmd_audit_verify,
        "replay the event log (hashes, MACs, anchor) and check the tables commands act on against it; exit 8 when anything disagrees",
    )
    p.add_argument("--expect-head", default=None, metavar="SEQ:HASH", help="a head recorded earlier: detects a truncated log")
    audit("head", cmd_audit_head, "print the log's head as SEQ:HASH")

    thresholds = add.group("thresholds", "versioned gate thresholds: show W | set W FILE | accept PROPOSAL | reject PROPOSAL")
    p = thresholds("show", cmd_thresholds_show, "show a workflow's thresholds in force (--json: with the history)")
    p.add_argument("workflow")
    p = thresholds("set", cmd_thresholds_set, "record a new version from a YAML file, as the workflow's owner or a delegate")
    p.add_argument("workflow")
    p.add_argument("file", metavar="FILE")
    add_by(p, "the owner or a delegate")
    p.add_argument("--reason", required=True)
    for verb, fn in (("accept", cmd_thresholds_accept), ("reject", cmd_thresholds_reject)):
        p = thresholds(verb, fn, f"{verb} a threshold proposal as the workflow's owner or a delegate")
        p.add_argument("proposal_id", metavar="PROPOSAL")
        add_by(p, "the owner or a delegate")
        p.add_argument("--reason", default=None, help="why (needed to reject)")
