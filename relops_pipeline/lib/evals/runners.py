"""Eval runners: produce one SampleResult per SampleRequest, in request order.

Three runners share one interface (`Runner.run(manifest, requests, progress=None)`):

- ``python``: an import path to a callable, run in threads with a per-sample timeout;
- ``http``: an OpenAI-compatible chat-completions endpoint (``mode: openai-chat``) or a JSON
  endpoint (``mode: json``), asynchronous (asyncio + httpx) with bounded concurrency,
  per-request timeouts and retries with exponential backoff, jitter and ``Retry-After``;
- ``replay``: outputs recorded earlier in a JSONL file.

Common behaviour: a sample that errors or times out becomes a SampleResult with ``error`` set
to a reason (``timeout after 30.0 s``, ``HTTP 500 after 4 attempts: <body>``,
``ConnectError: ... (after 5 attempts)``, ``exception in runner: ValueError: ...``) and the
run goes on. Configuration problems (unknown runner type or key, a callable that cannot be
imported, a missing API key variable, an unreadable replay file) raise RunnerConfigError from
`build_runner`, before any sample runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import email.utils
import importlib
import inspect
import json
import math
import os
import queue
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from relops_pipeline.lib.evals.model import Case, Manifest, SampleRequest, SampleResult

Progress = Callable[[int, int], None]

PROGRESS_INTERVAL_S = 0.1  # at most ~10 progress calls a second (plus the final one)
_REASON_MAX = 300  # characters of an exception message or response body kept in a reason


class RunnerConfigError(ValueError):
    """A runner configuration that cannot work; raised before any sample runs."""


class Runner:
    """Base class: `run` returns exactly one SampleResult per request, in request order."""

    type: str = ""

    @property
    def source(self) -> str:
        """The eval run's source label, ``runner:<type>``."""
        return f"runner:{self.type}"

    def run(
        self,
        manifest: Manifest,
        requests: list[SampleRequest],
        progress: Progress | None = None,
    ) -> list[SampleResult]:
        """Run every request; errors are recorded per sample and never abort the run."""
        raise NotImplementedError


def build_runner(config: dict[str, Any], base_dir: str | Path | None = None) -> Runner:
    """Build a runner from a workflow's ``runner:`` block.

    ``base_dir`` (optional) resolves a relative replay ``file`` (the workflow home, typically);
    without it a relative path is taken from the current directory.
    Raises RunnerConfigError with a message naming the offending key or value.
    """
    if not isinstance(config, dict):
        raise RunnerConfigError(f"runner config must be a mapping, got {type(config).__name__}")
    kind = config.get("type")
    builders = {"python": PythonRunner.from_config, "http": HttpRunner.from_config, "replay": ReplayRunner.from_config}
    if kind not in builders:
        raise RunnerConfigError(f"runner type {kind!r} is not one of: {', '.join(builders)}")
    if kind == "replay":
        return ReplayRunner.from_config(config, base_dir=base_dir)
    return builders[kind](config)


def check_runner_config(config: dict[str, Any]) -> list[str]:
    """Check a `runner:` block as far as it can be checked without the environment it will run
    in (`relops workflow add`): keys, types, the URL and mode, the form of the callable. Raises
    RunnerConfigError on what can never work; returns warnings on what may work elsewhere (the
    API key variable is not set here, the callable does not import here, a chat URL that does
    not end in /chat/completions)."""
    if not isinstance(config, dict):
        raise RunnerConfigError(f"runner config must be a mapping, got {type(config).__name__}")
    warnings: list[str] = []
    kind = config.get("type")
    if kind == "http":
        env = config.get("api_key_env")
        if env is not None and (not isinstance(env, str) or not env.isidentifier()):
            raise RunnerConfigError(f"http runner: api_key_env must be a variable name, got {env!r}")
        HttpRunner.from_config({k: v for k, v in config.items() if k != "api_key_env"})
        if env and not os.environ.get(env):
            warnings.append(f"the API key variable {env} is not set here: export it where evals run")
        if config.get("mode", "openai-chat") == "openai-chat" and not str(config["url"]).rstrip("/").endswith("/chat/completions"):
            warnings.append(f"url {config['url']} does not end in /chat/completions: the http runner posts to the URL as "
                            "given (e.g. https://api.openai.com/v1/chat/completions)")
    elif kind == "python":
        _check_keys(config, PythonRunner.KEYS, "python")
        spec = config.get("callable")
        if not isinstance(spec, str) or spec.count(":") != 1 or not all(
                part and all(p.isidentifier() for p in part.split(".")) for part in spec.split(":")):
            raise RunnerConfigError(f"python runner: callable must be 'package.module:function', got {spec!r}")
        _number(config, "timeout_s", 30.0, "python", strict=True)
        _number(config, "concurrency", 4, "python", minimum=1, integer=True)
        try:
            load_callable(spec)
        except RunnerConfigError as exc:
            warnings.append(f"{exc} (here; it must import where evals run)")
    else:
        build_runner(config)  # replay, or an unknown type (its error names the known ones)
    return warnings


def invalid_run(results: list[SampleResult], max_error_rate: float) -> tuple[bool, float]:
    """(invalid, error_rate): a run whose share of errored samples exceeds ``max_error_rate``
    is invalid. A run with no samples is invalid too (nothing was measured; rate 0.0)."""
    if not results:
        return True, 0.0
    rate = sum(1 for r in results if r.error is not None) / len(results)
    return rate > max_error_rate, rate


# --------------------------------------------------------------------------- helpers


def _check_keys(config: dict[str, Any], allowed: set[str], kind: str) -> None:
    unknown = sorted(set(config) - allowed - {"type"})
    if unknown:
        raise RunnerConfigError(
            f"{kind} runner: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


def _number(config: dict[str, Any], key: str, default: float, kind: str, *, minimum: float = 0.0,
            integer: bool = False, strict: bool = False) -> Any:
    value = config.get(key, default)
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or (value < minimum or (strict and value == minimum)):
        bound = f"> {minimum}" if strict else f">= {minimum}"
        what = "an integer" if integer else "a number"
        raise RunnerConfigError(f"{kind} runner: {key} must be {what} {bound}, got {value!r}")
    if not integer and not math.isfinite(value):
        raise RunnerConfigError(f"{kind} runner: {key} must be finite, got {value!r}")
    return value


def _short(text: Any, limit: int = _REASON_MAX) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _exc_text(exc: BaseException) -> str:
    msg = _short(str(exc))
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _timeout_reason(timeout_s: float) -> str:
    return f"timeout after {float(timeout_s)} s"


def _opt_int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _opt_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _as_output(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


class _Throttle:
    """Calls progress(done, total) at most every PROGRESS_INTERVAL_S, and always at the end."""

    def __init__(self, progress: Progress | None, total: int):
        self.progress, self.total, self.done, self.last = progress, total, 0, float("-inf")

    def tick(self) -> None:
        self.done += 1
        if self.progress is None:
            return
        now = time.monotonic()
        if self.done == self.total or now - self.last >= PROGRESS_INTERVAL_S:
            self.last = now
            self.progress(self.done, self.total)


def _render_messages(manifest: Manifest, case: Case) -> list[dict[str, Any]]:
    from relops_pipeline.lib.evals.manifests import render_messages

    return render_messages(manifest, case)


# --------------------------------------------------------------------------- python runner


def load_callable(path: Any, what: str = "runner callable") -> Callable[..., Any]:
    """Import ``package.module:function`` (the attribute part may be dotted, e.g. ``Cls.method``).
    Raises RunnerConfigError with a clear message when the path cannot be imported."""
    if not isinstance(path, str) or path.count(":") != 1 or not all(path.split(":")):
        raise RunnerConfigError(f"{what} {path!r}: expected 'package.module:function'")
    module_name, attr_path = path.split(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import-time failure is a config error
        raise RunnerConfigError(f"{what} {path!r}: cannot import module {module_name!r}: {_exc_text(exc)}") from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise RunnerConfigError(f"{what} {path!r}: {module_name!r} has no attribute {attr_path!r}") from exc
    if not callable(obj):
        raise RunnerConfigError(f"{what} {path!r} is not callable ({type(obj).__name__})")
    return obj


class PythonRunner(Runner):
    """Calls ``fn(manifest=, case=, sample=, seed=)`` for each request in worker threads.

    The callable returns a str (the output) or a dict with ``output`` and optional
    ``latency_ms`` (reported latency wins over the measured one: a simulated LLM reports the
    latency it simulates), ``input_tokens``, ``output_tokens``, ``cost_usd``, ``error``.
    A coroutine function is run with asyncio.run in its worker thread.

    Timeouts: at most ``concurrency`` calls run at once, each in its own daemon thread. A call
    that exceeds ``timeout_s`` is recorded as ``timeout after N s`` and its slot is given to
    the next sample. Python cannot kill a thread, so the timed-out call keeps running in the
    background until it returns on its own (its result is discarded); a callable that hangs
    forever leaks one thread per timed-out sample until the process exits.
    """

    type = "python"
    KEYS = {"callable", "timeout_s", "concurrency"}

    def __init__(self, fn: Callable[..., Any], *, timeout_s: float = 30.0, concurrency: int = 4,
                 name: str | None = None):
        self.fn = fn
        self.timeout_s = float(timeout_s)
        self.concurrency = int(concurrency)
        self.name = name or getattr(fn, "__qualname__", repr(fn))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PythonRunner:
        """Validate the config and import the callable (errors surface here, before any sample)."""
        _check_keys(config, cls.KEYS, "python")
        fn = load_callable(config.get("callable"))
        timeout_s = _number(config, "timeout_s", 30.0, "python", strict=True)
        concurrency = _number(config, "concurrency", 4, "python", minimum=1, integer=True)
        return cls(fn, timeout_s=timeout_s, concurrency=concurrency, name=config["callable"])

    def _call(self, manifest: Manifest, req: SampleRequest) -> Any:
        value = self.fn(manifest=manifest, case=req.case, sample=req.sample, seed=req.seed)
        if inspect.isawaitable(value):
            async def _await() -> Any:
                return await value

            value = asyncio.run(_await())
        return value

    def _finish(self, req: SampleRequest, value: Any, err: BaseException | None,
                elapsed_ms: float) -> SampleResult:
        if err is None:
            try:
                return self._result(req, value, elapsed_ms)
            except Exception as exc:  # noqa: BLE001 - e.g. an output that cannot be serialised
                return SampleResult(case_id=req.case.id, sample=req.sample, latency_ms=elapsed_ms,
                                    error=f"invalid runner result: {_exc_text(exc)}", attempts=1)
        return SampleResult(case_id=req.case.id, sample=req.sample, latency_ms=elapsed_ms,
                            error=f"exception in runner: {_exc_text(err)}", attempts=1)

    def _result(self, req: SampleRequest, value: Any, elapsed_ms: float) -> SampleResult:
        res = SampleResult(case_id=req.case.id, sample=req.sample, latency_ms=elapsed_ms, attempts=1)
        if isinstance(value, str):
            res.output = value
            return res
        if not isinstance(value, dict):
            res.error = f"runner returned {type(value).__name__}; expected str or a dict with 'output'"
            return res
        if value.get("error") is not None:
            res.error = _short(value["error"])
        elif "output" not in value:
            res.error = f"runner returned a dict without 'output' (keys: {', '.join(sorted(map(str, value)))})"
        res.output = _as_output(value.get("output"))
        reported = _opt_float(value.get("latency_ms"))
        if reported is not None:
            res.latency_ms = reported
        res.input_tokens = _opt_int(value.get("input_tokens"))
        res.output_tokens = _opt_int(value.get("output_tokens"))
        res.cost_usd = _opt_float(value.get("cost_usd"))
        extra = {k: v for k, v in value.items()
                 if k not in {"output", "error", "latency_ms", "input_tokens", "output_tokens", "cost_usd"}}
        res.raw = extra or None
        return res

    def run(self, manifest: Manifest, requests: list[SampleRequest],
            progress: Progress | None = None) -> list[SampleResult]:
        """Run the callable over every request; see the class docstring for timeouts."""
        total = len(requests)
        results: list[SampleResult | None] = [None] * total
        throttle = _Throttle(progress, total)
        done_q: queue.Queue[tuple[int, Any, BaseException | None, float]] = queue.Queue()
        active: dict[int, float] = {}  # index -> monotonic start
        next_idx = 0

        def worker(i: int) -> None:
            t0 = time.perf_counter()
            try:
                value, err = self._call(manifest, requests[i]), None
            except BaseException as exc:  # noqa: BLE001 - recorded as the sample's error
                value, err = None, exc
            done_q.put((i, value, err, (time.perf_counter() - t0) * 1000.0))

        while next_idx < total or active:
            while next_idx < total and len(active) < self.concurrency:
                active[next_idx] = time.monotonic()
                threading.Thread(target=worker, args=(next_idx,), daemon=True,
                                 name=f"relops-python-runner-{next_idx}").start()
                next_idx += 1
            wait = max(0.0, min(active.values()) + self.timeout_s - time.monotonic())
            finished = []
            try:
                finished.append(done_q.get(timeout=wait))
                while True:  # drain: a call that finished in time must not be counted as a timeout
                    finished.append(done_q.get_nowait())
            except queue.Empty:
                pass
            for i, value, err, elapsed_ms in finished:
                if i not in active:
                    continue  # an abandoned (timed-out) call that returned late: already recorded
                del active[i]
                results[i] = self._finish(requests[i], value, err, elapsed_ms)
                throttle.tick()
            now = time.monotonic()
            for j, start in list(active.items()):
                if now - start >= self.timeout_s:
                    del active[j]  # the thread is abandoned, see the class docstring
                    req = requests[j]
                    results[j] = SampleResult(case_id=req.case.id, sample=req.sample,
                                              latency_ms=(now - start) * 1000.0,
                                              error=_timeout_reason(self.timeout_s), attempts=1)
                    throttle.tick()
        return [r for r in results if r is not None]


# --------------------------------------------------------------------------- http runner

_RETRY_STATUS = {408, 429}
# httpcore 1.0's pool does O(connections^2) bookkeeping on every request start and finish
# (encode/httpcore#1035, encode/httpx#3215): one client with 64 connections spent ~11 ms of CPU
# per request and reached a quarter of the ideal throughput. Several clients with small pools
# keep that cost flat; the concurrency bound is shared across them (see HttpRunner._run_async).
_CONNECTIONS_PER_CLIENT = 16


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP-date); None when
    absent or unparseable. A date in the past gives 0."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


class HttpRunner(Runner):
    """POSTs one request per sample to an OpenAI-compatible chat endpoint or a JSON endpoint.

    Config keys: ``url`` (required), ``mode`` (``openai-chat`` | ``json``, default openai-chat),
    ``api_key_env`` (sent as ``Authorization: Bearer``; a missing variable is a config error),
    ``concurrency`` (8), ``timeout_s`` (60, the whole request), ``max_retries`` (4: retries
    after the first attempt, so at most 1 + max_retries attempts), ``backoff_s`` (0.5),
    ``backoff_max_s`` (30), ``retry_after_max_s`` (60, cap on a server's Retry-After),
    ``retry_timeouts`` (false), ``headers`` ({}), ``send_seed`` (true: the sample's seed as
    ``seed`` unless the manifest parameters set one), ``send_tools`` (false: manifest tools as
    OpenAI function tools).

    Retried: HTTP 408/429/5xx and connect/read/protocol errors, with exponential backoff
    (``backoff_s * 2**(attempt-1)``, capped, equal jitter) or the server's ``Retry-After``
    (seconds or HTTP-date, capped at ``retry_after_max_s``). Other 4xx are recorded at once.
    A request that exceeds ``timeout_s`` is recorded as a timeout (retried only with
    ``retry_timeouts: true``: a slow endpoint would otherwise multiply the run time).
    A concurrency slot is held during the backoff wait, so a rate-limited endpoint is not hit
    harder by the other requests. Connections are spread over one httpx.AsyncClient per 16
    slots (httpcore's pool bookkeeping grows with the square of its size).

    ``latency_ms`` is the duration of the last attempt (the endpoint's answer time, without
    our backoff waits); ``raw`` holds the response JSON (or, for errors, the status).
    """

    type = "http"
    MODES = ("openai-chat", "json")
    KEYS = {"url", "mode", "api_key_env", "concurrency", "timeout_s", "max_retries", "backoff_s",
            "backoff_max_s", "retry_after_max_s", "retry_timeouts", "headers", "send_seed", "send_tools"}

    def __init__(self, url: str, *, mode: str = "openai-chat", api_key: str | None = None,
                 concurrency: int = 8, timeout_s: float = 60.0, max_retries: int = 4,
                 backoff_s: float = 0.5, backoff_max_s: float = 30.0, retry_after_max_s: float = 60.0,
                 retry_timeouts: bool = False, headers: dict[str, str] | None = None,
                 send_seed: bool = True, send_tools: bool = False):
        self.url, self.mode, self.api_key = url, mode, api_key
        self.concurrency, self.timeout_s, self.max_retries = concurrency, float(timeout_s), max_retries
        self.backoff_s, self.backoff_max_s = float(backoff_s), float(backoff_max_s)
        self.retry_after_max_s, self.retry_timeouts = float(retry_after_max_s), retry_timeouts
        self.headers = dict(headers or {})
        self.send_seed, self.send_tools = send_seed, send_tools
        self._sleep = asyncio.sleep  # replaceable in tests

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HttpRunner:
        """Validate the config and read the API key from its environment variable."""
        _check_keys(config, cls.KEYS, "http")
        url = config.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise RunnerConfigError(f"http runner: url must be an http:// or https:// URL, got {url!r}")
        mode = config.get("mode", "openai-chat")
        if mode not in cls.MODES:
            raise RunnerConfigError(f"http runner: mode {mode!r} is not one of: {', '.join(cls.MODES)}")
        api_key = None
        env = config.get("api_key_env")
        if env is not None:
            if not isinstance(env, str) or not env:
                raise RunnerConfigError(f"http runner: api_key_env must be a variable name, got {env!r}")
            api_key = os.environ.get(env)
            if not api_key:
                raise RunnerConfigError(
                    f"http runner: environment variable {env} (api_key_env) is not set or empty; "
                    f"export it before running"
                )
        headers = config.get("headers") or {}
        if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise RunnerConfigError("http runner: headers must be a mapping of strings to strings")
        flags = {}
        for key, default in (("retry_timeouts", False), ("send_seed", True), ("send_tools", False)):
            flags[key] = config.get(key, default)
            if not isinstance(flags[key], bool):
                raise RunnerConfigError(f"http runner: {key} must be true or false, got {flags[key]!r}")
        return cls(
            url, mode=mode, api_key=api_key, headers=headers,
            concurrency=_number(config, "concurrency", 8, "http", minimum=1, integer=True),
            timeout_s=_number(config, "timeout_s", 60.0, "http", strict=True),
            max_retries=_number(config, "max_retries", 4, "http", integer=True),
            backoff_s=_number(config, "backoff_s", 0.5, "http"),
            backoff_max_s=_number(config, "backoff_max_s", 30.0, "http"),
            retry_after_max_s=_number(config, "retry_after_max_s", 60.0, "http"),
            **flags,
        )

    # -- request bodies and responses

    def _body(self, manifest: Manifest, req: SampleRequest) -> dict[str, Any]:
        if self.mode == "openai-chat":
            body: dict[str, Any] = {"model": manifest.model, "messages": _render_messages(manifest, req.case)}
            body.update(manifest.parameters)
            if self.send_seed and "seed" not in manifest.parameters:
                body["seed"] = req.seed
            if self.send_tools and manifest.tools:
                body["tools"] = [
                    {"type": "function", "function": {k: v for k, v in (
                        ("name", t.get("name")), ("description", t.get("description")),
                        ("parameters", t.get("schema"))) if v is not None}}
                    for t in manifest.tools
                ]
            return body
        try:
            messages: list[dict[str, Any]] | None = _render_messages(manifest, req.case)
        except Exception:  # noqa: BLE001
            # A JSON endpoint gets the manifest and the case and may render prompts itself.
            messages = None
        return {"manifest": manifest.content(), "case": req.case.as_dict(), "messages": messages,
                "sample": req.sample, "seed": req.seed}

    def _parse(self, res: SampleResult, data: Any) -> None:
        if not isinstance(data, dict):
            res.error = f"invalid response: expected a JSON object, got {type(data).__name__}"
            return
        res.raw = data
        if self.mode == "json":
            if data.get("error") is not None:
                res.error = f"endpoint error: {_short(data['error'])}"
            elif "output" not in data:
                res.error = "invalid response: no 'output' field"
            res.output = _as_output(data.get("output"))
            res.input_tokens = _opt_int(data.get("input_tokens"))
            res.output_tokens = _opt_int(data.get("output_tokens"))
            res.cost_usd = _opt_float(data.get("cost_usd"))
            return
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            res.error = "invalid response: no choices"
            return
        message = choices[0].get("message") or {}
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if content in (None, "") and isinstance(message, dict) and message.get("tool_calls"):
            content = _as_output(message["tool_calls"])
        res.output = _as_output(content)
        usage = data.get("usage") or {}
        if isinstance(usage, dict):
            res.input_tokens = _opt_int(usage.get("prompt_tokens", usage.get("input_tokens")))
            res.output_tokens = _opt_int(usage.get("completion_tokens", usage.get("output_tokens")))
            res.cost_usd = _opt_float(usage.get("cost"))

    def _backoff(self, attempt: int) -> float:
        d = min(self.backoff_max_s, self.backoff_s * (2 ** (attempt - 1)))
        return d / 2 + random.uniform(0, d / 2)

    # -- one sample

    async def _one(self, clients: list[Any], slots: asyncio.Queue[int], manifest: Manifest,
                   req: SampleRequest) -> SampleResult:
        import httpx

        res = SampleResult(case_id=req.case.id, sample=req.sample, attempts=0)
        try:
            body = self._body(manifest, req)
        except Exception as exc:  # noqa: BLE001 - a case that cannot be rendered is its own error
            res.error = f"cannot build request: {_exc_text(exc)}"
            return res
        slot = await slots.get()  # a concurrency slot, bound to one of the clients
        client = clients[slot]
        try:
            while True:
                res.attempts += 1
                t0 = time.perf_counter()
                wait: float | None = None
                try:
                    async with asyncio.timeout(self.timeout_s):
                        resp = await client.post(self.url, json=body)
                        content = resp.content
                except TimeoutError:
                    res.latency_ms = (time.perf_counter() - t0) * 1000.0
                    res.error = _timeout_reason(self.timeout_s)
                    if not (self.retry_timeouts and res.attempts <= self.max_retries):
                        return res
                except (httpx.TransportError, OSError) as exc:
                    # connect/read/write/protocol errors: worth retrying
                    res.latency_ms = (time.perf_counter() - t0) * 1000.0
                    res.error = _exc_text(exc)
                    if res.attempts > self.max_retries:
                        res.error = f"{res.error} (after {res.attempts} attempts)"
                        return res
                else:
                    res.latency_ms = (time.perf_counter() - t0) * 1000.0
                    status = resp.status_code
                    if 200 <= status < 300:
                        res.error, res.raw = None, None
                        try:
                            data = json.loads(content)
                        except ValueError:
                            res.error = f"invalid response: not JSON: {_short(content.decode('utf-8', 'replace'), 200)}"
                            return res
                        self._parse(res, data)
                        return res
                    text = _short(content.decode("utf-8", "replace"), 200)
                    res.raw = {"status": status}
                    retryable = status in _RETRY_STATUS or status >= 500
                    if not retryable:
                        res.error = f"HTTP {status} (not retried): {text}"
                        return res
                    noun = "attempt" if res.attempts == 1 else "attempts"
                    res.error = f"HTTP {status} after {res.attempts} {noun}: {text}"
                    if res.attempts > self.max_retries:
                        return res
                    retry_after = parse_retry_after(resp.headers.get("retry-after"))
                    if retry_after is not None:
                        wait = min(retry_after, self.retry_after_max_s)
                await self._sleep(self._backoff(res.attempts) if wait is None else wait)
        finally:
            slots.put_nowait(slot)

    async def _run_async(self, manifest: Manifest, requests: list[SampleRequest],
                         progress: Progress | None) -> list[SampleResult]:
        import httpx

        headers = {"content-type": "application/json", **self.headers}
        if self.api_key and not any(k.lower() == "authorization" for k in headers):
            headers["authorization"] = f"Bearer {self.api_key}"
        # httpx's own timeouts are a backstop; the total per-request deadline is asyncio.timeout.
        timeout = httpx.Timeout(self.timeout_s + 5.0)
        n_clients = -(-self.concurrency // _CONNECTIONS_PER_CLIENT)
        sizes = [self.concurrency // n_clients + (k < self.concurrency % n_clients) for k in range(n_clients)]
        # `concurrency` slots in all, each bound to a client whose pool has one connection per slot:
        # this queue is the concurrency bound (held across retries and backoff waits).
        slots: asyncio.Queue[int] = asyncio.Queue()
        for j in range(max(sizes)):
            for k, size in enumerate(sizes):
                if j < size:
                    slots.put_nowait(k)
        throttle = _Throttle(progress, len(requests))
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(httpx.AsyncClient(
                    headers=headers, timeout=timeout,
                    limits=httpx.Limits(max_connections=size, max_keepalive_connections=size)))
                for size in sizes
            ]

            async def one(i: int) -> tuple[int, SampleResult]:
                return i, await self._one(clients, slots, manifest, requests[i])

            tasks = [asyncio.create_task(one(i)) for i in range(len(requests))]
            results: list[SampleResult | None] = [None] * len(requests)
            for fut in asyncio.as_completed(tasks):
                i, res = await fut
                results[i] = res
                throttle.tick()
        return [r for r in results if r is not None]

    def run(self, manifest: Manifest, requests: list[SampleRequest],
            progress: Progress | None = None) -> list[SampleResult]:
        """Run every request on a fresh event loop (asyncio.run). Callable from any thread that
        has no running loop; from inside a running loop it runs on a helper thread instead."""
        coro = self._run_async(manifest, requests, progress)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro)
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="relops-http-runner") as ex:
            return ex.submit(asyncio.run, coro).result()


# --------------------------------------------------------------------------- replay runner


class ReplayRunner(Runner):
    """Outputs recorded earlier: a JSONL file with one line per (case_id, sample) — keys
    case_id, sample, output, optional error, latency_ms, input_tokens, output_tokens,
    cost_usd, attempts; other keys are kept in ``raw``. A requested (case, sample) with no
    line is an error sample ``no recorded output``. A malformed line or a duplicate
    (case_id, sample) is a config error naming the file and line."""

    type = "replay"
    KEYS = {"file"}
    _KNOWN = {"case_id", "sample", "output", "error", "latency_ms", "input_tokens", "output_tokens",
              "cost_usd", "attempts"}

    def __init__(self, records: dict[tuple[str, int], dict[str, Any]], path: Path | None = None):
        self.records, self.path = records, path

    @classmethod
    def from_config(cls, config: dict[str, Any], base_dir: str | Path | None = None) -> ReplayRunner:
        """Validate the config and load the file (errors surface here, before any sample)."""
        _check_keys(config, cls.KEYS, "replay")
        file = config.get("file")
        if not isinstance(file, str) or not file:
            raise RunnerConfigError(f"replay runner: file must be a path, got {file!r}")
        path = Path(file)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        return cls(cls.load(path), path)

    @classmethod
    def load(cls, path: Path) -> dict[tuple[str, int], dict[str, Any]]:
        """Read a replay file into {(case_id, sample): record}."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise RunnerConfigError(f"replay runner: cannot read {path}: {_exc_text(exc)}") from exc
        records: dict[tuple[str, int], dict[str, Any]] = {}
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as exc:
                raise RunnerConfigError(f"{path}:{n}: not valid JSON: {exc}") from exc
            if not isinstance(rec, dict):
                raise RunnerConfigError(f"{path}:{n}: expected a JSON object")
            cid, sample = rec.get("case_id"), _opt_int(rec.get("sample"))
            if not isinstance(cid, str) or not cid:
                raise RunnerConfigError(f"{path}:{n}: case_id must be a non-empty string")
            if sample is None or sample < 0:
                raise RunnerConfigError(f"{path}:{n}: sample must be an integer >= 0, got {rec.get('sample')!r}")
            if (cid, sample) in records:
                raise RunnerConfigError(f"{path}:{n}: duplicate record for case {cid!r} sample {sample}")
            records[(cid, sample)] = rec
        return records

    def run(self, manifest: Manifest, requests: list[SampleRequest],
            progress: Progress | None = None) -> list[SampleResult]:
        """Look up each request's recorded output."""
        throttle = _Throttle(progress, len(requests))
        out = []
        for req in requests:
            rec = self.records.get((req.case.id, req.sample))
            if rec is None:
                res = SampleResult(case_id=req.case.id, sample=req.sample, error="no recorded output", attempts=0)
            else:
                err = rec.get("error")
                res = SampleResult(
                    case_id=req.case.id, sample=req.sample, output=_as_output(rec.get("output")),
                    error=None if err is None else _short(err),
                    latency_ms=_opt_float(rec.get("latency_ms")),
                    input_tokens=_opt_int(rec.get("input_tokens")),
                    output_tokens=_opt_int(rec.get("output_tokens")),
                    cost_usd=_opt_float(rec.get("cost_usd")),
                    attempts=_opt_int(rec.get("attempts")) or 1,
                    raw={k: v for k, v in rec.items() if k not in self._KNOWN} or None,
                )
                if res.error is None and res.output is None:
                    res.error = "recorded line has no output"
            out.append(res)
            throttle.tick()
        return out
