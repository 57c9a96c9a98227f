"""Pure box helpers. Formats: ``cxcywh`` (centre x, centre y, width, height) and ``xyxy``
(x0, y0, x1, y1). "Normalized" means divided by image width/height, so values lie in [0, 1].

Conversions and IoU come from torchvision.ops; this module only adds the scaling glue.
"""

from __future__ import annotations

import torch
from torchvision.ops import box_convert


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) cxcywh -> (..., 4) xyxy, same units."""
    return box_convert(boxes, "cxcywh", "xyxy")


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) xyxy -> (..., 4) cxcywh, same units."""
    return box_convert(boxes, "xyxy", "cxcywh")


def normalized_cxcywh_to_pixel_xyxy(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 4) normalized cxcywh -> (N, 4) xyxy in pixels of an image of ``height`` x ``width``,
    clipped to the image."""
    xyxy = cxcywh_to_xyxy(boxes)
    scale = torch.tensor([width, height, width, height], dtype=xyxy.dtype, device=xyxy.device)
    xyxy = xyxy * scale
    xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, width)
    xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, height)
    return xyxy


def pixel_xyxy_to_normalized_cxcywh(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 4) xyxy in pixels -> (N, 4) normalized cxcywh."""
    scale = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
    return xyxy_to_cxcywh(boxes / scale)


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Logit of a probability tensor, clamped so 0 and 1 stay finite (used for box refinement)."""
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))
