"""REPORT.md and PNG plots from a results file only (no measuring here).

Ratios: ratio of medians; the interval in brackets is the IQR interval [q1_a / q3_b, q3_a / q1_b]
(the most pessimistic and optimistic pairing of the two variants' quartiles across repeats).
"""

from __future__ import annotations

import math
from pathlib import Path

from .results import Results, Row

# row -> (metric, claim text, claimed after/before ratio, higher_is_better, unit label, scale)
SEED_ROWS = [
    ("Model Size", "params/trainable", "~50M -> ~28M params", 28 / 50, False, "M params (trainable)", 1e-6),
    ("Memory", "memory/train_total", "~6 GB -> ~3 GB VRAM", 0.5, False, "MiB peak, training step", 1.0),
    ("Training Speed", "train/samples_per_s", "50 -> 100+ samples/s", 2.0, True, "samples/s", 1.0),
    ("Inference Speed", "infer/fps_b{infer}", "30 -> 60+ FPS", 2.0, True, "images/s", 1.0),
    ("Training Time", "accuracy/time_to_target_s", "4-5 h -> 2-3 h", 2.5 / 4.5, False, "s to target mAP50", 1.0),
    ("mAP", "accuracy/val/mAP50", "no loss", None, True, "val mAP50", 1.0),
]


def _row(res: Results, variant: str, metric: str) -> Row | None:
    r = res.get(variant, metric)
    return r if r is not None and r.status == "ok" and r.value is not None else None


def ratio_interval(a: Row, b: Row) -> tuple[float, float, float]:
    """(ratio of medians, low, high) with the IQR interval; exact counts give low = high = ratio."""
    r = a.value / b.value if b.value else math.nan
    if a.stats and b.stats and a.stats.n > 1 and b.stats.n > 1 and b.stats.q1 and b.stats.q3:
        return r, a.stats.q1 / b.stats.q3, a.stats.q3 / b.stats.q1
    return r, r, r


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def fmt_value(row: Row | None, scale: float = 1.0) -> str:
    if row is None:
        return "not measured"
    s = fmt(row.value * scale)
    if row.stats and row.stats.n > 1:
        s += f" (IQR {fmt(row.stats.iqr * scale, 2)}, n={row.stats.n})"
    return s


def verdict(ratio: float | None, claim: float | None, higher: bool, lo: float | None = None,
            hi: float | None = None) -> str:
    if ratio is None or math.isnan(ratio):
        return "not measured on this machine"
    if claim is None:
        return "-"
    meets = ratio >= claim if higher else ratio <= claim
    better = ratio > 1 if higher else ratio < 1
    if meets:
        return "holds"
    return "partly" if better else "does not hold"


def infer_batch(res: Results) -> int:
    return int(res.profile.get("infer_batch", 8))


def seed_table(res: Results) -> list[dict]:
    before, after = res.profile.get("pair", ("baseline", "optimized"))
    rows = []
    for name, metric, claim, claim_ratio, higher, unit, scale in SEED_ROWS:
        metric = metric.format(infer=infer_batch(res))
        b_name, a_name = before, after
        if metric.startswith("accuracy/") and res.get(after, metric) is None and res.get(f"{after}-tiny", metric):
            # accuracy runs train the tiny pair on the CPU: say so in the row rather than "not measured"
            b_name, a_name = f"{before}-tiny", f"{after}-tiny"
            unit = f"{unit} (tiny presets)"
        a, b = _row(res, a_name, metric), _row(res, b_name, metric)
        rec = {"Row": name, "Unit": unit, "Before": fmt_value(b, scale), "After": fmt_value(a, scale),
               "Seed claim": claim}
        if metric == "accuracy/time_to_target_s" and (a is None or b is None):
            rec.update(_time_to_target_bound(res, b_name, a_name, a, b, claim_ratio))
        elif a is None or b is None:
            rec.update(Change="-", Verdict="not measured on this machine")
        elif metric == "accuracy/val/mAP50":
            diff = (a.value - b.value) * 100
            rec.update(Change=f"{diff:+.1f} points",
                       Verdict="holds" if diff >= -1 else ("partly" if diff >= -3 else "does not hold"))
        else:
            r, lo, hi = ratio_interval(a, b)
            rec.update(Change=f"{fmt(r)}x" + (f" [{fmt(lo)}, {fmt(hi)}]" if lo != hi else ""),
                       Verdict=verdict(r, claim_ratio, higher, lo, hi))
        rows.append(rec)
    return rows


def _time_to_target_bound(res: Results, before: str, after: str, a: Row | None, b: Row | None,
                          claim_ratio: float) -> dict:
    """A run that trained but missed the target gives a bound, not "not measured": its time to
    target is more than its budget, so the ratio is bounded by the other run's time / that budget."""
    def missed(variant: str) -> float | None:
        r = res.get(variant, "accuracy/time_to_target_s")
        return float(r.extra.get("budget_s")) if r is not None and r.value is None and r.extra else None

    mb, ma = missed(before), missed(after)
    rec: dict = {}
    if mb is not None:
        rec["Before"] = f"not reached in {mb:.0f} s"
    if ma is not None:
        rec["After"] = f"not reached in {ma:.0f} s"
    if a is not None and mb is not None:
        bound = a.value / mb
        rec.update(Change=f"< {fmt(bound)}x", Verdict="holds" if bound <= claim_ratio else "partly")
    elif b is not None and ma is not None:
        rec.update(Change=f"> {fmt(ma / b.value)}x", Verdict="does not hold")
    elif mb is not None and ma is not None:
        rec.update(Change="-", Verdict="neither reached the target")
    else:
        rec.update(Change="-", Verdict="not measured on this machine")
    return rec


ABLATION_METRICS = [
    ("FPS", "infer/fps_b{infer}", True),
    ("train samples/s", "train/samples_per_s", True),
    ("train memory", "memory/train_total", False),
    ("FLOPs/img", "flops/per_image", False),
    ("trainable params", "params/trainable", False),
    ("val mAP50", "accuracy/val/mAP50", True),
]


def ablation_table(res: Results) -> list[dict]:
    out = []
    for name, spec in res.variants.items():
        ref = spec.get("reference")
        if not ref:
            continue
        rec = {"variant": name, "vs": ref, "factor": spec.get("description", "")}
        any_value = False
        for label, metric, _higher in ABLATION_METRICS:
            metric = metric.format(infer=infer_batch(res))
            a, b = _row(res, name, metric), _row(res, ref, metric)
            if a is None or b is None:
                rec[label] = "-"
                continue
            any_value = True
            if metric.startswith("accuracy/"):
                rec[label] = f"{(a.value - b.value) * 100:+.1f} pts"
            else:
                r, lo, hi = ratio_interval(a, b)
                rec[label] = f"{fmt(r)}x" + (f" [{fmt(lo)}, {fmt(hi)}]" if lo != hi else "")
        if any_value:
            out.append(rec)
    return out


BREAKDOWN = ("image_encoder", "text_encoder", "fusion", "box_head", "pre_post_processing")


def breakdown_table(res: Results) -> list[dict]:
    out = []
    for name in res.variants:
        rec = {"variant": name}
        vals = {k: _row(res, name, f"breakdown/{k}_ms") for k in BREAKDOWN}
        if not any(vals.values()):
            continue
        total = sum(v.value for v in vals.values() if v)
        for k, v in vals.items():
            rec[k] = f"{v.value:.1f} ({100 * v.value / total:.0f}%)" if v and total else "-"
        rec["sum (ms)"] = f"{total:.1f}"
        out.append(rec)
    return out


def _md(rows: list[dict]) -> str:
    if not rows:
        return "\n_nothing measured_\n"
    cols = list(rows[0])
    lines = ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "")).replace("|", "/") for c in cols) + " |")
    return "\n".join(lines) + "\n"


def plots(res: Results, out_dir: Path) -> list[str]:
    """Write PNGs (bars with IQR error bars; breakdown stacked bars); returns file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for fname, metric, label in (("fps.png", f"infer/fps_b{infer_batch(res)}", f"inference images/s (batch {infer_batch(res)})"),
                                 ("train_speed.png", "train/samples_per_s", "training samples/s"),
                                 ("memory.png", "memory/train_total", "peak training memory (MiB)")):
        names, vals, lo, hi = [], [], [], []
        for name in res.variants:
            r = _row(res, name, metric)
            if r is None:
                continue
            names.append(name)
            vals.append(r.value)
            lo.append(r.value - (r.stats.q1 if r.stats else r.value))
            hi.append((r.stats.q3 if r.stats else r.value) - r.value)
        if not names:
            continue
        fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(names) + 2), 4))
        ax.bar(range(len(names)), vals, yerr=[lo, hi], capsize=3, color="tab:blue")
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel(label)
        ax.set_title(f"{label}; error bars: IQR over repeats")
        fig.tight_layout()
        fig.savefig(out_dir / fname, dpi=110)
        plt.close(fig)
        files.append(fname)
    rows = [(n, [(_row(res, n, f"breakdown/{k}_ms") or None) for k in BREAKDOWN]) for n in res.variants]
    rows = [(n, v) for n, v in rows if any(v)]
    if rows:
        fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(rows) + 2), 4))
        bottom = [0.0] * len(rows)
        for i, k in enumerate(BREAKDOWN):
            vals = [(v[i].value if v[i] else 0.0) for _, v in rows]
            ax.bar(range(len(rows)), vals, bottom=bottom, label=k)
            bottom = [b + x for b, x in zip(bottom, vals)]
        ax.set_xticks(range(len(rows)), [n for n, _ in rows], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel(f"ms per call, batch {infer_batch(res)}")
        ax.set_title("inference time per module")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / "breakdown.png", dpi=110)
        plt.close(fig)
        files.append("breakdown.png")
    return files


def params_table(res: Results) -> list[dict]:
    out = []
    for name in res.variants:
        if _row(res, name, "params/total") is None or (res.variants[name] or {}).get("group") == "peer":
            continue  # peers have their own table
        rec = {"variant": name}
        for m in ("image_backbone", "image_encoder", "text_encoder", "fusion", "box_head", "total", "trainable"):
            r = _row(res, name, f"params/{m}")
            rec[m] = f"{r.value / 1e6:.2f}" if r else "-"
        f = _row(res, name, "flops/per_image")
        rec["GFLOPs/img"] = f"{f.value / 1e9:.2f}" if f else "-"
        out.append(rec)
    return out


def errors_table(res: Results) -> list[dict]:
    return [{"variant": r.variant, "metric": r.metric, "status": r.status, "error": (r.error or "")[:200]}
            for r in res.rows if r.status != "ok"]


def render(res: Results, out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env, prof = res.environment, res.profile
    before, after = prof.get("pair", ("baseline", "optimized"))
    pngs = plots(res, out_dir)
    tb = prof.get("train_batch")
    parts = [
        f"# ovd-bench report: {env.get('machine_kind', '?')}, profile `{prof.get('name', '?')}`\n",
        f"Before = `{before}`, After = `{after}`. Change = After/Before, ratio of medians with the IQR interval "
        "[q1_after/q3_before, q3_after/q1_before] over repeat processes; counts are exact. Verdict compares "
        "the measured ratio with the seed's (holds: meets it; partly: right direction, short of it; does not "
        "hold: no gain).\n",
        _md(seed_table(res)),
        ("" if before == "baseline" else f"\nThis profile compares the tiny presets ({before} vs {after}): the "
         "ratios are a proxy for the seed's full-size claims, not a test of them.\n"),
        f"\nTraining speed and memory at batch {tb} for both (same batch size), precision per preset "
        f"(on the CPU `auto` = fp32). Memory on the CPU is peak RSS growth of a fresh process over its state "
        "before the model was built (weights + gradients + optimizer state + activations), not VRAM. "
        "Model Size counts trainable parameters; the frozen text encoder is the same in both and listed "
        "below. Inference speed is the forward pass without post-processing at batch "
        f"{infer_batch(res)}.\n",
        "\n## Parameters (millions) and FLOPs (forward, per image, FLOPs = 2*MACs, SDPA attention counted)\n",
        _md(params_table(res)),
        "\n## Ablation: each factor against its reference variant\n",
        "Ladder rows change one factor from the baseline; leave-one-out rows remove one factor from the "
        "optimized model (ratios < 1 in FPS then mean the factor helped).\n\n",
        _md(ablation_table(res)),
        f"\n## Where inference time goes (ms per call, batch {infer_batch(res)}, each module timed alone)\n",
        _md(breakdown_table(res)),
    ]
    lat = []
    for name in res.variants:
        rec = {"variant": name}
        for suffix in ("b1", "b1_post", f"b{infer_batch(res)}", f"b{infer_batch(res)}_post"):
            fps, p50, p90 = (_row(res, name, f"infer/{m}_{suffix}") for m in ("fps", "latency_p50_ms", "latency_p90_ms"))
            rec[f"{suffix} FPS / p50 / p90 ms"] = (f"{fmt(fps.value)} / {fmt(p50.value)} / {fmt(p90.value)}"
                                                   if fps and p50 and p90 else "-")
        if any(v != "-" for k, v in rec.items() if k != "variant"):
            lat.append(rec)
    parts += ["\n## Inference FPS and latency (`_post` = `model.predict`, with pre/post-processing)\n", _md(lat)]
    from .report_accuracy import accuracy_section

    parts += accuracy_section(res, out_dir)
    from .report_extras import sections

    extra_parts, _extra_pngs = sections(res, out_dir)  # its plots are linked inside its sections
    parts += extra_parts
    if pngs:
        parts.append("\n## Plots\n")
        parts += [f"![{p}]({p})\n" for p in pngs]
    errs = errors_table(res)
    if errs:
        parts += ["\n## Not measured or failed\n", _md(errs)]
    envkeys = ("cpu_model", "cpu_count", "device", "threads", "torch", "cuda", "python", "platform",
               "git_commit", "git_dirty", "date_utc", "loadavg", "suite_seconds", "global_overrides")
    parts += ["\n## Machine and command\n", _md([{"key": k, "value": env.get(k)} for k in envkeys]),
              f"\nCommand: `{res.command}`\n",
              f"\nProfile: {prof.get('description', '')}; repeats {prof.get('repeats')} processes per speed "
              f"measurement (each: {prof.get('warmup')} warm-up + {prof.get('iters')} timed calls, median), "
              f"threads {prof.get('threads')}.\n"]
    path = out_dir / "REPORT.md"
    path.write_text("".join(parts))
    return path
