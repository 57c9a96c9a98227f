"""Time the building blocks whose implementation is a switch (three attention arms, two MLPs, two
similarities), the Hungarian matcher and post-processing. Each asserts its output, so the default
test run (benchmarks disabled: one call each) is a correctness check."""

import pytest
import torch

from ovd.models.layers import CrossAttention, build_mlp, convert_attention_state_dict, cosine_similarity

ARMS = ("mha", "mha-fast", "sdpa")


@pytest.mark.parametrize("impl", ARMS)
def test_attention(bench, device, impl):
    torch.manual_seed(0)
    ref = CrossAttention(128, 4, "sdpa").eval()
    attn = CrossAttention(128, 4, impl).eval()
    attn.load_state_dict(convert_attention_state_dict(ref.state_dict(), impl))
    attn, ref = attn.to(device), ref.to(device)
    q, kv = torch.randn(4, 300, 128, device=device), torch.randn(4, 24, 128, device=device)
    mask = torch.zeros(4, 24, dtype=torch.bool, device=device)
    mask[:, 20:] = True

    def run():
        with torch.inference_mode():
            return attn(q, kv, kv, key_padding_mask=mask)

    out = bench(run)
    with torch.inference_mode():
        torch.testing.assert_close(out, ref(q, kv, kv, key_padding_mask=mask), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("impl", ("sequential", "torchvision"))
def test_mlp(bench, device, impl):
    torch.manual_seed(0)
    mlp = build_mlp(impl, 256, 256, 4, 3).eval().to(device)
    x = torch.randn(8, 100, 256, device=device)

    def run():
        with torch.inference_mode():
            return mlp(x)

    out = bench(run)
    assert out.shape == (8, 100, 4) and torch.isfinite(out).all()


@pytest.mark.parametrize("impl", ("matmul", "torchmetrics"))
def test_similarity(bench, device, impl):
    torch.manual_seed(0)
    a, b = torch.randn(8, 100, 256, device=device), torch.randn(8, 32, 256, device=device)
    out = bench(cosine_similarity, a, b, impl)
    torch.testing.assert_close(out, cosine_similarity(a, b, "matmul"), atol=1e-5, rtol=1e-5)


def test_hungarian_matcher(bench):
    from ovd.training.matcher import HungarianMatcher

    torch.manual_seed(0)
    B, Q, T, N = 8, 100, 24, 4
    outputs = {"pred_logits": torch.randn(B, Q, T), "pred_boxes": torch.rand(B, Q, 4) * 0.5 + 0.25}
    targets = []
    for _ in range(B):
        pm = torch.zeros(N, T)
        pm[torch.arange(N), torch.arange(N) * 2 + 1] = 1
        targets.append({"boxes": torch.rand(N, 4) * 0.3 + 0.2, "positive_map": pm})
    matcher = HungarianMatcher()
    matches = bench(matcher, outputs, targets)
    assert len(matches) == B
    for q_idx, t_idx in matches:
        assert len(q_idx) == N and len(set(q_idx.tolist())) == N and sorted(t_idx.tolist()) == list(range(N))


def test_postprocessing_predict(bench, tiny_model):
    images = torch.rand(2, 3, 96, 96)
    prompts = [["red circle", "blue square"], "a green triangle"]
    results = bench(tiny_model.predict, images, prompts, threshold=0.0)
    assert len(results) == 2
    for r in results:
        assert r["boxes"].shape[1] == 4 and len(r["labels"]) == len(r["scores"]) == r["boxes"].shape[0]


def test_bench_synchronizes_cuda_around_the_timed_call(bench, monkeypatch):
    """The fixture's contract (conftest.py): sync before the round (untimed), call, sync inside the call."""
    events = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: events.append("sync"))
    assert bench(lambda x: events.append(f"call {x}") or x, 7) == 7
    # With --benchmark-disable one round runs; enabled, warm-up and timed rounds repeat the pattern.
    assert events[:3] == ["sync", "call 7", "sync"]
    assert len(events) % 3 == 0 and events == ["sync", "call 7", "sync"] * (len(events) // 3)


def test_bench_runs_with_one_torch_thread_unless_told(bench, monkeypatch):
    """The fixture times with $OVD_BENCHMARK_THREADS torch threads, 1 by default (conftest.py's module doc)."""
    from benchmark_threads import THREADS_ENV, benchmark_threads

    assert bench(torch.get_num_threads) == 1
    monkeypatch.setenv(THREADS_ENV, "2")
    assert benchmark_threads() == 2
    for bad in ("0", "two"):
        monkeypatch.setenv(THREADS_ENV, bad)
        with pytest.raises(pytest.UsageError, match=THREADS_ENV):
            benchmark_threads()
