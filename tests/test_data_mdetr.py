"""MDETR grounding json reader."""

from __future__ import annotations

import pytest
import torch
from test_data_fixtures import write_mdetr

from ovd.data.dataset import GroundingDataset
from ovd.data.errors import DataError
from ovd.data.mdetr import load_mdetr
from ovd.data.readers import load_records

CAPTION = "A man and two dogs play in the park ."


def _json(tmp_path, caption=CAPTION, tokens_positive=((0, 5),), file_name="100.jpg"):
    images = [
        {"id": 0, "file_name": file_name, "height": 100, "width": 200, "caption": caption,
         "tokens_positive_eval": [[[0, 5]], [[10, 18]]], "original_img_id": 100, "sentence_id": 3},
    ]
    annotations = [
        {"id": 1, "image_id": 0, "bbox": [10, 20, 40, 40], "tokens_positive": [list(s) for s in tokens_positive], "phrase_ids": 1},
        {"id": 2, "image_id": 0, "bbox": [60, 10, 40, 30], "tokens_positive": [[10, 18]], "phrase_ids": 3},
        {"id": 3, "image_id": 0, "bbox": [100, 10, 40, 30], "tokens_positive": [[10, 18]], "phrase_ids": 3},
    ]
    return write_mdetr(tmp_path, images, annotations, split="val")


def test_read_records(tmp_path):
    _json(tmp_path)
    (rec,) = load_mdetr(tmp_path, "val")
    assert (rec.image_id, rec.sentence_id, rec.caption, rec.width, rec.height) == ("100", 3, CAPTION, 200, 100)
    assert rec.image_path == (tmp_path / "images" / "100.jpg").resolve()
    assert [(p.text, p.char_start, p.char_end) for p in rec.phrases] == [("A man", 0, 5), ("two dogs", 10, 18)]
    # xywh -> xyxy, and the box joins the phrase its tokens_positive overlaps
    assert [(b.xyxy, set(b.chain_ids)) for b in rec.boxes] == [
        ((10.0, 20.0, 50.0, 60.0), {"0"}),
        ((60.0, 10.0, 100.0, 40.0), {"1"}),
        ((100.0, 10.0, 140.0, 40.0), {"1"}),
    ]


def test_dataset_from_mdetr_matches_flickr_convention(tmp_path):
    _json(tmp_path)
    ds = GroundingDataset(load_records(tmp_path, "mdetr", "val"), image_size=16)
    item = ds[0]
    torch.testing.assert_close(item["boxes"], torch.tensor([[0.15, 0.4, 0.2, 0.4], [0.4, 0.25, 0.2, 0.3], [0.6, 0.25, 0.2, 0.3]]))
    assert item["box_spans"] == [[(0, 5)], [(10, 18)], [(10, 18)]]
    assert [len(p["gt_boxes_xyxy"]) for p in item["phrases"]] == [1, 2]


def test_json_under_annotations_folder_and_explicit_image_dir(tmp_path):
    path = _json(tmp_path)
    (tmp_path / "annotations").mkdir()
    path.rename(tmp_path / "annotations" / path.name)
    (rec,) = load_mdetr(tmp_path, "val", image_dir=tmp_path / "elsewhere")
    assert rec.image_path == (tmp_path / "elsewhere" / "100.jpg").resolve()


@pytest.mark.parametrize("bad", [((30, 45),), ((-1, 3),), ((5, 2),)])
def test_span_outside_caption(tmp_path, bad):
    _json(tmp_path, tokens_positive=bad)
    with pytest.raises(DataError, match=r"final_flickr_separateGT_val\.json: image record id=0.*span .* outside the caption"):
        load_mdetr(tmp_path, "val")


def test_missing_json_malformed_json_and_escaping_file_name(tmp_path):
    with pytest.raises(DataError, match="no final_flickr_separateGT_val.json"):
        load_mdetr(tmp_path, "val")
    (tmp_path / "final_flickr_separateGT_val.json").write_text("{not json")
    with pytest.raises(DataError, match="malformed json"):
        load_mdetr(tmp_path, "val")
    _json(tmp_path, file_name="../../secret.jpg")
    with pytest.raises(DataError, match="escapes the data root"):
        load_mdetr(tmp_path, "val")


def _write_raw(tmp_path, data):
    import json

    path = tmp_path / "final_flickr_separateGT_val.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _record(**changes):
    record = {"id": 0, "file_name": "100.jpg", "height": 100, "width": 200, "caption": CAPTION}
    record.update(changes)
    return record


@pytest.mark.parametrize("data, message", [
    ({"images": [_record()], "annotations": {"1": {"image_id": 0}}}, r"'annotations' must be a list of objects, got dict"),
    ({"images": {"0": _record()}}, r"'images' must be a list of objects, got dict"),
    ({"images": [["100.jpg", 100, 200]]}, r"image record 0 must be an object, got list"),
    ({"images": [_record()], "annotations": [[0, [1, 2, 3, 4]]]}, r"annotation 0 must be an object, got list"),
    ({"images": [_record()], "annotations": [{"id": 5, "image_id": [0], "bbox": [0, 0, 1, 1]}]},
     r"annotation id=5: image_id must be a number or a string"),
    ({"images": [_record(sentence_id="abc")]}, r"image record id=0: sentence_id must be an integer, got 'abc'"),
    ({"images": [_record(width=float("inf"))]}, r"image record id=0: missing or bad field"),
    ({"images": [_record(file_name=["100.jpg"])]}, r"image record id=0: file_name must be a string"),
    ({"images": [_record(tokens_positive_eval=5)]}, r"image record id=0: tokens_positive_eval must be a list"),
    ({"images": [_record(tokens_positive_eval=[[[0, float("inf")]]])]}, r"image record id=0: spans must be a list"),
])
def test_valid_json_of_the_wrong_shape_is_a_data_error_naming_the_file(tmp_path, data, message):
    _write_raw(tmp_path, data)
    with pytest.raises(DataError, match=r"final_flickr_separateGT_val\.json: " + message):
        load_mdetr(tmp_path, "val")


def test_stats_count_each_captions_phrases_as_chains(tmp_path):
    """An MDETR chain id is a phrase's index in its own caption: phrase 0 is a chain (Flickr's "0" is the non-visual
    chain), and two captions of one image do not share ids. Two captions of two phrases each: 4 chains (before: 1)."""
    from ovd.data.stats import dataset_stats

    images = [{"id": i, "file_name": "100.jpg", "height": 100, "width": 200, "caption": CAPTION,
               "tokens_positive_eval": [[[0, 5]], [[10, 18]]], "original_img_id": 100, "sentence_id": i}
              for i in (0, 1)]
    annotations = [{"id": 2 * i + k + 1, "image_id": i, "bbox": [10 + 50 * k, 20, 40, 40],
                    "tokens_positive": [[[0, 5], [10, 18]][k]], "phrase_ids": k} for i in (0, 1) for k in (0, 1)]
    write_mdetr(tmp_path, images, annotations, split="val")
    stats = dataset_stats(tmp_path, "mdetr", "val")
    assert (stats["images"], stats["sentences"], stats["phrases"], stats["chains"]) == (1, 2, 4, 4)
