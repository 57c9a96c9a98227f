"""Report sections for the issue-5 extras, from a results file only: peers side by side, the roofline,
scaling curves (PNG + one generated sentence per curve) and the ranked optimization arms.

Every function returns plain rows (lists of dicts) or text; :func:`sections` assembles the markdown.
"""

from __future__ import annotations

from pathlib import Path

from .results import Results, Row

#: Targets of issue 5 (checked in the text, never asserted).
TARGET_FPS_VS_GDINO = 10.0
TARGET_PARAMS_VS_GDINO = 1 / 3
TARGET_ROOFLINE_FRACTION = 0.60
TARGET_ARM_GAIN = 1.3
GDINO = "peer:grounding-dino-t"


def _r(res: Results, variant: str, metric: str) -> Row | None:
    from .report import _row

    return _row(res, variant, metric)


def _fmt(x, digits: int = 3) -> str:
    from .report import fmt

    return fmt(x, digits)


def _iqr(row: Row | None, scale: float = 1.0) -> str:
    if row is None:
        return "-"
    s = _fmt(row.value * scale)
    if row.stats and row.stats.n > 1:
        s += f" [{_fmt(row.stats.q1 * scale)}, {_fmt(row.stats.q3 * scale)}]"
    return s


def _group(res: Results, name: str) -> str:
    return (res.variants.get(name) or {}).get("group", "main")


def _infer_batch(res: Results) -> int:
    return int(res.profile.get("infer_batch", 8))


def _extras_variant(res: Results) -> str:
    return res.profile.get("extras_variant", "optimized")


# -- peers ---------------------------------------------------------------------------------------

def peers_table(res: Results) -> list[dict]:
    """Ours (the before/after pair) and the peers, same metrics, same method."""
    N = _infer_batch(res)
    pair = list(res.profile.get("pair", ("baseline", "optimized")))
    names = [n for n in pair if n in res.variants] + [n for n in res.variants if _group(res, n) == "peer"]
    out = []
    for n in names:
        total = _r(res, n, "params/total")
        fps1, fpsn = _r(res, n, "infer/fps_b1"), _r(res, n, f"infer/fps_b{N}")
        if total is None and fps1 is None:
            continue
        p50, p90 = _r(res, n, "infer/latency_p50_ms_b1"), _r(res, n, "infer/latency_p90_ms_b1")

        def comp(metric: str, name: str = n) -> str:
            row = _r(res, name, metric)
            return f"{row.value / 1e6:.1f}" if row else "-"

        flops = _r(res, n, "flops/per_image")
        mem = _r(res, n, "memory/infer_total")
        out.append({
            "model": n, "kind": "peer, random weights" if _group(res, n) == "peer" else "ours",
            "params (M)": f"{total.value / 1e6:.1f}" if total else "-",
            "image backbone (M)": comp("params/image_backbone"), "text encoder (M)": comp("params/text_encoder"),
            "GFLOPs/img": f"{flops.value / 1e9:.2f}" if flops else "-",
            "FPS b1": _iqr(fps1), f"FPS b{N}": _iqr(fpsn),
            "latency b1 p50 / p90 (ms)": f"{_fmt(p50.value)} / {_fmt(p90.value)}" if p50 and p90 else "-",
            f"peak infer memory b{N} (MiB)": _fmt(mem.value) if mem else "-",
        })
    return out


def peers_summary(res: Results) -> list[str]:
    """One line per peer: the optimized model's FPS and parameter ratios against it (with targets vs
    Grounding DINO-T)."""
    from .report import ratio_interval

    N = _infer_batch(res)
    after = res.profile.get("pair", ("baseline", "optimized"))[1]
    lines = []
    for peer in [n for n in res.variants if _group(res, n) == "peer"]:
        a, b = _r(res, after, f"infer/fps_b{N}"), _r(res, peer, f"infer/fps_b{N}")
        pa, pb = _r(res, after, "params/total"), _r(res, peer, "params/total")
        parts = []
        if a and b:
            r, lo, hi = ratio_interval(a, b)
            s = f"FPS (batch {N}) {_fmt(r)}x [{_fmt(lo)}, {_fmt(hi)}]"
            if peer == GDINO:
                s += f" (target >= {TARGET_FPS_VS_GDINO:g}x: {'holds' if r >= TARGET_FPS_VS_GDINO else 'does not hold'})"
            parts.append(s)
        if pa and pb:
            r = pa.value / pb.value
            s = f"parameters {r:.2f}x ({pa.value / 1e6:.1f}M vs {pb.value / 1e6:.1f}M)"
            if peer == GDINO:
                s += f" (target <= 1/3: {'holds' if r <= TARGET_PARAMS_VS_GDINO else 'does not hold'})"
            parts.append(s)
        if parts:
            lines.append(f"- `{after}` vs `{peer}`: " + "; ".join(parts) + ".")
    return lines


# -- roofline ------------------------------------------------------------------------------------

def peaks_table(res: Results) -> list[dict]:
    out = []
    for row in res.rows:
        if row.variant == "machine" and row.metric.startswith("roofline/peak_") and row.status == "ok" \
                and "native" in row.extra:  # the per-backend rows are shown inside their dtype's row
            dt = row.metric.split("_", 1)[1]
            backends = []
            for be in (row.extra.get("by_backend") or {}):
                b = _r(res, "machine", f"roofline/peak_{dt}_{be}")
                if b:
                    backends.append(f"{be} {_iqr(b, 1e-9)}")
            out.append({"dtype": dt, "matmul peak (GFLOP/s)": _iqr(row, 1e-9),
                        "set by": row.extra.get("backend") or "torch", "per GEMM backend (GFLOP/s)": "; ".join(backends),
                        "best size n": row.extra.get("best_size"), "native": row.extra.get("native"),
                        "threads": row.extra.get("threads"), "processes": row.stats.n if row.stats else 1})
    return out


def _peak(res: Results, dtype: str) -> Row | None:
    return _r(res, "machine", f"roofline/peak_{dtype}")


def roofline_points(res: Results) -> list[dict]:
    """(label, batch, precision, FLOPs/img, FPS row) for every measured configuration with a FLOP count:
    the variants at the profile's inference batch, the arms and the scaling batch points."""
    from .measure.arms import ARMS

    N = _infer_batch(res)
    pts = []
    for n in res.variants:
        if _group(res, n) == "machine":
            continue
        f, fps = _r(res, n, "flops/per_image"), _r(res, n, f"infer/fps_b{N}")
        if f and fps:
            pts.append({"label": n, "batch": N, "precision": fps.extra.get("precision", "fp32"),
                        "flops": f.value, "fps": fps})
    v = _extras_variant(res)
    f = _r(res, v, "flops/per_image")
    text_f = _r(res, v, "flops/text_encoder")
    B = int(res.profile.get("arm_batch", 8))
    if f:
        for name, arm in ARMS.items():
            fps = _r(res, v, f"arm/{name}/fps_b{B}")
            if fps is None:
                continue
            flops = f.value - (text_f.value if ("text_cache" in arm.features and text_f) else 0.0)
            prec = "bf16" if "bf16" in arm.features else "fp16" if "fp16" in arm.features else \
                "int8 (fp32-equivalent FLOPs)" if "int8" in arm.features else "fp32"
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
    torch32 = _r(res, "machine", "roofline/peak_fp32_torch")
    out = []
    for p in roofline_points(res):
        fps = p["fps"]
        achieved = p["flops"] * fps.value
        rec = {"configuration": p["label"], "batch": p["batch"], "precision": p["precision"],
               "GFLOPs/img": f"{p['flops'] / 1e9:.2f}", "images/s": _iqr(fps),
               "achieved GFLOP/s": _fmt(achieved / 1e9)}
        if p32:
            frac = achieved / p32.value
            rng = ""
            if fps.stats and fps.stats.n > 1:
                rng = f" [{100 * p['flops'] * fps.stats.q1 / p32.value:.0f}, {100 * p['flops'] * fps.stats.q3 / p32.value:.0f}]"
            rec["% of fp32 peak"] = f"{100 * frac:.0f}{rng}"
        else:
            rec["% of fp32 peak"] = "no peak measured"
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
    v = _extras_variant(res)
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
         f"(target >= {100 * TARGET_ROOFLINE_FRACTION:.0f}%: {'holds' if frac >= TARGET_ROOFLINE_FRACTION else 'does not hold'}).")
    torch32 = _r(res, "machine", "roofline/peak_fp32_torch")
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


# -- scaling -------------------------------------------------------------------------------------

CURVE_METRICS = (("fps", "throughput (images/s)", "images/s"), ("latency_ms", "latency per call", "ms"),
                 ("memory_total_mib", "peak memory", "MiB"))


def scaling_curves(res: Results) -> dict:
    """axis -> {"values": [...], metric -> [Row or None per value], "extra": [point extras]}"""
    v = _extras_variant(res)
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
    from .measure.scaling import AXIS_LABELS, describe_curve

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
                        "queries": e.get("num_queries"), "images/s": _iqr(c["fps"][i]),
                        "latency p50 (ms)": _iqr(c["latency_ms"][i]),
                        "peak memory (MiB)": _iqr(c["memory_total_mib"][i])})
    return out


def scaling_plots(res: Results, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .measure.scaling import AXIS_LABELS

    files = []
    for axis, c in scaling_curves(res).items():
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
        for ax, (m, label, unit) in zip(axes, CURVE_METRICS):
            xs = [x for x, r in zip(c["values"], c[m]) if r is not None]
            rows = [r for r in c[m] if r is not None]
            if not rows:
                ax.set_visible(False)
                continue
            ys = [r.value for r in rows]
            lo = [r.value - (r.stats.q1 if r.stats else r.value) for r in rows]
            hi = [(r.stats.q3 if r.stats else r.value) - r.value for r in rows]
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(AXIS_LABELS.get(axis, axis))
            ax.set_ylabel(f"{label} ({unit})" if unit not in label else label)
            ax.grid(True, which="both", alpha=0.3)
        fig.suptitle(f"{_extras_variant(res)}: cost vs {AXIS_LABELS.get(axis, axis)} (log-log; bars: IQR)")
        fig.tight_layout()
        name = f"scaling_{axis}.png"
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        files.append(name)
    return files


# -- arms ----------------------------------------------------------------------------------------

def arms_ranking(res: Results) -> list[dict]:
    """All arms (beyond-seed arms on the extras variant, and the seed's one-factor ladder rungs) ranked
    by inference gain (median over processes, [q1, q3]); failed or skipped arms last."""
    from .measure.arms import ARMS, REFERENCE
    from .report import ratio_interval

    v = _extras_variant(res)
    B = int(res.profile.get("arm_batch", 8))
    N = _infer_batch(res)
    ranked, tail = [], []
    for name, arm in ARMS.items():
        if name == REFERENCE:
            continue
        g = res.get(v, f"arm/{name}/gain")
        if g is None:
            err = res.get(v, f"arms:{name}/*")  # the whole isolated process failed
            if err is None:
                continue
            g = err
        rec = {"arm": name, "kind": f"beyond seed ({v}, batch {B})", "what": arm.description}
        if g.status != "ok" or g.value is None:
            rec.update({"gain": "-", "status": f"{g.status}: {(g.error or '')[:160]}"})
            tail.append((rec, 0.0))
            continue
        fps = _r(res, v, f"arm/{name}/fps_b{B}")
        db, dp = _r(res, v, f"arm/{name}/boxes_max_abs_matched"), _r(res, v, f"arm/{name}/probs_max_abs_matched")
        ok = _r(res, v, f"arm/{name}/parity_ok")
        setup = _r(res, v, f"arm/{name}/setup_s")
        agree = _r(res, v, f"arm/{name}/agreement")
        rec.update({
            "gain": _iqr(g) + "x", "images/s": _iqr(fps),
            "parity max abs diff boxes / probs": (f"{db.value:.2g} / {dp.value:.2g}" if db and dp else "-")
            + (f" ({100 * agree.value:.0f}% of queries within)" if agree else ""),
            "tolerance": f"{g.extra.get('tolerance'):g}" if g.extra.get("tolerance") is not None else "-",
            "status": ("ok" if ok and ok.value == 1.0 else "OUTSIDE TOLERANCE") if ok else "ok",
            "set-up (s)": _fmt(setup.value) if setup else "-"})
        ranked.append((rec, g.value))
    for n, spec in res.variants.items():
        if spec.get("group") != "ladder" or spec.get("accuracy_only"):
            continue
        a, b = _r(res, n, f"infer/fps_b{N}"), _r(res, spec.get("reference") or "", f"infer/fps_b{N}")
        if a is None or b is None:
            continue
        r, lo, hi = ratio_interval(a, b)
        rec = {"arm": n, "kind": f"seed factor (ladder vs {spec['reference']}, batch {N})",
               "what": spec.get("description", ""), "gain": f"{_fmt(r)} [{_fmt(lo)}, {_fmt(hi)}]x",
               "images/s": _iqr(a), "parity max abs diff boxes / probs": "n/a (other model)", "tolerance": "-",
               "status": "ok", "set-up (s)": "-"}
        ranked.append((rec, r))
    ranked.sort(key=lambda t: -t[1])
    cols = ["rank", "arm", "kind", "gain", "images/s", "parity max abs diff boxes / probs", "tolerance", "status",
            "set-up (s)", "what"]
    out = []
    for i, (rec, _) in enumerate(ranked + tail, 1):
        rec["rank"] = i if rec.get("gain", "-") != "-" else "-"
        out.append({c: rec.get(c, "-") for c in cols})
    return out


def best_arm_sentence(res: Results) -> str:
    from .measure.arms import ARMS, REFERENCE

    v = _extras_variant(res)
    best = None
    for name in ARMS:
        if name == REFERENCE:
            continue
        g, ok = res.get(v, f"arm/{name}/gain"), _r(res, v, f"arm/{name}/parity_ok")
        if g is None or g.status != "ok" or g.value is None or not ok or ok.value != 1.0:
            continue
        if best is None or g.value > best[1].value:
            best = (name, g)
    if best is None:
        return "No arm beyond the seed was measured within tolerance in this run."
    name, g = best
    q = f" [IQR {_fmt(g.stats.q1)}, {_fmt(g.stats.q3)}, n={g.stats.n}]" if g.stats and g.stats.n > 1 else ""
    verdict = "holds" if g.value >= TARGET_ARM_GAIN else "does not hold"
    return (f"Best arm beyond the seed with outputs within tolerance: `{name}` ({ARMS[name].description}), "
            f"{_fmt(g.value)}x{q} the throughput of fp32 eager `{v}` (target >= {TARGET_ARM_GAIN:g}x: {verdict}).")


# -- assembly ------------------------------------------------------------------------------------

def sections(res: Results, out_dir: Path) -> tuple[list[str], list[str]]:
    """Markdown parts and PNG names for whatever extras the results hold."""
    from .report import _md

    parts: list[str] = []
    pngs: list[str] = []
    N = _infer_batch(res)
    peers = peers_table(res)
    if any(r["kind"] != "ours" for r in peers):
        size = res.profile.get("peer_image_size", 224)
        parts += [
            "\n## Peers side by side (same method, same input)\n",
            f"Peers are Hugging Face models built offline from their default configs with **random weights**: speed, "
            f"memory, parameters and FLOPs do not depend on trained weights. Input {size}x{size} pixel_values and "
            "the same prompt as ours (tokenized by our BERT-uncased tokenizer, so the same token count; one text "
            "query per image for OWL-ViT, whose vision tower is built at this size instead of its native 768 px). "
            "Forward pass only, no post-processing; each number from fresh processes (median [q1, q3]). Peak "
            "memory as for ours (CPU: RSS growth of a fresh process over its state before the model was built). "
            "Grounding DINO's deformable attention samples with `grid_sampler_2d`, which the FLOP counter does "
            "not count (its GFLOPs are a lower bound).\n",
            _md(peers), "\n" + "\n".join(peers_summary(res)) + "\n"]
    peaks = peaks_table(res)
    if peaks:
        parts += ["\n## Roofline: achieved FLOP/s against the measured matmul peak\n",
                  "Peak: square `torch.matmul` at several sizes, best size's median (`torch.utils.benchmark`), "
                  "in this run, at the run's thread count; reduced precisions only where the device has them "
                  "natively. Achieved = FLOPs per image (2*MACs, forward) x images/s.\n",
                  _md(peaks), _md(roofline_table(res)), "\n" + roofline_sentence(res) + "\n"]
    curves = scaling_curves(res)
    if curves:
        pngs_s = scaling_plots(res, out_dir)
        pngs += pngs_s
        sent = scaling_sentences(res)
        parts += [f"\n## Scaling curves (`{_extras_variant(res)}`, inference)\n",
                  "One fresh process per point (first forward under the memory probe, then warm-up and timed "
                  "calls); every other axis at its base value (batch "
                  f"{res.profile.get('scaling_batch', 1)}, 224 px, the fixed prompt, the preset's queries). "
                  "Input sizes use a Swin window that divides every stage's grid (column `window`).\n"]
        for axis in curves:
            parts.append(f"\n**{axis}**: " + " ".join(sent.get(axis, [])) + f"\n\n![scaling_{axis}](scaling_{axis}.png)\n")
        parts.append(_md(scaling_table(res)))
    ranking = arms_ranking(res)
    if ranking:
        v = _extras_variant(res)
        parts += ["\n## Optimization arms, ranked by inference gain\n",
                  f"Beyond-seed arms run on `{v}` at batch {res.profile.get('arm_batch', 8)}: gain = fp32 eager "
                  "(`torch.no_grad`) median time / arm median time, paired and interleaved in the same process, "
                  "median [q1, q3] over processes. Parity: max |diff| of boxes and sigmoid(logits) against fp32 "
                  "eager after one-to-one query matching; tolerance "
                  "1e-3 for fp32 arms, 5e-2 for bf16/fp16/int8; in brackets, the share of queries reproduced "
                  "within it (on a random-weight model the language-guided top-k proposal scores are near-ties, "
                  "so reduced precision swaps some proposals for others: such an arm is reported outside "
                  "tolerance, not excused). Seed factors are the ladder's FPS ratios "
                  f"(batch {N}, one factor changed from the baseline, a different model: no parity).\n",
                  _md(ranking), "\n" + best_arm_sentence(res) + "\n"]
    return parts, pngs
