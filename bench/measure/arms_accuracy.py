"""Inference arms judged by accuracy on a trained checkpoint (MLPerf's rule for reduced-precision arms:
accepted when they keep >= 99% of the fp32 reference's accuracy; the verdict is
``bench.report.arms_accuracy.accuracy_verdict``).

Method, in one process: load the checkpoint (``ovd.training.module.load_checkpoint``, ``weights_only=True``),
then for every arm run the SAME evaluation code on the same first ``max_images`` samples of each split of
the built-in data (or ``data_root``), the arm applied around it:

- grounding protocol (:class:`ovd.training.metrics.GroundingEvaluator`, as ``DetectorModule.evaluate``):
  phrase ``mAP50`` and ``R@1`` over the split's first ``max_images`` records (captions);
- vocabulary protocol (:func:`ovd.training.vocabulary_eval.evaluate_vocabulary`): ``vocab_mAP50`` (and
  ``absent_fp_rate``, ``present_recall`` in the row's extra) over the split's first ``max_images`` images.

An arm (``bench.measure.arms.ARMS``) is applied as: ``bf16``/``fp16`` = ``torch.autocast`` around the
evaluation; ``bf16_image`` = the same around the image encoder only (``ovd predict --precision bf16-image``);
``int8`` = ``ovd.batch_predict.prepare_for_inference(model, "fp32", "int8")`` (dynamic int8
quantization of every ``nn.Linear`` on a copy: exactly what ``ovd predict --quantize int8`` runs),
``int8_except_text`` the same with the text encoder kept fp32 (``--quantize int8-except-text``);
``onnx`` = :class:`ovd.onnx_backend.OnnxDetector` (what ``ovd predict --backend onnxruntime`` runs: the
forward exported and run by onnxruntime), with ``int8_static`` its static int8 QDQ graph calibrated on the
first :data:`CALIBRATION_IMAGES` training images with their captions (never an evaluated image);
``inference_mode`` = ``torch.inference_mode`` instead of ``torch.no_grad``; ``text_cache`` changes no
number (the text encoder runs the same math once instead of per call; the vocabulary protocol already
caches it), so it is evaluated as the arm without it. The reference is fp32 eager (``torch.no_grad``) and is
always evaluated. Arms that cannot run on the device (fp16 on the CPU, int8 on CUDA) and arms whose
features are not applied here (compile, channels_last: fp32 math, parity-checked by ``arms``) get
``not-measured`` rows with the reason.

Rows: ``arm_acc/{arm}/{split}/{metric}``, metric in ``mAP50`` (unit "mAP"), ``R@1`` (unit "", a fraction),
``vocab_mAP50`` (unit "mAP"); all fractions in [0, 1]. The grounding rows' extra holds ``num_phrases``, the
phrases judged (one phrase moves R@1 by 1/num_phrases).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.measure.specs import Spec, SpecError, _choice, _positive_int
from bench.results import Row, measured

PROTOCOLS = ("grounding", "vocabulary")
GROUNDING_METRICS = ("mAP50", "R@1")
VOCAB_METRICS = ("vocab_mAP50",)
VOCAB_EXTRA = ("absent_fp_rate", "present_recall")
UNITS = {"mAP50": "mAP", "R@1": "", "vocab_mAP50": "mAP"}
#: features an accuracy arm may have; text_cache changes no number (module docstring)
APPLIED_FEATURES = {"inference_mode", "bf16", "bf16_image", "fp16", "int8", "int8_except_text", "text_cache", "onnx",
                    "int8_static"}
CALIBRATION_IMAGES = 32  # training images (with their captions) that calibrate the static int8 graph


@dataclass(frozen=True, kw_only=True)
class ArmsAccuracySpec(Spec):
    """Accuracy of inference arms on a checkpoint (no model source: the checkpoint carries its config)."""

    checkpoint: str  # a checkpoint written by `ovd train` / the trainer (state_dict + hyper_parameters.config)
    arms: tuple = ("eager", "bf16-autocast", "int8-dynamic")  # bench.measure.arms.ARMS names; eager always runs
    splits: tuple = ("val", "novel")
    max_images: int = 100  # first N records (grounding) / images (vocabulary) of each split
    protocols: tuple = PROTOCOLS
    batch_size: int = 8  # images per forward
    data_root: str | None = None  # None: the built-in synthetic set (flickr30k layout)
    # how the checkpoint was (or is to be) trained: {"preset", "overrides", "seed", "budget_s"}. When given, the
    # checkpoint is reused only if its fingerprint (ovd.training.reuse: config, data, seed, budget) matches,
    # else it is trained here first; None: the checkpoint must exist.
    train: dict | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        o = self._owner()
        for name in ("arms", "splits", "protocols"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
                raise SpecError(f"{o}: {name} must be a non-empty list, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        if not isinstance(self.checkpoint, str) or not self.checkpoint:
            raise SpecError(f"{o}: checkpoint must be a path to a checkpoint file, got {self.checkpoint!r}")
        from bench.measure.arms import ARMS

        for arm in self.arms:
            _choice(o, "arms[]", arm, list(ARMS))
        for protocol in self.protocols:
            _choice(o, "protocols[]", protocol, PROTOCOLS)
        for split in self.splits:
            if not isinstance(split, str) or not split:
                raise SpecError(f"{o}: splits[] must be split names, got {split!r}")
        _positive_int(o, "max_images", self.max_images)
        _positive_int(o, "batch_size", self.batch_size)
        if self.train is not None:
            if not isinstance(self.train, dict) or not isinstance(self.train.get("preset"), str):
                raise SpecError(f"{o}: train must be a dict with a preset name, got {self.train!r}")
            unknown = set(self.train) - {"preset", "overrides", "seed", "budget_s"}
            if unknown:
                raise SpecError(f"{o}: train has unknown keys {sorted(unknown)}; accepted: preset, overrides, seed, "
                                "budget_s")


@dataclass
class ArmsAccuracyResult:
    """``arms``: arm name -> {"features": [...], and either "splits": {split: {metric: fraction}} or
    "skipped" (why not measured) or "error"}. ``reference``: the fp32 arm's name."""

    checkpoint: str
    device: str
    max_images: int
    splits: list
    protocols: list
    reference: str = "eager"
    arms: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)  # {"reused": bool, "reason": why it was (re)trained} when trained

    def _metrics(self) -> list[str]:
        out = []
        if "grounding" in self.protocols:
            out += list(GROUNDING_METRICS)
        if "vocabulary" in self.protocols:
            out += list(VOCAB_METRICS)
        return out

    def rows(self) -> list[Row]:
        out = []
        for name, rec in self.arms.items():
            for split in self.splits:
                extra = {"checkpoint": self.checkpoint, "device": self.device, "max_images": self.max_images,
                         "features": rec.get("features"), "reference": self.reference, **self.provenance}
                values = (rec.get("splits") or {}).get(split)
                for metric in self._metrics():
                    key = f"arm_acc/{name}/{split}/{metric}"
                    reason = rec.get("skipped") or rec.get("error") or (values or {}).get("_error")
                    if reason or values is None or metric not in values:
                        status = "not-measured" if rec.get("skipped") else "error"
                        out.append(measured(key, None, UNITS[metric], extra, status=status,
                                            error=reason or f"{metric} not computed on {split}"))
                        continue
                    more = {k: values[k] for k in VOCAB_EXTRA if k in values and metric == "vocab_mAP50"}
                    more.update({k: values[k] for k in ("num_records", "num_images") if k in values})
                    if metric in GROUNDING_METRICS and "num_phrases" in values:
                        more["num_phrases"] = values["num_phrases"]
                    out.append(measured(key, float(values[metric]), UNITS[metric], {**extra, **more}))
        return out


# -- applying an arm -------------------------------------------------------------------------

def arm_runner(arm, model, device, batch_size: int = 8, calibration: list | None = None) -> tuple:
    """(the model to evaluate, a context factory to run it under) for an arm with features in
    ``APPLIED_FEATURES``. int8 goes through ``ovd.batch_predict.prepare_for_inference`` (a quantized
    copy; ``model`` is not changed); onnx through :class:`ovd.onnx_backend.OnnxDetector` (exported at
    ``batch_size``; with int8_static calibrated on ``calibration``); bf16/fp16 add ``torch.autocast``, bf16_image
    the image encoder's only (``ovd.batch_predict.autocast_for``, as ``--precision bf16-image``)."""
    import torch

    from bench.measure.arms import arm_precision, dynamic_int8_mode, precision_context
    from ovd.batch_predict import prepare_for_inference

    f = set(arm.features)
    if "onnx" in f:
        from ovd.onnx_backend import OnnxDetector

        model = OnnxDetector(model, batch_size=batch_size, quantize="int8" if "int8_static" in f else "none",
                             calibration=calibration if "int8_static" in f else None, device=device)
    elif (quantize := dynamic_int8_mode(f)) is not None:
        model = prepare_for_inference(model, "fp32", quantize)
    precision = arm_precision(f)
    grad = torch.inference_mode if "inference_mode" in f else torch.no_grad

    @contextlib.contextmanager
    def context():
        with grad(), precision_context(precision, device, model):
            yield

    return model, context


def training_calibration(dm, n_images: int = CALIBRATION_IMAGES) -> list[tuple]:
    """The first ``n_images`` training samples (images, input_ids, attention_mask: the collator's batches,
    CPU) of the datamodule ``dm``: the static int8 arm's calibration data."""
    out, seen = [], 0
    for batch in dm.dataloader_for("train"):
        k = min(n_images - seen, batch["images"].shape[0])
        out.append((batch["images"][:k], batch["input_ids"][:k], batch["attention_mask"][:k]))
        seen += k
        if seen >= n_images:
            break
    if not out:
        raise ValueError("no training image to calibrate the static int8 arm on")
    return out


def why_not(arm, device) -> str | None:
    """The reason an arm is not measured here on ``device``, or None."""
    if device.type not in arm.devices:
        return f"{arm.name} runs on {', '.join(arm.devices)} only (this run: {device.type})"
    other = set(arm.features) - APPLIED_FEATURES
    if other:
        return (f"{arm.name}: {', '.join(sorted(other))} not applied by the accuracy measurement (fp32 math; "
                "its output parity is checked by the `arms` measurement)")
    return None


# -- the evaluation (the same code for every arm) -------------------------------------------------

def grounding_metrics(model, loader, device, context: Callable) -> dict:
    """Phrase-grounding mAP50 / R@1 (fractions) of ``model`` over ``loader`` (``GroundingCollator`` batches:
    images (B, 3, H, W), input_ids / attention_mask (B, T), meta), each forward under ``context()``."""
    from ovd.training.metrics import GroundingEvaluator

    evaluator = GroundingEvaluator().to(device)
    records = 0
    for batch in loader:
        with context():
            out = model(batch["images"].to(device), batch["input_ids"].to(device),
                        batch["attention_mask"].to(device))
        evaluator.update(out, batch["meta"])
        records += len(batch["meta"])
    scores = {k: float(v) for k, v in evaluator.compute().items()}
    # num_phrases: R@1's resolution (one phrase is 1/num_phrases of it), which the report sets beside the rule
    return {**{k: scores[k] for k in GROUNDING_METRICS}, "num_records": records,
            "num_phrases": int(scores.get("num_phrases", 0))}


def vocabulary_metrics(model, dataset, device, context: Callable, batch_size: int, max_images: int) -> dict:
    """vocab_mAP50, absent_fp_rate, present_recall (fractions) and num_images of the vocabulary protocol,
    the whole evaluation under ``context()``."""
    from ovd.training.vocabulary_eval import evaluate_vocabulary

    with context():
        scores = evaluate_vocabulary(model, dataset, batch_size=batch_size, device=device, max_images=max_images)
    return {k: float(scores[k]) for k in (*VOCAB_METRICS, *VOCAB_EXTRA, "num_images")}


def evaluate_arm(model, dm, spec: ArmsAccuracySpec, device, context: Callable) -> dict:
    """{split: {metric: value}} for one arm; a split that fails records "_error" and the others go on."""
    from ovd.data.readers import load_records

    out = {}
    for split in spec.splits:
        try:
            values = {}
            if "grounding" in spec.protocols:
                values.update(grounding_metrics(model, dm.dataloader_for(split), device, context))
            if "vocabulary" in spec.protocols:
                # every record of the split: the prompt is the whole split's vocabulary (max_images cuts images)
                records = load_records(dm.root, dm.format, split, image_dir=dm.image_dir)
                values.update(vocabulary_metrics(model, records, device, context, spec.batch_size, spec.max_images))
        except Exception as err:  # noqa: BLE001  (recorded in the rows; the other splits go on)
            values = {"_error": f"{type(err).__name__}: {str(err)[:800]}"}
        out[split] = values
    return out


def ensure_checkpoint(spec: ArmsAccuracySpec, device) -> dict:
    """Reuse ``spec.checkpoint`` when its fingerprint matches ``spec.train`` (config, data, seed, budget), else
    train it now (:func:`ovd.training.reuse.train_or_reuse`). Returns {"checkpoint_reused": bool,
    "checkpoint_trained_because": reason or None}."""
    from bench.common import build_config
    from ovd.training.reuse import train_or_reuse

    t = spec.train
    config = build_config(t["preset"], t.get("overrides"), device)
    out = train_or_reuse(config, spec.checkpoint, data_root=spec.data_root, seed=int(t.get("seed", 0)),
                         budget_s=float(t.get("budget_s", 60)))
    return {"checkpoint_reused": bool(out["reused"]), "checkpoint_trained_because": out["reason"]}


def measure(spec: ArmsAccuracySpec | dict) -> ArmsAccuracyResult:
    """Evaluate the reference and every arm of ``spec`` on the checkpoint (module docstring)."""
    from bench.common import resolve_device
    from bench.measure.arms import REFERENCE, get_arm
    from ovd.training.module import load_checkpoint
    from ovd.training.run import build_datamodule, limit_threads

    spec = ArmsAccuracySpec.coerce(spec)
    device = resolve_device(spec.device)
    limit_threads()
    provenance = ensure_checkpoint(spec, device) if spec.train is not None else {}
    module = load_checkpoint(spec.checkpoint)  # weights_only=True
    model = module.model.to(device).eval()
    # grounding: the first max_images records; the vocabulary protocol reads every record (its prompt is the
    # split's whole vocabulary) and cuts to max_images images itself
    dm = build_datamodule(module.config, spec.data_root, limit=spec.max_images, batch_size=spec.batch_size,
                          num_workers=0)
    result = ArmsAccuracyResult(spec.checkpoint, str(device), spec.max_images, list(spec.splits),
                                list(spec.protocols), REFERENCE, provenance=provenance)
    names = [REFERENCE] + [n for n in spec.arms if n != REFERENCE]
    calibration = None
    for name in names:
        arm = get_arm(name)
        rec = result.arms[name] = {"features": list(arm.features)}
        reason = why_not(arm, device)
        if reason:
            rec["skipped"] = reason
            continue
        try:
            if "int8_static" in arm.features and calibration is None:
                calibration = training_calibration(dm)
            arm_model, context = arm_runner(arm, model, device, spec.batch_size, calibration)
            rec["splits"] = evaluate_arm(arm_model, dm, spec, device, context)
        except Exception as err:  # noqa: BLE001  (recorded; the other arms go on)
            if name == REFERENCE:
                raise
            rec["error"] = f"{type(err).__name__}: {str(err)[:800]}"
    return result
