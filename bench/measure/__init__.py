"""One module per measurement. Each exposes ``measure(spec) -> Result`` (a dataclass with ``rows() ->
list[bench.results.Row]``, built with ``bench.results.measured``); none prints. ``spec`` is the
measurement's typed spec (``bench.measure.specs``) or the worker's dict (``XSpec.from_dict``); its model
comes from ``spec.source`` (``bench.sources``). Times come from ``bench.measure.timing.time_calls``,
quantiles from ``bench.results.quantile``, memory peaks from ``bench.measure.memory.measure_peak``.
``MEASUREMENTS`` maps the names the runner uses to those functions."""

from __future__ import annotations

import importlib

from bench.errors import UsageError

#: measurement name -> (module, function). Add a measurement here.
MEASUREMENTS = {
    "params": ("bench.measure.params", "measure"),
    "flops": ("bench.measure.flops", "measure"),
    "memory_train": ("bench.measure.memory", "measure_train"),
    "memory_infer": ("bench.measure.memory", "measure_infer"),
    "speed": ("bench.measure.speed", "measure"),
    "train_loop": ("bench.measure.train_loop", "measure"),
    "accuracy": ("bench.measure.accuracy", "measure"),
    # issue 5 extras
    "peer_static": ("bench.measure.peers", "measure_static"),
    "peer_speed": ("bench.measure.peers", "measure_speed"),
    "peer_memory": ("bench.measure.peers", "measure_memory"),
    "roofline": ("bench.measure.roofline", "measure"),
    "scaling": ("bench.measure.scaling", "measure"),
    "arms": ("bench.measure.arms", "measure"),
    # issue 14: data-parallel scaling of `ovd train`
    "dataparallel": ("bench.measure.dataparallel", "measure"),
    # issue 9: saturating batch sweep, the backbone ceiling
    "sweep": ("bench.measure.sweep", "measure"),
    "ceiling": ("bench.measure.ceiling", "measure"),
    # issue 11: inference arms judged by accuracy on a trained checkpoint
    "arms_accuracy": ("bench.measure.arms_accuracy", "measure"),
}


def get_measurement(name: str):
    if name not in MEASUREMENTS:
        raise UsageError(f"unknown measurement {name!r}; choose one of {sorted(MEASUREMENTS)}")
    module, func = MEASUREMENTS[name]
    return getattr(importlib.import_module(module), func)
