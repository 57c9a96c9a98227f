"""The ceiling measurement (end-to-end vs the image backbone alone vs timm direct) and its report section."""

import ast
from pathlib import Path

import pytest

from bench.measure.ceiling import CeilingResult, CeilingSpec, measure, timm_kwargs
from bench.measure.specs import SpecError
from bench.report.ceiling import MACHINE, ceiling_section, ceiling_table
from bench.results import Results, Row, Stats, aggregate
from ovd.training.step import resolve_precision

# -- measurement --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_result():
    return measure({"preset": "optimized-tiny", "device": "cpu", "batch_size": 1, "rounds": 2, "warmup": 1})


def test_tiny_measurement_gives_every_row_positive(tiny_result):
    rows = {r.metric: r for r in tiny_result.rows()}
    expected = {"ceiling/e2e_fps", "ceiling/backbone_fps", "ceiling/timm_fps", "ceiling/e2e_share_of_backbone",
                "ceiling/backbone_vs_timm", "ceiling/e2e_flops_per_image", "ceiling/backbone_flops_per_image"}
    assert set(rows) == expected
    for r in rows.values():
        assert r.status == "ok" and r.value > 0, r
    fps = rows["ceiling/e2e_fps"]
    assert fps.unit == "images/s" and fps.extra["batch_size"] == 1 and fps.extra["precision"] == resolve_precision("auto", "cpu")
    assert len(fps.extra["calls"]) == 2  # rounds x iters
    # the ratio is the median of per-round ratios of the same calls
    c = tiny_result.calls_s
    per_round = sorted(c["timm"][i] / c["backbone"][i] for i in range(2))
    assert rows["ceiling/backbone_vs_timm"].value == pytest.approx(sum(per_round) / 2)
    assert rows["ceiling/backbone_vs_timm"].unit == "x"
    # the backbone's counted work is part of the whole forward's
    assert rows["ceiling/backbone_flops_per_image"].value < rows["ceiling/e2e_flops_per_image"].value
    assert tiny_result.timm["features_only"] is True and tiny_result.timm["img_size"] == 96


def test_rows_survive_the_runner_aggregate(tiny_result):
    outcome = {"status": "ok", "rows": [{"metric": r.metric, "value": r.value, "unit": r.unit, "extra": r.extra,
                                        "status": r.status, "error": r.error} for r in tiny_result.rows()]}
    rows = aggregate("optimized-tiny", "ceiling", [outcome, outcome])
    assert {r.metric for r in rows} >= {"ceiling/e2e_fps", "ceiling/e2e_share_of_backbone"}
    assert all(r.stats.n == 2 for r in rows)


def test_timm_kwargs_mirror_the_image_encoder(tiny_model):
    kw = timm_kwargs(tiny_model.config, tiny_model.image_encoder.backbone)
    assert kw["features_only"] is True
    assert kw["out_indices"] == tuple(tiny_model.image_encoder.backbone.feature_info.out_indices)
    assert kw["img_size"] == tiny_model.config.image.image_size
    assert kw["embed_dim"] == tiny_model.config.image.backbone_kwargs["embed_dim"]


def test_share_is_per_round_ratio():
    r = CeilingResult(2, "fp32", 1, 2, 1, False, "x", "cpu",
                      calls_s={"e2e": [0.4, 0.8], "backbone": [0.1, 0.4], "timm": [0.1, 0.2]})
    rows = {x.metric: x for x in r.rows()}
    assert rows["ceiling/e2e_fps"].value == pytest.approx(2 / 0.6)
    assert rows["ceiling/e2e_share_of_backbone"].value == pytest.approx(100 * (0.25 + 0.5) / 2)
    assert rows["ceiling/backbone_vs_timm"].value == pytest.approx((1.0 + 0.5) / 2)
    assert "ceiling/e2e_flops_per_image" not in rows  # no count, no row


# -- spec validation ----------------------------------------------------------------------------

@pytest.mark.parametrize("bad, words", [
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 1, "precision": "int4"}, "precision"),
    ({"batch_size": 1, "rounds": 0}, "rounds"),
    ({"batch_size": 1, "channels_last": "yes"}, "channels_last"),
    ({"batch_size": 1, "batch": 2}, "unknown keys"),
])
def test_spec_rejects_bad_values(bad, words):
    with pytest.raises(SpecError, match=words):
        CeilingSpec.from_dict({"preset": "optimized-tiny", **bad})


def test_spec_defaults_and_precision_choices():
    s = CeilingSpec.from_dict({"preset": "optimized-tiny", "batch_size": 2, "precision": "bf16"})
    assert (s.warmup, s.rounds, s.iters, s.channels_last) == (1, 3, 1, False)
    assert CeilingSpec.from_dict({"preset": "optimized-tiny", "batch_size": 2}).precision is None


# -- report -------------------------------------------------------------------------------------

def row(variant, metric, samples, unit="", **extra):
    st = Stats.of(samples)
    return Row(variant, metric, st.median, unit, list(samples), st, extra=dict(extra))


def planted(with_share: bool, with_peak: bool) -> Results:
    ex = {"batch_size": 4, "precision": "fp32"}
    rows = [row("optimized", "ceiling/e2e_fps", [20, 25, 30], "images/s", **ex),
            row("optimized", "ceiling/backbone_fps", [90, 100, 110], "images/s", **ex),
            row("optimized", "ceiling/timm_fps", [95, 100, 105], "images/s", **ex),
            row("optimized", "ceiling/backbone_vs_timm", [0.99, 1.0, 1.01], "x", **ex),
            row("optimized", "ceiling/e2e_flops_per_image", [4e9] * 3, "FLOPs (2*MACs)", **ex),
            row("optimized", "ceiling/backbone_flops_per_image", [2e9] * 3, "FLOPs (2*MACs)", **ex)]
    if with_share:
        rows.append(row("optimized", "ceiling/e2e_share_of_backbone", [24, 26, 28], "%", **ex))
    if with_peak:
        rows.append(row(MACHINE, "roofline/peak_fp32", [1e12] * 3, "FLOP/s", native=True))
    return Results(rows=rows, variants={"optimized": {"group": "main"}, MACHINE: {"group": "machine"}})


def test_report_share_is_e2e_over_backbone_times_100():
    (rec,) = ceiling_table(planted(with_share=False, with_peak=False))
    assert rec["end-to-end as % of its backbone alone"] == "25"  # 25 / 100 * 100
    assert rec["end-to-end (images/s)"] == "25 [22.5, 27.5]"
    assert rec["backbone / timm"] == "1 [0.995, 1]"
    assert rec["end-to-end GFLOP/s (no peak measured)"] == "100"  # 4 GFLOPs x 25 images/s


def test_report_uses_measured_share_and_peak():
    res = planted(with_share=True, with_peak=True)
    (rec,) = ceiling_table(res)
    assert rec["end-to-end as % of its backbone alone"] == "26 [25, 27]"
    assert rec["end-to-end GFLOP/s (% of fp32 matmul peak)"] == "100 (10%)"  # 100 GFLOP/s of 1000
    assert rec["backbone GFLOP/s (% of fp32 matmul peak)"] == "200 (20%)"
    text = "".join(ceiling_section(res))
    assert "## Ceiling" in text and "End-to-end as % of its backbone alone" in text and "| optimized |" in text


def test_report_empty_without_ceiling_rows():
    assert ceiling_section(Results(rows=[row("optimized", "infer/fps_b8", [10.0], "images/s")],
                                   variants={"optimized": {}})) == []


def test_report_imports_only_lower_layers():
    tree = ast.parse((Path(__file__).resolve().parents[1] / "bench" / "report" / "ceiling.py").read_text())
    mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert mods <= {"__future__", "results", "format", "judge", "tables"}, mods
    from bench.report.roofline import MACHINE as ROOF_MACHINE

    assert MACHINE == ROOF_MACHINE


@pytest.mark.gpu
def test_cuda_ceiling_in_bf16():
    res = measure({"preset": "optimized", "device": "cuda", "batch_size": 8, "rounds": 2, "warmup": 2,
                   "precision": "bf16"})
    rows = {r.metric: r for r in res.rows()}
    assert rows["ceiling/e2e_fps"].extra["precision"] == "bf16"
    assert 0 < rows["ceiling/e2e_share_of_backbone"].value <= 100
    assert 0.5 < rows["ceiling/backbone_vs_timm"].value < 2.0
