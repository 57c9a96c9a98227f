"""The one input processor: raw images and text -> model tensors, shared by the dataset, the collator,
``model.predict`` and the benchmark's batches, so training and inference see the same pixels and tokens.

Images: RGB -> uint8 (3, H, W) -> resized to (S, S) with antialiasing (torchvision v2, the aspect ratio is
not kept: boxes are normalized per axis) -> float in [0, 1] -> ImageNet-normalized. A float tensor batch
already in [0, 1] skips the uint8 step.
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


def images_to_batch(images, size: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """PIL images, or a float tensor (B, 3, H, W) with values in [0, 1] -> normalized (B, 3, size, size)
    and each image's original (H, W)."""
    from torchvision.transforms.v2 import functional as TF

    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"image tensor must be (B, 3, H, W) with values in [0, 1], got {tuple(images.shape)}")
        sizes = [tuple(images.shape[-2:])] * images.shape[0]
        batch = images.float()
        if tuple(batch.shape[-2:]) != (size, size):
            batch = TF.resize(batch, [size, size], antialias=True)
        return TF.normalize(batch, IMAGENET_MEAN, IMAGENET_STD), sizes
    images = list(images)
    if not images:
        raise ValueError("no images given")
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
        """PIL images or a float (B, 3, H, W) tensor in [0, 1] -> (B, 3, S, S) and original (H, W)s."""
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
