"""``text.phrase_attention`` (Grounding DINO's sub-sentence text attention, ovd/models/text_encoder.py): the mask
and positions on planted token ids, a phrase encoded the same whatever else its prompt lists, eager attention
equal to SDPA, the ONNX graph equal to torch, and a clear error for a tokenizer it cannot serve."""

import pytest
import torch

import ovd
from ovd.config import BUNDLED_TEXT_ENCODER
from ovd.data.positive_map import phrase_token_mask
from ovd.models.text_encoder import TextEncoder, phrase_attention, phrase_separator_ids
from ovd.processor import InputProcessor

CLS, SEP, DOT = 101, 102, 1012  # the bundled (BERT uncased) vocabulary


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return TextEncoder(BUNDLED_TEXT_ENCODER, 16, phrase_attention=True).eval()


def test_mask_and_positions_on_planted_ids():
    # [CLS] a b . c [SEP] [PAD]
    ids = torch.tensor([[CLS, 5, 6, DOT, 7, SEP, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0]])
    allowed, positions = phrase_attention(ids, mask, DOT, (CLS, SEP))
    expected = torch.tensor([
        [1, 0, 0, 0, 0, 0, 0],  # [CLS] sees itself only
        [1, 1, 1, 0, 0, 1, 0],  # a: [CLS], its phrase "a b", [SEP]
        [1, 1, 1, 0, 0, 1, 0],  # b
        [0, 0, 0, 1, 0, 0, 0],  # the separator sees itself only, and no phrase sees it
        [1, 0, 0, 0, 1, 1, 0],  # c: [CLS], "c", [SEP]
        [0, 0, 0, 0, 0, 1, 0],  # [SEP]
        [0, 0, 0, 0, 0, 0, 1],  # padding: itself, so no row is empty
    ], dtype=torch.bool)
    assert torch.equal(allowed[0], expected)
    assert positions[0].tolist() == [0, 1, 2, 0, 1, 0, 0]  # each phrase counts from 1, as right after [CLS]


def _features_of(encoder, tokenizer, prompts, phrase):
    """The encoder's features (n, D) of ``phrase``'s tokens in each prompt, the prompts batched together (so
    they are padded differently)."""
    enc = InputProcessor(tokenizer, 1, 48).tokenize(prompts)
    with torch.no_grad():
        out = encoder(enc["input_ids"], enc["attention_mask"])
    feats = []
    for b, prompt in enumerate(prompts):
        start = prompt.index(phrase)
        feats.append(out[b, phrase_token_mask(enc["offset_mapping"][b], [(start, start + len(phrase))])])
    return feats


def test_a_phrase_is_encoded_the_same_whatever_else_the_prompt_lists(encoder, tokenizer):
    prompts = ["red circle", "blue square . red circle",
               "red circle . green triangle . yellow cross . blue square"]
    feats = _features_of(encoder, tokenizer, prompts, "red circle")
    assert all(f.shape == feats[0].shape for f in feats) and feats[0].shape[0] == 2
    assert max((f - feats[0]).abs().max().item() for f in feats[1:]) < 1e-4
    encoder.phrase_attention = False  # the plain encoder: the neighbours change the phrase's features
    try:
        plain = _features_of(encoder, tokenizer, prompts, "red circle")
    finally:
        encoder.phrase_attention = True
    assert min((f - plain[0]).abs().max().item() for f in plain[1:]) > 1e-2


def test_eager_attention_takes_the_same_mask_as_sdpa(encoder, tokenizer):
    enc = InputProcessor(tokenizer, 1, 48).tokenize(["red circle . blue square", "yellow cross"])
    with torch.no_grad():
        sdpa = encoder(enc["input_ids"], enc["attention_mask"])
        encoder.model.config._attn_implementation = "eager"  # eager adds a float mask to its scores
        try:
            eager = encoder(enc["input_ids"], enc["attention_mask"])
        finally:
            encoder.model.config._attn_implementation = "sdpa"
    real = enc["attention_mask"].bool()
    assert (sdpa - eager)[real].abs().max() < 1e-4


def test_a_tokenizer_without_a_one_token_separator_is_refused():
    class TwoTokenSeparator:
        cls_token_id = sep_token_id = bos_token_id = eos_token_id = None

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [7, 8]}

    with pytest.raises(ValueError, match="one token"):
        phrase_separator_ids(TwoTokenSeparator())


def test_the_switch_reaches_the_detector_and_its_onnx_graph():
    from ovd.onnx_backend import OnnxDetector

    torch.manual_seed(0)
    model = ovd.create_model("optimized-tiny", {"text.phrase_attention": True, "text.context_layers": 0}).eval()
    assert model.text_encoder.phrase_attention and not ovd.get_config("optimized-tiny").text.phrase_attention
    pixels = torch.rand(2, 3, 96, 96)
    enc = model.tokenize(["red circle . blue square . green triangle", "yellow cross"])
    with torch.no_grad():
        ref = model(model.processor.images(pixels)[0], enc["input_ids"], enc["attention_mask"])
    out = OnnxDetector(model, batch_size=2)(model.processor.images(pixels)[0], enc["input_ids"],
                                            enc["attention_mask"])
    assert (out["pred_logits"].sigmoid() - ref["pred_logits"].sigmoid()).abs().max() < 1e-4
    assert (out["pred_boxes"] - ref["pred_boxes"]).abs().max() < 1e-4


def test_context_layers_and_phrase_attention_are_refused_together():
    with pytest.raises(ValueError, match="context_layers=0"):
        ovd.get_config("optimized-tiny", {"text.phrase_attention": True})
