"""Results IO, statistics, the regression gate and the report, on synthetic results (no measuring)."""

import json
import re

import pytest

from bench.compare import compare
from bench.report import render, seed_table
from bench.results import Results, ResultsError, Row, Stats, aggregate, failed_repeats


def _results(fps_opt=100.0, params_opt=2_000_000, mem_opt=200.0):
    def outcome(fps, params, mem):
        return {"status": "ok", "rows": [
            {"metric": "infer/fps_b4", "value": fps, "unit": "images/s"},
            {"metric": "train/samples_per_s", "value": fps / 3, "unit": "samples/s"},
            {"metric": "params/trainable", "value": params, "unit": "params"},
            {"metric": "flops/per_image", "value": 1e9, "unit": "FLOPs (2*MACs)"},
            {"metric": "memory/train_total", "value": mem, "unit": "MiB"},
        ]}

    rows = aggregate("b", "speed", [outcome(50.0, 9_000_000, 400.0), outcome(52.0, 9_000_000, 400.0)])
    rows += aggregate("o", "speed", [outcome(fps_opt, params_opt, mem_opt), outcome(fps_opt * 1.02, params_opt, mem_opt)])
    return Results(rows=rows, environment={"machine_kind": "cpu-test"}, profile={"pair": ["b", "o"], "infer_batch": 4},
                   variants={"b": {"reference": None}, "o": {"reference": "b", "description": "opt"}})


def test_stats_median_iqr():
    s = Stats.of([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (s.median, s.q1, s.q3, s.iqr, s.n) == (3.0, 2.0, 4.0, 2.0, 5)
    assert Stats.of([]) is None


def test_round_trip_json_and_csv(tmp_path):
    res = _results()
    path = res.save(tmp_path / "results.json")
    back = Results.load(path)
    assert back.get("o", "infer/fps_b4").stats.n == 2
    assert back.value("o", "params/trainable") == 2_000_000
    assert (tmp_path / "results.csv").read_text().startswith("variant,metric,value,unit")
    assert not list(tmp_path.glob("*.tmp"))


def test_corrupt_and_wrong_schema_raise_clear_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 1, "rows": [')
    with pytest.raises(ResultsError, match="corrupt"):
        Results.load(bad)
    bad.write_text(json.dumps({"schema_version": 999, "rows": []}))
    with pytest.raises(ResultsError, match="schema_version"):
        Results.load(bad)
    with pytest.raises(ResultsError, match="no such"):
        Results.load(tmp_path / "missing.json")
    # a folder, a path through a file, an unreadable file: one line naming the path, not an OSError's traceback
    for path in (tmp_path, bad / "results.json"):
        with pytest.raises(ResultsError, match=f"^{re.escape(str(path))}: cannot read the results file"):
            Results.load(path)
    with pytest.raises(ResultsError):
        Row("v", "m", 1.0, "u", status="weird")


def test_error_rows_are_kept():
    rows = aggregate("v", "speed", [{"status": "error", "error": "OOM: out of memory"}])
    assert rows[0].status == "error" and "OOM" in rows[0].error


def test_compare_passes_identical_and_fails_planted_regressions():
    ref = _results()
    assert compare(ref, _results()).passed
    assert compare(ref, _results(fps_opt=300.0)).passed  # improvements never fail
    slow = compare(ref, _results(fps_opt=40.0))
    assert not slow.passed and any("fps" in c.metric for c in slow.failures)
    assert "REGRESSION" in slow.table(only_failures=True)
    grown = compare(ref, _results(params_opt=2_000_001))
    assert not grown.passed
    assert compare(ref, _results(params_opt=2_000_001), allow_size_change=True).passed
    assert not compare(ref, _results(mem_opt=400.0)).passed


def test_report_from_results_only(tmp_path):
    res = _results(fps_opt=120.0)  # 2.35x the baseline: meets the seed's 2x
    table = {r["Row"]: r for r in seed_table(res)}
    assert table["Inference Speed"]["Verdict"] == "holds"
    assert table["mAP"]["Verdict"] == "not measured on this machine"
    assert {r["Row"]: r for r in seed_table(_results(fps_opt=80.0))}["Inference Speed"]["Verdict"] == "partly"
    path = render(res, tmp_path)
    text = path.read_text()
    assert "| Row " in text and "fps.png" in text
    assert (tmp_path / "fps.png").exists()


def test_aggregate_keeps_each_process_calls_and_why_an_arm_was_timed_once():

    def outcome(value, **extra):
        return {"status": "ok", "rows": [{"metric": "arm/x/gain", "value": value, "unit": "x", "extra": extra}]}

    (r,) = aggregate("optimized", "arms", [outcome(0.5, calls=[0.3], timed_once="slow"), outcome(1.0, calls=[0.1, 0.2]),
                                           {"status": "error", "rows": []}])
    assert r.samples == [0.5, 1.0] and r.value == 0.75
    assert r.extra["per_repeat"] == [{"calls": [0.3], "timed_once": "slow"}, {"calls": [0.1, 0.2]}]
    assert "calls" not in r.extra and "timed_once" not in r.extra  # per-process facts live in per_repeat only


def test_failed_repeats_are_counted_once_for_the_report_and_the_gate():
    ok = {"status": "ok", "rows": [{"metric": "a", "value": 1.0, "unit": "x"}, {"metric": "b", "value": 2.0, "unit": "x"}]}
    bad = {"status": "error", "error": "boom"}
    (group,) = failed_repeats(aggregate("optimized", "speed", [ok, ok, bad]))
    assert (group.variant, group.measurement, group.failed, group.planned, group.last_error) == (
        "optimized", "speed", 1, 3, "boom")
    assert [r.metric for r in group.rows] == ["a", "b"]
    # a results file written before per_repeat existed: the samples count the surviving processes
    old = Row("optimized", "a", 1.0, "x", samples=[1.0, 1.0], measurement="speed", extra={"failed_repeats": ["boom"]})
    assert failed_repeats([old])[0].planned == 3
    assert failed_repeats(aggregate("optimized", "speed", [ok, ok])) == []


def test_unreadable_results_file_is_a_results_error(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    path.write_text("{}")

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(path), "read_text", denied)  # chmod does not stop root
    with pytest.raises(ResultsError, match=r"results.json: cannot read the results file \(Permission denied\)"):
        Results.load(path)
