"""Issue-11 inference arms on the tiny preset: onnxruntime static int8 QDQ (and the ORT optimization level
of the ONNX arms), and the int8 row of the roofline."""

import pytest

from bench.measure import arms as arms_mod
from bench.measure import roofline
from ovd import onnx_backend

PARITY_KEYS = {"boxes_max_abs", "probs_max_abs", "boxes_max_abs_matched", "probs_max_abs_matched", "agreement"}


def test_int8_static_arm_is_declared_with_reduced_tolerance():
    arm = arms_mod.get_arm("onnx-ort-int8-static")
    assert arm.features == ("onnx", "int8_static") and arm.isolated and arm.devices == ("cpu",)
    assert set(arm.features) <= set(arms_mod.FEATURES)
    assert arm.tolerance == arms_mod.REDUCED_TOLERANCE
    # onnx-ort already runs with every ORT graph optimization: no separate "opt" arm
    assert "ORT_ENABLE_ALL" in arms_mod.ARMS["onnx-ort"].description and "onnx-ort-opt" not in arms_mod.ARMS


def test_calibration_feeds_are_held_out_processor_batches():
    import torch

    import ovd
    from bench.common import make_batch

    model = ovd.create_model("optimized-tiny").eval()
    feeds = arms_mod.calibration_feeds(model, 1)
    assert len(feeds) == arms_mod.CALIBRATION_BATCHES
    parity_batch = make_batch(model, 1, "cpu")
    for images, ids, mask in feeds:
        assert images.shape == parity_batch.images.shape and ids.shape == mask.shape == parity_batch.input_ids.shape
        assert not torch.equal(images, parity_batch.images)  # never the parity batch


def test_quantize_static_failure_is_named(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(RuntimeError, match="quantize_static"):
        onnx_backend.quantize_static_qdq(bad, tmp_path / "out.onnx", [])


@pytest.mark.slow
def test_int8_static_arm_end_to_end():
    """The static int8 arm through measure() on optimized-tiny at batch 1: rows with set-up time, parity
    and tolerance (the fp32 onnx-ort arm's end-to-end test is in test_bench_extras.py). Slow tier: 19 s of export,
    calibration and quantization, the longest default test after the static run (the default tier must stay
    near 3 minutes on 2 cores)."""
    spec = {"preset": "optimized-tiny", "device": "cpu", "batch_size": 1,
            "arms": ["onnx-ort-int8-static"], "warmup": 0, "rounds": 1, "iters": 1}
    res = arms_mod.measure(spec)
    q_rec = res.arms["onnx-ort-int8-static"]
    assert "error" not in q_rec, q_rec.get("error")
    assert q_rec["setup_s"] > 0 and q_rec["calls_s"] and PARITY_KEYS <= set(q_rec["diffs"])
    assert q_rec["tolerance"] == arms_mod.REDUCED_TOLERANCE and "QDQ" in q_rec["notes"]["quantization"]
    assert isinstance(q_rec["parity_ok"], bool)
    # quantization changes the numbers (else the graph was not quantized), within reason
    assert 0 < q_rec["diffs"]["boxes_max_abs"] < 1
    rows = {r.metric: r for r in res.rows()}
    for m in ("setup_s", "gain", "parity_ok", "boxes_max_abs_matched", "probs_max_abs_matched", "agreement"):
        assert f"arm/onnx-ort-int8-static/{m}" in rows
    assert rows["arm/onnx-ort-int8-static/gain"].extra["tolerance"] == arms_mod.REDUCED_TOLERANCE


def test_int8_static_arm_records_a_failing_quantization(monkeypatch):
    """A quantize_static failure is an error row for that arm, not a crash of the process."""
    def boom(*a, **k):
        raise RuntimeError("onnxruntime quantize_static (QDQ, per-channel) failed on this model: boom")

    monkeypatch.setattr(onnx_backend, "quantize_static_qdq", boom)
    monkeypatch.setattr(onnx_backend, "export_onnx", lambda *a: "torchscript")  # the export is tested above
    spec = {"preset": "optimized-tiny", "device": "cpu", "batch_size": 1,
            "arms": ["onnx-ort-int8-static"], "warmup": 0, "rounds": 1, "iters": 1}
    res = arms_mod.measure(spec)
    assert "quantize_static" in res.arms["onnx-ort-int8-static"]["error"]
    row = next(r for r in res.rows() if r.metric == "arm/onnx-ort-int8-static/gain")
    assert row.status == "error" and "quantize_static" in row.error


def test_roofline_int8_row_or_reason():
    r = roofline.measure({"device": "cpu", "sizes": [64, 128], "dtypes": None, "min_run_time": 0.01})
    rows = {x.metric: x for x in r.rows()}
    row = rows["roofline/peak_int8"]
    assert row.unit == "OP/s"
    if roofline.cpu_int8_instructions():
        assert r.native["int8"] and row.status == "ok" and row.value > 1e8
        assert r.backend["int8"] == "onnxruntime" and set(r.by_size["int8"]) == {64, 128}
        assert "roofline/peak_int8_onnxruntime" in rows
    else:
        assert row.status == "not-measured" and "int8" in row.error


def test_cpu_int8_instructions_parses_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert roofline.cpu_int8_instructions(str(info)) == ["avx512_vnni"]
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2\n")
    assert roofline.cpu_int8_instructions(str(info)) == []
    assert roofline.cpu_int8_instructions(str(tmp_path / "missing")) == []


def test_roofline_int8_skip_reason_without_native_path(monkeypatch):
    monkeypatch.setattr(roofline, "cpu_int8_instructions", lambda *a: [])
    r = roofline.measure({"device": "cpu", "sizes": [64], "dtypes": None, "min_run_time": 0.01,
                          "onnxruntime": False})
    assert "int8" not in r.peaks and "no native int8 GEMM path" in r.skipped["int8"]
    row = next(x for x in r.rows() if x.metric == "roofline/peak_int8")
    assert row.status == "not-measured" and row.value is None



def test_roofline_bf16_row_states_why_on_a_cpu_without_it(monkeypatch):
    """A CPU without native bf16 or fp16 (AVX2 only) still writes their peak rows, not measured with the reason:
    the gate excuses that on another machine, but not a row that vanished."""
    real = roofline.native_dtypes
    # fp16 off too: oneDNN reports it on an AMX/AVX512-FP16 Xeon, where its peak row is then measured, not skipped
    monkeypatch.setattr(roofline, "native_dtypes", lambda device: {**real(device), "bf16": False, "fp16": False})
    r = roofline.measure({"device": "cpu", "sizes": [64], "dtypes": None, "min_run_time": 0.01,
                          "onnxruntime": False})
    row = next(x for x in r.rows() if x.metric == "roofline/peak_bf16")
    assert row.status == "not-measured" and row.value is None and "no native bf16 matmul" in row.error
    fp16 = next(x for x in r.rows() if x.metric == "roofline/peak_fp16")
    assert fp16.status == "not-measured" and fp16.value is None and "no native fp16 matmul" in fp16.error
    assert "roofline/peak_tf32" not in {x.metric for x in r.rows()}  # CUDA-only: no row on a CPU
