"""Threshold ratchet: tighter floors from the last shipped releases, backtested, never applied
until a person accepts the proposal."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta

import pandas as pd
import pytest

from relops_pipeline.lib import audit
from relops_pipeline.lib.evals.model import release_key
from relops_pipeline.lib.gates import stats
from relops_pipeline.lib.gates.decision import decide
from relops_pipeline.lib.gates.service import approve, record_decision
from relops_pipeline.lib.gates.thresholds import current_thresholds, record_thresholds, thresholds_history
from relops_pipeline.lib.proposals import store
from relops_pipeline.lib.proposals import thresholds as ratchet
from relops_pipeline.lib.warehouse import open_warehouse

WF = "triage"
N_BOOT = 400
N_CASES = 40
SAMPLES = 3
T0 = datetime(2025, 3, 1, 9, 0)
BASE = {"floors": {"fields_match": 0.7}}

# version -> (failing fields_match cases, baseline version, valid run, what happens after the gate)
HISTORY = [
    ("v1.0.0", {f"c{i:03d}" for i in range(6)}, None, True, "approve"),  # REVIEW (no baseline), approved
    ("v1.0.1", {f"c{i:03d}" for i in range(6)}, "v1.0.0", True, None),   # SHIP at 0.857: the backtest flags it
    ("v1.1.0", {"c000", "c001"}, "v1.0.1", True, None),                  # SHIP
    ("v1.2.0", {f"c{i:03d}" for i in range(15)}, "v1.1.0", True, None),  # BLOCK: regression
    ("v1.3.0", {"c000"}, "v1.1.0", True, None),                          # SHIP
    ("v1.4.0", {"c000", "c001"}, "v1.1.0", True, None),                  # SHIP
    ("v1.5.0", set(), "v1.4.0", True, "rollback"),                      # SHIP, then rolled back
    ("v1.6.0", set(), "v1.4.0", False, None),                           # INVALID: invalid evidence is no decision
]


def _insert_run(con, version: str, failing: set[str], valid: bool, at: datetime, latency: float | None) -> str:
    run_id = f"ev-{version}"
    key = release_key(WF, version)
    cases = [f"c{i:03d}" for i in range(N_CASES)] + ["mp0", "mp1"]
    con.execute(
        "INSERT INTO eval_runs (eval_run_id, release_key, workflow, version, suite_version, source, samples_per_case, "
        "cases, samples, errors, error_rate, valid, invalid_reason, started_at, finished_at) "
        "VALUES (?, ?, ?, ?, 'v1', 'import:test', ?, ?, ?, 0, 0.0, ?, ?, ?, ?)",
        [run_id, key, WF, version, SAMPLES, len(cases), len(cases) * SAMPLES, valid,
         None if valid else "too many errored samples", at, at],
    )
    samples, scores = [], []
    for cid in cases:
        for k in range(SAMPLES):
            ok = cid not in failing
            samples.append((run_id, cid, k, cid.startswith("mp"), "{}", None if latency is None else latency + k))
            scores += [(run_id, cid, k, "fields_match", 1.0 if ok else 0.0, ok), (run_id, cid, k, "json_valid", 1.0, True)]
    sample_df = pd.DataFrame(samples, columns=["eval_run_id", "case_id", "sample", "must_pass", "output", "latency_ms"])
    sample_df["latency_ms"] = sample_df["latency_ms"].astype(float)
    score_df = pd.DataFrame(scores, columns=["eval_run_id", "case_id", "sample", "metric", "score", "passed"])
    con.register("new_samples", sample_df)
    con.register("new_scores", score_df)
    con.execute("INSERT INTO eval_samples (eval_run_id, case_id, sample, must_pass, output, latency_ms) "
                "SELECT * FROM new_samples")
    con.execute("INSERT INTO eval_scores (eval_run_id, case_id, sample, metric, score, passed) SELECT * FROM new_scores")
    con.unregister("new_samples")
    con.unregister("new_scores")
    return run_id


def build(con, *, latency: float | None = None) -> None:
    """The hand-built history above: suite v1, thresholds v1 (fields_match floor 0.7), eight
    releases with eval runs, gate decisions made by the gate's own `decide`."""
    con.execute("INSERT INTO suite_versions VALUES (?, 'v1', 'h', ?, 2, NULL, '[]', NULL, ?)", [WF, N_CASES + 2, T0])
    record_thresholds(con, WF, BASE, author="ana", reason="initial thresholds from the workflow configuration")
    th = current_thresholds(con, WF)
    runs: dict[str, str] = {}
    for i, (version, failing, base, valid, after) in enumerate(HISTORY):
        at = T0 + timedelta(days=i)
        con.execute("INSERT INTO releases (release_key, workflow, version, manifest_known, registered_at) "
                    "VALUES (?, ?, ?, false, ?)", [release_key(WF, version), WF, version, at])
        runs[version] = _insert_run(con, version, failing, valid, at, latency)
        cand = stats.run_frame(con, runs[version])
        base_df = stats.run_frame(con, runs[base]) if base else None
        result = decide(cand, base_df, th, must_pass_cases={"mp0", "mp1"}, resample=None, run_valid=valid,
                        invalid_reason=None if valid else "too many errored samples", workflow=WF, version=version,
                        baseline_version=base, evidence={}, diff=None, seed=11, n_boot=N_BOOT)
        record_decision(con, result, reports={}, candidate_run=runs[version],
                        baseline_run=runs[base] if base else None, suite_version="v1",
                        thresholds_version=th.version, dagster_run_id=None)
        if after == "approve":
            approve(con, release_key(WF, version), approvers=["ana"], by="ana", reason="first release, reviewed")
        if after == "rollback":
            con.execute("INSERT INTO rollbacks (rollback_id, workflow, from_release, to_release, trigger, reason, "
                        "automatic, performed, actor, recorded_at) VALUES ('rb-1', ?, ?, 'v1.4.0', 'canary', "
                        "'canary failed', true, true, 'relops', ?)", [WF, version, at + timedelta(hours=2)])


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    path = tmp_path_factory.mktemp("ratchet") / "w.duckdb"
    with open_warehouse(path) as con:
        build(con)
    return path


@pytest.fixture
def con(template, tmp_path):
    path = tmp_path / "w.duckdb"
    shutil.copy(template, path)
    shutil.copytree(template.parent / "audit", tmp_path / "audit")  # the warehouse's audit key and anchor
    with open_warehouse(path) as c:
        yield c


def recorded(con) -> dict[str, str]:
    return dict(con.execute("SELECT version, decision FROM gate_decisions").fetchall())


def test_the_hand_built_history_is_what_the_tests_assume(con):
    assert recorded(con) == {"v1.0.0": "REVIEW", "v1.0.1": "SHIP", "v1.1.0": "SHIP", "v1.2.0": "BLOCK",
                             "v1.3.0": "SHIP", "v1.4.0": "SHIP", "v1.5.0": "SHIP", "v1.6.0": "INVALID"}


def test_evidence_is_the_last_shipped_releases_not_blocked_unapproved_or_rolled_back(con):
    a = ratchet.analyze_threshold_ratchet(con, WF)
    assert [r["release"] for r in a["releases"]] == ["v1.4.0", "v1.3.0", "v1.1.0"]
    assert a["excluded"] == [
        {"release": "v1.6.0", "why": "gate decision INVALID"},
        {"release": "v1.5.0", "why": "rolled back in production"},
        {"release": "v1.2.0", "why": "BLOCKed by the gate"},
    ]
    assert all(r["seed"] == 11 and r["n_boot"] == N_BOOT for r in a["releases"])  # the gate's own bootstrap
    # an approved REVIEW counts: with recent=6 the first release is used too
    wide = ratchet.analyze_threshold_ratchet(con, WF, recent=6)
    assert [r["release"] for r in wide["releases"]][-2:] == ["v1.0.1", "v1.0.0"]
    assert wide["releases"][-1]["approved_by"] == "ana"


def test_floor_is_the_lowest_recent_lower_bound_minus_the_margin(con):
    a = ratchet.analyze_threshold_ratchet(con, WF)
    fm = a["metrics"]["fields_match"]
    lows = {b["release"]: b["low"] for b in fm["bounds"]}
    ests = {b["release"]: b["estimate"] for b in fm["bounds"]}
    assert ests == {"v1.4.0": pytest.approx(40 / 42, abs=1e-4), "v1.3.0": pytest.approx(41 / 42, abs=1e-4),
                    "v1.1.0": pytest.approx(40 / 42, abs=1e-4)}
    # the bound is the gate's: the lower end of the 95% interval of the candidate mean, same seed
    table = stats.prepare(stats.run_frame(con, "ev-v1.4.0"))
    expected = stats.run_statistics(table, n_boot=N_BOOT, seed=11)["metrics"]["fields_match"].interval(0.95).low
    assert lows["v1.4.0"] == pytest.approx(expected, abs=1e-4)
    assert lows["v1.3.0"] > lows["v1.4.0"]
    low = min(lows.values())
    assert fm["candidate"] == pytest.approx(int((low - 0.02) * 100) / 100)
    assert fm["action"] == "tighten" and fm["proposed"] == fm["candidate"] and 0.7 + 0.01 <= fm["proposed"] < low
    assert fm["proposed"] == pytest.approx(0.86)  # verified: lowest bound 0.8810 (v1.4.0) − 0.02, rounded down
    # a metric every case passes has a degenerate interval at 1.0: floor 0.98, a new floor (none before)
    jv = a["metrics"]["json_valid"]
    assert jv["current_floor"] is None and [b["low"] for b in jv["bounds"]] == [1.0, 1.0, 1.0]
    assert jv["proposed"] == 0.98
    assert a["changes"] == {"floors": {"fields_match": [0.7, 0.86], "json_valid": [None, 0.98]}}
    assert a["config"]["floors"] == {"fields_match": 0.86, "json_valid": 0.98}
    assert a["config"]["min_cases"] == 30 and a["config"]["allowed_regression"] == {"*": 0.02}
    # no budget is set, so none is introduced
    assert a["budgets"]["latency_p95_budget_ms"]["action"] in ("not_set", "skip")
    assert "latency_p95_budget_ms" not in a["changes"]


def test_propose_records_a_draft_with_backtest_and_changes_nothing(con):
    before = current_thresholds(con, WF)
    p = ratchet.propose_threshold_ratchet(con, WF, period="2025-03")
    assert p.created is True and p.status == "draft" and p.kind == "thresholds"
    assert p.base_version == "1"
    assert p.payload["config"]["floors"] == {"fields_match": 0.86, "json_valid": 0.98}
    assert p.title == "Ratchet triage thresholds: fields_match 0.7→0.86, json_valid —→0.98"
    # nothing changed before acceptance
    after = current_thresholds(con, WF)
    assert after == before and after.version == 1 and after.floors == {"fields_match": 0.7}
    assert len(thresholds_history(con, WF)) == 1
    ev = p.evidence
    assert ev["metrics"]["fields_match"]["current_floor"] == 0.7
    assert ev["metrics"]["fields_match"]["proposed"] == 0.86
    assert len(ev["metrics"]["fields_match"]["bounds"]) == 3
    rows = {r["release"]: r for r in ev["backtest"]["rows"]}
    assert set(rows) == {v for v, *_ in HISTORY}
    # the replay under the current thresholds reproduces every recorded decision
    assert all(r["current"] == r["recorded"] for r in rows.values())
    # v1.0.1 shipped at 0.857 against an identical baseline; the new floor cannot be confirmed: REVIEW
    assert (rows["v1.0.1"]["current"], rows["v1.0.1"]["proposed"], rows["v1.0.1"]["changed"]) == ("SHIP", "REVIEW", True)
    assert {
        k: v for k, v in next(c for c in rows["v1.0.1"]["rules_changed"] if c["rule"] == "floor:fields_match").items()
        if k != "message"} == {"rule": "floor:fields_match", "current": "pass", "proposed": "review"}
    for v in ("v1.1.0", "v1.3.0", "v1.4.0", "v1.5.0"):
        assert rows[v]["proposed"] == "SHIP" and not rows[v]["changed"]
    assert rows["v1.2.0"]["proposed"] == "BLOCK"
    assert ev["backtest"]["summary"]["stricter"] == ["v1.0.1"]
    assert ev["backtest"]["summary"]["newly_review"] == ["v1.0.1"] and ev["backtest"]["summary"]["looser"] == []
    md = p.report_md
    assert f"`{p.proposal_id}`" in md and f"`relops thresholds accept {p.proposal_id} --by NAME`" in md and "## Backtest" in md
    assert "| v1.0.1 | SHIP | SHIP | REVIEW | yes |" in md
    assert "Not used: v1.6.0 (gate decision INVALID); v1.5.0 (rolled back in production)" in md
    # the same evidence again is the same draft, not a new one
    again = ratchet.propose_threshold_ratchet(con, WF, period="2025-03")
    assert again.proposal_id == p.proposal_id and again.created is False
    assert len(store.list_proposals(con, kind="thresholds")) == 1


def test_accept_records_the_next_version_as_an_event_with_the_actor(con):
    p = ratchet.propose_threshold_ratchet(con, WF, period="2025-03")
    new = ratchet.accept_threshold_proposal(con, p.proposal_id, by="ana", reason="stable for 3 releases")
    assert new.version == 2 and new.author == "ana"
    assert new.floors == {"fields_match": 0.86, "json_valid": 0.98}
    assert new.reason == f"ratchet {p.proposal_id}: stable for 3 releases"
    assert current_thresholds(con, WF).floors == {"fields_match": 0.86, "json_valid": 0.98}
    row = store.get_proposal(con, p.proposal_id)
    assert (row["status"], row["decided_by"], row["result_version"]) == ("accepted", "ana", "2")
    events = con.execute("SELECT kind, actor, payload FROM events WHERE kind IN ('thresholds_version', "
                         "'proposal_accepted') ORDER BY seq").fetchall()
    assert [(k, a) for k, a, _ in events] == [("thresholds_version", "ana"), ("thresholds_version", "ana"),
                                              ("proposal_accepted", "ana")]
    assert json.loads(events[-1][2])["proposal_id"] == p.proposal_id
    assert audit.verify_chain(con).ok
    with pytest.raises(store.ProposalError, match="accepted by ana"):
        ratchet.accept_threshold_proposal(con, p.proposal_id, by="ana")
    # accepted: the next ratchet starts from version 2 and has nothing left to tighten
    assert ratchet.propose_threshold_ratchet(con, WF, period="2025-04") is None


def test_accept_refuses_when_the_thresholds_moved_since_the_proposal(con):
    p = ratchet.propose_threshold_ratchet(con, WF, period="2025-03")
    record_thresholds(con, WF, {"floors": {"fields_match": 0.75}}, author="sam", reason="hand edit")
    with pytest.raises(store.ProposalError, match="version 1 of triage, but version 2 \\(by sam\\)"):
        ratchet.accept_threshold_proposal(con, p.proposal_id, by="ana")
    assert current_thresholds(con, WF).floors == {"fields_match": 0.75}
    assert store.get_proposal(con, p.proposal_id)["status"] == "draft"
    assert con.execute("SELECT count(*) FROM events WHERE kind = 'proposal_accepted'").fetchone()[0] == 0
    with pytest.raises(store.ProposalError, match="needs who"):
        ratchet.accept_threshold_proposal(con, p.proposal_id, by=" ")


def test_never_loosens_and_respects_the_minimum_step(con):
    record_thresholds(con, WF, {"floors": {"fields_match": 0.95, "json_valid": 0.975}}, author="sam", reason="strict")
    a = ratchet.analyze_threshold_ratchet(con, WF)
    fm, jv = a["metrics"]["fields_match"], a["metrics"]["json_valid"]
    assert fm["candidate"] == pytest.approx(0.86) and fm["action"] == "keep" and fm["proposed"] is None
    assert "never loosens" in fm["why"]
    assert jv["candidate"] == 0.98 and jv["action"] == "keep" and "less than 0.01 above" in jv["why"]
    assert a["changes"] == {} and a["config"]["floors"] == {"fields_match": 0.95, "json_valid": 0.975}
    assert ratchet.propose_threshold_ratchet(con, WF, period="2025-03") is None
    assert store.list_proposals(con) == []
    # with a smaller step the json_valid floor does move up, and the fields_match floor stays
    p = ratchet.propose_threshold_ratchet(con, WF, period="2025-03", min_step=0.005)
    assert p.payload["config"]["floors"] == {"fields_match": 0.95, "json_valid": 0.98}


def test_nothing_without_enough_shipped_releases(con):
    a = ratchet.analyze_threshold_ratchet(con, WF, min_releases=4)
    assert len(a["releases"]) == 3 and a["changes"] == {}
    assert a["nothing_because"] == ("only 3 release(s) qualify as evidence (SHIP or approved, not rolled back, a "
                                    "valid eval run on suite v1); at least 4 needed")
    assert ratchet.propose_threshold_ratchet(con, WF, period="2025-03", min_releases=4) is None
    # as of a time before any gate decision was recorded (they carry the wall clock): no evidence
    early = ratchet.analyze_threshold_ratchet(con, WF, now=T0 + timedelta(hours=12))
    assert early["releases"] == [] and early["excluded"] == [{"release": "v1.0.0", "why": "no gate decision"}]
    assert ratchet.analyze_threshold_ratchet(con, "other")["nothing_because"].startswith("the workflow has no suite")
    assert store.list_proposals(con) == []


def test_a_set_latency_budget_is_tightened_when_releases_are_confidently_under_it(tmp_path):
    with open_warehouse(tmp_path / "w.duckdb") as c:
        build(c, latency=500.0)
        record_thresholds(c, WF, {**BASE, "latency_p95_budget_ms": 5000}, author="sam", reason="budget")
        a = ratchet.analyze_threshold_ratchet(c, WF)
        lat = a["budgets"]["latency_p95_budget_ms"]
        # samples take 500, 501, 502 ms: p95 502 ms, upper bound 502; + 10% = 552.2 -> 560 (tens, rounded up)
        assert [b["high"] for b in lat["bounds"]] == [502.0, 502.0, 502.0]
        assert (lat["action"], lat["proposed"]) == ("tighten", 560.0)
        assert a["changes"]["latency_p95_budget_ms"] == [5000.0, 560.0]
        p = ratchet.propose_threshold_ratchet(c, WF, period="2025-03")
        assert p.payload["config"]["latency_p95_budget_ms"] == 560.0 and p.base_version == "2"
        assert "latency_p95_budget_ms 5000→560" in p.title
