"""The accuracy section: final seen/novel accuracy per trained variant (median [q1, q3] over seeds),
the evaluation curve (median over seeds per evaluation minute) and its plot (per-seed lines and the
median, against training time and against samples seen)."""

from __future__ import annotations

import statistics
from pathlib import Path

from ..results import Results
from . import accuracy_data as acc
from . import plots, provenance
from .format import md, ok_row
from .judge import censored_quartiles, describe_times

#: Both protocols on val and novel: grounding (phrase mAP50, R@1) and vocabulary (vocab mAP50, with the
#: absent-phrase false-positive rate next to present-phrase recall, on the whole vocabulary and on the
#: two-phrase probe: one present and one absent name per image).
FINAL_METRICS = (("val mAP50", "accuracy/val/mAP50"), ("val R@1", "accuracy/val/R@1"),
                 ("val vocab mAP50", "accuracy/val/vocab_mAP50"), ("val absent FP", "accuracy/val/absent_fp_rate"),
                 ("val absent FP/phrase", "accuracy/val/absent_fp_pair_rate"),
                 ("val present recall", "accuracy/val/present_recall"),
                 ("val probe absent FP", "accuracy/val/probe_absent_fp_rate"),
                 ("val probe present recall", "accuracy/val/probe_present_recall"),
                 ("novel mAP50", "accuracy/novel/mAP50"), ("novel R@1", "accuracy/novel/R@1"),
                 ("novel vocab mAP50", "accuracy/novel/vocab_mAP50"),
                 ("novel absent FP", "accuracy/novel/absent_fp_rate"),
                 ("novel absent FP/phrase", "accuracy/novel/absent_fp_pair_rate"),
                 ("novel present recall", "accuracy/novel/present_recall"),
                 ("novel probe absent FP", "accuracy/novel/probe_absent_fp_rate"),
                 ("novel probe present recall", "accuracy/novel/probe_present_recall"))


def _fraction(row) -> str:
    if row is None:
        return "-"
    s = f"{row.value:.3f}"
    if row.stats and row.stats.n > 1:
        s += f" [{row.stats.q1:.3f}, {row.stats.q3:.3f}]"
    return s


def final_table(res: Results) -> list[dict]:
    """One row per trained variant: budget, seeds, steps and samples (median over seeds), final
    accuracy (median [q1, q3]) and time to the target (censored: missed = more than the budget)."""
    out = []
    for v, runs in acc.runs(res).items():
        budgets = sorted({r.budget_s for r in runs if r.budget_s is not None})
        samples = [r.curve[-1].get("samples") for r in runs if r.curve and r.curve[-1].get("samples") is not None]
        tt = res.get(v, acc.TTT)
        rec = {"variant": v, "budget (training s)": ", ".join(f"{b:g}" for b in budgets) or "-", "seeds": len(runs),
               "steps": (tt.extra or {}).get("steps", "-") if tt is not None else "-",
               "samples": f"{statistics.median(samples):.0f}" if samples else "-"}
        for label, metric in FINAL_METRICS:
            rec[label] = _fraction(ok_row(res, v, metric))
        target = next((r.target for r in runs if r.target is not None), None)
        q = censored_quartiles([r.time_to_target_s for r in runs], [r.budget_s or float("nan") for r in runs])
        text = describe_times(q)
        rec[f"time to val vocab mAP50 >= {target}"] = "not reached" if q["reached"] == 0 and len(runs) == 1 else text
        out.append(rec)
    return out


def curve_table(res: Results) -> list[dict]:
    """One row per evaluation minute (rounded to 0.1); per variant the median over seeds of
    mAP50 / R@1 / vocab mAP50 at that minute (nan: an older curve without the vocabulary protocol)."""
    by_minute: dict[float, dict] = {}
    for v, runs in acc.runs(res).items():
        cells: dict[float, list] = {}
        for r in runs:
            for p in r.curve:
                minute = round(acc.point_time(p) / 60.0, 1)
                cells.setdefault(minute, []).append((p.get("val/mAP50", float("nan")), p.get("val/R@1", float("nan")),
                                                     p.get("val/vocab_mAP50", float("nan"))))
        for minute, pts in cells.items():
            rec = by_minute.setdefault(minute, {"training minutes": minute})
            m50 = statistics.median(p[0] for p in pts)
            r1 = statistics.median(p[1] for p in pts)
            vm50 = statistics.median(p[2] for p in pts)
            rec[f"{v} mAP50 / R@1 / vocab mAP50"] = (f"{m50:.3f} / {r1:.3f} / {vm50:.3f}"
                                                     + (f" (n={len(pts)})" if len(runs) > 1 else ""))
    return [by_minute[k] for k in sorted(by_minute)]


def curve_plot(res: Results, out_dir: Path) -> str | None:
    runs = acc.runs(res)
    target = next((r.target for rs in runs.values() for r in rs if r.target is not None), None)
    return plots.accuracy_curves(runs, Path(out_dir), target)


#: R@k of a model scored as it is (``bench.measure.accuracy``: a factory's predict() on the val split)
AS_IS_METRICS = (("val R@1", "accuracy/val/R@1"), ("val R@5", "accuracy/val/R@5"), ("val R@10", "accuracy/val/R@10"),
                 ("val R@1 merged", "accuracy/val/R@1_merged"))


def as_is_table(res: Results) -> list[dict]:
    """One row per model the suite scored without training it: R@k on the val split and why it was not trained."""
    return [{"variant": v, **{label: _fraction(ok_row(res, v, metric)) for label, metric in AS_IS_METRICS},
             "training": why} for v, why in acc.scored_as_is(res).items()]


def as_is_section(res: Results) -> list[str]:
    """Markdown parts for the models scored as they are (none: [])."""
    table = as_is_table(res)
    if not table:
        return []
    return ["\n## Accuracy of models scored as they are (not trained by the suite)\n",
            "A factory's `predict(pil_images, prompts)` (bring your own model) runs on the first val samples of the "
            "built-in data (or its data root), each caption's phrases as the prompt, and is scored by the grounding "
            "protocol: Recall@k, MDETR's ANY-BOX (and MERGED-BOX); a phrase's boxes are those labelled with it, best "
            "score first. Nothing is trained, so it has no curve and no time to target.\n", md(table)]


def accuracy_section(res: Results, out_dir: str | Path, label: str | None = None) -> list[str]:
    """Markdown parts; ``label`` names the run when it is not the report's own (the accuracy profile)."""
    if not acc.runs(res):
        return as_is_section(res)
    parts = ["\n## Accuracy after a time-budgeted training run (built-in synthetic set)\n"]
    if label:
        parts.append("\n".join(provenance.lines(res, label)) + "\n\n")
    parts += ["Each variant trains from scratch (random image backbone, frozen pretrained text encoder) for the "
              "stated budget of training seconds on the run's machine, once per seed; evaluation time is excluded "
              "from the budget. Values are the median [q1, q3] over seeds. `val` holds seen attribute/shape "
              "combinations, `novel` holds a colour, a shape and combinations never seen in training. mAP: "
              "COCO-style over phrases (each phrase of a caption is a class); R@1: Flickr30k Entities ANY-BOX "
              "Recall@1 (MDETR's protocol); both score only phrases present in the image. vocab mAP50: the "
              "vocabulary protocol (`ovd eval --protocol vocabulary`): the split's whole class vocabulary is the "
              "prompt, every (query, class) pair a ranked detection (DETR post-processing), and a box for a class "
              "absent from the image is a false positive; by predict's rule (one box per query, its best class, "
              "threshold 0.3): absent FP: share of images with a box for any absent class; absent FP/phrase: share of (image, absent "
              "class) pairs with a box of that class; present recall: share of (image, present "
              "class) pairs boxed at IoU >= 0.5. probe: per image one prompt of two names, one present and one "
              "sharing no word with any object of the image (neither its colour nor its shape); probe absent FP: "
              "share of images where the absent name gets a box; probe present recall: share where the present "
              "name gets one at IoU >= 0.5 (issue 13's first question, far easier than the whole vocabulary). "
              "Time to target uses val vocab mAP50 (on the first 100 val images). "
              "A seed that missed the target counts as more than its budget.\n",
              md(final_table(res)), "\n### Curve (val split, median over seeds; vocab mAP50 on the first 100 val images, "
              "as time to target; the table above scores all)\n", md(curve_table(res))]
    png = curve_plot(res, Path(out_dir))
    if png:
        parts.append(f"\n![{png}]({png})\n")
    return parts + as_is_section(res)

