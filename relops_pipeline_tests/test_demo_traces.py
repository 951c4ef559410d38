"""The demo world's synthetic traces and the bench generator: shape, determinism, schedule, drift.

The world is generated once per module at scale 0.05 over the full 8 weeks (well under a
second) so the drift weeks and every canary window are covered. The doc-qa v2.4.0 canary
(50 % of ~800 traces at scale 1) is measured on its own days at scale 5 (about a second).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from relops_pipeline.demo.traces import (
    DEFAULT_START,
    DRIFT_START_DAY,
    MALFORMED_LINES,
    PRICES_PER_MTOK,
    generate_demo_traces,
    release_schedule,
    release_tag,
    write_bench_traces,
)
from relops_pipeline.lib.signals import REFUSAL_PATTERNS

SCALE = 0.05
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")
DIGITS = re.compile(r"^[0-9]+$")


def _flat(attrs: list[dict]) -> dict:
    out = {}
    for a in attrs:
        (kind, value), = a["value"].items()
        if kind == "arrayValue":
            value = [next(iter(v.values())) for v in value["values"]]
        out[a["key"]] = value
    return out


def _read_world(root: Path, files: list[str]):
    """Parse every file: (spans, bad lines). A span is a dict of what the tests look at."""
    spans, bad = [], []
    for rel in files:
        for line_no, line in enumerate((root / rel).read_text(encoding="utf-8").splitlines(), start=1):
            try:
                doc = json.loads(line)
            except ValueError:
                bad.append((rel, line_no, line))
                continue
            for rs in doc["resourceSpans"]:
                res = _flat(rs["resource"]["attributes"])
                for ss in rs["scopeSpans"]:
                    assert set(ss["scope"]) >= {"name", "version"}
                    for sp in ss["spans"]:
                        spans.append({"file": rel, "line": line_no, "res": res, "raw": sp,
                                      "attrs": _flat(sp["attributes"])})
    return spans, bad


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("landing")
    summary = generate_demo_traces(root, seed=7, scale=SCALE)
    spans, bad = _read_world(root, summary.files)
    return root, summary, spans, bad


def _week(span) -> int:
    start = int(span["raw"]["startTimeUnixNano"]) / 1e9
    t0 = datetime(DEFAULT_START.year, DEFAULT_START.month, DEFAULT_START.day, tzinfo=UTC).timestamp()
    return int((start - t0) // (7 * 86400)) + 1


def _start(span) -> datetime:
    return datetime.fromtimestamp(int(span["raw"]["startTimeUnixNano"]) / 1e9, tz=UTC).replace(tzinfo=None)


def test_files_one_per_workflow_per_day(world):
    root, summary, _, _ = world
    on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert on_disk == sorted(summary.files)  # no temp files left behind
    assert len(summary.files) == 2 * 56
    assert "support-triage/2026-09-28.otlp.jsonl" in summary.files
    assert "doc-qa/2026-11-22.otlp.jsonl" in summary.files
    assert summary.start == DEFAULT_START and summary.end == DEFAULT_START + timedelta(days=55)


def test_same_seed_same_bytes_and_days_are_independent(world, tmp_path):
    root, summary, _, _ = world
    again = generate_demo_traces(tmp_path / "a", seed=7, scale=SCALE)
    assert again.to_dict() | {"landing_dir": "", "seconds": 0} == summary.to_dict() | {"landing_dir": "", "seconds": 0}
    for rel in summary.files:
        assert (tmp_path / "a" / rel).read_bytes() == (root / rel).read_bytes(), rel
    # re-delivering one day reproduces that file exactly
    one = generate_demo_traces(tmp_path / "b", seed=7, scale=SCALE, days=[3], workflows=["support-triage"])
    assert one.files == ["support-triage/2026-10-01.otlp.jsonl"]
    assert (tmp_path / "b" / one.files[0]).read_bytes() == (root / one.files[0]).read_bytes()
    other = generate_demo_traces(tmp_path / "c", seed=8, scale=SCALE, days=[3], workflows=["support-triage"])
    assert (tmp_path / "c" / other.files[0]).read_bytes() != (root / one.files[0]).read_bytes()


def test_every_line_is_json_except_the_counted_malformed_ones(world):
    root, summary, spans, bad = world
    assert summary.malformed_lines == len(MALFORMED_LINES) == len(bad)
    assert sorted((b[0], b[1]) for b in bad) == sorted((m["file"], m["line"]) for m in summary.malformed)
    kinds = Counter(m["kind"] for m in summary.malformed)
    assert kinds == {"truncated": 4, "not_json": 3}
    for rel, line_no, line in bad:
        assert line_no > 1  # never the first line of a file (format sniffing reads the head)
        kind = next(m["kind"] for m in summary.malformed if m["file"] == rel and m["line"] == line_no)
        if kind == "truncated":
            assert line.startswith('{"resourceSpans":[{')
        else:
            assert not line.startswith("{")


def test_summary_counts_match_the_files(world):
    root, summary, spans, bad = world
    total_lines = sum(len((root / f).read_text(encoding="utf-8").splitlines()) for f in summary.files)
    assert summary.lines == total_lines
    assert summary.spans == len(spans)
    assert summary.bytes_written == sum((root / f).stat().st_size for f in summary.files)
    by_file = Counter(s["file"] for s in spans)
    assert {f: n for f, n in summary.spans_by_file.items() if n} == dict(by_file)
    by_rel: dict[str, Counter] = defaultdict(Counter)
    for s in spans:
        by_rel[s["res"]["service.name"]][s["res"].get("relops.release", "unknown")] += 1
    assert {w: dict(c) for w, c in by_rel.items()} == summary.spans_by_workflow_release
    no_release = [s for s in spans if "relops.release" not in s["res"]]
    assert summary.spans_without_release == len(no_release) > 0
    assert all("service.version" not in s["res"] for s in no_release)
    assert summary.traces == len({s["raw"]["traceId"] for s in spans})
    exp = summary.expected_ingest()
    assert exp == {"files": 112, "accepted_spans": len(spans), "rejected_lines": len(bad),
                   "unknown_release_spans": len(no_release)}
    assert 0.004 < len(no_release) / len(spans) < 0.02


def test_spans_have_the_otlp_genai_shape(world):
    _, _, spans, _ = world
    ops = Counter()
    by_trace = defaultdict(list)
    for s in spans:
        raw, a = s["raw"], s["attrs"]
        by_trace[raw["traceId"]].append(s)
        assert HEX32.match(raw["traceId"]) and HEX16.match(raw["spanId"])
        assert DIGITS.match(raw["startTimeUnixNano"]) and DIGITS.match(raw["endTimeUnixNano"])
        assert int(raw["endTimeUnixNano"]) > int(raw["startTimeUnixNano"])
        for attr in raw["attributes"]:
            if "intValue" in attr["value"]:
                assert isinstance(attr["value"]["intValue"], str)
        release = s["res"].get("relops.release")
        if release is not None:
            assert release == release_tag(s["res"]["service.name"], s["res"]["service.version"])
        op = a["gen_ai.operation.name"]
        ops[op] += 1
        if raw["status"].get("code") == 2:
            assert a["error.type"] and raw["events"][0]["name"] == "exception"
        else:
            assert raw["status"] == {} and "error.type" not in a
        if op == "chat" and "error.type" not in a:
            assert isinstance(a["gen_ai.response.finish_reasons"], list)
            assert int(a["gen_ai.usage.input_tokens"]) > 0
            model = a["gen_ai.request.model"]
            assert model in PRICES_PER_MTOK and a["gen_ai.response.model"].startswith(model)
            if "relops.release" in s["res"]:
                msgs = json.loads(a["gen_ai.input.messages"])
                assert msgs[0]["role"] == "user" and msgs[0]["parts"][0]["type"] == "text"
                out = json.loads(a["gen_ai.output.messages"])
                assert out[0]["role"] == "assistant"
                assert out[0]["finish_reason"] == a["gen_ai.response.finish_reasons"][0]
            else:
                assert a["gen_ai.system"] == "openai" and "gen_ai.input.messages" not in a
        if op == "retrieval":
            assert json.loads(a["gen_ai.retrieval.documents"] if "error.type" not in a else "[]") is not None
    assert set(ops) == {"invoke_agent", "chain", "chat", "retrieval", "execute_tool"}
    # one root per trace, every parent inside the trace
    for tid, group in by_trace.items():
        ids = {s["raw"]["spanId"] for s in group}
        roots = [s for s in group if "parentSpanId" not in s["raw"]]
        assert len(roots) == 1, tid
        assert all(s["raw"]["parentSpanId"] in ids for s in group if "parentSpanId" in s["raw"])
        root = roots[0]
        if "relops.release" in root["res"]:
            assert root["attrs"]["gen_ai.operation.name"] in ("invoke_agent", "chain")
            assert {"relops.topic", "relops.language"} <= set(root["attrs"])


def test_realistic_rates(world):
    _, _, spans, _ = world
    roots = [s for s in spans if "parentSpanId" not in s["raw"] and "relops.release" in s["res"]]
    chats = [s for s in spans if s["attrs"]["gen_ai.operation.name"] == "chat" and "relops.release" in s["res"]]
    ok = [s for s in chats if "error.type" not in s["attrs"]]
    fb = [s["attrs"]["relops.feedback"] for s in roots if "relops.feedback" in s["attrs"]]
    assert 0.10 < len(fb) / len(roots) < 0.20 and set(fb) == {"0", "1"}
    errs = sum(1 for s in roots if s["raw"]["status"].get("code") == 2)
    assert 0.002 < errs / len(roots) < 0.04
    finish = Counter(s["attrs"]["gen_ai.response.finish_reasons"][0] for s in ok)
    assert finish["stop"] / len(ok) > 0.75 and finish["tool_calls"] > 0 and finish["length"] > 0
    lat = sorted((int(s["raw"]["endTimeUnixNano"]) - int(s["raw"]["startTimeUnixNano"])) / 1e6 for s in ok)
    assert 500 < lat[len(lat) // 2] < 1300 and lat[int(len(lat) * 0.99)] > 2500
    grounded = [s for s in ok if s["res"]["service.name"] == "doc-qa" and "relops.score.groundedness" in s["attrs"]]
    assert len(grounded) > 0.8 * sum(1 for s in ok if s["res"]["service.name"] == "doc-qa")


def test_drift_from_week_6_only_in_support_triage(world):
    _, summary, spans, _ = world
    assert summary.drift_start == DEFAULT_START + timedelta(days=DRIFT_START_DAY)
    roots = [s for s in spans if "parentSpanId" not in s["raw"] and s["res"].get("service.name") == "support-triage"
             and "relops.release" in s["res"]]
    before = [s for s in roots if _week(s) <= 5]
    after = [s for s in roots if _week(s) >= 6]
    assert before and after
    assert all(s["attrs"]["relops.topic"] != "account-deletion" for s in before)
    share = sum(s["attrs"]["relops.topic"] == "account-deletion" for s in after) / len(after)
    assert 0.10 < share < 0.28
    assert all(_start(s) >= datetime(2026, 11, 2) for s in roots if s["attrs"]["relops.topic"] == "account-deletion")

    def ticket_chars(week_ok):
        lens = [len(json.loads(s["attrs"]["gen_ai.input.messages"])[0]["parts"][0]["content"])
                for s in spans if s["res"].get("service.name") == "support-triage" and "relops.release" in s["res"]
                and s["attrs"]["gen_ai.operation.name"] == "chat" and week_ok(_week(s))]
        return sum(lens) / len(lens)

    assert ticket_chars(lambda w: w >= 6) > 1.25 * ticket_chars(lambda w: w <= 5)
    assert abs(ticket_chars(lambda w: w <= 2) / ticket_chars(lambda w: 3 <= w <= 5) - 1) < 0.12
    docqa_topics = {s["attrs"]["relops.topic"] for s in spans if s["res"].get("service.name") == "doc-qa"
                    and "parentSpanId" not in s["raw"] and "relops.release" in s["res"]}
    assert "account-deletion" not in docqa_topics


def test_releases_follow_the_schedule_and_overlap_in_canaries(world):
    _, summary, spans, _ = world
    roots = [s for s in spans if "parentSpanId" not in s["raw"] and "relops.release" in s["res"]]
    by_release = defaultdict(list)
    for s in roots:
        by_release[s["res"]["relops.release"]].append(_start(s))
    schedule = {r.release: r for r in summary.releases}
    assert len(schedule) == 10 and set(by_release) == set(schedule)
    period_end = datetime(summary.end.year, summary.end.month, summary.end.day) + timedelta(days=1)
    for wf in ("support-triage", "doc-qa"):
        rels = [r for r in summary.releases if r.workflow == wf]
        assert len(rels) >= 3
        for _prev, new in zip(rels, rels[1:], strict=False):
            times = by_release[new.release]
            assert min(times) >= new.canary_start
            end = new.full_start or new.rolled_back_at or period_end  # still in canary at the end
            in_canary = [t for t in times if t < end]
            assert in_canary, new.release  # the canary got traffic ...
            # ... while the release it replaces kept serving the rest
            live = next(r for r in reversed(rels[: rels.index(new)])
                        if r.canary_start is None or (r.full_start and r.full_start <= new.canary_start))
            assert any(new.canary_start <= t < end for t in by_release[live.release]), new.release
            if new.rolled_back_at is not None:  # rolled back: no traffic after the rollback
                assert new.full_start is None and max(times) < new.rolled_back_at
            elif new.full_start is None:  # still in canary: the release it replaces keeps the rest
                assert max(by_release[live.release]) > max(times) - timedelta(hours=12)
            else:
                assert all(t < new.full_start for t in by_release[live.release] if t >= new.canary_start)
    models = {s["res"]["relops.release"]: s["attrs"]["gen_ai.request.model"] for s in spans
              if s["attrs"]["gen_ai.operation.name"] == "chat" and "relops.release" in s["res"]}
    assert models["support-triage@v1.3.0"] == "gpt-4o-mini" and models["support-triage@v1.4.0"] == "gpt-4.1-mini"
    assert models["doc-qa@v2.2.0"] == "gpt-4.1-nano" and models["doc-qa@v2.4.0"] == "gpt-5-mini"
    # only doc-qa v2.4.0 is still in canary when the period ends; every canary had 10 % but
    # low-traffic doc-qa v2.4.0's, which takes 50 %
    open_canaries = [r.release for r in summary.releases if r.canary_start and not (r.full_start or r.rolled_back_at)]
    assert open_canaries == ["doc-qa@v2.4.0"]
    assert {r.release: r.canary_share for r in summary.releases if r.canary_start and r.canary_share != 0.1} == {"doc-qa@v2.4.0": 0.5}


# --------------------------------------------------------------------------- the v2.4.0 canary

CANARY_SCALE = 5.0
_REFUSAL_RX = re.compile(REFUSAL_PATTERNS, re.I)


@pytest.fixture(scope="module")
def docqa_canary(tmp_path_factory):
    """doc-qa on the v2.4.0 canary days at scale 5, one row per trace with a release:
    (release, start, trace latency ms, refused, question had a pasted config, chat spans)."""
    rel = next(r for r in release_schedule() if r.release == "doc-qa@v2.4.0")
    first = (rel.canary_start.date() - DEFAULT_START).days
    root = tmp_path_factory.mktemp("canary")
    summary = generate_demo_traces(root, scale=CANARY_SCALE, days=range(first, 56), workflows=["doc-qa"])
    rows = []
    spans, _ = _read_world(root, summary.files)
    by_trace = defaultdict(list)
    for s in spans:
        if "relops.release" in s["res"]:
            by_trace[s["raw"]["traceId"]].append(s)
    for group in by_trace.values():
        root_span = next(s for s in group if "parentSpanId" not in s["raw"])
        chats = [s for s in group if s["attrs"]["gen_ai.operation.name"] == "chat"]
        refused = False
        for c in chats:  # what relops.lib.signals counts as a refusal
            if c["attrs"].get("gen_ai.response.finish_reasons") == ["content_filter"]:
                refused = True
            if "gen_ai.output.messages" in c["attrs"]:
                text = " ".join(p.get("content", "") for m in json.loads(c["attrs"]["gen_ai.output.messages"])
                                for p in m["parts"] if p["type"] == "text")
                refused = refused or bool(_REFUSAL_RX.search(text))
        question = next(s for s in group if s["attrs"]["gen_ai.operation.name"] == "retrieval")
        pasted = "Here is my config:" in question["attrs"]["gen_ai.retrieval.query.text"]
        raw = root_span["raw"]
        rows.append((root_span["res"]["relops.release"], _start(root_span),
                     (int(raw["endTimeUnixNano"]) - int(raw["startTimeUnixNano"])) / 1e6, refused, pasted, chats))
    return rel, summary, rows


def test_v2_4_0_canary_gets_its_share_until_the_period_ends(docqa_canary):
    rel, summary, rows = docqa_canary
    assert rel.full_start is None and rel.rolled_back_at is None
    assert rel.canary_start == datetime(2026, 11, 20, 10)  # day 53, Friday of week 8
    canary = [r for r in rows if r[0] == "doc-qa@v2.4.0"]
    live = [r for r in rows if r[0] == "doc-qa@v2.3.0"]
    assert {r[0] for r in rows} == {"doc-qa@v2.4.0", "doc-qa@v2.3.0"}
    assert min(r[1] for r in canary) >= rel.canary_start
    assert max(r[1] for r in canary).date() == summary.end  # served until the last generated day
    same_hours = [r for r in live if r[1] >= rel.canary_start]
    assert len(canary) >= 300 and abs(len(canary) / (len(canary) + len(same_hours)) - rel.canary_share) < 0.01


def test_v2_4_0_canary_regresses_latency_and_refusals_against_the_same_hours(docqa_canary):
    """Measured from the generated files: canary v2.4.0 against v2.3.0 serving the rest of the
    traffic in the same hours (not an earlier week)."""
    rel, _, rows = docqa_canary
    canary = [r for r in rows if r[0] == "doc-qa@v2.4.0"]
    base = [r for r in rows if r[0] == "doc-qa@v2.3.0" and r[1] >= rel.canary_start]
    lat_c, lat_b = np.array([r[2] for r in canary]), np.array([r[2] for r in base])
    p95_ratio = np.percentile(lat_c, 95) / np.percentile(lat_b, 95)
    assert 1.25 < p95_ratio < 1.5, p95_ratio  # documented: ~+37 %
    assert np.median(lat_c) > 1.2 * np.median(lat_b)
    assert sps.mannwhitneyu(lat_c, lat_b, alternative="greater").pvalue < 1e-10
    ref_c, ref_b = sum(r[3] for r in canary), sum(r[3] for r in base)
    rate_c, rate_b = ref_c / len(canary), ref_b / len(base)
    assert 0.025 < rate_c < 0.06 and rate_b < 0.02 and rate_c > 2.5 * rate_b, (rate_c, rate_b)
    table = [[ref_c, len(canary) - ref_c], [ref_b, len(base) - ref_b]]
    assert sps.fisher_exact(table, alternative="greater")[1] < 1e-3
    # the extra refusals are the questions with a pasted configuration
    pasted = [r for r in canary if r[4]]
    assert pasted and sum(r[3] for r in pasted) >= 0.3 * len(pasted)
    assert sum(r[3] for r in canary if not r[4]) / len(canary) < 0.025
    # gpt-5-mini spans do not send a temperature; v2.3.0's do
    for release, *_, chats in canary[:20] + base[:20]:
        model = chats[0]["attrs"]["gen_ai.request.model"]
        assert model == ("gpt-5-mini" if release == "doc-qa@v2.4.0" else "gpt-4.1-mini")
        assert ("gen_ai.request.temperature" in chats[0]["attrs"]) == (model != "gpt-5-mini")


def test_bench_traces(tmp_path):
    path = tmp_path / "bench.jsonl"
    n = write_bench_traces(path, 3000, seed=3)
    data = path.read_bytes()
    assert n == len(data)
    lines = data.decode("utf-8").splitlines()
    assert len(lines) == 3000
    tids = set()
    for line in lines:
        doc = json.loads(line)
        (rs,) = doc["resourceSpans"]
        res = _flat(rs["resource"]["attributes"])
        assert res["relops.release"] == release_tag(res["service.name"], res["service.version"])
        (sp,) = rs["scopeSpans"][0]["spans"]
        assert HEX32.match(sp["traceId"]) and HEX16.match(sp["spanId"])
        assert int(sp["endTimeUnixNano"]) > int(sp["startTimeUnixNano"])
        a = _flat(sp["attributes"])
        assert a["gen_ai.operation.name"] == "chat" and len(a) >= (8 if "error.type" in a else 11)
        assert 100 < len(a["gen_ai.input.messages"]) < 600
        tids.add(sp["traceId"])
    assert len(tids) == 3000
    assert 1000 < n / 3000 < 2500
    again = tmp_path / "again.jsonl"
    write_bench_traces(again, 3000, seed=3)
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(data).digest()
