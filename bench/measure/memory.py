"""Peak memory of one training step and of one inference forward (unit: MiB = 2**20 bytes).

CUDA: ``reset_peak_memory_stats`` then ``max_memory_allocated`` / ``max_memory_reserved``.
CPU: resident set size (RSS) of this process, which the runner starts fresh for every measurement:
a side thread polls RSS (psutil) every ``poll_s`` seconds and, where Linux allows, the kernel's
own high-water mark (VmHWM, reset through /proc/self/clear_refs) is read too; the larger wins.
tracemalloc is never used (it does not see tensor storage).

Two numbers per mode:
  ``*_total``: peak over the process's state *before the model was built* (weights, gradients,
  optimizer state, activations, allocator caches): the analogue of CUDA ``max_memory_allocated``
  and what the seed's "VRAM" row means;
  ``*_step``: peak growth over the state *right before the step* (model and batch built): gradients,
  optimizer state and activations. The measured step is the process's first (no warm-up: on the
  CPU the allocator keeps freed memory, so a warm-up step would hide the step's peak).

:func:`measure_peak` is the one set-up every memory reading uses (ours, the peers', the scaling
points', a user's factory): baseline reading, build, optional warm-up, :func:`peak_of_call`.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.measure.specs import MemorySpec
from bench.results import Row, measured

MiB = 2**20


class RssPeakPoller:
    """Polls this process's RSS from a side thread; ``peak`` is the largest value seen (bytes)."""

    def __init__(self, poll_s: float = 0.001) -> None:
        import psutil

        self._proc = psutil.Process()
        self.poll_s = poll_s
        self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self._proc.memory_info().rss
            if rss > self.peak:
                self.peak = rss
            time.sleep(self.poll_s)

    def __enter__(self) -> RssPeakPoller:
        _reset_hwm()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss, _read_hwm() or 0)


def current_rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) for this process; False where not allowed."""
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _read_hwm() -> int | None:
    try:
        with open(f"/proc/{os.getpid()}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def peak_of_call(fn, device, poll_s: float = 0.001) -> tuple[int, int, float | None, str]:
    """Run ``fn()`` once and return (bytes in use before it, peak bytes during it, peak reserved MiB
    or None, method). CUDA: the caching allocator's counters after ``reset_peak_memory_stats``; CPU:
    process RSS polled from a side thread (tracemalloc does not see tensors)."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return before, torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_reserved(device) / MiB, \
            "cuda-allocator"
    before = current_rss()
    with RssPeakPoller(poll_s) as poller:
        fn()
    return before, poller.peak, None, "cpu-rss"


@dataclass
class PeakReading:
    """Bytes in use before the model was built, right before the measured call, and the peak during
    it; ``reserved_mib``: CUDA allocator reserved peak (None on the CPU); ``meta``: what ``build`` returned
    beside the call (batch size, precision...)."""

    before_model: int
    before_step: int
    peak: int
    reserved_mib: float | None
    method: str
    meta: dict = field(default_factory=dict)

    @property
    def total_mib(self) -> float:
        return (self.peak - self.before_model) / MiB

    @property
    def step_mib(self) -> float:
        return max(self.peak - self.before_step, 0) / MiB

    def notes(self) -> dict:
        return {"before_model_mib": self.before_model / MiB, "before_step_mib": self.before_step / MiB,
                "peak_mib": self.peak / MiB}


def measure_peak(build: Callable[[], tuple[Callable[[], Any], dict]], device, warmup: int = 0,
                 poll_s: float = 0.001) -> PeakReading:
    """Read memory before ``build()`` (which builds the model and inputs and returns ``(call, meta)``),
    run ``warmup`` untimed calls, then measure the peak of one ``call()``. Import heavy modules *before*
    calling this: imports are not the model's memory."""
    import torch

    cuda = getattr(device, "type", str(device)) == "cuda"
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        before_model = torch.cuda.memory_allocated(device)
    else:
        before_model = current_rss()
    fn, meta = build()
    for _ in range(int(warmup)):
        fn()
    gc.collect()
    before_step, peak, reserved, method = peak_of_call(fn, device, poll_s)
    return PeakReading(before_model, before_step, peak, reserved, method, dict(meta))


@dataclass
class MemoryResult:
    """Peaks in MiB for ``mode`` ("train" or "infer") at ``batch_size``; per-sample = / batch_size.
    ``method``: "cuda-allocator" or "cpu-rss"; ``reserved_mib``: CUDA allocator reserved peak;
    ``not_measured``: why nothing was measured (e.g. a factory without a loss has no training step)."""

    mode: str
    batch_size: int
    total_mib: float | None
    step_mib: float | None
    method: str
    device: str
    precision: str
    reserved_mib: float | None = None
    notes: dict = field(default_factory=dict)
    not_measured: str | None = None

    @classmethod
    def of(cls, mode: str, reading: PeakReading, device, precision: str) -> MemoryResult:
        return cls(mode, int(reading.meta["batch_size"]), reading.total_mib, reading.step_mib, reading.method,
                   str(device), precision, reading.reserved_mib, reading.notes())

    def rows(self) -> list[Row]:
        m = f"memory/{self.mode}"
        if self.not_measured:
            return [measured(f"{m}_total", None, "MiB", {"batch_size": self.batch_size}, status="not-measured",
                             error=self.not_measured)]
        extra = {"batch_size": self.batch_size, "method": self.method, "precision": self.precision}
        out = [
            measured(f"{m}_total", self.total_mib, "MiB", extra),
            measured(f"{m}_total_per_sample", self.total_mib / self.batch_size, "MiB/sample", extra),
            measured(f"{m}_step", self.step_mib, "MiB", extra),
            measured(f"{m}_step_per_sample", self.step_mib / self.batch_size, "MiB/sample", extra),
        ]
        if self.reserved_mib is not None:
            out.append(measured(f"{m}_reserved", self.reserved_mib, "MiB", extra))
        return out


def _preload() -> None:
    """Import what building a model imports, so the baseline reading already holds it."""
    import transformers.models.bert.modeling_bert  # noqa: F401

    import ovd.models.detector  # noqa: F401
    import ovd.training.losses  # noqa: F401


def _measure(spec: MemorySpec, mode: str) -> MemoryResult:
    from bench.common import build_model, make_batch, make_forward, make_train_step, resolve_device, resolve_precision

    device = resolve_device(spec.device)
    _preload()  # a preset's and a factory's baseline reading both start after these imports
    if not spec.is_preset:
        return _measure_under_test(spec, mode, device)

    def build():
        model = build_model(spec.source.preset, spec.source.overrides, device)
        batch_size = int(spec.batch_size or model.config.train.batch_size)
        batch = make_batch(model, batch_size, device)
        fn = make_train_step(model, batch, device) if mode == "train" else make_forward(model, batch, device)
        return fn, {"batch_size": batch_size, "precision": resolve_precision(model.config.train.precision, device)}

    reading = measure_peak(build, device, spec.warmup, spec.poll_s)
    return MemoryResult.of(mode, reading, device, reading.meta["precision"])


def _measure_under_test(spec: MemorySpec, mode: str, device) -> MemoryResult:
    """A factory's or hub model's peak: its forward (infer), or backward + AdamW on its loss (train). As for a
    preset, the libraries a build imports are loaded before the reading that ``*_total`` starts from: the
    factory's module (imported here) and what building a detector imports (:func:`_preload`, by the caller).
    Imports the factory itself makes inside ``build`` still count."""
    from bench.measure.under_test import make_forward, make_train_step
    from bench.sources import FactorySource, build_under_test, resolve_factory

    if isinstance(spec.source, FactorySource):
        resolve_factory(spec.source.target)

    def build():
        mut = build_under_test(spec.source, device, spec.batch_size)
        if mode == "train" and mut.loss is None:
            raise _NoLoss(mut.batch_size)
        fn = make_train_step(mut) if mode == "train" else make_forward(mut, "fp32", device)
        return fn, {"batch_size": mut.batch_size}

    try:
        reading = measure_peak(build, device, spec.warmup, spec.poll_s)
    except _NoLoss as no:
        return MemoryResult(mode, no.batch_size, None, None, "", str(device), "fp32",
                            not_measured="the factory's ModelUnderTest has no loss: no training step to measure")
    return MemoryResult.of(mode, reading, device, "fp32")


class _NoLoss(Exception):
    def __init__(self, batch_size: int) -> None:
        super().__init__("no loss")
        self.batch_size = batch_size


def measure_train(spec: MemorySpec | dict) -> MemoryResult:
    """Peak memory of one full training step (forward, loss + matching, backward, AdamW)."""
    return _measure(MemorySpec.coerce(spec), "train")


def measure_infer(spec: MemorySpec | dict) -> MemoryResult:
    """Peak memory of one inference forward (eval, inference_mode) on pre-tokenized inputs."""
    return _measure(MemorySpec.coerce(spec), "infer")
