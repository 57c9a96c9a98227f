"""Data-parallel scaling: training throughput of ``ovd train`` itself at one configuration (processes x torch
threads per process), so what is measured is what users run.

Method: the measurement launches

    python -m ovd.cli train --preset P --max-steps W+S --throughput-warmup-steps W --batch-size B
        --devices N --strategy ddp|auto --accelerator cpu|gpu --limit-val-batches 0 --out TMP

in a fresh process group with ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` = the threads per process, and reads
the ``train_throughput`` that ``ovd train`` writes into ``TMP/summary.json`` (``ovd.training.run.StepClock``):
the wall time of steps W+1 .. W+S on rank 0, from the end of the last warm-up step to the end of the last timed
one (loader included; process start-up, model build, DDP set-up and the final checkpoint excluded), and the
samples of all processes (per-process batch x processes: DDP's batch is per device). No validation runs
(``--limit-val-batches 0``); the only checkpoint is ``last.ckpt`` after the last step, outside the clock.

Unit: samples/s (training samples of all processes per second of wall time). One row per configuration,
``dataparallel/samples_per_s_p{processes}t{threads}``; the report derives scaling efficiencies from these
rows (``bench.report.dataparallel``), nothing derived is stored.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.measure.specs import DataParallelSpec, SpecError
from bench.results import Row, measured

METRIC_PREFIX = "dataparallel/samples_per_s_"
_KEY = re.compile(r"p(\d+)t(\d+)")

#: CPU configurations (processes, threads per process): "what does a second device buy" on a 2-core machine
#: is 2 processes x 1 thread against 1 process x 1 thread (efficiency), and against 1 process x 2 threads
#: (the same cores used by threads instead: what to run here).
CPU_CONFIGS = ((1, 1), (1, 2), (2, 1))


def config_key(processes: int, threads: int) -> str:
    """(2, 1) -> "p2t1": the configuration's label in task ids and metric names."""
    return f"p{int(processes)}t{int(threads)}"


def parse_config_key(key: str) -> tuple[int, int]:
    """"p2t1" -> (2, 1); the inverse of :func:`config_key`."""
    m = _KEY.fullmatch(key)
    if not m:
        raise ValueError(f"data-parallel configuration {key!r}: expected p<processes>t<threads>, e.g. p2t1")
    return int(m.group(1)), int(m.group(2))


def metric_name(processes: int, threads: int) -> str:
    return METRIC_PREFIX + config_key(processes, threads)


def default_configs(gpus: int | None = None, cores: int | None = None) -> tuple[tuple[int, int], ...]:
    """The configurations for this machine: 1..N processes with one GPU each where CUDA has N >= 1 devices
    (the same threads per process in all, cores // N, so each efficiency compares like with like), else
    :data:`CPU_CONFIGS`."""
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus < 1:
        return CPU_CONFIGS
    threads = max(1, (cores or os.cpu_count() or 1) // gpus)
    return tuple((n, threads) for n in range(1, gpus + 1))


@dataclass
class DataParallelResult:
    preset: str
    processes: int
    threads_per_process: int
    batch_size: int  # per process
    accelerator: str
    precision: str
    throughput: dict  # summary.json's train_throughput
    train_batches_per_epoch: int | None  # per process
    process_seconds: float  # wall time of the whole `ovd train` run (start-up and checkpoint included)

    def rows(self) -> list[Row]:
        tp = self.throughput
        steps_run = tp["warmup_steps"] + tp["timed_steps"]
        extra = {"preset": self.preset, "processes": self.processes, "threads_per_process": self.threads_per_process,
                 "batch_size_per_process": self.batch_size, "global_batch": self.batch_size * self.processes,
                 "accelerator": self.accelerator, "precision": self.precision, "timed_steps": tp["timed_steps"],
                 "warmup_steps": tp["warmup_steps"], "seconds": tp["seconds"], "samples": tp["samples"],
                 "process_seconds": self.process_seconds,
                 "threads_observed": tp.get("threads_per_process"),  # torch.get_num_threads() in rank 0
                 # an epoch boundary inside the clock adds the loader's restart and epoch-end callbacks
                 "spans_epochs": bool(self.train_batches_per_epoch and steps_run > self.train_batches_per_epoch)}
        return [measured(metric_name(self.processes, self.threads_per_process), tp["samples_per_s"], "samples/s",
                         extra)]


def train_command(spec: DataParallelSpec, accelerator: str, batch_size: int, overrides: dict, data_root: str,
                  out: str | Path) -> list[str]:
    """The ``ovd train`` command line of one configuration (overrides as JSON values, which ``--set`` reads)."""
    cmd = [sys.executable, "-m", "ovd.cli", "train", "--preset", spec.source.preset, "--data-root", str(data_root),
           "--max-steps", str(spec.warmup_steps + spec.steps), "--throughput-warmup-steps", str(spec.warmup_steps),
           "--batch-size", str(batch_size), "--accelerator", accelerator, "--devices", str(spec.processes),
           "--strategy", "ddp" if spec.processes > 1 else "auto", "--num-nodes", "1",
           "--limit-val-batches", "0", "--out", str(out)]
    for key, value in overrides.items():
        cmd += ["--set", f"{key}={json.dumps(value)}"]
    return cmd


def train_env(threads: int) -> dict:
    """The child's environment: every thread pool pinned (torch's OpenMP/MKL to ``threads``, BLAS to 1)."""
    import ovd

    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": "1",
                "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"})
    env.setdefault("HF_HUB_OFFLINE", "1")
    root = str(Path(ovd.__file__).resolve().parent.parent)  # `python -m ovd.cli` from any working folder
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _run(cmd: list[str], env: dict, cwd: str, timeout_s: float) -> tuple[int | str, str]:
    """Run ``cmd`` in its own process group, so a timeout also ends the DDP ranks it spawned."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout_s)
        return proc.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        return "timeout", output or ""


def _train_overrides(spec: DataParallelSpec, device) -> dict:
    """The variant's overrides plus ``ovd-bench run --set`` (what ``bench.common.build_config`` applies)."""
    from bench.common import GLOBAL_OVERRIDES_ENV

    overrides = {**spec.source.overrides, **json.loads(os.environ.get(GLOBAL_OVERRIDES_ENV, "{}"))}
    if overrides.get("train.precision") == "amp":
        overrides["train.precision"] = "16-mixed" if device.type == "cuda" else "bf16-mixed"
    return overrides


def measure(spec: DataParallelSpec | dict) -> DataParallelResult:
    import time

    from bench.common import build_config, resolve_device, resolve_precision
    from ovd.data.synthetic import ensure_synthetic_dataset

    spec = DataParallelSpec.coerce(spec)
    device = resolve_device(spec.device)
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    if accelerator == "gpu":
        import torch

        if spec.processes > torch.cuda.device_count():
            raise SpecError(f"DataParallelSpec: processes={spec.processes} but this machine has "
                            f"{torch.cuda.device_count()} CUDA devices; use at most that many (one per process)")
    overrides = _train_overrides(spec, device)
    config = build_config(spec.source.preset, overrides, device)  # a bad override fails here, not in the child
    batch = spec.batch_size or config.train.batch_size
    # generated once here: DDP ranks must not race to write the built-in set
    data_root = spec.data_root or str(ensure_synthetic_dataset())
    with tempfile.TemporaryDirectory(prefix="ovd-bench-dp-") as tmp:
        out = Path(tmp, "train")
        cmd = train_command(spec, accelerator, batch, overrides, data_root, out)
        t0 = time.perf_counter()
        rc, output = _run(cmd, train_env(spec.threads_per_process), tmp, spec.timeout_s)
        seconds = time.perf_counter() - t0
        if rc != 0:
            why = f"timed out after {spec.timeout_s:.0f} s" if rc == "timeout" else f"exited with {rc}"
            tail = "\n".join(output.strip().splitlines()[-12:])
            raise RuntimeError(f"`ovd train` ({config_key(spec.processes, spec.threads_per_process)}) {why}: {tail}")
        summary = json.loads((out / "summary.json").read_text())
    tp = summary.get("train_throughput")
    if not tp or tp.get("timed_steps") != spec.steps:
        raise RuntimeError(f"`ovd train` timed {tp and tp.get('timed_steps')} of {spec.steps} steps "
                           f"(summary.json train_throughput: {tp}); too few training samples?")
    if tp.get("world_size") != spec.processes:
        raise RuntimeError(f"`ovd train` ran {tp.get('world_size')} processes, {spec.processes} asked")
    return DataParallelResult(spec.source.preset, spec.processes, spec.threads_per_process, batch, accelerator,
                              resolve_precision(config.train.precision, device), tp,
                              summary.get("train_batches_per_epoch"), seconds)
