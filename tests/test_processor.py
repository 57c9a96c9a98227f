"""The one input processor: the training path (dataset + collator) and ``predict`` see identical tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from test_data_fixtures import write_main_flickr

import ovd
from ovd.data.collate import GroundingCollator
from ovd.data.dataset import GroundingDataset
from ovd.data.flickr30k import load_flickr30k
from ovd.processor import InputProcessor, images_to_batch, join_phrases


@pytest.fixture(scope="module")
def model():
    return ovd.create_model("optimized-tiny").eval()


def test_training_path_and_predict_path_give_identical_tensors(tmp_path, model):
    size = model.config.image.image_size
    dataset = GroundingDataset(load_flickr30k(write_main_flickr(tmp_path), "train"), image_size=size)
    item = dataset[0]
    batch = GroundingCollator(model.tokenizer, model.config.text.max_tokens)([item])
    pil = dataset.load_image(dataset.samples[0])
    pixels, sizes = model.preprocess([pil])
    enc = model.tokenize([item["caption"]])
    assert torch.equal(batch["images"], pixels)  # bit-identical pixels
    assert torch.equal(batch["input_ids"], enc["input_ids"])
    assert torch.equal(batch["attention_mask"], enc["attention_mask"])
    assert sizes == [item["orig_size"]]


def test_image_path_resizes_normalizes_and_converts_modes():
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    batch, sizes = images_to_batch([rgb, rgb.convert("L")], 16)
    assert batch.shape == (2, 3, 16, 16) and sizes == [(40, 60), (40, 60)]
    # a mid-grey image maps to about (0.5 - mean) / std per channel
    grey, _ = images_to_batch([Image.new("RGB", (8, 8), (128, 128, 128))], 8)
    expected = (torch.tensor([128 / 255] * 3) - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(grey[0, :, 0, 0], expected)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        images_to_batch(torch.zeros(3, 8, 8), 8)


def test_join_phrases_spans_point_at_the_phrases():
    caption, spans = join_phrases([" red circle", "blue square "])
    assert caption == "red circle . blue square"
    assert [caption[s:e] for s, e in spans] == ["red circle", "blue square"]
    with pytest.raises(ValueError, match="empty"):
        join_phrases(["red", " "])


def test_one_truncation_warning_names_the_prompt(model):
    proc = InputProcessor(model.tokenizer, 32, max_tokens=6)
    with pytest.warns(UserWarning, match=r"prompt 1 truncated to text.max_tokens=6 tokens"):
        enc = proc.tokenize(["a cat", "a very long prompt that does not fit in six tokens"])
    assert enc["input_ids"].shape[1] == 6 and proc.truncated(enc) == [1]


def test_uint8_tensor_is_scaled_like_a_pil_image_and_float_tensor_must_be_in_unit_range():
    rng = np.random.default_rng(0)
    pil = Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    as_uint8 = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)[None]  # (1, 3, 40, 60) 0-255
    expected, _ = images_to_batch([pil], 16)
    got, sizes = images_to_batch(as_uint8, 16)
    assert sizes == [(40, 60)]
    assert torch.equal(got, expected)  # uint8 tensors take the PIL path's steps: bit-identical
    square = as_uint8[..., :40]  # already at the input size: no resize, still scaled by 1/255
    torch.testing.assert_close(images_to_batch(square, 40)[0], images_to_batch(square.float() / 255, 40)[0])
    # a float tensor in [0, 1] is accepted as before, a 0-255 or ImageNet-normalized one is refused
    images_to_batch(as_uint8.float() / 255, 16)
    with pytest.raises(ValueError, match=r"values must lie in \[0, 1\], got min 0, max 255"):
        images_to_batch(as_uint8.float(), 16)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        images_to_batch(expected, 16)  # already normalized: negative values
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        images_to_batch(torch.full((1, 3, 8, 8), float("nan")), 8)
    with pytest.raises(ValueError, match="uint8 .* or float"):
        images_to_batch(as_uint8.long(), 16)


@pytest.mark.parametrize("images, message", [
    (Image.new("RGB", (40, 30)), "got a single PIL image: pass \\[image\\]"),
    ([torch.rand(3, 30, 40)], r"images\[0\] is a Tensor: images must be a list of PIL images or one \(B, 3, H, W\)"),
    (np.zeros((1, 30, 40, 3), np.uint8), r"images\[0\] is a ndarray"),
    (5, "images must be a list of PIL images or one .* got int"),
])
def test_images_other_than_pil_images_or_a_batch_tensor_are_a_value_error(images, message):
    """A single PIL image, a list of (3, H, W) tensors or a numpy batch: a ValueError saying what is accepted
    (before: AttributeError "'Tensor' object has no attribute 'height'" or "'Image' object is not iterable")."""
    with pytest.raises(ValueError, match=message):
        images_to_batch(images, 32)
