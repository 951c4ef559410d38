"""Eval suites: loading and validating `<home>/suites/<workflow>/<version>.yaml`.

A suite file::

    workflow: support-triage
    version: v3                 # = the file stem; key rules of model.validate_key
    changelog:                  # required from the workflow's second version on
      - "v1: 80 curated cases"
      - "v3: +2 cases from incident inc-12"
    cases:                      # or `cases_file: cases.jsonl` (relative to the suite file)
      - id: billing-refund-001
        input: {vars: {ticket: "I was charged twice"}}
        expected: {fields: {category: billing}, contains: ["refund"]}
        tags: [billing]
        must_pass: true
        provenance: curated     # curated | incident:<id> | imported:<source>

Validation reports every problem in a file at once (`validate_suite_file`), each naming the
file, the case id and the dotted field (`cases[3].expected.json_schema`, 0-based index), so
`relops suite validate` can print them all. `load_suite` raises `SuiteError` with the same list.

Versions sort in natural order (`version_sort_key`): digit runs compare as numbers, so
v2 < v10 and 1.2.0 < 1.10.0. This is not semver: 1.0.0 sorts before 1.0.0-rc1.

This module also holds the pieces manifests.py shares: `Problem` and the strict YAML reader
(duplicate keys are problems, dates stay strings, line numbers are kept).
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from .model import Case, Suite, validate_key

SUITE_KEYS = ("workflow", "version", "changelog", "cases", "cases_file")
CASE_KEYS = ("id", "input", "expected", "tags", "must_pass", "provenance")
EXPECTED_KEYS = (
    "reference", "contains", "not_contains", "regex", "json_schema", "fields", "number",
    "tolerance", "judge_rubric",
)
MESSAGE_ROLES = ("system", "developer", "user", "assistant", "tool")
CASE_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}\Z")
# Template variables must be usable as `{{ name }}` placeholders (manifests.PLACEHOLDER_RE).
VAR_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
PROVENANCE_RE = re.compile(r"^(curated|incident:\S+|imported:\S+)\Z")
YAML_SUFFIXES = (".yaml", ".yml")


# ---------------------------------------------------------------------------------------------
# Problems and errors


@dataclass
class Problem:
    """One thing wrong with a suite or manifest file. `field` is a dotted path into the
    document (`cases[3].expected.regex`); `line` is 1-based when known."""

    file: str
    case_id: str | None
    field: str | None
    message: str
    line: int | None = None

    def __str__(self) -> str:
        head = self.file + (f":{self.line}" if self.line else "")
        parts = [head] + [p for p in (self.case_id, self.field) if p]
        return ":".join(parts) + ": " + self.message

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SuiteError(ValueError):
    """A suite could not be loaded or may not be used; `problems` lists every reason."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        n = len(self.problems)
        lines = [f"{n} problem{'s' if n != 1 else ''} in suite:"] + [f"  {p}" for p in self.problems]
        super().__init__("\n".join(lines))


# ---------------------------------------------------------------------------------------------
# Strict YAML


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that records mapping line numbers and duplicate keys, and keeps
    timestamps as strings (a date in a prompt parameter must stay JSON-serialisable)."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.mapping_lines: dict[int, int] = {}
        self.duplicates: list[tuple[int, Any]] = []

    def construct_strict_map(self, node: yaml.MappingNode):
        data: dict[Any, Any] = {}
        yield data
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = key_node.value
                if key in seen:
                    self.duplicates.append((key_node.start_mark.line + 1, key))
                seen.add(key)
        data.update(self.construct_mapping(node))
        self.mapping_lines[id(data)] = node.start_mark.line + 1

    def construct_timestamp_as_str(self, node: yaml.ScalarNode) -> str:
        return self.construct_scalar(node)


_StrictLoader.add_constructor("tag:yaml.org,2002:map", _StrictLoader.construct_strict_map)
_StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", _StrictLoader.construct_timestamp_as_str)


@dataclass
class YamlDoc:
    """A parsed YAML file: the data, line numbers of its mappings, and its problems."""

    data: Any
    problems: list[Problem]
    mapping_lines: dict[int, int]

    def line_of(self, obj: Any) -> int | None:
        return self.mapping_lines.get(id(obj))


def read_yaml(path: Path) -> YamlDoc:
    """Parse one YAML document strictly. A YAML error becomes a problem with its line;
    duplicate keys become problems (YAML would silently keep the last one)."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return YamlDoc(None, [Problem(file, None, None, f"cannot read file: {exc}")], {})
    loader = _StrictLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        what = " ".join(str(x) for x in (getattr(exc, "context", None), getattr(exc, "problem", None)) if x)
        message = f"YAML syntax error: {what or exc}"
        return YamlDoc(None, [Problem(file, None, None, message, mark.line + 1 if mark else None)], {})
    finally:
        loader.dispose()
    problems = [
        Problem(file, None, None, f"duplicate key {key!r}: YAML would keep only the last one", line)
        for line, key in loader.duplicates
    ]
    return YamlDoc(data, problems, loader.mapping_lines)


def unknown_key_message(key: Any, known: tuple[str, ...] | list[str]) -> str:
    """'unknown key ...' with a did-you-mean hint, so typos do not pass silently."""
    close = difflib.get_close_matches(str(key), list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {key!r}{hint}; allowed: {', '.join(known)}"


def key_problem(kind: str, value: Any) -> str | None:
    """The message of model.validate_key for a bad workflow/version, or None when valid."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{kind} must be a string: quote it ({kind}: \"{value}\") so YAML keeps it as written"
    try:
        validate_key(kind, value)
    except ValueError as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------------------------------------
# Versions


def version_sort_key(version: str) -> tuple:
    """Natural order: digit runs compare as numbers (v2 < v10, 1.2.0 < 1.10.0); the raw string
    breaks ties (v02 vs v2). Not semver: a suffix sorts after the bare version."""
    parts = re.split(r"(\d+)", version)
    # re.split with a capture group alternates text, digits, text...: types line up by position.
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), version


def _mentions(line: str, version: str) -> bool:
    tokens = (t.rstrip("._-") for t in re.findall(r"[a-z0-9_.-]+", line.lower()))
    return version in tokens


def suggest_next_version(version: str) -> str | None:
    """The version with its last number incremented (v3 -> v4, 1.2.9 -> 1.2.10), for messages."""
    m = re.search(r"(\d+)(?!.*\d)", version)
    if not m:
        return None
    return version[: m.start()] + str(int(m.group(1)) + 1) + version[m.end():]


# ---------------------------------------------------------------------------------------------
# Validation


class _Ctx:
    """Collects problems for one file."""

    def __init__(self, file: str):
        self.file = file
        self.problems: list[Problem] = []

    def add(self, case_id: str | None, field: str | None, message: str, line: int | None = None) -> None:
        self.problems.append(Problem(self.file, case_id, field, message, line))


def describe_type(v: Any) -> str:
    """'a mapping', 'a list', ... for 'must be X, got Y' messages."""
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "empty"}.get(type(v), type(v).__name__)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_str_list(ctx: _Ctx, cid, field, value, line, *, nonempty_items: bool = True) -> None:
    if not isinstance(value, list):
        ctx.add(cid, field, f"must be a list of strings, got {describe_type(value)} (write [a, b])", line)
        return
    for j, item in enumerate(value):
        if not isinstance(item, str):
            ctx.add(cid, f"{field}[{j}]", f"must be a string, got {describe_type(item)}", line)
        elif nonempty_items and not item:
            ctx.add(cid, f"{field}[{j}]", "must not be empty", line)


def _check_messages(ctx: _Ctx, cid, field, messages, line) -> None:
    if not isinstance(messages, list) or not messages:
        got = "an empty list" if isinstance(messages, list) else describe_type(messages)
        ctx.add(cid, field, f"must be a non-empty list of {{role, content}} mappings, got {got}", line)
        return
    for j, msg in enumerate(messages):
        f = f"{field}[{j}]"
        if not isinstance(msg, dict):
            ctx.add(cid, f, f"must be a mapping with role and content, got {describe_type(msg)}", line)
            continue
        role = msg.get("role")
        if role not in MESSAGE_ROLES:
            ctx.add(cid, f + ".role", f"must be one of {', '.join(MESSAGE_ROLES)}, got {role!r}", line)
        if "content" not in msg:
            ctx.add(cid, f + ".content", "is required", line)
        else:
            content = msg["content"]
            if isinstance(content, list):
                for k, part in enumerate(content):
                    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                        ctx.add(cid, f"{f}.content[{k}]", "a content part must be a mapping with a 'type'", line)
            elif not isinstance(content, str):
                ctx.add(cid, f + ".content", f"must be a string or a list of content parts, got {describe_type(content)}", line)


def _check_input(ctx: _Ctx, cid, field, value, line) -> None:
    if not isinstance(value, dict):
        ctx.add(cid, field, f"must be a mapping with `vars` or `messages`, got {describe_type(value)}", line)
        return
    for key in value:
        if key not in ("vars", "messages"):
            ctx.add(cid, f"{field}.{key}", unknown_key_message(key, ("vars", "messages")), line)
    has_vars, has_messages = "vars" in value, "messages" in value
    if has_vars == has_messages:
        ctx.add(cid, field, "must have exactly one of `vars` (template variables) or `messages` (chat messages)", line)
    if has_vars:
        variables = value["vars"]
        if not isinstance(variables, dict):
            ctx.add(cid, f"{field}.vars", f"must be a mapping of variable name to value, got {describe_type(variables)}", line)
        else:
            for name in variables:
                if not isinstance(name, str) or not VAR_NAME_RE.match(name):
                    ctx.add(cid, f"{field}.vars", f"variable name {name!r} is not usable as a {{{{ name }}}} "
                            "placeholder: use letters, digits and '_', not starting with a digit", line)
    if has_messages:
        _check_messages(ctx, cid, f"{field}.messages", value["messages"], line)


def _check_expected(ctx: _Ctx, cid, field, value, line) -> None:
    if not isinstance(value, dict):
        ctx.add(cid, field, f"must be a mapping, got {describe_type(value)}", line)
        return
    for key, v in value.items():
        f = f"{field}.{key}"
        if key not in EXPECTED_KEYS:
            ctx.add(cid, f, unknown_key_message(key, EXPECTED_KEYS), line)
        elif key in ("reference", "judge_rubric"):
            if not isinstance(v, str) or not v.strip():
                ctx.add(cid, f, f"must be a non-empty string, got {describe_type(v)}", line)
        elif key in ("contains", "not_contains"):
            _check_str_list(ctx, cid, f, v, line)
        elif key == "regex":
            if not isinstance(v, str):
                ctx.add(cid, f, f"must be a string, got {describe_type(v)}", line)
            else:
                try:
                    re.compile(v)
                except re.error as exc:
                    ctx.add(cid, f, f"invalid regular expression: {exc}", line)
        elif key == "json_schema":
            _check_json_schema(ctx, cid, f, v, line)
        elif key == "fields":
            if not isinstance(v, dict) or not v:
                ctx.add(cid, f, f"must be a non-empty mapping of dotted path to expected value, got {describe_type(v)}", line)
            else:
                for path in v:
                    if not isinstance(path, str) or not path or any(not p for p in path.split(".")):
                        ctx.add(cid, f, f"field path {path!r} must be a dotted path like 'a.b'", line)
        elif key == "number":
            if not _is_number(v):
                ctx.add(cid, f, f"must be a number, got {describe_type(v)}", line)
        elif key == "tolerance":
            if not _is_number(v) or v < 0:
                ctx.add(cid, f, f"must be a number >= 0, got {v!r}", line)
            elif "number" not in value:
                ctx.add(cid, f, "tolerance without `number` has nothing to apply to", line)


def _check_json_schema(ctx: _Ctx, cid, field, schema, line) -> None:
    if not isinstance(schema, dict):
        ctx.add(cid, field, f"must be a JSON Schema mapping, got {describe_type(schema)}", line)
        return
    # Imported here: jsonschema costs ~0.1 s to import and most callers never reach this.
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    # Without $schema jsonschema picks the latest draft; an unknown $schema only warns there.
    # type: ignore: validator_for returns `default` as given for an unknown $schema; its annotation only allows a class
    cls = validator_for(schema, default=None) if "$schema" in schema else validator_for(schema)  # type: ignore[arg-type]
    if cls is None:
        ctx.add(cid, field, f"unknown $schema {schema.get('$schema')!r}", line)
        return
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        ctx.add(cid, field, f"not a valid JSON Schema{f' at {where}' if where else ''}: {exc.message}", line)


def _check_case(ctx: _Ctx, i: int, raw: Any, line: int | None, seen: dict[str, int]) -> Case | None:
    """Validate one case mapping; returns the Case when it has no problems."""
    before = len(ctx.problems)
    base = f"cases[{i}]"
    if not isinstance(raw, dict):
        ctx.add(None, base, f"a case must be a mapping, got {describe_type(raw)}", line)
        return None
    cid_raw = raw.get("id")
    cid = str(cid_raw) if isinstance(cid_raw, (str, int, float)) and not isinstance(cid_raw, bool) else None
    if "id" not in raw:
        ctx.add(None, f"{base}.id", "is required", line)
    elif not isinstance(cid_raw, str):
        ctx.add(cid, f"{base}.id", f"must be a string (quote it), got {describe_type(cid_raw)}", line)
    elif not CASE_ID_RE.match(cid_raw):
        ctx.add(cid, f"{base}.id", "must be 1-128 characters of A-Z, a-z, 0-9, '_', '.', ':' and '-'", line)
    elif cid_raw in seen:
        ctx.add(cid, f"{base}.id", f"duplicate case id (also cases[{seen[cid_raw]}])", line)
    else:
        seen[cid_raw] = i
    for key in raw:
        if key not in CASE_KEYS:
            ctx.add(cid, f"{base}.{key}", unknown_key_message(key, CASE_KEYS), line)
    if "input" not in raw:
        ctx.add(cid, f"{base}.input", "is required", line)
    else:
        _check_input(ctx, cid, f"{base}.input", raw["input"], line)
    expected = raw.get("expected", {})
    if expected is None:
        expected = {}
    _check_expected(ctx, cid, f"{base}.expected", expected, line)
    tags = raw.get("tags", [])
    if tags is None:
        tags = []
    _check_str_list(ctx, cid, f"{base}.tags", tags, line)
    must_pass = raw.get("must_pass", False)
    if not isinstance(must_pass, bool):
        ctx.add(cid, f"{base}.must_pass", f"must be true or false, got {must_pass!r}", line)
    provenance = raw.get("provenance", "curated")
    if not isinstance(provenance, str) or not PROVENANCE_RE.match(provenance):
        ctx.add(cid, f"{base}.provenance",
                f"must be curated, incident:<id> or imported:<source>, got {provenance!r}", line)
    if len(ctx.problems) > before:
        return None
    assert isinstance(cid_raw, str)  # checked above: a problem was recorded otherwise
    return Case(id=cid_raw, input=raw["input"], expected=expected, tags=list(tags),
                must_pass=must_pass, provenance=provenance)


def _read_cases_file(ctx: _Ctx, suite_path: Path, value: Any) -> list[tuple[Any, int | None, str]] | None:
    """Raw case objects from a JSONL cases_file, each with its line and file."""
    if not isinstance(value, str) or not value.strip():
        ctx.add(None, "cases_file", f"must be a path relative to the suite file, got {describe_type(value)}")
        return None
    cases_path = suite_path.parent / value
    try:
        text = cases_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        ctx.add(None, "cases_file", f"cannot read {cases_path}: {exc}")
        return None
    out: list[tuple[Any, int | None, str]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((json.loads(line), n, str(cases_path)))
        except json.JSONDecodeError as exc:
            ctx.problems.append(Problem(str(cases_path), None, f"cases[{len(out)}]", f"invalid JSON: {exc.msg}", n))
            out.append((None, n, "skip"))
    return out


def _sibling_versions(path: Path) -> list[str]:
    return [
        p.stem for p in path.parent.iterdir()
        if p.suffix in YAML_SUFFIXES and p.stem != path.stem and key_problem("version", p.stem) is None
    ]


def _parse_suite(path: Path) -> tuple[Suite | None, list[Problem]]:
    path = Path(path)
    file = str(path)
    doc = read_yaml(path)
    ctx = _Ctx(file)
    ctx.problems.extend(doc.problems)
    data = doc.data
    if data is None and not doc.problems:
        ctx.add(None, None, "the file is empty")
    if data is None:
        return None, ctx.problems
    if not isinstance(data, dict):
        ctx.add(None, None, f"a suite file must be a mapping with workflow, version and cases, got {describe_type(data)}")
        return None, ctx.problems

    for key in data:
        if key not in SUITE_KEYS:
            ctx.add(None, str(key), unknown_key_message(key, SUITE_KEYS))
    workflow, version = data.get("workflow"), data.get("version")
    for kind, value in (("workflow", workflow), ("version", version)):
        if value is None:
            ctx.add(None, kind, "is required")
        elif (msg := key_problem(kind, value)) is not None:
            ctx.add(None, kind, msg)
    if isinstance(workflow, str) and path.parent.parent.name == "suites" and workflow != path.parent.name:
        ctx.add(None, "workflow", f"is {workflow!r} but the file is in the folder of workflow {path.parent.name!r}")
    if isinstance(version, str) and version != path.stem:
        ctx.add(None, "version", f"is {version!r} but the file is named {path.name!r}: name it {version}.yaml")

    changelog_raw = data.get("changelog", [])
    changelog: list[str] = []
    if changelog_raw is None:
        changelog_raw = []
    if not isinstance(changelog_raw, list):
        ctx.add(None, "changelog", f"must be a list of lines, got {describe_type(changelog_raw)}")
    else:
        for j, entry in enumerate(changelog_raw):
            # `- v3: added cases` without quotes is a one-key mapping: take it as the line it reads as.
            if isinstance(entry, dict) and len(entry) == 1:
                (k, v), = entry.items()
                entry = f"{k}: {v}"
            if not isinstance(entry, str):
                ctx.add(None, f"changelog[{j}]", f"must be a string, got {describe_type(entry)}")
            else:
                changelog.append(entry)
    if isinstance(workflow, str) and isinstance(version, str) and path.parent.name == workflow \
            and path.parent.is_dir():
        earlier = [v for v in _sibling_versions(path) if version_sort_key(v) < version_sort_key(version)]
        if earlier and not any(_mentions(line, version) for line in changelog):
            ctx.add(None, "changelog", f"needs a line for {version} (this workflow has earlier suite "
                    f"versions: {', '.join(sorted(earlier, key=version_sort_key))}), e.g. \"{version}: what changed\"")

    raw_cases: list[tuple[Any, int | None, str]] | None = None
    if "cases" in data and "cases_file" in data:
        ctx.add(None, "cases", "give either `cases` or `cases_file`, not both")
    elif "cases" in data:
        if not isinstance(data["cases"], list):
            ctx.add(None, "cases", f"must be a list of cases, got {describe_type(data['cases'])}")
        else:
            raw_cases = [(c, doc.line_of(c), file) for c in data["cases"]]
    elif "cases_file" in data:
        raw_cases = _read_cases_file(ctx, path, data["cases_file"])
    else:
        ctx.add(None, "cases", "is required (or `cases_file`)")

    cases: list[Case] = []
    if raw_cases is not None:
        if not raw_cases:
            ctx.add(None, "cases", "the suite has no cases")
        seen: dict[str, int] = {}
        for i, (raw, line, case_file) in enumerate(raw_cases):
            if case_file == "skip":
                continue
            case_ctx = _Ctx(case_file)
            case = _check_case(case_ctx, i, raw, line, seen)
            ctx.problems.extend(case_ctx.problems)
            if case is not None:
                cases.append(case)

    if ctx.problems:
        return None, ctx.problems
    assert isinstance(workflow, str) and isinstance(version, str)  # checked above: a problem was recorded otherwise
    suite = Suite(workflow=workflow, version=version, cases=cases, changelog=changelog)
    suite.content_hash = suite.compute_hash()
    return suite, []


# ---------------------------------------------------------------------------------------------
# Public API


def validate_suite_file(path: Path) -> list[Problem]:
    """Every problem in one suite file (empty when it is valid)."""
    return _parse_suite(Path(path))[1]


def load_suite(path: Path) -> Suite:
    """Load and validate a suite file; sets `content_hash`. Raises SuiteError listing every
    problem."""
    suite, problems = _parse_suite(Path(path))
    if suite is None:
        raise SuiteError(problems)
    return suite


def suite_files(path: Path) -> list[Path]:
    """The suite files under a folder (recursively, *.yaml / *.yml), sorted."""
    return sorted(p for p in Path(path).rglob("*") if p.suffix in YAML_SUFFIXES and p.is_file())


def validate_path(path: Path) -> list[Problem]:
    """Every problem in a suite file, or in every suite file under a folder."""
    path = Path(path)
    if path.is_file():
        return validate_suite_file(path)
    if not path.exists():
        return [Problem(str(path), None, None, "no such file or folder")]
    files = suite_files(path)
    if not files:
        return [Problem(str(path), None, None, "no suite files (*.yaml) in this folder")]
    problems: list[Problem] = []
    for f in files:
        problems.extend(validate_suite_file(f))
    return problems


def list_suite_versions(suites_dir: Path, workflow: str) -> list[Suite]:
    """Every suite version of a workflow (`<suites_dir>/<workflow>/*.yaml`), loaded and
    validated, in natural version order (v2 < v10). An invalid file raises SuiteError rather
    than being skipped. No folder means no versions."""
    validate_key("workflow", workflow)
    folder = Path(suites_dir) / workflow
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file()]
    suites = [load_suite(p) for p in files]
    return sorted(suites, key=lambda s: version_sort_key(s.version))


def latest_suite(suites_dir: Path, workflow: str) -> Suite | None:
    """The highest suite version of a workflow in natural order, or None when it has none."""
    versions = list_suite_versions(suites_dir, workflow)
    return versions[-1] if versions else None


def check_immutable(suite: Suite, recorded_hash: str | None, *, file: str | None = None) -> None:
    """Raise SuiteError when a suite version that was already used (its hash recorded in the
    warehouse) no longer has that hash. `recorded_hash=None` means never used: anything goes."""
    current = suite.content_hash or suite.compute_hash()
    if recorded_hash is None or current == recorded_hash:
        return
    nxt = suggest_next_version(suite.version)
    example = f" (e.g. {nxt}.yaml)" if nxt else ""
    message = (
        f"suite {suite.workflow} {suite.version} was already used with content hash "
        f"{recorded_hash[:12]} and its cases have changed (now {current[:12]}). A used suite version is "
        f"immutable: restore it, and put the changes in a new version{example} with a changelog line "
        f"saying what changed."
    )
    raise SuiteError([Problem(file or f"suites/{suite.workflow}/{suite.version}.yaml", None, None, message)])
