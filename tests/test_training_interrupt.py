"""Default-tier twins of slow tests in test_training_module.py (those run with ``--run-slow``):
Ctrl-C saving ``interrupted.ckpt`` in-process (the slow one sends SIGINT to a real ``ovd train``), and
the loss's DDP code path on a one-process gloo group (the slow one trains with two processes)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback

import ovd
from ovd.data.synthetic import write_synthetic_dataset
from ovd.training.module import DetectorModule, load_checkpoint
from ovd.training.run import InterruptCheckpoint, build_datamodule


class CtrlCAtStep(Callback):
    """Raises KeyboardInterrupt after training step ``step``, as a Ctrl-C arriving there would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            raise KeyboardInterrupt


def test_ctrl_c_in_training_saves_interrupted_ckpt(tmp_path):
    root = tmp_path / "synth"
    write_synthetic_dataset(root, seed=1, num_train=4, num_val=2, num_test=1, num_novel=1)
    cfg = ovd.get_config("optimized-tiny", {"train.batch_size": 2})
    module = DetectorModule(cfg, total_steps=50)
    ckpt = tmp_path / "checkpoints" / "interrupted.ckpt"
    trainer = L.Trainer(accelerator="cpu", max_steps=50, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        enable_checkpointing=False, callbacks=[InterruptCheckpoint(ckpt), CtrlCAtStep(2)])
    # Lightning turns a KeyboardInterrupt into a graceful stop (some versions exit with SystemExit).
    try:
        trainer.fit(module, datamodule=build_datamodule(cfg, root))
    except (KeyboardInterrupt, SystemExit):
        pass
    assert trainer.interrupted
    assert ckpt.exists()
    restored = load_checkpoint(ckpt)
    assert restored.config.name == "optimized-tiny"
    state = torch.load(ckpt, weights_only=True)
    assert state["global_step"] == 2


class CtrlCBeforeStep(Callback):
    """Raises KeyboardInterrupt once the batch of step ``step`` is fetched, before the step runs: a Ctrl-C or
    SIGTERM arriving inside a training step, before it changed anything."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            raise KeyboardInterrupt


@pytest.mark.parametrize("workers, interrupt, step", [(0, CtrlCAtStep, 2), (2, CtrlCBeforeStep, 4)])
def test_mid_epoch_resume_from_interrupted_ckpt_is_bit_identical(tmp_path, workers, interrupt, step):
    """3 steps an epoch; interrupted mid-epoch (after step 2 / as step 4 starts, with persistent worker processes),
    then resumed from interrupted.ckpt to step 5: the same weights as 5 steps straight. The train loader
    (ResumableDataLoader) skips the batches the interrupted epoch had trained, not one more, and does not shift
    torch's RNG (stochastic depth) as it starts."""
    root = tmp_path / "synth"
    write_synthetic_dataset(root, seed=1, num_train=6, num_val=1, num_test=1, num_novel=1)  # 12 captions
    overrides = {"train.batch_size": 4, "train.num_workers": workers, "train.persistent_workers": workers > 0}
    cfg = ovd.get_config("optimized-tiny", overrides)
    ckpt = tmp_path / "interrupted.ckpt"

    def run(callbacks=(), resume=None):
        L.seed_everything(0, workers=True)
        module = DetectorModule(cfg, total_steps=5)
        trainer = L.Trainer(accelerator="cpu", max_steps=5, logger=False, enable_progress_bar=False,
                            enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                            enable_checkpointing=False, callbacks=[InterruptCheckpoint(ckpt), *callbacks])
        try:
            trainer.fit(module, datamodule=build_datamodule(cfg, root), ckpt_path=resume, weights_only=True)
        except (KeyboardInterrupt, SystemExit):
            pass
        return module

    straight = run()
    run([interrupt(step)])
    state = torch.load(ckpt, weights_only=True)
    assert state["global_step"] == step
    assert state["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": step // 3, "batches": step % 3}]
    resumed = run(resume=str(ckpt))
    assert resumed.global_step == straight.global_step == 5
    for (name, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), name


@pytest.fixture
def one_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_losses_run_inside_a_process_group(one_process_group):
    """The DDP branch of num_target_boxes (all_reduce, / world size) and a backward through it."""
    from ovd.config import LossConfig
    from ovd.training.losses import build_criterion, num_target_boxes

    assert dist.is_initialized()
    targets = [{"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.1]]),
                "positive_map": torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])}]
    assert num_target_boxes(targets, torch.device("cpu")) == 2.0
    assert num_target_boxes([{"boxes": torch.zeros(0, 4)}], torch.device("cpu")) == 1.0  # at least 1
    boxes = torch.full((1, 4, 4), 0.4, requires_grad=True)
    outputs = {"pred_logits": torch.zeros(1, 4, 3, requires_grad=True), "pred_boxes": boxes,
               "text_mask": torch.ones(1, 3, dtype=torch.bool)}
    losses = build_criterion(LossConfig())(outputs, targets)
    losses["total_loss"].backward()
    assert torch.isfinite(losses["total_loss"]) and boxes.grad.abs().sum() > 0
