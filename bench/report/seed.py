"""The seed table: each claim of the seed graded on what it says, with its interval and verdict.

Rows (after/before of the profile's pair, ratio of medians with the IQR interval):
Model Size = image backbone parameters (the seed's 50M -> 28M is Swin-S 48.8M -> Swin-T 27.5M;
trainable and total listed beside); Memory at the common batch and at each preset's own batch;
Training Speed = model + optimizer step on a fixed batch (the end-to-end ``ovd train`` loop listed
beside); Inference Speed at the profile's batch (batch 1 beside); Training Time and mAP from the
accuracy runs (per-seed, censored times to target), mAP at equal training time and at equal samples.
The seed's absolute figures come from another machine: only the ratio is graded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..results import Results, Row
from . import accuracy_data as acc
from .format import fmt, fmt_ratio, fmt_value, infer_batch, ok_row
from .judge import (
    NOT_MEASURED,
    censored_quartiles,
    censored_ratio,
    describe_times,
    diff_interval,
    diff_verdict,
    fmt_change,
    ratio_of,
    verdict,
)

#: "no loss" tolerance of the mAP rows, in mAP50 points (after - before).
MAP_TOLERANCE_POINTS = 1.0


@dataclass(frozen=True)
class Claim:
    row: str
    text: str  # the seed's words
    ratio: float | None  # claimed after/before
    higher: bool  # True: a gain (after >= ratio x before), False: a reduction
    absolute: bool = True  # the seed states machine-dependent absolute figures


CLAIMS = {
    "size": Claim("Model Size", "~50M -> ~28M params", 28 / 50, False, absolute=False),
    "memory": Claim("Memory", "~6 GB -> ~3 GB VRAM", 0.5, False),
    "train": Claim("Training Speed", "50 -> 100+ samples/s", 2.0, True),
    "infer": Claim("Inference Speed", "30 -> 60+ FPS", 2.0, True),
    "time": Claim("Training Time", "4-5 h -> 2-3 h", 2.5 / 4.5, False),
    "map": Claim("mAP", "no loss", None, True, absolute=False),
}


def pair(res: Results) -> tuple[str, str]:
    before, after = res.profile.get("pair", ("baseline", "optimized"))
    return before, after


def _graded(c: Claim) -> str:
    if c.ratio is None:
        return f"after - before >= -{MAP_TOLERANCE_POINTS:g} point"
    return f"{'>=' if c.higher else '<='} {fmt_ratio(c.ratio)}x"


def _record(c: Claim, unit: str, before: str, after: str, change: str, verdict_: str, beside: str = "",
            name: str | None = None) -> dict:
    return {"Row": name or c.row, "Unit": unit, "Before": before, "After": after,
            "Seed claim": c.text + (" (†)" if c.absolute else ""), "Graded": _graded(c), "Change": change,
            "Verdict": verdict_, "Also measured": beside or "-"}


def _ratio_row(c: Claim, unit: str, a: Row | None, b: Row | None, scale: float = 1.0, beside: str = "",
               name: str | None = None, cell=fmt_value) -> dict:
    if a is None or b is None:
        return _record(c, unit, cell(b, scale), cell(a, scale), "-", NOT_MEASURED, beside, name)
    r = ratio_of(a, b)
    return _record(c, unit, cell(b, scale), cell(a, scale), fmt_change(r, c.ratio),
                   verdict(r.point, c.ratio, c.higher, r.lo, r.hi), beside, name)


def _listed(label: str, a: Row | None, b: Row | None, scale: float = 1.0, unit: str = "") -> str:
    """'trainable 86.2 -> 32.3 M (0.375x)' for a row listed beside the graded one."""
    if a is None or b is None:
        return ""
    return f"{label} {fmt_value(b, scale)} -> {fmt_value(a, scale)}{unit} ({fmt_change(ratio_of(a, b))})"


# -- rows ------------------------------------------------------------------------------------------

def size_row(res: Results, before: str, after: str) -> dict:
    g = lambda v, m: ok_row(res, v, m)  # noqa: E731
    beside = "; ".join(s for s in (
        _listed("trainable", g(after, "params/trainable"), g(before, "params/trainable"), 1e-6, " M"),
        _listed("total (incl. frozen text encoder)", g(after, "params/total"), g(before, "params/total"), 1e-6, " M"))
        if s)
    a, b = g(after, "params/image_backbone"), g(before, "params/image_backbone")
    rec = _ratio_row(CLAIMS["size"], "M params, image backbone", a, b, 1e-6, beside)
    rec["Graded"] += " or the seed's own figures at its rounding (~50M, ~28M)"
    if a is not None and b is not None and rec["Verdict"] != "holds" and seed_figures_match(b.value, a.value):
        rec["Verdict"] = "holds"  # parameter counts are portable: the seed's rounded figures are the claim
    return rec


def seed_figures_match(before: float, after: float) -> bool:
    """Do the counts read as the seed's "~50M -> ~28M"? ~50M at one significant digit (45-55M),
    ~28M at two (27.5-28.5M)."""
    return round_half_up(before / 1e7) * 10 == 50 and round_half_up(after / 1e6) == 28


def round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def _memory_cell(res: Results, variant: str, metric: str, row: Row | None) -> str:
    """'2,361 (reserved 2,700)' on CUDA, '1,736' on the CPU."""
    s = fmt_value(row)
    reserved = ok_row(res, variant, metric.replace("_total", "_reserved"))
    if row is not None and reserved is not None:
        s += f" (reserved {fmt(reserved.value)})"
    return s


def _memory_unit(a: Row | None, b: Row | None, what: str) -> str:
    rows = [r for r in (b, a) if r is not None]
    methods = {(r.extra or {}).get("method") for r in rows}
    if methods & {"cuda-allocator"}:
        kind = "MiB allocated (reserved), peak of a training step"
    elif methods & {"cpu-rss"}:
        kind = "MiB peak RSS growth of a fresh process, training step"
    else:
        kind = "MiB peak, training step"
    batches = [str((r.extra or {}).get("batch_size", "?")) for r in rows]
    precs = [str((r.extra or {}).get("precision", "?")) for r in rows]
    b = f"batch {batches[0]} both" if len(set(batches)) == 1 else f"batch {' vs '.join(batches)}"
    p = precs[0] if len(set(precs)) == 1 else " vs ".join(precs)
    return f"{kind}; {what}: {b}, {p}" if rows else kind


def memory_rows(res: Results, before: str, after: str) -> list[dict]:
    out = []
    for metric, what, name in (("memory/train_total", "common batch", "Memory"),
                               ("memory/train_presetbatch_total", "each preset's own batch", "Memory (preset batch)")):
        a, b = ok_row(res, after, metric), ok_row(res, before, metric)
        if name != "Memory" and a is None and b is None:
            continue  # the preset-batch point is optional
        rec = _ratio_row(CLAIMS["memory"], _memory_unit(a, b, what), a, b, name=name)
        rec["Before"], rec["After"] = (_memory_cell(res, v, metric, r) for v, r in ((before, b), (after, a)))
        out.append(rec)
    return out


def train_speed_row(res: Results, before: str, after: str) -> dict:
    a, b = ok_row(res, after, "train/samples_per_s"), ok_row(res, before, "train/samples_per_s")
    beside = _listed("end-to-end `ovd train` loop (with its data loader)", ok_row(res, after, "train_loop/samples_per_s"),
                     ok_row(res, before, "train_loop/samples_per_s"), unit=" samples/s")
    batch = (a or b).extra.get("batch_size") if (a or b) is not None and (a or b).extra else None
    unit = "samples/s, model + optimizer step on a fixed batch" + (f" (batch {batch})" if batch else "")
    return _ratio_row(CLAIMS["train"], unit, a, b, beside=beside)


def infer_speed_row(res: Results, before: str, after: str) -> dict:
    n = infer_batch(res)
    beside = _listed("batch 1", ok_row(res, after, "infer/fps_b1"), ok_row(res, before, "infer/fps_b1"),
                     unit=" images/s") if n != 1 else ""
    return _ratio_row(CLAIMS["infer"], f"images/s, forward pass, batch {n}", ok_row(res, after, f"infer/fps_b{n}"),
                      ok_row(res, before, f"infer/fps_b{n}"), beside=beside)


def accuracy_pair(src: Results) -> tuple[str, str, str]:
    """(before, after, unit suffix): the profile's pair, or its tiny presets when those were trained."""
    before, after = pair(src)
    runs = acc.runs(src)
    if after not in runs and f"{after}-tiny" in runs:
        return f"{before}-tiny", f"{after}-tiny", " (tiny presets)"
    return before, after, ""


def time_row(src: Results) -> dict:
    c = CLAIMS["time"]
    before, after, suffix = accuracy_pair(src)
    runs = acc.runs(src)
    ra, rb = runs.get(after, []), runs.get(before, [])
    target = next((r.target for r in ra + rb if r.target is not None), None)
    unit = f"training s to val vocab mAP50 >= {target}{suffix}" if target is not None else f"training s to target{suffix}"
    if not ra or not rb:
        return _record(c, unit, "not measured" if not rb else "-", "not measured" if not ra else "-", "-", NOT_MEASURED)
    qa = censored_quartiles([r.time_to_target_s for r in ra], [r.budget_s or math.nan for r in ra])
    qb = censored_quartiles([r.time_to_target_s for r in rb], [r.budget_s or math.nan for r in rb])
    if qa["reached"] == 0 and qb["reached"] == 0:
        return _record(c, unit, describe_times(qb), describe_times(qa), "-", "neither reached the target")
    r = censored_ratio(qa, qb)
    return _record(c, unit, describe_times(qb), describe_times(qa), fmt_change(r, c.ratio),
                   verdict(r.point, c.ratio, c.higher, r.lo, r.hi))


def _points(lo: float, hi: float, d: float) -> str:
    s = f"{d * 100:+.1f} points"
    return s + (f" [{lo * 100:+.1f}, {hi * 100:+.1f}]" if (lo, hi) != (d, d) else "")


def map_rows(src: Results) -> list[dict]:
    """mAP50 after - before at equal training time (the final rows, same budget) and at equal samples
    seen (each run's curve interpolated at the largest sample count every run reached)."""
    c = CLAIMS["map"]
    before, after, suffix = accuracy_pair(src)
    a, b = ok_row(src, after, "accuracy/val/mAP50"), ok_row(src, before, "accuracy/val/mAP50")
    budgets = {r.budget_s for v in (before, after) for r in acc.runs(src).get(v, [])}
    budgets.discard(None)
    when = (f", after {fmt(next(iter(budgets)))} s of training each" if len(budgets) == 1
            else ", final, budgets differ" if budgets else "")
    unit = f"val mAP50{when}{suffix}"
    rows = []
    if a is None or b is None:
        rows.append(_record(c, unit, fmt_value(b), fmt_value(a), "-", NOT_MEASURED))
    else:
        d, lo, hi = diff_interval(a, b)
        rows.append(_record(c, unit, fmt_value(b), fmt_value(a), _points(lo, hi, d),
                            diff_verdict(lo, hi, MAP_TOLERANCE_POINTS / 100)))
    rows.append(_vocabulary_row(src, before, after, when, suffix))
    runs = acc.runs(src)
    x = acc.common_reach(runs, [before, after], "samples")
    sa = acc.stats_at(runs.get(after, []), x) if x else None
    sb = acc.stats_at(runs.get(before, []), x) if x else None
    if sa is not None and sb is not None:
        ra, rb = (Row(v, "mAP50@samples", s.median, "", stats=s) for v, s in ((after, sa), (before, sb)))
        d, lo, hi = diff_interval(ra, rb)
        rows.append(_record(c, f"val mAP50 at {fmt(x)} training samples seen (curves interpolated){suffix}",
                            fmt_value(rb), fmt_value(ra), _points(lo, hi, d),
                            diff_verdict(lo, hi, MAP_TOLERANCE_POINTS / 100), name="mAP (equal samples)"))
    elif runs:
        rows.append(_record(c, f"val mAP50 at equal samples seen{suffix}", "-", "-", "-",
                            "not measured (no sample counts in the curves)", name="mAP (equal samples)"))
    return rows


def _vocabulary_row(src: Results, before: str, after: str, when: str, suffix: str) -> dict:
    """The same "no loss" claim on the open-vocabulary detection protocol (every class of the split in the
    prompt; a box for an absent class is a false positive), with the absent-phrase false-positive rate and the
    novel split listed beside."""
    c = CLAIMS["map"]
    unit = f"val vocabulary mAP50 (absent classes prompted){when}{suffix}"
    a, b = ok_row(src, after, "accuracy/val/vocab_mAP50"), ok_row(src, before, "accuracy/val/vocab_mAP50")
    beside = "; ".join(x for x in (
        _listed("absent-phrase FP rate", ok_row(src, after, "accuracy/val/absent_fp_rate"),
                ok_row(src, before, "accuracy/val/absent_fp_rate")).split(" (")[0],
        _listed("novel vocab mAP50", ok_row(src, after, "accuracy/novel/vocab_mAP50"),
                ok_row(src, before, "accuracy/novel/vocab_mAP50")).split(" (")[0]) if x)
    if a is None or b is None:
        return _record(c, unit, fmt_value(b), fmt_value(a), "-", NOT_MEASURED, beside, name="mAP (vocabulary)")
    d, lo, hi = diff_interval(a, b)
    return _record(c, unit, fmt_value(b), fmt_value(a), _points(lo, hi, d),
                   diff_verdict(lo, hi, MAP_TOLERANCE_POINTS / 100), beside, name="mAP (vocabulary)")


def seed_table(res: Results, accuracy: Results | None = None) -> list[dict]:
    """One dict per graded row (columns: Row, Unit, Before, After, Seed claim, Graded, Change, Verdict,
    Also measured). ``accuracy``: the accuracy profile's results for the Training Time and mAP rows
    (default: ``res`` itself)."""
    before, after = pair(res)
    src = accuracy if accuracy is not None and acc.runs(accuracy) else res
    return [size_row(res, before, after), *memory_rows(res, before, after), train_speed_row(res, before, after),
            infer_speed_row(res, before, after), time_row(src), *map_rows(src)]


def notes(res: Results) -> str:
    before, after = pair(res)
    return (f"Before = `{before}`, After = `{after}`. Change = After/Before, ratio of medians with the IQR "
            "interval [q1_after/q3_before, q3_after/q1_before] over repeat processes (training runs: over seeds); "
            "counts are exact; a figure from one process (memory, a single peak per variant and process kind) has no "
            "interval, so its verdict is on the point alone and a change within a few percent of the claim is "
            "not resolved. Verdict on the whole interval: **holds** = all of it meets the claim, "
            "**inconclusive** = it straddles the claim, **partly** = all of it is a gain but short of the claim, "
            "**does not hold** = all of it is short of the claim and no gain is established. A run that missed "
            "its target is censored (its time is more than its budget), so a time ratio can be a bound (< x) and "
            "is judged as the interval (0, x]. (†) The seed's absolute figures (6 GB, 50 samples/s, 30 FPS, "
            "4-5 h) come from a machine unlike this one and are not comparable; the ratio is what is graded.\n")
