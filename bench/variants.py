"""Variants as data: a preset plus dotted-key overrides. Add one in a line to ``VARIANTS``.

The ablation ladder changes one factor at a time from the baseline; leave-one-out removes one
factor at a time from the optimized model. Every variant names its ``reference`` (what its
effect is measured against). ``"amp"`` as ``train.precision`` means bf16 autocast on the CPU and
fp16 on CUDA (resolved by ``bench.common.build_config``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

#: The baseline's switches (everything the seed changes except sizes), applied to the optimized sizes
#: for the "config shrink" rung. Sizes come from the optimized preset.
BASELINE_SWITCHES = {
    "fusion.attention": "mha", "box_head.mlp": "sequential", "similarity": "matmul",
    "train.precision": "32-true", "train.scheduler": "cosine", "train.betas": [0.9, 0.999], "train.eps": 1e-8,
    "train.num_workers": 0, "train.pin_memory": False, "train.persistent_workers": False,
}


@dataclass(frozen=True)
class Variant:
    name: str
    preset: str
    overrides: dict = field(default_factory=dict)
    description: str = ""
    reference: str | None = None  # variant this one is compared against (None: a root)
    group: str = "main"  # "main", "ladder", "leave-one-out"
    accuracy_only: bool = False  # only meaningful for training runs (scheduler, query init)
    preset_batch: bool = False  # speed/memory at the config's train.batch_size instead of the profile's

    def to_dict(self) -> dict:
        return asdict(self)


def _family(base: str, opt: str, suffix: str, batch32_workers: int) -> list[Variant]:
    b, o = f"baseline{suffix}", f"optimized{suffix}"
    ladder = [
        ("shrink", opt, BASELINE_SWITCHES, "config shrink: the optimized preset's sizes (backbone, out_dim, "
         "1 fusion layer x 4 heads, 20 queries, 3 decoder layers) with the baseline's switches", {}),
        ("mha-fast", base, {"fusion.attention": "mha-fast"}, "nn.MultiheadAttention with need_weights=False "
         "(reaches SDPA inside)", {}),
        ("sdpa", base, {"fusion.attention": "sdpa"}, "own q/k/v projections + F.scaled_dot_product_attention", {}),
        ("tv-mlp", base, {"box_head.mlp": "torchvision"}, "torchvision.ops.MLP instead of nn.Sequential "
         "(a control: same layers and math)", {}),
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
        Variant(b, base, {}, f"the {base} preset", None, "main"),
        Variant(o, opt, {}, f"the {opt} preset", b, "main"),
    ]
    for key, preset, ov, desc, kw in ladder:
        out.append(Variant(f"{b}+{key}", preset, dict(ov), desc, b, "ladder", **kw))
    loo = [
        ("shrink", base, {"fusion.attention": "sdpa", "box_head.mlp": "torchvision", "similarity": "torchmetrics",
                          "train.precision": "auto", "train.scheduler": "onecycle", "train.betas": [0.9, 0.98],
                          "train.eps": 1e-6}, "optimized switches on the baseline's sizes", {}),
        ("sdpa", opt, {"fusion.attention": "mha"}, "nn.MultiheadAttention (need_weights=True) instead of SDPA", {}),
        ("tv-mlp", opt, {"box_head.mlp": "sequential"}, "nn.Sequential MLP instead of torchvision's", {}),
        ("tm-sim", opt, {"similarity": "matmul"}, "normalize + bmm instead of torchmetrics", {}),
        ("batch32", opt, {"train.batch_size": 8, "train.pin_memory": False, "train.num_workers": 0,
                          "train.persistent_workers": False}, "batch 8, no pin_memory/persistent workers",
         {"preset_batch": True}),
        ("onecycle", opt, {"train.scheduler": "cosine"}, "cosine schedule instead of OneCycleLR (accuracy runs)",
         {"accuracy_only": True}),
    ]
    for key, preset, ov, desc, kw in loo:
        out.append(Variant(f"{o}-{key}", preset, dict(ov), desc, o, "leave-one-out", **kw))
    return out


VARIANTS: dict[str, Variant] = {
    v.name: v for v in _family("baseline", "optimized", "", 2) + _family("baseline-tiny", "optimized-tiny", "-tiny", 2)
}
#: Peers (issue 5): Hugging Face detectors built from their configs with random weights; ``overrides``
#: are config keyword arguments (see ``bench.measure.peers``). Group "peer": no reference, no ladder.
PEER_VARIANTS = {
    "peer:grounding-dino-t": Variant("peer:grounding-dino-t", "peer:grounding-dino-t", {},
                                     "Grounding DINO-T (transformers, GroundingDinoConfig() defaults, random weights)",
                                     None, "peer"),
    "peer:owlvit-b32": Variant("peer:owlvit-b32", "peer:owlvit-b32", {},
                               "OWL-ViT B/32 (transformers, OwlViTConfig() defaults at the matched input size, "
                               "random weights)", None, "peer"),
}
VARIANTS.update(PEER_VARIANTS)
#: The machine itself (the roofline's matmul peak is measured under this name; its preset is unused).
VARIANTS["machine"] = Variant("machine", "optimized", {}, "the machine: matrix-multiply peak", None, "machine")
#: bf16 autocast arms (the ladder's "amp" is fp16 on CUDA): the GPU run measures both precisions.
VARIANTS["baseline+bf16"] = Variant("baseline+bf16", "baseline", {"train.precision": "bf16-mixed"},
                                    "bf16 autocast instead of fp32", "baseline", "ladder")
VARIANTS["optimized+bf16"] = Variant("optimized+bf16", "optimized", {"train.precision": "bf16-mixed"},
                                     "bf16 autocast instead of the preset's auto (fp16 on CUDA, fp32 on CPU)",
                                     "optimized", "ladder")
# Add a variant in one line, e.g.:
# VARIANTS["baseline+queries50"] = Variant("baseline+queries50", "baseline", {"box_head.num_queries": 50}, "...", "baseline", "ladder")


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    return VARIANTS[name]


def ladder_of(root: str) -> list[Variant]:
    """The root's one-factor ladder (variants whose reference is ``root`` and group is ladder)."""
    return [v for v in VARIANTS.values() if v.reference == root and v.group == "ladder"]


def leave_one_out_of(root: str) -> list[Variant]:
    return [v for v in VARIANTS.values() if v.reference == root and v.group == "leave-one-out"]
