"""Build a Lightning trainer for a config, and the time-budgeted "train, then report the curve"
entry point the benchmark's accuracy rows use."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from ..config import DetectorConfig
from .module import DetectorModule
from .step import LIGHTNING_PRECISIONS
from .step import resolve_precision as resolve_step_precision
from .vocabulary_eval import VOCAB_CURVE_KEYS, VOCAB_FINAL_KEYS, evaluate_vocabulary

log = logging.getLogger(__name__)


def resolve_precision(precision: str, accelerator: str) -> str:
    """Lightning's name of what the training step runs (the step itself applies it: see :func:`trainer_kwargs`);
    ``auto`` resolves by :func:`ovd.training.step.resolve_precision` (fp16 on a GPU, bf16 on a CPU with bf16
    matrix instructions, else fp32)."""
    if precision != "auto":
        return precision
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    resolved = resolve_step_precision(precision, "cuda" if on_gpu else "cpu")
    return {runs: name for name, runs in LIGHTNING_PRECISIONS.items()}[resolved]


def trainer_kwargs() -> dict:
    """What the Lightning Trainer must be given for :class:`~ovd.training.module.DetectorModule`: the shared
    training step (``ovd.training.step.TrainStep``) owns autocast, the GradScaler and gradient clipping, so the
    Trainer runs at "32-true" with no ``gradient_clip_val`` (Lightning refuses automatic clipping under
    manual optimization, and a second autocast would only hide which precision ran)."""
    return {"precision": "32-true"}


def limit_threads() -> None:
    """Keep BLAS pools from fighting torch's (DESIGN.md: 0.72 s -> 9.4 s per step otherwise)."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        pass


def build_datamodule(config: DetectorConfig, data_root: str | Path | None, data_format: str = "flickr30k",
                     limit: int | None = None, batch_size: int | None = None, num_workers: int | None = None):
    """The data module for a config; with no ``data_root`` the built-in synthetic set (generated
    once into the cache folder)."""
    from ..data.datamodule import GroundingDataModule
    from ..data.synthetic import ensure_synthetic_dataset
    from ..models.text_encoder import load_tokenizer

    if data_root is None:
        data_root = ensure_synthetic_dataset(progress=True)
        data_format = "flickr30k"
    cfg = config.train
    workers = cfg.num_workers if num_workers is None else num_workers
    return GroundingDataModule(
        root=str(data_root), format=data_format, tokenizer=load_tokenizer(config.text.name_or_path),
        max_tokens=config.text.max_tokens, image_size=config.image.image_size,
        batch_size=batch_size or cfg.batch_size, num_workers=workers,
        pin_memory=cfg.pin_memory and torch.cuda.is_available(),
        persistent_workers=cfg.persistent_workers and workers > 0, limit=limit, seed=cfg.seed,
        negative_phrases=cfg.negative_phrases, negative_rate=cfg.negative_rate,
        class_list_rate=cfg.class_list_rate, class_list_negatives=cfg.class_list_negatives,
        hard_negative_share=cfg.hard_negative_share)


def parse_duration(text: str, flag: str = "--max-time") -> float:
    """Seconds of a ``DD:HH:MM:SS`` duration (Lightning's ``max_time`` format); a one-line ``ValueError``
    naming ``flag`` otherwise."""
    import re

    match = re.fullmatch(r"(\d+):(\d\d):(\d\d):(\d\d)", text.strip())
    if not match:
        raise ValueError(f"{flag} {text}: expected DD:HH:MM:SS, e.g. 00:00:10:00 for ten minutes")
    days, hours, minutes, seconds = (int(g) for g in match.groups())
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise ValueError(f"{flag} {text}: must be longer than zero")
    return float(total)


def require_records(dm, split: str) -> None:
    """A one-line ``ValueError`` naming the split and the data root when the split holds no records
    (an empty split file, or ``limit`` 0), before a run that would train or score nothing."""
    if len(dm.dataset(split)) == 0:
        limit = f" after --limit {dm.limit}" if dm.limit is not None else ""
        raise ValueError(f"split {split!r} of {dm.root} ({dm.format}) has no records{limit}: nothing to "
                         "train or evaluate on; check its split file or choose another --data-root/--split")


#: Images of the val split the curve's vocabulary evaluation uses (the first ones, a fixed subset): one
#: vocabulary eval of all 200 built-in val images took 42 s on optimized-tiny on this 2-core CPU (3 prompts
#: x 200 images), too much every 60 training seconds; the final metrics use every image.
CURVE_VOCAB_IMAGES = 100


class TimeBudget(Callback):
    """Stops training after ``max_time_s`` seconds of *training* and, given an ``eval_loader``, evaluates every
    ``eval_every_s`` training seconds, recording a (seconds -> metrics) curve. Training seconds are the time
    inside training steps (``on_train_batch_start`` to ``on_train_batch_end``): evaluation, Lightning's
    validation loop and the wait for the next batch are not counted. They live on the module
    (``train_seconds``, saved in checkpoints), whose one-cycle schedule follows them
    (``DetectorModule(time_budget_s=max_time_s)``): :func:`train_and_evaluate` and ``ovd train --max-time``
    both train this way.

    Each point holds the grounding metrics of ``eval_loader`` (``val/mAP50``, ``val/R@1``, ...) and, with
    ``vocab_records`` (the val split's records or dataset), the vocabulary protocol's ``val/vocab_mAP50``,
    ``val/absent_fp_rate``, ``val/present_recall`` on its first ``vocab_max_images`` images. Time to target
    is the first point whose ``target_metric`` (default ``vocab_mAP50``) reaches ``target_map50``.
    """

    def __init__(self, max_time_s: float, eval_every_s: float | None = None, eval_loader=None,
                 target_map50: float | None = None,
                 progress: bool = True, vocab_records=None, vocab_max_images: int | None = CURVE_VOCAB_IMAGES,
                 target_metric: str = "vocab_mAP50") -> None:
        self.max_time_s = max_time_s
        self.eval_every_s = eval_every_s
        self.eval_loader = eval_loader
        self.target_map50 = target_map50
        self.progress = progress
        self.vocab_records = vocab_records
        self.vocab_max_images = vocab_max_images
        self.target_metric = target_metric
        self.curve: list[dict] = []
        self.time_to_target_s: float | None = None
        self._next_eval = eval_every_s if eval_loader is not None and eval_every_s else float("inf")
        self._last = None
        self.samples = 0

    def on_train_start(self, trainer, pl_module):
        if pl_module.train_seconds >= self.max_time_s:  # resumed from a run that had used its budget
            trainer.should_stop = True

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._last = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        pl_module.train_seconds += time.perf_counter() - self._last
        if trainer.world_size > 1:  # DDP: rank 0's clock, so every rank has the same LR and stops at the same step
            pl_module.train_seconds = float(trainer.strategy.broadcast(pl_module.train_seconds, src=0))
        self.samples += batch["images"].shape[0]
        done = pl_module.train_seconds >= self.max_time_s
        if self.eval_loader is not None and (pl_module.train_seconds >= self._next_eval or done):
            self._evaluate(trainer, pl_module)
            self._next_eval += self.eval_every_s
        if done:
            trainer.should_stop = True

    def _evaluate(self, trainer, pl_module) -> None:
        metrics = pl_module.evaluate(self.eval_loader)
        if self.vocab_records is not None:
            vocab = evaluate_vocabulary(pl_module.model, self.vocab_records, max_images=self.vocab_max_images)
            metrics.update({k: vocab[k] for k in VOCAB_CURVE_KEYS})
        point = {"seconds": round(pl_module.train_seconds, 2), "step": trainer.global_step, "samples": self.samples}
        point.update({f"val/{k}": v for k, v in metrics.items()})
        self.curve.append(point)
        if self.progress:
            log.info("t=%.0fs step=%d val/vocab_mAP50=%.3f val/mAP50=%.3f val/R@1=%.3f", point["seconds"],
                     point["step"], metrics.get("vocab_mAP50", float("nan")), metrics.get("mAP50", float("nan")),
                     metrics.get("R@1", float("nan")))
        if (self.target_map50 is not None and self.time_to_target_s is None
                and metrics.get(self.target_metric, 0.0) >= self.target_map50):
            self.time_to_target_s = point["seconds"]


def train_and_evaluate(config: DetectorConfig, data_root: str | None = None, max_time_s: float = 600,
                       eval_every_s: float = 60, seed: int = 0, target_map50: float | None = None,
                       splits=("val", "novel"), progress: bool = True, data_format: str = "flickr30k",
                       limit: int | None = None, accelerator: str = "auto", out_dir: str | None = None,
                       checkpoint_path: str | Path | None = None) -> dict:
    """Train ``config`` for ``max_time_s`` seconds of training time, evaluating on the val split
    every ``eval_every_s`` seconds; then evaluate every split in ``splits`` with both protocols: phrase
    grounding (``<split>/mAP50``, ``<split>/R@1``, ...) and the vocabulary protocol
    (:mod:`ovd.training.vocabulary_eval`: ``<split>/vocab_mAP50``, ``<split>/vocab_mAP``,
    ``<split>/absent_fp_rate``, ``<split>/present_recall``).

    ``time_to_target_s``: training seconds until the curve's ``val/vocab_mAP50`` (on the first
    :data:`CURVE_VOCAB_IMAGES` val images) reaches ``target_map50``.

    ``checkpoint_path``: where to write the trained weights (the format ``ovd train`` writes and
    :func:`ovd.training.module.load_checkpoint` reads; weights only), e.g. for judging inference arms on them.

    Returns {"curve": [{"seconds", "step", "samples", "val/mAP50", "val/mAP", "val/R@1", "val/vocab_mAP50",
    "val/absent_fp_rate", "val/present_recall", ...}], "final": {"<split>/<metric>": value},
    "time_to_target_s", "train_seconds", "steps", "samples", "precision", "target_metric"}.
    """
    limit_threads()
    L.seed_everything(seed, workers=True)
    dm = build_datamodule(config, data_root, data_format, limit=limit)
    dm.setup("fit")
    require_records(dm, dm.splits["train"])
    module = DetectorModule(config, time_budget_s=max_time_s)
    budget = TimeBudget(max_time_s, eval_every_s, dm.val_dataloader(), target_map50, progress,
                        vocab_records=dm.dataset(dm.splits["val"]))
    precision = resolve_precision(config.train.precision, accelerator)
    trainer = L.Trainer(
        accelerator=accelerator, devices=1, max_epochs=-1, max_steps=-1, callbacks=[budget], logger=False,
        enable_checkpointing=False, enable_progress_bar=progress, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=out_dir or os.getcwd(), **trainer_kwargs(),
    )
    trainer.fit(module, train_dataloaders=dm.train_dataloader())
    if checkpoint_path is not None:
        Path(checkpoint_path).parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(checkpoint_path, weights_only=True)
        from .reuse import training_fingerprint, write_fingerprint  # the sidecar that lets a later run reuse it

        fingerprint = training_fingerprint(config, data_root, data_format, seed, max_time_s, limit)
        write_fingerprint(checkpoint_path, fingerprint)
    final = {}
    for split in splits:
        try:
            loader = dm.dataloader_for(split)
        except Exception as err:  # a split may be absent from a user's dataset
            log.warning("split %r not evaluated: %s", split, err)
            continue
        for key, value in module.evaluate(loader).items():
            final[f"{split}/{key}"] = value
        vocab = evaluate_vocabulary(module.model, dm.dataset(split))
        final.update({f"{split}/{k}": vocab[k] for k in VOCAB_FINAL_KEYS})
    return {
        "curve": budget.curve, "final": final, "time_to_target_s": budget.time_to_target_s,
        "target_metric": f"val/{budget.target_metric}",
        "train_seconds": module.train_seconds, "steps": trainer.global_step, "samples": budget.samples,
        "precision": precision, "config": config.to_dict(),
    }


class StepClock(Callback):
    """Wall time of training steps ``warmup_steps + 1 .. warmup_steps + steps`` (``steps`` None: every step
    after the warm-up until training ends), from the end of the last untimed step to the end of the last timed
    one: the loader's time between steps included, validation excluded (the clock pauses while it runs).

    ``samples`` counts this process's images; under DDP every rank's batch has the same size (the
    DistributedSampler pads the shards), so :meth:`throughput` reports per-rank samples x world size."""

    def __init__(self, warmup_steps: int, steps: int | None = None) -> None:
        self.warmup_steps, self.steps = warmup_steps, steps
        self.start: float | None = None
        self.seconds: float | None = None
        self.samples = 0
        self.timed_steps = 0
        self._seen = 0
        self._paused_at: float | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        if self.warmup_steps == 0:
            self.start = time.perf_counter()

    def on_validation_start(self, trainer, pl_module) -> None:
        self._paused_at = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.start is not None and self._paused_at is not None:
            self.start += time.perf_counter() - self._paused_at  # validation is not training time
        self._paused_at = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._seen += 1
        if self._seen == self.warmup_steps:
            self.start = time.perf_counter()
        elif self._seen > self.warmup_steps and (self.steps is None or self.timed_steps < self.steps):
            self.samples += batch["images"].shape[0]
            self.timed_steps += 1
            self.seconds = time.perf_counter() - self.start

    def throughput(self, world_size: int = 1, threads_per_process: int | None = None) -> dict | None:
        """{"timed_steps", "seconds", "samples" (all processes), "samples_per_s", "world_size",
        "threads_per_process", "warmup_steps"}; None when no step after the warm-up ran."""
        if not self.timed_steps or not self.seconds:
            return None
        samples = self.samples * world_size
        return {"timed_steps": self.timed_steps, "seconds": self.seconds, "samples": samples,
                "samples_per_s": samples / self.seconds, "world_size": world_size,
                "threads_per_process": threads_per_process, "warmup_steps": self.warmup_steps}


def time_training_loop(config: DetectorConfig, steps: int, warmup_steps: int = 1, data_root: str | None = None,
                       data_format: str = "flickr30k", accelerator: str = "auto", seed: int = 0) -> dict:
    """End-to-end throughput of the loop ``ovd train`` runs (Lightning Trainer, the data module with its
    loader workers and collator, :class:`~ovd.training.step.TrainStep`), for a fixed number of steps on the
    built-in data (or ``data_root``). No validation, checkpoints or logger: those are per-epoch costs.

    Returns {"seconds": wall time of the timed steps, "samples", "steps", "samples_per_s", "batch_size"}.
    """
    if steps < 1 or warmup_steps < 0:
        raise ValueError(f"steps={steps} must be >= 1 and warmup_steps={warmup_steps} >= 0")
    limit_threads()
    L.seed_everything(seed, workers=True)
    dm = build_datamodule(config, data_root, data_format)
    dm.setup("fit")
    module = DetectorModule(config, total_steps=warmup_steps + steps)
    clock = StepClock(warmup_steps, steps)
    trainer = L.Trainer(accelerator=accelerator, devices=1, max_steps=warmup_steps + steps, max_epochs=-1,
                        callbacks=[clock], logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        default_root_dir=os.getcwd(), **trainer_kwargs())
    trainer.fit(module, train_dataloaders=dm.train_dataloader())
    if clock.timed_steps < steps:
        raise RuntimeError(f"the training loop stopped after {clock._seen} of {warmup_steps + steps} steps "
                           "(too few training samples for that many steps?)")
    return {"seconds": clock.seconds, "samples": clock.samples, "steps": steps,
            "samples_per_s": clock.samples / clock.seconds, "batch_size": config.train.batch_size}


class InterruptCheckpoint(Callback):
    """Ctrl-C (KeyboardInterrupt, and SIGTERM via the CLI) saves a checkpoint before exiting."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_exception(self, trainer, pl_module, exception) -> None:
        if isinstance(exception, KeyboardInterrupt) and trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # a full checkpoint (optimizer, schedule, loop state): --resume continues from it
            trainer.save_checkpoint(str(self.path), weights_only=False)
            log.warning("interrupted: checkpoint saved to %s; resume with --resume %s", self.path, self.path)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        # Interrupted inside a training step: its batch was handed out but not trained, and Lightning resumes by
        # running that batch again, so the train loader's resume state (ResumableDataLoader) must not count it.
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        unfinished = progress.ready - progress.processed
        if unfinished <= 0:
            return
        for state in checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {}).get("combined_loader", []):
            if isinstance(state, dict) and "batches" in state:
                state["batches"] = max(0, state["batches"] - unfinished)


class FinalLastCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, whose ``last.ckpt`` also holds the final step of a run that stopped
    between validations (a time budget or ``max_steps`` ending mid-epoch); Lightning's own writes it there
    only when no checkpoint was saved at all, so the steps after the last validation were missing from it."""

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):  # skipped: saved at this step
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def standard_callbacks(checkpoint_dir: str | Path, monitor: str = "val/mAP50", patience: int | None = None):
    """ModelCheckpoint (best by ``monitor`` plus ``last.ckpt``, the final step) and optional EarlyStopping."""
    callbacks = [FinalLastCheckpoint(dirpath=str(checkpoint_dir), filename="best-{step}", monitor=monitor,
                                     mode="max", save_top_k=1, save_last=True, auto_insert_metric_name=False)]
    if patience:
        callbacks.append(EarlyStopping(monitor=monitor, mode="max", patience=patience))
    return callbacks
