"""``GroundingCollator``: a list of dataset items -> one batch, tokenizing the captions."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..processor import InputProcessor
from .errors import DataError
from .positive_map import build_positive_map, phrase_token_mask


class GroundingCollator:
    """Callable for ``DataLoader(collate_fn=...)``.

    ``tokenizer`` must be a Hugging Face *fast* tokenizer (offset mappings are needed to map
    char spans to tokens). Captions are padded to the longest in the batch and truncated at
    ``max_tokens`` (special tokens included) with a warning naming the caption and the
    phrases lost; boxes whose phrases all fell past the limit are dropped from the targets.
    An item may carry ``"negatives"`` (absent phrases appended after the caption by
    :class:`~ovd.data.negatives.NegativePhraseDataset`): they get no positive-map entry, so their
    tokens are 0 in every row (the loss pushes their scores down), and losing only them to the
    limit is expected, so it warns nothing.

    Batch:
        "images":         float (B, 3, S, S)
        "input_ids":      long (B, T);  "attention_mask": long (B, T)
        "targets":        list (B) of {"boxes": (N, 4) normalized cxcywh,
                                       "positive_map": (N, T) float binary}
        "meta":           list (B) of {"image_id", "sentence_id", "caption", "orig_size",
                                       "phrases": [phrase dict + "token_mask": bool (T,)],
                                       "negatives": [{"text", "char_start", "char_end",
                                                      "token_mask": bool (T,)}] (empty: none)}
    """

    def __init__(self, tokenizer, max_tokens: int = 64) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError("GroundingCollator needs a fast (Rust) tokenizer for offset mappings")
        # Images are already tensors here (the dataset used the same processor's image path).
        self.processor = InputProcessor(tokenizer, image_size=1, max_tokens=max_tokens)
        self.tokenizer = tokenizer
        self.max_tokens = int(max_tokens)

    def __call__(self, items: Sequence[dict]) -> dict:
        names = [f"caption of image {item['image_id']!r} sentence {item['sentence_id']}" for item in items]
        for item in items:
            if not item["caption"].strip():
                raise DataError(f"image {item['image_id']!r} sentence {item['sentence_id']}: empty caption")
        enc = self.processor.tokenize([item["caption"] for item in items], names, warn=False)
        truncated = set(self.processor.truncated(enc))
        num_tokens = enc["input_ids"].shape[1]
        targets, meta = [], []
        for b, item in enumerate(items):
            offsets = enc["offset_mapping"][b]  # (T, 2)
            positive_map = build_positive_map(offsets, item["box_spans"], num_tokens)  # (N, T)
            boxes = item["boxes"]
            phrases = [dict(p, token_mask=phrase_token_mask(offsets, p.get("spans", [(p["char_start"], p["char_end"])]))) for p in item["phrases"]]
            negatives = [dict(n, token_mask=phrase_token_mask(offsets, [(n["char_start"], n["char_end"])]))
                         for n in item.get("negatives", ())]
            if b in truncated and not self._only_negatives_lost(item, offsets):
                lost = [p["text"] for p in phrases if not p["token_mask"].any()]
                keep = positive_map.any(dim=1)  # a box with no token left cannot be matched to text
                self.processor.warn_truncated(item["caption"], names[b], lost_phrases=lost,
                                              lost_boxes=int((~keep).sum()))
                boxes, positive_map = boxes[keep], positive_map[keep]
                phrases = [p for p in phrases if p["token_mask"].any()]
            targets.append({"boxes": boxes, "positive_map": positive_map})
            meta.append(
                {
                    "image_id": item["image_id"],
                    "sentence_id": item["sentence_id"],
                    "caption": item["caption"],
                    "orig_size": item["orig_size"],
                    "phrases": phrases,
                    "negatives": negatives,
                }
            )
        return {
            "images": torch.stack([item["image"] for item in items]),
            "input_ids": enc["input_ids"].long(),
            "attention_mask": enc["attention_mask"].long(),
            "targets": targets,
            "meta": meta,
        }

    @staticmethod
    def _only_negatives_lost(item: dict, offsets: torch.Tensor) -> bool:
        """True when the kept tokens (offsets (T, 2)) reach past the caption, i.e. truncation cut only
        appended negatives."""
        negatives = item.get("negatives")
        if not negatives:
            return False
        caption_end = negatives[0]["char_start"]  # the caption ends before the first separator
        return int(offsets[:, 1].max()) >= len(item["caption"][:caption_end].rstrip(" ."))
