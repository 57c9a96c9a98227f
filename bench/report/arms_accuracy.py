"""Inference arms judged by accuracy on a trained checkpoint (rows ``arm_acc/{arm}/{split}/{metric}`` of
``bench.measure.arms_accuracy``): MLPerf's rule, an arm is accepted when every metric on every split keeps
>= ``keep`` (99%) of the fp32 reference's value and drops at most ``max_abs_drop`` (0.01) below it."""

from __future__ import annotations

from ..results import Results
from .format import fmt, md

PREFIX = "arm_acc/"
REFERENCE = "eager"
#: metrics judged (vocab_mAP50 only where measured)
JUDGED = ("mAP50", "R@1", "vocab_mAP50")
REQUIRED = ("mAP50", "R@1")
KEEP = 0.99
MAX_ABS_DROP = 0.01


# -- verdict (pure) ----------------------------------------------------------------------------

def accuracy_verdict(ref: dict, arm: dict, keep: float = KEEP, max_abs_drop: float = MAX_ABS_DROP) -> tuple:
    """Judge an arm against the fp32 reference.

    ``ref`` / ``arm``: {split: {metric: fraction}} (metrics "mAP50", "R@1", optional "vocab_mAP50").
    Accepted when, on every split of ``ref``, mAP50 and R@1 (and vocab_mAP50 when the reference has it)
    are each >= ``keep`` x reference AND >= reference - ``max_abs_drop``.

    Returns ("accepted" | "rejected", deltas): deltas = {split: {metric: arm - reference}} (None where the
    arm has no value) plus, when rejected, deltas["failed"] = ["metric on split: why", ...].
    """
    deltas: dict = {}
    failed: list[str] = []
    if not ref:
        return "rejected", {"failed": ["no reference values"]}
    for split, ref_values in ref.items():
        arm_values = arm.get(split)
        deltas[split] = {}
        if not arm_values:
            failed.append(f"{split}: no values for this split")
            continue
        for metric in JUDGED:
            r = ref_values.get(metric)
            if r is None:
                if metric in REQUIRED:
                    failed.append(f"{metric} on {split}: no reference value")
                continue
            a = arm_values.get(metric)
            if a is None:
                deltas[split][metric] = None
                failed.append(f"{metric} on {split}: not measured")
                continue
            deltas[split][metric] = a - r
            if a < keep * r:
                failed.append(f"{metric} on {split}: {a:.4f} < {keep:g} x {r:.4f}")
            elif a < r - max_abs_drop:
                failed.append(f"{metric} on {split}: {a:.4f} more than {max_abs_drop:g} below {r:.4f}")
    if failed:
        deltas["failed"] = failed
        return "rejected", deltas
    return "accepted", deltas


# -- reading the rows ------------------------------------------------------------------------

def collect(res: Results) -> dict:
    """{variant: {arm: {split: {metric: value | None}}}} of the arm_acc rows (None: not ok), plus per arm
    the first non-ok row's reason under the key "_reason"."""
    out: dict = {}
    for r in res.rows:
        if not r.metric.startswith(PREFIX):
            continue
        parts = r.metric[len(PREFIX):].split("/")
        if len(parts) != 3:
            continue
        arm, split, metric = parts
        rec = out.setdefault(r.variant, {}).setdefault(arm, {})
        ok = r.status == "ok" and r.value is not None
        rec.setdefault(split, {})[metric] = r.value if ok else None
        if not ok:
            rec.setdefault("_reason", f"{r.status}: {r.error or ''}")
    return out


def _values(rec: dict) -> dict:
    """{split: {metric: value}} without the missing ones."""
    return {s: {m: v for m, v in ms.items() if v is not None} for s, ms in rec.items() if not s.startswith("_")}


def verdicts_by_checkpoint(res: Results) -> dict:
    """{arm: {checkpoint label: accepted?}} for every non-reference arm with arm_acc rows; a checkpoint label is
    the rows' variant ("optimized-tiny", or "optimized-tiny seed 1" when several checkpoints were judged), and
    each checkpoint's arm is judged against that checkpoint's own fp32 reference."""
    out: dict = {}
    for label, arms in collect(res).items():
        ref = _values(arms.get(REFERENCE, {}))
        for name, rec in arms.items():
            if name != REFERENCE:
                out.setdefault(name, {})[label] = accuracy_verdict(ref, _values(rec))[0] == "accepted"
    return out


def accepted_arms(res: Results) -> dict:
    """{arm: accepted?} for every non-reference arm with arm_acc rows: accepted only when every judged
    checkpoint accepts it (one lucky checkpoint is not enough)."""
    return {name: all(by_ckpt.values()) for name, by_ckpt in verdicts_by_checkpoint(res).items()}


def verdict_summary(res: Results) -> str:
    """One line per arm judged on several checkpoints ("int8-except-text: accepted on 1 of 2 checkpoints
    (optimized-tiny seed 1): rejected"); "" with one checkpoint (the table says it all)."""
    by_arm = verdicts_by_checkpoint(res)
    if not by_arm or max(len(v) for v in by_arm.values()) < 2:
        return ""
    lines = ["Over the checkpoints (an arm is accepted only when every checkpoint accepts it):\n"]
    for name, by_ckpt in by_arm.items():
        ok = [label for label, accepted in by_ckpt.items() if accepted]
        verdict = "accepted" if len(ok) == len(by_ckpt) else "rejected"
        which = f" ({', '.join(ok)})" if ok and len(ok) < len(by_ckpt) else ""
        lines.append(f"- `{name}`: accepted on {len(ok)} of {len(by_ckpt)} checkpoints{which}: **{verdict}**\n")
    return "".join(lines)


def _delta_text(deltas: dict, split: str) -> str:
    parts = [f"{m} {d:+.4f}" for m, d in (deltas.get(split) or {}).items() if d is not None]
    return ", ".join(parts) or "-"


AS_ABOVE = "(as above)"


def _verdict_cell(verdict: str, first: bool) -> str:
    """The verdict column of one split row: a failing or rejected arm's reason (the same for all its splits)
    on its first row only, "(as above)" on the others; short verdicts ("accepted", the reference) on every
    row."""
    if first or verdict == "accepted" or verdict.startswith("reference"):
        return verdict
    return AS_ABOVE


def arms_accuracy_table(res: Results) -> list[dict]:
    """One row per (variant, arm, split): the metrics, delta vs fp32 and the arm's verdict (over all splits;
    a failure or rejection reason is written once, on the arm's first row)."""
    rows = []
    data = collect(res)
    for variant, arms in data.items():
        ref = _values(arms.get(REFERENCE, {}))
        for name, rec in arms.items():
            values = _values(rec)
            if name == REFERENCE:
                verdict, deltas = "reference (fp32)", {}
            elif rec.get("_reason") and not any(values.values()):
                verdict, deltas = rec["_reason"][:160], {}
            else:
                verdict, deltas = accuracy_verdict(ref, values)
                if verdict == "rejected":
                    verdict += ": " + "; ".join(deltas.get("failed", []))[:200]
            for i, split in enumerate(s for s in rec if not s.startswith("_")):
                v = values.get(split, {})
                row = {"arm": name, "split": split, "mAP50": fmt(v.get("mAP50")), "R@1": fmt(v.get("R@1")),
                       "vocab mAP50": fmt(v.get("vocab_mAP50")),
                       "delta vs fp32": "-" if name == REFERENCE else _delta_text(deltas, split),
                       "verdict": _verdict_cell(verdict, i == 0)}
                if len(data) > 1:
                    row = {"variant": variant, **row}
                rows.append(row)
    return rows


def checkpoint_line(res: Results) -> str:
    """Where each judged checkpoint came from: reused (fingerprint matched) or trained by the arms task and why;
    "" when the rows do not say."""
    seen: dict = {}
    for r in res.rows:
        if r.metric.startswith(PREFIX) and "checkpoint_reused" in r.extra and r.variant not in seen:
            seen[r.variant] = r.extra
    lines = []
    for label, extra in seen.items():
        name = f"`{label}`'s checkpoint" if len(seen) > 1 else "The checkpoint"
        if extra["checkpoint_reused"]:
            lines.append(f"{name} is the accuracy run's own (same seed), reused because its fingerprint "
                         "(config, data, seed, budget) matched.")
        else:
            why = extra.get("checkpoint_trained_because") or "no reason recorded"
            lines.append(f"{name} was trained for this measurement ({why}).")
    return " ".join(lines) + "\n" if lines else ""


def phrases_judged(res: Results) -> dict:
    """{split: phrases judged by the fp32 reference's R@1} (rows' extra ``num_phrases``; {} for older rows)."""
    out: dict = {}
    for r in res.rows:
        parts = r.metric[len(PREFIX):].split("/") if r.metric.startswith(PREFIX) else []
        if parts[:1] == [REFERENCE] and parts[2:] == ["R@1"] and r.extra.get("num_phrases"):
            out.setdefault(parts[1], int(r.extra["num_phrases"]))
    return out


def resolution_line(res: Results) -> str:
    """What one phrase weighs against the rule: R@1 moves in steps of 1/phrases judged; when a step exceeds
    the rule's allowance at the reference's R@1 (min((1 - keep) x R@1, max_abs_drop)), a single phrase that
    changes its top box rejects an arm. "" when the rows do not carry the counts."""
    counts = phrases_judged(res)
    if not counts:
        return ""
    refs = {}
    for arms in collect(res).values():
        for split, metrics in _values(arms.get(REFERENCE, {})).items():
            if metrics.get("R@1") is not None:
                refs.setdefault(split, []).append(metrics["R@1"])
    parts, strict = [], []
    for split, n in counts.items():
        step = 1.0 / n
        top = max(refs.get(split) or [0.0])  # the highest reference: the most lenient allowance
        allowance = min((1 - KEEP) * top, MAX_ABS_DROP)
        parts.append(f"{split} judges {n} phrases, so one phrase is {step:.4f} of R@1; the rule allows "
                     f"{allowance:.4f} below an fp32 R@1 of {top:.3f}" + (" (the highest checkpoint's)" if len(refs.get(split) or []) > 1 else ""))
        if step > allowance:
            strict.append(split)
    tail = (f" On {' and '.join(strict)} a single phrase whose top box changes rejects an arm: read a "
            "rejection there by its count of phrases, not as a 1% loss." if strict else "")
    return "R@1's resolution: " + "; ".join(parts) + "." + tail + "\n"


def arms_accuracy_section(res: Results) -> list[str]:
    """Markdown lines of the accuracy-judged arms section; [] when there is no arm_acc row."""
    table = arms_accuracy_table(res)
    if not table:
        return []
    summary = verdict_summary(res)
    return ["\n## Inference arms judged by accuracy\n",
            f"An arm is accepted when mAP50 and R@1 (and vocabulary mAP50) on every split keep >= {KEEP:.0%} of "
            f"the fp32 eager reference and drop at most {MAX_ABS_DROP:g} below it (MLPerf's rule for "
            "reduced-precision inference), against the fp32 reference of the same checkpoint; with several "
            "checkpoints (one per training seed) an arm is accepted only when every checkpoint accepts it. "
            "Accuracy numbers come from the trained optimized-tiny checkpoints "
            "(the same evaluation code under each arm: bf16-autocast runs under `ovd predict --precision bf16`'s "
            "autocast, bf16-image under `--precision bf16-image`'s (the image encoder in bf16, the text encoder, "
            "fusion and box head in fp32), int8-dynamic is `ovd predict --quantize int8`'s transform, "
            "int8-except-text `--quantize int8-except-text`'s (the text encoder kept fp32), onnx-ort and "
            "onnx-ort-int8-static are `ovd predict --backend onnxruntime [--quantize int8]`'s "
            "object, the static graph calibrated on 32 training images); the speed column of the arms table "
            "comes from the full-size optimized variant.\n",
            checkpoint_line(res), resolution_line(res),
            md(table), "\n" + summary if summary else ""]
