"""Scaling curves: inference FPS, latency and peak memory at one point of one axis, in a fresh process.

Axes (``AXES``): ``batch`` (images per call), ``image_size`` (pixels per side; a Swin backbone gets a
window size that divides its token grids, see :func:`swin_window_for`), ``prompt_tokens`` (tokens in
the prompt, special tokens included; ``text.max_tokens`` is set to it and the prompt is built to that
length) and ``num_queries`` (``box_head.num_queries``). Every other axis stays at the point's base
values. The process first runs one forward under the memory probe (CPU: RSS peak; CUDA: allocator
peaks), then ``warmup`` untimed and ``iters`` timed forwards (device synced).

Units: images/s (FPS), ms (latency), MiB (memory). ``describe_curve`` turns a measured curve into one
sentence on how cost grows (log-log slope, linear vs quadratic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bench.measure.specs import SCALING_AXES, ScalingSpec
from bench.results import Row, measured, quantile

AXES = SCALING_AXES
AXIS_LABELS = {"batch": "batch size", "image_size": "input size (px per side)",
               "prompt_tokens": "prompt length (tokens)", "num_queries": "number of queries"}


def swin_window_for(image_size: int, patch: int = 4, stages: int = 4, preferred: int = 7) -> int:
    """A Swin window size that divides every stage's token grid at ``image_size``: the divisor of the
    last stage's side (image_size / (patch * 2**(stages-1))) closest to ``preferred`` (ties: smaller).

    224 -> 7, 256 -> 8, 320 -> 5, 384 -> 6, 448 -> 7, 512 -> 8."""
    stride = patch * 2 ** (stages - 1)
    if image_size % stride:
        raise ValueError(f"image size {image_size} must be a multiple of {stride} for a {stages}-stage Swin "
                         f"with patch {patch}")
    side = image_size // stride
    divisors = [d for d in range(1, side + 1) if side % d == 0]
    return min(divisors, key=lambda d: (abs(d - preferred), d))


def point_overrides(config, axis: str, value: int) -> dict:
    """Dotted-key overrides that put a model config at ``axis = value`` (batch needs none)."""
    if axis not in AXES:
        raise ValueError(f"unknown scaling axis {axis!r}; choose one of {AXES}")
    if axis == "image_size":
        ov = {"image.image_size": int(value)}
        if "swin" in config.image.backbone:
            kwargs = dict(config.image.backbone_kwargs)
            stages = len(kwargs.get("depths", (2, 2, 6, 2)))
            kwargs["window_size"] = swin_window_for(int(value), stages=stages,
                                                    preferred=int(kwargs.get("window_size", 7)))
            ov["image.backbone_kwargs"] = kwargs
        return ov
    if axis == "prompt_tokens":
        return {"text.max_tokens": int(value)}
    if axis == "num_queries":
        return {"box_head.num_queries": int(value)}
    return {}


def prompt_of_tokens(tokenizer, n_tokens: int) -> str:
    """A caption that the tokenizer turns into at least ``n_tokens`` tokens (special tokens included);
    truncating at ``max_length=n_tokens`` then gives exactly ``n_tokens``."""
    from bench.common import CAPTION

    words = CAPTION.split()
    n = max(int(n_tokens), 1)
    while True:
        text = " ".join(words[i % len(words)] for i in range(n))
        if len(tokenizer(text)["input_ids"]) >= n_tokens:
            return text
        n += 1


@dataclass
class ScalingPoint:
    """One point: ``axis`` at ``value`` with the actual batch/size/tokens/queries used. ``calls_s``:
    seconds per timed forward; ``total_mib``: peak over the state before the model was built
    (weights + activations); ``step_mib``: peak growth of the first forward alone."""

    axis: str
    value: int
    batch_size: int
    image_size: int
    prompt_tokens: int
    num_queries: int
    window_size: int | None
    precision: str
    threads: int
    calls_s: list = field(default_factory=list)
    total_mib: float | None = None
    step_mib: float | None = None
    reserved_mib: float | None = None
    memory_method: str = ""

    def rows(self) -> list[Row]:
        base = f"scaling/{self.axis}/{self.value}"
        extra = {"axis": self.axis, "value": self.value, "batch_size": self.batch_size, "image_size": self.image_size,
                 "prompt_tokens": self.prompt_tokens, "num_queries": self.num_queries,
                 "window_size": self.window_size, "precision": self.precision, "threads": self.threads}
        out = []
        if self.calls_s:
            med, p90 = quantile(self.calls_s, (0.5, 0.9))
            out += [measured(f"{base}/fps", self.batch_size / med, "images/s", {**extra, "calls": self.calls_s}),
                    measured(f"{base}/latency_ms", med * 1e3, "ms", extra),
                    measured(f"{base}/latency_p90_ms", p90 * 1e3, "ms", extra)]
        if self.total_mib is not None:
            mem = {**extra, "method": self.memory_method}
            out += [measured(f"{base}/memory_total_mib", self.total_mib, "MiB", mem),
                    measured(f"{base}/memory_step_mib", self.step_mib, "MiB", mem)]
            if self.reserved_mib is not None:
                out.append(measured(f"{base}/memory_reserved_mib", self.reserved_mib, "MiB", mem))
        return out


def measure(spec: ScalingSpec | dict) -> ScalingPoint:
    """One point of one axis (see :class:`bench.measure.specs.ScalingSpec`): the first forward under the
    memory probe (``bench.measure.memory.measure_peak``), then the timed forwards."""
    import torch

    import ovd
    from bench.common import autocast, build_config, make_batch, resolve_device, resolve_precision
    from bench.measure.memory import measure_peak
    from bench.measure.timing import time_calls

    spec = ScalingSpec.coerce(spec)
    device = resolve_device(spec.device)
    axis, value = spec.axis, spec.value
    preset, base_overrides = spec.source.preset, dict(spec.source.overrides)
    base_cfg = build_config(preset, base_overrides, device)
    overrides = {**base_overrides, **point_overrides(base_cfg, axis, value)}
    batch_size = value if axis == "batch" else spec.batch_size
    import transformers.models.bert.modeling_bert  # noqa: F401  (imports are not the model's memory)

    import ovd.models.detector  # noqa: F401

    def build():
        torch.manual_seed(0)
        config = build_config(preset, overrides, device)
        model = ovd.create_model(config).to(device).eval()
        precision = resolve_precision(config.train.precision, device)
        batch = make_batch(model, batch_size, device)
        ids, mask = batch.input_ids, batch.attention_mask
        if axis == "prompt_tokens":
            enc = model.tokenizer([prompt_of_tokens(model.tokenizer, value)] * batch_size, truncation=True,
                                  max_length=value, return_tensors="pt")
            ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        images = batch.images

        def forward():
            with torch.inference_mode(), autocast(precision, device):
                return model(images, ids, mask)

        window = config.image.backbone_kwargs.get("window_size", 7 if "window7" in config.image.backbone else None)
        # the forward goes into meta too: the timed calls reuse the model the memory probe built
        return forward, {"forward": forward, "batch_size": batch_size, "config": config, "precision": precision,
                         "window": window, "tokens": int(ids.shape[1])}

    reading = measure_peak(build, device) if spec.memory else None
    meta = reading.meta if reading is not None else build()[1]
    forward = meta["forward"]
    config = meta["config"]
    res = ScalingPoint(axis, value, batch_size, config.image.image_size, meta["tokens"],
                       config.box_head.num_queries, meta["window"], meta["precision"], torch.get_num_threads())
    if reading is not None:
        res.memory_method, res.reserved_mib = reading.method, reading.reserved_mib
        res.total_mib, res.step_mib = reading.total_mib, reading.step_mib
    res.calls_s = time_calls(forward, device, spec.warmup, spec.iters)
    return res


# -- describing a curve -------------------------------------------------------------------------

def loglog_slope(xs, ys) -> float:
    """Least-squares slope of log(y) on log(x) (y ~ x**slope). Needs >= 2 points with x, y > 0."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len(pts) < 2:
        raise ValueError("a slope needs at least two positive points")
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        raise ValueError("all x values are equal")
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def _growth_word(slope: float) -> str:
    if slope <= -1.25:
        return "falls faster than 1/x"
    if slope <= -0.8:
        return "falls about as 1/x"
    if slope <= -0.15:
        return "falls, slower than 1/x,"
    if slope < 0.15:
        return "stays roughly flat"
    if slope < 0.8:
        return "grows sublinearly"
    if slope < 1.25:
        return "grows about linearly"
    if slope < 1.7:
        return "grows faster than linearly"
    if slope < 2.4:
        return "grows about quadratically"
    return "grows faster than quadratically"


def poly_fit_choice(xs, ys) -> tuple[str, float, float]:
    """Compare a linear fit a + b*x with a quadratic a + b*x + c*x**2 (least squares): returns
    ("linear" or "quadratic", r2_linear, r2_quadratic). Quadratic is chosen only when it removes at
    least half of the linear fit's residual and there are >= 4 points (3 points fit any parabola)."""
    import numpy as np

    x, y = np.asarray(xs, float), np.asarray(ys, float)
    ss = float(((y - y.mean()) ** 2).sum()) or 1e-30
    r_lin = float(((np.polyval(np.polyfit(x, y, 1), x) - y) ** 2).sum())
    if len(x) < 4:
        return "linear", 1 - r_lin / ss, float("nan")
    r_quad = float(((np.polyval(np.polyfit(x, y, 2), x) - y) ** 2).sum())
    choice = "quadratic" if r_quad < 0.5 * r_lin and (1 - r_lin / ss) < 0.995 else "linear"
    return choice, 1 - r_lin / ss, 1 - r_quad / ss


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def describe_curve(xs, ys, x_label: str, y_label: str, unit: str) -> str:
    """One sentence on how ``y`` grows with ``x``: the log-log slope over the whole range and, with
    >= 4 points, over the upper half (where fixed costs matter least), and the fitted shape.

    >>> describe_curve([1, 2, 4, 8], [10, 20, 40, 80], "batch size", "latency", "ms")  # doctest: +ELLIPSIS
    'latency grows about linearly in batch size (log-log slope 1.00 over 1..8...'
    """
    pts = sorted((float(x), float(y)) for x, y in zip(xs, ys) if y is not None and math.isfinite(float(y)))
    if len(pts) < 2:
        return f"{y_label}: too few points to describe ({len(pts)})."
    x, y = [p[0] for p in pts], [p[1] for p in pts]
    slope = loglog_slope(x, y)
    s = f"{y_label} {_growth_word(slope)} in {x_label} (log-log slope {slope:.2f} over {_num(x[0])}..{_num(x[-1])}"
    if len(pts) >= 4:
        half = len(pts) // 2
        upper = loglog_slope(x[half:], y[half:])
        if abs(upper - slope) >= 0.15:
            s += f"; {upper:.2f} from {_num(x[half])} up, where it {_growth_word(upper)}"
        shape, r2l, r2q = poly_fit_choice(x, y)
        s += f"; best fit {shape}, R^2 linear {r2l:.3f}" + (f", quadratic {r2q:.3f}" if not math.isnan(r2q) else "")
    s += f"), from {_num(y[0])} to {_num(y[-1])} {unit}"
    ratio_x, ratio_y = x[-1] / x[0], (y[-1] / y[0] if y[0] else float("inf"))
    s += f" ({ratio_y:.3g}x for {ratio_x:.3g}x {x_label})."
    return s
