"""The HTTP side of `relops serve`: OTLP/HTTP routes, API keys, limits and status codes.

Routes: `POST /v1/traces`, `POST /v1/logs` (OTLP/HTTP) and `POST /api/public/otel/v1/traces`
(Langfuse's OTel endpoint, Basic auth public-key:secret-key). Per the OTLP/HTTP specification:
200 with an Export*ServiceResponse in the request's encoding (partial_success when items were
rejected) once the payload is durable on disk; 400 for a body that cannot be decoded (a
google.rpc.Status body); 401 without a valid key; 404 / 405 for other paths / methods; 411
without a Content-Length; 413 past the body limit (before or after gzip); 415 for other content
types or encodings; 429 with Retry-After while the spool is over its size; 503 with Retry-After
when the payload cannot be written.

The LangSmith ingestion API (`LANGSMITH_ENDPOINT=http://host:port`): `GET /info` (the SDK's
configuration), `POST /runs/multipart`, `POST /runs/batch`, `POST /runs`, `PATCH /runs/{id}`,
parsed by langsmith_api and spooled durably as `*.langsmith.json` (`{post, patch}`, read by the
langsmith reader); 202 `{"message": ...}` once durable, errors as `{"detail": ...}` with the
status of LangSmithRequestError. `GET /info` needs no key (the SDK may call it before any).

Throughput: the HTTP threads read bodies, answer and wait for the spool; the conversion of a big
body (>= 32 KiB) to its OTLP JSON line runs in a pool of worker processes (`Converter`, `relops
serve --workers`), since it is pure Python and would otherwise serialise every request on one
GIL; the spool's group commit writes the lines of all waiting requests as one file with one
fsync. An ack still comes only after the fsync of the file and its folder.

Read-only routes (web.py): `GET`/`HEAD` `/reports/<path>` (a report file under the home's
reports folder; `/reports/` its index) and `/releases/`, `/releases/<workflow>/<version>` (the
release pages, lib/release_page); other methods 405. Browsers cannot send a key header, so
these answer 401 with `WWW-Authenticate: Basic realm="relops"` and accept Basic auth whose
password is a key (the user name is ignored), besides the header forms below; a key pinned to a
workflow sees only that workflow's release pages and reports (web.py says which). 503 "warehouse
busy" with Retry-After while a writer holds the warehouse.

Keys: `Authorization: Bearer <key>` or the password of Basic auth; on the LangSmith routes also
`x-api-key: <key>` (the SDK's header). A key's workflow pin is not applied to LangSmith runs. A key configured with a
workflow pins every span (log record) of its requests to that workflow (the relops.workflow
attribute on the span and its resource). No keys configured: open to anyone who can reach the
port (the startup line says so).
"""

from __future__ import annotations

import base64
import binascii
import gc
import hmac
import json
import multiprocessing
import os
import re
import signal as signals
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from relops_pipeline.lib.home import Home
from relops_pipeline.lib.receiver import web
from relops_pipeline.lib.receiver.langsmith_api import LangSmithRequestError, info_document, parse_request, spool_document
from relops_pipeline.lib.receiver.payload import (
    JSON,
    LOGS,
    PROTOBUF,
    TRACES,
    BadRequest,
    Converted,
    TooLarge,
    UnsupportedMedia,
    convert,
    media_type,
    status,
    success,
)
from relops_pipeline.lib.receiver.spool import LANGSMITH_SUFFIX, Spool
from relops_pipeline.lib.release_page import WarehouseBusy
from relops_pipeline.lib.settings import ServeKey

ROUTES = {"/v1/traces": TRACES, "/v1/logs": LOGS, "/api/public/otel/v1/traces": TRACES}
# The LangSmith ingestion API (LANGSMITH_ENDPOINT=http://host:port): GET /info, POST /runs/multipart,
# POST /runs/batch, POST /runs, PATCH /runs/{id}; parsed by langsmith_api, spooled as *.langsmith.json.
LANGSMITH_ROUTES = ("/info", "/runs/multipart", "/runs/batch", "/runs")
_LANGSMITH_RUN = re.compile(r"^/runs/[0-9A-Za-z-]+$")
MIB = 1024 * 1024
WEB_PREFIXES = ("/reports/", "/releases/")  # the read-only routes (web.py)
# gRPC status codes in the error bodies (google.rpc.Status.code)
_GRPC = {400: 3, 401: 16, 404: 12, 405: 12, 411: 3, 413: 8, 415: 3, 429: 8, 503: 14}


@dataclass
class Limits:
    """What the receiver accepts: body size, spool size and the Retry-After it answers with."""

    max_body_bytes: int = 16 * MIB
    spool_limit_bytes: int = 1024 * MIB
    retry_after_s: int = 5


def tune_gc() -> None:
    """For a process converting requests: a request's OTLP JSON is ~10 objects per span, none in
    a cycle, and with the default thresholds (700, 10, 10) the collector would scan the whole heap
    about once per 512-span request. Startup objects are frozen out of the scans and young
    collections run less often (~15% of the conversion time saved)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _worker_init() -> None:
    """A conversion worker: the server alone decides when it stops (Ctrl-C / SIGTERM sent to the
    process group would otherwise fail the requests in flight before the server drains them),
    and it does not outlive the server (kill -9 of the server alone would leave it waiting on
    its pipe forever)."""
    signals.signal(signals.SIGINT, signals.SIG_IGN)
    signals.signal(signals.SIGTERM, signals.SIG_IGN)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="relops-worker-watch", daemon=True).start()
    tune_gc()


def _ready() -> int:
    """A worker's pid, once it is started; held a moment so that the other workers take the
    other warm-up tasks."""
    time.sleep(0.05)
    return os.getpid()


class WorkerLost(OSError):
    """A conversion worker died (the request is answered 503 and the pool replaced)."""


class Converter:
    """Where request bodies become OTLP JSON lines (payload.convert). The conversion is pure
    Python, so in one process it would hold the GIL for every request: bodies of at least
    `inline_below` bytes go to a pool of `workers` processes (spawned, warmed at start) and the
    HTTP threads only read bodies, fsync and answer; smaller ones (and `workers` 0) are converted
    in the handler's thread, where the round trip to a worker would cost more than it saves."""

    def __init__(self, workers: int = 0, inline_below: int = 32 * 1024):
        self.workers = max(0, workers)
        self.inline_below = inline_below
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _new_pool(self) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init)
        started: set[int] = set()
        deadline = time.monotonic() + 120
        while len(started) < self.workers and time.monotonic() < deadline:  # every worker started and initialised
            started.update(f.result(timeout=120) for f in [pool.submit(_ready) for _ in range(self.workers)])
        return pool

    def start(self) -> None:
        """Start the worker processes (none when `workers` is 0)."""
        with self._lock:
            if self.workers and self._pool is None:
                self._pool = self._new_pool()

    def convert(self, body: bytes, encoding: str | None, mtype: str, signal: str, workflow: str | None, limit: int) -> Converted:
        """payload.convert here or in a worker; WorkerLost when the worker died on it."""
        with self._lock:
            pool = self._pool
        if pool is None or len(body) < self.inline_below:
            return convert(body, encoding, mtype, signal, workflow, limit)
        try:
            return pool.submit(convert, body, encoding, mtype, signal, workflow, limit).result()
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:  # the first request to see it replaces the pool
                    pool.shutdown(wait=False, cancel_futures=True)
                    self._pool = self._new_pool()
            raise WorkerLost("a conversion worker stopped; retry") from None

    def close(self) -> None:
        """Stop the workers (after the requests in flight)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class Receiver:
    """The state the request handlers share: the spool, the keys, the limits, the converter,
    the home whose reports and release pages it shows, in-flight requests."""

    spool: Spool
    keys: tuple[ServeKey, ...] = ()
    limits: Limits = field(default_factory=Limits)
    converter: Converter = field(default_factory=Converter)
    home: Home | None = None  # the reports and release pages shown read-only (none: those routes 404)
    _busy: int = 0
    _idle: threading.Condition = field(default_factory=threading.Condition)

    def authorize(self, authorization: str | None, api_key: str | None = None) -> tuple[bool, str | None]:
        """(accepted, the workflow the key pins or None) for an Authorization header, or the
        `x-api-key` header (the LangSmith SDK's) when there is no Authorization."""
        if not self.keys:
            return True, None
        presented = _presented_key(authorization) if authorization else (api_key or "").strip() or None
        if presented is None:
            return False, None
        for key in self.keys:
            if hmac.compare_digest(presented.encode("utf-8"), key.key.encode("utf-8")):
                return True, key.workflow
        return False, None

    def begin(self) -> None:
        """A request is being handled (stop() waits for it)."""
        with self._idle:
            self._busy += 1

    def end(self) -> None:
        """A request has been answered."""
        with self._idle:
            self._busy -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no request is being handled; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout_s)


def _presented_key(authorization: str) -> str | None:
    """The key of `Bearer KEY`, or the password of `Basic base64(user:password)`."""
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return None
        _, sep, password = decoded.partition(":")
        return password if sep and password else None
    return None


class _Handler(BaseHTTPRequestHandler):
    """One connection: OTLP/HTTP requests, keep-alive (HTTP/1.1)."""

    protocol_version = "HTTP/1.1"
    server_version = "relops-serve"
    timeout = 120  # an idle keep-alive connection is closed after this many seconds
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall
    server: ReceiverServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 — the base class's name
        """Quiet: the counters say what happened."""

    def _reply(self, code: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _fail(self, code: int, message: str, mtype: str, headers: dict[str, str] | None = None) -> None:
        body, ctype = status(_GRPC.get(code, 2), message, mtype if mtype == PROTOBUF else JSON)
        self._reply(code, body, ctype, headers)

    def _skip_body(self, length: int | None) -> None:
        """Read an unwanted body to keep the connection, or close it when it is too big."""
        if length is not None and length <= self.server.receiver.limits.max_body_bytes:
            self.rfile.read(length)
        else:
            self.close_connection = True

    def _route(self) -> str | None:
        return ROUTES.get(urlsplit(self.path).path.rstrip("/"))

    def _langsmith_route(self) -> str | None:
        """The LangSmith API path of this request (None when it is not one)."""
        path = urlsplit(self.path).path.rstrip("/")
        return path if path in LANGSMITH_ROUTES or _LANGSMITH_RUN.match(path) else None

    def _json_reply(self, code: int, doc: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._reply(code, json.dumps(doc).encode(), JSON, headers)

    def _langsmith(self, receiver: Receiver, path: str) -> None:
        """One LangSmith API request: GET /info answered, runs spooled durably (202) once parsed."""
        limits, spool = receiver.limits, receiver.spool
        raw_length = self.headers.get("Content-Length")
        length = int(raw_length) if raw_length is not None and raw_length.strip().isdigit() else None
        if self.command == "GET":
            self._skip_body(length or 0)
            if path != "/info":
                return self._json_reply(405, {"detail": f"GET is not allowed on {path}"}, {"Allow": "POST, PATCH"})
            return self._json_reply(200, info_document(size_limit_bytes=limits.max_body_bytes))
        if length is None:
            self.close_connection = True
            return self._json_reply(411, {"detail": "a Content-Length is required"})
        ok, _workflow = receiver.authorize(self.headers.get("Authorization"), self.headers.get("x-api-key"))
        if not ok:
            spool.count(unauthorized_401=1)
            self._skip_body(length)
            return self._json_reply(401, {"detail": "missing or invalid API key (x-api-key: KEY, or Authorization: Bearer KEY)"})
        if length > limits.max_body_bytes:
            spool.count(too_large_413=1)
            self.close_connection = True
            return self._json_reply(413, {"detail": f"the body is over {limits.max_body_bytes} bytes"})
        if spool.pending_bytes() > limits.spool_limit_bytes:
            spool.count(throttled_429=1)
            self._skip_body(length)
            return self._json_reply(429, {"detail": "the spool is full: retry later (relops ingest drains it)"},
                                    {"Retry-After": str(limits.retry_after_s)})
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            spool.count(bad_request_400=1)
            return self._json_reply(400, {"detail": "the body ended before its Content-Length"})
        try:
            runs = parse_request(self.command, path, dict(self.headers.items()), body, max_bytes=limits.max_body_bytes)
        except LangSmithRequestError as exc:
            counter = {413: "too_large_413", 415: "unsupported_415"}.get(exc.status, "bad_request_400")
            spool.count(**{counter: 1})
            return self._json_reply(exc.status, {"detail": str(exc)})
        runs = runs or {}
        n_runs = len(runs.get("post") or []) + len(runs.get("patch") or [])
        written = 0
        if n_runs or runs.get("attachments"):
            data = spool_document(runs)
            try:
                spool.write(data, suffix=LANGSMITH_SUFFIX)
            except OSError as exc:
                return self._json_reply(503, {"detail": f"cannot store the payload: {exc.strerror or exc}"},
                                        {"Retry-After": str(limits.retry_after_s)})
            written = len(data)
        spool.count(requests=1, langsmith_requests=1, langsmith_runs=n_runs, bytes=written)
        self._json_reply(202, {"message": "Runs batch ingested" if path in ("/runs/multipart", "/runs/batch") else "Run created"})

    def _dispatch(self) -> None:
        """Every method: the LangSmith API's routes, POST to the OTLP routes, the rest 404 / 405."""
        receiver = self.server.receiver
        receiver.begin()
        try:
            plain = urlsplit(self.path).path
            if plain.startswith(WEB_PREFIXES) or plain in ("/reports", "/releases"):
                return self._web(receiver, plain)
            path = self._langsmith_route()
            if path is not None and ((self.command == "GET" and path == "/info")
                                     or (self.command == "POST" and path in LANGSMITH_ROUTES and path != "/info")
                                     or (self.command == "PATCH" and path not in LANGSMITH_ROUTES)):
                return self._langsmith(receiver, path)
            if self.command == "POST":
                return self._post(receiver)
            return self._not_post()
        finally:
            receiver.end()

    def _web(self, receiver: Receiver, path: str) -> None:
        """The read-only routes (web.py): reports and release pages, GET and HEAD only, behind
        the API keys (Basic auth with a key as the password, for browsers)."""
        length = self.headers.get("Content-Length")
        self._skip_body(int(length) if length and length.isdigit() else 0)
        head = self.command == "HEAD"
        if self.command not in ("GET", "HEAD"):
            page = web.Page(405, b"only GET and HEAD here\n", "text/plain; charset=utf-8",
                            {"Allow": "GET, HEAD", **web.security_headers()})
            return self._page(page, head)
        if receiver.home is None:
            return self._page(web.Page(404, b"no home to show\n", "text/plain; charset=utf-8", web.security_headers()), head)
        ok, pin = receiver.authorize(self.headers.get("Authorization"), self.headers.get("x-api-key"))
        if not ok:
            receiver.spool.count(unauthorized_401=1)
            page = web.Page(401, b"an API key is needed: Basic auth with the key as the password (any user name), "
                                 b"Authorization: Bearer KEY or x-api-key: KEY\n", "text/plain; charset=utf-8",
                            {"WWW-Authenticate": 'Basic realm="relops", charset="UTF-8"', **web.security_headers()})
            return self._page(page, head)
        try:
            if path.startswith("/reports"):
                page = web.report(receiver.home, path[len("/reports/"):], pin)
            else:
                page = web.releases(receiver.home, path[len("/releases/"):], pin)
        except WarehouseBusy as exc:
            page = web.Page(503, f"warehouse busy: {exc}\n".encode(), "text/plain; charset=utf-8",
                            {"Retry-After": "2", **web.security_headers()})
        self._page(page, head)

    def _page(self, page: web.Page, head: bool) -> None:
        """Send a web.Page (HEAD: the same headers, no body)."""
        self.send_response(page.status)
        self.send_header("Content-Type", page.content_type)
        self.send_header("Content-Length", str(len(page.body)))
        for k, v in page.headers.items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(page.body)

    def _post(self, receiver: Receiver) -> None:
        signal = self._route()
        mtype = media_type(self.headers.get("Content-Type"))
        length: int | None = None
        raw_length = self.headers.get("Content-Length")
        if raw_length is not None and raw_length.strip().isdigit():
            length = int(raw_length)
        if signal is None:
            self._skip_body(length)
            return self._fail(404, f"no such endpoint: {self.path}", mtype)
        if length is None:
            self.close_connection = True
            return self._fail(411, "a Content-Length is required", mtype)
        limits, spool = receiver.limits, receiver.spool
        ok, workflow = receiver.authorize(self.headers.get("Authorization"))
        if not ok:
            spool.count(unauthorized_401=1)
            self._skip_body(length)
            return self._fail(401, "missing or invalid API key (Authorization: Bearer KEY, or Basic auth with the key as password)",
                              mtype, {"WWW-Authenticate": 'Basic realm="relops", charset="UTF-8"'})
        if length > limits.max_body_bytes:
            spool.count(too_large_413=1)
            self.close_connection = True
            return self._fail(413, f"the body is over {limits.max_body_bytes} bytes", mtype)
        if mtype not in (PROTOBUF, JSON):
            spool.count(unsupported_415=1)
            self._skip_body(length)
            return self._fail(415, f"Content-Type {mtype or '(none)'!r} is not supported ({PROTOBUF} or {JSON})", JSON)
        if spool.pending_bytes() > limits.spool_limit_bytes:
            spool.count(throttled_429=1)
            self._skip_body(length)
            return self._fail(429, "the spool is full: retry later (relops ingest drains it)", mtype,
                              {"Retry-After": str(limits.retry_after_s)})
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            spool.count(bad_request_400=1)
            return self._fail(400, "the body ended before its Content-Length", mtype)
        try:
            done = receiver.converter.convert(body, self.headers.get("Content-Encoding"), mtype, signal, workflow, limits.max_body_bytes)
        except WorkerLost as exc:
            return self._fail(503, str(exc), mtype, {"Retry-After": "1"})
        except TooLarge as exc:
            spool.count(too_large_413=1)
            return self._fail(413, str(exc), mtype)
        except UnsupportedMedia as exc:
            spool.count(unsupported_415=1)
            return self._fail(415, str(exc), mtype)
        except BadRequest as exc:
            spool.count(bad_request_400=1)
            return self._fail(400, str(exc), mtype)
        written = 0
        if done.line is not None:
            try:
                spool.commit(done.line)  # group commit: returns once the file holding it is fsynced
            except OSError as exc:
                return self._fail(503, f"cannot store the payload: {exc.strerror or exc}", mtype,
                                  {"Retry-After": str(limits.retry_after_s)})
            written = len(done.line)
        items = "spans" if signal == TRACES else "log_records"
        spool.count(requests=1, bytes=written, rejected_items=done.rejected, **{items: done.accepted})
        self._reply(200, success(signal, mtype, done), mtype)

    def _not_post(self) -> None:
        known = self._route() is not None
        length = self.headers.get("Content-Length")
        self._skip_body(int(length) if length and length.isdigit() else 0)
        if known:
            return self._fail(405, f"{self.command} is not allowed here: POST an OTLP export", JSON, {"Allow": "POST"})
        if urlsplit(self.path).path in ("", "/") and self.command in ("GET", "HEAD"):
            return self._reply(200, b'{"service":"relops serve"}', JSON)
        return self._fail(404, f"no such endpoint: {self.path}", JSON)

    do_POST = do_GET = do_PUT = do_PATCH = do_DELETE = do_HEAD = _dispatch


class ReceiverServer(ThreadingHTTPServer):
    """A threading HTTP server holding the Receiver its handlers share."""

    daemon_threads = True  # idle keep-alive connections do not hold up a stop; requests do (Receiver.wait_idle)
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], receiver: Receiver):
        super().__init__(address, _Handler)
        self.receiver = receiver


@dataclass
class Running:
    """A started receiver: its server, threads and the stop switch."""

    server: ReceiverServer
    receiver: Receiver
    threads: list[threading.Thread]
    stop_event: threading.Event

    @property
    def host(self) -> str:
        """The address it listens on."""
        return str(self.server.server_address[0])

    @property
    def port(self) -> int:
        """The port it listens on (the real one when 0 was asked)."""
        return int(self.server.server_address[1])

    def stop(self, grace_s: float = 30.0) -> bool:
        """Stop accepting, wait for requests in flight (up to `grace_s`), save the state; False
        when some request was still running."""
        self.server.shutdown()
        idle = self.receiver.wait_idle(grace_s)
        self.stop_event.set()
        self.server.server_close()
        self.receiver.converter.close()
        self.receiver.spool.close(grace_s)
        for t in self.threads:
            t.join(timeout=grace_s)
        self.receiver.spool.save({"stopped_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())})
        return idle


def start(receiver: Receiver, host: str, port: int, housekeeping_s: float = 2.0) -> Running:
    """Bind and serve in background threads (HTTP, and the spool's housekeeping), the conversion
    workers started first."""
    server = ReceiverServer((host, port), receiver)
    try:
        receiver.converter.start()
    except BaseException:
        server.server_close()
        raise
    stop_event = threading.Event()
    threads = [
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="relops-serve", daemon=True),
        threading.Thread(target=receiver.spool.run_housekeeping, args=(stop_event, housekeeping_s), name="relops-spool", daemon=True),
    ]
    for t in threads:
        t.start()
    return Running(server, receiver, threads, stop_event)
