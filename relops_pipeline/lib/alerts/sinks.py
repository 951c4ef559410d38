"""Alert sinks: where the outbox delivers alerts, and their configuration.

A workflow's `alerts` section (workflow YAML) configures them:

    alerts:
      cooldown_minutes: 360          # same dedup_key within this time -> suppressed
      retry: {max_attempts: 8, backoff_s: 30, factor: 2, max_backoff_s: 3600}   # defaults for every sink
      sinks:
        - {type: file}                               # <home>/alerts/alerts.jsonl
        - {type: log}                                # python logging, logger "relops.alerts"
        - {type: slack, url_env: SLACK_WEBHOOK_URL, min_severity: warning}
        - {type: webhook, url: https://hooks.example/relops, secret_env: RELOPS_WEBHOOK_SECRET}
        - {type: pagerduty, routing_key_env: PD_ROUTING_KEY, min_severity: error}

Secrets (the Slack webhook URL, the webhook's HMAC secret, the PagerDuty routing key) come only
from environment variables named in the config, read at delivery time. A missing variable is a
delivery error like a refused connection: the delivery stays pending, is retried with backoff
and is dead-lettered after its last attempt; it never crashes the caller.

`Sink.send(alert)` returns when the receiver accepted the alert and raises `DeliveryError`
otherwise (`permanent=True` for answers that a retry cannot change, e.g. HTTP 400/403/404).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

from relops_pipeline.lib.alerts.model import (
    SEVERITIES,
    Alert,
    AlertError,
    format_alert_text,
    format_number,
    iso_z,
    normalize_severity,
    where_text,
)

DEFAULT_COOLDOWN_MINUTES = 360
DEFAULT_FILE_NAME = "alerts.jsonl"
DEFAULT_LOGGER = "relops.alerts"
DEFAULT_SLACK_URL_ENV = "RELOPS_SLACK_WEBHOOK_URL"
DEFAULT_WEBHOOK_SECRET_ENV = "RELOPS_WEBHOOK_SECRET"
DEFAULT_PAGERDUTY_ROUTING_KEY_ENV = "RELOPS_PAGERDUTY_ROUTING_KEY"
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
SIGNATURE_HEADER = "X-Relops-Signature"
USER_AGENT = "relops-alerts/1"

_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_SINK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}\Z")
# HTTP answers a retry may change; every other 4xx is permanent.
_RETRYABLE_4XX = {408, 409, 425, 429}


class DeliveryError(Exception):
    """A sink did not accept an alert. `permanent`: retrying cannot help (dead-letter now)."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class RetryPolicy:
    """Attempt n (1-based) that fails is retried after backoff_s * factor**(n-1), capped at
    max_backoff_s; the delivery is dead after attempt max_attempts fails."""

    max_attempts: int = 8
    backoff_s: float = 30.0
    factor: float = 2.0
    max_backoff_s: float = 3600.0

    def delay_after(self, attempt: int) -> timedelta:
        seconds = self.backoff_s * self.factor ** max(attempt - 1, 0)
        return timedelta(seconds=min(seconds, self.max_backoff_s))


RETRY_KEYS = ("max_attempts", "backoff_s", "factor", "max_backoff_s")


def _env(environ: Mapping[str, str] | None, name: str, what: str) -> str:
    value = (os.environ if environ is None else environ).get(name)
    if not value:
        raise DeliveryError(f"environment variable {name} ({what}) is not set in the delivering process")
    return value


_URL_SECRETS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/\s@?#]*@)?(?P<rest>[^\s?#'\"<>]*)"
                          r"(?P<query>\?[^\s#'\"<>]*)?(?P<fragment>#[^\s'\"<>]*)?")


def redact_url(text: str) -> str:
    """`text` with the parts of every URL in it that commonly carry secrets masked: the user
    info (`user:token@`), the query string and the fragment (`?token=...`)."""

    def mask(m: re.Match[str]) -> str:
        return (m["scheme"] + ("***@" if m["userinfo"] else "") + m["rest"] + ("?***" if m["query"] else "")
                + ("#***" if m["fragment"] else ""))

    return _URL_SECRETS.sub(mask, text)


def _post(url: str, body: bytes, headers: dict[str, str], timeout_s: float, *, url_label: str) -> None:
    """POST and return on 2xx; DeliveryError otherwise. Messages never contain the URL (it may
    be a secret, e.g. a Slack webhook); `url_label` says where it came from instead."""
    import httpx

    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False) as client:
            resp = client.post(url, content=body, headers={"User-Agent": USER_AGENT, **headers})
    except httpx.TimeoutException:
        raise DeliveryError(f"no answer from {url_label} within {timeout_s:g} s") from None
    except (httpx.HTTPError, OSError) as exc:
        text = redact_url(str(exc).replace(url, url_label)) or type(exc).__name__
        raise DeliveryError(f"cannot reach {url_label}: {type(exc).__name__}: {text}") from None
    if 200 <= resp.status_code < 300:
        return
    snippet = redact_url(resp.text[:200].replace(url, url_label)).strip()
    permanent = 300 <= resp.status_code < 500 and resp.status_code not in _RETRYABLE_4XX
    raise DeliveryError(
        f"{url_label} answered HTTP {resp.status_code}" + (f": {snippet}" if snippet else ""), permanent=permanent
    )


def _canonical_body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def alert_payload(alert: Alert) -> dict[str, Any]:
    """The JSON document the file and webhook sinks write: every alert field plus `text`."""
    return {**alert.to_dict(), "text": format_alert_text(alert), "schema": "relops.alert/1"}


@dataclass(kw_only=True)
class Sink:
    """Base class: a named destination with a severity threshold and a retry policy."""

    type: ClassVar[str] = ""
    KEYS: ClassVar[tuple[str, ...]] = ()
    DEFAULT_MIN_SEVERITY: ClassVar[str] = "info"

    name: str
    min_severity: str | None = None  # None: the type's default (DEFAULT_MIN_SEVERITY)
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        self.min_severity = normalize_severity(self.min_severity or self.DEFAULT_MIN_SEVERITY)

    def send(self, alert: Alert) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:
        """Where this sink delivers, without secrets."""
        return self.type


@dataclass(kw_only=True)
class FileSink(Sink):
    """Appends one JSON line per alert (see `alert_payload`) to `path`."""

    type: ClassVar[str] = "file"
    KEYS: ClassVar[tuple[str, ...]] = ("path",)

    path: Path

    def send(self, alert: Alert) -> None:
        line = json.dumps(alert_payload(alert), sort_keys=True, ensure_ascii=False) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One write of the whole line to an O_APPEND file: lines from two writers never interleave.
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise DeliveryError(f"cannot append to {self.path}: {exc}") from None

    def describe(self) -> str:
        return f"file {self.path}"


_LOG_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL}


@dataclass(kw_only=True)
class LogSink(Sink):
    """Logs `format_alert_text(alert)` at the alert's severity; the alert dict is in
    `record.relops_alert` for structured handlers."""

    type: ClassVar[str] = "log"
    KEYS: ClassVar[tuple[str, ...]] = ("logger",)

    logger: str = DEFAULT_LOGGER

    def send(self, alert: Alert) -> None:
        logging.getLogger(self.logger).log(
            _LOG_LEVELS[alert.severity], format_alert_text(alert), extra={"relops_alert": alert.to_dict()}
        )

    def describe(self) -> str:
        return f"log {self.logger}"


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_message(alert: Alert) -> dict[str, Any]:
    """Incoming-webhook body: `text` (the plain wording, also the notification fallback) and
    Block Kit `blocks` within Slack's size limits; user-derived text is escaped."""
    e = _slack_escape
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(f"[{alert.severity.upper()}] {alert.title}", 150)}},
    ]
    if alert.summary:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(e(alert.summary), 3000)}})
    blocks.append({"type": "section", "fields": [
        {"type": "mrkdwn", "text": _cut(f"*Where*\n{e(where_text(alert))}", 2000)},
        {"type": "mrkdwn", "text": _cut(f"*What*\n{e(alert.kind)} ({alert.severity})", 2000)},
    ]})
    if alert.evidence:
        ev = "\n".join(f"• {e(k)}: {e(format_number(v))}" for k, v in alert.evidence.items())
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(f"*Evidence*\n{ev}", 3000)}})
    if alert.links:
        links = "\n".join(
            f"• <{u}|{e(label)}>" if _is_url(u) else f"• {e(label)}: `{e(u)}`" for label, u in alert.links.items()
        )
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(f"*Links*\n{links}", 3000)}})
    runbook = alert.runbook or "none configured"
    runbook_text = f"<{runbook}|runbook>" if _is_url(runbook) else f"runbook: `{e(runbook)}`"
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn",
         "text": _cut(f"{runbook_text} · dedup key `{e(alert.dedup_key or '')}` · alert `{alert.alert_id or '-'}`", 3000)},
    ]})
    return {"text": _cut(format_alert_text(alert), 3000), "blocks": blocks}


@dataclass(kw_only=True)
class SlackSink(Sink):
    """Slack incoming webhook; the webhook URL (a secret) comes from the env var `url_env`."""

    type: ClassVar[str] = "slack"
    KEYS: ClassVar[tuple[str, ...]] = ("url_env", "timeout_s")
    DEFAULT_MIN_SEVERITY: ClassVar[str] = "warning"

    url_env: str = DEFAULT_SLACK_URL_ENV
    timeout_s: float = 10.0
    environ: Mapping[str, str] | None = None

    def send(self, alert: Alert) -> None:
        url = _env(self.environ, self.url_env, "Slack incoming webhook URL")
        body = _canonical_body(slack_message(alert))
        _post(url, body, {"Content-Type": "application/json"}, self.timeout_s, url_label=f"Slack webhook (${self.url_env})")

    def describe(self) -> str:
        return f"slack ${self.url_env}"


def sign_body(secret: str, body: bytes) -> str:
    """The X-Relops-Signature value: 'sha256=' + hex HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header_value: str | None) -> bool:
    """For receivers (and tests): constant-time check of an X-Relops-Signature header."""
    if not header_value:
        return False
    return hmac.compare_digest(sign_body(secret, body), header_value)


@dataclass(kw_only=True)
class WebhookSink(Sink):
    """POSTs `alert_payload(alert)` as canonical JSON, signed with HMAC-SHA256 of the body
    (header X-Relops-Signature: sha256=<hex>) using the secret in env var `secret_env`.
    Headers X-Relops-Alert-Id and X-Relops-Dedup-Key let receivers dedupe re-sends."""

    type: ClassVar[str] = "webhook"
    KEYS: ClassVar[tuple[str, ...]] = ("url", "url_env", "secret_env", "timeout_s")

    url: str | None = None
    url_env: str | None = None
    secret_env: str = DEFAULT_WEBHOOK_SECRET_ENV
    timeout_s: float = 10.0
    environ: Mapping[str, str] | None = None

    def send(self, alert: Alert) -> None:
        url = self.url if self.url else _env(self.environ, self.url_env or "", "webhook URL")
        secret = _env(self.environ, self.secret_env, "webhook signing secret")
        body = _canonical_body(alert_payload(alert))
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign_body(secret, body),
            "X-Relops-Alert-Id": alert.alert_id or "",
            "X-Relops-Dedup-Key": alert.dedup_key or "",
        }
        label = f"webhook {redact_url(self.url)}" if self.url else f"webhook (${self.url_env})"
        _post(url, body, headers, self.timeout_s, url_label=label)

    def describe(self) -> str:
        return f"webhook {redact_url(self.url)}" if self.url else f"webhook ${self.url_env}"


def pagerduty_event(alert: Alert, routing_key: str, source: str | None = None) -> dict[str, Any]:
    """An Events API v2 'trigger' event. PagerDuty's severities are relops' own
    (critical/error/warning/info). Only http(s) links become PagerDuty links; paths stay in
    custom_details."""
    dedup = alert.dedup_key or ""
    if len(dedup) > 255:  # the API's limit: keep it stable rather than cut it
        dedup = dedup[:190] + ":sha256:" + hashlib.sha256(dedup.encode()).hexdigest()[:56]
    summary = f"[{alert.severity.upper()}] {alert.title}" + (f" — {alert.summary}" if alert.summary else "")
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup,
        "client": "relops",
        "payload": {
            "summary": _cut(summary, 1024),
            "source": source or alert.workflow or "relops",
            "severity": alert.severity,
            "timestamp": iso_z(alert.created_at),
            "component": alert.workflow,
            "group": alert.release,
            "class": alert.kind,
            "custom_details": {
                "what": alert.kind,
                "where": where_text(alert),
                "summary": alert.summary,
                "evidence": dict(alert.evidence),
                "links": dict(alert.links),
                "runbook": alert.runbook,
                "alert_id": alert.alert_id,
                "dagster_run_id": alert.dagster_run_id,
            },
        },
        "links": [{"href": u, "text": label} for label, u in alert.links.items() if _is_url(u)],
    }


@dataclass(kw_only=True)
class PagerDutySink(Sink):
    """PagerDuty Events API v2 (enqueue); routing key from env var `routing_key_env`."""

    type: ClassVar[str] = "pagerduty"
    KEYS: ClassVar[tuple[str, ...]] = ("routing_key_env", "url", "source", "timeout_s")
    DEFAULT_MIN_SEVERITY: ClassVar[str] = "error"

    routing_key_env: str = DEFAULT_PAGERDUTY_ROUTING_KEY_ENV
    url: str = PAGERDUTY_EVENTS_URL
    source: str | None = None
    timeout_s: float = 10.0
    environ: Mapping[str, str] | None = None

    def send(self, alert: Alert) -> None:
        key = _env(self.environ, self.routing_key_env, "PagerDuty routing key")
        body = _canonical_body(pagerduty_event(alert, key, self.source))
        _post(self.url, body, {"Content-Type": "application/json"}, self.timeout_s, url_label=f"PagerDuty {redact_url(self.url)}")

    def describe(self) -> str:
        return f"pagerduty {redact_url(self.url)}"


SINK_TYPES: dict[str, type[Sink]] = {c.type: c for c in (FileSink, LogSink, SlackSink, WebhookSink, PagerDutySink)}
COMMON_KEYS = ("type", "name", "min_severity", *RETRY_KEYS)
# `rules` (signal alert rules) is parsed by relops_pipeline.lib.alerts.rules.
ALERTS_KEYS = ("sinks", "cooldown_minutes", "retry", "rules")


# ---------------------------------------------------------------------------------------------
# Configuration


def _number(where: str, value: Any, *, minimum: float, integer: bool = False) -> float | int:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or value < minimum:
        kind = "an integer" if integer else "a number"
        raise AlertError(f"{where}: expected {kind} >= {minimum:g}, got {value!r}")
    return value


def _env_name(where: str, value: Any) -> str:
    if not isinstance(value, str) or not _ENV_NAME_RE.match(value):
        raise AlertError(f"{where}: expected the NAME of an environment variable (e.g. SLACK_WEBHOOK_URL), got {value!r}")
    return value


def _retry(where: str, cfg: Mapping[str, Any], base: RetryPolicy) -> RetryPolicy:
    return RetryPolicy(
        # integer=True: an int already (bools are refused)
        max_attempts=int(_number(f"{where}.max_attempts", cfg.get("max_attempts", base.max_attempts), minimum=1, integer=True)),
        backoff_s=float(_number(f"{where}.backoff_s", cfg.get("backoff_s", base.backoff_s), minimum=0)),
        factor=float(_number(f"{where}.factor", cfg.get("factor", base.factor), minimum=1)),
        max_backoff_s=float(_number(f"{where}.max_backoff_s", cfg.get("max_backoff_s", base.max_backoff_s), minimum=0)),
    )


def cooldown_from_config(alerts_cfg: Mapping[str, Any] | None) -> timedelta:
    """`alerts.cooldown_minutes` (default 360) as a timedelta; 0 turns suppression off."""
    minutes = (alerts_cfg or {}).get("cooldown_minutes", DEFAULT_COOLDOWN_MINUTES)
    return timedelta(minutes=_number("alerts.cooldown_minutes", minutes, minimum=0))


def build_sinks(alerts_cfg: Mapping[str, Any] | None, home_alerts_dir: Path | str | None) -> list[Sink]:
    """Validate a workflow's `alerts` section and build its sinks, in config order.

    Errors name the key (`alerts.sinks[2].url_env: ...`). A file sink's relative `path` is
    under `home_alerts_dir` (default file alerts.jsonl). Env vars are only named here; they
    are read when delivering.
    """
    cfg = {} if alerts_cfg is None else alerts_cfg
    if not isinstance(cfg, Mapping):
        raise AlertError(f"alerts: expected a mapping, got {type(cfg).__name__}")
    unknown = sorted(set(cfg) - set(ALERTS_KEYS))
    if unknown:
        raise AlertError(f"alerts: unknown key(s) {', '.join(unknown)} (known: {', '.join(ALERTS_KEYS)})")
    cooldown_from_config(cfg)
    retry_cfg = cfg.get("retry") or {}
    if not isinstance(retry_cfg, Mapping):
        raise AlertError("alerts.retry: expected a mapping with " + ", ".join(RETRY_KEYS))
    bad = sorted(set(retry_cfg) - set(RETRY_KEYS))
    if bad:
        raise AlertError(f"alerts.retry: unknown key(s) {', '.join(bad)} (known: {', '.join(RETRY_KEYS)})")
    base_retry = _retry("alerts.retry", retry_cfg, RetryPolicy())
    specs = cfg.get("sinks", [])
    if not isinstance(specs, list):
        raise AlertError("alerts.sinks: expected a list of sinks, e.g. [{type: file}, {type: log}]")

    sinks: list[Sink] = []
    for i, spec in enumerate(specs):
        where = f"alerts.sinks[{i}]"
        if not isinstance(spec, Mapping) or "type" not in spec:
            raise AlertError(f"{where}: expected a mapping with a type ({', '.join(SINK_TYPES)})")
        cls = SINK_TYPES.get(spec["type"])
        if cls is None:
            raise AlertError(f"{where}.type: unknown sink type {spec['type']!r} (known: {', '.join(SINK_TYPES)})")
        where = f"{where} ({cls.type})"
        if cls is SlackSink and "url" in spec:
            raise AlertError(f"{where}: the webhook URL is a secret; name the environment variable holding it in url_env")
        allowed = (*COMMON_KEYS, *cls.KEYS)
        unknown = sorted(set(spec) - set(allowed))
        if unknown:
            raise AlertError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(allowed)})")
        name = spec.get("name", cls.type)
        if not isinstance(name, str) or not _SINK_NAME_RE.match(name):
            raise AlertError(f"{where}.name: expected a short name (letters, digits, . _ -), got {name!r}")
        if any(s.name == name for s in sinks):
            raise AlertError(f"{where}.name: another sink is already named {name!r}; give each sink of the same type a distinct name")
        try:
            min_sev = normalize_severity(spec.get("min_severity", cls.DEFAULT_MIN_SEVERITY))
        except AlertError:
            raise AlertError(f"{where}.min_severity: expected one of {', '.join(SEVERITIES)}, got {spec.get('min_severity')!r}") from None
        common: dict[str, Any] = {"name": name, "min_severity": min_sev, "retry": _retry(where, spec, base_retry)}
        kw: dict[str, Any] = {}
        if "timeout_s" in cls.KEYS and "timeout_s" in spec:
            kw["timeout_s"] = float(_number(f"{where}.timeout_s", spec["timeout_s"], minimum=0.001))
        if cls is FileSink:
            p = spec.get("path", DEFAULT_FILE_NAME)
            if not isinstance(p, str) or not p:
                raise AlertError(f"{where}.path: expected a file path, got {p!r}")
            path = Path(p).expanduser()
            if not path.is_absolute():
                if home_alerts_dir is None:
                    raise AlertError(f"{where}.path: {p!r} is relative and no home alerts folder was given")
                path = Path(home_alerts_dir) / path
            kw["path"] = path
        elif cls is LogSink:
            logger = spec.get("logger", DEFAULT_LOGGER)
            if not isinstance(logger, str) or not logger:
                raise AlertError(f"{where}.logger: expected a logger name, got {logger!r}")
            kw["logger"] = logger
        elif cls is SlackSink:
            kw["url_env"] = _env_name(f"{where}.url_env", spec.get("url_env", DEFAULT_SLACK_URL_ENV))
        elif cls is WebhookSink:
            if ("url" in spec) == ("url_env" in spec):
                raise AlertError(f"{where}: give exactly one of url (the endpoint) or url_env (the env var holding it)")
            if "url" in spec:
                if not isinstance(spec["url"], str) or not _is_url(spec["url"]):
                    raise AlertError(f"{where}.url: expected an http(s) URL, got {spec['url']!r}")
                kw["url"] = spec["url"]
            else:
                kw["url_env"] = _env_name(f"{where}.url_env", spec["url_env"])
            kw["secret_env"] = _env_name(f"{where}.secret_env", spec.get("secret_env", DEFAULT_WEBHOOK_SECRET_ENV))
        elif cls is PagerDutySink:
            kw["routing_key_env"] = _env_name(
                f"{where}.routing_key_env", spec.get("routing_key_env", DEFAULT_PAGERDUTY_ROUTING_KEY_ENV)
            )
            url = spec.get("url", PAGERDUTY_EVENTS_URL)
            if not isinstance(url, str) or not _is_url(url):
                raise AlertError(f"{where}.url: expected an http(s) URL, got {url!r}")
            kw["url"] = url
            if "source" in spec:
                if not isinstance(spec["source"], str) or not spec["source"]:
                    raise AlertError(f"{where}.source: expected text, got {spec['source']!r}")
                kw["source"] = spec["source"]
        sinks.append(cls(**common, **kw))
    return sinks
