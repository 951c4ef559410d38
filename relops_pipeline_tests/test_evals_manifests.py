"""Release manifests (load, problems, rendering, immutability) and the manifest diff."""

from __future__ import annotations

import dataclasses
import json
import re
import textwrap
from pathlib import Path

import pytest

from relops_pipeline.lib.evals.diff import diff_manifests, diff_markdown
from relops_pipeline.lib.evals.manifests import (
    ManifestError,
    RenderError,
    check_immutable,
    load_manifest,
    manifest_from_content,
    render_messages,
    template_variables,
    validate_manifest_file,
)
from relops_pipeline.lib.evals.model import Case, Manifest

MANIFEST = """\
workflow: support-triage
version: v1.3.0
model: gpt-4o-mini
provider: openai
prompts:
  system: "You triage support tickets. Answer in JSON with category and reply."
  user: {file: prompts/triage-user.txt}
parameters: {temperature: 0.2, max_tokens: 512}
tools: [{name: lookup_order, description: "Find an order by id"}]
retrieval: {top_k: 4, index: docs-2026-10}
code_revision: 3f2c1ab
notes: "JSON mode"
"""
USER_TEMPLATE = "Ticket {{ ticket }} (order {{order_id}}).\nReply in {{ lang }}.\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def home_manifest(tmp_path: Path, text: str = MANIFEST, version: str = "v1.3.0") -> Path:
    folder = tmp_path / "releases" / "support-triage"
    write(folder / "prompts" / "triage-user.txt", USER_TEMPLATE)
    return write(folder / f"{version}.yaml", text)


def test_good_manifest_loads_with_template_from_file(tmp_path):
    path = home_manifest(tmp_path)
    m = load_manifest(path)
    assert m.release_key == "support-triage--v1.3.0"
    assert m.model == "gpt-4o-mini" and m.provider == "openai"
    assert m.prompts == {
        "system": "You triage support tickets. Answer in JSON with category and reply.",
        "user": USER_TEMPLATE,
    }
    assert m.parameters == {"temperature": 0.2, "max_tokens": 512}
    assert m.tools == [{"name": "lookup_order", "description": "Find an order by id"}]
    # A date-like scalar stays a string (JSON-serialisable content).
    assert m.retrieval == {"top_k": 4, "index": "docs-2026-10"}
    assert (m.code_revision, m.notes) == ("3f2c1ab", "JSON mode")
    assert m.content_hash == m.compute_hash()
    # Editing the template file changes the release's content hash.
    (path.parent / "prompts" / "triage-user.txt").write_text(USER_TEMPLATE + "Be kind.\n")
    assert load_manifest(path).content_hash != m.content_hash
    again = manifest_from_content(json.loads(json.dumps(m.content())))
    assert again == m


def test_minimal_manifest_outside_the_home(tmp_path):
    m = load_manifest(write(tmp_path / "anything.yaml", "workflow: wf\nversion: '2'\nmodel: m\n"))
    assert (m.version, m.prompts, m.tools, m.provider) == ("2", {}, [], None)


def test_every_manifest_problem_is_reported(tmp_path):
    text = """\
    workflow: support-triage
    version: v2
    paramters: {temperature: 0.3}
    provider: 7
    prompts:
      system: {file: prompts/missing.txt}
      user: {path: x.txt}
      "bad name!": hi
      other: [1, 2]
    parameters: [temperature]
    tools:
      - {name: a}
      - {name: a, description: 5, schema: "nope"}
      - {description: nameless}
      - just-a-string
    retrieval: 3
    code_revision: 1234567
    """
    path = home_manifest(tmp_path, text, version="v1.3.0")
    problems = validate_manifest_file(path)
    assert all(p.file == str(path) and p.case_id is None for p in problems)
    fields = {p.field: p.message for p in problems}
    assert set(fields) == {
        "paramters", "version", "model", "provider", "prompts.system.file", "prompts.user",
        "prompts.bad name!", "prompts.other", "parameters", "tools[1].name", "tools[1].description",
        "tools[1].schema", "tools[2].name", "tools[3]", "retrieval", "code_revision",
    }
    assert "did you mean 'parameters'" in fields["paramters"]
    assert "template file not found" in fields["prompts.system.file"]
    assert str(path.parent / "prompts" / "missing.txt") in fields["prompts.system.file"]
    assert "name it v2.yaml" in fields["version"]
    assert "quote it" in fields["code_revision"]
    assert "duplicate tool name 'a'" in fields["tools[1].name"]
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert len(err.value.problems) == len(problems)
    assert "prompts.system.file" in str(err.value)


def test_manifest_folder_rule_and_yaml_errors(tmp_path):
    path = home_manifest(tmp_path, MANIFEST.replace("workflow: support-triage", "workflow: other"))
    assert [p.field for p in validate_manifest_file(path)] == ["workflow"]
    bad = write(tmp_path / "x.yaml", "workflow: wf\nversion: v1\nmodel: [oops\n")
    [p] = validate_manifest_file(bad)
    assert p.message.startswith("YAML syntax error") and p.line == 4
    [p] = validate_manifest_file(write(tmp_path / "y.yaml", "- a list\n"))
    assert "must be a mapping" in p.message


def test_render_messages_with_vars_and_with_messages(tmp_path):
    m = load_manifest(home_manifest(tmp_path))
    case = Case("c-1", {"vars": {"ticket": "charged {{ twice }}", "order_id": 17, "lang": "en"}})
    assert render_messages(m, case) == [
        {"role": "system", "content": m.prompts["system"]},
        # A value containing a placeholder is inserted literally; numbers as JSON text.
        {"role": "user", "content": "Ticket charged {{ twice }} (order 17).\nReply in en.\n"},
    ]
    chat = Case("c-2", {"messages": [{"role": "user", "content": "Where is {{ it }}?"}]})
    assert render_messages(m, chat) == [
        {"role": "system", "content": m.prompts["system"]},
        {"role": "user", "content": "Where is {{ it }}?"},
    ]
    assert template_variables(USER_TEMPLATE) == ["ticket", "order_id", "lang"]


def test_missing_variable_names_case_and_variable(tmp_path):
    m = load_manifest(home_manifest(tmp_path))
    with pytest.raises(RenderError) as err:
        render_messages(m, Case("billing-7", {"vars": {"ticket": "x"}}))
    message = str(err.value)
    assert message.startswith("case billing-7: prompt template 'user' uses")
    assert "'order_id', 'lang'" in message and "(it has: ticket)" in message
    no_user = dataclasses.replace(m, prompts={"system": "Hi {{ name }}"})
    with pytest.raises(RenderError, match="case c: prompt template 'system' uses"):
        render_messages(no_user, Case("c", {"messages": [{"role": "user", "content": "x"}]}))
    with pytest.raises(RenderError, match="no prompts.user template"):
        render_messages(no_user, Case("c", {"vars": {"name": "A"}}))


def test_check_immutable_manifest(tmp_path):
    m = load_manifest(home_manifest(tmp_path))
    check_immutable(m, None)
    check_immutable(m, m.content_hash)
    with pytest.raises(ManifestError) as err:
        check_immutable(m, "f" * 64)
    message = str(err.value)
    assert "support-triage v1.3.0 is already registered" in message
    assert "immutable" in message and "new version (e.g. version: v1.3.1)" in message


# ---------------------------------------------------------------------------------------------
# Diff


def _pair() -> tuple[Manifest, Manifest]:
    old = Manifest(
        workflow="wf", version="v1", model="gpt-4o-mini", provider="openai",
        prompts={"system": "Line one\nLine two\nLine three\n", "legacy": "old"},
        parameters={"temperature": 0.2, "max_tokens": 512, "seed": 7},
        tools=[{"name": "lookup_order", "description": "Find"}, {"name": "refund"}],
        retrieval={"top_k": 4}, code_revision="3f2c1ab",
    )
    new = Manifest(
        workflow="wf", version="v2", model="gpt-4.1-mini", provider="openai",
        prompts={"system": "Line one\nLine 2\nLine three\nLine four\n", "user": "Q: {{ q }}"},
        parameters={"temperature": 0.7, "max_tokens": 512, "top_p": 0.9},
        tools=[{"name": "lookup_order", "description": "Find an order"}, {"name": "search_kb"}],
        retrieval={"top_k": 8}, code_revision="9e1d2aa",
    )
    return old, new


def test_diff_of_model_prompts_parameters_tools():
    old, new = _pair()
    d = diff_manifests(old, new)
    json.dumps(d)  # JSON-serialisable
    assert (d["baseline"], d["known"]) == ("v1", True)
    assert d["model"] == {"from": "gpt-4o-mini", "to": "gpt-4.1-mini"}
    assert d["provider"] is None
    assert {k: v["status"] for k, v in d["prompts"].items()} == {
        "system": "changed", "legacy": "removed", "user": "added"}
    udiff = d["prompts"]["system"]["unified_diff"].splitlines()
    assert udiff[:2] == ["--- v1/prompts.system", "+++ v2/prompts.system"]
    assert [ln for ln in udiff[2:] if ln[:1] in "+-"] == ["-Line two", "+Line 2", "+Line four"]
    assert d["prompts"]["user"]["unified_diff"].splitlines()[-1] == "+Q: {{ q }}"
    assert d["parameters"] == {
        "added": {"top_p": 0.9}, "removed": {"seed": 7},
        "changed": {"temperature": {"from": 0.2, "to": 0.7}},
    }
    assert d["tools"] == {
        "added": ["search_kb"], "removed": ["refund"],
        "changed": [{"name": "lookup_order", "fields": ["description"]}],
    }
    assert d["retrieval"]["changed"] == {"top_k": {"from": 4, "to": 8}}
    assert d["code_revision"] == {"from": "3f2c1ab", "to": "9e1d2aa"}
    assert d["summary"] == [
        "model gpt-4o-mini -> gpt-4.1-mini",
        "prompt system changed (+2 -1 lines)",
        "prompt legacy removed (1 line)",
        "prompt user added (1 line)",
        "parameter temperature 0.2 -> 0.7",
        "parameter top_p added (0.9)",
        "parameter seed removed (was 7)",
        "retrieval top_k 4 -> 8",
        "tool search_kb added",
        "tool refund removed",
        "tool lookup_order changed (description)",
        "code revision 3f2c1ab -> 9e1d2aa",
    ]


def test_diff_unknown_and_unchanged():
    old, new = _pair()
    first = diff_manifests(None, new)
    assert (first["baseline"], first["known"], first["model"], first["prompts"]) == (None, False, None, {})
    imported = diff_manifests(old, new, new_has_manifest=False)
    assert (imported["baseline"], imported["known"]) == ("v1", False)
    assert "without a manifest" in imported["summary"][0]
    assert diff_manifests(old, new, old_has_manifest=False)["known"] is False
    same = diff_manifests(old, dataclasses.replace(old, version="v1b"))
    assert same["known"] and same["summary"] == ["no changes from v1"]
    assert "_Unknown_" in diff_markdown(imported)


def test_diff_markdown_escapes_and_fences():
    old, new = _pair()
    new = dataclasses.replace(
        new, model="<script>alert(1)</script>",
        prompts={**new.prompts, "system": "Answer like this:\n````json\n{}\n````\n<script>x</script>\n"},
    )
    md = diff_markdown(diff_manifests(old, new))
    summary_part = md.split("**Prompt")[0]
    assert "<script>" not in summary_part and "&lt;script>" in summary_part
    assert md.startswith("### What changed since v1\n")
    # The system prompt's diff contains a run of 4 backticks: its fence must be longer.
    lines = md.splitlines()
    start = lines.index("**Prompt system** (changed)") + 2
    fence = re.match(r"^(`+)diff$", lines[start]).group(1)
    assert len(fence) == 5
    end = lines.index(fence, start + 1)
    inside = lines[start + 1:end]
    assert "+````json" in inside and "+&lt;script&gt;x&lt;/script&gt;" in inside
    assert "<script>" not in md
    assert not any(re.fullmatch(r"\s*`{5,}\s*", ln) for ln in inside)
    # Other prompts without backticks get the plain 3-backtick fence.
    assert "```diff" in lines
