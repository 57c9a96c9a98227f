"""The one training step: ``ovd train`` (Lightning, manual optimization) and the benchmark run the same
``TrainStep``, so after the same batches they hold the same weights."""

from __future__ import annotations

import lightning as L
import pytest
import torch

import ovd
from ovd.data.synthetic import write_synthetic_dataset
from ovd.training.module import DetectorModule
from ovd.training.run import build_datamodule, trainer_kwargs
from ovd.training.schedules import onecycle_progress
from ovd.training.step import NonFiniteLossError, build_train_step, parameter_groups, resolve_precision


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, seed=2, num_train=8, num_val=2, num_test=2, num_novel=2)
    return root


@pytest.fixture(scope="module")
def batches(root):
    cfg = ovd.get_config("optimized-tiny", {"train.batch_size": 4})
    dm = build_datamodule(cfg, root)
    dm.setup("fit")
    return list(dm.train_dataloader())[:2]


def test_lightning_and_the_benchmark_step_give_identical_weights(batches):
    # no stochastic depth: Lightning's set-up may draw from torch's RNG, which would desynchronize the two runs
    no_drop_path = dict(ovd.get_config("optimized-tiny").image.backbone_kwargs, drop_path_rate=0.0)
    cfg = ovd.get_config("optimized-tiny", {"train.batch_size": 4, "train.scheduler": "onecycle",
                                            "image.backbone_kwargs": no_drop_path})
    steps = 3
    data = [batches[i % len(batches)] for i in range(steps)]
    torch.manual_seed(0)
    module = DetectorModule(cfg, total_steps=steps)
    twin = DetectorModule(cfg, total_steps=steps)
    twin.load_state_dict(module.state_dict())
    L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
              enable_checkpointing=False, num_sanity_val_steps=0, limit_val_batches=0, **trainer_kwargs()
              ).fit(module, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=None))
    twin.model.train()
    holder = []  # progress = steps taken / total, what the Lightning module reads from global_step
    step = build_train_step(twin.model, cfg.train, twin.criterion, "cpu",
                            progress=lambda: onecycle_progress(min(holder[0].steps if holder else 0, steps - 1), steps))
    holder.append(step)
    for batch in data:
        step(batch)
    assert module.global_step == step.steps == steps
    for (name, a), (_, b) in zip(module.model.named_parameters(), twin.model.named_parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)
    # the one-cycle schedule moved LR and AdamW's beta1 together, in both
    lr_a = [g["lr"] for g in module.optimizers().param_groups]
    assert lr_a == [g["lr"] for g in step.optimizer.param_groups]
    assert module.optimizers().param_groups[0]["betas"][0] == step.optimizer.param_groups[0]["betas"][0] != 0.98
    # ... and they are torch's OneCycleLR values at that step (LR and AdamW's beta1)
    probe = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=cfg.train.lr, betas=tuple(cfg.train.betas))
    ref = torch.optim.lr_scheduler.OneCycleLR(probe, max_lr=cfg.train.lr, total_steps=steps)
    for _ in range(steps - 1):
        probe.step()
        ref.step()
    assert lr_a[0] == pytest.approx(probe.param_groups[0]["lr"], rel=1e-9)
    assert step.optimizer.param_groups[0]["betas"][0] == pytest.approx(probe.param_groups[0]["betas"][0], rel=1e-9)


def test_parameter_groups_cover_every_trainable_parameter_once():
    cfg = ovd.get_config("optimized-tiny", {"train.backbone_lr": 3e-4})
    model = ovd.create_model(cfg)
    groups = parameter_groups(model, cfg.train)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == sum(1 for p in model.parameters() if p.requires_grad)
    assert {g["name"]: g["lr"] for g in groups} == {"head": cfg.train.lr, "backbone": 3e-4}


def test_non_finite_loss_raises_before_touching_the_weights(batches):
    cfg = ovd.get_config("optimized-tiny")
    model = ovd.create_model(cfg).train()

    def nan_loss(outputs, targets):
        return {"total_loss": outputs["pred_boxes"].sum() * float("nan")}

    step = build_train_step(model, cfg.train, nan_loss, "cpu")
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(NonFiniteLossError, match="non-finite training loss at step 0"):
        step(batches[0])
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("native_bf16, on_cpu", [(False, "fp32"), (True, "bf16")])
def test_precision_resolution(monkeypatch, native_bf16, on_cpu):
    # "auto" follows the CPU: bf16 autocast only where it has bf16 matrix instructions (AVX2 emulates it, ~10x slower)
    import ovd.training.run as run
    import ovd.training.step as step

    monkeypatch.setattr(step, "cpu_computes_bf16", lambda: native_bf16)
    assert resolve_precision("auto", "cpu") == on_cpu and resolve_precision("auto", "cuda") == "fp16"
    lightning_name = {"fp32": "32-true", "bf16": "bf16-mixed"}[on_cpu]
    assert run.resolve_precision("auto", "cpu") == lightning_name and run.resolve_precision("32-true", "cpu") == "32-true"
    assert resolve_precision("bf16-mixed", "cpu") == "bf16"
    with pytest.raises(ValueError, match="train.precision"):
        resolve_precision("int8", "cpu")


def test_training_loop_timer_counts_only_the_timed_steps(root):
    from ovd.training.run import time_training_loop

    cfg = ovd.get_config("optimized-tiny", {"train.batch_size": 4})
    out = time_training_loop(cfg, steps=3, warmup_steps=1, data_root=str(root), accelerator="cpu")
    assert out["samples"] == 3 * 4 and out["steps"] == 3  # crosses an epoch boundary (8 images, batch 4)
    assert out["seconds"] > 0 and out["samples_per_s"] == pytest.approx(12 / out["seconds"])
    with pytest.raises(ValueError, match="steps"):
        time_training_loop(cfg, steps=0, data_root=str(root))


def _two_steps(batches, overrides: dict, device: str = "cpu"):
    no_drop_path = dict(ovd.get_config("optimized-tiny").image.backbone_kwargs, drop_path_rate=0.0)
    cfg = ovd.get_config("optimized-tiny", {"train.batch_size": 4, "image.backbone_kwargs": no_drop_path,
                                            **overrides})
    torch.manual_seed(0)
    module = DetectorModule(cfg).to(device)
    module.model.train()
    step = build_train_step(module.model, cfg.train, module.criterion, device)
    for batch in batches:
        moved = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        if device != "cpu":
            moved["targets"] = [{k: t.to(device) for k, t in tgt.items()} for tgt in batch["targets"]]
        step(moved)
    return step, dict(module.model.named_parameters())


def test_fused_adamw_is_the_same_math(batches):
    """train.optimizer_impl is a speed switch: the fused kernel updates the weights as the default does."""
    ref_step, ref = _two_steps(batches, {})
    step, fused = _two_steps(batches, {"train.optimizer_impl": "fused"})
    assert all(g.get("fused") for g in step.optimizer.param_groups) and not ref_step.optimizer.defaults.get("fused")
    for name, p in ref.items():
        torch.testing.assert_close(fused[name], p, atol=1e-5, rtol=1e-4, msg=name)


def test_bad_training_switches_are_refused():
    with pytest.raises(ValueError, match="optimizer_impl"):
        ovd.get_config("optimized-tiny", {"train.optimizer_impl": "apex"})
    with pytest.raises(ValueError, match="train.compile"):
        ovd.get_config("optimized-tiny", {"train.compile": "yes"})


@pytest.mark.gpu
def test_compiled_training_step_matches_eager_on_cuda(batches):
    _, eager = _two_steps(batches, {"train.precision": "32-true"}, "cuda")
    step, compiled = _two_steps(batches, {"train.precision": "32-true", "train.compile": True}, "cuda")
    assert step.forward is not step.model  # the step ran the compiled view
    for name, p in eager.items():
        torch.testing.assert_close(compiled[name], p, atol=1e-4, rtol=1e-3, msg=name)
