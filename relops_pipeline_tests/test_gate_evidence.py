"""Issue 15, items 2 and 3 end to end through the CLI: imported evidence can BLOCK on a
must-pass case (no runner to re-sample: the samples are the re-samples; no baseline needed),
and invalid evidence (the endpoint down, every sample errored) is an error — `relops gate`
exits 3 naming the causes, the reports show them escaped, and nobody can approve it."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import duckdb
import pytest

from relops_pipeline.cli import EXIT_BAD_INPUT
from relops_pipeline_tests.conftest import run_cli as cli
from relops_pipeline_tests.test_cli_gate import manifest, suite_yaml

N_CASES, MUST_PASS, K = 40, 4, 3
ENDPOINT_ENV = "RELOPS_TEST_ENDPOINT"
SCRIPT = "<script>alert(1)</script>"


class ConnectError(Exception):
    """Stands in for httpx.ConnectError."""


def endpoint(manifest, case, sample, seed):
    """A model endpoint that is down while $RELOPS_TEST_ENDPOINT is "down" (every call raises a
    ConnectError whose message carries markup, as an endpoint's text may); otherwise the
    deterministic fake model of support.py."""
    from relops_pipeline_tests.support import fake_llm

    if os.environ.get(ENDPOINT_ENV) == "down":
        raise ConnectError(f"[Errno 111] Connection refused {SCRIPT}")
    return fake_llm(manifest, case, sample, seed)


@pytest.fixture
def home(make_cli_home):
    return make_cli_home(
        "name: support-triage\nowner: ana\ndelegates: [sam]\n"
        "runner: {type: python, callable: 'relops_pipeline_tests.test_gate_evidence:endpoint'}\n"
        f"scorers: [{{type: json}}]\nevals: {{samples: {K}, max_error_rate: 0.1}}\n",
        suite_yaml(N_CASES, must_pass=MUST_PASS),
    )


def jsonl(tmp_path: Path, name: str, fails: dict[str, list[bool]] | None = None) -> Path:
    """A relops JSONL result file: N_CASES cases x K samples, every sample passing `correct`
    except where `fails` says (case -> failed per sample); case-000..003 are must-pass."""
    rows = []
    for i in range(N_CASES):
        cid = f"case-{i:03d}"
        for k in range(K):
            failed = (fails or {}).get(cid, [False] * K)[k]
            rows.append(
                {
                    "case_id": cid,
                    "sample": k,
                    "must_pass": i < MUST_PASS,
                    "output": SCRIPT if failed else f"answer {cid}/{k}",
                    "scores": {"correct": not failed},
                    "latency_ms": 500.0,
                    "cost_usd": 0.0002,
                }
            )
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def imported(capsys, home, path: Path, version: str) -> None:
    code, _, err = cli(capsys, home, "eval", "import", str(path), "--workflow", "support-triage", "--version", version, "--format", "jsonl")
    assert code == 0, err


def gate(capsys, home, version: str, *extra: str) -> tuple[int, dict]:
    code, out, err = cli(capsys, home, "gate", "support-triage", version, "--json", *extra)
    return code, json.loads(out)


def test_imported_must_pass_failure_in_every_sample_blocks_and_one_failure_is_flaky(home, tmp_path, capsys):
    # The baseline: every sample passes. The first release has no baseline: REVIEW, approved.
    imported(capsys, home, jsonl(tmp_path, "v1.0.0.jsonl"), "v1.0.0")
    code, doc = gate(capsys, home, "v1.0.0")
    assert code == 2 and doc["decision"] == "REVIEW", doc["reasons"]
    assert cli(capsys, home, "approve", "support-triage", "v1.0.0", "--by", "ana", "--reason", "baseline")[0] == 0

    # A must-pass case fails all 3 samples of an imported run (no runner to re-sample):
    # confirmed by its own samples -> BLOCK, exit 1 (was REVIEW "not confirmed: no runner").
    imported(capsys, home, jsonl(tmp_path, "v1.1.0.jsonl", {"case-000": [True] * K}), "v1.1.0")
    code, doc = gate(capsys, home, "v1.1.0")
    assert code == 1 and doc["decision"] == "BLOCK", doc["reasons"]
    assert doc["baseline_version"] == "v1.0.0"
    (reason,) = doc["reasons"]
    assert reason.startswith(
        "must-pass case case-000 failed 3/3 candidate samples (correct) after passing all 3 "
        "baseline samples: every one of its 3 samples failed, which confirms it"
    )
    html = Path(doc["reports"]["html"]).read_text()
    assert SCRIPT not in html and "&lt;script&gt;" in html

    # One failure among 3 samples: flaky, REVIEW (exit 2), against the same approved baseline.
    imported(capsys, home, jsonl(tmp_path, "v1.2.0.jsonl", {"case-001": [False, True, False]}), "v1.2.0")
    code, doc = gate(capsys, home, "v1.2.0")
    assert code == 2 and doc["decision"] == "REVIEW", doc["reasons"]
    assert doc["baseline_version"] == "v1.0.0"
    assert any("must-pass case case-001 failed 1/3" in r and "flaky in the candidate" in r for r in doc["reasons"])


def test_imported_must_pass_failure_blocks_without_a_baseline(home, tmp_path, capsys):
    imported(capsys, home, jsonl(tmp_path, "v1.0.0.jsonl", {"case-002": [True] * K}), "v1.0.0")
    code, doc = gate(capsys, home, "v1.0.0")
    assert code == 1 and doc["decision"] == "BLOCK", doc["reasons"]
    assert doc["baseline_version"] is None
    assert doc["reasons"][0].startswith(
        "must-pass case case-002 failed 3/3 candidate samples (correct) with no baseline to compare with: every one of its 3 samples failed"
    )


def test_invalid_evidence_is_an_error_named_by_its_causes_and_cannot_be_approved(home, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(ENDPOINT_ENV, "down")
    f = tmp_path / "v1.0.0.yaml"
    f.write_text(manifest("v1.0.0"))
    n = (N_CASES) * K
    cause = f"exception in runner: ConnectError: [Errno 111] Connection refused {SCRIPT}"

    # `relops release register` runs the eval: its output names the causes with counts.
    code, out, err = cli(capsys, home, "release", "register", str(f), "--json")
    assert code == 0, err
    ev = json.loads(out)["eval"]
    assert ev["valid"] is False and ev["errors"] == n
    assert ev["error_causes"] == [{"cause": cause, "count": n, "samples": n}]
    code, out, _ = cli(capsys, home, "eval", "support-triage", "v1.0.0")
    assert code == 0
    assert f"errors: {n} of {n} samples: exception in runner: ConnectError" in out
    assert "INVALID" in out and "re-run the evals" in out
    assert "mean score" in out and "pass rate" in out  # labelled as what they are

    # `relops gate` exits 3 (an error), never 0, 1 or 2, with the causes and counts.
    junit, md = tmp_path / "gate.xml", tmp_path / "comment.md"
    code, doc = gate(capsys, home, "v1.0.0", "--junit", str(junit), "--markdown", str(md))
    assert code == EXIT_BAD_INPUT and doc["decision"] == "INVALID"
    assert doc["exit_code"] == EXIT_BAD_INPUT and "no decision was made" in doc["error"]
    assert doc["errors"]["top_causes"] == [{"cause": cause, "count": n, "samples": n}]
    assert f"{n} of {n} samples: exception in runner: ConnectError" in doc["reasons"][0]
    code, out, _ = cli(capsys, home, "gate", "support-triage", "v1.0.0")
    assert code == EXIT_BAD_INPUT
    assert out.startswith("INVALID evidence: support-triage")
    assert f"  - {n} of {n} samples: exception in runner: ConnectError" in out

    # The reports show the causes, escaped; JUnit calls it an error, not a failure.
    for path in (doc["reports"]["html"], doc["reports"]["md"], md):
        text = Path(path).read_text()
        assert "ConnectError" in text and SCRIPT not in text and "&lt;script" in text, path
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("errors") == "1"
    (err_case,) = [tc for tc in suite.iter("testcase") if tc.find("error") is not None]
    assert err_case.get("name") == "run:valid" and err_case.find("error").get("type") == "invalid_evidence"

    # Nobody approves invalid evidence, nor overrides it; the refusals are recorded.
    code, _, err = cli(capsys, home, "approve", "support-triage", "v1.0.0", "--by", "ana", "--reason", "looks fine")
    assert code == EXIT_BAD_INPUT and "evidence is invalid" in err and "re-run the evals" in err
    code, _, err = cli(capsys, home, "approve", "support-triage", "v1.0.0", "--by", "ana", "--reason", "ship it", "--override")
    assert code == EXIT_BAD_INPUT and "evidence is invalid" in err
    con = duckdb.connect(str(home / "warehouse" / "relops.duckdb"), read_only=True)
    kinds = [k for (k,) in con.execute("SELECT kind FROM events WHERE release_key = 'support-triage--v1.0.0' ORDER BY seq").fetchall()]
    decisions = [d for (d,) in con.execute("SELECT decision FROM gate_decisions").fetchall()]
    con.close()
    assert kinds.count("refused") == 2 and "approval" not in kinds and "override" not in kinds
    assert set(decisions) == {"INVALID"}

    # The Dagster run of release_gate failed (an error), naming the causes; it is not a REVIEW.
    from dagster import DagsterInstance, DagsterRunStatus

    runs = [r for r in DagsterInstance.get().get_runs() if "release_gate" in str(r.asset_selection or "")]
    assert runs and all(r.status == DagsterRunStatus.FAILURE for r in runs)

    # The endpoint back up: re-run the evals and the gate; now a decision (REVIEW: no baseline).
    monkeypatch.delenv(ENDPOINT_ENV)
    assert cli(capsys, home, "eval", "support-triage", "v1.0.0")[0] == 0
    code, doc = gate(capsys, home, "v1.0.0")
    assert code == 2 and doc["decision"] == "REVIEW"
    assert "errors" in doc and doc["errors"]["valid"] is True

    # A newer invalid eval run than the decision: approval is refused until re-run.
    monkeypatch.setenv(ENDPOINT_ENV, "down")
    assert cli(capsys, home, "eval", "support-triage", "v1.0.0")[0] == 0
    code, _, err = cli(capsys, home, "approve", "support-triage", "v1.0.0", "--by", "ana", "--reason", "fine")
    assert code == EXIT_BAD_INPUT and "is invalid" in err and "newer than its gate decision" in err
