"""Environment capture (no hostname): versions, device, CPU model, threads, git commit, date, command."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain", "--", "ovd", "bench"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


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


def capture(command: str | None = None, threads: int | None = None) -> dict:
    import torch

    env = {
        "date_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": command if command is not None else " ".join(sys.argv),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "cpu_model": cpu_model(),
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
    env.update({f"git_{k}": v for k, v in git_commit().items()})
    return env
