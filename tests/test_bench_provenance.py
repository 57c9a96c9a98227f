"""Provenance: the commit (checked, overridable), a hash of the sources, both in every task outcome;
--resume refuses results measured on other code unless told to keep them."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import bench.env as env
from bench.errors import UsageError
from bench.profiles import get_profile, with_overrides
from bench.results import Results
from bench.runner import Task, plan, run_profile, run_task


def _proc(rc, out):
    return subprocess.CompletedProcess(["git"], rc, stdout=out, stderr="")


def test_failing_rev_parse_gives_unknown_not_its_output(monkeypatch):
    monkeypatch.delenv(env.COMMIT_ENV, raising=False)
    monkeypatch.setattr(env.subprocess, "run",
                        lambda *a, **k: _proc(128, "fatal: not a git repository (or any parent)\n"))
    assert env.git_commit() == "unknown"
    assert env.git_dirty() is None

    def missing(*a, **k):
        raise FileNotFoundError("git")

    monkeypatch.setattr(env.subprocess, "run", missing)
    assert env.git_commit() == "unknown"


def test_rev_parse_success_and_env_override(monkeypatch):
    monkeypatch.delenv(env.COMMIT_ENV, raising=False)
    sha = "a" * 40
    monkeypatch.setattr(env.subprocess, "run", lambda *a, **k: _proc(0, sha + "\n"))
    assert env.git_commit() == sha
    monkeypatch.setenv(env.COMMIT_ENV, "b" * 40)  # a GPU box without .git: the host passes the hash in
    assert env.git_commit() == "b" * 40


def test_source_hash_sees_every_python_file_and_nothing_else(tmp_path):
    root = tmp_path / "tree"
    for rel, text in {"ovd/a.py": "x = 1\n", "ovd/sub/b.py": "y = 2\n", "bench/c.py": "z = 3\n",
                      "README.md": "doc\n"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    h0 = env.source_hash(root)
    assert len(h0) == 64 and int(h0, 16) >= 0
    (root / "README.md").write_text("changed\n")
    (root / "ovd" / "__pycache__").mkdir()
    (root / "ovd" / "__pycache__" / "a.py").write_text("cache\n")
    (root / "ovd" / "data.json").write_text("{}")
    assert env.source_hash(root) == h0  # docs, caches and data do not count
    (root / "ovd" / "sub" / "b.py").write_text("y = 3\n")
    h1 = env.source_hash(root)
    assert h1 != h0
    shutil.move(root / "bench" / "c.py", root / "bench" / "d.py")  # same bytes, another name
    assert env.source_hash(root) != h1


def test_source_hash_of_this_checkout_matches_a_copy(tmp_path):
    here = env.REPO_ROOT
    for d in env.SOURCE_DIRS:
        shutil.copytree(here / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__"))
    assert env.source_hash(tmp_path) == env.source_hash()


def test_capture_records_provenance_and_exact_versions():
    import torch

    e = env.capture("cmd", 1)
    assert {"git_commit", "git_dirty", "source_hash", "torch", "cuda", "cuda_driver"} <= set(e)
    assert e["source_hash"] == env.source_hash() and e["torch"] == torch.__version__


@pytest.mark.slow  # about 9 s (a fresh worker); default tier: test_bench_runner.py::test_static_run_end_to_end
def test_worker_records_provenance_for_a_task_without_variant(monkeypatch):
    """The roofline runs without a variant; its outcome's environment carries the provenance keys,
    and the commit override reaches the fresh worker process."""
    monkeypatch.setenv(env.COMMIT_ENV, "c" * 40)
    task = Task("roofline:0", None, ["roofline"],
                {"roofline": {"sizes": [32], "dtypes": ["fp32"], "onnxruntime": False, "min_run_time": 0.01}},
                label="machine")
    before = env.source_hash()
    out = run_task(task, threads=1, device="cpu", timeout_s=120)
    after = env.source_hash()  # (a tree edited meanwhile hashes differently: either is right)
    assert out["status"] == "ok", out
    assert out["task"]["variant"] == "machine"
    e = out["environment"]
    assert e["git_commit"] == "c" * 40 and e["source_hash"] in (before, after) and "git_dirty" in e


# -- resume ------------------------------------------------------------------------------------

def _static_only(*variants):
    return with_overrides(get_profile("quick"), static_variants=variants, memory_variants=(), speed_variants=(),
                          accuracy_variants=(), extras=(), repeats=0, train_loop_steps=0)


def _outcome(tid, variant, source_hash, commit, **env_extra):
    """A finished static task as the plan of :func:`_static_only` has it (same measurements and parameters)."""
    planned = {t.id: t for t in plan(_static_only(variant))}[tid]
    return {"status": "ok", "wall_seconds": 1.0,
            "outcomes": {m: {"status": "ok", "rows": [{"metric": "params/total", "value": 5.0, "unit": ""}]}
                         for m in planned.measurements},
            "environment": {"git_commit": commit, "source_hash": source_hash, **env_extra},
            "task": {"id": tid, "variant": variant, "measurements": planned.measurements, "repeat": 0,
                     "params": planned.params}}


def _previous(tmp_path, foreign: bool) -> Path:
    now = env.provenance()
    other = ("f" * 64, "e" * 40) if foreign else (now["source_hash"], now["git_commit"])
    res = Results(tasks={"static:baseline-tiny": _outcome("static:baseline-tiny", "baseline-tiny",
                                                          now["source_hash"], now["git_commit"]),
                         "static:optimized-tiny": _outcome("static:optimized-tiny", "optimized-tiny", *other)})
    folder = tmp_path / "prev"
    res.save(folder / "results.json")
    return folder


def test_resume_refuses_tasks_from_other_code(tmp_path):
    prev = _previous(tmp_path, foreign=True)
    with pytest.raises(UsageError, match=r"1 of 2 finished tasks.*--resume-any"):
        run_profile(_static_only("baseline-tiny", "optimized-tiny"), tmp_path / "out", threads=1, resume=prev)
    assert not (tmp_path / "out" / "results.json").exists()


def test_resume_any_keeps_them_and_records_the_mix(tmp_path):
    prev = _previous(tmp_path, foreign=True)
    res = run_profile(_static_only("baseline-tiny", "optimized-tiny"), tmp_path / "out", threads=1, resume=prev,
                      resume_any=True)  # every task is done: nothing runs
    now = env.source_hash()
    assert res.environment["source_hashes"] == sorted([now, "f" * 64])
    summary = env.provenance_summary(res)
    assert summary["mixed"] and not summary["matches_current"] and summary["current_source_hash"] == now
    assert summary["commits"] == sorted({env.git_commit(), "e" * 40})
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["environment"]["source_hashes"] == res.environment["source_hashes"]


def test_resume_on_the_same_code_is_accepted(tmp_path):
    prev = _previous(tmp_path, foreign=False)
    res = run_profile(_static_only("baseline-tiny", "optimized-tiny"), tmp_path / "out", threads=1, resume=prev)
    summary = env.provenance_summary(res)
    assert not summary["mixed"] and summary["matches_current"]
    assert res.value("optimized-tiny", "params/total") == 5.0


def test_cli_resume_refusal_is_one_line(tmp_path, capsys):
    from bench.cli import main

    prev = _previous(tmp_path, foreign=True)
    rc = main(["run", "--profile", "quick", "--variants", "baseline-tiny,optimized-tiny", "--extras", "none",
               "--resume", str(prev), "--out", str(tmp_path / "out")])
    assert rc == 2
    assert "--resume-any" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before a run folder is made


def _folder(tmp_path, **tasks) -> Path:
    folder = tmp_path / "prev"
    Results(tasks=tasks).save(folder / "results.json")
    return folder


def test_resume_keeps_only_tasks_this_run_plans_with_the_same_parameters(tmp_path):
    from bench.runner import resumed_tasks

    now = env.provenance()
    same = _outcome("static:baseline-tiny", "baseline-tiny", now["source_hash"], now["git_commit"])
    other = _outcome("static:optimized-tiny", "optimized-tiny", now["source_hash"], now["git_commit"])
    other["task"]["params"] = {"flops": {"batch_size": 7}}  # measured at another batch: not this run's figure
    unplanned = _outcome("static:baseline-tiny", "baseline-tiny", now["source_hash"], now["git_commit"])
    folder = _folder(tmp_path, **{"static:baseline-tiny": same, "static:optimized-tiny": other,
                                  "static:baseline": unplanned})
    kept = resumed_tasks(plan(_static_only("baseline-tiny", "optimized-tiny")), folder, threads=1)
    assert sorted(kept) == ["static:baseline-tiny"]


@pytest.mark.parametrize("setup, message", [
    ({"device": "cpu", "cpu_model": "Some Other CPU", "cpu_features": "avx2 fma", "threads": 1}, "Some Other CPU"),
    ({"device": "NVIDIA H200", "threads": 1}, "NVIDIA H200"),
    ({**env.this_machine(), "threads": 4}, "with 4 threads"),
])
def test_resume_refuses_tasks_from_another_machine_or_thread_count(tmp_path, setup, message):
    from bench.runner import resumed_tasks

    now = env.provenance()
    done = _outcome("static:baseline-tiny", "baseline-tiny", now["source_hash"], now["git_commit"], **setup)
    folder = _folder(tmp_path, **{"static:baseline-tiny": done})
    with pytest.raises(UsageError, match=f"another machine or thread count.*{message}"):
        resumed_tasks(plan(_static_only("baseline-tiny")), folder, threads=1, resume_any=True)
    same = _outcome("static:baseline-tiny", "baseline-tiny", now["source_hash"], now["git_commit"],
                    **env.this_machine(), threads=1)
    folder = _folder(tmp_path, **{"static:baseline-tiny": same})
    assert list(resumed_tasks(plan(_static_only("baseline-tiny")), folder, threads=1)) == ["static:baseline-tiny"]


def test_same_machine_compares_gpu_or_cpu_model_and_features():
    cpu = {"device": "cpu", "cpu_model": "EPYC", "cpu_features": "avx2 fma"}
    assert env.same_machine(cpu, dict(cpu)) is True
    assert env.same_machine(cpu, {**cpu, "cpu_features": "avx2 fma avx512f"}) is False  # same name, other ISA
    assert env.same_machine(cpu, {**cpu, "cpu_features": None}) is True  # an older file: the model decides
    assert env.same_machine(cpu, {"device": "NVIDIA H200", "cpu_model": "EPYC"}) is False
    assert env.same_machine({"device": "NVIDIA H200", "cpu_model": "A"}, {"device": "NVIDIA H200",
                                                                        "cpu_model": "B"}) is True
    assert env.same_machine(cpu, {}) is None


def test_several_commits_one_source_hash_is_not_called_a_mix_of_sources():
    """Tasks measured on two commits whose ovd/ and bench/ sources are identical (a docs-only commit between
    them): the report names both commits but must not claim 'different source hashes'."""
    from bench.report.provenance import lines

    same = env.source_hash()
    res = Results(tasks={"static:a": _outcome("static:a", "a", same, "a" * 40),
                         "static:b": _outcome("static:b", "b", same, "b" * 40)}, command="ovd-bench run")
    text = "\n".join(lines(res))
    assert "2 commits" in text
    assert "different source hashes" not in text
    res.tasks["static:b"]["environment"]["source_hash"] = "f" * 64
    assert "2 different source hashes" in "\n".join(lines(res))


def test_resume_re_runs_a_user_models_tasks_when_its_name_now_names_another_factory(tmp_path):
    """`--model mine=pkg_a.mod:build`, then `--resume` of that run with `--model mine=pkg_b.mod:build`: mine's
    finished tasks measured pkg_a's model and are re-run (before, they were kept: the report gave pkg_b the other
    model's parameters, FLOPs and speed). The same factory keeps them."""
    from bench.runner import resumed_tasks
    from bench.variants import VARIANTS, register_user_model

    now = env.provenance()
    try:
        register_user_model("mine-resume=pkg_a.mod:build")
        done = _outcome("static:mine-resume", "mine-resume", now["source_hash"], now["git_commit"],
                        **env.this_machine(), threads=1)
        folder = tmp_path / "prev"
        Results(tasks={"static:mine-resume": done},
                variants={"mine-resume": VARIANTS["mine-resume"].to_dict()}).save(folder / "results.json")
        planned = plan(_static_only("mine-resume"))
        assert list(resumed_tasks(planned, folder, threads=1)) == ["static:mine-resume"]  # the same factory
        del VARIANTS["mine-resume"]  # a new `ovd-bench run` process: the name now names another factory
        register_user_model("mine-resume=pkg_b.mod:build")
        assert resumed_tasks(plan(_static_only("mine-resume")), folder, threads=1) == {}
    finally:
        VARIANTS.pop("mine-resume", None)
