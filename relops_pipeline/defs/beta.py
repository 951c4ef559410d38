"""Dagster marks some parameters we rely on as beta (single-run backfill policies) and warns on
its own internal use of others (run-status sensors pass `owners`). Those warnings are expected
at these definition sites and only here, so they are ignored here rather than globally."""

import contextlib
import warnings

import dagster as dg


@contextlib.contextmanager
def expected_beta_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        yield
