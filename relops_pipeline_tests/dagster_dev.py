"""Start and stop a real `dagster dev` (webserver and daemon) over a relops home, on 127.0.0.1.

Shared by the end-to-end tests and bench/screenshots.py:

    with DagsterDev(home_root, log=tmp_path / "dagster-dev.log") as dev:
        dev.graphql("{ version }")
        dev.wait(lambda: ..., 120, "something")

`dagster dev` maps SIGTERM to SIGINT, so it runs in its own session with SIGINT at its default
(not the ignored disposition a background shell hands down) and is stopped by SIGINT to its
process group (everything it started: daemon, code servers, run workers), SIGKILL after a grace
period, even when dagster dev itself has already exited. Every failure while waiting includes the
tail of its log. All timeouts are nominal seconds multiplied by $RELOPS_TEST_TIMEOUT_SCALE (procs.scaled).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relops_pipeline_tests.procs import popen, reap, scaled

REPO = Path(__file__).resolve().parents[1]
WORKSPACE = REPO / "workspace.yaml"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_sigint() -> None:
    # A parent started in the background by a non-interactive shell ignores SIGINT, and the
    # child would inherit that: then stop() could only end it with SIGKILL after the grace time.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class DagsterDevError(AssertionError):
    """`dagster dev` exited, or a wait timed out; the message carries the log's tail."""


class DagsterDev:
    """One `dagster dev` process group over a relops home (RELOPS_HOME and DAGSTER_HOME set)."""

    def __init__(self, home_root: os.PathLike | str, log: os.PathLike | str, *, port: int | None = None,
                 workspace: Path = WORKSPACE, env: dict[str, str] | None = None, log_tail_chars: int = 6000):
        self.home_root = Path(home_root)
        self.log = Path(log)
        self.port = port or free_port()
        self.workspace = workspace
        self.extra_env = dict(env or {})
        self.log_tail_chars = log_tail_chars
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self) -> str:
        """The last characters of the process's log (empty before it starts)."""
        try:
            return self.log.read_text(errors="replace")[-self.log_tail_chars:]
        except FileNotFoundError:
            return ""

    def start(self, ready_timeout_s: float = 180) -> DagsterDev:
        """Start the process and wait until the webserver answers and the code location loaded."""
        env = {**os.environ, "RELOPS_HOME": str(self.home_root), "DAGSTER_HOME": str(self.home_root / "dagster"),
               **self.extra_env}
        dagster = Path(sys.executable).parent / "dagster"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "w") as out:
            self.proc = popen(  # a new session: its own process group
                [str(dagster), "dev", "-h", "127.0.0.1", "-p", str(self.port), "-w", str(self.workspace)],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_default_sigint,
            )
        try:
            self.wait(self._server_ready, ready_timeout_s, "the webserver")
            self.wait(self._location_loaded, ready_timeout_s, "the code location to load")
        except BaseException:
            self.stop()
            raise
        return self

    def _server_ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/server_info", timeout=scaled(2)) as r:
            return r.status == 200

    def _location_loaded(self) -> bool:
        data = self.graphql(
            "{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus "
            "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
        )
        entries = data["workspaceOrError"]["locationEntries"]
        for e in entries:
            err = e["locationOrLoadError"]
            if err and err["__typename"] == "PythonError":
                raise DagsterDevError(f"code location {e['name']} failed to load: {err['message']}\n{self.log_tail()}")
        return bool(entries) and all(e["loadStatus"] == "LOADED" and e["locationOrLoadError"] for e in entries)

    def stop(self, grace_s: float = 60) -> None:
        """SIGINT to the process group (webserver, daemon, code servers, runs); SIGKILL to what is
        left of it after scaled(grace_s). Safe to call twice."""
        if self.proc is not None:
            reap(self.proc, grace_s, sig=signal.SIGINT)

    def __enter__(self) -> DagsterDev:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait(self, predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 1.0) -> Any:
        """Poll predicate() until it returns a truthy value (returned); exceptions count as
        'not yet' except DagsterDevError. Fails with the log's tail if the process exits or
        the time runs out."""
        timeout_s = scaled(timeout_s)
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise DagsterDevError(f"dagster dev exited ({self.proc.returncode}) while waiting for {what}:\n{self.log_tail()}")
            try:
                value = predicate()
            except DagsterDevError:
                raise
            except Exception as exc:  # noqa: BLE001 — not ready yet; reported on timeout
                last_error, value = exc, None
            if value:
                return value
            time.sleep(interval_s)
        raise DagsterDevError(f"timed out after {timeout_s:.0f} s waiting for {what}"
                              + (f" (last error: {last_error!r})" if last_error else "") + f":\n{self.log_tail()}")

    def graphql(self, query: str, variables: dict | None = None, timeout_s: float = 30) -> dict:
        """POST a query to /graphql; returns `data`, raises DagsterDevError on GraphQL errors."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=scaled(timeout_s)) as r:
                doc = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            raise DagsterDevError(f"GraphQL HTTP {exc.code}: {exc.read()[:2000]!r}") from None
        if doc.get("errors"):
            raise DagsterDevError(f"GraphQL errors: {json.dumps(doc['errors'])[:2000]}")
        return doc["data"]
