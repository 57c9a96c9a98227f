"""Parameter counts per component (unit: parameters, i.e. scalar weights)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.measure.specs import ParamsSpec
from bench.results import Row, measured

COMPONENTS = ("image_encoder", "text_encoder", "fusion", "box_head")


@dataclass
class ParamsResult:
    """Counts in parameters. ``components[name] = {"total": n, "trainable": n}``; ``image_backbone``
    is the timm backbone alone (the seed's "50M -> 28M" refers to it; None for a model without one, such
    as a user's factory model)."""

    total: int
    trainable: int
    components: dict = field(default_factory=dict)
    image_backbone: int | None = None

    def rows(self) -> list[Row]:
        out = [measured("params/total", self.total, "params"), measured("params/trainable", self.trainable, "params")]
        if self.image_backbone is not None:
            out.append(measured("params/image_backbone", self.image_backbone, "params"))
        for name, c in self.components.items():
            out.append(measured(f"params/{name}", c["total"], "params"))
            out.append(measured(f"params/{name}_trainable", c["trainable"], "params"))
        return out


def count(module) -> tuple[int, int]:
    """(total, trainable) parameter counts of a module."""
    total = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return total, trainable


def params_of_model(model) -> ParamsResult:
    comps = {}
    for name in COMPONENTS:
        total, trainable = count(getattr(model, name))
        comps[name] = {"total": total, "trainable": trainable}
    total, trainable = count(model)
    return ParamsResult(total, trainable, comps, count(model.image_encoder.backbone)[0])


def measure(spec: ParamsSpec | dict) -> ParamsResult:
    """Counts of a preset model per component, or of a factory's / hub model's module as a whole."""
    spec = ParamsSpec.coerce(spec)
    if not spec.is_preset:
        from bench.sources import build_under_test

        total, trainable = count(build_under_test(spec.source, "cpu").module)
        return ParamsResult(total, trainable)
    from bench.common import build_model

    model = build_model(spec.source.preset, spec.source.overrides, "cpu")
    return params_of_model(model)
