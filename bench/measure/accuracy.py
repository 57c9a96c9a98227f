"""Accuracy after a time-budgeted training run, and time to a target vocabulary mAP50 ("Training Time" row).

Rows: ``accuracy/<split>/<metric>`` for both protocols (grounding ``mAP50``, ``R@1``, ...; vocabulary
``vocab_mAP50``, ``absent_fp_rate``, ``present_recall``) on val and novel, and ``accuracy/time_to_target_s``.

Calls the trainer, ``ovd.training.run.train_and_evaluate`` (imported lazily: the suite must still
run its other measurements where the trainer is missing). Units: mAP/R@1 as fractions in [0, 1];
seconds of training wall time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.measure.specs import AccuracySpec
from bench.results import Row, measured


@dataclass
class AccuracyResult:
    """``final``: {"val/mAP50", "val/mAP", "val/R@1", "novel/mAP50", "novel/R@1", ...} fractions of the
    grounding protocol, and of the vocabulary protocol (``ovd.training.vocabulary_eval``):
    "val/vocab_mAP50", "val/vocab_mAP", "val/absent_fp_rate", "val/present_recall", "novel/..." ;
    ``curve``: the trainer's evaluations over time; ``time_to_target_s``: training seconds until
    val/vocab_mAP50 >= ``target_map50`` (None: not reached within ``budget_s``)."""

    budget_s: float
    target_map50: float | None
    final: dict = field(default_factory=dict)
    curve: list = field(default_factory=list)
    time_to_target_s: float | None = None
    train_seconds: float = 0.0
    steps: int = 0
    not_measured: str | None = None  # why no accuracy was measured (a factory without predict)

    def rows(self) -> list[Row]:
        if self.not_measured:
            return [measured("accuracy/val/mAP50", None, "fraction", status="not-measured", error=self.not_measured)]
        extra = {"budget_s": self.budget_s, "target_map50": self.target_map50, "steps": self.steps,
                 "train_seconds": self.train_seconds}
        out = []
        for key, value in self.final.items():
            if isinstance(value, (int, float)):
                out.append(measured(f"accuracy/{key}", float(value), "fraction", extra))
        tt_extra = {**extra, "curve": self.curve}
        if self.time_to_target_s is None:
            out.append(measured("accuracy/time_to_target_s", None, "s", tt_extra, status="not-measured",
                                error=f"target val/vocab_mAP50 >= {self.target_map50} not reached in {self.budget_s:.0f} s"))
        else:
            out.append(measured("accuracy/time_to_target_s", float(self.time_to_target_s), "s", tt_extra))
        return out


def measure(spec: AccuracySpec | dict) -> AccuracyResult:
    """Preset models: train for ``budget_s`` and evaluate (the trainer). Factory / hub models are not
    trained here; their accuracy is reported as not measured (see the row's error for why)."""
    from bench.common import build_config, resolve_device

    spec = AccuracySpec.coerce(spec)
    if not spec.is_preset:
        return AccuracyResult(spec.budget_s, spec.target_map50, not_measured=_why_not(spec))

    try:
        from ovd.training.run import train_and_evaluate
    except ImportError as err:
        raise RuntimeError(f"the trainer (ovd.training.run.train_and_evaluate) is not available: {err}") from err
    device = resolve_device(spec.device)
    config = build_config(spec.source.preset, spec.source.overrides, device)
    budget = float(spec.budget_s)
    target = spec.target_map50
    out = train_and_evaluate(config, data_root=spec.data_root, max_time_s=budget,
                             eval_every_s=float(spec.eval_every_s or max(budget / 4, 10)),
                             seed=spec.seed, target_map50=target, progress=False)
    return AccuracyResult(budget, target, dict(out.get("final", {})), list(out.get("curve", [])),
                          out.get("time_to_target_s"), float(out.get("train_seconds", 0.0)), int(out.get("steps", 0)))


def _why_not(spec: AccuracySpec) -> str:
    """The reason a non-preset model's accuracy row says "not measured"."""
    from bench.sources import build_under_test

    mut = build_under_test(spec.source, "cpu", 1)
    if mut.predict is None:
        return ("not measured: the factory's ModelUnderTest has no predict(pil_images, prompts); return one to "
                "be scored on the built-in data")
    return ("not measured: scoring a factory's predict() on the built-in data is not implemented yet "
            "(the suite trains and scores ovd presets only)")
