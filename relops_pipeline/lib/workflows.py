"""Workflow configuration: `<home>/workflows/<name>.yaml`.

A workflow is a production LLM workflow (e.g. `support-triage`). Its file names its owner and
delegates (the people who may approve), how its evals run (runner, scorers, samples, suite),
and — as later features arrive — thresholds, rollout and alert policy. Defaults fill whatever
a file leaves out.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from relops_pipeline.lib.evals.model import validate_key

DEFAULTS: dict[str, Any] = {
    "owner": None,
    "delegates": [],
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
    if not isinstance(merged["delegates"], list) or not all(isinstance(d, str) for d in merged["delegates"]):
        raise WorkflowError(f"{path}: delegates: expected a list of names, got {merged['delegates']!r}")
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


def add_workflow(workflows_dir: Path, name: str, *, owner: str | None = None) -> Path:
    """Write a workflow file with the defaults spelled out; refuse to overwrite one."""
    try:
        path = workflow_path(workflows_dir, name)
    except ValueError as exc:
        raise WorkflowError(str(exc)) from None
    if path.exists():
        raise WorkflowError(f"workflow {name!r} already exists: {path}")
    doc = {"name": name, **copy.deepcopy(DEFAULTS)}
    doc["owner"] = owner
    doc["runner"]["file"] = doc["runner"]["file"].replace("{workflow}", name)
    workflows_dir.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Workflow {name}: written by `relops workflow add` with the defaults spelled out.\n"
        "# owner and delegates may approve releases; runner/scorers/evals say how evals run.\n"
    )
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False))
    return path
