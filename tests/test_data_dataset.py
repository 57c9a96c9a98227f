"""GroundingDataset (items, skip policy) and GroundingCollator (batches, truncation)."""

from __future__ import annotations

import logging

import pytest
import torch
from test_data_fixtures import annotation_xml, object_xml, write_flickr_image, write_main_flickr

from ovd.data.collate import GroundingCollator
from ovd.data.dataset import GroundingDataset
from ovd.data.errors import DataError
from ovd.data.flickr30k import load_flickr30k

BOX_A = [10.0, 20.0, 50.0, 60.0]  # chains 1 and 2
BOX_B = [60.0, 10.0, 100.0, 40.0]  # chain 3
BOX_C = [100.0, 10.0, 140.0, 40.0]  # chain 3


@pytest.fixture()
def main_dataset(tmp_path):
    return GroundingDataset(load_flickr30k(write_main_flickr(tmp_path), "train"), image_size=32, split="train")


def span(caption, text, start=0):
    i = caption.index(text, start)
    return (i, i + len(text))


def test_items_boxes_spans_and_phrases(main_dataset):
    ds = main_dataset
    assert len(ds) == 3  # the "ghost" caption (unknown chain only) has no box
    assert ds.skipped == {"unknown_chain_id": 1, "no_boxes": 1}

    item = ds[0]
    cap = item["caption"]
    assert cap == "A man and two dogs play in the park ."
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert (item["image_id"], item["sentence_id"], item["orig_size"]) == ("100", 0, (100, 200))
    # normalized cxcywh of A, B, C in a 200x100 image
    torch.testing.assert_close(
        item["boxes"], torch.tensor([[0.15, 0.4, 0.2, 0.4], [0.4, 0.25, 0.2, 0.3], [0.6, 0.25, 0.2, 0.3]])
    )
    assert item["box_spans"] == [[span(cap, "A man")], [span(cap, "two dogs")], [span(cap, "two dogs")]]
    # "the park" is a scene chain without a box: not among the phrases
    assert [(p["text"], p["chain_id"]) for p in item["phrases"]] == [("A man", "1"), ("two dogs", "3")]
    torch.testing.assert_close(item["phrases"][0]["gt_boxes_xyxy"], torch.tensor([BOX_A]))
    torch.testing.assert_close(item["phrases"][1]["gt_boxes_xyxy"], torch.tensor([BOX_B, BOX_C]))


def test_second_name_of_a_shared_box_and_multi_type_phrase(main_dataset):
    item = main_dataset[1]  # "[/EN#2/people/other The guy] , wearing [/EN#0/notvisual something] ..."
    assert item["boxes"].shape == (1, 4)
    assert [p["text"] for p in item["phrases"]] == ["The guy"]  # notvisual and no-box hat dropped
    torch.testing.assert_close(item["phrases"][0]["gt_boxes_xyxy"], torch.tensor([BOX_A]))


def test_all_phrases_of_a_chain_give_the_box_spans(main_dataset):
    item = main_dataset[2]  # "Dogs ( brown ones ) and him ."
    cap = item["caption"]
    dogs = [span(cap, "Dogs"), span(cap, "brown ones")]
    assert item["box_spans"] == [[span(cap, "him")], dogs, dogs]


def test_skip_policy_clips_skips_and_counts(tmp_path, caplog):
    objects = [
        object_xml(["1"], (11, 11, 40, 40)),  # fine
        object_xml(["2"], (181, 81, 230, 130)),  # partly outside -> clipped to (180, 80, 200, 100)
        object_xml(["3"], (250, 10, 260, 20)),  # wholly outside
        object_xml(["4"], (11, 11, 10, 20)),  # zero width
        object_xml(["5"], (30, 11, 20, 20)),  # inverted
    ]
    sentence = " ".join(f"[/EN#{i}/other thing{i}]" for i in range(1, 6)) + " ."
    write_flickr_image(tmp_path, "1", [sentence], annotation_xml(200, 100, objects))
    with caplog.at_level(logging.INFO, logger="ovd.data.dataset"):
        ds = GroundingDataset(load_flickr30k(tmp_path, "train"), image_size=16, split="train")
    assert ds.skipped == {"box_outside_image": 1, "zero_area_box": 1, "inverted_box": 1}
    assert ds.clipped == 1
    assert "skipped" in caplog.text and "inverted_box" in caplog.text
    item = ds[0]
    assert [p["text"] for p in item["phrases"]] == ["thing1", "thing2"]
    torch.testing.assert_close(item["phrases"][1]["gt_boxes_xyxy"], torch.tensor([[180.0, 80.0, 200.0, 100.0]]))
    assert item["boxes"].min() >= 0 and item["boxes"].max() <= 1


def test_image_size_disagreeing_with_annotation(tmp_path):
    write_flickr_image(tmp_path, "1", ["[/EN#1/other a box] ."], annotation_xml(50, 50, [object_xml(["1"], (1, 1, 9, 9))]), size=(60, 50))
    ds = GroundingDataset(load_flickr30k(tmp_path, "train"), image_size=16)
    with pytest.raises(DataError, match=r"1\.jpg: image is 60x50 but the annotation .* says 50x50"):
        ds[0]


def test_collate_batch_shapes(main_dataset, tokenizer):
    batch = GroundingCollator(tokenizer, max_tokens=32)([main_dataset[0], main_dataset[1]])
    assert batch["images"].shape == (2, 3, 32, 32)
    B, T = batch["input_ids"].shape
    assert B == 2 and batch["input_ids"].dtype == torch.long and batch["attention_mask"].shape == (B, T)
    t0 = batch["targets"][0]
    assert t0["boxes"].shape == (3, 4) and t0["positive_map"].shape == (3, T)
    # [CLS] a man and two dogs ... : "A man" -> tokens 1, 2; "two dogs" -> 4, 5
    assert t0["positive_map"][0].nonzero().flatten().tolist() == [1, 2]
    assert t0["positive_map"][2].nonzero().flatten().tolist() == [4, 5]
    m0 = batch["meta"][0]
    assert m0["image_id"] == "100" and m0["orig_size"] == (100, 200)
    assert m0["phrases"][1]["token_mask"].dtype == torch.bool
    assert m0["phrases"][1]["token_mask"].nonzero().flatten().tolist() == [4, 5]
    assert batch["targets"][1]["positive_map"].shape == (1, T)


def test_collate_empty_caption(main_dataset, tokenizer):
    item = dict(main_dataset[0], caption="  ", phrases=[], box_spans=[])
    with pytest.raises(DataError, match=r"image '100' sentence 0: empty caption"):
        GroundingCollator(tokenizer, max_tokens=32)([item])


def test_collate_truncation_warns_and_drops_lost_phrases(main_dataset, tokenizer):
    item = main_dataset[0]  # [CLS] a man and two dogs play ... ; max 4 keeps [CLS] a man [SEP]
    with pytest.warns(UserWarning, match=r"truncated to text.max_tokens=4 tokens: 'A man and two dogs.*phrases dropped: \['two dogs'\]"):
        batch = GroundingCollator(tokenizer, max_tokens=4)([item])
    assert batch["input_ids"].shape == (1, 4)
    assert batch["targets"][0]["boxes"].shape == (1, 4)  # B and C lost their only phrase
    assert [p["text"] for p in batch["meta"][0]["phrases"]] == ["A man"]


def test_collator_needs_a_fast_tokenizer():
    class Slow:
        is_fast = False

    with pytest.raises(TypeError, match="fast"):
        GroundingCollator(Slow(), 8)
