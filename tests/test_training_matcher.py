"""Invariants of the Hungarian matcher (ovd.training.matcher)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ovd.config import LossConfig
from ovd.training.matcher import HungarianMatcher, build_matcher, focal_token_cost

T = 8


def random_targets(n: int, generator: torch.Generator, num_tokens: int = T) -> dict:
    """n random boxes (normalized cxcywh) with one or two positive tokens each."""
    centers = torch.rand(n, 2, generator=generator) * 0.6 + 0.2
    sizes = torch.rand(n, 2, generator=generator) * 0.3 + 0.05
    positive_map = torch.zeros(n, num_tokens)
    for i in range(n):
        start = int(torch.randint(0, num_tokens - 1, (1,), generator=generator))
        positive_map[i, start : start + 1 + i % 2] = 1
    return {"boxes": torch.cat([centers, sizes], dim=1), "positive_map": positive_map}


def random_outputs(batch: int, queries: int, generator: torch.Generator, num_tokens: int = T) -> dict:
    return {
        "pred_logits": torch.randn(batch, queries, num_tokens, generator=generator),
        "pred_boxes": torch.rand(batch, queries, 4, generator=generator) * 0.5 + 0.2,
    }


def perfect_outputs(target: dict, queries: int) -> dict:
    """Query i predicts target i exactly (box and tokens); extra queries predict nothing."""
    n = len(target["boxes"])
    logits = torch.full((1, queries, T), -8.0)
    logits[0, :n] = torch.where(target["positive_map"] > 0, 8.0, -8.0)
    boxes = torch.full((1, queries, 4), 0.5)
    boxes[0, :, 2:] = 0.01
    boxes[0, :n] = target["boxes"]
    return {"pred_logits": logits, "pred_boxes": boxes}


@pytest.fixture
def matcher() -> HungarianMatcher:
    return HungarianMatcher(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0)


def as_pairs(match) -> set[tuple[int, int]]:
    return set(zip(match[0].tolist(), match[1].tolist()))


def test_batched_equals_per_image(matcher):
    g = torch.Generator().manual_seed(0)
    sizes = [3, 0, 5, 1]
    outputs = random_outputs(len(sizes), 10, g)
    targets = [random_targets(n, g) for n in sizes]
    batched = matcher(outputs, targets)
    for b in range(len(sizes)):
        single = matcher({k: v[b : b + 1] for k, v in outputs.items()}, [targets[b]])[0]
        assert as_pairs(batched[b]) == as_pairs(single)
        assert len(batched[b][0]) == sizes[b]


def test_empty_targets(matcher):
    g = torch.Generator().manual_seed(1)
    outputs = random_outputs(2, 6, g)
    empty = {"boxes": torch.zeros(0, 4), "positive_map": torch.zeros(0, T)}
    for match in matcher(outputs, [empty, empty]):
        assert match[0].dtype == torch.int64 and match[1].dtype == torch.int64
        assert match[0].numel() == 0 and match[1].numel() == 0


def test_perfect_predictions_match_identity(matcher):
    g = torch.Generator().manual_seed(2)
    target = random_targets(4, g)
    q_idx, t_idx = matcher(perfect_outputs(target, 7), [target])[0]
    assert sorted(zip(q_idx.tolist(), t_idx.tolist())) == [(i, i) for i in range(4)]


def test_cost_is_lowest_for_the_true_pair(matcher):
    g = torch.Generator().manual_seed(3)
    target = random_targets(5, g)
    cost = matcher.cost_matrix(perfect_outputs(target, 5), [target])[0]  # (Q, N)
    # Each target's cheapest query is its own, and each query's cheapest target is its own.
    assert torch.equal(cost.argmin(dim=0), torch.arange(5))
    assert torch.equal(cost.argmin(dim=1), torch.arange(5))


def test_each_cost_term_orders_correctly():
    """A closer box / better token alignment costs less, term by term."""
    target = {"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]]), "positive_map": torch.tensor([[1.0] + [0.0] * (T - 1)])}
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.55, 0.5, 0.2, 0.2], [0.8, 0.8, 0.2, 0.2]]])
    logits = torch.zeros(1, 3, T)
    for kwargs in (
        {"cost_class": 0, "cost_bbox": 1, "cost_giou": 0},
        {"cost_class": 0, "cost_bbox": 0, "cost_giou": 1},
    ):
        cost = HungarianMatcher(**kwargs).cost_matrix({"pred_logits": logits, "pred_boxes": boxes}, [target])[0, :, 0]
        assert cost[0] < cost[1] < cost[2]
    logits = torch.tensor([[[4.0] + [0.0] * (T - 1), [0.0] * T, [-4.0] + [0.0] * (T - 1)]])
    cost = HungarianMatcher(1, 0, 0).cost_matrix({"pred_logits": logits, "pred_boxes": boxes}, [target])[0, :, 0]
    assert cost[0] < cost[1] < cost[2]


def test_class_cost_averages_over_positive_tokens():
    prob_logits = torch.tensor([[[2.0, -1.0, 0.5, 0.0]]])
    target = {"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]]), "positive_map": torch.tensor([[1.0, 1.0, 0.0, 0.0]])}
    cost = HungarianMatcher(1, 0, 0).cost_matrix(
        {"pred_logits": prob_logits, "pred_boxes": torch.tensor([[[0.5, 0.5, 0.2, 0.2]]])}, [target]
    )
    expected = focal_token_cost(prob_logits.sigmoid())[0, 0, :2].mean()
    torch.testing.assert_close(cost[0, 0, 0], expected)


def test_permuting_predictions_permutes_matching(matcher):
    g = torch.Generator().manual_seed(4)
    outputs = random_outputs(1, 9, g)
    target = random_targets(4, g)
    perm = torch.randperm(9, generator=g)
    permuted = {k: v[:, perm] for k, v in outputs.items()}
    original = as_pairs(matcher(outputs, [target])[0])
    after = as_pairs(matcher(permuted, [target])[0])
    # permuted query p is original query perm[p]
    assert {(int(perm[p]), t) for p, t in after} == original


def test_low_precision_inputs_are_matched_in_float32(matcher):
    g = torch.Generator().manual_seed(5)
    outputs = random_outputs(2, 6, g)
    targets = [random_targets(3, g), random_targets(2, g)]
    reference = matcher(outputs, targets)
    half = matcher({k: v.to(torch.bfloat16) for k, v in outputs.items()}, targets)
    assert [len(m[0]) for m in half] == [3, 2]
    assert matcher.cost_matrix({k: v.half() for k, v in outputs.items()}, targets).dtype == torch.float32
    assert len(reference) == 2


def test_fewer_queries_than_targets(matcher):
    g = torch.Generator().manual_seed(6)
    q_idx, t_idx = matcher(random_outputs(1, 3, g), [random_targets(5, g)])[0]
    assert len(q_idx) == 3 and len(set(q_idx.tolist())) == 3 and len(set(t_idx.tolist())) == 3


def test_token_count_mismatch_is_a_clear_error(matcher):
    g = torch.Generator().manual_seed(7)
    with pytest.raises(ValueError, match="token positions"):
        matcher(random_outputs(1, 3, g, num_tokens=T), [random_targets(2, g, num_tokens=T + 2)])


def test_build_matcher_uses_loss_config():
    config = LossConfig(cost_class=1.5, cost_bbox=3.0, cost_giou=0.5, focal_alpha=0.3, focal_gamma=1.0)
    m = build_matcher(config)
    assert (m.cost_class, m.cost_bbox, m.cost_giou, m.focal_alpha, m.focal_gamma) == (1.5, 3.0, 0.5, 0.3, 1.0)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=3),
    extra_queries=st.integers(min_value=0, max_value=4),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_property_each_target_matched_exactly_once(sizes, extra_queries, seed):
    g = torch.Generator().manual_seed(seed)
    queries = max(sizes) + extra_queries
    if queries == 0:
        queries = 1
    outputs = random_outputs(len(sizes), queries, g)
    targets = [random_targets(n, g) for n in sizes]
    matches = HungarianMatcher(2.0, 5.0, 2.0)(outputs, targets)
    for (q_idx, t_idx), n in zip(matches, sizes):
        assert sorted(t_idx.tolist()) == list(range(n))
        assert len(set(q_idx.tolist())) == n
        assert all(0 <= q < queries for q in q_idx.tolist())
