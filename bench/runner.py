"""The method: every measurement in a fresh process (:func:`worker_start`: forked from a server that
imported the libraries once, or a new ``python -m bench.worker`` interpreter), thread pools
pinned in the child's environment, speed repeats interleaved across variants (A B A B ...),
crashes and OOMs recorded as error rows while the suite goes on, results written atomically
after every task, ``resume`` skipping tasks already done (measured on the same code, or refused).
Progress (done/total, an estimate of the time left) goes to stderr."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

from .common import resolve_device
from .env import machine_identity, same_machine, this_machine
from .errors import UsageError
from .profiles import Profile
from .results import Results, aggregate
from .variants import RESERVED_NAME, get_variant

#: The row label of measurements of the machine itself (the roofline); reports read it as before.
MACHINE = RESERVED_NAME  # the roofline's row label, which no --model name may take
MACHINE_SPEC = {"name": MACHINE, "preset": None, "overrides": {}, "description": "the machine: matrix-multiply peak",
                "reference": None, "group": "machine"}


@dataclass
class Task:
    """One measurement process. ``variant`` names the model (None for the machine's own measurements);
    ``label`` is the variant column of its rows (default: the variant)."""

    id: str
    variant: str | None
    measurements: list
    params: dict = field(default_factory=dict)
    repeat: int = 0
    label: str | None = None

    @property
    def row_label(self) -> str:
        return self.label or self.variant or MACHINE

    @property
    def kind(self) -> str:
        """``speed``, ``roofline``, ``accuracy``, ...: the id's first field (progress estimates group by it)."""
        return self.id.split(":", 1)[0]


def plan(profile: Profile) -> list[Task]:
    """Tasks in run order: params+FLOPs, memory (inference and training, separate processes),
    speed rounds (each round visits every variant once: interleaved; rounds past ``repeats`` visit only
    the pair, up to ``pair_repeats``; the pair's ``train_loop`` rides the first ``train_loop_repeats``
    rounds), accuracy runs (seed-major: A0 B0 A1 B1 ...)."""
    p = profile
    tasks: list[Task] = _sweep_and_ceiling(p)  # first: on a short GPU window they are what matters most
    for v in p.static_variants:
        tasks.append(Task(f"static:{v}", v, ["params", "flops"], {"flops": {"batch_size": 1}}))
    for v in p.memory_variants:
        var = get_variant(v)
        batch = None if var.preset_batch else p.train_batch
        tasks.append(Task(f"memory_infer:{v}", v, ["memory_infer"], {"memory_infer": {"batch_size": p.infer_batch}}))
        tasks.append(Task(f"memory_train:{v}", v, ["memory_train"], {"memory_train": {"batch_size": batch}}))
    for v in p.memory_preset_batch:
        tasks.append(Task(f"memory_train_preset:{v}", v, ["memory_train"], {"memory_train": {"batch_size": None}}))
    extras = set(p.extras)
    peer = {"image_size": p.peer_image_size}
    if "peers" in extras:
        for v in p.peers:
            tasks.append(Task(f"peer_static:{v}", v, ["peer_static"], {"peer_static": dict(peer)}))
            tasks.append(Task(f"peer_memory:{v}", v, ["peer_memory"],
                              {"peer_memory": {**peer, "batch_size": p.infer_batch}}))
    light_arms, isolated_arms = _split_arms(p.arms) if "arms" in extras else ((), ())
    arm = {"batch_size": p.arm_batch, "warmup": 1, "rounds": p.arm_rounds, "iters": p.arm_iters}
    pair = [v for v in p.pair if v in p.speed_variants]
    loops = p.train_loop_repeats if p.train_loop_steps > 0 else 0
    dp_configs = _dataparallel_configs(p) if "dataparallel" in extras else ()
    rounds = max([p.repeats, p.pair_rounds if pair else 0, loops if pair else 0]
                 + [n for x, n in (("peers", p.peer_repeats), ("roofline", p.roofline_repeats),
                                   ("arms", p.arm_repeats if light_arms else 0),
                                   ("dataparallel", p.dataparallel_repeats if dp_configs else 0)) if x in extras])
    # One round visits every variant, peer, the roofline and the shared arms process once: a drifting
    # machine hits all of them alike.
    for r in range(rounds):
        for v in p.speed_variants:
            if r < (p.pair_rounds if v in pair else p.repeats):
                var = get_variant(v)
                sp = {"train_batch": None if var.preset_batch else p.train_batch, "infer_batch": p.infer_batch,
                      "warmup": p.warmup, "iters": p.iters}
                tasks.append(Task(f"speed:{v}:{r}", v, ["speed"], {"speed": sp}, r))
        if r < loops:
            for v in pair:
                tl = {"batch_size": None if get_variant(v).preset_batch else p.train_batch,
                      "steps": p.train_loop_steps, "warmup_steps": p.train_loop_warmup}
                tasks.append(Task(f"train_loop:{v}:{r}", v, ["train_loop"], {"train_loop": tl}, r))
        if "peers" in extras and r < p.peer_repeats:
            for v in p.peers:
                tasks.append(Task(f"peer_speed:{v}:{r}", v, ["peer_speed"],
                                  {"peer_speed": {**peer, "infer_batch": p.infer_batch, "warmup": p.warmup,
                                                  "iters": p.iters}}, r))
        if "roofline" in extras and r < p.roofline_repeats:
            # the machine's own measurement: no model, so no variant (rows are labelled "machine")
            tasks.append(Task(f"roofline:{r}", None, ["roofline"],
                              {"roofline": {"sizes": list(p.roofline_sizes) or None}}, r, label=MACHINE))
        if dp_configs and r < p.dataparallel_repeats:
            # every configuration once per round (p1t1 p1t2 p2t1, p1t1 p1t2 p2t1, ...): drift hits all alike
            for procs, threads in dp_configs:
                dp = {"processes": procs, "threads_per_process": threads, "batch_size": p.dataparallel_batch,
                      "steps": p.dataparallel_steps, "warmup_steps": p.dataparallel_warmup}
                tasks.append(Task(f"dataparallel:{_dp_key(procs, threads)}:{r}", p.dataparallel_variant,
                                  ["dataparallel"], {"dataparallel": dp}, r))
        if light_arms and r < p.arm_repeats:
            tasks.append(Task(f"arms:shared:{r}", p.extras_variant, ["arms"], {"arms": {**arm, "arms": list(light_arms)}},
                              r))
    from .measure.arms import compile_mode_of, get_arm

    for name in isolated_arms:
        for r in range(p.arm_isolated_repeats):
            spec = {**arm, "arms": [name], "emit": [name]}
            if compile_mode_of(get_arm(name).features) is not None:
                # one Inductor cache per compile arm: the first process compiles cold into an emptied cache (the
                # set-up a first run pays), the later ones hit it (a later run's set-up) and take about 70 s less
                spec.update(compile_cache=f"inductor-cache/{name}", compile_cache_reset=r == 0)
            tasks.append(Task(f"arms:{name}:{r}", p.extras_variant, ["arms"], {"arms": spec}, r))
    if "scaling" in extras:
        for r in range(p.scaling_repeats):
            for axis, values in p.scaling_axes:
                for value in values:
                    sp = {"axis": axis, "value": value, "batch_size": p.scaling_batch, "warmup": p.scaling_warmup,
                          "iters": p.scaling_iters}
                    tasks.append(Task(f"scaling:{axis}={value}:{r}", p.extras_variant, ["scaling"], {"scaling": sp}, r))
    judged = p.arms_accuracy_variant if p.arms_accuracy and p.accuracy_seeds else None
    judged_seeds = tuple(p.arms_accuracy_seeds or p.accuracy_seeds[:1]) if judged else ()
    checkpoints = {seed: f"checkpoints/{judged}-seed{seed}.ckpt" for seed in judged_seeds}
    for i, seed in enumerate(p.accuracy_seeds):
        for v in p.accuracy_variants:
            if get_variant(v).preset is None:
                # a factory or hub model is never trained, its predict() is scored as it is: no training keys (the
                # quick and default profiles train nothing, budget 0 s, which a training spec rightly refuses)
                acc = {"seed": int(seed)}
            else:
                acc = {"budget_s": p.accuracy_budget_s, "target_map50": p.accuracy_target_map50,
                       "eval_every_s": min(p.accuracy_eval_every_s, p.accuracy_budget_s / 2), "seed": int(seed)}
            if v == judged and seed in checkpoints:
                acc["checkpoint_out"] = checkpoints[seed]  # relative to the run folder (run_task resolves it)
            tasks.append(Task(f"accuracy:{v}:{seed}", v, ["accuracy"], {"accuracy": acc}, i))
    if judged:
        # the checkpoint, not the variant, is the model: no preset keys reach the measurement's spec
        var = get_variant(judged)
        for seed in judged_seeds:
            # trained by the accuracy task of that seed; reused when its fingerprint matches, else trained again
            train = {"preset": var.source.preset, "overrides": dict(var.source.overrides or {}),
                     "seed": int(seed), "budget_s": float(p.accuracy_budget_s)}
            aa = {"checkpoint": checkpoints[seed], "arms": list(p.arms_accuracy),
                  "max_images": p.arms_accuracy_images, "train": train}
            # one checkpoint: the variant's name; several: one row label per checkpoint ("optimized-tiny seed 1")
            tid, label = (f"arms_accuracy:{judged}", judged) if len(judged_seeds) == 1 else \
                (f"arms_accuracy:{judged}:{seed}", f"{judged} seed {seed}")
            tasks.append(Task(tid, None, ["arms_accuracy"], {"arms_accuracy": aa}, label=label))
    return tasks


def _sweep_and_ceiling(p: Profile) -> list[Task]:
    """The saturating batch sweep (per variant and mode, ``sweep_repeats`` interleaved rounds) and the backbone
    ceiling (``ceiling_repeats`` rounds), when the profile's extras name them."""
    tasks = []
    extras = set(p.extras)
    sweep_variants = p.sweep_variants or p.pair
    ceiling_variants = p.ceiling_variants or p.pair
    rounds = max(p.sweep_repeats if "sweep" in extras else 0, p.ceiling_repeats if "ceiling" in extras else 0)
    for r in range(rounds):
        if "sweep" in extras and r < p.sweep_repeats:
            for v in sweep_variants:
                for mode in p.sweep_modes:
                    sw = {"mode": mode, "max_batch": p.sweep_max_batch, "warmup": p.sweep_warmup,
                          "iters": p.sweep_iters}
                    tasks.append(Task(f"sweep:{v}:{mode}:{r}", v, ["sweep"], {"sweep": sw}, r))
        if "ceiling" in extras and r < p.ceiling_repeats:
            for v in ceiling_variants:
                ce = {"batch_size": p.ceiling_batch or p.infer_batch, "rounds": p.ceiling_rounds}
                tasks.append(Task(f"ceiling:{v}:{r}", v, ["ceiling"], {"ceiling": ce}, r))
    return tasks


def _dataparallel_configs(p: Profile) -> tuple:
    """The profile's (processes, threads) configurations, else the machine's (CPU: 1x1, 1x2, 2x1; N GPUs: 1..N)."""
    from .measure.dataparallel import default_configs

    return tuple(tuple(c) for c in p.dataparallel_configs) or default_configs()


def _dp_key(processes: int, threads: int) -> str:
    from .measure.dataparallel import config_key

    return config_key(processes, threads)


def _split_arms(names) -> tuple[tuple, tuple]:
    """(arms that share a process, arms that get their own): ``Arm.isolated`` decides."""
    from .measure.arms import REFERENCE, get_arm

    arms = [get_arm(n) for n in names if n != REFERENCE]
    return tuple(a.name for a in arms if not a.isolated), tuple(a.name for a in arms if a.isolated)


def child_env(threads: int) -> dict:
    env = dict(os.environ)
    env.update({"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"})
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


#: task parameters that name a file in the run folder (relative in the plan and in results.json)
RUN_FOLDER_PATHS = ("checkpoint_out", "checkpoint", "compile_cache")


def _in_run_folder(params: dict, out_dir: str | Path | None) -> dict:
    """``params`` with every relative RUN_FOLDER_PATHS value resolved against ``out_dir``."""
    if out_dir is None:
        return params
    resolved = {}
    for name, p in params.items():
        p = dict(p) if isinstance(p, dict) else p
        if isinstance(p, dict):
            for key in RUN_FOLDER_PATHS:
                if isinstance(p.get(key), str) and not Path(p[key]).is_absolute():
                    p[key] = str(Path(out_dir).resolve() / p[key])
        resolved[name] = p
    return resolved


def _relative_to_run_folder(value, out_dir: str | Path | None):
    """``value`` (a worker outcome: nested dicts / lists / scalars) with every string inside the resolved
    ``out_dir`` made relative to it again ("<abs run folder>/ckpt/x.pt" -> "ckpt/x.pt", the folder itself
    -> "."), so results.json does not depend on where the run folder was. Other strings (and dict keys)
    are left as they are; ``out_dir`` None returns ``value`` unchanged."""
    if out_dir is None:
        return value
    root = str(Path(out_dir).resolve())
    prefix = root.rstrip("/") + "/"

    def walk(v):
        if isinstance(v, str):
            if v == root:
                return "."
            return v[len(prefix):] if v.startswith(prefix) else v
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return type(v)(walk(x) for x in v)
        return v

    return walk(value)


#: Measurements that keep a new interpreter per task where the others are forked: the CPU memory rows are RSS
#: growth over the process's own start, and every committed report measured them from a new interpreter.
NEW_INTERPRETER_MEASUREMENTS = frozenset({"memory_infer", "memory_train", "peer_memory"})

WORKER_STARTS = ("fork", "exec")


def worker_start(task: Task, device: str, fresh_interpreter: bool = False) -> str:
    """How ``task``'s process starts: "fork" (from the preloaded fork server, :data:`bench.worker.PRELOAD`) or
    "exec" (a new ``python -m bench.worker`` interpreter: 5-10 s of imports per task on a 2-core CPU).

    "exec" when asked (``fresh_interpreter``), for :data:`NEW_INTERPRETER_MEASUREMENTS`, off Linux (macOS system
    libraries may start threads, which makes a fork unsafe there; multiprocessing spawns by default on macOS for
    that reason, and the no-thread check of the server reads Linux's /proc), and where the run may use CUDA: a
    process forked after CUDA was touched cannot use it, and whether an import touches it is not ours to promise."""
    if fresh_interpreter or NEW_INTERPRETER_MEASUREMENTS.intersection(task.measurements):
        return "exec"
    if not sys.platform.startswith("linux"):
        return "exec"
    return "fork" if resolve_device(device).type == "cpu" else "exec"


@contextlib.contextmanager
def _environ(env: dict):
    """``os.environ`` is ``env`` inside (the fork server takes its environment from this process at start)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _main_module_hidden():
    """A child started by multiprocessing re-imports the caller's ``__main__`` (a script calling
    :func:`run_profile` without an ``if __name__ == "__main__"`` guard would run again in every task); the
    worker needs nothing from it, so an empty ``__main__`` stands in while the child is started."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _fork_server():
    """The multiprocessing context whose server imports :data:`bench.worker.PRELOAD` once (at its first use)."""
    from .worker import PRELOAD

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(PRELOAD))
    return ctx


def _run_worker(spec_path: Path, out_path: Path, env: dict, timeout_s: float, start: str) -> tuple:
    """Run the worker on ``spec_path`` -> ``out_path``; returns (exit code or "timeout", its stderr)."""
    cwd = str(Path(__file__).resolve().parent.parent)
    if start == "exec":
        try:
            proc = subprocess.run([sys.executable, "-m", "bench.worker", str(spec_path), str(out_path)],
                                  env=env, capture_output=True, text=True, timeout=timeout_s, cwd=cwd)
            return proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as err:
            stderr = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else (err.stderr or "")
            return "timeout", stderr
    if start != "fork":
        raise ValueError(f"start={start!r}; choose one of {WORKER_STARTS}")
    from .worker import forked_main

    log_path = out_path.with_name("worker.log")
    proc = _fork_server().Process(target=forked_main, name="ovd-bench-worker",
                                  args=(str(spec_path), str(out_path), env, cwd, str(log_path)))
    with _environ(env), _main_module_hidden():  # the server, started on first use, inherits the environment
        proc.start()
    try:
        proc.join(timeout_s)
    except BaseException:  # Ctrl-C or SIGTERM in the runner: the task goes too, as subprocess.run does
        proc.kill()
        proc.join()
        raise
    rc = proc.exitcode
    if rc is None:  # still running: past its time
        proc.kill()
        proc.join()
        rc = "timeout"
    stderr = log_path.read_text(errors="replace") if log_path.exists() else ""
    return rc, stderr


def run_task(task: Task, threads: int, device: str, timeout_s: float, out_dir: str | Path | None = None,
             start: str | None = None) -> dict:
    """Run one task in a fresh worker process (``start``: "fork" or "exec", default :func:`worker_start`);
    always returns an outcome dict. Relative file parameters (``RUN_FOLDER_PATHS``) are resolved against
    ``out_dir`` for the worker only; the worker's outcome gets them back in relative form
    (:func:`_relative_to_run_folder`)."""
    start = start or worker_start(task, device)
    var = get_variant(task.variant).to_dict() if task.variant is not None else None
    spec = {"measurements": task.measurements, "variant": var, "params": _in_run_folder(task.params, out_dir),
            "threads": threads, "device": device}
    with tempfile.TemporaryDirectory(prefix="ovd-bench-") as tmp:
        spec_path, out_path = Path(tmp, "spec.json"), Path(tmp, "out.json")
        spec_path.write_text(json.dumps(spec))
        t0 = time.perf_counter()
        rc, stderr = _run_worker(spec_path, out_path, child_env(threads), timeout_s, start)
        seconds = time.perf_counter() - t0
        if out_path.exists():
            out = json.loads(out_path.read_text())
        else:
            why = f"timed out after {timeout_s:.0f} s" if rc == "timeout" else f"worker exited with {rc}"
            if rc == -9 or rc == 137:
                why += " (killed: out of memory?)"
            tail = "\n".join(stderr.strip().splitlines()[-15:])
            out = {"status": "error", "outcomes": {m: {"status": "error", "rows": [], "error": f"{why}: {tail}"}
                                                    for m in task.measurements}}
    out = _relative_to_run_folder(out, out_dir)
    out["wall_seconds"] = seconds
    out["worker_start"] = start
    out["task"] = {"id": task.id, "variant": task.row_label, "measurements": task.measurements, "repeat": task.repeat,
                   "params": task.params}
    return out


def rebuild_rows(results: Results) -> None:
    """Aggregate every task outcome into rows: one row per (variant, metric), samples across repeats."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for tid, out in results.tasks.items():
        t = out["task"]
        kind = tid.split(":")[0]
        for m, o in out.get("outcomes", {}).items():
            label = "memory_train_preset" if kind == "memory_train_preset" else m
            if kind in ("scaling", "arms", "dataparallel", "sweep"):
                # one group per point / arms process kind, so a failed point is its own error row
                label = tid.rsplit(":", 1)[0] if t.get("repeat") is not None else tid
            groups.setdefault((t["variant"], label, m), []).append(o)
    rows = []
    for (variant, label, _m), outcomes in groups.items():
        for row in aggregate(variant, label, outcomes):
            if label == "memory_train_preset":
                row.metric = row.metric.replace("memory/train", "memory/train_presetbatch")
            rows.append(row)
    results.rows = rows


def log(msg: str) -> None:
    print(f"[ovd-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def estimate_seconds_left(remaining: list[Task], finished: dict[str, list[float]]) -> float | None:
    """Seconds the ``remaining`` tasks will take: per task, the mean wall time of finished tasks of the
    same kind (``Task.kind``), else the mean over all finished tasks; None before any task finished."""
    every = [x for xs in finished.values() for x in xs]
    if not every:
        return None
    overall = sum(every) / len(every)
    return sum(sum(finished[t.kind]) / len(finished[t.kind]) if finished.get(t.kind) else overall
               for t in remaining)


def _fmt_duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def _foreign_tasks(done: dict, current: dict) -> dict:
    """Task id -> "commit X, source Y" for finished tasks not measured on the current commit and sources."""
    foreign = {}
    for tid, out in done.items():
        env = out.get("environment") or {}
        commit, src = env.get("git_commit") or "unknown", env.get("source_hash") or "unknown"
        if commit != current["git_commit"] or src != current["source_hash"]:
            foreign[tid] = f"commit {commit[:12]}, source {src[:12]}"
    return foreign


def _resumable(done: dict, planned: list[Task], threads: int, here: dict, variants: dict | None = None) -> dict:
    """The finished tasks of a ``--resume`` folder that this run may keep: those the current plan has, with the
    same measurements and parameters, and the same model source as the folder's ``variants`` record for their
    variant (a ``--model NAME=...`` that now names another factory; any other is re-run or dropped, and logged).
    One measured on another machine or thread count is refused (:class:`bench.errors.UsageError`): its absolute
    numbers are not this run's, and ``--resume-any`` does not change that."""
    by_id = {t.id: t for t in planned}
    keep, other_setup = {}, []
    for tid, out in done.items():
        task, recorded = by_id.get(tid), out.get("task") or {}
        if task is None:
            log(f"--resume: {tid} is not in this run's plan: dropped")
            continue
        if (list(recorded.get("measurements") or []) != list(task.measurements)
                or _canonical(recorded.get("params") or {}) != _canonical(task.params)):
            log(f"--resume: {tid} was measured with other parameters: re-run")
            continue
        then = ((variants or {}).get(task.variant) or {}).get("source") if task.variant is not None else None
        if then is not None and _canonical(then) != _canonical(get_variant(task.variant).source.to_dict()):
            log(f"--resume: {tid} was measured on another model ({then.get('target') or then.get('preset') or then}): "
                "re-run")
            continue
        env = out.get("environment") or {}
        if same_machine(env, here) is False:
            other_setup.append(f"{tid} on {machine_identity(env)}")
        elif env.get("threads") is not None and env["threads"] != threads:
            other_setup.append(f"{tid} with {env['threads']} threads")
        else:
            keep[tid] = out
    if other_setup:
        raise UsageError(
            f"--resume: {len(other_setup)} finished tasks were measured on another machine or thread count "
            f"({'; '.join(other_setup[:3])}{' ...' if len(other_setup) > 3 else ''}; this run: "
            f"{machine_identity(here)}, {threads} "
            f"threads); their absolute numbers are not this run's: re-run without --resume")
    return keep


def resumed_tasks(tasks: list[Task], resume: str | Path, threads: int, environment: dict | None = None,
                  resume_any: bool = False) -> dict:
    """Task id -> outcome: what ``run_profile(..., resume=resume)`` keeps of the planned ``tasks`` (see there);
    raises :class:`bench.errors.UsageError` where it would refuse, so a command line can ask before it makes a
    run folder."""
    from .env import provenance

    current = provenance()
    prev = Results.load(Path(resume) / "results.json")
    done = {k: v for k, v in prev.tasks.items() if v.get("status") == "ok"}
    here = environment if environment and environment.get("cpu_model") else this_machine()  # the run's capture()
    done = _resumable(done, tasks, threads, here, prev.variants)
    foreign = _foreign_tasks(done, current)
    if foreign and not resume_any:
        seen = sorted(set(foreign.values()))
        raise UsageError(
            f"--resume {resume}: {len(foreign)} of {len(done)} finished tasks were measured on other code "
            f"({'; '.join(seen[:3])}{' ...' if len(seen) > 3 else ''}; now commit {current['git_commit'][:12]}, "
            f"source {current['source_hash'][:12]}); re-run without --resume, or pass --resume-any to keep them")
    return done


def _canonical(params: dict) -> str:
    """Task parameters as comparable text (tuples and lists alike, key order ignored)."""
    return json.dumps(params, sort_keys=True, default=str)


def run_profile(profile: Profile, out_dir: str | Path, threads: int, device: str = "auto",
                resume: str | Path | None = None, command: str = "", environment: dict | None = None,
                resume_any: bool = False, time_limit_s: float | None = None,
                fresh_interpreter: bool = False) -> Results:
    """Run every task of ``profile`` and write ``out_dir/results.json`` after each one.

    ``resume``: a folder whose ``results.json`` tasks that finished ok are kept, not re-run, when this run plans
    the same task with the same parameters (else it is re-run), on the same machine and thread count (else
    :class:`bench.errors.UsageError`, :func:`_resumable`). They must have been measured on the current commit
    and source hash (``bench.env.provenance``), else UsageError too; ``resume_any=True`` keeps those anyway.
    The results' environment records ``source_hashes`` and ``git_commits`` (sorted, over every task) so a mixed
    file says so.

    ``time_limit_s``: wall seconds for the whole run; a task is not started when the estimate of its own
    time would take the run past the limit (the tasks left are listed as not run; the report marks the run
    INCOMPLETE and ``--resume`` finishes it). The planned task ids are recorded in ``profile["planned_tasks"]``.

    ``fresh_interpreter``: every task in a new interpreter (:func:`worker_start`), none forked."""
    from .env import provenance

    out_dir = Path(out_dir)
    path = out_dir / "results.json"
    current = provenance()
    tasks = plan(profile)
    done = resumed_tasks(tasks, resume, threads, environment, resume_any) if resume is not None else {}
    results = Results(environment={**current, **(environment or {})}, profile={**profile.to_dict(), "threads": threads},
                      command=command,
                      variants={n: get_variant(n).to_dict() for n in profile.names()})
    results.profile["planned_tasks"] = [t.id for t in tasks]
    if any(t.variant is None and t.row_label == MACHINE for t in tasks):
        results.variants[MACHINE] = dict(MACHINE_SPEC)  # so reports find the roofline rows' group
    results.tasks.update(done)
    t_start = time.perf_counter()
    finished: dict[str, list[float]] = {}
    total = len(tasks)
    for i, task in enumerate(tasks, 1):
        if task.id in done:
            log(f"[{i}/{total}] {task.id}: already in {resume}, skipped")
            continue
        if time_limit_s is not None and _past_limit(task, finished, time.perf_counter() - t_start, time_limit_s):
            left = [t.id for t in tasks[i - 1:] if t.id not in done]
            log(f"time limit {time_limit_s:.0f} s: {len(left)} tasks not started ({', '.join(left[:5])}"
                f"{' ...' if len(left) > 5 else ''}); the report is marked INCOMPLETE, finish with --resume {out_dir}")
            results.environment["stopped_by_time_limit_s"] = time_limit_s
            break
        out = run_task(task, threads, device, profile.timeout_s, out_dir,
                       start=worker_start(task, device, fresh_interpreter))
        results.tasks[task.id] = out
        finished.setdefault(task.kind, []).append(out["wall_seconds"])
        errors = [f"{m}: {o.get('error')}" for m, o in out.get("outcomes", {}).items() if o.get("status") != "ok"]
        left = estimate_seconds_left([t for t in tasks[i:] if t.id not in done], finished)
        log(f"[{i}/{total}] {task.id}: {out['wall_seconds']:.1f} s "
            + ("ok" if not errors else "ERROR " + "; ".join(e[:200] for e in errors))
            + f" (done {i}/{total}, elapsed {_fmt_duration(time.perf_counter() - t_start)}"
            + (f", about {_fmt_duration(left)} left)" if left is not None else ")"))
        _record_provenance(results)
        rebuild_rows(results)
        results.save(path)
    _record_provenance(results)
    rebuild_rows(results)
    results.environment["suite_seconds"] = time.perf_counter() - t_start
    results.save(path)
    return results


def _past_limit(task: Task, finished: dict[str, list[float]], elapsed: float, limit: float) -> bool:
    """Would ``task`` end past ``limit``? Its estimate: the mean of finished tasks of its kind, else the mean of
    every finished task (:func:`estimate_seconds_left`'s rule; the first task of a run gets its chance)."""
    estimate = estimate_seconds_left([task], finished) or 0.0
    return elapsed >= limit or elapsed + estimate > limit


def missing_tasks(results: Results) -> list[str]:
    """Planned task ids with no recorded outcome (a run cut short by a time limit, Ctrl-C or a kill)."""
    planned = results.profile.get("planned_tasks") or []
    return [t for t in planned if t not in results.tasks]


def _record_provenance(results: Results) -> None:
    """Every commit and source hash the task outcomes came from (more than one: a mixed file)."""
    envs = [out.get("environment") or {} for out in results.tasks.values()]
    if envs:
        results.environment["git_commits"] = sorted({str(e.get("git_commit") or "unknown") for e in envs})
        results.environment["source_hashes"] = sorted({str(e.get("source_hash") or "unknown") for e in envs})
