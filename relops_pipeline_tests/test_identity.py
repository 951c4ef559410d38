"""Identity and authorization (lib/identity.py): the actor is an authenticated principal — the
operating-system user, or a CI identity from a verified OIDC token — and `--by` only a label it
may use; rollout and rollback need a role in force; a change of a workflow file's roles is an
event with its diff, and grants nothing until an approver in force accepts it."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import pwd
import time
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from relops_pipeline.cli import EXIT_BAD_INPUT
from relops_pipeline.lib import audit
from relops_pipeline.lib.identity import (
    SERVICE_PRINCIPAL,
    AuthorizationRefused,
    IdentityError,
    IdentitySettings,
    LabelGrant,
    OidcSettings,
    Principal,
    actor_label,
    api_key_principal,
    authorize,
    ci_principal,
    current_principal,
    hash_api_key,
    os_principal,
)
from relops_pipeline.lib.registry.rollout import adopt_state
from relops_pipeline.lib.registry.state import RegistryState, write_pointer
from relops_pipeline.lib.settings import SettingsError, load_identity_settings
from relops_pipeline.lib.warehouse import open_warehouse
from relops_pipeline.lib.workflows import (
    Roles,
    accept_workflow_config,
    load_workflow,
    record_workflow_configs,
    roles_in_force,
)
from relops_pipeline.registry import read_pointer
from relops_pipeline_tests.conftest import run_cli

ME = os_principal()
ROLES = Roles("li.wei", ("ana.lopez",), ("sam.okafor",))


def _settings(**labels: list[str]) -> IdentitySettings:
    return IdentitySettings({label: LabelGrant(os_users=tuple(users)) for label, users in labels.items()})


# ---------------------------------------------------------------------------------------------
# Principals and labels


def test_the_principal_is_the_os_user_of_the_process_not_user(monkeypatch):
    monkeypatch.setenv("USER", "someone-else")
    p = current_principal(IdentitySettings(), {"USER": "someone-else"})
    assert (p.name, p.kind, p.subject) == (pwd.getpwuid(os.geteuid()).pw_name, "os", p.name)
    assert p == ME and f"uid {os.geteuid()}" in p.source


def test_by_is_only_a_label_the_principal_may_use():
    settings = _settings(**{"li.wei": [ME.subject], "mallory": ["someone-else"]})
    assert actor_label(ME, settings, "li.wei", request="x") == "li.wei"
    assert actor_label(ME, settings, None, request="x") == "li.wei"  # its one label
    assert actor_label(ME, settings, ME.name, request="x") == ME.name  # its own name, unlisted
    with pytest.raises(AuthorizationRefused, match=f"{ME.name} may not approve v1 as mallory"):
        actor_label(ME, settings, "mallory", request="approve v1")
    with pytest.raises(AuthorizationRefused):
        actor_label(ME, settings, "ana.lopez", request="x")  # a label nobody granted
    # An entry named like the principal decides for that name too.
    with pytest.raises(AuthorizationRefused):
        actor_label(ME, _settings(**{ME.name: ["someone-else"]}), ME.name, request="x")
    two = _settings(**{"li.wei": [ME.subject], "ana.lopez": [ME.subject]})
    assert actor_label(ME, two, None, request="x") == ME.name  # several labels: its own name


def test_rollout_and_rollback_need_a_role_and_approvals_an_approver():
    everyone = _settings(**{n: [ME.subject] for n in ("li.wei", "ana.lopez", "sam.okafor", "intern")})
    assert authorize(ME, everyone, ROLES, "rollback", request="roll back doc-qa") == "li.wei"  # the owner first
    assert authorize(ME, everyone, ROLES, "rollback", request="r", by="sam.okafor") == "sam.okafor"  # on call
    with pytest.raises(AuthorizationRefused, match="sam.okafor may not approve doc-qa--v2: the owner and delegates"):
        authorize(ME, everyone, ROLES, "approve", request="approve doc-qa--v2", by="sam.okafor")
    with pytest.raises(AuthorizationRefused, match="intern may not roll back doc-qa"):
        authorize(ME, everyone, ROLES, "rollback", request="roll back doc-qa", by="intern")
    only_intern = _settings(intern=[ME.subject])
    with pytest.raises(AuthorizationRefused, match=f"{ME.name} may not roll back doc-qa: .*may act as intern"):
        authorize(ME, only_intern, ROLES, "rollback", request="roll back doc-qa")
    assert authorize(SERVICE_PRINCIPAL, only_intern, ROLES, "rollback", request="r") == "relops-service"
    with pytest.raises(ValueError, match="unknown action"):
        authorize(ME, everyone, ROLES, "delete", request="r")


def test_api_keys_are_checked_against_their_hashes():
    keys = {"deploy-bot": hash_api_key("s3cret-token")}
    p = api_key_principal("s3cret-token", keys)
    assert (p.name, p.kind, p.subject) == ("api:deploy-bot", "api", "deploy-bot")
    assert LabelGrant(api_keys=("deploy-bot",)).admits(p) and not LabelGrant(os_users=("deploy-bot",)).admits(p)
    with pytest.raises(IdentityError, match="not one of"):
        api_key_principal("guess", keys)


def test_identity_settings_read_and_refuse_bad_shapes(tmp_path):
    f = tmp_path / "relops.yaml"
    f.write_text("identities:\n  alice: {os_users: [alice], ci_subjects: ['repo:org/x:ref:refs/heads/main']}\n"
                 "oidc: {issuer: 'https://idp', audience: relops, jwks_file: keys/jwks.json}\n"
                 f"api_keys:\n  bot: {{sha256: {hash_api_key('k')}}}\n")
    s = load_identity_settings(f)
    assert s.identities["alice"] == LabelGrant(("alice",), ("repo:org/x:ref:refs/heads/main",))
    assert s.oidc is not None and s.oidc.jwks_file == (tmp_path / "keys" / "jwks.json").resolve()
    assert s.api_keys == {"bot": hash_api_key("k")}
    assert load_identity_settings(tmp_path / "missing.yaml") == IdentitySettings()
    for bad, where in (("identities: {alice: {os_user: [alice]}}", "identities.alice"),
                       ("identities: {alice: {os_users: alice}}", "identities.alice.os_users"),
                       ("oidc: {issuer: x}", "oidc"), ("api_keys: {bot: {sha256: abc}}", "api_keys.bot")):
        f.write_text(bad)
        with pytest.raises(SettingsError, match=where):
            load_identity_settings(f)


# ---------------------------------------------------------------------------------------------
# CI identity: OIDC tokens signed here, verified against a key set file (no network)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(key: rsa.RSAPrivateKey, claims: dict, *, kid: str = "k1", alg: str = "RS256") -> str:
    signing = f"{_b64(json.dumps({'alg': alg, 'kid': kid, 'typ': 'JWT'}).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing}.{_b64(key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256()))}"


@pytest.fixture(scope="module")
def keys():
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]


@pytest.fixture
def oidc(tmp_path, keys) -> OidcSettings:
    numbers = keys[0].public_key().public_numbers()
    jwk = {"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256",
           "n": _b64(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")), "e": _b64(numbers.e.to_bytes(3, "big"))}
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    return OidcSettings("https://token.actions.githubusercontent.com", "relops", path)


SUB = "repo:acme/app:ref:refs/heads/main"


def _claims(**over) -> dict:
    now = int(time.time())
    return {"iss": "https://token.actions.githubusercontent.com", "aud": "relops", "sub": SUB, "iat": now,
            "nbf": now - 5, "exp": now + 300, **over}


def test_a_valid_oidc_token_is_the_ci_principal(oidc, keys):
    p = ci_principal(_jwt(keys[0], _claims()), oidc)
    assert (p.name, p.kind, p.subject) == (f"ci:{SUB}", "ci", SUB)
    assert LabelGrant(ci_subjects=(SUB,)).admits(p)
    assert ci_principal(_jwt(keys[0], _claims(aud=["other", "relops"])), oidc).subject == SUB  # aud as a list


@pytest.mark.parametrize("mutate, message", [
    (lambda k: _jwt(k[1], _claims()), "signature does not verify"),  # signed with another key
    (lambda k: _jwt(k[0], _claims(aud="someone-else")), "audience"),
    (lambda k: _jwt(k[0], _claims(iss="https://evil.example")), "issuer"),
    (lambda k: _jwt(k[0], _claims(exp=int(time.time()) - 3600)), "expired"),
    (lambda k: _jwt(k[0], _claims(nbf=int(time.time()) + 3600)), "not valid before"),
    (lambda k: _jwt(k[0], {key: v for key, v in _claims().items() if key != "exp"}), "no expiry"),
    (lambda k: _jwt(k[0], _claims(), kid="k9"), "no RS256 key 'k9'"),
    (lambda k: _jwt(k[0], _claims(), alg="HS256"), "RS256 only"),
    (lambda k: _jwt(k[0], _claims()).rsplit(".", 1)[0] + ".", "signature does not verify"),
    (lambda k: "not-a-token", "not a signed JWT"),
])
def test_a_bad_oidc_token_is_refused(oidc, keys, mutate, message):
    with pytest.raises(IdentityError, match=message):
        ci_principal(mutate(keys), oidc)


def test_a_token_that_does_not_verify_never_falls_back_to_the_os_user(oidc, keys):
    settings = IdentitySettings(oidc=oidc)
    expired = _jwt(keys[0], _claims(exp=int(time.time()) - 3600))
    with pytest.raises(IdentityError, match="expired"):
        current_principal(settings, {"RELOPS_OIDC_TOKEN": expired})
    with pytest.raises(IdentityError, match="configures no oidc"):
        current_principal(IdentitySettings(), {"RELOPS_OIDC_TOKEN": _jwt(keys[0], _claims())})
    assert current_principal(settings, {"RELOPS_OIDC_TOKEN": _jwt(keys[0], _claims())}).kind == "ci"
    assert current_principal(settings, {}) == ME


# ---------------------------------------------------------------------------------------------
# Recorded workflow configurations: diffs, and roles that wait for acceptance


def _events(con, kind: str, workflow: str = "doc-qa") -> list[dict]:
    return audit.list_events(con, workflow=workflow, kind=kind)


def _edit(path: Path, **changes) -> None:
    text = path.read_text()
    for key, value in changes.items():
        lines = text.splitlines(keepends=True)
        i = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:"))
        lines[i] = f"{key}: {value}\n"
        text = "".join(lines)
    path.write_text(text)


def test_a_change_of_roles_is_an_event_with_its_diff_and_grants_nothing_until_accepted(home):
    wf_file = home.workflows_dir / "doc-qa.yaml"
    with open_warehouse(home.warehouse_path) as con:
        first = record_workflow_configs(con, home.workflows_dir, actor=ME.name)
        assert {e["workflow"] for e in first} == {"doc-qa", "support-triage"}  # first sight: in force as they are
        assert record_workflow_configs(con, home.workflows_dir, actor=ME.name) == []  # unchanged: nothing new
        assert roles_in_force(con, load_workflow(home.workflows_dir, "doc-qa")) == ROLES

        _edit(wf_file, delegates="[ana.lopez, bob]")
        [change] = record_workflow_configs(con, home.workflows_dir, actor=ME.name)
        p = change["payload"]
        assert change["kind"] == "workflow_config" and change["actor"] == ME.name and p["pending"] is True
        assert p["previous_hash"] == first[0]["payload"]["hash"] and p["hash"] != p["previous_hash"]
        assert "-delegates: [ana.lopez]\n+delegates: [ana.lopez, bob]" in p["diff"]
        assert p["roles_diff"] == {"delegates": {"added": ["bob"], "removed": []}}
        wf = load_workflow(home.workflows_dir, "doc-qa")
        assert "bob" not in roles_in_force(con, wf).approvers  # not until accepted
        settings = _settings(bob=[ME.subject], **{"li.wei": [ME.subject]})
        with pytest.raises(AuthorizationRefused, match="bob may not approve"):
            authorize(ME, settings, roles_in_force(con, wf), "approve", request="approve doc-qa--v1", by="bob")

        accepted = accept_workflow_config(con, "doc-qa", actor="li.wei", reason="bob joins")
        assert accepted is not None and accepted["payload"]["roles_diff"] == p["roles_diff"]
        assert roles_in_force(con, wf).approvers == ("li.wei", "ana.lopez", "bob")
        assert accept_workflow_config(con, "doc-qa", actor="li.wei", reason="again") is None  # nothing waits

        # A removal counts at once (the file and the accepted roles must agree), unaccepted.
        _edit(wf_file, delegates="[bob]", owner="mallory")
        record_workflow_configs(con, home.workflows_dir, actor=ME.name)
        assert roles_in_force(con, load_workflow(home.workflows_dir, "doc-qa")) == Roles(None, ("bob",), ("sam.okafor",))
        assert audit.verify_chain(con).ok


def test_roles_in_force_are_checked_against_the_audit_key(home):
    with open_warehouse(home.warehouse_path) as con:
        record_workflow_configs(con, home.workflows_dir, actor=ME.name)
        [event] = _events(con, "workflow_config")
        forged = {**event["payload"], "in_force": {"owner": "mallory", "delegates": [], "on_call": []}}
        con.execute("UPDATE events SET payload = ? WHERE seq = ?", [json.dumps(forged), event["seq"]])
        with pytest.raises(audit.TamperedError, match="recorded roles of doc-qa"):
            roles_in_force(con, load_workflow(home.workflows_dir, "doc-qa"))


# ---------------------------------------------------------------------------------------------
# Through the CLI: rollback, spoofed --by, acceptance, the service's automatic rollback


@pytest.fixture
def canary_home(home, monkeypatch):
    """The example home (relops init let the OS user act as its people) with doc-qa's v2.4.0
    in canary over v2.3.0; RELOPS_HOME and DAGSTER_HOME point at it for in-process commands."""
    monkeypatch.setenv("RELOPS_HOME", str(home.root))
    monkeypatch.setenv("DAGSTER_HOME", str(home.dagster_home))
    monkeypatch.delenv("RELOPS_OIDC_TOKEN", raising=False)
    _put_canary(home)
    return home


def _put_canary(home) -> None:
    with open_warehouse(home.warehouse_path) as con:
        seq = (con.execute("SELECT max(seq) FROM registry_state WHERE workflow = 'doc-qa'").fetchone() or [None])[0]
        state = RegistryState("doc-qa", seq=(seq or 0) + 1, live="v2.3.0", canary="v2.4.0", canary_percent=50.0,
                              stage="canary", last_known_good="v2.1.0", updated_by="li.wei", reason="canary",
                              updated_at=dt.datetime(2026, 11, 20, 10, 0))
        state = adopt_state(con, state, actor="relops-tests", reason="starting point")
    write_pointer(home.registry_dir, state)


def _identities(home, **labels: list[str]) -> None:
    doc = yaml.safe_load(home.settings_file.read_text())
    doc["identities"] = {label: {"os_users": users} for label, users in labels.items()}
    home.settings_file.write_text(yaml.safe_dump(doc))


def _refusals(home) -> list[dict]:
    with open_warehouse(home.warehouse_path) as con:
        return _events(con, audit.KIND_REFUSED)


def test_a_spoofed_by_is_refused_and_recorded_as_the_real_principal(canary_home, capsys):
    home = canary_home
    code, _, err = run_cli(capsys, home.root, "rollback", "doc-qa", "--by", "mallory", "--reason", "spoof")
    assert code == EXIT_BAD_INPUT and f"{ME.name} may not roll back doc-qa as mallory" in err
    [refused] = _refusals(home)
    assert refused["actor"] == ME.name and refused["payload"]["as"] == "mallory"
    assert refused["payload"]["principal"] == ME.as_dict() and "(asked: spoof)" in refused["reason"]
    assert read_pointer(home.registry_dir, "doc-qa").canary == "v2.4.0"  # nothing changed
    # A command that only records: the same (the refusal opens the warehouse itself).
    code, _, err = run_cli(capsys, home.root, "incident", "open", "--workflow", "doc-qa", "--title", "t", "--by", "mallory")
    assert code == EXIT_BAD_INPUT and "as mallory" in err and len(_refusals(home)) == 2


def test_an_unauthorized_rollback_is_refused_an_authorized_one_goes_through(canary_home, capsys):
    home = canary_home
    _identities(home, intern=[ME.subject])
    code, _, err = run_cli(capsys, home.root, "rollback", "doc-qa", "--reason", "not mine")
    assert code == EXIT_BAD_INPUT and f"{ME.name} may not roll back doc-qa" in err and "may act as" in err
    code, _, err = run_cli(capsys, home.root, "rollback", "doc-qa", "--by", "intern", "--reason", "not mine")
    assert code == EXIT_BAD_INPUT and "intern may not roll back doc-qa: the owner, delegates and on-call are" in err
    assert [r["actor"] for r in _refusals(home)] == [ME.name, ME.name]
    assert read_pointer(home.registry_dir, "doc-qa").canary == "v2.4.0"

    # On call (sam.okafor) may; without --by the principal acts as the role holder it may use.
    _identities(home, intern=[ME.subject], **{"sam.okafor": [ME.subject]})
    code, out, err = run_cli(capsys, home.root, "rollback", "doc-qa", "--reason", "canary looks bad", "--json")
    assert code == 0, err
    assert "manual rollback by sam.okafor" in json.loads(out)["why"]
    with open_warehouse(home.warehouse_path) as con:
        assert [e["actor"] for e in _events(con, audit.KIND_ROLLBACK)] == ["sam.okafor"]
    pointer = read_pointer(home.registry_dir, "doc-qa")
    assert pointer.canary is None and pointer.live == "v2.3.0"


def test_the_automatic_rollback_runs_as_the_service_principal(canary_home, capsys):
    """What the failed-checks sensor launches: no person, so no person's role is needed."""
    from relops_pipeline.cli.common import run_or_fail
    from relops_pipeline.lib.home import Home

    home = canary_home
    _identities(home)  # nobody may act as anybody
    result = run_or_fail(Home(home.root), "rollback_alert_job", what="automatic rollback", run_config={"ops": {
        "rollback_or_alert": {"config": {"workflow": "doc-qa", "release": "v2.4.0", "trigger": "canary",
                                         "reason": "canary failed"}}}})
    assert result.output_for_node("rollback_or_alert")["decision"] == "rollback"
    assert read_pointer(home.registry_dir, "doc-qa").canary is None
    with open_warehouse(home.warehouse_path) as con:
        [rollback] = _events(con, audit.KIND_ROLLBACK)
    assert rollback["actor"] == "relops-service" and not _refusals(home)


def test_an_added_approver_acts_only_once_an_approver_in_force_accepts(canary_home, capsys):
    home = canary_home
    _identities(home, bob=[ME.subject], **{"li.wei": [ME.subject]})
    assert run_cli(capsys, home.root, "workflow", "show", "doc-qa")[0] == 0  # first sight: recorded, in force
    _edit(home.workflows_dir / "doc-qa.yaml", on_call="[sam.okafor, bob]")

    code, _, err = run_cli(capsys, home.root, "rollback", "doc-qa", "--by", "bob", "--reason", "r")
    assert code == EXIT_BAD_INPUT and "bob may not roll back doc-qa" in err
    code, out, _ = run_cli(capsys, home.root, "workflow", "show", "doc-qa", "--json")
    shown = json.loads(out)
    assert shown["pending"] is True and "bob" in shown["roles"]["on_call"] and "bob" not in shown["in_force"]["on_call"]
    with open_warehouse(home.warehouse_path) as con:
        change = _events(con, "workflow_config")[-1]
    assert change["payload"]["roles_diff"] == {"on_call": {"added": ["bob"], "removed": []}}
    assert "+on_call: [sam.okafor, bob]" in change["payload"]["diff"]

    code, _, err = run_cli(capsys, home.root, "workflow", "accept", "doc-qa", "--by", "bob", "--reason", "me")
    assert code == EXIT_BAD_INPUT and "bob may not accept the roles of doc-qa's file" in err
    code, out, err = run_cli(capsys, home.root, "workflow", "accept", "doc-qa", "--by", "li.wei",
                             "--reason", "bob joins on-call")
    assert code == 0 and "li.wei accepted the roles of doc-qa" in out, err
    code, _, err = run_cli(capsys, home.root, "rollback", "doc-qa", "--by", "bob", "--reason", "now I may")
    assert code == 0, err
    assert read_pointer(home.registry_dir, "doc-qa").canary is None


def test_a_ci_token_is_the_actor_and_a_bad_one_stops_the_command(canary_home, capsys, keys, oidc, monkeypatch):
    home = canary_home
    doc = yaml.safe_load(home.settings_file.read_text())
    doc["oidc"] = {"issuer": oidc.issuer, "audience": oidc.audience, "jwks_file": str(oidc.jwks_file)}
    doc["identities"]["li.wei"]["ci_subjects"] = [SUB]
    home.settings_file.write_text(yaml.safe_dump(doc))

    monkeypatch.setenv("RELOPS_OIDC_TOKEN", _jwt(keys[0], _claims()))
    code, out, err = run_cli(capsys, home.root, "incident", "open", "--workflow", "doc-qa", "--title", "from CI", "--json")
    assert code == 0, err
    assert json.loads(out)["opened_by"] == "li.wei"  # the one label its subject maps to
    code, _, err = run_cli(capsys, home.root, "incident", "open", "--workflow", "doc-qa", "--title", "t", "--by", "ana.lopez")
    assert code == EXIT_BAD_INPUT and f"ci:{SUB} may not open an incident of doc-qa as ana.lopez" in err

    monkeypatch.setenv("RELOPS_OIDC_TOKEN", _jwt(keys[0], _claims(exp=int(time.time()) - 3600)))
    code, _, err = run_cli(capsys, home.root, "rollback", "doc-qa", "--reason", "r")
    assert code == EXIT_BAD_INPUT and "RELOPS_OIDC_TOKEN: the token expired" in err
    assert read_pointer(home.registry_dir, "doc-qa").canary == "v2.4.0"


def test_principal_round_trips_through_a_runs_config():
    assert Principal.from_json(ME.to_json()) == ME
    with pytest.raises(IdentityError, match="kind"):
        Principal.from_json(json.dumps({**ME.as_dict(), "kind": "root"}))
