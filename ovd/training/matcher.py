"""Hungarian matching between predicted queries and target boxes (DETR / Grounding DINO style).

Box format everywhere in this module: **normalized cxcywh** (values in [0, 1]); boxes are
converted to xyxy only for the GIoU term.

The cost of assigning query ``q`` to target box ``j`` is::

    cost_class * C_class[q, j] + cost_bbox * ||b_q - b_j||_1 + cost_giou * (-GIoU(b_q, b_j))

where ``C_class`` is Grounding DINO's focal cost on the per-token probabilities
``p = sigmoid(pred_logits)``, averaged over the tokens that describe box ``j`` (its row of
``positive_map``, normalized to sum to 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou

MatchIndices = tuple[Tensor, Tensor]


def focal_token_cost(prob: Tensor, alpha: float = 0.25, gamma: float = 2.0, eps: float = 1e-8) -> Tensor:
    """Per-token focal matching cost (lower is better for a positive token).

    Args:
        prob: (..., T) probabilities in [0, 1] (sigmoid of alignment logits).
    Returns:
        (..., T) ``pos_cost - neg_cost``: the focal loss of calling the token positive minus
        the focal loss of calling it negative (Deformable DETR / Grounding DINO).
    """
    neg_cost = (1 - alpha) * prob.pow(gamma) * -(1 - prob + eps).log()
    pos_cost = alpha * (1 - prob).pow(gamma) * -(prob + eps).log()
    return pos_cost - neg_cost


def normalize_positive_map(positive_map: Tensor, eps: float = 1e-6) -> Tensor:
    """(N, T) binary positive map -> (N, T) rows summing to 1 (all-zero rows stay zero)."""
    return positive_map / positive_map.sum(dim=-1, keepdim=True).clamp(min=eps)


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to target boxes, per image, minimizing the weighted cost.

    Args:
        cost_class: weight of the focal token-alignment cost.
        cost_bbox: weight of the L1 distance between normalized cxcywh boxes.
        cost_giou: weight of the negative generalized IoU (on xyxy).
        focal_alpha, focal_gamma: focal cost parameters.
    """

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("HungarianMatcher: all costs are 0; at least one must be positive")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    @torch.no_grad()
    def cost_matrix(self, outputs: dict, targets: Sequence[dict]) -> Tensor:
        """Batched cost between every query of the batch and every target box of the batch.

        Args:
            outputs: ``pred_logits`` (B, Q, T) raw logits, ``pred_boxes`` (B, Q, 4) normalized cxcywh.
            targets: B dicts with ``boxes`` (N_b, 4) normalized cxcywh and ``positive_map`` (N_b, T).
        Returns:
            (B, Q, sum_b N_b) float32 cost on the CPU; only the block of image b's own targets is
            meaningful for image b.
        """
        logits = outputs["pred_logits"].float()
        bs, num_queries, num_tokens = logits.shape
        prob = logits.flatten(0, 1).sigmoid()  # (B*Q, T)
        pred_boxes = outputs["pred_boxes"].float().flatten(0, 1)  # (B*Q, 4)

        tgt_boxes = torch.cat([t["boxes"] for t in targets]).to(pred_boxes)  # (Ntot, 4)
        tgt_map = torch.cat([t["positive_map"] for t in targets]).to(prob)  # (Ntot, T)
        if tgt_map.shape[-1] != num_tokens:
            raise ValueError(f"positive_map has {tgt_map.shape[-1]} token positions but pred_logits has {num_tokens}")

        token_cost = focal_token_cost(prob, self.focal_alpha, self.focal_gamma)  # (B*Q, T)
        class_cost = token_cost @ normalize_positive_map(tgt_map).T  # (B*Q, Ntot)
        bbox_cost = torch.cdist(pred_boxes, tgt_boxes, p=1)  # (B*Q, Ntot)
        giou_cost = -generalized_box_iou(
            box_convert(pred_boxes, "cxcywh", "xyxy"), box_convert(tgt_boxes, "cxcywh", "xyxy")
        )
        cost = self.cost_class * class_cost + self.cost_bbox * bbox_cost + self.cost_giou * giou_cost
        return cost.view(bs, num_queries, -1).cpu()

    @torch.no_grad()
    def forward(self, outputs: dict, targets: Sequence[dict]) -> list[MatchIndices]:
        """Match queries to targets.

        Args:
            outputs: dict with ``pred_logits`` (B, Q, T) and ``pred_boxes`` (B, Q, 4) normalized cxcywh.
            targets: list of B dicts with ``boxes`` (N_b, 4) normalized cxcywh and
                ``positive_map`` (N_b, T) binary; N_b may be 0.
        Returns:
            B tuples ``(query_idx, target_idx)`` of int64 CPU tensors of length min(Q, N_b);
            ``query_idx[i]`` is matched to target box ``target_idx[i]``.
        """
        sizes = [len(t["boxes"]) for t in targets]
        if len(sizes) != outputs["pred_logits"].shape[0]:
            raise ValueError(f"got {len(sizes)} targets for a batch of {outputs['pred_logits'].shape[0]}")
        if sum(sizes) == 0:
            return [_empty_match() for _ in sizes]
        cost = self.cost_matrix(outputs, targets)
        if not torch.isfinite(cost).all():
            raise ValueError("HungarianMatcher: non-finite matching cost (NaN/inf in predictions?)")
        matches = []
        for b, block in enumerate(cost.split(sizes, dim=-1)):
            if sizes[b] == 0:
                matches.append(_empty_match())
                continue
            q_idx, t_idx = linear_sum_assignment(block[b].numpy())
            matches.append((torch.as_tensor(q_idx, dtype=torch.int64), torch.as_tensor(t_idx, dtype=torch.int64)))
        return matches


def _empty_match() -> MatchIndices:
    return torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64)


def build_matcher(loss_config) -> HungarianMatcher:
    """Translate an ``ovd.config.LossConfig`` into a :class:`HungarianMatcher`."""
    return HungarianMatcher(
        cost_class=loss_config.cost_class,
        cost_bbox=loss_config.cost_bbox,
        cost_giou=loss_config.cost_giou,
        focal_alpha=loss_config.focal_alpha,
        focal_gamma=loss_config.focal_gamma,
    )
