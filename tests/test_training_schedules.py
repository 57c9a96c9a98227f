"""ovd.training.schedules: "onecycle" is torch's OneCycleLR, LR and momentum, step for step."""

from __future__ import annotations

import pytest
import torch

from ovd.training.schedules import beta1, lr_factor, one_cycle_momentum, onecycle_progress

MAX_LR = 1e-3


def torch_one_cycle(total_steps: int, betas=(0.9, 0.98)) -> list[tuple[float, float, float]]:
    """(lr, betas[0], betas[1]) that OneCycleLR (defaults) sets for each of ``total_steps`` AdamW steps."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=MAX_LR, betas=betas)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=MAX_LR, total_steps=total_steps)
    seen = []
    for step in range(total_steps):
        group = opt.param_groups[0]
        seen.append((group["lr"], *group["betas"]))
        param.grad = torch.ones_like(param)
        opt.step()
        if step < total_steps - 1:  # a step past total_steps raises in torch
            sched.step()
    return seen


@pytest.mark.parametrize("total_steps", [3, 10, 37, 100])
def test_onecycle_lr_and_beta1_equal_torch_one_cycle_lr(total_steps):
    for step, (lr, b1, b2) in enumerate(torch_one_cycle(total_steps)):
        progress = onecycle_progress(step, total_steps)
        assert lr_factor("onecycle", progress) * MAX_LR == pytest.approx(lr, rel=1e-9, abs=1e-15), step
        assert beta1("onecycle", progress, base_beta1=0.9) == pytest.approx(b1, rel=1e-9), step
        assert b2 == 0.98  # torch cycles betas[0] only


def test_onecycle_momentum_is_inverse_to_the_lr():
    assert one_cycle_momentum(0.0) == pytest.approx(0.95)
    assert one_cycle_momentum(0.3) == pytest.approx(0.85)  # the LR peak
    assert one_cycle_momentum(1.0) == pytest.approx(0.95)
    # step / (N - 1) is not the exact map: at N = 10 it misses torch's peak step (pct_start*N - 1 = 2).
    assert onecycle_progress(2, 10) == pytest.approx(0.3)
    assert 2 / 9 != pytest.approx(0.3)


def test_cosine_keeps_the_configured_beta1():
    for progress in (0.0, 0.4, 1.0):
        assert beta1("cosine", progress, base_beta1=0.9) == 0.9


def test_bad_scheduler_and_step_are_named():
    with pytest.raises(ValueError, match="'step'.*cosine, onecycle"):
        beta1("step", 0.5, 0.9)
    with pytest.raises(ValueError, match="'step'.*cosine, onecycle"):
        lr_factor("step", 0.5)
    with pytest.raises(ValueError, match=r"step=10 must be in \[0, total_steps=10\)"):
        onecycle_progress(10, 10)
    with pytest.raises(ValueError, match="total_steps=1 must be at least 2"):
        onecycle_progress(0, 1)
