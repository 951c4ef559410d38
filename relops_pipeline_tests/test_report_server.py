"""The reports and release pages `relops serve` shows read-only (issue 18, "reports one click
away"): a real server over a home with gated, approved, rolled-out, canaried and rolled-back
releases, incidents, a readiness review, a memo and a runbook. Every report file fetched at its
report_url is the file (200, its content type); every link of every release page opens; path
traversal, other methods, missing keys, other workflows' keys and unknown releases are refused;
what a user wrote is escaped; a warehouse held by a writer answers 503."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import http.client
import json
import os
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
import pytest

from relops_pipeline.cli import main
from relops_pipeline.lib.home import Home
from relops_pipeline.lib.report_links import release_url, report_url
from relops_pipeline_tests.procs import popen, reap, scaled

KEY, PINNED_KEY = "test-report-global-key-0123", "test-report-triage-key-4567"
XSS_NOTE = '<img src=x onerror="alert(1)">'
XSS_PROMPT = "Question: {{ question }} </pre><script>alert('prompt')</script>"
XSS_TITLE = "<script>alert('incident')</script>"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".md": "text/plain; charset=utf-8",
                 ".csv": "text/csv; charset=utf-8", ".json": "application/json", ".png": "image/png"}
# A stand-in for an Evidently dashboard: a self-contained page with its own inline script.
DRIFT_HTML = b"<!doctype html><html><body><div id=r></div><script>document.getElementById('r').textContent='ok'</script></body></html>"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _yaml_quoted(text: str) -> str:
    """`text` as a single-quoted YAML scalar (the text itself appears in the file)."""
    return "'" + text.replace("'", "''") + "'"


def _cli(home: Path, *argv: str) -> None:
    assert main(["--home", str(home), *argv]) == 0, argv


def _acted_week(home) -> str:
    """The Monday of the week doc-qa v2.4.0 was last acted on (gated, rolled out, rolled back):
    the week of the fixture's run, read from the warehouse (a run across midnight on Sunday
    would otherwise look for the wrong week)."""
    from relops_pipeline.lib.evals.model import release_key
    from relops_pipeline.lib.memo.build import week_start
    from relops_pipeline.lib.warehouse import open_warehouse

    with open_warehouse((home if isinstance(home, Home) else Home(home)).warehouse_path, read_only=True) as con:
        [(last,)] = con.execute("SELECT max(ts) FROM events WHERE release_key = ?",
                                [release_key("doc-qa", "v2.4.0")]).fetchall()
    return str(week_start(last))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """doc-qa v2.3.0 (REVIEW, approved, full), v2.4.0 (SHIP, canary, inconclusive canary, rolled
    back, incidents) and v2.5.0 (a manifest with markup in its prompt and notes), support-triage
    v1.2.0; a readiness review, a memo, a review sheet, a runbook; keys: one global, one pinned to
    support-triage; `serve.public_url` at the port the server will listen on."""
    from relops_pipeline.demo.traces import generate_demo_traces

    home = tmp_path_factory.mktemp("report-server") / "home"
    port = _free_port()
    mp = pytest.MonkeyPatch()
    mp.setenv("RELOPS_HOME", str(home))
    mp.setenv("DAGSTER_HOME", str(home / "dagster"))
    mp.setenv("RELOPS_TEST_REPORT_KEY", KEY)
    mp.setenv("RELOPS_TEST_REPORT_PINNED_KEY", PINNED_KEY)
    _cli(home, "init", "--example")
    with open(home / "relops.yaml", "a") as fh:
        fh.write(f"\nserve:\n  public_url: http://127.0.0.1:{port}\n  api_keys:\n    - env: RELOPS_TEST_REPORT_KEY\n"
                 "    - env: RELOPS_TEST_REPORT_PINNED_KEY\n      workflow: support-triage\n")
    generate_demo_traces(home / "landing" / "demo", scale=0.05, days=[53], workflows=["doc-qa"])
    _cli(home, "ingest", str(home / "landing" / "demo"))
    releases = home / "releases" / "doc-qa"
    for version in ("v2.3.0", "v2.4.0"):
        _cli(home, "release", "register", str(releases / f"{version}.yaml"), "--by", "li.wei")
    assert main(["--home", str(home), "gate", "doc-qa", "v2.3.0"]) == 2  # REVIEW: no baseline
    _cli(home, "approve", "doc-qa", "v2.3.0", "--by", "li.wei", "--reason", "first release, read by hand")
    assert main(["--home", str(home), "gate", "doc-qa", "v2.4.0", "--baseline", "v2.3.0"]) in (0, 1, 2)
    for version, stage in (("v2.3.0", "full"), ("v2.4.0", "canary")):
        _cli(home, "rollout", "doc-qa", version, "--stage", stage, "--by", "li.wei", "--override", "--reason", "test")
    assert main(["--home", str(home), "canary", "doc-qa", "v2.4.0"]) == 2  # too few requests: inconclusive
    _cli(home, "rollback", "doc-qa", "--by", "li.wei", "--reason", "test rollback")
    _cli(home, "incident", "open", "--workflow", "doc-qa", "--release", "v2.4.0", "--title", XSS_TITLE, "--by", "li.wei")
    text = (releases / "v2.4.0.yaml").read_text().replace("version: v2.4.0", "version: v2.5.0")
    text = text.replace('user: "Question: {{ question }}"', f"user: {_yaml_quoted(XSS_PROMPT)}")
    text = re.sub(r"notes: >-\n(  .*\n)+", f"notes: {_yaml_quoted(XSS_NOTE)}\n", text)
    assert XSS_NOTE in text and "</pre>" in text
    (releases / "v2.5.0.yaml").write_text(text)
    _cli(home, "release", "register", str(releases / "v2.5.0.yaml"), "--no-eval", "--by", "li.wei")
    _cli(home, "release", "register", str(home / "releases" / "support-triage" / "v1.2.0.yaml"), "--no-eval", "--by", "ana.lopez")
    _cli(home, "readiness", "doc-qa")
    _cli(home, "memo", "--week", "2026-11-16")
    # A memo of this week, whose gates and rollouts are above: this week has not ended, so `relops
    # memo` refuses it; the row copies the 2026-11-16 memo's, files included, under this week.
    from relops_pipeline.lib.warehouse import open_warehouse

    this_week = _acted_week(home)
    with open_warehouse(Home(home).warehouse_path) as con:
        con.execute("INSERT INTO stability_memos SELECT 'memo-this-week', ?::DATE, generated_at, ops_from, ops_to, memo, "
                    "report_md, md_path, html_path, dagster_run_id FROM stability_memos WHERE week = DATE '2026-11-16'",
                    [this_week])
    _cli(home, "review", "sample", "--week", "2026-11-16")
    drift = home / "reports" / "drift" / "doc-qa"
    drift.mkdir(parents=True, exist_ok=True)
    (drift / "week-2026-11-16.html").write_bytes(DRIFT_HTML)
    # A symlink out of the reports folder, and one to a file outside it through a folder.
    (home / "reports" / "gates" / "doc-qa" / "leak.md").symlink_to(home / "relops.yaml")
    (home / "reports" / "outside").symlink_to(home / "workflows", target_is_directory=True)
    yield home, port
    mp.undo()


class Served:
    """`relops serve --port P --json` over the world; requests with http.client (which sends the
    path as written, unlike clients that normalise `..`)."""

    def __init__(self, home: Path, port: int):
        self.home = Home(home.resolve())
        self.proc = popen([sys.executable, "-m", "relops_pipeline.cli", "--home", str(home), "serve", "--port", str(port),
                           "--json", "--workers", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
        assert self.proc.stdout is not None
        deadline, line = time.monotonic() + scaled(60), b""
        while not line.endswith(b"\n"):
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self.proc.stdout.fileno(), 1) if ready else b""
            if not chunk:
                raise AssertionError("relops serve did not start")
            line += chunk
        self.where = json.loads(line)
        self.port = port

    def request(self, path: str, *, key: str | None = KEY, how: str = "basic", method: str = "GET",
                body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        headers = {}
        if key is not None and how == "basic":
            headers["Authorization"] = "Basic " + base64.b64encode(f"release-manager:{key}".encode()).decode()
        elif key is not None and how == "bearer":
            headers["Authorization"] = f"Bearer {key}"
        elif key is not None:
            headers["x-api-key"] = key
        con = http.client.HTTPConnection("127.0.0.1", self.port, timeout=scaled(30))
        try:
            con.request(method, path, body=body, headers=headers)
            resp = con.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            con.close()

    def close(self) -> None:
        reap(self.proc, grace_s=scaled(30))


@pytest.fixture(scope="module")
def served(world):
    home, port = world
    server = Served(home, port)
    yield server
    server.close()


def _path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _report_files(home: Home) -> list[Path]:
    root = home.reports_dir
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()
                  and "evidently-workspace" not in p.parts and not any(s.startswith(".") for s in p.relative_to(root).parts))


def test_startup_json_names_the_reports_and_releases(served):
    assert served.where["reports"] == f"http://127.0.0.1:{served.port}/reports/"
    assert served.where["releases"] == f"http://127.0.0.1:{served.port}/releases/"


def test_every_report_is_served_at_its_report_url(served):
    files = _report_files(served.home)
    kinds = {p.relative_to(served.home.reports_dir).parts[0] for p in files}
    assert {"gates", "canary", "runbooks", "readiness", "memos", "review", "drift"} <= kinds, kinds
    for file in files:
        url = report_url(served.home, file)
        assert url.startswith(f"http://127.0.0.1:{served.port}/reports/")
        status, headers, body = served.request(_path(url))
        assert status == 200, (url, status, body[:200])
        assert body == file.read_bytes(), url
        assert headers["content-type"] == CONTENT_TYPES.get(file.suffix, "application/octet-stream"), url
        assert headers["x-content-type-options"] == "nosniff"
        assert "default-src 'none'" in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        if file.suffix == ".html" and "drift" not in file.parts:
            assert "script-src" not in headers["content-security-policy"]  # default-src 'none': no script runs
    # HEAD: the same headers, no body.
    file = next(p for p in files if p.suffix == ".html")
    status, headers, body = served.request(_path(report_url(served.home, file)), method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) == file.stat().st_size
    # The index lists them all.
    status, _, body = served.request("/reports/")
    assert status == 200
    for file in files:
        assert f'href="/reports/{file.relative_to(served.home.reports_dir).as_posix()}"'.encode() in body


def test_a_drift_dashboard_may_run_only_its_own_inline_scripts(served):
    status, headers, body = served.request("/reports/drift/doc-qa/week-2026-11-16.html")
    assert status == 200 and body == DRIFT_HTML
    script = re.search(rb"<script>(.*)</script>", DRIFT_HTML).group(1)
    digest = base64.b64encode(hashlib.sha256(script).digest()).decode()
    csp = headers["content-security-policy"]
    assert f"script-src 'sha256-{digest}' 'unsafe-eval'" in csp and "unsafe-inline'" not in csp.split("style-src")[0]


def test_every_link_of_every_release_page_opens(served):
    status, _, index = served.request("/releases/")
    assert status == 200
    pages = re.findall(r'href="(/releases/[^"/]+/[^"]+)"', index.decode())
    expected = {"/releases/doc-qa/v2.3.0", "/releases/doc-qa/v2.4.0", "/releases/doc-qa/v2.5.0",
                "/releases/support-triage/v1.2.0"}
    assert set(pages) == expected
    assert _path(release_url(served.home, "doc-qa", "v2.4.0")) == "/releases/doc-qa/v2.4.0"
    seen = 0
    for page in pages:
        status, headers, body = served.request(page)
        assert status == 200 and headers["content-type"] == "text/html; charset=utf-8", page
        assert "script-src" not in headers["content-security-policy"]
        for link in re.findall(r'href="([^"]+)"', body.decode()):
            assert link.startswith("/"), (page, link)  # relative to the server
            status, _, _ = served.request(link)
            assert status == 200, (page, link, status)
            seen += 1
    assert seen > 20
    status, _, body = served.request("/releases/doc-qa/v2.4.0")
    text = body.decode()
    # The story: decision, diff, eval run, rollout, canary, rollback, incident, each report linked.
    for part in ("SHIP", "model gpt-4.1-mini -&gt; gpt-5-mini", "canary at 50 %", "inconclusive",
                 "rollback v2.4.0 -&gt; v2.3.0 (manual)", "manual rollback of v2.4.0",
                 '/reports/gates/doc-qa/v2.4.0/', '/reports/canary/doc-qa/v2.4.0/', '/reports/runbooks/doc-qa.md'):
        assert part in text, part
    # The weekly memo of the week it was gated and rolled out, not another week's.
    assert f"week of {_acted_week(served.home)} (" in text and "week of 2026-11-16" not in text
    assert '<a href="/reports/memos/2026-11-16.html">html</a>' in text
    status, _, body = served.request("/releases/doc-qa/v2.3.0")
    assert "approved" in body.decode() and "first release, read by hand" in body.decode() and "li.wei" in body.decode()


def test_what_users_wrote_is_escaped_on_the_release_page(served):
    _, _, body = served.request("/releases/doc-qa/v2.4.0")
    text = body.decode()
    assert "<script>alert" not in text and "&lt;script&gt;alert(&#x27;incident&#x27;)&lt;/script&gt;" in text
    _, _, body = served.request("/releases/doc-qa/v2.5.0")
    text = body.decode()
    assert "<script" not in text and "<img" not in text and "</pre><script" not in text
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in text
    assert "&lt;/pre&gt;&lt;script&gt;alert(&#x27;prompt&#x27;)&lt;/script&gt;" in text


@pytest.mark.parametrize("path", [
    "/reports/../relops.yaml", "/reports/%2e%2e/relops.yaml", "/reports/gates/%2E%2E/%2e%2e/relops.yaml",
    "/reports/..%2frelops.yaml", "/reports/..%2Frelops.yaml", "/reports/%2e%2e%2frelops.yaml",
    "/reports//etc/passwd", "/reports/%2fetc%2fpasswd", "/reports/..\\relops.yaml", "/reports/..%5crelops.yaml",
    "/reports/gates/doc-qa/leak.md", "/reports/outside/doc-qa.yaml", "/reports/gates/doc-qa/",
    "/reports/./memos/2026-11-16.md", "/reports/memos/2026-11-16.md%00.html", "/reports/%252e%252e/relops.yaml",
    "/reports/nothing-here.html", "/reports/gates", "/reports/%ff%fe",
])
def test_paths_out_of_the_reports_folder_are_404(served, path):
    status, _, body = served.request(path)
    assert status == 404, (path, body[:200])
    assert b"li.wei" not in body and b"serve:" not in body


def test_keys(served):
    path = "/reports/memos/2026-11-16.md"
    status, headers, _ = served.request(path, key=None)
    assert status == 401 and headers["www-authenticate"].startswith('Basic realm="relops"')
    assert served.request("/releases/", key=None)[0] == 401
    assert served.request(path, key="wrong-key")[0] == 401
    assert served.request(path, key="wrong-key", how="x-api-key")[0] == 401
    for how in ("basic", "bearer", "x-api-key"):
        assert served.request(path, how=how)[0] == 200, how
    # A key pinned to support-triage: its own release pages and reports, nothing of doc-qa's,
    # nor the reports of every workflow.
    assert served.request("/releases/support-triage/v1.2.0", key=PINNED_KEY)[0] == 200
    status, _, body = served.request("/releases/doc-qa/v2.4.0", key=PINNED_KEY)
    assert status == 403 and b"Forbidden" in body and b"li.wei" not in body and b"gpt-5-mini" not in body
    status, _, body = served.request("/releases/", key=PINNED_KEY)
    assert status == 200 and b"support-triage" in body and b"doc-qa" not in body
    assert served.request("/reports/readiness/support-triage.md", key=PINNED_KEY)[0] == 200
    for denied in ("/reports/readiness/doc-qa.md", "/reports/runbooks/doc-qa.md", path,
                   "/reports/drift/doc-qa/week-2026-11-16.html"):
        assert served.request(denied, key=PINNED_KEY)[0] == 403, denied
    status, _, body = served.request("/reports/", key=PINNED_KEY)
    assert status == 200 and b"doc-qa" not in body and b"readiness/support-triage.md" in body


def test_other_methods_unknown_releases_and_a_busy_warehouse(served, world):
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, headers, _ = served.request("/reports/memos/2026-11-16.md", method=method, body=b"x")
        assert status == 405 and headers["allow"] == "GET, HEAD", method
        assert served.request("/releases/doc-qa/v2.4.0", method=method, body=b"")[0] == 405
    for path in ("/releases/doc-qa/v9.9.9", "/releases/no-such-flow/v1", "/releases/doc-qa/v2.4.0/extra", "/releases/doc-qa"):
        status, headers, body = served.request(path)
        assert status == 404 and headers["content-type"] == "text/html; charset=utf-8", path
    status, _, body = served.request("/releases/doc-qa/v9.9.9", method="HEAD")
    assert status == 404 and body == b""
    status, _, body = served.request("/releases/doc-qa/v2.4.0", method="HEAD")
    assert status == 200 and body == b""
    # A writer holding the warehouse: the page says so (503, retry), the reports still open.
    home, _ = world
    con = duckdb.connect(str(home / "warehouse" / "relops.duckdb"))
    try:
        status, headers, body = served.request("/releases/doc-qa/v2.4.0")
        assert status == 503 and headers["retry-after"] and b"warehouse busy" in body
        assert served.request("/reports/memos/2026-11-16.md")[0] == 200
    finally:
        con.close()
    assert served.request("/releases/doc-qa/v2.4.0")[0] == 200


def test_the_receiver_still_answers_beside_the_pages(served):
    status, _, body = served.request("/", key=None)
    assert status == 200 and b"relops serve" in body
    assert served.request("/v1/traces", key=None, method="POST", body=b"{}")[0] == 401


HOSTILE = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"


def test_a_hostile_workflow_version_and_reason_are_escaped_when_rendered(tmp_path):
    """Rendering alone (no warehouse): every field of a release's story holds markup, and none of
    it reaches the page as markup, links included."""
    from relops_pipeline.lib import release_page

    home = Home(tmp_path)
    ts = dt.datetime(2026, 11, 16, 9, 30)
    story = release_page.Story(
        HOSTILE, HOSTILE,
        {"workflow": HOSTILE, "version": HOSTILE, "baseline_version": HOSTILE, "manifest_hash": HOSTILE,
         "registered_by": HOSTILE, "registered_at": ts,
         "diff": json.dumps({"summary": [HOSTILE], "notes": {"to": HOSTILE},
                             "prompts": {HOSTILE: {"status": HOSTILE, "unified_diff": HOSTILE}}})},
        eval_runs=[{"eval_run_id": HOSTILE, "suite_version": HOSTILE, "source": HOSTILE, "cases": 1, "samples": 5,
                    "errors": 0, "error_rate": 0.0, "valid": False, "invalid_reason": HOSTILE, "finished_at": ts}],
        gates=[{"decided_at": ts, "decision": HOSTILE, "baseline_version": HOSTILE, "suite_version": HOSTILE,
                "thresholds_version": HOSTILE, "reasons": json.dumps([HOSTILE]), "report_html": HOSTILE}],
        decisions=[{"ts": ts, "kind": kind, "actor": HOSTILE, "reason": HOSTILE}
                   for kind in ("approval", "refused", "override")],
        rollout=[{"ts": ts, "kind": "rollout", "actor": HOSTILE, "reason": HOSTILE,
                  "payload": json.dumps({"stage": HOSTILE, "percent": 5.0})},
                 {"ts": ts, "kind": "rollback", "actor": HOSTILE, "reason": HOSTILE,
                  "payload": json.dumps({"from": HOSTILE, "to": HOSTILE, "trigger": HOSTILE})}],
        canaries=[{"computed_at": ts, "verdict": HOSTILE, "baseline": HOSTILE, "window_start": ts, "window_end": ts,
                   "score": -0.0009523809523809538, "consecutive_failures": 0}],
        rollbacks=[{"recorded_at": ts, "from_release": HOSTILE, "to_release": HOSTILE, "trigger": HOSTILE,
                    "automatic": True, "reason": HOSTILE, "time_to_rollback_s": 12.345678, "incident_id": HOSTILE}],
        incidents=[{"incident_id": HOSTILE, "title": HOSTILE, "status": HOSTILE, "source": HOSTILE, "opened_at": ts,
                    "opened_by": HOSTILE, "closed_at": None, "closed_by": None, "resolution": None}],
        drift=[{"granularity": HOSTILE, "period_start": ts.date(), "period_end": ts.date(), "status": HOSTILE,
                "severity": HOSTILE, "columns_drifted": 1, "columns_tested": 2, "critical_drifted": json.dumps([HOSTILE]),
                "cur_rows": 3, "ref_rows": 4, "report_path": HOSTILE}],
    )
    index = release_page.render_index([{"workflow": HOSTILE, "version": HOSTILE, "registered_at": ts, "decision": HOSTILE,
                                        "signed_off": "approval", "rollout_stage": HOSTILE, "last_move": "rollout"}])
    for page in (release_page.render_release(home, story), index, release_page.render_not_found(HOSTILE)):
        text = page.decode()
        assert "<script" not in text and "<img" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#x27;&gt;&lt;img src=x onerror=alert(2)&gt;" in text
        # Every attribute value is quoted and holds no raw quote: markup cannot leave an href.
        for attr in re.findall(r'(?:href|class)="([^"]*)"', text):
            assert "<" not in attr and "'" not in attr, attr
    text = release_page.render_release(home, story).decode()
    assert text.count("&lt;script&gt;alert(1)") > 30  # every part of the story showed the hostile text
    assert "-0.000952" in text and "12.3 s" in text and "-0.0009523809523809538" not in text
    assert 'href="/releases/%3Cscript%3E' in index.decode()  # the link is URL-quoted, then escaped
