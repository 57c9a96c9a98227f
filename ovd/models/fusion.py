"""Fusion: image tokens attend to text tokens (pre-norm residual cross-attention + FFN)."""

from __future__ import annotations

import torch
from torch import nn

from .layers import CrossAttention, build_mlp


class FusionLayer(nn.Module):
    def __init__(self, *, dim: int, num_heads: int, attention: str, mlp: str, ffn_ratio: float,
                 dropout: float) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, num_heads, impl=attention, dropout=dropout)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = build_mlp(mlp, dim, int(dim * ffn_ratio), dim, num_layers=2, dropout=dropout)

    def forward(self, image_tokens, image_pos, text_tokens, text_padding_mask):
        q = self.norm_attn(image_tokens) + image_pos
        image_tokens = image_tokens + self.attn(q, text_tokens, text_tokens, key_padding_mask=text_padding_mask)
        return image_tokens + self.ffn(self.norm_ffn(image_tokens))


class Fusion(nn.Module):
    """image_tokens (B, N, D), image_pos (B, N, D), text_tokens (B, T, D),
    text_padding_mask (B, T) bool True = padding -> fused image tokens (B, N, D).

    ``attention`` and ``mlp`` (config ``fusion.attention`` / ``fusion.mlp``) reach these layers only."""

    def __init__(self, *, dim: int, num_layers: int, num_heads: int, attention: str, mlp: str,
                 ffn_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            FusionLayer(dim=dim, num_heads=num_heads, attention=attention, mlp=mlp, ffn_ratio=ffn_ratio,
                        dropout=dropout)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, image_tokens: torch.Tensor, image_pos: torch.Tensor, text_tokens: torch.Tensor,
                text_padding_mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            image_tokens = layer(image_tokens, image_pos, text_tokens, text_padding_mask)
        return self.norm(image_tokens)
