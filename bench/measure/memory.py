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
"""

from __future__ import annotations

import gc
import os
import threading
import time
from dataclasses import dataclass, field

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


@dataclass
class MemoryResult:
    """Peaks in MiB for ``mode`` ("train" or "infer") at ``batch_size``; per-sample = / batch_size.
    ``method``: "cuda-allocator" or "cpu-rss"; ``reserved_mib``: CUDA allocator reserved peak."""

    mode: str
    batch_size: int
    total_mib: float
    step_mib: float
    method: str
    device: str
    precision: str
    reserved_mib: float | None = None
    notes: dict = field(default_factory=dict)

    def rows(self) -> list[dict]:
        extra = {"batch_size": self.batch_size, "method": self.method, "precision": self.precision}
        m = f"memory/{self.mode}"
        out = [
            {"metric": f"{m}_total", "value": self.total_mib, "unit": "MiB", "extra": extra},
            {"metric": f"{m}_total_per_sample", "value": self.total_mib / self.batch_size, "unit": "MiB/sample",
             "extra": extra},
            {"metric": f"{m}_step", "value": self.step_mib, "unit": "MiB", "extra": extra},
            {"metric": f"{m}_step_per_sample", "value": self.step_mib / self.batch_size, "unit": "MiB/sample",
             "extra": extra},
        ]
        if self.reserved_mib is not None:
            out.append({"metric": f"{m}_reserved", "value": self.reserved_mib, "unit": "MiB", "extra": extra})
        return out


def _measure(spec: dict, mode: str) -> MemoryResult:
    import torch

    from bench.common import build_model, make_batch, make_forward, make_train_step, resolve_device, resolve_precision

    device = resolve_device(spec.get("device"))
    cuda = device.type == "cuda"
    import transformers.models.bert.modeling_bert  # noqa: F401

    import ovd.models.detector  # noqa: F401  (imports are not the model's memory)
    import ovd.training.losses  # noqa: F401

    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        before_model = torch.cuda.memory_allocated(device)
    else:
        before_model = current_rss()
    model = build_model(spec["preset"], spec.get("overrides"), device)
    batch_size = int(spec.get("batch_size") or model.config.train.batch_size)
    batch = make_batch(model, batch_size, device)
    fn = make_train_step(model, batch, device) if mode == "train" else make_forward(model, batch, device)
    precision = resolve_precision(model.config.train.precision, device)
    for _ in range(int(spec.get("warmup", 0))):
        fn()
    gc.collect()
    before_step, peak, reserved, method = peak_of_call(fn, device, float(spec.get("poll_s", 0.001)))
    return MemoryResult(mode, batch_size, (peak - before_model) / MiB, max(peak - before_step, 0) / MiB, method,
                        str(device), precision, reserved,
                        {"before_model_mib": before_model / MiB, "before_step_mib": before_step / MiB,
                         "peak_mib": peak / MiB})


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


def measure_train(spec: dict) -> MemoryResult:
    """Peak memory of one full training step (forward, loss + matching, backward, AdamW)."""
    return _measure(spec, "train")


def measure_infer(spec: dict) -> MemoryResult:
    """Peak memory of one inference forward (eval, inference_mode) on pre-tokenized inputs."""
    return _measure(spec, "infer")
