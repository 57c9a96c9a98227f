"""A thin LightningModule over :class:`~ovd.models.detector.OpenVocabDetector`.

Training runs :class:`~ovd.training.step.TrainStep` (manual optimization): the same step object the
benchmark times, owning precision (autocast, GradScaler), gradient clipping, the optimizer's parameter
groups and the progress schedule; so the Trainer runs at "32-true" with no ``gradient_clip_val``
(:func:`ovd.training.run.trainer_precision` says so). Validation/test share one forward+loss path.
Namespaced log keys (``train/total_loss``, ``val/mAP50``...). Checkpoints carry the config as a plain dict
so they load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch

from ..config import DetectorConfig
from ..models.detector import OpenVocabDetector
from .losses import build_criterion
from .metrics import GroundingEvaluator
from .schedules import onecycle_progress
from .step import NonFiniteLossError, ProgressSchedule, TrainStep, autocast, build_optimizer, resolve_precision

__all__ = ["DetectorModule", "NonFiniteLossError", "load_checkpoint", "read_checkpoint"]


class DetectorModule(L.LightningModule):
    def __init__(self, config: dict | DetectorConfig, total_steps: int | None = None,
                 time_budget_s: float | None = None) -> None:
        super().__init__()
        if isinstance(config, dict):
            config = DetectorConfig.from_dict(config)
        self.config = config
        # Only plain data goes into the checkpoint: it must load with weights_only=True.
        self.save_hyperparameters({"config": config.to_dict(), "total_steps": total_steps,
                                   "time_budget_s": time_budget_s})
        self.model = OpenVocabDetector.from_config(config)
        self.criterion = build_criterion(config.loss)
        self.evaluator = GroundingEvaluator()
        self.total_steps = total_steps
        self.time_budget_s = time_budget_s
        self.train_seconds = 0.0  # advanced by TimeBudget in time-budgeted runs
        self.automatic_optimization = False  # TrainStep does backward, clipping, optimizer and schedule
        self._train_step: TrainStep | None = None

    # -- progress and optimizers ---------------------------------------------------------
    def progress(self) -> float:
        """Fraction of the training budget used, in [0, 1] (drives the LR schedule)."""
        if self.time_budget_s:
            return min(1.0, self.train_seconds / self.time_budget_s)
        total = self.total_steps
        if not total and self._trainer is not None:
            total = self.trainer.estimated_stepping_batches
        if not total or not math.isfinite(total):
            return 0.0
        if self.config.train.scheduler == "onecycle" and total >= 2:
            # torch's OneCycleLR step indexing, so a step-budgeted "onecycle" run has exactly its LR and momentum
            return onecycle_progress(min(self.global_step, int(total) - 1), int(total))
        return min(1.0, self.global_step / total)

    def configure_optimizers(self):
        optimizer = build_optimizer(self.model, self.config.train)
        scheduler = ProgressSchedule(optimizer, self.config.train, self.progress)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    @property
    def precision_name(self) -> str:
        """What runs: "fp32", "fp16" or "bf16" (``train.precision`` on this module's device)."""
        return resolve_precision(self.config.train.precision, self.device.type)

    def train_step(self) -> TrainStep:
        """The shared training step over Lightning's optimizer and scheduler (built once per fit)."""
        optimizer = self.optimizers()
        if self._train_step is None or self._train_step.optimizer is not optimizer:
            self._train_step = TrainStep(self.model, self.criterion, optimizer, self.lr_schedulers(),
                                         precision=self.precision_name, grad_clip=self.config.train.grad_clip,
                                         device_type=self.device.type, backward=self.manual_backward,
                                         compile_forward=self.config.train.compile)
        return self._train_step

    # -- steps ---------------------------------------------------------------------------
    def forward(self, batch: dict) -> dict:
        """A collated batch (see ``GroundingCollator``) -> the detector's outputs."""
        return self.model(batch["images"], batch["input_ids"], batch["attention_mask"])

    def _eval_step(self, batch: dict, stage: str) -> dict:
        with autocast(self.precision_name, self.device.type):
            outputs = self(batch)
        losses = self.criterion(outputs, batch["targets"])
        self.log(f"{stage}/total_loss", losses["total_loss"], batch_size=batch["images"].shape[0],
                 on_step=False, on_epoch=True, sync_dist=True)
        return outputs

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        step = self.train_step()
        step.steps = self.global_step  # the step number in NonFiniteLossError's message
        losses = step(batch)
        self.log("train/total_loss", losses["total_loss"], batch_size=batch["images"].shape[0], prog_bar=True,
                 on_step=True, on_epoch=False)
        self.log("lr", step.optimizer.param_groups[0]["lr"], on_step=True, prog_bar=False)
        return losses["total_loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.evaluator.update(self._eval_step(batch, "val"), batch["meta"])

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.evaluator.update(self._eval_step(batch, "test"), batch["meta"])

    def on_validation_epoch_start(self) -> None:
        self.evaluator.reset()

    on_test_epoch_start = on_validation_epoch_start

    def _log_metrics(self, stage: str) -> None:
        metrics = self.evaluator.compute()
        for key in ("mAP", "mAP50", "R@1", "R@5", "R@10", "R@1_merged"):
            if key in metrics:
                self.log(f"{stage}/{key}", float(metrics[key]), prog_bar=key in ("mAP50", "R@1"), sync_dist=False)
        self.evaluator.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    # -- exact resume -------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Swin's stochastic depth draws from torch's RNG; Lightning does not restore it on resume,
        # so without this a resumed run diverges from the uninterrupted one.
        checkpoint["torch_rng_state"] = torch.get_rng_state()
        checkpoint["train_seconds"] = self.train_seconds  # a time-budgeted run resumes with its clock
        if torch.cuda.is_available():
            checkpoint["cuda_rng_state"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.train_seconds = float(checkpoint.get("train_seconds", 0.0))
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"].cpu())
        if "cuda_rng_state" in checkpoint and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["cuda_rng_state"])

    # -- evaluation outside the Lightning loops (time-budgeted runs) --------------------
    @torch.no_grad()
    def evaluate(self, dataloader) -> dict[str, float]:
        """mAP/mAP50/R@k over a dataloader, in eval mode, restoring the previous mode."""
        was_training = self.training
        self.eval()
        evaluator = GroundingEvaluator().to(self.device)
        try:
            for batch in dataloader:
                batch = self.transfer_batch_to_device(batch, self.device, 0)
                with autocast(self.precision_name, self.device.type):
                    outputs = self(batch)
                evaluator.update(outputs, batch["meta"])
            return {k: float(v) for k, v in evaluator.compute().items()}
        finally:
            self.train(was_training)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The dict of an ``ovd train`` checkpoint, read safely (``weights_only=True``); a missing file is a
    ``FileNotFoundError``, anything else that is not such a checkpoint (a pickled object, an image, a torch
    file without a config) a one-line ``ValueError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head != b"PK\x03\x04" and head[:1] != b"\x80":  # torch.save's zip archive, or its legacy pickle
        raise ValueError(f"{path}: not a checkpoint (not a file written by torch.save); give a .ckpt that "
                         "`ovd train` wrote, e.g. RUN/checkpoints/last.ckpt")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # UnpicklingError and friends
        raise ValueError(
            f"{path}: refused to load: it is not a plain-weights checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Only checkpoints written by `ovd train` "
            "(tensors and plain data) are loaded; pickled objects are never executed.") from err
    hparams = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
    if not isinstance(hparams, dict) or "config" not in hparams or "state_dict" not in ckpt:
        raise ValueError(f"{path}: not an ovd checkpoint (no config or state_dict)")
    return ckpt


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> DetectorModule:
    """Load a training checkpoint safely (``weights_only=True``): a checkpoint that carries
    pickled Python objects is refused with a clear message instead of executing them."""
    ckpt = read_checkpoint(path, map_location)
    module = DetectorModule(ckpt["hyper_parameters"]["config"])
    module.load_state_dict(ckpt["state_dict"])
    return module
