"""Issue-5 extras on tiny inputs: peers (small Hugging Face configs), roofline arithmetic and a small
matmul peak, scaling points and the curve sentences, optimization arms with their parity check, the
ranking table and the report sections; CUDA paths behind the ``gpu`` marker."""

import dataclasses
import json
import math
import subprocess
import sys
import time

import pytest
import torch

from bench.measure import arms as arms_mod
from bench.measure import peers, roofline, scaling
from bench.measure.specs import ArmsSpec, SpecError
from bench.profiles import EXTRAS, add_arms, get_profile, parse_extras
from bench.results import Results, Row, Stats
from bench.runner import plan
from bench.sources import build_under_test, resolve_factory, source_from_dict
from bench.variants import PEER_VARIANTS

# Small peer configs: same classes as the defaults, tiny dims (fast to build and run).
TINY_GDINO = {
    "d_model": 32, "encoder_layers": 1, "encoder_ffn_dim": 64, "encoder_attention_heads": 2,
    # decoder_layers >= 2: with one layer, transformers' tie_weights_keys for the shared box heads
    # (bbox_embed.0 -> bbox_embed.1..) find nothing to tie and the build raises ValueError.
    "decoder_layers": 2, "decoder_ffn_dim": 64, "decoder_attention_heads": 2, "num_queries": 10,
    "backbone_config": {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]},
    "text_config": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
}
TINY_OWL = {
    "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
    "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
    "projection_dim": 32,
}


# -- roofline -------------------------------------------------------------------------------------

def test_roofline_arithmetic():
    assert roofline.matmul_flops(2) == 16
    assert roofline.achieved_flops_per_s(4e9, 10) == pytest.approx(4e10)
    assert roofline.fraction_of_peak(5e10, 1e11) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        roofline.fraction_of_peak(1.0, 0.0)


def test_roofline_measures_a_small_fp32_peak():
    r = roofline.measure({"device": "cpu", "sizes": [64, 128], "dtypes": ["fp32", "fp16"], "min_run_time": 0.01})
    assert r.peaks["fp32"] > 1e8 and r.best_size["fp32"] in (64, 128)
    assert set(r.by_size["fp32"]) == {64, 128}
    # the fp32 peak is the best GEMM backend's (torch, onnxruntime's MLAS)
    assert set(r.by_backend["fp32"]) == {"torch", "onnxruntime"}
    assert r.peaks["fp32"] == max(r.by_backend["fp32"].values()) and r.backend["fp32"] in r.by_backend["fp32"]
    if not r.native["fp16"]:
        assert "fp16" in r.skipped and "fp16" not in r.peaks
    rows = {x.metric: x for x in r.rows()}
    assert rows["roofline/peak_fp32"].unit == "FLOP/s" and "roofline/peak_fp32_onnxruntime" in rows


# -- scaling --------------------------------------------------------------------------------------

def test_swin_window_divides_every_stage():
    assert [scaling.swin_window_for(s) for s in (224, 256, 320, 384, 448, 512)] == [7, 8, 5, 6, 7, 8]
    for s in (224, 320, 384, 512):
        w = scaling.swin_window_for(s)
        assert all((s // 4 // 2**k) % w == 0 for k in range(4))
    with pytest.raises(ValueError):
        scaling.swin_window_for(100)


def test_point_overrides():
    import ovd

    cfg = ovd.get_config("optimized")
    assert scaling.point_overrides(cfg, "batch", 8) == {}
    ov = scaling.point_overrides(cfg, "image_size", 320)
    assert ov["image.image_size"] == 320 and ov["image.backbone_kwargs"]["window_size"] == 5
    assert scaling.point_overrides(cfg, "prompt_tokens", 32) == {"text.max_tokens": 32}
    assert scaling.point_overrides(cfg, "num_queries", 50) == {"box_head.num_queries": 50}
    tiny = ovd.get_config("optimized-tiny")  # 3 stages, window 6
    assert scaling.point_overrides(tiny, "image_size", 128)["image.backbone_kwargs"]["window_size"] in (4, 8)
    with pytest.raises(ValueError):
        scaling.point_overrides(cfg, "depth", 3)


def test_prompt_of_tokens(tokenizer):
    for n in (8, 33, 256):
        text = scaling.prompt_of_tokens(tokenizer, n)
        assert len(tokenizer(text)["input_ids"]) >= n
        assert len(tokenizer(text, truncation=True, max_length=n)["input_ids"]) == n


@pytest.mark.parametrize("xs, ys, word", [
    ([1, 2, 4, 8, 16], [3, 6, 12, 24, 48], "about linearly"),
    ([64, 128, 256, 512], [1, 4, 16, 64], "about quadratically"),
    ([1, 2, 4, 8], [5.0, 5.01, 5.02, 5.0], "roughly flat"),
    ([1, 2, 4, 8], [8, 4, 2, 1], "about as 1/x"),
])
def test_describe_curve(xs, ys, word):
    s = scaling.describe_curve(xs, ys, "batch size", "latency", "ms")
    assert word in s and s.endswith(".")
    assert s.count(".") >= 1 and "\n" not in s


def test_describe_curve_names_fixed_cost_and_fit():
    # a fixed cost then linear: slope rises in the upper half, and a linear fit is the best shape
    xs = [8, 16, 32, 64, 128, 256, 512, 1024]
    ys = [100 + x for x in xs]
    s = scaling.describe_curve(xs, ys, "prompt length (tokens)", "latency", "ms")
    assert "grows sublinearly" in s and "from 128 up" in s and "best fit linear" in s
    q = scaling.describe_curve([1, 2, 3, 4, 5, 6], [1 + x * x for x in range(1, 7)], "size", "memory", "MiB")
    assert "best fit quadratic" in q
    assert "too few points" in scaling.describe_curve([1], [1], "x", "y", "u")
    assert scaling.loglog_slope([1, 10], [1, 100]) == pytest.approx(2.0)


def test_scaling_point_on_the_tiny_preset():
    r = scaling.measure({"preset": "optimized-tiny", "axis": "prompt_tokens", "value": 24, "batch_size": 2,
                         "warmup": 0, "iters": 1, "device": "cpu"})
    assert r.prompt_tokens == 24 and r.batch_size == 2 and len(r.calls_s) == 1
    assert r.total_mib is not None and r.total_mib > 0 and r.memory_method == "cpu-rss"
    metrics = {x.metric for x in r.rows()}
    assert {"scaling/prompt_tokens/24/fps", "scaling/prompt_tokens/24/latency_ms",
            "scaling/prompt_tokens/24/memory_total_mib"} <= metrics
    r = scaling.measure({"preset": "optimized-tiny", "axis": "image_size", "value": 128, "warmup": 0, "iters": 1,
                         "memory": False, "device": "cpu"})
    assert r.image_size == 128 and r.window_size in (4, 8) and r.total_mib is None


# -- arms -----------------------------------------------------------------------------------------

def _out(boxes, logits, mask=None):
    return {"pred_boxes": boxes, "pred_logits": logits,
            "text_mask": mask if mask is not None else torch.ones(logits.shape[0], logits.shape[2], dtype=torch.bool)}


def test_parity_logic():
    g = torch.Generator().manual_seed(0)
    boxes, logits = torch.rand(2, 5, 4, generator=g), torch.randn(2, 5, 7, generator=g)
    ref = _out(boxes, logits)
    same = arms_mod.parity(ref, _out(boxes.clone(), logits.clone()))
    assert all(v == 0 for v in same.values())
    perm = torch.tensor([4, 3, 2, 1, 0])
    swapped = arms_mod.parity(ref, _out(boxes[:, perm], logits[:, perm]))
    assert swapped["boxes_max_abs"] > 0.01 and swapped["boxes_max_abs_matched"] == 0
    assert arms_mod.within_tolerance(swapped, 1e-6)
    noisy = arms_mod.parity(ref, _out(boxes + 0.01, logits))
    assert noisy["boxes_max_abs_matched"] == pytest.approx(0.01, abs=1e-6)
    # agreement: the share of matched queries within the tolerance
    one_off = boxes.clone()
    one_off[0, 0] += 0.5
    assert arms_mod.parity(ref, _out(one_off, logits), tolerance=0.05)["agreement"] == pytest.approx(9 / 10)
    assert "agreement" not in noisy
    assert arms_mod.within_tolerance(noisy, 0.05) and not arms_mod.within_tolerance(noisy, 1e-3)
    # padded tokens do not count: a huge change there is invisible
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[:, -2:] = False
    bumped = logits.clone()
    bumped[:, :, -2:] += 50
    assert arms_mod.parity(_out(boxes, logits, mask), _out(boxes, bumped))["probs_max_abs"] == 0
    with pytest.raises(ValueError):
        arms_mod.parity(ref, _out(boxes[:, :3], logits[:, :3]))


def test_arm_tolerances_are_stated():
    assert arms_mod.ARMS["inference-mode"].tolerance == arms_mod.FP32_TOLERANCE
    assert arms_mod.ARMS["int8-dynamic"].tolerance == arms_mod.REDUCED_TOLERANCE
    assert arms_mod.ARMS["bf16+text-cache"].tolerance == arms_mod.REDUCED_TOLERANCE
    assert {a for a in arms_mod.ARMS.values() for a in a.features} <= set(arms_mod.FEATURES)


def test_arms_on_the_tiny_preset(monkeypatch):
    def broken_compile(model, *a, **k):
        raise RuntimeError("no compiler here (planted)")

    monkeypatch.setattr(torch, "compile", broken_compile)
    names = ["inference-mode", "channels-last", "text-cache", "int8-dynamic", "int8-except-text+text-cache",
             "bf16-autocast", "compile", "compile-frozen+text-cache", "fp16-autocast"]
    r = arms_mod.measure({"preset": "optimized-tiny", "arms": names, "batch_size": 2, "warmup": 0, "rounds": 1,
                          "iters": 1, "device": "cpu"})
    a = r.arms
    for name in ("inference-mode", "channels-last", "text-cache"):  # fp32 math: (near-)exact
        assert a[name]["parity_ok"], (name, a[name]["diffs"])
        assert a[name]["diffs"]["boxes_max_abs_matched"] < 1e-4
        assert a[name]["gain"] > 0
    assert a["eager"]["gain"] == pytest.approx(1.0)
    assert a["int8-dynamic"]["diffs"]["probs_max_abs"] > 0  # quantization changes the numbers
    assert a["int8-except-text+text-cache"]["diffs"]["probs_max_abs"] > 0
    assert a["int8-except-text+text-cache"]["gain"] > 0
    assert arms_mod.ARMS["int8-except-text"].tolerance == arms_mod.REDUCED_TOLERANCE
    assert "planted" in a["compile"]["error"] and "planted" in a["compile-frozen+text-cache"]["error"]
    assert "cuda" in a["fp16-autocast"]["skipped"]
    rows = {x.metric: x for x in r.rows()}
    assert rows["arm/compile/gain"].status == "error"
    assert rows["arm/fp16-autocast/gain"].status == "not-measured"
    assert rows["arm/text-cache/fps_b2"].unit == "images/s"
    assert rows["arm/text-cache/parity_ok"].value == 1.0


def test_onnx_arm_exports_and_matches_eager(tmp_path):
    # Skipped only where the ONNX packages are absent; with them, a failing export fails the test.
    pytest.importorskip("onnx", reason="onnx is not installed (pip install onnx)")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnxruntime)")
    import ovd

    torch.manual_seed(0)
    model = ovd.create_model("optimized-tiny").eval()
    arms_mod.randomize_zero_init(model)
    from bench.common import make_batch

    b = make_batch(model, 1, "cpu")
    fn, setup_s, notes = arms_mod.build_arm(arms_mod.ARMS["onnx-ort"], model, b.images, b.input_ids,
                                            b.attention_mask, torch.device("cpu"), tmp_path)
    with torch.no_grad():
        ref = model(b.images, b.input_ids, b.attention_mask)
    d = arms_mod.parity(ref, fn())
    assert arms_mod.within_tolerance(d, arms_mod.FP32_TOLERANCE), d
    assert setup_s > 0 and notes["exporter"] in ("torchscript", "dynamo")


# -- peers ----------------------------------------------------------------------------------------

def _peer(name: str, overrides: dict) -> dict:
    """The peer variant's factory source with tiny config kwargs, as the worker receives it."""
    return {"kind": "factory", "target": PEER_VARIANTS[name].source.target, "kwargs": overrides}


@pytest.mark.parametrize("preset, overrides", [("peer:grounding-dino-t", TINY_GDINO), ("peer:owlvit-b32", TINY_OWL)])
def test_peers_build_offline_and_measure(preset, overrides, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # 128 px: the coarsest Grounding DINO level must keep > 1 value per GroupNorm group
    spec = {"source": _peer(preset, overrides), "image_size": 128, "device": "cpu"}
    s = peers.measure_static(spec)
    assert s.total > 0 and s.flops_per_image > 0 and s.prompt_tokens == peers.prompt_ids()[0].shape[1]
    assert set(s.components) == {"image_backbone", "text_encoder"}
    metrics = {x.metric for x in s.rows()}
    assert {"params/total", "flops/per_image", "params/text_encoder"} <= metrics
    sp = peers.measure_speed({**spec, "infer_batch": 2, "warmup": 0, "iters": 1})
    assert {x.metric for x in sp.rows()} >= {"infer/fps_b1", "infer/fps_b2", "infer/latency_p90_ms_b1"}


def _flat(config: dict, prefix: str = "") -> dict:
    """{"text_config.hidden_size": 32, ...}: nested config dicts flattened to dotted keys."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("preset, overrides", [("peer:grounding-dino-t", TINY_GDINO), ("peer:owlvit-b32", TINY_OWL)])
def test_tiny_peer_configs_reach_the_model(preset, overrides):
    """transformers' configs accept unknown keys silently: every key must be a real attribute and be applied."""
    model = build_under_test(source_from_dict(_peer(preset, overrides)), "cpu", 1, image_size=64).module
    built = _flat(model.config.to_dict())
    for key, value in _flat(overrides).items():
        assert key in built, f"{preset}: {key} is not a {type(model.config).__name__} field"
        assert built[key] == value, (key, built[key], value)


def test_peer_inputs_match_our_prompt():
    from bench.common import make_batch

    ids, mask = peers.prompt_ids()
    model = peers.owlvit_b32("cpu", 1, 64, **TINY_OWL).module
    inputs = peers.make_peer_inputs(model, 3, 64, "cpu")
    assert inputs["pixel_values"].shape == (3, 3, 64, 64) and inputs["input_ids"].shape == (3, ids.shape[1])
    import ovd

    ours = make_batch(ovd.create_model("optimized-tiny"), 1, "cpu")
    assert ours.input_ids.shape[1] == ids.shape[1]  # matched token count
    with pytest.raises(ValueError):
        peers.make_peer_inputs(model, 1, 64, "cpu", prompt_tokens=40)  # OWL-ViT's text takes <= 16 tokens
    with pytest.raises(ValueError):
        resolve_factory("bench.measure.peers:nope")


# -- profiles, plan, CLI --------------------------------------------------------------------------

def test_profiles_and_extras_flag():
    # quick measures only the matmul peak: the gate's efficiency check divides by it (bench/compare.py)
    assert get_profile("quick").extras == ("roofline",)
    assert not [t for t in plan(get_profile("quick")) if t.id.split(":")[0] in
                ("peer_speed", "arms", "scaling", "peer_static")]
    assert [t for t in plan(get_profile("quick")) if t.id.startswith("roofline:")]
    assert set(EXTRAS) == set(get_profile("full").extras)
    # the CPU default (about 18 min on 2 cores, issue 11) runs the matmul peak and the arms; the sweep, the
    # ceiling, data-parallel scaling, the peers and the scaling curves are in `full` or one --extras away
    default = get_profile("default")
    assert set(default.extras) == {"roofline", "arms"}
    assert not [t for t in plan(default) if t.id.split(":")[0] in ("sweep", "ceiling", "dataparallel")]
    with_sweep = [t.id for t in plan(dataclasses.replace(default, extras=("sweep", "ceiling", "dataparallel")))]
    assert any(i.startswith("sweep") for i in with_sweep) and any(i.startswith("ceiling") for i in with_sweep)
    assert any(i.startswith("dataparallel") for i in with_sweep)
    assert parse_extras("peers, roofline") == ("peers", "roofline")
    assert parse_extras("none") == () and parse_extras("all") == EXTRAS and parse_extras(None) is None
    with pytest.raises(ValueError):
        parse_extras("peers,warp")
    p = dataclasses.replace(get_profile("default"), extras=("roofline", "arms"), repeats=2)
    ids = [t.id for t in plan(p)]
    assert "roofline:0" in ids and "arms:shared:0" in ids and "arms:onnx-ort:0" in ids
    # plain torch.compile, ORT static int8 and the frozen compile (168-180 s of compilation for 1.09-1.16x) run in
    # `full`; the CPU default keeps ONNX Runtime fp32, in 3 processes like every isolated arm
    assert not {"arms:compile:0", "arms:onnx-ort-int8-static:0", "arms:compile-frozen+text-cache:0"} & set(ids)
    assert {"arms:onnx-ort:0", "arms:onnx-ort:2"} <= set(ids)
    # --add-arms puts one back (and switches the arms extra on); an unknown name is a usage error
    with_frozen = add_arms(dataclasses.replace(p, extras=("roofline",)), "compile-frozen+text-cache")
    assert "arms" in with_frozen.extras and with_frozen.arms[-1] == "compile-frozen+text-cache"
    assert add_arms(p, "") is p and add_arms(p, "onnx-ort").arms == p.arms  # nothing new: no duplicate
    for bad in ("warp-drive", "eager"):
        with pytest.raises(ValueError, match="unknown arms"):
            add_arms(p, bad)
    ids = [t.id for t in plan(with_frozen)]
    assert {"arms:compile-frozen+text-cache:0", "arms:compile-frozen+text-cache:2"} <= set(ids)
    # a compile arm's processes share one Inductor cache in the run folder, emptied by the first (a cold compile)
    frozen = [t.params["arms"] for t in plan(with_frozen) if t.id.startswith("arms:compile-frozen+text-cache:")]
    assert [s["compile_cache"] for s in frozen] == ["inductor-cache/compile-frozen+text-cache"] * 3
    assert [s["compile_cache_reset"] for s in frozen] == [True, False, False]
    onnx = next(t.params["arms"] for t in plan(p) if t.id == "arms:onnx-ort:0")
    assert "compile_cache" not in onnx  # nothing to cache: every process's set-up is a first run's
    full_ids = [t.id for t in plan(dataclasses.replace(get_profile("full"), extras=("arms",), repeats=1))]
    assert {"arms:compile:0", "arms:onnx-ort-int8-static:0", "arms:compile-frozen+text-cache:0"} <= set(full_ids)
    assert not any(i.startswith(("peer_", "scaling:")) for i in ids)
    # the roofline measures the machine, not a variant (bench.profiles.Profile.names)
    assert "machine" not in p.names() and "peer:grounding-dino-t" not in p.names()
    # roofline and the shared arms process ride the speed rounds (interleaved)
    assert ids.index("roofline:0") < ids.index("speed:baseline:1") < ids.index("roofline:1")


def test_cli_rejects_unknown_extras(capsys):
    from bench.cli import main

    assert main(["run", "--profile", "quick", "--extras", "warp", "--out", "/nonexistent"]) == 2
    assert "unknown extras" in capsys.readouterr().err
    assert main(["run", "--profile", "quick", "--add-arms", "warp-drive", "--out", "/nonexistent"]) == 2
    assert "unknown arms" in capsys.readouterr().err


@pytest.mark.slow  # about 45 s on 2 AVX2 cores (fresh workers); default-tier twin: test_bench_runner.py::test_static_run_end_to_end
def test_run_with_extras_end_to_end(tmp_path, monkeypatch):
    """The runner path for peers and the roofline: fresh worker processes, rows, and the report."""
    import bench.variants as variants
    from bench.report import render
    from bench.runner import run_profile

    tiny = variants.Variant("peer:owlvit-b32", source_from_dict(_peer("peer:owlvit-b32", TINY_OWL)), "tiny OWL-ViT",
                            None, "peer")
    monkeypatch.setitem(variants.VARIANTS, "peer:owlvit-b32", tiny)
    p = dataclasses.replace(get_profile("quick"), static_variants=(), memory_variants=(), speed_variants=(),
                            repeats=0, extras=("peers", "roofline"), peers=("peer:owlvit-b32",), peer_image_size=64,
                            peer_repeats=1, roofline_repeats=1, roofline_sizes=(64, 128), infer_batch=2, iters=1,
                            pair=("optimized-tiny", "optimized-tiny"))
    res = run_profile(p, tmp_path, threads=1)
    assert res.value("peer:owlvit-b32", "params/total") > 0
    assert res.value("peer:owlvit-b32", "infer/fps_b2") > 0
    assert res.value("peer:owlvit-b32", "memory/infer_total") is not None
    assert res.value("machine", "roofline/peak_fp32") > 0
    text = render(res, tmp_path).read_text()
    assert "Peers side by side" in text and "random weights" in text and "Roofline" in text


# -- report sections from synthetic results -------------------------------------------------------

def _row(variant, metric, samples, unit="", **extra):
    st = Stats.of(samples)
    return Row(variant, metric, st.median, unit, list(samples), st, extra=dict(extra))


def synthetic_results() -> Results:
    rows = [
        _row("machine", "roofline/peak_fp32", [100e9, 110e9, 105e9], "FLOP/s", best_size=2048, threads=2,
             native=True, backend="onnxruntime", by_backend={"torch": 50e9, "onnxruntime": 105e9}),
        _row("machine", "roofline/peak_fp32_torch", [50e9, 52e9, 51e9], "FLOP/s"),
        _row("machine", "roofline/peak_fp32_onnxruntime", [100e9, 110e9, 105e9], "FLOP/s"),
        _row("optimized", "flops/per_image", [10e9]), _row("optimized", "flops/text_encoder", [1e9]),
        _row("optimized", "params/total", [55e6]), _row("peer:grounding-dino-t", "params/total", [172e6]),
        _row("optimized", "infer/fps_b4", [6, 6.5, 7], precision="fp32"),
        _row("baseline", "infer/fps_b4", [3, 3.2, 3.4], precision="fp32"),
        _row("baseline+sdpa", "infer/fps_b4", [3.3, 3.5, 3.6], precision="fp32"),
        _row("peer:grounding-dino-t", "infer/fps_b4", [0.5, 0.55, 0.6]),
        _row("optimized", "arm/eager/fps_b8", [6, 6.2], tolerance=0.0),
        _row("optimized", "arm/eager/gain", [1.0, 1.0], tolerance=0.0),
        _row("optimized", "arm/int8-dynamic/gain", [1.5, 1.6], tolerance=0.05),
        _row("optimized", "arm/int8-dynamic/fps_b8", [9.5, 9.9]),
        _row("optimized", "arm/int8-dynamic/parity_ok", [1.0, 1.0]),
        _row("optimized", "arm/int8-dynamic/boxes_max_abs_matched", [0.01, 0.01]),
        _row("optimized", "arm/int8-dynamic/probs_max_abs_matched", [0.02, 0.02]),
        _row("optimized", "arm/bf16-autocast/gain", [2.0, 2.1], tolerance=0.05),
        _row("optimized", "arm/bf16-autocast/parity_ok", [0.0, 0.0]),
        _row("optimized", "arm/text-cache/gain", [1.1, 1.2], tolerance=1e-3),
        _row("optimized", "arm/text-cache/fps_b8", [6.8, 7.0]),
        _row("optimized", "arm/text-cache/parity_ok", [1.0, 1.0]),
        Row("optimized", "arms:compile/*", None, "", status="error", error="timed out after 600 s"),
    ]
    for axis, xs, lat in (("batch", (1, 4, 16), (100, 380, 1500)), ("num_queries", (20, 100, 200), (100, 104, 110))):
        for x, ms in zip(xs, lat):
            b = x if axis == "batch" else 1
            rows += [_row("optimized", f"scaling/{axis}/{x}/fps", [b * 1e3 / ms], batch_size=b, precision="fp32"),
                     _row("optimized", f"scaling/{axis}/{x}/latency_ms", [ms]),
                     _row("optimized", f"scaling/{axis}/{x}/memory_total_mib", [300 + 10 * x])]
    variants = {"baseline": {"group": "main"}, "optimized": {"group": "main", "reference": "baseline"},
                "baseline+sdpa": {"group": "ladder", "reference": "baseline", "description": "sdpa"},
                "peer:grounding-dino-t": {"group": "peer"}, "machine": {"group": "machine"}}
    return Results(rows=rows, variants=variants,
                   profile={"infer_batch": 4, "arm_batch": 8, "extras_variant": "optimized",
                            "pair": ["baseline", "optimized"], "scaling_batch": 1})


def test_ranking_table():
    res = synthetic_results()
    from bench.report.arms import arms_ranking, best_arm_sentence

    table = arms_ranking(res)
    order = [r["arm"] for r in table]
    assert order[:4] == ["bf16-autocast", "int8-dynamic", "text-cache", "baseline+sdpa"]
    assert order[-1] == "compile" and table[-1]["rank"] == "-" and "timed out" in table[-1]["status"]
    assert table[0]["status"] == "OUTSIDE TOLERANCE"
    assert "seed factor" in table[3]["kind"]
    s = best_arm_sentence(res)  # bf16 is faster but outside tolerance: int8 is the best valid arm
    assert "`int8-dynamic`" in s and "1.55x" in s and "holds" in s


def test_roofline_and_peers_sections(tmp_path):
    from bench.report import arms, scaling
    from bench.report.peers import peer_targets, peers_summary
    from bench.report.roofline import roofline_sentence, roofline_table

    res = synthetic_results()
    table = {r["configuration"]: r for r in roofline_table(res)}
    # optimized: 10 GFLOPs/img x 6.5 img/s = 65 GFLOP/s = 62% of the 105 GFLOP/s peak
    assert table["optimized"]["achieved GFLOP/s"] == "65" and table["optimized"]["% of fp32 peak"].startswith("62")
    # text-cache arm: the text encoder's FLOPs are not done per call
    assert table["optimized @ arm text-cache"]["GFLOPs/img"] == "9.00"
    assert "optimized @ scaling batch 4" in table
    assert table["optimized"]["% of torch fp32 GEMM peak"] == "127"  # 65 / 51 GFLOP/s
    s = roofline_sentence(res)
    assert "% of this machine's measured fp32 matmul peak" in s and "target >= 60%" in s
    assert "via onnxruntime" in s and "torch's own fp32 GEMM peak" in s
    from bench.report.roofline import peaks_table

    peaks = peaks_table(res)
    assert [p["dtype"] for p in peaks] == ["fp32"] and "torch 51" in peaks[0]["per GEMM backend (GFLOP/s)"]
    lines = "\n".join(peers_summary(res))
    assert "FPS (batch 4) 11.8x [10.9, 12.9]" in lines and "0.32x" in lines
    targets = {(t["target"].split()[0], t["batch"]): t["verdict"] for t in peer_targets(res)}
    assert targets == {("FPS", 1): "not measured on this machine", ("FPS", 4): "holds", ("total", "-"): "holds"}
    text = "".join(scaling.section(res, tmp_path) + arms.section(res))
    assert "Scaling curves" in text and "ranked by inference gain" in text
    assert (tmp_path / "scaling_batch.png").exists() and (tmp_path / "scaling_num_queries.png").exists()
    assert "about linearly in batch size" in text


# -- CUDA paths (skipped without a GPU) -----------------------------------------------------------

@pytest.mark.gpu
def test_gpu_roofline_reduced_precision_peaks():
    r = roofline.measure({"device": "cuda", "sizes": [1024, 2048], "min_run_time": 0.05})
    assert {"fp32", "fp16"} <= set(r.peaks)
    assert r.peaks["fp16"] > r.peaks["fp32"]


@pytest.mark.gpu
def test_gpu_arms_autocast_and_scaling_memory():
    r = arms_mod.measure({"preset": "optimized-tiny", "arms": ["fp16-autocast", "bf16-autocast", "int8-dynamic",
                                                               "text-cache"],
                          "batch_size": 2, "warmup": 1, "rounds": 1, "iters": 2, "device": "cuda"})
    assert r.arms["fp16-autocast"]["gain"] > 0 and "error" not in r.arms["bf16-autocast"]
    assert "skipped" in r.arms["int8-dynamic"]
    assert r.arms["text-cache"]["parity_ok"]
    p = scaling.measure({"preset": "optimized-tiny", "axis": "batch", "value": 4, "warmup": 1, "iters": 2,
                         "device": "cuda"})
    assert p.memory_method == "cuda-allocator" and p.reserved_mib >= p.total_mib > 0
    assert any(x.metric.endswith("memory_reserved_mib") for x in p.rows())


@pytest.mark.gpu
def test_gpu_peers_speed_and_vram():
    spec = {"source": _peer("peer:grounding-dino-t", TINY_GDINO), "image_size": 128, "device": "cuda"}
    sp = peers.measure_speed({**spec, "infer_batch": 2, "warmup": 1, "iters": 2})
    assert sp.precision == "fp16" and math.isfinite(sp.rows()[0].value)
    m = peers.measure_memory({**spec, "batch_size": 2})
    assert m.method == "cuda-allocator" and m.reserved_mib >= m.total_mib > 0


def test_set_up_rows_keep_cold_and_warm_compiles_apart():
    r = arms_mod.ArmsResult(2, "cpu", 1, emit=["eager", "compile", "onnx-ort"])
    for name, notes in (("eager", {}), ("compile", {"inductor_cache": "warm"}), ("onnx-ort", {})):
        r.arms[name] = {"features": [], "tolerance": 0.0, "calls_s": [0.1, 0.1], "gain": 1.0, "setup_s": 3.0,
                        "notes": notes, "diffs": {}}
    metrics = {x.metric for x in r.rows()}
    assert "arm/compile/setup_warm_s" in metrics and "arm/compile/setup_s" not in metrics
    assert "arm/onnx-ort/setup_s" in metrics and "arm/eager/setup_s" in metrics
    with pytest.raises(SpecError, match="compile_cache_reset"):
        ArmsSpec.coerce({"preset": "optimized-tiny", "compile_cache_reset": True})


@pytest.mark.slow
def test_frozen_compile_arm_is_exact_on_the_tiny_preset(tmp_path):
    # Inductor freezing folds the eval weights into the graph: same fp32 numbers as eager (about 40 s to compile)
    spec = {"preset": "optimized-tiny", "arms": ["compile-frozen+text-cache"], "batch_size": 2, "warmup": 0,
            "rounds": 1, "iters": 1, "device": "cpu", "compile_cache": str(tmp_path / "cache")}
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "stale").write_text("from an earlier run")  # emptied: the first process is cold
    r = arms_mod.measure({**spec, "compile_cache_reset": True})
    a = r.arms["compile-frozen+text-cache"]
    assert "error" not in a, a.get("error")
    assert a["parity_ok"] and a["diffs"]["boxes_max_abs_matched"] < 1e-4, a["diffs"]
    assert a["setup_s"] > 0 and a["gain"] > 0 and a["notes"]["inductor_cache"] == "cold"
    assert arms_mod.ARMS["compile-frozen+text-cache"].tolerance == arms_mod.FP32_TOLERANCE
    # a second process on the filled cache: a warm set-up, reported apart, and the same exact numbers
    warm = subprocess.run([sys.executable, "-c", (
        "import json, sys; from bench.measure import arms; "
        "r = arms.measure(json.loads(sys.argv[1])); a = r.arms['compile-frozen+text-cache']; "
        "print(json.dumps({'notes': a.get('notes'), 'setup_s': a.get('setup_s'), 'error': a.get('error'), "
        "'parity_ok': a.get('parity_ok'), 'metrics': [x.metric for x in r.rows()]}))"), json.dumps(spec)],
        capture_output=True, text=True, timeout=600)
    assert warm.returncode == 0, warm.stderr[-2000:]
    w = json.loads(warm.stdout.strip().splitlines()[-1])
    assert w["error"] is None and w["parity_ok"] and w["notes"]["inductor_cache"] == "warm"
    assert "arm/compile-frozen+text-cache/setup_warm_s" in w["metrics"]
    assert w["setup_s"] < a["setup_s"], (w["setup_s"], a["setup_s"])  # a same-run ratio, not an absolute time


def test_slow_arm_rule_on_planted_times():
    assert arms_mod.is_slow_arm(3.0, 1.0) and arms_mod.is_slow_arm(9.1, 1.2)
    assert not arms_mod.is_slow_arm(2.9, 1.0)
    assert not arms_mod.is_slow_arm(5.0, None) and not arms_mod.is_slow_arm(5.0, 0.0)


def test_a_slow_arm_is_timed_in_one_round_and_keeps_its_rows(monkeypatch):
    """An arm whose parity call and one warm call are both >= SLOW_ARM_FACTOR x eager's warm call: one timed
    round; an arm slow on its first call only (kernel loading) keeps its warm-up and every round; the later
    rounds rotate over the arms still timed."""
    calls, log = {}, []
    real_build = arms_mod.build_arm

    def counting_build(arm, *a, **k):
        fn, setup_s, notes = real_build(arm, *a, **k)

        def counted():
            calls[arm.name] = calls.get(arm.name, 0) + 1
            log.append(arm.name)
            # planted: 1 s is far above 8x a tiny-preset batch-2 call (tens of ms)
            if arm.name == "channels-last" or (arm.name == "inference-mode" and calls[arm.name] == 1):
                time.sleep(1.0)
            return fn()
        return counted, setup_s, notes

    monkeypatch.setattr(arms_mod, "build_arm", counting_build)
    monkeypatch.setattr(arms_mod, "SLOW_ARM_FACTOR", 8.0)  # far from a loaded machine's noise
    r = arms_mod.measure({"preset": "optimized-tiny", "arms": ["channels-last", "inference-mode", "text-cache"],
                          "batch_size": 2, "warmup": 1, "rounds": 3, "iters": 1, "device": "cpu"})
    a = r.arms
    assert "first round only" in a["channels-last"]["timed_once"]
    assert len(a["channels-last"]["calls_s"]) == 1 and calls["channels-last"] == 3  # parity, warm, 1 timed
    for name in ("inference-mode", "text-cache", "eager"):  # parity, warm-up, 3 rounds
        assert "timed_once" not in a[name] and len(a[name].get("calls_s", [1, 1, 1])) == 3 and calls[name] == 5
    assert a["channels-last"]["gain"] < 1 / 8
    assert log[-6:] == ["inference-mode", "text-cache", "eager", "text-cache", "eager", "inference-mode"]
    rows = {x.metric: x for x in r.rows()}
    assert "timed_once" in rows["arm/channels-last/gain"].extra
    assert "timed_once" not in rows["arm/text-cache/gain"].extra
