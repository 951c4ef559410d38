"""Screenshots of the Dagster UI over a home with the demo's history, for the README.

    make demo                                       # the history in data/home (a few minutes)
    .venv/bin/python bench/screenshots.py --home data/home   # -> docs/screenshots/*.png

Starts `dagster dev` (webserver and daemon) on the home on a free 127.0.0.1 port (or uses a
running one: --url), waits until the runs the sensors launch on start-up have finished, launches
a backfill of doc-qa's eval runs for the backfills page (--no-backfill to leave the home as it
is), starts `relops serve` on another free port for the release page, then drives headless
Chromium (Debian's `chromium` package) through the DevTools protocol (`websockets`, already
installed with dagster-webserver): each page is loaded, waited for until its expected text is
there and no loading spinner is left, clicked where a view is not in the URL (metadata plots,
the memo's markdown), and captured. Prints one line per page; exits 1 if a
page could not be captured. Everything it starts is stopped before it exits.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from relops_pipeline_tests.dagster_dev import DagsterDev, free_port  # noqa: E402

WIDTH, HEIGHT = 1600, 1000
MAX_BYTES = 400_000
IN_PROGRESS = ["QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"]
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--mute-audio", f"--window-size={WIDTH},{HEIGHT}",
]


@dataclass
class Page:
    """One screenshot: a UI path, the texts that must be on the page, then actions in order:
    ("click", button text or icon name), ("scroll", text to bring into view), ("zoom_out", count)."""

    name: str
    path: str
    expect: list[str]
    title: str
    actions: list[tuple[str, object]] = field(default_factory=list)
    settle_s: float = 2.0
    viewport: tuple[int, int] = (WIDTH, HEIGHT)
    crop_to_graph: bool = False  # clip to the drawn graph (below the page header)
    server: str = "dagster"  # or "relops": a page `relops serve` shows (reports, release pages)


GROUPS = ("traces", "evals", "gates", "releases", "drift", "alerts", "cadence")


def pages(release: str, memo_week: str | None, with_backfill: bool) -> list[Page]:
    expanded = urllib.parse.quote(",".join(f"global@global:{g}" for g in GROUPS))
    workflow, version = release.split("--", 1)
    return [
        Page("01-asset-lineage", f"/asset-groups?expanded={expanded}", ["Global asset lineage", "release_gate"],
             "the global asset lineage, every group expanded",
             actions=[("click", "Hide navigation"), ("click", "panel_show_right"), ("zoom_out", 3)],
             settle_s=3, viewport=(WIDTH, 2000), crop_to_graph=True),
        Page("02-release-decision-lineage", "/assets/release_gate?view=lineage&lineageScope=neighbors&lineageDepth=2",
             ["release_gate", "eval_run", "rollout_plan", "canary_analysis", "release_registry"],
             "the lineage of a release decision: manifest, suites, thresholds, eval run -> gate -> rollout, canary "
             "-> registry (rollouts and rollbacks)",
             settle_s=4),
        Page("03-release-gate-partition", f"/assets/release_gate?view=partitions&partition={urllib.parse.quote(release)}",
             [release, "Failed"], f"the release_gate partitions, the BLOCKed {release} selected: a failed (red) "
             "partition among the green ones; its run's logs say why"),
        Page("10-release-page", f"/releases/{workflow}/{version}",
             [f"{workflow} {version}", "Gate decisions", "BLOCK", "Rollout"],
             f"the release page of {release} on relops serve: what changed, eval runs, gate decisions with "
             "approvals, rollout, canaries, rollbacks, incidents, drift, each linking to its report",
             server="relops", viewport=(WIDTH, 1400), settle_s=1),
        Page("09-gate-decision-checks", "/assets/release_gate?view=checks",
             ["gate_decision", "on suite"],
             "release_gate's checks: gate_decision per release partition, each result naming its release and suite",
             settle_s=3),
        Page("04-weekly-drift-plots", "/assets/weekly_drift", ["weekly_drift", "Plots"],
             "weekly_drift: drifted columns and drifted share per workflow, plotted over the weekly partitions",
             actions=[("click", "Plots"), ("scroll", "Metadata")], settle_s=3),
        Page("05-eval-run-plots", "/assets/eval_run", ["eval_run", "Plots"],
             "eval_run: pass rates per metric plotted over the release partitions",
             actions=[("click", "Plots"), ("scroll", "pass_rate/contains")], settle_s=3),
        Page("06-runs", "/runs", ["Target", "Launched by"], "the runs list"),
        *([Page("07-backfills", "/runs?view=backfills", ["Backfill", "eval_run"], "the backfills: eval results re-run over releases")]
          if with_backfill else []),
        Page("08-stability-memo", "/assets/stability_memo", ["stability_memo", "[Show Markdown]", *([memo_week] if memo_week else [])],
             "the weekly stability memo asset, its markdown opened",
             actions=[("click", "[Show Markdown]"), *([("scroll", f"Stability memo — week of {memo_week}")] if memo_week else [])],
             settle_s=2),
    ]


class Chromium:
    """Headless Chromium with a DevTools-protocol connection to its first page."""

    def __init__(self, binary: str, workdir: Path):
        from websockets.sync.client import connect

        self.port = free_port()
        self.log = workdir / "chromium.log"
        self._log_file = open(self.log, "w")  # noqa: SIM115 - Chromium writes to it until close()
        self.proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={workdir / 'profile'}", f"--remote-debugging-port={self.port}",
             "about:blank"],
            stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2) as r:
                    targets = [t for t in json.loads(r.read()) if t.get("type") == "page"]
                if targets:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"chromium did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(targets[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=30))
        self._id = 0
        self.send("Page.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)

    def send(self, method: str, **params):
        """One DevTools command; returns its result (events in between are ignored)."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def eval(self, expression: str):
        """The value of a JavaScript expression in the page."""
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"script error: {res['exceptionDetails']}")
        return res["result"].get("value")

    def close(self) -> None:
        try:
            if getattr(self, "_stack", None) is not None:
                self._stack.close()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self._log_file.close()


STATE_JS = """(() => {
  const text = document.body ? document.body.innerText : '';
  const spinners = [...document.querySelectorAll('.spinnerGlobal, [role="progressbar"]')].filter(e => {
    const r = e.getBoundingClientRect(); return r.width >= 24 && r.height >= 24;
  }).length;
  return {ready: document.readyState === 'complete', spinners, missing: %s.filter(n => !text.includes(n))};
})()"""

# A button by its text or by the name of its icon (icon-only buttons).
CLICK_JS = """(() => {
  const want = %s;
  const el = [...document.querySelectorAll('button, [role="button"], a')].find(b => b.innerText.trim() === want
    || [...b.querySelectorAll('[aria-label]')].some(i => i.getAttribute('aria-label') === want));
  if (!el) return false;
  el.click(); return true;
})()"""

# The deepest element whose own text is exactly the given text, scrolled to the top of its pane.
SCROLL_JS = """(() => {
  const want = %s;
  const el = [...document.querySelectorAll('body *')].reverse().find(e => e.innerText && e.innerText.trim() === want);
  if (!el) return false;
  el.scrollIntoView({block: 'start'}); return true;
})()"""

# The box around every text drawn below the page header (the graph's groups and nodes).
GRAPH_BOX_JS = """(() => {
  const top = 110, box = {x0: 1e9, y0: 1e9, x1: -1, y1: -1};
  const svg = [...document.querySelectorAll('svg')].sort((a, b) => b.getBoundingClientRect().width * b.getBoundingClientRect().height
    - a.getBoundingClientRect().width * a.getBoundingClientRect().height)[0];
  const root = svg ? svg.parentElement : document.body;
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    if (!walker.currentNode.textContent.trim()) continue;
    const range = document.createRange(); range.selectNodeContents(walker.currentNode);
    for (const r of range.getClientRects()) {
      if (r.top < top || r.width === 0) continue;
      box.x0 = Math.min(box.x0, r.left); box.y0 = Math.min(box.y0, r.top);
      box.x1 = Math.max(box.x1, r.right); box.y1 = Math.max(box.y1, r.bottom);
    }
  }
  return box.x1 < 0 ? null : box;
})()"""


def capture(browser: Chromium, base_url: str, page: Page, out_dir: Path, timeout_s: float = 60) -> tuple[Path, int]:
    """Load, wait, act, capture one page; returns (file, bytes)."""
    width, height = page.viewport
    browser.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
    browser.send("Page.navigate", url=base_url + page.path)
    _wait_page(browser, page, timeout_s)
    for action, arg in page.actions:
        if action == "zoom_out":
            for _ in range(int(arg)):
                browser.eval(CLICK_JS % json.dumps("zoom_out"))
                time.sleep(1.2)  # each zoom step animates
            continue
        script = {"click": CLICK_JS, "scroll": SCROLL_JS}[action]
        if not browser.eval(script % json.dumps(arg)):
            raise RuntimeError(f"{action} {arg!r}: not found on {page.path}")
        time.sleep(1.0)
        _wait_page(browser, page, timeout_s, expect=[])
    time.sleep(page.settle_s)  # graph layout and chart animations
    clip = {"x": 0, "y": 0, "width": width, "height": height}
    if page.crop_to_graph:
        box = browser.eval(GRAPH_BOX_JS)
        if not box:
            raise RuntimeError(f"no graph drawn on {page.path}")
        pad = 40
        x0, y0 = max(0, box["x0"] - pad), max(0, box["y0"] - pad)
        clip = {"x": x0, "y": y0, "width": min(width, box["x1"] + pad) - x0, "height": min(height, box["y1"] + pad) - y0}
    while True:
        shot = browser.send("Page.captureScreenshot", format="png", clip={**clip, "scale": 1})
        data = base64.b64decode(shot["data"])
        if len(data) <= MAX_BYTES or clip["height"] <= 500:
            break
        clip["height"] -= 100  # crop from the bottom until it fits
    target = out_dir / f"{page.name}.png"
    target.write_bytes(data)
    browser.eval("localStorage.clear()")  # UI choices made here (a hidden navigation) stay on this page
    return target, len(data)


def _wait_page(browser: Chromium, page: Page, timeout_s: float, expect: list[str] | None = None) -> dict:
    deadline = time.monotonic() + timeout_s
    state: dict = {}
    calm = 0
    while time.monotonic() < deadline:
        try:
            state = browser.eval(STATE_JS % json.dumps(page.expect if expect is None else expect)) or {}
        except RuntimeError:
            state = {}
        ok = state.get("ready") and not state.get("missing") and state.get("spinners") == 0
        calm = calm + 1 if ok else 0
        if calm >= 3:  # three quiet polls in a row: the page has stopped loading
            return state
        time.sleep(0.5)
    raise RuntimeError(f"{page.path} did not finish loading in {timeout_s:.0f} s: {state}")


def wait_for_idle(dev: DagsterDev, settle_s: float, timeout_s: float) -> int:
    """Let the sensors take their first ticks, then wait until no run is queued or running."""
    time.sleep(settle_s)
    query = "query($s: [RunStatus!]) { runsOrError(filter: {statuses: $s}) { ... on Runs { results { runId } } } }"

    def idle():
        return not dev.graphql(query, {"s": IN_PROGRESS})["runsOrError"]["results"]

    started = time.monotonic()
    dev.wait(idle, timeout_s, "the runs launched on start-up to finish", interval_s=3)
    return round(time.monotonic() - started)


BACKFILL_WORKFLOW = "doc-qa"


def launch_eval_backfill(dev: DagsterDev, workflow: str, timeout_s: float) -> tuple[str, str, int]:
    """A partition backfill of eval_run over the workflow's releases (what the backfills page
    shows), waited for; returns (backfill id, final status, partitions)."""
    node = dev.graphql('{ assetNodeOrError(assetKey: {path: ["eval_run"]}) { ... on AssetNode { partitionKeys } } }')
    keys = [k for k in node["assetNodeOrError"]["partitionKeys"] if k.startswith(f"{workflow}--")]
    if not keys:
        raise RuntimeError(f"no release partitions of {workflow}")
    launched = dev.graphql(
        "mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) { __typename "
        "... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }",
        {"p": {"assetSelection": [{"path": ["eval_run"]}], "partitionNames": keys,
               "title": f"re-run the {workflow} evals", "tags": [{"key": "relops/trigger", "value": "screenshots"}]}},
    )["launchPartitionBackfill"]
    if launched["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(f"backfill not launched: {launched}")
    bid = launched["backfillId"]
    query = "query($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } } }"
    done = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
    status = dev.wait(lambda: (st := dev.graphql(query, {"id": bid})["partitionBackfillOrError"]["status"]) in done and st,
                      timeout_s, f"backfill {bid}", interval_s=3)
    return bid, status, len(keys)


def demo_facts(home: Path) -> tuple[str, str | None]:
    """The first BLOCKed release (in the demo, doc-qa v2.2.0: a red partition of release_gate,
    and the release page shown) and the latest memo's week."""
    from relops_pipeline.lib.warehouse import connect

    con = connect(home / "warehouse" / "relops.duckdb", read_only=True, timeout_s=30)
    try:
        row = con.execute("SELECT release_key FROM gate_decisions WHERE decision = 'BLOCK' ORDER BY decided_at LIMIT 1").fetchone()
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        week = None
        if "stability_memos" in tables:
            w = con.execute("SELECT max(week) FROM stability_memos").fetchone()
            week = str(w[0]) if w and w[0] is not None else None
    finally:
        con.close()
    if row is None:
        raise SystemExit(f"{home}: no BLOCKed gate decision in the warehouse — run `relops --home {home} demo` first")
    return row[0], week


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--home", default=os.environ.get("RELOPS_HOME"), help="a home with the demo's history")
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    ap.add_argument("--only", nargs="*", help="page names (or prefixes) to capture")
    ap.add_argument("--url", help="use a UI already running over the home (e.g. http://127.0.0.1:3000) instead of starting one")
    ap.add_argument("--settle-s", type=float, default=30, help="time for the sensors' first ticks")
    ap.add_argument("--idle-timeout-s", type=float, default=900)
    ap.add_argument("--no-backfill", action="store_true",
                    help=f"do not launch a backfill of the {BACKFILL_WORKFLOW} eval runs for the backfills page "
                         "(it adds one eval run per release to the home)")
    args = ap.parse_args(argv)
    if not args.home:
        ap.error("--home (or RELOPS_HOME) is required")
    home = Path(args.home).resolve()
    binary = next((b for b in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
                   if b and Path(b).exists()), None)
    if binary is None:
        print("chromium not found: apt-get install -y --no-install-recommends chromium", file=sys.stderr)
        return 2
    release, memo_week = demo_facts(home)
    todo = [p for p in pages(release, memo_week, not args.no_backfill) if not args.only or any(p.name.startswith(o) for o in args.only)]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="relops-shots-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        urls = {}
        if any(p.server == "relops" for p in todo):
            urls["relops"] = stack.enter_context(relops_serve(home, work / "relops-serve.log"))
            print(f"relops serve on {urls['relops']}")
        if args.url:  # a UI that is already running over this home (`make ui`)
            return shoot(binary, {**urls, "dagster": args.url.rstrip("/")}, todo, out_dir, work)
        t0 = time.monotonic()
        with DagsterDev(home, work / "dagster-dev.log") as dev:
            print(f"dagster dev on {dev.url} ({time.monotonic() - t0:.0f} s)")
            waited = wait_for_idle(dev, args.settle_s, args.idle_timeout_s)
            print(f"start-up runs finished ({waited} s after the sensors' first ticks)")
            if not args.no_backfill and any(p.name == "07-backfills" for p in todo):
                bid, status, n = launch_eval_backfill(dev, BACKFILL_WORKFLOW, args.idle_timeout_s)
                print(f"backfill {bid} of eval_run over {n} {BACKFILL_WORKFLOW} releases: {status}")
            return shoot(binary, {**urls, "dagster": dev.url}, todo, out_dir, work)


@contextlib.contextmanager
def relops_serve(home: Path, log: Path):
    """`relops serve` over the home on a free 127.0.0.1 port (no ingestion workers): its URL,
    stopped (SIGTERM, then SIGKILL) on exit."""
    port = free_port()
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "relops_pipeline.cli", "--home", str(home), "serve", "--host",
                                 "127.0.0.1", "--port", str(port), "--json", "--workers", "0"],
                                stdout=subprocess.PIPE, stderr=err, start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the startup line, or nothing when it could not start
        if not line:
            raise RuntimeError(f"relops serve did not start:\n{log.read_text()[-3000:]}")
        yield json.loads(line)["url"].rstrip("/")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def shoot(binary: str, urls: dict[str, str], todo: list[Page], out_dir: Path, work: Path) -> int:
    """Capture every page (each on its server's URL); returns the exit status (1 if a page
    could not be captured)."""
    _graphql(urls["dagster"], "mutation { setNuxSeen }")  # the community pop-up, shown once per instance
    failures = 0
    browser = Chromium(binary, work)
    try:
        for page in todo:
            try:
                path, size = capture(browser, urls[page.server], page, out_dir)
                shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                print(f"  ok   {shown}  {size // 1024} KB  {page.title}")
            except Exception as exc:  # noqa: BLE001 — report it and go on with the other pages
                failures += 1
                print(f"  FAIL {page.name}: {exc}", file=sys.stderr)
    finally:
        browser.close()
    return 1 if failures else 0


def _graphql(base_url: str, query: str) -> dict:
    req = urllib.request.Request(f"{base_url}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


if __name__ == "__main__":
    sys.exit(main())
