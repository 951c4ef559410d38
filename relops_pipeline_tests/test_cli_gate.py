"""The release gate end to end through `relops gate`: exit codes, JUnit, markdown, approvals,
the audit log, and escaping of model output in the reports."""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import duckdb
import pytest

from relops_pipeline.cli import EXIT_BAD_INPUT
from relops_pipeline_tests.conftest import run_cli as cli

CATEGORIES = ["billing", "login", "shipping", "refund", "bug", "account", "feature", "other"]


def suite_yaml(n_cases: int, must_pass: int = 4) -> str:
    lines = ["workflow: support-triage", "version: v1", "changelog: [\"v1: curated\"]", "cases:"]
    for i in range(n_cases):
        cat = CATEGORIES[i % len(CATEGORIES)]
        lines.append(
            f"  - id: case-{i:03d}\n    input: {{vars: {{ticket: \"ticket {i} about {cat}\"}}}}\n"
            f"    expected: {{fields: {{category: {cat}}}}}\n    tags: [{cat}]\n    must_pass: {str(i < must_pass).lower()}"
        )
    return "\n".join(lines) + "\n"


def manifest(version: str, **params) -> str:
    p = ", ".join(f"{k}: {json.dumps(v)}" for k, v in {"temperature": 0.2, **params}.items())
    return textwrap.dedent(
        f"""\
        workflow: support-triage
        version: {version}
        model: gpt-4o-mini
        prompts:
          user: "Ticket: {{{{ ticket }}}}"
        parameters: {{{p}}}
        """
    )


@pytest.fixture
def home(make_cli_home):
    return make_cli_home(
        "name: support-triage\nowner: ana\ndelegates: [sam]\n"
        "runner: {type: python, callable: 'relops_pipeline_tests.support:fake_llm'}\n"
        "scorers: [{type: json}]\nevals: {samples: 3}\n",
        suite_yaml(40),
    )


def register(capsys, home, tmp_path, version, **params):
    f = tmp_path / f"{version}.yaml"
    f.write_text(manifest(version, **params))
    code, out, err = cli(capsys, home, "release", "register", str(f))
    assert code == 0, err


def test_review_then_approve_then_ship_and_block(home, tmp_path, capsys):
    register(capsys, home, tmp_path, "v1.0.0")
    # The first release has no baseline: REVIEW (exit 2), never SHIP.
    junit, md = tmp_path / "gate.xml", tmp_path / "comment.md"
    code, out, _ = cli(capsys, home, "gate", "support-triage", "v1.0.0", "--json", "--junit", str(junit), "--markdown", str(md))
    assert code == 2, out
    assert json.loads(out)["decision"] == "REVIEW"
    suite = ET.parse(junit).getroot().find("testsuite")
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["decision"] == "REVIEW"
    assert int(suite.get("tests")) == len(suite.findall("testcase"))
    assert "REVIEW" in md.read_text()

    # Someone who is not an owner or delegate is refused, and the attempt is recorded.
    code, _, err = cli(capsys, home, "approve", "support-triage", "v1.0.0", "--by", "mallory", "--reason", "looks fine")
    assert code == EXIT_BAD_INPUT and "may not approve" in err
    code, out, _ = cli(capsys, home, "approve", "support-triage", "v1.0.0", "--by", "ana", "--reason", "first release, reviewed by hand")
    assert code == 0

    # The same behaviour again: SHIP against the approved baseline.
    register(capsys, home, tmp_path, "v1.1.0")
    code, out, _ = cli(capsys, home, "gate", "support-triage", "v1.1.0", "--json", "--junit", str(junit))
    doc = json.loads(out)
    assert code == 0, doc["reasons"]
    assert doc["decision"] == "SHIP" and doc["baseline_version"] == "v1.0.0"
    assert ET.parse(junit).getroot().find("testsuite").get("failures") == "0"

    # Must-pass cases broken: BLOCK naming them; the model's output is escaped in the reports.
    register(capsys, home, tmp_path, "v1.2.0", break_must_pass=True)
    code, out, _ = cli(capsys, home, "gate", "support-triage", "v1.2.0", "--json", "--junit", str(junit), "--markdown", str(md))
    doc = json.loads(out)
    assert code == 1 and doc["decision"] == "BLOCK"
    text = " ".join(doc["reasons"])
    assert "case-000" in text or "must-pass" in text.lower()
    failures = [tc for tc in ET.parse(junit).getroot().iter("testcase") if tc.find("failure") is not None]
    assert any(tc.get("name") == "must_pass" for tc in failures)
    html = Path(doc["reports"]["html"]).read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    report_md = Path(doc["reports"]["md"]).read_text()
    assert "<script>" not in report_md and "&lt;script>" in report_md
    assert "<script>" not in md.read_text()
    assert "must-pass case case-000" in report_md  # hyphens need no escaping in running text

    # A BLOCK can only be overridden explicitly; without --override it is refused.
    code, _, err = cli(capsys, home, "approve", "support-triage", "v1.2.0", "--by", "ana", "--reason", "ship it")
    assert code == EXIT_BAD_INPUT and "override" in err
    code, _, _ = cli(capsys, home, "approve", "support-triage", "v1.2.0", "--by", "sam", "--reason", "hotfix", "--override")
    assert code == 0

    # The event log holds every decision, approval, override and refusal, and verifies.
    code, out, _ = cli(capsys, home, "audit", "verify", "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    con = duckdb.connect(str(home / "warehouse" / "relops.duckdb"))
    kinds = [k for (k,) in con.execute("SELECT kind FROM events ORDER BY seq").fetchall()]
    assert kinds.count("gate_decision") == 3 and "refused" in kinds and "approval" in kinds and "override" in kinds
    seq = con.execute("SELECT seq FROM events WHERE kind = 'approval'").fetchone()[0]
    con.execute("UPDATE events SET actor = 'mallory' WHERE seq = ?", [seq])
    con.close()
    code, out, _ = cli(capsys, home, "audit", "verify", "--json")
    doc = json.loads(out)
    assert code != 0 and doc["ok"] is False
    assert any(p["seq"] == seq for p in doc["problems"])


def test_too_little_evidence_is_review_never_ship(home, tmp_path, capsys):
    (home / "suites" / "support-triage" / "v1.yaml").write_text(suite_yaml(12, must_pass=2))
    register(capsys, home, tmp_path, "v1.0.0")
    cli(capsys, home, "gate", "support-triage", "v1.0.0")
    cli(capsys, home, "approve", "support-triage", "v1.0.0", "--by", "ana", "--reason", "baseline")
    register(capsys, home, tmp_path, "v1.1.0")
    code, out, _ = cli(capsys, home, "gate", "support-triage", "v1.1.0", "--json")
    doc = json.loads(out)
    assert code == 2 and doc["decision"] == "REVIEW"
    assert any("12" in r and "30" in r for r in doc["reasons"]), doc["reasons"]


def test_gate_refuses_a_release_as_its_own_baseline_and_crashes_are_never_exit_1(home, tmp_path, capsys):
    register(capsys, home, tmp_path, "v1.0.0")
    code, _, err = cli(capsys, home, "gate", "support-triage", "v1.0.0", "--baseline", "v1.0.0")
    assert code == EXIT_BAD_INPUT and "own baseline" in err
    code, _, err = cli(capsys, home, "approve", "support-triage", "BAD VER", "--by", "ana", "--reason", "x")
    assert code == EXIT_BAD_INPUT and "invalid version" in err
    code, _, err = cli(capsys, home, "audit", "verify", "--expect-head", "garbage")
    assert code == EXIT_BAD_INPUT
    # Only approvers may change the thresholds; the attempt is recorded.
    th = tmp_path / "th.yaml"
    th.write_text("min_cases: 5\n")
    code, _, err = cli(capsys, home, "thresholds", "set", "support-triage", str(th), "--by", "mallory", "--reason", "faster")
    assert code == EXIT_BAD_INPUT and "may not change" in err
    code, out, _ = cli(capsys, home, "thresholds", "set", "support-triage", str(th), "--by", "ana", "--reason", "tiny suite", "--json")
    assert code == 0 and json.loads(out)["version"] == 1


def test_delegates_must_be_a_list_of_names(home, capsys):
    (home / "workflows" / "support-triage.yaml").write_text("name: support-triage\nowner: ana\ndelegates: sam\n")
    code, _, err = cli(capsys, home, "approve", "support-triage", "v1.0.0", "--by", "s", "--reason", "x")
    assert code == EXIT_BAD_INPUT and "delegates" in err
