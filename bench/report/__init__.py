"""REPORT.md and PNG plots from results only (no measuring here).

Layers, each importing only the ones below it:

1. ``format`` (reading a row, numbers, markdown tables) and ``judge`` (ratio intervals, verdicts);
   ``accuracy_data`` (training runs per seed, curves), ``provenance`` (commit, source hash);
2. ``plots`` (PNGs from results or prepared data);
3. one module per section: ``seed`` (the seed table), ``tables`` (parameters, ablation, breakdown,
   latency, failures, machine), ``accuracy``, ``peers``, ``roofline``, ``scaling``, ``arms``, ``dataparallel``;
4. :func:`render` (this module), which nothing in the package imports.
"""

from __future__ import annotations

from pathlib import Path

from ..results import Results
from . import arms, dataparallel, peers, plots, provenance, roofline, scaling, seed, tables
from .accuracy import accuracy_section
from .format import infer_batch, md
from .judge import ratio_interval, verdict
from .seed import seed_table

__all__ = ["ratio_interval", "render", "seed_table", "verdict"]

#: metric -> the seed's claimed after/before ratio, drawn as reference lines on the bar plots
PLOT_CLAIMS = {"train/samples_per_s": seed.CLAIMS["train"].ratio, "memory/train_total": seed.CLAIMS["memory"].ratio}


def _header(res: Results, acc_res: Results | None) -> list[str]:
    env, prof = res.environment, res.profile
    parts = [f"# ovd-bench report: {env.get('machine_kind', '?')}, profile `{prof.get('name', '?')}`\n\n",
             "\n".join(provenance.lines(res, "Measured by")) + "\n"]
    if acc_res is not None:
        parts.append("\n" + "\n".join(provenance.lines(acc_res, "Training Time and mAP rows and the accuracy "
                                                                "section come from the accuracy run")) + "\n")
    parts.append("\n" + tables.machine_line(res) + "\n")
    return parts


def _seed_section(res: Results, acc_res: Results | None) -> list[str]:
    before, _after = seed.pair(res)
    tb = res.profile.get("train_batch")
    parts = ["\n## The seed's claims\n", seed.notes(res), md(seed.seed_table(res, acc_res))]
    if before != "baseline":
        parts.append(f"\nThis profile compares the tiny presets ({seed.pair(res)[0]} vs {seed.pair(res)[1]}): the "
                     "ratios are a proxy for the seed's full-size claims, not a test of them.\n")
    parts.append(f"\nTraining speed and the first Memory row at batch {tb} for both (the same batch), precision per "
                 "preset (on the CPU `auto` = fp32); the preset-batch row uses each preset's own batch. Memory on "
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
              f"threads {prof.get('threads')}.\n"]
    return parts


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
    parts = _header(res, acc_res) + _seed_section(res, acc_res) + _main_sections(res)
    if acc_res is not None:
        parts += accuracy_section(acc_res, out_dir, label="From the accuracy run")
    else:
        parts += accuracy_section(res, out_dir)
    parts += peers.section(res) + roofline.section(res) + scaling.section(res, out_dir) + arms.section(res)
    parts += dataparallel.section(res)
    parts += _footer(res, pngs)
    path = out_dir / "REPORT.md"
    path.write_text("".join(parts))
    return path
