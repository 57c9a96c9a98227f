"""The plan: repeat counts of the pair, interleaving, the training loop, seeds of the accuracy runs,
the roofline as the machine's own measurement; the progress estimate."""

import dataclasses
import re
from pathlib import Path

import pytest

import bench.runner as runner
from bench.env import provenance
from bench.errors import UsageError
from bench.profiles import PROFILES, get_profile, restrict, with_overrides
from bench.results import Results
from bench.runner import MACHINE, Task, estimate_seconds_left, plan, rebuild_rows, run_profile
from bench.variants import VARIANTS


def _speed_counts(tasks):
    counts = {}
    for t in tasks:
        if t.kind == "speed":
            counts[t.variant] = counts.get(t.variant, 0) + 1
    return counts


def test_default_profile_gives_the_pair_at_least_five_repeats():
    p = get_profile("default")
    counts = _speed_counts(plan(p))
    for v in p.pair:
        assert counts[v] >= 5
    others = [v for v in p.speed_variants if v not in p.pair]
    assert others and all(counts[v] == p.repeats < counts[p.pair[0]] for v in others)


@pytest.mark.parametrize("name", ["quick", "default", "full"])
def test_speed_rounds_are_interleaved(name):
    p = get_profile(name)
    ids = [t.id for t in plan(p)]
    a, b = p.pair
    for r in range(p.pair_rounds - 1):
        # A B A B: every round visits the pair before the next round starts
        assert ids.index(f"speed:{a}:{r}") < ids.index(f"speed:{b}:{r}") < ids.index(f"speed:{a}:{r + 1}")
    if p.repeats and len(p.speed_variants) > 2:
        other = next(v for v in p.speed_variants if v not in p.pair)
        assert ids.index(f"speed:{a}:0") < ids.index(f"speed:{other}:0") < ids.index(f"speed:{a}:1")


@pytest.mark.parametrize("name", ["quick", "default", "full"])
def test_train_loop_is_planned_for_the_pair_in_the_speed_rounds(name):
    p = get_profile(name)
    tasks = plan(p)
    loops = [t for t in tasks if t.kind == "train_loop"]
    assert p.train_loop_steps > 0
    assert {t.variant for t in loops} == set(p.pair) and len(loops) == 2 * p.train_loop_repeats
    spec = loops[0].params["train_loop"]
    assert spec["steps"] == p.train_loop_steps and spec["warmup_steps"] == p.train_loop_warmup
    assert set(spec) == {"batch_size", "steps", "warmup_steps"}
    ids = [t.id for t in tasks]
    a = p.pair[0]
    assert ids.index(f"speed:{a}:0") < ids.index(f"train_loop:{a}:0") < ids.index(f"speed:{a}:1")


def test_train_loop_off_by_default_and_in_the_accuracy_profile():
    assert not any(t.kind == "train_loop" for t in plan(get_profile("accuracy")))
    p = dataclasses.replace(get_profile("quick"), train_loop_steps=0)
    assert not any(t.kind == "train_loop" for t in plan(p))


def test_accuracy_profile_trains_each_variant_with_several_seeds_interleaved():
    p = get_profile("accuracy")
    acc = [t for t in plan(p) if t.kind == "accuracy"]
    assert len(p.accuracy_seeds) >= 2  # a spread needs two; a third costs 25 min on 2 cores (the profile says so)
    for v in p.accuracy_variants:
        seeds = [t.params["accuracy"]["seed"] for t in acc if t.variant == v]
        assert sorted(seeds) == sorted(p.accuracy_seeds)
    assert [t.id for t in acc][:2] == [f"accuracy:{v}:{p.accuracy_seeds[0]}" for v in p.accuracy_variants]
    assert all(re.fullmatch(r"accuracy:[\w+-]+:\d+", t.id) for t in acc)


def test_accuracy_seeds_aggregate_into_one_row_with_a_spread():
    res = Results()
    for seed, (m, ttt) in enumerate([(0.5, 40.0), (0.6, 30.0), (0.55, 35.0)]):
        res.tasks[f"accuracy:v:{seed}"] = {
            "status": "ok", "task": {"id": f"accuracy:v:{seed}", "variant": "v", "repeat": seed},
            "outcomes": {"accuracy": {"status": "ok", "rows": [
                {"metric": "accuracy/val/mAP50", "value": m, "unit": "fraction"},
                {"metric": "accuracy/time_to_target_s", "value": ttt, "unit": "s"}]}}}
    rebuild_rows(res)
    row = res.get("v", "accuracy/val/mAP50")
    assert row.stats.n == 3 and row.value == pytest.approx(0.55) and row.stats.iqr > 0
    assert res.get("v", "accuracy/time_to_target_s").stats.n == 3


def test_roofline_is_the_machines_measurement_not_a_variant():
    assert MACHINE not in VARIANTS
    p = get_profile("quick")
    assert "roofline" in p.extras and p.roofline_sizes
    roof = [t for t in plan(p) if t.kind == "roofline"]
    assert len(roof) == p.roofline_repeats
    assert all(t.variant is None and t.row_label == MACHINE for t in roof)
    for prof in PROFILES.values():
        assert MACHINE not in prof.names()


def test_explicit_repeats_apply_to_the_pair_too():
    p = with_overrides(get_profile("default"), repeats=2)
    assert set(_speed_counts(plan(p)).values()) == {2}
    q = restrict(get_profile("quick"), ["optimized-tiny"])
    assert _speed_counts(plan(q)) == {"optimized-tiny": q.pair_rounds}


def test_estimate_uses_the_same_kind_then_all_tasks():
    remaining = [Task("speed:a:1", "a", ["speed"]), Task("speed:b:1", "b", ["speed"]),
                 Task("accuracy:a:0", "a", ["accuracy"])]
    assert estimate_seconds_left(remaining, {}) is None
    finished = {"speed": [10.0, 20.0], "static": [3.0]}
    # two speed tasks at their mean (15 s), the accuracy task at the mean of all (11 s)
    assert estimate_seconds_left(remaining, finished) == pytest.approx(15 + 15 + 11)


def _fake_run_task(now, seconds=2.0, clock=None):
    def fake_run_task(task, threads, device, timeout_s, out_dir=None, start=None):
        if clock is not None:
            clock[0] += seconds  # a fake perf_counter advanced by the "measurement"
        return {"status": "ok", "wall_seconds": seconds, "environment": dict(now),
                "outcomes": {m: {"status": "ok", "rows": [{"metric": "params/total", "value": 1.0, "unit": ""}]}
                             for m in task.measurements},
                "task": {"id": task.id, "variant": task.row_label, "measurements": task.measurements,
                         "repeat": task.repeat, "params": task.params}}
    return fake_run_task


def test_time_limit_stops_starting_tasks_and_the_report_says_incomplete(tmp_path, monkeypatch, capsys):
    from bench.report.provenance import incomplete_lines

    clock = [0.0]
    monkeypatch.setattr(runner, "run_task", _fake_run_task(provenance(), seconds=10.0, clock=clock))
    monkeypatch.setattr(runner.time, "perf_counter", lambda: clock[0])
    p = with_overrides(get_profile("quick"), static_variants=("baseline-tiny", "optimized-tiny", "baseline-tiny+sdpa"),
                       memory_variants=(), speed_variants=(), extras=(), repeats=0, train_loop_steps=0)
    # 10 s per task, 25 s allowed: the third would end at 30 s, so it is not started
    res = run_profile(p, tmp_path, threads=1, time_limit_s=25)
    assert sorted(res.tasks) == ["static:baseline-tiny", "static:optimized-tiny"]
    assert res.profile["planned_tasks"] == [f"static:{v}" for v in p.static_variants]
    assert res.environment["stopped_by_time_limit_s"] == 25
    assert "not started" in capsys.readouterr().err
    banner = "\n".join(incomplete_lines(Results.load(tmp_path / "results.json")))
    assert "INCOMPLETE" in banner and "`static:baseline-tiny+sdpa`" in banner


def test_progress_line_shows_done_total_and_time_left(tmp_path, monkeypatch, capsys):
    now = provenance()
    monkeypatch.setattr(runner, "run_task", _fake_run_task(now))
    p = with_overrides(get_profile("quick"), static_variants=("baseline-tiny", "optimized-tiny", "baseline-tiny+sdpa"),
                       memory_variants=(), speed_variants=(), extras=(), repeats=0, train_loop_steps=0)
    res = run_profile(p, tmp_path, threads=1)
    err = capsys.readouterr().err
    assert "done 1/3" in err and "about 4 s left" in err and "done 3/3" in err
    assert res.environment["source_hashes"] == [now["source_hash"]]


def test_arms_accuracy_judges_the_checkpoint_of_each_seed():
    p = get_profile("accuracy")
    assert p.arms_accuracy_seeds == p.accuracy_seeds == (0, 1)
    tasks = plan(p)
    writers = {t.params["accuracy"]["seed"]: t for t in tasks
               if t.kind == "accuracy" and t.params["accuracy"].get("checkpoint_out")}
    judges = {t.params["arms_accuracy"]["train"]["seed"]: t for t in tasks if t.kind == "arms_accuracy"}
    assert set(writers) == set(judges) == {0, 1}
    for seed, judge in judges.items():
        writer = writers[seed]
        assert writer.id == f"accuracy:{p.arms_accuracy_variant}:{seed}"
        assert judge.params["arms_accuracy"]["checkpoint"] == writer.params["accuracy"]["checkpoint_out"]
        assert judge.id == f"arms_accuracy:{p.arms_accuracy_variant}:{seed}"
        assert judge.row_label == f"{p.arms_accuracy_variant} seed {seed}"  # one row label per checkpoint
        assert tasks.index(judge) > tasks.index(writer)
    assert judges[0].params["arms_accuracy"]["checkpoint"] != judges[1].params["arms_accuracy"]["checkpoint"]
    with pytest.raises(UsageError, match="arms_accuracy_seeds"):
        with_overrides(p, arms_accuracy_seeds=(2,))


def test_arms_accuracy_judges_the_checkpoint_the_first_seed_writes():
    p = dataclasses.replace(get_profile("accuracy"), arms_accuracy_seeds=None)  # None: the first seed only
    tasks = plan(p)
    writer = [t for t in tasks if t.kind == "accuracy" and t.params["accuracy"].get("checkpoint_out")]
    judge = [t for t in tasks if t.kind == "arms_accuracy"]
    assert len(writer) == 1 and len(judge) == 1
    assert writer[0].id == f"accuracy:{p.arms_accuracy_variant}:{p.accuracy_seeds[0]}"
    assert judge[0].params["arms_accuracy"]["checkpoint"] == writer[0].params["accuracy"]["checkpoint_out"]
    assert not Path(judge[0].params["arms_accuracy"]["checkpoint"]).is_absolute()  # no machine path in results
    assert tasks.index(judge[0]) > tasks.index(writer[0])
    assert judge[0].variant is None and judge[0].row_label == p.arms_accuracy_variant


def test_run_folder_paths_resolve_for_the_worker_only(tmp_path):
    from bench.runner import _in_run_folder

    params = {"arms_accuracy": {"checkpoint": "checkpoints/x.ckpt", "max_images": 4}}
    out = _in_run_folder(params, tmp_path)
    assert out["arms_accuracy"]["checkpoint"] == str(tmp_path.resolve() / "checkpoints/x.ckpt")
    assert params["arms_accuracy"]["checkpoint"] == "checkpoints/x.ckpt"  # the recorded plan is untouched


def test_sweep_and_ceiling_come_first_in_the_gpu_profile():
    p = get_profile("gpu")
    kinds = [t.kind for t in plan(p)]
    first_other = next(i for i, k in enumerate(kinds) if k not in ("sweep", "ceiling"))
    assert set(kinds[:first_other]) == {"sweep", "ceiling"}
    assert kinds.count("sweep") == p.sweep_repeats * len(p.pair) * len(p.sweep_modes)
    assert p.time_limit_s is not None and p.time_limit_s <= 480


def test_the_gpu_profile_times_every_cached_text_arm_predict_can_run_on_cuda():
    """The recommendation can only name an arm the run timed: each `--precision` predict runs on CUDA (bf16, bf16-image)
    with its cached text, as the CPU default times them."""
    from bench.measure.arms import ARMS
    from bench.report import predict_flag

    gpu, cpu = set(get_profile("gpu").arms), set(get_profile("default").arms)
    shippable = {a for a in cpu if "text_cache" in ARMS[a].features and "cuda" in ARMS[a].devices
                 and (predict_flag(ARMS[a].features) or "").startswith("--precision")}
    assert shippable == {"bf16+text-cache", "bf16-image+text-cache"}
    assert shippable <= gpu


def test_profile_rejects_bad_batches():
    from bench.profiles import with_overrides

    with pytest.raises(UsageError, match="train_batch and infer_batch"):
        with_overrides(get_profile("quick"), train_batch=0)
    with pytest.raises(UsageError, match="arms_accuracy_variant"):
        with_overrides(get_profile("accuracy"), accuracy_variants=("baseline-tiny",))
