"""Accuracy after a time-budgeted training run, and time to a target vocabulary mAP50 ("Training Time" row).

Rows: ``accuracy/<split>/<metric>`` for both protocols (grounding ``mAP50``, ``R@1``, ...; vocabulary
``vocab_mAP50``, ``absent_fp_rate``, ``present_recall``) on val and novel, and ``accuracy/time_to_target_s``.

Calls the trainer, ``ovd.training.run.train_and_evaluate`` (imported lazily: the suite must still
run its other measurements where the trainer is missing). Units: mAP/R@1 as fractions in [0, 1];
seconds of training wall time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.measure.specs import AccuracySpec
from bench.results import Row, measured


@dataclass
class AccuracyResult:
    """``final``: {"val/mAP50", "val/mAP", "val/R@1", "novel/mAP50", "novel/R@1", ...} fractions of the
    grounding protocol, and of the vocabulary protocol (``ovd.training.vocabulary_eval``):
    "val/vocab_mAP50", "val/vocab_mAP", "val/absent_fp_rate", "val/present_recall", "novel/..." ;
    ``curve``: the trainer's evaluations over time; ``time_to_target_s``: training seconds until
    val/vocab_mAP50 >= ``target_map50`` (None: not reached within ``budget_s``)."""

    budget_s: float
    target_map50: float | None
    final: dict = field(default_factory=dict)
    curve: list = field(default_factory=list)
    time_to_target_s: float | None = None
    train_seconds: float = 0.0
    steps: int = 0
    not_measured: str | None = None  # why no accuracy was measured (a factory without predict)
    not_trained: str | None = None  # a factory's predict() scored as it is: no training, no time to target

    def rows(self) -> list[Row]:
        if self.not_measured:
            return [measured("accuracy/val/mAP50", None, "fraction", status="not-measured", error=self.not_measured)]
        extra = {"budget_s": self.budget_s, "target_map50": self.target_map50, "steps": self.steps,
                 "train_seconds": self.train_seconds}
        if self.not_trained:
            extra["trained"] = False  # the report lists it apart from the training runs (bench.report.accuracy_data)
        out = []
        for key, value in self.final.items():
            if isinstance(value, (int, float)):
                out.append(measured(f"accuracy/{key}", float(value), "fraction", extra))
        tt_extra = {**extra, "curve": self.curve}
        if self.not_trained:
            out.append(measured("accuracy/time_to_target_s", None, "s", extra, status="not-measured",
                                error=self.not_trained))
        elif self.time_to_target_s is None:
            out.append(measured("accuracy/time_to_target_s", None, "s", tt_extra, status="not-measured",
                                error=f"target val/vocab_mAP50 >= {self.target_map50} not reached in {self.budget_s:.0f} s"))
        else:
            out.append(measured("accuracy/time_to_target_s", float(self.time_to_target_s), "s", tt_extra))
        return out


def measure(spec: AccuracySpec | dict) -> AccuracyResult:
    """Preset models: train for ``budget_s`` and evaluate (the trainer). Factory / hub models are not
    trained here; their accuracy is reported as not measured (see the row's error for why)."""
    from bench.common import build_config, resolve_device

    spec = AccuracySpec.coerce(spec)
    if not spec.is_preset:
        return _score_factory_predict(spec)

    try:
        from ovd.training.run import train_and_evaluate
    except ImportError as err:
        raise RuntimeError(f"the trainer (ovd.training.run.train_and_evaluate) is not available: {err}") from err
    device = resolve_device(spec.device)
    config = build_config(spec.source.preset, spec.source.overrides, device)
    budget = float(spec.budget_s)
    target = spec.target_map50
    out = train_and_evaluate(config, data_root=spec.data_root, max_time_s=budget,
                             eval_every_s=float(spec.eval_every_s or max(budget / 4, 10)),
                             seed=spec.seed, target_map50=target, progress=False,
                             checkpoint_path=spec.checkpoint_out)
    return AccuracyResult(budget, target, dict(out.get("final", {})), list(out.get("curve", [])),
                          out.get("time_to_target_s"), float(out.get("train_seconds", 0.0)), int(out.get("steps", 0)))


def _score_factory_predict(spec: AccuracySpec, batch_size: int = 8) -> AccuracyResult:
    """A factory or hub model is not trained by the suite: its ``predict(pil_images, prompts)`` is scored as it
    is on the first ``max_images`` val samples of the built-in data (or ``data_root``, Flickr30k layout), with
    each caption's phrases as the prompt, by the grounding protocol (Recall@k, MDETR's ANY-BOX and MERGED-BOX:
    a phrase's boxes are the returned boxes labelled with it, best score first). Boxes ``predict`` does not
    return (below its own threshold) count as misses."""
    from bench.common import resolve_device
    from bench.sources import build_under_test
    from ovd.data.dataset import GroundingDataset
    from ovd.data.readers import load_records
    from ovd.data.synthetic import ensure_synthetic_dataset
    from ovd.training.metrics import score_prediction_file

    mut = build_under_test(spec.source, resolve_device(spec.device), 1)
    if mut.predict is None:
        return AccuracyResult(0.0, None, not_measured=(
            "not measured: the factory's ModelUnderTest has no predict(pil_images, prompts); return one to be "
            "scored on the built-in data"))
    root = spec.data_root or ensure_synthetic_dataset()
    dataset = GroundingDataset(load_records(root, "flickr30k", "val"), split="val")
    samples = dataset.samples[: spec.max_images]
    predictions, truth = [], {}
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        prompts = [[p["text"] for p in s.phrases] for s in chunk]
        outputs = mut.predict([dataset.load_image(s) for s in chunk], prompts)
        for sample, phrases, out in zip(chunk, prompts, outputs):
            order = sorted(range(len(out["labels"])), key=lambda i: -float(out["scores"][i]))
            ranked = [[[float(v) for v in out["boxes"][i]] for i in order if out["labels"][i] == phrase]
                      for phrase in phrases]
            key = (str(sample.record.image_id), int(sample.record.sentence_id))
            predictions.append({"image_id": key[0], "sentence_id": key[1], "boxes": ranked})
            truth[key] = [p["gt_boxes_xyxy"] for p in sample.phrases]
    scores = score_prediction_file(predictions, truth)
    final = {f"val/{k}": v for k, v in scores.items() if k.startswith("R@")}
    return AccuracyResult(0.0, None, final, not_trained=(
        f"not trained by the suite: a factory's predict() is scored as it is ({len(samples)} val samples)"))
