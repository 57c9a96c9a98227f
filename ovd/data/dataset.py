"""``GroundingDataset``: records -> model-ready samples, with a counted skip policy.

Skip policy (applied once, at construction, without decoding images):
- every box is clipped to the annotated image; a partly-outside box is kept (``clipped``);
- an inverted box (x1 < x0 or y1 < y0) is dropped: ``skipped["inverted_box"]``;
- a box with zero area after clipping is dropped: ``skipped["zero_area_box"]``
  (``"box_outside_image"`` when it lay wholly outside);
- a phrase whose chain id the annotation does not know: ``skipped["unknown_chain_id"]``
  (it stays in the caption, just without boxes);
- a record left with no box for any phrase is dropped: ``skipped["no_boxes"]``.
Each count is per record, so a box shared by five captions counts five times.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..boxes import pixel_xyxy_to_normalized_cxcywh
from ..processor import image_to_tensor
from .errors import DataError
from .images import image_size, load_image
from .records import BoxAnnotation, GroundingRecord, Phrase, Span

log = logging.getLogger(__name__)

@dataclass
class Sample:
    """A record after the skip policy: what ``__getitem__`` needs besides the pixels."""

    record: GroundingRecord
    width: int
    height: int
    boxes_xyxy: torch.Tensor  # (N, 4) pixel xyxy, clipped, unique
    box_spans: list[list[Span]]  # len N: spans of every phrase of this caption naming the box
    phrases: list[dict]  # phrases with boxes, sentence order, incl. "gt_boxes_xyxy" (M, 4)


def clean_box(box: BoxAnnotation, width: int, height: int) -> tuple[tuple[float, ...] | None, str | None]:
    """Clip a pixel-xyxy box to the image. Returns (box, None) when usable, (box, "clipped")
    when clipping changed it, or (None, reason) when it must be skipped."""
    x0, y0, x1, y1 = box.xyxy
    if x1 < x0 or y1 < y0:
        return None, "inverted_box"
    cx0, cy0 = min(max(x0, 0.0), width), min(max(y0, 0.0), height)
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    if cx1 <= cx0 or cy1 <= cy0:
        outside = x0 >= width or y0 >= height or x1 <= 0 or y1 <= 0
        return None, "box_outside_image" if outside and (x1 > x0 and y1 > y0) else "zero_area_box"
    clipped = (cx0, cy0, cx1, cy1)
    return clipped, ("clipped" if clipped != (x0, y0, x1, y1) else None)


def prepare_sample(record: GroundingRecord) -> tuple[Sample | None, Counter]:
    """Apply the skip policy to one record. Returns (sample or None, counts of what happened).

    Needs the image size: the annotated one, or the image header when the record has none.
    """
    counts: Counter = Counter(record.notes)
    if record.width is None or record.height is None:
        width, height = image_size(record.image_path)
    else:
        width, height = record.width, record.height

    # Unique valid boxes -> the set of chains each belongs to (two <object>s with the same
    # coordinates, or an MDETR box repeated per phrase, become one box).
    box_chains: dict[tuple[float, ...], set[str]] = {}
    for box in record.boxes:
        xyxy, reason = clean_box(box, width, height)
        if reason is not None:
            counts[reason] += 1
        if xyxy is not None:
            box_chains.setdefault(xyxy, set()).update(box.chain_ids)

    mentioned = {p.chain_id for p in record.phrases}
    kept = [(xyxy, chains) for xyxy, chains in box_chains.items() if chains & mentioned]
    if not kept:
        counts["no_boxes"] += 1
        return None, counts

    chains_with_boxes = {c for _, chains in kept for c in chains}
    box_spans = [[s for p in record.phrases if p.chain_id in chains for s in p.spans] for _, chains in kept]
    phrases = []
    for p in record.phrases:
        if p.chain_id in chains_with_boxes:
            gt = [xyxy for xyxy, chains in kept if p.chain_id in chains]
            phrases.append(_phrase_dict(p, torch.tensor(gt, dtype=torch.float32)))
    sample = Sample(record, width, height, torch.tensor([k[0] for k in kept], dtype=torch.float32), box_spans, phrases)
    return sample, counts


def _phrase_dict(p: Phrase, gt_boxes_xyxy: torch.Tensor) -> dict:
    return {
        "text": p.text,
        "char_start": p.char_start,
        "char_end": p.char_end,
        "chain_id": p.chain_id,
        "spans": list(p.spans),
        "gt_boxes_xyxy": gt_boxes_xyxy,  # (M, 4) pixel xyxy, original image
    }


class GroundingDataset(Dataset):
    """Image-caption grounding samples.

    Item (a dict):
        "image":       float (3, S, S), square resize (aspect not kept), ImageNet-normalized, by
                       ``ovd.processor.image_to_tensor`` (the same path as ``model.predict``)
        "image_id":    str;  "sentence_id": int;  "caption": str;  "orig_size": (H, W)
        "boxes":       float (N, 4) normalized cxcywh in [0, 1]: unique GT boxes of the chains
                       this caption mentions
        "box_spans":   list (N) of lists of (char_start, char_end): spans of all phrases of
                       this caption that refer to the box (MDETR convention)
        "phrases":     list of dicts, phrases with boxes in sentence order: "text",
                       "char_start", "char_end", "chain_id", "spans",
                       "gt_boxes_xyxy" float (M, 4) pixel xyxy in the original image
    Attributes: ``skipped`` (Counter of skip reasons), ``clipped`` (boxes clipped and kept).
    """

    def __init__(self, records: Sequence[GroundingRecord], image_size: int = 224, split: str = "train") -> None:
        self.image_size = int(image_size)
        self.split = split
        self.samples: list[Sample] = []
        self.skipped: Counter = Counter()
        self.clipped = 0
        for record in records:
            sample, counts = prepare_sample(record)
            self.clipped += counts.pop("clipped", 0)
            self.skipped.update(counts)
            if sample is not None:
                self.samples.append(sample)
        if self.skipped or self.clipped:
            log.info(
                "%s: kept %d of %d records; skipped %s; %d boxes clipped to the image",
                split, len(self.samples), len(records), dict(sorted(self.skipped.items())), self.clipped,
            )

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, sample: Sample) -> Image.Image:
        img = load_image(sample.record.image_path)
        if img.size != (sample.width, sample.height):
            # Boxes are in annotation pixels; a different image size would silently misplace them.
            raise DataError(
                f"{sample.record.image_path}: image is {img.size[0]}x{img.size[1]} but the annotation "
                f"({sample.record.source}) says {sample.width}x{sample.height}"
            )
        return img

    def to_tensor(self, img: Image.Image) -> torch.Tensor:
        """PIL RGB -> float (3, S, S), ImageNet-normalized (the shared input processor's image path)."""
        return image_to_tensor(img, self.image_size)

    def __getitem__(self, index: int) -> dict:
        s = self.samples[index]
        return {
            "image": self.to_tensor(self.load_image(s)),
            "image_id": s.record.image_id,
            "sentence_id": s.record.sentence_id,
            "caption": s.record.caption,
            "orig_size": (s.height, s.width),
            "boxes": pixel_xyxy_to_normalized_cxcywh(s.boxes_xyxy, s.height, s.width).clamp(0, 1),
            "box_spans": [list(spans) for spans in s.box_spans],
            "phrases": [dict(p) for p in s.phrases],
        }
