"""End-to-end training throughput: ``ovd train``'s loop (Lightning Trainer, data module with its loader and
collator, the shared ``TrainStep``) for a fixed number of steps on the built-in data, beside the step-only
``train/samples_per_s`` of ``bench.measure.speed`` (model + optimizer on a fixed batch). The gap between the
two is what the data path and the trainer cost.

Unit: samples/s (training samples per second of wall time, loader included, warm-up steps excluded).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.measure.specs import SpecError, TrainLoopSpec
from bench.results import Row, measured


@dataclass
class TrainLoopResult:
    batch_size: int
    steps: int
    seconds: float
    samples: int
    precision: str
    threads: int
    num_workers: int

    def rows(self) -> list[Row]:
        extra = {"batch_size": self.batch_size, "steps": self.steps, "seconds": self.seconds,
                 "precision": self.precision, "threads": self.threads, "num_workers": self.num_workers}
        return [measured("train_loop/samples_per_s", self.samples / self.seconds, "samples/s", extra),
                measured("train_loop/step_ms", 1e3 * self.seconds / self.steps, "ms", extra)]


def measure(spec: TrainLoopSpec | dict) -> TrainLoopResult:
    import torch

    from bench.common import build_config, resolve_device, resolve_precision
    from ovd.training.run import time_training_loop

    spec = TrainLoopSpec.coerce(spec)
    if not spec.is_preset:
        raise SpecError("train_loop measures ovd's own trainer; a factory or hub model has no `ovd train` loop")
    device = resolve_device(spec.device)
    overrides = dict(spec.source.overrides)
    if spec.batch_size is not None:
        overrides["train.batch_size"] = spec.batch_size
    config = build_config(spec.source.preset, overrides, device)
    out = time_training_loop(config, steps=spec.steps, warmup_steps=spec.warmup_steps, data_root=spec.data_root,
                             accelerator="gpu" if device.type == "cuda" else "cpu")
    return TrainLoopResult(config.train.batch_size, spec.steps, out["seconds"], out["samples"],
                           resolve_precision(config.train.precision, device), torch.get_num_threads(),
                           config.train.num_workers)
