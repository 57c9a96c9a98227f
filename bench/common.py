"""Shared set-up for measurements: thread pools, device, precision, a fixed synthetic batch, and
the training step. Nothing here prints; nothing here decides what is reported."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Fixed prompt for every speed/memory/FLOP measurement; its three phrases get one box each.
CAPTION = "a red circle left of a blue square above a green triangle"
PHRASES = ("red circle", "blue square", "green triangle")


def limit_thread_pools(threads: int | None) -> dict:
    """Pin torch intra-op threads to ``threads`` and every BLAS/OpenMP pool that threadpoolctl
    sees to 1 (scipy's OpenBLAS must not fight torch's OpenMP, DESIGN.md). Returns what was set."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    info: dict[str, Any] = {"torch_threads": torch.get_num_threads(),
                            "torch_interop_threads": torch.get_num_interop_threads()}
    try:
        from threadpoolctl import threadpool_info, threadpool_limits

        threadpool_limits(limits=1, user_api="blas")
        info["threadpools"] = [
            {"api": p.get("user_api"), "lib": p.get("internal_api"), "threads": p.get("num_threads")}
            for p in threadpool_info()
        ]
    except Exception as err:  # threadpoolctl is optional at run time
        info["threadpools_error"] = repr(err)
    for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        info[key] = os.environ.get(key)
    return info


def resolve_device(name: str | None = None):
    import torch

    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def synchronize(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def now(device) -> float:
    """Wall clock in seconds after synchronizing the device (so queued kernels are counted)."""
    synchronize(device)
    return time.perf_counter()


def resolve_precision(precision: str, device) -> str:
    """Config precision -> what actually runs: "fp32", "fp16" or "bf16" (``ovd.training.step``'s rule:
    ``auto`` = fp16 autocast + GradScaler on CUDA, bf16 autocast on a CPU with AVX512-BF16 or AMX, fp32 on
    other CPUs)."""
    from ovd.training.step import resolve_precision as resolve

    return resolve(precision, getattr(device, "type", str(device).split(":")[0]))


def autocast(precision: str, device):
    """Context manager for a resolved precision ("fp32" is a no-op): ``ovd.training.step.autocast``."""
    import torch

    from ovd.training.step import autocast as ovd_autocast

    return ovd_autocast(precision, torch.device(device).type)


#: Environment variable carrying `ovd-bench run --set` overrides (JSON) to the worker processes.
GLOBAL_OVERRIDES_ENV = "OVD_BENCH_SET"


def build_config(preset: str, overrides: dict | None, device=None):
    """Variant -> validated DetectorConfig; the ``amp`` sentinel precision becomes bf16 on CPU, fp16 on CUDA."""
    import ovd

    overrides = dict(overrides or {})
    # `ovd-bench run --set KEY=VALUE` applies to every variant; the runner passes it to the workers.
    overrides.update(json.loads(os.environ.get(GLOBAL_OVERRIDES_ENV, "{}")))
    if overrides.get("train.precision") == "amp":
        dev = getattr(device, "type", str(device or "cpu"))
        overrides["train.precision"] = "16-mixed" if dev == "cuda" else "bf16-mixed"
    return ovd.get_config(preset, overrides)


@dataclass
class Batch:
    """A fixed synthetic batch. images (B, 3, S, S) normalized; input_ids/attention_mask (B, T);
    targets: B dicts with boxes (3, 4) normalized cxcywh and positive_map (3, T) float binary;
    raw_images (B, 3, S, S) in [0, 1] for ``model.predict``."""

    images: Any
    input_ids: Any
    attention_mask: Any
    targets: list
    raw_images: Any
    captions: list

    @property
    def size(self) -> int:
        return int(self.images.shape[0])


def make_batch(model, batch_size: int, device, seed: int = 0) -> Batch:
    """A fixed random batch through the model's own input processor (``model.processor``: the one the
    dataset, the collator and ``predict`` use), with three target boxes per image for the fixed
    :data:`CAPTION`'s :data:`PHRASES`."""
    import torch

    from ovd.data.positive_map import build_positive_map

    g = torch.Generator().manual_seed(seed)
    s = model.config.image.image_size
    raw = torch.rand(batch_size, 3, s, s, generator=g)
    images, _sizes = model.processor.images(raw)
    captions = [CAPTION] * batch_size
    enc = model.tokenize(captions)
    T = enc["input_ids"].shape[1]
    spans = [[(CAPTION.index(p), CAPTION.index(p) + len(p))] for p in PHRASES]
    pos = build_positive_map(enc["offset_mapping"][0], spans, T)  # (3, T)
    targets = []
    for _ in range(batch_size):
        cxcy = torch.rand(len(PHRASES), 2, generator=g) * 0.6 + 0.2
        wh = torch.rand(len(PHRASES), 2, generator=g) * 0.2 + 0.1
        targets.append({"boxes": torch.cat([cxcy, wh], 1).to(device), "positive_map": pos.clone().to(device)})
    return Batch(images.to(device), enc["input_ids"].to(device), enc["attention_mask"].to(device), targets,
                 raw.to(device), captions)


def build_model(preset: str, overrides: dict | None, device, seed: int = 0):
    import torch

    import ovd

    torch.manual_seed(seed)
    config = build_config(preset, overrides, device)
    return ovd.create_model(config).to(device)


#: a measurement's forced precision -> the config's ``train.precision`` (None keeps the preset's)
PRECISION_CONFIG = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}


def build_model_at(preset: str, overrides: dict | None, precision: str | None, device, seed: int = 0):
    """:func:`build_model` with ``train.precision`` forced to ``precision`` ("fp32"/"bf16"/"fp16"; None keeps
    the preset's), so the shared forward and training step run it unchanged."""
    overrides = dict(overrides or {})
    if precision is not None:
        overrides["train.precision"] = PRECISION_CONFIG[precision]
    return build_model(preset, overrides, device, seed)


def make_train_step(model, batch: Batch, device) -> Callable[[], float]:
    """The training step ``ovd train`` runs (``ovd.training.step.TrainStep``: forward, loss with Hungarian
    matching, backward, gradient clipping, AdamW over the trainer's parameter groups, the progress
    schedule, at the config's precision), on a fixed batch. Returns a closure -> loss value."""
    import torch

    from ovd.training.losses import build_criterion
    from ovd.training.step import build_train_step

    step = build_train_step(model, model.config.train, build_criterion(model.config.loss), torch.device(device).type)
    inputs = {"images": batch.images, "input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
              "targets": batch.targets}
    model.train()

    def run() -> float:
        return float(step(inputs)["total_loss"])

    return run


def make_forward(model, batch: Batch, device) -> Callable[[], Any]:
    """Inference forward (eval mode, inference_mode, config precision) on pre-tokenized inputs."""
    import torch

    precision = resolve_precision(model.config.train.precision, device)
    model.eval()

    def forward():
        with torch.inference_mode(), autocast(precision, device):
            return model(batch.images, batch.input_ids, batch.attention_mask)

    return forward


def make_predict(model, batch: Batch, device, threshold: float = 0.3) -> Callable[[], Any]:
    """The user-facing API: preprocess + tokenize + forward + post-processing (``model.predict``)."""
    precision = resolve_precision(model.config.train.precision, device)
    model.eval()

    def predict():
        with autocast(precision, device):
            return model.predict(batch.raw_images, batch.captions, threshold=threshold)

    return predict
