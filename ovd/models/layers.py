"""Building blocks whose implementation is a config switch: attention (three arms),
MLP (two arms) and query-token similarity (two arms).

Each pair of arms computes the same function given the same weights; the tests copy
weights across arms and compare outputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import MLP as TorchvisionMLP


class CrossAttention(nn.Module):
    """Multi-head attention from ``query`` tokens to ``key``/``value`` tokens.

    ``impl``:
      - ``"mha"``: ``nn.MultiheadAttention`` called the usual way (``need_weights`` left at its
        default True): computes bmm + softmax and averages the attention weights, never reaching SDPA.
      - ``"mha-fast"``: the same module with ``need_weights=False``, which dispatches to SDPA.
      - ``"sdpa"``: own q/k/v/out projections + ``F.scaled_dot_product_attention``.

    All arms hold the same parameters; :func:`convert_attention_state_dict` maps between layouts.
    """

    def __init__(self, dim: int, num_heads: int, impl: str = "sdpa", dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.impl = impl
        self.num_heads = num_heads
        self.dropout = dropout
        if impl in ("mha", "mha-fast"):
            self.mha = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        elif impl == "sdpa":
            self.q_proj = nn.Linear(dim, dim)
            self.k_proj = nn.Linear(dim, dim)
            self.v_proj = nn.Linear(dim, dim)
            self.out_proj = nn.Linear(dim, dim)
        else:
            raise ValueError(f"unknown attention impl {impl!r}; choose mha, mha-fast or sdpa")

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """query (B, Nq, D), key/value (B, Nk, D); key_padding_mask (B, Nk) bool, True = ignore
        (PyTorch's MHA convention). Returns (B, Nq, D)."""
        if self.impl == "mha":
            out, _ = self.mha(query, key, value, key_padding_mask=key_padding_mask)
            return out
        if self.impl == "mha-fast":
            out, _ = self.mha(query, key, value, key_padding_mask=key_padding_mask, need_weights=False)
            return out
        B, Nq, D = query.shape
        Nk = key.shape[1]
        h = self.num_heads
        q = self.q_proj(query).view(B, Nq, h, D // h).transpose(1, 2)  # (B, h, Nq, d)
        k = self.k_proj(key).view(B, Nk, h, D // h).transpose(1, 2)  # (B, h, Nk, d)
        v = self.v_proj(value).view(B, Nk, h, D // h).transpose(1, 2)
        attn_mask = None
        if key_padding_mask is not None:
            attn_mask = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, Nk), True = attend
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(B, Nq, D))


def convert_attention_state_dict(state: dict, to_impl: str) -> dict:
    """Map a :class:`CrossAttention` state dict between the MHA layout (``mha.in_proj_weight``
    (3D, D), ``mha.out_proj``) and the SDPA layout (``q_proj``/``k_proj``/``v_proj``/``out_proj``)."""
    is_mha = "mha.in_proj_weight" in state
    if to_impl in ("mha", "mha-fast"):
        if is_mha:
            return dict(state)
        return {
            "mha.in_proj_weight": torch.cat([state[f"{p}_proj.weight"] for p in "qkv"]),
            "mha.in_proj_bias": torch.cat([state[f"{p}_proj.bias"] for p in "qkv"]),
            "mha.out_proj.weight": state["out_proj.weight"],
            "mha.out_proj.bias": state["out_proj.bias"],
        }
    if not is_mha:
        return dict(state)
    w = state["mha.in_proj_weight"].chunk(3)
    b = state["mha.in_proj_bias"].chunk(3)
    out = {"out_proj.weight": state["mha.out_proj.weight"], "out_proj.bias": state["mha.out_proj.bias"]}
    for i, p in enumerate("qkv"):
        out[f"{p}_proj.weight"] = w[i]
        out[f"{p}_proj.bias"] = b[i]
    return out


def build_mlp(impl: str, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int,
              dropout: float = 0.0) -> nn.Sequential:
    """MLP of ``num_layers`` Linear layers with ReLU between (none after the last).

    ``"torchvision"`` uses ``torchvision.ops.MLP`` (an ``nn.Sequential`` subclass with a Dropout
    after every layer); ``"sequential"`` builds the same layers by hand, Dropout included, so the
    parameters, the math and even the state_dict keys match. The pair is a control: no speed
    difference is expected.
    """
    dims = [hidden_dim] * (num_layers - 1) + [out_dim]
    if impl == "torchvision":
        return TorchvisionMLP(in_dim, dims, activation_layer=nn.ReLU, dropout=dropout, inplace=False)
    if impl == "sequential":
        layers: list[nn.Module] = []
        prev = in_dim
        for i, d in enumerate(dims):
            layers.append(nn.Linear(prev, d))
            if i < len(dims) - 1:
                layers += [nn.ReLU(), nn.Dropout(dropout)]
            else:
                layers.append(nn.Dropout(dropout))
            prev = d
        return nn.Sequential(*layers)
    raise ValueError(f"unknown mlp impl {impl!r}; choose sequential or torchvision")


def linear_layers(mlp: nn.Sequential) -> list[nn.Linear]:
    """The Linear layers of either MLP arm, in order (to copy weights across arms)."""
    return [m for m in mlp if isinstance(m, nn.Linear)]


def cosine_similarity(a: torch.Tensor, b: torch.Tensor, impl: str) -> torch.Tensor:
    """Batched cosine similarity: a (B, Q, D), b (B, T, D) -> (B, Q, T).

    ``"matmul"``: F.normalize (eps 1e-12, so an all-zero row scores 0) then bmm.
    ``"torchmetrics"``: ``torchmetrics.functional.pairwise_cosine_similarity`` per batch element;
    it accepts 2-D inputs only and returns NaN for an all-zero row (it has no eps).
    """
    if impl == "matmul":
        return torch.bmm(F.normalize(a, dim=-1), F.normalize(b, dim=-1).transpose(1, 2))
    if impl == "torchmetrics":
        from torchmetrics.functional import pairwise_cosine_similarity

        return torch.stack([pairwise_cosine_similarity(a[i], b[i]) for i in range(a.shape[0])])
    raise ValueError(f"unknown similarity impl {impl!r}; choose matmul or torchmetrics")


def sine_position_embedding(height: int, width: int, dim: int, device=None, dtype=None) -> torch.Tensor:
    """2-D sine/cosine position embedding (DETR style) for an H x W grid -> (H*W, dim)."""
    if dim % 4:
        raise ValueError(f"position embedding dim {dim} must be divisible by 4")
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter))
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height * 2 * math.pi
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width * 2 * math.pi
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    y = y.reshape(-1, 1) * omega
    x = x.reshape(-1, 1) * omega
    emb = torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1)
    return emb.to(dtype) if dtype is not None else emb
