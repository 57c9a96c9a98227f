"""Lightning module, trainer and `ovd` CLI end to end on a few synthetic images (CPU, seconds)."""

import json
import math
import os
import pickle
import subprocess
import sys

import lightning as L
import pytest
import torch

import ovd
from ovd.cli import main as ovd_main
from ovd.data.synthetic import write_synthetic_dataset
from ovd.training.module import DetectorModule, NonFiniteLossError, load_checkpoint
from ovd.training.run import build_datamodule, train_and_evaluate
from ovd.training.schedules import lr_factor, one_cycle


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, seed=1, num_train=16, num_val=8, num_test=4, num_novel=4)
    return root


def _trainer(max_steps, **kw):
    kw.setdefault("enable_checkpointing", "callbacks" in kw)  # no stray checkpoints/ in the cwd
    return L.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, **kw)


def test_schedules_shapes():
    assert one_cycle(0.0) == pytest.approx(1 / 25)
    assert one_cycle(0.3) == pytest.approx(1.0)
    assert one_cycle(1.0) == pytest.approx(1 / 25e4)
    assert lr_factor("cosine", 0.05) == pytest.approx(1.0)
    assert lr_factor("cosine", 1.0) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="onecycle"):
        lr_factor("step", 0.5)


def test_loss_decreases_when_overfitting_4_images(small_root):
    cfg = ovd.get_config("optimized-tiny", {"train.batch_size": 4, "train.scheduler": "cosine"})
    L.seed_everything(0)
    dm = build_datamodule(cfg, small_root, limit=4)
    dm.setup("fit")
    module = DetectorModule(cfg, total_steps=20)
    batch = next(iter(dm.train_dataloader()))
    with torch.no_grad():
        before = module.criterion(module(batch), batch["targets"])["total_loss"].item()
    # the same 4 images, 20 times: the loss falls to 0.36-0.56 of where it started (seeds 0-2; 8 images: about half)
    repeated = torch.utils.data.DataLoader([batch] * 20, batch_size=None)
    _trainer(20, limit_val_batches=0).fit(module, train_dataloaders=repeated)
    with torch.no_grad():
        after = module.criterion(module(batch), batch["targets"])["total_loss"].item()
    assert after < 0.7 * before, (before, after)


def test_train_and_evaluate_reports_a_curve(small_root):
    cfg = ovd.get_config("optimized-tiny", {"train.batch_size": 4})
    result = train_and_evaluate(cfg, data_root=str(small_root), max_time_s=3, eval_every_s=1.5, progress=False)
    assert result["steps"] > 0 and result["train_seconds"] >= 3
    # one point per 1.5 training seconds at most (a slow first step may cover several), the last at the end
    seconds = [p["seconds"] for p in result["curve"]]
    assert 1 <= len(seconds) <= 3 and seconds == sorted(seconds) and seconds[-1] >= 3
    assert result["curve"][-1]["step"] == result["steps"]
    for key in ("val/mAP50", "val/R@1", "novel/mAP50", "novel/R@1", "val/vocab_mAP50", "val/absent_fp_rate",
                "val/present_recall", "novel/vocab_mAP50"):
        assert 0.0 <= result["final"][key] <= 1.0, key
    assert all("val/vocab_mAP50" in p and "val/mAP50" in p for p in result["curve"])  # both protocols per point
    assert result["target_metric"] == "val/vocab_mAP50"


def test_cli_train_eval_predict_end_to_end(small_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert ovd_main(["train", "--preset", "optimized-tiny", "--data-root", str(small_root), "--max-steps", "3",
                     "--batch-size", "4", "--out", str(out), "--limit-val-batches", "1"]) == 0
    capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    ckpt = summary["last"]
    assert ckpt.endswith("last.ckpt")
    assert (out / "config.json").exists() and list((out / "tb").rglob("events.out.tfevents*"))
    assert ovd_main(["eval", "--checkpoint", ckpt, "--data-root", str(small_root), "--split", "val"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"val/mAP", "val/mAP50", "val/R@1"} <= set(metrics)
    image = next((small_root / "Images").glob("*.jpg"))
    png = tmp_path / "pred.png"
    assert ovd_main(["predict", "--checkpoint", ckpt, "--image", str(image), "--prompt", "red circle, blue square",
                     "--phrases", "--threshold", "0", "--out", str(png)]) == 0
    pred = json.loads(capsys.readouterr().out)
    assert png.exists() and len(pred["detections"]) == 20
    assert {d["label"] for d in pred["detections"]} <= {"red circle", "blue square"}


def test_cli_scores_an_mdetr_style_prediction_file(small_root, tmp_path, capsys):
    from ovd.data.dataset import GroundingDataset
    from ovd.data.readers import load_records

    dataset = GroundingDataset(load_records(small_root, "flickr30k", "val"), split="val")
    preds = []
    for i, s in enumerate(dataset.samples):
        # perfect ranked boxes for even sentences, a far-away box for odd ones
        boxes = [[p["gt_boxes_xyxy"][0].tolist()] if i % 2 == 0 else [[0, 0, 1, 1]] for p in s.phrases]
        preds.append({"image_id": s.record.image_id, "sentence_id": s.record.sentence_id, "boxes": boxes})
    path = tmp_path / "preds.json"
    path.write_text(json.dumps(preds))
    assert ovd_main(["eval", "--predictions", str(path), "--data-root", str(small_root), "--split", "val"]) == 0
    result = json.loads(capsys.readouterr().out)
    even = sum(len(s.phrases) for i, s in enumerate(dataset.samples) if i % 2 == 0)
    total = sum(len(s.phrases) for s in dataset.samples)
    assert result["R@1"] == pytest.approx(even / total)
    assert result["R@1_merged"] == pytest.approx(even / total)


def test_resume_continues_the_same_run(small_root, tmp_path):
    """2 epochs straight == 1 epoch, `last.ckpt`, resume for 1 more: bit-identical weights.

    The checkpoint loads with weights_only=True and carries the RNG state (stochastic depth);
    the shuffle order is seeded by (seed, epoch)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    cfg = ovd.get_config("optimized-tiny", {"train.batch_size": 4})

    def run(epochs, ckpt_path=None, save_dir=None):
        L.seed_everything(0, workers=True)
        dm = build_datamodule(cfg, small_root, limit=8)  # 8 images: 2 steps an epoch, 4 in all
        module = DetectorModule(cfg, total_steps=4)
        callbacks = [ModelCheckpoint(dirpath=save_dir, save_last=True)] if save_dir else []
        trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_progress_bar=False,
                            enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                            enable_checkpointing=bool(save_dir), callbacks=callbacks)
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
        return module

    straight = run(2)
    run(1, save_dir=tmp_path / "ck")
    resumed = run(2, ckpt_path=str(tmp_path / "ck" / "last.ckpt"))
    assert resumed.global_step == straight.global_step == 4
    for (name, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)


def test_non_finite_loss_stops_with_a_clear_message(small_root, tmp_path):
    cfg = ovd.get_config("optimized-tiny", {"train.batch_size": 4})
    dm = build_datamodule(cfg, small_root)
    module = DetectorModule(cfg, total_steps=5)
    original = module.criterion.forward

    def poisoned(outputs, targets):
        losses = original(outputs, targets)
        if module.global_step >= 2:
            losses["total_loss"] = losses["total_loss"] * float("nan")
        return losses

    module.criterion.forward = poisoned
    from lightning.pytorch.callbacks import ModelCheckpoint

    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_last=True)
    with pytest.raises(NonFiniteLossError, match="non-finite training loss at step 2"):
        _trainer(5, limit_val_batches=0, callbacks=[ckpt]).fit(module, datamodule=dm)
    last = load_checkpoint(tmp_path / "last.ckpt")
    assert all(math.isfinite(p.sum().item()) for p in last.parameters())


def test_checkpoint_with_pickled_object_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": {}, "hyper_parameters": {"config": Evil()}}, fh)
    with pytest.raises(ValueError, match="refused to load"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.ckpt")


def _ddp_train(root, out, max_steps, *extra):
    """`ovd train` with 2 gloo processes on the CPU: the command a cluster runs (`--devices 4 --num-nodes 2`
    under srun or torchrun), with only the launcher differing."""
    cmd = [sys.executable, "-m", "ovd.cli", "train", "--preset", "optimized-tiny", "--data-root", str(root),
           "--max-steps", str(max_steps), "--batch-size", "2", "--accelerator", "cpu", "--devices", "2",
           "--strategy", "ddp", "--num-nodes", "1", "--out", str(out), "--limit-val-batches", "1",
           "--val-check-interval", "2", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on two cores: one thread each
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "summary.json").read_text()), proc.stderr


@pytest.mark.slow
def test_ddp_two_cpu_processes(small_root, tmp_path):
    from ovd.data.dataset import GroundingDataset
    from ovd.data.readers import load_records

    out = tmp_path / "ddp"
    summary, _ = _ddp_train(small_root, out, 2)
    assert "val/mAP50" in summary["metrics"]
    assert summary["world_size"] == 2 and summary["num_nodes"] == 1 and summary["global_step"] == 2
    # each process sees its half of the training set (Lightning's DistributedSampler), batch 2
    n = len(GroundingDataset(load_records(small_root, "flickr30k", "train"), split="train"))
    assert summary["train_batches_per_epoch"] == math.ceil(math.ceil(n / 2) / 2)
    assert (out / "config.json").exists() and summary["last"].endswith("last.ckpt")


@pytest.mark.slow
def test_ddp_resume_from_a_ddp_checkpoint(small_root, tmp_path):
    out = tmp_path / "ddp"
    first, _ = _ddp_train(small_root, out, 2)
    resumed, log = _ddp_train(small_root, out, 4, "--resume", first["last"])
    assert f"Restoring states from the checkpoint path at {first['last']}" in log, log[-3000:]
    assert resumed["global_step"] == 4 and resumed["world_size"] == 2


def _sigint_default_and_unblocked():
    """preexec_fn: the child finds SIGINT as a terminal's Ctrl-C would. A job started with `&` by a
    non-interactive shell (a CI script) inherits SIGINT ignored, which Python keeps; a harness may also pass it
    blocked in the signal mask, which exec keeps and Python never undoes: then the signal stays pending."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _signal_state(pid: int) -> str:
    """The SigPnd/ShdPnd/SigBlk/SigIgn/SigCgt lines of /proc/PID/status (hex masks; SIGINT is bit 1)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return "; ".join(line.strip() for line in f if line.startswith(("SigPnd", "ShdPnd", "SigBlk", "SigIgn",
                                                                             "SigCgt")))
    except OSError as e:
        return f"no /proc/{pid}/status ({e})"


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint(small_root, tmp_path):
    import signal
    import time

    out = tmp_path / "interrupted"
    # -X faulthandler: if the child does not stop after Ctrl-C, SIGABRT makes it print every thread's stack.
    cmd = [sys.executable, "-X", "faulthandler", "-m", "ovd.cli", "train", "--preset", "optimized-tiny",
           "--data-root", str(small_root), "--max-steps", "100000", "--batch-size", "2", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_sigint_default_and_unblocked)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list(out.glob("tb/*/events.out.tfevents*")):
        time.sleep(0.5)
    time.sleep(3)  # a few training steps
    before = _signal_state(proc.pid)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        after = _signal_state(proc.pid)
        proc.send_signal(signal.SIGABRT)
        _, err = proc.communicate(timeout=60)
        pytest.fail(f"ovd train went on for 90 s after SIGINT.\nsignal state before SIGINT: {before}\n"
                    f"90 s after: {after}\nstderr tail (with the faulthandler stacks):\n{err[-6000:]}")
    ckpt = out / "checkpoints" / "interrupted.ckpt"
    assert ckpt.exists(), f"exit {proc.returncode}; signal state before SIGINT: {before}\n{err[-3000:]}"
    assert "Detected KeyboardInterrupt" in err, err[-3000:]
    module = load_checkpoint(ckpt)
    assert module.config.name == "optimized-tiny"
