"""Set-prediction losses for the grounding detector (DETR / Grounding DINO style).

After Hungarian matching (:mod:`ovd.training.matcher`), three losses are computed per
decoder output, all in float32 (AMP safe) and normalized by the number of target boxes:

- ``loss_class``: sigmoid focal loss over every (query, real text token) pair; the target
  of a matched query is the ``positive_map`` row of its target box, of any other query 0.
  Padded text positions (``text_mask`` False) are excluded.
- ``loss_bbox``: L1 between matched normalized cxcywh boxes.
- ``loss_giou``: ``1 - GIoU`` between matched boxes (xyxy), torchvision's pairwise
  ``generalized_box_iou_loss`` (O(M), where an M x M ``generalized_box_iou`` matrix and its
  diagonal would be O(M^2)); its ``eps=1e-7`` keeps a zero-area pair finite (loss 1) instead of NaN.

Keys: the final layer gives ``loss_class``/``loss_bbox``/``loss_giou``; intermediate decoder
layer ``i`` (``outputs["aux_outputs"][i]``) adds ``*_{i}``; the query proposals
(``outputs["enc_outputs"]``) add ``*_enc``. ``total_loss`` is the weighted sum of all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou_loss, sigmoid_focal_loss

from ovd.training.matcher import HungarianMatcher, MatchIndices, build_matcher

LOSS_NAMES = ("loss_class", "loss_bbox", "loss_giou")


def num_target_boxes(targets: Sequence[dict], device: torch.device) -> float:
    """Total number of target boxes in the batch, averaged over DDP processes, at least 1."""
    num = torch.tensor([float(sum(len(t["boxes"]) for t in targets))], device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(num)
        num = num / dist.get_world_size()
    return max(num.item(), 1.0)


def class_targets(
    matches: Sequence[MatchIndices], targets: Sequence[dict], shape: torch.Size, device: torch.device
) -> Tensor:
    """Dense (B, Q, T) float targets for the alignment logits.

    Row ``(b, q)`` is ``targets[b]["positive_map"][j]`` when query q is matched to box j, else 0.
    """
    dense = torch.zeros(shape, dtype=torch.float32, device=device)
    for b, (q_idx, t_idx) in enumerate(matches):
        if len(q_idx):
            dense[b, q_idx.to(device)] = targets[b]["positive_map"][t_idx.to(targets[b]["positive_map"].device)].to(
                dense
            )
    return dense


def loss_class(
    pred_logits: Tensor,
    text_mask: Tensor,
    matches: Sequence[MatchIndices],
    targets: Sequence[dict],
    num_boxes: float,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> Tensor:
    """Sigmoid focal loss on (query, token) pairs, summed over real tokens, divided by ``num_boxes``.

    Args:
        pred_logits: (B, Q, T) raw alignment logits.
        text_mask: (B, T) bool, True for real tokens.
    """
    logits = pred_logits.float()
    target = class_targets(matches, targets, logits.shape, logits.device)
    loss = sigmoid_focal_loss(logits, target, alpha=alpha, gamma=gamma, reduction="none")  # (B, Q, T)
    keep = text_mask[:, None, :].to(device=logits.device, dtype=torch.bool).expand_as(loss)
    return torch.where(keep, loss, torch.zeros_like(loss)).sum() / num_boxes


def matched_boxes(
    pred_boxes: Tensor, matches: Sequence[MatchIndices], targets: Sequence[dict]
) -> tuple[Tensor, Tensor]:
    """Gather matched pairs: (M, 4) predicted and (M, 4) target boxes, normalized cxcywh, float32."""
    src = [pred_boxes[b, q_idx.to(pred_boxes.device)] for b, (q_idx, _) in enumerate(matches)]
    tgt = [
        targets[b]["boxes"][t_idx.to(targets[b]["boxes"].device)].to(pred_boxes.device)
        for b, (_, t_idx) in enumerate(matches)
    ]
    return torch.cat(src).float(), torch.cat(tgt).float()


def loss_boxes(
    pred_boxes: Tensor, matches: Sequence[MatchIndices], targets: Sequence[dict], num_boxes: float
) -> tuple[Tensor, Tensor]:
    """L1 (on normalized cxcywh) and ``1 - GIoU`` (on xyxy) over matched pairs, each summed / ``num_boxes``.

    ``1 - GIoU`` is ``torchvision.ops.generalized_box_iou_loss`` (eps 1e-7 in the IoU and enclosing-box
    denominators): equal to ``1 - diag(generalized_box_iou(src, tgt))`` up to that eps, and 1 rather
    than NaN for a pair of zero-area boxes.

    Args:
        pred_boxes: (B, Q, 4) normalized cxcywh.
    Returns:
        (loss_bbox, loss_giou) scalars; exactly 0 (still attached to the graph) when nothing matched.
    """
    src, tgt = matched_boxes(pred_boxes, matches, targets)
    if src.numel() == 0:
        zero = pred_boxes.float().sum() * 0.0
        return zero, zero
    l1 = (src - tgt).abs().sum() / num_boxes
    # Pairwise on the matched pairs only: (M,) losses, not an (M, M) matrix to take the diagonal of.
    src_xyxy, tgt_xyxy = box_convert(src, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy")
    giou = generalized_box_iou_loss(src_xyxy, tgt_xyxy, reduction="sum")
    return l1, giou / num_boxes


class SetCriterion(nn.Module):
    """Hungarian-matched grounding losses for the final layer, aux layers and query proposals.

    Args:
        matcher: a :class:`HungarianMatcher`.
        weight_class, weight_bbox, weight_giou: weights of the three losses in ``total_loss``.
        focal_alpha, focal_gamma: sigmoid focal loss parameters.
        aux_loss: also compute losses on ``aux_outputs`` and ``enc_outputs`` when present.
    """

    def __init__(
        self,
        matcher: HungarianMatcher,
        weight_class: float = 2.0,
        weight_bbox: float = 5.0,
        weight_giou: float = 2.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        aux_loss: bool = True,
    ) -> None:
        super().__init__()
        self.matcher = matcher
        self.weights = {"loss_class": weight_class, "loss_bbox": weight_bbox, "loss_giou": weight_giou}
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.aux_loss = aux_loss

    def single_output_losses(self, output: dict, text_mask: Tensor, targets: Sequence[dict], num_boxes: float) -> dict:
        """Match and compute the three losses for one set of predictions.

        Args:
            output: ``pred_logits`` (B, Q, T), ``pred_boxes`` (B, Q, 4) normalized cxcywh.
            text_mask: (B, T) bool.
        Returns:
            {"loss_class", "loss_bbox", "loss_giou"} float32 scalars.
        """
        matches = self.matcher(output, targets)
        cls = loss_class(
            output["pred_logits"], text_mask, matches, targets, num_boxes, self.focal_alpha, self.focal_gamma
        )
        l1, giou = loss_boxes(output["pred_boxes"], matches, targets, num_boxes)
        return {"loss_class": cls, "loss_bbox": l1, "loss_giou": giou}

    def forward(self, outputs: dict, targets: Sequence[dict]) -> dict[str, Tensor]:
        """Compute all losses.

        Args:
            outputs: ``pred_logits`` (B, Q, T), ``pred_boxes`` (B, Q, 4) normalized cxcywh,
                ``text_mask`` (B, T) bool, optional ``aux_outputs`` (list of dicts with
                pred_logits/pred_boxes) and ``enc_outputs`` (one such dict).
            targets: B dicts with ``boxes`` (N_b, 4) normalized cxcywh, ``positive_map`` (N_b, T).
        Returns:
            dict of float32 scalars: ``loss_class``, ``loss_bbox``, ``loss_giou``, the same with
            suffix ``_{i}`` per aux layer and ``_enc``, and ``total_loss``.
        """
        text_mask = outputs["text_mask"]
        num_boxes = num_target_boxes(targets, outputs["pred_logits"].device)
        losses = dict(self.single_output_losses(outputs, text_mask, targets, num_boxes))
        if self.aux_loss:
            for i, aux in enumerate(outputs.get("aux_outputs") or []):
                for name, value in self.single_output_losses(aux, text_mask, targets, num_boxes).items():
                    losses[f"{name}_{i}"] = value
            if outputs.get("enc_outputs") is not None:
                enc = self.single_output_losses(outputs["enc_outputs"], text_mask, targets, num_boxes)
                for name, value in enc.items():
                    losses[f"{name}_enc"] = value
        losses["total_loss"] = self.weighted_sum(losses)
        return losses

    def weighted_sum(self, losses: dict[str, Tensor]) -> Tensor:
        """Sum of every ``loss_class*``/``loss_bbox*``/``loss_giou*`` entry times its weight."""
        total = None
        for key, value in losses.items():
            base = next((n for n in LOSS_NAMES if key == n or key.startswith(n + "_")), None)
            if base is None:
                continue
            term = self.weights[base] * value
            total = term if total is None else total + term
        return total


def build_criterion(loss_config) -> SetCriterion:
    """Translate an ``ovd.config.LossConfig`` into a :class:`SetCriterion` (with its matcher)."""
    return SetCriterion(
        build_matcher(loss_config),
        weight_class=loss_config.weight_class,
        weight_bbox=loss_config.weight_bbox,
        weight_giou=loss_config.weight_giou,
        focal_alpha=loss_config.focal_alpha,
        focal_gamma=loss_config.focal_gamma,
        aux_loss=loss_config.aux_loss,
    )
