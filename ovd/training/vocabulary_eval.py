"""The open-vocabulary detection protocol, beside phrase grounding.

Phrase grounding (:class:`ovd.training.metrics.GroundingEvaluator`) only scores phrases that are in the
image, so a detector that boxes every phrase it is given scores perfectly there. Users prompt with a
*vocabulary* ("person . car . dog ."), most of whose entries are absent from a given image, and detectors
are judged by detection AP over that vocabulary (COCO/LVIS zero-shot, ODinW), where a box for an absent
class is a false positive. This module is that protocol:

- **Prompt**: the split's whole class vocabulary (:func:`ovd.data.vocabulary.split_vocabulary`), joined with
  " . " and cut into several prompts when it exceeds ``text.max_tokens`` (as Grounding DINO does for LVIS);
  every class is in exactly one prompt (:func:`chunk_vocabulary`).
- **Detections**: per image and prompt, every (query, prompt entry) pair is one detection, scored by the mean
  sigmoid over the entry's tokens: the standard DETR post-processing for AP (Deformable DETR's top-k over
  queries x classes, Grounding DINO's ``PostProcessCocoGrounding``), so one box may rank under several classes.
  Detections of all prompts of an image are merged, the top ``max_detections`` kept. (Until 2026-11-29 each
  query gave one detection, its best entry only; that capped recall and about halved vocab mAP50 on the same
  weights.)
- **GT** per image: every unique (clipped) box named by a phrase of any caption of the image, with the class
  of that phrase's :func:`~ovd.data.vocabulary.phrase_key` (a box named by two different keys is one GT per key).
- **Scores** (:func:`score_vocabulary`): torchmetrics ``MeanAveragePrecision`` (bbox, xyxy pixels) over all
  classes and images, absent classes included: a detection of a class with no object in that image is a
  false positive of that class. Plus, at ``predict``'s threshold (a query gives one box, labelled with its
  best entry, when its best token's sigmoid over the prompt exceeds it):
  ``absent_fp_rate`` = share of images with >= 1 box labelled with a class absent from the image (any of the
  vocabulary's absent classes: strict, it grows with the vocabulary), ``absent_fp_pair_rate`` = share of
  (image, absent class) pairs with >= 1 box of that class (the rate one absent phrase in a prompt is boxed at,
  comparable across vocabulary sizes), and ``present_recall`` = share of (image, present class) pairs with a
  box of that class at IoU >= 0.5.

- **The two-phrase probe** (the question a user asks first: "if I name something that is not here, do I get a
  box?"): per image, one prompt of two names in a seeded random order, a class of the image and a class of
  the vocabulary sharing no word with any class of the image (for the built-in data: neither its colour nor
  its shape is in the image). ``probe_absent_fp_rate`` = share of probed images where the absent name gets a
  box at ``predict``'s threshold; ``probe_present_recall`` = share where the present name gets a box at IoU
  >= 0.5 with one of its GT boxes. Far easier than the vocabulary rates: one absent name, not dozens, and no
  absent name that shares a colour or shape with the image.

COCO-style AP skips a class with no GT box in any image (its AP is undefined), so a false positive costs
AP only for classes that occur somewhere in the split; the absent-FP rate counts every one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor
from torchmetrics.detection import MeanAveragePrecision
from torchvision.ops import box_iou

from ..boxes import normalized_cxcywh_to_pixel_xyxy
from ..data.positive_map import phrase_token_mask
from ..processor import join_phrases

DEFAULT_THRESHOLD = 0.3  # OpenVocabDetector.predict's default box threshold
IOU_THRESHOLD = 0.5
#: Vocabulary metrics recorded on every training-curve point and in the final metrics of each split.
VOCAB_CURVE_KEYS = ("vocab_mAP50", "absent_fp_rate", "present_recall")
VOCAB_FINAL_KEYS = ("vocab_mAP", "vocab_mAP50", "absent_fp_rate", "absent_fp_pair_rate", "present_recall",
                    "probe_absent_fp_rate", "probe_present_recall")
PROBE_SEED = 0  # the two-phrase probe's draws (which present class, which absent one, their order)


# -- prompts --------------------------------------------------------------------------------------
def chunk_vocabulary(vocabulary: Sequence[str], tokenizer, max_tokens: int) -> list[list[str]]:
    """Cut a class vocabulary into consecutive prompts that each fit ``max_tokens`` (special tokens
    included), greedily: each prompt takes classes in order while ``join_phrases(prompt)`` still fits.
    Every class lands in exactly one prompt, in the original order.

    Raises ``ValueError`` when one class alone does not fit (it could never be prompted whole).
    """
    vocabulary = [str(v).strip() for v in vocabulary]
    if not vocabulary:
        raise ValueError("the vocabulary is empty: the split has no phrase with a box")

    def fits(entries: list[str]) -> bool:
        return len(tokenizer(join_phrases(entries)[0])["input_ids"]) <= max_tokens

    chunks: list[list[str]] = []
    current: list[str] = []
    for entry in vocabulary:
        if current and fits(current + [entry]):
            current.append(entry)
            continue
        if current:
            chunks.append(current)
        if not fits([entry]):
            raise ValueError(f"vocabulary entry {entry!r} alone exceeds text.max_tokens={max_tokens}; "
                             "raise text.max_tokens or shorten the class name")
        current = [entry]
    chunks.append(current)
    return chunks


# -- ground truth -----------------------------------------------------------------------------------
@dataclass
class VocabImage:
    """One evaluation image: its path, size (H, W) in pixels and GT boxes (G, 4) xyxy pixels with class
    indices (G,) into the vocabulary."""

    image_id: str
    image_path: object
    height: int
    width: int
    boxes: Tensor
    labels: Tensor


def _records_of(records_or_dataset) -> list:
    """GroundingRecords from a record list or a :class:`~ovd.data.dataset.GroundingDataset` (its kept samples)."""
    samples = getattr(records_or_dataset, "samples", None)
    if samples is not None:
        return [s.record for s in samples]
    records = list(records_or_dataset)
    if records and not hasattr(records[0], "phrases"):
        raise TypeError("evaluate_vocabulary needs GroundingRecords (ovd.data.readers.load_records) or a "
                        f"GroundingDataset, got a sequence of {type(records[0]).__name__}")
    return records


def vocabulary_images(records: Sequence, vocabulary: Sequence[str]) -> list[VocabImage]:
    """Group caption records by image: the GT of an image is the union over its captions of every clipped,
    unique box named by a phrase, labelled with the index of that phrase's key in ``vocabulary``."""
    from ..data.dataset import clean_box
    from ..data.images import image_size
    from ..data.vocabulary import phrase_key

    index = {phrase_key(v): i for i, v in enumerate(vocabulary)}
    by_image: dict[str, dict] = {}
    for record in records:
        entry = by_image.get(record.image_id)
        if entry is None:
            if record.width is None or record.height is None:
                width, height = image_size(record.image_path)
            else:
                width, height = record.width, record.height
            entry = by_image[record.image_id] = {"path": record.image_path, "size": (height, width), "gt": set()}
        height, width = entry["size"]
        keys_of_chain: dict[str, set[int]] = {}
        for p in record.phrases:
            key = phrase_key(p.text)
            if key in index:
                keys_of_chain.setdefault(p.chain_id, set()).add(index[key])
        for box in record.boxes:
            xyxy, _ = clean_box(box, width, height)
            if xyxy is None:
                continue
            for chain in box.chain_ids:
                for label in keys_of_chain.get(chain, ()):
                    entry["gt"].add((tuple(float(v) for v in xyxy), label))
    out = []
    for image_id, entry in by_image.items():
        gt = sorted(entry["gt"], key=lambda g: (g[1], g[0]))
        boxes = torch.tensor([g[0] for g in gt], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([g[1] for g in gt], dtype=torch.long)
        out.append(VocabImage(image_id, entry["path"], *entry["size"], boxes, labels))
    return out


# -- scoring ------------------------------------------------------------------------------------------
def score_vocabulary(predictions: Sequence[dict], targets: Sequence[dict], threshold: float = DEFAULT_THRESHOLD,
                     iou_threshold: float = IOU_THRESHOLD, max_detections: int = 100,
                     num_classes: int | None = None) -> dict[str, float]:
    """Score per-image vocabulary detections (no model involved).

    Args:
        predictions: per image {"boxes": (D, 4) xyxy pixels, "scores": (D,) class score used to rank for AP,
            "labels": (D,) long class index, optional "box_scores": (D,) the score ``threshold`` applies to
            (``predict``'s rule: the best token's sigmoid); defaults to "scores"}.
        targets: per image {"boxes": (G, 4) xyxy pixels, "labels": (G,) long}; a class with no GT box in an
            image is absent from it.
        threshold: a detection "gets a box" when its box score exceeds this.
        max_detections: detections per image kept for mAP (top by score).
        num_classes: the vocabulary's size (classes are 0..num_classes-1), for ``absent_fp_pair_rate``'s
            denominator; default: 1 + the largest label seen in predictions or targets.
    Returns:
        {"vocab_mAP" (IoU .50:.95), "vocab_mAP50", "absent_fp_rate", "absent_fp_pair_rate", "present_recall",
        "num_images", "num_present", "num_absent"} as floats; a rate is NaN when its denominator is 0.
    """
    if len(predictions) != len(targets):
        raise ValueError(f"got predictions for {len(predictions)} images but targets for {len(targets)}")
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox",
                                  max_detection_thresholds=sorted({1, 10, int(max_detections)}))
    if num_classes is None:
        seen = [int(torch.as_tensor(d["labels"]).max()) for d in list(predictions) + list(targets)
                if torch.as_tensor(d["labels"]).numel()]
        num_classes = 1 + max(seen, default=-1)
    images_with_fp = 0
    absent_pairs = absent_boxed = 0
    present_pairs = present_hits = 0
    preds_for_map, gts_for_map = [], []
    for pred, gt in zip(predictions, targets):
        boxes = torch.as_tensor(pred["boxes"], dtype=torch.float32).reshape(-1, 4)
        scores = torch.as_tensor(pred["scores"], dtype=torch.float32).reshape(-1)
        labels = torch.as_tensor(pred["labels"], dtype=torch.long).reshape(-1)
        box_scores = torch.as_tensor(pred.get("box_scores", scores), dtype=torch.float32).reshape(-1)
        gt_boxes = torch.as_tensor(gt["boxes"], dtype=torch.float32).reshape(-1, 4)
        gt_labels = torch.as_tensor(gt["labels"], dtype=torch.long).reshape(-1)
        top = scores.topk(min(int(max_detections), len(scores))).indices
        preds_for_map.append({"boxes": boxes[top], "scores": scores[top], "labels": labels[top]})
        gts_for_map.append({"boxes": gt_boxes, "labels": gt_labels})

        kept = box_scores > threshold
        present = set(gt_labels.tolist())
        boxed_absent = {label for label in labels[kept].tolist() if label not in present}
        if boxed_absent:
            images_with_fp += 1
        absent_pairs += num_classes - len(present)
        absent_boxed += len(boxed_absent)
        for cls in present:
            present_pairs += 1
            cls_boxes = boxes[kept & (labels == cls)]
            if len(cls_boxes) and box_iou(cls_boxes, gt_boxes[gt_labels == cls]).max() >= iou_threshold:
                present_hits += 1
    metric.update(preds_for_map, gts_for_map)
    result = metric.compute()
    num_images = len(predictions)
    return {
        "vocab_mAP": float(result["map"]),
        "vocab_mAP50": float(result["map_50"]),
        "absent_fp_rate": images_with_fp / num_images if num_images else float("nan"),
        "absent_fp_pair_rate": absent_boxed / absent_pairs if absent_pairs else float("nan"),
        "present_recall": present_hits / present_pairs if present_pairs else float("nan"),
        "num_images": float(num_images),
        "num_present": float(present_pairs),
        "num_absent": float(absent_pairs),
    }


# -- the two-phrase probe ------------------------------------------------------------------------------
class ProbePair(NamedTuple):
    """One image's two-phrase probe: vocabulary indices of a present and an absent class, and their order in
    the prompt (the absent name first in about half of the images: no position cue)."""
    present: int
    absent: int
    absent_first: bool

    @property
    def prompt_order(self) -> tuple[int, int]:
        return (self.absent, self.present) if self.absent_first else (self.present, self.absent)


def probe_pairs(images: Sequence[VocabImage], vocabulary: Sequence[str], seed: int = PROBE_SEED
                ) -> list[ProbePair | None]:
    """Per image, a :class:`ProbePair`, or None when the image has no class or every vocabulary class shares a
    word with one of its classes. The absent class shares no word (lower case) with any class of the image; the
    two classes and their order are all drawn from one ``numpy.random.default_rng(seed)``, so the probe is the
    same for every model and every batch size."""
    import numpy as np

    rng = np.random.default_rng(seed)
    words = [set(str(v).lower().split()) for v in vocabulary]
    pairs: list[tuple[int, int] | None] = []
    for im in images:
        present = sorted(set(im.labels.tolist()))
        seen = set().union(*(words[c] for c in present)) if present else set()
        absent = [c for c in range(len(vocabulary)) if not words[c] & seen]
        if not present or not absent:
            pairs.append(None)
            continue
        pairs.append(ProbePair(present[int(rng.integers(len(present)))], absent[int(rng.integers(len(absent)))],
                               bool(rng.random() < 0.5)))
    return pairs


def score_probe(det: dict[str, Tensor], present: int, absent: int, gt_boxes: Tensor, gt_labels: Tensor,
                threshold: float = DEFAULT_THRESHOLD, iou_threshold: float = IOU_THRESHOLD) -> tuple[bool, bool]:
    """(absent class boxed, present class found) for one image's two-phrase probe. ``det`` is
    :func:`query_detections`' output with ``labels`` already vocabulary indices; a box is kept as ``predict``
    keeps it (``box_scores`` > ``threshold``); found = a kept box of the present class at IoU >= ``iou_threshold``
    with one of that class's GT boxes (``gt_boxes`` (G, 4) xyxy pixels, ``gt_labels`` (G,))."""
    kept = det["box_scores"] > threshold
    absent_boxed = bool((kept & (det["labels"] == absent)).any())
    mine = det["boxes"][kept & (det["labels"] == present)]
    targets = gt_boxes[gt_labels == present]
    found = bool(len(mine) and len(targets) and box_iou(mine, targets).max() >= iou_threshold)
    return absent_boxed, found


def _probe_batch(model, pixels: Tensor, batch_images: Sequence[VocabImage], pairs: Sequence[ProbePair | None],
                 vocabulary: Sequence[str], threshold: float) -> list[tuple[bool, bool] | None]:
    """Run the two-phrase probe on one batch of images (``pixels`` (B, 3, H, W), ``pairs`` from
    :func:`probe_pairs`): one forward pass, each image with its own prompt."""
    todo = [i for i, pair in enumerate(pairs) if pair is not None]
    out: list[tuple[bool, bool] | None] = [None] * len(pairs)
    if not todo:
        return out
    processor = model.processor
    captions, spans, order = [], [], []
    for i in todo:
        entries = list(pairs[i].prompt_order)
        caption, entry_spans = join_phrases([vocabulary[c] for c in entries])
        captions.append(caption)
        spans.append(entry_spans)
        order.append(entries)
    enc = processor.tokenize(captions)
    device = pixels.device
    ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    result = model(pixels[todo], ids, mask)
    for k, i in enumerate(todo):
        im = batch_images[i]
        masks = torch.stack([phrase_token_mask(enc["offset_mapping"][k], [span]) for span in spans[k]]).to(device)
        det = query_detections(result["pred_logits"][k], result["pred_boxes"][k], result["text_mask"][k], masks,
                               im.height, im.width)
        det = {key: value.cpu() for key, value in det.items()}
        det["labels"] = torch.tensor(order[k])[det["labels"]]  # prompt entry -> vocabulary index
        out[i] = score_probe(det, pairs[i].present, pairs[i].absent, im.boxes, im.labels, threshold)
    return out


# -- the model side -------------------------------------------------------------------------------------
def _prompt_tensors(processor, entries: list[str], device) -> dict:
    """One chunk -> input_ids / attention_mask (1, T) and each entry's token mask (C, T) bool."""
    caption, spans = join_phrases(entries)
    enc = processor.tokenize([caption])
    offsets = enc["offset_mapping"][0]
    masks = torch.stack([phrase_token_mask(offsets, [span]) for span in spans])  # (C, T)
    return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device),
            "entry_masks": masks.to(device)}


def query_detections(pred_logits: Tensor, pred_boxes: Tensor, text_mask: Tensor, entry_masks: Tensor,
                     height: int, width: int) -> dict[str, Tensor]:
    """One image, one prompt: every (query, entry) pair as a detection.

    Args:
        pred_logits: (Q, T) raw logits; pred_boxes: (Q, 4) normalized cxcywh; text_mask: (T,) bool real tokens;
        entry_masks: (C, T) bool, the tokens of each prompt entry.
    Returns:
        D = Q * C detections, query-major (detection q * C + c is query q under entry c):
        {"boxes": (D, 4) xyxy pixels, "scores": (D,) the entry's mean token sigmoid (ranks for AP), "labels": (D,)
        index of the entry within the prompt, "box_scores": (D,) ``predict``'s keep score: the query's best
        real-token sigmoid on the pair of its best entry (the label ``predict`` would give it), 0 elsewhere, so a
        query passing the threshold boxes exactly one class}.
    """
    probs = pred_logits.float().sigmoid()  # (Q, T)
    masks = entry_masks.float()  # (C, T)
    entry_scores = probs @ masks.T / masks.sum(-1).clamp(min=1)  # (Q, C) mean over each entry's tokens
    num_queries, num_entries = entry_scores.shape
    best_entry = entry_scores.argmax(-1)  # (Q,)
    query_score = probs.masked_fill(~text_mask.bool(), 0.0).max(-1).values  # (Q,)
    box_scores = torch.zeros_like(entry_scores)
    box_scores[torch.arange(num_queries), best_entry] = query_score
    boxes = normalized_cxcywh_to_pixel_xyxy(pred_boxes.float(), height, width)  # (Q, 4)
    return {"boxes": boxes.repeat_interleave(num_entries, dim=0), "scores": entry_scores.reshape(-1),
            "labels": torch.arange(num_entries, device=probs.device).repeat(num_queries),
            "box_scores": box_scores.reshape(-1)}


def _merge(parts: list[dict]) -> dict[str, Tensor]:
    return {k: torch.cat([p[k].cpu() for p in parts]) for k in parts[0]}


@torch.inference_mode()
def evaluate_vocabulary(model, records_or_dataset, batch_size: int = 16, threshold: float = DEFAULT_THRESHOLD,
                        device=None, max_images: int | None = None, max_detections: int = 100) -> dict[str, float]:
    """The vocabulary protocol (module docstring) for ``model`` on a split.

    Args:
        model: an :class:`~ovd.models.detector.OpenVocabDetector` (its ``processor`` gives pixels and tokens).
        records_or_dataset: the split's GroundingRecords (``load_records``) or a ``GroundingDataset``.
        batch_size: images per forward pass.
        threshold: ``predict``'s box threshold for ``absent_fp_rate`` / ``present_recall``.
        device: where to run (default: where the model is).
        max_images: evaluate only the first ``max_images`` images (in record order): a fixed subset.
    Returns:
        {"vocab_mAP", "vocab_mAP50", "absent_fp_rate", "absent_fp_pair_rate", "present_recall",
        "probe_absent_fp_rate", "probe_present_recall", "probe_images", "num_classes", "num_images",
        "num_prompts"} as floats.
    """
    from ..data.images import load_image
    from ..data.vocabulary import split_vocabulary

    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    records = _records_of(records_or_dataset)
    vocabulary = split_vocabulary(records)
    images = vocabulary_images(records, vocabulary)
    if max_images is not None:
        images = images[:max_images]
    if not images:
        raise ValueError("no image to evaluate: the split is empty")
    processor = model.processor
    chunks = chunk_vocabulary(vocabulary, processor.tokenizer, processor.max_tokens)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        prompts = []
        offset = 0
        for entries in chunks:
            tensors = _prompt_tensors(processor, entries, device)
            # The prompt is the same for every image: encode its text once.
            tensors["text_tokens"] = model.encode_text(tensors["input_ids"], tensors["attention_mask"])
            tensors["offset"] = offset
            offset += len(entries)
            prompts.append(tensors)
        predictions, targets = [], []
        pairs = probe_pairs(images, vocabulary)
        probes: list[tuple[bool, bool] | None] = []
        for start in range(0, len(images), batch_size):
            batch_images = images[start:start + batch_size]
            pixels, _ = processor.images([load_image(im.image_path) for im in batch_images])
            pixels = pixels.to(device)
            b = pixels.shape[0]
            per_image: list[list[dict]] = [[] for _ in range(b)]
            for prompt in prompts:
                out = model(pixels, prompt["input_ids"].expand(b, -1), prompt["attention_mask"].expand(b, -1),
                            text_tokens=prompt["text_tokens"].expand(b, -1, -1))
                for i, im in enumerate(batch_images):
                    det = query_detections(out["pred_logits"][i], out["pred_boxes"][i], out["text_mask"][i],
                                           prompt["entry_masks"], im.height, im.width)
                    det["labels"] = det["labels"] + prompt["offset"]  # chunk index -> vocabulary index
                    per_image[i].append(det)
            predictions += [_merge(parts) for parts in per_image]
            probes += _probe_batch(model, pixels, batch_images, pairs[start:start + batch_size], vocabulary, threshold)
            targets += [{"boxes": im.boxes, "labels": im.labels} for im in batch_images]
    finally:
        model.train(was_training)
    result = score_vocabulary(predictions, targets, threshold=threshold, max_detections=max_detections,
                              num_classes=len(vocabulary))
    return {
        "vocab_mAP": result["vocab_mAP"], "vocab_mAP50": result["vocab_mAP50"],
        "absent_fp_rate": result["absent_fp_rate"], "absent_fp_pair_rate": result["absent_fp_pair_rate"],
        "present_recall": result["present_recall"],
        **_probe_rates([p for p in probes if p is not None]),
        "num_classes": float(len(vocabulary)), "num_images": float(len(images)), "num_prompts": float(len(chunks)),
    }


def _probe_rates(probes: Sequence[tuple[bool, bool]]) -> dict[str, float]:
    """{"probe_absent_fp_rate", "probe_present_recall", "probe_images"} over the probed images (NaN rates
    when none could be probed)."""
    n = len(probes)
    return {"probe_absent_fp_rate": sum(a for a, _ in probes) / n if n else float("nan"),
            "probe_present_recall": sum(f for _, f in probes) / n if n else float("nan"),
            "probe_images": float(n)}
