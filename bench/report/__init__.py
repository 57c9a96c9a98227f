"""REPORT.md and PNG plots from results only (no measuring here).

Layers, each importing only the ones below it:

1. ``format`` (reading a row, numbers, markdown tables) and ``judge`` (ratio intervals, verdicts);
   ``accuracy_data`` (training runs per seed, curves), ``provenance`` (commit, source hash);
2. ``plots`` (PNGs from results or prepared data);
3. one module per section: ``seed`` (the seed table), ``tables`` (parameters, ablation, breakdown,
   latency, failures, machine), ``accuracy``, ``peers``, ``roofline``, ``scaling``, ``arms``, ``dataparallel``,
   ``sweep`` (batch sweep, seed speed claims at each variant's peak batch), ``ceiling`` (backbone alone),
   ``arms_accuracy`` (arms judged on a trained checkpoint);
4. :func:`render` (this module), which nothing in the package imports.
"""

from __future__ import annotations

from pathlib import Path

from ..env import machine_identity, same_machine
from ..results import Results
from . import arms, dataparallel, peers, plots, provenance, roofline, scaling, seed, tables
from .accuracy import accuracy_section, as_is_section
from .arms_accuracy import accepted_arms, arms_accuracy_section
from .ceiling import ceiling_section
from .format import infer_batch, md, numerics
from .judge import ratio_interval, verdict
from .seed import seed_table
from .sweep import sweep_section

__all__ = ["ratio_interval", "render", "seed_table", "verdict"]

#: metric -> the seed's claimed after/before ratio, drawn as reference lines on the bar plots
PLOT_CLAIMS = {"train/samples_per_s": seed.CLAIMS["train"].ratio, "memory/train_total": seed.CLAIMS["memory"].ratio}


def _header(res: Results, acc_res: Results | None) -> list[str]:
    env, prof = res.environment, res.profile
    parts = [f"# ovd-bench report: {env.get('machine_kind', '?')}, profile `{prof.get('name', '?')}`\n\n"]
    parts += [line + "\n\n" for line in provenance.incomplete_lines(res) + provenance.failed_repeat_lines(res)]
    parts.append("\n".join(provenance.lines(res, "Measured by")) + "\n")
    if acc_res is not None:
        parts.append("\n" + "\n".join(provenance.lines(acc_res, "Training Time and mAP rows and the accuracy "
                                                                "section come from the accuracy run")) + "\n")
        if same_machine(acc_res.environment, env) is False:  # only with --accuracy-any-machine
            parts.append(f"\n**The accuracy run was measured on another machine**, "
                         f"{machine_identity(acc_res.environment)} (this run: {machine_identity(env)}): its training "
                         "times and the arms' accuracy verdicts behind the recommendation are that machine's.\n")
    parts.append("\n" + tables.machine_line(res) + "\n")
    return parts


def _precisions(res: Results, variants: tuple[str, ...]) -> str:
    """", here baseline fp32, optimized bf16": what each variant's ``train.precision`` ran as in the
    training-speed measurement; "" when no variant's row records it (an accuracy-only run)."""
    ran = [(v, res.precision(v, "train/samples_per_s")) for v in variants]
    if not any(p for _, p in ran):
        return ""
    return ", here " + ", ".join(f"{v} {p or 'not measured'}" for v, p in ran)


def _seed_section(res: Results, acc_res: Results | None) -> list[str]:
    before, _after = seed.pair(res)
    tb = res.profile.get("train_batch")
    parts = ["\n## The seed's claims\n", seed.notes(res), md(seed.seed_table(res, acc_res))]
    if before != "baseline":
        parts.append(f"\nThis profile compares the tiny presets ({seed.pair(res)[0]} vs {seed.pair(res)[1]}): the "
                     "ratios are a proxy for the seed's full-size claims, not a test of them.\n")
    parts.append(f"\nTraining speed and the first Memory row at batch {tb} for both (the same batch), precision per "
                 f"preset{_precisions(res, seed.pair(res))} (`auto` is fp16 on CUDA, bf16 on a CPU with "
                 "AVX512-BF16 or AMX, fp32 on other CPUs); the preset-batch row uses each preset's own batch. Memory on "
                 "the CPU is the peak RSS growth of a fresh process over its state before the model was built "
                 "(weights + gradients + optimizer state + activations), not VRAM; on CUDA the allocator's peak "
                 "allocated bytes (reserved in brackets). Model Size grades the image backbone (what the seed's "
                 "50M -> 28M counts: Swin-S 48.8M -> Swin-T 27.5M); trainable and total parameters, which include "
                 "the frozen text encoder, are listed beside. Inference speed is the forward pass without "
                 f"post-processing at batch {infer_batch(res)}.\n")
    return parts


def _main_sections(res: Results) -> list[str]:
    n = infer_batch(res)
    return ["\n## Parameters (millions) and FLOPs (forward, per image, FLOPs = 2*MACs, SDPA attention counted)\n",
            md(tables.params_table(res)),
            "\n## Ablation: each factor against its reference variant\n",
            "Ladder rows change one factor from the baseline; leave-one-out rows remove one factor from the "
            "optimized model (ratios < 1 in FPS then mean the factor helped). Ratios with their IQR interval.\n",
            md(tables.ablation_table(res)),
            f"\n## Where inference time goes (ms per call, batch {n}, each module timed alone)\n",
            md(tables.breakdown_table(res)),
            "\n## Inference FPS and latency (`_post` = `model.predict`, with pre/post-processing)\n",
            md(tables.latency_table(res))]


def _footer(res: Results, pngs: list[str]) -> list[str]:
    prof = res.profile
    parts = []
    if pngs:
        parts.append("\n## Plots\n\n")
        parts += [f"![{p}]({p})\n" for p in pngs]
    errs = tables.errors_table(res)
    if errs:
        parts += ["\n## Not measured or failed\n", md(errs)]
    parts += ["\n## Machine and command\n", md(tables.machine_table(res)),
              f"\nCommand: `{res.command}`\n",
              f"\nProfile: {prof.get('description', '')}; repeats {prof.get('repeats')} processes per speed "
              f"measurement (each: {prof.get('warmup')} warm-up + {prof.get('iters')} timed calls, median), "
              f"threads {prof.get('threads')}{worker_starts(res)}.\n"]
    return parts


def worker_starts(res: Results) -> str:
    """How the run's measurement processes started (``bench.runner.worker_start``), for the method line."""
    starts = [out.get("worker_start") for out in res.tasks.values()]
    forked, execed = starts.count("fork"), starts.count("exec")
    if not forked:
        return ""  # every process a new interpreter, as the method always said (older results record nothing)
    return (f"; {forked} of {forked + execed} measurement processes forked from a server that imported the "
            f"libraries once (the rest, memory included, each a new interpreter)")


#: a recommended arm's set-up (s) from which the recommendation says after how many images it pays off
SETUP_WORTH_NAMING_S = 5.0
#: how `ovd predict` runs an arm's numerics (None: predict has no switch for it)
PREDICT_FLAGS = {"fp32": "", "bf16": "--precision bf16", "bf16_image": "--precision bf16-image",
                 "int8": "--quantize int8",
                 "int8_except_text": "--quantize int8-except-text",
                 "int8_static": "--backend onnxruntime --quantize int8", "fp16": None}


def predict_flag(features) -> str | None:
    """The `ovd predict` options that run an arm's arithmetic, backend and compile mode ("" = the default; None =
    not available in predict). Cached text needs no option: predict encodes its one prompt once per run."""
    from ovd.inference_options import COMPILE_MODES

    from ..measure.arms import compile_mode_of

    flag = PREDICT_FLAGS.get(numerics(features))
    if flag is None:
        return None
    if "onnx" in features and "--backend" not in flag:
        flag += " --backend onnxruntime"
    mode = compile_mode_of(features)
    if mode is not None:
        if mode not in COMPILE_MODES:
            return None  # max-autotune and CUDA graphs: the suite's GPU arms only
        flag += f" --compile {mode}"
    return flag.strip()


def recommendation(res: Results, acc_src: Results) -> str:
    """The fastest arm this machine can ship: fp32 arms within fp32 parity, reduced-precision arms whose
    arithmetic kept the trained checkpoint's accuracy (``acc_src``'s accuracy-judged arms); its gain over fp32
    eager with the interval, and how `ovd predict` runs it."""
    from ..measure.arms import ARMS, REFERENCE
    from .arms import fmt_break_even, gain_q1, setup_rows
    from .format import arm_batch, extras_variant, fmt, ok_row

    judged = accepted_arms(acc_src)  # {"bf16-autocast": True, "int8-dynamic": False, ...}
    by_numerics = {numerics(ARMS[a].features): ok for a, ok in judged.items() if a in ARMS}
    v = extras_variant(res)
    best = None
    for name, arm in ARMS.items():
        g = ok_row(res, v, f"arm/{name}/gain")
        if name == REFERENCE or g is None:
            continue
        kind = numerics(arm.features)
        if judged.get(name) is False:  # this very arm was rejected on a trained checkpoint
            continue
        if kind == "fp32":
            parity = ok_row(res, v, f"arm/{name}/parity_ok")
            if not parity or parity.value != 1.0:
                continue
        elif not judged.get(name, by_numerics.get(kind)):
            continue
        if best is None or g.value > best[1].value:
            best = (name, g, kind)
    if best is None:
        why = ("reduced-precision arms need the accuracy run's verdicts: pass --accuracy" if not judged else
               "rejected on the trained checkpoints: " + ", ".join(a for a, ok in judged.items() if not ok))
        return f"**Recommendation**: no arm beyond fp32 eager is both faster and accepted in these results ({why})."
    name, g, kind = best
    q = f" [{fmt(g.stats.q1)}, {fmt(g.stats.q3)}]" if g.stats and g.stats.n > 1 else " (one process: no interval)"
    flag = predict_flag(ARMS[name].features)
    basis = "outputs within fp32 parity" if kind == "fp32" else \
        "accepted on every trained checkpoint judged (section below)"
    if flag is None:
        run = "`ovd predict` cannot run it yet (the suite's arm only)"
    else:
        run = "run it with " + (f"`ovd predict ... {flag}`" if flag else "`ovd predict` (fp32, its default)")
    (setup, warm), fps = setup_rows(res, v, name), ok_row(res, v, f"arm/{name}/fps_b{arm_batch(res)}")
    if setup is not None and fps is not None and setup.value >= SETUP_WORTH_NAMING_S:
        cached = f" ({fmt(warm.value)} s when its Inductor cache is warm, on a later run)" if warm else ""
        paid = fmt_break_even(setup.value, fps.value, g.value, gain_q1(g))
        run += (f"; its {fmt(setup.value)} s of set-up{cached} " +
                (f"buys {paid}" if paid.startswith("no gain") else
                 f"pays off after about {paid} (fewer images: fp32 eager is faster end to end)"))
    unproven = (" Its interval reaches 1x: no arm is established faster than fp32 eager on this machine."
                if gain_q1(g) is not None and gain_q1(g) <= 1.0 else "")
    return (f"**Recommendation for this machine**: `{name}` ({ARMS[name].description}), {fmt(g.value)}x{q} the "
            f"throughput of fp32 eager `{v}`, {basis}; {run}.{unproven}")


def render(res: Results, out_dir: str | Path, accuracy: Results | None = None) -> Path:
    """Write ``out_dir/REPORT.md`` and its PNGs from ``res``; returns the REPORT.md path.

    ``accuracy``: results of the accuracy profile (``ovd-bench run --profile accuracy``); when given,
    the Training Time and mAP rows and the accuracy section use it (and name that run), else ``res``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    acc_res = accuracy if accuracy is not None and accuracy.rows else None
    pngs = plots.bar_plots(res, out_dir, PLOT_CLAIMS | {f"infer/fps_b{infer_batch(res)}": seed.CLAIMS["infer"].ratio})
    bd = plots.breakdown_plot(res, out_dir, tables.BREAKDOWN)
    pngs += [bd] if bd else []
    parts = _header(res, acc_res) + _seed_section(res, acc_res) + sweep_section(res, seed.pair(res))
    parts += ceiling_section(res) + _main_sections(res)
    if acc_res is not None:
        # this run's own models scored without training (a factory's predict()) stay in the report
        parts += accuracy_section(acc_res, out_dir, label="From the accuracy run") + as_is_section(res)
    else:
        parts += accuracy_section(res, out_dir)
    rejected = {a for a, ok in accepted_arms(acc_res if acc_res is not None else res).items() if not ok}
    parts += peers.section(res) + roofline.section(res, rejected) + scaling.section(res, out_dir)
    arms_parts = arms.section(res)
    if arms_parts:
        arms_parts.insert(1, recommendation(res, acc_res if acc_res is not None else res) + "\n\n")
    parts += arms_parts + arms_accuracy_section(acc_res if acc_res is not None else res)
    parts += dataparallel.section(res)
    parts += _footer(res, pngs)
    path = out_dir / "REPORT.md"
    path.write_text("".join(parts))
    return path
