"""Environment capture (no hostname): versions, device, CPU model, threads, date, command, and provenance:
the git commit, whether ovd/ or bench/ had uncommitted changes, and a hash of their sources."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _read_cpuinfo() -> str | None:
    """The text of ``/proc/cpuinfo``, or None where it cannot be read (not Linux)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return None


def cpu_model() -> str:
    for line in (_read_cpuinfo() or "").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


#: The instruction-set flags that decide which arms can be fast (bf16 and int8 GEMMs), in this order. Two hosts
#: with the same ``cpu_model`` ("AMD EPYC" under KVM) can differ here by 10x on the bf16 arm.
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16",
                "amx_int8", "asimd", "sve", "sve2", "bf16", "i8mm")


def cpu_features(cpuinfo: str | None = None) -> str | None:
    """The :data:`CPU_FEATURES` flags the CPU reports, space-separated in that order ("" when none); None when
    ``/proc/cpuinfo`` cannot be read (not Linux). ``cpuinfo`` is the file's text (for tests)."""
    if cpuinfo is None:
        cpuinfo = _read_cpuinfo()
        if cpuinfo is None:
            return None
    for line in cpuinfo.splitlines():
        # x86 names the list "flags", arm64 "Features"; every core lists the same, so the first line does
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            present = set(value.split())
            return " ".join(f for f in CPU_FEATURES if f in present)
    return None


def machine_identity(env: dict) -> str | None:
    """What a measurement's absolute numbers belong to, from an environment dict (:func:`capture`'s keys), as
    text: the GPU's name, or the CPU's model and instruction-set features; None when the dict does not say."""
    device = env.get("device")
    if device and device != "cpu":
        return str(device)
    if not env.get("cpu_model"):
        return None
    return f"{env['cpu_model']} ({env.get('cpu_features') or 'features unknown'})"


def same_machine(a: dict, b: dict) -> bool | None:
    """Whether two environment dicts describe the same kind of machine: the same GPU, or the same CPU model with
    the same instruction-set features (not compared when either file predates recording them); None when
    either dict does not say."""
    gpu_a, gpu_b = (e.get("device") not in (None, "cpu") for e in (a, b))
    if gpu_a or gpu_b:
        return a.get("device") == b.get("device")
    if not a.get("cpu_model") or not b.get("cpu_model"):
        return None
    fa, fb = a.get("cpu_features"), b.get("cpu_features")
    return a["cpu_model"] == b["cpu_model"] and (fa is None or fb is None or fa == fb)


def this_machine() -> dict:
    """The :func:`capture` keys that :func:`same_machine` compares, for the machine this process runs on."""
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {"device": device, "cpu_model": cpu_model(), "cpu_features": cpu_features()}


#: A machine without ``.git`` (a GPU box that got a copy of the tree) is told the commit by its host.
COMMIT_ENV = "OVD_BENCH_GIT_COMMIT"
UNKNOWN = "unknown"
#: The code whose behaviour the suite measures; the source hash covers every ``*.py`` file under these.
SOURCE_DIRS = ("ovd", "bench")


def _git(*args: str) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit() -> str:
    """The commit being measured: ``$OVD_BENCH_GIT_COMMIT`` if set, else ``git rev-parse --verify HEAD``
    (exit status checked), else ``"unknown"`` (never the failing command's output)."""
    forced = os.environ.get(COMMIT_ENV, "").strip()
    if forced:
        return forced
    proc = _git("rev-parse", "--verify", "HEAD")
    if proc is None or proc.returncode != 0:
        return UNKNOWN
    out = proc.stdout.strip()
    # a 40/64-hex object name, or nothing trustworthy
    return out if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", out) else UNKNOWN


def git_dirty() -> bool | None:
    """True when tracked files under ovd/ or bench/ differ from HEAD; None when git cannot tell."""
    proc = _git("status", "--porcelain", "--untracked-files=no", "--", *SOURCE_DIRS)
    if proc is None or proc.returncode != 0:
        return None
    return bool(proc.stdout.strip())


def source_hash(root: str | Path | None = None) -> str:
    """sha256 (hex) over the sorted relative paths and bytes of every ``*.py`` file under ``ovd/`` and
    ``bench/`` of ``root`` (default: this checkout), ``__pycache__`` skipped. Unlike the commit it sees
    uncommitted edits, and it works where there is no ``.git``."""
    root = Path(root) if root is not None else REPO_ROOT
    files = sorted(f.relative_to(root).as_posix() for d in SOURCE_DIRS if (root / d).is_dir()
                   for f in (root / d).rglob("*.py") if "__pycache__" not in f.parts and f.is_file())
    h = hashlib.sha256()
    for rel in files:
        data = (root / rel).read_bytes()
        # length-prefixed so that moving bytes between files or names changes the hash
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def provenance() -> dict:
    """``git_commit``, ``git_dirty``, ``source_hash`` of the code as it is now (the run environment's keys)."""
    return {"git_commit": git_commit(), "git_dirty": git_dirty(), "source_hash": source_hash()}


def provenance_summary(results) -> dict:
    """What produced a results file: every commit and source hash its task outcomes were measured with.

    Returns {"commits": sorted list, "source_hashes": sorted list, "mixed": bool (more than one commit or
    source hash among the tasks), "current_source_hash": the hash of this checkout now, "matches_current":
    bool (every task ran on the current sources)}. Tasks without provenance (older files) count as
    ``"unknown"``; with no tasks the run environment's keys are used."""
    envs = [out.get("environment") or {} for out in results.tasks.values()] or [results.environment]
    commits = sorted({str(e.get("git_commit") or UNKNOWN) for e in envs})
    hashes = sorted({str(e.get("source_hash") or UNKNOWN) for e in envs})
    current = source_hash()
    return {"commits": commits, "source_hashes": hashes, "mixed": len(commits) > 1 or len(hashes) > 1,
            "current_source_hash": current, "matches_current": hashes == [current]}


def machine_kind(device: str | None = None) -> str:
    """``gpu-<model>`` (e.g. gpu-h100) on CUDA, else ``cpu-<N>core`` (logical cores)."""
    import torch

    if (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(0).lower()
        m = re.search(r"(h100|h200|a100|a10g?|l4|l40s?|t4|v100|rtx ?\d+|b200|gh200)", name)
        model = (m.group(1) if m else re.sub(r"[^a-z0-9]+", "-", name)).replace(" ", "")
        n = torch.cuda.device_count()
        return f"gpu-{model}" + (f"x{n}" if n > 1 else "")
    return f"cpu-{os.cpu_count()}core"


def cuda_driver_version() -> str | None:
    """The NVIDIA driver version (e.g. "570.86.15") from ``nvidia-smi``; None without a driver."""
    try:
        proc = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = proc.stdout.strip().splitlines()
    return lines[0].strip() if proc.returncode == 0 and lines else None


def capture(command: str | None = None, threads: int | None = None) -> dict:
    """The run environment: exact torch/CUDA/cuDNN/driver versions, device, CPU, threads, thread-pool
    variables, library versions and provenance (``git_commit``, ``git_dirty``, ``source_hash``)."""
    import torch

    env = {
        "date_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": command if command is not None else " ".join(sys.argv),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "cuda_driver": cuda_driver_version() if torch.cuda.is_available() else None,
        **this_machine(),  # device, cpu_model, cpu_features: what same_machine compares
        "cpu_count": os.cpu_count(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "machine_kind": machine_kind(),
        **{k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
    }
    for mod in ("torchvision", "timm", "transformers", "numpy", "scipy"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001  (absence is information, not an error)
            env[mod] = None
    env.update(provenance())
    return env
