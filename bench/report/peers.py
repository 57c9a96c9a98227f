"""Peers side by side (same method, same input) and the peer targets (against Grounding DINO-T:
>= 10x its FPS, <= 1/3 of its parameters), each target checked at every batch measured with its
interval verdict."""

from __future__ import annotations

from ..results import Results
from .format import fmt, fmt_iqr, group, infer_batch, md, ok_row
from .judge import NOT_MEASURED, fmt_change, ratio_of, target_verdict

TARGET_FPS_VS_GDINO = 10.0
TARGET_PARAMS_VS_GDINO = 1 / 3
GDINO = "peer:grounding-dino-t"


def peers(res: Results) -> list[str]:
    return [n for n in res.variants if group(res, n) == "peer"]


def _after(res: Results) -> str:
    return res.profile.get("pair", ("baseline", "optimized"))[1]


def peers_table(res: Results) -> list[dict]:
    """Ours (the before/after pair) and the peers, same metrics, same method."""
    N = infer_batch(res)
    pair = list(res.profile.get("pair", ("baseline", "optimized")))
    names = [n for n in pair if n in res.variants] + [n for n in res.variants if group(res, n) == "peer"]
    out = []
    for n in names:
        total = ok_row(res, n, "params/total")
        fps1, fpsn = ok_row(res, n, "infer/fps_b1"), ok_row(res, n, f"infer/fps_b{N}")
        if total is None and fps1 is None:
            continue
        p50, p90 = ok_row(res, n, "infer/latency_p50_ms_b1"), ok_row(res, n, "infer/latency_p90_ms_b1")

        def comp(metric: str, name: str = n) -> str:
            row = ok_row(res, name, metric)
            return f"{row.value / 1e6:.1f}" if row else "-"

        flops = ok_row(res, n, "flops/per_image")
        mem = ok_row(res, n, "memory/infer_total")
        out.append({
            "model": n, "kind": "peer, random weights" if group(res, n) == "peer" else "ours",
            "params (M)": f"{total.value / 1e6:.1f}" if total else "-",
            "image backbone (M)": comp("params/image_backbone"), "text encoder (M)": comp("params/text_encoder"),
            "GFLOPs/img": f"{flops.value / 1e9:.2f}" if flops else "-",
            "FPS b1": fmt_iqr(fps1), f"FPS b{N}": fmt_iqr(fpsn),
            "latency b1 p50 / p90 (ms)": f"{fmt(p50.value)} / {fmt(p90.value)}" if p50 and p90 else "-",
            f"peak infer memory b{N} (MiB)": fmt(mem.value) if mem else "-",
        })
    return out


def _batches(res: Results) -> list[int]:
    n = infer_batch(res)
    return [1, n] if n != 1 else [1]


def peer_targets(res: Results) -> list[dict]:
    """Every peer target at every batch measured: ours/peer ratio [IQR interval] and its verdict
    (FPS >= 10x and total parameters <= 1/3 against Grounding DINO-T)."""
    after = _after(res)
    if GDINO not in res.variants:
        return []
    out = []
    for b in _batches(res):
        a, p = ok_row(res, after, f"infer/fps_b{b}"), ok_row(res, GDINO, f"infer/fps_b{b}")
        rec = {"target": f"FPS >= {TARGET_FPS_VS_GDINO:g}x Grounding DINO-T", "batch": b,
               "ours": fmt_iqr(a), "peer": fmt_iqr(p)}
        if a is None or p is None:
            rec.update({"ours / peer": "-", "verdict": NOT_MEASURED})
        else:
            r = ratio_of(a, p)
            rec.update({"ours / peer": fmt_change(r, TARGET_FPS_VS_GDINO),
                        "verdict": target_verdict(r.lo, r.hi, TARGET_FPS_VS_GDINO)})
        out.append(rec)
    for metric, label in (("params/total", "total parameters"), ("params/image_backbone", "image backbone parameters")):
        a, p = ok_row(res, after, metric), ok_row(res, GDINO, metric)
        if a is None or p is None:
            if metric == "params/total":
                out.append({"target": f"{label} <= 1/3 of Grounding DINO-T", "batch": "-", "ours": "-", "peer": "-",
                            "ours / peer": "-", "verdict": NOT_MEASURED})
            continue
        r = ratio_of(a, p)
        out.append({"target": f"{label} <= 1/3 of Grounding DINO-T" + ("" if metric == "params/total" else " (listed)"),
                    "batch": "-", "ours": f"{a.value / 1e6:.1f}M", "peer": f"{p.value / 1e6:.1f}M",
                    "ours / peer": fmt_change(r, TARGET_PARAMS_VS_GDINO),
                    "verdict": target_verdict(r.lo, r.hi, TARGET_PARAMS_VS_GDINO, higher=False)
                    if metric == "params/total" else "-"})
    return out


def peers_summary(res: Results) -> list[str]:
    """One line per peer: the after model's FPS ratio at every batch measured [IQR interval] and its
    parameter ratio (targets in :func:`peer_targets`)."""
    after = _after(res)
    lines = []
    for peer in peers(res):
        parts = []
        for b in _batches(res):
            a, p = ok_row(res, after, f"infer/fps_b{b}"), ok_row(res, peer, f"infer/fps_b{b}")
            if a and p:
                parts.append(f"FPS (batch {b}) {fmt_change(ratio_of(a, p))}")
        pa, pb = ok_row(res, after, "params/total"), ok_row(res, peer, "params/total")
        if pa and pb:
            parts.append(f"parameters {pa.value / pb.value:.2f}x ({pa.value / 1e6:.1f}M vs {pb.value / 1e6:.1f}M)")
        if parts:
            lines.append(f"- `{after}` vs `{peer}`: " + "; ".join(parts) + ".")
    return lines


def section(res: Results) -> list[str]:
    table = peers_table(res)
    if not any(r["kind"] != "ours" for r in table):
        return []
    size = res.profile.get("peer_image_size", 224)
    parts = [
        "\n## Peers side by side (same method, same input)\n",
        f"Peers are Hugging Face models built offline from their default configs with **random weights**: speed, "
        f"memory, parameters and FLOPs do not depend on trained weights. Input {size}x{size} pixel_values and "
        "the same prompt as ours (tokenized by our BERT-uncased tokenizer, so the same token count; one text "
        "query per image for OWL-ViT, whose vision tower is built at this size instead of its native 768 px). "
        "Forward pass only, no post-processing; each number from fresh processes (median [q1, q3]). Peak "
        "memory as for ours (CPU: RSS growth of a fresh process over its state before the model was built). "
        "Grounding DINO's deformable attention samples with `grid_sampler_2d`, which the FLOP counter does "
        "not count (its GFLOPs are a lower bound).\n",
        md(table), "\n" + "\n".join(peers_summary(res)) + "\n"]
    targets = peer_targets(res)
    if targets:
        parts += [f"\n### Targets against Grounding DINO-T (`{_after(res)}`, every batch measured)\n",
                  "Verdict on the whole IQR interval of the ratio: holds / inconclusive (straddles the target) / "
                  "does not hold.\n", md(targets)]
    return parts
