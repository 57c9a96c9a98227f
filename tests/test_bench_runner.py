"""End to end: a quick-profile run restricted to one tiny variant, 2 repeats, into tmp_path; the
regression gate passes it against itself; resume skips finished tasks; a crashing task is recorded."""

import dataclasses

from bench.cli import main
from bench.compare import compare
from bench.profiles import get_profile, restrict
from bench.results import Results
from bench.runner import plan, run_profile


def test_plan_interleaves_repeats():
    p = dataclasses.replace(restrict(get_profile("quick"), ["baseline-tiny", "optimized-tiny"]), repeats=2)
    speed = [t.id for t in plan(p) if t.id.startswith("speed:")]
    assert speed == ["speed:baseline-tiny:0", "speed:optimized-tiny:0", "speed:baseline-tiny:1",
                     "speed:optimized-tiny:1"]


def test_quick_run_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["run", "--profile", "quick", "--variants", "optimized-tiny", "--repeats", "2", "--threads", "1",
               "--out", str(out), "--no-report-copy"])
    assert rc == 0
    res = Results.load(out / "results.json")
    assert res.get("optimized-tiny", "train/samples_per_s").stats.n == 2
    assert res.value("optimized-tiny", "params/total") > 0
    assert res.value("optimized-tiny", "memory/train_total") > 0
    assert res.environment["git_commit"] is not None or res.environment["git_commit"] is None
    assert (out / "REPORT.md").exists() and (out / "results.csv").exists()
    assert compare(res, res).passed
    assert main(["compare", str(out / "results.json"), str(out / "results.json")]) == 0

    # --resume: everything is done, nothing re-runs, results are the same.
    again = run_profile(restrict(get_profile("quick"), ["optimized-tiny"]), tmp_path / "again", threads=1,
                        resume=out)
    assert again.value("optimized-tiny", "params/total") == res.value("optimized-tiny", "params/total")


def test_crashing_variant_is_recorded(tmp_path, monkeypatch):
    import bench.variants as variants

    bad = variants.Variant("broken", "optimized-tiny", {"image.backbone": "no_such_backbone"}, "crashes", None)
    monkeypatch.setitem(variants.VARIANTS, "broken", bad)
    p = dataclasses.replace(get_profile("quick"), static_variants=("broken",), memory_variants=(), speed_variants=(),
                            repeats=1)
    # the worker runs in a fresh process that does not see the monkeypatch: pass the variant via the spec
    res = run_profile(p, tmp_path, threads=1)
    row = res.rows[0]
    assert row.status == "error" and "no_such_backbone" in row.error


def test_ctrl_c_prints_how_to_resume(monkeypatch, capsys, tmp_path):
    import bench.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_run", interrupted)
    assert cli.main(["run", "--profile", "quick", "--out", str(tmp_path)]) == 130
    assert f"--resume {tmp_path}" in capsys.readouterr().err
