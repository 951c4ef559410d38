"""The `relops` command: a thin front door over the Dagster definitions.

Commands that compute or change state run through Dagster on the home's instance, so the UI
shows the same history. Each prints a short human summary, or one JSON object with --json.
Exit codes: EXIT_CODES below, which `relops --help` shows (1 and 2 are decisions; a usage error
is 64, never 0, 1 or 2). One module per domain registers its commands (common: the plumbing
they share).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from relops_pipeline.cli import alerts, cadence, demo, doctor, drift, evals, gates, ingest, releases, serve
from relops_pipeline.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_NO_HOME,
    EXIT_OK,
    EXIT_RUN_FAILED,
    EXIT_TAMPERED,
    EXIT_USAGE,
    CliError,
    CommandResult,
    Commands,
    RelopsParser,
)
from relops_pipeline.cli.doctor import EXIT_UNHEALTHY
from relops_pipeline.cli.runs import EXIT_BUSY, EXIT_INTERRUPTED
from relops_pipeline.lib.home import HOME_ENV

__all__ = [
    "EXIT_OK",
    "EXIT_BAD_INPUT",
    "EXIT_RUN_FAILED",
    "EXIT_NO_HOME",
    "EXIT_USAGE",
    "EXIT_CODES",
    "CliError",
    "CommandResult",
    "build_parser",
    "main",
    "run",
]

# What `relops` exits with; `relops --help` shows it (README: the same table).
EXIT_CODES = (
    (EXIT_OK, "success (SHIP, a passing canary)"),
    (1, "BLOCK, or a failing canary"),
    (2, "REVIEW, or a canary not decided yet (inconclusive or marginal)"),
    (EXIT_BAD_INPUT, "bad input: an unreadable or invalid file, bad configuration, a refused --by, over a limit, invalid eval evidence"),
    (EXIT_RUN_FAILED, "a Dagster run failed"),
    (EXIT_NO_HOME, "no such home or warehouse yet"),
    (EXIT_BUSY, "the warehouse stayed held by a live run (retry, or relops doctor)"),
    (EXIT_UNHEALTHY, "relops doctor found problems"),
    (EXIT_TAMPERED, "refused: the event log, or a table it backs, was tampered with"),
    (EXIT_USAGE, "usage error: unknown command or option, missing or invalid argument (EX_USAGE)"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C or SIGTERM)"),
)


def _exit_codes_epilog() -> str:
    import textwrap

    rows = "\n".join(textwrap.fill(meaning, 79, initial_indent=f"  {code:<4} ", subsequent_indent=" " * 7) for code, meaning in EXIT_CODES)
    return f"exit codes:\n{rows}\n\n`relops COMMAND --help`: a command's arguments (--json: one JSON object)."


def build_parser() -> argparse.ArgumentParser:
    """The `relops` parser: each domain module registers its commands (and their verbs), in this order."""
    home_help = f"the relops home folder (default: ${HOME_ENV}, else ./data/home)"
    parser = RelopsParser(
        prog="relops",
        description="Release operations for production LLM workflows.",
        epilog=_exit_codes_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--home", default=None, help=home_help)
    commands = Commands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True), home_help)
    for module in (ingest, serve, evals, gates, drift, alerts, releases, doctor, cadence, demo):
        module.register(commands)
    return parser


class _ProgressToStderr(logging.Handler):
    """Progress lines of long work (lib/progress.py) on whatever stderr is now."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"      {record.getMessage()}", file=sys.stderr, flush=True)


def _show_progress() -> None:
    from relops_pipeline.lib.progress import logger

    if not any(isinstance(h, _ProgressToStderr) for h in logger.handlers):
        logger.addHandler(_ProgressToStderr())
        logger.setLevel(logging.INFO)
        logger.propagate = False


class _AlertLog(logging.Handler):
    """The log sink's alerts (logger relops.alerts) appended to <home>/logs/alerts.log, so they
    land in the log and not in the middle of a command's progress output (Python's last-resort
    handler would print them on stderr). They still propagate to any handler the host set up."""

    def __init__(self, path: Path):
        super().__init__(logging.INFO)
        self.path = path

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(f"{record.levelname} {record.getMessage()}\n")
        except OSError:
            self.handleError(record)


def _log_alerts_to_the_home(home_arg: str | None) -> None:
    from relops_pipeline.lib.alerts.sinks import DEFAULT_LOGGER
    from relops_pipeline.lib.home import Home

    logger = logging.getLogger(DEFAULT_LOGGER)
    for h in [h for h in logger.handlers if isinstance(h, _AlertLog)]:
        logger.removeHandler(h)
    logger.addHandler(_AlertLog(Home.resolve(home_arg).root / "logs" / "alerts.log"))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `relops` command; returns its exit code (errors print as one line each)."""
    args = build_parser().parse_args(argv)
    if not getattr(args, "json", False):
        _show_progress()
    _log_alerts_to_the_home(args.home)
    # SIGTERM stops a command the way Ctrl-C does (Dagster maps both onto its own handler while a
    # run executes, and restores this one after).
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _run(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def run() -> NoReturn:
    """The `relops` command (and `python -m relops_pipeline.cli`): main(), then the exit
    handlers (temporary folders, logging) and threads a normal exit waits for, then the process
    ends without tearing the interpreter down. The teardown frees ~600k objects and the
    extensions' state one by one: ~2.5 s after an ingestion, with nothing left to write (every
    DuckDB transaction, Delta commit and Dagster event is committed before main returns)."""
    code = main()
    try:
        for thread in threading.enumerate():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


# Free-text arguments, checked before any command runs (lib/limits.py).
TEXT_ARGUMENTS = ("reason", "note", "by", "title", "summary", "message")


def _check_text_arguments(args) -> None:
    from relops_pipeline.lib.limits import InputTooLarge, require_text

    for name, value in vars(args).items():
        if isinstance(value, str) and (name in TEXT_ARGUMENTS or "\x00" in value):
            try:
                require_text(value, f"--{name.replace('_', '-')}")
            except InputTooLarge as exc:
                raise CliError(str(exc), EXIT_BAD_INPUT) from None


def _run(args) -> int:
    try:
        _check_text_arguments(args)
        result: CommandResult = args.fn(args)
    except KeyboardInterrupt as exc:
        print(f"relops: interrupted{f' ({exc})' if str(exc) else ''}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 — exit 1 and 2 are gate decisions: never let a crash look like one
        from relops_pipeline.lib.audit import TamperedError

        if isinstance(exc, TamperedError):
            exc = CliError(f"refused: {exc}", EXIT_TAMPERED)
        elif not isinstance(exc, CliError):
            exc = CliError(f"{type(exc).__name__}: {exc}", EXIT_RUN_FAILED)
        if getattr(args, "json", False):
            _print(json.dumps({"error": str(exc), "exit_code": exc.code}))
        else:
            for line in str(exc).splitlines():
                print(f"relops: {line}", file=sys.stderr)
        return exc.code
    _print(json.dumps(result.data, default=str) if args.json else result.text)
    return result.exit_code


def _terminate(signo, frame) -> None:
    raise KeyboardInterrupt


def _print(text: str) -> None:
    """Print to stdout; a reader that went away (`relops ... | head -1`) is no error."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would report the failed flush again at exit: point stdout at /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
