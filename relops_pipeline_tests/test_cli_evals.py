"""Releases and eval runs end to end through the `relops` command on a real home instance."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from relops_pipeline.cli import EXIT_BAD_INPUT
from relops_pipeline_tests.conftest import FIXTURES
from relops_pipeline_tests.conftest import run_cli as cli

CASES = [
    ("billing-001", "billing", ["billing"], True),
    ("login-001", "login", ["login", "hard"], False),
    ("shipping-001", "shipping", ["shipping"], False),
    ("refund-001", "refund", ["refund", "hard"], True),
    ("bug-001", "bug", ["bug", "explodes"], False),
]


def suite_yaml(version: str, extra_case: bool = False, changelog=("v1: five curated cases",)) -> str:
    cases = list(CASES) + ([("account-001", "account", ["account"], False)] if extra_case else [])
    body = [f"workflow: support-triage\nversion: {version}\nchangelog:"] + [f"  - \"{c}\"" for c in changelog] + ["cases:"]
    for cid, cat, tags, mp in cases:
        body.append(
            f"  - id: {cid}\n    input: {{vars: {{ticket: \"ticket about {cat}\"}}}}\n"
            f"    expected: {{fields: {{category: {cat}}}}}\n    tags: [{', '.join(tags)}]\n    must_pass: {str(mp).lower()}"
        )
    return "\n".join(body) + "\n"


def manifest_yaml(version: str, quality: str = "high", model: str = "gpt-4o-mini") -> str:
    return textwrap.dedent(
        f"""\
        workflow: support-triage
        version: {version}
        model: {model}
        provider: openai
        prompts:
          system: "You triage support tickets. Answer in JSON."
          user: "Ticket: {{{{ ticket }}}}"
        parameters: {{temperature: 0.2, quality: {quality}}}
        """
    )


@pytest.fixture
def home(make_cli_home):
    return make_cli_home(
        "name: support-triage\nowner: ana\ndelegates: [sam]\n"
        "runner: {type: python, callable: 'relops_pipeline_tests.support:fake_llm', timeout_s: 10}\n"
        "scorers: [{type: json}]\nevals: {samples: 2, max_error_rate: 0.25}\n",
        suite_yaml("v1"),
    )


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_register_creates_partition_and_eval_run_with_errors_recorded(home, tmp_path, capsys):
    m = write(tmp_path, "m1.yaml", manifest_yaml("v1.0.0"))
    code, out, err = cli(capsys, home, "release", "register", str(m), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["release_key"] == "support-triage--v1.0.0"
    ev = doc["eval"]
    assert (ev["cases"], ev["samples"], ev["errors"]) == (5, 10, 2)  # bug-001 raises in both samples
    assert ev["valid"] is True  # 20% errors is within the workflow's 25%
    assert ev["metrics"]["fields_match"]["n"] == 10
    from dagster import DagsterInstance

    assert "support-triage--v1.0.0" in DagsterInstance.get().get_dynamic_partitions("releases")
    # what changed: the first release has nothing to compare with
    assert doc["diff"]["known"] is False


def test_changing_a_registered_manifest_is_refused(home, tmp_path, capsys):
    m = write(tmp_path, "m.yaml", manifest_yaml("v1.0.0"))
    assert cli(capsys, home, "release", "register", str(m), "--no-eval")[0] == 0
    m.write_text(manifest_yaml("v1.0.0", model="gpt-4.1-mini"))
    code, _, err = cli(capsys, home, "release", "register", str(m))
    assert code == EXIT_BAD_INPUT
    assert "immutable" in err and "new version" in err


def test_second_release_stores_what_changed(home, tmp_path, capsys):
    cli(capsys, home, "release", "register", str(write(tmp_path, "a.yaml", manifest_yaml("v1.0.0"))), "--no-eval")
    code, out, _ = cli(capsys, home, "release", "register",
                       str(write(tmp_path, "b.yaml", manifest_yaml("v1.1.0", model="gpt-4.1-mini"))), "--no-eval", "--json")
    assert code == 0
    diff = json.loads(out)["diff"]
    assert diff["known"] is True and diff["model"] == {"from": "gpt-4o-mini", "to": "gpt-4.1-mini"}


def test_invalid_manifest_and_suite_name_file_case_and_field(home, tmp_path, capsys):
    bad = write(tmp_path, "bad.yaml", "workflow: support-triage\nversion: v9\nmodle: gpt-4o\n")
    code, _, err = cli(capsys, home, "release", "register", str(bad))
    assert code == EXIT_BAD_INPUT
    assert "bad.yaml" in err and "modle" in err and "model" in err
    suite = write(tmp_path, "v1.yaml", suite_yaml("v1").replace("must_pass: true", "must_pass: maybe", 1))
    code, _, err = cli(capsys, home, "suite", "validate", str(suite))
    assert code == EXIT_BAD_INPUT
    assert "v1.yaml" in err and "billing-001" in err and "must_pass" in err


def test_unknown_workflow_says_how_to_add_it(home, tmp_path, capsys):
    code, _, err = cli(capsys, home, "eval", "nope", "v1")
    assert code == EXIT_BAD_INPUT and "relops workflow add nope" in err
    code, out, _ = cli(capsys, home, "workflow", "add", "nope", "--owner", "li", "--json")
    assert code == 0 and Path(json.loads(out)["path"]).exists()


@pytest.mark.parametrize(
    "path,fmt,variant,counts",
    [
        (FIXTURES / "promptfoo" / "simple-cli.output.json", "promptfoo", "0", (4, 4)),
        (FIXTURES / "inspect_ai" / "2025-02-11T15-18-04-05-00_popularity_mj7khqpMM4GBCfVQozKgzB.eval", "inspect", None, (10, 10)),
    ],
)
def test_import_harness_results_as_eval_run(home, capsys, path, fmt, variant, counts):
    argv = ["eval", "import", str(path), "--workflow", "support-triage", "--version", "v0.9.0", "--format", fmt, "--json"]
    if variant:
        argv += ["--variant", variant]
    code, out, err = cli(capsys, home, *argv)
    assert code == 0, err
    ev = json.loads(out)
    assert (ev["cases"], ev["samples"]) == counts
    assert ev["source"] == f"import:{fmt}"


def test_suite_change_then_backfill_covers_every_release_on_both_versions(home, tmp_path, capsys):
    for v, q in (("v1.0.0", "high"), ("v1.1.0", "low")):
        assert cli(capsys, home, "release", "register", str(write(tmp_path, f"{v}.yaml", manifest_yaml(v, quality=q))))[0] == 0
    (home / "suites" / "support-triage" / "v2.yaml").write_text(
        suite_yaml("v2", extra_case=True, changelog=("v1: five curated cases", "v2: account deletion case from an incident"))
    )
    code, out, err = cli(capsys, home, "eval", "backfill", "--workflow", "support-triage", "--in-process", "--json")
    assert code == 0, err
    import duckdb

    con = duckdb.connect(str(home / "warehouse" / "relops.duckdb"), read_only=True)
    rows = con.execute("SELECT version, suite_version, cases FROM eval_runs ORDER BY version, suite_version").fetchall()
    con.close()
    assert rows == [("v1.0.0", "v1", 5), ("v1.0.0", "v2", 6), ("v1.1.0", "v1", 5), ("v1.1.0", "v2", 6)]


def test_backfill_without_daemon_is_queued_and_says_so(home, tmp_path, capsys):
    cli(capsys, home, "release", "register", str(write(tmp_path, "a.yaml", manifest_yaml("v1.0.0"))), "--no-eval")
    code, out, _ = cli(capsys, home, "eval", "backfill", "--workflow", "support-triage", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["daemon_running"] is False and doc["backfill_id"]
    from dagster import DagsterInstance

    assert DagsterInstance.get().get_backfill(doc["backfill_id"]) is not None


def test_a_run_with_more_errors_than_allowed_is_invalid(home, tmp_path, capsys):
    wf = home / "workflows" / "support-triage.yaml"
    wf.write_text(wf.read_text().replace("max_error_rate: 0.25", "max_error_rate: 0.1"))
    m = write(tmp_path, "m1.yaml", manifest_yaml("v1.0.0"))
    code, out, err = cli(capsys, home, "release", "register", str(m), "--json")
    assert code == 0, err
    ev = json.loads(out)["eval"]
    assert ev["errors"] == 2 and ev["valid"] is False
    assert "error rate 20.0% above the allowed 10.0%" in ev["invalid_reason"]


def test_workflow_add_writes_a_working_http_or_python_runner(home, capsys, monkeypatch):
    from relops_pipeline.cli import EXIT_USAGE
    from relops_pipeline.lib.evals.runners import HttpRunner, PythonRunner, build_runner
    from relops_pipeline.lib.workflows import load_workflow

    monkeypatch.delenv("RELOPS_TEST_LLM_KEY", raising=False)
    url = "http://127.0.0.1:9/v1/chat/completions"
    code, out, _ = cli(capsys, home, "workflow", "add", "wf-http", "--owner", "li.wei", "--runner", "http", "--url", url,
                       "--api-key-env", "RELOPS_TEST_LLM_KEY", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["runner"] == {"type": "http", "url": url, "mode": "openai-chat", "api_key_env": "RELOPS_TEST_LLM_KEY"}
    assert doc["warnings"] == ["the API key variable RELOPS_TEST_LLM_KEY is not set here: export it where evals run"]
    monkeypatch.setenv("RELOPS_TEST_LLM_KEY", "sk-test")
    runner = build_runner(load_workflow((home / "workflows"), "wf-http").runner)
    assert isinstance(runner, HttpRunner) and runner.url == url and runner.api_key == "sk-test"

    code, out, _ = cli(capsys, home, "workflow", "add", "wf-py", "--runner", "python", "--callable",
                       "relops_pipeline.demo.llm:respond")
    assert code == 0 and "runner python calling relops_pipeline.demo.llm:respond" in out and "warning" not in out
    assert isinstance(build_runner(load_workflow((home / "workflows"), "wf-py").runner), PythonRunner)

    # a URL that is not the chat-completions endpoint works only if it is one: a warning, not an error
    code, out, _ = cli(capsys, home, "workflow", "add", "wf-base", "--runner", "http", "--url", "https://api.example/v1")
    assert code == 0 and "does not end in /chat/completions" in out
    # what can never work is refused, and nothing is written
    code, _, err = cli(capsys, home, "workflow", "add", "wf-bad", "--runner", "http", "--url", "ftp://x")
    assert code == EXIT_BAD_INPUT and "url must be an http:// or https:// URL" in err
    code, _, err = cli(capsys, home, "workflow", "add", "wf-bad", "--runner", "python", "--callable", "no colon")
    assert code == EXIT_BAD_INPUT and "package.module:function" in err
    assert not ((home / "workflows") / "wf-bad.yaml").exists()
    assert cli(capsys, home, "workflow", "add", "wf-bad", "--runner", "http")[0] == EXIT_USAGE
    assert cli(capsys, home, "workflow", "add", "wf-bad", "--url", url)[0] == EXIT_USAGE
