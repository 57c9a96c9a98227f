"""The onnxruntime backend (`ovd/onnx_backend.py`): the same outputs as the torch forward through batch and token
padding, `ovd predict --backend onnxruntime` (fp32 and static int8), and the ONNX arms judged by accuracy on a
checkpoint, with the checkpoint reused or retrained by its fingerprint."""

import json

import pytest
import torch
from PIL import Image, ImageDraw

import ovd
from bench.measure.arms import randomize_zero_init
from bench.measure.arms_accuracy import ArmsAccuracySpec, measure
from ovd.batch_predict import check_inference_options, prepare_for_inference
from ovd.cli import main as ovd_main
from ovd.onnx_backend import TOKEN_BUCKET, OnnxDetector, calibration_batches


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = ovd.create_model("optimized-tiny").eval()
    randomize_zero_init(model)  # boxes depend on the whole head, not only on the anchors
    return model


@pytest.fixture(scope="module")
def fp32_backend(tiny):
    return OnnxDetector(tiny, batch_size=2)


def _images(n=3, size=(80, 60)):
    out = []
    for i in range(n):
        im = Image.new("RGB", size, (30 * i, 200 - 40 * i, 90))
        ImageDraw.Draw(im).ellipse([10 + 5 * i, 8, 50, 40], fill=(220, 20, 20))
        out.append(im)
    return out


def test_forward_matches_torch_through_batch_and_token_padding(tiny, fp32_backend):
    # 3 images with an exported batch of 2: one full chunk and one padded chunk; 14 tokens padded to 16
    pixels, _ = tiny.processor.images(_images(3))
    enc = tiny.tokenize(["a red circle on the left . a blue square near the top"] * 3)
    t = enc["input_ids"].shape[1]
    assert t % TOKEN_BUCKET != 0  # the prompt really is padded
    with torch.no_grad():
        ref = tiny(pixels, enc["input_ids"], enc["attention_mask"])
    out = fp32_backend(pixels, enc["input_ids"], enc["attention_mask"])
    assert out["pred_logits"].shape == ref["pred_logits"].shape and out["pred_boxes"].shape == ref["pred_boxes"].shape
    assert torch.equal(out["text_mask"], ref["text_mask"])
    assert (out["pred_logits"].sigmoid() - ref["pred_logits"].sigmoid()).abs().max() < 1e-4
    assert (out["pred_boxes"] - ref["pred_boxes"]).abs().max() < 1e-4
    assert list(fp32_backend.notes["exported"]) == [fp32_backend.bucket(t)]


def test_predict_is_the_torch_models_predict(tiny, fp32_backend):
    images = _images(3)
    prompts = [["red circle", "blue square"]] * 3
    ref = tiny.predict(images, prompts, threshold=0.0)
    got = fp32_backend.predict(images, prompts, threshold=0.0)
    for r, g in zip(ref, got):
        assert r["labels"] == g["labels"]
        assert torch.allclose(r["boxes"], g["boxes"], atol=1e-2) and torch.allclose(r["scores"], g["scores"], atol=1e-4)


def test_bucket_and_bad_options(tiny, fp32_backend):
    limit = tiny.config.text.max_tokens
    assert fp32_backend.bucket(1) == TOKEN_BUCKET and fp32_backend.bucket(TOKEN_BUCKET + 1) == 2 * TOKEN_BUCKET
    assert fp32_backend.bucket(limit) == limit
    with pytest.raises(ValueError, match="max_tokens"):
        fp32_backend.bucket(limit + 1)
    with pytest.raises(ValueError, match="calibration"):
        OnnxDetector(tiny, quantize="int8")
    with pytest.raises(ValueError, match="quantize"):
        OnnxDetector(tiny, quantize="int4")
    with pytest.raises(ValueError, match="fp32"):
        check_inference_options("bf16", "none", torch.device("cpu"), "onnxruntime")
    with pytest.raises(ValueError, match="backend"):
        check_inference_options("fp32", "none", torch.device("cpu"), "tensorrt")


@pytest.mark.slow  # the default tier covers int8 through `ovd predict` below and the arms' end-to-end test
def test_static_int8_is_quantized_and_close(tiny):
    images = _images(4)
    calibration = calibration_batches(tiny, images, ["red circle . blue square"] * 4, 2)
    q = OnnxDetector(tiny, batch_size=2, quantize="int8", calibration=calibration)
    pixels, _ = tiny.processor.images(images[:2])
    enc = tiny.tokenize(["red circle . blue square"] * 2)
    with torch.no_grad():
        ref = tiny(pixels, enc["input_ids"], enc["attention_mask"])
    out = q(pixels, enc["input_ids"], enc["attention_mask"])
    assert "QDQ" in q.notes["quantization"] and "2 calibration batches" in q.notes["quantization"]
    diff = (out["pred_boxes"] - ref["pred_boxes"]).abs().max()
    assert 0 < diff < 1  # quantized (numbers changed), still boxes in the image


def test_prepare_for_inference_onnxruntime_needs_calibration_for_int8(tiny):
    with pytest.raises(ValueError, match="calibration"):
        prepare_for_inference(tiny, "fp32", "int8", "onnxruntime")
    det = prepare_for_inference(tiny, "fp32", "none", "onnxruntime", batch_size=3)
    assert isinstance(det, OnnxDetector) and det.batch_size == 3


# -- ovd predict --backend onnxruntime ---------------------------------------------------------------

@pytest.mark.slow  # about 30 s; default-tier twins: test_predict_one_image_with_onnxruntime and the padding test
def test_predict_images_with_onnxruntime_matches_torch(checkpoint, tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, im in enumerate(_images(3)):
        im.save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    outs = {}
    for backend, quantize in (("torch", "none"), ("onnxruntime", "none"), ("onnxruntime", "int8")):
        out = tmp_path / f"{backend}-{quantize}.jsonl"
        code = ovd_main(["predict", "--checkpoint", str(checkpoint), "--images", str(folder), "--prompt",
                         "red circle, blue square", "--phrases", "--out", str(out), "--batch-size", "2",
                         "--threshold", "0.0", "--backend", backend, "--quantize", quantize, "--no-progress",
                         "--device", "cpu"])
        assert code == 0
        outs[(backend, quantize)] = [json.loads(line) for line in out.read_text().splitlines()]
    assert "1 skipped" in capsys.readouterr().err
    ref, ort_fp32, ort_int8 = outs[("torch", "none")], outs[("onnxruntime", "none")], outs[("onnxruntime", "int8")]
    assert len(ref) == len(ort_fp32) == len(ort_int8) == 3
    for r, o in zip(ref, ort_fp32):
        assert r["labels"] == o["labels"]
        assert max(abs(a - b) for ra, oa in zip(r["scores"], o["scores"]) for a, b in [(ra, oa)]) < 1e-3
    assert any(r["scores"] != q["scores"] for r, q in zip(ref, ort_int8))  # int8 really changed the numbers


def test_predict_one_image_with_onnxruntime(checkpoint, tmp_path, capsys):
    path = tmp_path / "a.png"
    _images(1)[0].save(path)
    code = ovd_main(["predict", "--checkpoint", str(checkpoint), "--image", str(path), "--prompt", "red circle",
                     "--backend", "onnxruntime", "--threshold", "0.0", "--out", str(tmp_path / "a.pred.png")])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert record["detections"] and (tmp_path / "a.pred.png").exists()


# -- the ONNX arms judged on a checkpoint -----------------------------------------------------------

@pytest.mark.slow  # about 16 s; default tier: test_bench_extras.py::test_onnx_arm_exports_and_matches_eager
def test_onnx_arm_accuracy_equals_eager_on_a_checkpoint(checkpoint):
    result = measure({"checkpoint": str(checkpoint), "device": "cpu", "max_images": 2, "splits": ["val"],
                      "arms": ["onnx-ort"], "batch_size": 2})
    eager, rec = result.arms["eager"]["splits"]["val"], result.arms["onnx-ort"]
    assert "error" not in rec and "skipped" not in rec and "_error" not in rec["splits"]["val"], rec
    for metric in ("mAP50", "R@1", "vocab_mAP50"):
        assert rec["splits"]["val"][metric] == pytest.approx(eager[metric], abs=1e-6)  # fp32: the same detections


@pytest.mark.slow
def test_static_int8_arm_accuracy_on_a_checkpoint(checkpoint):
    result = measure({"checkpoint": str(checkpoint), "device": "cpu", "max_images": 2, "splits": ["val"],
                      "arms": ["onnx-ort-int8-static"], "batch_size": 2})
    rec = result.arms["onnx-ort-int8-static"]
    assert "error" not in rec and "_error" not in rec["splits"]["val"], rec
    rows = {r.metric: r for r in result.rows()}
    assert rows["arm_acc/onnx-ort-int8-static/val/mAP50"].status == "ok"
    assert 0 <= rows["arm_acc/onnx-ort-int8-static/val/vocab_mAP50"].value <= 1


def test_spec_train_is_validated():
    with pytest.raises(Exception, match="train"):
        ArmsAccuracySpec(checkpoint="x.ckpt", train={"seed": 0})
    with pytest.raises(Exception, match="unknown keys"):
        ArmsAccuracySpec(checkpoint="x.ckpt", train={"preset": "optimized-tiny", "lr": 1})


def test_arms_accuracy_trains_then_reuses_the_checkpoint(tmp_path, monkeypatch, checkpoint):
    """With ``train`` the checkpoint is trained when missing, reused when its fingerprint matches, and trained
    again when the seed differs (the trainer replaced by one that writes the tiny checkpoint and counts seeds; the
    real trainer writing a fingerprint is tested in test_checkpoint_reuse.py)."""
    import shutil

    from ovd.training import run

    calls = []

    from ovd.training.reuse import training_fingerprint, write_fingerprint

    def fake_train(config, data_root=None, max_time_s=600, *a, seed=0, checkpoint_path=None, data_format="flickr30k",
                   limit=None, **k):
        calls.append(seed)
        shutil.copy(checkpoint, checkpoint_path)
        # the real trainer writes the sidecar itself once the checkpoint is saved
        write_fingerprint(checkpoint_path, training_fingerprint(config, data_root, data_format, seed, max_time_s,
                                                                limit))
        return {"final": {}, "curve": [], "train_seconds": 0.0}

    monkeypatch.setattr(run, "train_and_evaluate", fake_train)
    ckpt = tmp_path / "m.ckpt"
    spec = {"checkpoint": str(ckpt), "device": "cpu", "max_images": 1, "splits": ["val"], "arms": ["eager"],
            "protocols": ["grounding"], "batch_size": 1,
            "train": {"preset": "optimized-tiny", "seed": 0, "budget_s": 2}}
    first = measure(spec)
    assert first.provenance["checkpoint_reused"] is False
    assert "no checkpoint" in first.provenance["checkpoint_trained_because"]
    second = measure(spec)
    assert second.provenance == {"checkpoint_reused": True, "checkpoint_trained_because": None}
    third = measure({**spec, "train": {**spec["train"], "seed": 1}})
    assert third.provenance["checkpoint_reused"] is False
    assert "seed differs" in third.provenance["checkpoint_trained_because"]
    assert calls == [0, 1]
    row = next(r for r in second.rows() if r.metric == "arm_acc/eager/val/mAP50")
    assert row.extra["checkpoint_reused"] is True
    from bench.report.arms_accuracy import checkpoint_line
    from bench.results import Results

    assert "reused" in checkpoint_line(Results(rows=second.rows()))
    assert "seed differs" in checkpoint_line(Results(rows=third.rows()))
