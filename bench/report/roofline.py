"""Roofline: achieved FLOP/s of every measured configuration against this run's measured matmul
peak (rows of the ``machine`` label), and one sentence on how far the optimized model is from it."""

from __future__ import annotations

from ..results import Results, Row
from .format import arm_batch, extras_variant, fmt, fmt_iqr, group, infer_batch, md, numerics, ok_row
from .judge import target_verdict

TARGET_ROOFLINE_FRACTION = 0.60
MACHINE = "machine"  # the label of the roofline rows (not a model variant)


def _quartiles(r: Row) -> tuple:
    """(q1, median, q3) of a row over its processes; the value thrice with one process."""
    return (r.stats.q1, r.value, r.stats.q3) if r.stats and r.stats.n > 1 else (r.value, r.value, r.value)


def _fraction_bounds(flops: float, fps_low: float, fps_high: float, peak: Row) -> tuple:
    """(low, high) fraction of ``peak`` reached at ``flops`` per image: the low images/s over the peak's q3, the
    high over its q1."""
    p1, _, p3 = _quartiles(peak)
    return flops * fps_low / p3, flops * fps_high / p1


def _fraction_verdict(point: dict, peak: Row) -> str:
    """The target on the fraction's interval: FPS quartiles over the peak's quartiles."""
    f1, _, f3 = _quartiles(point["fps"])
    return target_verdict(*_fraction_bounds(point["flops"], f1, f3, peak), TARGET_ROOFLINE_FRACTION)


def peaks_table(res: Results) -> list[dict]:
    out = []
    for row in res.rows:
        if row.variant == MACHINE and row.metric.startswith("roofline/peak_") and row.status == "ok" \
                and "native" in row.extra:  # the per-backend rows are shown inside their dtype's row
            dt = row.metric.split("_", 1)[1]
            backends = []
            for be in (row.extra.get("by_backend") or {}):
                b = ok_row(res, MACHINE, f"roofline/peak_{dt}_{be}")
                if b:
                    backends.append(f"{be} {fmt_iqr(b, 1e-9)}")
            out.append({"dtype": dt, "matmul peak (G(FL)OP/s)": fmt_iqr(row, 1e-9),
                        "set by": row.extra.get("backend") or "torch", "per GEMM backend (GFLOP/s)": "; ".join(backends),
                        "best size n": row.extra.get("best_size"), "native": row.extra.get("native"),
                        "threads": row.extra.get("threads"), "processes": row.stats.n if row.stats else 1})
    return out


def _peak(res: Results, dtype: str) -> Row | None:
    return ok_row(res, MACHINE, f"roofline/peak_{dtype}")


def roofline_points(res: Results) -> list[dict]:
    """(label, batch, precision, FLOPs/img, FPS row) for every measured configuration with a FLOP count:
    the variants at the profile's inference batch, the arms and the scaling batch points."""
    from ..measure.arms import ARMS

    N = infer_batch(res)
    pts = []
    for n in res.variants:
        if group(res, n) == MACHINE:
            continue
        f, fps = ok_row(res, n, "flops/per_image"), ok_row(res, n, f"infer/fps_b{N}")
        if f and fps:
            pts.append({"label": n, "batch": N, "precision": fps.extra.get("precision", "fp32"),
                        "flops": f.value, "fps": fps})
    v = extras_variant(res)
    f = ok_row(res, v, "flops/per_image")
    text_f = ok_row(res, v, "flops/text_encoder")
    B = arm_batch(res)
    if f:
        for name, arm in ARMS.items():
            fps = ok_row(res, v, f"arm/{name}/fps_b{B}")
            if fps is None:
                continue
            flops = f.value - (text_f.value if ("text_cache" in arm.features and text_f) else 0.0)
            int8 = bool({"int8", "int8_except_text", "int8_static"} & set(arm.features))
            prec = "bf16" if "bf16" in arm.features else "bf16 (image encoder; the rest fp32)" \
                if "bf16_image" in arm.features else "fp16" if "fp16" in arm.features else \
                "int8 (fp32-equivalent FLOPs)" if int8 else "fp32"
            pts.append({"label": f"{v} @ arm {name}", "batch": B, "precision": prec, "flops": flops, "fps": fps})
        for row in res.rows:
            if row.variant == v and row.metric.startswith("scaling/batch/") and row.metric.endswith("/fps") \
                    and row.status == "ok":
                b = int(row.metric.split("/")[2])
                pts.append({"label": f"{v} @ scaling batch {b}", "batch": b,
                            "precision": row.extra.get("precision", "fp32"), "flops": f.value, "fps": row})
    return pts


def roofline_table(res: Results) -> list[dict]:
    p32 = _peak(res, "fp32")
    torch32 = ok_row(res, MACHINE, "roofline/peak_fp32_torch")
    out = []
    for p in roofline_points(res):
        fps = p["fps"]
        achieved = p["flops"] * fps.value
        rec = {"configuration": p["label"], "batch": p["batch"], "precision": p["precision"],
               "GFLOPs/img": f"{p['flops'] / 1e9:.2f}", "images/s": fmt_iqr(fps),
               "achieved GFLOP/s": fmt(achieved / 1e9)}
        if p32:
            frac = achieved / p32.value
            rng = ""
            if (fps.stats and fps.stats.n > 1) or (p32.stats and p32.stats.n > 1):
                f1, _, f3 = _quartiles(fps)
                lo, hi = _fraction_bounds(p["flops"], f1, f3, p32)  # the interval the verdicts read
                rng = f" [{100 * lo:.0f}, {100 * hi:.0f}]"
            rec["% of fp32 peak"] = f"{100 * frac:.0f}{rng}"
        else:
            rec["% of fp32 peak"] = "no peak measured"
        # against the peak of the arm's own dtype (int8 arms: the int8 GEMM peak in OP/s; their Linear
        # layers do the int8 work, the rest stays fp32, so this share is a lower bound of their efficiency);
        # fp32 rows: the column before
        own_dtype = str(p["precision"]).split(" ")[0]
        own = _peak(res, own_dtype) if own_dtype != "fp32" else None
        rec["% of own-dtype peak"] = ("-" if own_dtype == "fp32" else f"{100 * achieved / own.value:.0f} ({own_dtype})"
                                      if own else f"no {own_dtype} peak measured")
        if torch32 and p32 and torch32.value != p32.value:
            rec["% of torch fp32 GEMM peak"] = f"{100 * achieved / torch32.value:.0f}"
        out.append(rec)
    return out


def roofline_sentence(res: Results) -> str:
    """How far the optimized model (fp32 eager at the arms' batch, else the scaling/variant point) is
    from the measured fp32 matmul peak, and the best arm's fraction."""
    p32 = _peak(res, "fp32")
    if p32 is None:
        return "The fp32 matmul peak was not measured in this run."
    v = extras_variant(res)
    pts = roofline_points(res)
    ref = next((p for p in pts if p["label"] == f"{v} @ arm eager"), None)
    ref = ref or next((p for p in pts if p["label"] == f"{v} @ scaling batch 8"), None)
    ref = ref or next((p for p in pts if p["label"] == v), None)
    if ref is None:
        return f"The fp32 matmul peak is {p32.value / 1e9:.0f} GFLOP/s; no FLOP-counted throughput of `{v}` was measured."
    achieved = ref["flops"] * ref["fps"].value
    frac = achieved / p32.value
    s = (f"`{v}` ({ref['label'].split('@')[-1].strip()}, batch {ref['batch']}, {ref['precision']}) does "
         f"{achieved / 1e9:.0f} GFLOP/s of counted work, {100 * frac:.0f}% of this machine's "
         f"measured fp32 matmul peak ({p32.value / 1e9:.0f} GFLOP/s via {p32.extra.get('backend') or 'torch'}, "
         f"n={p32.extra.get('best_size')}, {p32.extra.get('threads')} threads): {1 / frac:.1f}x below the roof "
         f"(target >= {100 * TARGET_ROOFLINE_FRACTION:.0f}%: {_fraction_verdict(ref, p32)}).")
    torch32 = ok_row(res, MACHINE, "roofline/peak_fp32_torch")
    if torch32 and torch32.value != p32.value:
        s += (f" Against torch's own fp32 GEMM peak ({torch32.value / 1e9:.0f} GFLOP/s, the most an fp32 torch "
              f"model can get from its matmuls here) it is {100 * achieved / torch32.value:.0f}%.")
    arms = [p for p in pts if "@ arm" in p["label"] and p is not ref]
    if arms:
        best = max(arms, key=lambda p: p["flops"] * p["fps"].value)
        s += (f" The highest among the arms is `{best['label'].split('arm ')[-1]}` at "
              f"{100 * best['flops'] * best['fps'].value / p32.value:.0f}% ({best['precision']}).")
    s += (" Counted FLOPs are matmuls, convolutions and attention only; time spent in norms, softmax, GELU,"
          " window partitioning/copies and small matmuls is what keeps a whole model below a large square matmul.")
    return s


def exact_arm_sentence(res: Results, rejected=frozenset()) -> str:
    """The fastest fp32-exact arm (fp32 arithmetic, outputs within fp32 parity, not in ``rejected``: the arms a
    trained checkpoint rejected) against the fp32 peak, read two ways (issue 11's 60% target):

    - its own processes' images/s (the roofline table's row), and
    - the fp32 eager reference's images/s (its row in the table) x the arm's paired gain.

    The gain pairs the arm with eager in the same process; images/s of different processes were measured at
    different times, and a shared VM changes speed between them (AVX2 EPYC, fa9757d: eager ran at 5.3-5.9
    images/s inside ONNX Runtime's processes and 5.2-7.2 in the shared ones), so the two readings can disagree.
    Intervals: images/s quartiles (for the second, eager's times the gain's) over the peak's quartiles.
    "" when no such arm or no fp32 peak was measured."""
    from ..measure.arms import ARMS, REFERENCE

    p32 = _peak(res, "fp32")
    v = extras_variant(res)
    points = {p["label"]: p for p in roofline_points(res)}
    eager = points.get(f"{v} @ arm {REFERENCE}")
    best = None
    for name, arm in ARMS.items():
        g, parity = ok_row(res, v, f"arm/{name}/gain"), ok_row(res, v, f"arm/{name}/parity_ok")
        if name == REFERENCE or name in rejected or numerics(arm.features) != "fp32" or g is None \
                or not parity or parity.value != 1.0 or f"{v} @ arm {name}" not in points:
            continue
        if best is None or g.value > best[1].value:
            best = (name, g)
    if p32 is None or eager is None or best is None:
        return ""
    name, g = best
    pt = points[f"{v} @ arm {name}"]
    pct = lambda fps: 100 * pt["flops"] * fps / p32.value  # noqa: E731
    f1, fm, f3 = _quartiles(pt["fps"])
    (e1, em, e3), (g1, gm, g3) = _quartiles(eager["fps"]), _quartiles(g)
    own_lo, own_hi = _fraction_bounds(pt["flops"], f1, f3, p32)
    paired_lo, paired_hi = _fraction_bounds(pt["flops"], e1 * g1, e3 * g3, p32)
    own = target_verdict(own_lo, own_hi, TARGET_ROOFLINE_FRACTION)
    paired = target_verdict(paired_lo, paired_hi, TARGET_ROOFLINE_FRACTION)
    s = (f"The fastest accepted fp32-exact arm (outputs within fp32 parity, not rejected on a trained checkpoint), `{name}` ({fmt_iqr(g)}x fp32 eager, "
         f"paired in its processes), reaches {pct(fm):.0f}% [{100 * own_lo:.0f}, {100 * own_hi:.0f}] of the fp32 "
         f"peak by its own processes' images/s and {pct(em * gm):.0f}% [{100 * paired_lo:.0f}, "
         f"{100 * paired_hi:.0f}] as fp32 eager's images/s x its gain (target >= {100 * TARGET_ROOFLINE_FRACTION:.0f}%: "
         + (f"{own} by either reading)." if own == paired else f"{own} by its own, {paired} by the paired reading)."))
    fps_s, gain_s = pt["fps"].samples, g.samples
    if len(fps_s) == len(gain_s) > 0 and all(x > 0 for x in gain_s):  # one sample per process, in process order
        import numpy as np

        inside = float(np.median([f / x for f, x in zip(fps_s, gain_s)]))
        s += (f" The two differ by the machine's speed between processes: fp32 eager ran at {fmt(inside)} images/s "
              f"(median) inside `{name}`'s processes and {fmt(em)} in its own row's.")
    return s


def section(res: Results, rejected=frozenset()) -> list[str]:
    """The roofline section; ``rejected``: arms a trained checkpoint rejected (never named as accepted here)."""
    peaks = peaks_table(res)
    if not peaks:
        return []
    return ["\n## Roofline: achieved FLOP/s against the measured matmul peak\n",
            "Peak: square `torch.matmul` at several sizes, best size's median (`torch.utils.benchmark`), "
            "in this run, at the run's thread count; reduced precisions only where the device has them "
            "natively. Achieved = FLOPs per image (2*MACs, forward) x images/s; a share's brackets run from the "
            "images/s q1 over the peak's q3 to the images/s q3 over the peak's q1 (the interval its verdicts read).\n",
            md(peaks), md(roofline_table(res)), "\n" + " ".join(x for x in (roofline_sentence(res),
                                                                             exact_arm_sentence(res, rejected)) if x)
            + "\n"]
