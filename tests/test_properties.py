"""Property-based tests (hypothesis) for the Sentences markup parser and the box conversions.
The matcher's property test lives in test_training_matcher.py."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ovd.boxes import (
    cxcywh_to_xyxy,
    inverse_sigmoid,
    normalized_cxcywh_to_pixel_xyxy,
    pixel_xyxy_to_normalized_cxcywh,
    xyxy_to_cxcywh,
)
from ovd.data.errors import DataError
from ovd.data.flickr30k import parse_sentence

word = st.text(alphabet=st.characters(whitelist_categories=("Ll", "Lu", "Nd"), whitelist_characters="',-."),
               min_size=1, max_size=8)
plain = st.lists(word, min_size=0, max_size=4).map(" ".join)
phrase = st.tuples(st.integers(0, 99999), st.lists(st.sampled_from(["people", "other", "animals", "scene"]),
                                                   min_size=1, max_size=3), st.lists(word, min_size=1, max_size=4))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(plain, phrase), min_size=0, max_size=5), plain)
def test_markup_round_trip(pieces, tail):
    """Building a marked-up line from known phrases and parsing it returns the phrases, and every
    phrase's span in the clean caption is exactly its text."""
    line, expected = "", []
    for before, (chain, types, words) in pieces:
        text = " ".join(words)
        line += (before + " " if before else "") + f"[/EN#{chain}/{'/'.join(types)} {text}] "
        expected.append((str(chain), tuple(types), text))
    line += tail
    caption, phrases = parse_sentence(line)
    assert [(p.chain_id, p.types, p.text) for p in phrases] == expected
    for p in phrases:
        assert caption[p.char_start:p.char_end] == p.text
    assert "[" not in caption and "]" not in caption


@settings(max_examples=100, deadline=None)
@given(plain, st.sampled_from(["[", "]", "[/EN#1/people", "[/EN#x/people a]", "]["]))
def test_stray_brackets_always_raise(prefix, junk):
    with pytest.raises(DataError):
        parse_sentence(f"{prefix} {junk} end", where="Sentences/1.txt:1")


boxes_xyxy = st.lists(
    st.tuples(st.floats(0, 500), st.floats(0, 500), st.floats(0.5, 300), st.floats(0.5, 300)), min_size=1, max_size=20
).map(lambda rows: torch.tensor([[x, y, x + w, y + h] for x, y, w, h in rows], dtype=torch.float64))


@settings(max_examples=100, deadline=None)
@given(boxes_xyxy)
def test_xyxy_cxcywh_round_trip(boxes):
    torch.testing.assert_close(cxcywh_to_xyxy(xyxy_to_cxcywh(boxes)), boxes)
    cxcywh = xyxy_to_cxcywh(boxes)
    assert (cxcywh[:, 2:] > 0).all()


@settings(max_examples=100, deadline=None)
@given(boxes_xyxy, st.integers(1, 1000), st.integers(1, 1000))
def test_pixel_normalized_round_trip_and_clipping(boxes, height, width):
    norm = pixel_xyxy_to_normalized_cxcywh(boxes, height, width)
    back = normalized_cxcywh_to_pixel_xyxy(norm, height, width)
    # the way back clips to the image: inside boxes are unchanged, the rest lie within the image
    expected = boxes.clone()
    expected[:, 0::2] = expected[:, 0::2].clamp(0, width)
    expected[:, 1::2] = expected[:, 1::2].clamp(0, height)
    torch.testing.assert_close(back, expected)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(1e-4, 1 - 1e-4), min_size=1, max_size=50))
def test_inverse_sigmoid_inverts_sigmoid(values):
    x = torch.tensor(values, dtype=torch.float64)
    torch.testing.assert_close(inverse_sigmoid(x).sigmoid(), x, atol=1e-6, rtol=1e-6)
    assert torch.isfinite(inverse_sigmoid(torch.tensor([0.0, 1.0]))).all()
