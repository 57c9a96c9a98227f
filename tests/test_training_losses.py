"""SetCriterion (ovd.training.losses): keys, weighting, masking, normalization, and that it trains."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ovd.config import LossConfig
from ovd.training.losses import SetCriterion, build_criterion
from ovd.training.matcher import HungarianMatcher

T = 6
PAD_LOGIT = -1e4


def make_targets() -> list[dict]:
    return [
        {
            "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]]),
            "positive_map": torch.tensor([[1.0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0]]),
        },
        {"boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]]), "positive_map": torch.tensor([[0.0, 1, 1, 0, 0, 0]])},
    ]


def make_outputs(targets: list[dict], queries: int = 4, perfect_boxes: bool = False, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    batch = len(targets)
    logits = torch.randn(batch, queries, T, generator=g)
    boxes = torch.rand(batch, queries, 4, generator=g) * 0.4 + 0.2
    if perfect_boxes:
        for b, t in enumerate(targets):
            boxes[b, : len(t["boxes"])] = t["boxes"]
    text_mask = torch.ones(batch, T, dtype=torch.bool)
    text_mask[1, 4:] = False
    logits[~text_mask[:, None, :].expand_as(logits)] = PAD_LOGIT
    return {"pred_logits": logits, "pred_boxes": boxes, "text_mask": text_mask}


@pytest.fixture
def criterion() -> SetCriterion:
    return build_criterion(LossConfig())


def test_perfect_boxes_give_zero_box_losses(criterion):
    targets = make_targets()
    losses = criterion(make_outputs(targets, perfect_boxes=True), targets)
    assert losses["loss_bbox"].item() == pytest.approx(0.0, abs=1e-6)
    # generalized_box_iou_loss divides by (union + 1e-7): 1 - IoU of identical boxes is ~1e-7 / area
    # (area 0.04 here), so zero within 1e-5, not exactly.
    assert losses["loss_giou"].item() == pytest.approx(0.0, abs=1e-5)


def test_perfect_logits_give_near_zero_class_loss(criterion):
    targets = make_targets()
    outputs = make_outputs(targets, perfect_boxes=True)
    logits = torch.full_like(outputs["pred_logits"], -20.0)
    for b, t in enumerate(targets):
        logits[b, : len(t["boxes"])] = torch.where(t["positive_map"] > 0, 20.0, -20.0)
    logits[~outputs["text_mask"][:, None, :].expand_as(logits)] = PAD_LOGIT
    outputs["pred_logits"] = logits
    assert criterion(outputs, targets)["loss_class"].item() < 1e-6


def test_keys_and_weighted_total():
    targets = make_targets()
    outputs = make_outputs(targets)
    outputs["aux_outputs"] = [make_outputs(targets, seed=s) for s in (1, 2)]
    outputs["enc_outputs"] = make_outputs(targets, seed=3)
    crit = SetCriterion(HungarianMatcher(2, 5, 2), weight_class=1.0, weight_bbox=3.0, weight_giou=0.5)
    losses = crit(outputs, targets)
    suffixes = ["", "_0", "_1", "_enc"]
    expected = {f"{n}{s}" for n in ("loss_class", "loss_bbox", "loss_giou") for s in suffixes} | {"total_loss"}
    assert set(losses) == expected
    total = sum(
        w * losses[f"{n}{s}"]
        for n, w in (("loss_class", 1.0), ("loss_bbox", 3.0), ("loss_giou", 0.5))
        for s in suffixes
    )
    torch.testing.assert_close(losses["total_loss"], total)
    assert all(v.dtype == torch.float32 and v.ndim == 0 for v in losses.values())


def test_aux_loss_off_skips_aux_and_enc():
    targets = make_targets()
    outputs = make_outputs(targets)
    outputs["aux_outputs"] = [make_outputs(targets, seed=1)]
    outputs["enc_outputs"] = make_outputs(targets, seed=2)
    losses = build_criterion(LossConfig(aux_loss=False))(outputs, targets)
    assert set(losses) == {"loss_class", "loss_bbox", "loss_giou", "total_loss"}


def test_padded_tokens_do_not_count(criterion):
    targets = make_targets()
    outputs = make_outputs(targets)
    reference = criterion(outputs, targets)["loss_class"]
    changed = dict(outputs, pred_logits=outputs["pred_logits"].clone())
    changed["pred_logits"][1, :, 4:] = 5.0  # garbage at padded positions
    torch.testing.assert_close(criterion(changed, targets)["loss_class"], reference)


def test_normalized_by_number_of_boxes(criterion):
    """Duplicating the batch doubles the summed losses and the box count: losses stay equal."""
    targets = make_targets()
    outputs = make_outputs(targets)
    doubled = {k: torch.cat([v, v]) for k, v in outputs.items()}
    single = criterion(outputs, targets)
    double = criterion(doubled, targets + targets)
    for key in ("loss_class", "loss_bbox", "loss_giou"):
        torch.testing.assert_close(single[key], double[key])


def test_empty_targets_give_finite_losses_and_gradients(criterion):
    targets = [{"boxes": torch.zeros(0, 4), "positive_map": torch.zeros(0, T)}] * 2
    outputs = make_outputs(make_targets())
    outputs["pred_logits"].requires_grad_(True)
    outputs["pred_boxes"].requires_grad_(True)
    losses = criterion(outputs, targets)
    assert losses["loss_bbox"].item() == 0.0 and losses["loss_giou"].item() == 0.0
    assert torch.isfinite(losses["total_loss"])
    losses["total_loss"].backward()
    assert torch.isfinite(outputs["pred_logits"].grad).all()


def test_half_precision_inputs_give_float32_losses(criterion):
    targets = make_targets()
    outputs = make_outputs(targets)
    reference = criterion(outputs, targets)
    outputs_bf16 = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in outputs.items()}
    losses = criterion(outputs_bf16, targets)
    assert losses["total_loss"].dtype == torch.float32
    torch.testing.assert_close(losses["loss_bbox"], reference["loss_bbox"], atol=0.05, rtol=0.05)


class ToyPredictor(nn.Module):
    """Fixed per-query features -> nn.Linear -> (alignment logits, sigmoid boxes)."""

    def __init__(self, dim: int, num_tokens: int) -> None:
        super().__init__()
        self.logits = nn.Linear(dim, num_tokens)
        self.boxes = nn.Linear(dim, 4)

    def forward(self, features: torch.Tensor) -> dict:
        return {
            "pred_logits": self.logits(features),
            "pred_boxes": self.boxes(features).sigmoid(),
            "text_mask": torch.ones(features.shape[0], self.logits.out_features, dtype=torch.bool),
        }


def test_loss_decreases_when_overfitting_a_tiny_set():
    torch.manual_seed(0)
    features = torch.randn(2, 5, 16)  # (B, Q, D) fixed random "query features"
    targets = make_targets()
    model = ToyPredictor(16, T)
    criterion = build_criterion(LossConfig())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    history = []
    for _ in range(100):
        losses = criterion(model(features), targets)
        optimizer.zero_grad()
        losses["total_loss"].backward()
        optimizer.step()
        history.append(losses["total_loss"].item())
    assert history[-1] < 0.25 * history[0]
    final = criterion(model(features), targets)
    assert final["loss_bbox"].item() < 0.1


def old_giou_loss(src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """The formula loss_boxes used before: the diagonal of the (M, M) GIoU matrix, 1 - GIoU per pair."""
    from torchvision.ops import generalized_box_iou

    return 1 - torch.diag(generalized_box_iou(src, tgt))


def random_xyxy(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 4) valid normalized xyxy boxes, each side at least 0.05 (so eps=1e-7 is far below the areas)."""
    corner = torch.rand(n, 2, generator=generator) * 0.6
    size = torch.rand(n, 2, generator=generator) * 0.35 + 0.05
    return torch.cat([corner, corner + size], dim=1)


def test_giou_loss_matches_the_old_matrix_diagonal_formula():
    from torchvision.ops import box_convert

    from ovd.training.losses import loss_boxes

    g = torch.Generator().manual_seed(0)
    src, tgt = random_xyxy(64, g), random_xyxy(64, g)
    tgt[:8] = src[:8]  # identical pairs: loss 0
    tgt[8:16, :2] = src[8:16, :2] + 1.0  # disjoint pairs: loss > 1
    tgt[8:16, 2:] = tgt[8:16, :2] + 0.1
    tgt[16:20, 2] = tgt[16:20, 0]  # zero-width target (degenerate, but the union is not empty)
    expected = old_giou_loss(src, tgt)
    assert torch.isfinite(expected).all() and (expected[8:16] > 1).all() and (expected[:8] == 0).all()

    # Through loss_boxes: B=2 images of 32 matched pairs each, normalized by num_boxes.
    pred = box_convert(src, "xyxy", "cxcywh").reshape(2, 32, 4)
    boxes = box_convert(tgt, "xyxy", "cxcywh").reshape(2, 32, 4)
    idx = torch.arange(32)
    matches = [(idx, idx), (idx, idx)]
    targets = [{"boxes": boxes[0]}, {"boxes": boxes[1]}]
    _, giou = loss_boxes(pred, matches, targets, num_boxes=64.0)
    torch.testing.assert_close(giou, expected.sum() / 64, atol=1e-5, rtol=1e-5)

    # Gradients agree too (the eps only shifts denominators by 1e-7).
    a = src.clone().requires_grad_(True)
    old_giou_loss(a, tgt).sum().backward()
    b = src.clone().requires_grad_(True)
    from torchvision.ops import generalized_box_iou_loss

    generalized_box_iou_loss(b, tgt, reduction="sum").backward()
    torch.testing.assert_close(b.grad, a.grad, atol=1e-4, rtol=1e-4)


def test_giou_loss_of_zero_area_pairs_is_finite_where_the_old_formula_gave_nan():
    from ovd.training.losses import loss_boxes

    point = torch.tensor([[0.5, 0.5, 0.0, 0.0]])  # cxcywh, a zero-area box
    old = old_giou_loss(torch.tensor([[0.5, 0.5, 0.5, 0.5]]), torch.tensor([[0.5, 0.5, 0.5, 0.5]]))
    assert torch.isnan(old).all()  # what training would have stopped on (NonFiniteLossError)
    idx = torch.arange(1)
    _, giou = loss_boxes(point[None], [(idx, idx)], [{"boxes": point}], num_boxes=1.0)
    assert giou.item() == pytest.approx(1.0)
