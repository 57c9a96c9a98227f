"""Reader for MDETR's COCO-style grounding json (``final_flickr_separateGT_<split>.json``).

``images``: one record per caption: ``id``, ``file_name``, ``height``, ``width``, ``caption``,
``tokens_positive_eval`` (per phrase, a list of [start, end] char spans), optionally
``original_img_id`` and ``sentence_id``.
``annotations``: ``image_id`` (the caption record's id), ``bbox`` (pixel xywh),
``tokens_positive`` (list of [start, end] char spans), optionally ``phrase_ids``.

A box belongs to every phrase whose spans overlap the box's ``tokens_positive``: that
phrase index becomes the chain id, so the dataset treats both formats the same way.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import torch
from torchvision.ops import box_convert

from .errors import DataError
from .images import resolve_under
from .records import BoxAnnotation, GroundingRecord, Phrase, Span

__all__ = ["find_mdetr_json", "load_mdetr"]

JSON_DIRS = ("", "annotations", "mdetr_annotations")
IMAGE_DIRS = ("images", "flickr30k-images", "Images")


def find_mdetr_json(root: str | Path, split: str) -> Path:
    """``<root>[/annotations|/mdetr_annotations]/final_flickr_separateGT_<split>.json``."""
    name = f"final_flickr_separateGT_{split}.json"
    for sub in JSON_DIRS:
        path = Path(root) / sub / name
        if path.is_file():
            return path
    raise DataError(f"{Path(root)}: no {name} (looked in {[str(Path(root) / s) for s in JSON_DIRS]})")


def _spans(value, caption: str, where: str) -> list[Span]:
    """Validate a list of [start, end] spans against the caption."""
    try:
        spans = [(int(s), int(e)) for s, e in value]
    except (TypeError, ValueError, OverflowError) as exc:
        raise DataError(f"{where}: spans must be a list of [start, end], got {value!r}") from exc
    for s, e in spans:
        if not 0 <= s < e <= len(caption):
            raise DataError(f"{where}: span [{s}, {e}] lies outside the caption (length {len(caption)}): {caption!r}")
    return spans


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _id_key(value, where: str):
    """An id as a dict key: json ids are numbers or strings; a list or object cannot match anything."""
    if isinstance(value, (list, dict)):
        raise DataError(f"{where} must be a number or a string, got {_short(value)}")
    return value


def _overlaps(a: list[Span], b: list[Span]) -> bool:
    return any(s1 < e2 and s2 < e1 for s1, e1 in a for s2, e2 in b)


def _image_dir(root: Path, image_dir: str | Path | None) -> Path:
    if image_dir is not None:
        return Path(image_dir)
    for sub in IMAGE_DIRS:
        if (root / sub).is_dir():
            return root / sub
    return root / IMAGE_DIRS[0]


def load_mdetr(root: str | Path, split: str, image_dir: str | Path | None = None, json_path: str | Path | None = None) -> list[GroundingRecord]:
    """One ``GroundingRecord`` per caption record of the json.

    Spans outside the caption, missing keys or bad json raise ``DataError`` naming the file
    and the record. ``file_name`` must stay inside the image folder.
    """
    root = Path(root)
    path = Path(json_path) if json_path is not None else find_mdetr_json(root, split)
    images_root = _image_dir(root, image_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: malformed json ({exc})") from exc
    if not isinstance(data, dict) or "images" not in data:
        raise DataError(f"{path}: expected a COCO-style object with an 'images' list")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key, []), list):
            raise DataError(f"{path}: '{key}' must be a list of objects, got {type(data[key]).__name__}")

    anns_by_image = defaultdict(list)
    for index, ann in enumerate(data.get("annotations", [])):
        if not isinstance(ann, dict):
            raise DataError(f"{path}: annotation {index} must be an object, got {type(ann).__name__}: {_short(ann)}")
        anns_by_image[_id_key(ann.get("image_id"), f"{path}: annotation id={ann.get('id')!r}: image_id")].append(ann)

    records = []
    for index, img in enumerate(data["images"]):
        if not isinstance(img, dict):
            raise DataError(f"{path}: image record {index} must be an object, got {type(img).__name__}: {_short(img)}")
        where = f"{path}: image record id={img.get('id')!r}"
        try:
            caption = str(img["caption"])
            file_name, width, height = img["file_name"], int(img["width"]), int(img["height"])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise DataError(f"{where}: missing or bad field ({exc})") from exc
        if not isinstance(file_name, str):
            raise DataError(f"{where}: file_name must be a string, got {_short(file_name)}")
        try:
            sentence_id = int(img.get("sentence_id", 0))
        except (TypeError, ValueError, OverflowError) as exc:
            raise DataError(f"{where}: sentence_id must be an integer, got {_short(img['sentence_id'])}") from exc
        # Phrases: tokens_positive_eval if present, else the distinct spans of the boxes.
        anns = anns_by_image.get(_id_key(img.get("id"), f"{where}: id"), [])
        ann_spans = [_spans(a.get("tokens_positive", []), caption, f"{where}, annotation id={a.get('id')!r}") for a in anns]
        if "tokens_positive_eval" in img:
            if not isinstance(img["tokens_positive_eval"], list):
                raise DataError(f"{where}: tokens_positive_eval must be a list (per phrase, a list of [start, end] "
                                f"spans), got {_short(img['tokens_positive_eval'])}")
            phrase_spans = [_spans(p, caption, where) for p in img["tokens_positive_eval"]]
        else:
            phrase_spans = list(dict.fromkeys(tuple(s) for s in ann_spans if s))
        phrases = [
            Phrase(
                text=" ".join(caption[s:e] for s, e in spans),
                char_start=min(s for s, _ in spans),
                char_end=max(e for _, e in spans),
                chain_id=str(i),
                spans=tuple(spans),
            )
            for i, spans in enumerate(phrase_spans)
            if spans
        ]
        boxes = []
        for ann, spans in zip(anns, ann_spans):
            try:
                xywh = torch.tensor([float(v) for v in ann["bbox"]], dtype=torch.float64)
            except (KeyError, TypeError, ValueError) as exc:
                raise DataError(f"{where}: annotation id={ann.get('id')!r} has no valid bbox ({exc})") from exc
            if xywh.shape != (4,):
                raise DataError(f"{where}: annotation id={ann.get('id')!r}: bbox needs 4 numbers, got {ann['bbox']!r}")
            xyxy = tuple(box_convert(xywh, "xywh", "xyxy").tolist())
            chains = frozenset(p.chain_id for p in phrases if _overlaps(list(p.spans), spans))
            boxes.append(BoxAnnotation(xyxy, chains))
        records.append(
            GroundingRecord(
                image_id=str(img.get("original_img_id", Path(file_name).stem)),
                sentence_id=sentence_id,
                caption=caption,
                image_path=resolve_under(images_root, file_name),
                width=width,
                height=height,
                phrases=phrases,
                boxes=boxes,
                source=where,
            )
        )
    return records
