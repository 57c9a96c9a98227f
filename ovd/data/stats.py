"""``dataset_stats``: count what a split holds and what the skip policy would drop."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from .dataset import prepare_sample
from .errors import DataError
from .images import image_size, load_image
from .readers import load_records

log = logging.getLogger(__name__)


def dataset_stats(root: str | Path, format: str, split: str, fast: bool = False, progress: bool = False) -> dict:
    """Counts for one split, reading every file it counts.

    Returns {"split", "format", "images", "sentences", "phrases", "phrases_with_box",
    "boxes", "chains", "clipped_boxes", "skipped": {reason: count}, "rejected_files": [...]}.
    ``boxes`` and ``chains`` are per image (unique valid boxes; distinct non-zero chain ids
    mentioned in captions for Flickr30k, whose chain ids are shared by an image's captions; for MDETR, whose chain
    id is a phrase's index in its own caption, each caption's phrases). Every image is decoded and its size checked against the annotation,
    unless ``fast`` (then only its header is read). Boxes are checked against the image by the
    dataset's skip policy, and the reasons land in ``skipped``, as do undecodable images
    ("bad_image") and size disagreements ("size_mismatch"), each counted once per image.
    ``rejected_files`` names every image file behind those two counts, in reading order:
    {"file": path as the reader resolved it, "reason": "bad_image" | "size_mismatch",
    "error": why}; each is also logged as a warning.
    """
    records = load_records(root, format, split)
    skipped: Counter = Counter()
    totals = Counter()
    boxes_per_image: dict[str, set] = {}
    chains_per_image: dict[str, set] = {}
    image_ok: dict[Path, bool] = {}
    rejected: list[dict] = []

    def reject(path: Path, reason: str, error: str) -> None:
        skipped[reason] += 1
        rejected.append({"file": str(path), "reason": reason, "error": error})
        log.warning("%s: rejected (%s): %s", path, reason, error)

    for record in tqdm(records, desc=f"stats {split}", unit="caption", disable=not progress):
        path = record.image_path
        if path not in image_ok:  # decode each image once, not once per caption
            try:
                size = load_image(path).size if not fast else image_size(path)
                ok = size == (record.width, record.height) or record.width is None
                if not ok:
                    reject(path, "size_mismatch", f"image is {size[0]}x{size[1]} (WxH), "
                                                  f"the annotation says {record.width}x{record.height}")
            except DataError as err:
                ok = False
                # DataError messages start with the path; the file is named once, in "file"
                reject(path, "bad_image", str(err).removeprefix(f"{path}: "))
            image_ok[path] = ok
        totals["sentences"] += 1
        totals["phrases"] += len(record.phrases)
        if format == "mdetr":  # a phrase's chain id is its index in its caption: "0" is a phrase, ids are per caption
            chains_per_image.setdefault(record.image_id, set()).update(
                (record.sentence_id, p.chain_id) for p in record.phrases)
        else:  # Flickr30k: ids are shared by an image's captions; chain "0" is the non-visual chain
            chains_per_image.setdefault(record.image_id, set()).update(
                p.chain_id for p in record.phrases if p.chain_id != "0")
        sample, counts = prepare_sample(record)
        totals["clipped_boxes"] += counts.pop("clipped", 0)
        skipped.update(counts)
        if sample is not None:
            totals["phrases_with_box"] += len(sample.phrases)
            boxes_per_image.setdefault(record.image_id, set()).update(map(tuple, sample.boxes_xyxy.tolist()))
    return {
        "split": split,
        "format": format,
        "images": len({r.image_id for r in records}),
        "sentences": totals["sentences"],
        "phrases": totals["phrases"],
        "phrases_with_box": totals["phrases_with_box"],
        "boxes": sum(len(b) for b in boxes_per_image.values()),
        "chains": sum(len(c) for c in chains_per_image.values()),
        "clipped_boxes": totals["clipped_boxes"],
        "skipped": dict(sorted(skipped.items())),
        "rejected_files": rejected,
    }
