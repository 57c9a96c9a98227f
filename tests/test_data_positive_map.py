"""Char spans -> token positions, checked against hand-computed BERT-uncased tokenizations."""

from __future__ import annotations

import torch

from ovd.data.positive_map import build_positive_map, phrase_token_mask

# "A man and two dogs play in the park ." ->
#  [CLS] a man and two dogs play in the park . [SEP]
#    0   1  2   3   4   5    6   7   8   9  10   11
CAPTION = "A man and two dogs play in the park ."


def offsets(tokenizer, text):
    return tokenizer(text, return_offsets_mapping=True)["offset_mapping"]


def test_positive_map_hand_computed(tokenizer):
    off = offsets(tokenizer, CAPTION)
    assert len(off) == 12
    pm = build_positive_map(off, [[(0, 5)], [(10, 18)], [(0, 5), (27, 35)]], num_tokens=12)
    assert pm.dtype == torch.float32 and pm.shape == (3, 12)
    assert pm[0].nonzero().flatten().tolist() == [1, 2]
    assert pm[1].nonzero().flatten().tolist() == [4, 5]
    assert pm[2].nonzero().flatten().tolist() == [1, 2, 8, 9]
    assert set(pm.unique().tolist()) <= {0.0, 1.0}


def test_wordpieces_and_partial_spans(tokenizer):
    # [CLS] the snow ##board ##er jumps , grinning . [SEP]
    off = offsets(tokenizer, "The snowboarder jumps, grinning.")
    assert phrase_token_mask(off, [(4, 15)]).nonzero().flatten().tolist() == [2, 3, 4]
    # a span covering part of a word takes every word piece it touches
    assert phrase_token_mask(off, [(9, 12)]).nonzero().flatten().tolist() == [3]
    # punctuation glued to a word is its own token and stays out of the span
    assert phrase_token_mask(off, [(16, 21)]).nonzero().flatten().tolist() == [5]


def test_special_and_padding_tokens_never_positive(tokenizer):
    enc = tokenizer(["a man", CAPTION], padding="longest", return_offsets_mapping=True)
    short = enc["offset_mapping"][0]  # [CLS] a man [SEP] + padding, all specials (0, 0)
    mask = phrase_token_mask(short, [(0, 5)])
    assert mask.nonzero().flatten().tolist() == [1, 2]
    assert phrase_token_mask(short, [(0, 0)]).sum() == 0  # an empty span matches nothing


def test_num_tokens_pads_and_truncates(tokenizer):
    off = offsets(tokenizer, CAPTION)
    wide = build_positive_map(off, [[(27, 35)]], num_tokens=20)
    assert wide.shape == (1, 20) and wide[0].nonzero().flatten().tolist() == [8, 9]
    narrow = build_positive_map(off, [[(27, 35)]], num_tokens=9)
    assert narrow[0].nonzero().flatten().tolist() == [8]
    assert build_positive_map(off, [], num_tokens=5).shape == (0, 5)
