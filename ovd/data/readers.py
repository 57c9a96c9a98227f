"""Format dispatch: one call that turns (root, format, split) into records."""

from __future__ import annotations

from pathlib import Path

from .errors import DataError
from .flickr30k import load_flickr30k
from .mdetr import load_mdetr
from .records import GroundingRecord

FORMATS = ("flickr30k", "mdetr")


def load_records(root: str | Path, format: str, split: str, image_dir: str | Path | None = None) -> list[GroundingRecord]:
    """Records of ``split`` read from ``root`` in ``format`` ("flickr30k" or "mdetr")."""
    if format == "flickr30k":
        return load_flickr30k(root, split)
    if format == "mdetr":
        return load_mdetr(root, split, image_dir=image_dir)
    raise DataError(f"unknown data format {format!r}; choose one of {list(FORMATS)}")
