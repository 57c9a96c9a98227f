"""Saturating batch sweep: throughput, latency and peak memory of one variant in one mode ("infer" or
"train") at doubling batch sizes, until throughput stops growing, the batch cap, or out-of-memory.

Method (one fresh process, one variant, one mode): the model is built once; batch sizes go
``start_batch, 2*start_batch, ...`` (the last point clamped to ``max_batch``). At each point the fixed
synthetic batch is built at that size (``bench.common.make_batch``), then the call speed.py times for
that mode (``make_forward``: the ``infer/fps_bN`` forward; ``make_train_step``: the shared
``ovd.training.step.TrainStep``) runs ``warmup`` untimed and ``iters`` timed times
(``bench.measure.timing.time_calls``), with no memory probe running. Throughput = batch / median seconds
per call; latency = median ms. Peak memory of the point comes from one separate, UNTIMED call of the same
function after the timed ones (so the probe cannot perturb the timing: on the CPU the RSS poller is a
thread competing for the cores): CUDA, the allocator's ``max_memory_allocated`` / ``max_memory_reserved``
over that call after ``reset_peak_memory_stats`` (the batch, already allocated, counts); CPU, the peak RSS
during that call (``bench.measure.memory.RssPeakPoller``) minus the RSS at the start of the point, before
the batch was built (the CPU allocator keeps freed pages, so a later point's growth can read low). Tensors
are freed between points.

Stop rule (:func:`should_stop`): throughput gained less than ``growth_stop`` (relative) over the best so
far for ``patience`` consecutive points; or ``max_batch`` was measured; or the point ran out of memory (a
recorded row with status "error", "OOM at batch N").

Units: images/s (infer) or samples/s (train), ms, MiB.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.measure.specs import ModelSpec, SpecError, _choice, _positive_float, _positive_int
from bench.measure.timing import time_calls
from bench.results import Row, measured, quantile

MODES = ("infer", "train")
SWEEP_PRECISIONS = (None, "fp32", "bf16")
STOP_REASONS = ("plateau", "max_batch", "oom")
MiB = 2**20


@dataclass(frozen=True, kw_only=True)
class SweepSpec(ModelSpec):
    """One sweep: ``mode`` at batches ``start_batch * 2**k`` up to ``max_batch``; ``growth_stop`` the relative
    throughput gain below which a point counts as no gain; ``precision`` None = the config's train.precision."""

    mode: str = "infer"
    start_batch: int = 1
    max_batch: int = 1024
    growth_stop: float = 0.05
    patience: int = 2
    warmup: int = 1
    iters: int = 2
    precision: str | None = None
    # RSS polling period on the CPU (seconds) during the point's separate untimed memory call (never during
    # the timed calls); the kernel high-water mark (VmHWM, read at the end) gives the exact peak where allowed
    poll_s: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        o = self._owner()
        if not self.is_preset:
            raise SpecError(f"{o}: the batch sweep needs a preset source, got {self.source.describe()}")
        _choice(o, "mode", self.mode, MODES)
        _positive_int(o, "start_batch", self.start_batch)
        _positive_int(o, "max_batch", self.max_batch)
        if self.max_batch < self.start_batch:
            raise SpecError(f"{o}: max_batch={self.max_batch} is below start_batch={self.start_batch}")
        _positive_float(o, "growth_stop", self.growth_stop)
        _positive_int(o, "patience", self.patience)
        _positive_int(o, "warmup", self.warmup, minimum=0)
        _positive_int(o, "iters", self.iters)
        _choice(o, "precision", self.precision, SWEEP_PRECISIONS)
        _positive_float(o, "poll_s", self.poll_s)


@dataclass
class SweepPoint:
    """One batch size: per-call seconds of the timed calls (``calls``), peak memory in MiB of the separate
    untimed memory call (``mem_mib``; ``mem_extra``: allocated/reserved MiB on CUDA, rss before/growth MiB on
    the CPU, and ``memory_call``), or ``error`` (status "error")."""

    batch: int
    calls: list = field(default_factory=list)
    mem_mib: float | None = None
    mem_extra: dict = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def throughput(self) -> float:
        """Items per second: batch / median seconds per call."""
        return self.batch / quantile(self.calls, 0.5)


def batch_sizes(start_batch: int, max_batch: int) -> list[int]:
    """Doubling batch sizes from ``start_batch``, the last one clamped to ``max_batch``: (1, 1000) ->
    1, 2, ..., 512, 1000."""
    out, b = [], start_batch
    while b < max_batch:
        out.append(b)
        b *= 2
    return out + [max_batch]


def should_stop(throughputs: list[float], growth_stop: float, patience: int) -> bool:
    """True when each of the last ``patience`` throughputs gained less than ``growth_stop`` (relative) over
    the best throughput before it."""
    stale = 0
    best = None
    for t in throughputs:
        if best is not None and t < best * (1.0 + growth_stop):
            stale += 1
        else:
            stale = 0
        best = t if best is None else max(best, t)
    return stale >= patience


def is_oom(err: BaseException) -> bool:
    """An out-of-memory error: ``torch.OutOfMemoryError`` or a RuntimeError saying "out of memory" (CUDA) or
    "can't allocate memory" (torch's CPU allocator)."""
    import torch

    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(err, oom_type):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def run_sweep(point: Callable[[int], SweepPoint], start_batch: int, max_batch: int, growth_stop: float,
              patience: int) -> tuple[list[SweepPoint], str]:
    """Call ``point(batch)`` at doubling batches until the stop rule; returns (points, reason), reason in
    :data:`STOP_REASONS`. An out-of-memory point is recorded with ``error="OOM at batch N"``; any other
    exception propagates."""
    points: list[SweepPoint] = []
    for b in batch_sizes(start_batch, max_batch):
        oom = False
        try:
            p = point(b)
        except (RuntimeError, MemoryError) as err:
            if not (isinstance(err, MemoryError) or is_oom(err)):
                raise
            oom = True  # freed below, once the exception (and its frames' tensors) is gone
        if oom:
            _free_memory()
            points.append(SweepPoint(b, error=f"OOM at batch {b}"))
            return points, "oom"
        points.append(p)
        if should_stop([q.throughput for q in points], growth_stop, patience):
            return points, "plateau"
    return points, "max_batch"


def _free_memory() -> None:
    """Collect garbage and hand the CUDA allocator's cached blocks back (between points)."""
    import torch

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


MEMORY_CALL = "separate untimed call"


def _memory_probe(device, poll_s: float):
    """(start(), stop() -> (peak MiB, extra)) around the point's untimed memory call. Made at the start of
    the point (CPU: records the RSS baseline then, before the batch exists). CUDA: allocator peaks after a
    reset at start(); CPU: peak RSS from the polling thread of ``bench.measure.memory``, alive only between
    start() and stop(), minus the baseline."""
    import torch

    from bench.measure.memory import RssPeakPoller, current_rss

    if getattr(device, "type", str(device)) == "cuda":
        def start():
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)

        def stop():
            torch.cuda.synchronize(device)
            alloc = torch.cuda.max_memory_allocated(device) / MiB
            reserved = torch.cuda.max_memory_reserved(device) / MiB
            return alloc, {"method": "cuda-allocator", "allocated_mib": alloc, "reserved_mib": reserved,
                           "memory_call": MEMORY_CALL}
        return start, stop

    state: dict = {"before": current_rss()}

    def start():
        state["poller"] = RssPeakPoller(poll_s).__enter__()

    def stop():
        poller = state.pop("poller")
        poller.__exit__(None, None, None)
        growth = max(poller.peak - state["before"], 0) / MiB
        return growth, {"method": "cpu-rss", "rss_growth_mib": growth, "rss_before_mib": state["before"] / MiB,
                        "rss_peak_mib": poller.peak / MiB, "memory_call": MEMORY_CALL}
    return start, stop


def _probed_call(fn: Callable[[], None], start: Callable, stop: Callable) -> tuple[float, dict]:
    """One call of ``fn`` between the probe's start() and stop(); returns stop()'s (peak MiB, extra). The
    probe is stopped (its thread joined) even when the call raises."""
    start()
    try:
        fn()
    except BaseException:
        stop()
        raise
    return stop()


def make_point_fn(model, mode: str, device, warmup: int, iters: int, poll_s: float = 0.01
                  ) -> Callable[[int], SweepPoint]:
    """The point function of a built model: batch size -> :class:`SweepPoint`, timing speed.py's call for
    ``mode`` (``bench.common.make_forward`` / ``make_train_step``) on the fixed synthetic batch (``warmup``
    + ``iters`` calls, no memory probe running), then measuring peak memory on one more, untimed call;
    every tensor of the point is released before it returns."""
    import bench.common as common

    def point(batch_size: int) -> SweepPoint:
        _free_memory()
        start, stop = _memory_probe(device, poll_s)
        try:
            batch = common.make_batch(model, batch_size, device)
            make = common.make_train_step if mode == "train" else common.make_forward
            call = make(model, batch, device)

            def run():
                _discard(call())

            calls = time_calls(run, device, warmup, iters)
            mem, extra = _probed_call(run, start, stop)
        finally:
            run = batch = call = None  # noqa: F841 (drop the point's tensors before collecting)
            _free_memory()
        return SweepPoint(batch_size, calls, mem, extra)

    return point


def _discard(_out) -> None:
    """Drop a call's output at once (a forward's outputs are the point's largest tensors)."""
    return None


@dataclass
class SweepResult:
    """One process's sweep of one mode: the points in batch order and why it stopped."""

    mode: str
    precision: str
    threads: int
    points: list = field(default_factory=list)
    stopped: str = "max_batch"
    settings: dict = field(default_factory=dict)  # start/max batch, growth_stop, patience, warmup, iters

    @property
    def unit(self) -> str:
        return "samples/s" if self.mode == "train" else "images/s"

    def peak(self) -> SweepPoint | None:
        ok = [p for p in self.points if p.ok]
        return max(ok, key=lambda p: p.throughput) if ok else None

    def _point_rows(self, p: SweepPoint) -> list[Row]:
        m = f"sweep/{self.mode}"
        if not p.ok:
            extra = {"batch_size": p.batch, "precision": self.precision}
            return [measured(f"{m}/throughput_b{p.batch}", None, self.unit, extra, status="error", error=p.error)]
        extra = {"batch_size": p.batch, "precision": self.precision, "threads": self.threads, "calls": p.calls}
        return [measured(f"{m}/throughput_b{p.batch}", p.throughput, self.unit, extra),
                measured(f"{m}/latency_ms_b{p.batch}", quantile(p.calls, 0.5) * 1e3, "ms", extra),
                measured(f"{m}/mem_mib_b{p.batch}", p.mem_mib, "MiB",
                         {"batch_size": p.batch, "precision": self.precision, **p.mem_extra})]

    def rows(self) -> list[Row]:
        m = f"sweep/{self.mode}"
        out = [r for p in self.points for r in self._point_rows(p)]
        peak = self.peak()
        if peak is not None:
            extra = {"batch_size": peak.batch, "precision": self.precision, "threads": self.threads,
                     "calls": peak.calls}
            out.append(measured(f"{m}/peak_throughput", peak.throughput, self.unit, extra))
            out.append(measured(f"{m}/peak_batch", float(peak.batch), "batch", {"precision": self.precision}))
        last = self.points[-1].batch if self.points else None
        out.append(measured(f"{m}/stopped", None if last is None else float(last), "batch",
                            {"reason": self.stopped, "points": len(self.points), **self.settings},
                            status="ok" if last is not None else "not-measured",
                            error=None if last is not None else "no point measured"))
        return out


def measure(spec: SweepSpec | dict) -> SweepResult:
    """Sweep one preset variant in ``spec.mode`` (see the module docstring)."""
    import torch

    from bench.common import build_model_at, resolve_device, resolve_precision

    spec = SweepSpec.coerce(spec)
    device = resolve_device(spec.device)
    model = build_model_at(spec.source.preset, spec.source.overrides, spec.precision, device)
    precision = resolve_precision(model.config.train.precision, device)
    point = make_point_fn(model, spec.mode, device, spec.warmup, spec.iters, spec.poll_s)
    points, reason = run_sweep(point, spec.start_batch, spec.max_batch, spec.growth_stop, spec.patience)
    settings = {"start_batch": spec.start_batch, "max_batch": spec.max_batch, "growth_stop": spec.growth_stop,
                "patience": spec.patience, "warmup": spec.warmup, "iters": spec.iters}
    return SweepResult(spec.mode, precision, torch.get_num_threads(), points, reason, settings)


__all__ = ["SweepSpec", "SweepPoint", "SweepResult", "batch_sizes", "should_stop", "is_oom", "run_sweep",
           "make_point_fn", "measure"]
