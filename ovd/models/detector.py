"""The open-vocabulary detector: image encoder + text encoder + fusion + box head.

Baseline and optimized are this one class with different :class:`~ovd.config.DetectorConfig`
values. Config is translated to explicit arguments here, at the edge (``from_config``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import torch
from torch import nn

from ..boxes import normalized_cxcywh_to_pixel_xyxy
from ..config import DetectorConfig
from ..data.positive_map import phrase_token_mask
from ..processor import InputProcessor, join_phrases
from .box_head import BoxHead
from .fusion import Fusion
from .image_encoder import ImageEncoder
from .text_encoder import TextEncoder


class OpenVocabDetector(nn.Module):
    def __init__(self, image_encoder: ImageEncoder, text_encoder: TextEncoder, fusion: Fusion,
                 box_head: BoxHead, config: DetectorConfig) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.fusion = fusion
        self.box_head = box_head
        self.config = config

    @classmethod
    def from_config(cls, config: DetectorConfig) -> OpenVocabDetector:
        d = config.out_dim
        return cls(
            image_encoder=ImageEncoder(config.image.backbone, d, config.image.image_size,
                                       config.image.num_feature_levels, config.image.pretrained,
                                       config.image.backbone_kwargs),
            text_encoder=TextEncoder(config.text.name_or_path, d, frozen=config.text.frozen,
                                     pretrained=config.text.pretrained,
                                     phrase_attention=config.text.phrase_attention,
                                     context_layers=config.text.context_layers),
            fusion=Fusion(dim=d, num_layers=config.fusion.num_layers, num_heads=config.fusion.num_heads,
                          attention=config.fusion.attention, mlp=config.fusion.mlp,
                          ffn_ratio=config.fusion.ffn_ratio, dropout=config.fusion.dropout),
            box_head=BoxHead(dim=d, num_queries=config.box_head.num_queries,
                             num_decoder_layers=config.box_head.num_decoder_layers,
                             num_heads=config.box_head.num_heads, attention=config.box_head.attention,
                             mlp=config.box_head.mlp, similarity=config.similarity,
                             query_init=config.box_head.query_init, ffn_ratio=config.box_head.ffn_ratio,
                             dropout=config.box_head.dropout),
            config=config,
        )

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @cached_property
    def processor(self) -> InputProcessor:
        """The shared input processor (the same one the dataset and collator use)."""
        return InputProcessor.from_config(self.config)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) ids and mask -> (B, T, D) projected text tokens (cacheable for fixed prompts)."""
        return self.text_encoder(input_ids, attention_mask)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                text_tokens: torch.Tensor | None = None) -> dict:
        """images (B, 3, S, S) normalized; input_ids/attention_mask (B, T) from ``self.tokenizer``;
        text_tokens (B, T, D) optional precomputed :meth:`encode_text` output.

        Returns a dict:
          pred_logits (B, Q, T): query-token alignment logits (padded tokens: a large negative value)
          pred_boxes  (B, Q, 4): normalized cxcywh in (0, 1)
          text_mask   (B, T) bool: True for real tokens
          aux_outputs: list of {pred_logits, pred_boxes} for earlier decoder layers
          enc_outputs: {pred_logits, pred_boxes} of the selected proposals (language-guided only)
        """
        if text_tokens is None:
            text_tokens = self.encode_text(input_ids, attention_mask)
        padding = attention_mask == 0
        image = self.image_encoder(images)
        memory = self.fusion(image["tokens"], image["pos"], text_tokens, padding)
        out = self.box_head(memory, image["pos"], image["spatial_shapes"], text_tokens, padding)
        out["text_mask"] = ~padding
        return out

    # -- inference API ------------------------------------------------------------------
    def tokenize(self, captions: Sequence[str]) -> dict:
        """Tokenize captions (padding to the longest, truncating at text.max_tokens with a warning):
        ``self.processor.tokenize``."""
        return self.processor.tokenize(captions)

    def preprocess(self, images) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """PIL images, or a tensor batch (B, 3, H, W): uint8 0-255 or float in [0, 1] (see :meth:`predict`)
        -> normalized (B, 3, S, S) at the model's input size on the model's device, plus each image's
        original (H, W)."""
        batch, sizes = self.processor.images(images)
        device = next(self.parameters()).device
        return batch.to(device), sizes

    @torch.inference_mode()
    def predict(self, images, prompts: Sequence[str | Sequence[str]], threshold: float = 0.3,
                text_threshold: float = 0.25, text_tokens: torch.Tensor | None = None) -> list[dict]:
        """Detect the prompted phrases.

        images: a list of PIL images, or a (B, 3, H, W) tensor: uint8 with values 0-255 (scaled by 1/255,
        exactly as a PIL image is), or float with values in [0, 1]; a float tensor outside [0, 1] (e.g.
        0-255, or already ImageNet-normalized) or of another dtype is a ``ValueError``.
        prompts: per image a caption string, or a list of phrases (joined with " . ").
        Returns per image {"boxes": (K, 4) xyxy in pixels of the input image, "scores": (K,),
        "labels": list of K phrase strings}. With a phrase list a box's label is the phrase whose
        tokens score highest; with a caption it is the caption's own text under the tokens that pass
        ``text_threshold`` (as in ``post_process_grounded_object_detection``): one substring of the caption
        per run of consecutive passing tokens (first token's start to last token's end, so a word split
        into WordPieces comes back whole), runs in caption order joined by a space.

        threshold: a query's box is returned when its best token's sigmoid score (the max over the
        prompt's tokens) exceeds it; "scores" are that max. A phrase absent from the image should get
        no box in the common case: that is what training with negative (absent) phrases teaches, and
        ``ovd eval --protocol vocabulary`` measures it (``absent_fp_rate``, at this default 0.3).

        text_tokens: optional (B, T, D) :meth:`encode_text` output for these prompts, tokenized as here (a caller
        whose prompt is fixed computes it once: ``ovd.batch_predict.encode_prompt``); its (B, T) must match the
        prompts' tokens.
        """
        was_training = self.training
        self.eval()
        try:
            batch, sizes = self.preprocess(images)
            if len(prompts) != batch.shape[0]:
                raise ValueError(f"got {batch.shape[0]} images but {len(prompts)} prompts")
            captions, phrase_spans = [], []
            for p in prompts:
                if isinstance(p, str):
                    captions.append(p)
                    phrase_spans.append(None)
                else:
                    caption, spans = join_phrases(p)
                    captions.append(caption)
                    phrase_spans.append(([s.strip() for s in p], spans))
            enc = self.tokenize(captions)
            device = batch.device
            if text_tokens is not None and tuple(text_tokens.shape[:2]) != tuple(enc["input_ids"].shape):
                raise ValueError(f"text_tokens of shape {tuple(text_tokens.shape)} do not match the prompts' "
                                 f"{tuple(enc['input_ids'].shape)} (B, T) tokens")
            out = self(batch, enc["input_ids"].to(device), enc["attention_mask"].to(device), text_tokens=text_tokens)
            probs = out["pred_logits"].float().sigmoid()  # (B, Q, T)
            results = []
            for b in range(batch.shape[0]):
                offsets = enc["offset_mapping"][b]
                token_probs = probs[b]
                scores = token_probs.max(-1).values
                keep = scores > threshold
                boxes = normalized_cxcywh_to_pixel_xyxy(out["pred_boxes"][b][keep].float(), *sizes[b])
                labels = []
                for q in keep.nonzero().flatten().tolist():
                    labels.append(self._label(token_probs[q], offsets, captions[b], phrase_spans[b], text_threshold))
                results.append({"boxes": boxes.cpu(), "scores": scores[keep].cpu(), "labels": labels})
            return results
        finally:
            self.train(was_training)

    @staticmethod
    def _label(token_probs, offsets, caption, phrase_spans, text_threshold) -> str:
        if phrase_spans is not None:
            phrases, spans = phrase_spans
            best, best_score = phrases[0], -1.0
            for phrase, span in zip(phrases, spans):
                in_span = phrase_token_mask(offsets, [span])
                if in_span.any():
                    score = token_probs[in_span].mean().item()
                    if score > best_score:
                        best, best_score = phrase, score
            return best
        # Caption mode: the caption's own text under the selected tokens. Each run of consecutive selected
        # tokens gives one substring of the caption, from its first token's start to its last token's end
        # (so WordPieces of one word come back as the word, with the caption's own spacing and punctuation);
        # runs split by an unselected token are joined with a single space, in caption order.
        runs: list[list[int]] = []
        previous = None
        for index, ((s, e), p) in enumerate(zip(offsets.tolist(), token_probs.tolist())):
            if e > s and p > text_threshold:  # e > s: a real token (special and padding tokens are (0, 0))
                if previous is not None and previous == index - 1:
                    runs[-1][1] = e
                else:
                    runs.append([s, e])
                previous = index
        return " ".join(caption[s:e] for s, e in runs)
