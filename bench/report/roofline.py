"""Roofline: achieved FLOP/s of every measured configuration against this run's measured matmul
peak (rows of the ``machine`` label), and one sentence on how far the optimized model is from it."""

from __future__ import annotations

from ..results import Results, Row
from .format import arm_batch, extras_variant, fmt, fmt_iqr, group, infer_batch, md, ok_row
from .judge import target_verdict

TARGET_ROOFLINE_FRACTION = 0.60
MACHINE = "machine"  # the label of the roofline rows (not a model variant)


def _fraction_verdict(point: dict, peak: Row) -> str:
    """The target on the fraction's interval: FPS quartiles over the peak's quartiles."""
    fps = point["fps"]
    f = point["flops"]
    q = lambda r: (r.stats.q1, r.stats.q3) if r.stats and r.stats.n > 1 else (r.value, r.value)  # noqa: E731
    (f1, f3), (p1, p3) = q(fps), q(peak)
    return target_verdict(f * f1 / p3, f * f3 / p1, TARGET_ROOFLINE_FRACTION)


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
            prec = "bf16" if "bf16" in arm.features else "fp16" if "fp16" in arm.features else \
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
            if fps.stats and fps.stats.n > 1:
                rng = f" [{100 * p['flops'] * fps.stats.q1 / p32.value:.0f}, {100 * p['flops'] * fps.stats.q3 / p32.value:.0f}]"
            rec["% of fp32 peak"] = f"{100 * frac:.0f}{rng}"
        else:
            rec["% of fp32 peak"] = "no peak measured"
        # against the peak of the arm's own dtype (int8 arms: the int8 GEMM peak in OP/s; their Linear
        # layers do the int8 work, the rest stays fp32, so this share is a lower bound of their efficiency)
        own_dtype = str(p["precision"]).split(" ")[0]
        own = _peak(res, own_dtype) if own_dtype != "fp32" else p32
        rec["% of own-dtype peak"] = (f"{100 * achieved / own.value:.0f} ({own_dtype})" if own else
                                      f"no {own_dtype} peak measured")
        if torch32 and p32 and torch32.value != p32.value:
            rec["% of torch fp32 GEMM peak"] = f"{100 * achieved / torch32.value:.0f}"
        own = p["precision"] if p["precision"] in ("bf16", "fp16") else None
        pk = _peak(res, own) if own else None
        rec["% of own-dtype peak"] = f"{100 * achieved / pk.value:.0f}" if pk else "-"
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


def section(res: Results) -> list[str]:
    peaks = peaks_table(res)
    if not peaks:
        return []
    return ["\n## Roofline: achieved FLOP/s against the measured matmul peak\n",
            "Peak: square `torch.matmul` at several sizes, best size's median (`torch.utils.benchmark`), "
            "in this run, at the run's thread count; reduced precisions only where the device has them "
            "natively. Achieved = FLOPs per image (2*MACs, forward) x images/s.\n",
            md(peaks), md(roofline_table(res)), "\n" + roofline_sentence(res) + "\n"]
