"""Deployers: how a recorded registry state reaches the serving side.

One interface, `Deployer.deploy(registry_dir, state) -> dict` (a receipt for the event log and
the caller). Both deployers write the pointer file first: it is what `relops status`, the
runbook, drills and most applications read. The webhook deployer then also POSTs the pointer to
a deployment system.

- PointerFileDeployer (default): the atomic pointer file only.
- WebhookDeployer: the pointer file, then `POST url` with the pointer as a JSON body and
  `X-Relops-Signature-256: sha256=<hex HMAC-SHA256 of the body bytes>` computed with the secret
  read from an environment variable at deploy time (never stored in config or events). The
  receiver recomputes the HMAC over the raw body, compares with `hmac.compare_digest`, and
  ignores a `seq` it has already applied (the same state may be delivered again by
  `sync_pointer`). 2xx is success; 5xx and connection errors are retried; anything else fails.

Configuration (a workflow's `rollout.deployer`; absent means the pointer file)::

    rollout:
      deployer: {type: webhook, url: "https://deploy.example/relops", secret_env: RELOPS_DEPLOY_SECRET}
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from relops_pipeline.lib.registry.state import RegistryError, RegistryState, pointer_doc, write_pointer

SIGNATURE_HEADER = "X-Relops-Signature-256"
DEFAULT_SECRET_ENV = "RELOPS_DEPLOY_WEBHOOK_SECRET"


class DeployError(RegistryError):
    """The state is recorded in the warehouse but did not reach the serving side.

    `sync_pointer` delivers it again once the cause is fixed."""


class Deployer(Protocol):
    name: str

    def deploy(self, registry_dir: Path, state: RegistryState) -> dict[str, Any]:
        """Make `state` what the serving side uses; return a JSON-able receipt; raise DeployError."""
        ...


class PointerFileDeployer:
    """Writes `<registry_dir>/<workflow>.json` atomically (the default)."""

    name = "pointer_file"

    def deploy(self, registry_dir: Path, state: RegistryState) -> dict[str, Any]:
        try:
            path = write_pointer(registry_dir, state)
        except OSError as exc:
            raise DeployError(f"cannot write the pointer for {state.workflow}: {exc}") from exc
        return {"deployer": self.name, "pointer": path.name, "seq": state.seq}


def sign(secret: bytes, body: bytes) -> str:
    """The signature header's value for a body: 'sha256=' + hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def webhook_body(state: RegistryState) -> bytes:
    """The exact bytes POSTed (canonical JSON of the pointer): what the HMAC covers."""
    return json.dumps(pointer_doc(state), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class WebhookDeployer:
    """The pointer file, then an HMAC-signed POST of the pointer to `url`."""

    name = "webhook"

    def __init__(
        self,
        url: str | None,  # validated below: None or a non-http(s) value raises RegistryError
        *,
        secret_env: str = DEFAULT_SECRET_ENV,
        timeout_s: float = 5.0,
        attempts: int = 3,
        backoff_s: float = 0.2,
        write_file: bool = True,
    ):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise RegistryError(f"webhook deployer: url must be http(s)://..., got {url!r}")
        if not isinstance(secret_env, str) or not secret_env:
            raise RegistryError("webhook deployer: secret_env must name an environment variable")
        self.url = url
        self.secret_env = secret_env
        self.timeout_s = float(timeout_s)
        self.attempts = max(1, int(attempts))
        self.backoff_s = float(backoff_s)
        self.write_file = write_file

    def deploy(self, registry_dir: Path, state: RegistryState) -> dict[str, Any]:
        import httpx  # only the webhook path pays for it

        secret = os.environ.get(self.secret_env)
        if not secret:
            raise DeployError(f"webhook deployer: environment variable {self.secret_env} is not set: refusing to "
                              "send an unsigned deployment")
        receipt: dict[str, Any] = {"deployer": self.name, "seq": state.seq}
        if self.write_file:
            receipt["pointer"] = PointerFileDeployer().deploy(registry_dir, state)["pointer"]
        body = webhook_body(state)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret.encode("utf-8"), body),
            "X-Relops-Workflow": state.workflow,
            "X-Relops-Seq": str(state.seq),
        }
        last_error = ""
        for attempt in range(1, self.attempts + 1):
            try:
                response = httpx.post(self.url, content=body, headers=headers, timeout=self.timeout_s)
            except httpx.HTTPError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                if 200 <= response.status_code < 300:
                    receipt.update(status=response.status_code, attempts=attempt)
                    return receipt
                last_error = f"HTTP {response.status_code}"
                if response.status_code < 500:
                    break  # the receiver refused it: retrying the same body will not help
            if attempt < self.attempts:
                time.sleep(self.backoff_s * attempt)
        raise DeployError(f"webhook deployer: POST {self.url} failed ({last_error}); the state is recorded, "
                          "sync the pointer once the receiver is back")


def deployer_from_config(config: Mapping[str, Any] | None) -> Deployer:
    """A deployer from a workflow's `rollout.deployer` mapping (None: the pointer file)."""
    if not config:
        return PointerFileDeployer()
    if not isinstance(config, Mapping):
        raise RegistryError(f"rollout.deployer: expected a mapping, got {config!r}")
    kind = config.get("type", "pointer_file")
    if kind in ("pointer_file", "file"):
        return PointerFileDeployer()
    if kind == "webhook":
        unknown = set(config) - {"type", "url", "secret_env", "timeout_s", "attempts"}
        if unknown:
            raise RegistryError(f"rollout.deployer: unknown keys {', '.join(sorted(unknown))}")
        return WebhookDeployer(
            config.get("url"),
            secret_env=config.get("secret_env", DEFAULT_SECRET_ENV),
            timeout_s=config.get("timeout_s", 5.0),
            attempts=config.get("attempts", 3),
        )
    raise RegistryError(f"rollout.deployer: unknown type {kind!r} (pointer_file or webhook)")
