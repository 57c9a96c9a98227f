"""The ceiling: how much of its image backbone's throughput the whole detector keeps, in one process.

Three calls on the same fixed synthetic batch (``bench.common.make_batch``), at the same precision, device
and thread count, timed in interleaved rounds (round r times (a), (b), (c) in turn, each ``warmup`` untimed
calls then ``iters`` timed calls through ``bench.measure.timing.time_calls``), so slow drift of the machine
hits all three alike:

(a) ``e2e``: the end-to-end inference forward, exactly the call ``bench.measure.speed`` times for
    ``infer/fps_bN`` (``bench.common.make_forward``: eval, inference_mode, the config's autocast);
(b) ``backbone``: the timm model inside the variant (``model.image_encoder.backbone``) on the same pixel batch,
    eval + inference_mode + the same autocast;
(c) ``timm``: the same backbone built through timm directly, ``timm.create_model(config.image.backbone,
    pretrained=False, features_only=True, out_indices=<the wrapper's>, **backbone_kwargs)`` with the
    ``img_size`` default ``ovd.models.image_encoder.ImageEncoder`` adds for Swin, and the wrapper's weights
    loaded (strict), so the compute and the numbers are the same.

Statistics per process: FPS = batch / median seconds per call over every timed call of the path; the two
ratios (``e2e_share_of_backbone``, ``backbone_vs_timm``) are the median over rounds of the per-round ratio
(pairs measured seconds apart). FLOPs per image (``bench.measure.flops.count_flops``, 2*MACs; matmuls,
convolutions and attention only) of the whole forward and of the backbone alone are counted once, untimed.

Units: images/s (FPS), % (share), x (ratio), FLOPs (2*MACs) per image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.measure.specs import ModelSpec, SpecError, _choice, _positive_int
from bench.results import Row, measured, quantile

#: Precisions a spec may force (None: the preset's ``train.precision`` resolved as speed.py does).
CEILING_PRECISIONS = ("fp32", "bf16", "fp16")
PATHS = ("e2e", "backbone", "timm")


@dataclass(frozen=True, kw_only=True)
class CeilingSpec(ModelSpec):
    """One variant at one batch and precision (preset sources only: the backbone is found in the config)."""

    batch_size: int  # images per call, the same for the three paths
    precision: str | None = None  # None: the preset's train.precision as speed.py resolves it; else CEILING_PRECISIONS
    warmup: int = 1  # untimed calls per path before its timed calls, in every round
    rounds: int = 3  # interleaved rounds (e2e, backbone, timm in turn)
    iters: int = 1  # timed calls per path per round
    channels_last: bool = False  # models and the pixel batch in torch.channels_last memory format
    flops: bool = True  # also count FLOPs per image of the whole forward and of the backbone (untimed)

    def __post_init__(self) -> None:
        super().__post_init__()
        o = self._owner()
        if not self.is_preset:
            raise SpecError(f"{o}: the ceiling needs a preset source (its config names the backbone), got "
                            f"{self.source.describe()}")
        _positive_int(o, "batch_size", self.batch_size)
        if self.precision is not None:
            _choice(o, "precision", self.precision, CEILING_PRECISIONS)
        _positive_int(o, "warmup", self.warmup, minimum=0)
        _positive_int(o, "rounds", self.rounds)
        _positive_int(o, "iters", self.iters)
        for name in ("channels_last", "flops"):
            if not isinstance(getattr(self, name), bool):
                raise SpecError(f"{o}: {name} must be true or false, got {getattr(self, name)!r}")


@dataclass
class CeilingResult:
    """One process. ``calls_s``: path -> seconds per timed call, in call order (rounds concatenated, ``iters``
    per round); ``flops``: "e2e"/"backbone" -> FLOPs (2*MACs) per image; ``timm``: how (c) was built."""

    batch_size: int
    precision: str
    threads: int
    rounds: int
    iters: int
    channels_last: bool
    backbone: str
    device: str
    calls_s: dict = field(default_factory=dict)
    flops: dict = field(default_factory=dict)
    timm: dict = field(default_factory=dict)

    def fps(self, path: str) -> float:
        """Images/s of ``path``: batch / median seconds per call."""
        return self.batch_size / quantile(self.calls_s[path], 0.5)

    def round_ratio(self, num: str, den: str) -> float:
        """Median over rounds of (FPS of ``num`` / FPS of ``den``) within the round (= den s / num s)."""
        n = self.iters
        ratios = []
        for r in range(self.rounds):
            a = quantile(self.calls_s[num][r * n:(r + 1) * n], 0.5)
            b = quantile(self.calls_s[den][r * n:(r + 1) * n], 0.5)
            ratios.append(b / a)
        return quantile(ratios, 0.5)

    def rows(self) -> list[Row]:
        base = {"batch_size": self.batch_size, "precision": self.precision, "threads": self.threads,
                "rounds": self.rounds, "iters": self.iters, "channels_last": self.channels_last,
                "backbone": self.backbone, "device": self.device}
        out = []
        for path in PATHS:
            extra = {**base, "calls": self.calls_s[path]}
            if path in self.flops:
                extra["flops_per_image"] = self.flops[path]
            if path == "timm":
                extra["timm"] = self.timm
            out.append(measured(f"ceiling/{path}_fps", self.fps(path), "images/s", extra))
        out.append(measured("ceiling/e2e_share_of_backbone", 100 * self.round_ratio("e2e", "backbone"), "%",
                            {**base, "method": "median over rounds of e2e FPS / backbone-alone FPS x 100"}))
        out.append(measured("ceiling/backbone_vs_timm", self.round_ratio("backbone", "timm"), "x",
                            {**base, "method": "median over rounds of in-model backbone FPS / timm-direct FPS"}))
        if self.flops:
            from bench.measure.flops import UNIT

            for path, v in self.flops.items():
                out.append(measured(f"ceiling/{path}_flops_per_image", v, UNIT, base))
        return out


def timm_kwargs(config, backbone) -> dict:
    """The kwargs ``ImageEncoder`` passes to ``timm.create_model`` for ``config.image.backbone`` (besides
    ``pretrained``): features_only, the wrapper's out_indices, backbone_kwargs, and Swin's img_size default."""
    kwargs = dict(config.image.backbone_kwargs)
    if "swin" in config.image.backbone:
        kwargs.setdefault("img_size", config.image.image_size)
    return {"features_only": True, "out_indices": tuple(backbone.feature_info.out_indices), **kwargs}


def build_timm_direct(config, backbone, device):
    """(c): the variant's backbone straight from timm (pretrained=False) with the wrapper's weights loaded
    strictly (a build that differs from the wrapper's fails here). Returns (module, kwargs used)."""
    import timm

    kwargs = timm_kwargs(config, backbone)
    module = timm.create_model(config.image.backbone, pretrained=False, **kwargs)
    module.load_state_dict(backbone.state_dict(), strict=True)
    return module.to(device).eval(), kwargs


def _inference_call(module, images, precision: str, device):
    """``module(images)`` (images (B, 3, S, S)) in eval, inference_mode and the precision's autocast."""
    import torch

    from bench.common import autocast

    module.eval()

    def call():
        with torch.inference_mode(), autocast(precision, device):
            return module(images)

    return call


def _interleaved(calls: dict, device, warmup: int, rounds: int, iters: int) -> dict:
    """path -> seconds per timed call: ``rounds`` rounds, each timing every path in turn."""
    from bench.measure.timing import time_calls

    out = {k: [] for k in calls}
    for _ in range(rounds):
        for k, fn in calls.items():
            out[k] += time_calls(fn, device, warmup, iters)
    return out


def _count(fn, batch_size: int) -> float:
    from bench.measure.flops import count_flops

    total, _, _, _ = count_flops(fn)
    return total / batch_size


def measure(spec: CeilingSpec | dict) -> CeilingResult:
    """(a) end-to-end forward, (b) the in-model timm backbone, (c) the same backbone from timm, interleaved."""
    import torch

    from bench.common import build_model_at, make_batch, make_forward, resolve_device, resolve_precision

    spec = CeilingSpec.coerce(spec)
    device = resolve_device(spec.device)
    model = build_model_at(spec.source.preset, spec.source.overrides, spec.precision, device).eval()
    config = model.config
    precision = resolve_precision(config.train.precision, device)
    batch = make_batch(model, spec.batch_size, device)
    backbone = model.image_encoder.backbone
    direct, kwargs = build_timm_direct(config, backbone, device)
    if spec.channels_last:
        model = model.to(memory_format=torch.channels_last)
        direct = direct.to(memory_format=torch.channels_last)
        batch.images = batch.images.contiguous(memory_format=torch.channels_last)
    calls = {"e2e": make_forward(model, batch, device),
             "backbone": _inference_call(backbone, batch.images, precision, device),
             "timm": _inference_call(direct, batch.images, precision, device)}
    res = CeilingResult(spec.batch_size, precision, torch.get_num_threads(), spec.rounds, spec.iters,
                        spec.channels_last, config.image.backbone, str(device))
    res.timm = {"name": config.image.backbone, "pretrained": False, "weights": "the wrapper's (strict load)",
                **{k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}}
    res.calls_s = _interleaved(calls, device, spec.warmup, spec.rounds, spec.iters)
    if spec.flops:
        res.flops = {"e2e": _count(calls["e2e"], spec.batch_size),
                     "backbone": _count(calls["backbone"], spec.batch_size)}
    return res


__all__ = ["CEILING_PRECISIONS", "CeilingResult", "CeilingSpec", "build_timm_direct", "measure", "timm_kwargs"]
