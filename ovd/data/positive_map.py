"""Char spans -> token positions, via a fast tokenizer's offset mapping.

``offset_mapping`` is what a Hugging Face fast tokenizer returns with
``return_offsets_mapping=True``: one (char_start, char_end) per token, end exclusive;
special and padding tokens have (0, 0) and so never match a span.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Span = tuple[int, int]


def _as_offsets(offset_mapping) -> torch.Tensor:
    offsets = torch.as_tensor(offset_mapping, dtype=torch.long)
    if offsets.ndim != 2 or offsets.shape[-1] != 2:
        raise ValueError(f"offset_mapping must have shape (T, 2), got {tuple(offsets.shape)}")
    return offsets


def phrase_token_mask(offset_mapping, spans: Sequence[Span]) -> torch.Tensor:
    """BoolTensor (T,): True for tokens that overlap any of the char ``spans``."""
    offsets = _as_offsets(offset_mapping)
    starts, ends = offsets[:, 0], offsets[:, 1]
    real = ends > starts  # special/padding tokens are (0, 0)
    mask = torch.zeros(offsets.shape[0], dtype=torch.bool)
    for s, e in spans:
        # half-open interval overlap: a token touching the span only at an edge is out
        mask |= real & (starts < e) & (ends > s)
    return mask


def build_positive_map(offset_mapping, spans_per_box: Sequence[Sequence[Span]], num_tokens: int) -> torch.Tensor:
    """FloatTensor (N, num_tokens), binary: row i is 1 on tokens overlapping any span of box i.

    ``offset_mapping``: (T, 2) for one caption. Tokens past ``num_tokens`` are ignored and
    columns past T stay 0, so the map can be padded to a fixed text length.
    """
    offsets = _as_offsets(offset_mapping)[:num_tokens]
    out = torch.zeros(len(spans_per_box), num_tokens, dtype=torch.float32)
    for i, spans in enumerate(spans_per_box):
        out[i, : offsets.shape[0]] = phrase_token_mask(offsets, spans).float()
    return out
