"""Regression gate: compare NEW results against a REFERENCE.

- Parameter and FLOP counts must match exactly (unless ``allow_size_change``).
- Speed and memory are compared as *within-run ratios*: each variant against its reference
  variant (optimized vs baseline among them), so a reference made on one machine gates another.
  Speed ratios may not fall by more than ``speed_tolerance`` (relative), memory ratios may not rise
  by more than ``memory_tolerance``.
- Accuracy (val/mAP50, val/R@1) may not drop by more than ``accuracy_margin`` (absolute).
- A metric that was measured in REFERENCE but errors in NEW fails. Improvements never fail.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .results import Results

HIGHER_BETTER_SPEED = ("train/samples_per_s", "infer/fps_b1", "infer/fps_b{n}")
LOWER_BETTER_MEMORY = ("memory/train_total", "memory/infer_total")
ACCURACY = ("accuracy/val/mAP50", "accuracy/val/R@1")
EXACT_PREFIXES = ("params/", "flops/per_image")


@dataclass
class Check:
    variant: str
    metric: str
    kind: str
    reference: float | None
    new: float | None
    limit: str
    passed: bool
    note: str = ""


@dataclass
class Comparison:
    checks: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list:
        return [c for c in self.checks if not c.passed]

    def table(self, only_failures: bool = False) -> str:
        import pandas as pd

        rows = [c for c in self.checks if not only_failures or not c.passed]
        if not rows:
            return "(no checks)"
        df = pd.DataFrame([{"result": "ok" if c.passed else "REGRESSION", "variant": c.variant, "metric": c.metric,
                            "kind": c.kind, "reference": _fmt(c.reference), "new": _fmt(c.new), "limit": c.limit,
                            "note": c.note} for c in rows])
        return df.to_string(index=False)


def _fmt(x) -> str:
    if x is None:
        return "-"
    return f"{x:.6g}" if isinstance(x, float) else str(x)


def _ratio(res: Results, variant: str, metric: str) -> float | None:
    ref_name = (res.variants.get(variant) or {}).get("reference")
    if not ref_name:
        return None
    a, b = res.value(variant, metric), res.value(ref_name, metric)
    if a is None or b is None or b == 0:
        return None
    return a / b


def _speed_metrics(res: Results) -> list[str]:
    return sorted({r.metric for r in res.rows if r.metric.startswith("infer/fps_") or r.metric == "train/samples_per_s"})


def compare(reference: Results, new: Results, speed_tolerance: float = 0.4, memory_tolerance: float = 0.3,
            accuracy_margin: float = 0.02, allow_size_change: bool = False) -> Comparison:
    cmp = Comparison()
    ref_rows = {r.key: r for r in reference.rows}
    new_rows = {r.key: r for r in new.rows}
    for key, rr in ref_rows.items():
        variant, metric = key
        nr = new_rows.get(key)
        if rr.status != "ok":
            continue
        if nr is None:
            cmp.checks.append(Check(variant, metric, "presence", rr.value, None, "present", False,
                                    "measured in the reference, missing in NEW"))
            continue
        if nr.status != "ok" and not (nr.status == "not-measured" and metric.startswith("accuracy/")):
            cmp.checks.append(Check(variant, metric, "status", rr.value, None, "ok", False,
                                    f"{nr.status}: {(nr.error or '')[:120]}"))
            continue
        if metric.startswith(EXACT_PREFIXES):
            same = rr.value == nr.value
            cmp.checks.append(Check(variant, metric, "exact", rr.value, nr.value, "equal", same or allow_size_change,
                                    "" if same else ("size change allowed" if allow_size_change else "count changed")))
        elif metric in ACCURACY:
            ok = nr.value >= rr.value - accuracy_margin
            cmp.checks.append(Check(variant, metric, "accuracy", rr.value, nr.value, f">= ref - {accuracy_margin}",
                                    ok))
    for metric in _speed_metrics(reference) + list(LOWER_BETTER_MEMORY):
        higher = not metric.startswith("memory/")
        for variant in reference.variants:
            r_ref = _ratio(reference, variant, metric)
            if r_ref is None:
                continue
            r_new = _ratio(new, variant, metric)
            ref_name = reference.variants[variant].get("reference")
            label = f"{metric} ratio vs {ref_name}"
            if r_new is None:
                cmp.checks.append(Check(variant, label, "ratio", r_ref, None, "present", False, "ratio missing in NEW"))
                continue
            if higher:
                ok = r_new >= r_ref * (1 - speed_tolerance)
                limit = f">= {r_ref * (1 - speed_tolerance):.3g}"
            else:
                ok = r_new <= r_ref * (1 + memory_tolerance)
                limit = f"<= {r_ref * (1 + memory_tolerance):.3g}"
            cmp.checks.append(Check(variant, label, "ratio", r_ref, r_new, limit, ok))
    return cmp
