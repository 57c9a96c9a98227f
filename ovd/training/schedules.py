"""Learning-rate schedules as functions of training *progress* in [0, 1].

Progress is steps done / total steps for step-budgeted runs, or training seconds / budget for
time-budgeted runs (the benchmark's "accuracy after N minutes"), where the number of steps is
not known in advance and torch's step-indexed OneCycleLR cannot be used as is.
"""

from __future__ import annotations

import math


def cosine_with_warmup(progress: float, warmup_fraction: float = 0.05, min_factor: float = 0.01) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_factor``."""
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup_fraction:
        return max(progress / warmup_fraction, 1e-3)
    t = (progress - warmup_fraction) / max(1e-8, 1 - warmup_fraction)
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * t))


def one_cycle(progress: float, pct_start: float = 0.3, div_factor: float = 25.0,
              final_div_factor: float = 1e4) -> float:
    """The shape of ``torch.optim.lr_scheduler.OneCycleLR`` (cosine annealing, its defaults):
    from 1/div_factor up to 1 over ``pct_start``, then down to 1/(div_factor*final_div_factor)."""
    progress = min(max(progress, 0.0), 1.0)
    start, end = 1 / div_factor, 1 / (div_factor * final_div_factor)
    if progress < pct_start:
        t = progress / pct_start
        return start + (1 - start) * 0.5 * (1 - math.cos(math.pi * t))
    t = (progress - pct_start) / (1 - pct_start)
    return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * t))


def lr_factor(scheduler: str, progress: float, warmup_fraction: float = 0.05) -> float:
    if scheduler == "cosine":
        return cosine_with_warmup(progress, warmup_fraction)
    if scheduler == "onecycle":
        return one_cycle(progress)
    raise ValueError(f"unknown scheduler {scheduler!r}; choose cosine or onecycle")
