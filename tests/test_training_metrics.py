"""Recall@k (MDETR protocol), mAP and prediction-file scoring (ovd.training.metrics)."""

from __future__ import annotations

import math
import re

import pytest
import torch

from ovd.boxes import pixel_xyxy_to_normalized_cxcywh
from ovd.training.metrics import (
    GroundingEvaluator,
    RecallAtK,
    collect_dataset_phrases,
    phrase_scores,
    score_prediction_file,
    union_box,
)

T = 8
H, W = 100, 200  # non-square on purpose: catches H/W swaps


def box(x0, y0, x1, y1) -> torch.Tensor:
    return torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32)


# -- phrase_scores --------------------------------------------------------------------------
def test_phrase_scores_is_mean_token_probability():
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, 1.0, 1.0]])
    mask = torch.tensor([True, True, False])
    expected = torch.stack([logits[0, :2].sigmoid().mean(), logits[1, :2].sigmoid().mean()])
    torch.testing.assert_close(phrase_scores(logits, mask), expected)


def test_phrase_scores_handles_length_mismatch_padding_and_empty_masks():
    logits = torch.tensor([[3.0, -3.0, 0.0, -1e4]])
    long_mask = torch.tensor([True, False, False, True, True, True])  # longer than T, hits padding
    text_mask = torch.tensor([True, True, True, False])
    torch.testing.assert_close(phrase_scores(logits, long_mask, text_mask), logits[:, 0].sigmoid())
    short_mask = torch.tensor([False, True])
    torch.testing.assert_close(phrase_scores(logits, short_mask), logits[:, 1].sigmoid())
    assert phrase_scores(logits, torch.zeros(4, dtype=torch.bool)).tolist() == [0.0]


# -- RecallAtK ------------------------------------------------------------------------------
def test_recall_perfect_predictions():
    metric = RecallAtK()
    gts = [box(0, 0, 10, 10), box(20, 20, 60, 40)]
    metric.update([g.clone() for g in gts], gts)
    result = metric.compute()
    for key in ("R@1", "R@5", "R@10", "R@1_merged", "R@5_merged", "R@10_merged"):
        assert result[key].item() == 1.0
    assert result["num_phrases"].item() == 2


def test_recall_known_miss_ratio_and_rank():
    metric = RecallAtK(ks=(1, 5, 10))
    gt = box(0, 0, 10, 10)
    miss = box(50, 50, 60, 60)
    ranked = [
        torch.cat([gt, miss]),  # hit at 1
        torch.cat([miss, miss, gt]),  # hit at 5 and 10, not at 1
        torch.cat([miss] * 6 + [gt]),  # hit at 10 only (rank 7)
        torch.cat([miss] * 12 + [gt]),  # never in the top 10
    ]
    metric.update(ranked, [gt] * 4)
    result = metric.compute()
    assert result["R@1"].item() == pytest.approx(1 / 4)
    assert result["R@5"].item() == pytest.approx(2 / 4)
    assert result["R@10"].item() == pytest.approx(3 / 4)
    assert result["hits@10"].item() == 3


def test_recall_phrases_without_gt_and_empty_rankings():
    metric = RecallAtK()
    metric.update([box(0, 0, 10, 10), torch.zeros(0, 4)], [torch.zeros(0, 4), box(0, 0, 10, 10)])
    result = metric.compute()
    assert result["num_phrases"].item() == 1  # the phrase without GT does not count
    assert result["R@1"].item() == 0.0  # the empty ranking is a miss


def test_recall_iou_threshold_is_inclusive():
    # IoU of [0,0,10,10] with [0,0,10,20] is exactly 0.5.
    metric = RecallAtK(ks=(1,))
    metric.update([box(0, 0, 10, 10)], [box(0, 0, 10, 20)])
    assert metric.compute()["R@1"].item() == 1.0


def test_any_box_versus_merged_box():
    chain = torch.cat([box(0, 0, 10, 10), box(20, 0, 30, 10)])  # union [0,0,30,10]
    torch.testing.assert_close(union_box(chain), box(0, 0, 30, 10))
    metric = RecallAtK(ks=(1,))
    # phrase 1 predicts one member box: ANY-BOX hit, MERGED miss (IoU with union = 1/3)
    # phrase 2 predicts the union: MERGED hit, ANY-BOX miss (IoU with each member = 1/3)
    metric.update([box(0, 0, 10, 10), box(0, 0, 30, 10)], [chain, chain])
    result = metric.compute()
    assert result["R@1"].item() == pytest.approx(0.5)
    assert result["R@1_merged"].item() == pytest.approx(0.5)
    assert result["hits@1"].item() == 1 and result["hits@1_merged"].item() == 1


def test_recall_states_sum_when_merged():
    """The DDP reduction is a sum of counts: two processes' states combine exactly."""
    a, b = RecallAtK(ks=(1,)), RecallAtK(ks=(1,))
    a.update([box(0, 0, 10, 10)], [box(0, 0, 10, 10)])
    b.update([box(50, 50, 60, 60)] * 2, [box(0, 0, 10, 10)] * 2)
    assert {a._reductions[name] is not None for name in ("hits_any", "hits_merged", "total")} == {True}
    a.merge_state(b)
    assert a.compute()["R@1"].item() == pytest.approx(1 / 3)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_recall_empty_is_nan():
    assert math.isnan(RecallAtK().compute()["R@1"].item())


# -- GroundingEvaluator ---------------------------------------------------------------------
def phrase(gt_pixels: torch.Tensor, tokens: list[int], chain_id: int = 0) -> dict:
    mask = torch.zeros(T, dtype=torch.bool)
    mask[tokens] = True
    return {"text": "x", "chain_id": chain_id, "gt_boxes_xyxy": gt_pixels, "token_mask": mask}


def model_outputs(per_image: list[list[tuple[list[int], torch.Tensor]]], queries: int = 5) -> dict:
    """Build outputs where query i scores high on tokens ``tokens_i`` and predicts pixel box ``box_i``;
    remaining queries predict a small box in a corner with low scores."""
    batch = len(per_image)
    logits = torch.full((batch, queries, T), -6.0)
    boxes = pixel_xyxy_to_normalized_cxcywh(box(180, 80, 195, 95), H, W).repeat(batch, queries, 1)
    for b, items in enumerate(per_image):
        for q, (tokens, pixel_box) in enumerate(items):
            logits[b, q, tokens] = 6.0 - q * 0.1
            boxes[b, q] = pixel_xyxy_to_normalized_cxcywh(pixel_box, H, W)[0]
    return {"pred_logits": logits, "pred_boxes": boxes, "text_mask": torch.ones(batch, T, dtype=torch.bool)}


def meta(image_id: str, sentence_id: int, phrases: list[dict]) -> dict:
    return {"image_id": image_id, "sentence_id": sentence_id, "orig_size": (H, W), "phrases": phrases}


def test_evaluator_perfect_predictions():
    g0, g1, g2 = box(10, 10, 90, 60), box(100, 20, 160, 90), box(30, 40, 70, 95)
    metas = [
        meta("img1", 0, [phrase(g0, [1, 2]), phrase(g1, [4])]),
        meta("img1", 1, [phrase(g2, [0])]),
    ]
    outputs = model_outputs([[([1, 2], g0), ([4], g1)], [([0], g2)]])
    evaluator = GroundingEvaluator()
    evaluator.update(outputs, metas)
    result = evaluator.compute()
    assert all(isinstance(v, float) for v in result.values())
    for key in ("mAP", "mAP50", "R@1", "R@5", "R@10", "R@1_merged"):
        assert result[key] == pytest.approx(1.0), key
    assert result["num_phrases"] == 3


def test_evaluator_known_miss_and_reset():
    g0, g1 = box(10, 10, 90, 60), box(100, 20, 160, 90)
    wrong = box(120, 0, 200, 30)
    metas = [meta("a", 0, [phrase(g0, [1])]), meta("b", 0, [phrase(g1, [2])])]
    # image a: right box; image b: top-scored box is wrong, right box is second (rank 2)
    outputs = model_outputs([[([1], g0)], [([2], wrong), ([2], g1)]])
    evaluator = GroundingEvaluator()
    evaluator.update(outputs, metas)
    result = evaluator.compute()
    assert result["R@1"] == pytest.approx(0.5)
    assert result["R@5"] == pytest.approx(1.0)
    evaluator.reset()
    evaluator.update(model_outputs([[([1], g0)], [([2], g1)]]), metas)
    assert evaluator.compute()["R@1"] == pytest.approx(1.0)


def test_evaluator_map_known_value():
    """One phrase, one GT; the top detection is wrong, the second right: precision 1/2 at recall 1,
    so COCO's interpolated AP is 0.5 at every IoU threshold."""
    gt = box(10, 10, 90, 60)
    metas = [meta("a", 0, [phrase(gt, [1])])]
    outputs = model_outputs([[([1], box(120, 0, 200, 30)), ([1], gt)]], queries=2)
    evaluator = GroundingEvaluator()
    evaluator.update(outputs, metas)
    result = evaluator.compute()
    assert result["mAP50"] == pytest.approx(0.5, abs=1e-3)
    assert result["mAP"] == pytest.approx(0.5, abs=1e-3)


def test_evaluator_skips_captions_without_phrases():
    g0 = box(10, 10, 90, 60)
    evaluator = GroundingEvaluator()
    evaluator.update(model_outputs([[([1], g0)], []]), [meta("a", 0, [phrase(g0, [1])]), meta("b", 0, [])])
    assert evaluator.compute()["num_phrases"] == 1


def test_evaluator_ignores_phrases_without_gt_boxes():
    g0 = box(10, 10, 90, 60)
    metas = [meta("a", 0, [phrase(torch.zeros(0, 4), [3]), phrase(g0, [1])])]
    evaluator = GroundingEvaluator()
    evaluator.update(model_outputs([[([3], box(120, 0, 200, 30)), ([1], g0)]]), metas)
    result = evaluator.compute()
    assert result["num_phrases"] == 1
    assert result["mAP"] == pytest.approx(1.0) and result["R@1"] == pytest.approx(1.0)


# -- prediction files -----------------------------------------------------------------------
@pytest.fixture
def dataset_phrases() -> dict:
    chain = torch.cat([box(0, 0, 10, 10), box(20, 0, 30, 10)])
    metas = [
        meta("100", 0, [phrase(box(0, 0, 50, 50), [1]), phrase(chain, [2])]),
        meta("100", 1, [phrase(box(10, 10, 40, 40), [1])]),
    ]
    return collect_dataset_phrases(metas)


def test_score_prediction_file(dataset_phrases):
    predictions = [
        {"image_id": "100", "sentence_id": 0, "boxes": [[[0, 0, 50, 50]], [[0, 0, 30, 10], [0, 0, 10, 10]]]},
        {"image_id": 100, "sentence_id": "1", "boxes": [[[60, 60, 90, 90], [10, 10, 40, 40]]]},
    ]
    result = score_prediction_file(predictions, dataset_phrases)
    # ANY-BOX: phrase 1 hit@1; phrase 2 top-1 is the union (miss), top-2 hits; phrase 3 hit at rank 2
    assert result["R@1"] == pytest.approx(1 / 3)
    assert result["R@5"] == pytest.approx(1.0)
    # MERGED: phrase 2's top-1 equals the union box
    assert result["R@1_merged"] == pytest.approx(2 / 3)
    assert result["num_phrases"] == 3


def test_score_prediction_file_errors(dataset_phrases):
    good = {"image_id": "100", "sentence_id": 1, "boxes": [[[10, 10, 40, 40]]]}
    wrong_count = {"image_id": "100", "sentence_id": 0, "boxes": [[[0, 0, 50, 50]]]}
    with pytest.raises(ValueError, match=r"image_id='100' sentence_id=0.*1 ranked box lists, expected 2"):
        score_prediction_file([wrong_count, good], dataset_phrases)
    with pytest.raises(ValueError, match="not in the dataset"):
        score_prediction_file([dict(good, image_id="999")], dataset_phrases)
    with pytest.raises(ValueError, match="duplicate"):
        score_prediction_file([good, good], dataset_phrases)
    with pytest.raises(ValueError, match="no prediction"):
        score_prediction_file([good], dataset_phrases)
    with pytest.raises(ValueError, match=r"sentence_id=1.*\(K, 4\)"):
        score_prediction_file([dict(good, boxes=[[[1, 2, 3]]])], dataset_phrases, allow_missing=True)


def test_score_prediction_file_missing_sentences_count_as_misses(dataset_phrases):
    good = {"image_id": "100", "sentence_id": 1, "boxes": [[[10, 10, 40, 40]]]}
    result = score_prediction_file([good], dataset_phrases, allow_missing=True)
    assert result["R@1"] == pytest.approx(1 / 3)
    assert result["num_sentences"] == 2


def test_sentence_without_boxed_phrases_is_accepted_with_an_empty_list(dataset_phrases):
    """MDETR's evaluator accepts a prediction for every sentence of an image; one with no phrase to
    score (the dataset skips it as no_boxes) carries ``"boxes": []`` and scores nothing."""
    good = [{"image_id": "100", "sentence_id": 0, "boxes": [[[0, 0, 50, 50]], [[0, 0, 10, 10]]]},
            {"image_id": "100", "sentence_id": 1, "boxes": [[[10, 10, 40, 40]]]}]
    empty = {"image_id": "100", "sentence_id": 2, "boxes": []}
    every = {("100", 0), ("100", 1), ("100", 2)}
    result = score_prediction_file(good + [empty], dataset_phrases, all_sentences=every)
    assert result["R@1"] == pytest.approx(1.0) and result["num_phrases"] == 3
    assert result["num_sentences"] == 2 and result["num_sentences_without_phrases"] == 1
    # without the split's sentence list the sentence is unknown (the old behaviour)...
    with pytest.raises(ValueError, match="sentence_id=2 is not in the dataset"):
        score_prediction_file(good + [empty], dataset_phrases)
    # ...a sentence absent from the split stays an error, and boxes for a sentence with nothing to score too
    with pytest.raises(ValueError, match="sentence_id=3 is not in the dataset"):
        score_prediction_file(good + [dict(empty, sentence_id=3)], dataset_phrases, all_sentences=every)
    with pytest.raises(ValueError, match=r"sentence_id=2: the sentence has no phrase with a box.*got 1"):
        score_prediction_file(good + [dict(empty, boxes=[[[0, 0, 5, 5]]])], dataset_phrases, all_sentences=every)


def test_load_predictions_names_a_malformed_entry(tmp_path):
    import json

    from ovd.training.metrics import load_predictions

    path = tmp_path / "preds.json"
    path.write_text(json.dumps([{"image_id": "1", "sentence_id": 0, "boxes": []}, {"image_id": "1"}]))
    with pytest.raises(ValueError, match=r"preds.json: entry 1 lacks sentence_id, boxes; each entry needs"):
        load_predictions(str(path))


@pytest.mark.parametrize("entry, message", [
    ({"image_id": "1", "sentence_id": None, "boxes": []}, "entry 1: sentence_id must be an integer, got None"),
    ({"image_id": "1", "sentence_id": 1.5, "boxes": []}, "entry 1: sentence_id must be an integer, got 1.5"),
    ({"image_id": "1", "sentence_id": "zero", "boxes": []}, "entry 1: sentence_id must be an integer, got 'zero'"),
    ({"image_id": None, "sentence_id": 0, "boxes": []}, "entry 1: image_id must be a string or an integer"),
    ({"image_id": "1", "sentence_id": 0, "boxes": None}, "entry 1: boxes must be a list"),
])
def test_load_predictions_names_an_entry_with_a_bad_value(tmp_path, entry, message):
    """A null or fractional sentence_id, or null boxes: a ValueError naming the file and the entry (before: a
    TypeError traceback, or sentence 1.5 read as sentence 1)."""
    import json

    from ovd.training.metrics import load_predictions

    path = tmp_path / "preds.json"
    path.write_text(json.dumps([{"image_id": 1, "sentence_id": "0", "boxes": []}, entry]))
    with pytest.raises(ValueError, match=r"preds.json: " + re.escape(message)):
        load_predictions(str(path))


def test_cli_eval_accepts_every_sentence_of_an_image(tmp_path, capsys):
    """`ovd eval --predictions` on a Flickr30k layout whose image has a caption with no box (the "ghost")."""
    import json

    from test_data_fixtures import write_main_flickr

    from ovd.cli import main as ovd_main
    from ovd.data.dataset import GroundingDataset
    from ovd.data.readers import load_records
    from ovd.training.metrics import sentence_keys

    root = write_main_flickr(tmp_path / "flickr")
    records = load_records(root, "flickr30k", "train")
    dataset = GroundingDataset(records, split="train")
    assert dataset.skipped["no_boxes"] == 1 and len(sentence_keys(records)) == len(dataset.samples) + 1
    scored = {(s.record.image_id, s.record.sentence_id): s for s in dataset.samples}
    predictions = []
    for image_id, sentence_id in sorted(sentence_keys(records)):
        sample = scored.get((image_id, sentence_id))
        boxes = [[p["gt_boxes_xyxy"][0].tolist()] for p in sample.phrases] if sample else []
        predictions.append({"image_id": image_id, "sentence_id": sentence_id, "boxes": boxes})
    path = tmp_path / "preds.json"
    path.write_text(json.dumps(predictions))
    assert ovd_main(["eval", "--predictions", str(path), "--data-root", str(root), "--split", "train"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["R@1"] == pytest.approx(1.0)
    assert result["num_sentences_without_phrases"] == 1 and result["num_sentences"] == len(dataset.samples)


@pytest.mark.parametrize("content, message", [
    (b'[{"image_id": "1" "sentence_id": 0, "boxes": []}]', r"preds\.json: malformed JSON \(Expecting ',' delimiter"),
    (b'[{"image_id": "caf\xe9", "sentence_id": 0, "boxes": []}]', r"preds\.json: not valid UTF-8"),
    (None, r"preds\.json: prediction file not found"),
])
def test_load_predictions_names_the_file_of_an_unreadable_file(tmp_path, content, message):
    from ovd.training.metrics import load_predictions

    path = tmp_path / "preds.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_predictions(str(path))
    with pytest.raises(ValueError, match=r"cannot read the prediction file"):
        load_predictions(str(tmp_path))  # a folder


def test_cli_eval_names_a_malformed_prediction_file(tmp_path, capsys):
    from test_data_fixtures import write_main_flickr

    from ovd.cli import main

    root = write_main_flickr(tmp_path / "flickr")
    path = tmp_path / "preds.json"
    path.write_text('[{"image_id": "1" "sentence_id": 0}]')
    assert main(["eval", "--predictions", str(path), "--data-root", str(root), "--split", "train"]) == 2
    assert f"{path}: malformed JSON" in capsys.readouterr().err
