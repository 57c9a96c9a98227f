"""ovd: an open-vocabulary object detector in a baseline and an optimized configuration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .config import DetectorConfig, get_config, list_presets

__all__ = ["DetectorConfig", "create_model", "get_config", "list_presets"]
__version__ = "0.1.0"


def create_model(name: str | DetectorConfig, overrides: Mapping[str, Any] | None = None):
    """Build a detector from a preset name (plus dotted-key overrides) or a config.

    >>> model = create_model("optimized-tiny", {"fusion.attention": "mha"})
    """
    from .models.detector import OpenVocabDetector

    config = name if isinstance(name, DetectorConfig) else get_config(name, overrides)
    return OpenVocabDetector.from_config(config)
