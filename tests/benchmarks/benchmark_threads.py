"""How many torch threads a pytest-benchmark run times with (conftest.py's ``bench`` fixture; see its module doc)."""

import os

import pytest

#: Torch threads while a benchmark runs (see the module doc).
THREADS_ENV = "OVD_BENCHMARK_THREADS"


def benchmark_threads() -> int:
    """``$OVD_BENCHMARK_THREADS`` (default 1); anything but a positive integer is a ``pytest.UsageError``."""
    raw = os.environ.get(THREADS_ENV, "1").strip()
    if not raw.isdigit() or int(raw) < 1:
        raise pytest.UsageError(f"{THREADS_ENV}={raw!r}: give a positive integer number of torch threads")
    return int(raw)
