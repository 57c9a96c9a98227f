"""The report from planted results: interval verdicts, rows that grade what the claim says,
seeds and censored times, provenance at the top, peer targets per batch, plots, and the layering."""

import ast
import math
import random
from pathlib import Path

import pytest

import bench.report as report
from bench.report import judge, plots, seed
from bench.report.arms import arms_ranking
from bench.report.format import fmt_ratio, md
from bench.report.judge import censored_quartiles, censored_ratio, fmt_change, verdict
from bench.report.peers import peer_targets
from bench.results import Results, Row, Stats


def row(variant, metric, samples, unit="", **extra):
    st = Stats.of(samples)
    return Row(variant, metric, st.median, unit, list(samples), st, extra=dict(extra))


PAIR = {"baseline": {"group": "main"}, "optimized": {"group": "main", "reference": "baseline"}}


def planted(rows, variants=None, profile=None, tasks=None, environment=None) -> Results:
    return Results(rows=rows, variants=variants or dict(PAIR), tasks=tasks or {},
                   environment=environment or {"machine_kind": "cpu-test", "git_commit": "a" * 40},
                   profile={"pair": ["baseline", "optimized"], "infer_batch": 4, "train_batch": 4, **(profile or {})})


def by_row(table):
    return {r["Row"]: r for r in table}


# -- 1. interval verdicts --------------------------------------------------------------------------

@pytest.mark.parametrize("lo, hi, expected", [
    (2.1, 2.4, "holds"),          # the whole interval meets >= 2x
    (1.8, 2.3, "inconclusive"),   # straddles 2x
    (1.3, 1.7, "partly"),         # a gain, all of it short of 2x
    (0.95, 1.1, "does not hold"),  # no established gain
    (0.7, 0.9, "does not hold"),
])
def test_gain_verdict_on_the_interval(lo, hi, expected):
    assert verdict((lo + hi) / 2, 2.0, True, lo, hi) == expected


@pytest.mark.parametrize("lo, hi, expected", [
    (0.40, 0.48, "holds"), (0.45, 0.55, "inconclusive"), (0.6, 0.8, "partly"), (0.9, 1.1, "does not hold")])
def test_reduction_verdict_on_the_interval(lo, hi, expected):
    assert verdict((lo + hi) / 2, 0.5, False, lo, hi) == expected


def test_a_verdict_never_contradicts_its_interval():
    rng = random.Random(0)
    for _ in range(2000):
        lo = rng.uniform(0.2, 3)
        hi = lo + rng.uniform(0, 1.5)
        claim, higher = rng.choice([(2.0, True), (0.5, False), (28 / 50, False)])
        v = verdict((lo + hi) / 2, claim, higher, lo, hi)
        meets = [x >= claim if higher else x <= claim for x in (lo, hi)]
        assert (v == "holds") == all(meets)
        assert (v == "inconclusive") == (any(meets) and not all(meets))
        if v == "partly":
            assert (lo > 1) if higher else (hi < 1)


def test_planted_rows_get_each_verdict():
    def res(after_fps):
        return planted([row("baseline", "infer/fps_b4", [10, 10.5, 11]), row("optimized", "infer/fps_b4", after_fps)])

    verdicts = {name: by_row(seed.seed_table(res(s)))["Inference Speed"]["Verdict"]
                for name, s in [("holds", [23, 24, 25]), ("inconclusive", [19, 22, 25]), ("partly", [14, 15, 16]),
                                ("does not hold", [10, 10.5, 11])]}
    assert verdicts == {k: k for k in verdicts}
    change = by_row(seed.seed_table(res([19, 22, 25])))["Inference Speed"]["Change"]
    assert change.startswith("2.1x [") and "]" in change  # the interval is printed beside the ratio


# -- time to target: bounds and digits -------------------------------------------------------------

def test_ratio_digits_show_the_direction():
    assert fmt_ratio(60.2 / 60) == "1.003"
    assert fmt_ratio(0.5558, refs=(1.0, 0.556)) == "0.5558"  # "0.556" would read as meeting 0.556
    assert fmt_ratio(3.3412) == "3.34"


def _ttt(variant, value, budget, target=0.3):
    extra = {"budget_s": budget, "target_map50": target, "curve": []}
    return Row(variant, "accuracy/time_to_target_s", value, "s", stats=Stats.of([value]) if value else None,
               status="ok" if value is not None else "not-measured", extra=extra)


def test_time_bound_is_inconclusive_when_it_does_not_exclude_no_gain():
    # before missed the target in 60 s, after reached it at 60.2 s: ratio < 1.003, not a gain
    res = planted([_ttt("baseline", None, 60.0), _ttt("optimized", 60.2, 60.0)])
    r = by_row(seed.seed_table(res))["Training Time"]
    assert r["Change"] == "< 1.003x" and r["Verdict"] == "inconclusive"
    assert r["Before"] == "not reached in 60 s"
    # reached at 25 s, the other missed in 60 s: ratio < 0.417 <= 0.556 claimed
    r = by_row(seed.seed_table(planted([_ttt("baseline", None, 60.0), _ttt("optimized", 25.0, 60.0)])))["Training Time"]
    assert r["Change"] == "< 0.417x" and r["Verdict"] == "holds"
    # the optimized run missed its 60 s while the baseline reached at 40 s: ratio > 1.5
    r = by_row(seed.seed_table(planted([_ttt("baseline", 40.0, 60.0), _ttt("optimized", None, 60.0)])))["Training Time"]
    assert r["Change"] == "> 1.5x" and r["Verdict"] == "does not hold"


def test_censored_quartiles_over_seeds():
    q = censored_quartiles([100.0, None, 120.0], [600, 600, 600])  # one seed of three missed in 600 s
    assert q["low"][1] == q["high"][1] == 120.0 and q["high"][2] == math.inf and q["reached"] == 2
    before = censored_quartiles([None, None, 500.0], [600, 600, 600])  # median: more than 600 s
    r = censored_ratio(q, before)
    assert math.isnan(r.point) and r.lo == 0.0
    assert verdict(r.point, 0.556, False, r.lo, r.hi) == "inconclusive"  # q3 of after is open-ended
    assert fmt_change(judge.Ratio(math.nan, 0.0, 0.4)) == "< 0.4x"


# -- 2. rows that grade what the claim says --------------------------------------------------------

def _full_rows(device="cpu"):
    method = "cpu-rss" if device == "cpu" else "cuda-allocator"
    rows = [row("baseline", "params/image_backbone", [48_835_722]), row("optimized", "params/image_backbone", [27_517_818]),
            row("baseline", "params/trainable", [86_153_876]), row("optimized", "params/trainable", [32_327_556]),
            row("baseline", "params/total", [108_867_092]), row("optimized", "params/total", [55_040_772]),
            row("baseline", "memory/train_total", [2000.0], method=method, batch_size=8, precision="fp32"),
            row("optimized", "memory/train_total", [900.0], method=method, batch_size=8, precision="fp16"),
            row("baseline", "train/samples_per_s", [40, 41, 42], batch_size=8),
            row("optimized", "train/samples_per_s", [100, 101, 102], batch_size=8),
            row("baseline", "train_loop/samples_per_s", [30, 31, 32]),
            row("optimized", "train_loop/samples_per_s", [50, 51, 52]),
            row("baseline", "infer/fps_b4", [10, 10.5, 11]), row("optimized", "infer/fps_b4", [30, 31, 32]),
            row("baseline", "infer/fps_b1", [5, 5.5, 6]), row("optimized", "infer/fps_b1", [9, 9.5, 10])]
    if device == "cuda":
        rows += [row("baseline", "memory/train_reserved", [2200.0]), row("optimized", "memory/train_reserved", [1000.0]),
                 row("baseline", "memory/train_presetbatch_total", [2000.0], method=method, batch_size=8,
                     precision="fp32"),
                 row("optimized", "memory/train_presetbatch_total", [2700.0], method=method, batch_size=32,
                     precision="fp16")]
    return rows


def test_model_size_grades_the_image_backbone():
    t = by_row(seed.seed_table(planted(_full_rows())))
    size = t["Model Size"]
    assert size["Unit"].startswith("M params, image backbone")
    assert (size["Before"], size["After"], size["Verdict"]) == ("48.8", "27.5", "holds")
    assert "trainable 86.2 -> 32.3 M" in size["Also measured"] and "total" in size["Also measured"]
    # a backbone that is not the seed's ~28M and not a 0.56x reduction does not pass on rounding
    rows = [r for r in _full_rows() if r.metric != "params/image_backbone"]
    rows += [row("baseline", "params/image_backbone", [48.8e6]), row("optimized", "params/image_backbone", [40e6])]
    assert by_row(seed.seed_table(planted(rows)))["Model Size"]["Verdict"] == "partly"


def test_memory_rows_name_what_was_measured():
    cpu = by_row(seed.seed_table(planted(_full_rows("cpu"))))
    assert "peak RSS growth" in cpu["Memory"]["Unit"] and "batch 8 both" in cpu["Memory"]["Unit"]
    assert "Memory (preset batch)" not in cpu  # not measured: no row
    gpu = by_row(seed.seed_table(planted(_full_rows("cuda"))))
    assert "allocated (reserved)" in gpu["Memory"]["Unit"] and gpu["Memory"]["Before"] == "2,000 (reserved 2,200)"
    pb = gpu["Memory (preset batch)"]
    assert "batch 8 vs 32" in pb["Unit"] and pb["Verdict"] == "does not hold" and pb["Change"] == "1.35x"


def test_absolute_seed_figures_are_marked_and_the_loop_is_listed():
    t = by_row(seed.seed_table(planted(_full_rows())))
    assert t["Training Speed"]["Seed claim"].endswith("(†)") and t["Inference Speed"]["Seed claim"].endswith("(†)")
    assert not t["Model Size"]["Seed claim"].endswith("(†)")  # parameter counts are portable
    assert t["Training Speed"]["Verdict"] == "holds"  # the step row is graded ...
    assert "ovd train` loop" in t["Training Speed"]["Also measured"]  # ... the loop row listed beside
    assert "batch 1" in t["Inference Speed"]["Also measured"]
    assert "not comparable" in seed.notes(planted([]))


# -- seeds: accuracy rows, curves at equal samples, the accuracy run -------------------------------

def _acc_task(variant, seed_, mAP50_final, ttt, budget=100.0, samples_per_s=10.0):
    # curve: mAP50 grows linearly with samples, at `samples_per_s` per training second
    curve = [{"train_s": t, "samples": t * samples_per_s, "val/mAP50": mAP50_final * t / budget, "val/R@1": 0.5}
             for t in (25.0, 50.0, 75.0, 100.0)]
    extra = {"budget_s": budget, "target_map50": 0.5, "steps": 10}
    rows = [{"metric": "accuracy/val/mAP50", "value": mAP50_final, "unit": "fraction", "extra": extra},
            # the vocabulary protocol scores lower: absent classes are prompted too
            {"metric": "accuracy/val/vocab_mAP50", "value": mAP50_final - 0.2, "unit": "fraction", "extra": extra},
            {"metric": "accuracy/val/absent_fp_rate", "value": 1.0 - mAP50_final, "unit": "fraction", "extra": extra},
            {"metric": "accuracy/time_to_target_s", "value": ttt, "unit": "s", "extra": {**extra, "curve": curve},
             **({} if ttt is not None else {"status": "not-measured"})}]
    return {"status": "ok", "outcomes": {"accuracy": {"status": "ok", "rows": rows}},
            "environment": {"git_commit": "b" * 40, "source_hash": "s1"},
            "task": {"id": f"accuracy:{variant}:{seed_}", "variant": variant, "params": {"accuracy": {"seed": seed_}}}}


def accuracy_results(missed_after=False) -> Results:
    from bench.results import aggregate

    tasks, rows = {}, []
    for v, finals, ttts, sps in (("baseline-tiny", (0.40, 0.45, 0.50), (None, None, 95.0), 10.0),
                                 ("optimized-tiny", (0.80, 0.85, 0.90), (40.0, None if missed_after else 45.0, 50.0),
                                  20.0)):
        outs = []
        for s, (f, t) in enumerate(zip(finals, ttts)):
            tasks[f"accuracy:{v}:{s}"] = _acc_task(v, s, f, t, samples_per_s=sps)
            outs.append(tasks[f"accuracy:{v}:{s}"]["outcomes"]["accuracy"])
        rows += aggregate(v, "accuracy", outs)
    return Results(rows=rows, variants={"baseline-tiny": {}, "optimized-tiny": {"reference": "baseline-tiny"}},
                   tasks=tasks, profile={"name": "accuracy", "pair": ["baseline-tiny", "optimized-tiny"]},
                   environment={"git_commit": "b" * 40, "date_utc": "2026-01-01"}, command="ovd-bench run --profile accuracy")


def test_accuracy_rows_use_seeds_and_equal_samples():
    acc = accuracy_results()
    t = by_row(seed.seed_table(planted(_full_rows()), accuracy=acc))
    m = t["mAP"]
    assert m["Before"] == "0.45 [0.425, 0.475] n=3" and m["Change"].startswith("+40.0 points [+35.0, +45.0]")
    assert m["Verdict"] == "holds"
    # equal samples: the baseline saw 1000 samples in 100 s; the optimized reached 1000 at t = 50 s,
    # where its mAP50 was half its final value: 0.425 vs 0.45 -> -2.5 points [-6.2, +1.2]: straddles -1
    eq = t["mAP (equal samples)"]
    assert "1,000 training samples" in eq["Unit"] and eq["After"].startswith("0.425")
    assert eq["Change"] == "-2.5 points [-6.2, +1.2]" and eq["Verdict"] == "inconclusive"
    v = t["mAP (vocabulary)"]
    assert v["Before"] == "0.25 [0.225, 0.275] n=3" and v["Change"].startswith("+40.0 points [+35.0, +45.0]")
    assert v["Verdict"] == "holds" and "absent-phrase FP rate 0.55" in v["Also measured"]
    tt = t["Training Time"]
    assert tt["Before"].startswith("> 100 s") and tt["After"].startswith("45 s [42.5, 47.5] n=3")
    assert tt["Verdict"] == "holds" and tt["Change"].startswith("< ")


def test_a_missed_seed_widens_the_time_interval():
    t = by_row(seed.seed_table(planted([]), accuracy=accuracy_results(missed_after=True)))["Training Time"]
    assert "2 reached" in t["After"] and t["Verdict"] == "inconclusive"


def test_render_names_the_accuracy_run_and_plots_seed_curves(tmp_path):
    text = report.render(planted(_full_rows()), tmp_path, accuracy=accuracy_results()).read_text()
    head = text.split("## The seed's claims")[0]
    assert "accuracy run: `ovd-bench run --profile accuracy`" in head and "`bbbbbbbbbbbb`" in head
    assert "| seeds" in text.replace("  ", " ") or "seeds" in text.split("## Accuracy")[1]
    assert (tmp_path / "accuracy_curve.png").stat().st_size > 5000


# -- 3. provenance at the top ----------------------------------------------------------------------

def _task_env(h):
    return {"status": "ok", "outcomes": {}, "environment": {"git_commit": "c" * 40, "source_hash": h}}


@pytest.mark.parametrize("without_env_helper", [False, True])
def test_mixed_source_hashes_are_said_at_the_top(tmp_path, monkeypatch, without_env_helper):
    import bench.env

    if without_env_helper:  # the fallback reads the tasks' environments itself
        monkeypatch.delattr(bench.env, "provenance_summary", raising=False)
    res = planted(_full_rows(), tasks={"a": _task_env("1" * 64), "b": _task_env("2" * 64)},
                  environment={"git_commit": "c" * 40, "git_dirty": False, "source_hash": "1" * 64})
    head = report.render(res, tmp_path).read_text().split("## The seed's claims")[0]
    assert "commit `cccccccccccc`" in head and "source hash `111111111111`" in head
    assert "2 different source hashes" in head
    one = planted(_full_rows(), tasks={"a": _task_env("1" * 64)},
                  environment={"git_commit": "c" * 40, "git_dirty": True, "source_hash": "1" * 64})
    head = report.render(one, tmp_path).read_text().split("## The seed's claims")[0]
    assert "different source hashes" not in head and "uncommitted changes" in head


# -- peers: every batch measured -------------------------------------------------------------------

def test_peer_targets_at_every_batch():
    variants = dict(PAIR, **{"peer:grounding-dino-t": {"group": "peer"}})
    res = planted([row("optimized", "infer/fps_b1", [9, 10, 11]), row("peer:grounding-dino-t", "infer/fps_b1", [1, 1.05, 1.1]),
                   row("optimized", "infer/fps_b4", [30, 31, 32]), row("peer:grounding-dino-t", "infer/fps_b4", [2, 2.1, 2.2]),
                   row("optimized", "params/total", [55e6]), row("peer:grounding-dino-t", "params/total", [172e6])],
                  variants=variants)
    t = {(r["target"].split()[0], r["batch"]): r for r in peer_targets(res)}
    assert t[("FPS", 1)]["verdict"] == "inconclusive"  # 9.52x [8.6, 10.4]: straddles 10x
    assert t[("FPS", 4)]["verdict"] == "holds"  # 14.8x [14.0, 15.5]
    assert t[("total", "-")]["verdict"] == "holds" and t[("total", "-")]["ours / peer"] == "0.32x"


# -- 4. layering and tables ------------------------------------------------------------------------

LAYER = {"format": 0, "judge": 1, "accuracy_data": 1, "provenance": 1, "plots": 2, "seed": 3, "tables": 3,
         "accuracy": 3, "peers": 3, "roofline": 3, "scaling": 3, "arms": 3, "dataparallel": 3, "sweep": 3, "ceiling": 3,
         "arms_accuracy": 3, "__init__": 4}


def test_report_modules_import_downward_only():
    pkg = Path(report.__file__).parent
    modules = {p.stem for p in pkg.glob("*.py")}
    assert modules == set(LAYER), f"new module without a layer: {modules ^ set(LAYER)}"
    for path in pkg.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                targets = [node.module] if node.module else [a.name for a in node.names]
                for t in targets:
                    assert LAYER[t] < LAYER[path.stem], f"{path.stem} imports {t} (same or higher layer)"
            if isinstance(node, ast.ImportFrom) and node.level == 2:
                assert node.module != "report", f"{path.stem} imports the package top"


def test_markdown_tables_through_pandas():
    text = md([{"a": "x|y", "b": 1}, {"a": "z"}])
    lines = text.strip().splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert cells[0] == ["a", "b"] and cells[2] == ["x/y", "1"] and cells[3] == ["z", "-"]
    assert md([]).strip() == "_nothing measured_"


# -- 5. plots --------------------------------------------------------------------------------------

def test_bars_separate_model_sizes_and_draw_the_claim(tmp_path):
    variants = dict(PAIR, **{"baseline-tiny": {"group": "main", "preset": "baseline-tiny"},
                             "optimized-tiny": {"group": "main", "reference": "baseline-tiny", "preset": "optimized-tiny"},
                             "peer:grounding-dino-t": {"group": "peer"}})
    res = planted([row("baseline", "infer/fps_b4", [5, 5.5, 6]), row("optimized", "infer/fps_b4", [15, 15.5, 16]),
                   row("baseline-tiny", "infer/fps_b4", [60, 66, 70]), row("optimized-tiny", "infer/fps_b4", [140, 147, 150]),
                   row("peer:grounding-dino-t", "infer/fps_b4", [1.2, 1.3])], variants=variants)
    panels = plots.panels(res, "infer/fps_b4")
    assert [[n for n, _ in items] for items in panels.values()] == [["baseline", "optimized", "peer:grounding-dino-t"],
                                                                    ["baseline-tiny", "optimized-tiny"]]
    tiny = list(panels.values())[1]
    assert plots.claim_levels(res, tiny, 2.0) == {"optimized-tiny": 132.0}
    assert plots.bar_panels(res, "infer/fps_b4", "images/s", tmp_path, "fps.png", 2.0) == "fps.png"
    assert (tmp_path / "fps.png").stat().st_size > 5000


# -- issue 11: the recommendation line, issue 9: the peak-batch seed rows, INCOMPLETE -----------------

def _arm_rows(gains: dict, parity: dict):
    rows = []
    for name, samples in gains.items():
        rows.append(row("optimized", f"arm/{name}/gain", samples, "x"))
        rows.append(row("optimized", f"arm/{name}/parity_ok", [1.0 if parity.get(name) else 0.0]))
    return rows


def _judged(bf16_ok: bool):
    ref = {"mAP50": 0.90, "R@1": 0.92}
    bf16 = ref if bf16_ok else {"mAP50": 0.80, "R@1": 0.92}
    int8 = {"mAP50": 0.70, "R@1": 0.60}  # rejected
    rows = []
    for arm, vals in (("eager", ref), ("bf16-autocast", bf16), ("int8-dynamic", int8)):
        for metric, value in vals.items():
            rows.append(row("optimized-tiny", f"arm_acc/{arm}/val/{metric}", [value], "mAP"))
    return planted(rows)


def test_recommendation_is_the_fastest_accepted_arm():
    from bench.report import recommendation

    res = planted(_arm_rows({"bf16-autocast": [2.9, 3.0, 3.1], "int8-dynamic": [3.5, 3.6, 3.7],
                             "inference-mode": [1.05, 1.1, 1.15], "channels-last": [1.3, 1.4, 1.5]},
                            parity={"inference-mode": True, "channels-last": False}))
    line = recommendation(res, _judged(bf16_ok=True))
    # int8 is faster but lost accuracy on the trained checkpoint; bf16 kept it
    assert "`bf16-autocast`" in line and "[2.95, 3.05]" in line and "--precision bf16" in line
    line = recommendation(res, _judged(bf16_ok=False))
    # no reduced arm accepted: the fastest fp32 arm within parity (channels-last is outside it)
    assert "`inference-mode`" in line
    assert "no arm beyond fp32 eager" in recommendation(planted([]), _judged(bf16_ok=True))


def test_recommendation_names_the_onnxruntime_flags_and_respects_an_arms_own_verdict():
    from bench.report import recommendation

    ref = {"mAP50": 0.90, "R@1": 0.92}
    judged_rows = []
    for arm, vals in (("eager", ref), ("onnx-ort", ref), ("onnx-ort-int8-static", ref)):
        for metric, value in vals.items():
            judged_rows.append(row("optimized-tiny", f"arm_acc/{arm}/val/{metric}", [value], "mAP"))
    res = planted(_arm_rows({"onnx-ort": [1.4, 1.5, 1.6], "onnx-ort-int8-static": [1.9, 2.0, 2.1],
                             "inference-mode": [1.05, 1.1, 1.15]},
                            parity={"onnx-ort": True, "inference-mode": True}))
    line = recommendation(res, planted(judged_rows))
    assert "`onnx-ort-int8-static`" in line and "--backend onnxruntime --quantize int8" in line
    # the static int8 arm rejected on the checkpoint: the fp32 ONNX arm (within parity, accepted) is next
    judged_rows = [r for r in judged_rows if "int8" not in r.metric] + [
        row("optimized-tiny", "arm_acc/onnx-ort-int8-static/val/mAP50", [0.5], "mAP"),
        row("optimized-tiny", "arm_acc/onnx-ort-int8-static/val/R@1", [0.92], "mAP")]
    line = recommendation(res, planted(judged_rows))
    assert "`onnx-ort`" in line and "--backend onnxruntime" in line and "--quantize" not in line


def test_recommendation_of_int8_except_text_names_its_own_flag():
    from bench.report import predict_flag, recommendation

    assert predict_flag(("inference_mode", "int8_except_text", "text_cache")) == "--quantize int8-except-text"
    # a compiled arm is run by predict's --compile, never by "predict's default"; the GPU compile modes are the suite's
    assert predict_flag(("compile_frozen", "text_cache")) == "--compile frozen"
    assert predict_flag(("compile",)) == "--compile default"
    assert predict_flag(("cuda_graphs",)) is None and predict_flag(("inference_mode", "bf16", "cuda_graphs")) is None
    ref = {"mAP50": 0.90, "R@1": 0.92}
    judged_rows = [row("optimized-tiny", f"arm_acc/{arm}/val/{metric}", [value], "mAP")
                   for arm, vals in (("eager", ref), ("int8-dynamic", {"mAP50": 0.80, "R@1": 0.92}),
                                     ("int8-except-text", ref))
                   for metric, value in vals.items()]
    res = planted(_arm_rows({"int8-dynamic": [1.4, 1.45, 1.5], "int8+text-cache": [1.45, 1.5, 1.55],
                             "int8-except-text+text-cache": [1.3, 1.35, 1.4], "inference-mode": [1.0, 1.02, 1.04]},
                            parity={"inference-mode": True}))
    # the all-Linear int8 arms are faster but rejected; the text encoder kept fp32 was accepted: its combined arm
    line = recommendation(res, planted(judged_rows))
    assert "`int8-except-text+text-cache`" in line and "--quantize int8-except-text" in line
    # the fastest arm is an exact compiled one: recommended on its parity, with predict's compile option
    res = planted(_arm_rows({"compile-frozen+text-cache": [1.9, 2.0, 2.1], "inference-mode": [1.0, 1.02, 1.04]},
                            parity={"compile-frozen+text-cache": True, "inference-mode": True}))
    line = recommendation(res, planted(judged_rows))
    assert "`compile-frozen+text-cache`" in line and "`ovd predict ... --compile frozen`" in line
    assert "pays off" not in line  # no set-up measured in these rows: nothing claimed
    # with its set-up and speed measured: 70 s at 20 images/s and a 2.0x gain pays back after 70 * 20 / 1 images
    slow_setup = [row("optimized", "arm/compile-frozen+text-cache/setup_s", [70.0], "s"),
                  row("optimized", "arm/compile-frozen+text-cache/fps_b8", [20.0], "images/s")]
    res = planted(_arm_rows({"compile-frozen+text-cache": [1.9, 2.0, 2.1], "inference-mode": [1.0, 1.02, 1.04]},
                            parity={"compile-frozen+text-cache": True, "inference-mode": True}) + slow_setup)
    line = recommendation(res, planted(judged_rows))
    assert "its 70 s of set-up pays off after about 1,400 images" in line, line
    # a warm Inductor cache's set-up is named beside it; the pay-off stays the first (cold) run's
    res = planted(_arm_rows({"compile-frozen+text-cache": [1.9, 2.0, 2.1], "inference-mode": [1.0, 1.02, 1.04]},
                            parity={"compile-frozen+text-cache": True, "inference-mode": True}) + slow_setup
                  + [row("optimized", "arm/compile-frozen+text-cache/setup_warm_s", [14.0, 15.0], "s")])
    line = recommendation(res, planted(judged_rows))
    assert "its 70 s of set-up (14.5 s when its Inductor cache is warm, on a later run) pays off after about " \
           "1,400 images" in line, line
    cell = next(r for r in arms_ranking(res) if r["arm"] == "compile-frozen+text-cache")
    assert cell["set-up (s)"] == "70 (warm cache 14.5)" and cell["pays off after"] == "1,400 images"
    # one predict cannot run (CUDA graphs) is named as the suite's only, never as predict's default
    res = planted(_arm_rows({"cuda-graphs": [1.9, 2.0, 2.1], "inference-mode": [1.0, 1.02, 1.04]},
                            parity={"cuda-graphs": True, "inference-mode": True}))
    line = recommendation(res, planted(judged_rows))
    assert "`cuda-graphs`" in line and "`ovd predict` cannot run it yet" in line and "its default" not in line


def test_peak_batch_table_grades_each_variant_at_its_own_peak():
    from bench.report.seed import CLAIMS
    from bench.report.sweep import PEAK_CLAIMS, peak_batch_table

    assert {m: c[2] for m, c in PEAK_CLAIMS.items()} == {"train": CLAIMS["train"].ratio, "infer": CLAIMS["infer"].ratio}
    rows = [row("baseline", "sweep/infer/throughput_b1", [10, 10, 10], "images/s"),
            row("baseline", "sweep/infer/throughput_b2", [12, 12.5, 13], "images/s"),
            row("baseline", "sweep/infer/throughput_b4", [11, 11, 11], "images/s"),
            row("optimized", "sweep/infer/throughput_b1", [20, 20, 20], "images/s"),
            row("optimized", "sweep/infer/throughput_b8", [40, 41, 42], "images/s")]
    table = peak_batch_table(planted(rows), "baseline", "optimized")
    assert len(table) == 1  # no train sweep
    t = table[0]
    assert "(b2)" in t["Before (peak batch)"] and "(b8)" in t["After (peak batch)"]
    assert t["Verdict"] == "holds"  # 41/12.5 = 3.3x, interval [40/13, 42/12] above 2


def test_incomplete_banner_lists_what_was_not_run():
    from bench.report.provenance import incomplete_lines

    res = planted([], profile={"planned_tasks": ["static:a", "speed:a:0", "speed:a:1"]},
                  environment={"stopped_by_time_limit_s": 480.0, "suite_seconds": 470.0},
                  tasks={"static:a": {"status": "ok"}})
    text = "\n".join(incomplete_lines(res))
    assert "INCOMPLETE" in text and "2 of 3" in text and "`speed:a:1`" in text and "480 s" in text
    res.tasks.update({"speed:a:0": {}, "speed:a:1": {}})
    assert incomplete_lines(res) == []
    # killed before the end (no suite_seconds), nothing missing yet recorded: still flagged
    assert incomplete_lines(planted([], profile={"planned_tasks": ["x"]}, tasks={"x": {}})) != []


def test_failed_repeats_are_named_at_the_top_of_the_report(tmp_path):
    from bench.report.provenance import failed_repeat_lines
    from bench.results import aggregate

    ok = {"status": "ok", "rows": [{"metric": "train/samples_per_s", "value": 5.88, "unit": "samples/s"}]}
    bad = {"status": "error", "error": "worker exited with -9 (killed: out of memory?)"}
    res = planted(aggregate("optimized", "speed", [ok, bad, bad, bad, bad]))
    text = "\n".join(failed_repeat_lines(res))
    assert "Failed repeats" in text and "`optimized` speed: 4 of 5 processes failed" in text and "-9" in text
    assert failed_repeat_lines(planted(aggregate("optimized", "speed", [ok, ok]))) == []
    assert "Failed repeats" in report.render(res, tmp_path).read_text()


def test_an_accuracy_run_from_another_machine_is_named_in_the_header(tmp_path):
    here = {"device": "cpu", "cpu_model": "CPU A", "cpu_features": "avx2"}
    res = planted([row("optimized", "params/total", [5.0])], environment=here)
    acc = planted([row("optimized-tiny", "accuracy/val/mAP50", [0.9])],
                  environment={**here, "cpu_model": "CPU B"})
    text = report.render(res, tmp_path, accuracy=acc).read_text()
    assert "accuracy run was measured on another machine" in text and "CPU B" in text
    acc.environment["cpu_model"] = "CPU A"
    assert "accuracy run was measured on another machine" not in report.render(res, tmp_path, accuracy=acc).read_text()


def test_break_even_images_by_hand():
    from bench.report.arms import break_even_images, fmt_break_even

    # eager at 10 images/s (0.1 s each), the arm 1.25x: 12.5 images/s (0.08 s each); 0.02 s saved per image,
    # so 60 s of set-up is paid back after 3,000 images
    assert break_even_images(60.0, 12.5, 1.25) == pytest.approx(3000.0)
    assert break_even_images(60.0, 9.0, 0.9) is None and break_even_images(60.0, 10.0, 1.0) is None
    assert fmt_break_even(60.0, 12.5, 1.25) == "3,000 images" and fmt_break_even(70.5, 15.9, 1.16) == "7,000 images"
    assert fmt_break_even(60.0, 9.0, 0.9) == "never (no gain)" and fmt_break_even(None, 9.0, 0.9) == "-"
    # a median gain above 1 whose interval reaches 1 gets no count (it once printed "35,000,000 images" for
    # 1.0x [0.998, 1.07]); an interval clear of 1 keeps its count
    assert fmt_break_even(188.0, 20.0, 1.001, gain_q1=0.998).startswith("no gain established")
    assert fmt_break_even(60.0, 12.5, 1.25, gain_q1=1.2) == "3,000 images"


def test_the_method_line_says_how_the_processes_started():
    tasks = {"static:a": {"worker_start": "fork"}, "speed:a:0": {"worker_start": "fork"},
             "memory_train:a": {"worker_start": "exec"}}
    assert report.worker_starts(Results(tasks=tasks)) == (
        "; 2 of 3 measurement processes forked from a server that imported the libraries once (the rest, memory "
        "included, each a new interpreter)")
    # results from before the fork server (no record) or a --fresh-interpreter run: the method line as it was
    assert report.worker_starts(Results(tasks={"static:a": {}, "memory_train:a": {"worker_start": "exec"}})) == ""


def test_roofline_names_the_fastest_accepted_exact_arm_both_ways():
    """Issue 11's 60% target for the fastest fp32-exact arm: its own processes' images/s against the fp32 peak,
    and fp32 eager's images/s x its paired gain; both with intervals, and the eager speed inside its processes."""
    from bench.report import roofline

    peak = row("machine", "roofline/peak_fp32", [100e9, 100e9, 100e9], "FLOP/s", native=True, best_size=512,
               threads=2)
    flops = row("optimized", "flops/per_image", [10e9], "FLOP")
    rows = [peak, flops,
            row("optimized", "arm/eager/fps_b8", [6.0, 7.0, 8.0], "images/s"),  # 70% of the peak
            # ONNX Runtime: 1.2x paired, but its processes ran while the machine was slow (eager at 5.0 there)
            row("optimized", "arm/onnx-ort/fps_b8", [6.0, 6.0, 6.0], "images/s"),
            row("optimized", "arm/int8-dynamic/fps_b8", [9.0, 9.0, 9.0], "images/s")]
    rows += _arm_rows({"onnx-ort": [1.2, 1.2, 1.2], "int8-dynamic": [1.5, 1.5, 1.5], "channels-last": [1.4] * 3},
                      parity={"onnx-ort": True, "int8-dynamic": True, "channels-last": False})
    rows.append(row("optimized", "arm/channels-last/fps_b8", [9.0], "images/s"))
    variants = dict(PAIR, machine={"group": "machine"})
    res = planted(rows, variants=variants)
    s = roofline.exact_arm_sentence(res)
    # int8 is faster but not fp32; channels-last is outside parity: ONNX Runtime is the exact arm named
    assert "`onnx-ort`" in s and "int8" not in s and "channels-last" not in s
    # own: 10 GFLOP x 6 images/s / 100 GFLOP/s = 60%; paired: 7 [6.5, 7.5] x 1.2 images/s -> 84% [78, 90]
    assert "reaches 60% [60, 60] of the fp32 peak" in s and "84% [78, 90]" in s
    assert "holds by either reading" in s
    assert "fp32 eager ran at 5 images/s (median) inside `onnx-ort`'s processes and 7 in its own row's" in s
    # rejected on a trained checkpoint: never named as accepted; nothing else qualifies -> no sentence
    assert roofline.exact_arm_sentence(res, rejected={"onnx-ort"}) == ""
    # the section carries it after the optimized model's own sentence
    text = "".join(roofline.section(res))
    assert text.index("`optimized` (arm eager") < text.index("The fastest accepted fp32-exact arm")
    # a slower exact arm whose own reading misses 60% while the paired one holds: both verdicts, each named
    rows[3] = row("optimized", "arm/onnx-ort/fps_b8", [5.0, 5.0, 5.0], "images/s")
    s = roofline.exact_arm_sentence(planted(rows, variants=variants))
    assert "does not hold by its own, holds by the paired reading" in s


def test_roofline_table_reads_reduced_arms_against_their_own_dtype_peak():
    """An int8 arm against the measured int8 GEMM peak (it used to print "-" even where the peak was measured);
    a bf16 arm on a machine without a bf16 peak says so; fp32 rows leave the column to the fp32 one."""
    from bench.report import roofline

    rows = [row("machine", "roofline/peak_fp32", [100e9], "FLOP/s", native=True),
            row("machine", "roofline/peak_int8", [900e9], "OP/s", native=True),
            row("optimized", "flops/per_image", [10e9], "FLOP"),
            row("optimized", "arm/eager/fps_b8", [7.0], "images/s"),
            row("optimized", "arm/int8-dynamic/fps_b8", [9.0], "images/s"),
            row("optimized", "arm/bf16-autocast/fps_b8", [1.0], "images/s")]
    table = {r["configuration"]: r for r in roofline.roofline_table(
        planted(rows, variants=dict(PAIR, machine={"group": "machine"})))}
    assert table["optimized @ arm int8-dynamic"]["% of own-dtype peak"] == "10 (int8)"  # 90 G of 900 G
    assert table["optimized @ arm int8-dynamic"]["% of fp32 peak"] == "90"
    assert table["optimized @ arm bf16-autocast"]["% of own-dtype peak"] == "no bf16 peak measured"
    assert table["optimized @ arm eager"]["% of own-dtype peak"] == "-"


def test_arms_section_names_the_arms_timed_in_one_round():
    from bench.report import arms as arms_report

    rows = _arm_rows({"bf16-autocast": [0.14, 0.14, 0.15], "inference-mode": [1.05, 1.1, 1.15]},
                     parity={"inference-mode": True})
    # as the runner merges them: the first process's extra, and each process's in per_repeat
    rows[0].extra["per_repeat"] = [{}, {"timed_once": "parity call 9.1 s >= 3x"}, {}]
    text = "".join(arms_report.section(planted(rows)))
    tail = text.split("Timed in the first round only")[1]
    assert "`bf16-autocast` (0.14 [0.14, 0.145]x; 1 of 3 processes)" in tail and "`inference-mode`" not in tail
    assert "first round only" not in "".join(arms_report.section(planted(_arm_rows({"inference-mode": [1.1]}, {}))))


def test_the_seed_section_says_what_auto_ran_as_only_where_it_was_measured():
    ran = report._precisions(planted([row("baseline", "train/samples_per_s", [1.0], precision="fp32"),
                                      row("optimized", "train/samples_per_s", [3.0], precision="bf16")]),
                             ("baseline", "optimized"))
    assert ran == ", here baseline fp32, optimized bf16"
    half = report._precisions(planted([row("optimized", "train/samples_per_s", [3.0], precision="bf16")]),
                              ("baseline", "optimized"))
    assert half == ", here baseline not measured, optimized bf16"
    # an accuracy-only run has no training-speed rows: no "not measured, not measured" clause
    assert report._precisions(planted([]), ("baseline", "optimized")) == ""
