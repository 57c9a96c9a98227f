"""The method: every measurement in a fresh subprocess (``python -m bench.worker``), thread pools
pinned in the child's environment, speed repeats interleaved across variants (A B A B ...),
crashes and OOMs recorded as error rows while the suite goes on, results written atomically
after every task, ``resume`` skipping tasks already done. Progress goes to stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .profiles import Profile
from .results import Results, aggregate
from .variants import get_variant


@dataclass
class Task:
    id: str
    variant: str
    measurements: list
    params: dict = field(default_factory=dict)
    repeat: int = 0


def plan(profile: Profile) -> list[Task]:
    """Tasks in run order: params+FLOPs, memory (inference and training, separate processes),
    speed rounds (each round visits every variant once: interleaved), accuracy runs."""
    p = profile
    tasks: list[Task] = []
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
    rounds = max([p.repeats] + [n for x, n in (("peers", p.peer_repeats), ("roofline", p.roofline_repeats),
                                               ("arms", p.arm_repeats if light_arms else 0)) if x in extras])
    # One round visits every variant, peer, the roofline and the shared arms process once: a drifting
    # machine hits all of them alike.
    for r in range(rounds):
        if r < p.repeats:
            for v in p.speed_variants:
                var = get_variant(v)
                sp = {"train_batch": None if var.preset_batch else p.train_batch, "infer_batch": p.infer_batch,
                      "warmup": p.warmup, "iters": p.iters}
                tasks.append(Task(f"speed:{v}:{r}", v, ["speed"], {"speed": sp}, r))
        if "peers" in extras and r < p.peer_repeats:
            for v in p.peers:
                tasks.append(Task(f"peer_speed:{v}:{r}", v, ["peer_speed"],
                                  {"peer_speed": {**peer, "infer_batch": p.infer_batch, "warmup": p.warmup,
                                                  "iters": p.iters}}, r))
        if "roofline" in extras and r < p.roofline_repeats:
            tasks.append(Task(f"roofline:{r}", "machine", ["roofline"],
                              {"roofline": {"sizes": list(p.roofline_sizes) or None}}, r))
        if light_arms and r < p.arm_repeats:
            tasks.append(Task(f"arms:shared:{r}", p.extras_variant, ["arms"], {"arms": {**arm, "arms": list(light_arms)}},
                              r))
    for name in isolated_arms:
        for r in range(p.arm_isolated_repeats):
            tasks.append(Task(f"arms:{name}:{r}", p.extras_variant, ["arms"],
                              {"arms": {**arm, "arms": [name], "emit": [name]}}, r))
    if "scaling" in extras:
        for r in range(p.scaling_repeats):
            for axis, values in p.scaling_axes:
                for value in values:
                    sp = {"axis": axis, "value": value, "batch_size": p.scaling_batch, "warmup": p.scaling_warmup,
                          "iters": p.scaling_iters}
                    tasks.append(Task(f"scaling:{axis}={value}:{r}", p.extras_variant, ["scaling"], {"scaling": sp}, r))
    for v in p.accuracy_variants:
        tasks.append(Task(f"accuracy:{v}", v, ["accuracy"],
                          {"accuracy": {"budget_s": p.accuracy_budget_s, "target_map50": p.accuracy_target_map50,
                                        "eval_every_s": min(p.accuracy_eval_every_s, p.accuracy_budget_s / 2)}}))
    return tasks


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


def run_task(task: Task, threads: int, device: str, timeout_s: float) -> dict:
    """Run one task in a fresh ``python -m bench.worker`` process; always returns an outcome dict."""
    var = get_variant(task.variant)
    spec = {"measurements": task.measurements, "variant": var.to_dict(), "params": task.params,
            "threads": threads, "device": device}
    with tempfile.TemporaryDirectory(prefix="ovd-bench-") as tmp:
        spec_path, out_path = Path(tmp, "spec.json"), Path(tmp, "out.json")
        spec_path.write_text(json.dumps(spec))
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-m", "bench.worker", str(spec_path), str(out_path)],
                                  env=child_env(threads), capture_output=True, text=True, timeout=timeout_s,
                                  cwd=Path(__file__).resolve().parent.parent)
            rc, stderr = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as err:
            rc, stderr = "timeout", (err.stderr or b"").decode(errors="replace") if isinstance(err.stderr, bytes) else (err.stderr or "")
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
    out["wall_seconds"] = seconds
    out["task"] = {"id": task.id, "variant": task.variant, "measurements": task.measurements, "repeat": task.repeat,
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
            if kind in ("scaling", "arms"):
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


def run_profile(profile: Profile, out_dir: str | Path, threads: int, device: str = "auto",
                resume: str | Path | None = None, command: str = "", environment: dict | None = None) -> Results:
    """Run every task of ``profile`` and write ``out_dir/results.json`` after each one."""
    out_dir = Path(out_dir)
    path = out_dir / "results.json"
    done: dict = {}
    if resume is not None:
        prev = Results.load(Path(resume) / "results.json")
        done = {k: v for k, v in prev.tasks.items() if v.get("status") == "ok"}
    results = Results(environment=environment or {}, profile={**profile.to_dict(), "threads": threads},
                      command=command,
                      variants={n: get_variant(n).to_dict() for n in profile.names()})
    results.tasks.update(done)
    tasks = plan(profile)
    t_start = time.perf_counter()
    for i, task in enumerate(tasks, 1):
        if task.id in done:
            log(f"[{i}/{len(tasks)}] {task.id}: already in {resume}, skipped")
            continue
        out = run_task(task, threads, device, profile.timeout_s)
        results.tasks[task.id] = out
        errors = [f"{m}: {o.get('error')}" for m, o in out.get("outcomes", {}).items() if o.get("status") != "ok"]
        log(f"[{i}/{len(tasks)}] {task.id}: {out['wall_seconds']:.1f} s "
            + ("ok" if not errors else "ERROR " + "; ".join(e[:200] for e in errors))
            + f" (elapsed {time.perf_counter() - t_start:.0f} s)")
        rebuild_rows(results)
        results.save(path)
    rebuild_rows(results)
    results.environment["suite_seconds"] = time.perf_counter() - t_start
    results.save(path)
    return results
