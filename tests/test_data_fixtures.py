"""Helpers that write small hand-made datasets in the real on-disk layouts (no tests here)."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image


def object_xml(names, box=None, nobndbox=0, scene=0) -> str:
    """One <object>; ``box`` is 1-based (xmin, ymin, xmax, ymax) as Flickr30k writes it."""
    parts = ["<object>"] + [f"<name>{n}</name>" for n in names]
    if box is not None:
        xmin, ymin, xmax, ymax = box
        parts.append(f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>")
    else:
        parts.append(f"<nobndbox>{nobndbox}</nobndbox><scene>{scene}</scene>")
    return "".join(parts) + "</object>"


def annotation_xml(width: int, height: int, objects: list[str]) -> str:
    return (
        f"<annotation><size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
        + "".join(objects)
        + "</annotation>\n"
    )


def write_flickr_image(root: Path, image_id: str, sentences: list[str], xml: str, size=(200, 100), split="train", image=None):
    """Write Sentences/, Annotations/, Images/ files of one id and append it to <split>.txt."""
    for sub in ("Sentences", "Annotations", "Images"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "Sentences" / f"{image_id}.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    (root / "Annotations" / f"{image_id}.xml").write_text(xml, encoding="utf-8")
    if image is None:
        image = Image.new("RGB", size, (90, 90, 90))
    if image is not False:
        image.save(root / "Images" / f"{image_id}.jpg", format="JPEG")
    with open(root / f"{split}.txt", "a", encoding="utf-8") as f:
        f.write(f"{image_id}\n")


# The main hand-made Flickr fixture: image "100", 200x100 px.
#   chains 1 and 2 share one box (one <object>, two <name>s); chain 3 owns two boxes;
#   chain 4 has no box (nobndbox); chain 5 is a scene; 77 is in no object (unknown).
MAIN_OBJECTS = [
    object_xml(["1", "2"], (11, 21, 50, 60)),  # -> 0-based xyxy (10, 20, 50, 60)
    object_xml(["3"], (61, 11, 100, 40)),  # -> (60, 10, 100, 40)
    object_xml(["3"], (101, 11, 140, 40)),  # -> (100, 10, 140, 40)
    object_xml(["4"], nobndbox=1),
    object_xml(["5"], nobndbox=0, scene=1),
]
MAIN_SENTENCES = [
    "[/EN#1/people A man] and [/EN#3/animals two dogs] play in [/EN#5/scene the park] .",
    "[/EN#2/people/other The guy] , wearing [/EN#0/notvisual something] , runs ; [/EN#4/clothing a hat] 's there !",
    "[/EN#3/animals Dogs] ( [/EN#3/animals brown ones] ) and [/EN#1/people him] .",
    "[/EN#77/other a ghost] waves .",
]


def write_main_flickr(root: Path) -> Path:
    write_flickr_image(root, "100", MAIN_SENTENCES, annotation_xml(200, 100, MAIN_OBJECTS))
    return root


def write_mdetr(root: Path, images: list[dict], annotations: list[dict], split="val", image_size=(200, 100)) -> Path:
    """Write ``final_flickr_separateGT_<split>.json`` and a grey image per file_name under images/."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    for img in images:
        path = root / "images" / img["file_name"]
        if not path.exists() and ".." not in img["file_name"]:
            Image.new("RGB", image_size, (80, 80, 80)).save(path, format="JPEG")
    data = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "object"}]}
    path = root / f"final_flickr_separateGT_{split}.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path
