"""The vocabulary protocol (ovd.training.vocabulary_eval): absent classes cost AP, chunking, the
absent-FP rate and present recall on planted predictions, and one end-to-end call on an untrained model."""

import math

import pytest
import torch

from ovd.data.readers import load_records
from ovd.data.synthetic import write_synthetic_dataset
from ovd.data.vocabulary import present_keys, split_vocabulary
from ovd.processor import join_phrases
from ovd.training.vocabulary_eval import (
    VocabImage,
    chunk_vocabulary,
    evaluate_vocabulary,
    probe_pairs,
    query_detections,
    score_probe,
    score_vocabulary,
    vocabulary_images,
)

BOX_A = [10.0, 10.0, 50.0, 50.0]
BOX_B = [60.0, 20.0, 90.0, 70.0]


def _pred(boxes, scores, labels, box_scores=None):
    out = {"boxes": torch.tensor(boxes).reshape(-1, 4), "scores": torch.tensor(scores),
           "labels": torch.tensor(labels, dtype=torch.long)}
    if box_scores is not None:
        out["box_scores"] = torch.tensor(box_scores)
    return out


def _toy(fp_score):
    """Image 0 holds class 0 (BOX_A), image 1 holds class 1 (BOX_B); both are found exactly, and image 1
    gets a planted class-0 box (class 0 is absent there) with score ``fp_score``."""
    targets = [{"boxes": torch.tensor([BOX_A]), "labels": torch.tensor([0])},
               {"boxes": torch.tensor([BOX_B]), "labels": torch.tensor([1])}]
    preds = [_pred([BOX_A], [0.9], [0]), _pred([BOX_B, BOX_A], [0.8, fp_score], [1, 0])]
    return preds, targets


def test_absent_class_box_is_a_false_positive():
    # Class 0 ranked: FP (0.95) then TP (0.9): recall 1 only at precision 1/2, so the 101-point
    # interpolated AP is 0.5 at every IoU threshold; class 1 AP = 1. mAP = (0.5 + 1) / 2.
    preds, targets = _toy(fp_score=0.95)
    result = score_vocabulary(preds, targets)
    assert result["vocab_mAP50"] == pytest.approx(0.75, abs=1e-6)
    assert result["vocab_mAP"] == pytest.approx(0.75, abs=1e-6)
    assert result["absent_fp_rate"] == pytest.approx(0.5)  # image 1 of 2 boxes an absent class
    # Ranked below the true positive the false positive costs no AP (precision 1 up to recall 1).
    preds, targets = _toy(fp_score=0.85)
    assert score_vocabulary(preds, targets)["vocab_mAP50"] == pytest.approx(1.0, abs=1e-6)


def test_absent_fp_rate_and_present_recall_on_planted_predictions():
    targets = [
        {"boxes": torch.tensor([BOX_A]), "labels": torch.tensor([0])},
        {"boxes": torch.tensor([BOX_A, BOX_B]), "labels": torch.tensor([0, 1])},
        {"boxes": torch.tensor([BOX_B]), "labels": torch.tensor([1])},
    ]
    preds = [
        # image 0: class 0 found (kept); an absent class 2 box passes the threshold -> FP image
        _pred([BOX_A, BOX_B], [0.9, 0.5], [0, 2], box_scores=[0.9, 0.5]),
        # image 1: class 0 box below the box threshold (a miss, even though its class score is high);
        # class 1 box passes but overlaps its GT at IoU < 0.5 (a miss); an absent class 2 box is under
        # the threshold (not an FP)
        _pred([BOX_A, [60.0, 20.0, 75.0, 40.0], BOX_B], [0.9, 0.9, 0.9], [0, 1, 2], box_scores=[0.2, 0.9, 0.29]),
        # image 2: class 1 found
        _pred([BOX_B], [0.7], [1], box_scores=[0.7]),
    ]
    result = score_vocabulary(preds, targets, threshold=0.3)
    assert result["absent_fp_rate"] == pytest.approx(1 / 3)
    # 3 classes seen: absent pairs (0, c1), (0, c2), (1, c2), (2, c0), (2, c2); only (0, c2) is boxed
    assert result["num_absent"] == 5
    assert result["absent_fp_pair_rate"] == pytest.approx(1 / 5)
    # a larger vocabulary (10 classes) dilutes the per-pair rate but not the per-image one
    wide = score_vocabulary(preds, targets, threshold=0.3, num_classes=10)
    assert wide["absent_fp_pair_rate"] == pytest.approx(1 / (30 - 4)) and wide["absent_fp_rate"] == pytest.approx(1 / 3)
    assert result["num_present"] == 4  # (0, c0), (1, c0), (1, c1), (2, c1)
    assert result["present_recall"] == pytest.approx(2 / 4)


def test_score_vocabulary_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="predictions for 1 images but targets for 2"):
        score_vocabulary([_pred([BOX_A], [0.9], [0])], _toy(0.5)[1])


def test_chunking_keeps_every_class_once_and_fits(tokenizer):
    colours = ["red", "green", "blue", "yellow", "purple", "orange", "white"]
    shapes = ["circle", "square", "triangle", "diamond", "star", "cross"]
    vocabulary = [f"{c} {s}" for c in colours for s in shapes]
    chunks = chunk_vocabulary(vocabulary, tokenizer, max_tokens=24)
    assert len(chunks) > 1
    assert [v for chunk in chunks for v in chunk] == vocabulary  # each once, order kept
    for chunk in chunks:
        assert len(tokenizer(join_phrases(chunk)[0])["input_ids"]) <= 24
    # The greedy packing is tight: no chunk could take the next chunk's first class.
    for chunk, following in zip(chunks, chunks[1:]):
        assert len(tokenizer(join_phrases(chunk + following[:1])[0])["input_ids"]) > 24
    assert chunk_vocabulary(vocabulary, tokenizer, max_tokens=512) == [vocabulary]


def test_chunking_refuses_an_entry_longer_than_the_prompt(tokenizer):
    with pytest.raises(ValueError, match="alone exceeds text.max_tokens=6"):
        chunk_vocabulary(["red circle", "a very long winded name of a shape"], tokenizer, max_tokens=6)


def test_query_detections_ranks_every_query_under_every_entry():
    # Tokens: [CLS] red circle . blue square [SEP]; entry 0 = tokens 1-2, entry 1 = tokens 4-5.
    masks = torch.tensor([[0, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 0]], dtype=torch.bool)
    logit = torch.logit(torch.tensor([
        [0.1, 0.9, 0.1, 0.1, 0.6, 0.6, 0.1],  # entry 0 mean 0.5, entry 1 mean 0.6 -> predict labels it 1; max 0.9
        [0.1, 0.8, 0.8, 0.1, 0.1, 0.1, 0.1],  # entry 0 mean 0.8, entry 1 mean 0.1
    ]))
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.25, 0.25, 0.5, 0.5]])
    det = query_detections(logit, boxes, torch.ones(7, dtype=torch.bool), masks, height=100, width=200)
    # Query-major pairs: (q0, e0), (q0, e1), (q1, e0), (q1, e1), each scored by the entry's mean token sigmoid,
    # so query 0's box also ranks as a class-0 detection (AP's queries x classes post-processing).
    assert det["labels"].tolist() == [0, 1, 0, 1]
    assert det["scores"].tolist() == pytest.approx([0.5, 0.6, 0.8, 0.1], abs=1e-5)
    # predict's rule: one box per query, on its best entry's pair, with the best token's sigmoid; 0 elsewhere.
    assert det["box_scores"].tolist() == pytest.approx([0.0, 0.9, 0.8, 0.0], abs=1e-5)
    assert det["boxes"][0].tolist() == det["boxes"][1].tolist()
    assert det["boxes"][2].tolist() == pytest.approx([0.0, 0.0, 100.0, 50.0], abs=1e-4)


def test_a_second_class_on_the_same_box_counts_for_ap():
    # One object of class 1; the only query scores class 0 higher (0.7) than class 1 (0.6). With one detection
    # per query (its best class) class 1 would get no detection and AP 0; as a (query, class) pair it is found.
    masks = torch.tensor([[0, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 0]], dtype=torch.bool)
    logit = torch.logit(torch.tensor([[0.1, 0.7, 0.7, 0.1, 0.6, 0.6, 0.1]]))
    det = query_detections(logit, torch.tensor([[0.5, 0.5, 0.4, 0.4]]), torch.ones(7, dtype=torch.bool), masks,
                           height=100, width=100)
    target = {"boxes": torch.tensor([[30.0, 30.0, 70.0, 70.0]]), "labels": torch.tensor([1])}
    result = score_vocabulary([det], [target], threshold=0.3, num_classes=2)
    assert result["vocab_mAP50"] == pytest.approx(1.0, abs=1e-6)  # class 0 has no GT anywhere: not averaged
    # ... but predict's rule labels the query class 0: a false positive on the absent class, and a missed class 1.
    assert result["absent_fp_pair_rate"] == pytest.approx(1.0) and result["present_recall"] == pytest.approx(0.0)


@pytest.fixture(scope="module")
def vocab_root(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("vocab"), seed=3, num_train=1, num_val=6, num_test=1,
                                   num_novel=1)


def test_ground_truth_per_image_uses_the_phrase_keys(vocab_root):
    records = load_records(vocab_root, "flickr30k", "val")
    vocabulary = split_vocabulary(records)
    images = vocabulary_images(records, vocabulary)
    present = present_keys(records)
    assert sorted(im.image_id for im in images) == sorted(present)
    for im in images:
        assert im.boxes.shape == (len(im.labels), 4)
        assert {vocabulary[i].lower() for i in im.labels.tolist()} == present[im.image_id]
        assert len({tuple(b) for b in im.boxes.tolist()}) == len(im.boxes)  # one GT per unique box


def test_end_to_end_on_an_untrained_tiny_model(tiny_model, vocab_root):
    records = load_records(vocab_root, "flickr30k", "val")
    result = evaluate_vocabulary(tiny_model, records, batch_size=4)
    assert set(result) == {"vocab_mAP", "vocab_mAP50", "absent_fp_rate", "absent_fp_pair_rate", "present_recall",
                           "probe_absent_fp_rate", "probe_present_recall", "probe_images",
                           "num_classes", "num_images", "num_prompts"}
    for key in ("vocab_mAP", "vocab_mAP50", "absent_fp_rate", "absent_fp_pair_rate", "present_recall",
                "probe_absent_fp_rate", "probe_present_recall"):
        assert 0.0 <= result[key] <= 1.0 and not math.isnan(result[key]), key
    assert result["num_images"] == 6
    assert result["num_classes"] == len(split_vocabulary(records))
    assert result["num_prompts"] == len(chunk_vocabulary(split_vocabulary(records), tiny_model.processor.tokenizer,
                                                          tiny_model.processor.max_tokens))
    assert evaluate_vocabulary(tiny_model, records, max_images=2)["num_images"] == 2


def test_probe_pairs_name_a_present_class_and_one_sharing_no_word_with_the_image(vocab_root):
    records = load_records(vocab_root, "flickr30k", "val")
    vocabulary = split_vocabulary(records)
    images = vocabulary_images(records, vocabulary)
    pairs = probe_pairs(images, vocabulary)
    assert len(pairs) == len(images) and all(p is not None for p in pairs)
    for im, (present, absent, _) in zip(images, pairs):
        assert present in im.labels.tolist()
        image_words = {w for c in im.labels.tolist() for w in vocabulary[c].lower().split()}
        assert not set(vocabulary[absent].lower().split()) & image_words  # neither its colour nor its shape
    assert probe_pairs(images, vocabulary) == pairs  # seeded: the same probe for every model
    orders = [p.absent_first for p in pairs]
    assert any(orders) and not all(orders)  # the absent name comes first in some prompts, not all: no position cue
    assert all(p.prompt_order == ((p.absent, p.present) if p.absent_first else (p.present, p.absent)) for p in pairs)


def test_probe_skips_an_image_whose_every_other_class_shares_a_word():
    vocabulary = ["red circle", "red square", "blue star"]
    images = [VocabImage("a", None, 100, 100, torch.tensor([BOX_A]), torch.tensor([0])),
              VocabImage("b", None, 100, 100, torch.tensor([BOX_A, BOX_B]), torch.tensor([0, 2]))]
    pairs = probe_pairs(images, vocabulary)
    assert pairs[0][:2] == (0, 2)  # "red square" shares "red": only "blue star" is a clean absent name
    assert pairs[1] is None  # every class shares a word with "red circle" or "blue star"


def test_score_probe_on_planted_detections():
    gt_boxes, gt_labels = torch.tensor([BOX_A]), torch.tensor([4])
    det = {"boxes": torch.tensor([BOX_A, BOX_B, BOX_B]), "labels": torch.tensor([4, 7, 4]),
           "box_scores": torch.tensor([0.9, 0.2, 0.8])}
    # the absent class 7's box is under the threshold; class 4 is found at IoU 1
    assert score_probe(det, present=4, absent=7, gt_boxes=gt_boxes, gt_labels=gt_labels) == (False, True)
    det["box_scores"] = torch.tensor([0.1, 0.5, 0.8])
    # now class 7 is boxed, and the only kept class-4 box misses its GT (IoU 0 with BOX_A)
    assert score_probe(det, present=4, absent=7, gt_boxes=gt_boxes, gt_labels=gt_labels) == (True, False)
