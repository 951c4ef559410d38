"""The eval data model: cases and suites, release manifests, samples and scores.

Plain dataclasses shared by suites, manifests, runners, scorers and importers.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}\Z")
KEY_SEPARATOR = "--"


def validate_key(kind: str, value: Any) -> str:
    """A workflow name or a version: it reaches file paths, SQL and URLs, so only
    lower-case letters, digits, '.', '_' and '-' (no '--'), starting with a letter or digit."""
    if not isinstance(value, str) or not KEY_RE.match(value) or KEY_SEPARATOR in value or value.endswith("-"):
        raise ValueError(
            f"invalid {kind} {value!r}: use 1-63 characters of a-z, 0-9, '.', '_' and '-', "
            f"starting with a letter or digit, without '--'"
        )
    return value


def release_key(workflow: str, version: str) -> str:
    return f"{validate_key('workflow', workflow)}{KEY_SEPARATOR}{validate_key('version', version)}"


def split_release_key(key: str) -> tuple[str, str]:
    if KEY_SEPARATOR not in key:
        raise ValueError(f"invalid release key {key!r}: expected <workflow>--<version>")
    workflow, version = key.split(KEY_SEPARATOR, 1)
    validate_key("workflow", workflow)
    validate_key("version", version)
    return workflow, version


def content_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of a value (sorted keys, no whitespace)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class Case:
    id: str
    input: dict[str, Any]
    expected: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    must_pass: bool = False
    provenance: str = "curated"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Suite:
    workflow: str
    version: str
    cases: list[Case]
    changelog: list[str] = field(default_factory=list)
    content_hash: str = ""

    def case(self, case_id: str) -> Case:
        for c in self.cases:
            if c.id == case_id:
                return c
        raise KeyError(case_id)

    def compute_hash(self) -> str:
        return content_hash([c.as_dict() for c in self.cases])


@dataclass
class Manifest:
    workflow: str
    version: str
    model: str
    provider: str | None = None
    prompts: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    tools: list[dict[str, Any]] = field(default_factory=list)
    retrieval: dict[str, Any] = field(default_factory=dict)
    code_revision: str | None = None
    notes: str | None = None
    content_hash: str = ""

    @property
    def release_key(self) -> str:
        return release_key(self.workflow, self.version)

    def content(self) -> dict[str, Any]:
        """What the manifest says (without its hash), as hashed and diffed."""
        d = asdict(self)
        d.pop("content_hash")
        return d

    def compute_hash(self) -> str:
        return content_hash(self.content())


@dataclass
class SampleRequest:
    case: Case
    sample: int
    seed: int


@dataclass
class SampleResult:
    case_id: str
    sample: int
    output: str | None = None
    error: str | None = None
    latency_ms: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    attempts: int = 1
    raw: dict[str, Any] | None = None


@dataclass
class Score:
    metric: str
    score: float
    passed: bool
    detail: str | None = None


@dataclass
class EvalRunData:
    workflow: str
    version: str
    suite_version: str
    source: str
    samples: list[SampleResult] = field(default_factory=list)
    scores: dict[tuple[str, int], list[Score]] = field(default_factory=dict)
    must_pass: dict[str, bool] = field(default_factory=dict)
    case_ids: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
