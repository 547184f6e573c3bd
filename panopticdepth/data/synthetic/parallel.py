"""Render frames in worker processes: every synthetic frame is a pure function of its seed and
index, so a pool gives the same files as one process, only sooner."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from ...utils.progress import progress

T = TypeVar("T")


def ordered_map(job: Callable[[int], T], items: Sequence[int], workers: int = 1, **bar: Any) -> list[T]:
    """`[job(i) for i in items]` with a progress bar (`bar`: tqdm's desc, unit), in `workers`
    processes when that is > 1. `job` must be picklable (a module-level function or a
    `functools.partial` of one)."""
    if workers <= 1 or len(items) < 2 * workers:
        return list(progress(map(job, items), total=len(items), **bar))
    # fork where there is one: the children only render with numpy and write PNGs (as data-loader
    # workers do), and start without re-importing the library
    fork = "fork" in multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if fork else None)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        chunk = max(1, len(items) // (8 * workers))
        return list(progress(pool.map(job, items, chunksize=chunk), total=len(items), **bar))
