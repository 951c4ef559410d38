"""Suite proposals: incident traces become proposed cases; accepting makes a new suite version."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from relops_pipeline.lib import incidents
from relops_pipeline.lib.evals.suites import load_suite, validate_suite_file
from relops_pipeline.lib.proposals import store
from relops_pipeline.lib.proposals.suites import (
    SuiteProposalError,
    accept_suite_proposal,
    parse_messages,
    propose_suite_cases,
    recover_input,
)
from relops_pipeline.lib.warehouse import open_warehouse

NOW = datetime(2026, 11, 27, 12, 0, 0)
T0 = datetime(2026, 11, 20, 10, 0, 0)
REFUSAL = "I'm sorry, but I can't help with configuration that may contain credentials."
SPAN_COLS = ("trace_id", "span_id", "parent_span_id", "span_name", "kind", "workflow", "release", "start_time",
             "end_time", "latency_ms", "status", "error_type", "finish_reason", "input_text", "output_text",
             "attributes")

DOCQA_V1 = {
    "workflow": "doc-qa",
    "version": "v1",
    "changelog": ["v1: 2 curated questions"],
    "cases": [
        {"id": "install-001", "input": {"vars": {"question": "How do I install the relay CLI?"}},
         "expected": {"contains": ["pip install acme-relay"]}, "tags": ["installation"], "provenance": "curated"},
        {"id": "timeout-001", "input": {"vars": {"question": "Where do I set the delivery timeout?"}},
         "expected": {"contains": ["delivery.timeout_ms"]}, "must_pass": True, "provenance": "curated"},
    ],
}
TRIAGE_V1 = {
    "workflow": "support-triage",
    "version": "v1",
    "cases": [
        {"id": f"billing-{i:03d}", "input": {"vars": {"ticket": f"I was charged twice, invoice INV-{i}"}},
         "expected": {"fields": {"category": "billing", "priority": "high"}}, "provenance": "curated"}
        for i in range(1, 4)
    ],
}


def _genai_user(text: str) -> str:
    return json.dumps([{"role": "user", "parts": [{"type": "text", "content": text}]}])


def _add_trace(con, trace_id: str, *, workflow: str, release: str, start: datetime, user_text: str | None,
               output: str | None, status: str = "ok", error_type: str | None = None, finish: str | None = "stop",
               latency_ms: float = 800.0, json_output: bool = False) -> None:
    """A root span and one LLM span (GenAI message shape) for one trace."""
    end = start + timedelta(milliseconds=latency_ms)
    attrs = json.dumps({"gen_ai.output.type": "json"} if json_output else {})
    rows = [
        (trace_id, trace_id[:8] + "r", None, "chain answer", "agent", workflow, release, start, end, latency_ms,
         status, error_type, None, None, None, "{}"),
        (trace_id, trace_id[:8] + "l", trace_id[:8] + "r", "chat m", "llm", workflow, release, start, end, latency_ms,
         status, error_type, finish, _genai_user(user_text) if user_text is not None else None, output, attrs),
    ]
    con.executemany(f"INSERT INTO spans ({', '.join(SPAN_COLS)}) VALUES ({', '.join('?' for _ in SPAN_COLS)})", rows)


def _add_release(con, workflow: str, version: str, user_template: str, parameters: dict | None = None) -> None:
    manifest = {"workflow": workflow, "version": version, "model": "m", "prompts": {"user": user_template},
                "parameters": parameters or {}}
    con.execute("INSERT INTO releases VALUES (?, ?, ?, true, ?, 'h', NULL, NULL, NULL, 'test', ?)",
                [f"{workflow}--{version}", workflow, version, json.dumps(manifest), T0 - timedelta(days=30)])


def _write_suite(suites: Path, doc: dict) -> Path:
    folder = suites / doc["workflow"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{doc['version']}.yaml"
    path.write_text("# a curated suite\n" + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _docqa_question(q: str) -> str:
    return f"Documentation excerpts:\n[1] (docs/a.md#1) Question: what the docs say.\n\nQuestion: {q}"


@pytest.fixture
def world(tmp_path):
    """doc-qa v2.4.0 rolled back after a canary incident linked to six traces: two refusals of
    near-identical inputs (only digits differ), one refusal of a question already in the suite,
    an error, a slow-only trace and a refusal whose output carries markup."""
    suites = tmp_path / "suites"
    _write_suite(suites, DOCQA_V1)
    with open_warehouse(tmp_path / "w.duckdb") as con:
        _add_release(con, "doc-qa", "v2.4.0", "Question: {{ question }}")
        config = "How do I add an endpoint?\n\nHere is my config:\n  endpoint_0: {url: https://h/0, retries: %d}"
        _add_trace(con, "t1", workflow="doc-qa", release="v2.4.0", start=T0, user_text=_docqa_question(config % 3),
                   output=REFUSAL)
        _add_trace(con, "t2", workflow="doc-qa", release="v2.4.0", start=T0 + timedelta(minutes=1),
                   user_text=_docqa_question(config % 7), output=REFUSAL)
        _add_trace(con, "t3", workflow="doc-qa", release="v2.4.0", start=T0 + timedelta(minutes=2),
                   user_text=_docqa_question("Where do I set the delivery timeout?"),
                   output="I'm sorry, but I can't help with that.")
        _add_trace(con, "t4", workflow="doc-qa", release="v2.4.0", start=T0 + timedelta(minutes=3),
                   user_text=_docqa_question("How do I rotate the signing secret?"), output=None, status="error",
                   error_type="RateLimitError", finish=None)
        _add_trace(con, "t5", workflow="doc-qa", release="v2.4.0", start=T0 + timedelta(minutes=4),
                   user_text=_docqa_question("Is there a Terraform provider?"), output="Yes: acme/relay.",
                   latency_ms=9000.0)
        _add_trace(con, "t6", workflow="doc-qa", release="v2.4.0", start=T0 + timedelta(minutes=5),
                   user_text=_docqa_question("Can I pause deliveries <b>now</b>?"),
                   output="I'm sorry, but I can't <script>alert(1)</script>")
        inc = incidents.open_incident(con, "doc-qa", "v2.4.0", "failed canary check on v2.4.0", "canary", "relops",
                                      links={"traces": ["t1", "t2", "t3", "t4", "t5", "t6", "t-gone"]},
                                      now=T0 + timedelta(days=2))
        con.execute("INSERT INTO rollbacks (rollback_id, workflow, from_release, to_release, trigger, reason, automatic, "
                    "performed, incident_id, actor, recorded_at) VALUES ('rb-1', 'doc-qa', 'v2.4.0', 'v2.3.0', 'canary', "
                    "'latency', true, true, ?, 'relops', ?)", [inc["incident_id"], T0 + timedelta(days=2)])
        yield {"con": con, "suites": suites, "incident": inc}


def _propose(world, **kw):
    return propose_suite_cases(world["con"], world["suites"], "doc-qa", period="2026-11", now=NOW, **kw)


def test_refusal_traces_become_draft_cases(world):
    p = _propose(world, scorer_types=["contains", "similarity"])
    iid = world["incident"]["incident_id"]
    short = iid.rsplit("-", 1)[1]
    assert p.created is True and p.status == "draft" and p.kind == "suite"
    assert p.base_version == "v1"
    payload = p.payload
    assert payload["next_version"] == "v2"
    assert payload["changelog"] == f"v2: +3 cases from incident {iid}"
    cases = {c["id"]: c for c in payload["cases"]}
    assert list(cases) == [f"inc-{short}-1", f"inc-{short}-2", f"inc-{short}-3"]
    first = cases[f"inc-{short}-1"]
    # vars recovered with the template after the RAG context; the docs' own "Question:" is not taken
    assert first["input"] == {"vars": {"question": "How do I add an endpoint?\n\nHere is my config:\n"
                                                   "  endpoint_0: {url: https://h/0, retries: 3}"}}
    assert first["expected"] == {"not_contains": ["I'm sorry, but I can't"]}
    assert first["must_pass"] is True  # the incident caused a performed rollback
    assert first["provenance"] == f"incident:{iid}"
    assert "refusal" in first["tags"] and "incident" in first["tags"]
    error_case = cases[f"inc-{short}-2"]
    assert error_case["input"] == {"vars": {"question": "How do I rotate the signing secret?"}}
    assert error_case["expected"] == {"regex": r"\S"}
    ev = p.evidence["cases"]
    assert ev[first["id"]]["trace_id"] == "t1" and ev[first["id"]]["duplicates"] == ["t2"]
    assert ev[first["id"]]["bad_output"] == REFUSAL and ev[first["id"]]["release"] == "v2.4.0"
    assert "RateLimitError" in ev[error_case["id"]]["why"][0]
    reasons = {s["trace_id"]: s["reason"] for s in p.evidence["skipped"]}
    assert set(reasons) == {"t3", "t5", "t-gone"}
    assert "as case timeout-001" in reasons["t3"]
    assert reasons["t5"].startswith("no failure visible")
    assert reasons["t-gone"] == "trace not in the warehouse"
    assert any("regex scorer" in w for w in p.evidence["warnings"])
    report = p.report_md
    assert "<script>" not in report and "&lt;script&gt;" in report
    assert "<b>" not in report
    # nothing changes before acceptance
    assert not (world["suites"] / "doc-qa" / "v2.yaml").exists()
    assert world["con"].execute("SELECT count(*) FROM suite_versions").fetchone()[0] == 0


def test_rerun_gives_the_same_draft(world):
    first = _propose(world)
    again = _propose(world)
    assert again.created is False
    assert again.proposal_id == first.proposal_id and again.payload == first.payload
    assert len(store.list_proposals(world["con"], kind="suite")) == 1


def test_accept_writes_valid_suite_version_and_records_it(world):
    con, suites = world["con"], world["suites"]
    p = _propose(world)
    out = accept_suite_proposal(con, suites, p.proposal_id, by="alice")
    path = suites / "doc-qa" / "v2.yaml"
    assert out["version"] == "v2" and out["cases_added"] == 3 and Path(out["path"]) == path
    assert validate_suite_file(path) == []
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# a curated suite\n")
    suite = load_suite(path)
    assert [c.id for c in suite.cases] == ["install-001", "timeout-001", *out["case_ids"]]
    assert suite.changelog == ["v1: 2 curated questions", p.payload["changelog"]]
    assert suite.case("timeout-001").must_pass is True
    base = load_suite(suites / "doc-qa" / "v1.yaml")
    assert [c.as_dict() for c in suite.cases[:2]] == [c.as_dict() for c in base.cases]
    assert suite.case(out["case_ids"][0]).input == p.payload["cases"][0]["input"]
    row = con.execute("SELECT cases_count, must_pass_count, content_hash, source_file FROM suite_versions "
                      "WHERE workflow = 'doc-qa' AND version = 'v2'").fetchone()
    assert row == (5, 4, suite.content_hash, str(path))
    accepted = store.get_proposal(con, p.proposal_id)
    assert accepted["status"] == "accepted" and accepted["decided_by"] == "alice"
    assert accepted["result_version"] == "v2"
    event = con.execute("SELECT kind, actor, payload FROM events WHERE seq = ?", [accepted["event_seq"]]).fetchone()
    assert event[0] == "proposal_accepted" and event[1] == "alice"
    assert json.loads(event[2])["result_version"] == "v2"
    sv = con.execute("SELECT actor, payload FROM events WHERE kind = 'suite_version'").fetchall()
    assert len(sv) == 1 and sv[0][0] == "alice" and json.loads(sv[0][1])["cases_added"] == 3
    with pytest.raises(store.ProposalError, match="accepted"):
        accept_suite_proposal(con, suites, p.proposal_id, by="alice")


def test_second_propose_skips_incidents_already_covered(world):
    con, suites = world["con"], world["suites"]
    accept_suite_proposal(con, suites, _propose(world).proposal_id, by="alice")
    assert _propose(world) is None
    _add_trace(con, "t9", workflow="doc-qa", release="v2.4.0", start=T0 + timedelta(days=3),
               user_text=_docqa_question("How are events ordered?"), output="",
               finish="content_filter")
    later = incidents.open_incident(con, "doc-qa", "v2.4.0", "content filter", "manual", "bob",
                                    links={"traces": ["t9"]}, now=T0 + timedelta(days=4))
    p = _propose(world)
    assert p.base_version == "v2" and p.payload["next_version"] == "v3"
    assert p.payload["incidents"] == [later["incident_id"]]
    (case,) = p.payload["cases"]
    assert case["must_pass"] is False and case["expected"] == {"regex": r"\S"}
    assert case["input"] == {"vars": {"question": "How are events ordered?"}}
    out = accept_suite_proposal(con, suites, p.proposal_id, by="bob", reason="new coverage")
    assert out["version"] == "v3" and validate_suite_file(Path(out["path"])) == []
    assert len(load_suite(Path(out["path"])).changelog) == 3


def test_accept_refuses_when_base_moved_and_writes_nothing(world):
    con, suites = world["con"], world["suites"]
    p = _propose(world)
    other = dict(DOCQA_V1, version="v2", changelog=["v1: 2 curated questions", "v2: a colleague's change"])
    _write_suite(suites, other)
    before = (suites / "doc-qa" / "v2.yaml").read_text()
    with pytest.raises(SuiteProposalError, match="latest version is now v2"):
        accept_suite_proposal(con, suites, p.proposal_id, by="alice")
    assert (suites / "doc-qa" / "v2.yaml").read_text() == before
    assert not (suites / "doc-qa" / "v3.yaml").exists()
    assert store.get_proposal(con, p.proposal_id)["status"] == "draft"
    assert con.execute("SELECT count(*) FROM suite_versions").fetchone()[0] == 0


def test_accept_needs_an_actor_and_refuses_a_recorded_target(world):
    con, suites = world["con"], world["suites"]
    p = _propose(world)
    with pytest.raises(store.ProposalError, match="--by"):
        accept_suite_proposal(con, suites, p.proposal_id, by=" ")
    con.execute("INSERT INTO suite_versions VALUES ('doc-qa', 'v2', 'x', 1, 0, '[]', '[]', NULL, ?)", [NOW])
    with pytest.raises(SuiteProposalError, match="already recorded"):
        accept_suite_proposal(con, suites, p.proposal_id, by="alice")
    assert not (suites / "doc-qa" / "v2.yaml").exists()
    assert store.get_proposal(con, p.proposal_id)["status"] == "draft"


def test_nothing_to_propose(tmp_path):
    suites = tmp_path / "suites"
    _write_suite(suites, DOCQA_V1)
    with open_warehouse(tmp_path / "w.duckdb") as con:
        assert propose_suite_cases(con, suites, "doc-qa", period="2026-11", now=NOW) is None
        _add_trace(con, "s1", workflow="doc-qa", release="v2.4.0", start=T0, user_text=_docqa_question("Slow?"),
                   output="Fine answer.", latency_ms=20000.0)
        _add_trace(con, "old", workflow="doc-qa", release="v2.4.0", start=T0 - timedelta(days=90),
                   user_text=_docqa_question("Old?"), output="I'm sorry, but I can't help with that.")
        incidents.open_incident(con, "doc-qa", "v2.4.0", "slow", "manual", "me", links={"traces": ["s1"]}, now=T0)
        closed = incidents.open_incident(con, "doc-qa", "v2.4.0", "old", "manual", "me", links={"traces": ["old"]},
                                         now=T0 - timedelta(days=90))
        incidents.close_incident(con, closed["incident_id"], closed_by="me", resolution="fixed")
        con.execute("UPDATE incidents SET closed_at = ? WHERE incident_id = ?",
                    [NOW - timedelta(days=60), closed["incident_id"]])
        assert propose_suite_cases(con, suites, "doc-qa", period="2026-11", now=NOW) is None
        assert store.list_proposals(con) == []


def test_json_workflow_truncation_and_review_label(tmp_path):
    suites = tmp_path / "suites"
    _write_suite(suites, TRIAGE_V1)
    with open_warehouse(tmp_path / "w.duckdb") as con:
        _add_release(con, "support-triage", "v1.5.0", "Customer ticket:\n\n{{ ticket }}",
                     {"response_format": {"type": "json_object"}})
        _add_trace(con, "j1", workflow="support-triage", release="v1.5.0", start=T0,
                   user_text="Please delete my account and all my data.", output='{"category": "account-del',
                   finish="length", json_output=True)
        _add_trace(con, "j2", workflow="support-triage", release="v1.5.0", start=T0 + timedelta(minutes=1),
                   user_text="My card was declined = help", output='{"category": "login", "priority": "low"}')
        inc = incidents.open_incident(con, "support-triage", "v1.5.0", "truncated replies", "review", "carol",
                                      links={"traces": ["j1"]}, now=T0 + timedelta(days=1))
        con.execute("INSERT INTO trace_labels (label_id, sample_id, trace_id, workflow, release, name, value, label, "
                    "is_failure, note, reviewer, source_file, incident_id, imported_at) VALUES ('l1', 'rv-1', 'j2', "
                    "'support-triage', 'v1.5.0', 'human_review', 0, 'fail', true, 'wrong category: should be billing', "
                    "'carol', 'sheet.csv', ?, ?)",
                    [inc["incident_id"], NOW - timedelta(days=1)])
        p = propose_suite_cases(con, suites, "support-triage", period="2026-11", now=NOW)
        c1, c2 = p.payload["cases"]
        schema = {"type": "object", "required": ["category", "priority"]}
        assert c1["input"] == {"vars": {"ticket": "Please delete my account and all my data."}}
        assert c1["expected"] == {"json_schema": schema}
        assert {"truncated", "invalid-json"} <= set(c1["tags"])
        assert c1["must_pass"] is False
        assert c2["input"] == {"vars": {"ticket": "My card was declined = help"}}
        assert "wrong category: should be billing" in c2["expected"]["judge_rubric"]
        assert c2["expected"]["json_schema"] == schema
        assert "carol labelled the output fail" in p.evidence["cases"][c2["id"]]["why"][0]
        out = accept_suite_proposal(con, suites, p.proposal_id, by="carol")
        assert validate_suite_file(Path(out["path"])) == []


def test_recover_input_and_parse_messages():
    msgs = parse_messages(json.dumps([{"role": "system", "content": "be nice"},
                                      {"role": "user", "content": [{"type": "text", "text": "Customer ticket:\n\nHi"}]}]))
    assert msgs == [{"role": "system", "content": "be nice"}, {"role": "user", "content": "Customer ticket:\n\nHi"}]
    assert parse_messages("plain prompt") == [{"role": "user", "content": "plain prompt"}]
    assert recover_input(msgs, "Customer ticket:\n\n{{ ticket }}", set()) == (
        {"vars": {"ticket": "Hi"}}, "the user prompt template")
    two = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    case_input, how = recover_input(two, "{{ q }}", set())
    assert case_input == {"messages": two} and "messages" in how
    assert recover_input(None, "{{ q }}", set(), query="what?") == (
        {"vars": {"q": "what?"}}, "the retrieval query (the trace has no model input)")
    assert recover_input(None, None, set())[0] is None
