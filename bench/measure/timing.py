"""The suite's one timing helper: every measurement that reports a time calls :func:`time_calls`.

Method: ``warmup`` untimed calls, then timed calls, each bracketed by ``bench.common.now`` (which
synchronizes the device before reading ``time.perf_counter``, so queued CUDA kernels are counted and
the warm-up's are not). Statistics of the returned per-call seconds use ``bench.results.quantile``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def time_calls(fn: Callable[[], Any], device, warmup: int, iters: int, min_time_s: float = 0.0) -> list[float]:
    """Seconds per call of ``fn()`` (wall clock, device synchronized), in call order.

    ``warmup`` untimed calls first; then at least ``iters`` timed calls, and more until the timed calls
    add up to ``min_time_s`` seconds (for very short calls such as a small matmul)."""
    from bench.common import now

    if warmup < 0 or iters < 1:
        raise ValueError(f"time_calls needs warmup >= 0 and iters >= 1, got warmup={warmup}, iters={iters}")
    for _ in range(warmup):
        fn()
    times: list[float] = []
    while len(times) < iters or sum(times) < min_time_s:
        t0 = now(device)
        fn()
        times.append(now(device) - t0)
    return times
