"""`ovd train` / `ovd eval` / `ovd data synth` on the command line: the --max-time budget (the suite's
train_and_evaluate clock and schedule), --resume of another config or of a file that is no checkpoint, an --out
that already holds a run, empty splits, and synth into a non-empty folder. Each mistake is one line, exit 2,
and nothing written. A few synthetic images on the CPU (seconds each)."""

from __future__ import annotations

import json

import pytest
import torch

from ovd.cli import main as ovd_main
from ovd.data.synthetic import write_synthetic_dataset


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(path, seed=1, num_train=16, num_val=4, num_test=2, num_novel=2)
    return path


@pytest.fixture(scope="module")
def run(root, tmp_path_factory):
    """One finished 2-step run (batch 4): its folder."""
    out = tmp_path_factory.mktemp("runs") / "run"
    assert ovd_main(["train", "--data-root", str(root), "--max-steps", "2", "--batch-size", "4", "--out", str(out),
                     "--limit-val-batches", "1"]) == 0
    return out


def _error(argv, capsys) -> str:
    """Run a command that must fail: exit 2 and one `ovd: error:` line on stderr; returns that line."""
    capsys.readouterr()
    assert ovd_main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ovd: error:")]
    assert len(err) == 1, err
    return err[0]


def test_max_time_is_the_training_seconds_budget_of_train_and_evaluate(root, tmp_path, capsys, monkeypatch):
    """5 training seconds on 4 images of batch 4 (one step an epoch): more than the 10 epochs ovd train used to cap
    a run at, the one-cycle schedule annealed to the time budget (not to Lightning's estimate of 10 epochs), and
    the clock train_and_evaluate keeps (module.train_seconds, saved in the checkpoint) stops the run. The training
    clock is a fake that advances 0.2 s a reading (one step spans two: 0.4 s, so 13 steps), so the step count does not depend on how
    busy the machine is."""
    from types import SimpleNamespace

    from ovd.training import run as run_module

    readings = iter(range(10**9))
    monkeypatch.setattr(run_module, "time", SimpleNamespace(perf_counter=lambda: next(readings) * 0.2))
    out = tmp_path / "timed"
    assert ovd_main(["train", "--data-root", str(root), "--limit", "4", "--batch-size", "4", "--max-time",
                     "00:00:00:05", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert 5 <= summary["train_seconds"] < 5.5 and 10 < summary["global_step"] <= 13, summary
    assert summary["metrics"]["lr"] < 0.5e-3  # one-cycle peak 1e-3, annealed by the end of the budget
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["hyper_parameters"]["time_budget_s"] == 5
    assert last["global_step"] == summary["global_step"]  # the final step, not the last validation's
    assert last["train_seconds"] == pytest.approx(summary["train_seconds"])


def test_max_time_in_another_format_is_one_line(tmp_path, capsys):
    assert "--max-time 10m: expected DD:HH:MM:SS" in _error(["train", "--max-time", "10m", "--out",
                                                             str(tmp_path / "x")], capsys)
    assert not (tmp_path / "x").exists()


def test_resume_with_another_preset_or_file_is_one_line_and_writes_nothing(run, root, tmp_path, capsys):
    ckpt = run / "checkpoints" / "last.ckpt"
    config = (run / "config.json").read_text()
    line = _error(["train", "--data-root", str(root), "--preset", "baseline-tiny", "--resume", str(ckpt), "--out",
                   str(run)], capsys)
    assert f"--resume {ckpt}" in line and "preset optimized-tiny, not the requested baseline-tiny" in line, line
    line = _error(["train", "--data-root", str(root), "--resume", str(ckpt), "--set", "box_head.num_queries=50",
                   "--out", str(run)], capsys)
    assert "box_head.num_queries (checkpoint 20, requested 50)" in line, line
    assert (run / "config.json").read_text() == config
    image = next((root / "Images").glob("*.jpg"))
    line = _error(["train", "--data-root", str(root), "--resume", str(image), "--out", str(tmp_path / "new")], capsys)
    assert f"{image}: not a checkpoint" in line, line
    assert not (tmp_path / "new").exists()


def test_resume_without_a_preset_continues_with_the_checkpoints_config(run, root, tmp_path, capsys):
    """No --preset or --batch-size: the checkpoint's config (batch 4), in another --out."""
    out = tmp_path / "continued"
    assert ovd_main(["train", "--data-root", str(root), "--resume", str(run / "checkpoints" / "last.ckpt"),
                     "--max-steps", "3", "--limit-val-batches", "0", "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["global_step"] == 3
    assert json.loads((out / "config.json").read_text())["train"]["batch_size"] == 4


@pytest.mark.parametrize("budget", [["--max-time", "00:00:00:01"], ["--max-steps", "3"]], ids=["time", "steps"])
def test_resume_without_a_budget_keeps_the_checkpoints_budget(root, tmp_path, budget):
    """The README's `ovd train --resume RUN/checkpoints/last.ckpt --out RUN` gives no --max-time/--max-steps: the
    run continues with the budget it was started with (a spent one ends it at once), not with Lightning's 10-epoch
    default and a schedule sized to it. 8 records of batch 4: two steps an epoch, so 10 epochs are 20 steps."""
    out = tmp_path / "run"
    common = ["train", "--data-root", str(root), "--limit", "8", "--batch-size", "4", "--limit-val-batches", "0"]
    assert ovd_main([*common, *budget, "--out", str(out)]) == 0
    first = json.loads((out / "summary.json").read_text())
    assert first["global_step"] < 10, first  # fewer than 10 epochs: the old default would train on
    assert ovd_main([*common, "--resume", str(out / "checkpoints" / "last.ckpt"), "--out", str(out)]) == 0
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["global_step"] == first["global_step"], (first, resumed)
    assert ("train_seconds" in resumed) == (budget[0] == "--max-time")


def test_an_out_folder_holding_a_run_is_refused_unless_resumed_from(run, root, capsys):
    summary = (run / "summary.json").read_text()
    line = _error(["train", "--data-root", str(root), "--max-steps", "1", "--out", str(run)], capsys)
    assert f"--out {run} already holds a training run" in line and "--resume" in line, line
    assert (run / "summary.json").read_text() == summary
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]


@pytest.fixture(scope="module")
def empty_root(tmp_path_factory):
    """A dataset whose train and val splits are empty (0 ids in train.txt and val.txt)."""
    path = tmp_path_factory.mktemp("empty")
    write_synthetic_dataset(path, seed=1, num_train=0, num_val=0, num_test=1, num_novel=1)
    return path


def test_empty_splits_fail_with_one_line(empty_root, root, checkpoint, tmp_path, capsys):
    out = tmp_path / "x"
    line = _error(["train", "--data-root", str(empty_root), "--max-steps", "1", "--out", str(out)], capsys)
    assert f"split 'train' of {empty_root}" in line and "has no records" in line, line
    assert "--limit 0: must be a positive integer" in _error(
        ["train", "--data-root", str(root), "--limit", "0", "--out", str(out)], capsys)
    assert not out.exists()
    line = _error(["eval", "--checkpoint", str(checkpoint), "--data-root", str(empty_root), "--split", "val"], capsys)
    assert f"split 'val' of {empty_root}" in line, line
    preds = tmp_path / "preds.json"
    preds.write_text("[]")
    line = _error(["eval", "--predictions", str(preds), "--data-root", str(empty_root), "--split", "val"], capsys)
    assert f"split 'val' of {empty_root}" in line, line


def test_data_synth_refuses_a_non_empty_folder_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "data"
    out.mkdir()
    (out / "train.txt").write_text("mine\n")
    args = ["data", "synth", "--out", str(out), "--num-train", "1", "--num-val", "1", "--num-test", "1",
            "--num-novel", "1"]
    line = _error(args, capsys)
    assert f"--out {out} already holds a dataset" in line and "--overwrite" in line, line
    assert (out / "train.txt").read_text() == "mine\n" and not (out / "Images").exists()
    assert ovd_main(args + ["--overwrite"]) == 0
    assert (out / "train.txt").read_text() == "1000001\n"
    assert ovd_main(["data", "synth", "--out", str(tmp_path / "new"), "--num-train", "1", "--num-val", "1",
                     "--num-test", "1", "--num-novel", "1"]) == 0


def test_data_synth_refuses_a_negative_image_count_before_writing(tmp_path, capsys):
    out = tmp_path / "data"
    line = _error(["data", "synth", "--out", str(out), "--num-train", "-3"], capsys)  # wrote an empty train split
    assert "image counts must be >= 0, got train -3" in line, line
    assert not out.exists()


def test_an_accelerator_this_machine_lacks_is_one_line_and_writes_nothing(root, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --accelerator gpu is valid here")
    out = tmp_path / "gpu-run"
    line = _error(["train", "--data-root", str(root), "--max-steps", "1", "--accelerator", "gpu", "--out", str(out)],
                  capsys)
    assert "--accelerator gpu" in line, line
    assert not out.exists()
