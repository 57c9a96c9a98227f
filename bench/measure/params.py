"""Parameter counts per component (unit: parameters, i.e. scalar weights)."""

from __future__ import annotations

from dataclasses import dataclass, field

COMPONENTS = ("image_encoder", "text_encoder", "fusion", "box_head")


@dataclass
class ParamsResult:
    """Counts in parameters. ``components[name] = {"total": n, "trainable": n}``; ``image_backbone``
    is the timm backbone alone (the seed's "50M -> 28M" refers to it)."""

    total: int
    trainable: int
    components: dict = field(default_factory=dict)
    image_backbone: int = 0

    def rows(self) -> list[dict]:
        out = [
            {"metric": "params/total", "value": self.total, "unit": "params"},
            {"metric": "params/trainable", "value": self.trainable, "unit": "params"},
            {"metric": "params/image_backbone", "value": self.image_backbone, "unit": "params"},
        ]
        for name, c in self.components.items():
            out.append({"metric": f"params/{name}", "value": c["total"], "unit": "params"})
            out.append({"metric": f"params/{name}_trainable", "value": c["trainable"], "unit": "params"})
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


def measure(spec: dict) -> ParamsResult:
    from bench.common import build_model

    model = build_model(spec["preset"], spec.get("overrides"), "cpu")
    return params_of_model(model)
