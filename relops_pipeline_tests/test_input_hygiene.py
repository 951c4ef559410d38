"""Input hygiene: names are whole-string matches, one broken workflow file affects only its own
workflow, numbers and free text are validated, imports have documented size limits, secrets in
URLs never reach errors or logs, usage errors exit 64 (EX_USAGE; JSON under --json) while bad
numbers a command finds are bad input (exit 3), and a
reader that goes away is no error."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from relops_pipeline.cli import main
from relops_pipeline.lib.evals.model import release_key
from relops_pipeline.lib.workflows import WorkflowError, load_all, workflow_path
from relops_pipeline_tests.procs import scaled

RELOPS = str(Path(sys.executable).parent / "relops")


def test_names_with_a_trailing_newline_are_refused():
    with pytest.raises(ValueError):
        release_key("doc-qa", "v9.9.9\n")
    with pytest.raises(ValueError):
        workflow_path(Path("workflows"), "doc-qa\n")
    assert release_key("doc-qa", "v9.9.9") == "doc-qa--v9.9.9"


def test_one_broken_workflow_file_affects_only_its_own_workflow(home, wh):
    from relops_pipeline.lib.alerts.rules import fire_signal_rules
    from relops_pipeline.lib.cadence import _workflow_names
    from relops_pipeline.lib.drift.run import drift_configs

    (home.workflows_dir / "broken.yaml").write_text("name: broken\nowner: [not, one, name]\n")
    loaded = load_all(home.workflows_dir)
    assert [w.name for w in loaded.workflows] == ["doc-qa", "support-triage"]
    [(name, error)] = loaded.broken
    assert name == "broken" and "owner" in error and "workflow broken skipped" in loaded.warnings()[0]
    with pytest.raises(WorkflowError):  # asked for by name, it still fails loudly
        from relops_pipeline.lib.workflows import load_workflow

        load_workflow(home.workflows_dir, "broken")

    logged: list[str] = []
    configs = drift_configs(wh, home, dt.date(2026, 11, 1), dt.date(2026, 11, 8), log=logged.append)
    assert set(configs) == {"doc-qa", "support-triage"} and "broken" in logged[0]
    alerts = fire_signal_rules(wh, home, [dt.date(2026, 11, 2)], now=dt.datetime(2026, 11, 3))
    assert any("broken" in w for w in alerts.warnings)
    assert _workflow_names(home) == ["doc-qa", "support-triage"]


def test_secrets_in_urls_never_reach_errors_or_descriptions():
    from relops_pipeline.lib.alerts.model import Alert
    from relops_pipeline.lib.alerts.sinks import DeliveryError, WebhookSink, redact_url

    assert redact_url("POST https://bot:t0ken@hooks.example/x?token=s3cret#frag failed") == \
        "POST https://***@hooks.example/x?***#*** failed"
    sink = WebhookSink(name="hook", url="http://127.0.0.1:9/hook?token=s3cret", secret_env="SIGNING", environ={"SIGNING": "k"},
                       timeout_s=2)
    assert "s3cret" not in sink.describe()
    alert = Alert(workflow="doc-qa", kind="test", severity="info", title="t", summary="s")
    with pytest.raises(DeliveryError) as err:
        sink.send(alert)  # nothing listens on port 9: connection refused
    assert "s3cret" not in str(err.value) and "127.0.0.1:9/hook" in str(err.value)


def test_imports_have_documented_size_limits(tmp_path, monkeypatch, wh):
    from relops_pipeline.lib import limits
    from relops_pipeline.lib.evals.imports import ImportFormatError, import_results
    from relops_pipeline.lib.review import ReviewImportError, import_review_labels

    big = tmp_path / "results.jsonl"
    big.write_text('{"case_id": "c1", "passed": true}\n' * 100)
    monkeypatch.setattr(limits, "MAX_EVAL_IMPORT_BYTES", 1000)
    with pytest.raises(ImportFormatError, match="over the limit of"):
        import_results(big, "jsonl", workflow="doc-qa", version="v1.0.0")

    sheet = tmp_path / "sheet.csv"
    sheet.write_text("sample_id,label\n" + "rv-x,pass\n" * 30)
    monkeypatch.setattr(limits, "MAX_REVIEW_ROWS", 20)
    with pytest.raises(ReviewImportError, match="over the limit of 20 rows"):
        import_review_labels(wh, sheet)


def test_usage_errors_and_bad_numbers_are_bad_input(tmp_path, capsys):
    home = str(tmp_path / "home")
    with pytest.raises(SystemExit) as exit_:
        main(["--home", home, "statuss"])
    assert exit_.value.code == 64  # never 2: that is REVIEW
    with pytest.raises(SystemExit) as exit_:
        main(["--home", home, "eval", "run", "doc-qa", "v1.0.0", "--samples", "0"])
    assert exit_.value.code == 64 and "expected a whole number >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--home", home, "rollout", "doc-qa", "v1.0.0", "--stage", "canary", "--percent", "250"])
    assert "at most 100" in capsys.readouterr().err
    assert main(["--home", home, "rollback", "doc-qa", "--reason", "x" * 5000]) == 3
    assert "over the limit of 4,000" in capsys.readouterr().err
    # Under --json the usage error is one JSON object on stdout.
    proc = subprocess.run([RELOPS, "--home", home, "eval", "run", "doc-qa", "v1", "--samples", "-1", "--json"],
                          capture_output=True, text=True, timeout=scaled(60))
    assert proc.returncode == 64 and json.loads(proc.stdout)["exit_code"] == 64


def test_a_reader_that_goes_away_is_no_error(home):
    proc = subprocess.run(f"'{RELOPS}' --home '{home.root}' doctor --help | head -1", shell=True, capture_output=True,
                          text=True, timeout=scaled(60))
    assert proc.stdout.startswith("usage: relops doctor")
    proc = subprocess.run(f"'{RELOPS}' --home '{home.root}' workflow list | head -c 1", shell=True, capture_output=True,
                          text=True, timeout=scaled(60))
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
