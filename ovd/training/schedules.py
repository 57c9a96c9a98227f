"""Learning-rate and momentum schedules as functions of training *progress* in [0, 1].

Progress is steps done / total steps for step-budgeted runs, or training seconds / budget for
time-budgeted runs (the benchmark's "accuracy after N minutes"), where the number of steps is
not known in advance and torch's step-indexed OneCycleLR cannot be used as is.

``onecycle`` is ``torch.optim.lr_scheduler.OneCycleLR`` with its defaults (``pct_start=0.3``,
``div_factor=25``, ``final_div_factor=1e4``, cosine annealing, ``cycle_momentum=True`` with
``base_momentum=0.85``, ``max_momentum=0.95``), on both sides: :func:`lr_factor` gives its LR as a
fraction of ``max_lr``, :func:`beta1` its momentum, which torch writes into AdamW's ``betas[0]``
(``betas[1]`` is left alone). With ``progress = onecycle_progress(step, total_steps)`` both equal
what OneCycleLR(opt, max_lr, total_steps=total_steps) sets at that step (tests/test_training_schedules.py).
"""

from __future__ import annotations

import math

SCHEDULERS = ("cosine", "onecycle")

# torch.optim.lr_scheduler.OneCycleLR defaults.
PCT_START = 0.3
DIV_FACTOR = 25.0
FINAL_DIV_FACTOR = 1e4
BASE_MOMENTUM = 0.85
MAX_MOMENTUM = 0.95


def _check_scheduler(scheduler: str) -> None:
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")


def _cos_anneal(start: float, end: float, t: float) -> float:
    """Cosine from ``start`` (t=0) to ``end`` (t=1): OneCycleLR's ``anneal_strategy='cos'``."""
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * t))


def _one_cycle_phase(progress: float, pct_start: float) -> tuple[int, float]:
    """(phase, t): phase 0 is the rise over [0, pct_start], phase 1 the fall; t in [0, 1] within it."""
    progress = min(max(progress, 0.0), 1.0)
    if progress < pct_start:
        return 0, progress / pct_start
    return 1, (progress - pct_start) / (1 - pct_start)


def cosine_with_warmup(progress: float, warmup_fraction: float = 0.05, min_factor: float = 0.01) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_factor``."""
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup_fraction:
        return max(progress / warmup_fraction, 1e-3)
    t = (progress - warmup_fraction) / max(1e-8, 1 - warmup_fraction)
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * t))


def one_cycle(progress: float, pct_start: float = PCT_START, div_factor: float = DIV_FACTOR,
              final_div_factor: float = FINAL_DIV_FACTOR) -> float:
    """OneCycleLR's LR as a fraction of ``max_lr``: from 1/div_factor up to 1 over ``pct_start``
    (cosine), then down to 1/(div_factor*final_div_factor) (cosine)."""
    start, end = 1 / div_factor, 1 / (div_factor * final_div_factor)
    phase, t = _one_cycle_phase(progress, pct_start)
    return _cos_anneal(start, 1.0, t) if phase == 0 else _cos_anneal(1.0, end, t)


def one_cycle_momentum(progress: float, pct_start: float = PCT_START, base_momentum: float = BASE_MOMENTUM,
                       max_momentum: float = MAX_MOMENTUM) -> float:
    """OneCycleLR's cycled momentum, inverse to the LR: ``max_momentum`` down to ``base_momentum``
    while the LR rises, back up to ``max_momentum`` while it falls (cosine)."""
    phase, t = _one_cycle_phase(progress, pct_start)
    if phase == 0:
        return _cos_anneal(max_momentum, base_momentum, t)
    return _cos_anneal(base_momentum, max_momentum, t)


def onecycle_progress(step: int, total_steps: int, pct_start: float = PCT_START) -> float:
    """Progress in [0, 1] of 0-based optimizer step ``step`` of ``total_steps`` that makes
    :func:`one_cycle` / :func:`one_cycle_momentum` equal OneCycleLR's values at that step.

    OneCycleLR (``total_steps=N``) peaks at step ``pct_start*N - 1`` and ends at step ``N - 1``, so
    the map is linear on each side of the peak: ``pct_start * step / peak`` before it,
    ``pct_start + (1 - pct_start) * (step - peak) / (N - 1 - peak)`` after it. It differs from
    ``step / N`` by less than ``1/N``: a time-budgeted run (seconds / budget) is its large-N limit.
    """
    if total_steps < 2:
        raise ValueError(f"total_steps={total_steps} must be at least 2")
    if not 0 <= step < total_steps:
        raise ValueError(f"step={step} must be in [0, total_steps={total_steps})")
    peak = pct_start * total_steps - 1
    if step <= peak:
        return pct_start * step / peak if peak > 0 else 0.0
    return pct_start + (1 - pct_start) * (step - peak) / (total_steps - 1 - peak)


def lr_factor(scheduler: str, progress: float, warmup_fraction: float = 0.05) -> float:
    """LR multiplier at ``progress`` in [0, 1]: ``cosine`` (linear warm-up over ``warmup_fraction``,
    then cosine to 0.01) or ``onecycle`` (:func:`one_cycle`; ``warmup_fraction`` unused, the rise is
    OneCycleLR's ``pct_start=0.3``)."""
    _check_scheduler(scheduler)
    if scheduler == "cosine":
        return cosine_with_warmup(progress, warmup_fraction)
    return one_cycle(progress)


def beta1(scheduler: str, progress: float, base_beta1: float) -> float:
    """AdamW's ``betas[0]`` at ``progress``: ``base_beta1`` (the configured one) for ``cosine``;
    for ``onecycle`` OneCycleLR's cycled momentum (0.95 -> 0.85 -> 0.95, :func:`one_cycle_momentum`),
    which, like torch, replaces the configured ``betas[0]``."""
    _check_scheduler(scheduler)
    if scheduler == "cosine":
        return base_beta1
    return one_cycle_momentum(progress)
