"""Training throughput, inference FPS/latency and a per-module time breakdown, in one process.

Method: fixed input shapes (the fixed synthetic batch), thread count fixed by the runner and
recorded, ``warmup`` untimed calls, then ``iters`` timed calls, each bracketed by device
synchronization (``bench.measure.timing.time_calls``). Within the process the statistic is the median of the
timed calls; the runner repeats the whole process and reports median and IQR across processes.

Units: samples/s (training), images/s (FPS), milliseconds (latency, breakdown).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.measure.specs import SpeedSpec
from bench.measure.timing import time_calls
from bench.results import Row, measured, quantile

__all__ = ["SpeedResult", "breakdown", "measure", "time_calls"]


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
    train_not_measured: str | None = None  # why there is no training time (a factory without a loss)

    def rows(self) -> list[Row]:
        extra_t = {"batch_size": self.train_batch, "precision": self.precision, "threads": self.threads,
                   "calls": self.train_step_s}
        out = []
        if self.train_step_s:
            med = quantile(self.train_step_s, 0.5)
            out.append(measured("train/samples_per_s", self.train_batch / med, "samples/s", extra_t))
            out.append(measured("train/step_ms", med * 1e3, "ms", extra_t))
        elif self.train_not_measured:
            out.append(measured("train/samples_per_s", None, "samples/s", {"batch_size": self.train_batch},
                                status="not-measured", error=self.train_not_measured))
        for key, calls in self.infer_s.items():
            b = 1 if key.startswith("b1") else self.infer_batch
            post = key.endswith("_post")
            suffix = f"b{b}" + ("_post" if post else "")
            extra = {"batch_size": b, "postprocess": post, "precision": self.precision, "threads": self.threads,
                     "calls": calls}
            p50, p90 = quantile(calls, (0.5, 0.9))
            out.append(measured(f"infer/fps_{suffix}", b / p50, "images/s", extra))
            out.append(measured(f"infer/latency_p50_ms_{suffix}", p50 * 1e3, "ms", extra))
            out.append(measured(f"infer/latency_p90_ms_{suffix}", p90 * 1e3, "ms", extra))
        for name, calls in self.breakdown_s.items():
            out.append(measured(f"breakdown/{name}_ms", quantile(calls, 0.5) * 1e3, "ms",
                                {"batch_size": self.infer_batch, "calls": calls}))
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


def _measure_under_test(spec: SpeedSpec, device) -> SpeedResult:
    """A factory's / hub model's forward at batch 1 and ``infer_batch`` (its own batch when the factory
    takes no ``batch_size``), and its training step when it gives a loss (fp32)."""
    import torch

    from bench.measure.under_test import make_forward, make_train_step
    from bench.sources import build_under_test

    result = SpeedResult(0, spec.infer_batch, "fp32", torch.get_num_threads())
    for b in () if "infer" in spec.skip else (1, spec.infer_batch):
        mut = build_under_test(spec.source, device, b)
        # a factory without a batch_size argument fixes its batch: then it is timed once, at that batch
        key = "b1" if mut.batch_size == 1 else "bN"
        if key == "bN":
            result.infer_batch = mut.batch_size
        if key not in result.infer_s:
            result.infer_s[key] = time_calls(make_forward(mut, "fp32", device), device, spec.warmup, spec.iters)
        del mut
    if "train" in spec.skip:
        return result
    mut = build_under_test(spec.source, device, spec.train_batch or spec.infer_batch)
    result.train_batch = mut.batch_size
    if mut.loss is None:
        result.train_not_measured = "the factory's ModelUnderTest has no loss: training speed not measured"
        return result
    step = make_train_step(mut)
    result.train_step_s = time_calls(step, device, spec.warmup, spec.iters)
    result.losses = [step()]  # finite-loss check, untimed
    return result


def measure(spec: SpeedSpec | dict) -> SpeedResult:
    """Preset models: training step, inference forward and predict() at batch 1 and ``infer_batch``,
    per-module breakdown. Factory / hub models: forward and (with a loss) training step."""
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

    spec = SpeedSpec.coerce(spec)
    device = resolve_device(spec.device)
    if not spec.is_preset:
        return _measure_under_test(spec, device)
    warmup, iters, skip = spec.warmup, spec.iters, set(spec.skip)
    model = build_model(spec.source.preset, spec.source.overrides, device)
    precision = resolve_precision(model.config.train.precision, device)
    train_batch = int(spec.train_batch or model.config.train.batch_size)
    infer_batch = spec.infer_batch
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
