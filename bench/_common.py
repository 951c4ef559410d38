"""What the decision-quality benchmarks share: spreading simulated seeds over a process pool."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def map_seed_chunks(pool: ProcessPoolExecutor | None, workers: int, fn: Callable[[Any], Any],
                    seeds: Sequence[int], make_args: Callable[[list[int]], Any]) -> list:
    """`fn(make_args(chunk))` for each chunk of `seeds`, in order: on `pool`, or in this process
    when it is None. About four chunks per worker, so one slow chunk does not leave the others idle."""
    seeds = list(seeds)
    size = max(1, math.ceil(len(seeds) / (max(1, workers) * 4)))
    args = [make_args(seeds[i:i + size]) for i in range(0, len(seeds), size)]
    return list(pool.map(fn, args)) if pool is not None else [fn(a) for a in args]
