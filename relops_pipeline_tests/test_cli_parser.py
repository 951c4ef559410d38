"""The `relops` parser alone (no home, no Dagster run): the command lines of the README parse
to the command they name, verbs are subcommands with their own arguments and help, every
command returns a CommandResult, and a usage error anywhere exits 64 with one line (one JSON
object under --json)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import subprocess
import sys

import pytest

from relops_pipeline.cli import EXIT_CODES, CommandResult, build_parser, main
from relops_pipeline.cli.common import EXIT_BAD_INPUT, EXIT_USAGE, RelopsParser
from relops_pipeline_tests.procs import scaled

# (command line, the command function it runs, some of the parsed arguments)
LINES = [
    ("ingest a b --format otlp --json", "cmd_ingest", {"paths": ["a", "b"], "format": "otlp", "json": True}),
    ("status W", "cmd_status", {"workflow": "W"}),
    ("workflow add NAME --owner X", "cmd_workflow_add", {"name": "NAME", "owner": "X"}),
    ("release register M.yaml --by N --no-eval", "cmd_release_register", {"file": "M.yaml", "no_eval": True}),
    ("suite validate PATH", "cmd_suite_validate", {"path": "PATH"}),
    ("suite accept P --by N --backfill in-process", "cmd_suite_accept", {"proposal_id": "P", "backfill": "in-process"}),
    ("eval W V --samples 3 --suite-version S", "cmd_eval_run", {"workflow": "W", "version": "V", "samples": 3}),
    ("eval --json W V", "cmd_eval_run", {"workflow": "W", "json": True}),
    ("eval import F --workflow W --version V --format promptfoo", "cmd_eval_import", {"file": "F", "format": "promptfoo"}),
    ("eval backfill --workflow W --in-process", "cmd_eval_backfill", {"workflow": "W", "in_process": True}),
    ("eval --workflow W backfill", "cmd_eval_backfill", {"workflow": "W"}),
    ("gate W V --baseline V0 --json --junit F", "cmd_gate", {"baseline": "V0", "junit": "F"}),
    ("gate --home H W V", "cmd_gate", {"home": "H"}),
    ("--home H gate W V", "cmd_gate", {"home": "H"}),
    ("approve W V --by N --reason T --override", "cmd_approve", {"override": True}),
    ("thresholds show W", "cmd_thresholds_show", {"workflow": "W"}),
    ("thresholds set W FILE --by N --reason T", "cmd_thresholds_set", {"file": "FILE"}),
    ("thresholds accept P --by N", "cmd_thresholds_accept", {"proposal_id": "P", "reason": None}),
    ("audit verify --expect-head 1:ab", "cmd_audit_verify", {"expect_head": "1:ab"}),
    ("audit --expect-head 1:ab verify", "cmd_audit_verify", {"expect_head": "1:ab"}),
    ("audit head", "cmd_audit_head", {}),
    ("drift --workflow W --week 2026-01-05 --refresh", "cmd_drift", {"refresh": True}),
    ("alerts", "cmd_alerts_list", {"status": None}),
    ("alerts --status dead --json", "cmd_alerts_list", {"status": "dead", "json": True}),
    ("alerts deliver", "cmd_alerts_deliver", {}),
    ("alerts retry ID", "cmd_alerts_retry", {"alert_id": "ID"}),
    ("alerts test --workflow W --severity error", "cmd_alerts_test", {"workflow": "W", "severity": "error"}),
    ("alerts reject P --by N", "cmd_alerts_reject", {"proposal_id": "P"}),
    ("rollout W V --stage canary --percent 10", "cmd_rollout", {"stage": "canary", "percent": 10.0}),
    ("rollback W --to V --reason R", "cmd_rollback", {"to": "V"}),
    ("canary W V", "cmd_canary", {}),
    ("drill", "cmd_drill", {"workflow": None}),
    ("memo --week 2026-01-05 --full", "cmd_memo", {"full": True}),
    ("review sample --week D", "cmd_review_sample", {"week": "D"}),
    ("review import FILE --by N --open-incidents", "cmd_review_import", {"file": "FILE", "open_incidents": True}),
    ("incident open --workflow W --title T --trace a --trace b", "cmd_incident_open", {"trace": ["a", "b"]}),
    ("incident list --all", "cmd_incident_list", {"all": True}),
    ("incident show ID", "cmd_incident_show", {"incident_id": "ID"}),
    ("incident close ID --resolution R", "cmd_incident_close", {"resolution": "R"}),
    ("propose --kind suite", "cmd_propose", {"kind": "suite"}),
    ("proposals --kind suite --status draft", "cmd_proposals_list", {"kind": "suite", "status": "draft"}),
    ("proposals show ID", "cmd_proposals_show", {"proposal_id": "ID"}),
    ("readiness W", "cmd_readiness", {"workflow": "W"}),
    ("demo --scale 2", "cmd_demo", {"scale": 2.0}),
    ("--json gate W V", "cmd_gate", {"workflow": "W", "json": True}),
    ("--home H --json eval W V", "cmd_eval_run", {"home": "H", "json": True}),
]


@pytest.mark.parametrize("line,fn,expected", LINES, ids=[line for line, _f, _e in LINES])
def test_command_lines_parse_to_their_command(line, fn, expected):
    args = build_parser().parse_args(shlex.split(line))
    assert args.fn.__name__ == fn
    assert {k: getattr(args, k) for k in expected} == expected


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    return dict(action.choices) if action else {}


def _help(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 0, argv
    return out.getvalue()


def test_every_command_and_verb_has_help():
    n = 0
    for name, command in _subcommands(build_parser()).items():
        assert _help([name, "--help"]).startswith(f"usage: relops {name}")
        for verb in _subcommands(command):
            assert _help([name, verb, "--help"]).startswith(f"usage: relops {name} {verb}")
            n += 1
    assert n >= 20  # the verbs of workflow, release, suite, eval, audit, thresholds, alerts, review, incident, proposals


def test_a_verb_group_lists_its_verbs_and_refuses_others(capsys):
    assert "verify" in _help(["audit", "--help"]) and "head" in _help(["audit", "--help"])
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["incident", "reopen", "X"])
    assert exit_.value.code == EXIT_USAGE and "invalid choice: 'reopen'" in capsys.readouterr().err


def test_commands_return_a_command_result(tmp_path, capsys):
    """main prints CommandResult.data with --json, its text otherwise, and exits with its exit_code."""
    home = tmp_path / "home"
    assert main(["--home", str(home), "workflow", "add", "wf-a", "--owner", "ana", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"workflow": "wf-a"' in out and "_text" not in out
    assert main(["--home", str(home), "workflow", "add", "wf-b"]) == 0
    assert capsys.readouterr().out.startswith("workflow wf-b written to ")
    assert main(["--home", str(home), "workflow", "add", "wf-a"]) == EXIT_BAD_INPUT
    assert "already exists" in capsys.readouterr().err
    from relops_pipeline.cli.evals import cmd_workflow_add

    result = cmd_workflow_add(argparse.Namespace(home=str(home), name="wf-c", owner=None))
    assert isinstance(result, CommandResult) and result.exit_code == 0 and result.data["workflow"] == "wf-c"


# (command line, the parser that reports it, a fragment of its message): usage errors.
USAGE_ERRORS = [
    ("", "relops", "the following arguments are required: COMMAND"),
    ("statuss W", "relops", "invalid choice: 'statuss'; did you mean 'status'?"),
    ("gate W V --bogus", "relops gate", "unrecognized arguments: --bogus"),
    ("gate W", "relops gate", "the following arguments are required: version"),
    ("rollout W V", "relops rollout", "the following arguments are required: --stage"),
    ("rollout W V --stage canry", "relops rollout", "invalid choice: 'canry' (choose from"),
    ("rollout W V --stage canary --percent 250", "relops rollout", "expected a share above 0 and at most 100, got 250"),
    ("eval run W V --samples zero", "relops eval run", "expected a whole number >= 1, got 'zero'"),
    ("thresholds accept", "relops thresholds accept", "the following arguments are required: PROPOSAL"),
    ("audit verify --nope", "relops audit verify", "unrecognized arguments: --nope"),
    ("incident reopen X", "relops incident", "invalid choice: 'reopen'"),
]


def _usage_error(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


@pytest.mark.parametrize("line,prog,fragment", USAGE_ERRORS, ids=[line or "(no command)" for line, _p, _f in USAGE_ERRORS])
def test_a_usage_error_exits_64_with_one_line(line, prog, fragment, capsys):
    code, out, err = _usage_error(shlex.split(line), capsys)
    assert code == EXIT_USAGE and out == ""
    assert err.count("\n") == 1, err
    assert err.startswith(f"{prog}: error: ") and fragment in err
    assert err.rstrip("\n").endswith(f"(see `{prog} --help`)")


@pytest.mark.parametrize("where", ["after", "before"])
@pytest.mark.parametrize("line,prog,fragment", USAGE_ERRORS, ids=[line or "(no command)" for line, _p, _f in USAGE_ERRORS])
def test_a_usage_error_under_json_is_one_json_object(line, prog, fragment, where, capsys):
    argv = [*shlex.split(line), "--json"] if where == "after" else ["--json", *shlex.split(line)]
    code, out, err = _usage_error(argv, capsys)
    assert code == EXIT_USAGE and err == ""
    assert out.count("\n") == 1, out
    doc = json.loads(out)
    assert doc["exit_code"] == EXIT_USAGE and doc["error"].startswith(f"{prog}: ") and fragment in doc["error"]


def test_every_command_and_verb_is_a_relops_parser_and_refuses_an_unknown_option_with_64(capsys):
    parsers = {(name,): p for name, p in _subcommands(build_parser()).items()}
    parsers |= {(name, verb): v for (name,), p in list(parsers.items()) for verb, v in _subcommands(p).items()}
    assert len(parsers) >= 45
    for words, parser in parsers.items():
        assert isinstance(parser, RelopsParser), words
        if _subcommands(parser):
            continue  # a command with verbs: its verbs are checked
        code, out, err = _usage_error([*words, "--no-such-option"], capsys)
        assert code == EXIT_USAGE and out == "" and err.count("\n") == 1, (words, err)
        assert err.startswith(f"relops {' '.join(words)}: error: "), err


def test_help_shows_the_exit_codes_and_exits_0():
    text = _help(["--help"])
    table = text[text.index("exit codes:") :]
    for code, meaning in EXIT_CODES:
        assert f"  {code:<4} {meaning.split()[0]}" in table
    assert "64   usage error" in table and "3    bad input" in table
    assert [c for c, _m in EXIT_CODES] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 64, 130]
    assert _help(["thresholds", "accept", "--help"]).startswith("usage: relops thresholds accept")


def test_usage_errors_exit_64_from_a_real_process():
    cmd = [sys.executable, "-m", "relops_pipeline.cli"]
    proc = subprocess.run([*cmd, "statuss"], capture_output=True, text=True, timeout=scaled(60))
    assert proc.returncode == EXIT_USAGE and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "relops: error: argument COMMAND: invalid choice: 'statuss'; did you mean 'status'? (see `relops --help`)"
    ]
    proc = subprocess.run([*cmd, "--json", "audit", "verify", "--nope"], capture_output=True, text=True, timeout=scaled(60))
    assert proc.returncode == EXIT_USAGE and proc.stderr == ""
    assert json.loads(proc.stdout) == {
        "error": "relops audit verify: unrecognized arguments: --nope",
        "exit_code": EXIT_USAGE,
        "help": "relops audit verify --help",
    }
    proc = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=scaled(60))
    assert proc.returncode == 0 and "64   usage error" in proc.stdout


def test_bad_input_found_by_a_command_stays_exit_3(tmp_path, capsys):
    """The command line is fine; what it names is not: exit 3, not 64."""
    code = main(["--home", str(tmp_path / "home"), "suite", "validate", str(tmp_path / "missing.yaml"), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == EXIT_BAD_INPUT and doc["exit_code"] == EXIT_BAD_INPUT
