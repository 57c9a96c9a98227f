"""Accuracy after a time-budgeted training run, and time to a target mAP50 ("Training Time" row).

Calls the trainer, ``ovd.training.run.train_and_evaluate`` (imported lazily: the suite must still
run its other measurements where the trainer is missing). Units: mAP/R@1 as fractions in [0, 1];
seconds of training wall time.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AccuracyResult:
    """``final``: {"val/mAP50", "val/mAP", "val/R@1", "novel/mAP50", "novel/R@1", ...} fractions;
    ``curve``: the trainer's evaluations over time; ``time_to_target_s``: training seconds until
    val/mAP50 >= ``target_map50`` (None: not reached within ``budget_s``)."""

    budget_s: float
    target_map50: float | None
    final: dict = field(default_factory=dict)
    curve: list = field(default_factory=list)
    time_to_target_s: float | None = None
    train_seconds: float = 0.0
    steps: int = 0

    def rows(self) -> list[dict]:
        extra = {"budget_s": self.budget_s, "target_map50": self.target_map50, "steps": self.steps,
                 "train_seconds": self.train_seconds}
        out = []
        for key, value in self.final.items():
            if isinstance(value, (int, float)):
                out.append({"metric": f"accuracy/{key}", "value": float(value), "unit": "fraction", "extra": extra})
        tt = {"metric": "accuracy/time_to_target_s", "unit": "s", "extra": {**extra, "curve": self.curve}}
        if self.time_to_target_s is None:
            tt.update(value=None, status="not-measured",
                      error=f"target val/mAP50 >= {self.target_map50} not reached in {self.budget_s:.0f} s")
        else:
            tt["value"] = float(self.time_to_target_s)
        out.append(tt)
        return out


def measure(spec: dict) -> AccuracyResult:
    """spec: preset, overrides, budget_s, eval_every_s, target_map50, seed, data_root (optional)."""
    from bench.common import build_config, resolve_device

    try:
        from ovd.training.run import train_and_evaluate
    except ImportError as err:
        raise RuntimeError(f"the trainer (ovd.training.run.train_and_evaluate) is not available: {err}") from err
    device = resolve_device(spec.get("device"))
    config = build_config(spec["preset"], spec.get("overrides"), device)
    budget = float(spec.get("budget_s", 120))
    target = spec.get("target_map50")
    out = train_and_evaluate(config, data_root=spec.get("data_root"), max_time_s=budget,
                             eval_every_s=float(spec.get("eval_every_s", max(budget / 4, 10))),
                             seed=int(spec.get("seed", 0)), target_map50=target, progress=False)
    return AccuracyResult(budget, target, dict(out.get("final", {})), list(out.get("curve", [])),
                          out.get("time_to_target_s"), float(out.get("train_seconds", 0.0)), int(out.get("steps", 0)))
