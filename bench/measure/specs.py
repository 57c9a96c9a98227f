"""Typed measurement specs: one frozen dataclass per measurement, validated on construction.

The worker hands each measurement a JSON dict; ``Spec.from_dict`` turns it into the spec (unknown keys
and bad values raise :class:`SpecError`, naming the key and what is accepted). Every measurement
function accepts either and calls ``XSpec.coerce(spec)`` first.

The model comes from ``source`` (``bench.sources``); a dict carrying ``preset`` + ``overrides`` instead
(the worker's older form) means a preset source.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..sources import ModelSource, PresetSource, source_from_dict

#: Keys the worker sends to every measurement; specs without a model drop them.
_MODEL_KEYS = ("source", "preset", "overrides")
DEVICES = (None, "auto", "cpu", "cuda")


class SpecError(UsageError):
    """A measurement spec with an unknown key or a bad value."""


def _positive_int(owner: str, name: str, value: Any, allow_none: bool = False, minimum: int = 1) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{owner}: {name} must be an int >= {minimum}" + (" or None" if allow_none else "")
                        + f", got {value!r}")


def _positive_float(owner: str, name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise SpecError(f"{owner}: {name} must be a number > 0" + (" or None" if allow_none else "")
                        + f", got {value!r}")


def _choice(owner: str, name: str, value: Any, choices) -> None:
    if value not in choices:
        raise SpecError(f"{owner}: {name}={value!r}; choose one of {list(choices)}")


@dataclass(frozen=True, kw_only=True)
class Spec:
    """Base of every spec: the device ("auto"/None = CUDA when available, else CPU, or "cuda:N")."""

    device: str | None = None

    def __post_init__(self) -> None:
        if self.device not in DEVICES and not (isinstance(self.device, str) and self.device.startswith("cuda:")):
            raise SpecError(f"{self._owner()}: device={self.device!r}; choose one of auto, cpu, cuda, cuda:N")

    @classmethod
    def _owner(cls) -> str:
        return cls.__name__

    @classmethod
    def from_dict(cls, data: Mapping) -> Spec:
        if not isinstance(data, Mapping):
            raise SpecError(f"{cls.__name__}: expected a dict, got {type(data).__name__}")
        data = dict(data)
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        if "source" in names:
            data["source"] = _source_of(cls.__name__, data)
        else:
            for key in _MODEL_KEYS:
                data.pop(key, None)
        unknown = sorted(set(data) - names)
        if unknown:
            raise SpecError(f"{cls.__name__}: unknown keys {unknown}; accepted: {sorted(names)}")
        for key, value in list(data.items()):
            if isinstance(value, list) and key in _TUPLE_FIELDS:
                data[key] = tuple(value)
        return cls(**data)

    @classmethod
    def coerce(cls, spec: Any):
        """A spec of this class from itself or from the worker's dict."""
        if isinstance(spec, cls):
            return spec
        return cls.from_dict(spec)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        if "source" in out:
            out["source"] = self.source.to_dict()  # type: ignore[attr-defined]
        return out


_TUPLE_FIELDS = {"skip", "sizes", "dtypes", "arms", "emit"}


def _source_of(owner: str, data: dict) -> ModelSource:
    source, preset, overrides = data.pop("source", None), data.pop("preset", None), data.pop("overrides", None)
    if source is not None:
        return source_from_dict(source)
    if preset is not None:
        return PresetSource(preset, dict(overrides or {}))
    raise SpecError(f"{owner}: no model: give 'source' (a bench.sources dict) or 'preset' (+ 'overrides')")


@dataclass(frozen=True, kw_only=True)
class ModelSpec(Spec):
    """A spec that builds a model from ``source``."""

    source: ModelSource  # where the model comes from (bench.sources)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.source, Mapping):
            object.__setattr__(self, "source", source_from_dict(self.source))
        source_from_dict(self.source)  # raises for anything that is not a source

    @property
    def is_preset(self) -> bool:
        return isinstance(self.source, PresetSource)


@dataclass(frozen=True, kw_only=True)
class ParamsSpec(ModelSpec):
    pass


@dataclass(frozen=True, kw_only=True)
class FlopsSpec(ModelSpec):
    batch_size: int = 1  # images per forward; FLOPs are reported per image

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_int(self._owner(), "batch_size", self.batch_size)


@dataclass(frozen=True, kw_only=True)
class MemorySpec(ModelSpec):
    batch_size: int | None = None  # None: the preset's train.batch_size (preset) / the factory's own batch
    warmup: int = 0  # untimed calls before the measured one (0 on the CPU: see bench.measure.memory)
    poll_s: float = 0.001  # RSS polling period on the CPU (seconds)

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_int(self._owner(), "batch_size", self.batch_size, allow_none=True)
        _positive_int(self._owner(), "warmup", self.warmup, minimum=0)
        _positive_float(self._owner(), "poll_s", self.poll_s)


SPEED_PARTS = ("train", "infer", "breakdown")


@dataclass(frozen=True, kw_only=True)
class SpeedSpec(ModelSpec):
    train_batch: int | None = None  # None: the preset's train.batch_size
    infer_batch: int = 8  # the larger inference batch (batch 1 is always timed)
    warmup: int = 1
    iters: int = 3
    skip: tuple = ()  # subset of SPEED_PARTS

    def __post_init__(self) -> None:
        super().__post_init__()
        o = self._owner()
        _positive_int(o, "train_batch", self.train_batch, allow_none=True)
        _positive_int(o, "infer_batch", self.infer_batch)
        _positive_int(o, "warmup", self.warmup, minimum=0)
        _positive_int(o, "iters", self.iters)
        for part in self.skip:
            _choice(o, "skip", part, SPEED_PARTS)


@dataclass(frozen=True, kw_only=True)
class AccuracySpec(ModelSpec):
    budget_s: float = 120.0  # training seconds (preset sources)
    eval_every_s: float | None = None  # None: max(budget / 4, 10)
    target_map50: float | None = None
    seed: int = 0
    data_root: str | None = None
    max_images: int = 64  # evaluation images for a factory's predict (built-in synthetic val split)
    checkpoint_out: str | None = None  # write the trained weights here (the arms' accuracy is judged on them)

    def __post_init__(self) -> None:
        super().__post_init__()
        o = self._owner()
        _positive_float(o, "budget_s", self.budget_s)
        _positive_float(o, "eval_every_s", self.eval_every_s, allow_none=True)
        if self.target_map50 is not None and not (isinstance(self.target_map50, (int, float))
                                                  and 0 < self.target_map50 <= 1):
            raise SpecError(f"{o}: target_map50 must be a fraction in (0, 1] or None, got {self.target_map50!r}")
        _positive_int(o, "seed", self.seed, minimum=0)
        _positive_int(o, "max_images", self.max_images)


@dataclass(frozen=True, kw_only=True)
class TrainLoopSpec(ModelSpec):
    batch_size: int | None = None  # None: the preset's train.batch_size
    steps: int = 6  # timed training steps
    warmup_steps: int = 1  # untimed steps first (loader start-up, first-call allocations)
    data_root: str | None = None  # None: the built-in synthetic set

    def __post_init__(self) -> None:
        super().__post_init__()
        o = self._owner()
        _positive_int(o, "batch_size", self.batch_size, allow_none=True)
        _positive_int(o, "steps", self.steps)
        _positive_int(o, "warmup_steps", self.warmup_steps, minimum=0)


@dataclass(frozen=True, kw_only=True)
class DataParallelSpec(ModelSpec):
    """One configuration of the data-parallel scaling measurement (``bench.measure.dataparallel``): ``ovd train``
    with ``processes`` DDP processes (devices) of ``threads_per_process`` torch threads each."""

    processes: int = 1  # DDP processes = devices (1: strategy auto, one process)
    threads_per_process: int = 1  # OMP_NUM_THREADS / torch threads of every process
    batch_size: int | None = None  # per process (DDP's batch is per device); None: the preset's train.batch_size
    steps: int = 4  # timed training steps
    warmup_steps: int = 1  # untimed steps first (process-group set-up, first-call allocations)
    data_root: str | None = None  # None: the built-in synthetic set
    timeout_s: float = 480.0  # the `ovd train` subprocess (below the runner's per-task timeout)

    def __post_init__(self) -> None:
        super().__post_init__()
        o = self._owner()
        if not self.is_preset:
            raise SpecError(f"{o}: data-parallel scaling runs `ovd train`, which needs a preset source, got "
                            f"{self.source.describe()}")
        _positive_int(o, "processes", self.processes)
        _positive_int(o, "threads_per_process", self.threads_per_process)
        _positive_int(o, "batch_size", self.batch_size, allow_none=True)
        _positive_int(o, "steps", self.steps)
        _positive_int(o, "warmup_steps", self.warmup_steps, minimum=0)
        _positive_float(o, "timeout_s", self.timeout_s)


PEER_PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass(frozen=True, kw_only=True)
class PeerSpec(ModelSpec):
    """Spec of the peer measurements (a factory or hub source at a matched input)."""

    image_size: int = 224  # pixels per side
    prompt_tokens: int | None = None  # None: our fixed prompt's token count
    flops: bool = True  # peer_static: also count FLOPs
    precision: str = "auto"  # "auto": as our optimized preset (fp16 on CUDA, bf16 on a bf16-native CPU, else fp32)
    infer_batch: int = 8  # peer_speed
    batch_size: int | None = None  # peer_memory (None: 8)
    warmup: int = 1
    iters: int = 3
    poll_s: float = 0.001

    def __post_init__(self) -> None:
        super().__post_init__()
        o = self._owner()
        _positive_int(o, "image_size", self.image_size)
        _positive_int(o, "prompt_tokens", self.prompt_tokens, allow_none=True)
        _choice(o, "precision", self.precision, PEER_PRECISIONS)
        _positive_int(o, "infer_batch", self.infer_batch)
        _positive_int(o, "batch_size", self.batch_size, allow_none=True)
        _positive_int(o, "warmup", self.warmup, minimum=0)
        _positive_int(o, "iters", self.iters)
        _positive_float(o, "poll_s", self.poll_s)


ROOFLINE_DTYPES = ("fp32", "tf32", "bf16", "fp16", "int8")


@dataclass(frozen=True, kw_only=True)
class RooflineSpec(Spec):
    sizes: tuple | None = None  # square matmul sizes (None: the device's defaults)
    dtypes: tuple | None = None  # subset of ROOFLINE_DTYPES (None: fp32 + the native reduced ones)
    min_run_time: float = 0.3  # seconds of timed calls per size
    onnxruntime: bool = True  # CPU: also time fp32 through onnxruntime's GEMM

    def __post_init__(self) -> None:
        super().__post_init__()
        o = self._owner()
        for n in self.sizes or ():
            _positive_int(o, "sizes[]", n)
        for d in self.dtypes or ():
            _choice(o, "dtypes[]", d, ROOFLINE_DTYPES)
        _positive_float(o, "min_run_time", self.min_run_time)


SCALING_AXES = ("batch", "image_size", "prompt_tokens", "num_queries")


@dataclass(frozen=True, kw_only=True)
class ScalingSpec(ModelSpec):
    axis: str  # one of SCALING_AXES
    value: int  # the axis' value at this point
    batch_size: int = 1  # the batch of the non-batch axes
    warmup: int = 1
    iters: int = 2
    memory: bool = True  # also probe the first forward's peak memory

    def __post_init__(self) -> None:
        super().__post_init__()
        o = self._owner()
        if not self.is_preset:
            raise SpecError(f"{o}: scaling curves need a preset source (its config is varied), got "
                            f"{self.source.describe()}")
        _choice(o, "axis", self.axis, SCALING_AXES)
        _positive_int(o, "value", self.value)
        _positive_int(o, "batch_size", self.batch_size)
        _positive_int(o, "warmup", self.warmup, minimum=0)
        _positive_int(o, "iters", self.iters)


@dataclass(frozen=True, kw_only=True)
class ArmsSpec(ModelSpec):
    arms: tuple | None = None  # arm names (bench.measure.arms.ARMS); None: all
    emit: tuple | None = None  # arms whose rows to report (None: the reference + every arm given)
    batch_size: int = 8
    warmup: int = 1
    rounds: int = 2
    iters: int = 2
    # Inductor cache folder of the compile arms, shared by an arm's processes (the runner names one in the run
    # folder): None = a fresh one per process, every set-up a cold compile. A process that finds it empty compiles
    # cold and fills it; a later one reuses it, and its set-up is reported apart, as the warm set-up.
    compile_cache: str | None = None
    compile_cache_reset: bool = False  # empty compile_cache first (the arm's first process: its set-up is cold)

    def __post_init__(self) -> None:
        super().__post_init__()
        o = self._owner()
        if not self.is_preset:
            raise SpecError(f"{o}: the inference arms need a preset source, got {self.source.describe()}")
        if self.compile_cache_reset and self.compile_cache is None:
            raise SpecError(f"{o}: compile_cache_reset needs a compile_cache folder")
        _positive_int(o, "batch_size", self.batch_size)
        _positive_int(o, "warmup", self.warmup, minimum=0)
        _positive_int(o, "rounds", self.rounds)
        _positive_int(o, "iters", self.iters)


__all__ = ["Spec", "ModelSpec", "SpecError", "ParamsSpec", "FlopsSpec", "MemorySpec", "SpeedSpec", "AccuracySpec",
           "PeerSpec", "RooflineSpec", "ScalingSpec", "ArmsSpec", "field"]
