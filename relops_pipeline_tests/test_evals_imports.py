"""Importers of existing eval-harness results: promptfoo v1-v3, Inspect .json/.eval, relops JSONL.

Expected counts were established by reading the fixture files (see the comment on each row);
they are not computed with the code under test.
"""

from __future__ import annotations

import copy
import json
import zipfile

import pytest

from relops_pipeline.lib.evals.imports import (
    ImportFormatError,
    detect_format,
    import_results,
    list_variants,
)
from relops_pipeline_tests.conftest import FIXTURES

PF = FIXTURES / "promptfoo"
IN = FIXTURES / "inspect_ai"


def counts(data):
    return len(data.case_ids), len(data.samples), sum(len(v) for v in data.scores.values())


def check_invariants(data):
    assert len({(s.case_id, s.sample) for s in data.samples}) == len(data.samples)
    assert set(data.scores) == {(s.case_id, s.sample) for s in data.samples}
    assert {s.case_id for s in data.samples} == set(data.case_ids) == set(data.must_pass)
    for scores in data.scores.values():
        assert len({s.metric for s in scores}) == len(scores)
        for s in scores:
            assert 0.0 <= s.score <= 1.0, s


# (file, variant, cases, samples, scores)
PROMPTFOO = [
    # v1; 4 results = 2 prompts ("Rephrase this from English to Pirate", "Pretend you're a pirate")
    # x 2 vars (body: Hello world / I'm hungry); no assertions -> only the 'pass' metric per sample.
    ("simple-test.output.json", "0", 2, 2, 2),
    ("simple-test.output.json", "1", 2, 2, 2),
    # v1; 8 results = 2 prompts x 4 years (1950, 1984, 2020, 2023); 'pass' only.
    ("multishot.output.json", "1", 4, 4, 4),
    # v1; 8 results = 2 prompts x 4 (language, body) combos (French/Pirate x Hello world/I'm hungry).
    ("js-config.output.json", "0", 4, 4, 4),
    # v2; 10 results = 2 prompts (tweet / Instagram post) x 5 topics; 'pass' only.
    ("replicate-llama4-scout.output.json", "0", 5, 5, 5),
    # v3; 8 results = 2 prompts x 4 tests, gradingResult "No assertions" -> 'pass' only.
    ("simple-cli.output.json", "0", 4, 4, 4),
    # v3; 4 results = 2 providers x 2 tests. Test 0 has 4 componentResults (cost, latency,
    # contains, llm-rubric), test 1 has 3 (cost, latency, llm-rubric); +1 'pass' each -> 5 + 4 = 9.
    ("sample-export.json", "openai:gpt-5", 2, 2, 9),
    ("sample-export.json", "openai:gpt-5-mini", 2, 2, 9),
]

INSPECT = [
    # samples[] has ids 1, 2, 3 (epoch 1), one 'match' score each (C, C, I).
    ("2025-05-12T20-28-13-04-00_popularity.json", 3, 3, 3),
    # samples[] ids 1-3, one 'model_graded_fact' score each.
    ("2025-05-12T20-28-26-04-00_security-guide.json", 3, 3, 3),
    # one sample, 'match' = "I".
    ("log_formats.json", 1, 1, 1),
    # one sample, 'match' = "C".
    ("log_read_sample.json", 1, 1, 1),
    # one sample, 'model_graded_fact' = "C".
    ("2024-11-05T13-31-45-05-00_input-task_8zXjbRzCWrL9GXiXo2vus9.json", 1, 1, 1),
    # zip: samples/1_epoch_1.json .. samples/10_epoch_1.json; every "scores" is {} (unscored run).
    ("2025-02-11T15-17-00-05-00_popularity_dPiJifoWeEQBrfWsAopzWr.eval", 10, 10, 0),
    # zip: 10 sample files, one 'match' score each (reductions.json: 8 of 10 correct).
    ("2025-02-11T15-18-04-05-00_popularity_mj7khqpMM4GBCfVQozKgzB.eval", 10, 10, 10),
    # zip: samples/1_epoch_1.json, one 'choice' score "I".
    ("mmlu-summary-choices.eval", 1, 1, 1),
]


@pytest.mark.parametrize("name,variant,n_cases,n_samples,n_scores", PROMPTFOO)
def test_promptfoo_fixture_counts(name, variant, n_cases, n_samples, n_scores):
    data = import_results(PF / name, None, workflow="demo", version="v1", variant=variant)
    assert data.source == "import:promptfoo"
    assert counts(data) == (n_cases, n_samples, n_scores)
    check_invariants(data)
    assert any("not imported" in n for n in data.notes)  # every fixture has a second variant


@pytest.mark.parametrize("name,n_cases,n_samples,n_scores", INSPECT)
def test_inspect_fixture_counts(name, n_cases, n_samples, n_scores):
    assert detect_format(IN / name) == "inspect"
    data = import_results(IN / name, None, workflow="demo", version="v1")
    assert data.source == "import:inspect"
    assert counts(data) == (n_cases, n_samples, n_scores)
    check_invariants(data)


def test_promptfoo_multi_variant_file_is_refused_with_the_list():
    with pytest.raises(ImportFormatError) as exc:
        import_results(PF / "sample-export.json", "promptfoo", workflow="demo", version="v1")
    msg = str(exc.value)
    assert msg.startswith(str(PF / "sample-export.json"))
    assert "2 provider/prompt variants" in msg and "--variant" in msg
    assert "[0] provider=openai:gpt-5 " in msg and "[1] provider=openai:gpt-5-mini " in msg
    assert len(list_variants(PF / "sample-export.json")) == 2
    with pytest.raises(ImportFormatError, match="'openai' matches no variant"):
        import_results(PF / "sample-export.json", None, workflow="d", version="v1", variant="openai")
    # both variants share the prompt id: a prompt-id prefix is ambiguous here
    with pytest.raises(ImportFormatError, match="matches 2 variants"):
        import_results(PF / "sample-export.json", None, workflow="d", version="v1", variant="cd59d97e")


def test_promptfoo_v3_values():
    data = import_results(PF / "sample-export.json", None, workflow="demo", version="v1", variant="openai:gpt-5")
    by_case = {s.case_id: s for s in data.samples}
    riddle = next(s for cid, s in by_case.items() if cid.startswith("i-speak-without-a-mouth"))
    # testIdx 0 / promptIdx 0 in the file: latencyMs 6197, cost 0.00208625, tokens 37 / 204
    assert (riddle.latency_ms, riddle.cost_usd, riddle.input_tokens, riddle.output_tokens) == (
        6197.0, 0.00208625, 37, 204)
    assert riddle.error is None  # 'error' is set by the failing latency assertion, not a failure of the call
    sc = {s.metric: s for s in data.scores[(riddle.case_id, 0)]}
    assert {m: (s.score, s.passed) for m, s in sc.items()} == {
        "pass": (0.0, False), "cost": (0.0, False), "latency": (0.0, False),
        "contains": (1.0, True), "llm-rubric": (1.0, True)}
    assert sc["pass"].detail.startswith("promptfoo score 0.5")
    assert data.must_pass == {cid: False for cid in data.case_ids}
    # case ids depend on the test, not on the provider or the run
    other = import_results(PF / "sample-export.json", None, workflow="demo", version="v2", variant="1")
    assert other.case_ids == data.case_ids and other.suite_version == data.suite_version


def test_promptfoo_case_ids_are_stable_across_layouts():
    # simple-cli (v3) and js-config (v1) run the same 4 tests: same ids and suite version
    a = import_results(PF / "simple-cli.output.json", None, workflow="d", version="v1", variant="0")
    b = import_results(PF / "js-config.output.json", None, workflow="d", version="v1", variant="0")
    assert sorted(a.case_ids) == sorted(b.case_ids)
    assert a.suite_version == b.suite_version and a.suite_version.startswith("imported-")
    assert "hello-world-french-" in " ".join(a.case_ids)


def _sample_export_with_repeats_and_error(tmp_path):
    doc = json.loads((PF / "sample-export.json").read_text())
    results = [r for r in doc["results"]["results"] if r["promptIdx"] == 0]
    rep = copy.deepcopy(results)
    for r in rep:  # --repeat 2: the evaluator gives repeat 1 the testIdx after the originals
        r["testIdx"] += 2
    rep[0].update(failureReason=2, error="API error: 500 upstream", success=False)
    rep[0]["response"] = {"error": "API error: 500 upstream"}
    del rep[0]["gradingResult"]
    rep[1]["testCase"]["metadata"]["must_pass"] = True
    doc["results"]["results"] = results + rep
    doc["results"]["prompts"] = doc["results"]["prompts"][:1]
    path = tmp_path / "repeat.json"
    path.write_text(json.dumps(doc))
    return path


def test_promptfoo_repeats_become_samples_and_errors_fill_metrics(tmp_path):
    path = _sample_export_with_repeats_and_error(tmp_path)
    data = import_results(path, None, workflow="demo", version="v1")  # one variant left: no choice needed
    # 2 tests x 2 repeats; scores: 9 for the originals + 4 for the good repeat of test 1 + the errored
    # repeat of test 0 gets its 5 applicable metrics (pass, cost, latency, contains, llm-rubric) as 0
    assert counts(data) == (2, 4, 18)
    check_invariants(data)
    riddle = next(c for c in data.case_ids if c.startswith("i-speak"))
    [err] = [s for s in data.samples if s.case_id == riddle and s.sample == 1]
    assert err.error == "API error: 500 upstream"
    errs = data.scores[(riddle, 1)]
    assert len(errs) == 5 and all(s.score == 0 and not s.passed and s.detail.startswith("sample error") for s in errs)
    assert sum(data.must_pass.values()) == 1  # metadata.must_pass on the other test
    assert not data.must_pass[riddle]
    assert any("2 result(s) are repeats" in n for n in data.notes)


def test_inspect_values_and_usage():
    data = import_results(IN / "2025-02-11T15-18-04-05-00_popularity_mj7khqpMM4GBCfVQozKgzB.eval", "inspect",
                          workflow="demo", version="v1")
    match = {cid: scs[0] for (cid, _), scs in data.scores.items()}
    # reductions.json: sample_id 3 and 7 have value 0, the other 8 are 1.0 ("C")
    assert sorted(cid for cid, s in match.items() if not s.passed) == ["3", "7"]
    assert all(s.score == (0.0 if cid in ("3", "7") else 1.0) for cid, s in match.items())
    s1 = next(s for s in data.samples if s.case_id == "1")
    # samples/1_epoch_1.json: content "Yes", usage 64 / 2, output.time 1.2038758330018027 s, no total_time
    assert (s1.output, s1.input_tokens, s1.output_tokens) == ("Yes", 64, 2)
    assert s1.latency_ms == pytest.approx(1203.8758330018027)

    sec = import_results(IN / "2025-05-12T20-28-26-04-00_security-guide.json", None, workflow="d", version="v1")
    s1 = next(s for s in sec.samples if s.case_id == "1")
    # model_usage (320 / 309) includes the model_graded_fact grader call (259 / 292); the solver's own
    # generate call used 61 / 17. total_time 6.282 s minus the scorer span (27.658084 -> 33.125961)
    assert (s1.input_tokens, s1.output_tokens) == (61, 17)
    assert s1.latency_ms == pytest.approx((6.282 - (33.125961 - 27.658084)) * 1000, abs=0.01)

    old = import_results(IN / "2024-11-05T13-31-45-05-00_input-task_8zXjbRzCWrL9GXiXo2vus9.json", None,
                         workflow="d", version="v1")
    # old 'step' events: generate used 53 / 46; the grader's 221 / 143 are left out
    assert (old.samples[0].input_tokens, old.samples[0].output_tokens) == (53, 46)
    pop = import_results(IN / "2025-05-12T20-28-13-04-00_popularity.json", None, workflow="d", version="v1")
    assert [(c, s[0].score) for (c, _), s in sorted(pop.scores.items())] == [("1", 1.0), ("2", 1.0), ("3", 0.0)]
    assert any("cancelled" in n for n in pop.notes)


def _rezip(src, dst, edit):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            for new_name, new_data in edit(name, data):
                zout.writestr(new_name, new_data)


def test_inspect_epochs_become_samples_and_scores_map(tmp_path):
    src = IN / "2025-02-11T15-18-04-05-00_popularity_mj7khqpMM4GBCfVQozKgzB.eval"
    # epoch 2 copies of every sample with these score values (epoch 1 keeps the file's values)
    values = {1: "P", 2: "N", 3: 0.25, 4: True, 5: "yes", 6: {"a": 1, "b": "I"}, 7: None, 8: 7, 9: "C", 10: "I"}

    def edit(name, data):
        yield name, data
        if name.startswith("samples/"):
            s = json.loads(data)
            s["epoch"] = 2
            s["scores"]["match"]["value"] = values[s["id"]]
            if s["id"] == 10:
                s["error"] = {"message": "RuntimeError: model timed out", "traceback": "..."}
            yield name.replace("_epoch_1", "_epoch_2"), json.dumps(s)

    path = tmp_path / "epochs.eval"
    _rezip(src, path, edit)
    data = import_results(path, None, workflow="demo", version="v1")
    # scores: epoch 1 -> 10; epoch 2 -> ids 1-5: 5, id 6: 2 (match.a, match.b), id 7: 0 (None is left
    # out), ids 8, 9: 2, id 10 (errored): its own 'match' + match.a and match.b filled as 0 -> 3. 22 in all.
    assert counts(data) == (10, 20, 22)
    check_invariants(data)
    assert {s.sample for s in data.samples} == {0, 1}
    ep2 = {cid: {s.metric: (s.score, s.passed) for s in scs} for (cid, k), scs in data.scores.items() if k == 1}
    assert ep2 == {
        "1": {"match": (0.5, False)},  # P: partial credit, not a pass
        "2": {"match": (0.0, False)},  # N
        "3": {"match": (0.25, False)},
        "4": {"match": (1.0, True)},
        "5": {"match": (1.0, True)},
        "6": {"match.a": (1.0, True), "match.b": (0.0, False)},
        "7": {},
        "8": {"match": (1.0, True)},  # 7 clamped
        "9": {"match": (1.0, True)},
        "10": {"match": (0.0, False), "match.a": (0.0, False), "match.b": (0.0, False)},
    }
    assert any("1 score value(s) could not be mapped" in n for n in data.notes)
    assert any("1 score value(s) outside [0, 1] clamped" in n for n in data.notes)
    err = next(s for s in data.samples if s.case_id == "10" and s.sample == 1)
    assert err.error == "RuntimeError: model timed out"
    assert data.scores[("10", 1)][1].detail == "sample error: RuntimeError: model timed out"
    assert sum(1 for s in data.samples if s.error) == 1


def test_inspect_letters_exactly(tmp_path):
    src = IN / "2025-02-11T15-18-04-05-00_popularity_mj7khqpMM4GBCfVQozKgzB.eval"
    letters = {1: "C", 2: "I", 3: "P", 4: "N", 5: 0.7, 6: 0.3, 7: "0.9", 8: "false", 9: False, 10: 1}

    def edit(name, data):
        if name.startswith("samples/"):
            s = json.loads(data)
            s["scores"]["match"]["value"] = letters[s["id"]]
            data = json.dumps(s)
        yield name, data

    path = tmp_path / "letters.eval"
    _rezip(src, path, edit)
    data = import_results(path, None, workflow="demo", version="v1")
    got = {cid: (s[0].score, s[0].passed) for (cid, _), s in data.scores.items()}
    assert got == {"1": (1.0, True), "2": (0.0, False), "3": (0.5, False), "4": (0.0, False),
                   "5": (0.7, True), "6": (0.3, False), "7": (0.9, True), "8": (0.0, False),
                   "9": (0.0, False), "10": (1.0, True)}


JSONL_OK = [
    {"case_id": "refund-001", "sample": 0, "output": "Refund issued.", "must_pass": True,
     "scores": {"contains": 1, "polite": True, "judge": {"score": 0.4, "passed": False, "detail": "terse"}},
     "latency_ms": 812.5, "cost_usd": 0.0003, "input_tokens": 120, "output_tokens": 14},
    {"case_id": "refund-001", "sample": 1, "output": "Refund issued!", "scores": {"contains": 0.5, "polite": False}},
    {"case_id": "refund-001", "sample": 2, "error": "timeout after 30 s"},
    {"case_id": "billing:002", "sample": 0, "output": "ok\u2028still one line", "scores": {},
     "metadata": {"trace": "t1"}},
]


def write_jsonl(path, rows, extra_lines=()):
    lines = [json.dumps(r, ensure_ascii=False) for r in rows] + list(extra_lines)
    path.write_text("\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]) + "\n")
    return path


def test_jsonl_import(tmp_path):
    path = write_jsonl(tmp_path / "run.jsonl", JSONL_OK)
    assert detect_format(path) == "jsonl"
    data = import_results(path, None, workflow="demo", version="v1")
    # 4 lines, 2 cases; scores 3 + 2 + (errored sample: contains, polite, judge filled as 0) + 0 = 8
    assert counts(data) == (2, 4, 8)
    check_invariants(data)
    assert data.case_ids == ["refund-001", "billing:002"]
    assert data.must_pass == {"refund-001": True, "billing:002": False}
    first = {s.metric: s for s in data.scores[("refund-001", 0)]}
    assert (first["judge"].score, first["judge"].passed, first["judge"].detail) == (0.4, False, "terse")
    assert first["contains"].passed and first["polite"].score == 1.0
    assert data.scores[("refund-001", 1)][0].passed  # 0.5 counts as passed
    assert all(s.detail == "sample error: timeout after 30 s" for s in data.scores[("refund-001", 2)])
    s0 = data.samples[0]
    assert (s0.latency_ms, s0.cost_usd, s0.input_tokens, s0.output_tokens) == (812.5, 0.0003, 120, 14)
    assert data.samples[3].raw["metadata"] == {"trace": "t1"}
    assert data.samples[3].output == "ok\u2028still one line"  # U+2028 unescaped is not a line break
    # a single-line file is detected too
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps(JSONL_OK[0]))
    assert detect_format(one) == "jsonl"


def test_jsonl_bad_lines_are_all_reported_and_nothing_imported(tmp_path):
    bad = [
        '{"case_id": "a", "sample": 0, "output": "x", "scores": {"m": 1.5}}',  # line 6
        "not json",  # line 7
        '{"case_id": "a b", "sample": -1, "output": "x", "latency": 3}',  # line 8
        '{"case_id": "refund-001", "sample": 0, "output": "dup"}',  # line 9
        '{"case_id": "refund-001", "sample": 7, "output": "x", "must_pass": false}',  # line 10
        '{"case_id": "c", "sample": 0}',  # line 11
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", JSONL_OK, bad)
    with pytest.raises(ImportFormatError) as exc:
        import_results(path, "jsonl", workflow="demo", version="v1")
    msg = str(exc.value)
    assert msg.startswith(f"{path}: ") and "nothing imported" in msg
    for expected in [
        "line 6: scores.m = 1.5 is outside [0, 1]",
        "line 7: not valid JSON",
        "line 8: unknown key(s) ['latency']",
        "line 8: case_id 'a b' must be",
        "line 8: sample -1 must be an integer >= 0",
        "line 9: case_id 'refund-001' sample 0 already on line 1",
        "line 10: must_pass False for case 'refund-001' contradicts line 1",
        "line 11: needs an output or an error",
    ]:
        assert expected in msg, expected
    assert len(exc.value.problems) == 8


def test_malformed_files_name_the_file_and_the_problem(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"results": {"version": 3, "results": [')
    with pytest.raises(ImportFormatError, match=r"broken\.json: not valid JSON for a promptfoo output"):
        import_results(broken, "promptfoo", workflow="d", version="v1")
    with pytest.raises(ImportFormatError, match=r"broken\.json: cannot tell the format"):
        import_results(broken, None, workflow="d", version="v1")

    shapes = tmp_path / "shapes.json"
    shapes.write_text(json.dumps({"version": 1, "results": ["oops"], "table": {}}))
    with pytest.raises(ImportFormatError, match=r"shapes\.json: malformed promptfoo results\n  - results\[0\]"):
        import_results(shapes, None, workflow="d", version="v1")

    not_pf = tmp_path / "other.json"
    not_pf.write_text(json.dumps({"foo": 1}))
    with pytest.raises(ImportFormatError, match=r"other\.json: not a promptfoo output"):
        import_results(not_pf, "promptfoo", workflow="d", version="v1")
    with pytest.raises(ImportFormatError, match=r"other\.json: not an Inspect log"):
        import_results(not_pf, "inspect", workflow="d", version="v1")

    no_samples = tmp_path / "nosamples.json"
    doc = json.loads((IN / "log_formats.json").read_text())
    del doc["samples"]
    no_samples.write_text(json.dumps(doc))
    with pytest.raises(ImportFormatError, match=r"nosamples\.json: the Inspect log has no samples"):
        import_results(no_samples, None, workflow="d", version="v1")

    dup = tmp_path / "dup.json"
    doc = json.loads((IN / "2025-05-12T20-28-13-04-00_popularity.json").read_text())
    doc["samples"][1]["id"] = 1
    del doc["samples"][2]["id"]
    dup.write_text(json.dumps(doc))
    with pytest.raises(ImportFormatError) as exc:
        import_results(dup, None, workflow="d", version="v1")
    assert "sample #2: id 1 epoch 1 appears twice" in str(exc.value)
    assert "sample #3: missing or invalid id None" in str(exc.value)

    zipped = tmp_path / "empty.eval"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("readme.txt", "hi")
    with pytest.raises(ImportFormatError, match=r"empty\.eval: not an Inspect \.eval log: no header\.json"):
        import_results(zipped, None, workflow="d", version="v1")

    with pytest.raises(ImportFormatError, match="unknown format 'csv'"):
        import_results(broken, "csv", workflow="d", version="v1")
    with pytest.raises(ImportFormatError, match="no such file"):
        import_results(tmp_path / "missing.json", None, workflow="d", version="v1")
