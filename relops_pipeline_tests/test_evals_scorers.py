"""Scorers: each type on passing and failing outputs, errors, and the LLM judge against a local
HTTP server (127.0.0.1, ephemeral port) that returns canned judge answers."""

from __future__ import annotations

import json
import socket
import sys
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from relops_pipeline.lib.evals.model import Case, SampleResult, Score
from relops_pipeline.lib.evals.scorers import (
    build_scorers,
    first_number,
    parse_judge_answer,
    score_sample,
)


def case(expected=None, **kw) -> Case:
    return Case(id="c1", input={"vars": {"ticket": "I was charged twice"}}, expected=expected or {}, **kw)


def run(configs, expected, output, error=None) -> dict[str, Score]:
    scores = score_sample(build_scorers(configs), case(expected),
                          SampleResult(case_id="c1", sample=0, output=output, error=error))
    assert len({s.metric for s in scores}) == len(scores)
    for s in scores:
        assert 0.0 <= s.score <= 1.0
    return {s.metric: s for s in scores}


def test_exact_match_normalises_whitespace_only():
    assert run([{"type": "exact_match"}], {"reference": "a  b\n c"}, " a b c ")["exact_match"].passed
    s = run([{"type": "exact_match"}], {"reference": "A b"}, "a b")["exact_match"]
    assert (s.score, s.passed) == (0.0, False)
    assert run([{"type": "exact_match", "ignore_case": True}], {"reference": "A b"}, "a b")["exact_match"].passed


def test_contains_and_not_contains():
    exp = {"contains": ["refund", "order"], "not_contains": ["sorry"]}
    s = run([{"type": "contains"}], exp, "Your refund for order 12 is on its way")["contains"]
    assert (s.score, s.passed) == (1.0, True)
    s = run([{"type": "contains"}], exp, "Sorry, sorry: refund denied")["contains"]
    # 'refund' present (1 of 3 ok), 'order' missing, 'sorry' (lower case) present
    assert s.score == pytest.approx(1 / 3) and not s.passed
    assert "order" in s.detail and "sorry" in s.detail


def test_regex_and_not_applicable():
    assert run([{"type": "regex"}], {"regex": r"^INC-\d+$"}, "INC-42")["regex"].passed
    assert not run([{"type": "regex"}], {"regex": r"^INC-\d+$"}, "inc-42")["regex"].passed
    assert run([{"type": "regex"}], {"regex": "("}, "x")["regex"].detail.startswith("invalid regex")
    # no expectation -> no score at all
    assert run([{"type": "regex"}, {"type": "exact_match"}, {"type": "numeric"}], {}, "x") == {}


def test_json_valid_schema_and_fields():
    exp = {
        "json_schema": {"type": "object", "required": ["category"],
                        "properties": {"category": {"enum": ["billing", "tech"]}}},
        "fields": {"category": "billing", "meta.tags.0": "refund", "meta.urgent": True},
    }
    good = json.dumps({"category": "billing", "meta": {"tags": ["refund"], "urgent": True}})
    got = run([{"type": "json"}], exp, good)
    assert {m: s.passed for m, s in got.items()} == {"json_valid": True, "json_schema": True, "fields_match": True}

    bad = json.dumps({"category": "sales", "meta": {"tags": [], "urgent": 1}})
    got = run([{"type": "json"}], exp, bad)
    assert got["json_valid"].passed
    assert not got["json_schema"].passed and "category" in got["json_schema"].detail
    # all three fields wrong: category differs, tags.0 missing, urgent 1 is not true
    assert got["fields_match"].score == 0.0 and "meta.tags.0: missing" in got["fields_match"].detail

    got = run([{"type": "json"}], exp, "not json")
    assert [s.score for s in got.values()] == [0.0, 0.0, 0.0]

    fenced = "```json\n" + good + "\n```"
    got = run([{"type": "json"}], exp, fenced)
    assert not got["json_valid"].passed and "code fence" in got["json_valid"].detail
    got = run([{"type": "json", "allow_fences": True}], exp, fenced)
    assert all(s.passed for s in got.values())

    # by default only cases with something to check; apply_to: all scores validity on every case
    assert run([{"type": "json"}], {}, "{}") == {}
    assert set(run([{"type": "json", "apply_to": "all"}], {}, "not json")) == {"json_valid"}
    assert not run([{"type": "json", "apply_to": "all"}], {}, "not json")["json_valid"].passed
    assert set(run([{"type": "json", "prefix": "reply_"}], {"fields": {"a": 1}}, '{"a": 1}')) == {
        "reply_json_valid", "reply_fields_match"}


def test_numeric_tolerance():
    assert first_number("total: $1,234.50 (was 1300)") == 1234.5
    assert first_number("-3e2 degrees") == -300.0
    assert first_number("none") is None
    assert run([{"type": "numeric", "tolerance": 0.01}], {"number": 3.14}, "pi is about 3.141")["numeric"].passed
    s = run([{"type": "numeric", "tolerance": 0.01}], {"number": 3.14}, "pi is 3.2")["numeric"]
    assert not s.passed and "3.2" in s.detail
    assert run([{"type": "numeric", "rel_tolerance": 0.05}], {"number": 100}, "104")["numeric"].passed
    # the case's tolerance overrides the config
    assert run([{"type": "numeric"}], {"number": 100, "tolerance": 5}, "104")["numeric"].passed
    assert not run([{"type": "numeric"}], {"number": 1}, "no digits")["numeric"].passed


def test_similarity_uses_rapidfuzz_token_set_ratio():
    from rapidfuzz import fuzz, utils

    ref, out = "The refund was issued today", "today, the refund was issued!"
    s = run([{"type": "similarity", "threshold": 0.8}], {"reference": ref}, out)["similarity"]
    assert s.score == pytest.approx(fuzz.token_set_ratio(ref, out, processor=utils.default_process) / 100)
    assert s.score == 1.0 and s.passed
    s = run([{"type": "similarity", "threshold": 0.8}], {"reference": ref}, "We cannot help with that")["similarity"]
    assert s.score < 0.8 and not s.passed


@pytest.fixture
def custom_module():
    mod = types.ModuleType("relops_test_custom_scorers")

    def polite(case, output):
        return "please" in output.lower()

    def length_ratio(case, output):
        return min(1.0, len(output) / 10)

    def boom(case, output):
        raise RuntimeError("kaput")

    def too_big(case, output):
        return 3.0

    def only_billing(case, output):
        return None if "billing" not in case.tags else Score("billing_ok", 1.0, True, "ok")

    for fn in (polite, length_ratio, boom, too_big, only_billing):
        setattr(mod, fn.__name__, fn)
    sys.modules[mod.__name__] = mod
    yield mod.__name__
    del sys.modules[mod.__name__]


def test_python_scorer(custom_module):
    cfg = [
        {"type": "python", "callable": f"{custom_module}:polite"},
        {"type": "python", "callable": f"{custom_module}:length_ratio", "name": "length", "threshold": 0.9},
        {"type": "python", "callable": f"{custom_module}:boom"},
        {"type": "python", "callable": f"{custom_module}:too_big"},
        {"type": "python", "callable": f"{custom_module}:only_billing"},
    ]
    got = run(cfg, {}, "Please wait")
    assert got["polite"].passed and got["polite"].score == 1.0
    assert got["length"].score == pytest.approx(1.0) and got["length"].passed
    assert not got["boom"].passed and got["boom"].detail == "scorer error: RuntimeError: kaput"
    assert not got["too_big"].passed and "outside [0, 1]" in got["too_big"].detail
    assert "billing_ok" not in got  # None -> not applicable
    got = run(cfg[1:2], {}, "Pls")
    assert got["length"].score == pytest.approx(0.3) and not got["length"].passed


def test_errored_sample_gets_applicable_metrics_as_failures():
    cfg = [{"type": "exact_match"}, {"type": "contains"}, {"type": "json", "apply_to": "all"}, {"type": "regex"}]
    got = run(cfg, {"reference": "x", "contains": ["x"]}, None, error="timeout after 30 s")
    # regex does not apply (no expected.regex); json_valid applies to every case (apply_to: all)
    assert set(got) == {"exact_match", "contains", "json_valid"}
    assert all(s.score == 0.0 and not s.passed and s.detail == "sample error: timeout after 30 s"
               for s in got.values())
    got = run(cfg, {"reference": "x"}, None)
    assert got["exact_match"].detail == "sample error: no output"


def test_build_scorers_rejects_bad_configs():
    with pytest.raises(ValueError, match=r"scorers\[0\]: unknown type 'fuzzy'"):
        build_scorers([{"type": "fuzzy"}])
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['treshold'\]"):
        build_scorers([{"type": "similarity", "treshold": 0.5}])
    with pytest.raises(ValueError, match=r"scorers\[1\]: metric name 'exact_match' is already"):
        build_scorers([{"type": "exact_match"}, {"type": "exact_match"}])
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz'"):
        build_scorers([{"type": "python", "callable": "no_such_module_xyz:fn"}])
    with pytest.raises(ValueError, match="threshold must be in"):
        build_scorers([{"type": "similarity", "threshold": 80}])
    with pytest.raises(ValueError, match="RELOPS_TEST_UNSET_KEY"):
        build_scorers([{"type": "llm_judge", "url": "http://127.0.0.1:9", "model": "m",
                        "api_key_env": "RELOPS_TEST_UNSET_KEY", "rubric": "r"}])


def test_parse_judge_answer_variants():
    assert parse_judge_answer('{"score": 0.4, "reason": "ok"}') == (0.4, "ok", None)
    assert parse_judge_answer('Sure!\n```json\n{"score": "0.9", "reason": "r"}\n```')[0] == 0.9
    value, _, note = parse_judge_answer('I rate it {"score": 7, "reason": "good"} overall.')
    assert value == 1.0 and "clamped" in note
    with pytest.raises(ValueError, match="no JSON object"):
        parse_judge_answer("8/10, pretty good")
    with pytest.raises(ValueError):
        parse_judge_answer('{"reason": "no score"}')


# --- LLM judge against a local server -------------------------------------------------------

CANNED = {
    "good": (200, {"content": '{"score": 0.8, "reason": "mentions the refund"}'}),
    "fenced": (200, {"content": 'Here is my grade:\n```json\n{"score": 0.3, "reason": "vague"}\n```'}),
    "clamp": (200, {"content": 'Grade: {"score": 1.7, "reason": "excellent"} -- done'}),
    "malformed": (200, {"content": "The answer is pretty good, 8/10."}),
    "notjson": (200, {"raw": "<html>oops</html>"}),
    "down": (503, {"raw": "overloaded"}),
    "forbidden": (403, {"raw": "no"}),
}


class JudgeHandler(BaseHTTPRequestHandler):
    requests: list[dict] = []
    flaky_left = {"n": 0}

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        JudgeHandler.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        user = body["messages"][-1]["content"]
        key = next((k for k in list(CANNED) + ["flaky"] if f"CANNED:{k}" in user), "good")
        if key == "flaky":
            if JudgeHandler.flaky_left["n"] > 0:
                JudgeHandler.flaky_left["n"] -= 1
                key = "down"
            else:
                key = "good"
        status, payload = CANNED[key]
        if "raw" in payload:
            data = payload["raw"].encode()
        else:
            data = json.dumps({"choices": [{"message": {"role": "assistant", "content": payload["content"]}}]}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def judge_url():
    JudgeHandler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), JudgeHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def judge(url, rubric_key, output="Your refund is on its way", **cfg):
    conf = {"type": "llm_judge", "url": url, "model": "judge-1", "backoff_s": 0, "timeout_s": 5,
            "max_retries": 2, **cfg}
    return score_sample(build_scorers([conf]), case({"judge_rubric": f"Mentions the refund. CANNED:{rubric_key}"}),
                        SampleResult(case_id="c1", sample=0, output=output))


def test_judge_good_answer_and_request_shape(judge_url, monkeypatch):
    monkeypatch.setenv("RELOPS_TEST_JUDGE_KEY", "sk-test")
    [s] = judge(judge_url, "good", api_key_env="RELOPS_TEST_JUDGE_KEY")
    assert (s.metric, s.score, s.passed, s.detail) == ("llm_judge", 0.8, True, "mentions the refund")
    [req] = JudgeHandler.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["auth"] == "Bearer sk-test"
    assert req["body"]["model"] == "judge-1"
    user = req["body"]["messages"][-1]["content"]
    # rubric, the case input and the output are all in the prompt
    assert "Mentions the refund" in user and "I was charged twice" in user and "Your refund is on its way" in user


def test_judge_fenced_clamped_and_threshold(judge_url):
    [s] = judge(judge_url, "fenced")
    assert (s.score, s.passed) == (0.3, False)
    [s] = judge(judge_url, "fenced", threshold=0.25)
    assert s.passed
    [s] = judge(judge_url, "clamp")
    assert s.score == 1.0 and s.passed and "clamped" in s.detail


def test_judge_malformed_answers_fail_closed(judge_url):
    [s] = judge(judge_url, "malformed")
    assert (s.score, s.passed) == (0.0, False)
    assert s.detail.startswith("judge error: no JSON object with a numeric 'score'")
    [s] = judge(judge_url, "notjson")
    assert not s.passed and s.detail.startswith("judge error: response is not JSON")
    [s] = judge(judge_url, "forbidden")
    assert not s.passed and s.detail.startswith("judge error: HTTP 403")
    assert len(JudgeHandler.requests) == 3  # 4xx other than 429 is not retried


def test_judge_retries_then_gives_up(judge_url):
    JudgeHandler.flaky_left["n"] = 1
    [s] = judge(judge_url, "flaky")
    assert s.passed and len(JudgeHandler.requests) == 2
    JudgeHandler.requests.clear()
    [s] = judge(judge_url, "down", max_retries=2)
    assert not s.passed and "unreachable after 3 attempt(s) (HTTP 503)" in s.detail
    assert len(JudgeHandler.requests) == 3


def test_judge_unreachable_server_and_rubric_rules():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    [s] = judge(f"http://127.0.0.1:{port}", "good", max_retries=1)
    assert (s.score, s.passed) == (0.0, False)
    assert s.detail.startswith("judge error: unreachable after 2 attempt(s) (ConnectError")

    # no rubric anywhere -> the judge does not apply; a config rubric makes it apply
    scorers = build_scorers([{"type": "llm_judge", "url": "http://127.0.0.1:9", "model": "m"}])
    assert scorers[0].metrics(case({})) == []
    scorers = build_scorers([{"type": "llm_judge", "url": "http://127.0.0.1:9", "model": "m", "rubric": "polite"}])
    assert scorers[0].metrics(case({})) == ["llm_judge"]
    # an errored sample is not sent to the judge
    [s] = score_sample(scorers, case({}), SampleResult(case_id="c1", sample=0, error="boom"))
    assert s.detail == "sample error: boom"
