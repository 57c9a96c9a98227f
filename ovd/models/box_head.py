"""DETR-style box head: queries -> transformer decoder -> boxes (sigmoid cxcywh) and
query-text alignment logits, with layer-by-layer box refinement.

Query initialization (``box_head.query_init``):
  - ``learned``: DETR/MDETR-style learned content queries and learned reference boxes.
  - ``language-guided``: Grounding DINO-style selection: every fused image token is scored
    against the text tokens, the top-Q tokens become the queries' content and their predicted
    proposal boxes the reference boxes. The proposals are returned as ``enc_outputs`` so the
    loss supervises them too. This converges far faster on small CPU budgets (DESIGN.md).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..boxes import inverse_sigmoid
from .layers import CrossAttention, build_mlp, cosine_similarity

PADDING_LOGIT = -1e4  # finite (fp16-safe) "never this token" logit at padded text positions


def box_sine_embedding(boxes: torch.Tensor, dim: int) -> torch.Tensor:
    """boxes (B, Q, 4) in [0, 1] -> (B, Q, dim): sine/cosine of each coordinate, dim/4 per coord."""
    quarter = dim // 4
    half = quarter // 2
    freq = 10000 ** (torch.arange(half, device=boxes.device, dtype=torch.float32) / half)
    angles = boxes.float()[..., None] * 2 * math.pi / freq  # (B, Q, 4, half)
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(2)  # (B, Q, 4 * 2 * half)
    if emb.shape[-1] < dim:
        emb = torch.nn.functional.pad(emb, (0, dim - emb.shape[-1]))
    return emb.to(boxes.dtype)


class DecoderLayer(nn.Module):
    """Self-attention among queries, cross-attention to image tokens, FFN (post-norm, as DETR)."""

    def __init__(self, *, dim: int, num_heads: int, attention: str, mlp: str, ffn_ratio: float,
                 dropout: float) -> None:
        super().__init__()
        self.self_attn = CrossAttention(dim, num_heads, impl=attention, dropout=dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = CrossAttention(dim, num_heads, impl=attention, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = build_mlp(mlp, dim, int(dim * ffn_ratio), dim, num_layers=2, dropout=dropout)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, queries, query_pos, memory, memory_pos):
        q = queries + query_pos
        queries = self.norm1(queries + self.self_attn(q, q, queries))
        queries = self.norm2(queries + self.cross_attn(queries + query_pos, memory + memory_pos, memory))
        return self.norm3(queries + self.ffn(queries))


class BoxHead(nn.Module):
    """Decoder + box/alignment heads. ``attention`` (config ``box_head.attention``) reaches the decoder's
    self- and cross-attention only; ``mlp`` (``box_head.mlp``) every MLP of this head only."""

    def __init__(self, *, dim: int, num_queries: int, num_decoder_layers: int, num_heads: int,
                 attention: str, mlp: str, similarity: str, query_init: str,
                 ffn_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.dim = dim
        self.num_queries = num_queries
        self.similarity = similarity
        self.query_init = query_init
        self.layers = nn.ModuleList(
            DecoderLayer(dim=dim, num_heads=num_heads, attention=attention, mlp=mlp, ffn_ratio=ffn_ratio,
                         dropout=dropout)
            for _ in range(num_decoder_layers)
        )
        self.query_pos_mlp = build_mlp(mlp, dim, dim, dim, num_layers=2)
        self.bbox_mlp = build_mlp(mlp, dim, dim, 4, num_layers=3)
        nn.init.zeros_(self._last_linear(self.bbox_mlp).weight)
        nn.init.zeros_(self._last_linear(self.bbox_mlp).bias)
        self.query_proj = nn.Linear(dim, dim)
        # Alignment logits = cosine * scale + bias; bias starts at the focal-loss prior (p = 0.01).
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.logit_bias = nn.Parameter(torch.tensor(-math.log((1 - 0.01) / 0.01)))
        if query_init == "learned":
            self.query_content = nn.Embedding(num_queries, dim)
            self.query_boxes = nn.Embedding(num_queries, 4)
            nn.init.uniform_(self.query_boxes.weight, -2.0, 2.0)  # logits of reference boxes
        else:
            self.proposal_norm = nn.LayerNorm(dim)
            self.proposal_bbox_mlp = build_mlp(mlp, dim, dim, 4, num_layers=3)
            nn.init.zeros_(self._last_linear(self.proposal_bbox_mlp).weight)
            nn.init.zeros_(self._last_linear(self.proposal_bbox_mlp).bias)

    @staticmethod
    def _last_linear(mlp: nn.Sequential) -> nn.Linear:
        return [m for m in mlp if isinstance(m, nn.Linear)][-1]

    def alignment_logits(self, queries: torch.Tensor, text_tokens: torch.Tensor,
                         text_padding_mask: torch.Tensor) -> torch.Tensor:
        """queries (B, Q, D), text_tokens (B, T, D) -> logits (B, Q, T); padded tokens PADDING_LOGIT."""
        cos = cosine_similarity(self.query_proj(queries), text_tokens, self.similarity)
        logits = cos * self.logit_scale.exp().clamp(max=100) + self.logit_bias
        return logits.masked_fill(text_padding_mask[:, None, :], PADDING_LOGIT)

    def forward(self, memory: torch.Tensor, memory_pos: torch.Tensor, spatial_shapes: list,
                text_tokens: torch.Tensor, text_padding_mask: torch.Tensor) -> dict:
        """memory (B, N, D) fused image tokens; memory_pos (B, N, D); text_tokens (B, T, D);
        text_padding_mask (B, T) True = padding.

        Returns pred_logits (B, Q, T), pred_boxes (B, Q, 4) normalized cxcywh, aux_outputs
        (one dict per earlier decoder layer) and, for language-guided queries, enc_outputs.
        """
        B = memory.shape[0]
        out: dict = {}
        if self.query_init == "learned":
            queries = self.query_content.weight[None].expand(B, -1, -1)
            reference = self.query_boxes.weight.sigmoid()[None].expand(B, -1, -1)
        else:
            queries, reference, enc = self._select_queries(memory, spatial_shapes, text_tokens, text_padding_mask)
            out["enc_outputs"] = enc
        layer_outputs = []
        for layer in self.layers:
            query_pos = self.query_pos_mlp(box_sine_embedding(reference, self.dim))
            queries = layer(queries, query_pos, memory, memory_pos)
            boxes = (self.bbox_mlp(queries) + inverse_sigmoid(reference)).sigmoid()
            logits = self.alignment_logits(queries, text_tokens, text_padding_mask)
            layer_outputs.append({"pred_logits": logits, "pred_boxes": boxes})
            reference = boxes.detach()  # refine from the previous layer's boxes, no gradient through them
        out.update(layer_outputs[-1])
        out["aux_outputs"] = layer_outputs[:-1]
        return out

    def _select_queries(self, memory, spatial_shapes, text_tokens, text_padding_mask):
        tokens = self.proposal_norm(memory)
        anchors = grid_anchors(spatial_shapes, memory.device, memory.dtype)  # (N, 4) cxcywh
        proposal_boxes = (self.proposal_bbox_mlp(tokens) + inverse_sigmoid(anchors)[None]).sigmoid()
        token_logits = self.alignment_logits(tokens, text_tokens, text_padding_mask)  # (B, N, T)
        k = min(self.num_queries, memory.shape[1])
        if k < self.num_queries:
            raise ValueError(f"box_head.num_queries={self.num_queries} exceeds the {memory.shape[1]} image "
                             "tokens available for language-guided query selection; use fewer queries or "
                             "a larger image")
        top = token_logits.max(-1).values.topk(k, dim=1).indices  # (B, Q)
        gather = top[..., None]
        queries = torch.gather(memory, 1, gather.expand(-1, -1, memory.shape[-1]))
        boxes = torch.gather(proposal_boxes, 1, gather.expand(-1, -1, 4))
        logits = torch.gather(token_logits, 1, gather.expand(-1, -1, token_logits.shape[-1]))
        enc = {"pred_logits": logits, "pred_boxes": boxes}
        return queries.detach(), boxes.detach(), enc


def grid_anchors(spatial_shapes: list, device, dtype) -> torch.Tensor:
    """One anchor box per token: the cell centre, width/height 0.05 * 2**level -> (N, 4) cxcywh."""
    anchors = []
    for level, (h, w) in enumerate(spatial_shapes):
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        size = torch.full_like(x, 0.05 * 2 ** level)
        anchors.append(torch.stack([x, y, size, size], -1).reshape(-1, 4))
    return torch.cat(anchors).to(dtype)
