"""The regression gate on synthetic results: a slowdown of shared code (every variant alike, ratios
unchanged) fails on efficiency (and latency, when asked to gate it); noise within the spread passes; contention
on some processes passes; improvements pass; runs under different conditions are refused unless allowed."""

import dataclasses
import random
from pathlib import Path

import pytest

from bench.compare import (
    SPEED_RULE,
    IncomparableResults,
    NothingToGate,
    SpreadRule,
    compare,
    efficiency,
    fastest,
    relative_range,
    relative_spread,
)
from bench.errors import UsageError
from bench.results import Results, Row, Stats, aggregate

REFERENCE = Path(__file__).resolve().parent.parent / "reports" / "reference" / "quick.json"
BASE = {"baseline-tiny": {"fps_b1": 28.0, "fps_b4": 38.0, "train": 12.3, "flops": 1.89e9},
        "optimized-tiny": {"fps_b1": 56.0, "fps_b4": 95.0, "train": 34.0, "flops": 0.68e9}}
PEAK = 105e9  # FLOP/s, the roofline's torch fp32 peak


def _row(variant, metric, samples, unit="", **extra):
    st = Stats.of(samples)
    return Row(variant, metric, st.median, unit, list(samples), st, extra={"precision": "fp32", **extra})


def _samples(value, noise, rng, n=3, contention=(1.0, 1.0, 1.0)):
    """``n`` process samples of ``value``, each off by up to ``noise`` and divided by its ``contention`` factor."""
    return [value * (1 + rng.uniform(-noise, noise)) / contention[i] for i in range(n)]


def make_results(slowdown=1.0, noise=0.01, seed=0, peak_scale=1.0, env=None, profile=None, ttt=None,
                 roofline=True, contention=(1.0, 1.0, 1.0)) -> Results:
    """Two-variant results as a quick run would write them. ``slowdown`` divides every speed of every
    variant (shared code got slower), ``peak_scale`` multiplies the machine's peak (another machine),
    ``contention`` divides the speeds of each variant's 1st, 2nd and 3rd process (a busy neighbour at the time)."""
    rng = random.Random(seed)
    rows = []
    for v, m in BASE.items():
        rows.append(Row(v, "flops/per_image", m["flops"], "FLOP", [m["flops"]], Stats.of([m["flops"]])))
        rows.append(Row(v, "params/total", 1e6, "", [1e6], Stats.of([1e6])))
        rows.append(_row(v, "train/samples_per_s", _samples(m["train"] / slowdown, noise, rng,
                                                            contention=contention), "samples/s"))
        for b in (1, 4):
            fps = _samples(m[f"fps_b{b}"] / slowdown, noise, rng, contention=contention)
            rows.append(_row(v, f"infer/fps_b{b}", fps, "images/s"))
            rows.append(_row(v, f"infer/latency_p50_ms_b{b}", [b * 1e3 / x for x in fps], "ms"))
        if ttt is not None:
            if ttt[v] is None:
                rows.append(Row(v, "accuracy/time_to_target_s", None, "s", status="not-measured",
                                error="target val/mAP50 >= 0.3 not reached in 60 s"))
            else:
                rows.append(_row(v, "accuracy/time_to_target_s", _samples(ttt[v], noise, rng), "s"))
    if roofline:
        rows.append(_row("machine", "roofline/peak_fp32_torch", _samples(PEAK * peak_scale, noise, rng), "FLOP/s"))
        rows.append(_row("machine", "roofline/peak_fp32", _samples(2 * PEAK * peak_scale, noise, rng), "FLOP/s"))
    variants = {"baseline-tiny": {"reference": None, "group": "main"},
                "optimized-tiny": {"reference": "baseline-tiny", "group": "main"},
                "machine": {"reference": None, "group": "machine"}}
    environment = {"device": "cpu", "cpu_model": "AMD EPYC", "torch": "2.14.1+cu130", "threads": 1, **(env or {})}
    prof = {"name": "quick", "threads": 1, "infer_batch": 4, **(profile or {})}
    return Results(rows=rows, environment=environment, variants=variants, profile=prof)


def _failed_kinds(cmp):
    return {c.kind for c in cmp.failures}


def test_unchanged_and_noise_within_the_spread_pass():
    ref = make_results(seed=0)
    assert compare(ref, ref).passed
    # another run of the same code: every sample moves by up to 4%
    cmp = compare(ref, make_results(noise=0.04, seed=1))
    assert cmp.passed, cmp.table(only_failures=True)
    kinds = {c.kind for c in cmp.checks}
    assert {"efficiency", "latency", "ratio", "exact"} <= kinds


def test_shared_code_slowdown_fails_on_efficiency_and_latency_not_on_ratios():
    ref, new = make_results(seed=0), make_results(slowdown=1.25, seed=1)
    cmp = compare(ref, new)
    assert not cmp.passed
    assert _failed_kinds(cmp) == {"efficiency"}  # raw latency is listed, not gated, by default
    assert all("not gated: raw time across sessions" in c.note for c in cmp.checks if c.kind == "latency")
    cmp = compare(ref, new, gate_latency=True)
    assert _failed_kinds(cmp) == {"efficiency", "latency"}
    # the root is gated; the ratios (optimized vs baseline) did not move
    assert {c.variant for c in cmp.failures} == {"baseline-tiny"}
    assert all(c.passed for c in cmp.checks if c.kind == "ratio")
    eff = next(c for c in cmp.failures if c.kind == "efficiency")
    assert eff.new == pytest.approx(eff.reference / 1.25, rel=0.05) and "slower" in eff.note


def test_contention_on_some_processes_passes_a_regression_on_all_fails():
    """The fastest process is the statistic: a neighbour that slowed two of three processes by 1.5x (as CI's shared
    VM did: 126, 73 and 107 ms for one unchanged variant) is not a regression; code 25% slower in every process,
    the fastest included, still is."""
    ref = make_results(seed=0)
    busy = compare(ref, make_results(seed=1, contention=(1.5, 1.0, 1.5)), gate_latency=True)
    assert busy.passed, busy.table(only_failures=True)
    lat = next(c for c in busy.checks if c.metric.startswith("infer/latency_p50_ms_b1"))
    assert "fastest process" in lat.metric and lat.new == pytest.approx(lat.reference, rel=0.05)
    # a run that noisy cannot resolve 1.25x (its own processes differ by 1.5x: the tolerance reaches the cap) ...
    eff = next(c for c in compare(ref, make_results(seed=1, slowdown=1.25, contention=(1.5, 1.0, 1.5))).checks
               if c.kind == "efficiency")
    assert eff.passed and "capped" in eff.limit
    # ... but 1.6x is beyond the cap on any machine; in a quiet run 1.25x fails (test above)
    worse = compare(ref, make_results(seed=1, slowdown=1.6, contention=(1.5, 1.0, 1.5)), gate_latency=True)
    assert _failed_kinds(worse) == {"efficiency", "latency"}


def test_fastest_process_and_relative_range():
    row = _row("v", "infer/fps_b4", [16.2, 22.2, 16.05])
    assert fastest(row, True) == 22.2 and fastest(row, False) == 16.05
    assert relative_range(row) == pytest.approx(22.2 / 16.05 - 1)
    assert relative_range(_row("v", "m", [5.0])) == 0.0
    assert fastest(Row("v", "m", 7.0, "", []), True) == 7.0  # no samples: the value


def test_improvements_never_fail():
    cmp = compare(make_results(seed=0), make_results(slowdown=0.5, seed=1))
    assert cmp.passed, cmp.table(only_failures=True)


def test_a_host_slower_at_everything_is_cancelled_by_its_own_peak():
    """The same machine 30% slower at everything (a busier host): efficiency is unchanged and passes; a real
    regression on top of it is still seen."""
    ref = make_results(seed=0)
    assert compare(ref, make_results(slowdown=1.3, peak_scale=1 / 1.3, seed=1)).passed
    worse = make_results(slowdown=1.3 * 1.25, peak_scale=1 / 1.3, seed=2)
    assert "efficiency" in _failed_kinds(compare(ref, worse))


def test_efficiency_and_latency_on_another_machine_are_listed_not_gated():
    """Another CPU moves the model's share of its own GEMM peak (0.70 on a Zen 5 EPYC, 0.58 on a Zen 4 with the
    same code): efficiency is listed with both values, not gated; the within-run ratios still gate."""
    ref = make_results(seed=0)
    other = {"cpu_model": "Intel Xeon"}
    cmp = compare(ref, make_results(slowdown=1.3 * 1.25, peak_scale=1 / 1.3, seed=1, env=other))
    assert cmp.passed, cmp.table(only_failures=True)
    eff = [c for c in cmp.checks if c.kind == "efficiency"]
    assert eff and all("not gated: different machines" in c.note and c.new is not None for c in eff)
    lat = [c for c in compare(ref, make_results(seed=1, env=other), gate_latency=True).checks if c.kind == "latency"]
    assert lat and all("not gated: different machines" in c.note for c in lat)
    # optimized-tiny alone 2x slower on that machine: its ratio to baseline-tiny fails
    slower = make_results(seed=2, env=other)
    slower = dataclasses.replace(slower, rows=[
        dataclasses.replace(r, value=r.value / 2, samples=[x / 2 for x in r.samples], stats=Stats.of([x / 2 for x in r.samples]))
        if r.variant == "optimized-tiny" and r.metric.startswith("infer/fps") else r for r in slower.rows])
    assert "ratio" in _failed_kinds(compare(ref, slower))


def _with_reduced_peaks(res: Results, bf16: str | None = "ok", int8: str | None = "ok") -> Results:
    """``res`` plus the machine's bf16 and int8 peaks, each measured ("ok"), not measured with the roofline's
    reason ("not-measured"), failed ("error") or absent (None)."""
    rows = list(res.rows)
    if bf16 == "ok":
        rows.append(_row("machine", "roofline/peak_bf16", [3.2e10, 3.3e10, 3.1e10], "FLOP/s"))
    elif bf16 is not None:
        rows.append(Row("machine", "roofline/peak_bf16", None, "FLOP/s", status=bf16,
                        error="no native bf16 matmul on this CPU"))
    if int8 == "ok":
        rows.append(_row("machine", "roofline/peak_int8", [6.1e11, 6.2e11, 6.0e11], "OP/s"))
    elif int8 is not None:
        rows.append(Row("machine", "roofline/peak_int8", None, "OP/s", status=int8,
                        error="no int8 dot-product instructions reported by the CPU"))
    return dataclasses.replace(res, rows=rows)


def test_a_peak_the_new_machine_lacks_is_not_a_regression_but_an_error_is():
    """A reference made on a CPU with bf16 and VNNI (the committed one) gating an AVX2-only machine."""
    ref = _with_reduced_peaks(make_results(seed=0, env={"cpu_model": "Intel(R) Xeon(R) Processor"}))
    avx2 = _with_reduced_peaks(make_results(seed=1), bf16="not-measured", int8="not-measured")
    cmp = compare(ref, avx2)
    assert cmp.passed, cmp.table(only_failures=True)
    notes = {c.metric: c.note for c in cmp.checks if c.variant == "machine" and "not gated" in c.note}
    assert set(notes) == {"roofline/peak_bf16", "roofline/peak_int8"}
    assert "no native bf16" in notes["roofline/peak_bf16"] and "no int8 dot-product" in notes["roofline/peak_int8"]
    # the roofline crashing is the code failing, on any machine; a row that vanished without a reason too
    crashed = compare(ref, _with_reduced_peaks(make_results(seed=1), bf16="not-measured", int8="error"))
    assert [(c.variant, c.metric) for c in crashed.failures] == [("machine", "roofline/peak_int8")]
    lost = compare(ref, _with_reduced_peaks(make_results(seed=1), bf16=None, int8="not-measured"))
    assert [(c.metric, c.kind) for c in lost.failures] == [("roofline/peak_bf16", "presence")]
    # on the same machine a peak that went missing fails as before
    same = compare(_with_reduced_peaks(make_results(seed=0)),
                   _with_reduced_peaks(make_results(seed=1), bf16="not-measured"))
    assert [(c.metric, c.kind) for c in same.failures] == [("roofline/peak_bf16", "status")]
    # the fp32 peak is measurable everywhere: without it the efficiency check fails, on another machine too
    gone = compare(ref, make_results(seed=1, roofline=False))
    assert "efficiency" in _failed_kinds(gone)


def test_per_backend_peaks_a_new_machine_lacks_are_excused_by_the_aggregate_reason():
    """The failure CI met on an AVX2 Zen 3 against a bf16 reference: the reference's per-backend peak rows
    (``peak_bf16_torch``, ``peak_int8_onnxruntime``) have no counterpart there, and the aggregate rows say why."""
    ref = _with_reduced_peaks(make_results(seed=0, env={"cpu_model": "Intel(R) Xeon(R) Processor"}))
    ref = dataclasses.replace(ref, rows=list(ref.rows) + [
        _row("machine", "roofline/peak_bf16_torch", [3.2e10, 3.3e10, 3.1e10], "FLOP/s"),
        _row("machine", "roofline/peak_int8_onnxruntime", [6.1e11, 6.2e11, 6.0e11], "OP/s")])
    avx2 = _with_reduced_peaks(make_results(seed=1), bf16="not-measured", int8="not-measured")
    cmp = compare(ref, avx2)
    assert cmp.passed, cmp.table(only_failures=True)
    excused = {c.metric: c.note for c in cmp.checks if c.variant == "machine" and "not gated" in c.note}
    assert {"roofline/peak_bf16_torch", "roofline/peak_int8_onnxruntime"} <= set(excused)
    assert "no native bf16" in excused["roofline/peak_bf16_torch"]
    # the aggregate measured but its per-backend row gone: the code lost a row
    lost = compare(ref, _with_reduced_peaks(make_results(seed=1), int8="not-measured"))
    assert [(c.metric, c.kind) for c in lost.failures] == [("roofline/peak_bf16_torch", "presence")]
    # the aggregate failed (an error, not a reason): not excused either
    crashed = compare(ref, _with_reduced_peaks(make_results(seed=1), bf16="error", int8="not-measured"))
    assert ("roofline/peak_bf16_torch", "presence") in [(c.metric, c.kind) for c in crashed.failures]
    # on the same machine the per-backend row is gated as any other
    same_env = dict(ref.environment)
    same = compare(ref, _with_reduced_peaks(make_results(seed=1, env=same_env), bf16="not-measured",
                                            int8="not-measured"))
    assert ("roofline/peak_bf16_torch", "presence") in [(c.metric, c.kind) for c in same.failures]


def test_a_reference_with_fp16_peaks_gates_a_cpu_without_fp16():
    """The direction that failed 55/57 in stop 35: an AMX Xeon's reference (oneDNN reports fp16 there, so it has
    ``peak_fp16`` and ``peak_fp16_torch``) gating an AVX2 run, which now writes the fp16 row with its reason."""
    xeon = make_results(seed=0, env={"cpu_model": "Intel(R) Xeon(R) Processor"})
    xeon = dataclasses.replace(xeon, rows=list(xeon.rows) + [
        _row("machine", "roofline/peak_fp16", [3.1e11, 3.2e11, 3.0e11], "FLOP/s"),
        _row("machine", "roofline/peak_fp16_torch", [3.1e11, 3.2e11, 3.0e11], "FLOP/s")])
    fp16_reason = Row("machine", "roofline/peak_fp16", None, "FLOP/s", status="not-measured",
                      error="no native fp16 matmul on this CPU")
    avx2 = make_results(seed=1)
    avx2 = dataclasses.replace(avx2, rows=list(avx2.rows) + [fp16_reason])
    cmp = compare(xeon, avx2)
    assert cmp.passed, cmp.table(only_failures=True)
    excused = {c.metric for c in cmp.checks if c.variant == "machine" and "not gated" in c.note}
    assert {"roofline/peak_fp16", "roofline/peak_fp16_torch"} <= excused
    # without the reason row (the roofline before this change) both rows are lost, as CI saw
    bare = compare(xeon, make_results(seed=1))
    assert {(c.metric, c.kind) for c in bare.failures} == {("roofline/peak_fp16", "presence"),
                                                          ("roofline/peak_fp16_torch", "presence")}


def test_roofline_missing_in_new_fails_the_efficiency_check():
    cmp = compare(make_results(seed=0), make_results(seed=1, roofline=False))
    eff = [c for c in cmp.failures if c.kind == "efficiency"]
    assert eff and "roofline" in eff[0].note
    # a reference without a roofline has no efficiency check (older references still gate the rest)
    old = compare(make_results(seed=0, roofline=False), make_results(seed=1))
    assert old.passed and not any(c.kind == "efficiency" for c in old.checks)


def test_efficiency_is_flops_times_fps_over_the_torch_peak():
    res = make_results(noise=0.0)
    value, spread, peak = efficiency(res, "baseline-tiny", 4)
    assert value == pytest.approx(1.89e9 * 38.0 / PEAK)
    assert peak == "roofline/peak_fp32_torch" and spread == 0.0


@pytest.mark.parametrize("env, profile, what", [
    ({"threads": 2}, {"threads": 2}, "threads 1 vs 2"),
    ({"torch": "2.15.0"}, {}, "torch 2.14 vs 2.15"),
    ({"device": "NVIDIA H200"}, {}, "device cpu vs cuda"),
    ({}, {"name": "default"}, "profile quick vs default"),
])
def test_incomparable_runs_are_refused_unless_allowed(env, profile, what):
    ref, new = make_results(seed=0), make_results(seed=1, env=env, profile=profile)
    with pytest.raises(IncomparableResults, match=what) as info:
        compare(ref, new)
    assert isinstance(info.value, UsageError) and "--allow-env-change" in str(info.value)
    cmp = compare(ref, new, allow_env_change=True)
    assert any(c.kind == "environment" and what in c.note for c in cmp.checks)


def test_torch_patch_release_is_comparable():
    assert compare(make_results(seed=0), make_results(seed=1, env={"torch": "2.14.2"})).passed


def test_time_to_target_gated_when_present():
    ttt = {"baseline-tiny": 40.0, "optimized-tiny": 30.0}
    ref = make_results(seed=0, ttt=ttt)
    assert compare(ref, make_results(seed=1, ttt=ttt)).passed
    slower = compare(ref, make_results(seed=1, ttt={"baseline-tiny": 80.0, "optimized-tiny": 30.0}))
    assert [c.kind for c in slower.failures] == ["time-to-target"]
    missed = compare(ref, make_results(seed=1, ttt={"baseline-tiny": None, "optimized-tiny": 30.0}))
    assert any(c.kind == "time-to-target" and "not reached" in c.note for c in missed.failures)


def test_an_error_in_new_fails():
    ref, new = make_results(seed=0), make_results(seed=1)
    row = new.get("baseline-tiny", "infer/latency_p50_ms_b1")
    new.rows[new.rows.index(row)] = dataclasses.replace(row, value=None, status="error", error="RuntimeError: boom")
    cmp = compare(ref, new)
    assert any(c.kind == "status" and "boom" in c.note for c in cmp.failures)


def test_spread_rule_floor_cap_and_robust_spread():
    rule = SpreadRule(3.0, 0.10, 0.20)
    assert rule.tolerance([0.001])[0] == 0.10  # quiet runs: the floor
    assert rule.tolerance([0.04, 0.03])[0] == pytest.approx(0.15)  # 3 x 5%
    assert rule.tolerance([0.5])[0] == 0.20  # a noisy run cannot hide a 25% slowdown
    row = _row("v", "m", [100.0, 101.0, 140.0])  # one outlier among three
    assert relative_spread(row) == pytest.approx(1.4826 * 1 / 101)
    assert relative_spread(_row("v", "m", [100.0])) == 0.0
    with pytest.raises(ValueError):
        SpreadRule(3.0, 0.3, 0.2)
    assert SPEED_RULE.cap < 0.5 and SPEED_RULE.floor == 0.10  # documented: a 1.5x slowdown always fails


def test_committed_reference_passes_against_itself():
    ref = Results.load(REFERENCE)
    cmp = compare(ref, ref, gate_latency=True)
    assert cmp.passed and any(c.kind == "latency" and "not gated" not in c.note for c in cmp.checks)


def test_cli_refuses_incomparable_runs_with_one_line(tmp_path, capsys):
    from bench.cli import main

    ref, new = tmp_path / "ref.json", tmp_path / "new.json"
    make_results(seed=0).save(ref)
    make_results(seed=1, env={"threads": 2}, profile={"threads": 2}).save(new)
    assert main(["compare", str(ref), str(new)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not comparable" in err and "threads 1 vs 2" in err and len(err.splitlines()) == 1
    assert main(["compare", str(ref), str(new), "--allow-env-change"]) == 0
    make_results(seed=1, slowdown=1.25).save(new)
    assert main(["compare", str(ref), str(new)]) == 1
    assert "REGRESSION" in capsys.readouterr().out


def test_same_cpu_model_with_other_instruction_sets_is_another_machine():
    """Two KVM hosts both say "AMD EPYC"; their ISA flags tell them apart once both files record them."""
    avx2 = {"cpu_model": "AMD EPYC", "cpu_features": "avx2 fma"}
    avx512 = {"cpu_model": "AMD EPYC", "cpu_features": "avx2 fma avx512f avx512_bf16 avx512_vnni"}
    ref = make_results(seed=0, env=avx2)
    lat = [c for c in compare(ref, make_results(seed=1, env=avx512), gate_latency=True).checks if c.kind == "latency"]
    assert lat and all("not gated: different machines" in c.note for c in lat)
    lat = [c for c in compare(ref, make_results(seed=1, env=avx2), gate_latency=True).checks if c.kind == "latency"]
    assert lat and not any("not gated" in c.note for c in lat)
    # an older reference without the key: the model alone decides, as before
    lat = [c for c in compare(make_results(seed=0), make_results(seed=1, env=avx512), gate_latency=True).checks
           if c.kind == "latency"]
    assert lat and not any("not gated" in c.note for c in lat)


def test_cpu_features_reads_the_flags_that_decide_the_arms():
    from bench.env import cpu_features

    x86 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx2 fma avx512f avx512_vnni avx512_bf16 amx_int8\n"
    assert cpu_features(x86) == "avx2 fma avx512f avx512_bf16 avx512_vnni amx_int8"  # CPU_FEATURES order
    assert cpu_features("Features\t: fp asimd sve i8mm\n") == "asimd sve i8mm"
    assert cpu_features("flags\t: fpu sse sse2\n") == ""
    assert cpu_features("model name\t: no flags line\n") is None


def _with_precision(res: Results, variant: str, precision: str, speed_factor: float) -> Results:
    """``variant``'s rows as if it ran at ``precision``, its speeds times ``speed_factor``."""
    rows = []
    for r in res.rows:
        if r.variant == variant and r.metric.startswith(("train/", "infer/fps")):
            samples = [x * speed_factor for x in r.samples]
            r = Row(r.variant, r.metric, Stats.of(samples).median, r.unit, samples, Stats.of(samples),
                    extra={**r.extra, "precision": precision})
        rows.append(r)
    return dataclasses.replace(res, rows=rows)


def test_a_ratio_at_another_precision_is_listed_not_gated():
    # "auto" is bf16 on an AVX512-BF16 CPU and fp32 on an AVX2 one: their ratios answer different questions
    reference = make_results(seed=0)
    same_precision = _with_precision(make_results(seed=1), "optimized-tiny", "fp32", 0.3)
    assert "ratio" in _failed_kinds(compare(reference, same_precision))
    other_precision = _with_precision(make_results(seed=1), "optimized-tiny", "bf16", 0.3)
    cmp = compare(reference, other_precision)
    assert cmp.passed, cmp.table(only_failures=True)
    notes = [c.note for c in cmp.checks if c.variant == "optimized-tiny" and c.kind == "ratio"]
    assert notes and all("not gated: precision fp32/fp32 in the reference, bf16/fp32 in NEW" in n for n in notes)


ACCURACY_ROWS = {"val/mAP50": 0.90, "val/R@1": 0.91, "val/vocab_mAP50": 0.43,
                 "novel/mAP50": 0.80, "novel/R@1": 0.86, "novel/vocab_mAP50": 0.25}


def _with_accuracy(res: Results, metrics=tuple(ACCURACY_ROWS), **changed) -> Results:
    """``res`` with optimized-tiny's accuracy rows (``metrics`` of :data:`ACCURACY_ROWS`), two seeds each;
    ``changed``: metric (``/`` as ``__``) -> its new value."""
    rows = []
    for m in metrics:
        value = changed.get(m.replace("/", "__"), ACCURACY_ROWS[m])
        rows.append(_row("optimized-tiny", f"accuracy/{m}", [value, value]))
    return dataclasses.replace(res, rows=res.rows + rows)


def test_accuracy_gates_vocabulary_and_novel_metrics():
    """The vocabulary mAP50 (what time to target uses) and the novel split are gated, not only val mAP50 / R@1:
    a vocabulary mAP50 dropped to 0 used to pass 28/28."""
    ref = _with_accuracy(make_results(seed=0))
    assert compare(ref, _with_accuracy(make_results(seed=1))).passed
    for metric in ("val__vocab_mAP50", "novel__mAP50", "novel__R@1", "novel__vocab_mAP50"):
        cmp = compare(ref, _with_accuracy(make_results(seed=1), **{metric: 0.0}))
        assert [(c.kind, c.metric) for c in cmp.failures] == [("accuracy", "accuracy/" + metric.replace("__", "/"))]
    # within the margin passes
    assert compare(ref, _with_accuracy(make_results(seed=1), val__vocab_mAP50=0.415)).passed
    # an older reference without the vocabulary and novel rows: listed, not gated, and the note says why
    old = _with_accuracy(make_results(seed=0), metrics=("val/mAP50", "val/R@1"))
    cmp = compare(old, _with_accuracy(make_results(seed=1), val__vocab_mAP50=0.0))
    assert cmp.passed, cmp.table(only_failures=True)
    listed = {c.metric: c for c in cmp.checks if c.kind == "accuracy" and c.reference is None}
    assert set(listed) == {"accuracy/val/vocab_mAP50", "accuracy/novel/mAP50", "accuracy/novel/R@1",
                           "accuracy/novel/vocab_mAP50"}
    assert all("not gated: not in the reference" in c.note for c in listed.values())


def test_a_gate_without_checks_is_refused(tmp_path, capsys):
    """An empty reference, or one whose rows all errored, passed "0/0 checks passed" with exit 0."""
    from bench.cli import main

    new = make_results(seed=1)
    with pytest.raises(NothingToGate, match="no successful rows to gate against"):
        compare(Results(), new)
    errored = make_results(seed=0)
    errored = dataclasses.replace(errored, rows=[dataclasses.replace(r, value=None, status="error", error="boom")
                                                 for r in errored.rows])
    with pytest.raises(NothingToGate, match="no successful rows"):
        compare(errored, new)
    # successful rows, none of which the gate compares (a per-call time): still no check
    only_step = Results(rows=[_row("baseline-tiny", "train/step_ms", [80.0, 81.0])],
                        variants={"baseline-tiny": {"reference": None, "group": "main"}})
    with pytest.raises(NothingToGate, match="made no check"):
        compare(only_step, only_step)
    empty = tmp_path / "empty.json"
    Results().save(empty)
    assert main(["compare", str(empty), str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ovd-bench compare: REFERENCE has no successful rows" in err


@pytest.mark.parametrize("option, value", [("speed_tolerance", 40.0), ("speed_tolerance", 0.0),
                                           ("speed_tolerance", 1.0), ("speed_tolerance", float("nan")),
                                           ("memory_tolerance", 0.0), ("memory_tolerance", 30.0),
                                           ("accuracy_margin", -0.01), ("accuracy_margin", 2.0)])
def test_tolerances_are_fractions(option, value):
    """``--speed-tolerance 40`` (meant as 40%) let every ratio fall to nothing."""
    ref = make_results(seed=0)
    with pytest.raises(UsageError, match=r"--{}.*fraction.*0\.4 means 40%".format(option.replace("_", "-"))):
        compare(ref, make_results(seed=1, slowdown=3.0), **{option: value})


def test_cli_refuses_a_percentage_tolerance_with_one_line(tmp_path, capsys):
    from bench.cli import main

    ref = tmp_path / "ref.json"
    make_results(seed=0).save(ref)
    assert main(["compare", str(ref), str(ref), "--speed-tolerance", "40"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--speed-tolerance 40: expected a fraction in (0, 1) (0.4 means 40%)" in err
    assert main(["compare", str(ref), str(ref), "--speed-tolerance", "0.4", "--accuracy-margin", "0"]) == 0


def test_cli_compares_run_folders(tmp_path, capsys):
    """``ovd-bench compare DIR DIR`` ended in IsADirectoryError's traceback and exit 1 (the regression code)."""
    from bench.cli import main

    for name, seed in (("ref", 0), ("new", 1)):
        make_results(seed=seed).save(tmp_path / name / "results.json")
    assert main(["compare", str(tmp_path / "ref"), str(tmp_path / "new")]) == 0
    assert "checks passed" in capsys.readouterr().out
    make_results(seed=1, slowdown=1.25).save(tmp_path / "new" / "results.json")
    assert main(["compare", str(tmp_path / "ref"), str(tmp_path / "new")]) == 1
    capsys.readouterr()
    (tmp_path / "bare").mkdir()  # a folder without results.json: the missing file, named, exit 2
    assert main(["compare", str(tmp_path / "ref"), str(tmp_path / "bare")]) == 2
    assert "bare/results.json: no such results file" in capsys.readouterr().err


def _with_failed_repeats(res: Results, variant: str, failed: int, of: int) -> Results:
    """``res`` with ``variant``'s speed rows as :func:`aggregate` writes them when ``failed`` of ``of`` repeat
    processes failed (the survivors' samples are ``res``'s first ones)."""
    speed = [r for r in res.rows if r.variant == variant and r.metric.startswith(("train/", "infer/"))]
    ok = [{"status": "ok", "rows": [{"metric": r.metric, "value": r.samples[i], "unit": r.unit, "extra": r.extra}
                                    for r in speed]} for i in range(of - failed)]
    errors = [{"status": "error", "error": f"RuntimeError: worker {i} died"} for i in range(failed)]
    keep = [r for r in res.rows if not any(r is s for s in speed)]
    return dataclasses.replace(res, rows=keep + aggregate(variant, "speed", ok + errors))


def test_failed_repeats_in_new_fail_the_gate():
    """A variant 4 of whose 5 speed processes failed used to pass on the one that survived."""
    ref = make_results(seed=0)
    assert compare(ref, _with_failed_repeats(make_results(seed=1), "optimized-tiny", 0, 3)).passed
    cmp = compare(ref, _with_failed_repeats(make_results(seed=1), "optimized-tiny", 4, 5))
    assert [(c.variant, c.kind) for c in cmp.failures] == [("optimized-tiny", "repeats")], cmp.table()
    note = cmp.failures[0].note
    assert note.startswith("4 of 5 repeats failed") and "worker 3 died" in note
    # one check per measurement, not one per row of it
    assert sum(c.kind == "repeats" for c in cmp.checks) == 1
    # failed repeats in the reference are not NEW's regression
    assert compare(_with_failed_repeats(ref, "optimized-tiny", 1, 3), make_results(seed=1)).passed


def _with_fixed_batch_user_model(res: Results, slowdown: float = 1.0) -> Results:
    """``res`` plus a user's factory without a ``batch_size`` argument, timed at its own batch 2 only (no b1, no b4
    rows), as `ovd-bench run --model` writes it."""
    rows = list(res.rows) + [Row("mine", "flops/per_image", 5e8, "FLOP", [5e8], Stats.of([5e8])),
                             _row("mine", "infer/fps_b2", [40.0 / slowdown, 41.0 / slowdown, 39.0 / slowdown]),
                             _row("mine", "infer/latency_p50_ms_b2", [50.0 * slowdown, 49.0 * slowdown])]
    return dataclasses.replace(res, rows=rows, variants={**res.variants, "mine": {"reference": None, "group": "user"}})


def test_a_user_model_timed_at_its_own_batch_is_gated_on_efficiency():
    """A factory measured at its own batch has no infer/fps_b{infer_batch} row: its efficiency is read at the batch
    it was timed at, so a 10x slowdown of the user's model fails (before: no check of its speed at all)."""
    ref = _with_fixed_batch_user_model(make_results(seed=0))
    assert compare(ref, ref).passed
    cmp = compare(ref, _with_fixed_batch_user_model(make_results(seed=0), slowdown=10.0))
    assert [(c.variant, c.kind) for c in cmp.failures] == [("mine", "efficiency")]
    assert "b2" in cmp.failures[0].metric
