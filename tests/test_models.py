import math

import pytest
import torch
from PIL import Image

import ovd
from ovd.models.layers import (
    CrossAttention,
    build_mlp,
    convert_attention_state_dict,
    cosine_similarity,
    linear_layers,
)


def _count(module, trainable=False):
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


@pytest.mark.parametrize("name", ["baseline-tiny", "optimized-tiny"])
def test_tiny_presets_forward_backward(name):
    torch.manual_seed(0)
    model = ovd.create_model(name)
    S = model.config.image.image_size
    enc = model.tokenize(["a red circle left of a blue square", "a small green triangle"])
    out = model(torch.randn(2, 3, S, S), enc["input_ids"], enc["attention_mask"])
    Q, T = model.config.box_head.num_queries, enc["input_ids"].shape[1]
    assert out["pred_logits"].shape == (2, Q, T)
    assert out["pred_boxes"].shape == (2, Q, 4)
    assert ((out["pred_boxes"] > 0) & (out["pred_boxes"] < 1)).all()
    assert len(out["aux_outputs"]) == model.config.box_head.num_decoder_layers - 1
    assert out["enc_outputs"]["pred_boxes"].shape == (2, Q, 4)
    # padded text positions never score
    assert (out["pred_logits"][1][:, ~out["text_mask"][1]] < -1e3).all()
    loss = out["pred_boxes"].sum() + out["pred_logits"][..., :5].sum()
    loss.backward()
    grads = [p.grad for p in model.image_encoder.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in model.text_encoder.model.parameters())  # frozen


@pytest.mark.parametrize("impl", ["mha-fast", "sdpa"])
def test_attention_arms_compute_the_same_function(impl):
    torch.manual_seed(0)
    ref = CrossAttention(64, 4, impl="mha").eval()
    other = CrossAttention(64, 4, impl=impl).eval()
    other.load_state_dict(convert_attention_state_dict(ref.state_dict(), impl))
    q, kv = torch.randn(2, 30, 64), torch.randn(2, 7, 64)
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[1, 5:] = True  # padded keys
    expected = ref(q, kv, kv, key_padding_mask=mask)
    torch.testing.assert_close(other(q, kv, kv, key_padding_mask=mask), expected, atol=1e-5, rtol=1e-5)
    # and back again
    back = CrossAttention(64, 4, impl="mha").eval()
    back.load_state_dict(convert_attention_state_dict(other.state_dict(), "mha"))
    torch.testing.assert_close(back(q, kv, kv, key_padding_mask=mask), expected, atol=1e-5, rtol=1e-5)


def test_attention_padding_is_ignored():
    torch.manual_seed(0)
    attn = CrossAttention(32, 4, impl="sdpa").eval()
    q, kv = torch.randn(1, 5, 32), torch.randn(1, 6, 32)
    mask = torch.tensor([[False] * 4 + [True] * 2])
    noisy = kv.clone()
    noisy[:, 4:] = 1e3
    torch.testing.assert_close(attn(q, kv, kv, mask), attn(q, noisy, noisy, mask))


def test_whole_detector_attention_arms_agree_with_copied_weights():
    torch.manual_seed(0)
    ref = ovd.create_model("optimized-tiny", {"attention": "mha"}).eval()  # short-hand: fusion and decoder
    other = ovd.create_model("optimized-tiny", {"attention": "sdpa"}).eval()
    state = {}
    for key, value in ref.state_dict().items():
        state[key] = value
    converted = {}
    prefixes = {k.rsplit(".mha.", 1)[0] for k in state if ".mha." in k}
    for k, v in state.items():
        if ".mha." not in k:
            converted[k] = v
    for prefix in prefixes:
        sub = {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".mha.")}
        for k, v in convert_attention_state_dict(sub, "sdpa").items():
            converted[f"{prefix}.{k}"] = v
    other.load_state_dict(converted)
    enc = ref.tokenize(["a red circle", "two blue squares and a star"])
    images = torch.randn(2, 3, 96, 96)
    a = ref(images, enc["input_ids"], enc["attention_mask"])
    b = other(images, enc["input_ids"], enc["attention_mask"])
    torch.testing.assert_close(b["pred_boxes"], a["pred_boxes"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b["pred_logits"], a["pred_logits"], atol=1e-4, rtol=1e-5)


def test_mlp_arms_compute_the_same_function():
    torch.manual_seed(0)
    seq = build_mlp("sequential", 16, 32, 4, num_layers=3).eval()
    tv = build_mlp("torchvision", 16, 32, 4, num_layers=3).eval()
    assert type(tv).__module__.startswith("torchvision")
    for a, b in zip(linear_layers(seq), linear_layers(tv)):
        b.load_state_dict(a.state_dict())
    x = torch.randn(5, 16)
    torch.testing.assert_close(tv(x), seq(x))
    assert _count(seq) == _count(tv)


def test_similarity_arms_agree_and_differ_on_zero_rows():
    torch.manual_seed(0)
    a, b = torch.randn(2, 6, 8), torch.randn(2, 4, 8)
    torch.testing.assert_close(cosine_similarity(a, b, "torchmetrics"), cosine_similarity(a, b, "matmul"))
    a[0, 0] = 0.0  # an all-zero query vector
    mm = cosine_similarity(a, b, "matmul")
    tm = cosine_similarity(a, b, "torchmetrics")
    assert torch.all(mm[0, 0] == 0)  # F.normalize's eps maps a zero row to similarity 0
    assert torch.isnan(tm[0, 0]).all()  # no eps in torchmetrics: 0/0
    torch.testing.assert_close(tm[0, 1:], mm[0, 1:])


def test_parameter_counts_per_component_match_independent_counts(tiny_model):
    import timm

    cfg = tiny_model.config
    backbone = timm.create_model(cfg.image.backbone, features_only=True, out_indices=(1, 2), img_size=96,
                                 **cfg.image.backbone_kwargs)
    assert _count(tiny_model.image_encoder.backbone) == _count(backbone)
    d = cfg.out_dim
    # a fusion or text context layer: 2 LayerNorm + attention (4 d*d + 4 d) + FFN (d*4d + 4d + 4d*d + d)
    per_layer = 2 * 2 * d + 4 * d * d + 4 * d + 8 * d * d + 5 * d
    # text encoder: MiniLM-L6 (22.7M) frozen; its projection and context layers train
    assert _count(tiny_model.text_encoder.model) == 22_713_216
    assert _count(tiny_model.text_encoder, trainable=True) == (_count(tiny_model.text_encoder.proj)
                                                               + cfg.text.context_layers * per_layer)
    parts = ["image_encoder", "text_encoder", "fusion", "box_head"]
    assert sum(_count(getattr(tiny_model, p)) for p in parts) == _count(tiny_model)
    # fusion: its layers, then a final norm
    assert _count(tiny_model.fusion) == cfg.fusion.num_layers * per_layer + 2 * d


def test_full_size_image_encoders_match_the_seed_counts():
    import timm

    small = timm.create_model("swin_small_patch4_window7_224", num_classes=0)
    tiny = timm.create_model("swin_tiny_patch4_window7_224", num_classes=0)
    assert round(_count(small) / 1e6, 1) == 48.8
    assert round(_count(tiny) / 1e6, 1) == 27.5


def test_predict_returns_boxes_inside_the_image(tiny_model):
    images = [Image.new("RGB", (200, 150), "white"), Image.new("L", (64, 120))]
    results = tiny_model.predict(images, [["red circle", "blue square"], "a green star"], threshold=0.0)
    assert len(results) == 2
    for res, (w, h) in zip(results, [(200, 150), (64, 120)]):
        boxes = res["boxes"]
        assert boxes.shape == (tiny_model.config.box_head.num_queries, 4)
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all()
        assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= h).all()
        assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
        assert len(res["labels"]) == len(res["scores"])
    assert set(results[0]["labels"]) <= {"red circle", "blue square"}
    tensor_results = tiny_model.predict(torch.rand(1, 3, 50, 70), ["a cat"], threshold=0.0)
    assert (tensor_results[0]["boxes"][:, 2] <= 70).all()


def test_predict_rejects_bad_prompts(tiny_model):
    with pytest.raises(ValueError, match="empty"):
        tiny_model.predict(torch.rand(1, 3, 32, 32), [""])
    with pytest.raises(ValueError, match="empty"):
        tiny_model.predict(torch.rand(1, 3, 32, 32), [["cat", " "]])
    with pytest.raises(ValueError, match="prompts"):
        tiny_model.predict(torch.rand(2, 3, 32, 32), ["cat"])


def test_over_long_prompt_is_truncated_with_a_warning(tiny_model):
    long = " ".join(["red circle"] * 100)
    with pytest.warns(UserWarning, match="truncated"):
        enc = tiny_model.tokenize([long])
    assert enc["input_ids"].shape[1] == tiny_model.config.text.max_tokens


def test_hub_name_offline_fails_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="text.name_or_path"):
        ovd.create_model("optimized-tiny", {"text.name_or_path": "some-org/not-a-cached-model"})


def test_too_many_queries_for_language_guided_selection_fails_clearly():
    model = ovd.create_model("optimized-tiny", {"box_head.num_queries": 1000})
    enc = model.tokenize(["a cat"])
    with pytest.raises(ValueError, match="num_queries"):
        model(torch.randn(1, 3, 96, 96), enc["input_ids"], enc["attention_mask"])


def test_learned_queries_switch():
    model = ovd.create_model("optimized-tiny", {"box_head.query_init": "learned"})
    enc = model.tokenize(["a cat"])
    out = model(torch.randn(1, 3, 96, 96), enc["input_ids"], enc["attention_mask"])
    assert "enc_outputs" not in out and out["pred_boxes"].shape == (1, 20, 4)
    assert math.isfinite(out["pred_logits"].sum().item())


def test_text_encoder_from_config_only_folder(tmp_path):
    """A folder with config and tokenizer but no weights builds with text.pretrained=false
    (speed runs on machines that carry no weights) and fails clearly otherwise."""
    import shutil

    from ovd.models.text_encoder import resolve_text_encoder_path

    src = resolve_text_encoder_path(ovd.config.BUNDLED_TEXT_ENCODER)
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(f"{src}/{f}", tmp_path / f)
    model = ovd.create_model("optimized-tiny", {"text.name_or_path": str(tmp_path), "text.pretrained": False})
    assert sum(p.numel() for p in model.text_encoder.model.parameters()) == 22_713_216
    with pytest.raises(RuntimeError, match="text.name_or_path"):
        ovd.create_model("optimized-tiny", {"text.name_or_path": str(tmp_path)})


def _attention_impls(module) -> set:
    return {m.impl for m in module.modules() if isinstance(m, CrossAttention)}


def _mlp_kinds(module) -> set:
    from torchvision.ops import MLP

    return {"torchvision" if isinstance(m, MLP) else "sequential" for m in module.modules()
            if isinstance(m, torch.nn.Sequential) and any(isinstance(c, torch.nn.Linear) for c in m)}


@pytest.mark.parametrize("key, value, fusion_expect, head_expect", [
    ("fusion.attention", "mha", ({"mha"}, None), ({"sdpa"}, None)),
    ("box_head.attention", "mha-fast", ({"sdpa"}, None), ({"mha-fast"}, None)),
    ("attention", "mha", ({"mha"}, None), ({"mha"}, None)),
    ("fusion.mlp", "sequential", (None, {"sequential"}), (None, {"torchvision"})),
    ("box_head.mlp", "sequential", (None, {"torchvision"}), (None, {"sequential"})),
    ("mlp", "sequential", (None, {"sequential"}), (None, {"sequential"})),
])
def test_each_switch_reaches_exactly_its_component(key, value, fusion_expect, head_expect):
    model = ovd.create_model("optimized-tiny", {key: value})
    for part, (attn, mlp) in ((model.fusion, fusion_expect), (model.box_head, head_expect)):
        if attn is not None:
            assert _attention_impls(part) == attn, (key, type(part).__name__)
        if mlp is not None:
            assert _mlp_kinds(part) == mlp, (key, type(part).__name__)


def test_caption_labels_are_the_prompts_own_text(tiny_model):
    prompt = "a giraffe beside an xylophone, please"
    results = tiny_model.predict([Image.new("RGB", (40, 30), "white")], [prompt], threshold=0.0, text_threshold=0.0)
    assert results[0]["labels"] and set(results[0]["labels"]) == {prompt}  # not "a gi raf fe beside an x yl ophone"
    # a run of consecutive selected tokens is one substring of the prompt; separate runs are joined by a space
    enc = tiny_model.tokenize([prompt])
    offsets = enc["offset_mapping"][0]
    tokens = [prompt[s:e] for s, e in offsets.tolist()]
    giraffe = [i for i, (s, e) in enumerate(offsets.tolist()) if e > s and 2 <= s < 9]  # WordPieces of "giraffe"
    xylophone = [i for i, (s, e) in enumerate(offsets.tolist()) if e > s and 20 <= s < 29]
    assert len(giraffe) > 1 and len(xylophone) > 1, tokens
    probs = torch.zeros(len(tokens))
    probs[giraffe + xylophone] = 1.0
    probs[0] = probs[-1] = 1.0  # special tokens ([CLS], [SEP]: empty offsets) never reach the label
    assert tiny_model._label(probs, offsets, prompt, None, 0.5) == "giraffe xylophone"
    probs[giraffe[-1] + 1:xylophone[0]] = 1.0  # " beside an " tokens too: one run, the prompt's own spacing
    assert tiny_model._label(probs, offsets, prompt, None, 0.5) == "giraffe beside an xylophone"
    # phrase mode is unchanged: the best phrase, verbatim
    phrase_results = tiny_model.predict([Image.new("RGB", (40, 30))], [["giraffe", "xylophone"]], threshold=0.0)
    assert set(phrase_results[0]["labels"]) <= {"giraffe", "xylophone"}


def test_predict_scales_uint8_tensors_and_refuses_0_255_floats(tiny_model):
    rng = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (1, 3, 30, 40), dtype=torch.uint8, generator=rng)
    pil = Image.fromarray(pixels[0].permute(1, 2, 0).numpy())
    from_pil = tiny_model.predict([pil], ["a cat"], threshold=0.0)[0]
    from_uint8 = tiny_model.predict(pixels, ["a cat"], threshold=0.0)[0]
    assert torch.equal(from_uint8["scores"], from_pil["scores"]) and torch.equal(from_uint8["boxes"], from_pil["boxes"])
    with pytest.raises(ValueError, match=r"\[0, 1\].*max 255"):
        tiny_model.predict(pixels.float(), ["a cat"])
    tiny_model.predict(pixels.float() / 255, ["a cat"])  # in [0, 1]: accepted
