"""Release manifests: loading and validating `<home>/releases/<workflow>/<version>.yaml`,
rendering a case's chat messages from the manifest's prompt templates, and immutability.

A manifest::

    workflow: support-triage
    version: v1.3.0
    model: gpt-4o-mini                       # required
    provider: openai
    prompts:
      system: "You triage support tickets."
      user: {file: prompts/triage-user.txt}  # relative to the manifest file; read at load
    parameters: {temperature: 0.2, max_tokens: 512}
    tools: [{name: lookup_order, description: "Find an order by id"}]
    retrieval: {top_k: 4, index: docs-2026-10}
    code_revision: 3f2c1ab
    notes: "JSON mode"

Unknown top-level keys are errors (a typo such as `paramters:` must not pass silently). When
the file lies in `<...>/releases/<workflow>/`, the workflow must match the folder and the
version the file name. The content hash covers the resolved template text, so editing a
template file changes the release's hash just as editing the YAML does.

Templates use `{{ name }}` placeholders (letters, digits, '_'), filled from the case's
`input.vars` by a single regex pass: no template engine, no expressions, no code execution, and
a value that itself contains `{{ x }}` is inserted literally. Text in braces that is not a
placeholder (`{{ a.b }}`, `{"json": 1}`) is left as it is.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .model import Case, Manifest
from .suites import (
    Problem,
    YamlDoc,
    describe_type,
    key_problem,
    read_yaml,
    suggest_next_version,
    unknown_key_message,
)

MANIFEST_KEYS = (
    "workflow", "version", "model", "provider", "prompts", "parameters", "tools", "retrieval",
    "code_revision", "notes",
)
PLACEHOLDER_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
PROMPT_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")


class ManifestError(ValueError):
    """A manifest could not be loaded or may not be registered; `problems` lists every reason."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        n = len(self.problems)
        lines = [f"{n} problem{'s' if n != 1 else ''} in release manifest:"] + [f"  {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class RenderError(ValueError):
    """A case's messages cannot be rendered from the manifest (e.g. a missing variable)."""


# ---------------------------------------------------------------------------------------------
# Loading


def _opt_str(problems: list[Problem], file: str, field: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    hint = f": quote it ({field}: \"{value}\") so YAML keeps it as written" if isinstance(value, (int, float)) else ""
    problems.append(Problem(file, None, field, f"must be a string, got {describe_type(value)}{hint}"))
    return None


def _str_key_mapping(problems: list[Problem], file: str, field: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(Problem(file, None, field, f"must be a mapping, got {describe_type(value)}"))
        return {}
    for k in value:
        if not isinstance(k, str):
            problems.append(Problem(file, None, field, f"keys must be strings, got {k!r}"))
    return value


def _load_prompts(problems: list[Problem], path: Path, value: Any, doc: YamlDoc) -> dict[str, str]:
    file = str(path)
    prompts: dict[str, str] = {}
    if value is None:
        return prompts
    if not isinstance(value, dict):
        problems.append(Problem(file, None, "prompts", f"must be a mapping of name to template, got {describe_type(value)}"))
        return prompts
    for name, spec in value.items():
        field = f"prompts.{name}"
        if not isinstance(name, str) or not PROMPT_NAME_RE.match(name):
            problems.append(Problem(file, None, field, "a prompt name is 1-64 characters of letters, digits, '_', '.' and '-'"))
            continue
        if isinstance(spec, str):
            prompts[name] = spec
        elif isinstance(spec, dict):
            line = doc.line_of(spec)
            extra = [k for k in spec if k != "file"]
            if extra or "file" not in spec:
                problems.append(Problem(file, None, field, "a template by file is written {file: path/relative/to/manifest}", line))
                continue
            rel = spec["file"]
            if not isinstance(rel, str) or not rel.strip():
                problems.append(Problem(file, None, field + ".file", "must be a path relative to the manifest file", line))
                continue
            template_path = path.parent / rel
            if not template_path.is_file():
                problems.append(Problem(file, None, field + ".file", f"template file not found: {template_path}", line))
                continue
            try:
                prompts[name] = template_path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(Problem(file, None, field + ".file", f"cannot read template file {template_path}: {exc}", line))
        else:
            problems.append(Problem(file, None, field, f"must be a template string or {{file: path}}, got {describe_type(spec)}"))
    return prompts


def _load_tools(problems: list[Problem], file: str, value: Any, doc: YamlDoc) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(Problem(file, None, "tools", f"must be a list of {{name, description?, schema?}}, got {describe_type(value)}"))
        return []
    seen: dict[str, int] = {}
    for i, tool in enumerate(value):
        field = f"tools[{i}]"
        if not isinstance(tool, dict):
            problems.append(Problem(file, None, field, f"must be a mapping with a name, got {describe_type(tool)}"))
            continue
        line = doc.line_of(tool)
        name = tool.get("name")
        if not isinstance(name, str) or not name.strip():
            problems.append(Problem(file, None, field + ".name", "is required: a non-empty string", line))
        elif name in seen:
            problems.append(Problem(file, None, field + ".name", f"duplicate tool name {name!r} (also tools[{seen[name]}])", line))
        else:
            seen[name] = i
        if "description" in tool and not isinstance(tool["description"], str):
            problems.append(Problem(file, None, field + ".description",
                                    f"must be a string, got {describe_type(tool['description'])}", line))
        if "schema" in tool and not isinstance(tool["schema"], dict):
            problems.append(Problem(file, None, field + ".schema",
                                    f"must be a mapping (JSON Schema), got {describe_type(tool['schema'])}", line))
    return value


def _parse_manifest(path: Path) -> tuple[Manifest | None, list[Problem]]:
    path = Path(path)
    file = str(path)
    doc = read_yaml(path)
    problems = list(doc.problems)
    data = doc.data
    if data is None:
        if not problems:
            problems.append(Problem(file, None, None, "the file is empty"))
        return None, problems
    if not isinstance(data, dict):
        problems.append(Problem(file, None, None, f"a release manifest must be a mapping, got {describe_type(data)}"))
        return None, problems

    for key in data:
        if key not in MANIFEST_KEYS:
            problems.append(Problem(file, None, str(key), unknown_key_message(key, MANIFEST_KEYS)))
    workflow, version = data.get("workflow"), data.get("version")
    for kind, value in (("workflow", workflow), ("version", version)):
        if value is None:
            problems.append(Problem(file, None, kind, "is required"))
        elif (msg := key_problem(kind, value)) is not None:
            problems.append(Problem(file, None, kind, msg))
    if path.parent.parent.name == "releases":
        if isinstance(workflow, str) and workflow != path.parent.name:
            problems.append(Problem(file, None, "workflow",
                                    f"is {workflow!r} but the file is in the folder of workflow {path.parent.name!r}"))
        if isinstance(version, str) and version != path.stem:
            problems.append(Problem(file, None, "version", f"is {version!r} but the file is named {path.name!r}: name it {version}.yaml"))

    model = data.get("model")
    if model is None:
        problems.append(Problem(file, None, "model", "is required (the model name the release calls)"))
    elif not isinstance(model, str) or not model.strip():
        problems.append(Problem(file, None, "model", f"must be a non-empty string, got {model!r}"))
    provider = _opt_str(problems, file, "provider", data.get("provider"))
    code_revision = _opt_str(problems, file, "code_revision", data.get("code_revision"))
    notes = _opt_str(problems, file, "notes", data.get("notes"))
    prompts = _load_prompts(problems, path, data.get("prompts"), doc)
    parameters = _str_key_mapping(problems, file, "parameters", data.get("parameters"))
    retrieval = _str_key_mapping(problems, file, "retrieval", data.get("retrieval"))
    tools = _load_tools(problems, file, data.get("tools"), doc)

    if problems:
        return None, problems
    # checked above: a problem was recorded otherwise
    assert isinstance(workflow, str) and isinstance(version, str) and isinstance(model, str)
    manifest = Manifest(
        workflow=workflow, version=version, model=model, provider=provider, prompts=prompts,
        parameters=parameters, tools=tools, retrieval=retrieval, code_revision=code_revision,
        notes=notes,
    )
    manifest.content_hash = manifest.compute_hash()
    return manifest, []


def validate_manifest_file(path: Path) -> list[Problem]:
    """Every problem in one release manifest file (empty when it is valid)."""
    return _parse_manifest(Path(path))[1]


def load_manifest(path: Path) -> Manifest:
    """Load and validate a release manifest, reading `{file: ...}` templates relative to it;
    sets `content_hash`. Raises ManifestError listing every problem."""
    manifest, problems = _parse_manifest(Path(path))
    if manifest is None:
        raise ManifestError(problems)
    return manifest


def manifest_from_content(content: dict[str, Any]) -> Manifest:
    """Rebuild a Manifest from `Manifest.content()` (e.g. as stored in the warehouse as JSON);
    sets `content_hash`. Unknown keys raise ManifestError."""
    unknown = [k for k in content if k not in MANIFEST_KEYS]
    if unknown:
        raise ManifestError([Problem("<stored manifest>", None, str(k), unknown_key_message(k, MANIFEST_KEYS)) for k in unknown])
    manifest = Manifest(**{k: v for k, v in content.items()})
    manifest.content_hash = manifest.compute_hash()
    return manifest


def check_immutable(manifest: Manifest, recorded_hash: str | None, *, file: str | None = None) -> None:
    """Raise ManifestError when a release that is already registered (its hash recorded) comes
    back with different content. `recorded_hash=None` means not registered yet."""
    current = manifest.content_hash or manifest.compute_hash()
    if recorded_hash is None or current == recorded_hash:
        return
    nxt = suggest_next_version(manifest.version)
    example = f" (e.g. version: {nxt})" if nxt else ""
    message = (
        f"release {manifest.workflow} {manifest.version} is already registered with content hash "
        f"{recorded_hash[:12]}, and this manifest differs (now {current[:12]}). A registered manifest is "
        f"immutable: restore it, and register the change as a new version{example}."
    )
    raise ManifestError([Problem(file or f"releases/{manifest.workflow}/{manifest.version}.yaml", None, None, message)])


# ---------------------------------------------------------------------------------------------
# Rendering


def template_variables(template: str) -> list[str]:
    """The placeholder names a template uses, in order of first use."""
    return list(dict.fromkeys(PLACEHOLDER_RE.findall(template)))


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def render_template(template: str, variables: dict[str, Any], *, case_id: str = "?", name: str = "?") -> str:
    """Fill `{{ name }}` placeholders from `variables` (strings as they are, other values as
    compact JSON). Raises RenderError naming the case, the template and every missing variable."""
    missing = [v for v in template_variables(template) if v not in variables]
    if missing:
        have = ", ".join(sorted(map(str, variables))) or "none"
        raise RenderError(
            f"case {case_id}: prompt template {name!r} uses "
            f"{', '.join('{{ ' + m + ' }}' for m in missing)} but input.vars has no "
            f"{', '.join(repr(m) for m in missing)} (it has: {have})"
        )
    return PLACEHOLDER_RE.sub(lambda m: _as_text(variables[m.group(1)]), template)


def render_messages(manifest: Manifest, case: Case) -> list[dict[str, Any]]:
    """The chat messages for one case: the system prompt (prompts.system) first when the
    manifest has one, then the case's own messages when its input has `messages`, else the user
    template (prompts.user) rendered with the case's `input.vars`. Other prompts are not used
    here. Raises RenderError for a missing variable or a vars case without a user template."""
    variables = case.input.get("vars") or {}
    messages: list[dict[str, Any]] = []
    if "system" in manifest.prompts:
        messages.append({"role": "system", "content": render_template(
            manifest.prompts["system"], variables, case_id=case.id, name="system")})
    if "messages" in case.input:
        messages.extend(dict(m) for m in case.input["messages"])
    else:
        if "user" not in manifest.prompts:
            raise RenderError(
                f"case {case.id}: its input has vars but release {manifest.workflow} {manifest.version} "
                f"has no prompts.user template to render them into"
            )
        messages.append({"role": "user", "content": render_template(
            manifest.prompts["user"], variables, case_id=case.id, name="user")})
    return messages
