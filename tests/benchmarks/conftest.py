"""pytest-benchmark set-up through its public API only: ``benchmark.pedantic`` with a fixed number of
warm-up and timed rounds, and CUDA synchronized inside what is timed.

Why pedantic: pytest-benchmark's clock (``time.perf_counter``) never synchronizes CUDA, and on CPython
it does no warm-up by default. Each round here is ``setup`` (untimed: ``torch.cuda.synchronize()``, so
the clock starts on an idle device) then the target, which calls the block and synchronizes before it
returns, so a round's time includes the kernels it queued. On the CPU both syncs are no-ops.

With the default ``--benchmark-disable`` every benchmark runs once as a correctness check;
``pytest tests/benchmarks --benchmark-enable --benchmark-json out.json`` times them, and
``--benchmark-compare=NNNN --benchmark-compare-fail=median:25%`` gates a saved run.

Threads: each benchmark runs with ``$OVD_BENCHMARK_THREADS`` torch threads, 1 by default, as the suite's quick
profile does. Two threads on a 2-core machine with anything else running made a median swing 150x between two
runs of unchanged code (252 us, then 39.8 ms), so a 25% gate failed at random; one thread held within about 5%."""

from collections.abc import Callable, Iterator

import pytest
import torch
from benchmark_threads import benchmark_threads

#: Untimed calls before timing (first-call allocation, cuDNN/oneDNN kernel choice, caches).
WARMUP_ROUNDS = 3
#: Timed calls (one iteration each) per benchmark: enough for a median and IQR.
ROUNDS = 20


def synchronize() -> None:
    """Wait for queued CUDA work; nothing to wait for on the CPU."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@pytest.fixture
def bench(benchmark) -> Iterator[Callable]:
    """``bench(fn, *args, **kwargs)`` times ``fn(*args, **kwargs)`` with ``benchmark.pedantic``
    (``WARMUP_ROUNDS`` warm-up, ``ROUNDS`` timed rounds, CUDA synchronized in each round) and returns
    its result, with :func:`benchmark_threads` torch threads (restored after). The thread count and the device are
    recorded in the benchmark's ``extra_info``."""
    before = torch.get_num_threads()
    torch.set_num_threads(benchmark_threads())
    benchmark.extra_info["torch_threads"] = torch.get_num_threads()
    benchmark.extra_info["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    benchmark.extra_info["warmup_rounds"] = WARMUP_ROUNDS

    def run(fn: Callable, *args, **kwargs):
        def target(*a, **k):
            out = fn(*a, **k)
            synchronize()  # inside the timed call: the round ends when the device is done
            return out

        return benchmark.pedantic(target, args=args, kwargs=kwargs, setup=synchronize, rounds=ROUNDS,
                                  warmup_rounds=WARMUP_ROUNDS, iterations=1)

    try:
        yield run
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
