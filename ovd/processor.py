"""The one input processor: raw images and text -> model tensors, shared by the dataset, the collator,
``model.predict`` and the benchmark's batches, so training and inference see the same pixels and tokens.

Images: RGB -> uint8 (3, H, W) -> resized to (S, S) with antialiasing (torchvision v2, the aspect ratio is
not kept: boxes are normalized per axis) -> float in [0, 1] -> ImageNet-normalized. A uint8 tensor batch
(values 0-255) takes the same steps as a PIL image; a float tensor batch must already be in [0, 1] and skips
the uint8 step (one outside [0, 1] is refused: :func:`check_pixel_range`).
Text: a fast (Rust) Hugging Face tokenizer, padding to the longest prompt, truncation at ``max_tokens``
(special tokens included) with one warning per truncated prompt naming it (and, for training captions,
the phrases lost). Phrase char spans map to token positions through the offset mapping
(:func:`ovd.data.positive_map.phrase_token_mask`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PHRASE_SEPARATOR = " . "  # joins a list of phrases into one prompt, as Grounding DINO does


def image_to_tensor(image, size: int) -> torch.Tensor:
    """PIL image (any mode) -> float (3, size, size), ImageNet-normalized."""
    from torchvision.transforms.v2 import functional as TF

    pixels = TF.pil_to_tensor(image.convert("RGB") if image.mode != "RGB" else image)  # uint8 (3, H, W)
    pixels = TF.resize(pixels, [size, size], antialias=True)
    return TF.normalize(pixels.float() / 255.0, IMAGENET_MEAN, IMAGENET_STD)


#: How far a float image tensor may stray outside [0, 1] before it is refused: under one 8-bit level, room
#: for rounding and resampling overshoot, while a 0-255 image (any pixel above level 1) is caught.
PIXEL_RANGE_SLACK = 1.0 / 255


def check_pixel_range(images: torch.Tensor) -> None:
    """Refuse a float image tensor with a value outside [0, 1] (beyond :data:`PIXEL_RANGE_SLACK`) or a NaN: a
    ``ValueError`` naming its min and max. It reads one ``aminmax`` back from the tensor's device; on a GPU the
    queue is empty when a call starts, so that costs one small kernel's round trip, not a stall."""
    low, high = (v.item() for v in torch.aminmax(images.detach().float()))
    if not (low >= -PIXEL_RANGE_SLACK and high <= 1.0 + PIXEL_RANGE_SLACK):  # NaN compares False: refused
        raise ValueError(f"float image tensor values must lie in [0, 1], got min {low:.4g}, max {high:.4g}; "
                         "divide 0-255 pixels by 255 or pass a uint8 tensor, and do not ImageNet-normalize "
                         "(the processor does)")


def images_to_batch(images, size: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """PIL images, or a (B, 3, H, W) tensor -> normalized (B, 3, size, size) and each image's original (H, W).

    A uint8 tensor (values 0-255) is resized and scaled by 1/255 exactly as a PIL image is; a float tensor
    must hold values in [0, 1] (a ``ValueError`` otherwise: :func:`check_pixel_range`); other dtypes are a
    ``ValueError``."""
    from torchvision.transforms.v2 import functional as TF

    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError("image tensor must be (B, 3, H, W), uint8 0-255 or float in [0, 1], "
                             f"got {tuple(images.shape)}")
        sizes = [tuple(images.shape[-2:])] * images.shape[0]
        if images.dtype == torch.uint8:  # as image_to_tensor: resize the 8-bit pixels, then scale to [0, 1]
            batch = images
            if tuple(batch.shape[-2:]) != (size, size):
                batch = TF.resize(batch, [size, size], antialias=True)
            return TF.normalize(batch.float() / 255.0, IMAGENET_MEAN, IMAGENET_STD), sizes
        if not images.is_floating_point():
            raise ValueError(f"image tensor must be uint8 (0-255) or float (values in [0, 1]), got {images.dtype}")
        if images.numel():
            check_pixel_range(images)
        batch = images.float()
        if tuple(batch.shape[-2:]) != (size, size):
            batch = TF.resize(batch, [size, size], antialias=True)
        return TF.normalize(batch, IMAGENET_MEAN, IMAGENET_STD), sizes
    from PIL import Image

    accepted = "a list of PIL images or one (B, 3, H, W) tensor (uint8 0-255 or float in [0, 1])"
    if isinstance(images, Image.Image):
        raise ValueError(f"images must be {accepted}, got a single PIL image: pass [image]")
    try:
        images = list(images)
    except TypeError:
        raise ValueError(f"images must be {accepted}, got {type(images).__name__}") from None
    if not images:
        raise ValueError("no images given")
    for i, img in enumerate(images):
        if not isinstance(img, Image.Image):
            raise ValueError(f"images[{i}] is a {type(img).__name__}: images must be {accepted}; stack same-size "
                             "(3, H, W) tensors with torch.stack, or convert arrays with PIL.Image.fromarray")
    sizes = [(img.height, img.width) for img in images]
    return torch.stack([image_to_tensor(img, size) for img in images]), sizes


def join_phrases(phrases: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """["red circle", "blue square"] -> ("red circle . blue square", [(0, 10), (13, 24)]): one prompt and
    each phrase's char span in it (end exclusive)."""
    cleaned = [p.strip() for p in phrases]
    if not cleaned or any(not p for p in cleaned):
        raise ValueError(f"phrase list {list(phrases)!r} is empty or holds an empty phrase")
    caption, spans = "", []
    for phrase in cleaned:
        if caption:
            caption += PHRASE_SEPARATOR
        spans.append((len(caption), len(caption) + len(phrase)))
        caption += phrase
    return caption, spans


def prompt_caption(prompt: str | Sequence[str]) -> str:
    """The caption a prompt is tokenized as: a string as it is, a phrase list joined (:func:`join_phrases`)."""
    return prompt if isinstance(prompt, str) else join_phrases(prompt)[0]


class InputProcessor:
    """Images and prompts -> model inputs. ``tokenizer`` must be a fast tokenizer (offset mappings);
    ``image_size`` is the model's square input side; ``max_tokens`` the prompt limit (special tokens
    included)."""

    def __init__(self, tokenizer, image_size: int, max_tokens: int) -> None:
        if tokenizer is not None and not getattr(tokenizer, "is_fast", False):
            raise TypeError("the input processor needs a fast (Rust) tokenizer for offset mappings")
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.max_tokens = int(max_tokens)

    @classmethod
    def from_config(cls, config) -> InputProcessor:
        """From a :class:`~ovd.config.DetectorConfig` (its text encoder's tokenizer)."""
        from .models.text_encoder import load_tokenizer

        return cls(load_tokenizer(config.text.name_or_path), config.image.image_size, config.text.max_tokens)

    # -- images ------------------------------------------------------------------------------
    def image(self, image) -> torch.Tensor:
        """One PIL image -> float (3, S, S), normalized."""
        return image_to_tensor(image, self.image_size)

    def images(self, images) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """PIL images, or a (B, 3, H, W) tensor (uint8 0-255, or float in [0, 1]) -> (B, 3, S, S) and
        original (H, W)s: :func:`images_to_batch`."""
        return images_to_batch(images, self.image_size)

    # -- text --------------------------------------------------------------------------------
    def tokenize(self, captions: Sequence[str], names: Sequence[str] | None = None,
                 warn: bool = True):
        """Captions -> a ``BatchEncoding`` with input_ids / attention_mask (B, T) and offset_mapping (B, T, 2).

        An empty caption is a ``ValueError``. A caption longer than ``max_tokens`` is truncated; with
        ``warn`` a warning names it (``names[i]`` when given, e.g. "image 'x' sentence 2")."""
        if self.tokenizer is None:
            raise RuntimeError("this processor has no tokenizer (images only)")
        for i, caption in enumerate(captions):
            if not isinstance(caption, str) or not caption.strip():
                where = names[i] if names else f"prompt {i}"
                raise ValueError(f"{where} is empty; give a caption or a list of phrases")
        enc = self.tokenizer(list(captions), padding="longest", truncation=True, max_length=self.max_tokens,
                             return_offsets_mapping=True, return_tensors="pt")
        if warn:
            for i in self.truncated(enc):
                self.warn_truncated(captions[i], names[i] if names else f"prompt {i}")
        return enc

    @staticmethod
    def truncated(enc) -> list[int]:
        """Indices of the captions of ``enc`` that lost tokens to ``max_tokens``."""
        return [i for i, e in enumerate(enc.encodings) if e.overflowing]

    def warn_truncated(self, caption: str, name: str, lost_phrases: Sequence[str] | None = None,
                       lost_boxes: int | None = None) -> None:
        """The one truncation warning (predict prompts and training captions alike)."""
        msg = f"{name} truncated to text.max_tokens={self.max_tokens} tokens: {caption[:120]!r}"
        if lost_phrases is not None:
            msg += f"; phrases dropped: {list(lost_phrases)}"
        if lost_boxes is not None:
            msg += f"; boxes dropped: {lost_boxes}"
        warnings.warn(msg, stacklevel=3)
