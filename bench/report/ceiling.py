"""The ceiling section: each variant's end-to-end inference throughput beside its image backbone alone
(inside the model and built through timm directly), and, where the run measured the matmul peak, the
achieved FLOP/s of both as a share of that peak (rows ``ceiling/*`` from ``bench.measure.ceiling``)."""

from __future__ import annotations

from ..results import Results, Row
from .format import fmt, fmt_iqr, md, ok_row

#: The roofline rows' label (``bench.report.roofline.MACHINE``; a sibling section, so not imported).
MACHINE = "machine"

EXPLANATION = ("**End-to-end as % of its backbone alone** is the detector's inference throughput (the forward "
               "`infer/fps_bN` times: text encoder, backbone, feature projection, fusion, box head) as a share of "
               "what its image backbone alone reaches on the same pixel batch, precision and threads: at s% the "
               "text encoder, fusion, box head and the decoding of their outputs cost (100/s - 1)x the backbone's "
               "time, and 100% is the ceiling no head-side optimization can pass (tokenizing, resizing and "
               "thresholding boxes in `predict` are outside both calls). **backbone / timm** compares the "
               "backbone inside our model with the same timm model built directly (same kwargs, same weights): "
               "about 1.0 means our wrapper adds nothing.")


def ceiling_variants(res: Results) -> list[str]:
    """Variants with a measured ``ceiling/e2e_fps`` row, in the results' variant order."""
    names = [n for n in res.variants if ok_row(res, n, "ceiling/e2e_fps")]
    extra = [r.variant for r in res.rows if r.metric == "ceiling/e2e_fps" and r.status == "ok"
             and r.value is not None and r.variant not in names]
    return names + list(dict.fromkeys(extra))


def share_text(res: Results, variant: str) -> str:
    """End-to-end FPS as % of backbone-alone FPS: the measured per-round ratio's median [q1, q3] over
    processes when present, else the ratio of the two FPS medians x 100."""
    share = ok_row(res, variant, "ceiling/e2e_share_of_backbone")
    if share:
        return fmt_iqr(share)
    e2e, bb = ok_row(res, variant, "ceiling/e2e_fps"), ok_row(res, variant, "ceiling/backbone_fps")
    return fmt(100 * e2e.value / bb.value) if e2e and bb and bb.value else "-"


def _peak(res: Results, precision: str) -> Row | None:
    return ok_row(res, MACHINE, f"roofline/peak_{precision}")


def achieved_text(res: Results, variant: str, path: str, peak: Row | None) -> str:
    """'<GFLOP/s> (<% of peak>)' for ``path`` ("e2e"/"backbone"): counted FLOPs per image x images/s;
    '-' without a FLOP count."""
    f, fps = ok_row(res, variant, f"ceiling/{path}_flops_per_image"), ok_row(res, variant, f"ceiling/{path}_fps")
    if not f or not fps:
        return "-"
    achieved = f.value * fps.value
    s = fmt(achieved / 1e9)
    return s + (f" ({fmt(100 * achieved / peak.value)}%)" if peak else "")


def ceiling_table(res: Results) -> list[dict]:
    """One row per variant: batch, precision, the three throughputs (median [q1, q3] over processes), the
    share, the wrapper/timm ratio and, with FLOP counts, achieved GFLOP/s (% of the same-dtype matmul peak)."""
    out = []
    for v in ceiling_variants(res):
        e2e = ok_row(res, v, "ceiling/e2e_fps")
        prec = e2e.extra.get("precision", "fp32")
        peak = _peak(res, prec)
        peak_label = f"% of {prec} matmul peak" if peak else "no peak measured"
        out.append({"variant": v, "batch": e2e.extra.get("batch_size"), "precision": prec,
                    "end-to-end (images/s)": fmt_iqr(e2e),
                    "backbone alone (images/s)": fmt_iqr(ok_row(res, v, "ceiling/backbone_fps")),
                    "timm direct (images/s)": fmt_iqr(ok_row(res, v, "ceiling/timm_fps")),
                    "end-to-end as % of its backbone alone": share_text(res, v),
                    "backbone / timm": fmt_iqr(ok_row(res, v, "ceiling/backbone_vs_timm")),
                    f"end-to-end GFLOP/s ({peak_label})": achieved_text(res, v, "e2e", peak),
                    f"backbone GFLOP/s ({peak_label})": achieved_text(res, v, "backbone", peak)})
    return out


def ceiling_section(res: Results) -> list[str]:
    """Markdown parts of the section; [] when the results have no ceiling rows."""
    rows = ceiling_table(res)
    if not rows:
        return []
    # columns differ when some precisions have a peak and others not: keep every column, in first-seen order
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return ["\n## Ceiling: end-to-end against the image backbone alone\n",
            "One fresh process per variant and repeat; in it, the end-to-end forward, the backbone inside the "
            "model and the same backbone built through `timm.create_model` are timed in interleaved rounds on "
            "the same fixed batch, precision and threads (median [q1, q3] over processes). Achieved GFLOP/s = "
            "counted FLOPs per image (2*MACs: matmuls, convolutions, attention) x images/s, against this run's "
            "measured matmul peak of the same dtype.\n",
            "\n" + EXPLANATION + "\n",
            md(rows, columns)]


__all__ = ["ceiling_section", "ceiling_table", "ceiling_variants", "share_text"]
