"""Per-variant sections: parameters and FLOPs, the ablation ladder, the per-module time breakdown,
inference FPS/latency, failures, and the machine. Each function returns plain rows (list of dicts)."""

from __future__ import annotations

from ..env import CPU_FEATURES
from ..results import Results
from .format import fmt, group, infer_batch, ok_row
from .judge import fmt_change, ratio_of

ABLATION_METRICS = [
    ("FPS", "infer/fps_b{infer}", True),
    ("train samples/s", "train/samples_per_s", True),
    ("train memory", "memory/train_total", False),
    ("FLOPs/img", "flops/per_image", False),
    ("image backbone params", "params/image_backbone", False),
    ("trainable params", "params/trainable", False),
    ("val mAP50", "accuracy/val/mAP50", True),
]

BREAKDOWN = ("image_encoder", "text_encoder", "fusion", "box_head", "pre_post_processing")

PARAM_COLUMNS = ("image_backbone", "image_encoder", "text_encoder", "fusion", "box_head", "total", "trainable")

ENV_KEYS = ("cpu_model", "cpu_features", "cpu_count", "device", "threads", "torch", "cuda", "python", "platform",
            "git_commit", "git_dirty", "source_hash", "date_utc", "loadavg", "suite_seconds", "global_overrides")


def params_table(res: Results) -> list[dict]:
    """Millions of parameters per component, and forward GFLOPs per image (2*MACs)."""
    out = []
    for name in res.variants:
        if ok_row(res, name, "params/total") is None or group(res, name) == "peer":
            continue  # peers have their own table
        rec = {"variant": name}
        for m in PARAM_COLUMNS:
            r = ok_row(res, name, f"params/{m}")
            rec[m] = f"{r.value / 1e6:.2f}" if r else "-"
        f = ok_row(res, name, "flops/per_image")
        rec["GFLOPs/img"] = f"{f.value / 1e9:.2f}" if f else "-"
        out.append(rec)
    return out


def ablation_table(res: Results) -> list[dict]:
    """Each variant with a reference: After/Before ratios [IQR interval] per metric, mAP50 in points."""
    out = []
    for name, spec in res.variants.items():
        ref = spec.get("reference")
        if not ref:
            continue
        rec = {"variant": name, "vs": ref, "factor": spec.get("description", "")}
        any_value = False
        for label, metric, _higher in ABLATION_METRICS:
            metric = metric.format(infer=infer_batch(res))
            a, b = ok_row(res, name, metric), ok_row(res, ref, metric)
            if a is None or b is None:
                rec[label] = "-"
                continue
            any_value = True
            if metric.startswith("accuracy/"):
                rec[label] = f"{(a.value - b.value) * 100:+.1f} pts"
            else:
                rec[label] = fmt_change(ratio_of(a, b))
        if any_value:
            out.append(rec)
    return out


def breakdown_table(res: Results) -> list[dict]:
    """ms per call per module (share of the sum) at the inference batch."""
    out = []
    for name in res.variants:
        vals = {k: ok_row(res, name, f"breakdown/{k}_ms") for k in BREAKDOWN}
        if not any(vals.values()):
            continue
        total = sum(v.value for v in vals.values() if v)
        rec = {"variant": name}
        for k, v in vals.items():
            rec[k] = f"{v.value:.1f} ({100 * v.value / total:.0f}%)" if v and total else "-"
        rec["sum (ms)"] = f"{total:.1f}"
        out.append(rec)
    return out


def latency_table(res: Results) -> list[dict]:
    """FPS / p50 / p90 ms at batch 1 and the inference batch, with and without pre/post-processing."""
    n = infer_batch(res)
    out = []
    for name in res.variants:
        rec = {"variant": name}
        for suffix in ("b1", "b1_post", f"b{n}", f"b{n}_post"):
            fps, p50, p90 = (ok_row(res, name, f"infer/{m}_{suffix}") for m in ("fps", "latency_p50_ms", "latency_p90_ms"))
            rec[f"{suffix} FPS / p50 / p90 ms"] = (f"{fmt(fps.value)} / {fmt(p50.value)} / {fmt(p90.value)}"
                                                   if fps and p50 and p90 else "-")
        if any(v != "-" for k, v in rec.items() if k != "variant"):
            out.append(rec)
    return out


def errors_table(res: Results) -> list[dict]:
    return [{"variant": r.variant, "metric": r.metric, "status": r.status, "error": (r.error or "")[:200]}
            for r in res.rows if r.status != "ok"]


def machine_table(res: Results) -> list[dict]:
    env = res.environment
    return [{"key": k, "value": env.get(k)} for k in ENV_KEYS if k in env]


#: the torch build pyproject.toml pins (the CI machine's); a device with its own preinstalled torch differs
PINNED_TORCH = "2.14.1"


def machine_line(res: Results) -> str:
    """One line naming where every absolute figure comes from (and whether torch is the pinned build)."""
    env, prof = res.environment, res.profile
    torch_version = str(env.get("torch", "?"))
    cuda = f", CUDA {env.get('cuda')}, driver {env['cuda_driver']}" if env.get("cuda_driver") else ""
    pinned = "" if torch_version.split("+")[0] == PINNED_TORCH else (
        f" **torch {torch_version} is not the pinned {PINNED_TORCH}** (the device's preinstalled build): numbers "
        "are this torch's.")
    # older results files have no cpu_features: the line then names the model alone
    features = f"; {env['cpu_features'] or 'none of ' + '/'.join(CPU_FEATURES[:5])}" \
        if env.get("cpu_features") is not None else ""
    return (f"Machine `{env.get('machine_kind', '?')}`: {env.get('device', '?')} ({env.get('cpu_model', '?')}{features}, "
            f"{env.get('threads', prof.get('threads', '?'))} threads), torch {torch_version}{cuda}; training "
            f"batch {prof.get('train_batch', '?')}, inference batch {infer_batch(res)}, precision per preset. "
            f"Absolute figures are this machine's; ratios (x) are what carries to another machine.{pinned}")

