"""A small synthetic grounding dataset written in the Flickr30k Entities layout.

Images: a plain or noisy dark background with 1-4 non-overlapping coloured shapes of
three size classes. Captions name objects by size, colour and shape (sometimes with a
position word), each object phrase marked with its chain id, so the real Flickr30k reader
reads it and a small detector trained on it exercises the whole pipeline on a CPU.

Open vocabulary: the ``novel`` split is the only one that holds the novel colour(s), the
novel shape(s) and the held-out colour+shape combinations; train/val/test never do, so
their captions never contain the novel words. ``synthetic.json`` records the vocabulary.

Deterministic: the same arguments write byte-identical Sentences/, Annotations/, split
files and synthetic.json (and, with the same Pillow/libjpeg, identical JPEGs).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from .errors import DataError

VERSION = "synthetic-v1"

BASE_COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 175, 60),
    "blue": (45, 85, 235),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 205),
    "orange": (245, 140, 30),
    "white": (235, 235, 235),
}
NOVEL_COLOURS = {"pink": (250, 135, 200)}
BASE_SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
NOVEL_SHAPES = ("hexagon",)
# Colour+shape pairs whose words are both seen in training, but never together.
HELD_OUT_COMBOS = (("red", "triangle"), ("blue", "circle"), ("green", "square"), ("yellow", "star"))

# Box side as a fraction of the image's shorter side, and the word used for the class.
SIZE_CLASSES = {"small": (0.15, 0.22), "medium": (0.26, 0.34), "large": (0.38, 0.48)}
SIZE_WORDS = {"small": ("small", "little"), "medium": ("",), "large": ("large", "big")}
SPLITS = ("train", "val", "test", "novel")


def default_synthetic_root() -> Path:
    """Cache folder of the default synthetic set: ``$OVD_CACHE/synthetic-v1`` or
    ``~/.cache/ovd/synthetic-v1``."""
    base = os.environ.get("OVD_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "ovd") / VERSION


# -- shapes ------------------------------------------------------------------------------


def _unit_polygon(shape: str) -> list[tuple[float, float]]:
    """Polygon of a shape with any scale; it is stretched to fill its box afterwards."""
    if shape == "triangle":
        return [(0.5, 0.0), (1.0, 1.0), (0.0, 1.0)]
    if shape == "diamond":
        return [(0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)]
    if shape == "star":
        return [
            (math.cos(math.pi / 2 + k * math.pi / 5) * (1.0 if k % 2 == 0 else 0.45),
             -math.sin(math.pi / 2 + k * math.pi / 5) * (1.0 if k % 2 == 0 else 0.45))
            for k in range(10)
        ]
    if shape == "cross":
        a, b = 0.33, 0.67
        return [(a, 0), (b, 0), (b, a), (1, a), (1, b), (b, b), (b, 1), (a, 1), (a, b), (0, b), (0, a), (a, a)]
    if shape == "hexagon":
        return [(math.cos(k * math.pi / 3), math.sin(k * math.pi / 3)) for k in range(6)]
    raise ValueError(shape)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], colour) -> None:
    """Fill ``shape`` so it touches every side of ``box`` (pixel xyxy, end exclusive)."""
    x0, y0, x1, y1 = box
    right, bottom = x1 - 1, y1 - 1  # PIL coordinates are inclusive
    if shape == "circle":
        draw.ellipse([x0, y0, right, bottom], fill=colour)
    elif shape == "square":
        draw.rectangle([x0, y0, right, bottom], fill=colour)
    else:
        pts = _unit_polygon(shape)
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        sx, sy = (right - x0) / (max(xs) - min(xs)), (bottom - y0) / (max(ys) - min(ys))
        draw.polygon([(x0 + (x - min(xs)) * sx, y0 + (y - min(ys)) * sy) for x, y in pts], fill=colour)


# -- layout and captions -------------------------------------------------------------------


def _place(rng: np.random.Generator, size_class: str, shape: str, boxes: list, width: int, height: int):
    """A free box for a new object (2 px apart from the others, so nothing is occluded)."""
    classes = list(SIZE_CLASSES)
    for cls in classes[: classes.index(size_class) + 1][::-1]:  # fall back to smaller sizes
        lo, hi = SIZE_CLASSES[cls]
        for _ in range(30):
            side = int(round(rng.uniform(lo, hi) * min(width, height)))
            w, h = side, (int(round(side * 0.87)) if shape == "triangle" else side)
            x0, y0 = int(rng.integers(1, width - w)), int(rng.integers(1, height - h))
            box = (x0, y0, x0 + w, y0 + h)
            if all(box[0] >= b[2] + 2 or b[0] >= box[2] + 2 or box[1] >= b[3] + 2 or b[1] >= box[3] + 2 for b in boxes):
                return cls, box
    return None, None


def _position_word(box, width: int, height: int) -> str | None:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    if cx < width / 3:
        return "on the left"
    if cx > 2 * width / 3:
        return "on the right"
    if cy < height / 3:
        return "at the top"
    if cy > 2 * height / 3:
        return "at the bottom"
    return None


def _phrase(rng: np.random.Generator, obj: dict, width: int, height: int) -> str:
    size = str(rng.choice(SIZE_WORDS[obj["size"]]))
    words = " ".join(w for w in (size, obj["colour"], obj["shape"]) if w)
    article = str(rng.choice(["a", "the"]))
    if article == "a" and words[0] in "aeiou":
        article = "an"
    text = f"[/EN#{obj['chain']}/other {article} {words}]"
    where = _position_word(obj["box"], width, height)
    if where and rng.random() < 0.3:
        text += f" {where}"
    return text


def _caption(rng: np.random.Generator, objs: list[dict], bg_chain: int, width: int, height: int) -> str:
    parts = [_phrase(rng, o, width, height) for o in objs]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    background = f"[/EN#{bg_chain}/scene a dark background]"
    templates = [
        "{L} .",
        "there is {L} .",
        "{L} on {B} .",
        "[/EN#0/notvisual this picture] shows {L} .",
    ]
    if len(parts) == 2:
        templates.append("{P0} next to {P1} .")
    caption = str(rng.choice(templates)).format(L=listed, B=background, P0=parts[0], P1=parts[-1])
    return caption[0].upper() + caption[1:] if caption[0] != "[" else caption


def _objects_for(rng: np.random.Generator, novel: bool) -> list[tuple[str, str]]:
    """1-4 distinct (colour, shape) pairs; a novel image holds at least one novel object."""
    base = [(c, s) for c in BASE_COLOURS for s in BASE_SHAPES if (c, s) not in HELD_OUT_COMBOS]
    novel_pairs = (
        [(c, s) for c in NOVEL_COLOURS for s in BASE_SHAPES + NOVEL_SHAPES]
        + [(c, s) for c in BASE_COLOURS for s in NOVEL_SHAPES]
        + list(HELD_OUT_COMBOS)
    )
    n = int(rng.integers(1, 5))
    chosen = []
    if novel:
        chosen.append(novel_pairs[int(rng.integers(len(novel_pairs)))])
    while len(chosen) < n:
        pair = base[int(rng.integers(len(base)))]
        if pair not in chosen:
            chosen.append(pair)
    return chosen


def _make_image(rng: np.random.Generator, image_number: int, novel: bool, width: int, height: int, captions_per_image: int):
    """(PIL image, list of objects, list of annotated caption lines)."""
    level = int(rng.integers(25, 95))
    noise = float(rng.choice([0.0, 4.0, 10.0]))  # plain, lightly or visibly noisy
    pixels = np.full((height, width, 3), level, dtype=np.float32)
    if noise:
        pixels += rng.normal(0.0, noise, size=pixels.shape)
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)

    objs, boxes = [], []
    for k, (colour, shape) in enumerate(_objects_for(rng, novel)):
        size, box = _place(rng, str(rng.choice(list(SIZE_CLASSES))), shape, boxes, width, height)
        if box is None:
            continue
        base = {**BASE_COLOURS, **NOVEL_COLOURS}[colour]
        fill = tuple(int(np.clip(v + rng.integers(-15, 16), 0, 255)) for v in base)
        _draw_shape(draw, shape, box, fill)
        boxes.append(box)
        objs.append({"chain": image_number * 10 + k + 1, "colour": colour, "shape": shape, "size": size, "box": box})

    is_novel = [o["colour"] in NOVEL_COLOURS or o["shape"] in NOVEL_SHAPES or (o["colour"], o["shape"]) in HELD_OUT_COMBOS for o in objs]
    bg_chain = image_number * 10 + 9
    captions = []
    for c in range(captions_per_image):
        if c == 0:
            subset = list(objs)  # the first caption names everything
        else:
            count = int(rng.integers(1, len(objs) + 1))
            subset = [objs[i] for i in sorted(rng.choice(len(objs), size=count, replace=False))]
            if novel and not any(is_novel[objs.index(o)] for o in subset):
                subset.insert(0, objs[is_novel.index(True)])  # novel captions always name a novel object
        order = rng.permutation(len(subset))
        captions.append(_caption(rng, [subset[i] for i in order], bg_chain, width, height))
    return img, objs, bg_chain, captions


def _annotation_xml(image_id: str, width: int, height: int, objs: list[dict], bg_chain: int) -> str:
    lines = ["<annotation>", f"  <filename>{image_id}.jpg</filename>", "  <size>",
             f"    <width>{width}</width>", f"    <height>{height}</height>", "    <depth>3</depth>", "  </size>"]
    for o in objs:
        x0, y0, x1, y1 = o["box"]
        # Flickr30k Entities writes 1-based inclusive corners.
        lines += ["  <object>", f"    <name>{o['chain']}</name>", "    <bndbox>",
                  f"      <xmin>{x0 + 1}</xmin>", f"      <ymin>{y0 + 1}</ymin>",
                  f"      <xmax>{x1}</xmax>", f"      <ymax>{y1}</ymax>", "    </bndbox>", "  </object>"]
    lines += ["  <object>", f"    <name>{bg_chain}</name>", "    <nobndbox>0</nobndbox>", "    <scene>1</scene>", "  </object>"]
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


def check_output_folder(out_dir: str | Path, overwrite: bool = False) -> None:
    """``ovd data synth --out``: refuse a path that is a file, or a folder that is not empty unless
    ``overwrite`` (its train/val/test/novel.txt, images and synthetic.json would be replaced in place)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file, not a folder; choose a folder for the dataset")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        what = "a dataset" if (out / "synthetic.json").exists() or (out / "train.txt").exists() else "files"
        raise DataError(f"--out {out} already holds {what}; choose an empty or new folder, or pass --overwrite "
                        "to write over it")


def write_synthetic_dataset(
    out_dir: str | Path,
    seed: int = 0,
    num_train: int = 1600,
    num_val: int = 200,
    num_test: int = 200,
    num_novel: int = 200,
    image_size: tuple[int, int] = (160, 120),
    captions_per_image: int = 2,
    progress: bool = False,
) -> Path:
    """Write the dataset under ``out_dir`` (created; existing files are overwritten).

    ``image_size`` is (W, H). Returns ``out_dir``. Layout: Images/<id>.jpg,
    Sentences/<id>.txt, Annotations/<id>.xml, train/val/test/novel.txt, synthetic.json.
    """
    width, height = image_size
    if width < 48 or height < 48:
        raise ValueError(f"image_size={image_size!r}: both sides must be >= 48 px")
    if not 1 <= captions_per_image <= 5:
        raise ValueError(f"captions_per_image={captions_per_image!r} must be in [1, 5]")
    counts = dict(zip(SPLITS, (num_train, num_val, num_test, num_novel)))
    if negative := {split: n for split, n in counts.items() if n < 0}:
        raise ValueError("image counts must be >= 0, got " + ", ".join(f"{s} {n}" for s, n in negative.items()))
    out = Path(out_dir)
    for sub in ("Images", "Sentences", "Annotations"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=sum(counts.values()), desc="synthetic images", unit="img", disable=not progress)
    image_number = 0
    for split_index, split in enumerate(SPLITS):
        ids = []
        for i in range(counts[split]):
            image_number += 1
            image_id = str(1_000_000 + image_number)
            # One generator per image: any image can be regenerated alone, same result.
            rng = np.random.default_rng([seed, split_index, i])
            img, objs, bg_chain, captions = _make_image(rng, image_number, split == "novel", width, height, captions_per_image)
            img.save(out / "Images" / f"{image_id}.jpg", format="JPEG", quality=92)
            (out / "Sentences" / f"{image_id}.txt").write_text("\n".join(captions) + "\n", encoding="utf-8")
            (out / "Annotations" / f"{image_id}.xml").write_text(_annotation_xml(image_id, width, height, objs, bg_chain), encoding="utf-8")
            ids.append(image_id)
            bar.update()
        (out / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    bar.close()
    meta = {
        "version": VERSION,
        "params": {"seed": seed, "num_train": num_train, "num_val": num_val, "num_test": num_test,
                   "num_novel": num_novel, "image_size": [width, height], "captions_per_image": captions_per_image},
        "base_colours": sorted(BASE_COLOURS),
        "base_shapes": sorted(BASE_SHAPES),
        "novel_colours": sorted(NOVEL_COLOURS),
        "novel_shapes": sorted(NOVEL_SHAPES),
        "held_out_combos": [list(c) for c in HELD_OUT_COMBOS],
    }
    # Written last: its presence marks a finished dataset.
    (out / "synthetic.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def ensure_synthetic_dataset(root: str | Path | None = None, progress: bool = False, **params) -> Path:
    """Return ``root`` (default ``default_synthetic_root()``), generating the dataset first if
    it is not there. Generation writes to a temporary sibling folder and renames it into
    place, so an interrupted run never leaves a folder that looks complete.

    ``params`` go to ``write_synthetic_dataset``; an existing dataset written with other
    params raises ``DataError`` rather than silently giving different data.
    """
    root = Path(root) if root is not None else default_synthetic_root()
    meta_path = root / "synthetic.json"
    if not meta_path.is_file():
        if root.exists():
            if any(root.iterdir()):
                raise DataError(f"{root}: exists but holds no synthetic.json; not a finished synthetic dataset (delete it)")
            root.rmdir()  # an empty folder carries nothing: take its place
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
        try:
            write_synthetic_dataset(tmp, progress=progress, **params)
            try:
                os.rename(tmp, root)  # atomic on one filesystem
            except OSError:
                if not meta_path.is_file():  # not a concurrent writer that finished first
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    if params:
        stored = json.loads(meta_path.read_text(encoding="utf-8"))["params"]
        wanted = {**stored, **params}
        if "image_size" in params:
            wanted["image_size"] = list(params["image_size"])
        if wanted != stored:
            raise DataError(f"{root}: synthetic dataset was written with {stored}, not {wanted}; use another root")
    return root
