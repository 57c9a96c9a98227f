"""Reader for Flickr30k Entities in its own layout.

```
<root>/Sentences/<id>.txt     captions, one per line, phrases marked
                              [/EN#<chain id>/<type>[/<type>...] words]
<root>/Annotations/<id>.xml   VOC-like; <object> has one or more <name> (chain ids) and either
                              a 1-based <bndbox> or <nobndbox>/<scene> flags
<root>/<split>.txt            one image id per line (train, val, test, novel, ...)
<root>/Images/<id>.jpg        (or <root>/flickr30k-images/<id>.jpg)
```

Boxes come out as 0-based pixel xyxy: x0 = xmin - 1, y0 = ymin - 1, x1 = xmax, y1 = ymax
(1-based inclusive corners -> 0-based half-open corners).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DataError
from .images import resolve_under
from .records import BoxAnnotation, GroundingRecord, Phrase

__all__ = [
    "Phrase",
    "FlickrAnnotation",
    "parse_sentence",
    "read_sentences",
    "read_annotation",
    "read_split_ids",
    "find_image",
    "load_flickr30k",
    "NO_BOX_CHAIN",
]

#: Chain id Flickr30k Entities uses for phrases that refer to nothing visible ("notvisual").
NO_BOX_CHAIN = "0"
IMAGE_DIRS = ("Images", "flickr30k-images")

# [/EN#<digits>/<type>[/<type>...] <words>]; words may not contain brackets.
_PHRASE_RE = re.compile(r"\[/EN#(?P<chain>\d+)(?P<types>(?:/[^\s/\[\]]+)+)\s+(?P<words>[^\[\]]+?)\s*\]")


def parse_sentence(line: str, where: str = "<sentence>") -> tuple[str, list[Phrase]]:
    """Parse one annotated line into (clean caption, phrases in order).

    ``where`` (e.g. ``"Sentences/123.txt:2"``) prefixes error messages. Unbalanced brackets
    or markup that is not ``[/EN#<id>/<type> words]`` raise ``DataError``.

    >>> parse_sentence("[/EN#1/people A man] runs .")
    ('A man runs .', [Phrase(text='A man', char_start=0, char_end=5, chain_id='1', types=('people',), spans=((0, 5),))])
    """
    line = line.rstrip("\r\n")
    caption_parts: list[str] = []
    phrases: list[Phrase] = []
    length = 0  # length of the clean caption so far
    pos = 0
    for match in _PHRASE_RE.finditer(line):
        _check_plain(line[pos : match.start()], pos, where)
        caption_parts.append(line[pos : match.start()])
        length += match.start() - pos
        words = match.group("words")
        phrases.append(
            Phrase(
                text=words,
                char_start=length,
                char_end=length + len(words),
                chain_id=str(int(match.group("chain"))),  # "007" and "7" are the same chain
                types=tuple(match.group("types").strip("/").split("/")),
            )
        )
        caption_parts.append(words)
        length += len(words)
        pos = match.end()
    _check_plain(line[pos:], pos, where)
    caption_parts.append(line[pos:])
    return "".join(caption_parts), phrases


def _check_plain(text: str, offset: int, where: str) -> None:
    """Text between phrases must hold no bracket: any left over means broken markup."""
    for i, ch in enumerate(text):
        if ch in "[]":
            kind = "unbalanced '['" if ch == "[" else "unbalanced ']'"
            raise DataError(f"{where}: malformed phrase markup ({kind} at column {offset + i + 1}): {text.strip()!r}")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # -sig: tolerate a BOM
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def read_sentences(path: str | Path) -> list[tuple[str, list[Phrase]]]:
    """All (caption, phrases) of a ``Sentences/<id>.txt`` file; blank lines are ignored."""
    path = Path(path)
    out = []
    for line_no, line in enumerate(_read_text(path).splitlines(), start=1):
        if line.strip():
            out.append(parse_sentence(line, where=f"{path}:{line_no}"))
    return out


@dataclass
class FlickrAnnotation:
    """Contents of one ``Annotations/<id>.xml``."""

    width: int
    height: int
    boxes: list[BoxAnnotation]  # pixel xyxy, 0-based
    # chain id -> {"nobndbox": 0/1, "scene": 0/1} for objects without a box
    no_box_chains: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def chains_with_boxes(self) -> set[str]:
        return {c for b in self.boxes for c in b.chain_ids}


def _int_field(elem: ET.Element, tag: str, path: Path) -> int:
    node = elem.find(tag)
    if node is None or node.text is None:
        raise DataError(f"{path}: <{elem.tag}> has no <{tag}>")
    try:
        return int(float(node.text.strip()))  # some files write "12.0"
    except ValueError as exc:  # also "nan"
        raise DataError(f"{path}: <{tag}> is not a number: {node.text!r}") from exc
    except OverflowError as exc:  # "inf", "1e999"
        raise DataError(f"{path}: <{tag}> is not a finite number: {node.text!r}") from exc


def read_annotation(path: str | Path) -> FlickrAnnotation:
    """Parse an ``Annotations/<id>.xml`` file. Malformed XML raises ``DataError``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DataError(f"{path}: malformed XML ({exc})") from exc
    size = root.find("size")
    if size is None:
        raise DataError(f"{path}: no <size> element")
    ann = FlickrAnnotation(width=_int_field(size, "width", path), height=_int_field(size, "height", path), boxes=[])
    for obj in root.iter("object"):
        names = [n.text.strip() for n in obj.findall("name") if n.text and n.text.strip()]
        if not names:
            raise DataError(f"{path}: <object> without <name>")
        chains = frozenset(str(int(n)) if n.isdigit() else n for n in names)
        bnd = obj.find("bndbox")
        if bnd is not None:
            xmin, ymin = _int_field(bnd, "xmin", path), _int_field(bnd, "ymin", path)
            xmax, ymax = _int_field(bnd, "xmax", path), _int_field(bnd, "ymax", path)
            ann.boxes.append(BoxAnnotation((float(xmin - 1), float(ymin - 1), float(xmax), float(ymax)), chains))
        else:
            flags = {}
            for tag in ("nobndbox", "scene"):
                text = obj.findtext(tag, "0").strip() or "0"
                try:
                    flags[tag] = int(text)
                except ValueError as exc:
                    raise DataError(f"{path}: <{tag}> is not an integer flag (0 or 1): {text!r}") from exc
            for chain in chains:
                ann.no_box_chains[chain] = flags
    return ann


def read_split_ids(root: str | Path, split: str) -> list[str]:
    """Image ids listed in ``<root>/<split>.txt`` (blank lines ignored, order kept)."""
    path = Path(root) / f"{split}.txt"
    if not path.is_file():
        available = sorted(p.stem for p in Path(root).glob("*.txt"))
        raise DataError(f"{path}: split file not found (available splits: {available})")
    return [line.strip() for line in _read_text(path).splitlines() if line.strip()]


def find_image(root: str | Path, image_id: str) -> Path:
    """Path of the image of ``image_id`` under ``Images/`` or ``flickr30k-images/``."""
    for folder in IMAGE_DIRS:
        path = resolve_under(root, f"{folder}/{image_id}.jpg")
        if path.is_file():
            return path
    raise DataError(f"image id {image_id!r}: no {image_id}.jpg under {Path(root)}/{{{','.join(IMAGE_DIRS)}}}")


def load_flickr30k(root: str | Path, split: str, check_images: bool = True) -> list[GroundingRecord]:
    """One ``GroundingRecord`` per (image, caption) of ``split``.

    A split id without its sentence or annotation file (or image, with ``check_images``)
    raises ``DataError`` naming the id. A phrase whose chain id is neither "0" nor present in
    the XML becomes a no-box phrase and is counted in ``record.notes["unknown_chain_id"]``.
    """
    root = Path(root)
    records = []
    for image_id in read_split_ids(root, split):
        sentence_path = resolve_under(root, f"Sentences/{image_id}.txt")
        annotation_path = resolve_under(root, f"Annotations/{image_id}.xml")
        missing = [p.relative_to(root.resolve()) for p in (sentence_path, annotation_path) if not p.is_file()]
        if missing:
            raise DataError(f"image id {image_id!r} in {root / (split + '.txt')}: missing {', '.join(map(str, missing))}")
        ann = read_annotation(annotation_path)
        if check_images:
            image_path = find_image(root, image_id)
        else:
            image_path = resolve_under(root, f"{IMAGE_DIRS[0]}/{image_id}.jpg")
        known = ann.chains_with_boxes | set(ann.no_box_chains) | {NO_BOX_CHAIN}
        for sentence_id, (caption, phrases) in enumerate(read_sentences(sentence_path)):
            notes = Counter(unknown_chain_id=sum(p.chain_id not in known for p in phrases))
            records.append(
                GroundingRecord(
                    image_id=image_id,
                    sentence_id=sentence_id,
                    caption=caption,
                    image_path=image_path,
                    width=ann.width,
                    height=ann.height,
                    phrases=phrases,
                    boxes=ann.boxes,
                    source=f"{sentence_path}",
                    notes=+notes,  # unary + drops zero counts
                )
            )
    return records
