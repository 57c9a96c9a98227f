"""Optimization arms ranked by inference gain (beyond-seed arms on the extras variant and the seed's
one-factor ladder rungs), with output parity, and the best arm within tolerance against its target."""

from __future__ import annotations

from ..results import Results
from .format import arm_batch, extras_variant, fmt, fmt_iqr, infer_batch, md, ok_row
from .judge import Ratio, fmt_change, ratio_interval, target_verdict

TARGET_ARM_GAIN = 1.3


def break_even_images(setup_s: float, fps: float, gain: float) -> float | None:
    """Images after which an arm's one-off set-up (compilation, export, quantization) is paid back by its faster
    calls: set-up / (seconds saved per image) = setup_s / (1 / fps_eager - 1 / fps) with fps_eager = fps / gain,
    i.e. setup_s * fps / (gain - 1). None when the arm is not faster (never pays back). Point estimate from
    medians (the gain's interval is beside it in the table)."""
    if gain <= 1.0 or fps <= 0:
        return None
    return setup_s * fps / (gain - 1.0)


def fmt_break_even(setup_s: float | None, fps: float | None, gain: float | None, gain_q1: float | None = None) -> str:
    """The "pays off after" cell: an image count, "never" (no gain), "no gain established" (the median gain is
    above 1 but its interval, from ``gain_q1`` up, reaches 1: any count would be a point estimate the interval
    contradicts, e.g. 35,000,000 images for a 1.0x [0.998, 1.07] gain), or "-" (not measured)."""
    if setup_s is None or fps is None or gain is None:
        return "-"
    if gain > 1.0 and gain_q1 is not None and gain_q1 <= 1.0:
        return "no gain established (its interval reaches 1x)"
    n = break_even_images(setup_s, fps, gain)
    if n is None:
        return "never (no gain)"
    return f"{float(f'{n:.2g}'):,.0f} images"  # two significant digits: a point estimate from medians


def gain_q1(gain) -> float | None:
    """The lower quartile of a gain row over its processes; None with one process (no interval)."""
    return gain.stats.q1 if gain.stats and gain.stats.n > 1 else None


def setup_rows(res: Results, variant: str, arm: str) -> tuple:
    """(cold, warm) set-up rows of an arm (either None when not measured): ``setup_s`` is the set-up of a first
    run (for a compile arm: an empty Inductor cache), ``setup_warm_s`` a compile arm's with its cache filled by an
    earlier process (a later run on the same machine)."""
    return ok_row(res, variant, f"arm/{arm}/setup_s"), ok_row(res, variant, f"arm/{arm}/setup_warm_s")


def fmt_setup(cold, warm) -> str:
    """The set-up cell: the cold median, and the warm-cache one in brackets when measured."""
    return (fmt(cold.value) if cold else "-") + (f" (warm cache {fmt(warm.value)})" if warm else "")


def arms_ranking(res: Results) -> list[dict]:
    """All arms (beyond-seed arms on the extras variant, and the seed's one-factor ladder rungs) ranked
    by inference gain (median over processes, [q1, q3]); failed or skipped arms last."""
    from ..measure.arms import ARMS, REFERENCE
    v = extras_variant(res)
    B = arm_batch(res)
    N = infer_batch(res)
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
        fps = ok_row(res, v, f"arm/{name}/fps_b{B}")
        db, dp = ok_row(res, v, f"arm/{name}/boxes_max_abs_matched"), ok_row(res, v, f"arm/{name}/probs_max_abs_matched")
        ok = ok_row(res, v, f"arm/{name}/parity_ok")
        setup, warm = setup_rows(res, v, name)
        agree = ok_row(res, v, f"arm/{name}/agreement")
        rec.update({
            "gain": fmt_iqr(g) + "x", "images/s": fmt_iqr(fps),
            "parity max abs diff boxes / probs": (f"{db.value:.2g} / {dp.value:.2g}" if db and dp else "-")
            + (f" ({100 * agree.value:.0f}% of queries within)" if agree else ""),
            "tolerance": f"{g.extra.get('tolerance'):g}" if g.extra.get("tolerance") is not None else "-",
            "status": ("ok" if ok and ok.value == 1.0 else "OUTSIDE TOLERANCE") if ok else "ok",
            "set-up (s)": fmt_setup(setup, warm),
            "pays off after": fmt_break_even(setup.value if setup else None, fps.value if fps else None, g.value,
                                             gain_q1(g))})
        ranked.append((rec, g.value))
    for n, spec in res.variants.items():
        if spec.get("group") != "ladder" or spec.get("accuracy_only"):
            continue
        a, b = ok_row(res, n, f"infer/fps_b{N}"), ok_row(res, spec.get("reference") or "", f"infer/fps_b{N}")
        if a is None or b is None:
            continue
        r, lo, hi = ratio_interval(a, b)
        rec = {"arm": n, "kind": f"seed factor (ladder vs {spec['reference']}, batch {N})",
               "what": spec.get("description", ""), "gain": fmt_change(Ratio(r, lo, hi)),
               "images/s": fmt_iqr(a), "parity max abs diff boxes / probs": "n/a (other model)", "tolerance": "-",
               "status": "ok", "set-up (s)": "-"}
        ranked.append((rec, r))
    ranked.sort(key=lambda t: -t[1])
    cols = ["rank", "arm", "kind", "gain", "images/s", "parity max abs diff boxes / probs", "tolerance", "status",
            "set-up (s)", "pays off after", "what"]
    out = []
    for i, (rec, _) in enumerate(ranked + tail, 1):
        rec["rank"] = i if rec.get("gain", "-") != "-" else "-"
        out.append({c: rec.get(c, "-") for c in cols})
    return out


def best_arm_sentence(res: Results) -> str:
    from ..measure.arms import ARMS, REFERENCE

    v = extras_variant(res)
    best = None
    for name in ARMS:
        if name == REFERENCE:
            continue
        g, ok = res.get(v, f"arm/{name}/gain"), ok_row(res, v, f"arm/{name}/parity_ok")
        if g is None or g.status != "ok" or g.value is None or not ok or ok.value != 1.0:
            continue
        if best is None or g.value > best[1].value:
            best = (name, g)
    if best is None:
        return "No arm beyond the seed was measured within tolerance in this run."
    name, g = best
    q = f" [IQR {fmt(g.stats.q1)}, {fmt(g.stats.q3)}, n={g.stats.n}]" if g.stats and g.stats.n > 1 else ""
    lo, hi = (g.stats.q1, g.stats.q3) if g.stats and g.stats.n > 1 else (g.value, g.value)
    verdict = target_verdict(lo, hi, TARGET_ARM_GAIN)
    return (f"Best arm beyond the seed with outputs within tolerance: `{name}` ({ARMS[name].description}), "
            f"{fmt(g.value)}x{q} the throughput of fp32 eager `{v}` (target >= {TARGET_ARM_GAIN:g}x: {verdict}).")


def timed_once_sentence(res: Results) -> str:
    """The arms the slow-arm rule timed in one round (``bench.measure.arms.is_slow_arm``), each with the count of
    its processes that did so and its gain; "" when none."""
    from ..measure.arms import ARMS, SLOW_ARM_FACTOR

    v = extras_variant(res)
    named = []
    for n in ARMS:
        g = ok_row(res, v, f"arm/{n}/gain")
        per = g.extra.get("per_repeat", []) if g else []
        k = sum(1 for p in per if p.get("timed_once"))
        if k:
            named.append(f"`{n}` ({fmt_iqr(g)}x; {k} of {len(per)} processes)")
    if not named:
        return ""
    return (f"Timed in the first round only (its calls in that round, after the parity call), where the parity call "
            f"and one warm call each took >= {SLOW_ARM_FACTOR:g}x fp32 eager's warm call: " + ", ".join(named)
            + ". Their gain divides eager's median over every round by that round's.")


def section(res: Results) -> list[str]:
    ranking = arms_ranking(res)
    if not ranking:
        return []
    v = extras_variant(res)
    return ["\n## Optimization arms, ranked by inference gain\n",
            f"Beyond-seed arms run on `{v}` at batch {arm_batch(res)}: gain = fp32 eager "
            "(`torch.no_grad`) median time / arm median time, paired and interleaved in the same process, "
            "median [q1, q3] over processes. Parity: max |diff| of boxes and sigmoid(logits) against fp32 "
            "eager after one-to-one query matching; tolerance "
            "1e-3 for fp32 arms, 5e-2 for bf16/fp16/int8; in brackets, the share of queries reproduced "
            "within it (on a random-weight model the language-guided top-k proposal scores are near-ties, "
            "so reduced precision swaps some proposals for others: such an arm is reported outside "
            "tolerance, not excused). Seed factors are the ladder's FPS ratios "
            f"(batch {infer_batch(res)}, one factor changed from the baseline, a different model: no parity). "
            "Set-up: compilation, export or quantization, timed once per process; a compile arm's first process "
            "compiles into an empty Inductor cache (what a first run pays), its later ones reuse that cache (in "
            "brackets: what a later run on the same machine pays). "
            "Pays off after: the images an arm must process before its one-off set-up (the first run's) "
            "is paid back by its faster calls, set-up x images/s / (gain - 1), from the medians.\n",
            md(ranking), "\n" + " ".join(x for x in (best_arm_sentence(res), timed_once_sentence(res)) if x) + "\n"]
