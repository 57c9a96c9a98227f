"""The runner end to end. Default tier: the plan, a static-only run (params/FLOPs in fresh worker
processes) through results.json, the report and the gate, and the gate against planted regressions.
Slow tier (``pytest --run-slow -m slow``): the quick profile's pair with speed and memory, 2 repeats,
the gate passing the run against itself and failing a copy whose speed ratio is halved, and resume."""

import copy
import dataclasses
import re
import subprocess
from pathlib import Path

import pytest

from bench.cli import main
from bench.compare import compare
from bench.profiles import get_profile, restrict
from bench.results import Results, Row, Stats
from bench.runner import plan, run_profile

REPO = Path(__file__).resolve().parents[1]
PAIR = ("baseline-tiny", "optimized-tiny")


def planted(res: Results, variant: str, metric: str, factor: float) -> Results:
    """A deep copy of ``res`` with ``variant``'s ``metric`` (value and every sample) times ``factor``."""
    out = copy.deepcopy(res)
    row = out.get(variant, metric)
    assert row is not None and row.value is not None, f"{variant}/{metric} not in the results"
    row.value *= factor
    row.samples = [s * factor for s in row.samples]
    row.stats = Stats.of(row.samples) if row.samples else row.stats
    return out


def failed_on(cmp, variant: str, metric: str) -> bool:
    """Whether the comparison has a failing check of ``variant`` naming ``metric``."""
    return any(c.variant == variant and metric in c.metric for c in cmp.failures)


def expected_commit() -> str:
    """What bench.env should record: ``git rev-parse HEAD`` of this checkout, or "unknown" without git."""
    try:
        proc = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10)
    except OSError:
        return "unknown"
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


def test_plan_interleaves_repeats():
    p = dataclasses.replace(restrict(get_profile("quick"), list(PAIR)), repeats=2, pair_repeats=2)
    speed = [t.id for t in plan(p) if t.id.startswith("speed:")]
    assert speed == ["speed:baseline-tiny:0", "speed:optimized-tiny:0", "speed:baseline-tiny:1",
                     "speed:optimized-tiny:1"]


def _speed_row(variant: str, metric: str, samples: list[float]) -> Row:
    st = Stats.of(samples)
    return Row(variant, metric, st.median, "samples/s", list(samples), st)


def test_gate_fails_a_planted_speed_ratio_regression():
    """Cheap twin of the slow end-to-end check, on hand-made results of the pair."""
    res = Results(rows=[_speed_row("baseline-tiny", "train/samples_per_s", [10.0, 10.2, 9.9]),
                        _speed_row("optimized-tiny", "train/samples_per_s", [20.0, 20.4, 19.8])],
                  variants={"baseline-tiny": {"group": "main", "reference": None},
                            "optimized-tiny": {"group": "main", "reference": "baseline-tiny"}})
    assert compare(res, res).passed
    slower = compare(res, planted(res, "optimized-tiny", "train/samples_per_s", 0.5))
    assert not slower.passed and failed_on(slower, "optimized-tiny", "train/samples_per_s")
    # an improvement never fails
    assert compare(res, planted(res, "optimized-tiny", "train/samples_per_s", 2.0)).passed


def test_gate_on_the_committed_quick_reference():
    """The CI gate's own reference (a real quick run): it passes against itself, a copy with the
    optimized/baseline training-speed ratio halved fails, on exactly that ratio."""
    res = Results.load(REPO / "reports" / "reference" / "quick.json")
    assert res.variants["optimized-tiny"]["reference"] == "baseline-tiny"
    assert compare(res, res).passed
    cmp = compare(res, planted(res, "optimized-tiny", "train/samples_per_s", 0.5))
    assert failed_on(cmp, "optimized-tiny", "train/samples_per_s"), cmp.table()


def test_static_run_end_to_end(tmp_path, monkeypatch):
    """Fresh worker processes -> results.json/csv -> REPORT.md -> the gate, on params and FLOPs only."""
    from bench.report import render

    monkeypatch.delenv("OVD_BENCH_GIT_COMMIT", raising=False)
    p = dataclasses.replace(get_profile("quick"), static_variants=PAIR, memory_variants=(), speed_variants=(),
                            extras=(), repeats=1)
    res = run_profile(p, tmp_path / "run", threads=1)
    assert [r for r in res.rows if r.status != "ok"] == []
    assert {out["worker_start"] for out in res.tasks.values()} == {"fork"}  # CPU, no memory task
    assert res.value("optimized-tiny", "params/total") < res.value("baseline-tiny", "params/total")
    assert res.value("optimized-tiny", "flops/per_image") > 0
    assert res.environment["git_commit"] == expected_commit()
    assert re.fullmatch(r"[0-9a-f]{64}", res.environment["source_hash"])
    saved = Results.load(tmp_path / "run" / "results.json")
    assert saved.value("baseline-tiny", "params/total") == res.value("baseline-tiny", "params/total")
    assert (tmp_path / "run" / "results.csv").exists()
    assert render(saved, tmp_path / "run").exists()

    assert compare(saved, saved).passed
    assert main(["compare", str(tmp_path / "run" / "results.json"), str(tmp_path / "run" / "results.json")]) == 0
    # one parameter more is a size change: it fails unless allowed
    grown = planted(saved, "optimized-tiny", "params/total", 1 + 1e-6)
    assert failed_on(compare(saved, grown), "optimized-tiny", "params/total")
    assert compare(saved, grown, allow_size_change=True).passed


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path):
    out = tmp_path / "run"
    rc = main(["run", "--profile", "quick", "--variants", ",".join(PAIR), "--extras", "none", "--repeats", "2",
               "--threads", "1", "--out", str(out), "--no-report-copy"])
    assert rc == 0
    res = Results.load(out / "results.json")
    for variant in PAIR:
        assert res.get(variant, "train/samples_per_s").stats.n >= 2
        assert res.value(variant, "params/total") > 0
        assert res.value(variant, "memory/train_total") > 0
    assert res.environment["git_commit"] == expected_commit()
    assert (out / "REPORT.md").exists() and (out / "results.csv").exists()

    # The gate: the run against itself passes; a copy whose optimized/baseline speed ratio is halved fails.
    assert compare(res, res).passed
    assert main(["compare", str(out / "results.json"), str(out / "results.json")]) == 0
    slower = planted(res, "optimized-tiny", "train/samples_per_s", 0.5)
    cmp = compare(res, slower)
    assert not cmp.passed and failed_on(cmp, "optimized-tiny", "train/samples_per_s"), cmp.table()
    slower_path = tmp_path / "slower.json"
    slower.save(slower_path)
    assert main(["compare", str(out / "results.json"), str(slower_path)]) == 1

    # --resume: everything is done, nothing re-runs, results are the same.
    again = run_profile(restrict(get_profile("quick"), ["optimized-tiny"]), tmp_path / "again", threads=1,
                        resume=out)
    assert again.value("optimized-tiny", "params/total") == res.value("optimized-tiny", "params/total")


def test_crashing_variant_is_recorded(tmp_path, monkeypatch):
    import bench.variants as variants

    bad = variants.preset_variant("broken", "optimized-tiny", {"image.backbone": "no_such_backbone"}, "crashes")
    monkeypatch.setitem(variants.VARIANTS, "broken", bad)
    p = dataclasses.replace(get_profile("quick"), static_variants=("broken",), memory_variants=(), speed_variants=(),
                            extras=(), repeats=1)
    # the worker runs in a fresh process that does not see the monkeypatch: pass the variant via the spec
    res = run_profile(p, tmp_path, threads=1)
    row = next(r for r in res.rows if r.variant == "broken")
    assert row.status == "error" and "no_such_backbone" in row.error


def test_worker_start_forks_on_the_cpu_but_not_for_memory_cuda_or_when_asked(monkeypatch):
    import bench.runner as runner

    static = runner.Task("static:x", "optimized-tiny", ["params", "flops"])
    memory = runner.Task("memory_train:x", "optimized-tiny", ["memory_train"])
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runner.worker_start(static, "cpu") == "fork" and runner.worker_start(static, "auto") == "fork"
    assert runner.worker_start(memory, "cpu") == "exec"  # RSS growth over a new interpreter, as always measured
    assert runner.worker_start(static, "cpu", fresh_interpreter=True) == "exec"
    assert runner.worker_start(static, "cuda") == "exec"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # "auto" would then pick CUDA
    assert runner.worker_start(static, "auto") == "exec" and runner.worker_start(static, "cpu") == "fork"
    monkeypatch.setattr(runner.sys, "platform", "darwin")  # fork is unsafe on macOS: a new interpreter there
    assert runner.worker_start(static, "cpu") == "exec"


def test_a_forked_worker_counts_what_this_process_counts():
    """The forked worker measures the variant of the spec with this checkout's code (a new interpreter's
    path is the one every memory task takes, in the slow tier's quick run)."""
    from bench.env import source_hash
    from bench.measure import get_measurement
    from bench.runner import Task, run_task
    from bench.variants import get_variant

    forked = run_task(Task("static:optimized-tiny", "optimized-tiny", ["params"]), 1, "cpu", 300, start="fork")
    assert forked["worker_start"] == "fork" and forked["environment"]["source_hash"] == source_hash()
    variant = get_variant("optimized-tiny").to_dict()
    here = get_measurement("params")({k: variant[k] for k in ("source", "preset", "overrides")} | {"device": "cpu"})
    rows = {r["metric"]: r["value"] for r in forked["outcomes"]["params"]["rows"]}
    assert rows == {r.metric: r.value for r in here.rows()} and rows["params/total"] > 0


def test_a_forked_worker_starts_data_loader_workers_as_a_new_interpreter_would(monkeypatch):
    """Lightning's train loop with DataLoader workers inside a forked task (the fork server's start method
    must not leak into the task: its workers failed with "too many fds" before)."""
    import bench.variants as variants
    from bench.runner import Task, run_task

    workers = variants.preset_variant("tiny-with-workers", "optimized-tiny",
                                      {"train.num_workers": 1, "train.persistent_workers": True}, "loader workers")
    monkeypatch.setitem(variants.VARIANTS, "tiny-with-workers", workers)
    task = Task("train_loop:tiny-with-workers:0", "tiny-with-workers", ["train_loop"],
                {"train_loop": {"batch_size": 2, "steps": 1, "warmup_steps": 0}})
    out = run_task(task, 1, "cpu", 300, start="fork")
    assert out["status"] == "ok", out["outcomes"]["train_loop"].get("error")


def test_a_forked_worker_past_its_time_is_killed_and_recorded():
    from bench.runner import Task, run_task

    out = run_task(Task("static:optimized-tiny", "optimized-tiny", ["params"]), 1, "cpu", 0.01, start="fork")
    assert out["status"] == "error" and "timed out" in out["outcomes"]["params"]["error"]


def test_a_forked_worker_that_dies_early_shows_its_stderr():
    from bench.runner import Task, run_task

    # threads that are not a number: the worker raises before it can write its outcome
    out = run_task(Task("static:optimized-tiny", "optimized-tiny", ["params"]), "two", "cpu", 300, start="fork")
    error = out["outcomes"]["params"]["error"]
    assert out["status"] == "error" and "worker exited with 1" in error and "ValueError" in error, error


@pytest.mark.slow
def test_the_fork_server_preload_starts_no_thread():
    """A fork copies only the calling thread: a preloaded library with a thread of its own (onnxruntime's
    import starts one) could leave a lock held in every forked task. 10 s of imports, so the slow tier."""
    import sys

    from bench.runner import child_env

    code = ("import importlib, os\nfrom bench.worker import PRELOAD\nfor m in PRELOAD: importlib.import_module(m)\n"
            "print(len(os.listdir('/proc/self/task')))")
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(2), cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == "1", proc.stdout


def test_the_caller_main_module_is_not_imported_by_a_forked_worker():
    import sys

    from bench.runner import _main_module_hidden

    main = sys.modules["__main__"]
    with _main_module_hidden():
        stand_in = sys.modules["__main__"]
        assert stand_in is not main and not hasattr(stand_in, "__file__") and stand_in.__spec__ is None
    assert sys.modules["__main__"] is main


def test_ctrl_c_prints_how_to_resume(monkeypatch, capsys, tmp_path):
    import bench.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_run", interrupted)
    assert cli.main(["run", "--profile", "quick", "--out", str(tmp_path)]) == 130
    assert f"--resume {tmp_path}" in capsys.readouterr().err


def test_run_folder_paths_come_back_relative(tmp_path):
    from bench.runner import _relative_to_run_folder

    run = tmp_path / "run"
    root = str(run.resolve())
    outcome = {"outcomes": {"arms_accuracy": {"rows": [
        {"metric": "arm_acc/eager/val/mAP50", "extra": {"checkpoint": f"{root}/ckpt/model.pt",
                                                        "params": {"checkpoint": [f"{root}/a.pt", "b.pt"]}}},
        {"metric": "x", "extra": {"other": f"{root}2/elsewhere.pt", "note": f"see {root}/a.pt", "n": 3,
                                  "folder": root}}]}}}
    out = _relative_to_run_folder(outcome, run)
    rows = out["outcomes"]["arms_accuracy"]["rows"]
    assert rows[0]["extra"]["checkpoint"] == "ckpt/model.pt"
    assert rows[0]["extra"]["params"]["checkpoint"] == ["a.pt", "b.pt"]
    # a sibling folder sharing the prefix, a string merely containing the path, numbers: untouched
    assert rows[1]["extra"] == {"other": f"{root}2/elsewhere.pt", "note": f"see {root}/a.pt", "n": 3, "folder": "."}
    assert _relative_to_run_folder(outcome, None) is outcome


def test_run_task_reports_relative_run_folder_paths(tmp_path, monkeypatch):
    """run_task resolves the checkpoint for the worker and maps the worker's echo of it back."""
    import json as _json

    import bench.runner as runner

    seen = {}

    def fake_worker(cmd, **kwargs):
        spec = _json.loads(Path(cmd[3]).read_text())
        ckpt = spec["params"]["arms_accuracy"]["checkpoint"]
        seen["ckpt"] = ckpt
        row = {"metric": "arm_acc/eager/val/mAP50", "extra": {"checkpoint": ckpt}}
        Path(cmd[4]).write_text(_json.dumps({"status": "ok", "outcomes": {"arms_accuracy": {
            "status": "ok", "rows": [row], "params": spec["params"]["arms_accuracy"]}}}))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(runner.subprocess, "run", fake_worker)
    task = runner.Task("arms_accuracy:x", None, ["arms_accuracy"], {"arms_accuracy": {"checkpoint": "ckpt/m.pt"}})
    out = runner.run_task(task, 1, "cpu", 10.0, out_dir=tmp_path, start="exec")
    assert seen["ckpt"] == str(tmp_path.resolve() / "ckpt/m.pt") and Path(seen["ckpt"]).is_absolute()
    o = out["outcomes"]["arms_accuracy"]
    assert o["rows"][0]["extra"]["checkpoint"] == "ckpt/m.pt"
    assert o["params"]["checkpoint"] == "ckpt/m.pt"
    assert out["task"]["params"] == {"arms_accuracy": {"checkpoint": "ckpt/m.pt"}}
