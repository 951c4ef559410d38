"""Shared plumbing of the `relops` command: exit codes, CliError, CommandResult, the parser's
registration (Commands), Dagster runs on the home's instance (Dagster is imported lazily: it
costs over a second to import), the warehouse and the workflows' configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from relops_pipeline.cli.runs import EXIT_BUSY
from relops_pipeline.lib.home import HOME_ENV, Home

EXIT_OK = 0
EXIT_BAD_INPUT = 3
EXIT_RUN_FAILED = 4
EXIT_NO_HOME = 5
EXIT_TAMPERED = 8  # the event log, or a table it backs, was tampered with: nothing was changed
EXIT_USAGE = 64  # EX_USAGE (sysexits.h): a bad command line; never 0, 1 or 2, the codes of decisions


class CliError(Exception):
    """A one-line failure the command reports, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class CommandResult:
    """What a command returns: `data` is what --json prints, `text` the human summary, and
    `exit_code` what the process exits with."""

    data: dict = field(default_factory=dict)
    text: str = ""
    exit_code: int = EXIT_OK


Command = Callable[[argparse.Namespace], CommandResult]


def _number(text: str, convert: Callable[[str], float], ok: Callable[[float], bool], expected: str) -> float:
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    return int(_number(text, int, lambda v: v >= 1, "a whole number >= 1"))


def percent(text: str) -> float:
    """An argparse type: a traffic share in percent, above 0 and at most 100."""
    return _number(text, float, lambda v: 0 < v <= 100, "a share above 0 and at most 100")


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    import math

    return _number(text, float, lambda v: v > 0 and math.isfinite(v), "a number above 0")


@dataclass
class _CommandLine:
    """The command line RelopsParser.parse_args is parsing: whether it asks for --json, and the
    innermost command parser that parsed its part (it names the command in a usage error)."""

    json: bool
    innermost: str | None = None


_COMMAND_LINE: contextvars.ContextVar[_CommandLine | None] = contextvars.ContextVar("relops_command_line", default=None)


class RelopsParser(argparse.ArgumentParser):
    """An ArgumentParser whose verbs (a command's subcommands, see Commands.group) may come
    after the options, as in `relops audit --expect-head S:H verify`, and may have a default:
    `relops eval W V` is `relops eval run W V`, `relops alerts` is `relops alerts list`.

    A usage error (an unknown command, verb or option, a missing or invalid argument, a bad
    choice, a value its type refuses), in any command or verb, exits 64 (EXIT_USAGE) with one
    line on stderr, or one JSON object on stdout when the command line asks for --json."""

    verb_group = False  # set on the parser of a command with verbs
    default_verb: str | None = None

    def parse_args(self, args=None, namespace=None):
        import sys

        argv = list(sys.argv[1:] if args is None else args)
        before_dashes = argv[: argv.index("--")] if "--" in argv else argv
        token = _COMMAND_LINE.set(_CommandLine(json="--json" in before_dashes))
        try:
            return super().parse_args(self._json_after_command(argv), namespace)
        finally:
            _COMMAND_LINE.reset(token)

    def parse_known_args(self, args=None, namespace=None):
        verbs = self._verbs() if self.verb_group else None
        if verbs is not None and args is not None:
            args = self._verb_first(list(args), verbs)
        parsed = super().parse_known_args(args, namespace)
        line = _COMMAND_LINE.get()
        if line is not None and line.innermost is None:  # the innermost parser returns first
            line.innermost = self.prog
        return parsed

    def error(self, message: str) -> NoReturn:
        """A usage error exits 64 (EX_USAGE), never 1 or 2 (BLOCK, REVIEW) nor 3 (bad input):
        one line `PROG: error: MESSAGE (see `PROG --help`)` on stderr, or with --json one
        JSON object on stdout."""
        import json
        import sys

        line = _COMMAND_LINE.get()
        prog = self.prog
        if message.startswith("unrecognized arguments") and line is not None and line.innermost:
            prog = line.innermost  # reported by the top parser: name the command that refused them
        message = " ".join(message.split())  # one line
        wants_json = line.json if line is not None else "--json" in sys.argv[1:]
        if wants_json:
            print(json.dumps({"error": f"{prog}: {message}", "exit_code": EXIT_USAGE, "help": f"{prog} --help"}))
        else:
            print(f"{prog}: error: {message} (see `{prog} --help`)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)

    def _check_value(self, action, value):
        """An invalid choice names the closest choice; a long list of choices is left to --help."""
        import difflib

        if action.choices is None or value in action.choices:
            return
        choices = [str(c) for c in action.choices]
        close = difflib.get_close_matches(str(value), choices, n=1)
        listed = f" (choose from {', '.join(repr(c) for c in choices)})" if len(choices) <= 8 else ""
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise argparse.ArgumentError(action, f"invalid choice: {value!r}{listed}{hint}")

    def _json_after_command(self, argv: list[str]) -> list[str]:
        """`relops --json CMD ...` is `relops CMD ... --json`: --json is an option of every command."""
        commands = self._verbs()
        if commands is None or "--json" not in argv:
            return argv
        takes_value = {opt for a in self._actions if a.nargs != 0 for opt in a.option_strings}
        i = 0
        while i < len(argv) and argv[i] not in commands.choices:
            if argv[i] == "--":
                return argv
            i += 2 if argv[i] in takes_value else 1
        if i >= len(argv) or "--json" not in argv[:i]:
            return argv
        before, after = [t for t in argv[:i] if t != "--json"], argv[i:]
        cut = after.index("--") if "--" in after else len(after)
        return [*before, *after[:cut], "--json", *after[cut:]]

    def _verbs(self) -> argparse._SubParsersAction | None:
        if self._subparsers is None:
            return None
        return next((a for a in self._subparsers._group_actions if isinstance(a, argparse._SubParsersAction)), None)

    def _verb_first(self, args: list[str], verbs: argparse._SubParsersAction) -> list[str]:
        """The verb moved in front of the options before it; or the default verb put there when
        the first positional argument is none of the verbs (help asked before it: unchanged)."""
        takes_value = {opt for p in verbs.choices.values() for a in p._actions if a.nargs != 0 for opt in a.option_strings}
        i = 0
        while i < len(args):
            tok = args[i]
            if tok == "--":
                break
            if tok in ("-h", "--help"):
                return args
            if tok.startswith("-") and tok != "-":
                i += 2 if tok in takes_value and "=" not in tok else 1
                continue
            if tok in verbs.choices:
                return [tok, *args[:i], *args[i + 1 :]]
            break
        return [self.default_verb, *args] if self.default_verb else args


class Commands:
    """Where a domain module registers its commands (its `register(commands)`):
    `commands(name, fn, help)` adds a command; `commands.group(name, help)` a command with
    verbs, each verb then added the same way on the group (its own arguments and help)."""

    def __init__(self, subparsers: argparse._SubParsersAction, home_help: str):
        self._sub = subparsers
        self._home_help = home_help

    def __call__(self, name: str, fn: Command, help_: str) -> argparse.ArgumentParser:
        p = self._sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--home", default=argparse.SUPPRESS, help=self._home_help)
        p.add_argument("--json", action="store_true", help="print one JSON object")
        p.set_defaults(fn=fn)
        return p

    def group(self, name: str, help_: str, *, default: str | None = None) -> Commands:
        """A command with verbs (`relops NAME VERB ...`); `default`: the verb when none is given."""
        p = self._sub.add_parser(name, help=help_, description=help_)
        assert isinstance(p, RelopsParser)
        p.verb_group, p.default_verb = True, default
        sub = p.add_subparsers(dest=f"{name}_verb", metavar="VERB", required=default is None)
        return Commands(sub, self._home_help)


def _activate(home: Home) -> None:
    """Point this process at the home: its instance (DAGSTER_HOME) and its definitions."""
    home.ensure()
    os.environ[HOME_ENV] = str(home.root)
    os.environ["DAGSTER_HOME"] = str(home.dagster_home)


def dagster_instance(home: Home):
    """The home's Dagster instance (this process is pointed at the home first)."""
    import fcntl

    _activate(home)
    from dagster import DagsterInstance

    # Two processes creating a new instance's SQLite storage at once race in its schema
    # migrations; the first one creates it under a lock, the others then open it.
    with open(home.dagster_home / ".instance.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return DagsterInstance.get()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def dagster_defs():
    """The project's Dagster Definitions."""
    from relops_pipeline.definitions import defs

    return defs


def run_job(home: Home, job_name: str, *, run_config: dict | None = None, tags: dict | None = None):
    """Execute a job in this process, recorded on the home's Dagster instance."""
    instance = dagster_instance(home)
    from relops_pipeline.defs.beta import expected_beta_warnings

    with expected_beta_warnings():  # Dagster warns on its own use of a beta parameter here
        job = dagster_defs().resolve_job_def(job_name)
    return _execute(instance, job, what=job_name, run_config=run_config, tags=tags)


def materialize(home: Home, assets, *, partition_key: str | None = None, days: tuple[str, str] | None = None,
                tags: dict | None = None):
    """Materialize a selection of assets in this process (one partition, or a range of days in
    one run), recorded on the home's instance as the UI would launch it."""
    import dagster as dg

    from relops_pipeline.defs.followups import RANGE_END_TAG, RANGE_START_TAG

    instance = dagster_instance(home)
    from relops_pipeline.defs.beta import expected_beta_warnings

    with expected_beta_warnings():  # Dagster warns on its own use of a beta parameter here
        job = dagster_defs().resolve_implicit_global_asset_job_def()
    run_tags = dict(tags or {})
    if days is not None:
        run_tags[RANGE_START_TAG], run_tags[RANGE_END_TAG] = days
    return _execute(instance, job, what=", ".join(assets), tags=run_tags, partition_key=partition_key,
                    asset_selection=[dg.AssetKey(a) for a in assets])


def _execute(instance, job, *, what: str, run_config: dict | None = None, tags: dict | None = None, **kwargs):
    """Execute in this process once no live run holds the warehouse (cli/runs.py). The run's own
    log goes to the instance (the UI shows it); the terminal gets the summary (a BLOCKed gate
    fails its run by design: no stack trace on the terminal for that). RELOPS_LOG_LEVEL=INFO
    shows the run's log here too."""
    from relops_pipeline.cli.runs import WarehouseBusyError, execute

    quiet = {"loggers": {"console": {"config": {"log_level": os.environ.get("RELOPS_LOG_LEVEL", "CRITICAL")}}}}
    try:
        return execute(instance, job.execute_in_process, what=what, tags={"relops/trigger": "cli", **(tags or {})},
                       run_config={**quiet, **(run_config or {})}, raise_on_error=False, **kwargs)
    except WarehouseBusyError as exc:
        raise CliError(str(exc), EXIT_BUSY) from None


def materialize_or_fail(home: Home, assets: Sequence[str], *, what: str, partition_key: str | None = None,
                        days: tuple[str, str] | None = None, tags: dict | None = None, code: int = EXIT_RUN_FAILED):
    """materialize, and the result when the run succeeded; a failed run is a CliError naming
    `what`, the run id, the partition and the innermost cause."""
    result = materialize(home, assets, partition_key=partition_key, days=days, tags=tags)
    if not result.success:
        where = partition_key or (f"{days[0]}..{days[1]}" if days else None)
        raise CliError(f"{what} run {result.run_id}{f' for {where}' if where else ''} failed: {run_failure(result)}", code)
    return result


def run_followup(home: Home, followup):
    """Run one planned follow-up (defs/followups.py) in this process: what a sensor would launch
    when the daemon runs. A failed run is a CliError."""
    if followup.assets:
        return materialize_or_fail(home, followup.assets, what=followup.kind.replace("_", " "),
                                   partition_key=followup.partition_key, days=followup.days, tags=dict(followup.tags))
    return run_or_fail(home, followup.job, what=followup.kind.replace("_", " "), run_config=dict(followup.run_config),
                       tags=followup.run_tags)


def run_or_fail(home: Home, job_name: str, *, what: str, run_config: dict | None = None, tags: dict | None = None,
                code: int = EXIT_RUN_FAILED):
    """run_job, and the result when the run succeeded; a failed run is a CliError naming `what`,
    the run id (and its partition, when tagged with one) and the innermost cause (exit 8 when
    the cause is tampering: the run refused to act on what the event log does not back)."""
    result = run_job(home, job_name, run_config=run_config, tags=tags)
    if not result.success:
        key = (tags or {}).get("dagster/partition")
        err = _innermost_error(result)
        if err is not None and err.cls_name == "TamperedError":
            code = EXIT_TAMPERED
        raise CliError(f"{what} run {result.run_id}{f' for {key}' if key else ''} failed: {run_failure(result)}", code)
    return result


def _innermost_error(result):
    for event in result.all_events:
        if event.is_failure and event.event_specific_data is not None:
            err = getattr(event.event_specific_data, "error", None)
            while err is not None and getattr(err, "cause", None) is not None:
                err = err.cause
            if err is not None:
                return err
    return None


def run_failure(result) -> str:
    """The innermost error message of a failed run: the user-facing cause, not Dagster's wrapper."""
    import re

    err = _innermost_error(result)
    if err is None:
        return "the run failed (see the Dagster UI)"
    line = err.message.strip().splitlines()[-1]
    return re.sub(r"^relops_pipeline\.[\w.]+\.(\w+(Error|Refused)): ", "", line)


@contextlib.contextmanager
def read_warehouse(home: Home):
    """Open the home's warehouse (its traces read from the trace store when relops.yaml says
    so); no warehouse yet is a CliError (exit 5)."""
    from relops_pipeline.lib.settings import SettingsError, load_settings
    from relops_pipeline.lib.warehouse import open_warehouse

    if not home.warehouse_path.exists():
        raise CliError(f"no warehouse at {home.warehouse_path}: ingest traces first (relops ingest PATH)", EXIT_NO_HOME)
    try:
        store = load_settings(home.settings_file).trace_store
    except SettingsError as exc:
        raise CliError(str(exc)) from None
    # Read-write open: it migrates an older warehouse, and read-only opens conflict the same way.
    with open_warehouse(home.warehouse_path) as con:
        if store is not None:
            from relops_pipeline.lib.tracestore.linked import link_trace_store

            link_trace_store(con, store, writable=True)
        yield con


def add_by(p: argparse.ArgumentParser, who_may: str | None = None) -> None:
    """--by LABEL: only a label, accepted when relops.yaml's identities let the principal use it
    (lib/identity.py); `who_may`: which roles the command needs."""
    p.add_argument("--by", default=None, metavar="LABEL",
                   help="act as this label, one relops.yaml's identities let you use (default: your own)"
                        + (f"; {who_may}" if who_may else ""))


def record_workflow_changes(con, home: Home) -> None:
    """Record every workflow file that changed since its last recorded version (an event with
    its diff; lib/workflows.py), as the principal running this command."""
    from relops_pipeline.lib.workflows import record_workflow_configs

    principal, _ = who(home)
    record_workflow_configs(con, home.workflows_dir, actor=principal.name)


def who(home: Home):
    """(the principal running this command, the home's identity settings): the OS user, or the
    CI identity of $RELOPS_OIDC_TOKEN (lib/identity.py); a token that does not verify or bad
    settings are a CliError (exit 3), never a fallback."""
    from relops_pipeline.lib.identity import IdentityError, current_principal
    from relops_pipeline.lib.settings import SettingsError, load_identity_settings

    try:
        settings = load_identity_settings(home.settings_file)
        return current_principal(settings), settings
    except (IdentityError, SettingsError) as exc:
        raise CliError(str(exc)) from None


def act_as(home: Home, by: str | None, *, request: str, con=None, workflow: str | None = None,
           asked: str | None = None) -> str:
    """The label a state-changing command acts as: --by when the principal may act as it, else
    the principal's own label. A refusal is recorded (actor: the real principal) in the
    warehouse (`con`, else opened here) and raised as a CliError (exit 3)."""
    from relops_pipeline.lib.identity import AuthorizationRefused, actor_label, record_refusal

    principal, settings = who(home)
    try:
        return actor_label(principal, settings, by, request=request)
    except AuthorizationRefused as exc:
        if con is not None:
            record_refusal(con, principal, exc, request=request, by=by, workflow=workflow, asked=asked)
        else:
            from relops_pipeline.lib.warehouse import open_warehouse

            with open_warehouse(home.warehouse_path) as own:
                record_refusal(own, principal, exc, request=request, by=by, workflow=workflow, asked=asked)
        raise CliError(str(exc)) from None


def authorized_actor(con, home: Home, wf, action: str, *, request: str, by: str | None, asked: str | None = None,
                     release_key: str | None = None) -> str:
    """The label the principal takes `action` on the workflow as (lib/identity.authorize_request:
    changed workflow files are recorded first, the roles in force decide); a refusal is recorded
    and raised as a CliError (exit 3)."""
    from relops_pipeline.lib.identity import AuthorizationRefused, authorize_request

    principal, settings = who(home)
    try:
        return authorize_request(con, home.workflows_dir, wf, principal, settings, action, request=request, by=by,
                                 asked=asked, release_key=release_key)
    except AuthorizationRefused as exc:
        raise CliError(str(exc)) from None


def get_workflow(home: Home, name: str):
    """The workflow's configuration, or a one-line error."""
    from relops_pipeline.lib.workflows import WorkflowError, load_workflow

    try:
        return load_workflow(home.workflows_dir, name)
    except WorkflowError as exc:
        raise CliError(str(exc)) from None


def get_workflow_release(home: Home, workflow: str, version: str):
    """The workflow's configuration and the release key, or a one-line error."""
    from relops_pipeline.lib.evals.model import release_key

    wf = get_workflow(home, workflow)
    try:
        return wf, release_key(wf.name, version)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def add_release_partition(home: Home, key: str) -> None:
    """Add the release's dynamic partition (once)."""
    from relops_pipeline.defs.evals.partitions import RELEASES_PARTITIONS

    instance = dagster_instance(home)
    if not instance.has_dynamic_partition(RELEASES_PARTITIONS, key):
        instance.add_dynamic_partitions(RELEASES_PARTITIONS, [key])


def release_partitions(home: Home, workflow: str) -> list[str]:
    """The workflow's registered release keys (its dynamic partitions), sorted."""
    from relops_pipeline.defs.evals.partitions import RELEASES_PARTITIONS

    instance = dagster_instance(home)
    return sorted(k for k in instance.get_dynamic_partitions(RELEASES_PARTITIONS) if k.startswith(f"{workflow}--"))


def plain_table(header: list[str], rows: list[list]) -> str:
    """Rows as left-aligned text columns under the header."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() for r in cells)
