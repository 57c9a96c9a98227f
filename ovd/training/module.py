"""A thin LightningModule over :class:`~ovd.models.detector.OpenVocabDetector`.

One shared step for train/val/test; namespaced log keys (``train/total_loss``, ``val/mAP50``...).
Checkpoints carry the config as a plain dict so they load with ``torch.load(weights_only=True)``.
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
from .schedules import lr_factor


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss is NaN or infinite; the last good checkpoint is kept."""


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
        return min(1.0, self.global_step / total)

    def configure_optimizers(self):
        cfg = self.config.train
        backbone = list(self.model.image_encoder.backbone_parameters())
        backbone_ids = {id(p) for p in backbone}
        text = [p for p in self.model.text_encoder.model.parameters() if p.requires_grad]
        text_ids = {id(p) for p in text}
        rest = [p for p in self.model.parameters()
                if p.requires_grad and id(p) not in backbone_ids and id(p) not in text_ids]
        groups = [{"params": rest, "lr": cfg.lr, "name": "head"},
                  {"params": [p for p in backbone if p.requires_grad], "lr": cfg.backbone_lr, "name": "backbone"}]
        if text:
            groups.append({"params": text, "lr": cfg.text_lr, "name": "text"})
        optimizer = torch.optim.AdamW(groups, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda _: lr_factor(cfg.scheduler, self.progress(), cfg.warmup_fraction))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- steps ---------------------------------------------------------------------------
    def forward(self, batch: dict) -> dict:
        return self.model(batch["images"], batch["input_ids"], batch["attention_mask"])

    def _shared_step(self, batch: dict, stage: str) -> tuple[dict, dict]:
        outputs = self(batch)
        losses = self.criterion(outputs, batch["targets"])
        bs = batch["images"].shape[0]
        self.log(f"{stage}/total_loss", losses["total_loss"], batch_size=bs, prog_bar=stage == "train",
                 on_step=stage == "train", on_epoch=stage != "train", sync_dist=stage != "train")
        return outputs, losses

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        _, losses = self._shared_step(batch, "train")
        loss = losses["total_loss"]
        if not torch.isfinite(loss):
            details = {k: float(v) for k, v in losses.items() if not torch.isfinite(v)}
            raise NonFiniteLossError(
                f"non-finite training loss at step {self.global_step} ({details}); stopping. The last good "
                "checkpoint is kept; lower train.lr or use train.precision=32-true and resume from it.")
        self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=True, prog_bar=False)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        outputs, _ = self._shared_step(batch, "val")
        self.evaluator.update(outputs, batch["meta"])

    def test_step(self, batch: dict, batch_idx: int) -> None:
        outputs, _ = self._shared_step(batch, "test")
        self.evaluator.update(outputs, batch["meta"])

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
        if torch.cuda.is_available():
            checkpoint["cuda_rng_state"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
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
                evaluator.update(self(batch), batch["meta"])
            return {k: float(v) for k, v in evaluator.compute().items()}
        finally:
            self.train(was_training)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> DetectorModule:
    """Load a training checkpoint safely (``weights_only=True``): a checkpoint that carries
    pickled Python objects is refused with a clear message instead of executing them."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # UnpicklingError and friends
        raise ValueError(
            f"{path}: refused to load: it is not a plain-weights checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Only checkpoints written by `ovd train` "
            "(tensors and plain data) are loaded; pickled objects are never executed.") from err
    hparams = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
    if "config" not in hparams or "state_dict" not in ckpt:
        raise ValueError(f"{path}: not an ovd checkpoint (no config or state_dict)")
    module = DetectorModule(hparams["config"])
    module.load_state_dict(ckpt["state_dict"])
    return module
