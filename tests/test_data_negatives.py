"""Negative phrases in training (issue 13): absent object names appended to train captions."""

from __future__ import annotations

import warnings

import pytest
import torch
from test_data_vocabulary import record
from torchvision.ops import sigmoid_focal_loss

from ovd.config import PRESETS, TrainConfig, get_config
from ovd.data.collate import GroundingCollator
from ovd.data.datamodule import EpochSeededSampler, EpochTaggedSampler, GroundingDataModule
from ovd.data.negatives import (
    NegativePhraseSampler,
    append_negatives,
    mentioned_keys,
    sampler_for_records,
)
from ovd.data.synthetic import write_synthetic_dataset
from ovd.data.vocabulary import phrase_key
from ovd.processor import PHRASE_SEPARATOR
from ovd.training.losses import class_targets, loss_class

COLOURS = ("red", "green", "blue", "yellow", "white")
SHAPES = ("circle", "square", "star", "cross")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("neg"), seed=4, num_train=16, num_val=4, num_test=1,
                                   num_novel=1, image_size=(64, 48), captions_per_image=2)


def toy_records():
    """Image "1": caption 0 names a red circle, caption 1 a green star (both present). Other images hold
    the rest of a 20-name vocabulary, so most names are absent from image "1"."""
    records = [
        record("1", 0, [("a red circle", "1"), ("the dark background", "9")], boxed={"1", "2"}),
        record("1", 1, [("a small green star", "2")], boxed={"1", "2"}),
    ]
    for i, (c, s) in enumerate((c, s) for c in COLOURS for s in SHAPES):
        records.append(record(str(100 + i), 0, [(f"a {c} {s}", "1")], boxed={"1"}))
    return records


# -- the sampler ----------------------------------------------------------------------------------


def test_sampler_never_draws_an_object_of_the_image():
    records = toy_records()
    sampler = sampler_for_records(records, max_phrases=6, rate=1.0, seed=3)
    excluded = mentioned_keys(records)
    assert {"red circle", "green star", "dark background"} <= excluded["1"]  # both captions count
    drawn = {"1": set(), "105": set()}
    for epoch in range(3):
        for index in range(300):
            for image_id in drawn:
                negatives = sampler.draw(image_id, index, epoch)
                assert 1 <= len(negatives) <= 6 and len(set(negatives)) == len(negatives)
                keys = {phrase_key(n) for n in negatives}
                assert not keys & excluded[image_id], (image_id, negatives)
                drawn[image_id] |= keys
    assert len(drawn["1"]) == 20 - 2  # every absent name does come up
    assert {"green star", "red circle"} <= drawn["105"]  # present in image "1" only


def test_sampler_when_nearly_everything_is_present():
    sampler = NegativePhraseSampler(["red circle", "blue star"], {"x": {"red circle", "blue star"}}, max_phrases=3)
    assert sampler.draw("x", 0) == []  # nothing absent: no negative, no endless loop
    assert sampler.draw("unknown image", 0) != []


def test_draw_is_deterministic_per_seed_epoch_index():
    records = toy_records()
    a = sampler_for_records(records, max_phrases=3, rate=0.5, seed=1)
    b = sampler_for_records(records, max_phrases=3, rate=0.5, seed=1)
    draws = [a.draw("1", i, e) for e in range(2) for i in range(50)]
    assert draws == [b.draw("1", i, e) for e in range(2) for i in range(50)]  # a new instance, same draws
    assert draws[:50] != draws[50:]  # another epoch, other negatives
    assert draws != [sampler_for_records(records, 3, 0.5, seed=2).draw("1", i, e) for e in range(2) for i in range(50)]
    assert 10 < sum(1 for d in draws if not d) < 90  # rate 0.5: about half get none


def test_hard_share_draws_names_sharing_a_word_with_the_image_first():
    # Image "1" holds a red circle and a green star (and a "dark background"); among the 18 absent names of the
    # vocabulary, the 12 hard ones share "red", "circle", "green" or "star" (red square/star/cross, green
    # circle/square/cross, blue/yellow/white circle, blue/yellow/white star).
    records = toy_records()
    excluded = mentioned_keys(records)["1"]
    words = set().union(*(k.split() for k in excluded))
    uniform = sampler_for_records(records, max_phrases=4, rate=1.0, seed=3)
    hard = sampler_for_records(records, max_phrases=4, rate=1.0, seed=3, hard_share=1.0)
    def share_hard(sampler):
        names = [n for i in range(400) for n in sampler.draw("1", i, max_phrases=4)]
        assert not {phrase_key(n) for n in names} & excluded  # never a present object, hard or not
        return sum(bool(set(phrase_key(n).split()) & words) for n in names) / len(names)
    assert share_hard(hard) == 1.0
    assert 0.5 < share_hard(uniform) < 0.85  # 12 of 18 absent names are hard: uniform draws them at ~67%
    # Share 0 is the uniform sampler, draw for draw (old configs train as before).
    zero = sampler_for_records(records, max_phrases=4, rate=1.0, seed=3, hard_share=0.0)
    assert [zero.draw("1", i) for i in range(50)] == [uniform.draw("1", i) for i in range(50)]
    # More draws than hard names: the 12 hard ones first, the rest from the other absent names, all distinct.
    longest = max((hard.draw("1", i, max_phrases=18) for i in range(40)), key=len)
    assert len(longest) > 12 and len(set(longest)) == len(longest)
    assert all(set(phrase_key(n).split()) & words for n in longest[:12])
    assert not any(set(phrase_key(n).split()) & words for n in longest[12:])


def test_sampler_argument_errors():
    with pytest.raises(ValueError, match="max_phrases"):
        NegativePhraseSampler(["a"], {}, max_phrases=0)
    with pytest.raises(ValueError, match=r"rate=1.5 must be in \[0, 1\]"):
        NegativePhraseSampler(["a"], {}, max_phrases=1, rate=1.5)
    with pytest.raises(ValueError, match=r"hard_share=-0.1 must be in \[0, 1\]"):
        NegativePhraseSampler(["a"], {}, max_phrases=1, hard_share=-0.1)


def test_append_negatives_keeps_the_caption_chars():
    caption = "A red circle on a dark background ."
    prompt, spans = append_negatives(caption, ["blue star", "white cross"], keep_until=12)
    assert prompt == "A red circle on a dark background" + PHRASE_SEPARATOR + "blue star" + PHRASE_SEPARATOR + "white cross"
    assert prompt[:12] == caption[:12]
    assert [prompt[s["char_start"]:s["char_end"]] for s in spans] == ["blue star", "white cross"]
    assert append_negatives(caption, []) == (caption, [])


def test_epoch_tagged_sampler_keeps_the_order_and_tags_the_epoch():
    plain, tagged = EpochSeededSampler(30, seed=7), EpochTaggedSampler(30, seed=7)
    for epoch in (0, 3):
        plain.set_epoch(epoch)
        tagged.set_epoch(epoch)
        pairs = list(tagged)
        assert [i for i, _ in pairs] == list(plain) and {e for _, e in pairs} == {epoch}


# -- the data module and the batch ----------------------------------------------------------------


def _dm(synth, tokenizer, negatives: int, max_tokens: int = 64) -> GroundingDataModule:
    return GroundingDataModule(synth, tokenizer, max_tokens=max_tokens, image_size=32, batch_size=16, seed=2,
                               negative_phrases=negatives, negative_rate=1.0)


def test_train_batches_get_negatives_positives_unchanged(synth, tokenizer):
    on, off = _dm(synth, tokenizer, 3), _dm(synth, tokenizer, 0)
    for dm in (on, off):
        dm.setup("fit")
        dm.train_dataloader().sampler.set_epoch(1)
    with_neg, without = next(iter(on.train_dataloader())), next(iter(off.train_dataloader()))
    # A new loader, same epoch: the same negatives (what a resumed run sees).
    assert [m["caption"] for m in next(iter(on.train_dataloader()))["meta"]] == [m["caption"] for m in with_neg["meta"]]
    counted = 0
    for m_on, m_off, t_on, t_off in zip(with_neg["meta"], without["meta"], with_neg["targets"], without["targets"]):
        assert m_on["caption"].startswith(m_off["caption"].rstrip(" ."))
        assert m_off["negatives"] == []
        assert 1 <= len(m_on["negatives"]) <= 3
        T = t_off["positive_map"].shape[1]
        assert torch.equal(t_on["boxes"], t_off["boxes"])
        pm = t_on["positive_map"]
        assert torch.equal(pm[:, :T][:, t_off["positive_map"].sum(0) > 0], t_off["positive_map"][:, t_off["positive_map"].sum(0) > 0])
        assert torch.equal(pm.sum(), t_off["positive_map"].sum())  # no new positive token
        for neg in m_on["negatives"]:
            assert neg["token_mask"].any()
            assert (pm[:, neg["token_mask"]] == 0).all()  # a negative token is 0 in every box row
            counted += 1
        present = {phrase_key(p["text"]) for p in m_on["phrases"]}
        assert not present & {phrase_key(n["text"]) for n in m_on["negatives"]}
    assert counted >= 16


def test_val_and_other_splits_never_get_negatives(synth, tokenizer):
    dm = _dm(synth, tokenizer, 3)
    dm.setup("fit")
    for loader in (dm.val_dataloader(), dm.dataloader_for("train")):
        batch = next(iter(loader))
        assert all(m["negatives"] == [] for m in batch["meta"])
        split = "val" if loader.dataset is dm.dataset("val") else "train"
        captions = [s.record.caption for s in dm.dataset(split).samples][: len(batch["meta"])]
        assert [m["caption"] for m in batch["meta"]] == captions  # the records' own captions


def test_truncation_drops_negatives_first_and_quietly(synth, tokenizer):
    full = _dm(synth, tokenizer, 3, max_tokens=128)
    full.setup("fit")
    item = full.train_dataloader().dataset[(0, 0)]
    assert item["negatives"]
    caption_tokens = len(tokenizer(item["caption"][: item["negatives"][0]["char_start"]])["input_ids"])
    collator = GroundingCollator(tokenizer, max_tokens=caption_tokens)  # room for the caption only
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # losing only negatives must not warn
        batch = collator([item])
    plain = dict(item, caption=item["caption"][: item["negatives"][0]["char_start"] - len(PHRASE_SEPARATOR)],
                 negatives=[])
    reference = GroundingCollator(tokenizer, max_tokens=128)([plain])
    T = reference["targets"][0]["positive_map"].shape[1]
    assert torch.equal(batch["targets"][0]["positive_map"][:, :T - 1], reference["targets"][0]["positive_map"][:, :T - 1])
    assert torch.equal(batch["targets"][0]["boxes"], reference["targets"][0]["boxes"])
    # Too short for the caption itself: the usual warning still comes.
    with pytest.warns(UserWarning, match="truncated"):
        GroundingCollator(tokenizer, max_tokens=caption_tokens - 3)([item])


def test_focal_loss_pushes_negative_tokens_down(synth, tokenizer):
    """A negative token has class target 0 for every query, matched or not, and the focal loss gradient on
    its logit is positive: a gradient step lowers its score. No loss change was needed."""
    dm = _dm(synth, tokenizer, 3)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    B, T = batch["input_ids"].shape
    Q = 5
    matches = [(torch.arange(len(t["boxes"])), torch.arange(len(t["boxes"]))) for t in batch["targets"]]
    assert all(len(t["boxes"]) <= Q for t in batch["targets"])
    logits = torch.zeros(B, Q, T, requires_grad=True)
    targets = class_targets(matches, batch["targets"], logits.shape, logits.device)
    negative = torch.zeros(B, T, dtype=torch.bool)
    for b, m in enumerate(batch["meta"]):
        for neg in m["negatives"]:
            negative[b] |= neg["token_mask"]
    assert negative.any()
    assert (targets.permute(0, 2, 1)[negative] == 0).all()  # every query, every negative token
    loss_class(logits, batch["attention_mask"].bool(), matches, batch["targets"], num_boxes=1.0).backward()
    grad = logits.grad.permute(0, 2, 1)[negative]  # (tokens, Q)
    assert (grad > 0).all()
    # The same sign as the plain focal loss toward target 0 (and what a step does: lower the score).
    ref = torch.zeros(1, requires_grad=True)
    sigmoid_focal_loss(ref, torch.zeros(1), reduction="sum").backward()
    assert ref.grad.item() > 0


# -- config ---------------------------------------------------------------------------------------


def test_presets_turn_negatives_on_alike():
    recipes = {name: (get_config(name).train.negative_phrases, get_config(name).train.negative_rate) for name in PRESETS}
    assert len(set(recipes.values())) == 1, recipes  # the same recipe: a fair before/after
    phrases, rate = next(iter(recipes.values()))
    assert phrases >= 1 and 0 < rate <= 1
    assert TrainConfig().negative_phrases == 0  # a bare config (an old checkpoint's) trains as before


@pytest.mark.parametrize("overrides,message", [
    ({"train.negative_phrases": -1}, r"train.negative_phrases=-1 must be an int >= 0"),
    ({"train.negative_phrases": 1.5}, r"train.negative_phrases=1.5 must be an int >= 0"),
    ({"train.negative_phrases": True}, r"train.negative_phrases=True must be an int >= 0"),
    ({"train.negative_rate": 1.2}, r"train.negative_rate=1.2 must be a number in \[0, 1\]"),
    ({"train.negative_rate": "half"}, r"train.negative_rate='half' must be a number in \[0, 1\]"),
    ({"train.hard_negative_share": 2}, r"train.hard_negative_share=2 must be a number in \[0, 1\]"),
])
def test_config_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        get_config("optimized-tiny", overrides)


def test_build_datamodule_passes_the_config(synth):
    from ovd.training.run import build_datamodule

    dm = build_datamodule(get_config("optimized-tiny", {"train.negative_phrases": 2, "train.negative_rate": 0.25,
                                                        "train.hard_negative_share": 0.4}), synth, limit=4)
    assert (dm.negative_phrases, dm.negative_rate) == (2, 0.25)
    dm.setup("fit")
    sampler = dm._negative_samplers["train"]
    assert (sampler.max_phrases, sampler.rate, sampler.hard_share) == (2, 0.25, 0.4)
    assert len(sampler.excluded) == 16  # the whole split's images, not only the 4 kept by ``limit``


def test_class_list_prompts_keep_every_box_on_its_name_and_never_name_a_present_object_as_negative(tmp_path):
    """Detection-style prompts (train.class_list_rate): the caption becomes a shuffled list of the image's object
    names and absent ones; each box's span covers its own name; negatives are absent from the image."""
    import numpy as np

    from ovd.data.dataset import GroundingDataset
    from ovd.data.negatives import NegativePhraseDataset, sampler_for_records
    from ovd.data.readers import load_records
    from ovd.data.synthetic import write_synthetic_dataset
    from ovd.data.vocabulary import phrase_key, present_keys

    root = write_synthetic_dataset(tmp_path / "s", seed=3, num_train=12, num_val=2, num_test=2, num_novel=2)
    records = load_records(root, "flickr30k", "train")
    present = present_keys(records)
    data = NegativePhraseDataset(GroundingDataset(records, image_size=32),
                                 sampler_for_records(records, 1, 0.0, seed=0), class_list_rate=1.0,
                                 class_list_negatives=12)
    for index in range(len(data)):
        base, item = data.dataset[index], data[(index, 1)]
        caption = item["caption"]
        assert caption.count(" . ") >= len(item["negatives"]) and len(item["negatives"]) >= 1
        assert len(item["box_spans"]) == len(base["box_spans"]) and np.allclose(item["boxes"], base["boxes"])
        for spans, old in zip(item["box_spans"], base["box_spans"]):
            (s, e), = spans
            assert phrase_key(caption[s:e]) == phrase_key(base["caption"][old[0][0]:old[0][1]])
        for neg in item["negatives"]:
            assert phrase_key(neg["text"]) not in present[item["image_id"]]
            assert caption[neg["char_start"]:neg["char_end"]] == neg["text"]
    assert data[(0, 1)]["caption"] == data[(0, 1)]["caption"] and data[(0, 1)]["caption"] != data[(0, 2)]["caption"]
