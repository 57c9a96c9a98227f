"""pytest-benchmark set-up: a timer that synchronizes CUDA before reading the clock (pytest-benchmark's
default timer does not), and warm-up on. With the default ``--benchmark-disable`` every benchmark runs
once as a correctness check; ``pytest tests/benchmarks --benchmark-enable --benchmark-json out.json``
times them, and ``--benchmark-compare=NNNN --benchmark-compare-fail=median:10%`` gates a saved run."""

import time

import pytest
import torch


def synced_timer() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


@pytest.fixture
def bench(benchmark):
    """The ``benchmark`` fixture with the synchronizing timer, warm-up and torch threads recorded."""
    benchmark._timer = synced_timer
    benchmark._warmup = 2
    benchmark.extra_info["torch_threads"] = torch.get_num_threads()
    benchmark.extra_info["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    return benchmark


@pytest.fixture
def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
