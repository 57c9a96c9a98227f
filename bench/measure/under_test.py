"""Calls on a :class:`bench.sources.ModelUnderTest` (a factory's or a hub model): the inference forward
and the training step every measurement times or probes, written once.

The training step is the plain one for a model that brings its own loss: ``loss(module, inputs)``,
backward, ``torch.optim.AdamW`` step (lr 1e-4; the step's cost does not depend on the value). fp32 unless a
precision is given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def make_forward(mut, precision: str, device) -> Callable[[], Any]:
    """Inference forward of ``mut`` (eval mode, ``torch.inference_mode``, autocast at ``precision``:
    "fp32" / "fp16" / "bf16") on its example inputs."""
    import torch

    from bench.common import autocast

    mut.module.eval()

    def forward():
        with torch.inference_mode(), autocast(precision, device):
            return mut.forward()

    return forward


def make_train_step(mut, lr: float = 1e-4) -> Callable[[], float]:
    """One training step: zero grads, ``mut.loss(module, example_inputs)`` (a scalar tensor), backward,
    AdamW step. Returns a closure -> the loss value. Needs ``mut.loss``."""
    import torch

    if mut.loss is None:
        raise ValueError("this ModelUnderTest has no loss: no training step")
    params = [p for p in mut.module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    mut.module.train()

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = mut.loss(mut.module, mut.example_inputs)
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise ValueError(f"ModelUnderTest.loss must return a scalar tensor, got {type(loss).__name__}"
                             + (f" of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else ""))
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step
