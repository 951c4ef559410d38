"""Home settings (`<home>/relops.yaml`): trace sources, the price table and ingest limits;
identities (who may act as which label), the OIDC provider and API keys (lib/identity.py)."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from relops_pipeline.lib.identity import IdentitySettings, LabelGrant, OidcSettings
from relops_pipeline.lib.readers.base import SourceSettings

DEFAULT_TEXT_CAP = 8192
# DuckDB's memory limit while ingesting: staging spills to disk beyond it, which keeps a
# multi-GB file's ingestion within bounded memory (STACK_NOTES: 1 GB peak for 5M records).
DEFAULT_MEMORY_LIMIT = "1GB"
DEFAULT_COALESCE_WAIT_S = 30.0


class SettingsError(ValueError):
    """The settings file is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float


@dataclass(frozen=True)
class SourceRule:
    match: str  # glob on the file path relative to the landing folder (or the file name)
    format: str | None
    settings: SourceSettings


@dataclass(frozen=True)
class TraceStoreSettings:
    """The `trace_store:` section of relops.yaml: spans, GenAI events and rejects live in Delta
    tables at `uri` (a folder, relative to the home unless absolute, or `s3://bucket/prefix`)
    instead of the warehouse (lib/tracestore). `storage_options` go to delta-rs as they are
    (AWS_REGION, AWS_ENDPOINT_URL, AWS_ALLOW_HTTP, ...); credentials are best left to the
    environment's usual chain."""

    uri: str
    storage_options: dict[str, str] = field(default_factory=dict)

    def table_uri(self, table: str) -> str:
        return f"{self.uri.rstrip('/')}/{table}"


@dataclass
class IngestSettings:
    text_cap: int = DEFAULT_TEXT_CAP
    memory_limit: str = DEFAULT_MEMORY_LIMIT
    # How long an ingestion's follow-ups wait for other ingestions of the home in progress, so
    # that one pass refreshes the days of all of them (0: never wait).
    coalesce_wait_s: float = DEFAULT_COALESCE_WAIT_S
    prices: dict[str, Price] = field(default_factory=dict)
    sources: list[SourceRule] = field(default_factory=list)
    # None: spans live in the warehouse (the default); else in the trace store.
    trace_store: TraceStoreSettings | None = None

    def source_for(self, path: Path, base: Path | None = None) -> SourceRule | None:
        """The first source rule whose glob matches the path (relative to base) or its name."""
        rel = path
        if base is not None:
            try:
                rel = path.resolve().relative_to(base.resolve())
            except ValueError:
                rel = path
        for rule in self.sources:
            if fnmatch.fnmatch(str(rel), rule.match) or fnmatch.fnmatch(path.name, rule.match):
                return rule
        return None

    def price_for(self, model: str | None) -> Price | None:
        """Exact model match, else the longest configured name that prefixes it
        (gpt-4o-mini-2024-07-18 is priced as gpt-4o-mini)."""
        if not model:
            return None
        if model in self.prices:
            return self.prices[model]
        best = None
        for name in self.prices:
            if model.startswith(name) and (best is None or len(name) > len(best)):
                best = name
        return self.prices[best] if best else None


def _num(value: Any, where: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{where}: expected a number, got {value!r}") from None


def _document(path: Path) -> dict[str, Any]:
    """relops.yaml as a mapping; a missing file is an empty one."""
    if not path.exists():
        return {}
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise SettingsError(f"{path}: expected a mapping at the top level")
    return doc


def load_settings(path: Path) -> IngestSettings:
    """Read relops.yaml; a missing file gives the defaults."""
    doc = _document(path)
    if not doc:
        return IngestSettings()
    ingest = doc.get("ingest") or {}
    text_cap = int(_num(ingest.get("text_cap_chars", DEFAULT_TEXT_CAP), f"{path}: ingest.text_cap_chars"))
    memory_limit = str(ingest.get("memory_limit", DEFAULT_MEMORY_LIMIT))
    if not re.fullmatch(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", memory_limit):
        raise SettingsError(f"{path}: ingest.memory_limit: expected a size like 1GB, got {memory_limit!r}")
    coalesce_wait_s = _num(ingest.get("coalesce_wait_s", DEFAULT_COALESCE_WAIT_S), f"{path}: ingest.coalesce_wait_s")
    if not 0 <= coalesce_wait_s <= 3600:
        raise SettingsError(f"{path}: ingest.coalesce_wait_s: expected seconds from 0 to 3600, got {coalesce_wait_s:g}")
    prices = {}
    for model, p in (doc.get("prices") or {}).items():
        where = f"{path}: prices.{model}"
        if not isinstance(p, dict) or "input" not in p or "output" not in p:
            raise SettingsError(f"{where}: expected {{input: USD per 1M tokens, output: USD per 1M tokens}}")
        prices[str(model)] = Price(_num(p["input"], where + ".input"), _num(p["output"], where + ".output"))
    sources = []
    for i, s in enumerate(doc.get("sources") or []):
        if not isinstance(s, dict) or "match" not in s:
            raise SettingsError(f"{path}: sources[{i}]: expected a mapping with a `match` glob")
        sources.append(SourceRule(str(s["match"]), s.get("format"), SourceSettings.from_mapping(s)))
    return IngestSettings(text_cap=text_cap, memory_limit=memory_limit, coalesce_wait_s=coalesce_wait_s,
                          prices=prices, sources=sources,
                          trace_store=_trace_store(doc.get("trace_store"), path))


def _trace_store(value: Any, path: Path) -> TraceStoreSettings | None:
    """`trace_store: true` (the default folder, <home>/tracestore), or a mapping with `uri` and
    `storage_options`; absent or false: the warehouse keeps the spans."""
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    if not isinstance(value, dict):
        raise SettingsError(f"{path}: trace_store: expected true or a mapping with `uri`, got {value!r}")
    unknown = set(value) - {"uri", "storage_options"}
    if unknown:
        raise SettingsError(f"{path}: trace_store: unknown key(s) {', '.join(sorted(unknown))} (expected uri, storage_options)")
    uri = str(value.get("uri") or "tracestore")
    if "://" not in uri and not Path(uri).is_absolute():
        uri = str(path.parent.resolve() / uri)
    options = value.get("storage_options") or {}
    if not isinstance(options, dict):
        raise SettingsError(f"{path}: trace_store.storage_options: expected a mapping of strings")
    return TraceStoreSettings(uri, {str(k): str(v) for k, v in options.items()})


def _names(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise SettingsError(f"{where}: expected a list of names, got {value!r}")
    return tuple(value)


def load_identity_settings(path: Path) -> IdentitySettings:
    """The identities, OIDC provider and API keys of relops.yaml (lib/identity.py); a missing
    file or section: none. `oidc.jwks_file` is relative to the folder of relops.yaml."""
    doc = _document(path)
    identities = {}
    section = doc.get("identities") or {}
    if not isinstance(section, dict):
        raise SettingsError(f"{path}: identities: expected a mapping of label -> {{os_users, ci_subjects, api_keys}}")
    for label, grant in section.items():
        where = f"{path}: identities.{label}"
        if not isinstance(grant, dict) or set(grant) - {"os_users", "ci_subjects", "api_keys"}:
            raise SettingsError(f"{where}: expected a mapping with os_users, ci_subjects and/or api_keys")
        identities[str(label)] = LabelGrant(_names(grant.get("os_users"), f"{where}.os_users"),
                                            _names(grant.get("ci_subjects"), f"{where}.ci_subjects"),
                                            _names(grant.get("api_keys"), f"{where}.api_keys"))
    oidc = None
    if doc.get("oidc") is not None:
        o = doc["oidc"]
        if not isinstance(o, dict) or not all(isinstance(o.get(k), str) and o[k] for k in ("issuer", "audience", "jwks_file")):
            raise SettingsError(f"{path}: oidc: expected {{issuer: URL, audience: TEXT, jwks_file: PATH}}")
        oidc = OidcSettings(o["issuer"], o["audience"], (path.parent / o["jwks_file"]).resolve(),
                            _num(o.get("leeway_s", 60), f"{path}: oidc.leeway_s"))
    api_keys = {}
    if not isinstance(doc.get("api_keys") or {}, dict):
        raise SettingsError(f"{path}: api_keys: expected a mapping of key name -> {{sha256: HEX}}")
    for name, entry in (doc.get("api_keys") or {}).items():
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            raise SettingsError(f"{path}: api_keys.{name}: expected {{sha256: the key's SHA-256 in hex}}")
        api_keys[str(name)] = digest.lower()
    return IdentitySettings(identities, oidc, api_keys)


# --- relops serve (the OTLP/HTTP receiver, lib/receiver/) ----------------------------------
DEFAULT_SERVE_MAX_BODY_MB = 16.0
DEFAULT_SERVE_SPOOL_LIMIT_MB = 1024.0
DEFAULT_SERVE_RETRY_AFTER_S = 5
DEFAULT_SERVE_PUBLIC_URL = "http://127.0.0.1:4318"
_SERVE_KEYS = ("api_keys", "max_body_mb", "spool_limit_mb", "retry_after_s", "public_url")


@dataclass(frozen=True)
class ServeKey:
    """One accepted API key: the environment variable it was read from, its value, and the
    workflow it pins its spans to (None: a global key)."""

    env: str
    key: str = field(repr=False)
    workflow: str | None = None


@dataclass(frozen=True)
class ServeSettings:
    """The `serve:` section of relops.yaml; no api_keys = open (the receiver says so)."""

    api_keys: tuple[ServeKey, ...] = ()
    max_body_mb: float = DEFAULT_SERVE_MAX_BODY_MB
    spool_limit_mb: float = DEFAULT_SERVE_SPOOL_LIMIT_MB
    retry_after_s: int = DEFAULT_SERVE_RETRY_AFTER_S
    public_url: str = DEFAULT_SERVE_PUBLIC_URL


def serve_public_url(path: Path) -> str:
    """`serve.public_url` of relops.yaml: the address a browser reaches `relops serve` at (its
    reports and release pages), without the trailing slash. Read on its own, without the API
    keys' environment variables, because the Dagster processes that write report links need
    only this."""
    section = _document(path).get("serve")
    value = section.get("public_url", DEFAULT_SERVE_PUBLIC_URL) if isinstance(section, dict) else DEFAULT_SERVE_PUBLIC_URL
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+(/\S*)?$", value):
        raise SettingsError(f"{path}: serve.public_url: expected an http(s) URL such as {DEFAULT_SERVE_PUBLIC_URL}, got {value!r}")
    return value.rstrip("/")


def _positive(value: Any, where: str) -> float:
    number = _num(value, where)
    if not number > 0:
        raise SettingsError(f"{where}: expected a positive number, got {value!r}")
    return number


def load_serve_settings(path: Path, environ: Any = None) -> ServeSettings:
    """The `serve:` section of relops.yaml: `api_keys: [{env: VAR, workflow: NAME}]` (the key is
    the value of the environment variable VAR, which must be set; `workflow` is optional),
    `max_body_mb`, `spool_limit_mb`, `retry_after_s`. A missing file or section: the defaults."""
    import os

    env = os.environ if environ is None else environ
    section = _document(path).get("serve")
    if section is None:
        return ServeSettings()
    if not isinstance(section, dict):
        raise SettingsError(f"{path}: serve: expected a mapping with {', '.join(_SERVE_KEYS)}")
    unknown = sorted(set(map(str, section)) - set(_SERVE_KEYS))
    if unknown:
        raise SettingsError(f"{path}: serve.{unknown[0]}: unknown key (known: {', '.join(_SERVE_KEYS)})")
    keys = []
    entries = section.get("api_keys") or []
    if not isinstance(entries, list):
        raise SettingsError(f"{path}: serve.api_keys: expected a list of {{env: VARIABLE, workflow: NAME}}")
    for i, entry in enumerate(entries):
        where = f"{path}: serve.api_keys[{i}]"
        if not isinstance(entry, dict) or set(entry) - {"env", "workflow"} or not isinstance(entry.get("env"), str) or not entry["env"]:
            raise SettingsError(f"{where}: expected {{env: VARIABLE, workflow: NAME}} (the key is read from the environment variable)")
        workflow = entry.get("workflow")
        if workflow is not None and (not isinstance(workflow, str) or not workflow.strip()):
            raise SettingsError(f"{where}.workflow: expected a workflow name, got {workflow!r}")
        value = env.get(entry["env"], "")
        if not value:
            raise SettingsError(f"{where}.env: the environment variable {entry['env']} is not set (or empty)")
        keys.append(ServeKey(entry["env"], value, workflow))
    return ServeSettings(
        api_keys=tuple(keys),
        max_body_mb=_positive(section.get("max_body_mb", DEFAULT_SERVE_MAX_BODY_MB), f"{path}: serve.max_body_mb"),
        spool_limit_mb=_positive(section.get("spool_limit_mb", DEFAULT_SERVE_SPOOL_LIMIT_MB), f"{path}: serve.spool_limit_mb"),
        retry_after_s=max(1, int(_positive(section.get("retry_after_s", DEFAULT_SERVE_RETRY_AFTER_S), f"{path}: serve.retry_after_s"))),
        public_url=serve_public_url(path),
    )
