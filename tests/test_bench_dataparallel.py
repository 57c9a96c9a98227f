"""Data-parallel scaling (issue 14 item 2): `ovd train` writes its training throughput into summary.json, the
suite's measurement reads it per configuration (processes x threads), the plan interleaves the configurations,
and the report derives efficiencies with their intervals from the rows."""

import dataclasses
import json

import pytest
import torch

from bench.measure.dataparallel import (
    CPU_CONFIGS,
    DataParallelResult,
    config_key,
    default_configs,
    metric_name,
    parse_config_key,
    train_command,
)
from bench.measure.specs import DataParallelSpec, SpecError
from bench.profiles import EXTRAS, get_profile
from bench.report import dataparallel as dp_report
from bench.results import Results, Row, Stats
from bench.runner import plan
from ovd.cli import main as ovd_main
from ovd.data.synthetic import write_synthetic_dataset
from ovd.training.run import StepClock


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, seed=1, num_train=16, num_val=8, num_test=4, num_novel=4)
    return root


# -- ovd train: summary.json's train_throughput ------------------------------------------------------------------

def test_ovd_train_writes_its_training_throughput(small_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert ovd_main(["train", "--preset", "optimized-tiny", "--data-root", str(small_root), "--max-steps", "4",
                     "--throughput-warmup-steps", "1", "--batch-size", "2", "--accelerator", "cpu",
                     "--limit-val-batches", "0", "--out", str(out)]) == 0
    capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    tp = summary["train_throughput"]
    assert tp["timed_steps"] == 3 and tp["warmup_steps"] == 1  # 1 warm-up + 3 timed = --max-steps 4
    assert tp["samples"] == 3 * 2 and tp["world_size"] == 1
    assert tp["seconds"] > 0 and tp["samples_per_s"] == pytest.approx(tp["samples"] / tp["seconds"])
    assert tp["threads_per_process"] == torch.get_num_threads()
    # --limit-val-batches 0: no validation ran, and the only checkpoint is last.ckpt at the end
    assert not [k for k in summary["metrics"] if k.startswith("val/")]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.ckpt"]


def test_ovd_train_refuses_a_negative_warmup(tmp_path, capsys):
    assert ovd_main(["train", "--throughput-warmup-steps", "-1", "--out", str(tmp_path / "x")]) == 2
    assert "--throughput-warmup-steps -1: must be an integer >= 0" in capsys.readouterr().err


class _FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_step_clock_pauses_for_validation_and_counts_every_process(monkeypatch):
    fake = _FakeClock()
    monkeypatch.setattr("ovd.training.run.time.perf_counter", fake)
    clock = StepClock(warmup_steps=1)
    batch = {"images": torch.zeros(3, 3, 8, 8)}

    def step(at):
        fake.now = at
        clock.on_train_batch_end(None, None, None, batch, 0)

    step(10.0)  # warm-up ends: the clock starts
    step(12.0)
    fake.now = 13.0
    clock.on_validation_start(None, None)
    fake.now = 20.0  # 7 s of validation, not training time
    clock.on_validation_end(None, None)
    step(21.0)
    assert clock.timed_steps == 2 and clock.seconds == pytest.approx(4.0)  # (12 - 10) + (21 - 20)
    tp = clock.throughput(world_size=2, threads_per_process=1)
    assert tp["samples"] == 2 * 3 * 2  # per-rank samples x world size
    assert tp["samples_per_s"] == pytest.approx(12 / 4.0)
    assert StepClock(warmup_steps=5).throughput() is None  # nothing timed yet


def test_step_clock_stops_after_the_asked_steps(monkeypatch):
    fake = _FakeClock()
    monkeypatch.setattr("ovd.training.run.time.perf_counter", fake)
    clock = StepClock(warmup_steps=0, steps=2)
    clock.on_train_start(None, None)
    for at in (1.0, 2.0, 30.0):
        fake.now = at
        clock.on_train_batch_end(None, None, None, {"images": torch.zeros(4, 3, 8, 8)}, 0)
    assert clock.timed_steps == 2 and clock.seconds == pytest.approx(2.0) and clock.samples == 8


# -- the measurement's spec and command ------------------------------------------------------------------------

def test_spec_validation_and_command():
    with pytest.raises(SpecError, match="processes must be an int >= 1"):
        DataParallelSpec(source={"kind": "preset", "preset": "optimized-tiny"}, processes=0)
    with pytest.raises(SpecError, match="needs a preset source"):
        DataParallelSpec(source={"kind": "factory", "target": "examples.my_detector:build"})
    spec = DataParallelSpec.from_dict({"preset": "optimized-tiny", "overrides": {"fusion.attention": "mha"},
                                       "processes": 2, "threads_per_process": 1, "steps": 4, "warmup_steps": 1})
    cmd = train_command(spec, "cpu", 8, {"fusion.attention": "mha"}, "/data", "/tmp/out")
    text = " ".join(cmd)
    assert "--devices 2 --strategy ddp" in text and "--limit-val-batches 0" in text
    assert "--max-steps 5 --throughput-warmup-steps 1" in text and "--batch-size 8" in text
    assert cmd[cmd.index("--set") + 1] == 'fusion.attention="mha"'  # JSON, as `ovd train --set` reads it
    one = dataclasses.replace(spec, processes=1)
    assert "--devices 1 --strategy auto" in " ".join(train_command(one, "cpu", 8, {}, "/d", "/o"))


def test_config_keys_and_machine_defaults():
    assert config_key(2, 1) == "p2t1" and parse_config_key("p12t3") == (12, 3)
    assert metric_name(1, 2) == "dataparallel/samples_per_s_p1t2"
    with pytest.raises(ValueError, match="expected p<processes>t<threads>"):
        parse_config_key("2x1")
    assert default_configs(gpus=0) == CPU_CONFIGS == ((1, 1), (1, 2), (2, 1))
    assert default_configs(gpus=4, cores=16) == ((1, 4), (2, 4), (3, 4), (4, 4))


def test_result_rows_carry_the_configuration():
    tp = {"timed_steps": 4, "warmup_steps": 1, "seconds": 2.0, "samples": 64, "samples_per_s": 32.0,
          "world_size": 2, "threads_per_process": 1}
    rows = DataParallelResult("optimized-tiny", 2, 1, 8, "cpu", "fp32", tp, 3, 20.0).rows()
    assert [r.metric for r in rows] == ["dataparallel/samples_per_s_p2t1"]
    assert rows[0].value == 32.0 and rows[0].unit == "samples/s"
    assert rows[0].extra["global_batch"] == 16 and rows[0].extra["spans_epochs"] is True  # 5 steps > 3 per epoch


# -- the plan --------------------------------------------------------------------------------------------------

def test_plan_interleaves_the_configurations():
    prof = dataclasses.replace(get_profile("quick"), extras=("dataparallel",), dataparallel_configs=CPU_CONFIGS,
                               dataparallel_repeats=2, dataparallel_batch=8, dataparallel_steps=4)
    tasks = plan(prof)
    dp = [t for t in tasks if t.kind == "dataparallel"]
    assert [t.id for t in dp] == ["dataparallel:p1t1:0", "dataparallel:p1t2:0", "dataparallel:p2t1:0",
                                  "dataparallel:p1t1:1", "dataparallel:p1t2:1", "dataparallel:p2t1:1"]
    assert {t.variant for t in dp} == {"optimized-tiny"} and [t.repeat for t in dp] == [0, 0, 0, 1, 1, 1]
    assert dp[2].params["dataparallel"] == {"processes": 2, "threads_per_process": 1, "batch_size": 8,
                                            "steps": 4, "warmup_steps": 1}
    # they ride the speed rounds: round 1's speed tasks come between the two rounds of configurations
    ids = [t.id for t in tasks]
    assert ids.index("dataparallel:p2t1:0") < ids.index("speed:optimized-tiny:1") < ids.index("dataparallel:p1t1:1")
    assert "optimized-tiny" in prof.names()
    assert not [t for t in plan(get_profile("quick")) if t.kind == "dataparallel"]  # quick: off


def test_default_profile_sizes_it_light_for_extras():
    # off in the CPU default since the issue-11 re-plan; `--extras ...,dataparallel` runs it with these settings
    prof = get_profile("default")
    assert "dataparallel" in EXTRAS and "dataparallel" not in prof.extras and "dataparallel" in get_profile("full").extras
    assert (prof.dataparallel_variant, prof.dataparallel_repeats, prof.dataparallel_steps,
            prof.dataparallel_warmup) == ("optimized-tiny", 2, 4, 1)


# -- the report: efficiencies and their intervals from planted rows --------------------------------------------

def _row(processes, threads, samples):
    row = Row("optimized-tiny", metric_name(processes, threads), None, "samples/s", samples=list(samples),
              measurement="dataparallel",
              extra={"batch_size_per_process": 8, "global_batch": 8 * processes, "accelerator": "cpu",
                     "timed_steps": 4, "warmup_steps": 1, "precision": "fp32", "preset": "optimized-tiny",
                     "process_seconds": 12.0})
    row.stats = Stats.of(row.samples)
    row.value = row.stats.median
    return row


def _results(*rows):
    return Results(rows=list(rows), profile={"dataparallel_variant": "optimized-tiny"})


def test_efficiency_and_its_interval_on_planted_rows():
    p1t1 = _row(1, 1, [9, 10, 11])  # q1 9.5, median 10, q3 10.5
    p2t1 = _row(2, 1, [15, 16, 17])  # q1 15.5, median 16, q3 16.5
    p1t2 = _row(1, 2, [17, 18, 19])  # q1 17.5, median 18, q3 18.5
    e = dp_report.efficiency(p2t1, p1t1, 2)
    assert e.point == pytest.approx(0.8)
    assert (e.lo, e.hi) == (pytest.approx(15.5 / 10.5 / 2), pytest.approx(16.5 / 9.5 / 2))
    res = _results(p1t1, p1t2, p2t1)
    assert list(dp_report.config_rows(res)) == [(1, 1), (1, 2), (2, 1)]
    table = {r["comparison"]: r for r in dp_report.comparison_table(dp_report.config_rows(res))}
    eff = table["2 processes x 1 thread vs 1 process x 1 thread"]
    assert eff[dp_report.EFF] == "0.8 [0.738, 0.868]"
    same_cores = table["2 processes x 1 thread vs 1 process x 2 threads (the same 2 cores)"]
    assert same_cores["throughput ratio"] == "0.889 [0.838, 0.943]x"  # 16/18, [15.5/18.5, 16.5/17.5]
    assert same_cores["reading"] == "1 process x 2 threads is faster: run that"
    text = "".join(dp_report.section(res))
    assert "Data-parallel scaling" in text and "0.8 [0.738, 0.868]" in text and "N x throughput(1 process" in text


def test_same_cores_comparison_says_nothing_when_the_interval_straddles_one():
    res = _results(_row(1, 1, [9, 10, 11]), _row(1, 2, [15, 16, 17]), _row(2, 1, [14, 16, 18]))
    table = {r["comparison"]: r for r in dp_report.comparison_table(dp_report.config_rows(res))}
    reading = table["2 processes x 1 thread vs 1 process x 2 threads (the same 2 cores)"]["reading"]
    assert reading == "no clear winner (the interval straddles 1)"


def test_section_is_absent_without_rows_and_names_failed_processes():
    assert dp_report.section(_results()) == []
    res = _results(_row(1, 1, [10, 11]))
    res.tasks["dataparallel:p2t1:0"] = {"status": "error", "outcomes": {"dataparallel": {
        "status": "error", "error": "RuntimeError: `ovd train` (p2t1) exited with 1: gloo"}}}
    text = "".join(dp_report.section(res))
    assert "`dataparallel:p2t1:0`: RuntimeError: `ovd train` (p2t1) exited with 1" in text


# -- two processes, end to end (slow) --------------------------------------------------------------------------

@pytest.mark.slow
def test_measure_two_gloo_processes(small_root):
    from bench.measure.dataparallel import measure

    result = measure({"preset": "optimized-tiny", "device": "cpu", "processes": 2, "threads_per_process": 1,
                      "batch_size": 2, "steps": 3, "warmup_steps": 1, "data_root": str(small_root)})
    (row,) = result.rows()
    assert row.metric == "dataparallel/samples_per_s_p2t1" and row.value > 0
    assert result.throughput["world_size"] == 2 and result.throughput["timed_steps"] == 3
    assert result.throughput["samples"] == 3 * 2 * 2  # steps x batch per process x processes
    assert result.throughput["threads_per_process"] == 1  # OMP_NUM_THREADS reached the ranks
