"""What changed between two release manifests: a JSON-serialisable structured diff and a short
markdown rendering of it (safe to show: everything from the manifests is escaped).

Parameters and retrieval settings are compared key by key at the top level (a nested value,
e.g. `response_format: {type: json_object}`, is one value). Values compare by their canonical
JSON, so `1` -> `1.0` is a change, as it is for the content hash. Tools are matched by name.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from ..markdown import escape_md, fenced_block
from .model import Manifest

NO_BASELINE = "no earlier release to compare with"
NO_MANIFEST = "registered without a manifest (imported results): what changed is unknown"
BASELINE_NO_MANIFEST = "the baseline release was registered without a manifest: what changed is unknown"


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else _canon(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _lines(n: int) -> str:
    return f"{n} line" if n == 1 else f"{n} lines"


def _mapping_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    return {
        "added": {k: v for k, v in new.items() if k not in old},
        "removed": {k: v for k, v in old.items() if k not in new},
        "changed": {
            k: {"from": old[k], "to": v} for k, v in new.items() if k in old and _canon(old[k]) != _canon(v)
        },
    }


def _from_to(old: Any, new: Any) -> dict[str, Any] | None:
    return None if old == new else {"from": old, "to": new}


def _prompt_diff(name: str, old_text: str, new_text: str, old_v: str, new_v: str) -> tuple[str, int, int]:
    lines = list(difflib.unified_diff(
        old_text.splitlines(), new_text.splitlines(),
        fromfile=f"{old_v}/prompts.{name}", tofile=f"{new_v}/prompts.{name}", lineterm="",
    ))
    body = lines[2:]  # after the ---/+++ header lines
    plus = sum(1 for ln in body if ln.startswith("+"))
    minus = sum(1 for ln in body if ln.startswith("-"))
    return "\n".join(lines), plus, minus


def _empty(baseline: str | None, version: str, reason: str) -> dict[str, Any]:
    return {
        "baseline": baseline, "version": version, "known": False, "reason": reason,
        "model": None, "provider": None, "prompts": {},
        "parameters": {"added": {}, "removed": {}, "changed": {}},
        "tools": {"added": [], "removed": [], "changed": []},
        "retrieval": {"added": {}, "removed": {}, "changed": {}},
        "code_revision": None, "notes": None, "summary": [reason],
    }


def diff_manifests(
    old: Manifest | None,
    new: Manifest,
    *,
    new_has_manifest: bool = True,
    old_has_manifest: bool = True,
) -> dict[str, Any]:
    """What changed from release `old` (the baseline; None for a workflow's first release) to
    `new`. Set `new_has_manifest=False` for a release registered by an import without a manifest
    (its placeholder Manifest says nothing), and `old_has_manifest=False` when the baseline is
    such a release: the diff is then `known: False` with the reason, and empty sections.

    Returns {baseline, version, known, reason, model, provider, prompts, parameters, tools,
    retrieval, code_revision, notes, summary}; see the README section "What changed"."""
    baseline = old.version if old is not None else None
    if old is None:
        return _empty(None, new.version, NO_BASELINE)
    if not new_has_manifest:
        return _empty(baseline, new.version, NO_MANIFEST)
    if not old_has_manifest:
        return _empty(baseline, new.version, BASELINE_NO_MANIFEST)

    summary: list[str] = []
    model = _from_to(old.model, new.model)
    if model:
        summary.append(f"model {model['from']} -> {model['to']}")
    provider = _from_to(old.provider, new.provider)
    if provider:
        summary.append(f"provider {provider['from']} -> {provider['to']}")

    prompts: dict[str, dict[str, Any]] = {}
    for name in list(old.prompts) + [n for n in new.prompts if n not in old.prompts]:
        before, after = old.prompts.get(name), new.prompts.get(name)
        if before == after:
            continue
        status = "added" if before is None else "removed" if after is None else "changed"
        text, plus, minus = _prompt_diff(name, before or "", after or "", old.version, new.version)
        prompts[name] = {"status": status, "unified_diff": text, "lines_added": plus, "lines_removed": minus}
        if status == "added":
            summary.append(f"prompt {name} added ({_lines(plus)})")
        elif status == "removed":
            summary.append(f"prompt {name} removed ({_lines(minus)})")
        else:
            summary.append(f"prompt {name} changed (+{plus} -{minus} lines)")

    parameters = _mapping_diff(old.parameters, new.parameters)
    retrieval = _mapping_diff(old.retrieval, new.retrieval)
    for label, d in (("parameter", parameters), ("retrieval", retrieval)):
        for k, v in d["changed"].items():
            summary.append(f"{label} {k} {_short(v['from'])} -> {_short(v['to'])}")
        for k, v in d["added"].items():
            summary.append(f"{label} {k} added ({_short(v)})")
        for k, v in d["removed"].items():
            summary.append(f"{label} {k} removed (was {_short(v)})")

    old_tools = {t.get("name"): t for t in old.tools}
    new_tools = {t.get("name"): t for t in new.tools}
    tools: dict[str, list[Any]] = {
        "added": [n for n in new_tools if n not in old_tools],
        "removed": [n for n in old_tools if n not in new_tools],
        "changed": [],
    }
    for tool_name, tool in new_tools.items():
        if tool_name in old_tools and _canon(old_tools[tool_name]) != _canon(tool):
            old_tool = old_tools[tool_name]
            fields = sorted(k for k in set(old_tool) | set(tool) if _canon(old_tool.get(k)) != _canon(tool.get(k)))
            tools["changed"].append({"name": tool_name, "fields": fields})
    summary += [f"tool {n} added" for n in tools["added"]]
    summary += [f"tool {n} removed" for n in tools["removed"]]
    summary += [f"tool {t['name']} changed ({', '.join(t['fields'])})" for t in tools["changed"]]

    code_revision = _from_to(old.code_revision, new.code_revision)
    if code_revision:
        summary.append(f"code revision {code_revision['from']} -> {code_revision['to']}")
    notes = _from_to(old.notes, new.notes)
    if notes:
        summary.append("notes changed")
    if not summary:
        summary.append(f"no changes from {old.version}")

    return {
        "baseline": baseline, "version": new.version, "known": True, "reason": None,
        "model": model, "provider": provider, "prompts": prompts, "parameters": parameters,
        "tools": tools, "retrieval": retrieval, "code_revision": code_revision, "notes": notes,
        "summary": summary,
    }


def diff_markdown(diff: dict[str, Any], *, heading: str = "###", max_diff_lines: int = 200) -> str:
    """A short markdown section for a diff from `diff_manifests`: the summary as a list, then
    each prompt's unified diff in a fenced block (at most `max_diff_lines` lines each). Every
    value from the manifests is escaped; the fences are longer than any backtick run inside."""
    baseline = diff.get("baseline")
    title = f"{heading} What changed" + (f" since {escape_md(baseline)}" if baseline else "")
    out = [title, ""]
    if not diff.get("known"):
        out.append(f"_Unknown_: {escape_md(diff.get('reason') or 'no comparison available')}")
        return "\n".join(out) + "\n"
    out += [f"- {escape_md(line)}" for line in diff.get("summary", [])]
    for name, p in (diff.get("prompts") or {}).items():
        lines = p["unified_diff"].splitlines()
        shown = lines[:max_diff_lines]
        text = "\n".join(shown)
        out += ["", f"**Prompt {escape_md(name)}** ({escape_md(p['status'])})", "", *fenced_block(text, "diff")]
        if len(lines) > len(shown):
            out.append(f"_… {len(lines) - len(shown)} more diff lines_")
    return "\n".join(out) + "\n"
