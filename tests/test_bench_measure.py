"""Measurements on the tiny presets: parameter counts, FLOPs with SDPA attention counted, memory in a
fresh process, and the accuracy measurement against a monkeypatched trainer."""

import subprocess
import sys

import pytest
import torch

from bench.measure.flops import count_flops
from bench.measure.params import params_of_model
from ovd.models.layers import CrossAttention


def test_params_per_component(tiny_model):
    r = params_of_model(tiny_model)
    assert r.total == sum(p.numel() for p in tiny_model.parameters())
    assert r.total == sum(c["total"] for c in r.components.values())
    assert r.components["text_encoder"]["trainable"] < r.components["text_encoder"]["total"]  # frozen
    assert 0 < r.image_backbone < r.components["image_encoder"]["total"]
    assert {x.metric for x in r.rows()} >= {"params/total", "params/trainable", "params/image_backbone"}


@pytest.mark.parametrize("train", [False, True])
def test_flop_counter_counts_sdpa_attention(train):
    torch.manual_seed(0)
    q, kv = torch.randn(2, 64, 64), torch.randn(2, 32, 64)
    mask = torch.zeros(2, 32, dtype=torch.bool)
    mask[:, -4:] = True
    flops = {}
    for impl in ("mha", "mha-fast", "sdpa"):
        attn = CrossAttention(64, 4, impl).train(train)

        def fn(attn=attn):
            with torch.set_grad_enabled(train):
                out = attn(q.requires_grad_(train), kv, kv, key_padding_mask=mask)
                if train:
                    out.sum().backward()

        flops[impl], _, by_op, uncounted = count_flops(fn)
        assert not uncounted, uncounted
    # The attention itself (2 * 2*B*h*Nq*Nk*d) must be in the SDPA arms' counts, not missing.
    # Backward: the fused SDPA kernel recomputes Q K^T (torch's formula counts it), so allow a bit more.
    rel = 0.06 if train else 0.03
    assert flops["sdpa"] == pytest.approx(flops["mha"], rel=rel)
    assert flops["mha-fast"] == pytest.approx(flops["mha"], rel=rel)
    assert flops["sdpa"] > 0.9 * flops["mha"]  # without the registered formula the attention would be missing


@pytest.mark.slow  # about 15 s; default tier: test_peak_of_call_cpu_branch_sees_an_allocation (in process)
def test_memory_measurement_in_a_subprocess():
    code = ("import json; from bench.measure.memory import measure_infer; "
            "r = measure_infer({'preset': 'optimized-tiny', 'batch_size': 2}); "
            "print(json.dumps([r.total_mib, r.step_mib, r.method]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    total, step, method = json.loads(out.stdout.strip().splitlines()[-1])
    assert total > 0 and step > 0
    assert method in ("cpu-rss", "cuda-allocator")


def test_accuracy_measurement_uses_the_trainer(monkeypatch):
    import types

    calls = {}

    def fake_train_and_evaluate(config, data_root=None, max_time_s=600, eval_every_s=60, seed=0, target_map50=None,
                                splits=("val", "novel"), progress=True, checkpoint_path=None):
        calls["budget"], calls["checkpoint"] = max_time_s, checkpoint_path
        return {"curve": [{"seconds": 5.0, "step": 3, "samples": 24, "val/mAP50": 0.4}],
                "final": {"val/mAP50": 0.41, "val/mAP": 0.2, "val/R@1": 0.5, "novel/mAP50": 0.1},
                "time_to_target_s": 5.0, "train_seconds": 9.0, "steps": 7}

    fake = types.ModuleType("ovd.training.run")
    fake.train_and_evaluate = fake_train_and_evaluate
    monkeypatch.setitem(sys.modules, "ovd.training.run", fake)
    from bench.measure.accuracy import measure

    r = measure({"preset": "optimized-tiny", "budget_s": 9, "target_map50": 0.3, "checkpoint_out": "/x/c.ckpt"})
    rows = {x.metric: x for x in r.rows()}
    assert calls["budget"] == 9 and calls["checkpoint"] == "/x/c.ckpt"  # the arms' accuracy is judged on it
    assert rows["accuracy/val/mAP50"].value == 0.41
    assert rows["accuracy/time_to_target_s"].value == 5.0


def test_peak_of_call_cuda_branch_reads_the_allocator(monkeypatch):
    """The CUDA branch (one helper for memory, peers and scaling) with torch.cuda's counters faked."""
    import torch

    from bench.measure.memory import MiB, peak_of_call

    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append("sync"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 100)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 100 + 5 * MiB)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 8 * MiB)
    before, peak, reserved, method = peak_of_call(lambda: calls.append("fn"), torch.device("cuda"))
    assert calls == ["sync", "reset", "fn", "sync"]
    assert (before, peak, reserved, method) == (100, 100 + 5 * MiB, 8.0, "cuda-allocator")


def test_peak_of_call_cpu_branch_sees_an_allocation():
    """In a fresh process, as the suite measures: a long-lived process (this pytest run) may reuse memory it
    already holds, so its RSS need not grow for a new allocation."""
    import json
    import subprocess
    import sys

    code = (
        "import json, torch\n"
        "from bench.measure.memory import peak_of_call\n"
        "def allocate():\n"
        "    x = torch.ones(64 * 2**20 // 4)  # 64 MiB of float32, touched\n"
        "    return float(x.sum())\n"
        "print(json.dumps(peak_of_call(allocate, torch.device('cpu'))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before, peak, reserved, method = json.loads(proc.stdout.strip().splitlines()[-1])
    assert method == "cpu-rss" and reserved is None
    assert peak - before > 32 * 2**20
