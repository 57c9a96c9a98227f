"""Saturating batch sweep section (rows ``sweep/{mode}/...`` of ``bench.measure.sweep``): per variant and
mode a table of throughput, latency and peak memory against batch size, and the peak (the batch with the
highest median throughput across repeats) with why the sweep stopped (plateau, max_batch, oom)."""

from __future__ import annotations

import re

from ..results import Results, Row
from .format import fmt, fmt_iqr, fmt_value, md
from .judge import NOT_MEASURED, fmt_change, ratio_of, verdict

#: The seed's speed claims (``seed.CLAIMS["train"/"infer"]``: 50 -> 100+ samples/s, 30 -> 60+ FPS): after/before
#: >= 2x. Repeated here because sections do not import each other (a test checks they agree).
PEAK_CLAIMS = {"train": ("Training Speed", "50 -> 100+ samples/s", 2.0),
               "infer": ("Inference Speed", "30 -> 60+ FPS", 2.0)}

_POINT = re.compile(r"^sweep/(?P<mode>[^/]+)/(?P<name>throughput|latency_ms|mem_mib)_b(?P<batch>\d+)$")
TITLE = "\n## Batch sweep: where throughput saturates\n\n"
INTRO = ("One fresh process per variant and mode; the batch doubles from the start batch until throughput "
         "gains less than the growth threshold over the best so far for `patience` points, the batch cap, or "
         "out-of-memory. Memory: CUDA allocator peak (allocated) or, on the CPU, RSS growth over the point "
         "(low after the first point: the CPU allocator keeps freed pages). Cells: median [q1, q3] over "
         "repeat processes.\n")


def sweep_points(res: Results) -> dict[tuple[str, str], dict[int, dict[str, Row]]]:
    """(variant, mode) -> batch -> {"throughput" / "latency_ms" / "mem_mib": Row} (error rows included)."""
    out: dict = {}
    for row in res.rows:
        m = _POINT.match(row.metric)
        if m:
            key = (row.variant, m["mode"])
            out.setdefault(key, {}).setdefault(int(m["batch"]), {})[m["name"]] = row
    order = {v: i for i, v in enumerate(res.variants)}
    return {k: dict(sorted(out[k].items())) for k in sorted(out, key=lambda k: (order.get(k[0], len(order)), k))}


def _ok(row: Row | None) -> Row | None:
    return row if row is not None and row.status == "ok" and row.value is not None else None


def _peak(points: dict[int, dict[str, Row]]) -> tuple[int, Row] | None:
    """(batch, throughput row) of the highest median throughput; None when no point was measured."""
    ok = [(b, _ok(p.get("throughput"))) for b, p in points.items()]
    ok = [(b, r) for b, r in ok if r is not None]
    return max(ok, key=lambda br: br[1].value) if ok else None


def peak_batches(res: Results) -> dict[tuple[str, str], int]:
    """(variant, mode) -> the batch size of peak median throughput (for a peak-batch seed table)."""
    out = {}
    for key, points in sweep_points(res).items():
        peak = _peak(points)
        if peak is not None:
            out[key] = peak[0]
    return out


def sweep_table(points: dict[int, dict[str, Row]]) -> list[dict]:
    """One row per batch: throughput [q1, q3] (or the error), latency p50 ms, peak memory MiB."""
    out = []
    for b, p in points.items():
        thr = p.get("throughput")
        unit = thr.unit if thr is not None else "items/s"
        cell = fmt_iqr(_ok(thr)) if _ok(thr) or thr is None else (thr.error or thr.status)
        out.append({"batch": b, f"throughput ({unit}) [q1, q3]": cell,
                    "latency p50 (ms)": fmt_iqr(_ok(p.get("latency_ms"))),
                    "peak memory (MiB)": fmt_iqr(_ok(p.get("mem_mib")))})
    return out


def peak_line(res: Results, variant: str, mode: str, points: dict[int, dict[str, Row]]) -> str:
    """'peak: X images/s at batch N (stopped: plateau)' for one variant and mode."""
    stopped = res.get(variant, f"sweep/{mode}/stopped")
    reason = (stopped.extra.get("reason") if stopped is not None else None) or "?"
    peak = _peak(points)
    if peak is None:
        return f"`{variant}` {mode} peak: nothing measured (stopped: {reason})"
    b, row = peak
    return f"`{variant}` {mode} peak: {fmt(row.value)} {row.unit} at batch {b} (stopped: {reason})"


def peak_batch_table(res: Results, before: str, after: str) -> list[dict]:
    """The seed's speed claims graded at each variant's own peak batch (the batch of its highest median
    throughput in the sweep): after's throughput there over before's, with the IQR interval over the sweep's
    repeat processes. [] without sweep rows for both."""
    curves = sweep_points(res)
    out = []
    for mode, (name, text, claim) in PEAK_CLAIMS.items():
        pb, pa = curves.get((before, mode)), curves.get((after, mode))
        if not pb or not pa:
            continue
        peak_b, peak_a = _peak(pb), _peak(pa)
        b_row = peak_b[1] if peak_b else None
        a_row = peak_a[1] if peak_a else None
        if a_row is None or b_row is None:
            change, grade = "-", NOT_MEASURED
        else:
            r = ratio_of(a_row, b_row)
            change, grade = fmt_change(r, claim), verdict(r.point, claim, True, r.lo, r.hi)
        out.append({"Row": name, "Unit": (a_row or b_row).unit if (a_row or b_row) else "-",
                    "Before (peak batch)": f"{fmt_value(b_row)} (b{peak_b[0]})" if peak_b else "not measured",
                    "After (peak batch)": f"{fmt_value(a_row)} (b{peak_a[0]})" if peak_a else "not measured",
                    "Seed claim": text + " (†)", "Graded": f">= {claim:g}x", "Change": change, "Verdict": grade})
    return out


def sweep_section(res: Results, pair: tuple[str, str] | None = None) -> list[str]:
    """Markdown parts of the section; [] when the results have no sweep rows. ``pair`` (before, after): also
    the seed's speed claims at each one's peak batch."""
    curves = sweep_points(res)
    if not curves:
        return []
    parts = [TITLE, INTRO]
    if pair is not None:
        table = peak_batch_table(res, *pair)
        if table:
            parts += ["\n### The seed's speed claims at each variant's own peak batch\n\n",
                      "This table answers \"how fast can this model go\" on this machine: each variant at the "
                      "batch where its own throughput peaked in the sweep (the seed table above compares both at "
                      "one common batch, which answers \"what does the same work cost\"). Interval: IQR over the "
                      "sweep's repeat processes at that batch.\n\n", md(table)]
    for (variant, mode), points in curves.items():
        parts.append(f"\n**`{variant}`, {mode}**\n")
        parts.append(md(sweep_table(points)))
        parts.append("\n" + peak_line(res, variant, mode, points) + "\n")
    return parts
