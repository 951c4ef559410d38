"""Versioned gate thresholds: parsing, recording, history, seeding from the workflow file."""

from __future__ import annotations

import json

import pytest

from relops_pipeline.lib import audit
from relops_pipeline.lib.gates import thresholds as th
from relops_pipeline.lib.gates.model import Thresholds
from relops_pipeline.lib.warehouse import open_warehouse

WF = "support-triage"
WHERE = "workflows/support-triage.yaml: thresholds"


@pytest.fixture
def con(tmp_path):
    with open_warehouse(tmp_path / "w.duckdb") as c:
        yield c


FULL = {
    "confidence": 0.9,
    "allowed_regression": {"fields_match": 0.01, "*": 0.03},
    "tolerated_regression": 0.04,
    "floors": {"fields_match": 0.8, "json_valid": 0.99},
    "latency_p95_budget_ms": 2500,
    "cost_per_sample_budget_usd": 0.01,
    "min_cases": 50,
    "min_samples_per_case": 3,
    "resamples": 0,
    "metrics": ["json_valid", "fields_match"],
    "must_pass": "all_samples",
}


def test_parse_full_block():
    t = th.parse_thresholds(FULL, WHERE)
    assert t.version == 0
    assert t.confidence == 0.9
    assert t.allowed_regression == {"fields_match": 0.01, "*": 0.03}
    assert t.allowed_for("fields_match") == 0.01 and t.allowed_for("other") == 0.03
    assert t.tolerated_regression == 0.04
    assert t.floors == {"fields_match": 0.8, "json_valid": 0.99}
    assert t.latency_p95_budget_ms == 2500.0 and isinstance(t.latency_p95_budget_ms, float)
    assert t.cost_per_sample_budget_usd == 0.01
    assert (t.min_cases, t.min_samples_per_case, t.resamples) == (50, 3, 0)
    assert t.metrics == ["fields_match", "json_valid"]


def test_parse_defaults_and_shorthands():
    assert th.parse_thresholds({}, WHERE) == Thresholds()
    assert th.parse_thresholds(None, WHERE) == Thresholds()
    assert th.parse_thresholds({"confidence": None, "latency_p95_budget_ms": None}, WHERE) == Thresholds()
    assert th.parse_thresholds({"allowed_regression": 0.1}, WHERE).allowed_regression == {"*": 0.1}
    # per-metric without "*": the other metrics keep the default
    t = th.parse_thresholds({"allowed_regression": {"fields_match": 0.0}}, WHERE)
    assert t.allowed_regression == {"*": 0.02, "fields_match": 0.0}
    assert Thresholds().min_cases == 30 and Thresholds().confidence == 0.95


@pytest.mark.parametrize(
    "mapping, needle",
    [
        ({"confidnce": 0.9}, "unknown key 'confidnce' (did you mean 'confidence'?)"),
        ({"version": 3}, "unknown key 'version'"),
        ({"confidence": 0.5}, "confidence: 0.5 is not in (0.5, 1)"),
        ({"confidence": 1}, "confidence: 1 is not in (0.5, 1)"),
        ({"confidence": "high"}, "confidence: expected a number"),
        ({"confidence": float("nan")}, "confidence: expected a number"),
        ({"allowed_regression": 1.5}, "allowed_regression: 1.5 is not in [0, 1]"),
        ({"allowed_regression": {"fields_match": -0.1}}, "allowed_regression.fields_match: -0.1 is not in [0, 1]"),
        ({"allowed_regression": [0.1]}, "allowed_regression: expected a number"),
        ({"tolerated_regression": -0.01}, "tolerated_regression: -0.01 is not in [0, 1]"),
        ({"floors": {"json_valid": 2}}, "floors.json_valid: 2 is not in [0, 1]"),
        ({"floors": {"*": 0.5}}, "floors: '*' is not supported"),
        ({"floors": 0.5}, "floors: expected a mapping"),
        ({"latency_p95_budget_ms": 0}, "latency_p95_budget_ms: 0 is not above 0"),
        ({"cost_per_sample_budget_usd": -1}, "cost_per_sample_budget_usd: -1 is not above 0"),
        ({"min_cases": 0}, "min_cases: expected an integer >= 1, got 0"),
        ({"min_cases": 10.5}, "min_cases: expected an integer >= 1"),
        ({"min_cases": True}, "min_cases: expected an integer >= 1"),
        ({"min_samples_per_case": 0}, "min_samples_per_case: expected an integer >= 1"),
        ({"resamples": -1}, "resamples: expected an integer >= 0, got -1"),
        ({"metrics": []}, "metrics: expected a non-empty list"),
        ({"metrics": ["a", "a"]}, "metrics: listed more than once: a"),
        ({"must_pass": "most"}, "must_pass: 'most' is not a policy"),
    ],
)
def test_validation_names_the_key_and_where(mapping, needle):
    with pytest.raises(th.ThresholdsError) as err:
        th.parse_thresholds(mapping, WHERE)
    assert str(err.value).startswith(WHERE + ": ")
    assert needle in str(err.value)


def test_validation_reports_every_problem():
    with pytest.raises(th.ThresholdsError) as err:
        th.parse_thresholds({"confidence": 2, "min_cases": 0, "bogus": 1}, WHERE)
    msg = str(err.value)
    assert "confidence" in msg and "min_cases" in msg and "'bogus'" in msg


def test_no_version_recorded_means_defaults_version_0(con):
    t = th.current_thresholds(con, WF)
    assert t == Thresholds() and t.version == 0
    assert th.thresholds_history(con, WF) == []
    assert th.thresholds_at(con, WF, 0) == Thresholds()


def test_versions_increment_with_author_reason_and_an_event_each(con):
    v1 = th.record_thresholds(con, WF, {"min_cases": 40}, author="alice", reason="first")
    assert (v1.version, v1.author, v1.reason, v1.min_cases) == (1, "alice", "first", 40)
    stricter = {"min_cases": 50, "floors": {"json_valid": 0.9}}
    v2 = th.record_thresholds(con, WF, stricter, author="bob", reason="stricter")
    assert (v2.version, v2.author, v2.min_cases, v2.floors) == (2, "bob", 50, {"json_valid": 0.9})
    other = th.record_thresholds(con, "other-flow", {"confidence": 0.9}, author="carol", reason="own")
    assert other.version == 1  # versions are per workflow

    cur = th.current_thresholds(con, WF)
    assert cur == v2

    hist = th.thresholds_history(con, WF)
    assert [(h["version"], h["author"], h["reason"]) for h in hist] == [(1, "alice", "first"), (2, "bob", "stricter")]
    assert hist[0]["config"]["min_cases"] == 40 and hist[1]["config"]["floors"] == {"json_valid": 0.9}
    assert hist[0]["config_hash"] == th.config_hash(hist[0]["config"]) != hist[1]["config_hash"]
    assert hist[0]["created_at"] <= hist[1]["created_at"]

    assert th.thresholds_at(con, WF, 1).min_cases == 40
    assert th.thresholds_at(con, WF, 1).author == "alice"
    assert th.thresholds_at(con, WF, 2) == v2
    with pytest.raises(th.ThresholdsError, match="no threshold version 3 .* recorded versions: 1, 2"):
        th.thresholds_at(con, WF, 3)

    events = audit.list_events(con, kind=audit.KIND_THRESHOLDS_VERSION, workflow=WF)
    assert [(e["actor"], e["reason"], e["payload"]["version"]) for e in events] == [
        ("alice", "first", 1), ("bob", "stricter", 2)
    ]
    assert [e["seq"] for e in events] == [h["event_seq"] for h in hist]
    assert events[1]["payload"]["config_hash"] == hist[1]["config_hash"]
    assert events[1]["payload"]["config"]["min_cases"] == 50
    assert audit.verify_chain(con).ok
    assert th.verify_thresholds(con) == []


def test_identical_config_is_a_no_op(con):
    v1 = th.record_thresholds(con, WF, {"min_cases": 40, "allowed_regression": 0.02}, author="alice", reason="first")
    # same configuration spelled differently (explicit default, int vs float): still the same
    same = {"min_cases": 40, "confidence": 0.95, "allowed_regression": {"*": 0.02}}
    again = th.record_thresholds(con, WF, same, author="bob", reason="again")
    assert again == v1 and again.author == "alice"
    assert len(th.thresholds_history(con, WF)) == 1
    assert len(audit.list_events(con, kind=audit.KIND_THRESHOLDS_VERSION)) == 1
    # recording the defaults is a real version when something else is in force
    back = th.record_thresholds(con, WF, {}, author="bob", reason="back to defaults")
    assert back.version == 2 and back.min_cases == 30


def test_record_requires_author_and_reason_and_a_valid_config(con):
    with pytest.raises(th.ThresholdsError, match="author"):
        th.record_thresholds(con, WF, {"min_cases": 40}, author=" ", reason="r")
    with pytest.raises(th.ThresholdsError, match="reason"):
        th.record_thresholds(con, WF, {"min_cases": 40}, author="alice", reason="")
    with pytest.raises(th.ThresholdsError, match="thresholds for workflow support-triage: min_cases"):
        th.record_thresholds(con, WF, {"min_cases": -1}, author="alice", reason="r")
    with pytest.raises(th.ThresholdsError, match="invalid workflow"):
        th.record_thresholds(con, "Bad Name", {}, author="alice", reason="r")
    assert th.thresholds_history(con, WF) == [] and audit.head(con)[0] == 0


def test_record_inside_a_rolled_back_transaction_leaves_nothing(con):
    con.execute("BEGIN TRANSACTION")
    th.record_thresholds(con, WF, {"min_cases": 40}, author="alice", reason="r")
    assert th.current_thresholds(con, WF).version == 1
    con.execute("ROLLBACK")
    assert th.current_thresholds(con, WF).version == 0 and audit.head(con)[0] == 0


def test_seed_from_workflow_config(con):
    assert th.seed_from_workflow_config(con, WF, {}, "alice") is None
    assert th.current_thresholds(con, WF).version == 0  # no block: nothing recorded

    assert th.seed_from_workflow_config(con, WF, {"min_cases": 40}, "alice", where=WHERE) is None
    v1 = th.current_thresholds(con, WF)
    assert (v1.version, v1.author, v1.reason, v1.min_cases) == (1, "alice", th.SEED_REASON, 40)

    # the same file again: nothing changes
    assert th.seed_from_workflow_config(con, WF, {"min_cases": 40}, "alice", where=WHERE) is None
    # a changed file: a warning, and still version 1
    warning = th.seed_from_workflow_config(con, WF, {"min_cases": 20, "confidence": 0.9}, "alice", where=WHERE)
    assert warning is not None
    assert WHERE in warning and "version 1" in warning and "min_cases" in warning and "confidence" in warning
    assert "relops thresholds set" in warning
    assert th.current_thresholds(con, WF) == v1 and len(th.thresholds_history(con, WF)) == 1

    # an invalid file is an error naming the key and the file
    with pytest.raises(th.ThresholdsError, match="workflows/support-triage.yaml: thresholds: unknown key 'floor'"):
        th.seed_from_workflow_config(con, WF, {"floor": {}}, "alice", where=WHERE)


def test_seed_without_owner_still_names_an_author(con):
    th.seed_from_workflow_config(con, WF, {"min_cases": 40}, None)
    assert th.current_thresholds(con, WF).author == th.NO_OWNER_AUTHOR


def test_an_edited_threshold_row_is_refused_and_reported(con):
    th.record_thresholds(con, WF, {"min_cases": 40}, author="alice", reason="first")
    con.execute("""UPDATE threshold_versions SET config = json_merge_patch(config, '{"min_cases": 1}')""")
    with pytest.raises(th.ThresholdsError, match="edited after it was recorded"):
        th.current_thresholds(con, WF)
    assert any("config does not match" in p for p in th.verify_thresholds(con))
    # recomputing config_hash too does not help: the event log still holds the original hash
    cfg = con.execute("SELECT config FROM threshold_versions").fetchone()[0]

    con.execute("UPDATE threshold_versions SET config_hash = ?", [th.config_hash(json.loads(cfg))])
    with pytest.raises(audit.TamperedError, match="does not match its event at seq 1"):
        th.current_thresholds(con, WF)  # the gate never runs on thresholds the log does not back
    problems = th.verify_thresholds(con)
    assert len(problems) == 1 and "does not match its event at seq 1" in problems[0]
