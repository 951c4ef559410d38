"""Who runs a command, which labels it may use, and what it may do.

**Principals.** The actor behind every command is an authenticated principal:

- `os`: the operating-system user of the process (`pwd.getpwuid(os.geteuid())`) — never $USER,
  never `--by`. The default.
- `ci`: when $RELOPS_OIDC_TOKEN holds an OIDC token (a JWT signed RS256), verified against the
  key set the home's relops.yaml names (`oidc: {issuer, audience, jwks_file}`): signature,
  `iss`, `aud`, `exp` and `nbf`. The principal is `ci:<sub>`. A token that does not verify is an
  error, never a fallback to the operating-system user.
- `api`: an API key checked against the SHA-256 hashes under `api_keys:` in relops.yaml (for an
  HTTP front door; relops has none yet). The principal is `api:<name>`.
- `service`: `relops-service`, relops' own automatic actions in Dagster jobs and sensors
  (automatic rollbacks; the gate records its decisions as `relops-gate`).

**Labels.** Workflow files and events name people by labels (`owner: li.wei`). relops.yaml's
`identities` says which principals may act as which label:

    identities:
      alice: {os_users: [alice], ci_subjects: ["repo:org/x:ref:refs/heads/main"], api_keys: [deploy-bot]}

A principal may act as the labels that list it, and as its own name when no entry of
`identities` is called that. `--by LABEL` is only a label: refused unless the principal may act
as it. Without `--by` the actor is the one label the principal may act as, else its own name;
for an action that needs a role, the first role holder it may act as (owner, then delegates,
then on-call), so `relops rollback W` works for whoever holds a role without naming it.

**Authorization.** Rolling out and rolling back (every stage) need the workflow's owner, a
delegate or its on-call group (`on_call:` in the workflow file); approving, overriding, changing
thresholds and deciding proposals need the owner or a delegate. Automatic rollbacks are the
service principal's and always allowed. Every refusal — a label the principal may not use, an
action its label may not take — is recorded as a `refused` event whose actor is the real
principal, and the command fails.

**Which roles count.** The roles in force are those of the last *accepted* version of the
workflow file (lib/workflows.py records every version as a `workflow_config` event with its
diff). The first version seen is accepted as it is; a later change of roles is pending until
an approver under the roles in force accepts it (`relops workflow accept W --reason ...`).
Meanwhile a role counts only where the file and the accepted version agree: removing someone
takes effect at once, adding someone — the only way an edit could grant power — does not.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import pwd
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb

    from relops_pipeline.lib.workflows import Roles, Workflow

OIDC_TOKEN_ENV = "RELOPS_OIDC_TOKEN"
SERVICE_ACTOR = "relops-service"
PRINCIPAL_KINDS = ("os", "ci", "api", "service")


class IdentityError(ValueError):
    """Who runs the command cannot be established (a token that does not verify, a key set or
    an identities entry that cannot be read); the message is one line."""


class AuthorizationRefused(IdentityError):
    """The principal may not act as that label, or its label may not take that action."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: `name` is what events record (the OS user name, `ci:<sub>`,
    `api:<name>`, `relops-service`); `subject` the name within its kind; `source` how it was
    established."""

    name: str
    kind: str  # os | ci | api | service
    subject: str
    source: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def to_json(self) -> str:
        """The principal as a run's config carries it (a CLI request run through Dagster)."""
        return json.dumps(self.as_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Principal:
        d = json.loads(text)
        if d.get("kind") not in PRINCIPAL_KINDS:
            raise IdentityError(f"unknown principal kind {d.get('kind')!r}")
        return cls(str(d["name"]), d["kind"], str(d["subject"]), str(d["source"]))


SERVICE_PRINCIPAL = Principal(SERVICE_ACTOR, "service", SERVICE_ACTOR, "relops' automatic actions (Dagster jobs and sensors)")


def os_principal() -> Principal:
    """The operating-system user of this process (its effective uid), not $USER."""
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = f"uid{uid}"  # a uid without a passwd entry (some containers)
    return Principal(name, "os", name, f"operating-system user (uid {uid})")


# In the example relops.yaml: `relops init` puts the OS user who ran it there (init_user_settings).
INIT_USER_PLACEHOLDER = "${RELOPS_INIT_USER}"


def init_user_settings(text: str) -> str:
    """The example relops.yaml for this home: the example's people mapped to the
    operating-system user who runs `relops init`, so one person can play them all."""
    return text.replace(INIT_USER_PLACEHOLDER, os_principal().subject)


# ---------------------------------------------------------------------------------------------
# Configuration (parsed from relops.yaml by lib/settings.py)


@dataclass(frozen=True)
class LabelGrant:
    """Who may act as one label: operating-system users, CI token subjects, API key names."""

    os_users: tuple[str, ...] = ()
    ci_subjects: tuple[str, ...] = ()
    api_keys: tuple[str, ...] = ()

    def admits(self, principal: Principal) -> bool:
        listed = {"os": self.os_users, "ci": self.ci_subjects, "api": self.api_keys}.get(principal.kind, ())
        return principal.subject in listed


@dataclass(frozen=True)
class OidcSettings:
    """The identity provider whose tokens relops accepts: its issuer, the audience tokens must
    name, and a file with its key set (JWKS)."""

    issuer: str
    audience: str
    jwks_file: Path
    leeway_s: float = 60.0


@dataclass(frozen=True)
class IdentitySettings:
    identities: Mapping[str, LabelGrant] = field(default_factory=dict)
    oidc: OidcSettings | None = None
    api_keys: Mapping[str, str] = field(default_factory=dict)  # key name -> SHA-256 hex of the key


# ---------------------------------------------------------------------------------------------
# CI identity: OIDC tokens


def _b64url(part: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise IdentityError(f"{OIDC_TOKEN_ENV}: the token's {what} is not base64url") from None


def _json_part(part: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64url(part, what))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise IdentityError(f"{OIDC_TOKEN_ENV}: the token's {what} is not JSON") from None
    if not isinstance(value, dict):
        raise IdentityError(f"{OIDC_TOKEN_ENV}: the token's {what} is not a JSON object")
    return value


def load_jwks(path: Path) -> dict[str, Any]:
    """A JSON Web Key Set file ({"keys": [...]})."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise IdentityError(f"oidc.jwks_file {path}: cannot be read ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise IdentityError(f"oidc.jwks_file {path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise IdentityError(f"oidc.jwks_file {path}: expected a key set {{\"keys\": [...]}}")
    return doc


def _signing_key(jwks: Mapping[str, Any], kid: str | None):
    from cryptography.hazmat.primitives.asymmetric import rsa

    keys = [k for k in jwks.get("keys", []) if isinstance(k, dict) and k.get("kty") == "RSA"
            and k.get("use", "sig") == "sig" and k.get("alg", "RS256") == "RS256"]
    if kid is not None:
        keys = [k for k in keys if k.get("kid") == kid]
    if len(keys) != 1:
        raise IdentityError(f"{OIDC_TOKEN_ENV}: " + (f"no RS256 key {kid!r} in the key set" if kid is not None else
                            "the token names no key (kid) and the key set has not exactly one RS256 key"))
    try:
        n = int.from_bytes(_b64url(keys[0]["n"], "key modulus"), "big")
        e = int.from_bytes(_b64url(keys[0]["e"], "key exponent"), "big")
        return rsa.RSAPublicNumbers(e, n).public_key()
    except (KeyError, TypeError, ValueError):
        raise IdentityError(f"{OIDC_TOKEN_ENV}: key {kid!r} of the key set is not a valid RSA key") from None


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def verify_oidc_token(token: str, oidc: OidcSettings, jwks: Mapping[str, Any], *, now: float | None = None) -> dict[str, Any]:
    """The token's claims once its RS256 signature verifies under the key set and its `iss`,
    `aud`, `exp` and `nbf` hold (with `leeway_s` of clock skew); IdentityError otherwise."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    parts = token.strip().split(".")
    if len(parts) != 3:
        raise IdentityError(f"{OIDC_TOKEN_ENV}: not a signed JWT (expected header.payload.signature)")
    header, claims = _json_part(parts[0], "header"), _json_part(parts[1], "payload")
    if header.get("alg") != "RS256":
        raise IdentityError(f"{OIDC_TOKEN_ENV}: signature algorithm {header.get('alg')!r} is not accepted (RS256 only)")
    key = _signing_key(jwks, header.get("kid"))
    try:
        key.verify(_b64url(parts[2], "signature"), f"{parts[0]}.{parts[1]}".encode("ascii"),
                   padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, UnicodeEncodeError):
        raise IdentityError(f"{OIDC_TOKEN_ENV}: the token's signature does not verify against {oidc.jwks_file}") from None
    now = time.time() if now is None else now
    if claims.get("iss") != oidc.issuer:
        raise IdentityError(f"{OIDC_TOKEN_ENV}: issuer {claims.get('iss')!r} is not {oidc.issuer!r}")
    audiences = claims.get("aud")
    audiences = [audiences] if isinstance(audiences, str) else audiences if isinstance(audiences, list) else []
    if oidc.audience not in audiences:
        raise IdentityError(f"{OIDC_TOKEN_ENV}: audience {claims.get('aud')!r} does not include {oidc.audience!r}")
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        raise IdentityError(f"{OIDC_TOKEN_ENV}: the token has no expiry (exp)")
    if now >= exp + oidc.leeway_s:
        raise IdentityError(f"{OIDC_TOKEN_ENV}: the token expired at {_utc(exp)}")
    if isinstance(nbf, (int, float)) and not isinstance(nbf, bool) and now < nbf - oidc.leeway_s:
        raise IdentityError(f"{OIDC_TOKEN_ENV}: the token is not valid before {_utc(nbf)}")
    if not isinstance(claims.get("sub"), str) or not claims["sub"].strip():
        raise IdentityError(f"{OIDC_TOKEN_ENV}: the token names no subject (sub)")
    return claims


def ci_principal(token: str, oidc: OidcSettings, *, now: float | None = None) -> Principal:
    """The CI principal `ci:<sub>` of a token that verifies (IdentityError otherwise)."""
    claims = verify_oidc_token(token, oidc, load_jwks(oidc.jwks_file), now=now)
    return Principal(f"ci:{claims['sub']}", "ci", claims["sub"], f"OIDC token of {claims['iss']}")


def current_principal(settings: IdentitySettings, environ: Mapping[str, str] | None = None) -> Principal:
    """Who runs this process: the CI principal of $RELOPS_OIDC_TOKEN when it is set (it must
    verify), else the operating-system user."""
    environ = os.environ if environ is None else environ
    token = environ.get(OIDC_TOKEN_ENV)
    if token is None or not token.strip():
        return os_principal()
    if settings.oidc is None:
        raise IdentityError(f"{OIDC_TOKEN_ENV} is set but relops.yaml configures no oidc provider to verify it against")
    return ci_principal(token, settings.oidc)


# ---------------------------------------------------------------------------------------------
# API keys (for an HTTP front door)


def hash_api_key(key: str) -> str:
    """What relops.yaml stores for an API key: its SHA-256, hex (keys are long random tokens,
    so a fast hash is enough)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def api_key_principal(presented: str, api_keys: Mapping[str, str]) -> Principal:
    """The principal `api:<name>` of the configured key whose hash matches (compared in
    constant time); IdentityError for any other key."""
    digest = hash_api_key(presented)
    matches = [name for name, stored in api_keys.items() if hmac.compare_digest(digest, stored.lower())]
    if not matches:
        raise IdentityError("the API key is not one of relops.yaml's api_keys")
    return Principal(f"api:{matches[0]}", "api", matches[0], "API key")


# ---------------------------------------------------------------------------------------------
# Labels and authorization (pure)


def labels_of(principal: Principal, settings: IdentitySettings) -> tuple[str, ...]:
    """The labels that list the principal in `identities`."""
    return tuple(label for label, grant in settings.identities.items() if grant.admits(principal))


def may_act_as(principal: Principal, label: str, settings: IdentitySettings) -> bool:
    """A label that lists the principal, or its own name when no entry is called that."""
    grant = settings.identities.get(label)
    return grant.admits(principal) if grant is not None else label == principal.name


def _can_act_as(principal: Principal, settings: IdentitySettings) -> str:
    labels = labels_of(principal, settings)
    if principal.name not in settings.identities:
        labels = (*labels, principal.name)
    return ", ".join(labels) or "nothing"


def actor_label(principal: Principal, settings: IdentitySettings, by: str | None, *, request: str) -> str:
    """The label the command acts as: `by` when the principal may act as it
    (AuthorizationRefused otherwise), else its one label, else its own name."""
    if by is not None:
        if not may_act_as(principal, by, settings):
            raise AuthorizationRefused(
                f"{principal.name} may not {request} as {by}: relops.yaml's identities let {principal.name} act as "
                f"{_can_act_as(principal, settings)}")
        return by
    labels = labels_of(principal, settings)
    return labels[0] if len(labels) == 1 else principal.name


# action -> (the roles that may take it, as Roles' attribute; what they are called)
ACTIONS: dict[str, tuple[str, str]] = {
    "rollout": ("operators", "the owner, delegates and on-call"),
    "rollback": ("operators", "the owner, delegates and on-call"),
    "override": ("approvers", "the owner and delegates"),
    "approve": ("approvers", "the owner and delegates"),
    "thresholds": ("approvers", "the owner and delegates"),
    "proposals": ("approvers", "the owner and delegates"),
    "accept_config": ("approvers", "the owner and delegates"),
}


def allowed_labels(roles: Roles, action: str) -> tuple[str, ...]:
    """Who may take the action, in order of preference (owner, delegates, on-call)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}: one of {', '.join(ACTIONS)}")
    return getattr(roles, ACTIONS[action][0])


def authorize(principal: Principal, settings: IdentitySettings, roles: Roles, action: str, *, request: str,
              by: str | None = None) -> str:
    """The label the principal takes the action as, or AuthorizationRefused. With `by`: that
    label, when the principal may act as it and it holds a role that may; without: the first
    such role holder the principal may act as. The service principal is always allowed."""
    allowed = allowed_labels(roles, action)
    if principal.kind == "service":
        return by or principal.name
    holders = f"{ACTIONS[action][1]} are {', '.join(allowed) or 'nobody (set an owner)'}"
    label = actor_label(principal, settings, by, request=request) if by is not None else None
    if label is not None:
        if label not in allowed:
            raise AuthorizationRefused(f"{label} may not {request}: {holders}")
        return label
    mine = [a for a in allowed if may_act_as(principal, a, settings)]
    if not mine:
        raise AuthorizationRefused(f"{principal.name} may not {request}: {holders}, and {principal.name} may act as "
                                   f"{_can_act_as(principal, settings)} (identities in relops.yaml)")
    return mine[0]


# ---------------------------------------------------------------------------------------------
# In the warehouse: recording what was refused


def record_refusal(con: duckdb.DuckDBPyConnection, principal: Principal, refusal: AuthorizationRefused, *,
                   request: str, by: str | None, workflow: str | None = None, release_key: str | None = None,
                   asked: str | None = None) -> dict[str, Any]:
    """A `refused` event whose actor is the real principal (what it asked, as whom, and why not)."""
    from relops_pipeline.lib import audit

    return audit.append_event(
        con, kind=audit.KIND_REFUSED, actor=principal.name, workflow=workflow, release_key=release_key,
        reason=str(refusal) + (f" (asked: {asked})" if asked else ""),
        payload={"request": request, "as": by, "principal": principal.as_dict()})


def checked_label(con: duckdb.DuckDBPyConnection, principal: Principal, settings: IdentitySettings, by: str | None,
                  *, request: str, workflow: str | None = None, asked: str | None = None) -> str:
    """actor_label, with a refusal recorded before it is raised."""
    try:
        return actor_label(principal, settings, by, request=request)
    except AuthorizationRefused as exc:
        record_refusal(con, principal, exc, request=request, by=by, workflow=workflow, asked=asked)
        raise


def authorize_request(con: duckdb.DuckDBPyConnection, workflows_dir: Path, wf: Workflow, principal: Principal,
                      settings: IdentitySettings, action: str, *, request: str, by: str | None = None,
                      asked: str | None = None, release_key: str | None = None) -> str:
    """Record any changed workflow file, then authorize the action against the roles in force
    (for accept_config: the roles last accepted); a refusal is recorded before it is raised.
    Returns the label to act as."""
    from relops_pipeline.lib.workflows import accepted_roles, record_workflow_configs, roles_in_force

    record_workflow_configs(con, workflows_dir, actor=principal.name)
    roles = accepted_roles(con, wf) if action == "accept_config" else roles_in_force(con, wf)
    try:
        return authorize(principal, settings, roles, action, request=request, by=by)
    except AuthorizationRefused as exc:
        record_refusal(con, principal, exc, request=request, by=by, workflow=wf.name, release_key=release_key,
                       asked=asked)
        raise
