"""An undecided canary through the `relops` command (issue 15): a low-traffic canary without
enough evidence exits 2 (as a REVIEW), says how many more canary requests and how long a
decision needs, and promoting it to full is refused unless overridden — the override records
the waived canary problem."""

from __future__ import annotations

import json
import re

import pytest

from relops_pipeline.cli import EXIT_BAD_INPUT, main
from relops_pipeline.lib.warehouse import open_warehouse


def cli(capsys, home, *argv):
    code = main(["--home", str(home), *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """doc-qa at 5 % of the demo's traffic on the day v2.4.0's canary starts: a few dozen canary
    requests, too few for a decision either way."""
    from relops_pipeline.demo.traces import generate_demo_traces

    home = tmp_path_factory.mktemp("canary-cli") / "home"
    mp = pytest.MonkeyPatch()
    mp.setenv("RELOPS_HOME", str(home))
    mp.setenv("DAGSTER_HOME", str(home / "dagster"))
    assert main(["--home", str(home), "init", "--example"]) == 0
    generate_demo_traces(home / "landing" / "demo", scale=0.05, days=[53], workflows=["doc-qa"])
    assert main(["--home", str(home), "ingest", str(home / "landing" / "demo")]) == 0
    for version in ("v2.3.0", "v2.4.0"):
        assert main(["--home", str(home), "release", "register", str(home / "releases" / "doc-qa" / f"{version}.yaml"),
                     "--no-eval", "--by", "li.wei"]) == 0
    for version, stage in (("v2.3.0", "full"), ("v2.4.0", "canary")):
        assert main(["--home", str(home), "rollout", "doc-qa", version, "--stage", stage, "--by", "li.wei",
                     "--override", "--reason", "test: no gate yet"]) == 0
    yield home
    mp.undo()


def test_undecided_canary_exits_2_and_says_what_it_needs(home, capsys):
    code, out, err = cli(capsys, home, "canary", "doc-qa", "v2.4.0", "--json")
    assert code == 2, err
    doc = json.loads(out)
    assert doc["verdict"] == "inconclusive" and doc["response"] is None  # nothing is rolled back
    # A handful of canary requests (seeded, so always the same): not even a first judgement yet.
    assert re.fullmatch(r"the first judgement needs at least \d+ more canary requests \(about [\d.]+ h at the "
                        r"current [\d.]+ canary requests per hour\)", doc["needs"]), doc["needs"]
    assert doc["needs"] in doc["description"]
    code, out, _ = cli(capsys, home, "canary", "doc-qa", "v2.4.0")
    assert code == 2
    assert out.startswith("doc-qa--v2.4.0: canary INCONCLUSIVE") and "more canary requests" in out
    assert "needs --override" in out
    with open_warehouse(home / "warehouse" / "relops.duckdb") as con:
        verdict, result = con.execute("SELECT verdict, result FROM canary_analyses WHERE release_key = "
                                      "'doc-qa--v2.4.0' ORDER BY computed_at DESC LIMIT 1").fetchone()
    stored = json.loads(result)
    assert verdict == "inconclusive" and stored["needs"]["canary_requests"] > 0
    assert stored["looks"] and stored["looks"][-1]["n_canary"] < 100


def test_promoting_an_undecided_canary_needs_an_override_which_is_recorded(home, capsys):
    cli(capsys, home, "canary", "doc-qa", "v2.4.0")
    code, _, err = cli(capsys, home, "rollout", "doc-qa", "v2.4.0", "--stage", "full", "--by", "li.wei")
    assert code == EXIT_BAD_INPUT
    assert "canary: doc-qa--v2.4.0 is inconclusive (the first judgement needs at least " in err and "--override" in err
    code, out, err = cli(capsys, home, "rollout", "doc-qa", "v2.4.0", "--stage", "full", "--by", "li.wei",
                         "--override", "--reason", "low traffic, reviewed by hand", "--json")
    assert code == 0, err
    with open_warehouse(home / "warehouse" / "relops.duckdb") as con:
        refused, done = con.execute(
            "SELECT list(payload ORDER BY seq) FILTER (WHERE kind = 'refused'), "
            "list(payload ORDER BY seq) FILTER (WHERE kind = 'rollout') FROM events "
            "WHERE release_key = 'doc-qa--v2.4.0'").fetchone()
    assert any("is inconclusive" in p for p in json.loads(refused[-1])["problems"])
    last = json.loads(done[-1])
    assert last["stage"] == "full" and last["override"] is True
    assert any(w.startswith("canary: doc-qa--v2.4.0 is inconclusive") for w in last["waived"])
