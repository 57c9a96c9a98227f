"""``python -m bench.worker SPEC.json OUT.json``: run measurements in this fresh process.

SPEC: {"measurements": [names], "variant": {...} or null, "params": {...}, "threads": int, "device": str}.
``variant`` is null for measurements of the machine itself (the roofline): they get no preset/overrides.
OUT: {"status": "ok"|"error", "outcomes": {measurement: {"status", "rows", "result", "error"}},
"environment": {... incl. git_commit, git_dirty, source_hash}, "seconds": float}. Writes OUT atomically;
never prints results.

The runner starts a worker one of two ways (``bench.runner.worker_start``): a new interpreter
(``python -m bench.worker``), or :func:`forked_main` in a process forked from a server that imported
:data:`PRELOAD` once (multiprocessing's "forkserver"). Either way each task is a fresh process that has run
no other measurement; the fork only skips the 5-10 s of imports every task would pay again on a 2-core CPU.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from dataclasses import asdict, is_dataclass
from pathlib import Path


def run(spec: dict) -> dict:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from bench.sources import CALLER_PATH_ENV

    caller = os.environ.get(CALLER_PATH_ENV)  # where `ovd-bench run --model` was started: the factory's folder
    if caller and sys.path[:1] != [caller]:
        sys.path.insert(0, caller)  # ahead of this process's working folder (the clone), as the command line had it
    from bench.common import limit_thread_pools

    threads_info = limit_thread_pools(spec.get("threads"))
    from bench.measure import get_measurement

    variant = spec.get("variant")  # None: a measurement that needs no model (the roofline)
    params = dict(spec.get("params", {}))
    outcomes = {}
    for name in spec["measurements"]:
        t0 = time.perf_counter()
        try:
            m = get_measurement(name)
            # the model's source (bench.sources) and, for older readers, the preset + overrides it mirrors
            model = {k: variant[k] for k in ("source", "preset", "overrides") if variant.get(k) is not None} \
                if variant else {}
            mspec = {**model, "device": spec.get("device"), **params.get(name, {})}
            result = m(mspec)
            outcomes[name] = {"status": "ok", "rows": result.rows(),
                              "result": asdict(result) if is_dataclass(result) else result}
        except Exception as err:  # noqa: BLE001  (recorded, the suite goes on)
            oom = "out of memory" in str(err).lower()
            outcomes[name] = {"status": "error", "rows": [],
                              "error": ("OOM: " if oom else "") + f"{type(err).__name__}: {err}",
                              "traceback": traceback.format_exc()[-4000:]}
        outcomes[name]["seconds"] = time.perf_counter() - t0
    from bench.env import capture

    # the parent records the user command; temp spec paths would only leak machine paths
    env = capture(command="python -m bench.worker SPEC OUT", threads=threads_info.get("torch_threads"))
    env["thread_pools"] = threads_info
    status = "ok" if all(o["status"] == "ok" for o in outcomes.values()) else "error"
    return {"status": status, "outcomes": outcomes, "environment": env}


#: What the fork server imports once (import failures are skipped: the task then imports what it needs).
#: Nothing here may start a thread or touch CUDA: the server must stay safe to fork (with the runner's
#: OPENBLAS_NUM_THREADS=1 none of these does; importing onnxruntime starts one, so the tasks import it, 0.04 s).
PRELOAD = ("torch", "torchvision.ops", "timm", "transformers", "transformers.models.bert.modeling_bert",
           "torchmetrics.functional", "scipy.optimize", "lightning", "threadpoolctl", "psutil",
           "ovd.models.detector", "ovd.training.module", "bench.worker", "bench.common", "bench.env",
           "bench.measure.params", "bench.measure.flops", "bench.measure.speed", "bench.measure.train_loop",
           "bench.measure.arms", "bench.measure.roofline")


def forked_main(spec_path: str, out_path: str, env: dict, cwd: str, log_path: str) -> None:
    """A task forked from the preloaded server, set up and ended as ``python -m bench.worker SPEC OUT`` would be:
    the task's environment, working folder (first on ``sys.path``), ``sys.argv`` and default multiprocessing
    start method, stdout and stderr into ``log_path`` (the runner shows its tail when the task fails), and the
    atexit handlers run at the end."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    # a child of the fork server inherits "forkserver" as its default start method; a new interpreter has the
    # platform's, and a DataLoader's workers (Lightning's train loop) must start the way they would there
    import multiprocessing

    multiprocessing.set_start_method(None, force=True)
    os.chdir(cwd)
    if sys.path[:1] != [cwd]:
        sys.path.insert(0, cwd)
    sys.argv = [__file__, spec_path, out_path]
    try:
        code = main([spec_path, out_path])
    finally:
        # a new interpreter runs its atexit handlers (temporary folders' finalizers among them) when it ends; a
        # forked child ends in os._exit, which skips them
        import atexit

        atexit._run_exitfuncs()
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec_path, out_path = Path(argv[0]), Path(argv[1])
    spec = json.loads(spec_path.read_text())
    t0 = time.perf_counter()
    out = run(spec)
    out["seconds"] = time.perf_counter() - t0
    from bench.results import _json_default, atomic_write

    atomic_write(out_path, json.dumps(out, default=_json_default))
    return 0


if __name__ == "__main__":
    sys.exit(main())
