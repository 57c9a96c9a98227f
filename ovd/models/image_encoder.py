"""Image encoder: a timm backbone (Swin by default) -> multi-scale tokens projected to out_dim."""

from __future__ import annotations

import timm
import torch
from torch import nn

from .layers import sine_position_embedding


class ImageEncoder(nn.Module):
    """images (B, 3, S, S) -> tokens (B, N, D), pos (B, N, D), spatial_shapes [(H_l, W_l)].

    Tokens are the last ``num_feature_levels`` backbone stages, each projected to ``out_dim``
    (1x1 projection + GroupNorm) and flattened row-major, coarse levels last. ``pos`` holds a 2-D
    sine position embedding plus a learned level embedding.
    """

    def __init__(self, backbone: str, out_dim: int, image_size: int, num_feature_levels: int = 2,
                 pretrained: bool = False, backbone_kwargs: dict | None = None) -> None:
        super().__init__()
        kwargs = dict(backbone_kwargs or {})
        if "swin" in backbone:
            kwargs.setdefault("img_size", image_size)
        try:
            probe = timm.create_model(backbone, pretrained=False, features_only=True, **kwargs)
        except Exception as err:  # timm raises RuntimeError/TypeError for bad names or kwargs
            raise ValueError(f"cannot build timm backbone {backbone!r} with {kwargs}: {err}") from err
        num_stages = len(probe.feature_info)
        out_indices = tuple(range(num_stages - num_feature_levels, num_stages))
        del probe
        try:
            self.backbone = timm.create_model(backbone, pretrained=pretrained, features_only=True,
                                              out_indices=out_indices, **kwargs)
        except Exception as err:
            if pretrained:
                raise RuntimeError(
                    f"could not load pretrained weights for {backbone!r} (no network?). Build with "
                    "image.pretrained=false, or place the weights in the timm/HF cache first."
                ) from err
            raise
        self.channels = self.backbone.feature_info.channels()
        # Swin in timm returns NHWC feature maps; convnets return NCHW.
        self.channels_last_output = "swin" in backbone
        self.proj = nn.ModuleList(
            nn.Sequential(nn.Linear(c, out_dim), nn.LayerNorm(out_dim)) for c in self.channels
        )
        self.level_embed = nn.Parameter(torch.zeros(len(self.channels), out_dim))
        self.out_dim = out_dim

    def forward(self, images: torch.Tensor) -> dict:
        features = self.backbone(images)
        tokens, pos, shapes = [], [], []
        for level, (feat, proj) in enumerate(zip(features, self.proj)):
            if not self.channels_last_output:
                feat = feat.permute(0, 2, 3, 1)
            B, H, W, C = feat.shape
            tokens.append(proj(feat.reshape(B, H * W, C)))
            p = sine_position_embedding(H, W, self.out_dim, device=feat.device, dtype=tokens[-1].dtype)
            pos.append((p + self.level_embed[level].to(p.dtype)).expand(B, -1, -1))
            shapes.append((H, W))
        return {"tokens": torch.cat(tokens, 1), "pos": torch.cat(pos, 1), "spatial_shapes": shapes}

    def backbone_parameters(self):
        return self.backbone.parameters()
