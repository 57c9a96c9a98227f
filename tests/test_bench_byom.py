"""Bring your own model: the example factory (examples/my_detector.py) measured in-process with the same
measurements as our variants, and clear "not measured" rows for what a factory does not provide."""

import sys
import types

import pytest
import torch

from bench.measure import accuracy, flops, memory, params, speed
from bench.sources import FactorySource, ModelUnderTest

EXAMPLE = {"kind": "factory", "target": "examples.my_detector:build", "kwargs": {}}


def _rows(result) -> dict:
    return {r.metric: r for r in result.rows()}


def test_example_factory_params_flops_memory_speed():
    from examples.my_detector import build

    mut = build("cpu", batch_size=2)
    n = sum(p.numel() for p in mut.module.parameters())
    p = _rows(params.measure({"source": EXAMPLE}))
    assert p["params/total"].value == n and 0 < p["params/trainable"].value < n  # the text encoder is frozen
    assert "params/image_backbone" not in p  # unknown for a user's model: no row rather than a 0

    f = flops.measure({"source": EXAMPLE, "batch_size": 2})
    assert f.batch_size == 2 and f.per_image > 1e6 and not f.uncounted_ops

    m = memory.measure_infer({"source": EXAMPLE, "batch_size": 2})
    assert m.batch_size == 2 and m.total_mib > 0 and m.method == "cpu-rss"

    s = speed.measure({"source": EXAMPLE, "infer_batch": 2, "train_batch": 2, "warmup": 0, "iters": 1})
    rows = _rows(s)
    assert set(s.infer_s) == {"b1", "bN"} and s.infer_batch == 2
    for metric in ("infer/fps_b1", "infer/fps_b2", "infer/latency_p90_ms_b2", "train/samples_per_s"):
        assert rows[metric].status == "ok" and rows[metric].value > 0, metric
    assert torch.isfinite(torch.tensor(s.losses)).all()


@pytest.fixture
def bare_factory(monkeypatch):
    """A factory with a fixed batch of 3 and neither loss nor predict."""
    mod = types.ModuleType("h4_bare_model")
    mod.build = lambda device: ModelUnderTest(torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU()),
                                              (torch.randn(3, 8, device=device),))
    monkeypatch.setitem(sys.modules, "h4_bare_model", mod)
    return FactorySource("h4_bare_model:build").to_dict()


def test_factory_without_loss_or_predict_says_not_measured(bare_factory):
    s = speed.measure({"source": bare_factory, "infer_batch": 8, "warmup": 0, "iters": 1})
    rows = _rows(s)
    assert set(s.infer_s) == {"bN"} and "infer/fps_b3" in rows  # its own batch, not the asked 8
    assert rows["train/samples_per_s"].status == "not-measured" and "no loss" in rows["train/samples_per_s"].error
    mem = _rows(memory.measure_train({"source": bare_factory}))["memory/train_total"]
    assert mem.status == "not-measured" and mem.value is None and "no loss" in mem.error
    acc = _rows(accuracy.measure({"source": bare_factory}))["accuracy/val/mAP50"]
    assert acc.status == "not-measured" and "predict" in acc.error
    assert _rows(params.measure({"source": bare_factory}))["params/total"].value == 8 * 16 + 16


def test_factory_predict_is_scored_on_the_data_by_recall(tmp_path, monkeypatch):
    """A factory's predict() is scored as it is: an oracle that returns each phrase's true boxes gets R@1 = 1,
    one that returns nothing gets 0; neither is trained, so time to target says why it is not measured."""
    import hashlib

    from ovd.data.dataset import GroundingDataset
    from ovd.data.readers import load_records
    from ovd.data.synthetic import write_synthetic_dataset

    root = write_synthetic_dataset(tmp_path / "s", seed=4, num_train=2, num_val=6, num_test=1, num_novel=1)
    dataset = GroundingDataset(load_records(root, "flickr30k", "val"), split="val")
    truth = {}
    for s in dataset.samples:
        digest = hashlib.md5(dataset.load_image(s).tobytes()).hexdigest()
        for p in s.phrases:
            truth[(digest, p["text"])] = p["gt_boxes_xyxy"]

    def oracle(images, prompts):
        out = []
        for img, phrases in zip(images, prompts):
            digest = hashlib.md5(img.tobytes()).hexdigest()
            boxes = [truth[(digest, p)][0] for p in phrases]
            out.append({"boxes": torch.stack(boxes), "scores": torch.ones(len(boxes)), "labels": list(phrases)})
        return out

    def blind(images, prompts):
        return [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": []} for _ in images]

    for name, predict, expected in (("oracle", oracle, 1.0), ("blind", blind, 0.0)):
        mod = types.ModuleType(f"byom_{name}")
        mod.build = lambda device, p=predict: ModelUnderTest(torch.nn.Linear(2, 2), (torch.zeros(1, 2),), predict=p)
        monkeypatch.setitem(sys.modules, f"byom_{name}", mod)
        rows = _rows(accuracy.measure({"source": FactorySource(f"byom_{name}:build").to_dict(),
                                       "data_root": str(root), "device": "cpu"}))
        assert rows["accuracy/val/R@1"].value == pytest.approx(expected), name
        assert rows["accuracy/time_to_target_s"].status == "not-measured"
        assert "not trained" in rows["accuracy/time_to_target_s"].error
        assert rows["accuracy/time_to_target_s"].extra["trained"] is False  # the report lists it apart
        assert rows["accuracy/val/R@1"].extra["budget_s"] == 0  # the suite trained it for 0 s


@pytest.mark.parametrize("profile_name", ["quick", "default"])
def test_a_user_model_in_a_profile_that_trains_nothing_gets_its_accuracy_task(profile_name, bare_factory,
                                                                             monkeypatch):
    """The README's `ovd-bench run --profile quick --model mine=...`: quick and default train nothing
    (accuracy budget 0 s), and until 2026-12-03 the user model's accuracy task carried that budget into a training
    spec, which refused it ("budget_s must be a number > 0"), so the row was an error instead of predict's score.
    A factory is never trained: its task carries no training keys and the worker scores (or explains) it."""
    from bench import variants, worker
    from bench.profiles import get_profile
    from bench.runner import plan

    monkeypatch.setattr(variants, "VARIANTS", dict(variants.VARIANTS))
    name = variants.register_user_model(f"mine={bare_factory['target']}")
    profile = variants.add_user_models(get_profile(profile_name), [name])
    assert profile.accuracy_budget_s == 0
    task = next(t for t in plan(profile) if t.kind == "accuracy" and t.variant == name)
    assert "budget_s" not in task.params["accuracy"] and "eval_every_s" not in task.params["accuracy"]
    spec = {"measurements": task.measurements, "variant": variants.get_variant(name).to_dict(),
            "params": task.params, "threads": 1, "device": "cpu"}  # what bench.runner.run_task hands the worker
    outcome = worker.run(spec)["outcomes"]["accuracy"]
    assert outcome["status"] == "ok", outcome.get("error")
    (row,) = outcome["rows"]
    assert row.status == "not-measured" and "no predict" in row.error  # the bare factory has none


def test_presets_in_the_accuracy_profile_still_train_for_its_budget():
    from bench.profiles import get_profile
    from bench.runner import plan

    profile = get_profile("accuracy")
    specs = [t.params["accuracy"] for t in plan(profile) if t.kind == "accuracy"]
    assert specs and all(s["budget_s"] == profile.accuracy_budget_s == 600 for s in specs)


def test_a_factorys_memory_reading_starts_after_its_module_and_the_libraries_are_imported(tmp_path, monkeypatch):
    """The default-tier twin of the next (slow) test: when the baseline reading starts (measure_peak), the factory's
    module and what building a detector imports are already loaded, as for a preset."""
    (tmp_path / "factory_for_preload_test.py").write_text("def build(device, batch_size=2):\n    raise AssertionError\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "factory_for_preload_test", raising=False)
    loaded = {}

    def fake_measure_peak(build, device, warmup, poll_s):
        loaded.update({m: m in sys.modules for m in ("factory_for_preload_test", "transformers.models.bert.modeling_bert",
                                                     "ovd.models.detector")})
        raise StopIteration

    monkeypatch.setattr(memory, "measure_peak", fake_measure_peak)
    with pytest.raises(StopIteration):
        memory.measure_infer({"source": {"kind": "factory", "target": "factory_for_preload_test:build", "kwargs": {}},
                              "batch_size": 2})
    assert loaded and all(loaded.values()), loaded


@pytest.mark.slow  # about 18 s on 2 cores (two fresh worker processes); default-tier twin: the test above
def test_a_factory_wrapping_a_preset_reads_the_presets_memory_not_its_imports(tmp_path, monkeypatch):
    """Peak memory of a factory that returns our fp32 baseline-tiny on the batch the suite builds for it, each in
    a fresh process as the runner measures: the same total as the preset's own row. Before, the factory's total
    also held the ~250 MiB of libraries its build imported (transformers, timm, ovd), which the preset's reading
    had loaded before its baseline: 2.3x the preset's inference total for the same model."""
    from bench.runner import Task, run_task
    from bench.variants import VARIANTS, Variant

    (tmp_path / "wrap_preset_for_memory_test.py").write_text(
        "from bench.common import build_model, make_batch\nfrom bench.sources import ModelUnderTest\n\n\n"
        "def build(device, batch_size=2):\n    model = build_model('baseline-tiny', {}, device)\n"
        "    b = make_batch(model, batch_size, device)\n"
        "    return ModelUnderTest(model, (b.images, b.input_ids, b.attention_mask))\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setitem(VARIANTS, "wrapped", Variant("wrapped", FactorySource("wrap_preset_for_memory_test:build"),
                                                     group="user"))
    totals = {}
    for variant in ("baseline-tiny", "wrapped"):
        task = Task(f"memory_infer:{variant}", variant, ["memory_infer"], {"memory_infer": {"batch_size": 2}})
        out = run_task(task, threads=1, device="cpu", timeout_s=300, start="exec")
        assert out["status"] == "ok", out
        totals[variant] = _rows_of(out)["memory/infer_total"]
    assert totals["wrapped"] == pytest.approx(totals["baseline-tiny"], rel=0.2, abs=20), totals


def _rows_of(outcome: dict) -> dict:
    return {r["metric"]: r["value"] for o in outcome["outcomes"].values() for r in o["rows"]}
