"""Image loading with clear errors: every failure names the file and the problem."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DataError


def resolve_under(root: str | os.PathLike, relative: str | os.PathLike) -> Path:
    """``root / relative``, refusing anything that escapes ``root`` (``../``, absolute paths,
    symlinks pointing out). Ids and file names come from annotation files, which we do not
    trust to stay inside the data folder."""
    root_path = Path(root).resolve()
    candidate = (root_path / relative).resolve()
    if not candidate.is_relative_to(root_path):
        raise DataError(f"{relative}: path escapes the data root {root_path}")
    return candidate


#: Pillow's modes for 16-bit grayscale ("I": 32-bit integers, how Pillow opens some 16-bit files).
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _sixteen_bit_to_l(img: Image.Image) -> Image.Image:
    """16-bit grayscale (0-65535) -> 8-bit "L" keeping the high byte (v >> 8, the inverse of the usual
    8 -> 16 bit expansion v * 257). Pillow's own convert("L") clips at 255 instead, which turns all but
    the darkest 1/256 of the range white. Mode "I" values outside 0-65535 are clipped to it first."""
    import numpy as np

    values = np.asarray(img).astype(np.int64)  # I;16B arrives big-endian, I as int32: one dtype for both
    return Image.fromarray((np.clip(values, 0, 65535) >> 8).astype(np.uint8))  # 2-D uint8: mode "L"


def load_image(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Image.Image:
    """Decode an image file to an RGB ``PIL.Image`` in display orientation.

    - EXIF orientation is applied (``exif_transpose``) so pixel coordinates match the way
      annotators saw the image.
    - Grayscale, palette, RGBA/LA (alpha dropped), CMYK, ... are converted to RGB; 16-bit grayscale
      (I;16, I;16B, I) is scaled to 8 bits first (high byte, ``v >> 8``), not clipped.
    - Missing, unreadable, corrupt or truncated files raise ``DataError("<path>: ...")``.
    - With ``root`` given, a path outside ``root`` raises ``DataError``.
    """
    path = Path(path)
    if root is not None:
        path = resolve_under(root, path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            img.load()  # force the full decode here: truncation only shows up on load
            img = ImageOps.exif_transpose(img)
            if img.mode in SIXTEEN_BIT_MODES:
                img = _sixteen_bit_to_l(img)
            elif img.mode in ("P", "PA", "LA", "F"):
                # palette/alpha/float modes do not convert straight to RGB everywhere
                img = img.convert("RGBA") if img.mode in ("P", "PA", "LA") else img.convert("L")
            return img.convert("RGB") if img.mode != "RGB" else img.copy()
    except UnidentifiedImageError as exc:
        raise DataError(f"{path}: not a recognised image file ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # PIL reports corrupt/truncated data so
        raise DataError(f"{path}: corrupt or truncated image ({exc})") from exc


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) in display orientation, reading only the header (cheap)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(0x0112, 1)  # EXIF Orientation tag
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot read image header ({exc})") from exc
    # orientations 5-8 swap width and height
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)
