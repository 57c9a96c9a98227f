"""Inference optimization arms beyond the seed, each with an output-parity check against fp32 eager.

An arm (``ARMS``) is a set of features applied to one variant's model at inference:
``inference_mode`` (``torch.inference_mode`` instead of ``no_grad``), ``channels_last`` (model and
images in NHWC memory format), ``bf16`` / ``fp16`` (autocast of the whole forward), ``bf16_image`` (bf16 autocast
of the image encoder only, the text encoder, fusion and box head in fp32: ``ovd predict --precision bf16-image``'s
``ovd.batch_predict.autocast_for``), ``int8`` (dynamic int8 quantization of
every ``nn.Linear``: ``torch.ao.quantization.quantize_dynamic``; CPU only), ``int8_except_text`` (the same,
the text encoder kept fp32: ``ovd predict --quantize int8-except-text``), ``compile``
(``torch.compile``, default backend), ``compile_frozen`` (the same with Inductor's ``freezing``
option: eval weights folded into the graph as constants and, on the CPU, prepacked for oneDNN's GEMMs; inference
only, fp32-exact; both compile features go through ``ovd.batch_predict.compile_for_inference``, what ``ovd predict
--compile default|frozen`` runs), ``onnx`` (the model as ``ovd predict --backend
onnxruntime`` runs it: :class:`ovd.onnx_backend.OnnxDetector`, ``torch.onnx.export`` of the forward at the
arm's batch size with the prompt padded to the next multiple of 16 tokens, run by onnxruntime with its
workers spinning off and every graph optimization on: ``ORT_ENABLE_ALL``, so no separate "onnx-ort-opt" arm
exists), ``int8_static`` (with ``onnx``: the same object's static int8 post-training quantization,
onnxruntime ``quantize_static``, QDQ, per-channel int8 weights, uint8 activations calibrated by MinMax;
for speed it calibrates on :data:`CALIBRATION_BATCHES` held-out fixed synthetic batches made by
``bench.common.make_batch`` with seeds 1.. through the model's one input processor (``ovd/processor.py``),
never the seed-0 parity batch; the accuracy arms calibrate on training images; CPU only) and ``text_cache`` (the prompt set is
fixed: ``encode_text`` runs once at set-up and every call passes ``text_tokens``).

We chose ORT static QDQ because PyTorch 2 export quantization is absent from torch 2.14.1 here
(``torch.ao.quantization.quantize_pt2e`` and ``torch.ao.quantization.quantizer.X86InductorQuantizer``
raise ModuleNotFoundError: they moved to the separate ``torchao`` package, which is not installed).

Method, in one fresh process: build the model once (random weights; the zero-initialized last
layers of the box MLPs get small random values so boxes depend on the whole head), compute the
fp32 eager reference (eval, ``torch.no_grad``) on a fixed batch, build every arm (set-up time
recorded: quantization, compilation with its first call, export + session), check parity, warm up,
then time ``rounds`` x ``iters`` calls per arm with the arms' order rotated every round, the
reference included. A slow arm (its parity call and the warm call after it each >= ``SLOW_ARM_FACTOR`` x the
reference's warm call) is timed in the first round only; its gain divides the reference's median over every round
by that round's. An arm's **gain** is the reference's median time over the arm's median time in
the same process (paired, interleaved); the runner repeats the process and reports median and IQR.
A compile arm's set-up is a cold compile (``setup_s``: an empty Inductor cache) or, in a process that finds the
arm's shared cache filled by an earlier one, a warm one (``setup_warm_s``); the compiled code, and so the gain,
is the same.

Parity: max |diff| of ``pred_boxes`` (normalized cxcywh) and of ``sigmoid(pred_logits)`` over real
tokens, against the reference, both in query order and after matching queries one-to-one (Hungarian
on box L1 + probability L1: top-k query selection may reorder near-ties). The arm passes when the
matched differences are within its tolerance (``FP32_TOLERANCE`` for arms that keep fp32 math,
``REDUCED_TOLERANCE`` for bf16/fp16/int8).

Units: images/s, ms, seconds (set-up), x (gain), absolute differences (boxes: fraction of the image
side; probabilities: 0..1).
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.measure.specs import ArmsSpec
from bench.results import Row, measured, quantile
from ovd.onnx_backend import INT8_STATIC_OPS  # noqa: F401  (re-exported: the ops the int8_static arm quantizes)

FEATURES = ("inference_mode", "channels_last", "bf16", "bf16_image", "fp16", "int8", "int8_except_text",
            "int8_static", "compile", "compile_frozen", "compile_max_autotune", "cuda_graphs", "onnx", "text_cache")
#: arm feature -> the ``ovd predict --quantize`` mode it runs (``ovd.inference_options.QUANTIZATIONS``): the speed and
#: the accuracy arms apply the same transform users run
DYNAMIC_INT8_FEATURES = {"int8": "int8", "int8_except_text": "int8-except-text"}
#: feature -> its compile mode (``ovd.batch_predict.COMPILE_KWARGS``: the torch.compile arguments ``ovd predict
#: --compile`` uses); the first one present wins. predict offers "default" and "frozen"; the other two are GPU arms.
COMPILE_FEATURES = {"cuda_graphs": "reduce-overhead", "compile_max_autotune": "max-autotune",
                    "compile_frozen": "frozen", "compile": "default"}
CALIBRATION_BATCHES = 2  # held-out batches (each of the arm's batch size) for static int8 calibration
FP32_TOLERANCE = 1e-3
REDUCED_TOLERANCE = 5e-2
REFERENCE = "eager"


@dataclass(frozen=True)
class Arm:
    name: str
    features: tuple
    description: str
    devices: tuple = ("cpu", "cuda")
    isolated: bool = False  # slow or fragile set-up: the profile gives it its own process

    @property
    def tolerance(self) -> float:
        reduced = {"bf16", "bf16_image", "fp16", "int8", "int8_except_text", "int8_static"} & set(self.features)
        return REDUCED_TOLERANCE if reduced else FP32_TOLERANCE


ARMS: dict[str, Arm] = {a.name: a for a in [
    Arm(REFERENCE, (), "fp32 eager reference: eval mode, torch.no_grad"),
    Arm("inference-mode", ("inference_mode",), "torch.inference_mode instead of torch.no_grad"),
    Arm("channels-last", ("channels_last",), "model and images in channels_last (NHWC) memory format"),
    Arm("bf16-autocast", ("bf16",), "torch.autocast bfloat16"),
    Arm("bf16-image", ("bf16_image",), "torch.autocast bfloat16 in the image encoder only; text encoder, fusion and "
        "box head (query selection, scores) in fp32"),
    Arm("fp16-autocast", ("fp16",), "torch.autocast float16", devices=("cuda",)),
    Arm("int8-dynamic", ("int8",), "dynamic int8 quantization of nn.Linear (quantize_dynamic)", devices=("cpu",)),
    Arm("int8-except-text", ("int8_except_text",), "dynamic int8 quantization of nn.Linear except the text "
        "encoder's (it stays fp32)", devices=("cpu",)),
    Arm("text-cache", ("text_cache",), "fixed prompt set: text embeddings computed once, passed as text_tokens"),
    Arm("compile-max-autotune", ("compile_max_autotune",), "torch.compile mode='max-autotune' (inductor with "
        "GEMM autotuning); set-up includes compilation and tuning", devices=("cuda",), isolated=True),
    Arm("cuda-graphs", ("cuda_graphs",), "torch.compile mode='reduce-overhead': the forward replayed as a CUDA "
        "graph (no per-kernel launch cost); set-up includes compilation and graph capture", devices=("cuda",),
        isolated=True),
    Arm("bf16+cuda-graphs", ("inference_mode", "bf16", "text_cache", "cuda_graphs"), "bf16 autocast + cached "
        "text + CUDA graphs (compile reduce-overhead)", devices=("cuda",), isolated=True),
    Arm("compile", ("compile",), "torch.compile, default backend (inductor); set-up includes compilation",
        isolated=True),
    # before it was added (2026-11-29, optimized at batch 8, 2 cores, one process each): 1.24-1.32x over eager *with*
    # cached text, parity 2e-7, about 70 s of compilation (max-autotune on top: 3% faster for 200 s of tuning); in the
    # default profile (3 processes, against plain eager): 1.16x [1.10, 1.16]
    Arm("compile-frozen+text-cache", ("compile_frozen", "text_cache"), "torch.compile (inductor) with freezing: "
        "weights folded in as constants, prepacked for oneDNN on the CPU; cached text; set-up includes compilation",
        isolated=True),
    Arm("onnx-ort", ("onnx",), "torch.onnx.export at fixed shapes, run with onnxruntime (ORT_ENABLE_ALL)",
        isolated=True),
    Arm("onnx-ort-int8-static", ("onnx", "int8_static"),
        "ONNX export + onnxruntime static int8 QDQ (per-channel weights, MinMax-calibrated activations)",
        devices=("cpu",), isolated=True),
    Arm("inference-mode+text-cache", ("inference_mode", "text_cache"), "both"),
    Arm("int8+text-cache", ("inference_mode", "int8", "text_cache"),
        "int8 dynamic Linear + cached text + inference_mode", devices=("cpu",)),
    Arm("int8-except-text+text-cache", ("inference_mode", "int8_except_text", "text_cache"),
        "int8 dynamic Linear except the text encoder + cached text + inference_mode", devices=("cpu",)),
    Arm("bf16+text-cache", ("inference_mode", "bf16", "text_cache"), "bf16 autocast + cached text + inference_mode"),
    Arm("bf16-image+text-cache", ("inference_mode", "bf16_image", "text_cache"),
        "bf16 autocast in the image encoder only (the rest fp32) + cached text + inference_mode"),
    Arm("fp16+text-cache", ("inference_mode", "fp16", "text_cache"), "fp16 autocast + cached text + inference_mode",
        devices=("cuda",)),
]}


def get_arm(name: str) -> Arm:
    if name not in ARMS:
        from ..errors import UsageError

        raise UsageError(f"unknown arm {name!r}; choose from {list(ARMS)}")
    return ARMS[name]


#: arm feature -> the autocast it asks for (``arm_precision``); an arm takes at most one
AUTOCAST_FEATURES = {"bf16": "bf16", "bf16_image": "bf16-image", "fp16": "fp16"}


def arm_precision(features) -> str:
    """The autocast an arm's ``features`` ask for: "bf16-image" (``ovd predict --precision bf16-image``), "bf16",
    "fp16" or "fp32". ``ValueError`` for more than one (the report's ``numerics`` would name another than runs)."""
    modes = [AUTOCAST_FEATURES[f] for f in AUTOCAST_FEATURES if f in set(features)]
    if len(modes) > 1:
        raise ValueError(f"an arm takes one autocast feature, got {sorted(set(features) & set(AUTOCAST_FEATURES))}")
    return modes[0] if modes else "fp32"


def precision_context(precision: str, device, model):
    """The context an arm's forward (and its cached text encoding) runs under: bf16-image through
    ``ovd.batch_predict.autocast_for`` (what predict runs: the image encoder of ``model`` only), the others through
    the training step's ``autocast`` (``bench.common.autocast``; fp32 a no-op). ``ValueError`` for another name
    (the training step's ``autocast`` would run any name it does not know as bf16 over the whole forward)."""
    if precision == "bf16-image":
        import torch

        from ovd.batch_predict import autocast_for

        return autocast_for(precision, torch.device(device), model)
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision {precision!r}: accepted: fp32, bf16, bf16-image, fp16")
    from bench.common import autocast

    return autocast(precision, device)


def dynamic_int8_mode(features) -> str | None:
    """The ``--quantize`` mode (``"int8"`` or ``"int8-except-text"``) an arm's ``features`` ask for, or None."""
    modes = [DYNAMIC_INT8_FEATURES[f] for f in DYNAMIC_INT8_FEATURES if f in features]
    if len(modes) > 1:
        raise ValueError(f"an arm takes one dynamic int8 feature, got {sorted(set(features) & set(DYNAMIC_INT8_FEATURES))}")
    return modes[0] if modes else None


# -- parity ------------------------------------------------------------------------------------

def _probs(out: dict):
    import torch

    p = torch.as_tensor(out["pred_logits"]).float().sigmoid()
    mask = out.get("text_mask")
    if mask is not None:
        p = p * torch.as_tensor(mask)[:, None, :].to(p.dtype)
    return p


def parity(reference: dict, output: dict, tolerance: float | None = None) -> dict:
    """Max absolute differences of an arm's output against the reference.

    Both dicts hold pred_boxes (B, Q, 4), pred_logits (B, Q, T) and optionally text_mask (B, T)
    (True = real token; the reference's is used for both). Returns boxes_max_abs / probs_max_abs
    (query order as produced) and boxes_max_abs_matched / probs_max_abs_matched (queries matched
    one-to-one per image by the Hungarian algorithm on box L1 + probability L1). With ``tolerance``,
    also ``agreement``: the fraction of matched query pairs whose box and probabilities are all within
    it (1.0 = every query reproduced; lower = some top-k proposals were swapped for others)."""
    import torch
    from scipy.optimize import linear_sum_assignment

    output = {**output, "text_mask": reference.get("text_mask")}
    rb, ob = torch.as_tensor(reference["pred_boxes"]).float(), torch.as_tensor(output["pred_boxes"]).float()
    rp, op = _probs(reference), _probs(output)
    if rb.shape != ob.shape or rp.shape != op.shape:
        raise ValueError(f"output shapes {tuple(ob.shape)}/{tuple(op.shape)} differ from the reference's "
                         f"{tuple(rb.shape)}/{tuple(rp.shape)}")
    res = {"boxes_max_abs": float((rb - ob).abs().max()), "probs_max_abs": float((rp - op).abs().max())}
    mb = mp = 0.0
    agree = total = 0
    for i in range(rb.shape[0]):
        cost = torch.cdist(rb[i], ob[i], p=1) + torch.cdist(rp[i], op[i], p=1)
        r, c = linear_sum_assignment(cost.numpy())
        db = (rb[i][r] - ob[i][c]).abs().amax(-1)  # (Q,) per matched pair
        dp = (rp[i][r] - op[i][c]).abs().amax(-1) if rp.shape[-1] else torch.zeros_like(db)
        mb, mp = max(mb, float(db.max())), max(mp, float(dp.max()))
        if tolerance is not None:
            agree += int(((db <= tolerance) & (dp <= tolerance)).sum())
            total += len(r)
    res.update(boxes_max_abs_matched=mb, probs_max_abs_matched=mp)
    if tolerance is not None:
        res["agreement"] = agree / total if total else 1.0
    return res


def within_tolerance(diffs: dict, tolerance: float) -> bool:
    """True when the matched box and probability differences are both <= tolerance."""
    return diffs["boxes_max_abs_matched"] <= tolerance and diffs["probs_max_abs_matched"] <= tolerance


# -- building arms -----------------------------------------------------------------------------

def randomize_zero_init(model, std: float = 0.02, seed: int = 1) -> int:
    """Give every all-zero Linear weight small random values (a random-weight model's box MLPs end
    in zero-initialized layers, which would make the boxes equal the anchors). Returns how many."""
    import torch

    g = torch.Generator().manual_seed(seed)
    n = 0
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and not m.weight.any():
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
                n += 1
    return n


def calibration_feeds(model, batch_size: int, n: int = CALIBRATION_BATCHES) -> list[tuple]:
    """``n`` held-out fixed synthetic batches (seeds 1..n; the parity batch is seed 0) through the model's
    input processor, as :class:`ovd.onnx_backend.OnnxDetector` calibration batches: (images (B, 3, S, S)
    float32, input_ids (B, T), attention_mask (B, T)) on the CPU."""
    from bench.common import make_batch

    out = []
    for seed in range(1, n + 1):
        b = make_batch(model, batch_size, "cpu", seed=seed)
        out.append((b.images, b.input_ids, b.attention_mask))
    return out


def _build_onnx(arm: Arm, model, images, ids, mask, device, workdir: Path, notes: dict):
    """The model as ``ovd predict --backend onnxruntime`` runs it (:class:`ovd.onnx_backend.OnnxDetector`:
    exported at this batch size, ``int8_static`` quantized on :func:`calibration_feeds`); returns the callable
    -> output dict. Fills ``notes`` (exporter, quantization, exported token buckets)."""
    from ovd.onnx_backend import OnnxDetector

    quantize = "int8" if "int8_static" in arm.features else "none"
    calibration = calibration_feeds(model, images.shape[0]) if quantize == "int8" else None
    (workdir / arm.name).mkdir(parents=True, exist_ok=True)
    det = OnnxDetector(model, batch_size=images.shape[0], quantize=quantize, calibration=calibration,
                       device=device, workdir=workdir / arm.name)

    def fn():
        return det(images, ids, mask)

    fn()  # export (and quantize) happen on the first call
    notes.update({k: v for k, v in det.notes.items() if k in ("exporter", "quantization", "exported")})
    return fn


def build_arm(arm: Arm, model, images, ids, mask, device, workdir: Path, compile_cache: Path | None = None) -> tuple:
    """(callable -> output dict, set-up seconds, notes). The callable runs one inference forward.

    ``compile_cache``: the Inductor cache folder of a compile arm (default ``workdir/inductor-cache``, fresh).
    ``notes["inductor_cache"]`` says whether it held anything before this compile: "cold" or "warm"."""
    import torch

    f = set(arm.features)
    notes: dict = {}
    t0 = time.perf_counter()
    if "onnx" in f:
        fn = _build_onnx(arm, model, images, ids, mask, device, workdir, notes)  # its first call included
        return fn, time.perf_counter() - t0, notes
    mutating = {"channels_last", *DYNAMIC_INT8_FEATURES, *COMPILE_FEATURES} & f
    m = copy.deepcopy(model) if mutating else model
    if "channels_last" in f:
        m = m.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    quantize = dynamic_int8_mode(f)
    if quantize is not None:
        # the transform `ovd predict --quantize int8[-except-text]` runs (one path: what the report accepts is
        # what users run)
        from ovd.batch_predict import prepare_for_inference

        m = prepare_for_inference(m, "fp32", quantize)
    precision = arm_precision(f)
    grad = torch.inference_mode if "inference_mode" in f else torch.no_grad
    text_tokens = None
    if "text_cache" in f:
        with torch.no_grad(), precision_context(precision, device, m):
            text_tokens = m.encode_text(ids, mask)
    compile_mode = compile_mode_of(f)
    if compile_mode is not None:
        import os

        from ovd.batch_predict import compile_for_inference

        # the set-up of a compile in an empty cache (cold) and in a filled one (warm: a later run on the same
        # machine) differ by minutes against seconds; the notes say which one this was
        cache = Path(compile_cache) if compile_cache is not None else workdir / "inductor-cache"
        notes["inductor_cache"] = "warm" if cache.is_dir() and any(cache.iterdir()) else "cold"
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
        m = compile_for_inference(m, compile_mode)  # what `ovd predict --compile` runs; in place, on the copy

    def fn():
        with grad(), precision_context(precision, device, m):
            return m(images, ids, mask, text_tokens=text_tokens)

    if compile_mode is not None:
        fn()  # compilation happens on the first call: part of the set-up
        if compile_mode == "reduce-overhead":
            fn()  # CUDA graphs are recorded on the second call: set-up too
    return fn, time.perf_counter() - t0, notes


def setup_metric(notes: dict | None) -> str:
    """The set-up row's name: ``setup_warm_s`` for a compile that found its Inductor cache filled, else ``setup_s``
    (a cold compile, or an arm with nothing to cache)."""
    return "setup_warm_s" if (notes or {}).get("inductor_cache") == "warm" else "setup_s"


#: An arm whose parity call and the warm call after it both take at least this many times fp32 eager's warm call
#: is timed in the first round only (``ArmsResult`` records ``timed_once``; the warm call was its warm-up). Its
#: processes, when there are several, still give it a spread. On the 2-core AVX2 EPYC the two bf16 arms (0.14x, no
#: native bf16; 9 s a call at batch 8) took 204 s of the default profile's 348 s of shared arm processes
#: (fc5d8fc): parity call, warm-up and two rounds each.
SLOW_ARM_FACTOR = 3.0


def is_slow_arm(call_s: float, reference_call_s: float | None) -> bool:
    """Whether one call of an arm took at least :data:`SLOW_ARM_FACTOR` x fp32 eager's warm call. ``measure``
    asks it of the parity call, and only then of a warm call too: a first call may carry one-time costs (kernel
    loading, CUDA algorithm choice), and an arm is marked slow only when warm it still is."""
    return reference_call_s is not None and reference_call_s > 0 and call_s >= SLOW_ARM_FACTOR * reference_call_s


def compile_mode_of(features) -> str | None:
    """The compile mode (:data:`COMPILE_FEATURES`) of an arm's features: "default", "frozen" (default + Inductor
    freezing), "max-autotune", "reduce-overhead" (CUDA graphs); None when it does not compile."""
    return next((mode for feature, mode in COMPILE_FEATURES.items() if feature in features), None)


# -- the measurement ---------------------------------------------------------------------------

@dataclass
class ArmsResult:
    """Per arm: ``calls_s`` (seconds per timed call), ``setup_s``, ``diffs`` (see :func:`parity`),
    ``tolerance``, ``parity_ok``, ``gain`` (x, reference median / arm median, this process),
    ``timed_once`` (why a slow arm got one round: :func:`is_slow_arm`), ``error`` or ``skipped``. Rows are
    emitted for the arms in ``emit`` only."""

    batch_size: int
    device: str
    threads: int
    arms: dict = field(default_factory=dict)
    emit: list = field(default_factory=list)

    def rows(self) -> list[Row]:
        out = []
        B = self.batch_size
        for name in self.emit:
            a = self.arms.get(name, {})
            base = f"arm/{name}"
            extra = {"batch_size": B, "features": a.get("features"), "tolerance": a.get("tolerance"),
                     "threads": self.threads, "device": self.device, "reference": REFERENCE}
            if a.get("timed_once"):
                extra["timed_once"] = a["timed_once"]
            if a.get("skipped"):
                out.append(measured(f"{base}/gain", None, "x", extra, status="not-measured", error=a["skipped"]))
                continue
            if a.get("error"):
                out.append(measured(f"{base}/gain", None, "x", extra, status="error", error=a["error"]))
                continue
            calls = a["calls_s"]
            med = quantile(calls, 0.5)
            out += [
                measured(f"{base}/fps_b{B}", B / med, "images/s", {**extra, "calls": calls}),
                measured(f"{base}/latency_p50_ms", med * 1e3, "ms", extra),
                measured(f"{base}/gain", a["gain"], "x", extra),
                # a warm Inductor cache's set-up is its own row: a median over cold and warm processes means neither
                measured(f"{base}/{setup_metric(a.get('notes'))}", a["setup_s"], "s", extra),
            ]
            for k, v in a.get("diffs", {}).items():
                unit = "fraction of queries" if k == "agreement" else "abs diff"
                out.append(measured(f"{base}/{k}", v, unit, extra))
            if "parity_ok" in a:
                out.append(measured(f"{base}/parity_ok", float(a["parity_ok"]), "bool",
                                    {**extra, "notes": a.get("notes")}))
        return out


def measure(spec: ArmsSpec | dict) -> ArmsResult:
    """The arms of :class:`bench.measure.specs.ArmsSpec` (the reference is always built and timed;
    rows for ``emit``, default the reference and every arm given)."""
    import torch

    from bench.common import build_model, make_batch, now, resolve_device
    from bench.measure.timing import time_calls

    spec = ArmsSpec.coerce(spec)
    device = resolve_device(spec.device)
    ref_call_s = None  # fp32 eager's warm call (its parity call when warmup is 0): the slow-arm rule's yardstick
    names = [get_arm(n).name for n in (spec.arms if spec.arms is not None else ARMS) if n != REFERENCE]
    emit = list(spec.emit or [REFERENCE] + names)
    B = spec.batch_size
    warmup, rounds, iters = spec.warmup, spec.rounds, spec.iters
    model = build_model(spec.source.preset, spec.source.overrides, device).eval()
    randomize_zero_init(model)
    model.to(device)
    batch = make_batch(model, B, device)
    images, ids, mask = batch.images, batch.input_ids, batch.attention_mask
    result = ArmsResult(B, str(device), torch.get_num_threads(), emit=emit)
    fns = {}
    cache = Path(spec.compile_cache) if spec.compile_cache is not None else None
    if cache is not None and spec.compile_cache_reset and cache.exists():
        shutil.rmtree(cache)  # this process's compile is the cold one the report names as the set-up
    with tempfile.TemporaryDirectory(prefix="ovd-arms-") as tmp:
        for name in [REFERENCE] + names:
            arm = get_arm(name)
            rec = {"features": list(arm.features), "tolerance": arm.tolerance}
            result.arms[name] = rec
            if device.type not in arm.devices:
                rec["skipped"] = f"{name} runs on {', '.join(arm.devices)} only"
                continue
            try:
                fn, setup_s, notes = build_arm(arm, model, images, ids, mask, device, Path(tmp), cache)
                t0 = now(device)
                out = fn()
                first_s = now(device) - t0
                if name == REFERENCE:
                    ref = {k: out[k].detach().float().cpu() for k in ("pred_logits", "pred_boxes")}
                    ref["text_mask"] = out["text_mask"].cpu()
                diffs = parity(ref, {k: (v.detach().cpu() if hasattr(v, "detach") else v) for k, v in out.items()
                                     if k in ("pred_logits", "pred_boxes", "text_mask")}, arm.tolerance)
                rec.update(setup_s=setup_s, notes=notes, diffs=diffs, parity_ok=within_tolerance(diffs, arm.tolerance))
                if name == REFERENCE:
                    ref_call_s = first_s if warmup == 0 else time_calls(fn, device, warmup - 1, 1)[0]
                else:
                    # a slow parity call is checked warm (a first call may only be loading kernels: CUDA picks
                    # its algorithms then); that timed call is the arm's first warm-up call either way
                    warm_s = time_calls(fn, device, 0, 1)[0] if warmup and is_slow_arm(first_s, ref_call_s) else None
                    if warm_s is not None and is_slow_arm(warm_s, ref_call_s):
                        # more rounds would repeat a verdict far from 1x (bf16 autocast without native bf16:
                        # 0.14x, 9 s a call at batch 8)
                        rec["timed_once"] = (f"parity call {first_s:.2f} s and warm call {warm_s:.2f} s >= "
                                             f"{SLOW_ARM_FACTOR:g}x fp32 eager's {ref_call_s:.2f} s: timed in the "
                                             f"first round only")
                    else:
                        for _ in range(warmup - (warm_s is not None)):
                            fn()
                fns[name] = fn
            except Exception as err:  # noqa: BLE001  (recorded; the other arms go on)
                rec["error"] = f"{type(err).__name__}: {str(err)[:1500]}"
                if name == REFERENCE:
                    raise
        order = list(fns)
        times: dict = {n: [] for n in order}
        for r in range(rounds):
            # after the first round, rotate over the arms still timed (slow ones sat out)
            active = [n for n in order if r == 0 or not result.arms[n].get("timed_once")]
            k = r % len(active)
            for name in active[k:] + active[:k]:
                try:
                    times[name] += time_calls(fns[name], device, 0, iters)
                except Exception as err:  # noqa: BLE001
                    result.arms[name]["error"] = f"{type(err).__name__}: {str(err)[:1500]}"
        ref_med = quantile(times[REFERENCE], 0.5)
        for name in order:
            rec = result.arms[name]
            if rec.get("error") or not times[name]:
                continue
            rec["calls_s"] = times[name]
            rec["gain"] = ref_med / quantile(times[name], 0.5)
    return result
