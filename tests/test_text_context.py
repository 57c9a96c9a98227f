"""``text.context_layers`` (ovd/models/text_encoder.py): trainable self-attention over the projected text tokens.
On in every preset; padding never reaches a real token; the layers train with the head; bad values are refused."""

import pytest
import torch

import ovd
from ovd.config import BUNDLED_TEXT_ENCODER, PRESETS
from ovd.models.text_encoder import TextEncoder
from ovd.training.step import parameter_groups


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_has_one_context_layer(preset):
    assert ovd.get_config(preset).text.context_layers == 1


def test_padding_does_not_reach_real_tokens_and_the_context_does(tokenizer):
    from ovd.processor import InputProcessor

    torch.manual_seed(0)
    encoder = TextEncoder(BUNDLED_TEXT_ENCODER, 16, context_layers=1).eval()
    processor = InputProcessor(tokenizer, 1, 48)
    alone = processor.tokenize(["red circle"])
    padded = processor.tokenize(["red circle", "red circle . green triangle . yellow cross"])
    with torch.no_grad():
        a = encoder(alone["input_ids"], alone["attention_mask"])[0]
        b = encoder(padded["input_ids"], padded["attention_mask"])
    n = a.shape[0]
    assert (b[0, :n] - a).abs().max() < 1e-5  # the padded copy's real tokens match the unpadded prompt's
    assert (b[1, 1:3] - a[1:3]).abs().max() > 1e-3  # "red circle" followed by other names: context moves it
    plain = TextEncoder(BUNDLED_TEXT_ENCODER, 16).eval()
    assert len(plain.context) == 0 and len(encoder.context) == 1


def test_context_layers_train_at_the_head_lr():
    config = ovd.get_config("optimized-tiny")
    model = ovd.create_model(config)
    head = next(g for g in parameter_groups(model, config.train) if g["name"] == "head")
    ids = {id(p) for p in head["params"]}
    context = list(model.text_encoder.context.parameters())
    assert context and all(p.requires_grad and id(p) in ids for p in context)
    assert all(not p.requires_grad for p in model.text_encoder.model.parameters())  # the encoder stays frozen


@pytest.mark.parametrize("value", [-1, 1.5, True, "1"])
def test_bad_values_are_refused(value):
    with pytest.raises(ValueError, match="text.context_layers"):
        ovd.get_config("optimized-tiny", {"text.context_layers": value})
