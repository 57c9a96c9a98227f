"""Phrase keys, a split's vocabulary and the objects present per image (ovd.data.vocabulary)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ovd.data.flickr30k import load_flickr30k
from ovd.data.records import BoxAnnotation, GroundingRecord, Phrase
from ovd.data.synthetic import BASE_COLOURS, BASE_SHAPES, HELD_OUT_COMBOS, write_synthetic_dataset
from ovd.data.vocabulary import phrase_key, present_keys, split_vocabulary


def record(image_id: str, sentence_id: int, phrases: list[tuple[str, str]], boxed: set[str]) -> GroundingRecord:
    """A record whose caption is the phrases joined by " and "; chains in ``boxed`` get a box."""
    caption, out = "", []
    for text, chain in phrases:
        if caption:
            caption += " and "
        out.append(Phrase(text, len(caption), len(caption) + len(text), chain))
        caption += text
    boxes = [BoxAnnotation((0.0, 0.0, 10.0, 10.0), frozenset({c})) for c in sorted(boxed)]
    return GroundingRecord(image_id, sentence_id, caption + " .", Path(f"{image_id}.jpg"), 20, 20, out, boxes)


@pytest.mark.parametrize("text,key", [
    ("A small red circle", "red circle"),
    ("the  Red\tCircle", "red circle"),
    ("an orange cross .", "orange cross"),
    ("a big blue star", "blue star"),
    ("the little girl", "girl"),
    ("red circle", "red circle"),
    ("the", "the"),  # only leading words: kept, never an empty key
    ("a man in a red shirt", "man in a red shirt"),  # only *leading* words are dropped
])
def test_phrase_key(text, key):
    assert phrase_key(text) == key


def test_phrase_key_rejects_non_text():
    with pytest.raises(TypeError, match="needs a str"):
        phrase_key(None)


def test_vocabulary_one_display_text_per_key_and_boxed_phrases_only():
    records = [
        record("1", 0, [("A small red circle", "1"), ("a dark background", "9")], boxed={"1"}),
        record("1", 1, [("the red circle", "1")], boxed={"1"}),
        record("2", 0, [("a Blue square", "2"), ("the blue square", "3")], boxed={"2", "3"}),
        record("2", 1, [("the Blue square", "2")], boxed={"2", "3"}),
    ]
    # "dark background" has no box: not an object name. "Blue square" (2x) beats "blue square" (1x).
    assert split_vocabulary(records) == ["Blue square", "red circle"]
    assert present_keys(records) == {"1": {"red circle"}, "2": {"blue square"}}


def test_present_keys_merges_every_caption_of_an_image():
    records = [
        record("7", 0, [("a red circle", "1")], boxed={"1", "2"}),
        record("7", 1, [("a green star", "2")], boxed={"1", "2"}),  # names what caption 0 does not
        record("8", 0, [("a white cross", "5")], boxed={"5"}),
    ]
    assert present_keys(records) == {"7": {"red circle", "green star"}, "8": {"white cross"}}


def test_builtin_data_keys_are_colour_shape_names(tmp_path):
    root = write_synthetic_dataset(tmp_path / "s", seed=5, num_train=24, num_val=1, num_test=1, num_novel=1,
                                   image_size=(64, 48), captions_per_image=2)
    records = load_flickr30k(root, "train")
    allowed = {f"{c} {s}" for c in BASE_COLOURS for s in BASE_SHAPES} - {f"{c} {s}" for c, s in HELD_OUT_COMBOS}
    vocabulary = split_vocabulary(records)
    assert vocabulary == sorted(vocabulary) and len(vocabulary) >= 10
    assert set(vocabulary) <= allowed
    # Present per image == the colour+shape of every annotated object (read from the generator's captions).
    present = present_keys(records)
    assert set(present) == {r.image_id for r in records}
    for r in records:
        objects = ET.parse(root / "Annotations" / f"{r.image_id}.xml").findall("object")
        boxed = sum(1 for o in objects if o.find("bndbox") is not None)
        assert len(present[r.image_id]) == boxed  # the first caption names every object once
        assert present[r.image_id] <= allowed
