"""Real clients, as their current releases send: the requests captured by
fixtures/real_clients/generate.py (see its PROVENANCE.md) are replayed byte for byte to a real
`relops serve`, `relops ingest` takes the spool, and every field of the client's truth file
(written from what the fake model server was asked and answered, not from any reader) is
checked against the span of each call in the warehouse. A call's span is the innermost span
whose interval holds the server's receipt and answer of that call.

Test ids name the client, the version of its package and the field, e.g.
`test_field[openllmetry-0.62.4-finish_reason]`."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import UTC, datetime
from typing import Any

import duckdb
import httpx
import pytest

from relops_pipeline.cli import main
from relops_pipeline.lib.readers.base import ReadContext
from relops_pipeline.lib.readers.otel_attributes import span_row
from relops_pipeline_tests.conftest import FIXTURES
from relops_pipeline_tests.procs import scaled
from relops_pipeline_tests.test_receiver import KEY, SERVE_YAML, Server

REAL = FIXTURES / "real_clients"
FIELDS = ("kind", "model", "input_tokens", "output_tokens", "finish_reason", "input_text", "output_text", "tool_calls",
          "latency_ms", "error", "error_type")
# The GenAI conventions name OpenAI's "tool_calls" finish reason "tool_call" (their enum); same fact.
SAME_REASON = {"tool_call": "tool_calls"}


def _truths() -> dict[str, dict]:
    return {d.name: json.loads((d / "truth.json").read_text()) for d in sorted(REAL.iterdir()) if (d / "truth.json").is_file()}


TRUTHS = _truths()


def _id(client: str, field: str = "") -> str:
    version = TRUTHS[client]["version"]
    return f"{client}-{version}-{field}" if field else f"{client}-{version}"


def _requests(client: str) -> list[tuple[str, dict[str, str], bytes]]:
    """(path, headers, body) of the captured requests, in the order they were sent."""
    out = []
    for body in sorted((REAL / client).glob("*.body")):
        _, _method, path = body.name[: -len(".body")].split("-", 2)
        headers = json.loads(body.with_name(body.name.replace(".body", ".headers.json")).read_text())
        out.append(("/" + path.replace("_", "/"), headers, body.read_bytes()))
    return out


def _replay(url: str, client: str) -> None:
    for path, captured, body in _requests(client):
        keep = {"content-type", "content-encoding", "user-agent"} | {k.lower() for k in captured if k.lower().startswith("x-langfuse")}
        headers = {k: v for k, v in captured.items() if k.lower() in keep}
        if captured.get("Authorization-Scheme") == "Basic":  # Langfuse: public key : secret key
            public = captured.get("x-langfuse-public-key", "pk")
            headers["Authorization"] = "Basic " + base64.b64encode(f"{public}:{KEY}".encode()).decode()
        else:
            headers["Authorization"] = f"Bearer {KEY}"
        r = httpx.post(f"{url}{path}", content=body, headers=headers, timeout=scaled(30))
        assert r.status_code == 200, (path, r.status_code, r.text)


def _ts(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).replace(tzinfo=None)


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict[str, Any]]:
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    """warehouse(client) -> {"spans": {call: span row}, "rejects": [...], "spans_total": n}: each
    client's captures replayed to its own `relops serve` and ingested once per module."""
    done: dict[str, dict] = {}
    mp = pytest.MonkeyPatch()

    def get(client: str) -> dict:
        if client in done:
            return done[client]
        home = tmp_path_factory.mktemp(client) / "home"
        mp.setenv("RELOPS_HOME", str(home))
        mp.setenv("DAGSTER_HOME", str(home / "dagster"))
        mp.setenv("RELOPS_TEST_INGEST_KEY", KEY)
        mp.setenv("RELOPS_TEST_DOCQA_KEY", "unused-docqa-key-89ab")
        assert main(["--home", str(home), "init"]) == 0
        with open(home / "relops.yaml", "a") as fh:
            fh.write(SERVE_YAML)
        server = Server(home)
        try:
            _replay(server.url, client)
        finally:
            server.close()
        assert main(["--home", str(home), "ingest", str(home / "landing")]) == 0
        con = duckdb.connect(str(home / "warehouse" / "relops.duckdb"), read_only=True)
        try:
            spans = _rows(con, "SELECT * FROM spans ORDER BY start_time")
            rejects = _rows(con, "SELECT * FROM trace_rejects")
        finally:
            con.close()
        by_call = {}
        for call in TRUTHS[client]["calls"]:
            received, answered = _ts(call["server_received_unix_nano"]), _ts(call["server_answered_unix_nano"])
            holding = [s for s in spans if s["start_time"] <= received and s["end_time"] is not None and s["end_time"] >= answered]
            by_call[call["call"]] = max(holding, key=lambda s: s["start_time"]) if holding else None
        done[client] = {"spans": by_call, "rejects": rejects, "spans_total": len(spans)}
        return done[client]

    yield get
    mp.undo()


def _expect(field: str, call: dict, span: dict) -> str | None:
    """None when the span's `field` agrees with the truth of `call`, else what differs."""
    not_sent = field in call.get("not_sent", [])
    if field == "kind":
        got, want = span["kind"], call["kind"]
    elif field == "model":
        got, want = span["model"], call["model"]
    elif field in ("input_tokens", "output_tokens", "input_text"):
        got, want = span[field], call[field]
    elif field == "finish_reason":
        got, want = span["finish_reason"], call["finish_reason"]
        got = SAME_REASON.get(got, got) if got else got
    elif field == "output_text":
        got, want = span["output_text"], call["output_text"]
        if want is None and call["tool_calls"]:
            # tool calls only: no text; the column keeps the calls (checked by "tool_calls")
            return None if got is None or call["tool_calls"][0]["name"] in got else f"output_text {got!r}: no text expected"
    elif field == "tool_calls":
        text = (span["output_text"] or "") + json.dumps(span["output_messages"] or "", ensure_ascii=False)
        for tc in call["tool_calls"]:
            args = json.loads(tc["arguments"])
            missing = [x for x in (tc["name"], *map(str, args.values())) if x not in text]
            if missing:
                return f"tool call {tc['name']}: {missing} not in output_text / output_messages {text!r}"
        return None
    elif field == "latency_ms":
        got = span["latency_ms"]
        return None if got is not None and got >= call["latency_ms_min"] else f"latency_ms {got} < {call['latency_ms_min']}"
    elif field == "error":
        got, want = span["status"] == "error", call["error"]
    elif field == "error_type":
        got = span["error_type"]
        if not call["error"]:
            want = None
        else:
            # the exception type when the client sends it, else the server's error message
            want_in = call["error_message"] if not_sent else call["error_type"]
            if got and not not_sent and got.startswith("<"):
                return f"error_type {got!r}: a repr, not the type's name"
            return None if got and want_in in got else f"error_type {got!r} does not hold {want_in!r}"
    else:
        raise AssertionError(field)
    if not_sent:
        want = None  # the client does not send it (in a form tied to the span): nothing may be invented
    return None if got == want else f"{field}: got {got!r}, want {want!r}"


# Known gaps outside the readers, with the fix they need (strict: the test fails once it passes).
CASES = [
    pytest.param(c, f, id=_id(c, f))
    for c in TRUTHS
    for f in FIELDS
]


@pytest.mark.parametrize(("client", "field"), CASES)
def test_field(warehouse, client, field):
    result = warehouse(client)
    problems = []
    for call in TRUTHS[client]["calls"]:
        span = result["spans"][call["call"]]
        if span is None:
            problems.append(f"{call['call']}: no span holds the call")
            continue
        problem = _expect(field, call, span)
        if problem:
            problems.append(f"{call['call']}: {problem}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("client", [pytest.param(c, id=_id(c)) for c in TRUTHS])
def test_every_call_one_span_no_rejects(warehouse, client):
    result = warehouse(client)
    assert result["rejects"] == []
    calls = TRUTHS[client]["calls"]
    assert [c["call"] for c in calls] == ["plain", "stream", "tool", "error"]
    spans = [result["spans"][c["call"]] for c in calls]
    assert all(s is not None for s in spans)
    assert len({(s["trace_id"], s["span_id"]) for s in spans}) == len(calls)


def test_langfuse_cost_details_are_a_reported_cost(warehouse):
    """Langfuse v5 sends cost as `langfuse.observation.cost_details` JSON ({"total": 0} on the
    failed call): the span's cost is that total, cost_source reported; usage_details (JSON) fill
    the tokens; the other calls carry no cost, so theirs is computed from the configured prices
    (or unknown) like any span's."""
    spans = warehouse("langfuse-v5")["spans"]
    assert (spans["error"]["cost_usd"], spans["error"]["cost_source"]) == (0.0, "reported")
    for call in ("plain", "stream", "tool"):
        assert spans[call]["cost_source"] in ("computed", "unknown"), call
    attributes = json.loads(spans["plain"]["attributes"])
    assert attributes["langfuse.observation.type"] == "generation"
    assert json.loads(attributes["langfuse.observation.model.parameters"])["temperature"] == 0.2


def _any_value(v) -> Any:
    """A protobuf AnyValue as plain Python (arrays and kvlists decoded)."""
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which) if which else None


def _span_attribute_maps(client: str) -> dict[str, dict[str, Any]]:
    """{span id (hex): flat attribute map} of the client's captured trace exports."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    out = {}
    for path, headers, body in _requests(client):
        if path.endswith("/v1/traces"):
            raw = gzip.decompress(body) if headers.get("Content-Encoding") == "gzip" else body
            for rs in ExportTraceServiceRequest.FromString(raw).resource_spans:
                for ss in rs.scope_spans:
                    for sp in ss.spans:
                        out[sp.span_id.hex()] = {a.key: _any_value(a.value) for a in sp.attributes}
    return out


# Clients whose spans carry the messages themselves (not in log events): the Python mapping of
# a flat attribute map (otel_attributes.span_row, used by the attribute-map and OTel-JS readers)
# must give what the SQL reader gave.
SPAN_CONTENT_CLIENTS = [c for c in TRUTHS if c in {"openai-v2-latest-span", "openllmetry", "openllmetry-indexed", "openinference",
                                                   "langfuse-v5", "langfuse-v5-observe"}]


@pytest.mark.parametrize("client", [pytest.param(c, id=_id(c)) for c in SPAN_CONTENT_CLIENTS])
def test_python_attribute_mapping_agrees_with_the_sql_reader(warehouse, client):
    maps = _span_attribute_maps(client)
    fields = ("kind", "model", "input_tokens", "output_tokens", "cost_usd", "finish_reason", "input_text", "output_text")
    problems = []
    for call, span in warehouse(client)["spans"].items():
        row = span_row(maps[span["span_id"]], ReadContext(path=REAL / client), "otlp")
        for f in fields:
            py_value, sql_value = row[f], span[f]
            if f == "cost_usd" and span["cost_source"] != "reported":
                sql_value = None  # the loader computed it from prices; the reader staged none
            if f == "output_text" and call == "tool":
                # tool calls only: each keeps JSON in its own shape; both name the call, in real Unicode
                if not all(v and "get_weather" in v and "Zürich" in v for v in (py_value, sql_value)):
                    problems.append(f"{call}.{f}: python {py_value!r}, sql {sql_value!r}")
                continue
            if py_value != sql_value:
                problems.append(f"{call}.{f}: python {py_value!r} != sql {sql_value!r}")
    assert not problems, "\n".join(problems)


def test_truth_files_are_complete():
    """Every client generated; every truth field present (a regenerated truth cannot drop one)."""
    assert set(TRUTHS) == {"openai-v2-legacy", "openai-v2-latest-span", "openai-v2-latest-event", "openllmetry", "openllmetry-events",
                           "openllmetry-indexed", "openinference", "langfuse-v5", "langfuse-v5-observe"}
    for client, truth in TRUTHS.items():
        assert truth["version"] == truth["versions"][truth["distribution"]], client
        assert list(REAL.joinpath(client).glob("*.body")), client
        for call in truth["calls"]:
            assert {"kind", "model", "input_tokens", "output_tokens", "finish_reason", "input_text", "output_text",
                    "tool_calls", "latency_ms_min", "error", "error_type", "error_message"} <= set(call), (client, call["call"])
