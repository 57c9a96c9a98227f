"""Variants as data: a name, a model source (``bench.sources``) and what it is compared against.
Add one in a line to ``VARIANTS``.

The ablation ladder changes one factor at a time from the baseline; leave-one-out removes one
factor at a time from the optimized model. Every variant names its ``reference`` (what its
effect is measured against). ``"amp"`` as ``train.precision`` means bf16 autocast on the CPU and
fp16 on CUDA (resolved by ``bench.common.build_config``).

Switches reach one component each (``ovd.config``): ``fusion.attention`` the fusion layers'
image-to-text cross-attention, ``box_head.attention`` the decoder's self- and cross-attention;
``fusion.mlp`` the fusion layers' feed-forward MLP, ``box_head.mlp`` every MLP of the box head
(decoder FFNs, query-position, box and proposal-box MLPs). A rung without a component prefix changes both.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError
from .sources import (
    FactorySource,
    HubSource,
    ModelSource,
    PresetSource,
    SourceError,
    parse_model_arg,
    source_from_dict,
)

#: The baseline's switches (everything the seed changes except sizes), applied to the optimized sizes
#: for the "config shrink" rung. Sizes come from the optimized preset.
BASELINE_SWITCHES = {
    "fusion.attention": "mha", "box_head.attention": "mha", "fusion.mlp": "sequential", "box_head.mlp": "sequential",
    "similarity": "matmul",
    "train.precision": "32-true", "train.scheduler": "cosine", "train.betas": [0.9, 0.999], "train.eps": 1e-8,
    "train.num_workers": 0, "train.pin_memory": False, "train.persistent_workers": False,
}
#: The optimized preset's switches, applied to the baseline's sizes (leave-one-out "shrink").
OPTIMIZED_SWITCHES = {
    "fusion.attention": "sdpa", "box_head.attention": "sdpa", "fusion.mlp": "torchvision",
    "box_head.mlp": "torchvision", "similarity": "torchmetrics", "train.precision": "auto",
    "train.scheduler": "onecycle", "train.betas": [0.9, 0.98], "train.eps": 1e-6,
}
GROUPS = ("main", "ladder", "leave-one-out", "peer", "user", "machine")

_FUSION_ATTN = "the fusion layers' image-to-text cross-attention"
_HEAD_ATTN = "the decoder's self- and cross-attention"
_FUSION_MLP = "the fusion layers' feed-forward MLP"
_HEAD_MLP = "the box head's MLPs (decoder FFNs, query-position, box and proposal-box MLPs)"


@dataclass(frozen=True)
class Variant:
    name: str
    source: ModelSource  # where the model comes from (bench.sources)
    description: str = ""
    reference: str | None = None  # variant this one is compared against (None: a root)
    group: str = "main"  # one of GROUPS
    accuracy_only: bool = False  # only meaningful for training runs (scheduler, query init)
    preset_batch: bool = False  # speed/memory at the config's train.batch_size instead of the profile's

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise UsageError(f"a variant needs a non-empty name, got {self.name!r}")
        if isinstance(self.source, dict):
            object.__setattr__(self, "source", source_from_dict(self.source))
        if not isinstance(self.source, (PresetSource, HubSource, FactorySource)):
            raise UsageError(f"variant {self.name}: source must be a bench.sources source, got {self.source!r}")
        if self.group not in GROUPS:
            raise UsageError(f"variant {self.name}: group {self.group!r} not in {GROUPS}")

    @property
    def preset(self) -> str | None:
        """The ovd preset of a preset source (None for other sources)."""
        return self.source.preset if isinstance(self.source, PresetSource) else None

    @property
    def overrides(self) -> dict:
        """The dotted-key overrides of a preset source ({} for other sources)."""
        return dict(self.source.overrides) if isinstance(self.source, PresetSource) else {}

    def to_dict(self) -> dict:
        """JSON form (results.json ``variants`` and the worker's spec). ``preset``/``overrides`` mirror a
        preset source for readers that predate ``source`` (None / {} for other sources)."""
        return {"name": self.name, "source": self.source.to_dict(), "description": self.description,
                "reference": self.reference, "group": self.group, "accuracy_only": self.accuracy_only,
                "preset_batch": self.preset_batch, "preset": self.preset, "overrides": self.overrides}

    @classmethod
    def from_dict(cls, data: dict) -> Variant:
        fields = {k: v for k, v in data.items() if k not in ("preset", "overrides")}
        return cls(**fields)


def preset_variant(name: str, preset: str, overrides: dict | None = None, description: str = "",
                   reference: str | None = None, group: str = "main", **kw) -> Variant:
    """A variant built from an ovd preset plus dotted-key overrides (the common case)."""
    return Variant(name, PresetSource(preset, dict(overrides or {})), description, reference, group, **kw)


def _both(key: str, value) -> dict:
    return {f"fusion.{key}": value, f"box_head.{key}": value}


def _family(base: str, opt: str, suffix: str, batch32_workers: int) -> list[Variant]:
    b, o = f"baseline{suffix}", f"optimized{suffix}"
    ladder = [
        ("shrink", opt, BASELINE_SWITCHES, "config shrink: the optimized preset's sizes (backbone, out_dim, "
         "1 fusion layer x 4 heads, 20 queries, 3 decoder layers) with the baseline's switches", {}),
        ("mha-fast", base, _both("attention", "mha-fast"), "nn.MultiheadAttention with need_weights=False "
         f"(reaches SDPA inside) in {_FUSION_ATTN} and {_HEAD_ATTN}", {}),
        ("sdpa", base, _both("attention", "sdpa"), "own q/k/v projections + F.scaled_dot_product_attention in "
         f"{_FUSION_ATTN} and {_HEAD_ATTN}", {}),
        ("fusion-sdpa", base, {"fusion.attention": "sdpa"}, "own q/k/v projections + F.scaled_dot_product_attention "
         f"in {_FUSION_ATTN} only (decoder keeps nn.MultiheadAttention)", {}),
        ("head-sdpa", base, {"box_head.attention": "sdpa"}, "own q/k/v projections + "
         f"F.scaled_dot_product_attention in {_HEAD_ATTN} only (fusion keeps nn.MultiheadAttention)", {}),
        ("tv-mlp", base, _both("mlp", "torchvision"), f"torchvision.ops.MLP instead of nn.Sequential in {_FUSION_MLP} "
         f"and {_HEAD_MLP} (a control: same layers and math)", {}),
        ("fusion-tv-mlp", base, {"fusion.mlp": "torchvision"}, f"torchvision.ops.MLP in {_FUSION_MLP} only "
         "(a control)", {}),
        ("head-tv-mlp", base, {"box_head.mlp": "torchvision"}, f"torchvision.ops.MLP in {_HEAD_MLP} only "
         "(a control)", {}),
        ("tm-sim", base, {"similarity": "torchmetrics"}, "torchmetrics pairwise_cosine_similarity instead of "
         "normalize + bmm", {}),
        ("amp", base, {"train.precision": "amp"}, "autocast: bf16 on the CPU, fp16 (+GradScaler) on CUDA", {}),
        ("batch32", base, {"train.batch_size": 32, "train.pin_memory": True, "train.num_workers": batch32_workers,
                           "train.persistent_workers": True},
         "batch 32 with pin_memory and persistent workers (speed/memory at batch 32; loader flags only act in "
         "the accuracy runs)", {"preset_batch": True}),
        ("adamw", base, {"train.betas": [0.9, 0.98], "train.eps": 1e-6}, "AdamW betas (0.9, 0.98), eps 1e-6 "
         "(accuracy runs)", {"accuracy_only": True}),
        ("onecycle", base, {"train.scheduler": "onecycle"}, "OneCycleLR instead of cosine (accuracy runs)",
         {"accuracy_only": True}),
        ("learned-queries", base, {"box_head.query_init": "learned"}, "DETR-style learned queries instead of "
         "language-guided query selection (accuracy runs)", {"accuracy_only": True}),
    ]
    out = [
        preset_variant(b, base, {}, f"the {base} preset", None, "main"),
        preset_variant(o, opt, {}, f"the {opt} preset", b, "main"),
    ]
    for key, preset, ov, desc, kw in ladder:
        out.append(preset_variant(f"{b}+{key}", preset, dict(ov), desc, b, "ladder", **kw))
    loo = [
        ("shrink", base, OPTIMIZED_SWITCHES, "optimized switches on the baseline's sizes", {}),
        ("sdpa", opt, _both("attention", "mha"), f"nn.MultiheadAttention (need_weights=True) instead of SDPA in "
         f"{_FUSION_ATTN} and {_HEAD_ATTN}", {}),
        ("fusion-sdpa", opt, {"fusion.attention": "mha"}, "nn.MultiheadAttention (need_weights=True) instead of "
         f"SDPA in {_FUSION_ATTN} only", {}),
        ("head-sdpa", opt, {"box_head.attention": "mha"}, "nn.MultiheadAttention (need_weights=True) instead of "
         f"SDPA in {_HEAD_ATTN} only", {}),
        ("tv-mlp", opt, _both("mlp", "sequential"), f"nn.Sequential instead of torchvision.ops.MLP in {_FUSION_MLP} "
         f"and {_HEAD_MLP}", {}),
        ("tm-sim", opt, {"similarity": "matmul"}, "normalize + bmm instead of torchmetrics", {}),
        ("batch32", opt, {"train.batch_size": 8, "train.pin_memory": False, "train.num_workers": 0,
                          "train.persistent_workers": False}, "batch 8, no pin_memory/persistent workers",
         {"preset_batch": True}),
        ("onecycle", opt, {"train.scheduler": "cosine"}, "cosine schedule instead of OneCycleLR (accuracy runs)",
         {"accuracy_only": True}),
    ]
    for key, preset, ov, desc, kw in loo:
        out.append(preset_variant(f"{o}-{key}", preset, dict(ov), desc, o, "leave-one-out", **kw))
    return out


VARIANTS: dict[str, Variant] = {
    v.name: v for v in _family("baseline", "optimized", "", 2) + _family("baseline-tiny", "optimized-tiny", "-tiny", 2)
}
#: Peers (issue 5): Hugging Face detectors built from their configs with random weights, through the
#: factory mechanism (``bench.measure.peers``; ``kwargs`` are config keyword arguments). Group "peer":
#: no reference, no ladder.
PEER_VARIANTS = {
    "peer:grounding-dino-t": Variant("peer:grounding-dino-t", FactorySource("bench.measure.peers:grounding_dino_t"),
                                     "Grounding DINO-T (transformers, GroundingDinoConfig() defaults, random weights)",
                                     None, "peer"),
    "peer:owlvit-b32": Variant("peer:owlvit-b32", FactorySource("bench.measure.peers:owlvit_b32"),
                               "OWL-ViT B/32 (transformers, OwlViTConfig() defaults at the matched input size, "
                               "random weights)", None, "peer"),
}
VARIANTS.update(PEER_VARIANTS)
#: bf16 autocast arms (the ladder's "amp" is fp16 on CUDA): the GPU run measures both precisions.
VARIANTS["baseline+bf16"] = preset_variant("baseline+bf16", "baseline", {"train.precision": "bf16-mixed"},
                                           "bf16 autocast instead of fp32", "baseline", "ladder")
VARIANTS["optimized+bf16"] = preset_variant("optimized+bf16", "optimized", {"train.precision": "bf16-mixed"},
                                            "bf16 autocast instead of the preset's auto (fp16 on CUDA, bf16 on a "
                                            "CPU with AVX512-BF16 or AMX, fp32 on other CPUs)", "optimized", "ladder")
#: Training arms of the GPU campaign (issue 9), each against the optimized preset: AdamW's fused kernel and a
#: compiled training step (bf16 autocast is optimized+bf16 above), then all three together.
VARIANTS["optimized+fused-adamw"] = preset_variant(
    "optimized+fused-adamw", "optimized", {"train.optimizer_impl": "fused"}, "AdamW(fused=True): one kernel for "
    "the whole parameter update (same math)", "optimized", "ladder")
VARIANTS["optimized+compile-train"] = preset_variant(
    "optimized+compile-train", "optimized", {"train.compile": True}, "torch.compile of the forward inside the "
    "training step (compilation in the warm-up steps)", "optimized", "ladder")
VARIANTS["optimized+train-arms"] = preset_variant(
    "optimized+train-arms", "optimized", {"train.precision": "bf16-mixed", "train.optimizer_impl": "fused",
                                          "train.compile": True},
    "bf16 autocast + fused AdamW + compiled training step", "optimized", "ladder")
# Add a variant in one line, e.g.:
# VARIANTS["baseline+queries50"] = preset_variant("baseline+queries50", "baseline", {"box_head.num_queries": 50}, "...", "baseline", "ladder")


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise UsageError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    return VARIANTS[name]


#: Row labels a ``--model`` name may not take: the roofline's rows (``bench.runner.MACHINE``) and the peers' prefix.
RESERVED_NAME = "machine"
PEER_PREFIX = "peer:"


def register_user_model(text: str) -> str:
    """``ovd-bench run --model NAME=package.module:function``: add a "user" variant whose model comes
    from that factory (``build(device) -> bench.sources.ModelUnderTest``); returns NAME."""
    name, source = parse_model_arg(text)
    if name == RESERVED_NAME or name.startswith(PEER_PREFIX):
        raise SourceError(f"--model {text!r}: {name!r} is reserved (the roofline's rows are {RESERVED_NAME!r}, peers "
                          f"are {PEER_PREFIX!r}...); choose another name")
    if name in VARIANTS and VARIANTS[name].source != source:
        raise SourceError(f"--model {text!r}: {name!r} is already a variant; choose another name")
    VARIANTS[name] = Variant(name, source, f"user model ({source.describe()})", None, "user")
    return name


def ladder_of(root: str) -> list[Variant]:
    """The root's one-factor ladder (variants whose reference is ``root`` and group is ladder)."""
    return [v for v in VARIANTS.values() if v.reference == root and v.group == "ladder"]


def leave_one_out_of(root: str) -> list[Variant]:
    return [v for v in VARIANTS.values() if v.reference == root and v.group == "leave-one-out"]


def add_user_models(profile, names: list[str]):
    """The profile with the user models ``names`` (see :func:`register_user_model`) in its params/FLOPs,
    memory, speed and accuracy lists: measured with the same protocol as our variants (accuracy rows say
    "not measured" with the reason for a factory; see ``bench.measure.accuracy``)."""
    import dataclasses

    def plus(group: tuple) -> tuple:
        return tuple(group) + tuple(n for n in names if n not in group)

    return dataclasses.replace(profile, static_variants=plus(profile.static_variants),
                               memory_variants=plus(profile.memory_variants),
                               speed_variants=plus(profile.speed_variants),
                               accuracy_variants=plus(profile.accuracy_variants))
