"""Dagster marks some parameters we rely on as beta (single-run backfill policies) and warns on
its own internal use of others (sensors pass `owners`). Those warnings are expected at these
definition sites and only here, so they are ignored here rather than globally."""

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import dagster as dg

Definition = TypeVar("Definition")


@contextlib.contextmanager
def expected_beta_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        yield


def with_beta_parameters(
    decorator: Callable[..., Callable[[Callable[..., Any]], Definition]], *args: Any, **kwargs: Any
) -> Callable[[Callable[..., Any]], Definition]:
    """`decorator(*args, **kwargs)` (dg.asset, dg.sensor ...) applied with the beta warnings
    of its parameters expected: `@with_beta_parameters(dg.asset, backfill_policy=...)`."""

    def apply(fn: Callable[..., Any]) -> Definition:
        with expected_beta_warnings():
            return decorator(*args, **kwargs)(fn)

    return apply
