"""Where a variant's model comes from: one small typed source per kind, and the "model under test".

Kinds (``kind`` in the JSON form the worker receives):

- :class:`PresetSource`: an ``ovd`` preset plus dotted-key overrides (``ovd.get_config``).
- :class:`HubSource`: a Hugging Face ``transformers`` detector class, built from its config with random
  weights (``config`` holds the config's keyword arguments) or loaded from a local checkpoint folder
  (``path``; nothing is downloaded).
- :class:`FactorySource`: any importable ``package.module:function`` with the contract
  ``build(device, **kwargs) -> ModelUnderTest`` (torchbench-like). The peers are two such factories
  (``bench.measure.peers``); ``ovd-bench run --model NAME=pkg.mod:fn`` adds one.

A source is a value: validated on construction, ``to_dict()`` / :func:`source_from_dict` for JSON.
Loading (imports of torch, transformers or the user's package) happens only in :func:`build_under_test`.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError

#: ``package.module:function`` (dotted attribute after the colon allowed: ``pkg.mod:Class.build``).
_TARGET = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_NAME = re.compile(r"^[A-Za-z0-9][\w.+:-]*$")


#: The folder ``ovd-bench run --model`` was started from: the worker processes put it first on ``sys.path``, ahead of
#: their own working folder (the clone), so they import the factory the command line checked (bench.worker).
CALLER_PATH_ENV = "OVD_BENCH_CALLER_PATH"


class SourceError(UsageError):
    """A model source that cannot be used (malformed, unknown kind, factory not importable, bad return)."""


def _check_dict(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise SourceError(f"{owner}: {name} must be a dict, got {type(value).__name__}")


@dataclass(frozen=True)
class PresetSource:
    preset: str  # an ovd preset name (ovd.config presets), e.g. "optimized-tiny"
    overrides: dict = field(default_factory=dict)  # dotted config keys -> values, e.g. {"fusion.attention": "mha"}
    kind: str = field(default="preset", init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.preset, str) or not self.preset:
            raise SourceError(f"preset source: preset must be a non-empty string, got {self.preset!r}")
        _check_dict("preset source", "overrides", self.overrides)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "preset": self.preset, "overrides": dict(self.overrides)}

    def describe(self) -> str:
        ov = ", ".join(f"{k}={v}" for k, v in self.overrides.items())
        return f"preset {self.preset}" + (f" + {ov}" if ov else "")


@dataclass(frozen=True)
class HubSource:
    model_class: str  # a transformers class name, e.g. "OwlViTForObjectDetection"
    path: str | None = None  # local checkpoint folder (from_pretrained, offline); None: random weights from config
    config: dict = field(default_factory=dict)  # config keyword arguments (random-weight build only)
    kind: str = field(default="hub", init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.model_class, str) or not re.fullmatch(r"[A-Za-z_]\w*", self.model_class):
            raise SourceError(f"hub source: model_class must be a transformers class name such as "
                              f"'OwlViTForObjectDetection', got {self.model_class!r}")
        if self.path is not None and (not isinstance(self.path, str) or not self.path):
            raise SourceError(f"hub source: path must be a local checkpoint folder or None, got {self.path!r}")
        _check_dict("hub source", "config", self.config)
        if self.path is not None and self.config:
            raise SourceError("hub source: give either path (a checkpoint) or config (random weights), not both")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "model_class": self.model_class, "path": self.path, "config": dict(self.config)}

    def describe(self) -> str:
        return f"transformers {self.model_class}" + (f" from {self.path}" if self.path else " (random weights)")


@dataclass(frozen=True)
class FactorySource:
    target: str  # "package.module:function"; build(device, **kwargs) -> ModelUnderTest
    kwargs: dict = field(default_factory=dict)  # extra keyword arguments for the factory (JSON values)
    kind: str = field(default="factory", init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.target, str) or not _TARGET.match(self.target):
            raise SourceError(f"factory source: {self.target!r} is not 'package.module:function' "
                              "(e.g. my_pkg.detector:build)")
        _check_dict("factory source", "kwargs", self.kwargs)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "target": self.target, "kwargs": dict(self.kwargs)}

    def describe(self) -> str:
        return f"factory {self.target}"


ModelSource = PresetSource | HubSource | FactorySource
_KINDS = {"preset": PresetSource, "hub": HubSource, "factory": FactorySource}


def source_from_dict(data: Any) -> ModelSource:
    """The inverse of ``source.to_dict()``; a source object passes through unchanged."""
    if isinstance(data, tuple(_KINDS.values())):
        return data
    if not isinstance(data, Mapping):
        raise SourceError(f"a model source must be a dict with a 'kind', got {type(data).__name__}")
    kind = data.get("kind")
    if kind not in _KINDS:
        raise SourceError(f"unknown model source kind {kind!r}; choose one of {sorted(_KINDS)}")
    cls = _KINDS[kind]
    fields = {k: v for k, v in data.items() if k != "kind"}
    allowed = set(inspect.signature(cls).parameters)
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise SourceError(f"{kind} source: unknown keys {unknown}; accepted: {sorted(allowed)}")
    return cls(**fields)


def parse_model_arg(text: str) -> tuple[str, FactorySource]:
    """``--model NAME=package.module:function`` -> (NAME, FactorySource)."""
    name, sep, target = (text or "").partition("=")
    name, target = name.strip(), target.strip()
    if not sep or not name or not target:
        raise SourceError(f"--model {text!r}: expected NAME=package.module:function, e.g. mine=my_pkg.det:build")
    if not _NAME.match(name):
        raise SourceError(f"--model {text!r}: the name {name!r} may hold letters, digits and . _ + : - only")
    return name, FactorySource(target)


# -- the model under test ------------------------------------------------------------------------

@dataclass
class ModelUnderTest:
    """What a factory returns: ``build(device) -> ModelUnderTest``.

    module: the ``torch.nn.Module`` measured (parameters, FLOPs, memory, speed), already on the device.
    example_inputs: one batch, a tuple of positional or a dict of keyword arguments of ``module``'s forward;
      tensors on the device, batch in dim 0 of the first tensor (e.g. images (B, 3, H, W)).
    predict: optional ``predict(pil_images, prompts) -> [{"boxes": (K, 4) xyxy pixels, "scores": (K,),
      "labels": [phrase, ...]}]`` (one dict per image; prompts: per image a list of phrases). With it the
      suite measures accuracy on its built-in data; without it accuracy is "not measured".
    loss: optional ``loss(module, example_inputs) -> scalar tensor``: with it the suite measures
      training speed and memory (backward + AdamW step); without it they are "not measured".
    """

    module: Any
    example_inputs: Any
    predict: Callable | None = None
    loss: Callable | None = None

    def __post_init__(self) -> None:
        import torch

        if not isinstance(self.module, torch.nn.Module):
            raise SourceError(f"ModelUnderTest.module must be a torch.nn.Module, got {type(self.module).__name__}")
        if isinstance(self.example_inputs, list):
            self.example_inputs = tuple(self.example_inputs)
        if not isinstance(self.example_inputs, (tuple, Mapping)):
            raise SourceError("ModelUnderTest.example_inputs must be a tuple of positional or a dict of keyword "
                              f"arguments, got {type(self.example_inputs).__name__}")
        for name in ("predict", "loss"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise SourceError(f"ModelUnderTest.{name} must be callable or None, got {type(value).__name__}")
        if self.batch_size is None:
            raise SourceError("ModelUnderTest.example_inputs holds no tensor: the batch size is read from the "
                              "first tensor's dim 0")

    def _tensors(self) -> list:
        import torch

        values = self.example_inputs.values() if isinstance(self.example_inputs, Mapping) else self.example_inputs
        return [v for v in values if isinstance(v, torch.Tensor)]

    @property
    def batch_size(self) -> int | None:
        tensors = self._tensors()
        return int(tensors[0].shape[0]) if tensors and tensors[0].dim() else None

    def forward(self):
        """``module(*example_inputs)`` or ``module(**example_inputs)``."""
        if isinstance(self.example_inputs, Mapping):
            return self.module(**self.example_inputs)
        return self.module(*self.example_inputs)


def resolve_factory(target: str) -> Callable:
    """Import ``package.module:function``; a clear :class:`SourceError` when it is not there."""
    FactorySource(target)  # validates the form
    mod_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as err:
        raise SourceError(f"factory {target}: cannot import module {mod_name!r} ({err}); is it on PYTHONPATH "
                          "or installed?") from err
    except Exception as err:  # found, but importing it fails: a SyntaxError, or its own code raising
        import traceback

        frames = traceback.extract_tb(err.__traceback__)
        where = "" if isinstance(err, SyntaxError) or not frames else f" at {frames[-1].filename}:{frames[-1].lineno}"
        raise SourceError(f"factory {target}: importing module {mod_name!r} failed{where}: "
                          f"{type(err).__name__}: {err}; fix the module, then run again") from err
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise SourceError(f"factory {target}: {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise SourceError(f"factory {target}: {attr!r} is not callable")
    return obj


def _accepts(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def build_under_test(source: ModelSource, device, batch_size: int | None = None, **kwargs) -> ModelUnderTest:
    """Build a factory or hub source's model and inputs on ``device``.

    ``batch_size`` (and any ``kwargs``, e.g. ``image_size``) are passed to a factory only when its
    signature accepts them; otherwise the factory's own example batch is used (read
    ``ModelUnderTest.batch_size``). Preset sources are built by ``bench.common`` instead."""
    if isinstance(source, PresetSource):
        raise SourceError("a preset source is built with bench.common.build_model, not as a ModelUnderTest")
    if isinstance(source, HubSource):
        from .measure.peers import hub_model_under_test

        return hub_model_under_test(source, device, batch_size or 1, **kwargs)
    fn = resolve_factory(source.target)
    call_kw = dict(source.kwargs)
    for key, value in {"batch_size": batch_size, **kwargs}.items():
        if value is not None and _accepts(fn, key):
            call_kw[key] = value
    out = fn(device, **call_kw)
    if not isinstance(out, ModelUnderTest):
        raise SourceError(f"factory {source.target} returned {type(out).__name__}; it must return "
                          "bench.sources.ModelUnderTest(module, example_inputs, predict=None, loss=None)")
    return out
