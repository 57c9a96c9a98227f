"""Training throughput, inference FPS/latency and a per-module time breakdown, in one process.

Method: fixed input shapes (the fixed synthetic batch), thread count fixed by the runner and
recorded, ``warmup`` untimed calls, then ``iters`` timed calls, each bracketed by device
synchronization (``bench.common.now``). Within the process the statistic is the median of the
timed calls; the runner repeats the whole process and reports median and IQR across processes.

Units: samples/s (training), images/s (FPS), milliseconds (latency, breakdown).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


def time_calls(fn, device, warmup: int, iters: int) -> list[float]:
    """Seconds per call of ``fn`` for ``iters`` calls after ``warmup`` untimed calls (device synced)."""
    from bench.common import now

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = now(device)
        fn()
        times.append(now(device) - t0)
    return times


def _quantile(xs: list[float], q: float) -> float:
    import numpy as np

    return float(np.quantile(np.asarray(xs, dtype=float), q))


@dataclass
class SpeedResult:
    """One process's timings. Times in seconds per call, lists in call order."""

    train_batch: int
    infer_batch: int
    precision: str
    threads: int
    train_step_s: list = field(default_factory=list)
    infer_s: dict = field(default_factory=dict)  # "b1" / "bN" / "b1_post" / "bN_post" -> per-call seconds
    breakdown_s: dict = field(default_factory=dict)  # module -> per-call seconds at infer_batch
    losses: list = field(default_factory=list)

    def rows(self) -> list[dict]:
        extra_t = {"batch_size": self.train_batch, "precision": self.precision, "threads": self.threads,
                   "calls": self.train_step_s}
        out = []
        if self.train_step_s:
            med = statistics.median(self.train_step_s)
            out.append({"metric": "train/samples_per_s", "value": self.train_batch / med, "unit": "samples/s",
                        "extra": extra_t})
            out.append({"metric": "train/step_ms", "value": med * 1e3, "unit": "ms", "extra": extra_t})
        for key, calls in self.infer_s.items():
            b = 1 if key.startswith("b1") else self.infer_batch
            post = key.endswith("_post")
            suffix = f"b{b}" + ("_post" if post else "")
            extra = {"batch_size": b, "postprocess": post, "precision": self.precision, "threads": self.threads,
                     "calls": calls}
            out.append({"metric": f"infer/fps_{suffix}", "value": b / statistics.median(calls), "unit": "images/s",
                        "extra": extra})
            out.append({"metric": f"infer/latency_p50_ms_{suffix}", "value": _quantile(calls, 0.5) * 1e3,
                        "unit": "ms", "extra": extra})
            out.append({"metric": f"infer/latency_p90_ms_{suffix}", "value": _quantile(calls, 0.9) * 1e3,
                        "unit": "ms", "extra": extra})
        for name, calls in self.breakdown_s.items():
            out.append({"metric": f"breakdown/{name}_ms", "value": statistics.median(calls) * 1e3, "unit": "ms",
                        "extra": {"batch_size": self.infer_batch, "calls": calls}})
        return out


def breakdown(model, batch, device, warmup: int, iters: int) -> dict:
    """Per-module inference time (seconds per call) at the batch's size: each component is timed
    alone on the intermediate tensors that ``OpenVocabDetector.forward`` passes it."""
    import torch

    from bench.common import autocast, resolve_precision

    precision = resolve_precision(model.config.train.precision, device)
    model.eval()
    ids, mask = batch.input_ids, batch.attention_mask
    padding = mask == 0
    with torch.inference_mode(), autocast(precision, device):
        text = model.encode_text(ids, mask)
        image = model.image_encoder(batch.images)
        memory = model.fusion(image["tokens"], image["pos"], text, padding)

    def run(fn):
        def call():
            with torch.inference_mode(), autocast(precision, device):
                fn()
        return time_calls(call, device, warmup, iters)

    return {
        "image_encoder": run(lambda: model.image_encoder(batch.images)),
        "text_encoder": run(lambda: model.encode_text(ids, mask)),
        "fusion": run(lambda: model.fusion(image["tokens"], image["pos"], text, padding)),
        "box_head": run(lambda: model.box_head(memory, image["pos"], image["spatial_shapes"], text, padding)),
    }


def measure(spec: dict) -> SpeedResult:
    """spec: preset, overrides, train_batch (None = the config's batch), infer_batch, warmup, iters,
    skip ("train", "infer", "breakdown"), device."""
    import torch

    from bench.common import (
        build_model,
        make_batch,
        make_forward,
        make_predict,
        make_train_step,
        resolve_device,
        resolve_precision,
    )

    device = resolve_device(spec.get("device"))
    warmup, iters = int(spec.get("warmup", 1)), int(spec.get("iters", 3))
    skip = set(spec.get("skip", ()))
    model = build_model(spec["preset"], spec.get("overrides"), device)
    precision = resolve_precision(model.config.train.precision, device)
    train_batch = int(spec.get("train_batch") or model.config.train.batch_size)
    infer_batch = int(spec.get("infer_batch", 8))
    result = SpeedResult(train_batch, infer_batch, precision, torch.get_num_threads())
    if "train" not in skip:
        tb = make_batch(model, train_batch, device)
        step = make_train_step(model, tb, device)
        result.train_step_s = time_calls(step, device, warmup, iters)
        result.losses = [step()]  # finite-loss check, untimed
        del tb, step
    if "infer" not in skip:
        for b, key in ((1, "b1"), (infer_batch, "bN")):
            ib = make_batch(model, b, device)
            result.infer_s[key] = time_calls(make_forward(model, ib, device), device, warmup, iters)
            result.infer_s[key + "_post"] = time_calls(make_predict(model, ib, device), device, warmup, iters)
    if "breakdown" not in skip:
        ib = make_batch(model, infer_batch, device)
        result.breakdown_s = breakdown(model, ib, device, warmup, iters)
        fwd = result.infer_s.get("bN") or time_calls(make_forward(model, ib, device), device, warmup, iters)
        post = result.infer_s.get("bN_post")
        if post:
            # pre/post-processing = predict() minus forward(): resize/normalize, tokenize, box decoding.
            result.breakdown_s["pre_post_processing"] = [max(p - f, 0.0) for p, f in zip(sorted(post), sorted(fwd))]
    return result
