"""Accuracy runs as data (lower layer, shared by the seed table and the accuracy section).

A training run is one ``accuracy:{variant}:{seed}`` task (older files: ``accuracy:{variant}``); its
time-to-target row carries the evaluation curve in ``extra["curve"]``: points
{"train_s" (or "seconds"): training seconds, evaluation excluded; "samples": training samples seen;
"val/mAP50", "val/R@1", ...: fractions}. Rows in ``Results.rows`` are aggregated over seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..results import Results, Stats

TTT = "accuracy/time_to_target_s"


@dataclass
class Run:
    """One training run: ``time_to_target_s`` None when missed within ``budget_s``."""

    variant: str
    seed: str
    budget_s: float | None
    time_to_target_s: float | None
    target: float | None
    curve: list = field(default_factory=list)
    final: dict = field(default_factory=dict)  # metric (e.g. "val/mAP50") -> value


#: the time-to-target row's error for a model scored as it is (``bench.measure.accuracy``; files before the
#: ``trained`` flag of 2026-12-03 only have this)
NOT_TRAINED_PREFIX = "not trained by the suite"


def untrained(extra: dict | None, error: str | None) -> bool:
    """Whether a time-to-target row (its ``extra`` and ``error``, from a Row or a task outcome's row dict) belongs
    to a factory or hub model whose ``predict()`` the suite scored as it is, without training: not a training
    run."""
    return (extra or {}).get("trained") is False or str(error or "").startswith(NOT_TRAINED_PREFIX)


def scored_as_is(res: Results | None) -> dict[str, str]:
    """variant -> why it was not trained (the time-to-target row's error), for the models the suite scored
    without training (a factory's ``predict()``); their accuracy rows are R@k on the val split."""
    if res is None:
        return {}
    return {r.variant: r.error for r in res.rows
            if r.metric == TTT and untrained(r.extra, r.error)}


def point_time(p: dict) -> float:
    """Training seconds of a curve point (``train_s``; older files ``seconds``)."""
    return float(p.get("train_s", p.get("seconds", math.nan)))


def _seed_of(task_id: str, task: dict) -> str:
    params = ((task.get("task") or {}).get("params") or {}).get("accuracy") or {}
    if "seed" in params:
        return str(params["seed"])
    parts = task_id.split(":")
    return parts[2] if len(parts) > 2 else "0"


def runs(res: Results | None) -> dict[str, list[Run]]:
    """variant -> its training runs (one per seed), from the tasks; falls back to the aggregated
    time-to-target row (one run) for results without task records."""
    out: dict[str, list[Run]] = {}
    if res is None:
        return out
    for tid, task in res.tasks.items():
        if not tid.startswith("accuracy:") or not isinstance(task, dict):
            continue
        outcome = (task.get("outcomes") or {}).get("accuracy") or {}
        if outcome.get("status") != "ok":
            continue
        variant = (task.get("task") or {}).get("variant") or tid.split(":")[1]
        rows = {r["metric"]: r for r in outcome.get("rows", [])}
        tt = rows.get(TTT)
        if tt is None or untrained(tt.get("extra"), tt.get("error")):
            continue
        extra = tt.get("extra") or {}
        final = {m.split("/", 1)[1]: r.get("value") for m, r in rows.items() if m != TTT and r.get("value") is not None}
        out.setdefault(variant, []).append(Run(variant, _seed_of(tid, task), extra.get("budget_s"), tt.get("value"),
                                               extra.get("target_map50"), list(extra.get("curve") or []), final))
    for row in res.rows:
        if row.metric == TTT and row.variant not in out and not untrained(row.extra, row.error):
            extra = row.extra or {}
            final = {r.metric.split("/", 1)[1]: r.value for r in res.rows
                     if r.variant == row.variant and r.metric.startswith("accuracy/") and r.metric != TTT
                     and r.value is not None}
            out[row.variant] = [Run(row.variant, "0", extra.get("budget_s"), row.value if row.status == "ok" else None,
                                    extra.get("target_map50"), list(extra.get("curve") or []), final)]
    return out


def interp(curve: list, x: float, key: str = "val/mAP50", by: str = "samples") -> float | None:
    """``key`` linearly interpolated at ``x`` along ``by`` ("samples" or "train_s"); None outside the
    curve's range (no extrapolation)."""
    import numpy as np

    pts = [((point_time(p) if by == "train_s" else float(p[by])), p.get(key)) for p in curve
           if p.get(key) is not None and (by == "train_s" or p.get(by) is not None)]
    pts = sorted(pts)
    if not pts or x < pts[0][0] - 1e-9 or x > pts[-1][0] + 1e-9:
        return None
    return float(np.interp(x, [p[0] for p in pts], [p[1] for p in pts]))


def common_reach(runs_by_variant: dict[str, list[Run]], variants: list[str], by: str = "samples") -> float | None:
    """The largest x (samples or training seconds) that every run of ``variants`` reached."""
    ends = []
    for v in variants:
        for r in runs_by_variant.get(v, []):
            xs = [(point_time(p) if by == "train_s" else p.get(by)) for p in r.curve]
            xs = [x for x in xs if x is not None]
            if not xs:
                return None
            ends.append(max(xs))
    return min(ends) if ends else None


def stats_at(runs_: list[Run], x: float, key: str = "val/mAP50", by: str = "samples") -> Stats | None:
    """Median/quartiles over seeds of ``key`` interpolated at ``x``."""
    vals = [interp(r.curve, x, key, by) for r in runs_]
    return Stats.of([v for v in vals if v is not None]) if all(v is not None for v in vals) else None


def median_curve(runs_: list[Run], key: str = "val/mAP50", by: str = "samples", points: int = 40) -> tuple:
    """(xs, median, q1, q3) over seeds on a common grid up to the shortest run's end (numpy)."""
    import numpy as np

    end = common_reach({"v": runs_}, ["v"], by)
    if end is None or end <= 0:
        return [], [], [], []
    xs = np.linspace(0, end, points)[1:]
    start = max(min((point_time(p) if by == "train_s" else p[by]) for p in r.curve) for r in runs_)
    xs = xs[xs >= start]
    grid = np.array([[interp(r.curve, float(x), key, by) for x in xs] for r in runs_], dtype=float)
    return list(xs), list(np.median(grid, 0)), list(np.quantile(grid, 0.25, 0)), list(np.quantile(grid, 0.75, 0))
