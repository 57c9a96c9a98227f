"""The one training step: loss, optimizer and its parameter groups, LR/momentum schedule, precision and
gradient clipping. ``ovd train`` (through :class:`~ovd.training.module.DetectorModule`) and the benchmark's
training-speed measurement both call :class:`TrainStep`, so the suite times the step users run.

Precision names: the config's ``train.precision`` ("auto", "32-true", "16-mixed", "bf16-mixed") resolves to
what runs, "fp32", "fp16" (autocast + GradScaler) or "bf16" (autocast). "auto" is mixed precision where the
hardware computes it natively: fp16 on CUDA (the seed's behaviour), bf16 on a CPU with bf16 matrix instructions
(AVX512-BF16 or AMX), fp32 on any other CPU (AVX2 only: bf16 is emulated there, about 10x slower).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from ..config import TrainConfig
from .schedules import beta1, lr_factor


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss is NaN or infinite; the last good checkpoint is kept."""


def cpu_computes_bf16() -> bool:
    """True when this CPU has bf16 matrix instructions (AVX512-BF16 or AMX tiles), as torch's own dispatch sees
    them. Measured on 2 cores of a Zen 5 EPYC with AVX512-BF16 (2026-12-01, optimized-tiny, 600 training s,
    seed 0): bf16 autocast ran 3,301 training steps against fp32's 1,998, val vocabulary mAP50 0.628 against
    0.472. On an AVX2-only EPYC bf16 autocast ran the full-size forward at about 0.1x fp32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, hence getattr: absent = False
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


#: Lightning's precision names (the config's) -> what runs; :func:`ovd.training.run.resolve_precision` inverts it.
LIGHTNING_PRECISIONS = {"32-true": "fp32", "16-mixed": "fp16", "bf16-mixed": "bf16"}


def resolve_precision(precision: str, device_type: str) -> str:
    """Config precision -> "fp32" | "fp16" | "bf16" on a device type ("cpu", "cuda"); "auto" as the module
    docstring says."""
    if precision == "auto":
        if device_type == "cuda":
            return "fp16"
        return "bf16" if device_type == "cpu" and cpu_computes_bf16() else "fp32"
    if precision not in LIGHTNING_PRECISIONS:
        raise ValueError(f"train.precision={precision!r}; choose one of {['auto', *LIGHTNING_PRECISIONS]}")
    return LIGHTNING_PRECISIONS[precision]


def autocast(precision: str, device_type: str):
    """Autocast context for a resolved precision ("fp32": no autocast)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device_type, dtype=dtype)


def parameter_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Trainable parameters in three groups: the head (``train.lr``), the image backbone
    (``train.backbone_lr``) and, when not frozen, the text encoder (``train.text_lr``)."""
    backbone = [p for p in model.image_encoder.backbone_parameters() if p.requires_grad]
    text = [p for p in model.text_encoder.model.parameters() if p.requires_grad]
    taken = {id(p) for p in backbone} | {id(p) for p in text}
    head = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    groups = [{"params": head, "lr": cfg.lr, "name": "head"},
              {"params": backbone, "lr": cfg.backbone_lr, "name": "backbone"}]
    if text:
        groups.append({"params": text, "lr": cfg.text_lr, "name": "text"})
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over :func:`parameter_groups`; ``train.optimizer_impl`` picks torch's implementation (same math)."""
    impl = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}[cfg.optimizer_impl]
    return torch.optim.AdamW(parameter_groups(model, cfg), betas=tuple(cfg.betas), eps=cfg.eps,
                             weight_decay=cfg.weight_decay, **impl)


class ProgressSchedule(torch.optim.lr_scheduler.LambdaLR):
    """LR (and, for "onecycle", AdamW's beta1, as ``OneCycleLR`` cycles momentum) as a function of training
    *progress* in [0, 1] (steps done / total, or training seconds / budget), read from ``progress``."""

    def __init__(self, optimizer, cfg: TrainConfig, progress: Callable[[], float]) -> None:
        self.scheduler_name, self.base_beta1 = cfg.scheduler, float(cfg.betas[0])
        self.progress = progress
        super().__init__(optimizer, lambda _: lr_factor(cfg.scheduler, progress(), cfg.warmup_fraction))

    def step(self, epoch=None) -> None:
        super().step()
        momentum = beta1(self.scheduler_name, self.progress(), self.base_beta1)
        for group in self.optimizer.param_groups:
            group["betas"] = (momentum, group["betas"][1])

    def state_dict(self) -> dict:
        # the LR lambda and the progress callable are rebuilt from the config; keep only plain data
        return {k: v for k, v in super().state_dict().items() if k != "progress"}


class TrainStep:
    """forward -> losses -> backward -> gradient clipping -> optimizer step -> schedule step.

    ``batch``: {"images" (B, 3, S, S) normalized, "input_ids"/"attention_mask" (B, T), "targets": B dicts
    with "boxes" (N, 4) normalized cxcywh and "positive_map" (N, T)}. ``backward`` defaults to
    ``loss.backward()`` (Lightning passes ``manual_backward`` so DDP sees it). A non-finite loss raises
    :class:`NonFiniteLossError` before any weight changes. Returns the detached losses.
    """

    def __init__(self, model: nn.Module, criterion: nn.Module, optimizer, scheduler=None, *,
                 precision: str = "fp32", grad_clip: float = 0.0, device_type: str = "cpu",
                 backward: Callable | None = None, compile_forward: bool = False) -> None:
        self.model, self.criterion = model, criterion
        # a compiled view of the same module (shared parameters; state_dict keys unchanged)
        self.forward = torch.compile(model) if compile_forward else model
        self.optimizer, self.scheduler = optimizer, scheduler
        self.precision, self.grad_clip, self.device_type = precision, float(grad_clip or 0.0), device_type
        self.backward = backward or (lambda loss: loss.backward())
        self.scaler = torch.amp.GradScaler(device_type, enabled=precision == "fp16")
        self.steps = 0

    def __call__(self, batch: dict) -> dict:
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.precision, self.device_type):
            outputs = self.forward(batch["images"], batch["input_ids"], batch["attention_mask"])
        losses = self.criterion(outputs, batch["targets"])  # computed in fp32 (ovd.training.losses)
        loss = losses["total_loss"]
        if not torch.isfinite(loss):
            details = {k: float(v.detach()) for k, v in losses.items() if not torch.isfinite(v)}
            raise NonFiniteLossError(
                f"non-finite training loss at step {self.steps} ({details}); stopping. The last good checkpoint "
                "is kept; lower train.lr or use train.precision=32-true and resume from it.")
        self.backward(self.scaler.scale(loss))
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.steps += 1  # before the schedule step: progress counts the step just taken, as global_step does
        if self.scheduler is not None:
            self.scheduler.step()
        return {k: v.detach() for k, v in losses.items()}


def build_train_step(model: nn.Module, cfg: TrainConfig, criterion: nn.Module, device_type: str,
                     progress: Callable[[], float] | None = None) -> TrainStep:
    """The step ``ovd train`` runs, outside Lightning (the benchmark): AdamW with the parameter groups,
    the progress schedule (``progress`` defaults to 0: the warm-up start) and the config's precision and
    clipping."""
    optimizer = build_optimizer(model, cfg)
    scheduler = ProgressSchedule(optimizer, cfg, progress or (lambda: 0.0))
    return TrainStep(model, criterion, optimizer, scheduler, precision=resolve_precision(cfg.precision, device_type),
                     grad_clip=cfg.grad_clip, device_type=device_type, compile_forward=cfg.compile)
