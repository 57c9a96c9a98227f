"""Format-neutral annotation records shared by the readers and the dataset.

Both readers (Flickr30k Entities layout, MDETR json) produce ``GroundingRecord`` objects, one
per image-caption pair; the dataset never needs to know which format they came from.

Box format everywhere in this module: **pixel xyxy, 0-based, in the original image**
(x0, y0 inclusive, x1, y1 exclusive, so width = x1 - x0), exactly as annotated (not yet
clipped or validated: the dataset's skip policy does that and counts what it drops).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

Span = tuple[int, int]  # (char_start, char_end), end exclusive, into the clean caption


@dataclass(frozen=True)
class Phrase:
    """A phrase of a caption that refers to an entity chain.

    ``caption[char_start:char_end] == text`` for single-span phrases. ``spans`` holds every
    char span of the phrase (MDETR phrases may be split); for Flickr it is just
    ``((char_start, char_end),)``.
    """

    text: str
    char_start: int
    char_end: int
    chain_id: str
    types: tuple[str, ...] = ()
    spans: tuple[Span, ...] = ()

    def __post_init__(self) -> None:
        if not self.spans:  # frozen dataclass: default the spans to the one main span
            object.__setattr__(self, "spans", ((self.char_start, self.char_end),))


@dataclass(frozen=True)
class BoxAnnotation:
    """One annotated box and the chain ids it belongs to (a Flickr ``<object>`` may name
    several chains for one box)."""

    xyxy: tuple[float, float, float, float]  # pixel xyxy, 0-based, original image
    chain_ids: frozenset[str]


@dataclass
class GroundingRecord:
    """One image-caption pair with its phrases and all boxes of the image."""

    image_id: str
    sentence_id: int
    caption: str
    image_path: Path
    width: int | None  # annotated image size (None: read it from the image header)
    height: int | None
    phrases: list[Phrase]
    boxes: list[BoxAnnotation]
    source: str = ""  # annotation file (and line) the record came from, for messages
    # Reader-level problems already found (e.g. "unknown_chain_id"), merged into the
    # dataset's counters so every oddity is counted once, in one place.
    notes: Counter = field(default_factory=Counter)

    @property
    def chains_with_boxes(self) -> set[str]:
        return {c for b in self.boxes for c in b.chain_ids}
