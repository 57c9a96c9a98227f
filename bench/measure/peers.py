"""Peer detectors from Hugging Face, built offline from their configs with **random weights**
(speed, memory, parameters and FLOPs do not need trained weights), measured with the same method
as our variants: one fresh process per measurement, warm-up, fixed shapes, device sync, repeats.

Peers (``PEERS``; a variant's preset ``peer:<name>``, its overrides are config keyword arguments,
nested dicts for ``backbone_config`` / ``text_config`` / ``vision_config``):

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

import gc
from dataclasses import dataclass, field

PEER_PREFIX = "peer:"


@dataclass(frozen=True)
class PeerSpec:
    name: str
    description: str
    default_params_m: float  # parameters (millions) of the default config, for the report's context


PEERS = {
    "grounding-dino-t": PeerSpec("grounding-dino-t", "transformers GroundingDinoForObjectDetection("
                                 "GroundingDinoConfig()): Swin-T + BERT-base, 900 queries", 172.0),
    "owlvit-b32": PeerSpec("owlvit-b32", "transformers OwlViTForObjectDetection(OwlViTConfig()): CLIP ViT-B/32 "
                           "+ CLIP text", 153.0),
}


def peer_name(preset: str) -> str:
    name = preset[len(PEER_PREFIX):] if preset.startswith(PEER_PREFIX) else preset
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; choose one of {sorted(PEERS)}")
    return name


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


def build_peer(preset: str, overrides: dict | None, image_size: int, device, seed: int = 0):
    """Build a peer with random weights on ``device`` in eval mode. No download happens."""
    import torch

    torch.manual_seed(seed)
    name = peer_name(preset)
    builder = {"grounding-dino-t": _grounding_dino, "owlvit-b32": _owlvit}[name]
    return builder(dict(overrides or {}), int(image_size)).to(device).eval()


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
    if getattr(model.config, "model_type", "") == "grounding-dino":
        return {"image_backbone": model.model.backbone, "text_encoder": model.model.text_backbone}
    return {"image_backbone": model.owlvit.vision_model, "text_encoder": model.owlvit.text_model}


def _precision(spec: dict, device) -> str:
    from bench.common import resolve_precision

    p = spec.get("precision", "auto")
    return p if p in ("fp32", "fp16", "bf16") else resolve_precision(p, device)


def _forward(model, inputs: dict, precision: str, device):
    import torch

    from bench.common import autocast

    def forward():
        with torch.inference_mode(), autocast(precision, device):
            return model(**inputs)

    return forward


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

    def rows(self) -> list[dict]:
        extra = {"image_size": self.image_size, "prompt_tokens": self.prompt_tokens, "weights": "random"}
        out = [{"metric": "params/total", "value": self.total, "unit": "params", "extra": extra},
               {"metric": "params/trainable", "value": self.trainable, "unit": "params", "extra": extra}]
        for name, n in self.components.items():
            out.append({"metric": f"params/{name}", "value": n, "unit": "params", "extra": extra})
        if self.flops_per_image is not None:
            out.append({"metric": "flops/per_image", "value": self.flops_per_image, "unit": self.unit,
                        "extra": {**extra, "uncounted_ops": self.uncounted_ops, "batch_size": 1}})
        return out


def measure_static(spec: dict) -> PeerStaticResult:
    """spec: preset ("peer:<name>"), overrides, image_size, prompt_tokens (None: our prompt), flops (bool)."""
    import torch

    from bench.measure.flops import count_flops
    from bench.measure.params import count

    size = int(spec.get("image_size", 224))
    model = build_peer(spec["preset"], spec.get("overrides"), size, "cpu")
    total, trainable = count(model)
    comps = {k: count(m)[0] for k, m in _components(model).items()}
    inputs = make_peer_inputs(model, 1, size, "cpu", spec.get("prompt_tokens"))
    res = PeerStaticResult(peer_name(spec["preset"]), size, int(inputs["input_ids"].shape[1]), total, trainable, comps)
    if spec.get("flops", True):
        def fwd():
            with torch.no_grad():
                model(**inputs)

        flops, _, by_op, uncounted = count_flops(fwd)
        res.flops_per_image, res.by_op, res.uncounted_ops = float(flops), by_op, uncounted
    return res


def measure_speed(spec: dict):
    """Inference FPS and latency at batch 1 and ``infer_batch`` (forward only; the peers' own
    post-processing is not timed). spec: preset, overrides, image_size, infer_batch, warmup, iters,
    precision ("auto": as our optimized preset: fp16 autocast on CUDA, fp32 on the CPU)."""
    import torch

    from bench.common import resolve_device
    from bench.measure.speed import SpeedResult, time_calls

    device = resolve_device(spec.get("device"))
    size = int(spec.get("image_size", 224))
    warmup, iters = int(spec.get("warmup", 1)), int(spec.get("iters", 3))
    batch = int(spec.get("infer_batch", 8))
    precision = _precision(spec, device)
    model = build_peer(spec["preset"], spec.get("overrides"), size, device)
    result = SpeedResult(0, batch, precision, torch.get_num_threads())
    for b, key in ((1, "b1"), (batch, "bN")):
        inputs = make_peer_inputs(model, b, size, device, spec.get("prompt_tokens"))
        result.infer_s[key] = time_calls(_forward(model, inputs, precision, device), device, warmup, iters)
    return result


def measure_memory(spec: dict):
    """Peak memory (MiB) of one inference forward at ``batch_size``, as ``memory.measure_infer`` does
    for ours: CUDA allocator peaks, or on the CPU the RSS peak of this fresh process."""
    import torch

    from bench.common import resolve_device
    from bench.measure.memory import MemoryResult, MiB, current_rss, peak_of_call

    device = resolve_device(spec.get("device"))
    cuda = device.type == "cuda"
    size = int(spec.get("image_size", 224))
    batch = int(spec.get("batch_size") or 8)
    precision = _precision(spec, device)
    import transformers.models.grounding_dino.modeling_grounding_dino  # noqa: F401  (imports are not the model)
    import transformers.models.owlvit.modeling_owlvit  # noqa: F401

    prompt_ids()  # tokenizer loaded before the baseline reading
    gc.collect()
    before_model = torch.cuda.memory_allocated(device) if cuda else current_rss()
    model = build_peer(spec["preset"], spec.get("overrides"), size, device)
    inputs = make_peer_inputs(model, batch, size, device, spec.get("prompt_tokens"))
    fn = _forward(model, inputs, precision, device)
    gc.collect()
    before_step, peak, reserved, method = peak_of_call(fn, device, float(spec.get("poll_s", 0.001)))
    return MemoryResult("infer", batch, (peak - before_model) / MiB, max(peak - before_step, 0) / MiB, method,
                        str(device), precision, reserved,
                        {"before_model_mib": before_model / MiB, "before_step_mib": before_step / MiB,
                         "peak_mib": peak / MiB})
