"""The accuracy section of REPORT.md: final seen/novel accuracy per trained variant, the
(training minutes -> val mAP50, R@1) curve, and its plot. Reads results only."""

from __future__ import annotations

from pathlib import Path

from .results import Results

FINAL_METRICS = (("val mAP50", "accuracy/val/mAP50"), ("val mAP", "accuracy/val/mAP"), ("val R@1", "accuracy/val/R@1"),
                 ("novel mAP50", "accuracy/novel/mAP50"), ("novel mAP", "accuracy/novel/mAP"),
                 ("novel R@1", "accuracy/novel/R@1"))


def _ok(res: Results, variant: str, metric: str):
    r = res.get(variant, metric)
    return r if r is not None and r.status == "ok" and r.value is not None else None


def _trained(res: Results) -> list[str]:
    return [v for v in res.variants if res.get(v, "accuracy/time_to_target_s") is not None]


def _curve(res: Results, variant: str) -> list[dict]:
    row = res.get(variant, "accuracy/time_to_target_s")
    return list((row.extra or {}).get("curve", [])) if row is not None else []


def final_table(res: Results) -> list[dict]:
    out = []
    for v in _trained(res):
        tt = res.get(v, "accuracy/time_to_target_s")
        extra = tt.extra or {}
        rec = {"variant": v, "budget (training s)": extra.get("budget_s"), "steps": extra.get("steps"),
               "samples": (_curve(res, v) or [{}])[-1].get("samples", "-")}
        for label, metric in FINAL_METRICS:
            r = _ok(res, v, metric)
            rec[label] = f"{r.value:.3f}" if r else "-"
        target = extra.get("target_map50")
        rec[f"time to val mAP50 >= {target}"] = (f"{tt.value:.0f} s" if tt.status == "ok" and tt.value is not None
                                                 else "not reached")
        out.append(rec)
    return out


def curve_table(res: Results) -> list[dict]:
    """One row per evaluation minute; a column pair per variant."""
    trained = _trained(res)
    by_minute: dict[float, dict] = {}
    for v in trained:
        for p in _curve(res, v):
            minute = round(p["seconds"] / 60.0, 1)
            rec = by_minute.setdefault(minute, {"training minutes": minute})
            rec[f"{v} mAP50 / R@1"] = f"{p.get('val/mAP50', float('nan')):.3f} / {p.get('val/R@1', float('nan')):.3f}"
    return [by_minute[k] for k in sorted(by_minute)]


def curve_plot(res: Results, out_dir: Path) -> str | None:
    trained = [v for v in _trained(res) if _curve(res, v)]
    if not trained:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for v in trained:
        pts = _curve(res, v)
        minutes = [p["seconds"] / 60 for p in pts]
        axes[0].plot(minutes, [p.get("val/mAP50") for p in pts], marker="o", label=v)
        axes[1].plot(minutes, [p.get("val/R@1") for p in pts], marker="o", label=v)
    for ax, name in zip(axes, ("val mAP50", "val R@1 (ANY-BOX)")):
        ax.set_xlabel("training minutes (evaluation time excluded)")
        ax.set_ylabel(name)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    name = "accuracy_curve.png"
    fig.savefig(out_dir / name, dpi=110)
    plt.close(fig)
    return name


def accuracy_section(res: Results, out_dir: str | Path) -> list[str]:
    from .report import _md

    if not _trained(res):
        return []
    parts = ["\n## Accuracy after a time-budgeted training run (built-in synthetic set)\n",
             "Each variant trains from scratch (random image backbone, frozen pretrained text encoder) for the "
             "stated budget of training seconds on this machine; evaluation time is excluded from the budget. "
             "`val` holds seen attribute/shape combinations, `novel` holds a colour, a shape and combinations "
             "never seen in training. mAP: COCO-style over phrases (each phrase of a caption is a class); "
             "R@1: Flickr30k Entities ANY-BOX Recall@1 (MDETR's protocol).\n\n",
             _md(final_table(res)),
             "\n### Curve (val split)\n", _md(curve_table(res))]
    png = curve_plot(res, Path(out_dir))
    if png:
        parts.append(f"\n![{png}]({png})\n")
    return parts
