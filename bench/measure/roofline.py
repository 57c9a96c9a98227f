"""The machine's matrix-multiply peak, measured (not looked up), and the arithmetic of a roofline.

Method: square ``torch.matmul`` of several sizes per dtype, each timed with the suite's one timing
helper (``bench.measure.timing.time_calls``: one warm-up call, then calls until ``min_run_time``
seconds, device synchronized around each) at this process's thread count (the run's thread count);
the peak of a dtype is the best size's median (``bench.results.quantile``). fp32 always (on CUDA
with TF32 off, plus a ``tf32`` row); bf16 and fp16 only where the device computes them natively
(CPU: oneDNN reports AVX512-BF16/AMX/FP16 support; CUDA: always), since an emulated dtype is no roof.

On the CPU the fp32 peak is also measured through onnxruntime's GEMM (MLAS, a one-node ONNX MatMul
graph, same thread count), because one library's GEMM need not reach the hardware's limit: on an
AVX-512 AMD CPU torch's fp32 GEMM can run at AVX2 rate while MLAS uses AVX-512. The fp32 peak is the
best backend's; ``by_backend`` keeps each.

int8 (``peak_int8``, unit OP/s: integer multiply-adds x 2, not FLOPs): on the CPU through onnxruntime's
``MatMulInteger`` (uint8 x int8 -> int32, MLAS), only where the CPU has int8 dot-product instructions
(x86: AVX512-VNNI / AVX-VNNI / AMX-INT8; Arm: dot-product / i8mm, read from ``/proc/cpuinfo``), else the
row is skipped with the reason. torch's CPU ``torch._int_mm`` is not used: on this project's AVX512-VNNI
CPU it ran slower than fp32 ``torch.matmul`` (no native kernel behind it). On CUDA: ``torch._int_mm``
(cuBLASLt int8 tensor cores, compute capability >= 7.5).

Units: FLOP/s, with FLOPs = 2*n^3 per n x n matmul (the same 2*MACs convention as
``bench.measure.flops``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.measure.specs import RooflineSpec
from bench.results import Row, measured

CPU_SIZES = (256, 512, 1024, 2048)
#: Reduced precisions whose peak, when the device cannot compute it, is still a row (not measured, with why):
#: a regression gate made on a machine that has them then sees a stated reason, not a silently missing row.
#: fp16 too: oneDNN reports it on AMX/AVX512-FP16 Xeons, whose reference then carries fp16 rows other CPUs lack.
REPORTED_IF_SKIPPED = ("bf16", "fp16", "int8")
INT8_CPU_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni", "asimddp", "i8mm")  # /proc/cpuinfo names
CUDA_SIZES = (2048, 4096, 8192)


def matmul_flops(n: int) -> int:
    """FLOPs (2*MACs) of one n x n @ n x n matmul."""
    return 2 * n**3


def achieved_flops_per_s(flops_per_image: float, images_per_s: float) -> float:
    """Achieved FLOP/s = FLOPs per image * images per second."""
    return float(flops_per_image) * float(images_per_s)


def fraction_of_peak(achieved: float, peak: float) -> float:
    """Achieved FLOP/s as a fraction (0..1+) of a measured peak FLOP/s."""
    if not peak or peak <= 0:
        raise ValueError(f"peak must be positive, got {peak!r}")
    return float(achieved) / float(peak)


def cpu_int8_instructions(cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """The int8 dot-product instruction sets (:data:`INT8_CPU_FLAGS`) the CPU reports; [] when none or
    when ``cpuinfo`` cannot be read (not Linux)."""
    try:
        text = open(cpuinfo, encoding="utf-8", errors="replace").read()
    except OSError:
        return []
    flags: set = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return [f for f in INT8_CPU_FLAGS if f in flags]


def native_dtypes(device) -> dict:
    """dtype name -> True/False: whether the device computes it natively."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        major, minor = torch.cuda.get_device_capability(dev)
        return {"fp32": True, "tf32": major >= 8, "bf16": major >= 8, "fp16": True, "int8": (major, minor) >= (7, 5)}
    out = {"fp32": True, "bf16": False, "fp16": False, "int8": bool(cpu_int8_instructions())}
    try:
        out["bf16"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        out["fp16"] = bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):
        pass
    return out


@dataclass
class RooflineResult:
    """``peaks``: dtype -> best FLOP/s over sizes; ``by_size``: dtype -> {n: FLOP/s}; ``native``:
    dtype -> natively supported; ``skipped``: dtype -> why not measured."""

    device: str
    threads: int
    peaks: dict = field(default_factory=dict)
    best_size: dict = field(default_factory=dict)
    by_size: dict = field(default_factory=dict)
    native: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    by_backend: dict = field(default_factory=dict)  # dtype -> {backend: best FLOP/s}
    backend: dict = field(default_factory=dict)  # dtype -> the backend that set the peak

    def rows(self) -> list[Row]:
        out = []
        for dt, v in self.peaks.items():
            unit = "OP/s" if dt == "int8" else "FLOP/s"
            out.append(measured(f"roofline/peak_{dt}", v, unit,
                                {"best_size": self.best_size.get(dt), "by_size": self.by_size.get(dt),
                                 "native": self.native.get(dt), "threads": self.threads, "device": self.device,
                                 "backend": self.backend.get(dt), "by_backend": self.by_backend.get(dt)}))
            for be, bv in (self.by_backend.get(dt) or {}).items():
                out.append(measured(f"roofline/peak_{dt}_{be}", bv, unit,
                                    {"threads": self.threads, "device": self.device}))
        for dt in REPORTED_IF_SKIPPED:  # their absence is a row with the reason: the gate excuses only that
            if dt in self.skipped and dt not in self.peaks:
                out.append(measured(f"roofline/peak_{dt}", None, "OP/s" if dt == "int8" else "FLOP/s",
                                    {"native": self.native.get(dt), "threads": self.threads, "device": self.device},
                                    status="not-measured", error=self.skipped[dt]))
        return out


def _median_s(fn, device, min_run_time: float) -> float:
    """Median seconds per call of ``fn`` (one warm-up call for allocator and kernel selection)."""
    from bench.measure.timing import time_calls
    from bench.results import quantile

    return quantile(time_calls(fn, device, warmup=1, iters=3, min_time_s=min_run_time), 0.5)


def _time_matmul(n: int, dtype, device, min_run_time: float) -> float:
    """Median seconds per n x n matmul at the current thread count."""
    import torch

    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    return _median_s(lambda: torch.matmul(a, b), device, min_run_time)


def _ort_matmul_session(op: str, io: list, threads: int):
    """An onnxruntime CPU session of one ``op`` node y = op(a, b) (``io``: value infos of a, b, y)."""
    import onnxruntime as ort
    from onnx import helper

    graph = helper.make_graph([helper.make_node(op, ["a", "b"], ["y"])], op.lower(), io[:2], io[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _time_ort_matmul(n: int, threads: int, min_run_time: float) -> float:
    """Median seconds per n x n fp32 matmul through onnxruntime (CPU provider, ``threads`` intra-op)."""
    import numpy as np
    from onnx import TensorProto, helper

    io = [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in ("a", "b", "y")]
    sess = _ort_matmul_session("MatMul", io, threads)
    rng = np.random.default_rng(0)
    feeds = {"a": rng.standard_normal((n, n), dtype=np.float32), "b": rng.standard_normal((n, n), dtype=np.float32)}
    return _median_s(lambda: sess.run(None, feeds), "cpu", min_run_time)


def _time_ort_matmul_int8(n: int, threads: int, min_run_time: float) -> float:
    """Median seconds per n x n uint8 x int8 -> int32 ``MatMulInteger`` through onnxruntime (CPU)."""
    import numpy as np
    from onnx import TensorProto, helper

    io = [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n]),
          helper.make_tensor_value_info("b", TensorProto.INT8, [n, n]),
          helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])]
    sess = _ort_matmul_session("MatMulInteger", io, threads)
    rng = np.random.default_rng(0)
    feeds = {"a": rng.integers(0, 256, (n, n), dtype=np.uint8), "b": rng.integers(-128, 128, (n, n), dtype=np.int8)}
    return _median_s(lambda: sess.run(None, feeds), "cpu", min_run_time)


def _time_int_mm_cuda(n: int, device, min_run_time: float) -> float:
    """Median seconds per n x n int8 x int8 -> int32 ``torch._int_mm`` on a CUDA device (n: multiple of 8)."""
    import torch

    a = torch.randint(-128, 128, (n, n), dtype=torch.int8, device=device)
    b = torch.randint(-128, 128, (n, n), dtype=torch.int8, device=device)
    return _median_s(lambda: torch._int_mm(a, b), device, min_run_time)


def _measure_int8(res: RooflineResult, sizes: tuple, device, min_run_time: float) -> None:
    """Fill ``res`` with the int8 peak (ORT MatMulInteger on CPU, torch._int_mm on CUDA), or the reason
    it was skipped."""
    cuda = device.type == "cuda"
    if not res.native.get("int8"):
        res.skipped["int8"] = ("compute capability < 7.5: no int8 tensor-core GEMM" if cuda else
                               "no int8 dot-product instructions reported by the CPU (looked for "
                               f"{', '.join(INT8_CPU_FLAGS)}): no native int8 GEMM path")
        return
    backend = "torch" if cuda else "onnxruntime"
    try:
        if cuda:
            per = {n: matmul_flops(n) / _time_int_mm_cuda(n, device, min_run_time) for n in sizes}
        else:
            per = {n: matmul_flops(n) / _time_ort_matmul_int8(n, res.threads, min_run_time) for n in sizes}
    except Exception as err:  # noqa: BLE001  (the int8 GEMM backend is optional: recorded)
        res.skipped["int8"] = f"{backend} int8 GEMM failed: {type(err).__name__}: {str(err)[:300]}"
        return
    best = max(per, key=per.get)
    res.by_size["int8"] = per
    res.peaks["int8"], res.best_size["int8"], res.backend["int8"] = per[best], best, backend
    res.by_backend["int8"] = {backend: per[best]}


def measure(spec: RooflineSpec | dict) -> RooflineResult:
    """Matmul peaks per dtype (see :class:`bench.measure.specs.RooflineSpec`)."""
    import torch

    from bench.common import resolve_device

    spec = RooflineSpec.coerce(spec)
    device = resolve_device(spec.device)
    cuda = device.type == "cuda"
    sizes = tuple(spec.sizes or (CUDA_SIZES if cuda else CPU_SIZES))
    min_run_time = float(spec.min_run_time)
    native = native_dtypes(device)
    res = RooflineResult(str(device), torch.get_num_threads(), native=native)
    wanted = spec.dtypes or [d for d in ("fp32", "tf32", "bf16", "fp16", "int8") if d in native]
    dtypes = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    prev_tf32 = torch.backends.cuda.matmul.allow_tf32 if cuda else None
    try:
        for name in wanted:
            if name == "int8":
                _measure_int8(res, sizes, device, min_run_time)
                continue
            if not native.get(name):
                res.skipped[name] = ("not natively supported on this device" if cuda else
                                     f"no native {name} matmul on this CPU (oneDNN reports no {name} support: "
                                     f"{'AVX512-BF16 or AMX-BF16' if name == 'bf16' else 'AVX512-FP16 or AMX-FP16'} "
                                     "absent)")
                continue
            if cuda:
                torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
            per = {}
            for n in sizes:
                per[n] = matmul_flops(n) / _time_matmul(n, dtypes[name], device, min_run_time)
            res.by_size[name] = per
            best = max(per, key=per.get)
            res.peaks[name], res.best_size[name], res.backend[name] = per[best], best, "torch"
            res.by_backend[name] = {"torch": per[best]}
            if name == "fp32" and not cuda and spec.onnxruntime:
                try:
                    ort_per = {n: matmul_flops(n) / _time_ort_matmul(n, res.threads, min_run_time) for n in sizes}
                except Exception as err:  # noqa: BLE001  (onnxruntime is optional: recorded)
                    res.skipped["fp32_onnxruntime"] = f"{type(err).__name__}: {err}"
                else:
                    n_best = max(ort_per, key=ort_per.get)
                    res.by_backend[name]["onnxruntime"] = ort_per[n_best]
                    res.by_size["fp32_onnxruntime"] = ort_per
                    if ort_per[n_best] > res.peaks[name]:
                        res.peaks[name], res.best_size[name], res.backend[name] = ort_per[n_best], n_best, \
                            "onnxruntime"
    finally:
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = prev_tf32
    return res
