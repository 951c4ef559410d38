"""Messages that say why (issue 18): a gate, eval, rollout, rollback, canary or drill that cannot
run says, in one line, the reason and the next step with the exact command, and exits as
before (3 refused or bad input, 4 a failed run, 2 not decided yet)."""

from __future__ import annotations

import shutil

import pytest

from relops_pipeline.cli import EXIT_BAD_INPUT, EXIT_RUN_FAILED
from relops_pipeline.cli.runs import reason_first
from relops_pipeline_tests.conftest import run_cli
from relops_pipeline_tests.test_cli_gate import manifest, suite_yaml

pytestmark = pytest.mark.slow  # a dozen Dagster runs through the CLI

W = "support-triage"


@pytest.fixture
def home(make_cli_home):
    return make_cli_home(
        f"name: {W}\nowner: ana\ndelegates: [sam]\n"
        "runner: {type: python, callable: 'relops_pipeline_tests.support:fake_llm'}\n"
        "scorers: [{type: json}]\nevals: {samples: 2}\n",
        suite_yaml(40),
    )


def said(capsys, home, code: int, *argv: str, stream: str = "err") -> str:
    """Run the command, check its exit code, and return the one line that says why."""
    got, out, err = run_cli(capsys, home, *argv)
    assert got == code, (got, out, err)
    if stream == "err":
        lines = [line for line in err.splitlines() if line.startswith("relops: ")]
        assert len(lines) == 1, err  # one line: the reason, why it matters and the next step
        return lines[0]
    return out.splitlines()[0]


def register(capsys, home, tmp_path, version, **params):
    f = tmp_path / f"{version}.yaml"
    f.write_text(manifest(version, **params))
    code, _, err = run_cli(capsys, home, "release", "register", str(f), "--no-eval")
    assert code == 0, err


def test_every_refusal_says_why_and_what_to_do_next(home, tmp_path, capsys):
    line = said(capsys, home, EXIT_BAD_INPUT, "gate", W, "v9.9.9")
    assert "support-triage--v9.9.9 is not registered" in line and "relops release register FILE" in line

    register(capsys, home, tmp_path, "v1.0.0")
    suites = home / "suites" / W
    shutil.move(suites, tmp_path / "suites-away")
    line = said(capsys, home, EXIT_RUN_FAILED, "gate", W, "v1.0.0")
    assert line.startswith(f"relops: workflow {W} has no eval suite under ")
    assert "v1.yaml" in line and f"relops eval {W} v1.0.0" in line and "(eval run " in line
    assert "dagster" not in line  # the cause, not the class Dagster wrapped it in
    shutil.move(tmp_path / "suites-away", suites)
    line = said(capsys, home, EXIT_RUN_FAILED, "gate", W, "v1.0.0", "--suite-version", "v7")
    assert "no suite version 'v7'" in line and "--suite-version v1" in line

    line = said(capsys, home, EXIT_BAD_INPUT, "rollback", W, "--reason", "test", "--by", "ana")
    assert "nothing has been rolled out" in line and f"relops rollout {W} VERSION --stage full" in line
    line = said(capsys, home, 0, "drill", W, stream="out")
    assert "nothing rolled out yet" in line and f"relops rollout {W} VERSION --stage full" in line

    line = said(capsys, home, EXIT_BAD_INPUT, "rollout", W, "v1.0.0", "--stage", "full", "--by", "ana")
    assert line.startswith(f"relops: {W}: rollout of v1.0.0 to full refused: gate: {W}--v1.0.0 has no gate decision")
    assert f"relops gate {W} v1.0.0" in line and "--override" in line and "(rollout of " in line

    # No traffic at all is not a crash but an undecided canary (exit 2, like a REVIEW).
    line = said(capsys, home, 2, "canary", W, "v1.0.0", stream="out")
    assert "no production requests of v1.0.0" in line and f"relops rollout {W} v1.0.0 --stage canary" in line
    assert f"relops canary {W} v1.0.0" in line

    assert run_cli(capsys, home, "gate", W, "v1.0.0")[0] == 2
    line = said(capsys, home, EXIT_BAD_INPUT, "rollout", W, "v1.0.0", "--stage", "full", "--by", "ana")
    assert "is REVIEW without an approval" in line and f"relops approve {W} v1.0.0 --reason TEXT" in line
    assert run_cli(capsys, home, "approve", W, "v1.0.0", "--by", "ana", "--reason", "first release")[0] == 0
    assert run_cli(capsys, home, "rollout", W, "v1.0.0", "--stage", "full", "--by", "ana")[0] == 0

    # Promoting past the last stage.
    line = said(capsys, home, EXIT_BAD_INPUT, "rollout", W, "v1.0.0", "--stage", "full", "--by", "ana")
    assert "v1.0.0 is already live" in line and f"relops rollout {W} VERSION --stage canary" in line
    line = said(capsys, home, EXIT_BAD_INPUT, "rollback", W, "--reason", "test", "--by", "ana")
    assert "no last known good release to roll back v1.0.0 to" in line
    assert f"relops rollback {W} --to VERSION --reason TEXT" in line
    line = said(capsys, home, 4, "drill", W, stream="out")
    assert "no last known good release yet: a drill needs a release to roll back to" in line
    assert f"relops rollout {W} VERSION --stage canary" in line

    register(capsys, home, tmp_path, "v1.1.0", break_must_pass=True)
    code, out, _ = run_cli(capsys, home, "gate", W, "v1.1.0")
    assert code == 1 and out.startswith("BLOCK: ")
    # Its reasons (four must-pass cases in one line, ~400 columns) wrapped; the report path whole.
    assert all(len(line) <= 100 for line in out.splitlines() if not line.startswith("report: "))
    assert "\n      " in out and out.splitlines()[-1].startswith("report: ")
    line = said(capsys, home, EXIT_BAD_INPUT, "rollout", W, "v1.1.0", "--stage", "canary", "--by", "ana")
    assert f"{W}--v1.1.0 is BLOCK" in line and f"relops gate {W} NEW_VERSION" in line and "--override" in line

    register(capsys, home, tmp_path, "v1.2.0")
    assert run_cli(capsys, home, "gate", W, "v1.2.0")[0] == 0
    line = said(capsys, home, EXIT_BAD_INPUT, "rollout", W, "v1.2.0", "--stage", "full", "--by", "ana")
    assert "has not been through canary before full" in line
    assert f"relops rollout {W} v1.2.0 --stage canary, then relops canary {W} v1.2.0" in line
    assert run_cli(capsys, home, "rollout", W, "v1.2.0", "--stage", "canary", "--by", "ana")[0] == 0
    line = said(capsys, home, EXIT_BAD_INPUT, "rollout", W, "v1.1.0", "--stage", "canary", "--by", "ana",
                "--override", "--reason", "test")
    assert "v1.2.0 is in canary: only one release rolls out at a time" in line
    assert f"relops rollout {W} v1.2.0 --stage full" in line and f"relops rollback {W} --reason TEXT" in line

    # In canary but no traces ingested yet: ingest them (it already has its traffic), then judge again.
    line = said(capsys, home, 2, "canary", W, "v1.2.0", stream="out")
    assert "no production requests of v1.2.0" in line and "relops ingest PATH" in line
    assert "--stage canary" not in line and f"relops canary {W} v1.2.0" in line
    line = said(capsys, home, EXIT_BAD_INPUT, "rollout", W, "v1.2.0", "--stage", "full", "--by", "ana")
    assert f"canary: {W}--v1.2.0 is inconclusive" in line and f"judge it again (relops canary {W} v1.2.0)" in line


def test_reason_first_puts_the_cause_before_the_run():
    run = "0a94b604-25aa-44af-8f24-ee0edc60c3ce"
    assert (reason_first(f"eval run {run} for w--v1 failed: dagster._core.definitions.events.Failure: no suite")
            == f"no suite (eval run {run})")
    assert reason_first(f"rollout of w--v1 to full run {run} failed: w: refused") == f"w: refused (rollout of w--v1 to full run {run})"
    assert reason_first("release w--v1 is not registered") == "release w--v1 is not registered"
