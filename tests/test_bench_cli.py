"""`ovd-bench` command line: user mistakes end in one line and exit 2, internal errors keep their
traceback, and `run` writes into a fresh runs/ folder unless --out names one. No measurement runs:
run_profile, render and capture are replaced by fakes where a command would get that far."""

import re
from types import SimpleNamespace

import pytest

import bench.env
import bench.report
import bench.runner
from bench.cli import main
from bench.errors import UsageError
from bench.results import Results


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty folder so that runs/ and reports/ land there, never in the clone."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def fake_run(monkeypatch):
    """Replace the measuring parts of `ovd-bench run`; records the folder run_profile was given."""
    calls = {}

    def run_profile(profile, out, threads, *args, **kwargs):
        calls["out"], calls["profile"], calls["kwargs"] = out, profile, kwargs
        (out / "results.json").write_text("{}")
        return SimpleNamespace(rows=[])

    def render(results, out, accuracy=None):
        path = out / "REPORT.md"
        path.write_text("# report\n")
        return path

    monkeypatch.setattr(bench.runner, "run_profile", run_profile)
    monkeypatch.setattr(bench.report, "render", render)
    monkeypatch.setattr(bench.env, "capture", lambda command=None, threads=None: {})
    return calls


def one_line_error(capsys, command: str) -> str:
    """The whole stderr is one line `ovd-bench <command>: ...` with no traceback; returns it."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"ovd-bench {command}: "), err
    return lines[0]


def test_unknown_profile_is_one_line(in_tmp, capsys):
    assert main(["run", "--profile", "nope", "--machine-kind", "test"]) == 2
    line = one_line_error(capsys, "run")
    assert "unknown profile 'nope'" in line and "quick" in line and "default" in line
    assert not (in_tmp / "runs").exists()


def test_unknown_variant_lists_the_known_ones(in_tmp, capsys):
    assert main(["run", "--profile", "quick", "--variants", "baseline,nope", "--machine-kind", "test"]) == 2
    line = one_line_error(capsys, "run")
    assert "unknown variants ['nope']" in line and "known: " in line and "optimized-tiny" in line


def test_unknown_extra_is_one_line(in_tmp, capsys):
    assert main(["run", "--profile", "quick", "--extras", "peers,nope", "--machine-kind", "test"]) == 2
    line = one_line_error(capsys, "run")
    assert "unknown extras ['nope']" in line and "'all' or 'none'" in line


def test_unknown_profile_variant_in_profile_command(in_tmp, capsys):
    assert main(["profile", "--variant", "nope"]) == 2
    assert "unknown variant 'nope'" in one_line_error(capsys, "profile")
    assert not (in_tmp / "runs").exists()


def test_unknown_arm_raises_usage_error_and_main_reports_it(in_tmp, capsys, fake_run, monkeypatch):
    from bench.measure.arms import get_arm

    with pytest.raises(UsageError, match="unknown arm 'nope'; choose from"):
        get_arm("nope")

    def run_profile(*args, **kwargs):  # the runner resolves arm names inside run_profile
        get_arm("nope")

    monkeypatch.setattr(bench.runner, "run_profile", run_profile)
    assert main(["run", "--profile", "quick", "--machine-kind", "test"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("ovd-bench run: unknown arm 'nope'; choose from")


def test_bad_set_override_is_one_line(in_tmp, capsys):
    assert main(["run", "--profile", "quick", "--set", "fusion.attention", "--machine-kind", "test"]) == 2
    assert "key=value" in one_line_error(capsys, "run")


@pytest.mark.parametrize("argv", [["run", "--repeats", "many"], ["run", "--bogus"], ["compare", "only-one.json"], []])
def test_command_line_mistakes_are_one_line(in_tmp, capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ovd-bench") and "--help" in lines[0], err


def test_report_missing_and_malformed_results(in_tmp, capsys):
    assert main(["report", str(in_tmp / "missing.json")]) == 2
    line = one_line_error(capsys, "report")
    assert "missing.json: no such results file" in line and "ovd-bench run" in line
    bad = in_tmp / "bad.json"
    bad.write_text('{"schema_version": 1, "rows": [')  # truncated
    assert main(["report", str(bad)]) == 2
    assert "bad.json: not valid JSON" in one_line_error(capsys, "report")
    # a run folder is read as its results.json (it used to end in IsADirectoryError's traceback), and the
    # report is written beside it
    run = in_tmp / "run"
    run.mkdir()
    Results().save(run / "results.json")
    assert main(["report", str(run)]) == 0
    assert (run / "REPORT.md").exists()
    assert main(["report", str(in_tmp)]) == 2  # a folder without results.json: the missing file, named
    assert "results.json: no such results file" in one_line_error(capsys, "report")


def test_compare_missing_malformed_and_incompatible(in_tmp, capsys, monkeypatch):
    good = in_tmp / "good.json"
    Results().save(good)
    assert main(["compare", str(good), str(in_tmp / "missing.json")]) == 2
    assert "missing.json: no such results file" in one_line_error(capsys, "compare")
    bad = in_tmp / "bad.json"
    bad.write_text("[1, 2]")
    assert main(["compare", str(bad), str(good)]) == 2
    assert "expected a JSON object" in one_line_error(capsys, "compare")

    class NotComparable(UsageError):
        pass

    def compare(*args, **kwargs):
        raise NotComparable("the results come from different\nbenchmarks; pass results of the same profile")

    import bench.compare

    monkeypatch.setattr(bench.compare, "compare", compare)
    assert main(["compare", str(good), str(good)]) == 2
    line = one_line_error(capsys, "compare")
    assert line.endswith("different benchmarks; pass results of the same profile")  # newlines folded


def test_unwritable_output_folder(in_tmp, capsys, fake_run):
    blocker = in_tmp / "a-file"
    blocker.write_text("not a folder")
    assert main(["run", "--profile", "quick", "--machine-kind", "test", "--out", str(blocker / "sub")]) == 2
    line = one_line_error(capsys, "run")
    assert f"cannot write to the output folder {blocker / 'sub'}" in line and "writable folder" in line
    assert "out" not in fake_run  # nothing was measured


def test_bad_resume_fails_before_a_run_folder_is_made(in_tmp, capsys, fake_run):
    assert main(["run", "--profile", "quick", "--machine-kind", "test", "--resume", str(in_tmp / "nowhere")]) == 2
    assert "no such results file" in one_line_error(capsys, "run")
    assert not (in_tmp / "runs").exists() and "out" not in fake_run


def test_internal_errors_keep_their_traceback(in_tmp, fake_run, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug, not a user mistake")

    monkeypatch.setattr(bench.runner, "run_profile", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["run", "--profile", "quick", "--machine-kind", "test"])


def test_run_writes_a_new_run_folder_and_never_reports(in_tmp, capsys, fake_run):
    assert main(["run", "--profile", "quick", "--machine-kind", "cpu-test", "--no-report-copy"]) == 0
    out = fake_run["out"]
    assert re.fullmatch(r"runs/cpu-test-\d{8}-\d{6}", out.as_posix()), out
    assert (in_tmp / out / "REPORT.md").exists()
    assert not (in_tmp / "reports").exists()  # --no-report-copy or not, nothing is copied
    err = capsys.readouterr().err
    mentions = [i for i, line in enumerate(err.splitlines()) if str(out) in line]
    assert len(mentions) >= 2 and mentions[0] == 0 and mentions[-1] == len(err.splitlines()) - 1, err
    # a second run in the same second gets its own folder
    assert main(["run", "--profile", "quick", "--machine-kind", "cpu-test"]) == 0
    assert fake_run["out"] != out and len(list((in_tmp / "runs").iterdir())) == 2
    assert not (in_tmp / "reports").exists()


def test_out_reports_refreshes_the_committed_report(in_tmp, fake_run):
    assert main(["run", "--profile", "quick", "--machine-kind", "cpu-test", "--out", "reports/cpu-test"]) == 0
    assert (in_tmp / "reports" / "cpu-test" / "REPORT.md").exists()
    assert not (in_tmp / "runs").exists()


def test_ctrl_c_names_the_run_folder(in_tmp, capsys, fake_run, monkeypatch):
    def interrupted(profile, out, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench.runner, "run_profile", interrupted)
    assert main(["run", "--profile", "quick", "--machine-kind", "cpu-test"]) == 130
    err = capsys.readouterr().err
    folder = next((in_tmp / "runs").iterdir()).relative_to(in_tmp)
    assert f"--resume {folder}" in err and "Traceback" not in err


def test_bad_accuracy_results_fail_before_a_run_folder_is_made(in_tmp, capsys, fake_run):
    assert main(["run", "--profile", "quick", "--machine-kind", "t", "--accuracy", "nowhere/results.json"]) == 2
    assert "no such results file" in one_line_error(capsys, "run")
    assert not (in_tmp / "runs").exists() and "out" not in fake_run
    (in_tmp / "r.json").write_text("{}")
    assert main(["report", "r.json", "--accuracy", "nowhere"]) == 2
    one_line_error(capsys, "report")


def test_recorded_command_keeps_relative_paths_and_hides_absolute_ones():
    from bench.cli import recorded_command

    assert recorded_command(["run", "--out", "/tmp/x", "--accuracy=/home/me/a.json", "--resume", "runs/r1"]) == (
        "ovd-bench run --out OUT --accuracy=ACCURACY --resume runs/r1")
    assert recorded_command(["run", "--out", "reports/cpu-2core", "--profile", "quick"]) == (
        "ovd-bench run --out reports/cpu-2core --profile quick")


def test_sweep_batches_and_time_limit_reach_the_run(in_tmp, fake_run):
    from bench.cli import main

    assert main(["run", "--profile", "quick", "--sweep", "--train-batch", "16", "--infer-batch", "2",
                 "--time-limit", "90", "--out", "o"]) == 0
    p = fake_run["profile"]
    assert "sweep" in p.extras and "roofline" in p.extras  # added to the profile's extras, not instead of them
    assert (p.train_batch, p.infer_batch) == (16, 2) and fake_run["kwargs"]["time_limit_s"] == 90
    assert main(["run", "--profile", "gpu", "--out", "g"]) == 0
    assert fake_run["kwargs"]["time_limit_s"] == 480  # the gpu profile's own window


def test_bad_time_limit_and_batch_are_one_line(in_tmp, capsys, fake_run):
    from bench.cli import main

    assert main(["run", "--profile", "quick", "--time-limit", "0", "--out", "o"]) == 2
    assert "--time-limit must be a finite number of seconds > 0" in capsys.readouterr().err
    assert main(["run", "--profile", "quick", "--time-limit", "nan", "--out", "o"]) == 2  # never stopped anything
    assert "--time-limit must be a finite number of seconds > 0, got nan" in capsys.readouterr().err
    assert main(["run", "--profile", "quick", "--train-batch", "0", "--out", "o"]) == 2
    assert "train_batch and infer_batch must be >= 1" in capsys.readouterr().err
    assert main(["run", "--profile", "quick", "--threads", "-1", "--out", "o"]) == 2  # every worker failed, exit 1
    assert "--threads must be >= 1" in capsys.readouterr().err
    assert main(["run", "--profile", "quick", "--repeats", "-1", "--out", "o"]) == 2  # "repeats -1 processes"
    assert "repeats must be >= 0" in capsys.readouterr().err
    assert not (in_tmp / "o").exists() and "out" not in fake_run


def test_interrupted_run_still_writes_an_incomplete_report(in_tmp, monkeypatch):
    """Ctrl-C / SIGTERM (KeyboardInterrupt) during run_profile: the report of what was saved is written."""
    import bench.runner
    from bench.cli import main
    from bench.results import Results

    def interrupted(profile, out, threads, *args, **kwargs):
        Results(profile={"name": "quick", "planned_tasks": ["static:a", "static:b"]},
                tasks={"static:a": {"status": "ok"}}, environment={"machine_kind": "cpu-test"}).save(out / "results.json")
        raise KeyboardInterrupt

    monkeypatch.setattr(bench.runner, "run_profile", interrupted)
    assert main(["run", "--profile", "quick", "--out", "cut"]) == 130
    report = (in_tmp / "cut" / "REPORT.md").read_text()
    assert "INCOMPLETE" in report and "`static:b`" in report


def test_bad_time_limit_fails_before_a_run_folder_is_made(in_tmp, capsys, fake_run):
    assert main(["run", "--profile", "quick", "--time-limit", "0", "--out", "o"]) == 2
    one_line_error(capsys, "run")
    assert not (in_tmp / "o").exists() and "out" not in fake_run


@pytest.fixture
def no_user_variants_left():
    """--model registers a variant for the process's life; a test's registrations end with it."""
    from bench.variants import VARIANTS

    before = set(VARIANTS)
    yield
    for name in set(VARIANTS) - before:
        del VARIANTS[name]


def test_a_model_factory_that_cannot_be_imported_is_one_line_before_a_folder(in_tmp, capsys, fake_run,
                                                                             no_user_variants_left):
    assert main(["run", "--profile", "quick", "--model", "mine=nosuch_pkg_xyz.mod:build", "--out", "o"]) == 2
    assert "cannot import module 'nosuch_pkg_xyz.mod'" in one_line_error(capsys, "run")
    assert not (in_tmp / "o").exists() and "out" not in fake_run
    (in_tmp / "mymod_for_cli_test.py").write_text("x = 1\n")  # found in the caller's folder, as workers find it
    assert main(["run", "--profile", "quick", "--model", "mine2=mymod_for_cli_test:build", "--out", "o"]) == 2
    assert "has no attribute 'build'" in one_line_error(capsys, "run")


@pytest.mark.parametrize("name", ["machine", "peer:mine"])
def test_a_model_name_the_suite_uses_itself_is_refused(in_tmp, capsys, fake_run, no_user_variants_left, name):
    """`--model machine=...` filed the user's rows under the roofline's label (and the gate then took the model
    for the machine); `peer:` is the peers' prefix."""
    assert main(["run", "--profile", "quick", "--model", f"{name}=examples.my_detector:build", "--out", "o"]) == 2
    assert f"{name!r} is reserved" in one_line_error(capsys, "run")
    assert not (in_tmp / "o").exists() and "out" not in fake_run


def test_a_model_factory_whose_module_fails_to_import_is_one_line_naming_the_file(in_tmp, capsys, fake_run,
                                                                                  no_user_variants_left):
    """A factory module with a syntax error, or whose own code raises on import, cannot be imported either: one line
    naming the file (and line), exit 2, no folder made (before: a traceback and exit 1)."""
    (in_tmp / "mymod_syntax_for_cli_test.py").write_text("def build(device:\n    pass\n")
    assert main(["run", "--profile", "quick", "--model", "mine=mymod_syntax_for_cli_test:build", "--out", "o"]) == 2
    line = one_line_error(capsys, "run")
    assert "SyntaxError" in line and "mymod_syntax_for_cli_test.py, line 1" in line
    (in_tmp / "mymod_raises_for_cli_test.py").write_text("x = 1\nraise RuntimeError('needs CUDA')\n")
    assert main(["run", "--profile", "quick", "--model", "mine2=mymod_raises_for_cli_test:build", "--out", "o"]) == 2
    line = one_line_error(capsys, "run")
    assert "RuntimeError: needs CUDA" in line and "mymod_raises_for_cli_test.py:2" in line
    assert not (in_tmp / "o").exists() and "out" not in fake_run


def test_a_run_whose_every_measurement_failed_exits_1(in_tmp, capsys, fake_run, monkeypatch):
    from bench.results import Row

    def failing(profile, out, threads, *args, **kwargs):
        return SimpleNamespace(rows=[Row("optimized", "speed/*", None, "", status="error", error="boom")])

    monkeypatch.setattr(bench.runner, "run_profile", failing)
    assert main(["run", "--profile", "quick", "--out", "o"]) == 1
    assert "every measurement failed" in capsys.readouterr().err

    def partly(profile, out, threads, *args, **kwargs):
        return SimpleNamespace(rows=[Row("optimized", "speed/*", None, "", status="error", error="boom"),
                                     Row("optimized", "params/total", 5.0, "")])

    monkeypatch.setattr(bench.runner, "run_profile", partly)
    assert main(["run", "--profile", "quick", "--out", "o2"]) == 0  # the failure is in the report; the run is not lost


def _accuracy_run(folder, **machine):
    Results(environment={"machine_kind": "cpu-2core", **machine}, profile={"name": "accuracy"}).save(
        folder / "results.json")
    return folder


def test_an_accuracy_run_from_another_machine_is_refused_unless_asked(in_tmp, capsys, fake_run):
    other = _accuracy_run(in_tmp / "acc", device="cpu", cpu_model="Some Other CPU", cpu_features="avx2 fma")
    assert main(["run", "--profile", "quick", "--accuracy", str(other), "--out", "o"]) == 2
    line = one_line_error(capsys, "run")
    assert "Some Other CPU" in line and "--accuracy-any-machine" in line
    assert not (in_tmp / "o").exists()
    assert main(["run", "--profile", "quick", "--accuracy", str(other), "--accuracy-any-machine", "--out", "o"]) == 0
    here = _accuracy_run(in_tmp / "acc_here", **bench.env.this_machine())
    assert main(["run", "--profile", "quick", "--accuracy", str(here), "--out", "o3"]) == 0
    # `report` judges by the results' own machine, not the one it runs on
    Results(environment={"device": "cpu", "cpu_model": "Some Other CPU", "cpu_features": "avx2 fma"}).save(
        in_tmp / "run" / "results.json")
    assert main(["report", str(in_tmp / "run"), "--accuracy", str(other)]) == 0
    capsys.readouterr()
    assert main(["report", str(in_tmp / "run"), "--accuracy", str(here)]) == 2
    assert "--accuracy-any-machine" in one_line_error(capsys, "report")


def test_workers_build_the_callers_factory_not_a_same_named_module_of_the_clone(in_tmp, monkeypatch,
                                                                              no_user_variants_left):
    """A user's edited copy of examples/my_detector.py, in the folder ovd-bench runs from, is the model the worker
    processes measure: their working folder (the clone, which has its own examples/my_detector.py) must not shadow
    it. Before, the command line checked the user's factory and the workers measured the clone's example (25.4M
    parameters for a 144-parameter model)."""
    import os
    import sys

    (in_tmp / "examples").mkdir()
    (in_tmp / "examples" / "my_detector.py").write_text(
        "import torch\nfrom bench.sources import ModelUnderTest\n\n\ndef build(device, batch_size=2):\n"
        "    return ModelUnderTest(torch.nn.Linear(8, 16).to(device), (torch.randn(batch_size, 8, device=device),))\n")
    for var in ("PYTHONPATH", "OVD_BENCH_CALLER_PATH"):  # --model sets them for the workers: restored after the test
        monkeypatch.setenv(var, os.environ.get(var, ""))
    monkeypatch.setattr(sys, "path", list(sys.path))
    measured = {}

    def run_profile(profile, out, threads, *args, **kwargs):
        task = next(t for t in bench.runner.plan(profile) if t.id == "static:mine")
        outcome = bench.runner.run_task(task, 1, "cpu", 300, out, start="exec")
        measured.update({r["metric"]: r["value"] for r in outcome["outcomes"]["params"]["rows"]})
        return SimpleNamespace(rows=[])

    monkeypatch.setattr(bench.runner, "run_profile", run_profile)
    monkeypatch.setattr(bench.report, "render", lambda results, out, accuracy=None: out / "REPORT.md")
    ours = {name: sys.modules.pop(name) for name in ("examples", "examples.my_detector") if name in sys.modules}
    try:
        assert main(["run", "--profile", "quick", "--model", "mine=examples.my_detector:build", "--out", "o"]) == 0
    finally:  # the command line imported the user's copy in this process: later tests import the clone's again
        for name in ("examples", "examples.my_detector"):
            sys.modules.pop(name, None)
        sys.modules.update(ours)
    assert measured["params/total"] == 8 * 16 + 16
