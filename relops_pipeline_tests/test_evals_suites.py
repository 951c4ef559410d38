"""Suite files: loading, every kind of problem (file / case / field), versions, immutability."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from relops_pipeline.lib.evals.model import Case, Suite
from relops_pipeline.lib.evals.suites import (
    Problem,
    SuiteError,
    check_immutable,
    latest_suite,
    list_suite_versions,
    load_suite,
    validate_path,
    validate_suite_file,
    version_sort_key,
)

GOOD = """\
workflow: support-triage
version: v1
changelog:
  - "v1: three curated cases"
cases:
  - id: billing-refund-001
    input: {vars: {ticket: "I was charged twice", order_id: 17}}
    expected:
      fields: {category: billing, "reply.lang": en}
      contains: [refund]
      not_contains: ["sorry for"]
      regex: "^\\\\{"
      json_schema: {type: object, required: [category]}
    tags: [billing, refunds]
    must_pass: true
    provenance: curated
  - id: "inc:12.a"
    input:
      messages:
        - {role: system, content: "Be brief"}
        - {role: user, content: [{type: text, text: "Where is my order?"}]}
    expected: {reference: "It ships tomorrow", number: 3, tolerance: 0.5, judge_rubric: "polite"}
    provenance: "incident:inc-12"
  - id: imported.7
    input: {vars: {ticket: "hello"}}
    provenance: "imported:promptfoo"
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def suite_yaml(version: str, changelog: list[str] | None = None, case_id: str = "c1") -> str:
    lines = ["workflow: wf", f"version: {version}"]
    if changelog is not None:
        lines.append("changelog:")
        lines += [f"  - {json.dumps(c)}" for c in changelog]
    lines += ["cases:", f"  - id: {case_id}", "    input: {vars: {x: 1}}"]
    return "\n".join(lines) + "\n"


def test_good_suite_loads(tmp_path):
    path = write(tmp_path / "suites" / "support-triage" / "v1.yaml", GOOD)
    assert validate_suite_file(path) == []
    suite = load_suite(path)
    assert (suite.workflow, suite.version) == ("support-triage", "v1")
    assert [c.id for c in suite.cases] == ["billing-refund-001", "inc:12.a", "imported.7"]
    first = suite.cases[0]
    assert first.input == {"vars": {"ticket": "I was charged twice", "order_id": 17}}
    assert first.expected["fields"] == {"category": "billing", "reply.lang": "en"}
    assert first.expected["regex"] == "^\\{"
    assert first.must_pass is True and first.tags == ["billing", "refunds"]
    assert suite.cases[1].provenance == "incident:inc-12"
    assert suite.cases[1].must_pass is False
    assert suite.cases[2].expected == {} and suite.cases[2].tags == []
    assert suite.changelog == ["v1: three curated cases"]
    assert suite.content_hash == suite.compute_hash() and len(suite.content_hash) == 64


def test_case_id_with_slash_is_rejected(tmp_path):
    path = write(tmp_path / "suites" / "support-triage" / "v1.yaml", GOOD.replace("inc:12.a", "inc:12/a"))
    problems = validate_suite_file(path)
    assert [(p.case_id, p.field) for p in problems] == [("inc:12/a", "cases[1].id")]


def test_hash_covers_cases_only_and_ignores_explicit_defaults(tmp_path):
    base = GOOD
    a = load_suite(write(tmp_path / "a" / "v1.yaml", base))
    # Spelling out a default, or editing the changelog, is not a change of the cases.
    same = base.replace("    provenance: \"imported:promptfoo\"", "    provenance: \"imported:promptfoo\"\n    must_pass: false")
    same = same.replace("three curated cases", "3 curated cases")
    b = load_suite(write(tmp_path / "b" / "v1.yaml", same))
    assert b.cases[2].must_pass is False
    assert a.content_hash == b.content_hash
    changed = base.replace("It ships tomorrow", "It ships today")
    c = load_suite(write(tmp_path / "c" / "v1.yaml", changed))
    assert c.content_hash != a.content_hash


BAD = """\
workflow: support-triage
version: v1
descripton: oops
cases:
  - id: dup
    input: {vars: {ticket: hi}}
  - id: dup
    input: {vars: {ticket: hi}, messages: [{role: user, content: hi}]}
    expected:
      regex: "(unclosed"
      json_schema: {type: 12}
      contans: [x]
      tolerance: 0.1
    tags: billing
    must_pass: "yes"
    provenance: incident
    extra: 1
  - id: "bad id!"
    input: {messages: [{role: bot, content: 3}]}
  - input: {vars: {"ticket id": 1}}
    expected: [not, a, mapping]
  - id: 42
    input: {}
  - id: ok-but-wrong-fields
    input: {vars: {a: 1}}
    expected: {fields: {}, number: "3", contains: "refund", reference: ""}
  - just a string
"""


def test_one_bad_file_reports_every_problem_with_file_case_and_field(tmp_path):
    path = write(tmp_path / "suites" / "support-triage" / "v1.yaml", BAD)
    problems = validate_suite_file(path)
    assert all(p.file == str(path) for p in problems)
    got = {(p.case_id, p.field) for p in problems}
    expected = {
        (None, "descripton"),
        ("dup", "cases[1].id"),
        ("dup", "cases[1].input"),
        ("dup", "cases[1].expected.regex"),
        ("dup", "cases[1].expected.json_schema"),
        ("dup", "cases[1].expected.contans"),
        ("dup", "cases[1].expected.tolerance"),
        ("dup", "cases[1].tags"),
        ("dup", "cases[1].must_pass"),
        ("dup", "cases[1].provenance"),
        ("dup", "cases[1].extra"),
        ("bad id!", "cases[2].id"),
        ("bad id!", "cases[2].input.messages[0].role"),
        ("bad id!", "cases[2].input.messages[0].content"),
        (None, "cases[3].id"),
        (None, "cases[3].input.vars"),
        (None, "cases[3].expected"),
        ("42", "cases[4].id"),
        ("42", "cases[4].input"),
        ("ok-but-wrong-fields", "cases[5].expected.fields"),
        ("ok-but-wrong-fields", "cases[5].expected.number"),
        ("ok-but-wrong-fields", "cases[5].expected.contains"),
        ("ok-but-wrong-fields", "cases[5].expected.reference"),
        (None, "cases[6]"),
    }
    assert got == expected
    by_field = {p.field: p for p in problems}
    assert "did you mean 'contains'" in by_field["cases[1].expected.contans"].message
    assert "duplicate case id (also cases[0])" in by_field["cases[1].id"].message
    assert "invalid regular expression" in by_field["cases[1].expected.regex"].message
    assert "not a valid JSON Schema" in by_field["cases[1].expected.json_schema"].message
    assert "without `number`" in by_field["cases[1].expected.tolerance"].message
    assert "exactly one of `vars`" in by_field["cases[1].input"].message
    assert "quote it" in by_field["cases[4].id"].message
    # Lines point at each case's mapping in the file.
    assert by_field["cases[1].id"].line == 7
    assert by_field["cases[2].id"].line == 18
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert len(err.value.problems) == len(problems)
    assert "cases[1].expected.regex" in str(err.value)


def test_problem_one_liner():
    p = Problem("suites/wf/v1.yaml", "c-1", "cases[3].expected.json_schema", "not a valid JSON Schema", 12)
    assert str(p) == "suites/wf/v1.yaml:12:c-1:cases[3].expected.json_schema: not a valid JSON Schema"
    assert str(Problem("f.yaml", None, "version", "is required")) == "f.yaml:version: is required"
    assert str(Problem("f.yaml", None, None, "the file is empty")) == "f.yaml: the file is empty"


def test_yaml_syntax_error_reports_its_line(tmp_path):
    path = write(tmp_path / "v1.yaml", "workflow: wf\nversion: v1\ncases:\n  - id: [unclosed\n    input: x\n")
    [problem] = validate_suite_file(path)
    assert problem.message.startswith("YAML syntax error")
    assert problem.line == 5


def test_duplicate_yaml_keys_are_problems(tmp_path):
    path = write(tmp_path / "v1.yaml", suite_yaml("v1") + "workflow: other\n")
    problems = validate_suite_file(path)
    assert [(p.line, p.message) for p in problems] == [(6, "duplicate key 'workflow': YAML would keep only the last one")]


def test_workflow_and_version_rules(tmp_path):
    folder = tmp_path / "suites" / "support-triage"
    p = write(folder / "v1.yaml", suite_yaml("v1").replace("workflow: wf", "workflow: other"))
    assert [(p.field, "folder of workflow 'support-triage'" in p.message) for p in validate_suite_file(p)] == [("workflow", True)]
    p = write(folder / "v2.yaml", suite_yaml("v3").replace("workflow: wf", "workflow: support-triage"))
    msgs = {q.field: q.message for q in validate_suite_file(p)}
    assert "name it v3.yaml" in msgs["version"]
    p = write(tmp_path / "x" / "1.0.yaml", suite_yaml("1.0"))
    [q] = validate_suite_file(p)
    assert q.field == "version" and "quote it" in q.message
    p = write(tmp_path / "x" / "v1.yaml", suite_yaml("v1").replace("workflow: wf", "workflow: Bad--Name"))
    [q] = validate_suite_file(p)
    assert q.field == "workflow" and "invalid workflow 'Bad--Name'" in q.message
    p = write(tmp_path / "x" / "v5.yaml", "version: v5\ncases: []\n")
    assert {(q.field, q.message) for q in validate_suite_file(p)} == {
        ("workflow", "is required"), ("cases", "the suite has no cases")}


def test_no_must_pass_case_is_fine_and_empty_file_is_not(tmp_path):
    assert validate_suite_file(write(tmp_path / "v1.yaml", suite_yaml("v1"))) == []
    [q] = validate_suite_file(write(tmp_path / "e" / "v1.yaml", ""))
    assert q.message == "the file is empty"


def test_cases_file_jsonl(tmp_path):
    folder = tmp_path / "suites" / "wf"
    rows = [
        {"id": "a", "input": {"vars": {"x": "1"}}, "expected": {"reference": "one"}, "must_pass": True},
        {"id": "b", "input": {"messages": [{"role": "user", "content": "hi"}]}},
    ]
    (folder).mkdir(parents=True)
    (folder / "cases.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    path = write(folder / "v1.yaml", "workflow: wf\nversion: v1\ncases_file: cases.jsonl\n")
    suite = load_suite(path)
    assert [c.id for c in suite.cases] == ["a", "b"] and suite.cases[0].must_pass

    (folder / "bad.jsonl").write_text(json.dumps(rows[0]) + "\n{not json\n" + json.dumps({"id": "a", "input": {}}) + "\n")
    path = write(tmp_path / "other" / "v1.yaml", "workflow: wf\nversion: v1\ncases_file: ../suites/wf/bad.jsonl\n")
    problems = validate_suite_file(path)
    assert all(p.file.endswith("bad.jsonl") for p in problems)
    assert {(p.line, p.case_id, p.field) for p in problems} == {
        (2, None, "cases[1]"), (3, "a", "cases[2].id"), (3, "a", "cases[2].input")}

    path = write(tmp_path / "both" / "v1.yaml", suite_yaml("v1") + "cases_file: cases.jsonl\n")
    assert [p.field for p in validate_suite_file(path)] == ["cases"]
    path = write(tmp_path / "missing" / "v1.yaml", "workflow: wf\nversion: v1\ncases_file: nope.jsonl\n")
    [q] = validate_suite_file(path)
    assert q.field == "cases_file" and "cannot read" in q.message


def test_changelog_needs_a_line_for_each_later_version(tmp_path):
    folder = tmp_path / "suites" / "wf"
    write(folder / "v1.yaml", suite_yaml("v1"))                      # first version: no changelog needed
    assert validate_suite_file(folder / "v1.yaml") == []
    v2 = write(folder / "v2.yaml", suite_yaml("v2", ["v1: first", "v20: not this one"]))
    [q] = validate_suite_file(v2)
    assert q.field == "changelog" and "needs a line for v2" in q.message and "v1" in q.message
    write(folder / "v2.yaml", suite_yaml("v2", ["v1: first", "v2: +1 case"]))
    assert validate_suite_file(v2) == []
    # An unquoted `- v3: ...` line reads as a mapping in YAML; it is taken as the line it reads as.
    v3 = write(folder / "v3.yaml", suite_yaml("v3") + "changelog:\n  - v3: from incident inc-9\n")
    assert validate_suite_file(v3) == []
    assert load_suite(v3).changelog == ["v3: from incident inc-9"]


def test_natural_version_order_and_latest(tmp_path):
    suites_dir = tmp_path / "suites"
    for v in ("v2", "v10", "v9"):
        write(suites_dir / "wf" / f"{v}.yaml", suite_yaml(v, [f"{v}: changed"], case_id=f"case-{v}"))
    versions = list_suite_versions(suites_dir, "wf")
    assert [s.version for s in versions] == ["v2", "v9", "v10"]
    assert latest_suite(suites_dir, "wf").version == "v10"
    assert latest_suite(suites_dir, "nothing") is None and list_suite_versions(suites_dir, "nothing") == []
    assert sorted(["1.10.0", "1.2.0", "1.2", "v02"], key=version_sort_key) == ["1.2", "1.2.0", "1.10.0", "v02"]
    with pytest.raises(ValueError):
        list_suite_versions(suites_dir, "../etc")
    # An invalid version is an error, never silently skipped.
    write(suites_dir / "wf" / "v11.yaml", "workflow: wf\nversion: v11\ncases: []\n")
    with pytest.raises(SuiteError):
        list_suite_versions(suites_dir, "wf")


def test_check_immutable_asks_for_a_new_version():
    suite = Suite("wf", "v3", [Case("a", {"vars": {}})])
    suite.content_hash = suite.compute_hash()
    check_immutable(suite, None)
    check_immutable(suite, suite.content_hash)
    with pytest.raises(SuiteError) as err:
        check_immutable(suite, "0" * 64)
    message = str(err.value)
    assert "wf v3 was already used" in message
    assert "new version (e.g. v4.yaml)" in message and "changelog line" in message
    assert err.value.problems[0].file == "suites/wf/v3.yaml"


def test_validate_path_folder(tmp_path):
    suites_dir = tmp_path / "suites"
    write(suites_dir / "wf" / "v1.yaml", suite_yaml("v1"))
    write(suites_dir / "other" / "v1.yaml", suite_yaml("v1").replace("wf", "other") + "bogus: 1\n")
    problems = validate_path(suites_dir)
    assert [(Path(p.file).parent.name, p.field) for p in problems] == [("other", "bogus")]
    assert validate_path(suites_dir / "wf") == []
    assert [p.message for p in validate_path(tmp_path / "none")] == ["no such file or folder"]
    (tmp_path / "empty").mkdir()
    assert "no suite files" in validate_path(tmp_path / "empty")[0].message
