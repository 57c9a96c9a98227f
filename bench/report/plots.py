"""PNG plots of the report (matplotlib, Agg). Every function takes results or prepared data and an
output folder, writes one PNG and returns its file name (None when there is nothing to plot).

Bars: one panel per model size (full-size, tiny presets, peers), each with its own linear axis, so
a tiny model's bar never turns a full-size one into a sliver; error bars are the IQR over repeat
processes; where the seed claims a ratio, a dashed line marks the claimed level for the optimized
bar (its reference variant's median x the claimed ratio).
"""

from __future__ import annotations

from pathlib import Path

from ..results import Results, Row
from .format import group, infer_batch, ok_row

SIZE_ORDER = ("full size (peers in orange)", "tiny presets")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def size_group(res: Results, name: str) -> str:
    """The panel of a variant: full size (peers included: they are full-size models) or tiny presets."""
    if group(res, name) == "peer":
        return SIZE_ORDER[0]
    preset = str((res.variants.get(name) or {}).get("preset") or name)
    return SIZE_ORDER[1] if "tiny" in preset or "tiny" in name else SIZE_ORDER[0]


def _err(rows: list[Row]) -> list[list[float]]:
    lo = [r.value - (r.stats.q1 if r.stats and r.stats.n > 1 else r.value) for r in rows]
    hi = [(r.stats.q3 if r.stats and r.stats.n > 1 else r.value) - r.value for r in rows]
    return [lo, hi]


def panels(res: Results, metric: str) -> dict[str, list[tuple[str, Row]]]:
    """Panel title -> [(variant, row)] of the measured rows of ``metric``, in SIZE_ORDER."""
    by_size: dict[str, list[tuple[str, Row]]] = {}
    for v in res.variants:
        r = ok_row(res, v, metric)
        if r is not None and group(res, v) != "machine":
            by_size.setdefault(size_group(res, v), []).append((v, r))
    return {s: by_size[s] for s in SIZE_ORDER if s in by_size}


def claim_levels(res: Results, items: list[tuple[str, Row]], claim: float) -> dict[str, float]:
    """Variant -> the level the seed claims for it (its reference's median x ``claim``), for the
    main-group variants whose reference is in the same panel."""
    values = dict((n, r.value) for n, r in items)
    out = {}
    for n, _ in items:
        spec = res.variants.get(n) or {}
        ref = spec.get("reference")
        if spec.get("group", "main") == "main" and ref in values:
            out[n] = values[ref] * claim
    return out


def bar_panels(res: Results, metric: str, ylabel: str, out_dir: Path, name: str,
               claim: float | None = None) -> str | None:
    """Bars of ``metric`` per variant, one panel per model size; ``claim``: the seed's claimed
    after/before ratio, drawn for every variant whose reference is in the same panel (main group)."""
    by_size = panels(res, metric)
    sizes = list(by_size)
    if not sizes:
        return None
    plt = _plt()
    widths = [max(2.2, 0.45 * len(by_size[s]) + 1.2) for s in sizes]
    fig, axes = plt.subplots(1, len(sizes), figsize=(max(7.0, sum(widths) + 0.5), 4.4), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    claim_drawn = False
    for ax, size in zip(axes[0], sizes):
        items = by_size[size]
        names, rows = [n for n, _ in items], [r for _, r in items]
        xs = range(len(items))
        colors = ["tab:orange" if group(res, n) == "peer" else "tab:blue" for n in names]
        ax.bar(xs, [r.value for r in rows], yerr=_err(rows), capsize=3, color=colors)
        ax.set_xticks(list(xs), names, rotation=60, ha="right", fontsize=7)
        ax.set_title(size, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        if claim is not None:
            for n, level in claim_levels(res, items, claim).items():
                i = names.index(n)
                ax.hlines(level, i - 0.45, i + 0.45, colors="tab:red", linestyles="--",
                          label=None if claim_drawn else f"seed claim: {claim:g}x its reference")
                claim_drawn = True
                top = max(ax.get_ylim()[1], level * 1.08)
                ax.set_ylim(0, top)
    axes[0][0].set_ylabel(ylabel)
    if claim_drawn:
        fig.legend(loc="lower left", fontsize=7)
    fig.suptitle(f"{ylabel}\nbars: IQR over repeat processes; one axis per model size", fontsize=9)
    fig.tight_layout(rect=(0, 0.04 if claim_drawn else 0, 1, 1))
    fig.savefig(out_dir / name, dpi=110)
    plt.close(fig)
    return name


def bar_plots(res: Results, out_dir: Path, claims: dict) -> list[str]:
    """fps.png, train_speed.png, memory.png. ``claims``: metric -> claimed ratio (or None)."""
    n = infer_batch(res)
    specs = ((f"infer/fps_b{n}", f"inference images/s (batch {n})", "fps.png"),
             ("train/samples_per_s", "training samples/s (step on a fixed batch)", "train_speed.png"),
             ("memory/train_total", "peak training memory (MiB)", "memory.png"))
    files = []
    for metric, label, fname in specs:
        f = bar_panels(res, metric, label, out_dir, fname, claims.get(metric))
        if f:
            files.append(f)
    return files


def breakdown_plot(res: Results, out_dir: Path, modules: tuple) -> str | None:
    """Stacked bars of ms per module per variant, one panel per model size."""
    rows = [(v, [ok_row(res, v, f"breakdown/{k}_ms") for k in modules]) for v in res.variants]
    rows = [(v, r) for v, r in rows if any(r)]
    if not rows:
        return None
    by_size: dict[str, list] = {}
    for v, r in rows:
        by_size.setdefault(size_group(res, v), []).append((v, r))
    sizes = [s for s in SIZE_ORDER if s in by_size]
    plt = _plt()
    widths = [max(2.5, 0.45 * len(by_size[s]) + 1.2) for s in sizes]
    fig, axes = plt.subplots(1, len(sizes), figsize=(sum(widths) + 2, 4.2), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    for ax, size in zip(axes[0], sizes):
        items = by_size[size]
        bottom = [0.0] * len(items)
        for i, k in enumerate(modules):
            vals = [(r[i].value if r[i] else 0.0) for _, r in items]
            ax.bar(range(len(items)), vals, bottom=bottom, label=k)
            bottom = [b + x for b, x in zip(bottom, vals)]
        ax.set_xticks(range(len(items)), [v for v, _ in items], rotation=60, ha="right", fontsize=7)
        ax.set_title(size.split(" (")[0], fontsize=9)  # no bar colours to explain here
    axes[0][0].set_ylabel(f"ms per call, batch {infer_batch(res)}")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle("inference time per module (each module timed alone)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "breakdown.png", dpi=110)
    plt.close(fig)
    return "breakdown.png"


def accuracy_curves(runs_by_variant: dict, out_dir: Path, target: float | None = None,
                    name: str = "accuracy_curve.png") -> str | None:
    """val mAP50 against training minutes and against training samples seen: one thin line per
    seed, the median over seeds thick. ``runs_by_variant``: variant -> [accuracy_data.Run]."""
    from .accuracy_data import median_curve, point_time

    runs_by_variant = {v: [r for r in rs if r.curve] for v, rs in runs_by_variant.items()}
    runs_by_variant = {v: rs for v, rs in runs_by_variant.items() if rs}
    if not runs_by_variant:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (v, rs) in enumerate(runs_by_variant.items()):
        c = colors[i % len(colors)]
        for by, ax, scale in (("train_s", axes[0], 1 / 60), ("samples", axes[1], 1.0)):
            if by == "samples" and not all(p.get("samples") is not None for r in rs for p in r.curve):
                continue
            for r in rs:
                xs = [(point_time(p) if by == "train_s" else p["samples"]) * scale for p in r.curve]
                ax.plot(xs, [p.get("val/mAP50") for p in r.curve], color=c, alpha=0.35 if len(rs) > 1 else 1,
                        lw=0.8 if len(rs) > 1 else 1.5, marker="o" if len(rs) == 1 else None, ms=3,
                        label=v if len(rs) == 1 else None)
            if len(rs) > 1:
                gx, med, _, _ = median_curve(rs, by=by)
                ax.plot([x * scale for x in gx], med, color=c, lw=2.2, label=f"{v} (median of {len(rs)} seeds)")
    axes[0].set_xlabel("training minutes (evaluation excluded)")
    axes[1].set_xlabel("training samples seen")
    for ax in axes:
        ax.set_ylabel("val mAP50")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        if target is not None:
            ax.axhline(target, color="grey", ls=":", lw=1, label=f"target {target:g}")
        ax.legend(fontsize=7)
    fig.suptitle("accuracy during training: thin lines = seeds, thick = median over seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / name, dpi=110)
    plt.close(fig)
    return name


def scaling_plot(axis: str, curve: dict, metrics: tuple, x_label: str, title: str, out_dir: Path) -> str:
    """Log-log cost curves for one scaling axis: ``curve`` = {"values": [...], metric: [Row|None]},
    ``metrics`` = ((metric, label, unit), ...). Error bars: IQR."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.4))
    for ax, (m, label, unit) in zip(axes, metrics):
        pts = [(x, r) for x, r in zip(curve["values"], curve[m]) if r is not None]
        if not pts:
            ax.set_visible(False)
            continue
        rows = [r for _, r in pts]
        ax.errorbar([x for x, _ in pts], [r.value for r in rows], yerr=_err(rows), marker="o", capsize=3)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(x_label)
        ax.set_ylabel(f"{label} ({unit})" if unit not in label else label)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    name = f"scaling_{axis}.png"
    fig.savefig(out_dir / name, dpi=110)
    plt.close(fig)
    return name
