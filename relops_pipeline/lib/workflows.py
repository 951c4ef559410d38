"""Workflow configuration: `<home>/workflows/<name>.yaml`.

A workflow is a production LLM workflow (e.g. `support-triage`). Its file names its owner and
delegates (the people who may approve), its on-call group (who may also roll out and roll
back), how its evals run (runner, scorers, samples, suite), and — as later features arrive —
thresholds, rollout and alert policy. Defaults fill whatever a file leaves out.

Recorded versions: every version of a workflow file that a command sees is recorded in the
event log (`workflow_config`, with its hash, the previous hash, a unified diff of the text and a
structured diff of the roles). The roles (owner, delegates, on_call) in force are those of the
last *accepted* version: the first version seen is accepted as it is; a later change of the
roles waits until an approver under the roles in force accepts it (`relops workflow accept`,
a `workflow_config_accepted` event). Until then a role only counts when the file and the
accepted version agree on it, so removing someone takes effect at once and adding someone does
not (see lib/identity.py for who may do what).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from relops_pipeline.lib.evals.model import validate_key

if TYPE_CHECKING:
    import duckdb

DEFAULTS: dict[str, Any] = {
    "owner": None,
    "delegates": [],
    "on_call": [],  # labels who may roll out and roll back besides the owner and delegates
    "description": "",
    # How each eval sample is produced. The python runner calls an import path; see README.
    "runner": {"type": "replay", "file": "evals/{workflow}/{version}.outputs.jsonl"},
    "scorers": [{"type": "exact_match"}, {"type": "contains"}, {"type": "json"}, {"type": "similarity", "threshold": 0.8}],
    "evals": {
        "samples": 3,  # each case is sampled k times: LLM outputs are not deterministic
        "suite": None,  # suite folder name under <home>/suites/; default: the workflow's name
        "max_error_rate": 0.1,  # a run with more errored samples than this is invalid
    },
    "thresholds": {},
    "rollout": {"stages": ["shadow", "canary", "ramp", "full"], "auto_rollback": True},
    "alerts": {"sinks": [{"type": "file"}, {"type": "log"}], "cooldown_minutes": 360},
    # Production drift: see relops_pipeline/lib/drift/config.py for every key and its meaning.
    "drift": {},
}

KNOWN_KEYS = {"name", *DEFAULTS}


class WorkflowError(ValueError):
    """A workflow has no configuration, or its configuration is invalid."""


@dataclass
class Workflow:
    name: str
    owner: str | None
    delegates: list[str]
    on_call: list[str]
    description: str
    runner: dict[str, Any]
    scorers: list[dict[str, Any]]
    evals: dict[str, Any]
    thresholds: dict[str, Any]
    rollout: dict[str, Any]
    alerts: dict[str, Any]
    drift: dict[str, Any]
    path: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def samples(self) -> int:
        return int(self.evals.get("samples") or 3)

    @property
    def suite_name(self) -> str:
        return self.evals.get("suite") or self.name

    @property
    def max_error_rate(self) -> float:
        return float(self.evals.get("max_error_rate", 0.1))

    @property
    def approvers(self) -> list[str]:
        return [p for p in [self.owner, *self.delegates] if p]

    @property
    def roles(self) -> Roles:
        """Who holds which role according to the file (not necessarily in force: see roles_in_force)."""
        return Roles(self.owner, tuple(self.delegates), tuple(self.on_call))


# Sections that a workflow file replaces whole rather than merges key by key (a python runner
# must not inherit the default replay runner's `file`).
REPLACED_WHOLE = {"runner", "scorers"}


def _merge(defaults: dict, given: dict) -> dict:
    out = copy.deepcopy(defaults)
    for k, v in given.items():
        if k not in REPLACED_WHOLE and isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def workflow_path(workflows_dir: Path, name: str) -> Path:
    return workflows_dir / f"{validate_key('workflow', name)}.yaml"


def load_workflow(workflows_dir: Path, name: str) -> Workflow:
    try:
        path = workflow_path(workflows_dir, name)
    except ValueError as exc:
        raise WorkflowError(str(exc)) from None
    if not path.exists():
        raise WorkflowError(
            f"no workflow {name!r} in {workflows_dir}: add it with `relops workflow add {name} --owner NAME`"
        )
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise WorkflowError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise WorkflowError(f"{path}: expected a mapping")
    unknown = sorted(set(doc) - KNOWN_KEYS)
    if unknown:
        raise WorkflowError(f"{path}: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(KNOWN_KEYS))})")
    if doc.get("name", name) != name:
        raise WorkflowError(f"{path}: name {doc['name']!r} does not match the file name {name!r}")
    merged = _merge(DEFAULTS, {k: v for k, v in doc.items() if k != "name"})
    if merged["owner"] is not None and not isinstance(merged["owner"], str):
        raise WorkflowError(f"{path}: owner: expected one name, got {merged['owner']!r}")
    for role in ("delegates", "on_call"):
        if not isinstance(merged[role], list) or not all(isinstance(d, str) and d.strip() for d in merged[role]):
            raise WorkflowError(f"{path}: {role}: expected a list of names, got {merged[role]!r}")
    if not isinstance(merged["evals"].get("samples", 3), int) or merged["evals"].get("samples", 3) < 1:
        raise WorkflowError(f"{path}: evals.samples: expected an integer >= 1")
    if not isinstance(merged["scorers"], list):
        raise WorkflowError(f"{path}: scorers: expected a list")
    if not isinstance(merged["runner"], dict) or "type" not in merged["runner"]:
        raise WorkflowError(f"{path}: runner: expected a mapping with a type")
    if isinstance(merged["alerts"], dict) and merged["alerts"].get("rules") is not None:
        from relops_pipeline.lib.alerts.rule_config import parse_rules

        try:
            parse_rules(merged["alerts"]["rules"], f"{path}: alerts.rules")
        except ValueError as exc:
            raise WorkflowError(str(exc)) from None
    return Workflow(name=name, path=path, raw=doc, **{k: merged[k] for k in DEFAULTS})


def list_workflows(workflows_dir: Path) -> list[str]:
    return sorted(p.stem for p in workflows_dir.glob("*.yaml")) if workflows_dir.is_dir() else []


@dataclass(frozen=True)
class LoadedWorkflows:
    """Every workflow file of a folder: the ones that load, and what is wrong with the others —
    one broken file affects only its own workflow."""

    workflows: tuple[Workflow, ...]
    broken: tuple[tuple[str, str], ...]  # (name, error)

    def warnings(self) -> list[str]:
        return [f"workflow {name} skipped: {error}" for name, error in self.broken]


def load_all(workflows_dir: Path) -> LoadedWorkflows:
    loaded, broken = [], []
    for name in list_workflows(workflows_dir):
        try:
            loaded.append(load_workflow(workflows_dir, name))
        except WorkflowError as exc:
            broken.append((name, str(exc)))
    return LoadedWorkflows(tuple(loaded), tuple(broken))


def add_workflow(workflows_dir: Path, name: str, *, owner: str | None = None,
                 runner: dict[str, Any] | None = None, warnings: list[str] | None = None) -> Path:
    """Write a workflow file with the defaults spelled out; refuse to overwrite one. `runner`
    replaces the default replay runner: checked first (runners.check_runner_config); what may
    only work where evals run is appended to `warnings`."""
    try:
        path = workflow_path(workflows_dir, name)
    except ValueError as exc:
        raise WorkflowError(str(exc)) from None
    if path.exists():
        raise WorkflowError(f"workflow {name!r} already exists: {path}")
    doc = {"name": name, **copy.deepcopy(DEFAULTS)}
    doc["owner"] = owner
    if runner is not None:
        from relops_pipeline.lib.evals.runners import RunnerConfigError, check_runner_config

        try:
            found = check_runner_config(runner)
        except RunnerConfigError as exc:
            raise WorkflowError(f"workflow {name}: {exc}") from None
        doc["runner"] = dict(runner)
        if warnings is not None:
            warnings.extend(found)
    else:
        doc["runner"]["file"] = doc["runner"]["file"].replace("{workflow}", name)
    workflows_dir.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Workflow {name}: written by `relops workflow add` with the defaults spelled out.\n"
        "# owner and delegates may approve releases, on_call may also roll out and back (labels: see\n"
        "# identities in relops.yaml); runner/scorers/evals say how evals run.\n"
    )
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------------
# Roles, and the recorded versions of workflow files

KIND_WORKFLOW_CONFIG = "workflow_config"
KIND_WORKFLOW_CONFIG_ACCEPTED = "workflow_config_accepted"
CONFIG_KINDS = (KIND_WORKFLOW_CONFIG, KIND_WORKFLOW_CONFIG_ACCEPTED)
MAX_DIFF_CHARS = 20_000  # a diff (or file text) longer than this is cut in the event, with a note


@dataclass(frozen=True)
class Roles:
    """Who may do what for one workflow: its owner, delegates and on-call group (labels)."""

    owner: str | None = None
    delegates: tuple[str, ...] = ()
    on_call: tuple[str, ...] = ()

    @property
    def approvers(self) -> tuple[str, ...]:
        """The owner and the delegates: who may approve, override and change what the gate uses."""
        return tuple(dict.fromkeys(p for p in (self.owner, *self.delegates) if p))

    @property
    def operators(self) -> tuple[str, ...]:
        """The approvers, then on-call: who may roll out and roll back (in that order)."""
        return tuple(dict.fromkeys((*self.approvers, *self.on_call)))

    def within(self, other: Roles) -> Roles:
        """These roles, keeping only who holds the same role in `other` too."""
        return Roles(self.owner if self.owner == other.owner else None,
                     tuple(d for d in self.delegates if d in other.delegates),
                     tuple(p for p in self.on_call if p in other.on_call))

    def changes_from(self, before: Roles) -> dict[str, Any]:
        """What changed since `before`, by role: {"owner": {"before", "after"}, "delegates":
        {"added", "removed"}, "on_call": {...}}; empty when nothing did."""
        out: dict[str, Any] = {}
        if self.owner != before.owner:
            out["owner"] = {"before": before.owner, "after": self.owner}
        for role in ("delegates", "on_call"):
            now, then = getattr(self, role), getattr(before, role)
            added, removed = [p for p in now if p not in then], [p for p in then if p not in now]
            if added or removed:
                out[role] = {"added": added, "removed": removed}
        return out

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Roles:
        return cls(d.get("owner"), tuple(d.get("delegates") or ()), tuple(d.get("on_call") or ()))

    @classmethod
    def of_text(cls, text: str) -> Roles | None:
        """The roles a workflow file's text names, or None when the file does not say (not
        YAML, or a role of the wrong shape: such a file does not load as a workflow either)."""
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError:
            return None
        if not isinstance(doc, dict):
            return None
        owner, delegates, on_call = doc.get("owner"), doc.get("delegates") or [], doc.get("on_call") or []
        names = [*delegates, *on_call] if isinstance(delegates, list) and isinstance(on_call, list) else None
        if (owner is not None and not isinstance(owner, str)) or names is None or not all(isinstance(p, str) for p in names):
            return None
        return cls(owner, tuple(delegates), tuple(on_call))


@dataclass(frozen=True)
class RecordedConfig:
    """A workflow's configuration as the event log has it: the last recorded file version
    (`workflow_config`) and the roles in force (from it or a later acceptance)."""

    workflow: str
    hash: str
    text: str
    roles: Roles | None  # as the recorded file names them (None: it did not say)
    in_force: Roles  # as last accepted
    seq: int  # the event the roles in force come from

    @property
    def pending(self) -> bool:
        """The recorded file names other roles than those in force: it waits for acceptance."""
        return self.roles is not None and self.roles != self.in_force


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _cut(text: str) -> str:
    return text if len(text) <= MAX_DIFF_CHARS else text[:MAX_DIFF_CHARS] + f"\n[... cut at {MAX_DIFF_CHARS} characters]\n"


def recorded_configs(con: duckdb.DuckDBPyConnection, workflow: str | None = None) -> dict[str, RecordedConfig]:
    """The recorded configuration of every workflow (or one) the event log has seen."""
    import json

    where, params = "", []
    if workflow is not None:
        where, params = " AND workflow = ?", [workflow]
    rows = con.execute(
        f"SELECT workflow, kind, max(seq), arg_max(payload, seq) FROM events WHERE kind IN (?, ?) "
        f"AND workflow IS NOT NULL{where} GROUP BY workflow, kind", [*CONFIG_KINDS, *params]).fetchall()
    latest: dict[str, dict[str, tuple[int, dict[str, Any]]]] = {}
    for name, kind, seq, payload in rows:
        latest.setdefault(name, {})[kind] = (int(seq), json.loads(payload) if isinstance(payload, str) else payload)
    out = {}
    for name, kinds in latest.items():
        if KIND_WORKFLOW_CONFIG not in kinds:
            continue
        _, version = kinds[KIND_WORKFLOW_CONFIG]
        seq, source = max(kinds.values(), key=lambda sp: sp[0])
        out[name] = RecordedConfig(name, version["hash"], version.get("text") or "",
                                   Roles.from_dict(version["roles"]) if version.get("roles") is not None else None,
                                   Roles.from_dict(source["in_force"]), seq)
    return out


def record_workflow_configs(con: duckdb.DuckDBPyConnection, workflows_dir: Path, *, actor: str) -> list[dict[str, Any]]:
    """Record every workflow file that differs from its last recorded version (or was never
    recorded) as a `workflow_config` event; returns the events written. The first version of a
    workflow is accepted as it is; a later change of roles is recorded as pending (the roles in
    force stay those last accepted). A removed file is not recorded (its workflow cannot be
    used); written again later, it is a change like any other, never a first sight."""
    from relops_pipeline.lib import audit

    recorded = recorded_configs(con)
    events = []
    for name in list_workflows(workflows_dir):
        path = workflows_dir / f"{name}.yaml"
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue  # removed meanwhile: nothing to record
        digest, before = _text_hash(text), recorded.get(name)
        if before is not None and before.hash == digest:
            continue
        roles = Roles.of_text(text)
        # While nobody holds a role in force (first sight, or only versions that named none)
        # there is nobody to ask: the file's roles are taken as they are.
        in_force = before.in_force if before is not None and before.in_force != Roles() else (roles or Roles())
        payload: dict[str, Any] = {
            "file": f"workflows/{path.name}", "hash": digest, "previous_hash": before.hash if before else None,
            "diff": _cut("".join(difflib.unified_diff(
                (before.text if before else "").splitlines(keepends=True), text.splitlines(keepends=True),
                fromfile=f"recorded/{path.name}", tofile=f"workflows/{path.name}"))),
            "text": _cut(text),
            "roles": roles.as_dict() if roles is not None else None,
            "roles_diff": roles.changes_from(before.roles or Roles()) if roles is not None and before else {},
            "in_force": in_force.as_dict(),
            "pending": roles is not None and roles != in_force,
        }
        why = ("first version seen" if before is None else
               "roles changed: pending until an approver accepts it (relops workflow accept)" if payload["pending"]
               else "changed")
        events.append(audit.append_event(con, kind=KIND_WORKFLOW_CONFIG, actor=actor, workflow=name,
                                         reason=f"workflow file {path.name}: {why}", payload=payload))
    return events


def accept_workflow_config(con: duckdb.DuckDBPyConnection, name: str, *, actor: str, reason: str) -> dict[str, Any] | None:
    """Put the roles of the workflow's last recorded version in force (a
    `workflow_config_accepted` event); None when nothing waits. The caller has recorded the
    file first and checked that `actor` is an approver under the roles in force."""
    from relops_pipeline.lib import audit

    recorded = recorded_configs(con, name).get(name)
    if recorded is None or not recorded.pending or recorded.roles is None:
        return None
    payload = {"hash": recorded.hash, "in_force": recorded.roles.as_dict(), "previous_in_force": recorded.in_force.as_dict(),
               "roles_diff": recorded.roles.changes_from(recorded.in_force)}
    return audit.append_event(con, kind=KIND_WORKFLOW_CONFIG_ACCEPTED, actor=actor, workflow=name, reason=reason,
                              payload=payload)


def _checked_record(con: duckdb.DuckDBPyConnection, name: str) -> RecordedConfig | None:
    """The workflow's recorded configuration, its roles' event checked against the audit key
    (audit.TamperedError when it does not verify); None when never recorded."""
    from relops_pipeline.lib import audit

    recorded = recorded_configs(con, name).get(name)
    if recorded is not None:
        _, problem = audit.check_event(con, recorded.seq)
        if problem:
            raise audit.TamperedError(f"the recorded roles of {name} are not to be believed: {problem}; "
                                      "nothing was changed (see `relops audit verify`)")
    return recorded


def roles_in_force(con: duckdb.DuckDBPyConnection, wf: Workflow) -> Roles:
    """The roles that count now: the last accepted ones, where the file still agrees (a removal
    counts at once, an addition once accepted). A workflow never recorded: the file's."""
    recorded = _checked_record(con, wf.name)
    return wf.roles if recorded is None else recorded.in_force.within(wf.roles)


def accepted_roles(con: duckdb.DuckDBPyConnection, wf: Workflow) -> Roles:
    """The last accepted roles as they are: who may accept a change of them. A workflow never
    recorded: the file's."""
    recorded = _checked_record(con, wf.name)
    return wf.roles if recorded is None else recorded.in_force
