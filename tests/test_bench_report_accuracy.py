"""The accuracy section of REPORT.md is built from results rows only."""

from bench.report.accuracy import accuracy_section, as_is_table, curve_table, final_table
from bench.results import Results, Row


def _results(reached: bool) -> Results:
    curve = [{"seconds": 60.0, "step": 10, "samples": 160, "val/mAP50": 0.4, "val/R@1": 0.5},
             {"seconds": 120.0, "step": 20, "samples": 320, "val/mAP50": 0.85, "val/R@1": 0.8,
              "val/vocab_mAP50": 0.75}]
    extra = {"budget_s": 120, "target_map50": 0.8, "steps": 20, "train_seconds": 120.0, "curve": curve}
    rows = [Row("opt", "accuracy/val/mAP50", 0.85, "fraction", extra=extra),
            Row("opt", "accuracy/novel/R@1", 0.7, "fraction", extra=extra),
            Row("opt", "accuracy/val/vocab_mAP50", 0.75, "fraction", extra=extra),
            Row("opt", "accuracy/val/absent_fp_rate", 0.25, "fraction", extra=extra),
            Row("opt", "accuracy/val/present_recall", 0.9, "fraction", extra=extra),
            Row("opt", "accuracy/time_to_target_s", 120.0 if reached else None, "s", extra=extra,
                status="ok" if reached else "not-measured")]
    return Results(rows=rows, variants={"opt": {}, "other": {}})


def test_final_and_curve_tables():
    res = _results(reached=True)
    (final,) = final_table(res)
    assert final["variant"] == "opt" and final["val mAP50"] == "0.850" and final["novel R@1"] == "0.700"
    assert final["val R@1"] == "-"  # not measured is shown as such, never as a number
    # both protocols side by side, the absent-FP rate next to present recall
    assert final["val vocab mAP50"] == "0.750" and final["val absent FP"] == "0.250"
    assert final["val present recall"] == "0.900" and final["novel vocab mAP50"] == "-"
    assert final["time to val vocab mAP50 >= 0.8"] == "120 s"
    assert [r["training minutes"] for r in curve_table(res)] == [1.0, 2.0]
    assert curve_table(res)[1]["opt mAP50 / R@1 / vocab mAP50"] == "0.850 / 0.800 / 0.750"
    assert curve_table(res)[0]["opt mAP50 / R@1 / vocab mAP50"] == "0.400 / 0.500 / nan"  # older point
    assert final_table(_results(reached=False))[0]["time to val vocab mAP50 >= 0.8"] == "not reached"


def test_section_writes_the_curve_plot(tmp_path):
    parts = accuracy_section(_results(True), tmp_path)
    text = "".join(parts)
    assert "## Accuracy after a time-budgeted training run" in text and "accuracy_curve.png" in text
    assert (tmp_path / "accuracy_curve.png").stat().st_size > 1000
    assert accuracy_section(Results(rows=[], variants={}), tmp_path) == []


def _scored_as_is(results: Results) -> Results:
    """``results`` plus a bring-your-own model whose predict() was scored without training, as
    bench.measure.accuracy records it."""
    from bench.measure.accuracy import AccuracyResult

    final = {"val/R@1": 0.25, "val/R@5": 0.5, "val/R@10": 0.75, "val/R@1_merged": 0.3}
    rows = AccuracyResult(0.0, None, final, not_trained="not trained by the suite: a factory's predict() is "
                          "scored as it is (64 val samples)").rows()
    for r in rows:
        r.variant = "mine"
    return Results(rows=results.rows + rows, variants={**results.variants, "mine": {}})


def test_a_model_scored_as_is_is_listed_apart_from_the_training_runs(tmp_path):
    """A factory's predict() is scored, never trained: it gets its own table (R@k and why), and no row in the
    training table, whose budget, steps and "not reached" would say it trained for 0 s and missed the target."""
    res = _scored_as_is(_results(reached=True))
    assert [r["variant"] for r in final_table(res)] == ["opt"]
    (row,) = as_is_table(res)
    assert row["variant"] == "mine" and (row["val R@1"], row["val R@10"]) == ("0.250", "0.750")
    assert row["training"].startswith("not trained by the suite")
    text = "".join(accuracy_section(res, tmp_path))
    assert "time-budgeted training run" in text and "## Accuracy of models scored as they are" in text
    # a run with only the user's model (quick or default with --model): no training section at all
    alone = "".join(accuracy_section(_scored_as_is(Results(rows=[], variants={})), tmp_path))
    assert "time-budgeted" not in alone and "| mine " in alone and "0.500" in alone
