"""Grounding metrics: phrase Recall@k (MDETR's Flickr30k Entities protocol) and COCO-style mAP.

Box formats: model outputs are **normalized cxcywh**; everything scored here is **xyxy in
pixels of the original image** (``meta["orig_size"] = (H, W)``).

Recall@k (MDETR, ``flickr_eval.py``): only phrases whose coreference chain has GT boxes count.
For each such phrase the model's boxes are ranked by score; the phrase is a hit at k when the
best IoU between one of the top-k boxes and

- any GT box of the chain is >= 0.5 (**ANY-BOX**, keys ``R@k``), or
- the union box of the chain's GT boxes is >= 0.5 (**MERGED-BOX**, keys ``R@k_merged``).

mAP: each phrase of a caption is a "class" whose id is the phrase's index within its caption,
and each (image_id, sentence_id) pair is one evaluation "image". COCO evaluation matches
detections to GT per (image, category) only, so per-caption phrase indices are valid class ids:
phrase 0 of caption A is never compared with phrase 0 of caption B. (With the default
``average="macro"`` the reported AP is the mean over phrase positions 0, 1, 2, ... pooled over
captions; ``average="micro"`` pools all phrases.)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.detection import MeanAveragePrecision
from torchvision.ops import box_iou

from ovd.boxes import normalized_cxcywh_to_pixel_xyxy

DEFAULT_KS = (1, 5, 10)


# -- scores ---------------------------------------------------------------------------------
def phrase_scores(pred_logits_b: Tensor, token_mask: Tensor, text_mask_b: Tensor | None = None) -> Tensor:
    """Probability that each query shows a phrase.

    Choice: the **mean over the phrase's tokens of sigmoid(logit)**. The model is trained with
    an independent sigmoid per (query, token) whose target is 1 on every token of the phrase, so
    each token probability estimates "this query shows the phrase"; the mean uses all of them
    and, unlike a sum, does not favour long phrases, and unlike a max, is not carried by one
    token (e.g. "the" in "the man").

    Args:
        pred_logits_b: (Q, T) raw alignment logits of one image.
        token_mask: (T',) bool, True on the phrase's tokens. T' may differ from T (a batch may be
            padded longer or shorter); positions beyond T are dropped, missing ones are False.
        text_mask_b: optional (T,) bool of real tokens; padding positions are never used.
    Returns:
        (Q,) float32 scores in [0, 1]; all zeros if the phrase has no token inside T.
    """
    num_tokens = pred_logits_b.shape[-1]
    mask = torch.zeros(num_tokens, dtype=torch.bool, device=pred_logits_b.device)
    n = min(num_tokens, token_mask.shape[-1])
    mask[:n] = token_mask[:n].to(device=mask.device, dtype=torch.bool)
    if text_mask_b is not None:
        mask &= text_mask_b.to(device=mask.device, dtype=torch.bool)
    if not mask.any():
        return pred_logits_b.new_zeros(pred_logits_b.shape[0], dtype=torch.float32)
    return pred_logits_b[:, mask].float().sigmoid().mean(dim=-1)


def union_box(boxes: Tensor) -> Tensor:
    """(M, 4) xyxy -> (1, 4) xyxy: the smallest box that contains all of them (MERGED-BOX)."""
    return torch.cat([boxes[:, :2].min(dim=0).values, boxes[:, 2:].max(dim=0).values])[None]


def _as_boxes(boxes: Any) -> Tensor:
    """Anything box-like (tensor, array, nested lists, empty list) -> (K, 4) float32 tensor."""
    tensor = torch.as_tensor(boxes, dtype=torch.float32)
    if tensor.numel() == 0:
        return tensor.new_zeros(0, 4)
    if tensor.ndim != 2 or tensor.shape[-1] != 4:
        raise ValueError(f"expected boxes of shape (K, 4), got {tuple(tensor.shape)}")
    return tensor


def hits_at_k(ranked_boxes: Tensor, gt_boxes: Tensor, ks: Sequence[int], iou_threshold: float) -> Tensor:
    """Whether any of the top-k ranked boxes reaches ``iou_threshold`` with any GT box.

    Args:
        ranked_boxes: (K, 4) xyxy, best first.
        gt_boxes: (M, 4) xyxy, M >= 1.
    Returns:
        (len(ks),) bool.
    """
    if len(ranked_boxes) == 0:
        return torch.zeros(len(ks), dtype=torch.bool)
    best = box_iou(ranked_boxes, gt_boxes.to(ranked_boxes)).max(dim=1).values  # (K,)
    running_best = best.cummax(dim=0).values  # best IoU among the top i+1 boxes
    idx = torch.tensor([min(k, len(best)) - 1 for k in ks], device=best.device)
    return (running_best[idx] >= iou_threshold).cpu()


# -- Recall@k -------------------------------------------------------------------------------
class RecallAtK(Metric):
    """Phrase grounding Recall@k, ANY-BOX and MERGED-BOX (MDETR's Flickr30k protocol).

    States (summed across DDP processes): ``hits_any`` and ``hits_merged`` (len(ks),) counts
    and ``total`` (number of phrases with GT boxes).

    ``compute()`` returns a dict of 0-d tensors: ``R@k`` (ANY-BOX), ``R@k_merged``, and the
    counts ``num_phrases``, ``hits@k``, ``hits@k_merged``. Recalls are NaN when no phrase was seen.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, ks: Sequence[int] = DEFAULT_KS, iou_threshold: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not ks or any(int(k) < 1 for k in ks):
            raise ValueError(f"ks={ks!r} must be positive integers")
        self.ks = tuple(int(k) for k in ks)
        self.iou_threshold = iou_threshold
        self.add_state("hits_any", torch.zeros(len(self.ks), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("hits_merged", torch.zeros(len(self.ks), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, ranked_boxes_list: Sequence[Any], gt_boxes_list: Sequence[Any]) -> None:
        """Add phrases.

        Args:
            ranked_boxes_list: per phrase, (K, 4) xyxy boxes ranked best first (K may be 0).
            gt_boxes_list: per phrase, (M, 4) xyxy GT boxes of its chain; phrases with M == 0
                are skipped (they do not count).
        """
        if len(ranked_boxes_list) != len(gt_boxes_list):
            raise ValueError(f"{len(ranked_boxes_list)} ranked box lists for {len(gt_boxes_list)} phrases")
        for ranked, gt in zip(ranked_boxes_list, gt_boxes_list):
            gt = _as_boxes(gt)
            if len(gt) == 0:
                continue
            ranked = _as_boxes(ranked)
            gt = gt.to(ranked.device)
            any_hits = hits_at_k(ranked, gt, self.ks, self.iou_threshold)
            merged_hits = hits_at_k(ranked, union_box(gt), self.ks, self.iou_threshold)
            self.hits_any += any_hits.to(self.hits_any)
            self.hits_merged += merged_hits.to(self.hits_merged)
            self.total += 1

    def compute(self) -> dict[str, Tensor]:
        total = self.total.float()
        out: dict[str, Tensor] = {}
        for i, k in enumerate(self.ks):
            out[f"R@{k}"] = self.hits_any[i].float() / total if total > 0 else torch.tensor(float("nan"))
        for i, k in enumerate(self.ks):
            out[f"R@{k}_merged"] = self.hits_merged[i].float() / total if total > 0 else torch.tensor(float("nan"))
        out["num_phrases"] = self.total.clone()
        for i, k in enumerate(self.ks):
            out[f"hits@{k}"] = self.hits_any[i].clone()
            out[f"hits@{k}_merged"] = self.hits_merged[i].clone()
        return out


# -- evaluator over model outputs ---------------------------------------------------------------
class GroundingEvaluator(nn.Module):
    """Accumulate mAP and Recall@k from model outputs and batch meta; an ``nn.Module`` so that
    ``.to(device)`` moves the metric states (both metrics sync across DDP processes).

    Args:
        ks: the k of Recall@k.
        iou_threshold: IoU for a Recall@k hit.
        max_detections: predictions kept per caption for mAP (top scores over all its phrases).
        map_average: "macro" (mean over phrase positions) or "micro" (all phrases pooled).
    """

    def __init__(
        self,
        ks: Sequence[int] = DEFAULT_KS,
        iou_threshold: float = 0.5,
        max_detections: int = 100,
        map_average: str = "macro",
    ) -> None:
        super().__init__()
        self.max_detections = int(max_detections)
        thresholds = sorted({1, 10, self.max_detections})
        self.map = MeanAveragePrecision(
            box_format="xyxy", iou_type="bbox", max_detection_thresholds=thresholds, average=map_average
        )
        self.recall = RecallAtK(ks, iou_threshold)

    @torch.no_grad()
    def update(self, outputs: dict, metas: Sequence[dict]) -> None:
        """Score one batch.

        Args:
            outputs: ``pred_logits`` (B, Q, T) raw logits, ``pred_boxes`` (B, Q, 4) normalized
                cxcywh, optional ``text_mask`` (B, T) bool. Only the final layer is scored.
            metas: B dicts with ``orig_size`` (H, W) and ``phrases``: list of dicts with
                ``gt_boxes_xyxy`` (M, 4) pixels and ``token_mask`` (T,) bool.
        """
        logits = outputs["pred_logits"].detach().float()
        boxes = outputs["pred_boxes"].detach().float()
        text_mask = outputs.get("text_mask")
        if len(metas) != logits.shape[0]:
            raise ValueError(f"got {len(metas)} meta dicts for a batch of {logits.shape[0]}")
        preds, gts, ranked_list, gt_list = [], [], [], []
        device = self.recall.total.device
        for b, meta in enumerate(metas):
            # Phrases without GT boxes do not count (MDETR); keeping them would only add false
            # positives to a class with no GT. Labels are indices among the remaining phrases.
            phrases = [p for p in meta["phrases"] if len(p["gt_boxes_xyxy"]) > 0]
            if not phrases:
                continue
            height, width = (int(v) for v in meta["orig_size"])
            pixel_boxes = normalized_cxcywh_to_pixel_xyxy(boxes[b], height, width).to(device)  # (Q, 4)
            scores = torch.stack(
                [
                    phrase_scores(logits[b], p["token_mask"], None if text_mask is None else text_mask[b])
                    for p in phrases
                ]
            ).to(device)  # (P, Q)
            phrase_gt = [_as_boxes(p["gt_boxes_xyxy"]).to(device) for p in phrases]
            # Recall@k: per phrase, boxes ranked by that phrase's score.
            top = scores.topk(min(max(self.recall.ks), scores.shape[1]), dim=1).indices  # (P, K)
            ranked_list += [pixel_boxes[idx] for idx in top]
            gt_list += phrase_gt
            preds.append(self._caption_predictions(pixel_boxes, scores))
            gts.append(
                {
                    "boxes": torch.cat(phrase_gt),
                    "labels": torch.cat(
                        [torch.full((len(g),), i, dtype=torch.long, device=device) for i, g in enumerate(phrase_gt)]
                    ),
                }
            )
        if preds:
            self.map.update(preds, gts)
        self.recall.update(ranked_list, gt_list)

    def _caption_predictions(self, pixel_boxes: Tensor, scores: Tensor) -> dict[str, Tensor]:
        """Every (phrase, query) pair as a detection, top ``max_detections`` by score.

        Args:
            pixel_boxes: (Q, 4) xyxy pixels; scores: (P, Q).
        Returns:
            MeanAveragePrecision prediction dict: boxes (D, 4), scores (D,), labels (D,) = phrase index.
        """
        num_phrases, num_queries = scores.shape
        flat = scores.flatten()
        keep = flat.topk(min(self.max_detections, flat.numel())).indices
        return {
            "boxes": pixel_boxes.repeat(num_phrases, 1)[keep],
            "scores": flat[keep],
            "labels": (keep // num_queries).long(),
        }

    def compute(self) -> dict[str, float]:
        """{"mAP", "mAP50", "mAP75", "R@1", "R@5", "R@10", "R@1_merged", ..., "num_phrases"} as floats."""
        result = {}
        map_result = self.map.compute()
        result["mAP"] = float(map_result["map"])
        result["mAP50"] = float(map_result["map_50"])
        result["mAP75"] = float(map_result["map_75"])
        for key, value in self.recall.compute().items():
            if key.startswith("R@") or key == "num_phrases":
                result[key] = float(value)
        return result

    def reset(self) -> None:
        self.map.reset()
        self.recall.reset()


# -- prediction files ---------------------------------------------------------------------------
SentenceKey = tuple[str, int]


def _key(image_id: Any, sentence_id: Any) -> SentenceKey:
    return str(image_id), int(sentence_id)


def collect_dataset_phrases(metas: Iterable[dict]) -> dict[SentenceKey, list[Tensor]]:
    """Batch meta dicts (see :meth:`GroundingEvaluator.update`) -> {(image_id, sentence_id):
    [per phrase (M, 4) xyxy GT boxes, in sentence order]}, the input of :func:`score_prediction_file`."""
    return {_key(m["image_id"], m["sentence_id"]): [_as_boxes(p["gt_boxes_xyxy"]) for p in m["phrases"]] for m in metas}


def sentence_keys(records: Iterable[Any]) -> set[SentenceKey]:
    """(image_id, sentence_id) of every sentence of a split, from its records (``ovd.data.readers.load_records``)
    *before* the dataset's skip policy: it includes the sentences :class:`ovd.data.dataset.GroundingDataset`
    drops for having no box (``skipped["no_boxes"]``), which exist but have no phrase to score."""
    return {_key(r.image_id, r.sentence_id) for r in records}


PREDICTION_KEYS = ("image_id", "sentence_id", "boxes")


def load_predictions(path: str) -> list[dict]:
    """Read a prediction file: a JSON list of {"image_id", "sentence_id", "boxes"} (MDETR's format), UTF-8.
    An unreadable file, text that is not UTF-8 or malformed JSON is a ``ValueError`` naming the file."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError as exc:
        raise ValueError(f"{path}: prediction file not found") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not valid UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: malformed JSON ({exc})") from exc
    except OSError as exc:  # a folder, no permission, ...
        raise ValueError(f"{path}: cannot read the prediction file ({exc.strerror or exc})") from exc
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of {{image_id, sentence_id, boxes}}")
    for i, entry in enumerate(data):
        lacking = [k for k in PREDICTION_KEYS if not isinstance(entry, Mapping) or k not in entry]
        if lacking:
            raise ValueError(f"{path}: entry {i} lacks {', '.join(lacking)}; each entry needs image_id, "
                             "sentence_id and boxes (one ranked list of xyxy pixel boxes per phrase)")
        # the values too: a null sentence_id or boxes was a TypeError traceback, a 1.5 silently sentence 1
        image_id, sentence_id, boxes = entry["image_id"], entry["sentence_id"], entry["boxes"]
        if isinstance(image_id, bool) or not isinstance(image_id, (str, int)):
            raise ValueError(f"{path}: entry {i}: image_id must be a string or an integer, got {image_id!r}")
        if isinstance(sentence_id, bool) or not (isinstance(sentence_id, int)
                                                 or (isinstance(sentence_id, str) and sentence_id.strip().isdigit())):
            raise ValueError(f"{path}: entry {i}: sentence_id must be an integer, got {sentence_id!r}")
        if not isinstance(boxes, list):
            raise ValueError(f"{path}: entry {i}: boxes must be a list (one ranked list of xyxy pixel boxes per "
                             f"phrase), got {type(boxes).__name__}")
    return data


def score_prediction_file(
    predictions: Sequence[dict],
    dataset_phrases: Mapping[SentenceKey, Sequence[Any]],
    ks: Sequence[int] = DEFAULT_KS,
    iou_threshold: float = 0.5,
    allow_missing: bool = False,
    all_sentences: Iterable[SentenceKey] | None = None,
) -> dict[str, float]:
    """Recall@k (ANY-BOX and MERGED-BOX) of an MDETR-style prediction file.

    Args:
        predictions: list of {"image_id", "sentence_id", "boxes"}; ``boxes`` holds, for each
            phrase of the sentence whose chain has boxes and in sentence order, a ranked list of
            xyxy pixel boxes (best first; may be empty).
        dataset_phrases: {(image_id as str, sentence_id as int): per phrase, its GT boxes (M, 4)
            xyxy pixels, or a phrase dict with ``gt_boxes_xyxy``}, e.g. from
            :func:`collect_dataset_phrases`.
        allow_missing: when False a dataset sentence without prediction raises ValueError; when
            True its phrases count as misses.
        all_sentences: every (image_id, sentence_id) of the split, scored or not (:func:`sentence_keys`
            of its records). A prediction for one of them that is not in ``dataset_phrases`` (the
            dataset skipped it: no phrase has a box) is accepted when its ``boxes`` is an empty list,
            as MDETR's evaluator accepts it, and scores nothing. Default: the keys of ``dataset_phrases``.
    Returns:
        {"R@1", "R@5", "R@10", "R@1_merged", ..., "num_phrases", "num_sentences",
        "num_sentences_without_phrases"} as floats; ``num_sentences`` counts the scored sentences,
        ``num_sentences_without_phrases`` the predictions accepted with nothing to score.
    Raises:
        ValueError: unknown or duplicated sentence, wrong number of phrase lists, malformed boxes.
    """
    gt_by_key = {
        _key(*key): [_as_boxes(p["gt_boxes_xyxy"] if isinstance(p, Mapping) else p) for p in phrases]
        for key, phrases in dataset_phrases.items()
    }
    known = set(gt_by_key) | {_key(*k) for k in (all_sentences or ())}
    metric = RecallAtK(ks, iou_threshold)
    seen: set[SentenceKey] = set()
    without_phrases = 0
    for pred in predictions:
        key = _key(pred["image_id"], pred["sentence_id"])
        where = f"image_id={key[0]!r} sentence_id={key[1]}"
        if key not in known:
            raise ValueError(f"prediction for {where} is not in the dataset")
        if key in seen:
            raise ValueError(f"duplicate prediction for {where}")
        seen.add(key)
        if key not in gt_by_key:  # a real sentence without any boxed phrase: nothing to score
            if len(pred["boxes"]) != 0:
                raise ValueError(f"{where}: the sentence has no phrase with a box, so expected an empty "
                                 f"\"boxes\" list, got {len(pred['boxes'])} ranked box lists")
            without_phrases += 1
            continue
        gt = gt_by_key[key]
        if len(pred["boxes"]) != len(gt):
            raise ValueError(
                f"{where}: got {len(pred['boxes'])} ranked box lists, expected {len(gt)} "
                "(one per phrase whose chain has boxes, in sentence order)"
            )
        try:
            ranked = [_as_boxes(b) for b in pred["boxes"]]
        except (ValueError, TypeError) as err:
            raise ValueError(f"{where}: {err}") from err
        metric.update(ranked, gt)
    missing = [key for key in gt_by_key if key not in seen]
    if missing and not allow_missing:
        shown = ", ".join(f"(image_id={k[0]!r}, sentence_id={k[1]})" for k in missing[:5])
        raise ValueError(f"{len(missing)} dataset sentences have no prediction, e.g. {shown}")
    for key in missing:
        metric.update([torch.zeros(0, 4)] * len(gt_by_key[key]), gt_by_key[key])
    result = {key: float(value) for key, value in metric.compute().items() if key.startswith("R@")}
    result["num_phrases"] = float(metric.total)
    result["num_sentences"] = float(len(gt_by_key))
    result["num_sentences_without_phrases"] = float(without_phrases)
    return result
