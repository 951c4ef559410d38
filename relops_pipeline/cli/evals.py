"""`relops workflow add`, `release register`, `suite` and `eval`: workflows, releases, their
suites and eval runs (one run, an import, or a backfill over every release)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relops_pipeline.cli.cadence import accept_or_reject
from relops_pipeline.cli.common import (
    EXIT_USAGE,
    CliError,
    CommandResult,
    Commands,
    act_as,
    add_by,
    add_release_partition,
    authorized_actor,
    dagster_defs,
    dagster_instance,
    get_workflow,
    get_workflow_release,
    materialize_or_fail,
    positive_int,
    read_warehouse,
    record_workflow_changes,
    release_partitions,
)
from relops_pipeline.lib.home import Home
from relops_pipeline.lib.results import to_json

if TYPE_CHECKING:
    from relops_pipeline.lib.evals.store import EvalRunSummary

# What `relops` materializes on a release's partition.
RELEASE_EVAL = ["release_manifest", "eval_run"]
RELEASE_MANIFEST = ["release_manifest"]
EVAL_RUN = ["eval_run"]


def cmd_workflow_add(args) -> CommandResult:
    from relops_pipeline.lib.workflows import WorkflowError, add_workflow

    home = Home.resolve(args.home)
    runner = _runner_from_args(args)
    home.ensure()
    warnings: list[str] = []
    try:
        path = add_workflow(home.workflows_dir, args.name, owner=args.owner, runner=runner, warnings=warnings)
    except WorkflowError as exc:
        raise CliError(str(exc)) from None
    what = {"http": f"runner http posting to {args.url}", "python": f"runner python calling {args.callable}"}.get(
        args.runner, "a replay runner (recorded outputs; or use --runner http --url URL / --runner python --callable mod:fn)")
    return CommandResult(
        {"workflow": args.name, "path": str(path), "runner": runner, "warnings": warnings},
        "\n".join([f"workflow {args.name} written to {path}: {what}; edit its scorers and thresholds there",
                   *(f"warning: {w}" for w in warnings)]),
    )


def _runner_from_args(args) -> dict | None:
    """The runner block of `workflow add --runner ...` (None: the default replay runner)."""
    for key in ("runner", "url", "mode", "api_key_env", "callable"):  # a Namespace built by hand may omit them
        setattr(args, key, getattr(args, key, None))
    if args.runner is None:
        if args.url or args.callable or args.api_key_env or args.mode:
            raise CliError("--url, --mode and --api-key-env need --runner http; --callable needs --runner python", EXIT_USAGE)
        return None
    if args.runner == "http":
        if not args.url or args.callable:
            raise CliError("--runner http needs --url (the full chat-completions URL) and takes no --callable", EXIT_USAGE)
        runner = {"type": "http", "url": args.url, "mode": args.mode or "openai-chat"}
        if args.api_key_env:
            runner["api_key_env"] = args.api_key_env
        return runner
    if not args.callable or args.url or args.mode or args.api_key_env:
        raise CliError("--runner python needs --callable package.module:function and takes no --url, --mode or "
                       "--api-key-env", EXIT_USAGE)
    return {"type": "python", "callable": args.callable}


def _roles_text(roles) -> str:
    return f"owner {roles.owner or '-'}, delegates {', '.join(roles.delegates) or '-'}, on call {', '.join(roles.on_call) or '-'}"


def cmd_workflow_show(args) -> CommandResult:
    """workflow show NAME: the roles in the file, the roles in force, and a change of roles that
    waits for acceptance (with the diff of its file), once the file is recorded."""
    from relops_pipeline.lib.workflows import recorded_configs, roles_in_force

    home = Home.resolve(args.home)
    wf = get_workflow(home, args.name)
    with read_warehouse(home) as con:
        record_workflow_changes(con, home)
        recorded = recorded_configs(con, wf.name).get(wf.name)
        in_force = roles_in_force(con, wf)
        history = [
            {k: e[k] for k in ("seq", "ts", "kind", "actor", "reason")} | {"hash": (e["payload"] or {}).get("hash")}
            for e in workflow_config_events(con, wf.name)
        ]
    pending = recorded is not None and recorded.pending
    lines = [f"{wf.name} ({wf.path})", f"  in the file  {_roles_text(wf.roles)}", f"  in force     {_roles_text(in_force)}"]
    if pending:
        lines.append(f"  pending: a change of roles waits for an approver: relops workflow accept {wf.name} --reason TEXT")
    lines += [f"  {e['seq']:>6}  {e['ts']:%Y-%m-%d %H:%M}  {e['kind']:<25} {e['actor']}: {e['reason']}" for e in history[-10:]]
    return CommandResult(
        {"workflow": wf.name, "roles": wf.roles.as_dict(), "in_force": in_force.as_dict(), "pending": pending, "history": history},
        "\n".join(lines),
    )


def workflow_config_events(con, name: str) -> list[dict[str, Any]]:
    """The workflow's recorded versions and acceptances, oldest first."""
    from relops_pipeline.lib import audit
    from relops_pipeline.lib.workflows import CONFIG_KINDS

    return sorted((e for kind in CONFIG_KINDS for e in audit.list_events(con, workflow=name, kind=kind)), key=lambda e: e["seq"])


def cmd_workflow_accept(args) -> CommandResult:
    """workflow accept NAME --reason TEXT [--by LABEL]: put the roles of the workflow file in
    force, as an approver under the roles in force now."""
    from relops_pipeline.lib.workflows import accept_workflow_config, recorded_configs

    home = Home.resolve(args.home)
    wf = get_workflow(home, args.name)
    with read_warehouse(home) as con:
        by = authorized_actor(
            con, home, wf, "accept_config", request=f"accept the roles of {wf.name}'s file", by=args.by, asked=args.reason
        )
        recorded = recorded_configs(con, wf.name).get(wf.name)
        event = accept_workflow_config(con, wf.name, actor=by, reason=args.reason)
    if event is None or recorded is None:
        return CommandResult({"workflow": wf.name, "accepted": False}, f"{wf.name}: no change of roles waits for acceptance")
    diff = (event["payload"] or {}).get("roles_diff", {})
    return CommandResult(
        {"workflow": wf.name, "accepted": True, "event_seq": event["seq"], "roles_diff": diff, "in_force": wf.roles.as_dict()},
        f"{by} accepted the roles of {wf.name} (event {event['seq']}): {_roles_text(wf.roles)}\n  was: {_roles_text(recorded.in_force)}",
    )


def _eval_run(home: Home, run_id: str) -> EvalRunSummary | None:
    """The eval run the Dagster run recorded, or None."""
    from relops_pipeline.lib.evals.store import eval_run_of_dagster_run
    from relops_pipeline.lib.warehouse import open_warehouse

    with open_warehouse(home.warehouse_path) as con:
        return eval_run_of_dagster_run(con, run_id)


def _eval_json(e: EvalRunSummary | None) -> dict[str, Any]:
    return to_json(e) if e is not None else {}


def _eval_text(e: EvalRunSummary | None) -> str:
    if e is None:
        return "no eval run recorded"
    lines = [
        f"eval run {e.eval_run_id} of {e.release_key} on suite {e.suite_version} ({e.source}): "
        f"{e.cases} cases, {e.samples} samples, {e.errors} errors"
        + ("" if e.valid else f" — INVALID: {e.invalid_reason}; no gate can decide on it, re-run the evals"),
    ]
    if e.error_causes:
        lines.append(f"  errors: {e.errors_text()}")
    if e.metrics:
        # The gate judges the mean score (of case means); the pass rate is the share of scored
        # samples that passed the metric, shown for reference.
        lines.append(f"  {'metric':<16} {'mean score':>10}  {'pass rate':>9}  scored samples")
    for m, v in e.metrics.items():
        lines.append(f"  {m:<16} {v.mean:>10.3f}  {v.pass_rate:>9.1%}  {v.n}")
    if e.must_pass_cases:
        lines.append(f"  must-pass cases failing in some sample: {e.must_pass_failing_cases} of {e.must_pass_cases}")
    return "\n".join(lines)


def cmd_release_register(args) -> CommandResult:
    import yaml

    from relops_pipeline.lib.evals.manifests import ManifestError, load_manifest

    home = Home.resolve(args.home)
    home.ensure()
    try:
        manifest = load_manifest(Path(args.file))
    except (ManifestError, ValueError) as exc:
        raise CliError(str(exc)) from None
    get_workflow(home, manifest.workflow)
    dest = home.root / "releases" / manifest.workflow / f"{manifest.version}.yaml"
    if dest.exists():
        registered = load_manifest(dest)
        if registered.content_hash != manifest.content_hash:
            raise CliError(
                f"release {manifest.release_key} is already registered with a different manifest ({dest}): "
                "a registered manifest is immutable; give the change a new version"
            )
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # The home keeps a self-contained copy: templates given by file are inlined.
        tmp = dest.with_suffix(".yaml.tmp")
        tmp.write_text(f"# registered from {Path(args.file).resolve()}\n" + yaml.safe_dump(manifest.content(), sort_keys=False))
        tmp.replace(dest)
    by = act_as(home, args.by, request=f"register {manifest.release_key}", workflow=manifest.workflow)
    return register_release(home, manifest, by=by, run_eval=not args.no_eval)


def register_release(home: Home, manifest, *, by: str, run_eval: bool = True) -> CommandResult:
    """Add the release's partition and record it (and run its eval) through Dagster."""
    from relops_pipeline.lib.evals.store import get_release
    from relops_pipeline.lib.warehouse import open_warehouse

    key = manifest.release_key
    add_release_partition(home, key)
    tags = {"relops/registered_by": by}
    result = materialize_or_fail(
        home,
        RELEASE_EVAL if run_eval else RELEASE_MANIFEST,
        what="release eval" if run_eval else "release manifest",
        partition_key=key,
        tags=tags,
    )
    with open_warehouse(home.warehouse_path) as con:
        release = get_release(con, key)
    if release is None:
        raise CliError(f"run {result.run_id} recorded no release {key}")
    ev = _eval_run(home, result.run_id) if run_eval else None
    summary = (release.diff or {}).get("summary") or []
    text = [f"registered {key} (manifest {(release.manifest_hash or '')[:12]}), compared with {release.baseline_version or 'nothing'}"]
    text += [f"  changed: {line}" for line in summary]
    if ev is not None:
        text.append(_eval_text(ev))
    return CommandResult(
        {"release_key": key, "manifest_hash": release.manifest_hash, "diff": release.diff, "eval": _eval_json(ev), "run_id": result.run_id},
        "\n".join(text),
    )


def cmd_suite_validate(args) -> CommandResult:
    """suite validate PATH: every problem of a suite file or folder."""
    from relops_pipeline.lib.evals.suites import validate_path

    problems = validate_path(Path(args.path))
    if problems:
        raise CliError("\n".join(str(p) for p in problems))
    return CommandResult({"path": args.path, "problems": []}, f"{args.path}: valid")


def cmd_suite_accept(args) -> CommandResult:
    """suite accept PROPOSAL [--by LABEL] [--backfill daemon|in-process|none]: the new suite
    version, then the eval backfill over every release of the workflow on it."""
    home = Home.resolve(args.home)
    out = accept_or_reject(home, "suite", args.proposal_id, action="accept", by=args.by, reason=args.reason)
    if args.backfill == "none":
        return out
    back = backfill_evals(home, out.data["workflow"], suite_version=out.data["version"], in_process=args.backfill == "in-process")
    return CommandResult({**out.data, "backfill": back.data}, out.text + "\n" + back.text)


def cmd_suite_reject(args) -> CommandResult:
    """suite reject PROPOSAL [--by LABEL] --reason TEXT"""
    return accept_or_reject(Home.resolve(args.home), "suite", args.proposal_id, action="reject", by=args.by, reason=args.reason)


def eval_or_explain(home: Home, key: str, tags: dict[str, str]):
    """Run the release's evals (EVAL_RUN); a failure says its cause first, why a gate needs it
    and the next step, then the run (cli/runs.reason_first)."""
    import re

    from relops_pipeline.cli.runs import reason_first

    try:
        return materialize_or_fail(home, EVAL_RUN, what="eval", partition_key=key, tags=tags)
    except CliError as exc:
        message = reason_first(str(exc))
        workflow, version = key.split("--", 1)
        if m := re.match(r"workflow \S+ has no eval suite under (\S+)", message):
            message = message.replace(
                m[0], f"{m[0]}: a release is judged on its eval suite; write the suite's first version there "
                      f"({m[1]}/v1.yaml, see the README's eval suites), then relops eval {workflow} {version}")
        elif m := re.match(r"no suite version '[^']*' for \S+; have \[([^\]]*)\]", message):
            have = [v.strip(" '") for v in m[1].split(",") if v.strip()]
            message = message.replace(
                m[0], f"{m[0]}: the evals run on a suite version that exists; name one of them "
                      f"(--suite-version {have[-1] if have else 'V'}) or leave --suite-version out for the latest")
        raise CliError(message, exc.code) from None


def cmd_eval_run(args) -> CommandResult:
    """eval WORKFLOW VERSION: run a registered release's evals (through Dagster)."""
    home = Home.resolve(args.home)
    workflow, version = args.workflow, args.version
    _wf, key = get_workflow_release(home, workflow, version)
    if key not in release_partitions(home, workflow):
        raise CliError(f"release {key} is not registered: its evals run on the manifest a registration records; "
                       "register it first (relops release register MANIFEST.yaml)")
    tags = {}
    if args.samples:
        tags["relops/samples"] = str(args.samples)
    if args.suite_version:
        tags["relops/suite_version"] = args.suite_version
    result = eval_or_explain(home, key, tags)
    ev = _eval_run(home, result.run_id)
    return CommandResult({**_eval_json(ev), "run_id": result.run_id}, _eval_text(ev))


def cmd_eval_import(args) -> CommandResult:
    """eval import FILE --workflow W --version V: a harness's results as the release's eval run."""
    home = Home.resolve(args.home)
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"no such file: {path}")
    _wf, key = get_workflow_release(home, args.workflow, args.version)
    from relops_pipeline.lib.evals.imports import ImportFormatError, import_results

    try:  # fail before any run on a file that cannot be imported
        import_results(path, args.format, workflow=args.workflow, version=args.version, variant=args.variant)
    except (ImportFormatError, ValueError) as exc:
        raise CliError(str(exc)) from None
    add_release_partition(home, key)
    tags = {"relops/import_file": str(path.resolve())}
    if args.format:
        tags["relops/import_format"] = args.format
    if args.variant:
        tags["relops/import_variant"] = args.variant
    result = materialize_or_fail(home, RELEASE_EVAL, what="eval import", partition_key=key, tags=tags)
    ev = _eval_run(home, result.run_id)
    return CommandResult({**_eval_json(ev), "run_id": result.run_id}, _eval_text(ev))


def _daemon_running(instance) -> bool:
    import time as _time

    beats = instance.get_daemon_heartbeats()
    beat = beats.get("BACKFILL")
    return beat is not None and _time.time() - beat.timestamp < 120


def cmd_eval_backfill(args) -> CommandResult:
    """eval backfill --workflow W: evaluate every registered release of the workflow."""
    return backfill_evals(Home.resolve(args.home), args.workflow, suite_version=args.suite_version, in_process=args.in_process)


def backfill_evals(home: Home, workflow: str, *, suite_version: str | None, in_process: bool) -> CommandResult:
    """Evaluate every registered release of the workflow (on a suite version, default the
    latest): one Dagster backfill for the daemon, or every partition now in this process."""
    get_workflow(home, workflow)
    keys = release_partitions(home, workflow)
    if not keys:
        raise CliError(f"workflow {workflow} has no registered releases: a backfill evaluates registered releases; "
                       "register one first (relops release register MANIFEST.yaml)")
    tags = {"relops/trigger": "cli-backfill"}
    if suite_version:
        tags["relops/suite_version"] = suite_version
    if in_process:
        runs = []
        for i, key in enumerate(keys, 1):
            print(f"[{i}/{len(keys)}] eval {key} ...", file=sys.stderr)
            runs.append(_eval_run(home, eval_or_explain(home, key, tags).run_id))
        return CommandResult(
            {
                "mode": "in-process",
                "releases": keys,
                "runs": [{"release_key": key, **_eval_json(r)} for key, r in zip(keys, runs, strict=True)],
            },
            "\n".join(_eval_text(r) for r in runs),
        )
    backfill_id = submit_backfill(home, keys, tags)
    instance = dagster_instance(home)
    running = _daemon_running(instance)
    note = (
        "the Dagster daemon is running: follow it in the UI (Overview > Backfills)"
        if running
        else "no Dagster daemon is running: the backfill is queued and runs when `make ui` starts; or run it now with --in-process"
    )
    return CommandResult(
        {"mode": "daemon", "backfill_id": backfill_id, "releases": keys, "daemon_running": running},
        f"backfill {backfill_id} submitted over {len(keys)} releases of {workflow}\n{note}",
    )


def submit_backfill(home: Home, keys: list[str], tags: dict) -> str:
    """One Dagster backfill of eval_run over the given release partitions."""
    import time as _time

    from dagster import AssetKey
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    from relops_pipeline.defs.beta import expected_beta_warnings

    instance = dagster_instance(home)
    with expected_beta_warnings():
        asset_graph = dagster_defs().resolve_asset_graph()
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=make_new_backfill_id(),
        asset_graph=asset_graph,
        partition_names=keys,
        asset_selection=[AssetKey("eval_run")],
        backfill_timestamp=_time.time(),
        tags=tags,
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=f"eval backfill {tags.get('relops/suite_version', 'latest suite')}",
        description="relops eval backfill",
        run_config=None,
    )
    instance.add_backfill(backfill)
    return backfill.backfill_id


def register(add: Commands) -> None:
    """Register workflow, release, suite and eval (and their verbs) on the `relops` parser."""
    workflow = add.group("workflow", "workflows: relops workflow add NAME [--owner LABEL] | show NAME | accept NAME --reason TEXT")
    p = workflow("add", cmd_workflow_add, "add a workflow's configuration, defaults spelled out")
    p.add_argument("name")
    p.add_argument("--owner", default=None)
    p.add_argument("--runner", choices=("http", "python"), default=None,
                   help="how evals produce outputs: http (an endpoint) or python (a function); default: replay")
    p.add_argument("--url", default=None, help="--runner http: the full URL, e.g. https://api.openai.com/v1/chat/completions")
    p.add_argument("--mode", choices=("openai-chat", "json"), default=None, help="--runner http: the request shape (openai-chat)")
    p.add_argument("--api-key-env", default=None, help="--runner http: the environment variable holding the API key")
    p.add_argument("--callable", default=None, help="--runner python: package.module:function")
    p = workflow("show", cmd_workflow_show, "show a workflow's roles: in its file, in force, and a change waiting for acceptance")
    p.add_argument("name")
    p = workflow(
        "accept",
        cmd_workflow_accept,
        "put a change of the workflow file's roles (owner, delegates, on_call) in force, as an approver under the roles in force now",
    )
    p.add_argument("name")
    p.add_argument("--reason", required=True)
    add_by(p, "the owner or a delegate in force now")

    release = add.group("release", "releases: relops release register FILE")
    p = release("register", cmd_release_register, "register a release manifest (and run its eval through Dagster)")
    p.add_argument("file", metavar="FILE")
    add_by(p)
    p.add_argument("--no-eval", action="store_true", help="record the release without running its eval")

    suite = add.group("suite", "suite validate PATH | suite accept PROPOSAL [--by LABEL] | suite reject PROPOSAL [--by LABEL] --reason T")
    p = suite("validate", cmd_suite_validate, "validate a suite file or folder: every problem, as file:case:field: message")
    p.add_argument("path", metavar="PATH")
    p = suite("accept", cmd_suite_accept, "accept a suite proposal (a new suite version), then evaluate every release on it")
    p.add_argument("proposal_id", metavar="PROPOSAL")
    add_by(p, "the owner or a delegate")
    p.add_argument("--reason", default=None)
    p.add_argument(
        "--backfill",
        default="daemon",
        choices=["daemon", "in-process", "none"],
        help="evaluate every release on the new version (default: a Dagster backfill)",
    )
    p = suite("reject", cmd_suite_reject, "reject a suite proposal")
    p.add_argument("proposal_id", metavar="PROPOSAL")
    add_by(p, "the owner or a delegate")
    p.add_argument("--reason", default=None, help="why (needed)")

    evals = add.group(
        "eval", "run a release's evals: eval W V | eval import FILE --workflow W --version V | eval backfill --workflow W", default="run"
    )
    p = evals("run", cmd_eval_run, "run a registered release's evals (`relops eval W V` does this)")
    p.add_argument("workflow")
    p.add_argument("version")
    p.add_argument("--samples", type=positive_int, default=None, help="samples per case (default: the workflow's)")
    p.add_argument("--suite-version", default=None)
    p = evals("import", cmd_eval_import, "import a harness's results (promptfoo, Inspect, relops JSONL) as the release's eval run")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--workflow", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--format", default=None, choices=["promptfoo", "inspect", "jsonl"])
    p.add_argument("--variant", default=None, help="which provider/prompt of a multi-provider promptfoo file")
    p = evals("backfill", cmd_eval_backfill, "evaluate every registered release of a workflow (a Dagster backfill)")
    p.add_argument("--workflow", required=True)
    p.add_argument("--suite-version", default=None)
    p.add_argument("--in-process", action="store_true", help="run every partition now, in this process")
