"""Peer detectors from Hugging Face, built offline from their configs with **random weights**
(speed, memory, parameters and FLOPs do not need trained weights), measured with the same method
as our variants: one fresh process per measurement, warm-up, fixed shapes, device sync, repeats.

Peers (``PEERS``) are factories (``bench.sources.FactorySource``: :func:`grounding_dino_t`,
:func:`owlvit_b32`, each ``build(device, batch_size, image_size, prompt_tokens, **config) ->
ModelUnderTest``); the source's ``kwargs`` are config keyword arguments, nested dicts for
``backbone_config`` / ``text_config`` / ``vision_config``. A :class:`bench.sources.HubSource` is built
here too (:func:`hub_model_under_test`):

- ``grounding-dino-t``: ``GroundingDinoForObjectDetection(GroundingDinoConfig())``: a Swin-T
  backbone (transformers' own Swin, never downloaded), BERT-base text encoder built from its config,
  6+6 deformable encoder/decoder layers, 900 queries (172M parameters).
- ``owlvit-b32``: ``OwlViTForObjectDetection(OwlViTConfig())``: CLIP ViT-B/32 + CLIP text encoder
  (153M parameters). Its vision tower is built at the matched input size (``vision_config.image_size``;
  OWL-ViT's own default is 768 px), so both peers see the same pixels as our model.

Inputs: ``pixel_values`` (B, 3, S, S) and the same prompt as ours (``bench.common.CAPTION``, tokenized
by our bundled BERT-uncased tokenizer, so the token count matches), one text query per image for
OWL-ViT. Rows use the same metric names as ours (``params/total``, ``flops/per_image``,
``infer/fps_b1``, ``memory/infer_total``...), so the report puts them in one table.

Units: parameters; FLOPs = 2*MACs (``bench.measure.flops.UNIT``; Grounding DINO's deformable
attention samples with ``grid_sampler_2d``, which FlopCounterMode does not count: listed in
``uncounted_ops``); images/s; ms; MiB.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.measure.specs import PeerSpec
from bench.results import Row, measured


@dataclass(frozen=True)
class PeerInfo:
    name: str
    target: str  # the factory, "bench.measure.peers:<function>"
    description: str
    default_params_m: float  # parameters (millions) of the default config, for the report's context


PEERS = {
    "grounding-dino-t": PeerInfo("grounding-dino-t", "bench.measure.peers:grounding_dino_t",
                                 "transformers GroundingDinoForObjectDetection(GroundingDinoConfig()): Swin-T + "
                                 "BERT-base, 900 queries", 172.0),
    "owlvit-b32": PeerInfo("owlvit-b32", "bench.measure.peers:owlvit_b32", "transformers OwlViTForObjectDetection("
                           "OwlViTConfig()): CLIP ViT-B/32 + CLIP text", 153.0),
}


def _grounding_dino(overrides: dict, image_size: int):
    from transformers import BertConfig, GroundingDinoConfig, GroundingDinoForObjectDetection, SwinConfig

    kw = dict(overrides)
    backbone = kw.pop("backbone_config", None)
    text = kw.pop("text_config", None)
    # transformers' Swin (no timm, nothing pretrained): builds offline.
    bb = SwinConfig(**{"out_indices": [2, 3, 4], "image_size": image_size, **(backbone or {})})
    cfg = GroundingDinoConfig(backbone_config=bb, text_config=BertConfig(**(text or {})), **kw)
    return GroundingDinoForObjectDetection(cfg)


def _owlvit(overrides: dict, image_size: int):
    from transformers import OwlViTConfig, OwlViTForObjectDetection

    kw = dict(overrides)
    vision = {"image_size": image_size, **(kw.pop("vision_config", None) or {})}
    text = kw.pop("text_config", None) or {}
    return OwlViTForObjectDetection(OwlViTConfig(text_config=text, vision_config=vision, **kw))


def _under_test(model, device, batch_size: int, image_size: int, prompt_tokens: int | None, seed: int):
    from bench.sources import ModelUnderTest

    model = model.to(device).eval()
    return ModelUnderTest(model, make_peer_inputs(model, batch_size, image_size, device, prompt_tokens, seed))


def grounding_dino_t(device, batch_size: int = 1, image_size: int = 224, prompt_tokens: int | None = None,
                     seed: int = 0, **config):
    """Factory: Grounding DINO-T with random weights (``config``: GroundingDinoConfig keyword arguments)
    and its inputs at ``batch_size`` x ``image_size`` with our prompt. No download happens."""
    import torch

    torch.manual_seed(seed)
    return _under_test(_grounding_dino(config, int(image_size)), device, batch_size, image_size, prompt_tokens, seed)


def owlvit_b32(device, batch_size: int = 1, image_size: int = 224, prompt_tokens: int | None = None,
               seed: int = 0, **config):
    """Factory: OWL-ViT B/32 with random weights, its vision tower at ``image_size`` (``config``:
    OwlViTConfig keyword arguments), and its inputs (one text query per image)."""
    import torch

    torch.manual_seed(seed)
    return _under_test(_owlvit(config, int(image_size)), device, batch_size, image_size, prompt_tokens, seed)


def hub_model_under_test(source, device, batch_size: int = 1, image_size: int = 224,
                         prompt_tokens: int | None = None, seed: int = 0):
    """A :class:`bench.sources.HubSource`: ``transformers.<model_class>`` from a local checkpoint folder
    (offline) or from its config class with random weights; inputs as the peers' (pixel_values,
    input_ids, attention_mask)."""
    import torch
    import transformers

    from bench.sources import SourceError

    cls = getattr(transformers, source.model_class, None)
    if cls is None:
        raise SourceError(f"hub source: transformers has no class {source.model_class!r}")
    torch.manual_seed(seed)
    if source.path is not None:
        model = cls.from_pretrained(source.path, local_files_only=True)
    else:
        model = cls(cls.config_class(**source.config))
    return _under_test(model, device, batch_size, image_size, prompt_tokens, seed)


def prompt_ids(prompt_tokens: int | None = None):
    """(1, T) input_ids and attention_mask of our fixed prompt from the bundled BERT-uncased tokenizer;
    ``prompt_tokens`` pads (with repeated words) or truncates it to exactly that many tokens."""
    from bench.common import CAPTION
    from ovd.models.text_encoder import load_tokenizer

    tok = load_tokenizer()
    if prompt_tokens is None:
        enc = tok([CAPTION], return_tensors="pt")
    else:
        words = CAPTION.split()
        text = " ".join(words[i % len(words)] for i in range(max(int(prompt_tokens), 1)))
        enc = tok([text], truncation=True, max_length=int(prompt_tokens), return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def make_peer_inputs(model, batch_size: int, image_size: int, device, prompt_tokens: int | None = None,
                     seed: int = 0) -> dict:
    """Keyword inputs of a peer's forward: pixel_values (B, 3, S, S), input_ids/attention_mask (B, T)
    (OWL-ViT: one query per image, so also (B, T))."""
    import torch

    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(batch_size, 3, image_size, image_size, generator=g)
    ids, mask = prompt_ids(prompt_tokens)
    ids, mask = ids.expand(batch_size, -1).contiguous(), mask.expand(batch_size, -1).contiguous()
    if getattr(model.config, "model_type", "") == "owlvit":
        limit = model.config.text_config.max_position_embeddings
        if ids.shape[1] > limit:
            raise ValueError(f"OWL-ViT's text encoder takes at most {limit} tokens; the prompt has {ids.shape[1]}")
        vocab = model.config.text_config.vocab_size
        ids = ids.clamp(max=vocab - 1)
    inputs = {"pixel_values": pixels, "input_ids": ids, "attention_mask": mask}
    if getattr(model.config, "model_type", "") == "grounding-dino":
        inputs["token_type_ids"] = torch.zeros_like(ids)
        inputs["pixel_mask"] = torch.ones(batch_size, image_size, image_size, dtype=torch.long)
    return {k: v.to(device) for k, v in inputs.items()}


def _components(model) -> dict:
    """name -> module for the parameter split (image backbone, text encoder)."""
    kind = getattr(getattr(model, "config", None), "model_type", "")
    if kind == "grounding-dino":
        return {"image_backbone": model.model.backbone, "text_encoder": model.model.text_backbone}
    if kind == "owlvit":
        return {"image_backbone": model.owlvit.vision_model, "text_encoder": model.owlvit.text_model}
    return {}  # another model: no known split


def _precision(spec: PeerSpec, device) -> str:
    from bench.common import resolve_precision

    p = spec.precision
    return p if p in ("fp32", "fp16", "bf16") else resolve_precision(p, device)


def _build(spec: PeerSpec, device, batch_size: int):
    from bench.sources import build_under_test

    return build_under_test(spec.source, device, batch_size, image_size=spec.image_size,
                            prompt_tokens=spec.prompt_tokens)


@dataclass
class PeerStaticResult:
    """Parameters (count) and forward FLOPs per image (FLOPs = 2*MACs) of a peer at ``image_size``
    with a ``prompt_tokens``-token prompt; ``uncounted_ops``: compute ops without a formula -> calls."""

    peer: str
    image_size: int
    prompt_tokens: int
    total: int
    trainable: int
    components: dict = field(default_factory=dict)
    flops_per_image: float | None = None
    by_op: dict = field(default_factory=dict)
    uncounted_ops: dict = field(default_factory=dict)
    unit: str = "FLOPs (2*MACs)"

    def rows(self) -> list[Row]:
        extra = {"image_size": self.image_size, "prompt_tokens": self.prompt_tokens, "weights": "random"}
        out = [measured("params/total", self.total, "params", extra),
               measured("params/trainable", self.trainable, "params", extra)]
        for name, n in self.components.items():
            out.append(measured(f"params/{name}", n, "params", extra))
        if self.flops_per_image is not None:
            out.append(measured("flops/per_image", self.flops_per_image, self.unit,
                                {**extra, "uncounted_ops": self.uncounted_ops, "batch_size": 1}))
        return out


def measure_static(spec: PeerSpec | dict) -> PeerStaticResult:
    """Parameters and (``spec.flops``) forward FLOPs per image at batch 1."""
    import torch

    from bench.measure.flops import count_flops
    from bench.measure.params import count

    spec = PeerSpec.coerce(spec)
    mut = _build(spec, "cpu", 1)
    model = mut.module
    total, trainable = count(model)
    comps = {k: count(m)[0] for k, m in _components(model).items()}
    ids = mut.example_inputs.get("input_ids") if isinstance(mut.example_inputs, dict) else None
    res = PeerStaticResult(spec.source.describe(), spec.image_size, int(ids.shape[1]) if ids is not None else 0,
                           total, trainable, comps)
    if spec.flops:
        def fwd():
            with torch.no_grad():
                mut.forward()

        flops, _, by_op, uncounted = count_flops(fwd)
        res.flops_per_image, res.by_op, res.uncounted_ops = float(flops), by_op, uncounted
    return res


def measure_speed(spec: PeerSpec | dict):
    """Inference FPS and latency at batch 1 and ``infer_batch`` (forward only; the peers' own
    post-processing is not timed), at ``precision`` ("auto": as our optimized preset: fp16 autocast on
    CUDA, bf16 on a CPU with AVX512-BF16 or AMX, else fp32)."""
    import torch

    from bench.common import resolve_device
    from bench.measure.speed import SpeedResult
    from bench.measure.timing import time_calls
    from bench.measure.under_test import make_forward

    spec = PeerSpec.coerce(spec)
    device = resolve_device(spec.device)
    precision = _precision(spec, device)
    result = SpeedResult(0, spec.infer_batch, precision, torch.get_num_threads())
    for b, key in ((1, "b1"), (spec.infer_batch, "bN")):
        mut = _build(spec, device, b)
        result.infer_s[key] = time_calls(make_forward(mut, precision, device), device, spec.warmup, spec.iters)
        del mut
    return result


def measure_memory(spec: PeerSpec | dict):
    """Peak memory (MiB) of one inference forward at ``batch_size`` (default 8), with the same set-up as
    ``memory.measure_infer`` (``bench.measure.memory.measure_peak``)."""
    from bench.common import resolve_device
    from bench.measure.memory import MemoryResult, measure_peak
    from bench.measure.under_test import make_forward

    spec = PeerSpec.coerce(spec)
    device = resolve_device(spec.device)
    precision = _precision(spec, device)
    batch = spec.batch_size or 8
    import transformers.models.grounding_dino.modeling_grounding_dino  # noqa: F401  (imports are not the model)
    import transformers.models.owlvit.modeling_owlvit  # noqa: F401

    prompt_ids()  # tokenizer loaded before the baseline reading

    def build():
        mut = _build(spec, device, batch)
        return make_forward(mut, precision, device), {"batch_size": mut.batch_size}

    reading = measure_peak(build, device, 0, spec.poll_s)
    return MemoryResult.of("infer", reading, device, precision)
