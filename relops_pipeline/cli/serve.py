"""`relops serve`: the durable OTLP/HTTP receiver (lib/receiver/) in the foreground.

Also shows the home's reports and release pages read-only to a browser (lib/receiver/web.py).
Prints one startup line (with --json: one JSON object with host, port, url, the reports and
releases URLs and spool folder),
serves until SIGTERM or Ctrl-C, then waits for requests in flight and prints what it received
(one more line; with --json a second JSON object: the counters).
"""

from __future__ import annotations

import json
import os
import threading

from relops_pipeline.cli.common import EXIT_BAD_INPUT, EXIT_NO_HOME, CliError, CommandResult, Commands
from relops_pipeline.lib.home import Home

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 4318


def _positive_float(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _port(text: str) -> int:
    import argparse

    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port 0..65535, got {text!r}")
    return int(text)


def cmd_serve(args) -> CommandResult:
    """Run the receiver until stopped."""
    from relops_pipeline.lib.receiver.server import MIB, Converter, Limits, Receiver, start, tune_gc
    from relops_pipeline.lib.receiver.spool import Spool
    from relops_pipeline.lib.settings import SettingsError, load_serve_settings

    home = Home.resolve(args.home)
    if not home.exists():
        raise CliError(f"no relops home at {home.root}: run `relops init --home {home.root}` first", EXIT_NO_HOME)
    try:
        settings = load_serve_settings(home.settings_file)
    except SettingsError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    limits = Limits(
        max_body_bytes=int((args.max_body_mb or settings.max_body_mb) * MIB),
        spool_limit_bytes=int((args.spool_limit_mb or settings.spool_limit_mb) * MIB),
        retry_after_s=settings.retry_after_s,
    )
    spool = Spool(home.landing_dir, home.warehouse_path)
    try:
        running = start(Receiver(spool, settings.api_keys, limits, Converter(args.workers), home), args.host, args.port)
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", EXIT_BAD_INPUT) from None
    host = running.host
    url = f"http://{f'[{host}]' if ':' in host else host}:{running.port}"
    auth = (f"{len(settings.api_keys)} API key(s)" if settings.api_keys
            else "OPEN: no API keys configured (serve.api_keys in relops.yaml), anyone who can reach the port may send")
    where = {"host": host, "port": running.port, "url": url, "traces": f"{url}/v1/traces", "logs": f"{url}/v1/logs",
             "langfuse": f"{url}/api/public/otel/v1/traces", "reports": f"{url}/reports/", "releases": f"{url}/releases/",
             "spool_dir": str(spool.root), "auth": auth,
             "max_body_bytes": limits.max_body_bytes, "spool_limit_bytes": limits.spool_limit_bytes, "workers": args.workers}
    spool.save({"listening": where, "pid": os.getpid()})
    if args.json:
        print(json.dumps(where), flush=True)
    else:
        print(f"relops serve: listening on {url} (OTLP/HTTP /v1/traces, /v1/logs; Langfuse /api/public/otel/v1/traces; "
              f"reports {url}/reports/, releases {url}/releases/); "
              f"spool {spool.root}; {auth}", flush=True)
    tune_gc()
    stopped = threading.Event()
    try:
        while not stopped.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        idle = running.stop()
    counters = dict(spool.counters)
    text = ("relops serve: stopped; received " + ", ".join(f"{k} {v}" for k, v in counters.items())
            + ("" if idle else " (some requests were still running at the stop)"))
    return CommandResult({"stopped": True, "counters": counters, "spool_bytes": spool.pending_bytes()}, text)


def _workers(text: str) -> int:
    import argparse

    if not text.isdigit() or int(text) > 64:
        raise argparse.ArgumentTypeError(f"expected a number of processes 0..64, got {text!r}")
    return int(text)


def default_workers() -> int:
    """Conversion processes by default: one per core up to 4; none on one core."""
    cores = os.cpu_count() or 1
    return 0 if cores < 2 else min(4, cores)


def register(add: Commands) -> None:
    """Register `serve` on the `relops` parser."""
    p = add("serve", cmd_serve, "receive traces over OTLP/HTTP (and Langfuse's OTel endpoint) into the landing folder, durably")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    p.add_argument("--max-body-mb", type=_positive_float, default=None,
                   help="413 past this request size, compressed or not (default: serve.max_body_mb, else 16)")
    p.add_argument("--workers", type=_workers, default=default_workers(),
                   help="processes converting request bodies to OTLP JSON beside the HTTP threads "
                        "(default: one per core up to 4, 0 on one core; 0: in the HTTP threads)")
    p.add_argument("--spool-limit-mb", type=_positive_float, default=None,
                   help="429 with Retry-After while received, un-ingested files exceed this (default: serve.spool_limit_mb, else 1024)")
