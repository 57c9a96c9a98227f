"""Scaling curves of the extras variant (inference cost against batch, input size, prompt tokens,
queries): a table, one generated sentence per curve, and a log-log plot per axis."""

from __future__ import annotations

from pathlib import Path

from ..results import Results
from . import plots
from .format import extras_variant, fmt_iqr, md

CURVE_METRICS = (("fps", "throughput (images/s)", "images/s"), ("latency_ms", "latency per call", "ms"),
                 ("memory_total_mib", "peak memory", "MiB"))


def scaling_curves(res: Results) -> dict:
    """axis -> {"values": [...], metric -> [Row or None per value], "extra": [point extras]}"""
    v = extras_variant(res)
    pts: dict = {}
    for row in res.rows:
        if row.variant != v or not row.metric.startswith("scaling/") or row.status != "ok":
            continue
        _, axis, value, metric = row.metric.split("/", 3)
        pts.setdefault(axis, {}).setdefault(int(value), {})[metric] = row
    out = {}
    for axis, by_value in pts.items():
        values = sorted(by_value)
        curve = {"values": values, "extra": [next(iter(by_value[x].values())).extra for x in values]}
        for m, _, _ in CURVE_METRICS:
            curve[m] = [by_value[x].get(m) for x in values]
        out[axis] = curve
    return out


def scaling_sentences(res: Results) -> dict:
    """axis -> [one sentence per curve (throughput, latency, memory)]."""
    from ..measure.scaling import AXIS_LABELS, describe_curve

    out = {}
    for axis, c in scaling_curves(res).items():
        lines = []
        for m, label, unit in CURVE_METRICS:
            pairs = [(x, r.value) for x, r in zip(c["values"], c[m]) if r is not None]
            if len(pairs) >= 2:
                sentence = describe_curve([p[0] for p in pairs], [p[1] for p in pairs], AXIS_LABELS.get(axis, axis),
                                          label, unit)
                lines.append(sentence[0].upper() + sentence[1:])
        out[axis] = lines
    return out


def scaling_table(res: Results) -> list[dict]:
    out = []
    for axis, c in scaling_curves(res).items():
        for i, x in enumerate(c["values"]):
            e = c["extra"][i]
            out.append({"axis": axis, "value": x, "batch": e.get("batch_size"), "px": e.get("image_size"),
                        "window": e.get("window_size"), "tokens": e.get("prompt_tokens"),
                        "queries": e.get("num_queries"), "images/s": fmt_iqr(c["fps"][i]),
                        "latency p50 (ms)": fmt_iqr(c["latency_ms"][i]),
                        "peak memory (MiB)": fmt_iqr(c["memory_total_mib"][i])})
    return out


def scaling_plots(res: Results, out_dir: Path) -> list[str]:
    from ..measure.scaling import AXIS_LABELS

    v = extras_variant(res)
    return [plots.scaling_plot(axis, c, CURVE_METRICS, AXIS_LABELS.get(axis, axis),
                               f"{v}: cost vs {AXIS_LABELS.get(axis, axis)} (log-log; bars: IQR)", Path(out_dir))
            for axis, c in scaling_curves(res).items()]


def section(res: Results, out_dir: Path) -> list[str]:
    curves = scaling_curves(res)
    if not curves:
        return []
    scaling_plots(res, out_dir)
    sent = scaling_sentences(res)
    parts = [f"\n## Scaling curves (`{extras_variant(res)}`, inference)\n",
             "One fresh process per point (first forward under the memory probe, then warm-up and timed "
             "calls); every other axis at its base value (batch "
             f"{res.profile.get('scaling_batch', 1)}, 224 px, the fixed prompt, the preset's queries). "
             "Input sizes use a Swin window that divides every stage's grid (column `window`).\n"]
    for axis in curves:
        parts.append(f"\n**{axis}**: " + " ".join(sent.get(axis, [])) + f"\n\n![scaling_{axis}](scaling_{axis}.png)\n")
    parts.append(md(scaling_table(res)))
    return parts
