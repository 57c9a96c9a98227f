"""Saturating batch sweep (bench.measure.sweep) and its report section (bench.report.sweep)."""

import weakref

import pytest
import torch

from bench.measure.specs import SpecError
from bench.measure.sweep import (
    SweepPoint,
    SweepResult,
    SweepSpec,
    batch_sizes,
    is_oom,
    make_point_fn,
    measure,
    run_sweep,
    should_stop,
)
from bench.report.sweep import peak_batches, sweep_section
from bench.results import Results, Row, Stats, aggregate


def _planted(throughput_of):
    """A point function whose throughput at batch b is throughput_of(b) (one call of b / t seconds)."""
    seen = []

    def point(b):
        seen.append(b)
        t = throughput_of(b)
        if isinstance(t, BaseException):
            raise t
        return SweepPoint(b, [b / t], 10.0 * b, {"method": "planted"})

    return point, seen


# -- stop rule -----------------------------------------------------------------------------------
def test_should_stop_plateau_after_patience():
    assert not should_stop([100, 101], 0.05, 2)  # one stale point
    assert should_stop([100, 101, 102], 0.05, 2)  # two stale points in a row
    assert should_stop([100, 90], 0.05, 1)  # a drop counts as no gain


def test_should_stop_keeps_going_while_gaining():
    assert not should_stop([10, 20, 40, 80], 0.05, 1)
    # a gain resets the count: stale, gain, stale
    assert not should_stop([100, 101, 120, 121], 0.05, 2)
    # gains are measured against the best so far, not the previous point
    assert should_stop([100, 50, 104], 0.05, 2)


def test_batch_sizes_double_and_clamp():
    assert batch_sizes(1, 8) == [1, 2, 4, 8]
    assert batch_sizes(3, 20) == [3, 6, 12, 20]
    assert batch_sizes(4, 4) == [4]


def test_run_sweep_plateau_and_max_batch():
    point, seen = _planted(lambda b: min(b, 4) * 100.0)  # saturates at batch 4
    points, reason = run_sweep(point, 1, 1024, 0.05, 2)
    assert reason == "plateau" and seen == [1, 2, 4, 8, 16]
    point, seen = _planted(lambda b: b * 100.0)  # keeps gaining
    points, reason = run_sweep(point, 1, 8, 0.05, 2)
    assert reason == "max_batch" and seen == [1, 2, 4, 8] and len(points) == 4


def test_planted_oom_row_and_stop():
    point, seen = _planted(lambda b: torch.OutOfMemoryError("CUDA out of memory") if b == 4 else b * 1.0)
    points, reason = run_sweep(point, 1, 64, 0.05, 2)
    assert reason == "oom" and seen == [1, 2, 4]
    result = SweepResult("infer", "fp32", 1, points, reason)
    rows = {r.metric: r for r in result.rows()}
    oom = rows["sweep/infer/throughput_b4"]
    assert oom.status == "error" and oom.error == "OOM at batch 4" and oom.value is None
    assert "sweep/infer/latency_ms_b4" not in rows
    assert rows["sweep/infer/peak_batch"].value == 2 and rows["sweep/infer/peak_batch"].unit == "batch"
    assert rows["sweep/infer/peak_throughput"].extra["batch_size"] == 2
    assert rows["sweep/infer/stopped"].extra["reason"] == "oom"


def test_other_errors_propagate_and_oom_detection():
    assert is_oom(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 1 GB"))
    assert not is_oom(RuntimeError("shape mismatch"))
    point, _ = _planted(lambda b: RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_sweep(point, 1, 4, 0.05, 2)


def test_spec_validation():
    with pytest.raises(SpecError, match="mode"):
        SweepSpec.from_dict({"preset": "optimized-tiny", "mode": "eval"})
    with pytest.raises(SpecError, match="max_batch"):
        SweepSpec.from_dict({"preset": "optimized-tiny", "start_batch": 8, "max_batch": 4})
    with pytest.raises(SpecError, match="precision"):
        SweepSpec.from_dict({"preset": "optimized-tiny", "precision": "fp16"})
    with pytest.raises(SpecError, match="unknown keys"):
        SweepSpec.from_dict({"preset": "optimized-tiny", "batch": 4})
    s = SweepSpec.from_dict({"preset": "optimized-tiny", "mode": "train", "precision": "bf16"})
    assert s.mode == "train" and s.max_batch == 1024 and s.growth_stop == 0.05 and s.patience == 2


# -- real model ----------------------------------------------------------------------------------
SMALL = {"image.image_size": 64}


def test_point_fn_frees_previous_point(monkeypatch):
    """The real point function: when batch 2 is built, batch 1's tensors are gone (nothing keeps them)."""
    import bench.common as common

    model = common.build_model("optimized-tiny", SMALL, torch.device("cpu"))
    refs, alive_at_build = [], []
    real = common.make_batch

    def recording(model, batch_size, device, seed=0):
        alive_at_build.append([r() is not None for r in refs])
        batch = real(model, batch_size, device, seed)
        refs.append(weakref.ref(batch.images))
        refs.append(weakref.ref(batch.targets[0]["boxes"]))
        return batch

    monkeypatch.setattr(common, "make_batch", recording)
    for mode, sizes in (("infer", (1, 2)), ("train", (1,))):  # growing batch; then the train step's point
        point = make_point_fn(model, mode, torch.device("cpu"), warmup=0, iters=1)
        for b in sizes:
            p = point(b)
            assert p.ok and p.batch == b and len(p.calls) == 1 and p.mem_extra["method"] == "cpu-rss"
    assert len(alive_at_build) == 3
    assert all(not any(alive) for alive in alive_at_build)
    assert all(r() is None for r in refs)


def test_real_tiny_sweep_rows():
    res = measure({"preset": "optimized-tiny", "overrides": SMALL, "mode": "infer", "max_batch": 2,
                   "warmup": 0, "iters": 1, "device": "cpu"})
    assert [p.batch for p in res.points] == [1, 2] and res.stopped in ("max_batch", "plateau")
    rows = {r.metric: r for r in res.rows()}
    for b in (1, 2):
        thr = rows[f"sweep/infer/throughput_b{b}"]
        assert thr.unit == "images/s" and thr.value > 0 and len(thr.extra["calls"]) == 1
        lat = rows[f"sweep/infer/latency_ms_b{b}"]
        assert lat.unit == "ms" and lat.value == pytest.approx(thr.extra["calls"][0] * 1e3)
        assert thr.value == pytest.approx(b / thr.extra["calls"][0])
        mem = rows[f"sweep/infer/mem_mib_b{b}"]
        assert mem.unit == "MiB" and mem.value >= 0 and "rss_growth_mib" in mem.extra
    assert rows["sweep/infer/peak_batch"].value in (1, 2)
    assert rows["sweep/infer/stopped"].extra["reason"] == res.stopped
    # the runner's aggregation across repeats accepts the rows
    outcome = {"status": "ok", "rows": [r.__dict__ for r in res.rows()]}
    agg = {r.metric: r for r in aggregate("optimized-tiny", "sweep", [outcome, outcome])}
    assert agg["sweep/infer/throughput_b2"].stats.n == 2


# -- report --------------------------------------------------------------------------------------
def _row(variant, metric, value, unit, q1=None, q3=None, status="ok", error=None, extra=None):
    stats = Stats(value, q1, q3, q3 - q1, 3) if q1 is not None else None
    return Row(variant, metric, value, unit, stats=stats, status=status, error=error, measurement="sweep",
               extra=extra or {})


def _results():
    rows = []
    for b, thr in ((1, 10.0), (2, 18.0), (4, 19.0)):
        rows += [_row("optimized", f"sweep/infer/throughput_b{b}", thr, "images/s", thr - 1, thr + 1),
                 _row("optimized", f"sweep/infer/latency_ms_b{b}", 1000 * b / thr, "ms"),
                 _row("optimized", f"sweep/infer/mem_mib_b{b}", 100.0 * b, "MiB")]
    rows.append(_row("optimized", "sweep/infer/throughput_b8", None, "images/s", status="error",
                     error="OOM at batch 8"))
    rows.append(_row("optimized", "sweep/infer/stopped", 8, "batch", extra={"reason": "oom"}))
    rows += [_row("baseline", "sweep/train/throughput_b1", 3.0, "samples/s"),
             _row("baseline", "sweep/train/throughput_b2", 5.0, "samples/s"),
             _row("baseline", "sweep/train/stopped", 2, "batch", extra={"reason": "max_batch"})]
    rows.append(_row("baseline", "infer/fps_b1", 4.0, "images/s"))
    return Results(rows=rows, variants={"baseline": {}, "optimized": {}})


def test_report_section_renders():
    res = _results()
    assert peak_batches(res) == {("optimized", "infer"): 4, ("baseline", "train"): 2}
    text = "".join(sweep_section(res))
    assert "peak: 19 images/s at batch 4 (stopped: oom)" in text
    assert "peak: 5 samples/s at batch 2 (stopped: max_batch)" in text
    assert "19 [18, 20]" in text and "OOM at batch 8" in text
    assert text.index("`baseline`, train") < text.index("`optimized`, infer")  # variant order
    assert sweep_section(Results(rows=[_row("baseline", "infer/fps_b1", 4.0, "images/s")])) == []


@pytest.mark.gpu
def test_cuda_sweep_records_allocator_peaks_and_frees_between_points():
    import torch

    res = measure({"preset": "optimized-tiny", "mode": "train", "max_batch": 4, "warmup": 1, "iters": 1,
                   "device": "cuda"})
    rows = {r.metric: r for r in res.rows()}
    for b in (1, 2, 4):
        mem = rows[f"sweep/train/mem_mib_b{b}"]
        assert mem.value > 0 and mem.extra["reserved_mib"] >= mem.extra["allocated_mib"] > 0
    # the peak grows with the batch: the allocator's peak was reset between points
    assert rows["sweep/train/mem_mib_b4"].value > rows["sweep/train/mem_mib_b1"].value
    assert torch.cuda.memory_allocated() < 2 ** 30


def test_memory_is_measured_on_a_separate_untimed_call(monkeypatch):
    """No RSS poller is alive during the timed calls; one extra call runs under it and memory is reported."""
    import threading

    import bench.common as common
    import bench.measure.memory as memory
    import bench.measure.sweep as sweep

    state = {"poller_alive": False, "calls": [], "timed_with_poller": [], "threads_in_timing": []}
    real_poller, real_time_calls = memory.RssPeakPoller, sweep.time_calls

    class RecordingPoller(real_poller):
        def __enter__(self):
            state["poller_alive"] = True
            return super().__enter__()

        def __exit__(self, *exc):
            super().__exit__(*exc)
            state["poller_alive"] = False

    def recording_time_calls(fn, device, warmup, iters, min_time_s=0.0):
        state["timed_with_poller"].append(state["poller_alive"])
        state["threads_in_timing"].append(threading.active_count())
        return real_time_calls(fn, device, warmup, iters, min_time_s)

    def fake_forward(model, batch, device):
        def call():
            state["calls"].append(state["poller_alive"])
            return bytearray(4 * 2**20 * batch)  # 4 MiB per item, touched: it shows up in RSS

        return call

    monkeypatch.setattr(memory, "RssPeakPoller", RecordingPoller)
    monkeypatch.setattr(sweep, "time_calls", recording_time_calls)
    monkeypatch.setattr(common, "make_batch", lambda model, b, device: b)
    monkeypatch.setattr(common, "make_forward", fake_forward)
    threads_before = threading.active_count()
    point = make_point_fn(object(), "infer", torch.device("cpu"), warmup=1, iters=2, poll_s=0.001)
    p = point(2)
    assert state["timed_with_poller"] == [False] and state["threads_in_timing"] == [threads_before]
    # warmup + timed calls without the poller, then exactly one call under it
    assert state["calls"] == [False, False, False, True] and not state["poller_alive"]
    assert p.ok and len(p.calls) == 2 and p.mem_mib is not None and p.mem_mib >= 0
    assert p.mem_extra["method"] == "cpu-rss" and p.mem_extra["memory_call"] == "separate untimed call"
    assert p.mem_extra["rss_peak_mib"] >= p.mem_extra["rss_before_mib"]
    row = {r.metric: r for r in SweepResult("infer", "fp32", 1, [p]).rows()}["sweep/infer/mem_mib_b2"]
    assert row.value == p.mem_mib and row.extra["memory_call"] == "separate untimed call"


def test_memory_call_failure_stops_the_poller(monkeypatch):
    """An out-of-memory raised by the memory call propagates (run_sweep records it) with the poller joined."""
    import threading

    import bench.common as common

    n = {"calls": 0}

    def fake_forward(model, batch, device):
        def call():
            n["calls"] += 1
            if n["calls"] > 1:  # the timed call passes, the memory call fails
                raise RuntimeError("DefaultCPUAllocator: can't allocate memory")

        return call

    monkeypatch.setattr(common, "make_batch", lambda model, b, device: b)
    monkeypatch.setattr(common, "make_forward", fake_forward)
    threads_before = threading.active_count()
    point = make_point_fn(object(), "infer", torch.device("cpu"), warmup=0, iters=1)
    points, reason = run_sweep(point, 1, 4, 0.05, 2)
    assert reason == "oom" and points[0].error == "OOM at batch 1"
    assert threading.active_count() == threads_before
